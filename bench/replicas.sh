#!/usr/bin/env bash
# jitbroker benchmark, issue #13: grants per second on SQLite, on PostgreSQL
# with one replica and with two replicas (same client, same run), with CPU
# per grant; and how fast a revocation on one replica is honoured by the
# other. See bench/README.md ("Several replicas"). Writes the table to
# bench/results/replicas-latest.txt.
#
#   (s)  one broker on SQLite (bench/bench.yaml as is)
#   (p1) one broker on PostgreSQL
#   (p2) two brokers on the same PostgreSQL database, half the connections
#        each, one session each
#   (c)  the audit chain's cost: one global chain (every transaction locks
#        one head row) against one chain per replica (bench/audit_chain_bench.cc)
#   p1 and p2 are followed by their latency-vs-load curve: open loop at 10,
#        25, 50, 75 and 90 % of the phase's closed-loop peak, with CPU per
#        grant at each point (BENCH_CURVE=0 skips it)
#   (r)  revocation propagation: a session revoked on replica A (by its owner),
#        an agent asking replica B in a tight loop; the time from sending the
#        revoke to B's first refusal, over BENCH_REVOKES (200) sessions
#
# PostgreSQL is Debian's, started here on a Unix socket with fsync on
# (scripts/pg-test-server.sh --durable). Every phase uses BENCH_CONNS (32)
# connections in all, BENCH_WARMUP (2) + BENCH_DURATION (10) seconds.
#
# CPU per grant: the broker processes' user+system time over the measured
# window, and the whole machine's busy time (broker, PostgreSQL, load
# generator), each divided by the grants answered in that window.
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$(pwd)
BUILD_DIR=${BUILD_DIR:-build-bench}
BIN="$ROOT/$BUILD_DIR"
CONNS=${BENCH_CONNS:-32}
DURATION=${BENCH_DURATION:-10}
WARMUP=${BENCH_WARMUP:-2}
REVOKES=${BENCH_REVOKES:-200}
RESULTS_DIR="$ROOT/bench/results"
die() { echo "bench: $*" >&2; exit 1; }

if [[ ! -x "$BIN/jitbroker" || ! -x "$BIN/loadgen" || "${BENCH_REBUILD:-0}" == 1 ]]; then
  BUILD_DIR="$BUILD_DIR" bash scripts/build.sh >&2
fi

umask 077
TMP=$(mktemp -d "${TMPDIR:-/tmp}/jitbroker-replicas.XXXXXX")
PG="$TMP/pg"
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
  bash scripts/pg-test-server.sh stop "$PG" >/dev/null 2>&1 || true
  rm -rf "$TMP"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

chmod 0711 "$TMP"  # the postgres user must reach its directory inside
bash scripts/pg-test-server.sh start "$PG" --durable
echo "host=$PG user=jitbroker dbname=postgres" >"$TMP/dsn"
openssl rand -base64 32 >"$TMP/seal.b64"
openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$TMP/audit.pem" 2>/dev/null
openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$TMP/jwt.pem" 2>/dev/null
API_KEY="jbk_$(od -An -N20 -tx1 /dev/urandom | tr -d ' \n')"
printf '%s\n' "$API_KEY" >"$TMP/engineer.key"
printf 'Authorization: Bearer %s\n' "$API_KEY" >"$TMP/principal.headers"

# config NAME STORE: bench/bench.yaml in $TMP/NAME/, on sqlite or postgres.
config() {
  local dir="$TMP/$1"
  mkdir -p "$dir"
  cp "$TMP/engineer.key" "$dir/engineer.key"
  if [[ "$2" == sqlite ]]; then
    cp bench/bench.yaml "$dir/bench.yaml"
  else
    sed -e "s|^  sqlite: {}|  postgres: {dsn: \"file:$TMP/dsn\", pool_size: 16, replica_id: $1}|" \
      -e "s|^audit: {}|audit: {signing_key: \"file:$TMP/audit.pem\"}\nseal_key: \"file:$TMP/seal.b64\"|" \
      -e "s|^    type: jwt|    type: jwt\n    signing_key: \"file:$TMP/jwt.pem\"|" \
      bench/bench.yaml >"$dir/bench.yaml"
  fi
  echo "$dir/bench.yaml"
}

