// HttpClient: a small synchronous HTTP client seam for upstream calls
// (issuers, OIDC discovery, approval webhooks) and for jitctl.
//
// The seam is the abstract HttpClient; the broker's libcurl implementation is
// in broker/net/http_client.h (MakeCurlHttpClient) and tests substitute a fake
// or a loopback server. An issuer receives the broker's shared client through
// its IssuerContext (jitbroker/issuer.h) and needs nothing else of broker/net.
// The bearer credential of a request travels as a SecretValue (never as a
// plain header) and is revealed only when the Authorization header is handed
// to the transport; it is never logged and never appears in an Error.
//
// Errors: transport failures (connect, TLS, timeout, reset) are kUnavailable
// with message "cannot reach <host[:port]>" (no path, query or userinfo) and the
// transport's error text in `detail`. A malformed request (bad URL scheme,
// CR/LF in a header) is kInvalidArgument. Any HTTP status, including 4xx and
// 5xx, is a successful HttpResponse: interpreting it is the caller's job.
//
// Redirects are never followed. Only http and https are allowed.
//
// Thread-safety: Send() may be called concurrently from many threads on one
// HttpClient. Requests and responses are plain values owned by the caller.
#pragma once

#include <chrono>
#include <cstddef>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "jitbroker/result.h"
#include "jitbroker/secret.h"

namespace jitbroker {

// An ordered list of header fields with case-insensitive lookup by name.
class HttpHeaders {
 public:
  HttpHeaders() = default;

  void Add(std::string name, std::string value) {
    fields_.emplace_back(std::move(name), std::move(value));
  }
  // The first field named `name` (ASCII case-insensitive), if any.
  std::optional<std::string_view> Get(std::string_view name) const {
    for (const auto& [field_name, value] : fields_) {
      if (EqualsIgnoreCase(field_name, name)) {
        return std::string_view(value);
      }
    }
    return std::nullopt;
  }
  bool Has(std::string_view name) const { return Get(name).has_value(); }
  const std::vector<std::pair<std::string, std::string>>& fields() const { return fields_; }
  void Clear() { fields_.clear(); }

  static bool EqualsIgnoreCase(std::string_view a, std::string_view b) {
    if (a.size() != b.size()) {
      return false;
    }
    for (size_t i = 0; i < a.size(); ++i) {
      if (AsciiLower(a[i]) != AsciiLower(b[i])) {
        return false;
      }
    }
    return true;
  }

 private:
  static char AsciiLower(char c) {
    return (c >= 'A' && c <= 'Z') ? static_cast<char>(c - 'A' + 'a') : c;
  }

  std::vector<std::pair<std::string, std::string>> fields_;
};

struct HttpRequest {
  std::string method = "GET";  // GET, POST, PUT, PATCH, DELETE, HEAD
  std::string url;             // absolute http:// or https:// URL
  // Extra header fields. Never put Authorization here: use `bearer`.
  std::vector<std::pair<std::string, std::string>> headers;
  // Sent as "Authorization: <authorization_scheme> <bearer>" when non-empty.
  SecretValue bearer;
  // "Bearer", or another scheme whose credential `bearer` holds, e.g.
  // "AWS4-HMAC-SHA256" with "Credential=…, SignedHeaders=…, Signature=…".
  std::string authorization_scheme = "Bearer";
  std::string body;  // sent for POST/PUT/PATCH/DELETE when non-empty (always for POST)
  std::chrono::milliseconds timeout{30000};          // whole exchange
  std::chrono::milliseconds connect_timeout{10000};  // TCP + TLS handshake
};

struct HttpResponse {
  int status = 0;
  HttpHeaders headers;  // of the final response
  std::string body;
};

// A streamed exchange (HttpClient::Stream): the request body is pulled from
// `read_body` and the answer pushed to `on_head` and `on_body` as it
// arrives, so neither is ever held whole. A callback's Error aborts the
// exchange, and Stream returns that Error as it is (so the caller can tell
// its own client's failure from the upstream's).
struct HttpStreamCallbacks {
  // Fills up to `max` bytes of the request body; 0 = its end. Empty: no body
  // (HttpRequest::body is then sent as Send would).
  std::function<Result<size_t>(char* buf, size_t max)> read_body;
  std::optional<int64_t> body_length;  // with read_body: its length; nullopt = chunked
  // The final answer's status and fields, once, before its first body byte.
  std::function<Status(int status, const HttpHeaders& headers)> on_head;
  std::function<Status(std::string_view data)> on_body;
  // Less than a byte a second for this long, either way: the exchange fails
  // (kUnavailable "upstream_timeout"). HttpRequest::timeout bounds the whole.
  std::chrono::milliseconds idle_timeout{30000};
};

class HttpClient {
 public:
  virtual ~HttpClient() = default;
  // Performs one exchange. See the file comment for the error contract.
  [[nodiscard]] virtual Result<HttpResponse> Send(const HttpRequest& request) = 0;
  // Performs one exchange streamed through `callbacks`; returns the final
  // status. Errors: as Send, and a callback's own. Default: the exchange
  // carried whole through Send (the body read to its end first, the answer
  // handed over in one piece), for clients that do not stream.
  [[nodiscard]] virtual Result<int> Stream(const HttpRequest& request,
                                           HttpStreamCallbacks& callbacks);
};

}  // namespace jitbroker
