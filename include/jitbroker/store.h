// Store: durable state of sessions, grants and the audit chain.
//
// Writes go through Apply(), which applies a group of WriteBatches in ONE
// transaction and returns only once it is durable. Group commit is done
// above the store by the Journal (broker/audit/journal.h), which collects
// concurrent batches, chains their audit records and hands them to Apply().
//
// Records are upserted whole. A batch may carry StatePreconditions ("this
// grant is still `active`"): Apply() checks them inside its transaction and,
// if one does not hold, fails with kFailedPrecondition "state_conflict" and
// writes nothing. That is what keeps two writers — two requests, or two
// broker processes on one database — from both moving a grant or session out
// of the state they read. Without preconditions a write is unconditional
// (last write wins). docs/architecture.md, "The store seam", says how a
// caller uses them.
//
// The store never parses audit bodies: records arrive with their chain id
// and index fields (AuditRecord::chain_id, AuditRecord::index) set.
//
// Every implementation must pass the store conformance suite
// (tests/conformance/store_conformance.h). Stores are built by store::Open
// (broker/store/open.h) from the `store:` section of the config.
//
// Secrets: sessions hold only the SHA-256 of their token; grants hold only the
// credential fingerprint and, where an issuer needs it, an AEAD-sealed handle.
//
// Thread-safety: all methods are safe to call concurrently, Apply()
// included; within one process the Journal's committer is its only caller.
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "jitbroker/audit.h"
#include "jitbroker/clock.h"
#include "jitbroker/error.h"
#include "jitbroker/metric_family.h"
#include "jitbroker/result.h"
#include "jitbroker/states.h"

