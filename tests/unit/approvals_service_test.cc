// Issue #10, at the service level (BrokerService in process, SQLite store,
// fake issuer, fake clock):
//   finding 4  — one agent cannot hide every legitimate approval: pending
//                approvals are bounded per session and per principal, grant
//                requests are rate-limited, and approvals are filtered and
//                paged in the store query;
//   finding 10 — four-eyes on every approval tier, admins included; the only
//                self-approval is the explicit, audited break-glass option;
//   finding 12 — an approved grant is minted at collection from the exact
//                request that was approved (sealed), after re-evaluating it
//                against the current policy and session.
#include <doctest/doctest.h>

#include <atomic>
#include <filesystem>
#include <fstream>
#include <functional>
#include <future>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "broker/audit/journal.h"
#include "broker/config/config.h"
#include "broker/crypto/crypto.h"
#include "broker/http/wire.h"
#include "broker/lifecycle/anomaly.h"
#include "broker/service/broker_service.h"
#include "broker/store/sqlite_store.h"
#include "tests/fakes/fake_clock.h"
#include "tests/fakes/fake_issuer.h"
#include "tests/support/states_doctest.h"

namespace jitbroker::testing {
namespace {

service::ApprovalListFilter PendingOnly() {
  service::ApprovalListFilter f;
  f.state = "pending";
  return f;
}

using nlohmann::json;
using service::ApprovalListFilter;
using service::CallContext;

const char* kAliceKey = "jbk_alice_key_for_approval_tests_01";
const char* kBobKey = "jbk_bob_key_for_approval_tests_0123";
const char* kCarolKey = "jbk_carol_key_for_approval_tests_01";
const char* kRootKey = "jbk_root_key_for_approval_tests_012";

struct Options {
  std::string tiers;      // YAML flow mapping for policy.tiers, or empty
  std::string approvals;  // YAML flow mapping for approvals:, or empty
  std::string limits;     // YAML flow mapping for limits:, or empty
  std::string anomaly;    // YAML flow sequence for anomaly:, or empty
  std::string version = "apr.1";
  std::string engineer_resources = "fake://svc/*";
  std::string extra_tools;  // more policy.tools entries, each "    - {...}\n"
};

// Options with one or two sections set (designated initializers would leave
// the rest to -Wmissing-field-initializers).
Options Approvals(std::string approvals, std::string anomaly = "") {
  Options o;
  o.approvals = std::move(approvals);
  o.anomaly = std::move(anomaly);
  return o;
}
Options Limits(std::string limits) {
  Options o;
  o.limits = std::move(limits);
  return o;
}
Options Tiers(std::string tiers) {
  Options o;
  o.tiers = std::move(tiers);
  return o;
}

std::string ConfigYaml(const Options& o) {
  std::string y = "data_dir: data\npolicy:\n  version: \"" + o.version + "\"\n";
  if (!o.tiers.empty()) {
    y += "  tiers: " + o.tiers + "\n";
  }
  y += R"(  tools:
    - {match: {tool: "deploy.*"}, tier: merge_deploy}
    - {match: {tool: "secrets.*"}, tier: secret}
)" + o.extra_tools +
       R"(  principals:
    - {id: alice, roles: [engineer, approver], api_key_file: alice.key}
    - {id: bob, roles: [engineer], api_key_file: bob.key}
    - {id: carol, roles: [approver], api_key_file: carol.key}
    - {id: root, roles: [admin], api_key_file: root.key}
  roles:
    engineer: {resources: [")" +
       o.engineer_resources + R"("], max_tier: secret}
    approver: {resources: [], max_tier: read}
    security: {resources: [], max_tier: read}
    maintainer: {resources: [], max_tier: read}
    admin: {resources: ["*"], max_tier: destructive}
sessions: {heartbeat_seconds: 3600}
)";
  if (!o.approvals.empty()) {
    y += "approvals: " + o.approvals + "\n";
  }
  if (!o.limits.empty()) {
    y += "limits: " + o.limits + "\n";
  }
  if (!o.anomaly.empty()) {
    y += "anomaly: " + o.anomaly + "\n";
  }
  return y;
}

const json kScope = {{"resources", {"fake://svc/*"}}, {"max_tier", "secret"}};

json Req(const std::string& tool, json params = json::object()) {
  return {{"tool", tool},
          {"operation", "read"},
          {"resource", "fake://svc/db"},
          {"issuer", "fake"},
          {"parameters", std::move(params)}};
}

