#include "broker/oidc/token_verifier.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <exception>
#include <optional>
#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

#include "broker/common/text.h"
#include "broker/crypto/jose.h"

namespace jitbroker::oidc {

namespace {

using nlohmann::json;

constexpr size_t kMaxKidBytes = 256;
constexpr size_t kMaxIssuerBytes = 2048;
constexpr size_t kMaxSubBytes = 4096;
constexpr size_t kMaxJtiBytes = 256;
constexpr size_t kMaxAudiences = 16;

Error Invalid(std::string reason, std::string message, std::string detail = {}) {
  Error e = Unauthenticated(std::move(reason), std::move(message));
  e.detail = std::move(detail);
  return e;
}

// A NumericDate (RFC 7519 §2: seconds, possibly fractional), floored.
// nullopt when absent; an error when present but not a sane number.
Result<std::optional<int64_t>> NumericDate(const json& claims, const char* name) {
  auto it = claims.find(name);
  if (it == claims.end()) {
    return std::optional<int64_t>();
  }
  int64_t v = 0;
  if (it->is_number_integer()) {
    if (it->is_number_unsigned() && it->get<uint64_t>() > static_cast<uint64_t>(kMaxNumericDate)) {
      return std::unexpected(Invalid("invalid_claim", std::string(name) + " is out of range"));
    }
    v = it->get<int64_t>();
  } else if (it->is_number_float()) {
    const double d = it->get<double>();
    if (!std::isfinite(d) || d < 0 || d > static_cast<double>(kMaxNumericDate)) {
      return std::unexpected(Invalid("invalid_claim", std::string(name) + " is out of range"));
    }
    v = static_cast<int64_t>(std::floor(d));
  } else {
    return std::unexpected(
        Invalid("invalid_claim", std::string(name) + " must be a NumericDate (seconds)"));
  }
  if (v < 0 || v > kMaxNumericDate) {
    return std::unexpected(Invalid("invalid_claim", std::string(name) + " is out of range"));
  }
  return std::optional<int64_t>(v);
}

}  // namespace

Result<UnverifiedToken> DecodeSubjectToken(std::string_view compact) {
  if (compact.size() > kMaxSubjectTokenBytes) {
    return std::unexpected(InvalidArgument(
        "token_too_large",
        "subject_token exceeds " + std::to_string(kMaxSubjectTokenBytes) + " bytes"));
  }
  auto decoded = crypto::DecodeJws(compact, kMaxSubjectTokenBytes);
  if (!decoded) {
    return std::unexpected(InvalidArgument(
        "malformed_token", "subject_token is not a compact JWS: " + decoded.error().message));
  }
  UnverifiedToken out;
  try {
    const json& header = decoded->header;
    out.alg = header.at("alg").get<std::string>();  // DecodeJws guarantees a string alg
    // Refused for every policy, before any lookup: unsigned and MAC tokens
    // cannot come from an asymmetric OIDC issuer.
    const std::string alg_lower = text::AsciiLower(out.alg);
    if (alg_lower == "none" || alg_lower.starts_with("hs")) {
      return std::unexpected(
          Invalid("alg_not_allowed", "subject_token alg " +
                                         std::string(alg_lower == "none" ? "none" : "HMAC") +
                                         " is never accepted"));
    }
    for (const char* name : {"jku", "x5u", "jwk", "x5c"}) {
      if (header.contains(name)) {
        return std::unexpected(Invalid(
            "embedded_key", "subject_token headers that carry or reference keys are refused"));
      }
    }
    if (header.contains("crit")) {
      return std::unexpected(Invalid("crit_unsupported",
                                     "subject_token critical header extensions are not supported"));
    }
    if (auto typ = header.find("typ"); typ != header.end()) {
      const std::string typ_lower =
          typ->is_string() ? text::AsciiLower(typ->get_ref<const std::string&>()) : "";
      if (typ_lower != "jwt" && typ_lower != "application/jwt") {
        return std::unexpected(
            Invalid("unexpected_typ", "subject_token typ must be JWT (explicit typing, RFC 8725)"));
      }
    }
    if (auto kid = header.find("kid"); kid != header.end()) {
      if (!kid->is_string() || kid->get_ref<const std::string&>().size() > kMaxKidBytes ||
          text::HasControlChar(kid->get_ref<const std::string&>())) {
        return std::unexpected(
            Invalid("invalid_header", "subject_token kid must be a short printable string"));
      }
      out.kid = kid->get<std::string>();
    }
    auto iss = decoded->payload.find("iss");
    if (iss == decoded->payload.end() || !iss->is_string() ||
        iss->get_ref<const std::string&>().empty() ||
        iss->get_ref<const std::string&>().size() > kMaxIssuerBytes) {
      return std::unexpected(Invalid("missing_issuer", "subject_token has no usable iss claim"));
    }
    out.issuer = iss->get<std::string>();
  } catch (const std::exception&) {
    return std::unexpected(InvalidArgument("malformed_token", "subject_token could not be read"));
  }
  out.jws = std::move(*decoded);
  return out;
}

Status CheckTimeClaims(const json& claims, const TrustPolicy& policy, TimePoint now_tp) {
  const int64_t now = ToUnixSeconds(now_tp);
  const int64_t leeway = policy.leeway_seconds;
  JITBROKER_ASSIGN_OR_RETURN(std::optional<int64_t> exp, NumericDate(claims, "exp"));
  JITBROKER_ASSIGN_OR_RETURN(std::optional<int64_t> nbf, NumericDate(claims, "nbf"));
  JITBROKER_ASSIGN_OR_RETURN(std::optional<int64_t> iat, NumericDate(claims, "iat"));
  if (!exp) {
    return std::unexpected(
        Invalid("missing_claim", "subject_token lacks a required claim", "no exp claim"));
  }
  if (now >= *exp + leeway) {
    return std::unexpected(Invalid("token_expired", "subject_token has expired"));
  }
  if (nbf && now < *nbf - leeway) {
    return std::unexpected(Invalid("token_not_yet_valid", "subject_token is not valid yet"));
  }
  if (!iat) {
    return std::unexpected(
        Invalid("missing_claim", "subject_token lacks a required claim", "no iat claim"));
  }
  if (*iat > now + leeway) {
    return std::unexpected(
        Invalid("token_not_yet_valid", "subject_token is not valid yet", "iat is in the future"));
  }
  if (now - *iat > policy.max_token_age_seconds + leeway) {
    // The configured maximum age stays out of the client-facing message.
    return std::unexpected(Invalid("token_too_old", "subject_token is too old",
                                   "issued " + std::to_string(now - *iat) +
                                       " s ago; trust policy " + policy.name + " accepts at most " +
                                       std::to_string(policy.max_token_age_seconds) + " s"));
  }
  return OkStatus();
}

Result<int64_t> UsableUntilUnix(const json& claims, int64_t max_token_age_seconds,
                                int64_t leeway_seconds) {
  JITBROKER_ASSIGN_OR_RETURN(std::optional<int64_t> exp, NumericDate(claims, "exp"));
  JITBROKER_ASSIGN_OR_RETURN(std::optional<int64_t> iat, NumericDate(claims, "iat"));
  if (!exp || !iat) {
    return std::unexpected(
        Invalid("missing_claim", "subject_token lacks a required claim", "no exp or iat claim"));
  }
  // CheckTimeClaims accepts while now < exp + leeway and
  // now <= iat + max_age + leeway. Both dates are at most kMaxNumericDate
  // (2^33) and the age and leeway at most a day: no overflow, in seconds or
  // as a TimePoint (nanoseconds).
  return std::min(*exp, *iat + max_token_age_seconds + 1) + leeway_seconds;
}

Status CheckAudience(const json& claims, std::string_view audience) {
  auto it = claims.find("aud");
  if (it == claims.end()) {
    return std::unexpected(Invalid("wrong_audience", "subject_token has no aud claim"));
  }
  if (it->is_string()) {
    if (it->get_ref<const std::string&>() == audience) {
      return OkStatus();
    }
  } else if (it->is_array() && !it->empty() && it->size() <= kMaxAudiences) {
    bool found = false;
    for (const json& a : *it) {
      if (!a.is_string()) {
        return std::unexpected(Invalid("wrong_audience", "subject_token aud must hold strings"));
      }
      found = found || a.get_ref<const std::string&>() == audience;
    }
    if (found) {
      return OkStatus();
    }
  } else {
    return std::unexpected(Invalid(
        "wrong_audience", "subject_token aud must be a string or a short array of strings"));
  }
  return std::unexpected(
      Invalid("wrong_audience", "subject_token aud does not contain this broker's audience"));
}

IssuerKeys KeysOfIssuer(const TrustSet& trust, std::string_view issuer) {
  IssuerKeys out;
  out.issuer = std::string(issuer);
  for (const TrustPolicy& p : trust.policies) {
    if (p.issuer != issuer) {
      continue;
    }
    out.allow_http = p.allow_http;  // the parser makes it agree across the issuer's policies
    for (const std::string& a : p.algorithms) {
      if (std::find(out.algorithms.begin(), out.algorithms.end(), a) == out.algorithms.end()) {
        out.algorithms.push_back(a);
      }
    }
  }
  return out;
}

Status VerifyTokenSignature(const UnverifiedToken& token, const IssuerKeys& issuer,
                            KeySource& keys) {
  if (token.issuer != issuer.issuer) {
    return std::unexpected(Invalid("untrusted_issuer", "subject_token issuer is not trusted"));
  }
  if (std::find(issuer.algorithms.begin(), issuer.algorithms.end(), token.alg) ==
      issuer.algorithms.end()) {
    return std::unexpected(
        Invalid("alg_not_allowed", "subject_token alg is not allowed for its issuer"));
  }
  // The header alg is one of RS256/ES256/Ed25519/EdDSA here; ParseJwsAlg pairs
  // it with the key type, and VerifyDecodedJws rejects a key of another type.
  JITBROKER_ASSIGN_OR_RETURN(
      std::shared_ptr<const crypto::VerifyKey> key,
      keys.Find(KeyQuery{issuer.issuer, issuer.allow_http, token.kid, token.alg}));
  if (Status st = crypto::VerifyDecodedJws(token.jws, *key); !st) {
    return std::unexpected(Invalid(std::string(st.error().Reason()), st.error().message));
  }
  return OkStatus();
}

Result<json> CheckVerifiedToken(const UnverifiedToken& token, const TrustPolicy& policy,
                                TimePoint now) {
  if (token.issuer != policy.issuer) {
    return std::unexpected(Invalid("untrusted_issuer", "subject_token issuer is not trusted"));
  }
  if (!policy.AllowsAlgorithm(token.alg)) {
    return std::unexpected(
        Invalid("alg_not_allowed", "subject_token alg is not allowed for its issuer",
                "alg " + token.alg + " is not in trust policy " + policy.name + "'s algorithms"));
  }
  const json& claims = token.jws.payload;
  try {
    JITBROKER_RETURN_IF_ERROR(CheckTimeClaims(claims, policy, now));
    JITBROKER_RETURN_IF_ERROR(CheckAudience(claims, policy.audience));
    auto sub = claims.find("sub");
    if (sub == claims.end() || !sub->is_string() || sub->get_ref<const std::string&>().empty() ||
        sub->get_ref<const std::string&>().size() > kMaxSubBytes) {
      return std::unexpected(
          Invalid("missing_claim", "subject_token lacks a required claim", "no usable sub claim"));
    }
    if (policy.replay_protection) {
      auto jti = claims.find("jti");
      if (jti == claims.end() || !jti->is_string() || jti->get_ref<const std::string&>().empty() ||
          jti->get_ref<const std::string&>().size() > kMaxJtiBytes) {
        return std::unexpected(Invalid("missing_claim", "subject_token lacks a required claim",
                                       "no usable jti claim (replay protection is on)"));
      }
    }
  } catch (const std::exception&) {
    return std::unexpected(Invalid("invalid_claim", "subject_token claims could not be read"));
  }
  return claims;
}

Result<json> VerifySubjectToken(const UnverifiedToken& token, const TrustPolicy& policy,
                                KeySource& keys, TimePoint now) {
  if (token.issuer != policy.issuer) {
    return std::unexpected(Invalid("untrusted_issuer", "subject_token issuer is not trusted"));
  }
  JITBROKER_RETURN_IF_ERROR(VerifyTokenSignature(
      token, IssuerKeys{policy.issuer, policy.allow_http, policy.algorithms}, keys));
  return CheckVerifiedToken(token, policy, now);
}

}  // namespace jitbroker::oidc
