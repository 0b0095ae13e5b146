#include "cli/loopback_endpoint.h"

namespace jitbroker::cli {

void AnswerError(http::Response& response, int status, std::string_view code,
                 std::string_view message) {
  response.status = status;
  response.content_type = "application/json";
  response.body = ContainerErrorJson(code, message);
}

http::TransportOptions LoopbackEndpointOptions(int port) {
  http::TransportOptions o;
  o.host = "127.0.0.1";  // loopback only, whatever the caller wants
  o.port = port;
  o.io_threads = 1;
  o.worker_threads = 2;
  o.max_queued_requests = 16;
  o.max_header_bytes = 8 * 1024;
  o.max_header_count = 32;
  o.max_body_bytes = 0;
  o.max_connections = 32;
  o.max_connections_per_address = 32;  // every client is 127.0.0.1
  o.request_timeout = std::chrono::milliseconds(5000);
  o.write_timeout = std::chrono::milliseconds(5000);
  o.idle_timeout = std::chrono::milliseconds(10000);
  o.max_requests_per_connection = 1000;
  return o;
}

}  // namespace jitbroker::cli
