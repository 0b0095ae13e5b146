#include "broker/audit/journal.h"
#include "tests/support/states_doctest.h"

#include <fcntl.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include <doctest/doctest.h>
#include <nlohmann/json.hpp>

#include "broker/store/sqlite_store.h"
#include "jitbroker/audit.h"
#include "jitbroker/store.h"
#include "tests/fakes/failing_store.h"
#include "tests/support/temp_dir.h"

namespace jitbroker::audit {
namespace {

using Json = nlohmann::json;

using testing::TempDir;

std::string ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream out;
  out << in.rdbuf();
  return out.str();
}

void WriteFile(const std::string& path, const std::string& text) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << text;
}

std::unique_ptr<Store> OpenStore(const std::string& path) {
  store::SqliteOptions options;
  options.path = path;
  auto s = store::OpenSqliteStore(options);
  REQUIRE_MESSAGE(s.has_value(), (s ? "" : s.error().ToString()));
  return std::move(*s);
}

std::unique_ptr<Journal> OpenJournal(Store* store, const std::string& path,
                                     size_t max_group = 256) {
  auto j = Journal::Create(store, path, max_group);
  REQUIRE_MESSAGE(j.has_value(), (j ? "" : j.error().ToString()));
  return std::move(*j);
}

// The store's whole chain as the JSONL the journal should have written.
// Returns nullopt on a read error; usable from forked children too.
std::optional<std::string> StoreChainText(Store& store) {
  std::string text;
  AuditFilter f;
  f.limit = 500;
  while (true) {
    auto page = store.ListAudit(f);
    if (!page) {
      return std::nullopt;
    }
    if (page->empty()) {
      return text;
    }
    for (const AuditRecord& r : *page) {
      text += r.body.dump();
      text += '\n';
      f.after_seq = r.seq;
    }
  }
}

// Checks that the file verifies and holds exactly the store's chain.
void CheckFileMatchesStore(Store& store, const std::string& path, int64_t want_records = -1) {
  const std::string file = ReadFile(path);
  const ChainVerification v = VerifyChainText(file);
  CHECK_MESSAGE(v.ok, v.problem << " at line " << v.first_bad_line);
  auto from_store = StoreChainText(store);
  REQUIRE(from_store.has_value());
  CHECK(VerifyChainText(*from_store).ok);
  CHECK(file == *from_store);
  if (want_records >= 0) {
    CHECK(v.records == want_records);
  }
}

Json Event(const std::string& session, int i) {
  return Json{{"event_id", "evt_" + session + "_" + std::to_string(i)},
              {"timestamp", "2026-01-02T03:04:05Z"},
              {"event", "grant.decided"},
              {"human_principal", "alice"},
              {"agent", {{"id", "claude-1"}, {"session_id", session}, {"task_id", "T-1"}}},
              {"outcome", "allowed"}};
}

WriteBatch Batch(const std::string& session, int events = 2) {
  WriteBatch b;
  SessionRecord s;
  s.id = session;
  s.principal_id = "alice";
  s.state = SessionState::kActive;
  b.PutSession(s, std::nullopt);
  for (int i = 0; i < events; ++i) {
    b.audit_events.push_back(Event(session, i));
  }
  return b;
}

bool HasSession(Store& store, const std::string& id) {
  auto s = store.GetSession(id);
  REQUIRE(s.has_value());
  return s->has_value();
}

