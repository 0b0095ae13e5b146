// Journal (broker/audit/journal.h): group commit of WriteBatches into the
// Store and the JSONL audit file.
//
// One committer thread owns the chain head and the file. Request threads
// enqueue {batch, promise} and block on the future. The committer takes what
// is queued (at most max_group), chains the audit events from the current
// head, calls Store::Apply once, appends every record line with one write()
// (and, with FileSync::kCommit, one fdatasync()), and only then fulfils the
// promises. With FileSync::kInterval a second thread, the syncer,
// fdatasync()s the file every file_sync_interval when records were written
// since its last sync, and once more at Stop().
//
// Failure handling (fail closed on the store, which is the durable record):
//   - Apply fails: the whole group fails; the head is re-read from the store
//     and the file re-reconciled before the next group, in case the store
//     committed despite reporting an error.
//   - the file write fails after Apply succeeded: the file is marked dirty
//     and later repaired from the store (Reconcile: cut the torn tail, append
//     what the store has). FileSync::kCommit: the group fails with
//     kUnavailable, and the next group is refused if the repair is
//     impossible. FileSync::kInterval: the group succeeds (its records are
//     durable in the store), and the committer tries the repair after later
//     groups, at most once per file_sync_interval, and at Stop().
//   - the syncer's fdatasync fails: counted and logged; as the kernel may
//     have dropped the unwritten pages, the committer checks the file against
//     the store before its next write.
//   - Apply refuses the group for a precondition or replay key that the
//     committer's check had passed (another process got there first; the
//     store wrote nothing): the group is unchained, checked again — now the
//     loser is refused alone — and applied again, a few times at most.
// Reconcile never rewrites history: if the file's last record is not the
// store's record of that seq, it reports audit_file_diverged.
#include "broker/audit/journal.h"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <exception>
#include <functional>
#include <future>
#include <map>
#include <set>
#include <string_view>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "broker/audit/checkpoint.h"
#include "broker/common/log.h"
#include "jitbroker/error.h"
#include "jitbroker/result.h"

namespace jitbroker::audit {

namespace {

using Json = nlohmann::json;

constexpr size_t kReconcilePage = 1000;
// Applies of one group that the store may refuse for a lost race before the
// group fails (see Journal::Impl::LostRace).
constexpr int kMaxRaceRetries = 4;
constexpr size_t kScanChunk = 64 * 1024;

struct Pending {
  WriteBatch batch;                        // audit_events already moved into `events`
  std::vector<PreparedAuditEvent> events;  // serialised on the caller's thread
  std::promise<Status> done;
  // A checkpoint request (Journal::Checkpoint / CheckpointIfDue): its reason,
  // and whether it is written whatever the interval says.
  std::string checkpoint_reason;
  bool checkpoint_forced = false;
};

std::string CurrentExceptionText() {
  try {
    throw;
  } catch (const std::exception& e) {
    return e.what();
  } catch (...) {
    return "unknown exception";
  }
}

std::string Errno(int err) { return std::strerror(err); }

Error FileError(std::string_view path, std::string_view what, int err) {
  return Unavailable("audit_unavailable", "the audit log is unavailable",
                     std::string(what) + " " + std::string(path) + ": " + Errno(err));
}

Error Diverged(std::string detail) {
  Error e = FailedPrecondition("audit_file_diverged",
                               "the audit file does not match the store's audit chain");
  e.detail = std::move(detail);
  return e;
}

// Commit() promises kUnavailable for every failure to make a batch durable;
// keep the reason and detail for operators.
Error AsUnavailable(Error e) {
  if (e.code != ErrorCode::kUnavailable) {
    if (e.reason.empty()) {
      e.reason = "audit_unavailable";
    }
    e.code = ErrorCode::kUnavailable;
    e.retryable = true;
  }
  return e;
}

// Canonical record line (without the newline); never throws on bad UTF-8.
std::string Dump(const Json& j) { return j.dump(-1, ' ', false, Json::error_handler_t::replace); }

// Appends a record's canonical line: the text ChainRecord produced when it
// has one (the bytes that were hashed), else a dump of the body.
void AppendLine(std::string& out, const AuditRecord& rec) {
  if (!rec.text.empty()) {
    out += rec.text;
  } else {
    out += Dump(rec.body);
  }
  out += '\n';
}

Status WriteAll(int fd, std::string_view data, std::string_view path) {
  while (!data.empty()) {
    const ssize_t n = ::write(fd, data.data(), data.size());
    if (n < 0) {
      if (errno == EINTR) {
        continue;
      }
      return std::unexpected(FileError(path, "write", errno));
    }
    if (n == 0) {
      return std::unexpected(FileError(path, "write", EIO));
    }
    data.remove_prefix(static_cast<size_t>(n));
  }
  return OkStatus();
}

Status ReadAt(int fd, char* buf, size_t n, off_t offset, std::string_view path) {
  while (n > 0) {
    const ssize_t r = ::pread(fd, buf, n, offset);
    if (r < 0) {
      if (errno == EINTR) {
        continue;
      }
      return std::unexpected(FileError(path, "read", errno));
    }
    if (r == 0) {
      return std::unexpected(FileError(path, "read (short)", EIO));
    }
    buf += r;
    n -= static_cast<size_t>(r);
    offset += r;
  }
  return OkStatus();
}

// Offset of the last '\n' in [0, end), or -1 if there is none.
Result<off_t> FindLastNewline(int fd, off_t end, std::string_view path) {
  std::vector<char> buf(kScanChunk);
  off_t pos = end;
  while (pos > 0) {
    const size_t n = static_cast<size_t>(std::min<off_t>(pos, static_cast<off_t>(kScanChunk)));
    pos -= static_cast<off_t>(n);
    JITBROKER_RETURN_IF_ERROR(ReadAt(fd, buf.data(), n, pos, path));
    for (size_t i = n; i > 0; --i) {
      if (buf[i - 1] == '\n') {
        return pos + static_cast<off_t>(i - 1);
      }
    }
  }
  return static_cast<off_t>(-1);
}

// Raises `a` to `v` (never lowers it): two threads record progress.
void RaiseTo(std::atomic<uint64_t>& a, uint64_t v) {
  uint64_t cur = a.load();
  while (cur < v && !a.compare_exchange_weak(cur, v)) {
  }
}

void FsyncParentDir(const std::string& path) {
  const size_t slash = path.rfind('/');
  const std::string dir =
      slash == std::string::npos ? "." : (slash == 0 ? "/" : path.substr(0, slash));
  const int dfd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dfd >= 0) {
    (void)::fsync(dfd);
    ::close(dfd);
  }
}

}  // namespace

