// The aws_sts issuer under test against a FakeSts on loopback (STS and IAM
// at one URL), shared by the issuer's unit tests.
#pragma once

#include <chrono>
#include <fstream>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include <doctest/doctest.h>
#include <yaml-cpp/yaml.h>
#include <nlohmann/json.hpp>

#include "broker/config/config.h"
#include "broker/net/http_client.h"
#include "issuers/aws_sts/aws_sts_issuer.h"
#include "jitbroker/clock.h"
#include "tests/fakes/fake_sts.h"
#include "tests/support/temp_dir.h"

namespace jitbroker::testing::aws {

inline constexpr const char* kAkid = "AKIAJITBROKERTEST01";
inline constexpr const char* kSecret = "broker/secret/key+EXAMPLE0123456789abcdef";
inline constexpr const char* kRole = "arn:aws:iam::123456789012:role/ci-deploy";

struct Env {
  testing::TempDir dir{"jitbroker-aws"};
  std::unique_ptr<FakeSts> fake;
  std::unique_ptr<net::HttpClient> http = net::MakeCurlHttpClient({});
  SystemClock clock;
  std::mutex sleeps_mu;
  std::vector<std::chrono::milliseconds> sleeps;

  Env() {
    testing::FakeStsOptions o;
    o.keys = {{kAkid, kSecret}};
    fake = FakeSts::Start(o);
    REQUIRE(fake != nullptr);
    fake->AddRole({kRole, 3600, {kAkid}, "", {kAkid}});
    fake->AddRole({"arn:aws:iam::123456789012:role/team/data/reader", 7200, {kAkid}, "", {kAkid}});
    std::ofstream(dir.File("akid")) << kAkid;
    std::ofstream(dir.File("secret")) << kSecret;
  }
  ~Env() {
    http.reset();
    fake.reset();
  }

  std::string Yaml(const std::string& extra) const {
    return "{type: aws_sts, region: us-east-1, endpoint: " + fake->url() +
           ", iam_endpoint: " + fake->url() +
           ", allow_http: true, accounts: ['123456789012'], credentials: {access_key_id: file:" +
           dir.File("akid") + ", secret_access_key: file:" + dir.File("secret") + "}" +
           (extra.empty() ? "" : ", " + extra) + "}";
  }

  Result<std::unique_ptr<Issuer>> BuildRaw(const std::string& yaml) {
    YAML::Node node = YAML::Load(yaml);
    config::Section section(node, std::make_shared<const std::string>("test.yaml"), "issuers.aws");
    section.MarkKnown("type");
    IssuerContext ctx{"aws", &section, dir.path().string(), &clock, http.get()};
    issuers::aws_sts::AwsStsHooks hooks;
    hooks.sleep = [this](std::chrono::milliseconds d) {
      std::lock_guard lock(sleeps_mu);
      sleeps.push_back(d);
    };
    return issuers::aws_sts::CreateAwsStsIssuerForTesting(ctx, std::move(hooks));
  }

  std::unique_ptr<Issuer> Build(const std::string& extra = "") {
    auto issuer = BuildRaw(Yaml(extra));
    INFO((issuer ? std::string() : issuer.error().ToString()));
    REQUIRE(issuer.has_value());
    return std::move(*issuer);
  }
};

inline GrantRequest Req(nlohmann::json scope,
                        std::string resource = "aws://123456789012/role/ci-deploy") {
  GrantRequest r;
  r.tool = "aws.s3";
  r.operation = "read";
  r.resource = std::move(resource);
  r.issuer = "aws";
  r.scope = std::move(scope);
  return r;
}

inline nlohmann::json ReadScope() {
  return {{"actions", {"s3:GetObject", "s3:ListBucket"}},
          {"resources", {"arn:aws:s3:::acme-artifacts", "arn:aws:s3:::acme-artifacts/*"}}};
}

inline MintRequest Mint(GrantRequest req, int64_t ttl = 600) {
  MintRequest m;
  m.grant_id = "grt_AbCdEf0123456789";
  m.session_id = "ses_1";
  m.task_id = "deploy#42";  // '#' is not a tag character: sent as '_'
  m.principal_id = "alice";
  m.agent_id = "agent-1";
  m.request = std::move(req);
  m.ttl_seconds = ttl;
  m.now = std::chrono::time_point_cast<std::chrono::nanoseconds>(std::chrono::system_clock::now());
  return m;
}

inline std::string Secret(const MintResult& r, const std::string& name) {
  for (const auto& [k, v] : r.secrets) {
    if (k == name) {
      return std::string(v.Reveal());
    }
  }
  return "";
}

}  // namespace jitbroker::testing::aws
