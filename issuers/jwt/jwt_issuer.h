// The `jwt` issuer: the broker's own signed JWTs (ES256 by default, Ed25519
// selectable) for internal services and MCP servers (docs/concepts.md "Issuers").
//
// Claims: iss, sub (agent), aud (one configured audience), iat, nbf, exp,
// jti (= grant id), act {sub: delegating principal} (RFC 8693 §4.1),
// session_id, task_id, scope (space-delimited; absent when empty), tier,
// tool, resource.
//
// The `scope` claim is what resource servers authorise on, so the issuer
// mints only the scopes its config declares (`scope_tiers`, each with the
// tier it implies); they are the grant's scope items (Issuer::ScopeItems),
// which task scopes and roles bound and tool rules match. See
// docs/configuration.md, "issuers.<name> with type: jwt".
// Verifiable with /.well-known/jwks.json; revocation is broker-side state,
// visible through POST /v1/introspect (RFC 7662).
//
// Config (issuers.NAME): type: jwt; algorithm: ES256|Ed25519 (default ES256);
// audiences: [..] (required); issuer: iss claim (default "jitbroker");
// default_ttl_seconds (300); max_ttl_seconds (900, ≤ 86400);
// signing_key: file:/env: PEM (absent: generated into DATA_DIR/keys/NAME.pem, 0600);
// scope_tiers: {SCOPE_PATTERN: TIER, …} (absent: no requested scope is minted
// and the claim is the request's operation).
//
// CI exchanges (IssuerSpec::NarrowScope): every requested RFC 8693 scope
// token is a scope name, which must be one of the trust policy grant's
// `scopes` (a name may contain ':', "mcp:search"); the issued token type is
// urn:ietf:params:oauth:token-type:jwt.
//
// Thread-safety: immutable after creation; Mint/Revoke are thread-safe.
#pragma once

#include <memory>

#include "jitbroker/issuer.h"

namespace jitbroker::issuers::jwt {

// The `jwt` type for the IssuerRegistry.
IssuerFactory Factory();
// Validate: parses and checks the section and, when no signing_key is
// configured, reads (never writes) a previously generated key.
[[nodiscard]] Result<std::unique_ptr<IssuerSpec>> ValidateJwtIssuer(IssuerContext& ctx);
// Create: as Validate, then loads or generates the signing key.
[[nodiscard]] Result<std::unique_ptr<Issuer>> CreateJwtIssuer(IssuerContext& ctx);

}  // namespace jitbroker::issuers::jwt
