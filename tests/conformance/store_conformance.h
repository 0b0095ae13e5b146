// The store conformance suite: what every Store implementation must do
// (include/jitbroker/store.h), as doctest cases ("Store conformance: …")
// that run against every store StoresUnderTest() lists. A new store is done
// only when the whole suite passes against it (docs/architecture.md, "The
// store seam").
//
// A store joins the suite with one StoreUnderTest entry in
// tests/conformance/stores_under_test.cc: a name and a function that makes a
// fresh, empty database. CTest runs the suite as the `conformance` test
// (label `conformance`); while iterating:
//   build/conformance_tests -tc='Store conformance*'
#pragma once

#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "jitbroker/audit.h"
#include "jitbroker/clock.h"
#include "jitbroker/result.h"
#include "jitbroker/store.h"
#include "tests/support/store_records.h"

namespace jitbroker::conformance {

// One database of the store under test, empty when made.
class StoreDatabase {
 public:
  virtual ~StoreDatabase() = default;
  // A new handle on this database. Called after the previous handle was
  // destroyed, it is a restart: everything committed must be there. Called
  // while another handle is open, it is a second broker process on the same
  // database (what StatePreconditions must hold against).
  [[nodiscard]] virtual Result<std::unique_ptr<Store>> Open() = 0;
};

struct StoreUnderTest {
  std::string name;  // "sqlite"
  std::function<std::unique_ptr<StoreDatabase>()> new_database;
};

// Every store the suite runs against (tests/conformance/stores_under_test.cc).
std::vector<StoreUnderTest> StoresUnderTest();

// Record builders shared with the store-specific tests.
using testing::ApplyOne;
using testing::ApplyWithAudit;
using testing::At;
using testing::AuditEvent;
using testing::CheckGrantEq;
using testing::CheckSessionEq;
using testing::FullGrant;
using testing::FullSession;

}  // namespace jitbroker::conformance
