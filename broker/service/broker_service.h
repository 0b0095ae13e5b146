// BrokerService: the orchestration of sessions, grants, revocation and
// introspection (docs/architecture.md "The request path"):
// validate -> policy -> issuer.mint -> durable
// store + audit (Journal) -> response. Independent of HTTP: it takes and
// answers the typed values of views.h; broker/http/wire.h gives them their
// JSON shape and status codes.
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
#include <atomic>
#include <condition_variable>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <shared_mutex>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "broker/audit/journal.h"
#include "broker/authn/authn.h"
#include "broker/common/metrics.h"
#include "broker/common/rate_limit.h"
#include "broker/config/config.h"
#include "broker/lifecycle/anomaly.h"
#include "broker/lifecycle/notifier.h"
#include "broker/lifecycle/slack.h"
#include "broker/oidc/human_login.h"
#include "broker/oidc/token_request.h"
#include "broker/oidc/token_verifier.h"
#include "broker/oidc/trust_policy.h"
#include "broker/service/grant_sealer.h"
#include "broker/service/revoker.h"
#include "broker/service/views.h"
#include "jitbroker/clock.h"
#include "jitbroker/issuer.h"
#include "jitbroker/store.h"

namespace jitbroker::service {

struct CallContext {
  std::string request_id;         // always the server's own (req_…)
  std::string client_request_id;  // the client's X-Request-Id if valid, else empty; audited apart
  authn::Caller caller;
  // The broker's proxy asks on the session's behalf (docs/proxy.md): the
  // grants it makes are held by the broker (extra.held_by "proxy"), their
  // credentials never reach the agent, and only the proxy collects them.
  bool via_proxy = false;
  // The client's address (the TCP peer), the key of the per-address limits;
  // empty for calls that did not come over the network (tests, the sweeper).
  std::string source_address;
  // Where a decision was made, recorded with the approval as `via`: "slack"
  // (a verified Slack callback; `via_user` is the Slack user id),
  // "console" (the web console), empty for the API.
  std::string via;
  std::string via_user;
};

// What one lifecycle pass did (for logs, metrics and tests).
struct SweepStats {
  size_t sessions_ended = 0;
  size_t grants_expired = 0;
  size_t approvals_expired = 0;
  size_t revocations_retried = 0;
  size_t revocations_done = 0;
  size_t replay_keys_pruned = 0;
};

struct ServiceOptions {
  config::SessionsConfig sessions;
  SecretValue seal_key;  // 32 bytes: seals revocation handles (moved into GrantSealer)
  int64_t default_approval_ttl_seconds = 300;
  // Pending approvals one session / one delegating principal may hold at once
  // (approvals.max_pending_per_session / _per_principal; issue #10).
  int64_t max_pending_per_session = 10;
  int64_t max_pending_per_principal = 50;
  // Token-bucket limits on grant requests per session and per principal.
  config::LimitsConfig limits;
  int max_long_poll_seconds = 60;
  int revoke_concurrency = 32;  // parallel upstream revocations per fan-out
  std::vector<lifecycle::AnomalyRule> anomaly_rules;
  lifecycle::ApprovalNotifier* notifier = nullptr;  // optional; not owned
  lifecycle::SlackNotifier* slack = nullptr;        // optional; not owned
  // CI OIDC token exchange (token_exchange.cc): where the trust policies'
  // issuer keys come from (a JwksCache in the app; not owned). The policies
  // themselves are installed with SetTrust().
  oidc::KeySource* oidc_keys = nullptr;
  // Single sign-on (humans:): a principal's ID token from the provider is a
  // bearer credential on the API too. Null: API keys only. Not owned.
  oidc::HumanLogin* human_login = nullptr;
  // The public JWKS of the audit checkpoint key (AuditKeys()).
  nlohmann::json audit_jwks = nlohmann::json::object();
  // The audit chain this process writes (its replica id with a shared
  // store): the one ListAudit reads when the filter names none, and the one
  // VerifyAudit checks.
  std::string audit_chain = std::string(kDefaultAuditChain);
  // Other broker processes write the same store (PostgreSQL replicas).
  bool shared_store = false;
  // Admin bulk revoke (BulkRevoke): sessions read from the store at a time,
  // and revocation outcomes listed in its answer (the rest are counted).
  size_t bulk_page = 500;
  size_t bulk_listed_revocations = 1000;
};

// GET /v1/approvals: which approvals, and which page of them. Every field is
// validated by ListApprovals (errors: kInvalidArgument "invalid_query" or
// "invalid_cursor").
struct ApprovalListFilter {
  std::string state;             // "" or "pending"
  std::string session_id;        // "" = any
  std::string principal;         // the delegating principal; "" = any
  std::string tier;              // a tier name; "" = any
  std::string cursor;            // "" = first page; else a next_cursor from this filter
  std::optional<int64_t> limit;  // 1..200; absent = 50
  std::string order;             // "" or "oldest" (oldest first), or "newest"
};
inline constexpr int64_t kDefaultApprovalPage = 50;
inline constexpr int64_t kMaxApprovalPage = 200;

class BrokerService {
 public:
  BrokerService(Store* store, audit::Journal* journal, const Clock* clock, Metrics* metrics,
                std::map<std::string, std::unique_ptr<Issuer>> issuers,
                std::shared_ptr<const Policy> policy, ServiceOptions options);

