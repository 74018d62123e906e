#!/usr/bin/env bash
# The HTTP API against its OpenAPI document (schemas/openapi.json), checked by
# schemathesis (pinned in tests/contract/requirements.txt, installed into a venv
# under the cargo target dir): every check, the examples, coverage, fuzzing and
# stateful phases (submit -> job -> cancel -> events through the document's
# links), against a live `recman up` on a free loopback port, first without a
# token, then with one. The targets of the server's config are fed to the body
# generator (a schemathesis dictionary), so jobs are really created and run.
#
#   tests/contract/schemathesis.sh            # both modes; exit 1 on any failure
#   RECMAN_BIN=…/recman                       # the binary (default: target/release/recman)
#   RECMAN_CONTRACT_EXAMPLES=N                # examples per operation and phase (default 20)
#   RECMAN_CONTRACT_SEED=N                    # generation seed (default 1: the same cases every run)
#   RECMAN_CONTRACT_TIMEOUT=S                 # seconds one mode may take in all (default 300)
#
# Any failed check, any schemathesis warning (e.g. an operation whose valid
# requests were all refused) and a run over the time limit fail the script.
#
# Needs python3 with venv and access to PyPI the first time (the venv is kept).
set -euo pipefail
cd "$(dirname "$0")/../.."

TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target}"
BIN="${RECMAN_BIN:-$TARGET_DIR/release/recman}"
VENV="$TARGET_DIR/schemathesis-venv"
REQ=tests/contract/requirements.txt
PIN=$(grep -o '^schemathesis==[0-9.]*' "$REQ")
EXAMPLES="${RECMAN_CONTRACT_EXAMPLES:-20}"
SEED="${RECMAN_CONTRACT_SEED:-1}"
TIMEOUT="${RECMAN_CONTRACT_TIMEOUT:-300}"
# db01 and logs01 are the targets of the document's request examples.
TARGETS=(db01 logs01 fast-1 slow-1 slow-2)
export RECMAN_CONTRACT_TARGETS="${TARGETS[*]}" # for hooks.py

contract_venv() {
  if [ -x "$VENV/bin/st" ] && [ "$("$VENV/bin/pip" freeze 2>/dev/null | grep -c "^$PIN\$")" = 1 ] \
    && cmp -s "$REQ" "$VENV/requirements.txt"; then
    return 0
  fi
  echo "== schemathesis: installing $PIN into $VENV"
  rm -rf "$VENV"
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q --disable-pip-version-check -r "$REQ"
  cp "$REQ" "$VENV/requirements.txt"
}

# The server's config: fast targets (no-op hooks) and slow ones (a snapshot
# takes 3 s, so jobs queue behind each other and a cancel finds them queued or
# running, not only finished).
write_recman_config() {
  local dir=$1 extra=$2 t
  {
    printf '%s\n' "$extra"
    for t in "${TARGETS[@]}"; do
      local create='["/bin/sh", "-c", "echo contract/$RECMAN_SNAPSHOT"]'
      case $t in slow-*) create='["/bin/sh", "-c", "sleep 3; echo contract/$RECMAN_SNAPSHOT"]' ;; esac
      printf '[[target]]\nid = "%s"\nkeep_last = 2\nfreeze_limit = "30s"\n' "$t"
      printf '[target.writer]\ntype = "exec"\nfreeze = ["true"]\nthaw = ["true"]\n'
      printf '[target.provider]\ntype = "exec"\ncreate = %s\ndelete = ["true"]\n\n' "$create"
    done
    # A target with a verifier and every snapshot kept, not in the body
    # dictionary: its one restore point (taken before the run) is verified again.
    printf '[[target]]\nid = "verify-1"\n'
    printf '[target.writer]\ntype = "exec"\nfreeze = ["true"]\nthaw = ["true"]\n'
    printf '[target.provider]\ntype = "exec"\ncreate = ["/bin/sh", "-c", "echo contract/$RECMAN_SNAPSHOT"]\ndelete = ["true"]\n'
    printf '[target.verify]\ntype = "exec"\ncommand = ["true"]\n\n'
    # A schedule that never fires during the run, to pause and resume.
    printf '[[schedule]]\nid = "contract-nightly"\ntargets = ["fast-1"]\ncron = "0 2 * * *"\n'
  } >"$dir/recman.toml"
}

