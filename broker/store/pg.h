// A small RAII layer over libpq for the PostgreSQL store
// (broker/store/postgres_store.h; docs/architecture.md, "The store seam").
// Plain libpq: Debian's libpqxx is the 6.x line that 7.x replaced, so a
// wrapper of our own is the durable choice.
//
//   - Connection: one PGconn, its statements prepared once each (cached by
//     SQL text), parameters and results in text format.
//   - Result: one PGresult, freed with the object.
//   - Transaction: BEGIN on construction, ROLLBACK on destruction unless
//     committed.
//   - Pool: a fixed number of connections, opened lazily, handed out one
//     thread at a time; a connection that broke, or that is left inside a
//     transaction, is closed when it is returned and opened again on the
//     next Acquire.
//
// Errors are PgError (SQLSTATE and libpq's message), which the store maps to
// its own errors; messages may name tables and values, never the DSN.
//
// Thread-safety: a Connection, Result or Transaction is used by one thread at
// a time; Pool is thread-safe.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <expected>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <stop_token>
#include <string>
#include <string_view>
#include <vector>

#include "jitbroker/secret.h"

struct pg_conn;
struct pg_result;

namespace jitbroker::store::pg {

// SQLSTATEs the store reacts to.
inline constexpr std::string_view kUniqueViolation = "23505";
inline constexpr std::string_view kSerializationFailure = "40001";
inline constexpr std::string_view kDeadlockDetected = "40P01";

struct PgError {
  std::string sqlstate;  // five characters; empty when the server gave none
  std::string message;   // libpq's, one line
  bool connection_lost = false;
};

template <class T>
using PgResult = std::expected<T, PgError>;

// Parameters of one statement, in text format; NULL where unset.
class Params {
 public:
  Params& Text(std::string_view v);
  Params& Int(int64_t v);
  Params& Null();
  Params& OptText(const std::optional<std::string>& v) { return v ? Text(*v) : Null(); }
  Params& OptInt(const std::optional<int64_t>& v) { return v ? Int(*v) : Null(); }
  // Text, or NULL when empty.
  Params& TextOrNull(std::string_view v) { return v.empty() ? Null() : Text(v); }

  size_t size() const { return values_.size(); }
  // Whether a value holds a NUL byte: libpq passes C strings, so such a value
  // would be cut short. Statements refuse it instead.
  bool has_nul() const { return has_nul_; }

 private:
  friend class Connection;
  std::vector<std::string> values_;
  std::vector<bool> null_;
  bool has_nul_ = false;
};

class Result {
 public:
  Result() = default;
  explicit Result(pg_result* r);
  ~Result();
  Result(Result&& other) noexcept;
  Result& operator=(Result&& other) noexcept;
  Result(const Result&) = delete;
  Result& operator=(const Result&) = delete;

  int rows() const;
  // Rows an INSERT/UPDATE/DELETE touched.
  int64_t affected() const;
  bool IsNull(int row, int col) const;
  std::string_view Text(int row, int col) const;
  // Errors: the value is not a 64-bit integer (a corrupt row).
  std::optional<int64_t> Int(int row, int col) const;

 private:
  pg_result* r_ = nullptr;
};

// Connection parameters the broker sets unless the DSN says otherwise.
struct ConnectOptions {
  int connect_timeout_seconds = 5;
  // TCP keepalives, so a connection to a server that vanished (a network
  // partition) breaks within about a minute instead of hanging.
  int keepalives_idle_seconds = 30;
  std::string application_name = "jitbroker";
};

class Connection {
 public:
  // Connects with `dsn` (a libpq connection string or URI). The error's
  // message is libpq's, which never repeats a password.
  static PgResult<std::unique_ptr<Connection>> Open(const SecretValue& dsn,
                                                    const ConnectOptions& options = {});
  ~Connection();
  Connection(const Connection&) = delete;
  Connection& operator=(const Connection&) = delete;