struct Journal::Impl {
  // Hands `pending` to the committer thread and waits for its outcome.
  [[nodiscard]] Status SubmitAndWait(std::unique_ptr<Pending> pending, const char* what);

  Store* store = nullptr;
  std::string chain_id;
  std::string path;
  size_t max_group = 256;
  int fd = -1;

  mutable std::mutex mu;
  std::condition_variable cv;
  std::deque<std::unique_ptr<Pending>> queue;  // guarded by mu
  bool stopping = false;                       // guarded by mu
  std::optional<ChainHead> head;               // guarded by mu; written by the committer
  JournalStats stats;                          // guarded by mu
  CommitObserver observer;                     // guarded by mu

  // Committer-only state.
  bool file_dirty = false;  // the file may lag or have a torn tail (SetDirty)
  bool head_stale = false;  // re-read the head from the store before chaining
  // FileSync::kInterval: when the committer may next try to repair a dirty
  // file, and whether the last write or repair failed (logged once a streak).
  std::chrono::steady_clock::time_point next_repair{};
  bool file_failing = false;

  // The file's durability (see the top of this file).
  FileSync file_sync = FileSync::kInterval;
  std::chrono::milliseconds file_sync_interval{200};
  std::atomic<uint64_t> file_written{0};  // records written to the file since Create
  std::atomic<uint64_t> file_synced{0};   // of those, covered by an fdatasync
  std::atomic<uint64_t> file_syncs{0};
  std::atomic<uint64_t> file_errors{0};
  std::atomic<bool> file_behind{false};  // file_dirty, for the metrics
  std::atomic<bool> sync_failed{false};  // set by the syncer, taken by the committer
  bool sync_failing = false;             // syncer-only: the last fdatasync failed
  std::mutex sync_mu;
  std::condition_variable sync_cv;
  bool sync_stop = false;  // guarded by sync_mu
  std::jthread syncer;     // FileSync::kInterval only; joined before fd is closed

  // Checkpoints (committer-only after Create).
  CheckpointOptions checkpoint;
  int64_t uncovered = 0;                        // records since the last checkpoint
  std::optional<TimePoint> first_uncovered_at;  // when the first of them was committed
  std::string last_checkpoint_reason;           // of the chain's last record, if a checkpoint

  std::jthread committer;  // declared last: joined before the rest is destroyed

  ~Impl() {
    if (committer.joinable()) {
      committer.join();
    }
    StopSyncer();
    if (fd >= 0) {
      ::close(fd);
    }
  }