write_schemathesis_config() {
  local dir=$1 auth=$2 values
  values=$(printf '"%s", ' "${TARGETS[@]}")
  cat >"$dir/schemathesis.toml" <<EOF
# Written by tests/contract/schemathesis.sh.
seed = $SEED
# One worker: hypothesis parses lambda sources with \`ast\`, which is not
# thread-safe on some Python 3.11 releases ("AST constructor recursion depth mismatch").
workers = 1
# No request may hang the run (event streams get less below).
request-timeout = 10
hooks = "$PWD/tests/contract/hooks.py"
$auth

[generation]
max-examples = $EXAMPLES

# A warning is a finding too (e.g. an operation whose valid requests were all refused).
[warnings]
fail-on = true

[phases.stateful]
max-steps = 20

# Configured target ids for the request bodies: with them jobs are really created.
[dictionaries.targets]
values = [${values%, }]

[parameters]
"body.targets[*]" = { dictionary = "targets", probability = 1.0 }

# The configured schedule, so pause and resume reach the engine.
[[operations]]
include-operation-id = ["pauseSchedule", "resumeSchedule"]
parameters = { "path.id" = "contract-nightly" }

# A configured target, so a reconcile reaches the engine (its exec
# provider cannot list: the worker's refusal is recorded).
[[operations]]
include-operation-id = ["reconcileTarget"]
parameters = { "path.id" = "${TARGETS[0]}" }

# The restore point taken before the run, so a verify reaches the engine.
[[operations]]
include-operation-id = ["verifySnapshot"]
parameters = { "path.name" = "$CONTRACT_SNAPSHOT", "body.target" = "verify-1" }

# That restore point and its target, so a recovery reaches the engine
# (verify-1's exec provider has no recovery hooks: the jobs fail on the
# worker, after the 202 the contract is about).
[[operations]]
include-operation-id = ["requestRecovery"]
parameters = { "body.snapshot" = "$CONTRACT_SNAPSHOT", "body.target" = "verify-1" }

# A job that exists (the one that took that restore point, ended), so a
# cancel reaches the engine (409 already finished) outside the stateful
# phase too; without it every generated id is unknown and schemathesis
# warns that cancel only ever answered 404 (the stateful phase's links
# cancel jobs it just submitted, depending on the seed's path).
[[operations]]
include-operation-id = ["cancelJob"]
parameters = { "path.id" = "$CONTRACT_JOB" }

# A recovery job that exists (the mount asked for before the run), so an
# approval reaches the engine (409: it needs none) instead of 404 only.
[[operations]]
include-operation-id = ["approveRecovery"]
parameters = { "path.id" = "$CONTRACT_RECOVERY" }
# Event streams are live: read each for at most half a second.
[[operations]]
include-operation-id = ["events", "jobEvents"]
request-timeout = 0.5
max-stream-events = 50
EOF
}

# Starts `recman up` on a free loopback port; sets SERVER_PID and SERVER_URL.
start_server() {
  local dir=$1
  "$BIN" --data-dir "$dir/data" --config "$dir/recman.toml" up --listen 127.0.0.1:0 >"$dir/up.log" 2>&1 &
  SERVER_PID=$!
  local i
  for i in $(seq 1 100); do
    SERVER_URL=$(grep -so 'http://127\.0\.0\.1:[0-9]*' "$dir/up.log" | head -1 || true)
    if [ -n "$SERVER_URL" ] && "$VENV/bin/python" -c "import urllib.request,sys; urllib.request.urlopen(sys.argv[1] + '/readyz', timeout=2)" "$SERVER_URL" 2>/dev/null; then
      return 0
    fi
    if ! kill -0 "$SERVER_PID" 2>/dev/null; then break; fi
    sleep 0.1
  done
  echo "recman up did not become ready:" >&2
  cat "$dir/up.log" >&2
  return 1
}

