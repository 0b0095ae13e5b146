// The HTTP listener on Boost.Beast 1.81 (Debian libboost1.81-dev): why Beast
// and not cpp-httplib, and the measurements behind it, are in
// docs/architecture.md ("The HTTP listener").
//
// Threads: `io_threads` run one io_context: accepting, TLS, reading and
// parsing with deadlines, writing. A complete request goes to a bounded
// worker pool (`worker_threads`) unless its route is inline; the answer is
// written back on the connection's strand. A connection waiting for bytes
// holds no thread.
#include "broker/http/transport.h"

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <deque>
#include <functional>
#include <future>
#include <mutex>
#include <thread>
#include <unordered_map>

#include <openssl/err.h>
#include <openssl/ssl.h>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/asio/strand.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/ssl.hpp>

#include "broker/common/log.h"
#include "broker/crypto/crypto.h"

namespace jitbroker::http {

namespace beast = boost::beast;
namespace bhttp = boost::beast::http;
namespace net = boost::asio;
namespace ssl = boost::asio::ssl;
using tcp = boost::asio::ip::tcp;
using SteadyClock = std::chrono::steady_clock;

// ---------------------------------------------------------------------------
// Request / Response helpers

std::string_view Request::path() const {
  std::string_view t = target;
  return t.substr(0, t.find('?'));
}

std::string_view Request::query() const {
  std::string_view t = target;
  const size_t q = t.find('?');
  return q == std::string_view::npos ? std::string_view() : t.substr(q + 1);
}

namespace {

bool IEquals(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) {
    return false;
  }
  auto lower = [](char c) { return c >= 'A' && c <= 'Z' ? static_cast<char>(c + 32) : c; };
  for (size_t i = 0; i < a.size(); ++i) {
    if (lower(a[i]) != lower(b[i])) {
      return false;
    }
  }
  return true;
}

}  // namespace

std::string_view Request::Header(std::string_view name) const {
  for (const auto& [k, v] : headers) {
    if (IEquals(k, name)) {
      return v;
    }
  }
  return {};
}

bool Request::HasHeader(std::string_view name) const { return HeaderCount(name) > 0; }

std::string Request::MediaType() const {
  std::string_view m = Header("Content-Type");
  m = m.substr(0, m.find(';'));
  while (!m.empty() && (m.back() == ' ' || m.back() == '\t')) {
    m.remove_suffix(1);
  }
  std::string out(m);
  std::transform(out.begin(), out.end(), out.begin(),
                 [](char c) { return c >= 'A' && c <= 'Z' ? static_cast<char>(c + 32) : c; });
  return out;
}

size_t Request::HeaderCount(std::string_view name) const {
  size_t n = 0;
  for (const auto& [k, v] : headers) {
    n += IEquals(k, name) ? 1 : 0;
  }
  return n;
}

void Response::SetHeader(std::string name, std::string value) {
  for (auto& [k, v] : headers) {
    if (IEquals(k, name)) {
      v = std::move(value);
      return;
    }
  }
  headers.emplace_back(std::move(name), std::move(value));
}

void RequestHandler::HandleStream(Request& request, BodyStream& /*body*/, Response& response) {
  Error e;
  e.code = ErrorCode::kNotFound;
  e.reason = "no_route";
  e.message = "no such endpoint";
  RenderError(request, e, response);
}

bool IsSafeClientRequestId(std::string_view id) {
  if (id.empty() || id.size() > 64) {
    return false;
  }
  for (char c : id) {
    const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                    c == '-' || c == '_' || c == '.';
    if (!ok) {
      return false;
    }
  }
  return true;
}

namespace {

Error TransportError(ErrorCode code, std::string reason, std::string message) {
  Error e;
  e.code = code;
  e.reason = std::move(reason);
  e.message = std::move(message);
  return e;
}

// ---------------------------------------------------------------------------
// Worker pool: a bounded queue of complete requests.

class WorkerPool {
 public:
  WorkerPool(size_t threads, size_t max_queued) : max_queued_(max_queued) {
    threads_.reserve(threads);
    for (size_t i = 0; i < threads; ++i) {
      threads_.emplace_back([this] { Run(); });
    }
  }
  ~WorkerPool() { Shutdown(); }

  // False when the queue is full (the caller answers 503) or stopped.
  bool TryPost(std::function<void()> task) {
    {
      std::lock_guard lock(mu_);
      if (stopping_ || queue_.size() >= max_queued_) {
        return false;
      }
      queue_.push_back(std::move(task));
    }
    cv_.notify_one();
    return true;
  }

  // Runs what is queued, then joins the threads.
  void Shutdown() {
    {
      std::lock_guard lock(mu_);
      if (stopping_ && threads_.empty()) {
        return;
      }
      stopping_ = true;
    }
    cv_.notify_all();
    for (auto& t : threads_) {
      if (t.joinable()) {
        t.join();
      }
    }
    threads_.clear();
  }

 private:
  void Run() {
    for (;;) {
      std::function<void()> task;
      {
        std::unique_lock lock(mu_);
        cv_.wait(lock, [&] { return stopping_ || !queue_.empty(); });
        if (queue_.empty()) {
          return;  // stopping and drained
        }
        task = std::move(queue_.front());
        queue_.pop_front();
      }
      task();
    }
  }

  const size_t max_queued_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<std::function<void()>> queue_;  // guarded by mu_
  bool stopping_ = false;                    // guarded by mu_
  std::vector<std::thread> threads_;
};

}  // namespace

// ---------------------------------------------------------------------------
// Shared state

