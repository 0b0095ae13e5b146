#include "broker/store/sqlite_store.h"

#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <filesystem>
#include <optional>
#include <set>
#include <span>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include <doctest/doctest.h>
#include <nlohmann/json.hpp>

#include "jitbroker/audit.h"
#include "jitbroker/clock.h"
#include "jitbroker/store.h"
#include "tests/fakes/failing_store.h"
#include "tests/support/temp_dir.h"

namespace jitbroker::store {
namespace {

using Json = nlohmann::json;
using std::chrono::nanoseconds;

using testing::TempDir;

std::unique_ptr<Store> Open(const std::string& path, int readers = 2, int schema_version = 0) {
  SqliteOptions options;
  options.path = path;
  options.reader_connections = readers;
  options.schema_version_for_testing = schema_version;
  auto store = OpenSqliteStore(options);
  REQUIRE_MESSAGE(store.has_value(), (store ? "" : store.error().ToString()));
  return std::move(*store);
}

TimePoint At(int64_t seconds, int64_t nanos = 0) {
  return TimePoint(std::chrono::duration_cast<TimePoint::duration>(std::chrono::seconds(seconds) +
                                                                   nanoseconds(nanos)));
}

SessionRecord FullSession(const std::string& id) {
  SessionRecord s;
  s.id = id;
  s.token_sha256 = std::string(64, 'a');
  s.principal_id = "alice";
  s.agent_id = "claude-1";
  s.task_id = "JIRA-42";
  s.task_description = "fix the \"flaky\" test ✓";
  s.scope = Json{{"resources", {"github://acme/api"}}, {"max_tier", "pr"}};
  s.state = "active";
  s.created_at = At(1'767'225'600, 123'456'789);
  s.expires_at = At(1'767'229'200, 1);
  s.heartbeat_seconds = 45;
  s.heartbeat_deadline = At(1'767'225'690);
  s.ended_at = At(1'767'226'000, 999'999'999);
  s.end_reason = "completed";
  s.last_progress = "ran tests";
  s.extra = Json{{"client", "jitctl/0.1"}, {"n", 3}};
  return s;
}

GrantRecord FullGrant(const std::string& id, const std::string& session_id, TimePoint created) {
  GrantRecord g;
  g.id = id;
  g.session_id = session_id;
  g.principal_id = "alice";
  g.agent_id = "claude-1";
  g.task_id = "JIRA-42";
  g.tool = "git.push";
  g.operation = "push";
  g.resource = "github://acme/api";
  g.issuer = "github";
  g.parameters = Json{{"branch", "fix/x"}, {"token", "[redacted]"}};
  g.scope = Json{{"repositories", {"api"}}};
  g.requested_ttl_seconds = 900;
  g.ttl_seconds = 600;
  g.tier = "write";
  g.decision = Json{{"result", "allow"}, {"matched_rule", "writes"}};
  g.state = "active";
  g.revocability = "revocable";
  g.credential_type = "github_installation_token";
  g.credential_sha256 = std::string(64, 'b');
  g.request_digest = std::string(64, 'c');
  g.approval_id = "apr_1";
  g.sealed_handle = "bm9uY2U";
  g.created_at = created;
  g.expires_at = created + std::chrono::seconds(600);
  g.revoked_at = created + std::chrono::milliseconds(1500);
  g.revoke_outcome = "revoked";
  g.extra = Json{{"x", true}};
  return g;
}

void CheckSessionEq(const SessionRecord& a, const SessionRecord& b) {
  CHECK(a.id == b.id);
  CHECK(a.token_sha256 == b.token_sha256);
  CHECK(a.principal_id == b.principal_id);
  CHECK(a.agent_id == b.agent_id);
  CHECK(a.task_id == b.task_id);
  CHECK(a.task_description == b.task_description);
  CHECK(a.scope == b.scope);
  CHECK(a.state == b.state);
  CHECK(a.created_at == b.created_at);
  CHECK(a.expires_at == b.expires_at);
  CHECK(a.heartbeat_seconds == b.heartbeat_seconds);
  CHECK(a.heartbeat_deadline == b.heartbeat_deadline);
  CHECK(a.ended_at == b.ended_at);
  CHECK(a.end_reason == b.end_reason);
  CHECK(a.last_progress == b.last_progress);
  CHECK(a.extra == b.extra);
}

void CheckGrantEq(const GrantRecord& a, const GrantRecord& b) {
  CHECK(a.id == b.id);
  CHECK(a.session_id == b.session_id);
  CHECK(a.principal_id == b.principal_id);
  CHECK(a.agent_id == b.agent_id);
  CHECK(a.task_id == b.task_id);
  CHECK(a.tool == b.tool);
  CHECK(a.operation == b.operation);
  CHECK(a.resource == b.resource);
  CHECK(a.issuer == b.issuer);
  CHECK(a.parameters == b.parameters);
  CHECK(a.scope == b.scope);
  CHECK(a.requested_ttl_seconds == b.requested_ttl_seconds);
  CHECK(a.ttl_seconds == b.ttl_seconds);
  CHECK(a.tier == b.tier);
  CHECK(a.decision == b.decision);
  CHECK(a.state == b.state);
  CHECK(a.revocability == b.revocability);
  CHECK(a.credential_type == b.credential_type);
  CHECK(a.credential_sha256 == b.credential_sha256);
  CHECK(a.request_digest == b.request_digest);
  CHECK(a.approval_id == b.approval_id);
  CHECK(a.sealed_handle == b.sealed_handle);
  CHECK(a.created_at == b.created_at);
  CHECK(a.expires_at == b.expires_at);
  CHECK(a.revoked_at == b.revoked_at);
  CHECK(a.revoke_outcome == b.revoke_outcome);
  CHECK(a.extra == b.extra);
}

// Chains `events` after the store's head and applies them with `batch`.
Status ApplyWithAudit(Store& store, WriteBatch batch) {
  auto head = store.AuditHead();
  REQUIRE(head.has_value());
  std::optional<ChainHead> h = *head;
  std::vector<AuditRecord> recs;
  for (const Json& e : batch.audit_events) {
    recs.push_back(ChainRecord(h, e));
    h = ChainHead{recs.back().seq, recs.back().hash};
  }
  std::vector<WriteBatch> batches;
  batches.push_back(std::move(batch));
  return store.Apply(batches, recs);
}

SessionFilter Sessions(std::string principal, std::string agent, std::string state,
                       size_t limit = 100) {
  SessionFilter f;
  f.principal_id = std::move(principal);
  f.agent_id = std::move(agent);
  f.state = std::move(state);
  f.limit = limit;
  return f;
}

AuditFilter Audit(std::string session, std::string principal,
                  std::optional<TimePoint> since = std::nullopt,
                  std::optional<TimePoint> until = std::nullopt, int64_t after_seq = 0,
                  size_t limit = 1000) {
  AuditFilter f;
  f.session_id = std::move(session);
  f.principal_id = std::move(principal);
  f.since = since;
  f.until = until;
  f.after_seq = after_seq;
  f.limit = limit;
  return f;
}

Json AuditEvent(const std::string& session, const std::string& principal, const std::string& ts) {
  Json e = {{"event", "grant.decided"}, {"human_principal", principal}, {"timestamp", ts}};
  if (!session.empty()) {
    e["agent"] = {{"id", "claude-1"}, {"session_id", session}};
  }
  return e;
}

TEST_CASE("SqliteStore: every session and grant field round-trips") {
  TempDir dir;
  auto store = Open(dir.File("broker.db"));
  const SessionRecord s = FullSession("ses_1");
  const GrantRecord g = FullGrant("grt_1", "ses_1", At(1'767'225'601, 42));

  SUBCASE("with all optionals set") {
    WriteBatch b;
    b.sessions.push_back(s);
    b.grants.push_back(g);
    REQUIRE(ApplyWithAudit(*store, b));
    auto got_s = store->GetSession("ses_1");
    REQUIRE(got_s.has_value());
    REQUIRE(got_s->has_value());
    CheckSessionEq(**got_s, s);
    auto got_g = store->GetGrant("grt_1");
    REQUIRE(got_g.has_value());
    REQUIRE(got_g->has_value());
    CheckGrantEq(**got_g, g);
  }
  SUBCASE("with optionals empty and negative pre-epoch time") {
    SessionRecord s2 = s;
    s2.ended_at.reset();
    s2.created_at = At(-5, 250'000'000);  // before 1970, sub-second
    GrantRecord g2 = g;
    g2.requested_ttl_seconds.reset();
    g2.expires_at.reset();
    g2.revoked_at.reset();
    g2.parameters = Json::object();
    WriteBatch b;
    b.sessions.push_back(s2);
    b.grants.push_back(g2);
    REQUIRE(ApplyWithAudit(*store, b));
    auto got_s = store->GetSession("ses_1");
    REQUIRE(got_s.has_value());
    REQUIRE(got_s->has_value());
    CheckSessionEq(**got_s, s2);
    auto got_g = store->GetGrant("grt_1");
    REQUIRE(got_g.has_value());
    REQUIRE(got_g->has_value());
    CheckGrantEq(**got_g, g2);
  }
  SUBCASE("missing ids") {
    auto got_s = store->GetSession("ses_nope");
    REQUIRE(got_s.has_value());
    CHECK_FALSE(got_s->has_value());
    auto got_g = store->GetGrant("grt_nope");
    REQUIRE(got_g.has_value());
    CHECK_FALSE(got_g->has_value());
  }
}

TEST_CASE("SqliteStore: upsert overwrites the whole record") {
  TempDir dir;
  auto store = Open(dir.File("broker.db"));
  SessionRecord s = FullSession("ses_1");
  GrantRecord g = FullGrant("grt_1", "ses_1", At(100));
  {
    WriteBatch b;
    b.sessions.push_back(s);
    b.grants.push_back(g);
    REQUIRE(ApplyWithAudit(*store, b));
  }
  s.state = "revoked";
  s.ended_at.reset();
  s.scope = Json{{"changed", 1}};
  g.state = "revoked";
  g.sealed_handle.clear();
  g.expires_at.reset();
  {
    WriteBatch b;
    b.sessions.push_back(s);
    b.grants.push_back(g);
    REQUIRE(ApplyWithAudit(*store, b));
  }
  auto got_s = store->GetSession("ses_1");
  REQUIRE(got_s.has_value());
  REQUIRE(got_s->has_value());
  CheckSessionEq(**got_s, s);
  auto got_g = store->GetGrant("grt_1");
  REQUIRE(got_g.has_value());
  REQUIRE(got_g->has_value());
  CheckGrantEq(**got_g, g);
  auto all = store->ListSessions(SessionFilter{});
  REQUIRE(all.has_value());
  CHECK(all->size() == 1);
}

TEST_CASE("SqliteStore: ListSessions and ListGrants filter and order") {
  TempDir dir;
  auto store = Open(dir.File("broker.db"));
  WriteBatch b;
  const struct {
    const char* id;
    const char* principal;
    const char* agent;
    const char* state;
    int64_t created;
  } sessions[] = {
      {"ses_a", "alice", "a1", "active", 30},  {"ses_b", "alice", "a2", "completed", 10},
      {"ses_c", "bob", "a1", "active", 20},    {"ses_d", "alice", "a1", "active", 40},
  };
  for (const auto& row : sessions) {
    SessionRecord s = FullSession(row.id);
    s.principal_id = row.principal;
    s.agent_id = row.agent;
    s.state = row.state;
    s.created_at = At(row.created);
    b.sessions.push_back(s);
  }
  // Inserted out of order; sub-second differences must order too.
  b.grants.push_back(FullGrant("grt_3", "ses_a", At(50, 900)));
  b.grants.push_back(FullGrant("grt_1", "ses_a", At(50, 100)));
  b.grants.push_back(FullGrant("grt_2", "ses_a", At(50, 500)));
  b.grants.push_back(FullGrant("grt_x", "ses_c", At(1)));
  REQUIRE(ApplyWithAudit(*store, b));

  auto ids = [](const std::vector<SessionRecord>& v) {
    std::vector<std::string> out;
    for (const auto& s : v) {
      out.push_back(s.id);
    }
    return out;
  };
  const struct {
    const char* name;
    SessionFilter filter;
    std::vector<std::string> want;
  } cases[] = {
      {"all, oldest first", {}, {"ses_b", "ses_c", "ses_a", "ses_d"}},
      {"principal", Sessions("alice", "", ""), {"ses_b", "ses_a", "ses_d"}},
      {"agent", Sessions("", "a1", ""), {"ses_c", "ses_a", "ses_d"}},
      {"state", Sessions("", "", "active"), {"ses_c", "ses_a", "ses_d"}},
      {"principal+agent+state", Sessions("alice", "a1", "active"), {"ses_a", "ses_d"}},
      {"limit", Sessions("", "", "", 2), {"ses_b", "ses_c"}},
      {"no match", Sessions("carol", "", ""), {}},
  };
  for (const auto& c : cases) {
    CAPTURE(c.name);
    auto got = store->ListSessions(c.filter);
    REQUIRE(got.has_value());
    CHECK(ids(*got) == c.want);
  }

  auto grants = store->ListGrants("ses_a");
  REQUIRE(grants.has_value());
  REQUIRE(grants->size() == 3);
  CHECK((*grants)[0].id == "grt_1");
  CHECK((*grants)[1].id == "grt_2");
  CHECK((*grants)[2].id == "grt_3");
  auto none = store->ListGrants("ses_b");
  REQUIRE(none.has_value());
  CHECK(none->empty());
}

TEST_CASE("SqliteStore: audit rows, head and ListAudit filters") {
  TempDir dir;
  auto store = Open(dir.File("broker.db"));
  auto empty_head = store->AuditHead();
  REQUIRE(empty_head.has_value());
  CHECK_FALSE(empty_head->has_value());

  WriteBatch b;
  b.audit_events = {
      AuditEvent("ses_1", "alice", "2026-01-01T00:00:00Z"),       // seq 1, ts 1767225600
      AuditEvent("ses_2", "bob", "2026-01-01T00:00:10.5Z"),       // seq 2, ts +10
      AuditEvent("ses_1", "alice", "2026-01-01T01:00:20+01:00"),  // seq 3, ts +20
      AuditEvent("", "carol", "not a time"),                      // seq 4, no session, no ts
      AuditEvent("ses_1", "alice", "2026-01-01T00:00:30Z"),       // seq 5, ts +30
  };
  REQUIRE(ApplyWithAudit(*store, b));

  auto head = store->AuditHead();
  REQUIRE(head.has_value());
  REQUIRE(head->has_value());
  CHECK((*head)->seq == 5);

  const int64_t t0 = 1'767'225'600;
  auto seqs = [&](const AuditFilter& f) {
    auto got = store->ListAudit(f);
    REQUIRE(got.has_value());
    std::vector<int64_t> out;
    for (const AuditRecord& r : *got) {
      out.push_back(r.seq);
    }
    return out;
  };
  const struct {
    const char* name;
    AuditFilter filter;
    std::vector<int64_t> want;
  } cases[] = {
      {"all", {}, {1, 2, 3, 4, 5}},
      {"session", Audit("ses_1", ""), {1, 3, 5}},
      {"principal", Audit("", "bob"), {2}},
      {"since", Audit("", "", At(t0 + 10)), {2, 3, 5}},
      {"until", Audit("", "", std::nullopt, At(t0 + 20)), {1, 2, 3}},
      {"window", Audit("", "", At(t0 + 5), At(t0 + 25)), {2, 3}},
      {"after_seq", Audit("", "", std::nullopt, std::nullopt, 3), {4, 5}},
      {"limit", Audit("", "", std::nullopt, std::nullopt, 1, 2), {2, 3}},
      {"session+after", Audit("ses_1", "", std::nullopt, std::nullopt, 1), {3, 5}},
  };
  for (const auto& c : cases) {
    CAPTURE(c.name);
    CHECK(seqs(c.filter) == c.want);
  }

  // Bodies come back intact and the chain verifies.
  auto all = store->ListAudit(AuditFilter{});
  REQUIRE(all.has_value());
  std::string text;
  for (const AuditRecord& r : *all) {
    CHECK(r.body["hash"] == r.hash);
    CHECK(r.body["seq"] == r.seq);
    CHECK(ComputeRecordHash(r.body) == r.hash);
    text += r.body.dump() + "\n";
  }
  CHECK(VerifyChainText(text).ok);
  CHECK((*head)->hash == all->back().hash);
}

TEST_CASE("SqliteStore: Apply is atomic and a duplicate audit seq fails the whole group") {
  TempDir dir;
  auto store = Open(dir.File("broker.db"));
  WriteBatch first;
  first.audit_events = {AuditEvent("ses_1", "alice", "2026-01-01T00:00:00Z")};
  REQUIRE(ApplyWithAudit(*store, first));

  // Re-using seq 1 must fail, and the session in the same group must not land.
  WriteBatch b;
  b.sessions.push_back(FullSession("ses_new"));
  const AuditRecord dup = ChainRecord(std::nullopt, AuditEvent("ses_1", "alice", "x"));
  std::vector<WriteBatch> batches{b};
  std::vector<AuditRecord> recs{dup};
  const Status st = store->Apply(batches, recs);
  REQUIRE_FALSE(st.has_value());
  CHECK(st.error().code == ErrorCode::kUnavailable);
  CHECK(st.error().Reason() == "store_unavailable");
  CHECK(st.error().message.find("UNIQUE") == std::string::npos);  // sqlite text only in detail
  CHECK_FALSE(st.error().detail.empty());
  auto got = store->GetSession("ses_new");
  REQUIRE(got.has_value());
  CHECK_FALSE(got->has_value());

  // The writer is usable afterwards.
  WriteBatch ok;
  ok.sessions.push_back(FullSession("ses_ok"));
  CHECK(ApplyWithAudit(*store, ok));
}

TEST_CASE("SqliteStore: reopen keeps data, migrations are idempotent, file is 0600") {
  TempDir dir;
  const std::string path = dir.File("broker.db");
  {
    auto store = Open(path);
    WriteBatch b;
    b.sessions.push_back(FullSession("ses_1"));
    b.audit_events = {AuditEvent("ses_1", "alice", "2026-01-01T00:00:00Z")};
    REQUIRE(ApplyWithAudit(*store, b));
  }
  for (int i = 0; i < 3; ++i) {
    auto store = Open(path);
    auto s = store->GetSession("ses_1");
    REQUIRE(s.has_value());
    CHECK(s->has_value());
    auto head = store->AuditHead();
    REQUIRE(head.has_value());
    REQUIRE(head->has_value());
    CHECK((*head)->seq == 1);
    CHECK(store->Ping());
  }
  struct stat st {};
  REQUIRE(::stat(path.c_str(), &st) == 0);
  CHECK((st.st_mode & 0777) == 0600);
}

TEST_CASE("SqliteStore: open errors") {
  TempDir dir;
  SUBCASE("missing parent directory") {
    SqliteOptions options;
    options.path = dir.File("nope/broker.db");
    auto store = OpenSqliteStore(options);
    REQUIRE_FALSE(store.has_value());
    CHECK(store.error().code == ErrorCode::kUnavailable);
  }
  SUBCASE("empty path") {
    auto store = OpenSqliteStore(SqliteOptions{});
    REQUIRE_FALSE(store.has_value());
    CHECK(store.error().code == ErrorCode::kInvalidArgument);
  }
}

TEST_CASE("SqliteStore: reader pool serves concurrent reads while the writer commits") {
  TempDir dir;
  auto store = Open(dir.File("broker.db"), 4);
  std::atomic<bool> stop{false};
  std::atomic<int64_t> reads{0};
  std::atomic<int64_t> read_errors{0};
  std::vector<std::jthread> readers;
  for (int t = 0; t < 4; ++t) {
    readers.emplace_back([&] {
      while (!stop.load()) {
        if (!store->ListSessions(SessionFilter{}).has_value() || !store->Ping().has_value()) {
          read_errors.fetch_add(1);
        }
        reads.fetch_add(1);
      }
    });
  }
  for (int i = 0; i < 50; ++i) {
    WriteBatch b;
    for (int j = 0; j < 20; ++j) {
      b.sessions.push_back(FullSession("ses_" + std::to_string(i * 20 + j)));
    }
    b.audit_events = {AuditEvent("ses_1", "alice", "2026-01-01T00:00:00Z")};
    REQUIRE(ApplyWithAudit(*store, b));
  }
  stop = true;
  readers.clear();
  CHECK(reads.load() > 0);
  CHECK(read_errors.load() == 0);
  auto all = store->ListSessions(Sessions("", "", "", 0));
  REQUIRE(all.has_value());
  CHECK(all->size() == 1000);
  auto head = store->AuditHead();
  REQUIRE(head.has_value());
  REQUIRE(head->has_value());
  CHECK((*head)->seq == 50);
}

TEST_CASE("FailingStore: fails the chosen Apply calls and forwards the rest") {
  TempDir dir;
  auto inner = Open(dir.File("broker.db"));
  testing::FailingStore store(inner.get());
  store.FailApplyNumber(2);
  WriteBatch b;
  b.sessions.push_back(FullSession("ses_1"));
  CHECK(ApplyWithAudit(store, b));
  const Status second = ApplyWithAudit(store, b);
  REQUIRE_FALSE(second.has_value());
  CHECK(second.error().code == ErrorCode::kUnavailable);
  CHECK(second.error().Reason() == "store_unavailable");
  CHECK(ApplyWithAudit(store, b));
  CHECK(store.ApplyCalls() == 3);
  CHECK(store.FailedApplies() == 1);

  store.SetFailReads(true);
  CHECK_FALSE(store.Ping().has_value());
  CHECK_FALSE(store.AuditHead().has_value());
  store.SetFailReads(false);
  CHECK(store.Ping().has_value());

  store.SetFailAllApplies(true);
  CHECK_FALSE(ApplyWithAudit(store, b).has_value());
  store.SetFailAllApplies(false);
  store.FailNextApply();
  CHECK_FALSE(ApplyWithAudit(store, b).has_value());
  CHECK(ApplyWithAudit(store, b).has_value());
}

}  // namespace
}  // namespace jitbroker::store

namespace jitbroker::store {
namespace {

TEST_CASE("SqliteStore: lifecycle queries find only what is due") {
  TempDir dir;
  auto store = Open(dir.File("lc.db"));
  const TimePoint now = At(2'000'000'000);
  auto session = [&](const std::string& id, std::string state, TimePoint expires, TimePoint hb) {
    SessionRecord s = FullSession(id);
    s.state = std::move(state);
    s.expires_at = expires;
    s.heartbeat_deadline = hb;
    return s;
  };
  WriteBatch b;
  b.sessions.push_back(session("ses_live", "active", now + std::chrono::hours(1), now + std::chrono::minutes(1)));
  b.sessions.push_back(session("ses_ttl", "active", now - std::chrono::seconds(1), now + std::chrono::minutes(1)));
  b.sessions.push_back(session("ses_stall", "active", now + std::chrono::hours(1), now - std::chrono::seconds(5)));
  b.sessions.push_back(session("ses_both", "active", now - std::chrono::seconds(9), now - std::chrono::seconds(9)));
  b.sessions.push_back(session("ses_done", "completed", now - std::chrono::hours(1), now - std::chrono::hours(1)));
  auto grant = [&](const std::string& id, std::string state, std::optional<TimePoint> expires, std::string issuer) {
    GrantRecord g = FullGrant(id, "ses_live", now - std::chrono::minutes(5));
    g.state = std::move(state);
    g.expires_at = expires;
    g.issuer = std::move(issuer);
    return g;
  };
  b.grants.push_back(grant("grt_expired", "active", now - std::chrono::seconds(1), "internal"));
  b.grants.push_back(grant("grt_live", "active", now + std::chrono::minutes(5), "internal"));
  b.grants.push_back(grant("grt_gh", "active", now + std::chrono::minutes(5), "github"));
  b.grants.push_back(grant("grt_pending", "pending", now + std::chrono::minutes(1), "internal"));
  RevocationTask t1{"grt_a", "github", "sealed", now + std::chrono::hours(1), 1, now - std::chrono::seconds(1), "upstream_unavailable"};
  RevocationTask t2{"grt_b", "github", "", now + std::chrono::hours(1), 0, now + std::chrono::seconds(30), ""};
  b.revocations = {t1, t2};
  REQUIRE(ApplyWithAudit(*store, b).has_value());

  auto due = store->ListSessionsDue(now, 100);
  REQUIRE(due.has_value());
  std::set<std::string> ids;
  for (const auto& s : *due) ids.insert(s.id);
  CHECK(ids == std::set<std::string>{"ses_ttl", "ses_stall", "ses_both"});
  CHECK(store->ListSessionsDue(now, 1)->size() == 1);

  auto expired = store->ListGrantsByState("active", now, "", 100);
  REQUIRE(expired.has_value());
  REQUIRE(expired->size() == 1);
  CHECK(expired->front().id == "grt_expired");
  CHECK(store->ListGrantsByState("active", std::nullopt, "", 100)->size() == 3);
  auto gh = store->ListGrantsByState("active", std::nullopt, "github", 100);
  REQUIRE(gh->size() == 1);
  CHECK(gh->front().id == "grt_gh");
  CHECK(store->ListGrantsByState("pending", std::nullopt, "", 100)->front().id == "grt_pending");

  auto rq = store->ListRevocationsDue(now, 100);
  REQUIRE(rq.has_value());
  REQUIRE(rq->size() == 1);
  CHECK(rq->front().grant_id == "grt_a");
  CHECK(rq->front().sealed_handle == "sealed");
  CHECK(rq->front().attempts == 1);
  CHECK(rq->front().expires_at == now + std::chrono::hours(1));
  CHECK(rq->front().last_error == "upstream_unavailable");
  CHECK(store->ListRevocationsDue(now + std::chrono::minutes(1), 100)->size() == 2);

  // Upsert moves a task; done removes it; both survive reopening.
  WriteBatch b2;
  t1.attempts = 2;
  t1.next_attempt_at = now + std::chrono::minutes(10);
  b2.revocations = {t1};
  b2.revocations_done = {"grt_b"};
  REQUIRE(ApplyWithAudit(*store, b2).has_value());
  store.reset();
  store = Open(dir.File("lc.db"));
  CHECK(store->ListRevocationsDue(now + std::chrono::minutes(1), 100)->empty());
  auto later = store->ListRevocationsDue(now + std::chrono::minutes(11), 100);
  REQUIRE(later->size() == 1);
  CHECK(later->front().attempts == 2);
}

// --- CI token replay reservations (issue #10, finding 11) -----------------

namespace replay_test {

WriteBatch Reserve(const std::string& key, TimePoint expires_at, TimePoint now) {
  WriteBatch b;
  b.replay_reservations.push_back(ReplayReservation{key, expires_at, now});
  return b;
}

Status ApplyOne(Store& store, const WriteBatch& b) {
  return store.Apply(std::span<const WriteBatch>(&b, 1), {});
}

}  // namespace replay_test

TEST_CASE("SqliteStore: replay reservations are unique until they expire, then pruned") {
  using replay_test::ApplyOne;
  using replay_test::Reserve;
  TempDir dir;
  const std::string path = dir.File("broker.db");
  const TimePoint t0 = At(1'795'000'000);
  const TimePoint until = t0 + std::chrono::seconds(600);
  {
    auto store = Open(path);
    auto none = store->ReplayReserved("k1", t0);
    REQUIRE(none.has_value());
    CHECK_FALSE(*none);

    // Insert: durable and visible.
    REQUIRE(ApplyOne(*store, Reserve("k1", until, t0)));
    auto held = store->ReplayReserved("k1", t0 + std::chrono::seconds(599));
    REQUIRE(held.has_value());
    CHECK(*held);

    // A duplicate is refused, and with it everything else in the transaction.
    WriteBatch dup = Reserve("k1", until + std::chrono::seconds(60), t0 + std::chrono::seconds(1));
    dup.sessions.push_back(FullSession("ses_dup"));
    auto refused = ApplyOne(*store, dup);
    REQUIRE_FALSE(refused.has_value());
    CHECK(refused.error().code == ErrorCode::kAlreadyExists);
    CHECK(refused.error().Reason() == "replay_reserved");
    auto ses = store->GetSession("ses_dup");
    REQUIRE(ses.has_value());
    CHECK_FALSE(ses->has_value());

    // Two reservations of one key in one transaction: the second is refused.
    WriteBatch twice = Reserve("k2", until, t0);
    twice.replay_reservations.push_back(ReplayReservation{"k2", until, t0});
    CHECK_FALSE(ApplyOne(*store, twice).has_value());
    auto k2 = store->ReplayReserved("k2", t0);
    REQUIRE(k2.has_value());
    CHECK_FALSE(*k2);
  }
  {
    // Survives a reopen (this is the point: a restart forgets nothing).
    auto store = Open(path);
    auto held = store->ReplayReserved("k1", t0 + std::chrono::seconds(10));
    REQUIRE(held.has_value());
    CHECK(*held);
    // At its expiry it no longer holds, and may be reserved again.
    auto lapsed = store->ReplayReserved("k1", until);
    REQUIRE(lapsed.has_value());
    CHECK_FALSE(*lapsed);
    REQUIRE(ApplyOne(*store, Reserve("k1", until + std::chrono::seconds(600), until)));
    CHECK(*store->ReplayReserved("k1", until + std::chrono::seconds(1)));

    // Pruning deletes only expired rows, at most `limit` at a time.
    REQUIRE(ApplyOne(*store, Reserve("k3", t0 + std::chrono::seconds(5), t0)));
    REQUIRE(ApplyOne(*store, Reserve("k4", t0 + std::chrono::seconds(6), t0)));
    auto pruned = store->PruneReplayReservations(t0 + std::chrono::seconds(100), 1);
    REQUIRE(pruned.has_value());
    CHECK(*pruned == 1);
    pruned = store->PruneReplayReservations(t0 + std::chrono::seconds(100), 100);
    REQUIRE(pruned.has_value());
    CHECK(*pruned == 1);
    pruned = store->PruneReplayReservations(t0 + std::chrono::seconds(100), 100);
    REQUIRE(pruned.has_value());
    CHECK(*pruned == 0);
    CHECK(*store->ReplayReserved("k1", until + std::chrono::seconds(1)));  // not expired: kept
  }
}

TEST_CASE("SqliteStore: a database of schema 2 upgrades and gains the replay table") {
  TempDir dir;
  const std::string path = dir.File("broker.db");
  {
    // What an earlier release left behind: schema 2, no replay table.
    auto store = Open(path, 2, /*schema_version=*/2);
    WriteBatch b;
    b.sessions.push_back(FullSession("ses_old"));
    REQUIRE(replay_test::ApplyOne(*store, b));
  }
  auto store = Open(path);
  auto old = store->GetSession("ses_old");
  REQUIRE(old.has_value());
  CHECK(old->has_value());
  const TimePoint t0 = At(1'795'000'000);
  REQUIRE(replay_test::ApplyOne(*store,
                                replay_test::Reserve("k", t0 + std::chrono::seconds(60), t0)));
  CHECK(*store->ReplayReserved("k", t0));
}

}  // namespace
}  // namespace jitbroker::store
