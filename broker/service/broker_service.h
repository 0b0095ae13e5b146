// BrokerService: the orchestration of sessions, grants, revocation and
// introspection (DESIGN §3): validate -> policy -> issuer.mint -> durable
// store + audit (Journal) -> response. Independent of HTTP: handlers pass in
// parsed JSON and get JSON bodies or Errors back.
//
// Fail closed: no credential is returned unless the records of its decision
// and mint are durable in the store and the audit file.
//
// Thread-safety: all methods are thread-safe. The policy is an immutable
// snapshot swapped atomically by SwapPolicy(); each call copies the pointer
// once. Read-modify-write of one session is serialised by a striped lock:
// grant requests hold it shared, state changes (heartbeat, end) exclusive.
#pragma once

#include <array>
#include <map>
#include <memory>
#include <mutex>
#include <shared_mutex>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "broker/audit/journal.h"
#include "broker/authn/authn.h"
#include "broker/common/metrics.h"
#include "broker/config/config.h"
#include "jitbroker/clock.h"
#include "jitbroker/issuer.h"
#include "jitbroker/store.h"

namespace jitbroker::service {

struct CallContext {
  std::string request_id;
  authn::Caller caller;
};

struct GrantResponse {
  int status = 201;            // 201 allowed, 202 pending, 403 denied
  nlohmann::json body;
};

class BrokerService {
 public:
  BrokerService(Store* store, audit::Journal* journal, const Clock* clock, Metrics* metrics,
                std::map<std::string, std::unique_ptr<Issuer>> issuers,
                std::shared_ptr<const Policy> policy, config::SessionsConfig sessions);

  std::shared_ptr<const Policy> policy() const;
  void SwapPolicy(std::shared_ptr<const Policy> policy);

  // Identifies the caller from the Authorization header value.
  [[nodiscard]] Result<authn::Caller> Authenticate(std::string_view authorization) const;

  [[nodiscard]] Result<nlohmann::json> OpenSession(const CallContext& ctx, const nlohmann::json& body);
  [[nodiscard]] Result<nlohmann::json> ListSessions(const CallContext& ctx, SessionFilter filter);
  [[nodiscard]] Result<nlohmann::json> GetSession(const CallContext& ctx, const std::string& id);
  [[nodiscard]] Result<nlohmann::json> Heartbeat(const CallContext& ctx, const std::string& id,
                                                 const nlohmann::json& body);
  // complete (revoke=false) or revoke (revoke=true, needs body.reason).
  [[nodiscard]] Result<nlohmann::json> EndSession(const CallContext& ctx, const std::string& id,
                                                  const nlohmann::json& body, bool revoke);
  [[nodiscard]] Result<GrantResponse> RequestGrant(const CallContext& ctx,
                                                   const std::string& session_id,
                                                   const nlohmann::json& body);
  [[nodiscard]] Result<nlohmann::json> GetGrant(const CallContext& ctx, const std::string& id);
  [[nodiscard]] Result<nlohmann::json> RevokeGrant(const CallContext& ctx, const std::string& id);
  [[nodiscard]] Result<nlohmann::json> Introspect(const CallContext& ctx, std::string_view token);
  [[nodiscard]] Result<nlohmann::json> ListAudit(const CallContext& ctx, AuditFilter filter);
  [[nodiscard]] Result<nlohmann::json> VerifyAudit(const CallContext& ctx);
  nlohmann::json Jwks() const;
  [[nodiscard]] Status Ready();

 private:
  using SessionLock = std::shared_mutex;
  SessionLock& LockFor(std::string_view session_id);

  // Loads the session and checks the caller may act on it.
  struct Access {
    bool session_token = false;
    bool owner = false;
    bool admin = false;
  };
  [[nodiscard]] Result<SessionRecord> LoadAuthorized(const CallContext& ctx, const std::string& id,
                                                     Access allowed);
  [[nodiscard]] Status CheckSessionCaller(const CallContext& ctx, const SessionRecord& s);
  // If the session is active but past its TTL or stall deadline, ends it
  // (expired/stalled) and returns the error to answer with.
  [[nodiscard]] Status EnsureLive(const CallContext& ctx, SessionRecord& s);
  // Ends the session in state `state`: revokes live grants, commits, audits.
  [[nodiscard]] Result<nlohmann::json> EndLocked(const CallContext& ctx, SessionRecord s,
                                                 std::string state, std::string reason,
                                                 std::string event);
  // Revokes one grant's credential (issuer call) and updates the record.
  void RevokeGrantRecord(GrantRecord& g, TimePoint now, nlohmann::json& outcome);

  nlohmann::json SessionJson(const SessionRecord& s) const;
  nlohmann::json GrantJson(const GrantRecord& g, TimePoint now) const;
  Issuer* FindIssuer(std::string_view name) const;

  Store* store_;
  audit::Journal* journal_;
  const Clock* clock_;
  Metrics* metrics_;
  std::map<std::string, std::unique_ptr<Issuer>, std::less<>> issuers_;
  mutable std::mutex policy_mu_;
  std::shared_ptr<const Policy> policy_;
  config::SessionsConfig sessions_;
  std::array<SessionLock, 64> session_locks_;
};

}  // namespace jitbroker::service