struct Transport::Impl {
  TransportOptions opts;
  RequestHandler* handler = nullptr;
  std::shared_ptr<spdlog::logger> log = log::Get("http");
  std::atomic<bool> running{false};
  std::atomic<bool> stopping{false};

  // Connections, total and per source address.
  mutable std::mutex conn_mu;
  size_t connections = 0;                               // guarded by conn_mu
  std::unordered_map<std::string, size_t> per_address;  // guarded by conn_mu
  // Requests being handled (queued or running), for draining at Stop().
  std::atomic<size_t> in_flight{0};
  std::mutex drain_mu;
  std::condition_variable drain_cv;

  std::unique_ptr<WorkerPool> workers;
  std::vector<std::thread> io_threads;
  // The TLS context new connections get (null: plain HTTP); replaced by
  // ReloadTls. Each TLS session holds the one it was accepted with.
  std::shared_ptr<ssl::context> tls;  // guarded by tls_mu
  std::mutex tls_mu;
  // Declared last, destroyed first: destroying the io_context destroys the
  // sessions its pending handlers hold, and they release their counts above.
  net::io_context ioc;
  std::optional<tcp::acceptor> acceptor;

  ~Impl() { acceptor.reset(); }

  // Admits a connection from `addr`: false when a cap is reached. A refused
  // connection is counted too (it is answered, then closed), so that every
  // session releases exactly what it holds.
  bool Admit(const std::string& addr) {
    std::lock_guard lock(conn_mu);
    size_t& n = per_address[addr];
    const bool ok = connections < opts.max_connections && n < opts.max_connections_per_address;
    ++n;
    ++connections;
    return ok;
  }
  void Release(const std::string& addr) {
    std::lock_guard lock(conn_mu);
    --connections;
    auto it = per_address.find(addr);
    if (it != per_address.end() && --it->second == 0) {
      per_address.erase(it);
    }
  }
  void RequestDone() {
    if (in_flight.fetch_sub(1) == 1) {
      std::lock_guard lock(drain_mu);
      drain_cv.notify_all();
    }
  }

  void Accept();
  void RunIo();
};

namespace {

// A connection: plain TCP (beast::tcp_stream) or TLS over it.
template <class Stream>
class Session : public std::enable_shared_from_this<Session<Stream>> {
 public:
  template <class... Args>
  Session(Transport::Impl* impl, std::string remote, std::shared_ptr<void> keep, Args&&... args)
      : impl_(impl),
        remote_(std::move(remote)),
        keep_(std::move(keep)),
        stream_(std::forward<Args>(args)...),
        buffer_(impl_->opts.max_header_bytes + 16 * 1024) {}

  ~Session() { impl_->Release(remote_); }

  void Start() {
    if constexpr (kTls) {
      Lowest().expires_after(impl_->opts.request_timeout);
      stream_.async_handshake(ssl::stream_base::server,
                              [self = this->shared_from_this()](beast::error_code ec) {
                                if (ec) {
                                  return self->Abort();
                                }
                                self->NoteClientCertificate();
                                self->WaitForRequest();
                              });
    } else {
      WaitForRequest();
    }
  }

  // After the handshake: the fingerprint of a client certificate the CA
  // verified (OpenSSL has already failed the handshake for one it did not).
  void NoteClientCertificate() {
    if constexpr (kTls) {
      SSL* ssl = stream_.native_handle();
      X509* cert = SSL_get0_peer_certificate(ssl);
      if (cert == nullptr || SSL_get_verify_result(ssl) != X509_V_OK) {
        return;
      }
      unsigned char* der = nullptr;
      const int len = i2d_X509(cert, &der);
      if (len > 0) {
        client_cert_sha256_ = crypto::Sha256Hex(
            std::string_view(reinterpret_cast<const char*>(der), static_cast<size_t>(len)));
      }
      OPENSSL_free(der);
    }
  }

  // Answers `e` without reading anything and closes (connection caps).
  void RefuseAndClose(const Error& e) {
    Request head;
    head.remote_addr = remote_;
    head.request_id = crypto::NewPublicId("req_", 12);
    started_ = SteadyClock::now();
    auto res = std::make_shared<Response>();
    impl_->handler->RenderError(head, e, *res);
    res->close = true;
    if constexpr (kTls) {
      // Even a refusal needs the handshake first; bound it tightly.
      Lowest().expires_after(std::chrono::seconds(2));
      stream_.async_handshake(ssl::stream_base::server,
                              [self = this->shared_from_this(), head = std::move(head),
                               res](beast::error_code ec) mutable {
                                if (ec) {
                                  return self->Abort();
                                }
                                self->Write(std::move(head), std::move(res), false);
                              });
    } else {
      Write(std::move(head), std::move(res), false);
    }
  }

 private:
  static constexpr bool kTls = !std::is_same_v<Stream, beast::tcp_stream>;

  beast::tcp_stream& Lowest() { return beast::get_lowest_layer(stream_); }

  // Waits for the first byte of a request (idle deadline), then reads its
  // head and body under one request deadline.
  void WaitForRequest() {
    if (impl_->stopping.load()) {
      return Close();
    }
    if (buffer_.size() > 0) {
      return ReadHead();  // pipelined bytes already here
    }
    Lowest().expires_after(served_ == 0 ? impl_->opts.request_timeout : impl_->opts.idle_timeout);
    auto buf = buffer_.prepare(4096);
    stream_.async_read_some(buf, [self = this->shared_from_this()](beast::error_code ec, size_t n) {
      if (ec) {
        return self->Abort();  // idle timeout, EOF or reset: nothing to answer
      }
      self->buffer_.commit(n);
      self->ReadHead();
    });
  }

