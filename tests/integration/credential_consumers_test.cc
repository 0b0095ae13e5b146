// The commands that hand a grant's credential to another program, end to
// end: the real daemon, jitctl as a subprocess, and the consumers themselves
// — a shell under `jitctl exec`, FakeSts checking the keys of `jitctl aws
// credential-process`, and Debian's botocore fetching from `jitctl aws serve`.
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <memory>
#include <sstream>
#include <string>
#include <tuple>

#include <doctest/doctest.h>
#include <httplib.h>
#include <nlohmann/json.hpp>

#include "tests/fakes/fake_sts.h"
#include "tests/integration/jwt_interop.h"
#include "tests/support/broker_process.h"
#include "tests/support/child_process.h"
#include "tests/support/temp_dir.h"

namespace jitbroker::testing {
namespace credential_consumers_test {

using nlohmann::json;

constexpr const char* kAkid = "AKIAJITBROKERCLI0001";
constexpr const char* kSecret = "broker/cli/secret+EXAMPLE0123456789abcdef";
constexpr const char* kRole = "arn:aws:iam::123456789012:role/ci-deploy";
constexpr const char* kRoleResource = "aws://123456789012/role/ci-deploy";

std::string Quote(const std::string& s) {
  std::string out = "'";
  for (char c : s) {
    out += c == '\'' ? std::string("'\\''") : std::string(1, c);
  }
  return out + "'";
}

// The agent's environment for jitctl, as a shell prefix.
std::string AgentEnv(const BrokerProcess& b, const std::string& sid, const std::string& token) {
  return "env -u JITBROKER_API_KEY JITBROKER_URL=" + b.url() + " JITBROKER_SESSION_ID=" + sid +
         " JITBROKER_SESSION_TOKEN=" + Quote(token) + " ";
}

std::string Jitctl() { return std::string(JITCTL_BINARY) + " "; }

std::string ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

// ---------------------------------------------------------------------------
// jitctl exec

std::string ExecFlags(const std::string& resource = "jwt://mcp.internal") {
  return "exec --tool mcp.search --operation read --resource " + resource +
         " --issuer internal --param query=timeout ";
}

TEST_CASE("jitctl exec: the command gets a verifiable JWT and not the session token") {
  auto b = BrokerProcess::Start();
  auto [sid, token] = b->OpenSession(
      b->engineer_key,
      {{"resources", {"jwt://mcp.internal"}}, {"max_tier", "pr"}, {"issuers", {"internal"}}});
  // stdout only: on success jitctl itself prints nothing.
  auto [rc, out] = RunCommand(
      AgentEnv(*b, sid, token) + "JITBROKER_API_KEY=" + b->engineer_key + " " + Jitctl() +
      ExecFlags() +
      "-- sh -c 'printf %s \"$JITBROKER_TOKEN\"; "
      "printf \"|%s|%s|%s\" \"${JITBROKER_SESSION_TOKEN-unset}\" \"${JITBROKER_API_KEY-unset}\" "
      "\"$JITBROKER_SESSION_ID\"'");
  REQUIRE_MESSAGE(rc == 0, out);
  const size_t bar = out.find('|');
  REQUIRE(bar != std::string::npos);
  const std::string jwt = out.substr(0, bar);
  CHECK(out.substr(bar) == "|unset|unset|" + sid);
  CHECK(out.find(token) == std::string::npos);

  JwtParts p = SplitJwt(jwt);
  CHECK(p.payload["aud"] == "mcp.internal");
  auto jwks = b->Get("/.well-known/jwks.json");
  json key;
  for (const auto& k : jwks.json["keys"]) {
    if (k["kid"] == p.header["kid"]) {
      key = k;
    }
  }
  REQUIRE(key.is_object());
  CHECK(OpensslVerifiesJwt(jwt, key, b->dir() + "/verify"));

  // The grant was revoked when the command exited.
  const std::string grant_id = p.payload["jti"];
  auto g = b->Get("/v1/grants/" + grant_id, token);
  REQUIRE(g.status == 200);
  CHECK(g.json["state"] == "revoked");
  auto introspect = b->Request("POST", "/v1/introspect", b->admin_key, "token=" + jwt,
                               "application/x-www-form-urlencoded");
  CHECK(introspect.json["active"] == false);
}

TEST_CASE("jitctl exec: the command's status is jitctl's, as a shell reports it") {
  auto b = BrokerProcess::Start();
  auto [sid, token] = b->OpenSession(
      b->engineer_key,
      {{"resources", {"jwt://mcp.internal"}}, {"max_tier", "pr"}, {"issuers", {"internal"}}});
  const std::string run = AgentEnv(*b, sid, token) + Jitctl() + ExecFlags();
  CHECK(RunCommand(run + "-- sh -c 'exit 7'").first == 7);
  CHECK(RunCommand(run + "-- true").first == 0);
  CHECK(RunCommand(run + "-- sh -c 'kill -TERM $$'").first == 128 + SIGTERM);
  auto [rc, out] = RunCommand(run + "-- /nonexistent/jitctl-test-command");
  CHECK(rc == 127);
  CHECK(out.find("command not found") != std::string::npos);
  // Usage: the command goes after --.
  CHECK(RunCommand(run + "sh -c true").first == 2);
  CHECK(RunCommand(run + "--").first == 2);
  // Each run was its own grant, and each was revoked after its command.
  auto s = b->Get("/v1/sessions/" + sid, token);
  REQUIRE(s.status == 200);
  int revoked = 0;
  for (const auto& g : s.json["grants"]) {
    CHECK(g["state"] == "revoked");
    ++revoked;
  }
  CHECK(revoked == 4);
}

TEST_CASE(
    "jitctl exec: a denied grant is exit 4 and a pending one exit 3, the command never runs") {
  auto b = BrokerProcess::Start();
  {
    auto [sid, token] = b->OpenSession(
        b->engineer_key,
        {{"resources", {"jwt://mcp.internal"}}, {"max_tier", "pr"}, {"issuers", {"internal"}}});
    auto [rc, out] = RunCommand(AgentEnv(*b, sid, token) + Jitctl() +
                                ExecFlags("jwt://api.internal") + "-- echo RAN");
    CHECK_MESSAGE(rc == 4, out);
    CHECK(out.find("denied") != std::string::npos);
    CHECK(out.find("RAN") == std::string::npos);
  }
  {
    auto [sid, token] = b->OpenSession(
        b->maintainer_key, {{"resources", {"jwt://api.internal"}}, {"max_tier", "merge_deploy"}});
    auto [rc, out] =
        RunCommand(AgentEnv(*b, sid, token) + Jitctl() +
                   "exec --tool github.merge_pull_request --operation merge --resource "
                   "jwt://api.internal --issuer internal -- echo RAN");
    CHECK_MESSAGE(rc == 3, out);
    CHECK(out.find("pending approval") != std::string::npos);
    CHECK(out.find("RAN") == std::string::npos);
  }
}

// ---------------------------------------------------------------------------
// AWS: a broker with an aws_sts issuer on FakeSts.

struct AwsWorld {
  TempDir dir{"jitbroker-awscli"};
  std::unique_ptr<FakeSts> sts;  // declared before the broker: stops after it
  std::unique_ptr<BrokerProcess> broker;
  std::string sid, token;

