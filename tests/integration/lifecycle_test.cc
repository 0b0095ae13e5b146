// Issue #3 end to end: invocation-bound approvals, long-poll collection,
// stall and expiry sweeping, anomaly rules and bulk revocation, against the
// real daemon.
#include <future>
#include <mutex>
#include <thread>

#include <doctest/doctest.h>

#include "tests/support/broker_process.h"

namespace jitbroker::testing {
namespace {

const nlohmann::json kMaintScope = {{"resources", {"jwt://api.internal"}},
                                    {"max_tier", "merge_deploy"}};
const nlohmann::json kMerge = {{"tool", "github.merge_pull_request"}, {"operation", "merge"},
                               {"resource", "jwt://api.internal"},    {"issuer", "internal"},
                               {"parameters", {{"pull", 842}}},       {"ttl_seconds", 120}};
const nlohmann::json kRead = {{"tool", "mcp.search"},
                              {"operation", "read"},
                              {"resource", "jwt://mcp.internal"},
                              {"issuer", "internal"}};
const nlohmann::json kEngScope = {{"resources", {"jwt://mcp.internal"}}, {"max_tier", "pr"}};

std::vector<std::string> AuditEvents(BrokerProcess& b, const std::string& sid) {
  auto r = b.Get("/v1/audit?session_id=" + sid, b.admin_key);
  REQUIRE(r.status == 200);
  std::vector<std::string> out;
  for (const auto& rec : r.json["records"]) out.push_back(rec["event"]);
  return out;
}

struct Pending {
  std::string sid, token, grant_id, approval_id, digest;
};

Pending RequestMerge(BrokerProcess& b) {
  auto [sid, token] = b.OpenSession(b.maintainer_key, kMaintScope);
  auto r = b.Post("/v1/sessions/" + sid + "/grants", token, kMerge);
  INFO(r.body);
  REQUIRE(r.status == 202);
  return {sid, token, r.json["grant_id"], r.json["approval"]["id"],
          r.json["approval"]["request_digest"]};
}

nlohmann::json Decide(const std::string& decision, const std::string& digest,
                      const std::string& comment = "") {
  nlohmann::json j = {{"decision", decision}, {"request_digest", digest}};
  if (!comment.empty()) j["comment"] = comment;
  return j;
}

TEST_CASE("Approvals: approve on the exact digest, the agent collects the credential once") {
  auto b = BrokerProcess::Start();
  Pending p = RequestMerge(*b);

  // Approvers see the full context.
  auto list = b->Get("/v1/approvals?state=pending", b->maintainer2_key);
  REQUIRE(list.status == 200);
  REQUIRE(list.json["approvals"].size() == 1);
  const auto& a = list.json["approvals"][0];
  CHECK(a["approval_id"] == p.approval_id);
  CHECK(a["request_digest"] == p.digest);
  CHECK(a["human_principal"] == "maint_1");
  CHECK(a["agent"]["id"] == "agent_test");
  CHECK(a["task"]["id"] == "task_test");
  CHECK(a["request"]["tool"] == "github.merge_pull_request");
  CHECK(a["request"]["parameters"]["pull"] == 842);
  CHECK(a["tier"] == "merge_deploy");
  CHECK(a["decision"]["matched_rule"] == "tiers.merge_deploy");
  CHECK(a["decision"]["reason"].get<std::string>().find("tools[0]") != std::string::npos);
  CHECK(a["four_eyes"] == true);
  // Engineers are not approvers of this tier.
  CHECK(b->Get("/v1/approvals", b->engineer_key).json["approvals"].empty());

  // The agent long-polls while a human decides.
  auto waiter = std::async(std::launch::async, [&] {
    return b->Request("GET", "/v1/grants/" + p.grant_id + "?wait=10", p.token);
  });
  std::this_thread::sleep_for(std::chrono::milliseconds(200));
  auto ok = b->Post("/v1/approvals/" + p.approval_id, b->maintainer2_key,
                    Decide("approve", p.digest, "LGTM"));
  INFO(ok.body);
  REQUIRE(ok.status == 200);
  CHECK(ok.json["state"] == "approved");
  auto got = waiter.get();
  INFO(got.body);
  REQUIRE(got.status == 200);
  CHECK(got.json["state"] == "active");
  REQUIRE(got.json.contains("credential"));
  CHECK(got.json["credential"]["type"] == "jwt");
  CHECK(got.json["approval"]["approver"] == "maint_2");
  CHECK(got.json["approval"]["comment"] == "LGTM");
  // TTL starts at mint.
  CHECK(got.json["ttl_seconds"] == 120);

  // Exactly once.
  auto again = b->Request("GET", "/v1/grants/" + p.grant_id, p.token);
  CHECK(again.json["state"] == "active");
  CHECK_FALSE(again.json.contains("credential"));

  // Approval, mint and fingerprint are linked in the chain.
  auto recs = b->Get("/v1/audit?session_id=" + p.sid, b->admin_key).json["records"];
  std::vector<std::string> events;
  for (const auto& r : recs) events.push_back(r["event"]);
  CHECK(events == std::vector<std::string>{"session.opened", "grant.decided", "approval.decided",
                                           "credential.minted"});
  CHECK(recs[2]["jit_grant"]["approval"]["approver"] == "maint_2");
  CHECK(recs[3]["jit_grant"]["approval"]["approver"] == "maint_2");
  CHECK(recs[3]["jit_grant"]["approval_id"] == p.approval_id);
  CHECK(recs[3]["jit_grant"]["request_digest"] == p.digest);
  CHECK(recs[3]["jit_grant"]["credential_sha256"].get<std::string>().size() == 64);
  CHECK(recs[3]["prev_hash"] == recs[2]["hash"]);
}

TEST_CASE("Approvals: every refusal is precise and leaves the approval pending") {
  auto b = BrokerProcess::Start();
  Pending p = RequestMerge(*b);
  const std::string path = "/v1/approvals/" + p.approval_id;
  std::string wrong = p.digest;
  wrong[0] = wrong[0] == 'a' ? 'b' : 'a';
  struct Case {
    const char* name;
    std::string key;
    nlohmann::json body;
    int status;
    const char* code;
  } cases[] = {
      {"digest mismatch", b->maintainer2_key, Decide("approve", wrong), 409, "digest_mismatch"},
      {"approver is the requester (four-eyes)", b->maintainer_key, Decide("approve", p.digest), 403,
       "four_eyes"},
      {"not an approver", b->engineer_key, Decide("approve", p.digest), 403, "not_an_approver"},
      {"agent token", p.token, Decide("approve", p.digest), 403, "principal_required"},
      {"bad decision", b->maintainer2_key, Decide("maybe", p.digest), 400, "invalid_value"},
      {"missing digest", b->maintainer2_key, {{"decision", "approve"}}, 400, "missing_field"},
  };
  for (const auto& c : cases) {
    CAPTURE(c.name);
    auto r = b->Post(path, c.key, c.body);
    INFO(r.body);
    CHECK(r.status == c.status);
    CHECK(r.json["code"] == c.code);
  }
  CHECK(b->Get("/v1/grants/" + p.grant_id, p.token).json["state"] == "pending");
  CHECK(b->Post("/v1/approvals/apr_nope", b->maintainer2_key, Decide("approve", p.digest)).status ==
        404);

  // Deny carries the comment back; a second decision is refused.
  auto deny = b->Post(path, b->maintainer2_key, Decide("deny", p.digest, "not during the freeze"));
  REQUIRE(deny.status == 200);
  auto again = b->Post(path, b->maintainer2_key, Decide("approve", p.digest));
  CHECK(again.status == 409);
  CHECK(again.json["code"] == "approval_not_pending");
  auto g = b->Get("/v1/grants/" + p.grant_id + "?wait=1", p.token);
  CHECK(g.json["state"] == "denied");
  CHECK(g.json["decision"]["code"] == "approval_denied");
  CHECK(g.json["approval"]["comment"] == "not during the freeze");
  CHECK(g.json["decision"]["reason"].get<std::string>().find("not during the freeze") !=
        std::string::npos);
  CHECK_FALSE(g.json.contains("credential"));
}

TEST_CASE("Approvals: double approval, expiry and a revoked session") {
  BrokerOptions o;
  o.tiers =
      "{merge_deploy: {control: approval, approvers: [\"role:maintainer\"], four_eyes: true, "
      "approval_ttl_seconds: 1}}";
  o.sessions = "{heartbeat_seconds: 60, stall_after_missed: 3, sweep_interval_ms: 100}";
  auto b = BrokerProcess::Start(o);

  SUBCASE("double approval") {
    Pending p = RequestMerge(*b);
    CHECK(b->Post("/v1/approvals/" + p.approval_id, b->maintainer2_key, Decide("approve", p.digest))
              .status == 200);
    auto second =
        b->Post("/v1/approvals/" + p.approval_id, b->maintainer2_key, Decide("approve", p.digest));
    CHECK(second.status == 409);
    CHECK(second.json["code"] == "approval_not_pending");
  }
  SUBCASE("approval after expiry is refused and the expiry is a denial") {
    Pending p = RequestMerge(*b);
    std::this_thread::sleep_for(std::chrono::milliseconds(1300));
    auto late =
        b->Post("/v1/approvals/" + p.approval_id, b->maintainer2_key, Decide("approve", p.digest));
    INFO(late.body);
    CHECK(late.status == 409);
    CHECK((late.json["code"] == "approval_expired" || late.json["code"] == "approval_not_pending"));
    auto g = b->Get("/v1/grants/" + p.grant_id, p.token);
    CHECK(g.json["state"] == "expired");
    CHECK(g.json["decision"]["result"] == "deny");
    CHECK(g.json["decision"]["code"] == "approval_expired");
    auto events = AuditEvents(*b, p.sid);
    CHECK(std::find(events.begin(), events.end(), "approval.expired") != events.end());
  }
  SUBCASE("approval of a revoked session") {
    Pending p = RequestMerge(*b);
    REQUIRE(
        b->Post("/v1/sessions/" + p.sid + "/revoke", b->admin_key, {{"reason", "test"}}).status ==
        200);
    auto r =
        b->Post("/v1/approvals/" + p.approval_id, b->maintainer2_key, Decide("approve", p.digest));
    CHECK(r.status == 409);
    CHECK(r.json["code"] == "session_revoked");
  }
}

TEST_CASE("Lifecycle: a session that misses heartbeats is stalled and revoked by the sweeper") {
  BrokerOptions o;
  o.sessions = "{stall_after_missed: 1, sweep_interval_ms: 100}";
  auto b = BrokerProcess::Start(o);
  auto [sid, token] = b->OpenSession(b->engineer_key, kEngScope, 3600, 1);
  auto g = b->Post("/v1/sessions/" + sid + "/grants", token, kRead);
  REQUIRE(g.status == 201);
  // Heartbeats keep it alive.
  for (int i = 0; i < 3; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(500));
    REQUIRE(b->Post("/v1/sessions/" + sid + "/heartbeat", token, nlohmann::json::object()).status ==
            200);
  }
  // Silence stalls it without any further call from the agent.
  std::string state;
  for (int i = 0; i < 40 && state != "stalled"; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    state = b->Get("/v1/sessions/" + sid, b->engineer_key).json["state"];
  }
  CHECK(state == "stalled");
  auto s = b->Get("/v1/sessions/" + sid, b->engineer_key);
  CHECK(s.json["grants"][0]["state"] == "revoked");
  auto intro = b->Request("POST", "/v1/introspect", b->admin_key,
                          "token=" + g.json["credential"]["token"].get<std::string>(),
                          "application/x-www-form-urlencoded");
  CHECK(intro.json["active"] == false);
  auto events = AuditEvents(*b, sid);
  CHECK(std::find(events.begin(), events.end(), "session.stalled") != events.end());
  auto r = b->Post("/v1/sessions/" + sid + "/grants", token, kRead);
  CHECK(r.status == 409);
  CHECK(r.json["code"] == "session_stalled");
}

struct AnomalyCase {
  const char* name;
  const char* rule;
  std::vector<nlohmann::json> requests;  // the last one triggers
};

TEST_CASE("Anomaly: each rule revokes the session with evidence in the audit trail") {
  const nlohmann::json out_of_scope = {{"tool", "x"},
                                       {"operation", "read"},
                                       {"resource", "jwt://api.internal"},
                                       {"issuer", "internal"}};
  const nlohmann::json destructive = {{"tool", "shell.exec"},
                                      {"operation", "exec"},
                                      {"resource", "jwt://mcp.internal"},
                                      {"issuer", "internal"},
                                      {"parameters", {{"command", "rm -rf /"}}}};
  const nlohmann::json write = {{"tool", "mcp.write"},
                                {"operation", "write"},
                                {"resource", "jwt://mcp.internal"},
                                {"issuer", "internal"}};
  const AnomalyCase cases[] = {
      {"denied_burst",
       "[{rule: denied_burst, count: 3, window_seconds: 60}]",
       {destructive, destructive, destructive}},
      {"out_of_scope", "[{rule: out_of_scope, count: 2}]", {out_of_scope, kRead, out_of_scope}},
      {"tier_chain",
       "[{rule: tier_chain, sequence: [read, write], window_seconds: 300}]",
       {kRead, kRead, write}},
      {"rate", "[{rule: rate, max_per_minute: 3}]", {kRead, kRead, kRead, kRead}},
  };
  for (const auto& c : cases) {
    CAPTURE(c.name);
    BrokerOptions o;
    o.anomaly = c.rule;
    auto b = BrokerProcess::Start(o);
    auto [sid, token] = b->OpenSession(b->engineer_key, kEngScope);
    HttpResult last;
    for (size_t i = 0; i < c.requests.size(); ++i) {
      last = b->Post("/v1/sessions/" + sid + "/grants", token, c.requests[i]);
      if (i + 1 < c.requests.size()) {
        CHECK(b->Get("/v1/sessions/" + sid, token).json["state"] == "active");
      }
    }
    INFO(last.body);
    CHECK(last.status == 403);
    CHECK(last.json["decision"]["code"] == "anomaly_detected");
    auto s = b->Get("/v1/sessions/" + sid, b->engineer_key);
    CHECK(s.json["state"] == "revoked");
    CHECK(s.json["end_reason"].get<std::string>().find(c.name) != std::string::npos);
    for (const auto& g : s.json["grants"]) {
      CHECK(g["state"] != "active");
    }
    auto recs = b->Get("/v1/audit?session_id=" + sid, b->admin_key).json["records"];
    bool found = false;
    for (const auto& r : recs) {
      if (r["event"] == "anomaly.detected") {
        found = true;
        CHECK(r["anomaly"]["kind"] == c.name);
        CHECK_FALSE(r["anomaly"]["evidence"].empty());
      }
    }
    CHECK(found);
    CHECK(b->Post("/v1/sessions/" + sid + "/grants", token, kRead).status == 409);
  }
}

TEST_CASE("Lifecycle: admin bulk revoke by principal, agent, issuer and all") {
  auto b = BrokerProcess::Start();
  auto open = [&](const std::string& key) {
    auto [sid, token] = b->OpenSession(key, kEngScope);
    REQUIRE(b->Post("/v1/sessions/" + sid + "/grants", token, kRead).status == 201);
    return sid;
  };
  const std::string s1 = open(b->engineer_key);
  const std::string s2 = open(b->other_engineer_key);
  auto state = [&](const std::string& sid) {
    return b->Get("/v1/sessions/" + sid, b->admin_key).json["state"].get<std::string>();
  };
  CHECK(b->Post("/v1/admin/revoke", b->engineer_key, {{"all", true}, {"reason", "x"}}).status ==
        403);
  auto bad = b->Post("/v1/admin/revoke", b->admin_key,
                     {{"principal", "eng_1"}, {"agent", "a"}, {"reason", "x"}});
  CHECK(bad.status == 400);
  CHECK(bad.json["code"] == "invalid_selector");
  CHECK(b->Post("/v1/admin/revoke", b->admin_key, {{"principal", "eng_1"}}).json["code"] ==
        "missing_field");

  auto r = b->Post("/v1/admin/revoke", b->admin_key,
                   {{"principal", "eng_1"}, {"reason", "offboarding"}});
  INFO(r.body);
  REQUIRE(r.status == 200);
  CHECK(r.json["sessions_revoked"] == 1);
  CHECK(state(s1) == "revoked");
  CHECK(state(s2) == "active");

  // By issuer: the credentials go, the session stays.
  auto ri = b->Post("/v1/admin/revoke", b->admin_key,
                    {{"issuer", "internal"}, {"reason", "key rotation"}});
  REQUIRE(ri.status == 200);
  CHECK(ri.json["revocations"].size() == 1);
  CHECK(state(s2) == "active");
  CHECK(b->Get("/v1/sessions/" + s2, b->admin_key).json["grants"][0]["state"] == "revoked");

  const std::string s3 = open(b->engineer_key);
  auto ra = b->Post("/v1/admin/revoke", b->admin_key, {{"all", true}, {"reason", "break glass"}});
  REQUIRE(ra.status == 200);
  CHECK(ra.json["sessions_revoked"] == 2);
  CHECK(state(s3) == "revoked");
  CHECK(state(s2) == "revoked");
  auto audit = b->Get("/v1/audit", b->admin_key).json["records"];
  int bulk = 0;
  for (const auto& rec : audit) {
    if (rec["event"] == "admin.bulk_revoke") {
      ++bulk;
      CHECK(rec["human_principal"] == "admin_1");
    }
  }
  CHECK(bulk == 3);
  CHECK(b->Get("/v1/audit/verify", b->admin_key).json["ok"] == true);
}

}  // namespace
}  // namespace jitbroker::testing

