// Journal: the one durable write path. Request threads call Commit(batch);
// a single committer thread collects every batch queued meanwhile (group
// commit), chains their audit events in order, applies them to the Store in
// one transaction, appends the chained records to the JSONL file and
// fdatasync()s it, and only then wakes the callers. So N concurrent requests
// cost one store commit and one file sync, and no response is sent before its
// audit records are durable in both places (DESIGN §1 principle 5: fail
// closed — if either write fails, Commit returns kUnavailable and the caller
// must not release a credential).
//
// At Start() the JSONL file is reconciled with the store (the source of
// truth): a torn last line is cut off and records the store has but the file
// lacks are appended, so a kill -9 at any point leaves a chain that verifies.
//
// Thread-safety: Commit() is thread-safe. Start/Stop from one thread.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>

#include "jitbroker/audit.h"
#include "jitbroker/store.h"

namespace jitbroker::audit {

struct JournalStats {
  uint64_t commits = 0;        // store transactions
  uint64_t batches = 0;        // WriteBatches committed
  uint64_t records = 0;        // audit records written
};

// Observer for metrics: called by the committer after each group commit with
// the group's size and the time it took (microseconds).
using CommitObserver = std::function<void(size_t batches, int64_t micros)>;

class Journal {
 public:
  ~Journal();
  // `store` must outlive the journal. `jsonl_path` is created 0600 if absent.
  [[nodiscard]] static Result<std::unique_ptr<Journal>> Create(Store* store,
                                                               std::string jsonl_path,
                                                               size_t max_group = 256);

  // Blocks until the batch is durable (or failed). Batches with no audit
  // events are allowed. After Stop(): kUnavailable.
  [[nodiscard]] Status Commit(WriteBatch batch);

  void SetObserver(CommitObserver observer);
  JournalStats Stats() const;
  std::optional<ChainHead> Head() const;
  // Drains queued batches and stops the committer.
  void Stop();

 private:
  Journal() = default;
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace jitbroker::audit