  // Brings the file in line with the store: cut a torn last line, check the
  // last complete line against the store's record of that seq, append every
  // later record, fdatasync.
  Status Reconcile() {
    // Whatever happens below, the syncer's failure is accounted for.
    sync_failed = false;
    struct stat st{};
    if (::fstat(fd, &st) != 0) {
      return std::unexpected(FileError(path, "stat", errno));
    }
    const off_t size = st.st_size;
    JITBROKER_ASSIGN_OR_RETURN(const off_t last_nl, FindLastNewline(fd, size, path));
    const off_t good = last_nl + 1;
    bool changed = false;
    if (good < size) {
      log::Get("audit")->warn("audit file torn tail cut path={} bytes={}", path,
                              static_cast<int64_t>(size - good));
      if (::ftruncate(fd, good) != 0) {
        return std::unexpected(FileError(path, "truncate", errno));
      }
      changed = true;
    }

    int64_t file_seq = 0;
    std::string last_line;
    if (good > 0) {
      JITBROKER_ASSIGN_OR_RETURN(const off_t prev_nl, FindLastNewline(fd, last_nl, path));
      const off_t start = prev_nl + 1;
      last_line.resize(static_cast<size_t>(last_nl - start));
      JITBROKER_RETURN_IF_ERROR(ReadAt(fd, last_line.data(), last_line.size(), start, path));
      const Json body = Json::parse(last_line, nullptr, /*allow_exceptions=*/false);
      if (!body.is_object() || !body.contains("seq") || !body["seq"].is_number_integer() ||
          body["seq"].get<int64_t>() < 1) {
        return std::unexpected(Diverged("last complete line of " + path + " is not a record"));
      }
      file_seq = body["seq"].get<int64_t>();
    }

    JITBROKER_ASSIGN_OR_RETURN(const std::optional<ChainHead> store_head,
                               store->AuditHead(chain_id));
    const int64_t store_seq = store_head ? store_head->seq : 0;
    if (file_seq > store_seq) {
      return std::unexpected(Diverged(path + " ends at seq " + std::to_string(file_seq) +
                                      " but the store ends at seq " + std::to_string(store_seq)));
    }
    if (file_seq > 0) {
      AuditFilter f;
      f.chain_id = chain_id;
      f.after_seq = file_seq - 1;
      f.limit = 1;
      JITBROKER_ASSIGN_OR_RETURN(const std::vector<AuditRecord> recs, store->ListAudit(f));
      if (recs.empty() || recs.front().seq != file_seq || Dump(recs.front().body) != last_line) {
        return std::unexpected(Diverged("record seq " + std::to_string(file_seq) + " of " + path +
                                        " differs from the store's"));
      }
    }

    int64_t after = file_seq;
    while (after < store_seq) {
      AuditFilter f;
      f.chain_id = chain_id;
      f.after_seq = after;
      f.limit = kReconcilePage;
      JITBROKER_ASSIGN_OR_RETURN(const std::vector<AuditRecord> page, store->ListAudit(f));
      if (page.empty()) {
        return std::unexpected(Internal("the store's audit chain is incomplete",
                                        "no records after seq " + std::to_string(after)));
      }
      std::string text;
      for (const AuditRecord& rec : page) {
        if (rec.seq != after + 1) {
          return std::unexpected(Internal("the store's audit chain is incomplete",
                                          "missing seq " + std::to_string(after + 1)));
        }
        AppendLine(text, rec);
        after = rec.seq;
      }
      JITBROKER_RETURN_IF_ERROR(WriteAll(fd, text, path));
      changed = true;
    }
    if (changed) {
      if (after > file_seq) {
        log::Get("audit")->info("audit file reconciled path={} appended_from_seq={} to_seq={}",
                                path, file_seq + 1, after);
      }
      if (::fdatasync(fd) != 0) {
        return std::unexpected(FileError(path, "fdatasync", errno));
      }
      file_written += static_cast<uint64_t>(after - file_seq);
      RaiseTo(file_synced, file_written.load());
      ++file_syncs;
    }
    SetDirty(false);
    return OkStatus();
  }

  void SetDirty(bool dirty) {
    file_dirty = dirty;
    file_behind = dirty;
  }

  // The syncer (FileSync::kInterval): an fdatasync every file_sync_interval
  // when records were written since the last one, and a last one when told
  // to stop.
  void RunSyncer() {
    std::unique_lock lock(sync_mu);
    while (true) {
      sync_cv.wait_for(lock, file_sync_interval, [&] { return sync_stop; });
      const bool stop = sync_stop;
      lock.unlock();
      SyncFile();
      lock.lock();
      if (stop) {
        return;
      }
    }
  }

  void SyncFile() {
    const uint64_t written = file_written.load();
    if (written == file_synced.load()) {
      return;
    }
    if (::fdatasync(fd) == 0) {
      RaiseTo(file_synced, written);
      ++file_syncs;
      if (sync_failing) {
        sync_failing = false;
        log::Get("audit")->info("event=audit_file_sync_recovered path={}", path);
      }
      return;
    }
    const int err = errno;
    ++file_errors;
    sync_failed = true;
    if (!sync_failing) {
      sync_failing = true;
      log::Get("audit")->error(
          "event=audit_file_sync_failed path={} error=\"{}\" (the store holds the records; the "
          "file is checked against it before the next write)",
          path, Errno(err));
    }
  }

  void StopSyncer() {
    {
      std::lock_guard lock(sync_mu);
      sync_stop = true;
    }
    sync_cv.notify_all();
    if (syncer.joinable()) {
      syncer.join();
    }
  }