namespace jitbroker {

// States become JSON as their names, never as numbers (nlohmann's default
// for enums).
inline void to_json(nlohmann::json& j, GrantState s) { j = StateName(s); }
inline void to_json(nlohmann::json& j, SessionState s) { j = StateName(s); }

struct SessionRecord {
  std::string id;            // ses_…
  std::string token_sha256;  // hex
  std::string principal_id;
  std::string agent_id;
  std::string task_id;
  std::string task_description;
  nlohmann::json scope = nlohmann::json::object();  // TaskScope::ToJson()
  SessionState state = SessionState::kActive;
  TimePoint created_at;
  TimePoint expires_at;
  int64_t heartbeat_seconds = 60;
  TimePoint heartbeat_deadline;
  std::optional<TimePoint> ended_at;
  std::string end_reason;
  std::string last_progress;
  // The CI run of an implicit session (its verified claims; token_exchange);
  // empty for an agent's session.
  nlohmann::json ci = nlohmann::json::object();
  // Fields no code reads, and fields of newer versions: kept as they are.
  nlohmann::json extra = nlohmann::json::object();
  // The session's effective budget (SessionBudget::ToJson(), policy.h); empty
  // = unbounded. Fixed when the session opens.
  nlohmann::json budget = nlohmann::json::object();
};

// A human's decision on a grant's approval.
struct ApprovalDecision {
  std::string decision;  // "approved" | "denied"
  std::string approver;  // principal id
  TimePoint decided_at;
  std::string comment;       // empty = none
  bool break_glass = false;  // the delegating principal approved their own agent's request
  // Where the decision was made when not through the API: "slack" (a signed
  // chat callback), with the clicking Slack user's id. Empty = the API.
  std::string via;
  std::string via_user;
};
// {decision, approver, decided_at, comment?, break_glass?, via?, via_user?}:
// as stored, audited and shown.
nlohmann::json ApprovalDecisionJson(const ApprovalDecision& d);

struct GrantRecord {
  std::string id;  // grt_…
  std::string session_id;
  std::string principal_id;
  std::string agent_id;
  std::string task_id;
  std::string tool;
  std::string operation;
  std::string resource;
  std::string issuer;
  nlohmann::json parameters = nlohmann::json::object();  // already redacted
  nlohmann::json scope = nlohmann::json::object();
  std::optional<int64_t> requested_ttl_seconds;
  int64_t ttl_seconds = 0;
  std::string tier;
  nlohmann::json decision = nlohmann::json::object();  // Decision::ToJson()
  GrantState state = GrantState::kPending;
  std::string revocability;
  std::string credential_type;
  std::string credential_sha256;  // hex fingerprint, empty until minted
  std::string request_digest;     // hex SHA-256 of the canonical request
  std::string approval_id;
  std::string sealed_handle;  // base64url of nonce||ciphertext||tag, or empty
  // While pending or approved: the exact request that was approved, as its
  // canonical JSON (broker/service/request_digest.h) sealed like
  // sealed_handle (AAD: the grant id); minted from at collection. Empty in
  // every other state.
  std::string sealed_request;
  TimePoint created_at;
  std::optional<TimePoint> expires_at;
  std::optional<TimePoint> revoked_at;
  std::string revoke_outcome;  // revoked | deny_installed | expiry_only
  std::string justification;   // the agent's, redacted; shown to approvers
  // Approval (tiers that need one): the window, the rules it was asked under,
  // and the decision once made.
  std::optional<TimePoint> approval_expires_at;  // whole seconds
  bool four_eyes = false;
  std::vector<std::string> approvers;  // the tier's approvers ("role:NAME")
  std::optional<ApprovalDecision> approval;
  bool approval_expired = false;  // nobody decided, or collected, in time
  // The issuer's evidence of the delegating human's rights
  // (DelegationCheck::audit); empty when not checked.
  nlohmann::json delegation = nlohmann::json::object();
  // What the issuer says of the minted credential (MintResult::audit_fields).
  nlohmann::json credential_audit = nlohmann::json::object();
  // When the credential outlives the grant upstream (a GitHub token lives an
  // hour): MintResult::upstream_expires_at, whole seconds.
  std::optional<TimePoint> upstream_expires_at;
  // Annotations no code reads (mint_error, revoke_reason, reconciled,
  // trust_policy) and fields of newer versions: kept as they are.
  nlohmann::json extra = nlohmann::json::object();
};

// How every store keeps the typed fields above that have no column of their
// own: merged into one JSON object with `extra` under fixed keys (so rows
// written before a field was typed read the same). Stores call these and
// never pick keys themselves. Read errors: kInternal naming the field in
// `detail` (a corrupt row).
nlohmann::json SessionExtraForStore(const SessionRecord& s);
[[nodiscard]] Status SessionExtraFromStore(nlohmann::json stored, SessionRecord& s);
nlohmann::json GrantExtraForStore(const GrantRecord& g);
[[nodiscard]] Status GrantExtraFromStore(nlohmann::json stored, GrantRecord& g);

// A revocation that failed upstream and waits for a retry. Kept until it
// succeeds or the credential has expired anyway; survives restarts.
struct RevocationTask {
  std::string grant_id;
  std::string issuer;
  std::string sealed_handle;  // as GrantRecord::sealed_handle (may be empty)
  TimePoint expires_at;       // the credential's expiry: give up after it
  int64_t attempts = 0;
  TimePoint next_attempt_at;
  std::string last_error;  // client-safe reason of the last failure
};

// A CI subject token marked as exchanged (its replay key: issuer and jti,
// broker/oidc/replay_cache.h) until it could no longer be accepted. Keys are
// unique: a reservation commits only if no row holds the key or the row
// holding it expired at or before `reserved_at`; otherwise Apply() fails with
// kAlreadyExists "replay_reserved" and nothing of the transaction is kept.
struct ReplayReservation {
  std::string key;
  TimePoint expires_at;
  TimePoint reserved_at;  // the exchange's "now"
};

// A condition a WriteBatch commits under: the stored session or grant `id`
// is in `state` — or, with `state` empty, does not exist. `state` is the
// state's stored name (StateName); WriteBatch's methods set it. Checked inside
// Apply's transaction, after the writes of the batches before it in the same
// Apply and before any write of its own batch. If any precondition of any
// batch does not hold, Apply fails with kFailedPrecondition "state_conflict"
// and nothing of the whole Apply is written.
//
// Grant and session states only move forward (no state is re-entered), so a
// state read earlier and still current means no transition happened in
// between. Fields other than `state` are still last write wins.
struct StatePrecondition {
  enum class Record { kSession, kGrant };
  Record record = Record::kGrant;
  std::string id;
  std::string state;  // required current state's name; "" = the row must not exist
};

// The error of a StatePrecondition that did not hold, for every Store and the
// Journal alike: kFailedPrecondition "state_conflict" (HTTP 409). `record` is
// "session" or "grant"; `expected`/`found` are states, "" for no row. Ids and
// states are not secret; which row and what was found go to the detail.
inline Error StateConflictError(std::string_view record, std::string_view id,
                                std::string_view expected, std::string_view found) {
  const auto describe = [](std::string_view state) {
    return state.empty() ? std::string("no row") : "state " + std::string(state);
  };
  Error e = FailedPrecondition("state_conflict", "the " + std::string(record) +
                                                     " was changed by another request; read it "
                                                     "again");
  e.detail = std::string(record) + " " + std::string(id) + ": expected " + describe(expected) +
             ", found " + describe(found);
  return e;
}

// One unit of change: everything in it commits atomically together with its
// audit events. Audit events are appended to the chain in vector order.
//
// Sessions and grants are written with PutSession/PutGrant, which name the
// state the record moves from: the write commits only if the stored record
// is still in that state (a StatePrecondition), and the Journal refuses a
// move that the transition table (include/jitbroker/states.h) does not
// allow, or a record written without its precondition (CheckTransitions).
struct WriteBatch {
  // Checked before anything of this batch is written (StatePrecondition).
  std::vector<StatePrecondition> preconditions;
  std::vector<SessionRecord> sessions;                 // written by PutSession
  std::vector<GrantRecord> grants;                     // written by PutGrant
  std::vector<nlohmann::json> audit_events;            // unchained event bodies
  std::vector<RevocationTask> revocations;             // upserted into the retry queue
  std::vector<std::string> revocations_done;           // grant ids removed from the queue
  std::vector<ReplayReservation> replay_reservations;  // see ReplayReservation

