// Issue #17: single sign-on and the web console (docs/console.md), against
// the real daemon and a local identity provider (tests/support/
// oidc_provider.cc) that checks the authorization code flow with PKCE as a
// real one does. The HTTP-level cases here drive the flow by hand; the
// browser cases run headless Chromium (tests/console/browser_test.py, with
// Debian's chromium, chromium-driver and python3-selenium).
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <regex>
#include <string>
#include <thread>
#include <utility>

#include <doctest/doctest.h>
#include <httplib.h>
#include <nlohmann/json.hpp>

#include "broker/crypto/jose.h"
#include "tests/support/broker_process.h"
#include "tests/support/loopback.h"
#include "tests/support/oidc_issuer.h"

namespace jitbroker::testing {
namespace {

using nlohmann::json;

constexpr char kConsoleClientId[] = "jitbroker-console";
constexpr char kConsoleSecret[] = "console-secret-for-tests";

const json kConsoleMaintScope = {{"resources", {"jwt://api.internal"}},
                                 {"max_tier", "merge_deploy"}};
const json kConsoleMerge = {{"tool", "github.merge_pull_request"}, {"operation", "merge"},
                            {"resource", "jwt://api.internal"},    {"issuer", "internal"},
                            {"parameters", {{"pull", 842}}},       {"ttl_seconds", 120}};
const json kConsoleRead = {{"tool", "mcp.search"},
                           {"operation", "read"},
                           {"resource", "jwt://mcp.internal"},
                           {"issuer", "internal"}};
const json kConsoleEngScope = {{"resources", {"jwt://mcp.internal"}}, {"max_tier", "pr"}};

// The identity provider and a broker that trusts it for sign-in.
struct ConsoleRig {
  std::unique_ptr<FakeOidcIssuer> idp;
  std::string kid;
  std::unique_ptr<BrokerProcess> broker;
  std::string secret_file;

