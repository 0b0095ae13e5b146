#include "broker/http/console.h"

#include <algorithm>
#include <charconv>
#include <chrono>
#include <deque>
#include <map>
#include <mutex>
#include <optional>
#include <set>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "broker/common/log.h"
#include "broker/common/rate_limit.h"
#include "broker/common/text.h"
#include "broker/common/time_util.h"
#include "broker/crypto/crypto.h"
#include "broker/http/console_assets.h"
#include "broker/http/device_login.h"
#include "broker/http/wire.h"
#include "broker/net/url.h"
#include "jitbroker/error.h"

namespace jitbroker::http {

namespace {

using nlohmann::json;

constexpr size_t kMaxFormBytes = 16 * 1024;
constexpr std::string_view kSessionCookie = "__Host-jitbroker-console";
constexpr std::string_view kLoginCookie = "__Host-jitbroker-login";
constexpr size_t kMaxCookieValue = 128;
constexpr size_t kMaxListed = 100;  // sessions and approvals shown on one page

// ---------------------------------------------------------------------------
// HTML

std::string Esc(std::string_view s) { return text::HtmlEscape(s); }

// A JSON value as the page shows it: strings as themselves, the rest as
// compact JSON (escaped either way).
std::string Text(const json& j) {
  if (j.is_null()) {
    return "";
  }
  if (j.is_string()) {
    return Esc(j.get_ref<const std::string&>());
  }
  return Esc(j.dump(-1, ' ', false, json::error_handler_t::replace));
}

std::string Str(const json& j, std::string_view key) {
  if (!j.is_object()) {
    return "";
  }
  auto it = j.find(key);
  return it != j.end() && it->is_string() ? it->get<std::string>() : std::string();
}

std::string Pretty(const json& j) {
  return Esc(j.dump(2, ' ', false, json::error_handler_t::replace));
}

// "3m 20s", "2h 5m", "expired".
std::string Duration(int64_t seconds) {
  if (seconds <= 0) {
    return "0s";
  }
  if (seconds < 60) {
    return std::to_string(seconds) + "s";
  }
  if (seconds < 3600) {
    return std::to_string(seconds / 60) + "m " + std::to_string(seconds % 60) + "s";
  }
  return std::to_string(seconds / 3600) + "h " + std::to_string(seconds / 60 % 60) + "m";
}

int64_t SecondsUntil(const json& rfc3339, TimePoint now) {
  if (!rfc3339.is_string()) {
    return 0;
  }
  Result<TimePoint> t = ParseRfc3339(rfc3339.get_ref<const std::string&>());
  if (!t) {
    return 0;
  }
  return std::chrono::duration_cast<std::chrono::seconds>(*t - now).count();
}

std::string Row(std::string_view label, const std::string& html_value) {
  return "<dt>" + std::string(label) + "</dt><dd>" + html_value + "</dd>";
}

// ---------------------------------------------------------------------------
// Cookies and forms

std::optional<std::string> CookieValue(const Request& req, std::string_view name) {
  std::string_view header = req.Header("Cookie");
  while (!header.empty()) {
    const size_t semi = header.find(';');
    std::string_view pair = header.substr(0, semi);
    header = semi == std::string_view::npos ? std::string_view() : header.substr(semi + 1);
    while (!pair.empty() && pair.front() == ' ') {
      pair.remove_prefix(1);
    }
    const size_t eq = pair.find('=');
    if (eq != std::string_view::npos && pair.substr(0, eq) == name) {
      std::string_view v = pair.substr(eq + 1);
      if (v.size() > kMaxCookieValue) {
        return std::nullopt;
      }
      return std::string(v);
    }
  }
  return std::nullopt;
}

std::string SetCookie(std::string_view name, std::string_view value, int64_t max_age,
                      std::string_view same_site) {
  return std::string(name) + "=" + std::string(value) +
         "; Path=/; Max-Age=" + std::to_string(max_age) +
         "; Secure; HttpOnly; SameSite=" + std::string(same_site);
}

using Form = std::map<std::string, std::string, std::less<>>;

Result<Form> ParseFormBody(const Request& req) {
  if (req.MediaType() != "application/x-www-form-urlencoded") {
    return std::unexpected(UnsupportedMediaType(
        "unsupported_media_type", "console forms are application/x-www-form-urlencoded"));
  }
  auto pairs = net::ParseForm(req.body);
  if (!pairs) {
    return std::unexpected(InvalidArgument("invalid_form", pairs.error().message));
  }
  Form form;
  for (auto& [k, v] : *pairs) {
    if (!form.emplace(k, std::move(v)).second) {
      return std::unexpected(
          InvalidArgument("invalid_form", "form field " + log::Quoted(k, 64) + " is repeated"));
    }
  }
  return form;
}

Result<Form> ParseQuery(const Request& req) {
  auto pairs = net::ParseForm(req.query());
  if (!pairs) {
    return std::unexpected(InvalidArgument("invalid_query", pairs.error().message));
  }
  Form form;
  for (auto& [k, v] : *pairs) {
    if (!form.emplace(k, std::move(v)).second) {
      return std::unexpected(InvalidArgument(
          "invalid_query", "query parameter " + log::Quoted(k, 64) + " is given more than once"));
    }
  }
  return form;
}

std::string Field(const Form& f, std::string_view key) {
  auto it = f.find(key);
  return it == f.end() ? std::string() : it->second;
}

bool IsIdSegment(std::string_view s) {
  return !s.empty() && s.size() <= 64 && std::all_of(s.begin(), s.end(), [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_';
  });
}

// A console page the browser may come back to after signing in: a path
// under /ui/ of plain characters, so it can never send the browser elsewhere
// ("//host", "/ui/../", "\\").
bool IsLocalReturnPath(std::string_view p) {
  if (!p.starts_with("/ui/") || p.size() > 256 || p.find("..") != std::string_view::npos ||
      p.find("//") != std::string_view::npos) {
    return false;
  }
  return std::all_of(p.begin(), p.end(), [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '/' ||
           c == '_' || c == '-' || c == '?' || c == '=' || c == '&' || c == '.';
  });
}

// ---------------------------------------------------------------------------
// Console sessions

struct ConsoleSession {
  std::string principal_id;
  std::string display;  // the email, else the principal id
  std::string csrf;
  TimePoint expires_at;
  // The ID token of the sign-in, for `jitctl login` (handed over only when
  // the person approves a device code in this session).
  std::shared_ptr<const SecretValue> id_token;
  TimePoint id_token_expires_at;
};

class ConsoleSessions {
 public:
  ConsoleSessions(const Clock* clock, Seconds ttl, size_t max)
      : clock_(clock), ttl_(ttl), max_(max) {}

  // A new session; returns the cookie value.
  std::string Open(const oidc::HumanIdentity& id) {
    std::string cookie = crypto::Base64UrlEncode(crypto::RandomBytes(32));
    ConsoleSession s;
    s.principal_id = id.principal_id;
    s.display = id.email.empty() ? id.principal_id : id.email;
    s.id_token = std::make_shared<const SecretValue>(std::string(id.id_token.Reveal()));
    s.id_token_expires_at = id.expires_at;
    s.csrf = crypto::Base64UrlEncode(crypto::RandomBytes(32));
    s.expires_at = clock_->Now() + ttl_;
    std::string key = crypto::Sha256Hex(cookie);
    std::lock_guard lock(mu_);
    Prune();
    while (sessions_.size() >= max_ && !order_.empty()) {
      sessions_.erase(order_.front());
      order_.pop_front();
    }
    order_.push_back(key);
    sessions_[key] = std::move(s);
    return cookie;
  }

  std::optional<ConsoleSession> Find(std::string_view cookie) {
    if (cookie.empty()) {
      return std::nullopt;
    }
    const std::string key = crypto::Sha256Hex(cookie);
    std::lock_guard lock(mu_);
    auto it = sessions_.find(key);
    if (it == sessions_.end()) {
      return std::nullopt;
    }
    if (clock_->Now() >= it->second.expires_at) {
      sessions_.erase(it);
      return std::nullopt;
    }
    return it->second;
  }

