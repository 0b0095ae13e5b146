#include "cli/aws_serve.h"

#include <string>
#include <utility>

#include "broker/common/time_util.h"
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
    : options_(std::move(options)) {}

void CredentialEndpoint::Prime(AwsCredential credential, TimePoint obtained) {
  std::lock_guard lock(mu_);
  cached_ = std::move(credential);
  obtained_ = obtained;
}

http::TransportOptions CredentialEndpoint::ListenerOptions(int port) {
  http::TransportOptions o;
  o.host = "127.0.0.1";  // loopback only, whatever the caller wants
  o.port = port;
  o.io_threads = 1;
  o.worker_threads = 2;
  o.max_queued_requests = 16;
  o.max_header_bytes = 8 * 1024;
  o.max_header_count = 32;
  o.max_body_bytes = 0;
  o.max_connections = 32;
  o.max_connections_per_address = 32;  // every client is 127.0.0.1
  o.request_timeout = std::chrono::milliseconds(5000);
  o.write_timeout = std::chrono::milliseconds(5000);
  o.idle_timeout = std::chrono::milliseconds(10000);
  o.max_requests_per_connection = 1000;
  return o;
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
  std::lock_guard lock(mu_);
  const TimePoint now = options_.clock->Now();
  if (!cached_ || NeedsRefresh(obtained_, cached_->expires_at, now)) {
    cached_.reset();
    FetchedCredential fetched = options_.fetch();
    if (!fetched.credential) {
      Log("jitctl aws serve: no credential: " + fetched.code + ": " + fetched.message);
      Answer(response, fetched.status == 0 ? 502 : fetched.status,
             fetched.code.empty() ? "broker_error" : fetched.code, fetched.message);
      return;
    }
    cached_ = std::move(fetched.credential);
    obtained_ = now;
    Log("jitctl aws serve: new credential from grant " + fetched.grant_id + ", expires at " +
        FormatRfc3339(cached_->expires_at));
  }
  SecretValue body = ContainerCredentialsJson(*cached_, options_.account_id);
  response.status = 200;
  response.content_type = "application/json";
  response.body = std::string(body.Reveal());
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
