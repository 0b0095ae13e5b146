// jitctl's pure helpers: URL and form encoding, strict JSON parsing, request
// bodies, problem+json and decision formatting, terminal and shell quoting
// (header-only, so the unit tests can exercise them without the binary).
//
// Nothing here throws: JSON is parsed by json::ParseStrict and serialised
// through SafeDump().
//
// Thread-safety: pure functions over values.
#pragma once

#include <algorithm>
#include <cstdint>
#include <expected>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "broker/common/json_util.h"
#include "broker/net/url.h"
#include "cli/args.h"

namespace jitbroker::cli {

inline constexpr std::string_view kDefaultUrl = "http://127.0.0.1:8443";

inline constexpr std::string_view kTiers[] = {"read",         "write",  "pr",
                                              "merge_deploy", "secret", "destructive"};

inline bool IsKnownTier(std::string_view tier) {
  for (std::string_view t : kTiers) {
    if (t == tier) {
      return true;
    }
  }
  return false;
}

// ---------------------------------------------------------------------------
// Encoding

// Percent-encoding is net::PercentEncode (broker/net/url.h).
using net::PercentEncode;

// One path segment (IDs from the command line cannot add segments or a query).
inline std::string PathSegment(std::string_view s) { return PercentEncode(s); }

// "?k=v&k2=v2" for the pairs with non-empty values; "" when there are none.
inline std::string QueryString(const std::vector<std::pair<std::string, std::string>>& params) {
  std::string out;
  for (const auto& [key, value] : params) {
    if (value.empty()) {
      continue;
    }
    out += out.empty() ? "?" : "&";
    out += PercentEncode(key);
    out += "=";
    out += PercentEncode(value);
  }
  return out;
}

// Validates the broker base URL (net::UrlPolicy::BrokerUrl: http or https,
// a host, no userinfo, query or fragment) and removes trailing slashes (a
// path prefix is kept).
inline std::expected<std::string, std::string> NormalizeBaseUrl(std::string_view url) {
  Result<net::Url> parsed = net::ParseUrl(url, net::UrlPolicy::BrokerUrl());
  if (!parsed) {
    const std::string_view reason = parsed.error().Reason();
    if (reason == "url_not_absolute" || reason == "url_scheme" || reason == "url_scheme_case") {
      return std::unexpected("broker URL must start with http:// or https://");
    }
    if (reason == "url_no_host") {
      return std::unexpected("broker URL has no host");
    }
    if (reason == "url_userinfo") {
      return std::unexpected("broker URL must not contain credentials");
    }
    return std::unexpected("broker URL " + parsed.error().message);
  }
  std::string out(url);
  const size_t min_size = url.size() - parsed->path.size();
  while (out.size() > min_size && out.back() == '/') {
    out.pop_back();
  }
  return out;
}

// Whether a (normalised) broker URL keeps tokens off the network in clear:
// https, or plain http to a loopback host.
inline bool BrokerUrlIsEncryptedOrLoopback(std::string_view base_url) {
  Result<net::Url> parsed = net::ParseUrl(base_url, net::UrlPolicy::BrokerUrl());
  return parsed && (parsed->scheme == "https" || parsed->IsLoopback());
}

// Single-quotes for POSIX shells: abc'd -> 'abc'\''d'.
inline std::string ShellQuote(std::string_view s) {
  std::string out = "'";
  for (char c : s) {
    if (c == '\'') {
      out += "'\\''";
    } else {
      out.push_back(c);
    }
  }
  out += "'";
  return out;
}

// Replaces C0/C1 control characters and DEL with '?' so server-provided text
// cannot drive the terminal (escape sequences, carriage returns).
inline std::string SanitizeForTerminal(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  for (size_t i = 0; i < s.size(); ++i) {
    const auto u = static_cast<unsigned char>(s[i]);
    if (u < 0x20 || u == 0x7f) {
      out.push_back('?');
    } else if (u == 0xc2 && i + 1 < s.size() && static_cast<unsigned char>(s[i + 1]) >= 0x80 &&
               static_cast<unsigned char>(s[i + 1]) <= 0x9f) {
      out.push_back('?');  // UTF-8 encoded C1 control (U+0080..U+009F)
      ++i;
    } else {
      out.push_back(s[i]);
    }
  }
  return out;
}

// ---------------------------------------------------------------------------
// JSON

// dump() that cannot throw: invalid UTF-8 is an error, reported as nullopt.
inline std::optional<std::string> SafeDump(const nlohmann::json& j, int indent = -1) {
  try {
    return j.dump(indent, ' ', false, nlohmann::json::error_handler_t::strict);
  } catch (...) {
    return std::nullopt;
  }
}

// Parses JSON with the broker's strict parser (json::ParseStrict: UTF-8, no
// duplicate keys at any depth), with a budget for the broker's answers: as
// large as the HTTP client accepts, nesting up to 128 (a stored request body
// may nest 32 levels inside an answer). The error is terminal-safe.
inline std::expected<nlohmann::json, std::string> ParseJsonStrict(std::string_view text) {
  jitbroker::json::ParseOptions options;
  options.what = "JSON";
  options.max_bytes = 64 * 1024 * 1024;
  options.max_depth = 128;
  Result<nlohmann::json> parsed = jitbroker::json::ParseStrict(text, options);
  if (!parsed) {
    if (parsed.error().Reason() == "invalid_json") {
      return std::unexpected("invalid JSON");
    }
    return std::unexpected(SanitizeForTerminal(parsed.error().message));
  }
  return std::move(*parsed);
}

// Human text of a JSON value: strings as they are, other scalars dumped,
// containers as compact JSON; always terminal-safe. Absent/null = "".
inline std::string JsonText(const nlohmann::json& v) {
  if (v.is_null() || v.is_discarded()) {
    return "";
  }
  if (v.is_string()) {
    return SanitizeForTerminal(v.get_ref<const std::string&>());
  }
  try {
    return SanitizeForTerminal(v.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace));
  } catch (...) {
    return "?";
  }
}

