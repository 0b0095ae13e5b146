// The service's revocation lifecycle in process, with a fake upstream issuer
// whose state outlives broker "restarts" (the upstream is external): queued
// revocations survive a restart and are retried; a grant caught mid-mint is
// reconciled; the fan-out is concurrent; revocation handles are sealed.
#include <doctest/doctest.h>

#include <filesystem>
#include <fstream>
#include <future>
#include <string>
#include <thread>
#include <vector>

#include "broker/audit/journal.h"
#include "broker/common/metrics.h"
#include "broker/config/config.h"
#include "broker/crypto/crypto.h"
#include "broker/http/wire.h"
#include "broker/service/broker_service.h"
#include "broker/store/sqlite_store.h"
#include "tests/fakes/failing_store.h"
#include "tests/fakes/fake_clock.h"
#include "tests/fakes/fake_issuer.h"
#include "tests/support/states_doctest.h"

namespace jitbroker::testing {
namespace {

// Forwards to a FakeIssuer owned by the test, so the "upstream" survives the
// broker being torn down and rebuilt.
class SharedIssuer final : public Issuer {
 public:
  explicit SharedIssuer(FakeIssuer* inner) : inner_(inner) {}
  const IssuerDescription& Describe() const override { return inner_->Describe(); }
  Result<Tier> ImpliedTier(const GrantRequest& r) const override { return inner_->ImpliedTier(r); }
  Result<MintResult> Mint(const MintRequest& r) override { return inner_->Mint(r); }
  Result<RevokeOutcome> Revoke(const RevokeRequest& r) override { return inner_->Revoke(r); }

 private:
  FakeIssuer* inner_;
};

const char* kConfig = R"(
data_dir: data
policy:
  version: "svc.1"
  principals:
    - {id: alice, roles: [engineer], api_key_file: alice.key}
    - {id: root, roles: [admin], api_key_file: root.key}
  roles:
    engineer: {resources: ["fake://svc/*"], max_tier: pr}
    admin: {resources: ["*"], max_tier: destructive}
)";

struct Broker {
  std::unique_ptr<Store> store;
  std::unique_ptr<FailingStore> failing;  // in front of `store`: fault injection
  std::unique_ptr<audit::Journal> journal;
  Metrics metrics;
  std::unique_ptr<service::BrokerService> service;
};

class Fixture {
 public:
  Fixture() {
    char tmpl[] = "/tmp/jitbroker-svc-XXXXXX";
    REQUIRE(::mkdtemp(tmpl) != nullptr);
    dir_ = tmpl;
    std::ofstream(dir_ + "/alice.key") << "jbk_alice_key_for_tests_0123456789\n";
    std::ofstream(dir_ + "/root.key") << "jbk_root_key_for_tests_0123456789\n";
    std::ofstream(dir_ + "/broker.yaml") << kConfig;
    auto cfg = config::LoadConfigFile(dir_ + "/broker.yaml");
    REQUIRE_MESSAGE(cfg.has_value(), (cfg ? "" : cfg.error().ToString()));
    policy_ = cfg->policy;
    sessions_ = cfg->sessions;
    seal_key_ = crypto::RandomBytes(32);
    FakeIssuerOptions fo;
    fo.name = "fake";
    upstream_ = std::make_unique<FakeIssuer>(fo);
    fo.name = "fake2";
    fo.type = "fake2";
    second_ = std::make_unique<FakeIssuer>(fo);
  }
  ~Fixture() {
    broker_.reset();
    std::filesystem::remove_all(dir_);
  }

  void Start() {
    broker_ = std::make_unique<Broker>();
    store::SqliteOptions so;
    so.path = dir_ + "/state.db";
    auto st = store::OpenSqliteStore(so);
    REQUIRE(st.has_value());
    broker_->store = std::move(*st);
    broker_->failing = std::make_unique<FailingStore>(broker_->store.get());
    auto j = audit::Journal::Create(broker_->failing.get(), dir_ + "/audit.jsonl");
    REQUIRE(j.has_value());
    broker_->journal = std::move(*j);
    std::map<std::string, std::unique_ptr<Issuer>> issuers;
    issuers.emplace("fake", std::make_unique<SharedIssuer>(upstream_.get()));
    issuers.emplace("fake2", std::make_unique<SharedIssuer>(second_.get()));
    service::ServiceOptions opts;
    opts.limits.max_calls_per_issuer = max_calls_per_issuer;
    opts.sessions = sessions_;
    opts.seal_key = SecretValue(seal_key_);
    opts.bulk_page = bulk_page;
    opts.bulk_listed_revocations = bulk_listed;
    broker_->service = std::make_unique<service::BrokerService>(
        broker_->failing.get(), broker_->journal.get(), &clock_, &broker_->metrics,
        std::move(issuers), policy_, std::move(opts));
    REQUIRE(broker_->service->Reconcile().has_value());
  }
  void Stop() {
    broker_->journal->Stop();
    broker_.reset();
  }

