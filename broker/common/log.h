// Logging: the only way into spdlog. One named logger per component
// ("http", "authn", "policy", "store", "audit", "lifecycle", "issuer.jwt", …),
// JSON lines on stderr. Literal format strings in key=value style; request-path
// lines carry request_id. Never log secrets.
//
// Thread-safety: loggers are thread-safe; InitLogging runs once in main/tests.
#pragma once

#include <memory>
#include <string>
#include <string_view>

#include <spdlog/spdlog.h>

namespace jitbroker::log {

// Sets the global level ("trace".."error", "off") and the JSON pattern.
void InitLogging(std::string_view level);
// The component's logger (created on first use).
std::shared_ptr<spdlog::logger> Get(const std::string& component);

// Where the HTTP access log goes: "stderr" (the "http" logger), "off", or a
// file path (appended, JSON lines). Returns an error message or "".
std::string ConfigureAccessLog(const std::string& target);
// The access logger, or nullptr when off.
std::shared_ptr<spdlog::logger> Access();

}  // namespace jitbroker::log
