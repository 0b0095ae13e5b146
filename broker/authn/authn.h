// Authentication of callers (docs/concepts.md "Authentication"): principals by API key (the policy
// stores only SHA-256 digests, compared in constant time), agents by their
// session token "jbs_<session-suffix>_<secret>" whose SHA-256 is all the
// store keeps. The token names its session so that a token presented on
// another session's path is recognised as such (403 session_mismatch) rather
// than merely unknown.
//
// Thread-safety: pure functions over an immutable Policy.
#pragma once

#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include "jitbroker/policy.h"
#include "jitbroker/result.h"
#include "jitbroker/secret.h"

namespace jitbroker::authn {

struct Caller {
  enum class Kind { kPrincipal, kSession };
  Kind kind = Kind::kPrincipal;
  const Principal* principal = nullptr;  // valid while `policy` is held
  std::shared_ptr<const Policy> policy;
  std::string principal_id;
  bool is_admin = false;
  bool is_approver = false;
  bool is_resource_server = false;
  std::string session_id;     // for kSession
  SecretValue session_token;  // for kSession, verified later against the store

  bool IsSession() const { return kind == Kind::kSession; }
};

// Extracts the bearer credential from an Authorization header value.
// Errors: kUnauthenticated "missing_credentials" / "malformed_authorization".
[[nodiscard]] Result<SecretValue> ParseBearer(std::string_view authorization_header);

// Identifies the caller: a session token (not yet verified: the caller must
// call VerifySessionToken with the stored digest) or an API key (verified
// here). Errors: kUnauthenticated "invalid_credentials".
[[nodiscard]] Result<Caller> Identify(SecretValue bearer, std::shared_ptr<const Policy> policy);
// The principal a verified TLS client certificate stands for (the SHA-256
// of its DER, lower-case hex). Errors: kUnauthenticated "invalid_credentials"
// when no principal lists it.
[[nodiscard]] Result<Caller> IdentifyByCertificate(std::string_view cert_sha256_hex,
                                                   std::shared_ptr<const Policy> policy);

// The caller for principal `p` of `policy`, once something else proved who
// it is (an API key, a certificate, a single sign-on, a signed chat
// callback). Null: kUnauthenticated "invalid_credentials".
[[nodiscard]] Result<Caller> PrincipalCaller(const Principal* p,
                                             std::shared_ptr<const Policy> policy);

struct NewSessionToken {
  std::string session_id;    // ses_…
  SecretValue token;         // jbs_…
  std::string token_sha256;  // hex
};
NewSessionToken MintSessionToken();

// Constant-time check of `token` against the stored digest.
bool VerifySessionToken(const SecretValue& token, std::string_view stored_sha256_hex);

}  // namespace jitbroker::authn