  AwsWorld() {
    FakeStsOptions o;
    o.keys = {{kAkid, kSecret}};
    sts = FakeSts::Start(o);
    REQUIRE(sts != nullptr);
    sts->AddRole({kRole, 3600, {kAkid}, "", {kAkid}});
    dir.Write("akid", kAkid);
    dir.Write("secret", kSecret);
    BrokerOptions bo;
    bo.extra_issuers = "  aws: {type: aws_sts, region: us-east-1, endpoint: '" + sts->url() +
                       "', iam_endpoint: '" + sts->url() +
                       "', allow_http: true, accounts: ['123456789012'], credentials: "
                       "{access_key_id: file:" +
                       dir.File("akid") + ", secret_access_key: file:" + dir.File("secret") +
                       "}}\n";
    broker = BrokerProcess::Start(bo);
    std::tie(sid, token) = broker->OpenSession(
        broker->admin_key,
        {{"resources", {kRoleResource}}, {"max_tier", "write"}, {"issuers", {"aws"}}});
  }

  std::string Flags(const std::string& extra = "") const {
    return std::string("--resource ") + kRoleResource +
           " --action s3:GetObject --action s3:ListBucket --arn-resource "
           "'arn:aws:s3:::acme-artifacts' --arn-resource 'arn:aws:s3:::acme-artifacts/*' " +
           extra;
  }
};

TEST_CASE("jitctl aws credential-process: prints keys STS issued, for the grant's lifetime") {
  AwsWorld w;
  const std::string err = w.dir.File("stderr");
  auto [rc, out] = RunCommand(AgentEnv(*w.broker, w.sid, w.token) + Jitctl() +
                              "aws credential-process " + w.Flags() + " 2>" + err);
  INFO("stderr: " << ReadFile(err));
  REQUIRE_MESSAGE(rc == 0, out);
  json j = json::parse(out);
  CHECK(j["Version"] == 1);
  CHECK(j["Version"].is_number_integer());
  CHECK(j["AccountId"] == "123456789012");
  CHECK(j.size() == 6);
  auto issued = w.sts->Verify(j["AccessKeyId"], j["SecretAccessKey"], j["SessionToken"]);
  REQUIRE(issued.has_value());
  CHECK(issued->role_arn == kRole);
  CHECK(issued->policy.find("s3:GetObject") != std::string::npos);
  // Expiration is the grant's end (default --ttl 3600), in RFC 3339 UTC.
  const std::string exp = j["Expiration"];
  CHECK(exp.size() == 20);
  CHECK(exp.back() == 'Z');
  auto s = w.broker->Get("/v1/sessions/" + w.sid, w.token);
  REQUIRE(s.json["grants"].size() == 1);
  const json& g = s.json["grants"][0];
  CHECK(g["expires_at"] == exp);
  CHECK(g["tool"] == "aws.s3");
  CHECK(g["operation"] == "read");
  // No secret on stderr, and no warning for a long enough credential.
  const std::string e = ReadFile(err);
  CHECK(e.find(j["SecretAccessKey"].get<std::string>()) == std::string::npos);
  CHECK(e.find("warning") == std::string::npos);
}

TEST_CASE(
    "jitctl aws credential-process: short grants warn, denials exit 4 with nothing on stdout") {
  AwsWorld w;
  const std::string env = AgentEnv(*w.broker, w.sid, w.token);
  const std::string out_file = w.dir.File("stdout");
  {
    auto [rc, err] = RunCommand("(" + env + Jitctl() + "aws credential-process " +
                                w.Flags("--ttl 900") + " >" + out_file + ")");
    CHECK_MESSAGE(rc == 0, err);
    CHECK(err.find("refresh window") != std::string::npos);
    CHECK(json::parse(ReadFile(out_file))["Version"] == 1);
  }
  {
    // Deleting is destructive: denied by the default tiers.
    auto [rc, err] =
        RunCommand("(" + env + Jitctl() + "aws credential-process --resource " + kRoleResource +
                   " --action s3:DeleteObject --arn-resource "
                   "'arn:aws:s3:::acme-artifacts/*' >" +
                   out_file + ")");
    CHECK_MESSAGE(rc == 4, err);
    CHECK(err.find("denied") != std::string::npos);
    CHECK(ReadFile(out_file).empty());
  }
  {
    // A role outside the session's scope.
    auto [rc, err] = RunCommand("(" + env + Jitctl() +
                                "aws credential-process --resource "
                                "aws://123456789012/role/other --action s3:GetObject "
                                "--arn-resource '*' >" +
                                out_file + ")");
    CHECK_MESSAGE(rc == 4, err);
    CHECK(ReadFile(out_file).empty());
  }
  {
    // Mistakes in the flags are usage errors, before any grant.
    auto [rc, err] = RunCommand(env + Jitctl() +
                                "aws credential-process --resource aws://1/role/x --action "
                                "s3:GetObject --arn-resource '*'");
    CHECK_MESSAGE(rc == 2, err);
  }
  CHECK(w.sts->IssuedCredentials().size() == 1);
}

// (RunCommand adds 2>&1 at the end: a redirect of stdout alone goes inside
// a subshell.)

TEST_CASE("jitctl aws serve: Debian's botocore gets STS's keys; a wrong token gets 401") {
  AwsWorld w;
  const std::string log = w.dir.File("serve.log");
  Child serve = Child::Start(AgentEnv(*w.broker, w.sid, w.token) + Jitctl() + "aws serve " +
                             w.Flags() + " 2>" + log);
  const std::string uri = ExportValue(serve.Line(), "AWS_CONTAINER_CREDENTIALS_FULL_URI");
  const std::string auth = ExportValue(serve.Line(), "AWS_CONTAINER_AUTHORIZATION_TOKEN");
  INFO("serve log: " << ReadFile(log));
  REQUIRE(uri.starts_with("http://127.0.0.1:"));
  REQUIRE(uri.ends_with("/creds"));
  CHECK(auth.size() == 64);  // 256 random bits, hex

  // botocore's own container provider, with nothing else to find.
  const std::string script =
      "import botocore.session\n"
      "c = botocore.session.get_session().get_credentials().get_frozen_credentials()\n"
      "print(c.access_key)\nprint(c.secret_key)\nprint(c.token)\n";
  std::ofstream(w.dir.File("fetch.py")) << script;
  const std::string fetch =
      "env -i PATH=/usr/bin:/bin HOME=" + w.dir.path().string() +
      " AWS_CONFIG_FILE=/nonexistent AWS_SHARED_CREDENTIALS_FILE=/nonexistent "
      "AWS_EC2_METADATA_DISABLED=true AWS_CONTAINER_CREDENTIALS_FULL_URI=" +
      uri + " AWS_CONTAINER_AUTHORIZATION_TOKEN=" + auth + " /usr/bin/python3 " +
      w.dir.File("fetch.py");
  auto [rc, out] = RunCommand(fetch);
  REQUIRE_MESSAGE(rc == 0, out);
  std::istringstream lines(out);
  std::string akid, secret, session_token;
  std::getline(lines, akid);
  std::getline(lines, secret);
  std::getline(lines, session_token);
  auto issued = w.sts->Verify(akid, secret, session_token);
  CHECK(issued.has_value());

  // A second fetch is served from the cache: one grant, one AssumeRole.
  auto [rc2, out2] = RunCommand(fetch);
  CHECK_MESSAGE(rc2 == 0, out2);
  CHECK(out2 == out);
  CHECK(w.sts->IssuedCredentials().size() == 1);

  const int port = std::stoi(uri.substr(std::string("http://127.0.0.1:").size()));
  httplib::Client client("127.0.0.1", port);
  auto wrong = client.Get("/creds", httplib::Headers{{"Authorization", auth + "x"}});
  REQUIRE(wrong);
  CHECK(wrong->status == 401);
  CHECK(wrong->body.find(secret) == std::string::npos);
  auto none = client.Get("/creds");
  REQUIRE(none);
  CHECK(none->status == 401);
  auto right = client.Get("/creds", httplib::Headers{{"Authorization", auth}});
  REQUIRE(right);
  CHECK(right->status == 200);
  CHECK(json::parse(right->body)["AccessKeyId"] == akid);

  CHECK(serve.Stop(SIGTERM) == 0);
  const std::string text = ReadFile(log);
  CHECK(text.find(secret) == std::string::npos);
  CHECK(text.find(auth) == std::string::npos);
}

TEST_CASE("jitctl aws serve: --token-file holds the token (0600), a denied first grant exits 4") {
  AwsWorld w;
  const std::string file = w.dir.File("token");
  Child serve = Child::Start(AgentEnv(*w.broker, w.sid, w.token) + Jitctl() + "aws serve " +
                             w.Flags("--token-file " + file) + " 2>/dev/null");
  const std::string uri = ExportValue(serve.Line(), "AWS_CONTAINER_CREDENTIALS_FULL_URI");
  CHECK(ExportValue(serve.Line(), "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE") == "'" + file + "'");
  struct stat st{};
  REQUIRE(::stat(file.c_str(), &st) == 0);
  CHECK((st.st_mode & 0777) == 0600);
  const std::string auth = ReadFile(file);
  CHECK(auth.size() == 64);
  const int port = std::stoi(uri.substr(std::string("http://127.0.0.1:").size()));
  httplib::Client client("127.0.0.1", port);
  auto right = client.Get("/creds", httplib::Headers{{"Authorization", auth}});
  REQUIRE(right);
  CHECK(right->status == 200);
  CHECK(serve.Stop(SIGINT) == 0);
  CHECK_FALSE(std::filesystem::exists(file));  // removed on a clean stop

  auto [rc, err] =
      RunCommand(AgentEnv(*w.broker, w.sid, w.token) + Jitctl() + "aws serve --resource " +
                 kRoleResource + " --action s3:DeleteObject --arn-resource '*'");
  CHECK_MESSAGE(rc == 4, err);
  CHECK(err.find("export") == std::string::npos);
}

}  // namespace credential_consumers_test
}  // namespace jitbroker::testing
