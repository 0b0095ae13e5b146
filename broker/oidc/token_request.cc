#include "broker/oidc/token_request.h"

#include <algorithm>
#include <set>
#include <string>
#include <string_view>

#include "broker/common/text.h"
#include "broker/net/url.h"
#include "broker/oidc/token_verifier.h"

namespace jitbroker::oidc {

namespace {

Error BadRequest(std::string message) {
  return InvalidArgument("invalid_request", std::move(message));
}

// One table: internal reason -> RFC 6749 code. Reasons not listed fall back
// on their ErrorCode (ToOAuthError).
struct ReasonRow {
  std::string_view reason;
  std::string_view error;
};
constexpr ReasonRow kReasons[] = {
    {"invalid_request", "invalid_request"},
    {"unsupported_grant_type", "unsupported_grant_type"},
    {"token_too_large", "invalid_request"},
    {"malformed_token", "invalid_request"},
    {"unsupported_token_type", "invalid_request"},
    {"unsupported_media_type", "invalid_request"},
    {"unknown_audience", "invalid_target"},
    {"resource_mismatch", "invalid_target"},
    {"no_trust_policies", "invalid_target"},
    {"claims_mismatch", "unauthorized_client"},
    {"exchange_denied", "unauthorized_client"},
    {"approval_required", "unauthorized_client"},
    {"ci_session_ended", "unauthorized_client"},
    {"invalid_scope", "invalid_scope"},
    {"scope_not_granted", "invalid_scope"},
    {"issuer_unavailable", "temporarily_unavailable"},
    {"replay_cache_full", "temporarily_unavailable"},
};

}  // namespace

Result<TokenExchangeRequest> ParseTokenExchangeForm(std::string_view body) {
  JITBROKER_ASSIGN_OR_RETURN(auto params, net::ParseForm(body));
  static constexpr std::string_view kKnown[] = {
      "grant_type", "subject_token",        "subject_token_type", "audience",        "resource",
      "scope",      "requested_token_type", "actor_token",        "actor_token_type"};
  std::set<std::string, std::less<>> seen;
  for (auto& [name, value] : params) {
    if (std::find(std::begin(kKnown), std::end(kKnown), name) == std::end(kKnown)) {
      SecureWipe(value.data(), value.size());  // ignored (RFC 6749 §3.2), never kept
      continue;
    }
    if (!seen.insert(name).second) {
      for (auto& p : params) {
        SecureWipe(p.second.data(), p.second.size());
      }
      return std::unexpected(BadRequest("parameter " + name + " is given more than once"));
    }
  }
  TokenExchangeRequest req;
  std::optional<std::string> grant_type;
  Status problem = OkStatus();
  for (auto& [name, value] : params) {
    if (std::find(std::begin(kKnown), std::end(kKnown), name) == std::end(kKnown)) {
      continue;
    }
    if (name == "subject_token") {
      req.subject_token = SecretValue(std::move(value));
      continue;
    }
    if (!problem) {
      continue;
    }
    if (name == "actor_token" || name == "actor_token_type") {
      problem = std::unexpected(
          BadRequest("delegation (actor_token) is not supported by this token endpoint"));
    } else if (text::HasControlChar(value) || value.size() > 2048) {
      problem = std::unexpected(BadRequest("parameter " + name + " is malformed"));
    } else if (name == "grant_type") {
      grant_type = std::move(value);
    } else if (name == "subject_token_type") {
      req.subject_token_type = std::move(value);
    } else if (name == "audience") {
      req.audience = std::move(value);
    } else if (name == "resource") {
      req.resource = std::move(value);
    } else if (name == "scope") {
      req.scope = std::move(value);
    } else if (name == "requested_token_type") {
      req.requested_token_type = std::move(value);
    }
  }
  for (auto& p : params) {
    SecureWipe(p.second.data(), p.second.size());
  }
  if (!problem) {
    return std::unexpected(problem.error());
  }
  if (!grant_type) {
    return std::unexpected(BadRequest("grant_type is required"));
  }
  if (*grant_type != kGrantTypeTokenExchange) {
    return std::unexpected(InvalidArgument(
        "unsupported_grant_type", "grant_type must be " + std::string(kGrantTypeTokenExchange)));
  }
  if (req.subject_token.empty()) {
    return std::unexpected(BadRequest("subject_token is required"));
  }
  if (req.subject_token_type.empty()) {
    return std::unexpected(BadRequest("subject_token_type is required"));
  }
  if (req.subject_token_type != kTokenTypeIdToken && req.subject_token_type != kTokenTypeJwt) {
    return std::unexpected(InvalidArgument(
        "unsupported_token_type", "subject_token_type must be " + std::string(kTokenTypeIdToken) +
                                      " or " + std::string(kTokenTypeJwt)));
  }
  if (req.audience.empty()) {
    return std::unexpected(
        BadRequest("audience is required: the trust policy name or the target resource"));
  }
  return req;
}

OAuthError ToOAuthError(const Error& e) {
  OAuthError out;
  out.description = e.message;
  const std::string_view reason = e.Reason();
  if (e.code == ErrorCode::kUnauthenticated) {
    // The subject token was refused: whatever the precise reason (kept for
    // the log), the answer is invalid_grant.
    out.error = "invalid_grant";
  }
  for (const ReasonRow& row : kReasons) {
    if (!out.error.empty()) {
      break;
    }
    if (row.reason == reason) {
      out.error = std::string(row.error);
      break;
    }
  }
  if (out.error.empty()) {
    switch (e.code) {
      case ErrorCode::kInvalidArgument:
      case ErrorCode::kPayloadTooLarge:
      case ErrorCode::kUnsupportedMediaType:
      case ErrorCode::kMethodNotAllowed:
        out.error = "invalid_request";
        break;
      case ErrorCode::kUnauthenticated:
        out.error = "invalid_grant";
        break;
      case ErrorCode::kPermissionDenied:
      case ErrorCode::kFailedPrecondition:
        out.error = "unauthorized_client";
        break;
      case ErrorCode::kNotFound:
        out.error = "invalid_target";
        break;
      case ErrorCode::kUnavailable:
      case ErrorCode::kDeadlineExceeded:
      case ErrorCode::kResourceExhausted:
        out.error = "temporarily_unavailable";
        break;
      case ErrorCode::kAlreadyExists:
      case ErrorCode::kInternal:
        out.error = "server_error";
        break;
    }
  }
  if (out.error == "server_error") {
    out.status = 500;
    out.description = "internal error";  // details are in the broker's log
  } else if (e.code == ErrorCode::kResourceExhausted && reason == "rate_limited") {
    out.status = 429;  // with Retry-After; RFC 6749 has no code of its own for it
    out.code = "rate_limited";
  } else if (out.error == "temporarily_unavailable") {
    out.status = 503;
  } else {
    out.status = 400;
  }
  return out;
}

nlohmann::json OAuthErrorBody(const OAuthError& e) {
  nlohmann::json body{{"error", e.error}, {"error_description", e.description}};
  if (!e.code.empty()) {
    body["code"] = e.code;
  }
  return body;
}

}  // namespace jitbroker::oidc
