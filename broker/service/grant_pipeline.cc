// The grant pipeline (docs/architecture.md, "The grant pipeline"): the
// stages every grant passes through — decide, delegated rights, pending
// bound, anomaly rules, record, mint (write-ahead for upstream issuers),
// commit — shared by agent requests, the collection of approved grants and
// CI exchanges.
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
#include "broker/service/budget.h"
#include "broker/service/internal.h"
#include "broker/service/request_digest.h"

namespace jitbroker::service {

using internal::SessionEnded;

Result<IssuerFacts> BrokerService::IssuerFactsFor(const Issuer& issuer, const GrantRequest& req) {
  const IssuerDescription& desc = issuer.Describe();
  IssuerFacts facts;
  facts.name = desc.name;
  JITBROKER_ASSIGN_OR_RETURN(facts.implied_tier, issuer.ImpliedTier(req));
  JITBROKER_ASSIGN_OR_RETURN(facts.scope_items, issuer.ScopeItems(req));
  facts.default_ttl_seconds = desc.default_ttl_seconds;
  facts.max_ttl_seconds = desc.max_ttl_seconds;
  return facts;
}

Result<GrantRequest> BrokerService::OpenApprovedRequest(const GrantRecord& g) const {
  auto refuse = [](std::string why) -> Result<GrantRequest> {
    return std::unexpected(FailedPrecondition("request_integrity_failed", std::move(why)));
  };
  if (g.sealed_request.empty()) {
    return refuse("the approved request was not kept with the grant");
  }
  // AAD = grant id: a sealed request copied from another grant does not open.
  auto opened = sealer_.Open(g.id, g.sealed_request);
  if (!opened) {
    return refuse("the sealed request does not open with the seal key");
  }
  const std::string_view canonical = opened->Reveal();
  if (!crypto::ConstantTimeEquals(crypto::Sha256Hex(canonical), g.request_digest)) {
    return refuse("the sealed request does not match the approved request_digest");
  }
  nlohmann::json j = nlohmann::json::parse(canonical, nullptr, /*allow_exceptions=*/false);
  auto str = [&j](const char* key) -> const std::string* {
    auto it = j.find(key);
    return it != j.end() && it->is_string() ? &it->get_ref<const std::string&>() : nullptr;
  };
  if (!j.is_object() || str("session_id") == nullptr || str("tool") == nullptr ||
      str("operation") == nullptr || str("resource") == nullptr || str("issuer") == nullptr ||
      !j.contains("parameters") || !j["parameters"].is_object() || !j.contains("scope") ||
      !j["scope"].is_object() || !j.contains("ttl_seconds") ||
      !(j["ttl_seconds"].is_null() || j["ttl_seconds"].is_number_integer())) {
    return refuse("the sealed request is not a canonical grant request");
  }
  GrantRequest req;
  req.tool = *str("tool");
  req.operation = *str("operation");
  req.resource = *str("resource");
  req.issuer = *str("issuer");
  req.parameters = j["parameters"];
  req.scope = j["scope"];
  if (j["ttl_seconds"].is_number_integer()) {
    req.ttl_seconds = j["ttl_seconds"].get<int64_t>();
  }
  req.justification = g.justification;
  // What the approver was shown must be what is minted, and the canonical
  // form must survive the round trip.
  if (*str("session_id") != g.session_id || req.tool != g.tool || req.operation != g.operation ||
      req.resource != g.resource || req.issuer != g.issuer || req.scope != g.scope ||
      req.ttl_seconds != g.requested_ttl_seconds ||
      RequestDigest(g.session_id, req) != g.request_digest) {
    return refuse("the sealed request does not match the grant record");
  }
  return req;
}

Result<std::optional<BrokerService::PendingRefusal>> BrokerService::PendingBoundRefusal(
    const SessionRecord& s, TimePoint now) {
  JITBROKER_ASSIGN_OR_RETURN(PendingApprovalCounts counts,
                             store_->CountPendingApprovals(s.id, s.principal_id, now));
  const char* rule = nullptr;
  std::string what;
  std::optional<TimePoint> frees_at;
  if (counts.session >= options_.max_pending_per_session) {
    rule = "max_pending_per_session";
    what =
        "session " + s.id + " already has " + std::to_string(counts.session) + " pending approvals";
    frees_at = counts.session_next_expiry;
  } else if (counts.principal >= options_.max_pending_per_principal) {
    rule = "max_pending_per_principal";
    what = "the sessions of principal " + s.principal_id + " already have " +
           std::to_string(counts.principal) + " pending approvals";
    frees_at = counts.principal_next_expiry;
  } else {
    return std::optional<PendingRefusal>();
  }
  metrics_->CountRateLimited(rule);
  PendingRefusal r;
  r.matched_rule = std::string("approvals.") + rule;
  r.error =
      ResourceExhausted("too_many_pending_approvals",
                        what + " (" + r.matched_rule + "); wait until one is decided or expires");
  // The soonest an approval can free a place: when the oldest one lapses.
  const int64_t wait = frees_at ? ToUnixSeconds(*frees_at) - ToUnixSeconds(now) + 1 : 1;
  r.error.retry_after = Seconds(std::max<int64_t>(1, wait));
  return std::optional<PendingRefusal>(std::move(r));
}

Result<BrokerService::Decided> BrokerService::DecideGrant(const std::string& grant_id,
                                                          const SessionRecord& s,
                                                          const GrantRequest& req, Issuer& issuer,
                                                          const Policy& policy,
                                                          const PipelineOptions& opts) {
  Decided out;
  Decision& d = out.decision;
  auto deny = [&d](std::string code, std::string reason, std::string rule) {
    d.result = DecisionResult::kDeny;
    d.code = std::move(code);
    d.reason = std::move(reason);
    d.matched_rule = std::move(rule);
    d.ttl_seconds = 0;
  };
  // 1. The pure evaluation against the policy, the session and the issuer's
  // facts (its implied tier and scope items).
  JITBROKER_ASSIGN_OR_RETURN(IssuerFacts ifacts, IssuerFactsFor(issuer, req));
  auto scope = TaskScope::FromJson(s.scope);
  if (!scope) {
    return std::unexpected(
        Internal("stored session scope is unreadable", scope.error().ToString()));
  }
  SessionFacts facts{s.id, s.principal_id, s.agent_id, s.task_id, *scope, s.expires_at};
  const TimePoint now = clock_->Now();
  d = Evaluate(req, facts, ifacts, policy, now);
  if (opts.approved != nullptr && d.result == DecisionResult::kPending) {
    // 1b. Collecting: the approval given must be one the current policy would
    // still ask for (same tier, same approvers, break-glass allowed).
    const GrantRecord& rec = *opts.approved;
    const TierPolicy& tp = policy.ForTier(d.tier);
    const bool same_approvers = rec.approval_expires_at && rec.approvers == tp.approvers;
    const bool break_glass = rec.approval && rec.approval->break_glass;
    if (std::string(TierName(d.tier)) != rec.tier || !same_approvers ||
        (break_glass && !tp.break_glass_self_approval)) {
      deny("approval_stale",
           "the current policy (version " + policy.version + ") asks for approval of tier " +
               std::string(TierName(d.tier)) + " by " + nlohmann::json(tp.approvers).dump() +
               "; the approval given was for tier " + rec.tier +
               (break_glass ? " by break-glass self-approval" : ""),
           "tiers." + std::string(TierName(d.tier)));
    }
  }
  // 2. The delegating human's own rights upstream (e.g. GitHub collaborator
  // permission): a grant that exceeds them is denied like any policy denial.
  // A check that cannot be made is an Error, never a silent allow.
  if (opts.delegated_rights && d.result != DecisionResult::kDeny) {
    const Principal* p = policy.FindPrincipal(s.principal_id);
    if (p == nullptr) {
      deny("delegated_rights_exceeded", "the delegating principal is no longer in the policy",
           "issuers." + issuer.Describe().name + ".delegated_rights");
    } else {
      JITBROKER_ASSIGN_OR_RETURN(DelegationCheck check, issuer.CheckDelegatedRights(req, *p));
      if (!check.allowed) {
        deny("delegated_rights_exceeded", check.reason,
             check.matched_rule.empty() ? "issuers." + issuer.Describe().name + ".delegated_rights"
                                        : check.matched_rule);
      }
      out.delegation = std::move(check);
    }
  }
  // 2b. The session budget (docs/concepts.md "Session budgets"), counted from
  // the stored grants under the session's budget lock, which stays held until
  // this grant is committed: concurrent requests of this process cannot
  // overshoot (replicas can, by the requests in flight at once).
  if (!s.budget.empty() && d.result != DecisionResult::kDeny) {
    Result<SessionBudget> budget = SessionBudget::FromJson(s.budget, "session.budget");
    if (!budget) {
      return std::unexpected(
          Internal("stored session budget is unreadable", budget.error().ToString()));
    }
    out.budget_lock = std::unique_lock(BudgetLockFor(s.id));
    JITBROKER_ASSIGN_OR_RETURN(std::vector<GrantRecord> grants, store_->ListGrants(s.id));
    const BudgetRequest br{.resource = req.resource,
                           .tier = d.tier,
                           .ttl_seconds = d.ttl_seconds,
                           // Collecting mints whatever the tier asks: the approval is given.
                           .mints = d.result == DecisionResult::kAllow || opts.approved != nullptr,
                           .collecting = opts.approved != nullptr};
    if (std::optional<BudgetRefusal> refusal =
            CheckBudget(*budget, CountBudgetUse(grants, now), br)) {
      metrics_->CountRateLimited("session_budget");
      deny("budget_exceeded", refusal->reason, "session.budget." + refusal->limit);
    }
  }
  // 3. Bounded pending approvals: past the bound the request is a denial
  // (recorded, audited, seen by the anomaly rules). The principal's pending
  // lock stays held until the pending grant is committed.
  if (opts.pending_bound && d.result == DecisionResult::kPending) {
    out.pending_lock = std::unique_lock(PendingLockFor(s.principal_id));
    JITBROKER_ASSIGN_OR_RETURN(out.pending_refusal, PendingBoundRefusal(s, now));
    if (out.pending_refusal) {
      out.pending_lock.unlock();
      deny("too_many_pending_approvals", out.pending_refusal->error.message,
           out.pending_refusal->matched_rule);
    }
  }
  // 4. The anomaly rules see every decision; a trigger overrides it with a
  // denial (nothing is minted) and the caller revokes the session.
  if (opts.observe) {
    if (!anomaly_->rules().empty()) {
      lifecycle::DecisionObservation obs{now, d.tier, d.result, d.code, grant_id};
      out.anomaly = anomaly_->Observe(s.id, obs);
    }
    if (out.anomaly) {
      if (out.pending_lock.owns_lock()) {
        out.pending_lock.unlock();
      }
      deny("anomaly_detected",
           "anomaly rule " + out.anomaly->rule + " triggered; the session is revoked",
           out.anomaly->rule);
    }
    metrics_->CountGrant(std::string(TierName(d.tier)), std::string(DecisionResultName(d.result)));
  }
  if (d.result == DecisionResult::kDeny && out.budget_lock.owns_lock()) {
    out.budget_lock.unlock();  // a denial consumes no budget
  }
  return out;
}

GrantRecord BrokerService::NewGrantRecord(const std::string& grant_id, const SessionRecord& s,
                                          const GrantRequest& req, const Issuer& issuer,
                                          const Decided& d, TimePoint now) const {
  GrantRecord g;
  g.id = grant_id;
  g.session_id = s.id;
  g.principal_id = s.principal_id;
  g.agent_id = s.agent_id;
  g.task_id = s.task_id;
  g.tool = req.tool;
  g.operation = req.operation;
  g.resource = req.resource;
  g.issuer = req.issuer;
  g.parameters = audit::RedactParameters(req.parameters);
  g.scope =
      req.scope;  // issuer-specific scope (permissions, audiences): never secret, needed to mint
  g.requested_ttl_seconds = req.ttl_seconds;
  g.ttl_seconds = d.decision.ttl_seconds;
  g.tier = std::string(TierName(d.decision.tier));
  g.decision = d.decision.ToJson();
  g.revocability = std::string(RevocabilityName(issuer.Describe().revocability));
  g.created_at = now;
  if (!req.justification.empty()) {
    g.justification = audit::RedactText(req.justification);  // shown to approvers
  }
  if (d.delegation && !d.delegation->audit.empty()) {
    g.delegation = d.delegation->audit;
  }
  return g;
}

Result<GrantView> BrokerService::MintAndCommit(const CallContext& ctx, GrantRecord& g,
                                               const GrantRequest& req, Issuer* issuer,
                                               std::vector<nlohmann::json> pre_events,
                                               std::vector<ReplayReservation> replay) {
  const IssuerDescription& desc = issuer->Describe();
  const TimePoint now = clock_->Now();
  // The state the grant is stored in: an approved grant is collected once
  // (another process collecting it too loses here, before minting); a new
  // grant ("allowed" is never stored) is not stored yet.
  std::optional<GrantState> stored_state;
  if (g.state != GrantState::kAllowed) {
    stored_state = g.state;
  }
  if (desc.mints_upstream) {
    // Write-ahead: the intent is durable before the upstream can create a
    // credential, so a crash in between is reconciled at restart.
    g.state = GrantState::kMinting;
    // When the mint began: with replicas, only a mint older than any
    // upstream call can take is reconciled (lifecycle_ops.cc, Reconcile).
    g.extra["minting_since"] = ToUnixSeconds(now);
    WriteBatch intent;
    intent.audit_events = std::move(pre_events);
    pre_events.clear();
    intent.PutGrant(g, stored_state);
    JITBROKER_RETURN_IF_ERROR(Commit(ctx, std::move(intent)));
    stored_state = g.state;
  }
  std::map<std::string, std::string> identities;
  {
    std::shared_ptr<const Policy> pol = policy();
    if (const Principal* p = pol->FindPrincipal(g.principal_id); p != nullptr) {
      identities = p->identities;
    }
  }
  MintRequest mr{g.id,
                 g.session_id,
                 g.task_id,
                 g.principal_id,
                 g.agent_id,
                 req,
                 ParseTier(g.tier).value_or(Tier::kRead),
                 g.ttl_seconds,
                 now,
                 std::move(identities)};
  // The bulkhead: at most limits.max_calls_per_issuer mints in flight to
  // one issuer, so an upstream that hangs holds only its share of the
  // handler threads and the other issuers keep theirs. A mint refused here
  // is recorded as a failed one (503 issuer_busy, retryable). 0 (options
  // built by hand) = no bound; the app always sets one.
  const int64_t max_calls = options_.limits.max_calls_per_issuer;
  std::atomic<int64_t>* calls = nullptr;
  if (auto it = issuer_calls_.find(g.issuer); it != issuer_calls_.end() && max_calls > 0) {
    calls = it->second.get();
  }
  Result<MintResult> minted = [&]() -> Result<MintResult> {
    if (calls != nullptr && calls->fetch_add(1) >= max_calls) {
      calls->fetch_sub(1);
      metrics_->CountRateLimited("max_calls_per_issuer");
      Error e = Unavailable("issuer_busy", "issuer " + g.issuer + " already has " +
                                               std::to_string(max_calls) +
                                               " calls in flight (limits.max_calls_per_issuer); "
                                               "retry shortly");
      e.retryable = true;
      e.retry_after = std::chrono::seconds(1);
      return std::unexpected(std::move(e));
    }
    Result<MintResult> out = issuer->Mint(mr);
    if (calls != nullptr) {
      calls->fetch_sub(1);
    }
    return out;
  }();
  if (!minted) {
    g.state = GrantState::kFailed;
    g.extra["mint_error"] = std::string(minted.error().Reason());
    WriteBatch batch;
    batch.audit_events = std::move(pre_events);
    batch.audit_events.push_back(
        audit::GrantEvent("credential.mint_failed", g, now, "failed", ctx.request_id));
    batch.PutGrant(g, stored_state);
    JITBROKER_RETURN_IF_ERROR(Commit(ctx, std::move(batch)));
    log::Get("issuer." + desc.type)
        ->warn("event=mint_failed request_id={} grant_id={} issuer={} error=\"{}\"", ctx.request_id,
               g.id, g.issuer, minted.error().ToString());
    return std::unexpected(minted.error());
  }
  g.state = GrantState::kActive;
  g.expires_at = minted->expires_at;
  g.credential_type = minted->type;
  g.credential_sha256 = minted->fingerprint_sha256;
  if (!minted->audit_fields.empty()) {
    g.credential_audit = minted->audit_fields;
  }
  if (minted->upstream_expires_at && *minted->upstream_expires_at > minted->expires_at) {
    // Revoked upstream at the grant's expiry (Sweep); see CredentialEnd.
    g.upstream_expires_at = std::chrono::floor<std::chrono::seconds>(*minted->upstream_expires_at);
  }
  // A credential that exists upstream but cannot be recorded is never
  // handed out; revoke it now rather than leave it live and unseen (a
  // "minting" grant is also reconciled at restart).
  auto abandon = [&](Error error) -> Result<GrantView> {
    RevokeRequest rr{g.id, minted->revocation_handle.Clone(),
                     minted->upstream_expires_at.value_or(minted->expires_at), clock_->Now()};
    Result<RevokeOutcome> revoked = issuer->Revoke(rr);
    log::Get("issuer." + desc.type)
        ->error(
            "event=minted_credential_abandoned request_id={} grant_id={} issuer={} "
            "revoked={} error=\"{}\"",
            ctx.request_id, g.id, g.issuer, revoked.has_value(), error.ToString());
    return std::unexpected(std::move(error));
  };
  auto sealed = sealer_.Seal(g.id, minted->revocation_handle);
  if (!sealed) {
    return abandon(Internal("cannot seal the revocation handle", sealed.error().ToString()));
  }
  g.sealed_handle = *sealed;
  WriteBatch batch;
  batch.audit_events = std::move(pre_events);
  batch.audit_events.push_back(
      audit::GrantEvent("credential.minted", g, now, "minted", ctx.request_id));
  batch.PutGrant(g, stored_state);
  batch.replay_reservations = std::move(replay);
  // Fail closed: the credential leaves only once these records are durable.
  if (Status committed = Commit(ctx, std::move(batch)); !committed) {
    return abandon(std::move(committed).error());
  }

  return GrantView{g, now,
                   IssuedCredential{.type = std::move(minted->type),
                                    .expires_at = minted->expires_at,
                                    .fields = std::move(minted->fields),
                                    .secrets = std::move(minted->secrets)}};
}

Result<GrantView> BrokerService::CollectApproved(const CallContext& ctx, GrantRecord rec,
                                                 const SessionRecord& s, Issuer* issuer) {
  // 1. The exact request the approver approved, never the redacted copy.
  Result<GrantRequest> opened = OpenApprovedRequest(rec);
  if (!opened) {
    log::Get("service")->error(
        "event=approved_request_refused request_id={} grant_id={} why=\"{}\"", ctx.request_id,
        rec.id, opened.error().message);
    return DenyAtCollection(ctx, rec, "request_integrity_failed",
                            "at collection: " + opened.error().message, "grant.request_digest",
                            nlohmann::json::object());
  }
  const GrantRequest& req = *opened;

  // 2. The current policy and session, through the same pipeline as the
  // request: a reload, a narrowed scope or role, a changed approval rule, an
  // ended session or the human's lost rights since the approval all count.
  std::shared_ptr<const Policy> pol = policy();
  PipelineOptions opts;
  opts.pending_bound = false;  // past it: this grant holds its approval
  opts.observe = false;        // the request was observed when it was made
  opts.approved = &rec;
  JITBROKER_ASSIGN_OR_RETURN(Decided decided, DecideGrant(rec.id, s, req, *issuer, *pol, opts));
  const Decision& d = decided.decision;
  rec.decision["collection_policy_version"] = pol->version;
  const nlohmann::json evidence =
      decided.delegation ? decided.delegation->audit : nlohmann::json::object();
  if (d.result == DecisionResult::kDeny) {
    return DenyAtCollection(
        ctx, rec, d.code,
        d.code == "delegated_rights_exceeded" ? d.reason : "at collection: " + d.reason,
        d.matched_rule, evidence);
  }
  rec.ttl_seconds = std::min(rec.ttl_seconds, d.ttl_seconds);
  if (rec.ttl_seconds < 1) {
    return std::unexpected(
        FailedPrecondition("session_expiring", "the session ends before a credential could live"));
  }
  rec.expires_at.reset();
  if (!evidence.empty()) {
    rec.delegation = evidence;
  }
  // 3. Mint from the exact request. The sealed copy is not needed past here.
  rec.sealed_request.clear();
  return MintAndCommit(ctx, rec, req, issuer, {});
}

Result<GrantView> BrokerService::DenyAtCollection(const CallContext& ctx, GrantRecord& g,
                                                  const std::string& code,
                                                  const std::string& reason,
                                                  const std::string& matched_rule,
                                                  const nlohmann::json& delegation) {
  const TimePoint now = clock_->Now();
  nlohmann::json decision = g.decision.is_object() ? g.decision : nlohmann::json::object();
  decision["result"] = "deny";
  decision["code"] = code;
  decision["reason"] = reason;
  decision["matched_rule"] = matched_rule;
  decision["stage"] = "collection";
  if (auto it = decision.find("collection_policy_version"); it != decision.end()) {
    decision["policy_version"] = *it;  // the policy that refused it
  }
  g.decision = std::move(decision);
  const GrantState stored_state = g.state;  // approved: denied once
  g.state = GrantState::kDenied;
  g.sealed_handle.clear();
  g.sealed_request.clear();
  if (!delegation.empty()) {
    g.delegation = delegation;
  }
  WriteBatch batch;
  batch.audit_events.push_back(
      audit::GrantEvent("grant.decided", g, now, "denied", ctx.request_id));
  batch.PutGrant(g, stored_state);
  JITBROKER_RETURN_IF_ERROR(Commit(ctx, std::move(batch)));
  NotifyGrantChanged();
  return GrantView{g, now, std::nullopt};
}

}  // namespace jitbroker::service
