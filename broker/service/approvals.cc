// Invocation-bound approvals (issue #3): approvers see the full context of a
// pending grant and decide on the exact request, identified by its digest.
#include <set>

#include "broker/audit/events.h"
#include "broker/common/json_util.h"
#include "broker/common/log.h"
#include "broker/common/time_util.h"
#include "broker/crypto/crypto.h"
#include "broker/service/broker_service.h"

namespace jitbroker::service {

namespace {

constexpr std::string_view kApprovalPrefix = "apr_";

std::string GrantIdOf(const std::string& approval_id) {
  if (!approval_id.starts_with(kApprovalPrefix)) {
    return {};
  }
  return "grt_" + approval_id.substr(kApprovalPrefix.size());
}

std::string ApprovalState(const GrantRecord& g) {
  if (g.state == "pending") {
    return "pending";
  }
  if (g.extra.contains("approval") && g.extra["approval"].contains("decision")) {
    return g.extra["approval"]["decision"].get<std::string>();
  }
  if (g.state == "expired" && g.extra.value("approval_expired", false)) {
    return "expired";
  }
  return g.state;  // e.g. revoked with its session before anyone decided
}

// Who may decide: admins, and the roles the tier names ("role:NAME"); if it
// names none, principals with the approver role.
bool CanApprove(const authn::Caller& c, const Policy& policy, const GrantRecord& g) {
  if (c.IsSession() || c.principal == nullptr) {
    return false;
  }
  auto tier = ParseTier(g.tier);
  if (!tier) {
    return false;
  }
  const TierPolicy& tp = policy.ForTier(*tier);
  if (c.is_admin) {
    return true;
  }
  if (tp.approvers.empty()) {
    return c.is_approver;
  }
  for (const auto& a : tp.approvers) {
    if (a.starts_with("role:") && policy.HasRole(*c.principal, a.substr(5))) {
      return true;
    }
  }
  return false;
}

}  // namespace

static nlohmann::json ApprovalJson(const GrantRecord& g, const SessionRecord* s,
                                   const Policy& policy) {
  nlohmann::json j = {
      {"approval_id", g.approval_id},
      {"grant_id", g.id},
      {"state", ApprovalState(g)},
      {"request_digest", g.request_digest},
      {"tier", g.tier},
      {"human_principal", g.principal_id},
      {"agent", {{"id", g.agent_id}, {"session_id", g.session_id}, {"task_id", g.task_id}}},
      {"request",
       {{"tool", g.tool},
        {"operation", g.operation},
        {"resource", g.resource},
        {"issuer", g.issuer},
        {"parameters", g.parameters},
        {"scope", g.scope},
        {"ttl_seconds", g.requested_ttl_seconds ? nlohmann::json(*g.requested_ttl_seconds)
                                                : nlohmann::json(nullptr)}}},
      {"decision", g.decision},
      {"created_at", FormatRfc3339(g.created_at)},
  };
  if (g.extra.contains("justification")) {
    j["request"]["justification"] = g.extra["justification"];
  }
  if (g.extra.contains("approval_expires_at")) {
    j["expires_at"] = g.extra["approval_expires_at"];
  }
  if (auto tier = ParseTier(g.tier)) {
    const TierPolicy& tp = policy.ForTier(*tier);
    j["four_eyes"] = tp.four_eyes;
    j["approvers"] = tp.approvers;
  }
  if (s != nullptr) {
    j["task"] = {{"id", s->task_id}, {"description", s->task_description}, {"scope", s->scope}};
    j["session_state"] = s->state;
  }
  if (g.extra.contains("approval")) {
    j["decided"] = g.extra["approval"];
  }
  return j;
}

Result<nlohmann::json> BrokerService::ListApprovals(const CallContext& ctx,
                                                    const std::string& state) {
  const authn::Caller& c = ctx.caller;
  if (c.IsSession()) {
    return std::unexpected(PermissionDenied(
        "principal_required", "approvals are listed with a principal's API key"));
  }
  if (!state.empty() && state != "pending") {
    return std::unexpected(InvalidArgument("invalid_query", "state must be \"pending\""));
  }
  JITBROKER_ASSIGN_OR_RETURN(auto pending,
                             store_->ListGrantsByState("pending", std::nullopt, "", 1000));
  const TimePoint now = clock_->Now();
  nlohmann::json list = nlohmann::json::array();
  for (const auto& g : pending) {
    if ((g.expires_at && *g.expires_at <= now) || !CanApprove(c, *c.policy, g)) {
      continue;
    }
    // Under four-eyes the delegating principal cannot decide: do not offer it.
    if (auto tier = ParseTier(g.tier);
        tier && c.policy->ForTier(*tier).four_eyes && g.principal_id == c.principal_id) {
      continue;
    }
    JITBROKER_ASSIGN_OR_RETURN(auto s, store_->GetSession(g.session_id));
    list.push_back(ApprovalJson(g, s ? &*s : nullptr, *c.policy));
  }
  return nlohmann::json{{"approvals", list}};
}

Result<nlohmann::json> BrokerService::GetApproval(const CallContext& ctx, const std::string& id) {
  const authn::Caller& c = ctx.caller;
  const std::string gid = GrantIdOf(id);
  if (c.IsSession()) {
    return std::unexpected(PermissionDenied(
        "principal_required", "approvals are read with a principal's API key"));
  }
  JITBROKER_ASSIGN_OR_RETURN(auto g, gid.empty() ? Result<std::optional<GrantRecord>>(std::nullopt)
                                                 : store_->GetGrant(gid));
  if (!g || g->approval_id != id ||
      !(CanApprove(c, *c.policy, *g) || c.is_admin || g->principal_id == c.principal_id)) {
    return std::unexpected(NotFound("approval_not_found", "no approval " + id));
  }
  JITBROKER_ASSIGN_OR_RETURN(auto s, store_->GetSession(g->session_id));
  return ApprovalJson(*g, s ? &*s : nullptr, *c.policy);
}

Result<nlohmann::json> BrokerService::DecideApproval(const CallContext& ctx, const std::string& id,
                                                     const nlohmann::json& body) {
  const authn::Caller& c = ctx.caller;
  if (c.IsSession()) {
    return std::unexpected(PermissionDenied(
        "principal_required", "approvals are decided by a principal, never by the agent"));
  }
  JITBROKER_ASSIGN_OR_RETURN(auto r, json::JsonReader::Open(body, ""));
  JITBROKER_ASSIGN_OR_RETURN(std::string decision, r.String("decision", 16));
  JITBROKER_ASSIGN_OR_RETURN(std::string digest, r.String("request_digest", 128));
  JITBROKER_ASSIGN_OR_RETURN(auto comment, r.OptString("comment", 2048));
  JITBROKER_RETURN_IF_ERROR(r.Finish());
  if (decision != "approve" && decision != "deny") {
    return std::unexpected(
        InvalidArgument("invalid_value", "decision must be \"approve\" or \"deny\""));
  }

  const std::string gid = GrantIdOf(id);
  JITBROKER_ASSIGN_OR_RETURN(auto found, gid.empty() ? Result<std::optional<GrantRecord>>(std::nullopt)
                                                     : store_->GetGrant(gid));
  if (!found || found->approval_id != id) {
    return std::unexpected(NotFound("approval_not_found", "no approval " + id));
  }
  std::shared_ptr<const Policy> policy = c.policy;
  if (!CanApprove(c, *policy, *found)) {
    return std::unexpected(PermissionDenied(
        "not_an_approver", "approving tier " + found->tier + " needs a role the tier names"));
  }

  std::unique_lock lock(LockFor(found->session_id));
  JITBROKER_ASSIGN_OR_RETURN(auto fresh, store_->GetGrant(gid));
  JITBROKER_ASSIGN_OR_RETURN(auto session, store_->GetSession(found->session_id));
  if (!fresh || !session) {
    return std::unexpected(NotFound("approval_not_found", "no approval " + id));
  }
  GrantRecord g = std::move(*fresh);
  const TimePoint now = clock_->Now();
  if (session->state != "active") {
    return std::unexpected(FailedPrecondition(
        "session_" + session->state,
        "session " + session->id + " is " + session->state + "; its approvals are void"));
  }
  if (g.state != "pending") {
    return std::unexpected(FailedPrecondition(
        "approval_not_pending", "approval " + id + " is " + ApprovalState(g) +
                                    "; an approval is decided once"));
  }
  if (g.expires_at && *g.expires_at <= now) {
    lock.unlock();
    // Record the expiry (a denial) in the audit trail before answering.
    JITBROKER_RETURN_IF_ERROR(ExpireApproval(g.id, ctx.request_id));
    return std::unexpected(
        FailedPrecondition("approval_expired", "approval " + id + " expired; request it again"));
  }
  auto tier = ParseTier(g.tier);
  if (tier && policy->ForTier(*tier).four_eyes && c.principal_id == g.principal_id) {
    return std::unexpected(PermissionDenied(
        "four_eyes", "four-eyes: the delegating principal cannot approve their own agent's request"));
  }
  if (!crypto::ConstantTimeEquals(digest, g.request_digest)) {
    return std::unexpected(FailedPrecondition(
        "digest_mismatch",
        "request_digest does not match the pending request; re-read the approval"));
  }

  nlohmann::json decided = {{"decision", decision == "approve" ? "approved" : "denied"},
                            {"approver", c.principal_id},
                            {"decided_at", FormatRfc3339(now)}};
  if (comment && !comment->empty()) {
    decided["comment"] = *comment;
  }
  g.extra["approval"] = decided;
  if (decision == "approve") {
    g.state = "approved";
    g.decision["result"] = "allow";
    g.decision["code"] = "approved";
    g.decision["reason"] = "approved by " + c.principal_id +
                           (comment && !comment->empty() ? ": " + *comment : std::string());
  } else {
    g.state = "denied";
    g.decision["result"] = "deny";
    g.decision["code"] = "approval_denied";
    g.decision["reason"] = "denied by " + c.principal_id +
                           (comment && !comment->empty() ? ": " + *comment : std::string());
  }
  WriteBatch batch;
  batch.audit_events.push_back(audit::GrantEvent("approval.decided", g, now,
                                                 decided["decision"].get<std::string>(),
                                                 ctx.request_id));
  batch.grants.push_back(g);
  JITBROKER_RETURN_IF_ERROR(journal_->Commit(std::move(batch)));
  NotifyGrantChanged();
  log::Get("lifecycle")->info("event=approval_decided approval_id={} decision={} approver={} request_id={}",
                              id, decided["decision"].get<std::string>(), c.principal_id,
                              ctx.request_id);
  return ApprovalJson(g, &*session, *policy);
}

}  // namespace jitbroker::service
