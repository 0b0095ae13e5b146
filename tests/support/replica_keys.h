// ReplicaKeys: what every broker replica of one deployment shares, in files
// of a private temporary directory — the database's DSN, the seal key, the
// audit and `jwt` issuer signing keys (docs/configuration.md: required with
// store.postgres) — and the BrokerOptions of one replica on them. For the
// tests that run several daemons on one PostgreSQL database.
//
// Thread-safety: one thread.
#pragma once

#include <string>

#include "tests/support/broker_process.h"
#include "tests/support/temp_dir.h"

namespace jitbroker::testing {

struct ReplicaOptions {
  int pool_size = 4;
  std::string audit_extra;  // YAML members appended inside `audit: {…}`, e.g. ", checkpoint: {…}"
  std::string top_extra;    // YAML lines appended at the top level
};

class ReplicaKeys {
 public:
  // Writes the DSN and generates the keys (REQUIRE on failure).
  explicit ReplicaKeys(const std::string& dsn);

  // Replica `id` (its store.postgres.replica_id); with `first`, it takes that
  // replica's API keys so the same principals authenticate on both.
  BrokerOptions Replica(const std::string& id, const BrokerProcess* first,
                        const ReplicaOptions& options = {}) const;

 private:
  TempDir dir_{"jitbroker-replica-keys"};
};

}  // namespace jitbroker::testing
