// SqliteStore (broker/store/sqlite_store.h): persistence only, no business
// rules. Layout:
//   - one writer connection guarded by writer_mu_, with its statements
//     prepared once; Apply() is BEGIN IMMEDIATE … COMMIT, and checks each
//     batch's StatePreconditions inside it before that batch's writes;
//   - audit rows are indexed by the record's typed fields (AuditRecord::
//     index); bodies are stored, never parsed;
//   - a pool of read-only connections, each used by one thread at a time,
//     with a per-connection statement cache keyed by SQL text;
//   - migrations keyed by PRAGMA user_version, applied in order, each in its
//     own transaction.
// Timestamps are stored as integer unix seconds (indexed, usable from the
// sqlite3 shell) plus a `_ns` column with the sub-second remainder, so a
// round trip of a TimePoint is exact.
#include "broker/store/sqlite_store.h"

#include <fcntl.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <climits>
#include <condition_variable>
#include <cstdint>
#include <cstring>
#include <exception>
#include <functional>
#include <initializer_list>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <thread>
#include <utility>
#include <vector>

#include <sqlite3.h>

#include <nlohmann/json.hpp>

#include "broker/store/record_codec.h"
#include "jitbroker/audit.h"
#include "jitbroker/clock.h"
#include "jitbroker/error.h"
#include "jitbroker/result.h"
#include "jitbroker/store.h"

namespace jitbroker::store {

namespace {

using Json = nlohmann::json;

// ---------------------------------------------------------------------------
// Schema. Append new migrations to the end; never edit a released one.

struct Migration {
  int version;
  const char* sql;
};

constexpr Migration kMigrations[] = {
    {1, R"sql(
CREATE TABLE sessions (
  id                    TEXT PRIMARY KEY NOT NULL,
  token_sha256          TEXT NOT NULL,
  principal_id          TEXT NOT NULL,
  agent_id              TEXT NOT NULL,
  task_id               TEXT NOT NULL,
  task_description      TEXT NOT NULL,
  state                 TEXT NOT NULL,
  created_at            INTEGER NOT NULL,
  created_at_ns         INTEGER NOT NULL,
  expires_at            INTEGER NOT NULL,
  expires_at_ns         INTEGER NOT NULL,
  heartbeat_seconds     INTEGER NOT NULL,
  heartbeat_deadline    INTEGER NOT NULL,
  heartbeat_deadline_ns INTEGER NOT NULL,
  ended_at              INTEGER,
  ended_at_ns           INTEGER,
  end_reason            TEXT NOT NULL,
  last_progress         TEXT NOT NULL,
  data                  TEXT NOT NULL  -- JSON: {"scope":…, "extra":…}
);
CREATE INDEX sessions_principal ON sessions(principal_id);
CREATE INDEX sessions_state_expires ON sessions(state, expires_at);
CREATE INDEX sessions_heartbeat ON sessions(heartbeat_deadline);

CREATE TABLE grants (
  id                    TEXT PRIMARY KEY NOT NULL,
  session_id            TEXT NOT NULL,
  principal_id          TEXT NOT NULL,
  agent_id              TEXT NOT NULL,
  task_id               TEXT NOT NULL,
  tool                  TEXT NOT NULL,
  operation             TEXT NOT NULL,
  resource              TEXT NOT NULL,
  issuer                TEXT NOT NULL,
  requested_ttl_seconds INTEGER,
  ttl_seconds           INTEGER NOT NULL,
  tier                  TEXT NOT NULL,
  state                 TEXT NOT NULL,
  revocability          TEXT NOT NULL,
  credential_type       TEXT NOT NULL,
  credential_sha256     TEXT NOT NULL,
  request_digest        TEXT NOT NULL,
  approval_id           TEXT NOT NULL,
  sealed_handle         TEXT NOT NULL,
  created_at            INTEGER NOT NULL,
  created_at_ns         INTEGER NOT NULL,
  expires_at            INTEGER,
  expires_at_ns         INTEGER,
  revoked_at            INTEGER,
  revoked_at_ns         INTEGER,
  revoke_outcome        TEXT NOT NULL,
  data                  TEXT NOT NULL  -- JSON: {"parameters","scope","decision","extra"}
);
CREATE INDEX grants_session ON grants(session_id, created_at, created_at_ns);
CREATE INDEX grants_state_expires ON grants(state, expires_at);

CREATE TABLE audit (
  seq          INTEGER PRIMARY KEY NOT NULL,
  hash         TEXT NOT NULL,
  prev_hash    TEXT NOT NULL,
  session_id   TEXT,
  principal_id TEXT,
  ts           INTEGER,  -- unix seconds of body["timestamp"], NULL if absent
  body         TEXT NOT NULL
);
CREATE INDEX audit_session ON audit(session_id, seq);
CREATE INDEX audit_principal ON audit(principal_id, seq);
CREATE INDEX audit_ts ON audit(ts);
)sql"},
    // Lifecycle (issue #3): deadline-indexed sweeps and the durable queue of
    // upstream revocations to retry.
    {2, R"sql(
CREATE INDEX sessions_state_heartbeat ON sessions(state, heartbeat_deadline);
CREATE TABLE revocation_queue (
  grant_id           TEXT PRIMARY KEY NOT NULL,
  issuer             TEXT NOT NULL,
  sealed_handle      TEXT NOT NULL,
  expires_at         INTEGER NOT NULL,
  expires_at_ns      INTEGER NOT NULL,
  attempts           INTEGER NOT NULL,
  next_attempt_at    INTEGER NOT NULL,
  next_attempt_at_ns INTEGER NOT NULL,
  last_error         TEXT NOT NULL
);
CREATE INDEX revocation_queue_next ON revocation_queue(next_attempt_at, next_attempt_at_ns);
)sql"},
    // Pending approvals (issue #10): partial indexes over the pending grants
    // only, for the per-session and per-principal bounds and for listing
    // approvals in (created_at, id) order. The listing index leads with
    // state so the planner seeks the cursor and reads in order (no sort).
    {3, R"sql(
CREATE INDEX grants_pending_session ON grants(session_id, expires_at) WHERE state = 'pending';
CREATE INDEX grants_pending_principal ON grants(principal_id, expires_at) WHERE state = 'pending';
CREATE INDEX grants_pending_created ON grants(state, created_at, created_at_ns, id)
  WHERE state = 'pending';
)sql"},
    // CI token replay protection (issue #10): one row per exchanged subject
    // token until it could no longer be accepted; the key is unique.
    {4, R"sql(
CREATE TABLE oidc_replay (
  replay_key    TEXT PRIMARY KEY NOT NULL,
  expires_at    INTEGER NOT NULL,
  expires_at_ns INTEGER NOT NULL
);
CREATE INDEX oidc_replay_expires ON oidc_replay(expires_at, expires_at_ns);
)sql"},
    // Work leases between processes (issue #13, Store::TryLease).
    {5, R"sql(
CREATE TABLE leases (
  lease_key TEXT PRIMARY KEY NOT NULL,
  owner     TEXT NOT NULL,
  until_ns  INTEGER NOT NULL  -- unix nanoseconds on this host's clock
);
)sql"},
};

constexpr int kLatestVersion = kMigrations[std::size(kMigrations) - 1].version;

// ---------------------------------------------------------------------------
// Small helpers.

Error StoreError(std::string_view what, sqlite3* db) {
  std::string detail(what);
  if (db != nullptr) {
    detail += ": ";
    detail += sqlite3_errmsg(db);
  }
  return Unavailable("store_unavailable", "the store is unavailable", std::move(detail));
}

// This store keeps one audit chain, kDefaultAuditChain: its seq is the
// table's primary key (one SQLite file serves one broker process).
Error OtherChain(std::string_view chain_id) {
  Error e =
      FailedPrecondition("audit_chain_unsupported", "this store holds only the audit chain \"" +
                                                        std::string(kDefaultAuditChain) + "\"");
  e.detail = "audit record of chain " + std::string(chain_id);
  return e;
}

struct SplitTime {
  int64_t seconds;
  int64_t nanos;  // 0 <= nanos < 1e9
};

SplitTime Split(TimePoint t) {
  const int64_t ns =
      std::chrono::duration_cast<std::chrono::nanoseconds>(t.time_since_epoch()).count();
  int64_t s = ns / 1'000'000'000;
  int64_t rem = ns % 1'000'000'000;
  if (rem < 0) {
    rem += 1'000'000'000;
    --s;
  }
  return {s, rem};
}

TimePoint Join(int64_t seconds, int64_t nanos) {
  return TimePoint(std::chrono::duration_cast<TimePoint::duration>(
      std::chrono::seconds(seconds) + std::chrono::nanoseconds(nanos)));
}

// ---------------------------------------------------------------------------
// RAII wrappers.

struct DbCloser {
  void operator()(sqlite3* db) const { sqlite3_close_v2(db); }
};
using DbPtr = std::unique_ptr<sqlite3, DbCloser>;

struct StmtFinalizer {
  void operator()(sqlite3_stmt* s) const { sqlite3_finalize(s); }
};
using StmtPtr = std::unique_ptr<sqlite3_stmt, StmtFinalizer>;

// Resets a cached statement when a use of it ends, however it ends.
class StmtUse {
 public:
  explicit StmtUse(sqlite3_stmt* s) : s_(s) {}
  ~StmtUse() {
    sqlite3_reset(s_);
    sqlite3_clear_bindings(s_);
  }
  StmtUse(const StmtUse&) = delete;
  StmtUse& operator=(const StmtUse&) = delete;
  sqlite3_stmt* get() const { return s_; }

