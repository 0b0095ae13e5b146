// Strict JSON for request bodies: UTF-8 validated, duplicate keys rejected,
// nesting bounded; and a reader that enforces types and rejects unknown
// fields with errors naming the JSON path.
//
// Thread-safety: pure functions; JsonReader is single-threaded.
#pragma once

#include <cstdint>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "jitbroker/result.h"

namespace jitbroker::json {

bool IsValidUtf8(std::string_view text);

// Parses `text` strictly. Errors (kInvalidArgument): "invalid_utf8",
// "invalid_json" (with position), "duplicate_key", "too_deep".
[[nodiscard]] Result<nlohmann::json> ParseStrict(std::string_view text, int max_depth = 32);

// Reads one JSON object field by field. Every accessor marks its key known;
// Finish() reports the first unknown key. Errors: "invalid_type",
// "missing_field", "unknown_field", "invalid_value" with the field path.
class JsonReader {
 public:
  JsonReader(const nlohmann::json& object, std::string path);
  // Error if the value is not an object.
  [[nodiscard]] static Result<JsonReader> Open(const nlohmann::json& value, std::string path);

  [[nodiscard]] Result<std::string> String(std::string_view key, size_t max_len = 1024);
  [[nodiscard]] Result<std::optional<std::string>> OptString(std::string_view key,
                                                             size_t max_len = 1024);
  [[nodiscard]] Result<std::optional<int64_t>> OptInt(std::string_view key, int64_t min,
                                                      int64_t max);
  [[nodiscard]] Result<std::optional<bool>> OptBool(std::string_view key);
  // Object value (absent = nullopt).
  [[nodiscard]] Result<std::optional<nlohmann::json>> OptObject(std::string_view key);
  [[nodiscard]] Result<nlohmann::json> Object(std::string_view key);
  [[nodiscard]] Status Finish() const;
  std::string PathOf(std::string_view key) const;

 private:
  const nlohmann::json* object_;
  std::string path_;
  std::set<std::string, std::less<>> known_;
};

}  // namespace jitbroker::json
