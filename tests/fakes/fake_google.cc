#include "tests/fakes/fake_google.h"

#include <httplib.h>
#include <signal.h>

#include <algorithm>
#include <atomic>
#include <mutex>
#include <random>
#include <thread>

#include "broker/common/time_util.h"
#include "broker/crypto/crypto.h"
#include "broker/crypto/jose.h"
#include "broker/net/url.h"
#include "tests/support/loopback.h"

namespace jitbroker::testing {

namespace {

using nlohmann::json;

constexpr std::string_view kTokenExchange = "urn:ietf:params:oauth:grant-type:token-exchange";
constexpr std::string_view kAccessTokenType = "urn:ietf:params:oauth:token-type:access_token";
constexpr std::string_view kJwtTokenType = "urn:ietf:params:oauth:token-type:jwt";

int64_t NowSeconds() {
  return std::chrono::duration_cast<std::chrono::seconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

std::string StatusName(int status) {
  switch (status) {
    case 400:
      return "INVALID_ARGUMENT";
    case 401:
      return "UNAUTHENTICATED";
    case 403:
      return "PERMISSION_DENIED";
    case 404:
      return "NOT_FOUND";
    case 429:
      return "RESOURCE_EXHAUSTED";
    case 503:
      return "UNAVAILABLE";
    default:
      return "INTERNAL";
  }
}

void GoogleError(httplib::Response& res, int status, const std::string& message) {
  res.status = status;
  res.set_content(
      json{{"error", {{"code", status}, {"message", message}, {"status", StatusName(status)}}}}
          .dump(),
      "application/json; charset=UTF-8");
}

void OAuthError(httplib::Response& res, int status, const std::string& error,
                const std::string& description) {
  res.status = status;
  res.set_content(json{{"error", error}, {"error_description", description}}.dump(),
                  "application/json; charset=UTF-8");
}

std::map<std::string, std::string> ParseFormBody(const std::string& body, bool& ok) {
  std::map<std::string, std::string> out;
  auto pairs = net::ParseForm(body);
  ok = pairs.has_value();
  if (pairs) {
    for (auto& [k, v] : *pairs) {
      if (out.contains(k)) {
        ok = false;
      }
      out[k] = v;
    }
  }
  return out;
}

}  // namespace

struct FakeGoogle::Impl {
  FakeGoogleOptions options;
  httplib::Server server;
  std::thread thread;
  std::string url;
  mutable std::mutex mu;
  std::map<std::string, FakeGoogleServiceAccount> accounts;
  std::map<std::string, Issued> issued;
  struct Injection {
    int status;
    int count;
    std::string path_part;
  };
  std::vector<Injection> injections;
  std::vector<std::string> violations;
  std::string last_jwt;
  std::atomic<int64_t> latency_ms{0};
  std::atomic<size_t> requests{0};
  std::atomic<uint64_t> serial{0};

  void Violation(const std::string& v) {
    std::lock_guard lock(mu);
    violations.push_back(v);
  }

  std::string NewToken(Issued info) {
    static thread_local std::mt19937_64 rng(std::random_device{}());
    info.token = "ya29.fake-" + std::to_string(serial.fetch_add(1)) + "-" +
                 crypto::Sha256Hex(std::to_string(rng())).substr(0, 32);
    std::lock_guard lock(mu);
    if (options.keep_issued || MintsMore(info)) {
      issued[info.token] = info;
    }
    return info.token;
  }

  // Whether a token can get more tokens from this fake: an identity token,
  // or one of an account that holds Token Creator on another. Needs mu.
  bool MintsMore(const Issued& info) const {
    if (info.kind == "downscoped") {
      return false;
    }
    return info.kind != "generated" ||
           std::any_of(accounts.begin(), accounts.end(), [&](const auto& a) {
             return a.second.token_creators.contains(info.principal);
           });
  }

  bool Injected(const httplib::Request& req, httplib::Response& res) {
    ++requests;
    if (const int64_t ms = latency_ms.load(); ms > 0) {
      std::this_thread::sleep_for(std::chrono::milliseconds(ms));
    }
    std::lock_guard lock(mu);
    for (auto& inj : injections) {
      if (inj.count != 0 && req.path.find(inj.path_part) != std::string::npos) {
        if (inj.count > 0) {
          --inj.count;
        }
        GoogleError(res, inj.status, "injected");
        return true;
      }
    }
    return false;
  }

