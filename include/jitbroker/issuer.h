// Issuer: a pluggable minting backend (DESIGN §6). It turns an allowed grant
// into a credential plus a revocation handle, and revokes by handle. Issuers
// know nothing about HTTP, policy or storage; they are built from config by
// the registry in issuers/ and owned by the policy/issuer snapshot.
//
// Thread-safety: Mint, Revoke, ImpliedTier, PublicJwks and Introspect are
// called concurrently from request and lifecycle threads; implementations
// must be thread-safe.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "jitbroker/clock.h"
#include "jitbroker/policy.h"
#include "jitbroker/result.h"
#include "jitbroker/secret.h"

namespace jitbroker {

enum class Revocability { kRevocable, kDenyByCondition, kExpiryOnly };
std::string_view RevocabilityName(Revocability r);  // "revocable", "deny_by_condition", "expiry_only"

struct IssuerDescription {
  std::string name;                 // config name, e.g. "internal"
  std::string type;                 // "jwt", "github_app", …
  Revocability revocability = Revocability::kExpiryOnly;
  int64_t min_ttl_seconds = 1;
  int64_t default_ttl_seconds = 900;
  int64_t max_ttl_seconds = 3600;
  // True when minting creates a credential outside the broker (GitHub, STS):
  // the grant is then recorded as "minting" before the upstream call, so a
  // crash in between is reconciled at restart instead of forgotten.
  bool mints_upstream = true;
};

struct MintRequest {
  std::string grant_id;
  std::string session_id;
  std::string task_id;
  std::string principal_id;
  std::string agent_id;
  GrantRequest request;
  Tier tier = Tier::kRead;
  int64_t ttl_seconds = 0;          // already clamped by policy
  TimePoint now;
};

struct MintResult {
  // The credential object returned to the client exactly once: non-secret
  // fields in `fields`, secret fields (e.g. "token") in `secrets`.
  std::string type;                                        // "jwt", …
  nlohmann::json fields = nlohmann::json::object();
  std::vector<std::pair<std::string, SecretValue>> secrets;
  TimePoint expires_at;
  std::string fingerprint_sha256;   // hex SHA-256 of the primary secret
  // What Revoke needs later. Sealed before it touches storage when `secret`.
  SecretValue revocation_handle;
  nlohmann::json audit_fields = nlohmann::json::object();  // non-secret, e.g. installation_id
};

struct RevokeRequest {
  std::string grant_id;
  SecretValue revocation_handle;
  TimePoint expires_at;
  TimePoint now;
};

enum class RevokeOutcomeKind { kRevoked, kDenyInstalled, kExpiryOnly };
std::string_view RevokeOutcomeName(RevokeOutcomeKind k);  // "revoked", "deny_installed", "expiry_only"

struct RevokeOutcome {
  RevokeOutcomeKind kind = RevokeOutcomeKind::kRevoked;
  int64_t residual_seconds = 0;     // exposure left for expiry_only
};

class Issuer {
 public:
  virtual ~Issuer() = default;

  virtual const IssuerDescription& Describe() const = 0;

  // Validates the issuer-specific `scope` of a request and returns the tier it
  // implies (DESIGN §5). Errors: kInvalidArgument with a precise reason.
  [[nodiscard]] virtual Result<Tier> ImpliedTier(const GrantRequest& request) const = 0;

  [[nodiscard]] virtual Result<MintResult> Mint(const MintRequest& request) = 0;

  // Revocation must be idempotent: revoking an already revoked or expired
  // credential succeeds.
  [[nodiscard]] virtual Result<RevokeOutcome> Revoke(const RevokeRequest& request) = 0;

  // Public keys this issuer signs with, as JWK objects (jwt issuers only).
  virtual std::vector<nlohmann::json> PublicJwks() const { return {}; }

  // If `token` was minted by this issuer and its signature verifies, its
  // claims (whether or not expired); otherwise nullopt.
  virtual std::optional<nlohmann::json> VerifyOwnToken(std::string_view /*token*/) const {
    return std::nullopt;
  }
};

}  // namespace jitbroker
