// jitctl ci exchange (docs/jitctl.md "CI commands"): trades the CI job's OIDC token for a
// scoped credential through POST /v1/token (RFC 8693), so CI stores no
// broker secret.
//
// Where the OIDC token comes from, first match wins:
//   --token-file F, --token-env VAR, $JITBROKER_OIDC_TOKEN (e.g. a GitLab
//   `id_tokens:` variable), or GitHub Actions: with `permissions: id-token:
//   write` the runner sets ACTIONS_ID_TOKEN_REQUEST_URL/_TOKEN and jitctl
//   requests a token for --oidc-audience (the trust policy's audience).
// The OIDC token and the credential travel as SecretValues. By default only
// metadata is printed (trust policy, session, grant, expiry, scope, the
// credential's type): CI logs are widely readable. --token-only, --export VAR
// and --json print the credential; under GitHub Actions (GITHUB_ACTIONS=true)
// every secret is first registered with `::add-mask::` (on stderr, which the
// runner parses as well). The OIDC token is never printed. The broker URL
// must be https (plain http only to a loopback host): the command refuses
// before it fetches or sends any token.
//
// Thread-safety: single-threaded (one command per process).
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "cli/args.h"
#include "cli/commands.h"
#include "jitbroker/result.h"

namespace jitbroker::cli {

[[nodiscard]] Result<int> CiExchange(const Context& ctx, const Invocation& inv);

namespace internal {

// ACTIONS_ID_TOKEN_REQUEST_URL plus the audience parameter (the URL already
// has a query, hence '&'); nullopt-like "" when the URL is not acceptable
// (https, or http to a loopback host).
std::string ActionsTokenUrl(std::string_view request_url, std::string_view audience);

// True for https://, or http:// to a loopback host.
bool BrokerUrlIsSafeForCi(std::string_view base_url);

// The secrets of a POST /v1/token answer: access_token and the credential's
// string members other than metadata (type, expires_at, ...), deduplicated.
std::vector<std::string> ExchangeSecrets(const nlohmann::json& response);

// `::add-mask::VALUE` lines (workflow-command escaped: % \r \n), one per
// secret, plus one per line of a multi-line secret.
std::string AddMaskCommands(const std::vector<std::string>& secrets);
std::string EscapeWorkflowCommandData(std::string_view value);

}  // namespace internal

}  // namespace jitbroker::cli
