// Serving a test upstream (a fake GitHub, STS, OIDC issuer or git server) on
// loopback: one way for every fake. Network traffic in tests stays on
// 127.0.0.1.
#pragma once

#include <arpa/inet.h>
#include <httplib.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

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

// A port that was free on 127.0.0.1 a moment ago (the kernel's pick), for a
// daemon whose own URL must be known before it starts (an OAuth redirect
// URL in its configuration). Another process could take it in between;
// tests on one machine rarely collide, and the daemon fails loudly if so.
inline int PickFreeLoopbackPort() {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) {
    return 0;
  }
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = 0;
  socklen_t len = sizeof(addr);
  int port = 0;
  if (::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0 &&
      ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) == 0) {
    port = ntohs(addr.sin_port);
  }
  ::close(fd);
  return port;
}

}  // namespace jitbroker::testing
