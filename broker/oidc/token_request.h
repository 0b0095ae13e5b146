// The wire side of POST /v1/token (RFC 8693 token exchange, docs/api.md "Token exchange"):
// strict parsing of the form-encoded request and the one table that maps the
// broker's internal errors to RFC 6749 §5.2 error responses.
//
// Parsing (RFC 6749 §3.2, §5.2): the body is application/x-www-form-urlencoded;
// a parameter sent twice is invalid_request (RFC 6749: "MUST NOT be included
// more than once"; RFC 8693 allows repeated `audience`/`resource`, which this
// broker does not support and says so); unknown parameters are ignored as RFC
// 6749 §3.2 requires; `actor_token` (delegation) is not supported.
//
// Error mapping (stable; docs/api.md lists it):
//   invalid_request         400  malformed request or subject_token that is not a JWS
//   unsupported_grant_type  400  grant_type other than token-exchange
//   invalid_grant           400  subject_token fails verification. Before the
//                                signature is verified (no trust policies,
//                                issuer not trusted, alg, key, signature) the
//                                answer is always the same body; after it:
//                                exp/nbf/iat, aud, missing claims, replayed jti
//                                (kUnauthenticated always maps here)
//   invalid_target          400  `audience`/`resource` names no trust policy
//                                (only for a token whose signature verified)
//   unauthorized_client     400  the identity is valid but no trust policy lets
//                                it mint (claims), or policy denies the grant
//   invalid_scope           400  `scope` asks for more than the policy grants
//   temporarily_unavailable 503  the issuer's keys cannot be fetched, replay
//                                cache full, upstream issuer unavailable
//   server_error            500  anything else
// RFC 8693 §2.2.2 names invalid_request for an unacceptable subject token;
// like Google's and GitHub's STS endpoints this broker answers invalid_grant
// (RFC 6749 §5.2: the grant "is invalid, expired, revoked, does not match"),
// keeping invalid_request for requests it cannot read at all.
//
// Thread-safety: pure functions.
#pragma once

#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "jitbroker/result.h"
#include "jitbroker/secret.h"

namespace jitbroker::oidc {

struct TokenExchangeRequest {
  SecretValue subject_token;
  std::string subject_token_type;       // a token-type URI
  std::string audience;                 // trust policy name or target resource
  std::optional<std::string> resource;  // RFC 8693 `resource`, must agree
  std::optional<std::string> scope;     // RFC 6749 scope string
  std::optional<std::string> requested_token_type;
};

// Parses and checks an RFC 8693 request body (see the file comment). Errors
// are kInvalidArgument with reason "invalid_request" or
// "unsupported_grant_type".
[[nodiscard]] Result<TokenExchangeRequest> ParseTokenExchangeForm(std::string_view body);

struct OAuthError {
  int status = 400;
  std::string error;        // RFC 6749 §5.2 code
  std::string description;  // client-safe
  std::string code;         // the broker's stable code where RFC 6749 has none ("rate_limited")
};

// The stable mapping of the file comment.
OAuthError ToOAuthError(const Error& e);
nlohmann::json OAuthErrorBody(const OAuthError& e);  // {error, error_description}

}  // namespace jitbroker::oidc
