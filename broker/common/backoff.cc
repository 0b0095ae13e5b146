#include "broker/common/backoff.h"

#include <algorithm>
#include <cstdint>
#include <random>
#include <thread>

namespace jitbroker {

bool BackoffBefore(int attempt, std::chrono::milliseconds base,
                   std::chrono::steady_clock::time_point deadline,
                   const std::function<void(std::chrono::milliseconds)>& sleep) {
  static thread_local std::mt19937_64 rng(std::random_device{}());  // seeded once per thread
  const int64_t cap = base.count() << std::min(attempt, 10);
  const std::chrono::milliseconds d(
      std::uniform_int_distribution<int64_t>(0, std::max<int64_t>(cap, 1))(rng));
  if (std::chrono::steady_clock::now() + d >= deadline) {
    return false;
  }
  if (sleep) {
    sleep(d);
  } else {
    std::this_thread::sleep_for(d);
  }
  return true;
}

}  // namespace jitbroker
