// GitHub App permissions for the github_app issuer: the vocabulary a grant's
// `scope.permissions` may use, the tier each (name, level) implies (docs/concepts.md "Decisions")
// and the repository role the delegating human needs to hold it themselves.
//
// Only repository permissions are granted (a grant's resource is one
// repository, github://OWNER/REPO); organization and user permissions are
// refused. Names and levels follow GitHub's REST schema for
// `POST /app/installations/{id}/access_tokens` (docs/concepts.md "GitHub App tokens").
//
// Thread-safety: PermissionPolicy is immutable after construction.
#pragma once

#include <array>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "jitbroker/policy.h"
#include "jitbroker/result.h"

namespace jitbroker::issuers::github_app {

enum class Level { kRead = 0, kWrite = 1, kAdmin = 2 };
inline constexpr int kLevelCount = 3;
std::string_view LevelName(Level level);  // "read", "write", "admin"
std::optional<Level> ParseLevel(std::string_view name);

// A person's role on a repository, ordered by power (GitHub's role_name; the
// legacy `permission` field maps maintain to write and triage to read).
enum class RepoRole { kNone = 0, kRead, kTriage, kWrite, kMaintain, kAdmin };
std::string_view RepoRoleName(RepoRole role);
std::optional<RepoRole> ParseRepoRole(std::string_view name);

// One known repository permission: levels GitHub accepts for it, and per
// level the default tier and the human role needed.
struct PermissionInfo {
  std::string_view name;
  std::array<bool, kLevelCount> levels;           // accepted: read, write, admin
  std::array<Tier, kLevelCount> tiers;            // default tier per level
  std::array<RepoRole, kLevelCount> human_roles;  // role the principal needs per level
};

// The built-in table (sorted by name).
const std::vector<PermissionInfo>& KnownPermissions();
const PermissionInfo* FindPermission(std::string_view name);

// A validated set: permission name -> level.
using PermissionSet = std::map<std::string, Level, std::less<>>;
nlohmann::json ToJson(const PermissionSet& set);  // {"contents": "read", …}

class PermissionPolicy {
 public:
  // Tier overrides by (name, level); ceiling: the most this issuer may ever
  // mint (absent = the table).
  PermissionPolicy(
      std::map<std::string, std::array<std::optional<Tier>, kLevelCount>> tier_overrides,
      std::optional<PermissionSet> ceiling);
  PermissionPolicy() : PermissionPolicy({}, std::nullopt) {}

  // Validates `scope.permissions` (a JSON object name -> "read"|"write"|"admin").
  // Errors: kInvalidArgument "invalid_scope" (shape), "unknown_permission",
  // "invalid_permission_level"; kPermissionDenied "permission_not_allowed"
  // (beyond the configured ceiling).
  [[nodiscard]] Result<PermissionSet> Parse(const nlohmann::json& permissions) const;

  // The highest tier any (name, level) of `set` implies (read for an empty set).
  Tier ImpliedTier(const PermissionSet& set) const;
  Tier TierFor(const PermissionInfo& info, Level level) const;
  // The highest repository role a human needs to hold all of `set` themselves.
  RepoRole RequiredRole(const PermissionSet& set) const;

 private:
  std::map<std::string, std::array<std::optional<Tier>, kLevelCount>> tier_overrides_;
  std::optional<PermissionSet> ceiling_;
};

}  // namespace jitbroker::issuers::github_app