class World {
 public:
  explicit World(Options o = {}) : options_(std::move(o)) {
    char tmpl[] = "/tmp/jitbroker-apr-XXXXXX";
    REQUIRE(::mkdtemp(tmpl) != nullptr);
    dir_ = tmpl;
    std::ofstream(dir_ + "/alice.key") << kAliceKey << "\n";
    std::ofstream(dir_ + "/bob.key") << kBobKey << "\n";
    std::ofstream(dir_ + "/carol.key") << kCarolKey << "\n";
    std::ofstream(dir_ + "/root.key") << kRootKey << "\n";
    std::ofstream(dir_ + "/broker.yaml") << ConfigYaml(options_);
    auto cfg = config::LoadConfigFile(dir_ + "/broker.yaml");
    REQUIRE_MESSAGE(cfg.has_value(), (cfg ? "" : cfg.error().ToString()));

    store::SqliteOptions so;
    so.path = dir_ + "/state.db";
    auto st = store::OpenSqliteStore(so);
    REQUIRE(st.has_value());
    store_ = std::move(*st);
    auto j = audit::Journal::Create(store_.get(), dir_ + "/audit.jsonl");
    REQUIRE(j.has_value());
    journal_ = std::move(*j);

    FakeIssuerOptions fo;
    fo.name = "fake";
    fo.scope_items = {"fake:use"};  // unbounded unless a scope or role lists scopes
    auto issuer = std::make_unique<FakeIssuer>(fo);
    issuer_ = issuer.get();
    std::map<std::string, std::unique_ptr<Issuer>> issuers;
    issuers.emplace("fake", std::move(issuer));

    service::ServiceOptions opts;
    opts.sessions = cfg->sessions;
    opts.seal_key = SecretValue(crypto::RandomBytes(32));
    opts.default_approval_ttl_seconds = cfg->approvals.default_ttl_seconds;
    opts.max_pending_per_session = cfg->approvals.max_pending_per_session;
    opts.max_pending_per_principal = cfg->approvals.max_pending_per_principal;
    opts.limits = cfg->limits;
    auto rules = lifecycle::ParseAnomalyRules(cfg->anomaly ? &*cfg->anomaly : nullptr);
    REQUIRE(rules.has_value());
    opts.anomaly_rules = std::move(*rules);
    service_ =
        std::make_unique<service::BrokerService>(store_.get(), journal_.get(), &clock_, &metrics_,
                                                 std::move(issuers), cfg->policy, std::move(opts));
  }
  ~World() {
    journal_->Stop();
    service_.reset();
    journal_.reset();
    store_.reset();
    std::filesystem::remove_all(dir_);
  }

  // Reloads the policy from the same config shape with `o` (as SIGHUP does).
  void Reload(const Options& o) {
    std::ofstream(dir_ + "/broker.yaml") << ConfigYaml(o);
    auto cfg = config::LoadConfigFile(dir_ + "/broker.yaml");
    REQUIRE_MESSAGE(cfg.has_value(), (cfg ? "" : cfg.error().ToString()));
    service_->SwapPolicy(cfg->policy);
  }

  CallContext As(const std::string& bearer) {
    auto c = service_->Authenticate("Bearer " + bearer, "");
    REQUIRE_MESSAGE(c.has_value(), (c ? "" : c.error().ToString()));
    CallContext ctx;
    ctx.request_id = "req_apr";
    ctx.caller = std::move(*c);
    return ctx;
  }

  struct Session {
    std::string id;
    std::string token;
  };
  Session Open(const std::string& principal_key, json scope = kScope) {
    json body = {{"agent", {{"id", "agent_1"}}}, {"task", {{"id", "t1"}, {"scope", scope}}}};
    auto opened = api().OpenSession(As(principal_key), body);
    REQUIRE_MESSAGE(opened.has_value(), (opened ? "" : opened.error().ToString()));
    return {(*opened)["session_id"], (*opened)["session_token"]};
  }

  Result<http::wire::JsonApi::GrantAnswer> Request(const Session& s, const json& body) {
    return api().RequestGrant(As(s.token), s.id, body);
  }
  // A request that must end pending; returns its grant body.
  json RequestPending(const Session& s, const json& body) {
    auto r = Request(s, body);
    REQUIRE_MESSAGE(r.has_value(), (r ? "" : r.error().ToString()));
    REQUIRE_MESSAGE(r->outcome == service::GrantOutcome::kPending, r->body.dump());
    return r->body;
  }

  Result<json> Decide(const std::string& approver_key, const json& pending,
                      const std::string& decision = "approve") {
    return api().DecideApproval(
        As(approver_key), pending["approval"]["id"],
        {{"decision", decision}, {"request_digest", pending["approval"]["request_digest"]}});
  }

  Result<json> Collect(const Session& s, const json& pending) {
    return api().GetGrant(As(s.token), pending["grant_id"]);
  }

  Result<json> List(const std::string& key, ApprovalListFilter f = {}) {
    return api().ListApprovals(As(key), f);
  }

  GrantRecord Stored(const std::string& grant_id) {
    auto g = store_->GetGrant(grant_id);
    REQUIRE(g.has_value());
    REQUIRE(g->has_value());
    return **g;
  }
  // Writes `g` as another writer would: from the state it is stored in.
  void Put(const GrantRecord& g) {
    WriteBatch b;
    b.PutGrant(g, Stored(g.id).state);
    REQUIRE(journal_->Commit(std::move(b)).has_value());
  }
  void Put(const SessionRecord& s) {
    WriteBatch b;
    b.PutSession(s, store_->GetSession(s.id).value()->state);
    REQUIRE(journal_->Commit(std::move(b)).has_value());
  }

  // Audit records of one session, oldest first.
  std::vector<json> Audit(const std::string& session_id) {
    AuditFilter f;
    f.session_id = session_id;
    auto recs = store_->ListAudit(f);
    REQUIRE(recs.has_value());
    std::vector<json> out;
    for (auto& r : *recs) {
      out.push_back(std::move(r.body));
    }
    return out;
  }

  service::BrokerService& svc() { return *service_; }
  // The JSON API over the service: what the HTTP routes answer.
  http::wire::JsonApi api() { return http::wire::JsonApi(service_.get()); }
  Store& store() { return *store_; }
  FakeIssuer& issuer() { return *issuer_; }
  FakeClock& clock() { return clock_; }
  const Options& options() const { return options_; }