  std::shared_ptr<const Policy> policy() const;
  void SwapPolicy(std::shared_ptr<const Policy> policy);

  // Identifies the caller from the Authorization header value, for a
  // request from `source_address` (the TCP peer; "" = not from the network).
  // An address whose failed authentications exhausted
  // limits.auth_failures_per_address is refused with kResourceExhausted
  // "rate_limited" before the credential is looked at, so the answer says
  // nothing about it; each failure takes one token. Without an
  // Authorization header, a verified TLS client certificate
  // (`client_cert_sha256`, server.tls.client_ca) identifies the principal
  // that lists it; a header, when sent, decides alone.
  [[nodiscard]] Result<authn::Caller> Authenticate(std::string_view authorization,
                                                   std::string_view source_address,
                                                   std::string_view client_cert_sha256 = {}) const;
  // For callers that prove themselves otherwise (a signed Slack callback):
  // whether `source_address` may still try (kResourceExhausted "rate_limited"
  // once limits.auth_failures_per_address is spent), and counting a failure.
  [[nodiscard]] Status AdmitAuthAttempt(std::string_view source_address) const;
  void CountAuthFailure(std::string_view source_address) const;
  const Clock* clock() const { return clock_; }

  // The calls that take a request body and admit only one kind of caller.
  enum class BodyCall { kOpenSession, kRequestGrant, kDecideApproval, kBulkRevoke };
  // Whether the caller is of the kind `call` admits (a principal, a session
  // token, an admin). Checked before the body is read (broker/http/wire.h),
  // so a caller that may not make the call at all gets that answer, not one
  // about the body; and again by the call itself. Errors: kPermissionDenied
  // "principal_required", "session_token_required" or "forbidden".
  [[nodiscard]] static Status CheckCaller(const CallContext& ctx, BodyCall call);

