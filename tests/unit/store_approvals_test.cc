// The Store's pending-approval queries (issue #10): filtered, keyset-paged
// listing with the open-window check in SQL, per-session and per-principal
// counts, the sealed request of a pending grant, and the upgrade of a
// database written before these indexes existed.
#include <stdlib.h>

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <set>
#include <string>
#include <vector>

#include <doctest/doctest.h>
#include <nlohmann/json.hpp>

#include "broker/store/sqlite_store.h"
#include "jitbroker/audit.h"
#include "jitbroker/store.h"
#include "tests/support/temp_dir.h"

namespace jitbroker::store {
namespace {

using std::chrono::minutes;
using std::chrono::nanoseconds;
using std::chrono::seconds;

using testing::TempDir;

std::unique_ptr<Store> OpenAt(const std::string& path, int schema_version = 0) {
  SqliteOptions o;
  o.path = path;
  o.reader_connections = 2;
  o.schema_version_for_testing = schema_version;
  auto s = OpenSqliteStore(o);
  REQUIRE_MESSAGE(s.has_value(), (s ? "" : s.error().ToString()));
  return std::move(*s);
}

const TimePoint kNow = FromUnixSeconds(2'000'000'000);

GrantRecord Pending(const std::string& id, const std::string& session, const std::string& principal,
                    const std::string& tier, TimePoint created, TimePoint expires) {
  GrantRecord g;
  g.id = id;
  g.session_id = session;
  g.principal_id = principal;
  g.agent_id = "agent";
  g.task_id = "task";
  g.tool = "t";
  g.operation = "op";
  g.resource = "fake://r";
  g.issuer = "fake";
  g.tier = tier;
  g.state = "pending";
  g.request_digest = std::string(64, 'd');
  g.approval_id = "apr_" + id.substr(4);
  g.created_at = created;
  g.expires_at = expires;
  return g;
}

Status Put(Store& store, std::vector<GrantRecord> grants) {
  WriteBatch b;
  b.grants = std::move(grants);
  std::vector<WriteBatch> batches{std::move(b)};
  return store.Apply(batches, {});
}

std::vector<std::string> Ids(const std::vector<GrantRecord>& gs) {
  std::vector<std::string> out;
  for (const auto& g : gs) {
    out.push_back(g.id);
  }
  return out;
}

PendingApprovalQuery AllTiers() {
  PendingApprovalQuery q;
  q.now = kNow;
  q.tiers = {"read", "write", "pr", "merge_deploy", "secret", "destructive"};
  q.limit = 100;
  return q;
}

TEST_CASE("SqliteStore: pending approvals are listed open, filtered and in a stable order") {
  TempDir dir;
  auto store = OpenAt(dir.File("a.db"));
  const TimePoint t0 = kNow - minutes(10);
  std::vector<GrantRecord> gs = {
      Pending("grt_a", "ses_1", "alice", "merge_deploy", t0, kNow + minutes(5)),
      // Same second as grt_a, later nanoseconds: the order is exact.
      Pending("grt_b", "ses_1", "alice", "secret", t0 + nanoseconds(5), kNow + minutes(5)),
      // Same instant as grt_b: the id breaks the tie.
      Pending("grt_c", "ses_2", "bob", "merge_deploy", t0 + nanoseconds(5), kNow + minutes(5)),
      Pending("grt_d", "ses_2", "bob", "secret", t0 + seconds(1), kNow + minutes(5)),
      // Expired one nanosecond ago / expiring exactly now: not open.
      Pending("grt_old", "ses_1", "alice", "secret", t0, kNow - nanoseconds(1)),
      Pending("grt_now", "ses_1", "alice", "secret", t0, kNow),
      // Open for one more nanosecond.
      Pending("grt_edge", "ses_3", "carol", "secret", t0 + seconds(2), kNow + nanoseconds(1)),
  };
  GrantRecord approved = Pending("grt_approved", "ses_1", "alice", "secret", t0, kNow + minutes(5));
  approved.state = "approved";
  gs.push_back(approved);
  REQUIRE(Put(*store, gs).has_value());

  PendingApprovalQuery q = AllTiers();
  auto all = store->ListPendingApprovals(q);
  REQUIRE(all.has_value());
  CHECK(Ids(*all) == std::vector<std::string>{"grt_a", "grt_b", "grt_c", "grt_d", "grt_edge"});

  q.newest_first = true;
  CHECK(Ids(*store->ListPendingApprovals(q)) ==
        std::vector<std::string>{"grt_edge", "grt_d", "grt_c", "grt_b", "grt_a"});

  SUBCASE("filters") {
    PendingApprovalQuery f = AllTiers();
    f.session_id = "ses_2";
    CHECK(Ids(*store->ListPendingApprovals(f)) == std::vector<std::string>{"grt_c", "grt_d"});
    f = AllTiers();
    f.principal_id = "alice";
    CHECK(Ids(*store->ListPendingApprovals(f)) == std::vector<std::string>{"grt_a", "grt_b"});
    f = AllTiers();
    f.tiers = {"secret"};
    CHECK(Ids(*store->ListPendingApprovals(f)) ==
          std::vector<std::string>{"grt_b", "grt_d", "grt_edge"});
    f.tiers.clear();  // no tier: nothing, never "any"
    CHECK(store->ListPendingApprovals(f)->empty());
  }
  SUBCASE("a principal's own grants are left out only in the tiers named") {
    PendingApprovalQuery f = AllTiers();
    f.exclude_principal_id = "alice";
    f.exclude_principal_tiers = {"merge_deploy"};
    CHECK(Ids(*store->ListPendingApprovals(f)) ==
          std::vector<std::string>{"grt_b", "grt_c", "grt_d", "grt_edge"});
    f.exclude_principal_tiers = {"merge_deploy", "secret"};
    CHECK(Ids(*store->ListPendingApprovals(f)) ==
          std::vector<std::string>{"grt_c", "grt_d", "grt_edge"});
  }
  SUBCASE("keyset pages cover everything once, in both orders") {
    for (bool newest : {false, true}) {
      CAPTURE(newest);
      PendingApprovalQuery p = AllTiers();
      p.newest_first = newest;
      p.limit = 2;
      std::vector<std::string> seen;
      for (int page = 0; page < 10; ++page) {
        auto got = store->ListPendingApprovals(p);
        REQUIRE(got.has_value());
        for (const auto& g : *got) {
          seen.push_back(g.id);
        }
        if (got->size() < p.limit) {
          break;
        }
        p.after = ApprovalPosition{got->back().created_at, got->back().id};
      }
      std::vector<std::string> expected = {"grt_a", "grt_b", "grt_c", "grt_d", "grt_edge"};
      if (newest) {
        std::reverse(expected.begin(), expected.end());
      }
      CHECK(seen == expected);
    }
  }
}

TEST_CASE("SqliteStore: pending approvals are counted per session and per principal") {
  TempDir dir;
  auto store = OpenAt(dir.File("c.db"));
  const TimePoint t0 = kNow - minutes(1);
  GrantRecord done = Pending("grt_done", "ses_1", "alice", "secret", t0, kNow + minutes(9));
  done.state = "denied";
  REQUIRE(Put(*store, {Pending("grt_1", "ses_1", "alice", "secret", t0, kNow + minutes(3)),
                       Pending("grt_2", "ses_1", "alice", "secret", t0, kNow + minutes(2)),
                       Pending("grt_3", "ses_2", "alice", "secret", t0, kNow + minutes(1)),
                       Pending("grt_4", "ses_3", "bob", "secret", t0, kNow + minutes(1)),
                       Pending("grt_x", "ses_1", "alice", "secret", t0, kNow - seconds(1)), done})
              .has_value());
  auto c = store->CountPendingApprovals("ses_1", "alice", kNow);
  REQUIRE(c.has_value());
  CHECK(c->session == 2);
  CHECK(c->principal == 3);
  CHECK(c->session_next_expiry == kNow + minutes(2));
  CHECK(c->principal_next_expiry == kNow + minutes(1));
  auto none = store->CountPendingApprovals("ses_9", "zed", kNow);
  REQUIRE(none.has_value());
  CHECK(none->session == 0);
  CHECK(none->principal == 0);
  CHECK_FALSE(none->session_next_expiry.has_value());
  CHECK_FALSE(none->principal_next_expiry.has_value());
  // Later, the ones that lapsed no longer count.
  auto later = store->CountPendingApprovals("ses_1", "alice", kNow + minutes(2));
  CHECK(later->session == 1);
  CHECK(later->principal == 1);
}

TEST_CASE("SqliteStore: a grant's sealed request round-trips and can be cleared") {
  TempDir dir;
  auto store = OpenAt(dir.File("s.db"));
  GrantRecord g = Pending("grt_s", "ses_1", "alice", "secret", kNow, kNow + minutes(5));
  g.sealed_request = "c2VhbGVk";
  REQUIRE(Put(*store, {g}).has_value());
  auto got = store->GetGrant("grt_s");
  REQUIRE(got.has_value());
  REQUIRE(got->has_value());
  CHECK((*got)->sealed_request == "c2VhbGVk");
  g.state = "denied";
  g.sealed_request.clear();
  REQUIRE(Put(*store, {g}).has_value());
  CHECK((*store->GetGrant("grt_s"))->sealed_request.empty());
}

TEST_CASE("SqliteStore: a database from before the approval indexes upgrades in place") {
  TempDir dir;
  const std::string path = dir.File("old.db");
  {
    auto v2 = OpenAt(path, /*schema_version=*/2);
    REQUIRE(Put(*v2, {Pending("grt_1", "ses_1", "alice", "secret", kNow - minutes(1),
                              kNow + minutes(5))})
                .has_value());
  }
  auto store = OpenAt(path);  // migrates to the latest schema
  auto listed = store->ListPendingApprovals(AllTiers());
  REQUIRE(listed.has_value());
  CHECK(Ids(*listed) == std::vector<std::string>{"grt_1"});
  CHECK(store->CountPendingApprovals("ses_1", "alice", kNow)->session == 1);
  store.reset();
  // Reopening is idempotent.
  store = OpenAt(path);
  CHECK(store->CountPendingApprovals("ses_1", "alice", kNow)->principal == 1);
}

}  // namespace
}  // namespace jitbroker::store
