#include "broker/http/server.h"

#include <algorithm>
#include <charconv>
#include <chrono>
#include <optional>

#include <httplib.h>

#include "broker/common/json_util.h"
#include "broker/common/log.h"
#include "broker/crypto/crypto.h"
#include "broker/oidc/token_request.h"

namespace jitbroker::http {

namespace {

using Clock = std::chrono::steady_clock;

// Per-request state for the access log and metrics; the request is served
// start to finish on one worker thread.
struct RequestState {
  Clock::time_point start;
  std::string request_id;
  std::string route = "unmatched";
  size_t streamed_bytes_in = 0;  // bodies read through a ContentReader (not in req.body)
};
thread_local RequestState t_request;

// A worker pool that knows how many connections wait for a worker, so the
// pre-routing handler can shed load instead of letting the queue grow.
class CountingPool final : public httplib::TaskQueue {
 public:
  CountingPool(size_t threads, std::atomic<int>* queued) : pool_(threads), queued_(queued) {}
  void enqueue(std::function<void()> fn) override {
    queued_->fetch_add(1);
    pool_.enqueue([this, fn = std::move(fn)] {
      queued_->fetch_sub(1);
      fn();
    });
  }
  void shutdown() override { pool_.shutdown(); }

 private:
  httplib::ThreadPool pool_;
  std::atomic<int>* queued_;
};

bool IsSafeRequestId(const std::string& id) {
  if (id.empty() || id.size() > 64) {
    return false;
  }
  for (char c : id) {
    if (!(std::isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '_' || c == '.')) {
      return false;
    }
  }
  return true;
}

nlohmann::json ProblemBody(int status, std::string_view title, std::string_view code,
                           std::string_view detail) {
  return nlohmann::json{{"type", "https://jitbroker.dev/problems/" + std::string(code)},
                        {"title", title},
                        {"status", status},
                        {"detail", detail},
                        {"code", code},
                        {"request_id", t_request.request_id}};
}

void WriteJson(httplib::Response& res, int status, const nlohmann::json& body,
               const char* content_type = "application/json") {
  res.status = status;
  res.set_content(body.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace), content_type);
}

void WriteProblem(httplib::Response& res, const Error& e) {
  const ErrorCodeInfo& info = InfoFor(e.code);
  WriteJson(res, info.http_status, ProblemBody(info.http_status, info.title, e.Reason(), e.message),
            "application/problem+json");
  if (e.code == ErrorCode::kUnauthenticated) {
    res.set_header("WWW-Authenticate", "Bearer");
  }
  if (e.retryable && e.retry_after.count() > 0) {
    res.set_header("Retry-After", std::to_string(e.retry_after.count()));
  }
}

std::string ParamOr(const httplib::Request& req, const char* key, std::string fallback = {}) {
  return req.has_param(key) ? req.get_param_value(key) : fallback;
}

Result<int64_t> IntParam(const httplib::Request& req, const char* key, int64_t dflt, int64_t min,
                         int64_t max) {
  if (!req.has_param(key)) {
    return dflt;
  }
  const std::string v = req.get_param_value(key);
  int64_t out = 0;
  auto [ptr, ec] = std::from_chars(v.data(), v.data() + v.size(), out);
  if (ec != std::errc() || ptr != v.data() + v.size() || out < min || out > max) {
    return std::unexpected(InvalidArgument(
        "invalid_query", std::string("query parameter ") + key + " must be an integer in [" +
                             std::to_string(min) + ", " + std::to_string(max) + "]"));
  }
  return out;
}

}  // namespace

struct HttpServer::Impl {
  config::ServerConfig cfg;
  service::BrokerService* service = nullptr;
  Metrics* metrics = nullptr;
  ReloadFn reload;
  std::unique_ptr<httplib::Server> server;
  std::atomic<int> queued{0};
  std::shared_ptr<spdlog::logger> error_log = log::Get("http");
  std::shared_ptr<spdlog::logger> access_log = log::Access();  // nullptr: off

