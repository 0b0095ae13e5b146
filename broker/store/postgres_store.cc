// PostgresStore (broker/store/postgres_store.h): persistence only, no
// business rules. Layout:
//   - migrations keyed by schema_version, applied under a session advisory
//     lock on a connection of their own (two replicas starting at once:
//     one migrates, the other waits and finds the work done);
//   - one writer connection guarded by writer_mu_ for Apply (retried whole
//     on a deadlock or serialization failure between replicas);
//   - a pool (broker/store/pg.h) for reads and the other writes;
//   - rows hold the same `data` JSON as SQLite's (broker/store/record_codec.h).
#include "broker/store/postgres_store.h"

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <exception>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <span>
#include <stop_token>
#include <string>
#include <string_view>
#include <thread>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "broker/store/pg.h"
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
  id                 text PRIMARY KEY,
  token_sha256       text NOT NULL,
  principal_id       text NOT NULL,
  agent_id           text NOT NULL,
  task_id            text NOT NULL,
  task_description   text NOT NULL,
  state              text NOT NULL,
  created_at         bigint NOT NULL,  -- unix nanoseconds, as every time here
  expires_at         bigint NOT NULL,
  heartbeat_seconds  bigint NOT NULL,
  heartbeat_deadline bigint NOT NULL,
  ended_at           bigint,
  end_reason         text NOT NULL,
  last_progress      text NOT NULL,
  data               text NOT NULL     -- JSON: {"extra":…,"scope":…}
);
CREATE INDEX sessions_created ON sessions (created_at, id);
CREATE INDEX sessions_principal ON sessions (principal_id, created_at, id);
CREATE INDEX sessions_agent ON sessions (agent_id, created_at, id);
CREATE INDEX sessions_active_expires ON sessions (expires_at, id) WHERE state = 'active';
CREATE INDEX sessions_active_heartbeat ON sessions (heartbeat_deadline) WHERE state = 'active';

CREATE TABLE grants (
  id                    text PRIMARY KEY,
  session_id            text NOT NULL,
  principal_id          text NOT NULL,
  agent_id              text NOT NULL,
  task_id               text NOT NULL,
  tool                  text NOT NULL,
  operation             text NOT NULL,
  resource              text NOT NULL,
  issuer                text NOT NULL,
  requested_ttl_seconds bigint,
  ttl_seconds           bigint NOT NULL,
  tier                  text NOT NULL,
  state                 text NOT NULL,
  revocability          text NOT NULL,
  credential_type       text NOT NULL,
  credential_sha256     text NOT NULL,
  request_digest        text NOT NULL,
  approval_id           text NOT NULL,
  sealed_handle         text NOT NULL,
  created_at            bigint NOT NULL,
  expires_at            bigint,
  revoked_at            bigint,
  revoke_outcome        text NOT NULL,
  data                  text NOT NULL  -- JSON: {"decision","extra","parameters","scope"}
);
CREATE INDEX grants_session ON grants (session_id, created_at, id);
CREATE INDEX grants_state_expires ON grants (state, expires_at NULLS FIRST, created_at, id);
CREATE INDEX grants_pending_session ON grants (session_id, expires_at) WHERE state = 'pending';
CREATE INDEX grants_pending_principal ON grants (principal_id, expires_at) WHERE state = 'pending';
CREATE INDEX grants_pending_created ON grants (created_at, id) WHERE state = 'pending';

CREATE TABLE audit (
  chain_id     text NOT NULL,
  seq          bigint NOT NULL,
  hash         text NOT NULL,
  prev_hash    text NOT NULL,
  session_id   text,
  principal_id text,
  ts           bigint,  -- unix seconds of the record's timestamp
  body         text NOT NULL,
  PRIMARY KEY (chain_id, seq)
);
CREATE INDEX audit_session ON audit (chain_id, session_id, seq);
CREATE INDEX audit_principal ON audit (chain_id, principal_id, seq);
CREATE INDEX audit_ts ON audit (chain_id, ts);

CREATE TABLE revocation_queue (
  grant_id        text PRIMARY KEY,
  issuer          text NOT NULL,
  sealed_handle   text NOT NULL,
  expires_at      bigint NOT NULL,
  attempts        bigint NOT NULL,
  next_attempt_at bigint NOT NULL,
  last_error      text NOT NULL
);
CREATE INDEX revocation_queue_next ON revocation_queue (next_attempt_at, grant_id);

CREATE TABLE oidc_replay (
  replay_key text PRIMARY KEY,
  expires_at bigint NOT NULL
);
CREATE INDEX oidc_replay_expires ON oidc_replay (expires_at);
)sql"},
    // Work leases between replicas (Store::TryLease), on the database's clock.
    {2, R"sql(
CREATE TABLE leases (
  lease_key text PRIMARY KEY,
  owner     text NOT NULL,
  until     timestamptz NOT NULL
);
)sql"},
    // Each chain's head, moved in the transaction that appends to it, so the
    // chains are listed without scanning the records.
    {3, R"sql(
CREATE TABLE audit_chains (
  chain_id text PRIMARY KEY,
  seq      bigint NOT NULL,
  hash     text NOT NULL
);
INSERT INTO audit_chains (chain_id, seq, hash)
  SELECT DISTINCT ON (chain_id) chain_id, seq, hash FROM audit ORDER BY chain_id, seq DESC;
)sql"},
};

constexpr int kLatestVersion = kMigrations[std::size(kMigrations) - 1].version;

// The session advisory lock migrations run under ("jitbroker" in ASCII).
constexpr int64_t kMigrationLock = 0x6a697462726f6b;

// Apply's attempts when replicas deadlock or a serialization check fails.
constexpr int kApplyAttempts = 4;

// ---------------------------------------------------------------------------
// Small helpers.

Error StoreError(std::string_view what, const pg::PgError& e) {
  std::string detail(what);
  detail += ": ";
  if (!e.sqlstate.empty()) {
    detail += "[" + e.sqlstate + "] ";
  }
  detail += e.message;
  return Unavailable("store_unavailable", "the store is unavailable", std::move(detail));
}

