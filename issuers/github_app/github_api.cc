#include "issuers/github_app/github_api.h"

#include <time.h>

#include <algorithm>
#include <charconv>
#include <cstdlib>
#include <random>
#include <thread>

#include "broker/common/json_util.h"
#include "broker/common/log.h"
#include "broker/common/time_util.h"

namespace jitbroker::issuers::github_app {

namespace {

constexpr size_t kMaxTokenBytes = 16384;

std::optional<int64_t> ParseInt(std::string_view s) {
  int64_t v = 0;
  auto [ptr, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (s.empty() || ec != std::errc() || ptr != s.data() + s.size()) {
    return std::nullopt;
  }
  return v;
}

std::optional<double> HeaderNumber(const HttpHeaders& h, std::string_view name) {
  auto v = h.Get(name);
  if (!v) {
    return std::nullopt;
  }
  auto i = ParseInt(*v);
  if (!i) {
    return std::nullopt;
  }
  return static_cast<double>(*i);
}

// Label values we emit come from config names and fixed strings; a resource
// name from a response header is reduced to [a-z0-9_].
std::string SafeLabel(std::string_view s) {
  std::string out;
  for (char c : s.substr(0, 64)) {
    out.push_back((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' ? c : '_');
  }
  return out;
}

bool IsBearerSafe(std::string_view s) {
  if (s.empty() || s.size() > kMaxTokenBytes) {
    return false;
  }
  for (char c : s) {
    const auto u = static_cast<unsigned char>(c);
    if (u <= 0x20 || u >= 0x7f) {
      return false;
    }
  }
  return true;
}

// GitHub's answers through the one strict parser: a body with a duplicate
// member ("token", "permissions") is malformed, not read as its last copy.
nlohmann::json ParseBody(const std::string& body) {
  jitbroker::json::ParseOptions options;
  options.what = "GitHub's response";
  Result<nlohmann::json> j = jitbroker::json::ParseStrict(body, options);
  return j ? std::move(*j) : nlohmann::json();
}

}  // namespace

std::string SanitizedMessage(std::string_view body) {
  std::string msg;
  try {
    nlohmann::json j = ParseBody(std::string(body));
    if (j.is_object() && j.contains("message") && j["message"].is_string()) {
      msg = j["message"].get<std::string>();
    }
  } catch (...) {
    msg.clear();
  }
  std::string out;
  for (char c : msg) {
    if (out.size() >= 300) {
      out += "...";
      break;
    }
    const auto u = static_cast<unsigned char>(c);
    out.push_back(u >= 0x20 && u < 0x7f ? c : ' ');
  }
  return out;
}

GitHubApi::Call GitHubApi::MakeCall(std::string endpoint, std::string method, std::string path) {
  Call call;
  call.endpoint = std::move(endpoint);
  call.method = std::move(method);
  call.path = std::move(path);
  return call;
}

GitHubApi::GitHubApi(ApiOptions options, HttpClient* http, AppJwt* jwt, const Clock* clock,
                     std::string issuer_name)
    : options_(std::move(options)),
      http_(http),
      jwt_(jwt),
      clock_(clock),
      issuer_name_(std::move(issuer_name)) {}

bool GitHubApi::IsValidOwner(std::string_view s) {
  // Logins and organisation names: alphanumerics and hyphens; enterprise
  // managed users add "_shortcode".
  if (s.empty() || s.size() > 100 || s.front() == '-') {
    return false;
  }
  return std::all_of(s.begin(), s.end(), [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' ||
           c == '_';
  });
}

bool GitHubApi::IsValidRepo(std::string_view s) {
  if (s.empty() || s.size() > 100 || s == "." || s == "..") {
    return false;
  }
  return std::all_of(s.begin(), s.end(), [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' ||
           c == '_' || c == '.';
  });
}

void GitHubApi::Sleep(std::chrono::milliseconds d) const {
  if (d.count() <= 0) {
    return;
  }
  if (options_.sleep) {
    options_.sleep(d);
  } else {
    std::this_thread::sleep_for(d);
  }
}

std::chrono::milliseconds GitHubApi::Backoff(int attempt) const {
  const int64_t base = options_.backoff_base.count();
  const int64_t cap = 5000;
  const int64_t d = std::min<int64_t>(cap, base << std::min(attempt - 1, 10));
  static thread_local std::mt19937_64 rng(std::random_device{}());
  std::uniform_int_distribution<int64_t> jitter(d / 2, std::max<int64_t>(d / 2, d));
  return std::chrono::milliseconds(jitter(rng));
}

void GitHubApi::RecordRateLimit(const HttpHeaders& h) {
  auto limit = HeaderNumber(h, "x-ratelimit-limit");
  auto remaining = HeaderNumber(h, "x-ratelimit-remaining");
  if (!limit || !remaining) {
    return;
  }
  std::string resource = SafeLabel(h.Get("x-ratelimit-resource").value_or("core"));
  std::lock_guard lock(metrics_mu_);
  RateLimit& rl = rate_limits_[resource];
  rl.limit = *limit;
  rl.remaining = *remaining;
  rl.used = HeaderNumber(h, "x-ratelimit-used").value_or(*limit - *remaining);
  rl.reset = HeaderNumber(h, "x-ratelimit-reset").value_or(0);
}

void GitHubApi::CountRequest(const std::string& endpoint, const std::string& status) {
  std::lock_guard lock(metrics_mu_);
  ++requests_[{endpoint, status}];
}

void GitHubApi::CountRetry(const std::string& reason) {
  std::lock_guard lock(metrics_mu_);
  ++retries_[reason];
}

Error GitHubApi::Unexpected(const Call& call, const HttpResponse& r) const {
  const std::string msg = SanitizedMessage(r.body);
  return Unavailable("github_bad_response",
                     "GitHub answered " + std::to_string(r.status) + " to " + call.endpoint +
                         (msg.empty() ? std::string() : ": " + msg),
                     "issuer=" + issuer_name_);
}

Result<HttpResponse> GitHubApi::Send(const Call& call) {
  using std::chrono::milliseconds;
  // The call's whole budget: attempts (measured) and waits between them
  // (counted as requested, so that a test's sleep hook is accounted too).
  const milliseconds budget = call.budget.value_or(options_.call_deadline);
  milliseconds used{0};
  auto remaining = [&] { return budget - used; };
  auto out_of_time = [&](const std::string& last) {
    Error out = Unavailable("github_unavailable",
                            "GitHub did not complete " + call.endpoint + " within " +
                                std::to_string(budget.count()) + " ms (call_deadline_ms)" +
                                (last.empty() ? std::string() : ": " + last),
                            "issuer=" + issuer_name_);
    out.retryable = true;
    return out;
  };
  // Waits `d` when it fits in the budget (leaving room for another attempt).
  auto wait = [&](milliseconds d) {
    if (d >= remaining()) {
      return false;
    }
    Sleep(d);
    used += std::max(d, milliseconds(0));
    return true;
  };
  bool skew_retried = false;
  for (int attempt = 1;; ++attempt) {
    if (remaining() <= milliseconds(0)) {
      CountRetry("deadline");
      return std::unexpected(out_of_time(""));
    }
    HttpRequest req;
    req.method = call.method;
    req.url = options_.base_url + call.path;
    req.timeout = std::max(milliseconds(1), std::min(options_.timeout, remaining()));
    req.connect_timeout =
        std::max(milliseconds(1), std::min(options_.connect_timeout, remaining()));
    req.headers = {{"Accept", "application/vnd.github+json"},
                   {"X-GitHub-Api-Version", options_.api_version},
                   {"User-Agent", options_.user_agent}};
    if (call.method == "POST") {
      req.headers.emplace_back("Content-Type", "application/json");
      req.body = call.body;
    }
    if (call.endpoint == "create_installation_token" && !options_.token_format.empty()) {
      req.headers.emplace_back("X-GitHub-Stateless-S2S-Token",
                               options_.token_format == "stateless" ? "enabled" : "disabled");
    }
    if (call.auth == Auth::kAppJwt) {
      JITBROKER_ASSIGN_OR_RETURN(req.bearer, jwt_->Get());
    } else {
      if (call.token == nullptr || !IsBearerSafe(call.token->Reveal())) {
        return std::unexpected(
            InvalidArgument("invalid_credential", "installation token is empty or malformed"));
      }
      req.bearer = call.token->Clone();
    }

    const auto started = std::chrono::steady_clock::now();
    auto sent = http_->Send(req);
    used += std::chrono::duration_cast<milliseconds>(std::chrono::steady_clock::now() - started);
    const bool last = attempt >= options_.max_attempts;
    if (!sent) {
      CountRequest(call.endpoint, "error");
      const Error& e = sent.error();
      const std::string what = "cannot reach GitHub (" + e.message + ")";
      if (e.code == ErrorCode::kUnavailable && call.idempotent && !last) {
        if (!wait(Backoff(attempt))) {
          CountRetry("deadline");
          Error out = out_of_time(what);
          out.detail = e.detail;
          return std::unexpected(std::move(out));
        }
        CountRetry("transport");
        continue;
      }
      Error out = remaining() <= milliseconds(0) ? out_of_time(what)
                                                 : Unavailable("github_unavailable", what);
      out.detail = e.detail;
      out.retryable = true;
      return std::unexpected(std::move(out));
    }
    HttpResponse& r = *sent;
    CountRequest(call.endpoint, std::to_string(r.status));
    RecordRateLimit(r.headers);

    if (r.status >= 500 && r.status <= 599) {
      const std::string what = "GitHub answered " + std::to_string(r.status) + " to " +
                               call.endpoint + " " + std::to_string(attempt) + " times";
      if (!last) {
        if (wait(Backoff(attempt))) {
          CountRetry("server_error");
          continue;
        }
        CountRetry("deadline");
        return std::unexpected(out_of_time(what));
      }
      Error out = Unavailable("github_unavailable", what, "issuer=" + issuer_name_);
      out.retryable = true;
      return std::unexpected(std::move(out));
    }

    const auto retry_after = r.headers.Get("retry-after");
    const auto remaining_header = r.headers.Get("x-ratelimit-remaining");
    const bool rate_limited =
        r.status == 429 ||
        (r.status == 403 && (retry_after || (remaining_header && *remaining_header == "0") ||
                             SanitizedMessage(r.body).find("rate limit") != std::string::npos));
    if (rate_limited) {
      // docs/concepts.md "GitHub App tokens": Retry-After; else the reset time when the primary
      // limit is exhausted; else at least a minute.
      int64_t wait_s = 60;
      if (retry_after) {
        wait_s = std::max<int64_t>(0, ParseInt(*retry_after).value_or(60));
      } else if (remaining_header && *remaining_header == "0") {
        if (auto reset = HeaderNumber(r.headers, "x-ratelimit-reset")) {
          wait_s = std::max<int64_t>(1, static_cast<int64_t>(*reset) -
                                            ToUnixSeconds(clock_->Now()) - jwt_->clock_offset());
        }
      }
      // A wait beyond max_retry_after, or beyond what is left of the call's
      // budget, fails fast: the caller retries later.
      if (!last && std::chrono::seconds(wait_s) <= options_.max_retry_after &&
          wait(std::max<milliseconds>(std::chrono::seconds(wait_s), Backoff(attempt)))) {
        CountRetry("rate_limited");
        continue;
      }
      Error out = ResourceExhausted("github_rate_limited", "GitHub rate limit reached for " +
                                                               call.endpoint + "; retry after " +
                                                               std::to_string(wait_s) + " s");
      out.retryable = true;
      out.retry_after = std::chrono::seconds(std::max<int64_t>(1, wait_s));
      return std::unexpected(std::move(out));
    }

    if (r.status == 401 && call.auth == Auth::kAppJwt && !skew_retried) {
      // Clock skew: learn GitHub's time from its Date header, re-sign, retry once.
      if (auto date = r.headers.Get("date")) {
        if (auto server_now = ParseHttpDate(*date)) {
          const int64_t skew = ToUnixSeconds(*server_now) - ToUnixSeconds(clock_->Now());
          if (std::abs(skew - jwt_->clock_offset()) >= 5) {
            skew_retried = true;
            jwt_->SetClockOffset(skew);
            jwt_->Invalidate();
            CountRetry("clock_skew");
            log::Get("issuer.github_app")
                ->warn("event=github_clock_skew issuer={} offset_s={}", issuer_name_, skew);
            continue;
          }
        }
      }
    }
    return std::move(r);
  }
}

Result<int64_t> GitHubApi::GetRepoInstallation(std::string_view owner, std::string_view repo) {
  if (!IsValidOwner(owner) || !IsValidRepo(repo)) {
    return std::unexpected(InvalidArgument("invalid_resource", "invalid GitHub repository name"));
  }
  Call call = MakeCall("get_repo_installation", "GET",
                       "/repos/" + std::string(owner) + "/" + std::string(repo) + "/installation");
  JITBROKER_ASSIGN_OR_RETURN(HttpResponse r, Send(call));
  const std::string full = std::string(owner) + "/" + std::string(repo);
  if (r.status == 200) {
    nlohmann::json j = ParseBody(r.body);
    if (j.is_object() && j.contains("id") && j["id"].is_number_integer() &&
        j["id"].get<int64_t>() > 0) {
      return j["id"].get<int64_t>();
    }
    return std::unexpected(Unexpected(call, r));
  }
  if (r.status == 404) {
    return std::unexpected(FailedPrecondition("github_app_not_installed",
                                              "the GitHub App is not installed on " + full));
  }
  if (r.status == 401) {
    return std::unexpected(Unavailable("github_auth_failed",
                                       "GitHub rejected the App's credentials (check the App id "
                                       "or client id, the private key and the clock)",
                                       SanitizedMessage(r.body)));
  }
  return std::unexpected(Unexpected(call, r));
}

Result<CreatedToken> GitHubApi::CreateInstallationToken(int64_t installation_id,
                                                        const TokenRequest& request) {
  nlohmann::json body = nlohmann::json::object();
  if (!request.repositories.empty()) {
    body["repositories"] = request.repositories;
  }
  if (!request.repository_ids.empty()) {
    body["repository_ids"] = request.repository_ids;
  }
  body["permissions"] = request.permissions;
  Call call = MakeCall("create_installation_token", "POST",
                       "/app/installations/" + std::to_string(installation_id) + "/access_tokens");
  call.body = body.dump();
  call.idempotent = false;
  JITBROKER_ASSIGN_OR_RETURN(HttpResponse r, Send(call));
  if (r.status == 201) {
    try {
      nlohmann::json j = ParseBody(r.body);
      if (!j.is_object() || !j.contains("token") || !j["token"].is_string() ||
          !j.contains("expires_at") || !j["expires_at"].is_string()) {
        return std::unexpected(Unexpected(call, r));
      }
      CreatedToken out;
      {
        // The body held the token: wipe our copies of it.
        std::string& text = j["token"].get_ref<std::string&>();
        out.token = SecretValue(text);
        SecureWipe(text.data(), text.size());
        SecureWipe(r.body.data(), r.body.size());
      }
      if (!IsBearerSafe(out.token.Reveal())) {
        return std::unexpected(
            Unavailable("github_bad_response", "GitHub returned a malformed installation token"));
      }
      auto exp = ParseRfc3339(j["expires_at"].get<std::string>());
      if (!exp) {
        return std::unexpected(
            Unavailable("github_bad_response", "GitHub returned an unreadable expires_at"));
      }
      out.expires_at = *exp;
      if (j.contains("permissions") && j["permissions"].is_object()) {
        out.permissions = j["permissions"];
        out.has_permissions = true;
      }
      if (j.contains("repository_selection") && j["repository_selection"].is_string()) {
        out.repository_selection = j["repository_selection"].get<std::string>();
      }
      if (j.contains("repositories") && j["repositories"].is_array()) {
        out.has_repositories = true;
        for (const auto& repo : j["repositories"]) {
          TokenRepository tr;
          if (repo.is_object()) {
            if (repo.contains("id") && repo["id"].is_number_integer()) {
              tr.id = repo["id"].get<int64_t>();
            }
            if (repo.contains("name") && repo["name"].is_string()) {
              tr.name = repo["name"].get<std::string>();
            }
            if (repo.contains("full_name") && repo["full_name"].is_string()) {
              tr.full_name = repo["full_name"].get<std::string>();
            }
          }
          out.repositories.push_back(std::move(tr));  // unreadable entries stay (empty)
        }
      }
      return out;
    } catch (const std::exception&) {
      SecureWipe(r.body.data(), r.body.size());
      return std::unexpected(
          Unavailable("github_bad_response", "GitHub's token response could not be read"));
    }
  }
  const std::string msg = SanitizedMessage(r.body);
  switch (r.status) {
    case 401:
      return std::unexpected(Unavailable("github_auth_failed",
                                         "GitHub rejected the App's credentials (check the App "
                                         "id or client id, the private key and the clock)",
                                         msg));
    case 403:
      return std::unexpected(
          PermissionDenied("github_forbidden",
                           "GitHub refused to mint the token" + (msg.empty() ? "" : ": " + msg)));
    case 404:
      return std::unexpected(FailedPrecondition(
          "github_installation_not_found",
          "GitHub App installation " + std::to_string(installation_id) + " was not found"));
    case 422:
      // The request asked for more than the installation has (or a
      // repository it cannot reach): a policy problem, not retryable.
      return std::unexpected(
          PermissionDenied("github_validation_failed",
                           "GitHub refused the token request" + (msg.empty() ? "" : ": " + msg)));
    default:
      return std::unexpected(Unexpected(call, r));
  }
}

Result<RevokeAnswer> GitHubApi::RevokeInstallationToken(
    const SecretValue& token, std::optional<std::chrono::milliseconds> budget) {
  Call call = MakeCall("revoke_installation_token", "DELETE", "/installation/token");
  call.auth = Auth::kToken;
  call.token = &token;
  call.budget = budget;
  JITBROKER_ASSIGN_OR_RETURN(HttpResponse r, Send(call));
  if (r.status == 204 || r.status == 200) {
    return RevokeAnswer::kRevoked;
  }
  if (r.status == 401) {
    // Revoked, expired, or (for a few seconds after minting) not yet usable:
    // the caller tells these apart.
    return RevokeAnswer::kUnauthorized;
  }
  if (r.status == 404) {
    return RevokeAnswer::kNotFound;
  }
  return std::unexpected(Unexpected(call, r));
}

Result<std::string> GitHubApi::GetInstallationAccount(int64_t installation_id) {
  Call call =
      MakeCall("get_installation", "GET", "/app/installations/" + std::to_string(installation_id));
  JITBROKER_ASSIGN_OR_RETURN(HttpResponse r, Send(call));
  if (r.status == 200) {
    nlohmann::json j = ParseBody(r.body);
    if (j.is_object() && j.contains("account") && j["account"].is_object() &&
        j["account"].contains("login") && j["account"]["login"].is_string() &&
        IsValidOwner(j["account"]["login"].get<std::string>())) {
      return j["account"]["login"].get<std::string>();
    }
    return std::unexpected(Unexpected(call, r));
  }
  if (r.status == 404) {
    return std::unexpected(FailedPrecondition(
        "github_installation_not_found",
        "GitHub App installation " + std::to_string(installation_id) + " was not found"));
  }
  if (r.status == 401) {
    return std::unexpected(Unavailable("github_auth_failed",
                                       "GitHub rejected the App's credentials (check the App id "
                                       "or client id, the private key and the clock)",
                                       SanitizedMessage(r.body)));
  }
  return std::unexpected(Unexpected(call, r));
}

Result<std::optional<CollaboratorPermission>> GitHubApi::GetCollaboratorPermission(
    const SecretValue& token, std::string_view owner, std::string_view repo,
    std::string_view username) {
  if (!IsValidOwner(owner) || !IsValidRepo(repo) || !IsValidOwner(username)) {
    return std::unexpected(
        InvalidArgument("invalid_value", "invalid GitHub repository or user name"));
  }
  Call call = MakeCall("get_collaborator_permission", "GET",
                       "/repos/" + std::string(owner) + "/" + std::string(repo) +
                           "/collaborators/" + std::string(username) + "/permission");
  call.auth = Auth::kToken;
  call.token = &token;
  JITBROKER_ASSIGN_OR_RETURN(HttpResponse r, Send(call));
  if (r.status == 200) {
    nlohmann::json j = ParseBody(r.body);
    if (!j.is_object() || !j.contains("permission") || !j["permission"].is_string()) {
      return std::unexpected(Unexpected(call, r));
    }
    CollaboratorPermission out;
    out.permission = j["permission"].get<std::string>();
    if (j.contains("role_name") && j["role_name"].is_string()) {
      out.role_name = j["role_name"].get<std::string>();
    }
    return std::optional<CollaboratorPermission>(std::move(out));
  }
  if (r.status == 404) {
    return std::optional<CollaboratorPermission>();
  }
  if (r.status == 401) {
    return std::unexpected(Unavailable("github_auth_failed",
                                       "GitHub rejected the installation token used for the "
                                       "permission check",
                                       SanitizedMessage(r.body)));
  }
  if (r.status == 403) {
    return std::unexpected(Unavailable(
        "github_forbidden",
        "GitHub refused the collaborator permission check (the App needs metadata: read)",
        SanitizedMessage(r.body)));
  }
  return std::unexpected(Unexpected(call, r));
}

void GitHubApi::CollectMetrics(std::vector<MetricFamily>& out) const {
  const std::string issuer = "issuer=\"" + issuer_name_ + "\"";
  MetricFamily limit{"jitbroker_github_ratelimit_limit",
                     "gauge",
                     "GitHub x-ratelimit-limit of the last response, per resource",
                     {}};
  MetricFamily remaining{"jitbroker_github_ratelimit_remaining",
                         "gauge",
                         "GitHub x-ratelimit-remaining of the last response, per resource",
                         {}};
  MetricFamily used{"jitbroker_github_ratelimit_used",
                    "gauge",
                    "GitHub x-ratelimit-used of the last response, per resource",
                    {}};
  MetricFamily reset{"jitbroker_github_ratelimit_reset_timestamp_seconds",
                     "gauge",
                     "GitHub x-ratelimit-reset (Unix time) of the last response",
                     {}};
  MetricFamily requests{"jitbroker_github_requests_total",
                        "counter",
                        "GitHub API requests by endpoint and HTTP status (error = transport)",
                        {}};
  MetricFamily retries{
      "jitbroker_github_retries_total", "counter", "GitHub API retries by reason", {}};
  MetricFamily sigs{"jitbroker_github_app_jwt_signatures_total",
                    "counter",
                    "RSA signatures made for GitHub App JWTs",
                    {}};
  {
    std::lock_guard lock(metrics_mu_);
    for (const auto& [resource, rl] : rate_limits_) {
      const std::string labels = issuer + ",resource=\"" + resource + "\"";
      limit.samples.emplace_back(labels, rl.limit);
      remaining.samples.emplace_back(labels, rl.remaining);
      used.samples.emplace_back(labels, rl.used);
      reset.samples.emplace_back(labels, rl.reset);
    }
    for (const auto& [key, n] : requests_) {
      requests.samples.emplace_back(
          issuer + ",endpoint=\"" + key.first + "\",status=\"" + key.second + "\"",
          static_cast<double>(n));
    }
    for (const auto& [reason, n] : retries_) {
      retries.samples.emplace_back(issuer + ",reason=\"" + reason + "\"", static_cast<double>(n));
    }
  }
  sigs.samples.emplace_back(issuer, static_cast<double>(jwt_->signatures()));
  for (auto* f : {&limit, &remaining, &used, &reset, &requests, &retries, &sigs}) {
    if (!f->samples.empty()) {
      out.push_back(std::move(*f));
    }
  }
}

}  // namespace jitbroker::issuers::github_app