  // A bearer token this fake issued, unexpired, to an enabled holder.
  std::optional<Issued> Bearer(const httplib::Request& req) {
    const std::string auth = req.get_header_value("Authorization");
    if (!auth.starts_with("Bearer ")) {
      return std::nullopt;
    }
    std::lock_guard lock(mu);
    auto it = issued.find(auth.substr(7));
    if (it == issued.end() || it->second.expires_at <= NowSeconds()) {
      return std::nullopt;
    }
    if (auto sa = accounts.find(it->second.principal);
        sa != accounts.end() && !sa->second.enabled) {
      return std::nullopt;
    }
    return it->second;
  }

  void HandleGenerate(const httplib::Request& req, httplib::Response& res) {
    if (Injected(req, res)) {
      return;
    }
    const std::string& path = req.path;
    const std::string prefix = "/v1/projects/-/serviceAccounts/";
    const std::string suffix = ":generateAccessToken";
    if (!path.starts_with(prefix) || !path.ends_with(suffix)) {
      Violation("generateAccessToken without the '-' project: " + path);
      GoogleError(res, 400, "The project must be '-'.");
      return;
    }
    auto email = net::PercentDecode(
        path.substr(prefix.size(), path.size() - prefix.size() - suffix.size()), false);
    auto caller = Bearer(req);
    if (!caller) {
      GoogleError(res, 401,
                  "Request had invalid authentication credentials. Expected OAuth 2 access "
                  "token.");
      return;
    }
    if (!req.get_header_value("Content-Type").starts_with("application/json")) {
      Violation("generateAccessToken body is not JSON");
    }
    const json body = json::parse(req.body, nullptr, false);
    if (!body.is_object() || !body.contains("scope") || !body["scope"].is_array() ||
        body["scope"].empty()) {
      GoogleError(res, 400, "Scope required.");
      return;
    }
    int64_t lifetime = 3600;
    if (body.contains("lifetime")) {
      const std::string l = body["lifetime"].is_string() ? body["lifetime"].get<std::string>() : "";
      char* end = nullptr;
      lifetime = l.ends_with('s') ? std::strtoll(l.c_str(), &end, 10) : -1;
      if (end == nullptr || *end != 's' || lifetime < 1 || lifetime > 3600) {
        GoogleError(res, 400,
                    "Lifetime must be between 1 second and 3600 seconds (got " + l + ").");
        return;
      }
    }
    FakeGoogleServiceAccount sa;
    {
      std::lock_guard lock(mu);
      auto it = email ? accounts.find(*email) : accounts.end();
      if (it == accounts.end()) {
        GoogleError(res, 404, "Not found; Gaia id not found for email " + email.value_or("?"));
        return;
      }
      sa = it->second;
    }
    if (!sa.token_creators.contains(caller->principal)) {
      GoogleError(res, 403,
                  "Permission 'iam.serviceAccounts.getAccessToken' denied on resource (or it may "
                  "not exist).");
      return;
    }
    if (!sa.enabled) {
      GoogleError(res, 403, "Service account is disabled.");
      return;
    }
    Issued info;
    info.principal = sa.email;
    info.service_account = sa.email;
    info.scopes = body["scope"].get<std::vector<std::string>>();
    info.lifetime_seconds = lifetime;
    info.expires_at = NowSeconds() + lifetime;
    info.kind = "generated";
    const std::string token = NewToken(info);
    res.set_content(json{{"accessToken", token},
                         {"expireTime", FormatRfc3339(FromUnixSeconds(info.expires_at))}}
                        .dump(),
                    "application/json; charset=UTF-8");
  }

