// jitbroker daemon entry point: parses flags, hardens the process, builds the
// App, and turns signals into reload (SIGHUP) and graceful stop (SIGINT/SIGTERM).
#include <signal.h>
#include <sys/prctl.h>
#include <sys/resource.h>

#include <cstring>
#include <iostream>
#include <string>

#include "broker/app/app.h"
#include "broker/config/config.h"
#include "broker/net/http_client.h"

namespace {

void Usage() {
  std::cerr << "usage: jitbroker [--config FILE] [--check-config]\n"
               "  --config FILE    config file (default: conf/dev.yaml)\n"
               "  --check-config   validate the config file and exit\n";
}

}  // namespace

int main(int argc, char** argv) {
  std::string config_path = "conf/dev.yaml";
  bool check_only = false;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    if (arg == "--config" && i + 1 < argc) {
      config_path = argv[++i];
    } else if (arg.rfind("--config=", 0) == 0) {
      config_path = arg.substr(9);
    } else if (arg == "--check-config") {
      check_only = true;
    } else if (arg == "--help" || arg == "-h") {
      Usage();
      return 0;
    } else {
      std::cerr << "jitbroker: unknown argument " << arg << "\n";
      Usage();
      return 2;
    }
  }
  if (check_only) {
    auto cfg = jitbroker::config::LoadConfigFile(config_path);
    if (!cfg) {
      std::cerr << "jitbroker: " << cfg.error().message << "\n";
      return 1;
    }
    // Exactly what start-up checks before it creates anything.
    if (auto st = jitbroker::app::ValidateConfig(*cfg); !st) {
      std::cerr << "jitbroker: " << st.error().message << "\n";
      return 1;
    }
    for (const std::string& w : cfg->policy_notes.warnings) {
      std::cerr << "jitbroker: warning: " << w << "\n";
    }
    std::cout << "ok: policy version " << cfg->policy->version << "\n";
    return 0;
  }

  // Keep secrets out of core dumps and away from ptrace by other users.
  struct rlimit no_core{0, 0};
  setrlimit(RLIMIT_CORE, &no_core);
  prctl(PR_SET_DUMPABLE, 0, 0, 0, 0);

  // Signals are taken synchronously by this thread; every other thread
  // inherits the mask.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGHUP);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);
  signal(SIGPIPE, SIG_IGN);
  // A file-size limit (RLIMIT_FSIZE, e.g. systemd's LimitFSIZE=) then fails
  // the write with EFBIG, as a full disk fails it with ENOSPC: the store
  // refuses the commit and grants fail closed (503), instead of the kernel
  // killing the daemon mid-write.
  signal(SIGXFSZ, SIG_IGN);

  // Before any thread: upstream calls and webhooks use libcurl.
  if (auto st = jitbroker::net::CurlGlobalInit(); !st) {
    std::cerr << "jitbroker: " << st.error().message << "\n";
    return 1;
  }
  auto app = jitbroker::app::App::Create(config_path, {.out = &std::cout});
  if (!app) {
    std::cerr << "jitbroker: " << app.error().message;
    if (!app.error().detail.empty()) {
      std::cerr << " (" << app.error().detail << ")";
    }
    std::cerr << "\n";
    return 1;
  }
  auto port = (*app)->Start();
  if (!port) {
    std::cerr << "jitbroker: " << port.error().message << "\n";
    return 1;
  }
  std::cout << "jitbroker listening on port " << *port << std::endl;

  for (;;) {
    int sig = 0;
    if (sigwait(&signals, &sig) != 0) {
      continue;
    }
    if (sig == SIGHUP) {
      auto v = (*app)->ReloadPolicy();
      (void)v;  // outcome is logged by ReloadPolicy
      continue;
    }
    break;
  }
  (*app)->Stop();
  return 0;
}