  void Run() {
    while (true) {
      std::vector<std::unique_ptr<Pending>> group;
      {
        std::unique_lock lock(mu);
        const auto ready = [&] { return !queue.empty() || stopping; };
        if (checkpoint.key) {
          if (!cv.wait_for(lock, checkpoint.poll, ready)) {
            lock.unlock();
            IdleCheckpoint();
            continue;
          }
        } else {
          cv.wait(lock, ready);
        }
        if (queue.empty()) {
          return;  // stopping and drained
        }
        const size_t n = std::min(queue.size(), max_group);
        group.reserve(n);
        for (size_t i = 0; i < n; ++i) {
          group.push_back(std::move(queue.front()));
          queue.pop_front();
        }
      }
      const auto start = std::chrono::steady_clock::now();
      Status result;
      try {
        result = CommitGroup(group);
      } catch (...) {
        // Unknown progress: trust nothing cached before the next group.
        SetDirty(true);
        head_stale = true;
        result = std::unexpected(Unavailable("audit_unavailable", "the audit log is unavailable",
                                             "committer: " + CurrentExceptionText()));
      }
      const int64_t micros = std::chrono::duration_cast<std::chrono::microseconds>(
                                 std::chrono::steady_clock::now() - start)
                                 .count();
      // The observer runs before the waiters wake, so a caller that saw its
      // Commit return also sees the group in the metrics.
      CommitObserver obs;
      {
        std::lock_guard lock(mu);
        obs = observer;
      }
      if (obs) {
        try {
          obs(group.size(), micros);
        } catch (...) {
          log::Get("audit")->warn("commit observer threw");
        }
      }
      for (auto& p : group) {
        p->done.set_value(result);
      }
    }
  }

  // An Apply refusal that the committer's own checks are meant to prevent
  // (RefuseTakenReplayKeys, RefuseConflicts): with one writer per store it
  // cannot happen; with several processes on one database it means one of
  // them changed the row or took the key between our check and Apply.
  static bool LostRace(const Error& e) {
    return (e.code == ErrorCode::kFailedPrecondition && e.Reason() == "state_conflict") ||
           (e.code == ErrorCode::kAlreadyExists && e.Reason() == "replay_reserved");
  }

  // Puts a group that Apply refused back as it was before chaining: each
  // pending's batch, and its events re-prepared from their records (the
  // checkpoint record, if any, is dropped: the next attempt decides again).
  static void Unchain(std::vector<std::unique_ptr<Pending>>& group,
                      std::vector<WriteBatch>& batches, std::vector<AuditRecord>& records) {
    size_t next = 0;
    for (size_t i = 0; i < group.size(); ++i) {
      Pending& p = *group[i];
      p.batch = std::move(batches[i]);
      for (PreparedAuditEvent& event : p.events) {
        Json body = std::move(records[next++].body);
        body.erase("seq");
        body.erase("prev_hash");
        body.erase("hash");
        event = PrepareAuditEvent(std::move(body));
      }
    }
    batches.clear();
    records.clear();
  }

  // Batches whose StatePreconditions do not hold are answered
  // "state_conflict" and leave the group before it is chained, so one lost
  // race does not fail its neighbours. A precondition is checked against the
  // rows written by the batches accepted before it in this group, else
  // against the store (one indexed read per precondition). The store checks
  // them again inside its transaction: that is what holds across processes.
  void RefuseConflicts(std::vector<std::unique_ptr<Pending>>& group) {
    const bool any = std::any_of(group.begin(), group.end(),
                                 [](const auto& p) { return !p->batch.preconditions.empty(); });
    if (!any) {
      return;
    }
    using Key = std::pair<StatePrecondition::Record, std::string>;
    std::map<Key, std::string> written;  // state after the accepted batches so far
    std::erase_if(group, [&](std::unique_ptr<Pending>& p) {
      std::optional<Error> refused;
      for (const StatePrecondition& c : p->batch.preconditions) {
        const bool session = c.record == StatePrecondition::Record::kSession;
        std::string current;
        if (auto it = written.find(Key{c.record, c.id}); it != written.end()) {
          current = it->second;
        } else if (session) {
          Result<std::optional<SessionRecord>> row = store->GetSession(c.id);
          if (!row) {
            refused = AsUnavailable(std::move(row).error());
            break;
          }
          current = *row ? std::string(StateName((*row)->state)) : std::string();
        } else {
          Result<std::optional<GrantRecord>> row = store->GetGrant(c.id);
          if (!row) {
            refused = AsUnavailable(std::move(row).error());
            break;
          }
          current = *row ? std::string(StateName((*row)->state)) : std::string();
        }
        if (current != c.state) {
          refused = StateConflictError(session ? "session" : "grant", c.id, c.state, current);
          break;
        }
      }
      if (refused) {
        p->done.set_value(std::unexpected(std::move(*refused)));
        return true;
      }
      for (const SessionRecord& rec : p->batch.sessions) {
        written[Key{StatePrecondition::Record::kSession, rec.id}] = StateName(rec.state);
      }
      for (const GrantRecord& rec : p->batch.grants) {
        written[Key{StatePrecondition::Record::kGrant, rec.id}] = StateName(rec.state);
      }
      return false;
    });
  }

