#!/usr/bin/env bash
# CI OIDC token-exchange benchmark (issue #5): how many RFC 8693 exchanges per
# second (RS256 GitHub Actions subject tokens in, broker `jwt` issuer ES256
# credentials out, each one verified, matched against a trust policy, evaluated,
# minted and durably audited) compared with the exchange floor measured in the
# same run (bench/ceiling_server.cc: an RS256 verification, an ES256 signature
# and the audit line durable in the store, then written to the JSONL file,
# synced as the broker syncs its own). Target: exchanges/floor >= 0.7; the
# ratio to the ceiling (a trivial endpoint) is information. See bench/README.md.
#
#   bench/exchange.sh                  standalone: ceiling and floor phases (as
#                                      run.sh's (a)), then the exchange phase;
#                                      table in bench/results/exchange-latest.txt
#   EXCHANGE_CEILING="RESULT …" EXCHANGE_FLOOR="RESULT …" bench/exchange.sh
#                                      run.sh's phase (d): reuse its ceiling and
#                                      its /floor/exchange (either one missing
#                                      is measured here)
#
# Environment (as run.sh): BUILD_DIR (build-bench), BENCH_CONNS (32),
# BENCH_DURATION (10), BENCH_WARMUP (2), BENCH_THREADS (64), BENCH_REBUILD=1,
# BENCH_STRICT=1, BENCH_FILE_SYNC (interval | commit: the broker's
# audit.file_sync and the floor's, default interval); and BENCH_EXCHANGE_TOKENS
# (pre-signed subject tokens, default 60000: each is exchanged once, replay
# protection is on), BENCH_EXCHANGE_RUNS (distinct CI runs, i.e. implicit
# sessions, default 64), BENCH_EXCHANGE_GRANTS=0 (standalone: skip the grant
# phase on the same broker).
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$(pwd)
BUILD_DIR=${BUILD_DIR:-build-bench}
BIN="$ROOT/$BUILD_DIR"
CONNS=${BENCH_CONNS:-32}
DURATION=${BENCH_DURATION:-10}
WARMUP=${BENCH_WARMUP:-2}
THREADS=${BENCH_THREADS:-64}
TOKENS=${BENCH_EXCHANGE_TOKENS:-60000}
RUNS=${BENCH_EXCHANGE_RUNS:-64}
TARGET=0.7  # exchanges/s over the exchange floor's req/s
FILE_SYNC=${BENCH_FILE_SYNC:-interval}
FILE_SYNC_INTERVAL_MS=200  # as run.sh: the broker's default, given to both
RESULTS_DIR="$ROOT/bench/results"
AUDIENCE=jitbroker.bench.example
POLICY=bench-ci

BENCH_NAME=bench/exchange
# shellcheck source=bench/lib.sh
source bench/lib.sh
[[ "$FILE_SYNC" == interval || "$FILE_SYNC" == commit ]] ||
  die "BENCH_FILE_SYNC must be interval or commit, not '$FILE_SYNC'"

bench_build jitbroker ceiling_server loadgen exchange_bench

