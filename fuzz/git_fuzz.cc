// libFuzzer target: the git smart-HTTP protocol as the proxy reads it
// (docs/proxy.md, docs/testing.md "Fuzzing"): pkt-lines of a receive-pack
// request's command section from the client, the upload-pack ref
// advertisement from the upstream, and gzip-encoded request bodies, whose
// inflation must stay within its limit. Properties: parsed commands stay
// within max_updates and the length read; a bounded inflater never
// produces more than its limit.
#include <fuzzer/FuzzedDataProvider.h>

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>

#include "broker/proxy/git_protocol.h"

namespace git = jitbroker::proxy::git;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  FuzzedDataProvider in(data, size);
  const int mode = in.ConsumeIntegralInRange(0, 2);
  const std::string body = in.ConsumeRemainingBytesAsString();
  if (mode == 0) {
    auto cmds = git::ParsePushCommands(body, 8);
    if (cmds && *cmds) {
      const auto& c = **cmds;
      if (c.updates.size() > 8 || c.length > body.size()) {
        std::abort();
      }
      for (const auto& u : c.updates) {
        if (!git::IsValidRefName(u.ref)) {
          std::abort();
        }
      }
      (void)git::RefusalReport(c, {}, "refused", {"fuzz"});
    }
  } else if (mode == 1) {
    auto adv = git::ParseUploadPackAdvertisement(body);
    if (adv) {
      (void)git::ReceivePackAdvertisement(*adv);
    }
  } else {
    constexpr size_t kLimit = 1 << 16;
    git::GzipInflater inflater(kLimit);
    std::string out;
    // Two pieces, as a body arrives.
    const size_t half = body.size() / 2;
    if (inflater.Inflate(std::string_view(body).substr(0, half), out)) {
      (void)inflater.Inflate(std::string_view(body).substr(half), out);
    }
    if (out.size() > kLimit) {
      std::abort();
    }
  }
  return 0;
}
