#!/usr/bin/env bash
# Checks the install rules (cmake/install.cmake): `cmake --install BUILD_DIR
# --prefix TMP` installs exactly
#   bin/jitbroker, bin/jitctl                 (executables that run: --help)
#   lib/systemd/system/jitbroker.service      (as in contrib/systemd/)
#   share/doc/jitbroker/                      README.md, SECURITY.md, docs/*.md,
#                                             systemd.md, examples/ (conf/*.yaml)
# and nothing else: no test driver, benchmark, library, header or file from
# tests/ or bench/. Also that the unit's ExecStart= runs the daemon where
# the default prefix (/usr/local) puts it, and that the installed daemon
# accepts the installed conf/dev.yaml (--check-config) and creates nothing.
#
#   tests/packaging/install_test.sh BUILD_DIR CMAKE_COMMAND
#
# BUILD_DIR needs only the targets jitbroker and jitctl built.
set -euo pipefail

build=${1:?usage: install_test.sh BUILD_DIR CMAKE_COMMAND}
cmake=${2:?usage: install_test.sh BUILD_DIR CMAKE_COMMAND}
src=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
default_prefix=/usr/local  # CMake's default CMAKE_INSTALL_PREFIX on Unix
doc=share/doc/jitbroker    # GNUInstallDirs' CMAKE_INSTALL_DOCDIR

failures=0
fail() {
  echo "FAIL: $*" >&2
  failures=$((failures + 1))
}

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
prefix=$tmp/prefix

if ! "$cmake" --install "$build" --prefix "$prefix" >"$tmp/install.log" 2>&1; then
  cat "$tmp/install.log" >&2
  echo "FAIL: cmake --install $build --prefix $prefix" >&2
  exit 1
fi

# What must be installed, from the source tree as it is now.
{
  echo bin/jitbroker
  echo bin/jitctl
  echo lib/systemd/system/jitbroker.service
  echo "$doc/README.md"
  [ ! -f "$src/SECURITY.md" ] || echo "$doc/SECURITY.md"
  echo "$doc/systemd.md"
  (cd "$src/docs" && find . -type f -name '*.md') | sed "s#^\./#$doc/#"
  (cd "$src/conf" && find . -name data -prune -o -type f \( -name '*.yaml' -o -name '*.yml' \) -print) |
    sed "s#^\./#$doc/examples/#"
} | sort >"$tmp/expected"
installed() { (cd "$prefix" && find . ! -type d) | sed 's#^\./##' | sort; }
installed >"$tmp/actual"

if ! diff -u "$tmp/expected" "$tmp/actual" >"$tmp/diff"; then
  sed -n 's/^-\([^-]\)/  missing:    \1/p; s/^+\([^+]\)/  unexpected: \1/p' "$tmp/diff" >&2
  fail "the installed files are not the expected ones"
fi
grep -q "$doc/configuration.md" "$tmp/actual" || fail "docs/configuration.md was not installed"
grep -q "$doc/examples/dev.yaml" "$tmp/actual" || fail "conf/dev.yaml was not installed"

# Nothing from tests/ or bench/: no executable of the build tree but the two,
# no copy of a source file from there, no path naming them.
for f in "$build"/*; do
  name=${f##*/}
  if [ -f "$f" ] && [ -x "$f" ] && [ "$name" != jitbroker ] && [ "$name" != jitctl ] &&
    grep -q "/$name\$" "$tmp/actual"; then
    fail "build-tree executable $name was installed"
  fi
done
(cd "$src" && find tests bench -type f -size +0 -exec sha256sum {} +) | sort >"$tmp/test-sums"
(cd "$prefix" && find . -type f -exec sha256sum {} +) | sort >"$tmp/installed-sums"
while read -r sum path; do
  match=$(awk -v s="$sum" '$1 == s { print $2; exit }' "$tmp/test-sums")
  [ -z "$match" ] || fail "${path#./} is a copy of $match"
done <"$tmp/installed-sums"
if grep -E '(^|/)(tests?|bench)(/|$)' "$tmp/actual"; then
  fail "a path above names tests or bench"
fi

# Installed files are the source files, byte for byte.
unit=$prefix/lib/systemd/system/jitbroker.service
[ ! -f "$unit" ] || cmp -s "$unit" "$src/contrib/systemd/jitbroker.service" ||
  fail "installed unit differs from contrib/systemd/jitbroker.service"
for f in "$src"/conf/*.yaml; do
  [ ! -f "$prefix/$doc/examples/${f##*/}" ] || cmp -s "$f" "$prefix/$doc/examples/${f##*/}" ||
    fail "installed example ${f##*/} differs from conf/${f##*/}"
done

# The executables run from the prefix.
for exe in jitbroker jitctl; do
  if [ ! -x "$prefix/bin/$exe" ]; then
    fail "bin/$exe is missing or not executable"
  elif ! out=$("$prefix/bin/$exe" --help 2>&1); then
    fail "bin/$exe --help exits non-zero: $out"
  elif ! grep -q "usage: $exe" <<<"$out"; then
    fail "bin/$exe --help prints no usage: $out"
  fi
done

# The unit runs the daemon where the default prefix installs it: the
# unit's /usr/local/bin/jitbroker is PREFIX/bin/jitbroker here.
daemon=$(grep '/jitbroker$' "$tmp/actual" || true)
if [ -f "$unit" ] && [ -n "$daemon" ]; then
  execstart=$(sed -n 's/^ExecStart=//p' "$unit")
  program=${execstart%% *}
  [ "$(grep -c '^ExecStart=' "$unit")" -eq 1 ] || fail "expected one ExecStart= line in the unit"
  [ "$program" = "$default_prefix/$daemon" ] ||
    fail "unit's ExecStart= runs $program, the default prefix installs $default_prefix/$daemon"
  grep -q '^ConfigurationDirectory=jitbroker$' "$unit" || fail "unit has no ConfigurationDirectory=jitbroker"
  [[ "$execstart" == *" --config /etc/jitbroker/"* ]] ||
    fail "unit's ExecStart= does not read its config from /etc/jitbroker (ConfigurationDirectory=): $execstart"
fi

# The installed daemon accepts the installed example, and writes nothing.
example=$prefix/$doc/examples/dev.yaml
if [ -x "$prefix/bin/jitbroker" ] && [ -f "$example" ]; then
  if ! out=$(cd "$tmp" && "$prefix/bin/jitbroker" --config "$example" --check-config 2>&1); then
    fail "installed jitbroker --check-config refuses the installed dev.yaml: $out"
  fi
  installed | diff -u "$tmp/actual" - >&2 || fail "--check-config created files under the prefix"
fi

if [ "$failures" -ne 0 ]; then
  echo "$failures check(s) failed; install log:" >&2
  cat "$tmp/install.log" >&2
  exit 1
fi
echo "ok: cmake --install puts $(wc -l <"$tmp/actual") files under the prefix, all expected:"
sed 's/^/  /' "$tmp/actual"