  // Batches that reserve a CI token's replay key (WriteBatch::
  // replay_reservations) already held in the store, or by an earlier batch
  // of this group, are answered "token_replayed" and leave the group before
  // it is chained, so one refused exchange does not fail its neighbours. The
  // committer is the store's only writer, so nothing can take a key between
  // this check and Apply; the store's unique key remains the backstop.
  void RefuseTakenReplayKeys(std::vector<std::unique_ptr<Pending>>& group) {
    std::set<std::string> seen;
    std::erase_if(group, [&](std::unique_ptr<Pending>& p) {
      std::optional<Error> refused;
      for (const ReplayReservation& r : p->batch.replay_reservations) {
        if (seen.contains(r.key)) {
          refused =
              Unauthenticated("token_replayed", "subject_token was already exchanged (jti replay)");
          break;
        }
        Result<bool> taken = store->ReplayReserved(r.key, r.reserved_at);
        if (!taken) {
          refused = AsUnavailable(std::move(taken).error());
          break;
        }
        if (*taken) {
          refused =
              Unauthenticated("token_replayed", "subject_token was already exchanged (jti replay)");
          break;
        }
      }
      if (!refused) {
        for (const ReplayReservation& r : p->batch.replay_reservations) {
          seen.insert(r.key);
        }
        return false;
      }
      p->done.set_value(std::unexpected(std::move(*refused)));
      return true;
    });
  }

  // Whether a checkpoint is due by the clock: records wait uncovered for
  // every_seconds.
  bool IntervalDue() const {
    return uncovered > 0 && first_uncovered_at &&
           checkpoint.clock->Now() - *first_uncovered_at >= Seconds(checkpoint.every_seconds);
  }

  // Chains a checkpoint after `h` into `records` if the group asks for one
  // or one is due; returns its reason ("" when none was added).
  Result<std::string> AppendCheckpointIfDue(const std::vector<std::unique_ptr<Pending>>& group,
                                            std::optional<ChainHead>& h,
                                            std::vector<AuditRecord>& records) {
    if (!h) {
      return std::string();  // nothing to anchor
    }
    const int64_t pending = uncovered + static_cast<int64_t>(records.size());
    std::string reason;
    for (const auto& p : group) {
      if (!p->checkpoint_forced) {
        continue;
      }
      // "startup" anchors an uncovered tail; any other forced reason is
      // written unless the chain already ends with a checkpoint of it.
      const bool covered = pending == 0;
      const bool wanted = p->checkpoint_reason == "startup"
                              ? !covered
                              : !(covered && last_checkpoint_reason == p->checkpoint_reason);
      if (wanted) {
        reason = p->checkpoint_reason;
      }
    }
    if (reason.empty() && pending >= checkpoint.every_records) {
      reason = "records";
    }
    if (reason.empty() && pending > 0) {
      const TimePoint first = first_uncovered_at.value_or(checkpoint.clock->Now());
      if (checkpoint.clock->Now() - first >= Seconds(checkpoint.every_seconds)) {
        reason = "interval";
      }
    }
    if (reason.empty()) {
      return reason;
    }
    // Where the other replicas' chains stood: lets a verifier of every chain
    // check how they interleave. Not worth failing the group for.
    std::vector<AuditChainHead> others;
    if (Result<std::vector<AuditChainHead>> chains = store->ListAuditChains(); chains) {
      for (AuditChainHead& c : *chains) {
        if (c.chain_id != chain_id) {
          others.push_back(std::move(c));
        }
      }
    } else {
      log::Get("audit")->warn("event=checkpoint_other_chains_unread error=\"{}\"",
                              chains.error().ToString());
    }
    JITBROKER_ASSIGN_OR_RETURN(
        nlohmann::json event,
        MakeCheckpointEvent(*checkpoint.key, h, checkpoint.clock->Now(), reason, pending, others));
    AuditRecord rec = ChainRecord(h, std::move(event));
    rec.chain_id = chain_id;
    h = ChainHead{rec.seq, rec.hash};
    records.push_back(std::move(rec));
    return reason;
  }

  // The checkpoint state of the chain ending at `h`: whether it ends with a
  // checkpoint and, if not, how many records follow the last one (looked for
  // among the last every_records + 1 records; an older chain that predates
  // checkpoints counts as that many).
  Status LoadCheckpointState(const std::optional<ChainHead>& h) {
    uncovered = 0;
    first_uncovered_at.reset();
    last_checkpoint_reason.clear();
    if (!h) {
      return OkStatus();
    }
    const int64_t window = std::min<int64_t>(h->seq, checkpoint.every_records + 1);
    AuditFilter f;
    f.chain_id = chain_id;
    f.after_seq = h->seq - window;
    f.limit = static_cast<size_t>(window);
    JITBROKER_ASSIGN_OR_RETURN(const std::vector<AuditRecord> recs, store->ListAudit(f));
    int64_t last_checkpoint = h->seq - window;
    for (const AuditRecord& r : recs) {
      if (IsCheckpoint(r.body)) {
        last_checkpoint = r.seq;
        const auto cp = r.body.find("checkpoint");
        last_checkpoint_reason = cp != r.body.end() && cp->is_object()
                                     ? cp->value("reason", std::string())
                                     : std::string();
      }
    }
    uncovered = h->seq - last_checkpoint;
    if (uncovered > 0) {
      last_checkpoint_reason.clear();
      first_uncovered_at = checkpoint.clock->Now();
    }
    return OkStatus();
  }

