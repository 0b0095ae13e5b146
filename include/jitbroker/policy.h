// Policy: the compiled, immutable policy snapshot and the pure evaluation of a
// grant request against it (docs/concepts.md "Decisions").
//
// Effective rights are the intersection of the delegating principal's role
// ceilings, the session's task scope, the tier control of the action and the
// time window. Evaluate() is a pure function of (request, session, policy,
// time): no I/O, no clock reads, no globals.
//
// Thread-safety: a compiled Policy is immutable after CompilePolicy() and is
// shared read-only across request threads through std::shared_ptr<const Policy>.
#pragma once

#include <array>
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <regex>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "jitbroker/clock.h"
#include "jitbroker/result.h"

namespace jitbroker {

// Ordered: a higher tier is riskier.
enum class Tier { kRead = 0, kWrite, kPr, kMergeDeploy, kSecret, kDestructive };
inline constexpr int kTierCount = 6;
inline constexpr Tier kAllTiers[] = {Tier::kRead,        Tier::kWrite,  Tier::kPr,
                                     Tier::kMergeDeploy, Tier::kSecret, Tier::kDestructive};
std::string_view TierName(Tier tier);  // "read", "merge_deploy", …
std::optional<Tier> ParseTier(std::string_view name);

enum class Control { kAutoAllow, kInScope, kApproval, kDeny };
std::string_view ControlName(Control control);  // "auto_allow", …
std::optional<Control> ParseControl(std::string_view name);

// A string matcher: exact value, glob (`*` matches any run of characters except
// '/' and ':'), or anchored regular expression written "re:<ecmascript>".
// A pattern containing '*' is a glob; "re:" prefix is a regex; else exact.
// With `ignore_case`, ASCII letters compare case-insensitively (exact and glob
// patterns fold both sides to lower case; a regex is compiled with icase).
class Matcher {
 public:
  enum class Kind { kExact, kGlob, kRegex };
  // Errors: kInvalidArgument (reason "invalid_pattern") for a bad regex.
  [[nodiscard]] static Result<Matcher> Compile(std::string_view pattern, bool ignore_case = false);
  bool Matches(std::string_view value) const;
  Kind kind() const { return kind_; }
  const std::string& pattern() const { return pattern_; }
  bool ignore_case() const { return ignore_case_; }

 private:
  Kind kind_ = Kind::kExact;
  bool ignore_case_ = false;
  std::string pattern_;
  std::string folded_;  // pattern_ in lower case, when ignore_case_
  std::shared_ptr<const std::regex> regex_;
};

// A command pattern for tool-rule parameters, written
// "argv:PROGRAM FLAG…" (docs/configuration.md, "argv: patterns"), e.g.
// "argv:rm -r|-R|--recursive". PROGRAM is one or more basenames separated by
// '|' (compared ASCII case-insensitively); each FLAG term is one or more
// alternatives separated by '|', each "-x" (a short option letter, found in
// any grouping: -rf, -fr, -r -f) or "--name" (a long option; "--name=…" and
// every abbreviation "--na" count). "-xy" alone stands for "-x -y". A value
// matches when some command it could run is PROGRAM with every FLAG term
// present. Matching fails closed: whatever the reader cannot decide (run-time
// expansions, over-long input, too much nesting) counts as a match.
class ArgvPattern {
 public:
  // Errors: kInvalidArgument "invalid_pattern".
  [[nodiscard]] static Result<ArgvPattern> Parse(std::string_view pattern);
  // A parameter value: a string is read as a shell command line, an array
  // as an argv (its elements are the words; no shell parsing of the list),
  // a number or boolean as its JSON text; an object or null counts as a match.
  bool Matches(const nlohmann::json& value) const;
  bool MatchesCommandLine(std::string_view command) const;
  const std::string& pattern() const { return pattern_; }

  struct FlagTerm {
    std::vector<char> short_flags;        // "-r" -> 'r'
    std::vector<std::string> long_flags;  // "--recursive" -> "recursive"
  };

