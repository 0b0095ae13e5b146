// The stores the store conformance suite runs against
// (tests/conformance/store_conformance.h). Each is opened the way the broker
// opens it: through store::Open with its `store:` config.
#include <memory>
#include <string>
#include <vector>

#include "broker/config/config.h"
#include "broker/store/open.h"
#include "tests/conformance/store_conformance.h"
#include "tests/support/pg_test_db.h"
#include "tests/support/temp_dir.h"

namespace jitbroker::conformance {

namespace {

// A SQLite file in a private temporary directory, removed with the object.
class SqliteDatabase final : public StoreDatabase {
 public:
  Result<std::unique_ptr<Store>> Open() override {
    config::StoreConfig config;
    config.backend = config::SqliteStoreConfig{dir_.File("conformance.db")};
    return store::Open(config);
  }

 private:
  testing::TempDir dir_{"jitbroker-store-conformance"};
};

// A fresh database on the test PostgreSQL server (tests/support/pg_test_db.h).
class PostgresDatabase final : public StoreDatabase {
 public:
  explicit PostgresDatabase(std::unique_ptr<testing::PgTestDatabase> db) : db_(std::move(db)) {}
  Result<std::unique_ptr<Store>> Open() override {
    config::StoreConfig config;
    config::PostgresStoreConfig pg;
    pg.dsn = SecretValue(db_->dsn());
    pg.pool_size = 4;
    config.backend = std::move(pg);
    return store::Open(config);
  }

 private:
  std::unique_ptr<testing::PgTestDatabase> db_;
};

}  // namespace

std::vector<StoreUnderTest> StoresUnderTest() {
  std::vector<StoreUnderTest> stores;
  stores.push_back({"sqlite", [] { return std::make_unique<SqliteDatabase>(); }});
  // Only with a server (JITBROKER_TEST_PG_DSN, set by CTest's `pg` fixture).
  if (!testing::TestPgServerDsn().empty()) {
    stores.push_back({"postgres", []() -> std::unique_ptr<StoreDatabase> {
                        return std::make_unique<PostgresDatabase>(
                            testing::PgTestDatabase::Create());
                      }});
  }
  return stores;
}

}  // namespace jitbroker::conformance
