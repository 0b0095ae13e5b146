// `jitctl aws serve` (docs/jitctl.md, "aws serve"): the AWS SDKs' container
// credentials endpoint on loopback, answering with credentials of grants the
// agent's session asks for.
//
//   GET /creds with `Authorization: <token>` (the exact per-run token, no
//   scheme; compared in constant time)  ->  200 {"AccessKeyId",
//   "SecretAccessKey","Token","Expiration","AccountId"}
//
// Anything else is refused before a credential is touched: another path 404,
// another method 405, a request with a body 413, a missing or wrong
// Authorization 401; a grant the broker denies or holds for approval answers
// 403, a broker that cannot give one 502, each with {"code","message"}, and
// the cached credential is dropped (fail closed).
//
// The credential is cached (loopback_endpoint.h): the SDKs poll the endpoint
// often, the broker sees one grant per credential lifetime.
//
// Bounds: LoopbackEndpointOptions (loopback_endpoint.h).
//
// Thread-safety: CredentialEndpoint's methods are called from the listener's
// threads; the cache serialises the fetches, a mutex the lines written to
// `log`.
#pragma once

#include <functional>
#include <mutex>
#include <optional>
#include <ostream>
#include <string>

#include "broker/http/transport.h"
#include "cli/agent_credentials.h"
#include "cli/loopback_endpoint.h"
#include "jitbroker/clock.h"
#include "jitbroker/secret.h"

namespace jitbroker::cli {

inline constexpr std::string_view kCredentialsPath = "/creds";

struct CredentialEndpointOptions {
  SecretValue token;       // the Authorization value clients must send
  std::string account_id;  // AccountId in every answer
  const Clock* clock = nullptr;
  std::function<FetchedCredential<AwsCredential>()> fetch;  // asks the broker for a new grant
  std::ostream* log = nullptr;                              // one line per grant or refusal
};

class CredentialEndpoint final : public LoopbackEndpoint<AwsCredential> {
 public:
  explicit CredentialEndpoint(CredentialEndpointOptions options);

  Result<http::RoutePlan> Plan(http::Request& head) override;
  void Handle(http::Request& request, http::Response& response) override;

 private:
  const SecretValue token_;
  const std::string account_id_;
};

}  // namespace jitbroker::cli