  void Close(std::string_view cookie) {
    const std::string key = crypto::Sha256Hex(cookie);
    std::lock_guard lock(mu_);
    sessions_.erase(key);
  }

  size_t size() const {
    std::lock_guard lock(mu_);
    return sessions_.size();
  }

 private:
  void Prune() {
    const TimePoint now = clock_->Now();
    while (!order_.empty()) {
      auto it = sessions_.find(order_.front());
      if (it != sessions_.end() && it->second.expires_at > now) {
        break;
      }
      if (it != sessions_.end()) {
        sessions_.erase(it);
      }
      order_.pop_front();
    }
  }

  const Clock* clock_;
  const Seconds ttl_;
  const size_t max_;
  mutable std::mutex mu_;
  std::map<std::string, ConsoleSession> sessions_;  // by SHA-256 of the cookie; guarded by mu_
  std::deque<std::string> order_;                   // keys, oldest first; guarded by mu_
};

}  // namespace

// ---------------------------------------------------------------------------

struct Console::Impl {
  service::BrokerService* service = nullptr;
  mutable std::optional<wire::JsonApi> api;  // stateless; its calls are not const
  oidc::HumanLogin* login = nullptr;
  ConsoleOptions options;
  std::unique_ptr<ConsoleSessions> sessions;
  std::unique_ptr<KeyedRateLimiter> login_limiter;
  std::unique_ptr<DeviceLogins> devices;
  // Wrong user codes a signed-in person may type (per principal).
  std::unique_ptr<KeyedRateLimiter> code_attempts;
  std::string origin;  // scheme://authority of humans.redirect_url
  std::shared_ptr<spdlog::logger> log = log::Get("console");

  // One signed-in request: who, and the context the service sees.
  struct Signed {
    ConsoleSession session;
    service::CallContext ctx;
  };

  // ---- responses -----------------------------------------------------------

  static void SecurityHeaders(Response& res) {
    res.SetHeader("Content-Security-Policy",
                  "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
                  "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; "
                  "base-uri 'none'");
    res.SetHeader("X-Frame-Options", "DENY");
    res.SetHeader("X-Content-Type-Options", "nosniff");
    // same-origin, not no-referrer: under no-referrer browsers send "Origin: null"
    // with form posts, and CheckForm needs the real Origin.
    res.SetHeader("Referrer-Policy", "same-origin");
    res.SetHeader("Cache-Control", "no-store");
    res.SetHeader("Cross-Origin-Opener-Policy", "same-origin");
  }

  std::string Page(std::string_view title, const Signed* who, std::string_view nav,
                   const std::string& body, std::string_view main_attrs = {}) const {
    std::string html =
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
        "<title>" +
        Esc(title) +
        " · jitbroker</title><link rel=\"stylesheet\" href=\"/ui/static/console.css\">"
        "<script src=\"/ui/static/console.js\" defer></script></head><body>"
        "<a class=\"skip\" href=\"#main\">Skip to content</a><header><span "
        "class=\"brand\">jitbroker</span>";
    if (who != nullptr) {
      auto link = [&](std::string_view href, std::string_view id, std::string_view label) {
        html += "<a href=\"" + std::string(href) + "\"" +
                (nav == id ? " aria-current=\"page\"" : "") + ">" + std::string(label) + "</a>";
      };
      html += "<nav aria-label=\"Console\">";
      link("/ui/approvals", "approvals", "Approvals");
      link("/ui/sessions", "sessions", "Live sessions");
      link("/ui/sessions/new", "new", "New session");
      if (who->ctx.caller.is_admin) {
        link("/ui/audit", "audit", "Audit");
      }
      html +=
          "</nav><form class=\"whoami\" method=\"post\" action=\"/ui/logout\">"
          "<span>Signed in as <strong id=\"principal\">" +
          Esc(who->session.display) + "</strong> (" + Esc(who->session.principal_id) + ")</span>" +
          CsrfField(*who) + "<button type=\"submit\">Sign out</button></form>";
    }
    html += "</header><main id=\"main\"" + std::string(main_attrs) + "><h1>" + Esc(title) +
            "</h1>" + body + "</main></body></html>\n";
    return html;
  }

  static std::string CsrfField(const Signed& who) {
    return "<input type=\"hidden\" name=\"csrf\" value=\"" + Esc(who.session.csrf) + "\">";
  }

  void WriteHtml(Response& res, int status, std::string html) const {
    res.status = status;
    res.content_type = "text/html; charset=utf-8";
    res.body = std::move(html);
    SecurityHeaders(res);
  }

  void Redirect(Response& res, const std::string& location) const {
    res.status = 303;
    res.SetHeader("Location", location);
    res.content_type = "text/html; charset=utf-8";
    res.body = "<!DOCTYPE html><a href=\"" + Esc(location) + "\">Continue</a>\n";
    SecurityHeaders(res);
  }

  void ErrorPage(Response& res, const Error& e, const Signed* who) const {
    const ErrorCodeInfo& info = InfoFor(e.code);
    std::string body = "<p class=\"error\" role=\"alert\">" + Esc(e.message) +
                       "</p><p>Code: <code id=\"error-code\">" + Esc(e.Reason()) +
                       "</code></p><p><a href=\"/ui/\">Back to the console</a></p>";
    WriteHtml(res, info.http_status, Page(std::string(info.title), who, "", body));
    if (e.retryable && e.retry_after.count() > 0) {
      res.SetHeader("Retry-After", std::to_string(e.retry_after.count()));
    }
  }

  // ---- who is asking -------------------------------------------------------

  std::optional<Signed> SignedIn(const Request& req) const {
    std::optional<std::string> cookie = CookieValue(req, kSessionCookie);
    if (!cookie) {
      return std::nullopt;
    }
    std::optional<ConsoleSession> s = sessions->Find(*cookie);
    if (!s) {
      return std::nullopt;
    }
    std::shared_ptr<const Policy> policy = service->policy();
    // A principal removed from the policy is signed out by the reload.
    Result<authn::Caller> caller =
        authn::PrincipalCaller(policy->FindPrincipal(s->principal_id), policy);
    if (!caller) {
      sessions->Close(*cookie);
      return std::nullopt;
    }
    Signed out;
    out.session = std::move(*s);
    out.ctx.request_id = req.request_id;
    out.ctx.client_request_id = req.client_request_id;
    out.ctx.source_address = req.remote_addr;
    out.ctx.via = "console";  // audited with decisions (approval.via)
    out.ctx.caller = std::move(*caller);
    return out;
  }

  // A state-changing form: same origin, and the session's CSRF token.
  Status CheckForm(const Request& req, const Signed& who, const Form& form) const {
    std::string_view site = req.Header("Sec-Fetch-Site");
    if (!site.empty() && site != "same-origin") {
      return std::unexpected(PermissionDenied("csrf", "this form was not sent by the console"));
    }
    std::string_view origin_header = req.Header("Origin");
    if (!origin_header.empty() && origin_header != origin) {
      return std::unexpected(PermissionDenied("csrf", "this form was not sent by the console"));
    }
    if (!crypto::ConstantTimeEquals(Field(form, "csrf"), who.session.csrf)) {
      return std::unexpected(
          PermissionDenied("csrf",
                           "this form is stale or was not sent by the console; reload "
                           "the page and try again"));
    }
    return OkStatus();
  }

  // ---- routes ----------------------------------------------------------------

