// The one RFC 3339 parser and formatter of jitbroker and jitctl, and the
// one reader of HTTP dates (IMF-fixdate, for upstreams' Date headers).
//
// Formatting: UTC, second precision, "2026-11-23T15:04:05Z".
//
// Parsing: an RFC 3339 §5.6 date-time,
//   YYYY-MM-DD "T" hh:mm:ss [ "." 1*DIGIT ] ( "Z" / ("+" / "-") hh:mm )
// with "T" and "Z" in either case (RFC 3339 §5.6, NOTE). Every field is
// range-checked: month 01-12, a day that exists in that month (leap years
// included), hour 00-23, minute 00-59, second 00-59, offset hours 00-23 and
// minutes 00-59 ("-00:00" reads as UTC). Refused: a space or anything else
// for "T", an offset without its colon, a fraction without digits, signs or
// spaces inside fields, trailing text, and leap seconds (":60"): the broker
// keeps POSIX time, which has no leap seconds, and none of the timestamps it
// reads (its own, GitHub's) carries one. A fraction is dropped: the result
// is the whole second at or before the instant.
//
// Thread-safety: pure functions.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "jitbroker/clock.h"
#include "jitbroker/result.h"

namespace jitbroker {

// "2026-11-23T15:04:05Z"
std::string FormatRfc3339(TimePoint t);

// Unix seconds of an RFC 3339 date-time (years 0000-9999). Errors
// (kInvalidArgument, reason "invalid_timestamp"): the message says which rule
// failed; it does not echo the text.
[[nodiscard]] Result<int64_t> ParseRfc3339Seconds(std::string_view text);

// The same as a TimePoint, which spans the years 1678-2261 only; a
// timestamp outside that range is an "invalid_timestamp" error too.
[[nodiscard]] Result<TimePoint> ParseRfc3339(std::string_view text);

// An HTTP Date header's IMF-fixdate ("Sun, 06 Nov 1994 08:49:37 GMT", RFC
// 9110 §5.6.7); nullopt for anything else. For clock-skew detection.
std::optional<TimePoint> ParseHttpDate(std::string_view text);

}  // namespace jitbroker