  [[nodiscard]] Result<OpenedSession> OpenSession(const CallContext& ctx, OpenSessionInput in);
  [[nodiscard]] Result<std::vector<SessionRecord>> ListSessions(const CallContext& ctx,
                                                                SessionFilter filter);
  [[nodiscard]] Result<SessionDetail> GetSession(const CallContext& ctx, const std::string& id);
  [[nodiscard]] Result<SessionRecord> Heartbeat(const CallContext& ctx, const std::string& id,
                                                HeartbeatInput in);
  // complete (revoke=false) or revoke (revoke=true, needs in.reason).
  [[nodiscard]] Result<SessionEnd> EndSession(const CallContext& ctx, const std::string& id,
                                              EndSessionInput in, bool revoke);
  [[nodiscard]] Result<GrantResponse> RequestGrant(const CallContext& ctx,
                                                   const std::string& session_id, GrantRequest req);
  // A grant the proxy asks for on the session's behalf (ctx.via_proxy): as
  // RequestGrant, except that a proxy grant of this session for exactly this
  // request (same request digest) that is approved is collected, and one
  // still pending is answered as it is, instead of asking again — so an
  // agent that repeats a push after its approval gets that approval's grant.
  [[nodiscard]] Result<GrantResponse> RequestProxyGrant(const CallContext& ctx,
                                                        const std::string& session_id,
                                                        GrantRequest req);
  // The git proxy found that a ref update it forwarded in session
  // `session_id` rewrote history (docs/proxy.md, "Force pushes"): audited as
  // `git.force_push_detected` with `evidence` ({grant_id, repository, ref,
  // old, new, comparison}); a `force_push` anomaly rule, when configured,
  // then revokes the session.
  [[nodiscard]] Status ReportForcePush(const CallContext& ctx, const std::string& session_id,
                                       nlohmann::json evidence);
  // The proxy upstreams the configured issuers declare
  // (IssuerDescription::proxy_upstreams), each with its issuer's name.
  struct ProxyRoute {
    std::string issuer;
    IssuerDescription::ProxyUpstream upstream;
  };
  std::vector<ProxyRoute> ProxyRoutes() const;
  // At shutdown: every long poll (GetGrant with wait) answers now with the
  // grant as it is, and later ones do not wait, so the listener drains at
  // once instead of after the longest poll (docs/architecture.md).
  void EndLongPolls();
  // `wait_seconds` > 0 long-polls a pending grant; an approved grant is
  // minted when its agent fetches it and the credential returned once.
  [[nodiscard]] Result<GrantView> GetGrant(const CallContext& ctx, const std::string& id,
                                           int wait_seconds = 0);
  [[nodiscard]] Result<GrantRevocation> RevokeGrant(const CallContext& ctx, const std::string& id);
  // Approvals. ListApprovals answers one page of the pending approvals the
  // caller may decide, filtered and paged in the store query itself, so a
  // flood of requests the caller cannot see never hides the ones it can.
  [[nodiscard]] Result<ApprovalPage> ListApprovals(const CallContext& ctx,
                                                   const ApprovalListFilter& filter);
  [[nodiscard]] Result<ApprovalView> GetApproval(const CallContext& ctx, const std::string& id);
  [[nodiscard]] Result<ApprovalView> DecideApproval(const CallContext& ctx, const std::string& id,
                                                    ApprovalDecisionInput in);
  // POST /v1/admin/revoke: by principal, agent, issuer or all (break glass).
  [[nodiscard]] Result<BulkRevocation> BulkRevoke(const CallContext& ctx, BulkRevokeInput in);
  // One lifecycle pass: ends expired and stalled sessions, expires grants and
  // approvals, retries queued revocations. Called by the sweeper thread.
  // Observed in the metrics (jitbroker_sweep_duration_seconds,
  // jitbroker_sweep_handled_total), failed passes included.
  [[nodiscard]] Result<SweepStats> Sweep();
  // At start: grants caught mid-mint by a crash are resolved, never forgotten
  // (with a shared store, only those older than kMintGrace; the sweeper
  // resolves the rest).
  [[nodiscard]] Status Reconcile();
  // Longer than any mint takes (issuer timeouts are seconds): a grant in
  // `minting` for longer was interrupted.
  static constexpr Seconds kMintGrace{300};
  [[nodiscard]] Result<Introspection> Introspect(const CallContext& ctx, std::string_view token);
  [[nodiscard]] Result<std::vector<AuditRecord>> ListAudit(const CallContext& ctx,
                                                           AuditFilter filter);
  [[nodiscard]] Result<AuditVerification> VerifyAudit(const CallContext& ctx);
  // The public key(s) that verify the audit checkpoints, as a JWKS (admins;
  // for `jitctl audit verify --file F --jwks`). Not part of
  // /.well-known/jwks.json: token verifiers must not trust the audit key.
  [[nodiscard]] Result<nlohmann::json> AuditKeys(const CallContext& ctx) const;
  nlohmann::json Jwks() const;