  void HandleSts(const httplib::Request& req, httplib::Response& res) {
    if (Injected(req, res)) {
      return;
    }
    if (req.has_header("Authorization")) {
      Violation("STS request with an Authorization header");
    }
    bool ok = false;
    auto form = ParseFormBody(req.body, ok);
    if (!ok ||
        !req.get_header_value("Content-Type").starts_with("application/x-www-form-urlencoded")) {
      OAuthError(res, 400, "invalid_request", "The request body must be form-encoded.");
      return;
    }
    if (form["grant_type"] != kTokenExchange) {
      OAuthError(res, 400, "unsupported_grant_type", "Unsupported grant_type.");
      return;
    }
    if (form["requested_token_type"] != kAccessTokenType) {
      OAuthError(res, 400, "invalid_request", "Invalid requested_token_type.");
      return;
    }
    if (form["subject_token_type"] == kJwtTokenType) {
      FederatedExchange(form, res);
      return;
    }
    if (form["subject_token_type"] != kAccessTokenType) {
      OAuthError(res, 400, "invalid_request", "Invalid subject_token_type.");
      return;
    }
    Issued subject;
    {
      std::lock_guard lock(mu);
      auto it = issued.find(form["subject_token"]);
      if (it == issued.end() || it->second.expires_at <= NowSeconds() ||
          it->second.kind != "generated") {
        OAuthError(res, 400, "invalid_grant", "The subject token is invalid or expired.");
        return;
      }
      subject = it->second;
    }
    std::string opt_text = form["options"];
    if (opt_text.starts_with("%7B") || opt_text.starts_with("%7b")) {
      // Percent-encoded once more by the client (some libraries do).
      opt_text = net::PercentDecode(opt_text, true).value_or("");
    }
    const json opts = json::parse(opt_text, nullptr, false);
    const json* rules = nullptr;
    if (opts.is_object() && opts.contains("accessBoundary") && opts["accessBoundary"].is_object() &&
        opts["accessBoundary"].contains("accessBoundaryRules")) {
      rules = &opts["accessBoundary"]["accessBoundaryRules"];
    }
    if (rules == nullptr || !rules->is_array() || rules->empty() || rules->size() > 10) {
      OAuthError(res, 400, "invalid_request",
                 "The options must hold an accessBoundary with 1 to 10 accessBoundaryRules.");
      return;
    }
    for (const json& r : *rules) {
      const bool good =
          r.is_object() &&
          r.value("availableResource", "")
              .starts_with("//storage.googleapis.com/projects/_/buckets/") &&
          r.contains("availablePermissions") && r["availablePermissions"].is_array() &&
          !r["availablePermissions"].empty() &&
          std::all_of(r["availablePermissions"].begin(), r["availablePermissions"].end(),
                      [](const json& p) {
                        return p.is_string() &&
                               p.get<std::string>().starts_with("inRole:roles/storage.");
                      }) &&
          (!r.contains("availabilityCondition") ||
           (r["availabilityCondition"].is_object() &&
            r["availabilityCondition"].value("expression", "") != ""));
      if (!good) {
        OAuthError(res, 400, "invalid_request", "An access boundary rule is malformed.");
        return;
      }
    }
    Issued info = subject;
    info.kind = "downscoped";
    info.boundary = opts["accessBoundary"];
    const std::string token = NewToken(info);
    // No expires_in: the source token's expiry applies (as Google may answer).
    res.set_content(json{{"access_token", token},
                         {"issued_token_type", kAccessTokenType},
                         {"token_type", "Bearer"}}
                        .dump(),
                    "application/json; charset=UTF-8");
  }

  // Verifies a JWT's signature with `jwk` and its time claims.
  std::optional<json> VerifyJwt(const std::string& jwt, const json& jwk, std::string& why) {
    auto key = crypto::VerifyKey::FromJwk(jwk);
    if (!key) {
      why = "no key";
      return std::nullopt;
    }
    auto claims = crypto::VerifyJws(jwt, **key);
    if (!claims) {
      why = "bad signature: " + claims.error().message;
      return std::nullopt;
    }
    const int64_t now = NowSeconds();
    if (!claims->contains("iat") || !claims->contains("exp") || !(*claims)["iat"].is_number() ||
        !(*claims)["exp"].is_number()) {
      why = "no iat/exp";
      return std::nullopt;
    }
    const int64_t iat = (*claims)["iat"].get<int64_t>();
    const int64_t exp = (*claims)["exp"].get<int64_t>();
    if (exp <= now || iat > now + 60 || exp - iat > 3600) {
      why = "bad iat/exp";
      return std::nullopt;
    }
    {
      std::lock_guard lock(mu);
      last_jwt = jwt;
    }
    return *claims;
  }