// A Store holding only the audit chain in memory, for tests that constrain
// the process's file writes (RLIMIT_FSIZE) without touching SQLite.
class MemoryAuditStore final : public Store {
 public:
  Status Apply(std::span<const WriteBatch>, std::span<const AuditRecord> audit) override {
    std::lock_guard lock(mu_);
    records_.insert(records_.end(), audit.begin(), audit.end());
    return OkStatus();
  }
  Status ClaimAuditChain(std::string_view) override { return OkStatus(); }
  Result<std::vector<AuditChainHead>> ListAuditChains() override {
    return std::vector<AuditChainHead>();
  }
  void WatchChanges(std::function<void()>) override {}
  Result<bool> TryLease(std::string_view, Seconds) override { return true; }
  Result<std::optional<TimePoint>> ServerTime() override { return std::optional<TimePoint>(); }
  Result<std::optional<ChainHead>> AuditHead(std::string_view) override {
    std::lock_guard lock(mu_);
    if (records_.empty()) {
      return std::optional<ChainHead>();
    }
    return std::optional<ChainHead>(ChainHead{records_.back().seq, records_.back().hash});
  }
  Result<std::optional<SessionRecord>> GetSession(std::string_view) override {
    return std::optional<SessionRecord>();
  }
  Result<std::vector<SessionRecord>> ListSessions(const SessionFilter&) override {
    return std::vector<SessionRecord>();
  }
  Result<std::optional<GrantRecord>> GetGrant(std::string_view) override {
    return std::optional<GrantRecord>();
  }
  Result<std::vector<GrantRecord>> ListGrants(std::string_view) override {
    return std::vector<GrantRecord>();
  }
  Result<std::vector<SessionRecord>> ListSessionsDue(TimePoint, size_t) override {
    return std::vector<SessionRecord>();
  }
  Result<std::vector<GrantRecord>> ListGrantsByState(GrantState, std::optional<TimePoint>,
                                                     std::string_view, size_t) override {
    return std::vector<GrantRecord>();
  }
  Result<std::vector<GrantRecord>> ListPendingApprovals(const PendingApprovalQuery&) override {
    return std::vector<GrantRecord>();
  }
  Result<PendingApprovalCounts> CountPendingApprovals(std::string_view, std::string_view,
                                                      TimePoint) override {
    return PendingApprovalCounts();
  }
  Result<std::vector<RevocationTask>> ListRevocationsDue(TimePoint, size_t) override {
    return std::vector<RevocationTask>();
  }
  Result<std::vector<AuditRecord>> ListAudit(const AuditFilter& f) override {
    std::lock_guard lock(mu_);
    std::vector<AuditRecord> out;
    for (const AuditRecord& r : records_) {
      if (r.seq > f.after_seq && out.size() < f.limit) {
        out.push_back(r);
      }
    }
    return out;
  }
  Result<bool> ReplayReserved(std::string_view, TimePoint) override { return false; }
  Result<size_t> PruneReplayReservations(TimePoint, size_t) override { return size_t{0}; }
  Status Ping() override { return OkStatus(); }

 private:
  std::mutex mu_;
  std::vector<AuditRecord> records_;
};

TEST_CASE("Journal: commits reach the store and the file, chained") {
  TempDir dir;
  auto store = OpenStore(dir.File("broker.db"));
  const std::string path = dir.File("audit.jsonl");
  auto journal = OpenJournal(store.get(), path);
  CHECK_FALSE(journal->Head().has_value());

  std::vector<std::pair<size_t, int64_t>> observed;
  std::mutex observed_mu;
  journal->SetObserver([&](size_t batches, int64_t micros) {
    std::lock_guard lock(observed_mu);
    observed.emplace_back(batches, micros);
  });

  REQUIRE(journal->Commit(Batch("ses_1")));
  REQUIRE(journal->Commit(Batch("ses_2", 0)));  // no audit events
  REQUIRE(journal->Commit(Batch("ses_3", 3)));

  CHECK(HasSession(*store, "ses_1"));
  CHECK(HasSession(*store, "ses_2"));
  auto head = journal->Head();
  REQUIRE(head.has_value());
  CHECK(head->seq == 5);
  auto store_head = store->AuditHead(kDefaultAuditChain);
  REQUIRE(store_head.has_value());
  REQUIRE(store_head->has_value());
  CHECK((*store_head)->hash == head->hash);

  const JournalStats stats = journal->Stats();
  CHECK(stats.commits == 3);
  CHECK(stats.batches == 3);
  CHECK(stats.records == 5);
  {
    std::lock_guard lock(observed_mu);
    CHECK(observed.size() == 3);
  }

  // Audit rows are indexed by the body's session and principal.
  AuditFilter f;
  f.session_id = "ses_3";
  auto ses3 = store->ListAudit(f);
  REQUIRE(ses3.has_value());
  CHECK(ses3->size() == 3);

  journal->Stop();
  CheckFileMatchesStore(*store, path, 5);
  struct stat st{};
  REQUIRE(::stat(path.c_str(), &st) == 0);
  CHECK((st.st_mode & 0777) == 0600);

  const Status after = journal->Commit(Batch("ses_4"));
  REQUIRE_FALSE(after.has_value());
  CHECK(after.error().code == ErrorCode::kUnavailable);
  CHECK_FALSE(HasSession(*store, "ses_4"));
}

