// The store seam around the Store implementations (docs/architecture.md,
// "The store seam"): store::Open from the `store:` config, the audit index
// fields read from events, and the Journal's handling of StatePreconditions —
// refusing a lost race alone, within a group and when another process wins
// between the Journal's check and the store's transaction.
#include <stdlib.h>
#include <sys/stat.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <memory>
#include <optional>
#include <span>
#include <sstream>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include <doctest/doctest.h>
#include <nlohmann/json.hpp>

#include "broker/audit/journal.h"
#include "broker/config/config.h"
#include "broker/store/open.h"
#include "jitbroker/audit.h"
#include "jitbroker/error.h"
#include "jitbroker/store.h"
#include "tests/fakes/failing_store.h"
#include "tests/support/states_doctest.h"
#include "tests/support/temp_dir.h"

namespace jitbroker::store_seam_test {
namespace {

using Json = nlohmann::json;
using testing::TempDir;

// Minimal records: these tests are about what commits, not about fields (the
// store conformance suite, tests/conformance/, checks every field).
SessionRecord FullSession(const std::string& id) {
  SessionRecord s;
  s.id = id;
  s.token_sha256 = std::string(64, 'a');
  s.principal_id = "alice";
  s.agent_id = "claude-1";
  s.state = SessionState::kActive;
  s.created_at = FromUnixSeconds(1'767'225'600);
  s.expires_at = FromUnixSeconds(1'767'229'200);
  s.heartbeat_deadline = FromUnixSeconds(1'767'225'690);
  return s;
}

GrantRecord FullGrant(const std::string& id, const std::string& session_id) {
  GrantRecord g;
  g.id = id;
  g.session_id = session_id;
  g.principal_id = "alice";
  g.agent_id = "claude-1";
  g.tool = "git.push";
  g.issuer = "github";
  g.state = GrantState::kActive;
  g.created_at = FromUnixSeconds(2'000'000'000);
  g.expires_at = FromUnixSeconds(2'000'000'600);
  return g;
}

Status ApplyOne(Store& store, const WriteBatch& batch) {
  return store.Apply(std::span<const WriteBatch>(&batch, 1), {});
}

std::unique_ptr<Store> OpenSqlite(const std::string& path) {
  config::StoreConfig c;
  c.backend = config::SqliteStoreConfig{path};
  auto store = store::Open(c);
  REQUIRE_MESSAGE(store.has_value(), (store ? "" : store.error().ToString()));
  return std::move(*store);
}

// --- store::Open ---------------------------------------------------------------

TEST_CASE("store::Open: builds the configured SQLite store, creating its directory owner-only") {
  TempDir dir;
  const std::string path = dir.File("state/sub/broker.db");
  auto store = OpenSqlite(path);
  CHECK(store->Ping());
  struct stat st{};
  REQUIRE(::stat(path.c_str(), &st) == 0);
  CHECK((st.st_mode & 0777) == 0600);
  REQUIRE(::stat(dir.File("state/sub").c_str(), &st) == 0);
  CHECK((st.st_mode & 0777) == 0700);
}

TEST_CASE("store::Open: a store it cannot open is a precise error that names no secret") {
  SUBCASE("a postgres server that is not there") {
    TempDir dir;
    config::StoreConfig c;
    config::PostgresStoreConfig pg;
    pg.dsn = SecretValue("host=" + dir.path().string() + " user=jb password=hunter2");
    c.backend = std::move(pg);
    auto store = store::Open(c);
    REQUIRE_FALSE(store.has_value());
    CHECK(store.error().code == ErrorCode::kUnavailable);
    CHECK(store.error().Reason() == "store_unavailable");
    CHECK(store.error().detail.find("connect") != std::string::npos);
    CHECK(store.error().ToString().find("hunter2") == std::string::npos);
  }
  SUBCASE("a postgres config built without its dsn") {
    config::StoreConfig c;
    c.backend = config::PostgresStoreConfig{};
    auto store = store::Open(c);
    REQUIRE_FALSE(store.has_value());
    CHECK(store.error().Reason() == "invalid_config");
  }
  SUBCASE("an empty sqlite path") {
    config::StoreConfig c;
    c.backend = config::SqliteStoreConfig{""};
    auto store = store::Open(c);
    REQUIRE_FALSE(store.has_value());
    CHECK(store.error().code == ErrorCode::kInvalidArgument);
  }
  SUBCASE("a directory that cannot be created") {
    TempDir dir;
    dir.Write("file", "not a directory");
    config::StoreConfig c;
    c.backend = config::SqliteStoreConfig{dir.File("file/broker.db")};
    auto store = store::Open(c);
    REQUIRE_FALSE(store.has_value());
    CHECK(store.error().code == ErrorCode::kUnavailable);
  }
}

TEST_CASE("Config: the store section is a choice of one backend") {
  TempDir dir;
  auto load = [&](const std::string& store_yaml) {
    return config::LoadConfigText(store_yaml + "policy: {version: v}\n", dir.File("t.yaml"));
  };
  auto absent = load("");
  REQUIRE(absent.has_value());
  REQUIRE(absent->store.sqlite() != nullptr);
  CHECK(absent->store.postgres() == nullptr);
  CHECK(absent->store.sqlite()->path == dir.path().lexically_normal().string() + "/data/state.db");

  auto sqlite = load("store:\n  sqlite: {path: db/x.db}\n  group_commit_max_batch: 8\n");
  REQUIRE(sqlite.has_value());
  REQUIRE(sqlite->store.sqlite() != nullptr);
  CHECK(sqlite->store.sqlite()->path == dir.path().lexically_normal().string() + "/db/x.db");
  CHECK(sqlite->store.group_commit_max_batch == 8);

  // postgres: the dsn by reference, the replica's id, and the keys every
  // replica must share.
  ::setenv("JB_STORE_TEST_DSN", "host=/tmp password=hunter2", 1);
  ::setenv("JB_STORE_TEST_SEAL", "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=", 1);
  ::setenv("JB_STORE_TEST_AUDIT_KEY", "-----BEGIN PRIVATE KEY-----", 1);
  const std::string keys =
      "seal_key: env:JB_STORE_TEST_SEAL\naudit: {signing_key: env:JB_STORE_TEST_AUDIT_KEY}\n";
  auto pg = load(
      "store:\n  postgres: {dsn: env:JB_STORE_TEST_DSN, pool_size: 8, replica_id: r-1}\n" + keys);
  REQUIRE_MESSAGE(pg.has_value(), (pg ? "" : pg.error().ToString()));
  REQUIRE(pg->store.postgres() != nullptr);
  CHECK(pg->store.postgres()->dsn->Reveal() == "host=/tmp password=hunter2");
  CHECK(pg->store.postgres()->pool_size == 8);
  CHECK(pg->store.postgres()->replica_id == "r-1");
  auto by_host = load("store:\n  postgres: {dsn: env:JB_STORE_TEST_DSN}\n" + keys);
  REQUIRE(by_host.has_value());
  CHECK_FALSE(by_host->store.postgres()->replica_id.empty());  // the host name
  CHECK(by_host->store.postgres()->pool_size == 16);

  auto no_seal = load("store:\n  postgres: {dsn: env:JB_STORE_TEST_DSN}\n");
  REQUIRE_FALSE(no_seal.has_value());
  CHECK(no_seal.error().message.find("seal_key: is required with store.postgres") !=
        std::string::npos);
  auto no_audit_key =
      load("store:\n  postgres: {dsn: env:JB_STORE_TEST_DSN}\nseal_key: env:JB_STORE_TEST_SEAL\n");
  REQUIRE_FALSE(no_audit_key.has_value());
  CHECK(no_audit_key.error().message.find("audit.signing_key: is required") != std::string::npos);
  auto bad_id =
      load("store:\n  postgres: {dsn: env:JB_STORE_TEST_DSN, replica_id: \"a/b\"}\n" + keys);
  REQUIRE_FALSE(bad_id.has_value());
  CHECK(bad_id.error().message.find("store.postgres.replica_id") != std::string::npos);
  auto inline_dsn = load("store:\n  postgres: {dsn: \"host=/tmp password=hunter2\"}\n" + keys);
  REQUIRE_FALSE(inline_dsn.has_value());
  for (const auto* r : {&no_seal, &no_audit_key, &bad_id, &inline_dsn}) {
    CHECK(r->error().ToString().find("hunter2") == std::string::npos);
  }
  ::unsetenv("JB_STORE_TEST_DSN");
  ::unsetenv("JB_STORE_TEST_SEAL");
  ::unsetenv("JB_STORE_TEST_AUDIT_KEY");
}

// --- Audit index fields ------------------------------------------------------------

TEST_CASE("PrepareAuditEvent: reads the index fields the store files a record under") {
  const struct {
    const char* name;
    Json event;
    std::string session;
    std::string principal;
    std::optional<int64_t> ts;
  } cases[] = {
      {"broker event",
       {{"timestamp", "2026-01-01T00:00:00Z"},
        {"human_principal", "alice"},
        {"agent", {{"id", "a"}, {"session_id", "ses_1"}}}},
       "ses_1",
       "alice",
       1'767'225'600},
      {"offset and fraction",
       {{"timestamp", "2026-01-01T01:00:00.75+01:00"}},
       "",
       "",
       1'767'225'600},
      {"integer seconds", {{"timestamp", 1'767'225'600}}, "", "", 1'767'225'600},
      {"negative seconds", {{"timestamp", -5}}, "", "", -5},
      {"out of range seconds", {{"timestamp", int64_t{9'000'000'000'000}}}, "", "", std::nullopt},
      {"unsigned out of range", Json::parse(R"({"timestamp": 18446744073709551615})"), "", "",
       std::nullopt},
      {"not a time", {{"timestamp", "yesterday"}}, "", "", std::nullopt},
      {"wrong types",
       {{"timestamp", true}, {"human_principal", 7}, {"agent", {{"session_id", 3}}}},
       "",
       "",
       std::nullopt},
      {"agent not an object",
       {{"agent", "ses_1"}, {"human_principal", "bob"}},
       "",
       "bob",
       std::nullopt},
      {"not an object", Json::array({1, 2}), "", "", std::nullopt},
  };
  for (const auto& c : cases) {
    CAPTURE(c.name);
    const PreparedAuditEvent p = PrepareAuditEvent(c.event);
    CHECK(p.index.session_id == c.session);
    CHECK(p.index.principal_id == c.principal);
    CHECK(p.index.ts == (c.ts ? std::optional<TimePoint>(FromUnixSeconds(*c.ts)) : std::nullopt));
    // ChainPrepared carries it onto the record.
    const AuditRecord rec = ChainPrepared(std::nullopt, p);
    CHECK(rec.index.session_id == c.session);
    CHECK(rec.index.principal_id == c.principal);
    CHECK(rec.index.ts == p.index.ts);
    CHECK(rec.chain_id == kDefaultAuditChain);
  }
}

// --- The Journal and StatePreconditions -----------------------------------------

std::string ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream out;
  out << in.rdbuf();
  return out.str();
}

// The store's chain as JSONL, which the journal's file must equal.
std::string StoreChainText(Store& store) {
  auto all = store.ListAudit(AuditFilter{});
  REQUIRE(all.has_value());
  std::string text;
  for (const AuditRecord& r : *all) {
    text += r.body.dump() + "\n";
  }
  return text;
}

Json Event(const std::string& session, const std::string& what) {
  return Json{{"timestamp", "2026-01-02T03:04:05Z"},
              {"event", what},
              {"human_principal", "alice"},
              {"agent", {{"id", "claude-1"}, {"session_id", session}}}};
}

// Moves grt_1 from "active" to `state`, with a marker session and an event.
WriteBatch Transition(const std::string& state, const std::string& marker) {
  WriteBatch b;
  GrantRecord g = FullGrant("grt_1", "ses_1");
  g.state = *ParseGrantState(state);
  g.revoke_outcome = marker;
  b.PutGrant(g, GrantState::kActive);
  b.PutSession(FullSession(marker), std::nullopt);
  b.audit_events.push_back(Event(marker, "grant." + state));
  return b;
}

WriteBatch Neighbour(const std::string& id) {
  WriteBatch b;
  b.PutSession(FullSession(id), std::nullopt);
  b.audit_events.push_back(Event(id, "session.opened"));
  return b;
}

bool Has(Store& store, const std::string& session_id) {
  auto s = store.GetSession(session_id);
  REQUIRE(s.has_value());
  return s->has_value();
}

struct JournalFixture {
  JournalFixture() {
    inner = OpenSqlite(dir.File("broker.db"));
    failing = std::make_unique<testing::FailingStore>(inner.get());
    auto j = audit::Journal::Create(failing.get(), dir.File("audit.jsonl"));
    REQUIRE_MESSAGE(j.has_value(), (j ? "" : j.error().ToString()));
    journal = std::move(*j);
    WriteBatch seed;
    seed.PutSession(FullSession("ses_1"), std::nullopt);
    seed.PutGrant(FullGrant("grt_1", "ses_1"), std::nullopt);
    REQUIRE(journal->Commit(seed));
  }

  // Commits `batches` from one thread each, queued in order, so that they
  // all land in ONE group: the committer is held inside the Apply before theirs until all of
  // them are queued. Returns each batch's outcome, in order.
  std::vector<Status> CommitAsOneGroup(std::vector<WriteBatch> batches) {
    std::atomic<bool> release{false};
    const uint64_t gate = failing->ApplyCalls() + 1;
    failing->RunBeforeApply(gate, [&] {
      while (!release.load()) {
        std::this_thread::yield();
      }
    });
    std::jthread gate_commit([&] { CHECK(journal->Commit(Neighbour("ses_gate"))); });
    while (failing->ApplyCalls() < gate) {
      std::this_thread::yield();
    }
    std::vector<Status> out(batches.size());
    std::vector<std::jthread> committers;
    for (size_t i = 0; i < batches.size(); ++i) {
      committers.emplace_back([&, i] { out[i] = journal->Commit(std::move(batches[i])); });
      // Queued in vector order: the group's order is what these tests check.
      while (journal->QueuedForTesting() < i + 1) {
        std::this_thread::yield();
      }
    }
    const uint64_t commits_before = journal->Stats().commits;
    release = true;
    committers.clear();
    gate_commit.join();
    // The gate's group and the one group of `batches`.
    CHECK(journal->Stats().commits == commits_before + 2);
    return out;
  }

  void CheckFileMatchesStore() {
    const std::string file = ReadFile(dir.File("audit.jsonl"));
    CHECK(VerifyChainText(file).ok);
    CHECK(file == StoreChainText(*inner));
  }

  TempDir dir;
  std::unique_ptr<Store> inner;
  std::unique_ptr<testing::FailingStore> failing;
  std::unique_ptr<audit::Journal> journal;
};

void CheckConflict(const Status& st) {
  REQUIRE_FALSE(st.has_value());
  CHECK(st.error().code == ErrorCode::kFailedPrecondition);
  CHECK(st.error().Reason() == "state_conflict");
}

TEST_CASE("Journal: a batch whose precondition does not hold is refused and writes nothing") {
  JournalFixture f;
  REQUIRE(f.journal->Commit(Transition("revoked", "ses_revoker")));
  CheckConflict(f.journal->Commit(Transition("expired", "ses_sweeper")));
  CHECK(Has(*f.inner, "ses_revoker"));
  CHECK_FALSE(Has(*f.inner, "ses_sweeper"));
  auto g = f.inner->GetGrant("grt_1");
  REQUIRE(g.has_value());
  CHECK((*g)->state == GrantState::kRevoked);
  // Only the winner's event is in the chain, and the journal goes on.
  AuditFilter f_sweeper;
  f_sweeper.session_id = "ses_sweeper";
  CHECK(f.inner->ListAudit(f_sweeper)->empty());
  REQUIRE(f.journal->Commit(Neighbour("ses_after")));
  CHECK(f.journal->Head()->seq == 2);
  f.CheckFileMatchesStore();
}

TEST_CASE("Journal: of racing batches in one group exactly one wins; neighbours are unaffected") {
  JournalFixture f;
  std::vector<WriteBatch> batches;
  batches.push_back(Neighbour("ses_n1"));
  batches.push_back(Transition("revoked", "ses_w1"));
  batches.push_back(Transition("expired", "ses_w2"));
  batches.push_back(Neighbour("ses_n2"));
  batches.push_back(Transition("revoked", "ses_w3"));
  const std::vector<Status> out = f.CommitAsOneGroup(std::move(batches));
  CHECK(out[0].has_value());
  CHECK(out[3].has_value());
  int wins = 0;
  for (size_t i : {1u, 2u, 4u}) {
    if (out[i]) {
      ++wins;
    } else {
      CheckConflict(out[i]);
    }
  }
  CHECK(wins == 1);
  CHECK(Has(*f.inner, "ses_n1"));
  CHECK(Has(*f.inner, "ses_n2"));
  auto g = f.inner->GetGrant("grt_1");
  REQUIRE(g.has_value());
  CHECK(Has(*f.inner, (*g)->revoke_outcome));  // the winner's marker
  CHECK(f.inner->ListSessions(SessionFilter{})->size() ==
        1 + 1 + 2 + 1);  // seed, gate, n1, n2, winner
  // gate + n1 + n2 + the winner: four events, one chain, file == store.
  CHECK(f.journal->Head()->seq == 4);
  f.CheckFileMatchesStore();
}

TEST_CASE("Journal: a batch that requires an earlier batch's write in the same group commits") {
  JournalFixture f;
  std::vector<WriteBatch> batches;
  batches.push_back(Transition("revoking", "ses_first"));
  WriteBatch second;
  GrantRecord g = FullGrant("grt_1", "ses_1");
  g.state = GrantState::kRevoked;
  second.PutGrant(g, GrantState::kRevoking);
  second.audit_events.push_back(Event("ses_1", "credential.revoked"));
  batches.push_back(std::move(second));
  const std::vector<Status> out = f.CommitAsOneGroup(std::move(batches));
  CHECK(out[0].has_value());
  CHECK(out[1].has_value());
  CHECK((*f.inner->GetGrant("grt_1"))->state == GrantState::kRevoked);
  f.CheckFileMatchesStore();
}

TEST_CASE("Journal: another process winning after the check makes the loser alone fail") {
  JournalFixture f;
  // A second handle on the same database: another broker process.
  auto other = OpenSqlite(f.dir.File("broker.db"));
  // The group passes the journal's check (grt_1 is active); then, before the
  // group's transaction, the other process moves grt_1 on. The store refuses
  // the group; the journal checks again and refuses only the loser.
  const uint64_t group_apply = f.failing->ApplyCalls() + 2;  // after the gate's
  f.failing->RunBeforeApply(group_apply, [&] {
    WriteBatch theirs;
    GrantRecord g = FullGrant("grt_1", "ses_1");
    g.state = GrantState::kRevoked;
    g.revoke_outcome = "other-process";
    theirs.grants.push_back(g);
    theirs.RequireGrantState("grt_1", GrantState::kActive);
    CHECK(ApplyOne(*other, theirs));
  });
  std::vector<WriteBatch> batches;
  batches.push_back(Neighbour("ses_n1"));
  batches.push_back(Transition("expired", "ses_loser"));
  batches.push_back(Neighbour("ses_n2"));
  const std::vector<Status> out = f.CommitAsOneGroup(std::move(batches));
  CHECK(out[0].has_value());
  CheckConflict(out[1]);
  CHECK(out[2].has_value());
  CHECK((*f.inner->GetGrant("grt_1"))->revoke_outcome == "other-process");
  CHECK_FALSE(Has(*f.inner, "ses_loser"));
  CHECK(Has(*f.inner, "ses_n1"));
  CHECK(Has(*f.inner, "ses_n2"));
  // One refused Apply, one retried: the chain has gate, n1, n2 and verifies.
  CHECK(f.failing->ApplyCalls() == group_apply + 1);
  CHECK(f.journal->Head()->seq == 3);
  f.CheckFileMatchesStore();
  // The index fields of what was written came from the events.
  AuditFilter by_session;
  by_session.session_id = "ses_n2";
  auto n2 = f.inner->ListAudit(by_session);
  REQUIRE(n2.has_value());
  REQUIRE(n2->size() == 1);
  CHECK(n2->front().index.principal_id == "alice");
  CHECK(n2->front().index.ts == FromUnixSeconds(1'767'323'045));
}

}  // namespace
}  // namespace jitbroker::store_seam_test
