#include "broker/authn/authn.h"

#include "broker/crypto/crypto.h"

namespace jitbroker::authn {

namespace {
constexpr std::string_view kTokenPrefix = "jbs_";
constexpr std::string_view kSessionPrefix = "ses_";
constexpr size_t kMaxBearer = 8192;

bool IsIdChar(char c) {
  return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
}
}  // namespace

Result<SecretValue> ParseBearer(std::string_view header) {
  if (header.empty()) {
    return std::unexpected(
        Unauthenticated("missing_credentials", "an Authorization: Bearer credential is required"));
  }
  constexpr std::string_view kScheme = "Bearer ";
  if (header.size() <= kScheme.size() || header.size() > kMaxBearer ||
      !(header.substr(0, 7) == kScheme || header.substr(0, 7) == "bearer ")) {
    return std::unexpected(Unauthenticated(
        "malformed_authorization", "the Authorization header must be \"Bearer <credential>\""));
  }
  std::string_view value = header.substr(kScheme.size());
  while (!value.empty() && value.front() == ' ') {
    value.remove_prefix(1);
  }
  while (!value.empty() && value.back() == ' ') {
    value.remove_suffix(1);
  }
  if (value.empty()) {
    return std::unexpected(Unauthenticated(
        "malformed_authorization", "the Authorization header must be \"Bearer <credential>\""));
  }
  return SecretValue(std::string(value));
}

Result<Caller> Identify(SecretValue bearer, std::shared_ptr<const Policy> policy) {
  Caller caller;
  const std::string_view v = bearer.Reveal();
  if (v.starts_with(kTokenPrefix)) {
    const std::string_view rest = v.substr(kTokenPrefix.size());
    const size_t sep = rest.find('_');
    if (sep == std::string_view::npos || sep == 0 || sep + 1 >= rest.size()) {
      return std::unexpected(Unauthenticated("invalid_credentials", "invalid session token"));
    }
    for (char c : rest.substr(0, sep)) {
      if (!IsIdChar(c)) {
        return std::unexpected(Unauthenticated("invalid_credentials", "invalid session token"));
      }
    }
    caller.kind = Caller::Kind::kSession;
    caller.session_id = std::string(kSessionPrefix) + std::string(rest.substr(0, sep));
    caller.session_token = std::move(bearer);
    caller.policy = std::move(policy);
    return caller;
  }
  const std::string digest = crypto::Sha256Hex(v);
  const Principal* p = policy->FindPrincipalByKeySha256(digest);
  return PrincipalCaller(p, std::move(policy));
}

Result<Caller> IdentifyByCertificate(std::string_view cert_sha256_hex,
                                     std::shared_ptr<const Policy> policy) {
  const Principal* p = policy->FindPrincipalByCertSha256(cert_sha256_hex);
  return PrincipalCaller(p, std::move(policy));
}

Result<Caller> PrincipalCaller(const Principal* p, std::shared_ptr<const Policy> policy) {
  if (p == nullptr) {
    return std::unexpected(Unauthenticated("invalid_credentials", "invalid credentials"));
  }
  Caller caller;
  caller.kind = Caller::Kind::kPrincipal;
  caller.principal = p;
  caller.principal_id = p->id;
  caller.is_admin = policy->HasRole(*p, "admin");
  caller.is_approver = policy->HasRole(*p, "approver");
  caller.is_resource_server = policy->HasRole(*p, "resource_server");
  caller.policy = std::move(policy);
  return caller;
}

NewSessionToken MintSessionToken() {
  NewSessionToken out;
  const std::string sid = crypto::NewId("ses_", 16);
  out.session_id = sid;
  std::string token =
      std::string(kTokenPrefix) + sid.substr(kSessionPrefix.size()) + "_" + crypto::NewId("", 32);
  out.token_sha256 = crypto::Sha256Hex(token);
  out.token = SecretValue(std::move(token));
  return out;
}

bool VerifySessionToken(const SecretValue& token, std::string_view stored_sha256_hex) {
  return crypto::ConstantTimeEquals(crypto::Sha256Hex(token.Reveal()), stored_sha256_hex);
}

}  // namespace jitbroker::authn