  void Handle(Request& req, Response& res) {
    const std::string path(req.path());
    if (path == "/ui/static/console.css" || path == "/ui/static/console.js") {
      const bool css = path.ends_with(".css");
      res.status = 200;
      res.content_type = css ? "text/css; charset=utf-8" : "text/javascript; charset=utf-8";
      res.body = css ? std::string(kConsoleCss) : std::string(kConsoleJs);
      SecurityHeaders(res);
      res.SetHeader("Cache-Control", "no-cache");
      return;
    }
    if (path == "/v1/login/device") {
      return DeviceStart(req, res);
    }
    if (path == "/v1/login/token") {
      return DevicePoll(req, res);
    }
    if (path == "/ui/login") {
      return Login(req, res);
    }
    if (path == "/ui/callback") {
      return Callback(req, res);
    }
    if (path == "/ui/signed-out") {
      return WriteHtml(res, 200,
                       Page("Signed out", nullptr, "",
                            "<p>You are signed out of the console.</p><p><a "
                            "href=\"/ui/login\">Sign in again</a></p>"));
    }
    std::optional<Signed> who = SignedIn(req);
    if (!who) {
      if (req.method == "GET") {
        std::string target(req.target);
        return Redirect(res, "/ui/login" + (IsLocalReturnPath(target) && target != "/ui/"
                                                ? "?return_to=" + net::PercentEncode(target)
                                                : std::string()));
      }
      return ErrorPage(res,
                       Unauthenticated("not_signed_in",
                                       "you are not signed in (or your sign-in expired); sign in "
                                       "and try again"),
                       nullptr);
    }
    Form form;
    if (req.method == "POST") {
      Result<Form> parsed = ParseFormBody(req);
      if (!parsed) {
        return ErrorPage(res, parsed.error(), &*who);
      }
      form = std::move(*parsed);
      if (Status ok = CheckForm(req, *who, form); !ok) {
        return ErrorPage(res, ok.error(), &*who);
      }
    }
    std::vector<std::string_view> segs;
    for (std::string_view rest = std::string_view(path).substr(4); !rest.empty();) {
      const size_t slash = rest.find('/');
      segs.push_back(rest.substr(0, slash));
      rest = slash == std::string_view::npos ? std::string_view() : rest.substr(slash + 1);
    }
    const bool get = req.method == "GET";
    if (segs.empty()) {
      return get ? Redirect(res, "/ui/approvals") : NotFound(res, &*who);
    }
    if (segs[0] == "logout" && segs.size() == 1 && !get) {
      if (auto cookie = CookieValue(req, kSessionCookie)) {
        sessions->Close(*cookie);
      }
      log->info("event=console_sign_out principal={}", who->session.principal_id);
      Redirect(res, "/ui/signed-out");
      res.headers.emplace_back("Set-Cookie", SetCookie(kSessionCookie, "", 0, "Strict"));
      return;
    }
    if (segs[0] == "approvals") {
      if (segs.size() == 1 && get) {
        return Approvals(req, res, *who);
      }
      if (segs.size() == 2 && segs[1] == "state" && get) {
        return ApprovalState(res, *who);
      }
      if (segs.size() == 2 && IsIdSegment(segs[1])) {
        return get ? Approval(res, *who, std::string(segs[1]))
                   : Decide(res, *who, std::string(segs[1]), form);
      }
    }
    if (segs[0] == "sessions") {
      if (segs.size() == 1 && get) {
        return Sessions(res, *who);
      }
      if (segs.size() == 2 && segs[1] == "new") {
        return get ? NewSessionPage(res, *who) : OpenSession(res, *who, form);
      }
      if (segs.size() == 2 && IsIdSegment(segs[1]) && get) {
        return Session(res, *who, std::string(segs[1]));
      }
      if (segs.size() == 3 && IsIdSegment(segs[1]) && segs[2] == "revoke" && !get) {
        return RevokeSession(res, *who, std::string(segs[1]), form);
      }
    }
    if (segs[0] == "grants" && segs.size() == 3 && IsIdSegment(segs[1]) && segs[2] == "revoke" &&
        !get) {
      return RevokeGrant(res, *who, std::string(segs[1]));
    }
    if (segs[0] == "revoke" && segs.size() == 1 && !get) {
      return BulkRevoke(res, *who, form);
    }
    if (segs[0] == "audit" && segs.size() == 1 && get) {
      return Audit(req, res, *who);
    }
    if (segs[0] == "device" && segs.size() == 1) {
      return get ? DevicePage(res, *who) : DeviceAnswer(res, *who, form);
    }
    NotFound(res, &*who);
  }

  void NotFound(Response& res, const Signed* who) const {
    ErrorPage(res, jitbroker::NotFound("no_route", "there is no such console page"), who);
  }

  void Login(const Request& req, Response& res) {
    if (req.method != "GET") {
      return NotFound(res, nullptr);
    }
    KeyedRateLimiter::Outcome admitted = login_limiter->Acquire(req.remote_addr);
    if (!admitted.allowed) {
      Error e = ResourceExhausted("rate_limited", "too many sign-ins from this address; wait");
      e.retryable = true;
      e.retry_after = admitted.retry_after;
      return ErrorPage(res, e, nullptr);
    }
    Result<Form> q = ParseQuery(req);
    if (!q) {
      return ErrorPage(res, q.error(), nullptr);
    }
    std::string return_to = Field(*q, "return_to");
    if (!IsLocalReturnPath(return_to)) {
      return_to = "/ui/approvals";
    }
    Result<oidc::LoginStart> start = login->Begin(return_to);
    if (!start) {
      log->warn("event=console_sign_in_failed stage=begin error={}",
                log::Quoted(start.error().ToString()));
      return ErrorPage(res, start.error(), nullptr);
    }
    Redirect(res, start->authorization_url);
    res.status = 302;
    // Lax: the provider's redirect back is a cross-site navigation, which
    // carries Lax cookies and not Strict ones.
    res.headers.emplace_back("Set-Cookie",
                             SetCookie(kLoginCookie, start->browser_binding.Reveal(), 600, "Lax"));
  }

  void Callback(const Request& req, Response& res) {
    if (req.method != "GET") {
      return NotFound(res, nullptr);
    }
    Result<Form> q = ParseQuery(req);
    if (!q) {
      return ErrorPage(res, q.error(), nullptr);
    }
    std::string binding = CookieValue(req, kLoginCookie).value_or("");
    Result<oidc::CompletedLogin> done = login->Complete(
        Field(*q, "state"), Field(*q, "code"), Field(*q, "error"), binding, *service->policy());
    res.headers.emplace_back("Set-Cookie", SetCookie(kLoginCookie, "", 0, "Lax"));
    if (!done) {
      log->warn("event=console_sign_in_failed stage=callback remote={} error={}",
                log::Quoted(req.remote_addr, 64), log::Quoted(done.error().ToString()));
      return ErrorPage(res, done.error(), nullptr);
    }
    const oidc::HumanIdentity& id = done->identity;
    std::string cookie = sessions->Open(id);
    log->info("event=console_sign_in principal={} remote={}", id.principal_id,
              log::Quoted(req.remote_addr, 64));
    // A page, not a redirect: the navigation here came from the provider's
    // site, and a redirect would carry that along, so the browser would not
    // send the new SameSite=Strict cookie with it. The page's own
    // navigation is same-site.
    const std::string target = Esc(done->return_to);
    WriteHtml(res, 200,
              "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
              "<meta http-equiv=\"refresh\" content=\"0;url=" +
                  target +
                  "\"><title>Signed in · jitbroker</title></head><body><p>Signed in. <a "
                  "href=\"" +
                  target + "\">Continue to the console</a></p></body></html>\n");
    res.headers.emplace_back(
        "Set-Cookie", SetCookie(kSessionCookie, cookie, options.session_ttl_seconds, "Strict"));
  }

  // ---- approvals -------------------------------------------------------------

