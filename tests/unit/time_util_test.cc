#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include <doctest/doctest.h>

#include "broker/common/time_util.h"

namespace jitbroker {
namespace {

TEST_CASE("Time: ParseRfc3339Seconds accepts RFC 3339 date-times, and only those") {
  constexpr int64_t kT = 1795000000;  // 2026-11-18T11:06:40Z
  struct Case {
    std::string text;
    std::optional<int64_t> seconds;  // nullopt = refused
  };
  const std::vector<Case> cases = {
      {"2026-11-18T11:06:40Z", kT},
      {"2026-11-18t11:06:40z", kT},  // RFC 3339 §5.6 NOTE: either case
      {"2026-11-18T12:06:40+01:00", kT},
      {"2026-11-18T10:06:40-01:00", kT},
      {"2026-11-18T11:06:40-00:00", kT},  // "unknown local offset": UTC
      {"2026-11-18T11:06:40+00:00", kT},
      {"2026-11-18T23:36:40+12:30", kT},
      {"2026-11-18T00:30:00+01:00", 1794958200},  // the day before, in UTC
      {"2026-11-18T11:06:40.123Z", kT},           // fractions are dropped
      {"2026-11-18T11:06:40.999999999999Z", kT},
      {"2026-11-18T11:06:40.5+01:00", kT - 3600},
      {"1970-01-01T00:00:00Z", 0},
      {"1969-12-31T23:59:59Z", -1},
      {"1969-12-31T23:59:59.5Z", -1},  // the whole second at or before
      {"2024-02-29T00:00:00Z", 1709164800},
      {"2000-02-29T00:00:00Z", 951782400},
      {"0000-01-01T00:00:00Z", -62167219200},
      {"9999-12-31T23:59:59Z", 253402300799},

      // Out-of-range fields.
      {"2026-13-18T11:06:40Z", std::nullopt},
      {"2026-00-18T11:06:40Z", std::nullopt},
      {"2026-11-00T11:06:40Z", std::nullopt},
      {"2026-11-31T11:06:40Z", std::nullopt},
      {"2026-02-29T00:00:00Z", std::nullopt},  // not a leap year
      {"2100-02-29T00:00:00Z", std::nullopt},  // nor is 2100
      {"2026-04-31T00:00:00Z", std::nullopt},
      {"2026-11-18T24:00:00Z", std::nullopt},
      {"2026-11-18T11:60:00Z", std::nullopt},
      {"2026-11-18T11:06:61Z", std::nullopt},
      {"2016-12-31T23:59:60Z", std::nullopt},  // a real leap second: POSIX time has none
      {"2026-11-18T12:00:60Z", std::nullopt},
      {"2026-11-18T11:06:40+24:00", std::nullopt},
      {"2026-11-18T11:06:40+01:60", std::nullopt},
      {"2026-11-18T11:06:40+99:00", std::nullopt},

      // Not the RFC 3339 shape.
      {"", std::nullopt},
      {"2026-11-18 11:06:40Z", std::nullopt},
      {"2026-11-18_11:06:40Z", std::nullopt},
      {"2026-11-18T11:06:40", std::nullopt},
      {"2026-11-18T11:06:40+0100", std::nullopt},
      {"2026-11-18T11:06:40+01", std::nullopt},
      {"2026-11-18T11:06:40+01:00:00", std::nullopt},
      {"2026-11-18T11:06:40.Z", std::nullopt},
      {"2026-11-18T11:06:40,5Z", std::nullopt},
      {"2026-11-18T11:06:40ZZ", std::nullopt},
      {"2026-11-18T11:06:40Z ", std::nullopt},
      {" 2026-11-18T11:06:40Z", std::nullopt},
      {"+026-11-18T11:06:40Z", std::nullopt},
      {"-026-11-18T11:06:40Z", std::nullopt},
      {"2026-1-18T11:06:40Z", std::nullopt},
      {"26-11-18T11:06:40Z", std::nullopt},
      {"2026-11-18T11:06Z", std::nullopt},
      {"2026-11-18", std::nullopt},
      {"20261118T110640Z", std::nullopt},
      {"2026-11-18T1 :06:40Z", std::nullopt},
      {"2026-11-18T11:06:40\xef\xbc\xba", std::nullopt},  // fullwidth Z
      {std::string("2026-11-18T11:06:40Z\0", 21), std::nullopt},
  };
  for (const Case& c : cases) {
    CAPTURE(c.text);
    Result<int64_t> r = ParseRfc3339Seconds(c.text);
    if (c.seconds) {
      REQUIRE(r.has_value());
      CHECK(*r == *c.seconds);
    } else {
      REQUIRE_FALSE(r.has_value());
      CHECK(r.error().code == ErrorCode::kInvalidArgument);
      CHECK(r.error().Reason() == "invalid_timestamp");
      if (!c.text.empty()) {
        CHECK(r.error().message.find(c.text) == std::string::npos);
      }
    }
  }
}

TEST_CASE("Time: ParseRfc3339 refuses what a TimePoint cannot hold, and says why") {
  CHECK(ParseRfc3339("1678-01-01T00:00:00Z").has_value());
  CHECK(ParseRfc3339("2261-12-31T23:59:59Z").has_value());
  for (const char* text : {"1677-01-01T00:00:00Z", "2262-12-31T00:00:00Z", "0000-01-01T00:00:00Z",
                           "9999-12-31T23:59:59Z"}) {
    CAPTURE(text);
    auto r = ParseRfc3339(text);
    REQUIRE_FALSE(r.has_value());
    CHECK(r.error().Reason() == "invalid_timestamp");
    CHECK(r.error().message.find("outside") != std::string::npos);
  }
  CHECK(ParseRfc3339Seconds("2016-12-31T23:59:60Z").error().message.find("leap second") !=
        std::string::npos);
  CHECK(ParseRfc3339Seconds("2026-02-30T00:00:00Z").error().message.find("does not exist") !=
        std::string::npos);
}

TEST_CASE("Time: FormatRfc3339 and ParseRfc3339 round-trip") {
  for (int64_t s : {int64_t{0}, int64_t{-1}, int64_t{951782400}, int64_t{1709164800},
                    int64_t{1795000000}, int64_t{4102444799}, int64_t{-2208988800}}) {
    CAPTURE(s);
    const std::string text = FormatRfc3339(FromUnixSeconds(s));
    CHECK(text.size() == 20);
    CHECK(text.back() == 'Z');
    auto back = ParseRfc3339(text);
    REQUIRE(back.has_value());
    CHECK(ToUnixSeconds(*back) == s);
  }
  CHECK(FormatRfc3339(FromUnixSeconds(0)) == "1970-01-01T00:00:00Z");
  CHECK(FormatRfc3339(FromUnixSeconds(-1)) == "1969-12-31T23:59:59Z");
  CHECK(FormatRfc3339(FromUnixSeconds(951782400)) == "2000-02-29T00:00:00Z");
}

}  // namespace
}  // namespace jitbroker
