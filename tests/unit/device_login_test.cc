// DeviceLogins (broker/http/device_login.h): `jitctl login`'s device codes,
// on a fake clock — one approval, one collection, expiry, the bound, and
// RFC 8628's slow_down.
#include <set>
#include <string>

#include <doctest/doctest.h>

#include "broker/http/device_login.h"
#include "tests/fakes/fake_clock.h"

namespace jitbroker::http {
namespace {

using testing::FakeClock;

TEST_CASE("DeviceLogins: approved once, collected once, with the person's token") {
  FakeClock clock;
  DeviceLogins logins(&clock, {});
  DeviceLogins::Started s = logins.Start("127.0.0.1");
  REQUIRE(s.user_code.size() == 9);
  CHECK(s.user_code[4] == '-');
  for (char c : s.user_code) {
    CHECK((c == '-' || std::string_view("BCDFGHJKLMNPQRSTVWXZ").find(c) != std::string::npos));
  }
  CHECK(s.device_code.Reveal().size() >= 43);
  CHECK(s.expires_in == Seconds(600));

  auto pending = logins.Poll(s.device_code.Reveal());
  REQUIRE_FALSE(pending);
  CHECK(pending.error().Reason() == "authorization_pending");
  // Typed in lower case, without the dash.
  std::string typed = s.user_code.substr(0, 4) + s.user_code.substr(5);
  for (char& c : typed) c = static_cast<char>(c - 'A' + 'a');
  auto found = logins.Find(typed);
  REQUIRE(found);
  CHECK(found->requested_from == "127.0.0.1");
  REQUIRE(logins.Approve(typed, "eng_1", SecretValue(std::string("id.token.value")),
                         clock.Now() + Seconds(3600)));
  CHECK(logins.Approve(typed, "eng_2", SecretValue(std::string("other")), clock.Now())
            .error()
            .Reason() == "unknown_user_code");  // answered already
  clock.Advance(Seconds(6));
  auto got = logins.Poll(s.device_code.Reveal());
  REQUIRE(got);
  CHECK(got->token.Reveal() == "id.token.value");
  CHECK(got->principal_id == "eng_1");
  auto again = logins.Poll(s.device_code.Reveal());
  REQUIRE_FALSE(again);
  CHECK(again.error().Reason() == "expired_token");
  CHECK(logins.pending() == 0);
}

TEST_CASE("DeviceLogins: denied, expired, unknown, too fast, and bounded") {
  FakeClock clock;
  DeviceLogins logins(&clock, {.lifetime = Seconds(600), .interval = Seconds(5), .max_pending = 3});
  SUBCASE("denied") {
    auto s = logins.Start("a");
    REQUIRE(logins.Deny(s.user_code));
    auto r = logins.Poll(s.device_code.Reveal());
    REQUIRE_FALSE(r);
    CHECK(r.error().Reason() == "access_denied");
    CHECK(logins.Poll(s.device_code.Reveal()).error().Reason() == "expired_token");
  }
  SUBCASE("expired") {
    auto s = logins.Start("a");
    clock.Advance(Seconds(601));
    CHECK(logins.Find(s.user_code).error().Reason() == "unknown_user_code");
    CHECK(logins.Poll(s.device_code.Reveal()).error().Reason() == "expired_token");
  }
  SUBCASE("unknown codes") {
    CHECK(logins.Find("BCDF-GHJK").error().Reason() == "unknown_user_code");
    CHECK(logins.Poll("made-up").error().Reason() == "expired_token");
  }
  SUBCASE("polling faster than the interval slows down") {
    auto s = logins.Start("a");
    CHECK(logins.Poll(s.device_code.Reveal()).error().Reason() == "authorization_pending");
    CHECK(logins.Poll(s.device_code.Reveal()).error().Reason() == "slow_down");
    clock.Advance(Seconds(6));  // the interval grew to 10 s: still too fast
    CHECK(logins.Poll(s.device_code.Reveal()).error().Reason() == "slow_down");
    clock.Advance(Seconds(16));  // each slow_down adds 5 s: now 15
    CHECK(logins.Poll(s.device_code.Reveal()).error().Reason() == "authorization_pending");
  }
  SUBCASE("at most max_pending wait; the oldest goes") {
    auto first = logins.Start("a");
    std::set<std::string> codes;
    for (int i = 0; i < 3; ++i) {
      codes.insert(logins.Start("b").user_code);
    }
    CHECK(logins.pending() == 3);
    CHECK(codes.size() == 3);
    CHECK(logins.Find(first.user_code).error().Reason() == "unknown_user_code");
  }
}

}  // namespace
}  // namespace jitbroker::http