// JsonText of obj[key], "" when obj is not an object or has no such key.
inline std::string Field(const nlohmann::json& obj, std::string_view key) {
  if (!obj.is_object()) {
    return "";
  }
  auto it = obj.find(key);
  return it == obj.end() ? std::string() : JsonText(*it);
}

// obj[key] when it is an object or array, else a null json.
inline const nlohmann::json& Member(const nlohmann::json& obj, std::string_view key) {
  static const nlohmann::json kNull;
  if (!obj.is_object()) {
    return kNull;
  }
  auto it = obj.find(key);
  return it == obj.end() ? kNull : *it;
}

// The raw (unsanitised) string obj[key], when it is a string.
inline std::optional<std::string> RawString(const nlohmann::json& obj, std::string_view key) {
  const nlohmann::json& v = Member(obj, key);
  if (!v.is_string()) {
    return std::nullopt;
  }
  return v.get<std::string>();
}

// ---------------------------------------------------------------------------
// Request bodies (usage problems are returned as the hint text)

inline std::expected<int64_t, std::string> PositiveSecondsFlag(const ParsedArgs& args,
                                                               std::string_view flag) {
  const std::optional<std::string> text = args.Get(flag);
  const std::optional<int64_t> v = text ? ParseInt64(*text, 1, 365LL * 24 * 3600) : std::nullopt;
  if (!v) {
    return std::unexpected("flag --" + std::string(flag) + " needs a positive number of seconds");
  }
  return *v;
}

inline std::expected<nlohmann::json, std::string> JsonObjectFlag(const ParsedArgs& args,
                                                                 std::string_view flag) {
  auto parsed = ParseJsonStrict(*args.Get(flag));
  if (!parsed) {
    return std::unexpected("flag --" + std::string(flag) + ": " + parsed.error());
  }
  if (!parsed->is_object()) {
    return std::unexpected("flag --" + std::string(flag) + " must be a JSON object");
  }
  return std::move(*parsed);
}

