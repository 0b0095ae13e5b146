// The `aws_sts` issuer (docs/aws.md): AWS credentials for one role, narrowed
// by an inline session policy to the actions and ARNs a grant asks for,
// attributable in CloudTrail to the grant.
//
//   mint:   one STS AssumeRole (aws_api.h; SigV4 with the broker's base
//           credentials) for arn:PARTITION:iam::ACCOUNT:role/PATH/NAME with
//           RoleSessionName jb-<grant id>, SourceIdentity <grant id>, the
//           session policy built from the scope (aws_scope.h), session tags
//           jb-session (transitive), jb-principal, jb-agent, jb-task, and
//           DurationSeconds = the grant TTL within [900, max_session_seconds].
//           Roles outside `accounts` are refused before any call.
//   revoke: `revoke: deny_policy` (default): the grant id is added to the
//           role's jitbroker-revocations inline policy, which denies every
//           action to sessions with that SourceIdentity (deny_policy.h,
//           revocation_writer.h); the outcome is deny_installed with IAM's
//           propagation as the residual. `revoke: expiry_only`: nothing is
//           written; the outcome says how long the credential lives
//           (docs/aws.md, "Revocation").
//   tier:   the highest tier of the requested actions (aws_scope.h).
//
// A grant's resource is aws://ACCOUNT/role/[PATH/]NAME; its scope is
// {"actions": [...], "resources": [...], "conditions": {...}?}, both lists
// required: a credential never carries the role's full rights. The
// credential is {type: aws_credentials, access_key_id, secret_access_key,
// session_token, expiration, region, assumed_role_arn}.
//
// Config (issuers.NAME), see docs/configuration.md: type: aws_sts; region;
// partition; credentials {access_key_id, secret_access_key, session_token}
// (each env:/file:) or {web_identity_token_file, role_arn} (base_identity.h); accounts; endpoint;
// allow_http; max_ttl_seconds; default_ttl_seconds; max_session_seconds; external_id; revoke;
// timeout_ms; connect_timeout_ms; call_deadline_ms; max_attempts; iam_endpoint;
// deny_propagation_seconds; max_policy_chars.
//
// CI exchanges (IssuerSpec::NarrowScope): requested RFC 8693 scope tokens
// are actions of the trust policy's grant; the narrowed grant carries those.
//
// Thread-safety: Mint, Revoke, ImpliedTier, ScopeItems and CollectMetrics
// are thread-safe.
#pragma once

#include <chrono>
#include <functional>
#include <memory>

#include "jitbroker/issuer.h"

namespace jitbroker::issuers::aws_sts {

// The `aws_sts` type for the IssuerRegistry.
IssuerFactory Factory();
// Validate: parses and checks the section, the credentials resolved; no
// network, nothing written.
[[nodiscard]] Result<std::unique_ptr<IssuerSpec>> ValidateAwsStsIssuer(IssuerContext& ctx);
// Create: as Validate; needs ctx.http and ctx.clock.
[[nodiscard]] Result<std::unique_ptr<Issuer>> CreateAwsStsIssuer(IssuerContext& ctx);

// Test seam: how the issuer waits between retries.
struct AwsStsHooks {
  std::function<void(std::chrono::milliseconds)> sleep;
};
[[nodiscard]] Result<std::unique_ptr<Issuer>> CreateAwsStsIssuerForTesting(IssuerContext& ctx,
                                                                           AwsStsHooks hooks);

}  // namespace jitbroker::issuers::aws_sts
