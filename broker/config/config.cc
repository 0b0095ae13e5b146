// Config loading and validation (docs/configuration.md). Everything is checked at load:
// a Config or Policy that comes out of here is complete and consistent.
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cctype>
#include <charconv>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <initializer_list>
#include <iterator>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <system_error>
#include <utility>
#include <vector>

#include <yaml-cpp/yaml.h>

#include "broker/config/config.h"
#include "broker/crypto/crypto.h"
#include "broker/net/url.h"

namespace jitbroker::config {

namespace {

namespace fs = std::filesystem;

constexpr std::string_view kTierList = "read, write, pr, merge_deploy, secret, destructive";
constexpr std::string_view kControlList = "auto_allow, in_scope, approval, deny";
constexpr int kMaxNesting = 64;

Error ConfigError(const std::string& file, int line, std::string_view path, std::string_view what) {
  std::string msg = file + ":" + std::to_string(line > 0 ? line : 1) + ": ";
  if (!path.empty()) {
    msg += std::string(path) + ": ";
  }
  msg += std::string(what);
  return InvalidArgument("invalid_config", std::move(msg));
}

int MarkLine(const YAML::Node& node) {
  try {
    int line = node.Mark().line;
    return line >= 0 ? line + 1 : 0;
  } catch (...) {
    return 0;
  }
}

std::string Join(std::string_view path, std::string_view key) {
  if (path.empty()) {
    return std::string(key);
  }
  return std::string(path) + "." + std::string(key);
}

std::string Q(std::string_view s) { return "\"" + std::string(s) + "\""; }

// yaml-cpp silently keeps the first of duplicate keys: reject them anywhere
// in the document (issuer, anomaly and trust sections included).
Status CheckDuplicates(const YAML::Node& node, const std::string& file, const std::string& path,
                       int depth) {
  if (depth > kMaxNesting) {
    return std::unexpected(ConfigError(file, MarkLine(node), path, "nesting is too deep"));
  }
  try {
    if (node.IsMap()) {
      std::set<std::string> seen;
      for (auto it = node.begin(); it != node.end(); ++it) {
        if (!it->first.IsScalar()) {
          return std::unexpected(
              ConfigError(file, MarkLine(it->first), path, "keys must be plain strings"));
        }
        const std::string& key = it->first.Scalar();
        std::string child = Join(path, key);
        if (!seen.insert(key).second) {
          return std::unexpected(ConfigError(file, MarkLine(it->first), child, "duplicate key"));
        }
        JITBROKER_RETURN_IF_ERROR(CheckDuplicates(it->second, file, child, depth + 1));
      }
    } else if (node.IsSequence()) {
      size_t i = 0;
      for (auto it = node.begin(); it != node.end(); ++it, ++i) {
        JITBROKER_RETURN_IF_ERROR(
            CheckDuplicates(*it, file, path + "[" + std::to_string(i) + "]", depth + 1));
      }
    }
  } catch (...) {
    return std::unexpected(ConfigError(file, MarkLine(node), path, "malformed YAML node"));
  }
  return OkStatus();
}

// Marks the allowed keys and reports the first unknown or duplicate one, so a
// typo is reported as such before any "is required".
Status Expect(Section& s, std::initializer_list<std::string_view> keys) {
  for (std::string_view k : keys) {
    s.MarkKnown(k);
  }
  return s.CheckNoUnknownKeys();
}

fs::path BaseDir(const std::string& file) {
  std::error_code ec;
  fs::path abs = fs::absolute(fs::path(file), ec);
  if (ec) {
    abs = fs::path(file);
  }
  return abs.lexically_normal().parent_path();
}

std::string Resolve(const fs::path& base, std::string_view p) {
  fs::path path{std::string(p)};
  if (path.is_relative()) {
    path = base / path;
  }
  return path.lexically_normal().string();
}

// [a-z0-9][a-z0-9_-]{0,63}
bool IsName(std::string_view s) {
  if (s.empty() || s.size() > 64) {
    return false;
  }
  auto lower_alnum = [](char c) { return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9'); };
  if (!lower_alnum(s[0])) {
    return false;
  }
  return std::all_of(s.begin(), s.end(),
                     [&](char c) { return lower_alnum(c) || c == '_' || c == '-'; });
}

// Principal ids: [A-Za-z0-9][A-Za-z0-9_.@-]{0,127}
bool IsPrincipalId(std::string_view s) {
  if (s.empty() || s.size() > 128) {
    return false;
  }
  auto alnum = [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
  };
  if (!alnum(s[0])) {
    return false;
  }
  return std::all_of(s.begin(), s.end(), [&](char c) {
    return alnum(c) || c == '_' || c == '.' || c == '@' || c == '-';
  });
}

bool IsPrintable(std::string_view s) {
  return std::all_of(s.begin(), s.end(), [](char c) {
    auto u = static_cast<unsigned char>(c);
    return u >= 0x20 && u != 0x7f;
  });
}

bool IsLowerHex64(std::string_view s) {
  return s.size() == 64 && std::all_of(s.begin(), s.end(), [](char c) {
           return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f');
         });
}

std::string TrimWhitespace(std::string_view s) {
  size_t b = 0;
  size_t e = s.size();
  while (b < e && std::isspace(static_cast<unsigned char>(s[b]))) {
    ++b;
  }
  while (e > b && std::isspace(static_cast<unsigned char>(s[e - 1]))) {
    --e;
  }
  return std::string(s.substr(b, e - b));
}

Result<Tier> TierValue(Section& s, std::string_view key, std::string_view text) {
  std::optional<Tier> t = ParseTier(text);
  if (!t) {
    return std::unexpected(s.Err(
        key, "unknown tier " + Q(text) + " (expected one of " + std::string(kTierList) + ")"));
  }
  return *t;
}

// A child mapping of `map_section`'s node (for iterating user-named keys).
Section Child(const Section& parent, const YAML::Node& value, std::string_view key) {
  return Section(value, std::make_shared<const std::string>(parent.file()),
                 Join(parent.path(), key));
}

int KeyLine(const Section& s, std::string_view key) {
  try {
    for (auto it = s.node().begin(); it != s.node().end(); ++it) {
      if (it->first.IsScalar() && it->first.Scalar() == key) {
        return MarkLine(it->first);
      }
    }
  } catch (...) {
  }
  return s.line();
}

// ---------------------------------------------------------------------------
// policy

std::array<TierPolicy, kTierCount> DefaultTiers() {
  std::array<TierPolicy, kTierCount> t;
  auto& read = t[static_cast<int>(Tier::kRead)];
  read.control = Control::kAutoAllow;
  t[static_cast<int>(Tier::kWrite)].control = Control::kInScope;
  t[static_cast<int>(Tier::kPr)].control = Control::kInScope;
  auto& merge = t[static_cast<int>(Tier::kMergeDeploy)];
  merge.control = Control::kApproval;
  merge.approvers = {"role:maintainer"};
  merge.four_eyes = true;
  auto& secret = t[static_cast<int>(Tier::kSecret)];
  secret.control = Control::kApproval;
  secret.max_ttl_seconds = 300;
  t[static_cast<int>(Tier::kDestructive)].control = Control::kDeny;
  return t;
}

// roles.NAME.session_budget (docs/configuration.md): the keys and bounds of
// a session's `budget` (SessionBudget::FromJson), errors with file and line.
Result<SessionBudget> LoadSessionBudget(Section& bs) {
  JITBROKER_RETURN_IF_ERROR(Expect(bs, {"max_grants", "max_resources", "max_grants_per_tier",
                                        "max_live_credentials", "max_credential_seconds"}));
  SessionBudget b;
  JITBROKER_ASSIGN_OR_RETURN(b.max_grants, bs.OptInt("max_grants", 1, kMaxBudgetCount));
  JITBROKER_ASSIGN_OR_RETURN(b.max_resources, bs.OptInt("max_resources", 1, kMaxBudgetCount));
  JITBROKER_ASSIGN_OR_RETURN(b.max_live_credentials,
                             bs.OptInt("max_live_credentials", 1, kMaxBudgetCount));
  JITBROKER_ASSIGN_OR_RETURN(b.max_credential_seconds,
                             bs.OptInt("max_credential_seconds", 1, kMaxBudgetSeconds));
  JITBROKER_ASSIGN_OR_RETURN(std::optional<Section> tiers, bs.OptSection("max_grants_per_tier"));
  if (tiers) {
    JITBROKER_ASSIGN_OR_RETURN(std::vector<std::string> names, tiers->Keys());
    for (const std::string& n : names) {
      JITBROKER_ASSIGN_OR_RETURN(Tier tier, TierValue(*tiers, n, n));
      JITBROKER_ASSIGN_OR_RETURN(std::optional<int64_t> count,
                                 tiers->OptInt(n, 1, kMaxBudgetCount));
      if (count) {
        b.max_grants_per_tier[tier] = *count;
      }
    }
  }
  return b;
}

Status LoadRoles(Section& policy_section, Policy& policy) {
  JITBROKER_ASSIGN_OR_RETURN(std::optional<Section> roles, policy_section.OptSection("roles"));
  if (!roles || !roles->node().IsMap()) {
    return OkStatus();
  }
  std::set<std::string> seen;
  for (auto it = roles->node().begin(); it != roles->node().end(); ++it) {
    const std::string name = it->first.Scalar();
    if (!seen.insert(name).second) {
      return std::unexpected(roles->Err(name, "duplicate key"));
    }
    if (!IsName(name)) {
      return std::unexpected(
          roles->Err(name, "role names must match [a-z0-9][a-z0-9_-]* (at most 64 characters)"));
    }
    if (!it->second.IsNull() && !it->second.IsMap()) {
      return std::unexpected(roles->Err(name, "must be a mapping"));
    }
    Section rs = Child(*roles, it->second, name);
    JITBROKER_RETURN_IF_ERROR(
        Expect(rs, {"resources", "max_tier", "issuers", "scopes", "session_budget"}));
    Role role;
    role.name = name;
    JITBROKER_ASSIGN_OR_RETURN(role.resources, rs.StringList("resources"));
    for (const std::string& r : role.resources) {
      if (r.empty() || !IsPrintable(r) || r.find(' ') != std::string::npos) {
        return std::unexpected(rs.Err("resources",
                                      "resource patterns must be non-empty and "
                                      "contain no spaces or control characters"));
      }
      if (r.starts_with("re:")) {
        return std::unexpected(rs.Err(
            "resources", "resource patterns are globs or prefixes; \"re:\" is not supported here"));
      }
    }
    JITBROKER_ASSIGN_OR_RETURN(std::optional<std::string> max_tier, rs.OptString("max_tier"));
    if (max_tier) {
      JITBROKER_ASSIGN_OR_RETURN(role.max_tier, TierValue(rs, "max_tier", *max_tier));
    }
    JITBROKER_ASSIGN_OR_RETURN(role.issuers, rs.StringList("issuers"));
    for (const std::string& i : role.issuers) {
      if (!IsName(i)) {
        return std::unexpected(rs.Err("issuers", "invalid issuer name " + Q(i)));
      }
    }
    if (rs.Has("scopes")) {
      JITBROKER_ASSIGN_OR_RETURN(std::vector<std::string> scopes, rs.StringList("scopes"));
      for (const std::string& pattern : scopes) {
        if (Status ok = CheckScopePattern(pattern); !ok) {
          return std::unexpected(rs.Err("scopes", ok.error().message + ", got " + Q(pattern)));
        }
      }
      role.scopes = std::move(scopes);
    }
    JITBROKER_ASSIGN_OR_RETURN(std::optional<Section> budget, rs.OptSection("session_budget"));
    if (budget) {
      JITBROKER_ASSIGN_OR_RETURN(role.session_budget, LoadSessionBudget(*budget));
    }
    policy.roles.emplace(name, std::move(role));
  }
  return OkStatus();
}

Status LoadTiers(Section& policy_section, Policy& policy) {
  policy.tiers = DefaultTiers();
  JITBROKER_ASSIGN_OR_RETURN(std::optional<Section> tiers, policy_section.OptSection("tiers"));
  if (!tiers || !tiers->node().IsMap()) {
    return OkStatus();
  }
  for (auto it = tiers->node().begin(); it != tiers->node().end(); ++it) {
    const std::string name = it->first.Scalar();
    JITBROKER_ASSIGN_OR_RETURN(Tier tier, TierValue(*tiers, name, name));
    tiers->MarkKnown(name);
    if (!it->second.IsNull() && !it->second.IsMap()) {
      return std::unexpected(tiers->Err(name, "must be a mapping"));
    }
    Section ts = Child(*tiers, it->second, name);
    JITBROKER_RETURN_IF_ERROR(Expect(ts, {"control", "approvers", "four_eyes", "self_approval",
                                          "max_ttl_seconds", "approval_ttl_seconds"}));
    // Fields not given keep the tier's built-in default.
    TierPolicy& tp = policy.tiers[static_cast<int>(tier)];
    JITBROKER_ASSIGN_OR_RETURN(std::optional<std::string> control, ts.OptString("control"));
    if (control) {
      std::optional<Control> c = ParseControl(*control);
      if (!c) {
        return std::unexpected(ts.Err("control", "unknown control " + Q(*control) +
                                                     " (expected one of " +
                                                     std::string(kControlList) + ")"));
      }
      tp.control = *c;
    }
    if (ts.Has("approvers")) {
      JITBROKER_ASSIGN_OR_RETURN(tp.approvers, ts.StringList("approvers"));
      for (const std::string& a : tp.approvers) {
        if (!a.starts_with("role:")) {
          return std::unexpected(
              ts.Err("approvers", "approvers must be written \"role:NAME\", got " + Q(a)));
        }
        if (policy.roles.find(a.substr(5)) == policy.roles.end()) {
          return std::unexpected(ts.Err("approvers", "unknown role " + Q(a.substr(5))));
        }
      }
    }
    // Four-eyes is always on (docs/configuration.md): `four_eyes: true` is
    // accepted as documentation; the only exception is the audited
    // break-glass option below, for admins only.
    JITBROKER_ASSIGN_OR_RETURN(std::optional<bool> four_eyes, ts.OptBool("four_eyes"));
    if (four_eyes && !*four_eyes) {
      return std::unexpected(
          ts.Err("four_eyes",
                 "four-eyes cannot be turned off; to let an admin approve their own "
                 "agent's requests in an emergency, set self_approval: break_glass"));
    }
    JITBROKER_ASSIGN_OR_RETURN(std::optional<std::string> self_approval,
                               ts.OptString("self_approval"));
    if (self_approval) {
      if (*self_approval == "break_glass") {
        tp.break_glass_self_approval = true;
      } else if (*self_approval == "deny") {
        tp.break_glass_self_approval = false;
      } else {
        return std::unexpected(ts.Err("self_approval", "unknown value " + Q(*self_approval) +
                                                           " (expected deny or break_glass)"));
      }
    }
    JITBROKER_ASSIGN_OR_RETURN(std::optional<int64_t> max_ttl,
                               ts.OptInt("max_ttl_seconds", 1, 86400));
    if (max_ttl) {
      tp.max_ttl_seconds = *max_ttl;
    }
    JITBROKER_ASSIGN_OR_RETURN(std::optional<int64_t> approval_ttl,
                               ts.OptInt("approval_ttl_seconds", 1, 86400));
    if (approval_ttl) {
      tp.approval_ttl_seconds = *approval_ttl;
    }
  }
  return tiers->CheckNoUnknownKeys();
}

Result<Matcher> CompileMatcher(Section& s, std::string_view key, const std::string& pattern,
                               bool ignore_case = false) {
  if (pattern.empty()) {
    return std::unexpected(s.Err(key, "pattern must not be empty"));
  }
  Result<Matcher> m = Matcher::Compile(pattern, ignore_case);
  if (!m) {
    return std::unexpected(s.Err(key, m.error().message));
  }
  return std::move(*m);
}

// `match.parameters`: name (or name pattern) -> value pattern or argv: pattern.
Status LoadParameterRules(Section& match, ToolRule& rule) {
  JITBROKER_ASSIGN_OR_RETURN(std::optional<Section> params, match.OptSection("parameters"));
  if (!params || !params->node().IsMap()) {
    return OkStatus();
  }
  for (auto it = params->node().begin(); it != params->node().end(); ++it) {
    const std::string key = it->first.Scalar();
    params->MarkKnown(key);
    if (key.empty()) {
      return std::unexpected(params->Err("", "parameter names must not be empty"));
    }
    JITBROKER_ASSIGN_OR_RETURN(std::optional<std::string> pattern, params->OptString(key));
    if (!pattern) {
      return std::unexpected(params->Err(key, "must be a pattern string"));
    }
    ParameterRule pr;
    // The name: exact, a glob ("*" = any parameter) or "re:"; folded with
    // ignore_case like the tool and operation.
    JITBROKER_ASSIGN_OR_RETURN(pr.key, CompileMatcher(*params, key, key, rule.ignore_case));
    if (pattern->starts_with("argv:")) {
      Result<ArgvPattern> argv = ArgvPattern::Parse(*pattern);
      if (!argv) {
        return std::unexpected(params->Err(key, argv.error().message));
      }
      pr.argv = std::move(*argv);
    } else {
      JITBROKER_ASSIGN_OR_RETURN(Matcher m, CompileMatcher(*params, key, *pattern));
      pr.value = std::move(m);
    }
    if (!rule.parameters.emplace(key, std::move(pr)).second) {
      return std::unexpected(params->Err(key, "duplicate key"));
    }
  }
  return OkStatus();
}

Status LoadTools(Section& policy_section, Policy& policy) {
  JITBROKER_ASSIGN_OR_RETURN(std::vector<Section> tools, policy_section.SectionList("tools"));
  std::set<std::string> names;
  for (size_t i = 0; i < tools.size(); ++i) {
    Section& ts = tools[i];
    JITBROKER_RETURN_IF_ERROR(Expect(ts, {"name", "match", "tier", "ignore_case"}));
    ToolRule rule;
    JITBROKER_ASSIGN_OR_RETURN(std::optional<std::string> name, ts.OptString("name"));
    if (name) {
      if (name->empty() || name->size() > 128 || !IsPrintable(*name)) {
        return std::unexpected(ts.Err("name", "must be 1 to 128 printable characters"));
      }
      rule.name = *name;
    } else {
      rule.name = "tools[" + std::to_string(i) + "]";
    }
    if (!names.insert(rule.name).second) {
      return std::unexpected(ts.Err("name", "duplicate tool rule name " + Q(rule.name)));
    }
    JITBROKER_ASSIGN_OR_RETURN(std::optional<bool> ignore_case, ts.OptBool("ignore_case"));
    rule.ignore_case = ignore_case.value_or(false);
    JITBROKER_ASSIGN_OR_RETURN(std::string tier, ts.String("tier"));
    JITBROKER_ASSIGN_OR_RETURN(rule.tier, TierValue(ts, "tier", tier));
    JITBROKER_ASSIGN_OR_RETURN(std::optional<Section> match, ts.OptSection("match"));
    if (!match) {
      return std::unexpected(ts.Err("match", "is required"));
    }
    JITBROKER_RETURN_IF_ERROR(
        Expect(*match, {"tool", "operation", "resource", "scopes", "parameters"}));
    struct Field {
      std::string_view key;
      std::optional<Matcher>* out;
      bool ignore_case;
    };
    for (Field f :
         {Field{"tool", &rule.tool, rule.ignore_case},
          Field{"operation", &rule.operation, rule.ignore_case},
          Field{"resource", &rule.resource, false}, Field{"scopes", &rule.scopes, false}}) {
      JITBROKER_ASSIGN_OR_RETURN(std::optional<std::string> pattern, match->OptString(f.key));
      if (pattern) {
        if (pattern->starts_with("argv:")) {
          return std::unexpected(match->Err(f.key, "argv: patterns are for parameters only"));
        }
        JITBROKER_ASSIGN_OR_RETURN(Matcher m,
                                   CompileMatcher(*match, f.key, *pattern, f.ignore_case));
        *f.out = std::move(m);
      }
    }
    JITBROKER_RETURN_IF_ERROR(LoadParameterRules(*match, rule));
    if (!rule.tool && !rule.operation && !rule.resource && !rule.scopes &&
        rule.parameters.empty()) {
      return std::unexpected(ts.Err(
          "match", "must name at least one of tool, operation, resource, scopes, parameters"));
    }
    policy.tools.push_back(std::move(rule));
  }
  return OkStatus();
}

// "FILE:LINE: PATH.KEY" of `key` in `s`, for messages written later.
std::string Location(const Section& s, std::string_view key) {
  std::string text = s.Err(key, "").message;
  if (text.ends_with(": ")) {
    text.resize(text.size() - 2);
  }
  return text;
}

// A principal's upstream identities: `identities: {KEY: VALUE}` and the
// deprecated `github_login: VALUE` (= identities.github).
Status LoadIdentities(Section& ps, Principal& p, PolicyNotes* notes, size_t& github_logins,
                      std::string& first_github_login) {
  JITBROKER_ASSIGN_OR_RETURN(std::optional<Section> ids, ps.OptSection("identities"));
  if (ids) {
    std::vector<std::string> keys;
    try {
      for (auto it = ids->node().begin(); ids->node().IsMap() && it != ids->node().end(); ++it) {
        if (it->first.IsScalar()) {
          keys.push_back(it->first.Scalar());
        }
      }
    } catch (...) {
      return std::unexpected(ps.Err("identities", "must be a mapping of identity key to name"));
    }
    for (const std::string& key : keys) {
      JITBROKER_ASSIGN_OR_RETURN(std::string value, ids->String(key));
      if (!IsIdentityKey(key)) {
        return std::unexpected(ids->Err(
            key, "identity keys must match [a-z][a-z0-9_-]* (at most 64 characters), e.g. github"));
      }
      if (value.size() > 256 || !IsPrintable(value) || value.find(' ') != std::string::npos) {
        return std::unexpected(
            ids->Err(key, "must be 1 to 256 printable characters without spaces"));
      }
      p.identities[key] = value;
      if (notes != nullptr) {
        notes->identity_locations[{p.id, key}] = Location(*ids, key);
      }
    }
    JITBROKER_RETURN_IF_ERROR(ids->CheckNoUnknownKeys());
  }
  JITBROKER_ASSIGN_OR_RETURN(std::optional<std::string> login, ps.OptString("github_login"));
  if (login) {
    if (p.identities.contains("github")) {
      return std::unexpected(ps.Err("github_login",
                                    "is given both here and as identities.github (github_login is "
                                    "deprecated: keep identities.github)"));
    }
    if (login->empty()) {
      return std::unexpected(ps.Err("github_login", "must not be empty"));
    }
    if (login->size() > 256 || !IsPrintable(*login) || login->find(' ') != std::string::npos) {
      return std::unexpected(
          ps.Err("github_login", "must be 1 to 256 printable characters without spaces"));
    }
    p.identities["github"] = *login;
    if (github_logins++ == 0) {
      first_github_login = Location(ps, "github_login");
    }
    if (notes != nullptr) {
      notes->identity_locations[{p.id, "github"}] = Location(ps, "github_login");
    }
  }
  return OkStatus();
}

Status LoadPrincipals(Section& policy_section, Policy& policy, PolicyNotes* notes) {
  JITBROKER_ASSIGN_OR_RETURN(std::vector<Section> list, policy_section.SectionList("principals"));
  const fs::path base = BaseDir(policy_section.file());
  std::map<std::string, std::string> digest_owner;  // digest -> principal id
  std::map<std::string, std::string> cert_owner;    // certificate digest -> principal id
  size_t github_logins = 0;
  std::string first_github_login;
  for (Section& ps : list) {
    JITBROKER_RETURN_IF_ERROR(
        Expect(ps, {"id", "email", "roles", "identities", "github_login", "api_keys_sha256",
                    "api_key_file", "client_certs_sha256"}));
    Principal p;
    JITBROKER_ASSIGN_OR_RETURN(p.id, ps.String("id"));
    if (!IsPrincipalId(p.id)) {
      return std::unexpected(ps.Err(
          "id", "principal ids must match [A-Za-z0-9][A-Za-z0-9_.@-]* (at most 128 characters)"));
    }
    if (policy.FindPrincipal(p.id) != nullptr) {
      return std::unexpected(ps.Err("id", "duplicate principal id " + Q(p.id)));
    }
    JITBROKER_ASSIGN_OR_RETURN(std::optional<std::string> email, ps.OptString("email"));
    p.email = email.value_or("");
    JITBROKER_RETURN_IF_ERROR(LoadIdentities(ps, p, notes, github_logins, first_github_login));
    JITBROKER_ASSIGN_OR_RETURN(p.roles, ps.StringList("roles"));
    if (p.roles.empty()) {
      return std::unexpected(ps.Err("roles", "must list at least one role"));
    }
    for (const std::string& r : p.roles) {
      if (policy.roles.find(r) == policy.roles.end()) {
        return std::unexpected(ps.Err("roles", "unknown role " + Q(r)));
      }
    }
    JITBROKER_ASSIGN_OR_RETURN(std::vector<std::string> digests, ps.StringList("api_keys_sha256"));
    for (size_t i = 0; i < digests.size(); ++i) {
      if (!IsLowerHex64(digests[i])) {
        return std::unexpected(ps.Err(
            "api_keys_sha256", "entry " + std::to_string(i) +
                                   " must be a SHA-256 digest: 64 lower-case hex characters"));
      }
    }
    JITBROKER_ASSIGN_OR_RETURN(std::optional<std::string> key_file, ps.OptString("api_key_file"));
    if (key_file) {
      if (key_file->empty()) {
        return std::unexpected(ps.Err("api_key_file", "must not be empty"));
      }
      p.api_key_file = Resolve(base, *key_file);
      std::error_code ec;
      bool exists = fs::exists(p.api_key_file, ec);
      if (exists) {
        auto read = ReadFileBounded(p.api_key_file, kMaxSecretFileBytes);
        if (!read) {
          return std::unexpected(ps.Err("api_key_file", "cannot read " + read.error().message));
        }
        SecretValue raw(std::move(*read));
        SecretValue key(TrimWhitespace(raw.Reveal()));
        if (key.empty()) {
          return std::unexpected(ps.Err("api_key_file", p.api_key_file + " is empty"));
        }
        digests.push_back(crypto::Sha256Hex(key.Reveal()));
      }
      // Absent: the daemon generates the key at first start and reloads.
    }
    for (const std::string& d : digests) {
      auto [it, inserted] = digest_owner.emplace(d, p.id);
      if (!inserted) {
        return std::unexpected(ps.Err(
            "api_keys_sha256", it->second == p.id
                                   ? "duplicate API key digest"
                                   : "API key digest already used by principal " + Q(it->second)));
      }
    }
    p.api_keys_sha256 = std::move(digests);
    JITBROKER_ASSIGN_OR_RETURN(p.client_certs_sha256, ps.StringList("client_certs_sha256"));
    for (size_t i = 0; i < p.client_certs_sha256.size(); ++i) {
      const std::string& d = p.client_certs_sha256[i];
      if (!IsLowerHex64(d)) {
        return std::unexpected(ps.Err("client_certs_sha256",
                                      "entry " + std::to_string(i) +
                                          " must be a SHA-256 digest of the certificate's DER: 64 "
                                          "lower-case hex characters"));
      }
      auto [it, inserted] = cert_owner.emplace(d, p.id);
      if (!inserted) {
        return std::unexpected(ps.Err("client_certs_sha256",
                                      "certificate already used by principal " + Q(it->second)));
      }
    }
    policy.principals.push_back(std::move(p));
  }
  if (github_logins > 0 && notes != nullptr) {
    notes->warnings.push_back(
        first_github_login + ": github_login is deprecated; write identities: {github: LOGIN} (" +
        std::to_string(github_logins) + " principal" + (github_logins == 1 ? "" : "s") +
        " still use" + (github_logins == 1 ? "s" : "") + " it)");
  }
  return OkStatus();
}

// ---------------------------------------------------------------------------
// the rest of the file

Status ParseListen(Section& s, ServerConfig& server) {
  JITBROKER_ASSIGN_OR_RETURN(std::optional<std::string> listen, s.OptString("listen"));
  if (!listen) {
    return OkStatus();
  }
  const std::string bad = "must be HOST:PORT with a port in [0, 65535], e.g. 127.0.0.1:8443";
  const std::string& l = *listen;
  size_t colon = l.rfind(':');
  if (colon == std::string::npos || colon == 0 || colon + 1 >= l.size()) {
    return std::unexpected(s.Err("listen", bad));
  }
  std::string host = l.substr(0, colon);
  std::string port_text = l.substr(colon + 1);
  if (host.front() == '[') {
    if (host.size() < 3 || host.back() != ']') {
      return std::unexpected(s.Err("listen", bad));
    }
    host = host.substr(1, host.size() - 2);
    if (!std::all_of(host.begin(), host.end(), [](char c) {
          return std::isxdigit(static_cast<unsigned char>(c)) || c == ':' || c == '.';
        })) {
      return std::unexpected(s.Err("listen", bad));
    }
  } else if (!std::all_of(host.begin(), host.end(), [](char c) {
               return std::isalnum(static_cast<unsigned char>(c)) || c == '.' || c == '-';
             })) {
    return std::unexpected(s.Err("listen", bad));
  }
  int port = -1;
  auto [ptr, ec] = std::from_chars(port_text.data(), port_text.data() + port_text.size(), port);
  if (ec != std::errc() || ptr != port_text.data() + port_text.size() || port < 0 || port > 65535 ||
      port_text.size() > 5) {
    return std::unexpected(s.Err("listen", bad));
  }
  server.host = host;
  server.port = port;
  return OkStatus();
}

Result<std::string> TlsPath(Section& tls, std::string_view key, const fs::path& base) {
  JITBROKER_ASSIGN_OR_RETURN(std::optional<std::string> v, tls.OptString(key));
  if (!v) {
    return std::string();
  }
  std::string_view p = *v;
  if (p.starts_with("file:")) {
    p.remove_prefix(5);
  } else if (p.starts_with("env:")) {
    return std::unexpected(tls.Err(key, "must be a PEM file path (PATH or file:PATH)"));
  }
  if (p.empty()) {
    return std::unexpected(tls.Err(key, "must not be empty"));
  }
  std::string resolved = Resolve(base, p);
  std::error_code ec;
  if (!fs::is_regular_file(resolved, ec)) {
    return std::unexpected(tls.Err(key, "file " + resolved + " does not exist"));
  }
  return resolved;
}

Status LoadServer(Section& top, const fs::path& base, ServerConfig& server) {
  JITBROKER_ASSIGN_OR_RETURN(std::optional<Section> s, top.OptSection("server"));
  if (!s) {
    return OkStatus();
  }
  JITBROKER_RETURN_IF_ERROR(
      Expect(*s, {"listen", "threads", "io_threads", "max_queued_requests", "max_body_bytes",
                  "max_header_bytes", "max_header_count", "max_connections",
                  "max_connections_per_address", "request_timeout_ms", "idle_timeout_ms",
                  "write_timeout_ms", "max_long_polls", "metrics_public", "tls"}));
  JITBROKER_RETURN_IF_ERROR(ParseListen(*s, server));
  JITBROKER_ASSIGN_OR_RETURN(std::optional<int64_t> threads, s->OptInt("threads", 1, 256));
  if (threads) {
    server.threads = static_cast<int>(*threads);
  }
  JITBROKER_ASSIGN_OR_RETURN(std::optional<int64_t> io_threads, s->OptInt("io_threads", 1, 64));
  if (io_threads) {
    server.io_threads = static_cast<int>(*io_threads);
  }
  JITBROKER_ASSIGN_OR_RETURN(std::optional<int64_t> header_bytes,
                             s->OptInt("max_header_bytes", 1024, 1024 * 1024));
  if (header_bytes) {
    server.max_header_bytes = static_cast<size_t>(*header_bytes);
  }
  JITBROKER_ASSIGN_OR_RETURN(std::optional<int64_t> header_count,
                             s->OptInt("max_header_count", 8, 10000));
  if (header_count) {
    server.max_header_count = static_cast<size_t>(*header_count);
  }
  JITBROKER_ASSIGN_OR_RETURN(std::optional<int64_t> conns,
                             s->OptInt("max_connections", 1, 1000000));
  if (conns) {
    server.max_connections = static_cast<size_t>(*conns);
  }
  JITBROKER_ASSIGN_OR_RETURN(std::optional<int64_t> per_address,
                             s->OptInt("max_connections_per_address", 1, 1000000));
  if (per_address) {
    server.max_connections_per_address = static_cast<size_t>(*per_address);
  }
  JITBROKER_ASSIGN_OR_RETURN(std::optional<int64_t> request_timeout,
                             s->OptInt("request_timeout_ms", 100, 600000));
  if (request_timeout) {
    server.request_timeout_ms = *request_timeout;
  }
  JITBROKER_ASSIGN_OR_RETURN(std::optional<int64_t> idle_timeout,
                             s->OptInt("idle_timeout_ms", 100, 3600000));
  if (idle_timeout) {
    server.idle_timeout_ms = *idle_timeout;
  }
  JITBROKER_ASSIGN_OR_RETURN(std::optional<int64_t> write_timeout,
                             s->OptInt("write_timeout_ms", 100, 600000));
  if (write_timeout) {
    server.write_timeout_ms = *write_timeout;
  }
  JITBROKER_ASSIGN_OR_RETURN(std::optional<int64_t> long_polls,
                             s->OptInt("max_long_polls", 1, 100000));
  if (long_polls) {
    if (*long_polls >= server.threads) {
      return std::unexpected(s->Err("max_long_polls",
                                    "must be below server.threads, so that a worker is always "
                                    "left for requests that do not wait"));
    }
    server.max_long_polls = static_cast<int>(*long_polls);
  }
  JITBROKER_ASSIGN_OR_RETURN(std::optional<int64_t> queued,
                             s->OptInt("max_queued_requests", 1, 1000000));
  if (queued) {
    server.max_queued_requests = static_cast<int>(*queued);
  }
  JITBROKER_ASSIGN_OR_RETURN(std::optional<int64_t> body,
                             s->OptInt("max_body_bytes", 1024, 16 * 1024 * 1024));
  if (body) {
    server.max_body_bytes = static_cast<size_t>(*body);
  }
  JITBROKER_ASSIGN_OR_RETURN(std::optional<bool> metrics_public, s->OptBool("metrics_public"));
  if (metrics_public) {
    server.metrics_public = *metrics_public;
  }
  JITBROKER_ASSIGN_OR_RETURN(std::optional<Section> tls, s->OptSection("tls"));
  if (tls) {
    JITBROKER_RETURN_IF_ERROR(Expect(*tls, {"cert", "key", "client_ca"}));
    JITBROKER_ASSIGN_OR_RETURN(server.tls_cert, TlsPath(*tls, "cert", base));
    JITBROKER_ASSIGN_OR_RETURN(server.tls_key, TlsPath(*tls, "key", base));
    JITBROKER_ASSIGN_OR_RETURN(server.tls_client_ca, TlsPath(*tls, "client_ca", base));
    if (server.tls_cert.empty() != server.tls_key.empty()) {
      return std::unexpected(tls->Err("", "cert and key must be given together"));
    }
    if (!server.tls_client_ca.empty() && server.tls_cert.empty()) {
      return std::unexpected(tls->Err("client_ca",
                                      "needs cert and key: client certificates "
                                      "are asked for in the TLS handshake"));
    }
  }
  return OkStatus();
}

// A replica's id names its audit chain: short, and safe in logs and URLs.
bool ValidReplicaId(std::string_view id) {
  if (id.empty() || id.size() > 64) {
    return false;
  }
  for (const char c : id) {
    if (!std::isalnum(static_cast<unsigned char>(c)) && c != '.' && c != '_' && c != '-') {
      return false;
    }
  }
  return true;
}

Status LoadStore(Section& top, const fs::path& base, const std::string& data_dir,
                 StoreConfig& store) {
  SqliteStoreConfig sqlite_config;
  sqlite_config.path = (fs::path(data_dir) / "state.db").string();
  store.backend = sqlite_config;
  JITBROKER_ASSIGN_OR_RETURN(std::optional<Section> s, top.OptSection("store"));
  if (!s) {
    return OkStatus();
  }
  JITBROKER_RETURN_IF_ERROR(Expect(*s, {"sqlite", "postgres", "group_commit_max_batch"}));
  if (s->Has("sqlite") && s->Has("postgres")) {
    return std::unexpected(s->Err("", "give one of sqlite or postgres, not both"));
  }
  JITBROKER_ASSIGN_OR_RETURN(std::optional<int64_t> batch,
                             s->OptInt("group_commit_max_batch", 1, 100000));
  if (batch) {
    store.group_commit_max_batch = static_cast<int>(*batch);
  }
  JITBROKER_ASSIGN_OR_RETURN(std::optional<Section> postgres, s->OptSection("postgres"));
  if (postgres) {
    JITBROKER_RETURN_IF_ERROR(Expect(*postgres, {"dsn", "pool_size", "replica_id"}));
    PostgresStoreConfig pg;
    JITBROKER_ASSIGN_OR_RETURN(std::optional<std::string> replica,
                               postgres->OptString("replica_id"));
    if (replica) {
      pg.replica_id = *replica;
    } else {
      std::array<char, 256> host{};
      if (::gethostname(host.data(), host.size() - 1) == 0) {
        pg.replica_id = host.data();
      }
    }
    if (!ValidReplicaId(pg.replica_id)) {
      return std::unexpected(postgres->Err(
          "replica_id", replica ? "must be 1-64 of a-z A-Z 0-9 . _ -"
                                : "is required: the host name is not 1-64 of a-z A-Z 0-9 . _ -"));
    }
    JITBROKER_ASSIGN_OR_RETURN(std::optional<int64_t> pool, postgres->OptInt("pool_size", 1, 1000));
    if (pool) {
      pg.pool_size = static_cast<int>(*pool);
    }
    // By env:/file: reference only: a DSN may hold a password.
    JITBROKER_ASSIGN_OR_RETURN(pg.dsn, postgres->OptSecretRef("dsn"));
    if (!pg.dsn) {
      return std::unexpected(postgres->Err("dsn", "is required"));
    }
    if (pg.dsn->empty()) {
      return std::unexpected(postgres->Err("dsn", "is empty"));
    }
    store.backend = std::move(pg);
    return OkStatus();
  }
  JITBROKER_ASSIGN_OR_RETURN(std::optional<Section> sqlite, s->OptSection("sqlite"));
  if (sqlite) {
    JITBROKER_RETURN_IF_ERROR(Expect(*sqlite, {"path"}));
    JITBROKER_ASSIGN_OR_RETURN(std::optional<std::string> path, sqlite->OptString("path"));
    if (path) {
      if (path->empty()) {
        return std::unexpected(sqlite->Err("path", "must not be empty"));
      }
      sqlite_config.path = Resolve(base, *path);
      store.backend = sqlite_config;
    }
  }
  return OkStatus();
}

Status LoadAudit(Section& top, const fs::path& base, const std::string& data_dir,
                 AuditConfig& audit) {
  audit.file = (fs::path(data_dir) / "audit.jsonl").string();
  JITBROKER_ASSIGN_OR_RETURN(std::optional<Section> s, top.OptSection("audit"));
  if (!s) {
    return OkStatus();
  }
  JITBROKER_ASSIGN_OR_RETURN(std::optional<std::string> file, s->OptString("file"));
  if (file) {
    if (file->empty()) {
      return std::unexpected(s->Err("file", "must not be empty"));
    }
    audit.file = Resolve(base, *file);
  }
  JITBROKER_ASSIGN_OR_RETURN(audit.signing_key, s->OptSecretRef("signing_key"));
  JITBROKER_ASSIGN_OR_RETURN(std::optional<std::string> sync, s->OptString("file_sync"));
  if (sync) {
    if (*sync != "interval" && *sync != "commit") {
      return std::unexpected(s->Err("file_sync", "must be one of interval, commit"));
    }
    audit.file_sync_per_commit = *sync == "commit";
  }
  JITBROKER_ASSIGN_OR_RETURN(std::optional<int64_t> interval,
                             s->OptInt("file_sync_interval_ms", 10, 60000));
  audit.file_sync_interval_ms = interval.value_or(audit.file_sync_interval_ms);
  JITBROKER_ASSIGN_OR_RETURN(std::optional<Section> cp, s->OptSection("checkpoint"));
  if (cp) {
    JITBROKER_ASSIGN_OR_RETURN(std::optional<int64_t> records,
                               cp->OptInt("every_records", 1, 1000000));
    JITBROKER_ASSIGN_OR_RETURN(std::optional<int64_t> seconds,
                               cp->OptInt("every_seconds", 1, 86400));
    JITBROKER_RETURN_IF_ERROR(cp->CheckNoUnknownKeys());
    audit.checkpoint_every_records = records.value_or(audit.checkpoint_every_records);
    audit.checkpoint_every_seconds = seconds.value_or(audit.checkpoint_every_seconds);
  }
  return s->CheckNoUnknownKeys();
}

Status LoadSessions(Section& top, SessionsConfig& sessions) {
  JITBROKER_ASSIGN_OR_RETURN(std::optional<Section> s, top.OptSection("sessions"));
  if (!s) {
    return OkStatus();
  }
  JITBROKER_RETURN_IF_ERROR(
      Expect(*s, {"max_ttl_seconds", "default_ttl_seconds", "heartbeat_seconds",
                  "stall_after_missed", "sweep_interval_ms"}));
  JITBROKER_ASSIGN_OR_RETURN(std::optional<int64_t> max_ttl,
                             s->OptInt("max_ttl_seconds", 60, 7 * 86400));
  if (max_ttl) {
    sessions.max_ttl_seconds = *max_ttl;
  }
  JITBROKER_ASSIGN_OR_RETURN(std::optional<int64_t> default_ttl,
                             s->OptInt("default_ttl_seconds", 60, 7 * 86400));
  if (default_ttl) {
    if (*default_ttl > sessions.max_ttl_seconds) {
      return std::unexpected(s->Err(
          "default_ttl_seconds",
          "must not exceed max_ttl_seconds (" + std::to_string(sessions.max_ttl_seconds) + ")"));
    }
    sessions.default_ttl_seconds = *default_ttl;
  } else {
    sessions.default_ttl_seconds = std::min(sessions.default_ttl_seconds, sessions.max_ttl_seconds);
  }
  JITBROKER_ASSIGN_OR_RETURN(std::optional<int64_t> heartbeat,
                             s->OptInt("heartbeat_seconds", 5, 3600));
  if (heartbeat) {
    sessions.heartbeat_seconds = *heartbeat;
  }
  JITBROKER_ASSIGN_OR_RETURN(std::optional<int64_t> sweep,
                             s->OptInt("sweep_interval_ms", 50, 60000));
  if (sweep) {
    sessions.sweep_interval_ms = *sweep;
  }
  JITBROKER_ASSIGN_OR_RETURN(std::optional<int64_t> stall, s->OptInt("stall_after_missed", 1, 100));
  if (stall) {
    sessions.stall_after_missed = *stall;
  }
  return OkStatus();
}

Status LoadLog(Section& top, const fs::path& base, LogConfig& log) {
  JITBROKER_ASSIGN_OR_RETURN(std::optional<Section> s, top.OptSection("log"));
  if (!s) {
    return OkStatus();
  }
  JITBROKER_RETURN_IF_ERROR(Expect(*s, {"level", "access_log"}));
  JITBROKER_ASSIGN_OR_RETURN(std::optional<std::string> level, s->OptString("level"));
  if (level) {
    static constexpr std::string_view kLevels[] = {"trace", "debug", "info",
                                                   "warn",  "error", "off"};
    if (std::find(std::begin(kLevels), std::end(kLevels), *level) == std::end(kLevels)) {
      return std::unexpected(
          s->Err("level", "must be one of trace, debug, info, warn, error, off"));
    }
    log.level = *level;
  }
  JITBROKER_ASSIGN_OR_RETURN(std::optional<std::string> access, s->OptString("access_log"));
  if (access) {
    if (access->empty()) {
      return std::unexpected(s->Err("access_log", "must be stderr, off or a file path"));
    }
    log.access_log = (*access == "stderr" || *access == "off") ? *access : Resolve(base, *access);
  }
  return OkStatus();
}

Status LoadIssuers(Section& top, std::vector<IssuerConfig>& issuers) {
  JITBROKER_ASSIGN_OR_RETURN(std::optional<Section> s, top.OptSection("issuers"));
  if (!s || !s->node().IsMap()) {
    return OkStatus();
  }
  for (auto it = s->node().begin(); it != s->node().end(); ++it) {
    const std::string name = it->first.Scalar();
    s->MarkKnown(name);
    if (!IsName(name)) {
      return std::unexpected(
          s->Err(name, "issuer names must match [a-z0-9][a-z0-9_-]* (at most 64 characters)"));
    }
    if (!it->second.IsMap()) {
      return std::unexpected(s->Err(name, "must be a mapping"));
    }
    Section is = Child(*s, it->second, name);
    // Which types exist is the issuer registry's business (issuers/registry.h):
    // app::ValidateConfig refuses a type this build does not have.
    JITBROKER_ASSIGN_OR_RETURN(std::string type, is.String("type"));
    issuers.push_back(IssuerConfig{name, type, std::move(is)});
  }
  return s->CheckNoUnknownKeys();
}

// ---------------------------------------------------------------------------
// approvals

bool AsciiEqualsIgnoreCase(std::string_view a, std::string_view b) {
  return a.size() == b.size() && std::equal(a.begin(), a.end(), b.begin(), [](char x, char y) {
           return std::tolower(static_cast<unsigned char>(x)) ==
                  std::tolower(static_cast<unsigned char>(y));
         });
}

// The webhook URL (net::UrlPolicy::WebhookUrl): https (http only for
// loopback), a host, an optional port, no userinfo and no fragment. Messages
// never echo the URL: its path may hold a token.
Status CheckWebhookUrl(Section& s, std::string_view url) {
  Result<net::Url> parsed = net::ParseUrl(url, net::UrlPolicy::WebhookUrl());
  if (!parsed) {
    return std::unexpected(
        s.Err("url",
              "must be an https:// URL (http:// only for a loopback host: 127.0.0.0/8, [::1], "
              "localhost) with a host, no user:password@ and no #fragment; this one " +
                  parsed.error().message));
  }
  return OkStatus();
}

// "Bearer TOKEN" with a token of visible ASCII: what the HTTP client can send
// as the Authorization header. The value itself never appears in a message.
bool IsBearerHeaderValue(std::string_view v) {
  constexpr std::string_view kScheme = "bearer ";
  if (v.size() <= kScheme.size() || !AsciiEqualsIgnoreCase(v.substr(0, kScheme.size()), kScheme)) {
    return false;
  }
  std::string_view token = v.substr(kScheme.size());
  return std::all_of(token.begin(), token.end(), [](char c) {
    auto u = static_cast<unsigned char>(c);
    return u > 0x20 && u < 0x7f;
  });
}

// Slack ids (users U…/W…, channels C…/G…/D…): upper-case letters and digits.
bool IsSlackId(std::string_view id) {
  return !id.empty() && id.size() <= 32 && std::all_of(id.begin(), id.end(), [](char c) {
    return (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
  });
}

// approvals.slack (docs/configuration.md "approvals.slack"). The principals
// `users` names are checked against the policy by CheckSlackUsers, once it
// is loaded.
Status LoadSlack(Section& approvals_section, ApprovalsConfig& approvals) {
  JITBROKER_ASSIGN_OR_RETURN(std::optional<Section> s, approvals_section.OptSection("slack"));
  if (!s) {
    return OkStatus();
  }
  JITBROKER_RETURN_IF_ERROR(
      Expect(*s, {"api_url", "bot_token", "channel", "signing_secret", "mode", "users",
                  "match_email", "console_url", "timeout_seconds", "max_attempts", "max_queue"}));
  ApprovalSlackConfig slack;
  JITBROKER_ASSIGN_OR_RETURN(std::optional<std::string> api_url, s->OptString("api_url"));
  if (api_url) {
    while (api_url->ends_with('/')) {
      api_url->pop_back();
    }
    Result<net::Url> parsed = net::ParseUrl(*api_url, net::UrlPolicy::WebhookUrl());
    if (!parsed || parsed->query) {
      return std::unexpected(
          s->Err("api_url",
                 "must be an https:// URL (http:// only for a loopback host: 127.0.0.0/8, [::1], "
                 "localhost) with a host, no user:password@, no ?query and no #fragment"));
    }
    slack.api_url = std::move(*api_url);
  }
  JITBROKER_ASSIGN_OR_RETURN(std::optional<SecretValue> token, s->OptSecretRef("bot_token"));
  if (!token) {
    return std::unexpected(s->Err("bot_token", "is required (a file: or env: reference)"));
  }
  const std::string_view tv = token->Reveal();
  if (tv.empty() || !std::all_of(tv.begin(), tv.end(), [](char c) {
        auto u = static_cast<unsigned char>(c);
        return u > 0x20 && u < 0x7f;
      })) {
    return std::unexpected(s->Err("bot_token", "the referenced value must be visible ASCII"));
  }
  slack.bot_token = std::move(*token);
  JITBROKER_ASSIGN_OR_RETURN(slack.channel, s->String("channel"));
  if (!IsSlackId(slack.channel)) {
    return std::unexpected(
        s->Err("channel", "must be a channel id (upper-case letters and digits, e.g. C0123ABCD)"));
  }
  JITBROKER_ASSIGN_OR_RETURN(std::optional<std::string> mode, s->OptString("mode"));
  if (mode) {
    if (*mode != "interactive" && *mode != "notify_only") {
      return std::unexpected(s->Err("mode", "must be interactive or notify_only"));
    }
    slack.interactive = *mode == "interactive";
  }
  JITBROKER_ASSIGN_OR_RETURN(slack.signing_secret, s->OptSecretRef("signing_secret"));
  if (slack.interactive && (!slack.signing_secret || slack.signing_secret->empty())) {
    return std::unexpected(
        s->Err("signing_secret",
               "is required in interactive mode (a file: or env: reference to the Slack app's "
               "signing secret)"));
  }
  JITBROKER_ASSIGN_OR_RETURN(std::optional<Section> users, s->OptSection("users"));
  if (users) {
    if (!users->node().IsMap()) {
      return std::unexpected(s->Err("users", "must be a mapping of Slack user id to principal id"));
    }
    JITBROKER_ASSIGN_OR_RETURN(std::vector<std::string> ids, users->Keys());
    for (const std::string& id : ids) {
      if (!IsSlackId(id)) {
        return std::unexpected(
            users->Err(id, "is not a Slack user id (upper-case letters and digits)"));
      }
      JITBROKER_ASSIGN_OR_RETURN(std::string principal, users->String(id));
      slack.users.emplace(id, std::move(principal));
    }
  }
  JITBROKER_ASSIGN_OR_RETURN(std::optional<bool> match_email, s->OptBool("match_email"));
  slack.match_email = match_email.value_or(false);
  JITBROKER_ASSIGN_OR_RETURN(std::optional<std::string> console, s->OptString("console_url"));
  if (console) {
    while (console->ends_with('/')) {
      console->pop_back();
    }
    Result<net::Url> parsed = net::ParseUrl(*console, net::UrlPolicy::WebhookUrl());
    if (!parsed || parsed->query) {
      return std::unexpected(
          s->Err("console_url",
                 "must be an https:// URL (http:// only for a loopback host) with no ?query and no "
                 "#fragment"));
    }
    slack.console_url = std::move(*console);
  }
  JITBROKER_ASSIGN_OR_RETURN(std::optional<int64_t> timeout, s->OptInt("timeout_seconds", 1, 60));
  slack.timeout_seconds = timeout.value_or(slack.timeout_seconds);
  JITBROKER_ASSIGN_OR_RETURN(std::optional<int64_t> attempts, s->OptInt("max_attempts", 1, 100));
  slack.max_attempts = attempts.value_or(slack.max_attempts);
  JITBROKER_ASSIGN_OR_RETURN(std::optional<int64_t> queue, s->OptInt("max_queue", 1, 100000));
  slack.max_queue = queue.value_or(slack.max_queue);
  approvals.slack = std::move(slack);
  return OkStatus();
}

// Every principal approvals.slack.users names exists in the policy.
Status CheckSlackUsers(Section& top, const ApprovalsConfig& approvals, const Policy& policy) {
  if (!approvals.slack || approvals.slack->users.empty()) {
    return OkStatus();
  }
  JITBROKER_ASSIGN_OR_RETURN(std::optional<Section> a, top.OptSection("approvals"));
  JITBROKER_ASSIGN_OR_RETURN(std::optional<Section> s, a->OptSection("slack"));
  JITBROKER_ASSIGN_OR_RETURN(std::optional<Section> users, s->OptSection("users"));
  for (const auto& [id, principal] : approvals.slack->users) {
    if (policy.FindPrincipal(principal) == nullptr) {
      return std::unexpected(users->Err(
          id, "names principal " + principal + ", which policy.principals does not define"));
    }
  }
  return OkStatus();
}

Status LoadApprovals(Section& top, ApprovalsConfig& approvals) {
  JITBROKER_ASSIGN_OR_RETURN(std::optional<Section> s, top.OptSection("approvals"));
  if (!s) {
    return OkStatus();
  }
  JITBROKER_RETURN_IF_ERROR(Expect(*s, {"default_ttl_seconds", "max_pending_per_session",
                                        "max_pending_per_principal", "webhook", "slack"}));
  JITBROKER_ASSIGN_OR_RETURN(std::optional<int64_t> ttl,
                             s->OptInt("default_ttl_seconds", 10, 86400));
  if (ttl) {
    approvals.default_ttl_seconds = *ttl;
  }
  JITBROKER_ASSIGN_OR_RETURN(std::optional<int64_t> per_session,
                             s->OptInt("max_pending_per_session", 1, 10000));
  if (per_session) {
    approvals.max_pending_per_session = *per_session;
  }
  JITBROKER_ASSIGN_OR_RETURN(std::optional<int64_t> per_principal,
                             s->OptInt("max_pending_per_principal", 1, 100000));
  if (per_principal) {
    approvals.max_pending_per_principal = *per_principal;
  }
  JITBROKER_RETURN_IF_ERROR(LoadSlack(*s, approvals));
  JITBROKER_ASSIGN_OR_RETURN(std::optional<Section> w, s->OptSection("webhook"));
  if (!w) {
    return OkStatus();
  }
  JITBROKER_RETURN_IF_ERROR(
      Expect(*w, {"url", "timeout_seconds", "max_attempts", "authorization", "max_queue"}));
  ApprovalWebhookConfig webhook;
  JITBROKER_ASSIGN_OR_RETURN(webhook.url, w->String("url"));
  JITBROKER_RETURN_IF_ERROR(CheckWebhookUrl(*w, webhook.url));
  JITBROKER_ASSIGN_OR_RETURN(std::optional<int64_t> timeout, w->OptInt("timeout_seconds", 1, 60));
  if (timeout) {
    webhook.timeout_seconds = *timeout;
  }
  JITBROKER_ASSIGN_OR_RETURN(std::optional<int64_t> attempts, w->OptInt("max_attempts", 1, 100));
  if (attempts) {
    webhook.max_attempts = *attempts;
  }
  JITBROKER_ASSIGN_OR_RETURN(std::optional<int64_t> queue, w->OptInt("max_queue", 1, 100000));
  if (queue) {
    webhook.max_queue = *queue;
  }
  JITBROKER_ASSIGN_OR_RETURN(webhook.authorization, w->OptSecretRef("authorization"));
  if (webhook.authorization && !IsBearerHeaderValue(webhook.authorization->Reveal())) {
    return std::unexpected(w->Err(
        "authorization", "the referenced value must read \"Bearer TOKEN\" (visible ASCII token)"));
  }
  approvals.webhook = std::move(webhook);
  return OkStatus();
}

// ---------------------------------------------------------------------------
// limits

Status LoadRateLimit(Section& parent, std::string_view key, RateLimit& limit) {
  JITBROKER_ASSIGN_OR_RETURN(std::optional<Section> s, parent.OptSection(key));
  if (!s) {
    return OkStatus();
  }
  JITBROKER_RETURN_IF_ERROR(Expect(*s, {"rate_per_second", "burst"}));
  JITBROKER_ASSIGN_OR_RETURN(
      std::optional<double> rate,
      s->OptNumber("rate_per_second", 0.001, kMaxRatePerSecond, "[0.001, 1000000]"));
  if (rate) {
    limit.rate_per_second = *rate;
  }
  JITBROKER_ASSIGN_OR_RETURN(std::optional<int64_t> burst,
                             s->OptInt("burst", 1, static_cast<int64_t>(kMaxBurst)));
  if (burst) {
    limit.burst = static_cast<double>(*burst);
  }
  return OkStatus();
}

Status LoadLimits(Section& top, LimitsConfig& limits) {
  JITBROKER_ASSIGN_OR_RETURN(std::optional<Section> s, top.OptSection("limits"));
  if (!s) {
    return OkStatus();
  }
  JITBROKER_RETURN_IF_ERROR(Expect(
      *s,
      {"grants_per_session", "grants_per_principal", "token_per_address", "introspect_per_address",
       "auth_failures_per_address", "max_calls_per_issuer", "max_tracked_keys"}));
  JITBROKER_RETURN_IF_ERROR(LoadRateLimit(*s, "grants_per_session", limits.grants_per_session));
  JITBROKER_RETURN_IF_ERROR(LoadRateLimit(*s, "grants_per_principal", limits.grants_per_principal));
  JITBROKER_RETURN_IF_ERROR(LoadRateLimit(*s, "token_per_address", limits.token_per_address));
  JITBROKER_RETURN_IF_ERROR(
      LoadRateLimit(*s, "introspect_per_address", limits.introspect_per_address));
  JITBROKER_RETURN_IF_ERROR(
      LoadRateLimit(*s, "auth_failures_per_address", limits.auth_failures_per_address));
  JITBROKER_ASSIGN_OR_RETURN(std::optional<int64_t> per_issuer,
                             s->OptInt("max_calls_per_issuer", 1, 4096));
  if (per_issuer) {
    limits.max_calls_per_issuer = *per_issuer;
  }
  JITBROKER_ASSIGN_OR_RETURN(std::optional<int64_t> keys,
                             s->OptInt("max_tracked_keys", 100, 10000000));
  if (keys) {
    limits.max_tracked_keys = *keys;
  }
  return OkStatus();
}

// ---------------------------------------------------------------------------
// humans

Status LoadHumans(Section& top, std::optional<HumansConfig>& out) {
  JITBROKER_ASSIGN_OR_RETURN(std::optional<Section> s, top.OptSection("humans"));
  if (!s) {
    return OkStatus();
  }
  JITBROKER_RETURN_IF_ERROR(
      Expect(*s, {"issuer", "allow_http", "client_id", "client_secret", "token_endpoint_auth",
                  "redirect_url", "claim", "scopes", "algorithms", "session_ttl_seconds",
                  "max_token_age_seconds", "leeway_seconds", "max_console_sessions"}));
  HumansConfig h;
  JITBROKER_ASSIGN_OR_RETURN(std::optional<bool> allow_http, s->OptBool("allow_http"));
  h.allow_http = allow_http.value_or(false);
  JITBROKER_ASSIGN_OR_RETURN(h.issuer, s->String("issuer"));
  if (Result<net::Url> u = net::ParseUrl(h.issuer, net::UrlPolicy::OidcEndpoint(h.allow_http));
      !u) {
    return std::unexpected(s->Err(
        "issuer", u.error().Reason() == "url_http_refused"
                      ? "must use https (plain http is allowed only with allow_http: true for a "
                        "loopback test provider)"
                      : u.error().message));
  }
  JITBROKER_ASSIGN_OR_RETURN(h.client_id, s->String("client_id"));
  if (h.client_id.empty() || h.client_id.size() > 255 ||
      !std::all_of(h.client_id.begin(), h.client_id.end(), [](char c) {
        auto u = static_cast<unsigned char>(c);
        return u > 0x20 && u < 0x7f;
      })) {
    return std::unexpected(s->Err("client_id", "must be 1 to 255 visible ASCII characters"));
  }
  JITBROKER_ASSIGN_OR_RETURN(std::optional<SecretValue> secret, s->OptSecretRef("client_secret"));
  if (!secret || secret->Reveal().empty()) {
    return std::unexpected(
        s->Err("client_secret", "is required (a file: or env: reference to the client secret)"));
  }
  h.client_secret = std::move(*secret);
  JITBROKER_ASSIGN_OR_RETURN(std::optional<std::string> auth, s->OptString("token_endpoint_auth"));
  if (auth) {
    if (*auth != "client_secret_basic" && *auth != "client_secret_post") {
      return std::unexpected(
          s->Err("token_endpoint_auth", "must be client_secret_basic or client_secret_post"));
    }
    h.token_endpoint_auth = *auth;
  }
  JITBROKER_ASSIGN_OR_RETURN(h.redirect_url, s->String("redirect_url"));
  {
    net::UrlPolicy rp;
    rp.http = net::HttpRule::kLoopbackOnly;
    rp.allow_dot_segments = false;
    Result<net::Url> u = net::ParseUrl(h.redirect_url, rp);
    if (!u || !u->path.ends_with("/ui/callback")) {
      return std::unexpected(
          s->Err("redirect_url",
                 "must be the broker's /ui/callback as browsers reach it: an https:// URL (http:// "
                 "only for a loopback host) whose path ends in /ui/callback, without query or "
                 "fragment"));
    }
  }
  JITBROKER_ASSIGN_OR_RETURN(std::optional<std::string> claim, s->OptString("claim"));
  if (claim) {
    if (*claim != "email" && *claim != "sub") {
      return std::unexpected(s->Err("claim", "must be email or sub"));
    }
    h.claim = *claim;
  }
  if (s->Has("scopes")) {
    JITBROKER_ASSIGN_OR_RETURN(h.scopes, s->StringList("scopes"));
    if (std::find(h.scopes.begin(), h.scopes.end(), "openid") == h.scopes.end()) {
      return std::unexpected(s->Err("scopes", "must include openid"));
    }
    for (const std::string& scope : h.scopes) {
      if (scope.empty() || scope.size() > 128 ||
          !std::all_of(scope.begin(), scope.end(), [](char c) {
            auto u = static_cast<unsigned char>(c);
            return u > 0x20 && u < 0x7f && c != '"' && c != '\\';
          })) {
        return std::unexpected(s->Err("scopes", "each scope is 1 to 128 visible characters"));
      }
    }
  }
  if (s->Has("algorithms")) {
    JITBROKER_ASSIGN_OR_RETURN(h.algorithms, s->StringList("algorithms"));
    static constexpr std::string_view kAllowed[] = {"RS256", "RS384", "RS512", "PS256", "PS384",
                                                    "PS512", "ES256", "ES384", "EdDSA"};
    if (h.algorithms.empty()) {
      return std::unexpected(s->Err("algorithms", "must name at least one algorithm"));
    }
    for (const std::string& alg : h.algorithms) {
      if (std::find(std::begin(kAllowed), std::end(kAllowed), alg) == std::end(kAllowed)) {
        return std::unexpected(
            s->Err("algorithms", "unsupported algorithm \"" + alg.substr(0, 32) +
                                     "\" (asymmetric JOSE algorithms only: RS256, RS384, RS512, "
                                     "PS256, PS384, PS512, ES256, ES384, EdDSA)"));
      }
    }
  }
  JITBROKER_ASSIGN_OR_RETURN(auto ttl, s->OptInt("session_ttl_seconds", 60, 43200));
  h.session_ttl_seconds = ttl.value_or(h.session_ttl_seconds);
  JITBROKER_ASSIGN_OR_RETURN(auto age, s->OptInt("max_token_age_seconds", 60, 86400));
  h.max_token_age_seconds = age.value_or(h.max_token_age_seconds);
  JITBROKER_ASSIGN_OR_RETURN(auto leeway, s->OptInt("leeway_seconds", 0, 300));
  h.leeway_seconds = leeway.value_or(h.leeway_seconds);
  JITBROKER_ASSIGN_OR_RETURN(auto max_sessions, s->OptInt("max_console_sessions", 1, 1000000));
  h.max_console_sessions = max_sessions.value_or(h.max_console_sessions);
  out = std::move(h);
  return OkStatus();
}

Status LoadProxy(Section& top, ProxyConfig& proxy) {
  JITBROKER_ASSIGN_OR_RETURN(std::optional<Section> s, top.OptSection("proxy"));
  if (!s) {
    return OkStatus();
  }
  JITBROKER_RETURN_IF_ERROR(Expect(
      *s,
      {"enabled", "max_push_bytes", "max_transfer_seconds", "idle_timeout_seconds",
       "max_concurrent_transfers", "max_refs_per_push", "protected_branches",
       "default_branch_protected", "read_token_ttl_seconds", "max_api_body_bytes", "api_routes"}));
  JITBROKER_ASSIGN_OR_RETURN(auto api_body, s->OptInt("max_api_body_bytes", 1024, 64 << 20));
  proxy.max_api_body_bytes = api_body.value_or(proxy.max_api_body_bytes);
  JITBROKER_ASSIGN_OR_RETURN(std::vector<Section> routes, s->SectionList("api_routes"));
  for (Section& r : routes) {
    JITBROKER_RETURN_IF_ERROR(Expect(r, {"method", "path", "tool", "operation", "permissions"}));
    ProxyConfig::ApiRoute route;
    JITBROKER_ASSIGN_OR_RETURN(route.method, r.String("method"));
    JITBROKER_ASSIGN_OR_RETURN(route.path, r.String("path"));
    JITBROKER_ASSIGN_OR_RETURN(route.tool, r.String("tool"));
    JITBROKER_ASSIGN_OR_RETURN(route.operation, r.String("operation"));
    static const std::set<std::string> kMethods = {"*", "GET", "POST", "PUT", "PATCH", "DELETE"};
    if (!kMethods.contains(route.method)) {
      return std::unexpected(r.Err("method", "must be GET, POST, PUT, PATCH, DELETE or *"));
    }
    if (route.path.empty() || route.path.starts_with('/') || route.path.size() > 512 ||
        !IsPrintable(route.path)) {
      return std::unexpected(
          r.Err("path",
                "must be a path under /repos/{owner}/{repo}, without the "
                "leading slash (\"pulls/{number}/merge\", \"**\" for the rest)"));
    }
    if (route.tool.empty() || route.tool.size() > 128 || !IsPrintable(route.tool) ||
        route.operation.empty() || route.operation.size() > 64 || !IsPrintable(route.operation)) {
      return std::unexpected(
          r.Err("tool", "tool and operation must be 1-128 printable characters"));
    }
    if (r.Has("permissions")) {
      JITBROKER_ASSIGN_OR_RETURN(std::optional<Section> perms, r.OptSection("permissions"));
      if (perms) {
        JITBROKER_ASSIGN_OR_RETURN(std::vector<std::string> keys, perms->Keys());
        for (const std::string& k : keys) {
          JITBROKER_ASSIGN_OR_RETURN(std::string level, perms->String(k));
          if (level != "read" && level != "write" && level != "admin") {
            return std::unexpected(perms->Err(k, "must be read, write or admin"));
          }
          route.permissions[k] = level;
        }
      }
    }
    proxy.api_routes.push_back(std::move(route));
  }
  JITBROKER_ASSIGN_OR_RETURN(auto enabled, s->OptBool("enabled"));
  proxy.enabled = enabled.value_or(proxy.enabled);
  JITBROKER_ASSIGN_OR_RETURN(auto push, s->OptInt("max_push_bytes", 1024, int64_t{1} << 40));
  proxy.max_push_bytes = push.value_or(proxy.max_push_bytes);
  JITBROKER_ASSIGN_OR_RETURN(auto transfer, s->OptInt("max_transfer_seconds", 1, 86400));
  proxy.max_transfer_seconds = transfer.value_or(proxy.max_transfer_seconds);
  JITBROKER_ASSIGN_OR_RETURN(auto idle, s->OptInt("idle_timeout_seconds", 1, 3600));
  proxy.idle_timeout_seconds = idle.value_or(proxy.idle_timeout_seconds);
  JITBROKER_ASSIGN_OR_RETURN(auto concurrent, s->OptInt("max_concurrent_transfers", 1, 10000));
  if (concurrent) {
    proxy.max_concurrent_transfers = static_cast<int>(*concurrent);
  }
  JITBROKER_ASSIGN_OR_RETURN(auto refs, s->OptInt("max_refs_per_push", 1, 10000));
  proxy.max_refs_per_push = refs.value_or(proxy.max_refs_per_push);
  JITBROKER_ASSIGN_OR_RETURN(auto ttl, s->OptInt("read_token_ttl_seconds", 60, 3600));
  proxy.read_token_ttl_seconds = ttl.value_or(proxy.read_token_ttl_seconds);
  JITBROKER_ASSIGN_OR_RETURN(auto dflt, s->OptBool("default_branch_protected"));
  proxy.default_branch_protected = dflt.value_or(proxy.default_branch_protected);
  if (s->Has("protected_branches")) {
    JITBROKER_ASSIGN_OR_RETURN(std::vector<std::string> branches,
                               s->StringList("protected_branches"));
    for (const std::string& b : branches) {
      if (b.empty() || b.size() > 256 || !IsPrintable(b) || b.starts_with("refs/")) {
        return std::unexpected(
            s->Err("protected_branches",
                   "each entry must be a branch name or glob without refs/heads/ "
                   "(\"main\", \"release/*\")"));
      }
    }
    proxy.protected_branches = std::move(branches);
  }
  return OkStatus();
}

Result<std::optional<Section>> SequenceSection(Section& top, std::string_view key) {
  top.MarkKnown(key);
  if (!top.Has(key)) {
    return std::optional<Section>();
  }
  try {
    for (auto it = top.node().begin(); it != top.node().end(); ++it) {
      if (it->first.Scalar() != key) {
        continue;
      }
      if (it->second.IsNull()) {
        return std::optional<Section>();
      }
      if (!it->second.IsSequence()) {
        return std::unexpected(top.Err(key, "must be a list"));
      }
      return std::optional<Section>(Child(top, it->second, key));
    }
  } catch (...) {
  }
  return std::optional<Section>();
}

// Roles may only name issuers that are configured.
Status CheckRoleIssuers(Section& policy_section, const Policy& policy,
                        const std::vector<IssuerConfig>& issuers) {
  for (const auto& [name, role] : policy.roles) {
    for (const std::string& issuer : role.issuers) {
      bool found = std::any_of(issuers.begin(), issuers.end(),
                               [&](const IssuerConfig& c) { return c.name == issuer; });
      if (found) {
        continue;
      }
      // Rebuild the role's section only to point at the right line.
      Result<std::optional<Section>> roles = policy_section.OptSection("roles");
      if (roles && *roles) {
        for (auto it = (*roles)->node().begin(); it != (*roles)->node().end(); ++it) {
          if (it->first.Scalar() == name) {
            Section rs = Child(**roles, it->second, name);
            return std::unexpected(
                rs.Err("issuers", "unknown issuer " + Q(issuer) + " (not configured in issuers)"));
          }
        }
      }
      return std::unexpected(ConfigError(policy_section.file(), KeyLine(policy_section, "roles"),
                                         "policy.roles." + name + ".issuers",
                                         "unknown issuer " + Q(issuer)));
    }
  }
  return OkStatus();
}

}  // namespace

Result<std::shared_ptr<const Policy>> LoadPolicy(Section& section, PolicyNotes* notes) {
  JITBROKER_RETURN_IF_ERROR(CheckDuplicates(section.node(), section.file(), section.path(), 0));
  if (!section.node().IsMap()) {
    return std::unexpected(section.Err("", "must be a mapping"));
  }
  JITBROKER_RETURN_IF_ERROR(
      Expect(section, {"version", "default_tier", "tiers", "tools", "principals", "roles"}));
  auto policy = std::make_shared<Policy>();
  JITBROKER_ASSIGN_OR_RETURN(policy->version, section.String("version"));
  if (policy->version.size() > 128 || !IsPrintable(policy->version)) {
    return std::unexpected(section.Err("version", "must be 1 to 128 printable characters"));
  }
  JITBROKER_ASSIGN_OR_RETURN(std::optional<std::string> default_tier,
                             section.OptString("default_tier"));
  if (default_tier) {
    JITBROKER_ASSIGN_OR_RETURN(policy->default_tier,
                               TierValue(section, "default_tier", *default_tier));
  }
  // Roles first: tiers (approvers) and principals refer to them.
  JITBROKER_RETURN_IF_ERROR(LoadRoles(section, *policy));
  JITBROKER_RETURN_IF_ERROR(LoadTiers(section, *policy));
  JITBROKER_RETURN_IF_ERROR(LoadTools(section, *policy));
  JITBROKER_RETURN_IF_ERROR(LoadPrincipals(section, *policy, notes));
  return std::shared_ptr<const Policy>(std::move(policy));
}

Result<Config> LoadConfigText(std::string_view text, const std::string& file_name) {
  auto file = std::make_shared<const std::string>(file_name);
  YAML::Node root;
  try {
    root = YAML::Load(std::string(text));
  } catch (const YAML::Exception& e) {
    int line = e.mark.line >= 0 ? e.mark.line + 1 : 1;
    return std::unexpected(ConfigError(file_name, line, "", "invalid YAML: " + e.msg));
  } catch (...) {
    return std::unexpected(ConfigError(file_name, 1, "", "invalid YAML"));
  }
  if (!root.IsMap()) {
    return std::unexpected(
        ConfigError(file_name, MarkLine(root), "", "the configuration must be a mapping of keys"));
  }
  JITBROKER_RETURN_IF_ERROR(CheckDuplicates(root, file_name, "", 0));

  Section top(root, file, "");
  JITBROKER_RETURN_IF_ERROR(
      Expect(top, {"data_dir", "server", "store", "audit", "seal_key", "policy", "sessions", "log",
                   "issuers", "anomaly", "trust", "approvals", "limits", "proxy", "humans"}));
  Config config;
  const fs::path base = BaseDir(file_name);
  {
    std::error_code ec;
    fs::path abs = fs::absolute(fs::path(file_name), ec);
    config.file = (ec ? fs::path(file_name) : abs).lexically_normal().string();
  }

  JITBROKER_ASSIGN_OR_RETURN(std::optional<std::string> data_dir, top.OptString("data_dir"));
  if (data_dir && data_dir->empty()) {
    return std::unexpected(top.Err("data_dir", "must not be empty"));
  }
  config.data_dir = Resolve(base, data_dir.value_or("./data"));
  if (config.data_dir.size() > 1 && config.data_dir.back() == '/') {
    config.data_dir.pop_back();
  }

  JITBROKER_RETURN_IF_ERROR(LoadServer(top, base, config.server));
  JITBROKER_RETURN_IF_ERROR(LoadStore(top, base, config.data_dir, config.store));
  JITBROKER_RETURN_IF_ERROR(LoadAudit(top, base, config.data_dir, config.audit));

  JITBROKER_ASSIGN_OR_RETURN(std::optional<SecretValue> seal_ref, top.OptSecretRef("seal_key"));
  if (seal_ref) {
    Result<std::string> decoded = crypto::Base64Decode(seal_ref->Reveal());
    if (!decoded || decoded->size() != 32) {
      if (decoded) {
        SecureWipe(decoded->data(), decoded->size());
      }
      return std::unexpected(
          top.Err("seal_key", "must be standard base64 of exactly 32 random bytes"));
    }
    config.seal_key = SecretValue(std::move(*decoded));
  }
  if (config.store.postgres() != nullptr) {
    // Replicas open each other's sealed handles and approved requests, and
    // one verifier checks every replica's audit checkpoints: a key generated
    // per replica would break both.
    if (!config.seal_key) {
      return std::unexpected(top.Err(
          "seal_key", "is required with store.postgres: every replica must use the same key"));
    }
    if (!config.audit.signing_key) {
      return std::unexpected(top.Err("audit.signing_key",
                                     "is required with store.postgres: every replica must sign "
                                     "its audit checkpoints with the same key"));
    }
  }

  JITBROKER_RETURN_IF_ERROR(LoadSessions(top, config.sessions));
  JITBROKER_RETURN_IF_ERROR(LoadLog(top, base, config.log));
  JITBROKER_RETURN_IF_ERROR(LoadIssuers(top, config.issuers));
  JITBROKER_RETURN_IF_ERROR(LoadApprovals(top, config.approvals));
  JITBROKER_RETURN_IF_ERROR(LoadLimits(top, config.limits));
  JITBROKER_RETURN_IF_ERROR(LoadProxy(top, config.proxy));
  JITBROKER_RETURN_IF_ERROR(LoadHumans(top, config.humans));

  JITBROKER_ASSIGN_OR_RETURN(std::optional<Section> policy_section, top.OptSection("policy"));
  if (!policy_section) {
    return std::unexpected(top.Err("policy", "is required"));
  }
  if (!policy_section->node().IsMap()) {
    return std::unexpected(top.Err("policy", "must be a mapping"));
  }
  JITBROKER_ASSIGN_OR_RETURN(config.policy, LoadPolicy(*policy_section, &config.policy_notes));
  JITBROKER_RETURN_IF_ERROR(CheckRoleIssuers(*policy_section, *config.policy, config.issuers));
  JITBROKER_RETURN_IF_ERROR(CheckSlackUsers(top, config.approvals, *config.policy));

  JITBROKER_ASSIGN_OR_RETURN(config.anomaly, SequenceSection(top, "anomaly"));
  JITBROKER_ASSIGN_OR_RETURN(config.trust, SequenceSection(top, "trust"));
  JITBROKER_RETURN_IF_ERROR(top.CheckNoUnknownKeys());
  return config;
}

Result<Config> LoadConfigFile(const std::string& path) {
  auto text = ReadFileBounded(path, kMaxConfigFileBytes);
  if (!text) {
    return std::unexpected(InvalidArgument(
        "invalid_config", "cannot read the configuration file " + text.error().message));
  }
  return LoadConfigText(*text, path);
}

}  // namespace jitbroker::config
