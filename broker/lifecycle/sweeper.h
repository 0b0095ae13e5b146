// Sweeper: the background loop that runs BrokerService::Sweep() every
// interval (ends expired and stalled sessions, expires grants and approvals,
// retries queued revocations). A std::jthread with a stop_token; Stop() wakes
// it at once.
//
// Thread-safety: Start/Stop from one thread.
#pragma once

#include <chrono>
#include <condition_variable>
#include <functional>
#include <mutex>
#include <thread>

namespace jitbroker::lifecycle {

class Sweeper {
 public:
  // `pass` runs once per interval; its failures are its own to log.
  Sweeper(std::chrono::milliseconds interval, std::function<void()> pass);
  ~Sweeper();
  void Start();
  void Stop();

 private:
  std::chrono::milliseconds interval_;
  std::function<void()> pass_;
  std::mutex mu_;
  std::condition_variable_any cv_;
  std::jthread thread_;
};

}  // namespace jitbroker::lifecycle
