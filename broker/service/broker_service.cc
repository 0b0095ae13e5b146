#include "broker/service/broker_service.h"

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <thread>
#include <functional>
#include <set>

#include "broker/audit/events.h"
#include "broker/common/json_util.h"
#include "broker/common/log.h"
#include "broker/common/time_util.h"
#include "broker/crypto/crypto.h"
#include "broker/service/request_digest.h"
#include "broker/service/validation.h"

namespace jitbroker::service {

namespace {

constexpr int64_t kMaxTtlSeconds = 30 * 24 * 3600;

// States in which a grant holds, or may still yield, a credential.
bool IsLiveGrantState(std::string_view state) {
  return state == "active" || state == "pending" || state == "approved" || state == "minting";
}

Error SessionEnded(const SessionRecord& s) {
  return FailedPrecondition("session_" + s.state,
                            "session " + s.id + " is " + s.state + "; it accepts no further calls");
}

}  // namespace

TimePoint CredentialEnd(const GrantRecord& g, TimePoint fallback) {
  TimePoint end = g.expires_at.value_or(fallback);
  if (auto it = g.extra.find("upstream_expires_at");
      it != g.extra.end() && it->is_number_integer()) {
    end = std::max(end, FromUnixSeconds(it->get<int64_t>()));
  }
  return end;
}

BrokerService::BrokerService(Store* store, audit::Journal* journal, const Clock* clock,
                             Metrics* metrics,
                             std::map<std::string, std::unique_ptr<Issuer>> issuers,
                             std::shared_ptr<const Policy> policy, ServiceOptions options)
    : store_(store),
      journal_(journal),
      clock_(clock),
      metrics_(metrics),
      policy_(std::move(policy)),
      options_(std::move(options)) {
  for (auto& [name, issuer] : issuers) {
    issuers_.emplace(name, std::move(issuer));
  }
  anomaly_ = std::make_unique<lifecycle::AnomalyDetector>(options_.anomaly_rules);
  // The config loader bounds these; options built by hand with values out of
  // bounds get the strictest limiter rather than none (fail closed).
  auto make_limiter = [this](const RateLimit& limit, std::string_view name) {
    KeyedRateLimiter::Options o;
    o.limit = limit;
    o.max_keys = static_cast<size_t>(std::max<int64_t>(1, options_.limits.max_tracked_keys));
    auto made = KeyedRateLimiter::Create(o, clock_);
    if (!made) {
      log::Get("service")->error("event=invalid_rate_limit limit={} error=\"{}\"", name,
                                 made.error().ToString());
      o.limit = RateLimit{.rate_per_second = 0.001, .burst = 1};
      made = KeyedRateLimiter::Create(o, clock_);
    }
    return made ? std::move(*made) : nullptr;
  };
  session_rate_ = make_limiter(options_.limits.grants_per_session, "grants_per_session");
  principal_rate_ = make_limiter(options_.limits.grants_per_principal, "grants_per_principal");
}

std::shared_ptr<const Policy> BrokerService::policy() const {
  std::lock_guard lock(policy_mu_);
  return policy_;
}

void BrokerService::SwapPolicy(std::shared_ptr<const Policy> policy) {
  std::lock_guard lock(policy_mu_);
  policy_ = std::move(policy);
}

BrokerService::SessionLock& BrokerService::LockFor(std::string_view session_id) {
  return session_locks_[std::hash<std::string_view>{}(session_id) % session_locks_.size()];
}

std::mutex& BrokerService::PendingLockFor(std::string_view principal_id) {
  return pending_locks_[std::hash<std::string_view>{}(principal_id) % pending_locks_.size()];
}

Issuer* BrokerService::FindIssuer(std::string_view name) const {
  auto it = issuers_.find(name);
  return it == issuers_.end() ? nullptr : it->second.get();
}

Result<authn::Caller> BrokerService::Authenticate(std::string_view authorization) const {
  JITBROKER_ASSIGN_OR_RETURN(SecretValue bearer, authn::ParseBearer(authorization));
  return authn::Identify(std::move(bearer), policy());
}

// ---------------------------------------------------------------------------
// Access control

Status BrokerService::CheckSessionCaller(const CallContext& ctx, const SessionRecord& s) {
  const authn::Caller& c = ctx.caller;
  if (c.session_id == s.id) {
    if (!authn::VerifySessionToken(c.session_token, s.token_sha256)) {
      return std::unexpected(Unauthenticated("invalid_credentials", "invalid session token"));
    }
    return OkStatus();
  }
  // A token for another session: say so only if it is genuine.
  JITBROKER_ASSIGN_OR_RETURN(auto own, store_->GetSession(c.session_id));
  if (own && authn::VerifySessionToken(c.session_token, own->token_sha256)) {
    return std::unexpected(PermissionDenied(
        "session_mismatch", "this session token belongs to another session"));
  }
  return std::unexpected(Unauthenticated("invalid_credentials", "invalid session token"));
}

Result<SessionRecord> BrokerService::LoadAuthorized(const CallContext& ctx, const std::string& id,
                                                    Access allowed) {
  const authn::Caller& c = ctx.caller;
  JITBROKER_ASSIGN_OR_RETURN(auto found, store_->GetSession(id));
  if (c.IsSession()) {
    if (!allowed.session_token) {
      // Verify the token anyway so that a bad token is a 401, not a 403.
      if (found && c.session_id == found->id) {
        JITBROKER_RETURN_IF_ERROR(CheckSessionCaller(ctx, *found));
      }
      return std::unexpected(PermissionDenied(
          "principal_required", "this call needs a principal's API key, not a session token"));
    }
    if (!found) {
      if (c.session_id == id) {
        return std::unexpected(Unauthenticated("invalid_credentials", "invalid session token"));
      }
      SessionRecord ghost;
      ghost.id = id;
      JITBROKER_RETURN_IF_ERROR(CheckSessionCaller(ctx, ghost));
      return std::unexpected(NotFound("session_not_found", "no session " + id));
    }
    JITBROKER_RETURN_IF_ERROR(CheckSessionCaller(ctx, *found));
    return std::move(*found);
  }
  const bool owner = found && found->principal_id == c.principal_id;
  if (!found || !((allowed.owner && owner) || (allowed.admin && c.is_admin))) {
    if (found && owner) {
      return std::unexpected(
          PermissionDenied("forbidden", "this call needs an admin or the session's agent"));
    }
    // Do not reveal other principals' sessions.
    return std::unexpected(NotFound("session_not_found", "no session " + id));
  }
  return std::move(*found);
}

// ---------------------------------------------------------------------------
// JSON views

nlohmann::json BrokerService::SessionJson(const SessionRecord& s) const {
  nlohmann::json j = {
      {"session_id", s.id},
      {"state", s.state},
      {"principal", s.principal_id},
      {"agent", {{"id", s.agent_id}}},
      {"task", {{"id", s.task_id}, {"description", s.task_description}, {"scope", s.scope}}},
      {"created_at", FormatRfc3339(s.created_at)},
      {"expires_at", FormatRfc3339(s.expires_at)},
      {"heartbeat_seconds", s.heartbeat_seconds},
      {"heartbeat_deadline", FormatRfc3339(s.heartbeat_deadline)},
  };
  if (s.ended_at) {
    j["ended_at"] = FormatRfc3339(*s.ended_at);
  }
  if (!s.end_reason.empty()) {
    j["end_reason"] = s.end_reason;
  }
  if (!s.last_progress.empty()) {
    j["last_progress"] = s.last_progress;
  }
  if (s.extra.contains("ci")) {
    j["ci"] = s.extra["ci"];  // the CI run of an implicit session (token_exchange.cc)
  }
  return j;
}

nlohmann::json BrokerService::GrantJson(const GrantRecord& g, TimePoint now) const {
  std::string state = g.state;
  if (state == "active" && g.expires_at && *g.expires_at <= now) {
    state = "expired";
  }
  nlohmann::json j = {
      {"grant_id", g.id},           {"session_id", g.session_id}, {"state", state},
      {"tool", g.tool},             {"operation", g.operation},   {"resource", g.resource},
      {"issuer", g.issuer},         {"tier", g.tier},             {"decision", g.decision},
      {"created_at", FormatRfc3339(g.created_at)},
      {"ttl_seconds", g.ttl_seconds},
  };
  if (!g.revocability.empty()) {
    j["revocability"] = g.revocability;
  }
  if (g.expires_at) {
    j["expires_at"] = FormatRfc3339(*g.expires_at);
  }
  if (!g.credential_sha256.empty()) {
    j["credential_sha256"] = g.credential_sha256;
    j["credential_type"] = g.credential_type;
  }
  if (g.revoked_at) {
    j["revoked_at"] = FormatRfc3339(*g.revoked_at);
    j["revoke_outcome"] = g.revoke_outcome;
  }
  if (auto it = g.extra.find("delegation"); it != g.extra.end()) {
    j["delegation"] = *it;  // the upstream rights check (non-secret)
  }
  if (!g.approval_id.empty()) {
    j["approval"] = {{"id", g.approval_id}, {"request_digest", g.request_digest}};
    if (g.extra.contains("approval_expires_at")) {
      j["approval"]["expires_at"] = g.extra["approval_expires_at"];
    }
    // The human decision travels back to the agent, comment included.
    if (g.extra.contains("approval")) {
      for (const auto& [k, v] : g.extra["approval"].items()) {
        j["approval"][k] = v;
      }
    }
  }
  return j;
}

// ---------------------------------------------------------------------------
// Sessions

Result<nlohmann::json> BrokerService::OpenSession(const CallContext& ctx,
                                                  const nlohmann::json& body) {
  const authn::Caller& c = ctx.caller;
  if (c.IsSession()) {
    return std::unexpected(PermissionDenied(
        "principal_required", "opening a session needs a principal's API key"));
  }
  JITBROKER_ASSIGN_OR_RETURN(auto r, json::JsonReader::Open(body, ""));
  JITBROKER_ASSIGN_OR_RETURN(nlohmann::json agent, r.Object("agent"));
  JITBROKER_ASSIGN_OR_RETURN(nlohmann::json task, r.Object("task"));
  JITBROKER_ASSIGN_OR_RETURN(auto ttl, r.OptInt("ttl_seconds", 1, kMaxTtlSeconds));
  JITBROKER_ASSIGN_OR_RETURN(auto hb, r.OptInt("heartbeat_seconds", 1, 86400));
  JITBROKER_RETURN_IF_ERROR(r.Finish());

  JITBROKER_ASSIGN_OR_RETURN(auto ar, json::JsonReader::Open(agent, "agent"));
  JITBROKER_ASSIGN_OR_RETURN(std::string agent_id, ar.String("id", 256));
  JITBROKER_RETURN_IF_ERROR(ar.Finish());
  JITBROKER_RETURN_IF_ERROR(CheckIdentifier(agent_id, "agent.id"));

  JITBROKER_ASSIGN_OR_RETURN(auto tr, json::JsonReader::Open(task, "task"));
  JITBROKER_ASSIGN_OR_RETURN(std::string task_id, tr.String("id", 256));
  JITBROKER_ASSIGN_OR_RETURN(auto description, tr.OptString("description", 4096));
  JITBROKER_ASSIGN_OR_RETURN(nlohmann::json scope_json, tr.Object("scope"));
  JITBROKER_RETURN_IF_ERROR(tr.Finish());
  JITBROKER_RETURN_IF_ERROR(CheckIdentifier(task_id, "task.id"));
  JITBROKER_RETURN_IF_ERROR(CheckVisibleText(agent_id, "agent.id"));
  JITBROKER_RETURN_IF_ERROR(CheckVisibleText(task_id, "task.id"));
  if (description) {
    JITBROKER_RETURN_IF_ERROR(CheckVisibleText(*description, "task.description"));
  }
  JITBROKER_RETURN_IF_ERROR(CheckVisibleJson(scope_json, "task.scope"));

  auto scope = TaskScope::FromJson(scope_json);
  if (!scope) {
    Error e = scope.error();
    e.message = "task.scope: " + e.message;
    return std::unexpected(e);
  }
  for (const auto& issuer : scope->issuers) {
    if (FindIssuer(issuer) == nullptr) {
      return std::unexpected(InvalidArgument(
          "unknown_issuer", "task.scope.issuers names \"" + issuer + "\", which is not configured"));
    }
  }
  std::shared_ptr<const Policy> policy = c.policy;
  JITBROKER_RETURN_IF_ERROR(CheckScopeWithinPrincipal(*scope, *c.principal, *policy));

  const TimePoint now = clock_->Now();
  const int64_t ttl_s = std::min(ttl.value_or(sessions_.default_ttl_seconds), sessions_.max_ttl_seconds);
  const int64_t hb_s = hb.value_or(sessions_.heartbeat_seconds);

  authn::NewSessionToken tok = authn::MintSessionToken();
  SessionRecord s;
  s.id = tok.session_id;
  s.token_sha256 = tok.token_sha256;
  s.principal_id = c.principal_id;
  s.agent_id = agent_id;
  s.task_id = task_id;
  // Free text reaches approvers and session views: credentials in it are
  // redacted (broker/audit/redact.h).
  s.task_description = audit::RedactText(description.value_or(""));
  s.scope = scope->ToJson();
  s.state = "active";
  s.created_at = now;
  s.expires_at = now + Seconds(ttl_s);
  s.heartbeat_seconds = hb_s;
  s.heartbeat_deadline = now + Seconds(hb_s * sessions_.stall_after_missed);

  WriteBatch batch;
  batch.audit_events.push_back(audit::SessionEvent("session.opened", s, now, "opened", ctx.request_id));
  batch.sessions.push_back(s);
  JITBROKER_RETURN_IF_ERROR(Commit(ctx, std::move(batch)));
  metrics_->CountSessionOpened();

  nlohmann::json out = SessionJson(s);
  out["session_token"] = std::string(tok.token.Reveal());
  return out;
}

Result<nlohmann::json> BrokerService::ListSessions(const CallContext& ctx, SessionFilter filter) {
  const authn::Caller& c = ctx.caller;
  if (c.IsSession()) {
    return std::unexpected(PermissionDenied(
        "principal_required", "listing sessions needs a principal's API key"));
  }
  if (!c.is_admin) {
    if (!filter.principal_id.empty() && filter.principal_id != c.principal_id) {
      return std::unexpected(PermissionDenied(
          "forbidden", "only admins may list other principals' sessions"));
    }
    filter.principal_id = c.principal_id;
  }
  JITBROKER_ASSIGN_OR_RETURN(auto sessions, store_->ListSessions(filter));
  nlohmann::json list = nlohmann::json::array();
  for (const auto& s : sessions) {
    list.push_back(SessionJson(s));
  }
  return nlohmann::json{{"sessions", list}};
}

Result<nlohmann::json> BrokerService::GetSession(const CallContext& ctx, const std::string& id) {
  JITBROKER_ASSIGN_OR_RETURN(SessionRecord s,
                             LoadAuthorized(ctx, id, Access{.session_token = true, .owner = true, .admin = true}));
  JITBROKER_ASSIGN_OR_RETURN(auto grants, store_->ListGrants(id));
  const TimePoint now = clock_->Now();
  nlohmann::json out = SessionJson(s);
  nlohmann::json glist = nlohmann::json::array();
  std::set<std::string> used_resources, used_tiers, used_issuers;
  for (const auto& g : grants) {
    glist.push_back(GrantJson(g, now));
    if (!g.credential_sha256.empty()) {
      used_resources.insert(g.resource);
      used_tiers.insert(g.tier);
      used_issuers.insert(g.issuer);
    }
  }
  out["grants"] = glist;
  out["scope_usage"] = {{"granted", s.scope},
                        {"used", {{"resources", used_resources},
                                  {"tiers", used_tiers},
                                  {"issuers", used_issuers}}}};
  return out;
}

Result<nlohmann::json> BrokerService::Heartbeat(const CallContext& ctx, const std::string& id,
                                                const nlohmann::json& body) {
  JITBROKER_ASSIGN_OR_RETURN(auto r, json::JsonReader::Open(body, ""));
  JITBROKER_ASSIGN_OR_RETURN(auto progress, r.OptString("progress", 1024));
  JITBROKER_RETURN_IF_ERROR(r.Finish());
  if (progress) {
    JITBROKER_RETURN_IF_ERROR(CheckVisibleText(*progress, "progress"));
  }
  std::unique_lock lock(LockFor(id));
  JITBROKER_ASSIGN_OR_RETURN(SessionRecord s, LoadAuthorized(ctx, id, Access{.session_token = true}));
  JITBROKER_RETURN_IF_ERROR(EnsureLive(ctx, s));
  const TimePoint now = clock_->Now();
  s.heartbeat_deadline = now + Seconds(s.heartbeat_seconds * sessions_.stall_after_missed);
  if (progress) {
    s.last_progress = audit::RedactText(*progress);
  }
  WriteBatch batch;
  batch.sessions.push_back(s);
  JITBROKER_RETURN_IF_ERROR(Commit(ctx, std::move(batch)));
  return SessionJson(s);
}

Status BrokerService::EnsureLive(const CallContext& ctx, SessionRecord& s) {
  if (s.state != "active") {
    return std::unexpected(SessionEnded(s));
  }
  const TimePoint now = clock_->Now();
  std::string state, event, reason;
  if (now >= s.expires_at) {
    state = "expired";
    event = "session.expired";
    reason = "session TTL elapsed";
  } else if (now > s.heartbeat_deadline) {
    state = "stalled";
    event = "session.stalled";
    reason = "missed " + std::to_string(sessions_.stall_after_missed) + " heartbeats";
  } else {
    return OkStatus();
  }
  JITBROKER_ASSIGN_OR_RETURN(auto ended, EndLocked(ctx, s, state, reason, event));
  (void)ended;
  s.state = state;
  return std::unexpected(SessionEnded(s));
}

Result<IssuerFacts> BrokerService::IssuerFactsFor(const Issuer& issuer, const GrantRequest& req) {
  const IssuerDescription& desc = issuer.Describe();
  IssuerFacts facts;
  facts.name = desc.name;
  JITBROKER_ASSIGN_OR_RETURN(facts.implied_tier, issuer.ImpliedTier(req));
  JITBROKER_ASSIGN_OR_RETURN(facts.scope_items, issuer.ScopeItems(req));
  facts.default_ttl_seconds = desc.default_ttl_seconds;
  facts.max_ttl_seconds = desc.max_ttl_seconds;
  return facts;
}

Status BrokerService::Commit(const CallContext& ctx, WriteBatch batch) {
  if (!ctx.client_request_id.empty()) {
    for (nlohmann::json& event : batch.audit_events) {
      event["client_request_id"] = ctx.client_request_id;
    }
  }
  return journal_->Commit(std::move(batch));
}

Result<std::string> BrokerService::SealHandle(const std::string& grant_id,
                                              const SecretValue& handle) const {
  if (handle.empty()) {
    return std::string();
  }
  JITBROKER_ASSIGN_OR_RETURN(std::string sealed, crypto::Seal(options_.seal_key, handle.Reveal(), grant_id));
  return crypto::Base64UrlEncode(sealed);
}

Result<SecretValue> BrokerService::OpenHandle(const GrantRecord& g) const {
  if (g.sealed_handle.empty()) {
    return SecretValue();
  }
  JITBROKER_ASSIGN_OR_RETURN(std::string sealed, crypto::Base64UrlDecode(g.sealed_handle));
  return crypto::Open(options_.seal_key, sealed, g.id);
}

Result<GrantRequest> BrokerService::OpenApprovedRequest(const GrantRecord& g) const {
  auto refuse = [](std::string why) -> Result<GrantRequest> {
    return std::unexpected(FailedPrecondition("request_integrity_failed", std::move(why)));
  };
  if (g.sealed_request.empty()) {
    return refuse("the approved request was not kept with the grant");
  }
  auto sealed = crypto::Base64UrlDecode(g.sealed_request);
  if (!sealed) {
    return refuse("the sealed request is not base64url");
  }
  // AAD = grant id: a sealed request copied from another grant does not open.
  auto opened = crypto::Open(options_.seal_key, *sealed, g.id);
  if (!opened) {
    return refuse("the sealed request does not open with the seal key");
  }
  const std::string_view canonical = opened->Reveal();
  if (!crypto::ConstantTimeEquals(crypto::Sha256Hex(canonical), g.request_digest)) {
    return refuse("the sealed request does not match the approved request_digest");
  }
  nlohmann::json j = nlohmann::json::parse(canonical, nullptr, /*allow_exceptions=*/false);
  auto str = [&j](const char* key) -> const std::string* {
    auto it = j.find(key);
    return it != j.end() && it->is_string() ? &it->get_ref<const std::string&>() : nullptr;
  };
  if (!j.is_object() || str("session_id") == nullptr || str("tool") == nullptr ||
      str("operation") == nullptr || str("resource") == nullptr || str("issuer") == nullptr ||
      !j.contains("parameters") || !j["parameters"].is_object() || !j.contains("scope") ||
      !j["scope"].is_object() || !j.contains("ttl_seconds") ||
      !(j["ttl_seconds"].is_null() || j["ttl_seconds"].is_number_integer())) {
    return refuse("the sealed request is not a canonical grant request");
  }
  GrantRequest req;
  req.tool = *str("tool");
  req.operation = *str("operation");
  req.resource = *str("resource");
  req.issuer = *str("issuer");
  req.parameters = j["parameters"];
  req.scope = j["scope"];
  if (j["ttl_seconds"].is_number_integer()) {
    req.ttl_seconds = j["ttl_seconds"].get<int64_t>();
  }
  if (auto it = g.extra.find("justification"); it != g.extra.end() && it->is_string()) {
    req.justification = it->get<std::string>();
  }
  // What the approver was shown must be what is minted, and the canonical
  // form must survive the round trip.
  if (*str("session_id") != g.session_id || req.tool != g.tool || req.operation != g.operation ||
      req.resource != g.resource || req.issuer != g.issuer || req.scope != g.scope ||
      req.ttl_seconds != g.requested_ttl_seconds ||
      RequestDigest(g.session_id, req) != g.request_digest) {
    return refuse("the sealed request does not match the grant record");
  }
  return req;
}

nlohmann::json BrokerService::RevokeGrants(std::vector<GrantRecord>& grants, TimePoint now,
                                           const std::string& request_id, WriteBatch& batch) {
  struct Job {
    GrantRecord* grant;
    Issuer* issuer;
    SecretValue handle;
    std::optional<Result<RevokeOutcome>> result;
  };
  std::vector<Job> jobs;
  std::vector<nlohmann::json> outcomes(grants.size());
  std::vector<std::optional<size_t>> job_of(grants.size());
  for (size_t i = 0; i < grants.size(); ++i) {
    GrantRecord& g = grants[i];
    outcomes[i] = {{"grant_id", g.id}};
    if (g.state != "active") {
      // Nothing was released: pending, approved or caught mid-mint.
      g.sealed_request.clear();
      g.state = "revoked";
      g.revoked_at = now;
      g.revoke_outcome = "revoked";
      continue;
    }
    if (g.expires_at && CredentialEnd(g, now) <= now) {
      g.state = "expired";
      g.sealed_handle.clear();
      continue;
    }
    Issuer* issuer = FindIssuer(g.issuer);
    auto handle = OpenHandle(g);
    if (issuer == nullptr || !handle) {
      // Cannot reach the issuer (removed from config) or the handle does not
      // open (seal key changed): the credential lives until it expires.
      log::Get("lifecycle")->error(
          "event=revoke_impossible grant_id={} issuer={} why=\"{}\"", g.id, g.issuer,
          issuer == nullptr ? "issuer not configured" : handle.error().ToString());
      g.state = "revoked";
      g.revoked_at = now;
      g.revoke_outcome = "expiry_only";
      g.sealed_handle.clear();  // useless now; keep no copy of the credential
      continue;
    }
    job_of[i] = jobs.size();
    jobs.push_back(Job{&g, issuer, std::move(*handle), std::nullopt});
  }

  // Fan out: upstream revocations are slow (tens of ms each), so run them
  // concurrently on a bounded set of threads.
  const size_t workers = std::min<size_t>(jobs.size(), std::max(1, options_.revoke_concurrency));
  std::atomic<size_t> next{0};
  auto work = [&] {
    for (size_t k = next++; k < jobs.size(); k = next++) {
      Job& j = jobs[k];
      RevokeRequest rr{j.grant->id, std::move(j.handle), CredentialEnd(*j.grant, now), now};
      j.result = j.issuer->Revoke(rr);
    }
  };
  if (workers <= 1) {
    work();
  } else {
    std::vector<std::thread> threads;
    threads.reserve(workers - 1);
    for (size_t w = 1; w < workers; ++w) {
      threads.emplace_back(work);
    }
    work();
    for (auto& t : threads) {
      t.join();
    }
  }

  for (size_t i = 0; i < grants.size(); ++i) {
    GrantRecord& g = grants[i];
    nlohmann::json& out = outcomes[i];
    const int64_t residual =
        g.expires_at
            ? std::max<int64_t>(0, ToUnixSeconds(CredentialEnd(g, now)) - ToUnixSeconds(now))
            : 0;
    std::string event = "credential.revoked";
    if (job_of[i]) {
      const Result<RevokeOutcome>& r = *jobs[*job_of[i]].result;
      if (r) {
        g.state = "revoked";
        g.revoked_at = now;
        g.revoke_outcome = std::string(RevokeOutcomeName(r->kind));
        g.sealed_handle.clear();
        out["outcome"] = g.revoke_outcome;
        out["residual_seconds"] = r->kind == RevokeOutcomeKind::kRevoked ? 0 : residual;
      } else {
        // Upstream failed: queue a durable retry until success or expiry.
        log::Get("lifecycle")->warn("event=revoke_failed grant_id={} issuer={} error=\"{}\"",
                                    g.id, g.issuer, r.error().ToString());
        g.state = "revoking";
        g.revoke_outcome = "queued";
        RevocationTask t;
        t.grant_id = g.id;
        t.issuer = g.issuer;
        t.sealed_handle = g.sealed_handle;
        t.expires_at = CredentialEnd(g, now);
        t.attempts = 1;
        t.next_attempt_at = now + std::chrono::seconds(1);
        t.last_error = std::string(r.error().Reason());
        batch.revocations.push_back(std::move(t));
        out["outcome"] = "queued";
        out["residual_seconds"] = residual;
        event = "credential.revoke_failed";
      }
    } else if (g.state == "expired") {
      out["outcome"] = "expired";
      out["residual_seconds"] = 0;
      event = "credential.expired";
    } else {
      out["outcome"] = g.revoke_outcome;
      out["residual_seconds"] = g.revoke_outcome == "expiry_only" ? residual : 0;
    }
    metrics_->CountRevocation(out["outcome"].get<std::string>());
    batch.audit_events.push_back(
        audit::GrantEvent(event, g, now, out["outcome"].get<std::string>(), request_id));
    batch.grants.push_back(g);
  }
  NotifyGrantChanged();
  return nlohmann::json(outcomes);
}

Result<nlohmann::json> BrokerService::EndLocked(const CallContext& ctx, SessionRecord s,
                                                std::string state, std::string reason,
                                                std::string event) {
  const TimePoint now = clock_->Now();
  JITBROKER_ASSIGN_OR_RETURN(auto all, store_->ListGrants(s.id));
  std::vector<GrantRecord> live;
  for (auto& g : all) {
    if (IsLiveGrantState(g.state)) {
      live.push_back(std::move(g));
    }
  }
  WriteBatch batch;
  nlohmann::json revocations = RevokeGrants(live, now, ctx.request_id, batch);
  s.state = state;
  s.ended_at = now;
  s.end_reason = reason;
  batch.audit_events.push_back(audit::SessionEvent(event, s, now, state, ctx.request_id));
  batch.sessions.push_back(s);
  JITBROKER_RETURN_IF_ERROR(Commit(ctx, std::move(batch)));
  anomaly_->Forget(s.id);
  NotifyGrantChanged();
  log::Get("lifecycle")->info("event={} session_id={} request_id={} revoked={}", event, s.id,
                              ctx.request_id, revocations.size());
  return nlohmann::json{{"session_id", s.id}, {"state", state}, {"revocations", revocations}};
}

Result<nlohmann::json> BrokerService::EndSession(const CallContext& ctx, const std::string& id,
                                                 const nlohmann::json& body, bool revoke) {
  JITBROKER_ASSIGN_OR_RETURN(auto r, json::JsonReader::Open(body, ""));
  JITBROKER_ASSIGN_OR_RETURN(auto reason, r.OptString("reason", 1024));
  JITBROKER_RETURN_IF_ERROR(r.Finish());
  if (revoke && (!reason || reason->empty())) {
    return std::unexpected(InvalidArgument("missing_field", "reason is required to revoke a session"));
  }
  std::unique_lock lock(LockFor(id));
  Access access = revoke ? Access{.owner = true, .admin = true}
                         : Access{.session_token = true, .owner = true};
  JITBROKER_ASSIGN_OR_RETURN(SessionRecord s, LoadAuthorized(ctx, id, access));
  if (s.state != "active") {
    return std::unexpected(SessionEnded(s));
  }
  if (revoke) {
    return EndLocked(ctx, s, "revoked",
                     "revoked by " + ctx.caller.principal_id + ": " + audit::RedactText(*reason),
                     "session.revoked");
  }
  return EndLocked(ctx, s, "completed", audit::RedactText(reason.value_or("completed")),
                   "session.completed");
}

// ---------------------------------------------------------------------------
// Grants

Status BrokerService::CheckGrantRate(const SessionRecord& s) {
  struct Limit {
    KeyedRateLimiter* limiter;
    const std::string& key;
    const char* name;
    const char* whose;
  };
  for (const Limit& l : {Limit{session_rate_.get(), s.id, "grants_per_session", "this session"},
                         Limit{principal_rate_.get(), s.principal_id, "grants_per_principal",
                               "the sessions of this principal"}}) {
    if (l.limiter == nullptr) {
      return std::unexpected(Internal("no rate limiter", l.name));  // fail closed
    }
    const KeyedRateLimiter::Outcome out = l.limiter->Acquire(l.key);
    if (out.allowed) {
      continue;
    }
    metrics_->CountRateLimited(l.name);
    if (out.untracked) {
      log::Get("service")->warn("event=rate_limiter_full limit={} tracked={}", l.name,
                                l.limiter->TrackedKeys());
    }
    Error e =
        ResourceExhausted("rate_limited", std::string("too many grant requests for ") + l.whose +
                                              " (limits." + l.name + "); retry after " +
                                              std::to_string(out.retry_after.count()) + " s");
    e.retry_after = out.retry_after;
    return std::unexpected(std::move(e));
  }
  return OkStatus();
}

Result<std::optional<BrokerService::PendingRefusal>> BrokerService::PendingBoundRefusal(
    const SessionRecord& s, TimePoint now) {
  JITBROKER_ASSIGN_OR_RETURN(PendingApprovalCounts counts,
                             store_->CountPendingApprovals(s.id, s.principal_id, now));
  const char* rule = nullptr;
  std::string what;
  std::optional<TimePoint> frees_at;
  if (counts.session >= options_.max_pending_per_session) {
    rule = "max_pending_per_session";
    what =
        "session " + s.id + " already has " + std::to_string(counts.session) + " pending approvals";
    frees_at = counts.session_next_expiry;
  } else if (counts.principal >= options_.max_pending_per_principal) {
    rule = "max_pending_per_principal";
    what = "the sessions of principal " + s.principal_id + " already have " +
           std::to_string(counts.principal) + " pending approvals";
    frees_at = counts.principal_next_expiry;
  } else {
    return std::optional<PendingRefusal>();
  }
  metrics_->CountRateLimited(rule);
  PendingRefusal r;
  r.matched_rule = std::string("approvals.") + rule;
  r.error =
      ResourceExhausted("too_many_pending_approvals",
                        what + " (" + r.matched_rule + "); wait until one is decided or expires");
  // The soonest an approval can free a place: when the oldest one lapses.
  const int64_t wait = frees_at ? ToUnixSeconds(*frees_at) - ToUnixSeconds(now) + 1 : 1;
  r.error.retry_after = Seconds(std::max<int64_t>(1, wait));
  return std::optional<PendingRefusal>(std::move(r));
}

Result<GrantResponse> BrokerService::RequestGrant(const CallContext& ctx,
                                                  const std::string& session_id,
                                                  const nlohmann::json& body) {
  if (!ctx.caller.IsSession()) {
    return std::unexpected(PermissionDenied(
        "session_token_required", "grants are requested with the session's own token"));
  }
  // Parse the whole request before touching state.
  GrantRequest req;
  {
    JITBROKER_ASSIGN_OR_RETURN(auto r, json::JsonReader::Open(body, ""));
    JITBROKER_ASSIGN_OR_RETURN(req.tool, r.String("tool", 256));
    JITBROKER_ASSIGN_OR_RETURN(req.operation, r.String("operation", 128));
    JITBROKER_ASSIGN_OR_RETURN(req.resource, r.String("resource", 1024));
    JITBROKER_ASSIGN_OR_RETURN(req.issuer, r.String("issuer", 128));
    JITBROKER_ASSIGN_OR_RETURN(auto params, r.OptObject("parameters"));
    JITBROKER_ASSIGN_OR_RETURN(auto scope, r.OptObject("scope"));
    JITBROKER_ASSIGN_OR_RETURN(req.ttl_seconds, r.OptInt("ttl_seconds", 1, kMaxTtlSeconds));
    JITBROKER_ASSIGN_OR_RETURN(auto justification, r.OptString("justification", 4096));
    JITBROKER_RETURN_IF_ERROR(r.Finish());
    req.parameters = params.value_or(nlohmann::json::object());
    req.scope = scope.value_or(nlohmann::json::object());
    req.justification = justification.value_or("");
    JITBROKER_RETURN_IF_ERROR(CheckIdentifier(req.tool, "tool"));
    JITBROKER_RETURN_IF_ERROR(CheckIdentifier(req.operation, "operation"));
    JITBROKER_RETURN_IF_ERROR(CheckIdentifier(req.resource, "resource", 1024));
    JITBROKER_RETURN_IF_ERROR(CheckVisibleText(req.tool, "tool"));
    JITBROKER_RETURN_IF_ERROR(CheckVisibleText(req.operation, "operation"));
    JITBROKER_RETURN_IF_ERROR(CheckVisibleText(req.resource, "resource"));
    JITBROKER_RETURN_IF_ERROR(CheckVisibleJson(req.parameters, "parameters"));
    JITBROKER_RETURN_IF_ERROR(CheckVisibleJson(req.scope, "scope"));
    JITBROKER_RETURN_IF_ERROR(CheckVisibleText(req.justification, "justification"));
  }
  Issuer* issuer = FindIssuer(req.issuer);
  if (issuer == nullptr) {
    return std::unexpected(
        InvalidArgument("unknown_issuer", "issuer \"" + req.issuer + "\" is not configured"));
  }

  std::shared_lock lock(LockFor(session_id));
  JITBROKER_ASSIGN_OR_RETURN(SessionRecord s,
                             LoadAuthorized(ctx, session_id, Access{.session_token = true}));
  if (s.state != "active") {
    return std::unexpected(SessionEnded(s));
  }
  // Rate limits come after the session token is verified (LoadAuthorized):
  // a forged token must not drain a real session's bucket.
  JITBROKER_RETURN_IF_ERROR(CheckGrantRate(s));
  if (const TimePoint t = clock_->Now(); t >= s.expires_at || t > s.heartbeat_deadline) {
    // Ending the session needs the exclusive lock; EnsureLive re-checks.
    lock.unlock();
    std::unique_lock exclusive(LockFor(session_id));
    JITBROKER_ASSIGN_OR_RETURN(auto fresh, store_->GetSession(session_id));
    if (fresh) {
      s = std::move(*fresh);
    }
    JITBROKER_RETURN_IF_ERROR(EnsureLive(ctx, s));
    // A heartbeat arrived meanwhile: carry on under the shared lock.
    exclusive.unlock();
    lock.lock();
    JITBROKER_ASSIGN_OR_RETURN(auto again, store_->GetSession(session_id));
    if (!again || again->state != "active") {
      return std::unexpected(SessionEnded(again ? *again : s));
    }
    s = std::move(*again);
  }
  JITBROKER_ASSIGN_OR_RETURN(IssuerFacts ifacts, IssuerFactsFor(*issuer, req));

  std::shared_ptr<const Policy> policy = ctx.caller.policy;
  const IssuerDescription& desc = issuer->Describe();
  auto scope = TaskScope::FromJson(s.scope);
  if (!scope) {
    return std::unexpected(Internal("stored session scope is unreadable", scope.error().ToString()));
  }
  SessionFacts facts{s.id, s.principal_id, s.agent_id, s.task_id, *scope, s.expires_at};
  const TimePoint now = clock_->Now();
  Decision d = Evaluate(req, facts, ifacts, *policy, now);

  // The delegating human's own rights upstream (e.g. GitHub collaborator
  // permission): a grant that exceeds them is denied like any policy denial.
  // A check that cannot be made is an error, never a silent allow.
  std::optional<DelegationCheck> delegation;
  if (d.result != DecisionResult::kDeny) {
    if (const Principal* p = policy->FindPrincipal(s.principal_id); p != nullptr) {
      JITBROKER_ASSIGN_OR_RETURN(DelegationCheck check, issuer->CheckDelegatedRights(req, *p));
      if (!check.allowed) {
        d.result = DecisionResult::kDeny;
        d.code = "delegated_rights_exceeded";
        d.reason = check.reason;
        d.matched_rule = check.matched_rule.empty() ? "issuers." + desc.name + ".delegated_rights"
                                                    : check.matched_rule;
      }
      delegation = std::move(check);
    }
  }

  // Bounded pending approvals (issue #10): past the bound the request is a
  // denial (recorded, audited, seen by the anomaly rules) answered with 429.
  // The principal's pending lock is held until the pending grant is committed.
  std::unique_lock<std::mutex> pending_lock;
  std::optional<PendingRefusal> pending_refusal;
  if (d.result == DecisionResult::kPending) {
    pending_lock = std::unique_lock(PendingLockFor(s.principal_id));
    JITBROKER_ASSIGN_OR_RETURN(pending_refusal, PendingBoundRefusal(s, now));
    if (pending_refusal) {
      pending_lock.unlock();
      d.result = DecisionResult::kDeny;
      d.code = "too_many_pending_approvals";
      d.reason = pending_refusal->error.message;
      d.matched_rule = pending_refusal->matched_rule;
    }
  }

  GrantRecord g;
  g.id = crypto::NewPublicId("grt_", 16);
  g.session_id = s.id;
  g.principal_id = s.principal_id;
  g.agent_id = s.agent_id;
  g.task_id = s.task_id;
  g.tool = req.tool;
  g.operation = req.operation;
  g.resource = req.resource;
  g.issuer = req.issuer;
  g.parameters = audit::RedactParameters(req.parameters);
  g.scope = req.scope;  // issuer-specific scope (permissions, audiences): never secret, needed to mint
  g.requested_ttl_seconds = req.ttl_seconds;
  g.ttl_seconds = d.ttl_seconds;
  g.tier = std::string(TierName(d.tier));
  g.decision = d.ToJson();
  g.revocability = std::string(RevocabilityName(desc.revocability));
  g.created_at = now;
  if (!req.justification.empty()) {
    g.extra["justification"] = audit::RedactText(req.justification);  // shown to approvers
  }
  if (delegation && !delegation->audit.empty()) {
    g.extra["delegation"] = delegation->audit;
  }

  // Anomaly rules see every decision; a trigger overrides it with a denial
  // (no credential is minted) and revokes the session.
  std::optional<lifecycle::AnomalyTrigger> trigger = ObserveDecision(g, d, now);
  if (trigger) {
    d.result = DecisionResult::kDeny;
    d.code = "anomaly_detected";
    d.reason = "anomaly rule " + trigger->rule + " triggered; the session is revoked";
    d.matched_rule = trigger->rule;
    g.decision = d.ToJson();
  }
  metrics_->CountGrant(g.tier, std::string(DecisionResultName(d.result)));

  GrantResponse resp;
  if (d.result == DecisionResult::kDeny) {
    g.state = "denied";
    WriteBatch batch;
    batch.audit_events.push_back(audit::GrantEvent("grant.decided", g, now, "denied", ctx.request_id));
    batch.grants.push_back(g);
    JITBROKER_RETURN_IF_ERROR(Commit(ctx, std::move(batch)));
    if (trigger) {
      lock.unlock();
      JITBROKER_RETURN_IF_ERROR(RevokeForAnomaly(ctx, s.id, *trigger));
    } else if (pending_refusal) {
      Error e = std::move(pending_refusal->error);
      e.message += " (recorded as denied grant " + g.id + ")";
      return std::unexpected(std::move(e));
    }
    resp.status = 403;
    resp.body = GrantJson(g, now);
    return resp;
  }
  if (d.result == DecisionResult::kPending) {
    const TierPolicy& tp = policy->ForTier(d.tier);
    const int64_t approval_ttl =
        tp.approval_ttl_seconds > 0 ? tp.approval_ttl_seconds : options_.default_approval_ttl_seconds;
    g.state = "pending";
    // The exact request is kept sealed (AAD: the grant id) until collection,
    // where it is minted from; g.parameters is only the redacted copy.
    const std::string canonical = CanonicalRequestJson(s.id, req);
    g.request_digest = crypto::Sha256Hex(canonical);
    JITBROKER_ASSIGN_OR_RETURN(std::string sealed_request,
                               crypto::Seal(options_.seal_key, canonical, g.id));
    g.sealed_request = crypto::Base64UrlEncode(sealed_request);
    g.approval_id = "apr_" + g.id.substr(4);
    g.expires_at = now + Seconds(approval_ttl);
    g.extra["approval_expires_at"] = FormatRfc3339(*g.expires_at);
    g.extra["four_eyes"] = tp.four_eyes;
    g.extra["approvers"] = tp.approvers;
    WriteBatch batch;
    batch.audit_events.push_back(
        audit::GrantEvent("grant.decided", g, now, "pending_approval", ctx.request_id));
    batch.grants.push_back(g);
    JITBROKER_RETURN_IF_ERROR(Commit(ctx, std::move(batch)));
    pending_lock.unlock();
    if (options_.notifier != nullptr) {
      options_.notifier->Enqueue(lifecycle::PendingApprovalMessage(g, s));
    }
    resp.status = 202;
    resp.body = GrantJson(g, now);
    return resp;
  }

  // The decision's record shows the grant as allowed; MintAndCommit moves it
  // on (minting, active or failed).
  g.state = "allowed";
  std::vector<nlohmann::json> pre;
  pre.push_back(audit::GrantEvent("grant.decided", g, now, "allowed", ctx.request_id));
  JITBROKER_ASSIGN_OR_RETURN(resp.body, MintAndCommit(ctx, g, req, issuer, std::move(pre)));
  resp.status = 201;
  return resp;
}

Result<nlohmann::json> BrokerService::MintAndCommit(const CallContext& ctx, GrantRecord& g,
                                                    const GrantRequest& req, Issuer* issuer,
                                                    std::vector<nlohmann::json> pre_events,
                                                    std::vector<ReplayReservation> replay) {
  const IssuerDescription& desc = issuer->Describe();
  const TimePoint now = clock_->Now();
  if (desc.mints_upstream) {
    // Write-ahead: the intent is durable before the upstream can create a
    // credential, so a crash in between is reconciled at restart.
    g.state = "minting";
    WriteBatch intent;
    intent.audit_events = std::move(pre_events);
    pre_events.clear();
    intent.grants.push_back(g);
    JITBROKER_RETURN_IF_ERROR(Commit(ctx, std::move(intent)));
  }
  std::string github_login;
  {
    std::shared_ptr<const Policy> pol = policy();
    if (const Principal* p = pol->FindPrincipal(g.principal_id); p != nullptr) {
      github_login = p->github_login;
    }
  }
  MintRequest mr{g.id, g.session_id, g.task_id, g.principal_id, g.agent_id, req,
                 ParseTier(g.tier).value_or(Tier::kRead), g.ttl_seconds, now,
                 std::move(github_login)};
  auto minted = issuer->Mint(mr);
  if (!minted) {
    g.state = "failed";
    g.extra["mint_error"] = std::string(minted.error().Reason());
    WriteBatch batch;
    batch.audit_events = std::move(pre_events);
    batch.audit_events.push_back(
        audit::GrantEvent("credential.mint_failed", g, now, "failed", ctx.request_id));
    batch.grants.push_back(g);
    JITBROKER_RETURN_IF_ERROR(Commit(ctx, std::move(batch)));
    log::Get("issuer." + desc.type)
        ->warn("event=mint_failed request_id={} grant_id={} issuer={} error=\"{}\"",
               ctx.request_id, g.id, g.issuer, minted.error().ToString());
    return std::unexpected(minted.error());
  }
  g.state = "active";
  g.expires_at = minted->expires_at;
  g.credential_type = minted->type;
  g.credential_sha256 = minted->fingerprint_sha256;
  if (!minted->audit_fields.empty()) {
    g.extra["credential_audit"] = minted->audit_fields;
  }
  if (minted->upstream_expires_at && *minted->upstream_expires_at > minted->expires_at) {
    // Revoked upstream at the grant's expiry (Sweep); see CredentialEnd.
    g.extra["upstream_expires_at"] = ToUnixSeconds(*minted->upstream_expires_at);
  }
  // A credential that exists upstream but cannot be recorded is never
  // handed out; revoke it now rather than leave it live and unseen (a
  // "minting" grant is also reconciled at restart).
  auto abandon = [&](Error error) -> Result<nlohmann::json> {
    RevokeRequest rr{g.id, minted->revocation_handle.Clone(),
                     minted->upstream_expires_at.value_or(minted->expires_at), clock_->Now()};
    Result<RevokeOutcome> revoked = issuer->Revoke(rr);
    log::Get("issuer." + desc.type)
        ->error("event=minted_credential_abandoned request_id={} grant_id={} issuer={} "
                "revoked={} error=\"{}\"",
                ctx.request_id, g.id, g.issuer, revoked.has_value(), error.ToString());
    return std::unexpected(std::move(error));
  };
  auto sealed = SealHandle(g.id, minted->revocation_handle);
  if (!sealed) {
    return abandon(Internal("cannot seal the revocation handle", sealed.error().ToString()));
  }
  g.sealed_handle = *sealed;
  WriteBatch batch;
  batch.audit_events = std::move(pre_events);
  batch.audit_events.push_back(audit::GrantEvent("credential.minted", g, now, "minted", ctx.request_id));
  batch.grants.push_back(g);
  batch.replay_reservations = std::move(replay);
  // Fail closed: the credential leaves only once these records are durable.
  if (Status committed = Commit(ctx, std::move(batch)); !committed) {
    return abandon(std::move(committed).error());
  }

  nlohmann::json body = GrantJson(g, now);
  nlohmann::json cred = minted->fields;
  cred["type"] = minted->type;
  cred["expires_at"] = FormatRfc3339(minted->expires_at);
  for (auto& [name, value] : minted->secrets) {
    cred[name] = std::string(value.Reveal());
  }
  body["credential"] = std::move(cred);
  return body;
}

std::optional<lifecycle::AnomalyTrigger> BrokerService::ObserveDecision(const GrantRecord& g,
                                                                        const Decision& d,
                                                                        TimePoint now) {
  if (anomaly_->rules().empty()) {
    return std::nullopt;
  }
  lifecycle::DecisionObservation obs{now, d.tier, d.result, d.code, g.id};
  return anomaly_->Observe(g.session_id, obs);
}

Status BrokerService::RevokeForAnomaly(const CallContext& ctx, const std::string& session_id,
                                       const lifecycle::AnomalyTrigger& trigger) {
  std::unique_lock exclusive(LockFor(session_id));
  JITBROKER_ASSIGN_OR_RETURN(auto s, store_->GetSession(session_id));
  if (!s || s->state != "active") {
    return OkStatus();
  }
  // The trigger and its evidence are one audit record, then the session ends.
  nlohmann::json ev = audit::SessionEvent("anomaly.detected", *s, clock_->Now(), "revoke_session",
                                          ctx.request_id);
  ev["anomaly"] = {{"rule", trigger.rule}, {"kind", trigger.kind}, {"evidence", trigger.evidence}};
  WriteBatch batch;
  batch.audit_events.push_back(std::move(ev));
  JITBROKER_RETURN_IF_ERROR(Commit(ctx, std::move(batch)));
  log::Get("lifecycle")->warn("event=anomaly_detected session_id={} rule={} request_id={}",
                              session_id, trigger.rule, ctx.request_id);
  auto ended = EndLocked(ctx, *s, "revoked", "anomaly: " + trigger.rule, "session.revoked");
  if (!ended) {
    return std::unexpected(ended.error());
  }
  return OkStatus();
}

void BrokerService::NotifyGrantChanged() {
  {
    std::lock_guard lock(wait_mu_);
    ++wait_generation_;
  }
  wait_cv_.notify_all();
}

Result<GrantRecord> BrokerService::LoadAuthorizedGrant(const CallContext& ctx,
                                                       const std::string& id) {
  JITBROKER_ASSIGN_OR_RETURN(auto g, store_->GetGrant(id));
  if (!g) {
    return std::unexpected(NotFound("grant_not_found", "no grant " + id));
  }
  auto s = LoadAuthorized(ctx, g->session_id,
                          Access{.session_token = true, .owner = true, .admin = true});
  if (!s) {
    if (s.error().code == ErrorCode::kNotFound) {
      return std::unexpected(NotFound("grant_not_found", "no grant " + id));
    }
    return std::unexpected(s.error());
  }
  return std::move(*g);
}

Result<nlohmann::json> BrokerService::GetGrant(const CallContext& ctx, const std::string& id,
                                               int wait_seconds) {
  JITBROKER_ASSIGN_OR_RETURN(GrantRecord loaded, LoadAuthorizedGrant(ctx, id));
  std::optional<GrantRecord> g(std::move(loaded));
  // Long-poll while the grant waits for a human; woken by any grant change.
  if (wait_seconds > 0 && g->state == "pending") {
    const auto deadline = std::chrono::steady_clock::now() +
                          std::chrono::seconds(std::min(wait_seconds, options_.max_long_poll_seconds));
    std::unique_lock lk(wait_mu_);
    uint64_t seen = wait_generation_;
    while (g->state == "pending" && (!g->expires_at || *g->expires_at > clock_->Now())) {
      if (!wait_cv_.wait_until(lk, deadline, [&] { return wait_generation_ != seen; })) {
        break;
      }
      seen = wait_generation_;
      lk.unlock();
      JITBROKER_ASSIGN_OR_RETURN(auto fresh, store_->GetGrant(id));
      lk.lock();
      if (fresh) {
        g = std::move(fresh);
      }
    }
  }
  if (g->state == "pending" && g->expires_at && *g->expires_at <= clock_->Now()) {
    // Expiry means deny; do not wait for the sweeper to say so.
    JITBROKER_RETURN_IF_ERROR(ExpireApproval(g->id, ctx.request_id));
    JITBROKER_ASSIGN_OR_RETURN(auto fresh, store_->GetGrant(id));
    if (fresh) {
      g = std::move(fresh);
    }
  }
  // An approved grant is minted when its agent collects it: the TTL starts
  // now, and the credential is returned exactly once.
  if (g->state == "approved" && ctx.caller.IsSession()) {
    std::unique_lock exclusive(LockFor(g->session_id));
    JITBROKER_ASSIGN_OR_RETURN(auto fresh, store_->GetGrant(id));
    JITBROKER_ASSIGN_OR_RETURN(auto session, store_->GetSession(g->session_id));
    if (fresh && session && fresh->state == "approved") {
      SessionRecord sr = *session;
      JITBROKER_RETURN_IF_ERROR(EnsureLive(ctx, sr));
      Issuer* issuer = FindIssuer(fresh->issuer);
      if (issuer == nullptr) {
        return std::unexpected(FailedPrecondition(
            "unknown_issuer", "issuer \"" + fresh->issuer + "\" is no longer configured"));
      }
      return CollectApproved(ctx, std::move(*fresh), sr, issuer);
    }
    if (fresh) {
      g = std::move(fresh);
    }
  }
  return GrantJson(*g, clock_->Now());
}

Result<nlohmann::json> BrokerService::CollectApproved(const CallContext& ctx, GrantRecord rec,
                                                      const SessionRecord& s, Issuer* issuer) {
  // 1. The exact request the approver approved, never the redacted copy.
  Result<GrantRequest> opened = OpenApprovedRequest(rec);
  if (!opened) {
    log::Get("service")->error(
        "event=approved_request_refused request_id={} grant_id={} why=\"{}\"", ctx.request_id,
        rec.id, opened.error().message);
    return DenyAtCollection(ctx, rec, "request_integrity_failed",
                            "at collection: " + opened.error().message, "grant.request_digest",
                            nlohmann::json::object());
  }
  const GrantRequest& req = *opened;

  // 2. The current policy and session, through the same pure evaluation as
  // the request: a reload, a narrowed scope or role, or an ended session
  // since the approval all count.
  std::shared_ptr<const Policy> pol = policy();
  JITBROKER_ASSIGN_OR_RETURN(IssuerFacts ifacts, IssuerFactsFor(*issuer, req));
  auto scope = TaskScope::FromJson(s.scope);
  if (!scope) {
    return std::unexpected(
        Internal("stored session scope is unreadable", scope.error().ToString()));
  }
  SessionFacts facts{s.id, s.principal_id, s.agent_id, s.task_id, *scope, s.expires_at};
  const Decision d = Evaluate(req, facts, ifacts, *pol, clock_->Now());
  rec.decision["collection_policy_version"] = pol->version;
  if (d.result == DecisionResult::kDeny) {
    return DenyAtCollection(ctx, rec, d.code, "at collection: " + d.reason, d.matched_rule,
                            nlohmann::json::object());
  }
  if (d.result == DecisionResult::kPending) {
    // Still an approval tier: the approval given must be one the current
    // policy would ask for (same tier, same approvers, break-glass allowed).
    const TierPolicy& tp = pol->ForTier(d.tier);
    const auto approvers = rec.extra.find("approvers");
    const bool same_approvers = approvers != rec.extra.end() && approvers->is_array() &&
                                *approvers == nlohmann::json(tp.approvers);
    const auto approval = rec.extra.find("approval");
    const bool break_glass = approval != rec.extra.end() && approval->is_object() &&
                             approval->value("break_glass", false);
    if (std::string(TierName(d.tier)) != rec.tier || !same_approvers ||
        (break_glass && !tp.break_glass_self_approval)) {
      return DenyAtCollection(
          ctx, rec, "approval_stale",
          "at collection: the current policy (version " + pol->version + ") asks for approval " +
              "of tier " + std::string(TierName(d.tier)) + " by " +
              nlohmann::json(tp.approvers).dump() + "; the approval given was for tier " +
              rec.tier + (break_glass ? " by break-glass self-approval" : ""),
          "tiers." + std::string(TierName(d.tier)), nlohmann::json::object());
    }
  }
  rec.ttl_seconds = std::min(rec.ttl_seconds, d.ttl_seconds);
  if (rec.ttl_seconds < 1) {
    return std::unexpected(
        FailedPrecondition("session_expiring", "the session ends before a credential could live"));
  }
  rec.expires_at.reset();

  // 3. The human's own rights may have changed while the grant waited for
  // its approval: check them again before anything is minted.
  const Principal* principal = pol->FindPrincipal(rec.principal_id);
  std::optional<DelegationCheck> check;
  if (principal != nullptr) {
    JITBROKER_ASSIGN_OR_RETURN(check, issuer->CheckDelegatedRights(req, *principal));
  }
  if (principal == nullptr || !check->allowed) {
    return DenyAtCollection(
        ctx, rec, "delegated_rights_exceeded",
        principal == nullptr ? "the delegating principal is no longer in the policy"
                             : check->reason,
        check && !check->matched_rule.empty() ? check->matched_rule
                                              : "issuers." + rec.issuer + ".delegated_rights",
        check ? check->audit : nlohmann::json::object());
  }
  if (!check->audit.empty()) {
    rec.extra["delegation"] = check->audit;
  }
  // 4. Mint from the exact request. The sealed copy is not needed past here.
  rec.sealed_request.clear();
  return MintAndCommit(ctx, rec, req, issuer, {});
}

Result<nlohmann::json> BrokerService::DenyAtCollection(const CallContext& ctx, GrantRecord& g,
                                                       const std::string& code,
                                                       const std::string& reason,
                                                       const std::string& matched_rule,
                                                       const nlohmann::json& delegation) {
  const TimePoint now = clock_->Now();
  nlohmann::json decision = g.decision.is_object() ? g.decision : nlohmann::json::object();
  decision["result"] = "deny";
  decision["code"] = code;
  decision["reason"] = reason;
  decision["matched_rule"] = matched_rule;
  decision["stage"] = "collection";
  if (auto it = decision.find("collection_policy_version"); it != decision.end()) {
    decision["policy_version"] = *it;  // the policy that refused it
  }
  g.decision = std::move(decision);
  g.state = "denied";
  g.sealed_handle.clear();
  g.sealed_request.clear();
  if (!delegation.empty()) {
    g.extra["delegation"] = delegation;
  }
  WriteBatch batch;
  batch.audit_events.push_back(audit::GrantEvent("grant.decided", g, now, "denied", ctx.request_id));
  batch.grants.push_back(g);
  JITBROKER_RETURN_IF_ERROR(Commit(ctx, std::move(batch)));
  NotifyGrantChanged();
  return GrantJson(g, now);
}

Result<nlohmann::json> BrokerService::RevokeGrant(const CallContext& ctx, const std::string& id) {
  JITBROKER_ASSIGN_OR_RETURN(GrantRecord found, LoadAuthorizedGrant(ctx, id));
  std::unique_lock lock(LockFor(found.session_id));
  JITBROKER_ASSIGN_OR_RETURN(auto g, store_->GetGrant(id));
  if (!g || !IsLiveGrantState(g->state)) {
    return std::unexpected(FailedPrecondition(
        "grant_not_live", "grant " + id + " is " + (g ? g->state : std::string("gone")) +
                              "; there is nothing to revoke"));
  }
  const TimePoint now = clock_->Now();
  WriteBatch batch;
  std::vector<GrantRecord> one{*g};
  nlohmann::json outcomes = RevokeGrants(one, now, ctx.request_id, batch);
  JITBROKER_RETURN_IF_ERROR(Commit(ctx, std::move(batch)));
  nlohmann::json outcome = outcomes[0];
  outcome["state"] = one[0].state;
  return outcome;
}

// ---------------------------------------------------------------------------
// Introspection, audit, keys

Result<nlohmann::json> BrokerService::Introspect(const CallContext& ctx, std::string_view token) {
  const authn::Caller& c = ctx.caller;
  if (c.IsSession() || !(c.is_admin || c.is_resource_server)) {
    return std::unexpected(PermissionDenied(
        "forbidden", "introspection needs an admin or a principal with the resource_server role"));
  }
  const nlohmann::json inactive = {{"active", false}};
  if (token.empty() || token.size() > 16384) {
    return inactive;
  }
  for (const auto& [name, issuer] : issuers_) {
    auto claims = issuer->VerifyOwnToken(token);
    if (!claims) {
      continue;
    }
    const std::string jti = claims->value("jti", "");
    JITBROKER_ASSIGN_OR_RETURN(auto g, store_->GetGrant(jti));
    const TimePoint now = clock_->Now();
    const int64_t exp = claims->contains("exp") && (*claims)["exp"].is_number_integer()
                            ? (*claims)["exp"].get<int64_t>()
                            : 0;
    if (!g || g->state != "active" || g->issuer != name || exp <= ToUnixSeconds(now)) {
      return inactive;
    }
    JITBROKER_ASSIGN_OR_RETURN(auto s, store_->GetSession(g->session_id));
    if (!s || s->state != "active" || s->expires_at <= now) {
      return inactive;
    }
    nlohmann::json out = *claims;
    out["active"] = true;
    out["client_id"] = g->agent_id;
    out["token_type"] = "Bearer";
    out["username"] = g->principal_id;
    return out;
  }
  return inactive;
}

Result<nlohmann::json> BrokerService::ListAudit(const CallContext& ctx, AuditFilter filter) {
  if (ctx.caller.IsSession() || !ctx.caller.is_admin) {
    return std::unexpected(PermissionDenied("forbidden", "reading the audit trail needs an admin"));
  }
  JITBROKER_ASSIGN_OR_RETURN(auto records, store_->ListAudit(filter));
  nlohmann::json list = nlohmann::json::array();
  for (auto& r : records) {
    list.push_back(std::move(r.body));
  }
  return nlohmann::json{{"records", list}};
}

Result<nlohmann::json> BrokerService::VerifyAudit(const CallContext& ctx) {
  if (ctx.caller.IsSession() || !ctx.caller.is_admin) {
    return std::unexpected(PermissionDenied("forbidden", "verifying the audit trail needs an admin"));
  }
  AuditFilter f;
  f.limit = 5000;
  int64_t count = 0;
  std::string prev_hash;
  int64_t prev_seq = 0;
  for (;;) {
    JITBROKER_ASSIGN_OR_RETURN(auto page, store_->ListAudit(f));
    for (const auto& r : page) {
      std::string problem;
      if (r.seq != prev_seq + 1) {
        problem = "seq gap";
      } else if (r.prev_hash != prev_hash) {
        problem = "prev_hash mismatch";
      } else if (ComputeRecordHash(r.body) != r.hash || r.body.value("hash", "") != r.hash) {
        problem = "hash mismatch";
      }
      if (!problem.empty()) {
        return nlohmann::json{{"ok", false}, {"records", count}, {"first_bad_seq", r.seq},
                              {"problem", problem}};
      }
      prev_hash = r.hash;
      prev_seq = r.seq;
      ++count;
    }
    if (page.size() < f.limit) {
      break;
    }
    f.after_seq = prev_seq;
  }
  return nlohmann::json{{"ok", true}, {"records", count}, {"head", prev_hash}, {"head_seq", prev_seq}};
}

Result<nlohmann::json> BrokerService::AuditKeys(const CallContext& ctx) const {
  if (ctx.caller.IsSession() || !ctx.caller.is_admin) {
    return std::unexpected(PermissionDenied("forbidden", "reading the audit keys needs an admin"));
  }
  return options_.audit_jwks;
}

nlohmann::json BrokerService::Jwks() const {
  nlohmann::json keys = nlohmann::json::array();
  for (const auto& [name, issuer] : issuers_) {
    for (auto& k : issuer->PublicJwks()) {
      keys.push_back(std::move(k));
    }
  }
  return nlohmann::json{{"keys", keys}};
}

void BrokerService::AppendIssuerMetrics(std::string& out) const {
  std::vector<IssuerMetricFamily> families;
  for (const auto& [name, issuer] : issuers_) {
    issuer->CollectMetrics(families);
  }
  // Several issuers may export the same family: one HELP/TYPE block each.
  std::vector<size_t> order;
  std::map<std::string, std::vector<size_t>, std::less<>> by_name;
  for (size_t i = 0; i < families.size(); ++i) {
    auto [it, inserted] = by_name.try_emplace(families[i].name);
    if (inserted) {
      order.push_back(i);
    }
    it->second.push_back(i);
  }
  for (size_t first : order) {
    const IssuerMetricFamily& f = families[first];
    out += "# HELP " + f.name + " " + f.help + "\n";
    out += "# TYPE " + f.name + " " + f.type + "\n";
    for (size_t i : by_name[f.name]) {
      for (const auto& [labels, value] : families[i].samples) {
        out += f.name;
        if (!labels.empty()) {
          out += "{" + labels + "}";
        }
        char buf[64];
        std::snprintf(buf, sizeof(buf), " %.17g\n", value);
        out += buf;
      }
    }
  }
}

Status BrokerService::Ready() { return store_->Ping(); }

}  // namespace jitbroker::service
