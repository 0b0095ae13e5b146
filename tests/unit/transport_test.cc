// The HTTP listener's bounds (broker/http/transport.h), attacked over raw
// loopback sockets the way the security review did (issue #10 findings 2
// and 3): unbounded chunked bodies, content-encoded bodies, oversized and
// over-numerous headers, ambiguous framing, slow clients, connection floods
// and a saturated worker pool.
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include <doctest/doctest.h>

#include "broker/http/transport.h"
#include "tests/support/raw_http.h"

namespace jitbroker::http {
namespace {

using namespace std::chrono_literals;

// A handler with two routes: POST /echo (body limit 1 KiB) answers the body's
// length; GET /block waits until released; GET /fast answers at once.
class TestHandler final : public RequestHandler {
 public:
  Result<RoutePlan> Plan(Request& head) override {
    RoutePlan p;
    if (head.path() == "/echo" && head.method == "POST") {
      p.max_body_bytes = 1024;
    } else if (head.path() == "/stream" && head.method == "POST") {
      p.max_body_bytes = 1024;
      p.allow_chunked = true;
    } else if ((head.path() == "/block" || head.path() == "/fast") && head.method == "GET") {
      p.max_body_bytes = 0;
    } else if ((head.path() == "/pipe" || head.path() == "/refuse" || head.path() == "/collect") &&
               head.method == "POST") {
      // Streaming (BodyStream): 4 KiB at most, 400 ms idle, 2 s in all.
      p.streaming = true;
      p.allow_chunked = true;
      p.allow_content_encoding = true;
      p.max_body_bytes = 4096;
      p.stream_idle = 400ms;
      p.stream_total = 2000ms;
    } else if (head.path() == "/inline" && head.method == "GET") {
      p.inline_handler = true;
    } else {
      return std::unexpected(NotFound("no_route", "no such endpoint"));
    }
    head.route = std::string(head.path());
    return p;
  }
  void Handle(Request& req, Response& res) override {
    if (req.path() == "/block") {
      std::unique_lock lock(mu);
      ++blocked;
      cv.notify_all();
      cv.wait(lock, [&] { return released; });
    }
    res.status = 200;
    res.content_type = "text/plain";
    res.body = req.path() == "/echo" || req.path() == "/stream"
                   ? "len=" + std::to_string(req.body.size())
                   : "ok";
    last_request_id = req.request_id;
    last_client_request_id = req.client_request_id;
  }
  // /pipe echoes the body back in pieces as it reads it; /collect reads it
  // all, then answers it in two pieces; /refuse answers 403 without reading.
  void HandleStream(Request& req, BodyStream& body, Response& res) override {
    if (req.path() == "/refuse") {
      res.status = 403;
      res.content_type = "text/plain";
      res.body = "refused";
      return;
    }
    if (req.path() == "/collect") {
      std::string all;
      char piece[512];
      for (;;) {
        auto n = body.Read(piece, sizeof(piece));
        REQUIRE(n.has_value());
        if (*n == 0) {
          break;
        }
        all.append(piece, *n);
      }
      Response head;
      head.status = 200;
      head.content_type = "text/plain";
      REQUIRE(body.WriteHead(head).has_value());
      REQUIRE(body.Write("got:").has_value());
      REQUIRE(body.Write(all).has_value());
      return;
    }
    std::string first;
    char buf[512];
    for (;;) {
      auto n = body.Read(buf, sizeof(buf));
      if (!n) {
        {
          std::lock_guard lock(mu);
          stream_error = std::string(n.error().Reason());
        }
        cv.notify_all();
        return RenderError(req, n.error(), res);
      }
      if (*n == 0) {
        break;
      }
      if (!body.head_written()) {
        Response head;
        head.status = 200;
        head.content_type = "text/plain";
        REQUIRE(body.WriteHead(head).has_value());
      }
      REQUIRE(body.Write(std::string_view(buf, *n)).has_value());
    }
    if (!body.head_written()) {
      res.status = 200;
      res.body = "empty";
    }
  }
  void RenderError(const Request&, const Error& e, Response& res) override {
    res.status = InfoFor(e.code).http_status;
    res.content_type = "text/plain";
    res.body = std::string(e.Reason());
    if (e.retryable && e.retry_after.count() > 0) {
      res.SetHeader("Retry-After", std::to_string(e.retry_after.count()));
    }
  }
  void Finished(const Request&, const Response&, std::chrono::steady_clock::duration) override {
    ++finished;
  }
  void Shed() override { ++shed; }