int64_t Ns(TimePoint t) {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(t.time_since_epoch()).count();
}

TimePoint FromNs(int64_t ns) {
  return TimePoint(std::chrono::duration_cast<TimePoint::duration>(std::chrono::nanoseconds(ns)));
}

int64_t FloorSeconds(TimePoint t) {
  return std::chrono::floor<std::chrono::seconds>(t.time_since_epoch()).count();
}

// A statement built piece by piece: each value appends its placeholder.
struct Sql {
  std::string text;
  pg::Params params;
  int n = 0;

  Sql& Raw(std::string_view s) {
    text += s;
    return *this;
  }
  Sql& Text(std::string_view v) {
    params.Text(v);
    return Placeholder();
  }
  Sql& Int(int64_t v) {
    params.Int(v);
    return Placeholder();
  }
  // LIMIT NULL is no limit.
  Sql& Limit(size_t limit) {
    text += " LIMIT ";
    if (limit == 0 || limit > static_cast<size_t>(INT64_MAX)) {
      params.Null();
    } else {
      params.Int(static_cast<int64_t>(limit));
    }
    return Placeholder();
  }

 private:
  Sql& Placeholder() {
    text += "$" + std::to_string(++n);
    return *this;
  }
};

// Reads the columns of one row in order; a malformed integer marks it bad.
class Row {
 public:
  Row(const pg::Result& r, int row) : r_(r), row_(row) {}
  std::string Text() {
    const int c = col_++;
    return std::string(r_.Text(row_, c));
  }
  std::optional<std::string> OptText() {
    if (r_.IsNull(row_, col_)) {
      ++col_;
      return std::nullopt;
    }
    return Text();
  }
  int64_t Int() {
    const int c = col_++;
    std::optional<int64_t> v = r_.Int(row_, c);
    if (!v) {
      bad_ = true;
      return 0;
    }
    return *v;
  }
  std::optional<int64_t> OptInt() {
    if (r_.IsNull(row_, col_)) {
      ++col_;
      return std::nullopt;
    }
    return Int();
  }
  TimePoint Time() { return FromNs(Int()); }
  std::optional<TimePoint> OptTime() {
    std::optional<int64_t> v = OptInt();
    return v ? std::optional<TimePoint>(FromNs(*v)) : std::nullopt;
  }
  bool bad() const { return bad_; }

 private:
  const pg::Result& r_;
  int row_;
  int col_ = 0;
  bool bad_ = false;
};

constexpr const char* kSessionColumns =
    "id, token_sha256, principal_id, agent_id, task_id, task_description, state, created_at, "
    "expires_at, heartbeat_seconds, heartbeat_deadline, ended_at, end_reason, last_progress, data";

constexpr const char* kGrantColumns =
    "id, session_id, principal_id, agent_id, task_id, tool, operation, resource, issuer, "
    "requested_ttl_seconds, ttl_seconds, tier, state, revocability, credential_type, "
    "credential_sha256, request_digest, approval_id, sealed_handle, created_at, expires_at, "
    "revoked_at, revoke_outcome, data";

constexpr const char* kAuditColumns = "seq, prev_hash, hash, session_id, principal_id, ts, body";

constexpr const char* kRevocationColumns =
    "grant_id, issuer, sealed_handle, expires_at, attempts, next_attempt_at, last_error";

// INSERT … ON CONFLICT (key) DO UPDATE SET every other column.
std::string UpsertSql(std::string_view table, std::string_view columns, std::string_view key) {
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
    sql += (i == 0 ? "$" : ", $") + std::to_string(i + 1);
  }
  sql += ") ON CONFLICT (" + std::string(key) + ") DO UPDATE SET ";
  bool first = true;
  for (const std::string& n : names) {
    if (n == key) {
      continue;
    }
    sql += first ? "" : ", ";
    sql += n + " = EXCLUDED." + n;
    first = false;
  }
  return sql;
}

Result<SessionRecord> ReadSession(const pg::Result& res, int i) {
  Row r(res, i);
  JITBROKER_ASSIGN_OR_RETURN(SessionRecord rec, ReadSessionRow(r));
  if (r.bad()) {
    return std::unexpected(CorruptRow("sessions", "a number column is not an integer"));
  }
  return rec;
}

Result<GrantRecord> ReadGrant(const pg::Result& res, int i) {
  Row r(res, i);
  JITBROKER_ASSIGN_OR_RETURN(GrantRecord rec, ReadGrantRow(r));
  if (r.bad()) {
    return std::unexpected(CorruptRow("grants", "a number column is not an integer"));
  }
  return rec;
}

Result<AuditRecord> ReadAudit(const pg::Result& res, int i) {
  Row r(res, i);
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
  if (r.bad()) {
    return std::unexpected(CorruptRow("audit", "a number column is not an integer"));
  }
  return rec;
}

Result<RevocationTask> ReadRevocation(const pg::Result& res, int i) {
  Row r(res, i);
  RevocationTask t;
  t.grant_id = r.Text();
  t.issuer = r.Text();
  t.sealed_handle = r.Text();
  t.expires_at = r.Time();
  t.attempts = r.Int();
  t.next_attempt_at = r.Time();
  t.last_error = r.Text();
  if (r.bad()) {
    return std::unexpected(CorruptRow("revocation_queue", "a number column is not an integer"));
  }
  return t;
}

template <class T, class ReadFn>
Result<std::vector<T>> Collect(const pg::Result& res, ReadFn read) {
  std::vector<T> out;
  out.reserve(static_cast<size_t>(res.rows()));
  for (int i = 0; i < res.rows(); ++i) {
    JITBROKER_ASSIGN_OR_RETURN(T item, read(res, i));
    out.push_back(std::move(item));
  }
  return out;
}

