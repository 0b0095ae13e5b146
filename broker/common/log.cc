#include "broker/common/log.h"

#include <algorithm>
#include <mutex>

#include <spdlog/pattern_formatter.h>
#include <spdlog/sinks/basic_file_sink.h>
#include <spdlog/sinks/stdout_sinks.h>

namespace jitbroker::log {

namespace {

constexpr const char* kPattern =
    R"({"ts":"%Y-%m-%dT%H:%M:%S.%fZ","level":"%l","logger":"%n","msg":"%*"})";

// %* : the message, escaped so that every line is valid JSON whatever the
// message holds (quotes, backslashes, control characters).
class JsonEscapedMessage final : public spdlog::custom_flag_formatter {
 public:
  void format(const spdlog::details::log_msg& msg, const std::tm&,
              spdlog::memory_buf_t& dest) override {
    static constexpr char kHex[] = "0123456789abcdef";
    for (char c : msg.payload) {
      const auto u = static_cast<unsigned char>(c);
      if (c == '"' || c == '\\') {
        dest.push_back('\\');
        dest.push_back(c);
      } else if (u < 0x20) {
        const char esc[] = {'\\', 'u', '0', '0', kHex[u >> 4], kHex[u & 0xF]};
        dest.append(esc, esc + sizeof(esc));
      } else {
        dest.push_back(c);
      }
    }
  }
  std::unique_ptr<custom_flag_formatter> clone() const override {
    return std::make_unique<JsonEscapedMessage>();
  }
};

std::unique_ptr<spdlog::formatter> MakeFormatter() {
  auto f = std::make_unique<spdlog::pattern_formatter>(spdlog::pattern_time_type::utc);
  f->add_flag<JsonEscapedMessage>('*').set_pattern(kPattern);
  return f;
}

std::mutex g_mu;
std::shared_ptr<spdlog::logger> g_access;
bool g_access_configured = false;

std::shared_ptr<spdlog::sinks::stderr_sink_mt> SharedSink() {
  static auto sink = [] {
    auto s = std::make_shared<spdlog::sinks::stderr_sink_mt>();
    s->set_formatter(MakeFormatter());
    return s;
  }();
  return sink;
}

}  // namespace

void InitLogging(std::string_view level) {
  std::lock_guard lock(g_mu);
  spdlog::set_level(spdlog::level::from_str(std::string(level)));
  spdlog::apply_all(
      [&](const std::shared_ptr<spdlog::logger>& l) { l->set_level(spdlog::get_level()); });
}

std::shared_ptr<spdlog::logger> Get(const std::string& component) {
  std::lock_guard lock(g_mu);
  auto logger = spdlog::get(component);
  if (!logger) {
    logger = std::make_shared<spdlog::logger>(component, SharedSink());
    logger->set_level(spdlog::get_level());
    spdlog::register_logger(logger);
  }
  return logger;
}

std::string ConfigureAccessLog(const std::string& target) {
  std::shared_ptr<spdlog::logger> logger;
  if (target == "stderr" || target.empty()) {
    logger = Get("http");
  } else if (target != "off") {
    try {
      auto sink = std::make_shared<spdlog::sinks::basic_file_sink_mt>(target);
      sink->set_formatter(MakeFormatter());
      logger = std::make_shared<spdlog::logger>("access", sink);
      logger->set_level(spdlog::level::info);
      logger->flush_on(spdlog::level::info);
    } catch (const std::exception& e) {
      return std::string("cannot open access log ") + target;
    }
  }
  std::lock_guard lock(g_mu);
  g_access = std::move(logger);
  g_access_configured = true;
  return "";
}

std::shared_ptr<spdlog::logger> Access() {
  {
    std::lock_guard lock(g_mu);
    if (g_access_configured) {
      return g_access;
    }
  }
  return Get("http");
}

std::string Quoted(std::string_view value, size_t max) {
  static constexpr char kHex[] = "0123456789abcdef";
  std::string out;
  out.reserve(std::min(value.size(), max) + 8);
  out.push_back('"');
  const bool cut = value.size() > max;
  for (char c : value.substr(0, max)) {
    const auto u = static_cast<unsigned char>(c);
    if (c == '"' || c == '\\') {
      out.push_back('\\');
      out.push_back(c);
    } else if (u < 0x20 || u >= 0x7f) {
      const char esc[] = {'\\', 'x', kHex[u >> 4], kHex[u & 0xF]};
      out.append(esc, sizeof(esc));
    } else {
      out.push_back(c);
    }
  }
  if (cut) {
    out += "...";
  }
  out.push_back('"');
  return out;
}

}  // namespace jitbroker::log
