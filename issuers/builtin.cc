#include "issuers/aws_sts/aws_sts_issuer.h"
#include "issuers/gcp/gcp_issuer.h"
#include "issuers/github_app/github_app_issuer.h"
#include "issuers/jwt/jwt_issuer.h"
#include "issuers/registry.h"

namespace jitbroker::issuers {

Status RegisterBuiltinIssuers(IssuerRegistry& registry) {
  JITBROKER_RETURN_IF_ERROR(registry.Register("jwt", jwt::Factory()));
  JITBROKER_RETURN_IF_ERROR(registry.Register("github_app", github_app::Factory()));
  JITBROKER_RETURN_IF_ERROR(registry.Register("aws_sts", aws_sts::Factory()));
  JITBROKER_RETURN_IF_ERROR(registry.Register("gcp", gcp::Factory()));
  return OkStatus();
}

const IssuerRegistry& BuiltinIssuers() {
  // Built once, immutable afterwards (a function-local static: thread-safe
  // initialisation, no static-initialisation-order dependency).
  static const IssuerRegistry registry = [] {
    IssuerRegistry r;
    Status st = RegisterBuiltinIssuers(r);
    (void)st;  // the built-in names are distinct (a unit test checks)
    return r;
  }();
  return registry;
}

}  // namespace jitbroker::issuers
