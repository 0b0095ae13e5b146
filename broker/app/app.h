// App: the composition root. Loads config and validates all of it (issuers
// and trust policies included) before it creates anything; then prepares the
// data directory (generated dev keys), opens the store and the audit journal,
// builds the issuers, the service and the HTTP server, and owns them all.
// Shutdown order: stop accepting and drain HTTP, stop the journal (flushes
// audit), close the store.
//
// Thread-safety: Create/Start/Stop from the main thread; ReloadPolicy may be
// called from any thread (it is serialised internally).
#pragma once

#include <iosfwd>
#include <memory>
#include <mutex>
#include <string>
#include <thread>

#include "jitbroker/result.h"

namespace jitbroker::config {
struct Config;
}
namespace jitbroker::issuers {
class IssuerRegistry;
}

namespace jitbroker::app {

// Checks what LoadConfigFile leaves to the components that use it, without
// side effects (no key generated, no file written, no network): the anomaly
// rules, the audit signing key, every issuer section (its factory's
// Validate: a type this build has, its keys), the principals' identity keys
// (each one some issuer acts for) and the trust policies (parsed, and each
// grant checked against its issuer and the tier policy). `jitctl config
// check`, `jitbroker --check-config` and App::Create (before it creates
// anything) call it, so a file the checkers accept also starts. Errors:
// kInvalidArgument "invalid_config" naming file, line and key.
[[nodiscard]] Status ValidateConfig(config::Config& cfg);
// Same, against the issuer types of `registry` (the daemon uses the
// built-in ones, issuers::BuiltinIssuers()).
[[nodiscard]] Status ValidateConfig(config::Config& cfg, const issuers::IssuerRegistry& registry);

struct AppOptions {
  std::ostream* out = nullptr;  // where first-start notices (generated keys) go
};

class App {
 public:
  ~App();
  [[nodiscard]] static Result<std::unique_ptr<App>> Create(const std::string& config_path,
                                                           AppOptions options);
  // Binds and starts serving on a background thread; returns the port.
  [[nodiscard]] Result<int> Start();
  // Reloads the policy from the config file atomically; returns its version.
  [[nodiscard]] Result<std::string> ReloadPolicy();
  void Stop();

 private:
  App() = default;
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace jitbroker::app
