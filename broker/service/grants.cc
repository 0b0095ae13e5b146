// Grant requests, their collection and revocation by id, and the long poll
// of a pending grant (docs/api.md, "Grants"). The decision and minting go
// through the grant pipeline (grant_pipeline.cc).
#include "broker/service/broker_service.h"

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <functional>
#include <set>
#include <thread>

#include "broker/audit/events.h"
#include "broker/common/log.h"
#include "broker/common/time_util.h"
#include "broker/crypto/crypto.h"
#include "broker/service/internal.h"
#include "broker/service/request_digest.h"

namespace jitbroker::service {

using internal::HeldByProxy;
using internal::SessionEnded;

Status BrokerService::CheckGrantRate(const SessionRecord& s) {
  struct Limit {
    KeyedRateLimiter* limiter;
    const std::string& key;
    const char* name;
    const char* whose;
  };
  for (const Limit& l : {Limit{session_rate_.get(), s.id, "grants_per_session", "this session"},
                         Limit{principal_rate_.get(), s.principal_id, "grants_per_principal",
                               "the sessions of this principal"}}) {
    if (l.limiter == nullptr) {
      return std::unexpected(Internal("no rate limiter", l.name));  // fail closed
    }
    const KeyedRateLimiter::Outcome out = l.limiter->Acquire(l.key);
    if (out.allowed) {
      continue;
    }
    metrics_->CountRateLimited(l.name);
    if (out.untracked) {
      log::Get("service")->warn("event=rate_limiter_full limit={} tracked={}", l.name,
                                l.limiter->TrackedKeys());
    }
    Error e =
        ResourceExhausted("rate_limited", std::string("too many grant requests for ") + l.whose +
                                              " (limits." + l.name + "); retry after " +
                                              std::to_string(out.retry_after.count()) + " s");
    e.retry_after = out.retry_after;
    return std::unexpected(std::move(e));
  }
  return OkStatus();
}

Result<GrantResponse> BrokerService::RequestGrant(const CallContext& ctx,
                                                  const std::string& session_id, GrantRequest req) {
  JITBROKER_RETURN_IF_ERROR(CheckCaller(ctx, BodyCall::kRequestGrant));
  Issuer* issuer = FindIssuer(req.issuer);
  if (issuer == nullptr) {
    return std::unexpected(
        InvalidArgument("unknown_issuer", "issuer \"" + req.issuer + "\" is not configured"));
  }
  if (issuer->Describe().proxy_only && !ctx.via_proxy) {
    return std::unexpected(PermissionDenied(
        "proxy_only", "issuer \"" + req.issuer +
                          "\" hands its credentials only to the broker's proxy: use git and the "
                          "GitHub API through the broker (docs/proxy.md)"));
  }

  std::shared_lock lock(LockFor(session_id));
  JITBROKER_ASSIGN_OR_RETURN(SessionRecord s,
                             LoadAuthorized(ctx, session_id, Access{.session_token = true}));
  if (s.state != SessionState::kActive) {
    return std::unexpected(SessionEnded(s));
  }
  // Rate limits come after the session token is verified (LoadAuthorized):
  // a forged token must not drain a real session's bucket.
  JITBROKER_RETURN_IF_ERROR(CheckGrantRate(s));
  if (const TimePoint t = clock_->Now(); t >= s.expires_at || t > s.heartbeat_deadline) {
    // Ending the session needs the exclusive lock; EnsureLive re-checks.
    lock.unlock();
    std::unique_lock exclusive(LockFor(session_id));
    JITBROKER_ASSIGN_OR_RETURN(auto fresh, store_->GetSession(session_id));
    if (fresh) {
      s = std::move(*fresh);
    }
    JITBROKER_RETURN_IF_ERROR(EnsureLive(ctx, s));
    // A heartbeat arrived meanwhile: carry on under the shared lock.
    exclusive.unlock();
    lock.lock();
    JITBROKER_ASSIGN_OR_RETURN(auto again, store_->GetSession(session_id));
    if (!again || again->state != SessionState::kActive) {
      return std::unexpected(SessionEnded(again ? *again : s));
    }
    s = std::move(*again);
  }
  std::shared_ptr<const Policy> policy = ctx.caller.policy;
  const std::string grant_id = crypto::NewPublicId("grt_", 16);
  JITBROKER_ASSIGN_OR_RETURN(Decided decided,
                             DecideGrant(grant_id, s, req, *issuer, *policy, PipelineOptions{}));
  const Decision& d = decided.decision;
  const TimePoint now = clock_->Now();
  GrantRecord g = NewGrantRecord(grant_id, s, req, *issuer, decided, now);
  if (ctx.via_proxy) {
    g.extra["held_by"] = "proxy";
  }
  std::optional<lifecycle::AnomalyTrigger>& trigger = decided.anomaly;
  std::optional<PendingRefusal>& pending_refusal = decided.pending_refusal;

  GrantResponse resp;
  if (d.result == DecisionResult::kDeny) {
    g.state = GrantState::kDenied;
    WriteBatch batch;
    batch.audit_events.push_back(
        audit::GrantEvent("grant.decided", g, now, "denied", ctx.request_id));
    batch.PutGrant(g, std::nullopt);
    JITBROKER_RETURN_IF_ERROR(Commit(ctx, std::move(batch)));
    if (trigger) {
      lock.unlock();
      JITBROKER_RETURN_IF_ERROR(RevokeForAnomaly(ctx, s.id, *trigger));
    } else if (pending_refusal) {
      Error e = std::move(pending_refusal->error);
      e.message += " (recorded as denied grant " + g.id + ")";
      return std::unexpected(std::move(e));
    }
    resp.outcome = GrantOutcome::kDenied;
    resp.grant = GrantView{std::move(g), now, std::nullopt};
    return resp;
  }
  if (d.result == DecisionResult::kPending) {
    const TierPolicy& tp = policy->ForTier(d.tier);
    const int64_t approval_ttl = tp.approval_ttl_seconds > 0
                                     ? tp.approval_ttl_seconds
                                     : options_.default_approval_ttl_seconds;
    g.state = GrantState::kPending;
    // The exact request is kept sealed (AAD: the grant id) until collection,
    // where it is minted from; g.parameters is only the redacted copy.
    const std::string canonical = CanonicalRequestJson(s.id, req);
    g.request_digest = crypto::Sha256Hex(canonical);
    JITBROKER_ASSIGN_OR_RETURN(g.sealed_request, sealer_.Seal(g.id, canonical));
    g.approval_id = "apr_" + g.id.substr(4);
    g.expires_at = now + Seconds(approval_ttl);
    g.approval_expires_at = std::chrono::floor<std::chrono::seconds>(*g.expires_at);
    g.four_eyes = tp.four_eyes;
    g.approvers = tp.approvers;
    WriteBatch batch;
    batch.audit_events.push_back(
        audit::GrantEvent("grant.decided", g, now, "pending_approval", ctx.request_id));
    batch.PutGrant(g, std::nullopt);
    JITBROKER_RETURN_IF_ERROR(Commit(ctx, std::move(batch)));
    decided.pending_lock.unlock();
    if (options_.notifier != nullptr) {
      options_.notifier->Enqueue(lifecycle::PendingApprovalMessage(g, s));
    }
    if (options_.slack != nullptr) {
      options_.slack->ApprovalPending(g, s);
    }
    resp.outcome = GrantOutcome::kPending;
    resp.grant = GrantView{std::move(g), now, std::nullopt};
    return resp;
  }

  // The decision's record shows the grant as allowed; MintAndCommit moves it
  // on (minting, active or failed).
  g.state = GrantState::kAllowed;
  std::vector<nlohmann::json> pre;
  pre.push_back(audit::GrantEvent("grant.decided", g, now, "allowed", ctx.request_id));
  JITBROKER_ASSIGN_OR_RETURN(resp.grant, MintAndCommit(ctx, g, req, issuer, std::move(pre)));
  resp.outcome = GrantOutcome::kIssued;
  return resp;
}

Status BrokerService::RevokeForAnomaly(const CallContext& ctx, const std::string& session_id,
                                       const lifecycle::AnomalyTrigger& trigger) {
  std::unique_lock exclusive(LockFor(session_id));
  JITBROKER_ASSIGN_OR_RETURN(auto s, store_->GetSession(session_id));
  if (!s || s->state != SessionState::kActive) {
    return OkStatus();
  }
  // The trigger and its evidence are one audit record, then the session ends.
  nlohmann::json ev =
      audit::SessionEvent("anomaly.detected", *s, clock_->Now(), "revoke_session", ctx.request_id);
  ev["anomaly"] = {{"rule", trigger.rule}, {"kind", trigger.kind}, {"evidence", trigger.evidence}};
  WriteBatch batch;
  batch.audit_events.push_back(std::move(ev));
  JITBROKER_RETURN_IF_ERROR(Commit(ctx, std::move(batch)));
  log::Get("lifecycle")
      ->warn("event=anomaly_detected session_id={} rule={} request_id={}", session_id, trigger.rule,
             ctx.request_id);
  auto ended =
      EndLocked(ctx, *s, SessionState::kRevoked, "anomaly: " + trigger.rule, "session.revoked");
  if (!ended) {
    return std::unexpected(ended.error());
  }
  return OkStatus();
}

void BrokerService::NotifyGrantChanged() {
  {
    std::lock_guard lock(wait_mu_);
    ++wait_generation_;
  }
  wait_cv_.notify_all();
}

void BrokerService::EndLongPolls() {
  {
    std::lock_guard lock(wait_mu_);
    long_polls_ended_ = true;
  }
  wait_cv_.notify_all();
}

Result<GrantRecord> BrokerService::LoadAuthorizedGrant(const CallContext& ctx,
                                                       const std::string& id) {
  JITBROKER_ASSIGN_OR_RETURN(auto g, store_->GetGrant(id));
  if (!g) {
    return std::unexpected(NotFound("grant_not_found", "no grant " + id));
  }
  auto s = LoadAuthorized(ctx, g->session_id,
                          Access{.session_token = true, .owner = true, .admin = true});
  if (!s) {
    if (s.error().code == ErrorCode::kNotFound) {
      return std::unexpected(NotFound("grant_not_found", "no grant " + id));
    }
    return std::unexpected(s.error());
  }
  return std::move(*g);
}

Result<GrantView> BrokerService::GetGrant(const CallContext& ctx, const std::string& id,
                                          int wait_seconds) {
  JITBROKER_ASSIGN_OR_RETURN(GrantRecord loaded, LoadAuthorizedGrant(ctx, id));
  std::optional<GrantRecord> g(std::move(loaded));
  // Long-poll while the grant waits for a human; woken by any grant change.
  if (wait_seconds > 0 && g->state == GrantState::kPending) {
    const auto deadline =
        std::chrono::steady_clock::now() +
        std::chrono::seconds(std::min(wait_seconds, options_.max_long_poll_seconds));
    std::unique_lock lk(wait_mu_);
    uint64_t seen = wait_generation_;
    while (!long_polls_ended_ && g->state == GrantState::kPending &&
           (!g->expires_at || *g->expires_at > clock_->Now())) {
      if (!wait_cv_.wait_until(lk, deadline,
                               [&] { return wait_generation_ != seen || long_polls_ended_; })) {
        break;
      }
      seen = wait_generation_;
      lk.unlock();
      JITBROKER_ASSIGN_OR_RETURN(auto fresh, store_->GetGrant(id));
      lk.lock();
      if (fresh) {
        g = std::move(fresh);
      }
    }
  }
  if (g->state == GrantState::kPending && g->expires_at && *g->expires_at <= clock_->Now()) {
    // Expiry means deny; do not wait for the sweeper to say so.
    JITBROKER_RETURN_IF_ERROR(ExpireApproval(g->id, ctx.request_id));
    JITBROKER_ASSIGN_OR_RETURN(auto fresh, store_->GetGrant(id));
    if (fresh) {
      g = std::move(fresh);
    }
  }
  // An approved grant is minted when its agent collects it: the TTL starts
  // now, and the credential is returned exactly once.
  // A proxy grant is collected by the proxy only (its credential must never
  // reach the agent), and the proxy collects nothing else.
  if (g->state == GrantState::kApproved && ctx.caller.IsSession() &&
      HeldByProxy(*g) == ctx.via_proxy) {
    std::unique_lock exclusive(LockFor(g->session_id));
    JITBROKER_ASSIGN_OR_RETURN(auto fresh, store_->GetGrant(id));
    JITBROKER_ASSIGN_OR_RETURN(auto session, store_->GetSession(g->session_id));
    if (fresh && session && fresh->state == GrantState::kApproved) {
      SessionRecord sr = *session;
      JITBROKER_RETURN_IF_ERROR(EnsureLive(ctx, sr));
      Issuer* issuer = FindIssuer(fresh->issuer);
      if (issuer == nullptr) {
        return std::unexpected(FailedPrecondition(
            "unknown_issuer", "issuer \"" + fresh->issuer + "\" is no longer configured"));
      }
      return CollectApproved(ctx, std::move(*fresh), sr, issuer);
    }
    if (fresh) {
      g = std::move(fresh);
    }
  }
  return GrantView{std::move(*g), clock_->Now(), std::nullopt};
}

Result<GrantResponse> BrokerService::RequestProxyGrant(const CallContext& ctx,
                                                       const std::string& session_id,
                                                       GrantRequest req) {
  if (!ctx.via_proxy) {
    return std::unexpected(Internal("a proxy grant asked for outside the proxy"));
  }
  JITBROKER_RETURN_IF_ERROR(CheckCaller(ctx, BodyCall::kRequestGrant));
  {
    std::shared_lock lock(LockFor(session_id));
    JITBROKER_ASSIGN_OR_RETURN(SessionRecord s,
                               LoadAuthorized(ctx, session_id, Access{.session_token = true}));
    (void)s;
  }
  const std::string digest = RequestDigest(session_id, req);
  JITBROKER_ASSIGN_OR_RETURN(std::vector<GrantRecord> grants, store_->ListGrants(session_id));
  const TimePoint now = clock_->Now();
  for (auto it = grants.rbegin(); it != grants.rend(); ++it) {
    if (!HeldByProxy(*it) || it->request_digest != digest) {
      continue;
    }
    if (it->state == GrantState::kPending && it->expires_at && *it->expires_at > now) {
      return GrantResponse{GrantOutcome::kPending, GrantView{*it, now, std::nullopt}};
    }
    if (it->state == GrantState::kApproved) {
      JITBROKER_ASSIGN_OR_RETURN(GrantView v, GetGrant(ctx, it->id));
      GrantOutcome outcome = GrantOutcome::kPending;
      if (v.credential) {
        outcome = GrantOutcome::kIssued;
      } else if (v.grant.state == GrantState::kDenied || v.grant.state == GrantState::kFailed ||
                 v.grant.state == GrantState::kExpired) {
        outcome = GrantOutcome::kDenied;
      }
      return GrantResponse{outcome, std::move(v)};
    }
  }
  return RequestGrant(ctx, session_id, std::move(req));
}

Status BrokerService::ReportForcePush(const CallContext& ctx, const std::string& session_id,
                                      nlohmann::json evidence) {
  {
    std::shared_lock lock(LockFor(session_id));
    JITBROKER_ASSIGN_OR_RETURN(auto s, store_->GetSession(session_id));
    if (!s) {
      return std::unexpected(NotFound("session_not_found", "no session " + session_id));
    }
    nlohmann::json ev = audit::SessionEvent("git.force_push_detected", *s, clock_->Now(),
                                            "detected", ctx.request_id);
    ev["evidence"] = evidence;
    WriteBatch batch;
    batch.audit_events.push_back(std::move(ev));
    JITBROKER_RETURN_IF_ERROR(Commit(ctx, std::move(batch)));
  }
  log::Get("proxy")->warn("event=force_push_detected session_id={} request_id={}", session_id,
                          ctx.request_id);
  for (const lifecycle::AnomalyRule& rule : options_.anomaly_rules) {
    if (rule.kind == lifecycle::AnomalyRule::Kind::kForcePush) {
      lifecycle::AnomalyTrigger trigger;
      trigger.rule = rule.name;
      trigger.kind = "force_push";
      trigger.evidence = evidence;
      trigger.evidence["rule"] = rule.name;
      trigger.evidence["kind"] = "force_push";
      trigger.evidence["session_id"] = session_id;
      return RevokeForAnomaly(ctx, session_id, trigger);
    }
  }
  return OkStatus();
}

Result<GrantRevocation> BrokerService::RevokeGrant(const CallContext& ctx, const std::string& id) {
  JITBROKER_ASSIGN_OR_RETURN(GrantRecord found, LoadAuthorizedGrant(ctx, id));
  std::unique_lock lock(LockFor(found.session_id));
  JITBROKER_ASSIGN_OR_RETURN(auto g, store_->GetGrant(id));
  if (!g || !IsLive(g->state)) {
    return std::unexpected(FailedPrecondition(
        "grant_not_live", "grant " + id + " is " +
                              (g ? std::string(StateName(g->state)) : std::string("gone")) +
                              "; there is nothing to revoke"));
  }
  const TimePoint now = clock_->Now();
  WriteBatch batch;
  std::vector<GrantRecord> one{*g};
  const std::vector<RevocationOutcome> outcomes = RevokeGrants(one, now, ctx.request_id, batch);
  JITBROKER_RETURN_IF_ERROR(Commit(ctx, std::move(batch)));
  return GrantRevocation{outcomes.at(0), one[0].state};
}

}  // namespace jitbroker::service
