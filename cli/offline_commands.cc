#include "cli/offline_commands.h"

#include <algorithm>
#include <cerrno>
#include <climits>
#include <cstring>
#include <fstream>
#include <iterator>
#include <map>
#include <memory>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "broker/app/app.h"
#include "broker/audit/checkpoint.h"
#include "broker/config/config.h"
#include "cli/args.h"
#include "cli/format.h"
#include "issuers/gcp/broker_identity.h"
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

std::string ParseAuditVerifyFileOptions(const ParsedArgs& args, AuditVerifyFileOptions* out) {
  *out = AuditVerifyFileOptions();
  const bool has_file = args.Has("file");
  for (std::string_view flag :
       {"public-key", "jwks", "require-checkpoint-within", "require-shutdown-checkpoint",
        "expect-head", "expect-seq", "max-line-bytes"}) {
    if (args.Has(flag) && !has_file) {
      return "--" + std::string(flag) + " needs --file";
    }
  }
  if (!has_file) {
    return "";
  }
  out->path = args.Get("file").value_or("");
  out->public_key_file = args.Get("public-key");
  out->jwks_file = args.Get("jwks");
  if (out->public_key_file && out->jwks_file) {
    return "--public-key and --jwks exclude each other";
  }
  if (std::optional<std::string> n = args.Get("require-checkpoint-within")) {
    out->max_tail = ParseInt64(*n, 0, INT64_MAX);
    if (!out->max_tail) {
      return "--require-checkpoint-within must be a whole number >= 0";
    }
  }
  out->require_shutdown = args.Switch("require-shutdown-checkpoint");
  if (std::optional<std::string> n = args.Get("max-line-bytes")) {
    const std::optional<int64_t> bytes = ParseInt64(*n, 1, kMaxLineBytesLimit);
    if (!bytes) {
      return "--max-line-bytes must be a whole number from 1 to " +
             std::to_string(kMaxLineBytesLimit);
    }
    out->max_line_bytes = static_cast<size_t>(*bytes);
  }
  if ((out->max_tail || out->require_shutdown) && !out->public_key_file && !out->jwks_file) {
    return "checkpoint requirements need the audit key: --public-key or --jwks";
  }
  if (std::optional<std::string> n = args.Get("expect-seq")) {
    out->expect_seq = ParseInt64(*n, 0, INT64_MAX);
    if (!out->expect_seq) {
      return "--expect-seq must be a whole number >= 0";
    }
  }
  if (std::optional<std::string> h = args.Get("expect-head")) {
    const bool hex = h->size() == 64 && std::all_of(h->begin(), h->end(), [](char c) {
                       return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f');
                     });
    if (!hex) {
      return "--expect-head must be 64 lower-case hex digits";
    }
    out->expect_head = *h;
  }
  return "";
}

int RunAuditVerifyFile(const std::string& path, bool json, std::ostream& out, std::ostream& err) {
  AuditVerifyFileOptions options;
  options.path = path;
  return RunAuditVerifyFile(options, json, out, err);
}

