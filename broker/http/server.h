// HttpServer: the REST API (DESIGN §4) on cpp-httplib: one route table,
// per-request ids, bearer authentication, strict JSON bodies, RFC 9457
// problem+json errors with stable codes, a JSON access log without secrets,
// Prometheus metrics, TCP_NODELAY, a bounded worker pool that sheds load with
// 503, and a body size limit.
//
// Thread-safety: handlers run on the worker pool and only touch the
// thread-safe BrokerService and Metrics. Start/Stop from one thread.
#pragma once

#include <atomic>
#include <functional>
#include <memory>
#include <string>
#include <thread>

#include "broker/common/metrics.h"
#include "broker/config/config.h"
#include "broker/service/broker_service.h"

namespace jitbroker::http {

// Reloads policy; returns the new policy version.
using ReloadFn = std::function<Result<std::string>()>;

class HttpServer {
 public:
  ~HttpServer();
  [[nodiscard]] static Result<std::unique_ptr<HttpServer>> Create(const config::ServerConfig& cfg,
                                                                  service::BrokerService* service,
                                                                  Metrics* metrics,
                                                                  ReloadFn reload);
  // Binds the listening socket; returns the port (useful with port 0).
  [[nodiscard]] Result<int> Bind();
  // Serves until Stop(); blocks.
  void Serve();
  // Stops accepting and drains in-flight requests.
  void Stop();
  bool IsRunning() const;

 private:
  HttpServer() = default;
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace jitbroker::http
