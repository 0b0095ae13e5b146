// Journal: the one durable write path. Request threads call Commit(batch);
// a single committer thread collects every batch queued meanwhile (group
// commit), chains their audit events in order, applies them to the Store in
// one transaction, appends the chained records to the JSONL file, and only
// then wakes the callers. So N concurrent requests cost one store commit, and
// no response is sent before its audit records are durable in the store
// (docs/concepts.md "Principles", item 5: fail closed — if the store commit
// fails, Commit returns kUnavailable and the caller must not release a
// credential).
//
// The JSONL file is a derived copy of the store's chain (docs/architecture.md,
// "The audit file"). With FileSync::kInterval (the default) it is written in
// order after each commit and fdatasync()ed by a background thread every
// `file_sync_interval` and at Stop(): a crash of the host loses at most the
// unsynced tail, which the next Start() restores from the store, and a file
// that cannot be written does not stop the broker (it is repaired from the
// store when it can be; metrics and logs say so). With FileSync::kCommit the
// file is also fdatasync()ed before the callers wake, and a failed write
// fails the group, as for the store.
//
// A batch that reserves a CI token's replay key (WriteBatch::
// replay_reservations) the store already holds, or that an earlier batch of
// the same group reserves, is refused alone: Commit returns kUnauthenticated
// "token_replayed" and nothing of that batch is written.
//
// Likewise a batch whose StatePreconditions (WriteBatch::preconditions) do
// not hold — against the store, or against the batches queued before it in
// the same group — is refused alone with kFailedPrecondition
// "state_conflict" (docs/architecture.md, "The store seam"). Both are checked
// before the group is chained; if another process changes a row or takes a
// key between that check and the store's transaction, the store refuses the
// group (writing nothing) and the committer checks and chains it again.
//
// At Start() the JSONL file is reconciled with the store (the source of
// truth): a torn last line is cut off and records the store has but the file
// lacks are appended, so a kill -9 at any point leaves a chain that verifies.
//
// Checkpoints (broker/audit/checkpoint.h): with an audit signing key the
// committer appends a signed audit.checkpoint record to the group that
// brings the records since the last checkpoint to `every_records`, to the
// first group (or idle moment) `every_seconds` after the first record not yet
// covered, at start-up when the chain does not end with a checkpoint (an
// unclean stop), and at Stop(). A checkpoint is chained and committed like
// any record, in the same store transaction and file write as its group.
//
// Thread-safety: Commit() and Checkpoint*() are thread-safe. Start/Stop from
// one thread.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "broker/crypto/jose.h"
#include "jitbroker/audit.h"
#include "jitbroker/clock.h"
#include "jitbroker/metric_family.h"
#include "jitbroker/store.h"

namespace jitbroker::audit {

struct JournalStats {
  uint64_t commits = 0;  // store transactions
  uint64_t batches = 0;  // WriteBatches committed
  uint64_t records = 0;  // audit records written
  // The JSONL file: fdatasync()s that succeeded, and failures to write,
  // sync or repair it.
  uint64_t file_syncs = 0;
  uint64_t file_errors = 0;
};

// Observer for metrics: called by the committer after each group commit with
// the group's size and the time it took (microseconds).
using CommitObserver = std::function<void(size_t batches, int64_t micros)>;

struct CheckpointOptions {
  // The broker's audit signing key (ES256 or Ed25519); null: no checkpoints.
  std::shared_ptr<const crypto::SigningKey> key;
  int64_t every_records = 1000;  // at most this many records between checkpoints
  int64_t every_seconds = 60;    // a record is covered within this long
  const Clock* clock = nullptr;  // required with a key: timestamps and the interval
  // How often an idle committer looks whether an interval checkpoint is due
  // (real time; the due time itself is measured with `clock`).
  std::chrono::milliseconds poll{1000};
};

// When the JSONL file is made durable (see the top of this file).
enum class FileSync {
  kInterval,  // in the background, every file_sync_interval and at Stop()
  kCommit,    // before each group's callers wake; a failed write fails the group
};

struct JournalOptions {
  size_t max_group = 256;
  FileSync file_sync = FileSync::kInterval;
  std::chrono::milliseconds file_sync_interval{200};
  CheckpointOptions checkpoint;
  // The audit chain this journal writes (AuditRecord::chain_id). One writer
  // per chain: the JSONL file is locked, and the store keeps seq per chain.
  std::string chain_id = std::string(kDefaultAuditChain);
};

class Journal {
 public:
  ~Journal();
  // `store` must outlive the journal. `jsonl_path` is created 0600 if absent.
  [[nodiscard]] static Result<std::unique_ptr<Journal>> Create(Store* store, std::string jsonl_path,
                                                               size_t max_group = 256);
  [[nodiscard]] static Result<std::unique_ptr<Journal>> Create(Store* store, std::string jsonl_path,
                                                               JournalOptions options);

  // Blocks until the batch is durable (or failed). Batches with no audit
  // events are allowed. After Stop(): kUnavailable. A taken replay key:
  // kUnauthenticated "token_replayed". A precondition that does not hold:
  // kFailedPrecondition "state_conflict".
  [[nodiscard]] Status Commit(WriteBatch batch);

  void SetObserver(CommitObserver observer);
  JournalStats Stats() const;
  // jitbroker_audit_file_*: syncs, failures, records written but not yet
  // synced, and whether the file lacks records the store has.
  void CollectMetrics(std::vector<MetricFamily>& out) const;
  std::optional<ChainHead> Head() const;
  // Batches queued and not yet taken by the committer (tests).
  size_t QueuedForTesting() const;
  // Appends a checkpoint with `reason` now ("shutdown", "startup", or any
  // other word), blocking until it is durable; a no-op without a key, for an
  // empty chain, and when the chain already ends with a checkpoint of that
  // reason ("startup": with any checkpoint).
  [[nodiscard]] Status Checkpoint(std::string_view reason);
  // Appends an "interval" checkpoint if one is due by the clock (the idle
  // committer does this by itself every `poll`).
  [[nodiscard]] Status CheckpointIfDue();
  // Writes the "shutdown" checkpoint (with a key), drains queued batches and
  // stops the committer.
  void Stop();

 private:
  Journal() = default;
  [[nodiscard]] Status Enqueue(std::string checkpoint_reason, bool forced);
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace jitbroker::audit
