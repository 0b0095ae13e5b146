// The stores the store conformance suite runs against
// (tests/conformance/store_conformance.h). Each is opened the way the broker
// opens it: through store::Open with its `store:` config.
#include <memory>
#include <string>
#include <vector>

#include "broker/config/config.h"
#include "broker/store/open.h"
#include "tests/conformance/store_conformance.h"
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

}  // namespace

std::vector<StoreUnderTest> StoresUnderTest() {
  std::vector<StoreUnderTest> stores;
  stores.push_back({"sqlite", [] { return std::make_unique<SqliteDatabase>(); }});
  return stores;
}

}  // namespace jitbroker::conformance