# start CONFIG: starts a broker (its pid added to PIDS and BROKER_PIDS) and
# sets PORT to its port. Not in a subshell: the pid lists must persist.
BROKER_PIDS=()
PORT=""
start() {
  local out="${1%.yaml}.out" i
  "$BIN/jitbroker" --config "$1" >"$out" 2>"${1%.yaml}.err" &
  local pid=$!
  PIDS+=("$pid")
  BROKER_PIDS+=("$pid")
  for i in $(seq 1 200); do
    PORT=$(sed -n 's/.*listening on port \([0-9][0-9]*\).*/\1/p' "$out" | head -n 1)
    [[ -n "$PORT" ]] && return 0
    kill -0 "$pid" 2>/dev/null || die "jitbroker did not start: $(tail -n 5 "${1%.yaml}.err")"
    sleep 0.1
  done
  die "jitbroker did not start"
}
stop_brokers() {
  for p in "${BROKER_PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${BROKER_PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
  BROKER_PIDS=()
}

# session PORT NAME: opens a session; writes $TMP/NAME.headers; prints its id.
session() {
  local body='{"agent":{"id":"bench_agent"},"task":{"id":"bench_task","scope":{"resources":["jwt://mcp.internal"],"max_tier":"read","issuers":["internal"]}},"ttl_seconds":900,"heartbeat_seconds":600}'
  curl -sS --max-time 10 -X POST -H @"$TMP/principal.headers" -H 'Content-Type: application/json' \
    --data "$body" "http://127.0.0.1:$1/v1/sessions" >"$TMP/$2.session.json"
  printf 'Authorization: Bearer %s\n' "$(jq -r .session_token "$TMP/$2.session.json")" >"$TMP/$2.headers"
  jq -r .session_id "$TMP/$2.session.json"
}

ticks() {  # user+system clock ticks of the given pids
  local t=0 p
  for p in "$@"; do
    t=$((t + $(awk '{print $14 + $15}' "/proc/$p/stat")))
  done
  echo "$t"
}
busy() { awk '/^cpu / {print $2 + $3 + $4 + $7 + $8}' /proc/stat; }  # machine, ticks
HZ=$(getconf CLK_TCK)

printf '%s' '{"tool":"mcp.search","operation":"read","resource":"jwt://mcp.internal","issuer":"internal","ttl_seconds":300}' >"$TMP/grant.json"

# The brokers' store applies so far, summed over PORT...: "seconds count
# batches-sum batches-count" (jitbroker_store_query_seconds_total and
# _queries_total for kind="apply"; SQLite has neither: zeros) and the group
# commit's batches (jitbroker_audit_commit_batches).
apply_stats() {
  local port
  for port in "$@"; do
    curl -sS --max-time 5 "http://127.0.0.1:$port/metrics" || true
  done | awk '
    /^jitbroker_store_query_seconds_total\{kind="apply"\}/ {s += $NF}
    /^jitbroker_store_queries_total\{kind="apply",outcome="ok"\}/ {c += $NF}
    /^jitbroker_audit_commit_batches_sum / {bs += $NF}
    /^jitbroker_audit_commit_batches_count / {bc += $NF}
    END {printf "%s %s %s %s\n", s + 0, c + 0, bs + 0, bc + 0}'
}

