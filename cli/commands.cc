#include "cli/commands.h"

#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <spawn.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdint>
#include <cstring>
#include <iterator>
#include <string>
#include <string_view>
#include <thread>
#include <utility>
#include <variant>
#include <vector>

#include <nlohmann/json.hpp>

#include "broker/common/time_util.h"
#include "broker/crypto/crypto.h"
#include "broker/http/transport.h"
#include "cli/agent_credentials.h"
#include "cli/aws_serve.h"
#include "cli/ci_commands.h"
#include "cli/format.h"
#include "cli/gcp_serve.h"
#include "cli/git_credential.h"
#include "cli/login_store.h"
#include "issuers/gcp/gcp_scope.h"
#include "jitbroker/clock.h"
#include "jitbroker/result.h"
#include "jitbroker/secret.h"

extern char** environ;  // NOLINT: POSIX

namespace jitbroker::cli {

namespace {

using nlohmann::json;

constexpr std::string_view kUsageReason = "usage";
constexpr size_t kMaxTokenBytes = 64 * 1024;
constexpr std::chrono::milliseconds kDefaultTimeout{30000};
// Minting may call a slow upstream (GitHub, STS) under the broker's own deadlines.
constexpr std::chrono::milliseconds kGrantTimeout{60000};

Error UsageErr(std::string hint) {
  return InvalidArgument(std::string(kUsageReason), std::move(hint));
}

int Report(const Context& ctx, const Invocation& inv, const Error& e) {
  if (e.reason == kUsageReason) {
    *ctx.err << "jitctl: " << e.message << "\n";
    if (inv.command != nullptr) {
      *ctx.err << UsageLine(*inv.command) << "\n";
    }
    return ToInt(ExitCode::kUsage);
  }
  *ctx.err << "error: " << SanitizeForTerminal(e.message);
  if (!e.detail.empty()) {
    *ctx.err << ": " << SanitizeForTerminal(e.detail);
  }
  *ctx.err << "\n";
  return ToInt(ExitCode::kError);
}

void TrimTrailingSpace(std::string* s) {
  while (!s->empty() &&
         (s->back() == '\n' || s->back() == '\r' || s->back() == ' ' || s->back() == '\t')) {
    s->back() = '\0';
    s->pop_back();
  }
}

// Moves `s` into a SecretValue and wipes what is left behind.
SecretValue ToSecret(std::string* s) {
  SecretValue secret(std::string(s->data(), s->size()));
  SecureWipe(s->data(), s->size());
  s->clear();
  return secret;
}

// A principal's credential: $JITBROKER_API_KEY, else the ID token `jitctl
// login` kept for this broker (cli/login_store.h), while it is valid;
// nullopt when there is neither.
Result<std::optional<SecretValue>> PrincipalCredentialIfAny(const Context& ctx) {
  std::optional<std::string> key = ctx.getenv("JITBROKER_API_KEY");
  if (key) {
    TrimTrailingSpace(&*key);
  }
  if (key && !key->empty()) {
    return std::optional<SecretValue>(ToSecret(&*key));
  }
  if (!LoginStorePath(ctx.getenv)) {
    return std::optional<SecretValue>();  // no HOME: nothing was stored
  }
  JITBROKER_ASSIGN_OR_RETURN(std::optional<StoredLogin> stored,
                             ReadLogin(ctx.getenv, ctx.base_url, SystemClock().Now()));
  if (!stored) {
    return std::optional<SecretValue>();
  }
  return std::optional<SecretValue>(std::move(stored->token));
}

Result<SecretValue> ApiKey(const Context& ctx, std::string_view command) {
  JITBROKER_ASSIGN_OR_RETURN(std::optional<SecretValue> key, PrincipalCredentialIfAny(ctx));
  if (!key) {
    return std::unexpected(UsageErr(
        "JITBROKER_API_KEY is not set and 'jitctl login' has no "
        "valid sign-in for " +
        ctx.base_url + " ('" + std::string(command) + "' needs a principal or admin credential)"));
  }
  return std::move(*key);
}

Result<SecretValue> ReadTokenFile(const Context& ctx, const std::string& path) {
  const std::string shown = SanitizeForTerminal(path);
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    return std::unexpected(
        Internal("cannot open session token file " + shown, std::strerror(errno)));
  }
  struct stat st{};
  if (::fstat(fd, &st) == 0 && S_ISREG(st.st_mode) && (st.st_mode & 077) != 0) {
    *ctx.err << "warning: session token file " << shown
             << " is accessible by group or others; chmod 600 it\n";
  }
  std::string buffer(kMaxTokenBytes + 1, '\0');
  size_t used = 0;
  while (used < buffer.size()) {
    const ssize_t n = ::read(fd, buffer.data() + used, buffer.size() - used);
    if (n < 0 && errno == EINTR) {
      continue;
    }
    if (n < 0) {
      const int saved = errno;
      ::close(fd);
      SecureWipe(buffer.data(), buffer.size());
      return std::unexpected(
          Internal("cannot read session token file " + shown, std::strerror(saved)));
    }
    if (n == 0) {
      break;
    }
    used += static_cast<size_t>(n);
  }
  ::close(fd);
  if (used > kMaxTokenBytes) {
    SecureWipe(buffer.data(), buffer.size());
    return std::unexpected(Internal("session token file " + shown + " is too large"));
  }
  // Keep only the used bytes; wipe the slack before shrinking.
  SecureWipe(buffer.data() + used, buffer.size() - used);
  buffer.resize(used);
  TrimTrailingSpace(&buffer);
  if (buffer.empty()) {
    return std::unexpected(Internal("session token file " + shown + " is empty"));
  }
  return ToSecret(&buffer);
}

// The session token from --session-token-file or JITBROKER_SESSION_TOKEN;
// nullopt when neither is given.
Result<std::optional<SecretValue>> SessionTokenIfAny(const Context& ctx) {
  if (ctx.session_token_file) {
    JITBROKER_ASSIGN_OR_RETURN(SecretValue token, ReadTokenFile(ctx, *ctx.session_token_file));
    return std::optional<SecretValue>(std::move(token));
  }
  std::optional<std::string> env = ctx.getenv("JITBROKER_SESSION_TOKEN");
  if (env) {
    TrimTrailingSpace(&*env);
  }
  if (!env || env->empty()) {
    return std::optional<SecretValue>();
  }
  return std::optional<SecretValue>(ToSecret(&*env));
}

Result<SecretValue> SessionToken(const Context& ctx) {
  JITBROKER_ASSIGN_OR_RETURN(std::optional<SecretValue> token, SessionTokenIfAny(ctx));
  if (!token) {
    return std::unexpected(
        UsageErr("JITBROKER_SESSION_TOKEN is not set (or pass --session-token-file FILE)"));
  }
  return std::move(*token);
}

Result<std::string> SessionId(const Context& ctx) {
  std::optional<std::string> id = ctx.getenv("JITBROKER_SESSION_ID");
  if (id) {
    TrimTrailingSpace(&*id);
  }
  if (!id || id->empty()) {
    return std::unexpected(
        UsageErr("JITBROKER_SESSION_ID is not set (see 'jitctl sessions open --export')"));
  }
  return std::move(*id);
}

// Session token when one is configured, else the principal's credential.
Result<SecretValue> TokenOrApiKey(const Context& ctx, std::string_view command) {
  JITBROKER_ASSIGN_OR_RETURN(std::optional<SecretValue> token, SessionTokenIfAny(ctx));
  if (token) {
    return std::move(*token);
  }
  JITBROKER_ASSIGN_OR_RETURN(std::optional<SecretValue> key, PrincipalCredentialIfAny(ctx));
  if (!key) {
    return std::unexpected(UsageErr("'" + std::string(command) +
                                    "' needs JITBROKER_SESSION_TOKEN, JITBROKER_API_KEY or a "
                                    "'jitctl login'"));
  }
  return std::move(*key);
}

// The principal's credential when there is one, else the session token.
Result<SecretValue> ApiKeyOrToken(const Context& ctx, std::string_view command) {
  JITBROKER_ASSIGN_OR_RETURN(std::optional<SecretValue> key, PrincipalCredentialIfAny(ctx));
  if (key) {
    return std::move(*key);
  }
  JITBROKER_ASSIGN_OR_RETURN(std::optional<SecretValue> token, SessionTokenIfAny(ctx));
  if (!token) {
    return std::unexpected(UsageErr("'" + std::string(command) +
                                    "' needs JITBROKER_API_KEY, a 'jitctl login' or "
                                    "JITBROKER_SESSION_TOKEN"));
  }
  return std::move(*token);
}

struct Call {
  std::string method = "GET";
  std::string path;  // "/v1/..." including any query
  SecretValue bearer{};
  std::optional<std::string> body{};  // sent as is
  std::string content_type = "application/json";
  std::chrono::milliseconds timeout = kDefaultTimeout;
};

Result<net::HttpResponse> Send(const Context& ctx, Call call) {
  net::HttpRequest req;
  req.method = std::move(call.method);
  req.url = ctx.base_url + call.path;
  req.bearer = std::move(call.bearer);
  req.timeout = call.timeout;
  req.headers.emplace_back("Accept", "application/json");
  req.headers.emplace_back("User-Agent", "jitctl/" + std::string(kJitctlVersion));
  if (call.body) {
    req.headers.emplace_back("Content-Type", call.content_type);
    req.body = std::move(*call.body);
  }
  Result<net::HttpResponse> resp = ctx.http->Send(req);
  if (!req.body.empty()) {
    // Bodies may carry secrets (introspect); do not leave them in freed memory.
    SecureWipe(req.body.data(), req.body.size());
  }
  return resp;
}

Result<std::string> JsonBody(const json& body) {
  std::optional<std::string> text = SafeDump(body);
  if (!text) {
    return std::unexpected(UsageErr("arguments must be valid UTF-8"));
  }
  return std::move(*text);
}

// Zeroes a response body that may hold a credential when it goes out of scope.
class BodyWiper {
 public:
  explicit BodyWiper(std::string& body) : body_(body) {}
  ~BodyWiper() { SecureWipe(body_.data(), body_.size()); }
  BodyWiper(const BodyWiper&) = delete;
  BodyWiper& operator=(const BodyWiper&) = delete;