  // Takes one token of limits.token_per_address for ctx.source_address. The
  // token endpoint calls it first, before the form is even parsed, so an
  // address over its limit learns nothing about its request. Errors:
  // kResourceExhausted "rate_limited" with retry_after.
  [[nodiscard]] Status AdmitTokenRequest(const CallContext& ctx) const;
  // CI OIDC token exchange (POST /v1/token, docs/api.md "Token exchange"; token_exchange.cc).
  // SetTrust checks `trust` against the configured issuers and the current
  // policy (each grant's scope valid for its issuer, its tier within the
  // grant's max_tier and not an approval or deny tier) and installs it
  // atomically. Errors: kInvalidArgument "invalid_config" naming the entry.
  [[nodiscard]] Status SetTrust(std::shared_ptr<const oidc::TrustSet> trust);
  // SetTrust's checks alone, against `policy` (reload checks the new trust
  // policies against the new policy before swapping either).
  [[nodiscard]] Status CheckTrust(const oidc::TrustSet& trust, const Policy& policy) const;
  // Verifies the subject token, picks the trust policy by `audience`, matches
  // its claims, narrows the grant to `scope`, opens or reuses the CI run's
  // implicit session and mints through the normal grant path (policy, mint,
  // durable audit). Errors carry reasons oidc::ToOAuthError maps to RFC 6749
  // §5.2; no error leaves a session or grant behind.
  [[nodiscard]] Result<ExchangeResult> ExchangeToken(const CallContext& ctx,
                                                     const oidc::TokenExchangeRequest& req);
  // True for ExchangeToken's one answer to a token refused before its
  // signature was verified: its reason is precise, but must not reach anyone
  // the client could ask (the answer, a public metric), or a forger learns
  // which issuers and keys are trusted.
  static bool IsUnverifiedRejection(const Error& e);
  // The issuers' and the store's own metric families (MetricFamily),
  // rendered in the Prometheus text format and appended to `out`.
  void AppendComponentMetrics(std::string& out) const;
  [[nodiscard]] Status Ready();
  // Another broker replica changed sessions or grants in the shared store
  // (Store::WatchChanges): long polls look at their grant again.
  void OnStoreChanged() { NotifyGrantChanged(); }

 private:
  using SessionLock = std::shared_mutex;
  SessionLock& LockFor(std::string_view session_id);
  std::mutex& PendingLockFor(std::string_view principal_id);
  std::mutex& BudgetLockFor(std::string_view session_id);
  // Commits `batch` (Journal::Commit), then tells the chat notifier about
  // the approvals it took out of pending (SlackNotifier::ApprovalClosed).
  [[nodiscard]] Status CommitAndAnnounce(WriteBatch batch);