  std::string ApprovalCard(const json& a, const Signed& who, TimePoint now, bool with_form) const {
    const std::string id = Str(a, "approval_id");
    const json& req = a.value("request", json::object());
    const json& task = a.value("task", json::object());
    const json& agent = a.value("agent", json::object());
    const json& decision = a.value("decision", json::object());
    const int64_t left = SecondsUntil(a.value("expires_at", json()), now);
    std::string h = "<section class=\"approval\" id=\"" + Esc(id) + "\" aria-labelledby=\"h-" +
                    Esc(id) + "\"><h2 id=\"h-" + Esc(id) + "\"><span class=\"tier tier-" +
                    Esc(Str(a, "tier")) + "\">" + Esc(Str(a, "tier")) + "</span> " +
                    Text(req.value("tool", json())) + " · " + Text(req.value("operation", json())) +
                    " on " + Text(req.value("resource", json())) + "</h2><dl>";
    h += Row("Agent", Text(agent.value("id", json())) + " (session <a href=\"/ui/sessions/" +
                          Esc(Str(agent, "session_id")) + "\">" + Esc(Str(agent, "session_id")) +
                          "</a>)");
    h +=
        Row("Task", Text(task.value("id", json())) + (Str(task, "description").empty()
                                                          ? std::string()
                                                          : " — " + Esc(Str(task, "description"))));
    h += Row("Delegated by", Text(a.value("human_principal", json())));
    h += Row("Tool", Text(req.value("tool", json())));
    h += Row("Operation", Text(req.value("operation", json())));
    h += Row("Resource", "<code>" + Text(req.value("resource", json())) + "</code>");
    h += Row("Issuer", Text(req.value("issuer", json())));
    h += Row("Parameters", "<pre>" + Pretty(req.value("parameters", json::object())) + "</pre>");
    h += Row("Requested scope",
             "<pre class=\"requested\">" + Pretty(req.value("scope", json::object())) + "</pre>");
    h += Row("Task scope",
             "<pre class=\"granted\">" + Pretty(task.value("scope", json::object())) + "</pre>");
    if (req.contains("ttl_seconds") && req["ttl_seconds"].is_number()) {
      h += Row("Credential lifetime asked", Text(req["ttl_seconds"]) + " s");
    }
    if (req.contains("justification")) {
      h += Row("Justification", Text(req["justification"]));
    }
    h += Row("Tier and why", "<strong>" + Esc(Str(a, "tier")) + "</strong>: " +
                                 Text(decision.value("reason", json())) + " <small>(rule " +
                                 Text(decision.value("matched_rule", json())) + ", policy " +
                                 Text(decision.value("policy_version", json())) + ")</small>");
    if (a.contains("approvers")) {
      h +=
          Row("Who may approve",
              Text(a["approvers"]) +
                  (a.value("four_eyes", true) ? " · four eyes: not the delegating principal" : ""));
    }
    h += Row("Request digest",
             "<code class=\"digest\">" + Esc(Str(a, "request_digest")) + "</code>");
    h += Row("Time left", "<span class=\"countdown\" data-expires=\"" + Esc(Str(a, "expires_at")) +
                              "\">" + Duration(left) + "</span> (until " +
                              Esc(Str(a, "expires_at")) + ")");
    h += "</dl>";
    if (a.contains("decided")) {
      const json& d = a["decided"];
      h += "<p class=\"decided\">" + Text(d.value("decision", json())) + " by " +
           Text(d.value("approver", json())) + " at " + Text(d.value("decided_at", json())) +
           (Str(d, "comment").empty() ? std::string() : ": " + Esc(Str(d, "comment"))) + "</p>";
    } else if (with_form) {
      h += "<form class=\"decide\" method=\"post\" action=\"/ui/approvals/" + Esc(id) + "\">" +
           CsrfField(who) + "<input type=\"hidden\" name=\"request_digest\" value=\"" +
           Esc(Str(a, "request_digest")) + "\"><label for=\"comment-" + Esc(id) +
           "\">Comment (optional)</label><textarea id=\"comment-" + Esc(id) +
           "\" name=\"comment\" maxlength=\"1024\" rows=\"2\"></textarea><div "
           "class=\"buttons\"><button type=\"submit\" name=\"decision\" value=\"approve\" "
           "class=\"approve\">Approve</button><button type=\"submit\" name=\"decision\" "
           "value=\"deny\" class=\"deny\">Deny</button></div></form>";
    }
    h += "</section>";
    return h;
  }

  Result<json> PendingApprovals(const Signed& who) const {
    service::ApprovalListFilter filter;
    filter.state = "pending";
    filter.limit = static_cast<int64_t>(kMaxListed);
    return api->ListApprovals(who.ctx, filter);
  }

  void Approvals(const Request& req, Response& res, const Signed& who) {
    Result<json> page = PendingApprovals(who);
    if (!page) {
      return ErrorPage(res, page.error(), &who);
    }
    Result<Form> q = ParseQuery(req);
    const TimePoint now = options.clock->Now();
    std::string body;
    if (q) {
      const std::string done = Field(*q, "done");
      const std::string id = Field(*q, "id");
      if ((done == "approved" || done == "denied") && IsIdSegment(id)) {
        body += "<p class=\"notice\" role=\"status\" id=\"notice\">Approval " + Esc(id) + " " +
                done + ".</p>";
      }
    }
    std::string ids;
    const json& list = (*page)["approvals"];
    if (list.empty()) {
      body += "<p id=\"empty\">Nothing is waiting for your decision.</p>";
    }
    for (const json& a : list) {
      ids += (ids.empty() ? "" : " ") + Str(a, "approval_id");
      body += ApprovalCard(a, who, now, true);
    }
    if (!(*page)["next_cursor"].is_null()) {
      body += "<p>More are pending than this page shows; decide these first.</p>";
    }
    body += "<p class=\"live\" role=\"status\" aria-live=\"polite\" id=\"live\"></p>";
    WriteHtml(res, 200,
              Page("Pending approvals", &who, "approvals", body,
                   " data-poll=\"/ui/approvals/state\" data-ids=\"" + Esc(ids) + "\""));
  }

  // For the page's script: the ids now pending, to notice a change.
  void ApprovalState(Response& res, const Signed& who) {
    Result<json> page = PendingApprovals(who);
    if (!page) {
      return ErrorPage(res, page.error(), &who);
    }
    std::string ids;
    for (const json& a : (*page)["approvals"]) {
      ids += (ids.empty() ? "" : " ") + Str(a, "approval_id");
    }
    res.status = 200;
    res.content_type = "application/json";
    res.body = json{{"ids", ids}}.dump();
    SecurityHeaders(res);
  }

  void Approval(Response& res, const Signed& who, const std::string& id) {
    Result<json> a = api->GetApproval(who.ctx, id);
    if (!a) {
      return ErrorPage(res, a.error(), &who);
    }
    WriteHtml(res, 200,
              Page("Approval " + id, &who, "approvals",
                   ApprovalCard(*a, who, options.clock->Now(), Str(*a, "state") == "pending")));
  }

  void Decide(Response& res, const Signed& who, const std::string& id, const Form& form) {
    const std::string decision = Field(form, "decision");
    json body = {{"decision", decision}, {"request_digest", Field(form, "request_digest")}};
    if (const std::string comment = Field(form, "comment"); !comment.empty()) {
      body["comment"] = comment;
    }
    Result<json> out = api->DecideApproval(who.ctx, id, body);
    if (!out) {
      return ErrorPage(res, out.error(), &who);
    }
    Redirect(res, "/ui/approvals?done=" +
                      std::string(decision == "approve" ? "approved" : "denied") + "&id=" + id);
  }

  // ---- sessions --------------------------------------------------------------

  static std::string GrantRows(const json& grants, const Signed& who, TimePoint now) {
    if (grants.empty()) {
      return "<p>No grants.</p>";
    }
    std::string h =
        "<table class=\"grants\"><caption>Grants</caption><thead><tr><th scope=\"col\">Grant</th>"
        "<th scope=\"col\">State</th><th scope=\"col\">Tier</th><th scope=\"col\">Issuer</th><th "
        "scope=\"col\">Tool · resource</th><th scope=\"col\">Expires</th><th "
        "scope=\"col\">Action</th></tr></thead><tbody>";
    for (const json& g : grants) {
      const std::string state = Str(g, "state");
      const std::string id = Str(g, "grant_id");
      const int64_t left = SecondsUntil(g.value("expires_at", json()), now);
      h += "<tr id=\"" + Esc(id) + "\"><td><code>" + Esc(id) + "</code></td><td class=\"state-" +
           Esc(state) + "\">" + Esc(state) + "</td><td>" + Esc(Str(g, "tier")) + "</td><td>" +
           Esc(Str(g, "issuer")) + "</td><td>" + Esc(Str(g, "tool")) + " · <code>" +
           Esc(Str(g, "resource")) + "</code></td><td>" +
           (Str(g, "expires_at").empty()
                ? std::string("—")
                : Esc(Str(g, "expires_at")) + (left > 0 ? " (" + Duration(left) + ")" : "")) +
           "</td><td>";
      if (state == "active" || state == "pending" || state == "approved") {
        h += "<form method=\"post\" action=\"/ui/grants/" + Esc(id) + "/revoke\">" +
             CsrfField(who) + "<button type=\"submit\" class=\"deny\">Revoke grant</button></form>";
      }
      h += "</td></tr>";
    }
    return h + "</tbody></table>";
  }

