// Checks of client-chosen text shared by the request parsers of wire.h
// (sessions, grants, heartbeats, approval decisions): identifiers are
// printable and bounded, and text shown to people holds no invisible or
// bidirectional formatting characters (docs/api.md, "Text shown to
// approvers").
//
// Thread-safety: pure functions.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

#include "jitbroker/result.h"

namespace jitbroker::http {

// Identifiers chosen by clients (agent id, task id, tool, …): at most
// `max_len` bytes, no spaces or control characters. Errors: kInvalidArgument
// "invalid_value" naming `path`.
[[nodiscard]] Status CheckIdentifier(const std::string& value, const std::string& path,
                                     size_t max_len = 256);

// No invisible or bidirectional formatting character, and valid UTF-8
// (text::FindInvisibleChar). Errors: kInvalidArgument "invalid_value" naming
// `path` and the code point.
[[nodiscard]] Status CheckVisibleText(std::string_view value, const std::string& path);

// CheckVisibleText for every key and string of `root`, at any depth.
[[nodiscard]] Status CheckVisibleJson(const nlohmann::json& root, const std::string& root_path);

}  // namespace jitbroker::http