 private:
  std::string& body_;
};

// POSTs a grant request in the current session (JITBROKER_SESSION_ID and its
// token). The caller wipes the response body: it may carry a credential.
Result<net::HttpResponse> PostGrant(const Context& ctx, const json& body) {
  JITBROKER_ASSIGN_OR_RETURN(std::string text, JsonBody(body));
  JITBROKER_ASSIGN_OR_RETURN(std::string sid, SessionId(ctx));
  JITBROKER_ASSIGN_OR_RETURN(SecretValue token, SessionToken(ctx));
  return Send(ctx, Call{.method = "POST",
                        .path = "/v1/sessions/" + PathSegment(sid) + "/grants",
                        .bearer = std::move(token),
                        .body = text,
                        .timeout = kGrantTimeout});
}

bool IsSuccess(int status) { return status >= 200 && status < 300; }

void PrintRaw(const Context& ctx, const std::string& body) {
  *ctx.out << body;
  if (body.empty() || body.back() != '\n') {
    *ctx.out << "\n";
  }
}

// Prints a non-2xx response as "error: <title> (<code>): <detail>"; with
// --json the raw body also goes to stdout.
int PrintFailure(const Context& ctx, const net::HttpResponse& resp) {
  if (ctx.json && !resp.body.empty()) {
    PrintRaw(ctx, resp.body);
  }
  Problem p = ParseProblem(resp.status, resp.body);
  if (p.detail.empty() && resp.status >= 300 && resp.status < 400) {
    p.detail = "redirect to " +
               SanitizeForTerminal(resp.headers.Get("Location").value_or("(no location)")) +
               " not followed; check the broker URL";
  } else if (p.code == "unexpected_response") {
    p.detail = "the response is not a JSON problem document (content type " +
               SanitizeForTerminal(resp.headers.Get("Content-Type").value_or("none")) +
               "); check the broker URL";
  }
  *ctx.err << FormatProblemLine(p) << "\n";
  if (!p.request_id.empty()) {
    *ctx.err << "request id: " << p.request_id << "\n";
  } else if (auto rid = resp.headers.Get("X-Request-Id")) {
    *ctx.err << "request id: " << SanitizeForTerminal(*rid) << "\n";
  }
  return ToInt(ExitCode::kError);
}

Result<json> ParseResponse(const net::HttpResponse& resp) {
  auto j = ParseJsonStrict(resp.body);
  if (!j || !j->is_object()) {
    return std::unexpected(
        Internal("the broker sent an unexpected response",
                 "HTTP " + std::to_string(resp.status) + " without a JSON object"));
  }
  return std::move(*j);
}

void KeyValue(const Context& ctx, std::string_view key, const std::string& value,
              std::string_view indent = "") {
  if (!value.empty()) {
    *ctx.out << indent << key << ": " << value << "\n";
  }
}

std::string JoinList(const json& v) {
  if (!v.is_array()) {
    return JsonText(v);
  }
  std::string out;
  for (const json& item : v) {
    if (!out.empty()) {
      out += ", ";
    }
    out += JsonText(item);
  }
  return out;
}

// Every member of an object as "key: value" lines (containers compact).
void PrintObject(const Context& ctx, const json& obj, std::string_view indent) {
  if (!obj.is_object()) {
    return;
  }
  for (auto it = obj.begin(); it != obj.end(); ++it) {
    *ctx.out << indent << SanitizeForTerminal(it.key()) << ": " << JsonText(it.value()) << "\n";
  }
}

void PrintTable(const Context& ctx, const std::vector<std::string>& header,
                const std::vector<std::vector<std::string>>& rows, std::string_view indent = "") {
  std::vector<size_t> width(header.size(), 0);
  for (size_t c = 0; c < header.size(); ++c) {
    width[c] = header[c].size();
    for (const auto& row : rows) {
      width[c] = std::max(width[c], row[c].size());
    }
  }
  auto line = [&](const std::vector<std::string>& cells) {
    std::string out;
    for (size_t c = 0; c < cells.size(); ++c) {
      std::string cell = cells[c].empty() ? "-" : cells[c];
      if (c + 1 < cells.size()) {
        cell.resize(std::max(width[c], cell.size()) + 2, ' ');
      }
      out += cell;
    }
    *ctx.out << indent << out << "\n";
  };
  line(header);
  for (const auto& row : rows) {
    line(row);
  }
}

void PrintSession(const Context& ctx, const json& s) {
  KeyValue(ctx, "session_id", Field(s, "session_id"));
  KeyValue(ctx, "state", Field(s, "state"));
  KeyValue(ctx, "principal", Field(s, "principal"));
  KeyValue(ctx, "agent", Field(Member(s, "agent"), "id"));
  const json& task = Member(s, "task");
  KeyValue(ctx, "task", Field(task, "id"));
  KeyValue(ctx, "description", Field(task, "description"));
  const json& scope = Member(task, "scope");
  if (scope.is_object()) {
    *ctx.out << "scope:\n";
    for (auto it = scope.begin(); it != scope.end(); ++it) {
      *ctx.out << "  " << SanitizeForTerminal(it.key()) << ": " << JoinList(it.value()) << "\n";
    }
  }
  for (std::string_view key : {"created_at", "expires_at", "heartbeat_seconds",
                               "heartbeat_deadline", "ended_at", "end_reason"}) {
    KeyValue(ctx, key, Field(s, key));
  }
}

void PrintEnding(const Context& ctx, const json& e) {
  KeyValue(ctx, "session_id", Field(e, "session_id"));
  KeyValue(ctx, "state", Field(e, "state"));
  const json& revocations = Member(e, "revocations");
  if (!revocations.is_array() || revocations.empty()) {
    *ctx.out << "revocations: none\n";
    return;
  }
  *ctx.out << "revocations:\n";
  std::vector<std::vector<std::string>> rows;
  for (const json& r : revocations) {
    rows.push_back({Field(r, "grant_id"), Field(r, "outcome"), Field(r, "residual_seconds")});
  }
  PrintTable(ctx, {"GRANT_ID", "OUTCOME", "RESIDUAL_SECONDS"}, rows, "  ");
}

void PrintCredential(const Context& ctx, const json& credential) {
  if (!credential.is_object()) {
    return;
  }
  *ctx.out << "credential:\n";
  PrintObject(ctx, credential, "  ");
}

// Grant fields (without the credential).
void PrintGrant(const Context& ctx, const json& g) {
  KeyValue(ctx, "grant_id", Field(g, "grant_id"));
  KeyValue(ctx, "session_id", Field(g, "session_id"));
  KeyValue(ctx, "state", Field(g, "state"));
  std::string tier = Field(g, "tier");
  if (tier.empty()) {
    tier = Field(Member(g, "decision"), "tier");
  }
  KeyValue(ctx, "tier", tier);
  for (std::string_view key : {"tool", "operation", "resource", "issuer", "revocability",
                               "created_at", "expires_at", "credential_sha256"}) {
    KeyValue(ctx, key, Field(g, key));
  }
  const json& decision = Member(g, "decision");
  if (decision.is_object()) {
    *ctx.out << "decision:\n" << FormatDecision(decision);
  }
  const json& approval = Member(g, "approval");
  if (approval.is_object()) {
    *ctx.out << "approval:\n";
    PrintObject(ctx, approval, "  ");
  }
}

// Prints the credential token alone; when the credential has no single token
// the whole credential goes to stdout (it is shown only once) and this fails.
int PrintTokenOnly(const Context& ctx, const json& credential) {
  if (std::optional<std::string> token = RawString(credential, "token")) {
    *ctx.out << *token << "\n";
    SecureWipe(token->data(), token->size());
    return ToInt(ExitCode::kOk);
  }
  if (std::optional<std::string> text = SafeDump(credential)) {
    *ctx.out << *text << "\n";
  }
  *ctx.err << "error: the credential (type " << Field(credential, "type")
           << ") has no single token; it was printed as JSON above\n";
  return ToInt(ExitCode::kError);
}

void PrintPending(const Context& ctx, std::ostream& os, const json& g) {
  const json& approval = Member(g, "approval");
  const std::string grant_id = Field(g, "grant_id");
  os << "pending approval\n";
  os << "  grant_id: " << grant_id << "\n";
  os << "  approval_id: " << Field(approval, "id") << "\n";
  os << "  request_digest: " << Field(approval, "request_digest") << "\n";
  if (std::string exp = Field(approval, "expires_at"); !exp.empty()) {
    os << "  approval_expires_at: " << exp << "\n";
  }
  if (!grant_id.empty()) {
    os << "wait with: jitctl grant wait " << grant_id << "\n";
  }
}

void PrintDenied(std::ostream& os, const json& decision) {
  os << "denied";
  if (std::string reason = Field(decision, "reason"); !reason.empty()) {
    os << ": " << reason;
  }
  os << "\n" << FormatDecision(decision);
}

// ---------------------------------------------------------------------------
// Commands

Result<int> SessionsOpen(const Context& ctx, const Invocation& inv) {
  const ParsedArgs& a = inv.args;
  if (a.Switch("export") && ctx.json) {
    return std::unexpected(UsageErr("--export and --json cannot be combined"));
  }
  auto body = BuildSessionOpenBody(a);
  if (!body) {
    return std::unexpected(UsageErr(body.error()));
  }
  JITBROKER_ASSIGN_OR_RETURN(std::string text, JsonBody(*body));
  JITBROKER_ASSIGN_OR_RETURN(SecretValue key, ApiKey(ctx, inv.command->name));
  Call call{.method = "POST", .path = "/v1/sessions", .bearer = std::move(key), .body = text};
  JITBROKER_ASSIGN_OR_RETURN(net::HttpResponse resp, Send(ctx, std::move(call)));
  if (!IsSuccess(resp.status)) {
    return PrintFailure(ctx, resp);
  }
  if (ctx.json) {
    PrintRaw(ctx, resp.body);
    SecureWipe(resp.body.data(), resp.body.size());
    return ToInt(ExitCode::kOk);
  }
  JITBROKER_ASSIGN_OR_RETURN(json s, ParseResponse(resp));
  SecureWipe(resp.body.data(), resp.body.size());
  std::optional<std::string> id = RawString(s, "session_id");
  std::optional<std::string> token = RawString(s, "session_token");
  if (!id || !token) {
    return std::unexpected(Internal("the broker's response lacks session_id or session_token"));
  }
  if (a.Switch("export")) {
    *ctx.out << FormatExportLines(*id, *token);
    *ctx.err << "jitctl: opened session " << SanitizeForTerminal(*id) << " (expires at "
             << Field(s, "expires_at") << ")\n";
  } else {
    KeyValue(ctx, "session_id", Field(s, "session_id"));
    KeyValue(ctx, "state", Field(s, "state"));
    KeyValue(ctx, "expires_at", Field(s, "expires_at"));
    KeyValue(ctx, "heartbeat_deadline", Field(s, "heartbeat_deadline"));
    *ctx.out << "session_token: " << *token << "\n";
    *ctx.err << "warning: the session token is shown only once; store it safely and never log "
                "it (use --export to hand it to the agent's environment)\n";
  }
  SecureWipe(token->data(), token->size());
  return ToInt(ExitCode::kOk);
}

Result<int> SessionsList(const Context& ctx, const Invocation& inv) {
  const ParsedArgs& a = inv.args;
  if (auto limit = a.Get("limit"); limit && !ParseInt64(*limit, 1, 100000)) {
    return std::unexpected(UsageErr("flag --limit needs a positive integer"));
  }
  JITBROKER_ASSIGN_OR_RETURN(SecretValue key, ApiKey(ctx, inv.command->name));
  const std::string query = QueryString({{"state", a.Get("state").value_or("")},
                                         {"agent", a.Get("agent").value_or("")},
                                         {"principal", a.Get("principal").value_or("")},
                                         {"limit", a.Get("limit").value_or("")}});
  JITBROKER_ASSIGN_OR_RETURN(net::HttpResponse resp, Send(ctx, Call{.path = "/v1/sessions" + query,
                                                                    .bearer = std::move(key)}));
  if (!IsSuccess(resp.status)) {
    return PrintFailure(ctx, resp);
  }
  if (ctx.json) {
    PrintRaw(ctx, resp.body);
    return ToInt(ExitCode::kOk);
  }
  JITBROKER_ASSIGN_OR_RETURN(json j, ParseResponse(resp));
  const json& sessions = Member(j, "sessions");
  if (!sessions.is_array() || sessions.empty()) {
    *ctx.out << "no sessions\n";
    return ToInt(ExitCode::kOk);
  }
  std::vector<std::vector<std::string>> rows;
  for (const json& s : sessions) {
    rows.push_back({Field(s, "session_id"), Field(s, "state"), Field(s, "principal"),
                    Field(Member(s, "agent"), "id"), Field(Member(s, "task"), "id"),
                    Field(s, "expires_at")});
  }
  PrintTable(ctx, {"SESSION_ID", "STATE", "PRINCIPAL", "AGENT", "TASK", "EXPIRES_AT"}, rows);
  return ToInt(ExitCode::kOk);
}

Result<int> SessionsShow(const Context& ctx, const Invocation& inv) {
  JITBROKER_ASSIGN_OR_RETURN(SecretValue bearer, ApiKeyOrToken(ctx, inv.command->name));
  JITBROKER_ASSIGN_OR_RETURN(net::HttpResponse resp,
                             Send(ctx, Call{.path = "/v1/sessions/" + PathSegment(inv.args.args[0]),
                                            .bearer = std::move(bearer)}));
  if (!IsSuccess(resp.status)) {
    return PrintFailure(ctx, resp);
  }
  if (ctx.json) {
    PrintRaw(ctx, resp.body);
    return ToInt(ExitCode::kOk);
  }
  JITBROKER_ASSIGN_OR_RETURN(json s, ParseResponse(resp));
  PrintSession(ctx, s);
  const json& grants = Member(s, "grants");
  if (grants.is_array() && !grants.empty()) {
    *ctx.out << "grants:\n";
    std::vector<std::vector<std::string>> rows;
    for (const json& g : grants) {
      std::string tier = Field(g, "tier");
      if (tier.empty()) {
        tier = Field(Member(g, "decision"), "tier");
      }
      rows.push_back({Field(g, "grant_id"), Field(g, "state"), tier, Field(g, "tool"),
                      Field(g, "operation"), Field(g, "resource"), Field(g, "issuer"),
                      Field(g, "expires_at")});
    }
    PrintTable(
        ctx, {"GRANT_ID", "STATE", "TIER", "TOOL", "OPERATION", "RESOURCE", "ISSUER", "EXPIRES_AT"},
        rows, "  ");
  } else if (grants.is_array()) {
    *ctx.out << "grants: none\n";
  }
  const json& usage = Member(s, "scope_usage");
  if (usage.is_object()) {
    *ctx.out << "scope_usage:\n";
    PrintObject(ctx, usage, "  ");
  }
  const json& budget = Member(s, "budget");
  if (budget.is_object()) {
    *ctx.out << "budget:\n" << FormatBudget(budget);
  }
  return ToInt(ExitCode::kOk);
}

// POST an ending (complete/revoke) and print it.
Result<int> PostEnding(const Context& ctx, const std::string& path, SecretValue bearer,
                       const json& body) {
  JITBROKER_ASSIGN_OR_RETURN(std::string text, JsonBody(body));
  JITBROKER_ASSIGN_OR_RETURN(
      net::HttpResponse resp,
      Send(ctx, Call{.method = "POST", .path = path, .bearer = std::move(bearer), .body = text}));
  if (!IsSuccess(resp.status)) {
    return PrintFailure(ctx, resp);
  }
  if (ctx.json) {
    PrintRaw(ctx, resp.body);
    return ToInt(ExitCode::kOk);
  }
  JITBROKER_ASSIGN_OR_RETURN(json e, ParseResponse(resp));
  PrintEnding(ctx, e);
  return ToInt(ExitCode::kOk);
}

Result<int> SessionsRevoke(const Context& ctx, const Invocation& inv) {
  JITBROKER_ASSIGN_OR_RETURN(SecretValue key, ApiKey(ctx, inv.command->name));
  return PostEnding(ctx, "/v1/sessions/" + PathSegment(inv.args.args[0]) + "/revoke",
                    std::move(key), json{{"reason", inv.args.Get("reason").value_or("")}});
}

Result<int> SessionsComplete(const Context& ctx, const Invocation& inv) {
  JITBROKER_ASSIGN_OR_RETURN(SecretValue key, ApiKey(ctx, inv.command->name));
  return PostEnding(ctx, "/v1/sessions/" + PathSegment(inv.args.args[0]) + "/complete",
                    std::move(key), json::object());
}

Result<int> Complete(const Context& ctx, const Invocation& /*inv*/) {
  JITBROKER_ASSIGN_OR_RETURN(std::string sid, SessionId(ctx));
  JITBROKER_ASSIGN_OR_RETURN(SecretValue token, SessionToken(ctx));
  return PostEnding(ctx, "/v1/sessions/" + PathSegment(sid) + "/complete", std::move(token),
                    json::object());
}

Result<int> Heartbeat(const Context& ctx, const Invocation& inv) {
  JITBROKER_ASSIGN_OR_RETURN(std::string sid, SessionId(ctx));
  json body = json::object();
  if (auto progress = inv.args.Get("progress")) {
    body["progress"] = *progress;
  }
  JITBROKER_ASSIGN_OR_RETURN(std::string text, JsonBody(body));
  JITBROKER_ASSIGN_OR_RETURN(SecretValue token, SessionToken(ctx));
  JITBROKER_ASSIGN_OR_RETURN(
      net::HttpResponse resp,
      Send(ctx, Call{.method = "POST",
                     .path = "/v1/sessions/" + PathSegment(sid) + "/heartbeat",
                     .bearer = std::move(token),
                     .body = text}));
  if (!IsSuccess(resp.status)) {
    return PrintFailure(ctx, resp);
  }
  if (ctx.json) {
    PrintRaw(ctx, resp.body);
    return ToInt(ExitCode::kOk);
  }
  JITBROKER_ASSIGN_OR_RETURN(json s, ParseResponse(resp));
  KeyValue(ctx, "session_id", Field(s, "session_id"));
  KeyValue(ctx, "state", Field(s, "state"));
  KeyValue(ctx, "heartbeat_deadline", Field(s, "heartbeat_deadline"));
  KeyValue(ctx, "expires_at", Field(s, "expires_at"));
  return ToInt(ExitCode::kOk);
}

// Output and exit code for a grant object (from `grant request` or `grant show`):
// a credential is printed (0), pending is 3, denied is 4.
int RenderGrant(const Context& ctx, const json& g, bool token_only) {
  const std::string state = Field(g, "state");
  const json& credential = Member(g, "credential");
  const json& decision = Member(g, "decision");
  const std::string result = Field(decision, "result");
  std::ostream& info = token_only ? *ctx.err : *ctx.out;
  if (credential.is_object()) {
    if (token_only) {
      return PrintTokenOnly(ctx, credential);
    }
    PrintGrant(ctx, g);
    PrintCredential(ctx, credential);
    return ToInt(ExitCode::kOk);
  }
  if (state == "pending" || result == "pending") {
    PrintPending(ctx, info, g);
    return ToInt(ExitCode::kPending);
  }
  if (state == "denied" || result == "deny") {
    PrintDenied(info, decision);
    return ToInt(ExitCode::kDenied);
  }
  if (token_only) {
    *ctx.err << "error: no credential in this response (grant state: "
             << (state.empty() ? "-" : state)
             << "); a credential is returned only once, when it is minted\n";
    return ToInt(ExitCode::kError);
  }
  PrintGrant(ctx, g);
  return ToInt(ExitCode::kOk);
}

Result<int> GrantRequest(const Context& ctx, const Invocation& inv) {
  const bool token_only = inv.args.Switch("token-only");
  if (token_only && ctx.json) {
    return std::unexpected(UsageErr("--token-only and --json cannot be combined"));
  }
  auto body = BuildGrantRequestBody(inv.args);
  if (!body) {
    return std::unexpected(UsageErr(body.error()));
  }
  JITBROKER_ASSIGN_OR_RETURN(net::HttpResponse resp, PostGrant(ctx, *body));
  BodyWiper wipe(resp.body);

  if (resp.status == 403) {
    static const json kNone;
    auto problem = ParseJsonStrict(resp.body);
    const json& decision = problem ? Member(*problem, "decision") : kNone;
    if (decision.is_object()) {
      if (ctx.json) {
        PrintRaw(ctx, resp.body);
      } else {
        PrintDenied(token_only ? *ctx.err : *ctx.out, decision);
      }
      return ToInt(ExitCode::kDenied);
    }
    return PrintFailure(ctx, resp);
  }
  if (resp.status != 201 && resp.status != 202 && resp.status != 200) {
    return PrintFailure(ctx, resp);
  }
  JITBROKER_ASSIGN_OR_RETURN(json g, ParseResponse(resp));
  if (ctx.json) {
    PrintRaw(ctx, resp.body);
    return ToInt(resp.status == 202 ? ExitCode::kPending : ExitCode::kOk);
  }
  if (resp.status == 202) {
    PrintPending(ctx, token_only ? *ctx.err : *ctx.out, g);
    return ToInt(ExitCode::kPending);
  }
  return RenderGrant(ctx, g, token_only);
}

Result<int> GrantShow(const Context& ctx, const Invocation& inv) {
  const bool token_only = inv.args.Switch("token-only");
  if (token_only && ctx.json) {
    return std::unexpected(UsageErr("--token-only and --json cannot be combined"));
  }
  std::string path = "/v1/grants/" + PathSegment(inv.args.args[0]);
  std::chrono::milliseconds timeout = kDefaultTimeout;
  if (auto wait = inv.args.Get("wait")) {
    // The broker long-polls one request for at most 60 s; `grant wait
    // --timeout` repeats polls for longer waits.
    const std::optional<int64_t> seconds = ParseInt64(*wait, 0, 60);
    if (!seconds) {
      return std::unexpected(UsageErr(
          "flag --wait needs a number of seconds in [0, 60] (the broker's long-poll limit; "
          "use `jitctl grant wait ID --timeout N` to wait longer)"));
    }
    path += QueryString({{"wait", *wait}});
    timeout += std::chrono::seconds(*seconds);
  }
  JITBROKER_ASSIGN_OR_RETURN(SecretValue bearer, TokenOrApiKey(ctx, inv.command->name));
  JITBROKER_ASSIGN_OR_RETURN(
      net::HttpResponse resp,
      Send(ctx, Call{.path = path, .bearer = std::move(bearer), .timeout = timeout}));
  BodyWiper wipe(resp.body);
  if (!IsSuccess(resp.status)) {
    return PrintFailure(ctx, resp);
  }
  JITBROKER_ASSIGN_OR_RETURN(json g, ParseResponse(resp));
  if (ctx.json) {
    PrintRaw(ctx, resp.body);
    const std::string state = Field(g, "state");
    if (state == "pending") {
      return ToInt(ExitCode::kPending);
    }
    return ToInt(state == "denied" ? ExitCode::kDenied : ExitCode::kOk);
  }
  return RenderGrant(ctx, g, token_only);
}

// Output and exit code of `grant wait` once the grant is no longer pending:
// a credential is printed (0); denied or expired prints the decision and the
// approver's comment (4); any other state has no credential to give (1).
int RenderWaitedGrant(const Context& ctx, const json& g, bool token_only) {
  const std::string state = Field(g, "state");
  const json& credential = Member(g, "credential");
  std::ostream& info = token_only ? *ctx.err : *ctx.out;
  if (credential.is_object()) {
    return RenderGrant(ctx, g, token_only);
  }
  if (state == "denied" || state == "expired" || Field(Member(g, "decision"), "result") == "deny") {
    info << "grant " << Field(g, "grant_id") << " " << (state.empty() ? "denied" : state) << "\n";
    PrintDenied(info, Member(g, "decision"));
    info << FormatApprovalOutcome(g);
    return ToInt(ExitCode::kDenied);
  }
  if (!token_only) {
    PrintGrant(ctx, g);
  }
  *ctx.err << "error: grant " << Field(g, "grant_id") << " is " << (state.empty() ? "-" : state)
           << " and this response carries no credential";
  if (state == "active") {
    *ctx.err << " (a credential is returned only once; it was already collected)";
  }
  *ctx.err << "\n";
  return ToInt(ExitCode::kError);
}

Result<int> GrantWait(const Context& ctx, const Invocation& inv) {
  const bool token_only = inv.args.Switch("token-only");
  if (token_only && ctx.json) {
    return std::unexpected(UsageErr("--token-only and --json cannot be combined"));
  }
  const std::optional<int64_t> timeout = GrantWaitTimeout(inv.args);
  if (!timeout) {
    return std::unexpected(UsageErr("flag --timeout needs a number of seconds in [0, " +
                                    std::to_string(kGrantWaitMaxSeconds) + "]"));
  }
  const std::string path = "/v1/grants/" + PathSegment(inv.args.args[0]);
  // Read once; each poll sends a copy (Send consumes its bearer).
  JITBROKER_ASSIGN_OR_RETURN(SecretValue token, SessionToken(ctx));
  using Clock = std::chrono::steady_clock;
  const Clock::time_point deadline = Clock::now() + std::chrono::seconds(*timeout);
  while (true) {
    const auto left = std::chrono::ceil<std::chrono::seconds>(deadline - Clock::now());
    const int64_t wait = NextPollSeconds(left.count());
    const Clock::time_point started = Clock::now();
    JITBROKER_ASSIGN_OR_RETURN(
        net::HttpResponse resp,
        Send(ctx, Call{.path = path + QueryString({{"wait", std::to_string(wait)}}),
                       .bearer = token.Clone(),
                       .timeout = kGrantTimeout + std::chrono::seconds(wait)}));
    BodyWiper wipe(resp.body);
    if (!IsSuccess(resp.status)) {
      return PrintFailure(ctx, resp);
    }
    JITBROKER_ASSIGN_OR_RETURN(json g, ParseResponse(resp));
    const std::string state = Field(g, "state");
    if (state != "pending") {
      if (ctx.json) {
        PrintRaw(ctx, resp.body);
        if (Member(g, "credential").is_object()) {
          return ToInt(ExitCode::kOk);
        }
        const bool denied = state == "denied" || state == "expired" ||
                            Field(Member(g, "decision"), "result") == "deny";
        return ToInt(denied ? ExitCode::kDenied : ExitCode::kError);
      }
      return RenderWaitedGrant(ctx, g, token_only);
    }
    if (Clock::now() >= deadline) {
      if (ctx.json) {
        PrintRaw(ctx, resp.body);
      } else {
        std::ostream& info = token_only ? *ctx.err : *ctx.out;
        info << "still pending after " << *timeout << " seconds\n";
        PrintPending(ctx, info, g);
      }
      return ToInt(ExitCode::kPending);
    }
    // A poll that came back early (a broker with a shorter long-poll bound, or
    // another grant's change) must not turn into a busy loop.
    const auto min_gap = std::chrono::seconds(1);
    if (Clock::now() - started < min_gap) {
      std::this_thread::sleep_until(std::min(started + min_gap, deadline));
    }
  }
}

Result<int> ApprovalsList(const Context& ctx, const Invocation& inv) {
  const ParsedArgs& a = inv.args;
  if (auto limit = a.Get("limit"); limit && !ParseInt64(*limit, 1, 200)) {
    return std::unexpected(UsageErr("flag --limit needs an integer from 1 to 200"));
  }
  if (auto order = a.Get("order"); order && *order != "oldest" && *order != "newest") {
    return std::unexpected(UsageErr("flag --order is oldest or newest"));
  }
  const bool all = a.Switch("all");
  if (all && a.Has("cursor")) {
    return std::unexpected(UsageErr("--all and --cursor exclude each other"));
  }
  JITBROKER_ASSIGN_OR_RETURN(SecretValue key, ApiKey(ctx, inv.command->name));
  // Pages are bounded (the broker caps each at 200); --all stops after
  // kMaxPages so a broker that never ends a listing cannot loop jitctl.
  constexpr int kMaxPages = 1000;
  std::string cursor = a.Get("cursor").value_or("");
  json approvals = json::array();
  json next_cursor = nullptr;
  std::string last_body;
  for (int page = 0; page < kMaxPages; ++page) {
    const std::string query = QueryString({{"state", "pending"},
                                           {"session_id", a.Get("session").value_or("")},
                                           {"principal", a.Get("principal").value_or("")},
                                           {"tier", a.Get("tier").value_or("")},
                                           {"order", a.Get("order").value_or("")},
                                           {"limit", a.Get("limit").value_or("")},
                                           {"cursor", cursor}});
    JITBROKER_ASSIGN_OR_RETURN(
        net::HttpResponse resp,
        Send(ctx, Call{.path = "/v1/approvals" + query, .bearer = key.Clone()}));
    if (!IsSuccess(resp.status)) {
      return PrintFailure(ctx, resp);
    }
    JITBROKER_ASSIGN_OR_RETURN(json j, ParseResponse(resp));
    last_body = std::move(resp.body);
    const json& items = Member(j, "approvals");
    if (items.is_array()) {
      for (const json& item : items) {
        approvals.push_back(item);
      }
    }
    const json& next = Member(j, "next_cursor");
    next_cursor = next.is_string() && !next.get_ref<const std::string&>().empty() ? next : json();
    if (!all || next_cursor.is_null()) {
      break;
    }
    if (next_cursor.get<std::string>() == cursor) {
      // A broker that ignores `cursor` would hand back the same page forever.
      *ctx.err << "warning: the broker did not advance past cursor " << cursor << "; stopping\n";
      break;
    }
    cursor = next_cursor.get<std::string>();
  }
  if (ctx.json) {
    if (all) {
      PrintRaw(ctx, json{{"approvals", approvals}, {"next_cursor", next_cursor}}.dump());
    } else {
      PrintRaw(ctx, last_body);
    }
    return ToInt(ExitCode::kOk);
  }
  if (approvals.empty()) {
    *ctx.out << "no pending approvals\n";
  } else {
    std::vector<std::vector<std::string>> rows;
    for (const json& item : approvals) {
      rows.push_back(ApprovalListRow(item));
    }
    PrintTable(ctx, {"APPROVAL_ID", "TIER", "PRINCIPAL", "AGENT", "TOOL", "RESOURCE", "EXPIRES_AT"},
               rows);
  }
  if (!next_cursor.is_null()) {
    *ctx.err << "more approvals: --cursor " << next_cursor.get<std::string>()
             << " shows the next page, --all lists every page\n";
  }
  return ToInt(ExitCode::kOk);
}

// GET /v1/approvals/{id}: the parsed approval, or the exit code of a printed failure.
Result<std::variant<json, int>> FetchApproval(const Context& ctx, const std::string& id,
                                              SecretValue key, std::string* raw_body) {
  JITBROKER_ASSIGN_OR_RETURN(
      net::HttpResponse resp,
      Send(ctx, Call{.path = "/v1/approvals/" + PathSegment(id), .bearer = std::move(key)}));
  if (!IsSuccess(resp.status)) {
    return std::variant<json, int>(std::in_place_index<1>, PrintFailure(ctx, resp));
  }
  JITBROKER_ASSIGN_OR_RETURN(json a, ParseResponse(resp));
  if (raw_body != nullptr) {
    *raw_body = std::move(resp.body);
  }
  return std::variant<json, int>(std::in_place_index<0>, std::move(a));
}

Result<int> ApprovalsShow(const Context& ctx, const Invocation& inv) {
  JITBROKER_ASSIGN_OR_RETURN(SecretValue key, ApiKey(ctx, inv.command->name));
  std::string raw;
  JITBROKER_ASSIGN_OR_RETURN(auto fetched,
                             FetchApproval(ctx, inv.args.args[0], std::move(key), &raw));
  if (const int* rc = std::get_if<int>(&fetched)) {
    return *rc;
  }
  if (ctx.json) {
    PrintRaw(ctx, raw);
  } else {
    *ctx.out << FormatApproval(std::get<json>(fetched));
  }
  return ToInt(ExitCode::kOk);
}

// `approvals approve` / `approvals deny`: bound to --digest, or to the digest
// of the approval as fetched and shown here.
Result<int> DecideApproval(const Context& ctx, const Invocation& inv, std::string_view decision) {
  const std::string& id = inv.args.args[0];
  std::optional<std::string> digest;
  if (auto given = inv.args.Get("digest")) {
    digest = NormalizeDigest(*given);
    if (!digest) {
      return std::unexpected(UsageErr("flag --digest needs the approval's request_digest (hex)"));
    }
  }
  const std::optional<std::string> comment = inv.args.Get("comment");
  if (!digest) {
    JITBROKER_ASSIGN_OR_RETURN(SecretValue key, ApiKey(ctx, inv.command->name));
    JITBROKER_ASSIGN_OR_RETURN(auto fetched, FetchApproval(ctx, id, std::move(key), nullptr));
    if (const int* rc = std::get_if<int>(&fetched)) {
      return *rc;
    }
    const json& a = std::get<json>(fetched);
    std::optional<std::string> shown = RawString(a, "request_digest");
    if (!shown || !(digest = NormalizeDigest(*shown))) {
      return std::unexpected(Internal("the broker's approval lacks a valid request_digest"));
    }
    // With --json stdout holds only the decision's response.
    (ctx.json ? *ctx.err : *ctx.out) << FormatApprovalPreview(decision, a);
  }
  JITBROKER_ASSIGN_OR_RETURN(std::string text,
                             JsonBody(BuildApprovalDecisionBody(decision, *digest, comment)));
  JITBROKER_ASSIGN_OR_RETURN(SecretValue key, ApiKey(ctx, inv.command->name));
  JITBROKER_ASSIGN_OR_RETURN(net::HttpResponse resp,
                             Send(ctx, Call{.method = "POST",
                                            .path = "/v1/approvals/" + PathSegment(id),
                                            .bearer = std::move(key),
                                            .body = text}));
  if (!IsSuccess(resp.status)) {
    return PrintFailure(ctx, resp);
  }
  if (ctx.json) {
    PrintRaw(ctx, resp.body);
    return ToInt(ExitCode::kOk);
  }
  JITBROKER_ASSIGN_OR_RETURN(json a, ParseResponse(resp));
  const json& decided = Member(a, "decided");
  *ctx.out << Field(decided, "decision") << ": " << Field(a, "approval_id") << " (grant "
           << Field(a, "grant_id") << ")\n";
  KeyValue(ctx, "state", Field(a, "state"), "  ");
  KeyValue(ctx, "approver", Field(decided, "approver"), "  ");
  KeyValue(ctx, "comment", DisplayField(decided, "comment"), "  ");
  KeyValue(ctx, "decided_at", Field(decided, "decided_at"), "  ");
  KeyValue(ctx, "request_digest", Field(a, "request_digest"), "  ");
  return ToInt(ExitCode::kOk);
}

Result<int> ApprovalsApprove(const Context& ctx, const Invocation& inv) {
  return DecideApproval(ctx, inv, "approve");
}

Result<int> ApprovalsDeny(const Context& ctx, const Invocation& inv) {
  return DecideApproval(ctx, inv, "deny");
}

Result<int> GrantRevoke(const Context& ctx, const Invocation& inv) {
  JITBROKER_ASSIGN_OR_RETURN(SecretValue bearer, TokenOrApiKey(ctx, inv.command->name));
  JITBROKER_ASSIGN_OR_RETURN(net::HttpResponse resp,
                             Send(ctx, Call{.method = "DELETE",
                                            .path = "/v1/grants/" + PathSegment(inv.args.args[0]),
                                            .bearer = std::move(bearer)}));
  if (!IsSuccess(resp.status)) {
    return PrintFailure(ctx, resp);
  }
  if (ctx.json) {
    PrintRaw(ctx, resp.body);
    return ToInt(ExitCode::kOk);
  }
  JITBROKER_ASSIGN_OR_RETURN(json r, ParseResponse(resp));
  for (std::string_view key : {"grant_id", "state", "outcome", "residual_seconds"}) {
    KeyValue(ctx, key, Field(r, key));
  }
  return ToInt(ExitCode::kOk);
}

Result<int> AuditTail(const Context& ctx, const Invocation& inv) {
  const ParsedArgs& a = inv.args;
  if (auto v = a.Get("after-seq"); v && !ParseInt64(*v, 0, INT64_MAX)) {
    return std::unexpected(UsageErr("flag --after-seq needs a non-negative integer"));
  }
  if (auto v = a.Get("limit"); v && !ParseInt64(*v, 1, 100000)) {
    return std::unexpected(UsageErr("flag --limit needs a positive integer"));
  }
  JITBROKER_ASSIGN_OR_RETURN(SecretValue key, ApiKey(ctx, inv.command->name));
  const std::string query = QueryString({{"session_id", a.Get("session").value_or("")},
                                         {"after_seq", a.Get("after-seq").value_or("")},
                                         {"limit", a.Get("limit").value_or("")}});
  JITBROKER_ASSIGN_OR_RETURN(net::HttpResponse resp, Send(ctx, Call{.path = "/v1/audit" + query,
                                                                    .bearer = std::move(key)}));
  if (!IsSuccess(resp.status)) {
    return PrintFailure(ctx, resp);
  }
  if (ctx.json) {
    PrintRaw(ctx, resp.body);
    return ToInt(ExitCode::kOk);
  }
  JITBROKER_ASSIGN_OR_RETURN(json j, ParseResponse(resp));
  const json& records = Member(j, "records");
  if (!records.is_array() || records.empty()) {
    *ctx.out << "no records\n";
    return ToInt(ExitCode::kOk);
  }
  std::vector<std::vector<std::string>> rows;
  for (const json& r : records) {
    const json& request = Member(r, "request");
    rows.push_back({Field(r, "seq"), Field(r, "timestamp"), Field(r, "event"),
                    Field(r, "human_principal"), Field(Member(r, "agent"), "session_id"),
                    Field(request, "tool"), Field(request, "resource"),
                    Field(Member(r, "policy_decision"), "result"), Field(r, "outcome")});
  }
  PrintTable(ctx,
             {"SEQ", "TIMESTAMP", "EVENT", "PRINCIPAL", "SESSION", "TOOL", "RESOURCE", "RESULT",
              "OUTCOME"},
             rows);
  return ToInt(ExitCode::kOk);
}

Result<int> AuditVerifyRemote(const Context& ctx, const Invocation& inv) {
  JITBROKER_ASSIGN_OR_RETURN(SecretValue key, ApiKey(ctx, inv.command->name));
  JITBROKER_ASSIGN_OR_RETURN(net::HttpResponse resp,
                             Send(ctx, Call{.path = "/v1/audit/verify",
                                            .bearer = std::move(key),
                                            .timeout = std::chrono::minutes(10)}));
  if (!IsSuccess(resp.status)) {
    return PrintFailure(ctx, resp);
  }
  JITBROKER_ASSIGN_OR_RETURN(json j, ParseResponse(resp));
  const json& ok = Member(j, "ok");
  if (!ok.is_boolean()) {
    return std::unexpected(Internal("the broker's verify response lacks \"ok\""));
  }
  if (ctx.json) {
    PrintRaw(ctx, resp.body);
  } else {
    // One line per chain when there are several (one per broker replica).
    const json& chains = Member(j, "chains");
    const bool several = chains.is_array() && chains.size() > 1;
    if (ok.get<bool>()) {
      *ctx.out << "ok: " << Field(j, "records") << " records";
      if (several) {
        *ctx.out << " in chain " << Field(j, "chain") << "; " << chains.size() << " chains, "
                 << Field(j, "cross_references") << " cross-chain references";
      }
      *ctx.out << "\n";
    } else {
      *ctx.out << "BROKEN" << (several ? " in chain " + Field(j, "chain") : std::string())
               << " at seq " << Field(j, "first_bad_seq") << ": " << Field(j, "problem") << "\n";
    }
    if (several) {
      for (const json& c : chains) {
        *ctx.out << "  " << Field(c, "chain") << ": "
                 << (Member(c, "ok").is_boolean() && Member(c, "ok").get<bool>() ? "ok, "
                                                                                 : "BROKEN, ")
                 << Field(c, "records") << " records\n";
      }
    }
  }
  return ToInt(ok.get<bool>() ? ExitCode::kOk : ExitCode::kError);
}

Result<int> Introspect(const Context& ctx, const Invocation& inv) {
  std::string token = inv.args.args[0];
  if (token == "-") {
    if (ctx.in == nullptr) {
      return std::unexpected(Internal("no standard input"));
    }
    token.assign(std::istreambuf_iterator<char>(*ctx.in), std::istreambuf_iterator<char>());
    TrimTrailingSpace(&token);
  }
  if (token.empty()) {
    return std::unexpected(UsageErr("the token to introspect is empty"));
  }
  JITBROKER_ASSIGN_OR_RETURN(SecretValue key, ApiKey(ctx, inv.command->name));
  std::string body = "token=" + PercentEncode(token, /*form=*/true);
  SecureWipe(token.data(), token.size());
  JITBROKER_ASSIGN_OR_RETURN(net::HttpResponse resp,
                             Send(ctx, Call{.method = "POST",
                                            .path = "/v1/introspect",
                                            .bearer = std::move(key),
                                            .body = std::move(body),
                                            .content_type = "application/x-www-form-urlencoded"}));
  if (!IsSuccess(resp.status)) {
    return PrintFailure(ctx, resp);
  }
  if (ctx.json) {
    PrintRaw(ctx, resp.body);
    return ToInt(ExitCode::kOk);
  }
  JITBROKER_ASSIGN_OR_RETURN(json j, ParseResponse(resp));
  KeyValue(ctx, "active", Field(j, "active"));
  for (auto it = j.begin(); it != j.end(); ++it) {
    if (it.key() != "active") {
      *ctx.out << SanitizeForTerminal(it.key()) << ": " << JsonText(it.value()) << "\n";
    }
  }
  return ToInt(ExitCode::kOk);
}

Result<int> AdminReload(const Context& ctx, const Invocation& inv) {
  JITBROKER_ASSIGN_OR_RETURN(SecretValue key, ApiKey(ctx, inv.command->name));
  JITBROKER_ASSIGN_OR_RETURN(net::HttpResponse resp, Send(ctx, Call{.method = "POST",
                                                                    .path = "/v1/admin/reload",
                                                                    .bearer = std::move(key),
                                                                    .body = std::string("{}")}));
  if (!IsSuccess(resp.status)) {
    return PrintFailure(ctx, resp);
  }
  if (ctx.json) {
    PrintRaw(ctx, resp.body);
    return ToInt(ExitCode::kOk);
  }
  JITBROKER_ASSIGN_OR_RETURN(json j, ParseResponse(resp));
  *ctx.out << "reloaded: policy version " << Field(j, "policy_version") << "\n";
  return ToInt(ExitCode::kOk);
}

Result<int> Jwks(const Context& ctx, const Invocation& /*inv*/) {
  JITBROKER_ASSIGN_OR_RETURN(net::HttpResponse resp,
                             Send(ctx, Call{.path = "/.well-known/jwks.json"}));
  if (!IsSuccess(resp.status)) {
    return PrintFailure(ctx, resp);
  }
  if (ctx.json) {
    PrintRaw(ctx, resp.body);
    return ToInt(ExitCode::kOk);
  }
  JITBROKER_ASSIGN_OR_RETURN(json j, ParseResponse(resp));
  const json& keys = Member(j, "keys");
  if (!keys.is_array() || keys.empty()) {
    *ctx.out << "no keys\n";
    return ToInt(ExitCode::kOk);
  }
  std::vector<std::vector<std::string>> rows;
  for (const json& k : keys) {
    rows.push_back(
        {Field(k, "kid"), Field(k, "kty"), Field(k, "crv"), Field(k, "alg"), Field(k, "use")});
  }
  PrintTable(ctx, {"KID", "KTY", "CRV", "ALG", "USE"}, rows);
  return ToInt(ExitCode::kOk);
}

// git's credential helper (cli/git_credential.h). `get` asks for a
// contents:read|write grant on the repository git names and prints it in
// git's format; `store` and `erase` have nothing to do (the helper keeps no
// state: every `get` is its own short-lived, audited grant). Problems go to
// stderr, where git shows them; for hosts and protocols the helper does not
// serve it prints nothing, so git asks its next helper.
Result<int> GitCredential(const Context& ctx, const Invocation& inv) {
  const std::string& action = inv.args.args[0];
  if (action != "get" && action != "store" && action != "erase") {
    return std::unexpected(UsageErr("git-credential takes get, store or erase (from git)"));
  }
  if (ctx.in == nullptr) {
    return std::unexpected(Internal("no standard input"));
  }
  JITBROKER_ASSIGN_OR_RETURN(auto attrs, ParseGitCredentialInput(*ctx.in));
  if (action != "get") {
    return ToInt(ExitCode::kOk);
  }
  if (IsBrokerRemote(attrs, ctx.base_url)) {
    // git through the broker (docs/proxy.md): the session is the credential;
    // no GitHub token is asked for, so none reaches this machine.
    JITBROKER_ASSIGN_OR_RETURN(std::string sid, SessionId(ctx));
    JITBROKER_ASSIGN_OR_RETURN(SecretValue token, SessionToken(ctx));
    JITBROKER_ASSIGN_OR_RETURN(std::string answer, FormatSessionCredential(sid, token.Reveal()));
    *ctx.out << answer << std::flush;
    SecureWipe(answer.data(), answer.size());
    return ToInt(ExitCode::kOk);
  }
  std::vector<std::string> hosts = inv.args.All("host");
  if (hosts.empty()) {
    hosts.emplace_back("github.com");
  }
  const std::string access = inv.args.Get("access").value_or("write");
  if (access != "read" && access != "write") {
    return std::unexpected(UsageErr("flag --access must be read or write"));
  }
  std::string issuer = inv.args.Get("issuer").value_or(
      ctx.getenv("JITBROKER_GIT_ISSUER").value_or(std::string("github")));
  JITBROKER_ASSIGN_OR_RETURN(std::optional<GitRepoTarget> target, ResolveGitTarget(attrs, hosts));
  if (!target) {
    return ToInt(ExitCode::kOk);
  }
  json body = {{"tool", access == "write" ? "git.push" : "git.fetch"},
               {"operation", access},
               {"resource", "github://" + target->owner + "/" + target->repo},
               {"issuer", issuer},
               {"scope", {{"permissions", {{"contents", access}}}}},
               {"justification", "git credential helper for " + target->protocol + "://" +
                                     target->host + "/" + target->owner + "/" + target->repo}};
  if (auto ttl = inv.args.Get("ttl")) {
    const std::optional<int64_t> seconds = ParseInt64(*ttl, 1, 86400);
    if (!seconds) {
      return std::unexpected(UsageErr("flag --ttl needs a number of seconds in [1, 86400]"));
    }
    body["ttl_seconds"] = *seconds;
  }
  JITBROKER_ASSIGN_OR_RETURN(net::HttpResponse resp, PostGrant(ctx, body));
  BodyWiper wipe(resp.body);
  if (resp.status == 403) {
    auto problem = ParseJsonStrict(resp.body);
    if (problem && Member(*problem, "decision").is_object()) {
      *ctx.err << "jitctl git-credential: " << access << " access to " << target->owner << "/"
               << target->repo << " was denied\n";
      PrintDenied(*ctx.err, Member(*problem, "decision"));
      return ToInt(ExitCode::kDenied);
    }
  }
  if (resp.status == 202) {
    JITBROKER_ASSIGN_OR_RETURN(json g, ParseResponse(resp));
    *ctx.err << "jitctl git-credential: " << access << " access to " << target->owner << "/"
             << target->repo << " needs a human approval\n";
    PrintPending(ctx, *ctx.err, g);
    return ToInt(ExitCode::kPending);
  }
  if (resp.status != 201) {
    *ctx.err << "jitctl git-credential: the broker did not grant " << access << " access to "
             << target->owner << "/" << target->repo << "\n";
    return PrintFailure(ctx, resp);
  }
  JITBROKER_ASSIGN_OR_RETURN(json g, ParseResponse(resp));
  const json& credential = Member(g, "credential");
  const json& secret = Member(credential, "token");
  if (!secret.is_string() || secret.get_ref<const std::string&>().empty()) {
    return std::unexpected(Internal("the broker's grant carries no token",
                                    "credential type " + Field(credential, "type")));
  }
  const std::string& tok = secret.get_ref<const std::string&>();
  if (tok.find_first_of("\r\n") != std::string::npos || tok.find('\0') != std::string::npos) {
    return std::unexpected(Internal("the broker's token cannot be passed to git"));
  }
  std::optional<int64_t> expiry;
  if (auto t = ParseRfc3339(Field(credential, "expires_at"))) {
    expiry = ToUnixSeconds(*t);
  }
  std::string answer = FormatGitCredential(tok, expiry);
  *ctx.out << answer << std::flush;
  SecureWipe(answer.data(), answer.size());
  return ToInt(ExitCode::kOk);
}

// `git-remote OWNER/REPO`: the proxy URL of a repository; with --set, made
// the URL of a git remote of the repository in the current directory.
Result<int> GitRemote(const Context& ctx, const Invocation& inv) {
  JITBROKER_ASSIGN_OR_RETURN(
      std::string url,
      GitProxyUrl(ctx.base_url, inv.args.Get("host").value_or("github.com"), inv.args.args[0]));
  const std::optional<std::string> remote = inv.args.Get("set");
  if (!remote) {
    *ctx.out << url << "\n";
    return ToInt(ExitCode::kOk);
  }
  if (remote->empty() || remote->front() == '-' ||
      remote->find_first_of(" \t\r\n") != std::string::npos) {
    return std::unexpected(UsageErr("flag --set needs a remote name"));
  }
  auto run = [](std::vector<std::string> argv) -> int {
    std::vector<char*> args;
    for (std::string& a : argv) {
      args.push_back(a.data());
    }
    args.push_back(nullptr);
    pid_t pid = -1;
    if (posix_spawnp(&pid, "git", nullptr, nullptr, args.data(), environ) != 0) {
      return -1;
    }
    int status = 0;
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
    }
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  };
  int rc = run({"git", "remote", "set-url", *remote, url});
  if (rc != 0) {
    rc = run({"git", "remote", "add", *remote, url});
  }
  if (rc != 0) {
    return std::unexpected(Unavailable(
        "git_failed", "git could not set remote " + *remote + " (is this a git repository?)"));
  }
  *ctx.err << "remote " << *remote << " -> " << url << "\n";
  return ToInt(ExitCode::kOk);
}