  // The idle committer's look at the clock.
  void IdleCheckpoint() {
    if (!IntervalDue()) {
      return;
    }
    std::vector<std::unique_ptr<Pending>> group;
    group.push_back(std::make_unique<Pending>());
    Status st;
    try {
      st = CommitGroup(group);
    } catch (...) {
      SetDirty(true);
      head_stale = true;
      st = std::unexpected(Unavailable("audit_unavailable", "the audit log is unavailable",
                                       "checkpoint: " + CurrentExceptionText()));
    }
    if (!st) {
      log::Get("audit")->warn("audit checkpoint failed error={}", st.error().ToString());
    }
  }

  Status CommitGroup(std::vector<std::unique_ptr<Pending>>& group) {
    if (head_stale) {
      Result<std::optional<ChainHead>> h = store->AuditHead(chain_id);
      if (!h) {
        return std::unexpected(AsUnavailable(std::move(h).error()));
      }
      if (checkpoint.key) {
        Status st = LoadCheckpointState(*h);
        if (!st) {
          return std::unexpected(AsUnavailable(std::move(st).error()));
        }
      }
      std::lock_guard lock(mu);
      head = std::move(*h);
      head_stale = false;
    }
    if (file_dirty && file_sync == FileSync::kCommit) {
      Status st = Reconcile();
      if (!st) {
        ++file_errors;
        log::Get("audit")->error("audit file reconcile failed path={} error={}", path,
                                 st.error().ToString());
        return std::unexpected(AsUnavailable(std::move(st).error()));
      }
    }
    std::vector<WriteBatch> batches;
    std::vector<AuditRecord> records;
    std::optional<ChainHead> h;
    std::optional<TimePoint> checkpoint_at;
    std::string checkpoint_reason;
    for (int attempt = 1;; ++attempt) {
      RefuseTakenReplayKeys(group);
      RefuseConflicts(group);
      if (group.empty()) {
        return OkStatus();
      }
      batches.clear();
      batches.reserve(group.size());
      size_t n_events = 0;
      for (auto& p : group) {
        batches.push_back(std::move(p->batch));
        n_events += p->events.size();
      }
      {
        std::lock_guard lock(mu);
        h = head;
      }
      // The events exist only as the chained `records` the store receives
      // (Store::Apply reads those; each batch's audit_events is empty).
      records.clear();
      records.reserve(n_events + 1);
      for (auto& p : group) {
        for (PreparedAuditEvent& event : p->events) {
          AuditRecord rec = ChainPrepared(h, std::move(event));
          rec.chain_id = chain_id;
          h = ChainHead{rec.seq, rec.hash};
          records.push_back(std::move(rec));
        }
      }
      checkpoint_at.reset();
      checkpoint_reason.clear();
      if (checkpoint.key) {
        JITBROKER_ASSIGN_OR_RETURN(checkpoint_reason, AppendCheckpointIfDue(group, h, records));
        checkpoint_at = checkpoint.clock->Now();
      }

      Status applied = store->Apply(batches, records);
      if (applied) {
        break;
      }
      if (LostRace(applied.error()) && attempt < kMaxRaceRetries) {
        // Another process changed a row or took a key after our checks; the
        // store wrote nothing. Check again: this time the loser is refused.
        log::Get("audit")->info("store refused a checked group; checking again batches={} error={}",
                                batches.size(), applied.error().ToString());
        Unchain(group, batches, records);
        continue;
      }
      // The store may have committed despite the error; trust only what it
      // reports next time.
      head_stale = true;
      SetDirty(true);
      log::Get("audit")->warn("store apply failed batches={} error={}", batches.size(),
                              applied.error().ToString());
      return std::unexpected(AsUnavailable(std::move(applied).error()));
    }
    {
      std::lock_guard lock(mu);
      head = h;
      stats.commits += 1;
      stats.batches += batches.size();
      stats.records += records.size();
    }
    if (checkpoint_at) {
      if (!checkpoint_reason.empty()) {
        uncovered = 0;
        first_uncovered_at.reset();
        last_checkpoint_reason = checkpoint_reason;
      } else if (!records.empty()) {
        uncovered += static_cast<int64_t>(records.size());
        last_checkpoint_reason.clear();
        if (!first_uncovered_at) {
          first_uncovered_at = checkpoint_at;
        }
      }
    }
    if (records.empty()) {
      return OkStatus();
    }
    return file_sync == FileSync::kCommit ? WriteSynced(records) : WriteDerived(records);
  }

  static std::string Lines(const std::vector<AuditRecord>& records) {
    size_t text_size = 0;
    for (const AuditRecord& rec : records) {
      text_size += rec.text.size() + 1;
    }
    std::string text;
    text.reserve(text_size);
    for (const AuditRecord& rec : records) {
      AppendLine(text, rec);
    }
    return text;
  }

