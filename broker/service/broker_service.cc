#include "broker/service/broker_service.h"

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <functional>
#include <map>
#include <set>
#include <thread>

#include "broker/audit/checkpoint.h"
#include "broker/audit/events.h"
#include "broker/common/log.h"
#include "broker/common/time_util.h"
#include "broker/crypto/crypto.h"
#include "broker/service/internal.h"
#include "broker/service/request_digest.h"

namespace jitbroker::service {

using internal::SessionEnded;

BrokerService::BrokerService(Store* store, audit::Journal* journal, const Clock* clock,
                             Metrics* metrics,
                             std::map<std::string, std::unique_ptr<Issuer>> issuers,
                             std::shared_ptr<const Policy> policy, ServiceOptions options)
    : store_(store),
      journal_(journal),
      clock_(clock),
      metrics_(metrics),
      policy_(std::move(policy)),
      options_(std::move(options)) {
  for (auto& [name, issuer] : issuers) {
    issuer_calls_.emplace(name, std::make_unique<std::atomic<int64_t>>(0));
    issuers_.emplace(name, std::move(issuer));
  }
  anomaly_ = std::make_unique<lifecycle::AnomalyDetector>(options_.anomaly_rules);
  // The config loader bounds these; options built by hand with values out of
  // bounds get the strictest limiter rather than none (fail closed).
  auto make_limiter = [this](const RateLimit& limit, std::string_view name) {
    KeyedRateLimiter::Options o;
    o.limit = limit;
    o.max_keys = static_cast<size_t>(std::max<int64_t>(1, options_.limits.max_tracked_keys));
    auto made = KeyedRateLimiter::Create(o, clock_);
    if (!made) {
      log::Get("service")->error("event=invalid_rate_limit limit={} error=\"{}\"", name,
                                 made.error().ToString());
      o.limit = RateLimit{.rate_per_second = 0.001, .burst = 1};
      made = KeyedRateLimiter::Create(o, clock_);
    }
    return made ? std::move(*made) : nullptr;
  };
  session_rate_ = make_limiter(options_.limits.grants_per_session, "grants_per_session");
  principal_rate_ = make_limiter(options_.limits.grants_per_principal, "grants_per_principal");
  token_address_rate_ = make_limiter(options_.limits.token_per_address, "token_per_address");
  introspect_address_rate_ =
      make_limiter(options_.limits.introspect_per_address, "introspect_per_address");
  auth_failure_rate_ =
      make_limiter(options_.limits.auth_failures_per_address, "auth_failures_per_address");
}

std::shared_ptr<const Policy> BrokerService::policy() const {
  std::lock_guard lock(policy_mu_);
  return policy_;
}

void BrokerService::SwapPolicy(std::shared_ptr<const Policy> policy) {
  std::lock_guard lock(policy_mu_);
  policy_ = std::move(policy);
}

BrokerService::SessionLock& BrokerService::LockFor(std::string_view session_id) {
  return session_locks_[std::hash<std::string_view>{}(session_id) % session_locks_.size()];
}

std::mutex& BrokerService::PendingLockFor(std::string_view principal_id) {
  return pending_locks_[std::hash<std::string_view>{}(principal_id) % pending_locks_.size()];
}

std::mutex& BrokerService::BudgetLockFor(std::string_view session_id) {
  return budget_locks_[std::hash<std::string_view>{}(session_id) % budget_locks_.size()];
}

std::vector<RevocationOutcome> BrokerService::RevokeGrants(std::vector<GrantRecord>& grants,
                                                           TimePoint now,
                                                           const std::string& request_id,
                                                           WriteBatch& batch) {
  std::vector<RevocationOutcome> outcomes = revoker_.Revoke(grants, now, request_id, batch);
  NotifyGrantChanged();
  return outcomes;
}

std::vector<BrokerService::ProxyRoute> BrokerService::ProxyRoutes() const {
  std::vector<ProxyRoute> out;
  for (const auto& [name, issuer] : issuers_) {
    for (const auto& up : issuer->Describe().proxy_upstreams) {
      out.push_back(ProxyRoute{name, up});
    }
  }
  return out;
}

Issuer* BrokerService::FindIssuer(std::string_view name) const {
  auto it = issuers_.find(name);
  return it == issuers_.end() ? nullptr : it->second.get();
}

Result<authn::Caller> BrokerService::Authenticate(std::string_view authorization,
                                                  std::string_view source_address,
                                                  std::string_view client_cert_sha256) const {
  JITBROKER_RETURN_IF_ERROR(AdmitAuthAttempt(source_address));
  auto caller = [&]() -> Result<authn::Caller> {
    if (authorization.empty() && !client_cert_sha256.empty()) {
      return authn::IdentifyByCertificate(client_cert_sha256, policy());
    }
    JITBROKER_ASSIGN_OR_RETURN(SecretValue bearer, authn::ParseBearer(authorization));
    std::shared_ptr<const Policy> current = policy();
    if (options_.human_login == nullptr || !oidc::HumanLogin::LooksLikeJwt(bearer.Reveal())) {
      return authn::Identify(std::move(bearer), current);
    }
    Result<authn::Caller> by_key =
        authn::Identify(SecretValue(std::string(bearer.Reveal())), current);
    if (by_key) {
      return by_key;
    }
    // A principal's ID token from the single sign-on provider (humans:).
    JITBROKER_ASSIGN_OR_RETURN(oidc::HumanIdentity human,
                               options_.human_login->Verify(bearer.Reveal(), *current));
    return authn::PrincipalCaller(current->FindPrincipal(human.principal_id), current);
  }();
  if (!caller && !source_address.empty()) {
    (void)auth_failure_rate_->Acquire(source_address);
  }
  return caller;
}

Status BrokerService::AdmitAuthAttempt(std::string_view source_address) const {
  if (source_address.empty()) {
    return OkStatus();
  }
  if (auth_failure_rate_ == nullptr) {
    return std::unexpected(Internal("no rate limiter", "auth_failures_per_address"));
  }
  const KeyedRateLimiter::Outcome out = auth_failure_rate_->Peek(source_address);
  if (!out.allowed) {
    return std::unexpected(AddressLimited(out, "auth_failures_per_address",
                                          "failed authentications from this address"));
  }
  return OkStatus();
}

void BrokerService::CountAuthFailure(std::string_view source_address) const {
  if (!source_address.empty() && auth_failure_rate_ != nullptr) {
    (void)auth_failure_rate_->Acquire(source_address);
  }
}

Error BrokerService::AddressLimited(const KeyedRateLimiter::Outcome& out, const char* limit,
                                    const char* what) const {
  metrics_->CountRateLimited(limit);
  if (out.untracked) {
    log::Get("service")->warn("event=rate_limiter_full limit={}", limit);
  }
  Error e = ResourceExhausted("rate_limited", std::string("too many ") + what + " (limits." +
                                                  limit + "); retry after " +
                                                  std::to_string(out.retry_after.count()) + " s");
  e.retry_after = out.retry_after;
  return e;
}

Status BrokerService::AdmitTokenRequest(const CallContext& ctx) const {
  return CheckAddressRate(token_address_rate_.get(), ctx, "token_per_address",
                          "token exchanges from this address");
}

Status BrokerService::CheckAddressRate(KeyedRateLimiter* limiter, const CallContext& ctx,
                                       const char* limit, const char* what) const {
  if (ctx.source_address.empty()) {
    return OkStatus();
  }
  if (limiter == nullptr) {
    return std::unexpected(Internal("no rate limiter", limit));  // fail closed
  }
  const KeyedRateLimiter::Outcome out = limiter->Acquire(ctx.source_address);
  if (out.allowed) {
    return OkStatus();
  }
  return std::unexpected(AddressLimited(out, limit, what));
}

// ---------------------------------------------------------------------------
// Access control

Status BrokerService::CheckCaller(const CallContext& ctx, BodyCall call) {
  const authn::Caller& c = ctx.caller;
  switch (call) {
    case BodyCall::kOpenSession:
      if (c.IsSession()) {
        return std::unexpected(PermissionDenied("principal_required",
                                                "opening a session needs a principal's API key"));
      }
      break;
    case BodyCall::kRequestGrant:
      if (!c.IsSession()) {
        return std::unexpected(PermissionDenied(
            "session_token_required", "grants are requested with the session's own token"));
      }
      break;
    case BodyCall::kDecideApproval:
      if (c.IsSession()) {
        return std::unexpected(PermissionDenied(
            "principal_required", "approvals are decided by a principal, never by the agent"));
      }
      break;
    case BodyCall::kBulkRevoke:
      if (c.IsSession() || !c.is_admin) {
        return std::unexpected(PermissionDenied("forbidden", "bulk revocation needs an admin"));
      }
      break;
  }
  return OkStatus();
}

Status BrokerService::CheckSessionCaller(const CallContext& ctx, const SessionRecord& s) {
  const authn::Caller& c = ctx.caller;
  if (c.session_id == s.id) {
    if (!authn::VerifySessionToken(c.session_token, s.token_sha256)) {
      return std::unexpected(Unauthenticated("invalid_credentials", "invalid session token"));
    }
    return OkStatus();
  }
  // A token for another session: say so only if it is genuine.
  JITBROKER_ASSIGN_OR_RETURN(auto own, store_->GetSession(c.session_id));
  if (own && authn::VerifySessionToken(c.session_token, own->token_sha256)) {
    return std::unexpected(
        PermissionDenied("session_mismatch", "this session token belongs to another session"));
  }
  return std::unexpected(Unauthenticated("invalid_credentials", "invalid session token"));
}

Result<SessionRecord> BrokerService::LoadAuthorized(const CallContext& ctx, const std::string& id,
                                                    Access allowed) {
  const authn::Caller& c = ctx.caller;
  JITBROKER_ASSIGN_OR_RETURN(auto found, store_->GetSession(id));
  if (c.IsSession()) {
    if (!allowed.session_token) {
      // Verify the token anyway so that a bad token is a 401, not a 403.
      if (found && c.session_id == found->id) {
        JITBROKER_RETURN_IF_ERROR(CheckSessionCaller(ctx, *found));
      }
      return std::unexpected(PermissionDenied(
          "principal_required", "this call needs a principal's API key, not a session token"));
    }
    if (!found) {
      if (c.session_id == id) {
        return std::unexpected(Unauthenticated("invalid_credentials", "invalid session token"));
      }
      SessionRecord ghost;
      ghost.id = id;
      JITBROKER_RETURN_IF_ERROR(CheckSessionCaller(ctx, ghost));
      return std::unexpected(NotFound("session_not_found", "no session " + id));
    }
    JITBROKER_RETURN_IF_ERROR(CheckSessionCaller(ctx, *found));
    return std::move(*found);
  }
  const bool owner = found && found->principal_id == c.principal_id;
  if (!found || !((allowed.owner && owner) || (allowed.admin && c.is_admin))) {
    if (found && owner) {
      return std::unexpected(
          PermissionDenied("forbidden", "this call needs an admin or the session's agent"));
    }
    // Do not reveal other principals' sessions.
    return std::unexpected(NotFound("session_not_found", "no session " + id));
  }
  return std::move(*found);
}

// ---------------------------------------------------------------------------
// Sessions

Result<OpenedSession> BrokerService::OpenSession(const CallContext& ctx, OpenSessionInput in) {
  JITBROKER_RETURN_IF_ERROR(CheckCaller(ctx, BodyCall::kOpenSession));
  const authn::Caller& c = ctx.caller;
  const TaskScope& scope = in.scope;
  for (const auto& issuer : scope.issuers) {
    if (FindIssuer(issuer) == nullptr) {
      return std::unexpected(
          InvalidArgument("unknown_issuer",
                          "task.scope.issuers names \"" + issuer + "\", which is not configured"));
    }
  }
  std::shared_ptr<const Policy> policy = c.policy;
  JITBROKER_RETURN_IF_ERROR(CheckScopeWithinPrincipal(scope, *c.principal, *policy));

  const TimePoint now = clock_->Now();
  const int64_t ttl_s =
      std::min(in.ttl_seconds.value_or(sessions_.default_ttl_seconds), sessions_.max_ttl_seconds);
  const int64_t hb_s = in.heartbeat_seconds.value_or(sessions_.heartbeat_seconds);

  authn::NewSessionToken tok = authn::MintSessionToken();
  SessionRecord s;
  s.id = tok.session_id;
  s.token_sha256 = tok.token_sha256;
  s.principal_id = c.principal_id;
  s.agent_id = std::move(in.agent_id);
  s.task_id = std::move(in.task_id);
  // Free text reaches approvers and session views: credentials in it are
  // redacted (broker/audit/redact.h).
  s.task_description = audit::RedactText(in.description.value_or(""));
  s.scope = scope.ToJson();
  s.budget = EffectiveBudget(in.budget, *c.principal, *policy).ToJson();
  s.state = SessionState::kActive;
  s.created_at = now;
  s.expires_at = now + Seconds(ttl_s);
  s.heartbeat_seconds = hb_s;
  s.heartbeat_deadline = now + Seconds(hb_s * sessions_.stall_after_missed);

  WriteBatch batch;
  batch.audit_events.push_back(
      audit::SessionEvent("session.opened", s, now, "opened", ctx.request_id));
  batch.PutSession(s, std::nullopt);
  JITBROKER_RETURN_IF_ERROR(Commit(ctx, std::move(batch)));
  metrics_->CountSessionOpened();

  OpenedSession out;
  out.session = std::move(s);
  out.token = std::move(tok.token);
  out.ttl_seconds = ttl_s;
  if (in.ttl_seconds && *in.ttl_seconds > ttl_s) {
    out.requested_ttl_seconds = in.ttl_seconds;  // lowered to sessions.max_ttl_seconds
  }
  return out;
}

Result<std::vector<SessionRecord>> BrokerService::ListSessions(const CallContext& ctx,
                                                               SessionFilter filter) {
  const authn::Caller& c = ctx.caller;
  if (c.IsSession()) {
    return std::unexpected(
        PermissionDenied("principal_required", "listing sessions needs a principal's API key"));
  }
  if (!c.is_admin) {
    if (!filter.principal_id.empty() && filter.principal_id != c.principal_id) {
      return std::unexpected(
          PermissionDenied("forbidden", "only admins may list other principals' sessions"));
    }
    filter.principal_id = c.principal_id;
  }
  return store_->ListSessions(filter);
}

Result<SessionDetail> BrokerService::GetSession(const CallContext& ctx, const std::string& id) {
  JITBROKER_ASSIGN_OR_RETURN(
      SessionRecord s,
      LoadAuthorized(ctx, id, Access{.session_token = true, .owner = true, .admin = true}));
  JITBROKER_ASSIGN_OR_RETURN(auto grants, store_->ListGrants(id));
  const TimePoint now = clock_->Now();
  BudgetUse used = CountBudgetUse(grants, now);
  return SessionDetail{std::move(s), std::move(grants), now, std::move(used)};
}

Result<SessionRecord> BrokerService::Heartbeat(const CallContext& ctx, const std::string& id,
                                               HeartbeatInput in) {
  std::unique_lock lock(LockFor(id));
  JITBROKER_ASSIGN_OR_RETURN(SessionRecord s,
                             LoadAuthorized(ctx, id, Access{.session_token = true}));
  JITBROKER_RETURN_IF_ERROR(EnsureLive(ctx, s));
  const TimePoint now = clock_->Now();
  s.heartbeat_deadline = now + Seconds(s.heartbeat_seconds * sessions_.stall_after_missed);
  if (in.progress) {
    s.last_progress = audit::RedactText(*in.progress);
  }
  WriteBatch batch;
  batch.PutSession(s, SessionState::kActive);  // never revives an ended session
  JITBROKER_RETURN_IF_ERROR(Commit(ctx, std::move(batch)));
  return s;
}

Status BrokerService::EnsureLive(const CallContext& ctx, SessionRecord& s) {
  if (s.state != SessionState::kActive) {
    return std::unexpected(SessionEnded(s));
  }
  const TimePoint now = clock_->Now();
  SessionState state = SessionState::kActive;
  std::string event, reason;
  if (now >= s.expires_at) {
    state = SessionState::kExpired;
    event = "session.expired";
    reason = "session TTL elapsed";
  } else if (now > s.heartbeat_deadline) {
    state = SessionState::kStalled;
    event = "session.stalled";
    reason = "missed " + std::to_string(sessions_.stall_after_missed) + " heartbeats";
  } else {
    return OkStatus();
  }
  JITBROKER_ASSIGN_OR_RETURN(auto ended, EndLocked(ctx, s, state, reason, event));
  (void)ended;
  s.state = state;
  return std::unexpected(SessionEnded(s));
}

Status BrokerService::Commit(const CallContext& ctx, WriteBatch batch) {
  if (!ctx.client_request_id.empty()) {
    for (nlohmann::json& event : batch.audit_events) {
      event["client_request_id"] = ctx.client_request_id;
    }
  }
  return CommitAndAnnounce(std::move(batch));
}

Status BrokerService::CommitAndAnnounce(WriteBatch batch) {
  // The approvals this batch takes out of pending (decided, expired, or
  // revoked with their session): their chat message says so once it is
  // durable.
  std::vector<GrantRecord> closed;
  if (options_.slack != nullptr) {
    const std::string pending(StateName(GrantState::kPending));
    for (const GrantRecord& g : batch.grants) {
      if (g.approval_id.empty() || g.state == GrantState::kPending) {
        continue;
      }
      for (const StatePrecondition& p : batch.preconditions) {
        if (p.record == StatePrecondition::Record::kGrant && p.id == g.id && p.state == pending) {
          closed.push_back(g);
          break;
        }
      }
    }
  }
  JITBROKER_RETURN_IF_ERROR(journal_->Commit(std::move(batch)));
  for (const GrantRecord& g : closed) {
    options_.slack->ApprovalClosed(g);
  }
  return OkStatus();
}

Result<SessionEnd> BrokerService::EndLocked(const CallContext& ctx, SessionRecord s,
                                            SessionState state, std::string reason,
                                            std::string event) {
  const TimePoint now = clock_->Now();
  JITBROKER_ASSIGN_OR_RETURN(auto all, store_->ListGrants(s.id));
  std::vector<GrantRecord> live;
  for (auto& g : all) {
    if (IsLive(g.state)) {
      live.push_back(std::move(g));
    }
  }
  WriteBatch batch;
  std::vector<RevocationOutcome> revocations = RevokeGrants(live, now, ctx.request_id, batch);
  const SessionState from = s.state;  // ended once, by one process
  s.state = state;
  s.ended_at = now;
  s.end_reason = reason;
  batch.audit_events.push_back(
      audit::SessionEvent(event, s, now, StateName(state), ctx.request_id));
  batch.PutSession(s, from);
  JITBROKER_RETURN_IF_ERROR(Commit(ctx, std::move(batch)));
  anomaly_->Forget(s.id);
  NotifyGrantChanged();
  log::Get("lifecycle")
      ->info("event={} session_id={} request_id={} revoked={}", event, s.id, ctx.request_id,
             revocations.size());
  return SessionEnd{s.id, state, std::move(revocations)};
}

Result<SessionEnd> BrokerService::EndSession(const CallContext& ctx, const std::string& id,
                                             EndSessionInput in, bool revoke) {
  const std::optional<std::string>& reason = in.reason;
  if (revoke && (!reason || reason->empty())) {
    return std::unexpected(
        InvalidArgument("missing_field", "reason is required to revoke a session"));
  }
  std::unique_lock lock(LockFor(id));
  Access access =
      revoke ? Access{.owner = true, .admin = true} : Access{.session_token = true, .owner = true};
  JITBROKER_ASSIGN_OR_RETURN(SessionRecord s, LoadAuthorized(ctx, id, access));
  if (s.state != SessionState::kActive) {
    return std::unexpected(SessionEnded(s));
  }
  if (revoke) {
    return EndLocked(ctx, s, SessionState::kRevoked,
                     "revoked by " + ctx.caller.principal_id + ": " + audit::RedactText(*reason),
                     "session.revoked");
  }
  return EndLocked(ctx, s, SessionState::kCompleted,
                   audit::RedactText(reason.value_or("completed")), "session.completed");
}

// ---------------------------------------------------------------------------
// Grants

Result<Introspection> BrokerService::Introspect(const CallContext& ctx, std::string_view token) {
  JITBROKER_RETURN_IF_ERROR(CheckAddressRate(introspect_address_rate_.get(), ctx,
                                             "introspect_per_address",
                                             "introspection requests from this address"));
  const authn::Caller& c = ctx.caller;
  if (c.IsSession() || !(c.is_admin || c.is_resource_server)) {
    return std::unexpected(PermissionDenied(
        "forbidden", "introspection needs an admin or a principal with the resource_server role"));
  }
  const Introspection inactive;
  if (token.empty() || token.size() > 16384) {
    return inactive;
  }
  for (const auto& [name, issuer] : issuers_) {
    auto claims = issuer->VerifyOwnToken(token);
    if (!claims) {
      continue;
    }
    const std::string jti = claims->value("jti", "");
    JITBROKER_ASSIGN_OR_RETURN(auto g, store_->GetGrant(jti));
    const TimePoint now = clock_->Now();
    const int64_t exp = claims->contains("exp") && (*claims)["exp"].is_number_integer()
                            ? (*claims)["exp"].get<int64_t>()
                            : 0;
    if (!g || g->state != GrantState::kActive || g->issuer != name || exp <= ToUnixSeconds(now)) {
      return inactive;
    }
    JITBROKER_ASSIGN_OR_RETURN(auto s, store_->GetSession(g->session_id));
    if (!s || s->state != SessionState::kActive || s->expires_at <= now) {
      return inactive;
    }
    return Introspection{.active = true,
                         .claims = std::move(*claims),
                         .client_id = g->agent_id,
                         .username = g->principal_id};
  }
  return inactive;
}

Result<std::vector<AuditRecord>> BrokerService::ListAudit(const CallContext& ctx,
                                                          AuditFilter filter) {
  if (ctx.caller.IsSession() || !ctx.caller.is_admin) {
    return std::unexpected(PermissionDenied("forbidden", "reading the audit trail needs an admin"));
  }
  if (filter.chain_id.empty()) {
    filter.chain_id = options_.audit_chain;
  }
  return store_->ListAudit(filter);
}

namespace {

// A checkpoint's reference to where another chain stood (checkpoint.
// other_chains), to be checked once every chain is read.
struct CrossReference {
  size_t from;  // index of the referring chain in AuditVerification::chains
  int64_t from_seq;
  AuditChainHead to;
};

}  // namespace

Result<AuditVerification> BrokerService::VerifyAudit(const CallContext& ctx) {
  if (ctx.caller.IsSession() || !ctx.caller.is_admin) {
    return std::unexpected(
        PermissionDenied("forbidden", "verifying the audit trail needs an admin"));
  }
  JITBROKER_ASSIGN_OR_RETURN(std::vector<AuditChainHead> heads, store_->ListAuditChains());
  AuditVerification out;
  out.own = options_.audit_chain;
  std::set<std::string> names{out.own};
  for (const AuditChainHead& h : heads) {
    names.insert(h.chain_id);
  }
  std::vector<CrossReference> refs;
  for (const std::string& name : names) {
    ChainCheck c;
    c.chain = name;
    AuditFilter f;
    f.chain_id = name;
    f.limit = 5000;
    std::string prev_hash;
    int64_t prev_seq = 0;
    for (bool more = true; more && c.ok;) {
      JITBROKER_ASSIGN_OR_RETURN(auto page, store_->ListAudit(f));
      for (const auto& r : page) {
        if (r.seq != prev_seq + 1) {
          c.problem = "seq gap";
        } else if (r.prev_hash != prev_hash) {
          c.problem = "prev_hash mismatch";
        } else if (ComputeRecordHash(r.body) != r.hash || r.body.value("hash", "") != r.hash) {
          c.problem = "hash mismatch";
        }
        if (!c.problem.empty()) {
          c.ok = false;
          c.first_bad_seq = r.seq;
          break;
        }
        if (audit::IsCheckpoint(r.body)) {
          for (AuditChainHead& to : audit::CheckpointOtherChains(r.body)) {
            refs.push_back(CrossReference{out.chains.size(), r.seq, std::move(to)});
          }
        }
        prev_hash = r.hash;
        prev_seq = r.seq;
        ++c.records;
      }
      more = page.size() == f.limit;
      f.after_seq = prev_seq;
    }
    if (c.ok) {
      c.head = std::move(prev_hash);
      c.head_seq = prev_seq;
    }
    out.chains.push_back(std::move(c));
  }
  // Each reference names a record the other chain holds, and a chain's
  // references to another never go back: the chains interleave as one
  // history.
  std::map<std::pair<size_t, std::string>, int64_t> last_seen;
  for (const CrossReference& ref : refs) {
    ChainCheck& from = out.chains[ref.from];
    if (!from.ok) {
      continue;
    }
    std::string problem;
    int64_t& seen = last_seen[{ref.from, ref.to.chain_id}];
    if (ref.to.head.seq < seen) {
      problem = "other_chains goes back on chain " + ref.to.chain_id;
    } else {
      seen = ref.to.head.seq;
      AuditFilter f;
      f.chain_id = ref.to.chain_id;
      f.after_seq = ref.to.head.seq - 1;
      f.limit = 1;
      JITBROKER_ASSIGN_OR_RETURN(auto at, store_->ListAudit(f));
      if (at.empty() || at.front().seq != ref.to.head.seq || at.front().hash != ref.to.head.hash) {
        problem = "other_chains names a record chain " + ref.to.chain_id + " does not hold (seq " +
                  std::to_string(ref.to.head.seq) + ")";
      }
    }
    ++out.cross_references;
    if (!problem.empty()) {
      from.ok = false;
      from.first_bad_seq = ref.from_seq;
      from.problem = std::move(problem);
    }
  }
  for (const ChainCheck& c : out.chains) {
    out.ok = out.ok && c.ok;
  }
  return out;
}

Result<nlohmann::json> BrokerService::AuditKeys(const CallContext& ctx) const {
  if (ctx.caller.IsSession() || !ctx.caller.is_admin) {
    return std::unexpected(PermissionDenied("forbidden", "reading the audit keys needs an admin"));
  }
  return options_.audit_jwks;
}

nlohmann::json BrokerService::Jwks() const {
  nlohmann::json keys = nlohmann::json::array();
  for (const auto& [name, issuer] : issuers_) {
    for (auto& k : issuer->PublicJwks()) {
      keys.push_back(std::move(k));
    }
  }
  return nlohmann::json{{"keys", keys}};
}

void BrokerService::AppendComponentMetrics(std::string& out) const {
  std::vector<MetricFamily> families;
  for (const auto& [name, issuer] : issuers_) {
    issuer->CollectMetrics(families);
  }
  store_->CollectMetrics(families);
  if (journal_ != nullptr) {
    journal_->CollectMetrics(families);
  }
  // Several issuers may export the same family: one HELP/TYPE block each.
  std::vector<size_t> order;
  std::map<std::string, std::vector<size_t>, std::less<>> by_name;
  for (size_t i = 0; i < families.size(); ++i) {
    auto [it, inserted] = by_name.try_emplace(families[i].name);
    if (inserted) {
      order.push_back(i);
    }
    it->second.push_back(i);
  }
  for (size_t first : order) {
    const MetricFamily& f = families[first];
    out += "# HELP " + f.name + " " + f.help + "\n";
    out += "# TYPE " + f.name + " " + f.type + "\n";
    for (size_t i : by_name[f.name]) {
      for (const auto& [labels, value] : families[i].samples) {
        out += f.name;
        if (!labels.empty()) {
          out += "{" + labels + "}";
        }
        char buf[64];
        std::snprintf(buf, sizeof(buf), " %.17g\n", value);
        out += buf;
      }
    }
  }
}

Status BrokerService::Ready() { return store_->Ping(); }

}  // namespace jitbroker::service