int RunAuditVerifyFile(const AuditVerifyFileOptions& options, bool json, std::ostream& out,
                       std::ostream& err) {
  const std::string shown = SanitizeForTerminal(options.path);
  try {
    std::string problem;
    std::optional<audit::CheckpointKeys> keys;
    if (options.public_key_file || options.jwks_file) {
      const std::string& key_path =
          options.public_key_file ? *options.public_key_file : *options.jwks_file;
      std::string key_text;
      if (!ReadWholeFile(key_path, &key_text, &problem)) {
        err << "error: cannot read " << SanitizeForTerminal(key_path) << ": " << problem << "\n";
        return ToInt(ExitCode::kError);
      }
      Result<audit::CheckpointKeys> loaded = std::unexpected(Error{});
      if (options.public_key_file) {
        loaded = audit::CheckpointKeys::FromPem(key_text);
      } else if (auto jwks = ParseJsonStrict(key_text); !jwks) {
        // A trust anchor: the strict parser, so that no key hides behind a
        // duplicate member.
        err << "error: " << SanitizeForTerminal(key_path) << ": " << jwks.error() << "\n";
        return ToInt(ExitCode::kError);
      } else {
        loaded = audit::CheckpointKeys::FromJwks(*jwks);
      }
      if (!loaded) {
        err << "error: " << SanitizeForTerminal(key_path) << ": "
            << SanitizeForTerminal(loaded.error().message) << "\n";
        return ToInt(ExitCode::kError);
      }
      keys = std::move(*loaded);
    }
    audit::AnchorOptions ao;
    ao.keys = keys ? &*keys : nullptr;
    ao.expect_head = options.expect_head;
    ao.expect_seq = options.expect_seq;
    ao.max_tail = options.max_tail;
    ao.require_shutdown = options.require_shutdown;
    ao.max_line_bytes = options.max_line_bytes;
    // Streamed: memory is one read chunk and one line, whatever the size of
    // the file.
    const Result<audit::AnchorReport> verified = audit::VerifyAnchoredChainFile(options.path, ao);
    if (!verified) {
      err << "error: cannot read " << shown << ": " << SanitizeForTerminal(verified.error().message)
          << "\n";
      return ToInt(ExitCode::kError);
    }
    const audit::AnchorReport& r = *verified;
    const ChainVerification& v = r.chain;
    if (json) {
      nlohmann::json j = {{"ok", r.ok}, {"records", v.records}, {"head", r.head_hash}};
      if (keys) {
        j["checkpoints"] = r.checkpoints;
        j["last_checkpoint_seq"] = r.last_checkpoint_seq;
        j["last_checkpoint_reason"] = r.last_checkpoint_reason;
        j["last_checkpoint_timestamp"] = r.last_checkpoint_timestamp;
        j["tail_records"] = r.tail_records;
      }
      if (!r.ok) {
        j["first_bad_seq"] = r.bad_seq;
        if (!v.ok) {
          j["first_bad_line"] = v.first_bad_line;
        }
        j["problem"] = r.problem;
      }
      PrintJson(out, j);
    } else if (!v.ok) {
      out << "BROKEN at seq " << v.first_bad_seq << " (line " << v.first_bad_line
          << "): " << SanitizeForTerminal(v.problem) << "\n";
    } else if (!r.ok && r.bad_seq > 0 && r.problem.starts_with("checkpoint")) {
      out << "BROKEN at seq " << r.bad_seq << ": " << SanitizeForTerminal(r.problem) << "\n";
    } else if (!r.ok) {
      out << "INCOMPLETE: " << SanitizeForTerminal(r.problem) << "\n";
    } else {
      out << "ok: " << v.records << " records";
      if (!r.head_hash.empty()) {
        out << ", head " << r.head_hash;
      }
      out << "\n";
      if (keys) {
        out << "checkpoints: " << r.checkpoints << " signed";
        if (r.last_checkpoint_seq > 0) {
          out << ", last at seq " << r.last_checkpoint_seq << " ("
              << SanitizeForTerminal(r.last_checkpoint_reason) << ", "
              << SanitizeForTerminal(r.last_checkpoint_timestamp) << ")";
        }
        out << "; " << r.tail_records << " records after it\n";
      }
    }
    return ToInt(r.ok ? ExitCode::kOk : ExitCode::kError);
  } catch (...) {
    err << "error: internal error while verifying " << shown << "\n";
    return ToInt(ExitCode::kError);
  }
}

int RunJwksFromPem(const std::string& path, std::ostream& out, std::ostream& err) {
  constexpr size_t kMaxPemBytes = 64 * 1024;  // an RSA-8192 PEM is under 7 KiB
  errno = 0;
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    err << "cannot read " << SanitizeForTerminal(path) << ": "
        << (errno != 0 ? std::strerror(errno) : "cannot open") << "\n";
    return ToInt(ExitCode::kError);
  }
  std::string text(kMaxPemBytes + 1, '\0');
  in.read(text.data(), static_cast<std::streamsize>(text.size()));
  text.resize(static_cast<size_t>(in.gcount()));
  SecretValue pem(text);
  SecureWipe(text.data(), text.size());
  if (in.bad() || pem.size() > kMaxPemBytes) {
    err << SanitizeForTerminal(path) << " is not a private key file (unreadable, or over "
        << kMaxPemBytes << " bytes)\n";
    return ToInt(ExitCode::kError);
  }
  Result<std::unique_ptr<crypto::SigningKey>> key = issuers::gcp::LoadIdentityKey(pem);
  if (!key) {
    err << SanitizeForTerminal(path) << " " << key.error().message << "\n";
    return ToInt(ExitCode::kError);
  }
  PrintJson(out, {{"keys", {(*key)->PublicJwk()}}});
  return ToInt(ExitCode::kOk);
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
    const std::vector<std::string>& warnings = cfg->policy_notes.warnings;
    for (const std::string& w : warnings) {
      err << "warning: " << SanitizeForTerminal(w) << "\n";
    }
    if (json) {
      PrintJson(out, {{"ok", true},
                      {"policy_version", version},
                      {"principals", principals},
                      {"issuers", issuers},
                      {"warnings", warnings}});
    } else {
      out << "ok: policy version " << SanitizeForTerminal(version) << ", " << principals
          << (principals == 1 ? " principal, " : " principals, ") << issuers
          << (issuers == 1 ? " issuer\n" : " issuers\n");
    }
    return ToInt(ExitCode::kOk);
  } catch (...) {
    err << "error: internal error while checking " << SanitizeForTerminal(path) << "\n";
    return ToInt(ExitCode::kError);
  }
}

