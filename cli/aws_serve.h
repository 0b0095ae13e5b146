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
// The credential is cached and a new grant requested only when fewer than
// RefreshMargin() seconds of it are left (agent_credentials.h), one request
// at a time: the SDKs poll the endpoint often, the broker sees one grant per
// credential lifetime.
//
// Bounds: the broker's own HTTP listener (broker/http/transport.h) on
// 127.0.0.1 only, one I/O thread, two workers, a short queue, small heads,
// no bodies, short timeouts.
//
// Thread-safety: CredentialEndpoint's methods are called from the listener's
// threads; the cache and the fetch are serialised by one mutex, and so are
// the lines written to `log`.
#pragma once

#include <functional>
#include <mutex>
#include <optional>
#include <ostream>
#include <string>

#include "broker/http/transport.h"
#include "cli/agent_credentials.h"
#include "jitbroker/clock.h"
#include "jitbroker/secret.h"

namespace jitbroker::cli {

inline constexpr std::string_view kCredentialsPath = "/creds";

// What a fetch of a new credential gave.
struct FetchedCredential {
  std::optional<AwsCredential> credential;  // set on success
  std::string grant_id;                     // for the log line
  int status = 0;                           // on failure: the endpoint's answer
  std::string code;                         // on failure: {"code"}
  std::string message;                      // on failure: {"message"}, no secret
};

struct CredentialEndpointOptions {
  SecretValue token;       // the Authorization value clients must send
  std::string account_id;  // AccountId in every answer
  const Clock* clock = nullptr;
  std::function<FetchedCredential()> fetch;  // asks the broker for a new grant
  std::ostream* log = nullptr;               // one line per grant or refusal
};

class CredentialEndpoint final : public http::RequestHandler {
 public:
  explicit CredentialEndpoint(CredentialEndpointOptions options);

  // Seeds the cache with a credential already fetched (the one `aws serve`
  // asks for before it starts listening).
  void Prime(AwsCredential credential, TimePoint obtained);

  Result<http::RoutePlan> Plan(http::Request& head) override;
  void Handle(http::Request& request, http::Response& response) override;
  void RenderError(const http::Request& request, const Error& error,
                   http::Response& response) override;
  void Finished(const http::Request&, const http::Response&,
                std::chrono::steady_clock::duration) override {}

  // The listener's settings for this endpoint: 127.0.0.1:`port`.
  static http::TransportOptions ListenerOptions(int port);

 private:
  void Log(const std::string& line);

  CredentialEndpointOptions options_;
  std::mutex log_mu_;  // one line at a time (taken inside mu_, never around it)
  std::mutex mu_;
  std::optional<AwsCredential> cached_;  // guarded by mu_
  TimePoint obtained_{};                 // guarded by mu_
};

}  // namespace jitbroker::cli