  // Writes `s` / `g` if the stored record is in `from` (nullopt: there is no
  // such record yet).
  void PutSession(SessionRecord s, std::optional<SessionState> from) {
    RequireSessionState(s.id, from);
    sessions.push_back(std::move(s));
  }
  void PutGrant(GrantRecord g, std::optional<GrantState> from) {
    RequireGrantState(g.id, from);
    grants.push_back(std::move(g));
  }
  // Commit only if session / grant `id` is in `state` (nullopt: does not
  // exist yet), without writing it (collect an approval only while its
  // session is still active).
  void RequireSessionState(std::string id, std::optional<SessionState> state) {
    preconditions.push_back({StatePrecondition::Record::kSession, std::move(id),
                             state ? std::string(StateName(*state)) : std::string()});
  }
  void RequireGrantState(std::string id, std::optional<GrantState> state) {
    preconditions.push_back({StatePrecondition::Record::kGrant, std::move(id),
                             state ? std::string(StateName(*state)) : std::string()});
  }
  // Whether every session and grant of the batch has a precondition on its
  // id and moves from it as the transition table allows. The Journal calls
  // it before queueing a batch; errors: kInternal "invalid_transition"
  // (a bug of the caller: nothing of the batch is written).
  [[nodiscard]] Status CheckTransitions() const;
};

struct SessionFilter {
  std::string principal_id;           // empty = any
  std::string agent_id;               // empty = any
  std::optional<SessionState> state;  // nullopt = any
  size_t limit = 100;                 // 0 = no limit
};

// Audit records of one chain, matched on their index fields (never on the
// body). since/until are inclusive and compare whole seconds: a record
// matches when its ts lies in [floor(since), floor(until)]; records without
// a ts match only when neither bound is set.
struct AuditFilter {
  std::string chain_id = std::string(kDefaultAuditChain);
  std::string session_id;    // empty = any
  std::string principal_id;  // empty = any
  std::optional<TimePoint> since;
  std::optional<TimePoint> until;
  int64_t after_seq = 0;
  size_t limit = 1000;  // 0 = no limit
};

// Pending approvals (GET /v1/approvals): a page of the grants in state
// "pending" whose approval window is still open (expires_at > now, or none),
// filtered, in a stable order (created_at, id), resumed after a cursor.
struct ApprovalPosition {
  TimePoint created_at;
  std::string grant_id;
};

struct PendingApprovalQuery {
  TimePoint now;
  std::string session_id;    // empty = any
  std::string principal_id;  // the delegating principal; empty = any
  // Only grants of these tiers (names); empty matches nothing. The service
  // passes the tiers the caller may approve, so filtering is never left to
  // after the query (a caller never pages past items it cannot see).
  std::vector<std::string> tiers;
  // Grants delegated by `exclude_principal_id` are left out in these tiers
  // (four-eyes: a principal is not offered their own agent's requests).
  std::string exclude_principal_id;
  std::vector<std::string> exclude_principal_tiers;
  std::optional<ApprovalPosition> after;  // strictly after this one, in `newest_first` order
  bool newest_first = false;
  size_t limit = 50;
};

// Open pending approvals of one session and of one delegating principal (all
// its sessions), with the soonest approval expiry of each (none when the
// count is 0). Indexed: cost follows the pending grants of that session or
// principal.
struct PendingApprovalCounts {
  int64_t session = 0;
  int64_t principal = 0;
  std::optional<TimePoint> session_next_expiry;
  std::optional<TimePoint> principal_next_expiry;
};

// A chain and its last record (Store::ListAuditChains).
struct AuditChainHead {
  std::string chain_id;
  ChainHead head;
};

class Store {
 public:
  virtual ~Store() = default;

