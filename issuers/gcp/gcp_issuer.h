// The `gcp` issuer (docs/gcp.md): short-lived Google access tokens for a
// service account, optionally narrowed by a Credential Access Boundary to
// Cloud Storage buckets and object prefixes.
//
//   mint:   generateAccessToken (google_api.h) for the resource's service
//           account with the scope's OAuth scopes and lifetime = the grant
//           TTL (at most max_ttl_seconds), called with the broker's own
//           token (broker_identity.h); with `storage` rules, the token is
//           then exchanged at Google STS for one limited by the boundary
//           (gcp_scope.h). Projects outside `projects` and OAuth scopes
//           outside `allowed_scopes` are refused before any call. Nothing
//           minted is cached.
//   revoke: expiry_only: Google cannot revoke a service-account token; the
//           outcome says how long it still lives (docs/gcp.md, "Revocation").
//   tier:   from what the token can do (gcp_scope.h GcpScopeTier).
//
// The credential: {type: gcp, access_token (secret), expires_at,
// service_account, scopes}.
//
// Config (issuers.NAME), see docs/configuration.md: type: gcp; identity
// {workload_identity {audience, service_account, private_key, issuer,
// subject} | metadata {} | key_file: file:PATH}; projects; allowed_scopes;
// max_ttl_seconds; default_ttl_seconds; unbounded_tier; endpoints
// {iamcredentials, sts, oauth2, metadata}; allow_http; timeout_ms;
// connect_timeout_ms; call_deadline_ms; max_attempts.
//
// CI exchanges (IssuerSpec::NarrowScope): requested RFC 8693 scope tokens
// are OAuth scopes of the trust policy's grant.
//
// Thread-safety: Mint, Revoke, ImpliedTier, ScopeItems and CollectMetrics
// are thread-safe.
#pragma once

#include <chrono>
#include <functional>
#include <memory>

#include "jitbroker/issuer.h"

namespace jitbroker::issuers::gcp {

// The `gcp` type for the IssuerRegistry.
IssuerFactory Factory();
// Validate: parses and checks the section, the key read and parsed; no
// network, nothing written.
[[nodiscard]] Result<std::unique_ptr<IssuerSpec>> ValidateGcpIssuer(IssuerContext& ctx);
// Create: as Validate; needs ctx.http and ctx.clock.
[[nodiscard]] Result<std::unique_ptr<Issuer>> CreateGcpIssuer(IssuerContext& ctx);

// Test seam: how the issuer waits between retries.
struct GcpHooks {
  std::function<void(std::chrono::milliseconds)> sleep;
};
[[nodiscard]] Result<std::unique_ptr<Issuer>> CreateGcpIssuerForTesting(IssuerContext& ctx,
                                                                        GcpHooks hooks);

}  // namespace jitbroker::issuers::gcp
