#include "issuers/gcp/gcp_scope.h"

#include <algorithm>

namespace jitbroker::issuers::gcp {

namespace {

Error BadScope(const std::string& what) { return InvalidArgument("invalid_scope", what); }

bool IsProjectId(std::string_view p) {
  // Project ids: 6-30 of [a-z0-9-], starting with a letter (domain-scoped
  // ids "example.com:proj" are accepted too).
  if (p.empty() || p.size() > 63) {
    return false;
  }
  return std::all_of(p.begin(), p.end(), [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' || c == '.' || c == ':';
  });
}

bool IsServiceAccountEmail(std::string_view e) {
  const size_t at = e.find('@');
  if (at == std::string_view::npos || at == 0 || at + 1 >= e.size() || e.size() > 254 ||
      e.find('@', at + 1) != std::string_view::npos) {
    return false;
  }
  return std::all_of(e.begin(), e.end(), [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' || c == '.' || c == '@' ||
           c == '_';
  });
}

bool IsBucketName(std::string_view b) {
  return b.size() >= 3 && b.size() <= 222 && std::all_of(b.begin(), b.end(), [](char c) {
           return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' || c == '_' ||
                  c == '.';
         });
}

// An object prefix: printable ASCII without quotes or backslashes (it goes
// into a CEL string literal), no "." or ".." segments.
bool IsObjectPrefix(std::string_view p) {
  if (p.size() > 1024 || p.starts_with('/')) {
    return false;
  }
  if (!std::all_of(p.begin(), p.end(), [](char c) {
        return c > 0x20 && c < 0x7f && c != '\'' && c != '"' && c != '\\';
      })) {
    return false;
  }
  size_t start = 0;
  while (start <= p.size()) {
    const size_t end = std::min(p.find('/', start), p.size());
    const std::string_view seg = p.substr(start, end - start);
    if (seg == "." || seg == "..") {
      return false;
    }
    start = end + 1;
  }
  return true;
}

bool IsStorageRole(std::string_view r) {
  return r == "objectViewer" || r == "objectCreator" || r == "objectAdmin";
}

}  // namespace

bool IsReadOnlyScope(std::string_view s) {
  return s.ends_with(".read_only") || s.ends_with(".readonly") || s == "openid" || s == "email" ||
         s == "profile" || s.ends_with("/auth/userinfo.email");
}

Result<GcpResource> ParseGcpResource(std::string_view resource) {
  constexpr std::string_view kPrefix = "gcp://";
  constexpr std::string_view kMiddle = "/serviceAccounts/";
  auto bad = [&] {
    return std::unexpected(InvalidArgument(
        "invalid_resource", "a gcp resource is gcp://PROJECT/serviceAccounts/EMAIL"));
  };
  if (!resource.starts_with(kPrefix)) {
    return bad();
  }
  const std::string_view rest = resource.substr(kPrefix.size());
  const size_t mid = rest.find(kMiddle);
  if (mid == std::string_view::npos) {
    return bad();
  }
  GcpResource out{std::string(rest.substr(0, mid)), std::string(rest.substr(mid + kMiddle.size()))};
  if (!IsProjectId(out.project) || !IsServiceAccountEmail(out.service_account)) {
    return bad();
  }
  return out;
}

Result<GcpResource> ParseGcpResource(std::string_view resource,
                                     const std::set<std::string>& projects) {
  JITBROKER_ASSIGN_OR_RETURN(GcpResource out, ParseGcpResource(resource));
  if (!projects.contains(out.project)) {
    return std::unexpected(PermissionDenied(
        "project_not_allowed", "project " + out.project + " is not among the issuer's projects"));
  }
  return out;
}

namespace {

// `allowed_scopes` null: the shape only.
Result<GcpScope> ParseScope(const nlohmann::json& scope,
                            const std::set<std::string>* allowed_scopes) {
  if (!scope.is_object()) {
    return std::unexpected(BadScope("a gcp scope is an object {\"scopes\": [...]}"));
  }
  for (const auto& [key, value] : scope.items()) {
    if (key != "scopes" && key != "storage") {
      return std::unexpected(
          BadScope("unknown gcp scope key \"" + key.substr(0, 64) + "\" (scopes, storage)"));
    }
  }
  GcpScope out;
  const auto scopes = scope.find("scopes");
  if (scopes == scope.end() || !scopes->is_array() || scopes->empty() || scopes->size() > 32) {
    return std::unexpected(BadScope("\"scopes\" must be a list of 1-32 OAuth scopes"));
  }
  for (const auto& s : *scopes) {
    if (!s.is_string() || s.get_ref<const std::string&>().empty() ||
        s.get_ref<const std::string&>().size() > 256) {
      return std::unexpected(BadScope("each of \"scopes\" must be an OAuth scope URL"));
    }
    const std::string& v = s.get_ref<const std::string&>();
    if (allowed_scopes != nullptr && !allowed_scopes->contains(v)) {
      return std::unexpected(PermissionDenied(
          "scope_not_allowed", "OAuth scope " + v + " is not among the issuer's allowed_scopes"));
    }
    if (std::find(out.scopes.begin(), out.scopes.end(), v) == out.scopes.end()) {
      out.scopes.push_back(v);
    }
  }
  if (const auto storage = scope.find("storage"); storage != scope.end()) {
    if (!storage->is_array() || storage->empty() || storage->size() > kMaxBoundaryRules) {
      return std::unexpected(BadScope("\"storage\" must be a list of 1-10 rules"));
    }
    for (const auto& r : *storage) {
      if (!r.is_object()) {
        return std::unexpected(BadScope("a storage rule is {bucket, prefix?, role}"));
      }
      for (const auto& [key, value] : r.items()) {
        if ((key != "bucket" && key != "prefix" && key != "role") || !value.is_string()) {
          return std::unexpected(
              BadScope("a storage rule has string keys bucket, prefix and role only"));
        }
      }
      StorageRule rule;
      rule.bucket = r.value("bucket", "");
      rule.prefix = r.value("prefix", "");
      rule.role = r.value("role", "");
      if (!IsBucketName(rule.bucket)) {
        return std::unexpected(BadScope("storage bucket must be a Cloud Storage bucket name"));
      }
      if (!IsObjectPrefix(rule.prefix)) {
        return std::unexpected(BadScope(
            "storage prefix must be printable, without quotes, backslashes, . or .. segments"));
      }
      if (!IsStorageRole(rule.role)) {
        return std::unexpected(
            BadScope("storage role must be objectViewer, objectCreator or objectAdmin"));
      }
      out.storage.push_back(std::move(rule));
    }
    // A boundary narrows what the token can reach; it reaches storage only
    // through a scope that covers Cloud Storage.
    const bool covers_storage = std::any_of(out.scopes.begin(), out.scopes.end(), [](auto& s) {
      return s == kCloudPlatformScope || s.find("/auth/devstorage.") != std::string::npos;
    });
    if (!covers_storage) {
      return std::unexpected(BadScope(
          "\"storage\" needs a scope that reaches Cloud Storage (cloud-platform or devstorage.*)"));
    }
  }
  return out;
}

}  // namespace

Result<GcpScope> ParseGcpScope(const nlohmann::json& scope,
                               const std::set<std::string>& allowed_scopes) {
  return ParseScope(scope, &allowed_scopes);
}

Result<GcpScope> ParseGcpScope(const nlohmann::json& scope) { return ParseScope(scope, nullptr); }

Tier GcpScopeTier(const GcpScope& scope, Tier unbounded_tier) {
  if (!scope.storage.empty()) {
    const bool writes = std::any_of(scope.storage.begin(), scope.storage.end(),
                                    [](const StorageRule& r) { return r.role != "objectViewer"; });
    const bool read_only_scopes =
        std::all_of(scope.scopes.begin(), scope.scopes.end(), IsReadOnlyScope);
    // A boundary applies to Cloud Storage only; another read-only scope
    // alongside it reads; any other scope keeps its own weight.
    const bool other_broad = std::any_of(scope.scopes.begin(), scope.scopes.end(), [](auto& s) {
      return s != kCloudPlatformScope && s.find("/auth/devstorage.") == std::string::npos &&
             !IsReadOnlyScope(s);
    });
    if (other_broad) {
      return unbounded_tier;
    }
    return writes && !read_only_scopes ? Tier::kWrite : Tier::kRead;
  }
  if (std::all_of(scope.scopes.begin(), scope.scopes.end(), IsReadOnlyScope)) {
    return Tier::kRead;
  }
  return unbounded_tier;
}

std::vector<std::string> GcpScopeItems(const GcpScope& scope) {
  std::vector<std::string> out = scope.scopes;
  for (const StorageRule& r : scope.storage) {
    std::string item = "gcs:" + r.bucket + ":" + r.role;
    if (std::find(out.begin(), out.end(), item) == out.end()) {
      out.push_back(std::move(item));
    }
  }
  return out;
}

std::string AccessBoundaryOptions(const std::vector<StorageRule>& rules) {
  nlohmann::json list = nlohmann::json::array();
  for (const StorageRule& r : rules) {
    nlohmann::json rule = {
        {"availableResource", "//storage.googleapis.com/projects/_/buckets/" + r.bucket},
        {"availablePermissions", {"inRole:roles/storage." + r.role}}};
    if (!r.prefix.empty()) {
      // Objects under the prefix (the prefix as a directory when it ends
      // with '/', else any object name starting with it).
      rule["availabilityCondition"] = {
          {"expression", "resource.name.startsWith('projects/_/buckets/" + r.bucket + "/objects/" +
                             r.prefix + "')"}};
    }
    list.push_back(std::move(rule));
  }
  return nlohmann::json{{"accessBoundary", {{"accessBoundaryRules", list}}}}.dump();
}

}  // namespace jitbroker::issuers::gcp