 private:
  sqlite3_stmt* s_;
};

// Binds by 1-based index, remembering the first failure.
class Binder {
 public:
  explicit Binder(sqlite3_stmt* s) : s_(s) {}
  Binder& Text(std::string_view v) {
    Check(sqlite3_bind_text64(s_, ++i_, v.data(), v.size(), SQLITE_TRANSIENT, SQLITE_UTF8));
    return *this;
  }
  Binder& Int(int64_t v) {
    Check(sqlite3_bind_int64(s_, ++i_, v));
    return *this;
  }
  Binder& Null() {
    Check(sqlite3_bind_null(s_, ++i_));
    return *this;
  }
  // Binds without copying: `v` must stay valid until the statement is reset
  // (StmtUse's destructor), so only for storage that outlives the StmtUse.
  Binder& StaticText(std::string_view v) {
    Check(sqlite3_bind_text64(s_, ++i_, v.data(), v.size(), SQLITE_STATIC, SQLITE_UTF8));
    return *this;
  }
  Binder& OptText(const std::optional<std::string>& v) { return v ? Text(*v) : Null(); }
  Binder& OptStaticText(const std::string* v) { return v != nullptr ? StaticText(*v) : Null(); }
  Binder& OptInt(const std::optional<int64_t>& v) { return v ? Int(*v) : Null(); }
  Binder& Time(TimePoint t) {
    const SplitTime st = Split(t);
    return Int(st.seconds).Int(st.nanos);
  }
  Binder& OptTime(const std::optional<TimePoint>& t) {
    if (!t) {
      return Null().Null();
    }
    return Time(*t);
  }
  bool ok() const { return rc_ == SQLITE_OK; }

 private:
  void Check(int rc) {
    if (rc_ == SQLITE_OK) {
      rc_ = rc;
    }
  }
  sqlite3_stmt* s_;
  int i_ = 0;
  int rc_ = SQLITE_OK;
};

// Reads columns in order.
class Row {
 public:
  explicit Row(sqlite3_stmt* s) : s_(s) {}
  std::string Text() {
    const int i = i_++;
    const auto* p = reinterpret_cast<const char*>(sqlite3_column_text(s_, i));
    const int n = sqlite3_column_bytes(s_, i);
    return p == nullptr ? std::string() : std::string(p, static_cast<size_t>(n));
  }
  std::optional<std::string> OptText() {
    if (sqlite3_column_type(s_, i_) == SQLITE_NULL) {
      ++i_;
      return std::nullopt;
    }
    return Text();
  }
  int64_t Int() { return sqlite3_column_int64(s_, i_++); }
  std::optional<int64_t> OptInt() {
    if (sqlite3_column_type(s_, i_) == SQLITE_NULL) {
      ++i_;
      return std::nullopt;
    }
    return Int();
  }
  TimePoint Time() {
    const int64_t s = Int();
    const int64_t ns = Int();
    return Join(s, ns);
  }
  std::optional<TimePoint> OptTime() {
    const std::optional<int64_t> s = OptInt();
    const std::optional<int64_t> ns = OptInt();
    if (!s) {
      return std::nullopt;
    }
    return Join(*s, ns.value_or(0));
  }

