// FailingStore: a Store decorator for fault-injection tests. It forwards every
// call to an inner Store, except that chosen Apply() calls fail (without
// reaching the inner store) with kUnavailable / "store_unavailable", and
// reads or Ping() can be made to fail the same way.
//
//   auto real = store::OpenSqliteStore({.path = db_path});   // or any Store
//   testing::FailingStore failing(real->get());
//   failing.FailApplyNumber(3);          // the 3rd Apply() from now fails
//   failing.SetFailAllApplies(true);     // every Apply() fails until reset
//   failing.SetFailReads(true);          // AuditHead/Get*/List*/ReplayReserved/Ping fail
//   failing.BlindReplayLookups(1);       // the next ReplayReserved() answers "not reserved",
//                                        // as a replica that has not seen a commit yet would
//   failing.RunBeforeApply(2, [&] { … });  // runs just before the 2nd Apply reaches the
//                                        // inner store: another process writing between
//                                        // the journal's checks and its transaction
//
// PruneReplayReservations and TryLease (writes outside Apply) fail while all
// applies fail.
//
// Apply() calls are counted from construction, 1-based (ApplyCalls()).
// Thread-safety: all methods are thread-safe. The inner store must outlive
// the decorator.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <mutex>
#include <optional>
#include <set>
#include <span>
#include <string_view>
#include <vector>

#include "jitbroker/store.h"

namespace jitbroker::testing {

class FailingStore final : public Store {
 public:
  explicit FailingStore(Store* inner) : inner_(inner) {}

  // Makes the Apply() call with this 1-based number (counted from
  // construction) fail. May be called several times for several numbers.
  void FailApplyNumber(uint64_t n);
  // Makes the next Apply() call fail.
  void FailNextApply();
  void SetFailAllApplies(bool fail);
  void SetFailReads(bool fail);
  void BlindReplayLookups(int n);
  // Runs `hook` (once) just before the Apply() call with this 1-based number
  // is forwarded, outside the decorator's lock.
  void RunBeforeApply(uint64_t n, std::function<void()> hook);
  uint64_t ApplyCalls() const;
  uint64_t FailedApplies() const;

  Status Apply(std::span<const WriteBatch> batches, std::span<const AuditRecord> audit) override;
  Status ClaimAuditChain(std::string_view chain_id) override;
  Result<std::vector<AuditChainHead>> ListAuditChains() override;
  void WatchChanges(std::function<void()> on_change) override;
  void CollectMetrics(std::vector<MetricFamily>& out) const override {
    inner_->CollectMetrics(out);
  }
  Result<bool> TryLease(std::string_view key, Seconds duration) override;
  Result<std::optional<TimePoint>> ServerTime() override { return inner_->ServerTime(); }
  Result<std::optional<ChainHead>> AuditHead(std::string_view chain_id) override;
  Result<std::optional<SessionRecord>> GetSession(std::string_view id) override;
  Result<std::vector<SessionRecord>> ListSessions(const SessionFilter& f) override;
  Result<std::optional<GrantRecord>> GetGrant(std::string_view id) override;
  Result<std::vector<GrantRecord>> ListGrants(std::string_view session_id) override;
  Result<std::vector<SessionRecord>> ListSessionsDue(TimePoint now, size_t limit) override;
  Result<std::vector<GrantRecord>> ListGrantsByState(GrantState state,
                                                     std::optional<TimePoint> expires_before,
                                                     std::string_view issuer,
                                                     size_t limit) override;
  Result<std::vector<GrantRecord>> ListPendingApprovals(const PendingApprovalQuery& q) override;
  Result<PendingApprovalCounts> CountPendingApprovals(std::string_view session_id,
                                                      std::string_view principal_id,
                                                      TimePoint now) override;
  Result<std::vector<RevocationTask>> ListRevocationsDue(TimePoint now, size_t limit) override;
  Result<std::vector<AuditRecord>> ListAudit(const AuditFilter& f) override;
  Result<bool> ReplayReserved(std::string_view key, TimePoint now) override;
  Result<size_t> PruneReplayReservations(TimePoint now, size_t limit) override;
  Status Ping() override;

 private:
  bool ReadsFail() const;

  Store* inner_;
  mutable std::mutex mu_;
  uint64_t apply_calls_ = 0;
  uint64_t failed_applies_ = 0;
  std::set<uint64_t> fail_numbers_;
  std::map<uint64_t, std::function<void()>> before_apply_;
  bool fail_all_applies_ = false;
  bool fail_reads_ = false;
  int blind_replay_lookups_ = 0;
};

}  // namespace jitbroker::testing
