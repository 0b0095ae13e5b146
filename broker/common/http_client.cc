// The HttpClient seam's defaults (include/jitbroker/http_client.h).
#include "jitbroker/http_client.h"

namespace jitbroker {

Result<int> HttpClient::Stream(const HttpRequest& /*request*/, HttpStreamCallbacks& /*callbacks*/) {
  return std::unexpected(
      Internal("this HTTP client cannot stream", "HttpClient::Stream is not implemented"));
}

}  // namespace jitbroker