TEST_CASE("Journal: 16 threads x 200 batches group-commit into one valid chain") {
  TempDir dir;
  auto store = OpenStore(dir.File("broker.db"));
  const std::string path = dir.File("audit.jsonl");
  auto journal = OpenJournal(store.get(), path);
  std::atomic<uint64_t> observed_batches{0};
  journal->SetObserver([&](size_t batches, int64_t) { observed_batches += batches; });

  constexpr int kThreads = 16;
  constexpr int kBatches = 200;
  std::atomic<int> failures{0};
  {
    std::vector<std::jthread> threads;
    for (int t = 0; t < kThreads; ++t) {
      threads.emplace_back([&, t] {
        for (int i = 0; i < kBatches; ++i) {
          if (!journal->Commit(Batch("ses_" + std::to_string(t) + "_" + std::to_string(i)))) {
            ++failures;
          }
        }
      });
    }
  }
  CHECK(failures.load() == 0);
  const JournalStats stats = journal->Stats();
  CHECK(stats.batches == kThreads * kBatches);
  CHECK(stats.records == 2 * kThreads * kBatches);
  CHECK(stats.commits < stats.batches);
  CHECK(observed_batches.load() == stats.batches);
  MESSAGE("group commit: " << stats.batches << " batches in " << stats.commits << " commits");
  journal->Stop();
  CheckFileMatchesStore(*store, path, 2 * kThreads * kBatches);

  // Each batch's two events are adjacent in the chain (a batch is atomic).
  AuditFilter everything;
  everything.limit = 0;
  auto all = store->ListAudit(everything);
  REQUIRE(all.has_value());
  for (size_t i = 0; i + 1 < all->size(); i += 2) {
    CHECK((*all)[i].body["agent"]["session_id"] == (*all)[i + 1].body["agent"]["session_id"]);
  }
}

TEST_CASE("Journal: max_group bounds the group size") {
  TempDir dir;
  auto store = OpenStore(dir.File("broker.db"));
  auto journal = OpenJournal(store.get(), dir.File("audit.jsonl"), 2);
  std::atomic<size_t> largest{0};
  journal->SetObserver([&](size_t batches, int64_t) {
    size_t prev = largest.load();
    while (batches > prev && !largest.compare_exchange_weak(prev, batches)) {
    }
  });
  {
    std::vector<std::jthread> threads;
    for (int t = 0; t < 8; ++t) {
      threads.emplace_back([&, t] {
        for (int i = 0; i < 20; ++i) {
          CHECK(journal->Commit(Batch("ses_" + std::to_string(t * 100 + i), 1)));
        }
      });
    }
  }
  CHECK(largest.load() <= 2);
  CHECK(journal->Stats().batches == 160);
}

