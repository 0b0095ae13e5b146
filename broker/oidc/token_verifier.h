// Verification of CI OIDC subject tokens (reference/protocols.md §4.4, §5.2),
// split as google-cloud-cpp splits its token code: pure parsing and checking
// here, key fetching behind the KeySource seam (JwksCache in production, a
// fixed key set in unit tests).
//
// Order of checks, cheapest and network-free first:
//   1. size (≤ kMaxSubjectTokenBytes) and strict compact-JWS structure;
//   2. the header: `alg` in the trust policy's allow-list (so "none", HMAC and
//      anything unlisted fail before a key is looked up), no key-carrying
//      parameters (jku, x5u, jwk, x5c), no `crit`, `typ` absent or JWT;
//   3. the unverified `iss` against the static allow-list (by the caller, via
//      TrustSet::TrustsIssuer, before any network request);
//   4. the key by `kid` from that issuer's JWKS only, paired with `alg`;
//   5. the signature over ASCII(b64(header) "." b64(payload));
//   6. exp (required), nbf, iat (required) with the policy's leeway and
//      maximum age; `aud` (string or array) contains the policy's audience;
//      `sub` present; `jti` present when replay protection is on.
// Claims matching and replay are the caller's next steps (trust_policy.h,
// replay_cache.h).
//
// Errors: kInvalidArgument for a token that is not a well-formed JWS at all
// (RFC 6749 invalid_request); kUnauthenticated for one that fails any check
// (invalid_grant); kUnavailable when the issuer's keys cannot be fetched.
// Messages never contain the token.
//
// Thread-safety: pure functions; KeySource implementations are thread-safe.
#pragma once

#include <cstddef>
#include <memory>
#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

#include "broker/crypto/jose.h"
#include "broker/oidc/trust_policy.h"
#include "jitbroker/clock.h"
#include "jitbroker/result.h"

namespace jitbroker::oidc {

// RFC 8693 token type URIs.
inline constexpr std::string_view kTokenTypeIdToken = "urn:ietf:params:oauth:token-type:id_token";
inline constexpr std::string_view kTokenTypeJwt = "urn:ietf:params:oauth:token-type:jwt";
inline constexpr std::string_view kTokenTypeAccessToken =
    "urn:ietf:params:oauth:token-type:access_token";
inline constexpr std::string_view kGrantTypeTokenExchange =
    "urn:ietf:params:oauth:grant-type:token-exchange";

// GitHub and GitLab tokens are 1–2 KiB; AWS STS accepts up to 20,000
// characters. Anything bigger is refused before it is parsed.
inline constexpr size_t kMaxSubjectTokenBytes = 16384;

// A subject token split but not trusted: only what picks the issuer and the
// key (`iss`, `alg`, `kid`) is read before the signature is verified.
struct UnverifiedToken {
  crypto::DecodedJws jws;
  std::string issuer;  // payload `iss` (unverified)
  std::string alg;     // header `alg`
  std::string kid;     // header `kid`, "" when absent
};

// Steps 1 and 2 without the algorithm allow-list (which is per policy).
// Errors: kInvalidArgument "token_too_large" / "malformed_token";
// kUnauthenticated "embedded_key", "crit_unsupported", "unexpected_typ",
// "missing_issuer", "alg_not_allowed" (none and HMAC, for every policy).
[[nodiscard]] Result<UnverifiedToken> DecodeSubjectToken(std::string_view compact);

// What a key lookup needs to know about the issuer.
struct KeyQuery {
  std::string issuer;       // exact iss of a trust policy
  bool allow_http = false;  // the policy's allow_http (for its jwks_uri)
  std::string kid;          // "" = the token names no key
  std::string alg;          // the header alg (already allowed by the policy)
};

// Where verification keys come from. Implementations must be thread-safe.
class KeySource {
 public:
  virtual ~KeySource() = default;
  // The one key of `query.issuer` that fits kid and alg. Errors:
  // kUnauthenticated "unknown_key" / "ambiguous_key"; kUnavailable
  // "issuer_unavailable" when the keys cannot be fetched.
  [[nodiscard]] virtual Result<std::shared_ptr<const crypto::VerifyKey>> Find(
      const KeyQuery& query) = 0;
};

// Steps 2 (allow-list), 4, 5 and 6 for `policy` (whose issuer must equal the
// token's). Returns the verified claims.
[[nodiscard]] Result<nlohmann::json> VerifySubjectToken(const UnverifiedToken& token,
                                                        const TrustPolicy& policy, KeySource& keys,
                                                        TimePoint now);

// Step 6 alone (pure; exposed for tests). `claims` are verified claims.
[[nodiscard]] Status CheckTimeClaims(const nlohmann::json& claims, const TrustPolicy& policy,
                                     TimePoint now);
[[nodiscard]] Status CheckAudience(const nlohmann::json& claims, std::string_view audience);

}  // namespace jitbroker::oidc
