#!/usr/bin/env bash
# jitbroker benchmark, issue #15 ("How cost grows with the work"): does the
# broker's cost follow the work in front of it, or everything it holds? In
# one run, on the embedded SQLite store (bench/bench.yaml):
#
#   (A) an EMPTY store: the sweeper's idle passes and the passes that end
#       BENCH_DUE (100) sessions falling due (BENCH_DUE_WAVES, 5, waves of
#       them, 2 s apart), then allowed grants closed loop (loadgen, as
#       bench/run.sh phase (b)): p50, p99, grants/s;
#   (B) a LOADED store: BENCH_LIVE_SESSIONS (100000) live sessions of
#       bench_engineer and BENCH_AUDIT_RECORDS (1000000) audit records,
#       seeded through the broker's own store and journal
#       (bench/seed_store.cc) while the broker is stopped; the same sweeper
#       passes and the same grant load; the broker's RSS after the load;
#   (C) bulk revoke: BENCH_REVOKE_GRANTS (10000) jwt grants minted through
#       POST /v1/sessions/{id}/grants over BENCH_REVOKE_SESSIONS (100)
#       sessions of bench_engineer on a fresh broker, then one
#       POST /v1/admin/revoke {"principal":"bench_engineer"} by an admin,
#       timed and checked. A fresh broker, because on (B) the same call
#       would also end the seeded sessions of bench_engineer, one durable
#       commit each (about a minute for 100000; bench/README.md).
# "Empty" means no live session: (A)'s store holds the due sessions once the
# sweeper has ended them, and the grant phase's own records.
#
# Targets: (B) grant p50 <= 1.25 x (A)'s; RSS at BENCH_LIVE_SESSIONS live
# <= 300 MB; the sweeper's idle pass and due pass at (B) within 2 x (A)'s
# (or + 1 ms: a cost that follows what is due, not what is live); bulk
# revoke <= 3 s, answered 200 with every session and grant revoked.
#
# The sweeper's passes are read from GET /metrics
# (jitbroker_sweep_duration_seconds, jitbroker_sweep_handled_total), sampled
# every 50 ms: passes are sessions.sweep_interval_ms (1000) apart, so each
# sample sees at most one new pass, its duration and what it handled. The
# first wave falls due BENCH_DUE_IN (6) seconds after the
# seeding: the passes before and between are idle ones; the first pass at
# start (a cold cache) is left out. Medians are compared.
#
# Environment:
#   BUILD_DIR              build directory (default build-bench)
#   BENCH_LIVE_SESSIONS    live sessions seeded for (B) (default 100000)
#   BENCH_AUDIT_RECORDS    audit records seeded for (B) (default 1000000;
#                          >= BENCH_LIVE_SESSIONS)
#   BENCH_DURATION         measured seconds per grant phase (default 10)
#   BENCH_WARMUP           warm-up seconds before each grant phase (default 2)
#   BENCH_CONNS            connections (default 32)
#   BENCH_THREADS          broker handler threads (default 64)
#   BENCH_DUE              sessions falling due for the sweeper (default 100)
#   BENCH_DUE_IN           seconds from the end of seeding until they are due (6)
#   BENCH_DUE_WAVES        waves of BENCH_DUE sessions, 2 s apart: a due pass
#                          each, the median reported (default 5)
#   BENCH_REVOKE_SESSIONS  (C) sessions (default 100)
#   BENCH_REVOKE_GRANTS    (C) grants in all (default 10000)
#   BENCH_STRICT=1         exit 1 when a target is missed
#   BENCH_REBUILD=1        always build first
# A quick functional check:
#   BENCH_LIVE_SESSIONS=10000 BENCH_AUDIT_RECORDS=100000 BENCH_DURATION=3 bench/live_state.sh
# The table goes to bench/results/live-state-latest.txt. See bench/README.md.
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$(pwd)
BUILD_DIR=${BUILD_DIR:-build-bench}
BIN="$ROOT/$BUILD_DIR"
LIVE=${BENCH_LIVE_SESSIONS:-100000}
RECORDS=${BENCH_AUDIT_RECORDS:-1000000}
DURATION=${BENCH_DURATION:-10}
WARMUP=${BENCH_WARMUP:-2}
CONNS=${BENCH_CONNS:-32}
THREADS=${BENCH_THREADS:-64}
DUE=${BENCH_DUE:-100}
DUE_IN=${BENCH_DUE_IN:-6}
DUE_WAVES=${BENCH_DUE_WAVES:-5}
DUE_EVERY=2
REVOKE_SESSIONS=${BENCH_REVOKE_SESSIONS:-100}
REVOKE_GRANTS=${BENCH_REVOKE_GRANTS:-10000}
RESULTS_DIR="$ROOT/bench/results"
PRINCIPAL=bench_engineer

