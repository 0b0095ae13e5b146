// End-to-end: the real daemon with an aws_sts issuer pointed at FakeSts on
// loopback (STS and IAM), and Debian's AWS CLI using the minted credentials
// against the fake, before and after a revocation (docs/aws.md).
#include <chrono>
#include <filesystem>
#include <fstream>
#include <string>
#include <thread>

#include <doctest/doctest.h>

#include "tests/fakes/fake_sts.h"
#include "tests/support/broker_process.h"

namespace jitbroker::testing {
namespace {

constexpr const char* kAkid = "AKIAINTEGRATION0001";
constexpr const char* kSecret = "integration/aws/secret+0123456789abcdef";
constexpr const char* kRole = "arn:aws:iam::123456789012:role/ci-deploy";

struct AwsWorld {
  std::string dir;
  std::unique_ptr<FakeSts> fake;  // declared before the broker: stops after it
  std::unique_ptr<BrokerProcess> broker;

  explicit AwsWorld(const std::string& sessions = "") {
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

}  // namespace
}  // namespace jitbroker::testing
