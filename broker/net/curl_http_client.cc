// The libcurl implementation of HttpClient: one easy handle per call, so Send()
// is safe to call from many threads without locking.

#include <cstring>
#include <memory>
#include <string>
#include <string_view>
#include <utility>

#include <curl/curl.h>

#include "broker/net/http_client.h"

namespace jitbroker::net {

namespace internal {

std::string HostForMessage(std::string_view url) {
  const size_t scheme_end = url.find("://");
  if (scheme_end == std::string_view::npos) {
    return "(invalid URL)";
  }
  std::string_view rest = url.substr(scheme_end + 3);
  const size_t authority_end = rest.find_first_of("/?#");
  std::string_view authority = rest.substr(0, authority_end);
  const size_t at = authority.rfind('@');
  if (at != std::string_view::npos) {
    authority.remove_prefix(at + 1);
  }
  if (authority.empty()) {
    return "(invalid URL)";
  }
  std::string out;
  out.reserve(authority.size());
  for (char c : authority) {
    // Never echo control bytes into messages.
    const auto u = static_cast<unsigned char>(c);
    out.push_back(u < 0x20 || u == 0x7f ? '?' : c);
  }
  return out;
}

}  // namespace internal

namespace {

bool StartsWithIgnoreCase(std::string_view s, std::string_view prefix) {
  return s.size() >= prefix.size() &&
         HttpHeaders::EqualsIgnoreCase(s.substr(0, prefix.size()), prefix);
}

bool IsTokenChar(char c) {
  if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9')) {
    return true;
  }
  return std::strchr("!#$%&'*+-.^_`|~", c) != nullptr && c != '\0';
}

bool IsToken(std::string_view s) {
  if (s.empty()) {
    return false;
  }
  for (char c : s) {
    if (!IsTokenChar(c)) {
      return false;
    }
  }
  return true;
}

bool HasLineBreakOrNul(std::string_view s) {
  return s.find_first_of(std::string_view("\r\n\0", 3)) != std::string_view::npos;
}

// Bearer tokens are printable ASCII without spaces (RFC 6750 b64token is narrower).
bool IsValidBearer(std::string_view s) {
  for (char c : s) {
    const auto u = static_cast<unsigned char>(c);
    if (u <= 0x20 || u >= 0x7f) {
      return false;
    }
  }
  return true;
}

std::string_view Trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) {
    s.remove_prefix(1);
  }
  while (!s.empty() &&
         (s.back() == ' ' || s.back() == '\t' || s.back() == '\r' || s.back() == '\n')) {
    s.remove_suffix(1);
  }
  return s;
}

// A curl_slist whose strings are wiped before they are freed (one of them
// carries the Authorization header).
class HeaderList {
 public:
  HeaderList() = default;
  HeaderList(const HeaderList&) = delete;
  HeaderList& operator=(const HeaderList&) = delete;
  ~HeaderList() {
    for (curl_slist* node = list_; node != nullptr; node = node->next) {
      if (node->data != nullptr) {
        SecureWipe(node->data, std::strlen(node->data));
      }
    }
    curl_slist_free_all(list_);
  }

  bool Append(const std::string& line) {
    curl_slist* next = curl_slist_append(list_, line.c_str());
    if (next == nullptr) {
      return false;
    }
    list_ = next;
    return true;
  }
  curl_slist* get() const { return list_; }

 private:
  curl_slist* list_ = nullptr;
};

struct EasyDeleter {
  void operator()(CURL* handle) const { curl_easy_cleanup(handle); }
};

struct TransferState {
  HttpResponse response;
  size_t max_body = 0;
  bool too_large = false;
};

size_t OnBody(char* data, size_t size, size_t count, void* user) {
  auto* state = static_cast<TransferState*>(user);
  const size_t n = size * count;
  if (state->response.body.size() + n > state->max_body) {
    state->too_large = true;
    return 0;  // aborts the transfer with CURLE_WRITE_ERROR
  }
  state->response.body.append(data, n);
  return n;
}

