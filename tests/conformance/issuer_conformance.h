// The issuer conformance suite: what every Issuer (include/jitbroker/issuer.h)
// must do, whatever its upstream. A new issuer type is done when its case
// passes (docs/architecture.md "Adding an issuer"). Run against jwt,
// github_app (against tests/fakes/fake_github), aws_sts (against
// tests/fakes/fake_sts) and tests/fakes/fake_issuer in
// issuer_conformance_test.cc; a new type adds one TEST_CASE there:
//
//   TEST_CASE("IssuerConformance: gcp") { RunIssuerConformance(GcpCase()); }
//
// What it checks (each a doctest SUBCASE):
//   - Describe: a name and type, 1 <= min_ttl <= default_ttl <= max_ttl, a
//     well-formed identity key; the factory's Validate describes the issuer
//     exactly as Create does, and the spec answers every scope question
//     (ImpliedTier, ScopeItems, NarrowScope, CheckTrustGrant,
//     IssuedTokenType) as the issuer does;
//   - the valid request: ImpliedTier and ScopeItems accept it, repeatably;
//   - bad scopes and resources: the case's own and generic hostile ones
//     (wrong JSON types, unknown keys, huge and odd values) are refused with
//     kInvalidArgument or kPermissionDenied and a specific reason — never an
//     exception, never kInternal — and ScopeItems refuses what ImpliedTier
//     refuses;
//   - Mint: a typed credential with a secret that appears in no non-secret
//     field, fingerprint_sha256 = SHA-256 hex of the primary secret, expiry
//     after `now` and within the granted TTL, a revocation handle;
//   - Revoke: idempotent (twice, and after expiry); the outcome matches the
//     revocability class; where the upstream can be observed, the credential
//     is dead afterwards; the handle survives a seal/unseal round trip (as
//     the service stores it) and needs nothing else from the mint;
//   - VerifyOwnToken / PublicJwks: only for issuers that sign their own
//     tokens; tampered tokens and garbage are refused;
//   - CI exchanges: the valid request accepted as a trust policy's grant;
//     narrowing by each of the case's tokens never raises the tier nor adds
//     scope items, and a token outside the grant is scope_not_granted;
//     IssuedTokenType is a URN;
//   - Validate: the factory refuses each of the case's bad sections with
//     "invalid_config", naming the issuer's key, without creating anything
//     and without echoing a secret value;
//   - Mint failures: requests the issuer classifies but the upstream refuses
//     fail with a stable reason (never kInternal) and no secret in the error;
//   - concurrency: many threads mint, classify and revoke at once.
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "jitbroker/clock.h"
#include "jitbroker/issuer.h"

namespace jitbroker::testing {

// One issuer built for a check. Members are destroyed in reverse order: the
// spec and the issuer before the fixture they may depend on.
struct IssuerUnderTest {
  // Owns what the issuer uses (fake upstream, HTTP client, temp dir, …).
  std::shared_ptr<void> fixture;
  const Clock* clock = nullptr;  // the issuer's clock; MintRequest::now comes from it
  std::unique_ptr<Issuer> issuer;
  // What the factory's Validate made of the same config; null for an issuer
  // without a factory (the test fake).
  std::unique_ptr<IssuerSpec> spec;
};

struct IssuerConformanceCase {
  std::string name;
  // Builds a fresh issuer (called once per SUBCASE).
  std::function<IssuerUnderTest()> make;
  // A request the issuer accepts and mints; also used as a trust policy's
  // grant for the CI checks.
  GrantRequest valid;
  // Requests ImpliedTier must refuse, by name (issuer-specific bad scopes
  // and resources); generic ones are added by the suite.
  std::vector<std::pair<std::string, GrantRequest>> invalid;
  // RFC 8693 scope tokens, each of which narrows `valid` as a trust grant.
  std::vector<std::string> narrowing_tokens;
  // True for issuers that sign their own tokens (PublicJwks, VerifyOwnToken).
  bool verifies_own_tokens = false;
  // Whether the upstream still accepts a minted credential (grant id, its
  // primary secret); empty when the upstream cannot be observed (a jwt is
  // revoked broker-side).
  std::function<bool(const std::string& grant_id, std::string_view secret)> credential_active;
  int concurrent_mints = 16;

  // The factory's Validate on an issuer section (YAML of the issuer's
  // mapping, `type` included) with `data_dir` as the data directory; empty
  // for an issuer without a factory (the test fake).
  std::function<Status(const std::string& section_yaml, const std::string& data_dir)>
      validate_section;
  struct BadSection {
    std::string name;
    std::string yaml;    // the issuer's mapping
    std::string expect;  // part of the error message (e.g. the key's path)
  };
  // Sections Validate must refuse.
  std::vector<BadSection> bad_sections;
  // Requests ImpliedTier accepts but Mint must refuse (e.g. a repository the
  // upstream does not know), by name.
  std::vector<std::pair<std::string, GrantRequest>> mint_failures;
  // Secret values the case's sections reference or inline (and the fixture's
  // upstream credentials): no error of any check may contain one.
  std::vector<std::string> secrets;
};

void RunIssuerConformance(const IssuerConformanceCase& c);

}  // namespace jitbroker::testing
