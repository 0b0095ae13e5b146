#include "issuers/github_app/github_app_issuer.h"

#include <algorithm>
#include <atomic>
#include <cctype>
#include <charconv>
#include <deque>
#include <functional>
#include <limits>
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "broker/common/log.h"
#include "broker/common/text.h"
#include "broker/common/time_util.h"
#include "broker/crypto/crypto.h"
#include "broker/crypto/jose.h"
#include "broker/net/url.h"
#include "issuers/github_app/app_jwt.h"
#include "issuers/github_app/github_api.h"
#include "issuers/github_app/permissions.h"
#include "issuers/github_app/ttl_cache.h"

namespace jitbroker::issuers::github_app {

namespace {

constexpr std::string_view kResourcePrefix = "github://";
constexpr int64_t kGitHubTokenLifetimeSeconds = 3600;
// A minted token's expires_at may exceed GitHub's hour by this much (clock
// skew between GitHub and the broker beyond the learnt offset).
constexpr int64_t kExpirySkewSeconds = 300;
// The broker's own metadata-read tokens (for collaborator checks) are reused
// for at most this long; GitHub's lifetime is an hour.
constexpr std::chrono::seconds kCheckTokenTtl{50 * 60};
constexpr size_t kCheckTokenEntries = 256;
// GitHub answers 401 for a token minted a few seconds ago (docs/concepts.md
// "GitHub App tokens"): a 401 on revoking a token the issuer minted this recently means "not
// yet", not "already revoked".
constexpr std::chrono::seconds kNewTokenGrace{10};
// Mint times are remembered this long, for at most this many tokens.
constexpr std::chrono::seconds kMintMemory{60};
constexpr size_t kMaxRememberedMints = 65536;
// Revoking the broker's own helper tokens (evicted, refused, or at
// shutdown) gets at most this long per call, and shutdown at most
// kShutdownRevokeBudget in all.
constexpr std::chrono::milliseconds kHelperRevokeBudget{3000};
constexpr std::chrono::milliseconds kShutdownRevokeBudget{5000};

bool HasUpper(std::string_view s) {
  return std::any_of(s.begin(), s.end(), [](char c) { return c >= 'A' && c <= 'Z'; });
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
  // Where git smart HTTP is served ("https://github.com"), for the proxy.
  std::string git_url;
  bool proxy_only = false;
  std::optional<int64_t> installation_id;
  std::optional<std::string> installation_owner;  // lower-case login
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
  // The key of policy.principals[].identities holding the delegating
  // human's GitHub login (`delegation.identity`).
  std::string identity_key = "github";
  size_t delegation_cache_entries = 4096;
  std::chrono::seconds delegation_cache_ttl{60};
  // How the issuer itself waits (retries of new tokens); tests replace it.
  std::function<void(std::chrono::milliseconds)> sleep;
};

struct RepoRef {
  std::string owner;
  std::string repo;
  std::string full() const { return owner + "/" + repo; }
  std::string key() const { return text::AsciiLower(full()); }
};

struct ParsedRequest {
  RepoRef repo;
  PermissionSet permissions;
};

struct CheckToken {
  std::shared_ptr<const SecretValue> token;
  TimePoint minted_at;
  std::string repository;  // "owner/repo", for logs
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

std::string_view RevokeAnswerName(RevokeAnswer a) {
  switch (a) {
    case RevokeAnswer::kRevoked:
      return "revoked";
    case RevokeAnswer::kUnauthorized:
      return "401";
    case RevokeAnswer::kNotFound:
      return "404";
  }
  return "unknown";
}

// What the configuration decides: the grants this issuer accepts (one
// repository, repository permissions within the ceiling), their tier, scope
// items and CI narrowing.
class GitHubSpec final : public IssuerSpec {
 public:
  explicit GitHubSpec(const Options& o)
      : name_(o.name),
        installation_id_(o.installation_id),
        installation_owner_(o.installation_owner),
        default_permissions_(o.default_permissions),
        policy_(o.tier_overrides, o.max_permissions) {
    desc_.name = o.name;
    desc_.type = "github_app";
    desc_.revocability = Revocability::kRevocable;
    desc_.mints_upstream = true;
    desc_.min_ttl_seconds = 1;
    desc_.max_ttl_seconds = o.max_ttl_seconds;
    desc_.default_ttl_seconds = std::min(o.default_ttl_seconds, o.max_ttl_seconds);
    desc_.identity_key = o.identity_key;
    desc_.proxy_only = o.proxy_only;
    desc_.proxy_upstreams = {{"git", UrlAuthority(o.git_url), o.git_url},
                             {"github_api", UrlAuthority(o.api.base_url), o.api.base_url}};
  }

  static std::string UrlAuthority(const std::string& url) {
    auto parsed = net::ParseUrl(url, net::UrlPolicy::GitHubBaseUrl(true));
    return parsed ? parsed->Authority() : std::string();
  }

  const IssuerDescription& Describe() const override { return desc_; }

