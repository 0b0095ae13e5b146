// Serving a test upstream (a fake GitHub, STS, OIDC issuer or git server) on
// loopback: one way for every fake. Network traffic in tests stays on
// 127.0.0.1.
#pragma once

#include <httplib.h>

#include <chrono>
#include <thread>

namespace jitbroker::testing {

// Binds `server` to 127.0.0.1 on a free port and serves it on `thread`.
// Returns the port once the server accepts (waiting at most 5 s), or 0 when
// it cannot bind.
inline int ServeOnLoopback(httplib::Server& server, std::thread& thread) {
  const int port = server.bind_to_any_port("127.0.0.1");
  if (port <= 0) {
    return 0;
  }
  thread = std::thread([&server] { server.listen_after_bind(); });
  for (int i = 0; i < 2500 && !server.is_running(); ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
  return port;
}

// Stops a server started with ServeOnLoopback and joins its thread; safe to
// call more than once.
inline void StopServing(httplib::Server& server, std::thread& thread) {
  server.stop();
  if (thread.joinable()) {
    thread.join();
  }
}

}  // namespace jitbroker::testing
