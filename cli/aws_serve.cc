#include "cli/aws_serve.h"

#include <string>
#include <utility>

#include "broker/crypto/crypto.h"

namespace jitbroker::cli {

CredentialEndpoint::CredentialEndpoint(CredentialEndpointOptions options)
    : LoopbackEndpoint("jitctl aws serve", options.clock, std::move(options.fetch), options.log),
      token_(std::move(options.token)),
      account_id_(std::move(options.account_id)) {}

Result<http::RoutePlan> CredentialEndpoint::Plan(http::Request& head) {
  return PlanGet(head, head.path() == kCredentialsPath,
                 "the credentials are at " + std::string(kCredentialsPath), "creds");
}

void CredentialEndpoint::Handle(http::Request& request, http::Response& response) {
  response.SetHeader("Cache-Control", "no-store");
  if (request.HeaderCount("Authorization") != 1 ||
      !crypto::ConstantTimeEquals(request.Header("Authorization"), token_.Reveal())) {
    Log("jitctl aws serve: refused a request without the right Authorization");
    AnswerError(response, 401, "unauthorized",
                "send the token of AWS_CONTAINER_AUTHORIZATION_TOKEN in Authorization");
    return;
  }
  AnswerCredential(response, [this](const AwsCredential& credential, TimePoint /*now*/) {
    return ContainerCredentialsJson(credential, account_id_);
  });
}

}  // namespace jitbroker::cli