// pg::Params with times as unix nanoseconds: the Binder of
// BindSessionRow / BindGrantRow (record_codec.h).
struct RowParams {
  pg::Params params;
  RowParams& Text(std::string_view v) {
    params.Text(v);
    return *this;
  }
  RowParams& Int(int64_t v) {
    params.Int(v);
    return *this;
  }
  RowParams& OptInt(const std::optional<int64_t>& v) {
    params.OptInt(v);
    return *this;
  }
  RowParams& Time(TimePoint t) { return Int(Ns(t)); }
  RowParams& OptTime(const std::optional<TimePoint>& t) {
    return OptInt(t ? std::optional<int64_t>(Ns(*t)) : std::nullopt);
  }
};

pg::Params SessionParams(const SessionRecord& rec) {
  RowParams p;
  BindSessionRow(p, rec, SessionDataText(rec));
  return std::move(p.params);
}

pg::Params GrantParams(const GrantRecord& rec) {
  RowParams p;
  BindGrantRow(p, rec, GrantDataText(rec));
  return std::move(p.params);
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

// Applies the migrations after the stored version, each in its own
// transaction, holding the migration lock for the whole run so a replica
// starting at the same moment waits and then finds nothing to do.
Status Migrate(pg::Connection& c, int target) {
  const auto fail = [](std::string_view what, const pg::PgError& e) {
    return Status(std::unexpected(StoreError(what, e)));
  };
  pg::Params lock_key;
  lock_key.Int(kMigrationLock);
  if (auto r = c.Query("SELECT pg_advisory_lock($1)", lock_key); !r) {
    return fail("migration lock", r.error());
  }
  const auto run = [&]() -> Status {
    if (auto r = c.Exec("CREATE TABLE IF NOT EXISTS schema_version (version integer NOT NULL)");
        !r) {
      return fail("schema_version", r.error());
    }
    auto current = c.Exec("SELECT coalesce(max(version), 0) FROM schema_version");
    if (!current) {
      return fail("schema_version", current.error());
    }
    const int64_t initial = current->Int(0, 0).value_or(-1);
    JITBROKER_RETURN_IF_ERROR(CheckVersion(initial));
    for (const Migration& m : kMigrations) {
      if (m.version <= initial || (target > 0 && m.version > target)) {
        continue;
      }
      auto tx = pg::Transaction::Begin(c);
      if (!tx) {
        return fail("begin migration", tx.error());
      }
      const std::string what = "migration " + std::to_string(m.version);
      if (auto r = c.Exec(m.sql); !r) {
        return fail(what, r.error());
      }
      if (auto r = c.Exec("DELETE FROM schema_version; INSERT INTO schema_version VALUES (" +
                          std::to_string(m.version) + ")");
          !r) {
        return fail(what, r.error());
      }
      if (auto r = tx->Commit(); !r) {
        return fail(what, r.error());
      }
    }
    return OkStatus();
  };
  Status st = run();
  (void)c.Query("SELECT pg_advisory_unlock($1)", lock_key);
  return st;
}

bool Retryable(const pg::PgError& e) {
  return e.sqlstate == pg::kDeadlockDetected || e.sqlstate == pg::kSerializationFailure;
}

}  // namespace

// ---------------------------------------------------------------------------

class PostgresStore final : public Store {
 public:
  static Result<std::unique_ptr<Store>> Open(PostgresOptions options) {
    if (options.dsn.empty()) {
      return std::unexpected(InvalidArgument("invalid_config", "store.postgres.dsn is empty"));
    }
    std::unique_ptr<PostgresStore> store(new PostgresStore(std::move(options)));
    {
      auto c = pg::Connection::Open(store->pool_.dsn(), store->pool_.connect_options());
      if (!c) {
        return std::unexpected(StoreError("connect", c.error()));
      }
      JITBROKER_RETURN_IF_ERROR(Migrate(**c, store->schema_target_));
    }
    JITBROKER_RETURN_IF_ERROR(store->Ping());
    return std::unique_ptr<Store>(std::move(store));
  }

  Status Apply(std::span<const WriteBatch> batches, std::span<const AuditRecord> audit) override {
    std::lock_guard lock(writer_mu_);
    for (int attempt = 1;; ++attempt) {
      if (writer_ == nullptr || !writer_->ok()) {
        const bool reconnect = writer_ != nullptr;
        writer_.reset();
        auto c = pg::Connection::Open(pool_.dsn(), pool_.connect_options());
        if (!c) {
          return std::unexpected(StoreError("connect", c.error()));
        }
        writer_ = std::move(*c);
        if (reconnect) {
          JITBROKER_RETURN_IF_ERROR(VerifyClaims());
        }
      }
      std::optional<pg::PgError> retry;
      const auto start = std::chrono::steady_clock::now();
      Status st = ApplyOnce(batches, audit, retry);
      // A refused precondition or replay key is an answer, not a failure.
      applies_.Done(start, st || st.error().code != ErrorCode::kUnavailable);
      if (st || !retry || attempt >= kApplyAttempts) {
        return st;
      }
      apply_retries_.fetch_add(1, std::memory_order_relaxed);
      // Another replica's transaction deadlocked with this one, which the
      // server rolled back: nothing of it was written; run it again.
    }
  }

  // A session advisory lock per chain, held on a connection of its own for
  // as long as this store lives (released by the server when that
  // connection ends, so a replica that died frees its chain).
  Status ClaimAuditChain(std::string_view chain_id) override {
    std::lock_guard lock(claim_mu_);
    if (claimed_.contains(std::string(chain_id))) {
      return OkStatus();
    }
    if (claim_conn_ == nullptr || !claim_conn_->ok()) {
      JITBROKER_RETURN_IF_ERROR(ReclaimLocked());
    }
    JITBROKER_RETURN_IF_ERROR(TryLockChainLocked(chain_id));
    claimed_.insert(std::string(chain_id));
    return OkStatus();
  }

  Result<std::vector<AuditChainHead>> ListAuditChains() override {
    Sql q;
    q.Raw("SELECT chain_id, seq, hash FROM audit_chains ORDER BY chain_id");
    JITBROKER_ASSIGN_OR_RETURN(pg::Result r, Read("audit chains", q));
    std::vector<AuditChainHead> out;
    for (int i = 0; i < r.rows(); ++i) {
      Row row(r, i);
      AuditChainHead c;
      c.chain_id = row.Text();
      c.head.seq = row.Int();
      c.head.hash = row.Text();
      if (row.bad()) {
        return std::unexpected(CorruptRow("audit_chains", "seq is not an integer"));
      }
      out.push_back(std::move(c));
    }
    return out;
  }

