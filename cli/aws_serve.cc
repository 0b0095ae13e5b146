#include "cli/aws_serve.h"

#include <string>
#include <utility>

#include "broker/crypto/crypto.h"

namespace jitbroker::cli {

namespace {

void Answer(http::Response& response, int status, std::string_view code, std::string_view message) {
  response.status = status;
  response.content_type = "application/json";
  response.body = ContainerErrorJson(code, message);
}

}  // namespace

CredentialEndpoint::CredentialEndpoint(CredentialEndpointOptions options)
    : options_(std::move(options)),
      cache_({.name = "jitctl aws serve",
              .clock = options_.clock,
              .fetch = options_.fetch,
              .log = [this](const std::string& line) { Log(line); }}) {}

void CredentialEndpoint::Prime(AwsCredential credential, TimePoint obtained) {
  cache_.Prime(std::move(credential), obtained);
}

Result<http::RoutePlan> CredentialEndpoint::Plan(http::Request& head) {
  if (head.path() != kCredentialsPath) {
    return std::unexpected(
        NotFound("not_found", "the credentials are at " + std::string(kCredentialsPath)));
  }
  if (head.method != "GET") {
    Error e = InvalidArgument("method_not_allowed", "only GET is served");
    e.code = ErrorCode::kFailedPrecondition;
    return std::unexpected(std::move(e));
  }
  head.route = "creds";
  http::RoutePlan plan;
  plan.max_body_bytes = 0;
  return plan;
}

void CredentialEndpoint::Handle(http::Request& request, http::Response& response) {
  response.SetHeader("Cache-Control", "no-store");
  if (request.HeaderCount("Authorization") != 1 ||
      !crypto::ConstantTimeEquals(request.Header("Authorization"), options_.token.Reveal())) {
    Log("jitctl aws serve: refused a request without the right Authorization");
    Answer(response, 401, "unauthorized",
           "send the token of AWS_CONTAINER_AUTHORIZATION_TOKEN in Authorization");
    return;
  }
  auto failed = cache_.With([&](const AwsCredential& credential, TimePoint /*now*/) {
    SecretValue body = ContainerCredentialsJson(credential, options_.account_id);
    response.status = 200;
    response.content_type = "application/json";
    response.body = std::string(body.Reveal());
  });
  if (failed) {
    Answer(response, failed->status == 0 ? 502 : failed->status,
           failed->code.empty() ? "broker_error" : failed->code, failed->message);
  }
}

void CredentialEndpoint::RenderError(const http::Request& /*request*/, const Error& error,
                                     http::Response& response) {
  int status = InfoFor(error.code).http_status;
  if (error.Reason() == "method_not_allowed") {
    status = 405;
    response.SetHeader("Allow", "GET");
  }
  Answer(response, status, error.Reason(), error.message);
}

void CredentialEndpoint::Log(const std::string& line) {
  if (options_.log == nullptr) {
    return;
  }
  std::lock_guard lock(log_mu_);
  *options_.log << line << "\n" << std::flush;
}

}  // namespace jitbroker::cli
