// Tests of the SQLite store itself: its file (mode, migrations, schema
// upgrades), its open errors, and the FailingStore decorator on top of it.
// What every Store must do is in the store conformance suite
// (tests/conformance/store_conformance.cc), which runs against SQLite too.
#include "broker/store/sqlite_store.h"
#include "tests/support/states_doctest.h"

#include <sys/stat.h>

#include <atomic>
#include <chrono>
#include <memory>
#include <span>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include <doctest/doctest.h>

#include "jitbroker/audit.h"
#include "jitbroker/clock.h"
#include "jitbroker/store.h"
#include "tests/fakes/failing_store.h"
#include "tests/support/store_records.h"
#include "tests/support/temp_dir.h"

namespace jitbroker::store {
namespace {

using std::chrono::minutes;
using testing::ApplyOne;
using testing::ApplyWithAudit;
using testing::At;
using testing::AuditEvent;
using testing::FullSession;
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
    auto head = store->AuditHead(kDefaultAuditChain);
    REQUIRE(head.has_value());
    REQUIRE(head->has_value());
    CHECK((*head)->seq == 1);
    CHECK(store->Ping());
  }
  struct stat st{};
  REQUIRE(::stat(path.c_str(), &st) == 0);
  CHECK((st.st_mode & 0777) == 0600);
}

// The metric `name` of the store's CollectMetrics, or -1.
double StoreMetric(const Store& store, const std::string& name) {
  std::vector<MetricFamily> families;
  store.CollectMetrics(families);
  for (const MetricFamily& f : families) {
    if (f.name == name && !f.samples.empty()) {
      return f.samples.front().second;
    }
  }
  return -1;
}

TEST_CASE("SqliteStore: the session cache serves reads and never a row older than a commit") {
  TempDir dir;
  auto store = Open(dir.File("broker.db"), 4);
  SessionRecord s = FullSession("ses_cached");
  s.state = SessionState::kActive;
  s.heartbeat_deadline = At(1000);
  WriteBatch first;
  first.PutSession(s, std::nullopt);
  REQUIRE(ApplyOne(*store, first));

  SUBCASE("hits after the first read; a write is seen at once") {
    for (int i = 0; i < 3; ++i) {
      auto got = store->GetSession("ses_cached");
      REQUIRE(got.has_value());
      REQUIRE(got->has_value());
      CHECK((*got)->heartbeat_deadline == At(1000));
    }
    CHECK(StoreMetric(*store, "jitbroker_store_session_cache_misses_total") == 1);
    CHECK(StoreMetric(*store, "jitbroker_store_session_cache_hits_total") == 2);
    s.state = SessionState::kCompleted;
    s.ended_at = At(1001);
    WriteBatch end;
    end.PutSession(s, SessionState::kActive);
    REQUIRE(ApplyOne(*store, end));
    auto got = store->GetSession("ses_cached");
    REQUIRE(got.has_value());
    REQUIRE(got->has_value());
    CHECK((*got)->state == SessionState::kCompleted);
    // A refused Apply (its precondition does not hold) changes nothing.
    WriteBatch refused;
    SessionRecord revived = s;
    revived.state = SessionState::kActive;
    refused.PutSession(revived, SessionState::kActive);
    CHECK_FALSE(store->Apply(std::span<const WriteBatch>(&refused, 1), {}));
    got = store->GetSession("ses_cached");
    REQUIRE(got.has_value());
    REQUIRE(got->has_value());
    CHECK((*got)->state == SessionState::kCompleted);
    // Unknown ids are not cached.
    auto none = store->GetSession("ses_none");
    REQUIRE(none.has_value());
    CHECK_FALSE(none->has_value());
  }
  SUBCASE("readers racing a writer see every commit made before their read") {
    std::atomic<int64_t> committed{1000};
    std::atomic<bool> done{false};
    std::atomic<int> stale{0};
    std::atomic<int> failed{0};
    std::vector<std::thread> readers;
    for (int t = 0; t < 4; ++t) {
      readers.emplace_back([&] {
        while (!done) {
          const int64_t before = committed.load();
          auto got = store->GetSession("ses_cached");
          if (!got || !got->has_value()) {
            ++failed;
          } else if ((*got)->heartbeat_deadline < At(before)) {
            ++stale;
          }
        }
      });
    }
    for (int64_t i = 1001; i <= 1400; ++i) {
      s.heartbeat_deadline = At(i);
      WriteBatch beat;
      beat.PutSession(s, SessionState::kActive);
      REQUIRE(store->Apply(std::span<const WriteBatch>(&beat, 1), {}));
      committed = i;
    }
    done = true;
    for (auto& r : readers) {
      r.join();
    }
    CHECK(failed == 0);
    CHECK(stale == 0);
    CHECK(StoreMetric(*store, "jitbroker_store_session_cache_hits_total") > 0);
  }
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
  CHECK_FALSE(store.AuditHead(kDefaultAuditChain).has_value());
  store.SetFailReads(false);
  CHECK(store.Ping().has_value());

  store.SetFailAllApplies(true);
  CHECK_FALSE(ApplyWithAudit(store, b).has_value());
  store.SetFailAllApplies(false);
  store.FailNextApply();
  CHECK_FALSE(ApplyWithAudit(store, b).has_value());
  CHECK(ApplyWithAudit(store, b).has_value());
}

TEST_CASE("SqliteStore: a database from before the approval indexes upgrades in place") {
  TempDir dir;
  const std::string path = dir.File("old.db");
  const TimePoint now = FromUnixSeconds(2'000'000'000);
  GrantRecord g = testing::FullGrant("grt_1", "ses_1", now - minutes(1));
  g.state = GrantState::kPending;
  g.tier = "secret";
  g.expires_at = now + minutes(5);
  WriteBatch put;
  put.grants = {g};
  {
    auto v2 = Open(path, 2, /*schema_version=*/2);
    REQUIRE(ApplyOne(*v2, put));
  }
  auto store = Open(path);  // migrates to the latest schema
  PendingApprovalQuery q;
  q.now = now;
  q.tiers = {"secret"};
  auto listed = store->ListPendingApprovals(q);
  REQUIRE(listed.has_value());
  REQUIRE(listed->size() == 1);
  CHECK(listed->front().id == "grt_1");
  CHECK(store->CountPendingApprovals("ses_1", "alice", now)->session == 1);
  store.reset();
  // Reopening is idempotent.
  store = Open(path);
  CHECK(store->CountPendingApprovals("ses_1", "alice", now)->principal == 1);
}

TEST_CASE("SqliteStore: a database of schema 2 upgrades and gains the replay table") {
  TempDir dir;
  const std::string path = dir.File("broker.db");
  {
    // What an earlier release left behind: schema 2, no replay table.
    auto store = Open(path, 2, /*schema_version=*/2);
    WriteBatch b;
    b.sessions.push_back(FullSession("ses_old"));
    REQUIRE(ApplyOne(*store, b));
  }
  auto store = Open(path);
  auto old = store->GetSession("ses_old");
  REQUIRE(old.has_value());
  CHECK(old->has_value());
  const TimePoint t0 = At(1'795'000'000);
  WriteBatch reserve;
  reserve.replay_reservations.push_back(ReplayReservation{"k", t0 + std::chrono::seconds(60), t0});
  REQUIRE(ApplyOne(*store, reserve));
  CHECK(*store->ReplayReserved("k", t0));
}

}  // namespace
}  // namespace jitbroker::store
