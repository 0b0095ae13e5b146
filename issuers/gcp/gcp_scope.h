// The resource and scope of a `gcp` grant (docs/gcp.md, "Resources and
// scopes"), and what they imply: the tier, the scope items and the
// Credential Access Boundary that narrows the token to Cloud Storage objects.
//
//   resource: gcp://PROJECT/serviceAccounts/EMAIL
//   scope:    {"scopes": [OAuth scope URL, ...],
//              "storage": [{"bucket": B, "prefix": P?, "role": "objectViewer|
//                           objectCreator|objectAdmin"}, ...]?}
//
// Errors: kInvalidArgument "invalid_scope" / "invalid_resource" for a
// malformed request; kPermissionDenied "scope_not_allowed" for an OAuth scope
// outside the issuer's allowed_scopes, "project_not_allowed" for a project
// outside its projects.
//
// Thread-safety: pure functions.
#pragma once

#include <set>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "jitbroker/policy.h"
#include "jitbroker/result.h"

namespace jitbroker::issuers::gcp {

inline constexpr std::string_view kCloudPlatformScope =
    "https://www.googleapis.com/auth/cloud-platform";
inline constexpr size_t kMaxBoundaryRules = 10;  // Google's limit per boundary

struct GcpResource {
  std::string project;
  std::string service_account;  // NAME@PROJECT.iam.gserviceaccount.com (or another project's)
};

struct StorageRule {
  std::string bucket;
  std::string prefix;  // "" = the whole bucket
  std::string role;    // objectViewer, objectCreator, objectAdmin
};

struct GcpScope {
  std::vector<std::string> scopes;   // OAuth scopes, as asked (distinct)
  std::vector<StorageRule> storage;  // empty = no boundary
};

// gcp://PROJECT/serviceAccounts/EMAIL; the project must be in `projects`.
// Without `projects`, the shape only (what jitctl checks before asking).
[[nodiscard]] Result<GcpResource> ParseGcpResource(std::string_view resource,
                                                   const std::set<std::string>& projects);
[[nodiscard]] Result<GcpResource> ParseGcpResource(std::string_view resource);

// The scope object; every OAuth scope must be in `allowed_scopes`. Without
// `allowed_scopes`, the shape only.
[[nodiscard]] Result<GcpScope> ParseGcpScope(const nlohmann::json& scope,
                                             const std::set<std::string>& allowed_scopes);
[[nodiscard]] Result<GcpScope> ParseGcpScope(const nlohmann::json& scope);

// The tier the token's powers imply: read-only scopes → read; a boundary of
// objectViewer rules → read, with objectCreator/objectAdmin → write; any
// other scope without a boundary (cloud-platform, a read_write scope) →
// `unbounded_tier`: it carries the service account's own permissions.
Tier GcpScopeTier(const GcpScope& scope, Tier unbounded_tier);

// The scope items: each OAuth scope, and "gcs:BUCKET:ROLE" per storage rule
// (so task scopes bound buckets, e.g. "gcs:acme-artifacts:*").
std::vector<std::string> GcpScopeItems(const GcpScope& scope);

// STS `options` for the boundary (the JSON text of {"accessBoundary": …}).
std::string AccessBoundaryOptions(const std::vector<StorageRule>& rules);

// Whether an OAuth scope only reads (…read_only, …readonly, or "openid",
// "email", "profile" style identity scopes).
bool IsReadOnlyScope(std::string_view scope);

}  // namespace jitbroker::issuers::gcp
