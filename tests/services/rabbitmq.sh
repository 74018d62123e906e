#!/usr/bin/env bash
# A private RabbitMQ node for the tests: loopback only, free ports, its own
# data/log/config under a temp dir owned by the `rabbitmq` user, no plugins.
# Never touches the system's own RabbitMQ service.
#
#   source tests/services/rabbitmq.sh && rabbitmq_start   # exports RECMAN_TEST_AMQP_URL and RECMAN_TEST_RABBITMQCTL
#   rabbitmq_stop                                          # stops the node and its epmd, removes the temp dir
#   (also a TLS listener with a throwaway CA: RECMAN_TEST_AMQPS_URL, RECMAN_TEST_AMQP_CA)
#   tests/services/rabbitmq.sh start|stop|install          # the same from a shell (start prints the exports)
#
# Installs rabbitmq-server from Debian when missing (as root). Variables a
# test may use after start: RECMAN_TEST_AMQP_URL (amqp://recman:…@127.0.0.1:PORT/recman-test),
# RECMAN_TEST_RABBITMQCTL (a command that runs rabbitmqctl against the private node).

rabbitmq_install() {
  # rabbitmq-server for the private node, python3-pika for deploy/examples.
  local pkgs=""
  [ -x /usr/lib/rabbitmq/bin/rabbitmq-server ] || pkgs="rabbitmq-server"
  /usr/bin/python3 -c 'import pika' >/dev/null 2>&1 || pkgs="$pkgs python3-pika"
  command -v openssl >/dev/null 2>&1 || pkgs="$pkgs openssl"
  [ -n "$pkgs" ] || return 0
  echo "== installing$( [ -n "$pkgs" ] && echo " $pkgs") (Debian packages)"
  # Keep the package from starting the system-wide service: the tests use a private node.
  local policy=/usr/sbin/policy-rc.d added=""
  if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' >"$policy" && chmod +x "$policy" && added=1
  fi
  export DEBIAN_FRONTEND=noninteractive
  # shellcheck disable=SC2086
  apt-get update -qq && apt-get install -y -qq --no-install-recommends $pkgs >/dev/null
  local rc=$?
  if [ -n "$added" ]; then rm -f "$policy"; fi
  return $rc
}

_rmq_free_port() {
  local p
  for _ in $(seq 1 200); do
    p=$(( (RANDOM % 30000) + 20000 ))
    if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then echo "$p"; return 0; fi
  done
  return 1
}

_rmq_tls() {
  # A throwaway CA and a server certificate for 127.0.0.1 signed by it.
  local d=$1
  openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj "/CN=recman test CA" \
    -keyout "$d/ca.key" -out "$d/ca.pem" >/dev/null 2>&1 &&
    openssl req -newkey rsa:2048 -nodes -subj "/CN=127.0.0.1" \
      -keyout "$d/server.key" -out "$d/server.csr" >/dev/null 2>&1 &&
    printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\n' >"$d/san.ext" &&
    openssl x509 -req -in "$d/server.csr" -CA "$d/ca.pem" -CAkey "$d/ca.key" -CAcreateserial \
      -days 2 -extfile "$d/san.ext" -out "$d/server.pem" >/dev/null 2>&1
}

_rmq_env() {
  # Everything a rabbitmq-server / rabbitmqctl run needs to find the private node.
  echo HOME="$RMQ_DIR" \
    RABBITMQ_NODENAME="$RMQ_NODE" \
    RABBITMQ_NODE_IP_ADDRESS=127.0.0.1 \
    RABBITMQ_NODE_PORT="$RMQ_PORT" \
    RABBITMQ_DIST_PORT="$RMQ_DIST_PORT" \
    ERL_EPMD_ADDRESS=127.0.0.1 \
    ERL_EPMD_PORT="$RMQ_EPMD_PORT" \
    RABBITMQ_MNESIA_BASE="$RMQ_DIR/mnesia" \
    RABBITMQ_LOG_BASE="$RMQ_DIR/log" \
    RABBITMQ_CONFIG_FILE="$RMQ_DIR/rabbitmq.conf" \
    RABBITMQ_ADVANCED_CONFIG_FILE="$RMQ_DIR/advanced.config" \
    RABBITMQ_CONF_ENV_FILE="$RMQ_DIR/rabbitmq-env.conf" \
    RABBITMQ_ENABLED_PLUGINS_FILE="$RMQ_DIR/enabled_plugins" \
    RABBITMQ_PID_FILE="$RMQ_DIR/rabbitmq.pid"
}

