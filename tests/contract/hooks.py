"""Schemathesis hooks for tests/contract/schemathesis.sh.

The run feeds the server's configured target ids into request bodies through a
dictionary bound to `body.targets[*]`. The binding replaces array items one by
one, so a case generated as *valid* can end up naming the same target twice,
which breaks the schema's `uniqueItems` and is rightly refused (400). The
coverage phase does not use the dictionary, so a valid case may name a target
the server does not have (rightly a 422: the document cannot list the
configured ids). Both kinds of valid cases are dropped here; negative cases
(meant to be invalid) are kept.
"""

import json
import os
import re

import schemathesis

# The target ids of the server's config (set by schemathesis.sh).
TARGETS = set(os.environ.get("RECMAN_CONTRACT_TARGETS", "").split())


@schemathesis.hook
def filter_case(context, case):
    meta = case.meta
    body = case.body
    if meta is None or not meta.generation.mode.is_positive or not isinstance(body, dict):
        return True
    if case.operation.path == "/v1/recoveries":
        # A valid recovery of a target the server does not have is rightly
        # a 422 (the document cannot list the configured ids).
        target = body.get("target")
        return target is None or target in TARGETS | {"verify-1"}
    targets = body.get("targets")
    if not isinstance(targets, list):
        return True
    keys = [json.dumps(t, sort_keys=True) for t in targets]
    if len(set(keys)) != len(keys):
        return False
    return all(isinstance(t, str) and t in TARGETS for t in targets)


# Valid submits mostly reuse the document's example request ids, and the same
# request id is the same job (or a 409 for other targets): only a handful of
# jobs would ever be created, and the stateful links (job, cancel, events)
# would only ever see finished jobs. Three valid submits in four get a request
# id of their own; the fourth keeps the generated one, so idempotency and the
# 409 for a reused id stay exercised. The same for recovery requests (whose
# ids the phases would otherwise share: every one a 409 or a 404).
_submits = 0


@schemathesis.hook
def before_call(context, case, kwargs):
    global _submits
    op = case.operation
    if op.method.upper() != "POST" or op.path not in ("/v1/snapshots", "/v1/recoveries"):
        return
    meta = case.meta
    body = case.body
    if meta is None or not meta.generation.mode.is_positive or not isinstance(body, dict):
        return
    # The config sets a real `snapshot` on every recovery body (`parameters`),
    # past the schema's rule that a prune names none: take it off again.
    action = body.get("action")
    if op.path == "/v1/recoveries" and isinstance(action, dict) and action.get("type") == "prune":
        body.pop("snapshot", None)
    rid = body.get("request_id")
    if not isinstance(rid, str):
        return
    _submits += 1
    if _submits % 4:
        # A case can be sent more than once: replace an earlier suffix.
        body["request_id"] = f"{re.sub(r'-u[0-9]+$', '', rid)[:100]}-u{_submits}"