// The `budget` of POST /v1/sessions from the --max-… flags of `sessions
// open` (an empty object when none is given). The broker checks the bounds.
inline std::expected<nlohmann::json, std::string> BuildSessionBudget(const ParsedArgs& args) {
  constexpr int64_t kMax = int64_t{100} * 365 * 86400;
  nlohmann::json budget = nlohmann::json::object();
  for (std::string_view flag :
       {"max-grants", "max-resources", "max-live-credentials", "max-credential-seconds"}) {
    const std::optional<std::string> text = args.Get(flag);
    if (!text) {
      continue;
    }
    const std::optional<int64_t> v = ParseInt64(*text, 1, kMax);
    if (!v) {
      return std::unexpected("flag --" + std::string(flag) + " needs a positive integer");
    }
    std::string key(flag);
    std::replace(key.begin(), key.end(), '-', '_');
    budget[key] = *v;
  }
  for (const std::string& item : args.All("max-grants-per-tier")) {
    const size_t eq = item.find('=');
    const std::string tier = item.substr(0, eq);
    const std::optional<int64_t> v =
        eq == std::string::npos ? std::nullopt : ParseInt64(item.substr(eq + 1), 1, kMax);
    if (!IsKnownTier(tier) || !v) {
      return std::unexpected(
          "flag --max-grants-per-tier needs TIER=N (TIER one of read, write, pr, merge_deploy, "
          "secret, destructive; N a positive integer)");
    }
    budget["max_grants_per_tier"][tier] = *v;
  }
  return budget;
}

// `sessions show`: one line per budget limit, "used of limit" (or "used,
// no limit"), from a session's `budget` {limits, used}.
inline std::string FormatBudget(const nlohmann::json& budget) {
  if (!budget.is_object()) {
    return "";
  }
  const nlohmann::json empty = nlohmann::json::object();
  const nlohmann::json& limits =
      budget.contains("limits") && budget["limits"].is_object() ? budget["limits"] : empty;
  const nlohmann::json& used =
      budget.contains("used") && budget["used"].is_object() ? budget["used"] : empty;
  auto number = [](const nlohmann::json& j, std::string_view key) -> std::string {
    auto it = j.find(std::string(key));
    return it != j.end() && it->is_number_integer() ? std::to_string(it->get<int64_t>())
                                                    : std::string();
  };
  auto line = [](std::string_view name, const std::string& u, const std::string& limit) {
    return "  " + std::string(name) + ": " + (u.empty() ? "0" : u) +
           (limit.empty() ? " (no limit)" : " of " + limit) + "\n";
  };
  std::string out;
  out += line("grants", number(used, "grants"), number(limits, "max_grants"));
  out += line("resources", number(used, "resources"), number(limits, "max_resources"));
  const nlohmann::json& used_tiers =
      used.contains("grants_per_tier") ? used["grants_per_tier"] : empty;
  const nlohmann::json& tier_limits =
      limits.contains("max_grants_per_tier") ? limits["max_grants_per_tier"] : empty;
  for (std::string_view tier : kTiers) {
    const std::string u = used_tiers.is_object() ? number(used_tiers, tier) : "";
    const std::string l = tier_limits.is_object() ? number(tier_limits, tier) : "";
    if (!u.empty() || !l.empty()) {
      out += line("grants." + std::string(tier), u, l);
    }
  }
  out += line("live_credentials", number(used, "live_credentials"),
              number(limits, "max_live_credentials"));
  out += line("credential_seconds", number(used, "credential_seconds"),
              number(limits, "max_credential_seconds"));
  return out;
}