  void ReadHead() {
    started_ = SteadyClock::now();
    parser_.emplace();
    parser_->header_limit(static_cast<std::uint32_t>(impl_->opts.max_header_bytes));
    // Beast checks a Content-Length against this when the head completes;
    // the route's own limit is set once the route is known.
    parser_->body_limit(impl_->opts.max_body_bytes);
    Lowest().expires_after(impl_->opts.request_timeout);
    bhttp::async_read_header(
        stream_, buffer_, *parser_,
        [self = this->shared_from_this()](beast::error_code ec, size_t) { self->OnHead(ec); });
  }

  void OnHead(beast::error_code ec) {
    Request head;
    head.remote_addr = remote_;
    head.client_cert_sha256 = client_cert_sha256_;
    head.request_id = crypto::NewPublicId("req_", 12);
    if (ec) {
      if (ec == bhttp::error::body_limit) {
        route_.max_body_bytes = impl_->opts.max_body_bytes;
        return Fail(std::move(head), TooLarge(), 413);
      }
      if (ec == bhttp::error::header_limit) {
        return Fail(std::move(head),
                    TransportError(ErrorCode::kInvalidArgument, "header_too_large",
                                   "the request head exceeds " +
                                       std::to_string(impl_->opts.max_header_bytes) + " bytes"),
                    431);
      }
      if (ec == beast::error::timeout) {
        return Fail(std::move(head),
                    TransportError(ErrorCode::kInvalidArgument, "request_timeout",
                                   "the request head did not arrive in time"),
                    408);
      }
      if (ec == bhttp::error::end_of_stream || ec == net::error::eof ||
          ec == net::error::connection_reset || ec == net::error::operation_aborted) {
        return Abort();
      }
      return Fail(std::move(head),
                  TransportError(ErrorCode::kInvalidArgument, "bad_request",
                                 "the request could not be read: " + ec.message()),
                  400);
    }
    const auto& msg = parser_->get();
    head.method = std::string(msg.method_string());
    head.target = std::string(msg.target());
    size_t fields = 0;
    for (const auto& f : msg) {
      if (++fields > impl_->opts.max_header_count) {
        head.headers.clear();
        return Fail(
            std::move(head),
            TransportError(ErrorCode::kInvalidArgument, "too_many_headers",
                           "the request has more than " +
                               std::to_string(impl_->opts.max_header_count) + " header fields"),
            431);
      }
      head.headers.emplace_back(std::string(f.name_string()), std::string(f.value()));
    }
    if (std::string_view given = head.Header("X-Request-Id"); IsSafeClientRequestId(given)) {
      head.client_request_id = std::string(given);
    }
    // RFC 9112 §6.1/§6.3: a Transfer-Encoding other than a final "chunked",
    // or more than one of them, is ambiguous framing: refuse and close.
    if (const size_t te = head.HeaderCount("Transfer-Encoding"); te > 0) {
      if (te > 1 || !parser_->chunked()) {
        return Fail(std::move(head),
                    TransportError(ErrorCode::kInvalidArgument, "bad_framing",
                                   "Transfer-Encoding must be exactly \"chunked\""),
                    400);
      }
    }
    if (msg.version() != 11 && msg.version() != 10) {
      return Fail(std::move(head),
                  TransportError(ErrorCode::kInvalidArgument, "bad_request",
                                 "only HTTP/1.0 and HTTP/1.1 are served"),
                  505);
    }
    keep_alive_ = parser_->keep_alive();

    const bool has_body = parser_->chunked() || parser_->content_length().value_or(0) > 0;
    auto plan = impl_->handler->Plan(head);
    if (!plan) {
      if (has_body) {
        return Fail(std::move(head), plan.error(), 0);  // the unread body cannot be skipped safely
      }
      // Nothing left to read of this request: answer and keep the connection.
      ++served_;
      parser_.reset();
      auto res = std::make_shared<Response>();
      impl_->handler->RenderError(head, plan.error(), *res);
      return Write(std::move(head), std::move(res), true);
    }
    route_ = *plan;
    if (has_body) {
      std::string_view ce = head.Header("Content-Encoding");
      if (!ce.empty() && !IEquals(ce, "identity") && !route_.allow_content_encoding) {
        return Fail(std::move(head),
                    TransportError(ErrorCode::kUnsupportedMediaType, "unsupported_content_encoding",
                                   "request bodies must not be content-encoded"),
                    415);
      }
      if (parser_->chunked() && !route_.allow_chunked) {
        return Fail(std::move(head),
                    TransportError(ErrorCode::kInvalidArgument, "length_required",
                                   "this endpoint needs a Content-Length, not a chunked body"),
                    411);
      }
      if (parser_->content_length() && *parser_->content_length() > route_.max_body_bytes) {
        return Fail(std::move(head), TooLarge(), 413);
      }
    }
    parser_->body_limit(route_.max_body_bytes);
    if (route_.streaming) {
      return DispatchStream(std::move(head));
    }
    head_ = std::move(head);
    if (has_body && IEquals(head_.Header("Expect"), "100-continue")) {
      // Tell the client to send the body now (curl otherwise waits a second).
      static const std::string kContinue = "HTTP/1.1 100 Continue\r\n\r\n";
      net::async_write(stream_, net::buffer(kContinue),
                       [self = this->shared_from_this()](beast::error_code write_ec, size_t) {
                         if (write_ec) {
                           return self->Abort();
                         }
                         self->ReadBody();
                       });
      return;
    }
    ReadBody();
  }

