// Issuer: a pluggable minting backend (docs/architecture.md "Adding an
// issuer"). It turns an allowed grant into a credential plus a revocation
// handle, and revokes by handle. Issuers know nothing about HTTP serving,
// policy or storage.
//
// An issuer type is a factory (IssuerFactory below) registered by type name
// in issuers/builtin.cc. The factory reads the issuer's config section through
// a ConfigView (jitbroker/config_view.h) and makes
//   - an IssuerSpec (Validate): everything the configuration alone decides —
//     the description, the shape of `scope` and the tier and scope items it
//     implies, how a CI exchange narrows a trust policy's grant, the RFC 8693
//     token type. Validate has no side effects: no key generation, no network,
//     no file written. `jitctl config check`, `jitbroker --check-config` and
//     start-up all run it, so a file the checkers accept also starts;
//   - an Issuer (Create): the spec plus what mints (keys, upstream clients).
//     Create runs only after the whole config has validated.
// The core never switches on an issuer's type: what it needs to know about a
// type is behind these methods.
//
// Thread-safety: every const method of IssuerSpec, and Mint, Revoke,
// PublicJwks, VerifyOwnToken, CheckDelegatedRights and CollectMetrics, are
// called concurrently from request and lifecycle threads; implementations
// must be thread-safe. Factories are called from one thread at a time.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "jitbroker/clock.h"
#include "jitbroker/config_view.h"
#include "jitbroker/http_client.h"
#include "jitbroker/metric_family.h"
#include "jitbroker/policy.h"
#include "jitbroker/result.h"
#include "jitbroker/secret.h"

namespace jitbroker {

enum class Revocability { kRevocable, kDenyByCondition, kExpiryOnly };
std::string_view RevocabilityName(
    Revocability r);  // "revocable", "deny_by_condition", "expiry_only"

struct IssuerDescription {
  std::string name;  // config name, e.g. "internal"
  std::string type;  // "jwt", "github_app", …
  Revocability revocability = Revocability::kExpiryOnly;
  int64_t min_ttl_seconds = 1;
  int64_t default_ttl_seconds = 900;
  int64_t max_ttl_seconds = 3600;
  // True when minting creates a credential outside the broker (GitHub, STS):
  // the grant is then recorded as "minting" before the upstream call, so a
  // crash in between is reconciled at restart instead of forgotten.
  bool mints_upstream = true;
  // The key of policy.principals[].identities this issuer acts for ("github"
  // for github_app: the delegating human's login upstream); empty = none.
  // A principal's identity under a key no configured issuer uses is a
  // configuration error (a typo would silently skip a rights check).
  std::string identity_key;
  // Upstreams the broker's proxy forwards agents' requests to with this
  // issuer's credentials, which the agent then never holds (docs/proxy.md).
  struct ProxyUpstream {
    std::string kind;      // "git" (smart HTTP) or "github_api" (REST)
    std::string host;      // how proxy URLs name it: /git/HOST/…, "github.com", "127.0.0.1:3000"
    std::string base_url;  // where the requests go, without a trailing '/'
  };
  std::vector<ProxyUpstream> proxy_upstreams;
  // This issuer's credentials reach only the proxy: an agent's own grant
  // request for one is refused (kPermissionDenied "proxy_only").
  bool proxy_only = false;
};

struct MintRequest {
  std::string grant_id;
  std::string session_id;
  std::string task_id;
  std::string principal_id;
  std::string agent_id;
  GrantRequest request;
  Tier tier = Tier::kRead;
  int64_t ttl_seconds = 0;  // already clamped by policy
  TimePoint now;
  // The delegating principal's upstream identities (policy
  // principals[].identities, e.g. {"github": "octocat"}); an issuer reads
  // its own key (IssuerDescription::identity_key). Issuers may record them;
  // never a credential.
  std::map<std::string, std::string> principal_identities;
};

struct MintResult {
  // The credential object returned to the client exactly once: non-secret
  // fields in `fields`, secret fields (e.g. "token") in `secrets`.
  std::string type;  // "jwt", …
  nlohmann::json fields = nlohmann::json::object();
  std::vector<std::pair<std::string, SecretValue>> secrets;
  TimePoint expires_at;
  std::string fingerprint_sha256;  // hex SHA-256 of the primary secret
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
  std::string reason;                               // human-readable, for the decision when denied
  std::string matched_rule;                         // e.g. "issuers.github.delegated_rights"
  nlohmann::json audit = nlohmann::json::object();  // non-secret; goes into the grant's audit
};

struct RevokeRequest {
  std::string grant_id;
  SecretValue revocation_handle;
  TimePoint expires_at;
  TimePoint now;
};

enum class RevokeOutcomeKind { kRevoked, kDenyInstalled, kExpiryOnly };
std::string_view RevokeOutcomeName(
    RevokeOutcomeKind k);  // "revoked", "deny_installed", "expiry_only"

struct RevokeOutcome {
  RevokeOutcomeKind kind = RevokeOutcomeKind::kRevoked;
  // Exposure left: expiry_only, the credential's remaining life; deny_installed,
  // how long the deny may take to apply upstream (propagation).
  int64_t residual_seconds = 0;
};

// A trust policy's grant narrowed to what a CI exchange asked for
// (RFC 8693 `scope`).
struct NarrowedScope {
  nlohmann::json scope = nlohmann::json::object();  // the issuer-specific scope to mint with
  std::string scope_text;  // RFC 6749 scope string of what is granted ("" = none named)
};

// RFC 8693 token type URIs (RFC 8693 §3).
inline constexpr std::string_view kTokenTypeAccessToken =
    "urn:ietf:params:oauth:token-type:access_token";
inline constexpr std::string_view kTokenTypeJwt = "urn:ietf:params:oauth:token-type:jwt";

// What an issuer's configuration alone decides (see the file comment). Made
// by IssuerFactory::Validate; every Issuer is also its own spec.
class IssuerSpec {
 public:
  virtual ~IssuerSpec() = default;

