// git credential helper protocol: parsing, target resolution, answer format.
#include <sstream>

#include <doctest/doctest.h>

#include "broker/net/url.h"
#include "cli/args.h"
#include "cli/git_credential.h"

namespace jitbroker::cli {
namespace {

std::map<std::string, std::string> Parse(const std::string& text) {
  std::istringstream in(text);
  auto r = ParseGitCredentialInput(in);
  REQUIRE(r.has_value());
  return *r;
}

Result<std::optional<GitRepoTarget>> Resolve(const std::string& text,
                                             std::vector<std::string> hosts = {"github.com"}) {
  return ResolveGitTarget(Parse(text), hosts);
}

TEST_CASE("git-credential: input is key=value lines up to a blank line") {
  auto a = Parse("protocol=https\nhost=github.com\npath=acme/app.git\n\nignored=1\n");
  CHECK(a.size() == 3);
  CHECK(a["protocol"] == "https");
  CHECK(a["path"] == "acme/app.git");
  // Values may contain '='; CRLF line ends are tolerated; unknown keys kept.
  a = Parse("wwwauth[]=Basic realm=\"GitHub\"\r\ncapability[]=authtype\n");
  CHECK(a["wwwauth[]"] == "Basic realm=\"GitHub\"");
  CHECK(a["capability[]"] == "authtype");
  CHECK(Parse("").empty());
}

TEST_CASE("git-credential: malformed input is an error") {
  for (const std::string& bad : {std::string("no equals sign\n"), std::string("=value\n"),
                                 std::string("key=a\0b\n", 8), std::string(70000, 'a') + "=b\n"}) {
    std::istringstream in(bad);
    auto r = ParseGitCredentialInput(in);
    CHECK_FALSE(r.has_value());
  }
}

TEST_CASE("git-credential: a served https host with OWNER/REPO resolves") {
  auto t = Resolve("protocol=https\nhost=github.com\npath=acme/payment-service.git\n");
  REQUIRE(t.has_value());
  REQUIRE(t->has_value());
  CHECK((*t)->owner == "acme");
  CHECK((*t)->repo == "payment-service");
  // Without .git, with slashes around, host case-insensitive.
  t = Resolve("protocol=https\nhost=GitHub.com\npath=/Acme/App/\n");
  REQUIRE(t.has_value());
  REQUIRE(t->has_value());
  CHECK((*t)->owner == "acme");  // lower-cased: policy compares resources as written
  CHECK((*t)->repo == "app");
  // A GitHub Enterprise host given with --host.
  t = Resolve("protocol=https\nhost=ghe.corp.example\npath=team/svc.git\n", {"ghe.corp.example"});
  REQUIRE(t.has_value());
  CHECK(t->has_value());
}

TEST_CASE("git-credential: other hosts and protocols are not answered") {
  for (const char* text :
       {"protocol=https\nhost=gitlab.com\npath=a/b.git\n",
        "protocol=ssh\nhost=github.com\npath=a/b.git\n", "protocol=https\npath=a/b.git\n"}) {
    auto t = Resolve(text);
    REQUIRE(t.has_value());
    CHECK_FALSE(t->has_value());
  }
}

TEST_CASE("git-credential: unanswerable requests for a served host are errors") {
  struct Case {
    const char* text;
    const char* reason;
  };
  const Case cases[] = {
      {"protocol=https\nhost=github.com\n", "missing_path"},
      {"protocol=https\nhost=github.com\npath=justone.git\n", "invalid_path"},
      {"protocol=https\nhost=github.com\npath=a/b/c.git\n", "invalid_path"},
      {"protocol=https\nhost=github.com\npath=../b.git\n", "invalid_path"},
      {"protocol=https\nhost=github.com\npath=a/b%2Fc.git\n", "invalid_path"},
      {"protocol=https\nhost=github.com\npath=a/b c.git\n", "invalid_path"},
      {"protocol=http\nhost=github.com\npath=a/b.git\n", "insecure_transport"},
  };
  for (const Case& c : cases) {
    CAPTURE(c.text);
    auto t = Resolve(c.text);
    REQUIRE_FALSE(t.has_value());
    CHECK(t.error().Reason() == c.reason);
  }
}

TEST_CASE("git-credential: plain http only to loopback hosts") {
  // Whether git's HOST[:PORT] names a loopback host, and whether a URL does:
  // both through the one URL parser.
  auto loopback_url = [](std::string_view url) {
    auto u = net::ParseUrl(url, net::UrlPolicy::BrokerUrl());
    return u.has_value() && u->IsLoopback();
  };
  auto loopback = [&](std::string_view authority) {
    return loopback_url("http://" + std::string(authority));
  };
  CHECK(loopback("127.0.0.1:8080"));
  CHECK(loopback("127.1.2.3"));
  CHECK(loopback("localhost:3000"));
  CHECK(loopback("[::1]:443"));
  CHECK_FALSE(loopback("127.0.0.1.evil.example"));
  CHECK_FALSE(loopback("localhost.evil.example"));
  CHECK_FALSE(loopback("10.0.0.1"));
  CHECK_FALSE(loopback("[::2]"));
  CHECK_FALSE(loopback("127.0.0.1999"));
  CHECK(loopback_url("http://127.0.0.1:8443/prefix"));
  CHECK(loopback_url("https://[::1]/"));
  CHECK_FALSE(loopback_url("http://127.0.0.1@evil.example/"));
  CHECK_FALSE(loopback_url("http://localhost.evil.example/"));
  CHECK_FALSE(loopback_url("ftp://127.0.0.1/"));
  auto t = Resolve("protocol=http\nhost=127.0.0.1:9999\npath=acme/app.git\n", {"127.0.0.1:9999"});
  REQUIRE(t.has_value());
  CHECK(t->has_value());
}

TEST_CASE("git-credential: the answer is git's format") {
  CHECK(FormatGitCredential("ghs_abc.def", 1700000000) ==
        "username=x-access-token\npassword=ghs_abc.def\npassword_expiry_utc=1700000000\n");
  CHECK(FormatGitCredential("t", std::nullopt) == "username=x-access-token\npassword=t\n");
}

TEST_CASE("git-credential: the broker's own host is answered with the session") {
  const std::map<std::string, std::string> broker = {{"protocol", "https"},
                                                     {"host", "jitbroker.internal:8443"},
                                                     {"path", "git/github.com/a/b.git"}};
  CHECK(IsBrokerRemote(broker, "https://jitbroker.internal:8443"));
  CHECK(IsBrokerRemote(broker, "https://JITBROKER.internal:8443/"));
  CHECK_FALSE(IsBrokerRemote(broker, "http://jitbroker.internal:8443"));  // another protocol
  CHECK_FALSE(IsBrokerRemote(broker, "https://jitbroker.internal"));      // another port
  CHECK_FALSE(IsBrokerRemote({{"protocol", "https"}, {"host", "github.com"}},
                             "https://jitbroker.internal:8443"));
  CHECK(FormatSessionCredential("ses_a", "jbs_a_b") == "username=ses_a\npassword=jbs_a_b\n");
  CHECK_FALSE(FormatSessionCredential("ses_a", "jbs\nprotocol=x").has_value());
  CHECK(GitProxyUrl("https://b.example:8443/", "github.com", "acme/app") ==
        "https://b.example:8443/git/github.com/acme/app.git");
  CHECK(GitProxyUrl("http://127.0.0.1:1", "127.0.0.1:2", "acme/app.git") ==
        "http://127.0.0.1:1/git/127.0.0.1:2/acme/app.git");
  CHECK_FALSE(GitProxyUrl("https://b", "github.com", "acme").has_value());
  CHECK_FALSE(GitProxyUrl("https://b", "github.com", "acme/../x").has_value());
  CHECK_FALSE(GitProxyUrl("https://b", "evil.example/x", "acme/app").has_value());
}

TEST_CASE("git-credential: git's invocation parses (action after the flags)") {
  auto inv =
      ParseCommandLine({"git-credential", "--host", "127.0.0.1:1", "--access", "read", "get"});
  REQUIRE(inv.has_value());
  CHECK(inv->command->name == "git-credential");
  CHECK(inv->args.args == std::vector<std::string>{"get"});
  CHECK(inv->args.All("host") == std::vector<std::string>{"127.0.0.1:1"});
}

}  // namespace
}  // namespace jitbroker::cli