  void FederatedExchange(std::map<std::string, std::string>& form, httplib::Response& res) {
    if (options.wif_audience.empty() || form["audience"] != options.wif_audience) {
      OAuthError(res, 400, "invalid_target",
                 "The target service indicated by the \"audience\" parameters is invalid.");
      return;
    }
    if (form["scope"] != "https://www.googleapis.com/auth/cloud-platform") {
      OAuthError(res, 400, "invalid_scope", "Invalid scope.");
      return;
    }
    std::string why;
    // Google picks the provider's key by the JWT's kid.
    if (const auto want = options.wif_jwk.find("kid"); want != options.wif_jwk.end()) {
      auto header =
          crypto::Base64UrlDecode(form["subject_token"].substr(0, form["subject_token"].find('.')));
      const json h = header ? json::parse(*header, nullptr, false) : json();
      if (!h.is_object() || !h.contains("kid") || h["kid"] != *want) {
        OAuthError(res, 400, "invalid_grant", "Invalid JWT: kid not among the provider's keys");
        return;
      }
    }
    auto claims = VerifyJwt(form["subject_token"], options.wif_jwk, why);
    if (!claims) {
      OAuthError(res, 400, "invalid_grant", "Invalid JWT: " + why);
      return;
    }
    if ((*claims).value("iss", "") != options.wif_issuer ||
        (*claims).value("aud", "") != "https:" + options.wif_audience ||
        !(*claims)["sub"].is_string() || (*claims)["sub"].get<std::string>().empty()) {
      OAuthError(res, 400, "invalid_grant", "The JWT's iss, aud or sub is not accepted.");
      return;
    }
    Issued info;
    info.principal = PrincipalFor((*claims)["sub"].get<std::string>());
    info.expires_at = NowSeconds() + 3600;
    info.kind = "federated";
    const std::string token = NewToken(info);
    res.set_content(json{{"access_token", token},
                         {"issued_token_type", kAccessTokenType},
                         {"token_type", "Bearer"},
                         {"expires_in", 3600}}
                        .dump(),
                    "application/json; charset=UTF-8");
  }

  std::string PrincipalFor(const std::string& subject) const {
    // //iam.googleapis.com/projects/NUM/locations/global/workloadIdentityPools/POOL/providers/P
    std::string pool = options.wif_audience.substr(2);
    pool = pool.substr(0, pool.rfind("/providers/"));
    return "principal://" + pool + "/subject/" + subject;
  }

  void HandleOAuth(const httplib::Request& req, httplib::Response& res) {
    if (Injected(req, res)) {
      return;
    }
    bool ok = false;
    auto form = ParseFormBody(req.body, ok);
    if (!ok || form["grant_type"] != "urn:ietf:params:oauth:grant-type:jwt-bearer") {
      OAuthError(res, 400, "unsupported_grant_type", "Invalid grant_type.");
      return;
    }
    auto decoded = crypto::DecodeJws(form["assertion"]);
    if (!decoded) {
      OAuthError(res, 400, "invalid_grant", "Invalid JWT.");
      return;
    }
    const std::string kid = decoded->header.value("kid", "");
    auto key = options.key_files.find(kid);
    if (key == options.key_files.end() || decoded->header.value("alg", "") != "RS256") {
      OAuthError(res, 400, "invalid_grant", "Invalid JWT Signature.");
      return;
    }
    std::string why;
    auto claims = VerifyJwt(form["assertion"], key->second.second, why);
    if (!claims) {
      OAuthError(res, 400, "invalid_grant", "Invalid JWT: " + why);
      return;
    }
    if ((*claims).value("iss", "") != key->second.first ||
        (*claims).value("aud", "") != url + "/token" || (*claims).value("scope", "").empty()) {
      OAuthError(res, 400, "invalid_grant", "Invalid JWT: iss, aud or scope.");
      return;
    }
    Issued info;
    info.principal = key->second.first;
    info.expires_at = NowSeconds() + 3599;
    info.kind = "key_file";
    const std::string token = NewToken(info);
    res.set_content(
        json{{"access_token", token}, {"expires_in", 3599}, {"token_type", "Bearer"}}.dump(),
        "application/json; charset=UTF-8");
  }