  // Loads the session and checks the caller may act on it.
  struct Access {
    bool session_token = false;
    bool owner = false;
    bool admin = false;
  };
  [[nodiscard]] Result<SessionRecord> LoadAuthorized(const CallContext& ctx, const std::string& id,
                                                     Access allowed);
  // Loads grant `id` if the caller may see it (its agent, owner or an admin);
  // grants of sessions the caller may not see are "not found".
  [[nodiscard]] Result<GrantRecord> LoadAuthorizedGrant(const CallContext& ctx,
                                                        const std::string& id);
  [[nodiscard]] Status CheckSessionCaller(const CallContext& ctx, const SessionRecord& s);
  // If the session is active but past its TTL or stall deadline, ends it
  // (expired/stalled) and returns the error to answer with.
  [[nodiscard]] Status EnsureLive(const CallContext& ctx, SessionRecord& s);
  // Ends the session in state `state`: revokes live grants, commits, audits.
  [[nodiscard]] Result<SessionEnd> EndLocked(const CallContext& ctx, SessionRecord s,
                                             SessionState state, std::string reason,
                                             std::string event);
  // Revoker::Revoke (revoker.h) of `grants` into `batch`, then wakes the
  // long polls. One outcome per grant.
  std::vector<RevocationOutcome> RevokeGrants(std::vector<GrantRecord>& grants, TimePoint now,
                                              const std::string& request_id, WriteBatch& batch);
  // What `issuer` contributes to evaluating `req` (its name, TTL bounds,
  // implied tier and scope items): the one place IssuerFacts are built, so
  // the request and the collection of an approved grant see the same facts.
  [[nodiscard]] static Result<IssuerFacts> IssuerFactsFor(const Issuer& issuer,
                                                          const GrantRequest& req);
  // Commits `batch` (journal_->Commit) for the request `ctx`: its audit
  // records also carry the client's own request id when it sent a valid one
  // (client_request_id; the record's request_id is always the server's).
  [[nodiscard]] Status Commit(const CallContext& ctx, WriteBatch batch);
  // Refuses a grant request over the per-session or per-principal rate
  // (kResourceExhausted "rate_limited", retry_after set).
  [[nodiscard]] Status CheckGrantRate(const SessionRecord& s);
  // Takes one token of `limiter` for ctx.source_address (none when empty);
  // refused: kResourceExhausted "rate_limited" naming limits.`limit`.
  [[nodiscard]] Status CheckAddressRate(KeyedRateLimiter* limiter, const CallContext& ctx,
                                        const char* limit, const char* what) const;
  // The refusal of a per-address limit (counted in the metrics).
  Error AddressLimited(const KeyedRateLimiter::Outcome& out, const char* limit,
                       const char* what) const;
  // With PendingLockFor(s.principal_id) held: the refusal when `s` (or its
  // principal) already holds as many open pending approvals as allowed.
  struct PendingRefusal {
    Error error;               // kResourceExhausted "too_many_pending_approvals"
    std::string matched_rule;  // "approvals.max_pending_per_session" or …_per_principal
  };
  [[nodiscard]] Result<std::optional<PendingRefusal>> PendingBoundRefusal(const SessionRecord& s,
                                                                          TimePoint now);
  // ---- The grant pipeline (grant_pipeline.cc; docs/architecture.md, "The
  // grant pipeline"). Agent requests, the collection of approved grants and
  // CI exchanges all go through these stages; where a caller differs, it is
  // a named option here, never a missing call.
  struct PipelineOptions {
    // Check the delegating human's own rights upstream
    // (Issuer::CheckDelegatedRights). False only for CI exchanges: a CI run
    // acts for no human (its trust policy is the whole of its rights).
    bool delegated_rights = true;
    // Bound pending approvals per session and per principal (agent requests;
    // a CI job cannot wait for an approval, and a collection is past it).
    bool pending_bound = true;
    // Show the decision to the anomaly rules and count it in the metrics.
    // False only when collecting an approved grant: its request was
    // observed when it was made.
    bool observe = true;
    // When collecting: the approved grant, whose approval the current policy
    // must still ask for (same tier, same approvers, break-glass allowed).
    const GrantRecord* approved = nullptr;
  };
  // What stages 1-4 decided.
  struct Decided {
    Decision decision;
    std::optional<DelegationCheck> delegation;         // when it was checked
    std::optional<PendingRefusal> pending_refusal;     // the pending bound refused it
    std::optional<lifecycle::AnomalyTrigger> anomaly;  // a rule triggered on it
    // A budgeted session's budget lock: held until the grant that passed the
    // budget is committed (pending, or minted and recorded); released at
    // once for a denial.
    std::unique_lock<std::mutex> budget_lock;
    std::unique_lock<std::mutex> pending_lock;  // held until a pending grant commits
  };
  // Stages 1-4 for grant `grant_id` of session `s`: (1) the pure Evaluate()
  // with the issuer's facts, and when collecting, the approval's currency;
  // (2) delegated rights; (2b) the session budget (budget.h); (3) the
  // pending bound; (4) the anomaly rules. Each
  // refusal is a denial in the Decision; an Error means the request could not
  // be decided (an issuer or the store is unavailable).
  [[nodiscard]] Result<Decided> DecideGrant(const std::string& grant_id, const SessionRecord& s,
                                            const GrantRequest& req, Issuer& issuer,
                                            const Policy& policy, const PipelineOptions& opts);
  // Stage 5: the record of a decided grant (one builder for every caller):
  // parameters and justification redacted, the decision, tier and
  // revocability, the delegated-rights evidence.
  GrantRecord NewGrantRecord(const std::string& grant_id, const SessionRecord& s,
                             const GrantRequest& req, const Issuer& issuer, const Decided& d,
                             TimePoint now) const;
  // Mints an approved grant at collection from the exact request that was
  // approved (sealed in the record), after re-evaluating it against the
  // current policy, session and delegated rights; otherwise denies it.
  [[nodiscard]] Result<GrantView> CollectApproved(const CallContext& ctx, GrantRecord rec,
                                                  const SessionRecord& s, Issuer* issuer);
  // The sealed request of `g`, opened and checked against g.request_digest;
  // an Error (whose message says what is wrong) when it is absent, does not
  // open, or does not match.
  [[nodiscard]] Result<GrantRequest> OpenApprovedRequest(const GrantRecord& g) const;
  // An approved grant that may no longer be minted when collected (the
  // delegating human lost the rights, the policy or session changed, the
  // sealed request is not intact): recorded and audited as denied with
  // decision `code`, `reason` and `matched_rule`.
  [[nodiscard]] Result<GrantView> DenyAtCollection(const CallContext& ctx, GrantRecord& g,
                                                   const std::string& code,
                                                   const std::string& reason,
                                                   const std::string& matched_rule,
                                                   const nlohmann::json& delegation);
  // Mints an allowed or approved grant and commits it (decision/mint records).
  // `replay` (CI exchanges) commits in the batch that records the minted
  // credential: if the store refuses it, the credential is abandoned.
  // The view carries the credential, returned to the client exactly once.
  [[nodiscard]] Result<GrantView> MintAndCommit(const CallContext& ctx, GrantRecord& g,
                                                const GrantRequest& req, Issuer* issuer,
                                                std::vector<nlohmann::json> pre_events,
                                                std::vector<ReplayReservation> replay = {});
  // Records an anomaly rule's trigger and ends the session (its exclusive
  // lock must NOT be held: this takes it).
  [[nodiscard]] Status RevokeForAnomaly(const CallContext& ctx, const std::string& session_id,
                                        const lifecycle::AnomalyTrigger& trigger);
  void NotifyGrantChanged();
  // Whether this process does the sweep work named `key`: with a shared
  // store, the one replica holding its lease (Store::TryLease, kWorkLease)
  // ends a due session or retries a queued revocation, so the upstream is
  // not called once per replica; alone on its store, always.
  [[nodiscard]] Result<bool> ClaimWork(const std::string& key);
  static constexpr Seconds kWorkLease{60};
  // Sweep's work; `stats` counts what was handled, also when it fails.
  [[nodiscard]] Status SweepPass(SweepStats& stats);
  // Revokes (expiry_only, audited) the grants in `minting` whose mint began
  // before `began_before` (nullopt: all of them).
  [[nodiscard]] Status ReconcileMinting(std::optional<TimePoint> began_before);
  // Expires one pending/approved grant whose approval window has passed
  // (takes the session lock; a no-op if it is no longer due).
  [[nodiscard]] Status ExpireApproval(const std::string& grant_id, const std::string& request_id);
  // Retries one queued revocation; returns whether it is finished.
  [[nodiscard]] Result<bool> RetryRevocation(const RevocationTask& task, TimePoint now);

