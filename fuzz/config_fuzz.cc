// libFuzzer target: the YAML configuration loader (config::LoadConfigText:
// YAML, then every section's strict reader, the policy and the trust
// policies) (docs/testing.md, "Fuzzing"). The config comes from the
// operator, but a loader that crashes on a typo, or hangs, takes the broker
// down at a reload. Run in an empty directory: `file:` references resolve
// next to a config file that does not exist, and secret files are read with
// a size bound.
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "broker/config/config.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  (void)jitbroker::config::LoadConfigText(text, "/nonexistent/jitbroker-fuzz/config.yaml");
  return 0;
}
