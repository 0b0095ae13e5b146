// App: the composition root. Loads config, prepares the data directory
// (generated dev keys), opens the store and the audit journal, builds the
// issuers, the service and the HTTP server, and owns them all. Shutdown
// order: stop accepting and drain HTTP, stop the journal (flushes audit),
// close the store.
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

namespace jitbroker::app {

// Checks what LoadConfigFile leaves to the components that use it (today the
// anomaly rules), without side effects: `jitctl config check` and
// `jitbroker --check-config` call it so that a file they accept also starts.
[[nodiscard]] Status ValidateConfig(config::Config& cfg);

struct AppOptions {
  std::ostream* out = nullptr;     // where first-start notices (generated keys) go
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