  // FileSync::kCommit: the group's records are in the file and synced before
  // its callers wake, or the group fails.
  Status WriteSynced(const std::vector<AuditRecord>& records) {
    Status written = WriteAll(fd, Lines(records), path);
    if (written && ::fdatasync(fd) != 0) {
      written = std::unexpected(FileError(path, "fdatasync", errno));
    }
    if (!written) {
      ++file_errors;
      SetDirty(true);
      log::Get("audit")->error("audit file write failed path={} error={}", path,
                               written.error().ToString());
      return std::unexpected(AsUnavailable(std::move(written).error()));
    }
    file_written += records.size();
    RaiseTo(file_synced, file_written.load());
    ++file_syncs;
    return OkStatus();
  }

  // FileSync::kInterval: the records are durable in the store; the file
  // follows, in order, and the syncer makes it durable. A file that fell
  // behind is repaired from the store (which now holds this group too) at
  // most once per file_sync_interval; a failure never fails the group.
  Status WriteDerived(const std::vector<AuditRecord>& records) {
    if (sync_failed.exchange(false)) {
      SetDirty(true);
    }
    const auto now = std::chrono::steady_clock::now();
    if (file_dirty) {
      if (now < next_repair) {
        return OkStatus();
      }
      Status repaired = Reconcile();
      if (repaired) {
        if (file_failing) {
          file_failing = false;
          log::Get("audit")->info("event=audit_file_repaired path={}", path);
        }
        return OkStatus();
      }
      FileFailed(repaired.error(), now);
      return OkStatus();
    }
    Status written = WriteAll(fd, Lines(records), path);
    if (!written) {
      SetDirty(true);
      FileFailed(written.error(), now);
      return OkStatus();
    }
    file_written += records.size();
    return OkStatus();
  }

  void FileFailed(const Error& e, std::chrono::steady_clock::time_point now) {
    ++file_errors;
    next_repair = now + file_sync_interval;
    if (!file_failing) {
      file_failing = true;
      log::Get("audit")->error(
          "event=audit_file_behind path={} error={} (the store holds the records; the file is "
          "repaired from it when it can be written)",
          path, e.ToString());
    }
  }
};

Journal::~Journal() { Stop(); }

Result<std::unique_ptr<Journal>> Journal::Create(Store* store, std::string jsonl_path,
                                                 size_t max_group) {
  JournalOptions options;
  options.max_group = max_group;
  return Create(store, std::move(jsonl_path), std::move(options));
}

Result<std::unique_ptr<Journal>> Journal::Create(Store* store, std::string jsonl_path,
                                                 JournalOptions options) {
  const size_t max_group = options.max_group;
  if (options.checkpoint.key &&
      (options.checkpoint.clock == nullptr || options.checkpoint.every_records < 1 ||
       options.checkpoint.every_seconds < 1 || options.checkpoint.poll.count() < 1)) {
    return std::unexpected(InvalidArgument(
        "invalid_config", "journal checkpoints need a clock and positive intervals"));
  }
  if (store == nullptr || jsonl_path.empty() || options.chain_id.empty()) {
    return std::unexpected(
        InvalidArgument("invalid_config", "journal needs a store, a path and a chain id"));
  }
  std::unique_ptr<Journal> journal(new Journal());
  journal->impl_ = std::make_unique<Impl>();
  Impl& impl = *journal->impl_;
  impl.store = store;
  impl.chain_id = std::move(options.chain_id);
  impl.path = std::move(jsonl_path);
  impl.max_group = std::max<size_t>(max_group, 1);
  impl.file_sync = options.file_sync;
  impl.file_sync_interval = std::max(options.file_sync_interval, std::chrono::milliseconds(1));

  impl.fd = ::open(impl.path.c_str(), O_RDWR | O_APPEND | O_CREAT | O_CLOEXEC, 0600);
  if (impl.fd < 0) {
    return std::unexpected(FileError(impl.path, "open", errno));
  }
  // Two writers appending to one chain file would interleave their chains.
  if (::flock(impl.fd, LOCK_EX | LOCK_NB) != 0) {
    if (errno == EWOULDBLOCK) {
      Error e =
          FailedPrecondition("audit_file_locked", "the audit file is in use by another journal");
      e.detail = impl.path;
      return std::unexpected(std::move(e));
    }
    return std::unexpected(FileError(impl.path, "lock", errno));
  }
  FsyncParentDir(impl.path);

  // Two replicas writing one chain in a shared store would fork it.
  JITBROKER_RETURN_IF_ERROR(store->ClaimAuditChain(impl.chain_id));
  JITBROKER_ASSIGN_OR_RETURN(impl.head, store->AuditHead(impl.chain_id));
  JITBROKER_RETURN_IF_ERROR(impl.Reconcile());
  impl.checkpoint = std::move(options.checkpoint);
  if (impl.checkpoint.key) {
    JITBROKER_RETURN_IF_ERROR(impl.LoadCheckpointState(impl.head));
  }

  Impl* raw = journal->impl_.get();
  impl.committer = std::jthread([raw] { raw->Run(); });
  if (impl.file_sync == FileSync::kInterval) {
    impl.syncer = std::jthread([raw] { raw->RunSyncer(); });
  }
  if (impl.checkpoint.key) {
    // The last run stopped without its shutdown checkpoint: anchor its tail.
    JITBROKER_RETURN_IF_ERROR(journal->Checkpoint("startup"));
  }
  return journal;
}

