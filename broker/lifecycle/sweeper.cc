#include "broker/lifecycle/sweeper.h"

#include "broker/common/log.h"

namespace jitbroker::lifecycle {

Sweeper::Sweeper(std::chrono::milliseconds interval, std::function<void()> pass)
    : interval_(interval), pass_(std::move(pass)) {}

Sweeper::~Sweeper() { Stop(); }

void Sweeper::Start() {
  thread_ = std::jthread([this](std::stop_token stop) {
    while (!stop.stop_requested()) {
      try {
        pass_();
      } catch (const std::exception& e) {
        log::Get("lifecycle")->error("event=sweep_exception what=\"{}\"", e.what());
      } catch (...) {
        log::Get("lifecycle")->error("event=sweep_exception what=unknown");
      }
      std::unique_lock lock(mu_);
      cv_.wait_for(lock, stop, interval_, [] { return false; });
    }
  });
}

void Sweeper::Stop() {
  if (thread_.joinable()) {
    thread_.request_stop();
    cv_.notify_all();
    thread_.join();
  }
}

}  // namespace jitbroker::lifecycle
