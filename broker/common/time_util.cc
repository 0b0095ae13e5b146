#include "broker/common/time_util.h"

#include <time.h>
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <ctime>
#include <utility>

namespace jitbroker {

std::string FormatRfc3339(TimePoint t) {
  const std::time_t secs = static_cast<std::time_t>(ToUnixSeconds(t));
  std::tm tm{};
  gmtime_r(&secs, &tm);
  char buf[64];
  std::snprintf(buf, sizeof(buf), "%04d-%02d-%02dT%02d:%02d:%02dZ", tm.tm_year + 1900,
                tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec);
  return buf;
}

namespace {

Error Invalid(std::string message) {
  return InvalidArgument("invalid_timestamp", std::move(message));
}

// The value of s[pos, pos + len) when every character is a digit, else -1.
int Field(std::string_view s, size_t pos, size_t len) {
  if (pos + len > s.size()) {
    return -1;
  }
  int v = 0;
  for (size_t i = pos; i < pos + len; ++i) {
    if (s[i] < '0' || s[i] > '9') {
      return -1;
    }
    v = v * 10 + (s[i] - '0');
  }
  return v;
}

}  // namespace

Result<int64_t> ParseRfc3339Seconds(std::string_view s) {
  const std::string shape =
      "is not an RFC 3339 date-time (YYYY-MM-DDThh:mm:ss[.fraction] then Z or +hh:mm/-hh:mm)";
  const int year = Field(s, 0, 4);
  const int month = Field(s, 5, 2);
  const int day = Field(s, 8, 2);
  const int hour = Field(s, 11, 2);
  const int minute = Field(s, 14, 2);
  const int second = Field(s, 17, 2);
  if (year < 0 || month < 0 || day < 0 || hour < 0 || minute < 0 || second < 0 || s[4] != '-' ||
      s[7] != '-' || (s[10] != 'T' && s[10] != 't') || s[13] != ':' || s[16] != ':') {
    return std::unexpected(Invalid(shape));
  }
  size_t i = 19;
  if (i < s.size() && s[i] == '.') {
    const size_t start = ++i;
    while (i < s.size() && s[i] >= '0' && s[i] <= '9') {
      ++i;
    }
    if (i == start) {
      return std::unexpected(Invalid(shape));
    }
  }
  int64_t offset = 0;
  const std::string_view zone = s.substr(std::min(i, s.size()));
  if (zone == "Z" || zone == "z") {
    offset = 0;
  } else if (zone.size() == 6 && (zone[0] == '+' || zone[0] == '-') && zone[3] == ':') {
    const int oh = Field(zone, 1, 2);
    const int om = Field(zone, 4, 2);
    if (oh < 0 || om < 0) {
      return std::unexpected(Invalid(shape));
    }
    if (oh > 23 || om > 59) {
      return std::unexpected(Invalid("has an offset out of range"));
    }
    offset = (oh * 3600 + om * 60) * (zone[0] == '-' ? -1 : 1);
  } else {
    return std::unexpected(Invalid(shape));
  }
  const std::chrono::year_month_day ymd{std::chrono::year(year),
                                        std::chrono::month(static_cast<unsigned>(month)),
                                        std::chrono::day(static_cast<unsigned>(day))};
  if (!ymd.ok()) {
    return std::unexpected(Invalid("names a date that does not exist"));
  }
  if (second == 60) {
    return std::unexpected(Invalid("is a leap second (:60), which POSIX time cannot represent"));
  }
  if (hour > 23 || minute > 59 || second > 59) {
    return std::unexpected(Invalid("has a time of day out of range"));
  }
  const int64_t days = std::chrono::sys_days(ymd).time_since_epoch().count();
  return days * 86400 + hour * 3600 + minute * 60 + second - offset;
}

namespace {

// TimePoint counts nanoseconds in 64 bits: about ±292 years around 1970.
// Unix seconds outside this overflow FromUnixSeconds.
bool FitsTimePoint(int64_t seconds) {
  constexpr int64_t kLimit =
      std::chrono::duration_cast<std::chrono::seconds>(TimePoint::duration::max()).count() - 1;
  return seconds <= kLimit && seconds >= -kLimit;
}

}  // namespace

Result<TimePoint> ParseRfc3339(std::string_view text) {
  JITBROKER_ASSIGN_OR_RETURN(const int64_t seconds, ParseRfc3339Seconds(text));
  if (!FitsTimePoint(seconds)) {
    return std::unexpected(Invalid("is outside the years 1678-2261"));
  }
  return FromUnixSeconds(seconds);
}

std::optional<TimePoint> ParseHttpDate(std::string_view text) {
  // IMF-fixdate: "Sun, 06 Nov 1994 08:49:37 GMT" (RFC 9110 §5.6.7).
  std::string s(text);
  struct tm tm{};
  const char* end = ::strptime(s.c_str(), "%a, %d %b %Y %H:%M:%S GMT", &tm);
  if (end == nullptr || *end != '\0') {
    return std::nullopt;
  }
  const time_t t = ::timegm(&tm);
  // An upstream's "Date: Sun, 06 Nov 9591 …" (found by fuzz/time_fuzz.cc)
  // would overflow the conversion below.
  if (t == static_cast<time_t>(-1) || !FitsTimePoint(static_cast<int64_t>(t))) {
    return std::nullopt;
  }
  return FromUnixSeconds(static_cast<int64_t>(t));
}

}  // namespace jitbroker
