// The pure half of `jitctl aws credential-process`, `aws serve` and `exec`
// (cli/agent_credentials.h), and the container credentials endpoint
// (cli/aws_serve.h) on a real loopback listener with a fake clock and a
// fake broker.
#include <atomic>
#include <functional>
#include <memory>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <doctest/doctest.h>
#include <httplib.h>
#include <nlohmann/json.hpp>

#include "broker/common/time_util.h"
#include "broker/http/transport.h"
#include "cli/agent_credentials.h"
#include "cli/args.h"
#include "cli/aws_serve.h"
#include "cli/gcp_serve.h"
#include "tests/fakes/fake_clock.h"

namespace jitbroker::cli {
namespace agent_credentials_test {

using nlohmann::json;

json AwsGrant() {
  return {{"grant_id", "grt_1"},
          {"state", "active"},
          {"expires_at", "2026-12-05T12:20:00Z"},
          {"credential",
           {{"type", "aws_credentials"},
            {"access_key_id", "ASIAEXAMPLE"},
            {"secret_access_key", "se\"cret/+key"},
            {"session_token", "tok\\en"},
            {"expiration", "2026-12-05T12:30:00Z"},
            {"expires_at", "2026-12-05T12:20:00Z"},
            {"region", "eu-west-1"},
            {"assumed_role_arn", "arn:aws:sts::123456789012:assumed-role/r/jb-grt_1"}}}};
}

// The flags of `argv` ("--name value" pairs after the command words) as
// the parser would store them.
ParsedArgs FlagArgs(const std::vector<std::string>& argv) {
  ParsedArgs a;
  size_t i = 0;
  while (i < argv.size() && !argv[i].starts_with("--")) {
    ++i;
  }
  for (; i + 1 < argv.size(); i += 2) {
    a.values[argv[i].substr(2)].push_back(argv[i + 1]);
  }
  return a;
}

ParsedArgs Args(std::vector<std::string> argv) {
  ParseResult r = ParseCommandLine(argv);
  INFO((r ? std::string() : r.error().message));
  REQUIRE(r.has_value());
  return r->args;
}

TEST_CASE("aws credential-process: the account comes from the role resource") {
  CHECK(AwsAccountOf("aws://123456789012/role/ci-deploy").value() == "123456789012");
  CHECK(AwsAccountOf("aws://123456789012/role/team/data/reader").value() == "123456789012");
  for (const char* bad : {"aws://12345/role/x", "github://acme/app", "aws://123456789012/user/x",
                          "aws://123456789012/role/", ""}) {
    CAPTURE(bad);
    auto r = AwsAccountOf(bad);
    REQUIRE_FALSE(r.has_value());
    CHECK(r.error().Reason() == "invalid_resource");
  }
}

TEST_CASE("aws credential-process: the SDK JSON has exactly AWS's shape") {
  Result<AwsCredential> c = AwsCredentialFromGrant(AwsGrant());
  REQUIRE(c.has_value());
  SecretValue text = CredentialProcessJson(*c, "123456789012");
  const std::string s(text.Reveal());
  CHECK(s.find('\n') == std::string::npos);
  json j = json::parse(s);
  CHECK(j == json{{"Version", 1},
                  {"AccessKeyId", "ASIAEXAMPLE"},
                  {"SecretAccessKey", "se\"cret/+key"},
                  {"SessionToken", "tok\\en"},
                  {"Expiration", "2026-12-05T12:20:00Z"},
                  {"AccountId", "123456789012"}});
  CHECK(j["Version"].is_number_integer());  // AWS requires the integer 1, not "1"
  CHECK(s.starts_with("{\"Version\":1,\"AccessKeyId\":"));
  // Without an account the key is left out rather than empty.
  CHECK_FALSE(json::parse(CredentialProcessJson(*c, "").Reveal()).contains("AccountId"));
}

TEST_CASE("aws credential-process: Expiration is the grant's end, not STS's") {
  json g = AwsGrant();
  // STS's credential outlives a grant shorter than its 15-minute floor.
  g["expires_at"] = "2026-12-05T12:05:00Z";
  g["credential"]["expires_at"] = "2026-12-05T12:05:00Z";
  g["credential"]["expiration"] = "2026-12-05T12:15:00Z";
  Result<AwsCredential> c = AwsCredentialFromGrant(g);
  REQUIRE(c.has_value());
  CHECK(FormatRfc3339(c->expires_at) == "2026-12-05T12:05:00Z");
  // The earliest wins even when only the credential carries it.
  g.erase("expires_at");
  g["credential"]["expires_at"] = "2026-12-05T12:04:00+00:00";
  c = AwsCredentialFromGrant(g);
  REQUIRE(c.has_value());
  CHECK(json::parse(CredentialProcessJson(*c, "1").Reveal())["Expiration"] ==
        "2026-12-05T12:04:00Z");
}

TEST_CASE("aws credential-process: an answer that is not an AWS credential is refused") {
  struct Case {
    const char* name;
    json grant;
  };
  json no_secret = AwsGrant();
  no_secret["credential"].erase("secret_access_key");
  json empty_token = AwsGrant();
  empty_token["credential"]["session_token"] = "";
  json bad_time = AwsGrant();
  bad_time["expires_at"] = "tomorrow";
  json no_time = AwsGrant();
  no_time.erase("expires_at");
  no_time["credential"].erase("expires_at");
  no_time["credential"].erase("expiration");
  json jwt = {{"credential", {{"type", "jwt"}, {"token", "eyJ"}}}};
  for (const Case& c :
       {Case{"no credential", {{"grant_id", "grt_1"}}}, Case{"a jwt", jwt},
        Case{"no secret key", no_secret}, Case{"an empty session token", empty_token},
        Case{"an unparseable expiry", bad_time}, Case{"no expiry", no_time},
        Case{"not an object", json::array()}}) {
    CAPTURE(c.name);
    Result<AwsCredential> r = AwsCredentialFromGrant(c.grant);
    REQUIRE_FALSE(r.has_value());
    CHECK(r.error().Reason() == "unexpected_credential");
    // The message never quotes a secret.
    CHECK(r.error().message.find("se\"cret") == std::string::npos);
  }
}

TEST_CASE("aws serve: the container JSON calls the session token Token") {
  Result<AwsCredential> c = AwsCredentialFromGrant(AwsGrant());
  REQUIRE(c.has_value());
  json j = json::parse(ContainerCredentialsJson(*c, "123456789012").Reveal());
  CHECK(j == json{{"AccessKeyId", "ASIAEXAMPLE"},
                  {"SecretAccessKey", "se\"cret/+key"},
                  {"Token", "tok\\en"},
                  {"Expiration", "2026-12-05T12:20:00Z"},
                  {"AccountId", "123456789012"}});
  CHECK(json::parse(ContainerErrorJson("grant_denied", "denied: \"no\"\n")) ==
        json{{"code", "grant_denied"}, {"message", "denied: \"no\"\n"}});
}

TEST_CASE("aws serve: a credential is replaced 60 s before its end, or at half a short life") {
  const TimePoint t0 = FromUnixSeconds(1800000000);
  using std::chrono::seconds;
  CHECK(RefreshMargin(t0, t0 + seconds(900)) == seconds(60));
  CHECK(RefreshMargin(t0, t0 + seconds(120)) == seconds(60));
  CHECK(RefreshMargin(t0, t0 + seconds(60)) == seconds(30));
  CHECK(RefreshMargin(t0, t0) == seconds(0));
  CHECK_FALSE(NeedsRefresh(t0, t0 + seconds(900), t0 + seconds(839)));
  CHECK(NeedsRefresh(t0, t0 + seconds(900), t0 + seconds(840)));
  CHECK_FALSE(NeedsRefresh(t0, t0 + seconds(10), t0 + seconds(4)));
  CHECK(NeedsRefresh(t0, t0 + seconds(10), t0 + seconds(5)));
  CHECK(NeedsRefresh(t0, t0 + seconds(900), t0 + seconds(1000)));  // expired
}

TEST_CASE("aws credential-process: the grant request and its defaults") {
  const std::vector<std::string> base = {"aws",
                                         "credential-process",
                                         "--resource",
                                         "aws://123456789012/role/ci-deploy",
                                         "--action",
                                         "s3:GetObject",
                                         "--action",
                                         "s3:ListBucket",
                                         "--arn-resource",
                                         "arn:aws:s3:::acme/*"};
  SUBCASE("defaults") {
    auto body = BuildAwsGrantBody(FlagArgs(base), "aws credential-process", "aws", 3600);
    REQUIRE(body.has_value());
    CHECK(*body == json{{"tool", "aws.s3"},
                        {"operation", "read"},
                        {"resource", "aws://123456789012/role/ci-deploy"},
                        {"issuer", "aws"},
                        {"scope",
                         {{"actions", {"s3:GetObject", "s3:ListBucket"}},
                          {"resources", {"arn:aws:s3:::acme/*"}}}},
                        {"ttl_seconds", 3600},
                        {"justification",
                         "jitctl aws credential-process for aws://123456789012/role/ci-deploy"}});
    auto no_ttl = BuildAwsGrantBody(FlagArgs(base), "aws serve", "aws-prod", std::nullopt);
    REQUIRE(no_ttl.has_value());
    CHECK_FALSE(no_ttl->contains("ttl_seconds"));
    CHECK((*no_ttl)["issuer"] == "aws-prod");
  }
  SUBCASE("flags win") {
    std::vector<std::string> argv = base;
    for (const char* f : {"--tool", "aws.s3.get_object", "--operation", "get", "--issuer", "aws2",
                          "--ttl", "900", "--justification", "fetch the build"}) {
      argv.emplace_back(f);
    }
    auto body = BuildAwsGrantBody(FlagArgs(argv), "aws credential-process", "aws", 3600);
    REQUIRE(body.has_value());
    CHECK((*body)["tool"] == "aws.s3.get_object");
    CHECK((*body)["operation"] == "get");
    CHECK((*body)["issuer"] == "aws2");
    CHECK((*body)["ttl_seconds"] == 900);
    CHECK((*body)["justification"] == "fetch the build");
  }
  SUBCASE("mistakes are reported before any call") {
    struct Case {
      std::vector<std::string> extra;
      const char* says;
    };
    for (const Case& c : {Case{{"--ttl", "0"}, "--ttl"}, Case{{"--ttl", "1h"}, "--ttl"},
                          Case{{"--action", "GetObject"}, "--action"},
                          Case{{"--arn-resource", "bucket"}, "--arn-resource"}}) {
      std::vector<std::string> argv = base;
      argv.insert(argv.end(), c.extra.begin(), c.extra.end());
      auto body = BuildAwsGrantBody(FlagArgs(argv), "aws credential-process", "aws", 3600);
      REQUIRE_FALSE(body.has_value());
      CHECK_MESSAGE(body.error().find(c.says) != std::string::npos, body.error());
    }
    std::vector<std::string> argv = base;
    argv[3] = "aws://123456789012/user/bob";
    auto body = BuildAwsGrantBody(FlagArgs(argv), "aws credential-process", "aws", 3600);
    REQUIRE_FALSE(body.has_value());
    CHECK(body.error().find("--resource") != std::string::npos);
  }
}

TEST_CASE("aws credential-process: default tool and operation follow the actions") {
  struct Case {
    std::vector<std::string> actions;
    const char* tool;
    const char* operation;
  };
  for (const Case& c : {Case{{"s3:GetObject"}, "aws.s3", "read"},
                        Case{{"S3:GetObject", "s3:List*"}, "aws.s3", "read"},
                        Case{{"s3:PutObject", "s3:GetObject"}, "aws.s3", "write"},
                        Case{{"s3:DeleteObject"}, "aws.s3", "write"},
                        Case{{"s3:GetObject", "dynamodb:Query"}, "aws", "read"},
                        Case{{"iam:GetRole"}, "aws.iam", "write"},  // a secret-tier action
                        Case{{"*"}, "aws", "write"}, Case{{"s3:*"}, "aws.s3", "write"}}) {
    CAPTURE(c.actions.front());
    CHECK(DefaultAwsTool(c.actions) == c.tool);
    CHECK(DefaultAwsOperation(c.actions) == c.operation);
  }
}

std::vector<std::string> Env(const json& credential, const std::vector<std::string>& parent = {}) {
  Result<ExecEnvironment> env = ExecEnvironmentFor(credential);
  INFO((env ? std::string() : env.error().message));
  REQUIRE(env.has_value());
  return MergeEnvironment(parent, *env);
}

bool Has(const std::vector<std::string>& env, const std::string& entry) {
  return std::find(env.begin(), env.end(), entry) != env.end();
}

bool HasName(const std::vector<std::string>& env, const std::string& name) {
  return std::any_of(env.begin(), env.end(),
                     [&](const std::string& e) { return e.starts_with(name + "="); });
}

TEST_CASE("exec: an AWS credential replaces whatever AWS setup the parent had") {
  const std::vector<std::string> parent = {
      "PATH=/usr/bin",
      "HOME=/home/agent",
      "AWS_PROFILE=admin",
      "AWS_DEFAULT_PROFILE=admin",
      "AWS_ACCESS_KEY_ID=AKIASTANDING",
      "AWS_SECRET_ACCESS_KEY=standing",
      "AWS_SESSION_TOKEN=old",
      "AWS_SECURITY_TOKEN=old",
      "AWS_REGION=us-east-1",
      "AWS_CONTAINER_CREDENTIALS_FULL_URI=http://127.0.0.1:1/creds",
      "AWS_CONTAINER_AUTHORIZATION_TOKEN=x",
      "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE=/tmp/t",
      "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI=/v2/creds",
      "AWS_SHARED_CREDENTIALS_FILE=/home/agent/.aws/credentials",
      "AWS_WEB_IDENTITY_TOKEN_FILE=/var/run/token",
      "AWS_ROLE_ARN=arn:aws:iam::1:role/x",
      "AWS_CONFIG_FILE=/home/agent/.aws/config",
      "JITBROKER_URL=http://127.0.0.1:8443",
      "JITBROKER_SESSION_ID=ses_1",
      "JITBROKER_SESSION_TOKEN=jbs_secret",
      "JITBROKER_API_KEY=jbk_secret",
      "not-an-entry",
  };
  const std::vector<std::string> env = Env(AwsGrant()["credential"], parent);
  CHECK(env == std::vector<std::string>{
                   "PATH=/usr/bin", "HOME=/home/agent", "AWS_CONFIG_FILE=/home/agent/.aws/config",
                   "JITBROKER_URL=http://127.0.0.1:8443", "JITBROKER_SESSION_ID=ses_1",
                   "AWS_ACCESS_KEY_ID=ASIAEXAMPLE", "AWS_SECRET_ACCESS_KEY=se\"cret/+key",
                   "AWS_SESSION_TOKEN=tok\\en", "AWS_REGION=eu-west-1",
                   "AWS_DEFAULT_REGION=eu-west-1"});
}

TEST_CASE("exec: tokens go where their tools look for them") {
  const std::vector<std::string> parent = {"GH_TOKEN=ghp_standing", "TERM=xterm",
                                           "JITBROKER_SESSION_TOKEN=jbs_secret"};
  auto gh = Env({{"type", "github_installation_token"}, {"token", "ghs_abc"}, {"expires_at", "x"}},
                parent);
  CHECK(gh == std::vector<std::string>{"TERM=xterm", "GH_TOKEN=ghs_abc", "GITHUB_TOKEN=ghs_abc"});
  auto jwt = Env({{"type", "jwt"}, {"token", "eyJ.x.y"}}, parent);
  CHECK(jwt ==
        std::vector<std::string>{"GH_TOKEN=ghp_standing", "TERM=xterm", "JITBROKER_TOKEN=eyJ.x.y"});
  auto other = Env({{"type", "gcp_access_token"}, {"token", "ya29.x"}});
  CHECK(other == std::vector<std::string>{"JITBROKER_TOKEN=ya29.x"});
  // gcp: gcloud's and the client libraries' variables; nothing that would
  // make them use a key file, another account or the metadata server.
  auto gcp = Env({{"type", "gcp"},
                  {"access_token", "ya29.grant"},
                  {"expires_at", "x"},
                  {"service_account", "ci@acme-prod.iam.gserviceaccount.com"},
                  {"scopes", {"https://www.googleapis.com/auth/cloud-platform"}}},
                 {"GOOGLE_APPLICATION_CREDENTIALS=/home/dev/key.json", "GCE_METADATA_HOST=x",
                  "CLOUDSDK_CORE_ACCOUNT=dev@example.com", "TERM=xterm"});
  CHECK(gcp == std::vector<std::string>{"TERM=xterm", "CLOUDSDK_AUTH_ACCESS_TOKEN=ya29.grant",
                                        "GOOGLE_OAUTH_ACCESS_TOKEN=ya29.grant"});
  CHECK_FALSE(ExecEnvironmentFor(json{{"type", "gcp"}, {"token", "ya29.x"}}));
  // An AWS credential without a region sets no region.
  json aws = AwsGrant()["credential"];
  aws.erase("region");
  auto no_region = Env(aws);
  CHECK_FALSE(HasName(no_region, "AWS_REGION"));
  CHECK_FALSE(HasName(no_region, "AWS_DEFAULT_REGION"));
  CHECK(Has(no_region, "AWS_ACCESS_KEY_ID=ASIAEXAMPLE"));
}

TEST_CASE("exec: a credential with no usable secret is refused") {
  for (const json& c : {json{{"type", "something"}, {"key", "v"}}, json{{"type", "jwt"}},
                        json{{"type", "jwt"}, {"token", ""}}, json{{"type", "jwt"}, {"token", 7}},
                        json{{"type", "jwt"}, {"token", std::string("a\0b", 3)}},
                        json{{"type", "aws_credentials"}, {"access_key_id", "A"}}, json()}) {
    CAPTURE(c.dump());
    Result<ExecEnvironment> env = ExecEnvironmentFor(c);
    REQUIRE_FALSE(env.has_value());
    CHECK(env.error().Reason() == "unexpected_credential");
  }
}

TEST_CASE("exec: the command line puts the command after --") {
  ParsedArgs a = Args({"exec", "--tool", "t", "--operation", "read", "--resource", "jwt://x",
                       "--issuer", "i", "--", "sh", "-c", "echo $X", "--json"});
  CHECK(a.double_dash_at == std::optional<size_t>(0));
  CHECK(a.args == std::vector<std::string>{"sh", "-c", "echo $X", "--json"});
  CHECK_FALSE(a.Switch("json"));  // after --, it is the command's
  ParsedArgs before = Args({"exec", "--tool", "t", "--operation", "read", "--resource", "jwt://x",
                            "--issuer", "i", "sh", "--", "x"});
  CHECK(before.double_dash_at == std::optional<size_t>(1));
  ParsedArgs none = Args(
      {"exec", "--tool", "t", "--operation", "read", "--resource", "jwt://x", "--issuer", "i"});
  CHECK_FALSE(none.double_dash_at.has_value());
}

TEST_CASE("WipeJsonStrings zeroes every string in place") {
  json j = {{"a", "secret"}, {"b", {{"c", "token"}, {"d", {"x", 1}}}}};
  WipeJsonStrings(j);
  CHECK(j["a"] == std::string(6, '\0'));
  CHECK(j["b"]["c"] == std::string(5, '\0'));
  CHECK(j["b"]["d"][0] == std::string(1, '\0'));
  CHECK(j["b"]["d"][1] == 1);
}

// ---------------------------------------------------------------------------
// The endpoint on a real loopback listener.

// A loopback endpoint under test: a fake clock, a fetch that counts (or
// refuses, as the broker would), the log, and a real listener.
template <class C, class H>
struct Served {
  testing::FakeClock clock{FromUnixSeconds(1800000000)};
  std::atomic<int> fetches{0};
  std::atomic<bool> deny{false};
  std::ostringstream log;
  std::unique_ptr<H> handler;
  std::unique_ptr<http::Transport> listener;
  std::thread thread;
  int port = 0;