// ---------------------------------------------------------------------------
// Credentials for other programs (docs/jitctl.md): `aws credential-process`,
// `aws serve` and `exec`. Their stdout belongs to the program they serve, so
// denials, pending approvals and errors go to stderr only, and --json is
// refused.

// A grant request's answer, sorted.
struct GrantAnswer {
  enum class Kind { kIssued, kPending, kDenied, kFailed };
  Kind kind = Kind::kFailed;
  json grant;                  // kIssued, kPending: the grant; kDenied: the decision
  net::HttpResponse failed{};  // kFailed: the broker's answer (no credential)
};

// POSTs `body` in the current session. The caller wipes an issued grant
// (WipeJsonStrings) once it is done with the credential.
Result<GrantAnswer> AskForGrant(const Context& ctx, const json& body) {
  JITBROKER_ASSIGN_OR_RETURN(net::HttpResponse resp, PostGrant(ctx, body));
  BodyWiper wipe(resp.body);
  GrantAnswer answer;
  if (resp.status == 403) {
    auto problem = ParseJsonStrict(resp.body);
    if (problem && Member(*problem, "decision").is_object()) {
      answer.kind = GrantAnswer::Kind::kDenied;
      answer.grant = Member(*problem, "decision");
      return answer;
    }
  }
  if (resp.status == 201 || resp.status == 202) {
    JITBROKER_ASSIGN_OR_RETURN(answer.grant, ParseResponse(resp));
    answer.kind = resp.status == 201 ? GrantAnswer::Kind::kIssued : GrantAnswer::Kind::kPending;
    return answer;
  }
  answer.failed = std::move(resp);
  return answer;
}