Status Journal::Checkpoint(std::string_view reason) {
  return Enqueue(std::string(reason), /*forced=*/true);
}

Status Journal::CheckpointIfDue() { return Enqueue("interval", /*forced=*/false); }

Status Journal::Impl::SubmitAndWait(std::unique_ptr<Pending> pending, const char* what) {
  std::future<Status> done = pending->done.get_future();
  {
    std::lock_guard lock(mu);
    if (stopping) {
      return std::unexpected(Unavailable("journal_stopped", "the audit journal is stopped"));
    }
    queue.push_back(std::move(pending));
  }
  cv.notify_one();
  try {
    return done.get();
  } catch (const std::exception& e) {
    return std::unexpected(Unavailable("audit_unavailable", "the audit log is unavailable",
                                       std::string(what) + ": " + e.what()));
  }
}

Status Journal::Enqueue(std::string checkpoint_reason, bool forced) {
  if (!impl_->checkpoint.key) {
    return OkStatus();
  }
  auto pending = std::make_unique<Pending>();
  pending->checkpoint_reason = std::move(checkpoint_reason);
  pending->checkpoint_forced = forced;
  return impl_->SubmitAndWait(std::move(pending), "checkpoint");
}

Status Journal::Commit(WriteBatch batch) {
  // A move the transition table forbids is a bug of the caller: refuse it
  // before anything is chained (include/jitbroker/states.h).
  if (Status moves = batch.CheckTransitions(); !moves) {
    log::Get("audit")->error("event=invalid_transition {}", moves.error().ToString());
    return moves;
  }
  auto pending = std::make_unique<Pending>();
  // Serialising the events is the costly part of chaining: do it here, in
  // parallel across callers, not on the single committer thread.
  pending->events.reserve(batch.audit_events.size());
  for (Json& event : batch.audit_events) {
    pending->events.push_back(PrepareAuditEvent(std::move(event)));
  }
  batch.audit_events.clear();
  pending->batch = std::move(batch);
  return impl_->SubmitAndWait(std::move(pending), "commit");
}

void Journal::SetObserver(CommitObserver observer) {
  std::lock_guard lock(impl_->mu);
  impl_->observer = std::move(observer);
}

JournalStats Journal::Stats() const {
  std::lock_guard lock(impl_->mu);
  JournalStats s = impl_->stats;
  s.file_syncs = impl_->file_syncs.load();
  s.file_errors = impl_->file_errors.load();
  return s;
}

void Journal::CollectMetrics(std::vector<MetricFamily>& out) const {
  const Impl& i = *impl_;
  const auto value = [](uint64_t v) { return static_cast<double>(v); };
  out.push_back({"jitbroker_audit_file_syncs_total",
                 "counter",
                 "fdatasync calls that made the JSONL audit file durable.",
                 {{"", value(i.file_syncs.load())}}});
  out.push_back({"jitbroker_audit_file_errors_total",
                 "counter",
                 "Failures to write, sync or repair the JSONL audit file.",
                 {{"", value(i.file_errors.load())}}});
  const uint64_t written = i.file_written.load();
  const uint64_t synced = i.file_synced.load();
  out.push_back({"jitbroker_audit_file_unsynced_records",
                 "gauge",
                 "Records written to the JSONL audit file and not yet synced.",
                 {{"", value(written > synced ? written - synced : 0)}}});
  out.push_back({"jitbroker_audit_file_behind",
                 "gauge",
                 "1 while the JSONL audit file lacks records the store holds.",
                 {{"", i.file_behind.load() ? 1.0 : 0.0}}});
}

std::optional<ChainHead> Journal::Head() const {
  std::lock_guard lock(impl_->mu);
  return impl_->head;
}

size_t Journal::QueuedForTesting() const {
  std::lock_guard lock(impl_->mu);
  return impl_->queue.size();
}

void Journal::Stop() {
  if (!impl_) {
    return;
  }
  bool already = false;
  {
    std::lock_guard lock(impl_->mu);
    already = impl_->stopping;
  }
  if (!already && impl_->checkpoint.key) {
    if (Status st = Checkpoint("shutdown"); !st) {
      log::Get("audit")->error("audit shutdown checkpoint failed error={}", st.error().ToString());
    }
  }
  {
    std::lock_guard lock(impl_->mu);
    impl_->stopping = true;
  }
  impl_->cv.notify_all();
  if (impl_->committer.joinable()) {
    impl_->committer.join();
  }
  // The committer is gone: its state is ours. A file that fell behind gets a
  // last repair, then the syncer makes the tail durable.
  if (impl_->file_dirty && !already) {
    if (Status st = impl_->Reconcile(); !st) {
      log::Get("audit")->error("event=audit_file_behind path={} error={} at shutdown", impl_->path,
                               st.error().ToString());
    }
  }
  impl_->StopSyncer();
}

}  // namespace jitbroker::audit
