// Session budgets end to end (docs/concepts.md "Session budgets"): each limit
// denies the request that would cross it with 403 budget_exceeded, audited;
// a role's session_budget bounds a larger request; the budget_exceeded
// anomaly rule revokes the session; a bad budget creates nothing.
#include <future>
#include <string>
#include <vector>

#include <doctest/doctest.h>

#include "tests/support/broker_process.h"

namespace jitbroker::testing {
namespace {

const nlohmann::json kBudgetScope = {{"resources", {"jwt://mcp.internal", "jwt://api.internal"}},
                                     {"max_tier", "pr"}};

nlohmann::json BudgetRead(const std::string& audience = "mcp.internal", int ttl = 60) {
  return {{"tool", "mcp.search"},
          {"operation", "read"},
          {"resource", "jwt://" + audience},
          {"issuer", "internal"},
          {"ttl_seconds", ttl}};
}

nlohmann::json BudgetWrite() {
  nlohmann::json w = BudgetRead();
  w["tool"] = "mcp.write";
  w["operation"] = "write";
  return w;
}

struct BudgetSession {
  std::string id, token;
  nlohmann::json opened;
};

BudgetSession OpenBudgeted(BrokerProcess& b, const std::string& key, const nlohmann::json& budget,
                           const nlohmann::json& scope = kBudgetScope) {
  nlohmann::json body = {{"agent", {{"id", "agent_budget"}}},
                         {"task", {{"id", "task_budget"}, {"scope", scope}}},
                         {"ttl_seconds", 3600}};
  if (!budget.is_null()) {
    body["budget"] = budget;
  }
  HttpResult r = b.Post("/v1/sessions", key, body);
  INFO(r.body);
  REQUIRE(r.status == 201);
  return {r.json["session_id"], r.json["session_token"], r.json};
}

HttpResult BudgetAsk(BrokerProcess& b, const BudgetSession& s, const nlohmann::json& req) {
  return b.Post("/v1/sessions/" + s.id + "/grants", s.token, req);
}

// The request was refused for crossing `limit` of the session budget.
void CheckBudgetDenied(const HttpResult& r, const std::string& limit) {
  INFO(r.body);
  REQUIRE(r.status == 403);
  CHECK(r.json["code"] == "budget_exceeded");
  CHECK(r.content_type.find("application/problem+json") != std::string::npos);
  CHECK(r.json["decision"]["result"] == "deny");
  CHECK(r.json["decision"]["code"] == "budget_exceeded");
  CHECK(r.json["decision"]["matched_rule"] == "session.budget." + limit);
  CHECK(r.json["decision"]["reason"].get<std::string>().find("session budget: " + limit) !=
        std::string::npos);
}

nlohmann::json BudgetOf(BrokerProcess& b, const BudgetSession& s) {
  HttpResult r = b.Get("/v1/sessions/" + s.id, b.engineer_key);
  REQUIRE(r.status == 200);
  return r.json["budget"];
}

TEST_CASE("Budgets: each limit denies the request that would cross it, audited") {
  auto b = BrokerProcess::Start();

  SUBCASE("max_grants; denied requests consume nothing") {
    BudgetSession s = OpenBudgeted(*b, b->engineer_key, {{"max_grants", 2}});
    CHECK(s.opened["budget"]["limits"] == nlohmann::json{{"max_grants", 2}});
    const nlohmann::json destructive = {{"tool", "shell.exec"},
                                        {"operation", "exec"},
                                        {"resource", "jwt://mcp.internal"},
                                        {"issuer", "internal"},
                                        {"parameters", {{"command", "rm -rf /"}}}};
    CHECK(BudgetAsk(*b, s, destructive).status == 403);  // denied by policy: not counted
    CHECK(BudgetAsk(*b, s, BudgetRead()).status == 201);
    CHECK(BudgetAsk(*b, s, BudgetRead()).status == 201);
    HttpResult over = BudgetAsk(*b, s, BudgetRead());
    CheckBudgetDenied(over, "max_grants");
    CHECK(over.json["decision"]["reason"] == "session budget: max_grants 2 reached");
    const nlohmann::json budget = BudgetOf(*b, s);
    CHECK(budget["limits"]["max_grants"] == 2);
    CHECK(budget["used"]["grants"] == 2);
    CHECK(budget["used"]["resources"] == 1);
    CHECK(budget["used"]["grants_per_tier"]["read"] == 2);
    CHECK(budget["used"]["live_credentials"] == 2);
    CHECK(budget["used"]["credential_seconds"] == 120);
    // Audited as a denied decision with its code.
    HttpResult audit = b->Get("/v1/audit?session_id=" + s.id, b->admin_key);
    REQUIRE(audit.status == 200);
    int budget_denials = 0;
    for (const auto& rec : audit.json["records"]) {
      if (rec["event"] == "grant.decided" && rec["policy_decision"]["code"] == "budget_exceeded") {
        ++budget_denials;
        CHECK(rec["policy_decision"]["result"] == "deny");
        CHECK(rec["jit_grant"]["grant_id"] == over.json["grant_id"]);
      }
    }
    CHECK(budget_denials == 1);
    for (const auto& rec : audit.json["records"]) {
      if (rec["event"] == "session.opened") {
        CHECK(rec["session"]["budget"] == nlohmann::json{{"max_grants", 2}});
      }
    }
  }

  SUBCASE("max_resources counts distinct resources") {
    BudgetSession s = OpenBudgeted(*b, b->engineer_key, {{"max_resources", 1}});
    CHECK(BudgetAsk(*b, s, BudgetRead("mcp.internal")).status == 201);
    CHECK(BudgetAsk(*b, s, BudgetRead("mcp.internal")).status == 201);
    CheckBudgetDenied(BudgetAsk(*b, s, BudgetRead("api.internal")), "max_resources");
  }

  SUBCASE("max_grants_per_tier bounds one tier only") {
    BudgetSession s = OpenBudgeted(*b, b->engineer_key, {{"max_grants_per_tier", {{"write", 1}}}});
    CHECK(BudgetAsk(*b, s, BudgetWrite()).status == 201);
    CheckBudgetDenied(BudgetAsk(*b, s, BudgetWrite()), "max_grants_per_tier.write");
    CHECK(BudgetAsk(*b, s, BudgetRead()).status == 201);
    const nlohmann::json budget = BudgetOf(*b, s);
    CHECK(budget["used"]["grants_per_tier"] == nlohmann::json{{"read", 1}, {"write", 1}});
  }

  SUBCASE("max_live_credentials frees a place when a credential is revoked") {
    BudgetSession s = OpenBudgeted(*b, b->engineer_key, {{"max_live_credentials", 1}});
    HttpResult first = BudgetAsk(*b, s, BudgetRead());
    REQUIRE(first.status == 201);
    CheckBudgetDenied(BudgetAsk(*b, s, BudgetRead()), "max_live_credentials");
    CHECK(BudgetOf(*b, s)["used"]["live_credentials"] == 1);
    const std::string gid = first.json["grant_id"];
    CHECK(b->Request("DELETE", "/v1/grants/" + gid, s.token).status == 200);
    CHECK(BudgetOf(*b, s)["used"]["live_credentials"] == 0);
    CHECK(BudgetAsk(*b, s, BudgetRead()).status == 201);
  }

  SUBCASE("max_credential_seconds denies a TTL that would cross it, never shortens it") {
    BudgetSession s = OpenBudgeted(*b, b->engineer_key, {{"max_credential_seconds", 500}});
    CHECK(BudgetAsk(*b, s, BudgetRead("mcp.internal", 300)).status == 201);
    HttpResult over = BudgetAsk(*b, s, BudgetRead("mcp.internal", 300));
    CheckBudgetDenied(over, "max_credential_seconds");
    CHECK(over.json["decision"]["reason"].get<std::string>().find("200 left") != std::string::npos);
    HttpResult fits = BudgetAsk(*b, s, BudgetRead("mcp.internal", 200));
    REQUIRE(fits.status == 201);
    CHECK(fits.json["ttl_seconds"] == 200);
    CHECK(BudgetOf(*b, s)["used"]["credential_seconds"] == 500);
    CheckBudgetDenied(BudgetAsk(*b, s, BudgetRead("mcp.internal", 1)), "max_credential_seconds");
  }

  SUBCASE("a request that goes pending consumes budget") {
    const nlohmann::json scope = {{"resources", {"jwt://api.internal"}},
                                  {"max_tier", "merge_deploy"}};
    BudgetSession s = OpenBudgeted(*b, b->maintainer_key, {{"max_grants", 1}}, scope);
    const nlohmann::json merge = {{"tool", "github.merge_pull_request"},
                                  {"operation", "merge"},
                                  {"resource", "jwt://api.internal"},
                                  {"issuer", "internal"},
                                  {"ttl_seconds", 120}};
    CHECK(BudgetAsk(*b, s, merge).status == 202);
    CheckBudgetDenied(BudgetAsk(*b, s, BudgetRead("api.internal")), "max_grants");
  }

  SUBCASE("an approved grant is collected only while max_live_credentials leaves room") {
    const nlohmann::json scope = {{"resources", {"jwt://api.internal"}},
                                  {"max_tier", "merge_deploy"}};
    BudgetSession s = OpenBudgeted(*b, b->maintainer_key, {{"max_live_credentials", 1}}, scope);
    const nlohmann::json merge = {{"tool", "github.merge_pull_request"},
                                  {"operation", "merge"},
                                  {"resource", "jwt://api.internal"},
                                  {"issuer", "internal"},
                                  {"ttl_seconds", 120}};
    HttpResult pending = BudgetAsk(*b, s, merge);
    REQUIRE(pending.status == 202);  // pending adds no live credential yet
    HttpResult live = BudgetAsk(*b, s, BudgetRead("api.internal"));
    REQUIRE(live.status == 201);
    HttpResult ok = b->Post(
        "/v1/approvals/" + pending.json["approval"]["id"].get<std::string>(), b->maintainer2_key,
        {{"decision", "approve"}, {"request_digest", pending.json["approval"]["request_digest"]}});
    REQUIRE(ok.status == 200);
    const std::string gid = pending.json["grant_id"];
    HttpResult got = b->Get("/v1/grants/" + gid, s.token);
    INFO(got.body);
    REQUIRE(got.status == 200);
    CHECK(got.json["state"] == "denied");
    CHECK(got.json["decision"]["code"] == "budget_exceeded");
    CHECK(got.json["decision"]["stage"] == "collection");
    CHECK_FALSE(got.json.contains("credential"));
  }

  SUBCASE("a session without a budget shows its use and no limits") {
    BudgetSession s = OpenBudgeted(*b, b->engineer_key, nullptr);
    CHECK_FALSE(s.opened.contains("budget"));
    CHECK(BudgetAsk(*b, s, BudgetRead()).status == 201);
    const nlohmann::json budget = BudgetOf(*b, s);
    CHECK(budget["limits"] == nlohmann::json::object());
    CHECK(budget["used"]["grants"] == 1);
  }
}

TEST_CASE("Budgets: concurrent requests of one session never overshoot a limit") {
  auto b = BrokerProcess::Start();
  constexpr int kLimit = 4;
  constexpr int kRequests = 12;
  BudgetSession s =
      OpenBudgeted(*b, b->engineer_key, {{"max_grants", kLimit}, {"max_live_credentials", 50}});
  std::vector<std::future<HttpResult>> asks;
  for (int i = 0; i < kRequests; ++i) {
    asks.push_back(std::async(std::launch::async, [&] { return BudgetAsk(*b, s, BudgetRead()); }));
  }
  int issued = 0;
  for (auto& f : asks) {
    HttpResult r = f.get();
    INFO(r.body);
    if (r.status == 201) {
      ++issued;
    } else {
      // Over the budget (or, at worst, the per-session rate limit): never minted.
      CHECK((r.status == 429 || r.json["code"] == "budget_exceeded"));
    }
  }
  CHECK(issued == kLimit);
  CHECK(BudgetOf(*b, s)["used"]["grants"] == kLimit);
}

TEST_CASE("Budgets: a role's session_budget bounds a larger request, in list entries too") {
  BrokerOptions o;
  o.role_extra["engineer"] = "session_budget: {max_grants: 1, max_grants_per_tier: {write: 3}}";
  auto b = BrokerProcess::Start(o);
  BudgetSession s = OpenBudgeted(
      *b, b->engineer_key,
      {{"max_grants", 50}, {"max_resources", 4}, {"max_grants_per_tier", {{"write", 2}}}});
  const nlohmann::json limits = {
      {"max_grants", 1}, {"max_resources", 4}, {"max_grants_per_tier", {{"write", 2}}}};
  CHECK(s.opened["budget"]["limits"] == limits);
  CHECK(BudgetAsk(*b, s, BudgetRead()).status == 201);
  CheckBudgetDenied(BudgetAsk(*b, s, BudgetRead()), "max_grants");
  HttpResult list = b->Get("/v1/sessions", b->engineer_key);
  REQUIRE(list.status == 200);
  REQUIRE(list.json["sessions"].size() == 1);
  CHECK(list.json["sessions"][0]["budget"]["limits"] == limits);
  // Without a budget of its own the session still gets the role's.
  BudgetSession plain = OpenBudgeted(*b, b->engineer_key, nullptr);
  CHECK(plain.opened["budget"]["limits"] ==
        nlohmann::json{{"max_grants", 1}, {"max_grants_per_tier", {{"write", 3}}}});
  // A principal whose roles carry no budget is not bounded.
  BudgetSession maint = OpenBudgeted(*b, b->maintainer_key, nullptr,
                                     {{"resources", {"jwt://api.internal"}}, {"max_tier", "pr"}});
  CHECK_FALSE(maint.opened.contains("budget"));
}

TEST_CASE("Budgets: jitctl sessions open --max-… sets the budget, sessions show prints its use") {
  auto b = BrokerProcess::Start();
  const std::string env =
      "env JITBROKER_URL=" + b->url() + " JITBROKER_API_KEY=" + b->engineer_key + " ";
  auto [rc, out] = RunCommand(env + JITCTL_BINARY +
                              " sessions open --json --agent agent_cli --task task_cli "
                              "--resource jwt://mcp.internal --max-tier read --max-grants 2 "
                              "--max-grants-per-tier read=1 --max-credential-seconds 900 2>&1");
  INFO(out);
  REQUIRE(rc == 0);
  const nlohmann::json opened = nlohmann::json::parse(out);
  CHECK(opened["budget"]["limits"] == nlohmann::json{{"max_grants", 2},
                                                     {"max_grants_per_tier", {{"read", 1}}},
                                                     {"max_credential_seconds", 900}});
  BudgetSession s{opened["session_id"], opened["session_token"], opened};
  REQUIRE(BudgetAsk(*b, s, BudgetRead("mcp.internal", 300)).status == 201);
  auto [rc2, shown] = RunCommand(env + JITCTL_BINARY + " sessions show " + s.id + " 2>&1");
  INFO(shown);
  CHECK(rc2 == 0);
  CHECK(shown.find("budget:\n  grants: 1 of 2\n") != std::string::npos);
  CHECK(shown.find("  grants.read: 1 of 1\n") != std::string::npos);
  CHECK(shown.find("  credential_seconds: 300 of 900\n") != std::string::npos);
  auto [rc3, bad] = RunCommand(env + JITCTL_BINARY +
                               " sessions open --agent a --task t --resource jwt://mcp.internal "
                               "--max-grants-per-tier admin=1 2>&1");
  CHECK(rc3 != 0);
  CHECK(bad.find("--max-grants-per-tier") != std::string::npos);
}

TEST_CASE("Budgets: the budget_exceeded anomaly rule revokes the session") {
  BrokerOptions o;
  o.anomaly = "[{rule: budget_exceeded, count: 2, window_seconds: 60}]";
  auto b = BrokerProcess::Start(o);
  BudgetSession s = OpenBudgeted(*b, b->engineer_key, {{"max_grants", 1}});
  CHECK(BudgetAsk(*b, s, BudgetRead()).status == 201);
  CheckBudgetDenied(BudgetAsk(*b, s, BudgetRead()), "max_grants");
  CHECK(b->Get("/v1/sessions/" + s.id, b->engineer_key).json["state"] == "active");
  HttpResult last = BudgetAsk(*b, s, BudgetRead());
  INFO(last.body);
  CHECK(last.status == 403);
  CHECK(last.json["decision"]["code"] == "anomaly_detected");
  HttpResult session = b->Get("/v1/sessions/" + s.id, b->engineer_key);
  CHECK(session.json["state"] == "revoked");
  CHECK(session.json["end_reason"].get<std::string>().find("budget_exceeded") != std::string::npos);
  for (const auto& g : session.json["grants"]) {
    CHECK(g["state"] != "active");
  }
  bool found = false;
  HttpResult audit = b->Get("/v1/audit?session_id=" + s.id, b->admin_key);
  INFO(audit.body);
  REQUIRE(audit.status == 200);
  for (const auto& rec : audit.json["records"]) {
    if (rec["event"] == "anomaly.detected") {
      found = true;
      CHECK(rec["anomaly"]["kind"] == "budget_exceeded");
    }
  }
  CHECK(found);
}

TEST_CASE("Budgets: an invalid budget is refused with invalid_budget and creates nothing") {
  auto b = BrokerProcess::Start();
  const nlohmann::json cases[] = {
      5,
      nlohmann::json::array(),
      {{"max_grants", 0}},
      {{"max_grants", -1}},
      {{"max_grants", 1.5}},
      {{"max_grants", "3"}},
      {{"max_grants", 1000001}},
      {{"max_resources", nullptr}},
      {{"max_live_credentials", true}},
      {{"max_credential_seconds", 3153600001}},
      {{"max_credential_seconds", 18446744073709551615ULL}},
      {{"max_grant", 3}},
      {{"max_grants_per_tier", 3}},
      {{"max_grants_per_tier", {{"nope", 1}}}},
      {{"max_grants_per_tier", {{"write", 0}}}},
  };
  for (const nlohmann::json& budget : cases) {
    CAPTURE(budget.dump());
    nlohmann::json body = {{"agent", {{"id", "agent_budget"}}},
                           {"task", {{"id", "task_budget"}, {"scope", kBudgetScope}}},
                           {"budget", budget}};
    HttpResult r = b->Post("/v1/sessions", b->engineer_key, body);
    INFO(r.body);
    CHECK(r.status == 400);
    CHECK(r.json["code"] == "invalid_budget");
    CHECK(r.content_type.find("application/problem+json") != std::string::npos);
  }
  CHECK(b->Get("/v1/sessions", b->engineer_key).json["sessions"].empty());
  HttpResult audit = b->Get("/v1/audit", b->admin_key);
  REQUIRE(audit.status == 200);
  for (const auto& rec : audit.json["records"]) {
    CHECK(rec["event"] != "session.opened");
  }
}

}  // namespace
}  // namespace jitbroker::testing
