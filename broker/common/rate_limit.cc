#include "broker/common/rate_limit.h"

#include <algorithm>
#include <chrono>
#include <cmath>

#include "jitbroker/error.h"

namespace jitbroker {

namespace {

using FloatSeconds = std::chrono::duration<double>;

// Token counts are sums of float products: compare with a little slack so a
// bucket refilled for exactly the right time counts as refilled.
constexpr double kSlack = 1e-9;

}  // namespace

Result<std::unique_ptr<KeyedRateLimiter>> KeyedRateLimiter::Create(Options options,
                                                                   const Clock* clock) {
  const RateLimit& l = options.limit;
  // Written so that NaN fails every comparison and is refused.
  if (!(l.rate_per_second > 0 && l.rate_per_second <= kMaxRatePerSecond)) {
    return std::unexpected(
        InvalidArgument("invalid_config", "rate_per_second must be in (0, 1000000]"));
  }
  if (!(l.burst >= 1 && l.burst <= kMaxBurst)) {
    return std::unexpected(InvalidArgument("invalid_config", "burst must be in [1, 1000000]"));
  }
  if (options.max_keys == 0) {
    return std::unexpected(InvalidArgument("invalid_config", "max_keys must be at least 1"));
  }
  if (clock == nullptr) {
    return std::unexpected(InvalidArgument("invalid_config", "a rate limiter needs a clock"));
  }
  return std::unique_ptr<KeyedRateLimiter>(new KeyedRateLimiter(options, clock));
}

KeyedRateLimiter::KeyedRateLimiter(Options options, const Clock* clock)
    : options_(options), clock_(clock) {}

void KeyedRateLimiter::Refill(Bucket& b, TimePoint now) const {
  if (now <= b.updated) {
    return;  // a clock that steps back refills nothing
  }
  const double elapsed = std::chrono::duration_cast<FloatSeconds>(now - b.updated).count();
  b.tokens = std::min(options_.limit.burst, b.tokens + elapsed * options_.limit.rate_per_second);
  b.updated = now;
}

TimePoint KeyedRateLimiter::FullAt(const Bucket& b) const {
  const double missing = options_.limit.burst - b.tokens;
  if (missing <= kSlack) {
    return b.updated;
  }
  return b.updated + std::chrono::duration_cast<TimePoint::duration>(
                         FloatSeconds(missing / options_.limit.rate_per_second));
}

Seconds KeyedRateLimiter::SecondsUntil(TimePoint from, TimePoint to) const {
  const double s = to > from ? std::chrono::duration_cast<FloatSeconds>(to - from).count() : 0;
  return Seconds(std::max<int64_t>(1, static_cast<int64_t>(std::ceil(s - kSlack))));
}

bool KeyedRateLimiter::MakeRoomLocked(TimePoint now, TimePoint* retry_at) {
  if (buckets_.size() < options_.max_keys) {
    return true;
  }
  if (now < no_room_until_) {
    *retry_at = no_room_until_;
    return false;
  }
  TimePoint soonest = TimePoint::max();
  for (auto it = buckets_.begin(); it != buckets_.end();) {
    Refill(it->second, now);
    if (it->second.tokens >= options_.limit.burst - kSlack) {
      it = buckets_.erase(it);
      continue;
    }
    soonest = std::min(soonest, FullAt(it->second));
    ++it;
  }
  if (buckets_.size() < options_.max_keys) {
    no_room_until_ = TimePoint{};
    return true;
  }
  no_room_until_ = soonest;
  *retry_at = soonest;
  return false;
}

KeyedRateLimiter::Outcome KeyedRateLimiter::Acquire(std::string_view key) {
  const TimePoint now = clock_->Now();
  std::lock_guard lock(mu_);
  auto it = buckets_.find(std::string(key));
  if (it == buckets_.end()) {
    TimePoint retry_at;
    if (!MakeRoomLocked(now, &retry_at)) {
      return Outcome{
          .allowed = false, .untracked = true, .retry_after = SecondsUntil(now, retry_at)};
    }
    it = buckets_.emplace(std::string(key), Bucket{options_.limit.burst, now}).first;
  }
  Bucket& b = it->second;
  Refill(b, now);
  if (b.tokens >= 1 - kSlack) {
    b.tokens = std::max(0.0, b.tokens - 1);
    return Outcome{.allowed = true};
  }
  const auto wait = std::chrono::duration_cast<TimePoint::duration>(
      FloatSeconds((1 - b.tokens) / options_.limit.rate_per_second));
  return Outcome{.allowed = false, .retry_after = SecondsUntil(now, b.updated + wait)};
}

KeyedRateLimiter::Outcome KeyedRateLimiter::Peek(std::string_view key) const {
  const TimePoint now = clock_->Now();
  std::lock_guard lock(mu_);
  auto it = buckets_.find(std::string(key));
  if (it == buckets_.end()) {
    return Outcome{.allowed = true};
  }
  Bucket b = it->second;
  Refill(b, now);
  if (b.tokens >= 1 - kSlack) {
    return Outcome{.allowed = true};
  }
  const auto wait = std::chrono::duration_cast<TimePoint::duration>(
      FloatSeconds((1 - b.tokens) / options_.limit.rate_per_second));
  return Outcome{.allowed = false, .retry_after = SecondsUntil(now, b.updated + wait)};
}

void KeyedRateLimiter::Forget(std::string_view key) {
  std::lock_guard lock(mu_);
  buckets_.erase(std::string(key));
}

size_t KeyedRateLimiter::TrackedKeys() const {
  std::lock_guard lock(mu_);
  return buckets_.size();
}

}  // namespace jitbroker
