#!/usr/bin/env bash
# The body of action.yml (kept in a file so that it can be read and tested).
# Inputs arrive as JITBROKER_* environment variables; secrets never appear on
# a command line (curl reads headers and the subject token from files).
set -euo pipefail

fail() { echo "::error title=jitbroker token exchange::$*"; exit 1; }
for tool in curl jq; do
  command -v "$tool" >/dev/null || fail "$tool is required on the runner"
done
: "${JITBROKER_URL:?broker-url is required}"
: "${JITBROKER_TRUST_POLICY:?trust-policy is required}"
: "${JITBROKER_OIDC_AUDIENCE:?oidc-audience is required}"
if [[ -z "${ACTIONS_ID_TOKEN_REQUEST_URL:-}" || -z "${ACTIONS_ID_TOKEN_REQUEST_TOKEN:-}" ]]; then
  fail "no OIDC token available: give the job 'permissions: id-token: write'"
fi
# https, or plain http only when the whole host is loopback: a prefix match
# would let http://localhost.evil.example/ or http://127.0.0.1@evil.example/
# (userinfo) carry the OIDC token and the credential in clear.
loopback='^http://(127(\.[0-9]{1,3}){3}|localhost|\[::1\])(:[0-9]{1,5})?(/|$)'
if [[ ! "$JITBROKER_URL" =~ ^https:// && ! "$JITBROKER_URL" =~ $loopback ]]; then
  fail "broker-url must be https://"
fi

umask 077
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
curl_tls=()
[[ -n "${JITBROKER_CA_FILE:-}" ]] && curl_tls=(--cacert "$JITBROKER_CA_FILE")

# 1. The job's OIDC token, for the broker's audience. The request URL already
#    has a query string, hence '&'. Retried like actions/toolkit does.
printf 'Authorization: Bearer %s\n' "$ACTIONS_ID_TOKEN_REQUEST_TOKEN" >"$work/runner.headers"
audience=$(jq -rn --arg v "$JITBROKER_OIDC_AUDIENCE" '$v|@uri')
for attempt in 1 2 3 4 5; do
  if curl -sS --max-time 15 -o "$work/oidc.json" -w '%{http_code}' -H @"$work/runner.headers" \
       -H 'Accept: application/json; api-version=2.0' \
       "${ACTIONS_ID_TOKEN_REQUEST_URL}&audience=${audience}" >"$work/oidc.status" &&
     [[ "$(cat "$work/oidc.status")" == 200 ]]; then
    break
  fi
  [[ $attempt == 5 ]] && fail "cannot get the job's OIDC token (HTTP $(cat "$work/oidc.status" 2>/dev/null || echo '?'))"
  sleep $((attempt * 2))
done
jq -j '.value // empty' "$work/oidc.json" >"$work/subject"  # no trailing newline
[[ -s "$work/subject" ]] || fail "the runner returned no OIDC token"
echo "::add-mask::$(cat "$work/subject")"

# 2. The exchange (RFC 8693).
args=(--data-urlencode "grant_type=urn:ietf:params:oauth:grant-type:token-exchange"
      --data-urlencode "subject_token_type=urn:ietf:params:oauth:token-type:id_token"
      --data-urlencode "audience=${JITBROKER_TRUST_POLICY}"
      --data-urlencode "subject_token@$work/subject")
[[ -n "${JITBROKER_SCOPE:-}" ]] && args+=(--data-urlencode "scope=${JITBROKER_SCOPE}")
status=$(curl -sS --max-time 60 "${curl_tls[@]}" -o "$work/response.json" -w '%{http_code}' \
           -H 'Accept: application/json' "${args[@]}" "${JITBROKER_URL%/}/v1/token") ||
  fail "cannot reach the broker at ${JITBROKER_URL}"
if [[ "$status" != 200 ]]; then
  error=$(jq -r '.error // "unexpected_response"' "$work/response.json" 2>/dev/null || echo unexpected_response)
  description=$(jq -r '.error_description // empty' "$work/response.json" 2>/dev/null || true)
  fail "the broker refused the exchange (HTTP $status): $error${description:+: $description}"
fi
token=$(jq -r '.access_token' "$work/response.json")
echo "::add-mask::$token"
{
  echo "token=$token"
  echo "expires-in=$(jq -r '.expires_in' "$work/response.json")"
  echo "grant-id=$(jq -r '.grant_id' "$work/response.json")"
  echo "session-id=$(jq -r '.session_id' "$work/response.json")"
} >>"$GITHUB_OUTPUT"
if [[ -n "${JITBROKER_EXPORT_ENV:-}" ]]; then
  [[ "$JITBROKER_EXPORT_ENV" =~ ^[A-Za-z_][A-Za-z0-9_]*$ ]] || fail "export-env must be a variable name"
  echo "${JITBROKER_EXPORT_ENV}=$token" >>"$GITHUB_ENV"
fi
echo "jitbroker: minted grant $(jq -r '.grant_id' "$work/response.json") (scope '$(jq -r '.scope // ""' "$work/response.json")', expires in $(jq -r '.expires_in' "$work/response.json") s)"