  Result<Tier> ImpliedTier(const GrantRequest& req) const override {
    JITBROKER_ASSIGN_OR_RETURN(ParsedRequest parsed, Parse(req));
    return policy_.ImpliedTier(parsed.permissions);
  }

  // "NAME:LEVEL" per permission the token will carry ("contents:write"), the
  // defaults included when the request names none.
  Result<std::vector<std::string>> ScopeItems(const GrantRequest& req) const override {
    JITBROKER_ASSIGN_OR_RETURN(ParsedRequest parsed, Parse(req));
    return Items(parsed.permissions);
  }

  // Requested tokens are "PERMISSION:LEVEL" (at most the granted level of a
  // permission the grant carries, its defaults included); the narrowed grant
  // carries exactly those permissions. The text lists the permissions the
  // grant names (none named: "").
  Result<NarrowedScope> NarrowScope(
      const GrantRequest& grant,
      const std::optional<std::vector<std::string>>& requested) const override {
    JITBROKER_ASSIGN_OR_RETURN(ParsedRequest parsed, Parse(grant));
    NarrowedScope out;
    out.scope = grant.scope.is_object() ? grant.scope : nlohmann::json::object();
    if (!requested) {
      if (out.scope.contains("permissions")) {
        out.scope_text = Text(parsed.permissions);
      }
      return out;
    }
    PermissionSet narrowed;
    for (const std::string& tok : *requested) {
      const size_t colon = tok.find(':');
      const std::optional<Level> level =
          colon == std::string::npos ? std::nullopt : ParseLevel(tok.substr(colon + 1));
      auto granted =
          level ? parsed.permissions.find(tok.substr(0, colon)) : parsed.permissions.end();
      if (granted == parsed.permissions.end() ||
          static_cast<int>(*level) > static_cast<int>(granted->second)) {
        return std::unexpected(
            PermissionDenied("scope_not_granted",
                             "scope \"" + tok + "\" is not part of what the trust policy grants"));
      }
      auto [slot, inserted] = narrowed.emplace(granted->first, *level);
      if (!inserted && static_cast<int>(*level) > static_cast<int>(slot->second)) {
        slot->second = *level;
      }
    }
    if (!narrowed.empty()) {
      out.scope["permissions"] = ToJson(narrowed);
    }
    out.scope_text = Text(narrowed.empty() ? parsed.permissions : narrowed);
    return out;
  }

  Result<ParsedRequest> Parse(const GrantRequest& req) const {
    ParsedRequest out;
    if (!req.resource.starts_with(kResourcePrefix)) {
      return std::unexpected(InvalidArgument(
          "invalid_resource", "issuer " + name_ + " mints only for github:// resources"));
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
    // GitHub resolves names case-insensitively but policy patterns are
    // compared as written: one spelling only, so that github://acme/Repo
    // cannot slip past a rule written for github://acme/repo.
    if (HasUpper(owner) || HasUpper(repo)) {
      return std::unexpected(
          InvalidArgument("invalid_resource",
                          "GitHub owner and repository names must be written in lower case "
                          "(policy patterns are compared as written): use github://" +
                              text::AsciiLower(owner) + "/" + text::AsciiLower(repo)));
    }
    if (installation_id_ && installation_owner_ && owner != *installation_owner_) {
      return std::unexpected(OwnerMismatch(owner, *installation_owner_));
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
      out.permissions = default_permissions_;
    }
    return out;
  }

  Error OwnerMismatch(std::string_view owner, std::string_view account) const {
    return InvalidArgument("invalid_resource", "issuer " + name_ +
                                                   " mints only for repositories of " +
                                                   std::string(account) + " (installation " +
                                                   std::to_string(*installation_id_) +
                                                   "), not of " + std::string(owner));
  }

  RepoRole RequiredRole(const PermissionSet& permissions) const {
    return policy_.RequiredRole(permissions);
  }

 private:
  static std::vector<std::string> Items(const PermissionSet& permissions) {
    std::vector<std::string> items;
    items.reserve(permissions.size());
    for (const auto& [name, level] : permissions) {
      items.push_back(name + ":" + std::string(LevelName(level)));
    }
    return items;
  }
  static std::string Text(const PermissionSet& permissions) {
    std::string text;
    for (const std::string& item : Items(permissions)) {
      text += (text.empty() ? "" : " ") + item;
    }
    return text;
  }

  std::string name_;
  IssuerDescription desc_;
  std::optional<int64_t> installation_id_;
  std::optional<std::string> installation_owner_;  // lower-case login
  PermissionSet default_permissions_;
  PermissionPolicy policy_;
};

class GitHubAppIssuer final : public IssuerWithSpec<GitHubSpec> {
 public:
  GitHubAppIssuer(Options opts, HttpClient* http, const Clock* clock)
      : IssuerWithSpec(GitHubSpec(opts)),
        opts_(std::move(opts)),
        clock_(clock),
        jwt_(std::move(opts_.key), opts_.jwt_iss, clock),
        api_(opts_.api, http, &jwt_, clock, opts_.name),
        installations_(opts_.installation_cache_entries, opts_.installation_cache_ttl, clock,
                       FollowerWait()),
        installation_account_(1, opts_.installation_cache_ttl, clock, FollowerWait()),
        check_tokens_(kCheckTokenEntries, kCheckTokenTtl, clock, FollowerWait(),
                      [this](CheckToken t) { RevokeCheckToken(t, "evicted"); }),
        collaborators_(opts_.delegation_cache_entries, opts_.delegation_cache_ttl, clock,
                       FollowerWait()) {}

