// The `github_app` issuer (DESIGN §6, reference/protocols.md §1): GitHub App
// installation tokens narrowed to one repository and the permissions a grant
// asks for.
//
//   mint:   App JWT (RS256, cached; app_jwt.h) -> installation id (config, or
//           GET /repos/{owner}/{repo}/installation through a bounded cache)
//           -> POST /app/installations/{id}/access_tokens with explicit
//           `repositories` (or `repository_ids`) and `permissions`.
//   revoke: DELETE /installation/token with the token itself (the service
//           keeps it sealed, AES-256-GCM with the grant id as AAD, until
//           revocation or expiry); 401/404 mean already revoked.
//   tier:   the request's permissions imply a tier (permissions.h; overridable
//           with `permission_tiers`).
//   rights: where the principal has a github_login, the human's own
//           collaborator permission on the repository must cover the request
//           (GET /repos/{owner}/{repo}/collaborators/{username}/permission,
//           cached briefly, audited in the grant).
//
// A grant's resource is github://OWNER/REPO (sub-resources such as
// …/pull/842 name the same repository); `scope` may hold only
// `permissions` ({name: read|write|admin}); absent, the issuer's
// `default_permissions` apply. Installation tokens live an hour upstream; a
// shorter grant TTL is enforced by revoking the token when the grant
// expires (MintResult::upstream_expires_at).
//
// Config (issuers.NAME), see docs/configuration.md: type: github_app;
// client_id or app_id; private_key: file:/env:; base_url; allow_http;
// api_version; user_agent; installation_id; repository_ids;
// default_permissions; max_permissions; permission_tiers;
// default_ttl_seconds; max_ttl_seconds; timeout_ms; connect_timeout_ms;
// max_attempts; max_retry_after_seconds; token_format; installation_cache
// {max_entries, ttl_seconds}; delegation {enabled, require_github_login,
// cache_ttl_seconds, max_entries}.
//
// Thread-safety: Mint, Revoke, ImpliedTier, CheckDelegatedRights and
// CollectMetrics are thread-safe.
#pragma once

#include <chrono>
#include <functional>
#include <memory>

#include "issuers/registry.h"

namespace jitbroker::issuers::github_app {

[[nodiscard]] Result<std::unique_ptr<Issuer>> CreateGitHubAppIssuer(IssuerContext& ctx);

// Test seams: how the issuer waits between retries.
struct GitHubAppHooks {
  std::function<void(std::chrono::milliseconds)> sleep;
};
[[nodiscard]] Result<std::unique_ptr<Issuer>> CreateGitHubAppIssuerForTesting(IssuerContext& ctx,
                                                                              GitHubAppHooks hooks);

}  // namespace jitbroker::issuers::github_app