TEST_CASE("Journal: a failed store Apply fails its group and the chain stays valid") {
  TempDir dir;
  auto real = OpenStore(dir.File("broker.db"));
  testing::FailingStore store(real.get());
  const std::string path = dir.File("audit.jsonl");
  auto journal = OpenJournal(&store, path);

  SUBCASE("sequential") {
    REQUIRE(journal->Commit(Batch("ses_a")));
    const auto head_before = journal->Head();
    store.FailNextApply();
    const Status failed = journal->Commit(Batch("ses_b"));
    REQUIRE_FALSE(failed.has_value());
    CHECK(failed.error().code == ErrorCode::kUnavailable);
    CHECK(failed.error().Reason() == "store_unavailable");
    CHECK(journal->Head()->seq == head_before->seq);
    CHECK(journal->Head()->hash == head_before->hash);
    CHECK_FALSE(HasSession(*real, "ses_b"));

    REQUIRE(journal->Commit(Batch("ses_c")));
    CHECK(journal->Head()->seq == 4);
    journal->Stop();
    CheckFileMatchesStore(*real, path, 4);
  }

  SUBCASE("store unreadable while recovering") {
    REQUIRE(journal->Commit(Batch("ses_a")));
    store.FailNextApply();
    CHECK_FALSE(journal->Commit(Batch("ses_b")).has_value());
    store.SetFailReads(true);  // the head cannot be re-read: still fail closed
    CHECK_FALSE(journal->Commit(Batch("ses_c")).has_value());
    store.SetFailReads(false);
    REQUIRE(journal->Commit(Batch("ses_d")));
    CHECK_FALSE(HasSession(*real, "ses_c"));
    journal->Stop();
    CheckFileMatchesStore(*real, path, 4);
  }

  SUBCASE("concurrent, several failing groups") {
    for (uint64_t n : {3, 7, 20, 21}) {
      store.FailApplyNumber(n);
    }
    std::mutex mu;
    std::set<std::string> ok;
    std::set<std::string> failed;
    {
      std::vector<std::jthread> threads;
      for (int t = 0; t < 8; ++t) {
        threads.emplace_back([&, t] {
          for (int i = 0; i < 30; ++i) {
            const std::string id = "ses_" + std::to_string(t) + "_" + std::to_string(i);
            const Status st = journal->Commit(Batch(id));
            std::lock_guard lock(mu);
            (st ? ok : failed).insert(id);
          }
        });
      }
    }
    CHECK(store.FailedApplies() == 4);
    CHECK(failed.size() >= 4);
    CHECK(ok.size() + failed.size() == 240);
    for (const std::string& id : ok) {
      CHECK(HasSession(*real, id));
    }
    for (const std::string& id : failed) {
      CHECK_FALSE(HasSession(*real, id));
    }
    journal->Stop();
    CheckFileMatchesStore(*real, path, static_cast<int64_t>(2 * ok.size()));
  }
}

TEST_CASE("Journal: Stop drains queued work; later commits are refused") {
  TempDir dir;
  auto store = OpenStore(dir.File("broker.db"));
  const std::string path = dir.File("audit.jsonl");
  auto journal = OpenJournal(store.get(), path);
  std::atomic<int> ok{0};
  std::atomic<int> refused{0};
  std::atomic<int> other{0};
  {
    std::vector<std::jthread> threads;
    for (int t = 0; t < 8; ++t) {
      threads.emplace_back([&, t] {
        for (int i = 0; i < 50; ++i) {
          const Status st = journal->Commit(Batch("ses_" + std::to_string(t * 100 + i)));
          if (st) {
            ++ok;
          } else if (st.error().Reason() == "journal_stopped") {
            ++refused;
          } else {
            ++other;
          }
        }
      });
    }
    while (journal->Stats().batches < 20) {
      std::this_thread::yield();
    }
    journal->Stop();
  }
  CHECK(other.load() == 0);
  CHECK(ok.load() + refused.load() == 400);
  CHECK(journal->Stats().batches == static_cast<uint64_t>(ok.load()));
  CheckFileMatchesStore(*store, path, 2 * ok.load());
}

TEST_CASE("Journal: a second journal on the same file is refused") {
  TempDir dir;
  auto store = OpenStore(dir.File("broker.db"));
  auto journal = OpenJournal(store.get(), dir.File("audit.jsonl"));
  auto second = Journal::Create(store.get(), dir.File("audit.jsonl"));
  REQUIRE_FALSE(second.has_value());
  CHECK(second.error().Reason() == "audit_file_locked");
}

