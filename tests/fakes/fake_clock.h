// FakeClock: a Clock that moves only when told (as abseil's SimulatedClock).
// Thread-safe.
#pragma once

#include <atomic>

#include "jitbroker/clock.h"

namespace jitbroker::testing {

class FakeClock final : public Clock {
 public:
  explicit FakeClock(TimePoint start = FromUnixSeconds(1795000000))
      : now_(start.time_since_epoch().count()) {}
  TimePoint Now() const override { return TimePoint(TimePoint::duration(now_.load())); }
  void Advance(TimePoint::duration d) { now_ += d.count(); }
  void Set(TimePoint t) { now_ = t.time_since_epoch().count(); }

 private:
  std::atomic<TimePoint::rep> now_;
};

}  // namespace jitbroker::testing
