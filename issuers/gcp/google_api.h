// GoogleApi: the Google calls of the gcp issuer (docs/gcp.md) over the
// HttpClient seam, JSON in and out:
//   - IAM Credentials generateAccessToken (a service account's token),
//   - Google STS token exchange: a Credential Access Boundary on a token,
//     and the broker's own federated token from a JWT it signs (workload
//     identity federation),
//   - the OAuth token endpoint's JWT-bearer grant (a service-account key),
//   - the metadata server's token (the broker running on Google Cloud).
//
// 429 and 500/502/503/504 answers and transport failures are retried with
// exponential backoff and full jitter within an overall deadline per call
// (`call_deadline`); nothing else is retried.
//
// Errors (client-safe: Google's HTTP status, its `status` (e.g.
// PERMISSION_DENIED) or OAuth `error`, and its sanitised message; never a
// token):
//   kInvalidArgument "gcp_invalid_request" (400 INVALID_ARGUMENT and other
//     400s about the request),
//   kPermissionDenied "gcp_permission_denied" (403: the broker lacks Token
//     Creator on the service account, or the account is disabled),
//   kNotFound "gcp_not_found" (404: no such service account),
//   kUnavailable "gcp_auth_failed" (401, or an OAuth/STS refusal of the
//     broker's own identity: invalid_grant, invalid_client, …),
//   kResourceExhausted "gcp_throttled" (429 after the retries),
//   kUnavailable "gcp_unavailable" (transport, 5xx after the retries),
//   kUnavailable "gcp_bad_response" (an answer that does not parse).
//
// Thread-safety: all methods are thread-safe.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <mutex>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "jitbroker/clock.h"
#include "jitbroker/http_client.h"
#include "jitbroker/metric_family.h"
#include "jitbroker/result.h"
#include "jitbroker/secret.h"

namespace jitbroker::issuers::gcp {

struct GoogleApiOptions {
  // Base URLs without a trailing '/'.
  std::string iamcredentials = "https://iamcredentials.googleapis.com";
  std::string sts = "https://sts.googleapis.com";
  std::string oauth2 = "https://oauth2.googleapis.com";
  std::string metadata = "http://metadata.google.internal";
  std::string user_agent = "jitbroker-gcp/0.1";
  std::chrono::milliseconds timeout{10000};  // per attempt
  std::chrono::milliseconds call_deadline{15000};
  std::chrono::milliseconds connect_timeout{5000};
  int max_attempts = 3;  // including the first
  std::chrono::milliseconds backoff_base{200};
  std::function<void(std::chrono::milliseconds)> sleep;  // tests replace it
};

struct GoogleToken {
  SecretValue token;
  TimePoint expires_at;
};

class GoogleApi {
 public:
  GoogleApi(GoogleApiOptions options, HttpClient* http, const Clock* clock,
            std::string issuer_name);

  // generateAccessToken for `service_account` with the broker's `bearer`.
  [[nodiscard]] Result<GoogleToken> GenerateAccessToken(const SecretValue& bearer,
                                                        const std::string& service_account,
                                                        const std::vector<std::string>& scopes,
                                                        int64_t lifetime_seconds);
  // STS: `subject` (an access token) downscoped by `options_json` (the
  // Credential Access Boundary). Without expires_in, `subject_expires_at`.
  [[nodiscard]] Result<GoogleToken> DownscopeToken(const SecretValue& subject,
                                                   const std::string& options_json,
                                                   TimePoint subject_expires_at);
  // STS: a federated token for the JWT `subject_jwt` at the workload
  // identity pool provider `audience` (//iam.googleapis.com/…).
  [[nodiscard]] Result<GoogleToken> ExchangeJwt(const std::string& audience,
                                                const SecretValue& subject_jwt);
  // OAuth: the JWT-bearer grant of a service-account key.
  [[nodiscard]] Result<GoogleToken> JwtBearer(const SecretValue& assertion);
  // The metadata server's token for the instance's default service account.
  [[nodiscard]] Result<GoogleToken> MetadataToken();

  // The OAuth token endpoint URL (the aud of a JWT-bearer assertion).
  std::string OAuthTokenUrl() const { return options_.oauth2 + "/token"; }

  // Samples labelled issuer, api (iamcredentials, sts, oauth2, metadata),
  // outcome.
  void CollectMetrics(MetricFamily& calls) const;

 private:
  enum class Kind { kApi, kIdentity };
  [[nodiscard]] Result<nlohmann::json> Call(std::string_view api, std::string_view label,
                                            HttpRequest req, Kind kind);
  [[nodiscard]] Result<GoogleToken> OAuthAnswer(const nlohmann::json& body, std::string_view label,
                                                std::optional<TimePoint> fallback_expiry);
  void Count(std::string_view api, std::string_view outcome);

  const GoogleApiOptions options_;
  HttpClient* http_;
  const Clock* clock_;
  const std::string issuer_name_;
  mutable std::mutex mu_;
  std::map<std::pair<std::string, std::string>, uint64_t> calls_;  // guarded by mu_
};

// Google's error answer: {"error": {"code", "message", "status"}} (JSON
// APIs) or {"error": "...", "error_description": "..."} (OAuth, STS), as
// "STATUS: message" in printable ASCII, at most ~300 characters; "" when
// the body is neither.
std::string GoogleErrorText(std::string_view body);

// Form encoding (application/x-www-form-urlencoded).
std::string FormEncode(const std::vector<std::pair<std::string, std::string>>& params);

}  // namespace jitbroker::issuers::gcp
