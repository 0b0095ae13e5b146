// Issue #13: two broker daemons on one PostgreSQL database, as two replicas
// behind a load balancer. Each check drives both processes over HTTP: what
// one replica changes, the other honours at once; state changes that only
// one replica may make (collecting an approval) happen once; each replica
// writes and verifies its own audit chain, and a second replica that claims
// a chain already written is refused at start.
//
// Needs the test PostgreSQL server (CTest's `pg` fixture); without
// JITBROKER_TEST_PG_DSN the cases say so and pass without running.
#include <algorithm>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <future>
#include <iterator>
#include <map>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <doctest/doctest.h>
#include <nlohmann/json.hpp>

#include "broker/crypto/crypto.h"
#include "broker/store/pg.h"
#include "jitbroker/secret.h"
#include "tests/support/broker_process.h"
#include "tests/support/oidc_issuer.h"
#include "tests/support/pg_test_db.h"
#include "tests/support/replica_keys.h"
#include "tests/support/temp_dir.h"

namespace jitbroker::testing {
namespace replicas_test {

const nlohmann::json kMaintScope = {{"resources", {"jwt://api.internal"}},
                                    {"max_tier", "merge_deploy"}};
const nlohmann::json kMerge = {{"tool", "github.merge_pull_request"}, {"operation", "merge"},
                               {"resource", "jwt://api.internal"},    {"issuer", "internal"},
                               {"parameters", {{"pull", 7}}},         {"ttl_seconds", 120}};
const nlohmann::json kRead = {{"tool", "mcp.search"},
                              {"operation", "read"},
                              {"resource", "jwt://api.internal"},
                              {"issuer", "internal"},
                              {"scope", {{"audience", "api.internal"}}}};

// The database every replica shares, and the files (ReplicaKeys).
struct Deployment {
  std::unique_ptr<PgTestDatabase> db = PgTestDatabase::Create();
  std::unique_ptr<ReplicaKeys> keys =
      db == nullptr ? nullptr : std::make_unique<ReplicaKeys>(db->dsn());

  // Without the test server: says so, and the case passes without running.
  bool Skipped() const {
    if (db == nullptr) {
      MESSAGE("JITBROKER_TEST_PG_DSN is not set: run under CTest for the PostgreSQL tests");
    }
    return db == nullptr;
  }

  // Replicas "replica-a" and "replica-b", started in that order.
  struct Pair {
    std::unique_ptr<BrokerProcess> a, b;
  };
  Pair StartTwo() {
    Pair p;
    p.a = BrokerProcess::Start(Replica("replica-a", nullptr));
    p.b = BrokerProcess::Start(Replica("replica-b", p.a.get()));
    return p;
  }

  // Options every replica of the deployment gets (BrokerOptions' fields).
  std::string sessions;
  std::string trust;

