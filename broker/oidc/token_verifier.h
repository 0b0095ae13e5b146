// Verification of CI OIDC subject tokens (docs/concepts.md "Protocol notes"),
// split as google-cloud-cpp splits its token code: pure parsing and checking
// here, key fetching behind the KeySource seam (JwksCache in production, a
// fixed key set in unit tests).
//
// Order of checks, cheapest and network-free first:
//   1. size (≤ kMaxSubjectTokenBytes) and strict compact-JWS structure;
//   2. the header: no key-carrying parameters (jku, x5u, jwk, x5c), no
//      `crit`, `typ` absent or JWT, never "none" or HMAC;
//   3. the unverified `iss` against the static allow-list (by the caller, via
//      TrustSet::TrustsIssuer, before any network request);
//   4. `alg` in the issuer's allow-list (the union of its policies'
//      `algorithms`), then the key by `kid` from that issuer's JWKS only,
//      paired with `alg`;
//   5. the signature over ASCII(b64(header) "." b64(payload));
//   6. per policy: `alg` in that policy's list, exp (required), nbf, iat
//      (required) with the policy's leeway and maximum age; `aud` (string or
//      array) contains the policy's audience; `sub` present; `jti` present
//      when replay protection is on.
// Steps 1–5 depend on the issuer only (VerifyTokenSignature), so the token
// endpoint verifies the signature before it looks at the requested audience
// or any policy: an unverified token learns nothing about the configuration.
// Claims matching and replay are the caller's next steps (trust_policy.h,
// replay_cache.h).
//
// Errors: kInvalidArgument for a token that is not a well-formed JWS at all
// (RFC 6749 invalid_request); kUnauthenticated for one that fails any check
// (invalid_grant); kUnavailable when the issuer's keys cannot be fetched.
// Messages never contain the token, and never configuration (the
// policy's maximum age, which claim is missing): those go to `detail`,
// which only the broker's log sees.
//
// Thread-safety: pure functions; KeySource implementations are thread-safe.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

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

// Steps 1 and 2 (the algorithm allow-list is the issuer's: step 4).
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

// NumericDates above this (2^33 s, the year 2242) are refused: far-future
// values would overflow TimePoint arithmetic (nanoseconds in int64 end in
// 2262) and make the replay window meaningless.
inline constexpr int64_t kMaxNumericDate = int64_t{1} << 33;

// What verifying a signature needs to know about the issuer.
struct IssuerKeys {
  std::string issuer;                   // exact iss (the token's, already trusted)
  bool allow_http = false;              // the issuer's policies' allow_http
  std::vector<std::string> algorithms;  // union of its policies' algorithms
};

// The allow-list of IssuerKeys for `issuer` in `trust` (every policy of that
// issuer). Empty algorithms when no policy trusts it.
IssuerKeys KeysOfIssuer(const TrustSet& trust, std::string_view issuer);

// Steps 4 and 5: `token.alg` in `issuer.algorithms`, the key from `keys`, the
// signature. Errors: kUnauthenticated "untrusted_issuer" (token.issuer is not
// issuer.issuer), "alg_not_allowed", "unknown_key", "ambiguous_key",
// "invalid_signature", "jws_alg_mismatch"; kUnavailable "issuer_unavailable".
[[nodiscard]] Status VerifyTokenSignature(const UnverifiedToken& token, const IssuerKeys& issuer,
                                          KeySource& keys);

// Step 6 for `policy` on a token whose signature VerifyTokenSignature
// accepted. Returns the claims.
[[nodiscard]] Result<nlohmann::json> CheckVerifiedToken(const UnverifiedToken& token,
                                                        const TrustPolicy& policy, TimePoint now);

// Steps 2 (allow-list), 4, 5 and 6 for `policy` (whose issuer must equal the
// token's): VerifyTokenSignature with the policy alone, then
// CheckVerifiedToken. Returns the verified claims.
[[nodiscard]] Result<nlohmann::json> VerifySubjectToken(const UnverifiedToken& token,
                                                        const TrustPolicy& policy, KeySource& keys,
                                                        TimePoint now);

// Step 6 alone (pure; exposed for tests). `claims` are verified claims.
[[nodiscard]] Status CheckTimeClaims(const nlohmann::json& claims, const TrustPolicy& policy,
                                     TimePoint now);
[[nodiscard]] Status CheckAudience(const nlohmann::json& claims, std::string_view audience);

// The Unix second from which a token with these (verified) claims no longer
// passes CheckTimeClaims under a policy with this maximum age and leeway:
// min(exp, iat + max_token_age_seconds + 1) + leeway_seconds. The replay
// cache keeps a jti until then, and no longer (a far-future exp does not pin
// an entry for ever). Errors as CheckTimeClaims for missing or bad exp/iat.
[[nodiscard]] Result<int64_t> UsableUntilUnix(const nlohmann::json& claims,
                                              int64_t max_token_age_seconds,
                                              int64_t leeway_seconds);

}  // namespace jitbroker::oidc