  Error TooLarge() const {
    return TransportError(ErrorCode::kPayloadTooLarge, "payload_too_large",
                          "request body exceeds the size limit of " +
                              std::to_string(route_.max_body_bytes) + " bytes");
  }

  void ReadBody() {
    // Same deadline as the head: the whole request must arrive in time.
    bhttp::async_read(
        stream_, buffer_, *parser_,
        [self = this->shared_from_this()](beast::error_code ec, size_t) { self->OnBody(ec); });
  }

  void OnBody(beast::error_code ec) {
    Request req = std::move(head_);
    if (ec) {
      if (ec == bhttp::error::body_limit) {
        return Fail(std::move(req), TooLarge(), 413);
      }
      if (ec == beast::error::timeout) {
        return Fail(std::move(req),
                    TransportError(ErrorCode::kInvalidArgument, "request_timeout",
                                   "the request body did not arrive in time"),
                    408);
      }
      if (ec == bhttp::error::end_of_stream || ec == bhttp::error::partial_message ||
          ec == net::error::eof || ec == net::error::connection_reset ||
          ec == net::error::operation_aborted) {
        return Abort();
      }
      return Fail(std::move(req),
                  TransportError(ErrorCode::kInvalidArgument, "bad_request",
                                 "the request body could not be read: " + ec.message()),
                  400);
    }
    Lowest().expires_never();
    req.body = std::move(parser_->get().body());
    parser_.reset();
    Dispatch(std::move(req));
  }

  void Dispatch(Request req) {
    ++served_;
    auto res = std::make_shared<Response>();
    res->bytes_in = req.body.size();
    if (route_.inline_handler) {
      Handle(req, *res);
      return Write(std::move(req), std::move(res), true);
    }
    impl_->in_flight.fetch_add(1);
    auto shared_req = std::make_shared<Request>(std::move(req));
    const auto queued_at = SteadyClock::now();
    // The handler's answer is posted back to the connection's strand; until
    // then the io_context must not run out of work, or at shutdown (acceptor
    // closed, no other I/O pending) its threads return and the answer, and
    // RequestDone, would never run.
    auto work = std::make_shared<net::executor_work_guard<net::io_context::executor_type>>(
        impl_->ioc.get_executor());
    auto task = [self = this->shared_from_this(), shared_req, res, queued_at, work] {
      // A request that waited longer than its own deadline is answered 503
      // rather than run: its client has likely given up.
      if (SteadyClock::now() - queued_at > self->impl_->opts.request_timeout) {
        self->impl_->handler->Shed();
        self->Overloaded(*shared_req, *res);
      } else {
        self->Handle(*shared_req, *res);
      }
      net::post(self->stream_.get_executor(), [self, shared_req, res] {
        self->Write(std::move(*shared_req), res, true);
        self->impl_->RequestDone();
      });
      work->reset();
    };
    if (!impl_->workers->TryPost(std::move(task))) {
      impl_->RequestDone();
      impl_->handler->Shed();
      Overloaded(*shared_req, *res);
      Write(std::move(*shared_req), std::move(res), true);
    }
  }

  // ---- Streaming routes (RoutePlan::streaming) ---------------------------
  //
  // The handler runs on a worker thread; each of its reads and writes is
  // posted to this connection's strand as one asynchronous operation, and the
  // worker waits for its completion. Only one operation is ever pending, and
  // the strand is the only thread touching the parser and serializer while
  // it runs, so the session needs no lock.

  class Bridge final : public BodyStream {
   public:
    explicit Bridge(Session* s) : s_(s) {}
    Result<size_t> Read(char* buf, size_t max) override { return s_->StreamRead(buf, max); }
    Status WriteHead(const Response& head) override { return s_->StreamWriteHead(head); }
    Status Write(std::string_view data) override { return s_->StreamWrite(data); }
    void Abort() override { s_->stream_failed_ = true; }
    bool body_done() const override { return s_->stream_body_done_; }
    bool head_written() const override { return s_->stream_head_written_; }

   private:
    Session* s_;
  };

  void DispatchStream(Request head) {
    ++served_;
    Lowest().expires_never();
    sparser_.emplace(std::move(*parser_));
    parser_.reset();
    sparser_->body_limit(route_.max_body_bytes);
    stream_body_done_ = sparser_->is_done();
    stream_head_written_ = false;
    stream_failed_ = false;
    stream_in_ = 0;
    expect_continue_ = !stream_body_done_ && IEquals(head.Header("Expect"), "100-continue");
    stream_deadline_ = started_ + route_.stream_total;
    head_request_id_ = head.request_id;
    impl_->in_flight.fetch_add(1);
    auto shared_req = std::make_shared<Request>(std::move(head));
    auto res = std::make_shared<Response>();
    auto work = std::make_shared<net::executor_work_guard<net::io_context::executor_type>>(
        impl_->ioc.get_executor());
    auto task = [self = this->shared_from_this(), shared_req, res, work] {
      Bridge bridge(self.get());
      try {
        self->impl_->handler->HandleStream(*shared_req, bridge, *res);
      } catch (const std::exception& e) {
        self->impl_->log->error("event=unhandled_exception request_id={} what={}",
                                shared_req->request_id, log::Quoted(e.what()));
        *res = Response{};
        self->impl_->handler->RenderError(*shared_req, Internal("internal error"), *res);
        self->stream_failed_ = true;
      }
      net::post(self->stream_.get_executor(), [self, shared_req, res] {
        self->EndStream(std::move(*shared_req), res);
        self->impl_->RequestDone();
      });
      work->reset();
    };
    if (!impl_->workers->TryPost(std::move(task))) {
      impl_->RequestDone();
      impl_->handler->Shed();
      sparser_.reset();
      Overloaded(*shared_req, *res);
      res->close = true;
      Write(std::move(*shared_req), std::move(res), false);
    }
  }

