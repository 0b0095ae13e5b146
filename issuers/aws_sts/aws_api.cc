#include "issuers/aws_sts/aws_api.h"

#include <algorithm>
#include <cstdlib>

#include "broker/common/backoff.h"
#include "broker/common/log.h"
#include "broker/common/text.h"
#include "broker/common/time_util.h"
#include "broker/net/url.h"

namespace jitbroker::issuers::aws_sts {

namespace {

using std::chrono::milliseconds;

constexpr int64_t kSkewSeconds = 240;  // AWS refuses requests 5 minutes off

bool IsThrottle(std::string_view code) {
  return code == "Throttling" || code == "ThrottlingException" || code == "RequestLimitExceeded" ||
         code == "TooManyRequestsException";
}

bool IsExpiredToken(std::string_view code) {
  return code == "ExpiredToken" || code == "ExpiredTokenException";
}

bool IsAuthFailure(std::string_view code) {
  return code == "InvalidClientTokenId" || code == "SignatureDoesNotMatch" ||
         code == "IncompleteSignature" || IsExpiredToken(code) || code == "InvalidIdentityToken" ||
         code == "IDPRejectedClaim" || code == "UnrecognizedClientException" ||
         code == "MissingAuthenticationToken" || code == "RequestExpired";
}

std::string Detail(const AwsErrorInfo& e, int status) {
  return "AWS " + std::to_string(status) + " " + (e.code.empty() ? "(no code)" : e.code) +
         (e.message.empty() ? "" : ": " + e.message);
}

}  // namespace

std::string FormEncode(const std::vector<std::pair<std::string, std::string>>& params) {
  std::string out;
  for (const auto& [k, v] : params) {
    if (!out.empty()) {
      out += '&';
    }
    out += UriEncode(k);
    out += '=';
    out += UriEncode(v);
  }
  return out;
}

AwsErrorInfo ParseAwsError(std::string_view body) {
  AwsErrorInfo out;
  auto doc = ParseXml(body, XmlLimits{.max_bytes = 64 * 1024, .max_depth = 8, .max_elements = 64});
  if (!doc) {
    return out;
  }
  // STS: <ErrorResponse><Error>…; some services: <Response><Errors><Error>….
  const XmlElement* err = doc->Find("Error");
  if (err == nullptr) {
    err = doc->Find("Errors/Error");
  }
  if (err == nullptr) {
    return out;
  }
  out.code = text::Printable(err->Text("Code").value_or(""), 128);
  out.message = text::Printable(err->Text("Message").value_or(""), 300);
  return out;
}

AwsQueryApi::AwsQueryApi(QueryOptions options, HttpClient* http, const Clock* clock,
                         CredentialSource credentials, std::string issuer_name)
    : options_(std::move(options)),
      http_(http),
      clock_(clock),
      credentials_(std::move(credentials)),
      issuer_name_(std::move(issuer_name)) {
  // The Host header as it will be signed and sent: the endpoint's authority
  // (the configuration validated the URL).
  net::UrlPolicy any;
  any.http = net::HttpRule::kAnyHost;
  if (auto u = net::ParseUrl(options_.endpoint, any)) {
    host_ = u->Authority();
  }
}

void AwsQueryApi::Count(std::string_view action, std::string_view outcome) {
  std::lock_guard lock(metrics_mu_);
  ++calls_[{std::string(action), std::string(outcome)}];
}

void AwsQueryApi::CollectMetrics(MetricFamily& calls, MetricFamily& derivations) const {
  const std::string labels = "issuer=\"" + issuer_name_ + "\",service=\"" + options_.service + "\"";
  {
    std::lock_guard lock(metrics_mu_);
    for (const auto& [key, n] : calls_) {
      calls.samples.emplace_back(
          labels + ",action=\"" + key.first + "\",outcome=\"" + key.second + "\"",
          static_cast<double>(n));
    }
  }
  derivations.samples.emplace_back(labels, static_cast<double>(keys_.derivations()));
}

Result<XmlElement> AwsQueryApi::Call(std::string_view action,
                                     const std::vector<std::pair<std::string, std::string>>& params,
                                     Signing signing) {
  if (host_.empty()) {
    return std::unexpected(
        Internal("the " + options_.label + " endpoint is not a URL", options_.endpoint));
  }
  std::vector<std::pair<std::string, std::string>> form = {{"Action", std::string(action)},
                                                           {"Version", options_.api_version}};
  form.insert(form.end(), params.begin(), params.end());
  const std::string body = FormEncode(form);

  const auto start = std::chrono::steady_clock::now();
  const auto deadline = start + options_.call_deadline;
  auto wait = [&](int attempt) {
    return BackoffBefore(attempt, options_.backoff_base, deadline, options_.sleep);
  };
  bool skew_retried = false;
  std::string expired_key_id;  // the base key AWS called expired (refreshed once)
  for (int attempt = 1;; ++attempt) {
    const bool last = attempt >= options_.max_attempts;
    std::string used_key_id;
    HttpRequest req;
    req.method = "POST";
    req.url = options_.endpoint + "/";
    req.headers = {{"Content-Type", "application/x-www-form-urlencoded; charset=utf-8"},
                   {"Host", host_}};
    if (signing == Signing::kSigned) {
      JITBROKER_ASSIGN_OR_RETURN(AwsCredentials creds, credentials_(expired_key_id));
      used_key_id = creds.access_key_id;
      const TimePoint now = clock_->Now() + std::chrono::seconds(offset_.load());
      const std::string amz_date = AmzDate(now);
      SigV4Request sreq;
      sreq.method = "POST";
      sreq.path = "/";
      sreq.headers = std::move(req.headers);
      sreq.headers.emplace_back("X-Amz-Date", amz_date);
      if (!creds.session_token.empty()) {
        sreq.headers.emplace_back("X-Amz-Security-Token",
                                  std::string(creds.session_token.Reveal()));
      }
      sreq.body = body;
      JITBROKER_ASSIGN_OR_RETURN(
          Signature sig, Sign(sreq, creds, amz_date, options_.region, options_.service, &keys_));
      req.headers = std::move(sreq.headers);
      const std::string_view prefix = "AWS4-HMAC-SHA256 ";
      req.authorization_scheme = std::string(prefix.substr(0, prefix.size() - 1));
      req.bearer = SecretValue(sig.authorization.substr(prefix.size()));
    }
    req.headers.emplace_back("User-Agent", options_.user_agent);
    req.headers.emplace_back("Accept", "application/xml");
    req.body = body;
    const auto left =
        std::chrono::duration_cast<milliseconds>(deadline - std::chrono::steady_clock::now());
    req.timeout = std::min(options_.timeout, std::max(left, milliseconds(1)));
    req.connect_timeout = std::min(options_.connect_timeout, req.timeout);
    auto sent = http_->Send(req);
    // The security token travelled in a header (a web identity token in the
    // body): wipe our copies.
    SecureWipe(req.body.data(), req.body.size());
    for (auto& [name, value] : req.headers) {
      if (HttpHeaders::EqualsIgnoreCase(name, "X-Amz-Security-Token")) {
        SecureWipe(value.data(), value.size());
      }
    }
    if (!sent) {
      if (!last && wait(attempt)) {
        Count(action, "retry_transport");
        continue;
      }
      Count(action, "unavailable");
      Error e =
          Unavailable("aws_unavailable", "cannot reach " + options_.label, sent.error().message);
      e.retryable = true;
      return std::unexpected(std::move(e));
    }
    HttpResponse& r = *sent;
    if (r.status == 200) {
      auto doc = ParseXml(r.body);
      SecureWipe(r.body.data(), r.body.size());  // it held credentials
      if (!doc) {
        Count(action, "bad_response");
        return std::unexpected(Unavailable(
            "aws_bad_response", options_.label + " answered with XML that does not parse",
            doc.error().message));
      }
      Count(action, "ok");
      return std::move(*doc);
    }
    const AwsErrorInfo info = ParseAwsError(r.body);
    const std::string detail = Detail(info, r.status);
    // Clock skew: learn AWS's time from its Date header, re-sign, retry once.
    if (!skew_retried && (info.code == "RequestExpired" || info.code == "SignatureDoesNotMatch" ||
                          info.code == "InvalidSignatureException")) {
      if (auto date = r.headers.Get("date")) {
        if (auto server_now = ParseHttpDate(*date)) {
          const int64_t skew = ToUnixSeconds(*server_now) - ToUnixSeconds(clock_->Now());
          if (std::abs(skew - offset_.load()) >= kSkewSeconds) {
            skew_retried = true;
            offset_.store(skew);
            Count(action, "retry_clock_skew");
            log::Get("issuer.aws_sts")
                ->warn("event=aws_clock_skew issuer={} offset_s={}", issuer_name_, skew);
            continue;
          }
        }
      }
    }
    // Temporary base credentials expired: fetch fresh ones, retry once.
    if (expired_key_id.empty() && IsExpiredToken(info.code) && signing == Signing::kSigned) {
      expired_key_id = used_key_id;
      Count(action, "retry_expired_token");
      continue;
    }
    const bool throttled = r.status == 429 || IsThrottle(info.code);
    const bool transient = r.status >= 500 || info.code == "IDPCommunicationError";
    if ((throttled || transient) && !last && wait(attempt)) {
      Count(action, throttled ? "retry_throttled" : "retry_server_error");
      continue;
    }
    if (throttled) {
      Count(action, "throttled");
      Error e = ResourceExhausted(
          "aws_throttled",
          options_.label + " is throttling the broker; retry later (" + detail + ")");
      e.retryable = true;
      e.retry_after = std::chrono::seconds(1);
      return std::unexpected(std::move(e));
    }
    if (transient) {
      Count(action, "unavailable");
      Error e = Unavailable("aws_unavailable", options_.label + " failed (" + detail + ")");
      e.retryable = true;
      return std::unexpected(std::move(e));
    }
    Count(action, "error");
    if (info.code == "PackedPolicyTooLarge") {
      return std::unexpected(InvalidArgument(
          "policy_too_large",
          "AWS refused the session policy and tags as too large once packed (fewer actions or "
          "resources, or wildcards): " +
              detail));
    }
    if (info.code == "AccessDenied" || info.code == "AccessDeniedException") {
      return std::unexpected(PermissionDenied(
          "aws_access_denied", options_.label + " refused the broker's " + std::string(action) +
                                   " (" + options_.access_denied_hint + "): " + detail));
    }
    if (info.code == "NoSuchEntity") {
      return std::unexpected(
          NotFound("aws_no_such_entity", options_.label + " has no such entity: " + detail));
    }
    if (info.code == "LimitExceeded") {
      return std::unexpected(ResourceExhausted(
          "aws_limit_exceeded", options_.label + " refused: a limit is exceeded: " + detail));
    }
    if (info.code == "RegionDisabledException") {
      return std::unexpected(FailedPrecondition(
          "aws_region_disabled", "STS is not activated in this region for the account: " + detail));
    }
    if (IsAuthFailure(info.code) || r.status == 401) {
      return std::unexpected(Unavailable(
          "aws_auth_failed",
          "AWS refused the broker's own credentials (check the access key, its expiry and the "
          "clock): " +
              detail));
    }
    if (r.status == 400) {
      return std::unexpected(InvalidArgument("aws_invalid_request",
                                             options_.label + " refused the request: " + detail));
    }
    return std::unexpected(
        Unavailable("aws_bad_response", options_.label + " answered unexpectedly: " + detail));
  }
}

namespace {

// The credentials of an AssumeRole or AssumeRoleWithWebIdentity answer; the
// secrets in `doc` are wiped.
Result<AssumedRole> ReadAssumedRole(XmlElement& doc, const std::string& action) {
  auto bad = [&](const std::string& what) {
    return std::unexpected(
        Unavailable("aws_bad_response", "AWS STS's " + action + " answer " + what));
  };
  if (doc.name != action + "Response") {
    return bad("is not an " + action + "Response");
  }
  auto child = [](XmlElement* e, std::string_view name) -> XmlElement* {
    if (e != nullptr) {
      for (XmlElement& c : e->children) {
        if (c.name == name) {
          return &c;
        }
      }
    }
    return nullptr;
  };
  XmlElement* result = child(&doc, action + "Result");
  XmlElement* creds = child(result, "Credentials");
  if (creds == nullptr) {
    return bad("has no Credentials");
  }
  AssumedRole out;
  out.access_key_id = creds->Text("AccessKeyId").value_or("");
  for (XmlElement& c : creds->children) {  // the secrets, our copies wiped
    if (c.name == "SecretAccessKey") {
      out.secret_access_key = SecretValue(c.text);
      SecureWipe(c.text.data(), c.text.size());
    } else if (c.name == "SessionToken") {
      out.session_token = SecretValue(c.text);
      SecureWipe(c.text.data(), c.text.size());
    }
  }
  const std::string expiration = creds->Text("Expiration").value_or("");
  auto exp = ParseRfc3339(expiration);
  const bool akid_ok = out.access_key_id.size() >= 16 && out.access_key_id.size() <= 128 &&
                       std::all_of(out.access_key_id.begin(), out.access_key_id.end(), [](char c) {
                         return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') ||
                                (c >= '0' && c <= '9') || c == '_';
                       });
  if (!akid_ok || out.secret_access_key.empty() || out.session_token.empty() || !exp) {
    return bad("has incomplete or malformed Credentials");
  }
  out.expiration = *exp;
  out.assumed_role_arn = result->Text("AssumedRoleUser/Arn").value_or("");
  out.assumed_role_id = result->Text("AssumedRoleUser/AssumedRoleId").value_or("");
  out.source_identity = result->Text("SourceIdentity").value_or("");
  if (auto packed = result->Text("PackedPolicySize")) {
    char* end = nullptr;
    const long long v = std::strtoll(packed->c_str(), &end, 10);
    if (end != packed->c_str() && *end == '\0') {
      out.packed_policy_size = v;
    }
  }
  return out;
}

}  // namespace

Result<AssumedRole> AssumeRole(AwsQueryApi& api, const AssumeRoleInput& in) {
  std::vector<std::pair<std::string, std::string>> p = {
      {"RoleArn", in.role_arn},
      {"RoleSessionName", in.role_session_name},
      {"DurationSeconds", std::to_string(in.duration_seconds)},
      {"SourceIdentity", in.source_identity},
  };
  if (!in.policy.empty()) {
    p.emplace_back("Policy", in.policy);
  }
  for (size_t i = 0; i < in.tags.size(); ++i) {
    const std::string n = std::to_string(i + 1);
    p.emplace_back("Tags.member." + n + ".Key", in.tags[i].first);
    p.emplace_back("Tags.member." + n + ".Value", in.tags[i].second);
  }
  for (size_t i = 0; i < in.transitive_tag_keys.size(); ++i) {
    p.emplace_back("TransitiveTagKeys.member." + std::to_string(i + 1), in.transitive_tag_keys[i]);
  }
  if (!in.external_id.empty()) {
    p.emplace_back("ExternalId", in.external_id);
  }
  JITBROKER_ASSIGN_OR_RETURN(XmlElement doc, api.Call("AssumeRole", p));
  return ReadAssumedRole(doc, "AssumeRole");
}

Result<AssumedRole> AssumeRoleWithWebIdentity(AwsQueryApi& api, const std::string& role_arn,
                                              const std::string& role_session_name,
                                              const SecretValue& web_identity_token,
                                              int64_t duration_seconds) {
  std::vector<std::pair<std::string, std::string>> p = {
      {"RoleArn", role_arn},
      {"RoleSessionName", role_session_name},
      {"DurationSeconds", std::to_string(duration_seconds)},
      {"WebIdentityToken", std::string(web_identity_token.Reveal())}};
  auto doc = api.Call("AssumeRoleWithWebIdentity", p, AwsQueryApi::Signing::kUnsigned);
  SecureWipe(p.back().second.data(), p.back().second.size());
  if (!doc) {
    return std::unexpected(doc.error());
  }
  return ReadAssumedRole(*doc, "AssumeRoleWithWebIdentity");
}

Result<std::optional<std::string>> GetRolePolicy(AwsQueryApi& api, const std::string& role_name,
                                                 const std::string& policy_name) {
  auto doc = api.Call("GetRolePolicy", {{"RoleName", role_name}, {"PolicyName", policy_name}});
  if (!doc) {
    // NoSuchEntity: no such policy yet (a missing role fails the write).
    if (doc.error().Reason() == "aws_no_such_entity") {
      return std::optional<std::string>();
    }
    return std::unexpected(doc.error());
  }
  auto text = doc->Text("GetRolePolicyResult/PolicyDocument");
  if (doc->name != "GetRolePolicyResponse" || !text) {
    return std::unexpected(
        Unavailable("aws_bad_response", "AWS IAM's GetRolePolicy answer has no PolicyDocument"));
  }
  // IAM answers the document URL-encoded (RFC 3986).
  auto decoded = net::PercentDecode(*text, /*plus_is_space=*/false);
  if (!decoded) {
    return std::unexpected(
        Unavailable("aws_bad_response", "AWS IAM's PolicyDocument is not URL-encoded text"));
  }
  return std::optional<std::string>(std::move(*decoded));
}

Status PutRolePolicy(AwsQueryApi& api, const std::string& role_name, const std::string& policy_name,
                     const std::string& document) {
  JITBROKER_ASSIGN_OR_RETURN(XmlElement doc,
                             api.Call("PutRolePolicy", {{"RoleName", role_name},
                                                        {"PolicyName", policy_name},
                                                        {"PolicyDocument", document}}));
  if (doc.name != "PutRolePolicyResponse") {
    return std::unexpected(Unavailable(
        "aws_bad_response", "AWS IAM's PutRolePolicy answer is not a PutRolePolicyResponse"));
  }
  return {};
}

}  // namespace jitbroker::issuers::aws_sts
