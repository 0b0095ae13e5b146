// Strict JSON: UTF-8 validated, duplicate keys rejected, size and nesting
// bounded; and a reader that enforces types and rejects unknown
// fields with errors naming the JSON path.
//
// Thread-safety: pure functions; JsonReader is single-threaded.
#pragma once

#include <cstddef>
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

// Budget and wording of one ParseStrict call.
struct ParseOptions {
  std::string_view what = "request body";  // names the text in error messages
  size_t max_bytes = 16 * 1024 * 1024;     // the largest request body max_body_bytes allows
  int max_depth = 32;                      // nesting of arrays and objects
};

// The one strict JSON parser (request bodies, JWS headers and payloads, OIDC
// discovery documents and JWKS, jitctl's flags and the broker's answers):
// RFC 8259 JSON as UTF-8 without a byte order mark, no comments, no
// duplicate object keys at any depth (nlohmann keeps the last one silently,
// so two parsers of one document could disagree), at most
// `options.max_bytes` and `options.max_depth`. Parsing stops at the first
// violation. Errors (kInvalidArgument): "too_large", "invalid_utf8",
// "invalid_json" (with position; also a byte order mark), "duplicate_key"
// (message: `<what> has a duplicate key "KEY"`), "too_deep".
[[nodiscard]] Result<nlohmann::json> ParseStrict(std::string_view text,
                                                 const ParseOptions& options = {});

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
  // Array of strings, each 1..max_len bytes, at most max_items (absent or
  // null = empty).
  [[nodiscard]] Result<std::vector<std::string>> StringList(std::string_view key, size_t max_items,
                                                            size_t max_len = 1024);
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