namespace {

std::string Words(const std::vector<std::string>& words) {
  std::string out;
  for (const std::string& w : words) {
    out += out.empty() ? "" : " ";
    out += w;
  }
  return out;
}

}  // namespace

int RunCompletion(const std::string& shell, std::ostream& out, std::ostream& err) {
  if (shell != "bash" && shell != "zsh") {
    err << "jitctl: completion: unknown shell '" << SanitizeForTerminal(shell)
        << "' (bash or zsh)\n";
    return ToInt(ExitCode::kUsage);
  }
  // From the command table: the first words, each group's second words, the
  // flags of each command (its own and the global ones), and the flags that
  // take a value (the word after them is a value, not a command word).
  std::vector<std::string> first;
  std::map<std::string, std::vector<std::string>, std::less<>> subcommands;
  std::set<std::string, std::less<>> value_flags, switches;
  std::string global;
  for (const FlagSpec& f : GlobalFlags()) {
    global += " --" + std::string(f.name);
    (f.value_name.empty() ? switches : value_flags).insert(std::string(f.name));
  }
  std::string cases;
  for (const CommandSpec& c : Commands()) {
    const std::string name(c.name);
    const std::string group(GroupOf(c.name));
    if (std::find(first.begin(), first.end(), group) == first.end()) {
      first.push_back(group);
    }
    if (group != name) {
      subcommands[group].push_back(name.substr(group.size() + 1));
    }
    std::string flags;
    for (const FlagSpec& f : c.flags) {
      flags += " --" + std::string(f.name);
      (f.value_name.empty() ? switches : value_flags).insert(std::string(f.name));
    }
    cases +=
        "    \"" + name + "\") flags=\"" + flags.substr(flags.empty() ? 0 : 1) + global + "\" ;;\n";
  }
  std::vector<std::string> takes_value;
  for (const std::string& v : value_flags) {
    if (!switches.contains(v)) {  // a name that is a switch anywhere is read as one
      takes_value.push_back("--" + v);
    }
  }
  std::string groups;
  for (const auto& [group, subs] : subcommands) {
    groups += "      " + group + ") words=\"" + Words(subs) + "\" ;;\n";
  }
  std::string value_pattern;
  for (const std::string& v : takes_value) {
    value_pattern += value_pattern.empty() ? v : "|" + v;
  }
  if (shell == "zsh") {
    out << "#compdef jitctl\n"
           "# zsh completion for jitctl: the bash function below through bashcompinit.\n"
           "autoload -U +X bashcompinit && bashcompinit\n";
  }
  out << "# " << shell << " completion for jitctl, generated by `jitctl completion " << shell
      << "` from its command table.\n"
         "_jitctl() {\n"
         "  local cur=\"${COMP_WORDS[COMP_CWORD]}\" w group=\"\" sub=\"\" cmd flags words i\n"
         "  local skip=0\n"
         "  for ((i = 1; i < COMP_CWORD; i++)); do\n"
         "    w=\"${COMP_WORDS[i]}\"\n"
         "    if ((skip)); then skip=0; continue; fi\n"
         "    case \"$w\" in\n"
         "      --) COMPREPLY=(); compopt -o default 2>/dev/null; return 0 ;;\n"
         "      --*=*) ;;\n"
      << (value_pattern.empty() ? "" : "      " + value_pattern + ") skip=1 ;;\n")
      << "      -*) ;;\n"
         "      *) if [[ -z \"$group\" ]]; then group=\"$w\"; elif [[ -z \"$sub\" ]]; then "
         "sub=\"$w\"; fi ;;\n"
         "    esac\n"
         "  done\n"
         "  if ((skip)); then COMPREPLY=(); compopt -o default 2>/dev/null; return 0; fi\n"
         "  if [[ -z \"$group\" ]]; then\n"
         "    COMPREPLY=($(compgen -W \""
      << Words(first) << global
      << "\" -- \"$cur\"))\n"
         "    return 0\n"
         "  fi\n"
         "  words=\"\"\n"
         "  case \"$group\" in\n"
      << groups
      << "  esac\n"
         "  if [[ -n \"$words\" && -z \"$sub\" ]]; then\n"
         "    COMPREPLY=($(compgen -W \"$words\" -- \"$cur\"))\n"
         "    return 0\n"
         "  fi\n"
         "  cmd=\"$group${words:+ $sub}\"\n"
         "  flags=\"\"\n"
         "  case \"$cmd\" in\n"
      << cases
      << "  esac\n"
         "  if [[ \"$cur\" == -* || -z \"$flags\" ]]; then\n"
         "    COMPREPLY=($(compgen -W \"$flags\" -- \"$cur\"))\n"
         "  else\n"
         "    COMPREPLY=(); compopt -o default 2>/dev/null\n"
         "  fi\n"
         "  return 0\n"
         "}\n"
         "complete -F _jitctl jitctl\n";
  return ToInt(ExitCode::kOk);
}

}  // namespace jitbroker::cli
