#include "broker/http/server.h"

#include <algorithm>
#include <atomic>
#include <charconv>
#include <chrono>
#include <map>
#include <optional>
#include <string_view>
#include <vector>

#include "broker/common/json_util.h"
#include "broker/common/log.h"
#include "broker/http/console.h"
#include "broker/http/git_proxy.h"
#include "broker/http/github_api_proxy.h"
#include "broker/http/slack_interactions.h"
#include "broker/http/transport.h"
#include "broker/http/wire.h"
#include "broker/net/url.h"
#include "broker/oidc/token_request.h"

namespace jitbroker::http {

namespace {

// The body limit of routes that take none: a stray body is refused (413)
// rather than read.
constexpr size_t kNoBody = 0;
// RFC 8693 and RFC 7662 forms: small, whatever max_body_bytes says.
constexpr size_t kMaxFormBytes = 64 * 1024;

std::string_view MethodLabel(std::string_view m) {
  // Metric labels must stay bounded whatever method a client invents.
  for (std::string_view known : {"GET", "POST", "DELETE", "PUT", "PATCH", "HEAD", "OPTIONS"}) {
    if (m == known) {
      return known;
    }
  }
  return "other";
}

nlohmann::json ProblemBody(int status, std::string_view title, std::string_view code,
                           std::string_view detail, std::string_view request_id) {
  return nlohmann::json{{"type", "https://jitbroker.dev/problems/" + std::string(code)},
                        {"title", title},
                        {"status", status},
                        {"detail", detail},
                        {"code", code},
                        {"request_id", request_id}};
}

void WriteJson(Response& res, int status, const nlohmann::json& body,
               const char* content_type = "application/json") {
  res.status = status;
  res.content_type = content_type;
  res.body = body.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

void WriteProblem(Response& res, const Error& e, std::string_view request_id) {
  const ErrorCodeInfo& info = InfoFor(e.code);
  WriteJson(res, info.http_status,
            ProblemBody(info.http_status, info.title, e.Reason(), e.message, request_id),
            "application/problem+json");
  if (e.code == ErrorCode::kUnauthenticated) {
    res.SetHeader("WWW-Authenticate", "Bearer");
  }
  if (e.retryable && e.retry_after.count() > 0) {
    res.SetHeader("Retry-After", std::to_string(e.retry_after.count()));
  }
}

Error MediaType(std::string message) {
  return UnsupportedMediaType("unsupported_media_type", std::move(message));
}

// A URL query, decoded once. A parameter given twice is ambiguous: refused.
class Query {
 public:
  static Result<Query> Parse(const Request& req) {
    Query q;
    auto pairs = net::ParseForm(req.query());
    if (!pairs) {
      return std::unexpected(InvalidArgument("invalid_query", pairs.error().message));
    }
    for (auto& [k, v] : *pairs) {
      if (!q.values_.emplace(k, std::move(v)).second) {
        return std::unexpected(InvalidArgument(
            "invalid_query", "query parameter " + log::Quoted(k, 64) + " is given more than once"));
      }
    }
    return q;
  }
  bool Has(const char* key) const { return values_.find(key) != values_.end(); }
  std::string Or(const char* key, std::string fallback = {}) const {
    auto it = values_.find(key);
    return it == values_.end() ? fallback : it->second;
  }
  Result<int64_t> Int(const char* key, int64_t dflt, int64_t min, int64_t max) const {
    auto it = values_.find(key);
    if (it == values_.end()) {
      return dflt;
    }
    const std::string& v = it->second;
    int64_t out = 0;
    auto [ptr, ec] = std::from_chars(v.data(), v.data() + v.size(), out);
    if (ec != std::errc() || ptr != v.data() + v.size() || out < min || out > max) {
      return std::unexpected(InvalidArgument(
          "invalid_query", std::string("query parameter ") + key + " must be an integer in [" +
                               std::to_string(min) + ", " + std::to_string(max) + "]"));
    }
    return out;
  }

 private:
  std::map<std::string, std::string, std::less<>> values_;
};

// Splits "/a/b/c" into its segments; false for anything that is not a plain
// absolute path (the router never matches such a target).
bool SplitPath(std::string_view path, std::vector<std::string_view>& out) {
  if (path.empty() || path.front() != '/') {
    return false;
  }
  size_t pos = 1;
  while (pos <= path.size()) {
    size_t slash = path.find('/', pos);
    if (slash == std::string_view::npos) {
      slash = path.size();
    }
    out.push_back(path.substr(pos, slash - pos));
    pos = slash + 1;
  }
  return true;
}

// The request-target as the access log shows it: the path, and of the query
// only the parameter names. A client that puts a secret in the URL (a token
// for introspection, say) does not get it written to disk.
std::string LoggedTarget(std::string_view target) {
  const size_t q = target.find('?');
  if (q == std::string_view::npos) {
    return std::string(target);
  }
  std::string out(target.substr(0, q + 1));
  std::string_view query = target.substr(q + 1);
  bool first = true;
  while (!query.empty()) {
    const size_t amp = query.find('&');
    std::string_view pair = query.substr(0, amp);
    query = amp == std::string_view::npos ? std::string_view() : query.substr(amp + 1);
    if (!first) {
      out += '&';
    }
    first = false;
    const size_t eq = pair.find('=');
    out += pair.substr(0, eq);
    if (eq != std::string_view::npos) {
      out += "=...";
    }
  }
  return out;
}

bool IsIdSegment(std::string_view s) {
  if (s.empty() || s.size() > 64) {
    return false;
  }
  return std::all_of(s.begin(), s.end(), [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_';
  });
}

}  // namespace

struct HttpServer::Impl final : RequestHandler {
  config::ServerConfig cfg;
  service::BrokerService* service = nullptr;
  std::optional<wire::JsonApi> api;  // the JSON of every route over `service`
  Metrics* metrics = nullptr;
  ReloadFn reload;
  std::unique_ptr<Transport> transport;
  Console* console = nullptr;                 // /ui/…; null when humans: is absent
  std::unique_ptr<GitProxy> git_proxy;        // /git/…; null when off
  std::unique_ptr<GitHubApiProxy> api_proxy;  // /github/…; null when off
  std::unique_ptr<SlackInteractions> slack;   // /v1/slack/interactions; null when off
  std::shared_ptr<spdlog::logger> error_log = log::Get("http");
  std::shared_ptr<spdlog::logger> access_log = log::Access();  // nullptr: off
  std::atomic<int> long_polls{0};
  int max_long_polls = 0;

