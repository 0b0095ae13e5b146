// KeyedRateLimiter: one token bucket per key (a session id, a principal id,
// a source address, …). Each bucket holds at most `burst` tokens and refills
// continuously at `rate_per_second`; a request takes one token or is refused
// with the whole seconds until one is there (for Retry-After). Limits are
// configured under `limits:` (docs/configuration.md).
//
// Memory is bounded by `max_keys`. A bucket that has refilled to `burst` is
// indistinguishable from a new one, so it may be dropped. When a new key finds
// the table full, every full bucket is dropped in one pass; the pass also
// learns when the next bucket will be full, and until then new keys are
// refused without another pass (so a full table costs O(1) per call, and each
// pass is paid for by the keys it could drop). A key that cannot be tracked is
// refused (fail closed): forgetting it would hand it a full bucket.
//
// Time comes from the injected Clock (tests use a FakeClock); a clock that
// steps back refills nothing.
//
// Thread-safety: all methods are thread-safe (one mutex; each call is O(1)
// amortised). The Clock must outlive the limiter.
#pragma once

#include <cstddef>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <unordered_map>

#include "jitbroker/clock.h"
#include "jitbroker/result.h"

namespace jitbroker {

// One bucket's shape. Bounds (checked by KeyedRateLimiter::Create and by the
// config loader): 0 < rate_per_second <= kMaxRatePerSecond,
// 1 <= burst <= kMaxBurst.
struct RateLimit {
  double rate_per_second = 1;  // tokens added per second
  double burst = 1;            // bucket capacity: requests allowed back to back
};
inline constexpr double kMaxRatePerSecond = 1e6;
inline constexpr double kMaxBurst = 1e6;

class KeyedRateLimiter {
 public:
  struct Options {
    RateLimit limit;
    size_t max_keys = 100000;  // buckets tracked at most; >= 1
  };

  struct Outcome {
    bool allowed = false;
    // Refused because the key could not be tracked (the table is full of
    // buckets still refilling), not because its own bucket is empty.
    bool untracked = false;
    // When refused: whole seconds (>= 1) until a retry can succeed.
    Seconds retry_after{0};
  };

  // Errors: kInvalidArgument ("invalid_config") for options out of bounds or
  // a null clock.
  [[nodiscard]] static Result<std::unique_ptr<KeyedRateLimiter>> Create(Options options,
                                                                        const Clock* clock);

  // Takes one token from `key`'s bucket (creating a full one for a new key).
  Outcome Acquire(std::string_view key);
  // What Acquire would answer now, taking nothing and tracking no new key (a
  // key without a bucket has a full one). For limits charged only after the
  // fact, e.g. failed authentications: refuse while the bucket is empty,
  // take a token when one more fails.
  Outcome Peek(std::string_view key) const;
  // Drops `key`'s bucket (e.g. its session ended); a later Acquire starts full.
  void Forget(std::string_view key);

  size_t TrackedKeys() const;
  const Options& options() const { return options_; }

 private:
  struct Bucket {
    double tokens = 0;
    TimePoint updated;  // when `tokens` was last brought up to date
  };

  KeyedRateLimiter(Options options, const Clock* clock);
  // Brings `b` up to `now` (never backwards).
  void Refill(Bucket& b, TimePoint now) const;
  // When `b` will hold `burst` tokens again.
  TimePoint FullAt(const Bucket& b) const;
  Seconds SecondsUntil(TimePoint from, TimePoint to) const;
  // Makes room for one new key; false if none can be made before `retry_at`.
  bool MakeRoomLocked(TimePoint now, TimePoint* retry_at);

  const Options options_;
  const Clock* clock_;

  mutable std::mutex mu_;
  std::unordered_map<std::string, Bucket> buckets_;  // guarded by mu_
  // While the table is full and now < no_room_until_, no bucket can be full,
  // so nothing can be dropped. Guarded by mu_.
  TimePoint no_room_until_{};
};

}  // namespace jitbroker
