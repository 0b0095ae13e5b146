// The libcurl implementation of the HttpClient seam (include/jitbroker/
// http_client.h, where the interface and its error contract live), and the
// names broker code has always used for it (net::HttpClient, …).
//
// MakeCurlHttpClient() needs CurlGlobalInit() to have run once (in main,
// before any thread starts) and SIGPIPE ignored process-wide.
#pragma once

#include <cstddef>
#include <memory>
#include <string>
#include <string_view>

#include "jitbroker/http_client.h"
#include "jitbroker/result.h"

namespace jitbroker::net {

using ::jitbroker::HttpClient;
using ::jitbroker::HttpHeaders;
using ::jitbroker::HttpRequest;
using ::jitbroker::HttpResponse;

struct CurlHttpClientOptions {
  std::string ca_file;                           // PEM bundle; empty = system default
  size_t max_response_bytes = 16 * 1024 * 1024;  // larger bodies fail with kUnavailable
  std::string user_agent = "jitbroker/0.1";      // overridden by a User-Agent request header
  // Idle easy handles kept for reuse; each keeps its open connections, so a
  // pooled handle reuses the TCP/TLS connection of its previous request.
  // Size it to the expected number of concurrent requests. 0 = no reuse.
  size_t max_idle_handles = 64;
};

// The libcurl implementation: a pool of easy handles (connection reuse) that
// share one DNS and TLS-session cache; thread-safe.
std::unique_ptr<HttpClient> MakeCurlHttpClient(CurlHttpClientOptions options = {});

// curl_global_init / curl_global_cleanup, for main() only (exactly once each).
[[nodiscard]] Status CurlGlobalInit();
void CurlGlobalCleanup();

namespace internal {

// "host[:port]" of an absolute URL for error messages: no scheme, userinfo,
// path, query or fragment. Returns "(invalid URL)" when there is no authority.
std::string HostForMessage(std::string_view url);

}  // namespace internal

}  // namespace jitbroker::net