// POST /v1/sessions body from `sessions open` flags.
inline std::expected<nlohmann::json, std::string> BuildSessionOpenBody(const ParsedArgs& args) {
  nlohmann::json body = nlohmann::json::object();
  body["agent"] = {{"id", args.Get("agent").value_or("")}};
  nlohmann::json task = nlohmann::json::object();
  task["id"] = args.Get("task").value_or("");
  if (auto d = args.Get("description")) {
    task["description"] = *d;
  }
  const bool piecewise = args.Has("resource") || args.Has("branch") || args.Has("environment") ||
                         args.Has("max-tier") || args.Has("issuer");
  if (args.Has("scope-json")) {
    if (piecewise) {
      return std::unexpected(
          "--scope-json cannot be combined with --resource/--branch/--environment/--max-tier/"
          "--issuer");
    }
    auto scope = JsonObjectFlag(args, "scope-json");
    if (!scope) {
      return std::unexpected(scope.error());
    }
    task["scope"] = std::move(*scope);
  } else {
    if (!args.Has("resource")) {
      return std::unexpected("a task scope needs --scope-json or at least one --resource");
    }
    nlohmann::json scope = nlohmann::json::object();
    scope["resources"] = args.All("resource");
    if (args.Has("branch")) {
      scope["branches"] = args.All("branch");
    }
    if (args.Has("environment")) {
      scope["environments"] = args.All("environment");
    }
    if (auto tier = args.Get("max-tier")) {
      if (!IsKnownTier(*tier)) {
        return std::unexpected(
            "flag --max-tier must be one of read, write, pr, merge_deploy, secret, destructive");
      }
      scope["max_tier"] = *tier;
    }
    if (args.Has("issuer")) {
      scope["issuers"] = args.All("issuer");
    }
    task["scope"] = std::move(scope);
  }
  body["task"] = std::move(task);
  if (args.Has("ttl")) {
    auto ttl = PositiveSecondsFlag(args, "ttl");
    if (!ttl) {
      return std::unexpected(ttl.error());
    }
    body["ttl_seconds"] = *ttl;
  }
  if (args.Has("heartbeat")) {
    auto hb = PositiveSecondsFlag(args, "heartbeat");
    if (!hb) {
      return std::unexpected(hb.error());
    }
    body["heartbeat_seconds"] = *hb;
  }
  auto budget = BuildSessionBudget(args);
  if (!budget) {
    return std::unexpected(budget.error());
  }
  if (!budget->empty()) {
    body["budget"] = std::move(*budget);
  }
  return body;
}

// POST /v1/sessions/{id}/grants body from `grant request` flags.
inline std::expected<nlohmann::json, std::string> BuildGrantRequestBody(const ParsedArgs& args) {
  nlohmann::json body = nlohmann::json::object();
  for (std::string_view key : {"tool", "operation", "resource", "issuer"}) {
    body[std::string(key)] = args.Get(key).value_or("");
  }
  nlohmann::json params = nlohmann::json::object();
  for (const std::string& kv : args.All("param")) {
    const size_t eq = kv.find('=');
    if (eq == std::string::npos || eq == 0) {
      return std::unexpected("flag --param needs KEY=VALUE, got '" + SanitizeForTerminal(kv) + "'");
    }
    std::string key = kv.substr(0, eq);
    if (params.contains(key)) {
      return std::unexpected("flag --param: duplicate key '" + SanitizeForTerminal(key) + "'");
    }
    params[key] = kv.substr(eq + 1);
  }
  body["parameters"] = std::move(params);
  if (args.Has("scope-json")) {
    auto scope = JsonObjectFlag(args, "scope-json");
    if (!scope) {
      return std::unexpected(scope.error());
    }
    body["scope"] = std::move(*scope);
  }
  if (args.Has("ttl")) {
    auto ttl = PositiveSecondsFlag(args, "ttl");
    if (!ttl) {
      return std::unexpected(ttl.error());
    }
    body["ttl_seconds"] = *ttl;
  }
  if (auto j = args.Get("justification")) {
    body["justification"] = *j;
  }
  return body;
}

// ---------------------------------------------------------------------------
// Responses

struct Problem {
  int status = 0;
  std::string title;
  std::string code;
  std::string detail;
  std::string request_id;
};

// Reads an RFC 9457 problem (or any error body) into terminal-safe fields.
// Bodies that are not JSON objects get a generic title and code.
inline Problem ParseProblem(int status, std::string_view body) {
  Problem p;
  p.status = status;
  auto j = ParseJsonStrict(body);
  if (j && j->is_object()) {
    p.title = Field(*j, "title");
    p.code = Field(*j, "code");
    p.detail = Field(*j, "detail");
    p.request_id = Field(*j, "request_id");
  }
  if (p.title.empty()) {
    p.title = "HTTP " + std::to_string(status);
  }
  if (p.code.empty()) {
    p.code = j && j->is_object() ? "http_" + std::to_string(status) : "unexpected_response";
  }
  return p;
}

// "error: <title> (<code>): <detail>"
inline std::string FormatProblemLine(const Problem& p) {
  std::string out = "error: " + p.title + " (" + p.code + ")";
  if (!p.detail.empty()) {
    out += ": " + p.detail;
  }
  return out;
}

