// End-to-end: the real daemon with an aws_sts issuer pointed at FakeSts on
// loopback (STS and IAM), and Debian's AWS CLI using the minted credentials
// against the fake, before and after a revocation (docs/aws.md).
#include <chrono>
#include <filesystem>
#include <fstream>
#include <string>
#include <thread>

#include <doctest/doctest.h>
#include <httplib.h>
#include <nlohmann/json.hpp>

#include "tests/fakes/fake_sts.h"
#include "tests/support/broker_process.h"
#include "tests/support/oidc_issuer.h"

namespace jitbroker::testing {
namespace {

constexpr const char* kAkid = "AKIAINTEGRATION0001";
constexpr const char* kSecret = "integration/aws/secret+0123456789abcdef";
constexpr const char* kRole = "arn:aws:iam::123456789012:role/ci-deploy";

struct AwsWorld {
  std::string dir;
  std::unique_ptr<FakeSts> fake;  // declared before the broker: stops after it
  std::unique_ptr<BrokerProcess> broker;

  explicit AwsWorld(const std::string& sessions = "", const std::string& trust = "") {
    char tmpl[] = "/tmp/jitbroker-aws-XXXXXX";
    REQUIRE(::mkdtemp(tmpl) != nullptr);
    dir = tmpl;
    std::ofstream(dir + "/akid") << kAkid;
    std::ofstream(dir + "/secret") << kSecret;
    FakeStsOptions fo;
    fo.keys = {{kAkid, kSecret}};
    fake = FakeSts::Start(fo);
    REQUIRE(fake != nullptr);
    fake->AddRole({kRole, 3600, {kAkid}, "", {kAkid}});

    BrokerOptions o;
    if (!sessions.empty()) {
      o.sessions = sessions;
    }
    o.trust = trust;
    o.extra_issuers = "  aws: {type: aws_sts, region: us-east-1, endpoint: '" + fake->url() +
                      "', iam_endpoint: '" + fake->url() +
                      "', allow_http: true, accounts: ['123456789012'], max_attempts: 1, "
                      "credentials: {access_key_id: 'file:" +
                      dir + "/akid', secret_access_key: 'file:" + dir + "/secret'}}\n";
    broker = BrokerProcess::Start(o);
  }
  ~AwsWorld() {
    broker.reset();
    fake.reset();
    std::error_code ec;
    std::filesystem::remove_all(dir, ec);
  }

  std::pair<std::string, std::string> Session() {
    return broker->OpenSession(broker->admin_key, {{"resources", {"aws://123456789012/role/*"}},
                                                   {"max_tier", "write"},
                                                   {"issuers", {"aws"}}});
  }

  HttpResult Grant(const std::string& sid, const std::string& token, int ttl = 1800) {
    return broker->Post("/v1/sessions/" + sid + "/grants", token,
                        {{"tool", "aws.sns"},
                         {"operation", "read"},
                         {"resource", "aws://123456789012/role/ci-deploy"},
                         {"issuer", "aws"},
                         {"scope", {{"actions", {"sns:ListTopics"}}, {"resources", {"*"}}}},
                         {"ttl_seconds", ttl}});
  }

  // Debian's AWS CLI, with nothing from the host's configuration: `env`
  // holds the credential variables (or AWS_CONFIG_FILE). Returns its exit
  // status and output.
  std::pair<int, std::string> Aws(const std::string& env, const std::string& args) {
    return RunCommand("env -i PATH=/usr/bin:/bin HOME='" + dir +
                      "' AWS_EC2_METADATA_DISABLED=true AWS_PAGER= AWS_MAX_ATTEMPTS=1 "
                      "AWS_SHARED_CREDENTIALS_FILE=/dev/null " +
                      env + " /usr/bin/aws --endpoint-url " + fake->url() +
                      " --region us-east-1 --output json " + args + " 2>&1");
  }