  Result<std::optional<ChainHead>> AuditHead(std::string_view chain_id) override {
    Sql q;
    q.Raw("SELECT seq, hash FROM audit WHERE chain_id = ")
        .Text(chain_id)
        .Raw(" ORDER BY seq DESC LIMIT 1");
    JITBROKER_ASSIGN_OR_RETURN(pg::Result r, Read("audit head", q));
    if (r.rows() == 0) {
      return std::optional<ChainHead>();
    }
    ChainHead head;
    Row row(r, 0);
    head.seq = row.Int();
    head.hash = row.Text();
    if (row.bad()) {
      return std::unexpected(CorruptRow("audit", "seq is not an integer"));
    }
    return std::optional<ChainHead>(std::move(head));
  }

  Result<std::optional<SessionRecord>> GetSession(std::string_view id) override {
    Sql q;
    q.Raw(std::string("SELECT ") + kSessionColumns + " FROM sessions WHERE id = ").Text(id);
    JITBROKER_ASSIGN_OR_RETURN(pg::Result r, Read("get session", q));
    if (r.rows() == 0) {
      return std::optional<SessionRecord>();
    }
    JITBROKER_ASSIGN_OR_RETURN(SessionRecord s, ReadSession(r, 0));
    return std::optional<SessionRecord>(std::move(s));
  }

  Result<std::vector<SessionRecord>> ListSessions(const SessionFilter& f) override {
    Sql q;
    q.Raw(std::string("SELECT ") + kSessionColumns + " FROM sessions WHERE true");
    if (!f.principal_id.empty()) {
      q.Raw(" AND principal_id = ").Text(f.principal_id);
    }
    if (!f.agent_id.empty()) {
      q.Raw(" AND agent_id = ").Text(f.agent_id);
    }
    if (f.state) {
      q.Raw(" AND state = ").Text(StateName(*f.state));
    }
    q.Raw(" ORDER BY created_at, id").Limit(f.limit);
    JITBROKER_ASSIGN_OR_RETURN(pg::Result r, Read("list sessions", q));
    return Collect<SessionRecord>(r, ReadSession);
  }

  Result<std::optional<GrantRecord>> GetGrant(std::string_view id) override {
    Sql q;
    q.Raw(std::string("SELECT ") + kGrantColumns + " FROM grants WHERE id = ").Text(id);
    JITBROKER_ASSIGN_OR_RETURN(pg::Result r, Read("get grant", q));
    if (r.rows() == 0) {
      return std::optional<GrantRecord>();
    }
    JITBROKER_ASSIGN_OR_RETURN(GrantRecord g, ReadGrant(r, 0));
    return std::optional<GrantRecord>(std::move(g));
  }

  Result<std::vector<GrantRecord>> ListGrants(std::string_view session_id) override {
    Sql q;
    q.Raw(std::string("SELECT ") + kGrantColumns + " FROM grants WHERE session_id = ")
        .Text(session_id)
        .Raw(" ORDER BY created_at, id");
    JITBROKER_ASSIGN_OR_RETURN(pg::Result r, Read("list grants", q));
    return Collect<GrantRecord>(r, ReadGrant);
  }

  Result<std::vector<SessionRecord>> ListSessionsDue(TimePoint now, size_t limit) override {
    // Two scans of the partial indexes over active sessions.
    Sql q;
    q.Raw(std::string("SELECT ") + kSessionColumns +
          " FROM sessions WHERE state = 'active' AND (expires_at <= ")
        .Int(Ns(now))
        .Raw(" OR heartbeat_deadline < $1) ORDER BY expires_at, id")
        .Limit(limit);
    JITBROKER_ASSIGN_OR_RETURN(pg::Result r, Read("sessions due", q));
    return Collect<SessionRecord>(r, ReadSession);
  }

  Result<std::vector<GrantRecord>> ListGrantsByState(GrantState state,
                                                     std::optional<TimePoint> expires_before,
                                                     std::string_view issuer,
                                                     size_t limit) override {
    Sql q;
    q.Raw(std::string("SELECT ") + kGrantColumns + " FROM grants WHERE state = ")
        .Text(StateName(state));
    if (expires_before) {
      q.Raw(" AND expires_at <= ").Int(Ns(*expires_before));
    }
    if (!issuer.empty()) {
      q.Raw(" AND issuer = ").Text(issuer);
    }
    q.Raw(" ORDER BY expires_at NULLS FIRST, created_at, id").Limit(limit);
    JITBROKER_ASSIGN_OR_RETURN(pg::Result r, Read("grants by state", q));
    return Collect<GrantRecord>(r, ReadGrant);
  }

  // The literal state = 'pending' lets the planner use the partial indexes.
  Result<std::vector<GrantRecord>> ListPendingApprovals(const PendingApprovalQuery& q) override {
    if (q.tiers.empty() || q.limit == 0) {
      return std::vector<GrantRecord>();
    }
    Sql s;
    s.Raw(std::string("SELECT ") + kGrantColumns +
          " FROM grants WHERE state = 'pending' AND (expires_at IS NULL OR expires_at > ")
        .Int(Ns(q.now))
        .Raw(") AND tier IN (");
    for (size_t i = 0; i < q.tiers.size(); ++i) {
      s.Raw(i == 0 ? "" : ", ").Text(q.tiers[i]);
    }
    s.Raw(")");
    if (!q.session_id.empty()) {
      s.Raw(" AND session_id = ").Text(q.session_id);
    }
    if (!q.principal_id.empty()) {
      s.Raw(" AND principal_id = ").Text(q.principal_id);
    }
    if (!q.exclude_principal_id.empty() && !q.exclude_principal_tiers.empty()) {
      s.Raw(" AND NOT (principal_id = ").Text(q.exclude_principal_id).Raw(" AND tier IN (");
      for (size_t i = 0; i < q.exclude_principal_tiers.size(); ++i) {
        s.Raw(i == 0 ? "" : ", ").Text(q.exclude_principal_tiers[i]);
      }
      s.Raw("))");
    }
    if (q.after) {
      s.Raw(q.newest_first ? " AND (created_at, id) < (" : " AND (created_at, id) > (")
          .Int(Ns(q.after->created_at))
          .Raw(", ")
          .Text(q.after->grant_id)
          .Raw(")");
    }
    s.Raw(q.newest_first ? " ORDER BY created_at DESC, id DESC" : " ORDER BY created_at, id")
        .Limit(q.limit);
    JITBROKER_ASSIGN_OR_RETURN(pg::Result r, Read("pending approvals", s));
    return Collect<GrantRecord>(r, ReadGrant);
  }

