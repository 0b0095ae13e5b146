// libFuzzer target: the JSON request bodies of the REST routes as the
// server reads them (docs/api.md, docs/testing.md "Fuzzing"): the strict
// parser, then the route's reader (http::wire::Parse*), then the task scope
// and the policy's view of a grant request. The first byte picks the route.
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "broker/common/json_util.h"
#include "broker/http/wire.h"

namespace wire = jitbroker::http::wire;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) {
    return 0;
  }
  const uint8_t route = data[0];
  const std::string_view text(reinterpret_cast<const char*>(data + 1), size - 1);
  auto body = jitbroker::json::ParseStrict(text);
  if (!body) {
    return 0;
  }
  switch (route % 7) {
    case 0:
      (void)wire::ParseOpenSession(*body);
      break;
    case 1:
      (void)wire::ParseHeartbeat(*body);
      break;
    case 2:
      (void)wire::ParseEndSession(*body);
      break;
    case 3:
      (void)wire::ParseGrantRequest(*body);
      break;
    case 4:
      (void)wire::ParseApprovalDecision(*body);
      break;
    case 5:
      (void)wire::ParseBulkRevoke(*body);
      break;
    default:
      (void)jitbroker::TaskScope::FromJson(*body);
      break;
  }
  return 0;
}
