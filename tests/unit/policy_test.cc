// Unit tests for the pure policy engine (include/jitbroker/policy.h).
#include <chrono>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include <doctest/doctest.h>
#include <nlohmann/json.hpp>

#include "broker/crypto/crypto.h"
#include "jitbroker/policy.h"

namespace jitbroker {
namespace {

Matcher M(const std::string& pattern) {
  Result<Matcher> m = Matcher::Compile(pattern);
  REQUIRE(m.has_value());
  return *m;
}

ToolRule Rule(std::string name, std::optional<std::string> tool,
              std::optional<std::string> operation, std::optional<std::string> resource,
              std::map<std::string, std::string> params, Tier tier) {
  ToolRule r;
  r.name = std::move(name);
  if (tool) {
    r.tool = M(*tool);
  }
  if (operation) {
    r.operation = M(*operation);
  }
  if (resource) {
    r.resource = M(*resource);
  }
  for (const auto& [k, v] : params) {
    r.parameters.emplace(k, ParameterRule{M(k), M(v), std::nullopt});
  }
  r.tier = tier;
  return r;
}

// The policy every Evaluate case runs against: the documented default tiers,
// a handful of tool rules and four kinds of principal.
Policy TestPolicy() {
  Policy p;
  p.version = "test.7";
  p.default_tier = Tier::kWrite;
  auto tier = [&](Tier t) -> TierPolicy& { return p.tiers[static_cast<int>(t)]; };
  tier(Tier::kRead).control = Control::kAutoAllow;
  tier(Tier::kWrite).control = Control::kInScope;
  tier(Tier::kPr).control = Control::kInScope;
  tier(Tier::kMergeDeploy).control = Control::kApproval;
  tier(Tier::kMergeDeploy).approvers = {"role:maintainer"};
  tier(Tier::kMergeDeploy).four_eyes = true;
  tier(Tier::kSecret).control = Control::kApproval;
  tier(Tier::kSecret).max_ttl_seconds = 300;
  tier(Tier::kDestructive).control = Control::kDeny;

  p.tools.push_back(Rule("tools[0]", "github.merge_pull_request", {}, {}, {}, Tier::kMergeDeploy));
  p.tools.push_back(
      Rule("tools[1]", "shell.exec", {}, {}, {{"command", "re:^rm -rf.*"}}, Tier::kDestructive));
  p.tools.push_back(Rule("deletes", "*.delete*", {}, {}, {}, Tier::kDestructive));
  p.tools.push_back(Rule("tools[3]", "git.push", {}, {}, {}, Tier::kWrite));
  p.tools.push_back(Rule("tools[4]", "git.push", {}, {}, {{"force", "true"}}, Tier::kDestructive));
  p.tools.push_back(Rule("tools[5]", "secrets.*", {}, {}, {}, Tier::kSecret));
  p.tools.push_back(Rule("infra", {}, {}, "github://acme/infra", {}, Tier::kMergeDeploy));
  p.tools.push_back(Rule("tools[7]", "deploy.run", {}, {}, {{"count", "3"}}, Tier::kMergeDeploy));
  p.tools.push_back(Rule("docs-read", "docs.fetch", {}, {}, {}, Tier::kRead));
  p.tools.push_back(Rule("tools[9]", "re:github\\.admin", {}, {}, {}, Tier::kDestructive));
  p.tools.push_back(Rule("tools[10]", {}, "approve", {}, {}, Tier::kPr));

  p.roles["engineer"] = Role{"engineer",   {"github://acme/*", "jwt://mcp.internal"},
                             Tier::kPr,    {"github", "internal"},
                             std::nullopt, {}};
  p.roles["maintainer"] =
      Role{"maintainer", {"github://acme/*"}, Tier::kMergeDeploy, {}, std::nullopt, {}};
  p.roles["viewer"] =
      Role{"viewer", {"github://acme/docs"}, Tier::kRead, {"github"}, std::nullopt, {}};
  p.roles["admin"] = Role{"admin", {"*"}, Tier::kDestructive, {}, std::nullopt, {}};

  p.principals.push_back(
      Principal{"eng", "eng@example.com", {"engineer"}, {{"github", "eng"}}, {}, {}, {}});
  p.principals.push_back(Principal{"maint", "m@example.com", {"maintainer"}, {}, {}, {}, {}});
  p.principals.push_back(Principal{"viewer", "", {"viewer"}, {}, {}, {}, {}});
  p.principals.push_back(Principal{"multi", "", {"viewer", "engineer"}, {}, {}, {}, {}});
  p.principals.push_back(Principal{"adm", "", {"admin"}, {}, {}, {}, {}});
  return p;
}

const TimePoint kNow = FromUnixSeconds(1'800'000'000);

struct EvalCase {
  const char* name;
  const char* principal;
  TaskScope scope;
  const char* tool;
  const char* operation;
  const char* resource;
  const char* parameters;      // JSON text
  std::optional<int64_t> ttl;  // request ttl_seconds
  DecisionResult result;
  const char* code;
  Tier tier;
  const char* matched_rule;
  int64_t ttl_expected = -1;  // -1: not checked
  const char* issuer = "github";
  Tier implied = Tier::kRead;
  std::chrono::milliseconds session_left = std::chrono::hours(1);
};

constexpr auto kAllow = DecisionResult::kAllow;
constexpr auto kDeny = DecisionResult::kDeny;
constexpr auto kPending = DecisionResult::kPending;

TaskScope Scope(std::vector<std::string> resources, Tier max_tier,
                std::vector<std::string> issuers = {}, std::vector<std::string> branches = {},
                std::vector<std::string> environments = {}) {
  TaskScope s;
  s.resources = std::move(resources);
  s.max_tier = max_tier;
  s.issuers = std::move(issuers);
  s.branches = std::move(branches);
  s.environments = std::move(environments);
  return s;
}

const std::string kSvc = "github://acme/payment-service";

std::vector<EvalCase> EvalCases() {
  const TaskScope pr_scope = Scope({kSvc, "jwt://mcp.internal"}, Tier::kPr, {"github", "internal"});
  const TaskScope fix_scope = Scope({kSvc}, Tier::kPr, {}, {"fix/*"});
  const TaskScope env_scope = Scope({kSvc}, Tier::kPr, {}, {}, {"staging", "qa-*"});
  const TaskScope merge_scope = Scope({kSvc}, Tier::kMergeDeploy);
  const TaskScope wide = Scope({"*"}, Tier::kDestructive);
  using std::chrono::milliseconds;
  using std::chrono::seconds;
  return {
      // clang-format off
      // --- classification by operation -------------------------------------------------------
      {"read operation auto-allowed", "eng", pr_scope, "github.get_file", "read", kSvc.c_str(),
       "{}", {}, kAllow, "allowed", Tier::kRead, "operation:read", 900},
      {"list operation is read", "eng", pr_scope, "github.list_issues", "list", kSvc.c_str(), "{}",
       {}, kAllow, "allowed", Tier::kRead, "operation:list"},
      {"get operation is read", "eng", pr_scope, "x", "get", kSvc.c_str(), "{}", {}, kAllow,
       "allowed", Tier::kRead, "operation:get"},
      {"describe operation is read", "eng", pr_scope, "x", "describe", kSvc.c_str(), "{}", {},
       kAllow, "allowed", Tier::kRead, "operation:describe"},
      {"unknown operation falls to default tier", "eng", pr_scope, "x", "frobnicate", kSvc.c_str(),
       "{}", {}, kAllow, "allowed", Tier::kWrite, "policy.default_tier"},
      {"merge operation is merge_deploy, out of a pr scope", "eng", pr_scope, "x", "merge",
       kSvc.c_str(), "{}", {}, kDeny, "out_of_scope", Tier::kMergeDeploy, "task.scope.max_tier"},
      {"deploy operation is merge_deploy, pending for maintainer", "maint", merge_scope, "x",
       "deploy", kSvc.c_str(), "{}", {}, kPending, "approval_required", Tier::kMergeDeploy,
       "tiers.merge_deploy"},
      {"operation names are case-sensitive", "eng", pr_scope, "x", "READ", kSvc.c_str(), "{}", {},
       kAllow, "allowed", Tier::kWrite, "policy.default_tier"},

      // --- the seed example: blocked merge, then approval --------------------------------------
      {"seed: engineer agent merge blocked by task max_tier pr", "eng", Scope({kSvc,
       "jwt://mcp.internal"}, Tier::kPr, {"github", "internal"}, {"fix/*"}),
       "github.merge_pull_request", "merge", "github://acme/payment-service/pull/842", "{}", {},
       kDeny, "out_of_scope", Tier::kMergeDeploy, "task.scope.max_tier"},
      {"seed: maintainer merge with merge_deploy scope needs approval", "maint", merge_scope,
       "github.merge_pull_request", "merge", "github://acme/payment-service/pull/842", "{}", {},
       kPending, "approval_required", Tier::kMergeDeploy, "tiers.merge_deploy", 900},

      // --- tool rules --------------------------------------------------------------------------
      {"rule beats operation (merge tool with read op)", "eng", pr_scope,
       "github.merge_pull_request", "read", kSvc.c_str(), "{}", {}, kDeny, "out_of_scope",
       Tier::kMergeDeploy, "task.scope.max_tier"},
      {"anchored regex parameter: rm -rf is destructive", "adm", wide, "shell.exec", "exec",
       "host://dev", R"({"command":"rm -rf /"})", {}, kDeny, "tier_denied", Tier::kDestructive,
       "tiers.destructive"},
      {"anchored regex parameter: leading space does not match", "adm", wide, "shell.exec", "exec",
       "host://dev", R"({"command":" rm -rf /"})", {}, kAllow, "allowed", Tier::kWrite,
       "policy.default_tier"},
      {"parameter rule does not match other commands", "adm", wide, "shell.exec", "exec",
       "host://dev", R"({"command":"ls -la"})", {}, kAllow, "allowed", Tier::kWrite,
       "policy.default_tier"},
      {"parameter rule needs the parameter", "adm", wide, "shell.exec", "exec", "host://dev", "{}",
       {}, kAllow, "allowed", Tier::kWrite, "policy.default_tier"},
      {"array parameter: a matching element matches (fail closed)", "adm", wide, "shell.exec",
       "exec", "host://dev", R"({"command":["rm -rf /"]})", {}, kDeny, "tier_denied",
       Tier::kDestructive, "tiers.destructive"},
      {"array parameter: the joined elements match", "adm", wide, "shell.exec", "exec",
       "host://dev", R"({"command":["rm","-rf","/"]})", {}, kDeny, "tier_denied",
       Tier::kDestructive, "tiers.destructive"},
      {"array parameter: no element and not the joined form", "adm", wide, "shell.exec", "exec",
       "host://dev", R"({"command":["ls","-la"]})", {}, kAllow, "allowed", Tier::kWrite,
       "policy.default_tier"},
      {"object parameter cannot be read: matches (fail closed)", "adm", wide, "shell.exec",
       "exec", "host://dev", R"({"command":{"argv":["rm","-rf","/"]}})", {}, kDeny,
       "tier_denied", Tier::kDestructive, "tiers.destructive"},
      {"null parameter cannot be read: matches (fail closed)", "adm", wide, "shell.exec", "exec",
       "host://dev", R"({"command":null})", {}, kDeny, "tier_denied", Tier::kDestructive,
       "tiers.destructive"},
      {"array holding an object cannot be read: matches (fail closed)", "adm", wide,
       "shell.exec", "exec", "host://dev", R"({"command":["ls",{"x":1}]})", {}, kDeny,
       "tier_denied", Tier::kDestructive, "tiers.destructive"},
      {"plain tool rule", "eng", pr_scope, "git.push", "push", kSvc.c_str(), "{}", {}, kAllow,
       "allowed", Tier::kWrite, "tools[3]"},
      {"highest matching rule wins (bool normalised)", "adm", wide, "git.push", "push",
       kSvc.c_str(), R"({"force":true})", {}, kDeny, "tier_denied", Tier::kDestructive,
       "tiers.destructive"},
      {"highest matching rule wins (string)", "adm", wide, "git.push", "push", kSvc.c_str(),
       R"({"force":"true"})", {}, kDeny, "tier_denied", Tier::kDestructive, "tiers.destructive"},
      {"number parameter normalised to JSON text", "maint", merge_scope, "deploy.run", "run",
       kSvc.c_str(), R"({"count":3})", {}, kPending, "approval_required", Tier::kMergeDeploy,
       "tiers.merge_deploy"},
      {"glob tool rule", "adm", wide, "github.delete_branch", "x", kSvc.c_str(), "{}", {}, kDeny,
       "tier_denied", Tier::kDestructive, "tiers.destructive"},
      {"glob star does not span '/'", "adm", wide, "a/b.delete", "x", kSvc.c_str(), "{}", {},
       kAllow, "allowed", Tier::kWrite, "policy.default_tier"},
      {"glob star does not span ':'", "adm", wide, "a:b.delete", "x", kSvc.c_str(), "{}", {},
       kAllow, "allowed", Tier::kWrite, "policy.default_tier"},
      {"named rule appears as matched_rule", "eng", pr_scope, "docs.fetch", "fetch", kSvc.c_str(),
       "{}", {}, kAllow, "allowed", Tier::kRead, "docs-read"},
      {"regex rule is anchored (no partial match)", "adm", wide, "github.admin_x", "x",
       kSvc.c_str(), "{}", {}, kAllow, "allowed", Tier::kWrite, "policy.default_tier"},
      {"regex rule exact match", "adm", wide, "github.admin", "x", kSvc.c_str(), "{}", {}, kDeny,
       "tier_denied", Tier::kDestructive, "tiers.destructive"},
      {"operation rule", "eng", pr_scope, "github.review", "approve", kSvc.c_str(), "{}", {},
       kAllow, "allowed", Tier::kPr, "tools[10]"},
      {"resource rule covers sub-resources", "eng", Scope({"github://acme/infra"}, Tier::kPr),
       "github.get_file", "read", "github://acme/infra/pull/3", "{}", {}, kDeny, "out_of_scope",
       Tier::kMergeDeploy, "task.scope.max_tier"},
      {"resource rule does not cover siblings", "eng", Scope({"github://acme/*"}, Tier::kPr),
       "github.get_file", "read", "github://acme/infra2", "{}", {}, kAllow, "allowed", Tier::kRead,
       "operation:read"},
      {"issuer implied tier raises the tier", "eng", pr_scope, "github.push", "frobnicate",
       kSvc.c_str(), "{}", {}, kAllow, "allowed", Tier::kPr, "issuer:github", -1, "github",
       Tier::kPr},
      {"issuer implied tier beyond scope", "eng", pr_scope, "github.push", "read", kSvc.c_str(),
       "{}", {}, kDeny, "out_of_scope", Tier::kMergeDeploy, "task.scope.max_tier", -1, "github",
       Tier::kMergeDeploy},

      // --- order and intersections ---------------------------------------------------------------
      {"session expired exactly at expires_at", "eng", pr_scope, "x", "read", kSvc.c_str(), "{}",
       {}, kDeny, "session_expired", Tier::kRead, "session.expires_at", -1, "github", Tier::kRead,
       milliseconds(0)},
      {"session expired before principal lookup", "nobody", pr_scope, "x", "read", kSvc.c_str(),
       "{}", {}, kDeny, "session_expired", Tier::kRead, "session.expires_at", -1, "github",
       Tier::kRead, milliseconds(-5000)},
      {"unknown principal", "nobody", pr_scope, "x", "read", kSvc.c_str(), "{}", {}, kDeny,
       "unknown_principal", Tier::kRead, "policy.principals"},
      {"tier denied before scope checks", "eng", Scope({"github://other/x"}, Tier::kRead),
       "github.delete_repo", "x", "github://nowhere/y", "{}", {}, kDeny, "tier_denied",
       Tier::kDestructive, "tiers.destructive"},
      {"issuer not in task scope", "eng", Scope({kSvc}, Tier::kPr, {"internal"}), "x", "read",
       kSvc.c_str(), "{}", {}, kDeny, "issuer_not_allowed", Tier::kRead, "task.scope.issuers"},
      {"issuer not allowed by any role", "viewer", Scope({"github://acme/docs"}, Tier::kRead), "x",
       "read", "github://acme/docs", "{}", {}, kDeny, "issuer_not_allowed", Tier::kRead,
       "principal.roles", -1, "internal"},
      {"role with empty issuers allows any issuer", "maint", merge_scope, "x", "read", kSvc.c_str(),
       "{}", {}, kAllow, "allowed", Tier::kRead, "operation:read", -1, "aws-prod"},
      {"tier above scope max_tier", "eng", Scope({kSvc}, Tier::kRead), "x", "write", kSvc.c_str(),
       "{}", {}, kDeny, "out_of_scope", Tier::kWrite, "task.scope.max_tier"},
      {"tier above principal roles", "eng", merge_scope, "x", "merge", kSvc.c_str(), "{}", {},
       kDeny, "exceeds_principal", Tier::kMergeDeploy, "principal.roles"},
      {"multi-role principal gets the highest role tier", "multi", pr_scope, "git.push", "push",
       kSvc.c_str(), "{}", {}, kAllow, "allowed", Tier::kWrite, "tools[3]"},
      {"resource sibling is out of scope (svc vs svc2)", "eng", pr_scope, "x", "read",
       "github://acme/payment-service2", "{}", {}, kDeny, "out_of_scope", Tier::kRead,
       "task.scope.resources"},
      {"resource prefix covers a pull request", "eng", pr_scope, "x", "read",
       "github://acme/payment-service/pull/842", "{}", {}, kAllow, "allowed", Tier::kRead,
       "operation:read"},
      {"dot segments are never covered", "eng", pr_scope, "x", "read",
       "github://acme/payment-service/../secrets", "{}", {}, kDeny, "out_of_scope", Tier::kRead,
       "task.scope.resources"},
      {"auto_allow still requires the scope", "eng", pr_scope, "x", "read", "github://acme/other",
       "{}", {}, kDeny, "out_of_scope", Tier::kRead, "task.scope.resources"},
      {"glob scope resource: star does not match the bare org", "eng", Scope({"github://acme/*"},
       Tier::kPr), "x", "read", "github://acme", "{}", {}, kDeny, "out_of_scope", Tier::kRead,
       "task.scope.resources"},
      {"glob scope resource covers deeper paths by prefix", "eng", Scope({"github://acme/*"},
       Tier::kPr), "x", "read", "github://acme/svc/pull/1", "{}", {}, kAllow, "allowed",
       Tier::kRead, "operation:read"},
      {"resource outside every role", "eng", Scope({"github://other/x"}, Tier::kPr), "x", "read",
       "github://other/x", "{}", {}, kDeny, "exceeds_principal", Tier::kRead, "principal.roles"},
      {"admin role covers any resource", "adm", Scope({"aws://123/role/deploy"}, Tier::kWrite), "x",
       "write", "aws://123/role/deploy", "{}", {}, kAllow, "allowed", Tier::kWrite,
       "policy.default_tier"},

      // --- branches and environments -----------------------------------------------------------
      {"branch in scope", "eng", fix_scope, "git.push", "push", kSvc.c_str(),
       R"({"branch":"fix/timeout"})", {}, kAllow, "allowed", Tier::kWrite, "tools[3]"},
      {"branch not in scope", "eng", fix_scope, "git.push", "push", kSvc.c_str(),
       R"({"branch":"main"})", {}, kDeny, "branch_not_in_scope", Tier::kWrite,
       "task.scope.branches"},
      {"branch glob does not span '/'", "eng", fix_scope, "git.push", "push", kSvc.c_str(),
       R"({"branch":"fix/a/b"})", {}, kDeny, "branch_not_in_scope", Tier::kWrite,
       "task.scope.branches"},
      {"github write must name a branch", "eng", fix_scope, "git.push", "push", kSvc.c_str(), "{}",
       {}, kDeny, "branch_not_in_scope", Tier::kWrite, "task.scope.branches"},
      {"read need not name a branch (auto_allow)", "eng", fix_scope, "x", "read", kSvc.c_str(),
       "{}", {}, kAllow, "allowed", Tier::kRead, "operation:read"},
      {"named branch is checked even for reads", "eng", fix_scope, "x", "read", kSvc.c_str(),
       R"({"branch":"main"})", {}, kDeny, "branch_not_in_scope", Tier::kRead,
       "task.scope.branches"},
      {"non-github write need not name a branch", "eng", Scope({"jwt://mcp.internal"}, Tier::kPr,
       {}, {"fix/*"}), "mcp.call", "write", "jwt://mcp.internal", "{}", {}, kAllow, "allowed",
       Tier::kWrite, "policy.default_tier", -1, "internal"},
      {"non-string branch is refused", "eng", fix_scope, "git.push", "push", kSvc.c_str(),
       R"({"branch":7})", {}, kDeny, "branch_not_in_scope", Tier::kWrite, "task.scope.branches"},
      {"approval tier need not name a branch", "maint", Scope({kSvc}, Tier::kMergeDeploy, {},
       {"fix/*"}), "github.merge_pull_request", "merge", kSvc.c_str(), "{}", {}, kPending,
       "approval_required", Tier::kMergeDeploy, "tiers.merge_deploy"},
      {"environment in scope (glob)", "eng", env_scope, "x", "write", kSvc.c_str(),
       R"({"environment":"qa-3"})", {}, kAllow, "allowed", Tier::kWrite, "policy.default_tier"},
      {"environment not in scope", "eng", env_scope, "x", "write", kSvc.c_str(),
       R"({"environment":"production"})", {}, kDeny, "environment_not_in_scope", Tier::kWrite,
       "task.scope.environments"},
      {"github write must name an environment", "eng", env_scope, "x", "write", kSvc.c_str(), "{}",
       {}, kDeny, "environment_not_in_scope", Tier::kWrite, "task.scope.environments"},

      // --- TTL clamping
      // ----------------------------------------------------------------------------
      {"ttl: request honoured", "eng", pr_scope, "x", "read", kSvc.c_str(), "{}", 600, kAllow,
       "allowed", Tier::kRead, "operation:read", 600},
      {"ttl: issuer default when not requested", "eng", pr_scope, "x", "read", kSvc.c_str(), "{}",
       {}, kAllow, "allowed", Tier::kRead, "operation:read", 900},
      {"ttl: clamped by issuer max", "eng", pr_scope, "x", "read", kSvc.c_str(), "{}", 7200, kAllow,
       "allowed", Tier::kRead, "operation:read", 3600},
      {"ttl: clamped by tier max (secret)", "adm", wide, "secrets.read", "read", kSvc.c_str(), "{}",
       3000, kPending, "approval_required", Tier::kSecret, "tiers.secret", 300},
      {"ttl: clamped by session end", "eng", pr_scope, "x", "read", kSvc.c_str(), "{}", 3000,
       kAllow, "allowed", Tier::kRead, "operation:read", 120, "github", Tier::kRead, seconds(120)},
      {"ttl: under one second left is session_expired", "eng", pr_scope, "x", "read", kSvc.c_str(),
       "{}", {}, kDeny, "session_expired", Tier::kRead, "session.expires_at", -1, "github",
       Tier::kRead, milliseconds(500)},
      // clang-format on
  };
}

TEST_CASE("PolicyEngine: Evaluate decision table") {
  const Policy policy = TestPolicy();
  std::vector<EvalCase> cases = EvalCases();
  CHECK(cases.size() >= 45);
  for (const EvalCase& c : cases) {
    CAPTURE(c.name);
    GrantRequest req;
    req.tool = c.tool;
    req.operation = c.operation;
    req.resource = c.resource;
    req.issuer = c.issuer;
    req.parameters = nlohmann::json::parse(c.parameters);
    req.ttl_seconds = c.ttl;
    SessionFacts session;
    session.session_id = "ses_test";
    session.principal_id = c.principal;
    session.scope = c.scope;
    session.expires_at = kNow + c.session_left;
    IssuerFacts issuer;
    issuer.name = c.issuer;
    issuer.implied_tier = c.implied;
    issuer.default_ttl_seconds = 900;
    issuer.max_ttl_seconds = 3600;

    Decision d = Evaluate(req, session, issuer, policy, kNow);
    CHECK(DecisionResultName(d.result) == DecisionResultName(c.result));
    CHECK(d.code == c.code);
    CHECK(TierName(d.tier) == TierName(c.tier));
    CHECK(d.matched_rule == c.matched_rule);
    CHECK(d.policy_version == "test.7");
    CHECK_FALSE(d.reason.empty());
    if (c.ttl_expected >= 0) {
      CHECK(d.ttl_seconds == c.ttl_expected);
    }
    if (d.result == DecisionResult::kDeny) {
      CHECK(d.ttl_seconds == 0);
    } else {
      CHECK(d.ttl_seconds >= 1);
    }
  }
}

TEST_CASE("PolicyEngine: reasons name the offending item") {
  const Policy policy = TestPolicy();
  GrantRequest req;
  req.tool = "github.merge_pull_request";
  req.operation = "merge";
  req.resource = "github://acme/payment-service/pull/842";
  SessionFacts session;
  session.principal_id = "eng";
  session.scope = Scope({kSvc}, Tier::kPr);
  session.expires_at = kNow + std::chrono::hours(1);
  IssuerFacts issuer;
  issuer.name = "github";
  Decision d = Evaluate(req, session, issuer, policy, kNow);
  CHECK(d.reason.find("merge_deploy") != std::string::npos);
  CHECK(d.reason.find("\"pr\"") != std::string::npos);
  CHECK(d.reason.find("tools[0]") != std::string::npos);

  req.tool = "x";
  req.operation = "read";
  req.resource = "github://acme/elsewhere";
  d = Evaluate(req, session, issuer, policy, kNow);
  CHECK(d.code == "out_of_scope");
  CHECK(d.reason.find("github://acme/elsewhere") != std::string::npos);
}

TEST_CASE("PolicyEngine: a request regex input too long for std::regex classifies fail-closed") {
  const Policy policy = TestPolicy();
  GrantRequest req;
  req.tool = "shell.exec";
  req.operation = "exec";
  req.parameters = {{"command", std::string(100000, 'a')}};
  std::string rule;
  CHECK(ClassifyTier(req, {}, policy, &rule) == Tier::kDestructive);
  CHECK(rule == "tools[1]");
  // Long but matching inputs below the bound are evaluated normally.
  req.parameters = {{"command", "rm -rf " + std::string(4000, 'x')}};
  CHECK(ClassifyTier(req, {}, policy, &rule) == Tier::kDestructive);
  req.parameters = {{"command", "ls " + std::string(4000, 'x')}};
  CHECK(ClassifyTier(req, {}, policy, &rule) == Tier::kWrite);
  CHECK(rule == "policy.default_tier");
}

TEST_CASE("PolicyEngine: ClassifyTier tolerates a null matched_rule; unreadable parameters match") {
  const Policy policy = TestPolicy();
  GrantRequest req;
  req.tool = "shell.exec";
  req.operation = "read";
  // Parameters that are not an object cannot be read: rules on parameters
  // count as matching (fail closed).
  req.parameters = nlohmann::json::array({"rm -rf /"});
  CHECK(ClassifyTier(req, {}, policy, nullptr) == Tier::kDestructive);
  req.parameters = nlohmann::json::object();
  CHECK(ClassifyTier(req, {}, policy, nullptr) == Tier::kRead);
}

struct MatchCase {
  const char* pattern;
  const char* value;
  bool matches;
};

TEST_CASE("Matcher: exact, glob and anchored regex") {
  const MatchCase cases[] = {
      {"git.push", "git.push", true},
      {"git.push", "git.pushx", false},
      {"git.push", "Git.push", false},
      {"git.?ush", "git.push", false},    // '?' is not a metacharacter
      {"git.[p]ush", "git.push", false},  // neither is '['
      {"*", "anything.at_all", true},
      {"*", "", true},
      {"*", "a/b", false},
      {"*", "a:b", false},
      {"secrets.*", "secrets.read", true},
      {"secrets.*", "secrets.", true},
      {"secrets.*", "xsecrets.read", false},
      {"*.delete*", "aws.s3.delete_object", true},
      {"*.delete*", "github.delete_branch", true},
      {"*.delete*", "delete", false},
      {"a*b*c", "aXbYc", true},
      {"a*b*c", "abc", true},
      {"a*b*c", "aXb/c", false},
      {"a*/*c", "ab/bc", true},
      {"a*/*c", "ab/b/c", false},
      {"fix/*", "fix/x", true},
      {"fix/*", "fix/x/y", false},
      {"**", "ab", true},
      {"re:^rm -rf.*", "rm -rf /", true},
      {"re:rm", "xrmx", false},  // anchored
      {"re:rm", "rm", true},
      {"re:a|b", "b", true},
      {"re:[0-9]+", "123", true},
      {"re:[0-9]+", "12a", false},
  };
  for (const MatchCase& c : cases) {
    CAPTURE(c.pattern);
    CAPTURE(c.value);
    Result<Matcher> m = Matcher::Compile(c.pattern);
    REQUIRE(m.has_value());
    CHECK(m->Matches(c.value) == c.matches);
    CHECK(m->pattern() == c.pattern);
  }
  CHECK(Matcher::Compile("exact")->kind() == Matcher::Kind::kExact);
  CHECK(Matcher::Compile("gl*b")->kind() == Matcher::Kind::kGlob);
  CHECK(Matcher::Compile("re:x*")->kind() == Matcher::Kind::kRegex);
}

TEST_CASE("Matcher: invalid regex is invalid_pattern") {
  for (const char* bad : {"re:(", "re:[a-", "re:a{2,1}", "re:"}) {
    CAPTURE(bad);
    Result<Matcher> m = Matcher::Compile(bad);
    REQUIRE_FALSE(m.has_value());
    CHECK(m.error().code == ErrorCode::kInvalidArgument);
    CHECK(m.error().Reason() == "invalid_pattern");
  }
}

TEST_CASE("Matcher: copies share the compiled regex") {
  Result<Matcher> m = Matcher::Compile("re:^a+$");
  REQUIRE(m.has_value());
  Matcher copy = *m;
  CHECK(copy.Matches("aaa"));
  CHECK_FALSE(copy.Matches("aab"));
  CHECK_FALSE(m->Matches(std::string(5000, 'a')));  // over the input bound: no match
}

TEST_CASE("ResourceCovers: prefixes, globs and edge cases") {
  const MatchCase cases[] = {
      {"github://acme/svc", "github://acme/svc", true},
      {"github://acme/svc", "github://acme/svc/pull/842", true},
      {"github://acme/svc", "github://acme/svc2", false},
      {"github://acme/svc", "github://acme/sv", false},
      {"github://acme/svc", "github://acme", false},
      {"github://acme/*", "github://acme/svc", true},
      {"github://acme/*", "github://acme/svc/pull/1", true},
      {"github://acme/*", "github://acme", false},
      {"github://acme/*", "github://acmex/svc", false},
      {"github://acme/*", "github://acme/*", true},     // scope pattern inside a role pattern
      {"github://acme/svc", "github://acme/*", false},  // a wider pattern is not covered
      {"github://*/docs", "github://acme/docs/x", true},
      {"github://*/docs", "github://acme/sub/docs", false},
      {"jwt://*", "jwt://mcp.internal", true},
      {"jwt://*", "github://acme/svc", false},
      {"*", "aws://123/role/x", true},
      {"*", "", true},
      {"github:", "github://acme/svc", false},  // no prefixes inside the scheme
      {"github:/", "github://acme/svc", false},
      {"github://acme/svc", "github://acme/svc/../other", false},
      {"github://acme/svc", "github://acme/svc/./x", false},
      {"", "github://acme/svc", false},
      {"github://acme/svc", "", false},
      {"aws://123/role/deploy", "aws://123/role/deploy-admin", false},
      {"aws://123/role/*", "aws://123/role/deploy", true},
  };
  for (const MatchCase& c : cases) {
    CAPTURE(c.pattern);
    CAPTURE(c.value);
    CHECK(ResourceCovers(c.pattern, c.value) == c.matches);
  }
}

TEST_CASE("PolicyNames: tiers, controls and results round-trip") {
  for (Tier t : kAllTiers) {
    std::optional<Tier> back = ParseTier(TierName(t));
    REQUIRE(back.has_value());
    CHECK(*back == t);
  }
  CHECK(TierName(Tier::kMergeDeploy) == "merge_deploy");
  CHECK_FALSE(ParseTier("admin").has_value());
  CHECK_FALSE(ParseTier("READ").has_value());
  for (Control c : {Control::kAutoAllow, Control::kInScope, Control::kApproval, Control::kDeny}) {
    std::optional<Control> back = ParseControl(ControlName(c));
    REQUIRE(back.has_value());
    CHECK(*back == c);
  }
  CHECK(ControlName(Control::kAutoAllow) == "auto_allow");
  CHECK_FALSE(ParseControl("allow").has_value());
  CHECK(DecisionResultName(DecisionResult::kAllow) == "allow");
  CHECK(DecisionResultName(DecisionResult::kDeny) == "deny");
  CHECK(DecisionResultName(DecisionResult::kPending) == "pending");
}

TEST_CASE("Decision: ToJson shape") {
  Decision d;
  d.result = DecisionResult::kPending;
  d.tier = Tier::kSecret;
  d.code = "approval_required";
  d.reason = "needs approval";
  d.matched_rule = "tiers.secret";
  d.policy_version = "v1";
  nlohmann::json j = d.ToJson();
  CHECK(j["result"] == "pending");
  CHECK(j["tier"] == "secret");
  CHECK(j["code"] == "approval_required");
  CHECK(j["reason"] == "needs approval");
  CHECK(j["matched_rule"] == "tiers.secret");
  CHECK(j["policy_version"] == "v1");
  CHECK_FALSE(j.contains("ttl_seconds"));
  d.ttl_seconds = 300;
  CHECK(d.ToJson()["ttl_seconds"] == 300);
}

TEST_CASE("TaskScope: strict JSON round trip") {
  const char* text = R"({"resources":["github://acme/svc"],"branches":["fix/*"],
                         "environments":["staging"],"max_tier":"pr","issuers":["github"]})";
  Result<TaskScope> s = TaskScope::FromJson(nlohmann::json::parse(text));
  REQUIRE(s.has_value());
  CHECK(s->resources == std::vector<std::string>{"github://acme/svc"});
  CHECK(s->branches == std::vector<std::string>{"fix/*"});
  CHECK(s->environments == std::vector<std::string>{"staging"});
  CHECK(s->max_tier == Tier::kPr);
  CHECK(s->issuers == std::vector<std::string>{"github"});
  Result<TaskScope> again = TaskScope::FromJson(s->ToJson());
  REQUIRE(again.has_value());
  CHECK(again->ToJson() == s->ToJson());