// Reports an answer without a credential on stderr; the exit code.
int ReportNoCredential(const Context& ctx, std::string_view command, const GrantAnswer& a) {
  switch (a.kind) {
    case GrantAnswer::Kind::kDenied:
      *ctx.err << "jitctl " << command << ": the grant was denied\n";
      PrintDenied(*ctx.err, a.grant);
      return ToInt(ExitCode::kDenied);
    case GrantAnswer::Kind::kPending:
      *ctx.err << "jitctl " << command << ": the grant needs a human approval\n";
      PrintPending(ctx, *ctx.err, a.grant);
      return ToInt(ExitCode::kPending);
    case GrantAnswer::Kind::kFailed:
    case GrantAnswer::Kind::kIssued:
      break;
  }
  *ctx.err << "jitctl " << command << ": the broker did not grant the credential\n";
  return PrintFailure(ctx, a.failed);
}

Status RefuseJson(const Context& ctx, std::string_view command) {
  if (ctx.json) {
    return std::unexpected(UsageErr("'" + std::string(command) +
                                    "' has a fixed output format; --json does not apply"));
  }
  return {};
}

std::string AwsIssuerDefault(const Context& ctx) {
  return ctx.getenv("JITBROKER_AWS_ISSUER").value_or(std::string("aws"));
}

