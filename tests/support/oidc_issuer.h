// FakeOidcIssuer: a local OIDC issuer for tests and the exchange benchmark.
// It serves discovery (/.well-known/openid-configuration) and a JWKS
// (/.well-known/jwks, as GitHub does) on 127.0.0.1 with a port chosen by the
// kernel, from keys generated at run time (RS256, ES256, Ed25519), and signs
// tokens with them. No private key is ever written to disk.
//
// The issuer URL is "http://127.0.0.1:PORT" (a broker trusts it only with
// allow_http: true). Knobs let tests break it on purpose: a discovery
// document naming another issuer, an oversized JWKS, a slow JWKS, unpublished
// keys (rotation), and counters of the requests it served.
//
// Thread-safety: all methods are thread-safe; the server runs on its own
// threads until the object is destroyed.
#pragma once

#include <atomic>
#include <chrono>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>

#include <httplib.h>
#include <nlohmann/json.hpp>

#include "broker/crypto/jose.h"

namespace jitbroker::testing {

class FakeOidcIssuer {
 public:
  ~FakeOidcIssuer();
  // Starts serving; returns nullptr if the server cannot start.
  static std::unique_ptr<FakeOidcIssuer> Start();

  const std::string& issuer() const { return issuer_; }
  int port() const { return port_; }

  // Generates a key, publishes it in the JWKS and returns its kid (`kid`, or
  // the RFC 7638 thumbprint when empty).
  std::string AddKey(crypto::JwsAlg alg, const std::string& kid = "");
  // Removes the key from the JWKS; it can still sign (a rotated-out key).
  void Unpublish(const std::string& kid);
  // Publishes again a key added earlier.
  void Publish(const std::string& kid);

  // Signs `claims` with key `kid`. `header` members are added to the JOSE
  // header (alg and kid are set from the key unless given).
  std::string Sign(const nlohmann::json& claims, const std::string& kid,
                   nlohmann::json header = nlohmann::json::object()) const;
  // The public JWK of `kid` (with kid, alg, use).
  nlohmann::json PublicJwk(const std::string& kid) const;

  // Realistic claim sets (docs/concepts.md "OIDC tokens"), issued now.
  // GitHub: push to refs/heads/main of acme/payment-service (owner id 123,
  // repository id 456), run 9876543 attempt 1, classic sub format.
  nlohmann::json GitHubClaims(const std::string& audience, int64_t now_unix) const;
  // GitLab: branch main of acme/payments (namespace 77, project 4242),
  // pipeline 555, job 777.
  nlohmann::json GitLabClaims(const std::string& audience, int64_t now_unix) const;

  // GitHub Actions' token request endpoint (ACTIONS_ID_TOKEN_REQUEST_URL):
  // GET /_apis/idtoken?api-version=2.0&audience=AUD with "Authorization:
  // Bearer <request_token>" answers {"value": <GitHubClaims(AUD) signed by kid>}.
  void EnableActionsTokenEndpoint(const std::string& request_token, const std::string& kid);
  std::string ActionsTokenRequestUrl() const { return issuer_ + "/_apis/idtoken?api-version=2.0"; }
  std::string last_actions_audience() const;

  // The authorization code flow with PKCE for human sign-in (OIDC Core §3.1,
  // RFC 7636), as a company identity provider serves it (oidc_provider.cc):
  // GET /authorize checks the request (response_type=code, the registered
  // client and exact redirect_uri, scope with openid, state, nonce, an S256
  // code_challenge) and shows a sign-in form; POST /authorize with the
  // user's `login` redirects to redirect_uri with a one-time code (60 s);
  // POST /token authenticates the client (HTTP Basic or client_secret_post),
  // checks the code, redirect_uri and code_verifier and answers an ID token
  // signed with `kid` (iss, sub, aud, exp, iat, nonce, email,
  // email_verified). Errors are RFC 6749 JSON ({"error": …}) or, before a
  // redirect_uri is trusted, a 400 page.
  struct LoginClient {
    std::string client_id;
    std::string client_secret;
    std::string redirect_uri;
  };
  void EnableLogin(LoginClient client, const std::string& kid);
  // A user who can sign in as `login`; `claims` are added to the ID token
  // (sub defaults to the login).
  void AddUser(const std::string& login, nlohmann::json claims);
  int token_requests() const { return token_requests_.load(); }
  // The Authorization header and body of the last token request (tests
  // check how the client authenticated).
  std::string last_token_authorization() const;
  std::string last_token_body() const;
  // Knob: the next ID tokens carry this nonce instead of the request's.
  void SetNonceOverride(std::optional<std::string> nonce);

  // Test knobs.
  void SetDiscoveryIssuer(const std::string& iss);        // "" = the real one
  void SetJwksOverride(std::optional<std::string> body);  // raw JWKS body
  void SetJwksDelay(std::chrono::milliseconds delay);
  int discovery_hits() const { return discovery_hits_.load(); }
  int jwks_hits() const { return jwks_hits_.load(); }

  // A compact JWS built by hand (no signing key): for alg none, HMAC and
  // other forgeries. `signature` is raw bytes.
  static std::string Compact(const nlohmann::json& header, const nlohmann::json& payload,
                             const std::string& signature);

 private:
  FakeOidcIssuer() = default;
  struct Key {
    std::unique_ptr<crypto::SigningKey> key;
    bool published = true;
  };
  std::string JwksBody() const;

  httplib::Server server_;
  std::thread thread_;
  std::string issuer_;
  int port_ = 0;
  mutable std::mutex mu_;
  std::map<std::string, Key> keys_;           // guarded by mu_
  std::string discovery_issuer_;              // guarded by mu_
  std::optional<std::string> jwks_override_;  // guarded by mu_
  std::chrono::milliseconds jwks_delay_{0};   // guarded by mu_
  std::string actions_request_token_;         // guarded by mu_; "" = endpoint off
  std::string actions_kid_;                   // guarded by mu_
  std::string last_actions_audience_;         // guarded by mu_
  struct IssuedCode {
    std::string redirect_uri;
    std::string challenge;
    std::string nonce;
    std::string login;
    std::chrono::steady_clock::time_point expires;
  };
  void InstallLoginRoutes();
  bool login_enabled() const {
    std::lock_guard lock(mu_);
    return login_client_.has_value();
  }
  std::optional<LoginClient> login_client_;      // guarded by mu_
  std::string login_kid_;                        // guarded by mu_
  std::map<std::string, nlohmann::json> users_;  // guarded by mu_
  std::map<std::string, IssuedCode> codes_;      // guarded by mu_
  std::string last_token_authorization_;         // guarded by mu_
  std::string last_token_body_;                  // guarded by mu_
  std::optional<std::string> nonce_override_;    // guarded by mu_
  std::atomic<int> token_requests_{0};
  std::atomic<int> discovery_hits_{0};
  std::atomic<int> jwks_hits_{0};
};

}  // namespace jitbroker::testing