 private:
  Options options_;
  std::string dir_;
  FakeClock clock_;
  Metrics metrics_;
  std::unique_ptr<Store> store_;
  std::unique_ptr<audit::Journal> journal_;
  FakeIssuer* issuer_ = nullptr;
  std::unique_ptr<service::BrokerService> service_;
};

std::vector<std::string> ApprovalIds(const json& list) {
  std::vector<std::string> out;
  for (const auto& a : list["approvals"]) {
    out.push_back(a["approval_id"]);
  }
  return out;
}

bool Lists(const json& list, const std::string& approval_id) {
  for (const auto& a : list["approvals"]) {
    if (a["approval_id"] == approval_id) {
      return true;
    }
  }
  return false;
}

// ===========================================================================
// Finding 4: pending approvals are bounded, rate-limited and paged in SQL.

TEST_CASE("Approvals: a long-poll lasts its monotonic time whatever the wall clock does") {
  // Issue #16, clock jumps: waits are measured on the steady clock, so a
  // wall clock stepped back an hour does not stretch a long-poll, and one
  // stepped forward past the approval's expiry ends it early (fail closed:
  // the request has lapsed), never the other way round.
  World w;
  auto s = w.Open(kAliceKey);
  json pending = w.RequestPending(s, Req("secrets.read"));
  const std::string id = pending["grant_id"];
  auto wait = [&] {
    const auto t0 = std::chrono::steady_clock::now();
    auto r = w.api().GetGrant(w.As(s.token), id, /*wait_seconds=*/1);
    return std::make_pair(std::move(r), std::chrono::steady_clock::now() - t0);
  };
  auto back = std::async(std::launch::async, wait);
  std::this_thread::sleep_for(std::chrono::milliseconds(100));
  w.clock().Advance(-std::chrono::hours(1));
  auto [r1, took1] = back.get();
  REQUIRE(r1.has_value());
  CHECK((*r1)["state"] == "pending");
  CHECK(took1 >= std::chrono::milliseconds(900));
  CHECK(took1 < std::chrono::seconds(3));
  w.clock().Advance(std::chrono::hours(1));

  auto forward = std::async(std::launch::async, [&] {
    const auto t0 = std::chrono::steady_clock::now();
    auto r = w.api().GetGrant(w.As(s.token), id, /*wait_seconds=*/30);
    return std::make_pair(std::move(r), std::chrono::steady_clock::now() - t0);
  });
  std::this_thread::sleep_for(std::chrono::milliseconds(100));
  w.clock().Advance(std::chrono::hours(2));  // past the approval's expiry
  w.svc().OnStoreChanged();                  // as any grant change would wake it
  auto [r2, took2] = forward.get();
  CHECK(took2 < std::chrono::seconds(5));
  if (r2.has_value()) {
    CHECK((*r2)["state"] != "pending");
  }
}

TEST_CASE("Approvals (#10 F4): one agent's flood is cut at the pending bound and the rate limit") {
  World w;
  auto flooder = w.Open(kAliceKey);
  int pending = 0, too_many = 0, rate_limited = 0;
  for (int i = 0; i < 1000; ++i) {
    auto r = w.Request(flooder, Req("secrets.read", {{"n", i}}));
    if (r) {
      REQUIRE_MESSAGE(r->outcome == service::GrantOutcome::kPending, r->body.dump());
      ++pending;
      continue;
    }
    REQUIRE(r.error().code == ErrorCode::kResourceExhausted);
    CHECK(r.error().retryable);
    CHECK(r.error().retry_after.count() >= 1);
    if (r.error().Reason() == "too_many_pending_approvals") {
      ++too_many;
    } else {
      REQUIRE(r.error().Reason() == "rate_limited");
      ++rate_limited;
    }
  }
  // Defaults: 10 pending per session, a burst of 50 requests per session.
  CHECK(pending == 10);
  CHECK(too_many == 40);
  CHECK(rate_limited == 950);
  CHECK(InfoFor(ErrorCode::kResourceExhausted).http_status == 429);

  // A later legitimate request (another principal's agent) is on the
  // approver's first page.
  auto legit_session = w.Open(kBobKey);
  json legit = w.RequestPending(legit_session, Req("secrets.read"));
  auto list = w.api().ListApprovals(w.As(kCarolKey), PendingOnly());
  REQUIRE(list.has_value());
  CHECK(Lists(*list, legit["approval"]["id"]));
  CHECK((*list)["approvals"].size() == 11);
}

TEST_CASE(
    "Approvals (#10 F4): a flood the approver cannot decide never pushes theirs off the list") {
  World w;
  // 1000 pending approvals of a tier carol may not approve (merge_deploy
  // needs role:maintainer), expiring before the legitimate one: the store
  // is filled directly, as a long-lived flood would have.
  const TimePoint now = w.clock().Now();
  WriteBatch b;
  for (int i = 0; i < 1000; ++i) {
    GrantRecord g;
    g.id = "grt_flood" + std::to_string(i);
    g.session_id = "ses_flood";
    g.principal_id = "alice";
    g.agent_id = "agent_x";
    g.task_id = "t";
    g.tool = "deploy.prod";
    g.operation = "deploy";
    g.resource = "fake://svc/x";
    g.issuer = "fake";
    g.tier = "merge_deploy";
    g.state = GrantState::kPending;
    g.request_digest = std::string(64, 'f');
    g.approval_id = "apr_flood" + std::to_string(i);
    g.created_at = now - std::chrono::seconds(10);
    g.expires_at = now + std::chrono::seconds(60);
    b.grants.push_back(std::move(g));
  }
  {
    std::vector<WriteBatch> one{std::move(b)};
    REQUIRE(w.store().Apply(one, {}).has_value());
  }
  auto s = w.Open(kBobKey);
  json legit = w.RequestPending(s, Req("secrets.read"));
  auto list = w.api().ListApprovals(w.As(kCarolKey), PendingOnly());
  REQUIRE(list.has_value());
  CHECK(ApprovalIds(*list) == std::vector<std::string>{legit["approval"]["id"]});
  CHECK((*list)["next_cursor"].is_null());
}