// Under 15 minutes botocore refreshes at once (its advisory window) and
// `credential_process` is run again for nearly every API call.
constexpr std::chrono::seconds kSdkRefreshWindow{15 * 60};
// Default --ttl of `aws credential-process`: long enough to stay out of
// that window; the broker clamps it to what policy and issuer allow.
constexpr int64_t kCredentialProcessTtlSeconds = 3600;

Result<int> AwsCredentialProcess(const Context& ctx, const Invocation& inv) {
  const std::string_view command = inv.command->name;
  JITBROKER_RETURN_IF_ERROR(RefuseJson(ctx, command));
  auto body =
      BuildAwsGrantBody(inv.args, command, AwsIssuerDefault(ctx), kCredentialProcessTtlSeconds);
  if (!body) {
    return std::unexpected(UsageErr(body.error()));
  }
  JITBROKER_ASSIGN_OR_RETURN(std::string account, AwsAccountOf(Field(*body, "resource")));
  JITBROKER_ASSIGN_OR_RETURN(GrantAnswer answer, AskForGrant(ctx, *body));
  if (answer.kind != GrantAnswer::Kind::kIssued) {
    return ReportNoCredential(ctx, command, answer);
  }
  Result<AwsCredential> credential = AwsCredentialFromGrant(answer.grant);
  const std::string grant_id = Field(answer.grant, "grant_id");
  WipeJsonStrings(answer.grant);
  if (!credential) {
    return std::unexpected(credential.error());
  }
  SecretValue out = CredentialProcessJson(*credential, account);
  *ctx.out << out.Reveal() << "\n" << std::flush;
  const auto left = credential->expires_at - SystemClock().Now();
  if (left < kSdkRefreshWindow) {
    *ctx.err << "jitctl " << command << ": warning: grant " << grant_id << " ends in "
             << std::chrono::duration_cast<std::chrono::seconds>(left).count()
             << " s, inside the AWS SDKs' 15-minute refresh window: they will run this "
                "command again for nearly every call (ask for --ttl 1800 or more, or use "
                "`jitctl aws serve`)\n";
  }
  return ToInt(ExitCode::kOk);
}