 private:
  std::string pattern_;
  std::vector<std::string> programs_;  // lower case
  std::vector<FlagTerm> terms_;
};

// Resource coverage (docs/concepts.md "Concepts"): `pattern` covers `resource` when the pattern
// (glob-matched, `*` not spanning '/' or ':') equals the resource or one of its
// '/'-delimited prefixes, so "github://acme/svc" covers "github://acme/svc/pull/1"
// and "github://acme/*" covers both. The lone pattern "*" covers everything.
bool ResourceCovers(std::string_view pattern, std::string_view resource);

struct TierPolicy {
  Control control = Control::kDeny;
  std::vector<std::string> approvers;  // e.g. "role:maintainer"
  // Four-eyes: the delegating principal never approves their own agent's
  // request. Always on; the config cannot turn it off.
  bool four_eyes = true;
  // `self_approval: break_glass`: an admin who is the delegating principal
  // may approve their own agent's request of this tier; the approval is
  // recorded with break_glass: true and logged at warn. Non-admins never may.
  bool break_glass_self_approval = false;
  std::optional<int64_t> max_ttl_seconds;  // credential TTL cap for this tier
  int64_t approval_ttl_seconds = 0;  // pending approval lifetime; 0 = approvals.default_ttl_seconds
};

// One `match.parameters` entry of a tool rule: which parameters (a name, or a
// pattern over names such as "*" or "re:cmd|command") and what their value
// must match (a Matcher or an argv: pattern). See docs/configuration.md.
struct ParameterRule {
  Matcher key;
  std::optional<Matcher> value;  // exactly one of value and argv is set
  std::optional<ArgvPattern> argv;
};

struct ToolRule {
  std::string name;          // "tools[3]" or the rule's `name:`
  bool ignore_case = false;  // tool, operation and parameter names
  std::optional<Matcher> tool;
  std::optional<Matcher> operation;
  std::optional<Matcher> resource;
  std::optional<Matcher> scopes;                    // matches when any scope item matches
  std::map<std::string, ParameterRule> parameters;  // keyed by the name or pattern as written
  Tier tier = Tier::kWrite;
};

// Session budgets (docs/concepts.md "Session budgets"): bounds on what one
// session may consume however well its grants stay inside its scope. Every
// limit is optional (absent = unbounded). A grant that was allowed or went
// pending counts; a denied request consumes nothing.
struct SessionBudget {
  std::optional<int64_t> max_grants;
  std::optional<int64_t> max_resources;  // distinct grant `resource` values
  std::map<Tier, int64_t> max_grants_per_tier;
  std::optional<int64_t> max_live_credentials;    // active, unexpired credentials at once
  std::optional<int64_t> max_credential_seconds;  // sum of the granted TTLs

  bool empty() const {
    return !max_grants && !max_resources && max_grants_per_tier.empty() && !max_live_credentials &&
           !max_credential_seconds;
  }
  // {max_grants, …, max_grants_per_tier: {tier: N}}: only the limits set.
  nlohmann::json ToJson() const;
  // Strict: an object of the keys above with integers in [1, kMaxBudgetCount]
  // (max_credential_seconds: [1, kMaxBudgetSeconds]) and tier names as the
  // keys of max_grants_per_tier. Errors: kInvalidArgument "invalid_budget"
  // naming the key under `where` ("budget", "roles.dev.session_budget").
  [[nodiscard]] static Result<SessionBudget> FromJson(const nlohmann::json& j,
                                                      std::string_view where = "budget");
  // The tighter of the two budgets, limit by limit.
  static SessionBudget Tightest(const SessionBudget& a, const SessionBudget& b);
};
inline constexpr int64_t kMaxBudgetCount = 1000000;
inline constexpr int64_t kMaxBudgetSeconds = int64_t{100} * 365 * 86400;

struct Role {
  std::string name;
  std::vector<std::string> resources;  // patterns; see ResourceCovers
  Tier max_tier = Tier::kRead;
  std::vector<std::string> issuers;  // empty = any issuer
  // Scope-item patterns (see ScopePatternMatches) this role allows on its
  // resources; absent = any scope item.
  std::optional<std::vector<std::string>> scopes;
  // roles.NAME.session_budget: bounds every session a principal with this
  // role opens (empty = bounds nothing).
  SessionBudget session_budget;
};

// The key of an upstream identity in Principal::identities: [a-z][a-z0-9_-]*,
// at most 64 characters ("github", "aws").
inline bool IsIdentityKey(std::string_view key) {
  if (key.empty() || key.size() > 64 || key[0] < 'a' || key[0] > 'z') {
    return false;
  }
  for (char c : key) {
    if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' || c == '-')) {
      return false;
    }
  }
  return true;
}

struct Principal {
  std::string id;
  std::string email;
  std::vector<std::string> roles;
  // Who the principal is upstream, by identity key: {"github": "octocat"}.
  // An issuer acts for one key (IssuerDescription::identity_key), e.g. the
  // github_app issuer checks the human's own rights under identities.github.
  std::map<std::string, std::string> identities;
  std::vector<std::string> api_keys_sha256;  // lower-case hex
  std::string api_key_file;                  // absolute; key generated at first start if absent
  // SHA-256 of the DER of each TLS client certificate (issued by
  // server.tls.client_ca) that authenticates this principal; lower-case hex.
  std::vector<std::string> client_certs_sha256;
};

struct Policy {
  std::string version;
  std::array<TierPolicy, kTierCount> tiers;  // indexed by Tier
  std::vector<ToolRule> tools;
  std::vector<Principal> principals;
  std::map<std::string, Role> roles;
  Tier default_tier = Tier::kWrite;

  const TierPolicy& ForTier(Tier t) const { return tiers[static_cast<int>(t)]; }
  const Principal* FindPrincipal(std::string_view id) const;
  // Constant-time comparison against every key digest.
  const Principal* FindPrincipalByKeySha256(std::string_view key_sha256_hex) const;
  // The same over client_certs_sha256.
  const Principal* FindPrincipalByCertSha256(std::string_view cert_sha256_hex) const;
  bool HasRole(const Principal& p, std::string_view role) const;
};

