// Clock: the injectable source of time. Production uses SystemClock; tests use
// a FakeClock (tests/fakes/fake_clock.h) that advances only when told.
//
// Thread-safety: implementations must be safe to call from any thread.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>

namespace jitbroker {

using TimePoint = std::chrono::system_clock::time_point;
using Seconds = std::chrono::seconds;

class Clock {
 public:
  virtual ~Clock() = default;
  virtual TimePoint Now() const = 0;
};

class SystemClock final : public Clock {
 public:
  TimePoint Now() const override { return std::chrono::system_clock::now(); }
};

// The system clock shifted by an offset set at run time. With a store that
// several broker replicas share, the offset to the database server's clock,
// so that every replica measures deadlines (session TTLs and stall
// deadlines, grant and approval expiry) on one clock (docs/architecture.md,
// "Several replicas"). Zero until set.
class OffsetClock final : public Clock {
 public:
  TimePoint Now() const override {
    return std::chrono::system_clock::now() +
           std::chrono::duration_cast<TimePoint::duration>(
               std::chrono::nanoseconds(offset_ns_.load(std::memory_order_relaxed)));
  }
  void SetOffset(std::chrono::nanoseconds offset) {
    offset_ns_.store(offset.count(), std::memory_order_relaxed);
  }
  std::chrono::nanoseconds Offset() const {
    return std::chrono::nanoseconds(offset_ns_.load(std::memory_order_relaxed));
  }

 private:
  std::atomic<int64_t> offset_ns_{0};
};

inline int64_t ToUnixSeconds(TimePoint t) {
  return std::chrono::duration_cast<std::chrono::seconds>(t.time_since_epoch()).count();
}
inline TimePoint FromUnixSeconds(int64_t s) { return TimePoint(std::chrono::seconds(s)); }

}  // namespace jitbroker