 private:
  sqlite3_stmt* s_;
  int i_ = 0;
};

// ---------------------------------------------------------------------------
// SQL shared by readers and the writer.

constexpr const char* kSessionColumns =
    "id, token_sha256, principal_id, agent_id, task_id, task_description, state, "
    "created_at, created_at_ns, expires_at, expires_at_ns, heartbeat_seconds, "
    "heartbeat_deadline, heartbeat_deadline_ns, ended_at, ended_at_ns, end_reason, "
    "last_progress, data";

constexpr const char* kGrantColumns =
    "id, session_id, principal_id, agent_id, task_id, tool, operation, resource, issuer, "
    "requested_ttl_seconds, ttl_seconds, tier, state, revocability, credential_type, "
    "credential_sha256, request_digest, approval_id, sealed_handle, created_at, "
    "created_at_ns, expires_at, expires_at_ns, revoked_at, revoked_at_ns, revoke_outcome, data";

constexpr const char* kAuditColumns = "seq, prev_hash, hash, session_id, principal_id, ts, body";

std::string UpsertSql(std::string_view table, std::string_view columns) {
  std::vector<std::string> names;
  size_t pos = 0;
  while (pos < columns.size()) {
    size_t comma = columns.find(',', pos);
    if (comma == std::string_view::npos) {
      comma = columns.size();
    }
    std::string_view name = columns.substr(pos, comma - pos);
    while (!name.empty() && name.front() == ' ') {
      name.remove_prefix(1);
    }
    names.emplace_back(name);
    pos = comma + 1;
  }
  std::string sql =
      "INSERT INTO " + std::string(table) + " (" + std::string(columns) + ") VALUES (";
  for (size_t i = 0; i < names.size(); ++i) {
    sql += i == 0 ? "?" : ", ?";
  }
  sql += ") ON CONFLICT(id) DO UPDATE SET ";
  bool first = true;
  for (const std::string& n : names) {
    if (n == "id") {
      continue;
    }
    sql += first ? "" : ", ";
    sql += n + " = excluded." + n;
    first = false;
  }
  return sql;
}

Result<SessionRecord> ReadSession(sqlite3_stmt* s) {
  Row r(s);
  return ReadSessionRow(r);
}

Result<GrantRecord> ReadGrant(sqlite3_stmt* s) {
  Row r(s);
  return ReadGrantRow(r);
}

Result<AuditRecord> ReadAudit(sqlite3_stmt* s) {
  Row r(s);
  AuditRecord rec;
  rec.seq = r.Int();
  rec.prev_hash = r.Text();
  rec.hash = r.Text();
  rec.index.session_id = r.OptText().value_or("");
  rec.index.principal_id = r.OptText().value_or("");
  if (std::optional<int64_t> ts = r.OptInt()) {
    rec.index.ts = FromUnixSeconds(*ts);
  }
  rec.body = Json::parse(r.Text(), nullptr, /*allow_exceptions=*/false);
  if (!rec.body.is_object()) {
    return std::unexpected(CorruptRow("audit", "body is not a JSON object"));
  }
  return rec;
}

// ---------------------------------------------------------------------------
// Connections.

Result<DbPtr> OpenConnection(const SqliteOptions& options, bool read_only) {
  sqlite3* raw = nullptr;
  const int flags =
      (read_only ? SQLITE_OPEN_READONLY : SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE) |
      SQLITE_OPEN_NOMUTEX | SQLITE_OPEN_PRIVATECACHE;
  const int rc = sqlite3_open_v2(options.path.c_str(), &raw, flags, nullptr);
  DbPtr db(raw);
  if (rc != SQLITE_OK) {
    return std::unexpected(StoreError("open " + options.path, db.get()));
  }
  sqlite3_extended_result_codes(db.get(), 1);
  sqlite3_busy_timeout(db.get(), options.busy_timeout_ms);
  return db;
}

Status Exec(sqlite3* db, const char* sql) {
  if (sqlite3_exec(db, sql, nullptr, nullptr, nullptr) != SQLITE_OK) {
    return std::unexpected(StoreError("exec", db));
  }
  return OkStatus();
}

Result<StmtPtr> Prepare(sqlite3* db, std::string_view sql) {
  sqlite3_stmt* raw = nullptr;
  const int rc = sqlite3_prepare_v3(db, sql.data(), static_cast<int>(sql.size()),
                                    SQLITE_PREPARE_PERSISTENT, &raw, nullptr);
  StmtPtr stmt(raw);
  if (rc != SQLITE_OK) {
    return std::unexpected(StoreError("prepare", db));
  }
  return stmt;
}

Result<int64_t> QueryInt(sqlite3* db, const char* sql) {
  JITBROKER_ASSIGN_OR_RETURN(StmtPtr stmt, Prepare(db, sql));
  if (sqlite3_step(stmt.get()) != SQLITE_ROW) {
    return std::unexpected(StoreError(sql, db));
  }
  return sqlite3_column_int64(stmt.get(), 0);
}

Status EnableWal(sqlite3* db) {
  JITBROKER_ASSIGN_OR_RETURN(StmtPtr s, Prepare(db, "PRAGMA journal_mode=WAL"));
  if (sqlite3_step(s.get()) != SQLITE_ROW) {
    return std::unexpected(StoreError("journal_mode", db));
  }
  const auto* mode = reinterpret_cast<const char*>(sqlite3_column_text(s.get(), 0));
  if (mode == nullptr || std::string_view(mode) != "wal") {
    return std::unexpected(StoreError("could not enable WAL mode", nullptr));
  }
  return OkStatus();
}

Status CheckVersion(int64_t current) {
  if (current > kLatestVersion) {
    return std::unexpected(FailedPrecondition(
        "store_schema_too_new", "the database was written by a newer jitbroker (schema " +
                                    std::to_string(current) + ", this build knows " +
                                    std::to_string(kLatestVersion) + ")"));
  }
  return OkStatus();
}

// Each migration runs in its own IMMEDIATE transaction and re-reads the
// version under the write lock, so two processes opening one file at once
// cannot both apply it.
Status Migrate(sqlite3* db, int target) {
  JITBROKER_ASSIGN_OR_RETURN(const int64_t initial, QueryInt(db, "PRAGMA user_version"));
  JITBROKER_RETURN_IF_ERROR(CheckVersion(initial));
  for (const Migration& m : kMigrations) {
    if (m.version <= initial || (target > 0 && m.version > target)) {
      continue;
    }
    JITBROKER_RETURN_IF_ERROR(Exec(db, "BEGIN IMMEDIATE"));
    Result<int64_t> current = QueryInt(db, "PRAGMA user_version");
    Status st = current ? CheckVersion(*current) : Status(std::unexpected(current.error()));
    if (st && *current >= m.version) {
      JITBROKER_RETURN_IF_ERROR(Exec(db, "COMMIT"));
      continue;
    }
    if (st) {
      st = Exec(db, m.sql);
    }
    if (st) {
      const std::string bump = "PRAGMA user_version = " + std::to_string(m.version);
      st = Exec(db, bump.c_str());
    }
    if (st) {
      st = Exec(db, "COMMIT");
    }
    if (!st) {
      if (sqlite3_get_autocommit(db) == 0) {
        (void)Exec(db, "ROLLBACK");
      }
      Error e = std::move(st).error();
      e.detail = "migration " + std::to_string(m.version) + ": " + e.detail;
      return std::unexpected(std::move(e));
    }
  }
  return OkStatus();
}

// A read-only connection and its statement cache. Used by one thread at a time.
struct Reader {
  DbPtr db;  // declared first: statements are finalized before it closes
  std::map<std::string, StmtPtr, std::less<>> cache;

