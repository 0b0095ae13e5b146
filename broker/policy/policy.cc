// The pure policy engine (docs/concepts.md "Decisions"): tier classification,
// matchers, resource coverage and the evaluation of a grant request against a
// session's task scope and the delegating principal's role ceilings. No I/O,
// no clock reads, no globals.
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <regex>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "broker/common/text.h"
#include "broker/crypto/crypto.h"
#include "jitbroker/policy.h"

namespace jitbroker {

namespace {

// Inputs longer than this are never fed to std::regex (see Matcher::Matches).
constexpr size_t kMaxRegexInput = 4096;

bool GlobMatch(std::string_view pattern, std::string_view text) {
  // Set-of-positions simulation: O(|pattern| * |text|), no backtracking
  // blow-up, and correct with restricted stars (a later star cannot absorb a
  // separator, so the classic "remember the last star" shortcut is unsound).
  const size_t n = text.size();
  std::vector<char> cur(n + 1, 0);
  std::vector<char> next(n + 1, 0);
  cur[0] = 1;
  for (char pc : pattern) {
    std::fill(next.begin(), next.end(), 0);
    bool any = false;
    if (pc == '*') {
      for (size_t j = 0; j <= n; ++j) {
        if (!cur[j]) {
          continue;
        }
        next[j] = 1;
        any = true;
        for (size_t k = j; k < n && text[k] != '/' && text[k] != ':'; ++k) {
          if (next[k + 1]) {
            break;  // already extended from an earlier start
          }
          next[k + 1] = 1;
        }
      }
    } else {
      for (size_t j = 0; j < n; ++j) {
        if (cur[j] && text[j] == pc) {
          next[j + 1] = 1;
          any = true;
        }
      }
    }
    if (!any) {
      return false;
    }
    cur.swap(next);
  }
  return cur[n] != 0;
}

}  // namespace

Result<Matcher> Matcher::Compile(std::string_view pattern, bool ignore_case) {
  Matcher m;
  m.pattern_ = std::string(pattern);
  m.ignore_case_ = ignore_case;
  if (pattern.starts_with("re:")) {
    std::string expr(pattern.substr(3));
    if (expr.empty()) {
      return std::unexpected(
          InvalidArgument("invalid_pattern", "empty regular expression after \"re:\""));
    }
    try {
      m.regex_ = std::make_shared<const std::regex>(
          expr, ignore_case ? std::regex::ECMAScript | std::regex::icase : std::regex::ECMAScript);
    } catch (const std::regex_error& e) {
      return std::unexpected(InvalidArgument(
          "invalid_pattern", std::string("invalid regular expression: ") + e.what()));
    } catch (...) {
      return std::unexpected(InvalidArgument("invalid_pattern", "invalid regular expression"));
    }
    m.kind_ = Kind::kRegex;
  } else if (pattern.find('*') != std::string_view::npos) {
    m.kind_ = Kind::kGlob;
  } else {
    m.kind_ = Kind::kExact;
  }
  if (ignore_case) {
    m.folded_ = text::AsciiLower(m.pattern_);
  }
  return m;
}

bool Matcher::Matches(std::string_view value) const {
  if (ignore_case_ && kind_ != Kind::kRegex) {
    const std::string folded = text::AsciiLower(value);
    return kind_ == Kind::kExact ? folded == folded_ : GlobMatch(folded_, folded);
  }
  switch (kind_) {
    case Kind::kExact:
      return value == pattern_;
    case Kind::kGlob:
      return GlobMatch(pattern_, value);
    case Kind::kRegex:
      if (regex_ == nullptr || value.size() > kMaxRegexInput) {
        // libstdc++'s regex engine recurses per character; bound the input
        // rather than risk the stack. Callers that must fail closed (tier
        // classification) treat an over-long input as matching themselves.
        return false;
      }
      try {
        return std::regex_match(value.begin(), value.end(), *regex_);
      } catch (...) {
        return false;  // error_complexity / error_stack: no match
      }
  }
  return false;
}

bool ResourceCovers(std::string_view pattern, std::string_view resource) {
  if (pattern == "*") {
    return true;
  }
  if (pattern.empty() || resource.empty()) {
    return false;
  }
  // The path part starts after "scheme://authority"; prefixes inside the
  // scheme ("github:", "github:/") never count.
  size_t path_start = 0;
  if (size_t scheme = resource.find("://"); scheme != std::string_view::npos) {
    path_start = scheme + 3;
  }
  // Dot segments would let a prefix pattern cover a sibling
  // ("github://acme/svc/../svc2"); such resources are never covered.
  {
    size_t pos = path_start;
    while (pos <= resource.size()) {
      size_t slash = resource.find('/', pos);
      size_t end = slash == std::string_view::npos ? resource.size() : slash;
      std::string_view seg = resource.substr(pos, end - pos);
      if (seg == "." || seg == "..") {
        return false;
      }
      if (slash == std::string_view::npos) {
        break;
      }
      pos = slash + 1;
    }
  }
  if (GlobMatch(pattern, resource)) {
    return true;
  }
  for (size_t pos = resource.find('/', path_start); pos != std::string_view::npos;
       pos = resource.find('/', pos + 1)) {
    if (pos <= path_start) {
      continue;
    }
    if (GlobMatch(pattern, resource.substr(0, pos))) {
      return true;
    }
  }
  return false;
}

bool ScopePatternMatches(std::string_view pattern, std::string_view item) {
  if (pattern == "*") {
    return true;
  }
  return !pattern.empty() && GlobMatch(pattern, item);
}

bool ScopePatternWithin(std::string_view inner, std::string_view outer) {
  if (outer == "*") {
    return true;
  }
  if (inner == "*" || inner.empty() || outer.empty()) {
    return false;
  }
  // `outer` matching the text of `inner`, its stars read as literal
  // characters, is exact containment: outer's literals never match a '*',
  // so each star of `inner` falls inside a star of `outer`, which absorbs
  // whatever (separator-free) text the inner star stands for.
  return GlobMatch(outer, inner);
}

Status CheckScopePattern(std::string_view pattern) {
  constexpr size_t kMaxLength = 256;
  if (pattern.empty() || pattern.size() > kMaxLength) {
    return std::unexpected(
        InvalidArgument("invalid_scope", "scope patterns must be 1 to 256 characters long"));
  }
  for (char ch : pattern) {
    const auto c = static_cast<unsigned char>(ch);
    if (c < 0x21 || c > 0x7e || c == '"' || c == '\\') {
      return std::unexpected(
          InvalidArgument("invalid_scope",
                          "scope patterns are OAuth scope tokens: printable ASCII without "
                          "spaces, '\"' or '\\'"));
    }
  }
  if (pattern.starts_with("re:")) {
    return std::unexpected(InvalidArgument(
        "invalid_scope", "scope patterns are globs; \"re:\" is not supported here"));
  }
  return OkStatus();
}

// ---------------------------------------------------------------------------
// Names

namespace {

constexpr std::string_view kTierNames[kTierCount] = {"read",         "write",  "pr",
                                                     "merge_deploy", "secret", "destructive"};

struct ControlRow {
  Control control;
  std::string_view name;
};
constexpr ControlRow kControls[] = {{Control::kAutoAllow, "auto_allow"},
                                    {Control::kInScope, "in_scope"},
                                    {Control::kApproval, "approval"},
                                    {Control::kDeny, "deny"}};

int TierIndex(Tier t) { return static_cast<int>(t); }
Tier MaxTier(Tier a, Tier b) { return TierIndex(a) >= TierIndex(b) ? a : b; }

}  // namespace

std::string_view TierName(Tier tier) {
  int i = TierIndex(tier);
  if (i < 0 || i >= kTierCount) {
    return "unknown";
  }
  return kTierNames[i];
}

std::optional<Tier> ParseTier(std::string_view name) {
  for (Tier t : kAllTiers) {
    if (TierName(t) == name) {
      return t;
    }
  }
  return std::nullopt;
}

std::string_view ControlName(Control control) {
  for (const ControlRow& row : kControls) {
    if (row.control == control) {
      return row.name;
    }
  }
  return "unknown";
}

std::optional<Control> ParseControl(std::string_view name) {
  for (const ControlRow& row : kControls) {
    if (row.name == name) {
      return row.control;
    }
  }
  return std::nullopt;
}

std::string_view DecisionResultName(DecisionResult r) {
  switch (r) {
    case DecisionResult::kAllow:
      return "allow";
    case DecisionResult::kDeny:
      return "deny";
    case DecisionResult::kPending:
      return "pending";
  }
  return "deny";
}

nlohmann::json Decision::ToJson() const {
  nlohmann::json j = nlohmann::json::object();
  j["result"] = std::string(DecisionResultName(result));
  j["tier"] = std::string(TierName(tier));
  j["code"] = code;
  j["reason"] = reason;
  j["matched_rule"] = matched_rule;
  j["policy_version"] = policy_version;
  if (ttl_seconds > 0) {
    j["ttl_seconds"] = ttl_seconds;
  }
  return j;
}

// ---------------------------------------------------------------------------
// Policy lookups

const Principal* Policy::FindPrincipal(std::string_view id) const {
  for (const Principal& p : principals) {
    if (p.id == id) {
      return &p;
    }
  }
  return nullptr;
}

namespace {

// The principal whose `digests` list holds `hex`. Every digest is compared,
// match or not, so timing does not reveal which principal (or how many)
// were tried before the hit.
const Principal* FindByDigest(const std::vector<Principal>& principals,
                              const std::vector<std::string> Principal::* digests,
                              std::string_view hex) {
  const Principal* found = nullptr;
  for (const Principal& p : principals) {
    for (const std::string& digest : p.*digests) {
      bool eq = crypto::ConstantTimeEquals(digest, hex);
      if (eq && found == nullptr) {
        found = &p;
      }
    }
  }
  return found;
}

}  // namespace

const Principal* Policy::FindPrincipalByKeySha256(std::string_view key_sha256_hex) const {
  return FindByDigest(principals, &Principal::api_keys_sha256, key_sha256_hex);
}

const Principal* Policy::FindPrincipalByCertSha256(std::string_view cert_sha256_hex) const {
  return FindByDigest(principals, &Principal::client_certs_sha256, cert_sha256_hex);
}

bool Policy::HasRole(const Principal& p, std::string_view role) const {
  for (const std::string& r : p.roles) {
    if (r == role) {
      return roles.find(r) != roles.end();
    }
  }
  return false;
}

// ---------------------------------------------------------------------------
// TaskScope

namespace {

constexpr size_t kMaxScopeEntries = 256;
constexpr size_t kMaxScopeEntryLength = 1024;

Result<std::vector<std::string>> ScopeList(const nlohmann::json& j, const char* field,
                                           bool required_non_empty) {
  std::vector<std::string> out;
  auto it = j.find(field);
  if (it == j.end()) {
    if (required_non_empty) {
      return std::unexpected(InvalidArgument(
          "invalid_scope", std::string("scope.") + field + " must list at least one entry"));
    }
    return out;
  }
  if (!it->is_array()) {
    return std::unexpected(InvalidArgument(
        "invalid_type", std::string("scope.") + field + " must be an array of strings"));
  }
  if (it->size() > kMaxScopeEntries) {
    return std::unexpected(InvalidArgument(
        "invalid_scope", std::string("scope.") + field + " has more than 256 entries"));
  }
  for (const nlohmann::json& e : *it) {
    if (!e.is_string()) {
      return std::unexpected(InvalidArgument(
          "invalid_type", std::string("scope.") + field + " must be an array of strings"));
    }
    const std::string& s = e.get_ref<const std::string&>();
    if (s.empty() || s.size() > kMaxScopeEntryLength) {
      return std::unexpected(InvalidArgument(
          "invalid_scope",
          std::string("scope.") + field + " entries must be 1 to 1024 characters long"));
    }
    out.push_back(s);
  }
  if (required_non_empty && out.empty()) {
    return std::unexpected(InvalidArgument(
        "invalid_scope", std::string("scope.") + field + " must list at least one entry"));
  }
  return out;
}

}  // namespace

nlohmann::json TaskScope::ToJson() const {
  nlohmann::json j = nlohmann::json::object();
  j["resources"] = resources;
  j["branches"] = branches;
  j["environments"] = environments;
  j["max_tier"] = std::string(TierName(max_tier));
  j["issuers"] = issuers;
  if (scopes) {
    j["scopes"] = *scopes;
  }
  return j;
}

Result<TaskScope> TaskScope::FromJson(const nlohmann::json& j) {
  if (!j.is_object()) {
    return std::unexpected(InvalidArgument("invalid_type", "scope must be an object"));
  }
  for (auto it = j.begin(); it != j.end(); ++it) {
    const std::string& k = it.key();
    if (k != "resources" && k != "branches" && k != "environments" && k != "max_tier" &&
        k != "issuers" && k != "scopes") {
      std::string shown = k.size() > 64 ? k.substr(0, 64) + "…" : k;
      return std::unexpected(
          InvalidArgument("unknown_field", "unknown field \"scope." + shown + "\""));
    }
  }
  TaskScope s;
  JITBROKER_ASSIGN_OR_RETURN(s.resources, ScopeList(j, "resources", true));
  JITBROKER_ASSIGN_OR_RETURN(s.branches, ScopeList(j, "branches", false));
  JITBROKER_ASSIGN_OR_RETURN(s.environments, ScopeList(j, "environments", false));
  JITBROKER_ASSIGN_OR_RETURN(s.issuers, ScopeList(j, "issuers", false));
  if (j.contains("scopes")) {
    JITBROKER_ASSIGN_OR_RETURN(std::vector<std::string> scopes, ScopeList(j, "scopes", false));
    for (const std::string& p : scopes) {
      if (Status ok = CheckScopePattern(p); !ok) {
        Error e = ok.error();
        e.message = "scope.scopes: " + e.message;
        return std::unexpected(e);
      }
    }
    s.scopes = std::move(scopes);
  }
  if (auto it = j.find("max_tier"); it != j.end()) {
    if (!it->is_string()) {
      return std::unexpected(InvalidArgument("invalid_type", "scope.max_tier must be a string"));
    }
    std::optional<Tier> t = ParseTier(it->get_ref<const std::string&>());
    if (!t) {
      return std::unexpected(InvalidArgument(
          "invalid_scope",
          "scope.max_tier must be one of read, write, pr, merge_deploy, secret, destructive"));
    }
    s.max_tier = *t;
  }
  return s;
}

// ---------------------------------------------------------------------------
// Session budgets

namespace {

constexpr const char* kBudgetScalarKeys[] = {"max_grants", "max_resources", "max_live_credentials",
                                             "max_credential_seconds"};

std::optional<int64_t>& BudgetField(SessionBudget& b, std::string_view key) {
  if (key == "max_grants") {
    return b.max_grants;
  }
  if (key == "max_resources") {
    return b.max_resources;
  }
  if (key == "max_live_credentials") {
    return b.max_live_credentials;
  }
  return b.max_credential_seconds;
}

Result<int64_t> BudgetInt(const nlohmann::json& v, const std::string& path, int64_t max) {
  // A JSON number that is a whole number in range; 3.0 and "3" are not.
  if (!v.is_number_integer() || (v.is_number_unsigned() && v.get<uint64_t>() > uint64_t(max)) ||
      v.get<int64_t>() < 1 || v.get<int64_t>() > max) {
    return std::unexpected(InvalidArgument(
        "invalid_budget", path + " must be an integer from 1 to " + std::to_string(max)));
  }
  return v.get<int64_t>();
}

std::string ShownKey(const std::string& k) { return k.size() > 64 ? k.substr(0, 64) + "…" : k; }

void TakeMin(std::optional<int64_t>& out, const std::optional<int64_t>& other) {
  if (other && (!out || *other < *out)) {
    out = other;
  }
}

}  // namespace

nlohmann::json SessionBudget::ToJson() const {
  nlohmann::json j = nlohmann::json::object();
  SessionBudget copy = *this;
  for (const char* key : kBudgetScalarKeys) {
    if (const std::optional<int64_t>& v = BudgetField(copy, key); v) {
      j[key] = *v;
    }
  }
  if (!max_grants_per_tier.empty()) {
    nlohmann::json tiers = nlohmann::json::object();
    for (const auto& [tier, n] : max_grants_per_tier) {
      tiers[std::string(TierName(tier))] = n;
    }
    j["max_grants_per_tier"] = std::move(tiers);
  }
  return j;
}

Result<SessionBudget> SessionBudget::FromJson(const nlohmann::json& j, std::string_view where) {
  const std::string base(where);
  if (!j.is_object()) {
    return std::unexpected(InvalidArgument("invalid_budget", base + " must be an object"));
  }
  SessionBudget b;
  for (auto it = j.begin(); it != j.end(); ++it) {
    const std::string& k = it.key();
    const std::string path = base + "." + ShownKey(k);
    if (k == "max_grants_per_tier") {
      if (!it->is_object()) {
        return std::unexpected(InvalidArgument(
            "invalid_budget", path + " must be an object of tier names to integers"));
      }
      for (auto t = it->begin(); t != it->end(); ++t) {
        std::optional<Tier> tier = ParseTier(t.key());
        if (!tier) {
          return std::unexpected(InvalidArgument(
              "invalid_budget", path + " names unknown tier \"" + ShownKey(t.key()) +
                                    "\" (one of read, write, pr, merge_deploy, secret, "
                                    "destructive)"));
        }
        JITBROKER_ASSIGN_OR_RETURN(int64_t n, BudgetInt(*t, path + "." + t.key(), kMaxBudgetCount));
        b.max_grants_per_tier[*tier] = n;
      }
      continue;
    }
    if (std::find(std::begin(kBudgetScalarKeys), std::end(kBudgetScalarKeys), k) ==
        std::end(kBudgetScalarKeys)) {
      return std::unexpected(InvalidArgument("invalid_budget", "unknown field \"" + path + "\""));
    }
    const int64_t max = k == "max_credential_seconds" ? kMaxBudgetSeconds : kMaxBudgetCount;
    JITBROKER_ASSIGN_OR_RETURN(BudgetField(b, k), BudgetInt(*it, path, max));
  }
  return b;
}

SessionBudget SessionBudget::Tightest(const SessionBudget& a, const SessionBudget& b) {
  SessionBudget out = a;
  TakeMin(out.max_grants, b.max_grants);
  TakeMin(out.max_resources, b.max_resources);
  TakeMin(out.max_live_credentials, b.max_live_credentials);
  TakeMin(out.max_credential_seconds, b.max_credential_seconds);
  for (const auto& [tier, n] : b.max_grants_per_tier) {
    auto [it, inserted] = out.max_grants_per_tier.emplace(tier, n);
    if (!inserted && n < it->second) {
      it->second = n;
    }
  }
  return out;
}

SessionBudget EffectiveBudget(const SessionBudget& requested, const Principal& p,
                              const Policy& policy) {
  SessionBudget out = requested;
  for (const std::string& name : p.roles) {
    if (auto it = policy.roles.find(name); it != policy.roles.end()) {
      out = SessionBudget::Tightest(out, it->second.session_budget);
    }
  }
  return out;
}

// ---------------------------------------------------------------------------
// Classification

namespace {

// Tool-rule matching fails closed: a rule raises the tier, so an input a
// regex cannot safely be run on counts as a match, and a non-regex resource
// matcher covers sub-resources (a rule on "github://acme/infra" also
// classifies ".../infra/pull/1").
bool RuleValueMatches(const Matcher& m, std::string_view value) {
  if (m.kind() == Matcher::Kind::kRegex && value.size() > kMaxRegexInput) {
    return true;
  }
  return m.Matches(value);
}

// A scalar parameter as the text a matcher sees: strings as they are, numbers
// and booleans as their JSON text.
std::optional<std::string> ScalarText(const nlohmann::json& v) {
  if (v.is_string()) {
    return v.get<std::string>();
  }
  if (v.is_number() || v.is_boolean()) {
    return v.dump();
  }
  return std::nullopt;
}

// One parameter value against a value matcher (docs/configuration.md,
// "policy.tools"): a scalar as its text; an array when any element, or the
// elements joined by single spaces, match; anything the matcher cannot read
// (an object, null, an array holding objects or arrays) counts as a match.
bool ValueMatches(const Matcher& m, const nlohmann::json& v) {
  if (std::optional<std::string> text = ScalarText(v)) {
    return RuleValueMatches(m, *text);
  }
  if (!v.is_array()) {
    return true;
  }
  std::string joined;
  for (const nlohmann::json& e : v) {
    std::optional<std::string> text = ScalarText(e);
    if (!text) {
      return true;
    }
    if (RuleValueMatches(m, *text)) {
      return true;
    }
    if (joined.size() <= kMaxRegexInput) {
      if (!joined.empty()) {
        joined += ' ';
      }
      joined += *text;
    }
  }
  return RuleValueMatches(m, joined);  // over the bound: a regex counts it as a match
}

bool ParameterMatches(const ParameterRule& rule, const nlohmann::json& v) {
  if (rule.argv) {
    return rule.argv->Matches(v);
  }
  return rule.value ? ValueMatches(*rule.value, v) : true;
}

// Some parameter whose name the rule's key matches holds a matching value.
// Parameters that are not an object cannot be read: a match.
bool ParametersMatch(const ParameterRule& rule, const nlohmann::json& params) {
  if (!params.is_object()) {
    return true;
  }
  if (rule.key.kind() == Matcher::Kind::kExact && !rule.key.ignore_case()) {
    auto it = params.find(rule.key.pattern());
    return it != params.end() && ParameterMatches(rule, *it);
  }
  const bool any_name = rule.key.pattern() == "*";  // every name, ':' and '/' included
  for (auto it = params.begin(); it != params.end(); ++it) {
    if ((any_name || RuleValueMatches(rule.key, it.key())) && ParameterMatches(rule, it.value())) {
      return true;
    }
  }
  return false;
}

bool RuleMatches(const ToolRule& rule, const GrantRequest& req,
                 const std::vector<std::string>& scope_items) {
  if (rule.tool && !RuleValueMatches(*rule.tool, req.tool)) {
    return false;
  }
  if (rule.operation && !RuleValueMatches(*rule.operation, req.operation)) {
    return false;
  }
  if (rule.resource) {
    bool ok = rule.resource->kind() == Matcher::Kind::kRegex
                  ? RuleValueMatches(*rule.resource, req.resource)
                  : ResourceCovers(rule.resource->pattern(), req.resource);
    if (!ok) {
      return false;
    }
  }
  if (rule.scopes &&
      std::none_of(scope_items.begin(), scope_items.end(),
                   [&](const std::string& item) { return RuleValueMatches(*rule.scopes, item); })) {
    return false;
  }
  for (const auto& [key, parameter] : rule.parameters) {
    if (!ParametersMatch(parameter, req.parameters)) {
      return false;
    }
  }
  return true;
}

}  // namespace

Tier ClassifyTier(const GrantRequest& req, const std::vector<std::string>& scope_items,
                  const Policy& policy, std::string* matched_rule) {
  std::optional<Tier> best;
  std::string best_rule;
  for (size_t i = 0; i < policy.tools.size(); ++i) {
    const ToolRule& rule = policy.tools[i];
    if (!RuleMatches(rule, req, scope_items)) {
      continue;
    }
    if (!best || TierIndex(rule.tier) > TierIndex(*best)) {
      best = rule.tier;
      best_rule = rule.name.empty() ? "tools[" + std::to_string(i) + "]" : rule.name;
    }
  }
  Tier tier;
  if (best) {
    tier = *best;
  } else {
    const std::string& op = req.operation;
    if (op == "read" || op == "list" || op == "get" || op == "describe") {
      tier = Tier::kRead;
      best_rule = "operation:" + op;
    } else if (op == "merge" || op == "deploy" || op == "push_protected") {
      tier = Tier::kMergeDeploy;
      best_rule = "operation:" + op;
    } else if (op == "delete_ref" || op == "rewrite_tag" || op == "force_push" ||
               op == "delete_repository") {
      // What the proxy classifies as losing history or data (docs/proxy.md).
      tier = Tier::kDestructive;
      best_rule = "operation:" + op;
    } else {
      tier = policy.default_tier;
      best_rule = "policy.default_tier";
    }
  }
  if (matched_rule != nullptr) {
    *matched_rule = std::move(best_rule);
  }
  return tier;
}

// ---------------------------------------------------------------------------
// Evaluation

namespace {

// Request-supplied text echoed in reasons is bounded (never secrets: reasons
// only ever name resources, tiers, issuers, branches and rule names).
std::string Shown(std::string_view s) {
  constexpr size_t kMax = 200;
  if (s.size() <= kMax) {
    return std::string(s);
  }
  return std::string(s.substr(0, kMax)) + "…";
}

std::string Quoted(std::string_view s) { return "\"" + Shown(s) + "\""; }

std::string TierQ(Tier t) { return "\"" + std::string(TierName(t)) + "\""; }

bool AnyCovers(const std::vector<std::string>& patterns, std::string_view resource) {
  for (const std::string& p : patterns) {
    if (ResourceCovers(p, resource)) {
      return true;
    }
  }
  return false;
}

bool AnyGlobMatches(const std::vector<std::string>& patterns, std::string_view value) {
  for (const std::string& p : patterns) {
    if (GlobMatch(p, value)) {
      return true;
    }
  }
  return false;
}

bool Contains(const std::vector<std::string>& list, std::string_view value) {
  return std::find(list.begin(), list.end(), value) != list.end();
}

// The principal's roles that exist in the policy.
std::vector<const Role*> RolesOf(const Principal& p, const Policy& policy) {
  std::vector<const Role*> out;
  for (const std::string& name : p.roles) {
    auto it = policy.roles.find(name);
    if (it != policy.roles.end()) {
      out.push_back(&it->second);
    }
  }
  return out;
}

bool RolesAllowIssuer(const std::vector<const Role*>& roles, std::string_view issuer) {
  for (const Role* r : roles) {
    if (r->issuers.empty() || Contains(r->issuers, issuer)) {
      return true;
    }
  }
  return false;
}

std::optional<Tier> RolesMaxTier(const std::vector<const Role*>& roles) {
  std::optional<Tier> out;
  for (const Role* r : roles) {
    out = out ? MaxTier(*out, r->max_tier) : r->max_tier;
  }
  return out;
}

bool RolesCoverResource(const std::vector<const Role*>& roles, std::string_view resource) {
  for (const Role* r : roles) {
    if (AnyCovers(r->resources, resource)) {
      return true;
    }
  }
  return false;
}

bool AnyScopePatternMatches(const std::vector<std::string>& patterns, std::string_view item) {
  return std::any_of(patterns.begin(), patterns.end(),
                     [&](const std::string& p) { return ScopePatternMatches(p, item); });
}

// A role bounds scope items on its own resources and issuers: an item is
// allowed when some role that covers the resource and allows the issuer has
// no `scopes` or a pattern matching it (a role that grants nothing here,
// such as `approver`, does not widen anything).
bool RolesAllowScopeItem(const std::vector<const Role*>& roles, std::string_view resource,
                         std::string_view issuer, std::string_view item) {
  for (const Role* r : roles) {
    if (!AnyCovers(r->resources, resource) ||
        !(r->issuers.empty() || Contains(r->issuers, issuer))) {
      continue;
    }
    if (!r->scopes || AnyScopePatternMatches(*r->scopes, item)) {
      return true;
    }
  }
  return false;
}

// Checks a named parameter ("branch", "environment") against a scope list.
// Returns an empty string when fine, else the denial reason.
std::string CheckNamedParameter(const GrantRequest& req, const std::vector<std::string>& allowed,
                                const char* param, const char* scope_field, bool must_name) {
  if (allowed.empty()) {
    return {};
  }
  const nlohmann::json* value = nullptr;
  if (req.parameters.is_object()) {
    auto it = req.parameters.find(param);
    if (it != req.parameters.end()) {
      value = &*it;
    }
  }
  if (value == nullptr) {
    if (must_name) {
      return std::string("the task scope restricts ") + scope_field + ", so a " + param +
             " must be named in parameters." + param + " for this request";
    }
    return {};
  }
  if (!value->is_string()) {
    return std::string("parameters.") + param + " must be a string when the task scope restricts " +
           scope_field;
  }
  const std::string& v = value->get_ref<const std::string&>();
  if (!AnyGlobMatches(allowed, v)) {
    return std::string(param) + " " + Quoted(v) + " is not in the task scope's " + scope_field;
  }
  return {};
}

Decision Deny(Decision d, std::string code, std::string rule, std::string reason) {
  d.result = DecisionResult::kDeny;
  d.code = std::move(code);
  d.matched_rule = std::move(rule);
  d.reason = std::move(reason);
  d.ttl_seconds = 0;
  return d;
}

}  // namespace

// Decision order (the first failing check decides; every check runs for every
// tier, auto_allow included, so a grant always lies inside the intersection
// of docs/concepts.md "Principles", item 2):
//   1. session expired (now >= expires_at)            → deny session_expired
//   2. principal not in the policy                     → deny unknown_principal
//   3. tier = max(ClassifyTier, issuer.implied_tier)
//   4. tier control is deny                            → deny tier_denied (tiers.<tier>)
//   5. issuer not in task scope issuers (if any)       → deny issuer_not_allowed
//   (task.scope.issuers)
//   6. issuer allowed by none of the principal's roles → deny issuer_not_allowed (principal.roles)
//   7. tier above the task scope's max_tier            → deny out_of_scope (task.scope.max_tier)
//   8. tier above every role's max_tier                → deny exceeds_principal (principal.roles)
//   9. resource covered by no task scope resource      → deny out_of_scope (task.scope.resources)
//  10. resource covered by no role resource            → deny exceeds_principal (principal.roles)
//  11. a scope item (issuer.scope_items) matched by no pattern of the task
//      scope's `scopes`, when it has them            → deny scope_not_in_task (task.scope.scopes)
//  12. a scope item allowed by no role that covers the resource and allows
//      the issuer (a role without `scopes` allows any) → deny exceeds_principal (principal.roles)
//  13. parameters.branch vs scope.branches             → deny branch_not_in_scope
//  14. parameters.environment vs scope.environments    → deny environment_not_in_scope
//      For 13 and 14: a named value must match one of the scope's globs; and
//      when the tier's control is in_scope, the scope list is non-empty, the
//      resource is "github://…" and the tier is write or above, the request
//      MUST name the value (otherwise an agent could write to any branch just
//      by not saying which). approval tiers are judged by a human instead.
//  15. TTL = min(request ttl or issuer default, tier max_ttl, issuer max_ttl,
//      whole seconds until the session ends); below 1   → deny session_expired
//  16. tier control is approval                       → pending approval_required (tiers.<tier>)
//  17. otherwise                                      → allow allowed (the classification rule)
Decision Evaluate(const GrantRequest& req, const SessionFacts& session, const IssuerFacts& issuer,
                  const Policy& policy, TimePoint now) {
  Decision d;
  d.policy_version = policy.version;
  d.result = DecisionResult::kDeny;

  // 1.
  if (now >= session.expires_at) {
    return Deny(std::move(d), "session_expired", "session.expires_at",
                "session " + Shown(session.session_id) + " has expired");
  }
  // 2.
  const Principal* principal = policy.FindPrincipal(session.principal_id);
  if (principal == nullptr) {
    return Deny(std::move(d), "unknown_principal", "policy.principals",
                "principal " + Quoted(session.principal_id) +
                    " of this session is not in policy version " + Quoted(policy.version));
  }
  // 3.
  std::string classified_by;
  Tier tier = ClassifyTier(req, issuer.scope_items, policy, &classified_by);
  if (TierIndex(issuer.implied_tier) > TierIndex(tier)) {
    tier = issuer.implied_tier;
    classified_by = "issuer:" + issuer.name;
  }
  d.tier = tier;
  const TierPolicy& tp = policy.ForTier(tier);
  const std::string tier_rule = "tiers." + std::string(TierName(tier));

  // 4.
  if (tp.control == Control::kDeny) {
    return Deny(
        std::move(d), "tier_denied", tier_rule,
        "tier " + TierQ(tier) + " (classified by " + classified_by + ") is denied by policy");
  }
  // 5.
  const TaskScope& scope = session.scope;
  if (!scope.issuers.empty() && !Contains(scope.issuers, issuer.name)) {
    return Deny(std::move(d), "issuer_not_allowed", "task.scope.issuers",
                "issuer " + Quoted(issuer.name) + " is not in the task scope's issuers");
  }
  // 6.
  std::vector<const Role*> roles = RolesOf(*principal, policy);
  if (!RolesAllowIssuer(roles, issuer.name)) {
    return Deny(std::move(d), "issuer_not_allowed", "principal.roles",
                "principal " + Quoted(principal->id) + " has no role that allows issuer " +
                    Quoted(issuer.name));
  }
  // 7.
  if (TierIndex(tier) > TierIndex(scope.max_tier)) {
    return Deny(std::move(d), "out_of_scope", "task.scope.max_tier",
                "tier " + TierQ(tier) + " (classified by " + classified_by +
                    ") exceeds the task scope's max_tier " + TierQ(scope.max_tier));
  }
  // 8.
  std::optional<Tier> role_max = RolesMaxTier(roles);
  if (!role_max || TierIndex(tier) > TierIndex(*role_max)) {
    return Deny(std::move(d), "exceeds_principal", "principal.roles",
                "tier " + TierQ(tier) + " exceeds what principal " + Quoted(principal->id) +
                    "'s roles allow" +
                    (role_max ? " (max_tier " + TierQ(*role_max) + ")" : std::string()));
  }
  // 9.
  if (!AnyCovers(scope.resources, req.resource)) {
    return Deny(std::move(d), "out_of_scope", "task.scope.resources",
                "resource " + Quoted(req.resource) + " is not covered by the task scope");
  }
  // 10.
  if (!RolesCoverResource(roles, req.resource)) {
    return Deny(std::move(d), "exceeds_principal", "principal.roles",
                "resource " + Quoted(req.resource) + " is not covered by any role of principal " +
                    Quoted(principal->id));
  }
  // 11.
  if (scope.scopes) {
    for (const std::string& item : issuer.scope_items) {
      if (!AnyScopePatternMatches(*scope.scopes, item)) {
        return Deny(std::move(d), "scope_not_in_task", "task.scope.scopes",
                    "scope " + Quoted(item) + " is not in the task scope's scopes");
      }
    }
  }
  // 12.
  for (const std::string& item : issuer.scope_items) {
    if (!RolesAllowScopeItem(roles, req.resource, issuer.name, item)) {
      return Deny(std::move(d), "exceeds_principal", "principal.roles",
                  "scope " + Quoted(item) + " on " + Quoted(req.resource) +
                      " is not allowed by any role of principal " + Quoted(principal->id));
    }
  }
  // 13, 14.
  const bool must_name = tp.control == Control::kInScope && req.resource.starts_with("github://") &&
                         TierIndex(tier) >= TierIndex(Tier::kWrite);
  if (std::string why = CheckNamedParameter(req, scope.branches, "branch", "branches", must_name);
      !why.empty()) {
    return Deny(std::move(d), "branch_not_in_scope", "task.scope.branches", std::move(why));
  }
  if (std::string why =
          CheckNamedParameter(req, scope.environments, "environment", "environments", must_name);
      !why.empty()) {
    return Deny(std::move(d), "environment_not_in_scope", "task.scope.environments",
                std::move(why));
  }
  // 15.
  int64_t ttl = req.ttl_seconds.value_or(issuer.default_ttl_seconds);
  if (tp.max_ttl_seconds) {
    ttl = std::min(ttl, *tp.max_ttl_seconds);
  }
  ttl = std::min(ttl, issuer.max_ttl_seconds);
  const int64_t remaining =
      std::chrono::duration_cast<std::chrono::seconds>(session.expires_at - now).count();
  ttl = std::min(ttl, remaining);
  if (ttl < 1) {
    return Deny(std::move(d), "session_expired", "session.expires_at",
                remaining < 1
                    ? "session " + Shown(session.session_id) + " ends in less than one second"
                    : std::string("the effective credential TTL is below one second"));
  }
  d.ttl_seconds = ttl;
  // 16.
  if (tp.control == Control::kApproval) {
    d.result = DecisionResult::kPending;
    d.code = "approval_required";
    d.matched_rule = tier_rule;
    d.reason =
        "tier " + TierQ(tier) + " (classified by " + classified_by + ") requires human approval";
    return d;
  }
  // 17.
  d.result = DecisionResult::kAllow;
  d.code = "allowed";
  d.matched_rule = classified_by;
  d.reason = "tier " + TierQ(tier) + " (" + std::string(ControlName(tp.control)) + ") on " +
             Quoted(req.resource) + " is inside the task scope and principal " +
             Quoted(principal->id) + "'s roles";
  return d;
}

Status CheckScopeWithinPrincipal(const TaskScope& scope, const Principal& p, const Policy& policy) {
  std::vector<const Role*> roles = RolesOf(p, policy);
  for (const std::string& resource : scope.resources) {
    if (!RolesCoverResource(roles, resource)) {
      return std::unexpected(PermissionDenied("scope_exceeds_principal",
                                              "scope resource " + Quoted(resource) +
                                                  " is not covered by any role of principal " +
                                                  Quoted(p.id)));
    }
  }
  std::optional<Tier> role_max = RolesMaxTier(roles);
  if (!role_max || TierIndex(scope.max_tier) > TierIndex(*role_max)) {
    return std::unexpected(PermissionDenied(
        "scope_exceeds_principal",
        "scope max_tier " + TierQ(scope.max_tier) + " exceeds what principal " + Quoted(p.id) +
            "'s roles allow" + (role_max ? " (max_tier " + TierQ(*role_max) + ")" : "")));
  }
  for (const std::string& issuer : scope.issuers) {
    if (!RolesAllowIssuer(roles, issuer)) {
      return std::unexpected(PermissionDenied("scope_exceeds_principal",
                                              "scope issuer " + Quoted(issuer) +
                                                  " is not allowed by any role of principal " +
                                                  Quoted(p.id)));
    }
  }
  // Each `scopes` pattern must lie within the `scopes` of a role that covers
  // one of the task's resources (grants check each item against the roles
  // covering its resource, step 12 of Evaluate). An absent `scopes` defers
  // to the roles at grant time.
  if (scope.scopes) {
    for (const std::string& pattern : *scope.scopes) {
      const bool within = std::any_of(roles.begin(), roles.end(), [&](const Role* r) {
        const bool relevant =
            std::any_of(scope.resources.begin(), scope.resources.end(),
                        [&](const std::string& res) { return AnyCovers(r->resources, res); });
        if (!relevant) {
          return false;
        }
        return !r->scopes ||
               std::any_of(r->scopes->begin(), r->scopes->end(), [&](const std::string& outer) {
                 return ScopePatternWithin(pattern, outer);
               });
      });
      if (!within) {
        return std::unexpected(PermissionDenied(
            "scope_exceeds_principal", "scope pattern " + Quoted(pattern) +
                                           " is not within the scopes of any role of principal " +
                                           Quoted(p.id) + " covering the task's resources"));
      }
    }
  }
  return OkStatus();
}

}  // namespace jitbroker
