// RawHttpConnection: a plain loopback TCP client for tests that must send
// what no well-behaved HTTP client sends (unbounded chunked bodies, endless
// header lines, ambiguous framing, a byte at a time) and watch how the
// server answers and when it closes.
#pragma once

#include <chrono>
#include <string>
#include <string_view>

namespace jitbroker::testing {

class RawHttpConnection {
 public:
  explicit RawHttpConnection(int port);  // REQUIREs the connect
  ~RawHttpConnection();
  RawHttpConnection(const RawHttpConnection&) = delete;
  RawHttpConnection& operator=(const RawHttpConnection&) = delete;

  // Sends all of `data`; false once the peer has closed (EPIPE, ECONNRESET).
  bool Send(std::string_view data);
  // Reads until one whole response (head + Content-Length body) is in, the
  // peer closes, or `timeout` passes; returns what was read.
  std::string ReadResponse(std::chrono::milliseconds timeout = std::chrono::milliseconds(5000));
  // True when the peer closes within `timeout` (data read meanwhile is dropped).
  bool ClosedWithin(std::chrono::milliseconds timeout);
  bool closed() const { return closed_; }

 private:
  int fd_ = -1;
  bool closed_ = false;
};

// The status code of a raw response ("HTTP/1.1 411 …"), 0 if none.
int RawStatus(const std::string& response);

// The daemon's resident set size in KiB (VmRSS of /proc/PID/status), 0 if unknown.
long RssKiB(int pid);

}  // namespace jitbroker::testing
