// HumanLogin: the broker as an OpenID Connect relying party for the people
// who use it (docs/console.md "Single sign-on"): the authorization code flow
// with PKCE (RFC 7636, S256) against the company identity provider
// configured under `humans:`, and the check of the ID tokens it issues, both
// at the end of a login and when a principal presents one as a bearer
// credential on the API.
//
//   Begin():    discovery (cached), then a fresh state, nonce and PKCE
//               verifier kept server-side for ten minutes under the state,
//               bound to the browser by a random value the caller sets as a
//               cookie (so a login started in one browser cannot be finished
//               in another: login CSRF);
//   Complete(): the state is taken once (a replayed callback finds nothing),
//               the browser binding compared in constant time, the code
//               redeemed at the token endpoint with the verifier and the
//               client's credentials, and the ID token verified;
//   Verify():   an ID token alone (API bearer; no nonce to check).
//
// ID token checks reuse the CI exchange's verification (token_verifier.h):
// strict compact JWS, no embedded keys, `alg` in humans.algorithms, the key
// from the provider's JWKS (JwksCache), the signature, `exp`/`iat` with the
// leeway and humans.max_token_age_seconds, `aud` containing client_id (and
// `azp` equal to it when there are several audiences); then `nonce` at login,
// and the claim that names the principal: `email` (refused when the provider
// says email_verified is false) matched against principals[].email ignoring
// ASCII case, or `sub` matched against principals[].id. Two principals with
// one email make that email name nobody (fail closed).
//
// Errors: kUnauthenticated with reasons "login_expired" (unknown or used
// state), "browser_mismatch", "provider_denied" (the provider answered with
// an error), "invalid_id_token", "nonce_mismatch", "unverified_email",
// "unknown_principal"; kUnavailable "provider_unavailable" (discovery or
// token endpoint unreachable or answering badly). Messages never hold a
// token, a code or the client secret.
//
// Thread-safety: all methods may be called from many threads at once.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>

#include "broker/config/config.h"
#include "broker/net/http_client.h"
#include "broker/oidc/token_verifier.h"
#include "jitbroker/clock.h"
#include "jitbroker/policy.h"
#include "jitbroker/result.h"
#include "jitbroker/secret.h"

namespace jitbroker::oidc {

// Where a login started, and so where it comes back to.
struct LoginStart {
  std::string authorization_url;  // the provider's, with state, nonce and the PKCE challenge
  SecretValue browser_binding;    // for the caller's cookie; Complete() needs it back
};

struct HumanIdentity {
  std::string principal_id;
  std::string subject;   // the provider's `sub`
  std::string email;     // the verified email, when the token has one
  TimePoint expires_at;  // the ID token's `exp`
  SecretValue id_token;  // the compact ID token (a bearer credential on the API)
};

struct CompletedLogin {
  HumanIdentity identity;
  std::string return_to;  // as given to Begin()
};

class HumanLogin {
 public:
  struct Options {
    config::HumansConfig config;
    Seconds pending_ttl{600};    // how long a started login may take
    size_t max_pending = 10000;  // started logins kept; the oldest is dropped beyond
    Seconds discovery_max_age{3600};
    std::chrono::milliseconds timeout{10000};  // per request to the provider
  };
  // `http`, `keys` and `clock` are not owned and must outlive this object.
  HumanLogin(Options options, net::HttpClient* http, KeySource* keys, const Clock* clock);

  const config::HumansConfig& config() const { return options_.config; }

  // Starts a login that will come back to `return_to` (the caller checks it).
  [[nodiscard]] Result<LoginStart> Begin(std::string return_to);
  // The provider's redirect to redirect_url: its `state`, and `code` or
  // `error`; `binding` is the browser's cookie from Begin().
  [[nodiscard]] Result<CompletedLogin> Complete(std::string_view state, std::string_view code,
                                                std::string_view error, std::string_view binding,
                                                const jitbroker::Policy& policy);
  // An ID token of the provider presented on its own (API bearer).
  [[nodiscard]] Result<HumanIdentity> Verify(std::string_view id_token,
                                             const jitbroker::Policy& policy);
  // Whether `bearer` has the shape of a compact JWS (three base64url parts):
  // the only bearers Authenticate hands to Verify().
  static bool LooksLikeJwt(std::string_view bearer);

  size_t pending_logins() const;

 private:
  struct Endpoints {
    std::string authorization;
    std::string token;
    TimePoint fetched_at;
  };
  struct Pending {
    std::string verifier;
    std::string nonce;
    std::string binding_sha256;
    std::string return_to;
    TimePoint created;
  };

  Result<Endpoints> Discover();
  Result<std::string> RedeemCode(const Endpoints& endpoints, std::string_view code,
                                 const std::string& verifier);
  // Signature and standard claims; `nonce` is checked when non-null.
  Result<HumanIdentity> CheckIdToken(std::string_view id_token, const std::string* nonce,
                                     const jitbroker::Policy& policy);
  void PruneLocked(TimePoint now);

  const Options options_;
  net::HttpClient* http_;
  KeySource* keys_;
  const Clock* clock_;

  mutable std::mutex mu_;
  std::optional<Endpoints> endpoints_;      // guarded by mu_
  std::map<std::string, Pending> pending_;  // by state; guarded by mu_
  std::deque<std::string> pending_order_;   // states, oldest first; guarded by mu_
};

}  // namespace jitbroker::oidc
