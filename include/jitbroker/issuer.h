// Issuer: a pluggable minting backend (docs/concepts.md "Issuers"). It turns an allowed grant
// into a credential plus a revocation handle, and revokes by handle. Issuers
// know nothing about HTTP, policy or storage; they are built from config by
// the registry in issuers/ and owned by the policy/issuer snapshot.
//
// Thread-safety: Mint, Revoke, ImpliedTier, ScopeItems, PublicJwks,
// VerifyOwnToken, CheckDelegatedRights and CollectMetrics are called
// concurrently from request and lifecycle threads; implementations must be
// thread-safe.
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
  // The delegating principal's GitHub login (policy principals[].github_login),
  // empty when none is configured. Issuers may record it; never a credential.
  std::string principal_github_login;
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
  // Set when the upstream credential outlives `expires_at` (a GitHub
  // installation token always lives an hour, whatever the grant's TTL): the
  // service then revokes it upstream when the grant expires and keeps the
  // sealed handle until this time at the latest.
  std::optional<TimePoint> upstream_expires_at;
};

// The outcome of an issuer's check of the delegating human's own rights on
// the upstream (docs/concepts.md "Principles"), e.g. GitHub's collaborator permission.
struct DelegationCheck {
  bool allowed = true;
  std::string reason;               // human-readable, for the decision when denied
  std::string matched_rule;         // e.g. "issuers.github.delegated_rights"
  nlohmann::json audit = nlohmann::json::object();  // non-secret; goes into the grant's audit
};

// One Prometheus metric family an issuer exports (gauges and counters only).
struct IssuerMetricFamily {
  std::string name;                 // e.g. "jitbroker_github_ratelimit_remaining"
  std::string type;                 // "gauge" | "counter"
  std::string help;
  // Label text without braces ("issuer=\"github\",resource=\"core\"") and value.
  std::vector<std::pair<std::string, double>> samples;
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
  // implies (docs/concepts.md "Decisions"). Errors: kInvalidArgument with a precise reason.
  [[nodiscard]] virtual Result<Tier> ImpliedTier(const GrantRequest& request) const = 0;

  // The scope items of `request`: what the credential will authorise, one
  // string per grantable unit in the issuer's own vocabulary (a jwt issuer's
  // `scope` claim entries, "deploy"; a GitHub permission, "contents:write").
  // Evaluation bounds them by the task scope's and the roles' `scopes` and
  // tool rules match them with `match.scopes` (docs/configuration.md).
  // An issuer whose credentials carry no such units returns none (the
  // default). Errors: as ImpliedTier, for a request ImpliedTier refuses.
  [[nodiscard]] virtual Result<std::vector<std::string>> ScopeItems(
      const GrantRequest& /*request*/) const {
    return std::vector<std::string>{};
  }

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

  // Checks that the delegating principal may themselves do what `request`
  // asks upstream. Called after policy allowed (or made pending) a grant and
  // before anything is minted. Default: allowed, nothing to audit. An Error
  // means the check could not be made (e.g. upstream unavailable): the grant
  // is then refused with that error, never silently allowed.
  [[nodiscard]] virtual Result<DelegationCheck> CheckDelegatedRights(
      const GrantRequest& /*request*/, const Principal& /*principal*/) {
    return DelegationCheck{};
  }

  // Appends this issuer's metric families (rate limits, upstream calls, …)
  // for GET /metrics. Must be cheap and thread-safe.
  virtual void CollectMetrics(std::vector<IssuerMetricFamily>& /*out*/) const {}
};

}  // namespace jitbroker
