// libFuzzer target: the one strict JSON parser (json::ParseStrict) that
// reads request bodies, JWS headers and payloads, discovery documents and
// JWKS, and the typed reader on top of it (docs/testing.md, "Fuzzing").
// Properties checked beyond "no crash": whatever ParseStrict accepts is valid
// UTF-8, within the depth bound, and survives a dump and a re-parse
// unchanged (two parsers of one document must not disagree).
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string_view>

#include "broker/common/json_util.h"

namespace {

int Depth(const nlohmann::json& j) {
  int d = 0;
  if (j.is_structured()) {
    for (const auto& v : j) {
      const int c = Depth(v);
      d = c > d ? c : d;
    }
    return d + 1;
  }
  return 0;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  const jitbroker::json::ParseOptions opts{
      .what = "fuzz input", .max_bytes = 1 << 20, .max_depth = 8};
  auto doc = jitbroker::json::ParseStrict(text, opts);
  if (!doc) {
    return 0;
  }
  if (!jitbroker::json::IsValidUtf8(text) || Depth(*doc) > opts.max_depth) {
    std::abort();
  }
  auto again = jitbroker::json::ParseStrict(doc->dump(), opts);
  if (!again || *again != *doc) {
    std::abort();
  }
  // The typed reader over whatever object came in.
  auto reader = jitbroker::json::JsonReader::Open(*doc, "");
  if (reader) {
    (void)reader->OptString("a", 16);
    (void)reader->OptInt("b", -10, 10);
    (void)reader->OptBool("c");
    (void)reader->StringList("d", 4, 8);
    (void)reader->OptObject("e");
    (void)reader->Finish();
  }
  return 0;
}
