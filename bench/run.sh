#!/usr/bin/env bash
# jitbroker benchmark: in one run, measures
#   (a) the ceiling: a trivial endpoint on the broker's own listener
#       (bench/ceiling_server), next to the same endpoint on cpp-httplib (the
#       listener before issue #10, for reference), and the floor: what every
#       grant must do by the specification and nothing else (an ES256
#       signature, its audit line durable in the store, then written to the
#       JSONL file), in the same file-sync mode as the broker,
#   (b) allowed grant requests end to end (auth + policy + ES256 mint + durable
#       group-committed store/audit write) against the real daemon,
# then the grant path open loop at 10/25/50/75/90 % of its measured peak, and
# the floor open loop at the same rates (the latency-vs-load curve; the 50 %
# point is the half-rate latency target), and
#   (c) GitHub installation-token mints by the github_app issuer against the
#       fake GitHub, (c') AWS AssumeRole mints by the aws_sts issuer against
#       the fake STS, and (c'') Google access-token mints by the gcp issuer
#       against the fake Google, with injected latency (bench/mint_bench.cc),
#   (d) CI token exchanges (bench/exchange.sh),
# and prints each figure against its target: b/floor >= 0.75, d/floor >= 0.7,
# the broker's half-rate p99 <= 2 x the floor's at the same rate, the mint
# rates. The table is also written to bench/results/latest.txt, the curve to
# bench/results/latency-curve.txt and .svg (gnuplot). See bench/README.md.
#
# Environment:
#   BUILD_DIR        build directory (default build-bench)
#   BENCH_CONNS      connections (default 32)
#   BENCH_DURATION   measured seconds per phase (default 10)
#   BENCH_WARMUP     warm-up seconds before each closed-loop phase (default 2)
#   BENCH_THREADS    server worker threads, ceiling and broker (default 64)
#   BENCH_FILE_SYNC  interval (default) | commit: when the JSONL audit file is
#                    fdatasync'd, for the broker (audit.file_sync) and the
#                    floor alike; interval: every 200 ms in the background
#   BENCH_CURVE=0    skip the latency-vs-load curve (only its 50 % point runs)
#   BENCH_CURVE_DURATION  measured seconds per curve point (default 5), but
#                    the 50 % point, which runs BENCH_DURATION
#   BENCH_GH_CONCURRENCY  (c), (c'), (c'') concurrent minting threads (default 200)
#   BENCH_GH_LATENCY_MS   (c), (c'), (c'') injected upstream latency per request (default 50)
#   BENCH_EXCHANGE=0      skip (d), CI OIDC token exchanges (bench/exchange.sh;
#                         BENCH_EXCHANGE_TOKENS, BENCH_EXCHANGE_RUNS there)
#   BENCH_STRICT=1   exit 1 when a target is missed
#   BENCH_REBUILD=1  always run scripts/build.sh first
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$(pwd)
BUILD_DIR=${BUILD_DIR:-build-bench}
BIN="$ROOT/$BUILD_DIR"
CONNS=${BENCH_CONNS:-32}
DURATION=${BENCH_DURATION:-10}
WARMUP=${BENCH_WARMUP:-2}
THREADS=${BENCH_THREADS:-64}
FILE_SYNC=${BENCH_FILE_SYNC:-interval}
# The broker's audit.file_sync_interval_ms default; written to the broker's
# config and given to the floor, so both sync the file alike.
FILE_SYNC_INTERVAL_MS=200
CURVE=${BENCH_CURVE:-1}
CURVE_DURATION=${BENCH_CURVE_DURATION:-5}
RESULTS_DIR="$ROOT/bench/results"

BENCH_NAME=bench
# shellcheck source=bench/lib.sh
source bench/lib.sh
[[ "$FILE_SYNC" == interval || "$FILE_SYNC" == commit ]] ||
  die "BENCH_FILE_SYNC must be interval or commit, not '$FILE_SYNC'"
if [[ "$CURVE" == 1 ]]; then
  CURVE_LOADS=(10 25 50 75 90)  # % of the broker's closed-loop peak
else
  CURVE_LOADS=(50)
fi
if [[ "$FILE_SYNC" == interval ]]; then
  FILE_SYNC_DESC="interval (every ${FILE_SYNC_INTERVAL_MS} ms in the background, never before an answer)"
else
  FILE_SYNC_DESC="commit (after every group commit, before its answers)"
