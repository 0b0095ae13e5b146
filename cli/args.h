// jitctl's command table and strict argument parser (header-only, so the unit
// tests can exercise it without linking the jitctl binary).
//
// Grammar: jitctl [GLOBAL FLAGS] COMMAND [SUBCOMMAND] [FLAGS] [ARGS] [-- ARGS]
//   - flags are "--name value" or "--name=value"; switches take no value;
//   - global flags may appear before or after the command words;
//   - a flag may repeat only where a list is expected;
//   - unknown commands and flags, missing or empty values, missing required
//     flags and a wrong number of arguments are usage errors (exit 2).
//
// Thread-safety: pure functions over values; the command table is immutable.
#pragma once

#include <algorithm>
#include <charconv>
#include <cstdint>
#include <expected>
#include <functional>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <system_error>
#include <vector>

namespace jitbroker::cli {

inline constexpr std::string_view kJitctlVersion = "0.1.0";

enum class ExitCode : int {
  kOk = 0,
  kError = 1,    // server error, network failure, local failure
  kUsage = 2,    // bad command line or missing environment
  kPending = 3,  // grant waits for human approval
  kDenied = 4,   // grant denied by policy
};

inline int ToInt(ExitCode code) { return static_cast<int>(code); }

struct FlagSpec {
  std::string_view name;        // without "--"
  std::string_view value_name;  // empty = switch (takes no value)
  bool repeatable = false;
  bool required = false;
  std::string_view help;
};

struct CommandSpec {
  std::string_view name;      // "sessions open"
  std::string_view synopsis;  // after "jitctl sessions open "
  std::string_view summary;   // one line
  int min_args = 0;           // positional arguments
  int max_args = 0;
  std::vector<FlagSpec> flags;
};

// Flags accepted by every command.
inline const std::vector<FlagSpec>& GlobalFlags() {
  static const std::vector<FlagSpec> kFlags = {
      {"url", "URL", false, false,
       "broker base URL (default $JITBROKER_URL or http://127.0.0.1:8443)"},
      {"json", "", false, false, "print the raw JSON response"},
      {"session-token-file", "FILE", false, false,
       "read the session token from FILE instead of $JITBROKER_SESSION_TOKEN"},
      {"cacert", "FILE", false, false, "PEM CA bundle for https (default $JITBROKER_CACERT)"},
      {"help", "", false, false, "show help"},
  };
  return kFlags;
}

// The grant flags of `grant request` and `exec`, then `extra`.
inline std::vector<FlagSpec> GrantFlags(std::string_view tool_help, std::vector<FlagSpec> extra) {
  std::vector<FlagSpec> flags = {
      {"tool", "T", false, true, tool_help},
      {"operation", "O", false, true, "operation, e.g. read"},
      {"resource", "R", false, true, "resource URI"},
      {"issuer", "I", false, true, "issuer name"},
      {"scope-json", "JSON", false, false, "issuer-specific scope as a JSON object"},
      {"param", "K=V", true, false, "request parameter (repeatable)"},
      {"ttl", "SECONDS", false, false, "credential lifetime"},
      {"justification", "TEXT", false, false, "why the credential is needed"}};
  flags.insert(flags.end(), extra.begin(), extra.end());
  return flags;
}

// The grant flags of `aws credential-process` and `aws serve`, then `extra`.
inline std::vector<FlagSpec> AwsGrantFlags(std::string_view ttl_help, std::vector<FlagSpec> extra) {
  std::vector<FlagSpec> flags = {
      {"resource", "R", false, true, "the role: aws://ACCOUNT/role/[PATH/]NAME"},
      {"action", "A", true, true, "an IAM action the credential may use (repeatable)"},
      {"arn-resource", "ARN", true, true, "an ARN (or *) the actions apply to (repeatable)"},
      {"issuer", "I", false, false, "aws_sts issuer (default $JITBROKER_AWS_ISSUER or aws)"},
      {"ttl", "SECONDS", false, false, ttl_help},
      {"tool", "T", false, false, "tool name (default aws.SERVICE of the actions, or aws)"},
      {"operation", "O", false, false,
       "operation (default read when every action only reads, else write)"},
      {"justification", "TEXT", false, false, "why the credential is needed"}};
  flags.insert(flags.end(), extra.begin(), extra.end());
  return flags;
}

inline const std::vector<CommandSpec>& Commands() {
  static const std::vector<CommandSpec> kCommands = {
      {"sessions open",
       "--agent ID --task ID [--description TEXT] (--scope-json JSON | --resource R... "
       "[--branch B...] [--environment E...] [--max-tier T] [--issuer I...]) [--ttl SECONDS] "
       "[--heartbeat SECONDS] [--max-grants N] [--max-resources N] [--max-grants-per-tier "
       "TIER=N...] "
       "[--max-live-credentials N] [--max-credential-seconds N] [--export]",
       "open a session for an agent (API key)",
       0,
       0,
       {{"agent", "ID", false, true, "agent id"},
        {"task", "ID", false, true, "task id"},
        {"description", "TEXT", false, false, "task description"},
        {"scope-json", "JSON", false, false, "the whole task scope as a JSON object"},
        {"resource", "R", true, false, "resource URI the task may touch (repeatable)"},
        {"branch", "B", true, false, "branch pattern (repeatable)"},
        {"environment", "E", true, false, "environment (repeatable)"},
        {"max-tier", "T", false, false,
         "highest tier: read|write|pr|merge_deploy|secret|destructive"},
        {"issuer", "I", true, false, "issuer the task may use (repeatable)"},
        {"ttl", "SECONDS", false, false, "session lifetime"},
        {"heartbeat", "SECONDS", false, false, "heartbeat interval"},
        {"max-grants", "N", false, false, "session budget: at most N grants"},
        {"max-resources", "N", false, false, "session budget: at most N distinct resources"},
        {"max-grants-per-tier", "TIER=N", true, false,
         "session budget: at most N grants of TIER (repeatable)"},
        {"max-live-credentials", "N", false, false,
         "session budget: at most N credentials live at once"},
        {"max-credential-seconds", "N", false, false,
         "session budget: at most N credential-seconds in all (the sum of the TTLs)"},
        {"export", "", false, false, "print shell export lines for eval"}}},
      {"sessions list",
       "[--state S] [--agent A] [--principal P] [--limit N]",
       "list sessions (API key)",
       0,
       0,
       {{"state", "S", false, false, "active|completed|revoked|expired|stalled"},
        {"agent", "A", false, false, "agent id"},
        {"principal", "P", false, false, "principal id (admins)"},
        {"limit", "N", false, false, "maximum number of sessions"}}},
      {"sessions show",
       "ID",
       "show a session, its grants, scope usage and budget use (API key)",
       1,
       1,
       {}},
      {"sessions revoke",
       "ID --reason TEXT",
       "revoke a session and all its grants (API key)",
       1,
       1,
       {{"reason", "TEXT", false, true, "why the session is revoked"}}},
      {"sessions complete", "ID", "complete a session and revoke its grants (API key)", 1, 1, {}},
      {"heartbeat",
       "[--progress TEXT]",
       "extend the current session's stall deadline (session token)",
       0,
       0,
       {{"progress", "TEXT", false, false, "progress note"}}},
      {"complete", "", "complete the current session (session token)", 0, 0, {}},
      {"grant request",
       "--tool T --operation O --resource R --issuer I [--scope-json JSON] [--param K=V...] "
       "[--ttl SECONDS] [--justification TEXT] [--token-only]",
       "request a credential in the current session (session token)", 0, 0,
       GrantFlags("tool name, e.g. git.push",
                  {{"token-only", "", false, false, "print only the credential token"}})},
      {"grant show",
       "ID [--wait SECONDS] [--token-only]",
       "show a grant; --wait long-polls a pending one (session token or API key)",
       1,
       1,
       {{"wait", "SECONDS", false, false, "wait up to SECONDS for a pending grant"},
        {"token-only", "", false, false, "print only the credential token"}}},
      {"grant wait",
       "ID [--timeout SECONDS] [--token-only]",
       "wait for a pending grant's decision and collect its credential (session token)",
       1,
       1,
       {{"timeout", "SECONDS", false, false, "give up after SECONDS (default 300)"},
        {"token-only", "", false, false, "print only the credential token"}}},
      {"grant revoke", "ID", "revoke one grant (session token or API key)", 1, 1, {}},
      {"approvals list",
       "[--session ID] [--principal P] [--tier T] [--order oldest|newest] [--limit N] "
       "[--cursor C | --all]",
       "list the pending approvals you may decide (API key)",
       0,
       0,
       {{"session", "ID", false, false, "only this session's approvals"},
        {"principal", "P", false, false, "only approvals delegated by this principal"},
        {"tier", "T", false, false, "only this tier"},
        {"order", "ORDER", false, false, "oldest (default) or newest first"},
        {"limit", "N", false, false, "approvals per page, 1-200 (default 50)"},
        {"cursor", "C", false, false, "the page after this next_cursor"},
        {"all", "", false, false, "follow next_cursor and list every page"}}},
      {"approvals show",
       "ID",
       "show an approval with the full context of its request (API key)",
       1,
       1,
       {}},
      {"approvals approve",
       "ID [--comment TEXT] [--digest HEX]",
       "approve the exact pending request (API key)",
       1,
       1,
       {{"comment", "TEXT", false, false, "note for the agent and the audit trail"},
        {"digest", "HEX", false, false,
         "request_digest you reviewed (default: fetch and show the approval, bind to it)"}}},
      {"approvals deny",
       "ID [--comment TEXT] [--digest HEX]",
       "deny the pending request (API key)",
       1,
       1,
       {{"comment", "TEXT", false, false, "note for the agent and the audit trail"},
        {"digest", "HEX", false, false,
         "request_digest you reviewed (default: fetch and show the approval, bind to it)"}}},
      {"audit tail",
       "[--session ID] [--after-seq N] [--limit N]",
       "print audit records (API key)",
       0,
       0,
       {{"session", "ID", false, false, "only this session"},
        {"after-seq", "N", false, false, "only records after sequence N"},
        {"limit", "N", false, false, "maximum number of records"}}},
      {"audit verify",
       "[--file F [--public-key PEM | --jwks F] [--require-checkpoint-within N] "
       "[--require-shutdown-checkpoint] [--expect-head HASH] [--expect-seq N] "
       "[--max-line-bytes N]]",
       "verify the audit hash chain (server, or a local JSONL file offline)",
       0,
       0,
       {{"file", "F", false, false, "verify this JSONL file locally"},
        {"public-key", "PEM", false, false,
         "file: the audit public key (PEM); checks every signed checkpoint"},
        {"jwks", "F", false, false,
         "file: the audit JWKS (GET /v1/audit/keys); checks every signed checkpoint"},
        {"require-checkpoint-within", "N", false, false,
         "fail if more than N records follow the last checkpoint (the file was cut)"},
        {"require-shutdown-checkpoint", "", false, false,
         "fail unless the file ends with the checkpoint of a clean shutdown"},
        {"expect-head", "HASH", false, false,
         "fail unless the chain ends with this hash (GET /v1/audit/verify \"head\")"},
        {"expect-seq", "N", false, false,
         "fail unless the chain ends at this seq (GET /v1/audit/verify \"head_seq\")"},
        {"max-line-bytes", "N", false, false,
         "longest record line accepted (default 1048576); the file is streamed"}}},
      {"config check", "FILE", "validate a broker config file offline", 1, 1, {}},
      {"ci exchange",
       "--audience NAME [--scope S] [--token-file F | --token-env VAR | --oidc-audience AUD] "
       "[--subject-token-type id_token|jwt] [--token-only | --export VAR]",
       "trade this CI job's OIDC token for a credential (RFC 8693; no broker secret)",
       0,
       0,
       {{"audience", "NAME", false, true, "trust policy name (or the target resource it grants)"},
        {"scope", "S", false, false, "narrow the grant: space-separated scope tokens"},
        {"token-file", "F", false, false, "read the OIDC token from file F"},
        {"token-env", "VAR", false, false,
         "read the OIDC token from $VAR (default JITBROKER_OIDC_TOKEN)"},
        {"oidc-audience", "AUD", false, false,
         "GitHub Actions: request the job's OIDC token for audience AUD (the trust policy's)"},
        {"subject-token-type", "T", false, false, "id_token (default) or jwt"},
        {"token-only", "", false, false, "print only the access token"},
        {"export", "VAR", false, false, "print 'export VAR=<access token>' for eval"}}},
      {"introspect",
       "TOKEN|-",
       "introspect a broker-minted token; - reads stdin (API key)",
       1,
       1,
       {}},
      {"admin reload", "", "reload the broker policy (API key)", 0, 0, {}},
      {"jwks",
       "[--from-pem FILE]",
       "print the broker's public JWT keys; with --from-pem, the JWKS of a private key file "
       "(offline)",
       0,
       0,
       {{"from-pem", "FILE", false, false,
         "a PEM RSA or P-256 private key: print its public JWKS (e.g. for Google's workload "
         "identity provider)"}}},
      {"login",
       "",
       "sign in as yourself through the broker's single sign-on (a code to enter in the "
       "browser); later commands use it instead of JITBROKER_API_KEY",
       0,
       0,
       {}},
      {"logout", "", "forget this broker's 'jitctl login'", 0, 0, {}},
      {"git-remote",
       "OWNER/REPO [--host H] [--set REMOTE]",
       "print the proxy URL of a repository (git through the broker), or set it as REMOTE's URL",
       1,
       1,
       {{"host", "H", false, false, "git host as the broker names it (default github.com)"},
        {"set", "REMOTE", false, false,
         "run 'git remote set-url REMOTE URL' (or 'add' when REMOTE does not exist)"}}},
      {"git-credential",
       "get|store|erase [--host H...] [--issuer I] [--access read|write] [--ttl SECONDS]",
       "git credential helper: for the broker's own URL (proxy mode) answers with the session; "
       "for --host, with a short-lived GitHub token (session token)",
       1,
       1,
       {{"host", "H", true, false, "git host to serve (repeatable; default github.com)"},
        {"issuer", "I", false, false,
         "broker issuer that mints the token (default $JITBROKER_GIT_ISSUER or github)"},
        {"access", "A", false, false,
         "contents permission to ask for: write (default; push and fetch) or read"},
        {"ttl", "SECONDS", false, false, "credential lifetime"}}},
      {"aws credential-process",
       "--resource aws://ACCOUNT/role/NAME --action A... --arn-resource ARN... [--issuer I] "
       "[--ttl SECONDS] [--tool T] [--operation O] [--justification TEXT]",
       "AWS SDK credential_process: a grant's AWS credential as the SDKs' JSON (session token)", 0,
       0,
       AwsGrantFlags(
           "credential lifetime (default 3600; under 15 min the SDKs re-run this on every call)",
           {})},
      {"aws serve",
       "--resource aws://ACCOUNT/role/NAME --action A... --arn-resource ARN... [--issuer I] "
       "[--ttl SECONDS] [--tool T] [--operation O] [--justification TEXT] [--port P] "
       "[--token-file F]",
       "serve AWS SDKs the container credentials endpoint on 127.0.0.1 (session token)", 0, 0,
       AwsGrantFlags(
           "credential lifetime (default: the broker's)",
           {{"port", "P", false, false, "port on 127.0.0.1 (default 0: any free port, printed)"},
            {"token-file", "F", false, false,
             "write the Authorization token to F (mode 0600) instead of printing it"}})},
      {"gcp serve",
       "--resource gcp://PROJECT/serviceAccounts/EMAIL --scope S... [--storage "
       "BUCKET[/PREFIX]=ROLE...] [--issuer I] [--ttl SECONDS] [--tool T] [--operation O] "
       "[--justification TEXT] [--port P] [--project-number N]",
       "serve Google's client libraries and gcloud a metadata server on 127.0.0.1 (session "
       "token)",
       0,
       0,
       {{"resource", "R", false, true, "the service account: gcp://PROJECT/serviceAccounts/EMAIL"},
        {"scope", "S", true, true,
         "an OAuth scope (repeatable; a name without :// means "
         "https://www.googleapis.com/auth/NAME)"},
        {"storage", "BUCKET[/PREFIX]=ROLE", true, false,
         "narrow the token to Cloud Storage objects (repeatable; ROLE objectViewer, "
         "objectCreator or objectAdmin)"},
        {"issuer", "I", false, false, "gcp issuer (default $JITBROKER_GCP_ISSUER or gcp)"},
        {"ttl", "SECONDS", false, false, "token lifetime (default: the broker's)"},
        {"tool", "T", false, false, "tool name (default gcp)"},
        {"operation", "O", false, false,
         "operation (default read when the scopes and storage roles only read, else write)"},
        {"justification", "TEXT", false, false, "why the credential is needed"},
        {"port", "P", false, false, "port on 127.0.0.1 (default 0: any free port, printed)"},
        {"project-number", "N", false, false,
         "the project's number, served as numeric-project-id (gcloud needs it)"}}},
      {"exec",
       "--tool T --operation O --resource R --issuer I [--scope-json JSON] [--param K=V...] "
       "[--ttl SECONDS] [--justification TEXT] -- COMMAND [ARGS...]",
       "run COMMAND with a grant's credential in its environment, revoke it when COMMAND "
       "exits (session token)",
       0,  // the command is checked by `exec` itself, to say "after --"
       1 << 20, GrantFlags("tool name, e.g. aws.s3", {})},
      {"version", "", "print the jitctl version", 0, 0, {}},
      {"completion",
       "bash|zsh",
       "print a shell completion script (bash: source <(jitctl completion bash))",
       1,
       1,
       {}},
  };
  return kCommands;
}

inline const CommandSpec* FindCommand(std::string_view name) {
  for (const CommandSpec& c : Commands()) {
    if (c.name == name) {
      return &c;
    }
  }
  return nullptr;
}

// The command's first word ("sessions" for "sessions open").
inline std::string_view GroupOf(std::string_view command_name) {
  return command_name.substr(0, command_name.find(' '));
}

inline bool IsGroup(std::string_view word) {
  for (const CommandSpec& c : Commands()) {
    if (GroupOf(c.name) == word && c.name.size() > word.size()) {
      return true;
    }
  }
  return false;
}

struct ParsedArgs {
  std::map<std::string, std::vector<std::string>, std::less<>> values;  // value flags
  std::set<std::string, std::less<>> switches;
  std::vector<std::string> args;  // positionals
  // How many positionals came before a "--" on the command line, if one did
  // (`exec` wants its command after it, and only there).
  std::optional<size_t> double_dash_at;