namespace jitbroker::testing {
namespace {

TEST_CASE("Approvals: a configured webhook is told of each pending approval, without secrets") {
  httplib::Server hook;
  std::mutex mu;
  std::vector<nlohmann::json> received;
  std::vector<std::string> events;
  hook.Post("/hook", [&](const httplib::Request& req, httplib::Response& res) {
    std::lock_guard lock(mu);
    received.push_back(nlohmann::json::parse(req.body, nullptr, false));
    events.push_back(req.get_header_value("X-Jitbroker-Event"));
    res.status = received.size() == 1 ? 503 : 200;  // the first delivery is retried
  });
  const int port = hook.bind_to_any_port("127.0.0.1");
  REQUIRE(port > 0);
  std::thread server([&] { hook.listen_after_bind(); });

  BrokerOptions o;
  o.approvals =
      "{webhook: {url: \"http://127.0.0.1:" + std::to_string(port) + "/hook\", max_attempts: 3}}";
  auto b = BrokerProcess::Start(o);
  Pending p = RequestMerge(*b);
  for (int i = 0; i < 100; ++i) {
    {
      std::lock_guard lock(mu);
      if (received.size() >= 2) break;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  hook.stop();
  server.join();
  std::lock_guard lock(mu);
  REQUIRE(received.size() == 2);  // one 503, one retry that succeeded
  CHECK(received[0] == received[1]);
  const auto& m = received[1];
  CHECK(events[1] == "approval.pending");
  CHECK(m["event"] == "approval.pending");
  CHECK(m["approval_id"] == p.approval_id);
  CHECK(m["request_digest"] == p.digest);
  CHECK(m["principal"] == "maint_1");
  CHECK(m["request"]["tool"] == "github.merge_pull_request");
  const std::string text = m.dump();
  CHECK(text.find(p.token) == std::string::npos);
  CHECK(text.find("jbs_") == std::string::npos);
}

TEST_CASE("Shutdown answers long polls at once instead of waiting for the longest one") {
  auto b = BrokerProcess::Start();
  Pending p = RequestMerge(*b);
  auto waiter = std::async(std::launch::async, [&] {
    return b->Request("GET", "/v1/grants/" + p.grant_id + "?wait=60", p.token);
  });
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  const auto t0 = std::chrono::steady_clock::now();
  b->Stop();
  const auto took = std::chrono::steady_clock::now() - t0;
  // Before the fix the drain waited out the 5 s bound and then the poll.
  CHECK(took < std::chrono::seconds(4));
  auto got = waiter.get();
  INFO(got.body);
  CHECK(got.status == 200);
  CHECK(got.json["state"] == "pending");
}

}  // namespace
}  // namespace jitbroker::testing
