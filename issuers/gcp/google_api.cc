#include "issuers/gcp/google_api.h"

#include <algorithm>

#include "broker/common/backoff.h"
#include "broker/common/text.h"
#include "broker/common/time_util.h"
#include "broker/net/url.h"

namespace jitbroker::issuers::gcp {

namespace {

using std::chrono::milliseconds;

constexpr std::string_view kTokenExchange = "urn:ietf:params:oauth:grant-type:token-exchange";
constexpr std::string_view kAccessTokenType = "urn:ietf:params:oauth:token-type:access_token";
constexpr std::string_view kJwtTokenType = "urn:ietf:params:oauth:token-type:jwt";

bool Retryable(int status) {
  return status == 429 || status == 500 || status == 502 || status == 503 || status == 504;
}

}  // namespace

std::string FormEncode(const std::vector<std::pair<std::string, std::string>>& params) {
  std::string out;
  for (const auto& [k, v] : params) {
    if (!out.empty()) {
      out += '&';
    }
    out += net::PercentEncode(k, /*form=*/true);
    out += '=';
    out += net::PercentEncode(v, /*form=*/true);
  }
  return out;
}

std::string GoogleErrorText(std::string_view body) {
  const auto doc = nlohmann::json::parse(body, nullptr, /*allow_exceptions=*/false);
  if (!doc.is_object()) {
    return "";
  }
  const auto err = doc.find("error");
  if (err == doc.end()) {
    return "";
  }
  // Read only what is a string: json::value throws on another type.
  auto text = [](const nlohmann::json& obj, const char* key) {
    const auto it = obj.find(key);
    return it != obj.end() && it->is_string() ? it->get<std::string>() : std::string();
  };
  if (err->is_object()) {
    const std::string status = text(*err, "status");
    const std::string message = text(*err, "message");
    return text::Printable(status.empty() ? "(no status)" : status, 64) +
           (message.empty() ? "" : ": " + text::Printable(message, 300));
  }
  if (err->is_string()) {
    const std::string desc = text(doc, "error_description");
    return text::Printable(err->get<std::string>(), 64) +
           (desc.empty() ? "" : ": " + text::Printable(desc, 300));
  }
  return "";
}

GoogleApi::GoogleApi(GoogleApiOptions options, HttpClient* http, const Clock* clock,
                     std::string issuer_name)
    : options_(std::move(options)),
      http_(http),
      clock_(clock),
      issuer_name_(std::move(issuer_name)) {}

void GoogleApi::Count(std::string_view api, std::string_view outcome) {
  std::lock_guard lock(mu_);
  ++calls_[{std::string(api), std::string(outcome)}];
}

void GoogleApi::CollectMetrics(MetricFamily& calls) const {
  std::lock_guard lock(mu_);
  for (const auto& [key, n] : calls_) {
    calls.samples.emplace_back(
        "issuer=\"" + issuer_name_ + "\",api=\"" + key.first + "\",outcome=\"" + key.second + "\"",
        static_cast<double>(n));
  }
}

Result<nlohmann::json> GoogleApi::Call(std::string_view api, std::string_view label,
                                       HttpRequest req, Kind kind) {
  req.headers.emplace_back("User-Agent", options_.user_agent);
  req.headers.emplace_back("Accept", "application/json");
  const auto deadline = std::chrono::steady_clock::now() + options_.call_deadline;
  auto wait = [&](int attempt) {
    return BackoffBefore(attempt, options_.backoff_base, deadline, options_.sleep);
  };
  for (int attempt = 1;; ++attempt) {
    const bool last = attempt >= options_.max_attempts;
    const auto left =
        std::chrono::duration_cast<milliseconds>(deadline - std::chrono::steady_clock::now());
    req.timeout = std::min(options_.timeout, std::max(left, milliseconds(1)));
    req.connect_timeout = std::min(options_.connect_timeout, req.timeout);
    auto sent = http_->Send(req);
    if (!sent) {
      if (!last && wait(attempt)) {
        Count(api, "retry_transport");
        continue;
      }
      Count(api, "unavailable");
      SecureWipe(req.body.data(), req.body.size());
      return std::unexpected(Unavailable("gcp_unavailable", "cannot reach " + std::string(label),
                                         sent.error().message));
    }
    const int status = sent->status;
    if (Retryable(status) && !last && wait(attempt)) {
      Count(api, status == 429 ? "retry_throttled" : "retry_5xx");
      continue;
    }
    SecureWipe(req.body.data(), req.body.size());
    if (status == 200) {
      auto doc = nlohmann::json::parse(sent->body, nullptr, /*allow_exceptions=*/false);
      SecureWipe(sent->body.data(), sent->body.size());
      if (!doc.is_object()) {
        Count(api, "bad_response");
        return std::unexpected(
            Unavailable("gcp_bad_response", std::string(label) + " answered something not JSON"));
      }
      Count(api, "ok");
      return doc;
    }
    const std::string text = GoogleErrorText(sent->body);
    const std::string what = std::string(label) + " answered " + std::to_string(status) +
                             (text.empty() ? "" : " " + text);
    if (status == 429) {
      Count(api, "throttled");
      return std::unexpected(ResourceExhausted("gcp_throttled", what));
    }
    if (status >= 500) {
      Count(api, "unavailable");
      return std::unexpected(Unavailable("gcp_unavailable", what));
    }
    if (status == 401 || kind == Kind::kIdentity) {
      Count(api, "auth_failed");
      return std::unexpected(
          Unavailable("gcp_auth_failed", "the broker's own Google identity was refused: " + what));
    }
    if (status == 403) {
      Count(api, "permission_denied");
      return std::unexpected(PermissionDenied(
          "gcp_permission_denied",
          what + " (the broker needs roles/iam.serviceAccountTokenCreator on the service "
                 "account, which must be enabled)"));
    }
    if (status == 404) {
      Count(api, "not_found");
      return std::unexpected(NotFound("gcp_not_found", what));
    }
    Count(api, "invalid_request");
    return std::unexpected(InvalidArgument("gcp_invalid_request", what));
  }
}

Result<GoogleToken> GoogleApi::OAuthAnswer(const nlohmann::json& body, std::string_view label,
                                           std::optional<TimePoint> fallback_expiry) {
  const auto token = body.find("access_token");
  const auto expires_in = body.find("expires_in");
  if (token == body.end() || !token->is_string() || token->get_ref<const std::string&>().empty() ||
      (expires_in != body.end() && !expires_in->is_number_integer()) ||
      (expires_in == body.end() && !fallback_expiry)) {
    return std::unexpected(Unavailable(
        "gcp_bad_response", std::string(label) + " answered without access_token and expires_in"));
  }
  GoogleToken out;
  out.token = SecretValue(token->get<std::string>());
  out.expires_at = expires_in != body.end()
                       ? clock_->Now() + std::chrono::seconds(expires_in->get<int64_t>())
                       : *fallback_expiry;
  if (fallback_expiry) {
    out.expires_at = std::min(out.expires_at, *fallback_expiry);
  }
  return out;
}

Result<GoogleToken> GoogleApi::GenerateAccessToken(const SecretValue& bearer,
                                                   const std::string& service_account,
                                                   const std::vector<std::string>& scopes,
                                                   int64_t lifetime_seconds) {
  HttpRequest req;
  req.method = "POST";
  // The "-" project is mandatory: the account's own project is inferred.
  req.url = options_.iamcredentials + "/v1/projects/-/serviceAccounts/" +
            net::PercentEncode(service_account) + ":generateAccessToken";
  req.bearer = bearer.Clone();
  req.headers = {{"Content-Type", "application/json; charset=utf-8"}};
  req.body = nlohmann::json{{"scope", scopes}, {"lifetime", std::to_string(lifetime_seconds) + "s"}}
                 .dump();
  JITBROKER_ASSIGN_OR_RETURN(nlohmann::json body, Call("iamcredentials", "Google IAM Credentials",
                                                       std::move(req), Kind::kApi));
  const auto token = body.find("accessToken");
  const auto expire = body.find("expireTime");
  if (token == body.end() || !token->is_string() || token->get_ref<const std::string&>().empty() ||
      expire == body.end() || !expire->is_string()) {
    return std::unexpected(Unavailable(
        "gcp_bad_response", "Google IAM Credentials answered without accessToken and expireTime"));
  }
  auto expires_at = ParseRfc3339(expire->get<std::string>());
  if (!expires_at) {
    return std::unexpected(
        Unavailable("gcp_bad_response", "Google IAM Credentials answered a bad expireTime"));
  }
  return GoogleToken{SecretValue(token->get<std::string>()), *expires_at};
}

Result<GoogleToken> GoogleApi::DownscopeToken(const SecretValue& subject,
                                              const std::string& options_json,
                                              TimePoint subject_expires_at) {
  HttpRequest req;
  req.method = "POST";
  req.url = options_.sts + "/v1/token";
  req.headers = {{"Content-Type", "application/x-www-form-urlencoded"}};
  req.body = FormEncode({{"grant_type", std::string(kTokenExchange)},
                         {"subject_token_type", std::string(kAccessTokenType)},
                         {"requested_token_type", std::string(kAccessTokenType)},
                         {"subject_token", std::string(subject.Reveal())},
                         {"options", options_json}});
  JITBROKER_ASSIGN_OR_RETURN(nlohmann::json body,
                             Call("sts", "Google STS", std::move(req), Kind::kApi));
  return OAuthAnswer(body, "Google STS", subject_expires_at);
}

Result<GoogleToken> GoogleApi::ExchangeJwt(const std::string& audience,
                                           const SecretValue& subject_jwt) {
  HttpRequest req;
  req.method = "POST";
  req.url = options_.sts + "/v1/token";
  req.headers = {{"Content-Type", "application/x-www-form-urlencoded"}};
  req.body = FormEncode({{"grant_type", std::string(kTokenExchange)},
                         {"audience", audience},
                         {"scope", "https://www.googleapis.com/auth/cloud-platform"},
                         {"requested_token_type", std::string(kAccessTokenType)},
                         {"subject_token_type", std::string(kJwtTokenType)},
                         {"subject_token", std::string(subject_jwt.Reveal())}});
  JITBROKER_ASSIGN_OR_RETURN(nlohmann::json body,
                             Call("sts", "Google STS", std::move(req), Kind::kIdentity));
  return OAuthAnswer(body, "Google STS", std::nullopt);
}

Result<GoogleToken> GoogleApi::JwtBearer(const SecretValue& assertion) {
  HttpRequest req;
  req.method = "POST";
  req.url = OAuthTokenUrl();
  req.headers = {{"Content-Type", "application/x-www-form-urlencoded"}};
  req.body = FormEncode({{"grant_type", "urn:ietf:params:oauth:grant-type:jwt-bearer"},
                         {"assertion", std::string(assertion.Reveal())}});
  JITBROKER_ASSIGN_OR_RETURN(nlohmann::json body, Call("oauth2", "Google OAuth token endpoint",
                                                       std::move(req), Kind::kIdentity));
  return OAuthAnswer(body, "Google OAuth token endpoint", std::nullopt);
}

Result<GoogleToken> GoogleApi::MetadataToken() {
  HttpRequest req;
  req.method = "GET";
  req.url = options_.metadata + "/computeMetadata/v1/instance/service-accounts/default/token";
  req.headers = {{"Metadata-Flavor", "Google"}};
  JITBROKER_ASSIGN_OR_RETURN(nlohmann::json body, Call("metadata", "the Google metadata server",
                                                       std::move(req), Kind::kIdentity));
  return OAuthAnswer(body, "the Google metadata server", std::nullopt);
}

}  // namespace jitbroker::issuers::gcp