// The decision of a denied or pending grant, one "key: value" per line.
inline std::string FormatDecision(const nlohmann::json& decision) {
  std::string out;
  for (std::string_view key :
       {"result", "tier", "code", "reason", "matched_rule", "policy_version"}) {
    std::string value = Field(decision, key);
    if (value.empty()) {
      value = "-";
    }
    out += "  ";
    out += key;
    out += ": ";
    out += value;
    out += "\n";
  }
  return out;
}

// ---------------------------------------------------------------------------
// Approvals (what a human approves must be shown exactly)

// Text of a value an approver decides on: printable-ASCII strings as they are;
// any other string, and containers, as JSON with every non-ASCII character
// escaped, so whitespace, control characters and look-alike letters are
// visible. Absent/null = "".
inline std::string DisplayText(const nlohmann::json& v) {
  if (v.is_null() || v.is_discarded()) {
    return "";
  }
  if (v.is_string()) {
    const std::string& s = v.get_ref<const std::string&>();
    bool plain = !s.empty() && s.front() != ' ' && s.back() != ' ' && s.front() != '"';
    for (char c : s) {
      const auto u = static_cast<unsigned char>(c);
      plain = plain && u >= 0x20 && u < 0x7f;
    }
    if (plain) {
      return s;
    }
  }
  try {
    return v.dump(-1, ' ', /*ensure_ascii=*/true, nlohmann::json::error_handler_t::replace);
  } catch (...) {
    return "?";
  }
}

// DisplayText of obj[key], "" when absent.
inline std::string DisplayField(const nlohmann::json& obj, std::string_view key) {
  if (!obj.is_object()) {
    return "";
  }
  auto it = obj.find(key);
  return it == obj.end() ? std::string() : DisplayText(*it);
}

// POST /v1/approvals/{id} body; `decision` is "approve" or "deny".
inline nlohmann::json BuildApprovalDecisionBody(std::string_view decision,
                                                std::string_view request_digest,
                                                const std::optional<std::string>& comment) {
  nlohmann::json body = {{"decision", std::string(decision)},
                         {"request_digest", std::string(request_digest)}};
  if (comment) {
    body["comment"] = *comment;
  }
  return body;
}

// One row of `approvals list`: APPROVAL_ID, TIER, PRINCIPAL, AGENT, TOOL,
// RESOURCE, EXPIRES_AT.
inline std::vector<std::string> ApprovalListRow(const nlohmann::json& a) {
  const nlohmann::json& request = Member(a, "request");
  return {Field(a, "approval_id"),       Field(a, "tier"),
          Field(a, "human_principal"),   Field(Member(a, "agent"), "id"),
          DisplayField(request, "tool"), DisplayField(request, "resource"),
          Field(a, "expires_at")};
}

namespace internal {

inline void AppendLine(std::string* out, std::string_view indent, std::string_view key,
                       const std::string& value) {
  *out += indent;
  *out += key;
  *out += ": ";
  *out += value.empty() ? "-" : value;
  *out += "\n";
}

// "  key: value" for every member of an object, in the object's order.
inline void AppendMembers(std::string* out, std::string_view indent, const nlohmann::json& obj) {
  if (!obj.is_object()) {
    return;
  }
  for (auto it = obj.begin(); it != obj.end(); ++it) {
    AppendLine(out, indent, SanitizeForTerminal(it.key()), DisplayText(it.value()));
  }
}

// The request part of an approval, every field.
inline void AppendApprovalRequest(std::string* out, std::string_view indent,
                                  const nlohmann::json& request) {
  for (std::string_view key : {"tool", "operation", "resource", "issuer"}) {
    AppendLine(out, indent, key, DisplayField(request, key));
  }
  const nlohmann::json& params = Member(request, "parameters");
  if (params.is_object() && !params.empty()) {
    *out += std::string(indent) + "parameters:\n";
    AppendMembers(out, std::string(indent) + "  ", params);
  } else {
    AppendLine(out, indent, "parameters", "{}");
  }
  const nlohmann::json& scope = Member(request, "scope");
  AppendLine(out, indent, "scope",
             scope.is_object() && !scope.empty() ? DisplayText(scope) : std::string("{}"));
  AppendLine(out, indent, "ttl_seconds", Field(request, "ttl_seconds"));
  AppendLine(out, indent, "justification", DisplayField(request, "justification"));
}

}  // namespace internal

