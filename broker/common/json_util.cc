#include "broker/common/json_util.h"

#include <set>
#include <string>
#include <utility>
#include <vector>

namespace jitbroker::json {

bool IsValidUtf8(std::string_view s) {
  size_t i = 0;
  const size_t n = s.size();
  while (i < n) {
    const auto c = static_cast<unsigned char>(s[i]);
    if (c < 0x80) {
      ++i;
      continue;
    }
    size_t len = 0;
    uint32_t cp = 0;
    if ((c & 0xE0) == 0xC0) {
      len = 2;
      cp = c & 0x1F;
    } else if ((c & 0xF0) == 0xE0) {
      len = 3;
      cp = c & 0x0F;
    } else if ((c & 0xF8) == 0xF0) {
      len = 4;
      cp = c & 0x07;
    } else {
      return false;
    }
    if (i + len > n) {
      return false;
    }
    for (size_t k = 1; k < len; ++k) {
      const auto cc = static_cast<unsigned char>(s[i + k]);
      if ((cc & 0xC0) != 0x80) {
        return false;
      }
      cp = (cp << 6) | (cc & 0x3F);
    }
    // Overlong encodings, surrogates and out-of-range code points.
    if ((len == 2 && cp < 0x80) || (len == 3 && cp < 0x800) || (len == 4 && cp < 0x10000) ||
        cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) {
      return false;
    }
    i += len;
  }
  return true;
}

namespace {

// Thrown from the parse callback to stop at the first violation; never
// leaves ParseStrict.
struct StopParse {
  Error error;
};

}  // namespace

Result<nlohmann::json> ParseStrict(std::string_view text, const ParseOptions& options) {
  const std::string what(options.what);
  if (text.size() > options.max_bytes) {
    return std::unexpected(InvalidArgument(
        "too_large", what + " exceeds " + std::to_string(options.max_bytes) + " bytes"));
  }
  if (!IsValidUtf8(text)) {
    return std::unexpected(InvalidArgument("invalid_utf8", what + " is not valid UTF-8"));
  }
  // RFC 8259 §8.1: no byte order mark. nlohmann would skip one, a reader in
  // front of us might not.
  if (text.starts_with("\xEF\xBB\xBF")) {
    return std::unexpected(InvalidArgument(
        "invalid_json", what + " is not valid JSON (it starts with a byte order mark)"));
  }
  std::vector<std::set<std::string, std::less<>>> keys;
  auto callback = [&](int depth, nlohmann::json::parse_event_t event, nlohmann::json& parsed) {
    using E = nlohmann::json::parse_event_t;
    // `depth` counts the containers around the event; a container that
    // starts here is one level more, so an empty innermost `[]` or `{}`
    // counts as deep as one holding a value.
    const bool opens = event == nlohmann::json::parse_event_t::object_start ||
                       event == nlohmann::json::parse_event_t::array_start;
    if (depth + (opens ? 1 : 0) > options.max_depth) {
      throw StopParse{InvalidArgument(
          "too_deep",
          what + " nests deeper than " + std::to_string(options.max_depth) + " levels")};
    }
    switch (event) {
      case E::object_start:
        keys.emplace_back();
        break;
      case E::object_end:
        if (!keys.empty()) {
          keys.pop_back();
        }
        break;
      case E::key:
        if (!keys.empty() && parsed.is_string()) {
          const auto& k = parsed.get_ref<const std::string&>();
          if (!keys.back().insert(k).second) {
            throw StopParse{
                InvalidArgument("duplicate_key", what + " has a duplicate key \"" + k + "\"")};
          }
        }
        break;
      default:
        break;
    }
    return true;
  };
  try {
    return nlohmann::json::parse(text.begin(), text.end(), callback, /*allow_exceptions=*/true,
                                 /*ignore_comments=*/false);
  } catch (StopParse& stop) {
    return std::unexpected(std::move(stop.error));
  } catch (const nlohmann::json::parse_error& e) {
    // e.byte is the position; the library's message may quote input, so we
    // build our own.
    return std::unexpected(InvalidArgument(
        "invalid_json",
        what + " is not valid JSON (error near byte " + std::to_string(e.byte) + ")"));
  } catch (...) {
    return std::unexpected(InvalidArgument("invalid_json", what + " is not valid JSON"));
  }
}

JsonReader::JsonReader(const nlohmann::json& object, std::string path)
    : object_(&object), path_(std::move(path)) {}

Result<JsonReader> JsonReader::Open(const nlohmann::json& value, std::string path) {
  if (!value.is_object()) {
    return std::unexpected(InvalidArgument(
        "invalid_type",
        (path.empty() ? std::string("request body") : path) + " must be an object"));
  }
  return JsonReader(value, std::move(path));
}

std::string JsonReader::PathOf(std::string_view key) const {
  return path_.empty() ? std::string(key) : path_ + "." + std::string(key);
}

Result<std::optional<std::string>> JsonReader::OptString(std::string_view key, size_t max_len) {
  known_.emplace(key);
  auto it = object_->find(key);
  if (it == object_->end() || it->is_null()) {
    return std::optional<std::string>();
  }
  if (!it->is_string()) {
    return std::unexpected(InvalidArgument("invalid_type", PathOf(key) + " must be a string"));
  }
  const auto& s = it->get_ref<const std::string&>();
  if (s.size() > max_len) {
    return std::unexpected(InvalidArgument(
        "invalid_value", PathOf(key) + " is longer than " + std::to_string(max_len) + " bytes"));
  }
  return std::optional<std::string>(s);
}

Result<std::string> JsonReader::String(std::string_view key, size_t max_len) {
  JITBROKER_ASSIGN_OR_RETURN(auto v, OptString(key, max_len));
  if (!v || v->empty()) {
    return std::unexpected(InvalidArgument("missing_field", PathOf(key) + " is required"));
  }
  return *v;
}

Result<std::optional<int64_t>> JsonReader::OptInt(std::string_view key, int64_t min, int64_t max) {
  known_.emplace(key);
  auto it = object_->find(key);
  if (it == object_->end() || it->is_null()) {
    return std::optional<int64_t>();
  }
  if (!it->is_number_integer()) {
    return std::unexpected(InvalidArgument("invalid_type", PathOf(key) + " must be an integer"));
  }
  int64_t v = 0;
  if (it->is_number_unsigned()) {
    const auto u = it->get<uint64_t>();
    if (u > static_cast<uint64_t>(INT64_MAX)) {
      v = INT64_MAX;
    } else {
      v = static_cast<int64_t>(u);
    }
  } else {
    v = it->get<int64_t>();
  }
  if (v < min || v > max) {
    return std::unexpected(InvalidArgument(
        "invalid_value",
        PathOf(key) + " must be in [" + std::to_string(min) + ", " + std::to_string(max) + "]"));
  }
  return std::optional<int64_t>(v);
}

Result<std::optional<bool>> JsonReader::OptBool(std::string_view key) {
  known_.emplace(key);
  auto it = object_->find(key);
  if (it == object_->end() || it->is_null()) {
    return std::optional<bool>();
  }
  if (!it->is_boolean()) {
    return std::unexpected(InvalidArgument("invalid_type", PathOf(key) + " must be a boolean"));
  }
  return std::optional<bool>(it->get<bool>());
}

Result<std::vector<std::string>> JsonReader::StringList(std::string_view key, size_t max_items,
                                                        size_t max_len) {
  known_.emplace(key);
  std::vector<std::string> out;
  auto it = object_->find(key);
  if (it == object_->end() || it->is_null()) {
    return out;
  }
  const std::string shape = PathOf(key) + " must be a list of at most " +
                            std::to_string(max_items) + " non-empty strings of at most " +
                            std::to_string(max_len) + " bytes";
  if (!it->is_array() || it->size() > max_items) {
    return std::unexpected(InvalidArgument("invalid_type", shape));
  }
  out.reserve(it->size());
  for (const auto& e : *it) {
    if (!e.is_string() || e.get_ref<const std::string&>().empty() ||
        e.get_ref<const std::string&>().size() > max_len) {
      return std::unexpected(InvalidArgument("invalid_type", shape));
    }
    out.push_back(e.get<std::string>());
  }
  return out;
}

Result<std::optional<nlohmann::json>> JsonReader::OptObject(std::string_view key) {
  known_.emplace(key);
  auto it = object_->find(key);
  if (it == object_->end() || it->is_null()) {
    return std::optional<nlohmann::json>();
  }
  if (!it->is_object()) {
    return std::unexpected(InvalidArgument("invalid_type", PathOf(key) + " must be an object"));
  }
  return std::optional<nlohmann::json>(*it);
}

Result<nlohmann::json> JsonReader::Object(std::string_view key) {
  JITBROKER_ASSIGN_OR_RETURN(auto v, OptObject(key));
  if (!v) {
    return std::unexpected(InvalidArgument("missing_field", PathOf(key) + " is required"));
  }
  return *v;
}

Status JsonReader::Finish() const {
  for (auto it = object_->begin(); it != object_->end(); ++it) {
    if (!known_.contains(it.key())) {
      return std::unexpected(
          InvalidArgument("unknown_field", PathOf(it.key()) + " is not a known field"));
    }
  }
  return OkStatus();
}

}  // namespace jitbroker::json