size_t OnHeader(char* data, size_t size, size_t count, void* user) {
  auto* state = static_cast<TransferState*>(user);
  const size_t n = size * count;
  std::string_view line(data, n);
  if (line.starts_with("HTTP/")) {
    // A new response begins (after 100 Continue or an interim response):
    // keep only the final response's fields.
    state->response.headers.Clear();
    return n;
  }
  std::string_view trimmed = Trim(line);
  if (trimmed.empty()) {
    return n;
  }
  const size_t colon = trimmed.find(':');
  if (colon == std::string_view::npos || colon == 0) {
    return n;  // not a field line; ignore
  }
  state->response.headers.Add(std::string(Trim(trimmed.substr(0, colon))),
                              std::string(Trim(trimmed.substr(colon + 1))));
  return n;
}

class CurlHttpClient final : public HttpClient {
 public:
  explicit CurlHttpClient(CurlHttpClientOptions options) : options_(std::move(options)) {}

  Result<HttpResponse> Send(const HttpRequest& request) override {
    const std::string host = internal::HostForMessage(request.url);
    if (!StartsWithIgnoreCase(request.url, "http://") &&
        !StartsWithIgnoreCase(request.url, "https://")) {
      return std::unexpected(
          InvalidArgument("invalid_url", "URL for " + host + " must use http or https"));
    }
    if (!IsToken(request.method)) {
      return std::unexpected(InvalidArgument("invalid_method", "invalid HTTP method"));
    }
    for (const auto& [name, value] : request.headers) {
      if (!IsToken(name) || HasLineBreakOrNul(value)) {
        return std::unexpected(
            InvalidArgument("invalid_header", "invalid HTTP header field name or value"));
      }
      if (HttpHeaders::EqualsIgnoreCase(name, "Authorization")) {
        return std::unexpected(InvalidArgument(
            "invalid_header", "the Authorization header must be passed as the bearer"));
      }
    }
    if (!request.bearer.empty() && !IsValidBearer(request.bearer.Reveal())) {
      return std::unexpected(
          InvalidArgument("invalid_credential", "bearer credential contains invalid characters"));
    }

    std::unique_ptr<CURL, EasyDeleter> easy(curl_easy_init());
    if (!easy) {
      return std::unexpected(Internal("HTTP client unavailable", "curl_easy_init failed"));
    }
    CURL* h = easy.get();

    HeaderList headers;
    bool has_content_type = false;
    bool has_user_agent = false;
    for (const auto& [name, value] : request.headers) {
      has_content_type = has_content_type || HttpHeaders::EqualsIgnoreCase(name, "Content-Type");
      has_user_agent = has_user_agent || HttpHeaders::EqualsIgnoreCase(name, "User-Agent");
      // "Name;" is curl's spelling of a field with an empty value.
      const std::string line = value.empty() ? name + ";" : name + ": " + value;
      if (!headers.Append(line)) {
        return std::unexpected(Internal("HTTP client out of memory"));
      }
    }
    if (!request.bearer.empty()) {
      std::string line = "Authorization: Bearer ";
      line.append(request.bearer.Reveal());
      const bool ok = headers.Append(line);
      SecureWipe(line.data(), line.size());
      if (!ok) {
        return std::unexpected(Internal("HTTP client out of memory"));
      }
    }
    // No "Expect: 100-continue" round trip; no libcurl default form content type.
    bool ok = headers.Append("Expect:");
    if (!has_content_type) {
      ok = ok && headers.Append("Content-Type:");
    }
    if (!ok) {
      return std::unexpected(Internal("HTTP client out of memory"));
    }

    TransferState state;
    state.max_body = options_.max_response_bytes;
    char error_buffer[CURL_ERROR_SIZE];
    error_buffer[0] = '\0';

    CURLcode rc = CURLE_OK;
    auto set = [&rc](CURLcode r) {
      if (rc == CURLE_OK) {
        rc = r;
      }
    };
    set(curl_easy_setopt(h, CURLOPT_ERRORBUFFER, error_buffer));
    set(curl_easy_setopt(h, CURLOPT_URL, request.url.c_str()));
    set(curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, "http,https"));
    set(curl_easy_setopt(h, CURLOPT_FOLLOWLOCATION, 0L));
    set(curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L));
    set(curl_easy_setopt(h, CURLOPT_NOPROGRESS, 1L));
    if (request.timeout.count() > 0) {
      set(curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, static_cast<long>(request.timeout.count())));
    }
    if (request.connect_timeout.count() > 0) {
      set(curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS,
                           static_cast<long>(request.connect_timeout.count())));
    }
    if (!options_.ca_file.empty()) {
      set(curl_easy_setopt(h, CURLOPT_CAINFO, options_.ca_file.c_str()));
    }
    if (!has_user_agent && !options_.user_agent.empty()) {
      set(curl_easy_setopt(h, CURLOPT_USERAGENT, options_.user_agent.c_str()));
    }
    set(curl_easy_setopt(h, CURLOPT_HTTPHEADER, headers.get()));
    set(curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, &OnBody));
    set(curl_easy_setopt(h, CURLOPT_WRITEDATA, &state));
    set(curl_easy_setopt(h, CURLOPT_HEADERFUNCTION, &OnHeader));
    set(curl_easy_setopt(h, CURLOPT_HEADERDATA, &state));

    const std::string& method = request.method;
    const bool send_body =
        method == "POST" || method == "PUT" || method == "PATCH" || !request.body.empty();
    if (method == "GET" && request.body.empty()) {
      set(curl_easy_setopt(h, CURLOPT_HTTPGET, 1L));
    } else if (method == "HEAD") {
      set(curl_easy_setopt(h, CURLOPT_NOBODY, 1L));
    } else {
      if (send_body) {
        set(curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE_LARGE,
                             static_cast<curl_off_t>(request.body.size())));
        set(curl_easy_setopt(h, CURLOPT_POSTFIELDS, request.body.data()));
      }
      if (method != "POST") {
        set(curl_easy_setopt(h, CURLOPT_CUSTOMREQUEST, method.c_str()));
      }
    }
    if (rc != CURLE_OK) {
      return std::unexpected(Internal("HTTP client misconfigured", curl_easy_strerror(rc)));
    }

    rc = curl_easy_perform(h);
    if (rc != CURLE_OK) {
      std::string detail =
          error_buffer[0] != '\0' ? std::string(error_buffer) : std::string(curl_easy_strerror(rc));
      if (state.too_large) {
        return std::unexpected(Unavailable("response_too_large",
                                           "response from " + host + " is too large",
                                           "limit " + std::to_string(state.max_body) + " bytes"));
      }
      if (rc == CURLE_URL_MALFORMAT || rc == CURLE_UNSUPPORTED_PROTOCOL) {
        Error e = InvalidArgument("invalid_url", "invalid URL for " + host);
        e.detail = std::move(detail);
        return std::unexpected(std::move(e));
      }
      const char* reason =
          rc == CURLE_OPERATION_TIMEDOUT ? "upstream_timeout" : "upstream_unavailable";
      return std::unexpected(Unavailable(reason, "cannot reach " + host, std::move(detail)));
    }
    long status = 0;
    if (curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &status) != CURLE_OK || status <= 0) {
      return std::unexpected(
          Unavailable("upstream_unavailable", "cannot reach " + host, "no HTTP status"));
    }
    state.response.status = static_cast<int>(status);
    return std::move(state.response);
  }

 private:
  const CurlHttpClientOptions options_;
};

}  // namespace

std::unique_ptr<HttpClient> MakeCurlHttpClient(CurlHttpClientOptions options) {
  return std::make_unique<CurlHttpClient>(std::move(options));
}

Status CurlGlobalInit() {
  const CURLcode rc = curl_global_init(CURL_GLOBAL_DEFAULT);
  if (rc != CURLE_OK) {
    return std::unexpected(Internal("cannot initialise libcurl", curl_easy_strerror(rc)));
  }
  return OkStatus();
}

void CurlGlobalCleanup() { curl_global_cleanup(); }

}  // namespace jitbroker::net