  Served() = default;
  Served(const Served&) = delete;
  Served& operator=(const Served&) = delete;
  ~Served() {
    if (listener) {
      listener->Stop(std::chrono::milliseconds(1000));
      thread.join();
    }
  }

  // The endpoint's fetch: make(n) is the n-th credential, from grant grt_n.
  std::function<FetchedCredential<C>()> Fetch(std::function<C(int)> make) {
    return [this, make = std::move(make)] {
      FetchedCredential<C> f;
      if (deny) {
        f.status = 403;
        f.code = "out_of_scope";
        f.message = "denied: not in the task scope";
        return f;
      }
      const int n = ++fetches;
      f.credential = make(n);
      f.grant_id = "grt_" + std::to_string(n);
      f.status = 200;
      return f;
    };
  }

  void Listen(std::unique_ptr<H> h) {
    handler = std::move(h);
    auto t = http::Transport::Create(LoopbackEndpointOptions(0), handler.get());
    REQUIRE(t.has_value());
    listener = std::move(*t);
    auto p = listener->Bind();
    REQUIRE(p.has_value());
    port = *p;
    thread = std::thread([this] { listener->Serve(); });
  }
};

struct Endpoint : Served<AwsCredential, CredentialEndpoint> {
  explicit Endpoint(std::chrono::seconds lifetime) {
    CredentialEndpointOptions o;
    o.token = SecretValue("the-token");
    o.account_id = "123456789012";
    o.clock = &clock;
    o.log = &log;
    o.fetch = Fetch([this, lifetime](int n) {
      AwsCredential c;
      c.access_key_id = "ASIA" + std::to_string(n);
      c.secret_access_key = SecretValue("secret" + std::to_string(n));
      c.session_token = SecretValue("token" + std::to_string(n));
      c.expires_at = clock.Now() + lifetime;
      return c;
    });
    Listen(std::make_unique<CredentialEndpoint>(std::move(o)));
  }