  // One or more statements without parameters (migrations, BEGIN, LISTEN).
  PgResult<Result> Exec(std::string_view sql);
  // One statement with parameters, prepared on this connection at first use.
  PgResult<Result> Query(const std::string& sql, const Params& params = {});

  // False once the server is gone; such a connection is never reused.
  bool ok() const;
  // Inside a transaction block (or a failed one) rather than idle.
  bool in_transaction() const;
  pg_conn* raw() { return conn_; }
  int backend_pid() const;

 private:
  explicit Connection(pg_conn* c) : conn_(c) {}
  PgError LastError(pg_result* r) const;
  pg_conn* conn_ = nullptr;
  std::map<std::string, std::string, std::less<>> prepared_;  // SQL -> statement name
};

enum class WaitResult { kStopped, kBroken };

// Reads NOTIFY messages on `c` (which must have run LISTEN), calling
// `on_payload` with each one's payload, until `stop` is requested
// (kStopped) or the connection breaks (kBroken). Waits on the socket at most
// `tick` at a time, so a stop request is seen within `tick`.
WaitResult WaitForNotifications(Connection& c, const std::stop_token& stop,
                                std::chrono::milliseconds tick,
                                const std::function<void(std::string_view)>& on_payload);

// BEGIN now; ROLLBACK at destruction unless Commit() succeeded.
class Transaction {
 public:
  static PgResult<Transaction> Begin(Connection& c);
  ~Transaction();
  Transaction(Transaction&& other) noexcept : c_(other.c_) { other.c_ = nullptr; }
  Transaction& operator=(Transaction&&) = delete;
  Transaction(const Transaction&) = delete;
  Transaction& operator=(const Transaction&) = delete;
  PgResult<Result> Commit();

 private:
  explicit Transaction(Connection* c) : c_(c) {}
  Connection* c_;
};

struct PoolStats {
  uint64_t acquires = 0;
  uint64_t waits = 0;        // acquires that found no free connection
  uint64_t wait_micros = 0;  // total time those waited
  uint64_t connects = 0;     // connections opened (first time and after a break)
  uint64_t connect_failures = 0;
  uint64_t discarded = 0;  // connections closed because they broke
};

class Pool {
 public:
  // `size` connections at most; Acquire waits at most `wait` for one.
  Pool(SecretValue dsn, int size, std::chrono::milliseconds wait, ConnectOptions options = {});
  ~Pool();

  class Lease {
   public:
    Lease(Lease&& other) noexcept : pool_(other.pool_), conn_(std::move(other.conn_)) {
      other.pool_ = nullptr;
    }
    Lease& operator=(Lease&&) = delete;
    Lease(const Lease&) = delete;
    Lease& operator=(const Lease&) = delete;
    ~Lease();
    Connection* operator->() const { return conn_.get(); }
    Connection& operator*() const { return *conn_; }

   private:
    friend class Pool;
    Lease(Pool* pool, std::unique_ptr<Connection> conn) : pool_(pool), conn_(std::move(conn)) {}
    Pool* pool_;
    std::unique_ptr<Connection> conn_;
  };

  // A connection, opened if the free slot has none. Errors: no slot freed
  // within `wait` (sqlstate empty, message says so), or the connect failed.
  PgResult<Lease> Acquire();
  PoolStats Stats() const;
  const SecretValue& dsn() const { return dsn_; }
  const ConnectOptions& connect_options() const { return options_; }

 private:
  void Return(std::unique_ptr<Connection> conn);

  const SecretValue dsn_;
  const int size_;
  const std::chrono::milliseconds wait_;
  const ConnectOptions options_;
  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::vector<std::unique_ptr<Connection>> idle_;  // guarded by mu_
  int out_ = 0;                                    // leased, guarded by mu_
  PoolStats stats_;                                // guarded by mu_
};

}  // namespace jitbroker::store::pg