  // On the strand, after the handler returned.
  void EndStream(Request req, const std::shared_ptr<Response>& res) {
    res->bytes_in = stream_in_;
    if (!stream_head_written_) {
      sparser_.reset();
      const bool keep = stream_body_done_ && !stream_failed_;
      return Write(std::move(req), res, keep);
    }
    res->bytes_out = stream_out_;
    if (stream_failed_) {
      impl_->handler->Finished(req, *res, SteadyClock::now() - started_);
      sparser_.reset();
      sser_.reset();
      sres_.reset();
      return Abort();
    }
    // The last chunk.
    auto& body = sres_->body();
    body.data = nullptr;
    body.size = 0;
    body.more = false;
    Lowest().expires_after(route_.stream_idle);
    const bool keep = sres_->keep_alive();
    auto done = std::make_shared<Request>(std::move(req));
    bhttp::async_write(
        stream_, *sser_,
        [self = this->shared_from_this(), res, done, keep](beast::error_code ec, size_t) {
          self->impl_->handler->Finished(*done, *res, SteadyClock::now() - self->started_);
          self->sser_.reset();
          self->sres_.reset();
          self->sparser_.reset();
          if (ec || !keep) {
            return self->Close();
          }
          self->WaitForRequest();
        });
  }

  using OpResult = std::pair<beast::error_code, size_t>;
  using OpDone = std::function<void(beast::error_code, size_t)>;

  // Runs `start` on the strand (it begins one asynchronous operation and
  // hands `done` to it) and waits for the operation to complete.
  OpResult OnStrand(const std::function<void(OpDone)>& start) {
    auto promise = std::make_shared<std::promise<OpResult>>();
    auto future = promise->get_future();
    net::post(stream_.get_executor(), [&start, promise] {
      start([promise](beast::error_code ec, size_t n) { promise->set_value({ec, n}); });
    });
    return future.get();
  }

  // The deadline of the next operation: the route's idle bound, within its
  // total bound. Zero when the total bound has passed.
  std::chrono::milliseconds NextDeadline() const {
    const auto now = SteadyClock::now();
    if (now >= stream_deadline_) {
      return std::chrono::milliseconds(0);
    }
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(stream_deadline_ - now);
    return std::min(left, route_.stream_idle);
  }

  Error StreamError(beast::error_code ec, const char* what) {
    stream_failed_ = true;
    if (ec == bhttp::error::body_limit) {
      return TooLarge();
    }
    if (ec == beast::error::timeout) {
      return TransportError(ErrorCode::kInvalidArgument, "request_timeout",
                            std::string("the client was too slow ") + what);
    }
    if (ec == bhttp::error::end_of_stream || ec == bhttp::error::partial_message ||
        ec == net::error::eof || ec == net::error::connection_reset ||
        ec == net::error::broken_pipe || ec == net::error::operation_aborted) {
      return TransportError(ErrorCode::kUnavailable, "client_gone",
                            std::string("the client went away ") + what);
    }
    return TransportError(ErrorCode::kInvalidArgument, "bad_request",
                          std::string("the request body could not be read: ") + ec.message());
  }

  Status CheckStreamOpen(const char* what) {
    if (stream_failed_) {
      return std::unexpected(TransportError(ErrorCode::kUnavailable, "client_gone",
                                            std::string("the exchange has failed ") + what));
    }
    if (impl_->stopping.load()) {
      stream_failed_ = true;
      return std::unexpected(
          TransportError(ErrorCode::kUnavailable, "shutting_down", "the broker is shutting down"));
    }
    if (NextDeadline().count() <= 0) {
      stream_failed_ = true;
      return std::unexpected(TransportError(ErrorCode::kInvalidArgument, "request_timeout",
                                            "the transfer took longer than allowed"));
    }
    return OkStatus();
  }

  Result<size_t> StreamRead(char* buf, size_t max) {
    if (stream_body_done_ || max == 0) {
      return 0;
    }
    for (;;) {
      JITBROKER_RETURN_IF_ERROR(CheckStreamOpen("while sending the body"));
      if (expect_continue_) {
        expect_continue_ = false;
        static const std::string kContinue = "HTTP/1.1 100 Continue\r\n\r\n";
        auto [ec, n] = OnStrand([this](OpDone done) {
          Lowest().expires_after(NextDeadline());
          net::async_write(stream_, net::buffer(kContinue), std::move(done));
        });
        if (ec) {
          return std::unexpected(StreamError(ec, "before sending the body"));
        }
      }
      auto [ec, got] = OnStrand([this, buf, max](OpDone done) {
        auto& body = sparser_->get().body();
        body.data = buf;
        body.size = max;
        Lowest().expires_after(NextDeadline());
        bhttp::async_read_some(stream_, buffer_, *sparser_,
                               [this, max, done = std::move(done)](beast::error_code e, size_t) {
                                 done(e, max - sparser_->get().body().size);
                               });
      });
      if (ec == bhttp::error::need_buffer) {
        ec = {};
      }
      if (ec) {
        return std::unexpected(StreamError(ec, "while sending the body"));
      }
      stream_in_ += got;
      stream_body_done_ = sparser_->is_done();
      if (got > 0 || stream_body_done_) {
        return got;
      }
    }
  }