# phase LABEL PORT...: closed loop against every port (connections split),
# prints "grants_per_s broker_cpu_ms_per_grant machine_cpu_ms_per_grant p99_ms
# apply_ms batches_per_commit".
phase() {
  local label=$1
  shift
  local n=$# per=$((CONNS / $#)) i=0 port sid
  local -a gens=()
  for port in "$@"; do
    sid=$(session "$port" "$label-$i")
    "$BIN/loadgen" -c "$per" -t 1 -l "$label-$i" -w "$WARMUP" -d "$DURATION" -m POST \
      --header-file "$TMP/$label-$i.headers" --body-file "$TMP/grant.json" \
      --url "http://127.0.0.1:$port/v1/sessions/$sid/grants" >"$TMP/$label-$i.txt" &
    gens+=($!)
    i=$((i + 1))
  done
  sleep "$WARMUP"
  local b0 m0 b1 m1 a0 a1
  b0=$(ticks "${BROKER_PIDS[@]}")
  m0=$(busy)
  a0=$(apply_stats "$@")
  sleep "$DURATION"
  b1=$(ticks "${BROKER_PIDS[@]}")
  m1=$(busy)
  a1=$(apply_stats "$@")
  for g in "${gens[@]}"; do wait "$g" || die "loadgen failed: $(cat "$TMP/$label"-*.txt)"; done
  cat "$TMP/$label"-*.txt | grep '^RESULT' >&2
  local rps p99
  rps=$(cat "$TMP/$label"-*.txt | sed -n 's/^RESULT.* rps=\([^ ]*\).*/\1/p' | awk '{s += $1} END {printf "%.0f", s}')
  p99=$(cat "$TMP/$label"-*.txt | sed -n 's/^RESULT.* p99_ms=\([^ ]*\).*/\1/p' | sort -g | tail -n 1)
  awk -v r="$rps" -v b=$((b1 - b0)) -v m=$((m1 - m0)) -v hz="$HZ" -v d="$DURATION" -v p="$p99" \
    -v a0="$a0" -v a1="$a1" \
    'BEGIN {g = r * d; split(a0, x, " "); split(a1, y, " ");
      am = (y[2] > x[2]) ? sprintf("%.2f", 1000 * (y[1] - x[1]) / (y[2] - x[2])) : "n/a";
      bp = (y[4] > x[4]) ? sprintf("%.1f", (y[3] - x[3]) / (y[4] - x[4])) : "n/a";
      printf "%s %.3f %.3f %s %s %s\n", r, 1000 * b / hz / g, 1000 * m / hz / g, p, am, bp}'
}

# curve LABEL PEAK PORT...: open loop at 10/25/50/75/90 % of PEAK grants/s
# (the rate split over the ports), BENCH_CURVE_DURATION (5) measured seconds
# after 1 s of warm-up per point; appends "label pct offered rps p50 p99
# broker_ms_per_grant errors" lines to $TMP/curve.txt. p50 and p99 are the
# worst over the replicas' load generators.
CURVE_DURATION=${BENCH_CURVE_DURATION:-5}
curve() {
  local label=$1 peak=$2
  shift 2
  local n=$# i port sid pct rate per b0 b1 g
  local -a sids=()
  i=0
  for port in "$@"; do
    sids+=("$(session "$port" "$label-curve-$i")")
    i=$((i + 1))
  done
  for pct in 10 25 50 75 90; do
    rate=$(awk -v p="$peak" -v f="$pct" 'BEGIN {printf "%d", p * f / 100}')
    per=$(awk -v r="$rate" -v n="$n" 'BEGIN {printf "%.1f", r / n}')
    echo "bench: ($label) open loop at $pct % of $peak/s: $rate/s for ${CURVE_DURATION}s" >&2
    local -a gens=()
    i=0
    for port in "$@"; do
      "$BIN/loadgen" -c "$((CONNS / n))" -t 1 -l "$label-open-$pct-$i" -w 1 -d "$CURVE_DURATION" \
        -r "$per" --drain 5 -m POST --header-file "$TMP/$label-curve-$i.headers" \
        --body-file "$TMP/grant.json" --url "http://127.0.0.1:$port/v1/sessions/${sids[$i]}/grants" \
        >"$TMP/$label-open-$pct-$i.txt" &
      gens+=($!)
      i=$((i + 1))
    done
    sleep 1
    b0=$(ticks "${BROKER_PIDS[@]}")
    sleep "$CURVE_DURATION"
    b1=$(ticks "${BROKER_PIDS[@]}")
    for g in "${gens[@]}"; do wait "$g" || die "loadgen failed: $(cat "$TMP/$label-open-$pct"-*.txt)"; done
    cat "$TMP/$label-open-$pct"-*.txt | grep '^RESULT' >&2
    cat "$TMP/$label-open-$pct"-*.txt | grep '^RESULT' | awk -v l="$label" -v p="$pct" -v r="$rate" \
      -v b=$((b1 - b0)) -v hz="$HZ" -v d="$CURVE_DURATION" '
      {for (i = 1; i <= NF; i++) {split($i, kv, "="); v[kv[1]] = kv[2]}
       rps += v["rps"]; if (v["p50_ms"] > p50) p50 = v["p50_ms"]; if (v["p99_ms"] > p99) p99 = v["p99_ms"]
       err += v["non2xx"] + v["errors"]}
      END {printf "%s %s %s %.0f %.3f %.3f %.3f %d\n", l, p, r, rps, p50, p99,
             (rps > 0 ? 1000 * b / hz / (rps * d) : 0), err}' >>"$TMP/curve.txt"
  done
}

