// SqliteStore: the embedded Store (docs/concepts.md "Scale and operations";
// docs/architecture.md, "The store seam")
// on SQLite 3 in WAL mode with synchronous=FULL (each Apply() is one fsync'd
// transaction; the Journal groups many requests per Apply), versioned schema
// migrations (PRAGMA user_version), one writer connection and a small pool
// of reader connections so reads never wait for the writer.
//
// One broker process per file. It holds one audit chain, kDefaultAuditChain
// (records of another chain are refused: "audit_chain_unsupported").
// StatePreconditions are checked under SQLite's write lock (BEGIN
// IMMEDIATE), so they hold even between two processes that open one file.
//
// Built by store::Open (broker/store/open.h); tests of SQLite itself (WAL,
// migrations) open it directly.
//
// Thread-safety: as Store.
#pragma once

#include <memory>
#include <string>

#include "jitbroker/store.h"

namespace jitbroker::store {

struct SqliteOptions {
  std::string path;  // file path; parent directory must exist
  int reader_connections = 4;
  int busy_timeout_ms = 5000;
  // Tests of schema upgrades: stop migrating at this version (0 = latest).
  int schema_version_for_testing = 0;
};

class SqliteStore;
[[nodiscard]] Result<std::unique_ptr<Store>> OpenSqliteStore(const SqliteOptions& options);

}  // namespace jitbroker::store
