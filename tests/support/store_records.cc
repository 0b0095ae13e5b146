// Record builders for store tests (tests/support/store_records.h).
#include "tests/support/store_records.h"

#include <chrono>
#include <optional>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include <doctest/doctest.h>
#include <nlohmann/json.hpp>

#include "jitbroker/audit.h"

namespace jitbroker::testing {

TimePoint At(int64_t seconds, int64_t nanos) {
  return TimePoint(std::chrono::duration_cast<TimePoint::duration>(
      std::chrono::seconds(seconds) + std::chrono::nanoseconds(nanos)));
}

SessionRecord FullSession(const std::string& id) {
  SessionRecord s;
  s.id = id;
  s.token_sha256 = std::string(64, 'a');
  s.principal_id = "alice";
  s.agent_id = "claude-1";
  s.task_id = "JIRA-42";
  s.task_description = "fix the \"flaky\" test ✓";
  s.scope = nlohmann::json{{"resources", {"github://acme/api"}}, {"max_tier", "pr"}};
  s.state = SessionState::kActive;
  s.created_at = At(1'767'225'600, 123'456'789);
  s.expires_at = At(1'767'229'200, 1);
  s.heartbeat_seconds = 45;
  s.heartbeat_deadline = At(1'767'225'690);
  s.ended_at = At(1'767'226'000, 999'999'999);
  s.end_reason = "completed";
  s.last_progress = "ran tests";
  s.ci = nlohmann::json{{"repository", "acme/api"}, {"run_id", "42"}};
  s.extra = nlohmann::json{{"client", "jitctl/0.1"}, {"n", 3}};
  s.budget = nlohmann::json{{"max_grants", 10}, {"max_grants_per_tier", {{"write", 2}}}};
  return s;
}

GrantRecord FullGrant(const std::string& id, const std::string& session_id, TimePoint created) {
  GrantRecord g;
  g.id = id;
  g.session_id = session_id;
  g.principal_id = "alice";
  g.agent_id = "claude-1";
  g.task_id = "JIRA-42";
  g.tool = "git.push";
  g.operation = "push";
  g.resource = "github://acme/api";
  g.issuer = "github";
  g.parameters = nlohmann::json{{"branch", "fix/x"}, {"token", "[redacted]"}};
  g.scope = nlohmann::json{{"repositories", {"api"}}};
  g.requested_ttl_seconds = 900;
  g.ttl_seconds = 600;
  g.tier = "write";
  g.decision = nlohmann::json{{"result", "allow"}, {"matched_rule", "writes"}};
  g.state = GrantState::kActive;
  g.revocability = "revocable";
  g.credential_type = "github_installation_token";
  g.credential_sha256 = std::string(64, 'b');
  g.request_digest = std::string(64, 'c');
  g.approval_id = "apr_1";
  g.sealed_handle = "bm9uY2U";
  g.created_at = created;
  g.expires_at = created + std::chrono::seconds(600);
  g.revoked_at = created + std::chrono::milliseconds(1500);
  g.revoke_outcome = "revoked";
  g.justification = "fix the flaky test";
  // Kept in whole seconds (include/jitbroker/store.h).
  const TimePoint whole = std::chrono::floor<std::chrono::seconds>(created);
  g.approval_expires_at = whole + std::chrono::seconds(300);
  g.four_eyes = true;
  g.approvers = {"role:release", "role:sre"};
  g.approval = ApprovalDecision{.decision = "approved",
                                .approver = "bob",
                                .decided_at = whole + std::chrono::seconds(60),
                                .comment = "ok ✓",
                                .break_glass = true,
                                .via = "slack",
                                .via_user = "U0123ABC"};
  g.approval_expired = true;
  g.delegation = nlohmann::json{{"github_login", "octocat"}, {"permission", "write"}};
  g.credential_audit = nlohmann::json{{"installation_id", 7}};
  g.upstream_expires_at = whole + std::chrono::seconds(3600);
  g.extra = nlohmann::json{{"x", true}};
  return g;
}

void CheckSessionEq(const SessionRecord& a, const SessionRecord& b) {
  CHECK(a.id == b.id);
  CHECK(a.token_sha256 == b.token_sha256);
  CHECK(a.principal_id == b.principal_id);
  CHECK(a.agent_id == b.agent_id);
  CHECK(a.task_id == b.task_id);
  CHECK(a.task_description == b.task_description);
  CHECK(a.scope == b.scope);
  CHECK(a.state == b.state);
  CHECK(a.created_at == b.created_at);
  CHECK(a.expires_at == b.expires_at);
  CHECK(a.heartbeat_seconds == b.heartbeat_seconds);
  CHECK(a.heartbeat_deadline == b.heartbeat_deadline);
  CHECK(a.ended_at == b.ended_at);
  CHECK(a.end_reason == b.end_reason);
  CHECK(a.last_progress == b.last_progress);
  CHECK(a.ci == b.ci);
  CHECK(a.extra == b.extra);
  CHECK(a.budget == b.budget);
}

void CheckGrantEq(const GrantRecord& a, const GrantRecord& b) {
  CHECK(a.id == b.id);
  CHECK(a.session_id == b.session_id);
  CHECK(a.principal_id == b.principal_id);
  CHECK(a.agent_id == b.agent_id);
  CHECK(a.task_id == b.task_id);
  CHECK(a.tool == b.tool);
  CHECK(a.operation == b.operation);
  CHECK(a.resource == b.resource);
  CHECK(a.issuer == b.issuer);
  CHECK(a.parameters == b.parameters);
  CHECK(a.scope == b.scope);
  CHECK(a.requested_ttl_seconds == b.requested_ttl_seconds);
  CHECK(a.ttl_seconds == b.ttl_seconds);
  CHECK(a.tier == b.tier);
  CHECK(a.decision == b.decision);
  CHECK(a.state == b.state);
  CHECK(a.revocability == b.revocability);
  CHECK(a.credential_type == b.credential_type);
  CHECK(a.credential_sha256 == b.credential_sha256);
  CHECK(a.request_digest == b.request_digest);
  CHECK(a.approval_id == b.approval_id);
  CHECK(a.sealed_handle == b.sealed_handle);
  CHECK(a.sealed_request == b.sealed_request);
  CHECK(a.created_at == b.created_at);
  CHECK(a.expires_at == b.expires_at);
  CHECK(a.revoked_at == b.revoked_at);
  CHECK(a.revoke_outcome == b.revoke_outcome);
  CHECK(a.justification == b.justification);
  CHECK(a.approval_expires_at == b.approval_expires_at);
  CHECK(a.four_eyes == b.four_eyes);
  CHECK(a.approvers == b.approvers);
  REQUIRE(a.approval.has_value() == b.approval.has_value());
  if (a.approval) {
    CHECK(ApprovalDecisionJson(*a.approval) == ApprovalDecisionJson(*b.approval));
  }
  CHECK(a.approval_expired == b.approval_expired);
  CHECK(a.delegation == b.delegation);
  CHECK(a.credential_audit == b.credential_audit);
  CHECK(a.upstream_expires_at == b.upstream_expires_at);
  CHECK(a.extra == b.extra);
}

nlohmann::json AuditEvent(const std::string& session, const std::string& principal,
                          const std::string& timestamp) {
  nlohmann::json e = {
      {"event", "grant.decided"}, {"human_principal", principal}, {"timestamp", timestamp}};
  if (!session.empty()) {
    e["agent"] = {{"id", "claude-1"}, {"session_id", session}};
  }
  return e;
}

Status ApplyWithAudit(Store& store, WriteBatch batch) {
  auto head = store.AuditHead(kDefaultAuditChain);
  REQUIRE(head.has_value());
  std::optional<ChainHead> h = *head;
  std::vector<AuditRecord> recs;
  for (const nlohmann::json& e : batch.audit_events) {
    recs.push_back(ChainRecord(h, e));
    h = ChainHead{recs.back().seq, recs.back().hash};
  }
  batch.audit_events.clear();  // as the Journal hands them over: chained only
  std::vector<WriteBatch> batches;
  batches.push_back(std::move(batch));
  return store.Apply(batches, recs);
}

Status ApplyOne(Store& store, const WriteBatch& batch) {
  return store.Apply(std::span<const WriteBatch>(&batch, 1), {});
}

}  // namespace jitbroker::testing
