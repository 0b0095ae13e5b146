// CI OIDC token exchange (docs/concepts.md "CI token exchange", "Protocol notes"): the
// orchestration behind POST /v1/token.
//
//   decode the subject token -> the static issuer allow-list (before any
//   network) -> the issuer's alg allow-list (union of its policies'), its
//   JWKS key by kid and the signature
//   -> only then: pick the trust policy by `audience`, check its alg, time
//      and aud rules and match its claims
//   -> narrow its grant to the requested `scope`
//   -> evaluate the grant with the normal policy engine, the trust policy
//      standing in as principal ("trust:<name>") and its grant as task scope
//   -> reserve the token's jti (replay protection)
//   -> open or reuse the CI run's implicit session (its id is derived from
//      the policy and the run key, so concurrent jobs of one run share it and
//      a revoked run stays revoked)
//   -> mint and commit through MintAndCommit (decision, mint and the
//      token.exchanged record durable before the credential leaves).
//
// Until the signature is verified, every failure (no trust policies,
// untrusted issuer, alg, unknown key, bad signature...) gets one and the same
// invalid_grant answer, and `audience`/`resource` are not even looked at: an
// unauthenticated caller cannot tell trusted issuers, policy names or targets
// apart. The precise reason goes to the log only. (A token that is not a JWS
// at all stays invalid_request, and an issuer whose keys cannot be fetched
// temporarily_unavailable, with a message that names no issuer.) After
// verification, error descriptions still name no claim and no configured
// limit; the log has them.
//
// Failures before the policy evaluation leave no durable trace (a log line
// and nothing else: anyone can send tokens, and every GitHub repository in
// the world can mint one for a trusted issuer). A verified identity that
// matched a trust policy and is then denied by policy is audited
// (token.exchange_denied) without opening a session.
#include <algorithm>
#include <chrono>
#include <mutex>
#include <shared_mutex>
#include <string>
#include <utility>
#include <vector>

#include "broker/audit/events.h"
#include "broker/common/log.h"
#include "broker/common/time_util.h"
#include "broker/crypto/crypto.h"
#include "broker/oidc/replay_cache.h"
#include "broker/oidc/token_verifier.h"
#include "broker/oidc/trust_policy.h"
#include "broker/service/broker_service.h"

