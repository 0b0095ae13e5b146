// SqliteStore: the embedded Store (docs/concepts.md "Scale and operations")
// on SQLite 3 in WAL mode with
// synchronous=FULL (each Apply() is one fsync'd transaction; the Journal
// groups many requests per Apply), versioned schema migrations
// (PRAGMA user_version), one writer connection and a small pool of reader
// connections so reads never wait for the writer.
//
// Thread-safety: as Store.
#pragma once

#include <memory>
#include <string>

#include "jitbroker/store.h"

namespace jitbroker::store {

struct SqliteOptions {
  std::string path;            // file path; parent directory must exist
  int reader_connections = 4;
  int busy_timeout_ms = 5000;
  // Tests of schema upgrades: stop migrating at this version (0 = latest).
  int schema_version_for_testing = 0;
};

class SqliteStore;
[[nodiscard]] Result<std::unique_ptr<Store>> OpenSqliteStore(const SqliteOptions& options);

}  // namespace jitbroker::store
