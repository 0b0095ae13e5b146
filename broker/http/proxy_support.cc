#include "broker/http/proxy_support.h"

#include <algorithm>
#include <charconv>

#include "broker/crypto/crypto.h"
#include "broker/service/request_digest.h"

namespace jitbroker::http::proxy_support {

namespace {

constexpr size_t kMaxHeldTokens = 10000;
// A held token is used only while it has at least this long to live.
constexpr Seconds kTokenMargin{60};

bool IEquals(std::string_view a, std::string_view b) { return HttpHeaders::EqualsIgnoreCase(a, b); }

bool BranchGlob(std::string_view pattern, std::string_view name) {
  if (pattern.empty()) {
    return name.empty();
  }
  if (pattern.front() == '*') {
    for (size_t i = 0; i <= name.size(); ++i) {
      if (BranchGlob(pattern.substr(1), name.substr(i))) {
        return true;
      }
      if (i < name.size() && name[i] == '/') {
        break;
      }
    }
    return false;
  }
  return !name.empty() && pattern.front() == name.front() &&
         BranchGlob(pattern.substr(1), name.substr(1));
}

}  // namespace

bool IsRepoNameSegment(std::string_view s) {
  if (s.empty() || s.size() > 100 || s == "." || s == "..") {
    return false;
  }
  return std::all_of(s.begin(), s.end(), [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' ||
           c == '_' || c == '.';
  });
}

bool IsProtectedBranch(const config::ProxyConfig& config, std::string_view branch) {
  return std::any_of(config.protected_branches.begin(), config.protected_branches.end(),
                     [&](const std::string& g) { return BranchGlob(g, branch); });
}

void RenderFailure(const RenderErrorFn& render, spdlog::logger& log, const Request& req,
                   const Error& e, Response& res, std::string_view challenge) {
  render(req, e, res);
  if (e.code == ErrorCode::kUnauthenticated) {
    res.SetHeader("WWW-Authenticate", std::string(challenge));
  }
  if (e.code == ErrorCode::kInternal || e.code == ErrorCode::kUnavailable) {
    log.warn("event=proxy_failed request_id={} error={}", req.request_id,
             log::Quoted(e.ToString()));
  }
}

void EndUse(service::BrokerService& service, const service::CallContext& ctx,
            const std::string& grant_id, spdlog::logger& log) {
  auto revoked = service.RevokeGrant(ctx, grant_id);
  if (!revoked && revoked.error().Reason() != "grant_not_live") {
    log.warn("event=proxy_revoke_failed request_id={} grant_id={} error={}", ctx.request_id,
             grant_id, log::Quoted(revoked.error().ToString()));
  }
}

Result<authn::Caller> AuthenticateSession(const service::BrokerService& service, const Request& req,
                                          std::string_view how) {
  const std::string_view authz = req.Header("Authorization");
  if (authz.empty()) {
    return std::unexpected(Unauthenticated(
        "missing_credentials", std::string("authenticate with the session: ") + std::string(how)));
  }
  if (authz.size() > 6 && IEquals(authz.substr(0, 6), "Basic ")) {
    Result<std::string> decoded = crypto::Base64Decode(authz.substr(6));
    if (!decoded) {
      return std::unexpected(
          Unauthenticated("malformed_authorization", "the Basic credentials are not base64"));
    }
    SecretValue pair(std::move(*decoded));
    const std::string_view v = pair.Reveal();
    const size_t colon = v.find(':');
    if (colon == std::string_view::npos) {
      return std::unexpected(Unauthenticated("malformed_authorization",
                                             "the Basic credentials are not user:password"));
    }
    const std::string user(v.substr(0, colon));
    // Through Authenticate, so that failures count against the address
    // (limits.auth_failures_per_address) as on every other route.
    const SecretValue as_bearer("Bearer " + std::string(v.substr(colon + 1)));
    JITBROKER_ASSIGN_OR_RETURN(authn::Caller c,
                               service.Authenticate(as_bearer.Reveal(), req.remote_addr));
    if (!c.IsSession() || c.session_id != user) {
      return std::unexpected(
          Unauthenticated("invalid_credentials",
                          "the user name must be the session id and the password "
                          "its session token"));
    }
    return c;
  }
  std::string bearer(authz);
  if (authz.size() > 6 && IEquals(authz.substr(0, 6), "token ")) {
    bearer = "Bearer " + std::string(authz.substr(6));  // GitHub clients' spelling
  }
  auto c = service.Authenticate(bearer, req.remote_addr);
  SecureWipe(bearer.data(), bearer.size());
  if (!c) {
    return std::unexpected(c.error());
  }
  if (!c->IsSession()) {
    return std::unexpected(PermissionDenied("session_token_required",
                                            "the proxy is used with a session, not an API key"));
  }
  return std::move(*c);
}

Result<Admitted> Admit(const service::BrokerService& service, const Request& req,
                       std::string_view how, TransferSlots& slots) {
  JITBROKER_ASSIGN_OR_RETURN(authn::Caller caller, AuthenticateSession(service, req, how));
  if (!slots.TryTake()) {
    return std::unexpected(TransferSlots::Busy());
  }
  service::CallContext ctx;
  ctx.request_id = req.request_id;
  ctx.client_request_id = req.client_request_id;
  ctx.caller = std::move(caller);
  ctx.via_proxy = true;
  ctx.source_address = req.remote_addr;
  return Admitted{std::move(ctx), SlotHold(&slots)};
}

SecretValue TokenOf(const service::IssuedCredential& c) {
  for (const auto& [name, value] : c.secrets) {
    if (name == "token") {
      return value.Clone();
    }
  }
  return SecretValue();
}

Error NotIssued(const service::GrantResponse& out, const std::string& what) {
  const GrantRecord& g = out.grant.grant;
  if (out.outcome == service::GrantOutcome::kPending) {
    Error e = PermissionDenied("approval_required",
                               what + " waits for approval " + g.approval_id + " (grant " + g.id +
                                   "); repeat the same request once it is approved");
    return e;
  }
  // A crossed session budget keeps its own stable code here too (docs/api.md,
  // "Session budgets").
  const bool budget = g.decision.value("code", std::string()) == "budget_exceeded";
  return PermissionDenied(budget ? "budget_exceeded" : "grant_denied",
                          what + " was denied (grant " + g.id +
                              "): " + g.decision.value("reason", std::string("denied by policy")));
}

Result<std::shared_ptr<const SecretValue>> HeldTokens::Get(const service::CallContext& ctx,
                                                           const GrantRequest& req,
                                                           const std::string& what) {
  const std::string key =
      ctx.caller.session_id + "\n" + service::RequestDigest(ctx.caller.session_id, req);
  std::optional<Entry> cached;
  {
    std::lock_guard lock(mu_);
    auto it = entries_.find(key);
    if (it != entries_.end()) {
      cached = it->second;
    }
  }
  if (cached) {
    JITBROKER_ASSIGN_OR_RETURN(service::GrantView view, service_->GetGrant(ctx, cached->grant_id));
    if (view.grant.state == GrantState::kActive && cached->expires_at > view.now + kTokenMargin &&
        (!view.grant.expires_at || *view.grant.expires_at > view.now + kTokenMargin)) {
      return cached->token;
    }
  }
  JITBROKER_ASSIGN_OR_RETURN(service::GrantResponse out,
                             service_->RequestProxyGrant(ctx, ctx.caller.session_id, req));
  if (out.outcome != service::GrantOutcome::kIssued || !out.grant.credential) {
    return std::unexpected(NotIssued(out, what));
  }
  auto token = std::make_shared<const SecretValue>(TokenOf(*out.grant.credential));
  Entry entry{out.grant.grant.id, token, out.grant.credential->expires_at};
  std::lock_guard lock(mu_);
  if (entries_.size() >= kMaxHeldTokens) {
    entries_.erase(entries_.begin());
  }
  entries_[key] = std::move(entry);
  return token;
}

Error TransferSlots::Busy() {
  Error e = Unavailable(
      "proxy_busy", "the broker is carrying as many proxied transfers as it may; retry shortly");
  e.retryable = true;
  e.retry_after = std::chrono::seconds(2);
  return e;
}

Status Forward(HttpClient& http, const Request& req, ForwardSpec spec, BodyStream& body,
               spdlog::logger& log) {
  HttpRequest up;
  up.method = req.method;
  up.url = spec.url;
  up.authorization_scheme = spec.auth_scheme;
  up.bearer = std::move(spec.auth);
  up.timeout = spec.timeout;
  up.connect_timeout = kConnectTimeout;
  for (const std::string& name : spec.request_headers) {
    std::string_view v = req.Header(name);
    if (!v.empty()) {
      up.headers.emplace_back(name, std::string(v));
    }
  }
  if (std::string_view ua = req.Header("User-Agent"); !ua.empty()) {
    up.headers.emplace_back("User-Agent", std::string(ua) + " (via jitbroker)");
  }
  HttpStreamCallbacks cb;
  cb.idle_timeout = spec.idle;
  size_t prefix_pos = 0;
  if (spec.whole_body) {
    up.body = std::string(*spec.whole_body);
  } else if (req.method != "GET" && req.method != "HEAD") {
    cb.read_body = [&](char* buf, size_t max) -> Result<size_t> {
      if (prefix_pos < spec.body_prefix.size()) {
        const size_t n = std::min(max, spec.body_prefix.size() - prefix_pos);
        std::copy_n(spec.body_prefix.data() + prefix_pos, n, buf);
        prefix_pos += n;
        return n;
      }
      return body.Read(buf, max);
    };
    if (std::string_view cl = req.Header("Content-Length"); !cl.empty()) {
      int64_t n = 0;
      auto [p, ec] = std::from_chars(cl.data(), cl.data() + cl.size(), n);
      if (ec == std::errc() && p == cl.data() + cl.size()) {
        cb.body_length = n;
      }
    }
  }
  bool refused = false;
  int upstream_status = 0;
  cb.on_head = [&](int status, const HttpHeaders& h) -> Status {
    upstream_status = status;
    if (status == 401 || status == 407) {
      refused = true;
      return OkStatus();
    }
    Response head;
    head.status = status;
    head.content_type = std::string(h.Get("Content-Type").value_or(""));
    for (const std::string& name : spec.response_headers) {
      for (const auto& [k, v] : h.fields()) {
        if (IEquals(k, name)) {
          head.headers.emplace_back(name, spec.rewrite ? spec.rewrite(name, v) : v);
        }
      }
    }
    return body.WriteHead(head);
  };
  cb.on_body = [&](std::string_view data) -> Status {
    return refused ? OkStatus() : body.Write(data);
  };
  Result<int> st = http.Stream(up, cb);
  if (!st) {
    body.Abort();
    if (body.head_written()) {
      log.warn("event=proxy_cut_off request_id={} upstream={} error={}", req.request_id,
               log::Quoted(spec.what), log::Quoted(st.error().ToString()));
      return OkStatus();
    }
    return std::unexpected(st.error());
  }
  if (refused) {
    return std::unexpected(
        Unavailable("upstream_refused", "the upstream refused the broker's token for " + spec.what +
                                            " (HTTP " + std::to_string(upstream_status) + ")"));
  }
  return OkStatus();
}

}  // namespace jitbroker::http::proxy_support