  Status StreamWriteHead(const Response& head) {
    if (stream_head_written_) {
      return std::unexpected(Internal("the answer's head was already written"));
    }
    JITBROKER_RETURN_IF_ERROR(CheckStreamOpen("before the answer"));
    auto [ec, n] = OnStrand([this, &head](OpDone done) {
      sres_.emplace();
      sres_->version(11);
      sres_->result(static_cast<unsigned>(head.status));
      sres_->set("X-Request-Id", head_request_id_);
      if (!head.content_type.empty()) {
        sres_->set(bhttp::field::content_type, head.content_type);
      }
      for (const auto& [k, v] : head.headers) {
        sres_->set(k, v);
      }
      sres_->chunked(true);
      sres_->keep_alive(keep_alive_ && stream_body_done_ && !impl_->stopping.load() &&
                        served_ < impl_->opts.max_requests_per_connection);
      sres_->body().data = nullptr;
      sres_->body().size = 0;
      sres_->body().more = true;
      sser_.emplace(*sres_);
      Lowest().expires_after(NextDeadline());
      bhttp::async_write_header(stream_, *sser_, std::move(done));
    });
    if (ec) {
      return std::unexpected(StreamError(ec, "while the answer was sent"));
    }
    stream_head_written_ = true;
    stream_out_ = 0;
    return OkStatus();
  }

  Status StreamWrite(std::string_view data) {
    if (!stream_head_written_) {
      return std::unexpected(Internal("the answer's head must be written first"));
    }
    if (data.empty()) {
      return OkStatus();
    }
    JITBROKER_RETURN_IF_ERROR(CheckStreamOpen("while the answer was sent"));
    auto [ec, n] = OnStrand([this, data](OpDone done) {
      auto& body = sres_->body();
      body.data = const_cast<char*>(data.data());
      body.size = data.size();
      body.more = true;
      Lowest().expires_after(NextDeadline());
      bhttp::async_write(stream_, *sser_, std::move(done));
    });
    if (ec == bhttp::error::need_buffer) {
      ec = {};
    }
    if (ec) {
      return std::unexpected(StreamError(ec, "while the answer was sent"));
    }
    stream_out_ += data.size();
    return OkStatus();
  }

  void Overloaded(const Request& req, Response& res) {
    Error e = TransportError(ErrorCode::kUnavailable, "overloaded",
                             "the broker is saturated; retry shortly");
    e.retryable = true;
    e.retry_after = std::chrono::seconds(1);
    impl_->handler->RenderError(req, e, res);
    res.SetHeader("Retry-After", "1");
  }

  void Handle(Request& req, Response& res) {
    try {
      impl_->handler->Handle(req, res);
    } catch (const std::exception& e) {
      impl_->log->error("event=unhandled_exception request_id={} what={}", req.request_id,
                        log::Quoted(e.what()));
      res = Response{};
      impl_->handler->RenderError(req, Internal("internal error"), res);
    } catch (...) {
      impl_->log->error("event=unhandled_exception request_id={}", req.request_id);
      res = Response{};
      impl_->handler->RenderError(req, Internal("internal error"), res);
    }
  }

  // Answers a request that could not be read completely (or at all) and
  // closes: the rest of the stream cannot be trusted to frame a request.
  void Fail(Request req, const Error& e, int status) {
    parser_.reset();
    auto res = std::make_shared<Response>();
    impl_->handler->RenderError(req, e, *res);
    if (status != 0) {
      res->status = status;
    }
    res->close = true;
    Write(std::move(req), std::move(res), false);
  }

  void Write(Request req, std::shared_ptr<Response> res, bool may_keep_alive) {
    const bool keep = may_keep_alive && keep_alive_ && !res->close && !impl_->stopping.load() &&
                      served_ < impl_->opts.max_requests_per_connection;
    auto out = std::make_shared<bhttp::response<bhttp::string_body>>();
    out->version(11);
    out->result(static_cast<unsigned>(res->status));
    out->set("X-Request-Id", req.request_id);
    if (!res->content_type.empty()) {
      out->set(bhttp::field::content_type, res->content_type);
    }
    for (const auto& [k, v] : res->headers) {
      out->set(k, v);
    }
    out->body() = std::move(res->body);
    res->bytes_out = out->body().size();
    out->keep_alive(keep);
    out->prepare_payload();
    Lowest().expires_after(impl_->opts.write_timeout);
    auto done = std::make_shared<Request>(std::move(req));
    bhttp::async_write(
        stream_, *out,
        [self = this->shared_from_this(), out, res, done, keep](beast::error_code ec, size_t) {
          self->impl_->handler->Finished(*done, *res, SteadyClock::now() - self->started_);
          if (ec || !keep) {
            return self->Close();
          }
          self->WaitForRequest();
        });
  }

  void Close() {
    beast::error_code ignored;
    if constexpr (kTls) {
      Lowest().expires_after(std::chrono::seconds(2));
      stream_.async_shutdown([self = this->shared_from_this()](beast::error_code) {
        beast::error_code ignored2;
        self->Lowest().socket().shutdown(tcp::socket::shutdown_both, ignored2);
        self->Lowest().close();
      });
    } else {
      Lowest().socket().shutdown(tcp::socket::shutdown_send, ignored);
      // Read nothing more; the peer sees the answer, then EOF.
      Lowest().close();
    }
  }

  void Abort() {
    beast::error_code ignored;
    Lowest().socket().shutdown(tcp::socket::shutdown_both, ignored);
    Lowest().close();
  }