  enum class Auth { kNone, kRequired };
  enum class BodyKind { kNone, kJson };
  using Body = std::optional<nlohmann::json>;
  // A handler returns a status and JSON body, or an Error.
  struct Reply {
    int status = 200;
    nlohmann::json body;
    bool problem = false;
  };
  using Handler = std::function<Result<Reply>(const Request&, service::CallContext&, const Body&)>;
  using RawHandler = std::function<void(Request&, Response&)>;

  struct RouteEntry {
    std::string method;
    std::vector<std::string> segments;  // "{id}": one [A-Za-z0-9_]{1,64} segment
    std::string label;
    size_t max_body = kNoBody;
    bool inline_handler = false;
    RawHandler handle;
  };
  std::vector<RouteEntry> routes;
  std::map<std::string, size_t, std::less<>> route_index;  // "METHOD label" -> routes[i]

  // ---- routing ---------------------------------------------------------

  void AddRoute(std::string method, std::string label, size_t max_body, bool inline_handler,
                RawHandler handle) {
    RouteEntry r;
    r.method = std::move(method);
    std::vector<std::string_view> segs;
    SplitPath(label, segs);
    for (std::string_view s : segs) {
      r.segments.emplace_back(s);
    }
    r.label = std::move(label);
    r.max_body = max_body;
    r.inline_handler = inline_handler;
    r.handle = std::move(handle);
    routes.push_back(std::move(r));
  }

  static bool PathMatches(const RouteEntry& r, const std::vector<std::string_view>& segs,
                          std::vector<std::string>* params) {
    if (r.segments.size() != segs.size()) {
      return false;
    }
    std::vector<std::string> found;
    for (size_t i = 0; i < segs.size(); ++i) {
      if (r.segments[i] == "{id}") {
        if (!IsIdSegment(segs[i])) {
          return false;
        }
        found.emplace_back(segs[i]);
      } else if (r.segments[i] != segs[i]) {
        return false;
      }
    }
    if (params != nullptr) {
      *params = std::move(found);
    }
    return true;
  }