  void Release() {
    std::lock_guard lock(mu);
    released = true;
    cv.notify_all();
  }
  void WaitBlocked(int n) {
    std::unique_lock lock(mu);
    cv.wait_for(lock, 10s, [&] { return blocked >= n; });
  }

  std::mutex mu;
  std::condition_variable cv;
  int blocked = 0;
  bool released = false;
  std::atomic<int> finished{0};
  std::atomic<int> shed{0};
  std::string last_request_id, last_client_request_id;
  std::string stream_error;  // what the last streaming read failed with; guarded by mu
  // The last streaming read's error, waiting up to a second for one (the
  // client may see the connection close before the handler sees the error).
  std::string StreamError() {
    std::unique_lock lock(mu);
    cv.wait_for(lock, 1s, [&] { return !stream_error.empty(); });
    return stream_error;
  }
};

class Listener {
 public:
  explicit Listener(TransportOptions opts) {
    auto t = Transport::Create(std::move(opts), &handler);
    REQUIRE(t);
    transport = std::move(*t);
    auto port_or = transport->Bind();
    REQUIRE(port_or);
    port = *port_or;
    thread = std::thread([this] { transport->Serve(); });
  }
  ~Listener() {
    handler.Release();
    transport->Stop();
    thread.join();
  }
  TestHandler handler;
  std::unique_ptr<Transport> transport;
  int port = 0;
  std::thread thread;
};

using Conn = testing::RawHttpConnection;

int StatusOf(const std::string& response) { return testing::RawStatus(response); }

TransportOptions SmallOptions() {
  TransportOptions o;
  o.port = 0;
  o.io_threads = 1;
  o.worker_threads = 2;
  o.max_queued_requests = 2;
  o.max_header_bytes = 4096;
  o.max_header_count = 20;
  o.max_body_bytes = 4096;
  o.max_connections = 64;
  o.max_connections_per_address = 16;
  o.request_timeout = 1500ms;
  o.idle_timeout = 3000ms;
  o.write_timeout = 2000ms;
  return o;
}

TEST_CASE("Transport: serves keep-alive requests and ids its requests itself") {
  Listener l(SmallOptions());
  Conn c(l.port);
  for (int i = 0; i < 3; ++i) {
    REQUIRE(
        c.Send("POST /echo HTTP/1.1\r\nHost: x\r\nX-Request-Id: sweeper\r\n"
               "Content-Length: 5\r\n\r\nhello"));
    const std::string r = c.ReadResponse();
    CHECK(StatusOf(r) == 200);
    CHECK(r.find("len=5") != std::string::npos);
    // The answer carries the server's id, never the client's.
    CHECK(r.find("X-Request-Id: req_") != std::string::npos);
    CHECK(r.find("X-Request-Id: sweeper") == std::string::npos);
  }
  CHECK(l.handler.last_request_id.rfind("req_", 0) == 0);
  CHECK(l.handler.last_client_request_id == "sweeper");
}

TEST_CASE("Transport: a chunked body to a buffering route is refused before it is read") {
  Listener l(SmallOptions());
  Conn c(l.port);
  REQUIRE(c.Send("POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"));
  // The answer comes without the body having been sent at all.
  const std::string r = c.ReadResponse(2000ms);
  CHECK(StatusOf(r) == 411);
  CHECK(r.find("Connection: close") != std::string::npos);
  CHECK(c.ClosedWithin(2000ms));
}

TEST_CASE("Transport: a chunked body on a streaming route is bounded after decoding") {
  Listener l(SmallOptions());
  SUBCASE("within the limit") {
    Conn c(l.port);
    REQUIRE(
        c.Send("POST /stream HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
               "5\r\nhello\r\n0\r\n\r\n"));
    const std::string r = c.ReadResponse();
    CHECK(StatusOf(r) == 200);
    CHECK(r.find("len=5") != std::string::npos);
  }
  SUBCASE("beyond the limit: 413 as soon as the limit is crossed") {
    Conn c(l.port);
    REQUIRE(c.Send("POST /stream HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"));
    std::string chunk = "400\r\n" + std::string(1024, 'a') + "\r\n";
    bool open = true;
    for (int i = 0; i < 4 && open; ++i) {
      open = c.Send(chunk);
    }
    const std::string r = c.ReadResponse(3000ms);
    CHECK(StatusOf(r) == 413);
  }
}

TEST_CASE("Transport: content-encoded and oversized bodies are refused from the head") {
  Listener l(SmallOptions());
  SUBCASE("gzip") {
    Conn c(l.port);
    REQUIRE(
        c.Send("POST /echo HTTP/1.1\r\nHost: x\r\nContent-Encoding: gzip\r\n"
               "Content-Length: 100\r\n\r\n"));
    const std::string r = c.ReadResponse(2000ms);
    CHECK(StatusOf(r) == 415);
    CHECK(c.ClosedWithin(2000ms));
  }
  SUBCASE("Content-Length above the route's limit") {
    Conn c(l.port);
    REQUIRE(c.Send("POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 2048\r\n\r\n"));
    CHECK(StatusOf(c.ReadResponse(2000ms)) == 413);
    CHECK(c.ClosedWithin(2000ms));
  }
  SUBCASE("Content-Length above every route's limit (200 MiB)") {
    Conn c(l.port);
    REQUIRE(c.Send("POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 209715200\r\n\r\n"));
    CHECK(StatusOf(c.ReadResponse(2000ms)) == 413);
  }
  SUBCASE("a body on a route that takes none") {
    Conn c(l.port);
    REQUIRE(c.Send("GET /fast HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\n0123456789"));
    CHECK(StatusOf(c.ReadResponse(2000ms)) == 413);
  }
}

TEST_CASE("Transport: ambiguous framing is answered 400 and the connection closed") {
  Listener l(SmallOptions());
  const char* attacks[] = {
      "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n",
      "POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n",
      "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n",
      "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 5, 6\r\n\r\n",
      "POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\n",
      "POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked, gzip\r\n\r\n",
      ("POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
       "Transfer-Encoding: chunked\r\n\r\n"),
      "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n",
      "GET /fast HTTP/1.1\r\nHost: x\r\nBad Header: 1\r\n\r\n",
  };
  for (const char* attack : attacks) {
    CAPTURE(attack);
    Conn c(l.port);
    REQUIRE(c.Send(attack));
    const std::string r = c.ReadResponse(2000ms);
    CHECK(StatusOf(r) == 400);
    CHECK(c.ClosedWithin(2000ms));
  }
}

TEST_CASE("Transport: request heads are bounded in bytes and fields") {
  Listener l(SmallOptions());
  SUBCASE("one huge header line") {
    Conn c(l.port);
    c.Send("GET /fast HTTP/1.1\r\nHost: x\r\nX-Big: ");
    // Keep sending far beyond the limit: the server answers and closes
    // without buffering what follows.
    const std::string junk(64 * 1024, 'a');
    bool open = true;
    for (int i = 0; i < 800 && open; ++i) {  // up to 50 MB
      open = c.Send(junk);
    }
    CHECK_FALSE(open);
    const std::string r = c.ReadResponse(2000ms);
    if (!r.empty()) {
      CHECK(StatusOf(r) == 431);
    }
  }
  SUBCASE("too many fields") {
    Conn c(l.port);
    std::string head = "GET /fast HTTP/1.1\r\nHost: x\r\n";
    for (int i = 0; i < 30; ++i) {
      head += "X-" + std::to_string(i) + ": 1\r\n";
    }
    head += "\r\n";
    REQUIRE(c.Send(head));
    CHECK(StatusOf(c.ReadResponse(2000ms)) == 431);
    CHECK(c.ClosedWithin(2000ms));
  }
}

TEST_CASE("Transport: slow clients hold sockets, not workers, and are cut at the deadline") {
  TransportOptions o = SmallOptions();
  o.worker_threads = 1;
  Listener l(o);
  // More slow clients than workers, each dribbling a header line.
  std::vector<std::unique_ptr<Conn>> slow;
  for (int i = 0; i < 8; ++i) {
    slow.push_back(std::make_unique<Conn>(l.port));
    REQUIRE(slow.back()->Send("GET /fast HTTP/1.1\r\nHost: x\r\n"));
  }
  std::this_thread::sleep_for(300ms);
  for (auto& c : slow) {
    c->Send("X-Slow: 1\r\n");
  }
  // The worker is free: a normal request is answered at once.
  {
    Conn c(l.port);
    const auto t0 = std::chrono::steady_clock::now();
    REQUIRE(c.Send("GET /fast HTTP/1.1\r\nHost: x\r\n\r\n"));
    CHECK(StatusOf(c.ReadResponse(1000ms)) == 200);
    CHECK(std::chrono::steady_clock::now() - t0 < 500ms);
  }
  // One deadline for the whole head: dribbling does not extend it.
  for (auto& c : slow) {
    CHECK(c->ClosedWithin(3000ms));
  }
}

TEST_CASE("Transport: an idle connection that never sends is closed") {
  Listener l(SmallOptions());
  Conn c(l.port);
  CHECK(c.ClosedWithin(3000ms));
}

TEST_CASE("Transport: connections per address are capped with a 503") {
  TransportOptions o = SmallOptions();
  o.max_connections_per_address = 4;
  Listener l(o);
  std::vector<std::unique_ptr<Conn>> held;
  for (int i = 0; i < 4; ++i) {
    held.push_back(std::make_unique<Conn>(l.port));
  }
  std::this_thread::sleep_for(200ms);
  CHECK(l.transport->ConnectionCount() == 4);
  Conn extra(l.port);
  const std::string r = extra.ReadResponse(2000ms);
  CHECK(StatusOf(r) == 503);
  CHECK(r.find("too_many_connections") != std::string::npos);
  CHECK(extra.ClosedWithin(2000ms));
  held.clear();
  // Once they are gone, the address is served again.
  std::this_thread::sleep_for(200ms);
  Conn again(l.port);
  REQUIRE(again.Send("GET /fast HTTP/1.1\r\nHost: x\r\n\r\n"));
  CHECK(StatusOf(again.ReadResponse()) == 200);
}

TEST_CASE("Transport: a saturated worker pool sheds with 503 at once, inline routes still answer") {
  TransportOptions o = SmallOptions();
  o.worker_threads = 1;
  o.max_queued_requests = 1;
  Listener l(o);
  Conn a(l.port), b(l.port), c(l.port), d(l.port);
  REQUIRE(a.Send("GET /block HTTP/1.1\r\nHost: x\r\n\r\n"));
  l.handler.WaitBlocked(1);
  REQUIRE(b.Send("GET /fast HTTP/1.1\r\nHost: x\r\n\r\n"));  // queued
  std::this_thread::sleep_for(200ms);
  const auto t0 = std::chrono::steady_clock::now();
  REQUIRE(c.Send("GET /fast HTTP/1.1\r\nHost: x\r\n\r\n"));  // shed
  const std::string shed = c.ReadResponse(1000ms);
  CHECK(StatusOf(shed) == 503);
  CHECK(shed.find("Retry-After: 1") != std::string::npos);
  CHECK(std::chrono::steady_clock::now() - t0 < 500ms);
  CHECK(l.handler.shed.load() >= 1);
  REQUIRE(d.Send("GET /inline HTTP/1.1\r\nHost: x\r\n\r\n"));
  CHECK(StatusOf(d.ReadResponse(1000ms)) == 200);
  l.handler.Release();
  CHECK(StatusOf(a.ReadResponse()) == 200);
  CHECK(StatusOf(b.ReadResponse()) == 200);
}

TEST_CASE("Transport: Expect 100-continue is answered before the body is read") {
  Listener l(SmallOptions());
  Conn c(l.port);
  REQUIRE(
      c.Send("POST /echo HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\n"
             "Content-Length: 3\r\n\r\n"));
  const std::string cont = c.ReadResponse(1000ms);
  CHECK(cont.rfind("HTTP/1.1 100 Continue\r\n\r\n", 0) == 0);
  REQUIRE(c.Send("abc"));
  std::string r = cont.substr(std::string("HTTP/1.1 100 Continue\r\n\r\n").size());
  if (StatusOf(r) == 0) {
    r = c.ReadResponse();
  }
  CHECK(StatusOf(r) == 200);
  CHECK(r.find("len=3") != std::string::npos);
}

TEST_CASE("Transport: a streaming route reads and answers piecewise") {
  Listener l(SmallOptions());
  SUBCASE("an answer begun before the body ended closes the connection after it") {
    Conn c(l.port);
    REQUIRE(
        c.Send("POST /pipe HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
               "5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"));
    std::string r;
    while (!c.closed()) {
      const std::string more = c.ReadResponse(2000ms);
      if (more.empty()) {
        break;
      }
      r += more;
    }
    CHECK(StatusOf(r) == 200);
    CHECK(r.find("Transfer-Encoding: chunked") != std::string::npos);
    CHECK(r.find("hello") != std::string::npos);
    CHECK(r.find(" world") != std::string::npos);
    CHECK(r.find("\r\n0\r\n\r\n") != std::string::npos);  // the body was ended properly
  }
  SUBCASE("an answer after the whole body keeps the connection") {
    Conn c(l.port);
    REQUIRE(
        c.Send("POST /collect HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
               "5\r\nhello\r\n0\r\n\r\n"));
    REQUIRE(
        c.Send("POST /collect HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n"
               "Connection: close\r\n\r\nabc"));
    std::string r;
    while (!c.closed() && r.find("got:abc") == std::string::npos) {
      const std::string more = c.ReadResponse(2000ms);
      if (more.empty()) {
        break;
      }
      r += more;
    }
    CHECK(r.find("hello") != std::string::npos);
    CHECK_MESSAGE(r.find("abc") != std::string::npos, r);  // the second request, same connection
  }
}

TEST_CASE("Transport: a streaming body is bounded in size and in time") {
  Listener l(SmallOptions());
  SUBCASE("over max_body_bytes: the handler's read fails, 413") {
    Conn c(l.port);
    REQUIRE(c.Send("POST /pipe HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"));
    const std::string chunk = "400\r\n" + std::string(1024, 'a') + "\r\n";
    bool open = true;
    for (int i = 0; i < 6 && open; ++i) {
      open = c.Send(chunk);
    }
    CHECK(c.ClosedWithin(3000ms));
    CHECK(l.handler.StreamError() == "payload_too_large");
  }
  SUBCASE("a client that stops sending is cut after the idle bound") {
    Conn c(l.port);
    REQUIRE(c.Send("POST /pipe HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nabc"));
    const auto t0 = std::chrono::steady_clock::now();
    CHECK(c.ClosedWithin(3000ms));
    CHECK(std::chrono::steady_clock::now() - t0 < 2000ms);
    CHECK(l.handler.StreamError() == "request_timeout");
  }
  SUBCASE("a client that dribbles is cut at the transfer's total bound") {
    Conn c(l.port);
    REQUIRE(c.Send("POST /pipe HTTP/1.1\r\nHost: x\r\nContent-Length: 4000\r\n\r\n"));
    const auto t0 = std::chrono::steady_clock::now();
    bool open = true;
    while (open && std::chrono::steady_clock::now() - t0 < 4000ms) {
      open = c.Send("a");
      std::this_thread::sleep_for(100ms);
    }
    CHECK(std::chrono::steady_clock::now() - t0 < 3500ms);
  }
  SUBCASE("Expect: 100-continue is not answered when the handler refuses unread") {
    Conn c(l.port);
    REQUIRE(
        c.Send("POST /refuse HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\n"
               "Content-Length: 1000\r\n\r\n"));
    const std::string r = c.ReadResponse(2000ms);
    CHECK(StatusOf(r) == 403);
    CHECK(r.find("100 Continue") == std::string::npos);
    CHECK(c.ClosedWithin(2000ms));  // the unread body cannot frame a next request
  }
}

TEST_CASE("Transport: unknown routes") {
  Listener l(SmallOptions());
  SUBCASE("without a body: 404, and the connection serves on") {
    Conn c(l.port);
    REQUIRE(c.Send("GET /nowhere HTTP/1.1\r\nHost: x\r\n\r\n"));
    CHECK(StatusOf(c.ReadResponse()) == 404);
    REQUIRE(c.Send("GET /fast HTTP/1.1\r\nHost: x\r\n\r\n"));
    CHECK(StatusOf(c.ReadResponse()) == 200);
  }
  SUBCASE("with a body: 404 and closed, the body never read") {
    Conn c(l.port);
    REQUIRE(c.Send("POST /nowhere HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n"));
    const std::string r = c.ReadResponse();
    CHECK((StatusOf(r) == 404 || StatusOf(r) == 413));
    CHECK(c.ClosedWithin(2000ms));
  }
}

}  // namespace
}  // namespace jitbroker::http
