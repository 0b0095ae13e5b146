// Session budgets (docs/concepts.md "Session budgets"): the effective budget
// of a session, the strict wire form, the role config, counting a session's
// use and checking one more grant, the anomaly rule, and jitctl's rendering.
#include <string>
#include <vector>

#include <doctest/doctest.h>

#include "broker/config/config.h"
#include "broker/lifecycle/anomaly.h"
#include "broker/service/budget.h"
#include "cli/format.h"
#include "jitbroker/policy.h"
#include "tests/support/temp_dir.h"

namespace jitbroker {
namespace {

using service::BudgetRequest;
using service::BudgetUse;

SessionBudget BudgetFromText(const std::string& text) {
  Result<SessionBudget> b = SessionBudget::FromJson(nlohmann::json::parse(text));
  REQUIRE_MESSAGE(b.has_value(), (b ? "" : b.error().ToString()));
  return *b;
}

GrantRecord BudgetGrant(GrantState state, std::string resource, std::string tier, int64_t ttl) {
  GrantRecord g;
  g.state = state;
  g.resource = std::move(resource);
  g.tier = std::move(tier);
  g.ttl_seconds = ttl;
  return g;
}

TEST_CASE("EffectiveBudget: the smallest of the request and each role's budget, limit by limit") {
  Policy policy;
  Role big;
  big.name = "big";
  big.session_budget = BudgetFromText(
      R"({"max_grants": 100, "max_resources": 2, "max_grants_per_tier": {"write": 5, "pr": 1}})");
  Role small;
  small.name = "small";
  small.session_budget = BudgetFromText(R"({"max_grants": 10, "max_credential_seconds": 600,
                         "max_grants_per_tier": {"write": 7}})");
  Role none;  // no budget: bounds nothing
  none.name = "none";
  policy.roles = {{"big", big}, {"small", small}, {"none", none}};
  Principal p;
  p.id = "p";
  p.roles = {"big", "small", "none"};

  SessionBudget requested = BudgetFromText(
      R"({"max_grants": 50, "max_live_credentials": 3, "max_grants_per_tier": {"write": 9, "read": 4}})");
  SessionBudget e = EffectiveBudget(requested, p, policy);
  CHECK(e.max_grants == 10);
  CHECK(e.max_resources == 2);
  CHECK(e.max_live_credentials == 3);
  CHECK(e.max_credential_seconds == 600);
  CHECK(e.max_grants_per_tier ==
        std::map<Tier, int64_t>{{Tier::kRead, 4}, {Tier::kWrite, 5}, {Tier::kPr, 1}});
  CHECK(e.ToJson() == nlohmann::json::parse(R"({"max_grants": 10, "max_resources": 2,
        "max_live_credentials": 3, "max_credential_seconds": 600,
        "max_grants_per_tier": {"read": 4, "write": 5, "pr": 1}})"));

  // No request and no role budget: unbounded.
  Principal plain;
  plain.id = "q";
  plain.roles = {"none"};
  CHECK(EffectiveBudget(SessionBudget{}, plain, policy).empty());
  // A request smaller than every role keeps its own limits.
  SessionBudget tiny = BudgetFromText(R"({"max_grants": 1})");
  CHECK(EffectiveBudget(tiny, p, policy).max_grants == 1);
  // Round trip through the stored form.
  CHECK(BudgetFromText(e.ToJson().dump()).ToJson() == e.ToJson());
}

TEST_CASE("SessionBudget::FromJson: strict keys, types and bounds, all invalid_budget") {
  const char* bad[] = {
      "5",
      "[]",
      R"({"max_grants": 0})",
      R"({"max_grants": -4})",
      R"({"max_grants": 2.5})",
      R"({"max_grants": "2"})",
      R"({"max_grants": null})",
      R"({"max_resources": 1000001})",
      R"({"max_credential_seconds": 3153600001})",
      R"({"max_live_credentials": 18446744073709551615})",
      R"({"max_grant": 1})",
      R"({"max_grants_per_tier": []})",
      R"({"max_grants_per_tier": {"admin": 1}})",
      R"({"max_grants_per_tier": {"read": 0}})",
  };
  for (const char* text : bad) {
    CAPTURE(text);
    Result<SessionBudget> b = SessionBudget::FromJson(nlohmann::json::parse(text));
    REQUIRE_FALSE(b.has_value());
    CHECK(b.error().Reason() == "invalid_budget");
    CHECK(b.error().message.find("budget") != std::string::npos);
  }
  CHECK(BudgetFromText("{}").empty());
  CHECK(BudgetFromText(R"({"max_credential_seconds": 3153600000})").max_credential_seconds ==
        kMaxBudgetSeconds);
}

TEST_CASE("Config: roles.NAME.session_budget loads, and bad ones name file, line and key") {
  testing::TempDir dir;
  Result<config::Config> c = config::LoadConfigText(R"(
policy:
  version: v1
  roles:
    dev: {session_budget: {max_grants: 20, max_grants_per_tier: {write: 2}}}
    other: {}
)",
                                                    dir.File("b.yaml"));
  REQUIRE_MESSAGE(c.has_value(), (c ? "" : c.error().ToString()));
  const Role& dev = c->policy->roles.at("dev");
  CHECK(dev.session_budget.max_grants == 20);
  CHECK(dev.session_budget.max_grants_per_tier == std::map<Tier, int64_t>{{Tier::kWrite, 2}});
  CHECK(c->policy->roles.at("other").session_budget.empty());

