// Trust policies (docs/configuration.md "trust"; docs/concepts.md "OIDC tokens"):
// which CI OIDC identities (issuer + claims) may mint what, without any
// secret stored in CI. Parse → compile → check, as octo-sts does:
//
//   ParseTrustPolicies  reads the `trust:` list strictly (unknown and duplicate
//                       keys, wrong types, unsafe issuers and policies that
//                       trust the whole world are errors naming file:line:key)
//                       and compiles every claim pattern once;
//   CheckTrustGrants    checks each grant against its issuer
//                       (IssuerSpec::CheckTrustGrant) and the tier policy;
//   CheckClaims         matches verified claims against one policy;
//   NarrowScope         intersects the policy's grant with a requested scope
//                       (IssuerSpec::NarrowScope: the issuer knows its scope).
//
// Nothing here knows an issuer type's scope shape: the keys of `grant:`
// beyond issuer, resource, tool, operation, ttl_seconds, max_tier and scope
// are moved into the issuer-specific scope as they are, and the issuer
// checks them.
//
// Claim patterns are the policy matchers (include/jitbroker/policy.h): an
// exact value, a glob whose `*` never spans '/' or ':', or an anchored
// "re:" regular expression; a YAML list means "any of". Claim values are
// normalised before matching: strings as they are, booleans "true"/"false",
// integers in decimal (GitHub sends ids as strings, GitLab's runner_id is a
// number). Floats, arrays, objects and null never match.
//
// `sub` is matched as sent and, for GitHub Actions, a name-form
// "repo:OWNER/REPO:…" also as its immutable form
// "repo:OWNER@OWNER_ID/REPO@REPO_ID:…" (docs/concepts.md "OIDC tokens") built from the
// token's own signed id claims, so a policy written with ids matches both
// formats. Never the other way: an id-form sub is not turned into a name
// form, so a policy written with names does not match it (names can be
// re-registered; ids cannot). A ':' inside a sub value is "%3A" on the wire
// and is matched as such; it can never fake a segment.
//
// Thread-safety: a parsed TrustSet is immutable and shared read-only; the free
// functions are pure.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "broker/config/config.h"
#include "jitbroker/issuer.h"
#include "jitbroker/policy.h"
#include "jitbroker/result.h"

namespace jitbroker::oidc {

// The principal of a CI session is "trust:<policy name>" (config principal ids
// cannot contain ':', so it never collides with a human principal).
inline constexpr std::string_view kPrincipalPrefix = "trust:";

// Bounds enforced by the parser.
inline constexpr size_t kMaxTrustPolicies = 256;
inline constexpr size_t kMaxClaimRules = 32;
inline constexpr size_t kMaxClaimAlternatives = 32;
inline constexpr int64_t kMaxLeewaySeconds = 60;  // ≤ 60 s: docs/concepts.md "OIDC tokens"
inline constexpr int64_t kMaxTokenAgeSeconds = 86400;
// Requested scopes (RFC 6749 §3.3): at most this many tokens of this length.
inline constexpr size_t kMaxScopeTokens = 64;
inline constexpr size_t kMaxScopeTokenBytes = 256;

// Which CI system an issuer is; decides the safety lint (which claims pin a
// tenant) and how the CI run is keyed. Detected from the issuer URL for
// github.com, GHE.com, GHES (…/_services/token) and gitlab.com; any other
// issuer must set `provider: github | gitlab | generic` (a self-managed
// GitLab is not "generic": it needs GitLab's tenant lint). A generic policy
// must pin `sub` exactly plus one more claim exactly.
enum class Provider { kGitHubActions, kGitLab, kGeneric };
std::string_view ProviderName(Provider p);  // "github_actions", "gitlab", "generic"
Provider DetectProvider(std::string_view issuer_url);

struct ClaimRule {
  std::string claim;            // e.g. "repository_owner_id"
  std::vector<Matcher> any_of;  // matches when one of them matches
};

// What an allowed exchange mints: one grant request run through the normal
// policy path, with the trust policy as principal.
struct TrustGrant {
  std::string issuer;    // a configured broker issuer (issuers:)
  std::string resource;  // e.g. "jwt://mcp.internal", "github://acme/payment-service"
  std::string tool = "ci.token_exchange";
  std::string operation = "read";
  nlohmann::json scope = nlohmann::json::object();  // issuer-specific (IssuerSpec)
  std::optional<int64_t> ttl_seconds;               // absent: the issuer's default
  Tier max_tier = Tier::kRead;                      // ceiling of the implicit session's task scope
};

struct TrustPolicy {
  std::string name;
  std::string issuer;    // exact `iss`, trailing slash included
  std::string audience;  // must be one of the token's `aud`
  Provider provider = Provider::kGeneric;
  std::vector<ClaimRule> claims;
  TrustGrant grant;
  std::vector<std::string> algorithms = {"RS256"};  // JOSE `alg` names allowed for this issuer
  bool allow_http = false;                          // only for an http:// issuer on a loopback host
  int64_t max_token_age_seconds = 900;              // now - iat at most this
  int64_t leeway_seconds = 30;                      // clock skew allowed on exp/nbf/iat
  bool replay_protection = true;       // each (issuer, jti) is exchanged once while usable
  int64_t session_ttl_seconds = 3600;  // lifetime of the CI run's implicit session
  std::string location;                // "FILE:LINE: trust[i]" for messages