rabbitmq_ctl() {
  # shellcheck disable=SC2046
  runuser -u rabbitmq -- env $(_rmq_env) /usr/lib/rabbitmq/bin/rabbitmqctl -n "$RMQ_NODE" "$@"
}

rabbitmq_start() {
  rabbitmq_install || { echo "cannot install rabbitmq-server" >&2; return 1; }
  RMQ_DIR=$(mktemp -d /tmp/recman-rabbitmq.XXXXXX)
  RMQ_NODE="recman-test-$$@localhost"
  RMQ_PORT=$(_rmq_free_port) && RMQ_DIST_PORT=$(_rmq_free_port) && RMQ_EPMD_PORT=$(_rmq_free_port) || return 1
  RMQ_TLS_PORT=$(_rmq_free_port) || return 1
  mkdir -p "$RMQ_DIR/mnesia" "$RMQ_DIR/log" "$RMQ_DIR/tls"
  _rmq_tls "$RMQ_DIR/tls" || { echo "cannot make the test TLS certificates" >&2; return 1; }
  cat >"$RMQ_DIR/rabbitmq.conf" <<CONF
listeners.tcp.default = 127.0.0.1:$RMQ_PORT
listeners.ssl.default = 127.0.0.1:$RMQ_TLS_PORT
ssl_options.cacertfile = $RMQ_DIR/tls/ca.pem
ssl_options.certfile = $RMQ_DIR/tls/server.pem
ssl_options.keyfile = $RMQ_DIR/tls/server.key
ssl_options.verify = verify_none
ssl_options.fail_if_no_peer_cert = false
loopback_users = none
disk_free_limit.absolute = 50MB
log.console = false
log.file.level = warning
CONF
  echo "[]." >"$RMQ_DIR/advanced.config"
  : >"$RMQ_DIR/rabbitmq-env.conf"
  echo "[]." >"$RMQ_DIR/enabled_plugins"
  head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$RMQ_DIR/.erlang.cookie"
  chmod 400 "$RMQ_DIR/.erlang.cookie"
  chown -R rabbitmq:rabbitmq "$RMQ_DIR"
  export RMQ_DIR RMQ_NODE RMQ_PORT RMQ_DIST_PORT RMQ_EPMD_PORT
  echo "== starting private RabbitMQ node $RMQ_NODE on 127.0.0.1:$RMQ_PORT (dir $RMQ_DIR)"
  # shellcheck disable=SC2046
  runuser -u rabbitmq -- env $(_rmq_env) \
    RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS="-kernel inet_dist_use_interface {127,0,0,1}" \
    /usr/lib/rabbitmq/bin/rabbitmq-server >"$RMQ_DIR/log/stdout.log" 2>&1 &
  RMQ_PID=$!
  export RMQ_PID
  local ok=""
  for _ in $(seq 1 120); do
    if rabbitmq_ctl ping >/dev/null 2>&1; then ok=1; break; fi
    if ! kill -0 "$RMQ_PID" 2>/dev/null; then break; fi
    sleep 0.5
  done
  if [ -z "$ok" ] || ! rabbitmq_ctl await_startup --timeout 60 >/dev/null; then
    echo "RabbitMQ did not start; its output:" >&2
    tail -n 40 "$RMQ_DIR/log/stdout.log" "$RMQ_DIR"/log/*.log >&2 2>/dev/null
    rabbitmq_stop
    return 1
  fi
  local pass
  pass=$(head -c 18 /dev/urandom | od -An -tx1 | tr -d ' \n')
  rabbitmq_ctl add_vhost recman-test >/dev/null &&
    rabbitmq_ctl add_user recman "$pass" >/dev/null &&
    rabbitmq_ctl set_permissions -p recman-test recman '.*' '.*' '.*' >/dev/null || { rabbitmq_stop; return 1; }
  export RECMAN_TEST_AMQP_URL="amqp://recman:$pass@127.0.0.1:$RMQ_PORT/recman-test"
  export RECMAN_TEST_AMQPS_URL="amqps://recman:$pass@127.0.0.1:$RMQ_TLS_PORT/recman-test"
  export RECMAN_TEST_AMQP_CA="$RMQ_DIR/tls/ca.pem"
  # A command line the tests can run (split on spaces) to control the node.
  cat >"$RMQ_DIR/rabbitmqctl" <<CTL
#!/usr/bin/env bash
exec runuser -u rabbitmq -- env $(_rmq_env) /usr/lib/rabbitmq/bin/rabbitmqctl -n "$RMQ_NODE" "\$@"
CTL
  chmod 755 "$RMQ_DIR/rabbitmqctl"
  export RECMAN_TEST_RABBITMQCTL="$RMQ_DIR/rabbitmqctl"
  echo "== RabbitMQ ready: vhost recman-test, user recman"
}

rabbitmq_stop() {
  [ -n "${RMQ_DIR:-}" ] || return 0
  echo "== stopping private RabbitMQ node $RMQ_NODE"
  rabbitmq_ctl stop >/dev/null 2>&1 || true
  if [ -n "${RMQ_PID:-}" ]; then
    for _ in $(seq 1 40); do kill -0 "$RMQ_PID" 2>/dev/null || break; sleep 0.25; done
    kill "$RMQ_PID" 2>/dev/null || true
  fi
  # The node started an epmd on its private port: stop that one only.
  runuser -u rabbitmq -- env ERL_EPMD_PORT="$RMQ_EPMD_PORT" epmd -kill >/dev/null 2>&1 ||
    env ERL_EPMD_PORT="$RMQ_EPMD_PORT" /usr/lib/erlang/bin/epmd -kill >/dev/null 2>&1 || true
  rm -rf "$RMQ_DIR"
  unset RMQ_DIR RMQ_PID RECMAN_TEST_AMQP_URL RECMAN_TEST_AMQPS_URL RECMAN_TEST_AMQP_CA RECMAN_TEST_RABBITMQCTL
}

if [ "${BASH_SOURCE[0]}" = "$0" ]; then
  set -euo pipefail
  case "${1:-}" in
    install) rabbitmq_install ;;
    start)
      rabbitmq_start >&2
      echo "export RMQ_DIR=$RMQ_DIR RMQ_NODE=$RMQ_NODE RMQ_PORT=$RMQ_PORT RMQ_DIST_PORT=$RMQ_DIST_PORT RMQ_EPMD_PORT=$RMQ_EPMD_PORT RMQ_PID=$RMQ_PID"
      echo "export RECMAN_TEST_AMQP_URL=$RECMAN_TEST_AMQP_URL RECMAN_TEST_RABBITMQCTL=$RECMAN_TEST_RABBITMQCTL"
      echo "export RECMAN_TEST_AMQPS_URL=$RECMAN_TEST_AMQPS_URL RECMAN_TEST_AMQP_CA=$RECMAN_TEST_AMQP_CA"
      disown -a
      ;;
    stop)
      [ -n "${RMQ_DIR:-}" ] || { echo "RMQ_DIR is not set: eval the output of start first" >&2; exit 2; }
      rabbitmq_stop
      ;;
    *) echo "usage: $0 start|stop|install" >&2; exit 2 ;;
  esac
fi
