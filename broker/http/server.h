// HttpServer: the REST API (docs/api.md) on the broker's HTTP
// listener (broker/http/transport.h): one route table, server-chosen request
// ids, bearer authentication, strict JSON bodies, RFC 9457 problem+json
// errors with stable codes, an access log whose every client-chosen value is
// quoted, Prometheus metrics, and the bounds of docs/architecture.md ("The
// HTTP listener").
//
// Thread-safety: handlers run on the listener's worker threads and only touch
// the thread-safe BrokerService and Metrics. Start/Stop from one thread.
#pragma once

#include <functional>
#include <memory>
#include <string>

#include "broker/common/metrics.h"
#include "broker/config/config.h"
#include "broker/lifecycle/slack.h"
#include "broker/service/broker_service.h"
#include "jitbroker/http_client.h"

namespace jitbroker::http {

// Reloads policy; returns the new policy version.
using ReloadFn = std::function<Result<std::string>()>;

class Console;

// What people use besides the API, each null when not configured; not
// owned, and each must outlive the server.
struct PeopleOptions {
  Console* console = nullptr;  // /ui/ and /v1/login/ (broker/http/console.h)
  // approvals.slack: in interactive mode the server also serves its
  // callbacks (POST /v1/slack/interactions).
  lifecycle::SlackNotifier* slack = nullptr;
};

// Proxy mode (broker/http/git_proxy.h): its settings and the client that
// carries its upstream traffic (null: no proxy routes).
struct ProxyOptions {
  config::ProxyConfig config;
  HttpClient* http = nullptr;
};

class HttpServer {
 public:
  ~HttpServer();
  [[nodiscard]] static Result<std::unique_ptr<HttpServer>> Create(const config::ServerConfig& cfg,
                                                                  service::BrokerService* service,
                                                                  Metrics* metrics, ReloadFn reload,
                                                                  ProxyOptions proxy = {},
                                                                  PeopleOptions people = {});
  // Binds the listening socket; returns the port (useful with port 0).
  [[nodiscard]] Result<int> Bind();
  // Serves until Stop(); blocks.
  void Serve();
  // Stops accepting and drains in-flight requests. Safe to call before,
  // during or after Serve(), from any thread, more than once.
  void Stop();
  bool IsRunning() const;
  // Re-reads server.tls's certificate and key (Transport::ReloadTls): new
  // connections get them, open ones keep theirs; on an error nothing changes.
  [[nodiscard]] Status ReloadTls();

 private:
  HttpServer() = default;
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace jitbroker::http
