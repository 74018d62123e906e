#!/usr/bin/env bash
# A private PostgreSQL 15 server for the tests of the PostgreSQL event log
# (events/tests/pg_log_conformance.rs and the standby tests): run as the
# `postgres` user (PostgreSQL refuses root) on 127.0.0.1 with a free port,
# data directory, socket and log under one temp dir, password auth. Never
# touches the system's own cluster. The tests of the PostgreSQL *writer*
# (tests/tests/postgres_*.rs) start clusters of their own on loop devices.
#
#   source tests/services/postgres.sh && pg_start   # exports RECMAN_TEST_PG_URL
#   pg_stop                                          # stops it and removes its dir

PG_BIN=${PG_BIN:-/usr/lib/postgresql/15/bin}

_pg_free_port() {
  local p
  for _ in $(seq 1 200); do
    p=$(( (RANDOM % 30000) + 20000 ))
    if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then echo "$p"; return 0; fi
  done
  return 1
}

pg_start() {
  [ -x "$PG_BIN/initdb" ] || { echo "PostgreSQL 15 is not installed ($PG_BIN/initdb)" >&2; return 1; }
  PG_DIR=$(mktemp -d /tmp/recman-pg.XXXXXX)
  local port pw
  port=$(_pg_free_port) || return 1
  pw=$(head -c 18 /dev/urandom | od -An -tx1 | tr -d ' \n')
  printf '%s\n' "$pw" >"$PG_DIR/pw"
  mkdir -p "$PG_DIR/data" "$PG_DIR/run"
  chown -R postgres:postgres "$PG_DIR"
  chmod 700 "$PG_DIR/data"
  runuser -u postgres -- "$PG_BIN/initdb" -D "$PG_DIR/data" -U postgres --pwfile="$PG_DIR/pw" \
    --auth-local=trust --auth-host=scram-sha-256 -E UTF8 >"$PG_DIR/initdb.log" 2>&1 \
    || { cat "$PG_DIR/initdb.log" >&2; return 1; }
  runuser -u postgres -- "$PG_BIN/pg_ctl" -D "$PG_DIR/data" -l "$PG_DIR/server.log" -w -t 60 \
    -o "-c listen_addresses=127.0.0.1 -p $port -k $PG_DIR/run -c max_connections=200 -c fsync=on" \
    start >/dev/null || { cat "$PG_DIR/server.log" >&2; return 1; }
  PG_PORT=$port
  export PG_DIR PG_PORT
  export RECMAN_TEST_PG_URL="postgresql://postgres:$pw@127.0.0.1:$port/postgres"
  echo "== private PostgreSQL on 127.0.0.1:$port ($PG_DIR)"
}

pg_stop() {
  [ -n "${PG_DIR:-}" ] || return 0
  echo "== stopping private PostgreSQL ($PG_DIR)"
  runuser -u postgres -- "$PG_BIN/pg_ctl" -D "$PG_DIR/data" -m immediate -w stop >/dev/null 2>&1 || true
  rm -rf "$PG_DIR"
  unset PG_DIR PG_PORT RECMAN_TEST_PG_URL
}
