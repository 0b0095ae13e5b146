// KeyedRateLimiter (broker/common/rate_limit.h): token buckets per key,
// driven by a FakeClock (no sleeps).
#include "broker/common/rate_limit.h"

#include <atomic>
#include <chrono>
#include <cmath>
#include <string>
#include <thread>
#include <vector>

#include <doctest/doctest.h>

#include "tests/fakes/fake_clock.h"

namespace jitbroker {
namespace {

using std::chrono::milliseconds;
using testing::FakeClock;

std::unique_ptr<KeyedRateLimiter> Make(const FakeClock& clock, double rate, double burst,
                                       size_t max_keys = 1000) {
  KeyedRateLimiter::Options o;
  o.limit = RateLimit{.rate_per_second = rate, .burst = burst};
  o.max_keys = max_keys;
  auto l = KeyedRateLimiter::Create(o, &clock);
  REQUIRE_MESSAGE(l.has_value(), (l ? "" : l.error().ToString()));
  return std::move(*l);
}

TEST_CASE("RateLimiter: a burst passes, then refusals name the wait until the next token") {
  FakeClock clock;
  auto l = Make(clock, /*rate=*/0.5, /*burst=*/3);
  for (int i = 0; i < 3; ++i) {
    CHECK(l->Acquire("ses_a").allowed);
  }
  KeyedRateLimiter::Outcome out = l->Acquire("ses_a");
  CHECK_FALSE(out.allowed);
  CHECK_FALSE(out.untracked);
  CHECK(out.retry_after == Seconds(2));  // one token every 2 s
  clock.Advance(milliseconds(1500));
  out = l->Acquire("ses_a");
  CHECK_FALSE(out.allowed);
  CHECK(out.retry_after == Seconds(1));  // 0.5 s left, rounded up to a whole second
  clock.Advance(milliseconds(500));
  CHECK(l->Acquire("ses_a").allowed);
  CHECK_FALSE(l->Acquire("ses_a").allowed);
  // Refill is capped at the burst.
  clock.Advance(std::chrono::hours(1));
  for (int i = 0; i < 3; ++i) {
    CHECK(l->Acquire("ses_a").allowed);
  }
  CHECK_FALSE(l->Acquire("ses_a").allowed);
}

TEST_CASE("RateLimiter: Peek answers as Acquire would, taking nothing and tracking nothing") {
  FakeClock clock;
  auto l = Make(clock, /*rate=*/0.5, /*burst=*/2);
  CHECK(l->Peek("addr").allowed);  // an unknown key has a full bucket
  CHECK(l->TrackedKeys() == 0);
  CHECK(l->Acquire("addr").allowed);
  CHECK(l->Peek("addr").allowed);
  CHECK(l->Peek("addr").allowed);  // peeking takes nothing
  CHECK(l->Acquire("addr").allowed);
  KeyedRateLimiter::Outcome out = l->Peek("addr");
  CHECK_FALSE(out.allowed);
  CHECK(out.retry_after == Seconds(2));
  clock.Advance(milliseconds(2000));
  CHECK(l->Peek("addr").allowed);
  CHECK(l->Acquire("addr").allowed);
  CHECK_FALSE(l->Peek("addr").allowed);
}

TEST_CASE("RateLimiter: keys have their own buckets; Forget starts a key afresh") {
  FakeClock clock;
  auto l = Make(clock, 1, 1);
  CHECK(l->Acquire("a").allowed);
  CHECK_FALSE(l->Acquire("a").allowed);
  CHECK(l->Acquire("b").allowed);
  CHECK(l->TrackedKeys() == 2);
  l->Forget("a");
  CHECK(l->TrackedKeys() == 1);
  CHECK(l->Acquire("a").allowed);
}

TEST_CASE("RateLimiter: a clock that steps back refills nothing") {
  FakeClock clock;
  auto l = Make(clock, 1, 1);
  CHECK(l->Acquire("a").allowed);
  clock.Advance(-std::chrono::seconds(30));
  CHECK_FALSE(l->Acquire("a").allowed);
  clock.Advance(std::chrono::seconds(30));
  CHECK_FALSE(l->Acquire("a").allowed);  // time lost to the step does not count
  clock.Advance(std::chrono::seconds(1));
  CHECK(l->Acquire("a").allowed);
}

TEST_CASE("RateLimiter: memory is bounded; full buckets make room, else new keys are refused") {
  FakeClock clock;
  auto l = Make(clock, /*rate=*/1, /*burst=*/2, /*max_keys=*/3);
  for (const char* k : {"a", "b", "c"}) {
    CHECK(l->Acquire(k).allowed);  // each bucket now 1 token short of full
  }
  CHECK(l->TrackedKeys() == 3);

  // No bucket is full: a fourth key cannot be tracked and is refused (fail
  // closed), with the wait until the first bucket is full again.
  KeyedRateLimiter::Outcome out = l->Acquire("d");
  CHECK_FALSE(out.allowed);
  CHECK(out.untracked);
  CHECK(out.retry_after == Seconds(1));
  CHECK(l->TrackedKeys() == 3);
  // Known keys are unaffected.
  CHECK(l->Acquire("a").allowed);

  // Once "b" and "c" have refilled, they are dropped and "d" fits.
  clock.Advance(milliseconds(1001));
  CHECK(l->Acquire("d").allowed);
  CHECK(l->TrackedKeys() <= 3);
  // "b" was forgotten full, so it starts full again: nothing was lost.
  CHECK(l->Acquire("b").allowed);
  CHECK(l->Acquire("b").allowed);
}

TEST_CASE("RateLimiter: a full table of busy keys is not rescanned on every call") {
  FakeClock clock;
  auto l = Make(clock, /*rate=*/0.1, /*burst=*/1, /*max_keys=*/100);
  for (int i = 0; i < 100; ++i) {
    REQUIRE(l->Acquire("k" + std::to_string(i)).allowed);
  }
  // Every new key is refused until the first bucket is full (10 s).
  for (int i = 0; i < 50; ++i) {
    KeyedRateLimiter::Outcome out = l->Acquire("new" + std::to_string(i));
    CHECK_FALSE(out.allowed);
    CHECK(out.untracked);
    CHECK(out.retry_after.count() >= 1);
    CHECK(out.retry_after.count() <= 10);
  }
  clock.Advance(std::chrono::seconds(11));
  CHECK(l->Acquire("new0").allowed);
}

TEST_CASE("RateLimiter: concurrent callers share one bucket exactly") {
  FakeClock clock;
  auto l = Make(clock, 0.001, 100);
  std::atomic<int> allowed{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 8; ++t) {
    threads.emplace_back([&] {
      for (int i = 0; i < 50; ++i) {
        if (l->Acquire("shared").allowed) {
          ++allowed;
        }
      }
    });
  }
  for (auto& t : threads) {
    t.join();
  }
  CHECK(allowed.load() == 100);
}

TEST_CASE("RateLimiter: options out of bounds are refused") {
  FakeClock clock;
  struct Case {
    const char* name;
    double rate;
    double burst;
    size_t max_keys;
  } cases[] = {
      {"zero rate", 0, 1, 10},
      {"negative rate", -1, 1, 10},
      {"NaN rate", std::nan(""), 1, 10},
      {"rate too high", 2e6, 1, 10},
      {"burst below one", 1, 0.5, 10},
      {"burst too high", 1, 2e6, 10},
      {"no keys", 1, 1, 0},
  };
  for (const Case& c : cases) {
    CAPTURE(c.name);
    KeyedRateLimiter::Options o;
    o.limit = RateLimit{.rate_per_second = c.rate, .burst = c.burst};
    o.max_keys = c.max_keys;
    auto l = KeyedRateLimiter::Create(o, &clock);
    REQUIRE_FALSE(l.has_value());
    CHECK(l.error().code == ErrorCode::kInvalidArgument);
  }
  KeyedRateLimiter::Options ok;
  CHECK_FALSE(KeyedRateLimiter::Create(ok, nullptr).has_value());
}

}  // namespace
}  // namespace jitbroker
