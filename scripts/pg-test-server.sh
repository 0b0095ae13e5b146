#!/usr/bin/env bash
# Starts or stops a throwaway PostgreSQL server for the tests
# (docs/testing.md, "PostgreSQL"): Debian's PostgreSQL 15, listening only on
# a Unix socket in DIR (no TCP port, no clash with a system cluster), with
# trust authentication for the user `jitbroker`.
#
#   scripts/pg-test-server.sh start DIR [--durable]   # prints nothing; DSN: host=DIR user=jitbroker dbname=postgres
#   scripts/pg-test-server.sh stop DIR                # stops it and removes DIR
#   scripts/pg-test-server.sh kill DIR                # stops it at once (-m immediate), keeps DIR
#   scripts/pg-test-server.sh resume DIR              # starts a killed server again on DIR
#
# PostgreSQL refuses to run as root: as root, the server runs as the
# `postgres` user (runuser), which owns DIR. fsync is off unless --durable
# (functional tests do not need it; benchmarks and fault tests keep it on).
set -euo pipefail
cmd=${1:?start|stop|kill|resume}
dir=${2:?directory}
bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)
if [ -z "$bin" ] || [ ! -x "$bin/pg_ctl" ]; then
  echo "pg-test-server: PostgreSQL is not installed (apt-get install postgresql)" >&2
  exit 1
fi
as_owner() {
  if [ "$(id -u)" -eq 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}
case "$cmd" in
  start)
    fsync=off
    [ "${3:-}" = "--durable" ] && fsync=on
    if [ -f "$dir/data/postmaster.pid" ]; then
      as_owner "$bin/pg_ctl" -D "$dir/data" -m immediate stop >/dev/null 2>&1 || true
    fi
    rm -rf "$dir"
    mkdir -p "$dir"
    chmod 0700 "$dir"
    [ "$(id -u)" -eq 0 ] && chown postgres: "$dir"
    as_owner "$bin/initdb" -D "$dir/data" -A trust -U jitbroker -E UTF8 --no-sync >"$dir/initdb.log" 2>&1 ||
      { cat "$dir/initdb.log" >&2; exit 1; }
    # In the server's own config, so that `resume` starts it the same way.
    cat >>"$dir/data/postgresql.conf" <<CONF
unix_socket_directories = '$dir'
listen_addresses = ''
fsync = $fsync
max_connections = 300
CONF
    as_owner "$bin/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 60 start >/dev/null ||
      { cat "$dir/server.log" >&2; exit 1; }
    ;;
  kill)
    as_owner "$bin/pg_ctl" -D "$dir/data" -m immediate stop >/dev/null
    ;;
  resume)
    as_owner "$bin/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 60 start >/dev/null ||
      { cat "$dir/server.log" >&2; exit 1; }
    ;;
  stop)
    if [ -f "$dir/data/postmaster.pid" ]; then
      as_owner "$bin/pg_ctl" -D "$dir/data" -m immediate stop >/dev/null 2>&1 || true
    fi
    rm -rf "$dir"
    ;;
  *)
    echo "usage: $0 start|stop|kill|resume DIR" >&2
    exit 2
    ;;
esac