  // The broker's own check tokens die with the issuer (best effort, bounded).
  ~GitHubAppIssuer() override {
    const auto started = std::chrono::steady_clock::now();
    for (const CheckToken& t : check_tokens_.Drain()) {
      const auto spent = std::chrono::duration_cast<std::chrono::milliseconds>(
          std::chrono::steady_clock::now() - started);
      if (spent >= kShutdownRevokeBudget) {
        log::Get("issuer.github_app")
            ->warn("event=check_token_left issuer={} repository={} why=\"shutdown budget spent\"",
                   opts_.name, t.repository);
        continue;
      }
      RevokeCheckToken(t, "shutdown", std::min(kHelperRevokeBudget, kShutdownRevokeBudget - spent));
    }
  }

  Result<MintResult> Mint(const MintRequest& mr) override {
    JITBROKER_ASSIGN_OR_RETURN(ParsedRequest parsed, spec().Parse(mr.request));
    JITBROKER_ASSIGN_OR_RETURN(int64_t installation, Installation(parsed.repo));
    TokenRequest tr = TokenRequestFor(parsed.repo);
    tr.permissions = ToJson(parsed.permissions);
    auto created = api_.CreateInstallationToken(installation, tr);
    if (!created) {
      if (created.error().Reason() == "github_installation_not_found") {
        installations_.Erase(parsed.repo.key());  // uninstalled or reinstalled
      }
      return std::unexpected(created.error());
    }
    const std::string digest = crypto::Sha256(created->token.Reveal());
    RememberMint(digest);
    JITBROKER_RETURN_IF_ERROR(Verify(*created, parsed.repo, parsed.permissions,
                                     tr.repository_ids.empty() ? 0 : tr.repository_ids.front()));
    minted_.fetch_add(1, std::memory_order_relaxed);

    MintResult out;
    out.type = "github_installation_token";
    const TimePoint grant_end = mr.now + Seconds(std::max<int64_t>(1, mr.ttl_seconds));
    out.expires_at = std::min(grant_end, created->expires_at);
    if (created->expires_at > out.expires_at) {
      out.upstream_expires_at = created->expires_at;
    }
    out.fingerprint_sha256 = crypto::HexEncode(digest);
    const nlohmann::json& perms = created->permissions;
    out.fields = {{"permissions", perms},
                  {"repositories", nlohmann::json::array({parsed.repo.repo})},
                  {"owner", parsed.repo.owner},
                  {"repository_selection", created->repository_selection},
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
    if (!created->repositories.empty() && created->repositories.front().id > 0) {
      out.audit_fields["repository_id"] = created->repositories.front().id;
    }
    if (auto login = mr.principal_identities.find(opts_.identity_key);
        login != mr.principal_identities.end() && !login->second.empty()) {
      out.audit_fields["on_behalf_of_github_login"] = login->second;
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
    const std::string digest = crypto::Sha256(rr.revocation_handle.Reveal());
    JITBROKER_ASSIGN_OR_RETURN(RevokeAnswer answer,
                               api_.RevokeInstallationToken(rr.revocation_handle));
    if (answer == RevokeAnswer::kUnauthorized) {
      if (auto age = MintAge(digest); age && *age < kNewTokenGrace) {
        // Not "already revoked": GitHub does not know the token yet. The
        // service queues a durable retry.
        revoke_deferred_.fetch_add(1, std::memory_order_relaxed);
        const auto age_ms = std::chrono::duration_cast<std::chrono::milliseconds>(*age).count();
        log::Get("issuer.github_app")
            ->warn("event=revoke_deferred issuer={} grant_id={} token_age_ms={}", opts_.name,
                   rr.grant_id, age_ms);
        Error e =
            Unavailable("github_token_not_yet_active",
                        "GitHub does not accept the installation token yet (minted " +
                            std::to_string(age_ms / 1000) + " s ago); revocation must be retried");
        e.retryable = true;
        e.retry_after = std::chrono::seconds(2);
        return std::unexpected(std::move(e));
      }
    }
    ForgetMint(digest);
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
    // The human's GitHub login: their identities[<delegation.identity>].
    const std::string identity = "identities." + opts_.identity_key;
    const auto login_it = principal.identities.find(opts_.identity_key);
    const std::string login =
        login_it == principal.identities.end() ? std::string() : login_it->second;
    if (login.empty()) {
      if (opts_.require_github_login) {
        CountDelegation("denied");
        out.allowed = false;
        out.reason = "principal " + principal.id + " has no " + identity +
                     " (GitHub login); issuer " + opts_.name + " requires one";
        out.audit = {{"checked", false}, {"allowed", false}, {"why", "no " + identity}};
        return out;
      }
      CountDelegation("skipped");
      out.audit = {{"checked", false}, {"why", "principal has no " + identity}};
      return out;
    }
    JITBROKER_ASSIGN_OR_RETURN(ParsedRequest parsed, spec().Parse(req));
    const RepoRole required = spec().RequiredRole(parsed.permissions);
    const std::string key = parsed.repo.key() + "#" + text::AsciiLower(login);
    JITBROKER_ASSIGN_OR_RETURN(auto looked_up,
                               collaborators_.Get(key, [&]() -> Result<Collaborator> {
                                 return FetchCollaborator(parsed.repo, login);
                               }));
    const Collaborator& c = looked_up.value;
    const RepoRole held = RoleOf(c);
    out.allowed = held >= required;
    out.audit = {{"checked", true},
                 {"github_login", login},
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
      out.reason = "GitHub user " + login + " holds " + std::string(RepoRoleName(held)) + " on " +
                   parsed.repo.full() + "; the requested permissions need " +
                   std::string(RepoRoleName(required));
    }
    CountDelegation(out.allowed ? "allowed" : "denied");
    return out;
  }

  void CollectMetrics(std::vector<MetricFamily>& out) const override {
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
    out.push_back({"jitbroker_github_tokens_refused_total",
                   "counter",
                   "Minted tokens refused (not narrowed as asked, or an implausible expiry)",
                   {{issuer, static_cast<double>(refused_.load())}}});
    out.push_back({"jitbroker_github_revocations_deferred_total",
                   "counter",
                   "Revocations answered 401 within seconds of minting, left for a retry",
                   {{issuer, static_cast<double>(revoke_deferred_.load())}}});
    out.push_back({"jitbroker_github_installation_cache_total",
                   "counter",
                   "Installation id lookups by cache result",
                   {{issuer + ",result=\"hit\"", static_cast<double>(installations_.hits())},
                    {issuer + ",result=\"miss\"", static_cast<double>(installations_.misses())}}});
    out.push_back({"jitbroker_github_installation_cache_entries",
                   "gauge",
                   "Installation ids cached",
                   {{issuer, static_cast<double>(installations_.size())}}});
    MetricFamily checks{"jitbroker_github_delegation_checks_total",
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
  std::chrono::milliseconds FollowerWait() const { return 2 * opts_.api.call_deadline; }

  // The installation to mint under. With a configured installation_id, the
  // owner must be the installation's account (installation_owner, or the
  // account GitHub reports for the installation): GitHub resolves the
  // repository names it is sent within the installation, whatever owner the
  // grant named.
  Result<int64_t> Installation(const RepoRef& repo) {
    if (opts_.installation_id) {
      std::string account;
      if (opts_.installation_owner) {
        account = *opts_.installation_owner;
      } else {
        auto fetch = [&]() -> Result<std::string> {
          JITBROKER_ASSIGN_OR_RETURN(std::string login,
                                     api_.GetInstallationAccount(*opts_.installation_id));
          return text::AsciiLower(login);
        };
        JITBROKER_ASSIGN_OR_RETURN(auto looked_up, installation_account_.Get("account", fetch));
        account = looked_up.value;
      }
      if (text::AsciiLower(repo.owner) != account) {
        return std::unexpected(spec().OwnerMismatch(repo.owner, account));
      }
      return *opts_.installation_id;
    }
    JITBROKER_ASSIGN_OR_RETURN(auto looked_up,
                               installations_.Get(repo.key(), [&]() -> Result<int64_t> {
                                 return api_.GetRepoInstallation(repo.owner, repo.repo);
                               }));
    return looked_up.value;
  }

  TokenRequest TokenRequestFor(const RepoRef& repo) const {
    TokenRequest tr;
    if (auto it = opts_.repository_ids.find(repo.key()); it != opts_.repository_ids.end()) {
      tr.repository_ids.push_back(it->second);
    } else {
      tr.repositories.push_back(repo.repo);
    }
    return tr;
  }

  // GitHub can only narrow, but a broker that hands out what it did not ask
  // for would be wrong silently: the answer must say it covers exactly the
  // one repository asked for (by full name, or by id when minted by id) with
  // at most the permissions asked for, and expire within GitHub's hour.
  // Anything else is refused, and the token revoked.
  Status Verify(const CreatedToken& t, const RepoRef& repo, const PermissionSet& asked,
                int64_t repository_id) {
    std::string problem;
    if (t.repository_selection != "selected") {
      problem = t.repository_selection.empty()
                    ? "names no repository_selection"
                    : "has repository_selection \"" + t.repository_selection + "\"";
    } else if (!t.has_repositories) {
      problem = "names no repositories";
    } else if (!t.has_permissions) {
      problem = "names no permissions";
    } else if (t.repositories.size() != 1) {
      problem = "covers " + std::to_string(t.repositories.size()) + " repositories";
    } else if (repository_id != 0
                   ? t.repositories.front().id != repository_id
                   : text::AsciiLower(t.repositories.front().full_name) != repo.key()) {
      const TokenRepository& got = t.repositories.front();
      problem = "covers " +
                (got.full_name.empty() ? std::string("an unnamed repository") : got.full_name) +
                (got.id > 0 ? " (id " + std::to_string(got.id) + ")" : std::string());
    }
    for (auto it = t.permissions.begin(); it != t.permissions.end() && problem.empty(); ++it) {
      int got = -1;  // unreadable level
      if (it->is_string()) {
        if (std::optional<Level> l = ParseLevel(it->get<std::string>())) {
          got = static_cast<int>(*l);
        }
      }
      auto want = asked.find(it.key());
      if (want == asked.end()) {
        // GitHub adds metadata: read to every token.
        if (it.key() == "metadata" && got == static_cast<int>(Level::kRead)) {
          continue;
        }
        problem = "carries the unrequested permission " + it.key();
      } else if (got < 0 || got > static_cast<int>(want->second)) {
        problem = "carries more than the requested level of " + it.key();
      }
    }
    if (!problem.empty()) {
      const bool revoked = RevokeRefused(t.token, repo, problem);
      log::Get("issuer.github_app")
          ->error("event=token_not_narrowed issuer={} repository={} problem=\"{}\" revoked={}",
                  opts_.name, repo.full(), problem, revoked);
      Error e = Internal(
          "GitHub returned an installation token that is not limited to " + repo.full() +
              " and the requested permissions (it " + problem + "); the broker refused it" +
              (revoked ? " and revoked it" : ", and could not confirm its revocation"),
          "issuer=" + opts_.name);
      e.reason = "github_token_not_narrowed";
      return std::unexpected(std::move(e));
    }
    // expires_at, in GitHub's time: after now and within GitHub's hour.
    const int64_t now = ToUnixSeconds(clock_->Now()) + jwt_.clock_offset();
    const int64_t exp = ToUnixSeconds(t.expires_at);
    if (exp <= now || exp > now + kGitHubTokenLifetimeSeconds + kExpirySkewSeconds) {
      const std::string why =
          "expires_at " + FormatRfc3339(t.expires_at) + " is " +
          (exp <= now ? "not in the future"
                      : "more than an hour (plus " + std::to_string(kExpirySkewSeconds) +
                            " s of clock skew) ahead");
      // A token already past its expiry is dead upstream: a 401 says so.
      const bool revoked = RevokeRefused(t.token, repo, why, /*dead_on_401=*/exp <= now);
      log::Get("issuer.github_app")
          ->error("event=token_bad_expiry issuer={} repository={} problem=\"{}\" revoked={}",
                  opts_.name, repo.full(), why, revoked);
      return std::unexpected(
          Unavailable("github_bad_response",
                      "GitHub returned an installation token whose " + why + "; it was refused",
                      "issuer=" + opts_.name));
    }
    return OkStatus();
  }

  // Best-effort revocation of a token the broker refused right after minting
  // it: GitHub may answer 401 for a few seconds (docs/concepts.md "GitHub App tokens"), so a 401
  // is retried for a little while. Returns whether revocation was confirmed.
  bool RevokeRefused(const SecretValue& token, const RepoRef& repo, const std::string& why,
                     bool dead_on_401 = false) {
    refused_.fetch_add(1, std::memory_order_relaxed);
    const std::string digest = crypto::Sha256(token.Reveal());
    for (int attempt = 1; attempt <= 4; ++attempt) {
      auto answer = api_.RevokeInstallationToken(token, kHelperRevokeBudget);
      if (!answer) {
        log::Get("issuer.github_app")
            ->error(
                "event=refused_token_revoke_failed issuer={} repository={} why=\"{}\" "
                "error=\"{}\"",
                opts_.name, repo.full(), why, answer.error().ToString());
        return false;
      }
      if (*answer != RevokeAnswer::kUnauthorized || dead_on_401) {
        ForgetMint(digest);
        return true;
      }
      auto age = MintAge(digest);
      if (!age || *age >= kNewTokenGrace || attempt == 4) {
        // Expired or already revoked; or, for a new token, still unknown.
        log::Get("issuer.github_app")
            ->warn("event=refused_token_revoke_401 issuer={} repository={} attempts={}", opts_.name,
                   repo.full(), attempt);
        return !age || *age >= kNewTokenGrace;
      }
      Wait(std::chrono::seconds(attempt));
    }
    return false;
  }

  void RevokeCheckToken(const CheckToken& t, std::string_view why,
                        std::chrono::milliseconds budget = kHelperRevokeBudget) {
    if (!t.token || t.token->empty()) {
      return;
    }
    auto answer = api_.RevokeInstallationToken(*t.token, budget);
    if (!answer) {
      log::Get("issuer.github_app")
          ->warn("event=check_token_revoke_failed issuer={} repository={} why={} error=\"{}\"",
                 opts_.name, t.repository, why, answer.error().ToString());
      return;
    }
    ForgetMint(crypto::Sha256(t.token->Reveal()));
    log::Get("issuer.github_app")
        ->debug("event=check_token_revoked issuer={} repository={} why={} answer={}", opts_.name,
                t.repository, why, RevokeAnswerName(*answer));
  }

  void Wait(std::chrono::milliseconds d) const {
    if (opts_.sleep) {
      opts_.sleep(d);
    } else {
      std::this_thread::sleep_for(d);
    }
  }

  // Mint times of recent tokens, by SHA-256 (never the token).
  void RememberMint(const std::string& digest) {
    const TimePoint now = clock_->Now();
    std::lock_guard lock(mints_mu_);
    while (!mint_order_.empty() && (mint_order_.front().first + kMintMemory <= now ||
                                    mint_order_.size() >= kMaxRememberedMints)) {
      auto it = recent_mints_.find(mint_order_.front().second);
      if (it != recent_mints_.end() && it->second == mint_order_.front().first) {
        recent_mints_.erase(it);
      }
      mint_order_.pop_front();
    }
    recent_mints_[digest] = now;
    mint_order_.emplace_back(now, digest);
  }

  std::optional<TimePoint::duration> MintAge(const std::string& digest) const {
    const TimePoint now = clock_->Now();
    std::lock_guard lock(mints_mu_);
    auto it = recent_mints_.find(digest);
    if (it == recent_mints_.end() || it->second + kMintMemory <= now) {
      return std::nullopt;
    }
    return std::max(TimePoint::duration::zero(), now - it->second);
  }

  void ForgetMint(const std::string& digest) {
    std::lock_guard lock(mints_mu_);
    recent_mints_.erase(digest);
  }

  Result<Collaborator> FetchCollaborator(const RepoRef& repo, const std::string& login) {
    JITBROKER_ASSIGN_OR_RETURN(int64_t installation, Installation(repo));
    bool replaced = false;
    int waits = 0;
    for (;;) {
      JITBROKER_ASSIGN_OR_RETURN(auto token, CheckTokenFor(installation, repo));
      auto r = api_.GetCollaboratorPermission(*token.value.token, repo.owner, repo.repo, login);
      if (r) {
        Collaborator c;
        c.found = r->has_value();
        if (c.found) {
          c.permission = **r;
        }
        return c;
      }
      if (r.error().Reason() != "github_auth_failed") {
        return std::unexpected(r.error());
      }
      if (clock_->Now() - token.value.minted_at < kNewTokenGrace && waits < 4) {
        // A token minted seconds ago may not work yet (docs/concepts.md "GitHub App tokens"):
        // retry it with linear backoff, as octokit does.
        ++waits;
        Wait(std::chrono::seconds(waits));
        continue;
      }
      if (replaced) {
        return std::unexpected(r.error());
      }
      // The cached check token was revoked or expired: mint a fresh one.
      check_tokens_.Erase(CheckTokenKey(installation, repo));
      replaced = true;
      waits = 0;
    }
  }

  static std::string CheckTokenKey(int64_t installation, const RepoRef& repo) {
    return std::to_string(installation) + "#" + repo.key();
  }

  // The broker's own token for permission checks: metadata: read on the one
  // repository checked, cached per repository, revoked when evicted.
  Result<TtlCache<CheckToken>::Lookup> CheckTokenFor(int64_t installation, const RepoRef& repo) {
    return check_tokens_.Get(CheckTokenKey(installation, repo), [&]() -> Result<CheckToken> {
      TokenRequest tr = TokenRequestFor(repo);
      tr.permissions = {{"metadata", "read"}};
      JITBROKER_ASSIGN_OR_RETURN(CreatedToken t, api_.CreateInstallationToken(installation, tr));
      RememberMint(crypto::Sha256(t.token.Reveal()));
      JITBROKER_RETURN_IF_ERROR(Verify(t, repo, PermissionSet{{"metadata", Level::kRead}},
                                       tr.repository_ids.empty() ? 0 : tr.repository_ids.front()));
      return CheckToken{std::make_shared<const SecretValue>(std::move(t.token)), clock_->Now(),
                        repo.full()};
    });
  }

  void CountDelegation(const std::string& result) {
    std::lock_guard lock(delegation_mu_);
    ++delegation_counts_[result];
  }

  Options opts_;
  const Clock* clock_;
  AppJwt jwt_;
  GitHubApi api_;
  std::atomic<uint64_t> minted_{0};
  std::atomic<uint64_t> revoked_{0};
  std::atomic<uint64_t> refused_{0};
  std::atomic<uint64_t> revoke_deferred_{0};
  mutable std::mutex mints_mu_;
  std::map<std::string, TimePoint> recent_mints_;             // token SHA-256 -> mint time
  std::deque<std::pair<TimePoint, std::string>> mint_order_;  // oldest first
  mutable std::mutex delegation_mu_;
  std::map<std::string, uint64_t> delegation_counts_;
  // Caches last: their eviction callbacks use the members above, and they
  // are destroyed first.
  TtlCache<int64_t> installations_;
  TtlCache<std::string> installation_account_;
  TtlCache<CheckToken> check_tokens_;
  TtlCache<Collaborator> collaborators_;
};

// ---------------------------------------------------------------------------
// Config

// net::UrlPolicy::GitHubBaseUrl: https (http to a loopback host with
// allow_http), a path prefix, no userinfo, query, fragment or '@'.
Status CheckBaseUrl(ConfigView& s, const std::string& url, bool allow_http) {
  Result<net::Url> parsed = net::ParseUrl(url, net::UrlPolicy::GitHubBaseUrl(allow_http));
  if (!parsed) {
    return std::unexpected(
        s.Err("base_url",
              "must be an https:// URL such as https://api.github.com or https://HOST/api/v3 "
              "(http:// only with allow_http: true and a loopback host), without user:password@, "
              "query or fragment; this one " +
                  parsed.error().message));
  }
  return OkStatus();
}

// A mapping of permission name -> level, validated against the table.
Result<std::optional<PermissionSet>> ParsePermissionMap(ConfigView& parent, std::string_view key) {
  JITBROKER_ASSIGN_OR_RETURN(std::unique_ptr<ConfigView> sub, parent.OptView(key));
  if (!sub) {
    return std::optional<PermissionSet>();
  }
  PermissionSet out;
  JITBROKER_ASSIGN_OR_RETURN(std::vector<std::string> names, sub->Keys());
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
    ConfigView& parent) {
  std::map<std::string, std::array<std::optional<Tier>, kLevelCount>> out;
  JITBROKER_ASSIGN_OR_RETURN(std::unique_ptr<ConfigView> sub, parent.OptView("permission_tiers"));
  if (!sub) {
    return out;
  }
  JITBROKER_ASSIGN_OR_RETURN(std::vector<std::string> keys, sub->Keys());
  std::vector<std::pair<std::string, bool>> names;  // (name, is mapping)
  for (std::string& key : keys) {
    const bool is_map = sub->KindOf(key) == ConfigValueKind::kMapping;
    names.emplace_back(std::move(key), is_map);
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
      JITBROKER_ASSIGN_OR_RETURN(std::unique_ptr<ConfigView> levels, sub->OptView(name));
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

Result<std::map<std::string, int64_t>> ParseRepositoryIds(ConfigView& parent) {
  std::map<std::string, int64_t> out;
  JITBROKER_ASSIGN_OR_RETURN(std::unique_ptr<ConfigView> sub, parent.OptView("repository_ids"));
  if (!sub) {
    return out;
  }
  JITBROKER_ASSIGN_OR_RETURN(std::vector<std::string> names, sub->Keys());
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
    out[text::AsciiLower(name)] = *id;
  }
  JITBROKER_RETURN_IF_ERROR(sub->CheckNoUnknownKeys());
  return out;
}

Result<Options> ParseOptions(IssuerContext& ctx) {
  if (ctx.config == nullptr) {
    return std::unexpected(Internal("issuer " + ctx.name + " (github_app) has no config section"));
  }
  ConfigView& s = *ctx.config;
  Options o;
  o.name = ctx.name;

  JITBROKER_ASSIGN_OR_RETURN(auto client_id, s.OptString("client_id"));
  JITBROKER_ASSIGN_OR_RETURN(auto app_id,
                             s.OptInt("app_id", 1, std::numeric_limits<int64_t>::max()));
  if (client_id) {
    if (client_id->empty() || client_id->size() > 128 || !IsPrintableNoSpace(*client_id)) {
      return std::unexpected(s.Err("client_id", "must be the App's client ID, e.g. Iv23li…"));
    }
    o.jwt_iss = *client_id;  // recommended by GitHub (docs/concepts.md "GitHub App tokens")
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
  // git is served at the web host: github.com for api.github.com, the same
  // host for GitHub Enterprise Server's https://HOST/api/v3.
  JITBROKER_ASSIGN_OR_RETURN(auto git_url, s.OptString("git_url"));
  if (git_url) {
    o.git_url = *git_url;
    while (o.git_url.ends_with('/')) {
      o.git_url.pop_back();
    }
    Result<net::Url> parsed =
        net::ParseUrl(o.git_url, net::UrlPolicy::GitHubBaseUrl(allow_http.value_or(false)));
    if (!parsed) {
      return std::unexpected(
          s.Err("git_url",
                "must be an https:// URL such as https://github.com (http:// only with "
                "allow_http: true and a loopback host), without user:password@, query or "
                "fragment; this one " +
                    parsed.error().message));
    }
  } else if (o.api.base_url == "https://api.github.com") {
    o.git_url = "https://github.com";
  } else if (o.api.base_url.ends_with("/api/v3")) {
    o.git_url = o.api.base_url.substr(0, o.api.base_url.size() - 7);
  } else {
    o.git_url = o.api.base_url;
  }
  JITBROKER_ASSIGN_OR_RETURN(auto proxy_only, s.OptBool("proxy_only"));
  o.proxy_only = proxy_only.value_or(false);

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
  JITBROKER_ASSIGN_OR_RETURN(auto installation_owner, s.OptString("installation_owner"));
  if (installation_owner) {
    if (!installation_id) {
      return std::unexpected(
          s.Err("installation_owner", "is only meaningful with installation_id"));
    }
    if (!GitHubApi::IsValidOwner(*installation_owner)) {
      return std::unexpected(s.Err("installation_owner",
                                   "must be the login of the installation's account (the user "
                                   "or organization the App is installed on)"));
    }
    o.installation_owner = text::AsciiLower(*installation_owner);
  }
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
  JITBROKER_ASSIGN_OR_RETURN(auto call_deadline_ms, s.OptInt("call_deadline_ms", 100, 300000));
  o.api.timeout = std::chrono::milliseconds(timeout_ms.value_or(10000));
  o.api.connect_timeout = std::chrono::milliseconds(connect_ms.value_or(5000));
  o.api.max_attempts = static_cast<int>(attempts.value_or(3));
  o.api.max_retry_after = std::chrono::seconds(max_retry_after.value_or(10));
  o.api.call_deadline = std::chrono::milliseconds(call_deadline_ms.value_or(15000));
  JITBROKER_ASSIGN_OR_RETURN(auto token_format, s.OptString("token_format"));
  if (token_format) {
    if (*token_format != "stateless" && *token_format != "legacy") {
      return std::unexpected(s.Err("token_format", "must be stateless or legacy"));
    }
    o.api.token_format = *token_format;
  }

  JITBROKER_ASSIGN_OR_RETURN(auto ic, s.OptView("installation_cache"));
  if (ic) {
    JITBROKER_ASSIGN_OR_RETURN(auto entries, ic->OptInt("max_entries", 1, 1000000));
    JITBROKER_ASSIGN_OR_RETURN(auto ttl, ic->OptInt("ttl_seconds", 1, 86400));
    JITBROKER_RETURN_IF_ERROR(ic->CheckNoUnknownKeys());
    o.installation_cache_entries = static_cast<size_t>(entries.value_or(1024));
    o.installation_cache_ttl = std::chrono::seconds(ttl.value_or(600));
  }
  JITBROKER_ASSIGN_OR_RETURN(auto dg, s.OptView("delegation"));
  if (dg) {
    JITBROKER_ASSIGN_OR_RETURN(auto enabled, dg->OptBool("enabled"));
    JITBROKER_ASSIGN_OR_RETURN(auto require, dg->OptBool("require_github_login"));
    JITBROKER_ASSIGN_OR_RETURN(auto identity, dg->OptString("identity"));
    if (identity) {
      if (!IsIdentityKey(*identity)) {
        return std::unexpected(dg->Err(
            "identity", "must be an identity key: [a-z][a-z0-9_-]*, at most 64 characters"));
      }
      o.identity_key = *identity;
    }
    // A revoked collaborator keeps their rights in the broker at most this
    // long: capped at five minutes.
    JITBROKER_ASSIGN_OR_RETURN(auto ttl, dg->OptInt("cache_ttl_seconds", 1, 300));
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

Result<std::unique_ptr<IssuerSpec>> ValidateGitHubAppIssuer(IssuerContext& ctx) {
  JITBROKER_ASSIGN_OR_RETURN(Options o, ParseOptions(ctx));
  return std::unique_ptr<IssuerSpec>(std::make_unique<GitHubSpec>(o));
}

Result<std::unique_ptr<Issuer>> CreateGitHubAppIssuerForTesting(IssuerContext& ctx,
                                                                GitHubAppHooks hooks) {
  JITBROKER_ASSIGN_OR_RETURN(Options o, ParseOptions(ctx));
  if (ctx.http == nullptr || ctx.clock == nullptr) {
    return std::unexpected(Internal("issuer " + ctx.name +
                                    " (github_app) needs an HTTP client "
                                    "and a clock"));
  }
  o.api.sleep = hooks.sleep;
  o.sleep = std::move(hooks.sleep);
  return std::unique_ptr<Issuer>(new GitHubAppIssuer(std::move(o), ctx.http, ctx.clock));
}

Result<std::unique_ptr<Issuer>> CreateGitHubAppIssuer(IssuerContext& ctx) {
  return CreateGitHubAppIssuerForTesting(ctx, GitHubAppHooks{});
}

IssuerFactory Factory() { return IssuerFactory{&ValidateGitHubAppIssuer, &CreateGitHubAppIssuer}; }

}  // namespace jitbroker::issuers::github_app