  httplib::Result Get(const std::string& path, const char* authorization = "the-token") {
    httplib::Client client("127.0.0.1", port);
    httplib::Headers headers;
    if (authorization != nullptr) {
      headers.emplace("Authorization", authorization);
    }
    return client.Get(path.c_str(), headers);
  }
};

TEST_CASE("aws serve: the endpoint answers the right token only, from its cache") {
  Endpoint e(std::chrono::seconds(900));
  auto r = e.Get("/creds");
  REQUIRE(r);
  CHECK(r->status == 200);
  json j = json::parse(r->body);
  CHECK(j["AccessKeyId"] == "ASIA1");
  CHECK(j["Token"] == "token1");
  CHECK(j["AccountId"] == "123456789012");
  CHECK(r->get_header_value("Cache-Control") == "no-store");
  // Polling does not ask the broker again until the refresh margin.
  e.clock.Advance(std::chrono::seconds(839));
  CHECK(json::parse(e.Get("/creds")->body)["AccessKeyId"] == "ASIA1");
  CHECK(e.fetches == 1);
  e.clock.Advance(std::chrono::seconds(1));
  CHECK(json::parse(e.Get("/creds")->body)["AccessKeyId"] == "ASIA2");
  CHECK(e.fetches == 2);

  SUBCASE("a wrong, missing or padded token is 401 and fetches nothing") {
    // (Spaces around a header value are not part of it in HTTP: "the-token "
    // is the token.)
    for (std::string bad :
         {"the-token x", "Bearer the-token", "the-toke", "THE-TOKEN", "", "the-token, the-token"}) {
      CAPTURE(bad);
      auto w = e.Get("/creds", bad.c_str());
      REQUIRE(w);
      CHECK(w->status == 401);
      CHECK(json::parse(w->body)["code"] == "unauthorized");
      CHECK(w->body.find("secret") == std::string::npos);
    }
    auto none = e.Get("/creds", nullptr);
    REQUIRE(none);
    CHECK(none->status == 401);
    CHECK(e.fetches == 2);
    CHECK(e.log.str().find("the-token") == std::string::npos);
  }
  SUBCASE("other paths and methods are refused") {
    auto other = e.Get("/latest/meta-data/");
    REQUIRE(other);
    CHECK(other->status == 404);
    httplib::Client client("127.0.0.1", e.port);
    auto post = client.Post("/creds", httplib::Headers{{"Authorization", "the-token"}}, "",
                            "application/json");
    REQUIRE(post);
    CHECK(post->status == 405);
    CHECK(json::parse(post->body).contains("code"));
    auto body = client.Post("/creds", httplib::Headers{{"Authorization", "the-token"}}, "{}",
                            "application/json");
    REQUIRE(body);
    CHECK(body->status == 413);
    CHECK(e.fetches == 2);
  }
  SUBCASE("a denied refresh answers the decision and drops the cache") {
    e.deny = true;
    e.clock.Advance(std::chrono::seconds(900));
    auto d = e.Get("/creds");
    REQUIRE(d);
    CHECK(d->status == 403);
    CHECK(json::parse(d->body) ==
          json{{"code", "out_of_scope"}, {"message", "denied: not in the task scope"}});
    e.deny = false;
    CHECK(json::parse(e.Get("/creds")->body)["AccessKeyId"] == "ASIA3");
  }
}

TEST_CASE("aws serve: a short credential is replaced at half its life") {
  Endpoint e(std::chrono::seconds(20));
  CHECK(json::parse(e.Get("/creds")->body)["AccessKeyId"] == "ASIA1");
  e.clock.Advance(std::chrono::seconds(9));
  CHECK(json::parse(e.Get("/creds")->body)["AccessKeyId"] == "ASIA1");
  e.clock.Advance(std::chrono::seconds(1));
  CHECK(json::parse(e.Get("/creds")->body)["AccessKeyId"] == "ASIA2");
}

// ---------------------------------------------------------------------------
// gcp serve

constexpr const char* kGcpSa = "reader@acme-prod.iam.gserviceaccount.com";
constexpr const char* kGcpReadScope = "https://www.googleapis.com/auth/devstorage.read_only";
constexpr const char* kGcpBroadScope = "https://www.googleapis.com/auth/cloud-platform";

TEST_CASE("gcp serve: the grant request from flags, checked by the gcp issuer's parser") {
  const std::string resource = std::string("gcp://acme-prod/serviceAccounts/") + kGcpSa;
  auto body = BuildGcpGrantBody(
      FlagArgs({"--resource", resource, "--scope", "devstorage.read_only", "--ttl", "600"}),
      "gcp serve", "gcp");
  REQUIRE(body.has_value());
  CHECK(*body == json{{"tool", "gcp"},
                      {"operation", "read"},
                      {"resource", resource},
                      {"issuer", "gcp"},
                      {"scope", {{"scopes", {kGcpReadScope}}}},
                      {"ttl_seconds", 600},
                      {"justification", "jitctl gcp serve for " + resource}});
  // cloud-platform writes unless a boundary of viewers narrows it.
  auto broad = BuildGcpGrantBody(FlagArgs({"--resource", resource, "--scope", kGcpBroadScope}),
                                 "gcp serve", "gcp-prod");
  REQUIRE(broad.has_value());
  CHECK((*broad)["operation"] == "write");
  CHECK((*broad)["issuer"] == "gcp-prod");
  CHECK_FALSE(broad->contains("ttl_seconds"));
  auto bounded = BuildGcpGrantBody(
      FlagArgs({"--resource", resource, "--scope", "cloud-platform", "--storage",
                "acme-artifacts/builds/=objectViewer", "--storage", "acme-logs=objectViewer"}),
      "gcp serve", "gcp");
  REQUIRE(bounded.has_value());
  CHECK((*bounded)["operation"] == "read");
  CHECK((*bounded)["scope"] ==
        json{{"scopes", {kGcpBroadScope}},
             {"storage",
              {{{"bucket", "acme-artifacts"}, {"prefix", "builds/"}, {"role", "objectViewer"}},
               {{"bucket", "acme-logs"}, {"role", "objectViewer"}}}}});

  for (const std::vector<std::string>& bad : std::vector<std::vector<std::string>>{
           {"--resource", "gcp://acme-prod/" + std::string(kGcpSa), "--scope", "cloud-platform"},
           {"--resource", "aws://123456789012/role/x", "--scope", "cloud-platform"},
           {"--resource", resource, "--scope", ""},
           {"--resource", resource, "--scope", "cloud-platform", "--storage", "acme-artifacts"},
           {"--resource", resource, "--scope", "cloud-platform", "--storage", "acme=owner"},
           {"--resource", resource, "--scope", "cloud-platform", "--storage", "UPPER=objectViewer"},
           {"--resource", resource, "--scope", "bigquery", "--storage", "acme=objectViewer"},
           {"--resource", resource, "--scope", "cloud-platform", "--ttl", "0"},
       }) {
    CAPTURE(bad);
    CHECK_FALSE(BuildGcpGrantBody(FlagArgs(bad), "gcp serve", "gcp").has_value());
  }
}

TEST_CASE("gcp serve: the credential of a grant, ending at the earlier expiry") {
  json grant = {{"grant_id", "grt_1"},
                {"expires_at", "2027-01-15T10:05:00Z"},
                {"credential",
                 {{"type", "gcp"},
                  {"access_token", "ya29.secret"},
                  {"expires_at", "2027-01-15T10:10:00Z"},
                  {"service_account", kGcpSa},
                  {"scopes", {kGcpReadScope}}}}};
  auto c = GcpCredentialFromGrant(grant);
  REQUIRE(c.has_value());
  CHECK(c->access_token.Reveal() == "ya29.secret");
  CHECK(c->expires_at == *ParseRfc3339("2027-01-15T10:05:00Z"));
  CHECK(c->service_account == kGcpSa);
  CHECK(c->scopes == std::vector<std::string>{kGcpReadScope});

  SecretValue answer = MetadataTokenJson(*c, *ParseRfc3339("2027-01-15T10:00:01Z"));
  CHECK(json::parse(answer.Reveal()) ==
        json{{"access_token", "ya29.secret"}, {"expires_in", 299}, {"token_type", "Bearer"}});
  CHECK(json::parse(
            MetadataTokenJson(*c, *ParseRfc3339("2027-01-15T11:00:00Z")).Reveal())["expires_in"] ==
        0);

  json aws = grant;
  aws["credential"]["type"] = "aws_credentials";
  auto wrong = GcpCredentialFromGrant(aws);
  REQUIRE_FALSE(wrong.has_value());
  CHECK(wrong.error().reason == "unexpected_credential");
  CHECK(wrong.error().message.find("not gcp") != std::string::npos);
  for (const char* key : {"access_token", "service_account", "scopes"}) {
    json missing = grant;
    missing["credential"].erase(key);
    CAPTURE(key);
    CHECK_FALSE(GcpCredentialFromGrant(missing).has_value());
  }
  json bad_time = grant;
  bad_time["credential"]["expires_at"] = "soon";
  CHECK_FALSE(GcpCredentialFromGrant(bad_time).has_value());
}

struct Metadata : Served<GcpCredential, MetadataEndpoint> {
  Metadata() {
    MetadataEndpointOptions o;
    o.project = "acme-prod";
    o.service_account = kGcpSa;
    o.scopes = {kGcpReadScope};
    o.clock = &clock;
    o.log = &log;
    o.fetch = Fetch([this](int n) {
      GcpCredential c;
      c.access_token = SecretValue("ya29.token" + std::to_string(n));
      c.expires_at = clock.Now() + std::chrono::seconds(600);
      c.service_account = kGcpSa;
      c.scopes = {kGcpReadScope};
      return c;
    });
    Listen(std::make_unique<MetadataEndpoint>(std::move(o)));
  }

