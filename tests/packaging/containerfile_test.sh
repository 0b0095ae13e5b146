#!/usr/bin/env bash
# Checks contrib/container/Containerfile without a container engine (CI has
# none): the image it describes would run the binaries built here, as an
# unprivileged user, with a health check, and with nothing secret baked in.
#
#   tests/packaging/containerfile_test.sh JITBROKER_BINARY JITCTL_BINARY
#
# - every package named is a real Debian 12 package (apt-cache, this host is
#   Debian 12 as the image is);
# - the runtime stage installs the package of every shared library the two
#   binaries need directly (DT_NEEDED, resolved with ldd and dpkg -S),
#   besides libc6, libstdc++6 and libgcc-s1, which debian:12-slim has;
# - the runtime stage copies only the two binaries, from the build stage;
#   runs as a non-root USER; has a HEALTHCHECK on /healthz; its ENTRYPOINT
#   is the daemon with a config under /etc/jitbroker (mounted, not baked);
# - no ENV or ARG names a key, secret, token or password;
# - .dockerignore keeps build trees, local state, keys and .git out of the
#   build context.
# With JITBROKER_CONTAINER_BUILD=1 and a working podman or docker, it also
# builds the image (minutes; not in .ci/run).
set -euo pipefail
cd "$(dirname "$0")/../.."
JITBROKER=$1
JITCTL=$2
FILE=contrib/container/Containerfile
fail=0
bad() { echo "FAIL: $*" >&2; fail=1; }

# The file with continuation lines joined, comments dropped.
joined=$(sed -e 's/#.*$//' "$FILE" | sed -e ':a' -e '/\\$/N; s/\\\n/ /; ta')
final=$(awk '/^FROM /{n++} n==2' <<<"$joined")
build=$(awk '/^FROM /{n++} n==1' <<<"$joined")
[[ $(grep -c '^FROM ' <<<"$joined") == 2 ]] || bad "expected two stages (build, runtime)"
grep -qE '^FROM [^ ]*debian:12 AS build$' <<<"$build" || bad "the build stage is not debian:12 AS build"
grep -qE '^FROM [^ ]*debian:12-slim$' <<<"$final" || bad "the runtime stage is not debian:12-slim"

# apt packages per stage: the words after "install -y --no-install-recommends".
packages() {
  grep -oE 'apt-get install -y --no-install-recommends [^&]*' <<<"$1" |
    sed 's/apt-get install -y --no-install-recommends//' | tr ' ' '\n' | sed '/^$/d' | sort -u
}
runtime_pkgs=$(packages "$final")
build_pkgs=$(packages "$build")
[[ -n "$runtime_pkgs" && -n "$build_pkgs" ]] || bad "no apt-get install found in both stages"
for p in $runtime_pkgs $build_pkgs; do
  apt-cache show "$p" >/dev/null 2>&1 || bad "package $p does not exist on Debian 12"
done

# The runtime libraries the binaries need.
for bin in "$JITBROKER" "$JITCTL"; do
  for needed in $(objdump -p "$bin" | awk '/NEEDED/ {print $2}'); do
    lib=$(ldd "$bin" | awk -v n="$needed" '$1 == n {print $3}')
    [[ -n "$lib" ]] || { bad "ldd does not resolve $needed of $bin"; continue; }
    real=$(readlink -f "$lib")
    owner=$(dpkg -S "$real" 2>/dev/null || dpkg -S "${real#/usr}" 2>/dev/null ||
      dpkg -S "/usr$real" 2>/dev/null || true)
    pkg=${owner%%:*}
    case "$pkg" in
      libc6 | libstdc++6 | libgcc-s1) continue ;;
      "") bad "no Debian package owns $real ($needed of $bin)" ;;
      *) grep -qxF "$pkg" <<<"$runtime_pkgs" || bad "runtime stage lacks $pkg (for $needed of $(basename "$bin"))" ;;
    esac
  done
done

# What the runtime stage holds and how it runs.
copies=$(grep -E '^(COPY|ADD) ' <<<"$final" || true)
[[ "$copies" == "COPY --from=build /opt/jitbroker/bin/jitbroker /opt/jitbroker/bin/jitctl /usr/local/bin/" ]] ||
  bad "the runtime stage copies more than the two binaries: $copies"
user=$(grep -E '^USER ' <<<"$final" | tail -n 1 | awk '{print $2}')
[[ -n "$user" && "${user%%:*}" != root && "${user%%:*}" != 0 ]] || bad "the runtime stage runs as root (USER '$user')"
grep -qE '^HEALTHCHECK .*CMD .*/healthz' <<<"$final" || bad "no HEALTHCHECK on /healthz"
grep -qE '^ENTRYPOINT \["/usr/local/bin/jitbroker", "--config", "/etc/jitbroker/[^"]+"\]' <<<"$final" ||
  bad "the ENTRYPOINT is not the daemon with a config under /etc/jitbroker"
if grep -qiE '^(ENV|ARG) [^ =]*(KEY|SECRET|TOKEN|PASSWORD)' <<<"$joined"; then
  bad "an ENV or ARG names a secret"
fi

for pattern in '.git' 'build*/' 'data/' 'conf/data/' '**/*.pem' '**/*.key'; do
  grep -qxF "$pattern" .dockerignore || bad ".dockerignore does not exclude $pattern"
done

if [[ "${JITBROKER_CONTAINER_BUILD:-0}" == 1 ]]; then
  engine=$(command -v podman || command -v docker || true)
  [[ -n "$engine" ]] || bad "JITBROKER_CONTAINER_BUILD=1 but no podman or docker"
  if [[ -n "$engine" ]]; then
    "$engine" build -f "$FILE" -t jitbroker-test . || bad "the image does not build"
    "$engine" run --rm --entrypoint /usr/local/bin/jitbroker jitbroker-test --help >/dev/null ||
      bad "the image's daemon does not run"
  fi
fi
exit "$fail"