// Writes the endpoint token to `path`, readable by its owner only.
Status WriteTokenFile(const std::string& path, const SecretValue& token) {
  const std::string shown = SanitizeForTerminal(path);
  const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW | O_CLOEXEC, 0600);
  if (fd < 0) {
    return std::unexpected(Internal("cannot write token file " + shown, std::strerror(errno)));
  }
  struct stat st{};
  if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode) || ::fchmod(fd, 0600) != 0) {
    ::close(fd);
    return std::unexpected(Internal("token file " + shown + " is not a regular file of ours"));
  }
  std::string_view rest = token.Reveal();
  while (!rest.empty()) {
    const ssize_t n = ::write(fd, rest.data(), rest.size());
    if (n < 0 && errno == EINTR) {
      continue;
    }
    if (n <= 0) {
      const int saved = errno;
      ::close(fd);
      return std::unexpected(Internal("cannot write token file " + shown, std::strerror(saved)));
    }
    rest.remove_prefix(static_cast<size_t>(n));
  }
  if (::close(fd) != 0) {
    return std::unexpected(Internal("cannot write token file " + shown, std::strerror(errno)));
  }
  return {};
}

// One new credential for an endpoint, or why there is none ({"code",
// "message"}: the broker's decision or problem, never a secret). `parse`
// reads the credential of an issued grant (AwsCredentialFromGrant, …).
template <class C>
FetchedCredential<C> FetchForEndpoint(const Context& ctx, const json& body,
                                      Result<C> (*parse)(const json&)) {
  FetchedCredential<C> out;
  out.status = 502;
  Result<GrantAnswer> answer = AskForGrant(ctx, body);
  if (!answer) {
    out.code = "broker_unavailable";
    out.message = SanitizeForTerminal(answer.error().message);
    return out;
  }
  switch (answer->kind) {
    case GrantAnswer::Kind::kIssued: {
      Result<C> credential = parse(answer->grant);
      out.grant_id = Field(answer->grant, "grant_id");
      WipeJsonStrings(answer->grant);
      if (!credential) {
        out.code = "unexpected_credential";
        out.message = credential.error().message;
        return out;
      }
      out.credential = std::move(*credential);
      out.status = 200;
      return out;
    }
    case GrantAnswer::Kind::kDenied: {
      out.status = 403;
      out.code = Field(answer->grant, "code");
      if (out.code.empty()) {
        out.code = "grant_denied";
      }
      out.message = "denied: " + Field(answer->grant, "reason");
      return out;
    }
    case GrantAnswer::Kind::kPending:
      out.status = 403;
      out.code = "approval_pending";
      out.message = "grant " + Field(answer->grant, "grant_id") +
                    " needs a human approval (approval " +
                    Field(Member(answer->grant, "approval"), "id") + ")";
      return out;
    case GrantAnswer::Kind::kFailed:
      break;
  }
  const Problem p = ParseProblem(answer->failed.status, answer->failed.body);
  out.code = p.code;
  out.message = p.title + (p.detail.empty() ? "" : ": " + p.detail);
  return out;
}