# Targets (issue #15).
P50_TARGET=1.25     # loaded grant p50 / empty grant p50
RSS_TARGET_MB=300   # broker RSS with BENCH_LIVE_SESSIONS live sessions
SWEEP_FACTOR=2      # loaded sweeper pass <= max(2 x empty, empty + 1 ms)
SWEEP_SLACK_MS=1
REVOKE_TARGET_S=3

BENCH_NAME=bench/live_state
# shellcheck source=bench/lib.sh
source bench/lib.sh
is_uint() { [[ "$1" =~ ^[0-9]+$ ]]; }
for v in LIVE RECORDS DURATION WARMUP CONNS THREADS DUE DUE_IN DUE_WAVES REVOKE_SESSIONS \
  REVOKE_GRANTS; do
  is_uint "${!v}" || die "$v must be a non-negative integer, not '${!v}'"
done
((RECORDS >= LIVE)) || die "BENCH_AUDIT_RECORDS ($RECORDS) must be >= BENCH_LIVE_SESSIONS ($LIVE)"
((DUE >= 1 && DUE <= 200)) || die "BENCH_DUE must be in [1, 200] (one sweeper pass ends at most 200)"
((DUE_IN >= 3)) || die "BENCH_DUE_IN must be >= 3"
((DUE_WAVES >= 1 && DUE_WAVES <= 20)) || die "BENCH_DUE_WAVES must be in [1, 20]"
((REVOKE_SESSIONS >= 1 && REVOKE_GRANTS >= REVOKE_SESSIONS)) ||
  die "BENCH_REVOKE_GRANTS must be >= BENCH_REVOKE_SESSIONS >= 1"

# --- build (only when a binary is missing or older than the sources) ---------
bench_build jitbroker loadgen seed_store
for tool in curl awk od; do
  command -v "$tool" >/dev/null 2>&1 || die "$tool is required"
done

bench_note_load

# --- scratch space and cleanup --------------------------------------------------
umask 077
TMP=$(mktemp -d "${TMPDIR:-/tmp}/jitbroker-live.XXXXXX")
chmod 700 "$TMP"
BROKER_PID=""

