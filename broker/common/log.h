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

// A value for a key=value line that may hold text a client chose (a path, a
// header, an error message quoting input): always double-quoted, with '"',
// '\\', control characters, DEL and every byte >= 0x80 escaped as \" \\ \xNN,
// so no value can end early and forge further fields. Values longer than
// `max` bytes are cut and end in "..." inside the quotes.
std::string Quoted(std::string_view value, size_t max = 512);

}  // namespace jitbroker::log