  // Applies the batches and the already-chained audit records in one durable
  // transaction. `audit` holds exactly the records of all batches, in order;
  // each record's seq follows its chain's head. All or nothing. Errors:
  //   kFailedPrecondition "state_conflict"  a StatePrecondition did not hold;
  //   kAlreadyExists "replay_reserved"      see ReplayReservation;
  //   kFailedPrecondition "audit_chain_unsupported"  a record of a chain this
  //                                         store cannot hold (one-chain stores);
  //   kUnavailable "store_unavailable"      anything else the store could not
  //                                         write (including a seq taken);
  //                                         the cause is in `detail` only.
  // After any error nothing of the call is written.
  [[nodiscard]] virtual Status Apply(std::span<const WriteBatch> batches,
                                     std::span<const AuditRecord> audit) = 0;

  // Makes this handle the only writer of audit chain `chain_id` for as long
  // as it lives: another handle on the same database (another broker
  // replica) that claims the chain is refused. The Journal claims its chain
  // before it reads the chain's head. Errors: kFailedPrecondition
  // "audit_chain_taken" (another process writes it); "audit_chain_unsupported"
  // (a one-chain store asked for another chain); kUnavailable.
  [[nodiscard]] virtual Status ClaimAuditChain(std::string_view chain_id) = 0;

  // Every non-empty audit chain the store holds, with its head, by chain id
  // (one per broker replica that ever wrote; one-chain stores: theirs).
  [[nodiscard]] virtual Result<std::vector<AuditChainHead>> ListAuditChains() = 0;
  // The last record's seq and hash of chain `chain_id`, or nullopt while that
  // chain is empty.
  [[nodiscard]] virtual Result<std::optional<ChainHead>> AuditHead(std::string_view chain_id) = 0;

