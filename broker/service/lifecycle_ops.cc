// The revocation lifecycle (issue #3, docs/concepts.md "Lifecycle"): the sweeper's pass over
// deadlines, retries of queued upstream revocations, reconciliation after a
// crash and admin bulk revocation.
#include <algorithm>
#include <chrono>
#include <iterator>
#include <map>
#include <random>
#include <set>

#include "broker/audit/events.h"
#include "broker/common/log.h"
#include "broker/common/time_util.h"
#include "broker/crypto/crypto.h"
#include "broker/service/broker_service.h"
#include "broker/service/internal.h"

namespace jitbroker::service {

using internal::IsStateConflict;

namespace {

constexpr size_t kSweepPage = 200;

// Exponential backoff with jitter for queued revocations: 1 s, 2 s, 4 s, …
// capped at 5 minutes.
Seconds RetryDelay(int64_t attempts) {
  const int64_t base = std::min<int64_t>(300, int64_t{1} << std::min<int64_t>(attempts, 9));
  static thread_local std::mt19937 rng(std::random_device{}());
  std::uniform_int_distribution<int64_t> jitter(0, base / 2);
  return Seconds(std::min<int64_t>(300, base / 2 + jitter(rng) + 1));
}

// Commits `batch`, a set of independent one-grant changes (grants[i] with
// audit_events[i] under preconditions[i]). If another process moved one of
// those grants first, the store refuses the whole batch: each change is then
// committed alone and the ones that lost are dropped (their grant already
// has its new state and record). Returns how many were dropped.
Result<size_t> CommitEachOnConflict(audit::Journal& journal, WriteBatch batch) {
  WriteBatch all = batch;
  Status st = journal.Commit(std::move(all));
  if (st) {
    return size_t{0};
  }
  if (!IsStateConflict(st.error())) {
    return std::unexpected(std::move(st).error());
  }
  size_t lost = 0;
  for (size_t i = 0; i < batch.grants.size(); ++i) {
    WriteBatch one;
    one.grants.push_back(std::move(batch.grants[i]));
    one.audit_events.push_back(std::move(batch.audit_events[i]));
    one.preconditions.push_back(std::move(batch.preconditions[i]));
    Status alone = journal.Commit(std::move(one));
    if (!alone && !IsStateConflict(alone.error())) {
      return std::unexpected(std::move(alone).error());
    }
    lost += alone ? 0 : 1;
  }
  return lost;
}

}  // namespace

Status BrokerService::ExpireApproval(const std::string& grant_id, const std::string& request_id) {
  JITBROKER_ASSIGN_OR_RETURN(auto found, store_->GetGrant(grant_id));
  if (!found) {
    return OkStatus();
  }
  std::unique_lock lock(LockFor(found->session_id));
  JITBROKER_ASSIGN_OR_RETURN(auto g, store_->GetGrant(grant_id));
  const TimePoint now = clock_->Now();
  if (!g || (g->state != GrantState::kPending && g->state != GrantState::kApproved) ||
      !g->expires_at || *g->expires_at > now) {
    return OkStatus();
  }
  const bool was_approved = g->state == GrantState::kApproved;
  const GrantState stored_state = g->state;
  g->state = GrantState::kExpired;
  g->sealed_request.clear();  // kept only while the grant may still be minted
  g->approval_expired = true;
  g->decision["result"] = "deny";
  g->decision["code"] = "approval_expired";
  g->decision["reason"] = was_approved ? "approved, but not collected before the approval expired"
                                       : "no approver decided before the approval expired";
  WriteBatch batch;
  batch.audit_events.push_back(
      audit::GrantEvent("approval.expired", *g, now, "denied", request_id));
  batch.PutGrant(*g, stored_state);
  if (Status st = CommitAndAnnounce(std::move(batch)); !st) {
    // Decided, collected or expired by another process meanwhile: its
    // record stands.
    return IsStateConflict(st.error()) ? OkStatus() : st;
  }
  NotifyGrantChanged();
  return OkStatus();
}

Result<bool> BrokerService::RetryRevocation(const RevocationTask& task, TimePoint now) {
  JITBROKER_ASSIGN_OR_RETURN(auto g, store_->GetGrant(task.grant_id));
  WriteBatch batch;
  if (!g || g->state != GrantState::kRevoking) {
    batch.revocations_done.push_back(task.grant_id);  // resolved elsewhere
    JITBROKER_RETURN_IF_ERROR(journal_->Commit(std::move(batch)));
    return true;
  }
  if (now >= task.expires_at) {
    // The credential has expired upstream: nothing is left to revoke.
    g->state = GrantState::kExpired;
    g->revoke_outcome = "expired";
    g->sealed_handle.clear();
    batch.revocations_done.push_back(task.grant_id);
    batch.audit_events.push_back(
        audit::GrantEvent("credential.expired", *g, now, "expired_before_revocation", "sweeper"));
    batch.PutGrant(*g, GrantState::kRevoking);
    JITBROKER_RETURN_IF_ERROR(journal_->Commit(std::move(batch)));
    return true;
  }
  Issuer* issuer = FindIssuer(task.issuer);
  GrantRecord sealed = *g;
  sealed.sealed_handle = task.sealed_handle;
  auto handle = sealer_.Open(sealed.id, sealed.sealed_handle);
  Result<RevokeOutcome> result =
      issuer == nullptr ? Result<RevokeOutcome>(std::unexpected(
                              Unavailable("issuer_not_configured", "issuer is not configured")))
      : !handle         ? Result<RevokeOutcome>(std::unexpected(handle.error()))
                : issuer->Revoke(RevokeRequest{g->id, std::move(*handle), task.expires_at, now});
  if (result) {
    g->state = GrantState::kRevoked;
    g->revoked_at = now;
    g->revoke_outcome = std::string(RevokeOutcomeName(result->kind));
    g->sealed_handle.clear();
    batch.revocations_done.push_back(task.grant_id);
    batch.audit_events.push_back(
        audit::GrantEvent("credential.revoked", *g, now, g->revoke_outcome, "sweeper"));
    batch.PutGrant(*g, GrantState::kRevoking);
    JITBROKER_RETURN_IF_ERROR(journal_->Commit(std::move(batch)));
    metrics_->CountRevocation(g->revoke_outcome);
    NotifyGrantChanged();
    return true;
  }
  RevocationTask next = task;
  next.attempts += 1;
  next.next_attempt_at = now + RetryDelay(next.attempts);
  next.last_error = std::string(result.error().Reason());
  batch.revocations.push_back(next);
  JITBROKER_RETURN_IF_ERROR(journal_->Commit(std::move(batch)));
  log::Get("lifecycle")
      ->warn(
          "event=revoke_retry_failed grant_id={} issuer={} attempts={} next_in_s={} error=\"{}\"",
          task.grant_id, task.issuer, next.attempts,
          ToUnixSeconds(next.next_attempt_at) - ToUnixSeconds(now), result.error().ToString());
  return false;
}

Result<SweepStats> BrokerService::Sweep() {
  std::lock_guard sweep_lock(sweep_mu_);
  const auto start = std::chrono::steady_clock::now();
  SweepStats stats;
  Status st = SweepPass(stats);
  // A failed pass is observed too, with what it handled before it failed.
  metrics_->ObserveSweep(
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count(),
      {{"sessions_ended", stats.sessions_ended},
       {"grants_expired", stats.grants_expired},
       {"approvals_expired", stats.approvals_expired},
       {"revocations_retried", stats.revocations_retried},
       {"replay_keys_pruned", stats.replay_keys_pruned}});
  if (!st) {
    return std::unexpected(std::move(st).error());
  }
  return stats;
}

Status BrokerService::SweepPass(SweepStats& stats) {
  CallContext ctx;
  ctx.request_id = "sweeper";
  TimePoint now = clock_->Now();

  // Sessions past their TTL or stall deadline (index range scans).
  JITBROKER_ASSIGN_OR_RETURN(auto due, store_->ListSessionsDue(now, kSweepPage));
  for (const auto& candidate : due) {
    JITBROKER_ASSIGN_OR_RETURN(const bool mine, ClaimWork("session-end:" + candidate.id));
    if (!mine) {
      continue;  // another replica is ending it
    }
    std::unique_lock lock(LockFor(candidate.id));
    JITBROKER_ASSIGN_OR_RETURN(auto s, store_->GetSession(candidate.id));
    if (!s || s->state != SessionState::kActive) {
      continue;
    }
    SessionRecord rec = *s;
    auto st = EnsureLive(ctx, rec);  // ends it (expired/stalled) when due
    if (!st && st.error().code == ErrorCode::kFailedPrecondition) {
      ++stats.sessions_ended;
    } else if (!st) {
      return std::unexpected(st.error());
    }
  }

  // Credentials past their expiry: the sealed handle goes with them. One
  // that outlives its grant upstream (a GitHub token lives an hour whatever
  // the grant's TTL) is revoked upstream instead.
  now = clock_->Now();
  JITBROKER_ASSIGN_OR_RETURN(auto expired,
                             store_->ListGrantsByState(GrantState::kActive, now, "", kSweepPage));
  std::map<std::string, std::vector<std::string>> revoke_at_expiry;  // session -> grant ids
  if (!expired.empty()) {
    WriteBatch batch;
    for (auto& g : expired) {
      if (!g.expires_at || *g.expires_at > now) {
        continue;  // the index is by whole seconds
      }
      if (CredentialEnd(g, now) > now && !g.sealed_handle.empty()) {
        revoke_at_expiry[g.session_id].push_back(g.id);
        continue;
      }
      g.state = GrantState::kExpired;
      g.sealed_handle.clear();
      batch.audit_events.push_back(
          audit::GrantEvent("credential.expired", g, now, "expired", "sweeper"));
      batch.PutGrant(g, GrantState::kActive);
    }
    if (!batch.grants.empty()) {
      const size_t expiring = batch.grants.size();
      JITBROKER_ASSIGN_OR_RETURN(const size_t lost,
                                 CommitEachOnConflict(*journal_, std::move(batch)));
      stats.grants_expired += expiring - lost;
    }
  }
  for (const auto& [session_id, ids] : revoke_at_expiry) {
    JITBROKER_ASSIGN_OR_RETURN(const bool mine, ClaimWork("revoke-at-expiry:" + session_id));
    if (!mine) {
      continue;
    }
    std::unique_lock lock(LockFor(session_id));
    std::vector<GrantRecord> live;
    for (const auto& id : ids) {
      JITBROKER_ASSIGN_OR_RETURN(auto fresh, store_->GetGrant(id));
      if (fresh && fresh->state == GrantState::kActive) {
        fresh->extra["revoke_reason"] = "grant_expired";
        live.push_back(std::move(*fresh));
      }
    }
    if (live.empty()) {
      continue;
    }
    WriteBatch batch;
    (void)RevokeGrants(live, clock_->Now(), "sweeper", batch);
    if (Status st = journal_->Commit(std::move(batch)); !st) {
      if (!IsStateConflict(st.error())) {
        return std::unexpected(std::move(st).error());
      }
      continue;  // another process moved one of them: the next sweep reads again
    }
    stats.grants_expired += live.size();
  }

  // Approvals nobody decided (or nobody collected) in time: expiry is a denial.
  for (const GrantState state : {GrantState::kPending, GrantState::kApproved}) {
    JITBROKER_ASSIGN_OR_RETURN(auto lapsed, store_->ListGrantsByState(state, now, "", kSweepPage));
    for (const auto& g : lapsed) {
      if (g.expires_at && *g.expires_at <= now) {
        JITBROKER_RETURN_IF_ERROR(ExpireApproval(g.id, "sweeper"));
        ++stats.approvals_expired;
      }
    }
  }

  // Upstream revocations that failed earlier.
  JITBROKER_ASSIGN_OR_RETURN(auto retries, store_->ListRevocationsDue(now, kSweepPage));
  for (const auto& task : retries) {
    JITBROKER_ASSIGN_OR_RETURN(const bool mine, ClaimWork("revocation:" + task.grant_id));
    if (!mine) {
      continue;  // another replica is retrying it
    }
    ++stats.revocations_retried;
    Result<bool> done = RetryRevocation(task, now);
    if (!done && !IsStateConflict(done.error())) {
      return std::unexpected(std::move(done).error());
    }
    // A conflict: another process resolved the grant; the next sweep drops
    // the task (RetryRevocation, "resolved elsewhere").
    stats.revocations_done += done && *done ? 1 : 0;
  }

  // Mints interrupted long ago, by this process or a replica that died (a
  // live mint never takes kMintGrace).
  JITBROKER_RETURN_IF_ERROR(ReconcileMinting(now - kMintGrace));

  // CI token replay reservations that can no longer matter: their tokens
  // fail the time checks now (token_exchange.cc).
  JITBROKER_ASSIGN_OR_RETURN(stats.replay_keys_pruned,
                             store_->PruneReplayReservations(clock_->Now(), kSweepPage));
  return OkStatus();
}

Result<bool> BrokerService::ClaimWork(const std::string& key) {
  if (!options_.shared_store) {
    return true;  // no other process to share the work with
  }
  return store_->TryLease(key, kWorkLease);
}

Status BrokerService::Reconcile() {
  // Alone on its store, nothing else is minting at start: every `minting`
  // grant was interrupted. With replicas, another may be minting right now.
  return ReconcileMinting(
      options_.shared_store ? std::optional<TimePoint>(clock_->Now() - kMintGrace) : std::nullopt);
}

Status BrokerService::ReconcileMinting(std::optional<TimePoint> began_before) {
  // A grant left in "minting" was interrupted between its write-ahead record
  // and the commit of its credential: the upstream may have issued one that
  // nobody received and that we hold no handle for. It lives at most its TTL.
  JITBROKER_ASSIGN_OR_RETURN(auto listed,
                             store_->ListGrantsByState(GrantState::kMinting, std::nullopt, "", 0));
  std::vector<GrantRecord> stuck;
  for (auto& g : listed) {
    const auto since = g.extra.find("minting_since");
    const bool dated = since != g.extra.end() && since->is_number_integer();
    // Undated rows were written before the field existed: long ago.
    if (!began_before || !dated || FromUnixSeconds(since->get<int64_t>()) <= *began_before) {
      stuck.push_back(std::move(g));
    }
  }
  if (stuck.empty()) {
    return OkStatus();
  }
  const TimePoint now = clock_->Now();
  WriteBatch batch;
  for (auto& g : stuck) {
    const TimePoint worst = g.created_at + Seconds(g.ttl_seconds);
    g.state = GrantState::kRevoked;
    g.revoked_at = now;
    g.revoke_outcome = "expiry_only";
    g.extra["reconciled"] = {
        {"reason", "interrupted mid-mint (a restart, or a replica that stopped)"},
        {"residual_seconds", std::max<int64_t>(0, ToUnixSeconds(worst) - ToUnixSeconds(now))}};
    batch.audit_events.push_back(
        audit::GrantEvent("credential.reconciled", g, now, "expiry_only", "startup"));
    batch.PutGrant(g, GrantState::kMinting);
    log::Get("lifecycle")
        ->error(
            "event=mint_reconciled grant_id={} issuer={} note=\"interrupted mid-mint; any "
            "credential "
            "issued upstream lives until its expiry\"",
            g.id, g.issuer);
  }
  JITBROKER_ASSIGN_OR_RETURN(const size_t lost, CommitEachOnConflict(*journal_, std::move(batch)));
  (void)lost;  // another process settled those
  return OkStatus();
}

// A bulk revocation goes on past a session or grant that another request or
// broker process changed after it was read (state_conflict): it is read
// again and revoked from its new state, so that one race does not leave the
// rest of the selection live and the admin with a 409 for work half done.
constexpr int kBulkAttempts = 3;

Result<BulkRevocation> BrokerService::BulkRevoke(const CallContext& ctx, BulkRevokeInput in) {
  JITBROKER_RETURN_IF_ERROR(CheckCaller(ctx, BodyCall::kBulkRevoke));
  const authn::Caller& c = ctx.caller;
  using Kind = BulkSelector::Kind;
  const BulkSelector& sel = in.selector;
  const std::string& reason = in.reason;
  if (sel.kind == Kind::kIssuer && FindIssuer(sel.value) == nullptr) {
    return std::unexpected(
        InvalidArgument("unknown_issuer", "issuer \"" + sel.value + "\" is not configured"));
  }
  // As the audit record and the log show it.
  const nlohmann::json selector =
      sel.kind == Kind::kPrincipal ? nlohmann::json{{"principal", sel.value}}
      : sel.kind == Kind::kAgent   ? nlohmann::json{{"agent", sel.value}}
      : sel.kind == Kind::kIssuer  ? nlohmann::json{{"issuer", sel.value}}
                                   : nlohmann::json{{"all", true}};
  const TimePoint now = clock_->Now();
  {
    WriteBatch batch;
    batch.audit_events.push_back(audit::AdminEvent("admin.bulk_revoke", c.principal_id, now,
                                                   {{"selector", selector}, {"reason", reason}},
                                                   "started", ctx.request_id));
    JITBROKER_RETURN_IF_ERROR(Commit(ctx, std::move(batch)));
  }
  log::Get("lifecycle")
      ->warn("event=bulk_revoke admin={} selector={} request_id={}", c.principal_id,
             selector.dump(), ctx.request_id);

  BulkRevocation out;
  out.selector = sel;
  out.reason = reason;
  // The answer lists the first outcomes and counts them all: bounded however
  // many credentials the selector holds.
  const auto record = [&](std::vector<RevocationOutcome>& done) {
    out.revocations_total += done.size();
    for (RevocationOutcome& o : done) {
      if (out.revocations.size() >= options_.bulk_listed_revocations) {
        break;
      }
      out.revocations.push_back(std::move(o));
    }
  };
  const std::string why = "bulk revoke by " + c.principal_id + ": " + reason;
  if (sel.kind == Kind::kIssuer) {
    // Only this issuer's credentials; the sessions go on.
    std::map<std::string, std::vector<GrantRecord>> by_session;
    for (const GrantState state :
         {GrantState::kActive, GrantState::kPending, GrantState::kApproved, GrantState::kMinting}) {
      JITBROKER_ASSIGN_OR_RETURN(auto gs,
                                 store_->ListGrantsByState(state, std::nullopt, sel.value, 0));
      for (auto& g : gs) {
        by_session[g.session_id].push_back(std::move(g));
      }
    }
    for (auto& [sid, grants] : by_session) {
      std::unique_lock lock(LockFor(sid));
      for (int attempt = 1;; ++attempt) {
        std::vector<GrantRecord> live;
        for (const auto& g : grants) {
          JITBROKER_ASSIGN_OR_RETURN(auto fresh, store_->GetGrant(g.id));
          if (fresh && IsLive(fresh->state)) {
            live.push_back(std::move(*fresh));
          }
        }
        if (live.empty()) {
          break;
        }
        WriteBatch batch;
        std::vector<RevocationOutcome> done =
            RevokeGrants(live, clock_->Now(), ctx.request_id, batch);
        Status committed = Commit(ctx, std::move(batch));
        if (!committed) {
          if (IsStateConflict(committed.error()) && attempt < kBulkAttempts) {
            continue;  // another process moved one of them: read them again
          }
          return std::unexpected(std::move(committed).error());
        }
        record(done);
        break;
      }
    }
  } else {
    // A page of the selected active sessions at a time, oldest first: each
    // page's sessions leave `active` as they are ended, so the next listing
    // starts where this one stopped. Sessions opened after this revoke began
    // (after its admin.bulk_revoke record) are not its to end.
    SessionFilter f;
    f.state = SessionState::kActive;
    f.limit = std::max<size_t>(options_.bulk_page, 1);
    if (sel.kind == Kind::kPrincipal) {
      f.principal_id = sel.value;
    }
    if (sel.kind == Kind::kAgent) {
      f.agent_id = sel.value;
    }
    std::string last_first;  // the previous page's first session
    for (bool more = true; more;) {
      JITBROKER_ASSIGN_OR_RETURN(auto sessions, store_->ListSessions(f));
      more = sessions.size() == f.limit;
      if (sessions.empty() || sessions.front().id == last_first) {
        break;  // done; or a listing that does not move on (never loop on it)
      }
      last_first = sessions.front().id;
      for (const auto& candidate : sessions) {
        if (candidate.created_at > now) {
          more = false;
          break;
        }
        std::unique_lock lock(LockFor(candidate.id));
        for (int attempt = 1;; ++attempt) {
          JITBROKER_ASSIGN_OR_RETURN(auto s, store_->GetSession(candidate.id));
          if (!s || s->state != SessionState::kActive) {
            break;  // ended meanwhile, here or by another process
          }
          auto ended = EndLocked(ctx, *s, SessionState::kRevoked, why, "session.revoked");
          if (!ended) {
            if (IsStateConflict(ended.error()) && attempt < kBulkAttempts) {
              continue;  // another process moved it or one of its grants: read again
            }
            return std::unexpected(std::move(ended).error());
          }
          ++out.sessions_revoked;
          record(ended->revocations);
          break;
        }
      }
    }
  }
  return out;
}

}  // namespace jitbroker::service
