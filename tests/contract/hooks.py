"""Schemathesis hooks for tests/contract/schemathesis.sh.

The run feeds the server's configured target ids into request bodies through a
dictionary bound to `body.targets[*]`. The binding replaces array items one by
one, so a case generated as *valid* can end up naming the same target twice,
which breaks the schema's `uniqueItems` and is rightly refused (400). Such
cases are dropped here; negative cases (meant to be invalid) are kept.
"""

import json

import schemathesis


@schemathesis.hook
def filter_case(context, case):
    meta = case.meta
    body = case.body
    if meta is None or not meta.generation.mode.is_positive or not isinstance(body, dict):
        return True
    targets = body.get("targets")
    if not isinstance(targets, list):
        return True
    keys = [json.dumps(t, sort_keys=True) for t in targets]
    return len(set(keys)) == len(keys)
