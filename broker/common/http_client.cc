// The HttpClient seam's defaults (include/jitbroker/http_client.h).
#include "jitbroker/http_client.h"

namespace jitbroker {

// A client without streaming of its own (test doubles) carries a streamed
// exchange whole: the body is read to its end and sent with Send, and the
// answer handed over in one piece.
Result<int> HttpClient::Stream(const HttpRequest& request, HttpStreamCallbacks& callbacks) {
  HttpRequest whole;
  whole.method = request.method;
  whole.url = request.url;
  whole.headers = request.headers;
  whole.bearer = request.bearer.Clone();
  whole.authorization_scheme = request.authorization_scheme;
  whole.body = request.body;
  whole.timeout = request.timeout;
  whole.connect_timeout = request.connect_timeout;
  if (callbacks.read_body) {
    whole.body.clear();
    char buf[16384];
    for (;;) {
      JITBROKER_ASSIGN_OR_RETURN(size_t n, callbacks.read_body(buf, sizeof(buf)));
      if (n == 0) {
        break;
      }
      whole.body.append(buf, n);
    }
  }
  JITBROKER_ASSIGN_OR_RETURN(HttpResponse response, Send(whole));
  if (callbacks.on_head) {
    JITBROKER_RETURN_IF_ERROR(callbacks.on_head(response.status, response.headers));
  }
  if (callbacks.on_body && !response.body.empty()) {
    JITBROKER_RETURN_IF_ERROR(callbacks.on_body(response.body));
  }
  return response.status;
}

}  // namespace jitbroker