TEST_CASE(
    "Approvals (#10 F4): bounds per session and per principal, audited and fed to anomaly rules") {
  SUBCASE("per session, then per principal across sessions") {
    World w(Approvals("{max_pending_per_session: 2, max_pending_per_principal: 3}"));
    auto s1 = w.Open(kAliceKey);
    auto s2 = w.Open(kAliceKey);
    w.RequestPending(s1, Req("secrets.read", {{"n", 1}}));
    w.clock().Advance(std::chrono::seconds(10));
    w.RequestPending(s1, Req("secrets.read", {{"n", 2}}));
    auto third = w.Request(s1, Req("secrets.read", {{"n", 3}}));
    REQUIRE_FALSE(third.has_value());
    CHECK(third.error().Reason() == "too_many_pending_approvals");
    CHECK(third.error().message.find("approvals.max_pending_per_session") != std::string::npos);
    // The oldest approval (default TTL 300 s, 10 s ago) frees a place in 290 s.
    CHECK(third.error().retry_after == Seconds(291));

    w.RequestPending(s2, Req("secrets.read", {{"n", 4}}));
    auto fifth = w.Request(s2, Req("secrets.read", {{"n", 5}}));
    REQUIRE_FALSE(fifth.has_value());
    CHECK(fifth.error().Reason() == "too_many_pending_approvals");
    CHECK(fifth.error().message.find("approvals.max_pending_per_principal") != std::string::npos);

    // Allowed grants are not bounded by pending approvals.
    auto read = w.Request(s2, Req("svc.read"));
    REQUIRE(read.has_value());
    CHECK(read->outcome == service::GrantOutcome::kIssued);

    // The refusal is a recorded, audited denial.
    const std::vector<json> audit = w.Audit(s1.id);
    const json& last = audit.back();
    CHECK(last["event"] == "grant.decided");
    CHECK(last["outcome"] == "denied");
    CHECK(last["policy_decision"]["code"] == "too_many_pending_approvals");
    CHECK(last["policy_decision"]["matched_rule"] == "approvals.max_pending_per_session");

    // A decided approval frees its place.
    auto list = w.List(kCarolKey);
    REQUIRE(list.has_value());
    REQUIRE((*list)["approvals"].size() == 3);
    json first = (*list)["approvals"][0];
    REQUIRE(w.api()
                .DecideApproval(w.As(kCarolKey), first["approval_id"],
                                {{"decision", "deny"}, {"request_digest", first["request_digest"]}})
                .has_value());
    w.RequestPending(s1, Req("secrets.read", {{"n", 6}}));
    // And so does expiry.
    w.clock().Advance(std::chrono::seconds(301));
    w.RequestPending(s2, Req("secrets.read", {{"n", 7}}));
  }
  SUBCASE("refusals count as denials for denied_burst") {
    World w(Approvals("{max_pending_per_session: 1}",
                      "[{rule: denied_burst, count: 3, window_seconds: 60}]"));
    auto s = w.Open(kAliceKey);
    w.RequestPending(s, Req("secrets.read", {{"n", 0}}));
    for (int i = 1; i <= 2; ++i) {
      auto r = w.Request(s, Req("secrets.read", {{"n", i}}));
      REQUIRE_FALSE(r.has_value());
      CHECK(r.error().Reason() == "too_many_pending_approvals");
    }
    auto r = w.Request(s, Req("secrets.read", {{"n", 3}}));
    REQUIRE(r.has_value());
    CHECK(r->outcome == service::GrantOutcome::kDenied);
    CHECK(r->body["decision"]["code"] == "anomaly_detected");
    auto session = w.store().GetSession(s.id);
    REQUIRE(session.has_value());
    CHECK((*session)->state == SessionState::kRevoked);
  }
}

TEST_CASE("Approvals (#10 F4): concurrent requests never overshoot the pending bound") {
  World w(Approvals("{max_pending_per_session: 3}"));
  auto s = w.Open(kAliceKey);
  std::atomic<int> pending{0}, refused{0};
  std::vector<CallContext> contexts;
  for (int t = 0; t < 8; ++t) {
    contexts.push_back(w.As(s.token));
  }
  std::vector<std::thread> threads;
  for (int t = 0; t < 8; ++t) {
    threads.emplace_back([&, t] {
      auto r = w.api().RequestGrant(contexts[t], s.id, Req("secrets.read", {{"n", t}}));
      if (r && r->outcome == service::GrantOutcome::kPending) {
        ++pending;
      } else if (!r && r.error().Reason() == "too_many_pending_approvals") {
        ++refused;
      }
    });
  }
  for (auto& t : threads) {
    t.join();
  }
  CHECK(pending.load() == 3);
  CHECK(refused.load() == 5);
}