  service::CallContext As(const std::string& bearer) {
    auto c = svc().Authenticate("Bearer " + bearer, "");
    REQUIRE_MESSAGE(c.has_value(), (c ? "" : c.error().ToString()));
    service::CallContext ctx;
    ctx.request_id = "req_test";
    ctx.caller = std::move(*c);
    return ctx;
  }
  service::CallContext Alice() { return As("jbk_alice_key_for_tests_0123456789"); }
  service::CallContext Root() { return As("jbk_root_key_for_tests_0123456789"); }

  // Opens a session and takes `n` grants; returns {session id, token}.
  std::pair<std::string, std::string> SessionWithGrants(int n) {
    const nlohmann::json body = nlohmann::json::parse(R"({"agent": {"id": "agent_1"},
        "task": {"id": "t1", "scope": {"resources": ["fake://svc/*"], "max_tier": "pr"}}})");
    auto opened = api().OpenSession(Alice(), body);
    REQUIRE(opened.has_value());
    const std::string sid = (*opened)["session_id"];
    const std::string token = (*opened)["session_token"];
    for (int i = 0; i < n; ++i) {
      auto g = api().RequestGrant(As(token), sid,
                                  {{"tool", "svc.read"},
                                   {"operation", "read"},
                                   {"resource", "fake://svc/r" + std::to_string(i)},
                                   {"issuer", "fake"}});
      REQUIRE_MESSAGE(g.has_value(), (g ? "" : g.error().ToString()));
      REQUIRE(g->outcome == service::GrantOutcome::kIssued);
    }
    return {sid, token};
  }

  service::BrokerService& svc() { return *broker_->service; }
  // The JSON API over the service: what the HTTP routes answer.
  http::wire::JsonApi api() { return http::wire::JsonApi(broker_->service.get()); }
  Store& store() { return *broker_->store; }
  FailingStore& failing() { return *broker_->failing; }
  FakeIssuer& upstream() { return *upstream_; }
  FakeIssuer& second() { return *second_; }
  FakeClock& clock() { return clock_; }
  Metrics& metrics() { return broker_->metrics; }
  const std::string& dir() const { return dir_; }

  // ServiceOptions for the next Start().
  size_t bulk_page = 500;
  size_t bulk_listed = 1000;
  int64_t max_calls_per_issuer = 0;

 private:
  std::string dir_;
  std::shared_ptr<const Policy> policy_;
  config::SessionsConfig sessions_;
  std::string seal_key_;
  FakeClock clock_;
  std::unique_ptr<FakeIssuer> upstream_;
  std::unique_ptr<FakeIssuer> second_;
  std::unique_ptr<Broker> broker_;
};

