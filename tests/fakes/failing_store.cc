#include "tests/fakes/failing_store.h"

#include <functional>
#include <string>
#include <utility>

#include "jitbroker/error.h"

namespace jitbroker::testing {

namespace {

Error Injected(std::string_view what) {
  return Unavailable("store_unavailable", "the store is unavailable",
                     "injected failure: " + std::string(what));
}

}  // namespace

void FailingStore::FailApplyNumber(uint64_t n) {
  std::lock_guard lock(mu_);
  fail_numbers_.insert(n);
}

void FailingStore::FailNextApply() {
  std::lock_guard lock(mu_);
  fail_numbers_.insert(apply_calls_ + 1);
}

void FailingStore::SetFailAllApplies(bool fail) {
  std::lock_guard lock(mu_);
  fail_all_applies_ = fail;
}

void FailingStore::SetFailReads(bool fail) {
  std::lock_guard lock(mu_);
  fail_reads_ = fail;
}

uint64_t FailingStore::ApplyCalls() const {
  std::lock_guard lock(mu_);
  return apply_calls_;
}

uint64_t FailingStore::FailedApplies() const {
  std::lock_guard lock(mu_);
  return failed_applies_;
}

bool FailingStore::ReadsFail() const {
  std::lock_guard lock(mu_);
  return fail_reads_;
}

void FailingStore::RunBeforeApply(uint64_t n, std::function<void()> hook) {
  std::lock_guard lock(mu_);
  before_apply_[n] = std::move(hook);
}

Status FailingStore::Apply(std::span<const WriteBatch> batches,
                           std::span<const AuditRecord> audit) {
  std::function<void()> hook;
  {
    std::lock_guard lock(mu_);
    const uint64_t n = ++apply_calls_;
    if (fail_all_applies_ || fail_numbers_.erase(n) > 0) {
      ++failed_applies_;
      return std::unexpected(Injected("apply #" + std::to_string(n)));
    }
    if (auto it = before_apply_.find(n); it != before_apply_.end()) {
      hook = std::move(it->second);
      before_apply_.erase(it);
    }
  }
  if (hook) {
    hook();
  }
  return inner_->Apply(batches, audit);
}

Result<bool> FailingStore::TryLease(std::string_view key, Seconds duration) {
  {
    std::lock_guard lock(mu_);
    if (fail_all_applies_) {
      return std::unexpected(Injected("TryLease"));
    }
  }
  return inner_->TryLease(key, duration);
}

void FailingStore::WatchChanges(std::function<void()> on_change) {
  inner_->WatchChanges(std::move(on_change));
}

Result<std::vector<AuditChainHead>> FailingStore::ListAuditChains() {
  if (ReadsFail()) {
    return std::unexpected(Injected("ListAuditChains"));
  }
  return inner_->ListAuditChains();
}

Status FailingStore::ClaimAuditChain(std::string_view chain_id) {
  return inner_->ClaimAuditChain(chain_id);
}

Result<std::optional<ChainHead>> FailingStore::AuditHead(std::string_view chain_id) {
  if (ReadsFail()) {
    return std::unexpected(Injected("AuditHead"));
  }
  return inner_->AuditHead(chain_id);
}

Result<std::optional<SessionRecord>> FailingStore::GetSession(std::string_view id) {
  if (ReadsFail()) {
    return std::unexpected(Injected("GetSession"));
  }
  return inner_->GetSession(id);
}

Result<std::vector<SessionRecord>> FailingStore::ListSessions(const SessionFilter& f) {
  if (ReadsFail()) {
    return std::unexpected(Injected("ListSessions"));
  }
  return inner_->ListSessions(f);
}

Result<std::optional<GrantRecord>> FailingStore::GetGrant(std::string_view id) {
  if (ReadsFail()) {
    return std::unexpected(Injected("GetGrant"));
  }
  return inner_->GetGrant(id);
}

Result<std::vector<GrantRecord>> FailingStore::ListGrants(std::string_view session_id) {
  if (ReadsFail()) {
    return std::unexpected(Injected("ListGrants"));
  }
  return inner_->ListGrants(session_id);
}

Result<std::vector<SessionRecord>> FailingStore::ListSessionsDue(TimePoint now, size_t limit) {
  if (ReadsFail()) {
    return std::unexpected(Injected("ListSessionsDue"));
  }
  return inner_->ListSessionsDue(now, limit);
}

Result<std::vector<GrantRecord>> FailingStore::ListGrantsByState(
    GrantState state, std::optional<TimePoint> expires_before, std::string_view issuer,
    size_t limit) {
  if (ReadsFail()) {
    return std::unexpected(Injected("ListGrantsByState"));
  }
  return inner_->ListGrantsByState(state, expires_before, issuer, limit);
}

Result<std::vector<GrantRecord>> FailingStore::ListPendingApprovals(const PendingApprovalQuery& q) {
  if (ReadsFail()) {
    return std::unexpected(Injected("ListPendingApprovals"));
  }
  return inner_->ListPendingApprovals(q);
}

Result<PendingApprovalCounts> FailingStore::CountPendingApprovals(std::string_view session_id,
                                                                  std::string_view principal_id,
                                                                  TimePoint now) {
  if (ReadsFail()) {
    return std::unexpected(Injected("CountPendingApprovals"));
  }
  return inner_->CountPendingApprovals(session_id, principal_id, now);
}

Result<std::vector<RevocationTask>> FailingStore::ListRevocationsDue(TimePoint now, size_t limit) {
  if (ReadsFail()) {
    return std::unexpected(Injected("ListRevocationsDue"));
  }
  return inner_->ListRevocationsDue(now, limit);
}

Result<std::vector<AuditRecord>> FailingStore::ListAudit(const AuditFilter& f) {
  if (ReadsFail()) {
    return std::unexpected(Injected("ListAudit"));
  }
  return inner_->ListAudit(f);
}

void FailingStore::BlindReplayLookups(int n) {
  std::lock_guard lock(mu_);
  blind_replay_lookups_ = n;
}

Result<bool> FailingStore::ReplayReserved(std::string_view key, TimePoint now) {
  if (ReadsFail()) {
    return std::unexpected(Injected("ReplayReserved"));
  }
  {
    std::lock_guard lock(mu_);
    if (blind_replay_lookups_ > 0) {
      --blind_replay_lookups_;
      return false;
    }
  }
  return inner_->ReplayReserved(key, now);
}

Result<size_t> FailingStore::PruneReplayReservations(TimePoint now, size_t limit) {
  {
    std::lock_guard lock(mu_);
    if (fail_all_applies_) {
      return std::unexpected(Injected("PruneReplayReservations"));
    }
  }
  return inner_->PruneReplayReservations(now, limit);
}

Status FailingStore::Ping() {
  if (ReadsFail()) {
    return std::unexpected(Injected("Ping"));
  }
  return inner_->Ping();
}

}  // namespace jitbroker::testing