  Result<sqlite3_stmt*> Stmt(const std::string& sql) {
    auto it = cache.find(sql);
    if (it != cache.end()) {
      return it->second.get();
    }
    JITBROKER_ASSIGN_OR_RETURN(StmtPtr stmt, Prepare(db.get(), sql));
    sqlite3_stmt* raw = stmt.get();
    cache.emplace(sql, std::move(stmt));
    return raw;
  }
};

// Steps a bound statement to completion, converting each row.
template <class T, class ReadFn>
Result<std::vector<T>> Collect(sqlite3* db, sqlite3_stmt* s, ReadFn read) {
  std::vector<T> out;
  while (true) {
    const int rc = sqlite3_step(s);
    if (rc == SQLITE_DONE) {
      return out;
    }
    if (rc != SQLITE_ROW) {
      return std::unexpected(StoreError("query", db));
    }
    JITBROKER_ASSIGN_OR_RETURN(T item, read(s));
    out.push_back(std::move(item));
  }
}

int64_t SqlLimit(size_t limit) {
  // 0 and out-of-range values mean "no limit" to SQLite (LIMIT -1).
  return limit == 0 || limit > static_cast<size_t>(INT64_MAX) ? -1 : static_cast<int64_t>(limit);
}

}  // namespace

// ---------------------------------------------------------------------------

class SqliteStore final : public Store {
 public:
  static Result<std::unique_ptr<Store>> Open(const SqliteOptions& options) {
    if (options.path.empty()) {
      return std::unexpected(InvalidArgument("invalid_config", "store path is empty"));
    }
    // Create the file owner-only before SQLite does: it holds token hashes and
    // sealed handles. SQLite gives the -wal and -shm files the same mode.
    const int fd = ::open(options.path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    if (fd < 0) {
      return std::unexpected(Unavailable("store_unavailable", "the store is unavailable",
                                         "open " + options.path + ": " + std::strerror(errno)));
    }
    ::close(fd);

    std::unique_ptr<SqliteStore> store(new SqliteStore());
    JITBROKER_ASSIGN_OR_RETURN(store->writer_, OpenConnection(options, /*read_only=*/false));
    sqlite3* w = store->writer_.get();
    JITBROKER_RETURN_IF_ERROR(EnableWal(w));
    JITBROKER_RETURN_IF_ERROR(Exec(w, "PRAGMA synchronous=FULL"));
    JITBROKER_RETURN_IF_ERROR(Exec(w, "PRAGMA foreign_keys=ON"));
    JITBROKER_RETURN_IF_ERROR(Migrate(w, options.schema_version_for_testing));
    JITBROKER_RETURN_IF_ERROR(store->PrepareWriter());
    JITBROKER_RETURN_IF_ERROR(store->StartCheckpointer(options));

    const int readers = options.reader_connections > 0 ? options.reader_connections : 1;
    for (int i = 0; i < readers; ++i) {
      auto reader = std::make_unique<Reader>();
      JITBROKER_ASSIGN_OR_RETURN(reader->db, OpenConnection(options, /*read_only=*/true));
      JITBROKER_RETURN_IF_ERROR(Exec(reader->db.get(), "PRAGMA query_only=ON"));
      store->free_readers_.push_back(reader.get());
      store->readers_.push_back(std::move(reader));
    }
    return std::unique_ptr<Store>(std::move(store));
  }

  ~SqliteStore() override {
    StopCheckpointer();
    readers_.clear();
    begin_.reset();
    commit_.reset();
    rollback_.reset();
    upsert_session_.reset();
    upsert_grant_.reset();
    insert_audit_.reset();
    upsert_revocation_.reset();
    delete_revocation_.reset();
    session_state_.reset();
    grant_state_.reset();
    reserve_replay_.reset();
    take_lease_.reset();
    prune_leases_.reset();
    writer_.reset();
  }

  Status Apply(std::span<const WriteBatch> batches, std::span<const AuditRecord> audit) override {
    std::lock_guard lock(writer_mu_);
    sqlite3* w = writer_.get();
    Status st = StepDone(begin_.get(), "begin");
    if (st) {
      st = ApplyInTransaction(batches, audit);
    }
    if (st) {
      st = StepDone(commit_.get(), "commit");
    }
    if (!st && sqlite3_get_autocommit(w) == 0) {
      (void)StepDone(rollback_.get(), "rollback");
    }
    ForgetSessions(batches, /*all=*/!st);
    return st;
  }

  // One broker process per file (the audit file's lock keeps a second
  // journal out of a data directory): only the one chain is checked.
  Status ClaimAuditChain(std::string_view chain_id) override {
    if (chain_id != kDefaultAuditChain) {
      return std::unexpected(OtherChain(chain_id));
    }
    return OkStatus();
  }

  Result<std::vector<AuditChainHead>> ListAuditChains() override {
    JITBROKER_ASSIGN_OR_RETURN(std::optional<ChainHead> head, AuditHead(kDefaultAuditChain));
    std::vector<AuditChainHead> out;
    if (head) {
      out.push_back(AuditChainHead{std::string(kDefaultAuditChain), std::move(*head)});
    }
    return out;
  }

  Result<std::optional<ChainHead>> AuditHead(std::string_view chain_id) override {
    if (chain_id != kDefaultAuditChain) {
      return std::optional<ChainHead>();  // a chain this store never holds
    }
    ReaderLease r(*this);
    JITBROKER_ASSIGN_OR_RETURN(sqlite3_stmt * s,
                               r->Stmt("SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1"));
    StmtUse use(s);
    const int rc = sqlite3_step(s);
    if (rc == SQLITE_DONE) {
      return std::optional<ChainHead>();
    }
    if (rc != SQLITE_ROW) {
      return std::unexpected(StoreError("audit head", r->db.get()));
    }
    Row row(s);
    ChainHead head;
    head.seq = row.Int();
    head.hash = row.Text();
    return std::optional<ChainHead>(std::move(head));
  }

  void CollectMetrics(std::vector<MetricFamily>& out) const override {
    std::lock_guard lock(sessions_.mu);
    out.push_back({"jitbroker_store_session_cache_hits_total",
                   "counter",
                   "Session reads served from the store's cache.",
                   {{"", static_cast<double>(sessions_.hits)}}});
    out.push_back({"jitbroker_store_session_cache_misses_total",
                   "counter",
                   "Session reads that went to the database.",
                   {{"", static_cast<double>(sessions_.misses)}}});
  }

  // Served from the session cache when it holds the row (see SessionCache).
  Result<std::optional<SessionRecord>> GetSession(std::string_view id) override {
    uint64_t generation = 0;
    {
      std::lock_guard lock(sessions_.mu);
      if (auto it = sessions_.rows.find(id); it != sessions_.rows.end()) {
        ++sessions_.hits;
        return std::optional<SessionRecord>(it->second);
      }
      ++sessions_.misses;
      generation = sessions_.generation;
    }
    ReaderLease r(*this);
    JITBROKER_ASSIGN_OR_RETURN(sqlite3_stmt * s, r->Stmt(std::string("SELECT ") + kSessionColumns +
                                                         " FROM sessions WHERE id = ?"));
    StmtUse use(s);
    Binder(s).Text(id);
    JITBROKER_ASSIGN_OR_RETURN(std::vector<SessionRecord> rows,
                               Collect<SessionRecord>(r->db.get(), s, ReadSession));
    if (rows.empty()) {
      return std::optional<SessionRecord>();
    }
    {
      // Only a row no Apply can have changed since it was read is kept.
      std::lock_guard lock(sessions_.mu);
      if (sessions_.generation == generation) {
        if (sessions_.rows.size() >= SessionCache::kMaxRows) {
          sessions_.rows.erase(sessions_.rows.begin());
        }
        sessions_.rows.insert_or_assign(rows.front().id, rows.front());
      }
    }
    return std::optional<SessionRecord>(std::move(rows.front()));
  }

  Result<std::vector<SessionRecord>> ListSessions(const SessionFilter& f) override {
    std::string sql = std::string("SELECT ") + kSessionColumns + " FROM sessions WHERE 1";
    if (!f.principal_id.empty()) {
      sql += " AND principal_id = ?";
    }
    if (!f.agent_id.empty()) {
      sql += " AND agent_id = ?";
    }
    if (f.state) {
      sql += " AND state = ?";
    }
    sql += " ORDER BY created_at, created_at_ns, id LIMIT ?";
    ReaderLease r(*this);
    JITBROKER_ASSIGN_OR_RETURN(sqlite3_stmt * s, r->Stmt(sql));
    StmtUse use(s);
    Binder b(s);
    if (!f.principal_id.empty()) {
      b.Text(f.principal_id);
    }
    if (!f.agent_id.empty()) {
      b.Text(f.agent_id);
    }
    if (f.state) {
      b.StaticText(StateName(*f.state));
    }
    b.Int(SqlLimit(f.limit));
    return Collect<SessionRecord>(r->db.get(), s, ReadSession);
  }

  Result<std::optional<GrantRecord>> GetGrant(std::string_view id) override {
    ReaderLease r(*this);
    JITBROKER_ASSIGN_OR_RETURN(sqlite3_stmt * s, r->Stmt(std::string("SELECT ") + kGrantColumns +
                                                         " FROM grants WHERE id = ?"));
    StmtUse use(s);
    Binder(s).Text(id);
    JITBROKER_ASSIGN_OR_RETURN(std::vector<GrantRecord> rows,
                               Collect<GrantRecord>(r->db.get(), s, ReadGrant));
    if (rows.empty()) {
      return std::optional<GrantRecord>();
    }
    return std::optional<GrantRecord>(std::move(rows.front()));
  }

  Result<std::vector<GrantRecord>> ListGrants(std::string_view session_id) override {
    ReaderLease r(*this);
    JITBROKER_ASSIGN_OR_RETURN(
        sqlite3_stmt * s,
        r->Stmt(std::string("SELECT ") + kGrantColumns +
                " FROM grants WHERE session_id = ? ORDER BY created_at, created_at_ns, id"));
    StmtUse use(s);
    Binder(s).Text(session_id);
    return Collect<GrantRecord>(r->db.get(), s, ReadGrant);
  }

  Result<std::vector<SessionRecord>> ListSessionsDue(TimePoint now, size_t limit) override {
    // Two index range scans (state+expires_at, state+heartbeat_deadline) on
    // the seconds, exact with the _ns remainder.
    const SplitTime t = Split(now);
    ReaderLease r(*this);
    JITBROKER_ASSIGN_OR_RETURN(
        sqlite3_stmt * s,
        r->Stmt(std::string("SELECT ") + kSessionColumns +
                " FROM sessions WHERE state = 'active' AND expires_at <= ?1 AND "
                "(expires_at < ?1 OR expires_at_ns <= ?2) UNION SELECT " +
                kSessionColumns +
                " FROM sessions WHERE state = 'active' AND heartbeat_deadline <= ?1 AND "
                "(heartbeat_deadline < ?1 OR heartbeat_deadline_ns < ?2) "
                "ORDER BY expires_at, expires_at_ns, id LIMIT ?3"));
    StmtUse use(s);
    Binder(s).Int(t.seconds).Int(t.nanos).Int(SqlLimit(limit));
    return Collect<SessionRecord>(r->db.get(), s, ReadSession);
  }

  Result<std::vector<GrantRecord>> ListGrantsByState(GrantState state,
                                                     std::optional<TimePoint> expires_before,
                                                     std::string_view issuer,
                                                     size_t limit) override {
    std::string sql = std::string("SELECT ") + kGrantColumns + " FROM grants WHERE state = ?";
    if (expires_before) {
      sql += " AND expires_at <= ? AND (expires_at < ? OR expires_at_ns <= ?)";
    }
    if (!issuer.empty()) {
      sql += " AND issuer = ?";
    }
    // NULL expires_at sorts first in SQLite.
    sql += " ORDER BY expires_at, expires_at_ns, created_at, created_at_ns, id LIMIT ?";
    ReaderLease r(*this);
    JITBROKER_ASSIGN_OR_RETURN(sqlite3_stmt * s, r->Stmt(sql));
    StmtUse use(s);
    Binder b(s);
    b.StaticText(StateName(state));
    if (expires_before) {
      const SplitTime t = Split(*expires_before);
      b.Int(t.seconds).Int(t.seconds).Int(t.nanos);
    }
    if (!issuer.empty()) {
      b.Text(issuer);
    }
    b.Int(SqlLimit(limit));
    return Collect<GrantRecord>(r->db.get(), s, ReadGrant);
  }

  // --- Pending approvals (issue #10) ---------------------------------------
  // The literal state = 'pending' lets SQLite use the partial indexes of
  // migration 3. An approval is open while expires_at (seconds, then the
  // _ns remainder) is after `now`.

  Result<std::vector<GrantRecord>> ListPendingApprovals(const PendingApprovalQuery& q) override {
    if (q.tiers.empty() || q.limit == 0) {
      return std::vector<GrantRecord>();
    }
    auto placeholders = [](size_t n) {
      std::string out;
      for (size_t i = 0; i < n; ++i) {
        out += i == 0 ? "?" : ", ?";
      }
      return out;
    };
    std::string sql = std::string("SELECT ") + kGrantColumns +
                      " FROM grants WHERE state = 'pending' AND (expires_at IS NULL OR "
                      "expires_at > ? OR (expires_at = ? AND expires_at_ns > ?))"
                      " AND tier IN (" +
                      placeholders(q.tiers.size()) + ")";
    if (!q.session_id.empty()) {
      sql += " AND session_id = ?";
    }
    if (!q.principal_id.empty()) {
      sql += " AND principal_id = ?";
    }
    const bool exclude = !q.exclude_principal_id.empty() && !q.exclude_principal_tiers.empty();
    if (exclude) {
      sql += " AND NOT (principal_id = ? AND tier IN (" +
             placeholders(q.exclude_principal_tiers.size()) + "))";
    }
    if (q.after) {
      sql += q.newest_first ? " AND (created_at, created_at_ns, id) < (?, ?, ?)"
                            : " AND (created_at, created_at_ns, id) > (?, ?, ?)";
    }
    sql += q.newest_first ? " ORDER BY created_at DESC, created_at_ns DESC, id DESC LIMIT ?"
                          : " ORDER BY created_at, created_at_ns, id LIMIT ?";
    ReaderLease r(*this);
    JITBROKER_ASSIGN_OR_RETURN(sqlite3_stmt * s, r->Stmt(sql));
    StmtUse use(s);
    Binder b(s);
    const SplitTime now = Split(q.now);
    b.Int(now.seconds).Int(now.seconds).Int(now.nanos);
    for (const std::string& t : q.tiers) {
      b.Text(t);
    }
    if (!q.session_id.empty()) {
      b.Text(q.session_id);
    }
    if (!q.principal_id.empty()) {
      b.Text(q.principal_id);
    }
    if (exclude) {
      b.Text(q.exclude_principal_id);
      for (const std::string& t : q.exclude_principal_tiers) {
        b.Text(t);
      }
    }
    if (q.after) {
      b.Time(q.after->created_at).Text(q.after->grant_id);
    }
    b.Int(SqlLimit(q.limit));
    if (!b.ok()) {
      return std::unexpected(StoreError("bind", r->db.get()));
    }
    return Collect<GrantRecord>(r->db.get(), s, ReadGrant);
  }

  Result<PendingApprovalCounts> CountPendingApprovals(std::string_view session_id,
                                                      std::string_view principal_id,
                                                      TimePoint now) override {
    constexpr const char* kOpen =
        "state = 'pending' AND (expires_at IS NULL OR expires_at > ?3 OR "
        "(expires_at = ?3 AND expires_at_ns > ?4))";
    // The soonest expiry as unix nanoseconds (exact; in range until 2262,
    // as TimePoint itself).
    constexpr const char* kSoonest = "min(expires_at * 1000000000 + expires_at_ns)";
    const std::string sql =
        std::string("SELECT (SELECT count(*) FROM grants WHERE session_id = ?1 AND ") + kOpen +
        "), (SELECT " + kSoonest + " FROM grants WHERE session_id = ?1 AND " + kOpen +
        "), (SELECT count(*) FROM grants WHERE principal_id = ?2 AND " + kOpen + "), (SELECT " +
        kSoonest + " FROM grants WHERE principal_id = ?2 AND " + kOpen + ")";
    ReaderLease r(*this);
    JITBROKER_ASSIGN_OR_RETURN(sqlite3_stmt * s, r->Stmt(sql));
    StmtUse use(s);
    const SplitTime t = Split(now);
    Binder b(s);
    b.Text(session_id).Text(principal_id).Int(t.seconds).Int(t.nanos);
    if (!b.ok() || sqlite3_step(s) != SQLITE_ROW) {
      return std::unexpected(StoreError("count pending approvals", r->db.get()));
    }
    Row row(s);
    PendingApprovalCounts out;
    out.session = row.Int();
    if (std::optional<int64_t> e = row.OptInt()) {
      out.session_next_expiry = Join(0, *e);
    }
    out.principal = row.Int();
    if (std::optional<int64_t> e = row.OptInt()) {
      out.principal_next_expiry = Join(0, *e);
    }
    return out;
  }

  Result<std::vector<RevocationTask>> ListRevocationsDue(TimePoint now, size_t limit) override {
    ReaderLease r(*this);
    JITBROKER_ASSIGN_OR_RETURN(
        sqlite3_stmt * s,
        r->Stmt(
            "SELECT grant_id, issuer, sealed_handle, expires_at, expires_at_ns, attempts, "
            "next_attempt_at, next_attempt_at_ns, last_error FROM revocation_queue "
            "WHERE next_attempt_at <= ?1 AND (next_attempt_at < ?1 OR next_attempt_at_ns <= ?2) "
            "ORDER BY next_attempt_at, next_attempt_at_ns, grant_id LIMIT ?3"));
    StmtUse use(s);
    const SplitTime due = Split(now);
    Binder(s).Int(due.seconds).Int(due.nanos).Int(SqlLimit(limit));
    return Collect<RevocationTask>(r->db.get(), s, [](sqlite3_stmt* st) -> Result<RevocationTask> {
      Row row(st);
      RevocationTask t;
      t.grant_id = row.Text();
      t.issuer = row.Text();
      t.sealed_handle = row.Text();
      t.expires_at = row.Time();
      t.attempts = row.Int();
      t.next_attempt_at = row.Time();
      t.last_error = row.Text();
      return t;
    });
  }

  Result<std::vector<AuditRecord>> ListAudit(const AuditFilter& f) override {
    if (f.chain_id != kDefaultAuditChain) {
      return std::vector<AuditRecord>();  // a chain this store never holds
    }
    std::string sql = std::string("SELECT ") + kAuditColumns + " FROM audit WHERE seq > ?";
    if (!f.session_id.empty()) {
      sql += " AND session_id = ?";
    }
    if (!f.principal_id.empty()) {
      sql += " AND principal_id = ?";
    }
    if (f.since) {
      sql += " AND ts >= ?";
    }
    if (f.until) {
      sql += " AND ts <= ?";
    }
    sql += " ORDER BY seq LIMIT ?";
    ReaderLease r(*this);
    JITBROKER_ASSIGN_OR_RETURN(sqlite3_stmt * s, r->Stmt(sql));
    StmtUse use(s);
    Binder b(s);
    b.Int(f.after_seq);
    if (!f.session_id.empty()) {
      b.Text(f.session_id);
    }
    if (!f.principal_id.empty()) {
      b.Text(f.principal_id);
    }
    if (f.since) {
      b.Int(Split(*f.since).seconds);
    }
    if (f.until) {
      b.Int(Split(*f.until).seconds);
    }
    b.Int(SqlLimit(f.limit));
    JITBROKER_ASSIGN_OR_RETURN(std::vector<AuditRecord> out,
                               Collect<AuditRecord>(r->db.get(), s, ReadAudit));
    for (AuditRecord& rec : out) {
      rec.chain_id = f.chain_id;
    }
    return out;
  }

  // --- CI token replay protection (oidc_replay) ---------------------------

  Result<bool> ReplayReserved(std::string_view key, TimePoint now) override {
    const SplitTime t = Split(now);
    ReaderLease r(*this);
    JITBROKER_ASSIGN_OR_RETURN(
        sqlite3_stmt * s, r->Stmt("SELECT 1 FROM oidc_replay WHERE replay_key = ?1 AND "
                                  "(expires_at > ?2 OR (expires_at = ?2 AND expires_at_ns > ?3))"));
    StmtUse use(s);
    Binder(s).Text(key).Int(t.seconds).Int(t.nanos);
    const int rc = sqlite3_step(s);
    if (rc == SQLITE_ROW) {
      return true;
    }
    if (rc != SQLITE_DONE) {
      return std::unexpected(StoreError("replay lookup", r->db.get()));
    }
    return false;
  }

  Result<size_t> PruneReplayReservations(TimePoint now, size_t limit) override {
    const SplitTime t = Split(now);
    std::lock_guard lock(writer_mu_);
    sqlite3* w = writer_.get();
    // One statement in autocommit mode: its own durable transaction.
    JITBROKER_ASSIGN_OR_RETURN(
        StmtPtr s,
        Prepare(w,
                "DELETE FROM oidc_replay WHERE replay_key IN (SELECT replay_key FROM oidc_replay "
                "WHERE expires_at < ?1 OR (expires_at = ?1 AND expires_at_ns <= ?2) "
                "ORDER BY expires_at, expires_at_ns LIMIT ?3)"));
    Binder b(s.get());
    b.Int(t.seconds).Int(t.nanos).Int(SqlLimit(limit));
    if (!b.ok() || sqlite3_step(s.get()) != SQLITE_DONE) {
      return std::unexpected(StoreError("prune replay reservations", w));
    }
    return static_cast<size_t>(sqlite3_changes(w));
  }

  // The store's clock is this host's: the processes sharing a file share it.
  Result<bool> TryLease(std::string_view key, Seconds duration) override {
    const int64_t now = std::chrono::duration_cast<std::chrono::nanoseconds>(
                            std::chrono::system_clock::now().time_since_epoch())
                            .count();
    const int64_t until =
        now + std::chrono::duration_cast<std::chrono::nanoseconds>(duration).count();
    std::lock_guard lock(writer_mu_);
    sqlite3* w = writer_.get();
    if (!take_lease_) {
      // Prepared at first use, like reserve_replay_ (older schemas in tests).
      JITBROKER_ASSIGN_OR_RETURN(
          take_lease_,
          Prepare(
              w,
              "INSERT INTO leases (lease_key, owner, until_ns) VALUES (?1, ?2, ?3) "
              "ON CONFLICT(lease_key) DO UPDATE SET owner = excluded.owner, until_ns = "
              "excluded.until_ns WHERE leases.owner = excluded.owner OR leases.until_ns <= ?4"));
      JITBROKER_ASSIGN_OR_RETURN(prune_leases_,
                                 Prepare(w, "DELETE FROM leases WHERE until_ns < ?1"));
    }
    if (++lease_calls_ % kLeasePruneEvery == 0) {
      StmtUse use(prune_leases_.get());
      Binder(use.get()).Int(now - kLeaseKeepNs);
      if (sqlite3_step(use.get()) != SQLITE_DONE) {
        return std::unexpected(StoreError("prune leases", w));
      }
    }
    StmtUse use(take_lease_.get());
    Binder b(use.get());
    b.Text(key).Text(lease_owner_).Int(until).Int(now);
    if (!b.ok() || sqlite3_step(use.get()) != SQLITE_DONE) {
      return std::unexpected(StoreError("take lease", w));
    }
    return sqlite3_changes(w) == 1;
  }

  // A file on this host: its clock is this host's.
  Result<std::optional<TimePoint>> ServerTime() override { return std::optional<TimePoint>(); }

  // One broker process per file: no other writer to hear from.
  void WatchChanges(std::function<void()>) override {}

  Status Ping() override {
    ReaderLease r(*this);
    JITBROKER_ASSIGN_OR_RETURN(sqlite3_stmt * s, r->Stmt("SELECT 1"));
    StmtUse use(s);
    if (sqlite3_step(s) != SQLITE_ROW) {
      return std::unexpected(StoreError("ping", r->db.get()));
    }
    return OkStatus();
  }

 private:
  SqliteStore() = default;

  // Borrows a reader connection for the scope; waits while all are in use.
  class ReaderLease {
   public:
    explicit ReaderLease(SqliteStore& store) : store_(store) {
      std::unique_lock lock(store_.readers_mu_);
      store_.readers_cv_.wait(lock, [&] { return !store_.free_readers_.empty(); });
      reader_ = store_.free_readers_.back();
      store_.free_readers_.pop_back();
    }
    ~ReaderLease() {
      {
        std::lock_guard lock(store_.readers_mu_);
        store_.free_readers_.push_back(reader_);
      }
      store_.readers_cv_.notify_one();
    }
    ReaderLease(const ReaderLease&) = delete;
    ReaderLease& operator=(const ReaderLease&) = delete;
    Reader* operator->() const { return reader_; }

   private:
    SqliteStore& store_;
    Reader* reader_ = nullptr;
  };

  // Checkpoints run on their own connection and thread, so the WAL is copied
  // into the database file (and that file fsync'd) without holding up the
  // group commit that triggered them: the writer's automatic checkpoint is
  // off, and a commit that leaves the WAL over kCheckpointPages wakes the
  // checkpointer (which also runs every kCheckpointInterval). PASSIVE never
  // blocks the writer or readers; the WAL is rewound by the next write after
  // a complete checkpoint. Durability is unchanged: commits are fsync'd in
  // the WAL.
  static constexpr int kCheckpointPages = 1000;
  static constexpr auto kCheckpointInterval = std::chrono::seconds(1);

  Status StartCheckpointer(const SqliteOptions& options) {
    sqlite3* w = writer_.get();
    JITBROKER_RETURN_IF_ERROR(Exec(w, "PRAGMA wal_autocheckpoint=0"));
    JITBROKER_ASSIGN_OR_RETURN(checkpoint_db_, OpenConnection(options, /*read_only=*/false));
    JITBROKER_RETURN_IF_ERROR(Exec(checkpoint_db_.get(), "PRAGMA synchronous=FULL"));
    sqlite3_wal_hook(
        w,
        [](void* self, sqlite3*, const char*, int pages) -> int {
          if (pages >= kCheckpointPages) {
            static_cast<SqliteStore*>(self)->checkpoint_cv_.notify_one();
          }
          return SQLITE_OK;
        },
        this);
    checkpointer_ = std::thread([this] { RunCheckpointer(); });
    return OkStatus();
  }

  void RunCheckpointer() {
    std::unique_lock lock(checkpoint_mu_);
    while (!checkpoint_stop_) {
      checkpoint_cv_.wait_for(lock, kCheckpointInterval);
      if (checkpoint_stop_) {
        break;
      }
      lock.unlock();
      int wal_pages = 0;
      int copied = 0;
      const int rc = sqlite3_wal_checkpoint_v2(checkpoint_db_.get(), nullptr,
                                               SQLITE_CHECKPOINT_PASSIVE, &wal_pages, &copied);
      if (rc != SQLITE_OK && rc != SQLITE_BUSY) {
        // Not fatal: commits stay durable in the WAL; the next round retries.
        checkpoint_failures_.fetch_add(1, std::memory_order_relaxed);
      }
      lock.lock();
    }
  }

  void StopCheckpointer() {
    if (!checkpointer_.joinable()) {
      return;
    }
    {
      std::lock_guard lock(checkpoint_mu_);
      checkpoint_stop_ = true;
    }
    checkpoint_cv_.notify_one();
    checkpointer_.join();
    sqlite3_wal_hook(writer_.get(), nullptr, nullptr);
    checkpoint_db_.reset();
  }

  Status PrepareWriter() {
    sqlite3* w = writer_.get();
    JITBROKER_ASSIGN_OR_RETURN(begin_, Prepare(w, "BEGIN IMMEDIATE"));
    JITBROKER_ASSIGN_OR_RETURN(commit_, Prepare(w, "COMMIT"));
    JITBROKER_ASSIGN_OR_RETURN(rollback_, Prepare(w, "ROLLBACK"));
    JITBROKER_ASSIGN_OR_RETURN(upsert_session_, Prepare(w, UpsertSql("sessions", kSessionColumns)));
    JITBROKER_ASSIGN_OR_RETURN(upsert_grant_, Prepare(w, UpsertSql("grants", kGrantColumns)));
    JITBROKER_ASSIGN_OR_RETURN(
        upsert_revocation_,
        Prepare(
            w,
            "INSERT INTO revocation_queue (grant_id, issuer, sealed_handle, expires_at, "
            "expires_at_ns, attempts, next_attempt_at, next_attempt_at_ns, last_error) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT(grant_id) DO UPDATE SET "
            "issuer = excluded.issuer, sealed_handle = excluded.sealed_handle, "
            "expires_at = excluded.expires_at, expires_at_ns = excluded.expires_at_ns, "
            "attempts = excluded.attempts, next_attempt_at = excluded.next_attempt_at, "
            "next_attempt_at_ns = excluded.next_attempt_at_ns, last_error = excluded.last_error"));
    JITBROKER_ASSIGN_OR_RETURN(delete_revocation_,
                               Prepare(w, "DELETE FROM revocation_queue WHERE grant_id = ?"));
    JITBROKER_ASSIGN_OR_RETURN(session_state_,
                               Prepare(w, "SELECT state FROM sessions WHERE id = ?"));
    JITBROKER_ASSIGN_OR_RETURN(grant_state_, Prepare(w, "SELECT state FROM grants WHERE id = ?"));
    JITBROKER_ASSIGN_OR_RETURN(
        insert_audit_,
        Prepare(w,
                "INSERT INTO audit (seq, hash, prev_hash, session_id, principal_id, ts, body) "
                "VALUES (?, ?, ?, ?, ?, ?, ?)"));
    return OkStatus();
  }

  // Inserts each reservation unless its key is held by an unexpired row
  // (the upsert's WHERE leaves such a row alone and changes nothing).
  static constexpr const char* kReserveReplaySql =
      "INSERT INTO oidc_replay (replay_key, expires_at, expires_at_ns) VALUES (?1, ?2, ?3) "
      "ON CONFLICT(replay_key) DO UPDATE SET expires_at = excluded.expires_at, "
      "expires_at_ns = excluded.expires_at_ns WHERE oidc_replay.expires_at < ?4 OR "
      "(oidc_replay.expires_at = ?4 AND oidc_replay.expires_at_ns <= ?5)";

  Status ApplyReplayReservations(const std::vector<ReplayReservation>& reservations) {
    sqlite3* w = writer_.get();
    if (!reservations.empty() && !reserve_replay_) {
      // Prepared at first use (under writer_mu_), so a database held at an
      // older schema for an upgrade test opens without the table.
      JITBROKER_ASSIGN_OR_RETURN(reserve_replay_, Prepare(w, kReserveReplaySql));
    }
    for (const ReplayReservation& r : reservations) {
      StmtUse use(reserve_replay_.get());
      Binder b(use.get());
      b.Text(r.key).Time(r.expires_at).Time(r.reserved_at);
      if (!b.ok() || sqlite3_step(use.get()) != SQLITE_DONE) {
        return std::unexpected(StoreError("reserve replay key", w));
      }
      if (sqlite3_changes(w) == 0) {
        return std::unexpected(
            AlreadyExists("replay_reserved", "the subject token was already exchanged"));
      }
    }
    return OkStatus();
  }

  // Inside Apply's transaction (so after the writes of earlier batches and
  // under SQLite's write lock, which serialises writers of every process):
  // the current state of each row named, against what the batch expects.
  Status CheckPreconditions(const std::vector<StatePrecondition>& preconditions) {
    sqlite3* w = writer_.get();
    for (const StatePrecondition& p : preconditions) {
      const bool session = p.record == StatePrecondition::Record::kSession;
      StmtUse use(session ? session_state_.get() : grant_state_.get());
      Binder b(use.get());
      b.Text(p.id);
      if (!b.ok()) {
        return std::unexpected(StoreError("bind", w));
      }
      const int rc = sqlite3_step(use.get());
      std::optional<std::string> found;
      if (rc == SQLITE_ROW) {
        found = Row(use.get()).Text();
      } else if (rc != SQLITE_DONE) {
        return std::unexpected(StoreError("read state", w));
      }
      const bool holds = p.state.empty() ? !found.has_value() : found == p.state;
      if (!holds) {
        return std::unexpected(StateConflictError(session ? "session" : "grant", p.id, p.state,
                                                  found ? *found : std::string()));
      }
    }
    return OkStatus();
  }

  // Runs a writer statement that returns no rows.
  Status StepDone(sqlite3_stmt* s, std::string_view what) {
    StmtUse use(s);
    if (sqlite3_step(s) != SQLITE_DONE) {
      return std::unexpected(StoreError(what, writer_.get()));
    }
    return OkStatus();
  }

  Status ApplyInTransaction(std::span<const WriteBatch> batches,
                            std::span<const AuditRecord> audit) {
    sqlite3* w = writer_.get();
    for (const AuditRecord& rec : audit) {
      if (rec.chain_id != kDefaultAuditChain) {
        return std::unexpected(OtherChain(rec.chain_id));
      }
    }
    try {
      for (const WriteBatch& batch : batches) {
        JITBROKER_RETURN_IF_ERROR(CheckPreconditions(batch.preconditions));
        for (const SessionRecord& rec : batch.sessions) {
          const std::string text = SessionDataText(rec);
          StmtUse use(upsert_session_.get());
          Binder b(use.get());
          BindSessionRow(b, rec, text);
          if (!b.ok() || sqlite3_step(use.get()) != SQLITE_DONE) {
            return std::unexpected(StoreError("upsert session", w));
          }
        }
        for (const GrantRecord& rec : batch.grants) {
          const std::string text = GrantDataText(rec);
          StmtUse use(upsert_grant_.get());
          Binder b(use.get());
          BindGrantRow(b, rec, text);
          if (!b.ok() || sqlite3_step(use.get()) != SQLITE_DONE) {
            return std::unexpected(StoreError("upsert grant", w));
          }
        }
        for (const RevocationTask& t : batch.revocations) {
          StmtUse use(upsert_revocation_.get());
          Binder b(use.get());
          b.Text(t.grant_id)
              .Text(t.issuer)
              .Text(t.sealed_handle)
              .Time(t.expires_at)
              .Int(t.attempts)
              .Time(t.next_attempt_at)
              .Text(t.last_error);
          if (!b.ok() || sqlite3_step(use.get()) != SQLITE_DONE) {
            return std::unexpected(StoreError("upsert revocation", w));
          }
        }
        for (const std::string& id : batch.revocations_done) {
          StmtUse use(delete_revocation_.get());
          Binder b(use.get());
          b.Text(id);
          if (!b.ok() || sqlite3_step(use.get()) != SQLITE_DONE) {
            return std::unexpected(StoreError("delete revocation", w));
          }
        }
        JITBROKER_RETURN_IF_ERROR(ApplyReplayReservations(batch.replay_reservations));
      }
      std::string dumped;
      for (const AuditRecord& rec : audit) {
        // ChainRecord's text is the canonical body; dump only without it.
        if (rec.text.empty()) {
          dumped = DumpJson(rec.body);
        }
        const std::string& body = rec.text.empty() ? dumped : rec.text;
        const AuditIndex& index = rec.index;
        std::optional<int64_t> ts;
        if (index.ts) {
          ts = Split(*index.ts).seconds;
        }
        // Everything bound below outlives `use`: bind without copies.
        StmtUse use(insert_audit_.get());
        Binder b(use.get());
        b.Int(rec.seq)
            .StaticText(rec.hash)
            .StaticText(rec.prev_hash)
            .OptStaticText(index.session_id.empty() ? nullptr : &index.session_id)
            .OptStaticText(index.principal_id.empty() ? nullptr : &index.principal_id)
            .OptInt(ts)
            .StaticText(body);
        if (!b.ok() || sqlite3_step(use.get()) != SQLITE_DONE) {
          return std::unexpected(StoreError("insert audit", w));
        }
      }
    } catch (const std::exception& e) {
      return std::unexpected(Unavailable("store_unavailable", "the store is unavailable",
                                         std::string("encoding: ") + e.what()));
    }
    return OkStatus();
  }

  // Drops the cached rows of the sessions `batches` wrote (all rows when
  // `all`: after a failed Apply nothing cached is trusted) and makes reads
  // that began before this call leave the cache alone. Called by Apply after
  // its commit or rollback.
  void ForgetSessions(std::span<const WriteBatch> batches, bool all) {
    std::lock_guard lock(sessions_.mu);
    bool wrote = all;
    for (const WriteBatch& b : batches) {
      for (const SessionRecord& rec : b.sessions) {
        sessions_.rows.erase(rec.id);
        wrote = true;
      }
    }
    if (all) {
      sessions_.rows.clear();
    }
    if (wrote) {
      ++sessions_.generation;
    }
  }

  // GetSession's cache: the grant path reads its session on every request.
  // Exact because this process is the file's only writer (the audit file's
  // lock keeps a second broker out of the data directory) and every write of
  // a session goes through Apply, which drops the rows it writes. Rows are
  // only ever rows read from the file; a read that an Apply overtook is not
  // kept (generation). Bounded: a full cache drops an arbitrary row.
  struct SessionCache {
    static constexpr size_t kMaxRows = 4096;
    std::mutex mu;
    uint64_t generation = 0;                                 // guarded by mu
    std::map<std::string, SessionRecord, std::less<>> rows;  // guarded by mu
    uint64_t hits = 0;                                       // guarded by mu
    uint64_t misses = 0;                                     // guarded by mu
  };
  mutable SessionCache sessions_;

  std::mutex writer_mu_;
  DbPtr writer_;
  StmtPtr begin_;
  StmtPtr commit_;
  StmtPtr rollback_;
  StmtPtr upsert_session_;
  StmtPtr upsert_grant_;
  StmtPtr insert_audit_;
  StmtPtr upsert_revocation_;
  StmtPtr delete_revocation_;
  StmtPtr session_state_;
  StmtPtr grant_state_;
  StmtPtr reserve_replay_;    // guarded by writer_mu_; prepared at first use
  StmtPtr take_lease_;        // guarded by writer_mu_; prepared at first use
  StmtPtr prune_leases_;      // guarded by writer_mu_; prepared at first use
  uint64_t lease_calls_ = 0;  // guarded by writer_mu_
  // Leases ended this long ago are deleted (every kLeasePruneEvery takes).
  static constexpr int64_t kLeaseKeepNs = 3600LL * 1'000'000'000;
  static constexpr uint64_t kLeasePruneEvery = 256;
  const std::string lease_owner_ = NewHandleId();

  std::mutex readers_mu_;
  std::condition_variable readers_cv_;
  std::vector<std::unique_ptr<Reader>> readers_;
  std::vector<Reader*> free_readers_;

  DbPtr checkpoint_db_;
  std::thread checkpointer_;
  std::mutex checkpoint_mu_;
  std::condition_variable checkpoint_cv_;
  bool checkpoint_stop_ = false;
  std::atomic<uint64_t> checkpoint_failures_{0};
};

Result<std::unique_ptr<Store>> OpenSqliteStore(const SqliteOptions& options) {
  return SqliteStore::Open(options);
}

}  // namespace jitbroker::store
