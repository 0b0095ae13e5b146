// Builders for audit event bodies (docs/concepts.md "Audit record"). Every event has event_id,
// timestamp, event, human_principal, agent {id, session_id, task_id} and,
// where they apply, request {tool, operation, resource, tier, parameters},
// policy_decision {result, code, reason, matched_rule, policy_version},
// jit_grant {grant_id, status, ttl_seconds, credential_sha256, issuer,
// expires_at}, outcome and request_id. Secret values never appear;
// parameters are redacted by key and by value (broker/audit/redact.h).
//
// Thread-safety: pure functions.
#pragma once

#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

#include "broker/audit/redact.h"  // RedactParameters, RedactText
#include "jitbroker/clock.h"
#include "jitbroker/store.h"

namespace jitbroker::audit {

// Event for a session (session.opened, session.completed, session.revoked,
// session.stalled, session.expired).
nlohmann::json SessionEvent(std::string_view event, const SessionRecord& s, TimePoint now,
                            std::string_view outcome, std::string_view request_id);

// Event for a grant (grant.decided, credential.minted, credential.mint_failed,
// credential.revoked). `grant.parameters` must already be redacted.
nlohmann::json GrantEvent(std::string_view event, const GrantRecord& g, TimePoint now,
                          std::string_view outcome, std::string_view request_id);

// Event not tied to one session (admin.bulk_revoke, …): `details` is merged in.
nlohmann::json AdminEvent(std::string_view event, std::string_view principal, TimePoint now,
                          const nlohmann::json& details, std::string_view outcome,
                          std::string_view request_id);

}  // namespace jitbroker::audit