# Takes one snapshot of verify-1 through the API, asks for a mount of it,
# and prints its name, the snapshot's job and the mount's (recovery) job.
take_snapshot() {
  "$VENV/bin/python" - "$SERVER_URL" "${RECMAN_CONTRACT_TOKEN:-}" <<'PY'
import json, sys, time, urllib.request
url, token = sys.argv[1], sys.argv[2]
def call(method, path, body=None):
    req = urllib.request.Request(url + path, method=method, data=None if body is None else json.dumps(body).encode())
    req.add_header("content-type", "application/json")
    if token:
        req.add_header("authorization", "Bearer " + token)
    return json.load(urllib.request.urlopen(req, timeout=10))
job = call("POST", "/v1/snapshots", {"request_id": "contract-verify", "targets": ["verify-1"]})["job_id"]
for _ in range(300):
    snaps = call("GET", "/v1/snapshots?target=verify-1")["snapshots"]
    if snaps:
        name = snaps[0]["name"]
        # A recovery job that exists, for the approve route (it needs no
        # approval: the engine answers 409 approval_not_required).
        rec = call("POST", "/v1/recoveries", {"request_id": "contract-mount", "snapshot": name,
                                             "target": "verify-1", "action": {"type": "mount"}})["job_id"]
        print(name, job, rec)
        sys.exit(0)
    time.sleep(0.1)
sys.exit("no snapshot of verify-1 after 30 s")
PY
}

stop_server() {
  [ -n "${SERVER_PID:-}" ] || return 0
  kill -TERM "$SERVER_PID" 2>/dev/null || true
  local i
  for i in $(seq 1 100); do
    kill -0 "$SERVER_PID" 2>/dev/null || break
    sleep 0.1
  done
  kill -KILL "$SERVER_PID" 2>/dev/null || true
  wait "$SERVER_PID" 2>/dev/null || true
  SERVER_PID=""
}

# One run: $1 = mode name, $2 = extra recman config, $3 = schemathesis auth section.
contract_run() {
  local mode=$1 extra=$2 auth=$3 dir rc=0
  dir=$(mktemp -d "${TMPDIR:-/tmp}/recman-contract.XXXXXX")
  mkdir -p "$dir/data"
  if [ "$mode" = token ]; then
    head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$dir/token"
    extra="[api]
token_file = \"$dir/token\""
    export RECMAN_CONTRACT_TOKEN
    RECMAN_CONTRACT_TOKEN=$(cat "$dir/token")
    auth='[auth.openapi.bearer]
bearer = "${RECMAN_CONTRACT_TOKEN}"'
  fi
  write_recman_config "$dir" "$extra"
  start_server "$dir" || { stop_server; rm -rf "$dir"; return 1; }
  local taken
  taken=$(take_snapshot) || { cat "$dir/up.log" >&2; stop_server; rm -rf "$dir"; return 1; }
  read -r CONTRACT_SNAPSHOT CONTRACT_JOB CONTRACT_RECOVERY <<<"$taken"
  write_schemathesis_config "$dir" "$auth"
  echo "== schemathesis ($mode mode) against $SERVER_URL"
  (cd "$dir" && timeout --kill-after=10 "$TIMEOUT" "$VENV/bin/st" --no-color --config-file "$dir/schemathesis.toml" \
    run "$OLDPWD/schemas/openapi.json" --url "$SERVER_URL" --checks all \
    --generation-database none --report junit --report-dir "$dir/report") || rc=$?
  stop_server
  if [ "$rc" = 124 ] || [ "$rc" = 137 ]; then
    echo "schemathesis ($mode mode) did not finish within ${TIMEOUT}s" >&2
  fi
  if [ "$rc" != 0 ]; then
    echo "schemathesis ($mode mode) failed (exit $rc); server log:" >&2
    tail -n 40 "$dir/up.log" >&2
  fi
  rm -rf "$dir"
  return "$rc"
}

main() {
  [ -x "$BIN" ] || { echo "no recman binary at $BIN: cargo build --release --bin recman" >&2; exit 2; }
  contract_venv
  trap stop_server EXIT
  local rc=0
  contract_run plain "" "" || rc=1
  contract_run token "" "" || rc=1
  return "$rc"
}

main "$@"
