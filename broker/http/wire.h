// The REST API's JSON (docs/api.md) over the typed service
// (broker/service/views.h): request bodies parsed into the service's inputs,
// its answers rendered as response bodies. The one place that knows the
// field names of sessions, grants, approvals and revocations.
//
// Parsing is strict (broker/common/json_util.h's JsonReader): an unknown
// field, a wrong type or an out-of-range value is a kInvalidArgument naming
// the field, before the service is called, so a bad request changes nothing.
// Identifiers are printable and bounded, and text shown to people holds no
// invisible or bidirectional formatting (validation.h).
//
// Thread-safety: the functions are pure; JsonApi is as thread-safe as the
// BrokerService it calls.
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "broker/oidc/token_request.h"
#include "broker/service/broker_service.h"
#include "broker/service/views.h"
#include "jitbroker/policy.h"
#include "jitbroker/result.h"
#include "jitbroker/store.h"

namespace jitbroker::http::wire {

// ---- Request bodies -> service inputs

[[nodiscard]] Result<service::OpenSessionInput> ParseOpenSession(const nlohmann::json& body);
[[nodiscard]] Result<service::HeartbeatInput> ParseHeartbeat(const nlohmann::json& body);
[[nodiscard]] Result<service::EndSessionInput> ParseEndSession(const nlohmann::json& body);
[[nodiscard]] Result<GrantRequest> ParseGrantRequest(const nlohmann::json& body);
[[nodiscard]] Result<service::ApprovalDecisionInput> ParseApprovalDecision(
    const nlohmann::json& body);
[[nodiscard]] Result<service::BulkRevokeInput> ParseBulkRevoke(const nlohmann::json& body);

// ---- Service answers -> response bodies

nlohmann::json SessionJson(const SessionRecord& s);
// Reveals the session token: the only answer that carries it.
nlohmann::json OpenedSessionJson(const service::OpenedSession& o);
nlohmann::json SessionListJson(const std::vector<SessionRecord>& sessions);
nlohmann::json SessionDetailJson(const service::SessionDetail& d);
nlohmann::json SessionEndJson(const service::SessionEnd& e);
// [{grant_id, outcome, residual_seconds}] (docs/api.md, "Revocation").
nlohmann::json RevocationJson(const std::vector<service::RevocationOutcome>& outcomes);
// Reveals the credential's secrets when the view has one (the one answer
// that minted it).
nlohmann::json GrantJson(const service::GrantView& v);
nlohmann::json GrantRevocationJson(const service::GrantRevocation& r);
nlohmann::json ApprovalJson(const service::ApprovalView& v);
nlohmann::json ApprovalPageJson(const service::ApprovalPage& p);
nlohmann::json BulkRevocationJson(const service::BulkRevocation& b);
nlohmann::json IntrospectionJson(const service::Introspection& i);
nlohmann::json AuditRecordsJson(const std::vector<AuditRecord>& records);
nlohmann::json AuditVerificationJson(const service::AuditVerification& v);
// RFC 8693 §2.2.1 response; reveals the credential.
nlohmann::json ExchangeJson(const service::ExchangeResult& x);

// The JSON API: each call parses, calls the service and renders. The HTTP
// routes (server.cc) and the service tests both go through it, so what the
// tests check is what a client gets.
class JsonApi {
 public:
  explicit JsonApi(service::BrokerService* service) : service_(service) {}

  struct GrantAnswer {
    service::GrantOutcome outcome = service::GrantOutcome::kIssued;
    nlohmann::json body;
  };

  [[nodiscard]] Result<nlohmann::json> OpenSession(const service::CallContext& ctx,
                                                   const nlohmann::json& body);
  [[nodiscard]] Result<nlohmann::json> ListSessions(const service::CallContext& ctx,
                                                    SessionFilter filter);
  [[nodiscard]] Result<nlohmann::json> GetSession(const service::CallContext& ctx,
                                                  const std::string& id);
  [[nodiscard]] Result<nlohmann::json> Heartbeat(const service::CallContext& ctx,
                                                 const std::string& id, const nlohmann::json& body);
  [[nodiscard]] Result<nlohmann::json> EndSession(const service::CallContext& ctx,
                                                  const std::string& id, const nlohmann::json& body,
                                                  bool revoke);
  [[nodiscard]] Result<GrantAnswer> RequestGrant(const service::CallContext& ctx,
                                                 const std::string& session_id,
                                                 const nlohmann::json& body);
  [[nodiscard]] Result<nlohmann::json> GetGrant(const service::CallContext& ctx,
                                                const std::string& id, int wait_seconds = 0);
  [[nodiscard]] Result<nlohmann::json> RevokeGrant(const service::CallContext& ctx,
                                                   const std::string& id);
  [[nodiscard]] Result<nlohmann::json> ListApprovals(const service::CallContext& ctx,
                                                     const service::ApprovalListFilter& filter);
  [[nodiscard]] Result<nlohmann::json> GetApproval(const service::CallContext& ctx,
                                                   const std::string& id);
  [[nodiscard]] Result<nlohmann::json> DecideApproval(const service::CallContext& ctx,
                                                      const std::string& id,
                                                      const nlohmann::json& body);
  [[nodiscard]] Result<nlohmann::json> BulkRevoke(const service::CallContext& ctx,
                                                  const nlohmann::json& body);
  [[nodiscard]] Result<nlohmann::json> Introspect(const service::CallContext& ctx,
                                                  std::string_view token);
  [[nodiscard]] Result<nlohmann::json> ListAudit(const service::CallContext& ctx,
                                                 AuditFilter filter);
  [[nodiscard]] Result<nlohmann::json> VerifyAudit(const service::CallContext& ctx);
  [[nodiscard]] Result<nlohmann::json> ExchangeToken(const service::CallContext& ctx,
                                                     const oidc::TokenExchangeRequest& req);

  service::BrokerService& service() { return *service_; }

 private:
  service::BrokerService* service_;
};

}  // namespace jitbroker::http::wire