namespace jitbroker::service {

namespace {

// How many sessions one CI run may go through (a new one only when the
// previous one expired).
constexpr int kMaxCiSessionGenerations = 16;

// The one answer to a subject token that failed before its signature was
// verified. `reason` stays precise for the log and tests; the client sees
// invalid_grant and this message whatever the reason was.
constexpr std::string_view kRejectedMessage = "the subject_token was not accepted";

Error Rejected(const Error& precise) {
  Error e = Unauthenticated(std::string(precise.Reason()), std::string(kRejectedMessage));
  e.detail = precise.message + (precise.detail.empty() ? "" : " (" + precise.detail + ")");
  return e;
}

// The issuer's keys cannot be fetched: retryable, but naming no issuer.
Error KeysUnavailable(const Error& precise) {
  Error e = Unavailable("issuer_unavailable",
                        "the subject_token cannot be verified right now; retry shortly",
                        precise.detail.empty() ? precise.message : precise.detail);
  e.retryable = true;
  e.retry_after = precise.retry_after.count() > 0 ? precise.retry_after : Seconds(5);
  return e;
}

// Deterministic: the same policy and run always name the same session, so
// concurrent exchanges of one run meet in one session and a revoked run's
// session is found again (and refuses).
std::string CiSessionId(const std::string& principal, const std::string& run_key, int generation) {
  const std::string digest = crypto::Sha256Hex("jitbroker/ci-session/v1\n" + principal + "\n" +
                                               run_key + "\n" + std::to_string(generation));
  return "ses_ci_" + digest.substr(0, 32);
}

std::string TaskIdFor(const oidc::TrustPolicy& p, const nlohmann::json& claims) {
  for (const char* name : {"job_workflow_ref", "workflow_ref", "ci_config_ref_uri"}) {
    if (std::optional<std::string> v = oidc::ClaimText(claims, name); v && !v->empty()) {
      std::string out;
      for (unsigned char c : *v) {
        out += (c < 0x21 || c >= 0x7f) ? '_' : static_cast<char>(c);
      }
      return out.substr(0, 256);
    }
  }
  return p.PrincipalId();
}

std::string DescriptionFor(const oidc::TrustPolicy& p, const nlohmann::json& facts) {
  auto f = [&](const char* k) { return facts.value(k, std::string()); };
  std::string where = f("repository").empty() ? f("project_path") : f("repository");
  std::string run = f("run_id").empty() ? f("pipeline_id") : f("run_id");
  std::string d = "CI run";
  if (!where.empty()) {
    d += " of " + where;
  }
  if (!run.empty()) {
    d += " #" + run;
    if (!f("run_attempt").empty()) {
      d += " attempt " + f("run_attempt");
    }
  }
  if (!f("ref").empty()) {
    d += ", ref " + f("ref");
  }
  if (!f("event_name").empty()) {
    d += ", event " + f("event_name");
  }
  d += " (trust policy " + p.name + ")";
  return d.substr(0, 1024);
}

Policy AugmentPolicy(const Policy& base, const oidc::TrustSet& trust) {
  Policy out = base;
  for (const oidc::TrustPolicy& p : trust.policies) {
    const std::string id = p.PrincipalId();
    Role role;
    role.name = id;
    role.resources = {p.grant.resource};
    role.max_tier = p.grant.max_tier;
    role.issuers = {p.grant.issuer};
    out.roles[id] = std::move(role);
    Principal principal;
    principal.id = id;
    principal.roles = {id};
    out.principals.push_back(std::move(principal));
  }
  return out;
}

TaskScope ScopeFor(const oidc::TrustPolicy& p) {
  TaskScope scope;
  scope.resources = {p.grant.resource};
  scope.max_tier = p.grant.max_tier;
  scope.issuers = {p.grant.issuer};
  return scope;
}

}  // namespace

struct BrokerService::ExchangeState {
  // Looked up once: log::Get takes spdlog's registry lock.
  std::shared_ptr<spdlog::logger> logger = log::Get("oidc");
  std::mutex mu;
  std::shared_ptr<const oidc::TrustSet> trust;  // guarded by mu
  std::shared_ptr<const Policy> base;           // guarded by mu: what `augmented` derives from
  std::shared_ptr<const Policy> augmented;      // guarded by mu
  oidc::ReplayCache replay;
};

// One exchange in flight.
struct BrokerService::CiExchange {
  const oidc::TrustPolicy* policy = nullptr;
  std::shared_ptr<const oidc::TrustSet> trust;  // keeps `policy` alive
  std::shared_ptr<const Policy> effective;      // the augmented policy
  nlohmann::json claims;                        // verified
  nlohmann::json facts;                         // CiFacts
  std::string run_key;
  std::string subject_token_sha256;
  std::string subject_token_type;
  std::optional<std::string> requested_scope;
  oidc::NarrowedGrant narrowed;
  GrantRequest request;
  Issuer* issuer = nullptr;
  Tier implied_tier = Tier::kRead;
  std::vector<std::string> scope_items;  // Issuer::ScopeItems of `request`
  std::string issued_token_type;
  // Set when an anomaly rule triggered on this exchange: the run's session is
  // revoked once its lock is released (RevokeForAnomaly takes it).
  std::optional<lifecycle::AnomalyTrigger> anomaly;
};

std::shared_ptr<BrokerService::ExchangeState> BrokerService::NewExchangeState() {
  return std::make_shared<ExchangeState>();
}

std::pair<std::shared_ptr<const oidc::TrustSet>, std::shared_ptr<const Policy>>
BrokerService::TrustSnapshot() {
  std::shared_ptr<const Policy> current = policy();
  std::lock_guard lock(exchange_->mu);
  if (!exchange_->trust) {
    return {nullptr, current};
  }
  if (exchange_->base != current || !exchange_->augmented) {
    exchange_->augmented =
        std::make_shared<const Policy>(AugmentPolicy(*current, *exchange_->trust));
    exchange_->base = current;
  }
  return {exchange_->trust, exchange_->augmented};
}

Status BrokerService::CheckTrust(const oidc::TrustSet& trust, const Policy& policy) const {
  if (!trust.empty() && options_.oidc_keys == nullptr) {
    return std::unexpected(Internal("trust policies need an OIDC key source"));
  }
  return oidc::CheckTrustGrants(trust, policy, [this](std::string_view name) -> const IssuerSpec* {
    return FindIssuer(name);
  });
}

Status BrokerService::SetTrust(std::shared_ptr<const oidc::TrustSet> trust) {
  if (trust) {
    JITBROKER_RETURN_IF_ERROR(CheckTrust(*trust, *policy()));
    for (const std::string& w : trust->warnings) {
      exchange_->logger->warn("event=weak_trust_policy note=\"{}\"", w);
    }
  }
  std::lock_guard lock(exchange_->mu);
  exchange_->trust = std::move(trust);
  exchange_->augmented.reset();
  exchange_->base.reset();
  return OkStatus();
}

bool BrokerService::IsUnverifiedRejection(const Error& e) {
  return e.code == ErrorCode::kUnauthenticated && e.message == kRejectedMessage;
}

Result<ExchangeResult> BrokerService::ExchangeToken(const CallContext& ctx,
                                                    const oidc::TokenExchangeRequest& req) {
  auto [trust, effective] = TrustSnapshot();
  // Before the signature is verified: one answer for every failure, the
  // precise reason in the log (debug: anyone can send these).
  auto reject = [&](const Error& precise) {
    exchange_->logger->debug(
        "event=token_exchange_rejected request_id={} stage=unverified reason={} detail=\"{}\"",
        ctx.request_id, precise.Reason(), precise.message + " " + precise.detail);
    return std::unexpected(Rejected(precise));
  };
  if (!trust || trust->empty()) {
    return reject(NotFound("no_trust_policies", "this broker has no CI trust policies"));
  }
  // 1–2: structure and header, no network.
  auto decoded = oidc::DecodeSubjectToken(req.subject_token.Reveal());
  if (!decoded) {
    if (decoded.error().code == ErrorCode::kInvalidArgument) {
      return std::unexpected(decoded.error());  // not a JWS at all: invalid_request
    }
    return reject(decoded.error());
  }
  const oidc::UnverifiedToken& token = *decoded;
  // 3: the static issuer allow-list, before any key is fetched (no SSRF).
  if (!trust->TrustsIssuer(token.issuer)) {
    return reject(Unauthenticated("untrusted_issuer", "the subject_token's issuer is not trusted"));
  }
  // 4–5: the issuer's algorithms and keys, and the signature — before the
  // audience names any policy.
  if (options_.oidc_keys == nullptr) {
    return std::unexpected(Internal("no OIDC key source is configured"));
  }
  if (Status sig = oidc::VerifyTokenSignature(token, oidc::KeysOfIssuer(*trust, token.issuer),
                                              *options_.oidc_keys);
      !sig) {
    if (sig.error().code == ErrorCode::kUnavailable) {
      exchange_->logger->warn(
          "event=token_exchange_rejected request_id={} stage=unverified reason={} issuer=\"{}\" "
          "detail=\"{}\"",
          ctx.request_id, sig.error().Reason(), token.issuer, sig.error().ToString());
      return std::unexpected(KeysUnavailable(sig.error()));
    }
    return reject(sig.error());
  }

  // Verified: from here on the caller holds a token its issuer signed. The
  // trust policy: by name, else every policy granting that target.
  auto refuse = [&](const oidc::TrustPolicy* p, Error e) {
    exchange_->logger->info(
        "event=token_exchange_rejected request_id={} stage=verified reason={} trust_policy={} "
        "sub=\"{}\" detail=\"{}\"",
        ctx.request_id, e.Reason(), p == nullptr ? std::string("-") : p->name,
        oidc::ClaimText(token.jws.payload, "sub").value_or(""),
        e.detail.empty() ? e.message : e.detail);
    return std::unexpected(std::move(e));
  };
  std::vector<const oidc::TrustPolicy*> candidates;
  if (const oidc::TrustPolicy* p = trust->Find(req.audience)) {
    candidates.push_back(p);
  } else {
    for (const oidc::TrustPolicy& policy : trust->policies) {
      if (policy.grant.resource == req.audience) {
        candidates.push_back(&policy);
      }
    }
  }
  if (candidates.empty()) {
    return refuse(nullptr, NotFound("unknown_audience",
                                    "audience names no trust policy and no target of one"));
  }
  if (req.resource) {
    std::erase_if(candidates,
                  [&](const oidc::TrustPolicy* p) { return p->grant.resource != *req.resource; });
    if (candidates.empty()) {
      return refuse(nullptr,
                    NotFound("resource_mismatch",
                             "resource is not the target of the trust policy named by audience"));
    }
  }

  // 6 and claims, per candidate in config order; the first that accepts wins.
  const TimePoint now = clock_->Now();
  std::optional<Error> first_error;
  const oidc::TrustPolicy* first_failed = nullptr;
  CiExchange x;
  x.trust = trust;
  x.effective = effective;
  for (const oidc::TrustPolicy* p : candidates) {
    if (p->issuer != token.issuer) {
      continue;
    }
    auto claims = oidc::CheckVerifiedToken(token, *p, now);
    if (claims) {
      if (Status st = oidc::CheckClaims(*p, *claims); !st) {
        claims = std::unexpected(st.error());
      }
    }
    if (!claims) {
      if (!first_error) {
        first_error = claims.error();
        first_failed = p;
      } else {
        exchange_->logger->debug(
            "event=token_exchange_candidate_rejected request_id={} reason={} trust_policy={} "
            "detail=\"{}\"",
            ctx.request_id, claims.error().Reason(), p->name, claims.error().detail);
      }
      continue;
    }
    x.policy = p;
    x.claims = std::move(*claims);
    break;
  }
  if (x.policy == nullptr) {
    if (!first_error) {
      return refuse(nullptr,
                    Unauthenticated("untrusted_issuer",
                                    "the subject_token's issuer is not trusted for this audience"));
    }
    return refuse(first_failed, std::move(*first_error));
  }
  const oidc::TrustPolicy& p = *x.policy;

  // The grant: the policy's, narrowed to the requested scope.
  x.issuer = FindIssuer(p.grant.issuer);
  if (x.issuer == nullptr) {
    return std::unexpected(Internal("trust policy " + p.name + " names an unconfigured issuer"));
  }
  x.issued_token_type = x.issuer->IssuedTokenType();
  if (req.requested_token_type && *req.requested_token_type != x.issued_token_type) {
    return std::unexpected(InvalidArgument(
        "invalid_request", "trust policy " + p.name + " issues " + x.issued_token_type +
                               ", not the requested_token_type"));
  }
  JITBROKER_ASSIGN_OR_RETURN(x.narrowed, oidc::NarrowScope(p.grant, req.scope, *x.issuer));
  x.request.tool = p.grant.tool;
  x.request.operation = p.grant.operation;
  x.request.resource = p.grant.resource;
  x.request.issuer = p.grant.issuer;
  x.request.scope = x.narrowed.scope;
  x.request.ttl_seconds = p.grant.ttl_seconds;
  x.request.justification = "CI OIDC token exchange (trust policy " + p.name + ")";
  auto implied = x.issuer->ImpliedTier(x.request);
  if (!implied) {
    return std::unexpected(InvalidArgument(
        "invalid_scope",
        "the requested scope is not valid for this grant: " + implied.error().message));
  }
  x.implied_tier = *implied;
  auto items = x.issuer->ScopeItems(x.request);
  if (!items) {
    return std::unexpected(InvalidArgument(
        "invalid_scope",
        "the requested scope is not valid for this grant: " + items.error().message));
  }
  x.scope_items = std::move(*items);
  x.run_key = oidc::CiRunKey(p, x.claims);
  x.facts = oidc::CiFacts(p, x.claims);
  x.subject_token_sha256 = crypto::Sha256Hex(req.subject_token.Reveal());
  x.subject_token_type = req.subject_token_type;
  x.requested_scope = req.scope;
  return MintForCi(ctx, x);
}

Result<ExchangeResult> BrokerService::AfterCiDecision(const CallContext& ctx, CiExchange& x,
                                                      const std::string& session_id,
                                                      Result<ExchangeResult> out) {
  if (x.anomaly) {
    JITBROKER_RETURN_IF_ERROR(RevokeForAnomaly(ctx, session_id, *x.anomaly));
  }
  return out;
}

Result<ExchangeResult> BrokerService::MintForCi(const CallContext& ctx, CiExchange& x) {
  const std::string principal = x.policy->PrincipalId();
  for (int generation = 0; generation < kMaxCiSessionGenerations; ++generation) {
    const std::string sid = CiSessionId(principal, x.run_key, generation);
    bool next_generation = false;
    for (int attempt = 0; attempt < 3 && !next_generation; ++attempt) {
      {
        // An existing session: minted into under the shared lock, as RequestGrant does.
        std::shared_lock lock(LockFor(sid));
        JITBROKER_ASSIGN_OR_RETURN(auto found, store_->GetSession(sid));
        if (found) {
          if (found->principal_id != principal || found->agent_id != x.run_key) {
            return std::unexpected(Internal("CI session id collision", "session " + sid));
          }
          if (found->state == SessionState::kExpired) {
            next_generation = true;  // the run outlived it
            continue;
          }
          if (found->state != SessionState::kActive) {
            return std::unexpected(
                FailedPrecondition("ci_session_ended", "the session of this CI run is " +
                                                           std::string(StateName(found->state)) +
                                                           "; it mints no more credentials"));
          }
          if (clock_->Now() >= found->expires_at) {
            lock.unlock();
            std::unique_lock exclusive(LockFor(sid));
            JITBROKER_ASSIGN_OR_RETURN(auto fresh, store_->GetSession(sid));
            if (fresh && fresh->state == SessionState::kActive) {
              // Ends it as expired (revoking its grants); the error is expected.
              (void)EnsureLive(ctx, *fresh);
            }
            next_generation = true;
            continue;
          }
          auto out = EvaluateAndMintForCi(ctx, x, std::move(*found), /*new_session=*/false);
          lock.unlock();
          return AfterCiDecision(ctx, x, sid, std::move(out));
        }
      }
      // None yet: open it under the exclusive lock (re-checked: another job of
      // the run may have just done so).
      std::unique_lock exclusive(LockFor(sid));
      JITBROKER_ASSIGN_OR_RETURN(auto again, store_->GetSession(sid));
      if (again) {
        continue;
      }
      const TimePoint now = clock_->Now();
      SessionRecord s;
      s.id = sid;
      // Nobody holds a token for a CI session: the job authenticates with its
      // OIDC token on every exchange. A random digest no token matches.
      s.token_sha256 = crypto::Sha256Hex(crypto::RandomBytes(32));
      s.principal_id = principal;
      s.agent_id = x.run_key;
      s.task_id = TaskIdFor(*x.policy, x.claims);
      s.task_description = DescriptionFor(*x.policy, x.facts);
      s.scope = ScopeFor(*x.policy).ToJson();
      s.state = SessionState::kActive;
      s.created_at = now;
      s.expires_at = now + Seconds(x.policy->session_ttl_seconds);
      // No heartbeats: the session lives until its TTL, an end or a revocation.
      s.heartbeat_seconds = x.policy->session_ttl_seconds;
      s.heartbeat_deadline = s.expires_at;
      s.ci = x.facts;
      auto out = EvaluateAndMintForCi(ctx, x, std::move(s), /*new_session=*/true);
      exclusive.unlock();
      return AfterCiDecision(ctx, x, sid, std::move(out));
    }
    if (!next_generation) {
      return std::unexpected(
          Unavailable("busy", "the CI run's session is changing; retry shortly"));
    }
  }
  return std::unexpected(FailedPrecondition(
      "ci_session_ended",
      "this CI run has outlived " + std::to_string(kMaxCiSessionGenerations) + " sessions"));
}

Result<ExchangeResult> BrokerService::EvaluateAndMintForCi(const CallContext& ctx, CiExchange& x,
                                                           SessionRecord s, bool new_session) {
  const oidc::TrustPolicy& p = *x.policy;
  const TimePoint now = clock_->Now();
  // The grant pipeline, as for an agent's request, with the CI run's own
  // differences named: no delegating human (the trust policy is the whole
  // of its rights), and no pending approvals (a job cannot wait for one).
  // The anomaly rules see the decision, so a `rate` rule stops a runaway job.
  PipelineOptions opts;
  opts.delegated_rights = false;
  opts.pending_bound = false;
  const std::string grant_id = crypto::NewPublicId("grt_", 16);
  JITBROKER_ASSIGN_OR_RETURN(Decided decided,
                             DecideGrant(grant_id, s, x.request, *x.issuer, *x.effective, opts));
  const Decision& d = decided.decision;

  nlohmann::json exchange = {{"trust_policy", p.name},
                             {"ci", x.facts},
                             {"subject_token_sha256", x.subject_token_sha256},
                             {"subject_token_type", x.subject_token_type},
                             {"granted_scope", x.narrowed.scope_text}};
  if (x.requested_scope) {
    exchange["requested_scope"] = *x.requested_scope;
  }

  if (d.result != DecisionResult::kAllow) {
    // Denied (or an approval tier, which a CI job cannot wait for): audited,
    // no session opened, no grant recorded.
    nlohmann::json details = {
        {"agent",
         {{"id", s.agent_id}, {"session_id", new_session ? "" : s.id}, {"task_id", s.task_id}}},
        {"token_exchange", exchange},
        {"policy_decision", d.ToJson()}};
    WriteBatch batch;
    batch.audit_events.push_back(audit::AdminEvent("token.exchange_denied", s.principal_id, now,
                                                   details, "denied", ctx.request_id));
    if (decided.anomaly && new_session) {
      // An anomaly stops the run, not just this exchange: its session is
      // opened (and at once revoked below), so later exchanges of the run
      // find it ended.
      batch.audit_events.insert(
          batch.audit_events.begin(),
          audit::SessionEvent("session.opened", s, now, "opened", ctx.request_id));
      batch.PutSession(s, std::nullopt);
    }
    JITBROKER_RETURN_IF_ERROR(Commit(ctx, std::move(batch)));
    exchange_->logger->info(
        "event=token_exchange_denied request_id={} trust_policy={} code={} rule={}", ctx.request_id,
        p.name, d.code, d.matched_rule);
    x.anomaly = decided.anomaly;  // revoked by AfterCiDecision, outside the session lock
    if (d.result == DecisionResult::kPending) {
      return std::unexpected(PermissionDenied(
          "approval_required", "the trust policy's grant needs human approval (" + d.reason +
                                   "), which a CI exchange cannot wait for"));
    }
    return std::unexpected(PermissionDenied("exchange_denied", d.reason));
  }

  // Replay protection: the jti is reserved before anything is minted and
  // released again if the exchange fails.
  std::optional<std::string> replay_key;
  std::vector<ReplayReservation> replay;
  if (p.replay_protection) {
    // Keyed on (issuer, jti), not the policy: one token, one exchange, under
    // whichever policy of its issuer. Kept while any of the issuer's
    // policies could still accept it: min(exp, iat + maximum age) + leeway,
    // with the largest age and leeway among them (exp and iat are bounded by
    // the verifier, so this cannot overflow).
    const std::string jti = oidc::ClaimText(x.claims, "jti").value_or("");
    int64_t max_age = p.max_token_age_seconds;
    int64_t leeway = p.leeway_seconds;
    for (const oidc::TrustPolicy& other : x.trust->policies) {
      if (other.issuer == p.issuer) {
        max_age = std::max(max_age, other.max_token_age_seconds);
        leeway = std::max(leeway, other.leeway_seconds);
      }
    }
    JITBROKER_ASSIGN_OR_RETURN(int64_t until, oidc::UsableUntilUnix(x.claims, max_age, leeway));
    const std::string key = oidc::ReplayKey(p.issuer, jti);
    // The memory cache answers concurrent exchanges in this process at once;
    // the store is the authority and survives restarts: one indexed lookup
    // now, and the reservation row commits with the minted credential (a
    // unique key, so of two exchanges of one token only one can commit).
    JITBROKER_RETURN_IF_ERROR(exchange_->replay.Reserve(key, FromUnixSeconds(until), now));
    const std::string stored_key = crypto::Sha256Hex(key);  // bounded, whatever the jti
    auto taken = store_->ReplayReserved(stored_key, now);
    if (!taken || *taken) {
      if (!taken) {
        exchange_->replay.Release(key);
        return std::unexpected(taken.error());
      }
      return std::unexpected(
          Unauthenticated("token_replayed", "subject_token was already exchanged (jti replay)"));
    }
    replay_key = key;
    replay.push_back(
        ReplayReservation{stored_key, std::max(FromUnixSeconds(until), now + Seconds(1)), now});
  }
  auto release = [&] {
    if (replay_key) {
      exchange_->replay.Release(*replay_key);
    }
  };

  if (new_session) {
    WriteBatch batch;
    batch.audit_events.push_back(
        audit::SessionEvent("session.opened", s, now, "opened", ctx.request_id));
    batch.audit_events.back()["ci"] = x.facts;
    // The run's session id is derived, not random: opened once, even by two
    // broker processes (docs/architecture.md, "Conditional state changes").
    batch.PutSession(s, std::nullopt);
    if (Status st = Commit(ctx, std::move(batch)); !st) {
      release();
      return std::unexpected(st.error());
    }
    metrics_->CountSessionOpened();
  }

  GrantRecord g = NewGrantRecord(grant_id, s, x.request, *x.issuer, decided, now);
  g.extra["trust_policy"] =
      p.name;  // the CI facts are on the session and the token.exchanged record

  exchange["grant_id"] = g.id;
  std::vector<nlohmann::json> pre;
  nlohmann::json exchanged =
      audit::SessionEvent("token.exchanged", s, now, "allowed", ctx.request_id);
  exchanged["token_exchange"] = exchange;
  pre.push_back(std::move(exchanged));
  g.state = GrantState::kAllowed;  // as RequestGrant: MintAndCommit moves it on
  pre.push_back(audit::GrantEvent("grant.decided", g, now, "allowed", ctx.request_id));
  auto minted = MintAndCommit(ctx, g, x.request, x.issuer, std::move(pre), std::move(replay));
  if (!minted) {
    release();
    return std::unexpected(minted.error());
  }
  minted->now = clock_->Now();  // expires_in counts from the answer
  ExchangeResult out{.grant = std::move(*minted),
                     .trust_policy = p.name,
                     .issued_token_type = x.issued_token_type,
                     .scope_text = x.narrowed.scope_text};
  exchange_->logger->debug(
      "event=token_exchanged request_id={} trust_policy={} session_id={} grant_id={}",
      ctx.request_id, p.name, s.id, g.id);
  return out;
}

}  // namespace jitbroker::service
