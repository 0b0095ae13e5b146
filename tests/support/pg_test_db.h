// A fresh PostgreSQL database for one test, on the throwaway server CTest
// starts (the `pg` fixture, scripts/pg-test-server.sh; docs/testing.md,
// "PostgreSQL"). The server's DSN comes from JITBROKER_TEST_PG_DSN.
//
//   if (auto db = testing::PgTestDatabase::Create()) { … db->dsn() … }
//
// Create() returns nullptr when JITBROKER_TEST_PG_DSN is unset (a test binary
// run by hand without the fixture): callers skip their PostgreSQL part with a
// MESSAGE. Under CTest the variable is always set, so a server that does not
// answer fails the test instead of skipping it.
//
// Thread-safety: one thread.
#pragma once

#include <memory>
#include <string>

namespace jitbroker::testing {

class PgTestDatabase {
 public:
  // A new empty database, dropped (with every connection to it) by the
  // destructor. Fails the current test (REQUIRE) when the server is set but
  // does not answer.
  static std::unique_ptr<PgTestDatabase> Create();
  ~PgTestDatabase();
  PgTestDatabase(const PgTestDatabase&) = delete;
  PgTestDatabase& operator=(const PgTestDatabase&) = delete;

  // A libpq connection string for this database.
  const std::string& dsn() const { return dsn_; }
  const std::string& name() const { return name_; }

 private:
  PgTestDatabase(std::string admin_dsn, std::string name);
  std::string admin_dsn_;
  std::string name_;
  std::string dsn_;
};

// The server's DSN (JITBROKER_TEST_PG_DSN), or "" when unset.
std::string TestPgServerDsn();

}  // namespace jitbroker::testing
