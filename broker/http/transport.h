// Transport: the broker's HTTP/1.1 listener (docs/architecture.md, "The HTTP
// listener"). It owns sockets, TLS, framing and every per-connection bound;
// what a request means is the RequestHandler's business (broker/http/server.cc).
//
// What one client can make the daemon hold is bounded before any handler
// runs (docs/architecture.md lists the limits and their defaults):
//   - the request head: bytes (`max_header_bytes`) and field count
//     (`max_header_count`), both enforced while it is parsed;
//   - the body: the route's own limit, enforced on the decoded length; routes
//     that buffer refuse chunked and content-encoded bodies before reading
//     them (411/415) and a declared Content-Length above the limit (413);
//   - time: one deadline for the whole request head and body
//     (`request_timeout_ms`, not per read), one for writing the answer, and
//     an idle keep-alive deadline; slow clients hold a socket, never a thread;
//   - connections: a total cap and a cap per source address; beyond them a
//     connection is answered 503 and closed;
//   - work: a bounded worker pool with a bounded queue; a full queue answers
//     503 with Retry-After at once instead of queueing silently.
// Ambiguous framing (Content-Length with Transfer-Encoding, two different
// Content-Lengths, a Transfer-Encoding other than chunked) is answered 400 and
// the connection closed (RFC 9112 §6.3).
//
// Thread-safety: Start/Stop from one thread. RequestHandler methods are
// called concurrently from I/O and worker threads; the handler must be
// thread-safe. A Request is handled by one thread at a time.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "jitbroker/error.h"
#include "jitbroker/result.h"

namespace jitbroker::http {

struct TransportOptions {
  std::string host = "127.0.0.1";
  int port = 0;          // 0 = pick a free port
  std::string tls_cert;  // PEM paths; both empty = plain HTTP
  std::string tls_key;
  // PEM CA bundle: when set, the handshake asks for a client certificate
  // (optional) and verifies one that is presented against it; a presented
  // certificate that does not verify fails the handshake.
  std::string tls_client_ca;
  int io_threads = 2;                   // sockets, TLS and parsing
  int worker_threads = 8;               // handlers
  size_t max_queued_requests = 256;     // complete requests waiting for a worker
  size_t max_header_bytes = 16 * 1024;  // request line + fields
  size_t max_header_count = 100;        // fields
  size_t max_body_bytes = 64 * 1024;    // the most any route accepts (decoded)
  size_t max_connections = 1024;
  size_t max_connections_per_address = 64;
  std::chrono::milliseconds request_timeout{10000};  // whole head + body
  std::chrono::milliseconds write_timeout{10000};    // whole answer
  std::chrono::milliseconds idle_timeout{30000};     // between keep-alive requests
  size_t max_requests_per_connection = 10000;
};

using Headers = std::vector<std::pair<std::string, std::string>>;

struct Request {
  std::string method;              // as sent ("GET", "POST", …)
  std::string target;              // the request-target as sent
  std::string_view path() const;   // target up to '?', not decoded
  std::string_view query() const;  // after '?', not decoded; empty if none
  bool has_query() const { return target.find('?') != std::string::npos; }
  Headers headers;   // in order, names as sent
  std::string body;  // decoded (de-chunked) bytes
  std::string remote_addr;
  // SHA-256 (lower-case hex) of the DER of the TLS client certificate the
  // connection presented and tls_client_ca verified; empty if none.
  std::string client_cert_sha256;
  std::string request_id;                // always the server's own (req_…)
  std::string client_request_id;         // a valid client X-Request-Id, else empty
  std::vector<std::string> path_params;  // filled by the router
  std::string route = "unmatched";       // the route's label (metrics, access log)
  int route_id = -1;                     // the router's own index, set by Plan

  // The first field named `name` (case-insensitive), or empty.
  std::string_view Header(std::string_view name) const;
  bool HasHeader(std::string_view name) const;
  // How many fields are named `name` (case-insensitive).
  size_t HeaderCount(std::string_view name) const;
  // The media type of Content-Type, lower-cased, without parameters.
  std::string MediaType() const;
};

struct Response {
  int status = 200;
  std::string content_type;  // empty: no Content-Type
  std::string body;
  Headers headers;
  bool close = false;    // close the connection after this answer
  size_t bytes_in = 0;   // body bytes read (for the access log)
  size_t bytes_out = 0;  // body bytes sent (set by the transport)