TEST_CASE("Journal: Create reconciles the file with the store") {
  TempDir dir;
  const std::string db = dir.File("broker.db");
  const std::string path = dir.File("audit.jsonl");
  auto store = OpenStore(db);
  {
    auto journal = OpenJournal(store.get(), path);
    for (int i = 0; i < 5; ++i) {
      REQUIRE(journal->Commit(Batch("ses_" + std::to_string(i))));
    }
  }
  const std::string good = ReadFile(path);
  REQUIRE(VerifyChainText(good).records == 10);

  auto first_lines = [&](int n) {
    size_t pos = 0;
    for (int i = 0; i < n; ++i) {
      pos = good.find('\n', pos) + 1;
    }
    return good.substr(0, pos);
  };

  SUBCASE("torn last line is cut") {
    WriteFile(path, good + R"({"event":"grant.decided","seq":11,"prev_)");
    auto journal = OpenJournal(store.get(), path);
    CHECK(ReadFile(path) == good);
  }
  SUBCASE("missing records are appended") {
    WriteFile(path, first_lines(3));
    auto journal = OpenJournal(store.get(), path);
    CHECK(ReadFile(path) == good);
  }
  SUBCASE("missing records and a torn tail") {
    const std::string fourth = first_lines(4).substr(first_lines(3).size());
    WriteFile(path, first_lines(3) + fourth.substr(0, 17));
    auto journal = OpenJournal(store.get(), path);
    CHECK(ReadFile(path) == good);
  }
  SUBCASE("a torn first line") {
    WriteFile(path, good.substr(0, 30));
    auto journal = OpenJournal(store.get(), path);
    CHECK(ReadFile(path) == good);
  }
  SUBCASE("deleted file is rebuilt from the store") {
    std::filesystem::remove(path);
    auto journal = OpenJournal(store.get(), path);
    CHECK(ReadFile(path) == good);
  }
  SUBCASE("the journal continues the chain after reconciling") {
    WriteFile(path, first_lines(2));
    auto journal = OpenJournal(store.get(), path);
    REQUIRE(journal->Commit(Batch("ses_next")));
    journal->Stop();
    CheckFileMatchesStore(*store, path, 12);
  }
}

TEST_CASE("Journal: a file that diverges from the store is refused, not rewritten") {
  TempDir dir;
  const std::string path = dir.File("audit.jsonl");
  auto store = OpenStore(dir.File("broker.db"));
  {
    auto journal = OpenJournal(store.get(), path);
    for (int i = 0; i < 3; ++i) {
      REQUIRE(journal->Commit(Batch("ses_" + std::to_string(i))));
    }
  }
  const std::string good = ReadFile(path);
  std::vector<std::string> lines;
  {
    std::istringstream in(good);
    for (std::string l; std::getline(in, l);) {
      lines.push_back(l);
    }
  }
  REQUIRE(lines.size() == 6);
  auto join = [](const std::vector<std::string>& ls) {
    std::string out;
    for (const auto& l : ls) {
      out += l + "\n";
    }
    return out;
  };

  std::string bad;
  SUBCASE("last record edited and re-hashed") {
    Json body = Json::parse(lines.back());
    body["outcome"] = "denied";
    body["hash"] = ComputeRecordHash(body);
    std::vector<std::string> ls = lines;
    ls.back() = body.dump();
    bad = join(ls);
  }
  SUBCASE("a shortened file whose last record was edited") {
    std::vector<std::string> ls(lines.begin(), lines.begin() + 3);
    Json body = Json::parse(ls.back());
    body["outcome"] = "denied";
    ls.back() = body.dump();
    bad = join(ls);
  }
  SUBCASE("file ahead of the store") {
    std::vector<std::string> ls = lines;
    Json body = Json::parse(lines.back());
    const AuditRecord next = ChainRecord(
        ChainHead{body["seq"].get<int64_t>(), body["hash"].get<std::string>()}, Event("ses_x", 0));
    ls.push_back(next.body.dump());
    bad = join(ls);
  }
  SUBCASE("last complete line is not a record") { bad = good + "hello\n"; }
  WriteFile(path, bad);
  auto journal = Journal::Create(store.get(), path);
  REQUIRE_FALSE(journal.has_value());
  CHECK(journal.error().Reason() == "audit_file_diverged");
  CHECK(ReadFile(path) == bad);
}