  std::string SessionCard(const json& s, const Signed& who, TimePoint now, bool detail) const {
    const std::string id = Str(s, "session_id");
    const json& task = s.value("task", json::object());
    const json& agent = s.value("agent", json::object());
    const int64_t age = -SecondsUntil(s.value("created_at", json()), now);
    const int64_t deadline = SecondsUntil(s.value("heartbeat_deadline", json()), now);
    std::string h = "<section class=\"session\" id=\"" + Esc(id) + "\" aria-labelledby=\"h-" +
                    Esc(id) + "\"><h2 id=\"h-" + Esc(id) + "\"><a href=\"/ui/sessions/" + Esc(id) +
                    "\">" + Esc(Str(agent, "id")) + "</a> · " + Esc(Str(task, "id")) +
                    " <span class=\"state-" + Esc(Str(s, "state")) + "\">" + Esc(Str(s, "state")) +
                    "</span></h2><dl>";
    h += Row("Session", "<code>" + Esc(id) + "</code>");
    h += Row("Agent", Esc(Str(agent, "id")));
    h += Row("Task", Esc(Str(task, "id")) + (Str(task, "description").empty()
                                                 ? std::string()
                                                 : " — " + Esc(Str(task, "description"))));
    h += Row("Principal", Esc(Str(s, "principal")));
    h += Row("Age", Duration(age));
    const int64_t interval = s.value("heartbeat_seconds", int64_t{0});
    const int64_t since_beat = interval * options.stall_after_missed - deadline;
    // Never beaten: the deadline is still the one set at opening.
    const Result<TimePoint> opened_at = ParseRfc3339(Str(s, "created_at"));
    const Result<TimePoint> deadline_at = ParseRfc3339(Str(s, "heartbeat_deadline"));
    const bool never = opened_at && deadline_at &&
                       *deadline_at - *opened_at == Seconds(interval * options.stall_after_missed);
    h += Row(
        "Heartbeat",
        "last " + (never ? std::string("none since opened") : Duration(since_beat) + " ago") +
            "; every " + std::to_string(interval) + " s; stalls in " + Duration(deadline) +
            (Str(s, "last_progress").empty() ? std::string()
                                             : "; last progress: " + Esc(Str(s, "last_progress"))));
    h += Row("Expires", Esc(Str(s, "expires_at")));
    if (const json& budget = s.value("budget", json::object());
        budget.is_object() && budget.contains("limits") && !budget["limits"].empty()) {
      // "grants 3 of 10 · live_credentials 1 of 2 · …": each limit with its use.
      const json& limits = budget["limits"];
      const json& used = budget.value("used", json::object());
      std::string line;
      auto add = [&](const std::string& label, const json& use, const json& limit) {
        line += (line.empty() ? "" : " · ") + Esc(label) + " " +
                (use.is_number() ? Text(use) + " of " : std::string()) + Text(limit);
      };
      for (const auto& [name, limit] : limits.items()) {
        const std::string key = name.starts_with("max_") ? name.substr(4) : name;
        const json use = used.value(key, json());
        if (limit.is_object()) {  // grants_per_tier: {tier: N}
          for (const auto& [tier, n] : limit.items()) {
            add(key + "." + tier, use.is_object() ? use.value(tier, json(0)) : json(), n);
          }
        } else {
          add(key, use, limit);
        }
      }
      h += Row("Budget", "<span class=\"budget\">" + line + "</span>");
    }
    if (detail) {
      const json& usage = s.value("scope_usage", json::object());
      h +=
          Row("Scope granted", "<pre>" + Pretty(usage.value("granted", json::object())) + "</pre>");
      h += Row("Scope used", "<pre>" + Pretty(usage.value("used", json::object())) + "</pre>");
      const json& grants = s.value("grants", json::array());
      size_t denied = 0;
      size_t anomalies = 0;
      for (const json& g : grants) {
        if (Str(g, "state") == "denied") {
          ++denied;
        }
        if (g.contains("decision") && Str(g["decision"], "code") == "anomaly_detected") {
          ++anomalies;
        }
      }
      h += Row("Anomaly signals", std::to_string(denied) + " denied request(s), " +
                                      std::to_string(anomalies) + " refused as anomalous");
      h += "</dl>" + GrantRows(grants, who, now);
    } else {
      h += "</dl>";
    }
    if (Str(s, "state") == "active") {
      h += "<form class=\"revoke\" method=\"post\" action=\"/ui/sessions/" + Esc(id) +
           "/revoke\">" + CsrfField(who) + "<label for=\"reason-" + Esc(id) +
           "\">Reason</label><input id=\"reason-" + Esc(id) +
           "\" name=\"reason\" required maxlength=\"1024\"><button type=\"submit\" "
           "class=\"deny\">Revoke session</button></form>";
      if (who.ctx.caller.is_admin) {
        for (const auto& [key, label, value] :
             {std::tuple<const char*, const char*, std::string>{"agent", "everything of agent ",
                                                                Str(agent, "id")},
              {"principal", "everything of principal ", Str(s, "principal")}}) {
          h += "<form class=\"revoke\" method=\"post\" action=\"/ui/revoke\">" + CsrfField(who) +
               "<input type=\"hidden\" name=\"" + std::string(key) + "\" value=\"" + Esc(value) +
               "\"><label for=\"bulk-" + std::string(key) + "-" + Esc(id) +
               "\">Reason</label><input id=\"bulk-" + std::string(key) + "-" + Esc(id) +
               "\" name=\"reason\" required maxlength=\"1024\"><button type=\"submit\" "
               "class=\"deny\">Revoke " +
               std::string(label) + Esc(value) + "</button></form>";
        }
      }
    }
    return h + "</section>";
  }

  void Sessions(Response& res, const Signed& who) {
    SessionFilter filter;
    filter.state = SessionState::kActive;
    filter.limit = kMaxListed;
    if (!who.ctx.caller.is_admin) {
      filter.principal_id = who.ctx.caller.principal_id;
    }
    Result<json> list = api->ListSessions(who.ctx, filter);
    if (!list) {
      return ErrorPage(res, list.error(), &who);
    }
    const TimePoint now = options.clock->Now();
    std::string body;
    const json& sessions_json = (*list)["sessions"];
    if (sessions_json.empty()) {
      body += "<p id=\"empty\">No live sessions.</p>";
    }
    for (const json& s : sessions_json) {
      Result<json> detail = api->GetSession(who.ctx, Str(s, "session_id"));
      body += SessionCard(detail ? *detail : s, who, now, detail.has_value());
    }
    WriteHtml(res, 200, Page("Live sessions", &who, "sessions", body));
  }

  void Session(Response& res, const Signed& who, const std::string& id) {
    Result<json> detail = api->GetSession(who.ctx, id);
    if (!detail) {
      return ErrorPage(res, detail.error(), &who);
    }
    WriteHtml(res, 200,
              Page("Session " + id, &who, "sessions",
                   SessionCard(*detail, who, options.clock->Now(), true)));
  }