// The first grant of a serve command, before it listens: a request that
// cannot be granted fails here, with the decision, instead of in every SDK
// call. The credential, or the exit code (reported on stderr).
template <class C>
Result<std::variant<FetchedCredential<C>, int>> FirstCredential(const Context& ctx,
                                                                std::string_view command,
                                                                const json& body,
                                                                Result<C> (*parse)(const json&)) {
  JITBROKER_ASSIGN_OR_RETURN(GrantAnswer answer, AskForGrant(ctx, body));
  if (answer.kind != GrantAnswer::Kind::kIssued) {
    return ReportNoCredential(ctx, command, answer);
  }
  FetchedCredential<C> first;
  Result<C> credential = parse(answer.grant);
  first.grant_id = Field(answer.grant, "grant_id");
  WipeJsonStrings(answer.grant);
  if (!credential) {
    return std::unexpected(credential.error());
  }
  first.credential = std::move(*credential);
  return first;
}

// --port of a serve command: 0 (any free port) when absent.
Result<int> ServePort(const Invocation& inv) {
  if (auto p = inv.args.Get("port")) {
    const std::optional<int64_t> v = ParseInt64(*p, 0, 65535);
    if (!v) {
      return std::unexpected(UsageErr("flag --port needs a port number in [0, 65535]"));
    }
    return static_cast<int>(*v);
  }
  return 0;
}

// Blocks until SIGINT, SIGTERM or SIGHUP (blocked in every thread: the
// listener's threads start after the mask is set and inherit it).
class StopSignals {
 public:
  StopSignals() {
    sigemptyset(&set_);
    sigaddset(&set_, SIGINT);
    sigaddset(&set_, SIGTERM);
    sigaddset(&set_, SIGHUP);
    ::pthread_sigmask(SIG_BLOCK, &set_, &old_);
  }
  ~StopSignals() { ::pthread_sigmask(SIG_SETMASK, &old_, nullptr); }
  StopSignals(const StopSignals&) = delete;
  StopSignals& operator=(const StopSignals&) = delete;
  int Wait() const {
    int sig = 0;
    while (::sigwait(&set_, &sig) != 0) {
    }
    return sig;
  }

 private:
  sigset_t set_{};
  sigset_t old_{};
};

// Serves on `listener` until a stop signal; the signal.
int ServeUntilSignal(http::Transport& listener, const StopSignals& signals) {
  std::thread server([&listener] { listener.Serve(); });
  const int sig = signals.Wait();
  listener.Stop(std::chrono::milliseconds(2000));
  server.join();
  return sig;
}

Result<int> AwsServe(const Context& ctx, const Invocation& inv) {
  const std::string_view command = inv.command->name;
  JITBROKER_RETURN_IF_ERROR(RefuseJson(ctx, command));
  auto body = BuildAwsGrantBody(inv.args, command, AwsIssuerDefault(ctx), std::nullopt);
  if (!body) {
    return std::unexpected(UsageErr(body.error()));
  }
  JITBROKER_ASSIGN_OR_RETURN(const int port, ServePort(inv));
  const std::optional<std::string> token_file = inv.args.Get("token-file");
  JITBROKER_ASSIGN_OR_RETURN(std::string account, AwsAccountOf(Field(*body, "resource")));

  SystemClock clock;
  JITBROKER_ASSIGN_OR_RETURN(
      auto got, FirstCredential<AwsCredential>(ctx, command, *body, &AwsCredentialFromGrant));
  if (const int* code = std::get_if<int>(&got)) {
    return *code;
  }
  auto& first = std::get<FetchedCredential<AwsCredential>>(got);

  // 256 random bits; hex keeps it a plain header value.
  SecretValue token(crypto::HexEncode(crypto::RandomBytes(32)));
  StopSignals signals;
  CredentialEndpointOptions options;
  options.token = token.Clone();
  options.account_id = account;
  options.clock = &clock;
  options.fetch = [&ctx, grant = *body] {
    return FetchForEndpoint<AwsCredential>(ctx, grant, &AwsCredentialFromGrant);
  };
  options.log = ctx.err;
  CredentialEndpoint endpoint(std::move(options));
  endpoint.Prime(std::move(*first.credential), clock.Now());
  JITBROKER_ASSIGN_OR_RETURN(std::unique_ptr<http::Transport> listener,
                             http::Transport::Create(LoopbackEndpointOptions(port), &endpoint));
  JITBROKER_ASSIGN_OR_RETURN(int bound, listener->Bind());
  if (token_file) {  // once the port is ours: a failed bind leaves no file behind
    JITBROKER_RETURN_IF_ERROR(WriteTokenFile(*token_file, token));
  }

  *ctx.out << "export AWS_CONTAINER_CREDENTIALS_FULL_URI=http://127.0.0.1:" << bound
           << kCredentialsPath << "\n";
  if (token_file) {
    *ctx.out << "export AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE=" << ShellQuote(*token_file) << "\n";
    *ctx.err << "jitctl " << command
             << ": note: some SDKs (Debian 12's botocore among them) ignore "
                "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE; give them "
                "AWS_CONTAINER_AUTHORIZATION_TOKEN=$(cat FILE)\n";
  } else {
    *ctx.out << "export AWS_CONTAINER_AUTHORIZATION_TOKEN=" << token.Reveal() << "\n";
  }
  *ctx.out << std::flush;
  *ctx.err << "jitctl " << command << ": serving grant " << first.grant_id
           << " on 127.0.0.1:" << bound << " until SIGINT or SIGTERM\n"
           << std::flush;

  const int sig = ServeUntilSignal(*listener, signals);
  if (token_file) {
    ::unlink(token_file->c_str());
  }
  *ctx.err << "jitctl " << command << ": stopped (signal " << sig << ")\n";
  return ToInt(ExitCode::kOk);
}

std::string GcpIssuerDefault(const Context& ctx) {
  return ctx.getenv("JITBROKER_GCP_ISSUER").value_or(std::string("gcp"));
}

Result<int> GcpServe(const Context& ctx, const Invocation& inv) {
  const std::string_view command = inv.command->name;
  JITBROKER_RETURN_IF_ERROR(RefuseJson(ctx, command));
  auto body = BuildGcpGrantBody(inv.args, command, GcpIssuerDefault(ctx));
  if (!body) {
    return std::unexpected(UsageErr(body.error()));
  }
  JITBROKER_ASSIGN_OR_RETURN(const int port, ServePort(inv));
  JITBROKER_ASSIGN_OR_RETURN(issuers::gcp::GcpResource resource,
                             issuers::gcp::ParseGcpResource(Field(*body, "resource")));
  const std::string project_number = inv.args.Get("project-number").value_or("");
  if (!project_number.empty() &&
      (project_number.size() > 20 || !std::all_of(project_number.begin(), project_number.end(),
                                                  [](char c) { return c >= '0' && c <= '9'; }))) {
    return std::unexpected(UsageErr("flag --project-number needs the project's number (digits)"));
  }

  SystemClock clock;
  JITBROKER_ASSIGN_OR_RETURN(
      auto got, FirstCredential<GcpCredential>(ctx, command, *body, &GcpCredentialFromGrant));
  if (const int* code = std::get_if<int>(&got)) {
    return *code;
  }
  auto& first = std::get<FetchedCredential<GcpCredential>>(got);

  StopSignals signals;
  MetadataEndpointOptions options;
  options.project = resource.project;
  options.project_number = project_number;
  options.service_account = first.credential->service_account;
  options.scopes = first.credential->scopes;
  options.clock = &clock;
  options.fetch = [&ctx, grant = *body] {
    return FetchForEndpoint<GcpCredential>(ctx, grant, &GcpCredentialFromGrant);
  };
  options.log = ctx.err;
  MetadataEndpoint endpoint(std::move(options));
  endpoint.Prime(std::move(*first.credential), clock.Now());
  JITBROKER_ASSIGN_OR_RETURN(std::unique_ptr<http::Transport> listener,
                             http::Transport::Create(LoopbackEndpointOptions(port), &endpoint));
  JITBROKER_ASSIGN_OR_RETURN(int bound, listener->Bind());

  // GCE_METADATA_HOST: Go, Java, Node and newer Python libraries;
  // GCE_METADATA_ROOT: gcloud and older Python; GCE_METADATA_IP: the
  // Python libraries' ping.
  const std::string where = "127.0.0.1:" + std::to_string(bound);
  *ctx.out << "export GCE_METADATA_HOST=" << where << "\n"
           << "export GCE_METADATA_ROOT=" << where << "\n"
           << "export GCE_METADATA_IP=" << where << "\n"
           << std::flush;
  *ctx.err << "jitctl " << command << ": serving grant " << first.grant_id << " ("
           << SanitizeForTerminal(resource.service_account) << ") on " << where
           << " until SIGINT or SIGTERM; any process that can reach it can ask for the token\n"
           << std::flush;
  const int sig = ServeUntilSignal(*listener, signals);
  *ctx.err << "jitctl " << command << ": stopped (signal " << sig << ")\n";
  return ToInt(ExitCode::kOk);
}

// The child of `exec`, for the signal handler that passes SIGTERM and SIGHUP
// on (a handler can reach nothing else).
std::atomic<pid_t> exec_child_pid{0};

extern "C" void ForwardToChild(int sig) {
  const pid_t child = exec_child_pid.load();
  if (child > 0) {
    ::kill(child, sig);
  }
}

// Restores the signal dispositions `exec` changed, on every path.
class ExecSignals {
 public:
  ExecSignals() {
    struct sigaction ignore{};
    ignore.sa_handler = SIG_IGN;
    sigemptyset(&ignore.sa_mask);
    struct sigaction forward{};
    forward.sa_handler = &ForwardToChild;
    sigemptyset(&forward.sa_mask);
    forward.sa_flags = SA_RESTART;
    // As system(3): a terminal's SIGINT and SIGQUIT reach the child's
    // process group directly; the parent outlives them to revoke.
    ::sigaction(SIGINT, &ignore, &old_int_);
    ::sigaction(SIGQUIT, &ignore, &old_quit_);
    ::sigaction(SIGTERM, &forward, &old_term_);
    ::sigaction(SIGHUP, &forward, &old_hup_);
  }
  ~ExecSignals() {
    ::sigaction(SIGINT, &old_int_, nullptr);
    ::sigaction(SIGQUIT, &old_quit_, nullptr);
    ::sigaction(SIGTERM, &old_term_, nullptr);
    ::sigaction(SIGHUP, &old_hup_, nullptr);
    exec_child_pid.store(0);
  }
  ExecSignals(const ExecSignals&) = delete;
  ExecSignals& operator=(const ExecSignals&) = delete;

 private:
  struct sigaction old_int_{}, old_quit_{}, old_term_{}, old_hup_{};
};