  Transport::Impl* impl_;  // outlives every session (it owns the io_context)
  std::string remote_;
  std::string client_cert_sha256_;  // NoteClientCertificate; empty: none
  // What the stream needs to outlive it (the TLS context it was made with).
  std::shared_ptr<void> keep_;
  Stream stream_;
  beast::flat_buffer buffer_;
  std::optional<bhttp::request_parser<bhttp::string_body>> parser_;
  // A streaming request (DispatchStream): its parser, answer and serializer.
  std::optional<bhttp::request_parser<bhttp::buffer_body>> sparser_;
  std::optional<bhttp::response<bhttp::buffer_body>> sres_;
  std::optional<bhttp::response_serializer<bhttp::buffer_body>> sser_;
  SteadyClock::time_point stream_deadline_;
  std::string head_request_id_;
  std::atomic<bool> stream_body_done_{false};
  std::atomic<bool> stream_head_written_{false};
  std::atomic<bool> stream_failed_{false};
  bool expect_continue_ = false;
  size_t stream_in_ = 0;
  size_t stream_out_ = 0;
  Request head_;
  RoutePlan route_;
  bool keep_alive_ = false;
  size_t served_ = 0;
  SteadyClock::time_point started_ = SteadyClock::now();
};

}  // namespace

void Transport::Impl::Accept() {
  acceptor->async_accept(net::make_strand(ioc), [this](beast::error_code ec, tcp::socket socket) {
    if (ec) {
      if (ec == net::error::operation_aborted || stopping.load() || !acceptor->is_open()) {
        return;  // stopping
      }
      // EMFILE and friends: log, back off briefly, keep accepting.
      log->warn("event=accept_failed error={}", log::Quoted(ec.message()));
      auto timer = std::make_shared<net::steady_timer>(acceptor->get_executor(),
                                                       std::chrono::milliseconds(50));
      timer->async_wait([this, timer](beast::error_code) {
        if (!stopping.load()) {
          Accept();
        }
      });
      return;
    }
    beast::error_code ep_ec;
    const auto ep = socket.remote_endpoint(ep_ec);
    std::string addr = ep_ec ? std::string("unknown") : ep.address().to_string();
    socket.set_option(tcp::no_delay(true), ep_ec);
    const bool admitted = Admit(addr);
    Error refusal = TransportError(ErrorCode::kUnavailable, "too_many_connections",
                                   "too many connections from this address or in all; retry "
                                   "shortly");
    refusal.retryable = true;
    refusal.retry_after = std::chrono::seconds(1);
    std::shared_ptr<ssl::context> ctx;
    {
      std::lock_guard lock(tls_mu);
      ctx = tls;
    }
    if (ctx) {
      ssl::context& c = *ctx;
      auto s = std::make_shared<Session<beast::ssl_stream<beast::tcp_stream>>>(
          this, std::move(addr), std::move(ctx), std::move(socket), c);
      admitted ? s->Start() : s->RefuseAndClose(refusal);
    } else {
      auto s = std::make_shared<Session<beast::tcp_stream>>(this, std::move(addr), nullptr,
                                                            std::move(socket));
      admitted ? s->Start() : s->RefuseAndClose(refusal);
    }
    if (!stopping.load()) {
      Accept();
    }
  });
}

void Transport::Impl::RunIo() {
  for (;;) {
    try {
      ioc.run();
      return;
    } catch (const std::exception& e) {
      log->error("event=io_exception what={}", log::Quoted(e.what()));
    } catch (...) {
      log->error("event=io_exception");
    }
  }
}

// ---------------------------------------------------------------------------
// Transport

Transport::~Transport() {
  if (impl_) {
    Stop(std::chrono::milliseconds(0));
  }
}

namespace {

// TLS 1.2 suites: forward secrecy and AEAD only (Mozilla's "intermediate"
// list); TLS 1.3 keeps OpenSSL's default suites, all of which qualify.
constexpr const char* kTls12Ciphers =
    "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:"
    "ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384:"
    "ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305";

// A server context from the certificate chain and key at `opts`' paths:
// TLS 1.2 at least, the suites above, no compression, no renegotiation.
Result<std::shared_ptr<ssl::context>> MakeTlsContext(const TransportOptions& opts) {
  auto ctx = std::make_shared<ssl::context>(ssl::context::tls_server);
  beast::error_code ec;
  ctx->set_options(ssl::context::default_workarounds | ssl::context::no_sslv2 |
                       ssl::context::no_sslv3 | ssl::context::no_tlsv1 | ssl::context::no_tlsv1_1 |
                       ssl::context::single_dh_use,
                   ec);
  SSL_CTX* native = ctx->native_handle();
  if (!ec && (SSL_CTX_set_min_proto_version(native, TLS1_2_VERSION) != 1 ||
              SSL_CTX_set_cipher_list(native, kTls12Ciphers) != 1)) {
    return std::unexpected(Error{ErrorCode::kInternal, "tls_setup",
                                 "server.tls: cannot set the protocol versions or cipher suites",
                                 ""});
  }
  SSL_CTX_set_options(
      native, SSL_OP_NO_COMPRESSION | SSL_OP_NO_RENEGOTIATION | SSL_OP_CIPHER_SERVER_PREFERENCE);
  if (!ec) {
    ctx->use_certificate_chain_file(opts.tls_cert, ec);
  }
  if (!ec) {
    ctx->use_private_key_file(opts.tls_key, ssl::context::pem, ec);
  }
  if (!ec && !opts.tls_client_ca.empty()) {
    // Asked for, not required: agents authenticate with session tokens.
    // Presented, it must chain to the CA (the handshake fails otherwise).
    STACK_OF(X509_NAME)* names = SSL_load_client_CA_file(opts.tls_client_ca.c_str());
    static constexpr unsigned char kSessionContext[] = "jitbroker";
    if (names == nullptr ||
        SSL_CTX_load_verify_locations(native, opts.tls_client_ca.c_str(), nullptr) != 1 ||
        SSL_CTX_set_session_id_context(native, kSessionContext, sizeof kSessionContext - 1) != 1) {
      if (names != nullptr) {
        sk_X509_NAME_pop_free(names, X509_NAME_free);
      }
      return std::unexpected(Error{ErrorCode::kInvalidArgument, "invalid_config",
                                   "server.tls.client_ca: cannot load the CA certificates", ""});
    }
    SSL_CTX_set_client_CA_list(native, names);
    SSL_CTX_set_verify(native, SSL_VERIFY_PEER, nullptr);
    SSL_CTX_set_verify_depth(native, 4);
  }
  if (!ec && SSL_CTX_check_private_key(native) != 1) {
    ec = beast::error_code(static_cast<int>(ERR_get_error()), net::error::get_ssl_category());
  }
  if (ec) {
    return std::unexpected(Error{ErrorCode::kInvalidArgument, "invalid_config",
                                 "server.tls: cannot load the certificate or key", ec.message()});
  }
  return ctx;
}

}  // namespace

