// What BrokerService takes and answers, typed and free of any wire shape
// (docs/architecture.md, "The request path"). broker/http/wire.h parses the
// REST API's request bodies into the inputs and renders the answers as the
// JSON of docs/api.md; nothing here knows JSON field names or status codes.
//
// The inputs are already well-formed when they arrive (types, bounds,
// identifiers, visible text: wire.h checks them); the service decides what
// they mean (which issuers exist, what the caller may do, the policy).
//
// Thread-safety: plain values.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "broker/service/budget.h"
#include "broker/service/revoker.h"
#include "jitbroker/clock.h"
#include "jitbroker/policy.h"
#include "jitbroker/secret.h"
#include "jitbroker/states.h"
#include "jitbroker/store.h"

namespace jitbroker::service {

// The longest TTL a client may ask for (sessions, grants): 30 days.
inline constexpr int64_t kMaxTtlSeconds = 30 * 24 * 3600;

// ---------------------------------------------------------------------------
// Inputs

// POST /v1/sessions.
struct OpenSessionInput {
  std::string agent_id;
  std::string task_id;
  std::optional<std::string> description;
  TaskScope scope;
  std::optional<int64_t> ttl_seconds;        // absent: sessions.default_ttl_seconds
  std::optional<int64_t> heartbeat_seconds;  // absent: sessions.heartbeat_seconds
  // The budget asked for; the session gets the tighter of it and its
  // principal's roles' session_budget (EffectiveBudget).
  SessionBudget budget;
};

// POST /v1/sessions/{id}/heartbeat.
struct HeartbeatInput {
  std::optional<std::string> progress;
};

// POST /v1/sessions/{id}/complete and /revoke (a revocation needs a reason).
struct EndSessionInput {
  std::optional<std::string> reason;
};

// POST /v1/approvals/{id}/decision.
struct ApprovalDecisionInput {
  bool approve = false;
  std::string request_digest;  // the digest the approver read
  std::optional<std::string> comment;
};

// POST /v1/admin/revoke: exactly one selector.
struct BulkSelector {
  enum class Kind { kPrincipal, kAgent, kIssuer, kAll };
  Kind kind = Kind::kAll;
  std::string value;  // the principal, agent or issuer; empty for kAll
};
struct BulkRevokeInput {
  BulkSelector selector;
  std::string reason;
};

// ---------------------------------------------------------------------------
// Answers

// A session just opened: its token is shown this once.
struct OpenedSession {
  SessionRecord session;
  SecretValue token;
  int64_t ttl_seconds = 0;                       // as granted (sessions.max_ttl_seconds bounds it)
  std::optional<int64_t> requested_ttl_seconds;  // set when lowered
};

// GET /v1/sessions/{id}: the session and all of its grants.
struct SessionDetail {
  SessionRecord session;
  std::vector<GrantRecord> grants;
  TimePoint now;          // grants past their expiry show as expired
  BudgetUse budget_used;  // what the grants consumed of the session's budget
};

// A completed or revoked session and what became of each live grant.
struct SessionEnd {
  std::string session_id;
  SessionState state = SessionState::kCompleted;
  std::vector<RevocationOutcome> revocations;
};

// The credential of a grant, returned to its agent exactly once.
struct IssuedCredential {
  std::string type;  // the issuer's credential type ("jwt", …)
  TimePoint expires_at;
  nlohmann::json fields = nlohmann::json::object();          // non-secret
  std::vector<std::pair<std::string, SecretValue>> secrets;  // e.g. {"token", …}
};

// A grant as its agent, owner or an admin sees it.
struct GrantView {
  GrantRecord grant;
  TimePoint now;                               // an active grant past its expiry shows as expired
  std::optional<IssuedCredential> credential;  // only in the answer that minted it
};

// What became of a grant request; broker/http/ maps it to the status code
// (201, 202, or a 403 problem that carries the grant).
enum class GrantOutcome {
  kIssued,   // allowed and minted: the view has the credential
  kPending,  // waits for an approval
  kDenied,   // refused: the view has the decision
};

struct GrantResponse {
  GrantOutcome outcome = GrantOutcome::kIssued;
  GrantView grant;
};

// DELETE /v1/grants/{id}.
struct GrantRevocation {
  RevocationOutcome outcome;
  GrantState state = GrantState::kRevoked;  // the grant's state afterwards
};

// The approval rules of a grant's tier under the current policy.
struct ApprovalRules {
  bool four_eyes = true;
  bool break_glass_self_approval = false;
  std::vector<std::string> approvers;
};

// A pending (or decided) approval with what an approver needs to decide it.
struct ApprovalView {
  GrantRecord grant;
  std::optional<SessionRecord> session;  // absent if the session is gone
  std::optional<ApprovalRules> rules;    // absent if the tier is unknown
};

struct ApprovalPage {
  std::vector<ApprovalView> approvals;
  std::optional<std::string> next_cursor;  // absent on the last page
};

// "pending", "approved", "denied" or "expired": the approval's state, from
// its grant's.
std::string ApprovalState(const GrantRecord& g);

struct BulkRevocation {
  BulkSelector selector;
  std::string reason;
  size_t sessions_revoked = 0;
  // The first ServiceOptions::bulk_listed_revocations outcomes (the answer
  // stays bounded however many credentials the selector held), and how many
  // there were in all.
  std::vector<RevocationOutcome> revocations;
  size_t revocations_total = 0;
};

// RFC 7662 introspection of a token the broker issued.
struct Introspection {
  bool active = false;
  nlohmann::json claims = nlohmann::json::object();  // the verified token's claims
  std::string client_id;                             // the agent
  std::string username;                              // the delegating principal
};

// GET /v1/audit/verify: the stored chain checked record by record.
// One audit chain, verified.
struct ChainCheck {
  std::string chain;
  bool ok = true;
  int64_t records = 0;  // checked before the first bad one
  std::optional<int64_t> first_bad_seq;
  // "seq gap", "prev_hash mismatch", "hash mismatch", or a checkpoint's
  // reference to another chain that does not hold ("other_chains …").
  std::string problem;
  std::string head;  // the last record's hash (when ok)
  int64_t head_seq = 0;
};

// GET /v1/audit/verify: every chain of the store (one per replica that
// wrote), and the checkpoints' references between them.
struct AuditVerification {
  bool ok = true;                  // every chain and every reference holds
  std::string own;                 // the answering replica's chain
  std::vector<ChainCheck> chains;  // by chain id; always includes `own`
  int64_t cross_references = 0;    // checkpoint references to other chains checked
};

// RFC 8693 token exchange for a CI job: the grant minted for it.
struct ExchangeResult {
  GrantView grant;  // with its credential
  std::string trust_policy;
  std::string issued_token_type;  // the issuer's token type URN
  std::string scope_text;         // the narrowed scope as text; empty = none
};

}  // namespace jitbroker::service