  Result<PendingApprovalCounts> CountPendingApprovals(std::string_view session_id,
                                                      std::string_view principal_id,
                                                      TimePoint now) override {
    constexpr const char* kOpen = "state = 'pending' AND (expires_at IS NULL OR expires_at > $3)";
    Sql q;
    q.params.Text(session_id).Text(principal_id).Int(Ns(now));
    q.Raw(std::string("SELECT (SELECT count(*) FROM grants WHERE session_id = $1 AND ") + kOpen +
          "), (SELECT min(expires_at) FROM grants WHERE session_id = $1 AND " + kOpen +
          "), (SELECT count(*) FROM grants WHERE principal_id = $2 AND " + kOpen +
          "), (SELECT min(expires_at) FROM grants WHERE principal_id = $2 AND " + kOpen + ")");
    JITBROKER_ASSIGN_OR_RETURN(pg::Result r, Read("count pending approvals", q));
    Row row(r, 0);
    PendingApprovalCounts out;
    out.session = row.Int();
    out.session_next_expiry = row.OptTime();
    out.principal = row.Int();
    out.principal_next_expiry = row.OptTime();
    if (row.bad()) {
      return std::unexpected(CorruptRow("grants", "a count is not an integer"));
    }
    return out;
  }

  Result<std::vector<RevocationTask>> ListRevocationsDue(TimePoint now, size_t limit) override {
    Sql q;
    q.Raw(std::string("SELECT ") + kRevocationColumns +
          " FROM revocation_queue WHERE next_attempt_at <= ")
        .Int(Ns(now))
        .Raw(" ORDER BY next_attempt_at, grant_id")
        .Limit(limit);
    JITBROKER_ASSIGN_OR_RETURN(pg::Result r, Read("revocations due", q));
    return Collect<RevocationTask>(r, ReadRevocation);
  }

  Result<std::vector<AuditRecord>> ListAudit(const AuditFilter& f) override {
    Sql q;
    q.Raw(std::string("SELECT ") + kAuditColumns + " FROM audit WHERE chain_id = ")
        .Text(f.chain_id)
        .Raw(" AND seq > ")
        .Int(f.after_seq);
    if (!f.session_id.empty()) {
      q.Raw(" AND session_id = ").Text(f.session_id);
    }
    if (!f.principal_id.empty()) {
      q.Raw(" AND principal_id = ").Text(f.principal_id);
    }
    if (f.since) {
      q.Raw(" AND ts >= ").Int(FloorSeconds(*f.since));
    }
    if (f.until) {
      q.Raw(" AND ts <= ").Int(FloorSeconds(*f.until));
    }
    q.Raw(" ORDER BY seq").Limit(f.limit);
    JITBROKER_ASSIGN_OR_RETURN(pg::Result r, Read("list audit", q));
    JITBROKER_ASSIGN_OR_RETURN(std::vector<AuditRecord> out, Collect<AuditRecord>(r, ReadAudit));
    for (AuditRecord& rec : out) {
      rec.chain_id = f.chain_id;
    }
    return out;
  }

  Result<bool> ReplayReserved(std::string_view key, TimePoint now) override {
    Sql q;
    q.Raw("SELECT 1 FROM oidc_replay WHERE replay_key = ")
        .Text(key)
        .Raw(" AND expires_at > ")
        .Int(Ns(now));
    JITBROKER_ASSIGN_OR_RETURN(pg::Result r, Read("replay lookup", q));
    return r.rows() > 0;
  }

  Result<size_t> PruneReplayReservations(TimePoint now, size_t limit) override {
    Sql q;
    q.Raw(
         "DELETE FROM oidc_replay WHERE replay_key IN (SELECT replay_key FROM oidc_replay "
         "WHERE expires_at <= ")
        .Int(Ns(now))
        .Raw(" ORDER BY expires_at")
        .Limit(limit)
        .Raw(")");
    // One statement outside a transaction block: its own durable transaction.
    JITBROKER_ASSIGN_OR_RETURN(pg::Result r, Read("prune replay reservations", q));
    return static_cast<size_t>(r.affected());
  }