bench_note_load
umask 077
TMP=$(mktemp -d "${TMPDIR:-/tmp}/jitbroker-exchange.XXXXXX")
PIDS=()
cleanup() {
  local p
  for p in "${PIDS[@]}"; do
    stop_pid "$p"
  done
  rm -rf "$TMP"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Waits up to $3 s (default 20) for "... listening on port N" in $1; prints N.
wait_port() {
  local file=$1 pid=$2 limit=${3:-20} port
  for _ in $(seq 1 $((limit * 10))); do
    port=$(sed -n 's/.*listening on port \([0-9][0-9]*\).*/\1/p' "$file" | head -n 1)
    if [[ -n "$port" ]]; then
      echo "$port"
      return 0
    fi
    kill -0 "$pid" 2>/dev/null || return 1
    sleep 0.1
  done
  return 1
}
field() { sed -n "s/.* $1=\([^ ]*\).*/\1/p"; }
commit_stats() {
  { curl -sS --max-time 5 "http://127.0.0.1:$1/metrics" || true; } |
    awk '/^jitbroker_audit_commit_batches_sum[ {]/ {s=$NF} /^jitbroker_audit_commit_batches_count[ {]/ {c=$NF}
         END {printf "%s %s\n", (s==""?0:s), (c==""?0:c)}'
}
LOADGEN=("$BIN/loadgen" -c "$CONNS" -t 1)

# --- ceiling and floor (the core benchmark's phase (a)) ---------------------------
CEIL=${EXCHANGE_CEILING:-}
FLOOR=${EXCHANGE_FLOOR:-}
if [[ -z "$CEIL" || -z "$FLOOR" ]]; then
  echo "bench/exchange: ceiling and floor (file sync $FILE_SYNC): $CONNS connections, ${WARMUP}s warm-up + ${DURATION}s" >&2
  "$BIN/ceiling_server" 0 "$THREADS" "$TMP/floor.journal" --file-sync "$FILE_SYNC" \
    --file-sync-interval-ms "$FILE_SYNC_INTERVAL_MS" >"$TMP/ceiling.out" 2>"$TMP/ceiling.err" &
  CPID=$!
  PIDS+=("$CPID")
  CPORT=$(wait_port "$TMP/ceiling.out" "$CPID") || die "ceiling_server did not start: $(cat "$TMP/ceiling.err")"
  if [[ -z "$CEIL" ]]; then
    "${LOADGEN[@]}" -l ceiling -w "$WARMUP" -d "$DURATION" -m POST -b '{}' \
      --url "http://127.0.0.1:$CPORT/ping" >"$TMP/ceiling.txt" || die "loadgen (ceiling) failed"
    cat "$TMP/ceiling.txt" >&2
    CEIL=$(grep '^RESULT ' "$TMP/ceiling.txt")
  fi
  if [[ -z "$FLOOR" ]]; then
    "${LOADGEN[@]}" -l floor-exchange -w "$WARMUP" -d "$DURATION" -m POST -b '{}' \
      --url "http://127.0.0.1:$CPORT/floor/exchange" >"$TMP/floor.txt" || die "loadgen (floor) failed"
    cat "$TMP/floor.txt" >&2
    FLOOR=$(grep '^RESULT ' "$TMP/floor.txt")
  fi
  stop_pid "$CPID"
  grep '^floor: ' "$TMP/ceiling.err" >&2 || true
  rm -f "$TMP"/floor.journal*
fi

# --- the OIDC issuer and the token pool ------------------------------------------
echo "bench/exchange: signing $TOKENS RS256 subject tokens over $RUNS CI runs" >&2
"$BIN/exchange_bench" --out "$TMP/bodies" --tokens "$TOKENS" --runs "$RUNS" \
  --audience "$AUDIENCE" --policy "$POLICY" >"$TMP/idp.out" 2>"$TMP/idp.err" &
IDP_PID=$!
PIDS+=("$IDP_PID")
IDP_PORT=$(wait_port "$TMP/idp.out" "$IDP_PID" 600) ||
  die "exchange_bench did not start: $(cat "$TMP/idp.err")"
SIGNING=$(grep '^signed ' "$TMP/idp.out" || true)
echo "bench/exchange: $SIGNING" >&2

# --- the broker, with one trust policy for the issuer ------------------------------
mkdir -p "$TMP/broker"
cp bench/bench.yaml "$TMP/broker/bench.yaml"
sed -i "s/^  threads: 64$/  threads: $THREADS/" "$TMP/broker/bench.yaml"
set_file_sync "$TMP/broker/bench.yaml"
printf 'jbk_%s\n' "$(od -An -N20 -tx1 /dev/urandom | tr -d ' \n')" >"$TMP/broker/engineer.key"
cat >>"$TMP/broker/bench.yaml" <<EOF

# Added by bench/exchange.sh: a secure GitHub Actions trust policy (owner id,
# repository id, ref, event) for the loopback issuer of exchange_bench.
trust:
  - name: $POLICY
    issuer: http://127.0.0.1:$IDP_PORT
    allow_http: true
    provider: github_actions
    audience: $AUDIENCE
    claims: {repository_owner_id: "123", repository_id: "456", ref: refs/heads/main, event_name: push}
    grant: {issuer: internal, resource: "jwt://mcp.internal", scopes: [read], ttl_seconds: 300}
    replay_protection: true
EOF
"$BIN/jitbroker" --config "$TMP/broker/bench.yaml" >"$TMP/broker.out" 2>"$TMP/broker.err" &
BROKER_PID=$!
PIDS+=("$BROKER_PID")
BPORT=$(wait_port "$TMP/broker.out" "$BROKER_PID") ||
  die "jitbroker did not start: $(tail -n 20 "$TMP/broker.err")"
BASE="http://127.0.0.1:$BPORT"

# One exchange by hand first: the load must be successful exchanges.
HTTP=$(curl -sS --max-time 10 -o "$TMP/probe.json" -w '%{http_code}' -X POST \
  -H 'Content-Type: application/x-www-form-urlencoded' --data-binary @"$TMP/bodies.probe" \
  "$BASE/v1/token") || die "probe exchange failed"
[[ "$HTTP" == 200 ]] ||
  die "the probe exchange answered $HTTP: $(sed 's/"access_token":"[^"]*"/"access_token":"[redacted]"/; s/"token":"[^"]*"/"token":"[redacted]"/' "$TMP/probe.json")"
rm -f "$TMP/probe.json"

# Standalone: the core benchmark's grant phase (b) on this same broker first,
# so the two paths are compared under the same conditions.
GRANT=""
if [[ -z "${EXCHANGE_CEILING:-}" && "${BENCH_EXCHANGE_GRANTS:-1}" == 1 ]]; then
  printf 'Authorization: Bearer %s\n' "$(cat "$TMP/broker/engineer.key")" >"$TMP/principal.headers"
  SESSION_BODY='{"agent":{"id":"bench_agent"},"task":{"id":"bench_task","scope":{"resources":["jwt://mcp.internal"],"max_tier":"read","issuers":["internal"]}},"ttl_seconds":900,"heartbeat_seconds":600}'
  curl -sS --max-time 10 -o "$TMP/session.json" -X POST -H @"$TMP/principal.headers" \
    -H 'Content-Type: application/json' --data "$SESSION_BODY" "$BASE/v1/sessions" ||
    die "POST /v1/sessions failed"
  SID=$(sed -n 's/.*"session_id":"\([^"]*\)".*/\1/p' "$TMP/session.json")
  printf 'Authorization: Bearer %s\n' "$(sed -n 's/.*"session_token":"\([^"]*\)".*/\1/p' "$TMP/session.json")" \
    >"$TMP/session.headers"
  rm -f "$TMP/session.json"
  printf '%s' '{"tool":"mcp.search","operation":"read","resource":"jwt://mcp.internal","issuer":"internal","ttl_seconds":300}' >"$TMP/grant.json"
  echo "bench/exchange: (b) grants on the same broker: $CONNS connections, ${WARMUP}s warm-up + ${DURATION}s" >&2
  "${LOADGEN[@]}" -l grants -w "$WARMUP" -d "$DURATION" -m POST --header-file "$TMP/session.headers" \
    --body-file "$TMP/grant.json" --url "$BASE/v1/sessions/$SID/grants" >"$TMP/grants.txt" ||
    die "loadgen (grants) failed: $(cat "$TMP/grants.txt")"
  cat "$TMP/grants.txt" >&2
  GRANT=$(grep '^RESULT ' "$TMP/grants.txt")
fi

echo "bench/exchange: exchanges: $CONNS connections, ${WARMUP}s warm-up + ${DURATION}s" >&2
M0=$(commit_stats "$BPORT")
"${LOADGEN[@]}" -l exchanges -w "$WARMUP" -d "$DURATION" -m POST \
  -H 'Content-Type: application/x-www-form-urlencoded' --body-lines "$TMP/bodies" \
  --url "$BASE/v1/token" >"$TMP/exchange.txt" ||
  die "loadgen against /v1/token failed: $(cat "$TMP/exchange.txt"; tail -n 5 "$TMP/broker.err")"
cat "$TMP/exchange.txt" >&2
M1=$(commit_stats "$BPORT")
EX=$(grep '^RESULT ' "$TMP/exchange.txt")
SESSIONS=$(curl -sS --max-time 5 "$BASE/metrics" | awk '/^jitbroker_sessions_opened_total/ {print $NF}')
stop_pid "$BROKER_PID"
stop_pid "$IDP_PID"
JWKS_HITS=$(sed -n 's/^jwks requests served: //p' "$TMP/idp.out")

C_RPS=$(field rps <<<"$CEIL")
F_RPS=$(field rps <<<"$FLOOR")
E_RPS=$(field rps <<<"$EX"); E_P50=$(field p50_ms <<<"$EX"); E_P99=$(field p99_ms <<<"$EX")
ratio() { awk -v n="$1" -v d="$2" 'BEGIN {if (d > 0) printf "%.3f", n / d; else print "n/a"}'; }
RATIO_A=$(ratio "$E_RPS" "$C_RPS")
RATIO_F=$(ratio "$E_RPS" "$F_RPS")
MET=$(awk -v r="$RATIO_F" -v t="$TARGET" -v n="$(field non2xx <<<"$EX")" -v w="$(field body_wraps <<<"$EX")" \
  'BEGIN {print (r + 0 >= t && n == 0 && w == 0) ? 1 : 0}')
BATCH=$(awk -v a="$M0" -v b="$M1" 'BEGIN {split(a, x, " "); split(b, y, " "); n = y[2] - x[2];
       if (n > 0) printf "%.1f", (y[1] - x[1]) / n; else printf "n/a"}')
echo "RESULT bench=exchange rps=$E_RPS p50_ms=$E_P50 p99_ms=$E_P99 ceiling_rps=$C_RPS floor_rps=$F_RPS" \
     "ratio_a=$RATIO_A ratio_floor=$RATIO_F target=$TARGET met=$MET file_sync=$FILE_SYNC" \
     "non2xx=$(field non2xx <<<"$EX") errors=$(field errors <<<"$EX")" \
     "body_wraps=$(field body_wraps <<<"$EX") tokens=$TOKENS runs=$RUNS sessions_opened=${SESSIONS:-0}" \
     "jwks_fetches=${JWKS_HITS:-?} requests_per_commit=$BATCH"

if [[ -z "${EXCHANGE_CEILING:-}" ]]; then
  REV=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
  CPU=$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n 1)
  mkdir -p "$RESULTS_DIR"
  {
    echo "jitbroker token-exchange benchmark  $(date -u +%Y-%m-%dT%H:%M:%SZ)  rev $REV"
    echo "host: $(nproc) CPUs ($CPU); loadgen shares them with the server"
    echo "load average: $LOAD_START at start, $(cut -d' ' -f1-3 /proc/loadavg) at end"
    echo "load: $CONNS keep-alive connections, 1 loadgen thread, ${WARMUP}s warm-up + ${DURATION}s per phase; server threads $THREADS"
    echo "subject tokens: $TOKENS pre-signed RS256 (distinct jti, replay protection on), $RUNS CI runs; $SIGNING"
    if [[ "$FILE_SYNC" == interval ]]; then
      echo "audit: the store commit is durable before each answer; JSONL file sync interval (every ${FILE_SYNC_INTERVAL_MS} ms in the background) (broker and floor)"
    else
      echo "audit: the store commit is durable before each answer; JSONL file sync commit (after every group commit, before its answers) (broker and floor)"
    fi
    echo
    printf '%-34s %12s %10s %10s\n' "" "req/s" "p50 ms" "p99 ms"
    printf '%-34s %12s %10s %10s\n' "(a) ceiling POST /ping" "$C_RPS" "$(field p50_ms <<<"$CEIL")" "$(field p99_ms <<<"$CEIL")"
    if [[ -n "$GRANT" ]]; then
      printf '%-34s %12s %10s %10s\n' "(b) grants, same broker" "$(field rps <<<"$GRANT")" \
        "$(field p50_ms <<<"$GRANT")" "$(field p99_ms <<<"$GRANT")"
    fi
    printf '%-34s %12s %10s %10s\n' "    floor POST /floor/exchange" "$(field rps <<<"$FLOOR")" \
      "$(field p50_ms <<<"$FLOOR")" "$(field p99_ms <<<"$FLOOR")"
    printf '%-34s %12s %10s %10s\n' "(d) exchanges POST /v1/token" "$E_RPS" "$E_P50" "$E_P99"
    echo
    if [[ -n "$GRANT" ]]; then
      printf 'ratio d/b                          %s   (exchanges per grant of the core path)\n' \
        "$(awk -v e="$E_RPS" -v g="$(field rps <<<"$GRANT")" 'BEGIN {if (g > 0) printf "%.3f", e / g; else print "n/a"}')"
    fi
    printf 'ratio d/floor                      %s   (target >= %s: %s)\n' "$RATIO_F" "$TARGET" \
      "$([[ $MET == 1 ]] && echo PASS || echo FAIL)"
    printf 'ratio d/a                          %s   (information: against the trivial endpoint)\n' "$RATIO_A"
    printf 'floor/a                            %s   (the most any exchange path can reach here)\n' \
      "$(ratio "$F_RPS" "$C_RPS")"
    printf 'mean requests per group commit     %s\n' "$BATCH"
    printf 'implicit sessions opened           %s; JWKS fetches by the broker %s\n' "${SESSIONS:-0}" "${JWKS_HITS:-?}"
    echo
    [[ -n "$GRANT" ]] && echo "errors: grants $(field non2xx <<<"$GRANT") non-2xx, $(field errors <<<"$GRANT") transport"
    echo "errors: exchanges $(field non2xx <<<"$EX") non-2xx, $(field errors <<<"$EX") transport, $(field body_wraps <<<"$EX") token-pool wraps"
  } >"$TMP/table.txt"
  cp "$TMP/table.txt" "$RESULTS_DIR/exchange-latest.txt"
  chmod 644 "$RESULTS_DIR/exchange-latest.txt"
  cat "$TMP/table.txt"
fi

if [[ "${BENCH_STRICT:-0}" == 1 && "$MET" != 1 ]]; then
  exit 1
fi
