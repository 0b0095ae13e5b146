#!/usr/bin/env bash
# Several replicas, to try by hand (README "Running several replicas"):
# builds, starts a local PostgreSQL on a Unix socket (no TCP port) and two
# broker replicas on one database, on 127.0.0.1:8443 (replica a) and
# 127.0.0.1:8444 (replica b). Their configs are conf/dev.yaml with a
# `store.postgres` section, a replica_id each and the keys replicas must
# share (seal key, audit signing key, the jwt issuer's key), all under
# data/replicas/. Ctrl-C stops both replicas and the database.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
bash scripts/deps.sh
bash scripts/build.sh
state="$root/data/replicas"
pg="/tmp/jitbroker-replicas-pg"
mkdir -p "$state/keys" "$root/data/keys"
chmod 0700 "$state" "$state/keys"
[ -f "$state/keys/seal.b64" ] || (umask 077; openssl rand -base64 32 > "$state/keys/seal.b64")
for k in audit jwt; do
  [ -f "$state/keys/$k.pem" ] ||
    (umask 077; openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$state/keys/$k.pem" 2>/dev/null)
done
bash scripts/pg-test-server.sh start "$pg" --durable
echo "host=$pg user=jitbroker dbname=postgres" > "$state/keys/dsn"
chmod 0600 "$state/keys/dsn"
pids=()
stop() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  bash scripts/pg-test-server.sh stop "$pg"
}
trap stop EXIT INT TERM
for r in a b; do
  port=$([ "$r" = a ] && echo 8443 || echo 8444)
  sed -e "s|^data_dir: .*|data_dir: $state/$r|" \
      -e "s|listen: 127.0.0.1:8443|listen: 127.0.0.1:$port|" \
      -e "s|^  sqlite: {}|  postgres: {dsn: \"file:$state/keys/dsn\", replica_id: replica-$r}|" \
      -e "s|^audit: {}|audit: {signing_key: \"file:$state/keys/audit.pem\"}\nseal_key: \"file:$state/keys/seal.b64\"|" \
      -e "s|^    type: jwt|    type: jwt\n    signing_key: \"file:$state/keys/jwt.pem\"|" \
      -e "s|api_key_file: \.\./data/keys/|api_key_file: $root/data/keys/|" \
      conf/dev.yaml > "$state/$r.yaml"
done
# Replica a generates the API keys (data/keys/, shared with conf/dev.yaml)
# before b reads them.
build/jitbroker --config "$state/a.yaml" &
pids+=($!)
for _ in $(seq 50); do
  curl -fsS -o /dev/null http://127.0.0.1:8443/readyz 2>/dev/null && break
  sleep 0.2
done
build/jitbroker --config "$state/b.yaml" &
pids+=($!)
echo "replicas: a on http://127.0.0.1:8443, b on http://127.0.0.1:8444 (API keys in data/keys/)" >&2
wait -n "${pids[@]}"