  void CollectMetrics(std::vector<MetricFamily>& out) const override {
    const pg::PoolStats pool = pool_.Stats();
    const auto counter = [&](std::string name, std::string help,
                             std::vector<std::pair<std::string, double>> samples) {
      out.push_back(MetricFamily{std::move(name), "counter", std::move(help), std::move(samples)});
    };
    const auto d = [](uint64_t v) { return static_cast<double>(v); };
    counter("jitbroker_store_pool_acquires_total", "Database connections taken from the pool.",
            {{"", d(pool.acquires)}});
    counter("jitbroker_store_pool_waits_total",
            "Pool acquisitions that found every connection in use and waited.",
            {{"", d(pool.waits)}});
    counter("jitbroker_store_pool_wait_seconds_total", "Time spent waiting for a connection.",
            {{"", d(pool.wait_micros) / 1e6}});
    counter("jitbroker_store_connects_total", "Database connections opened by the pool.",
            {{"outcome=\"ok\"", d(pool.connects - pool.connect_failures)},
             {"outcome=\"failed\"", d(pool.connect_failures)}});
    counter("jitbroker_store_queries_total",
            "Store operations: reads (one statement) and applies (one transaction).",
            {{"kind=\"read\",outcome=\"ok\"", d(reads_.ok.load())},
             {"kind=\"read\",outcome=\"error\"", d(reads_.failed.load())},
             {"kind=\"apply\",outcome=\"ok\"", d(applies_.ok.load())},
             {"kind=\"apply\",outcome=\"error\"", d(applies_.failed.load())}});
    counter("jitbroker_store_query_seconds_total",
            "Time spent in store operations (with the count above: the mean latency).",
            {{"kind=\"read\"", d(reads_.nanos.load()) / 1e9},
             {"kind=\"apply\"", d(applies_.nanos.load()) / 1e9}});
    counter("jitbroker_store_apply_retries_total",
            "Transactions run again after a deadlock or serialization failure with a replica.",
            {{"", d(apply_retries_.load())}});
    counter("jitbroker_store_notifications_total",
            "Change notifications received from other replicas.", {{"", d(notifications_.load())}});
    counter("jitbroker_store_resyncs_total",
            "Times the change listener reconnected and woke every long poll to look again.",
            {{"", d(resyncs_.load())}});
    out.push_back(MetricFamily{"jitbroker_store_listening",
                               "gauge",
                               "1 while the change listener is connected.",
                               {{"", watching_.load() ? 1.0 : 0.0}}});
  }

  Result<std::optional<TimePoint>> ServerTime() override {
    Sql q;
    q.Raw("SELECT (extract(epoch FROM clock_timestamp()) * 1000000)::bigint");
    JITBROKER_ASSIGN_OR_RETURN(pg::Result r, Read("server time", q));
    std::optional<int64_t> micros = r.rows() == 1 ? r.Int(0, 0) : std::nullopt;
    if (!micros) {
      return std::unexpected(CorruptRow("clock_timestamp", "not an integer"));
    }
    return std::optional<TimePoint>(FromNs(*micros * 1000));
  }

  // The database's clock decides, so replicas' clocks do not matter.
  Result<bool> TryLease(std::string_view key, Seconds duration) override {
    if (lease_calls_.fetch_add(1) % kLeasePruneEvery == kLeasePruneEvery - 1) {
      Sql prune;
      prune.Raw("DELETE FROM leases WHERE until < clock_timestamp() - interval '1 hour'");
      JITBROKER_RETURN_IF_ERROR(Read("prune leases", prune));
    }
    Sql q;
    q.Raw("INSERT INTO leases (lease_key, owner, until) VALUES (")
        .Text(key)
        .Raw(", ")
        .Text(instance_id_)
        .Raw(", clock_timestamp() + ")
        .Int(duration.count())
        .Raw(
            " * interval '1 second') ON CONFLICT (lease_key) DO UPDATE SET owner = "
            "EXCLUDED.owner, until = EXCLUDED.until WHERE leases.owner = EXCLUDED.owner OR "
            "leases.until <= clock_timestamp() RETURNING 1");
    JITBROKER_ASSIGN_OR_RETURN(pg::Result r, Read("take lease", q));
    return r.rows() == 1;
  }

  // A thread with a connection of its own that LISTENs; see Watch().
  void WatchChanges(std::function<void()> on_change) override {
    std::lock_guard lock(watch_mu_);
    if (watcher_.joinable() || !on_change) {
      return;
    }
    on_change_ = std::move(on_change);
    watcher_ = std::jthread([this](std::stop_token stop) { Watch(stop); });
  }

  ~PostgresStore() override {
    if (watcher_.joinable()) {
      watcher_.request_stop();
      watcher_.join();
    }
  }

  Status Ping() override {
    Sql q;
    q.Raw("SELECT 1");
    JITBROKER_ASSIGN_OR_RETURN(pg::Result r, Read("ping", q));
    (void)r;
    return OkStatus();
  }

 private:
  explicit PostgresStore(PostgresOptions options)
      : schema_target_(options.schema_version_for_testing),
        pool_(std::move(options.dsn), options.pool_size, options.pool_wait) {}

  // The watch loop: LISTEN on a dedicated connection, wait on its socket
  // (at most kWatchTick, to see a stop request), and call on_change_ for
  // each notification from another process. A broken connection is opened
  // again (after kWatchRetry); once it listens again, on_change_ runs once,
  // since what was announced meanwhile is lost.
  void Watch(const std::stop_token& stop) {
    bool first = true;
    while (!stop.stop_requested()) {
      auto c = pg::Connection::Open(pool_.dsn(), pool_.connect_options());
      if (c && (*c)->Exec("LISTEN " + std::string(kChangesChannel))) {
        if (!first) {
          resyncs_.fetch_add(1, std::memory_order_relaxed);
          on_change_();  // resync: anything may have changed while away
        }
        first = false;
        watching_.store(true);
        const pg::WaitResult end =
            pg::WaitForNotifications(**c, stop, kWatchTick, [this](std::string_view payload) {
              if (payload != instance_id_) {
                notifications_.fetch_add(1, std::memory_order_relaxed);
                on_change_();
              }
            });
        watching_.store(false);
        if (end == pg::WaitResult::kStopped) {
          return;
        }
      }
      std::unique_lock lock(watch_mu_);
      std::condition_variable_any cv;
      cv.wait_for(lock, stop, kWatchRetry, [] { return false; });
    }
  }

  // With claim_mu_ held: takes chain `chain_id`'s lock on claim_conn_.
  Status TryLockChainLocked(std::string_view chain_id) {
    pg::Params key;
    key.Text("jitbroker-audit-chain:" + std::string(chain_id));
    auto r = claim_conn_->Query("SELECT pg_try_advisory_lock(hashtextextended($1, 0))", key);
    if (!r) {
      return std::unexpected(StoreError("claim audit chain", r.error()));
    }
    if (r->rows() != 1 || r->Text(0, 0) != "t") {
      Error e = FailedPrecondition("audit_chain_taken",
                                   "audit chain \"" + std::string(chain_id) +
                                       "\" is written by another broker replica; give each "
                                       "replica its own store.postgres.replica_id");
      e.detail = "advisory lock held by another session";
      return std::unexpected(std::move(e));
    }
    return OkStatus();
  }

