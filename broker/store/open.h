// store::Open: the one place that turns the `store:` section of the config
// (config::StoreConfig, docs/configuration.md) into a Store. The daemon's
// composition root (broker/app/app.cc) and any tool that needs the broker's
// state call it; nothing else names a Store implementation.
//
// Adding a store: a StoreConfig alternative parsed in broker/config/config.cc,
// a branch here, and the store conformance suite
// (tests/conformance/store_conformance.h) passing against it
// (docs/architecture.md, "The store seam").
//
// Thread-safety: Open may be called from any thread; the Store it returns is
// as thread-safe as include/jitbroker/store.h says.
#pragma once

#include <memory>

#include "jitbroker/result.h"
#include "jitbroker/store.h"

namespace jitbroker::config {
struct StoreConfig;
}

namespace jitbroker::store {

// Opens (creating and migrating where the store does that) the configured
// store. SQLite: the database file and its parent directory are created
// owner-only if absent. PostgreSQL: connects and migrates (the database
// must exist). Errors: kInvalidArgument "invalid_config" for a config built
// in code without its required keys; the store's own open errors
// (kUnavailable "store_unavailable", kFailedPrecondition
// "store_schema_too_new", …) otherwise.
[[nodiscard]] Result<std::unique_ptr<Store>> Open(const config::StoreConfig& config);

}  // namespace jitbroker::store