TEST_CASE("Approvals (#10 F4): grant requests are rate-limited per session and per principal") {
  World w(
      Limits("{grants_per_session: {rate_per_second: 1, burst: 3}, "
             "grants_per_principal: {rate_per_second: 1, burst: 4}}"));
  auto s1 = w.Open(kAliceKey);
  auto s2 = w.Open(kAliceKey);

  SUBCASE("a forged token does not drain a session's bucket") {
    for (int i = 0; i < 5; ++i) {
      auto r = w.api().RequestGrant(w.As("jbs_" + s1.id.substr(4) + "_forgedforgedforged"), s1.id,
                                    Req("svc.read"));
      REQUIRE_FALSE(r.has_value());
      CHECK(r.error().code != ErrorCode::kResourceExhausted);
    }
  }
  for (int i = 0; i < 3; ++i) {
    auto r = w.Request(s1, Req("svc.read"));
    REQUIRE_MESSAGE(r.has_value(), (r ? "" : r.error().ToString()));
    CHECK(r->outcome == service::GrantOutcome::kIssued);
  }
  auto over = w.Request(s1, Req("svc.read"));
  REQUIRE_FALSE(over.has_value());
  CHECK(over.error().code == ErrorCode::kResourceExhausted);
  CHECK(over.error().Reason() == "rate_limited");
  CHECK(over.error().retryable);
  CHECK(over.error().retry_after == Seconds(1));
  CHECK(over.error().message.find("limits.grants_per_session") != std::string::npos);

  // Another session of the same principal: the principal's bucket (4) has
  // one token left.
  auto r = w.Request(s2, Req("svc.read"));
  REQUIRE(r.has_value());
  auto p = w.Request(s2, Req("svc.read"));
  REQUIRE_FALSE(p.has_value());
  CHECK(p.error().Reason() == "rate_limited");
  CHECK(p.error().message.find("limits.grants_per_principal") != std::string::npos);

  // Other principals are not affected.
  auto bob = w.Open(kBobKey);
  CHECK(w.Request(bob, Req("svc.read")).has_value());

  // Time refills the buckets.
  w.clock().Advance(std::chrono::seconds(1));
  auto again = w.Request(s1, Req("svc.read"));
  REQUIRE_MESSAGE(again.has_value(), (again ? "" : again.error().ToString()));
  CHECK(again->outcome == service::GrantOutcome::kIssued);
}

TEST_CASE("Approvals (#10 F4): listing filters, orders and pages in the query") {
  World w(Approvals("{max_pending_per_session: 100, max_pending_per_principal: 100}"));
  auto a1 = w.Open(kAliceKey);
  auto a2 = w.Open(kAliceKey);
  auto b1 = w.Open(kBobKey);
  auto r1 = w.Open(kRootKey);
  std::vector<std::string> carol_sees;  // in creation order
  auto add = [&](const World::Session& s, const std::string& tool, bool carol_may) {
    json p = w.RequestPending(s, Req(tool, {{"n", carol_sees.size()}}));
    w.clock().Advance(std::chrono::milliseconds(1));
    if (carol_may) {
      carol_sees.push_back(p["approval"]["id"]);
    }
    return p;
  };
  for (int i = 0; i < 3; ++i) {
    add(a1, "secrets.read", true);
    add(a2, "secrets.read", true);
    add(b1, "secrets.read", true);
    add(b1, "deploy.prod", false);  // merge_deploy: role:maintainer only
  }
  json roots = add(r1, "secrets.read", true);

  SUBCASE("pages cover every approval once, oldest or newest first") {
    for (const char* order : {"oldest", "newest"}) {
      CAPTURE(order);
      std::vector<std::string> seen;
      ApprovalListFilter f;
      f.order = order;
      f.limit = 4;
      for (int page = 0; page < 10; ++page) {
        auto got = w.List(kCarolKey, f);
        REQUIRE_MESSAGE(got.has_value(), (got ? "" : got.error().ToString()));
        CHECK((*got)["approvals"].size() <= 4);
        for (const auto& id : ApprovalIds(*got)) {
          seen.push_back(id);
        }
        if ((*got)["next_cursor"].is_null()) {
          break;
        }
        f.cursor = (*got)["next_cursor"];
      }
      std::vector<std::string> expected = carol_sees;
      if (std::string(order) == "newest") {
        std::reverse(expected.begin(), expected.end());
      }
      CHECK(seen == expected);
    }
  }
  SUBCASE("filters by session, principal and tier") {
    ApprovalListFilter f;
    f.session_id = a2.id;
    CHECK(w.List(kCarolKey, f)->at("approvals").size() == 3);
    f = {};
    f.principal = "bob";
    CHECK(w.List(kCarolKey, f)->at("approvals").size() == 3);
    f.tier = "merge_deploy";
    CHECK(w.List(kCarolKey, f)->at("approvals").empty());  // not carol's to decide
    CHECK(w.List(kRootKey, f)->at("approvals").size() == 3);
    f = {};
    f.tier = "secret";
    CHECK(w.List(kCarolKey, f)->at("approvals").size() == 10);
  }
  SUBCASE("four-eyes: a principal is never offered their own agents' requests") {
    auto mine = w.List(kAliceKey);
    REQUIRE(mine.has_value());
    for (const auto& a : (*mine)["approvals"]) {
      CHECK(a["human_principal"] != "alice");
    }
    CHECK((*mine)["approvals"].size() == 4);  // bob's 3 secret + root's 1
    auto root = w.List(kRootKey);
    CHECK_FALSE(Lists(*root, roots["approval"]["id"]));
    CHECK((*root)["approvals"].size() == 12);
  }
  SUBCASE("bad queries are precise problems") {
    ApprovalListFilter newest;
    newest.order = "newest";
    newest.limit = 2;
    auto first = w.List(kCarolKey, newest);
    REQUIRE(first.has_value());
    const std::string newest_cursor = (*first)["next_cursor"];
    struct Case {
      const char* name;
      std::function<void(ApprovalListFilter&)> set;
      const char* reason;
    };
    std::vector<Case> cases = {
        {"state", [](auto& f) { f.state = "approved"; }, "invalid_query"},
        {"order", [](auto& f) { f.order = "random"; }, "invalid_query"},
        {"limit 0", [](auto& f) { f.limit = 0; }, "invalid_query"},
        {"limit 201", [](auto& f) { f.limit = 201; }, "invalid_query"},
        {"tier", [](auto& f) { f.tier = "bogus"; }, "invalid_query"},
        {"session id with a space", [](auto& f) { f.session_id = "ses_ x"; }, "invalid_query"},
        {"garbage cursor", [](auto& f) { f.cursor = "!!!"; }, "invalid_cursor"},
        {"cursor of another order", [&](auto& f) { f.cursor = newest_cursor; }, "invalid_cursor"},
        {"forged cursor", [](auto& f) { f.cursor = crypto::Base64UrlEncode("v1|o|1|2|ses_x"); },
         "invalid_cursor"},
    };
    for (const Case& c : cases) {
      CAPTURE(c.name);
      ApprovalListFilter f;
      c.set(f);
      auto r = w.List(kCarolKey, f);
      REQUIRE_FALSE(r.has_value());
      CHECK(r.error().code == ErrorCode::kInvalidArgument);
      CHECK(r.error().Reason() == c.reason);
    }
    auto agent = w.api().ListApprovals(w.As(a1.token), ApprovalListFilter{});
    REQUIRE_FALSE(agent.has_value());
    CHECK(agent.error().Reason() == "principal_required");
  }
  SUBCASE("expired approvals are not listed") {
    w.clock().Advance(std::chrono::seconds(301));
    auto got = w.List(kCarolKey);
    REQUIRE(got.has_value());
    CHECK((*got)["approvals"].empty());
  }
}