  // The methods served at `path` ("GET, POST"), empty when none.
  std::string AllowedMethods(std::string_view path) const {
    std::vector<std::string_view> segs;
    std::string out;
    if (!SplitPath(path, segs)) {
      return out;
    }
    for (const RouteEntry& r : routes) {
      if (PathMatches(r, segs, nullptr) && out.find(r.method) == std::string::npos) {
        out += out.empty() ? "" : ", ";
        out += r.method;
      }
    }
    return out;
  }

  Result<RoutePlan> Plan(Request& head) override {
    if (console != nullptr && Console::Owns(head.path())) {
      return console->Plan(head);
    }
    if (git_proxy && GitProxy::Owns(head.path())) {
      return git_proxy->Plan(head);
    }
    if (api_proxy && GitHubApiProxy::Owns(head.path())) {
      return api_proxy->Plan(head);
    }
    std::vector<std::string_view> segs;
    if (SplitPath(head.path(), segs)) {
      bool path_known = false;
      for (size_t i = 0; i < routes.size(); ++i) {
        const RouteEntry& r = routes[i];
        std::vector<std::string> params;
        if (!PathMatches(r, segs, &params)) {
          continue;
        }
        path_known = true;
        if (r.method != head.method) {
          continue;
        }
        head.path_params = std::move(params);
        head.route = r.label;
        head.route_id = static_cast<int>(i);
        RoutePlan plan;
        plan.max_body_bytes = r.max_body;
        plan.inline_handler = r.inline_handler;
        return plan;
      }
      if (path_known) {
        Error e;
        e.code = ErrorCode::kMethodNotAllowed;
        e.reason = "method_not_allowed";
        e.message = "this endpoint does not serve " + log::Quoted(head.method, 16);
        return std::unexpected(e);
      }
    }
    return std::unexpected(NotFound("no_route", "no such endpoint"));
  }

  void Handle(Request& req, Response& res) override {
    if (console != nullptr && Console::Owns(req.path())) {
      return console->Handle(req, res);
    }
    if (req.route_id < 0 || static_cast<size_t>(req.route_id) >= routes.size()) {
      return WriteProblem(res, NotFound("no_route", "no such endpoint"), req.request_id);
    }
    routes[static_cast<size_t>(req.route_id)].handle(req, res);
  }

  void HandleStream(Request& req, BodyStream& body, Response& res) override {
    if (git_proxy && GitProxy::Owns(req.path())) {
      return git_proxy->Handle(req, body, res);
    }
    if (api_proxy && GitHubApiProxy::Owns(req.path())) {
      return api_proxy->Handle(req, body, res);
    }
    WriteProblem(res, NotFound("no_route", "no such endpoint"), req.request_id);
  }

  void RenderError(const Request& req, const Error& e, Response& res) override {
    WriteProblem(res, e, req.request_id);
    if (e.code == ErrorCode::kMethodNotAllowed) {
      res.SetHeader("Allow", AllowedMethods(req.path()));
    }
  }

  void Shed() override { metrics->CountShed(); }

  void Finished(const Request& req, const Response& res,
                std::chrono::steady_clock::duration elapsed) override {
    const double secs = std::chrono::duration<double>(elapsed).count();
    metrics->ObserveRequest(req.route, std::string(MethodLabel(req.method)), res.status, secs);
    if (access_log && access_log->should_log(spdlog::level::info)) {
      // Every value a client chose is quoted (log::Quoted): a path cannot
      // forge `status=` or `remote=` fields. The route is the table's label.
      access_log->info(
          "event=access request_id={} client_request_id={} method={} route={} path={} status={} "
          "duration_ms={:.3f} remote={} bytes_in={} bytes_out={}",
          req.request_id, log::Quoted(req.client_request_id, 64), log::Quoted(req.method, 16),
          req.route, log::Quoted(LoggedTarget(req.target), 1024), res.status, secs * 1000,
          log::Quoted(req.remote_addr, 64), res.bytes_in, res.bytes_out);
    }
  }

  // ---- JSON routes ---------------------------------------------------------