  Issuer* FindIssuer(std::string_view name) const;

  Store* store_;
  audit::Journal* journal_;
  const Clock* clock_;
  Metrics* metrics_;
  std::map<std::string, std::unique_ptr<Issuer>, std::less<>> issuers_;
  // Mints in flight per issuer (limits.max_calls_per_issuer; the bulkhead
  // of grant_pipeline.cc). Same keys as issuers_, fixed at construction.
  std::map<std::string, std::unique_ptr<std::atomic<int64_t>>, std::less<>> issuer_calls_;
  mutable std::mutex policy_mu_;
  std::shared_ptr<const Policy> policy_;
  ServiceOptions options_;
  const config::SessionsConfig& sessions_ = options_.sessions;
  // Seals revocation handles and approved requests (AAD: the grant id).
  GrantSealer sealer_{std::move(options_.seal_key)};  // the only copy of the key
  Revoker revoker_{&sealer_, metrics_, options_.revoke_concurrency,
                   [this](std::string_view name) { return FindIssuer(name); }};
  std::unique_ptr<lifecycle::AnomalyDetector> anomaly_;
  // Grant-request rate limits (limits:), keyed by session id and principal id.
  std::unique_ptr<KeyedRateLimiter> session_rate_;
  std::unique_ptr<KeyedRateLimiter> principal_rate_;
  std::unique_ptr<KeyedRateLimiter> token_address_rate_;
  std::unique_ptr<KeyedRateLimiter> introspect_address_rate_;
  std::unique_ptr<KeyedRateLimiter> auth_failure_rate_;
  // Held from counting a session's pending approvals to committing a new one,
  // so concurrent requests cannot overshoot the bounds. Striped by principal:
  // both bounds (per session, per principal) only count one principal's
  // grants, so requests of different principals never wait for each other.
  std::array<std::mutex, 64> pending_locks_;
  // Session budgets: held from counting a budgeted session's grants until
  // the grant that passed is committed (BudgetLockFor).
  std::array<std::mutex, 256> budget_locks_;
  std::array<SessionLock, 64> session_locks_;
  // Long-poll waiters on grant state changes.
  std::mutex wait_mu_;
  std::condition_variable wait_cv_;
  uint64_t wait_generation_ = 0;
  bool long_polls_ended_ = false;  // guarded by wait_mu_
  std::mutex sweep_mu_;            // one Sweep at a time