  std::string PrincipalId() const { return std::string(kPrincipalPrefix) + name; }
  bool AllowsAlgorithm(std::string_view alg) const;
};

struct TrustSet {
  std::vector<TrustPolicy> policies;
  // Accepted but weak (e.g. no ref/environment pin): logged at start.
  std::vector<std::string> warnings;

  const TrustPolicy* Find(std::string_view name) const;
  // The static issuer allow-list: exact string comparison, trailing slash included.
  bool TrustsIssuer(std::string_view iss) const;
  bool empty() const { return policies.empty(); }
};

// What the parser checks the policies against.
struct TrustContext {
  std::vector<std::string> issuer_names;  // configured broker issuers
  int64_t max_session_ttl_seconds = 28800;
};

// Parses and compiles the `trust:` sequence (nullptr, absent or null = no
// policies). Errors: kInvalidArgument "invalid_config", "FILE:LINE: trust[i].KEY: …".
[[nodiscard]] Result<std::shared_ptr<const TrustSet>> ParseTrustPolicies(config::Section* trust,
                                                                         const TrustContext& ctx);
// Same from YAML text holding the value of `trust:` (tests).
[[nodiscard]] Result<std::shared_ptr<const TrustSet>> ParseTrustPoliciesText(
    std::string_view text, const std::string& file_name, const TrustContext& ctx);

// The claim as matching text (see the file comment); nullopt when absent or
// not a string, boolean or integer.
std::optional<std::string> ClaimText(const nlohmann::json& claims, std::string_view name);

// The `sub` forms a policy may match (see the file comment); empty when the
// token has no string `sub`.
std::vector<std::string> SubjectForms(const nlohmann::json& claims);

// OK when every claim rule of `policy` matches; otherwise kPermissionDenied
// "claims_mismatch" with a generic message; `detail` (for the log only)
// names the first claim that does not match (never its expected value).
[[nodiscard]] Status CheckClaims(const TrustPolicy& policy, const nlohmann::json& claims);

struct NarrowedGrant {
  nlohmann::json scope = nlohmann::json::object();  // the issuer-specific scope to mint with
  std::string scope_text;  // RFC 6749 scope string of what is granted ("" = none)
};

// The RFC 6749 §3.3 scope string as distinct tokens (in order): 1 to 64
// space-separated tokens of 1 to 256 printable ASCII characters without '"'
// or '\'. Errors: kInvalidArgument "invalid_scope".
[[nodiscard]] Result<std::vector<std::string>> ParseScopeTokens(std::string_view requested);

// The grant as the request it mints (tool, operation, resource, issuer,
// scope, ttl).
GrantRequest GrantRequestOf(const TrustGrant& grant);

// Intersects the grant's scope with the RFC 8693 `scope` (absent = the whole
// grant), as `issuer` (the grant's issuer) reads its tokens
// (IssuerSpec::NarrowScope). Errors: kInvalidArgument "invalid_scope"
// (malformed) or kPermissionDenied "scope_not_granted" (a token outside the
// grant).
[[nodiscard]] Result<NarrowedGrant> NarrowScope(const TrustGrant& grant,
                                                std::optional<std::string_view> requested,
                                                const IssuerSpec& issuer);

// Checks every grant of `trust` as start-up, reload and `config check` all
// do: its issuer (looked up by name through `issuers`, which returns null
// for an unknown name) accepts it (IssuerSpec::CheckTrustGrant, ImpliedTier,
// ScopeItems); its tier — the higher of `policy`'s classification and the
// issuer's implied tier — is within grant.max_tier; and that tier's control
// is neither approval nor deny (a CI job cannot wait for a human). Errors:
// kInvalidArgument "invalid_config", "FILE:LINE: trust[i].grant: …".
[[nodiscard]] Status CheckTrustGrants(
    const TrustSet& trust, const Policy& policy,
    const std::function<const IssuerSpec*(std::string_view)>& issuers);

// The key of the CI run an exchange belongs to, tagged by its form so that
// different shapes never share a key:
//   GitHub Actions  ci:gh/<iss>:<repository>:<run_id>:<run_attempt>
//   GitLab          ci:gl/<iss>:<project_path>:<pipeline_id>
//   otherwise       ci:jti/<iss>:<sub>:<jti>   (each token its own run)
//                   ci:iat/<iss>:<sub>:<iat>   (no jti)
// The issuer and claim values are percent-escaped ('%', ':', spaces,
// controls, non-ASCII).
std::string CiRunKey(const TrustPolicy& policy, const nlohmann::json& claims);

// Non-secret facts about the CI run for the session and audit records:
// issuer, sub, repository/project, run ids, ref, event, sha, workflow, actor…
// (string/integer claims only, each at most 256 characters).
nlohmann::json CiFacts(const TrustPolicy& policy, const nlohmann::json& claims);

// URL rules for issuers and their jwks_uri (net::ParseUrl with
// net::UrlPolicy::OidcEndpoint): https://HOST[:PORT][/PATH], or http:// when
// allow_http and the host is loopback; no userinfo, query, fragment, empty,
// "." or ".." segments, backslashes, spaces or controls. Returns what is
// wrong, or "" when the URL is acceptable.
std::string CheckFetchUrl(std::string_view url, bool allow_http);

}  // namespace jitbroker::oidc