  // With claim_mu_ held: a new claim connection, and every chain claimed
  // before taken again on it (the old connection's locks died with it). A
  // chain another replica took meanwhile is an error: this replica must not
  // write it any more.
  Status ReclaimLocked() {
    claim_conn_.reset();
    auto c = pg::Connection::Open(pool_.dsn(), pool_.connect_options());
    if (!c) {
      return std::unexpected(StoreError("connect", c.error()));
    }
    claim_conn_ = std::move(*c);
    for (const std::string& chain : claimed_) {
      JITBROKER_RETURN_IF_ERROR(TryLockChainLocked(chain));
    }
    return OkStatus();
  }

  // Whether the chain locks still hold: the claim connection answers, or is
  // replaced and the locks taken again. Called when the writer had to
  // reconnect (the server restarted, or the network broke).
  Status VerifyClaims() {
    std::lock_guard lock(claim_mu_);
    if (claimed_.empty()) {
      return OkStatus();
    }
    if (claim_conn_ != nullptr && claim_conn_->ok() && claim_conn_->Exec("SELECT 1")) {
      return OkStatus();
    }
    return ReclaimLocked();
  }

  // One statement on a pooled connection (autocommit).
  Result<pg::Result> Read(std::string_view what, const Sql& q) {
    const auto start = std::chrono::steady_clock::now();
    auto lease = pool_.Acquire();
    if (!lease) {
      reads_.Done(start, false);
      return std::unexpected(StoreError(what, lease.error()));
    }
    auto r = (*lease)->Query(q.text, q.params);
    reads_.Done(start, r.has_value());
    if (!r) {
      return std::unexpected(StoreError(what, r.error()));
    }
    return std::move(*r);
  }

  // Inside Apply's transaction: the current state of each row named, against
  // what the batch expects. The row is locked until the transaction ends, so
  // no other replica can move it in between; a row that must not exist yet
  // has no row to lock, so its id is locked instead (an advisory lock for the
  // transaction), and a second creator waits, then finds the first's row.
  Status CheckPreconditions(const std::vector<StatePrecondition>& preconditions,
                            std::optional<pg::PgError>& failure) {
    for (const StatePrecondition& p : preconditions) {
      const bool session = p.record == StatePrecondition::Record::kSession;
      const char* table = session ? "session" : "grant";
      pg::Params key;
      key.Text(std::string(table) + ":" + p.id);
      if (p.state.empty()) {
        if (auto r = writer_->Query("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))", key);
            !r) {
          failure = r.error();
          return std::unexpected(StoreError("lock new row", r.error()));
        }
      }
      pg::Params id;
      id.Text(p.id);
      auto r = writer_->Query(session ? "SELECT state FROM sessions WHERE id = $1 FOR UPDATE"
                                      : "SELECT state FROM grants WHERE id = $1 FOR UPDATE",
                              id);
      if (!r) {
        failure = r.error();
        return std::unexpected(StoreError("read state", r.error()));
      }
      std::optional<std::string> found;
      if (r->rows() > 0) {
        found = std::string(r->Text(0, 0));
      }
      const bool holds = p.state.empty() ? !found.has_value() : found == p.state;
      if (!holds) {
        return std::unexpected(
            StateConflictError(table, p.id, p.state, found ? *found : std::string()));
      }
    }
    return OkStatus();
  }