  virtual const IssuerDescription& Describe() const = 0;

  // Validates the issuer-specific `scope` of a request and returns the tier it
  // implies (docs/configuration.md "Tiers"). Errors: kInvalidArgument (or
  // kPermissionDenied for a scope beyond the issuer's configured ceiling)
  // with a precise reason; unknown scope keys are refused.
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

  // A CI exchange (POST /v1/token): `grant` is a trust policy's grant (its
  // tool, operation, resource and `scope` as configured; already accepted by
  // CheckTrustGrant) and `requested` the RFC 8693 `scope` tokens the job
  // asked for (distinct, each an RFC 6749 scope-token; nullopt = none asked).
  // Returns the scope to mint with: the grant's, narrowed to the request.
  // Errors: kPermissionDenied "scope_not_granted" for a token outside the
  // grant (never kInvalidArgument: the grant is valid, the request asks too
  // much). Default: nothing to narrow — the whole grant when nothing is
  // asked, and any requested token is not granted.
  [[nodiscard]] virtual Result<NarrowedScope> NarrowScope(
      const GrantRequest& grant, const std::optional<std::vector<std::string>>& requested) const;

  // Checks a trust policy's grant at load (start, reload and `config check`):
  // whether this issuer can mint it for CI jobs. Tier and policy checks are
  // the caller's (broker/oidc/trust_policy.h CheckTrustGrants). Errors:
  // kInvalidArgument saying what is wrong. Default: ImpliedTier and
  // ScopeItems accept the grant and NarrowScope accepts an empty request.
  [[nodiscard]] virtual Status CheckTrustGrant(const GrantRequest& grant) const;

  // The RFC 8693 `issued_token_type` of this issuer's credentials, e.g.
  // "urn:ietf:params:oauth:token-type:jwt". Default: access_token.
  virtual std::string IssuedTokenType() const { return std::string(kTokenTypeAccessToken); }
};

class Issuer : public IssuerSpec {
 public:
  ~Issuer() override = default;

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
  virtual void CollectMetrics(std::vector<MetricFamily>& /*out*/) const {}
};

// For implementations: an Issuer whose IssuerSpec methods are those of a
// spec value it holds — the same type its factory's Validate returns — so
// the validated issuer and the running one cannot disagree. `Spec` is a
// concrete (final) IssuerSpec.
template <class Spec>
class IssuerWithSpec : public Issuer {
 public:
  explicit IssuerWithSpec(Spec spec) : spec_(std::move(spec)) {}

  const IssuerDescription& Describe() const override { return spec_.Describe(); }
  [[nodiscard]] Result<Tier> ImpliedTier(const GrantRequest& request) const override {
    return spec_.ImpliedTier(request);
  }
  [[nodiscard]] Result<std::vector<std::string>> ScopeItems(
      const GrantRequest& request) const override {
    return spec_.ScopeItems(request);
  }
  [[nodiscard]] Result<NarrowedScope> NarrowScope(
      const GrantRequest& grant,
      const std::optional<std::vector<std::string>>& requested) const override {
    return spec_.NarrowScope(grant, requested);
  }
  [[nodiscard]] Status CheckTrustGrant(const GrantRequest& grant) const override {
    return spec_.CheckTrustGrant(grant);
  }
  std::string IssuedTokenType() const override { return spec_.IssuedTokenType(); }

 protected:
  const Spec& spec() const { return spec_; }

 private:
  const Spec spec_;
};

// What a factory gets (owned by the caller; valid during the call).
struct IssuerContext {
  std::string name;  // config name, e.g. "internal"
  // The issuer's mapping ("type" already read). The factory reads every key
  // it accepts and ends with config->CheckNoUnknownKeys().
  ConfigView* config = nullptr;
  std::string data_dir;  // for generated keys (Create only)
  const Clock* clock = nullptr;
  // Shared client for upstream calls (owned by the app, outlives the issuer;
  // thread-safe). Null in Validate, and where no upstream is reachable:
  // issuers that need one then fail to Create.
  HttpClient* http = nullptr;
};

// One issuer type. Both functions parse the same section the same way (write
// one parser and call it from both); Validate must not create anything.
struct IssuerFactory {
  std::function<Result<std::unique_ptr<IssuerSpec>>(IssuerContext&)> validate;
  std::function<Result<std::unique_ptr<Issuer>>(IssuerContext&)> create;
};

}  // namespace jitbroker
