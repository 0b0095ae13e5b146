// jitctl ci exchange (DESIGN §7, §10): trades the CI job's OIDC token for a
// scoped credential through POST /v1/token (RFC 8693), so CI stores no
// broker secret.
//
// Where the OIDC token comes from, first match wins:
//   --token-file F, --token-env VAR, $JITBROKER_OIDC_TOKEN (e.g. a GitLab
//   `id_tokens:` variable), or GitHub Actions: with `permissions: id-token:
//   write` the runner sets ACTIONS_ID_TOKEN_REQUEST_URL/_TOKEN and jitctl
//   requests a token for --oidc-audience (the trust policy's audience).
// The OIDC token and the credential travel as SecretValues; the credential
// is printed (it is what the command is for), the OIDC token never.
//
// Thread-safety: single-threaded (one command per process).
#pragma once

#include <string>
#include <string_view>

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

}  // namespace internal

}  // namespace jitbroker::cli
