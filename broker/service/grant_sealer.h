// GrantSealer: the sealing of what a grant record keeps secret at rest
// (docs/architecture.md, "Revocation"): an issuer's revocation handle, and
// the exact request of a pending or approved grant that is minted from at
// collection. AES-256-GCM with the seal key; the grant id is the associated
// data, so a sealed value copied onto another grant does not open. Stored as
// base64url of nonce||ciphertext||tag.
//
// Thread-safety: immutable after construction; all methods are const.
#pragma once

#include <string>
#include <string_view>

#include "jitbroker/result.h"
#include "jitbroker/secret.h"

namespace jitbroker::service {

class GrantSealer {
 public:
  explicit GrantSealer(SecretValue key) : key_(std::move(key)) {}

  // Seals `plain` for grant `grant_id`; an empty value seals to "" (an issuer
  // without revocation handles).
  [[nodiscard]] Result<std::string> Seal(std::string_view grant_id, const SecretValue& plain) const;
  [[nodiscard]] Result<std::string> Seal(std::string_view grant_id, std::string_view plain) const;
  // Opens what Seal made for the same grant; "" opens to an empty value.
  // Errors: not base64url, or it does not open (another grant's value, a
  // changed seal key, tampering).
  [[nodiscard]] Result<SecretValue> Open(std::string_view grant_id, std::string_view sealed) const;

 private:
  SecretValue key_;
};

}  // namespace jitbroker::service