  Result<TaskScope> minimal = TaskScope::FromJson(R"({"resources":["jwt://x"]})"_json);
  REQUIRE(minimal.has_value());
  CHECK(minimal->max_tier == Tier::kRead);
  CHECK(minimal->branches.empty());
}

TEST_CASE("TaskScope: FromJson rejects bad input") {
  struct Bad {
    const char* json;
    const char* reason;
    const char* mentions;
  };
  const Bad cases[] = {
      {R"([])", "invalid_type", "object"},
      {R"({"resources":["a"],"extra":1})", "unknown_field", "extra"},
      {R"({"resources":["a"],"max_tier":"root"})", "invalid_scope", "max_tier"},
      {R"({"resources":["a"],"max_tier":3})", "invalid_type", "max_tier"},
      {R"({"resources":"github://acme/svc"})", "invalid_type", "resources"},
      {R"({"resources":[1]})", "invalid_type", "resources"},
      {R"({"resources":[]})", "invalid_scope", "resources"},
      {R"({"max_tier":"read"})", "invalid_scope", "resources"},
      {R"({"resources":["a"],"branches":[null]})", "invalid_type", "branches"},
      {R"({"resources":["a"],"issuers":{"a":1}})", "invalid_type", "issuers"},
      {R"({"resources":[""]})", "invalid_scope", "resources"},
  };
  for (const Bad& c : cases) {
    CAPTURE(c.json);
    Result<TaskScope> s = TaskScope::FromJson(nlohmann::json::parse(c.json));
    REQUIRE_FALSE(s.has_value());
    CHECK(s.error().code == ErrorCode::kInvalidArgument);
    CHECK(s.error().Reason() == c.reason);
    CHECK(s.error().message.find(c.mentions) != std::string::npos);
  }
}

TEST_CASE("Policy: principal lookups") {
  Policy policy = TestPolicy();
  const std::string key_a = crypto::Sha256Hex("key-a");
  const std::string key_b = crypto::Sha256Hex("key-b");
  policy.principals[0].api_keys_sha256 = {key_a};
  policy.principals[1].api_keys_sha256 = {crypto::Sha256Hex("other"), key_b};

  REQUIRE(policy.FindPrincipal("maint") != nullptr);
  CHECK(policy.FindPrincipal("maint")->id == "maint");
  CHECK(policy.FindPrincipal("nobody") == nullptr);
  CHECK(policy.FindPrincipal("") == nullptr);

  REQUIRE(policy.FindPrincipalByKeySha256(key_a) != nullptr);
  CHECK(policy.FindPrincipalByKeySha256(key_a)->id == "eng");
  REQUIRE(policy.FindPrincipalByKeySha256(key_b) != nullptr);
  CHECK(policy.FindPrincipalByKeySha256(key_b)->id == "maint");
  CHECK(policy.FindPrincipalByKeySha256(crypto::Sha256Hex("key-c")) == nullptr);
  CHECK(policy.FindPrincipalByKeySha256("") == nullptr);
  CHECK(policy.FindPrincipalByKeySha256(key_a.substr(0, 63)) == nullptr);

  CHECK(policy.HasRole(policy.principals[3], "viewer"));
  CHECK(policy.HasRole(policy.principals[3], "engineer"));
  CHECK_FALSE(policy.HasRole(policy.principals[3], "admin"));
  CHECK(policy.HasRole(policy.principals[4], "admin"));
}

TEST_CASE("CheckScopeWithinPrincipal: scope must lie inside the roles") {
  const Policy policy = TestPolicy();
  const Principal& eng = *policy.FindPrincipal("eng");
  const Principal& adm = *policy.FindPrincipal("adm");
  const Principal& multi = *policy.FindPrincipal("multi");
  struct Case {
    const char* name;
    const Principal* p;
    TaskScope scope;
    bool ok;
    const char* mentions;
  };
  const Case cases[] = {
      {"inside", &eng, Scope({"github://acme/svc", "jwt://mcp.internal"}, Tier::kPr, {"github"}),
       true, ""},
      {"glob inside a role glob", &eng, Scope({"github://acme/*"}, Tier::kWrite), true, ""},
      {"narrower glob inside", &eng, Scope({"github://acme/svc-*"}, Tier::kRead), true, ""},
      {"sub-resource inside", &eng, Scope({"github://acme/svc/pull/1"}, Tier::kRead), true, ""},
      {"resource outside", &eng, Scope({"github://evil/svc"}, Tier::kRead), false,
       "github://evil/svc"},
      {"wider glob outside", &eng, Scope({"github://*/svc"}, Tier::kRead), false, "github://*/svc"},
      {"star outside", &eng, Scope({"*"}, Tier::kRead), false, "\"*\""},
      {"max tier above roles", &eng, Scope({"github://acme/svc"}, Tier::kMergeDeploy), false,
       "merge_deploy"},
      {"issuer not in roles", &eng, Scope({"github://acme/svc"}, Tier::kRead, {"aws-prod"}), false,
       "aws-prod"},
      {"admin anything", &adm, Scope({"*"}, Tier::kDestructive, {"aws-prod"}), true, ""},
      {"multi-role union", &multi, Scope({"github://acme/docs", "github://acme/svc"}, Tier::kPr),
       true, ""},
  };
  for (const Case& c : cases) {
    CAPTURE(c.name);
    Status s = CheckScopeWithinPrincipal(c.scope, *c.p, policy);
    CHECK(s.has_value() == c.ok);
    if (!c.ok && !s.has_value()) {
      CHECK(s.error().code == ErrorCode::kPermissionDenied);
      CHECK(s.error().Reason() == "scope_exceeds_principal");
      CHECK(s.error().message.find(c.mentions) != std::string::npos);
    }
  }
}

// --- Scope items (issue #10, finding 1) ---------------------------------------

Policy ScopedPolicy() {
  Policy p = TestPolicy();
  p.roles["engineer"].resources.push_back("jwt://api.internal");
  p.roles["engineer"].scopes = std::vector<std::string>{"read", "mcp:*"};
  p.roles["deployer"] = Role{"deployer", {"jwt://deploy.internal"},          Tier::kPr,
                             {},         std::vector<std::string>{"deploy"}, {}};
  p.roles["approver"] = Role{"approver", {}, Tier::kRead, {}, std::nullopt, {}};
  p.principals.push_back(Principal{"eng_appr", "", {"engineer", "approver"}, {}, {}, {}, {}});
  p.principals.push_back(Principal{"eng_dep", "", {"engineer", "deployer"}, {}, {}, {}, {}});
  return p;
}

TEST_CASE("PolicyEngine: scope items are bounded by the task scope and by the roles") {
  const Policy policy = ScopedPolicy();
  struct Case {
    const char* name;
    const char* principal;
    const char* resource;
    std::optional<std::vector<std::string>> task_scopes;
    std::vector<std::string> items;
    DecisionResult result;
    const char* code;
    const char* matched_rule;
    const char* mentions = "";
    Tier implied = Tier::kRead;
  };
  const Case cases[] = {
      {"an item the role allows",
       "eng",
       "jwt://mcp.internal",
       std::nullopt,
       {"read"},
       kAllow,
       "allowed",
       "operation:read"},
      {"a role glob",
       "eng",
       "jwt://mcp.internal",
       std::nullopt,
       {"read", "mcp:search"},
       kAllow,
       "allowed",
       "operation:read"},
      {"the finding: an item no role allows",
       "eng",
       "jwt://mcp.internal",
       std::nullopt,
       {"deploy"},
       kDeny,
       "exceeds_principal",
       "principal.roles",
       "\"deploy\""},
      {"the first item no role allows is named",
       "eng",
       "jwt://mcp.internal",
       std::nullopt,
       {"mcp:search", "admin", "deploy:prod"},
       kDeny,
       "exceeds_principal",
       "principal.roles",
       "\"admin\""},
      {"role globs do not span ':'",
       "eng",
       "jwt://mcp.internal",
       std::nullopt,
       {"mcp:a:b"},
       kDeny,
       "exceeds_principal",
       "principal.roles"},
      {"no items: nothing to bound",
       "eng",
       "jwt://mcp.internal",
       std::nullopt,
       {},
       kAllow,
       "allowed",
       "operation:read"},
      {"a role without scopes allows any item",
       "adm",
       "jwt://mcp.internal",
       std::nullopt,
       {"anything:at", "admin"},
       kAllow,
       "allowed",
       "operation:read"},
      {"a role that covers nothing here does not widen",
       "eng_appr",
       "jwt://mcp.internal",
       std::nullopt,
       {"deploy"},
       kDeny,
       "exceeds_principal",
       "principal.roles"},
      {"a role's scopes apply on its own resources",
       "eng_dep",
       "jwt://deploy.internal",
       std::nullopt,
       {"deploy"},
       kAllow,
       "allowed",
       "operation:read"},
      {"...and not on another role's resources",
       "eng_dep",
       "jwt://mcp.internal",
       std::nullopt,
       {"deploy"},
       kDeny,
       "exceeds_principal",
       "principal.roles"},
      {"the task scope bounds items",
       "eng",
       "jwt://mcp.internal",
       std::vector<std::string>{"mcp:*"},
       {"read"},
       kDeny,
       "scope_not_in_task",
       "task.scope.scopes",
       "\"read\""},
      {"inside the task scope",
       "eng",
       "jwt://mcp.internal",
       std::vector<std::string>{"mcp:*"},
       {"mcp:search"},
       kAllow,
       "allowed",
       "operation:read"},
      {"an empty task scope list allows no item",
       "eng",
       "jwt://mcp.internal",
       std::vector<std::string>{},
       {"read"},
       kDeny,
       "scope_not_in_task",
       "task.scope.scopes"},
      {"an empty task scope list with no items",
       "eng",
       "jwt://mcp.internal",
       std::vector<std::string>{},
       {},
       kAllow,
       "allowed",
       "operation:read"},
      {"the task scope's \"*\" allows any item the roles allow",
       "eng",
       "jwt://mcp.internal",
       std::vector<std::string>{"*"},
       {"deploy"},
       kDeny,
       "exceeds_principal",
       "principal.roles"},
      {"task scope before roles",
       "eng",
       "jwt://mcp.internal",
       std::vector<std::string>{"mcp:*"},
       {"deploy"},
       kDeny,
       "scope_not_in_task",
       "task.scope.scopes"},
      {"the items' tier is judged first",
       "eng",
       "jwt://mcp.internal",
       std::nullopt,
       {"admin"},
       kDeny,
       "tier_denied",
       "tiers.destructive",
       "",
       Tier::kDestructive},
  };
  for (const Case& c : cases) {
    CAPTURE(c.name);
    GrantRequest req;
    req.tool = "mcp.search";
    req.operation = "read";
    req.resource = c.resource;
    req.issuer = "internal";
    SessionFacts session;
    session.session_id = "ses_scoped";
    session.principal_id = c.principal;
    session.scope = Scope({"jwt://*"}, Tier::kPr);
    session.scope.scopes = c.task_scopes;
    session.expires_at = kNow + std::chrono::hours(1);
    IssuerFacts issuer;
    issuer.name = "internal";
    issuer.implied_tier = c.implied;
    issuer.scope_items = c.items;
    Decision d = Evaluate(req, session, issuer, policy, kNow);
    CHECK(DecisionResultName(d.result) == DecisionResultName(c.result));
    CHECK(d.code == c.code);
    CHECK(d.matched_rule == c.matched_rule);
    CHECK(d.reason.find(c.mentions) != std::string::npos);
  }
}

TEST_CASE("PolicyEngine: tool rules match scope items with match.scopes") {
  Policy policy = TestPolicy();
  ToolRule rule = Rule("deploy-scopes", {}, {}, {}, {}, Tier::kMergeDeploy);
  rule.scopes = M("deploy:*");
  policy.tools.push_back(rule);
  GrantRequest req;
  req.tool = "mcp.search";
  req.operation = "read";
  std::string matched;
  CHECK(ClassifyTier(req, {"read", "deploy:prod"}, policy, &matched) == Tier::kMergeDeploy);
  CHECK(matched == "deploy-scopes");
  CHECK(ClassifyTier(req, {"read"}, policy, &matched) == Tier::kRead);
  CHECK(ClassifyTier(req, {"deploy"}, policy, &matched) == Tier::kRead);
  CHECK(ClassifyTier(req, {}, policy, &matched) == Tier::kRead);
}

TEST_CASE("PolicyEngine: ignore_case, parameter-name patterns and fail-closed values") {
  Policy policy = TestPolicy();
  policy.tools.clear();
  ToolRule shell;
  shell.name = "shell";
  shell.ignore_case = true;
  shell.tool = *Matcher::Compile("shell.exec", true);
  shell.parameters.emplace("re:cmd|command",
                           ParameterRule{*Matcher::Compile("re:cmd|command", true), std::nullopt,
                                         *ArgvPattern::Parse("argv:rm -r")});
  shell.tier = Tier::kDestructive;
  policy.tools.push_back(shell);
  ToolRule any;
  any.name = "any-param";
  any.tool = M("bash");
  any.parameters.emplace("*", ParameterRule{M("*"), M("re:.*secret.*"), std::nullopt});
  any.tier = Tier::kSecret;
  policy.tools.push_back(any);
  struct Case {
    const char* tool;
    const char* params;
    Tier tier;
  };
  const Case cases[] = {
      {"shell.exec", R"({"command":"rm -rf /"})", Tier::kDestructive},
      {"Shell.Exec", R"({"command":"rm -rf /"})", Tier::kDestructive},
      {"shell.exec", R"({"Command":"rm -rf /"})", Tier::kDestructive},
      {"shell.exec", R"({"CMD":["rm","-r","/"]})", Tier::kDestructive},
      {"shell.exec", R"({"script":"rm -rf /"})", Tier::kWrite},
      {"shell.exec", R"({"command":"ls -la"})", Tier::kWrite},
      {"shell.exec", R"({"command":{"x":1}})", Tier::kDestructive},
      {"shell.exec", R"({"command":7})", Tier::kWrite},
      {"Bash", R"({"x":"my secret"})", Tier::kWrite},  // no ignore_case on this rule
      {"bash", R"({"x":"my secret"})", Tier::kSecret},
      {"bash", R"({"a":"x","b":"the secret"})", Tier::kSecret},
      {"bash", R"({"a":"x"})", Tier::kWrite},
      {"bash", R"({})", Tier::kWrite},
      {"bash", R"({"a:b/c":"secret"})", Tier::kSecret},  // "*" alone: every name
  };
  for (const Case& c : cases) {
    CAPTURE(c.tool);
    CAPTURE(c.params);
    GrantRequest req;
    req.tool = c.tool;
    req.operation = "exec";
    req.parameters = nlohmann::json::parse(c.params);
    CHECK(TierName(ClassifyTier(req, {}, policy, nullptr)) == TierName(c.tier));
  }
}

TEST_CASE("Matcher: ignore_case folds ASCII letters in exact, glob and regex patterns") {
  const MatchCase cases[] = {
      {"shell.exec", "Shell.EXEC", true},
      {"shell.exec", "shell.exe", false},
      {"Secrets.*", "secrets.read", true},
      {"secrets.*", "SECRETS.Read", true},
      {"re:git\\.push", "GIT.Push", true},
      {"re:git\\.push", "git.pushx", false},
      {"ß", "SS", false},  // ASCII only: no Unicode case folding
  };
  for (const MatchCase& c : cases) {
    CAPTURE(c.pattern);
    CAPTURE(c.value);
    Result<Matcher> m = Matcher::Compile(c.pattern, true);
    REQUIRE(m.has_value());
    CHECK(m->Matches(c.value) == c.matches);
    CHECK(m->ignore_case());
    CHECK(m->pattern() == c.pattern);
  }
  CHECK_FALSE(Matcher::Compile("shell.exec")->Matches("Shell.exec"));
}

TEST_CASE("ScopePatternMatches and ScopePatternWithin") {
  const MatchCase matches[] = {
      {"read", "read", true},
      {"read", "reads", false},
      {"deploy:*", "deploy:prod", true},
      {"deploy:*", "deploy", false},
      {"deploy:*", "deploy:a:b", false},
      {"*", "deploy:a:b", true},
      {"mcp:*", "mcp:", true},
      {"", "read", false},
  };
  for (const MatchCase& c : matches) {
    CAPTURE(c.pattern);
    CAPTURE(c.value);
    CHECK(ScopePatternMatches(c.pattern, c.value) == c.matches);
  }
  struct Within {
    const char* inner;
    const char* outer;
    bool within;
  };
  const Within within[] = {
      {"read", "read", true},
      {"deploy:prod", "deploy:*", true},
      {"deploy:prod*", "deploy:*", true},
      {"deploy:*", "deploy:*", true},
      {"deploy:*", "deploy:prod*", false},
      {"deploy:*", "deploy:prod", false},
      {"*", "deploy:*", false},
      {"deploy:*", "*", true},
      {"*", "*", true},
      {"a*b", "a*", true},
      {"a:*", "a*", false},  // "a:x" is not matched by "a*"
      {"deploy", "deploy:*", false},
  };
  for (const Within& c : within) {
    CAPTURE(c.inner);
    CAPTURE(c.outer);
    CHECK(ScopePatternWithin(c.inner, c.outer) == c.within);
  }
}

TEST_CASE("CheckScopeWithinPrincipal: task scope scopes must lie within the roles' scopes") {
  const Policy policy = ScopedPolicy();
  struct Case {
    const char* name;
    const char* principal;
    std::vector<std::string> resources;
    std::optional<std::vector<std::string>> scopes;
    bool ok;
  };
  const Case cases[] = {
      {"absent: bounded at grant time", "eng", {"jwt://mcp.internal"}, std::nullopt, true},
      {"within", "eng", {"jwt://mcp.internal"}, std::vector<std::string>{"read", "mcp:x*"}, true},
      {"empty", "eng", {"jwt://mcp.internal"}, std::vector<std::string>{}, true},
      {"outside", "eng", {"jwt://mcp.internal"}, std::vector<std::string>{"deploy"}, false},
      {"wider than the role", "eng", {"jwt://mcp.internal"}, std::vector<std::string>{"*"}, false},
      {"a role that covers none of the resources does not count",
       "eng_dep",
       {"jwt://mcp.internal"},
       std::vector<std::string>{"deploy"},
       false},
      {"a role covering one of the resources",
       "eng_dep",
       {"jwt://mcp.internal", "jwt://deploy.internal"},
       std::vector<std::string>{"deploy"},
       true},
      {"a role without scopes allows any", "adm", {"jwt://x"}, std::vector<std::string>{"*"}, true},
  };
  for (const Case& c : cases) {
    CAPTURE(c.name);
    TaskScope scope = Scope(c.resources, Tier::kRead);
    scope.scopes = c.scopes;
    Status st = CheckScopeWithinPrincipal(scope, *policy.FindPrincipal(c.principal), policy);
    CHECK(st.has_value() == c.ok);
    if (!st) {
      CHECK(st.error().Reason() == "scope_exceeds_principal");
    }
  }
}

TEST_CASE("TaskScope: scopes are optional patterns; absent and empty differ") {
  Result<TaskScope> absent = TaskScope::FromJson(R"({"resources":["jwt://x"]})"_json);
  REQUIRE(absent.has_value());
  CHECK_FALSE(absent->scopes.has_value());
  CHECK_FALSE(absent->ToJson().contains("scopes"));
  Result<TaskScope> empty = TaskScope::FromJson(R"({"resources":["jwt://x"],"scopes":[]})"_json);
  REQUIRE(empty.has_value());
  REQUIRE(empty->scopes.has_value());
  CHECK(empty->scopes->empty());
  Result<TaskScope> some =
      TaskScope::FromJson(R"({"resources":["jwt://x"],"scopes":["read","mcp:*"]})"_json);
  REQUIRE(some.has_value());
  CHECK(TaskScope::FromJson(some->ToJson())->scopes == some->scopes);
  for (const char* bad :
       {R"({"resources":["a"],"scopes":"read"})", R"({"resources":["a"],"scopes":["a b"]})",
        R"({"resources":["a"],"scopes":["re:.*"]})", R"({"resources":["a"],"scopes":[""]})"}) {
    CAPTURE(bad);
    Result<TaskScope> s = TaskScope::FromJson(nlohmann::json::parse(bad));
    REQUIRE_FALSE(s.has_value());
    CHECK(s.error().message.find("scopes") != std::string::npos);
  }
}

}  // namespace
}  // namespace jitbroker
