#include "issuers/github_app/github_app_issuer.h"

#include <algorithm>
#include <atomic>
#include <cctype>
#include <charconv>
#include <limits>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "broker/common/log.h"
#include "broker/common/time_util.h"
#include "broker/crypto/crypto.h"
#include "broker/crypto/jose.h"
#include "issuers/github_app/app_jwt.h"
#include "issuers/github_app/github_api.h"
#include "issuers/github_app/permissions.h"
#include "issuers/github_app/ttl_cache.h"
#include "broker/net/url.h"

namespace jitbroker::issuers::github_app {

namespace {

constexpr std::string_view kResourcePrefix = "github://";
constexpr int64_t kGitHubTokenLifetimeSeconds = 3600;
// The broker's own metadata-read token (for collaborator checks) is reused
// for at most this long; GitHub's lifetime is an hour.
constexpr std::chrono::seconds kCheckTokenTtl{50 * 60};

std::string Lower(std::string_view s) {
  std::string out(s);
  std::transform(out.begin(), out.end(), out.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return out;
}

bool IsPrintableNoSpace(std::string_view s) {
  return std::all_of(s.begin(), s.end(), [](char c) {
    const auto u = static_cast<unsigned char>(c);
    return u > 0x20 && u < 0x7f;
  });
}

struct Options {
  std::string name;
  nlohmann::json jwt_iss;  // client id (string) or app id (integer)
  std::string app_label;   // for audit: "Iv23…" or "app_id:123"
  std::unique_ptr<crypto::SigningKey> key;
  ApiOptions api;
  std::optional<int64_t> installation_id;
  std::map<std::string, int64_t> repository_ids;  // lower-case "owner/repo" -> id
  PermissionSet default_permissions;
  std::optional<PermissionSet> max_permissions;
  std::map<std::string, std::array<std::optional<Tier>, kLevelCount>> tier_overrides;
  int64_t default_ttl_seconds = 900;
  int64_t max_ttl_seconds = 3600;
  size_t installation_cache_entries = 1024;
  std::chrono::seconds installation_cache_ttl{600};
  bool delegation_enabled = true;
  bool require_github_login = false;
  size_t delegation_cache_entries = 4096;
  std::chrono::seconds delegation_cache_ttl{60};
};

struct RepoRef {
  std::string owner;
  std::string repo;
  std::string full() const { return owner + "/" + repo; }
  std::string key() const { return Lower(full()); }
};

struct ParsedRequest {
  RepoRef repo;
  PermissionSet permissions;
};

struct CheckToken {
  std::shared_ptr<const SecretValue> token;
};

struct Collaborator {
  bool found = false;
  CollaboratorPermission permission;
};

// The person's effective role: role_name when GitHub names a built-in role,
// else the legacy permission field (custom roles report their base there).
RepoRole RoleOf(const Collaborator& c) {
  if (!c.found) {
    return RepoRole::kNone;
  }
  if (auto r = ParseRepoRole(c.permission.role_name)) {
    return *r;
  }
  return ParseRepoRole(c.permission.permission).value_or(RepoRole::kNone);
}

class GitHubAppIssuer final : public Issuer {
 public:
  GitHubAppIssuer(Options opts, net::HttpClient* http, const Clock* clock)
      : opts_(std::move(opts)),
        clock_(clock),
        policy_(opts_.tier_overrides, opts_.max_permissions),
        jwt_(std::move(opts_.key), opts_.jwt_iss, clock),
        api_(opts_.api, http, &jwt_, clock, opts_.name),
        installations_(opts_.installation_cache_entries, opts_.installation_cache_ttl, clock),
        check_tokens_(64, kCheckTokenTtl, clock),
        collaborators_(opts_.delegation_cache_entries, opts_.delegation_cache_ttl, clock) {
    desc_.name = opts_.name;
    desc_.type = "github_app";
    desc_.revocability = Revocability::kRevocable;
    desc_.mints_upstream = true;
    desc_.min_ttl_seconds = 1;
    desc_.max_ttl_seconds = opts_.max_ttl_seconds;
    desc_.default_ttl_seconds = std::min(opts_.default_ttl_seconds, opts_.max_ttl_seconds);
  }

  const IssuerDescription& Describe() const override { return desc_; }

  Result<Tier> ImpliedTier(const GrantRequest& req) const override {
    JITBROKER_ASSIGN_OR_RETURN(ParsedRequest parsed, Parse(req));
    return policy_.ImpliedTier(parsed.permissions);
  }

  Result<MintResult> Mint(const MintRequest& mr) override {
    JITBROKER_ASSIGN_OR_RETURN(ParsedRequest parsed, Parse(mr.request));
    JITBROKER_ASSIGN_OR_RETURN(int64_t installation, Installation(parsed.repo));
    TokenRequest tr;
    if (auto it = opts_.repository_ids.find(parsed.repo.key()); it != opts_.repository_ids.end()) {
      tr.repository_ids.push_back(it->second);
    } else {
      tr.repositories.push_back(parsed.repo.repo);
    }
    tr.permissions = ToJson(parsed.permissions);
    auto created = api_.CreateInstallationToken(installation, tr);
    if (!created) {
      if (created.error().Reason() == "github_installation_not_found") {
        installations_.Erase(parsed.repo.key());  // uninstalled or reinstalled
      }
      return std::unexpected(created.error());
    }
    minted_.fetch_add(1, std::memory_order_relaxed);
    JITBROKER_RETURN_IF_ERROR(CheckNarrowed(*created, parsed));
    if (created->expires_at <= mr.now) {
      (void)api_.RevokeInstallationToken(created->token);
      return std::unexpected(Unavailable("github_bad_response",
                                         "GitHub returned an installation token that has expired"));
    }

    const std::string digest = crypto::Sha256(created->token.Reveal());
    MintResult out;
    out.type = "github_installation_token";
    const TimePoint grant_end = mr.now + Seconds(std::max<int64_t>(1, mr.ttl_seconds));
    out.expires_at = std::min(grant_end, created->expires_at);
    if (created->expires_at > out.expires_at) {
      out.upstream_expires_at = created->expires_at;
    }
    out.fingerprint_sha256 = crypto::HexEncode(digest);
    nlohmann::json perms = created->permissions.empty() ? tr.permissions : created->permissions;
    out.fields = {{"permissions", perms},
                  {"repositories", nlohmann::json::array({parsed.repo.repo})},
                  {"owner", parsed.repo.owner},
                  {"repository_selection", created->repository_selection.empty()
                                               ? std::string("selected")
                                               : created->repository_selection},
                  {"installation_id", installation},
                  {"api_url", opts_.api.base_url},
                  {"github_expires_at", FormatRfc3339(created->expires_at)}};
    out.secrets.emplace_back("token", created->token.Clone());
    out.revocation_handle = std::move(created->token);
    // GitHub's audit log identifies a token by `hashed_token`: base64 SHA-256.
    out.audit_fields = {{"installation_id", installation},
                        {"token_sha256", out.fingerprint_sha256},
                        {"hashed_token", crypto::Base64Encode(digest)},
                        {"repositories", nlohmann::json::array({parsed.repo.full()})},
                        {"permissions", perms},
                        {"github_expires_at", FormatRfc3339(created->expires_at)},
                        {"app", opts_.app_label}};
    if (!mr.principal_github_login.empty()) {
      out.audit_fields["on_behalf_of_github_login"] = mr.principal_github_login;
    }
    return out;
  }

  Result<RevokeOutcome> Revoke(const RevokeRequest& rr) override {
    if (rr.now >= rr.expires_at) {
      return RevokeOutcome{RevokeOutcomeKind::kRevoked, 0};  // expired upstream already
    }
    if (rr.revocation_handle.empty()) {
      return std::unexpected(InvalidArgument("unknown_handle", "no installation token to revoke"));
    }
    JITBROKER_RETURN_IF_ERROR(api_.RevokeInstallationToken(rr.revocation_handle));
    revoked_.fetch_add(1, std::memory_order_relaxed);
    return RevokeOutcome{RevokeOutcomeKind::kRevoked, 0};
  }

  Result<DelegationCheck> CheckDelegatedRights(const GrantRequest& req,
                                               const Principal& principal) override {
    DelegationCheck out;
    out.matched_rule = "issuers." + opts_.name + ".delegated_rights";
    if (!opts_.delegation_enabled) {
      out.audit = {{"checked", false}, {"why", "delegation checks are disabled for this issuer"}};
      return out;
    }
    if (principal.github_login.empty()) {
      if (opts_.require_github_login) {
        CountDelegation("denied");
        out.allowed = false;
        out.reason = "principal " + principal.id + " has no github_login; issuer " + opts_.name +
                     " requires one";
        out.audit = {{"checked", false}, {"allowed", false}, {"why", "no github_login"}};
        return out;
      }
      CountDelegation("skipped");
      out.audit = {{"checked", false}, {"why", "principal has no github_login"}};
      return out;
    }
    JITBROKER_ASSIGN_OR_RETURN(ParsedRequest parsed, Parse(req));
    const RepoRole required = policy_.RequiredRole(parsed.permissions);
    const std::string key = parsed.repo.key() + "#" + Lower(principal.github_login);
    JITBROKER_ASSIGN_OR_RETURN(auto looked_up,
                               collaborators_.Get(key, [&]() -> Result<Collaborator> {
                                 return FetchCollaborator(parsed.repo, principal.github_login);
                               }));
    const Collaborator& c = looked_up.value;
    const RepoRole held = RoleOf(c);
    out.allowed = held >= required;
    out.audit = {{"checked", true},
                 {"github_login", principal.github_login},
                 {"repository", parsed.repo.full()},
                 {"required_role", std::string(RepoRoleName(required))},
                 {"held_role", std::string(RepoRoleName(held))},
                 {"github_permission", c.found ? c.permission.permission : std::string("none")},
                 {"allowed", out.allowed},
                 {"cached", looked_up.cached},
                 {"source", "GET /repos/{owner}/{repo}/collaborators/{username}/permission"}};
    if (c.found && !c.permission.role_name.empty()) {
      out.audit["github_role_name"] = c.permission.role_name;
    }
    if (!out.allowed) {
      out.reason = "GitHub user " + principal.github_login + " holds " +
                   std::string(RepoRoleName(held)) + " on " + parsed.repo.full() +
                   "; the requested permissions need " + std::string(RepoRoleName(required));
    }
    CountDelegation(out.allowed ? "allowed" : "denied");
    return out;
  }

  void CollectMetrics(std::vector<IssuerMetricFamily>& out) const override {
    api_.CollectMetrics(out);
    const std::string issuer = "issuer=\"" + opts_.name + "\"";
    out.push_back({"jitbroker_github_tokens_minted_total",
                   "counter",
                   "Installation tokens minted for grants",
                   {{issuer, static_cast<double>(minted_.load())}}});
    out.push_back({"jitbroker_github_tokens_revoked_total",
                   "counter",
                   "Installation tokens revoked (DELETE /installation/token)",
                   {{issuer, static_cast<double>(revoked_.load())}}});
    out.push_back({"jitbroker_github_installation_cache_total",
                   "counter",
                   "Installation id lookups by cache result",
                   {{issuer + ",result=\"hit\"", static_cast<double>(installations_.hits())},
                    {issuer + ",result=\"miss\"", static_cast<double>(installations_.misses())}}});
    out.push_back({"jitbroker_github_installation_cache_entries",
                   "gauge",
                   "Installation ids cached",
                   {{issuer, static_cast<double>(installations_.size())}}});
    IssuerMetricFamily checks{"jitbroker_github_delegation_checks_total",
                              "counter",
                              "Delegated-rights checks by result",
                              {}};
    {
      std::lock_guard lock(delegation_mu_);
      for (const auto& [result, n] : delegation_counts_) {
        checks.samples.emplace_back(issuer + ",result=\"" + result + "\"", static_cast<double>(n));
      }
    }
    if (!checks.samples.empty()) {
      out.push_back(std::move(checks));
    }
  }

 private:
  Result<ParsedRequest> Parse(const GrantRequest& req) const {
    ParsedRequest out;
    if (!req.resource.starts_with(kResourcePrefix)) {
      return std::unexpected(InvalidArgument(
          "invalid_resource", "issuer " + opts_.name + " mints only for github:// resources"));
    }
    std::string_view rest = std::string_view(req.resource).substr(kResourcePrefix.size());
    const size_t slash = rest.find('/');
    if (slash == std::string_view::npos) {
      return std::unexpected(InvalidArgument(
          "invalid_resource", "the resource must name a repository: github://OWNER/REPO"));
    }
    std::string_view owner = rest.substr(0, slash);
    std::string_view repo = rest.substr(slash + 1);
    repo = repo.substr(0, repo.find('/'));
    if (!GitHubApi::IsValidOwner(owner) || !GitHubApi::IsValidRepo(repo)) {
      return std::unexpected(InvalidArgument(
          "invalid_resource", "the resource must name a repository: github://OWNER/REPO"));
    }
    out.repo = RepoRef{std::string(owner), std::string(repo)};
    if (!req.scope.is_object()) {
      return std::unexpected(InvalidArgument("invalid_scope", "scope must be an object"));
    }
    bool has_permissions = false;
    for (auto it = req.scope.begin(); it != req.scope.end(); ++it) {
      if (it.key() == "permissions") {
        JITBROKER_ASSIGN_OR_RETURN(out.permissions, policy_.Parse(*it));
        has_permissions = true;
      } else {
        return std::unexpected(
            InvalidArgument("unknown_field", "scope." + it.key() +
                                                 " is not known to issuer type github_app "
                                                 "(the repository comes from the resource)"));
      }
    }
    if (!has_permissions) {
      out.permissions = opts_.default_permissions;
    }
    return out;
  }

  Result<int64_t> Installation(const RepoRef& repo) {
    if (opts_.installation_id) {
      return *opts_.installation_id;
    }
    JITBROKER_ASSIGN_OR_RETURN(auto looked_up,
                               installations_.Get(repo.key(), [&]() -> Result<int64_t> {
                                 return api_.GetRepoInstallation(repo.owner, repo.repo);
                               }));
    return looked_up.value;
  }

  // GitHub can only narrow, but a broker that hands out what it did not ask
  // for would be wrong silently: refuse (and revoke) a broader token.
  Status CheckNarrowed(const CreatedToken& t, const ParsedRequest& parsed) {
    std::string problem;
    if (t.repository_selection == "all") {
      problem = "covers all repositories of the installation";
    }
    if (t.permissions.is_object()) {
      for (auto it = t.permissions.begin(); it != t.permissions.end() && problem.empty(); ++it) {
        int got = -1;  // unreadable level
        if (it->is_string()) {
          if (std::optional<Level> l = ParseLevel(it->get<std::string>())) {
            got = static_cast<int>(*l);
          }
        }
        auto asked = parsed.permissions.find(it.key());
        if (asked == parsed.permissions.end()) {
          // GitHub adds metadata: read to every token.
          if (it.key() == "metadata" && got == static_cast<int>(Level::kRead)) {
            continue;
          }
          problem = "carries the unrequested permission " + it.key();
        } else if (got < 0 || got > static_cast<int>(asked->second)) {
          problem = "carries more than the requested level of " + it.key();
        }
      }
    }
    if (problem.empty()) {
      return OkStatus();
    }
    (void)api_.RevokeInstallationToken(t.token);
    log::Get("issuer.github_app")
        ->error("event=token_broader_than_requested issuer={} repository={} problem=\"{}\"",
                opts_.name, parsed.repo.full(), problem);
    return std::unexpected(
        Internal("GitHub returned a token broader than requested; it was revoked", problem));
  }

  Result<Collaborator> FetchCollaborator(const RepoRef& repo, const std::string& login) {
    JITBROKER_ASSIGN_OR_RETURN(int64_t installation, Installation(repo));
    for (int attempt = 0; attempt < 2; ++attempt) {
      JITBROKER_ASSIGN_OR_RETURN(auto token, CheckTokenFor(installation));
      auto r = api_.GetCollaboratorPermission(*token.value.token, repo.owner, repo.repo, login);
      if (r) {
        Collaborator c;
        c.found = r->has_value();
        if (c.found) {
          c.permission = **r;
        }
        return c;
      }
      if (r.error().Reason() != "github_auth_failed" || attempt == 1) {
        return std::unexpected(r.error());
      }
      // The cached check token was revoked or expired: mint a fresh one.
      check_tokens_.Erase(std::to_string(installation));
    }
    return std::unexpected(Internal("unreachable"));
  }

  // The broker's own token for permission checks: metadata: read only,
  // cached per installation.
  Result<TtlCache<CheckToken>::Lookup> CheckTokenFor(int64_t installation) {
    return check_tokens_.Get(std::to_string(installation), [&]() -> Result<CheckToken> {
      TokenRequest tr;
      tr.permissions = {{"metadata", "read"}};
      JITBROKER_ASSIGN_OR_RETURN(CreatedToken t, api_.CreateInstallationToken(installation, tr));
      return CheckToken{std::make_shared<const SecretValue>(std::move(t.token))};
    });
  }

  void CountDelegation(const std::string& result) {
    std::lock_guard lock(delegation_mu_);
    ++delegation_counts_[result];
  }

  Options opts_;
  const Clock* clock_;
  IssuerDescription desc_;
  PermissionPolicy policy_;
  AppJwt jwt_;
  GitHubApi api_;
  TtlCache<int64_t> installations_;
  TtlCache<CheckToken> check_tokens_;
  TtlCache<Collaborator> collaborators_;
  std::atomic<uint64_t> minted_{0};
  std::atomic<uint64_t> revoked_{0};
  mutable std::mutex delegation_mu_;
  std::map<std::string, uint64_t> delegation_counts_;
};

// ---------------------------------------------------------------------------
// Config

Status CheckBaseUrl(config::Section& s, const std::string& url, bool allow_http) {
  const std::string bad =
      "must be an https:// URL such as https://api.github.com or https://HOST/api/v3 "
      "(http:// only with allow_http: true and a loopback host), without user:password@, "
      "query or fragment";
  if (url.size() > 2048 || !IsPrintableNoSpace(url) ||
      url.find_first_of("?#@") != std::string::npos) {
    return std::unexpected(s.Err("base_url", bad));
  }
  const bool https = url.starts_with("https://");
  if (!https && !url.starts_with("http://")) {
    return std::unexpected(s.Err("base_url", bad));
  }
  std::string_view rest = std::string_view(url).substr(https ? 8 : 7);
  std::string_view authority = rest.substr(0, rest.find('/'));
  std::string_view host = authority;
  if (!host.empty() && host.front() == '[') {
    const size_t close = host.find(']');
    if (close == std::string_view::npos) {
      return std::unexpected(s.Err("base_url", bad));
    }
    host = host.substr(1, close - 1);
  } else {
    host = host.substr(0, host.find(':'));
  }
  if (host.empty()) {
    return std::unexpected(s.Err("base_url", bad));
  }
  if (!https && !(allow_http && net::IsLoopbackHost(host))) {
    return std::unexpected(s.Err("base_url", bad));
  }
  return OkStatus();
}

// A mapping of permission name -> level, validated against the table.
Result<std::optional<PermissionSet>> ParsePermissionMap(config::Section& parent,
                                                        std::string_view key) {
  JITBROKER_ASSIGN_OR_RETURN(std::optional<config::Section> sub, parent.OptSection(key));
  if (!sub || !sub->node().IsDefined() || sub->node().IsNull()) {
    return std::optional<PermissionSet>();
  }
  PermissionSet out;
  std::vector<std::string> names;
  try {
    for (auto it = sub->node().begin(); it != sub->node().end(); ++it) {
      if (it->first.IsScalar()) {
        names.push_back(it->first.Scalar());
      }
    }
  } catch (...) {
    return std::unexpected(parent.Err(key, "must be a mapping of permission name to level"));
  }
  for (const auto& name : names) {
    JITBROKER_ASSIGN_OR_RETURN(std::optional<std::string> level_text, sub->OptString(name));
    const PermissionInfo* info = FindPermission(name);
    if (info == nullptr) {
      return std::unexpected(sub->Err(name, "is not a known repository permission"));
    }
    std::optional<Level> level = level_text ? ParseLevel(*level_text) : std::nullopt;
    if (!level || !info->levels[static_cast<int>(*level)]) {
      return std::unexpected(sub->Err(name,
                                      "must be a level this permission accepts (read, "
                                      "write or admin)"));
    }
    out[name] = *level;
  }
  JITBROKER_RETURN_IF_ERROR(sub->CheckNoUnknownKeys());
  return std::optional<PermissionSet>(std::move(out));
}

Result<std::map<std::string, std::array<std::optional<Tier>, kLevelCount>>> ParseTierOverrides(
    config::Section& parent) {
  std::map<std::string, std::array<std::optional<Tier>, kLevelCount>> out;
  JITBROKER_ASSIGN_OR_RETURN(std::optional<config::Section> sub,
                             parent.OptSection("permission_tiers"));
  if (!sub || !sub->node().IsDefined() || sub->node().IsNull()) {
    return out;
  }
  std::vector<std::pair<std::string, bool>> names;  // (name, is mapping)
  try {
    for (auto it = sub->node().begin(); it != sub->node().end(); ++it) {
      if (it->first.IsScalar()) {
        names.emplace_back(it->first.Scalar(), it->second.IsMap());
      }
    }
  } catch (...) {
    return std::unexpected(parent.Err("permission_tiers", "must be a mapping"));
  }
  constexpr std::string_view kTierHelp =
      "must be a tier (read, write, pr, merge_deploy, secret, destructive) or a mapping "
      "{read: TIER, write: TIER, admin: TIER}";
  for (const auto& [name, is_map] : names) {
    const PermissionInfo* info = FindPermission(name);
    if (info == nullptr) {
      sub->MarkKnown(name);
      return std::unexpected(sub->Err(name, "is not a known repository permission"));
    }
    std::array<std::optional<Tier>, kLevelCount> tiers;
    if (is_map) {
      JITBROKER_ASSIGN_OR_RETURN(std::optional<config::Section> levels, sub->OptSection(name));
      for (int l = 0; l < kLevelCount; ++l) {
        const std::string level_name(LevelName(static_cast<Level>(l)));
        JITBROKER_ASSIGN_OR_RETURN(std::optional<std::string> t, levels->OptString(level_name));
        if (!t) {
          continue;
        }
        tiers[l] = ParseTier(*t);
        if (!tiers[l]) {
          return std::unexpected(levels->Err(level_name, kTierHelp));
        }
        if (!info->levels[l]) {
          return std::unexpected(levels->Err(level_name, "this permission has no such level"));
        }
      }
      JITBROKER_RETURN_IF_ERROR(levels->CheckNoUnknownKeys());
    } else {
      JITBROKER_ASSIGN_OR_RETURN(std::optional<std::string> t, sub->OptString(name));
      std::optional<Tier> tier = t ? ParseTier(*t) : std::nullopt;
      if (!tier) {
        return std::unexpected(sub->Err(name, kTierHelp));
      }
      // A single tier is the tier of the levels that change things.
      tiers[static_cast<int>(Level::kWrite)] = tier;
      tiers[static_cast<int>(Level::kAdmin)] = tier;
    }
    out[name] = tiers;
  }
  JITBROKER_RETURN_IF_ERROR(sub->CheckNoUnknownKeys());
  return out;
}

Result<std::map<std::string, int64_t>> ParseRepositoryIds(config::Section& parent) {
  std::map<std::string, int64_t> out;
  JITBROKER_ASSIGN_OR_RETURN(std::optional<config::Section> sub,
                             parent.OptSection("repository_ids"));
  if (!sub || !sub->node().IsDefined() || sub->node().IsNull()) {
    return out;
  }
  std::vector<std::string> names;
  try {
    for (auto it = sub->node().begin(); it != sub->node().end(); ++it) {
      if (it->first.IsScalar()) {
        names.push_back(it->first.Scalar());
      }
    }
  } catch (...) {
    return std::unexpected(parent.Err("repository_ids", "must be a mapping"));
  }
  for (const auto& name : names) {
    JITBROKER_ASSIGN_OR_RETURN(auto id, sub->OptInt(name, 1, std::numeric_limits<int64_t>::max()));
    const size_t slash = name.find('/');
    if (slash == std::string::npos || !GitHubApi::IsValidOwner(name.substr(0, slash)) ||
        !GitHubApi::IsValidRepo(name.substr(slash + 1))) {
      return std::unexpected(sub->Err(name, "keys must be OWNER/REPO"));
    }
    if (!id) {
      return std::unexpected(sub->Err(name, "must be a repository id (a positive integer)"));
    }
    out[Lower(name)] = *id;
  }
  JITBROKER_RETURN_IF_ERROR(sub->CheckNoUnknownKeys());
  return out;
}

Result<Options> ParseOptions(IssuerContext& ctx) {
  config::Section& s = *ctx.section;
  Options o;
  o.name = ctx.name;

  JITBROKER_ASSIGN_OR_RETURN(auto client_id, s.OptString("client_id"));
  JITBROKER_ASSIGN_OR_RETURN(auto app_id,
                             s.OptInt("app_id", 1, std::numeric_limits<int64_t>::max()));
  if (client_id) {
    if (client_id->empty() || client_id->size() > 128 || !IsPrintableNoSpace(*client_id)) {
      return std::unexpected(s.Err("client_id", "must be the App's client ID, e.g. Iv23li…"));
    }
    o.jwt_iss = *client_id;  // recommended by GitHub (protocols.md §1.1)
    o.app_label = *client_id;
  } else if (app_id) {
    o.jwt_iss = *app_id;
    o.app_label = "app_id:" + std::to_string(*app_id);
  } else {
    return std::unexpected(s.Err("", "client_id (recommended) or app_id is required"));
  }

  JITBROKER_ASSIGN_OR_RETURN(auto key_ref, s.OptSecretRef("private_key"));
  if (!key_ref) {
    return std::unexpected(
        s.Err("private_key", "is required: the App's RSA private key as file:PATH or env:NAME"));
  }
  auto key = crypto::SigningKey::FromPem(crypto::JwsAlg::kRS256, *key_ref);
  if (!key) {
    return std::unexpected(s.Err("private_key",
                                 "is not an unencrypted RSA private key in PEM (PKCS#1 or "
                                 "PKCS#8) of at least 2048 bits"));
  }
  o.key = std::move(*key);

  JITBROKER_ASSIGN_OR_RETURN(auto allow_http, s.OptBool("allow_http"));
  JITBROKER_ASSIGN_OR_RETURN(auto base_url, s.OptString("base_url"));
  o.api.base_url = base_url.value_or("https://api.github.com");
  while (o.api.base_url.ends_with('/')) {
    o.api.base_url.pop_back();
  }
  JITBROKER_RETURN_IF_ERROR(CheckBaseUrl(s, o.api.base_url, allow_http.value_or(false)));

  JITBROKER_ASSIGN_OR_RETURN(auto api_version, s.OptString("api_version"));
  if (api_version) {
    const std::string& v = *api_version;
    const bool shaped =
        v.size() == 10 && v[4] == '-' && v[7] == '-' &&
        std::all_of(v.begin(), v.end(), [](char c) { return (c >= '0' && c <= '9') || c == '-'; });
    if (!shaped) {
      return std::unexpected(s.Err("api_version",
                                   "must be a GitHub REST API version such as "
                                   "2022-11-28 or 2026-03-10"));
    }
    o.api.api_version = v;
  }
  JITBROKER_ASSIGN_OR_RETURN(auto user_agent, s.OptString("user_agent"));
  if (user_agent) {
    const bool ok = !user_agent->empty() && user_agent->size() <= 256 &&
                    std::all_of(user_agent->begin(), user_agent->end(), [](char c) {
                      const auto u = static_cast<unsigned char>(c);
                      return u >= 0x20 && u < 0x7f;
                    });
    if (!ok) {
      return std::unexpected(s.Err("user_agent", "must be 1-256 printable ASCII characters"));
    }
    o.api.user_agent = *user_agent;
  }
  JITBROKER_ASSIGN_OR_RETURN(auto installation_id,
                             s.OptInt("installation_id", 1, std::numeric_limits<int64_t>::max()));
  o.installation_id = installation_id;
  JITBROKER_ASSIGN_OR_RETURN(o.repository_ids, ParseRepositoryIds(s));

  JITBROKER_ASSIGN_OR_RETURN(auto defaults, ParsePermissionMap(s, "default_permissions"));
  o.default_permissions =
      defaults.value_or(PermissionSet{{"contents", Level::kRead}, {"metadata", Level::kRead}});
  if (o.default_permissions.empty()) {
    return std::unexpected(s.Err("default_permissions", "must name at least one permission"));
  }
  JITBROKER_ASSIGN_OR_RETURN(o.max_permissions, ParsePermissionMap(s, "max_permissions"));
  if (o.max_permissions) {
    for (const auto& [name, level] : o.default_permissions) {
      auto it = o.max_permissions->find(name);
      if (it == o.max_permissions->end() ||
          static_cast<int>(level) > static_cast<int>(it->second)) {
        return std::unexpected(
            s.Err("default_permissions", "exceeds max_permissions (" + name + ")"));
      }
    }
  }
  JITBROKER_ASSIGN_OR_RETURN(o.tier_overrides, ParseTierOverrides(s));

  JITBROKER_ASSIGN_OR_RETURN(auto max_ttl,
                             s.OptInt("max_ttl_seconds", 1, kGitHubTokenLifetimeSeconds));
  JITBROKER_ASSIGN_OR_RETURN(auto default_ttl,
                             s.OptInt("default_ttl_seconds", 1, kGitHubTokenLifetimeSeconds));
  o.max_ttl_seconds = max_ttl.value_or(kGitHubTokenLifetimeSeconds);
  o.default_ttl_seconds = std::min(default_ttl.value_or(900), o.max_ttl_seconds);

  JITBROKER_ASSIGN_OR_RETURN(auto timeout_ms, s.OptInt("timeout_ms", 100, 120000));
  JITBROKER_ASSIGN_OR_RETURN(auto connect_ms, s.OptInt("connect_timeout_ms", 100, 60000));
  JITBROKER_ASSIGN_OR_RETURN(auto attempts, s.OptInt("max_attempts", 1, 10));
  JITBROKER_ASSIGN_OR_RETURN(auto max_retry_after, s.OptInt("max_retry_after_seconds", 0, 300));
  o.api.timeout = std::chrono::milliseconds(timeout_ms.value_or(10000));
  o.api.connect_timeout = std::chrono::milliseconds(connect_ms.value_or(5000));
  o.api.max_attempts = static_cast<int>(attempts.value_or(3));
  o.api.max_retry_after = std::chrono::seconds(max_retry_after.value_or(10));
  JITBROKER_ASSIGN_OR_RETURN(auto token_format, s.OptString("token_format"));
  if (token_format) {
    if (*token_format != "stateless" && *token_format != "legacy") {
      return std::unexpected(s.Err("token_format", "must be stateless or legacy"));
    }
    o.api.token_format = *token_format;
  }

  JITBROKER_ASSIGN_OR_RETURN(auto ic, s.OptSection("installation_cache"));
  if (ic) {
    JITBROKER_ASSIGN_OR_RETURN(auto entries, ic->OptInt("max_entries", 1, 1000000));
    JITBROKER_ASSIGN_OR_RETURN(auto ttl, ic->OptInt("ttl_seconds", 1, 86400));
    JITBROKER_RETURN_IF_ERROR(ic->CheckNoUnknownKeys());
    o.installation_cache_entries = static_cast<size_t>(entries.value_or(1024));
    o.installation_cache_ttl = std::chrono::seconds(ttl.value_or(600));
  }
  JITBROKER_ASSIGN_OR_RETURN(auto dg, s.OptSection("delegation"));
  if (dg) {
    JITBROKER_ASSIGN_OR_RETURN(auto enabled, dg->OptBool("enabled"));
    JITBROKER_ASSIGN_OR_RETURN(auto require, dg->OptBool("require_github_login"));
    JITBROKER_ASSIGN_OR_RETURN(auto ttl, dg->OptInt("cache_ttl_seconds", 1, 3600));
    JITBROKER_ASSIGN_OR_RETURN(auto entries, dg->OptInt("max_entries", 1, 1000000));
    JITBROKER_RETURN_IF_ERROR(dg->CheckNoUnknownKeys());
    o.delegation_enabled = enabled.value_or(true);
    o.require_github_login = require.value_or(false);
    o.delegation_cache_ttl = std::chrono::seconds(ttl.value_or(60));
    o.delegation_cache_entries = static_cast<size_t>(entries.value_or(4096));
  }
  JITBROKER_RETURN_IF_ERROR(s.CheckNoUnknownKeys());
  return o;
}

}  // namespace

Result<std::unique_ptr<Issuer>> CreateGitHubAppIssuerForTesting(IssuerContext& ctx,
                                                                GitHubAppHooks hooks) {
  JITBROKER_ASSIGN_OR_RETURN(Options o, ParseOptions(ctx));
  if (ctx.http == nullptr || ctx.clock == nullptr) {
    return std::unexpected(Internal("issuer " + ctx.name +
                                    " (github_app) needs an HTTP client "
                                    "and a clock"));
  }
  o.api.sleep = std::move(hooks.sleep);
  return std::unique_ptr<Issuer>(new GitHubAppIssuer(std::move(o), ctx.http, ctx.clock));
}

Result<std::unique_ptr<Issuer>> CreateGitHubAppIssuer(IssuerContext& ctx) {
  return CreateGitHubAppIssuerForTesting(ctx, GitHubAppHooks{});
}

}  // namespace jitbroker::issuers::github_app