// ===========================================================================
// Finding 10: four-eyes by default, break-glass only when configured.

TEST_CASE(
    "Approvals (#10 F10): no self-approval of a secret-tier grant without four_eyes in the "
    "config") {
  World w;                     // the config never mentions four_eyes
  auto s = w.Open(kAliceKey);  // alice is an engineer and an approver
  json p = w.RequestPending(s, Req("secrets.read"));
  CHECK(p["tier"] == "secret");
  auto self = w.Decide(kAliceKey, p);
  REQUIRE_FALSE(self.has_value());
  CHECK(self.error().code == ErrorCode::kPermissionDenied);
  CHECK(self.error().Reason() == "four_eyes");
  auto self_deny = w.Decide(kAliceKey, p, "deny");
  REQUIRE_FALSE(self_deny.has_value());
  CHECK(self_deny.error().Reason() == "four_eyes");
  CHECK(w.Stored(p["grant_id"]).state == GrantState::kPending);
  // Someone else may.
  auto other = w.Decide(kCarolKey, p);
  REQUIRE_MESSAGE(other.has_value(), (other ? "" : other.error().ToString()));
  CHECK((*other)["four_eyes"] == true);
  CHECK((*other)["self_approval"] == "deny");
  CHECK_FALSE((*other)["decided"].contains("break_glass"));
}

TEST_CASE("Approvals (#10 F10): an admin cannot approve their own agent's request by default") {
  World w;
  auto s = w.Open(kRootKey);
  for (const char* tool : {"secrets.read", "deploy.prod"}) {
    CAPTURE(tool);
    json p = w.RequestPending(s, Req(tool));
    auto self = w.Decide(kRootKey, p);
    REQUIRE_FALSE(self.has_value());
    CHECK(self.error().Reason() == "four_eyes");
    CHECK(w.Stored(p["grant_id"]).state == GrantState::kPending);
  }
}

