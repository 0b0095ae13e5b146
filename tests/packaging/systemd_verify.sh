#!/usr/bin/env bash
# Checks that contrib/systemd/jitbroker.service is a unit systemd accepts as
# written: `systemd-analyze verify` exits 0 and prints nothing about it, not
# even a notice (an unknown key, a bad value or a deprecated setting is only
# a warning to systemd, which would otherwise ignore that line and start the
# daemon less hardened than the file says). Lines about other units (the
# host's own, pulled in as dependencies) are shown but do not fail the test.
# Also checks that verify does report a broken copy of the unit (so that a
# silent verify cannot pass by accident), and, where systemd-analyze can
# review a unit offline, that the unit's exposure score stays at 2.0 or less.
#
#   tests/packaging/systemd_verify.sh JITBROKER_BINARY
#
# verify insists that ExecStart='s program exists, so the test verifies a copy
# whose ExecStart runs JITBROKER_BINARY (the freshly built daemon) instead of
# /usr/local/bin/jitbroker. Exits 77 (skipped) when systemd-analyze is not
# installed (scripts/deps.sh installs it: Debian's systemd package).
set -euo pipefail

bin=${1:?usage: systemd_verify.sh JITBROKER_BINARY}
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
unit=$here/../../contrib/systemd/jitbroker.service
installed_bin=/usr/local/bin/jitbroker

fail() {
  echo "FAIL: $*" >&2
  exit 1
}

if ! command -v systemd-analyze >/dev/null 2>&1; then
  echo "SKIP: systemd-analyze is not installed (Debian: apt-get install systemd; scripts/deps.sh)"
  exit 77
fi
[ -f "$unit" ] || fail "$unit is missing"
[ -x "$bin" ] || fail "$bin is not an executable (give the built jitbroker)"
bin=$(realpath "$bin")
case "$bin" in
  *[[:space:]\"\\]*) fail "cannot put $bin in ExecStart= (whitespace, quote or backslash)" ;;
esac
kill_bin=/bin/kill
if [ ! -x "$kill_bin" ]; then
  kill_bin=$(type -P kill) || fail "no kill program for ExecReload= (Debian: procps)"
fi

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
mkdir "$tmp/unit" "$tmp/broken"

# The copy: ExecStart's program replaced (% doubled: systemd specifiers),
# ExecReload's kill made to exist; every other line as written.
execstart=0
while IFS= read -r line || [ -n "$line" ]; do
  case "$line" in
    "ExecStart=$installed_bin "*)
      line="ExecStart=\"${bin//%/%%}\" ${line#"ExecStart=$installed_bin "}"
      execstart=$((execstart + 1))
      ;;
    ExecStart=*) fail "ExecStart= does not run $installed_bin: $line" ;;
    "ExecReload=/bin/kill "*) line="ExecReload=$kill_bin ${line#"ExecReload=/bin/kill "}" ;;
  esac
  printf '%s\n' "$line"
done <"$unit" >"$tmp/unit/jitbroker.service"
[ "$execstart" -eq 1 ] || fail "expected one ExecStart=$installed_bin line, found $execstart"

recursive=()
analyze_help=$(systemd-analyze --help 2>/dev/null || true)
# Captured, not piped: under pipefail `... | grep -q` fails when grep exits
# before the writer is done (SIGPIPE).
if grep -q -- '--recursive-errors' <<<"$analyze_help"; then
  # The exit status reflects only our unit, not the host's units.
  recursive=(--recursive-errors=no)
fi

# Runs verify on $1; sets rc and ours (the lines about jitbroker's unit).
verify() {
  local out
  rc=0
  out=$(cd "$tmp" && SYSTEMD_LOG_LEVEL=notice systemd-analyze verify "${recursive[@]}" "$1" 2>&1) || rc=$?
  ours=$(printf '%s\n' "$out" | grep -F -e jitbroker -e "$tmp" || true)
  local others
  others=$(printf '%s\n' "$out" | grep -v -F -e jitbroker -e "$tmp" | grep -v '^$' || true)
  if [ -n "$others" ]; then
    echo "note: ignored, not about jitbroker.service:"
    printf '  %s\n' "$others"
  fi
}

verify "$tmp/unit/jitbroker.service"
if [ "$rc" -ne 0 ] || [ -n "$ours" ]; then
  printf '%s\n' "$ours" >&2
  fail "systemd-analyze verify (exit $rc) on $unit, ExecStart= pointing to $bin"
fi
echo "ok: systemd-analyze verify accepts contrib/systemd/jitbroker.service without a notice"

# The control: the same unit with a misspelt key must be reported.
sed 's/^ProtectSystem=/ProtectSytem=/' "$tmp/unit/jitbroker.service" >"$tmp/broken/jitbroker.service"
grep -q '^ProtectSytem=' "$tmp/broken/jitbroker.service" || fail "the unit has no ProtectSystem= line"
verify "$tmp/broken/jitbroker.service"
grep -q "ProtectSytem" <<<"$ours" ||
  fail "systemd-analyze verify did not report a misspelt key (output: $ours); the check above proves nothing"
echo "ok: a misspelt key in a copy is reported: $ours"

# Exposure score (systemd-analyze security; offline review needs systemd 250).
if grep -q -- '--offline' <<<"$analyze_help"; then
  rc=0
  out=$(cd "$tmp" && systemd-analyze security --offline=yes --threshold=20 "$tmp/unit/jitbroker.service" 2>&1) || rc=$?
  score=$(printf '%s\n' "$out" | grep 'Overall exposure level' || true)
  [ "$rc" -eq 0 ] || fail "exposure above 2.0: ${score:-$out}"
  echo "ok: ${score#→ }"
else
  echo "note: this systemd-analyze cannot review a unit offline; exposure not checked"
fi