  BrokerOptions Replica(const std::string& id, const BrokerProcess* first) {
    ReplicaOptions ro;
    ro.audit_extra = ", checkpoint: {every_records: 4}";
    BrokerOptions o = keys->Replica(id, first, ro);
    if (!sessions.empty()) {
      o.sessions = sessions;
    }
    o.trust = trust;
    return o;
  }
};

nlohmann::json Decide(const std::string& digest) {
  return {{"decision", "approve"}, {"request_digest", digest}};
}

TEST_CASE("Replicas (#13): what one replica changes, the other honours at once") {
  Deployment d;
  if (d.Skipped()) {
    return;
  }
  auto [a, b] = d.StartTwo();

  // A session opened on A works on B, and a credential minted on B
  // introspects on A (one shared issuer key).
  auto [sid, token] = a->OpenSession(a->maintainer_key, kMaintScope);
  auto g = b->Post("/v1/sessions/" + sid + "/grants", token, kRead);
  INFO(g.body);
  REQUIRE(g.status == 201);
  const std::string jwt = g.json["credential"]["token"];
  auto intro = a->Request("POST", "/v1/introspect", a->admin_key, "token=" + jwt,
                          "application/x-www-form-urlencoded");
  REQUIRE(intro.status == 200);
  CHECK(intro.json["active"] == true);

  // Both replicas lose their change listeners (the server ends those
  // connections). No replica holds session state of its own, so nothing
  // can go stale: the revocation below still holds at once.
  {
    auto c = store::pg::Connection::Open(SecretValue(d.db->dsn()));
    REQUIRE(c.has_value());
    auto killed =
        (*c)->Exec("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '" +
                   d.db->name() + "' AND query LIKE 'LISTEN%'");
    REQUIRE(killed.has_value());
    CHECK(killed->rows() == 2);
  }
  // An admin revokes the session on A: B refuses it in its very next answer.
  auto revoked = a->Post("/v1/sessions/" + sid + "/revoke", a->admin_key, {{"reason", "test"}});
  INFO(revoked.body);
  REQUIRE(revoked.status == 200);
  auto refused = b->Post("/v1/sessions/" + sid + "/grants", token, kRead);
  CHECK(refused.status == 409);
  CHECK(refused.json["code"] == "session_revoked");
  intro = b->Request("POST", "/v1/introspect", b->admin_key, "token=" + jwt,
                     "application/x-www-form-urlencoded");
  CHECK(intro.json == nlohmann::json{{"active", false}});
  // The listener comes back by itself and wakes its long polls once.
  bool resynced = false;
  for (int i = 0; i < 50 && !resynced; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    const std::string m = b->Get("/metrics").body;
    resynced = m.find("jitbroker_store_resyncs_total 1") != std::string::npos &&
               m.find("jitbroker_store_listening 1") != std::string::npos;
  }
  CHECK(resynced);
}

TEST_CASE("Replicas: a session budget is stored in PostgreSQL and counted by every replica") {
  Deployment d;
  if (d.Skipped()) {
    return;
  }
  auto [a, b] = d.StartTwo();
  nlohmann::json body = {{"agent", {{"id", "agent_budget"}}},
                         {"task", {{"id", "task_budget"}, {"scope", kMaintScope}}},
                         {"budget", {{"max_grants", 2}, {"max_credential_seconds", 100000}}}};
  HttpResult opened = a->Post("/v1/sessions", a->maintainer_key, body);
  INFO(opened.body);
  REQUIRE(opened.status == 201);
  const std::string sid = opened.json["session_id"];
  const std::string token = opened.json["session_token"];
  CHECK(a->Post("/v1/sessions/" + sid + "/grants", token, kRead).status == 201);
  CHECK(b->Post("/v1/sessions/" + sid + "/grants", token, kRead).status == 201);
  HttpResult over = a->Post("/v1/sessions/" + sid + "/grants", token, kRead);
  CHECK(over.status == 403);
  CHECK(over.json["code"] == "budget_exceeded");
  HttpResult shown = b->Get("/v1/sessions/" + sid, b->maintainer_key);
  REQUIRE(shown.status == 200);
  CHECK(shown.json["budget"]["limits"]["max_grants"] == 2);
  CHECK(shown.json["budget"]["used"]["grants"] == 2);
}

TEST_CASE("Replicas (#13): an approval is collected once, whichever replicas the agent asks") {
  Deployment d;
  if (d.Skipped()) {
    return;
  }
  auto [a, b] = d.StartTwo();
  constexpr int kRounds = 4;
  for (int round = 0; round < kRounds; ++round) {
    auto [sid, token] = a->OpenSession(a->maintainer_key, kMaintScope);
    auto r = a->Post("/v1/sessions/" + sid + "/grants", token, kMerge);
    INFO(r.body);
    REQUIRE(r.status == 202);
    const std::string grant_id = r.json["grant_id"];
    // Decided on B.
    auto ok = b->Post("/v1/approvals/" + std::string(r.json["approval"]["id"]), b->maintainer2_key,
                      Decide(r.json["approval"]["request_digest"]));
    INFO(ok.body);
    REQUIRE(ok.status == 200);
    // The agent collects on both replicas at once, twice on each.
    std::vector<std::future<HttpResult>> collects;
    for (int i = 0; i < 4; ++i) {
      BrokerProcess* replica = i % 2 == 0 ? a.get() : b.get();
      collects.push_back(std::async(std::launch::async, [replica, &grant_id, &token] {
        return replica->Request("GET", "/v1/grants/" + grant_id, token);
      }));
    }
    int credentials = 0;
    for (auto& f : collects) {
      HttpResult got = f.get();
      INFO(got.body);
      CHECK((got.status == 200 || got.status == 409));
      if (got.status == 200 && got.json.contains("credential")) {
        ++credentials;
      }
    }
    CHECK(credentials == 1);
    auto final_state = b->Request("GET", "/v1/grants/" + grant_id, token);
    CHECK(final_state.json["state"] == "active");
  }
  // Each replica's own chain verifies.
  for (BrokerProcess* replica : {a.get(), b.get()}) {
    auto v = replica->Get("/v1/audit/verify", replica->admin_key);
    INFO(v.body);
    REQUIRE(v.status == 200);
    CHECK(v.json["ok"] == true);
    CHECK(v.json["records"].get<int64_t>() > 0);
  }
  // The records are in the chain of the replica that wrote them.
  auto chain_a = a->Get("/v1/audit?chain=replica-a", a->admin_key);
  auto chain_b = a->Get("/v1/audit?chain=replica-b", a->admin_key);
  REQUIRE(chain_a.status == 200);
  REQUIRE(chain_b.status == 200);
  std::vector<std::string> events_b;
  for (const auto& rec : chain_b.json["records"]) {
    events_b.push_back(rec["event"]);
  }
  CHECK(std::count(events_b.begin(), events_b.end(), "approval.decided") == kRounds);
}

TEST_CASE(
    "Replicas (#13): an agent long-polling on one replica is woken by an approval on the other") {
  Deployment d;
  if (d.Skipped()) {
    return;
  }
  auto [a, b] = d.StartTwo();
  auto [sid, token] = a->OpenSession(a->maintainer_key, kMaintScope);
  auto r = a->Post("/v1/sessions/" + sid + "/grants", token, kMerge);
  INFO(r.body);
  REQUIRE(r.status == 202);
  const std::string grant_id = r.json["grant_id"];
  const auto start = std::chrono::steady_clock::now();
  auto waiter = std::async(std::launch::async, [&] {
    return b->Request("GET", "/v1/grants/" + grant_id + "?wait=30", token);
  });
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  auto ok = a->Post("/v1/approvals/" + std::string(r.json["approval"]["id"]), a->maintainer2_key,
                    Decide(r.json["approval"]["request_digest"]));
  REQUIRE(ok.status == 200);
  HttpResult got = waiter.get();
  const auto waited = std::chrono::steady_clock::now() - start;
  INFO(got.body);
  REQUIRE(got.status == 200);
  CHECK(got.json["state"] == "active");
  CHECK(got.json.contains("credential"));
  // Woken by the notification, long before the 30 s poll would end.
  CHECK(waited < std::chrono::seconds(10));
}

TEST_CASE("Replicas (#13): the replicas' chains are one history; a chain cut short is caught") {
  Deployment d;
  if (d.Skipped()) {
    return;
  }
  auto [a, b] = d.StartTwo();
  // Work on both, alternating, so each one's checkpoints (every 4 records)
  // see the other's chain move.
  for (int i = 0; i < 6; ++i) {
    BrokerProcess* replica = i % 2 == 0 ? a.get() : b.get();
    auto [sid, token] = replica->OpenSession(replica->maintainer_key, kMaintScope);
    REQUIRE(replica->Post("/v1/sessions/" + sid + "/grants", token, kRead).status == 201);
  }
  auto v = a->Get("/v1/audit/verify", a->admin_key);
  INFO(v.body);
  REQUIRE(v.status == 200);
  CHECK(v.json["ok"] == true);
  CHECK(v.json["chain"] == "replica-a");
  REQUIRE(v.json["chains"].size() == 2);
  CHECK(v.json["chains"][1]["chain"] == "replica-b");
  CHECK(v.json["cross_references"].get<int64_t>() > 0);
  // jitctl prints one line per chain.
  auto [status, out] =
      RunCommand("JITBROKER_URL=" + a->url() + " JITBROKER_API_KEY=" + a->admin_key + " " +
                 JITCTL_BINARY + " audit verify 2>&1");
  INFO(out);
  CHECK(status == 0);
  CHECK(out.find("2 chains") != std::string::npos);
  CHECK(out.find("replica-b: ok") != std::string::npos);

  // Someone with database access cuts replica b's chain short. Its own
  // records still chain; replica a's checkpoints, which saw it longer, do
  // not agree.
  const int64_t b_head = v.json["chains"][1]["head_seq"];
  b.reset();
  auto c = store::pg::Connection::Open(SecretValue(d.db->dsn()));
  REQUIRE(c.has_value());
  REQUIRE((*c)->Exec("DELETE FROM audit WHERE chain_id = 'replica-b' AND seq > 2"));
  auto cut = a->Get("/v1/audit/verify", a->admin_key);
  INFO(cut.body);
  CHECK(cut.json["ok"] == false);
  CHECK(cut.json["chain"] == "replica-a");
  CHECK(cut.json["problem"].get<std::string>().find("replica-b") != std::string::npos);
  CHECK(b_head > 2);
}

// The sum of a counter over both replicas' /metrics (every label set).
double CounterSum(BrokerProcess& a, BrokerProcess& b, const std::string& name) {
  double sum = 0;
  for (BrokerProcess* r : {&a, &b}) {
    std::istringstream in(r->Get("/metrics").body);
    for (std::string line; std::getline(in, line);) {
      if (line.starts_with(name + "{") || line.starts_with(name + " ")) {
        sum += std::stod(line.substr(line.rfind(' ') + 1));
      }
    }
  }
  return sum;
}

TEST_CASE(
    "Replicas (#13): both replicas sweep, and each stalled session is ended and revoked once") {
  Deployment d;
  if (d.Skipped()) {
    return;
  }
  d.sessions =
      "{max_ttl_seconds: 28800, default_ttl_seconds: 3600, heartbeat_seconds: 60, "
      "stall_after_missed: 1, sweep_interval_ms: 50}";
  auto [a, b] = d.StartTwo();
  constexpr int kSessions = 12;
  std::vector<std::string> ids;
  for (int i = 0; i < kSessions; ++i) {
    BrokerProcess* replica = i % 2 == 0 ? a.get() : b.get();
    // Stalled after one missed heartbeat of a second, its grant still live.
    auto [sid, token] = replica->OpenSession(replica->maintainer_key, kMaintScope, 3600,
                                             /*heartbeat_seconds=*/1);
    REQUIRE(replica->Post("/v1/sessions/" + sid + "/grants", token, kRead).status == 201);
    ids.push_back(sid);
  }
  // Both sweepers find every session due at the same moments.
  bool all_ended = false;
  for (int i = 0; i < 100 && !all_ended; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    all_ended = true;
    for (const std::string& sid : ids) {
      all_ended =
          all_ended && a->Get("/v1/sessions/" + sid, a->admin_key).json["state"] == "stalled";
    }
  }
  REQUIRE(all_ended);
  // Each grant was revoked once, by one replica (the one holding the
  // session's lease): the two replicas' revocation counts add up to the
  // grants, and each session has one session.stalled record in all chains.
  CHECK(CounterSum(*a, *b, "jitbroker_credentials_revoked_total") == kSessions);
  std::map<std::string, int> stalled;
  for (const char* chain : {"replica-a", "replica-b"}) {
    auto recs = a->Get(std::string("/v1/audit?limit=10000&chain=") + chain, a->admin_key);
    REQUIRE(recs.status == 200);
    for (const auto& r : recs.json["records"]) {
      if (r["event"] == "session.stalled") {
        ++stalled[r["agent"]["session_id"]];
      }
    }
  }
  CHECK(stalled.size() == kSessions);
  for (const auto& [sid, n] : stalled) {
    INFO(sid);
    CHECK(n == 1);
  }
}

TEST_CASE("Replicas (#13): a CI token exchanged on one replica is refused on the other") {
  Deployment d;
  if (d.Skipped()) {
    return;
  }
  auto idp = FakeOidcIssuer::Start();
  REQUIRE(idp != nullptr);
  const std::string kid = idp->AddKey(crypto::JwsAlg::kRS256, "ci-1");
  const std::string audience = "jitbroker.replicas.test";
  d.trust = "\n  - name: deploy\n    issuer: " + idp->issuer() +
            "\n    allow_http: true\n    provider: github_actions\n    audience: " + audience +
            "\n    claims: {repository_id: \"456\"}\n"
            "    grant: {issuer: internal, resource: \"jwt://api.internal\", ttl_seconds: 60}\n";
  auto [a, b] = d.StartTwo();
  const auto exchange = [&](BrokerProcess& r, const std::string& token) {
    return r.Request("POST", "/v1/token", "",
                     "grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Atoken-exchange"
                     "&subject_token_type=urn%3Aietf%3Aparams%3Aoauth%3Atoken-type%3Aid_token"
                     "&audience=deploy&subject_token=" +
                         token,
                     "application/x-www-form-urlencoded");
  };
  const auto now = [] {
    return std::chrono::duration_cast<std::chrono::seconds>(
               std::chrono::system_clock::now().time_since_epoch())
        .count();
  };
  const std::string token = idp->Sign(idp->GitHubClaims(audience, now()), kid);
  auto first = exchange(*a, token);
  INFO(first.body);
  REQUIRE(first.status == 200);
  auto replayed = exchange(*b, token);
  CHECK(replayed.status == 400);
  CHECK(replayed.json["error"] == "invalid_grant");
  // The same fresh token sent to both at once: one exchange, one refusal.
  for (int i = 0; i < 5; ++i) {
    const std::string fresh = idp->Sign(idp->GitHubClaims(audience, now()), kid);
    auto on_a = std::async(std::launch::async, [&] { return exchange(*a, fresh); });
    auto on_b = std::async(std::launch::async, [&] { return exchange(*b, fresh); });
    const int sa = on_a.get().status;
    const int sb = on_b.get().status;
    INFO("a " << sa << ", b " << sb);
    CHECK(((sa == 200 && sb == 400) || (sa == 400 && sb == 200)));
  }
}

TEST_CASE("Replicas (#13): two replicas with one replica_id: the second is refused at start") {
  Deployment d;
  if (d.Skipped()) {
    return;
  }
  auto a = BrokerProcess::Start(d.Replica("replica-a", nullptr));
  // A second daemon in its own directory, same replica id.
  TempDir other("jitbroker-replica-dup");
  std::filesystem::copy(a->dir() + "/keys", other.File("keys"));
  std::ifstream in(a->config_path());
  other.Write("broker.yaml", std::string(std::istreambuf_iterator<char>(in), {}));
  auto [status, out] = RunCommand("timeout 30 " + std::string(JITBROKER_BINARY) + " --config " +
                                  other.File("broker.yaml") + " 2>&1");
  INFO(out);
  CHECK(status != 0);
  CHECK(out.find("audit chain \"replica-a\" is written by another broker replica") !=
        std::string::npos);
  // The first replica is unharmed.
  CHECK(a->Get("/readyz").status == 200);
}

}  // namespace replicas_test
}  // namespace jitbroker::testing
