#include "broker/oidc/human_login.h"

#include <algorithm>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "broker/common/json_util.h"
#include "broker/crypto/crypto.h"
#include "broker/net/url.h"
#include "broker/oidc/trust_policy.h"
#include "jitbroker/error.h"

namespace jitbroker::oidc {

namespace {

using nlohmann::json;

constexpr size_t kMaxDocumentBytes = 100 * 1024;
constexpr size_t kMaxCodeBytes = 2048;
constexpr size_t kMaxStateBytes = 128;
constexpr size_t kMaxEmailBytes = 320;

Error ProviderUnavailable(std::string message, std::string detail = {}) {
  return Unavailable("provider_unavailable", std::move(message), std::move(detail));
}

Error BadIdToken(const Error& cause) {
  Error e = Unauthenticated("invalid_id_token", "the identity provider's ID token was refused (" +
                                                    std::string(cause.Reason()) + ")");
  e.detail = cause.detail.empty() ? cause.message : cause.detail;
  return e;
}

char AsciiLower(char c) { return (c >= 'A' && c <= 'Z') ? static_cast<char>(c - 'A' + 'a') : c; }

bool EqualsIgnoreAsciiCase(std::string_view a, std::string_view b) {
  return a.size() == b.size() && std::equal(a.begin(), a.end(), b.begin(), [](char x, char y) {
           return AsciiLower(x) == AsciiLower(y);
         });
}

bool IsBase64UrlPart(std::string_view s) {
  return !s.empty() && std::all_of(s.begin(), s.end(), [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' ||
           c == '_';
  });
}

// An endpoint the discovery document names: the issuer's own URL rules.
Result<std::string> EndpointOf(const json& doc, const char* key, bool allow_http) {
  auto it = doc.find(key);
  if (it == doc.end() || !it->is_string()) {
    return std::unexpected(ProviderUnavailable(
        "the identity provider's discovery document has no " + std::string(key)));
  }
  const std::string& url = it->get_ref<const std::string&>();
  net::UrlPolicy policy = net::UrlPolicy::OidcEndpoint(allow_http);
  if (Result<net::Url> u = net::ParseUrl(url, policy); !u) {
    return std::unexpected(ProviderUnavailable("the identity provider's " + std::string(key) +
                                               " is not acceptable: " + u.error().message));
  }
  return url;
}

}  // namespace

HumanLogin::HumanLogin(Options options, net::HttpClient* http, KeySource* keys, const Clock* clock)
    : options_(std::move(options)), http_(http), keys_(keys), clock_(clock) {}

bool HumanLogin::LooksLikeJwt(std::string_view bearer) {
  const size_t first = bearer.find('.');
  if (first == std::string_view::npos) {
    return false;
  }
  const size_t second = bearer.find('.', first + 1);
  if (second == std::string_view::npos || bearer.find('.', second + 1) != std::string_view::npos) {
    return false;
  }
  return IsBase64UrlPart(bearer.substr(0, first)) &&
         IsBase64UrlPart(bearer.substr(first + 1, second - first - 1)) &&
         IsBase64UrlPart(bearer.substr(second + 1));
}

size_t HumanLogin::pending_logins() const {
  std::lock_guard lock(mu_);
  return pending_.size();
}

Result<HumanLogin::Endpoints> HumanLogin::Discover() {
  const TimePoint now = clock_->Now();
  {
    std::lock_guard lock(mu_);
    if (endpoints_ && now - endpoints_->fetched_at < options_.discovery_max_age) {
      return *endpoints_;
    }
  }
  std::string base = options_.config.issuer;
  if (!base.empty() && base.back() == '/') {
    base.pop_back();  // OIDC Discovery §4
  }
  net::HttpRequest req;
  req.method = "GET";
  req.url = base + "/.well-known/openid-configuration";
  req.headers.emplace_back("Accept", "application/json");
  req.timeout = options_.timeout;
  req.connect_timeout = options_.timeout;
  Result<net::HttpResponse> resp = http_->Send(req);
  if (!resp) {
    return std::unexpected(
        ProviderUnavailable("the identity provider cannot be reached", resp.error().ToString()));
  }
  if (resp->status != 200) {
    return std::unexpected(ProviderUnavailable("the identity provider's discovery answered HTTP " +
                                               std::to_string(resp->status)));
  }
  jitbroker::json::ParseOptions po;
  po.what = "discovery document";
  po.max_bytes = kMaxDocumentBytes;
  Result<json> doc = jitbroker::json::ParseStrict(resp->body, po);
  if (!doc || !doc->is_object()) {
    return std::unexpected(
        ProviderUnavailable("the identity provider's discovery document is not a JSON object"));
  }
  auto iss = doc->find("issuer");
  if (iss == doc->end() || !iss->is_string() ||
      iss->get_ref<const std::string&>() != options_.config.issuer) {
    return std::unexpected(
        ProviderUnavailable("the identity provider's discovery document names another issuer"));
  }
  if (auto methods = doc->find("code_challenge_methods_supported");
      methods != doc->end() && methods->is_array() &&
      std::find(methods->begin(), methods->end(), json("S256")) == methods->end()) {
    return std::unexpected(
        ProviderUnavailable("the identity provider does not support PKCE with S256"));
  }
  Endpoints e;
  JITBROKER_ASSIGN_OR_RETURN(
      e.authorization, EndpointOf(*doc, "authorization_endpoint", options_.config.allow_http));
  JITBROKER_ASSIGN_OR_RETURN(e.token,
                             EndpointOf(*doc, "token_endpoint", options_.config.allow_http));
  e.fetched_at = now;
  std::lock_guard lock(mu_);
  endpoints_ = e;
  return e;
}

void HumanLogin::PruneLocked(TimePoint now) {
  while (!pending_order_.empty()) {
    auto it = pending_.find(pending_order_.front());
    if (it != pending_.end() && now - it->second.created < options_.pending_ttl &&
        pending_.size() < options_.max_pending) {
      break;
    }
    if (it != pending_.end()) {
      pending_.erase(it);
    }
    pending_order_.pop_front();
  }
}

Result<LoginStart> HumanLogin::Begin(std::string return_to) {
  JITBROKER_ASSIGN_OR_RETURN(Endpoints endpoints, Discover());
  const config::HumansConfig& c = options_.config;
  Pending p;
  p.verifier = crypto::Base64UrlEncode(crypto::RandomBytes(32));  // RFC 7636 §4.1: 43 chars
  p.nonce = crypto::Base64UrlEncode(crypto::RandomBytes(24));
  std::string state = crypto::Base64UrlEncode(crypto::RandomBytes(24));
  SecretValue binding(crypto::Base64UrlEncode(crypto::RandomBytes(32)));
  p.binding_sha256 = crypto::Sha256Hex(binding.Reveal());
  p.return_to = std::move(return_to);
  p.created = clock_->Now();
  const std::string challenge = crypto::Base64UrlEncode(crypto::Sha256(p.verifier));

  std::string scope;
  for (const std::string& s : c.scopes) {
    scope += scope.empty() ? "" : " ";
    scope += s;
  }
  LoginStart out;
  out.authorization_url = endpoints.authorization + "?response_type=code" +
                          "&client_id=" + net::PercentEncode(c.client_id) +
                          "&redirect_uri=" + net::PercentEncode(c.redirect_url) +
                          "&scope=" + net::PercentEncode(scope) + "&state=" + state +
                          "&nonce=" + p.nonce + "&code_challenge=" + challenge +
                          "&code_challenge_method=S256";
  out.browser_binding = std::move(binding);
  std::lock_guard lock(mu_);
  PruneLocked(p.created);
  if (pending_.size() >= options_.max_pending && !pending_order_.empty()) {
    pending_.erase(pending_order_.front());
    pending_order_.pop_front();
  }
  pending_order_.push_back(state);
  pending_.emplace(std::move(state), std::move(p));
  return out;
}

Result<CompletedLogin> HumanLogin::Complete(std::string_view state, std::string_view code,
                                            std::string_view error, std::string_view binding,
                                            const Policy& policy) {
  if (state.empty() || state.size() > kMaxStateBytes) {
    return std::unexpected(Unauthenticated(
        "login_expired", "this sign-in is unknown or was already used; start again"));
  }
  Pending p;
  {
    std::lock_guard lock(mu_);
    PruneLocked(clock_->Now());
    auto it = pending_.find(std::string(state));
    if (it == pending_.end()) {
      return std::unexpected(Unauthenticated(
          "login_expired", "this sign-in is unknown, expired or was already used; start again"));
    }
    p = std::move(it->second);
    pending_.erase(it);  // one use, whatever happens next (its slot in pending_order_ ages out)
  }
  if (!crypto::ConstantTimeEquals(crypto::Sha256Hex(binding), p.binding_sha256)) {
    return std::unexpected(Unauthenticated(
        "browser_mismatch", "this sign-in was started in another browser; start again here"));
  }
  if (!error.empty()) {
    return std::unexpected(Unauthenticated(
        "provider_denied", "the identity provider did not sign you in (it answered " +
                               std::string(error.substr(0, 64)) + ")"));
  }
  if (code.empty() || code.size() > kMaxCodeBytes) {
    return std::unexpected(
        Unauthenticated("provider_denied", "the identity provider sent no authorization code"));
  }
  JITBROKER_ASSIGN_OR_RETURN(Endpoints endpoints, Discover());
  JITBROKER_ASSIGN_OR_RETURN(std::string id_token, RedeemCode(endpoints, code, p.verifier));
  Result<HumanIdentity> identity = CheckIdToken(id_token, &p.nonce, policy);
  SecureWipe(id_token.data(), id_token.size());
  if (!identity) {
    return std::unexpected(identity.error());
  }
  CompletedLogin out;
  out.identity = std::move(*identity);
  out.return_to = std::move(p.return_to);
  return out;
}

Result<std::string> HumanLogin::RedeemCode(const Endpoints& endpoints, std::string_view code,
                                           const std::string& verifier) {
  const config::HumansConfig& c = options_.config;
  net::HttpRequest req;
  req.method = "POST";
  req.url = endpoints.token;
  req.headers.emplace_back("Content-Type", "application/x-www-form-urlencoded");
  req.headers.emplace_back("Accept", "application/json");
  req.timeout = options_.timeout;
  req.connect_timeout = options_.timeout;
  req.body = "grant_type=authorization_code&code=" + net::PercentEncode(code, true) +
             "&redirect_uri=" + net::PercentEncode(c.redirect_url, true) +
             "&code_verifier=" + verifier;
  if (c.token_endpoint_auth == "client_secret_post") {
    req.body += "&client_id=" + net::PercentEncode(c.client_id, true) +
                "&client_secret=" + net::PercentEncode(c.client_secret.Reveal(), true);
  } else {
    // RFC 6749 §2.3.1: each part form-encoded before the Basic encoding.
    std::string pair = net::PercentEncode(c.client_id, true) + ":" +
                       net::PercentEncode(c.client_secret.Reveal(), true);
    req.authorization_scheme = "Basic";
    req.bearer = SecretValue(crypto::Base64Encode(pair));
    SecureWipe(pair.data(), pair.size());
  }
  Result<net::HttpResponse> resp = http_->Send(req);
  SecureWipe(req.body.data(), req.body.size());
  if (!resp) {
    return std::unexpected(
        ProviderUnavailable("the identity provider's token endpoint cannot be "
                            "reached",
                            resp.error().ToString()));
  }
  jitbroker::json::ParseOptions po;
  po.what = "token response";
  po.max_bytes = kMaxDocumentBytes;
  Result<json> doc = jitbroker::json::ParseStrict(resp->body, po);
  SecureWipe(resp->body.data(), resp->body.size());
  if (resp->status != 200) {
    std::string oauth_error;
    if (doc && doc->is_object() && doc->contains("error") && (*doc)["error"].is_string()) {
      oauth_error = (*doc)["error"].get<std::string>().substr(0, 64);
    }
    if (resp->status == 400 && !oauth_error.empty()) {
      // invalid_grant and friends: the code, verifier or redirect were refused.
      return std::unexpected(Unauthenticated(
          "provider_denied", "the identity provider refused the sign-in (" + oauth_error + ")"));
    }
    return std::unexpected(ProviderUnavailable(
        "the identity provider's token endpoint answered HTTP " + std::to_string(resp->status),
        oauth_error));
  }
  if (!doc || !doc->is_object()) {
    return std::unexpected(
        ProviderUnavailable("the identity provider's token response is not a JSON object"));
  }
  auto it = doc->find("id_token");
  if (it == doc->end() || !it->is_string()) {
    return std::unexpected(
        ProviderUnavailable("the identity provider's token response has no id_token (is the "
                            "openid scope granted?)"));
  }
  std::string token = it->get<std::string>();
  for (auto& [key, value] : doc->items()) {
    if (value.is_string()) {
      auto& s = value.get_ref<std::string&>();
      SecureWipe(s.data(), s.size());
    }
  }
  return token;
}

Result<HumanIdentity> HumanLogin::Verify(std::string_view id_token, const Policy& policy) {
  return CheckIdToken(id_token, nullptr, policy);
}

Result<HumanIdentity> HumanLogin::CheckIdToken(std::string_view id_token, const std::string* nonce,
                                               const Policy& policy) {
  const config::HumansConfig& c = options_.config;
  Result<UnverifiedToken> token = DecodeSubjectToken(id_token);
  if (!token) {
    return std::unexpected(BadIdToken(token.error()));
  }
  TrustPolicy tp;
  tp.name = "humans";
  tp.issuer = c.issuer;
  tp.audience = c.client_id;
  tp.algorithms = c.algorithms;
  tp.allow_http = c.allow_http;
  tp.max_token_age_seconds = c.max_token_age_seconds;
  tp.leeway_seconds = c.leeway_seconds;
  tp.replay_protection = false;  // ID tokens need no jti; the login's nonce binds it
  Result<json> claims = VerifySubjectToken(*token, tp, *keys_, clock_->Now());
  if (!claims) {
    if (claims.error().code == ErrorCode::kUnavailable) {
      return std::unexpected(ProviderUnavailable("the identity provider's keys cannot be fetched",
                                                 claims.error().ToString()));
    }
    return std::unexpected(BadIdToken(claims.error()));
  }
  const json& cl = *claims;
  // OIDC Core §3.1.3.7: with several audiences, azp must be this client.
  if (auto aud = cl.find("aud"); aud != cl.end() && aud->is_array() && aud->size() > 1) {
    auto azp = cl.find("azp");
    if (azp == cl.end() || !azp->is_string() || azp->get_ref<const std::string&>() != c.client_id) {
      return std::unexpected(Unauthenticated(
          "invalid_id_token", "the ID token has several audiences and another authorized party"));
    }
  }
  if (nonce != nullptr) {
    auto n = cl.find("nonce");
    if (n == cl.end() || !n->is_string() ||
        !crypto::ConstantTimeEquals(n->get_ref<const std::string&>(), *nonce)) {
      return std::unexpected(
          Unauthenticated("nonce_mismatch", "the ID token does not belong to this sign-in"));
    }
  }
  HumanIdentity out;
  out.subject = cl.at("sub").get<std::string>();
  if (auto email = cl.find("email");
      email != cl.end() && email->is_string() &&
      email->get_ref<const std::string&>().size() <= kMaxEmailBytes) {
    auto verified = cl.find("email_verified");
    // Some providers send the flag as the string "true".
    const bool unverified = verified != cl.end() &&
                            !(verified->is_boolean() ? verified->get<bool>()
                                                     : (verified->is_string() &&
                                                        verified->get<std::string>() == "true"));
    if (!unverified) {
      out.email = email->get<std::string>();
    } else if (c.claim == "email") {
      return std::unexpected(Unauthenticated(
          "unverified_email", "the identity provider has not verified this account's email"));
    }
  }
  if (auto exp = cl.find("exp"); exp != cl.end() && exp->is_number()) {
    out.expires_at = TimePoint(std::chrono::seconds(exp->get<int64_t>()));
  }

  const Principal* found = nullptr;
  if (c.claim == "sub") {
    found = policy.FindPrincipal(out.subject);
  } else if (!out.email.empty()) {
    for (const Principal& p : policy.principals) {
      if (!p.email.empty() && EqualsIgnoreAsciiCase(p.email, out.email)) {
        if (found != nullptr) {
          found = nullptr;  // two principals share it: it names neither
          break;
        }
        found = &p;
      }
    }
  }
  if (found == nullptr) {
    return std::unexpected(Unauthenticated(
        "unknown_principal",
        "this account (" +
            (c.claim == "sub" ? "sub " + out.subject.substr(0, 128) : "email " + out.email) +
            ") is not a principal of this broker's policy"));
  }
  out.principal_id = found->id;
  out.id_token = SecretValue(std::string(id_token));
  return out;
}

}  // namespace jitbroker::oidc
