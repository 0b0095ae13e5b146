// jitctl: the command-line client of jitbroker (docs/jitctl.md).

#include <csignal>
#include <cstdlib>
#include <exception>
#include <iostream>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "broker/net/http_client.h"
#include "broker/net/url.h"
#include "cli/args.h"
#include "cli/commands.h"
#include "cli/format.h"
#include "cli/offline_commands.h"

namespace jitbroker::cli {
namespace {

std::optional<std::string> GetEnv(const char* name) {
  const char* v = std::getenv(name);
  if (v == nullptr || *v == '\0') {
    return std::nullopt;
  }
  return std::string(v);
}

int PrintUsageError(const UsageError& e) {
  std::cerr << "jitctl: " << e.message << "\n";
  if (e.command != nullptr) {
    std::cerr << UsageLine(*e.command) << "\n";
  } else if (!e.group.empty()) {
    std::cerr << GroupHelp(e.group);
  } else {
    std::cerr << "run 'jitctl --help' for the list of commands\n";
  }
  return ToInt(ExitCode::kUsage);
}

int Run(int argc, char** argv) {
  std::vector<std::string> args;
  for (int i = 1; i < argc; ++i) {
    args.emplace_back(argv[i]);
  }
  ParseResult parsed = ParseCommandLine(args);
  if (!parsed) {
    return PrintUsageError(parsed.error());
  }
  const Invocation& inv = *parsed;
  if (inv.help) {
    if (inv.command != nullptr) {
      std::cout << CommandHelp(*inv.command);
    } else if (!inv.help_group.empty()) {
      std::cout << GroupHelp(inv.help_group);
    } else {
      std::cout << GeneralHelp();
    }
    return ToInt(ExitCode::kOk);
  }
  const bool json = inv.args.Switch("json");
  const std::string_view name = inv.command->name;
  if (name == "version") {
    if (json) {
      std::cout << "{\"version\":\"" << kJitctlVersion << "\"}\n";
    } else {
      std::cout << "jitctl " << kJitctlVersion << "\n";
    }
    return ToInt(ExitCode::kOk);
  }
  if (name == "completion") {
    return RunCompletion(inv.args.args[0], std::cout, std::cerr);
  }
  if (name == "jwks" && inv.args.Has("from-pem")) {
    return RunJwksFromPem(*inv.args.Get("from-pem"), std::cout, std::cerr);  // always JSON
  }
  if (name == "config check") {
    return RunConfigCheck(inv.args.args[0], json, std::cout, std::cerr);
  }
  if (name == "audit verify") {
    AuditVerifyFileOptions options;
    if (std::string bad = ParseAuditVerifyFileOptions(inv.args, &options); !bad.empty()) {
      return PrintUsageError(UsageError{bad, inv.command, {}});
    }
    if (inv.args.Has("file")) {
      return RunAuditVerifyFile(options, json, std::cout, std::cerr);
    }
  }

  const std::string raw_url =
      inv.args.Get("url").value_or(GetEnv("JITBROKER_URL").value_or(std::string(kDefaultUrl)));
  auto base_url = NormalizeBaseUrl(raw_url);
  if (!base_url) {
    return PrintUsageError(UsageError{base_url.error(), inv.command, {}});
  }
  if (!BrokerUrlIsEncryptedOrLoopback(*base_url)) {
    std::cerr << "warning: the broker URL uses plain http to a non-loopback host; "
                 "tokens travel unencrypted\n";
  }
  net::CurlHttpClientOptions options;
  options.ca_file = inv.args.Get("cacert").value_or(GetEnv("JITBROKER_CACERT").value_or(""));
  options.user_agent = "jitctl/" + std::string(kJitctlVersion);
  options.max_response_bytes = 64 * 1024 * 1024;

  if (Status st = net::CurlGlobalInit(); !st) {
    std::cerr << "error: " << st.error().message << "\n";
    return ToInt(ExitCode::kError);
  }
  int rc = ToInt(ExitCode::kError);
  {
    std::unique_ptr<net::HttpClient> http = net::MakeCurlHttpClient(std::move(options));
    Context ctx;
    ctx.base_url = std::move(*base_url);
    ctx.json = json;
    ctx.session_token_file = inv.args.Get("session-token-file");
    ctx.getenv = &GetEnv;
    ctx.http = http.get();
    ctx.in = &std::cin;
    ctx.out = &std::cout;
    ctx.err = &std::cerr;
    rc = RunOnlineCommand(inv, ctx);
  }
  net::CurlGlobalCleanup();
  return rc;
}

}  // namespace
}  // namespace jitbroker::cli

int main(int argc, char** argv) {
  // Writes to a closed socket or pipe must fail with EPIPE, not kill us.
  std::signal(SIGPIPE, SIG_IGN);
  try {
    return jitbroker::cli::Run(argc, argv);
  } catch (const std::exception& e) {
    std::cerr << "error: internal error: " << e.what() << "\n";
  } catch (...) {
    std::cerr << "error: internal error\n";
  }
  return static_cast<int>(jitbroker::cli::ExitCode::kError);
}