echo "bench: (s) SQLite, one broker" >&2
start "$(config sqlite sqlite)"
S=$(phase s "$PORT")
stop_brokers

echo "bench: (p1) PostgreSQL, one replica" >&2
start "$(config replica-a postgres)"
P1=$(phase p1 "$PORT")
[[ "${BENCH_CURVE:-1}" == 0 ]] || curve p1 "$(awk '{print $1}' <<<"$P1")" "$PORT"
stop_brokers

echo "bench: (p2) PostgreSQL, two replicas" >&2
start "$TMP/replica-a/bench.yaml"
PORT_A=$PORT
start "$(config replica-b postgres)"
PORT_B=$PORT
P2=$(phase p2 "$PORT_A" "$PORT_B")
[[ "${BENCH_CURVE:-1}" == 0 ]] || curve p2 "$(awk '{print $1}' <<<"$P2")" "$PORT_A" "$PORT_B"

echo "bench: (r) revocation propagation, $REVOKES sessions" >&2
R=$(python3 - "$PORT_A" "$PORT_B" "$TMP/engineer.key" "$REVOKES" <<'PY'
import http.client, json, sys, threading, time
port_a, port_b, key_file, n = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], int(sys.argv[4])
key = open(key_file).read().strip()
grant = json.dumps({"tool": "mcp.search", "operation": "read", "resource": "jwt://mcp.internal",
                    "issuer": "internal", "ttl_seconds": 300})
def call(conn, method, path, token, body):
    conn.request(method, path, body=body, headers={"Authorization": "Bearer " + token,
                                                   "Content-Type": "application/json"})
    r = conn.getresponse()
    return r.status, r.read()
a = http.client.HTTPConnection("127.0.0.1", port_a)
# bench.yaml has one principal: the session's owner revokes it (the same
# path as an admin's revocation).
samples = []
for i in range(n):
    st, body = call(a, "POST", "/v1/sessions", key, json.dumps({
        "agent": {"id": "prop"}, "task": {"id": "prop", "scope": {
            "resources": ["jwt://mcp.internal"], "max_tier": "read", "issuers": ["internal"]}},
        "ttl_seconds": 900, "heartbeat_seconds": 600}))
    s = json.loads(body)
    sid, token = s["session_id"], s["session_token"]
    path = "/v1/sessions/%s/grants" % sid
    b = http.client.HTTPConnection("127.0.0.1", port_b)
    assert call(b, "POST", path, token, grant)[0] == 201
    sent = [None]
    refused = [None]
    def poll():
        while True:
            st, _ = call(b, "POST", path, token, grant)
            if st != 201:
                refused[0] = time.monotonic()
                return
    t = threading.Thread(target=poll)
    t.start()
    time.sleep(0.005)
    sent[0] = time.monotonic()
    st, _ = call(a, "POST", "/v1/sessions/%s/revoke" % sid, key, json.dumps({"reason": "bench"}))
    assert st == 200, st
    answered = time.monotonic()
    t.join()
    b.close()
    samples.append(((refused[0] - sent[0]) * 1000, (answered - sent[0]) * 1000))
prop = sorted(x[0] for x in samples)
rev = sorted(x[1] for x in samples)
q = lambda v, p: v[min(len(v) - 1, int(p * len(v)))]
print("%.1f %.1f %.1f %.1f" % (q(prop, 0.5), q(prop, 0.99), max(prop), q(rev, 0.99)))
PY
)
stop_brokers

