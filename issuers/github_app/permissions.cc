#include "issuers/github_app/permissions.h"

#include <algorithm>

namespace jitbroker::issuers::github_app {

namespace {

constexpr Tier R = Tier::kRead;
constexpr Tier W = Tier::kWrite;
constexpr Tier P = Tier::kPr;
constexpr Tier M = Tier::kMergeDeploy;
constexpr Tier S = Tier::kSecret;
constexpr Tier D = Tier::kDestructive;

constexpr RepoRole kRd = RepoRole::kRead;
constexpr RepoRole kTr = RepoRole::kTriage;
constexpr RepoRole kWr = RepoRole::kWrite;
constexpr RepoRole kMt = RepoRole::kMaintain;
constexpr RepoRole kAd = RepoRole::kAdmin;

constexpr std::array<bool, kLevelCount> kRW = {true, true, false};
constexpr std::array<bool, kLevelCount> kRWA = {true, true, true};
constexpr std::array<bool, kLevelCount> kWOnly = {false, true, false};

// Repository permissions from GitHub's REST schema (docs/concepts.md "GitHub App tokens"). The
// tiers follow docs/concepts.md "Decisions": reads are read; ordinary writes are write; pull
// requests are pr; what ships or deploys (actions, deployments, pages,
// packages, merge queues, environments, hooks) is merge_deploy; what reveals
// or can exfiltrate secrets (secrets, Dependabot secrets, secret-scanning
// alerts, workflow files that run with the repository's secrets, codespaces
// that start with the repository's Codespaces secrets) is secret, and so is
// writing code-scanning and Dependabot alerts (security_events,
// vulnerability_alerts: dismissing them hides known vulnerabilities);
// repository administration writes are destructive. Every tier can be
// overridden in config (permission_tiers).
//
// The human roles follow GitHub's repository roles: secret-scanning alerts
// are visible to admins only, code-scanning and Dependabot alerts to write
// and above (reading them needs write too), publishing Pages settings needs
// maintain.
const std::vector<PermissionInfo>& Table() {
  static const std::vector<PermissionInfo> table = [] {
    std::vector<PermissionInfo> t = {
        {"actions", kRW, {R, M, M}, {kRd, kWr, kWr}},
        {"administration", kRW, {R, D, D}, {kAd, kAd, kAd}},
        {"artifact_metadata", kRW, {R, W, W}, {kRd, kWr, kWr}},
        {"attestations", kRW, {R, W, W}, {kRd, kWr, kWr}},
        {"checks", kRW, {R, W, W}, {kRd, kWr, kWr}},
        {"codespaces", kRW, {R, S, S}, {kRd, kWr, kWr}},
        {"contents", kRW, {R, W, W}, {kRd, kWr, kWr}},
        {"dependabot_secrets", kRW, {S, S, S}, {kAd, kAd, kAd}},
        {"deployments", kRW, {R, M, M}, {kRd, kWr, kWr}},
        {"discussions", kRW, {R, W, W}, {kRd, kTr, kTr}},
        {"environments", kRW, {R, M, M}, {kRd, kAd, kAd}},
        {"issues", kRW, {R, W, W}, {kRd, kTr, kTr}},
        {"merge_queues", kRW, {R, M, M}, {kRd, kMt, kMt}},
        {"metadata", kRW, {R, W, W}, {kRd, kWr, kWr}},
        {"packages", kRW, {R, M, M}, {kRd, kWr, kWr}},
        {"pages", kRW, {R, M, M}, {kRd, kMt, kMt}},
        {"pull_requests", kRW, {R, P, P}, {kRd, kTr, kTr}},
        {"repository_custom_properties", kRW, {R, W, W}, {kRd, kAd, kAd}},
        {"repository_hooks", kRW, {R, M, M}, {kAd, kAd, kAd}},
        {"repository_projects", kRWA, {R, W, M}, {kRd, kWr, kAd}},
        {"secret_scanning_alerts", kRW, {S, S, S}, {kAd, kAd, kAd}},
        {"secrets", kRW, {S, S, S}, {kAd, kAd, kAd}},
        {"security_events", kRW, {R, S, S}, {kWr, kWr, kWr}},
        {"single_file", kRW, {R, W, W}, {kRd, kWr, kWr}},
        {"statuses", kRW, {R, W, W}, {kRd, kWr, kWr}},
        {"vulnerability_alerts", kRW, {R, S, S}, {kWr, kWr, kWr}},
        {"workflows", kWOnly, {S, S, S}, {kWr, kWr, kWr}},
    };
    std::sort(t.begin(), t.end(),
              [](const PermissionInfo& a, const PermissionInfo& b) { return a.name < b.name; });
    return t;
  }();
  return table;
}

// Organization and user permissions GitHub knows: refused with a precise
// message rather than "unknown".
bool IsNonRepositoryPermission(std::string_view name) {
  static constexpr std::string_view kNames[] = {"custom_properties_for_organizations",
                                                "members",
                                                "organization_administration",
                                                "organization_custom_roles",
                                                "organization_custom_org_roles",
                                                "organization_copilot_agent_settings",
                                                "organization_announcement_banners",
                                                "organization_hooks",
                                                "organization_personal_access_tokens",
                                                "organization_personal_access_token_requests",
                                                "organization_packages",
                                                "organization_secrets",
                                                "organization_self_hosted_runners",
                                                "organization_user_blocking",
                                                "email_addresses",
                                                "followers",
                                                "git_ssh_keys",
                                                "gpg_keys",
                                                "interaction_limits",
                                                "starring",
                                                "organization_projects",
                                                "organization_custom_properties",
                                                "enterprise_custom_properties_for_organizations",
                                                "profile",
                                                "organization_copilot_seat_management",
                                                "organization_events",
                                                "organization_plan"};
  return std::find(std::begin(kNames), std::end(kNames), name) != std::end(kNames);
}

}  // namespace

std::string_view LevelName(Level level) {
  switch (level) {
    case Level::kRead:
      return "read";
    case Level::kWrite:
      return "write";
    case Level::kAdmin:
      return "admin";
  }
  return "read";
}

std::optional<Level> ParseLevel(std::string_view name) {
  if (name == "read") {
    return Level::kRead;
  }
  if (name == "write") {
    return Level::kWrite;
  }
  if (name == "admin") {
    return Level::kAdmin;
  }
  return std::nullopt;
}

std::string_view RepoRoleName(RepoRole role) {
  switch (role) {
    case RepoRole::kNone:
      return "none";
    case RepoRole::kRead:
      return "read";
    case RepoRole::kTriage:
      return "triage";
    case RepoRole::kWrite:
      return "write";
    case RepoRole::kMaintain:
      return "maintain";
    case RepoRole::kAdmin:
      return "admin";
  }
  return "none";
}

std::optional<RepoRole> ParseRepoRole(std::string_view name) {
  for (RepoRole r : {RepoRole::kNone, RepoRole::kRead, RepoRole::kTriage, RepoRole::kWrite,
                     RepoRole::kMaintain, RepoRole::kAdmin}) {
    if (RepoRoleName(r) == name) {
      return r;
    }
  }
  // GitHub's role_name for the read role is "read"; older payloads say "pull"/"push".
  if (name == "pull") {
    return RepoRole::kRead;
  }
  if (name == "push") {
    return RepoRole::kWrite;
  }
  return std::nullopt;
}

const std::vector<PermissionInfo>& KnownPermissions() { return Table(); }

const PermissionInfo* FindPermission(std::string_view name) {
  const auto& t = Table();
  auto it =
      std::lower_bound(t.begin(), t.end(), name,
                       [](const PermissionInfo& a, std::string_view n) { return a.name < n; });
  return it != t.end() && it->name == name ? &*it : nullptr;
}

nlohmann::json ToJson(const PermissionSet& set) {
  nlohmann::json j = nlohmann::json::object();
  for (const auto& [name, level] : set) {
    j[name] = std::string(LevelName(level));
  }
  return j;
}

PermissionPolicy::PermissionPolicy(
    std::map<std::string, std::array<std::optional<Tier>, kLevelCount>> tier_overrides,
    std::optional<PermissionSet> ceiling)
    : tier_overrides_(std::move(tier_overrides)), ceiling_(std::move(ceiling)) {}

Result<PermissionSet> PermissionPolicy::Parse(const nlohmann::json& permissions) const {
  if (!permissions.is_object()) {
    return std::unexpected(InvalidArgument(
        "invalid_scope", "scope.permissions must be an object of permission name to level"));
  }
  if (permissions.empty()) {
    return std::unexpected(
        InvalidArgument("invalid_scope", "scope.permissions must name at least one permission"));
  }
  PermissionSet out;
  for (auto it = permissions.begin(); it != permissions.end(); ++it) {
    const std::string& name = it.key();
    const PermissionInfo* info = FindPermission(name);
    if (info == nullptr) {
      if (IsNonRepositoryPermission(name)) {
        return std::unexpected(InvalidArgument(
            "unknown_permission", "scope.permissions." + name +
                                      " is an organization or user permission; grants name one "
                                      "repository and carry repository permissions only"));
      }
      return std::unexpected(
          InvalidArgument("unknown_permission",
                          "scope.permissions." + name + " is not a known repository permission"));
    }
    if (!it->is_string()) {
      return std::unexpected(InvalidArgument(
          "invalid_permission_level", "scope.permissions." + name + " must be a string level"));
    }
    std::optional<Level> level = ParseLevel(it->get<std::string>());
    if (!level || !info->levels[static_cast<int>(*level)]) {
      std::string accepted;
      for (int l = 0; l < kLevelCount; ++l) {
        if (info->levels[l]) {
          accepted += accepted.empty() ? "" : "|";
          accepted += LevelName(static_cast<Level>(l));
        }
      }
      return std::unexpected(InvalidArgument("invalid_permission_level",
                                             "scope.permissions." + name + " must be " + accepted));
    }
    if (ceiling_) {
      auto c = ceiling_->find(name);
      if (c == ceiling_->end() || static_cast<int>(*level) > static_cast<int>(c->second)) {
        return std::unexpected(PermissionDenied(
            "permission_not_allowed", "scope.permissions." + name + ": " +
                                          std::string(LevelName(*level)) +
                                          " exceeds what this issuer may mint (max_permissions)"));
      }
    }
    out.emplace(name, *level);
  }
  return out;
}

Tier PermissionPolicy::TierFor(const PermissionInfo& info, Level level) const {
  const int l = static_cast<int>(level);
  if (auto it = tier_overrides_.find(std::string(info.name));
      it != tier_overrides_.end() && it->second[l]) {
    return *it->second[l];
  }
  return info.tiers[l];
}

Tier PermissionPolicy::ImpliedTier(const PermissionSet& set) const {
  Tier out = Tier::kRead;
  for (const auto& [name, level] : set) {
    if (const PermissionInfo* info = FindPermission(name); info != nullptr) {
      out = std::max(out, TierFor(*info, level));
    }
  }
  return out;
}

RepoRole PermissionPolicy::RequiredRole(const PermissionSet& set) const {
  RepoRole out = RepoRole::kRead;
  for (const auto& [name, level] : set) {
    if (const PermissionInfo* info = FindPermission(name); info != nullptr) {
      out = std::max(out, info->human_roles[static_cast<int>(level)]);
    }
  }
  return out;
}

}  // namespace jitbroker::issuers::github_app
