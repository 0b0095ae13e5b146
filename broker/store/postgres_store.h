// PostgresStore: the Store that several equal broker replicas share
// (docs/architecture.md, "Several replicas"; docs/configuration.md
// `store.postgres`). Plain libpq through broker/store/pg.h.
//
//   - A fixed pool of connections for reads and one writer connection for
//     Apply (the Journal's committer is its only caller in a process).
//   - Apply is one READ COMMITTED transaction. Each StatePrecondition locks
//     the row it names (SELECT … FOR UPDATE; a row that must not exist yet
//     is guarded by a transaction-scoped advisory lock on its id), so of two
//     replicas moving one grant from the same state exactly one commits and
//     the other gets "state_conflict". Deadlocks and serialization failures
//     between replicas are retried (a few times) before they are an error.
//   - Audit records are kept per chain (chain_id, seq): each replica writes
//     its own chain (docs/architecture.md, "Audit chains").
//   - Versioned migrations, applied under a session advisory lock, so
//     replicas starting together migrate once.
// Timestamps are bigint unix nanoseconds (exact round trips; the audit
// index `ts` is whole seconds, as in every store).
//
// Thread-safety: as Store.
#pragma once

#include <chrono>
#include <memory>

#include "jitbroker/secret.h"
#include "jitbroker/store.h"

namespace jitbroker::store {

struct PostgresOptions {
  SecretValue dsn;  // libpq connection string; never logged
  int pool_size = 16;
  // How long a request waits for a free connection before failing with
  // store_unavailable.
  std::chrono::milliseconds pool_wait{5000};
  // Tests of schema upgrades: stop migrating at this version (0 = latest).
  int schema_version_for_testing = 0;
};

[[nodiscard]] Result<std::unique_ptr<Store>> OpenPostgresStore(PostgresOptions options);

}  // namespace jitbroker::store