  httplib::Result Get(const std::string& path) {
    httplib::Client client("127.0.0.1", port);
    return client.Get(path.c_str(), httplib::Headers{{"Metadata-Flavor", "Google"}});
  }
  json Token() {
    auto r = Get("/computeMetadata/v1/instance/service-accounts/default/token");
    REQUIRE(r);
    INFO(r->body);
    REQUIRE(r->status == 200);
    return json::parse(r->body);
  }
};

TEST_CASE("gcp serve: the metadata paths the libraries read, and the token from the cache") {
  Metadata m;
  const std::string sa = std::string("/computeMetadata/v1/instance/service-accounts/");
  struct Case {
    std::string path;
    std::string body;
    std::string type;
  };
  for (const Case& c : std::vector<Case>{
           {"/", "computeMetadata/\n", "application/text"},
           {"/computeMetadata/v1/project/project-id", "acme-prod", "application/text"},
           {sa, "default/\n" + std::string(kGcpSa) + "/\n", "application/text"},
           {sa + "default/email", kGcpSa, "application/text"},
           {sa + kGcpSa + "/email", kGcpSa, "application/text"},
           {sa + "default/scopes", std::string(kGcpReadScope) + "\n", "application/text"},
           {sa + "default/?recursive=true",
            json{{"aliases", {"default"}}, {"email", kGcpSa}, {"scopes", {kGcpReadScope}}}.dump(),
            "application/json"},
       }) {
    CAPTURE(c.path);
    auto r = m.Get(c.path);
    REQUIRE(r);
    CHECK(r->status == 200);
    CHECK(r->body == c.body);
    CHECK(r->get_header_value("Content-Type") == c.type);
    CHECK(r->get_header_value("Metadata-Flavor") == "Google");
  }
  CHECK(m.fetches == 0);  // the first token was never primed here: fetched on demand

  CHECK(m.Token() ==
        json{{"access_token", "ya29.token1"}, {"expires_in", 600}, {"token_type", "Bearer"}});
  m.clock.Advance(std::chrono::seconds(539));
  CHECK(m.Token()["expires_in"] == 61);
  CHECK(m.fetches == 1);
  m.clock.Advance(std::chrono::seconds(1));
  CHECK(m.Token()["access_token"] == "ya29.token2");

  SUBCASE("a denied refresh answers the decision, drops the token, and recovers") {
    m.deny = true;
    m.clock.Advance(std::chrono::seconds(600));
    auto d = m.Get(sa + "default/token");
    REQUIRE(d);
    CHECK(d->status == 403);
    CHECK(json::parse(d->body) ==
          json{{"code", "out_of_scope"}, {"message", "denied: not in the task scope"}});
    CHECK(d->body.find("ya29") == std::string::npos);
    m.deny = false;
    CHECK(m.Token()["access_token"] == "ya29.token3");
  }
  SUBCASE("nothing in the log is a token") {
    CHECK(m.log.str().find("grt_2") != std::string::npos);
    CHECK(m.log.str().find("ya29") == std::string::npos);
  }
}

}  // namespace agent_credentials_test
}  // namespace jitbroker::cli
