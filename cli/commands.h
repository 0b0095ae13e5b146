// jitctl's command implementations: online commands talk to the broker through
// an injected HttpClient; offline ones (audit verify --file, config check) are
// in offline_commands.h.
//
// Secrets: the API key and the session token are read into SecretValues at
// the point of use and only ever travel as HttpRequest::bearer. Output never
// contains them, except the once-shown session token of `sessions open` and
// the credential of `grant request` / `grant show`.
//
// Thread-safety: single-threaded (one command per process).
#pragma once

#include <functional>
#include <istream>
#include <optional>
#include <ostream>
#include <string>

#include "broker/net/http_client.h"
#include "cli/args.h"

namespace jitbroker::cli {

struct Context {
  std::string base_url;  // normalised, no trailing slash
  bool json = false;     // print raw JSON responses
  std::optional<std::string> session_token_file;
  // Environment lookup (std::getenv in main; a map in tests).
  std::function<std::optional<std::string>(const char* name)> getenv;
  net::HttpClient* http = nullptr;  // not owned
  std::istream* in = nullptr;       // for "introspect -"
  std::ostream* out = nullptr;
  std::ostream* err = nullptr;
};

// Runs one online command (everything except help, version, config check and
// audit verify --file). Returns the process exit code (ExitCode).
int RunOnlineCommand(const Invocation& invocation, Context& ctx);

}  // namespace jitbroker::cli
