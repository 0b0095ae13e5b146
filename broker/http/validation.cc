#include "broker/http/validation.h"

#include <optional>
#include <utility>
#include <vector>

#include "broker/common/text.h"

namespace jitbroker::http {

// Identifiers chosen by clients (agent id, task id, tool, …): printable, bounded.
Status CheckIdentifier(const std::string& value, const std::string& path, size_t max_len) {
  if (value.size() > max_len) {
    return std::unexpected(InvalidArgument("invalid_value", path + " is too long"));
  }
  for (unsigned char c : value) {
    if (c < 0x21 || c == 0x7f) {
      return std::unexpected(InvalidArgument(
          "invalid_value", path + " must not contain spaces or control characters"));
    }
  }
  return OkStatus();
}

// Text shown to people (approvers, principals, auditors) must read as what
// the broker acts on: no bidi controls or invisible characters
// (text::FindInvisibleChar; docs/api.md, "Text shown to approvers").
Status CheckVisibleText(std::string_view value, const std::string& path) {
  std::optional<text::InvisibleChar> bad = text::FindInvisibleChar(value);
  if (!bad) {
    return OkStatus();
  }
  if (bad->invalid_utf8) {
    return std::unexpected(InvalidArgument("invalid_value", path + " is not valid UTF-8"));
  }
  return std::unexpected(InvalidArgument(
      "invalid_value", path + " contains " + text::CodePointName(bad->code_point) +
                           ", an invisible or bidirectional formatting character: text shown to "
                           "approvers must read as what is requested"));
}

// The same for every key and string of a JSON value, at any depth (bounded:
// request bodies are parsed with a depth limit, this walk does not recurse).
Status CheckVisibleJson(const nlohmann::json& root, const std::string& root_path) {
  std::vector<std::pair<const nlohmann::json*, std::string>> stack = {{&root, root_path}};
  while (!stack.empty()) {
    auto [value, path] = std::move(stack.back());
    stack.pop_back();
    if (value->is_string()) {
      JITBROKER_RETURN_IF_ERROR(CheckVisibleText(value->get_ref<const std::string&>(), path));
    } else if (value->is_object()) {
      for (auto it = value->begin(); it != value->end(); ++it) {
        JITBROKER_RETURN_IF_ERROR(CheckVisibleText(it.key(), "a key of " + path));
        stack.emplace_back(&it.value(), path + "." + it.key());
      }
    } else if (value->is_array()) {
      for (size_t i = 0; i < value->size(); ++i) {
        stack.emplace_back(&(*value)[i], path + "[" + std::to_string(i) + "]");
      }
    }
  }
  return OkStatus();
}

}  // namespace jitbroker::http
