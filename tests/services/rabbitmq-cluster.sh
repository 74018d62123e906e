#!/usr/bin/env bash
# A private three-node RabbitMQ cluster for the fault tests (issue 21):
# loopback only, free ports, one temp dir per node owned by the `rabbitmq`
# user, no plugins, `cluster_partition_handling = pause_minority`. Never
# touches the system's own RabbitMQ service nor the single test node.
#
#   source tests/services/rabbitmq-cluster.sh && rmqc_start   # exports RECMAN_TEST_CLUSTER_* (below)
#   rmqc_stop                                                  # stops the nodes and their epmd, removes the dirs
#   tests/services/rabbitmq-cluster.sh start|stop              # the same from a shell (start prints the exports)
#
# The three nodes share one epmd on a private port: Erlang distribution finds
# a node's port through the epmd of the node's host, so nodes that are to see
# each other must register with the same one (started here first, so that a
# node killed with SIGKILL does not take it along). Each node has its own
# AMQP port and its own fixed distribution port (RABBITMQ_DIST_PORT).
#
# Variables after start:
#   RECMAN_TEST_CLUSTER_URLS   three AMQP URLs, space-separated (node 1, 2, 3)
#   RECMAN_TEST_CLUSTER_CTL    a command: `$RECMAN_TEST_CLUSTER_CTL N ARGS…` runs
#                              rabbitmqctl (or `queues ARGS…` rabbitmq-queues) against node N,
#                              `kill N` (SIGKILL), `start N`, `stop N`, `pause N` (SIGSTOP),
#                              `resume N` (SIGCONT), `pid N`, `name N`, `wait N`
#   RECMAN_TEST_CLUSTER_NODES  the three node names, space-separated

_rmqc_here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=tests/services/rabbitmq.sh
source "$_rmqc_here/rabbitmq.sh"