// Runs argv with envp (both prepared before fork: the child only calls
// async-signal-safe functions). The exit status as a shell reports it:
// the command's, 128+N when signal N killed it, 127 when it was not found,
// 126 when it could not be run.
int RunChild(const Context& ctx, const std::vector<std::string>& argv,
             std::vector<std::string>& envp) {
  std::vector<char*> args;
  for (const std::string& a : argv) {
    args.push_back(const_cast<char*>(a.c_str()));
  }
  args.push_back(nullptr);
  std::vector<char*> env;
  for (std::string& e : envp) {
    env.push_back(e.data());
  }
  env.push_back(nullptr);
  int report[2];
  if (::pipe2(report, O_CLOEXEC) != 0) {
    *ctx.err << "jitctl exec: cannot create a pipe: " << std::strerror(errno) << "\n";
    return ToInt(ExitCode::kError);
  }
  ExecSignals signals;
  const pid_t pid = ::fork();
  if (pid < 0) {
    const int saved = errno;
    ::close(report[0]);
    ::close(report[1]);
    *ctx.err << "jitctl exec: cannot fork: " << std::strerror(saved) << "\n";
    return ToInt(ExitCode::kError);
  }
  if (pid == 0) {
    // jitctl ignores SIGPIPE; the command gets the defaults back.
    struct sigaction dfl{};
    dfl.sa_handler = SIG_DFL;
    sigemptyset(&dfl.sa_mask);
    for (int sig : {SIGPIPE, SIGINT, SIGQUIT, SIGTERM, SIGHUP}) {
      ::sigaction(sig, &dfl, nullptr);
    }
    ::close(report[0]);
    ::execvpe(args[0], args.data(), env.data());
    const int err = errno;
    ssize_t ignored = ::write(report[1], &err, sizeof(err));
    (void)ignored;
    ::_exit(err == ENOENT ? 127 : 126);
  }
  exec_child_pid.store(pid);
  ::close(report[1]);
  int exec_errno = 0;
  ssize_t n = 0;
  do {
    n = ::read(report[0], &exec_errno, sizeof(exec_errno));
  } while (n < 0 && errno == EINTR);
  ::close(report[0]);
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  if (n == static_cast<ssize_t>(sizeof(exec_errno))) {
    *ctx.err << "jitctl exec: " << SanitizeForTerminal(argv[0]) << ": "
             << (exec_errno == ENOENT ? "command not found" : std::strerror(exec_errno)) << "\n";
    return exec_errno == ENOENT ? 127 : 126;
  }
  if (WIFEXITED(status)) {
    return WEXITSTATUS(status);
  }
  if (WIFSIGNALED(status)) {
    return 128 + WTERMSIG(status);
  }
  return ToInt(ExitCode::kError);
}

// DELETE /v1/grants/{id} once the command is done; a failure is a warning
// (the grant still ends at its expiry).
void RevokeAfterExec(const Context& ctx, const std::string& grant_id) {
  Result<SecretValue> token = SessionToken(ctx);
  Result<net::HttpResponse> resp =
      token ? Send(ctx, Call{.method = "DELETE",
                             .path = "/v1/grants/" + PathSegment(grant_id),
                             .bearer = std::move(*token)})
            : Result<net::HttpResponse>(std::unexpected(token.error()));
  if (!resp || !IsSuccess(resp->status)) {
    *ctx.err << "jitctl exec: warning: could not revoke grant " << SanitizeForTerminal(grant_id)
             << " (" << (resp ? "HTTP " + std::to_string(resp->status) : resp.error().message)
             << "); it ends at its expiry\n";
  }
}

Result<int> Exec(const Context& ctx, const Invocation& inv) {
  JITBROKER_RETURN_IF_ERROR(RefuseJson(ctx, inv.command->name));
  const ParsedArgs& a = inv.args;
  if (!a.double_dash_at) {
    return std::unexpected(
        UsageErr("exec runs the command after --: jitctl exec FLAGS -- COMMAND [ARGS...]"));
  }
  if (*a.double_dash_at > 0) {
    return std::unexpected(UsageErr("unexpected argument '" + a.args.front() + "' before --"));
  }
  if (a.args.empty()) {
    return std::unexpected(UsageErr("exec needs a command after --"));
  }
  auto body = BuildGrantRequestBody(a);
  if (!body) {
    return std::unexpected(UsageErr(body.error()));
  }
  JITBROKER_ASSIGN_OR_RETURN(GrantAnswer answer, AskForGrant(ctx, *body));
  if (answer.kind != GrantAnswer::Kind::kIssued) {
    return ReportNoCredential(ctx, "exec", answer);
  }
  const std::string grant_id = RawString(answer.grant, "grant_id").value_or("");
  Result<ExecEnvironment> env = ExecEnvironmentFor(Member(answer.grant, "credential"));
  WipeJsonStrings(answer.grant);
  if (!env) {
    // Minted but unusable here: do not leave it live.
    if (!grant_id.empty()) {
      RevokeAfterExec(ctx, grant_id);
    }
    return std::unexpected(env.error());
  }
  std::vector<std::string> parent;
  for (char** e = ::environ; e != nullptr && *e != nullptr; ++e) {
    parent.emplace_back(*e);
  }
  std::vector<std::string> envp = MergeEnvironment(parent, *env);
  env->set.clear();
  for (std::string& e : parent) {  // copies of the session token, among others
    SecureWipe(e.data(), e.size());
  }
  std::flush(*ctx.out);
  std::flush(*ctx.err);
  const int rc = RunChild(ctx, a.args, envp);
  for (std::string& e : envp) {
    SecureWipe(e.data(), e.size());
  }
  if (!grant_id.empty()) {
    RevokeAfterExec(ctx, grant_id);
  }
  return rc;
}

// `jitctl login` (docs/jitctl.md): the device authorization grant (RFC
// 8628) against the broker's /v1/login endpoints. The person types the code
// shown here at /ui/device in a browser signed in by single sign-on; the ID
// token of that sign-in comes back and is kept for this broker
// (cli/login_store.h) until it expires.
Result<int> Login(const Context& ctx, const Invocation& /*inv*/) {
  JITBROKER_ASSIGN_OR_RETURN(std::string store, LoginStorePath(ctx.getenv));
  JITBROKER_ASSIGN_OR_RETURN(net::HttpResponse started,
                             Send(ctx, Call{.method = "POST",
                                            .path = "/v1/login/device",
                                            .body = std::string("client_id=jitctl"),
                                            .content_type = "application/x-www-form-urlencoded"}));
  if (started.status == 404) {
    return std::unexpected(
        Internal("this broker has no single sign-on (no humans: section); "
                 "use an API key (JITBROKER_API_KEY)"));
  }
  if (!IsSuccess(started.status)) {
    return PrintFailure(ctx, started);
  }
  JITBROKER_ASSIGN_OR_RETURN(json start, ParseResponse(started));
  std::string device_code = Field(start, "device_code");
  const std::string user_code = Field(start, "user_code");
  const json& interval_json = Member(start, "interval");
  const json& expires_json = Member(start, "expires_in");
  int64_t interval = interval_json.is_number_integer() ? interval_json.get<int64_t>() : 5;
  const int64_t expires_in = expires_json.is_number_integer() ? expires_json.get<int64_t>() : 600;
  interval = std::clamp<int64_t>(interval, 1, 60);
  if (device_code.empty() || user_code.empty()) {
    return std::unexpected(Internal("the broker's answer has no device_code or user_code"));
  }
  *ctx.err << "To sign in, open " << SanitizeForTerminal(Field(start, "verification_uri"))
           << "\nand enter the code: " << SanitizeForTerminal(user_code) << "\n(it expires in "
           << expires_in / 60 << " minutes; waiting…)\n";
  std::flush(*ctx.err);
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(expires_in);
  const std::string body =
      "grant_type=" + PercentEncode("urn:ietf:params:oauth:grant-type:device_code", true) +
      "&device_code=" + PercentEncode(device_code, true);
  SecureWipe(device_code.data(), device_code.size());
  while (std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::seconds(interval));
    std::string form = body;
    JITBROKER_ASSIGN_OR_RETURN(
        net::HttpResponse polled,
        Send(ctx, Call{.method = "POST",
                       .path = "/v1/login/token",
                       .body = std::move(form),
                       .content_type = "application/x-www-form-urlencoded"}));
    JITBROKER_ASSIGN_OR_RETURN(json answer, ParseResponse(polled));
    SecureWipe(polled.body.data(), polled.body.size());
    if (IsSuccess(polled.status)) {
      std::string token = Field(answer, "access_token");
      Result<TimePoint> expires = ParseRfc3339(Field(answer, "expires_at"));
      if (token.empty() || !expires) {
        return std::unexpected(Internal("the broker's answer has no access_token or expires_at"));
      }
      StoredLogin login{ToSecret(&token), Field(answer, "principal"), *expires};
      if (auto& t = answer["access_token"]; t.is_string()) {
        SecureWipe(t.get_ref<std::string&>().data(), t.get_ref<std::string&>().size());
      }
      JITBROKER_RETURN_IF_ERROR(WriteLogin(ctx.getenv, ctx.base_url, &login, SystemClock().Now()));
      *ctx.out << "signed in to " << ctx.base_url << " as " << SanitizeForTerminal(login.principal)
               << " until " << FormatRfc3339(login.expires_at) << " (kept in " << store << ")\n";
      return ToInt(ExitCode::kOk);
    }
    const std::string error = Field(answer, "error");
    if (error == "authorization_pending") {
      continue;
    }
    if (error == "slow_down") {
      interval += 5;
      continue;
    }
    if (error == "access_denied") {
      *ctx.err << "the sign-in was refused in the browser\n";
      return ToInt(ExitCode::kDenied);
    }
    return PrintFailure(ctx, polled);
  }
  return std::unexpected(
      Internal("the code expired before it was entered; run 'jitctl login' "
               "again"));
}

Result<int> Logout(const Context& ctx, const Invocation& /*inv*/) {
  JITBROKER_RETURN_IF_ERROR(WriteLogin(ctx.getenv, ctx.base_url, nullptr, SystemClock().Now()));
  *ctx.out << "signed out of " << ctx.base_url << " (this terminal)\n";
  return ToInt(ExitCode::kOk);
}

using Handler = Result<int> (*)(const Context&, const Invocation&);

Result<int> Dispatch(const Context& ctx, const Invocation& inv) {
  static constexpr std::pair<std::string_view, Handler> kHandlers[] = {
      {"sessions open", &SessionsOpen},
      {"sessions list", &SessionsList},
      {"sessions show", &SessionsShow},
      {"sessions revoke", &SessionsRevoke},
      {"sessions complete", &SessionsComplete},
      {"heartbeat", &Heartbeat},
      {"complete", &Complete},
      {"grant request", &GrantRequest},
      {"grant show", &GrantShow},
      {"grant wait", &GrantWait},
      {"grant revoke", &GrantRevoke},
      {"approvals list", &ApprovalsList},
      {"approvals show", &ApprovalsShow},
      {"approvals approve", &ApprovalsApprove},
      {"approvals deny", &ApprovalsDeny},
      {"audit tail", &AuditTail},
      {"audit verify", &AuditVerifyRemote},
      {"introspect", &Introspect},
      {"admin reload", &AdminReload},
      {"jwks", &Jwks},
      {"login", &Login},
      {"logout", &Logout},
      {"ci exchange", &CiExchange},
      {"git-credential", &GitCredential},
      {"git-remote", &GitRemote},
      {"aws credential-process", &AwsCredentialProcess},
      {"aws serve", &AwsServe},
      {"gcp serve", &GcpServe},
      {"exec", &Exec},
  };
  for (const auto& [name, handler] : kHandlers) {
    if (name == inv.command->name) {
      return handler(ctx, inv);
    }
  }
  return std::unexpected(
      Internal("command '" + std::string(inv.command->name) + "' is not an online command"));
}

}  // namespace

int RunOnlineCommand(const Invocation& invocation, Context& ctx) {
  if (invocation.command == nullptr || ctx.http == nullptr || ctx.out == nullptr ||
      ctx.err == nullptr || !ctx.getenv) {
    return ToInt(ExitCode::kError);
  }
  Result<int> rc = Dispatch(ctx, invocation);
  if (!rc) {
    return Report(ctx, invocation, rc.error());
  }
  return *rc;
}

}  // namespace jitbroker::cli