echo "bench: (c) audit chain: one global chain against one chain per replica" >&2
[[ -x "$BIN/audit_chain_bench" ]] || die "$BIN/audit_chain_bench is missing"
"$BIN/audit_chain_bench" --dsn "host=$PG user=jitbroker dbname=postgres" --writers 1,2,4 \
  --records 8 --duration-s "$((DURATION / 2 > 0 ? DURATION / 2 : 1))" >"$TMP/chain.txt" ||
  die "audit_chain_bench failed: $(cat "$TMP/chain.txt")"
cat "$TMP/chain.txt" >&2

read -r S_RPS S_BCPU S_MCPU S_P99 S_AM S_BP <<<"$S"
read -r P1_RPS P1_BCPU P1_MCPU P1_P99 P1_AM P1_BP <<<"$P1"
read -r P2_RPS P2_BCPU P2_MCPU P2_P99 P2_AM P2_BP <<<"$P2"
read -r R_P50 R_P99 R_MAX R_REV99 <<<"$R"
mkdir -p "$RESULTS_DIR"
{
  echo "jitbroker replicas benchmark ($(date -u +%Y-%m-%dT%H:%M:%SZ), $(nproc) CPUs, PostgreSQL $(psql --version | awk '{print $3}'), fsync on)"
  echo "$CONNS connections in all, ${WARMUP}s warm-up + ${DURATION}s per phase"
  echo
  printf '%-32s %9s %14s %15s %8s %9s %9s\n' "phase" "grants/s" "broker ms/grt" "machine ms/grt" \
    "p99 ms" "apply ms" "batch/tx"
  printf '%-32s %9s %14s %15s %8s %9s %9s\n' "(s)  SQLite, one broker" "$S_RPS" "$S_BCPU" "$S_MCPU" \
    "$S_P99" "$S_AM" "$S_BP"
  printf '%-32s %9s %14s %15s %8s %9s %9s\n' "(p1) PostgreSQL, one replica" "$P1_RPS" "$P1_BCPU" \
    "$P1_MCPU" "$P1_P99" "$P1_AM" "$P1_BP"
  printf '%-32s %9s %14s %15s %8s %9s %9s\n' "(p2) PostgreSQL, two replicas" "$P2_RPS" "$P2_BCPU" \
    "$P2_MCPU" "$P2_P99" "$P2_AM" "$P2_BP"
  echo "(apply ms: mean time of one store transaction; batch/tx: grants per group commit)"
  echo
  echo "(c) audit chain, transactions of 8 records, each writer a replica's journal:"
  printf '    %-10s %8s %10s %12s\n' "mode" "writers" "tx/s" "records/s"
  sed -n 's/^RESULT mode=\([^ ]*\) writers=\([^ ]*\) records_per_tx=[^ ]* tx_per_s=\([^ ]*\) records_per_s=\([^ ]*\)/\1 \2 \3 \4/p' \
    "$TMP/chain.txt" | while read -r m w t r; do printf '    %-10s %8s %10s %12s\n' "$m" "$w" "$t" "$r"; done
  echo
  if [[ -s "$TMP/curve.txt" ]]; then
    echo "latency vs load on PostgreSQL, open loop, $CONNS connections in all, 1s warm-up + ${CURVE_DURATION}s per point"
    echo "(% of that phase's closed-loop peak above; p50/p99: the worst replica's; broker ms/grt: CPU of the brokers)"
    printf '    %-6s %6s %9s %9s %8s %8s %14s %7s\n' "phase" "load" "offered/s" "grants/s" "p50 ms" \
      "p99 ms" "broker ms/grt" "errors"
    while read -r l p r a p50 p99 c e; do
      printf '    %-6s %5s%% %9s %9s %8s %8s %14s %7s\n' "($l)" "$p" "$r" "$a" "$p50" "$p99" "$c" "$e"
    done <"$TMP/curve.txt"
    echo
  fi
  echo "(r) revocation on A -> refusal on B, $REVOKES sessions: p50 ${R_P50} ms, p99 ${R_P99} ms, max ${R_MAX} ms (target p99 <= 1000 ms); the revoke's own answer p99 ${R_REV99} ms"
} | tee "$RESULTS_DIR/replicas-latest.txt"
