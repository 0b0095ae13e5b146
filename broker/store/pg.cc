// The libpq layer (broker/store/pg.h).
#include "broker/store/pg.h"

#include <libpq-fe.h>
#include <poll.h>

#include <cerrno>
#include <charconv>
#include <chrono>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <system_error>
#include <utility>
#include <vector>

namespace jitbroker::store::pg {

namespace {

std::string OneLine(const char* msg) {
  std::string out = msg == nullptr ? std::string() : std::string(msg);
  while (!out.empty() && (out.back() == '\n' || out.back() == ' ')) {
    out.pop_back();
  }
  for (char& c : out) {
    if (c == '\n') {
      c = ' ';
    }
  }
  return out;
}

}  // namespace

// --- Params ---------------------------------------------------------------

Params& Params::Text(std::string_view v) {
  if (v.find('\0') != std::string_view::npos) {
    has_nul_ = true;
  }
  values_.emplace_back(v);
  null_.push_back(false);
  return *this;
}

Params& Params::Int(int64_t v) {
  values_.push_back(std::to_string(v));
  null_.push_back(false);
  return *this;
}

Params& Params::Null() {
  values_.emplace_back();
  null_.push_back(true);
  return *this;
}

// --- Result ---------------------------------------------------------------

Result::Result(pg_result* r) : r_(r) {}

Result::~Result() {
  if (r_ != nullptr) {
    PQclear(r_);
  }
}

Result::Result(Result&& other) noexcept : r_(other.r_) { other.r_ = nullptr; }

Result& Result::operator=(Result&& other) noexcept {
  if (this != &other) {
    if (r_ != nullptr) {
      PQclear(r_);
    }
    r_ = other.r_;
    other.r_ = nullptr;
  }
  return *this;
}

int Result::rows() const { return r_ == nullptr ? 0 : PQntuples(r_); }

int64_t Result::affected() const {
  if (r_ == nullptr) {
    return 0;
  }
  const char* n = PQcmdTuples(r_);
  int64_t out = 0;
  if (n != nullptr) {
    std::from_chars(n, n + std::char_traits<char>::length(n), out);
  }
  return out;
}

bool Result::IsNull(int row, int col) const { return PQgetisnull(r_, row, col) != 0; }

std::string_view Result::Text(int row, int col) const {
  const char* v = PQgetvalue(r_, row, col);
  return {v, static_cast<size_t>(PQgetlength(r_, row, col))};
}

std::optional<int64_t> Result::Int(int row, int col) const {
  const std::string_view t = Text(row, col);
  int64_t out = 0;
  const auto [end, ec] = std::from_chars(t.data(), t.data() + t.size(), out);
  if (ec != std::errc() || end != t.data() + t.size() || t.empty()) {
    return std::nullopt;
  }
  return out;
}

// --- Connection -----------------------------------------------------------

PgResult<std::unique_ptr<Connection>> Connection::Open(const SecretValue& dsn,
                                                       const ConnectOptions& options) {
  // Defaults first, then the DSN (expand_dbname): what the DSN says wins.
  const std::string timeout = std::to_string(options.connect_timeout_seconds);
  const std::string idle = std::to_string(options.keepalives_idle_seconds);
  std::string dsn_text(dsn.Reveal());
  const char* keys[] = {"connect_timeout",
                        "application_name",
                        "keepalives_idle",
                        "keepalives_interval",
                        "keepalives_count",
                        "dbname",
                        nullptr};
  const char* values[] = {
      timeout.c_str(), options.application_name.c_str(), idle.c_str(), "10", "3", dsn_text.c_str(),
      nullptr};
  PGconn* c = PQconnectdbParams(keys, values, /*expand_dbname=*/1);
  SecureWipe(dsn_text.data(), dsn_text.size());
  if (c == nullptr) {
    return std::unexpected(PgError{"", "out of memory", true});
  }
  if (PQstatus(c) != CONNECTION_OK) {
    PgError e{"", OneLine(PQerrorMessage(c)), true};
    PQfinish(c);
    return std::unexpected(std::move(e));
  }
  // The server's NOTICEs ("relation already exists, skipping") are not
  // errors; libpq would print them to stderr.
  PQsetNoticeProcessor(c, [](void*, const char*) {}, nullptr);
  return std::unique_ptr<Connection>(new Connection(c));
}

Connection::~Connection() {
  if (conn_ != nullptr) {
    PQfinish(conn_);
  }
}

bool Connection::ok() const { return conn_ != nullptr && PQstatus(conn_) == CONNECTION_OK; }

bool Connection::in_transaction() const {
  return conn_ == nullptr || PQtransactionStatus(conn_) != PQTRANS_IDLE;
}

int Connection::backend_pid() const { return PQbackendPID(conn_); }

PgError Connection::LastError(pg_result* r) const {
  PgError e;
  if (r != nullptr) {
    const char* state = PQresultErrorField(r, PG_DIAG_SQLSTATE);
    e.sqlstate = state == nullptr ? "" : state;
    e.message = OneLine(PQresultErrorMessage(r));
  }
  if (e.message.empty()) {
    e.message = OneLine(PQerrorMessage(conn_));
  }
  e.connection_lost = PQstatus(conn_) != CONNECTION_OK;
  return e;
}

PgResult<Result> Connection::Exec(std::string_view sql) {
  const std::string text(sql);
  pg_result* raw = PQexec(conn_, text.c_str());
  Result r(raw);
  const ExecStatusType st = raw == nullptr ? PGRES_FATAL_ERROR : PQresultStatus(raw);
  if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK) {
    return std::unexpected(LastError(raw));
  }
  return r;
}

