// Unit tests of jitctl's header-only helpers (cli/args.h, cli/format.h) and of
// the HTTP client it uses (broker/net/http_client.h), the latter against a
// loopback server.

#include <atomic>
#include <chrono>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <tuple>
#include <vector>

#include <doctest/doctest.h>
#include <httplib.h>
#include <nlohmann/json.hpp>

#include "broker/net/http_client.h"
#include "cli/args.h"
#include "cli/format.h"

namespace jitbroker::cli {
namespace {

using nlohmann::json;

ParseResult Parse(std::vector<std::string> argv) { return ParseCommandLine(argv); }

// Parses a valid command line (REQUIREs success).
Invocation ParseOk(std::vector<std::string> argv) {
  ParseResult r = ParseCommandLine(argv);
  if (!r) {
    FAIL("unexpected usage error: " << r.error().message);
  }
  return std::move(*r);
}

TEST_CASE("jitctl args: accepts valid command lines") {
  SUBCASE("both --flag value and --flag=value, repeated list flags") {
    Invocation inv = ParseOk({"sessions", "open", "--agent", "a1", "--task=t1", "--resource",
                              "github://acme/x", "--resource=jwt://mcp", "--export"});
    REQUIRE(inv.command != nullptr);
    CHECK(inv.command->name == "sessions open");
    CHECK(inv.args.Get("agent") == "a1");
    CHECK(inv.args.Get("task") == "t1");
    CHECK(inv.args.All("resource") == std::vector<std::string>{"github://acme/x", "jwt://mcp"});
    CHECK(inv.args.Switch("export"));
    CHECK_FALSE(inv.help);
  }
  SUBCASE("global flags before and after the command words") {
    Invocation inv =
        ParseOk({"--url", "http://h:1", "sessions", "list", "--json", "--state", "active"});
    CHECK(inv.command->name == "sessions list");
    CHECK(inv.args.Get("url") == "http://h:1");
    CHECK(inv.args.Switch("json"));
    CHECK(inv.args.Get("state") == "active");
  }
  SUBCASE("positional arguments, '-' and arguments after --") {
    CHECK(ParseOk({"sessions", "show", "ses_1"}).args.args == std::vector<std::string>{"ses_1"});
    CHECK(ParseOk({"introspect", "-"}).args.args == std::vector<std::string>{"-"});
    CHECK(ParseOk({"introspect", "--", "--odd"}).args.args == std::vector<std::string>{"--odd"});
  }
  SUBCASE("a value may start with '-' or be given inline when it starts with --") {
    CHECK(ParseOk({"heartbeat", "--progress", "-5%"}).args.Get("progress") == "-5%");
    CHECK(ParseOk({"heartbeat", "--progress=--x"}).args.Get("progress") == "--x");
    CHECK(ParseOk({"heartbeat", "--progress=a=b"}).args.Get("progress") == "a=b");
  }
  SUBCASE("single-word commands") {
    for (const char* word : {"heartbeat", "complete", "jwks", "version"}) {
      CAPTURE(word);
      CHECK(ParseOk({word}).command->name == word);
    }
  }
}

TEST_CASE("jitctl args: help forms") {
  struct Row {
    std::vector<std::string> argv;
    std::string command;  // "" = general or group help
    std::string group;
  };
  const Row rows[] = {
      {{"--help"}, "", ""},
      {{"-h"}, "", ""},
      {{"help"}, "", ""},
      {{"help", "sessions", "open"}, "sessions open", ""},
      {{"help", "jwks"}, "jwks", ""},
      {{"help", "grant"}, "", "grant"},
      {{"sessions", "--help"}, "", "sessions"},
      {{"grant", "request", "--help"}, "grant request", ""},
      // --help wins over problems elsewhere on the line
      {{"sessions", "open", "--bogus", "-h"}, "sessions open", ""},
  };
  for (const Row& row : rows) {
    CAPTURE(row.argv.size());
    CAPTURE(row.argv.back());
    Invocation inv = ParseOk(row.argv);
    CHECK(inv.help);
    CHECK((inv.command == nullptr ? std::string() : std::string(inv.command->name)) == row.command);
    CHECK(inv.help_group == row.group);
  }
  CHECK(GeneralHelp().find("sessions open") != std::string::npos);
  CHECK(GroupHelp("grant").find("usage: jitctl grant revoke ID") != std::string::npos);
  CHECK(CommandHelp(*FindCommand("grant request")).find("--token-only") != std::string::npos);
}

TEST_CASE("jitctl args: rejects bad command lines with a hint") {
  struct Row {
    std::vector<std::string> argv;
    std::string hint;      // substring of the message
    std::string usage_of;  // command whose usage is printed ("" = none)
  };
  const Row rows[] = {
      {{}, "missing command", ""},
      {{"frobnicate"}, "unknown command 'frobnicate'", ""},
      {{"sessions"}, "missing subcommand for 'sessions'", ""},
      {{"sessions", "frob"}, "unknown subcommand 'sessions frob'", ""},
      {{"--bogus", "jwks"}, "unknown flag '--bogus'", ""},
      {{"jwks", "--bogus"}, "unknown flag '--bogus'", "jwks"},
      {{"jwks", "-x"}, "unknown flag '-x'", "jwks"},
      {{"--json=yes", "jwks"}, "--json takes no value", ""},
      {{"sessions", "open", "--agent"}, "--agent needs a value", "sessions open"},
      {{"sessions", "open", "--agent", "--task", "t"}, "--agent needs a value", "sessions open"},
      {{"sessions", "open", "--agent="}, "--agent needs a non-empty value", "sessions open"},
      {{"sessions", "open", "--agent", "a"}, "missing required flag --task", "sessions open"},
      {{"sessions", "list", "--state", "a", "--state=b"},
       "--state given more than once",
       "sessions list"},
      {{"sessions", "show"}, "missing argument ID", "sessions show"},
      {{"sessions", "show", "a", "b"}, "unexpected argument 'b'", "sessions show"},
      {{"sessions", "revoke", "ses_1"}, "missing required flag --reason", "sessions revoke"},
      {{"grant", "request", "--tool", "t"}, "missing required flag --operation", "grant request"},
      {{"version", "extra"}, "unexpected argument 'extra'", "version"},
      {{"help", "nope"}, "unknown command 'nope'", ""},
      {{"--url"}, "--url needs a value", ""},
  };
  for (const Row& row : rows) {
    CAPTURE(row.hint);
    ParseResult r = Parse(row.argv);
    REQUIRE_FALSE(r.has_value());
    CHECK(r.error().message.find(row.hint) != std::string::npos);
    CHECK((r.error().command == nullptr ? std::string() : std::string(r.error().command->name)) ==
          row.usage_of);
  }
}

TEST_CASE("jitctl args: every command has a usage line and unique flags") {
  for (const CommandSpec& c : Commands()) {
    CAPTURE(c.name);
    CHECK(UsageLine(c).starts_with("usage: jitctl " + std::string(c.name)));
    CHECK(c.min_args <= c.max_args);
    for (const FlagSpec& f : c.flags) {
      for (const FlagSpec& g : GlobalFlags()) {
        CHECK(f.name != g.name);
      }
    }
  }
}

TEST_CASE("jitctl args: ParseInt64 is strict") {
  struct Row {
    const char* text;
    std::optional<int64_t> want;
  };
  const Row rows[] = {{"0", 0},
                      {"42", 42},
                      {"3600", 3600},
                      {"", std::nullopt},
                      {"+1", std::nullopt},
                      {" 1", std::nullopt},
                      {"1s", std::nullopt},
                      {"-1", std::nullopt},
                      {"3601", std::nullopt},
                      {"99999999999999999999", std::nullopt},
                      {"0x10", std::nullopt}};
  for (const Row& row : rows) {
    CAPTURE(row.text);
    CHECK(ParseInt64(row.text, 0, 3600) == row.want);
  }
  CHECK(ParseInt64("-5", -10, 10) == -5);
}

TEST_CASE("jitctl format: URL and form encoding") {
  CHECK(PercentEncode("aZ09-._~") == "aZ09-._~");
  CHECK(PercentEncode("a b/c?d&e=f") == "a%20b%2Fc%3Fd%26e%3Df");
  CHECK(PercentEncode("a b+c", /*form=*/true) == "a+b%2Bc");
  CHECK(PercentEncode("\xc3\xa9") == "%C3%A9");
  CHECK(PathSegment("../admin/reload") == "..%2Fadmin%2Freload");
  CHECK(QueryString({}) == "");
  CHECK(QueryString({{"state", ""}, {"agent", ""}}) == "");
  CHECK(QueryString({{"state", "active"}, {"agent", ""}, {"limit", "5"}}) ==
        "?state=active&limit=5");
  CHECK(QueryString({{"session_id", "a&b=c"}}) == "?session_id=a%26b%3Dc");
}

TEST_CASE("jitctl format: NormalizeBaseUrl") {
  struct Row {
    const char* in;
    const char* want;  // nullptr = rejected
  };
  const Row rows[] = {
      {"http://127.0.0.1:8443", "http://127.0.0.1:8443"},
      {"http://127.0.0.1:8443/", "http://127.0.0.1:8443"},
      {"https://broker.example///", "https://broker.example"},
      {"https://h/prefix/", "https://h/prefix"},
      {"ftp://h", nullptr},
      {"127.0.0.1:8443", nullptr},
      {"http://", nullptr},
      {"http:///path", nullptr},
      {"http://user:pw@h", nullptr},
      {"http://h/?x=1", nullptr},
      {"http://h/#f", nullptr},
      {"http://h /x", nullptr},
      {"http://h/\r\nX: y", nullptr},
  };
  for (const Row& row : rows) {
    CAPTURE(row.in);
    auto r = NormalizeBaseUrl(row.in);
    if (row.want == nullptr) {
      CHECK_FALSE(r.has_value());
    } else {
      REQUIRE(r.has_value());
      CHECK(*r == row.want);
    }
  }
}

TEST_CASE("jitctl format: shell quoting and terminal sanitising") {
  CHECK(ShellQuote("jbs_abc") == "'jbs_abc'");
  CHECK(ShellQuote("a'b") == "'a'\\''b'");
  CHECK(ShellQuote("$(rm -rf /)") == "'$(rm -rf /)'");
  CHECK(FormatExportLines("ses_1", "jbs_x") ==
        "export JITBROKER_SESSION_ID='ses_1'\nexport JITBROKER_SESSION_TOKEN='jbs_x'\n");
  CHECK(SanitizeForTerminal("plain text") == "plain text");
  CHECK(SanitizeForTerminal("a\x1b[2Jb") == "a?[2Jb");
  CHECK(SanitizeForTerminal("x\ry\nz\x7f") == "x?y?z?");
  CHECK(SanitizeForTerminal("\xc2\x9b"
                            "31m") == "?31m");                 // C1 CSI
  CHECK(SanitizeForTerminal("caf\xc3\xa9") == "caf\xc3\xa9");  // ordinary UTF-8 kept
}

TEST_CASE("jitctl format: ParseJsonStrict") {
  CHECK(ParseJsonStrict(R"({"a":1,"b":{"c":[1,2]}})").has_value());
  CHECK(ParseJsonStrict("[]").has_value());
  SUBCASE("duplicate keys are rejected at any depth") {
    auto top = ParseJsonStrict(R"({"a":1,"a":2})");
    REQUIRE_FALSE(top.has_value());
    CHECK(top.error().find("duplicate key \"a\"") != std::string::npos);
    CHECK_FALSE(ParseJsonStrict(R"({"x":{"k":1,"k":1}})").has_value());
    CHECK_FALSE(ParseJsonStrict(R"([{"k":1},{"k":2,"k":3}])").has_value());
  }
  SUBCASE("the same key in sibling objects is fine") {
    CHECK(ParseJsonStrict(R"({"x":{"k":1},"y":{"k":2}})").has_value());
    CHECK(ParseJsonStrict(R"([{"k":1},{"k":2}])").has_value());
  }
  SUBCASE("invalid JSON does not throw") {
    for (const char* bad : {"", "{", "{\"a\":}", "nul", "{\"a\":1}x", "\xff"}) {
      CAPTURE(bad);
      CHECK_FALSE(ParseJsonStrict(bad).has_value());
    }
  }
  CHECK_FALSE(SafeDump(json("\xff\xfe")).has_value());
  CHECK(SafeDump(json{{"a", 1}}) == R"({"a":1})");
}

TEST_CASE("jitctl format: sessions open body") {
  SUBCASE("piecewise scope") {
    Invocation inv =
        ParseOk({"sessions", "open",          "--agent",     "a1",         "--task",
                 "t1",       "--description", "fix it",      "--resource", "github://acme/x",
                 "--branch", "fix/*",         "--branch",    "feat/*",     "--environment",
                 "dev",      "--max-tier",    "pr",          "--issuer",   "github",
                 "--ttl",    "600",           "--heartbeat", "30"});
    auto body = BuildSessionOpenBody(inv.args);
    REQUIRE(body.has_value());
    CHECK(*body == json::parse(R"({
      "agent": {"id": "a1"},
      "task": {"id": "t1", "description": "fix it",
               "scope": {"resources": ["github://acme/x"], "branches": ["fix/*", "feat/*"],
                         "environments": ["dev"], "max_tier": "pr", "issuers": ["github"]}},
      "ttl_seconds": 600, "heartbeat_seconds": 30})"));
  }
  SUBCASE("scope as JSON, optional fields absent") {
    Invocation inv = ParseOk({"sessions", "open", "--agent", "a", "--task", "t", "--scope-json",
                              R"({"resources":["jwt://x"],"max_tier":"read"})"});
    auto body = BuildSessionOpenBody(inv.args);
    REQUIRE(body.has_value());
    CHECK((*body)["task"]["scope"] ==
          json::parse(R"({"resources":["jwt://x"],"max_tier":"read"})"));
    CHECK_FALSE(body->contains("ttl_seconds"));
    CHECK_FALSE((*body)["task"].contains("description"));
  }
  SUBCASE("usage problems") {
    struct Row {
      std::vector<std::string> extra;
      const char* hint;
    };
    const Row rows[] = {
        {{}, "at least one --resource"},
        {{"--scope-json", "{}", "--resource", "x"}, "cannot be combined"},
        {{"--scope-json", "[1]"}, "must be a JSON object"},
        {{"--scope-json", "{\"a\":1,\"a\":1}"}, "duplicate key"},
        {{"--scope-json", "{"}, "invalid JSON"},
        {{"--resource", "x", "--max-tier", "admin"}, "--max-tier must be one of"},
        {{"--resource", "x", "--ttl", "0"}, "--ttl needs a positive number"},
        {{"--resource", "x", "--heartbeat", "1m"}, "--heartbeat needs a positive number"},
    };
    for (const Row& row : rows) {
      CAPTURE(row.hint);
      std::vector<std::string> argv = {"sessions", "open", "--agent", "a", "--task", "t"};
      argv.insert(argv.end(), row.extra.begin(), row.extra.end());
      Invocation inv = ParseOk(argv);
      auto body = BuildSessionOpenBody(inv.args);
      REQUIRE_FALSE(body.has_value());
      CHECK(body.error().find(row.hint) != std::string::npos);
    }
  }
}

TEST_CASE("jitctl format: grant request body") {
  std::vector<std::string> base = {"grant", "request",    "--tool",    "mcp.search", "--operation",
                                   "read",  "--resource", "jwt://mcp", "--issuer",   "internal"};
  SUBCASE("minimal") {
    auto body = BuildGrantRequestBody(ParseOk(base).args);
    REQUIRE(body.has_value());
    CHECK(*body == json::parse(R"({"tool":"mcp.search","operation":"read","resource":"jwt://mcp",
                                  "issuer":"internal","parameters":{}})"));
  }
  SUBCASE("all fields") {
    std::vector<std::string> argv = base;
    for (const char* a : {"--param", "pr=842", "--param", "msg=a=b", "--scope-json",
                          R"({"audience":"mcp"})", "--ttl", "300", "--justification", "why"}) {
      argv.emplace_back(a);
    }
    auto body = BuildGrantRequestBody(ParseOk(argv).args);
    REQUIRE(body.has_value());
    CHECK((*body)["parameters"] == json::parse(R"({"pr":"842","msg":"a=b"})"));
    CHECK((*body)["scope"] == json::parse(R"({"audience":"mcp"})"));
    CHECK((*body)["ttl_seconds"] == 300);
    CHECK((*body)["justification"] == "why");
  }
  SUBCASE("usage problems") {
    for (auto [flag, value, hint] : {std::tuple{"--param", "novalue", "needs KEY=VALUE"},
                                     std::tuple{"--param", "=v", "needs KEY=VALUE"},
                                     std::tuple{"--scope-json", "\"s\"", "must be a JSON object"},
                                     std::tuple{"--ttl", "-5", "positive number"}}) {
      CAPTURE(hint);
      std::vector<std::string> argv = base;
      argv.emplace_back(flag);
      argv.emplace_back(value);
      auto body = BuildGrantRequestBody(ParseOk(argv).args);
      REQUIRE_FALSE(body.has_value());
      CHECK(body.error().find(hint) != std::string::npos);
    }
    std::vector<std::string> dup = base;
    for (const char* a : {"--param", "k=1", "--param", "k=2"}) {
      dup.emplace_back(a);
    }
    auto body = BuildGrantRequestBody(ParseOk(dup).args);
    REQUIRE_FALSE(body.has_value());
    CHECK(body.error().find("duplicate key 'k'") != std::string::npos);
  }
}

TEST_CASE("jitctl format: problems and decisions") {
  SUBCASE("an RFC 9457 problem") {
    Problem p = ParseProblem(401, R"({"type":"about:blank","title":"Unauthenticated","status":401,
                 "detail":"bad key","code":"unauthenticated","request_id":"req_1"})");
    CHECK(FormatProblemLine(p) == "error: Unauthenticated (unauthenticated): bad key");
    CHECK(p.request_id == "req_1");
  }
  SUBCASE("without detail") {
    Problem p = ParseProblem(404, R"({"title":"Not found","code":"not_found"})");
    CHECK(FormatProblemLine(p) == "error: Not found (not_found)");
  }
  SUBCASE("not JSON") {
    Problem p = ParseProblem(502, "<html>bad gateway</html>");
    CHECK(FormatProblemLine(p) == "error: HTTP 502 (unexpected_response)");
  }
  SUBCASE("JSON without title or code") {
    CHECK(FormatProblemLine(ParseProblem(500, "{}")) == "error: HTTP 500 (http_500)");
  }
  SUBCASE("hostile text cannot reach the terminal raw") {
    Problem p = ParseProblem(400, R"({"title":"T\u001b[2J","code":"c","detail":"d\r\n"})");
    CHECK(FormatProblemLine(p) == "error: T?[2J (c): d??");
  }
  SUBCASE("decision lines, missing fields as '-'") {
    json d = {{"result", "deny"},
              {"tier", "merge_deploy"},
              {"reason", "not in scope"},
              {"matched_rule", "tiers.merge_deploy"},
              {"policy_version", "v1"}};
    CHECK(FormatDecision(d) ==
          "  result: deny\n  tier: merge_deploy\n  code: -\n  reason: not in scope\n"
          "  matched_rule: tiers.merge_deploy\n  policy_version: v1\n");
  }
  SUBCASE("field helpers") {
    json j = {{"s", "x"}, {"n", 3}, {"b", true}, {"a", {1, 2}}, {"z", nullptr}};
    CHECK(Field(j, "s") == "x");
    CHECK(Field(j, "n") == "3");
    CHECK(Field(j, "b") == "true");
    CHECK(Field(j, "a") == "[1,2]");
    CHECK(Field(j, "z") == "");
    CHECK(Field(j, "missing") == "");
    CHECK(Field(json::array(), "s") == "");
    CHECK(RawString(j, "s") == "x");
    CHECK_FALSE(RawString(j, "n").has_value());
  }
}

TEST_CASE("jitctl args: approvals and grant wait command lines") {
  SUBCASE("approvals list/show/approve/deny") {
    CHECK(ParseOk({"approvals", "list"}).command->name == "approvals list");
    Invocation show = ParseOk({"approvals", "show", "apr_1"});
    CHECK(show.command->name == "approvals show");
    CHECK(show.args.args == std::vector<std::string>{"apr_1"});
    Invocation approve =
        ParseOk({"approvals", "approve", "apr_1", "--comment", "ok, ship it", "--digest=ab12"});
    CHECK(approve.command->name == "approvals approve");
    CHECK(approve.args.Get("comment") == "ok, ship it");
    CHECK(approve.args.Get("digest") == "ab12");
    Invocation deny = ParseOk({"--json", "approvals", "deny", "apr_1"});
    CHECK(deny.command->name == "approvals deny");
    CHECK(deny.args.Switch("json"));
    CHECK_FALSE(deny.args.Has("digest"));
  }
  SUBCASE("grant wait") {
    Invocation w = ParseOk({"grant", "wait", "grt_1", "--timeout", "30", "--token-only"});
    CHECK(w.command->name == "grant wait");
    CHECK(w.args.Switch("token-only"));
    CHECK(GrantWaitTimeout(w.args) == 30);
    CHECK(GrantWaitTimeout(ParseOk({"grant", "wait", "grt_1"}).args) == 300);
    CHECK(GrantWaitTimeout(ParseOk({"grant", "wait", "grt_1", "--timeout=0"}).args) == 0);
    for (const char* bad : {"-1", "1.5", "10s", "86401", "+5"}) {
      CAPTURE(bad);
      CHECK_FALSE(GrantWaitTimeout(ParseOk({"grant", "wait", "grt_1", "--timeout", bad}).args));
    }
  }
  SUBCASE("usage errors") {
    const std::vector<std::pair<std::vector<std::string>, std::string>> cases = {
        {{"approvals", "show"}, "missing argument ID"},
        {{"approvals", "approve"}, "missing argument ID"},
        {{"approvals", "list", "extra"}, "unexpected argument 'extra'"},
        {{"approvals", "deny", "apr_1", "apr_2"}, "unexpected argument 'apr_2'"},
        {{"approvals", "approve", "apr_1", "--digest"}, "flag --digest needs a value (HEX)"},
        {{"approvals", "approve", "apr_1", "--comment", "a", "--comment", "b"},
         "flag --comment given more than once"},
        {{"approvals", "list", "--comment", "x"}, "unknown flag '--comment'"},
        {{"approvals", "grant"}, "unknown subcommand 'approvals grant'"},
        {{"grant", "wait"}, "missing argument ID"},
        {{"grant", "wait", "grt_1", "--wait", "5"}, "unknown flag '--wait'"},
    };
    for (const auto& [argv, message] : cases) {
      CAPTURE(argv.size());
      ParseResult r = Parse(argv);
      REQUIRE_FALSE(r);
      CHECK(r.error().message == message);
    }
  }
  SUBCASE("help lists the approvals group") {
    CHECK(GeneralHelp().find("approvals approve") != std::string::npos);
    CHECK(GroupHelp("approvals").find("usage: jitctl approvals deny ID") != std::string::npos);
    CHECK(GroupHelp("grant").find("usage: jitctl grant wait ID") != std::string::npos);
  }
}

TEST_CASE("jitctl args: grant wait polls in steps of at most 60 seconds") {
  const std::vector<std::pair<int64_t, int64_t>> cases = {{300, 60}, {61, 60}, {60, 60}, {59, 59},
                                                          {1, 1},    {0, 0},   {-5, 0}};
  for (const auto& [remaining, wait] : cases) {
    CAPTURE(remaining);
    CHECK(NextPollSeconds(remaining) == wait);
  }
}

TEST_CASE("jitctl args: NormalizeDigest") {
  CHECK(NormalizeDigest("ABCdef0129") == "abcdef0129");
  CHECK(NormalizeDigest(std::string(64, 'a')) == std::string(64, 'a'));
  CHECK(NormalizeDigest(std::string(128, 'F')) == std::string(128, 'f'));
  for (std::string_view bad : {"", "xyz", "ab cd", "0x12", "ab\n", "abc=", "\xc3\xa9"}) {
    CAPTURE(bad);
    CHECK_FALSE(NormalizeDigest(bad));
  }
  CHECK_FALSE(NormalizeDigest(std::string(129, 'a')));
}

json SampleApproval() {
  return json::parse(R"({
    "approval_id": "apr_1", "grant_id": "grt_1", "state": "pending",
    "request_digest": "d1g35t", "tier": "merge_deploy", "human_principal": "dev_maintainer",
    "agent": {"id": "agent_7", "session_id": "ses_1", "task_id": "task_42"},
    "request": {"tool": "github.merge_pull_request", "operation": "merge",
                "resource": "jwt://api.internal", "issuer": "internal",
                "parameters": {"pr": "17", "branch": "main "}, "scope": {},
                "ttl_seconds": null, "justification": "release 1.2"},
    "decision": {"result": "pending", "tier": "merge_deploy", "code": "approval_required",
                 "reason": "tier merge_deploy needs approval",
                 "matched_rule": "tools.merge-pull-request", "policy_version": "dev.1"},
    "created_at": "2025-01-01T00:00:00Z", "expires_at": "2025-01-01T00:15:00Z",
    "four_eyes": true, "approvers": ["role:maintainer"],
    "task": {"id": "task_42", "description": "ship release", "scope": {"max_tier": "merge_deploy"}},
    "session_state": "active"
  })");
}

TEST_CASE("jitctl format: approvals") {
  SUBCASE("decision body") {
    CHECK(BuildApprovalDecisionBody("approve", "abc", std::nullopt) ==
          json{{"decision", "approve"}, {"request_digest", "abc"}});
    CHECK(BuildApprovalDecisionBody("deny", "abc", std::string("no")) ==
          json{{"decision", "deny"}, {"request_digest", "abc"}, {"comment", "no"}});
  }
  SUBCASE("DisplayText shows what plain text would hide") {
    CHECK(DisplayText(json("jwt://api.internal")) == "jwt://api.internal");
    CHECK(DisplayText(json("main ")) == "\"main \"");
    CHECK(DisplayText(json("a\nb")) == "\"a\\nb\"");
    CHECK(DisplayText(json("\x1b[2J")) == "\"\\u001b[2J\"");
    CHECK(DisplayText(json("p\xd0\xb0ypal")) == "\"p\\u0430ypal\"");  // Cyrillic a
    CHECK(DisplayText(json("\"quoted\"")) == "\"\\\"quoted\\\"\"");
    CHECK(DisplayText(json("")) == "\"\"");
    CHECK(DisplayText(json(nullptr)) == "");
    CHECK(DisplayText(json{{"k", "v\xc2\x9b"}}) == "{\"k\":\"v\\u009b\"}");
    CHECK(DisplayText(json(3)) == "3");
  }
  SUBCASE("list row") {
    CHECK(ApprovalListRow(SampleApproval()) ==
          std::vector<std::string>{"apr_1", "merge_deploy", "dev_maintainer", "agent_7",
                                   "github.merge_pull_request", "jwt://api.internal",
                                   "2025-01-01T00:15:00Z"});
  }
  SUBCASE("show prints every context field") {
    const std::string out = FormatApproval(SampleApproval());
    CHECK(out ==
          "approval_id: apr_1\n"
          "grant_id: grt_1\n"
          "state: pending\n"
          "tier: merge_deploy\n"
          "human_principal: dev_maintainer\n"
          "agent:\n"
          "  id: agent_7\n"
          "  session_id: ses_1\n"
          "  task_id: task_42\n"
          "session_state: active\n"
          "task:\n"
          "  id: task_42\n"
          "  description: ship release\n"
          "  scope: {\"max_tier\":\"merge_deploy\"}\n"
          "request:\n"
          "  tool: github.merge_pull_request\n"
          "  operation: merge\n"
          "  resource: jwt://api.internal\n"
          "  issuer: internal\n"
          "  parameters:\n"
          "    branch: \"main \"\n"
          "    pr: 17\n"
          "  scope: {}\n"
          "  ttl_seconds: -\n"
          "  justification: release 1.2\n"
          "decision:\n"
          "  result: pending\n"
          "  tier: merge_deploy\n"
          "  code: approval_required\n"
          "  reason: tier merge_deploy needs approval\n"
          "  matched_rule: tools.merge-pull-request\n"
          "  policy_version: dev.1\n"
          "four_eyes: true\n"
          "approvers: [\"role:maintainer\"]\n"
          "created_at: 2025-01-01T00:00:00Z\n"
          "expires_at: 2025-01-01T00:15:00Z\n"
          "request_digest: d1g35t\n");
    json decided = SampleApproval();
    decided["decided"] = {{"decision", "denied"},
                          {"approver", "dev_admin"},
                          {"comment", "not today"},
                          {"decided_at", "2025-01-01T00:01:00Z"}};
    CHECK(FormatApproval(decided).ends_with(
        "request_digest: d1g35t\ndecided:\n  decision: denied\n  approver: dev_admin\n"
        "  comment: not today\n  decided_at: 2025-01-01T00:01:00Z\n"));
  }
  SUBCASE("preview shows the request the decision is bound to") {
    const std::string out = FormatApprovalPreview("approve", SampleApproval());
    CHECK(out.starts_with("approving apr_1\n  state: pending\n  tier: merge_deploy\n"));
    CHECK(out.find("  tool: github.merge_pull_request\n") != std::string::npos);
    CHECK(out.find("  resource: jwt://api.internal\n") != std::string::npos);
    CHECK(out.find("    branch: \"main \"\n") != std::string::npos);
    CHECK(out.ends_with("  request_digest: d1g35t\n"));
    CHECK(FormatApprovalPreview("deny", SampleApproval()).starts_with("denying apr_1\n"));
  }
  SUBCASE("the decision a grant carries back") {
    json g = {{"grant_id", "grt_1"},
              {"approval",
               {{"id", "apr_1"},
                {"decision", "denied"},
                {"approver", "dev_admin"},
                {"comment", "use a PR"}}}};
    CHECK(FormatApprovalOutcome(g) ==
          "approval:\n  decision: denied\n  approver: dev_admin\n  comment: use a PR\n"
          "  decided_at: -\n");
    CHECK(FormatApprovalOutcome(json{{"approval", {{"id", "apr_1"}}}}).empty());
    CHECK(FormatApprovalOutcome(json::object()).empty());
  }
}

}  // namespace
}  // namespace jitbroker::cli

namespace jitbroker::net {
namespace {

TEST_CASE("HttpHeaders: lookup is case-insensitive and keeps the first field") {
  HttpHeaders h;
  h.Add("Content-Type", "application/json");
  h.Add("X-Request-Id", "a");
  h.Add("x-request-id", "b");
  CHECK(h.Get("content-type") == "application/json");
  CHECK(h.Get("CONTENT-TYPE") == "application/json");
  CHECK(h.Get("X-REQUEST-ID") == "a");
  CHECK_FALSE(h.Get("Content-Length").has_value());
  CHECK_FALSE(h.Has("Content-Typ"));
}

TEST_CASE("HttpClient: HostForMessage shows only host and port") {
  struct Row {
    const char* url;
    const char* want;
  };
  const Row rows[] = {
      {"https://api.github.com/app/installations?x=secret", "api.github.com"},
      {"http://127.0.0.1:8443/v1/sessions", "127.0.0.1:8443"},
      {"https://user:pass@host.example:9/p#f", "host.example:9"},
      {"http://[::1]:80?q", "[::1]:80"},
      {"https://sts.amazonaws.com", "sts.amazonaws.com"},
      {"no-scheme/path", "(invalid URL)"},
      {"http:///path", "(invalid URL)"},
  };
  for (const Row& row : rows) {
    CAPTURE(row.url);
    CHECK(internal::HostForMessage(row.url) == row.want);
  }
}

// A loopback server recording what it received.
class LoopbackServer {
 public:
  LoopbackServer() {
    server_.set_tcp_nodelay(true);
    server_.set_payload_max_length(1 << 20);
    auto record = [this](const httplib::Request& req, httplib::Response& res) {
      std::lock_guard<std::mutex> lock(mu_);
      last_method_ = req.method;
      last_path_ = req.path;
      last_body_ = req.body;
      last_auth_ = req.get_header_value("Authorization");
      last_content_type_ = req.get_header_value("Content-Type");
      last_user_agent_ = req.get_header_value("User-Agent");
      res.set_header("X-Request-Id", "req_42");
      res.set_content(R"({"ok":true})", "application/json");
    };
    server_.Get("/echo", record);
    server_.Post("/echo", record);
    server_.Put("/echo", record);
    server_.Delete("/echo", record);
    server_.Get("/redirect",
                [](const httplib::Request&, httplib::Response& res) { res.set_redirect("/echo"); });
    server_.Get("/big", [](const httplib::Request&, httplib::Response& res) {
      res.set_content(std::string(4096, 'x'), "text/plain");
    });
    server_.Get("/status/418", [](const httplib::Request&, httplib::Response& res) {
      res.status = 418;
      res.set_content(R"({"title":"teapot"})", "application/problem+json");
    });
    port_ = server_.bind_to_any_port("127.0.0.1");
    thread_ = std::thread([this] { server_.listen_after_bind(); });
    while (!server_.is_running()) {
      std::this_thread::yield();
    }
  }
  ~LoopbackServer() {
    server_.stop();
    thread_.join();
  }
  std::string Url(const std::string& path) const {
    return "http://127.0.0.1:" + std::to_string(port_) + path;
  }
  int port() const { return port_; }

  std::mutex mu_;
  std::string last_method_, last_path_, last_body_, last_auth_, last_content_type_,
      last_user_agent_;

 private:
  httplib::Server server_;
  int port_ = 0;
  std::thread thread_;
};

TEST_CASE("CurlHttpClient: exchanges requests with a loopback server") {
  REQUIRE(CurlGlobalInit().has_value());
  LoopbackServer server;
  CurlHttpClientOptions options;
  options.max_response_bytes = 1024;
  std::unique_ptr<HttpClient> client = MakeCurlHttpClient(options);

  SUBCASE("POST with bearer, content type and body") {
    HttpRequest req;
    req.method = "POST";
    req.url = server.Url("/echo");
    req.bearer = SecretValue("jbs_secret");
    req.headers = {{"Content-Type", "application/json"}, {"User-Agent", "jitctl/test"}};
    req.body = R"({"a":1})";
    auto resp = client->Send(req);
    REQUIRE(resp.has_value());
    CHECK(resp->status == 200);
    CHECK(resp->body == R"({"ok":true})");
    CHECK(resp->headers.Get("x-request-id") == "req_42");
    CHECK(resp->headers.Get("content-type") == "application/json");
    std::lock_guard<std::mutex> lock(server.mu_);
    CHECK(server.last_method_ == "POST");
    CHECK(server.last_auth_ == "Bearer jbs_secret");
    CHECK(server.last_content_type_ == "application/json");
    CHECK(server.last_user_agent_ == "jitctl/test");
    CHECK(server.last_body_ == R"({"a":1})");
  }
  SUBCASE("GET and DELETE without a bearer send no Authorization") {
    for (const char* method : {"GET", "DELETE", "PUT"}) {
      CAPTURE(method);
      HttpRequest req;
      req.method = method;
      req.url = server.Url("/echo");
      auto resp = client->Send(req);
      REQUIRE(resp.has_value());
      CHECK(resp->status == 200);
      std::lock_guard<std::mutex> lock(server.mu_);
      CHECK(server.last_method_ == method);
      CHECK(server.last_auth_.empty());
    }
  }
  SUBCASE("redirects are returned, not followed") {
    HttpRequest req;
    req.url = server.Url("/redirect");
    req.bearer = SecretValue("jbs_secret");
    auto resp = client->Send(req);
    REQUIRE(resp.has_value());
    CHECK(resp->status == 302);
    CHECK(resp->headers.Get("Location").has_value());
  }
  SUBCASE("error statuses are responses") {
    HttpRequest req;
    req.url = server.Url("/status/418");
    auto resp = client->Send(req);
    REQUIRE(resp.has_value());
    CHECK(resp->status == 418);
    CHECK(resp->body == R"({"title":"teapot"})");
  }
  SUBCASE("oversized responses fail") {
    HttpRequest req;
    req.url = server.Url("/big");
    auto resp = client->Send(req);
    REQUIRE_FALSE(resp.has_value());
    CHECK(resp.error().code == ErrorCode::kUnavailable);
    CHECK(resp.error().Reason() == "response_too_large");
  }
  SUBCASE("concurrent calls on one client") {
    std::vector<std::thread> threads;
    std::atomic<int> ok{0};
    for (int i = 0; i < 8; ++i) {
      threads.emplace_back([&] {
        HttpRequest req;
        req.url = server.Url("/echo");
        req.bearer = SecretValue("jbs_secret");
        auto resp = client->Send(req);
        if (resp && resp->status == 200) {
          ok.fetch_add(1);
        }
      });
    }
    for (std::thread& t : threads) {
      t.join();
    }
    CHECK(ok.load() == 8);
  }
  SUBCASE("malformed requests are rejected before sending") {
    struct Row {
      std::string url;
      std::vector<std::pair<std::string, std::string>> headers;
      std::string bearer;
      std::string method;
      std::string reason;
    };
    const Row rows[] = {
        {"ftp://127.0.0.1/x", {}, "", "GET", "invalid_url"},
        {"file:///etc/passwd", {}, "", "GET", "invalid_url"},
        {server.Url("/echo"), {{"Authorization", "Bearer x"}}, "", "GET", "invalid_header"},
        {server.Url("/echo"), {{"X-A", "v\r\nX-Injected: 1"}}, "", "GET", "invalid_header"},
        {server.Url("/echo"), {{"Bad Name", "v"}}, "", "GET", "invalid_header"},
        {server.Url("/echo"), {}, "tok\r\nX: y", "GET", "invalid_credential"},
        {server.Url("/echo"), {}, "tok en", "GET", "invalid_credential"},
        {server.Url("/echo"), {}, "", "GE T", "invalid_method"},
    };
    for (const Row& row : rows) {
      CAPTURE(row.reason);
      HttpRequest req;
      req.method = row.method;
      req.url = row.url;
      req.headers = row.headers;
      req.bearer = SecretValue(row.bearer);
      auto resp = client->Send(req);
      REQUIRE_FALSE(resp.has_value());
      CHECK(resp.error().code == ErrorCode::kInvalidArgument);
      CHECK(resp.error().Reason() == row.reason);
      CHECK(resp.error().ToString().find("tok") == std::string::npos);
    }
  }
}

TEST_CASE("CurlHttpClient: unreachable hosts are kUnavailable without URL details") {
  REQUIRE(CurlGlobalInit().has_value());
  int port = 0;
  {
    LoopbackServer closed;
    port = closed.port();
  }  // stopped: connections to the port are refused
  std::unique_ptr<HttpClient> client = MakeCurlHttpClient();
  HttpRequest req;
  req.url = "http://user:pw@127.0.0.1:" + std::to_string(port) + "/v1/x?token=secret";
  req.bearer = SecretValue("jbs_secret");
  req.connect_timeout = std::chrono::milliseconds(2000);
  auto resp = client->Send(req);
  REQUIRE_FALSE(resp.has_value());
  const Error& e = resp.error();
  CHECK(e.code == ErrorCode::kUnavailable);
  CHECK(e.message == "cannot reach 127.0.0.1:" + std::to_string(port));
  CHECK_FALSE(e.detail.empty());
  CHECK(e.retryable);
  const std::string all = e.ToString();
  CHECK(all.find("secret") == std::string::npos);
  CHECK(all.find("pw") == std::string::npos);
}

}  // namespace
}  // namespace jitbroker::net
