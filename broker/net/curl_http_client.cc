// The libcurl implementation of HttpClient. Each Send() takes an easy handle
// from a pool (or makes one) and returns it after the call, reset but with its
// live connections kept, so consecutive requests reuse TCP and TLS
// connections. An easy handle is used by one thread at a time; the pool, and
// the share handle (DNS and TLS session caches) behind every handle, are
// locked.

#include <algorithm>
#include <array>
#include <charconv>
#include <cstring>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

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

struct TransferState {
  HttpResponse response;
  size_t max_body = 0;
  bool too_large = false;
  // Streamed exchanges (HttpClient::Stream).
  HttpStreamCallbacks* stream = nullptr;
  bool head_sent = false;
  std::optional<Error> callback_error;  // a callback's own failure
};

size_t OnStreamBody(char* data, size_t size, size_t count, void* user) {
  auto* state = static_cast<TransferState*>(user);
  const size_t n = size * count;
  HttpStreamCallbacks& cb = *state->stream;
  if (!state->head_sent) {
    state->head_sent = true;
    if (cb.on_head) {
      Status st = cb.on_head(state->response.status, state->response.headers);
      if (!st) {
        state->callback_error = st.error();
        return 0;
      }
    }
  }
  if (n > 0 && cb.on_body) {
    Status st = cb.on_body(std::string_view(data, n));
    if (!st) {
      state->callback_error = st.error();
      return 0;
    }
  }
  return n;
}

size_t OnStreamRead(char* buf, size_t size, size_t count, void* user) {
  auto* state = static_cast<TransferState*>(user);
  Result<size_t> got = state->stream->read_body(buf, size * count);
  if (!got) {
    state->callback_error = got.error();
    return CURL_READFUNC_ABORT;
  }
  return *got;
}

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
    const size_t sp = line.find(' ');
    int status = 0;
    if (sp != std::string_view::npos && line.size() >= sp + 4) {
      std::from_chars(line.data() + sp + 1, line.data() + sp + 4, status);
    }
    state->response.status = status;
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

// A share handle for the DNS and TLS-session caches, with the locking
// libcurl requires when handles on several threads use it.
class SharedCaches {
 public:
  SharedCaches() : share_(curl_share_init()) {
    if (share_ == nullptr) {
      return;
    }
    bool ok = curl_share_setopt(share_, CURLSHOPT_LOCKFUNC, &Lock) == CURLSHE_OK &&
              curl_share_setopt(share_, CURLSHOPT_UNLOCKFUNC, &Unlock) == CURLSHE_OK &&
              curl_share_setopt(share_, CURLSHOPT_USERDATA, this) == CURLSHE_OK &&
              curl_share_setopt(share_, CURLSHOPT_SHARE, CURL_LOCK_DATA_DNS) == CURLSHE_OK &&
              curl_share_setopt(share_, CURLSHOPT_SHARE, CURL_LOCK_DATA_SSL_SESSION) == CURLSHE_OK;
    if (!ok) {
      curl_share_cleanup(share_);
      share_ = nullptr;  // work without shared caches
    }
  }
  SharedCaches(const SharedCaches&) = delete;
  SharedCaches& operator=(const SharedCaches&) = delete;
  ~SharedCaches() {
    if (share_ != nullptr) {
      curl_share_cleanup(share_);
    }
  }
  CURLSH* get() const { return share_; }

 private:
  static std::mutex& MutexFor(void* user, curl_lock_data data) {
    auto* self = static_cast<SharedCaches*>(user);
    const auto index = static_cast<size_t>(data);
    return self->mutexes_[index < self->mutexes_.size() ? index : 0];
  }
  static void Lock(CURL*, curl_lock_data data, curl_lock_access, void* user) {
    MutexFor(user, data).lock();
  }
  static void Unlock(CURL*, curl_lock_data data, void* user) { MutexFor(user, data).unlock(); }

  CURLSH* share_ = nullptr;
  std::array<std::mutex, CURL_LOCK_DATA_LAST> mutexes_;
};

class CurlHttpClient final : public HttpClient {
 public:
  explicit CurlHttpClient(CurlHttpClientOptions options) : options_(std::move(options)) {}

  ~CurlHttpClient() override {
    // Handles before the share they use.
    std::lock_guard lock(pool_mu_);
    for (CURL* h : idle_) {
      curl_easy_cleanup(h);
    }
    idle_.clear();
  }

  Result<HttpResponse> Send(const HttpRequest& request) override {
    TransferState state;
    state.max_body = options_.max_response_bytes;
    JITBROKER_ASSIGN_OR_RETURN(int status, Exchange(request, state));
    state.response.status = status;
    return std::move(state.response);
  }

  Result<int> Stream(const HttpRequest& request, HttpStreamCallbacks& callbacks) override {
    TransferState state;
    state.stream = &callbacks;
    JITBROKER_ASSIGN_OR_RETURN(int status, Exchange(request, state));
    if (!state.head_sent && callbacks.on_head) {
      // An answer without a body.
      JITBROKER_RETURN_IF_ERROR(callbacks.on_head(status, state.response.headers));
    }
    return status;
  }