fi

# --- build (only when a binary is missing or older than the sources) --------
bench_build jitbroker ceiling_server loadgen mint_bench

# Other work on the box skews everything; record it with the results.
bench_note_load

# --- scratch space and cleanup ------------------------------------------------
umask 077
TMP=$(mktemp -d "${TMPDIR:-/tmp}/jitbroker-bench.XXXXXX")
CEILING_PID=""
BROKER_PID=""

cleanup() {
  [[ -n "$CEILING_PID" ]] && stop_pid "$CEILING_PID"
  [[ -n "$BROKER_PID" ]] && stop_pid "$BROKER_PID"
  rm -rf "$TMP"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Waits (up to 20 s) for "... listening on port N" in $1; prints N.
wait_port() {
  local file=$1 pid=$2 port
  for _ in $(seq 1 200); do
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

# field NAME < RESULT line
field() { sed -n "s/.* $1=\([^ ]*\).*/\1/p"; }

# Mean group-commit batch size between two scrapes: (sum2-sum1)/(count2-count1).
commit_stats() {
  { curl -sS --max-time 5 "http://127.0.0.1:$1/metrics" || true; } |
    awk '/^jitbroker_audit_commit_batches_sum[ {]/ {s=$NF} /^jitbroker_audit_commit_batches_count[ {]/ {c=$NF}
         END {printf "%s %s\n", (s==""?0:s), (c==""?0:c)}'
}
mean_batch() {  # before-line after-line
  awk -v a="$1" -v b="$2" 'BEGIN {split(a, x, " "); split(b, y, " "); n = y[2] - x[2];
       if (n > 0) printf "%.1f", (y[1] - x[1]) / n; else printf "n/a"}'
}

json_field() {  # NAME < JSON (top-level string field)
  if command -v jq >/dev/null 2>&1; then
    jq -r --arg k "$1" '.[$k] // empty'
  else
    sed -n "s/.*\"$1\":\"\([^\"]*\)\".*/\1/p"
  fi
}


LOADGEN=("$BIN/loadgen" -c "$CONNS" -t 1)

# Starts ceiling_server with a fresh floor journal in the run's file-sync mode;
# sets CEILING_PID and CEILING_PORT. $1 names its output files.
start_floor() {
  rm -f "$TMP"/floor.journal*
  "$BIN/ceiling_server" 0 "$THREADS" "$TMP/floor.journal" --file-sync "$FILE_SYNC" \
    --file-sync-interval-ms "$FILE_SYNC_INTERVAL_MS" >"$TMP/$1.out" 2>"$TMP/$1.err" &
  CEILING_PID=$!
  CEILING_PORT=$(wait_port "$TMP/$1.out" "$CEILING_PID") ||
    die "ceiling_server did not start: $(cat "$TMP/$1.err")"
}
# Stops it; the floor journal's last words on stderr say how often it synced.
stop_floor() {
  stop_pid "$CEILING_PID"
  CEILING_PID=""
  grep '^floor: ' "$TMP/$1.err" >&2 || true
  rm -f "$TMP"/floor.journal*
}

# --- (a) ceiling, and the floor ------------------------------------------------
echo "bench: (a) ceiling: $CONNS connections, ${WARMUP}s warm-up + ${DURATION}s" >&2
start_floor ceiling
"${LOADGEN[@]}" -l ceiling -w "$WARMUP" -d "$DURATION" -m POST -b '{}' \
  --url "http://127.0.0.1:$CEILING_PORT/ping" >"$TMP/ceiling.txt" ||
  die "loadgen against the ceiling failed: $(cat "$TMP/ceiling.txt")"
cat "$TMP/ceiling.txt" >&2
CEIL=$(grep '^RESULT ' "$TMP/ceiling.txt")
# The floor: only what the specification makes every request do (an ES256
# signature and one durable group-committed append to the store, then the
# line written to the file, synced as the broker syncs its own; an RS256
# verification more for an exchange) on the same HTTP stack. See
# bench/ceiling_server.cc.
for f in grant exchange; do
  echo "bench: floor /floor/$f (file sync $FILE_SYNC): $CONNS connections, ${WARMUP}s warm-up + ${DURATION}s" >&2
  "${LOADGEN[@]}" -l "floor-$f" -w "$WARMUP" -d "$DURATION" -m POST -b '{}' \
    --url "http://127.0.0.1:$CEILING_PORT/floor/$f" >"$TMP/floor-$f.txt" ||
    die "loadgen against the floor failed: $(cat "$TMP/floor-$f.txt")"
  cat "$TMP/floor-$f.txt" >&2
done
FLOOR_G=$(grep '^RESULT ' "$TMP/floor-grant.txt")
FLOOR_X=$(grep '^RESULT ' "$TMP/floor-exchange.txt")
stop_floor ceiling  # free the CPU for the broker run
FLOOR_SYNCS=$(sed -n 's/^floor: //p' "$TMP/ceiling.err" | tail -n 1)

# The same trivial endpoint on cpp-httplib, the listener before issue #10.
echo "bench: (a') cpp-httplib /ping: $CONNS connections, ${WARMUP}s warm-up + ${DURATION}s" >&2
"$BIN/ceiling_server" 0 "$THREADS" --stack httplib >"$TMP/httplib.out" 2>"$TMP/httplib.err" &
CEILING_PID=$!
HTTPLIB_PORT=$(wait_port "$TMP/httplib.out" "$CEILING_PID") ||
  die "ceiling_server --stack httplib did not start: $(cat "$TMP/httplib.err")"
"${LOADGEN[@]}" -l httplib -w "$WARMUP" -d "$DURATION" -m POST -b '{}' \
  --url "http://127.0.0.1:$HTTPLIB_PORT/ping" >"$TMP/httplib.txt" ||
  die "loadgen against cpp-httplib failed: $(cat "$TMP/httplib.txt")"
cat "$TMP/httplib.txt" >&2
HTTPLIB=$(grep '^RESULT ' "$TMP/httplib.txt")
stop_pid "$CEILING_PID"
CEILING_PID=""

# --- broker -------------------------------------------------------------------
cp bench/bench.yaml "$TMP/bench.yaml"
sed -i "s/^  threads: 64$/  threads: $THREADS/" "$TMP/bench.yaml"
set_file_sync "$TMP/bench.yaml"
API_KEY="jbk_$(od -An -N20 -tx1 /dev/urandom | tr -d ' \n')"  # 40 hex characters
printf '%s\n' "$API_KEY" >"$TMP/engineer.key"
printf 'Authorization: Bearer %s\n' "$API_KEY" >"$TMP/principal.headers"
unset API_KEY

"$BIN/jitbroker" --config "$TMP/bench.yaml" >"$TMP/broker.out" 2>"$TMP/broker.err" &
BROKER_PID=$!
BROKER_PORT=$(wait_port "$TMP/broker.out" "$BROKER_PID") ||
  die "jitbroker did not start: $(tail -n 20 "$TMP/broker.err")"
BASE="http://127.0.0.1:$BROKER_PORT"

SESSION_BODY='{"agent":{"id":"bench_agent"},"task":{"id":"bench_task","description":"jitbroker benchmark","scope":{"resources":["jwt://mcp.internal"],"max_tier":"read","issuers":["internal"]}},"ttl_seconds":900,"heartbeat_seconds":600}'
HTTP=$(curl -sS --max-time 10 -o "$TMP/session.json" -w '%{http_code}' -X POST \
  -H @"$TMP/principal.headers" -H 'Content-Type: application/json' \
  --data "$SESSION_BODY" "$BASE/v1/sessions") || die "POST /v1/sessions failed"
[[ "$HTTP" == 201 ]] || die "POST /v1/sessions answered $HTTP: $(cat "$TMP/session.json")"
SESSION_ID=$(json_field session_id <"$TMP/session.json")
SESSION_TOKEN=$(json_field session_token <"$TMP/session.json")
rm -f "$TMP/session.json"
[[ "$SESSION_ID" =~ ^ses_[A-Za-z0-9_-]+$ && -n "$SESSION_TOKEN" ]] ||
  die "unexpected session response"
printf 'Authorization: Bearer %s\n' "$SESSION_TOKEN" >"$TMP/session.headers"
unset SESSION_TOKEN

GRANT_PATH="/v1/sessions/$SESSION_ID/grants"
GRANT_BODY='{"tool":"mcp.search","operation":"read","resource":"jwt://mcp.internal","issuer":"internal","ttl_seconds":300}'
printf '%s' "$GRANT_BODY" >"$TMP/grant.json"
# One grant by hand first: the load must be allowed grants, not errors.
HTTP=$(curl -sS --max-time 10 -o "$TMP/grant.out" -w '%{http_code}' -X POST \
  -H @"$TMP/session.headers" -H 'Content-Type: application/json' \
  --data-binary @"$TMP/grant.json" "$BASE$GRANT_PATH") || die "grant request failed"
if [[ "$HTTP" != 201 ]]; then
  die "a grant answered $HTTP, expected 201: $(sed 's/"token":"[^"]*"/"token":"[redacted]"/' "$TMP/grant.out")"
fi
rm -f "$TMP/grant.out"

# --- (b) grants at peak -------------------------------------------------------------
echo "bench: (b) grants: $CONNS connections, ${WARMUP}s warm-up + ${DURATION}s" >&2
M0=$(commit_stats "$BROKER_PORT")
"${LOADGEN[@]}" -l grants -w "$WARMUP" -d "$DURATION" -m POST --header-file "$TMP/session.headers" \
  --body-file "$TMP/grant.json" --url "$BASE$GRANT_PATH" >"$TMP/grants.txt" ||
  die "loadgen against the broker failed: $(cat "$TMP/grants.txt"; tail -n 5 "$TMP/broker.err")"
cat "$TMP/grants.txt" >&2
M1=$(commit_stats "$BROKER_PORT")
GRANT=$(grep '^RESULT ' "$TMP/grants.txt")

# --- latency vs load: grants open loop at fractions of the peak, then the floor -------
# Each point: 1 s warm-up, BENCH_CURVE_DURATION seconds measured (the 50 %
# point, which the half-rate target reads: BENCH_DURATION), up to 5 s drain.
PEAK=$(field rps <<<"$GRANT")
awk -v p="$PEAK" 'BEGIN {exit !(p > 0)}' || die "no successful grant at peak"
rate_at() { awk -v p="$PEAK" -v l="$1" 'BEGIN {printf "%.1f", p * l / 100}'; }
point_duration() { if [[ "$1" == 50 ]]; then echo "$DURATION"; else echo "$CURVE_DURATION"; fi; }
HALF=$(rate_at 50)
M2="" M3=""
for pct in "${CURVE_LOADS[@]}"; do
  rate=$(rate_at "$pct")
  d=$(point_duration "$pct")
  echo "bench: grants open loop at $pct % of the peak: $rate/s for ${d}s (+1s warm-up)" >&2
  [[ "$pct" != 50 ]] || M2=$(commit_stats "$BROKER_PORT")
  "${LOADGEN[@]}" -l "grants-open-$pct" -w 1 -d "$d" -r "$rate" --drain 5 -m POST \
    --header-file "$TMP/session.headers" --body-file "$TMP/grant.json" \
    --url "$BASE$GRANT_PATH" >"$TMP/open-broker-$pct.txt" ||
    die "loadgen (open loop, broker) failed: $(cat "$TMP/open-broker-$pct.txt")"
  cat "$TMP/open-broker-$pct.txt" >&2
  [[ "$pct" != 50 ]] || M3=$(commit_stats "$BROKER_PORT")
done
stop_pid "$BROKER_PID"  # the floor and the in-process mint benchmarks need the CPU
BROKER_PID=""

# The floor at the same rates, on a fresh journal, with the broker stopped.
start_floor floor-open
for pct in "${CURVE_LOADS[@]}"; do
  rate=$(rate_at "$pct")
  d=$(point_duration "$pct")
  echo "bench: floor /floor/grant open loop at $pct % of the broker's peak: $rate/s for ${d}s (+1s warm-up)" >&2
  "${LOADGEN[@]}" -l "floor-open-$pct" -w 1 -d "$d" -r "$rate" --drain 5 -m POST -b '{}' \
    --url "http://127.0.0.1:$CEILING_PORT/floor/grant" >"$TMP/open-floor-$pct.txt" ||
    die "loadgen (open loop, floor) failed: $(cat "$TMP/open-floor-$pct.txt")"
  cat "$TMP/open-floor-$pct.txt" >&2
done
stop_floor floor-open
HALFR=$(grep '^RESULT ' "$TMP/open-broker-50.txt")
HALFF=$(grep '^RESULT ' "$TMP/open-floor-50.txt")

# --- (c) github_app mints against the fake GitHub, (c') aws_sts against the fake STS,
# (c'') gcp against the fake Google
GH_CONC=${BENCH_GH_CONCURRENCY:-200}
GH_LAT=${BENCH_GH_LATENCY_MS:-50}
mint_bench() {  # issuer output-file
  echo "bench: $1 mints: $GH_CONC threads, ${GH_LAT} ms upstream latency, ${WARMUP}s warm-up + ${DURATION}s" >&2
  "$BIN/mint_bench" --issuer "$1" --concurrency "$GH_CONC" --latency-ms "$GH_LAT" \
    --warmup-s "$WARMUP" --duration-s "$DURATION" >"$2" 2>&1 ||
    die "mint_bench --issuer $1 failed: $(cat "$2")"
  cat "$2" >&2
}
mint_bench github_app "$TMP/github.txt"
GH=$(grep '^RESULT ' "$TMP/github.txt")
mint_bench aws_sts "$TMP/aws.txt"
AWS=$(grep '^RESULT ' "$TMP/aws.txt")
mint_bench gcp "$TMP/gcp.txt"
GCP=$(grep '^RESULT ' "$TMP/gcp.txt")

# --- (d) CI OIDC token exchanges (bench/exchange.sh, same ceiling and floor) --------
EX=""
if [[ "${BENCH_EXCHANGE:-1}" == 1 ]]; then
  echo "bench: (d) token exchanges (bench/exchange.sh)" >&2
  EXCHANGE_CEILING="$CEIL" EXCHANGE_FLOOR="$FLOOR_X" BENCH_FILE_SYNC="$FILE_SYNC" \
    BUILD_DIR="$BUILD_DIR" BENCH_STRICT=0 bash bench/exchange.sh \
    >"$TMP/exchange.txt" 2>"$TMP/exchange.err" ||
    die "bench/exchange.sh failed: $(tail -n 20 "$TMP/exchange.err")"
  cat "$TMP/exchange.err" >&2
  EX=$(grep '^RESULT bench=exchange' "$TMP/exchange.txt")
fi

# --- report -------------------------------------------------------------------------
C_RPS=$(field rps <<<"$CEIL");   C_P50=$(field p50_ms <<<"$CEIL");  C_P99=$(field p99_ms <<<"$CEIL")
G_RPS=$(field rps <<<"$GRANT");  G_P50=$(field p50_ms <<<"$GRANT"); G_P99=$(field p99_ms <<<"$GRANT")
H_RPS=$(field rps <<<"$HALFR");  H_P50=$(field p50_ms <<<"$HALFR"); H_P99=$(field p99_ms <<<"$HALFR")
HF_P99=$(field p99_ms <<<"$HALFF")
errs() { echo "$(field non2xx <<<"$1") non-2xx, $(field errors <<<"$1") transport, $(field incomplete <<<"$1") incomplete"; }
nerrs() {  # non-2xx + transport errors + incomplete, of a RESULT line
  awk -v a="$(field non2xx <<<"$1")" -v b="$(field errors <<<"$1")" -v c="$(field incomplete <<<"$1")" \
    'BEGIN {print a + b + c}'
}
ratio() { awk -v n="$1" -v d="$2" 'BEGIN {if (d > 0) printf "%.3f", n / d; else print "n/a"}'; }
F_RPS=$(field rps <<<"$FLOOR_G"); FX_RPS=$(field rps <<<"$FLOOR_X")
RATIO_A=$(ratio "$G_RPS" "$C_RPS")
RATIO_F=$(ratio "$G_RPS" "$F_RPS")
GRANT_TARGET=0.75
RATIO_OK=$(awk -v r="$RATIO_F" -v t="$GRANT_TARGET" 'BEGIN {print (r + 0 >= t) ? "PASS" : "FAIL"}')
# Half rate: the broker's p99 within 2x the floor's at the same offered rate,
# nothing lost on either side; 10 ms is reported as the quiet-host figure.
HALF_X=$(ratio "$H_P99" "$HF_P99")
HALF_OK=$(awk -v b="$H_P99" -v f="$HF_P99" -v eb="$(nerrs "$HALFR")" -v ef="$(nerrs "$HALFF")" \
  'BEGIN {print (f > 0 && b + 0 <= 2 * f && eb == 0 && ef == 0) ? "PASS" : "FAIL"}')
QUIET=$(awk -v b="$H_P99" 'BEGIN {print (b + 0 <= 10) ? "within" : "over"}')
GH_RATE=$(field mints_per_s <<<"$GH"); GH_TARGET=$(field target <<<"$GH")
GH_OK=$([[ "$(field met <<<"$GH")" == 1 ]] && echo PASS || echo FAIL)
AWS_OK=$([[ "$(field met <<<"$AWS")" == 1 ]] && echo PASS || echo FAIL)
GCP_OK=$([[ "$(field met <<<"$GCP")" == 1 ]] && echo PASS || echo FAIL)
EX_OK=PASS  # no exchange phase, no exchange target
if [[ -n "$EX" ]]; then
  EX_OK=$([[ "$(field met <<<"$EX")" == 1 ]] && echo PASS || echo FAIL)
fi
BATCH_PEAK=$(mean_batch "$M0" "$M1")
BATCH_HALF=$(mean_batch "$M2" "$M3")
CPU=$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n 1)
REV=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
NOW=$(date -u +%Y-%m-%dT%H:%M:%SZ)

# The curve, one line per load point; comment lines start with '#' (gnuplot's
# data file format).
{
  echo "# jitbroker latency vs load  $NOW  rev $REV"
  echo "# audit file sync: $FILE_SYNC_DESC (broker and floor)"
  echo "# offered rate = load % of the broker's closed-loop peak, $PEAK grants/s ($CONNS connections);"
  echo "# open loop, $CONNS connections, 1s warm-up + ${CURVE_DURATION}s per point (50 %: ${DURATION}s), 5s drain;"
  echo "# latency from each request's scheduled send time. broker: POST /v1/sessions/{id}/grants;"
  echo "# floor: POST /floor/grant (bench/ceiling_server.cc) at the same rates, after the broker's points."
  echo "# errors: broker/floor, each non-2xx + transport + incomplete"
  printf '# %-6s %10s %11s %9s %9s %9s %9s %8s\n' "load_%" "rate_rps" "broker_rps" "b_p50_ms" "b_p99_ms" \
    "f_p50_ms" "f_p99_ms" "errors"
  for pct in "${CURVE_LOADS[@]}"; do
    b=$(grep '^RESULT ' "$TMP/open-broker-$pct.txt")
    f=$(grep '^RESULT ' "$TMP/open-floor-$pct.txt")
    printf '  %-6s %10s %11s %9s %9s %9s %9s %8s\n' "$pct" "$(rate_at "$pct")" "$(field rps <<<"$b")" \
      "$(field p50_ms <<<"$b")" "$(field p99_ms <<<"$b")" "$(field p50_ms <<<"$f")" \
      "$(field p99_ms <<<"$f")" "$(nerrs "$b")/$(nerrs "$f")"
  done
} >"$TMP/curve.txt"

mkdir -p "$RESULTS_DIR"
{
  echo "jitbroker benchmark  $NOW  rev $REV"
  echo "host: $(nproc) CPUs ($CPU); loadgen shares them with the server"
  echo "load average: $LOAD_START at start, $(cut -d' ' -f1-3 /proc/loadavg) at end (other work on the host skews the figures)"
  echo "load: $CONNS keep-alive connections, 1 loadgen thread, ${WARMUP}s warm-up + ${DURATION}s per phase; server threads $THREADS"
  echo "audit: the store commit is durable before each answer; JSONL file sync $FILE_SYNC_DESC (broker and floor)"
  echo
  printf '%-46s %12s %10s %10s\n' "" "req/s" "p50 ms" "p99 ms"
  printf '%-46s %12s %10s %10s\n' "(a) ceiling POST /ping" "$C_RPS" "$C_P50" "$C_P99"
  printf '%-46s %12s %10s %10s\n' "(a') cpp-httplib POST /ping" "$(field rps <<<"$HTTPLIB")" \
    "$(field p50_ms <<<"$HTTPLIB")" "$(field p99_ms <<<"$HTTPLIB")"
  printf '%-46s %12s %10s %10s\n' "    floor POST /floor/grant" "$F_RPS" "$(field p50_ms <<<"$FLOOR_G")" "$(field p99_ms <<<"$FLOOR_G")"
  printf '%-46s %12s %10s %10s\n' "    floor POST /floor/exchange" "$FX_RPS" "$(field p50_ms <<<"$FLOOR_X")" "$(field p99_ms <<<"$FLOOR_X")"
  printf '%-46s %12s %10s %10s\n' "(b) grants (closed loop)" "$G_RPS" "$G_P50" "$G_P99"
  printf '%-46s %12s %10s %10s\n' "    grants open loop @ $HALF/s" "$H_RPS" "$H_P50" "$H_P99"
  printf '%-46s %12s %10s %10s\n' "    floor /floor/grant open loop @ $HALF/s" "$(field rps <<<"$HALFF")" \
    "$(field p50_ms <<<"$HALFF")" "$HF_P99"
  echo
  printf 'ratio b/floor                      %s   (target >= %s: %s)\n' "$RATIO_F" "$GRANT_TARGET" "$RATIO_OK"
  printf 'ratio b/a                          %s   (information: against the trivial endpoint)\n' "$RATIO_A"
  printf 'floor/a                            %s   (the most any grant path can reach here: ES256, audit line durable in the store)\n' \
    "$(ratio "$F_RPS" "$C_RPS")"
  printf 'half-rate p99                      broker %s ms, floor %s ms: %sx   (target broker <= 2x floor: %s)\n' \
    "$H_P99" "$HF_P99" "$HALF_X" "$HALF_OK"
  printf '                                   broker %s 10 ms   (information: the figure for a quiet host)\n' "$QUIET"
  printf 'mean requests per group commit     %s at peak, %s at half rate\n' "$BATCH_PEAK" "$BATCH_HALF"
  printf '  (jitbroker_audit_commit_batches sum/count over each phase)\n'
  printf 'floor journal, closed loop         %s\n' "${FLOOR_SYNCS:-n/a}"
  printf '(c) github_app mints/s             %s   (%s threads, %s ms latency; target >= %s: %s)\n' \
    "$GH_RATE" "$GH_CONC" "$GH_LAT" "$GH_TARGET" "$GH_OK"
  printf '    mint p50 / p99                 %s / %s ms; RSA signatures per 1,000 mints %s\n' \
    "$(field p50_ms <<<"$GH")" "$(field p99_ms <<<"$GH")" "$(field costly_per_1000_mints <<<"$GH")"
  printf '    RSS                            %s KiB start, %s KiB end, %s KiB peak (in-process fake included)\n' \
    "$(field rss_start_kb <<<"$GH")" "$(field rss_end_kb <<<"$GH")" "$(field rss_peak_kb <<<"$GH")"
  printf "(c') aws_sts mints/s               %s   (%s threads, %s ms latency; target >= %s: %s)\n" \
    "$(field mints_per_s <<<"$AWS")" "$GH_CONC" "$GH_LAT" "$(field target <<<"$AWS")" "$AWS_OK"
  printf '    mint p50 / p99                 %s / %s ms; SigV4 key derivations per 1,000 mints %s\n' \
    "$(field p50_ms <<<"$AWS")" "$(field p99_ms <<<"$AWS")" "$(field costly_per_1000_mints <<<"$AWS")"
  printf '    RSS                            %s KiB start, %s KiB end, %s KiB peak (in-process fake included)\n' \
    "$(field rss_start_kb <<<"$AWS")" "$(field rss_end_kb <<<"$AWS")" "$(field rss_peak_kb <<<"$AWS")"
  printf "(c'') gcp mints/s                  %s   (%s threads, %s ms latency; target >= %s: %s)\n" \
    "$(field mints_per_s <<<"$GCP")" "$GH_CONC" "$GH_LAT" "$(field target <<<"$GCP")" "$GCP_OK"
  printf '    mint p50 / p99                 %s / %s ms; identity token refreshes per 1,000 mints %s\n' \
    "$(field p50_ms <<<"$GCP")" "$(field p99_ms <<<"$GCP")" "$(field costly_per_1000_mints <<<"$GCP")"
  printf '    RSS                            %s KiB start, %s KiB end, %s KiB peak (in-process fake included)\n' \
    "$(field rss_start_kb <<<"$GCP")" "$(field rss_end_kb <<<"$GCP")" "$(field rss_peak_kb <<<"$GCP")"
  echo
  if [[ -n "$EX" ]]; then
    printf '(d) token exchanges/s              %s   p50 %s ms, p99 %s ms; ratio d/floor %s (target >= %s: %s)\n' \
      "$(field rps <<<"$EX")" "$(field p50_ms <<<"$EX")" "$(field p99_ms <<<"$EX")" \
      "$(field ratio_floor <<<"$EX")" "$(field target <<<"$EX")" "$EX_OK"
    printf '    ratio d/a %s (information); floor/a %s (RS256 verify, ES256, audit line durable in the store)\n' \
      "$(field ratio_a <<<"$EX")" "$(ratio "$FX_RPS" "$C_RPS")"
    printf '    (RS256 subject tokens, jwt issuer; %s requests per group commit; %s non-2xx, %s token-pool wraps)\n' \
      "$(field requests_per_commit <<<"$EX")" "$(field non2xx <<<"$EX")" "$(field body_wraps <<<"$EX")"
    echo
  fi
  echo "latency vs load, open loop (ms; errors broker/floor):"
  sed -n '/^# load_%/,$p' "$TMP/curve.txt" | sed 's/^# /  /'
  echo
  echo "errors: ceiling $(errs "$CEIL"); floor $(errs "$FLOOR_G"), $(errs "$FLOOR_X"); grants $(errs "$GRANT");" \
       "half rate: broker $(errs "$HALFR"), floor $(errs "$HALFF")"
} >"$TMP/table.txt"
cp "$TMP/table.txt" "$RESULTS_DIR/latest.txt"
chmod 644 "$RESULTS_DIR/latest.txt"

# The curve's table and plot (not with BENCH_CURVE=0: one point is no curve).
if [[ "$CURVE" == 1 ]]; then
  cp "$TMP/curve.txt" "$RESULTS_DIR/latency-curve.txt"
  chmod 644 "$RESULTS_DIR/latency-curve.txt"
  if ! command -v gnuplot >/dev/null 2>&1 && [[ "$(id -u)" == 0 ]] && command -v apt-get >/dev/null 2>&1; then
    echo "bench: installing gnuplot-nox for the latency curve" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y -q gnuplot-nox >&2 ||
      { apt-get update -q >&2 && apt-get install -y -q gnuplot-nox >&2; } ||
      echo "bench: apt-get install gnuplot-nox failed" >&2
  fi
  if command -v gnuplot >/dev/null 2>&1; then
    SVG="$RESULTS_DIR/latency-curve.svg"
    gnuplot >&2 <<GNUPLOT || echo "bench: gnuplot failed" >&2
set terminal svg size 900,560 dynamic enhanced font 'sans,12' background rgb 'white'
set output '$SVG.tmp'
set title "jitbroker grants: latency vs offered load, open loop, $CONNS connections; audit file sync: $FILE_SYNC\nrev $REV, $NOW; top axis: % of the broker's closed-loop peak, $PEAK grants/s\nfloor: POST /floor/grant at the same rates, same run" noenhanced
set xlabel 'offered rate (requests/s)'
set ylabel 'latency (ms)'
set logscale y
set grid xtics ytics mytics
set key top left box opaque
set xrange [0:*]
set link x2
set x2tics scale 0.5
set offsets 0, graph 0.05, graph 0.05, 0
plot '$RESULTS_DIR/latency-curve.txt' using 2:4:x2tic(sprintf('%d %%', \$1)) with linespoints lw 2 pt 7 ps 0.8 lc rgb '#1f77b4' title 'broker p50', \
     '' using 2:5 with linespoints lw 2 pt 5 ps 0.8 lc rgb '#d62728' title 'broker p99', \
     '' using 2:6 with linespoints lw 2 dt 2 pt 6 ps 0.8 lc rgb '#1f77b4' title 'floor p50', \
     '' using 2:7 with linespoints lw 2 dt 2 pt 4 ps 0.8 lc rgb '#d62728' title 'floor p99'
GNUPLOT
    if [[ -s "$SVG.tmp" ]]; then
      mv "$SVG.tmp" "$SVG"
      chmod 644 "$SVG"
      echo "bench: latency curve in bench/results/latency-curve.svg" >&2
    else
      rm -f "$SVG.tmp"
      echo "bench: no bench/results/latency-curve.svg (gnuplot wrote nothing)" >&2
    fi
  else
    echo "bench: gnuplot not found (Debian: apt-get install gnuplot-nox, as root): skipping" \
         "bench/results/latency-curve.svg; the table is in bench/results/latency-curve.txt" >&2
  fi
fi
cat "$TMP/table.txt"

if [[ "${BENCH_STRICT:-0}" == 1 && ( "$RATIO_OK" != PASS || "$HALF_OK" != PASS || "$GH_OK" != PASS ||
      "$AWS_OK" != PASS || "$GCP_OK" != PASS || "$EX_OK" != PASS ) ]]; then
  exit 1
fi
