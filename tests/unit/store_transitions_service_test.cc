// The service's state changes are conditional (docs/architecture.md,
// "Conditional state changes"): when another broker process moves a grant or
// a session after this one read it, this one's write is refused with
// "state_conflict" and changes nothing — it never overwrites the other's
// transition (issue #11, item 4). The other process is a second store handle
// on the same database that writes between the service's read and its
// journal's transaction (FailingStore::RunBeforeApply).
#include <doctest/doctest.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <span>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include "broker/audit/journal.h"
#include "broker/config/config.h"
#include "broker/crypto/crypto.h"
#include "broker/http/wire.h"
#include "broker/service/broker_service.h"
#include "broker/store/open.h"
#include "tests/fakes/failing_store.h"
#include "tests/fakes/fake_clock.h"
#include "tests/fakes/fake_issuer.h"
#include "tests/support/states_doctest.h"
#include "tests/support/temp_dir.h"

namespace jitbroker::testing {
namespace {

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

class Fixture {
 public:
  Fixture() {
    std::ofstream(dir_.File("alice.key")) << "jbk_alice_key_for_tests_0123456789\n";
    std::ofstream(dir_.File("root.key")) << "jbk_root_key_for_tests_0123456789\n";
    std::ofstream(dir_.File("broker.yaml")) << kConfig;
    auto cfg = config::LoadConfigFile(dir_.File("broker.yaml"));
    REQUIRE_MESSAGE(cfg.has_value(), (cfg ? "" : cfg.error().ToString()));
    store_ = OpenStore();
    failing_ = std::make_unique<FailingStore>(store_.get());
    auto j = audit::Journal::Create(failing_.get(), dir_.File("audit.jsonl"));
    REQUIRE(j.has_value());
    journal_ = std::move(*j);
    FakeIssuerOptions fo;
    fo.name = "fake";
    std::map<std::string, std::unique_ptr<Issuer>> issuers;
    issuers.emplace("fake", std::make_unique<FakeIssuer>(fo));
    service::ServiceOptions opts;
    opts.sessions = cfg->sessions;
    opts.seal_key = SecretValue(crypto::RandomBytes(32));
    service_ =
        std::make_unique<service::BrokerService>(failing_.get(), journal_.get(), &clock_, &metrics_,
                                                 std::move(issuers), cfg->policy, std::move(opts));
    other_ = OpenStore();  // the other broker process
  }
  ~Fixture() { journal_->Stop(); }

  std::unique_ptr<Store> OpenStore() {
    config::StoreConfig c;
    c.backend = config::SqliteStoreConfig{dir_.File("data/state.db")};
    auto s = store::Open(c);
    REQUIRE_MESSAGE(s.has_value(), (s ? "" : s.error().ToString()));
    return std::move(*s);
  }

  service::CallContext As(const std::string& bearer) {
    auto c = service_->Authenticate("Bearer " + bearer, "");
    REQUIRE_MESSAGE(c.has_value(), (c ? "" : c.error().ToString()));
    service::CallContext ctx;
    ctx.request_id = "req_test";
    ctx.caller = std::move(*c);
    return ctx;
  }
  service::CallContext Root() { return As("jbk_root_key_for_tests_0123456789"); }

  // Opens a session with `n` active grants of `ttl` seconds: {session id,
  // token, id of the first grant}.
  std::tuple<std::string, std::string, std::string> SessionWithGrant(int n = 1, int ttl = 900) {
    const nlohmann::json body = nlohmann::json::parse(R"({"agent": {"id": "agent_1"},
        "task": {"id": "t1", "scope": {"resources": ["fake://svc/*"], "max_tier": "pr"}}})");
    auto opened = api().OpenSession(As("jbk_alice_key_for_tests_0123456789"), body);
    REQUIRE(opened.has_value());
    const std::string sid = (*opened)["session_id"];
    const std::string token = (*opened)["session_token"];
    for (int i = 0; i < n; ++i) {
      auto g = api().RequestGrant(As(token), sid,
                                  {{"tool", "svc.read"},
                                   {"operation", "read"},
                                   {"resource", "fake://svc/r" + std::to_string(i)},
                                   {"issuer", "fake"},
                                   {"ttl_seconds", ttl}});
      REQUIRE_MESSAGE(g.has_value(), (g ? "" : g.error().ToString()));
      REQUIRE(g->outcome == service::GrantOutcome::kIssued);
    }
    auto grants = store_->ListGrants(sid);
    REQUIRE(grants.has_value());
    REQUIRE(grants->size() == static_cast<size_t>(n));
    return {sid, token, grants->front().id};
  }