  void Route(const std::string& method, const std::string& label, Auth auth, BodyKind body_kind,
             Handler handler) {
    const size_t max_body = body_kind == BodyKind::kJson ? cfg.max_body_bytes : kNoBody;
    AddRoute(
        method, label, max_body, false,
        [this, label, auth, body_kind, handler = std::move(handler)](Request& req, Response& res) {
          service::CallContext ctx;
          ctx.request_id = req.request_id;
          ctx.client_request_id = req.client_request_id;
          ctx.source_address = req.remote_addr;
          auto fail = [&](const Error& e) { WriteProblem(res, e, req.request_id); };
          if (auth == Auth::kRequired) {
            auto caller = service->Authenticate(req.Header("Authorization"), req.remote_addr,
                                                req.client_cert_sha256);
            if (!caller) {
              return fail(caller.error());
            }
            ctx.caller = std::move(*caller);
          }
          Body body;
          if (body_kind == BodyKind::kJson) {
            auto parsed = ParseJsonBody(req);
            if (!parsed) {
              return fail(parsed.error());
            }
            body = std::move(*parsed);
          }
          auto reply = handler(req, ctx, body);
          if (!reply) {
            if (reply.error().code == ErrorCode::kInternal) {
              error_log->error("event=internal_error request_id={} route={} error={}",
                               ctx.request_id, label, log::Quoted(reply.error().ToString()));
            }
            return fail(reply.error());
          }
          WriteJson(res, reply->status, reply->body,
                    reply->problem ? "application/problem+json" : "application/json");
        });
  }

  // JSON bodies: Content-Type application/json; an empty body reads as {}.
  static Result<nlohmann::json> ParseJsonBody(const Request& req) {
    if (req.body.empty()) {
      return nlohmann::json::object();
    }
    if (req.MediaType() != "application/json") {
      return std::unexpected(MediaType("request bodies must be application/json"));
    }
    return json::ParseStrict(req.body);
  }