  void SetHeader(std::string name, std::string value);
};

// What the router decides once a request head is read, before its body.
struct RoutePlan {
  size_t max_body_bytes = 0;    // decoded body limit of this route
  bool inline_handler = false;  // cheap and non-blocking: run on the I/O thread
  bool allow_chunked = false;   // streaming routes only
  // A streaming route (RequestHandler::HandleStream): the body is left unread
  // for the handler, which reads it and may write its answer piecewise
  // through a BodyStream, in bounded memory whatever the sizes.
  bool streaming = false;
  bool allow_content_encoding = false;  // streaming routes: the body passes on still encoded
  std::chrono::milliseconds stream_idle{30000};    // longest wait for one read or write
  std::chrono::milliseconds stream_total{600000};  // the whole request and answer
};

// The body and answer of a streaming request, for the worker thread that runs
// RequestHandler::HandleStream. Each call blocks that thread while the
// connection's I/O thread does the work, bounded by the route's stream_idle
// (per call) and stream_total (from the request head). An error ends the
// exchange: the transport closes the connection once the handler returns.
class BodyStream {
 public:
  virtual ~BodyStream() = default;
  // Reads up to `max` bytes of the body (de-chunked, still content-encoded if
  // it was); 0 once it has ended. "Expect: 100-continue" is answered by the
  // first Read, so a handler that refuses without reading never invites the
  // body. Errors: kPayloadTooLarge "payload_too_large" (over max_body_bytes),
  // kInvalidArgument "request_timeout" or "bad_request", kUnavailable
  // "client_gone" (the client closed or reset) or "shutting_down".
  [[nodiscard]] virtual Result<size_t> Read(char* buf, size_t max) = 0;
  // Sends the status line and fields of `head` (status, content_type,
  // headers; its body is ignored); a chunked body follows. At most once.
  [[nodiscard]] virtual Status WriteHead(const Response& head) = 0;
  // Sends body bytes (after WriteHead). Errors: as Read.
  [[nodiscard]] virtual Status Write(std::string_view data) = 0;
  // Ends the exchange as failed: an answer already begun is cut off (the
  // connection is reset, so the client sees a truncated body, never a
  // complete-looking one); otherwise `response` is sent and the connection
  // closed.
  virtual void Abort() = 0;
  virtual bool body_done() const = 0;     // the whole body has been read
  virtual bool head_written() const = 0;  // WriteHead succeeded
};

class RequestHandler {
 public:
  virtual ~RequestHandler() = default;
  // Called with the head of a request (no body yet). Sets path_params when a
  // route matches. An Error is answered (problem+json) and, as the body has
  // not been read, the connection is closed.
  [[nodiscard]] virtual Result<RoutePlan> Plan(Request& head) = 0;
  virtual void Handle(Request& request, Response& response) = 0;
  // A streaming route (RoutePlan::streaming). When it returns without having
  // written a head through `body`, `response` is answered as usual (the
  // connection then stays open only if the body was read to its end); when
  // it has, the transport ends the chunked body. Default: 404.
  virtual void HandleStream(Request& request, BodyStream& body, Response& response);
  // Renders an error the transport itself answers (framing, limits, load).
  virtual void RenderError(const Request& request, const Error& error, Response& response) = 0;
  // Once per answered request, after it is written (or failed to be).
  virtual void Finished(const Request& request, const Response& response,
                        std::chrono::steady_clock::duration elapsed) = 0;
  // A request refused because the worker queue was full.
  virtual void Shed() {}
};

class Transport {
 public:
  ~Transport();
  // Errors: kInvalidArgument "invalid_config" for unusable TLS files.
  [[nodiscard]] static Result<std::unique_ptr<Transport>> Create(TransportOptions options,
                                                                 RequestHandler* handler);
  // Binds and listens; returns the port (useful with port 0).
  [[nodiscard]] Result<int> Bind();
  // Serves until Stop(); blocks the calling thread.
  void Serve();
  // Reads the TLS certificate chain and key again from their paths (an
  // operator's renewal): connections accepted from now on use the new pair,
  // connections already open keep theirs. On an error (unreadable files, a
  // key that does not match) the current pair stays. Errors:
  // kInvalidArgument "invalid_config"; kFailedPrecondition "tls_not_enabled"
  // when the listener is plain HTTP. Thread-safe.
  [[nodiscard]] Status ReloadTls();
  // Stops accepting, lets requests being handled finish (up to `drain`),
  // closes every connection and returns once the threads have ended. Safe
  // to call from another thread than Serve() and more than once.
  void Stop(std::chrono::milliseconds drain = std::chrono::milliseconds(5000));
  bool IsRunning() const;

  // Current open connections (tests and metrics).
  size_t ConnectionCount() const;

  struct Impl;  // transport.cc only (its connections need it)

 private:
  Transport() = default;
  std::unique_ptr<Impl> impl_;
};

// A client X-Request-Id worth recording: 1-64 characters of [A-Za-z0-9._-].
bool IsSafeClientRequestId(std::string_view id);

}  // namespace jitbroker::http