  void HandleMetadata(const httplib::Request& req, httplib::Response& res) {
    if (Injected(req, res)) {
      return;
    }
    if (req.get_header_value("Metadata-Flavor") != "Google" || options.metadata_account.empty()) {
      res.status = 403;
      res.set_content("Missing Metadata-Flavor:Google header.", "text/html");
      return;
    }
    Issued info;
    info.principal = options.metadata_account;
    info.expires_at = NowSeconds() + 3599;
    info.kind = "metadata";
    const std::string token = NewToken(info);
    res.set_content(
        json{{"access_token", token}, {"expires_in", 3599}, {"token_type", "Bearer"}}.dump(),
        "application/json");
  }
};

FakeGoogle::~FakeGoogle() { Stop(); }

std::unique_ptr<FakeGoogle> FakeGoogle::Start(FakeGoogleOptions options) {
  std::unique_ptr<FakeGoogle> f(new FakeGoogle());
  f->impl_ = std::make_unique<Impl>();
  Impl& impl = *f->impl_;
  impl.options = std::move(options);
  ::signal(SIGPIPE, SIG_IGN);
  httplib::Server& svr = impl.server;
  const int threads = std::max(1, impl.options.threads);
  svr.new_task_queue = [threads] { return new httplib::ThreadPool(static_cast<size_t>(threads)); };
  svr.set_tcp_nodelay(true);
  svr.set_keep_alive_max_count(1000000);  // cpp-httplib closes after 5 by default
  svr.set_keep_alive_timeout(2);
  svr.set_payload_max_length(1 << 20);
  svr.Post(R"(/v1/projects/.*)", [&impl](const httplib::Request& req, httplib::Response& res) {
    impl.HandleGenerate(req, res);
  });
  svr.Post("/v1/token", [&impl](const httplib::Request& req, httplib::Response& res) {
    impl.HandleSts(req, res);
  });
  svr.Post("/token", [&impl](const httplib::Request& req, httplib::Response& res) {
    impl.HandleOAuth(req, res);
  });
  svr.Get("/computeMetadata/v1/instance/service-accounts/default/token",
          [&impl](const httplib::Request& req, httplib::Response& res) {
            impl.HandleMetadata(req, res);
          });
  // A Google API a granted token is for (Cloud Storage's object list):
  // 200 with a bearer token this fake issued that is still good, else 401
  // as Google answers.
  FakeGoogle* self = f.get();
  svr.Get(R"(/storage/v1/b/([a-z0-9._-]+)/o)", [self](const httplib::Request& req,
                                                      httplib::Response& res) {
    const std::string auth = req.get_header_value("Authorization");
    if (auth.rfind("Bearer ", 0) != 0 || !self->TokenActive(auth.substr(7))) {
      res.status = 401;
      res.set_content(
          R"({"error":{"code":401,"message":"Invalid Credentials","status":"UNAUTHENTICATED"}})",
          "application/json");
      return;
    }
    res.set_content(nlohmann::json{{"kind", "storage#objects"},
                                   {"bucket", req.matches[1].str()},
                                   {"items", nlohmann::json::array()}}
                        .dump(),
                    "application/json");
  });
  f->port_ = ServeOnLoopback(svr, impl.thread);
  impl.url = "http://127.0.0.1:" + std::to_string(f->port_);
  return f->port_ > 0 ? std::move(f) : nullptr;
}

void FakeGoogle::Stop() {
  if (impl_) {
    StopServing(impl_->server, impl_->thread);
  }
}

std::string FakeGoogle::url() const { return impl_->url; }

std::string FakeGoogle::FederatedPrincipal(const std::string& subject) const {
  return impl_->PrincipalFor(subject);
}

void FakeGoogle::AddServiceAccount(FakeGoogleServiceAccount sa) {
  std::lock_guard lock(impl_->mu);
  impl_->accounts[sa.email] = std::move(sa);
}

void FakeGoogle::SetEnabled(const std::string& email, bool enabled) {
  std::lock_guard lock(impl_->mu);
  impl_->accounts[email].enabled = enabled;
}

void FakeGoogle::InjectErrors(int status, int count, const std::string& path_part) {
  std::lock_guard lock(impl_->mu);
  impl_->injections.push_back({status, count, path_part});
}

void FakeGoogle::SetLatency(std::chrono::milliseconds latency) {
  impl_->latency_ms.store(latency.count());
}

bool FakeGoogle::TokenActive(const std::string& token) const {
  std::lock_guard lock(impl_->mu);
  auto it = impl_->issued.find(token);
  if (it == impl_->issued.end() || it->second.expires_at <= NowSeconds()) {
    return false;
  }
  auto sa = impl_->accounts.find(it->second.service_account);
  return sa == impl_->accounts.end() || sa->second.enabled;
}

std::optional<FakeGoogle::Issued> FakeGoogle::Find(const std::string& token) const {
  std::lock_guard lock(impl_->mu);
  auto it = impl_->issued.find(token);
  if (it == impl_->issued.end()) {
    return std::nullopt;
  }
  return it->second;
}

std::vector<FakeGoogle::Issued> FakeGoogle::IssuedTokens() const {
  std::lock_guard lock(impl_->mu);
  std::vector<Issued> out;
  for (const auto& [k, v] : impl_->issued) {
    out.push_back(v);
  }
  return out;
}

size_t FakeGoogle::Requests() const { return impl_->requests.load(); }

std::vector<std::string> FakeGoogle::Violations() const {
  std::lock_guard lock(impl_->mu);
  return impl_->violations;
}

std::string FakeGoogle::LastVerifiedJwt() const {
  std::lock_guard lock(impl_->mu);
  return impl_->last_jwt;
}

}  // namespace jitbroker::testing