rmqc_start() {
  rabbitmq_install || { echo "cannot install rabbitmq-server" >&2; return 1; }
  RMQC_DIR=$(mktemp -d /tmp/recman-rmq-cluster.XXXXXX)
  RMQC_EPMD_PORT=$(_rmq_free_port) || return 1
  local cookie i
  cookie=$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')
  local names="" urls_ports=""
  for i in 1 2 3; do
    local d="$RMQC_DIR/n$i" port dist
    port=$(_rmq_free_port) && dist=$(_rmq_free_port) || return 1
    mkdir -p "$d/mnesia" "$d/log"
    cat >"$d/rabbitmq.conf" <<CONF
listeners.tcp.default = 127.0.0.1:$port
loopback_users = none
disk_free_limit.absolute = 50MB
log.console = false
log.file.level = warning
cluster_partition_handling = pause_minority
# Notice a node that went away (killed, paused) within seconds, not a minute.
net_ticktime = 10
# Clients of a node that stops answering notice it too (lapin follows the server's value).
heartbeat = 5
CONF
    echo "[]." >"$d/advanced.config"
    : >"$d/rabbitmq-env.conf"
    echo "[]." >"$d/enabled_plugins"
    printf '%s' "$cookie" >"$d/.erlang.cookie"
    chmod 400 "$d/.erlang.cookie"
    cat >"$d/env" <<ENV
HOME=$d
RABBITMQ_NODENAME=recman-c$i-$$@localhost
RABBITMQ_NODE_IP_ADDRESS=127.0.0.1
RABBITMQ_NODE_PORT=$port
RABBITMQ_DIST_PORT=$dist
ERL_EPMD_ADDRESS=127.0.0.1
ERL_EPMD_PORT=$RMQC_EPMD_PORT
RABBITMQ_MNESIA_BASE=$d/mnesia
RABBITMQ_LOG_BASE=$d/log
RABBITMQ_CONFIG_FILE=$d/rabbitmq.conf
RABBITMQ_ADVANCED_CONFIG_FILE=$d/advanced.config
RABBITMQ_CONF_ENV_FILE=$d/rabbitmq-env.conf
RABBITMQ_ENABLED_PLUGINS_FILE=$d/enabled_plugins
RABBITMQ_PID_FILE=$d/rabbitmq.pid
ENV
    echo "$port" >"$d/port"
    echo "recman-c$i-$$@localhost" >"$d/name"
    names="$names recman-c$i-$$@localhost"
    urls_ports="$urls_ports $port"
  done
  _rmqc_write_ctl
  chown -R rabbitmq:rabbitmq "$RMQC_DIR"
  export RMQC_DIR RMQC_EPMD_PORT
  echo "== starting a private three-node RabbitMQ cluster (dir $RMQC_DIR, epmd port $RMQC_EPMD_PORT)"
  # One epmd for the three nodes, started before them.
  runuser -u rabbitmq -- env ERL_EPMD_ADDRESS=127.0.0.1 ERL_EPMD_PORT="$RMQC_EPMD_PORT" epmd -daemon ||
    { echo "cannot start epmd on port $RMQC_EPMD_PORT" >&2; return 1; }
  # The nodes boot in parallel (each alone), then nodes 2 and 3 join node 1.
  local ok=1 pids=()
  for i in 1 2 3; do "$RMQC_DIR/ctl" start "$i" & pids+=($!); done
  for i in "${pids[@]}"; do wait "$i" || ok=""; done
  if [ -z "$ok" ]; then
    echo "a cluster node did not start; its output:" >&2
    tail -n 30 "$RMQC_DIR"/n*/log/*.log >&2 2>/dev/null
    rmqc_stop
    return 1
  fi
  local first
  first=$(cat "$RMQC_DIR/n1/name")
  local out
  for i in 2 3; do
    # join_cluster prints harmless errors about tables of the not-yet-running node.
    out=$("$RMQC_DIR/ctl" "$i" stop_app 2>&1 &&
      "$RMQC_DIR/ctl" "$i" join_cluster "$first" 2>&1 &&
      "$RMQC_DIR/ctl" "$i" start_app 2>&1) || { echo "node $i did not join $first: $out" >&2; rmqc_stop; return 1; }
  done
  local pass
  pass=$(head -c 18 /dev/urandom | od -An -tx1 | tr -d ' \n')
  "$RMQC_DIR/ctl" 1 add_vhost recman-test >/dev/null &&
    "$RMQC_DIR/ctl" 1 add_user recman "$pass" >/dev/null &&
    "$RMQC_DIR/ctl" 1 set_permissions -p recman-test recman '.*' '.*' '.*' >/dev/null || { rmqc_stop; return 1; }
  local urls="" p
  for p in $urls_ports; do urls="$urls amqp://recman:$pass@127.0.0.1:$p/recman-test"; done
  export RECMAN_TEST_CLUSTER_URLS="${urls# }"
  export RECMAN_TEST_CLUSTER_NODES="${names# }"
  export RECMAN_TEST_CLUSTER_CTL="$RMQC_DIR/ctl"
  echo "== RabbitMQ cluster ready:$names"
}

_rmqc_write_ctl() {
  # The control script: everything the tests do to a node, by its number.
  cat >"$RMQC_DIR/ctl" <<'CTL'
#!/usr/bin/env bash
# ctl N ARGS… (rabbitmqctl), ctl queues N ARGS… (rabbitmq-queues),
# ctl start|stop|kill|pause|resume|pid|name|wait N
set -uo pipefail
top="$(cd "$(dirname "$0")" && pwd)"
envof() { grep -v '^#' "$top/n$1/env" | tr '\n' ' '; }
run() { # run N TOOL ARGS…
  local n=$1 tool=$2; shift 2
  # shellcheck disable=SC2046
  runuser -u rabbitmq -- env $(envof "$n") "/usr/lib/rabbitmq/bin/$tool" -n "$(cat "$top/n$n/name")" "$@"
}
pid() { cat "$top/n$1/rabbitmq.pid" 2>/dev/null; }
case "$1" in
  queues) shift; n=$1; shift; run "$n" rabbitmq-queues "$@" ;;
  name) cat "$top/n$2/name" ;;
  pid) pid "$2" ;;
  kill) p=$(pid "$2") && kill -KILL "$p" && while kill -0 "$p" 2>/dev/null; do sleep 0.1; done ;;
  pause) kill -STOP "$(pid "$2")" ;;
  resume) kill -CONT "$(pid "$2")" ;;
  stop) run "$2" rabbitmqctl stop >/dev/null 2>&1 ;;
  wait) run "$2" rabbitmqctl await_startup --timeout 90 >/dev/null ;;
  start)
    n=$2
    rm -f "$top/n$n/rabbitmq.pid"
    # shellcheck disable=SC2046
    setsid runuser -u rabbitmq -- env $(envof "$n") \
      RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS="-kernel inet_dist_use_interface {127,0,0,1}" \
      /usr/lib/rabbitmq/bin/rabbitmq-server >>"$top/n$n/log/stdout.log" 2>&1 </dev/null &
    for _ in $(seq 1 240); do
      if run "$n" rabbitmqctl ping >/dev/null 2>&1; then
        run "$n" rabbitmqctl await_startup --timeout 90 >/dev/null && exit 0
        exit 1
      fi
      sleep 0.25
    done
    exit 1
    ;;
  *) n=$1; shift; run "$n" rabbitmqctl "$@" ;;
esac
CTL
  chmod 755 "$RMQC_DIR/ctl"
}

rmqc_stop() {
  [ -n "${RMQC_DIR:-}" ] || return 0
  echo "== stopping the private RabbitMQ cluster in $RMQC_DIR"
  local i p stoppers=()
  for i in 1 2 3; do
    p=$(cat "$RMQC_DIR/n$i/rabbitmq.pid" 2>/dev/null) || continue
    kill -CONT "$p" 2>/dev/null || true
    ("$RMQC_DIR/ctl" stop "$i" || kill -KILL "$p" 2>/dev/null) &
    stoppers+=($!)
  done
  # Only these: a bare `wait` in tests/run's shell would also wait for the
  # single node's server, started in the background by the same shell.
  if [ ${#stoppers[@]} -gt 0 ]; then wait "${stoppers[@]}" || true; fi
  for i in 1 2 3; do
    p=$(cat "$RMQC_DIR/n$i/rabbitmq.pid" 2>/dev/null) || continue
    for _ in $(seq 1 40); do kill -0 "$p" 2>/dev/null || break; sleep 0.25; done
    kill -KILL "$p" 2>/dev/null || true
  done
  runuser -u rabbitmq -- env ERL_EPMD_PORT="$RMQC_EPMD_PORT" epmd -kill >/dev/null 2>&1 || true
  rm -rf "$RMQC_DIR"
  unset RMQC_DIR RECMAN_TEST_CLUSTER_URLS RECMAN_TEST_CLUSTER_NODES RECMAN_TEST_CLUSTER_CTL
}

if [ "${BASH_SOURCE[0]}" = "$0" ]; then
  set -euo pipefail
  case "${1:-}" in
    start)
      rmqc_start >&2
      echo "export RMQC_DIR=$RMQC_DIR RMQC_EPMD_PORT=$RMQC_EPMD_PORT"
      echo "export RECMAN_TEST_CLUSTER_URLS='$RECMAN_TEST_CLUSTER_URLS'"
      echo "export RECMAN_TEST_CLUSTER_NODES='$RECMAN_TEST_CLUSTER_NODES' RECMAN_TEST_CLUSTER_CTL=$RECMAN_TEST_CLUSTER_CTL"
      disown -a
      ;;
    stop)
      [ -n "${RMQC_DIR:-}" ] || { echo "RMQC_DIR is not set: eval the output of start first" >&2; exit 2; }
      rmqc_stop
      ;;
    *) echo "usage: $0 start|stop" >&2; exit 2 ;;
  esac
fi