cleanup() {
  [[ -n "$BROKER_PID" ]] && stop_pid "$BROKER_PID"
  rm -rf "$TMP"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# field NAME < RESULT line
field() { sed -n "s/.* $1=\([^ ]*\).*/\1/p"; }
json_field() {  # NAME < JSON (top-level string or number field)
  if command -v jq >/dev/null 2>&1; then
    jq -r --arg k "$1" '.[$k] // empty'
  else
    sed -n "s/.*\"$1\":\"\{0,1\}\([^\",}]*\).*/\1/p"
  fi
}
now_s() { date +%s.%N; }
elapsed() { awk -v a="$1" -v b="$2" 'BEGIN {printf "%.1f", b - a}'; }
new_key() { echo "jbk_$(od -An -N20 -tx1 /dev/urandom | tr -d ' \n')"; }

# One API key per role for every broker of the run; the config names the files.
ENGINEER_KEY=$(new_key)
ADMIN_KEY=$(new_key)
printf 'Authorization: Bearer %s\n' "$ENGINEER_KEY" >"$TMP/principal.headers"
printf 'Authorization: Bearer %s\n' "$ADMIN_KEY" >"$TMP/admin.headers"

# Makes broker directory $1: a copy of bench/bench.yaml (data_dir ./data
# resolves inside it) with the handler threads set and an admin principal
# (bench_admin, role admin, its key in ./admin.key), and the API key files.
make_broker_dir() {
  local dir=$1
  mkdir -p "$dir"
  sed "s/^  threads: 64$/  threads: $THREADS/" bench/bench.yaml |
    awk '
      /^  principals:[[:space:]]*$/ && !p {
        print
        print "    - id: bench_admin  # added by bench/live_state.sh: bulk revoke"
        print "      roles: [admin]"
        print "      api_key_file: ./admin.key"
        p = 1; next
      }
      /^  roles:[[:space:]]*$/ && !r { print; print "    admin: {}"; r = 1; next }
      { print }
      END { if (!p || !r) exit 3 }' >"$dir/bench.yaml" ||
    die "cannot add an admin to bench/bench.yaml: no 'policy.principals:' or 'policy.roles:' line"
  printf '%s\n' "$ENGINEER_KEY" >"$dir/engineer.key"
  printf '%s\n' "$ADMIN_KEY" >"$dir/admin.key"
}

# Starts the broker of directory $1; sets BROKER_PID, BROKER_PORT, BASE.
start_broker() {
  local dir=$1 port=""
  : >"$dir/broker.out"  # before the broker opens it: the loop below reads it at once
  "$BIN/jitbroker" --config "$dir/bench.yaml" >>"$dir/broker.out" 2>>"$dir/broker.err" &
  BROKER_PID=$!
  for _ in $(seq 1 600); do
    port=$(sed -n 's/.*listening on port \([0-9][0-9]*\).*/\1/p' "$dir/broker.out" | head -n 1)
    [[ -n "$port" ]] && break
    kill -0 "$BROKER_PID" 2>/dev/null || break
    sleep 0.05
  done
  [[ -n "$port" ]] || die "jitbroker did not start: $(tail -n 20 "$dir/broker.err")"
  BROKER_PORT=$port
  BASE="http://127.0.0.1:$port"
}
stop_broker() {
  stop_pid "$BROKER_PID"
  BROKER_PID=""
}

# Seeds the STOPPED broker of directory $1 (bench/seed_store.cc): $2 live
# sessions, $3 audit records, BENCH_DUE_WAVES waves of BENCH_DUE sessions
# falling due BENCH_DUE_IN s after, then every 2 s. Prints seed_store's
# RESULT line.
seed() {
  local dir=$1
  "$BIN/seed_store" --config "$dir/bench.yaml" --sessions "$2" --records "$3" --due "$DUE" \
    --due-in "$DUE_IN" --due-waves "$DUE_WAVES" --due-every "$DUE_EVERY" \
    --principal "$PRINCIPAL" >"$dir/seed.out" 2>"$dir/seed.err" ||
    die "seed_store failed: $(tail -n 5 "$dir/seed.err")"
  grep '^RESULT ' "$dir/seed.out"
}

# "count sum sessions_ended commit_sum commit_count" of the sweeper's and the
# journal's metrics at $1 (port).
sweep_sample() {
  { curl -sS --max-time 2 "http://127.0.0.1:$1/metrics" || true; } |
    awk '/^jitbroker_sweep_duration_seconds_count / {c = $2}
         /^jitbroker_sweep_duration_seconds_sum / {s = $2}
         /^jitbroker_sweep_handled_total\{kind="sessions_ended"\} / {e = $2}
         /^jitbroker_audit_commit_duration_seconds_sum / {cs = $2}
         /^jitbroker_audit_commit_duration_seconds_count / {cc = $2}
         END {printf "%d %.9f %d %.9f %d\n", c, s, e, cs, cc}'
}

# Samples the sweeper of the running broker every 50 ms into $1 until every
# wave of due sessions was ended and 2 passes after the last (or a deadline
# passes), then prints
#   "idle_median_ms idle_passes due_median_ms due_passes ended_min ended_max first_ms
#    due_commit_median_ms due_commits"
# A pass that ended sessions is a due pass; the others are idle. The first
# pass (at start, cold) is reported apart and only when a sample preceded
# it; a sample that saw several passes at once is not used. Nothing but the
# sweeper commits meanwhile, so the journal's group commits (their count and
# time, jitbroker_audit_commit_duration_seconds) between the sample that saw
# the pass before and the one that saw a due pass are that pass's.
watch_sweeps() {
  local out=$1 deadline sample done_count="" c e
  deadline=$(awk -v n="$(now_s)" -v d="$((DUE_IN + DUE_WAVES * DUE_EVERY))" \
    'BEGIN {printf "%.0f", n + d + 30}')
  : >"$out"
  while :; do
    sample=$(sweep_sample "$BROKER_PORT")
    echo "$sample" >>"$out"
    read -r c _ e _ <<<"$sample"
    if [[ -z "$done_count" ]] && ((e >= DUE * DUE_WAVES)); then
      done_count=$c
    fi
    if [[ -n "$done_count" ]] && ((c >= done_count + 2)); then
      break
    fi
    awk -v n="$(now_s)" -v d="$deadline" 'BEGIN {exit !(n > d)}' && break
    sleep 0.05
  done
  awk '
    function median(a, n,   i, j, t) {
      for (i = 2; i <= n; i++) { t = a[i]; for (j = i - 1; j >= 1 && a[j] > t; j--) a[j + 1] = a[j]; a[j + 1] = t }
      return n == 0 ? -1 : (n % 2 ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2)
    }
    NR > 1 && $1 - pc == 1 {
      ms = ($2 - ps) * 1000; ended = $3 - pe
      if (pc == 0) first = ms
      else if (ended > 0) {
        due[++nd] = ms
        if (lo == "" || ended < lo) lo = ended
        if (ended > hi) hi = ended
        if (seen) { commit_ms[nd] = ($4 - ccs) * 1000; commits += $5 - ccc; nc++ }
      } else idle[++n] = ms
    }
    NR > 1 && $1 != pc { seen = 1; ccs = $4; ccc = $5 }  # later commits: the next pass
    { pc = $1; ps = $2; pe = $3 }
    END {
      printf "%.3f %d %.3f %d %d %d %.3f %.3f %d\n", median(idle, n), n, median(due, nd), nd, lo, hi,
        (first == "" ? -1 : first), median(commit_ms, nc), (nc > 0 ? commits / nc : -1)
    }
  ' "$out"
}

# Opens a session of bench_engineer on $BASE (scope jwt://mcp.internal, max
# tier read, TTL 900 s); writes its bearer header to $1; prints its id.
SESSION_BODY='{"agent":{"id":"bench_agent"},"task":{"id":"bench_task","description":"jitbroker benchmark","scope":{"resources":["jwt://mcp.internal"],"max_tier":"read","issuers":["internal"]}},"ttl_seconds":900,"heartbeat_seconds":600}'
open_session() {
  local headers=$1 http sid token
  http=$(curl -sS --max-time 10 -o "$TMP/session.json" -w '%{http_code}' -X POST \
    -H @"$TMP/principal.headers" -H 'Content-Type: application/json' \
    --data "$SESSION_BODY" "$BASE/v1/sessions") || die "POST /v1/sessions failed"
  [[ "$http" == 201 ]] || die "POST /v1/sessions answered $http: $(cat "$TMP/session.json")"
  sid=$(json_field session_id <"$TMP/session.json")
  token=$(json_field session_token <"$TMP/session.json")
  rm -f "$TMP/session.json"
  [[ "$sid" =~ ^ses_[A-Za-z0-9_-]+$ && -n "$token" ]] || die "unexpected session response"
  printf 'Authorization: Bearer %s\n' "$token" >"$headers"
  echo "$sid"
}

GRANT_BODY='{"tool":"mcp.search","operation":"read","resource":"jwt://mcp.internal","issuer":"internal","ttl_seconds":300}'
printf '%s' "$GRANT_BODY" >"$TMP/grant.json"

# The grant load of bench/run.sh phase (b) against $BASE; $1 labels it.
# Prints loadgen's RESULT line.
grant_phase() {
  local label=$1 sid http
  sid=$(open_session "$TMP/$label.session.headers")
  http=$(curl -sS --max-time 10 -o "$TMP/grant.out" -w '%{http_code}' -X POST \
    -H @"$TMP/$label.session.headers" -H 'Content-Type: application/json' \
    --data-binary @"$TMP/grant.json" "$BASE/v1/sessions/$sid/grants") || die "grant request failed"
  [[ "$http" == 201 ]] ||
    die "a grant answered $http: $(sed 's/"token":"[^"]*"/"token":"[redacted]"/' "$TMP/grant.out")"
  rm -f "$TMP/grant.out"
  echo "bench: ($label) grants: $CONNS connections, ${WARMUP}s warm-up + ${DURATION}s" >&2
  "$BIN/loadgen" -c "$CONNS" -t 1 -l "grants-$label" -w "$WARMUP" -d "$DURATION" -m POST \
    --header-file "$TMP/$label.session.headers" --body-file "$TMP/grant.json" \
    --url "$BASE/v1/sessions/$sid/grants" >"$TMP/grants-$label.txt" ||
    die "loadgen failed: $(cat "$TMP/grants-$label.txt")"
  cat "$TMP/grants-$label.txt" >&2
  grep '^RESULT ' "$TMP/grants-$label.txt"
}

rss_kb() { awk -v k="$2:" '$1 == k {print $2}' "/proc/$1/status"; }

# --- (A) empty store -------------------------------------------------------------
A="$TMP/empty"
make_broker_dir "$A"
echo "bench: (A) empty store: first start (keys, store), $DUE_WAVES x $DUE sessions falling due" >&2
start_broker "$A"
stop_broker
seed "$A" 0 0 >/dev/null
start_broker "$A"
echo "bench: (A) sweeper passes until the due sessions are ended (~$((DUE_IN + DUE_WAVES * DUE_EVERY + 2)) s)" >&2
SWEEP_A=$(watch_sweeps "$TMP/sweeps-empty.txt")
LOAD_A=$(cut -d' ' -f1-3 /proc/loadavg)
GRANT_A=$(grant_phase empty)
RSS_A=$(rss_kb "$BROKER_PID" VmRSS)
stop_broker

# --- (B) loaded store ------------------------------------------------------------
B="$TMP/loaded"
make_broker_dir "$B"
start_broker "$B"
stop_broker
echo "bench: (B) seeding $LIVE live sessions and $RECORDS audit records (bench/seed_store)" >&2
T0=$(now_s)
SEED_B=$(seed "$B" "$LIVE" "$RECORDS")
SEED_S=$(elapsed "$T0" "$(now_s)")
DB_MB=$(du -m "$B/data/state.db" | cut -f1)
JSONL_MB=$(du -m "$B/data/audit.jsonl" | cut -f1)
T0=$(now_s)
start_broker "$B"
START_B_S=$(elapsed "$T0" "$(now_s)")
echo "bench: (B) sweeper passes until the due sessions are ended (~$((DUE_IN + DUE_WAVES * DUE_EVERY + 2)) s)" >&2
SWEEP_B=$(watch_sweeps "$TMP/sweeps-loaded.txt")
LOAD_B=$(cut -d' ' -f1-3 /proc/loadavg)
GRANT_B=$(grant_phase loaded)
RSS_B=$(rss_kb "$BROKER_PID" VmRSS)
HWM_B=$(rss_kb "$BROKER_PID" VmHWM)
# Only the due sessions were ended: the seeded ones stayed live throughout.
read -r _ _ ENDED_B _ <<<"$(sweep_sample "$BROKER_PORT")"
stop_broker

# --- (C) bulk revoke -----------------------------------------------------------------
C="$TMP/revoke"
make_broker_dir "$C"
start_broker "$C"
echo "bench: (C) $REVOKE_SESSIONS sessions, $REVOKE_GRANTS jwt grants through the API" >&2
# One curl config: a section per session (options do not carry over `next`).
{
  for ((i = 0; i < REVOKE_SESSIONS; i++)); do
    sid=$(open_session "$TMP/revoke.session.headers")
    n=$((REVOKE_GRANTS / REVOKE_SESSIONS + (i < REVOKE_GRANTS % REVOKE_SESSIONS ? 1 : 0)))
    ((i == 0)) || echo 'next'
    echo 'silent'
    echo 'show-error'
    echo 'max-time = 30'
    printf '%s\n' 'write-out = "%{http_code}\n"'
    printf 'header = "%s"\n' "$(cat "$TMP/revoke.session.headers")"
    echo 'header = "Content-Type: application/json"'
    echo "data-binary = \"@$TMP/grant.json\""
    for ((j = 0; j < n; j++)); do
      echo "url = \"$BASE/v1/sessions/$sid/grants\""
      echo 'output = "/dev/null"'
    done
  done
} >"$TMP/mint.curl"
rm -f "$TMP/revoke.session.headers"
T0=$(now_s)
curl --parallel --parallel-max "$CONNS" -K "$TMP/mint.curl" >"$TMP/mint.codes" 2>"$TMP/mint.err" || true
MINT_S=$(elapsed "$T0" "$(now_s)")
rm -f "$TMP/mint.curl"
MINTED=$(grep -c '^201$' "$TMP/mint.codes" || true)
[[ "$MINTED" == "$REVOKE_GRANTS" ]] ||
  die "(C) $MINTED of $REVOKE_GRANTS grants answered 201: $(sort "$TMP/mint.codes" | uniq -c | tr '\n' ' ') $(head -n 3 "$TMP/mint.err")"
echo "bench: (C) POST /v1/admin/revoke {\"principal\":\"$PRINCIPAL\"}" >&2
REVOKE_OUT=$(curl -sS --max-time 300 -o "$TMP/revoke.json" -w '%{http_code} %{time_total}' -X POST \
  -H @"$TMP/admin.headers" -H 'Content-Type: application/json' \
  --data "{\"principal\":\"$PRINCIPAL\",\"reason\":\"bench\"}" "$BASE/v1/admin/revoke") ||
  die "POST /v1/admin/revoke failed"
read -r REVOKE_HTTP REVOKE_S <<<"$REVOKE_OUT"
if command -v jq >/dev/null 2>&1; then
  REVOKED_SESSIONS=$(jq -r '.sessions_revoked // 0' "$TMP/revoke.json")
  REVOCATIONS=$(jq -r '(.revocations // []) | length' "$TMP/revoke.json")
  REVOKED_OK=$(jq -r '[(.revocations // [])[] | select(.outcome == "revoked")] | length' "$TMP/revoke.json")
else
  REVOKED_SESSIONS=$(json_field sessions_revoked <"$TMP/revoke.json")
  REVOCATIONS=$(grep -o '"grant_id"' "$TMP/revoke.json" | wc -l)
  REVOKED_OK=$(grep -o '"outcome":"revoked"' "$TMP/revoke.json" | wc -l)
fi
stop_broker

# --- report ---------------------------------------------------------------------------
pf() { if [[ "$1" == 1 ]]; then echo PASS; else echo FAIL; fi; }
A_RPS=$(field rps <<<"$GRANT_A"); A_P50=$(field p50_ms <<<"$GRANT_A"); A_P99=$(field p99_ms <<<"$GRANT_A")
B_RPS=$(field rps <<<"$GRANT_B"); B_P50=$(field p50_ms <<<"$GRANT_B"); B_P99=$(field p99_ms <<<"$GRANT_B")
errs() { echo "$(field non2xx <<<"$1") non-2xx, $(field errors <<<"$1") transport"; }
nerrs() { awk -v a="$(field non2xx <<<"$1")" -v b="$(field errors <<<"$1")" 'BEGIN {print a + b}'; }
P50_RATIO=$(awk -v b="$B_P50" -v a="$A_P50" 'BEGIN {if (a > 0) printf "%.2f", b / a; else print "n/a"}')
P50_OK=$(pf "$(awk -v r="$P50_RATIO" -v t="$P50_TARGET" -v a="$(nerrs "$GRANT_A")" \
  -v b="$(nerrs "$GRANT_B")" 'BEGIN {print (r + 0 > 0 && r + 0 <= t && a + b == 0) ? 1 : 0}')")
RSS_B_MB=$(awk -v k="$RSS_B" 'BEGIN {printf "%.1f", k / 1024}')
RSS_OK=$(pf "$(awk -v m="$RSS_B_MB" -v t="$RSS_TARGET_MB" 'BEGIN {print (m > 0 && m <= t) ? 1 : 0}')")
read -r IDLE_A IDLE_A_N DUE_A DUE_A_N DUE_A_LO DUE_A_HI FIRST_A COMMIT_A COMMITS_A <<<"$SWEEP_A"
read -r IDLE_B IDLE_B_N DUE_B DUE_B_N DUE_B_LO DUE_B_HI FIRST_B COMMIT_B COMMITS_B <<<"$SWEEP_B"
sweep_ok() {  # loaded-ms empty-ms
  awk -v b="$1" -v a="$2" -v f="$SWEEP_FACTOR" -v s="$SWEEP_SLACK_MS" \
    'BEGIN {m = (f * a > a + s) ? f * a : a + s; print (a >= 0 && b >= 0 && b <= m) ? 1 : 0}'
}
IDLE_OK=$(pf "$(sweep_ok "$IDLE_B" "$IDLE_A")")
# Every wave ended whole, in one pass each.
DUE_OK=$(pf "$(awk -v x="$(sweep_ok "$DUE_B" "$DUE_A")" -v d="$DUE" -v w="$DUE_WAVES" \
  -v an="$DUE_A_N" -v al="$DUE_A_LO" -v ah="$DUE_A_HI" -v bn="$DUE_B_N" -v bl="$DUE_B_LO" \
  -v bh="$DUE_B_HI" \
  'BEGIN {print (x == 1 && an == w && bn == w && al == d && ah == d && bl == d && bh == d) ? 1 : 0}')")
REVOKE_OK=$(pf "$(awk -v h="$REVOKE_HTTP" -v t="$REVOKE_S" -v lim="$REVOKE_TARGET_S" \
  -v s="$REVOKED_SESSIONS" -v r="$REVOCATIONS" -v ok="$REVOKED_OK" -v ns="$REVOKE_SESSIONS" \
  -v ng="$REVOKE_GRANTS" \
  'BEGIN {print (h == 200 && t + 0 <= lim && s == ns && r == ng && ok == ng) ? 1 : 0}')")
ratio() { awk -v n="$1" -v d="$2" 'BEGIN {if (n >= 0 && d > 0) printf "%.2f", n / d; else print "n/a"}'; }
ms() { awk -v v="$1" 'BEGIN {if (v < 0) print "n/a"; else printf "%.2f", v}'; }
CPU=$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n 1)
REV=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
NOW=$(date -u +%Y-%m-%dT%H:%M:%SZ)

mkdir -p "$RESULTS_DIR"
{
  echo "jitbroker live-state benchmark (bench/live_state.sh)  $NOW  rev $REV"
  echo "host: $(nproc) CPUs ($CPU); loadgen shares them with the broker"
  echo "load average: $LOAD_START at start, $LOAD_A before (A)'s grants, $LOAD_B before (B)'s," \
       "$(cut -d' ' -f1-3 /proc/loadavg) at end"
  echo "store: SQLite (bench/bench.yaml); grants: $CONNS connections closed loop, ${WARMUP}s warm-up +" \
       "${DURATION}s, one session, as bench/run.sh (b); server threads $THREADS"
  echo "(B) seeded: $(field sessions <<<"$SEED_B") live sessions of $PRINCIPAL," \
       "$(field grants <<<"$SEED_B") expired grants, $(field head_seq <<<"$SEED_B") audit records in the chain;" \
       "state.db $DB_MB MB, audit.jsonl $JSONL_MB MB"
  echo "    seeding took $SEED_S s ($(field records_per_s <<<"$SEED_B") records/s through audit::Journal);" \
       "broker start on it ${START_B_S} s"
  echo
  printf '%-44s %10s %10s %10s\n' "" "grants/s" "p50 ms" "p99 ms"
  printf '%-44s %10s %10s %10s\n' "(A) grants, empty store" "$A_RPS" "$A_P50" "$A_P99"
  printf '%-44s %10s %10s %10s\n' "(B) grants, $LIVE live / $RECORDS records" "$B_RPS" "$B_P50" "$B_P99"
  echo
  printf '%-44s %-28s %-24s %s\n' "target" "measured" "limit" "result"
  printf '%-44s %-28s %-24s %s\n' "grant p50 loaded / empty" "$P50_RATIO ($B_P50 / $A_P50 ms)" \
    "<= $P50_TARGET" "$P50_OK"
  printf '%-44s %-28s %-24s %s\n' "broker RSS, $LIVE live, after (B)'s grants" \
    "$RSS_B_MB MB (peak $(awk -v k="$HWM_B" 'BEGIN {printf "%.1f", k / 1024}'))" \
    "<= $RSS_TARGET_MB MB" "$RSS_OK"
  printf '%-44s %-28s %-24s %s\n' "sweeper idle pass, $LIVE live, none due" \
    "$(ms "$IDLE_B") ms (median of $IDLE_B_N)" "empty $(ms "$IDLE_A") ms x $SWEEP_FACTOR" "$IDLE_OK"
  printf '%-44s %-28s %-24s %s\n' "sweeper pass ending $DUE due, $LIVE live" \
    "$(ms "$DUE_B") ms (median of $DUE_B_N)" "empty $(ms "$DUE_A") ms x $SWEEP_FACTOR" "$DUE_OK"
  printf '%-44s %-28s %-24s %s\n' "bulk revoke, $REVOKE_GRANTS jwt grants / $REVOKE_SESSIONS sessions" \
    "${REVOKE_S} s (HTTP $REVOKE_HTTP)" "<= $REVOKE_TARGET_S s" "$REVOKE_OK"
  echo
  echo "sweeper (jitbroker_sweep_duration_seconds; a pass every sessions.sweep_interval_ms, 1000):"
  for row in "empty|$IDLE_A|$IDLE_A_N|$DUE_A|$DUE_A_N|$DUE_A_LO|$DUE_A_HI|$FIRST_A|$COMMIT_A|$COMMITS_A" \
    "loaded|$IDLE_B|$IDLE_B_N|$DUE_B|$DUE_B_N|$DUE_B_LO|$DUE_B_HI|$FIRST_B|$COMMIT_B|$COMMITS_B"; do
    IFS='|' read -r name idle idle_n due due_n lo hi first commit commits <<<"$row"
    printf '  %-7s idle %s ms (median of %s); due %s ms (median of %s passes, %s-%s sessions ended each:' \
      "$name:" "$(ms "$idle")" "$idle_n" "$(ms "$due")" "$due_n" "$lo" "$hi"
    printf ' %s ms/session),\n' "$(ms "$(ratio "$due" "$DUE")")"
    printf '          of which %s durable group commits take %s ms; first pass at start %s ms\n' \
      "$commits" "$(ms "$commit")" "$(ms "$first")"
  done
  echo "  (limit: loaded <= max($SWEEP_FACTOR x empty, empty + $SWEEP_SLACK_MS ms); each of the $DUE_WAVES" \
       "waves of $DUE ended whole by one pass)"
  echo "RSS: empty store after (A)'s grants $(awk -v k="$RSS_A" 'BEGIN {printf "%.1f", k / 1024}') MB;" \
       "sessions the sweeper ended in (B) in all: $ENDED_B (the $((DUE * DUE_WAVES)) due ones: the seeded stayed live)"
  echo "bulk revoke: $REVOKED_SESSIONS sessions and $REVOKED_OK/$REVOCATIONS grants revoked (expected" \
       "$REVOKE_SESSIONS and $REVOKE_GRANTS); the $REVOKE_GRANTS grants were minted in ${MINT_S} s" \
       "(curl --parallel, $CONNS at once) on a fresh broker"
  echo "errors: (A) grants $(errs "$GRANT_A"); (B) grants $(errs "$GRANT_B")"
} >"$TMP/table.txt"
cp "$TMP/table.txt" "$RESULTS_DIR/live-state-latest.txt"
chmod 644 "$RESULTS_DIR/live-state-latest.txt"
cat "$TMP/table.txt"

if [[ "${BENCH_STRICT:-0}" == 1 ]] && grep -q ' FAIL$' "$TMP/table.txt"; then
  exit 1
fi
