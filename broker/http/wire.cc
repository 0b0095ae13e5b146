#include "broker/http/wire.h"

#include <algorithm>
#include <set>
#include <utility>

#include "broker/common/json_util.h"
#include "broker/common/time_util.h"
#include "broker/http/validation.h"

namespace jitbroker::http::wire {

using service::kMaxTtlSeconds;

// ---------------------------------------------------------------------------
// Request bodies

Result<service::OpenSessionInput> ParseOpenSession(const nlohmann::json& body) {
  JITBROKER_ASSIGN_OR_RETURN(auto r, json::JsonReader::Open(body, ""));
  JITBROKER_ASSIGN_OR_RETURN(nlohmann::json agent, r.Object("agent"));
  JITBROKER_ASSIGN_OR_RETURN(nlohmann::json task, r.Object("task"));
  service::OpenSessionInput in;
  JITBROKER_ASSIGN_OR_RETURN(in.ttl_seconds, r.OptInt("ttl_seconds", 1, kMaxTtlSeconds));
  JITBROKER_ASSIGN_OR_RETURN(in.heartbeat_seconds, r.OptInt("heartbeat_seconds", 1, 86400));
  if (auto it = body.find("budget"); it != body.end() && !it->is_object()) {
    return std::unexpected(InvalidArgument("invalid_budget", "budget must be an object"));
  }
  JITBROKER_ASSIGN_OR_RETURN(std::optional<nlohmann::json> budget, r.OptObject("budget"));
  JITBROKER_RETURN_IF_ERROR(r.Finish());
  if (budget) {
    JITBROKER_ASSIGN_OR_RETURN(in.budget, SessionBudget::FromJson(*budget));
  }

  JITBROKER_ASSIGN_OR_RETURN(auto ar, json::JsonReader::Open(agent, "agent"));
  JITBROKER_ASSIGN_OR_RETURN(in.agent_id, ar.String("id", 256));
  JITBROKER_RETURN_IF_ERROR(ar.Finish());
  JITBROKER_RETURN_IF_ERROR(CheckIdentifier(in.agent_id, "agent.id"));

  JITBROKER_ASSIGN_OR_RETURN(auto tr, json::JsonReader::Open(task, "task"));
  JITBROKER_ASSIGN_OR_RETURN(in.task_id, tr.String("id", 256));
  JITBROKER_ASSIGN_OR_RETURN(in.description, tr.OptString("description", 4096));
  JITBROKER_ASSIGN_OR_RETURN(nlohmann::json scope_json, tr.Object("scope"));
  JITBROKER_RETURN_IF_ERROR(tr.Finish());
  JITBROKER_RETURN_IF_ERROR(CheckIdentifier(in.task_id, "task.id"));
  JITBROKER_RETURN_IF_ERROR(CheckVisibleText(in.agent_id, "agent.id"));
  JITBROKER_RETURN_IF_ERROR(CheckVisibleText(in.task_id, "task.id"));
  if (in.description) {
    JITBROKER_RETURN_IF_ERROR(CheckVisibleText(*in.description, "task.description"));
  }
  JITBROKER_RETURN_IF_ERROR(CheckVisibleJson(scope_json, "task.scope"));
  auto scope = TaskScope::FromJson(scope_json);
  if (!scope) {
    Error e = scope.error();
    e.message = "task.scope: " + e.message;
    return std::unexpected(std::move(e));
  }
  in.scope = std::move(*scope);
  return in;
}

Result<service::HeartbeatInput> ParseHeartbeat(const nlohmann::json& body) {
  JITBROKER_ASSIGN_OR_RETURN(auto r, json::JsonReader::Open(body, ""));
  service::HeartbeatInput in;
  JITBROKER_ASSIGN_OR_RETURN(in.progress, r.OptString("progress", 1024));
  JITBROKER_RETURN_IF_ERROR(r.Finish());
  if (in.progress) {
    JITBROKER_RETURN_IF_ERROR(CheckVisibleText(*in.progress, "progress"));
  }
  return in;
}

Result<service::EndSessionInput> ParseEndSession(const nlohmann::json& body) {
  JITBROKER_ASSIGN_OR_RETURN(auto r, json::JsonReader::Open(body, ""));
  service::EndSessionInput in;
  JITBROKER_ASSIGN_OR_RETURN(in.reason, r.OptString("reason", 1024));
  JITBROKER_RETURN_IF_ERROR(r.Finish());
  return in;
}

Result<GrantRequest> ParseGrantRequest(const nlohmann::json& body) {
  GrantRequest req;
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
  return req;
}

Result<service::ApprovalDecisionInput> ParseApprovalDecision(const nlohmann::json& body) {
  JITBROKER_ASSIGN_OR_RETURN(auto r, json::JsonReader::Open(body, ""));
  JITBROKER_ASSIGN_OR_RETURN(std::string decision, r.String("decision", 16));
  service::ApprovalDecisionInput in;
  JITBROKER_ASSIGN_OR_RETURN(in.request_digest, r.String("request_digest", 128));
  JITBROKER_ASSIGN_OR_RETURN(in.comment, r.OptString("comment", 2048));
  JITBROKER_RETURN_IF_ERROR(r.Finish());
  if (in.comment) {
    // The comment reaches the agent, the audit trail and other approvers:
    // it must read as what it says (the service redacts credentials in it).
    JITBROKER_RETURN_IF_ERROR(CheckVisibleText(*in.comment, "comment"));
  }
  if (decision != "approve" && decision != "deny") {
    return std::unexpected(
        InvalidArgument("invalid_value", "decision must be \"approve\" or \"deny\""));
  }
  in.approve = decision == "approve";
  return in;
}

Result<service::BulkRevokeInput> ParseBulkRevoke(const nlohmann::json& body) {
  JITBROKER_ASSIGN_OR_RETURN(auto r, json::JsonReader::Open(body, ""));
  JITBROKER_ASSIGN_OR_RETURN(auto principal, r.OptString("principal", 256));
  JITBROKER_ASSIGN_OR_RETURN(auto agent, r.OptString("agent", 256));
  JITBROKER_ASSIGN_OR_RETURN(auto issuer, r.OptString("issuer", 128));
  service::BulkRevokeInput in;
  JITBROKER_ASSIGN_OR_RETURN(in.reason, r.String("reason", 1024));
  JITBROKER_ASSIGN_OR_RETURN(auto all_flag, r.OptBool("all"));
  const bool all = all_flag.value_or(false);
  JITBROKER_RETURN_IF_ERROR(r.Finish());
  const int selectors = (principal ? 1 : 0) + (agent ? 1 : 0) + (issuer ? 1 : 0) + (all ? 1 : 0);
  if (selectors != 1) {
    return std::unexpected(InvalidArgument(
        "invalid_selector", "give exactly one of principal, agent, issuer or all: true"));
  }
  using Kind = service::BulkSelector::Kind;
  in.selector = principal ? service::BulkSelector{Kind::kPrincipal, std::move(*principal)}
                : agent   ? service::BulkSelector{Kind::kAgent, std::move(*agent)}
                : issuer  ? service::BulkSelector{Kind::kIssuer, std::move(*issuer)}
                          : service::BulkSelector{Kind::kAll, {}};
  return in;
}

// ---------------------------------------------------------------------------
// Sessions

nlohmann::json SessionJson(const SessionRecord& s) {
  nlohmann::json j = {
      {"session_id", s.id},
      {"state", StateName(s.state)},
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
  if (!s.ci.empty()) {
    j["ci"] = s.ci;  // the CI run of an implicit session (token exchange)
  }
  if (!s.budget.empty()) {
    j["budget"] = {{"limits", s.budget}};  // the use: in the session's detail
  }
  return j;
}

nlohmann::json OpenedSessionJson(const service::OpenedSession& o) {
  nlohmann::json out = SessionJson(o.session);
  out["session_token"] = std::string(o.token.Reveal());
  // What was granted: a ttl_seconds above sessions.max_ttl_seconds is lowered
  // to it, and the answer says so rather than clamping silently.
  out["ttl_seconds"] = o.ttl_seconds;
  if (o.requested_ttl_seconds) {
    out["requested_ttl_seconds"] = *o.requested_ttl_seconds;
  }
  return out;
}

nlohmann::json SessionListJson(const std::vector<SessionRecord>& sessions) {
  nlohmann::json list = nlohmann::json::array();
  for (const auto& s : sessions) {
    list.push_back(SessionJson(s));
  }
  return nlohmann::json{{"sessions", std::move(list)}};
}

nlohmann::json SessionDetailJson(const service::SessionDetail& d) {
  nlohmann::json out = SessionJson(d.session);
  nlohmann::json glist = nlohmann::json::array();
  std::set<std::string> used_resources, used_tiers, used_issuers;
  for (const auto& g : d.grants) {
    glist.push_back(GrantJson(service::GrantView{g, d.now, std::nullopt}));
    if (!g.credential_sha256.empty()) {
      used_resources.insert(g.resource);
      used_tiers.insert(g.tier);
      used_issuers.insert(g.issuer);
    }
  }
  out["grants"] = std::move(glist);
  out["budget"] = {{"limits", d.session.budget}, {"used", d.budget_used.ToJson()}};
  out["scope_usage"] = {
      {"granted", d.session.scope},
      {"used", {{"resources", used_resources}, {"tiers", used_tiers}, {"issuers", used_issuers}}}};
  return out;
}

nlohmann::json RevocationJson(const std::vector<service::RevocationOutcome>& outcomes) {
  nlohmann::json out = nlohmann::json::array();
  for (const service::RevocationOutcome& o : outcomes) {
    out.push_back({{"grant_id", o.grant_id},
                   {"outcome", o.outcome},
                   {"residual_seconds", o.residual_seconds}});
  }
  return out;
}

nlohmann::json SessionEndJson(const service::SessionEnd& e) {
  return nlohmann::json{{"session_id", e.session_id},
                        {"state", StateName(e.state)},
                        {"revocations", RevocationJson(e.revocations)}};
}

// ---------------------------------------------------------------------------
// Grants

namespace {

// The credential object (docs/api.md, "Credentials"): the issuer's fields,
// its type and expiry, and its secrets revealed.
nlohmann::json CredentialJson(const service::IssuedCredential& c) {
  nlohmann::json cred = c.fields;
  cred["type"] = c.type;
  cred["expires_at"] = FormatRfc3339(c.expires_at);
  for (const auto& [name, value] : c.secrets) {
    cred[name] = std::string(value.Reveal());
  }
  return cred;
}

}  // namespace

nlohmann::json GrantJson(const service::GrantView& v) {
  const GrantRecord& g = v.grant;
  GrantState state = g.state;
  if (state == GrantState::kActive && g.expires_at && *g.expires_at <= v.now) {
    state = GrantState::kExpired;  // the sweeper has not recorded it yet
  }
  nlohmann::json j = {
      {"grant_id", g.id},
      {"session_id", g.session_id},
      {"state", StateName(state)},
      {"tool", g.tool},
      {"operation", g.operation},
      {"resource", g.resource},
      {"issuer", g.issuer},
      {"tier", g.tier},
      {"decision", g.decision},
      {"created_at", FormatRfc3339(g.created_at)},
      {"ttl_seconds", g.ttl_seconds},
  };
  if (!g.revocability.empty()) {
    j["revocability"] = g.revocability;
  }
  if (g.parameters.is_object() && !g.parameters.empty()) {
    j["parameters"] = g.parameters;  // the redacted copy, as audited
  }
  if (auto held = g.extra.find("held_by"); held != g.extra.end()) {
    j["held_by"] = *held;  // "proxy": the credential is the broker's (docs/proxy.md)
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
  if (!g.delegation.empty()) {
    j["delegation"] = g.delegation;  // the upstream rights check (non-secret)
  }
  if (!g.approval_id.empty()) {
    j["approval"] = {{"id", g.approval_id}, {"request_digest", g.request_digest}};
    if (g.approval_expires_at) {
      j["approval"]["expires_at"] = FormatRfc3339(*g.approval_expires_at);
    }
    // The human decision travels back to the agent, comment included.
    if (g.approval) {
      const nlohmann::json decided = ApprovalDecisionJson(*g.approval);  // outlives the loop
      for (const auto& [k, val] : decided.items()) {
        j["approval"][k] = val;
      }
    }
  }
  if (v.credential) {
    j["credential"] = CredentialJson(*v.credential);
  }
  return j;
}

nlohmann::json GrantRevocationJson(const service::GrantRevocation& r) {
  nlohmann::json out = RevocationJson({r.outcome})[0];
  out["state"] = StateName(r.state);
  return out;
}

// ---------------------------------------------------------------------------
// Approvals

nlohmann::json ApprovalJson(const service::ApprovalView& v) {
  const GrantRecord& g = v.grant;
  nlohmann::json j = {
      {"approval_id", g.approval_id},
      {"grant_id", g.id},
      {"state", service::ApprovalState(g)},
      {"request_digest", g.request_digest},
      {"tier", g.tier},
      {"human_principal", g.principal_id},
      {"agent", {{"id", g.agent_id}, {"session_id", g.session_id}, {"task_id", g.task_id}}},
      {"request",
       {{"tool", g.tool},
        {"operation", g.operation},
        {"resource", g.resource},
        {"issuer", g.issuer},
        {"parameters", g.parameters},
        {"scope", g.scope},
        {"ttl_seconds", g.requested_ttl_seconds ? nlohmann::json(*g.requested_ttl_seconds)
                                                : nlohmann::json(nullptr)}}},
      {"decision", g.decision},
      {"created_at", FormatRfc3339(g.created_at)},
  };
  if (!g.justification.empty()) {
    j["request"]["justification"] = g.justification;
  }
  if (g.approval_expires_at) {
    j["expires_at"] = FormatRfc3339(*g.approval_expires_at);
  }
  if (v.rules) {
    j["four_eyes"] = v.rules->four_eyes;
    j["self_approval"] = v.rules->break_glass_self_approval ? "break_glass" : "deny";
    j["approvers"] = v.rules->approvers;
  }
  if (v.session) {
    const SessionRecord& s = *v.session;
    j["task"] = {{"id", s.task_id}, {"description", s.task_description}, {"scope", s.scope}};
    j["session_state"] = StateName(s.state);
  }
  if (g.approval) {
    j["decided"] = ApprovalDecisionJson(*g.approval);
  }
  return j;
}

nlohmann::json ApprovalPageJson(const service::ApprovalPage& p) {
  nlohmann::json list = nlohmann::json::array();
  for (const auto& a : p.approvals) {
    list.push_back(ApprovalJson(a));
  }
  return nlohmann::json{
      {"approvals", std::move(list)},
      {"next_cursor", p.next_cursor ? nlohmann::json(*p.next_cursor) : nlohmann::json(nullptr)}};
}

// ---------------------------------------------------------------------------
// Admin, introspection, audit, exchange

namespace {

nlohmann::json SelectorJson(const service::BulkSelector& s) {
  using Kind = service::BulkSelector::Kind;
  switch (s.kind) {
    case Kind::kPrincipal:
      return {{"principal", s.value}};
    case Kind::kAgent:
      return {{"agent", s.value}};
    case Kind::kIssuer:
      return {{"issuer", s.value}};
    case Kind::kAll:
      break;
  }
  return {{"all", true}};
}

}  // namespace

nlohmann::json BulkRevocationJson(const service::BulkRevocation& b) {
  return nlohmann::json{{"selector", SelectorJson(b.selector)},
                        {"reason", b.reason},
                        {"sessions_revoked", b.sessions_revoked},
                        {"revocations", RevocationJson(b.revocations)},
                        {"revocations_total", b.revocations_total},
                        {"revocations_truncated", b.revocations_total > b.revocations.size()}};
}

nlohmann::json IntrospectionJson(const service::Introspection& i) {
  if (!i.active) {
    return {{"active", false}};  // RFC 7662 §2.2: nothing else about the token
  }
  nlohmann::json out = i.claims;
  out["active"] = true;
  out["client_id"] = i.client_id;
  out["token_type"] = "Bearer";
  out["username"] = i.username;
  return out;
}

nlohmann::json AuditRecordsJson(const std::vector<AuditRecord>& records) {
  nlohmann::json list = nlohmann::json::array();
  for (const auto& r : records) {
    list.push_back(r.body);
  }
  return nlohmann::json{{"records", std::move(list)}};
}

namespace {

nlohmann::json ChainCheckJson(const service::ChainCheck& c) {
  if (!c.ok) {
    return nlohmann::json{{"chain", c.chain},
                          {"ok", false},
                          {"records", c.records},
                          {"first_bad_seq", c.first_bad_seq.value_or(0)},
                          {"problem", c.problem}};
  }
  return nlohmann::json{{"chain", c.chain},
                        {"ok", true},
                        {"records", c.records},
                        {"head", c.head},
                        {"head_seq", c.head_seq}};
}

}  // namespace

// The top-level fields describe the first broken chain, or when all hold the
// answering replica's own; `chains` lists every chain.
nlohmann::json AuditVerificationJson(const service::AuditVerification& v) {
  const service::ChainCheck* shown = nullptr;
  for (const service::ChainCheck& c : v.chains) {
    if (!c.ok && shown == nullptr) {
      shown = &c;
    }
  }
  for (const service::ChainCheck& c : v.chains) {
    if (shown == nullptr && c.chain == v.own) {
      shown = &c;
    }
  }
  nlohmann::json out = shown != nullptr ? ChainCheckJson(*shown) : nlohmann::json::object();
  out["ok"] = v.ok;
  nlohmann::json chains = nlohmann::json::array();
  for (const service::ChainCheck& c : v.chains) {
    chains.push_back(ChainCheckJson(c));
  }
  out["chains"] = std::move(chains);
  out["cross_references"] = v.cross_references;
  return out;
}

nlohmann::json ExchangeJson(const service::ExchangeResult& x) {
  const GrantRecord& g = x.grant.grant;
  nlohmann::json credential =
      x.grant.credential ? CredentialJson(*x.grant.credential) : nlohmann::json::object();
  // access_token is the bearer token where the credential is one (`token`,
  // or an OAuth `access_token`); otherwise
  // (e.g. cloud credentials) the typed `credential` object carries it, and
  // access_token holds its session token where there is one (RFC 8693
  // §2.2.1: token_type N_A).
  std::string access_token;
  std::string token_type = "N_A";
  if (auto it = credential.find("token"); it != credential.end() && it->is_string()) {
    access_token = it->get<std::string>();
    token_type = "Bearer";
  } else if (auto at = credential.find("access_token"); at != credential.end() && at->is_string()) {
    access_token = at->get<std::string>();  // an OAuth access token (gcp)
    token_type = "Bearer";
  } else if (auto st = credential.find("session_token");
             st != credential.end() && st->is_string()) {
    access_token = st->get<std::string>();
  }
  int64_t expires_in = 0;
  if (g.expires_at) {
    expires_in = std::max<int64_t>(0, ToUnixSeconds(*g.expires_at) - ToUnixSeconds(x.grant.now));
  }
  nlohmann::json out = {
      {"access_token", std::move(access_token)},
      {"issued_token_type", x.issued_token_type},
      {"token_type", token_type},
      {"expires_in", expires_in},
      {"credential", std::move(credential)},
      {"grant_id", g.id},
      {"session_id", g.session_id},
      {"trust_policy", x.trust_policy},
      {"decision", g.decision},
      {"revocability", g.revocability},
  };
  if (!x.scope_text.empty()) {
    out["scope"] = x.scope_text;
  }
  if (g.expires_at) {
    out["expires_at"] = FormatRfc3339(*g.expires_at);
  }
  return out;
}

// ---------------------------------------------------------------------------
// JsonApi

namespace {

// The caller-kind rule of a call, before its body is read.
Status Check(const service::CallContext& ctx, service::BrokerService::BodyCall call) {
  return service::BrokerService::CheckCaller(ctx, call);
}

}  // namespace

Result<nlohmann::json> JsonApi::OpenSession(const service::CallContext& ctx,
                                            const nlohmann::json& body) {
  JITBROKER_RETURN_IF_ERROR(Check(ctx, service::BrokerService::BodyCall::kOpenSession));
  JITBROKER_ASSIGN_OR_RETURN(auto in, ParseOpenSession(body));
  JITBROKER_ASSIGN_OR_RETURN(auto out, service_->OpenSession(ctx, std::move(in)));
  return OpenedSessionJson(out);
}

Result<nlohmann::json> JsonApi::ListSessions(const service::CallContext& ctx,
                                             SessionFilter filter) {
  JITBROKER_ASSIGN_OR_RETURN(auto out, service_->ListSessions(ctx, std::move(filter)));
  return SessionListJson(out);
}

Result<nlohmann::json> JsonApi::GetSession(const service::CallContext& ctx, const std::string& id) {
  JITBROKER_ASSIGN_OR_RETURN(auto out, service_->GetSession(ctx, id));
  return SessionDetailJson(out);
}

Result<nlohmann::json> JsonApi::Heartbeat(const service::CallContext& ctx, const std::string& id,
                                          const nlohmann::json& body) {
  JITBROKER_ASSIGN_OR_RETURN(auto in, ParseHeartbeat(body));
  JITBROKER_ASSIGN_OR_RETURN(auto out, service_->Heartbeat(ctx, id, std::move(in)));
  return SessionJson(out);
}

Result<nlohmann::json> JsonApi::EndSession(const service::CallContext& ctx, const std::string& id,
                                           const nlohmann::json& body, bool revoke) {
  JITBROKER_ASSIGN_OR_RETURN(auto in, ParseEndSession(body));
  JITBROKER_ASSIGN_OR_RETURN(auto out, service_->EndSession(ctx, id, std::move(in), revoke));
  return SessionEndJson(out);
}

Result<JsonApi::GrantAnswer> JsonApi::RequestGrant(const service::CallContext& ctx,
                                                   const std::string& session_id,
                                                   const nlohmann::json& body) {
  JITBROKER_RETURN_IF_ERROR(Check(ctx, service::BrokerService::BodyCall::kRequestGrant));
  JITBROKER_ASSIGN_OR_RETURN(auto req, ParseGrantRequest(body));
  JITBROKER_ASSIGN_OR_RETURN(auto out, service_->RequestGrant(ctx, session_id, std::move(req)));
  return GrantAnswer{out.outcome, GrantJson(out.grant)};
}

Result<nlohmann::json> JsonApi::GetGrant(const service::CallContext& ctx, const std::string& id,
                                         int wait_seconds) {
  JITBROKER_ASSIGN_OR_RETURN(auto out, service_->GetGrant(ctx, id, wait_seconds));
  return GrantJson(out);
}

Result<nlohmann::json> JsonApi::RevokeGrant(const service::CallContext& ctx,
                                            const std::string& id) {
  JITBROKER_ASSIGN_OR_RETURN(auto out, service_->RevokeGrant(ctx, id));
  return GrantRevocationJson(out);
}

Result<nlohmann::json> JsonApi::ListApprovals(const service::CallContext& ctx,
                                              const service::ApprovalListFilter& filter) {
  JITBROKER_ASSIGN_OR_RETURN(auto out, service_->ListApprovals(ctx, filter));
  return ApprovalPageJson(out);
}

Result<nlohmann::json> JsonApi::GetApproval(const service::CallContext& ctx,
                                            const std::string& id) {
  JITBROKER_ASSIGN_OR_RETURN(auto out, service_->GetApproval(ctx, id));
  return ApprovalJson(out);
}

Result<nlohmann::json> JsonApi::DecideApproval(const service::CallContext& ctx,
                                               const std::string& id, const nlohmann::json& body) {
  JITBROKER_RETURN_IF_ERROR(Check(ctx, service::BrokerService::BodyCall::kDecideApproval));
  JITBROKER_ASSIGN_OR_RETURN(auto in, ParseApprovalDecision(body));
  JITBROKER_ASSIGN_OR_RETURN(auto out, service_->DecideApproval(ctx, id, std::move(in)));
  return ApprovalJson(out);
}

Result<nlohmann::json> JsonApi::BulkRevoke(const service::CallContext& ctx,
                                           const nlohmann::json& body) {
  JITBROKER_RETURN_IF_ERROR(Check(ctx, service::BrokerService::BodyCall::kBulkRevoke));
  JITBROKER_ASSIGN_OR_RETURN(auto in, ParseBulkRevoke(body));
  JITBROKER_ASSIGN_OR_RETURN(auto out, service_->BulkRevoke(ctx, std::move(in)));
  return BulkRevocationJson(out);
}

Result<nlohmann::json> JsonApi::Introspect(const service::CallContext& ctx,
                                           std::string_view token) {
  JITBROKER_ASSIGN_OR_RETURN(auto out, service_->Introspect(ctx, token));
  return IntrospectionJson(out);
}

Result<nlohmann::json> JsonApi::ListAudit(const service::CallContext& ctx, AuditFilter filter) {
  JITBROKER_ASSIGN_OR_RETURN(auto out, service_->ListAudit(ctx, std::move(filter)));
  return AuditRecordsJson(out);
}

Result<nlohmann::json> JsonApi::VerifyAudit(const service::CallContext& ctx) {
  JITBROKER_ASSIGN_OR_RETURN(auto out, service_->VerifyAudit(ctx));
  return AuditVerificationJson(out);
}

Result<nlohmann::json> JsonApi::ExchangeToken(const service::CallContext& ctx,
                                              const oidc::TokenExchangeRequest& req) {
  JITBROKER_ASSIGN_OR_RETURN(auto out, service_->ExchangeToken(ctx, req));
  return ExchangeJson(out);
}

}  // namespace jitbroker::http::wire