TEST_CASE("Service: an issuer that hangs holds only its bulkhead; other issuers are served") {
  // Issue #16: limits.max_calls_per_issuer. Two mints hang on `fake`'s
  // upstream; a third to `fake` is refused at once (503 issuer_busy,
  // retryable, recorded as a failed mint), while `fake2` mints as usual.
  Fixture f;
  f.max_calls_per_issuer = 2;
  f.Start();
  auto [sid, token] = f.SessionWithGrants(0);
  auto body = [](const std::string& issuer, int i) {
    return nlohmann::json{{"tool", "svc.read"},
                          {"operation", "read"},
                          {"resource", "fake://svc/b" + std::to_string(i)},
                          {"issuer", issuer}};
  };
  f.upstream().SetMintLatency(std::chrono::milliseconds(1500));
  std::vector<std::future<bool>> hung;
  for (int i = 0; i < 2; ++i) {
    hung.push_back(std::async(std::launch::async, [&f, &sid, &token, &body, i] {
      auto g = f.api().RequestGrant(f.As(token), sid, body("fake", i));
      return g.has_value() && g->outcome == service::GrantOutcome::kIssued;
    }));
  }
  // Until both hung mints are inside the upstream.
  for (int i = 0; i < 200 && f.upstream().MintCalls() < 2; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  REQUIRE(f.upstream().MintCalls() == 2);
  const auto t0 = std::chrono::steady_clock::now();
  auto busy = f.api().RequestGrant(f.As(token), sid, body("fake", 2));
  REQUIRE_FALSE(busy.has_value());
  CHECK(busy.error().code == ErrorCode::kUnavailable);
  CHECK(busy.error().Reason() == "issuer_busy");
  CHECK(busy.error().retryable);
  CHECK(busy.error().retry_after == std::chrono::seconds(1));
  auto other = f.api().RequestGrant(f.As(token), sid, body("fake2", 3));
  REQUIRE_MESSAGE(other.has_value(), (other ? "" : other.error().ToString()));
  CHECK(other->outcome == service::GrantOutcome::kIssued);
  // Neither waited for the hung upstream.
  CHECK(std::chrono::steady_clock::now() - t0 < std::chrono::milliseconds(1000));
  CHECK(f.upstream().MintCalls() == 2);  // the refused one never reached it
  for (auto& h : hung) {
    CHECK(h.get());
  }
  // The refusal is a failed grant in the store, like any failed mint.
  auto grants = f.store().ListGrants(sid);
  REQUIRE(grants.has_value());
  int failed = 0;
  for (const auto& g : *grants) {
    failed += g.state == GrantState::kFailed ? 1 : 0;
  }
  CHECK(failed == 1);
  // Once the hung calls return, the issuer takes mints again.
  f.upstream().SetMintLatency(std::chrono::milliseconds(0));
  auto after = f.api().RequestGrant(f.As(token), sid, body("fake", 4));
  REQUIRE_MESSAGE(after.has_value(), (after ? "" : after.error().ToString()));
}

TEST_CASE("Service: a bulk revoke pages through the sessions and bounds its answer") {
  Fixture f;
  f.bulk_page = 2;    // sessions read at a time
  f.bulk_listed = 3;  // outcomes listed in the answer
  f.Start();
  std::vector<std::string> sids;
  for (int i = 0; i < 5; ++i) {
    sids.push_back(f.SessionWithGrants(1).first);
  }
  auto out = f.api().BulkRevoke(f.Root(), {{"principal", "alice"}, {"reason", "incident"}});
  REQUIRE_MESSAGE(out.has_value(), (out ? "" : out.error().ToString()));
  CHECK((*out)["sessions_revoked"] == 5);
  CHECK((*out)["revocations"].size() == 3);
  CHECK((*out)["revocations_total"] == 5);
  CHECK((*out)["revocations_truncated"] == true);
  for (const std::string& sid : sids) {
    CHECK(f.store().GetSession(sid).value()->state == SessionState::kRevoked);
  }
  CHECK(f.upstream().RevokedGrantIds().size() == 5);
  // Nothing left to revoke: an empty answer, not an error.
  auto again = f.api().BulkRevoke(f.Root(), {{"principal", "alice"}, {"reason", "again"}});
  REQUIRE(again.has_value());
  CHECK((*again)["sessions_revoked"] == 0);
  CHECK((*again)["revocations_truncated"] == false);
}

TEST_CASE("Service: revocation fans out concurrently and handles are sealed at rest") {
  Fixture f;
  f.Start();
  f.upstream().SetRevokeLatency(std::chrono::milliseconds(50));
  auto [sid, token] = f.SessionWithGrants(20);
  // The store holds no handle in the clear.
  auto grants = f.store().ListGrants(sid);
  REQUIRE(grants->size() == 20);
  for (const auto& g : *grants) {
    CHECK_FALSE(g.sealed_handle.empty());
    CHECK(g.sealed_handle.find("fake") == std::string::npos);
  }
  const auto start = std::chrono::steady_clock::now();
  auto ended = f.api().EndSession(f.Root(), sid, {{"reason", "test"}}, true);
  const auto took = std::chrono::steady_clock::now() - start;
  REQUIRE(ended.has_value());
  for (const auto& o : (*ended)["revocations"]) {
    CHECK(o["outcome"] == "revoked");
  }
  CHECK(f.upstream().RevokedGrantIds().size() == 20);
  CHECK(f.upstream().MaxConcurrentRevokes() > 1);
  CHECK(took < std::chrono::milliseconds(20 * 50));  // sequential would take 1 s
  auto after = f.store().ListGrants(sid);
  REQUIRE(after.has_value());
  for (const auto& g : *after) {
    CHECK(g.state == GrantState::kRevoked);
    CHECK(g.sealed_handle.empty());  // destroyed after revoke
  }
}

TEST_CASE("Service: a failed upstream revocation is queued, survives a restart and is retried") {
  Fixture f;
  f.Start();
  auto [sid, token] = f.SessionWithGrants(2);
  f.upstream().SetFailRevokesAlways(true);
  auto ended = f.api().EndSession(f.Alice(), sid, nlohmann::json::object(), false);
  REQUIRE(ended.has_value());
  for (const auto& o : (*ended)["revocations"]) {
    CHECK(o["outcome"] == "queued");
    CHECK(o["residual_seconds"].get<int64_t>() > 0);
  }
  CHECK(f.upstream().LiveCredentials() == 2);
  auto queued = f.store().ListRevocationsDue(f.clock().Now() + std::chrono::hours(1), 100);
  REQUIRE(queued->size() == 2);

  // Still failing: the retry backs off.
  f.clock().Advance(std::chrono::seconds(2));
  auto s1 = f.svc().Sweep();
  REQUIRE(s1.has_value());
  CHECK(s1->revocations_retried == 2);
  CHECK(s1->revocations_done == 0);
  CHECK(f.store().ListRevocationsDue(f.clock().Now(), 100)->empty());

  // Restart; the upstream recovers; the queue drains.
  f.Stop();
  f.upstream().SetFailRevokesAlways(false);
  f.Start();
  f.clock().Advance(std::chrono::minutes(6));
  auto s2 = f.svc().Sweep();
  REQUIRE(s2.has_value());
  CHECK(s2->revocations_done == 2);
  CHECK(f.upstream().LiveCredentials() == 0);
  auto drained = f.store().ListGrants(sid);
  REQUIRE(drained.has_value());
  for (const auto& g : *drained) {
    CHECK(g.state == GrantState::kRevoked);
    CHECK(g.revoke_outcome == "revoked");
  }
  CHECK(f.store().ListRevocationsDue(f.clock().Now() + std::chrono::hours(2), 100)->empty());
  auto v = f.api().VerifyAudit(f.Root());
  REQUIRE(v.has_value());
  CHECK((*v)["ok"] == true);
}

TEST_CASE("Service: queued revocations give up once the credential has expired") {
  Fixture f;
  f.Start();
  auto [sid, token] = f.SessionWithGrants(1);
  f.upstream().SetFailRevokesAlways(true);
  REQUIRE(f.api().EndSession(f.Alice(), sid, nlohmann::json::object(), false).has_value());
  f.clock().Advance(std::chrono::hours(2));  // past the 900 s credential
  auto s = f.svc().Sweep();
  REQUIRE(s.has_value());
  CHECK(s->revocations_done == 1);
  auto g = f.store().ListGrants(sid)->front();
  CHECK(g.state == GrantState::kExpired);
  CHECK(g.sealed_handle.empty());
}

TEST_CASE("Service: a credential minted but not recorded is revoked upstream, not handed out") {
  Fixture f;
  f.Start();
  auto [sid, token] = f.SessionWithGrants(0);
  // The write-ahead intent commits; the record of the minted credential fails.
  f.failing().FailApplyNumber(f.failing().ApplyCalls() + 2);
  auto g = f.api().RequestGrant(f.As(token), sid,
                                {{"tool", "svc.read"},
                                 {"operation", "read"},
                                 {"resource", "fake://svc/r1"},
                                 {"issuer", "fake"}});
  REQUIRE_FALSE(g.has_value());
  CHECK(g.error().code == ErrorCode::kUnavailable);
  CHECK(f.upstream().Mints() == 1);
  CHECK(f.upstream().LiveCredentials() == 0);  // revoked at once
  f.Stop();
}

TEST_CASE("Service: a grant caught mid-mint is reconciled at restart, never forgotten") {
  Fixture f;
  f.Start();
  auto [sid, token] = f.SessionWithGrants(1);
  // Simulate a crash after the write-ahead record: a grant left "minting".
  GrantRecord g = f.store().ListGrants(sid)->front();
  g.id = "grt_interrupted";
  g.state = GrantState::kMinting;
  g.credential_sha256.clear();
  g.sealed_handle.clear();
  g.expires_at.reset();
  f.Stop();
  {
    store::SqliteOptions so;
    so.path = f.dir() + "/state.db";
    auto st = store::OpenSqliteStore(so);
    REQUIRE(st.has_value());
    auto j = audit::Journal::Create(st->get(), f.dir() + "/audit.jsonl");
    REQUIRE(j.has_value());
    WriteBatch b;
    b.PutGrant(g, std::nullopt);  // its write-ahead record, as MintAndCommit writes it
    REQUIRE((*j)->Commit(std::move(b)).has_value());
    (*j)->Stop();
  }
  f.Start();  // Reconcile runs here
  auto r = f.store().GetGrant("grt_interrupted");
  REQUIRE(r->has_value());
  CHECK((*r)->state == GrantState::kRevoked);
  CHECK((*r)->revoke_outcome == "expiry_only");
  CHECK((*r)->extra["reconciled"]["residual_seconds"].get<int64_t>() > 0);
  AuditFilter af;
  af.session_id = sid;
  bool audited = false;
  auto records = f.store().ListAudit(af);
  REQUIRE(records.has_value());
  for (const auto& rec : *records) {
    audited |= rec.body.value("event", "") == "credential.reconciled";
  }
  CHECK(audited);
}

TEST_CASE("Service: the sweeper ends expired sessions and expires credentials by deadline") {
  Fixture f;
  f.Start();
  auto [sid, token] = f.SessionWithGrants(1);
  f.clock().Advance(std::chrono::seconds(901));  // credential TTL 900 s
  auto s = f.svc().Sweep();
  REQUIRE(s.has_value());
  // heartbeat 60 s × 3 missed: the session stalled long before.
  CHECK(s->sessions_ended == 1);
  auto session = f.store().GetSession(sid);
  CHECK((*session)->state == SessionState::kStalled);
  CHECK(f.store().ListGrants(sid)->front().state != GrantState::kActive);
  // Nothing left to do.
  auto again = f.svc().Sweep();
  CHECK(again->sessions_ended == 0);
  CHECK(again->grants_expired == 0);
}

TEST_CASE("Service: every sweeper pass is observed in the metrics, a failed one too") {
  Fixture f;
  f.Start();
  auto [sid, token] = f.SessionWithGrants(2);
  f.clock().Advance(std::chrono::seconds(901));
  REQUIRE(f.svc().Sweep().has_value());  // ends the session, revokes its 2 grants
  REQUIRE(f.svc().Sweep().has_value());  // nothing due
  std::string text = f.metrics().Render();
  CHECK(text.find("# TYPE jitbroker_sweep_duration_seconds histogram\n") != std::string::npos);
  CHECK(text.find("jitbroker_sweep_duration_seconds_count 2\n") != std::string::npos);
  CHECK(text.find("jitbroker_sweep_duration_seconds_bucket{le=\"+Inf\"} 2\n") != std::string::npos);
  CHECK(text.find("jitbroker_sweep_handled_total{kind=\"sessions_ended\"} 1\n") !=
        std::string::npos);
  CHECK(text.find("jitbroker_sweep_handled_total{kind=\"grants_expired\"} 0\n") !=
        std::string::npos);

  f.failing().SetFailReads(true);
  CHECK_FALSE(f.svc().Sweep().has_value());
  f.failing().SetFailReads(false);
  text = f.metrics().Render();
  CHECK(text.find("jitbroker_sweep_duration_seconds_count 3\n") != std::string::npos);
  CHECK(text.find("jitbroker_sweep_handled_total{kind=\"sessions_ended\"} 1\n") !=
        std::string::npos);
}

}  // namespace
}  // namespace jitbroker::testing
