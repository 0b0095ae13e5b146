#include "issuers/jwt/jwt_issuer.h"
#include "issuers/registry.h"

namespace jitbroker::issuers {

void RegisterBuiltinIssuers(IssuerRegistry& registry) {
  registry.Register("jwt", &jwt::CreateJwtIssuer);
}

}  // namespace jitbroker::issuers