TEST_CASE("Journal: file from another store's chain is refused") {
  TempDir dir;
  const std::string path = dir.File("audit.jsonl");
  {
    auto store = OpenStore(dir.File("one.db"));
    auto journal = OpenJournal(store.get(), path);
    REQUIRE(journal->Commit(Batch("ses_1")));
  }
  auto other = OpenStore(dir.File("two.db"));
  auto journal = Journal::Create(other.get(), path);
  REQUIRE_FALSE(journal.has_value());
  CHECK(journal.error().Reason() == "audit_file_diverged");
}

// Runs `body` in a forked child and returns its exit code (or 128+signal).
int RunInChild(const std::function<int()>& body) {
  const pid_t pid = ::fork();
  REQUIRE(pid >= 0);
  if (pid == 0) {
    int code = 99;
    try {
      code = body();
    } catch (...) {
      code = 98;
    }
    ::_exit(code);
  }
  int status = 0;
  REQUIRE(::waitpid(pid, &status, 0) == pid);
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

// In a child (RunInChild; RLIMIT_FSIZE is process-wide): lets the file at
// `path` grow by only `room` more bytes. Returns the limit to restore.
std::optional<rlimit> LimitFileGrowth(const std::string& path, off_t room) {
  struct stat st{};
  if (::stat(path.c_str(), &st) != 0) {
    return std::nullopt;
  }
  rlimit old{};
  ::getrlimit(RLIMIT_FSIZE, &old);
  rlimit small = old;
  small.rlim_cur = static_cast<rlim_t>(st.st_size + room);
  if (::setrlimit(RLIMIT_FSIZE, &small) != 0) {
    return std::nullopt;
  }
  return old;
}

TEST_CASE(
    "Journal: file_sync commit: a failed file write fails closed and the next group repairs the "
    "file") {
  TempDir dir;
  const std::string path = dir.File("audit.jsonl");
  // RLIMIT_FSIZE is process-wide: constrain a child, never the test runner.
  const int code = RunInChild([&]() -> int {
    ::signal(SIGXFSZ, SIG_IGN);
    MemoryAuditStore mem;
    JournalOptions options;
    options.file_sync = FileSync::kCommit;
    auto created = Journal::Create(&mem, path, std::move(options));
    if (!created) {
      return 10;
    }
    Journal& journal = **created;
    for (int i = 0; i < 3; ++i) {
      if (!journal.Commit(Batch("ses_" + std::to_string(i)))) {
        return 11;
      }
    }
    const std::optional<rlimit> old = LimitFileGrowth(path, 40);  // room for a torn line only
    if (!old) {
      return 13;
    }
    const Status failed = journal.Commit(Batch("ses_fail"));
    if (failed || failed.error().code != ErrorCode::kUnavailable) {
      return 14;
    }
    if (journal.Head()->seq != 8) {
      return 15;  // the store committed: the head advances
    }
    // Still cannot repair the file: refuse again without touching the store.
    if (journal.Commit(Batch("ses_fail2"))) {
      return 16;
    }
    if (journal.Head()->seq != 8) {
      return 17;
    }
    if (::setrlimit(RLIMIT_FSIZE, &*old) != 0) {
      return 18;
    }
    if (!journal.Commit(Batch("ses_ok"))) {
      return 19;
    }
    journal.Stop();
    const std::string file = ReadFile(path);
    const auto expected = StoreChainText(mem);
    if (!expected || file != *expected) {
      return 20;
    }
    const ChainVerification v = VerifyChainText(file);
    return v.ok && v.records == 10 ? 0 : 21;
  });
  CHECK(code == 0);
}

TEST_CASE("Journal: file_sync interval: a file that cannot be written does not fail answers") {
  TempDir dir;
  const std::string path = dir.File("audit.jsonl");
  const int code = RunInChild([&]() -> int {
    ::signal(SIGXFSZ, SIG_IGN);
    MemoryAuditStore mem;
    JournalOptions options;
    options.file_sync_interval = std::chrono::milliseconds(20);
    auto created = Journal::Create(&mem, path, std::move(options));
    if (!created) {
      return 10;
    }
    Journal& journal = **created;
    for (int i = 0; i < 3; ++i) {
      if (!journal.Commit(Batch("ses_" + std::to_string(i)))) {
        return 11;
      }
    }
    const std::optional<rlimit> old = LimitFileGrowth(path, 40);  // room for a torn line only
    if (!old) {
      return 13;
    }
    // The store is the durable record: the answers go out; the file falls
    // behind, and says so.
    for (int i = 0; i < 3; ++i) {
      std::this_thread::sleep_for(std::chrono::milliseconds(30));  // repairs are tried
      if (!journal.Commit(Batch("ses_full_" + std::to_string(i)))) {
        return 14;
      }
    }
    if (journal.Head()->seq != 12 || journal.Stats().file_errors < 2) {
      return 15;
    }
    std::vector<MetricFamily> metrics;
    journal.CollectMetrics(metrics);
    bool behind = false;
    for (const MetricFamily& f : metrics) {
      behind = behind || (f.name == "jitbroker_audit_file_behind" && f.samples.at(0).second == 1);
    }
    if (!behind) {
      return 16;
    }
    if (::setrlimit(RLIMIT_FSIZE, &*old) != 0) {
      return 17;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(30));
    // The next group repairs the file from the store.
    if (!journal.Commit(Batch("ses_ok"))) {
      return 18;
    }
    const std::string file = ReadFile(path);
    const auto expected = StoreChainText(mem);
    if (!expected || file != *expected) {
      return 19;
    }
    journal.Stop();
    const ChainVerification v = VerifyChainText(ReadFile(path));
    return v.ok && v.records == 14 ? 0 : 20;
  });
  CHECK(code == 0);
}

TEST_CASE("Journal: file_sync interval: answers do not wait for the file's sync; Stop syncs") {
  TempDir dir;
  auto store = OpenStore(dir.File("broker.db"));
  const std::string path = dir.File("audit.jsonl");
  SUBCASE("no sync on the answer's path") {
    JournalOptions options;
    options.file_sync_interval = std::chrono::hours(1);
    auto journal = Journal::Create(store.get(), path, std::move(options));
    REQUIRE(journal.has_value());
    for (int i = 0; i < 5; ++i) {
      REQUIRE((*journal)->Commit(Batch("ses_" + std::to_string(i))));
    }
    // Written in order (a reader sees every record), not yet synced.
    CheckFileMatchesStore(*store, path, 10);
    CHECK((*journal)->Stats().file_syncs == 0);
    std::vector<MetricFamily> metrics;
    (*journal)->CollectMetrics(metrics);
    bool unsynced = false;
    for (const MetricFamily& f : metrics) {
      unsynced = unsynced || (f.name == "jitbroker_audit_file_unsynced_records" &&
                              f.samples.at(0).second == 10);
    }
    CHECK(unsynced);
    (*journal)->Stop();
    CHECK((*journal)->Stats().file_syncs == 1);  // the tail, at Stop
  }
  SUBCASE("the syncer syncs within the interval") {
    JournalOptions options;
    options.file_sync_interval = std::chrono::milliseconds(10);
    auto journal = Journal::Create(store.get(), path, std::move(options));
    REQUIRE(journal.has_value());
    REQUIRE((*journal)->Commit(Batch("ses_a")));
    for (int i = 0; i < 500 && (*journal)->Stats().file_syncs == 0; ++i) {
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
    CHECK((*journal)->Stats().file_syncs == 1);
  }
  SUBCASE("file_sync commit syncs every group") {
    JournalOptions options;
    options.file_sync = FileSync::kCommit;
    auto journal = Journal::Create(store.get(), path, std::move(options));
    REQUIRE(journal.has_value());
    for (int i = 0; i < 3; ++i) {
      REQUIRE((*journal)->Commit(Batch("ses_" + std::to_string(i))));
    }
    CHECK((*journal)->Stats().file_syncs == 3);
  }
}

TEST_CASE("Journal: kill -9 mid-commit leaves a store and file that reconcile and verify") {
  TempDir dir;
  const std::string db = dir.File("broker.db");
  const std::string path = dir.File("audit.jsonl");
  int64_t last_records = 0;
  off_t synced_size = 0;
  for (int round = 0; round < 3; ++round) {
    CAPTURE(round);
    int ready[2];
    REQUIRE(::pipe(ready) == 0);
    const pid_t pid = ::fork();
    REQUIRE(pid >= 0);
    if (pid == 0) {
      ::close(ready[0]);
      store::SqliteOptions options;
      options.path = db;
      auto store = store::OpenSqliteStore(options);
      if (!store) {
        ::_exit(2);
      }
      JournalOptions journal_options;
      journal_options.file_sync_interval = std::chrono::hours(1);
      auto journal = Journal::Create(store->get(), path, std::move(journal_options));
      if (!journal) {
        ::_exit(3);
      }
      if (!(*journal)->Commit(Batch("ses_" + std::to_string(round) + "_first")) ||
          ::write(ready[1], "r", 1) != 1) {
        ::_exit(5);
      }
      std::vector<std::jthread> threads;
      for (int t = 0; t < 4; ++t) {
        threads.emplace_back([&, t] {
          for (int i = 0;; ++i) {
            const std::string id =
                "ses_" + std::to_string(round) + "_" + std::to_string(t) + "_" + std::to_string(i);
            if (!(*journal)->Commit(Batch(id))) {
              ::_exit(4);
            }
          }
        });
      }
      for (;;) {
        ::pause();
      }
    }
    ::close(ready[1]);
    char byte = 0;
    const bool started = ::read(ready[0], &byte, 1) == 1;  // the child has committed once
    ::close(ready[0]);
    if (started) {
      std::this_thread::sleep_for(std::chrono::milliseconds(200));
    }
    ::kill(pid, SIGKILL);
    int status = 0;
    REQUIRE(::waitpid(pid, &status, 0) == pid);
    REQUIRE_MESSAGE(WIFSIGNALED(status), "child exited early with " << WEXITSTATUS(status));
    // kill -9 keeps what was written; a lost host loses the unsynced tail of
    // the file (here: everything written this round, the child's interval
    // being an hour). Cut it mid-line, as a power cut could.
    {
      struct stat st{};
      REQUIRE(::stat(path.c_str(), &st) == 0);
      REQUIRE(st.st_size > synced_size);
      REQUIRE(::truncate(path.c_str(), synced_size + (st.st_size - synced_size) / 3) == 0);
    }

    auto store = OpenStore(db);
    auto journal = OpenJournal(store.get(), path);
    journal->Stop();
    const ChainVerification v = VerifyChainText(ReadFile(path));
    CHECK(v.ok);
    CHECK(v.records > last_records);  // the child made progress each round
    CheckFileMatchesStore(*store, path);
    last_records = v.records;
    struct stat st{};
    REQUIRE(::stat(path.c_str(), &st) == 0);
    synced_size = st.st_size;  // Stop synced it
    MESSAGE("round " << round << ": " << v.records << " records after kill -9");
  }
}

}  // namespace
}  // namespace jitbroker::audit