  // Just before this process's next transaction, the other process applies
  // `batch` (which must commit).
  // `skip`: the number of this process's commits that go through first.
  void OtherWritesFirst(WriteBatch batch, uint64_t skip = 0) {
    failing_->RunBeforeApply(failing_->ApplyCalls() + 1 + skip, [this, batch = std::move(batch)] {
      CHECK(other_->Apply(std::span<const WriteBatch>(&batch, 1), {}));
    });
  }

  size_t EventsOf(const std::string& event, const std::string& session_id) {
    AuditFilter f;
    f.session_id = session_id;
    f.limit = 0;
    auto records = store_->ListAudit(f);
    REQUIRE(records.has_value());
    size_t n = 0;
    for (const AuditRecord& r : *records) {
      n += r.body.value("event", "") == event ? 1 : 0;
    }
    return n;
  }

  service::BrokerService& svc() { return *service_; }
  // The JSON API over the service: what the HTTP routes answer.
  http::wire::JsonApi api() { return http::wire::JsonApi(service_.get()); }
  FakeClock& clock() { return clock_; }
  Store& store() { return *store_; }

 private:
  TempDir dir_{"jitbroker-transitions"};
  FakeClock clock_;
  Metrics metrics_;
  std::unique_ptr<Store> store_;
  std::unique_ptr<FailingStore> failing_;
  std::unique_ptr<audit::Journal> journal_;
  std::unique_ptr<service::BrokerService> service_;
  std::unique_ptr<Store> other_;
};

// What the other process writes when it revokes active grant `g` first.
WriteBatch RevokedByOther(GrantRecord g) {
  const std::string id = g.id;
  g.state = GrantState::kRevoked;
  g.revoke_outcome = "revoked_by_other_process";
  g.sealed_handle.clear();
  WriteBatch batch;
  batch.grants.push_back(std::move(g));
  batch.RequireGrantState(id, GrantState::kActive);
  return batch;
}

void CheckConflict(const Result<nlohmann::json>& r) {
  REQUIRE_FALSE(r.has_value());
  CHECK(r.error().code == ErrorCode::kFailedPrecondition);
  CHECK(r.error().Reason() == "state_conflict");
}

TEST_CASE("Service: revoking a grant another process revoked first is refused, not overwritten") {
  Fixture f;
  auto [sid, token, gid] = f.SessionWithGrant();
  WriteBatch batch = RevokedByOther(*f.store().GetGrant(gid).value());
  f.OtherWritesFirst(std::move(batch));

  CheckConflict(f.api().RevokeGrant(f.Root(), gid));
  const GrantRecord now = *f.store().GetGrant(gid).value();
  CHECK(now.state == GrantState::kRevoked);
  CHECK(now.revoke_outcome == "revoked_by_other_process");
  CHECK(f.EventsOf("credential.revoked", sid) == 0);  // the loser's record is not in the chain
  // Asked again, it answers from what the grant is now.
  auto again = f.api().RevokeGrant(f.Root(), gid);
  REQUIRE_FALSE(again.has_value());
  CHECK(again.error().Reason() == "grant_not_live");
  auto v = f.api().VerifyAudit(f.Root());
  REQUIRE(v.has_value());
  CHECK((*v)["ok"] == true);
}

TEST_CASE("Service: a heartbeat racing a revocation does not revive the session") {
  Fixture f;
  auto [sid, token, gid] = f.SessionWithGrant();
  SessionRecord theirs = *f.store().GetSession(sid).value();
  theirs.state = SessionState::kRevoked;
  theirs.end_reason = "revoked by another process";
  WriteBatch batch;
  batch.sessions.push_back(theirs);
  batch.RequireSessionState(sid, SessionState::kActive);
  f.OtherWritesFirst(std::move(batch));

  CheckConflict(f.api().Heartbeat(f.As(token), sid, nlohmann::json::object()));
  const SessionRecord now = *f.store().GetSession(sid).value();
  CHECK(now.state == SessionState::kRevoked);
  CHECK(now.end_reason == "revoked by another process");
}

TEST_CASE("Service: ending a session another process ended first is refused and writes nothing") {
  Fixture f;
  auto [sid, token, gid] = f.SessionWithGrant();
  SessionRecord theirs = *f.store().GetSession(sid).value();
  theirs.state = SessionState::kCompleted;
  theirs.end_reason = "ended by another process";
  WriteBatch batch;
  batch.sessions.push_back(theirs);
  batch.RequireSessionState(sid, SessionState::kActive);
  f.OtherWritesFirst(std::move(batch));

  CheckConflict(f.api().EndSession(f.Root(), sid, {{"reason", "test"}}, true));
  const SessionRecord now = *f.store().GetSession(sid).value();
  CHECK(now.state == SessionState::kCompleted);
  CHECK(now.end_reason == "ended by another process");
  CHECK(f.EventsOf("session.revoked", sid) == 0);
  // The grant this process tried to revoke with the session is as it was:
  // the whole batch was refused.
  CHECK(f.store().GetGrant(gid).value()->state == GrantState::kActive);
}

TEST_CASE("Service: a bulk revoke goes on past a grant another process revoked meanwhile") {
  Fixture f;
  auto [sid, token, gid] = f.SessionWithGrant();
  WriteBatch batch = RevokedByOther(*f.store().GetGrant(gid).value());
  // After the admin.bulk_revoke record, before the session's end commits.
  f.OtherWritesFirst(std::move(batch), /*skip=*/1);

  auto out = f.api().BulkRevoke(f.Root(), {{"principal", "alice"}, {"reason", "incident"}});
  REQUIRE_MESSAGE(out.has_value(), (out ? "" : out.error().ToString()));
  // Read again after the conflict: the session is revoked, the grant is the
  // other process's to have revoked (no second outcome, no second record).
  CHECK((*out)["sessions_revoked"] == 1);
  CHECK((*out)["revocations"].empty());
  CHECK(f.store().GetSession(sid).value()->state == SessionState::kRevoked);
  CHECK(f.store().GetGrant(gid).value()->revoke_outcome == "revoked_by_other_process");
  CHECK(f.EventsOf("session.revoked", sid) == 1);
  CHECK(f.EventsOf("credential.revoked", sid) == 0);
  auto v = f.api().VerifyAudit(f.Root());
  REQUIRE(v.has_value());
  CHECK((*v)["ok"] == true);
}

TEST_CASE("Service: a bulk revoke by issuer goes on past a grant another process revoked") {
  Fixture f;
  auto [sid, token, first] = f.SessionWithGrant(2, 900);
  auto grants = f.store().ListGrants(sid).value();
  REQUIRE(grants.size() == 2);
  WriteBatch batch = RevokedByOther(grants[0]);
  f.OtherWritesFirst(std::move(batch), /*skip=*/1);

  auto out = f.api().BulkRevoke(f.Root(), {{"issuer", "fake"}, {"reason", "incident"}});
  REQUIRE_MESSAGE(out.has_value(), (out ? "" : out.error().ToString()));
  REQUIRE((*out)["revocations"].size() == 1);
  CHECK((*out)["revocations"][0]["grant_id"] == grants[1].id);
  CHECK((*out)["sessions_revoked"] == 0);  // by issuer: the session goes on
  CHECK(f.store().GetGrant(grants[0].id).value()->revoke_outcome == "revoked_by_other_process");
  CHECK(f.store().GetGrant(grants[1].id).value()->state == GrantState::kRevoked);
  CHECK(f.store().GetSession(sid).value()->state == SessionState::kActive);
}

TEST_CASE("Service: the sweeper expires the other grants when another process revoked one first") {
  Fixture f;
  auto [sid, token, first] = f.SessionWithGrant(3, 60);
  auto grants = f.store().ListGrants(sid).value();
  const std::string raced = grants[1].id;
  WriteBatch batch = RevokedByOther(grants[1]);
  f.clock().Advance(std::chrono::seconds(61));  // past the grants, not the session
  f.OtherWritesFirst(std::move(batch));

  auto swept = f.svc().Sweep();
  REQUIRE_MESSAGE(swept.has_value(), (swept ? "" : swept.error().ToString()));
  CHECK(swept->grants_expired == 2);
  const std::vector<GrantRecord> after = f.store().ListGrants(sid).value();
  for (const GrantRecord& g : after) {
    CAPTURE(g.id);
    if (g.id == raced) {
      CHECK(g.state == GrantState::kRevoked);
      CHECK(g.revoke_outcome == "revoked_by_other_process");
    } else {
      CHECK(g.state == GrantState::kExpired);
    }
  }
  CHECK(f.EventsOf("credential.expired", sid) == 2);
  auto v = f.api().VerifyAudit(f.Root());
  REQUIRE(v.has_value());
  CHECK((*v)["ok"] == true);
}

}  // namespace
}  // namespace jitbroker::testing
