#include <string>
#include <string_view>
#include <vector>

#include <doctest/doctest.h>

#include "broker/net/url.h"

namespace jitbroker::net {
namespace {

enum class P { kOidc, kOidcHttp, kGitHub, kGitHubHttp, kWebhook, kBroker, kActions, kGit };

UrlPolicy PolicyOf(P p) {
  switch (p) {
    case P::kOidc:
      return UrlPolicy::OidcEndpoint(false);
    case P::kOidcHttp:
      return UrlPolicy::OidcEndpoint(true);
    case P::kGitHub:
      return UrlPolicy::GitHubBaseUrl(false);
    case P::kGitHubHttp:
      return UrlPolicy::GitHubBaseUrl(true);
    case P::kWebhook:
      return UrlPolicy::WebhookUrl();
    case P::kBroker:
      return UrlPolicy::BrokerUrl();
    case P::kActions:
      return UrlPolicy::ActionsTokenRequestUrl();
    case P::kGit:
      return UrlPolicy::GitRemote();
  }
  return UrlPolicy();
}

TEST_CASE("Url: ParseUrl accepts and refuses by policy, with a precise reason") {
  struct Case {
    std::string url;
    P policy;
    const char* reason;  // nullptr = accepted
  };
  const std::string long_path = "https://i.example/" + std::string(2048, 'a');
  const std::vector<Case> cases = {
      // The uses in the code, accepted.
      {"https://token.actions.githubusercontent.com", P::kOidc, nullptr},
      {"https://ghes.example/_services/token", P::kOidc, nullptr},
      {"https://i.example:8443/path/", P::kOidc, nullptr},
      {"https://[2001:db8::1]/x", P::kOidc, nullptr},
      {"http://127.0.0.1:8080", P::kOidcHttp, nullptr},
      {"http://localhost:1", P::kOidcHttp, nullptr},
      {"http://LOCALHOST:1", P::kOidcHttp, nullptr},
      {"http://[::1]", P::kOidcHttp, nullptr},
      {"http://[::1]:80/x", P::kWebhook, nullptr},
      {"https://api.github.com", P::kGitHub, nullptr},
      {"https://ghes.example.com/api/v3", P::kGitHub, nullptr},
      {"http://127.0.0.1:9/api", P::kGitHubHttp, nullptr},
      {"https://hooks.example.com/services/T0/B0/x?token=abc&a=b", P::kWebhook, nullptr},
      {"https://outlook.office.com/webhook/a@b/IncomingWebhook/c", P::kWebhook, nullptr},
      {"http://127.0.0.1:8443", P::kBroker, nullptr},
      {"http://broker.internal:8443/prefix/", P::kBroker, nullptr},
      {"http://jit_broker:8443", P::kBroker, nullptr},
      {"https://b.example///", P::kBroker, nullptr},
      {"https://pipelines.actions.githubusercontent.com/abc/idtoken?api-version=2.0", P::kActions,
       nullptr},
      {"https://github.com", P::kGit, nullptr},
      {"https://ghe.corp.example:8443/", P::kGit, nullptr},
      {"http://127.0.0.1:9999", P::kGit, nullptr},
      {"https://example.com.", P::kOidc, nullptr},  // a fully qualified name
      {"https://10.0.0.1", P::kOidc, nullptr},
      {"https://i.example:08443", P::kOidc, nullptr},

      // Userinfo, whatever hides behind it.
      {"https://evil@127.0.0.1", P::kBroker, "url_userinfo"},
      {"https://u:p@i.example", P::kOidc, "url_userinfo"},
      {"http://127.0.0.1@evil.example/", P::kBroker, "url_userinfo"},
      {"http://127.0.0.1:80@evil.example/", P::kBroker, "url_userinfo"},
      {"http://localhost@evil.example/", P::kWebhook, "url_userinfo"},
      {"https://@i.example", P::kOidc, "url_userinfo"},
      {"https://ghes.example/api@v3", P::kGitHub, "url_invalid_character"},

      // Plain http: https only, or only to a loopback host.
      {"http://127.0.0.1:8080", P::kOidc, "url_http_refused"},
      {"http://127.0.0.1:9/api", P::kGitHub, "url_http_refused"},
      {"http://127.0.0.1.evil.com", P::kWebhook, "url_http_not_loopback"},
      {"http://localhost.evil.com", P::kWebhook, "url_http_not_loopback"},
      {"http://10.0.0.1", P::kOidcHttp, "url_http_not_loopback"},
      {"http://169.254.169.254/latest", P::kOidcHttp, "url_http_not_loopback"},
      {"http://128.0.0.1", P::kWebhook, "url_http_not_loopback"},
      {"http://[::2]", P::kWebhook, "url_http_not_loopback"},
      {"http://[0:0:0:0:0:0:0:1]", P::kWebhook, "url_http_not_loopback"},  // only "::1"
      {"http://[::ffff:127.0.0.1]", P::kWebhook, "url_http_not_loopback"},
      {"http://github.com", P::kGit, "url_http_not_loopback"},
      {"http://evil.example/x", P::kActions, "url_http_not_loopback"},

      // Schemes.
      {"HTTPS://i.example", P::kOidc, "url_scheme_case"},
      {"Http://127.0.0.1", P::kBroker, "url_scheme_case"},
      {"ftp://i.example", P::kOidc, "url_scheme"},
      {"file:///etc/passwd", P::kBroker, "url_scheme"},
      {"gopher://i.example", P::kWebhook, "url_scheme"},
      {"javascript://i.example/%0aalert(1)", P::kBroker, "url_scheme"},
      {"i.example/x", P::kBroker, "url_not_absolute"},
      {"//i.example/x", P::kBroker, "url_not_absolute"},
      {"127.0.0.1:8443", P::kBroker, "url_not_absolute"},
      {"https:i.example", P::kOidc, "url_not_absolute"},
      {"", P::kOidc, "url_not_absolute"},
      {"1http://i.example", P::kBroker, "url_not_absolute"},

      // Missing host.
      {"https://", P::kOidc, "url_no_host"},
      {"https:///x", P::kWebhook, "url_no_host"},
      {"https://:443/x", P::kWebhook, "url_no_host"},
      {"https://?x", P::kWebhook, "url_no_host"},
      {"http://::1/", P::kBroker, "url_no_host"},

      // Hosts that are not what they look like.
      {"https://%31%32%37.0.0.1", P::kBroker, "url_invalid_host"},
      {"http://127.0.0.%31", P::kWebhook, "url_invalid_host"},
      {"https://exa%6dple.com", P::kGitHub, "url_invalid_host"},
      {"http://2130706433/", P::kBroker, "url_invalid_host"},
      {"http://127.1/", P::kBroker, "url_invalid_host"},
      {"http://0x7f.0.0.1/", P::kBroker, "url_invalid_host"},
      {"http://0177.0.0.1/", P::kBroker, "url_invalid_host"},
      {"http://127.0.0.01/", P::kBroker, "url_invalid_host"},
      {"http://127.0.0.1./", P::kBroker, "url_invalid_host"},
      {"http://127.0.0.1999", P::kBroker, "url_invalid_host"},
      {"https://1.2.3.4.5", P::kOidc, "url_invalid_host"},
      {"https://256.0.0.1", P::kOidc, "url_invalid_host"},
      {"https://i.example.0x10", P::kOidc, "url_invalid_host"},
      {"https://a..b", P::kOidc, "url_invalid_host"},
      {"https://.a", P::kOidc, "url_invalid_host"},
      {"https://i_x.example", P::kOidc, "url_invalid_host"},
      {"https://i_x.example", P::kWebhook, "url_invalid_host"},
      {"https://" + std::string(64, 'a') + ".example", P::kOidc, "url_invalid_host"},
      {"http://[::1].evil.example/", P::kBroker, "url_invalid_host"},
      {"http://[::1]x/", P::kBroker, "url_invalid_host"},
      {"http://[::1", P::kBroker, "url_invalid_host"},
      {"http://[::1%25eth0]/", P::kWebhook, "url_invalid_host"},  // zone identifiers
      {"http://[fe80::1%eth0]/", P::kWebhook, "url_invalid_host"},
      {"http://[1:2]/", P::kBroker, "url_invalid_host"},
      {"http://[v1.fe]/", P::kBroker, "url_invalid_host"},
      {"http://[]/", P::kBroker, "url_invalid_host"},

      // Ports.
      {"https://i.example:65535", P::kOidc, nullptr},
      {"https://i.example:0", P::kOidc, "url_invalid_port"},
      {"https://i.example:65536", P::kOidc, "url_invalid_port"},
      {"https://i.example:99999", P::kOidc, "url_invalid_port"},
      {"https://i.example:000443", P::kOidc, "url_invalid_port"},
      {"https://i.example:4294967297", P::kOidc, "url_invalid_port"},
      {"https://i.example:/x", P::kWebhook, "url_invalid_port"},
      {"https://i.example:-1", P::kOidc, "url_invalid_port"},
      {"https://i.example:+80", P::kOidc, "url_invalid_port"},
      {"https://i.example:80:80", P::kOidc, "url_invalid_port"},
      {"https://i.example:1e3", P::kOidc, "url_invalid_port"},
      {"http://[::1]:", P::kBroker, "url_invalid_port"},

      // Characters: spaces, controls, backslashes, non-ASCII, RFC 3986.
      {"https://i.example\\@evil", P::kOidc, "url_invalid_character"},
      {"http://127.0.0.1\\@evil.example/", P::kBroker, "url_invalid_character"},
      {"https://i.example/a\\b", P::kWebhook, "url_invalid_character"},
      {"https://i.exa mple", P::kOidc, "url_invalid_character"},
      {" https://i.example", P::kBroker, "url_invalid_character"},
      {"https://i.example ", P::kBroker, "url_invalid_character"},
      {"https://i.example/\t", P::kBroker, "url_invalid_character"},
      {"http://h/\r\nX: y", P::kBroker, "url_invalid_character"},
      {std::string("https://i.example/\0x", 20), P::kWebhook, "url_invalid_character"},
      {"https://i.example/\x7f", P::kWebhook, "url_invalid_character"},
      {"https://ex\xc3\xa4mple.com", P::kOidc, "url_invalid_character"},
      {"https://i.example/%zz", P::kWebhook, "url_invalid_character"},
      {"https://i.example/%4", P::kWebhook, "url_invalid_character"},
      {"https://i.example/x?a=%", P::kWebhook, "url_invalid_character"},
      {"https://i.example/a|b", P::kWebhook, "url_invalid_character"},
      {"https://i.example/{x}", P::kWebhook, "url_invalid_character"},
      {"https://i.example/a\"b", P::kWebhook, "url_invalid_character"},
      {"https://i.example/a<b>", P::kWebhook, "url_invalid_character"},
      {"https://i.example/%2Fok?x=%41", P::kWebhook, nullptr},

      // Query, fragment, path.
      {"https://i.example/a?b", P::kOidc, "url_query"},
      {"https://i.example/#x", P::kOidc, "url_fragment"},
      {"https://h.example/x#SECRET", P::kWebhook, "url_fragment"},
      {"https://ghes.example/api/v3?x=1", P::kGitHub, "url_query"},
      {"http://h/?x=1", P::kBroker, "url_query"},
      {"http://h/#f", P::kBroker, "url_fragment"},
      {"https://runner.example/x#f", P::kActions, "url_fragment"},
      {"https://github.com/acme", P::kGit, "url_path"},
      {"https://github.com/", P::kGit, nullptr},
      {"https://i.example/./a", P::kOidc, "url_dot_segment"},
      {"https://i.example/a/../b", P::kOidc, "url_dot_segment"},
      {"https://i.example//a", P::kOidc, "url_dot_segment"},
      {"https://i.example/a//b", P::kOidc, "url_dot_segment"},
      {"https://i.example/%2e%2e/x", P::kOidc, "url_dot_segment"},
      {"https://i.example/a/%2E", P::kOidc, "url_dot_segment"},
      {"https://i.example/.%2e/x", P::kOidc, "url_dot_segment"},
      {"https://i.example/a/../b", P::kBroker, nullptr},
      {"https://i.example/...", P::kOidc, nullptr},

      // Length.
      {long_path, P::kOidc, "url_too_long"},
      {long_path, P::kActions, nullptr},
  };
  for (const Case& c : cases) {
    CAPTURE(c.url);
    CAPTURE(static_cast<int>(c.policy));
    Result<Url> r = ParseUrl(c.url, PolicyOf(c.policy));
    if (c.reason == nullptr) {
      CHECK_MESSAGE(r.has_value(), (r ? "" : r.error().message));
    } else {
      REQUIRE_FALSE(r.has_value());
      CHECK(r.error().Reason() == c.reason);
      CHECK(r.error().code == ErrorCode::kInvalidArgument);
      CHECK_FALSE(r.error().message.empty());
      // Never echoed: a webhook URL's path or query may hold a token.
      if (c.url.size() > 8) {
        CHECK(r.error().message.find(c.url) == std::string::npos);
      }
      CHECK(r.error().message.find("SECRET") == std::string::npos);
    }
  }
}

TEST_CASE("Url: the parts of a parsed URL") {
  UrlPolicy all;
  all.http = HttpRule::kAnyHost;
  all.allow_query = true;
  all.allow_fragment = true;
  auto u = ParseUrl("https://Example.COM:8443/a/B%20c?x=1&y#frag", all);
  REQUIRE(u.has_value());
  CHECK(u->scheme == "https");
  CHECK(u->host == "example.com");
  CHECK_FALSE(u->ipv6);
  CHECK(u->port == 8443);
  CHECK(u->path == "/a/B%20c");
  CHECK(u->query == "x=1&y");
  CHECK(u->fragment == "frag");
  CHECK(u->Authority() == "example.com:8443");
  CHECK_FALSE(u->IsLoopback());

  auto v6 = ParseUrl("http://[::1]", all);
  REQUIRE(v6.has_value());
  CHECK(v6->host == "::1");
  CHECK(v6->ipv6);
  CHECK_FALSE(v6->port.has_value());
  CHECK(v6->path.empty());
  CHECK_FALSE(v6->query.has_value());
  CHECK_FALSE(v6->fragment.has_value());
  CHECK(v6->Authority() == "[::1]");
  CHECK(v6->IsLoopback());

  auto empty_query = ParseUrl("https://h.example/x?", all);
  REQUIRE(empty_query.has_value());
  CHECK(empty_query->query == "");

  auto doc = ParseUrl("https://[2001:DB8::1]:443/x", all);
  REQUIRE(doc.has_value());
  CHECK(doc->host == "2001:db8::1");
  CHECK(doc->Authority() == "[2001:db8::1]:443");
}

TEST_CASE("Url: messages complete '<what> ...' and keep the old wording") {
  auto msg = [](std::string_view url, const UrlPolicy& p) {
    return ParseUrl(url, p).error().message;
  };
  const UrlPolicy oidc = UrlPolicy::OidcEndpoint(false);
  CHECK(msg("https://u@i.example", oidc) == "must not carry userinfo (user@host)");
  CHECK(msg("ftp://i.example", oidc) == "must use https");
  CHECK(msg("ftp://i.example", UrlPolicy::BrokerUrl()) == "must use http or https");
  CHECK(msg("https://i.example/?x", oidc) == "must not have a query or fragment");
  CHECK(msg("https://i.example/#x", UrlPolicy::WebhookUrl()) == "must not have a fragment");
  CHECK(msg("https://i.example/a/../b", oidc) == "must not have empty, '.' or '..' path segments");
  CHECK(msg("http://10.0.0.1", UrlPolicy::OidcEndpoint(true)) ==
        "plain http is allowed only for a loopback host (127.0.0.0/8, ::1, localhost)");
  CHECK(msg("http://[fe80::1%25eth0]", UrlPolicy::WebhookUrl()).find("zone") != std::string::npos);
}

TEST_CASE("Url: IsLoopbackHost is the one loopback test") {
  struct Case {
    const char* host;
    bool loopback;
  };
  const Case cases[] = {
      {"127.0.0.1", true},     {"127.255.255.254", true},
      {"localhost", true},     {"LocalHost", true},
      {"::1", true},           {"[::1]", true},
      {"127.0.0", false},      {"127.0.0.256", false},
      {"128.0.0.1", false},    {"localhost.evil", false},
      {"localhost.", false},   {"127.0.0.1.evil.com", false},
      {"0.0.0.0", false},      {"::", false},
      {"[::2]", false},        {"", false},
      {"127.0.0.1:80", false}, {"evil@127.0.0.1", false},
  };
  for (const Case& c : cases) {
    CAPTURE(c.host);
    CHECK(IsLoopbackHost(c.host) == c.loopback);
  }
}

TEST_CASE("Url: LenientHttpHosts reads every host a client might see") {
  using V = std::vector<std::string>;
  CHECK(LenientHttpHosts("https://github.com/acme") == V{"github.com"});
  CHECK(LenientHttpHosts("HTTPS://x@GitLab.Acme.Example./o") == V{"gitlab.acme.example"});
  CHECK(LenientHttpHosts("http://[::1]:8/x") == V{"::1"});
  CHECK(LenientHttpHosts("https://i.example:8443") == V{"i.example"});
  // RFC 3986 and WHATWG readers disagree: both hosts count.
  CHECK(LenientHttpHosts("https://github.com\\@evil.example/acme") ==
        V{"evil.example", "github.com"});
  CHECK(LenientHttpHosts("https://x?@github.com/acme") == V{"github.com", "x"});
  CHECK(LenientHttpHosts("urn:github.com").empty());
  CHECK(LenientHttpHosts("github.com").empty());
  CHECK(LenientHttpHosts("https://").empty());
  CHECK(LenientHttpHosts("ftp://github.com").empty());
}

}  // namespace
}  // namespace jitbroker::net
