// libFuzzer target: RFC 3339 timestamps (query filters, approvals, OIDC
// documents) and HTTP dates (upstreams' Retry-After and Date) as the broker
// reads them (docs/testing.md, "Fuzzing"). Property: a timestamp that
// parses, formatted again, parses to the same instant.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string_view>

#include "broker/common/time_util.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  auto t = jitbroker::ParseRfc3339(text);
  if (t) {
    auto again = jitbroker::ParseRfc3339(jitbroker::FormatRfc3339(*t));
    if (!again || std::chrono::floor<std::chrono::seconds>(*again) !=
                      std::chrono::floor<std::chrono::seconds>(*t)) {
      std::abort();
    }
  }
  (void)jitbroker::ParseRfc3339Seconds(text);
  (void)jitbroker::ParseHttpDate(text);
  return 0;
}