  static ConsoleRig Start(const std::string& claim = "sub",
                          const std::string& auth = "client_secret_basic") {
    ConsoleRig rig;
    rig.idp = FakeOidcIssuer::Start();
    REQUIRE(rig.idp != nullptr);
    rig.kid = rig.idp->AddKey(crypto::JwsAlg::kRS256);
    const int port = PickFreeLoopbackPort();
    REQUIRE(port > 0);
    const std::string redirect = "http://127.0.0.1:" + std::to_string(port) + "/ui/callback";
    rig.idp->EnableLogin({kConsoleClientId, kConsoleSecret, redirect}, rig.kid);
    for (const char* user : {"maint_1", "maint_2", "eng_1", "eng_2", "admin_1"}) {
      rig.idp->AddUser(user, json::object());
    }
    rig.idp->AddUser("eng-by-email",
                     {{"sub", "00u-eng"}, {"email", "ENG@example.com"}, {"email_verified", true}});
    rig.idp->AddUser("unverified",
                     {{"sub", "00u-unv"}, {"email", "eng@example.com"}, {"email_verified", false}});
    rig.idp->AddUser("stranger", {{"sub", "nobody"}, {"email", "nobody@example.com"}});
    BrokerOptions o;
    o.port = port;
    o.top_extra = "humans: {issuer: \"" + rig.idp->issuer() +
                  "\", allow_http: true, client_id: " + kConsoleClientId +
                  ", client_secret: \"env:JITBROKER_TEST_CONSOLE_SECRET\", redirect_url: \"" +
                  redirect + "\", claim: " + claim + ", token_endpoint_auth: " + auth + "}\n";
    ::setenv("JITBROKER_TEST_CONSOLE_SECRET", kConsoleSecret, 1);
    rig.broker = BrokerProcess::Start(o);
    return rig;
  }
};

std::string CookieNamed(const httplib::Result& res, const std::string& name) {
  for (size_t i = 0; i < res->get_header_value_count("Set-Cookie"); ++i) {
    const std::string c = res->get_header_value("Set-Cookie", i);
    if (c.rfind(name + "=", 0) == 0) {
      return c.substr(name.size() + 1, c.find(';') - name.size() - 1);
    }
  }
  return "";
}

std::string SetCookieHeader(const httplib::Result& res, const std::string& name) {
  for (size_t i = 0; i < res->get_header_value_count("Set-Cookie"); ++i) {
    const std::string c = res->get_header_value("Set-Cookie", i);
    if (c.rfind(name + "=", 0) == 0) {
      return c;
    }
  }
  return "";
}

// Splits an absolute URL into (scheme://host:port, path?query).
std::pair<std::string, std::string> SplitUrl(const std::string& url) {
  const size_t slash = url.find('/', url.find("://") + 3);
  return {url.substr(0, slash), url.substr(slash)};
}

struct ConsoleLogin {
  std::string cookie;  // the console session cookie's value
  int status = 0;      // of the callback
  std::string page;    // the callback's answer
};

constexpr char kSessionCookieName[] = "__Host-jitbroker-console";
constexpr char kLoginCookieName[] = "__Host-jitbroker-login";

// The whole sign-in by hand, as a browser would do it. `tamper` may change
// the callback's query or the binding cookie before it is sent.
ConsoleLogin SignIn(
    ConsoleRig& rig, const std::string& user,
    const std::function<void(std::string& query, std::string& binding)>& tamper = nullptr) {
  httplib::Client broker(rig.broker->url());
  auto start = broker.Get("/ui/login");
  REQUIRE(start);
  REQUIRE(start->status == 302);
  std::string binding = CookieNamed(start, kLoginCookieName);
  REQUIRE_FALSE(binding.empty());
  CHECK(SetCookieHeader(start, kLoginCookieName).find("SameSite=Lax") != std::string::npos);
  auto [idp_base, authorize] = SplitUrl(start->get_header_value("Location"));
  CHECK(idp_base == rig.idp->issuer());
  httplib::Client idp(idp_base);
  auto form = idp.Get(authorize);
  REQUIRE(form);
  INFO(form->body);
  REQUIRE(form->status == 200);
  // Submit the provider's form: the request's own parameters plus the user.
  httplib::Params params;
  std::regex hidden(R"re(name="([a-z_]+)" value="([^"]*)")re");
  for (auto it = std::sregex_iterator(form->body.begin(), form->body.end(), hidden);
       it != std::sregex_iterator(); ++it) {
    std::string v = (*it)[2];
    for (auto [from, to] : {std::pair<std::string, std::string>{"&amp;", "&"}}) {
      for (size_t p = v.find(from); p != std::string::npos; p = v.find(from)) {
        v.replace(p, from.size(), to);
      }
    }
    params.emplace((*it)[1], v);
  }
  params.emplace("login", user);
  auto back = idp.Post("/authorize", params);
  REQUIRE(back);
  INFO(back->body);
  REQUIRE(back->status == 302);
  auto [broker_base, callback] = SplitUrl(back->get_header_value("Location"));
  CHECK(broker_base == rig.broker->url());
  std::string query = callback.substr(callback.find('?') + 1);
  if (tamper) {
    tamper(query, binding);
  }
  httplib::Headers headers = {{"Cookie", std::string(kLoginCookieName) + "=" + binding}};
  auto done = broker.Get("/ui/callback?" + query, headers);
  REQUIRE(done);
  ConsoleLogin out;
  out.status = done->status;
  out.page = done->body;
  out.cookie = CookieNamed(done, kSessionCookieName);
  if (!out.cookie.empty()) {
    const std::string header = SetCookieHeader(done, kSessionCookieName);
    CHECK(header.find("HttpOnly") != std::string::npos);
    CHECK(header.find("Secure") != std::string::npos);
    CHECK(header.find("SameSite=Strict") != std::string::npos);
    CHECK(header.find("Path=/") != std::string::npos);
  }
  return out;
}

httplib::Headers WithCookie(const std::string& cookie) {
  return {{"Cookie", std::string(kSessionCookieName) + "=" + cookie}};
}

std::string FormPost(httplib::Client& c, const std::string& path, const std::string& cookie,
                     const std::string& body, int* status = nullptr) {
  auto r = c.Post(path, WithCookie(cookie), body, "application/x-www-form-urlencoded");
  REQUIRE(r);
  if (status != nullptr) {
    *status = r->status;
  }
  return r->body;
}

std::string CsrfOf(const std::string& page) {
  std::smatch m;
  std::regex re(R"re(name="csrf" value="([^"]+)")re");
  REQUIRE(std::regex_search(page, m, re));
  return m[1];
}

std::string ErrorCodeOf(const std::string& page) {
  std::smatch m;
  std::regex re(R"re(id="error-code">([a-z_]+)<)re");
  return std::regex_search(page, m, re) ? std::string(m[1]) : std::string();
}

struct ConsolePending {
  std::string sid, token, grant_id, approval_id, digest;
};

ConsolePending RequestConsoleMerge(BrokerProcess& b) {
  auto [sid, token] = b.OpenSession(b.maintainer_key, kConsoleMaintScope);
  auto r = b.Post("/v1/sessions/" + sid + "/grants", token, kConsoleMerge);
  INFO(r.body);
  REQUIRE(r.status == 202);
  return {sid, token, r.json["grant_id"], r.json["approval"]["id"],
          r.json["approval"]["request_digest"]};
}

TEST_CASE("Console sign-in: the code flow with PKCE opens a console session") {
  ConsoleRig rig = ConsoleRig::Start();
  httplib::Client broker(rig.broker->url());

  // Not signed in: pages send the browser to sign in, forms are refused.
  auto anon = broker.Get("/ui/approvals");
  REQUIRE(anon);
  CHECK(anon->status == 303);
  // (cpp-httplib decodes %XX in the header values it reads.)
  CHECK(anon->get_header_value("Location") == "/ui/login?return_to=/ui/approvals");
  auto anon_post = broker.Post("/ui/logout", "csrf=x", "application/x-www-form-urlencoded");
  REQUIRE(anon_post);
  CHECK(anon_post->status == 401);
  CHECK(ErrorCodeOf(anon_post->body) == "not_signed_in");

  ConsoleLogin login = SignIn(rig, "maint_2");
  INFO(login.page);
  REQUIRE(login.status == 200);
  REQUIRE_FALSE(login.cookie.empty());
  // The provider saw the client's credentials (HTTP Basic) and the verifier.
  CHECK(rig.idp->last_token_authorization().rfind("Basic ", 0) == 0);
  CHECK(rig.idp->last_token_body().find("code_verifier=") != std::string::npos);
  CHECK(rig.idp->last_token_body().find(kConsoleSecret) == std::string::npos);

  auto page = broker.Get("/ui/approvals", WithCookie(login.cookie));
  REQUIRE(page);
  CHECK(page->status == 200);
  CHECK(page->body.find("id=\"principal\">maint_2<") != std::string::npos);
  const std::string csp = page->get_header_value("Content-Security-Policy");
  CHECK(csp.find("default-src 'none'") != std::string::npos);
  CHECK(csp.find("script-src 'self'") != std::string::npos);
  CHECK(csp.find("frame-ancestors 'none'") != std::string::npos);
  CHECK(page->get_header_value("Cache-Control") == "no-store");
  CHECK(page->get_header_value("Referrer-Policy") == "same-origin");
  // No inline script or style: the CSP would block them.
  CHECK(page->body.find("<script>") == std::string::npos);
  CHECK(page->body.find("style=") == std::string::npos);
  CHECK(page->body.find("http://") == std::string::npos);  // no external assets

  // Sign out: the cookie no longer works.
  auto out = broker.Post("/ui/logout", WithCookie(login.cookie), "csrf=" + CsrfOf(page->body),
                         "application/x-www-form-urlencoded");
  REQUIRE(out);
  CHECK(out->status == 303);
  CHECK(out->get_header_value("Location") == "/ui/signed-out");
  auto after = broker.Get("/ui/approvals", WithCookie(login.cookie));
  REQUIRE(after);
  CHECK(after->status == 303);
}

TEST_CASE("Console sign-in: replays, other browsers, bad tokens and strangers are refused") {
  ConsoleRig rig = ConsoleRig::Start();

  SUBCASE("a callback replayed after use") {
    std::string used_query, used_binding;
    ConsoleLogin first = SignIn(rig, "maint_1", [&](std::string& q, std::string& b) {
      used_query = q;
      used_binding = b;
    });
    REQUIRE(first.status == 200);
    httplib::Client broker(rig.broker->url());
    auto again = broker.Get("/ui/callback?" + used_query,
                            {{"Cookie", std::string(kLoginCookieName) + "=" + used_binding}});
    REQUIRE(again);
    CHECK(again->status == 401);
    CHECK(ErrorCodeOf(again->body) == "login_expired");
    CHECK(CookieNamed(again, kSessionCookieName).empty());
  }
  SUBCASE("a callback finished in another browser (login CSRF)") {
    ConsoleLogin l = SignIn(rig, "maint_1", [](std::string&, std::string& b) { b = "other"; });
    CHECK(l.status == 401);
    CHECK(ErrorCodeOf(l.page) == "browser_mismatch");
    CHECK(l.cookie.empty());
  }
  SUBCASE("a forged state") {
    ConsoleLogin l = SignIn(rig, "maint_1", [](std::string& q, std::string&) {
      q = std::regex_replace(q, std::regex("state=[^&]*"), "state=forged-state-value");
    });
    CHECK(l.status == 401);
    CHECK(ErrorCodeOf(l.page) == "login_expired");
  }
  SUBCASE("a code the provider did not issue") {
    ConsoleLogin l = SignIn(rig, "maint_1", [](std::string& q, std::string&) {
      q = std::regex_replace(q, std::regex("code=[^&]*"), "code=made-up");
    });
    CHECK(l.status == 401);
    CHECK(ErrorCodeOf(l.page) == "provider_denied");
  }
  SUBCASE("the provider answers with an error") {
    ConsoleLogin l = SignIn(rig, "maint_1", [](std::string& q, std::string&) {
      q = std::regex_replace(q, std::regex("code=[^&]*"), "error=access_denied");
    });
    CHECK(l.status == 401);
    CHECK(ErrorCodeOf(l.page) == "provider_denied");
  }
  SUBCASE("an ID token for another sign-in (nonce)") {
    rig.idp->SetNonceOverride("a-nonce-of-another-sign-in");
    ConsoleLogin l = SignIn(rig, "maint_1");
    CHECK(l.status == 401);
    CHECK(ErrorCodeOf(l.page) == "nonce_mismatch");
  }
  SUBCASE("an account that is no principal") {
    ConsoleLogin l = SignIn(rig, "stranger");
    CHECK(l.status == 401);
    CHECK(ErrorCodeOf(l.page) == "unknown_principal");
  }
  SUBCASE("return_to never leaves the console") {
    httplib::Client broker(rig.broker->url());
    for (const char* target :
         {"https://evil.example/", "//evil.example/ui/", "/ui/../v1/x", "/ui/%0d%0aSet-Cookie:x"}) {
      auto start = broker.Get(std::string("/ui/login?return_to=") + target);
      REQUIRE(start);
      CHECK(start->status == 302);
    }
    ConsoleLogin l = SignIn(rig, "maint_1");
    CHECK(l.page.find("url=/ui/approvals") != std::string::npos);
  }
}

TEST_CASE("Console sign-in by verified email, with client_secret_post") {
  ConsoleRig rig = ConsoleRig::Start("email", "client_secret_post");
  ConsoleLogin ok = SignIn(rig, "eng-by-email");  // ENG@example.com: case does not matter
  REQUIRE(ok.status == 200);
  CHECK(rig.idp->last_token_authorization().empty());
  CHECK(rig.idp->last_token_body().find("client_secret=") != std::string::npos);
  httplib::Client broker(rig.broker->url());
  auto page = broker.Get("/ui/sessions", WithCookie(ok.cookie));
  REQUIRE(page);
  CHECK(page->body.find("(eng_1)") != std::string::npos);
  ConsoleLogin unverified = SignIn(rig, "unverified");
  CHECK(unverified.status == 401);
  CHECK(ErrorCodeOf(unverified.page) == "unverified_email");
}

TEST_CASE("Console: forms need the session's CSRF token and the console's origin") {
  ConsoleRig rig = ConsoleRig::Start();
  ConsolePending p = RequestConsoleMerge(*rig.broker);
  ConsoleLogin login = SignIn(rig, "maint_2");
  REQUIRE(login.status == 200);
  httplib::Client broker(rig.broker->url());
  auto page = broker.Get("/ui/approvals", WithCookie(login.cookie));
  REQUIRE(page);
  CHECK(page->body.find(p.approval_id) != std::string::npos);
  CHECK(page->body.find(p.digest) != std::string::npos);
  const std::string csrf = CsrfOf(page->body);
  const std::string form = "request_digest=" + p.digest + "&decision=approve";

  auto no_token = broker.Post("/ui/approvals/" + p.approval_id, WithCookie(login.cookie), form,
                              "application/x-www-form-urlencoded");
  REQUIRE(no_token);
  CHECK(no_token->status == 403);
  CHECK(ErrorCodeOf(no_token->body) == "csrf");
  httplib::Headers cross = WithCookie(login.cookie);
  cross.emplace("Origin", "https://evil.example");
  auto other_origin = broker.Post("/ui/approvals/" + p.approval_id, cross, form + "&csrf=" + csrf,
                                  "application/x-www-form-urlencoded");
  REQUIRE(other_origin);
  CHECK(other_origin->status == 403);
  httplib::Headers site = WithCookie(login.cookie);
  site.emplace("Sec-Fetch-Site", "cross-site");
  auto cross_site = broker.Post("/ui/approvals/" + p.approval_id, site, form + "&csrf=" + csrf,
                                "application/x-www-form-urlencoded");
  REQUIRE(cross_site);
  CHECK(cross_site->status == 403);
  auto json_body = broker.Post("/ui/approvals/" + p.approval_id, WithCookie(login.cookie),
                               "{\"decision\":\"approve\"}", "application/json");
  REQUIRE(json_body);
  CHECK(json_body->status == 415);
  // Nothing was decided.
  auto a = rig.broker->Get("/v1/approvals/" + p.approval_id, rig.broker->admin_key);
  CHECK(a.json["state"] == "pending");

  // A wrong digest is the API's refusal, shown on the page.
  auto stale =
      broker.Post("/ui/approvals/" + p.approval_id, WithCookie(login.cookie),
                  "request_digest=" + std::string(64, '0') + "&decision=approve&csrf=" + csrf,
                  "application/x-www-form-urlencoded");
  REQUIRE(stale);
  CHECK(stale->status == 409);
  CHECK(rig.broker->Get("/v1/approvals/" + p.approval_id, rig.broker->admin_key).json["state"] ==
        "pending");

  auto ok =
      broker.Post("/ui/approvals/" + p.approval_id, WithCookie(login.cookie),
                  form + "&comment=looks+good&csrf=" + csrf, "application/x-www-form-urlencoded");
  REQUIRE(ok);
  CHECK(ok->status == 303);
  a = rig.broker->Get("/v1/approvals/" + p.approval_id, rig.broker->admin_key);
  CHECK(a.json["state"] == "approved");
  CHECK(a.json["decided"]["approver"] == "maint_2");
  CHECK(a.json["decided"]["comment"] == "looks good");
  CHECK(a.json["decided"]["via"] == "console");  // audited as made in the console
}

TEST_CASE("Console: the API rules hold (four eyes, own sessions only, admins' audit)") {
  ConsoleRig rig = ConsoleRig::Start();
  ConsolePending p = RequestConsoleMerge(*rig.broker);  // delegated by maint_1
  httplib::Client broker(rig.broker->url());

  // maint_1 is not offered (and cannot decide) their own agent's request.
  ConsoleLogin self = SignIn(rig, "maint_1");
  REQUIRE(self.status == 200);
  auto own = broker.Get("/ui/approvals", WithCookie(self.cookie));
  REQUIRE(own);
  CHECK(own->body.find(p.approval_id) == std::string::npos);
  auto self_approve =
      broker.Post("/ui/approvals/" + p.approval_id, WithCookie(self.cookie),
                  "request_digest=" + p.digest + "&decision=approve&csrf=" + CsrfOf(own->body),
                  "application/x-www-form-urlencoded");
  REQUIRE(self_approve);
  CHECK(self_approve->status == 403);
  CHECK(rig.broker->Get("/v1/approvals/" + p.approval_id, rig.broker->admin_key).json["state"] ==
        "pending");

  // eng_2 cannot see or revoke eng_1's session.
  auto [sid, token] = rig.broker->OpenSession(rig.broker->engineer_key, kConsoleEngScope);
  ConsoleLogin eng2 = SignIn(rig, "eng_2");
  REQUIRE(eng2.status == 200);
  auto list = broker.Get("/ui/sessions", WithCookie(eng2.cookie));
  REQUIRE(list);
  CHECK(list->body.find(sid) == std::string::npos);
  auto detail = broker.Get("/ui/sessions/" + sid, WithCookie(eng2.cookie));
  REQUIRE(detail);
  CHECK((detail->status == 403 || detail->status == 404));
  auto revoke = broker.Post("/ui/sessions/" + sid + "/revoke", WithCookie(eng2.cookie),
                            "reason=mine+now&csrf=" + CsrfOf(list->body),
                            "application/x-www-form-urlencoded");
  REQUIRE(revoke);
  CHECK((revoke->status == 403 || revoke->status == 404));
  auto audit = broker.Get("/ui/audit", WithCookie(eng2.cookie));
  REQUIRE(audit);
  CHECK(audit->status == 403);
  CHECK(list->body.find("href=\"/ui/audit\"") == std::string::npos);
  CHECK(rig.broker->Get("/v1/sessions/" + sid, rig.broker->admin_key).json["state"] == "active");

  // The owner (eng_1) can revoke it and sees the outcome per grant.
  auto grant = rig.broker->Post("/v1/sessions/" + sid + "/grants", token, kConsoleRead);
  REQUIRE(grant.status == 201);
  ConsoleLogin eng1 = SignIn(rig, "eng_1");
  auto mine = broker.Get("/ui/sessions", WithCookie(eng1.cookie));
  REQUIRE(mine);
  CHECK(mine->body.find(sid) != std::string::npos);
  CHECK(mine->body.find(grant.json["grant_id"].get<std::string>()) != std::string::npos);
  auto revoked = broker.Post("/ui/sessions/" + sid + "/revoke", WithCookie(eng1.cookie),
                             "reason=done+for+today&csrf=" + CsrfOf(mine->body),
                             "application/x-www-form-urlencoded");
  REQUIRE(revoked);
  INFO(revoked->body);
  CHECK(revoked->status == 200);
  CHECK(revoked->body.find(grant.json["grant_id"].get<std::string>()) != std::string::npos);
  auto s = rig.broker->Get("/v1/sessions/" + sid, rig.broker->admin_key);
  CHECK(s.json["state"] == "revoked");
  CHECK(s.json["end_reason"].get<std::string>().find("done for today") != std::string::npos);

  // Admins read the audit trail with the chain's state.
  ConsoleLogin admin = SignIn(rig, "admin_1");
  auto trail = broker.Get("/ui/audit?session=" + sid, WithCookie(admin.cookie));
  REQUIRE(trail);
  CHECK(trail->status == 200);
  CHECK(trail->body.find("Audit chain: verified") != std::string::npos);
  CHECK(trail->body.find("session.revoked") != std::string::npos);
}

TEST_CASE("Console: an admin revokes everything of an agent, with the outcome per grant") {
  ConsoleRig rig = ConsoleRig::Start();
  auto [sid1, token1] = rig.broker->OpenSession(rig.broker->engineer_key, kConsoleEngScope);
  auto [sid2, token2] = rig.broker->OpenSession(rig.broker->engineer_key, kConsoleEngScope);
  auto g1 = rig.broker->Post("/v1/sessions/" + sid1 + "/grants", token1, kConsoleRead);
  auto g2 = rig.broker->Post("/v1/sessions/" + sid2 + "/grants", token2, kConsoleRead);
  REQUIRE(g1.status == 201);
  REQUIRE(g2.status == 201);
  httplib::Client broker(rig.broker->url());
  // Only admins are offered (and allowed) the bulk forms.
  ConsoleLogin eng = SignIn(rig, "eng_1");
  auto own = broker.Get("/ui/sessions", WithCookie(eng.cookie));
  REQUIRE(own);
  CHECK(own->body.find("action=\"/ui/revoke\"") == std::string::npos);
  int status = 0;
  FormPost(broker, "/ui/revoke", eng.cookie,
           "agent=agent_test&reason=all&csrf=" + CsrfOf(own->body), &status);
  CHECK(status == 403);
  CHECK(rig.broker->Get("/v1/sessions/" + sid1, rig.broker->admin_key).json["state"] == "active");

  ConsoleLogin admin = SignIn(rig, "admin_1");
  auto page = broker.Get("/ui/sessions", WithCookie(admin.cookie));
  REQUIRE(page);
  CHECK(page->body.find("Revoke everything of agent agent_test") != std::string::npos);
  std::string out =
      FormPost(broker, "/ui/revoke", admin.cookie,
               "agent=agent_test&reason=runaway+loop&csrf=" + CsrfOf(page->body), &status);
  CHECK(status == 200);
  CHECK(out.find("2 session(s) revoked") != std::string::npos);
  CHECK(out.find(g1.json["grant_id"].get<std::string>()) != std::string::npos);
  CHECK(out.find(g2.json["grant_id"].get<std::string>()) != std::string::npos);
  for (const std::string& sid : {sid1, sid2}) {
    auto s = rig.broker->Get("/v1/sessions/" + sid, rig.broker->admin_key);
    CHECK(s.json["state"] == "revoked");
    CHECK(s.json["end_reason"].get<std::string>().find("runaway loop") != std::string::npos);
  }
}

TEST_CASE("Console: a new session's form is checked as the API checks it; nothing is opened") {
  ConsoleRig rig = ConsoleRig::Start();
  ConsoleLogin eng = SignIn(rig, "eng_1");
  httplib::Client broker(rig.broker->url());
  auto page = broker.Get("/ui/sessions/new", WithCookie(eng.cookie));
  REQUIRE(page);
  CHECK(page->status == 200);
  const std::string csrf = CsrfOf(page->body);
  const std::string base = "csrf=" + csrf + "&agent=agent_x&task=task_x&max_tier=read";
  const std::string mcp = "&resources=jwt%3A%2F%2Fmcp.internal";
  struct FormCase {
    std::string extra;
    int status;
    std::string code;
  };
  for (const FormCase& c : std::vector<FormCase>{
           {mcp + "&max_grants=two", 400, "invalid_form"},
           {mcp + "&max_grants=0", 400, "invalid_form"},
           {mcp + "&max_grants_per_tier=write", 400, "invalid_form"},
           {mcp + "&max_grants_per_tier=nosuchtier%3D2", 400, "invalid_budget"},
           {mcp + mcp, 400, "invalid_form"},                     // a field given twice
           {"&resources=github%3A%2F%2Fother%2Frepo", 403, ""},  // outside eng_1's role
       }) {
    CAPTURE(c.extra);
    int status = 0;
    std::string out = FormPost(broker, "/ui/sessions/new", eng.cookie, base + c.extra, &status);
    CHECK(status == c.status);
    if (!c.code.empty()) {
      CHECK(ErrorCodeOf(out) == c.code);
    }
  }
  int status = 0;
  FormPost(broker, "/ui/sessions/new", eng.cookie,
           "agent=agent_x&task=task_x&resources=jwt%3A%2F%2Fmcp.internal&max_tier=read", &status);
  CHECK(status == 403);  // no CSRF token
  auto list = rig.broker->Get("/v1/sessions", rig.broker->admin_key);
  CHECK(list.json["sessions"].empty());
}

TEST_CASE("Console: live sessions show each budget limit with its use") {
  ConsoleRig rig = ConsoleRig::Start();
  json body = {{"agent", {{"id", "agent_budget"}}},
               {"task", {{"id", "task_budget"}, {"scope", kConsoleEngScope}}},
               {"budget", {{"max_grants", 5}, {"max_grants_per_tier", {{"read", 3}}}}}};
  auto opened = rig.broker->Post("/v1/sessions", rig.broker->engineer_key, body);
  REQUIRE(opened.status == 201);
  const std::string sid = opened.json["session_id"];
  auto grant = rig.broker->Post("/v1/sessions/" + sid + "/grants",
                                opened.json["session_token"].get<std::string>(), kConsoleRead);
  REQUIRE(grant.status == 201);
  ConsoleLogin eng = SignIn(rig, "eng_1");
  httplib::Client broker(rig.broker->url());
  auto page = broker.Get("/ui/sessions/" + sid, WithCookie(eng.cookie));
  REQUIRE(page);
  INFO(page->body);
  CHECK(page->body.find("grants 1 of 5") != std::string::npos);
  CHECK(page->body.find("grants_per_tier.read 1 of 3") != std::string::npos);
  CHECK(page->body.find("last none since opened") != std::string::npos);
  // (Times are whole seconds: a heartbeat in the second the session opened
  // looks like none.)
  std::this_thread::sleep_for(std::chrono::milliseconds(1100));
  auto beat = rig.broker->Post("/v1/sessions/" + sid + "/heartbeat",
                               opened.json["session_token"].get<std::string>(),
                               {{"progress", "tests pass"}});
  REQUIRE(beat.status == 200);
  page = broker.Get("/ui/sessions/" + sid, WithCookie(eng.cookie));
  REQUIRE(page);
  CHECK(page->body.find("s ago; every 60 s") != std::string::npos);
  CHECK(page->body.find("last progress: tests pass") != std::string::npos);
}

TEST_CASE("API: a principal's ID token from the provider is a bearer credential") {
  ConsoleRig rig = ConsoleRig::Start();
  const int64_t now = std::chrono::duration_cast<std::chrono::seconds>(
                          std::chrono::system_clock::now().time_since_epoch())
                          .count();
  json claims = {{"iss", rig.idp->issuer()},
                 {"sub", "eng_1"},
                 {"aud", kConsoleClientId},
                 {"iat", now},
                 {"exp", now + 600}};
  const std::string token = rig.idp->Sign(claims, rig.kid);
  auto [sid, session_token] = rig.broker->OpenSession(token, kConsoleEngScope);
  auto s = rig.broker->Get("/v1/sessions/" + sid, token);
  CHECK(s.status == 200);
  CHECK(s.json["principal"] == "eng_1");

  json wrong_aud = claims;
  wrong_aud["aud"] = "someone-else";
  auto r = rig.broker->Get("/v1/sessions", rig.idp->Sign(wrong_aud, rig.kid));
  CHECK(r.status == 401);
  CHECK(r.json["code"] == "invalid_id_token");
  json expired = claims;
  expired["exp"] = now - 3600;
  expired["iat"] = now - 7200;
  CHECK(rig.broker->Get("/v1/sessions", rig.idp->Sign(expired, rig.kid)).status == 401);
  json stranger = claims;
  stranger["sub"] = "nobody";
  r = rig.broker->Get("/v1/sessions", rig.idp->Sign(stranger, rig.kid));
  CHECK(r.status == 401);
  CHECK(r.json["code"] == "unknown_principal");
  auto other_key = FakeOidcIssuer::Compact({{"alg", "none"}}, claims, "");
  CHECK(rig.broker->Get("/v1/sessions", other_key).status == 401);
}

// Headless Chromium through the pages (tests/console/browser_test.py): sign
// in at the provider's form, approve and deny, revoke a grant and a session,
// and another principal's view. The script checks the pages; this checks the
// API state each click changed.
TEST_CASE("Console in a real browser: approve, deny and revoke through the pages") {
  ConsoleRig rig = ConsoleRig::Start();
  ConsolePending approve = RequestConsoleMerge(*rig.broker);
  ConsolePending deny = RequestConsoleMerge(*rig.broker);
  auto [sid, token] = rig.broker->OpenSession(rig.broker->engineer_key, kConsoleEngScope);
  auto grant = rig.broker->Post("/v1/sessions/" + sid + "/grants", token, kConsoleRead);
  REQUIRE(grant.status == 201);
  const std::string grant_id = grant.json["grant_id"];
  auto [other_sid, other_token] =
      rig.broker->OpenSession(rig.broker->engineer_key, kConsoleEngScope);

  const std::string shots = rig.broker->dir() + "/screenshots";
  const char* keep = std::getenv("JITBROKER_SCREENSHOT_DIR");
  json plan = {{"broker", rig.broker->url()},
               {"screenshots", keep != nullptr ? std::string(keep) : shots},
               {"approve", approve.approval_id},
               {"deny", deny.approval_id},
               {"session", sid},
               {"grant", grant_id},
               {"other_session", other_sid},
               {"new_session_out", rig.broker->dir() + "/new-session.json"}};
  const std::string plan_file = rig.broker->dir() + "/browser-plan.json";
  std::ofstream(plan_file) << plan.dump();
  auto [rc, out] =
      RunCommand("/usr/bin/python3 " JITBROKER_SOURCE_DIR "/tests/console/browser_test.py " +
                 plan_file + " 2>&1");
  INFO(out);
  REQUIRE(rc == 0);

  auto a = rig.broker->Get("/v1/approvals/" + approve.approval_id, rig.broker->admin_key);
  CHECK(a.json["state"] == "approved");
  CHECK(a.json["decided"]["approver"] == "maint_2");
  CHECK(a.json["decided"]["comment"] == "approved from the browser test");
  auto d = rig.broker->Get("/v1/approvals/" + deny.approval_id, rig.broker->admin_key);
  CHECK(d.json["state"] == "denied");
  CHECK(d.json["decided"]["comment"] == "not this one");
  // The approved grant is collected by its agent as usual.
  auto collected = rig.broker->Get("/v1/grants/" + approve.grant_id, approve.token);
  CHECK(collected.status == 200);
  CHECK(collected.json["state"] == "active");
  CHECK(collected.json.contains("credential"));

  auto g = rig.broker->Get("/v1/grants/" + grant_id, rig.broker->admin_key);
  CHECK(g.json["state"] == "revoked");
  auto s = rig.broker->Get("/v1/sessions/" + sid, rig.broker->admin_key);
  CHECK(s.json["state"] == "revoked");
  CHECK(s.json["end_reason"].get<std::string>().find("stopped from the console") !=
        std::string::npos);
  // The session eng_1 opened in the browser works for its agent, within its budget.
  json opened;
  std::ifstream(rig.broker->dir() + "/new-session.json") >> opened;
  const std::string new_sid = opened["session_id"];
  const std::string new_token = opened["session_token"];
  auto new_s = rig.broker->Get("/v1/sessions/" + new_sid, rig.broker->admin_key);
  CHECK(new_s.json["principal"] == "eng_1");
  CHECK(new_s.json["agent"]["id"] == "agent_browser");
  CHECK(new_s.json["task"]["description"] == "opened from the console");
  for (int i = 0; i < 2; ++i) {
    CHECK(rig.broker->Post("/v1/sessions/" + new_sid + "/grants", new_token, kConsoleRead).status ==
          201);
  }
  auto third = rig.broker->Post("/v1/sessions/" + new_sid + "/grants", new_token, kConsoleRead);
  CHECK(third.status == 403);
  CHECK(third.json["code"] == "budget_exceeded");
  // eng_2 could neither see nor revoke eng_1's other session.
  CHECK(rig.broker->Get("/v1/sessions/" + other_sid, rig.broker->admin_key).json["state"] ==
        "active");
  std::ifstream png((keep != nullptr ? std::string(keep) : shots) + "/approvals.png",
                    std::ios::binary);
  std::string magic(8, '\0');
  png.read(magic.data(), 8);
  CHECK(magic == std::string("\x89PNG\r\n\x1a\n", 8));
}

}  // namespace
}  // namespace jitbroker::testing

namespace jitbroker::testing {
namespace {

// Runs `jitctl login` in the background with its own HOME, and returns the
// user code it shows once it has printed it.
struct BackgroundLogin {
  std::string home;
  std::string err_file;
  std::thread thread;
  int rc = -1;
  std::string out;

  BackgroundLogin(const std::string& dir, const std::string& url) {
    home = dir + "/home";
    std::filesystem::create_directories(home);
    err_file = dir + "/login.err";
    thread = std::thread([this, url] {
      // In a subshell: RunCommand sends the command's own stderr to its output.
      auto [code, text] =
          RunCommand("(env -u JITBROKER_API_KEY -u XDG_CONFIG_HOME HOME=" + home +
                     " " JITCTL_BINARY " --url " + url + " login 2>" + err_file + ")");
      rc = code;
      out = text;
    });
  }
  std::string WaitForUserCode() {
    std::regex re("enter the code: ([A-Z]{4}-[A-Z]{4})");
    for (int i = 0; i < 200; ++i) {
      std::ifstream f(err_file);
      std::string text((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
      std::smatch m;
      if (std::regex_search(text, m, re)) {
        return m[1];
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    std::ifstream f(err_file);
    std::string text((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
    Join();
    FAIL("jitctl login printed no code: " << text << out);
    return "";
  }
  void Join() {
    if (thread.joinable()) {
      thread.join();
    }
  }
  ~BackgroundLogin() { Join(); }
};

TEST_CASE("jitctl login: a code approved in the browser signs the terminal in as that person") {
  ConsoleRig rig = ConsoleRig::Start();
  httplib::Client broker(rig.broker->url());
  ConsoleLogin eng = SignIn(rig, "eng_1");
  REQUIRE(eng.status == 200);
  auto page = broker.Get("/ui/device", WithCookie(eng.cookie));
  REQUIRE(page);
  const std::string csrf = CsrfOf(page->body);

  // A wrong code changes nothing and says so.
  int status = 0;
  std::string wrong =
      FormPost(broker, "/ui/device", eng.cookie, "user_code=BCDF-GHJK&csrf=" + csrf, &status);
  CHECK(status == 404);
  CHECK(wrong.find("device-error") != std::string::npos);

  BackgroundLogin login(rig.broker->dir(), rig.broker->url());
  const std::string code = login.WaitForUserCode();
  // The person sees where the request came from before approving.
  std::string confirm =
      FormPost(broker, "/ui/device", eng.cookie, "user_code=" + code + "&csrf=" + csrf, &status);
  CHECK(status == 200);
  CHECK(confirm.find("127.0.0.1") != std::string::npos);
  CHECK(confirm.find(code) != std::string::npos);
  std::string approved = FormPost(broker, "/ui/device", eng.cookie,
                                  "user_code=" + code + "&decision=approve&csrf=" + csrf, &status);
  CHECK(status == 200);
  CHECK(approved.find("Approved") != std::string::npos);
  login.Join();
  INFO(login.out);
  REQUIRE(login.rc == 0);
  CHECK(login.out.find("as eng_1") != std::string::npos);
  const std::string store = login.home + "/.config/jitbroker/logins.json";
  CHECK((std::filesystem::status(store).permissions() & std::filesystem::perms::all) ==
        (std::filesystem::perms::owner_read | std::filesystem::perms::owner_write));
  CHECK((std::filesystem::status(login.home + "/.config/jitbroker").permissions() &
         std::filesystem::perms::all) == std::filesystem::perms::owner_all);

  // Later commands act as eng_1 with no API key; the code cannot be used again.
  const std::string jitctl = "env -u JITBROKER_API_KEY -u XDG_CONFIG_HOME HOME=" + login.home +
                             " " JITCTL_BINARY " --url " + rig.broker->url() + " ";
  auto [rc, opened] = RunCommand(jitctl +
                                 "sessions open --agent agent_cli --task task_cli --resource "
                                 "jwt://mcp.internal --max-tier read --json 2>&1");
  INFO(opened);
  CHECK(rc == 0);
  CHECK(opened.find("\"principal\":\"eng_1\"") != std::string::npos);
  std::string again = FormPost(broker, "/ui/device", eng.cookie,
                               "user_code=" + code + "&decision=approve&csrf=" + csrf, &status);
  CHECK(status == 404);
  auto [out_rc, out_text] = RunCommand(jitctl + "logout 2>&1");
  CHECK(out_rc == 0);
  auto [after_rc, after] = RunCommand(jitctl + "sessions list 2>&1");
  CHECK(after_rc == 2);
  CHECK(after.find("jitctl login") != std::string::npos);
}

TEST_CASE("jitctl login: a refused code, and the token endpoint's errors") {
  ConsoleRig rig = ConsoleRig::Start();
  httplib::Client broker(rig.broker->url());
  ConsoleLogin eng = SignIn(rig, "eng_1");
  auto page = broker.Get("/ui/device", WithCookie(eng.cookie));
  REQUIRE(page);
  const std::string csrf = CsrfOf(page->body);
  BackgroundLogin login(rig.broker->dir(), rig.broker->url());
  const std::string code = login.WaitForUserCode();
  int status = 0;
  FormPost(broker, "/ui/device", eng.cookie, "user_code=" + code + "&decision=deny&csrf=" + csrf,
           &status);
  CHECK(status == 200);
  login.Join();
  CHECK(login.rc == 4);
  CHECK_FALSE(std::filesystem::exists(login.home + "/.config/jitbroker/logins.json"));

  auto bogus = broker.Post("/v1/login/token",
                           "grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Adevice_code"
                           "&device_code=made-up",
                           "application/x-www-form-urlencoded");
  REQUIRE(bogus);
  CHECK(bogus->status == 400);
  CHECK(json::parse(bogus->body)["error"] == "expired_token");
  auto grant = broker.Post("/v1/login/token", "grant_type=password&device_code=x",
                           "application/x-www-form-urlencoded");
  REQUIRE(grant);
  CHECK(json::parse(grant->body)["error"] == "unsupported_grant_type");
  auto get = broker.Get("/v1/login/device");
  REQUIRE(get);
  CHECK(get->status == 405);
  // Polling faster than the interval is told to slow down.
  auto start = broker.Post("/v1/login/device", "", "application/x-www-form-urlencoded");
  REQUIRE(start);
  const std::string device = json::parse(start->body)["device_code"];
  const std::string poll =
      "grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Adevice_code"
      "&device_code=" +
      device;
  auto first = broker.Post("/v1/login/token", poll, "application/x-www-form-urlencoded");
  CHECK(json::parse(first->body)["error"] == "authorization_pending");
  auto second = broker.Post("/v1/login/token", poll, "application/x-www-form-urlencoded");
  CHECK(json::parse(second->body)["error"] == "slow_down");
}

}  // namespace
}  // namespace jitbroker::testing
