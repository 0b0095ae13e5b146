// PgTestDatabase (tests/support/pg_test_db.h).
#include "tests/support/pg_test_db.h"

#include <cstdlib>
#include <memory>
#include <string>

#include <doctest/doctest.h>

#include "broker/crypto/crypto.h"
#include "broker/store/pg.h"
#include "jitbroker/secret.h"

namespace jitbroker::testing {

std::string TestPgServerDsn() {
  const char* dsn = std::getenv("JITBROKER_TEST_PG_DSN");
  return dsn == nullptr ? std::string() : std::string(dsn);
}

namespace {

void AdminExec(const std::string& admin_dsn, const std::string& sql) {
  auto c = store::pg::Connection::Open(SecretValue(admin_dsn));
  REQUIRE_MESSAGE(c.has_value(), "PostgreSQL test server: " << (c ? "" : c.error().message));
  auto r = (*c)->Exec(sql);
  REQUIRE_MESSAGE(r.has_value(), sql << ": " << (r ? "" : r.error().message));
}

}  // namespace

std::unique_ptr<PgTestDatabase> PgTestDatabase::Create() {
  const std::string admin = TestPgServerDsn();
  if (admin.empty()) {
    return nullptr;
  }
  const std::string name = "jbtest_" + crypto::HexEncode(crypto::RandomBytes(8));
  AdminExec(admin, "CREATE DATABASE " + name);
  return std::unique_ptr<PgTestDatabase>(new PgTestDatabase(admin, name));
}

PgTestDatabase::PgTestDatabase(std::string admin_dsn, std::string name)
    : admin_dsn_(std::move(admin_dsn)),
      name_(std::move(name)),
      // In a libpq connection string the last value of a keyword wins.
      dsn_(admin_dsn_ + " dbname=" + name_) {}

PgTestDatabase::~PgTestDatabase() {
  auto c = store::pg::Connection::Open(SecretValue(admin_dsn_));
  if (c) {
    (void)(*c)->Exec("DROP DATABASE IF EXISTS " + name_ + " WITH (FORCE)");
  }
}

}  // namespace jitbroker::testing
