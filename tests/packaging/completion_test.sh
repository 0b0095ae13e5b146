#!/usr/bin/env bash
# Checks `jitctl completion bash|zsh` (docs/jitctl.md) with the real shells:
# the script loads in bash (and in zsh, when installed), and completing
# partial command lines gives jitctl's commands, subcommands and flags,
# skipping the values of flags that take one.
#
#   tests/packaging/completion_test.sh JITCTL_BINARY
set -euo pipefail
JITCTL=$1
fail=0

script=$("$JITCTL" completion bash)
bash -n <<<"$script"
# shellcheck disable=SC1090
source <(printf '%s\n' "$script")

# complete WORD...: what completing the last word of `jitctl WORD...` offers.
complete_line() {
  COMP_WORDS=(jitctl "$@")
  COMP_CWORD=$#
  COMPREPLY=()
  _jitctl
  printf '%s\n' "${COMPREPLY[@]}"
}

# expect "WANT" WORD...: WANT is among the completions. The completions are
# captured before grep reads them: `complete_line | grep -q` under pipefail
# fails at random when grep exits on its first match and printf then gets
# SIGPIPE.
expect() {
  local want=$1
  shift
  local got
  got=$(complete_line "$@")
  if ! grep -qxF -- "$want" <<<"$got"; then
    echo "FAIL: completing 'jitctl $*' does not offer '$want'; it offers: $(tr '\n' ' ' <<<"$got")" >&2
    fail=1
  fi
}
# refuse "UNWANTED" WORD...
refuse() {
  local unwanted=$1
  shift
  local got
  got=$(complete_line "$@")
  if grep -qxF -- "$unwanted" <<<"$got"; then
    echo "FAIL: completing 'jitctl $*' offers '$unwanted'" >&2
    fail=1
  fi
}

expect sessions ""
expect grant gr
expect completion comp
expect version ""
expect --url --u
expect open sessions o
expect request grant ""
refuse open grant ""
expect --agent sessions open --ag
expect --url sessions open --u
expect request --url http://127.0.0.1:8443 grant req  # a flag's value is no command word
expect --resource grant request --tool mcp.search --res
expect --require-checkpoint-within audit verify --require-c
refuse --agent grant request --ag
# Every command of the table is reachable: each group's words, from --help.
while read -r group sub; do
  [[ -n "$group" ]] || continue
  if [[ -n "$sub" ]]; then
    expect "$sub" "$group" ""
  else
    expect "$group" ""
  fi
done < <("$JITCTL" --help | sed -n 's/^  \([a-z-]*\)\( [a-z-]*\)\{0,1\} .*/\1\2/p' | awk '{print $1, $2}')

if "$JITCTL" completion fish >/dev/null 2>&1; then
  echo "FAIL: completion for an unknown shell did not fail" >&2
  fail=1
fi
zsh_script=$("$JITCTL" completion zsh)
grep -q '^#compdef jitctl' <<<"$zsh_script" || { echo "FAIL: no #compdef line for zsh" >&2; fail=1; }
if command -v zsh >/dev/null; then
  zsh -c 'autoload -U compinit && compinit -u; source /dev/stdin' <<<"$zsh_script" ||
    { echo "FAIL: zsh could not load the script" >&2; fail=1; }
fi
exit "$fail"