  // CI OIDC token exchange (token_exchange.cc): the trust snapshot, the
  // policy it augments with the trust principals, and the jti replay cache.
  struct ExchangeState;
  struct CiExchange;
  static std::shared_ptr<ExchangeState> NewExchangeState();
  // The trust policies and the current policy augmented with one principal
  // and role "trust:<name>" per policy, rebuilt when either changes.
  std::pair<std::shared_ptr<const oidc::TrustSet>, std::shared_ptr<const Policy>> TrustSnapshot();
  // Finds or opens the CI run's session and mints in it (token_exchange.cc).
  [[nodiscard]] Result<ExchangeResult> MintForCi(const CallContext& ctx, CiExchange& x);
  [[nodiscard]] Result<ExchangeResult> EvaluateAndMintForCi(const CallContext& ctx, CiExchange& x,
                                                            SessionRecord s, bool new_session);
  // With the run's session lock released: revokes the session when an
  // anomaly rule triggered on the exchange, then answers `out`.
  [[nodiscard]] Result<ExchangeResult> AfterCiDecision(const CallContext& ctx, CiExchange& x,
                                                       const std::string& session_id,
                                                       Result<ExchangeResult> out);
  std::shared_ptr<ExchangeState> exchange_ = NewExchangeState();
};

}  // namespace jitbroker::service
