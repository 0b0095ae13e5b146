#include "broker/common/log.h"

#include <mutex>

#include <spdlog/sinks/stdout_sinks.h>

namespace jitbroker::log {

namespace {
constexpr const char* kPattern =
    R"({"ts":"%Y-%m-%dT%H:%M:%S.%fZ","level":"%l","logger":"%n","msg":"%v"})";
std::mutex g_mu;
}  // namespace

void InitLogging(std::string_view level) {
  std::lock_guard lock(g_mu);
  spdlog::set_level(spdlog::level::from_str(std::string(level)));
  spdlog::set_pattern(kPattern, spdlog::pattern_time_type::utc);
}

std::shared_ptr<spdlog::logger> Get(const std::string& component) {
  std::lock_guard lock(g_mu);
  auto logger = spdlog::get(component);
  if (!logger) {
    logger = spdlog::stderr_logger_mt(component);
    logger->set_pattern(kPattern, spdlog::pattern_time_type::utc);
    logger->set_level(spdlog::get_level());
  }
  return logger;
}

}  // namespace jitbroker::log
