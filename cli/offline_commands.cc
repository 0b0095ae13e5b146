#include "cli/offline_commands.h"

#include <cerrno>
#include <cstring>
#include <fstream>
#include <iterator>
#include <memory>
#include <sstream>
#include <string>

#include <nlohmann/json.hpp>

#include "broker/app/app.h"
#include "broker/config/config.h"
#include "cli/args.h"
#include "cli/format.h"
#include "jitbroker/audit.h"

namespace jitbroker::cli {

namespace {

bool ReadWholeFile(const std::string& path, std::string* text, std::string* problem) {
  errno = 0;
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    *problem = errno != 0 ? std::strerror(errno) : "cannot open";
    return false;
  }
  std::ostringstream buffer;
  buffer << in.rdbuf();
  if (in.bad()) {
    *problem = "read error";
    return false;
  }
  *text = std::move(buffer).str();
  return true;
}

void PrintJson(std::ostream& out, const nlohmann::json& j) {
  if (std::optional<std::string> text = SafeDump(j)) {
    out << *text << "\n";
  }
}

}  // namespace

int RunAuditVerifyFile(const std::string& path, bool json, std::ostream& out, std::ostream& err) {
  const std::string shown = SanitizeForTerminal(path);
  try {
    std::string text;
    std::string problem;
    if (!ReadWholeFile(path, &text, &problem)) {
      err << "error: cannot read " << shown << ": " << problem << "\n";
      return ToInt(ExitCode::kError);
    }
    const ChainVerification v = VerifyChainText(text);
    if (json) {
      nlohmann::json j = {{"ok", v.ok}, {"records", v.records}};
      if (!v.ok) {
        j["first_bad_seq"] = v.first_bad_seq;
        j["first_bad_line"] = v.first_bad_line;
        j["problem"] = v.problem;
      }
      PrintJson(out, j);
    } else if (v.ok) {
      out << "ok: " << v.records << " records\n";
    } else {
      out << "BROKEN at seq " << v.first_bad_seq << " (line " << v.first_bad_line
          << "): " << SanitizeForTerminal(v.problem) << "\n";
    }
    return ToInt(v.ok ? ExitCode::kOk : ExitCode::kError);
  } catch (...) {
    err << "error: internal error while verifying " << shown << "\n";
    return ToInt(ExitCode::kError);
  }
}

int RunConfigCheck(const std::string& path, bool json, std::ostream& out, std::ostream& err) {
  try {
    Result<config::Config> cfg = config::LoadConfigFile(path);
    if (cfg) {
      if (auto st = app::ValidateConfig(*cfg); !st) {
        cfg = std::unexpected(st.error());
      }
    }
    if (!cfg) {
      const Error& e = cfg.error();
      if (json) {
        PrintJson(out, {{"ok", false}, {"code", std::string(e.Reason())}, {"error", e.message}});
      }
      err << SanitizeForTerminal(e.message);
      if (!e.detail.empty()) {
        err << " (" << SanitizeForTerminal(e.detail) << ")";
      }
      err << "\n";
      return ToInt(ExitCode::kError);
    }
    const std::string version = cfg->policy ? cfg->policy->version : std::string();
    const size_t principals = cfg->policy ? cfg->policy->principals.size() : 0;
    const size_t issuers = cfg->issuers.size();
    if (json) {
      PrintJson(out, {{"ok", true},
                      {"policy_version", version},
                      {"principals", principals},
                      {"issuers", issuers}});
    } else {
      out << "ok: policy version " << SanitizeForTerminal(version) << ", " << principals
          << " principals, " << issuers << " issuers\n";
    }
    return ToInt(ExitCode::kOk);
  } catch (...) {
    err << "error: internal error while checking " << SanitizeForTerminal(path) << "\n";
    return ToInt(ExitCode::kError);
  }
}

}  // namespace jitbroker::cli