TEST_CASE(
    "Approvals (#10 F10): break-glass self-approval works only when configured, for admins, "
    "audited") {
  World w(Tiers("{secret: {control: approval, self_approval: break_glass}}"));
  SUBCASE("an admin, on a break-glass tier") {
    auto s = w.Open(kRootKey);
    json p = w.RequestPending(s, Req("secrets.read"));
    // Offered to the admin only because break-glass lets them decide it.
    CHECK(Lists(*w.List(kRootKey), p["approval"]["id"]));
    auto ok = w.Decide(kRootKey, p);
    REQUIRE_MESSAGE(ok.has_value(), (ok ? "" : ok.error().ToString()));
    CHECK((*ok)["decided"]["break_glass"] == true);
    CHECK((*ok)["self_approval"] == "break_glass");
    auto got = w.Collect(s, p);
    REQUIRE_MESSAGE(got.has_value(), (got ? "" : got.error().ToString()));
    CHECK((*got)["state"] == "active");
    CHECK((*got)["approval"]["break_glass"] == true);
    std::vector<json> audit = w.Audit(s.id);
    int marked = 0;
    for (const auto& rec : audit) {
      if (rec["event"] == "approval.decided" || rec["event"] == "credential.minted") {
        CHECK(rec["jit_grant"]["approval"]["break_glass"] == true);
        CHECK(rec["jit_grant"]["approval"]["approver"] == "root");
        ++marked;
      }
    }
    CHECK(marked == 2);
  }
  SUBCASE("not on a tier without it") {
    auto s = w.Open(kRootKey);
    json p = w.RequestPending(s, Req("deploy.prod"));
    CHECK_FALSE(Lists(*w.List(kRootKey), p["approval"]["id"]));
    auto self = w.Decide(kRootKey, p);
    REQUIRE_FALSE(self.has_value());
    CHECK(self.error().Reason() == "four_eyes");
  }
  SUBCASE("never for a non-admin") {
    auto s = w.Open(kAliceKey);
    json p = w.RequestPending(s, Req("secrets.read"));
    auto self = w.Decide(kAliceKey, p);
    REQUIRE_FALSE(self.has_value());
    CHECK(self.error().Reason() == "four_eyes");
  }
  SUBCASE("a break-glass approval is void if the option is withdrawn before collection") {
    auto s = w.Open(kRootKey);
    json p = w.RequestPending(s, Req("secrets.read"));
    REQUIRE(w.Decide(kRootKey, p).has_value());
    Options o = w.options();
    o.tiers.clear();
    o.version = "apr.2";
    w.Reload(o);
    auto got = w.Collect(s, p);
    REQUIRE(got.has_value());
    CHECK((*got)["state"] == "denied");
    CHECK((*got)["decision"]["code"] == "approval_stale");
    CHECK(w.issuer().MintCalls() == 0);
  }
}

// ===========================================================================
// Finding 12: collection mints the exact approved request, re-evaluated.

TEST_CASE(
    "Approvals (#10 F12): the issuer receives the exact approved parameters, secret-like keys "
    "included") {
  World w;
  auto s = w.Open(kAliceKey);
  const json params = {{"api_token", "tok-0123456789-unredacted"},
                       {"name", "db"},
                       {"nested", {{"password", "hunter2-unredacted"}}}};
  json p = w.RequestPending(s, Req("secrets.read", params));
  // At rest: only the redacted copy in the clear; the exact request is sealed.
  GrantRecord stored = w.Stored(p["grant_id"]);
  CHECK(stored.parameters["api_token"] == "[redacted]");
  CHECK_FALSE(stored.sealed_request.empty());
  CHECK(stored.sealed_request.find("tok-0123456789") == std::string::npos);
  for (const auto& rec : w.Audit(s.id)) {
    CHECK(rec.dump().find("unredacted") == std::string::npos);
  }
  REQUIRE(w.Decide(kCarolKey, p).has_value());
  auto got = w.Collect(s, p);
  REQUIRE_MESSAGE(got.has_value(), (got ? "" : got.error().ToString()));
  CHECK((*got)["state"] == "active");
  REQUIRE(got->contains("credential"));
  auto mints = w.issuer().MintRequests();
  REQUIRE(mints.size() == 1);
  CHECK(mints[0].request.parameters == params);
  CHECK(mints[0].grant_id == p["grant_id"].get<std::string>());
  // Once minted, the sealed request is gone.
  CHECK(w.Stored(p["grant_id"]).sealed_request.empty());
}

TEST_CASE("Approvals (#10 F12): collection re-evaluates the current policy and session") {
  World w;
  auto s = w.Open(kAliceKey);
  json p = w.RequestPending(s, Req("secrets.read", {{"n", 1}}));
  REQUIRE(w.Decide(kCarolKey, p).has_value());
  std::string code;

  SUBCASE("a reload that now denies the tool") {
    Options o = w.options();
    o.version = "apr.2";
    o.tiers = "{secret: {control: deny}}";
    w.Reload(o);
    code = "tier_denied";
  }
  SUBCASE("a reload that narrows the principal's roles") {
    Options o = w.options();
    o.version = "apr.2";
    o.engineer_resources = "fake://other/*";
    w.Reload(o);
    code = "exceeds_principal";
  }
  SUBCASE("a session whose scope no longer covers the resource") {
    auto sess = w.store().GetSession(s.id);
    REQUIRE(sess.has_value());
    SessionRecord narrowed = **sess;
    narrowed.scope["resources"] = {"fake://svc/other"};
    w.Put(narrowed);
    code = "out_of_scope";
  }
  SUBCASE("a session whose scope no longer allows the grant's scope items") {
    auto sess = w.store().GetSession(s.id);
    REQUIRE(sess.has_value());
    SessionRecord narrowed = **sess;
    narrowed.scope["scopes"] = json::array();
    w.Put(narrowed);
    code = "scope_not_in_task";
  }
  SUBCASE("a reload that asks other approvers for the tier") {
    Options o = w.options();
    o.version = "apr.2";
    o.tiers = "{secret: {control: approval, approvers: [\"role:security\"]}}";
    w.Reload(o);
    code = "approval_stale";
  }
  auto got = w.Collect(s, p);
  REQUIRE_MESSAGE(got.has_value(), (got ? "" : got.error().ToString()));
  CHECK((*got)["state"] == "denied");
  CHECK((*got)["decision"]["code"] == code);
  CHECK((*got)["decision"]["stage"] == "collection");
  CHECK_FALSE(got->contains("credential"));
  CHECK(w.issuer().MintCalls() == 0);
  const GrantRecord stored = w.Stored(p["grant_id"]);
  CHECK(stored.state == GrantState::kDenied);
  CHECK(stored.sealed_request.empty());
  const json last = w.Audit(s.id).back();
  CHECK(last["event"] == "grant.decided");
  CHECK(last["outcome"] == "denied");
  CHECK(last["policy_decision"]["code"] == code);
  // Denied once and for all: collecting again mints nothing.
  auto again = w.Collect(s, p);
  REQUIRE(again.has_value());
  CHECK((*again)["state"] == "denied");
  CHECK(w.issuer().MintCalls() == 0);
}