  enum class Auth { kNone, kRequired };
  using Body = std::optional<nlohmann::json>;
  // A handler returns a status and JSON body, or an Error.
  struct Reply {
    int status = 200;
    nlohmann::json body;
    bool problem = false;
  };
  using Handler =
      std::function<Result<Reply>(const httplib::Request&, service::CallContext&, const Body&)>;

  void Route(const std::string& method, const std::string& pattern, std::string label, Auth auth,
             bool has_body, Handler handler) {
    auto wrapped = [this, label, auth, has_body, handler = std::move(handler)](
                       const httplib::Request& req, httplib::Response& res) {
      t_request.route = label;
      service::CallContext ctx;
      ctx.request_id = t_request.request_id;
      auto fail = [&](const Error& e) { WriteProblem(res, e); };
      if (auth == Auth::kRequired) {
        auto caller = service->Authenticate(req.get_header_value("Authorization"));
        if (!caller) {
          return fail(caller.error());
        }
        ctx.caller = std::move(*caller);
      }
      Body body;
      if (has_body) {
        auto parsed = ParseBody(req);
        if (!parsed) {
          return fail(parsed.error());
        }
        body = std::move(*parsed);
      }
      auto reply = handler(req, ctx, body);
      if (!reply) {
        if (reply.error().code == ErrorCode::kInternal) {
          error_log->error("event=internal_error request_id={} route={} error=\"{}\"",
                            ctx.request_id, label, reply.error().ToString());
        }
        return fail(reply.error());
      }
      WriteJson(res, reply->status, reply->body,
                reply->problem ? "application/problem+json" : "application/json");
    };
    if (method == "GET") {
      server->Get(pattern, wrapped);
    } else if (method == "POST") {
      server->Post(pattern, wrapped);
    } else if (method == "DELETE") {
      server->Delete(pattern, wrapped);
    }
  }

  // JSON bodies: Content-Type application/json; an empty body reads as {}.
  static Result<nlohmann::json> ParseBody(const httplib::Request& req) {
    if (req.body.empty()) {
      return nlohmann::json::object();
    }
    const std::string ct = req.get_header_value("Content-Type");
    const std::string_view media = std::string_view(ct).substr(0, ct.find(';'));
    if (media != "application/json") {
      Error e;
      e.code = ErrorCode::kUnsupportedMediaType;
      e.reason = "unsupported_media_type";
      e.message = "request bodies must be application/json";
      return std::unexpected(e);
    }
    return json::ParseStrict(req.body);
  }

  void Install();
};

HttpServer::~HttpServer() { Stop(); }

Result<std::unique_ptr<HttpServer>> HttpServer::Create(const config::ServerConfig& cfg,
                                                       service::BrokerService* service,
                                                       Metrics* metrics, ReloadFn reload) {
  std::unique_ptr<HttpServer> s(new HttpServer());
  s->impl_ = std::make_unique<Impl>();
  Impl& impl = *s->impl_;
  impl.cfg = cfg;
  impl.service = service;
  impl.metrics = metrics;
  impl.reload = std::move(reload);
  if (!cfg.tls_cert.empty()) {
    auto ssl = std::make_unique<httplib::SSLServer>(cfg.tls_cert.c_str(), cfg.tls_key.c_str());
    if (!ssl->is_valid()) {
      return std::unexpected(InvalidArgument(
          "invalid_config", "server.tls: cannot load the certificate or key"));
    }
    impl.server = std::move(ssl);
  } else {
    impl.server = std::make_unique<httplib::Server>();
  }
  impl.Install();
  return s;
}

