#!/usr/bin/env bash
# Installs the Debian packages jitbroker needs to build, run and test, if any
# are missing. Sourced by run-dev.sh and test.sh.
set -euo pipefail
JITBROKER_PACKAGES=(g++ cmake make pkg-config libcpp-httplib-dev libboost1.81-dev nlohmann-json3-dev libspdlog-dev
  libfmt-dev doctest-dev libyaml-cpp-dev libcurl4-openssl-dev libsqlite3-dev libpq-dev postgresql libssl-dev zlib1g-dev libexpat1-dev openssl systemd
  curl git jq python3 python3-botocore python3-jsonschema python3-yaml awscli chromium chromium-driver python3-selenium python3-cryptography python3-google-auth python3-requests clang-tidy-19 clang-format-19 clang-19 libclang-rt-19-dev)
missing=()
for p in "${JITBROKER_PACKAGES[@]}"; do
  [[ "$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null || true)" == "install ok installed" ]] || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "installing: ${missing[*]}" >&2
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
fi