  struct Case {
    const char* budget;
    const char* key;
  };
  const Case cases[] = {
      {"{max_grants: 0}", "policy.roles.dev.session_budget.max_grants"},
      {"{max_grantz: 3}", "policy.roles.dev.session_budget.max_grantz"},
      {"{max_grants_per_tier: {admin: 1}}", "policy.roles.dev.session_budget.max_grants_per_tier"},
      {"{max_grants_per_tier: {write: -1}}",
       "policy.roles.dev.session_budget.max_grants_per_tier.write"},
      {"{max_credential_seconds: x}", "policy.roles.dev.session_budget.max_credential_seconds"},
      {"5", "policy.roles.dev.session_budget"},
  };
  for (const Case& k : cases) {
    CAPTURE(k.budget);
    Result<config::Config> r = config::LoadConfigText(
        std::string("policy:\n  version: v1\n  roles:\n    dev:\n      session_budget: ") +
            k.budget + "\n",
        dir.File("bad.yaml"));
    REQUIRE_FALSE(r.has_value());
    CHECK(r.error().message.find("bad.yaml:") != std::string::npos);
    CHECK(r.error().message.find(k.key) != std::string::npos);
  }
}

TEST_CASE("Budget use: what counts, what is live, and which limit one more grant crosses") {
  const TimePoint now = FromUnixSeconds(1'800'000'000);
  std::vector<GrantRecord> grants;
  grants.push_back(BudgetGrant(GrantState::kActive, "jwt://a", "read", 300));
  grants.back().expires_at = now + Seconds(10);
  grants.push_back(BudgetGrant(GrantState::kActive, "jwt://a", "read", 100));
  grants.back().expires_at = now;  // past its expiry: not live
  grants.push_back(BudgetGrant(GrantState::kRevoked, "jwt://b", "write", 50));
  grants.push_back(BudgetGrant(GrantState::kDenied, "jwt://c", "write", 0));  // consumed nothing
  GrantRecord asked = BudgetGrant(GrantState::kDenied, "jwt://d", "merge_deploy", 60);
  asked.approval_id = "apr_1";  // went pending, then denied by a human: counted
  grants.push_back(asked);
  grants.push_back(BudgetGrant(GrantState::kMinting, "jwt://a", "read", 10));

  const BudgetUse use = service::CountBudgetUse(grants, now);
  CHECK(use.grants == 5);
  CHECK(use.resources == std::set<std::string>{"jwt://a", "jwt://b", "jwt://d"});
  CHECK(use.grants_per_tier ==
        std::map<Tier, int64_t>{{Tier::kRead, 3}, {Tier::kWrite, 1}, {Tier::kMergeDeploy, 1}});
  CHECK(use.live_credentials == 2);
  CHECK(use.credential_seconds == 520);
  CHECK(use.ToJson()["resources"] == 3);
  CHECK(use.ToJson()["grants_per_tier"] ==
        nlohmann::json{{"read", 3}, {"write", 1}, {"merge_deploy", 1}});

  const BudgetRequest read{.resource = "jwt://a", .tier = Tier::kRead, .ttl_seconds = 80};
  auto limit_of = [&](const char* budget, const BudgetRequest& req) -> std::string {
    auto refusal = service::CheckBudget(BudgetFromText(budget), use, req);
    return refusal ? refusal->limit : std::string("none");
  };
  CHECK(limit_of("{}", read) == "none");
  CHECK(limit_of(R"({"max_grants": 5})", read) == "max_grants");
  CHECK(limit_of(R"({"max_grants": 6})", read) == "none");
  CHECK(limit_of(R"({"max_resources": 3})", read) == "none");  // jwt://a is already counted
  BudgetRequest fresh = read;
  fresh.resource = "jwt://z";
  CHECK(limit_of(R"({"max_resources": 3})", fresh) == "max_resources");
  CHECK(limit_of(R"({"max_grants_per_tier": {"read": 3}})", read) == "max_grants_per_tier.read");
  CHECK(limit_of(R"({"max_grants_per_tier": {"write": 1}})", read) == "none");
  CHECK(limit_of(R"({"max_live_credentials": 2})", read) == "max_live_credentials");
  BudgetRequest pending = read;
  pending.mints = false;  // goes pending: adds no live credential yet
  CHECK(limit_of(R"({"max_live_credentials": 2})", pending) == "none");
  CHECK(limit_of(R"({"max_credential_seconds": 600})", read) == "none");  // 520 + 80 = 600
  CHECK(limit_of(R"({"max_credential_seconds": 599})", read) == "max_credential_seconds");
  BudgetRequest collecting = read;
  collecting.collecting = true;  // counted when it was asked: only the live limit applies
  CHECK(limit_of(R"({"max_grants": 1})", collecting) == "none");
  CHECK(limit_of(R"({"max_live_credentials": 2})", collecting) == "max_live_credentials");

  auto refusal = service::CheckBudget(BudgetFromText(R"({"max_grants": 5})"), use, read);
  REQUIRE(refusal.has_value());
  CHECK(refusal->reason == "session budget: max_grants 5 reached");
  refusal = service::CheckBudget(BudgetFromText(R"({"max_credential_seconds": 550})"), use, read);
  REQUIRE(refusal.has_value());
  CHECK(refusal->reason ==
        "session budget: max_credential_seconds 550 would be exceeded (520 used, 80 requested, 30 "
        "left)");
}

TEST_CASE("Anomaly: budget_exceeded counts budget denials only") {
  Result<std::vector<lifecycle::AnomalyRule>> rules = lifecycle::ParseAnomalyRulesText(
      "[{rule: budget_exceeded, count: 2, window_seconds: 60}]", "a.yaml");
  REQUIRE_MESSAGE(rules.has_value(), (rules ? "" : rules.error().ToString()));
  REQUIRE(rules->size() == 1);
  CHECK((*rules)[0].kind == lifecycle::AnomalyRule::Kind::kBudgetExceeded);
  CHECK_FALSE(
      lifecycle::ParseAnomalyRulesText("[{rule: budget_exceeded, sequence: [read, write]}]", "a.y")
          .has_value());
  CHECK_FALSE(lifecycle::ParseAnomalyRulesText("[{rule: budget_exceeded}]", "a.y").has_value());

  lifecycle::AnomalyDetector detector(std::move(*rules));
  const TimePoint t0 = FromUnixSeconds(1'800'000'000);
  auto observe = [&](int at, const char* code) {
    return detector.Observe("ses_1", {t0 + Seconds(at), Tier::kRead, DecisionResult::kDeny, code,
                                      "grt_" + std::to_string(at)});
  };
  CHECK_FALSE(observe(0, "budget_exceeded"));
  CHECK_FALSE(observe(1, "out_of_scope"));
  std::optional<lifecycle::AnomalyTrigger> t = observe(2, "budget_exceeded");
  REQUIRE(t.has_value());
  CHECK(t->kind == "budget_exceeded");
  CHECK(t->evidence["count"] == 2);
}

TEST_CASE("jitctl: budget flags of sessions open, and budget use in sessions show") {
  auto parse = [](std::vector<std::string> argv) {
    argv.insert(argv.begin(),
                {"sessions", "open", "--agent", "a", "--task", "t", "--resource", "jwt://x"});
    return cli::ParseCommandLine(argv);
  };
  auto args = parse({"--max-grants", "10", "--max-grants-per-tier", "write=2",
                     "--max-grants-per-tier", "read=5", "--max-credential-seconds", "3600",
                     "--max-live-credentials", "2", "--max-resources", "3"});
  REQUIRE_MESSAGE(args.has_value(), (args ? "" : args.error().message));
  auto body = cli::BuildSessionOpenBody(args->args);
  REQUIRE_MESSAGE(body.has_value(), (body ? "" : body.error()));
  CHECK((*body)["budget"] == nlohmann::json::parse(R"({"max_grants": 10, "max_resources": 3,
        "max_live_credentials": 2, "max_credential_seconds": 3600,
        "max_grants_per_tier": {"write": 2, "read": 5}})"));
  auto none = parse({});
  REQUIRE(none.has_value());
  CHECK_FALSE(cli::BuildSessionOpenBody(none->args)->contains("budget"));
  const std::vector<std::vector<std::string>> bad_flags = {{"--max-grants", "0"},
                                                           {"--max-grants", "x"},
                                                           {"--max-grants-per-tier", "admin=1"},
                                                           {"--max-grants-per-tier", "write"},
                                                           {"--max-grants-per-tier", "write=0"}};
  for (const std::vector<std::string>& bad : bad_flags) {
    CAPTURE(bad[1]);
    auto a = parse(bad);
    REQUIRE(a.has_value());
    CHECK_FALSE(cli::BuildSessionOpenBody(a->args).has_value());
  }

  const std::string shown = cli::FormatBudget(nlohmann::json::parse(R"({
      "limits": {"max_grants": 10, "max_grants_per_tier": {"write": 2}},
      "used": {"grants": 3, "resources": 1, "grants_per_tier": {"read": 2, "write": 1},
               "live_credentials": 1, "credential_seconds": 900}})"));
  CHECK(shown ==
        "  grants: 3 of 10\n"
        "  resources: 1 (no limit)\n"
        "  grants.read: 2 (no limit)\n"
        "  grants.write: 1 of 2\n"
        "  live_credentials: 1 (no limit)\n"
        "  credential_seconds: 900 (no limit)\n");
}

}  // namespace
}  // namespace jitbroker