  void Install();
  void InstallTokenEndpoint();
};

HttpServer::~HttpServer() { Stop(); }

Result<std::unique_ptr<HttpServer>> HttpServer::Create(const config::ServerConfig& cfg,
                                                       service::BrokerService* service,
                                                       Metrics* metrics, ReloadFn reload,
                                                       ProxyOptions proxy, PeopleOptions people) {
  std::unique_ptr<HttpServer> s(new HttpServer());
  s->impl_ = std::make_unique<Impl>();
  Impl& impl = *s->impl_;
  impl.cfg = cfg;
  impl.service = service;
  impl.api.emplace(service);
  impl.metrics = metrics;
  impl.reload = std::move(reload);
  impl.console = people.console;
  impl.max_long_polls = cfg.max_long_polls >= 0 ? cfg.max_long_polls : cfg.threads / 2;

  TransportOptions opts;
  opts.host = cfg.host;
  opts.port = cfg.port;
  opts.tls_cert = cfg.tls_cert;
  opts.tls_key = cfg.tls_key;
  opts.tls_client_ca = cfg.tls_client_ca;
  opts.io_threads = cfg.io_threads;
  opts.worker_threads = cfg.threads;
  opts.max_queued_requests = static_cast<size_t>(cfg.max_queued_requests);
  opts.max_header_bytes = cfg.max_header_bytes;
  opts.max_header_count = cfg.max_header_count;
  opts.max_body_bytes = std::max(cfg.max_body_bytes, kMaxFormBytes);
  opts.max_connections = cfg.max_connections;
  opts.max_connections_per_address = cfg.max_connections_per_address;
  opts.request_timeout = std::chrono::milliseconds(cfg.request_timeout_ms);
  opts.idle_timeout = std::chrono::milliseconds(cfg.idle_timeout_ms);
  opts.write_timeout = std::chrono::milliseconds(cfg.write_timeout_ms);
  JITBROKER_ASSIGN_OR_RETURN(impl.transport, Transport::Create(std::move(opts), &impl));
  if (proxy.config.enabled && proxy.http != nullptr) {
    // One bound on transfers and one set of held tokens for both proxies.
    const int max_transfers = proxy.config.max_concurrent_transfers > 0
                                  ? proxy.config.max_concurrent_transfers
                                  : std::max(1, cfg.threads / 2);
    auto slots = std::make_shared<proxy_support::TransferSlots>(max_transfers);
    auto held = std::make_shared<proxy_support::HeldTokens>(service);
    Impl* self = &impl;
    auto render = [self](const Request& req, const Error& e, Response& res) {
      self->RenderError(req, e, res);
    };
    impl.git_proxy =
        std::make_unique<GitProxy>(service, proxy.http, proxy.config, slots, held, render);
    impl.api_proxy = std::make_unique<GitHubApiProxy>(service, proxy.http, std::move(proxy.config),
                                                      slots, held, render, !cfg.tls_cert.empty());
  }
  if (people.slack != nullptr && people.slack->interactive()) {
    Impl* self = &impl;
    impl.slack = std::make_unique<SlackInteractions>(
        service, people.slack, [self](const Request& req, const Error& e, Response& res) {
          self->RenderError(req, e, res);
        });
  }
  impl.Install();
  return s;
}

void HttpServer::Impl::Install() {
  // /healthz runs on the I/O thread: it answers even when every worker is busy.
  AddRoute("GET", "/healthz", kNoBody, true,
           [](Request&, Response& res) { WriteJson(res, 200, {{"status", "ok"}}); });

  Route("GET", "/readyz", Auth::kNone, BodyKind::kNone,
        [this](auto&, auto&, auto&) -> Result<Reply> {
          auto st = service->Ready();
          if (!st) {
            return Reply{503, {{"status", "unready"}, {"checks", {{"store", "failing"}}}}};
          }
          return Reply{200, {{"status", "ready"}, {"checks", {{"store", "ok"}, {"audit", "ok"}}}}};
        });

  AddRoute("GET", "/metrics", kNoBody, false, [this](Request& req, Response& res) {
    if (!cfg.metrics_public) {
      auto caller = service->Authenticate(req.Header("Authorization"), req.remote_addr,
                                          req.client_cert_sha256);
      if (!caller) {
        return WriteProblem(res, caller.error(), req.request_id);
      }
      if (caller->IsSession() || !caller->is_admin) {
        return WriteProblem(res, PermissionDenied("forbidden", "metrics need an admin"),
                            req.request_id);
      }
    }
    std::string text = metrics->Render();
    service->AppendComponentMetrics(text);
    res.status = 200;
    res.content_type = "text/plain; version=0.0.4";
    res.body = std::move(text);
  });

  Route("GET", "/.well-known/jwks.json", Auth::kNone, BodyKind::kNone,
        [this](auto&, auto&, auto&) -> Result<Reply> { return Reply{200, service->Jwks()}; });

  Route("POST", "/v1/sessions", Auth::kRequired, BodyKind::kJson,
        [this](auto&, auto& ctx, const Body& body) -> Result<Reply> {
          JITBROKER_ASSIGN_OR_RETURN(auto out, api->OpenSession(ctx, *body));
          return Reply{201, std::move(out)};
        });

  Route("GET", "/v1/sessions", Auth::kRequired, BodyKind::kNone,
        [this](const Request& req, auto& ctx, auto&) -> Result<Reply> {
          JITBROKER_ASSIGN_OR_RETURN(Query q, Query::Parse(req));
          SessionFilter f;
          if (q.Has("state")) {
            f.state = ParseSessionState(q.Or("state"));
            if (!f.state) {
              std::string names;
              for (SessionState st : kAllSessionStates) {
                names += (names.empty() ? "" : ", ") + std::string(StateName(st));
              }
              return std::unexpected(InvalidArgument(
                  "invalid_query", "query parameter state must be one of " + names));
            }
          }
          f.agent_id = q.Or("agent");
          f.principal_id = q.Or("principal");
          JITBROKER_ASSIGN_OR_RETURN(auto limit, q.Int("limit", 100, 1, 1000));
          f.limit = static_cast<size_t>(limit);
          JITBROKER_ASSIGN_OR_RETURN(auto out, api->ListSessions(ctx, f));
          return Reply{200, std::move(out)};
        });

  Route("GET", "/v1/sessions/{id}", Auth::kRequired, BodyKind::kNone,
        [this](const Request& req, auto& ctx, auto&) -> Result<Reply> {
          JITBROKER_ASSIGN_OR_RETURN(auto out, api->GetSession(ctx, req.path_params[0]));
          return Reply{200, std::move(out)};
        });

  Route("POST", "/v1/sessions/{id}/heartbeat", Auth::kRequired, BodyKind::kJson,
        [this](const Request& req, auto& ctx, const Body& body) -> Result<Reply> {
          JITBROKER_ASSIGN_OR_RETURN(auto out, api->Heartbeat(ctx, req.path_params[0], *body));
          return Reply{200, std::move(out)};
        });

  Route("POST", "/v1/sessions/{id}/complete", Auth::kRequired, BodyKind::kJson,
        [this](const Request& req, auto& ctx, const Body& body) -> Result<Reply> {
          JITBROKER_ASSIGN_OR_RETURN(auto out,
                                     api->EndSession(ctx, req.path_params[0], *body, false));
          return Reply{200, std::move(out)};
        });

  Route("POST", "/v1/sessions/{id}/revoke", Auth::kRequired, BodyKind::kJson,
        [this](const Request& req, auto& ctx, const Body& body) -> Result<Reply> {
          JITBROKER_ASSIGN_OR_RETURN(auto out,
                                     api->EndSession(ctx, req.path_params[0], *body, true));
          return Reply{200, std::move(out)};
        });

  Route("POST", "/v1/sessions/{id}/grants", Auth::kRequired, BodyKind::kJson,
        [this](const Request& req, auto& ctx, const Body& body) -> Result<Reply> {
          JITBROKER_ASSIGN_OR_RETURN(auto out, api->RequestGrant(ctx, req.path_params[0], *body));
          if (out.outcome == service::GrantOutcome::kDenied) {
            const auto& d = out.body["decision"];
            // A crossed session budget has its own stable code (docs/api.md,
            // "Session budgets"); every other denial is grant_denied.
            const bool budget = d.value("code", std::string()) == "budget_exceeded";
            nlohmann::json p =
                ProblemBody(403, budget ? "Session budget exceeded" : "Grant denied",
                            budget ? "budget_exceeded" : "grant_denied",
                            d.value("reason", std::string("denied by policy")), req.request_id);
            p["decision"] = d;
            p["grant_id"] = out.body["grant_id"];
            p["grant"] = out.body;
            return Reply{403, std::move(p), true};
          }
          return Reply{out.outcome == service::GrantOutcome::kPending ? 202 : 201,
                       std::move(out.body)};
        });

  Route("GET", "/v1/grants/{id}", Auth::kRequired, BodyKind::kNone,
        [this](const Request& req, auto& ctx, auto&) -> Result<Reply> {
          JITBROKER_ASSIGN_OR_RETURN(Query q, Query::Parse(req));
          // ?wait=N long-polls a pending grant. A poll holds a worker, so at
          // most max_long_polls wait at once; beyond that the grant's state
          // is answered at once and the client simply polls again.
          JITBROKER_ASSIGN_OR_RETURN(auto wait, q.Int("wait", 0, 0, 60));
          bool counted = false;
          if (wait > 0) {
            if (long_polls.fetch_add(1) < max_long_polls) {
              counted = true;
            } else {
              long_polls.fetch_sub(1);
              wait = 0;
            }
          }
          auto out = api->GetGrant(ctx, req.path_params[0], static_cast<int>(wait));
          if (counted) {
            long_polls.fetch_sub(1);
          }
          if (!out) {
            return std::unexpected(out.error());
          }
          return Reply{200, std::move(*out)};
        });

  Route("GET", "/v1/approvals", Auth::kRequired, BodyKind::kNone,
        [this](const Request& req, auto& ctx, auto&) -> Result<Reply> {
          JITBROKER_ASSIGN_OR_RETURN(Query q, Query::Parse(req));
          service::ApprovalListFilter f;
          f.state = q.Or("state");
          f.session_id = q.Or("session_id");
          f.principal = q.Or("principal");
          f.tier = q.Or("tier");
          f.order = q.Or("order");
          f.cursor = q.Or("cursor");
          if (q.Has("limit")) {
            JITBROKER_ASSIGN_OR_RETURN(f.limit, q.Int("limit", service::kDefaultApprovalPage, 1,
                                                      service::kMaxApprovalPage));
          }
          JITBROKER_ASSIGN_OR_RETURN(auto out, api->ListApprovals(ctx, f));
          return Reply{200, std::move(out)};
        });

  Route("GET", "/v1/approvals/{id}", Auth::kRequired, BodyKind::kNone,
        [this](const Request& req, auto& ctx, auto&) -> Result<Reply> {
          JITBROKER_ASSIGN_OR_RETURN(auto out, api->GetApproval(ctx, req.path_params[0]));
          return Reply{200, std::move(out)};
        });

  Route("POST", "/v1/approvals/{id}", Auth::kRequired, BodyKind::kJson,
        [this](const Request& req, auto& ctx, const Body& body) -> Result<Reply> {
          JITBROKER_ASSIGN_OR_RETURN(auto out, api->DecideApproval(ctx, req.path_params[0], *body));
          return Reply{200, std::move(out)};
        });

  Route("POST", "/v1/admin/revoke", Auth::kRequired, BodyKind::kJson,
        [this](auto&, auto& ctx, const Body& body) -> Result<Reply> {
          JITBROKER_ASSIGN_OR_RETURN(auto out, api->BulkRevoke(ctx, *body));
          return Reply{200, std::move(out)};
        });

  Route("DELETE", "/v1/grants/{id}", Auth::kRequired, BodyKind::kNone,
        [this](const Request& req, auto& ctx, auto&) -> Result<Reply> {
          JITBROKER_ASSIGN_OR_RETURN(auto out, api->RevokeGrant(ctx, req.path_params[0]));
          return Reply{200, std::move(out)};
        });

  // RFC 7662 §2.1: the token travels in a form body, never in the URL, where
  // proxies, logs and browser history would keep it.
  AddRoute("POST", "/v1/introspect", kMaxFormBytes, false, [this](Request& req, Response& res) {
    service::CallContext ctx;
    ctx.request_id = req.request_id;
    ctx.client_request_id = req.client_request_id;
    ctx.source_address = req.remote_addr;
    auto answer = [&]() -> Result<nlohmann::json> {
      JITBROKER_ASSIGN_OR_RETURN(ctx.caller,
                                 service->Authenticate(req.Header("Authorization"), req.remote_addr,
                                                       req.client_cert_sha256));
      if (req.has_query()) {
        return std::unexpected(InvalidArgument(
            "token_in_query", "introspection parameters belong in the form body, not the URL"));
      }
      if (req.MediaType() != "application/x-www-form-urlencoded") {
        return std::unexpected(MediaType("introspection takes application/x-www-form-urlencoded"));
      }
      auto form = net::ParseForm(req.body);
      if (!form) {
        return std::unexpected(InvalidArgument("invalid_request", form.error().message));
      }
      std::optional<std::string> token;
      for (auto& [k, v] : *form) {
        if (k == "token") {
          if (token) {
            return std::unexpected(InvalidArgument("invalid_request", "token is given twice"));
          }
          token = std::move(v);
        } else {
          SecureWipe(v.data(), v.size());
        }
      }
      if (!token) {
        return std::unexpected(InvalidArgument("missing_field", "token is required"));
      }
      auto out = api->Introspect(ctx, *token);
      SecureWipe(token->data(), token->size());
      return out;
    }();
    SecureWipe(req.body.data(), req.body.size());
    if (!answer) {
      return WriteProblem(res, answer.error(), req.request_id);
    }
    res.SetHeader("Cache-Control", "no-store");
    WriteJson(res, 200, *answer);
  });

  InstallTokenEndpoint();

  if (slack) {
    AddRoute("POST", "/v1/slack/interactions", SlackInteractions::kMaxBodyBytes, false,
             [this](Request& req, Response& res) { slack->Handle(req, res); });
  }

  Route("GET", "/v1/audit", Auth::kRequired, BodyKind::kNone,
        [this](const Request& req, auto& ctx, auto&) -> Result<Reply> {
          JITBROKER_ASSIGN_OR_RETURN(Query q, Query::Parse(req));
          AuditFilter f;
          f.chain_id = q.Or("chain");  // empty: this replica's own chain
          f.session_id = q.Or("session_id");
          f.principal_id = q.Or("principal");
          JITBROKER_ASSIGN_OR_RETURN(f.after_seq, q.Int("after_seq", 0, 0, INT64_MAX));
          JITBROKER_ASSIGN_OR_RETURN(auto limit, q.Int("limit", 1000, 1, 10000));
          f.limit = static_cast<size_t>(limit);
          JITBROKER_ASSIGN_OR_RETURN(auto out, api->ListAudit(ctx, f));
          return Reply{200, std::move(out)};
        });

  // The public key of the audit checkpoints (docs/api.md), for offline
  // `jitctl audit verify --jwks`; deliberately not in /.well-known/jwks.json.
  Route("GET", "/v1/audit/keys", Auth::kRequired, BodyKind::kNone,
        [this](auto&, auto& ctx, auto&) -> Result<Reply> {
          JITBROKER_ASSIGN_OR_RETURN(auto out, service->AuditKeys(ctx));
          return Reply{200, std::move(out)};
        });

  Route("GET", "/v1/audit/verify", Auth::kRequired, BodyKind::kNone,
        [this](auto&, auto& ctx, auto&) -> Result<Reply> {
          JITBROKER_ASSIGN_OR_RETURN(auto out, api->VerifyAudit(ctx));
          return Reply{200, std::move(out)};
        });

  Route("POST", "/v1/admin/reload", Auth::kRequired, BodyKind::kJson,
        [this](auto&, auto& ctx, auto& body) -> Result<Reply> {
          if (ctx.caller.IsSession() || !ctx.caller.is_admin) {
            return std::unexpected(PermissionDenied("forbidden", "reloading needs an admin"));
          }
          // No body, or an empty object: a field a client believes does
          // something (`{"force": true}`) is refused, as on every route.
          JITBROKER_ASSIGN_OR_RETURN(auto r, json::JsonReader::Open(*body, ""));
          JITBROKER_RETURN_IF_ERROR(r.Finish());
          JITBROKER_ASSIGN_OR_RETURN(std::string version, reload());
          return Reply{200, {{"policy_version", version}}};
        });
}

// RFC 8693 token exchange for CI (docs/api.md "Token exchange"): form-encoded, no broker
// credential (the subject token is the credential), and RFC 6749 §5.2 JSON
// errors instead of problem documents.
void HttpServer::Impl::InstallTokenEndpoint() {
  const size_t limit = std::min(cfg.max_body_bytes, kMaxFormBytes);
  AddRoute("POST", "/v1/token", limit, false, [this](Request& req, Response& res) {
    res.SetHeader("Cache-Control", "no-store");
    res.SetHeader("Pragma", "no-cache");
    service::CallContext ctx;
    ctx.request_id = req.request_id;
    ctx.client_request_id = req.client_request_id;
    ctx.source_address = req.remote_addr;
    auto answer = [&]() -> Result<nlohmann::json> {
      JITBROKER_RETURN_IF_ERROR(service->AdmitTokenRequest(ctx));
      if (req.MediaType() != "application/x-www-form-urlencoded") {
        return std::unexpected(InvalidArgument(
            "invalid_request", "the token endpoint takes application/x-www-form-urlencoded"));
      }
      if (req.has_query()) {
        return std::unexpected(InvalidArgument(
            "invalid_request", "token request parameters belong in the body, not the URL"));
      }
      JITBROKER_ASSIGN_OR_RETURN(oidc::TokenExchangeRequest tx,
                                 oidc::ParseTokenExchangeForm(req.body));
      return api->ExchangeToken(ctx, tx);
    }();
    SecureWipe(req.body.data(), req.body.size());
    if (answer) {
      metrics->CountTokenExchange("ok", "ok");
      WriteJson(res, 200, *answer);
      return;
    }
    if (answer.error().code == ErrorCode::kInternal) {
      error_log->error("event=internal_error request_id={} route=/v1/token error={}",
                       ctx.request_id, log::Quoted(answer.error().ToString()));
    }
    const oidc::OAuthError oe = oidc::ToOAuthError(answer.error());
    // The reason label is precise only once the token is verified.
    const bool unverified = service::BrokerService::IsUnverifiedRejection(answer.error());
    metrics->CountTokenExchange(oe.error, unverified ? std::string_view("unverified")
                                                     : std::string_view(answer.error().reason));
    WriteJson(res, oe.status, oidc::OAuthErrorBody(oe));
    if (answer.error().retryable && answer.error().retry_after.count() > 0) {
      res.SetHeader("Retry-After", std::to_string(answer.error().retry_after.count()));
    }
  });
}

Result<int> HttpServer::Bind() { return impl_->transport->Bind(); }

void HttpServer::Serve() { impl_->transport->Serve(); }

void HttpServer::Stop() {
  if (impl_ && impl_->transport) {
    impl_->transport->Stop();
  }
}

bool HttpServer::IsRunning() const { return impl_->transport->IsRunning(); }

Status HttpServer::ReloadTls() { return impl_->transport->ReloadTls(); }

}  // namespace jitbroker::http
