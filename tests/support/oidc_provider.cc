// FakeOidcIssuer's sign-in side: the authorization code flow with PKCE of a
// company identity provider (oidc_issuer.h, EnableLogin). It checks what a
// real provider checks, so a broker that skips a step fails here.
#include <chrono>
#include <string>

#include <nlohmann/json.hpp>

#include "broker/common/text.h"
#include "broker/crypto/crypto.h"
#include "broker/net/url.h"
#include "tests/support/oidc_issuer.h"

namespace jitbroker::testing {

namespace {

void OAuthError(httplib::Response& res, int status, const std::string& error,
                const std::string& description) {
  res.status = status;
  res.set_header("Cache-Control", "no-store");
  res.set_content(nlohmann::json{{"error", error}, {"error_description", description}}.dump(),
                  "application/json");
}

void BadRequestPage(httplib::Response& res, const std::string& why) {
  res.status = 400;
  res.set_content("<!DOCTYPE html><title>Sign-in error</title><p id=\"error\">" +
                      text::HtmlEscape(why) + "</p>",
                  "text/html; charset=utf-8");
}

bool HasScope(const std::string& scope, const std::string& want) {
  size_t pos = 0;
  while (pos <= scope.size()) {
    size_t sp = scope.find(' ', pos);
    if (sp == std::string::npos) {
      sp = scope.size();
    }
    if (scope.substr(pos, sp - pos) == want) {
      return true;
    }
    pos = sp + 1;
  }
  return false;
}

}  // namespace

void FakeOidcIssuer::EnableLogin(LoginClient client, const std::string& kid) {
  std::lock_guard lock(mu_);
  login_client_ = std::move(client);
  login_kid_ = kid;
}

void FakeOidcIssuer::AddUser(const std::string& login, nlohmann::json claims) {
  std::lock_guard lock(mu_);
  users_[login] = std::move(claims);
}

std::string FakeOidcIssuer::last_token_authorization() const {
  std::lock_guard lock(mu_);
  return last_token_authorization_;
}

std::string FakeOidcIssuer::last_token_body() const {
  std::lock_guard lock(mu_);
  return last_token_body_;
}

void FakeOidcIssuer::SetNonceOverride(std::optional<std::string> nonce) {
  std::lock_guard lock(mu_);
  nonce_override_ = std::move(nonce);
}

void FakeOidcIssuer::InstallLoginRoutes() {
  FakeOidcIssuer* self = this;
  // The authorization request (OIDC Core §3.1.2.1 and RFC 7636 §4.3). Until
  // client_id and redirect_uri are known good, errors are shown here, never
  // redirected (§3.1.2.6).
  auto check = [self](const httplib::Request& req, httplib::Response& res) -> bool {
    std::optional<LoginClient> client;
    {
      std::lock_guard lock(self->mu_);
      client = self->login_client_;
    }
    if (!client) {
      BadRequestPage(res, "sign-in is not enabled");
      return false;
    }
    if (req.get_param_value("client_id") != client->client_id) {
      BadRequestPage(res, "unknown client_id");
      return false;
    }
    if (req.get_param_value("redirect_uri") != client->redirect_uri) {
      BadRequestPage(res, "redirect_uri is not registered for this client");
      return false;
    }
    for (const char* key : {"response_type", "scope", "state", "nonce", "code_challenge",
                            "code_challenge_method", "client_id", "redirect_uri"}) {
      if (req.get_param_value_count(key) != 1) {
        BadRequestPage(res, std::string("exactly one ") + key + " is required");
        return false;
      }
    }
    if (req.get_param_value("response_type") != "code") {
      BadRequestPage(res, "response_type must be code");
      return false;
    }
    if (!HasScope(req.get_param_value("scope"), "openid")) {
      BadRequestPage(res, "scope must include openid");
      return false;
    }
    const std::string challenge = req.get_param_value("code_challenge");
    if (req.get_param_value("code_challenge_method") != "S256" || challenge.size() != 43) {
      BadRequestPage(res, "PKCE with S256 is required");
      return false;
    }
    if (req.get_param_value("state").size() < 16 || req.get_param_value("nonce").size() < 16) {
      BadRequestPage(res, "state and nonce must be unguessable");
      return false;
    }
    return true;
  };
  server_.Get("/authorize", [check](const httplib::Request& req, httplib::Response& res) {
    if (!check(req, res)) {
      return;
    }
    std::string hidden;
    for (const char* key : {"response_type", "scope", "state", "nonce", "code_challenge",
                            "code_challenge_method", "client_id", "redirect_uri"}) {
      hidden += "<input type=\"hidden\" name=\"" + std::string(key) + "\" value=\"" +
                text::HtmlEscape(req.get_param_value(key)) + "\">";
    }
    res.set_content(
        "<!DOCTYPE html><html><head><title>Example IdP sign-in</title></head><body>"
        "<h1>Example identity provider</h1><form method=\"post\" action=\"/authorize\">" +
            hidden +
            "<label for=\"login\">User name</label><input id=\"login\" name=\"login\">"
            "<button id=\"sign-in\" type=\"submit\">Sign in</button></form></body></html>",
        "text/html; charset=utf-8");
  });
  server_.Post("/authorize", [self, check](const httplib::Request& req, httplib::Response& res) {
    if (!check(req, res)) {
      return;
    }
    const std::string login = req.get_param_value("login");
    {
      std::lock_guard lock(self->mu_);
      if (self->users_.find(login) == self->users_.end()) {
        BadRequestPage(res, "unknown user");
        return;
      }
    }
    const std::string code = crypto::Base64UrlEncode(crypto::RandomBytes(24));
    {
      std::lock_guard lock(self->mu_);
      self->codes_[code] =
          IssuedCode{req.get_param_value("redirect_uri"), req.get_param_value("code_challenge"),
                     req.get_param_value("nonce"), login,
                     std::chrono::steady_clock::now() + std::chrono::seconds(60)};
    }
    res.status = 302;
    res.set_header("Location", req.get_param_value("redirect_uri") + "?code=" + code +
                                   "&state=" + net::PercentEncode(req.get_param_value("state")));
  });
  // The token request (OIDC Core §3.1.3, RFC 6749 §4.1.3, RFC 7636 §4.6).
  server_.Post("/token", [self](const httplib::Request& req, httplib::Response& res) {
    ++self->token_requests_;
    std::optional<LoginClient> client;
    std::string kid;
    {
      std::lock_guard lock(self->mu_);
      client = self->login_client_;
      kid = self->login_kid_;
      self->last_token_authorization_ = req.get_header_value("Authorization");
      self->last_token_body_ = req.body;
    }
    if (!client) {
      return OAuthError(res, 400, "unauthorized_client", "sign-in is not enabled");
    }
    if (req.get_header_value("Content-Type").rfind("application/x-www-form-urlencoded", 0) != 0) {
      return OAuthError(res, 400, "invalid_request", "form body required");
    }
    // Client authentication: Basic (form-encoded parts) or in the body, not both.
    const std::string basic = req.get_header_value("Authorization");
    const bool in_body = req.has_param("client_secret");
    bool authenticated = false;
    if (!basic.empty() && !in_body) {
      const std::string expected =
          "Basic " + crypto::Base64Encode(net::PercentEncode(client->client_id, true) + ":" +
                                          net::PercentEncode(client->client_secret, true));
      authenticated = crypto::ConstantTimeEquals(basic, expected);
    } else if (basic.empty() && in_body) {
      authenticated =
          req.get_param_value("client_id") == client->client_id &&
          crypto::ConstantTimeEquals(req.get_param_value("client_secret"), client->client_secret);
    }
    if (!authenticated) {
      res.set_header("WWW-Authenticate", "Basic");
      return OAuthError(res, 401, "invalid_client", "client authentication failed");
    }
    if (req.get_param_value("grant_type") != "authorization_code") {
      return OAuthError(res, 400, "unsupported_grant_type", "authorization_code only");
    }
    IssuedCode issued;
    {
      std::lock_guard lock(self->mu_);
      auto it = self->codes_.find(req.get_param_value("code"));
      if (it == self->codes_.end()) {
        return OAuthError(res, 400, "invalid_grant", "unknown or used code");
      }
      issued = it->second;
      self->codes_.erase(it);  // one use
    }
    if (std::chrono::steady_clock::now() > issued.expires) {
      return OAuthError(res, 400, "invalid_grant", "code expired");
    }
    if (req.get_param_value("redirect_uri") != issued.redirect_uri) {
      return OAuthError(res, 400, "invalid_grant", "redirect_uri differs");
    }
    const std::string verifier = req.get_param_value("code_verifier");
    if (verifier.size() < 43 || verifier.size() > 128 ||
        crypto::Base64UrlEncode(crypto::Sha256(verifier)) != issued.challenge) {
      return OAuthError(res, 400, "invalid_grant", "PKCE verification failed");
    }
    nlohmann::json claims;
    std::optional<std::string> nonce_override;
    {
      std::lock_guard lock(self->mu_);
      claims = self->users_[issued.login];
      nonce_override = self->nonce_override_;
    }
    const int64_t now = std::chrono::duration_cast<std::chrono::seconds>(
                            std::chrono::system_clock::now().time_since_epoch())
                            .count();
    if (!claims.contains("sub")) {
      claims["sub"] = issued.login;
    }
    claims["iss"] = self->issuer_;
    claims["aud"] = client->client_id;
    claims["iat"] = now;
    claims["exp"] = now + 3600;
    claims["nonce"] = nonce_override.value_or(issued.nonce);
    const std::string id_token = self->Sign(claims, kid);
    res.set_header("Cache-Control", "no-store");
    res.set_content(
        nlohmann::json{{"access_token", crypto::Base64UrlEncode(crypto::RandomBytes(24))},
                       {"token_type", "Bearer"},
                       {"expires_in", 3600},
                       {"id_token", id_token}}
            .dump(),
        "application/json");
  });
}

}  // namespace jitbroker::testing