 private:
  // One exchange, buffered into `state`, or streamed through
  // state.stream's callbacks when it has them. Returns the final status.
  Result<int> Exchange(const HttpRequest& request, TransferState& state) {
    HttpStreamCallbacks* stream = state.stream;
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
    if (!request.bearer.empty()) {
      // A Bearer token has no spaces; other schemes' parameters may, but no
      // control characters (which could end the header line).
      const std::string_view cred = request.bearer.Reveal();
      const bool bearer = request.authorization_scheme == "Bearer";
      const bool printable = std::all_of(cred.begin(), cred.end(), [](char c) {
        return static_cast<unsigned char>(c) >= 0x20 && static_cast<unsigned char>(c) < 0x7f;
      });
      if (!IsToken(request.authorization_scheme) || !(bearer ? IsValidBearer(cred) : printable)) {
        return std::unexpected(
            InvalidArgument("invalid_credential", "bearer credential contains invalid characters"));
      }
    }

    PooledHandle easy(this);
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
      std::string line = "Authorization: " + request.authorization_scheme + " ";
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
    const bool streamed_body = stream != nullptr && static_cast<bool>(stream->read_body);
    if (streamed_body && !stream->body_length) {
      ok = ok && headers.Append("Transfer-Encoding: chunked");
    }
    if (!ok) {
      return std::unexpected(Internal("HTTP client out of memory"));
    }

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
    if (caches_.get() != nullptr) {
      set(curl_easy_setopt(h, CURLOPT_SHARE, caches_.get()));
    }
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
    set(curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, stream != nullptr ? &OnStreamBody : &OnBody));
    set(curl_easy_setopt(h, CURLOPT_WRITEDATA, &state));
    set(curl_easy_setopt(h, CURLOPT_HEADERFUNCTION, &OnHeader));
    set(curl_easy_setopt(h, CURLOPT_HEADERDATA, &state));
    if (stream != nullptr && stream->idle_timeout.count() > 0) {
      // Less than a byte a second for this long, either way: give up.
      set(curl_easy_setopt(h, CURLOPT_LOW_SPEED_LIMIT, 1L));
      set(curl_easy_setopt(h, CURLOPT_LOW_SPEED_TIME,
                           std::max(1L, static_cast<long>(stream->idle_timeout.count() / 1000))));
    }

    const std::string& method = request.method;
    if (streamed_body) {
      set(curl_easy_setopt(h, CURLOPT_POST, 1L));
      set(curl_easy_setopt(h, CURLOPT_READFUNCTION, &OnStreamRead));
      set(curl_easy_setopt(h, CURLOPT_READDATA, &state));
      if (stream->body_length) {
        set(curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE_LARGE,
                             static_cast<curl_off_t>(*stream->body_length)));
      }
      if (method != "POST") {
        set(curl_easy_setopt(h, CURLOPT_CUSTOMREQUEST, method.c_str()));
      }
    } else {
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
    }
    if (rc != CURLE_OK) {
      return std::unexpected(Internal("HTTP client misconfigured", curl_easy_strerror(rc)));
    }

    rc = curl_easy_perform(h);
    if (rc != CURLE_OK) {
      if (state.callback_error) {
        // A callback of the caller's failed (its client went away, say):
        // that, not the transfer, is what went wrong.
        return std::unexpected(std::move(*state.callback_error));
      }
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
    return static_cast<int>(status);
  }
  // An easy handle borrowed from the pool for one Send(); returned reset (its
  // options, which point at this call's buffers, are cleared; its
  // connections stay open) or cleaned up when the pool is full.
  class PooledHandle {
   public:
    explicit PooledHandle(CurlHttpClient* owner) : owner_(owner), handle_(owner->Acquire()) {}
    PooledHandle(const PooledHandle&) = delete;
    PooledHandle& operator=(const PooledHandle&) = delete;
    ~PooledHandle() {
      if (handle_ != nullptr) {
        owner_->Release(handle_);
      }
    }
    explicit operator bool() const { return handle_ != nullptr; }
    CURL* get() const { return handle_; }

   private:
    CurlHttpClient* owner_;
    CURL* handle_;
  };

  CURL* Acquire() {
    {
      std::lock_guard lock(pool_mu_);
      if (!idle_.empty()) {
        CURL* h = idle_.back();
        idle_.pop_back();
        return h;
      }
    }
    return curl_easy_init();
  }

  void Release(CURL* h) {
    curl_easy_reset(h);
    {
      std::lock_guard lock(pool_mu_);
      if (idle_.size() < options_.max_idle_handles) {
        idle_.push_back(h);
        return;
      }
    }
    curl_easy_cleanup(h);
  }

  const CurlHttpClientOptions options_;
  SharedCaches caches_;  // declared before the pool: destroyed after it
  std::mutex pool_mu_;
  std::vector<CURL*> idle_;  // most recently used last (its connection is warmest)
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