  static std::string OutcomeTable(const json& outcomes) {
    if (!outcomes.is_array() || outcomes.empty()) {
      return "<p>No live credential had to be revoked.</p>";
    }
    std::string h =
        "<table class=\"outcomes\"><caption>Per-grant outcome</caption><thead><tr><th "
        "scope=\"col\">Grant</th><th scope=\"col\">Outcome</th><th scope=\"col\">Residual "
        "lifetime</th></tr></thead><tbody>";
    for (const json& o : outcomes) {
      const std::string outcome = Str(o, "outcome");
      h += "<tr><td><code>" + Esc(Str(o, "grant_id")) + "</code></td><td class=\"outcome\">" +
           Esc(outcome) + "</td><td>" +
           (o.contains("residual_seconds") && o["residual_seconds"].is_number()
                ? Text(o["residual_seconds"]) + " s"
                : std::string("—")) +
           "</td></tr>";
    }
    return h + "</tbody></table>";
  }

  void RevokeSession(Response& res, const Signed& who, const std::string& id, const Form& form) {
    Result<json> out = api->EndSession(who.ctx, id, json{{"reason", Field(form, "reason")}}, true);
    if (!out) {
      return ErrorPage(res, out.error(), &who);
    }
    WriteHtml(res, 200,
              Page("Session revoked", &who, "sessions",
                   "<p role=\"status\" id=\"notice\">Session <code>" + Esc(id) + "</code> is now " +
                       Esc(Str(*out, "state")) + ".</p>" +
                       OutcomeTable(out->value("revocations", json::array())) +
                       "<p><a href=\"/ui/sessions\">Back to live sessions</a></p>"));
  }

  void RevokeGrant(Response& res, const Signed& who, const std::string& id) {
    Result<json> out = api->RevokeGrant(who.ctx, id);
    if (!out) {
      return ErrorPage(res, out.error(), &who);
    }
    json outcomes = json::array({*out});
    WriteHtml(res, 200,
              Page("Grant revoked", &who, "sessions",
                   "<p role=\"status\" id=\"notice\">Grant <code>" + Esc(id) + "</code> is now " +
                       Esc(Str(*out, "state")) + ".</p>" + OutcomeTable(outcomes) +
                       "<p><a href=\"/ui/sessions\">Back to live sessions</a></p>"));
  }

  void BulkRevoke(Response& res, const Signed& who, const Form& form) {
    json body = {{"reason", Field(form, "reason")}};
    for (const char* key : {"agent", "principal"}) {
      if (form.contains(key)) {
        body[key] = Field(form, key);
      }
    }
    Result<json> out = api->BulkRevoke(who.ctx, body);
    if (!out) {
      return ErrorPage(res, out.error(), &who);
    }
    WriteHtml(res, 200,
              Page("Revoked", &who, "sessions",
                   "<p role=\"status\" id=\"notice\">" +
                       Text(out->value("sessions_revoked", json(0))) + " session(s) revoked.</p>" +
                       OutcomeTable(out->value("revocations", json::array())) +
                       "<p><a href=\"/ui/sessions\">Back to live sessions</a></p>"));
  }

  // ---- jitctl login (RFC 8628) ----------------------------------------------

  static void OAuthJson(Response& res, int status, const json& body) {
    res.status = status;
    res.content_type = "application/json";
    res.body = body.dump();
    res.SetHeader("Cache-Control", "no-store");
  }

  static void OAuthFail(Response& res, int status, std::string_view error,
                        std::string_view description) {
    OAuthJson(res, status, json{{"error", error}, {"error_description", description}});
  }

  // POST /v1/login/device: a device code for jitctl and a user code for the person.
  void DeviceStart(const Request& req, Response& res) {
    KeyedRateLimiter::Outcome admitted = login_limiter->Acquire(req.remote_addr);
    if (!admitted.allowed) {
      res.SetHeader("Retry-After", std::to_string(admitted.retry_after.count()));
      return OAuthFail(res, 429, "slow_down", "too many sign-ins from this address");
    }
    DeviceLogins::Started started = devices->Start(req.remote_addr);
    log->info("event=device_login_started remote={} user_code={}", log::Quoted(req.remote_addr, 64),
              started.user_code);
    OAuthJson(res, 200,
              json{{"device_code", started.device_code.Reveal()},
                   {"user_code", started.user_code},
                   {"verification_uri", origin + "/ui/device"},
                   {"expires_in", started.expires_in.count()},
                   {"interval", started.interval.count()}});
  }

  // POST /v1/login/token (RFC 8628 §3.4): form grant_type and device_code.
  void DevicePoll(const Request& req, Response& res) {
    KeyedRateLimiter::Outcome admitted = login_limiter->Acquire(req.remote_addr);
    if (!admitted.allowed) {
      res.SetHeader("Retry-After", std::to_string(admitted.retry_after.count()));
      return OAuthFail(res, 400, "slow_down", "too many requests from this address");
    }
    Result<Form> form = ParseFormBody(req);
    if (!form) {
      return OAuthFail(res, 400, "invalid_request", form.error().message);
    }
    if (Field(*form, "grant_type") != "urn:ietf:params:oauth:grant-type:device_code") {
      return OAuthFail(res, 400, "unsupported_grant_type",
                       "grant_type must be urn:ietf:params:oauth:grant-type:device_code");
    }
    Result<DeviceLogins::Collected> got = devices->Poll(Field(*form, "device_code"));
    if (!got) {
      return OAuthFail(res, 400, got.error().Reason(), got.error().message);
    }
    const int64_t expires_in = std::max<int64_t>(
        0, std::chrono::duration_cast<std::chrono::seconds>(got->expires_at - options.clock->Now())
               .count());
    log->info("event=device_login_collected principal={} remote={}", got->principal_id,
              log::Quoted(req.remote_addr, 64));
    OAuthJson(res, 200,
              json{{"access_token", got->token.Reveal()},
                   {"token_type", "Bearer"},
                   {"expires_in", expires_in},
                   {"expires_at", FormatRfc3339(got->expires_at)},
                   {"principal", got->principal_id}});
  }

  static std::string CodeForm(const Signed& who, std::string_view note) {
    return std::string(note) + "<form class=\"search\" method=\"post\" action=\"/ui/device\">" +
           CsrfField(who) +
           "<label for=\"user-code\">Code shown by jitctl</label><input id=\"user-code\" "
           "name=\"user_code\" required maxlength=\"16\" autocomplete=\"off\" "
           "autocapitalize=\"characters\"><button type=\"submit\">Continue</button></form>";
  }

  void DevicePage(Response& res, const Signed& who) {
    WriteHtml(res, 200,
              Page("Sign in jitctl", &who, "",
                   CodeForm(who,
                            "<p>Type the code <code>jitctl login</code> shows in your "
                            "terminal. Only do this for a terminal you started yourself: "
                            "it will act as you.</p>")));
  }