// The budget a session of principal `p` gets: for each limit, the smallest of
// `requested` and the session_budget of each of p's roles (a role without
// one bounds nothing).
SessionBudget EffectiveBudget(const SessionBudget& requested, const Principal& p,
                              const Policy& policy);

// What a task may touch (docs/concepts.md "Concepts"). Empty lists mean "nothing" for resources
// and "any" for branches, environments and issuers.
// `scopes` bounds the grant's scope items (IssuerFacts::scope_items): absent
// means any item the principal's roles allow; present, each item must match
// one of its patterns (an empty list allows none).
struct TaskScope {
  std::vector<std::string> resources;
  std::vector<std::string> branches;
  std::vector<std::string> environments;
  Tier max_tier = Tier::kRead;
  std::vector<std::string> issuers;
  std::optional<std::vector<std::string>> scopes;

  nlohmann::json ToJson() const;
  // Strict: unknown fields, wrong types and unknown tiers are kInvalidArgument.
  [[nodiscard]] static Result<TaskScope> FromJson(const nlohmann::json& j);
};

// The facts about a session that evaluation needs.
struct SessionFacts {
  std::string session_id;
  std::string principal_id;
  std::string agent_id;
  std::string task_id;
  TaskScope scope;
  TimePoint expires_at;
};

struct GrantRequest {
  std::string tool;
  std::string operation;
  std::string resource;
  std::string issuer;
  nlohmann::json parameters = nlohmann::json::object();
  nlohmann::json scope = nlohmann::json::object();  // issuer-specific
  std::optional<int64_t> ttl_seconds;
  std::string justification;
};

// What the issuer contributes to evaluation (from Issuer::Describe,
// Issuer::ImpliedTier and Issuer::ScopeItems).
struct IssuerFacts {
  std::string name;
  Tier implied_tier = Tier::kRead;  // tier implied by the issuer-specific scope
  int64_t default_ttl_seconds = 900;
  int64_t max_ttl_seconds = 3600;
  // What the credential will authorise, in the issuer's words ("deploy",
  // "contents:write"): bounded by task scope and role `scopes`, matched by
  // tool rules' `match.scopes`.
  std::vector<std::string> scope_items;
};

enum class DecisionResult { kAllow, kDeny, kPending };
std::string_view DecisionResultName(DecisionResult r);  // "allow", "deny", "pending"

struct Decision {
  DecisionResult result = DecisionResult::kDeny;
  Tier tier = Tier::kRead;
  std::string code;          // stable: "allowed", "approval_required", "tier_denied",
                             // "out_of_scope", "exceeds_principal", "issuer_not_allowed",
                             // "scope_not_in_task",
                             // "branch_not_in_scope", "environment_not_in_scope",
                             // "unknown_principal", "session_expired"; set by the
                             // service: "anomaly_detected", "delegated_rights_exceeded",
                             // "budget_exceeded"
  std::string reason;        // human-readable
  std::string matched_rule;  // e.g. "tools[0]", "tiers.destructive", "task.scope.resources"
  std::string policy_version;
  int64_t ttl_seconds = 0;  // clamped TTL when allowed or pending

  nlohmann::json ToJson() const;  // {result, tier, reason, code, matched_rule, policy_version}
};

// Tier classification alone (the highest matching tool rule, else by operation).
// `scope_items` are the issuer's scope items for `req` (tool rules with
// match.scopes see them). Sets *matched_rule to the rule that decided
// ("tools[i]" or "operation:<op>" or "policy.default_tier").
Tier ClassifyTier(const GrantRequest& req, const std::vector<std::string>& scope_items,
                  const Policy& policy, std::string* matched_rule);

// Scope-item patterns (role and task scope `scopes`): "*" alone matches every
// item; otherwise a glob as in Matcher (`*` never spans '/' or ':'), so
// "deploy:*" matches "deploy:prod" but not "deploy" or "deploy:prod:eu".
bool ScopePatternMatches(std::string_view pattern, std::string_view item);
// Whether every item `inner` matches is matched by `outer` (decided exactly
// for these globs: "deploy:prod*" lies within "deploy:*").
bool ScopePatternWithin(std::string_view inner, std::string_view outer);
// A scope-item pattern as roles and task scopes write it: 1–256 characters of
// an OAuth scope token (RFC 6749 §3.3: printable ASCII except space, '"' and
// '\'), not starting with "re:" (these are globs). Errors: kInvalidArgument
// "invalid_scope".
[[nodiscard]] Status CheckScopePattern(std::string_view pattern);

// The pure evaluation. Never fails: every outcome is a Decision.
Decision Evaluate(const GrantRequest& req, const SessionFacts& session, const IssuerFacts& issuer,
                  const Policy& policy, TimePoint now);

// Is `scope` inside what principal `p` may delegate (role resources, max tier,
// issuers, and each `scopes` pattern within the `scopes` of a role covering one
// of the scope's resources)? Returns a denial Decision-like error as kPermissionDenied with
// reason "scope_exceeds_principal" naming the offending item.
[[nodiscard]] Status CheckScopeWithinPrincipal(const TaskScope& scope, const Principal& p,
                                               const Policy& policy);

}  // namespace jitbroker