// `approvals show`: every field of the approval and the context it was
// requested in; absent values as "-".
inline std::string FormatApproval(const nlohmann::json& a) {
  using internal::AppendLine;
  std::string out;
  for (std::string_view key : {"approval_id", "grant_id", "state", "tier", "human_principal"}) {
    AppendLine(&out, "", key, Field(a, key));
  }
  const nlohmann::json& agent = Member(a, "agent");
  out += "agent:\n";
  for (std::string_view key : {"id", "session_id", "task_id"}) {
    AppendLine(&out, "  ", key, Field(agent, key));
  }
  AppendLine(&out, "", "session_state", Field(a, "session_state"));
  const nlohmann::json& task = Member(a, "task");
  out += "task:\n";
  AppendLine(&out, "  ", "id", Field(task, "id"));
  AppendLine(&out, "  ", "description", DisplayField(task, "description"));
  AppendLine(&out, "  ", "scope", DisplayField(task, "scope"));
  out += "request:\n";
  internal::AppendApprovalRequest(&out, "  ", Member(a, "request"));
  const nlohmann::json& decision = Member(a, "decision");
  out += "decision:\n";
  for (std::string_view key :
       {"result", "tier", "code", "reason", "matched_rule", "policy_version"}) {
    AppendLine(&out, "  ", key, Field(decision, key));
  }
  AppendLine(&out, "", "four_eyes", Field(a, "four_eyes"));
  if (Member(a, "self_approval").is_string()) {  // brokers since issue #10
    AppendLine(&out, "", "self_approval", Field(a, "self_approval"));
  }
  AppendLine(&out, "", "approvers", Field(a, "approvers"));
  AppendLine(&out, "", "created_at", Field(a, "created_at"));
  AppendLine(&out, "", "expires_at", Field(a, "expires_at"));
  AppendLine(&out, "", "request_digest", Field(a, "request_digest"));
  const nlohmann::json& decided = Member(a, "decided");
  if (decided.is_object()) {
    out += "decided:\n";
    for (std::string_view key : {"decision", "approver", "comment", "decided_at"}) {
      AppendLine(&out, "  ", key, DisplayField(decided, key));
    }
    if (!Member(decided, "break_glass").is_null()) {
      AppendLine(&out, "  ", "break_glass", Field(decided, "break_glass"));
    }
  }
  return out;
}

// What `approvals approve|deny` shows before it decides: the request the
// decision is bound to, and its digest.
inline std::string FormatApprovalPreview(std::string_view decision, const nlohmann::json& a) {
  using internal::AppendLine;
  std::string out = std::string(decision == "approve" ? "approving" : "denying") + " " +
                    Field(a, "approval_id") + "\n";
  AppendLine(&out, "  ", "state", Field(a, "state"));
  AppendLine(&out, "  ", "tier", Field(a, "tier"));
  AppendLine(&out, "  ", "human_principal", Field(a, "human_principal"));
  AppendLine(&out, "  ", "agent", Field(Member(a, "agent"), "id"));
  internal::AppendApprovalRequest(&out, "  ", Member(a, "request"));
  AppendLine(&out, "  ", "request_digest", Field(a, "request_digest"));
  return out;
}

// The human decision a grant carries back (grant.approval): decision,
// approver, comment, decided_at; "" when nobody decided.
inline std::string FormatApprovalOutcome(const nlohmann::json& grant) {
  const nlohmann::json& approval = Member(grant, "approval");
  if (!approval.is_object() || !approval.contains("decision")) {
    return "";
  }
  std::string out = "approval:\n";
  for (std::string_view key : {"decision", "approver", "comment", "decided_at"}) {
    internal::AppendLine(&out, "  ", key, DisplayField(approval, key));
  }
  return out;
}

// "export JITBROKER_SESSION_ID='…'\nexport JITBROKER_SESSION_TOKEN='…'\n"
inline std::string FormatExportLines(std::string_view session_id, std::string_view token) {
  return "export JITBROKER_SESSION_ID=" + ShellQuote(session_id) +
         "\nexport JITBROKER_SESSION_TOKEN=" + ShellQuote(token) + "\n";
}

}  // namespace jitbroker::cli