TEST_CASE("Approvals (#10 F12): an approval for one tier does not cover a reclassified request") {
  World w;
  auto s = w.Open(kAliceKey);
  json p = w.RequestPending(s, Req("deploy.prod"));
  CHECK(p["tier"] == "merge_deploy");
  REQUIRE(w.Decide(kRootKey, p).has_value());
  Options o = w.options();
  o.version = "apr.2";
  o.extra_tools = "    - {match: {tool: \"deploy.prod\"}, tier: secret}\n";
  w.Reload(o);
  auto got = w.Collect(s, p);
  REQUIRE_MESSAGE(got.has_value(), (got ? "" : got.error().ToString()));
  CHECK((*got)["state"] == "denied");
  CHECK((*got)["decision"]["code"] == "approval_stale");
  CHECK((*got)["decision"]["policy_version"] == "apr.2");
  CHECK(w.issuer().MintCalls() == 0);

  // Unchanged policy: the same flow mints.
  w.Reload(w.options());
  json q = w.RequestPending(s, Req("deploy.prod", {{"n", 2}}));
  REQUIRE(w.Decide(kRootKey, q).has_value());
  auto ok = w.Collect(s, q);
  REQUIRE_MESSAGE(ok.has_value(), (ok ? "" : ok.error().ToString()));
  CHECK((*ok)["state"] == "active");
  CHECK(w.issuer().MintCalls() == 1);
}

TEST_CASE("Approvals (#10 F12): a tampered approved request in the store is refused") {
  World w;
  auto s = w.Open(kAliceKey);
  json p = w.RequestPending(s, Req("secrets.read", {{"n", 1}}));
  json other = w.RequestPending(s, Req("secrets.read", {{"n", 2}}));
  REQUIRE(w.Decide(kCarolKey, p).has_value());
  GrantRecord g = w.Stored(p["grant_id"]);

  SUBCASE("request_digest changed") {
    g.request_digest[0] = g.request_digest[0] == 'a' ? 'b' : 'a';
  }
  SUBCASE("sealed request of another grant") {
    g.sealed_request = w.Stored(other["grant_id"]).sealed_request;
  }
  SUBCASE("sealed request removed") { g.sealed_request.clear(); }
  SUBCASE("sealed request bit-flipped") {
    g.sealed_request[10] = g.sealed_request[10] == 'A' ? 'B' : 'A';
  }
  SUBCASE("the displayed resource changed") { g.resource = "fake://svc/elsewhere"; }
  w.Put(g);
  auto got = w.Collect(s, p);
  REQUIRE_MESSAGE(got.has_value(), (got ? "" : got.error().ToString()));
  CHECK((*got)["state"] == "denied");
  CHECK((*got)["decision"]["code"] == "request_integrity_failed");
  CHECK_FALSE(got->contains("credential"));
  CHECK(w.issuer().MintCalls() == 0);
  const json last = w.Audit(s.id).back();
  CHECK(last["event"] == "grant.decided");
  CHECK(last["policy_decision"]["code"] == "request_integrity_failed");
}

TEST_CASE("Approvals (#10 F12): the sealed request is kept only while the grant can be minted") {
  World w;
  auto s = w.Open(kAliceKey);
  json denied = w.RequestPending(s, Req("secrets.read", {{"n", 1}}));
  json expired = w.RequestPending(s, Req("secrets.read", {{"n", 2}}));
  json revoked = w.RequestPending(s, Req("secrets.read", {{"n", 3}}));
  for (const json* p : {&denied, &expired, &revoked}) {
    CHECK_FALSE(w.Stored((*p)["grant_id"]).sealed_request.empty());
  }
  REQUIRE(w.Decide(kCarolKey, denied, "deny").has_value());
  CHECK(w.Stored(denied["grant_id"]).sealed_request.empty());
  REQUIRE(w.Decide(kCarolKey, revoked).has_value());
  CHECK_FALSE(w.Stored(revoked["grant_id"]).sealed_request.empty());  // approved: still needed
  REQUIRE(w.api().RevokeGrant(w.As(s.token), revoked["grant_id"]).has_value());
  CHECK(w.Stored(revoked["grant_id"]).sealed_request.empty());
  w.clock().Advance(std::chrono::seconds(301));
  REQUIRE(w.svc().Sweep().has_value());
  CHECK(w.Stored(expired["grant_id"]).state == GrantState::kExpired);
  CHECK(w.Stored(expired["grant_id"]).sealed_request.empty());
}

}  // namespace
}  // namespace jitbroker::testing