PgResult<Result> Connection::Query(const std::string& sql, const Params& params) {
  if (params.has_nul()) {
    return std::unexpected(PgError{"22021", "a value holds a NUL byte", false});
  }
  auto it = prepared_.find(sql);
  if (it == prepared_.end()) {
    std::string name = "jb" + std::to_string(prepared_.size() + 1);
    pg_result* prep = PQprepare(conn_, name.c_str(), sql.c_str(), 0, nullptr);
    const bool ok_prep = prep != nullptr && PQresultStatus(prep) == PGRES_COMMAND_OK;
    PgError e;
    if (!ok_prep) {
      e = LastError(prep);
    }
    if (prep != nullptr) {
      PQclear(prep);
    }
    if (!ok_prep) {
      return std::unexpected(std::move(e));
    }
    it = prepared_.emplace(sql, std::move(name)).first;
  }
  std::vector<const char*> values(params.values_.size());
  for (size_t i = 0; i < values.size(); ++i) {
    values[i] = params.null_[i] ? nullptr : params.values_[i].c_str();
  }
  pg_result* raw = PQexecPrepared(conn_, it->second.c_str(), static_cast<int>(values.size()),
                                  values.data(), nullptr, nullptr, 0);
  Result r(raw);
  const ExecStatusType st = raw == nullptr ? PGRES_FATAL_ERROR : PQresultStatus(raw);
  if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK) {
    return std::unexpected(LastError(raw));
  }
  return r;
}

WaitResult WaitForNotifications(Connection& c, const std::stop_token& stop,
                                std::chrono::milliseconds tick,
                                const std::function<void(std::string_view)>& on_payload) {
  PGconn* conn = c.raw();
  while (!stop.stop_requested()) {
    if (PQstatus(conn) != CONNECTION_OK) {
      return WaitResult::kBroken;
    }
    pollfd fd{PQsocket(conn), POLLIN, 0};
    const int ready = ::poll(&fd, 1, static_cast<int>(tick.count()));
    if (ready < 0 && errno != EINTR) {
      return WaitResult::kBroken;
    }
    if (ready <= 0) {
      continue;
    }
    if (PQconsumeInput(conn) == 0) {
      return WaitResult::kBroken;
    }
    while (PGnotify* n = PQnotifies(conn)) {
      const std::string payload = n->extra == nullptr ? std::string() : std::string(n->extra);
      PQfreemem(n);
      on_payload(payload);
    }
  }
  return WaitResult::kStopped;
}

// --- Transaction ----------------------------------------------------------

PgResult<Transaction> Transaction::Begin(Connection& c) {
  if (auto r = c.Exec("BEGIN"); !r) {
    return std::unexpected(std::move(r).error());
  }
  return Transaction(&c);
}

Transaction::~Transaction() {
  if (c_ != nullptr && c_->ok()) {
    (void)c_->Exec("ROLLBACK");
  }
}

PgResult<Result> Transaction::Commit() {
  Connection* c = c_;
  c_ = nullptr;
  auto r = c->Exec("COMMIT");
  if (r && c->in_transaction()) {
    return std::unexpected(PgError{"", "COMMIT left the transaction open", false});
  }
  return r;
}

// --- Pool -----------------------------------------------------------------

Pool::Pool(SecretValue dsn, int size, std::chrono::milliseconds wait, ConnectOptions options)
    : dsn_(std::move(dsn)), size_(size < 1 ? 1 : size), wait_(wait), options_(std::move(options)) {}

Pool::~Pool() = default;

Pool::Lease::~Lease() {
  if (pool_ != nullptr) {
    pool_->Return(std::move(conn_));
  }
}

PgResult<Pool::Lease> Pool::Acquire() {
  std::unique_lock lock(mu_);
  ++stats_.acquires;
  const auto available = [&] {
    return !idle_.empty() || out_ + static_cast<int>(idle_.size()) < size_;
  };
  if (!available()) {
    ++stats_.waits;
    const auto start = std::chrono::steady_clock::now();
    const bool got = cv_.wait_for(lock, wait_, available);
    stats_.wait_micros +=
        static_cast<uint64_t>(std::chrono::duration_cast<std::chrono::microseconds>(
                                  std::chrono::steady_clock::now() - start)
                                  .count());
    if (!got) {
      return std::unexpected(PgError{"", "no database connection was free in time", false});
    }
  }
  ++out_;
  if (!idle_.empty()) {
    std::unique_ptr<Connection> c = std::move(idle_.back());
    idle_.pop_back();
    return Lease(this, std::move(c));
  }
  ++stats_.connects;
  lock.unlock();
  auto opened = Connection::Open(dsn_, options_);
  if (!opened) {
    lock.lock();
    --out_;
    ++stats_.connect_failures;
    lock.unlock();
    cv_.notify_one();
    return std::unexpected(std::move(opened).error());
  }
  return Lease(this, std::move(*opened));
}

void Pool::Return(std::unique_ptr<Connection> conn) {
  // A connection that broke, or that a caller left inside a transaction, is
  // closed; its slot opens a fresh one on the next Acquire.
  const bool keep = conn != nullptr && conn->ok() && !conn->in_transaction();
  {
    std::lock_guard lock(mu_);
    --out_;
    if (keep) {
      idle_.push_back(std::move(conn));
    } else {
      ++stats_.discarded;
    }
  }
  cv_.notify_one();
  // A discarded connection closes here, outside the lock.
}

PoolStats Pool::Stats() const {
  std::lock_guard lock(mu_);
  return stats_;
}

}  // namespace jitbroker::store::pg