  void DeviceAnswer(Response& res, const Signed& who, const Form& form) {
    const std::string code = Field(form, "user_code");
    const std::string decision = Field(form, "decision");
    Result<DeviceLogins::Request> pending = devices->Find(code);
    if (!pending) {
      KeyedRateLimiter::Outcome attempt = code_attempts->Acquire(who.session.principal_id);
      if (!attempt.allowed) {
        Error e = ResourceExhausted("rate_limited", "too many wrong codes; wait a minute");
        e.retryable = true;
        e.retry_after = attempt.retry_after;
        return ErrorPage(res, e, &who);
      }
      return WriteHtml(res, 404,
                       Page("Sign in jitctl", &who, "",
                            CodeForm(who,
                                     "<p class=\"error\" role=\"alert\" "
                                     "id=\"device-error\">No jitctl sign-in waits for "
                                     "that code. Check it and try again.</p>")));
    }
    if (decision.empty()) {
      const std::string c = Esc(pending->user_code);
      return WriteHtml(
          res, 200,
          Page("Sign in jitctl", &who, "",
               "<p id=\"device-request\">A <code>jitctl login</code> from " +
                   Esc(pending->requested_from) + " at " + FormatRfc3339(pending->requested_at) +
                   " with code <strong>" + c + "</strong> asks to act as <strong>" +
                   Esc(who.session.principal_id) +
                   "</strong> until your sign-in expires. Approve only if you started it.</p>"
                   "<form class=\"decide\" method=\"post\" action=\"/ui/device\">" +
                   CsrfField(who) + "<input type=\"hidden\" name=\"user_code\" value=\"" + c +
                   "\"><div class=\"buttons\"><button type=\"submit\" name=\"decision\" "
                   "value=\"approve\" class=\"approve\">Approve</button><button "
                   "type=\"submit\" name=\"decision\" value=\"deny\" "
                   "class=\"deny\">Deny</button></div></form>"));
    }
    if (decision == "deny") {
      if (Status ok = devices->Deny(code); !ok) {
        return ErrorPage(res, ok.error(), &who);
      }
      return WriteHtml(res, 200,
                       Page("Sign in jitctl", &who, "",
                            "<p role=\"status\" id=\"notice\">Refused: that terminal is not "
                            "signed in.</p>"));
    }
    if (decision != "approve") {
      return ErrorPage(res, InvalidArgument("invalid_form", "decision must be approve or deny"),
                       &who);
    }
    // The terminal gets this sign-in's ID token: it must still be good for a while.
    const TimePoint now = options.clock->Now();
    if (!who.session.id_token || who.session.id_token_expires_at - now < Seconds(300)) {
      return ErrorPage(res,
                       Unauthenticated("sign_in_again",
                                       "your sign-in is too old to hand to jitctl; sign out, "
                                       "sign in again and enter the code once more"),
                       &who);
    }
    if (Status ok = devices->Approve(code, who.session.principal_id, *who.session.id_token,
                                     who.session.id_token_expires_at);
        !ok) {
      return ErrorPage(res, ok.error(), &who);
    }
    log->info("event=device_login_approved principal={} user_code={}", who.session.principal_id,
              pending->user_code);
    WriteHtml(res, 200,
              Page("Sign in jitctl", &who, "",
                   "<p role=\"status\" id=\"notice\">Approved: jitctl is signed in as " +
                       Esc(who.session.principal_id) + ". You can close this page.</p>"));
  }

  // ---- a new session (the principal hands a task to an agent) -----------------

  static std::string Input(std::string_view name, std::string_view label,
                           std::string_view attrs = {}) {
    return "<label for=\"f-" + std::string(name) + "\">" + std::string(label) +
           "</label><input id=\"f-" + std::string(name) + "\" name=\"" + std::string(name) + "\"" +
           std::string(attrs) + ">";
  }

  static std::string Area(std::string_view name, std::string_view label) {
    return "<label for=\"f-" + std::string(name) + "\">" + std::string(label) +
           "</label><textarea id=\"f-" + std::string(name) + "\" name=\"" + std::string(name) +
           "\" rows=\"3\" maxlength=\"8192\"></textarea>";
  }

  void NewSessionPage(Response& res, const Signed& who) {
    std::string tiers;
    for (int t = 0; t < kTierCount; ++t) {
      const std::string name(TierName(static_cast<Tier>(t)));
      tiers +=
          "<option value=\"" + name + "\"" + (t == 0 ? " selected" : "") + ">" + name + "</option>";
    }
    constexpr std::string_view kNumber = " type=\"number\" min=\"1\"";
    WriteHtml(
        res, 200,
        Page("New session", &who, "new",
             "<p>Hand a task to an agent: the scope it may ask for credentials in, and "
             "optionally a budget that bounds it however well it stays in scope. The agent "
             "gets a session token, shown once.</p><form class=\"newsession\" method=\"post\" "
             "action=\"/ui/sessions/new\">" +
                 CsrfField(who) + "<fieldset><legend>Agent and task</legend>" +
                 Input("agent", "Agent id", " required maxlength=\"256\"") +
                 Input("task", "Task id", " required maxlength=\"256\"") +
                 Input("description", "Description", " maxlength=\"1024\"") +
                 "</fieldset><fieldset><legend>Scope</legend>" +
                 Area("resources", "Resources (one per line)") +
                 Area("branches", "Branches (one per line, optional)") +
                 "<label for=\"f-max_tier\">Highest tier</label><select id=\"f-max_tier\" "
                 "name=\"max_tier\">" +
                 tiers + "</select>" + Input("issuers", "Issuers (space-separated, optional)") +
                 Input("ttl_seconds", "Lifetime in seconds (optional)", kNumber) +
                 "</fieldset><fieldset><legend>Budget (optional)</legend>" +
                 Input("max_grants", "At most this many grants", kNumber) +
                 Input("max_resources", "At most this many distinct resources", kNumber) +
                 Input("max_live_credentials", "At most this many live credentials", kNumber) +
                 Input("max_credential_seconds", "At most this many credential-seconds", kNumber) +
                 Input("max_grants_per_tier", "Grants per tier (e.g. write=3 pr=1, optional)") +
                 "</fieldset><button type=\"submit\" class=\"approve\">Open session</button>"
                 "</form>"));
  }

  // Lines (or space-separated words) of a form field, empty ones dropped.
  static std::vector<std::string> Words(const std::string& text) {
    std::vector<std::string> out;
    std::string cur;
    for (char c : text) {
      if (c == '\n' || c == '\r' || c == ' ' || c == '\t' || c == ',') {
        if (!cur.empty()) {
          out.push_back(std::move(cur));
          cur.clear();
        }
      } else {
        cur.push_back(c);
      }
    }
    if (!cur.empty()) {
      out.push_back(std::move(cur));
    }
    return out;
  }

  // A positive number field, or absent when empty.
  static Result<std::optional<int64_t>> Number(const Form& form, std::string_view key) {
    const std::string v = Field(form, key);
    if (v.empty()) {
      return std::optional<int64_t>();
    }
    int64_t n = 0;
    auto [p, ec] = std::from_chars(v.data(), v.data() + v.size(), n);
    if (ec != std::errc() || p != v.data() + v.size() || n < 1) {
      return std::unexpected(InvalidArgument(
          "invalid_form", std::string(key) + " must be a whole number of at least 1"));
    }
    return std::optional<int64_t>(n);
  }

  // The form as the body of POST /v1/sessions: the API checks it.
  static Result<json> NewSessionBody(const Form& form) {
    json scope = {{"resources", Words(Field(form, "resources"))},
                  {"max_tier", Field(form, "max_tier")}};
    if (auto b = Words(Field(form, "branches")); !b.empty()) {
      scope["branches"] = b;
    }
    if (auto i = Words(Field(form, "issuers")); !i.empty()) {
      scope["issuers"] = i;
    }
    json task = {{"id", Field(form, "task")}, {"scope", std::move(scope)}};
    if (!Field(form, "description").empty()) {
      task["description"] = Field(form, "description");
    }
    json body = {{"agent", {{"id", Field(form, "agent")}}}, {"task", std::move(task)}};
    JITBROKER_ASSIGN_OR_RETURN(std::optional<int64_t> ttl, Number(form, "ttl_seconds"));
    if (ttl) {
      body["ttl_seconds"] = *ttl;
    }
    json budget = json::object();
    for (const char* key :
         {"max_grants", "max_resources", "max_live_credentials", "max_credential_seconds"}) {
      JITBROKER_ASSIGN_OR_RETURN(std::optional<int64_t> n, Number(form, key));
      if (n) {
        budget[key] = *n;
      }
    }
    json per_tier = json::object();
    for (const std::string& item : Words(Field(form, "max_grants_per_tier"))) {
      const size_t eq = item.find('=');
      Form one;
      if (eq != std::string::npos) {
        one.emplace("n", item.substr(eq + 1));
      }
      Result<std::optional<int64_t>> n = Number(one, "n");
      if (eq == std::string::npos || eq == 0 || !n || !*n) {
        return std::unexpected(
            InvalidArgument("invalid_form", "grants per tier are written TIER=N, e.g. write=3"));
      }
      per_tier[item.substr(0, eq)] = **n;
    }
    if (!per_tier.empty()) {
      budget["max_grants_per_tier"] = std::move(per_tier);
    }
    if (!budget.empty()) {
      body["budget"] = std::move(budget);
    }
    return body;
  }

