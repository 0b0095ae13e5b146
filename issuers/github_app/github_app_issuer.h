// The `github_app` issuer (docs/concepts.md "Issuers", "GitHub App tokens"): GitHub App
// installation tokens narrowed to one repository and the permissions a grant
// asks for.
//
//   mint:   App JWT (RS256, cached; app_jwt.h) -> installation id (config, or
//           GET /repos/{owner}/{repo}/installation through a bounded cache)
//           -> POST /app/installations/{id}/access_tokens with explicit
//           `repositories` (or `repository_ids`) and `permissions`. The
//           answer must show repository_selection "selected", exactly the
//           one repository asked for (full_name compared case-insensitively,
//           or id when minted by id), at most the permissions asked for, and
//           an expires_at within GitHub's hour; otherwise the token is
//           revoked and the mint fails. With a configured installation_id,
//           the grant's owner must be the installation's account
//           (`installation_owner`, else GET /app/installations/{id}, cached).
//   revoke: DELETE /installation/token with the token itself (the service
//           keeps it sealed, AES-256-GCM with the grant id as AAD, until
//           revocation or expiry); 401/404 mean already revoked, except a
//           401 within 10 s of this process minting the token (GitHub does
//           not know new tokens for a few seconds): a retryable error, which
//           the service queues.
//   tier:   the request's permissions imply a tier (permissions.h; overridable
//           with `permission_tiers`).
//   rights: where the principal has a GitHub login (identities.github, or
//           the key `delegation.identity` names), the human's own
//           collaborator permission on the repository must cover the request
//           (GET /repos/{owner}/{repo}/collaborators/{username}/permission,
//           cached briefly, audited in the grant), read with a metadata-read
//           token of the broker's own scoped to that repository (cached,
//           revoked when evicted and when the issuer is destroyed).
//
// A grant's resource is github://OWNER/REPO in lower case (GitHub resolves
// names case-insensitively, policy patterns do not; other spellings are
// refused with invalid_resource); sub-resources such as …/pull/842 name the
// same repository. `scope` may hold only `permissions` ({name:
// read|write|admin}); absent, the issuer's `default_permissions` apply.
// Installation tokens live an hour upstream; a shorter grant TTL is enforced
// by revoking the token when the grant expires
// (MintResult::upstream_expires_at). Every GitHub call has an overall
// deadline (`call_deadline_ms`) covering retries and waits.
//
// Config (issuers.NAME), see docs/configuration.md: type: github_app;
// client_id or app_id; private_key: file:/env:; base_url; allow_http;
// api_version; user_agent; installation_id; installation_owner;
// repository_ids; default_permissions; max_permissions; permission_tiers;
// default_ttl_seconds; max_ttl_seconds; timeout_ms; connect_timeout_ms;
// call_deadline_ms; max_attempts; max_retry_after_seconds; token_format;
// installation_cache {max_entries, ttl_seconds}; delegation {enabled,
// require_github_login, identity (default github), cache_ttl_seconds (at
// most 300), max_entries}.
//
// CI exchanges (IssuerSpec::NarrowScope): requested RFC 8693 scope tokens
// are "PERMISSION:LEVEL", each at most the level the trust policy's grant
// (or, when it names none, default_permissions) carries.
//
// Thread-safety: Mint, Revoke, ImpliedTier, ScopeItems ("contents:write", one per
// permission), CheckDelegatedRights and CollectMetrics are thread-safe.
#pragma once

#include <chrono>
#include <functional>
#include <memory>

#include "jitbroker/issuer.h"

namespace jitbroker::issuers::github_app {

// The `github_app` type for the IssuerRegistry.
IssuerFactory Factory();
// Validate: parses and checks the section, the App's private key included;
// no network, nothing written.
[[nodiscard]] Result<std::unique_ptr<IssuerSpec>> ValidateGitHubAppIssuer(IssuerContext& ctx);
// Create: as Validate; needs ctx.http and ctx.clock.
[[nodiscard]] Result<std::unique_ptr<Issuer>> CreateGitHubAppIssuer(IssuerContext& ctx);

// Test seams: how the issuer waits between retries (and before retrying a
// token GitHub does not accept yet).
struct GitHubAppHooks {
  std::function<void(std::chrono::milliseconds)> sleep;
};
[[nodiscard]] Result<std::unique_ptr<Issuer>> CreateGitHubAppIssuerForTesting(IssuerContext& ctx,
                                                                              GitHubAppHooks hooks);

}  // namespace jitbroker::issuers::github_app