  // One attempt of Apply on writer_. `retry` is set when the server rolled
  // the transaction back for a reason another attempt can overcome.
  Status ApplyOnce(std::span<const WriteBatch> batches, std::span<const AuditRecord> audit,
                   std::optional<pg::PgError>& retry) {
    pg::Connection& w = *writer_;
    auto tx = pg::Transaction::Begin(w);
    if (!tx) {
      return std::unexpected(StoreError("begin", tx.error()));
    }
    std::optional<pg::PgError> failure;
    const auto exec = [&](std::string_view what, const std::string& sql,
                          const pg::Params& params) -> Result<pg::Result> {
      auto r = w.Query(sql, params);
      if (!r) {
        failure = r.error();
        return std::unexpected(StoreError(what, r.error()));
      }
      return std::move(*r);
    };
    Status st = [&]() -> Status {
      try {
        for (const WriteBatch& batch : batches) {
          JITBROKER_RETURN_IF_ERROR(CheckPreconditions(batch.preconditions, failure));
          for (const SessionRecord& rec : batch.sessions) {
            JITBROKER_RETURN_IF_ERROR(
                exec("upsert session", upsert_session_sql_, SessionParams(rec)));
          }
          for (const GrantRecord& rec : batch.grants) {
            JITBROKER_RETURN_IF_ERROR(exec("upsert grant", upsert_grant_sql_, GrantParams(rec)));
          }
          for (const RevocationTask& t : batch.revocations) {
            pg::Params p;
            p.Text(t.grant_id)
                .Text(t.issuer)
                .Text(t.sealed_handle)
                .Int(Ns(t.expires_at))
                .Int(t.attempts)
                .Int(Ns(t.next_attempt_at))
                .Text(t.last_error);
            JITBROKER_RETURN_IF_ERROR(exec("upsert revocation", upsert_revocation_sql_, p));
          }
          for (const std::string& id : batch.revocations_done) {
            pg::Params p;
            p.Text(id);
            JITBROKER_RETURN_IF_ERROR(
                exec("delete revocation", "DELETE FROM revocation_queue WHERE grant_id = $1", p));
          }
          for (const ReplayReservation& r : batch.replay_reservations) {
            // Inserts unless the key is held by a row that has not expired
            // (the upsert's WHERE leaves such a row alone: no row returned).
            // A concurrent reservation of the key waits for the first to
            // commit, then sees its row.
            pg::Params p;
            p.Text(r.key).Int(Ns(r.expires_at)).Int(Ns(r.reserved_at));
            JITBROKER_ASSIGN_OR_RETURN(
                pg::Result res,
                exec("reserve replay key",
                     "INSERT INTO oidc_replay (replay_key, expires_at) VALUES ($1, $2) "
                     "ON CONFLICT (replay_key) DO UPDATE SET expires_at = EXCLUDED.expires_at "
                     "WHERE oidc_replay.expires_at <= $3 RETURNING 1",
                     p));
            if (res.rows() == 0) {
              return std::unexpected(
                  AlreadyExists("replay_reserved", "the subject token was already exchanged"));
            }
          }
        }
        // A grant leaving `pending` (decided, expired, revoked) is what
        // long polls wait for: other replicas' polls look again once this
        // commits (a notification is delivered only on commit, and the
        // payload, this handle's id, lets the sender ignore its own).
        bool changed = false;
        for (const WriteBatch& batch : batches) {
          for (const StatePrecondition& p : batch.preconditions) {
            changed = changed || (p.record == StatePrecondition::Record::kGrant &&
                                  p.state == StateName(GrantState::kPending));
          }
        }
        if (changed) {
          pg::Params p;
          p.Text(instance_id_);
          JITBROKER_RETURN_IF_ERROR(
              exec("notify", "SELECT pg_notify('" + std::string(kChangesChannel) + "', $1)", p));
        }
        std::string dumped;
        for (const AuditRecord& rec : audit) {
          // ChainRecord's text is the canonical body; dump only without it.
          if (rec.text.empty()) {
            dumped = DumpJson(rec.body);
          }
          const std::string& body = rec.text.empty() ? dumped : rec.text;
          pg::Params p;
          p.Text(rec.chain_id)
              .Int(rec.seq)
              .Text(rec.hash)
              .Text(rec.prev_hash)
              .TextOrNull(rec.index.session_id)
              .TextOrNull(rec.index.principal_id)
              .OptInt(rec.index.ts ? std::optional<int64_t>(FloorSeconds(*rec.index.ts))
                                   : std::nullopt)
              .Text(body);
          JITBROKER_RETURN_IF_ERROR(
              exec("insert audit",
                   "INSERT INTO audit (chain_id, seq, hash, prev_hash, session_id, principal_id, "
                   "ts, body) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
                   p));
        }
        // Each chain's new head: the last of its records here.
        for (size_t i = 0; i < audit.size(); ++i) {
          const bool last_of_chain =
              i + 1 == audit.size() || audit[i + 1].chain_id != audit[i].chain_id;
          if (!last_of_chain) {
            continue;
          }
          pg::Params p;
          p.Text(audit[i].chain_id).Int(audit[i].seq).Text(audit[i].hash);
          JITBROKER_RETURN_IF_ERROR(
              exec("move chain head",
                   "INSERT INTO audit_chains (chain_id, seq, hash) VALUES ($1, $2, $3) "
                   "ON CONFLICT (chain_id) DO UPDATE SET seq = EXCLUDED.seq, hash = EXCLUDED.hash "
                   "WHERE audit_chains.seq < EXCLUDED.seq",
                   p));
        }
      } catch (const std::exception& e) {
        return std::unexpected(Unavailable("store_unavailable", "the store is unavailable",
                                           std::string("encoding: ") + e.what()));
      }
      return OkStatus();
    }();
    if (st) {
      if (auto c = tx->Commit(); !c) {
        failure = c.error();
        st = std::unexpected(StoreError("commit", c.error()));
      }
    }
    if (!st && failure && Retryable(*failure)) {
      retry = failure;
    }
    return st;  // on failure the Transaction's destructor rolls back
  }

  const int schema_target_;
  pg::Pool pool_;
  const std::string upsert_session_sql_ = UpsertSql("sessions", kSessionColumns, "id");
  const std::string upsert_grant_sql_ = UpsertSql("grants", kGrantColumns, "id");
  const std::string upsert_revocation_sql_ =
      UpsertSql("revocation_queue", kRevocationColumns, "grant_id");

  std::mutex writer_mu_;
  std::unique_ptr<pg::Connection> writer_;  // guarded by writer_mu_; opened at first Apply

  // Announces this process's commits of sessions and grants to the others
  // (payload: instance_id_, so the sender can ignore its own).
  static constexpr std::string_view kChangesChannel = "jitbroker_changes";
  static constexpr std::chrono::milliseconds kWatchTick{250};
  static constexpr std::chrono::milliseconds kWatchRetry{1000};
  const std::string instance_id_ = NewHandleId();
  std::mutex watch_mu_;
  std::function<void()> on_change_;  // set once, before watcher_ starts
  std::atomic<bool> watching_{false};
  std::jthread watcher_;  // last member but the claims: stopped first by ~PostgresStore

  std::atomic<uint64_t> lease_calls_{0};

  // Counts and total time of one kind of store operation (metrics).
  struct OpStats {
    std::atomic<uint64_t> ok{0};
    std::atomic<uint64_t> failed{0};
    std::atomic<uint64_t> nanos{0};
    void Done(std::chrono::steady_clock::time_point start, bool success) {
      nanos.fetch_add(static_cast<uint64_t>(std::chrono::duration_cast<std::chrono::nanoseconds>(
                                                std::chrono::steady_clock::now() - start)
                                                .count()),
                      std::memory_order_relaxed);
      (success ? ok : failed).fetch_add(1, std::memory_order_relaxed);
    }
  };
  OpStats reads_;
  OpStats applies_;
  std::atomic<uint64_t> apply_retries_{0};
  std::atomic<uint64_t> notifications_{0};
  std::atomic<uint64_t> resyncs_{0};
  static constexpr uint64_t kLeasePruneEvery = 256;

  std::mutex claim_mu_;
  std::unique_ptr<pg::Connection> claim_conn_;  // guarded by claim_mu_; holds the chain locks
  std::set<std::string> claimed_;               // guarded by claim_mu_
};

Result<std::unique_ptr<Store>> OpenPostgresStore(PostgresOptions options) {
  return PostgresStore::Open(std::move(options));
}

}  // namespace jitbroker::store
