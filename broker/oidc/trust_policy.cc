#include "broker/oidc/trust_policy.h"

#include <algorithm>
#include <cstdint>
#include <exception>
#include <functional>
#include <map>
#include <set>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <yaml-cpp/yaml.h>
#include <nlohmann/json.hpp>

#include "broker/common/text.h"
#include "broker/config/config.h"
#include "broker/net/url.h"
#include "jitbroker/issuer.h"
#include "jitbroker/policy.h"

namespace jitbroker::oidc {

namespace {

using nlohmann::json;

constexpr std::string_view kGitHubIssuer = "https://token.actions.githubusercontent.com";
constexpr size_t kMaxClaimTextBytes = 4096;
constexpr size_t kMaxFactBytes = 256;

// JOSE algorithms a trust policy may allow. Everything else (none, HS*, PS*,
// ES384, …) is refused at load.
constexpr std::string_view kAllowedAlgorithms[] = {"RS256", "ES256", "Ed25519", "EdDSA"};

// Claims that identify the tenant (owner or project); a policy must pin one
// of them exactly, or it trusts every repository the issuer serves.
constexpr std::string_view kGitHubTenantClaims[] = {"repository_owner_id", "repository_id",
                                                    "repository_owner", "repository"};
constexpr std::string_view kGitLabTenantClaims[] = {"namespace_id", "namespace_path", "project_id",
                                                    "project_path"};
// Tenant claims that are immutable ids; a tenant pinned only by the others
// (names and paths, which can be re-registered after a rename or deletion)
// is accepted with a warning.
constexpr std::string_view kGitHubTenantIdClaims[] = {"repository_owner_id", "repository_id"};
constexpr std::string_view kGitLabTenantIdClaims[] = {"namespace_id", "project_id"};
// Claims that pin what ran (branch, environment, workflow); without one, any
// branch anyone with push access creates can mint (docs/configuration.md "trust"). Only
// a rule whose every alternative is an exact value, or a glob with a literal
// prefix in each '/'- or ':'-separated segment ("refs/heads/release-*"),
// counts: "*", "refs/heads/*" or a regex pin nothing. event_name and
// base_ref are not here: a push or a pull request can come from any branch.
constexpr std::string_view kGitHubContextClaims[] = {"ref", "environment", "job_workflow_ref",
                                                     "workflow_ref", "sub"};
constexpr std::string_view kGitLabContextClaims[] = {
    "ref", "ref_path", "ref_protected", "environment", "sub", "ci_config_ref_uri"};
// Registered claims the verifier checks itself.
constexpr std::string_view kReservedClaims[] = {"iss", "aud", "exp", "nbf", "iat", "jti"};

std::string Q(std::string_view s) { return "\"" + std::string(s) + "\""; }

template <size_t N>
bool In(const std::string_view (&list)[N], std::string_view v) {
  return std::find(std::begin(list), std::end(list), v) != std::end(list);
}

bool IsNameChar(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' ||
         c == '.' || c == '-';
}

bool IsPolicyName(std::string_view s) {
  if (s.empty() || s.size() > 64 || s[0] == '.' || s[0] == '-' || s[0] == '_') {
    return false;
  }
  return std::all_of(s.begin(), s.end(), IsNameChar);
}

bool IsClaimName(std::string_view s) {
  return !s.empty() && s.size() <= 128 && std::all_of(s.begin(), s.end(), IsNameChar);
}

bool IsVisible(std::string_view s) {
  for (unsigned char c : s) {
    if (c < 0x21 || c == 0x7f) {
      return false;
    }
  }
  return true;
}

// Percent-escapes what would blur a key's ':'-separated structure.
std::string Escape(std::string_view s) {
  static constexpr char kHex[] = "0123456789ABCDEF";
  std::string out;
  out.reserve(s.size());
  for (unsigned char c : s) {
    if (c == '%' || c == ':' || c <= 0x20 || c >= 0x7f) {
      out += '%';
      out += kHex[c >> 4];
      out += kHex[c & 0xF];
    } else {
      out += static_cast<char>(c);
    }
  }
  return out;
}

int MarkLine(const YAML::Node& node) {
  try {
    const int line = node.Mark().line;
    return line >= 0 ? line + 1 : 0;
  } catch (...) {
    return 0;
  }
}

Error ConfigError(const std::string& file, int line, std::string_view path, std::string_view what) {
  return InvalidArgument("invalid_config", file + ":" + std::to_string(line > 0 ? line : 1) + ": " +
                                               std::string(path) + ": " + std::string(what));
}

// YAML (maps, sequences, scalars) as JSON with every scalar a string: the
// issuer-specific grant scope, which the grant's issuer reads (IssuerSpec).
Result<json> YamlToJson(const YAML::Node& node, const std::string& file, const std::string& path,
                        int depth) {
  if (depth > 16) {
    return std::unexpected(ConfigError(file, MarkLine(node), path, "nesting is too deep"));
  }
  try {
    if (node.IsMap()) {
      json out = json::object();
      for (auto it = node.begin(); it != node.end(); ++it) {
        const std::string key = it->first.Scalar();
        JITBROKER_ASSIGN_OR_RETURN(json v,
                                   YamlToJson(it->second, file, path + "." + key, depth + 1));
        out[key] = std::move(v);
      }
      return out;
    }
    if (node.IsSequence()) {
      json out = json::array();
      size_t i = 0;
      for (auto it = node.begin(); it != node.end(); ++it, ++i) {
        JITBROKER_ASSIGN_OR_RETURN(
            json v, YamlToJson(*it, file, path + "[" + std::to_string(i) + "]", depth + 1));
        out.push_back(std::move(v));
      }
      return out;
    }
    if (node.IsScalar()) {
      return json(node.Scalar());
    }
  } catch (const std::exception&) {
  }
  return std::unexpected(
      ConfigError(file, MarkLine(node), path, "must be a string, list or mapping"));
}

// The child node of a mapping (nullopt when absent) without yaml-cpp's
// inserting operator[].
std::optional<YAML::Node> Child(const YAML::Node& map, std::string_view key) {
  try {
    if (!map.IsMap()) {
      return std::nullopt;
    }
    for (auto it = map.begin(); it != map.end(); ++it) {
      if (it->first.IsScalar() && it->first.Scalar() == key) {
        return it->second;
      }
    }
  } catch (...) {
  }
  return std::nullopt;
}

bool IsAbsent(const YAML::Node& n) { return !n.IsDefined() || n.IsNull(); }

bool AllExact(const ClaimRule& rule) {
  return !rule.any_of.empty() &&
         std::all_of(rule.any_of.begin(), rule.any_of.end(),
                     [](const Matcher& m) { return m.kind() == Matcher::Kind::kExact; });
}

// A glob segment (between '/' and ':') with a literal before any '*'.
bool GlobPinsEverySegment(std::string_view glob) {
  size_t start = 0;
  while (start <= glob.size()) {
    size_t end = glob.find_first_of("/:", start);
    if (end == std::string_view::npos) {
      end = glob.size();
    }
    const std::string_view seg = glob.substr(start, end - start);
    if (seg.empty() || seg.front() == '*') {
      return false;
    }
    start = end + 1;
  }
  return true;
}

// Whether a rule pins a context claim: every alternative exact, or a glob
// with a literal prefix in each segment. Regular expressions never count
// (nothing checks what they admit).
bool PinsContext(const ClaimRule& rule) {
  return !rule.any_of.empty() &&
         std::all_of(rule.any_of.begin(), rule.any_of.end(), [](const Matcher& m) {
           return m.kind() == Matcher::Kind::kExact ||
                  (m.kind() == Matcher::Kind::kGlob && GlobPinsEverySegment(m.pattern()));
         });
}

const ClaimRule* FindRule(const TrustPolicy& p, std::string_view claim) {
  for (const ClaimRule& r : p.claims) {
    if (r.claim == claim) {
      return &r;
    }
  }
  return nullptr;
}

// ---------------------------------------------------------------------------
// Parsing one entry

Result<std::vector<Matcher>> ParsePatterns(const YAML::Node& value, const std::string& file,
                                           const std::string& path) {
  std::vector<std::string> patterns;
  try {
    if (IsAbsent(value)) {
      return std::unexpected(ConfigError(file, MarkLine(value), path, "must not be empty"));
    }
    if (value.IsScalar()) {
      patterns.push_back(value.Scalar());
    } else if (value.IsSequence()) {
      size_t i = 0;
      for (auto it = value.begin(); it != value.end(); ++it, ++i) {
        if (!it->IsScalar()) {
          return std::unexpected(ConfigError(file, MarkLine(*it),
                                             path + "[" + std::to_string(i) + "]",
                                             "must be a string pattern"));
        }
        patterns.push_back(it->Scalar());
      }
      if (patterns.empty()) {
        return std::unexpected(
            ConfigError(file, MarkLine(value), path, "must list at least one pattern"));
      }
      if (patterns.size() > kMaxClaimAlternatives) {
        return std::unexpected(ConfigError(
            file, MarkLine(value), path,
            "must list at most " + std::to_string(kMaxClaimAlternatives) + " patterns"));
      }
    } else {
      return std::unexpected(
          ConfigError(file, MarkLine(value), path, "must be a pattern or a list of patterns"));
    }
  } catch (const std::exception&) {
    return std::unexpected(ConfigError(file, MarkLine(value), path, "malformed value"));
  }
  std::vector<Matcher> out;
  for (const std::string& p : patterns) {
    if (p.empty()) {
      return std::unexpected(ConfigError(file, MarkLine(value), path, "pattern must not be empty"));
    }
    if (text::HasControlChar(p) || p.size() > kMaxClaimTextBytes) {
      return std::unexpected(ConfigError(file, MarkLine(value), path,
                                         "pattern must be printable and at most 4096 bytes"));
    }
    Result<Matcher> m = Matcher::Compile(p);
    if (!m) {
      return std::unexpected(ConfigError(file, MarkLine(value), path, m.error().message));
    }
    out.push_back(std::move(*m));
  }
  return out;
}

Status ParseClaims(config::Section& entry, TrustPolicy& p) {
  entry.MarkKnown("claims");
  const std::optional<YAML::Node> node = Child(entry.node(), "claims");
  const std::string path = entry.path() + ".claims";
  if (!node || IsAbsent(*node)) {
    return std::unexpected(entry.Err("claims", "is required: a trust policy must pin claims"));
  }
  if (!node->IsMap()) {
    return std::unexpected(entry.Err("claims", "must be a mapping of claim name to pattern"));
  }
  try {
    for (auto it = node->begin(); it != node->end(); ++it) {
      const std::string claim = it->first.Scalar();
      const std::string claim_path = path + "." + claim;
      if (!IsClaimName(claim)) {
        return std::unexpected(ConfigError(entry.file(), MarkLine(it->first), claim_path,
                                           "claim names must match [A-Za-z0-9_.-]+"));
      }
      if (In(kReservedClaims, claim)) {
        return std::unexpected(ConfigError(entry.file(), MarkLine(it->first), claim_path,
                                           "is checked by the verifier (issuer, audience, time and "
                                           "replay settings), not by claims"));
      }
      JITBROKER_ASSIGN_OR_RETURN(std::vector<Matcher> matchers,
                                 ParsePatterns(it->second, entry.file(), claim_path));
      p.claims.push_back(ClaimRule{claim, std::move(matchers)});
    }
  } catch (const std::exception&) {
    return std::unexpected(entry.Err("claims", "malformed mapping"));
  }
  if (p.claims.empty()) {
    return std::unexpected(entry.Err("claims", "must pin at least one claim"));
  }
  if (p.claims.size() > kMaxClaimRules) {
    return std::unexpected(
        entry.Err("claims", "must hold at most " + std::to_string(kMaxClaimRules) + " claims"));
  }
  return OkStatus();
}

// The keys of `grant:` that are the trust policy's own; every other key is
// shorthand for a key of the issuer-specific `scope` (`permissions: …` is
// `scope: {permissions: …}`), which the issuer checks
// (IssuerSpec::CheckTrustGrant, run by CheckTrustGrants).
constexpr std::string_view kGrantKeys[] = {"issuer",      "resource", "tool", "operation",
                                           "ttl_seconds", "max_tier", "scope"};

// Moves a shorthand grant key into the issuer-specific scope.
Status MergeShorthand(config::Section& g, const std::string& key, json& scope) {
  g.MarkKnown(key);
  const std::optional<YAML::Node> node = Child(g.node(), key);
  if (!node || IsAbsent(*node)) {
    return OkStatus();
  }
  if (scope.contains(key)) {
    return std::unexpected(g.Err(key, "is given both here and in grant.scope"));
  }
  JITBROKER_ASSIGN_OR_RETURN(json v, YamlToJson(*node, g.file(), g.path() + "." + key, 0));
  scope[key] = std::move(v);
  return OkStatus();
}

Status ParseGrant(config::Section& entry, const TrustContext& ctx, TrustPolicy& p) {
  JITBROKER_ASSIGN_OR_RETURN(std::optional<config::Section> g, entry.OptSection("grant"));
  if (!g || IsAbsent(g->node())) {
    return std::unexpected(entry.Err("grant", "is required: what the trusted identity may mint"));
  }
  TrustGrant& grant = p.grant;
  JITBROKER_ASSIGN_OR_RETURN(grant.issuer, g->String("issuer"));
  if (std::find(ctx.issuer_names.begin(), ctx.issuer_names.end(), grant.issuer) ==
      ctx.issuer_names.end()) {
    return std::unexpected(
        g->Err("issuer", "unknown issuer " + Q(grant.issuer) + " (not configured under issuers:)"));
  }
  JITBROKER_ASSIGN_OR_RETURN(grant.resource, g->String("resource"));
  if (!IsVisible(grant.resource) || grant.resource.size() > 1024 ||
      grant.resource.find("://") == std::string::npos ||
      grant.resource.find('*') != std::string::npos) {
    return std::unexpected(
        g->Err("resource",
               "must be one resource URI such as jwt://AUDIENCE or github://ORG/REPO "
               "(no spaces, no wildcards)"));
  }
  JITBROKER_ASSIGN_OR_RETURN(std::optional<std::string> tool, g->OptString("tool"));
  if (tool) {
    if (tool->empty() || tool->size() > 256 || !IsVisible(*tool)) {
      return std::unexpected(g->Err("tool", "must be 1 to 256 characters without spaces"));
    }
    grant.tool = *tool;
  }
  JITBROKER_ASSIGN_OR_RETURN(std::optional<std::string> operation, g->OptString("operation"));
  if (operation) {
    if (operation->empty() || operation->size() > 128 || !IsVisible(*operation)) {
      return std::unexpected(g->Err("operation", "must be 1 to 128 characters without spaces"));
    }
    grant.operation = *operation;
  }
  JITBROKER_ASSIGN_OR_RETURN(grant.ttl_seconds, g->OptInt("ttl_seconds", 1, 86400));
  JITBROKER_ASSIGN_OR_RETURN(std::optional<std::string> max_tier, g->OptString("max_tier"));
  if (max_tier) {
    std::optional<Tier> t = ParseTier(*max_tier);
    if (!t) {
      return std::unexpected(
          g->Err("max_tier", "unknown tier " + Q(*max_tier) +
                                 " (one of read, write, pr, merge_deploy, secret, destructive)"));
    }
    grant.max_tier = *t;
  }
  g->MarkKnown("scope");
  if (std::optional<YAML::Node> scope = Child(g->node(), "scope"); scope && !IsAbsent(*scope)) {
    if (!scope->IsMap()) {
      return std::unexpected(g->Err("scope", "must be a mapping (issuer-specific)"));
    }
    JITBROKER_ASSIGN_OR_RETURN(grant.scope, YamlToJson(*scope, g->file(), g->path() + ".scope", 0));
  }
  std::vector<std::string> shorthand;
  try {
    for (auto it = g->node().begin(); it != g->node().end(); ++it) {
      if (it->first.IsScalar() && !In(kGrantKeys, it->first.Scalar())) {
        shorthand.push_back(it->first.Scalar());
      }
    }
  } catch (const std::exception&) {
    return std::unexpected(g->Err("", "malformed mapping"));
  }
  for (const std::string& key : shorthand) {
    JITBROKER_RETURN_IF_ERROR(MergeShorthand(*g, key, grant.scope));
  }
  return g->CheckNoUnknownKeys();
}

Status ParseAlgorithms(config::Section& entry, TrustPolicy& p) {
  const bool given = entry.Has("algorithms");
  JITBROKER_ASSIGN_OR_RETURN(std::vector<std::string> algs, entry.StringList("algorithms"));
  if (!given) {
    return OkStatus();
  }
  if (algs.empty()) {
    return std::unexpected(entry.Err("algorithms", "must list at least one algorithm"));
  }
  std::set<std::string> seen;
  for (const std::string& a : algs) {
    if (text::AsciiLower(a) == "none" || a.starts_with("HS") || a.starts_with("hs")) {
      return std::unexpected(entry.Err(
          "algorithms", Q(a) + " is never accepted: unsigned and HMAC tokens cannot come from "
                               "an asymmetric OIDC issuer"));
    }
    if (!In(kAllowedAlgorithms, a)) {
      return std::unexpected(entry.Err(
          "algorithms", "unsupported algorithm " + Q(a) + " (RS256, ES256, Ed25519, EdDSA)"));
    }
    if (!seen.insert(a).second) {
      return std::unexpected(entry.Err("algorithms", "lists " + Q(a) + " twice"));
    }
  }
  p.algorithms = std::move(algs);
  return OkStatus();
}

std::string JoinNames(const std::vector<std::string_view>& names) {
  std::string list;
  for (std::string_view c : names) {
    list += (list.empty() ? "" : ", ") + std::string(c);
  }
  return list;
}

// The tenant and context lints of docs/configuration.md "trust". `provider_given`: the
// entry set `provider:` (required for an issuer DetectProvider does not know).
Status LintClaims(config::Section& entry, TrustPolicy& p, bool provider_given,
                  std::vector<std::string>& warnings) {
  if (!provider_given && DetectProvider(p.issuer) == Provider::kGeneric) {
    // An issuer that is not recognised could be a self-managed GitLab or a
    // GitHub Enterprise Server under another path: guessing "generic" would
    // skip the tenant lint that issuer needs.
    return std::unexpected(entry.Err(
        "provider", "is required for issuer " + Q(p.issuer) +
                        ", which is not a recognised CI issuer: set provider: github (GitHub "
                        "Enterprise Server), gitlab (self-managed GitLab) or generic"));
  }
  std::vector<std::string_view> tenant;
  std::vector<std::string_view> tenant_ids;
  std::vector<std::string_view> context;
  switch (p.provider) {
    case Provider::kGitHubActions:
      tenant.assign(std::begin(kGitHubTenantClaims), std::end(kGitHubTenantClaims));
      tenant_ids.assign(std::begin(kGitHubTenantIdClaims), std::end(kGitHubTenantIdClaims));
      context.assign(std::begin(kGitHubContextClaims), std::end(kGitHubContextClaims));
      break;
    case Provider::kGitLab:
      tenant.assign(std::begin(kGitLabTenantClaims), std::end(kGitLabTenantClaims));
      tenant_ids.assign(std::begin(kGitLabTenantIdClaims), std::end(kGitLabTenantIdClaims));
      context.assign(std::begin(kGitLabContextClaims), std::end(kGitLabContextClaims));
      break;
    case Provider::kGeneric:
      break;
  }
  if (p.provider == Provider::kGeneric) {
    // Nothing is known about this issuer's claims, so which of them names a
    // tenant cannot be checked: the subject itself must be pinned exactly,
    // and one more claim as well.
    const ClaimRule* sub = FindRule(p, "sub");
    const bool other = std::any_of(p.claims.begin(), p.claims.end(), [](const ClaimRule& r) {
      return r.claim != "sub" && AllExact(r);
    });
    if (sub == nullptr || !AllExact(*sub) || !other) {
      return std::unexpected(
          entry.Err("claims",
                    "a provider: generic policy must pin sub to exact values and at least one "
                    "more claim to an exact value (e.g. a project or repository id): the tenant "
                    "claims of an unknown issuer cannot be checked"));
    }
    return OkStatus();
  }
  bool pinned = false;
  bool pinned_by_id = false;
  for (std::string_view claim : tenant) {
    const ClaimRule* r = FindRule(p, claim);
    const bool exact = r != nullptr && AllExact(*r);
    pinned = pinned || exact;
    pinned_by_id = pinned_by_id || (exact && std::find(tenant_ids.begin(), tenant_ids.end(),
                                                       claim) != tenant_ids.end());
  }
  if (!pinned) {
    return std::unexpected(entry.Err(
        "claims", "must pin one of " + JoinNames(tenant) + " to an exact value: every " +
                      std::string(ProviderName(p.provider)) +
                      " tenant shares this issuer, so without it the policy trusts all of them "
                      "(prefer the numeric *_id claims, which survive renames)"));
  }
  if (!pinned_by_id) {
    warnings.push_back(p.location + ": claims pin the tenant only by name (pin " +
                       JoinNames(tenant_ids) +
                       " too): a renamed or deleted owner or project name can be registered by "
                       "someone else, whose tokens then match");
  }
  bool context_pinned = false;
  for (std::string_view claim : context) {
    const ClaimRule* r = FindRule(p, claim);
    context_pinned = context_pinned || (r != nullptr && PinsContext(*r));
  }
  if (!context_pinned) {
    warnings.push_back(p.location +
                       ": claims pin no ref, environment or workflow to an exact value (a "
                       "wildcard or regex does not count): any branch of the trusted "
                       "repositories (anyone with push access) can mint");
  }
  return OkStatus();
}

// Whether `audience` is a URL on the issuer's own host: GitHub's default
// audience is https://HOST/OWNER (github.com; the GHES host; SUBDOMAIN.ghe.com
// for token.actions.SUBDOMAIN.ghe.com), which every consumer of the owner's
// tokens shares.
bool AudienceOnIssuerHost(std::string_view audience, std::string_view issuer);

Result<TrustPolicy> ParseEntry(config::Section& entry, size_t index, const TrustContext& ctx,
                               std::vector<std::string>& warnings) {
  TrustPolicy p;
  p.location =
      entry.file() + ":" + std::to_string(entry.line()) + ": trust[" + std::to_string(index) + "]";
  JITBROKER_ASSIGN_OR_RETURN(p.name, entry.String("name"));
  if (!IsPolicyName(p.name)) {
    return std::unexpected(
        entry.Err("name", "must match [A-Za-z0-9][A-Za-z0-9_.-]* (at most 64 characters)"));
  }
  JITBROKER_ASSIGN_OR_RETURN(p.issuer, entry.String("issuer"));
  JITBROKER_ASSIGN_OR_RETURN(std::optional<bool> allow_http, entry.OptBool("allow_http"));
  p.allow_http = allow_http.value_or(false);
  if (p.allow_http && !p.issuer.starts_with("http://")) {
    return std::unexpected(
        entry.Err("allow_http", "is only for an http:// issuer on a loopback address"));
  }
  if (std::string why = CheckFetchUrl(p.issuer, p.allow_http); !why.empty()) {
    return std::unexpected(entry.Err("issuer", why));
  }
  JITBROKER_ASSIGN_OR_RETURN(p.audience, entry.String("audience"));
  if (!IsVisible(p.audience) || p.audience.size() > 512) {
    return std::unexpected(entry.Err("audience", "must be 1 to 512 characters without spaces"));
  }
  if (AudienceOnIssuerHost(p.audience, p.issuer)) {
    return std::unexpected(
        entry.Err("audience",
                  "must be specific to this broker, not a URL on the issuer's host such as "
                  "GitHub's default owner-URL audience (every consumer of the owner's tokens "
                  "shares it)"));
  }
  JITBROKER_ASSIGN_OR_RETURN(std::optional<std::string> provider, entry.OptString("provider"));
  p.provider = DetectProvider(p.issuer);
  if (provider) {
    if (*provider == "github" || *provider == "github_actions") {
      p.provider = Provider::kGitHubActions;
    } else if (*provider == "gitlab") {
      p.provider = Provider::kGitLab;
    } else if (*provider == "generic") {
      if (p.provider != Provider::kGeneric) {
        return std::unexpected(entry.Err(
            "provider", "cannot be generic for a known CI issuer (its tenant lint stays on)"));
      }
      p.provider = Provider::kGeneric;
    } else {
      return std::unexpected(entry.Err(
          "provider", "unknown provider " + Q(*provider) + " (github, gitlab or generic)"));
    }
  }
  JITBROKER_RETURN_IF_ERROR(ParseAlgorithms(entry, p));
  JITBROKER_ASSIGN_OR_RETURN(std::optional<int64_t> age,
                             entry.OptInt("max_token_age_seconds", 1, kMaxTokenAgeSeconds));
  p.max_token_age_seconds = age.value_or(p.max_token_age_seconds);
  JITBROKER_ASSIGN_OR_RETURN(std::optional<int64_t> leeway,
                             entry.OptInt("leeway_seconds", 0, kMaxLeewaySeconds));
  p.leeway_seconds = leeway.value_or(p.leeway_seconds);
  JITBROKER_ASSIGN_OR_RETURN(std::optional<bool> replay, entry.OptBool("replay_protection"));
  p.replay_protection = replay.value_or(true);
  const int64_t max_session = std::max<int64_t>(60, ctx.max_session_ttl_seconds);
  JITBROKER_ASSIGN_OR_RETURN(std::optional<int64_t> session_ttl,
                             entry.OptInt("session_ttl_seconds", 60, max_session));
  p.session_ttl_seconds = session_ttl.value_or(std::min<int64_t>(3600, max_session));
  JITBROKER_ASSIGN_OR_RETURN(std::optional<std::string> description,
                             entry.OptString("description"));
  (void)description;  // documentation only
  JITBROKER_RETURN_IF_ERROR(ParseClaims(entry, p));
  JITBROKER_RETURN_IF_ERROR(ParseGrant(entry, ctx, p));
  JITBROKER_RETURN_IF_ERROR(entry.CheckNoUnknownKeys());
  JITBROKER_RETURN_IF_ERROR(LintClaims(entry, p, provider.has_value(), warnings));
  return p;
}

// --- URLs ----------------------------------------------------------------------

bool AudienceOnIssuerHost(std::string_view audience, std::string_view issuer) {
  const std::vector<std::string> hosts = net::LenientHttpHosts(audience);
  const std::vector<std::string> issuer_hosts = net::LenientHttpHosts(issuer);
  // The issuer passed CheckFetchUrl: both readings give its one host.
  const std::string issuer_host = issuer_hosts.empty() ? std::string() : issuer_hosts.front();
  // GHE.com data residency: issuer token.actions.SUBDOMAIN.ghe.com, default
  // audience https://SUBDOMAIN.ghe.com/OWNER.
  constexpr std::string_view kActionsPrefix = "token.actions.";
  for (const std::string& host : hosts) {
    if (host == "github.com" || (!issuer_host.empty() && host == issuer_host) ||
        (issuer_host.starts_with(kActionsPrefix) &&
         host == std::string_view(issuer_host).substr(kActionsPrefix.size()))) {
      return true;
    }
  }
  return false;
}

}  // namespace

// ---------------------------------------------------------------------------
// Public API

std::string_view ProviderName(Provider p) {
  switch (p) {
    case Provider::kGitHubActions:
      return "github_actions";
    case Provider::kGitLab:
      return "gitlab";
    case Provider::kGeneric:
      return "generic";
  }
  return "generic";
}

Provider DetectProvider(std::string_view issuer_url) {
  if (issuer_url == kGitHubIssuer || issuer_url.starts_with(std::string(kGitHubIssuer) + "/")) {
    return Provider::kGitHubActions;
  }
  // An issuer that CheckFetchUrl refuses is never used, whatever it names.
  Result<net::Url> u = net::ParseUrl(issuer_url, net::UrlPolicy::OidcEndpoint(true));
  if (!u) {
    return Provider::kGeneric;
  }
  const std::string& host = u->host;
  // GHEC data residency (token.actions.SUBDOMAIN.ghe.com) and GHES
  // (https://HOSTNAME/_services/token).
  if ((host.starts_with("token.actions.") && host.ends_with(".ghe.com")) ||
      u->path == "/_services/token") {
    return Provider::kGitHubActions;
  }
  if (host == "gitlab.com") {
    return Provider::kGitLab;
  }
  return Provider::kGeneric;
}

bool TrustPolicy::AllowsAlgorithm(std::string_view alg) const {
  return std::find(algorithms.begin(), algorithms.end(), alg) != algorithms.end();
}

const TrustPolicy* TrustSet::Find(std::string_view name) const {
  for (const TrustPolicy& p : policies) {
    if (p.name == name) {
      return &p;
    }
  }
  return nullptr;
}

bool TrustSet::TrustsIssuer(std::string_view iss) const {
  return std::any_of(policies.begin(), policies.end(),
                     [&](const TrustPolicy& p) { return p.issuer == iss; });
}

Result<std::shared_ptr<const TrustSet>> ParseTrustPolicies(config::Section* trust,
                                                           const TrustContext& ctx) {
  auto set = std::make_shared<TrustSet>();
  if (trust == nullptr) {
    return std::shared_ptr<const TrustSet>(std::move(set));
  }
  auto file = std::make_shared<const std::string>(trust->file());
  std::vector<config::Section> entries;
  try {
    const YAML::Node& node = trust->node();
    if (IsAbsent(node)) {
      return std::shared_ptr<const TrustSet>(std::move(set));
    }
    if (!node.IsSequence()) {
      return std::unexpected(trust->Err("", "must be a list of trust policies"));
    }
    if (node.size() > kMaxTrustPolicies) {
      return std::unexpected(trust->Err(
          "", "must hold at most " + std::to_string(kMaxTrustPolicies) + " trust policies"));
    }
    size_t i = 0;
    for (auto it = node.begin(); it != node.end(); ++it, ++i) {
      entries.emplace_back(*it, file, trust->path() + "[" + std::to_string(i) + "]");
      if (!it->IsMap()) {
        return std::unexpected(entries.back().Err("", "must be a mapping"));
      }
    }
  } catch (const std::exception&) {
    return std::unexpected(trust->Err("", "malformed list"));
  }
  std::map<std::string, bool> issuer_http;  // issuer -> allow_http
  for (size_t i = 0; i < entries.size(); ++i) {
    JITBROKER_ASSIGN_OR_RETURN(TrustPolicy p, ParseEntry(entries[i], i, ctx, set->warnings));
    if (set->Find(p.name) != nullptr) {
      return std::unexpected(entries[i].Err("name", "duplicate trust policy name " + Q(p.name)));
    }
    auto [it, inserted] = issuer_http.emplace(p.issuer, p.allow_http);
    if (!inserted && it->second != p.allow_http) {
      return std::unexpected(entries[i].Err(
          "allow_http", "must agree across the trust policies of issuer " + Q(p.issuer)));
    }
    set->policies.push_back(std::move(p));
  }
  return std::shared_ptr<const TrustSet>(std::move(set));
}

Result<std::shared_ptr<const TrustSet>> ParseTrustPoliciesText(std::string_view text,
                                                               const std::string& file_name,
                                                               const TrustContext& ctx) {
  YAML::Node node;
  try {
    node = YAML::Load(std::string(text));
  } catch (const YAML::Exception& e) {
    const int line = e.mark.line >= 0 ? e.mark.line + 1 : 1;
    return std::unexpected(InvalidArgument(
        "invalid_config",
        file_name + ":" + std::to_string(line) + ": trust: invalid YAML: " + e.msg));
  } catch (const std::exception&) {
    return std::unexpected(
        InvalidArgument("invalid_config", file_name + ":1: trust: invalid YAML"));
  }
  config::Section section(node, std::make_shared<const std::string>(file_name), "trust");
  return ParseTrustPolicies(&section, ctx);
}

std::optional<std::string> ClaimText(const json& claims, std::string_view name) {
  if (!claims.is_object()) {
    return std::nullopt;
  }
  auto it = claims.find(std::string(name));
  if (it == claims.end()) {
    return std::nullopt;
  }
  if (it->is_string()) {
    return it->get<std::string>();
  }
  if (it->is_boolean()) {
    return std::string(it->get<bool>() ? "true" : "false");
  }
  if (it->is_number_integer()) {
    return it->is_number_unsigned() ? std::to_string(it->get<uint64_t>())
                                    : std::to_string(it->get<int64_t>());
  }
  return std::nullopt;
}

std::vector<std::string> SubjectForms(const json& claims) {
  std::vector<std::string> forms;
  std::optional<std::string> sub;
  if (claims.is_object()) {
    if (auto it = claims.find("sub"); it != claims.end() && it->is_string()) {
      sub = it->get<std::string>();
    }
  }
  if (!sub) {
    return forms;
  }
  forms.push_back(*sub);
  // GitHub Actions: "repo:<repo segment><rest>", where the repo segment is
  // OWNER/REPO or OWNER@OWNER_ID/REPO@REPO_ID and ends at the first ':'
  // (names and ids never contain one; values after it are %3A-escaped).
  constexpr std::string_view kRepo = "repo:";
  if (!sub->starts_with(kRepo)) {
    return forms;
  }
  const std::optional<std::string> repository = ClaimText(claims, "repository");
  const std::optional<std::string> owner = ClaimText(claims, "repository_owner");
  const std::optional<std::string> owner_id = ClaimText(claims, "repository_owner_id");
  const std::optional<std::string> repo_id = ClaimText(claims, "repository_id");
  if (!repository || !owner || !owner_id || !repo_id) {
    return forms;
  }
  const size_t slash = repository->find('/');
  if (slash == std::string::npos || repository->substr(0, slash) != *owner ||
      repository->find(':') != std::string::npos) {
    return forms;
  }
  const std::string repo_name = repository->substr(slash + 1);
  const size_t seg_end = sub->find(':', kRepo.size());
  const std::string segment = sub->substr(
      kRepo.size(), seg_end == std::string::npos ? std::string::npos : seg_end - kRepo.size());
  const std::string rest = seg_end == std::string::npos ? std::string() : sub->substr(seg_end);
  const std::string name_form = *repository;
  const std::string id_form = *owner + "@" + *owner_id + "/" + repo_name + "@" + *repo_id;
  // One direction only: a name-form sub whose repository part agrees with the
  // signed repository claims also gets its immutable form (the ids are signed
  // claims of the same token, so a policy pinned by ids is not weakened). An
  // id-form sub is matched as it is and never gets a name form: a policy that
  // pins names must not be satisfied through a repository whose owner opted
  // into immutable subjects, and names are what can be re-registered.
  if (segment != name_form) {
    return forms;
  }
  const std::string derived = std::string(kRepo) + id_form + rest;
  if (derived != *sub) {
    forms.push_back(derived);
  }
  return forms;
}

Status CheckClaims(const TrustPolicy& policy, const json& claims) {
  for (const ClaimRule& rule : policy.claims) {
    std::vector<std::string> values;
    if (rule.claim == "sub") {
      values = SubjectForms(claims);
    } else if (std::optional<std::string> v = ClaimText(claims, rule.claim)) {
      values.push_back(std::move(*v));
    }
    // Which claim failed stays in `detail` (the broker's log): the client
    // learns that its claims do not match, not what the policy pins.
    if (values.empty()) {
      Error e = PermissionDenied("claims_mismatch",
                                 "the subject_token's claims do not match the trust policy");
      e.detail = "the token has no usable claim " + Q(rule.claim) + " (trust policy " +
                 Q(policy.name) + " requires it)";
      return std::unexpected(e);
    }
    bool matched = false;
    for (const std::string& v : values) {
      if (v.size() > kMaxClaimTextBytes || text::HasControlChar(v)) {
        continue;
      }
      for (const Matcher& m : rule.any_of) {
        if (m.Matches(v)) {
          matched = true;
          break;
        }
      }
      if (matched) {
        break;
      }
    }
    if (!matched) {
      Error e = PermissionDenied("claims_mismatch",
                                 "the subject_token's claims do not match the trust policy");
      e.detail = "claim " + Q(rule.claim) + " does not match trust policy " + Q(policy.name);
      return std::unexpected(e);
    }
  }
  return OkStatus();
}

Result<std::vector<std::string>> ParseScopeTokens(std::string_view requested) {
  // RFC 6749 §3.3: scope = scope-token *( SP scope-token ), NQCHAR tokens.
  std::vector<std::string> tokens;
  std::string_view rest = requested;
  if (rest.empty()) {
    return std::unexpected(InvalidArgument("invalid_scope", "scope must not be empty"));
  }
  while (true) {
    const size_t sp = rest.find(' ');
    std::string_view tok = rest.substr(0, sp);
    if (tok.empty() || tok.size() > kMaxScopeTokenBytes) {
      return std::unexpected(InvalidArgument(
          "invalid_scope", "scope must be space-separated tokens of 1 to 256 characters"));
    }
    for (unsigned char c : tok) {
      if (c < 0x21 || c == 0x22 || c == 0x5c || c > 0x7e) {
        return std::unexpected(InvalidArgument(
            "invalid_scope", "scope tokens must be printable ASCII without quotes"));
      }
    }
    if (std::find(tokens.begin(), tokens.end(), tok) == tokens.end()) {
      tokens.emplace_back(tok);
    }
    if (tokens.size() > kMaxScopeTokens) {
      return std::unexpected(InvalidArgument("invalid_scope", "scope has too many tokens"));
    }
    if (sp == std::string_view::npos) {
      break;
    }
    rest = rest.substr(sp + 1);
  }
  return tokens;
}

GrantRequest GrantRequestOf(const TrustGrant& grant) {
  GrantRequest req;
  req.tool = grant.tool;
  req.operation = grant.operation;
  req.resource = grant.resource;
  req.issuer = grant.issuer;
  req.scope = grant.scope;
  req.ttl_seconds = grant.ttl_seconds;
  return req;
}

Result<NarrowedGrant> NarrowScope(const TrustGrant& grant,
                                  std::optional<std::string_view> requested,
                                  const IssuerSpec& issuer) {
  std::optional<std::vector<std::string>> tokens;
  if (requested) {
    JITBROKER_ASSIGN_OR_RETURN(tokens, ParseScopeTokens(*requested));
  }
  auto narrowed = issuer.NarrowScope(GrantRequestOf(grant), tokens);
  if (!narrowed) {
    // Only "not granted" goes back to the client as such; anything else the
    // issuer says about a grant it accepted at load is the broker's problem.
    if (narrowed.error().code == ErrorCode::kPermissionDenied) {
      return std::unexpected(narrowed.error());
    }
    return std::unexpected(
        Internal("trust policy grant could not be narrowed", narrowed.error().ToString()));
  }
  NarrowedGrant out;
  out.scope = std::move(narrowed->scope);
  out.scope_text = std::move(narrowed->scope_text);
  return out;
}

Status CheckTrustGrants(const TrustSet& trust, const Policy& policy,
                        const std::function<const IssuerSpec*(std::string_view)>& issuers) {
  for (const TrustPolicy& p : trust.policies) {
    auto fail = [&](const std::string& what) {
      return std::unexpected(InvalidArgument("invalid_config", p.location + ".grant: " + what));
    };
    const IssuerSpec* issuer = issuers ? issuers(p.grant.issuer) : nullptr;
    if (issuer == nullptr) {
      return fail("issuer " + Q(p.grant.issuer) + " is not configured");
    }
    const GrantRequest req = GrantRequestOf(p.grant);
    auto invalid = [&](const Error& e) {
      std::string what = "not a valid grant for issuer " + Q(p.grant.issuer) + ": " + e.message;
      if (e.Reason() == "unknown_field") {
        what +=
            " (grant keys other than issuer, resource, tool, operation, ttl_seconds, "
            "max_tier and scope belong to the issuer's scope)";
      }
      return fail(what);
    };
    if (Status st = issuer->CheckTrustGrant(req); !st) {
      return invalid(st.error());
    }
    auto implied = issuer->ImpliedTier(req);
    if (!implied) {
      return invalid(implied.error());
    }
    auto items = issuer->ScopeItems(req);
    if (!items) {
      return invalid(items.error());
    }
    std::string rule;
    Tier tier = ClassifyTier(req, *items, policy, &rule);
    if (static_cast<int>(*implied) > static_cast<int>(tier)) {
      tier = *implied;
      rule = "issuer:" + p.grant.issuer;
    }
    if (static_cast<int>(tier) > static_cast<int>(p.grant.max_tier)) {
      return fail("its tier " + Q(TierName(tier)) + " (classified by " + rule +
                  ") exceeds max_tier " + Q(TierName(p.grant.max_tier)) +
                  "; raise grant.max_tier or grant less");
    }
    const Control control = policy.ForTier(tier).control;
    if (control == Control::kApproval || control == Control::kDeny) {
      return fail("its tier " + Q(TierName(tier)) + " is " + std::string(ControlName(control)) +
                  " in policy.tiers; a CI exchange cannot wait for a human");
    }
  }
  return OkStatus();
}

std::string CiRunKey(const TrustPolicy& policy, const json& claims) {
  auto text = [&](std::string_view name) { return ClaimText(claims, name); };
  // The form is tagged, so that keys of different shapes never meet: a
  // GitHub run, a GitLab pipeline and a single token are different things
  // even when their escaped values line up. The issuer is escaped like the
  // values (it contains ':').
  auto base = [&](std::string_view tag) {
    return "ci:" + std::string(tag) + "/" + Escape(policy.issuer) + ":";
  };
  if (policy.provider == Provider::kGitHubActions) {
    if (auto repository = text("repository"), run_id = text("run_id"); repository && run_id) {
      return base("gh") + Escape(*repository) + ":" + Escape(*run_id) + ":" +
             Escape(text("run_attempt").value_or("1"));
    }
  }
  if (policy.provider == Provider::kGitLab) {
    if (auto project = text("project_path"), pipeline = text("pipeline_id"); project && pipeline) {
      return base("gl") + Escape(*project) + ":" + Escape(*pipeline);
    }
  }
  const std::string sub = Escape(text("sub").value_or(""));
  if (std::optional<std::string> jti = text("jti"); jti && !jti->empty()) {
    return base("jti") + sub + ":" + Escape(*jti);
  }
  return base("iat") + sub + ":" + Escape(text("iat").value_or("0"));
}

json CiFacts(const TrustPolicy& policy, const json& claims) {
  static constexpr std::string_view kFacts[] = {"sub",
                                                "repository",
                                                "repository_id",
                                                "repository_owner",
                                                "repository_owner_id",
                                                "run_id",
                                                "run_attempt",
                                                "run_number",
                                                "ref",
                                                "ref_type",
                                                "event_name",
                                                "environment",
                                                "sha",
                                                "workflow_ref",
                                                "job_workflow_ref",
                                                "actor",
                                                "actor_id",
                                                "runner_environment",
                                                "project_path",
                                                "project_id",
                                                "namespace_path",
                                                "namespace_id",
                                                "pipeline_id",
                                                "pipeline_source",
                                                "job_id",
                                                "user_login",
                                                "ref_protected",
                                                "jti"};
  json facts = json::object();
  facts["trust_policy"] = policy.name;
  facts["issuer"] = policy.issuer;
  for (std::string_view name : kFacts) {
    std::optional<std::string> v = ClaimText(claims, name);
    if (!v || text::HasControlChar(*v)) {
      continue;
    }
    if (v->size() > kMaxFactBytes) {
      v->resize(kMaxFactBytes);
    }
    facts[std::string(name)] = *v;
  }
  return facts;
}

std::string CheckFetchUrl(std::string_view url, bool allow_http) {
  Result<net::Url> parsed = net::ParseUrl(url, net::UrlPolicy::OidcEndpoint(allow_http));
  if (parsed) {
    return "";
  }
  if (parsed.error().Reason() == "url_http_refused") {
    return "must use https (plain http is allowed only with allow_http: true for a loopback "
           "test issuer)";
  }
  return parsed.error().message;
}

}  // namespace jitbroker::oidc
