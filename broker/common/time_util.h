// RFC 3339 UTC formatting and parsing of TimePoints (second precision).
#pragma once

#include <optional>
#include <string>
#include <string_view>

#include "jitbroker/clock.h"

namespace jitbroker {

std::string FormatRfc3339(TimePoint t);                      // "2026-11-23T15:04:05Z"
std::optional<TimePoint> ParseRfc3339(std::string_view text);  // accepts Z or ±hh:mm, fraction

}  // namespace jitbroker
