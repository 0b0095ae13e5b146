// The aws_sts issuer (issuers/aws_sts/) against FakeSts on loopback: the
// AssumeRole it sends (session policy, session name, source identity, tags,
// duration), the credential it returns, the tiers actions imply, refusals
// before any call, STS's errors mapped to stable codes, retries, clock skew,
// and Debian's botocore recomputing every signature the broker sent.
#include <doctest/doctest.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <string>
#include <vector>

#include <yaml-cpp/yaml.h>
#include <nlohmann/json.hpp>

#include "broker/common/time_util.h"
#include "broker/config/config.h"
#include "broker/net/http_client.h"
#include "issuers/aws_sts/aws_scope.h"
#include "issuers/aws_sts/aws_sts_issuer.h"
#include "issuers/aws_sts/xml.h"
#include "tests/fakes/fake_sts.h"
#include "tests/support/aws_test_env.h"
#include "tests/support/temp_dir.h"

namespace jitbroker::issuers::aws_sts {
namespace {

using testing::FakeSts;
using testing::aws::Env;
using testing::aws::kAkid;
using testing::aws::kRole;
using testing::aws::kSecret;
using testing::aws::Mint;
using testing::aws::ReadScope;
using testing::aws::Req;
using testing::aws::Secret;

TEST_CASE("AWS STS: a mint is one AssumeRole narrowed by a session policy and attributable") {
  Env env;
  auto issuer = env.Build();
  auto minted = issuer->Mint(Mint(Req(ReadScope())));
  REQUIRE_MESSAGE(minted.has_value(), (minted ? "" : minted.error().ToString()));

  const auto issued = env.fake->IssuedCredentials();
  REQUIRE(issued.size() == 1);
  const FakeSts::Issued& i = issued[0];
  CHECK(i.role_arn == kRole);
  CHECK(i.role_session_name == "jb-grt_AbCdEf0123456789");
  CHECK(i.source_identity == "grt_AbCdEf0123456789");
  CHECK(i.duration_seconds == 900);  // a 600 s grant: STS's floor
  const nlohmann::json policy = nlohmann::json::parse(i.policy);
  CHECK(policy["Statement"][0]["Action"] == nlohmann::json({"s3:GetObject", "s3:ListBucket"}));
  CHECK(policy["Statement"][0]["Effect"] == "Allow");
  CHECK(i.tags.at("jb-session") == "ses_1");
  CHECK(i.tags.at("jb-principal") == "alice");
  CHECK(i.tags.at("jb-agent") == "agent-1");
  CHECK(i.tags.at("jb-task") == "deploy_42");
  CHECK(i.transitive_tag_keys == std::vector<std::string>{"jb-session"});

  // The credential works upstream, is returned once, and its secrets are
  // in `secrets`, never in the fields or the audit record.
  CHECK(minted->type == "aws_credentials");
  const std::string akid = minted->fields["access_key_id"];
  CHECK(
      env.fake->Verify(akid, Secret(*minted, "secret_access_key"), Secret(*minted, "session_token"))
          .has_value());
  CHECK(minted->fields["region"] == "us-east-1");
  CHECK(minted->fields["assumed_role_arn"] ==
        "arn:aws:sts::123456789012:assumed-role/ci-deploy/jb-grt_AbCdEf0123456789");
  CHECK(minted->audit_fields["source_identity"] == "grt_AbCdEf0123456789");
  CHECK(minted->audit_fields["role_session_name"] == "jb-grt_AbCdEf0123456789");
  const std::string audit = minted->audit_fields.dump() + minted->fields.dump();
  CHECK(audit.find(Secret(*minted, "secret_access_key")) == std::string::npos);
  CHECK(audit.find(Secret(*minted, "session_token")) == std::string::npos);
  // The grant ends before STS's 15 minutes: the service revokes at grant
  // expiry, which denies the credential on its role (aws_revocation_test).
  REQUIRE(minted->upstream_expires_at.has_value());
  CHECK(*minted->upstream_expires_at > minted->expires_at);
  RevokeRequest rr{"grt_AbCdEf0123456789", minted->revocation_handle.Clone(),
                   *minted->upstream_expires_at, Mint(Req(ReadScope())).now};
  auto revoked = issuer->Revoke(rr);
  REQUIRE(revoked.has_value());
  CHECK(revoked->kind == RevokeOutcomeKind::kDenyInstalled);
  CHECK_FALSE(env.fake->SecretActive(Secret(*minted, "secret_access_key")));
  CHECK(env.fake->Violations().empty());
}

TEST_CASE("AWS STS: Debian's botocore recomputes every signature the broker sent") {
  Env env;
  auto issuer = env.Build();
  for (int i = 0; i < 3; ++i) {
    REQUIRE(issuer->Mint(Mint(Req(ReadScope()))).has_value());
  }
  nlohmann::json spec = {{"region", "us-east-1"},  {"service", "sts"},
                         {"access_key_id", kAkid}, {"secret_access_key", kSecret},
                         {"session_token", ""},    {"requests", nlohmann::json::array()}};
  for (const auto& r : env.fake->SignedRequests()) {
    spec["requests"].push_back({{"method", r.method},
                                {"path", r.path},
                                {"headers", r.headers},
                                {"body", r.body},
                                {"authorization", r.authorization}});
  }
  REQUIRE(spec["requests"].size() == 3);
  const std::string file = env.dir.File("signed.json");
  std::ofstream(file) << spec.dump();
  const std::string cmd = "/usr/bin/python3 " + std::string(JITBROKER_SOURCE_DIR) +
                          "/tests/support/botocore_sigv4.py " + file + " 2>&1";
  FILE* p = ::popen(cmd.c_str(), "r");
  REQUIRE(p != nullptr);
  std::string out;
  char buf[512];
  while (std::fgets(buf, sizeof(buf), p) != nullptr) {
    out += buf;
  }
  const int rc = ::pclose(p);
  CAPTURE(out);
  CHECK(rc == 0);
  CHECK(out.find("3 signatures match") != std::string::npos);
}

TEST_CASE("AWS STS: tiers from actions, and refusals before any call") {
  Env env;
  auto issuer = env.Build();
  struct Row {
    std::vector<std::string> actions;
    Tier tier;
  };
  const Row rows[] = {
      {{"s3:GetObject", "s3:ListBucket"}, Tier::kRead},
      {{"dynamodb:Query", "ec2:DescribeInstances"}, Tier::kRead},
      {{"s3:Get*"}, Tier::kRead},
      {{"s3:PutObject"}, Tier::kWrite},
      {{"s3:GetObject", "s3:PutObject"}, Tier::kWrite},
      {{"s3:DeleteObject"}, Tier::kDestructive},
      {{"s3:deleteobject"}, Tier::kDestructive},  // IAM ignores the case of action names
      {{"s3:getobject"}, Tier::kRead},
      {{"IAM:PassRole"}, Tier::kSecret},
      {{"ec2:TerminateInstances"}, Tier::kDestructive},
      {{"s3:*"}, Tier::kDestructive},
      {{"*"}, Tier::kDestructive},
      {{"s3:*Object"}, Tier::kDestructive},  // could be DeleteObject
      {{"s3:De*"}, Tier::kDestructive},
      {{"iam:PassRole"}, Tier::kSecret},
      {{"iam:*"}, Tier::kSecret},
      {{"sts:AssumeRole"}, Tier::kSecret},
      {{"kms:Decrypt"}, Tier::kSecret},
      {{"secretsmanager:GetSecretValue"}, Tier::kSecret},
      {{"ssm:GetParameters"}, Tier::kSecret},
      {{"ssm:Get*"}, Tier::kSecret},  // could be GetParameter
      {{"ssm:DescribeParameters"}, Tier::kRead},
  };
  for (const Row& row : rows) {
    CAPTURE(nlohmann::json(row.actions).dump());
    auto t = issuer->ImpliedTier(Req({{"actions", row.actions}, {"resources", {"*"}}}));
    REQUIRE(t.has_value());
    CHECK(TierName(*t) == TierName(row.tier));
  }
  auto items = issuer->ScopeItems(Req(ReadScope()));
  REQUIRE(items.has_value());
  CHECK(*items == std::vector<std::string>{"s3:GetObject", "s3:ListBucket"});

  struct Bad {
    const char* name;
    GrantRequest req;
    const char* reason;
  };
  const Bad bad[] = {
      {"no actions: never the role's full rights", Req({{"resources", {"*"}}}), "invalid_scope"},
      {"no resources", Req({{"actions", {"s3:GetObject"}}}), "invalid_scope"},
      {"an empty action list", Req({{"actions", nlohmann::json::array()}, {"resources", {"*"}}}),
       "invalid_scope"},
      {"an unknown scope key", Req({{"actions", {"s3:GetObject"}}, {"resources", {"*"}}, {"x", 1}}),
       "unknown_field"},
      {"an action that is not service:Name",
       Req({{"actions", {"GetObject"}}, {"resources", {"*"}}}), "invalid_scope"},
      {"a resource that is not an ARN",
       Req({{"actions", {"s3:GetObject"}}, {"resources", {"acme"}}}), "invalid_scope"},
      {"a role outside accounts", Req(ReadScope(), "aws://999999999999/role/ci-deploy"),
       "account_not_allowed"},
      {"not a role resource", Req(ReadScope(), "aws://123456789012/user/bob"), "invalid_resource"},
      {"a short account", Req(ReadScope(), "aws://12345/role/x"), "invalid_resource"},
      {"a role name with a space", Req(ReadScope(), "aws://123456789012/role/a b"),
       "invalid_resource"},
  };
  for (const Bad& b : bad) {
    CAPTURE(b.name);
    auto t = issuer->ImpliedTier(b.req);
    REQUIRE_FALSE(t.has_value());
    CHECK(t.error().Reason() == b.reason);
    auto m = issuer->Mint(Mint(b.req));
    REQUIRE_FALSE(m.has_value());
    CHECK(m.error().Reason() == b.reason);
  }
  // A session policy over 2,048 characters is refused before any call.
  std::vector<std::string> many;
  for (int i = 0; i < 100; ++i) {
    many.push_back("arn:aws:s3:::acme-artifacts/some/long/prefix/number/" + std::to_string(i) +
                   "/*");
  }
  auto big = issuer->Mint(Mint(Req({{"actions", {"s3:GetObject"}}, {"resources", many}})));
  REQUIRE_FALSE(big.has_value());
  CHECK(big.error().Reason() == "policy_too_large");
  CHECK(env.fake->Requests() == 0);
}

TEST_CASE("AWS STS: a role path, the duration clamp and the role's maximum") {
  Env env;
  auto issuer = env.Build("max_session_seconds: 7200");
  auto m = issuer->Mint(Mint(Req(ReadScope(), "aws://123456789012/role/team/data/reader"), 5000));
  REQUIRE_MESSAGE(m.has_value(), (m ? "" : m.error().ToString()));
  CHECK(env.fake->IssuedCredentials().back().role_arn ==
        "arn:aws:iam::123456789012:role/team/data/reader");
  CHECK(env.fake->IssuedCredentials().back().duration_seconds == 5000);
  CHECK_FALSE(m->upstream_expires_at.has_value());  // lives as long as the grant
  // ci-deploy's maximum is an hour: STS refuses 7,200 s as a validation error.
  auto over = issuer->Mint(Mint(Req(ReadScope()), 7200));
  REQUIRE_FALSE(over.has_value());
  CHECK(over.error().Reason() == "aws_invalid_request");
  CHECK(over.error().message.find("MaxSessionDuration") != std::string::npos);
}

TEST_CASE("AWS STS: STS's errors map to stable codes; throttling and 5xx are retried") {
  Env env;
  auto issuer = env.Build();
  struct Row {
    const char* code;
    int status;
    ErrorCode want;
    const char* reason;
  };
  const Row rows[] = {
      {"AccessDenied", 403, ErrorCode::kPermissionDenied, "aws_access_denied"},
      {"PackedPolicyTooLarge", 400, ErrorCode::kInvalidArgument, "policy_too_large"},
      {"MalformedPolicyDocument", 400, ErrorCode::kInvalidArgument, "aws_invalid_request"},
      {"RegionDisabledException", 403, ErrorCode::kFailedPrecondition, "aws_region_disabled"},
      {"InvalidClientTokenId", 403, ErrorCode::kUnavailable, "aws_auth_failed"},
      {"ExpiredToken", 400, ErrorCode::kUnavailable, "aws_auth_failed"},
      {"Throttling", 400, ErrorCode::kResourceExhausted, "aws_throttled"},
      {"InternalFailure", 500, ErrorCode::kUnavailable, "aws_unavailable"},
  };
  for (const Row& row : rows) {
    CAPTURE(row.code);
    env.fake->ClearErrors();
    env.fake->InjectErrors(row.code, row.status, -1);
    auto m = issuer->Mint(Mint(Req(ReadScope())));
    REQUIRE_FALSE(m.has_value());
    CHECK(m.error().code == row.want);
    CHECK(m.error().Reason() == row.reason);
    // AWS's code is kept for the operator.
    CHECK((m.error().message + m.error().detail).find(row.code) != std::string::npos);
  }
  env.fake->ClearErrors();
  const size_t before = env.fake->Requests();
  env.fake->InjectErrors("Throttling", 400, 2);  // then it answers
  auto ok = issuer->Mint(Mint(Req(ReadScope())));
  REQUIRE_MESSAGE(ok.has_value(), (ok ? "" : ok.error().ToString()));
  CHECK(env.fake->Requests() - before == 3);
  CHECK(env.sleeps.size() >= 2);
  // A role the broker's key is not trusted by.
  env.fake->AddRole({"arn:aws:iam::123456789012:role/untrusting", 3600, {}, "", {}});
  auto denied = issuer->Mint(Mint(Req(ReadScope(), "aws://123456789012/role/untrusting")));
  REQUIRE_FALSE(denied.has_value());
  CHECK(denied.error().Reason() == "aws_access_denied");
}

TEST_CASE("AWS STS: a broker clock 10 minutes off is learnt from STS's Date and re-signed") {
  Env env;
  auto issuer = env.Build();
  env.fake->SetClockSkew(std::chrono::minutes(10));
  auto m = issuer->Mint(Mint(Req(ReadScope())));
  REQUIRE_MESSAGE(m.has_value(), (m ? "" : m.error().ToString()));
  CHECK(env.fake->IssuedCredentials().size() == 1);
}

TEST_CASE("AWS STS: configuration is checked completely, secrets never echoed") {
  Env env;
  struct Bad {
    const char* name;
    std::string yaml;
    const char* says;
  };
  const std::string creds = ", credentials: {access_key_id: file:" + env.dir.File("akid") +
                            ", secret_access_key: file:" + env.dir.File("secret") + "}";
  const Bad bad[] = {
      {"no accounts", "{type: aws_sts, region: us-east-1" + creds + "}", "accounts"},
      {"a bad account", "{type: aws_sts, region: us-east-1, accounts: ['12']" + creds + "}",
       "12-digit"},
      {"no credentials", "{type: aws_sts, region: us-east-1, accounts: ['123456789012']}",
       "credentials"},
      {"an inline secret",
       "{type: aws_sts, region: us-east-1, accounts: ['123456789012'], credentials: "
       "{access_key_id: file:" +
           env.dir.File("akid") + ", secret_access_key: hunter2}}",
       "secret_access_key"},
      {"http to a non-loopback endpoint",
       "{type: aws_sts, region: us-east-1, accounts: ['123456789012'], endpoint: "
       "'http://sts.example.com', allow_http: true" +
           creds + "}",
       "endpoint"},
      {"an unknown revoke mode",
       "{type: aws_sts, region: us-east-1, accounts: ['123456789012'], revoke: sometimes" + creds +
           "}",
       "deny_policy or expiry_only"},
      {"deny_policy's settings with expiry_only",
       "{type: aws_sts, region: us-east-1, accounts: ['123456789012'], revoke: expiry_only, "
       "deny_propagation_seconds: 10" +
           creds + "}",
       "only with revoke: deny_policy"},
      {"http to a non-loopback IAM endpoint",
       "{type: aws_sts, region: us-east-1, accounts: ['123456789012'], iam_endpoint: "
       "'http://iam.example.com', allow_http: true" +
           creds + "}",
       "iam_endpoint"},
      {"an unknown key",
       "{type: aws_sts, region: us-east-1, accounts: ['123456789012'], colour: blue" + creds + "}",
       "colour"},
  };
  for (const Bad& b : bad) {
    CAPTURE(b.name);
    auto r = env.BuildRaw(b.yaml);
    REQUIRE_FALSE(r.has_value());
    CHECK(r.error().message.find(b.says) != std::string::npos);
    CHECK(r.error().message.find("hunter2") == std::string::npos);
    CHECK(r.error().message.find(kSecret) == std::string::npos);
  }
}

TEST_CASE("AWS STS: a slow STS is cut off by the per-attempt timeout and the call deadline") {
  Env env;
  auto issuer = env.Build("timeout_ms: 300, call_deadline_ms: 900, max_attempts: 3");
  env.fake->SetLatency(std::chrono::milliseconds(1500));
  const auto t0 = std::chrono::steady_clock::now();
  auto r = issuer->Mint(Mint(Req(ReadScope())));
  const auto took = std::chrono::steady_clock::now() - t0;
  REQUIRE_FALSE(r.has_value());
  CHECK(r.error().Reason() == "aws_unavailable");
  CHECK(r.error().retryable);
  CHECK(took < std::chrono::milliseconds(1400));  // not the fake's 1.5 s, not 3 attempts
}

TEST_CASE("AWS STS: a web identity token as the broker's own identity, refreshed on ExpiredToken") {
  Env env;
  constexpr const char* kBrokerRole = "arn:aws:iam::111122223333:role/jitbroker";
  env.fake->AllowWebIdentity("oidc-token-one", kBrokerRole);
  env.fake->AllowWebIdentity("oidc-token-two", kBrokerRole);
  env.fake->AddRole(
      {"arn:aws:iam::123456789012:role/web-deploy", 3600, {kBrokerRole}, "", {kBrokerRole}});
  std::ofstream(env.dir.File("token")) << "oidc-token-one\n";
  const std::string yaml =
      "{type: aws_sts, region: us-east-1, endpoint: " + env.fake->url() +
      ", iam_endpoint: " + env.fake->url() +
      ", allow_http: true, accounts: ['123456789012'], credentials: {web_identity_token_file: " +
      env.dir.File("token") + ", role_arn: '" + kBrokerRole + "'}}";
  auto built = env.BuildRaw(yaml);
  REQUIRE_MESSAGE(built.has_value(), (built ? "" : built.error().ToString()));
  Issuer& issuer = **built;
  auto req = Req(ReadScope(), "aws://123456789012/role/web-deploy");

  auto first = issuer.Mint(Mint(req));
  REQUIRE_MESSAGE(first.has_value(), (first ? "" : first.error().ToString()));
  REQUIRE(issuer.Mint(Mint(req)).has_value());
  CHECK(env.fake->WebIdentityExchanges() == 1);  // kept, not exchanged per mint

  // The base session expires early (AWS answers ExpiredToken): the token
  // file is read again (it has rotated) and the mint succeeds.
  std::ofstream(env.dir.File("token")) << "oidc-token-two";
  env.fake->ExpireBaseSessions();
  auto again = issuer.Mint(Mint(req));
  REQUIRE_MESSAGE(again.has_value(), (again ? "" : again.error().ToString()));
  CHECK(env.fake->WebIdentityExchanges() == 2);
  // Revocation signs IAM calls with it too.
  auto revoked = issuer.Revoke(RevokeRequest{
      "grt_AbCdEf0123456789", again->revocation_handle.Clone(), again->expires_at, Mint(req).now});
  REQUIRE_MESSAGE(revoked.has_value(), (revoked ? "" : revoked.error().ToString()));

  // A token STS does not accept: the broker's own identity fails, clearly.
  std::ofstream(env.dir.File("token")) << "not-a-token-sts-knows";
  env.fake->ExpireBaseSessions();
  auto refused = issuer.Mint(Mint(req));
  REQUIRE_FALSE(refused.has_value());
  CHECK(refused.error().Reason() == "aws_auth_failed");
  CHECK(refused.error().message.find("not-a-token") == std::string::npos);
  CHECK(env.fake->Violations().empty());

  // Configuration: one identity, both keys, a readable file.
  struct Bad {
    std::string creds;
    std::string says;
  };
  const Bad bad[] = {
      {"{web_identity_token_file: " + env.dir.File("token") + "}", "role_arn"},
      {"{web_identity_token_file: " + env.dir.File("missing") + ", role_arn: '" + kBrokerRole +
           "'}",
       "cannot be read"},
      {"{web_identity_token_file: " + env.dir.File("token") +
           ", role_arn: 'arn:aws:iam::1:role/x'}",
       "role_arn"},
      {"{web_identity_token_file: " + env.dir.File("token") + ", role_arn: '" + kBrokerRole +
           "', access_key_id: file:" + env.dir.File("akid") + "}",
       "cannot be combined"},
  };
  for (const Bad& b : bad) {
    CAPTURE(b.creds);
    auto r = env.BuildRaw(
        "{type: aws_sts, region: us-east-1, accounts: ['123456789012'], "
        "credentials: " +
        b.creds + "}");
    REQUIRE_FALSE(r.has_value());
    CHECK(r.error().message.find(b.says) != std::string::npos);
  }
}

TEST_CASE("AWS STS: the XML reader refuses DOCTYPEs, entities and unbounded input") {
  CHECK(ParseXml("<a><b>x</b></a>").has_value());
  auto doc = ParseXml("<a xmlns=\"u\"><b>one &amp; two</b><c/></a>");
  REQUIRE(doc.has_value());
  CHECK(doc->Text("b") == "one & two");
  CHECK(doc->Find("c") != nullptr);
  CHECK_FALSE(doc->Text("d").has_value());
  const char* bad[] = {
      "<!DOCTYPE a [<!ENTITY x \"boom\">]><a>&x;</a>",
      "<!DOCTYPE a SYSTEM \"file:///etc/passwd\"><a/>",
      "<a><b></a>",
      "",
      "<a>&undefined;</a>",
  };
  for (const char* text : bad) {
    CAPTURE(text);
    auto r = ParseXml(text);
    REQUIRE_FALSE(r.has_value());
    CHECK(r.error().Reason() == "invalid_xml");
  }
  std::string deep;
  for (int i = 0; i < 40; ++i) {
    deep += "<a>";
  }
  CHECK_FALSE(ParseXml(deep).has_value());
  CHECK_FALSE(ParseXml(std::string(2 * 1024 * 1024, ' ')).has_value());
}

}  // namespace
}  // namespace jitbroker::issuers::aws_sts