  [[nodiscard]] virtual Result<std::optional<SessionRecord>> GetSession(std::string_view id) = 0;
  // Sessions matching f, by (created_at, id).
  [[nodiscard]] virtual Result<std::vector<SessionRecord>> ListSessions(const SessionFilter& f) = 0;
  [[nodiscard]] virtual Result<std::optional<GrantRecord>> GetGrant(std::string_view id) = 0;
  // The grants of one session, by (created_at, id).
  [[nodiscard]] virtual Result<std::vector<GrantRecord>> ListGrants(
      std::string_view session_id) = 0;
  // Sessions in state "active" whose TTL or stall deadline has passed
  // (expires_at <= now OR heartbeat_deadline < now), by (expires_at, id).
  // Indexed: cost follows the number of due sessions, not all sessions.
  // `limit` here and below: at most that many; 0 = no limit.
  [[nodiscard]] virtual Result<std::vector<SessionRecord>> ListSessionsDue(TimePoint now,
                                                                           size_t limit) = 0;
  // Grants in `state`, optionally only those with expires_at <= expires_before
  // and only of `issuer` (empty = any), by (expires_at, created_at, id) with
  // grants that have no expires_at first.
  [[nodiscard]] virtual Result<std::vector<GrantRecord>> ListGrantsByState(
      GrantState state, std::optional<TimePoint> expires_before, std::string_view issuer,
      size_t limit) = 0;
  // Pending approvals (see PendingApprovalQuery), at most q.limit of them.
  [[nodiscard]] virtual Result<std::vector<GrantRecord>> ListPendingApprovals(
      const PendingApprovalQuery& q) = 0;
  // Pending approvals open at `now` of `session_id` and of `principal_id`.
  [[nodiscard]] virtual Result<PendingApprovalCounts> CountPendingApprovals(
      std::string_view session_id, std::string_view principal_id, TimePoint now) = 0;
  // Queued revocations with next_attempt_at <= now, by (next_attempt_at,
  // grant_id).
  [[nodiscard]] virtual Result<std::vector<RevocationTask>> ListRevocationsDue(TimePoint now,
                                                                               size_t limit) = 0;
  // Audit records of f.chain_id with seq > f.after_seq matching f, in seq
  // order, with their chain id and index fields.
  [[nodiscard]] virtual Result<std::vector<AuditRecord>> ListAudit(const AuditFilter& f) = 0;
  // Replay protection of CI subject tokens (ReplayReservation). Whether `key`
  // is held by a reservation that expires after `now`: one indexed lookup.
  [[nodiscard]] virtual Result<bool> ReplayReserved(std::string_view key, TimePoint now) = 0;
  // Deletes at most `limit` reservations that expired at or before `now`
  // (durably, in its own transaction); returns how many. Called by the sweeper.
  [[nodiscard]] virtual Result<size_t> PruneReplayReservations(TimePoint now, size_t limit) = 0;
  // Leases: one process at a time does a piece of work that every broker
  // replica's sweeper finds (ending one due session, retrying one queued
  // revocation), without a transaction held across the upstream calls the
  // work makes. Takes the lease named `key` for this handle for `duration`
  // if no other handle holds it or its holder's lease ran out; taking a
  // lease this handle holds renews it. Time is the store's own clock (the
  // database's, for a shared store), so replicas' clocks do not matter.
  // Durable, in its own transaction; leases long expired are pruned by the
  // store. Returns whether this handle holds the lease now.
  [[nodiscard]] virtual Result<bool> TryLease(std::string_view key, Seconds duration) = 0;
  // The time on the store's own clock, for a store that several hosts share
  // (the database server's clock); nullopt for a store whose clock is this
  // host's. The broker keeps its clock on it (OffsetClock).
  [[nodiscard]] virtual Result<std::optional<TimePoint>> ServerTime() = 0;
  // Appends the store's own metric families (connections, queries, change
  // notifications) for GET /metrics. Must be cheap and thread-safe.
  virtual void CollectMetrics(std::vector<MetricFamily>& /*out*/) const {}
  // Health probe: a cheap read that proves the store answers.
  [[nodiscard]] virtual Status Ping() = 0;
  // Registers `on_change`, called from a thread of the store's soon after
  // another process sharing the database (another broker replica) commits a
  // change that moves a grant out of `pending` (what long polls wait for:
  // a batch with a grant precondition on `pending`), and after the store's watch of such
  // changes was interrupted and is back (changes may have been missed). It
  // says only "look again": callers re-read what they wait on. A store that
  // no other process writes never calls it. Call at most once, before
  // traffic; `on_change` must return quickly and must outlive the store's
  // watch (until the store is destroyed).
  virtual void WatchChanges(std::function<void()> on_change) = 0;
};

}  // namespace jitbroker