  void OpenSession(Response& res, const Signed& who, const Form& form) {
    Result<json> body = NewSessionBody(form);
    if (!body) {
      return ErrorPage(res, body.error(), &who);
    }
    Result<json> opened = api->OpenSession(who.ctx, *body);
    if (!opened) {
      return ErrorPage(res, opened.error(), &who);
    }
    const std::string id = Str(*opened, "session_id");
    const std::string token = Str(*opened, "session_token");
    log->info("event=console_session_opened principal={} session_id={}", who.session.principal_id,
              id);
    WriteHtml(res, 201,
              Page("Session opened", &who, "new",
                   "<p role=\"status\" id=\"notice\">Session <a id=\"session-id\" "
                   "href=\"/ui/sessions/" +
                       Esc(id) + "\">" + Esc(id) + "</a> is open until " +
                       Esc(Str(*opened, "expires_at")) +
                       ".</p><p>Give the agent these two values. The token is shown only "
                       "now: the broker keeps only its digest.</p><pre id=\"session-env\">"
                       "export JITBROKER_SESSION_ID=" +
                       Esc(id) + "\nexport JITBROKER_SESSION_TOKEN=<span id=\"session-token\">" +
                       Esc(token) + "</span></pre>"));
  }

  // ---- audit -----------------------------------------------------------------

  void Audit(const Request& req, Response& res, const Signed& who) {
    Result<Form> q = ParseQuery(req);
    if (!q) {
      return ErrorPage(res, q.error(), &who);
    }
    AuditFilter filter;
    filter.session_id = Field(*q, "session");
    filter.principal_id = Field(*q, "principal");
    filter.limit = 200;
    if (const std::string after = Field(*q, "after"); !after.empty()) {
      int64_t v = 0;
      auto [p, ec] = std::from_chars(after.data(), after.data() + after.size(), v);
      if (ec != std::errc() || p != after.data() + after.size() || v < 0) {
        return ErrorPage(res, InvalidArgument("invalid_query", "after must be a sequence number"),
                         &who);
      }
      filter.after_seq = v;
    }
    for (const std::string* v : {&filter.session_id, &filter.principal_id}) {
      if (v->size() > 256) {
        return ErrorPage(res,
                         InvalidArgument("invalid_query",
                                         "search terms are 256 characters "
                                         "at most"),
                         &who);
      }
    }
    Result<json> verification = api->VerifyAudit(who.ctx);
    if (!verification) {
      return ErrorPage(res, verification.error(), &who);
    }
    Result<json> records = api->ListAudit(who.ctx, filter);
    if (!records) {
      return ErrorPage(res, records.error(), &who);
    }
    const json& v = *verification;
    std::string body =
        std::string("<p class=\"chain ") + (v.value("ok", false) ? "ok" : "broken") +
        "\" id=\"chain\" role=\"status\">Audit chain: " +
        (v.value("ok", false) ? "verified" : "BROKEN") + " — " + Text(v.value("records", json(0))) +
        " record(s) checked" +
        (v.value("ok", false) ? std::string()
                              : ", first bad record " + Text(v.value("first_bad_seq", json())) +
                                    ": " + Text(v.value("problem", json()))) +
        ".</p><form class=\"search\" method=\"get\" action=\"/ui/audit\"><label "
        "for=\"q-session\">Session</label><input id=\"q-session\" name=\"session\" value=\"" +
        Esc(filter.session_id) +
        "\"><label for=\"q-principal\">Principal</label><input id=\"q-principal\" "
        "name=\"principal\" value=\"" +
        Esc(filter.principal_id) + "\"><button type=\"submit\">Search</button></form>";
    const json& list = (*records)["records"];
    body +=
        "<table class=\"audit\"><caption>Records</caption><thead><tr><th scope=\"col\">Seq</th>"
        "<th scope=\"col\">Time</th><th scope=\"col\">Event</th><th scope=\"col\">Session</th>"
        "<th scope=\"col\">Principal</th><th scope=\"col\">Record</th></tr></thead><tbody>";
    int64_t last = 0;
    for (const json& r : list) {
      last = r.value("seq", int64_t{0});
      const std::string session = Str(r, "session_id");
      body += "<tr><td>" + Text(r.value("seq", json())) + "</td><td>" + Esc(Str(r, "ts")) +
              "</td><td>" + Esc(Str(r, "event")) + "</td><td>" +
              (session.empty() ? std::string()
                               : "<a href=\"/ui/audit?session=" + net::PercentEncode(session) +
                                     "\">" + Esc(session) + "</a>") +
              "</td><td>" + Esc(Str(r, "principal_id")) +
              "</td><td><details><summary>JSON</summary><pre>" + Pretty(r) +
              "</pre></details></td></tr>";
    }
    body += "</tbody></table>";
    if (list.size() == filter.limit) {
      body += "<p><a href=\"/ui/audit?session=" + net::PercentEncode(filter.session_id) +
              "&principal=" + net::PercentEncode(filter.principal_id) +
              "&after=" + std::to_string(last) + "\">Next records</a></p>";
    }
    WriteHtml(res, 200, Page("Audit", &who, "audit", body));
  }
};

Result<std::unique_ptr<Console>> Console::Create(service::BrokerService* service,
                                                 oidc::HumanLogin* login, ConsoleOptions options) {
  if (service == nullptr || login == nullptr || options.clock == nullptr) {
    return std::unexpected(Internal("console: service, login and clock are required"));
  }
  std::unique_ptr<Console> c(new Console());
  c->impl_ = std::make_unique<Impl>();
  Impl& impl = *c->impl_;
  impl.service = service;
  impl.api.emplace(service);
  impl.login = login;
  impl.options = options;
  impl.sessions =
      std::make_unique<ConsoleSessions>(options.clock, Seconds(options.session_ttl_seconds),
                                        std::max<size_t>(1, options.max_sessions));
  JITBROKER_ASSIGN_OR_RETURN(
      impl.login_limiter,
      KeyedRateLimiter::Create(KeyedRateLimiter::Options{.limit = options.logins_per_address},
                               options.clock));
  impl.devices = std::make_unique<DeviceLogins>(options.clock, DeviceLogins::Options{});
  JITBROKER_ASSIGN_OR_RETURN(
      impl.code_attempts,
      KeyedRateLimiter::Create(
          KeyedRateLimiter::Options{.limit = {.rate_per_second = 10.0 / 60, .burst = 10}},
          options.clock));
  Result<net::Url> redirect =
      net::ParseUrl(login->config().redirect_url, net::UrlPolicy{.http = net::HttpRule::kAnyHost});
  if (!redirect) {
    return std::unexpected(Internal("console: humans.redirect_url does not parse"));
  }
  impl.origin = redirect->scheme + "://" + redirect->Authority();
  return c;
}

Console::~Console() = default;

bool Console::Owns(std::string_view path) {
  return path == "/ui" || path.starts_with("/ui/") || path == "/v1/login/device" ||
         path == "/v1/login/token";
}

Result<RoutePlan> Console::Plan(Request& head) {
  if (head.path().starts_with("/v1/login/")) {
    head.route = std::string(head.path());
    if (head.method != "POST") {
      Error e;
      e.code = ErrorCode::kMethodNotAllowed;
      e.reason = "method_not_allowed";
      e.message = "this endpoint serves POST";
      return std::unexpected(e);
    }
    RoutePlan plan;
    plan.max_body_bytes = 4096;
    return plan;
  }
  head.route = "/ui/";
  if (head.method != "GET" && head.method != "POST") {
    Error e;
    e.code = ErrorCode::kMethodNotAllowed;
    e.reason = "method_not_allowed";
    e.message = "the console serves GET and POST";
    return std::unexpected(e);
  }
  RoutePlan plan;
  plan.max_body_bytes = head.method == "POST" ? kMaxFormBytes : 0;
  return plan;
}

void Console::Handle(Request& req, Response& res) {
  if (req.path() == "/ui") {
    return impl_->Redirect(res, "/ui/");
  }
  impl_->Handle(req, res);
}

size_t Console::session_count() const { return impl_->sessions->size(); }

}  // namespace jitbroker::http
