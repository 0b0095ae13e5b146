#include "broker/audit/events.h"

#include "broker/common/time_util.h"
#include "broker/crypto/crypto.h"

namespace jitbroker::audit {

namespace {

nlohmann::json Base(std::string_view event, TimePoint now, std::string_view principal,
                    std::string_view agent_id, std::string_view session_id,
                    std::string_view task_id, std::string_view request_id) {
  nlohmann::json j;
  j["event_id"] = crypto::NewPublicId("evt_", 12);
  j["timestamp"] = FormatRfc3339(now);
  j["event"] = event;
  j["human_principal"] = principal;
  j["agent"] = {{"id", agent_id}, {"session_id", session_id}, {"task_id", task_id}};
  if (!request_id.empty()) {
    j["request_id"] = request_id;
  }
  return j;
}

}  // namespace

nlohmann::json SessionEvent(std::string_view event, const SessionRecord& s, TimePoint now,
                            std::string_view outcome, std::string_view request_id) {
  nlohmann::json j = Base(event, now, s.principal_id, s.agent_id, s.id, s.task_id, request_id);
  j["session"] = {{"state", StateName(s.state)},
                  {"scope", s.scope},
                  {"expires_at", FormatRfc3339(s.expires_at)},
                  {"heartbeat_seconds", s.heartbeat_seconds}};
  if (!s.end_reason.empty()) {
    j["session"]["end_reason"] = s.end_reason;
  }
  if (!s.budget.empty()) {
    j["session"]["budget"] = s.budget;
  }
  j["outcome"] = outcome;
  return j;
}

nlohmann::json GrantEvent(std::string_view event, const GrantRecord& g, TimePoint now,
                          std::string_view outcome, std::string_view request_id) {
  nlohmann::json j =
      Base(event, now, g.principal_id, g.agent_id, g.session_id, g.task_id, request_id);
  j["request"] = {{"tool", g.tool}, {"operation", g.operation},   {"resource", g.resource},
                  {"tier", g.tier}, {"parameters", g.parameters}, {"scope", g.scope}};
  const nlohmann::json& d = g.decision;
  nlohmann::json& pd = j["policy_decision"];
  for (const char* key : {"result", "code", "reason", "matched_rule", "policy_version"}) {
    pd[key] = d.is_object() ? d.value(key, "") : "";
  }
  nlohmann::json jg = {{"grant_id", g.id},
                       {"status", StateName(g.state)},
                       {"ttl_seconds", g.ttl_seconds},
                       {"credential_sha256", g.credential_sha256},
                       {"issuer", g.issuer}};
  if (g.expires_at) {
    jg["expires_at"] = FormatRfc3339(*g.expires_at);
  }
  if (!g.request_digest.empty()) {
    jg["request_digest"] = g.request_digest;
  }
  if (!g.approval_id.empty()) {
    jg["approval_id"] = g.approval_id;
  }
  if (!g.revoke_outcome.empty()) {
    jg["revoke_outcome"] = g.revoke_outcome;
  }
  if (g.approval) {
    jg["approval"] = ApprovalDecisionJson(*g.approval);
  }
  if (!g.credential_audit.empty()) {
    jg["credential"] = g.credential_audit;
  }
  if (!g.delegation.empty()) {
    jg["delegation"] = g.delegation;
  }
  j["jit_grant"] = std::move(jg);
  j["outcome"] = outcome;
  return j;
}

nlohmann::json AdminEvent(std::string_view event, std::string_view principal, TimePoint now,
                          const nlohmann::json& details, std::string_view outcome,
                          std::string_view request_id) {
  nlohmann::json j = Base(event, now, principal, "", "", "", request_id);
  for (const auto& [k, v] : details.items()) {
    j[k] = v;
  }
  j["outcome"] = outcome;
  return j;
}

}  // namespace jitbroker::audit