  std::string GrantState(const std::string& id, const std::string& token) {
    return broker->Get("/v1/grants/" + id, token).json.value("state", "");
  }
};

std::string CredentialEnv(const nlohmann::json& cred) {
  return "AWS_CONFIG_FILE=/dev/null AWS_ACCESS_KEY_ID='" +
         cred["access_key_id"].get<std::string>() + "' AWS_SECRET_ACCESS_KEY='" +
         cred["secret_access_key"].get<std::string>() + "' AWS_SESSION_TOKEN='" +
         cred["session_token"].get<std::string>() + "'";
}

TEST_CASE("AWS: the AWS CLI works with a minted credential until the grant is revoked") {
  AwsWorld w;
  auto [sid, token] = w.Session();
  auto g = w.Grant(sid, token);
  INFO(g.body);
  REQUIRE(g.status == 201);
  CHECK(g.json["revocability"] == "deny_by_condition");
  const nlohmann::json cred = g.json["credential"];
  const std::string id = g.json["grant_id"];

  auto [rc, out] = w.Aws(CredentialEnv(cred), "sns list-topics");
  INFO(out);
  CHECK(rc == 0);
  CHECK(out.find("\"Topics\"") != std::string::npos);
  // The session policy holds: an action the grant did not ask for is refused.
  auto [rc_other, out_other] = w.Aws(CredentialEnv(cred), "sns list-subscriptions");
  INFO(out_other);
  CHECK(rc_other != 0);
  CHECK(out_other.find("no session policy allows") != std::string::npos);

  auto del = w.broker->Request("DELETE", "/v1/grants/" + id, token);
  INFO(del.body);
  REQUIRE(del.status == 200);
  CHECK(del.json["outcome"] == "deny_installed");
  CHECK(del.json["residual_seconds"] == 300);
  CHECK(del.json["state"] == "revoked");

  auto [rc2, out2] = w.Aws(CredentialEnv(cred), "sns list-topics");
  INFO(out2);
  CHECK(rc2 != 0);
  CHECK(out2.find("explicit deny") != std::string::npos);
  CHECK(w.fake->Violations().empty());
}

TEST_CASE("AWS: a revocation IAM refuses is queued, survives a restart, and lands") {
  AwsWorld w(
      "{max_ttl_seconds: 28800, default_ttl_seconds: 3600, heartbeat_seconds: 60, "
      "stall_after_missed: 3, sweep_interval_ms: 200}");
  auto [sid, token] = w.Session();
  auto g = w.Grant(sid, token);
  INFO(g.body);
  REQUIRE(g.status == 201);
  const nlohmann::json cred = g.json["credential"];
  const std::string id = g.json["grant_id"];

  w.fake->InjectErrors("ServiceFailure", 500, -1, "PutRolePolicy");
  auto del = w.broker->Request("DELETE", "/v1/grants/" + id, token);
  INFO(del.body);
  REQUIRE(del.status == 200);
  CHECK(del.json["outcome"] == "queued");
  CHECK(del.json["state"] == "revoking");
  CHECK(w.fake->SecretActive(cred["secret_access_key"]));

  // IAM still failing across a restart: the queue is durable.
  w.broker->Stop();
  w.broker->Restart();
  std::this_thread::sleep_for(std::chrono::milliseconds(600));
  CHECK(w.GrantState(id, token) == "revoking");
  CHECK(w.fake->SecretActive(cred["secret_access_key"]));

  w.fake->ClearErrors();
  std::string state;
  for (int i = 0; i < 300 && state != "revoked"; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    state = w.GrantState(id, token);
  }
  CHECK(state == "revoked");
  CHECK_FALSE(w.fake->SecretActive(cred["secret_access_key"]));
  auto [rc, out] = w.Aws(CredentialEnv(cred), "sns list-topics");
  INFO(out);
  CHECK(rc != 0);
}

TEST_CASE(
    "AWS: the AWS CLI through jitctl aws credential-process; a revoked session gets nothing") {
  AwsWorld w;
  auto [sid, token] = w.Session();
  std::ofstream(w.dir + "/aws-config")
      << "[default]\ncredential_process = " << JITCTL_BINARY
      << " aws credential-process --resource aws://123456789012/role/ci-deploy"
         " --action sns:ListTopics --arn-resource *\n";
  const std::string agent = "JITBROKER_URL=" + w.broker->url() + " JITBROKER_SESSION_ID=" + sid +
                            " JITBROKER_SESSION_TOKEN=" + token;
  auto [rc, out] = w.Aws(agent + " AWS_CONFIG_FILE=" + w.dir + "/aws-config", "sns list-topics");
  INFO(out);
  CHECK(rc == 0);
  CHECK(out.find("\"Topics\"") != std::string::npos);

  // A credential the helper printed earlier, kept by the agent.
  auto [prc, printed] =
      RunCommand("env " + agent + " " + JITCTL_BINARY +
                 " aws credential-process --resource aws://123456789012/role/ci-deploy"
                 " --action sns:ListTopics --arn-resource '*'");
  REQUIRE(prc == 0);
  const nlohmann::json kept = nlohmann::json::parse(printed);
  const std::string kept_env =
      "AWS_CONFIG_FILE=/dev/null AWS_ACCESS_KEY_ID='" + kept["AccessKeyId"].get<std::string>() +
      "' AWS_SECRET_ACCESS_KEY='" + kept["SecretAccessKey"].get<std::string>() +
      "' AWS_SESSION_TOKEN='" + kept["SessionToken"].get<std::string>() + "'";

  auto end = w.broker->Post("/v1/sessions/" + sid + "/revoke", w.broker->admin_key,
                            {{"reason", "agent went off task"}});
  INFO(end.body);
  REQUIRE(end.status == 200);
  for (const auto& r : end.json["revocations"]) {
    CHECK(r["outcome"] == "deny_installed");
  }

  // The helper gets no new grant; the kept credential is denied upstream.
  auto [rc2, out2] = w.Aws(agent + " AWS_CONFIG_FILE=" + w.dir + "/aws-config", "sns list-topics");
  INFO(out2);
  CHECK(rc2 != 0);
  CHECK(out2.find("session") != std::string::npos);
  auto [rc3, out3] = w.Aws(kept_env, "sns list-topics");
  INFO(out3);
  CHECK(rc3 != 0);
  CHECK(out3.find("explicit deny") != std::string::npos);
}

TEST_CASE("AWS: actions that imply a denied tier are refused before any AWS call") {
  AwsWorld w;
  auto [sid, token] = w.Session();
  const size_t before = w.fake->Requests();
  auto g = w.broker->Post("/v1/sessions/" + sid + "/grants", token,
                          {{"tool", "aws.s3"},
                           {"operation", "write"},
                           {"resource", "aws://123456789012/role/ci-deploy"},
                           {"issuer", "aws"},
                           {"scope",
                            {{"actions", {"s3:GetObject", "s3:DeleteObject"}},
                             {"resources", {"arn:aws:s3:::acme-artifacts/*"}}}}});
  INFO(g.body);
  CHECK(g.status == 403);
  CHECK(g.json["decision"]["tier"] == "destructive");
  CHECK(w.fake->Requests() == before);
  auto other = w.broker->Post("/v1/sessions/" + sid + "/grants", token,
                              {{"tool", "aws.s3"},
                               {"operation", "read"},
                               {"resource", "aws://999999999999/role/ci-deploy"},
                               {"issuer", "aws"},
                               {"scope", {{"actions", {"s3:GetObject"}}, {"resources", {"*"}}}}});
  INFO(other.body);
  CHECK(other.status == 403);
  CHECK(w.fake->Requests() == before);
}

TEST_CASE("AWS: a CI job trades its OIDC token for AWS credentials narrowed to what it asks") {
  auto idp = FakeOidcIssuer::Start();
  REQUIRE(idp != nullptr);
  const std::string kid = idp->AddKey(crypto::JwsAlg::kRS256, "ci-rsa-1");
  AwsWorld w("",
             "\n  - name: artifacts\n    issuer: " + idp->issuer() +
                 "\n    allow_http: true\n    provider: github_actions\n    audience: "
                 "jitbroker.aws.test\n    claims: {repository_owner_id: \"123\", repository_id: "
                 "\"456\", ref: refs/heads/main}\n    grant: {issuer: aws, tool: aws.sns, "
                 "operation: read, resource: \"aws://123456789012/role/ci-deploy\", "
                 "ttl_seconds: 900, scope: {actions: [\"sns:ListTopics\", "
                 "\"sns:ListSubscriptions\"], resources: [\"*\"]}}\n");
  const int64_t now = std::chrono::duration_cast<std::chrono::seconds>(
                          std::chrono::system_clock::now().time_since_epoch())
                          .count();
  const std::string token = idp->Sign(idp->GitHubClaims("jitbroker.aws.test", now), kid);
  httplib::Client c("127.0.0.1", w.broker->port());
  auto r = c.Post("/v1/token",
                  "grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Atoken-exchange"
                  "&subject_token_type=urn%3Aietf%3Aparams%3Aoauth%3Atoken-type%3Aid_token"
                  "&audience=artifacts&scope=sns%3AListTopics&subject_token=" +
                      token,
                  "application/x-www-form-urlencoded");
  REQUIRE(r);
  INFO(r->body);
  REQUIRE(r->status == 200);
  const nlohmann::json body = nlohmann::json::parse(r->body);
  CHECK(body["token_type"] == "N_A");
  CHECK(body["scope"] == "sns:ListTopics");
  const nlohmann::json& cred = body["credential"];
  CHECK(cred["type"] == "aws_credentials");
  CHECK(body["access_token"] == cred["session_token"]);
  const auto issued = w.fake->IssuedCredentials();
  REQUIRE(issued.size() == 1);
  CHECK(issued[0].policy.find("sns:ListSubscriptions") == std::string::npos);  // narrowed

  auto [rc, out] = w.Aws(CredentialEnv(cred), "sns list-topics");
  INFO(out);
  CHECK(rc == 0);
  auto [rc2, out2] = w.Aws(CredentialEnv(cred), "sns list-subscriptions");
  INFO(out2);
  CHECK(rc2 != 0);
  CHECK(out2.find("no session policy allows") != std::string::npos);
}

}  // namespace
}  // namespace jitbroker::testing