void HttpServer::Impl::Install() {
  httplib::Server& svr = *server;
  svr.set_tcp_nodelay(true);
  svr.set_payload_max_length(cfg.max_body_bytes);
  svr.set_keep_alive_max_count(1000);
  svr.set_read_timeout(10, 0);
  svr.set_write_timeout(10, 0);
  const size_t threads = static_cast<size_t>(cfg.threads);
  svr.new_task_queue = [this, threads] { return new CountingPool(threads, &queued); };

  svr.set_pre_routing_handler([this](const httplib::Request& req, httplib::Response& res) {
    t_request.start = Clock::now();
    t_request.route = "unmatched";
    t_request.streamed_bytes_in = 0;
    const std::string given = req.get_header_value("X-Request-Id");
    t_request.request_id = IsSafeRequestId(given) ? given : crypto::NewPublicId("req_", 12);
    res.set_header("X-Request-Id", t_request.request_id);
    if (queued.load() > cfg.max_queued_requests) {
      metrics->CountShed();
      res.set_header("Retry-After", "1");
      Error e = Unavailable("overloaded", "the broker is saturated; retry shortly");
      WriteProblem(res, e);
      return httplib::Server::HandlerResponse::Handled;
    }
    return httplib::Server::HandlerResponse::Unhandled;
  });

  // Statuses produced by httplib itself (404 no route, 413 too large, 400
  // unparsable request line) get problem bodies too.
  svr.set_error_handler(httplib::Server::HandlerWithResponse(
      [](const httplib::Request&, httplib::Response& res) {
    if (!res.body.empty()) {
      return httplib::Server::HandlerResponse::Unhandled;
    }
    Error e;
    switch (res.status) {
      case 404:
        e = NotFound("no_route", "no such endpoint");
        break;
      case 413:
        e.code = ErrorCode::kPayloadTooLarge;
        e.reason = "payload_too_large";
        e.message = "request body exceeds the size limit";
        break;
      case 414:
        e = InvalidArgument("uri_too_long", "request URI is too long");
        break;
      default:
        e = InvalidArgument("bad_request", "the request could not be read");
        break;
    }
    const int status = res.status;
    WriteProblem(res, e);
    res.status = status;
    return httplib::Server::HandlerResponse::Handled;
  }));

  svr.set_exception_handler([this](const httplib::Request&, httplib::Response& res,
                                   std::exception_ptr ep) {
    std::string what = "unknown";
    try {
      std::rethrow_exception(ep);
    } catch (const std::exception& e) {
      what = e.what();
    } catch (...) {
    }
    error_log->error("event=unhandled_exception request_id={} route={} what=\"{}\"",
                      t_request.request_id, t_request.route, what);
    WriteProblem(res, Internal("internal error"));
  });

  svr.set_logger([this](const httplib::Request& req, const httplib::Response& res) {
    const double secs =
        std::chrono::duration<double>(Clock::now() - t_request.start).count();
    metrics->ObserveRequest(t_request.route, req.method, res.status, secs);
    if (access_log && access_log->should_log(spdlog::level::info)) {
      access_log->info(
          "event=access request_id={} method={} route={} path={} status={} duration_ms={:.3f} "
          "remote={} bytes_in={} bytes_out={}",
          t_request.request_id, req.method, t_request.route, req.path, res.status, secs * 1000,
          req.remote_addr, std::max(req.body.size(), t_request.streamed_bytes_in),
          res.body.size());
    }
  });

  // ---- routes --------------------------------------------------------------
  const std::string kId = "([A-Za-z0-9_]{1,64})";

  Route("GET", "/healthz", "/healthz", Auth::kNone, false,
        [](auto&, auto&, auto&) -> Result<Reply> { return Reply{200, {{"status", "ok"}}}; });

  Route("GET", "/readyz", "/readyz", Auth::kNone, false, [this](auto&, auto&, auto&) -> Result<Reply> {
    auto st = service->Ready();
    if (!st) {
      return Reply{503, {{"status", "unready"}, {"checks", {{"store", "failing"}}}}};
    }
    return Reply{200, {{"status", "ready"}, {"checks", {{"store", "ok"}, {"audit", "ok"}}}}};
  });

  server->Get("/metrics", [this](const httplib::Request& req, httplib::Response& res) {
    t_request.route = "/metrics";
    if (!cfg.metrics_public) {
      auto caller = service->Authenticate(req.get_header_value("Authorization"));
      if (!caller) {
        return WriteProblem(res, caller.error());
      }
      if (caller->IsSession() || !caller->is_admin) {
        return WriteProblem(res, PermissionDenied("forbidden", "metrics need an admin"));
      }
    }
    std::string text = metrics->Render();
    service->AppendIssuerMetrics(text);
    res.set_content(text, "text/plain; version=0.0.4");
  });

  Route("GET", "/.well-known/jwks.json", "/.well-known/jwks.json", Auth::kNone, false,
        [this](auto&, auto&, auto&) -> Result<Reply> { return Reply{200, service->Jwks()}; });

  Route("POST", "/v1/sessions", "/v1/sessions", Auth::kRequired, true,
        [this](auto&, auto& ctx, const Body& body) -> Result<Reply> {
          JITBROKER_ASSIGN_OR_RETURN(auto out, service->OpenSession(ctx, *body));
          return Reply{201, std::move(out)};
        });

  Route("GET", "/v1/sessions", "/v1/sessions", Auth::kRequired, false,
        [this](const httplib::Request& req, auto& ctx, auto&) -> Result<Reply> {
          SessionFilter f;
          f.state = ParamOr(req, "state");
          f.agent_id = ParamOr(req, "agent");
          f.principal_id = ParamOr(req, "principal");
          JITBROKER_ASSIGN_OR_RETURN(auto limit, IntParam(req, "limit", 100, 1, 1000));
          f.limit = static_cast<size_t>(limit);
          JITBROKER_ASSIGN_OR_RETURN(auto out, service->ListSessions(ctx, f));
          return Reply{200, std::move(out)};
        });

  Route("GET", "/v1/sessions/" + kId, "/v1/sessions/{id}", Auth::kRequired, false,
        [this](const httplib::Request& req, auto& ctx, auto&) -> Result<Reply> {
          JITBROKER_ASSIGN_OR_RETURN(auto out, service->GetSession(ctx, req.matches[1]));
          return Reply{200, std::move(out)};
        });

  Route("POST", "/v1/sessions/" + kId + "/heartbeat", "/v1/sessions/{id}/heartbeat",
        Auth::kRequired, true,
        [this](const httplib::Request& req, auto& ctx, const Body& body) -> Result<Reply> {
          JITBROKER_ASSIGN_OR_RETURN(auto out, service->Heartbeat(ctx, req.matches[1], *body));
          return Reply{200, std::move(out)};
        });

  Route("POST", "/v1/sessions/" + kId + "/complete", "/v1/sessions/{id}/complete",
        Auth::kRequired, true,
        [this](const httplib::Request& req, auto& ctx, const Body& body) -> Result<Reply> {
          JITBROKER_ASSIGN_OR_RETURN(auto out,
                                     service->EndSession(ctx, req.matches[1], *body, false));
          return Reply{200, std::move(out)};
        });

  Route("POST", "/v1/sessions/" + kId + "/revoke", "/v1/sessions/{id}/revoke", Auth::kRequired,
        true, [this](const httplib::Request& req, auto& ctx, const Body& body) -> Result<Reply> {
          JITBROKER_ASSIGN_OR_RETURN(auto out,
                                     service->EndSession(ctx, req.matches[1], *body, true));
          return Reply{200, std::move(out)};
        });

  Route("POST", "/v1/sessions/" + kId + "/grants", "/v1/sessions/{id}/grants", Auth::kRequired,
        true, [this](const httplib::Request& req, auto& ctx, const Body& body) -> Result<Reply> {
          JITBROKER_ASSIGN_OR_RETURN(auto out, service->RequestGrant(ctx, req.matches[1], *body));
          if (out.status == 403) {
            const auto& d = out.body["decision"];
            nlohmann::json p = ProblemBody(403, "Grant denied", "grant_denied",
                                           d.value("reason", std::string("denied by policy")));
            p["decision"] = d;
            p["grant_id"] = out.body["grant_id"];
            p["grant"] = out.body;
            return Reply{403, std::move(p), true};
          }
          return Reply{out.status, std::move(out.body)};
        });

  Route("GET", "/v1/grants/" + kId, "/v1/grants/{id}", Auth::kRequired, false,
        [this](const httplib::Request& req, auto& ctx, auto&) -> Result<Reply> {
          // ?wait=N long-polls a pending grant (bounded; it holds a worker).
          JITBROKER_ASSIGN_OR_RETURN(auto wait, IntParam(req, "wait", 0, 0, 60));
          JITBROKER_ASSIGN_OR_RETURN(auto out,
                                     service->GetGrant(ctx, req.matches[1], static_cast<int>(wait)));
          return Reply{200, std::move(out)};
        });

  Route("GET", "/v1/approvals", "/v1/approvals", Auth::kRequired, false,
        [this](const httplib::Request& req, auto& ctx, auto&) -> Result<Reply> {
          JITBROKER_ASSIGN_OR_RETURN(auto out, service->ListApprovals(ctx, ParamOr(req, "state")));
          return Reply{200, std::move(out)};
        });

  Route("GET", "/v1/approvals/" + kId, "/v1/approvals/{id}", Auth::kRequired, false,
        [this](const httplib::Request& req, auto& ctx, auto&) -> Result<Reply> {
          JITBROKER_ASSIGN_OR_RETURN(auto out, service->GetApproval(ctx, req.matches[1]));
          return Reply{200, std::move(out)};
        });

  Route("POST", "/v1/approvals/" + kId, "/v1/approvals/{id}", Auth::kRequired, true,
        [this](const httplib::Request& req, auto& ctx, const Body& body) -> Result<Reply> {
          JITBROKER_ASSIGN_OR_RETURN(auto out, service->DecideApproval(ctx, req.matches[1], *body));
          return Reply{200, std::move(out)};
        });

  Route("POST", "/v1/admin/revoke", "/v1/admin/revoke", Auth::kRequired, true,
        [this](auto&, auto& ctx, const Body& body) -> Result<Reply> {
          JITBROKER_ASSIGN_OR_RETURN(auto out, service->BulkRevoke(ctx, *body));
          return Reply{200, std::move(out)};
        });

  Route("DELETE", "/v1/grants/" + kId, "/v1/grants/{id}", Auth::kRequired, false,
        [this](const httplib::Request& req, auto& ctx, auto&) -> Result<Reply> {
          JITBROKER_ASSIGN_OR_RETURN(auto out, service->RevokeGrant(ctx, req.matches[1]));
          return Reply{200, std::move(out)};
        });

  // RFC 7662: form-encoded `token`.
  Route("POST", "/v1/introspect", "/v1/introspect", Auth::kRequired, false,
        [this](const httplib::Request& req, auto& ctx, auto&) -> Result<Reply> {
          const std::string ct = req.get_header_value("Content-Type");
          if (ct.rfind("application/x-www-form-urlencoded", 0) != 0) {
            Error e;
            e.code = ErrorCode::kUnsupportedMediaType;
            e.reason = "unsupported_media_type";
            e.message = "introspection takes application/x-www-form-urlencoded";
            return std::unexpected(e);
          }
          if (!req.has_param("token")) {
            return std::unexpected(InvalidArgument("missing_field", "token is required"));
          }
          JITBROKER_ASSIGN_OR_RETURN(auto out, service->Introspect(ctx, req.get_param_value("token")));
          return Reply{200, std::move(out)};
        });

  // RFC 8693 token exchange for CI (DESIGN §7): form-encoded, no broker
  // credential (the subject token is the credential), and RFC 6749 §5.2 JSON
  // errors instead of problem documents.
  // The body is read here rather than by httplib, which would cap form
  // bodies at 8 KiB and keep a parsed copy of the subject token in params.
  server->Post("/v1/token", [this](const httplib::Request& req, httplib::Response& res,
                                   const httplib::ContentReader& read_body) {
    t_request.route = "/v1/token";
    res.set_header("Cache-Control", "no-store");
    res.set_header("Pragma", "no-cache");
    service::CallContext ctx;
    ctx.request_id = t_request.request_id;
    std::string body;
    auto answer = [&]() -> Result<nlohmann::json> {
      const std::string ct = req.get_header_value("Content-Type");
      if (ct.rfind("application/x-www-form-urlencoded", 0) != 0) {
        return std::unexpected(InvalidArgument(
            "invalid_request", "the token endpoint takes application/x-www-form-urlencoded"));
      }
      if (req.target.find('?') != std::string::npos) {
        return std::unexpected(InvalidArgument(
            "invalid_request", "token request parameters belong in the body, not the URL"));
      }
      const size_t limit = std::min<size_t>(cfg.max_body_bytes, 64 * 1024);
      bool too_large = false;
      const bool read = read_body([&](const char* data, size_t n) {
        if (body.size() + n > limit) {
          too_large = true;
          return false;
        }
        body.append(data, n);
        t_request.streamed_bytes_in = body.size();
        return true;
      });
      if (too_large) {
        return std::unexpected(InvalidArgument("invalid_request", "the token request is too large"));
      }
      if (!read) {
        return std::unexpected(InvalidArgument("invalid_request", "the token request could not be read"));
      }
      JITBROKER_ASSIGN_OR_RETURN(oidc::TokenExchangeRequest tx, oidc::ParseTokenExchangeForm(body));
      return service->ExchangeToken(ctx, tx);
    }();
    SecureWipe(body.data(), body.size());
    if (answer) {
      metrics->CountTokenExchange("ok", "ok");
      WriteJson(res, 200, *answer);
      return;
    }
    if (answer.error().code == ErrorCode::kInternal) {
      error_log->error("event=internal_error request_id={} route=/v1/token error=\"{}\"",
                       ctx.request_id, answer.error().ToString());
    }
    const oidc::OAuthError oe = oidc::ToOAuthError(answer.error());
    // The reason label is precise only once the token is verified.
    const bool unverified = service::BrokerService::IsUnverifiedRejection(answer.error());
    metrics->CountTokenExchange(oe.error, unverified ? std::string_view("unverified")
                                                     : std::string_view(answer.error().reason));
    WriteJson(res, oe.status, oidc::OAuthErrorBody(oe));
    if (answer.error().retryable && answer.error().retry_after.count() > 0) {
      res.set_header("Retry-After", std::to_string(answer.error().retry_after.count()));
    }
  });

  Route("GET", "/v1/audit", "/v1/audit", Auth::kRequired, false,
        [this](const httplib::Request& req, auto& ctx, auto&) -> Result<Reply> {
          AuditFilter f;
          f.session_id = ParamOr(req, "session_id");
          f.principal_id = ParamOr(req, "principal");
          JITBROKER_ASSIGN_OR_RETURN(f.after_seq, IntParam(req, "after_seq", 0, 0, INT64_MAX));
          JITBROKER_ASSIGN_OR_RETURN(auto limit, IntParam(req, "limit", 1000, 1, 10000));
          f.limit = static_cast<size_t>(limit);
          JITBROKER_ASSIGN_OR_RETURN(auto out, service->ListAudit(ctx, f));
          return Reply{200, std::move(out)};
        });

  Route("GET", "/v1/audit/verify", "/v1/audit/verify", Auth::kRequired, false,
        [this](auto&, auto& ctx, auto&) -> Result<Reply> {
          JITBROKER_ASSIGN_OR_RETURN(auto out, service->VerifyAudit(ctx));
          return Reply{200, std::move(out)};
        });

  Route("POST", "/v1/admin/reload", "/v1/admin/reload", Auth::kRequired, true,
        [this](auto&, auto& ctx, auto&) -> Result<Reply> {
          if (ctx.caller.IsSession() || !ctx.caller.is_admin) {
            return std::unexpected(PermissionDenied("forbidden", "reloading needs an admin"));
          }
          JITBROKER_ASSIGN_OR_RETURN(std::string version, reload());
          return Reply{200, {{"policy_version", version}}};
        });
}

Result<int> HttpServer::Bind() {
  Impl& impl = *impl_;
  int port = impl.cfg.port;
  if (port == 0) {
    port = impl.server->bind_to_any_port(impl.cfg.host);
    if (port < 0) {
      return std::unexpected(Unavailable("bind_failed", "cannot listen on " + impl.cfg.host));
    }
  } else if (!impl.server->bind_to_port(impl.cfg.host, port)) {
    return std::unexpected(Unavailable(
        "bind_failed", "cannot listen on " + impl.cfg.host + ":" + std::to_string(port)));
  }
  return port;
}

void HttpServer::Serve() { impl_->server->listen_after_bind(); }

void HttpServer::Stop() {
  if (impl_ && impl_->server) {
    impl_->server->stop();
  }
}

bool HttpServer::IsRunning() const { return impl_->server->is_running(); }

}  // namespace jitbroker::http
