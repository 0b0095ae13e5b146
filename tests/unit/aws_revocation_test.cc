// Revoking AWS credentials (revoke: deny_policy, docs/aws.md "Revocation"):
// the jitbroker-revocations document (deny_policy.h) and the issuer writing
// it with IAM GetRolePolicy + PutRolePolicy against FakeSts, which then
// refuses calls made with the revoked credentials.
#include <doctest/doctest.h>

#include <atomic>
#include <string>
#include <thread>
#include <vector>

#include <nlohmann/json.hpp>

#include "broker/common/time_util.h"
#include "issuers/aws_sts/deny_policy.h"
#include "tests/support/aws_test_env.h"

namespace jitbroker::issuers::aws_sts {
namespace {

using testing::aws::Env;
using testing::aws::Mint;
using testing::aws::ReadScope;
using testing::aws::Req;
using testing::aws::Secret;

TimePoint At(const char* rfc3339) { return *ParseRfc3339(rfc3339); }

TEST_CASE("AWS deny policy: entries grouped by expiry, pruned, rendered exactly") {
  DenyPolicy p;
  p.Add("grt_b", At("2026-12-05T15:20:00Z"));
  p.Add("grt_a", At("2026-12-05T15:29:59Z"));  // the same 15-minute bucket
  p.Add("grt_c", At("2026-12-05T15:30:01Z"));  // the next one
  CHECK(p.Contains("grt_a"));
  CHECK_FALSE(p.Contains("grt_x"));
  CHECK(p.Entries() == 3);
  const std::string doc = p.Render();
  CHECK(doc ==
        R"({"Statement":[{"Action":"*","Condition":{"StringEquals":{"aws:SourceIdentity":)"
        R"(["grt_a","grt_b"]}},"Effect":"Deny","Resource":"*","Sid":"JbUntil202612051530"},)"
        R"({"Action":"*","Condition":{"StringEquals":{"aws:SourceIdentity":["grt_c"]}},)"
        R"("Effect":"Deny","Resource":"*","Sid":"JbUntil202612051545"}],"Version":"2012-10-17"})");

  // What the broker wrote reads back the same: restarts and other replicas
  // see every entry and its expiry.
  auto again = DenyPolicy::Parse(doc);
  REQUIRE(again.has_value());
  CHECK(again->Render() == doc);

  // A bucket goes once its end has passed, not before.
  CHECK(again->Prune(At("2026-12-05T15:29:59Z")) == 0);
  CHECK(again->Prune(At("2026-12-05T15:30:00Z")) == 2);
  CHECK_FALSE(again->Contains("grt_a"));
  CHECK(again->Contains("grt_c"));
}

TEST_CASE("AWS deny policy: an operator's statements are kept; what is not a policy is refused") {
  const std::string theirs =
      R"({"Version":"2012-10-17","Statement":{"Sid":"OpsBreakGlass","Effect":"Deny",)"
      R"("Action":"s3:*","Resource":"*"}})";
  auto p = DenyPolicy::Parse(theirs);
  REQUIRE(p.has_value());
  CHECK(p->Entries() == 0);
  p->Add("grt_a", At("2026-12-05T15:00:00Z"));
  const nlohmann::json out = nlohmann::json::parse(p->Render());
  REQUIRE(out["Statement"].size() == 2);
  CHECK(out["Statement"][0]["Sid"] == "OpsBreakGlass");
  CHECK(out["Statement"][1]["Sid"] == "JbUntil202612051500");

  // Look-alikes are not ours: a Sid that does not render back, another
  // effect, an extra condition. They are kept verbatim and never pruned.
  const char* look_alikes[] = {
      R"({"Statement":[{"Sid":"JbUntil202613011500","Effect":"Deny","Action":"*","Resource":"*",)"
      R"("Condition":{"StringEquals":{"aws:SourceIdentity":["x"]}}}]})",
      R"({"Statement":[{"Sid":"JbUntil200001010000","Effect":"Allow","Action":"*","Resource":"*",)"
      R"("Condition":{"StringEquals":{"aws:SourceIdentity":["x"]}}}]})",
      R"({"Statement":[{"Sid":"JbUntil200001010000","Effect":"Deny","Action":"*","Resource":"*",)"
      R"("Condition":{"StringEquals":{"aws:SourceIdentity":["x"],"aws:userid":"y"}}}]})",
  };
  for (const char* doc : look_alikes) {
    CAPTURE(doc);
    auto q = DenyPolicy::Parse(doc);
    REQUIRE(q.has_value());
    CHECK(q->Entries() == 0);
    CHECK(q->Prune(At("2030-01-01T00:00:00Z")) == 0);
    CHECK(nlohmann::json::parse(q->Render())["Statement"].size() == 1);
  }

  for (const char* bad : {"", "[]", "not json", R"({"Statement":"x"})"}) {
    CAPTURE(bad);
    auto r = DenyPolicy::Parse(bad);
    REQUIRE_FALSE(r.has_value());
    CHECK(r.error().Reason() == "aws_revocation_policy_invalid");
  }
  CHECK_FALSE(DenyPolicy::Parse(std::string(200 * 1024, ' ')).has_value());
}

struct Minted {
  std::string grant_id;
  MintResult result;
};

Minted MintAs(Issuer& issuer, const std::string& grant_id, int64_t ttl = 1800) {
  MintRequest m = Mint(Req(ReadScope()), ttl);
  m.grant_id = grant_id;
  auto r = issuer.Mint(m);
  REQUIRE_MESSAGE(r.has_value(), (r ? "" : r.error().ToString()));
  return Minted{grant_id, std::move(*r)};
}

Result<RevokeOutcome> RevokeNow(Issuer& issuer, const Minted& m) {
  return issuer.Revoke(RevokeRequest{m.grant_id, m.result.revocation_handle.Clone(),
                                     m.result.upstream_expires_at.value_or(m.result.expires_at),
                                     Mint(Req(ReadScope())).now});
}

nlohmann::json DenyDocument(const Env& env) {
  auto doc = env.fake->RolePolicy("ci-deploy", std::string(kDenyPolicyName));
  REQUIRE(doc.has_value());
  return nlohmann::json::parse(*doc);
}

TEST_CASE("AWS deny_policy: a revoked credential is denied on its role, the others keep working") {
  Env env;
  auto issuer = env.Build();
  CHECK(issuer->Describe().revocability == Revocability::kDenyByCondition);
  const Minted a = MintAs(*issuer, "grt_AAAAAAAAAAAAAAAA");
  const Minted b = MintAs(*issuer, "grt_BBBBBBBBBBBBBBBB");
  CHECK(env.fake->SecretActive(Secret(a.result, "secret_access_key")));
  CHECK_FALSE(env.fake->RolePolicy("ci-deploy", std::string(kDenyPolicyName)).has_value());

  auto r = RevokeNow(*issuer, a);
  REQUIRE_MESSAGE(r.has_value(), (r ? "" : r.error().ToString()));
  CHECK(r->kind == RevokeOutcomeKind::kDenyInstalled);
  CHECK(r->residual_seconds == 300);  // IAM's propagation, not the credential's 30 minutes
  CHECK_FALSE(env.fake->SecretActive(Secret(a.result, "secret_access_key")));
  CHECK(env.fake->SecretActive(Secret(b.result, "secret_access_key")));
  const nlohmann::json doc = DenyDocument(env);
  REQUIRE(doc["Statement"].size() == 1);
  CHECK(doc["Statement"][0]["Condition"]["StringEquals"]["aws:SourceIdentity"] ==
        nlohmann::json::array({"grt_AAAAAAAAAAAAAAAA"}));
  CHECK(env.fake->PolicyWrites() == 1);

  // Again (a retried revocation): nothing to write.
  REQUIRE(RevokeNow(*issuer, a).has_value());
  CHECK(env.fake->PolicyWrites() == 1);

  // A credential that has already expired: nothing to deny.
  auto late = issuer->Revoke(RevokeRequest{b.grant_id, b.result.revocation_handle.Clone(),
                                           b.result.expires_at,
                                           b.result.expires_at + std::chrono::seconds(1)});
  REQUIRE(late.has_value());
  CHECK(late->kind == RevokeOutcomeKind::kDenyInstalled);
  CHECK(late->residual_seconds == 0);
  CHECK(env.fake->PolicyWrites() == 1);
  CHECK(env.fake->Violations().empty());

  // A new issuer (a restart) reads what is there and adds to it.
  auto restarted = env.Build();
  REQUIRE(RevokeNow(*restarted, b).has_value());
  CHECK(DenyDocument(env)["Statement"][0]["Condition"]["StringEquals"]["aws:SourceIdentity"] ==
        nlohmann::json::array({"grt_AAAAAAAAAAAAAAAA", "grt_BBBBBBBBBBBBBBBB"}));
}

TEST_CASE("AWS deny_policy: expired entries are pruned and an operator's statement is kept") {
  Env env;
  auto issuer = env.Build();
  env.fake->SetRolePolicy(
      "ci-deploy", std::string(kDenyPolicyName),
      R"({"Version":"2012-10-17","Statement":[{"Sid":"JbUntil202001010000","Effect":"Deny",)"
      R"("Action":"*","Resource":"*","Condition":{"StringEquals":{"aws:SourceIdentity":)"
      R"(["grt_OLD"]}}},{"Sid":"Ops","Effect":"Deny","Action":"iam:*","Resource":"*"}]})");
  const Minted a = MintAs(*issuer, "grt_AAAAAAAAAAAAAAAA");
  REQUIRE(RevokeNow(*issuer, a).has_value());
  const std::string doc = DenyDocument(env).dump();
  CHECK(doc.find("grt_OLD") == std::string::npos);
  CHECK(doc.find("\"Ops\"") != std::string::npos);
  CHECK(doc.find("grt_AAAAAAAAAAAAAAAA") != std::string::npos);
}

TEST_CASE("AWS deny_policy: a full policy is never truncated; IAM's failures are errors to retry") {
  Env env;
  SUBCASE("over max_policy_chars") {
    auto issuer = env.Build("max_policy_chars: 1024");
    nlohmann::json ids = nlohmann::json::array();
    for (int i = 0; i < 50; ++i) {
      ids.push_back("grt_FILLER" + std::to_string(1000 + i));
    }
    const std::string seeded =
        nlohmann::json{{"Version", "2012-10-17"},
                       {"Statement",
                        {{{"Sid", "JbUntil209901010000"},
                          {"Effect", "Deny"},
                          {"Action", "*"},
                          {"Resource", "*"},
                          {"Condition", {{"StringEquals", {{"aws:SourceIdentity", ids}}}}}}}}}
            .dump();
    env.fake->SetRolePolicy("ci-deploy", std::string(kDenyPolicyName), seeded);
    const Minted a = MintAs(*issuer, "grt_AAAAAAAAAAAAAAAA");
    auto r = RevokeNow(*issuer, a);
    REQUIRE_FALSE(r.has_value());
    CHECK(r.error().Reason() == "aws_revocation_policy_full");
    CHECK(env.fake->RolePolicy("ci-deploy", std::string(kDenyPolicyName)) == seeded);
    std::vector<MetricFamily> metrics;
    issuer->CollectMetrics(metrics);
    bool counted = false;
    for (const auto& f : metrics) {
      for (const auto& [labels, v] : f.samples) {
        counted |= f.name == "jitbroker_aws_revocation_writes_total" &&
                   labels.find("policy_full") != std::string::npos && v == 1;
      }
    }
    CHECK(counted);
  }
  SUBCASE("IAM's own limit (other inline policies of the role)") {
    auto issuer = env.Build();
    env.fake->SetRolePolicy("ci-deploy", "app-rights",
                            "{\"Version\":\"2012-10-17\",\"Statement\":[],\"Pad\":\"" +
                                std::string(10150, 'x') + "\"}");
    auto r = RevokeNow(*issuer, MintAs(*issuer, "grt_AAAAAAAAAAAAAAAA"));
    REQUIRE_FALSE(r.has_value());
    CHECK(r.error().Reason() == "aws_limit_exceeded");
  }
  SUBCASE("IAM unavailable") {
    auto issuer = env.Build("max_attempts: 2");
    env.fake->InjectErrors("ServiceUnavailable", 503, -1, "PutRolePolicy");
    auto r = RevokeNow(*issuer, MintAs(*issuer, "grt_AAAAAAAAAAAAAAAA"));
    REQUIRE_FALSE(r.has_value());
    CHECK(r.error().Reason() == "aws_unavailable");
    CHECK(r.error().message.find("AWS IAM") != std::string::npos);
  }
  SUBCASE("the broker may not write the role's policies") {
    env.fake->AddRole(
        {"arn:aws:iam::123456789012:role/no-iam", 3600, {testing::aws::kAkid}, "", {}});
    auto issuer = env.Build();
    MintRequest m = Mint(Req(ReadScope(), "aws://123456789012/role/no-iam"), 1800);
    auto minted = issuer->Mint(m);
    REQUIRE(minted.has_value());
    auto r = issuer->Revoke(
        RevokeRequest{m.grant_id, minted->revocation_handle.Clone(), minted->expires_at, m.now});
    REQUIRE_FALSE(r.has_value());
    CHECK(r.error().Reason() == "aws_access_denied");
    CHECK(r.error().message.find("iam:PutRolePolicy") != std::string::npos);
  }
  SUBCASE("revoke: expiry_only says how long the credential lives") {
    auto issuer = env.Build("revoke: expiry_only");
    CHECK(issuer->Describe().revocability == Revocability::kExpiryOnly);
    auto r = RevokeNow(*issuer, MintAs(*issuer, "grt_AAAAAAAAAAAAAAAA"));
    REQUIRE(r.has_value());
    CHECK(r->kind == RevokeOutcomeKind::kExpiryOnly);
    CHECK(r->residual_seconds > 1700);
    CHECK(env.fake->PolicyWrites() == 0);
  }
}

TEST_CASE("AWS deny_policy: concurrent revocations of one role are gathered into few writes") {
  Env env;
  auto issuer = env.Build();
  constexpr int kGrants = 24;
  std::vector<Minted> minted;
  for (int i = 0; i < kGrants; ++i) {
    minted.push_back(MintAs(*issuer, "grt_CONCURRENT" + std::to_string(100 + i)));
  }
  env.fake->SetLatency(std::chrono::milliseconds(20));
  std::atomic<int> ok{0};
  std::vector<std::thread> threads;
  for (const Minted& m : minted) {
    threads.emplace_back([&, &m = m] { ok += RevokeNow(*issuer, m).has_value() ? 1 : 0; });
  }
  for (auto& t : threads) {
    t.join();
  }
  CHECK(ok == kGrants);
  const std::string doc = DenyDocument(env).dump();
  for (const Minted& m : minted) {
    CHECK(doc.find(m.grant_id) != std::string::npos);
    CHECK_FALSE(env.fake->SecretActive(Secret(m.result, "secret_access_key")));
  }
  MESSAGE("policy writes for ", kGrants, " concurrent revocations: ", env.fake->PolicyWrites());
  CHECK(env.fake->PolicyWrites() < kGrants / 2);
}

}  // namespace
}  // namespace jitbroker::issuers::aws_sts
