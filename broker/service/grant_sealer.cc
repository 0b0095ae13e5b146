// GrantSealer (broker/service/grant_sealer.h).
#include "broker/service/grant_sealer.h"

#include <string>
#include <string_view>

#include "broker/crypto/crypto.h"

namespace jitbroker::service {

Result<std::string> GrantSealer::Seal(std::string_view grant_id, const SecretValue& plain) const {
  return Seal(grant_id, plain.Reveal());
}

Result<std::string> GrantSealer::Seal(std::string_view grant_id, std::string_view plain) const {
  if (plain.empty()) {
    return std::string();
  }
  JITBROKER_ASSIGN_OR_RETURN(std::string sealed, crypto::Seal(key_, plain, grant_id));
  return crypto::Base64UrlEncode(sealed);
}

Result<SecretValue> GrantSealer::Open(std::string_view grant_id, std::string_view sealed) const {
  if (sealed.empty()) {
    return SecretValue();
  }
  JITBROKER_ASSIGN_OR_RETURN(std::string raw, crypto::Base64UrlDecode(sealed));
  return crypto::Open(key_, raw, grant_id);
}

}  // namespace jitbroker::service