  bool Has(std::string_view flag) const {
    return values.find(flag) != values.end() || switches.find(flag) != switches.end();
  }
  bool Switch(std::string_view flag) const { return switches.find(flag) != switches.end(); }
  std::optional<std::string> Get(std::string_view flag) const {
    auto it = values.find(flag);
    if (it == values.end() || it->second.empty()) {
      return std::nullopt;
    }
    return it->second.back();
  }
  std::vector<std::string> All(std::string_view flag) const {
    auto it = values.find(flag);
    return it == values.end() ? std::vector<std::string>{} : it->second;
  }
};

struct Invocation {
  const CommandSpec* command = nullptr;  // nullptr with help = general or group help
  std::string help_group;                // "sessions" for "jitctl sessions --help"
  bool help = false;
  ParsedArgs args;  // the command's and the global flags
};

struct UsageError {
  std::string message;                   // one-line hint
  const CommandSpec* command = nullptr;  // whose usage to print, if known
  std::string group;                     // or the group whose commands to list
};

using ParseResult = std::expected<Invocation, UsageError>;

namespace internal {

inline const FlagSpec* FindFlag(std::string_view name, const CommandSpec* command) {
  if (command != nullptr) {
    for (const FlagSpec& f : command->flags) {
      if (f.name == name) {
        return &f;
      }
    }
  }
  for (const FlagSpec& f : GlobalFlags()) {
    if (f.name == name) {
      return &f;
    }
  }
  return nullptr;
}

inline bool IsHelpToken(std::string_view token) { return token == "--help" || token == "-h"; }

// Parses argv[*i..] as flags and positionals of `command` (nullptr = global
// flags only, stopping at the first positional). Advances *i.
inline std::optional<UsageError> ParseFlags(const std::vector<std::string>& argv, size_t* i,
                                            const CommandSpec* command, ParsedArgs* out) {
  bool after_double_dash = false;
  while (*i < argv.size()) {
    const std::string& token = argv[*i];
    if (after_double_dash || token == "-" || !token.starts_with("-")) {
      if (command == nullptr) {
        return std::nullopt;  // the command word
      }
      out->args.push_back(token);
      ++*i;
      continue;
    }
    if (token == "--") {
      if (command == nullptr) {
        return UsageError{"missing command before '--'", nullptr, {}};
      }
      after_double_dash = true;
      out->double_dash_at = out->args.size();
      ++*i;
      continue;
    }
    if (token == "-h") {
      out->switches.insert("help");
      ++*i;
      continue;
    }
    if (!token.starts_with("--")) {
      return UsageError{"unknown flag '" + token + "'", command, {}};
    }
    std::string_view body = std::string_view(token).substr(2);
    std::optional<std::string> inline_value;
    const size_t eq = body.find('=');
    if (eq != std::string_view::npos) {
      inline_value = std::string(body.substr(eq + 1));
      body = body.substr(0, eq);
    }
    const FlagSpec* flag = FindFlag(body, command);
    if (flag == nullptr) {
      return UsageError{"unknown flag '--" + std::string(body) + "'", command, {}};
    }
    const std::string name(flag->name);
    ++*i;
    if (flag->value_name.empty()) {
      if (inline_value) {
        return UsageError{"flag --" + name + " takes no value", command, {}};
      }
      out->switches.insert(name);
      continue;
    }
    std::string value;
    if (inline_value) {
      value = std::move(*inline_value);
    } else {
      // A following "--flag" is a forgotten value, not the value; "--x=--y" passes one.
      if (*i >= argv.size() || (argv[*i].starts_with("--") && argv[*i].size() > 2)) {
        return UsageError{
            "flag --" + name + " needs a value (" + std::string(flag->value_name) + ")",
            command,
            {}};
      }
      value = argv[*i];
      ++*i;
    }
    if (value.empty()) {
      return UsageError{"flag --" + name + " needs a non-empty value", command, {}};
    }
    std::vector<std::string>& slot = out->values[name];
    if (!slot.empty() && !flag->repeatable) {
      return UsageError{"flag --" + name + " given more than once", command, {}};
    }
    slot.push_back(std::move(value));
  }
  return std::nullopt;
}

}  // namespace internal

// argv without the program name.
inline ParseResult ParseCommandLine(const std::vector<std::string>& argv) {
  Invocation inv;
  size_t i = 0;
  if (auto err = internal::ParseFlags(argv, &i, nullptr, &inv.args)) {
    return std::unexpected(std::move(*err));
  }
  if (inv.args.Switch("help")) {
    inv.help = true;
    return inv;
  }
  if (i >= argv.size()) {
    return std::unexpected(UsageError{"missing command", nullptr, {}});
  }
  std::string word = argv[i++];
  if (word == "help") {
    inv.help = true;
    if (i < argv.size()) {
      const std::string& next = argv[i];
      if (i + 1 < argv.size()) {
        inv.command = FindCommand(next + " " + argv[i + 1]);
      }
      if (inv.command == nullptr) {
        inv.command = FindCommand(next);
      }
      if (inv.command == nullptr && IsGroup(next)) {
        inv.help_group = next;
      } else if (inv.command == nullptr) {
        return std::unexpected(UsageError{"unknown command '" + next + "'", nullptr, {}});
      }
    }
    return inv;
  }
  const CommandSpec* command = nullptr;
  if (IsGroup(word)) {
    if (i >= argv.size() || internal::IsHelpToken(argv[i])) {
      if (i < argv.size()) {
        inv.help = true;
        inv.help_group = word;
        return inv;
      }
      return std::unexpected(UsageError{"missing subcommand for '" + word + "'", nullptr, word});
    }
    command = FindCommand(word + " " + argv[i]);
    if (command == nullptr) {
      return std::unexpected(
          UsageError{"unknown subcommand '" + word + " " + argv[i] + "'", nullptr, word});
    }
    ++i;
  } else {
    command = FindCommand(word);
    if (command == nullptr) {
      return std::unexpected(UsageError{"unknown command '" + word + "'", nullptr, {}});
    }
  }
  inv.command = command;
  // --help anywhere before "--" wins over every other problem on the line.
  for (size_t j = i; j < argv.size() && argv[j] != "--"; ++j) {
    if (internal::IsHelpToken(argv[j])) {
      inv.help = true;
      return inv;
    }
  }
  if (auto err = internal::ParseFlags(argv, &i, command, &inv.args)) {
    return std::unexpected(std::move(*err));
  }
  for (const FlagSpec& f : command->flags) {
    if (f.required && !inv.args.Has(f.name)) {
      return std::unexpected(
          UsageError{"missing required flag --" + std::string(f.name), command, {}});
    }
  }
  const int n = static_cast<int>(inv.args.args.size());
  if (n < command->min_args) {
    return std::unexpected(UsageError{
        "missing argument " + std::string(command->synopsis.substr(0, command->synopsis.find(' '))),
        command,
        {}});
  }
  if (n > command->max_args) {
    return std::unexpected(
        UsageError{"unexpected argument '" + inv.args.args[command->max_args] + "'", command, {}});
  }
  return inv;
}

// "usage: jitctl NAME SYNOPSIS"
inline std::string UsageLine(const CommandSpec& command) {
  std::string out = "usage: jitctl ";
  out += command.name;
  if (!command.synopsis.empty()) {
    out += " ";
    out += command.synopsis;
  }
  return out;
}

// Strict decimal integer in [min, max]: no sign for positives, no spaces, no suffix.
inline std::optional<int64_t> ParseInt64(std::string_view text, int64_t min, int64_t max) {
  if (text.empty() || text.front() == '+') {
    return std::nullopt;
  }
  int64_t value = 0;
  const char* end = text.data() + text.size();
  auto [ptr, ec] = std::from_chars(text.data(), end, value);
  if (ec != std::errc() || ptr != end || value < min || value > max) {
    return std::nullopt;
  }
  return value;
}

inline constexpr int64_t kGrantWaitDefaultSeconds = 300;
inline constexpr int64_t kGrantWaitMaxSeconds = 24 * 3600;
// The broker bounds one long poll (GET /v1/grants/{id}?wait=N) to 60 seconds.
inline constexpr int64_t kGrantWaitPollSeconds = 60;

// `grant wait --timeout`: seconds in [0, 86400], 300 when absent.
inline std::optional<int64_t> GrantWaitTimeout(const ParsedArgs& args) {
  const std::optional<std::string> text = args.Get("timeout");
  if (!text) {
    return kGrantWaitDefaultSeconds;
  }
  return ParseInt64(*text, 0, kGrantWaitMaxSeconds);
}

// The ?wait= of the next long poll: min(remaining, 60), never negative.
inline int64_t NextPollSeconds(int64_t remaining_seconds) {
  return std::clamp<int64_t>(remaining_seconds, 0, kGrantWaitPollSeconds);
}

// `approvals approve|deny --digest`: 1 to 128 hex digits, lowercased (the
// broker's request_digest is lowercase hex); nullopt when malformed.
inline std::optional<std::string> NormalizeDigest(std::string_view text) {
  if (text.empty() || text.size() > 128) {
    return std::nullopt;
  }
  std::string out;
  out.reserve(text.size());
  for (char c : text) {
    if (c >= '0' && c <= '9') {
      out.push_back(c);
    } else if (c >= 'a' && c <= 'f') {
      out.push_back(c);
    } else if (c >= 'A' && c <= 'F') {
      out.push_back(static_cast<char>(c - 'A' + 'a'));
    } else {
      return std::nullopt;
    }
  }
  return out;
}

// Help for one command: synopsis, summary and flags.
inline std::string CommandHelp(const CommandSpec& command) {
  std::string out = UsageLine(command) + "\n\n" + std::string(command.summary) + "\n";
  auto add_flags = [&out](const std::vector<FlagSpec>& flags) {
    for (const FlagSpec& f : flags) {
      std::string left = "  --" + std::string(f.name);
      if (!f.value_name.empty()) {
        left += " " + std::string(f.value_name);
      }
      if (left.size() < 28) {
        left.resize(28, ' ');
      } else {
        left += " ";
      }
      out += left + std::string(f.help) + "\n";
    }
  };
  if (!command.flags.empty()) {
    out += "\nflags:\n";
    add_flags(command.flags);
  }
  out += "\nglobal flags:\n";
  add_flags(GlobalFlags());
  return out;
}

// Usage lines of every command in `group` ("sessions").
inline std::string GroupHelp(std::string_view group) {
  std::string out;
  for (const CommandSpec& c : Commands()) {
    if (GroupOf(c.name) == group) {
      out += UsageLine(c) + "\n";
    }
  }
  return out;
}

inline std::string GeneralHelp() {
  std::string out =
      "jitctl - client of the jitbroker just-in-time credential broker\n\n"
      "usage: jitctl [--url URL] [--json] [--session-token-file FILE] [--cacert FILE] "
      "COMMAND [ARGS]\n\ncommands:\n";
  for (const CommandSpec& c : Commands()) {
    std::string left = "  " + std::string(c.name);
    if (left.size() < 22) {
      left.resize(22, ' ');
    } else {
      left += " ";
    }
    out += left + std::string(c.summary) + "\n";
  }
  out +=
      "\nenvironment:\n"
      "  JITBROKER_URL             broker base URL (default http://127.0.0.1:8443)\n"
      "  JITBROKER_API_KEY         principal/admin API key\n"
      "  JITBROKER_SESSION_ID      the agent's session id\n"
      "  JITBROKER_SESSION_TOKEN   the agent's session token\n"
      "  JITBROKER_CACERT          PEM CA bundle for https\n\n"
      "exit codes: 0 ok, 1 error, 2 usage error, 3 pending approval, 4 denied\n"
      "run 'jitctl help COMMAND' for a command's flags\n";
  return out;
}

}  // namespace jitbroker::cli