Result<std::unique_ptr<Transport>> Transport::Create(TransportOptions options,
                                                     RequestHandler* handler) {
  std::unique_ptr<Transport> t(new Transport());
  t->impl_ = std::make_unique<Impl>();
  Impl& impl = *t->impl_;
  impl.opts = std::move(options);
  impl.handler = handler;
  if (!impl.opts.tls_cert.empty()) {
    JITBROKER_ASSIGN_OR_RETURN(impl.tls, MakeTlsContext(impl.opts));
  }
  return t;
}

Status Transport::ReloadTls() {
  Impl& impl = *impl_;
  if (impl.opts.tls_cert.empty()) {
    return std::unexpected(
        FailedPrecondition("tls_not_enabled", "the listener serves plain HTTP (no server.tls)"));
  }
  JITBROKER_ASSIGN_OR_RETURN(std::shared_ptr<ssl::context> fresh, MakeTlsContext(impl.opts));
  std::lock_guard lock(impl.tls_mu);
  impl.tls = std::move(fresh);
  return OkStatus();
}

Result<int> Transport::Bind() {
  Impl& impl = *impl_;
  beast::error_code ec;
  auto address =
      net::ip::make_address(impl.opts.host == "localhost" ? "127.0.0.1" : impl.opts.host, ec);
  if (ec) {
    tcp::resolver resolver(impl.ioc);
    auto results = resolver.resolve(impl.opts.host, "", ec);
    if (ec || results.empty()) {
      return std::unexpected(Unavailable("bind_failed", "cannot resolve " + impl.opts.host));
    }
    address = results.begin()->endpoint().address();
  }
  const tcp::endpoint ep(address, static_cast<unsigned short>(impl.opts.port));
  impl.acceptor.emplace(net::make_strand(impl.ioc));
  impl.acceptor->open(ep.protocol(), ec);
  if (!ec) {
    impl.acceptor->set_option(net::socket_base::reuse_address(true), ec);
  }
  if (!ec) {
    impl.acceptor->bind(ep, ec);
  }
  if (!ec) {
    impl.acceptor->listen(net::socket_base::max_listen_connections, ec);
  }
  if (ec) {
    impl.acceptor.reset();
    return std::unexpected(Unavailable(
        "bind_failed", "cannot listen on " + impl.opts.host + ":" + std::to_string(impl.opts.port),
        ec.message()));
  }
  return static_cast<int>(impl.acceptor->local_endpoint().port());
}

void Transport::Serve() {
  Impl* impl = impl_.get();
  if (!impl->acceptor || impl->stopping.load()) {
    return;
  }
  impl->workers = std::make_unique<WorkerPool>(static_cast<size_t>(impl->opts.worker_threads),
                                               impl->opts.max_queued_requests);
  impl->running.store(true);
  impl->Accept();
  const int n = std::max(1, impl->opts.io_threads);
  for (int i = 1; i < n; ++i) {
    impl->io_threads.emplace_back([impl] { impl->RunIo(); });
  }
  impl->RunIo();
  for (auto& t : impl->io_threads) {
    if (t.joinable()) {
      t.join();
    }
  }
  impl->io_threads.clear();
  impl->running.store(false);
}

void Transport::Stop(std::chrono::milliseconds drain) {
  Impl* impl = impl_.get();
  if (impl == nullptr || impl->stopping.exchange(true)) {
    return;
  }
  // Stop accepting, on the acceptor's strand.
  if (impl->acceptor) {
    net::post(impl->acceptor->get_executor(), [impl] {
      beast::error_code ignored;
      impl->acceptor->close(ignored);
    });
  }
  // Let the requests being handled finish and their answers go out.
  {
    std::unique_lock lock(impl->drain_mu);
    impl->drain_cv.wait_for(lock, drain, [&] { return impl->in_flight.load() == 0; });
  }
  // Workers finish what they run (handlers end by themselves: long polls
  // are bounded) before the I/O threads stop.
  if (impl->workers) {
    impl->workers->Shutdown();
  }
  impl->ioc.stop();
}

bool Transport::IsRunning() const { return impl_ && impl_->running.load(); }

size_t Transport::ConnectionCount() const {
  std::lock_guard lock(impl_->conn_mu);
  return impl_->connections;
}

}  // namespace jitbroker::http
