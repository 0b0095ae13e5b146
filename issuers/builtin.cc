#include "issuers/github_app/github_app_issuer.h"
#include "issuers/jwt/jwt_issuer.h"
#include "issuers/registry.h"

namespace jitbroker::issuers {

void RegisterBuiltinIssuers(IssuerRegistry& registry) {
  registry.Register("jwt", &jwt::CreateJwtIssuer);
  registry.Register("github_app", &github_app::CreateGitHubAppIssuer);
}

}  // namespace jitbroker::issuers
