// GitHubApi: the typed GitHub REST calls the github_app issuer makes
// (docs/concepts.md "GitHub App tokens"), over the net::HttpClient seam.
//
// Every request carries Accept: application/vnd.github+json, the pinned
// X-GitHub-Api-Version and the configured User-Agent. JWT calls authenticate
// as the App (AppJwt); token calls with an installation token. Transient
// failures are retried with exponential backoff and jitter: 5xx answers,
// primary and secondary rate limits (403/429 with Retry-After, or
// x-ratelimit-remaining: 0 until x-ratelimit-reset) when the wait is at most
// `max_retry_after`, and, for idempotent calls, transport failures. A 401 on
// a JWT call whose Date header shows clock skew re-signs with the learnt
// offset and retries once. Every call has an overall deadline
// (`call_deadline`): attempts and waits together; each attempt's timeouts
// are clamped to what is left, and a backoff or rate-limit wait that does not
// fit fails the call at once (retryable). Rate-limit headers are kept per
// resource for metrics.
//
// Errors (client-safe messages; GitHub's own message text is included,
// sanitised, because it says what to change):
//   kUnavailable "github_unavailable" (transport, 5xx after retries),
//   kUnavailable "github_auth_failed" (401 on a JWT call: key, App id or clock),
//   kResourceExhausted "github_rate_limited" (with retry_after),
//   kPermissionDenied "github_validation_failed" (422),
//   kPermissionDenied "github_forbidden" (403 other than a rate limit),
//   kFailedPrecondition "github_app_not_installed" / "github_installation_not_found" (404),
//   kUnavailable "github_bad_response" (unexpected status or body).
// Tokens never appear in errors or logs.
//
// Thread-safety: all methods are thread-safe.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "issuers/github_app/app_jwt.h"
#include "jitbroker/clock.h"
#include "jitbroker/http_client.h"
#include "jitbroker/issuer.h"
#include "jitbroker/result.h"
#include "jitbroker/secret.h"

namespace jitbroker::issuers::github_app {

struct ApiOptions {
  std::string base_url = "https://api.github.com";  // no trailing slash
  std::string api_version = "2022-11-28";
  std::string user_agent = "jitbroker-github-app/0.1";
  std::chrono::milliseconds timeout{10000};  // per attempt
  // Whole call: every attempt and every wait between attempts (backoff,
  // Retry-After). A wait that does not fit fails the call at once
  // (retryable); each attempt's timeout is clamped to what is left.
  std::chrono::milliseconds call_deadline{15000};
  std::chrono::milliseconds connect_timeout{5000};
  int max_attempts = 3;                         // including the first
  std::chrono::milliseconds backoff_base{250};  // doubled per retry, with jitter
  std::chrono::seconds max_retry_after{10};     // longer waits fail fast
  std::string token_format;                     // "", "stateless" or "legacy"
  // Waits between attempts (tests replace it).
  std::function<void(std::chrono::milliseconds)> sleep;
};

// One entry of a minted token's `repositories` (fields absent or unreadable
// are 0 / empty).
struct TokenRepository {
  int64_t id = 0;
  std::string name;
  std::string full_name;  // "owner/repo"
};

struct CreatedToken {
  SecretValue token;
  TimePoint expires_at;
  nlohmann::json permissions = nlohmann::json::object();
  bool has_permissions = false;      // `permissions` was an object
  std::string repository_selection;  // "all" | "selected" | "" (absent)
  bool has_repositories = false;     // `repositories` was an array
  std::vector<TokenRepository> repositories;
};

// What DELETE /installation/token answered.
enum class RevokeAnswer {
  kRevoked,       // 204
  kUnauthorized,  // 401: revoked or expired already, or not yet usable (new)
  kNotFound,      // 404
};

struct TokenRequest {
  std::vector<std::string> repositories;  // names, no owner
  std::vector<int64_t> repository_ids;
  nlohmann::json permissions = nlohmann::json::object();
};

struct CollaboratorPermission {
  std::string permission;  // admin|write|read|none
  std::string role_name;   // admin|maintain|write|triage|read|custom
};

class GitHubApi {
 public:
  GitHubApi(ApiOptions options, HttpClient* http, AppJwt* jwt, const Clock* clock,
            std::string issuer_name);

  // GET /repos/{owner}/{repo}/installation (JWT).
  [[nodiscard]] Result<int64_t> GetRepoInstallation(std::string_view owner, std::string_view repo);
  // POST /app/installations/{id}/access_tokens (JWT).
  [[nodiscard]] Result<CreatedToken> CreateInstallationToken(int64_t installation_id,
                                                             const TokenRequest& request);
  // DELETE /installation/token (the token itself). 204, 401 and 404 are
  // answers (RevokeAnswer); what a 401 means is the caller's call (GitHub
  // also answers 401 for a token minted a few seconds ago). `budget`
  // overrides call_deadline.
  [[nodiscard]] Result<RevokeAnswer> RevokeInstallationToken(
      const SecretValue& token, std::optional<std::chrono::milliseconds> budget = std::nullopt);
  // GET /app/installations/{id} (JWT): the installation's account login.
  [[nodiscard]] Result<std::string> GetInstallationAccount(int64_t installation_id);
  // GET /repos/{owner}/{repo}/collaborators/{username}/permission (an
  // installation token with metadata: read). nullopt on 404 (not a user or
  // not visible).
  [[nodiscard]] Result<std::optional<CollaboratorPermission>> GetCollaboratorPermission(
      const SecretValue& token, std::string_view owner, std::string_view repo,
      std::string_view username);

  void CollectMetrics(std::vector<MetricFamily>& out) const;

  // Validation of path segments (owner, repository, username) so that
  // request paths can never be altered by what a grant names.
  static bool IsValidOwner(std::string_view s);
  static bool IsValidRepo(std::string_view s);

 private:
  enum class Auth { kAppJwt, kToken };
  struct Call {
    std::string endpoint;  // metric label, e.g. "create_installation_token"
    std::string method;
    std::string path;
    std::string body;
    Auth auth = Auth::kAppJwt;
    const SecretValue* token = nullptr;
    bool idempotent = true;                           // transport failures may be retried
    std::optional<std::chrono::milliseconds> budget;  // else options_.call_deadline
  };
  static Call MakeCall(std::string endpoint, std::string method, std::string path);
  [[nodiscard]] Result<HttpResponse> Send(const Call& call);
  void RecordRateLimit(const HttpHeaders& headers);
  void CountRequest(const std::string& endpoint, const std::string& status);
  void CountRetry(const std::string& reason);
  void Sleep(std::chrono::milliseconds d) const;
  std::chrono::milliseconds Backoff(int attempt) const;
  // An Error for an unexpected answer, with GitHub's message sanitised.
  Error Unexpected(const Call& call, const HttpResponse& r) const;

  const ApiOptions options_;
  HttpClient* http_;
  AppJwt* jwt_;
  const Clock* clock_;
  const std::string issuer_name_;

  struct RateLimit {
    double limit = 0, remaining = 0, used = 0, reset = 0;
  };
  mutable std::mutex metrics_mu_;
  std::map<std::string, RateLimit> rate_limits_;                      // by resource
  std::map<std::pair<std::string, std::string>, uint64_t> requests_;  // (endpoint, status)
  std::map<std::string, uint64_t> retries_;                           // by reason
};

// GitHub's "message" from an error body, printable ASCII only, at most 300 chars.
std::string SanitizedMessage(std::string_view body);

}  // namespace jitbroker::issuers::github_app
