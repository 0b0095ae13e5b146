#include <doctest/doctest.h>

#include <filesystem>

#include "broker/crypto/jose.h"
#include "issuers/jwt/jwt_issuer.h"
#include "tests/fakes/fake_clock.h"

namespace jitbroker {
namespace {

Result<std::unique_ptr<Issuer>> Build(const std::string& yaml, const std::string& dir) {
  YAML::Node node = YAML::Load(yaml);
  config::Section section(node, std::make_shared<const std::string>("test.yaml"), "issuers.internal");
  section.MarkKnown("type");
  testing::FakeClock clock;
  issuers::IssuerContext ctx{"internal", &section, dir, &clock};
  return issuers::jwt::CreateJwtIssuer(ctx);
}

std::string TempDir() {
  char tmpl[] = "/tmp/jwt-issuer-test-XXXXXX";
  REQUIRE(::mkdtemp(tmpl) != nullptr);
  return tmpl;
}

MintRequest Request(TimePoint now) {
  MintRequest mr;
  mr.grant_id = "grt_abc";
  mr.session_id = "ses_1";
  mr.task_id = "task_1";
  mr.principal_id = "user_1";
  mr.agent_id = "agent_1";
  mr.request.tool = "mcp.search";
  mr.request.operation = "read";
  mr.request.resource = "jwt://mcp.internal";
  mr.request.issuer = "internal";
  mr.tier = Tier::kRead;
  mr.ttl_seconds = 120;
  mr.now = now;
  return mr;
}

TEST_CASE("JwtIssuer: mints a token with the documented claims that verifies with its JWK") {
  for (std::string alg : {"ES256", "Ed25519"}) {
    CAPTURE(alg);
    const std::string dir = TempDir();
    auto issuer = Build("{type: jwt, algorithm: " + alg + ", audiences: [mcp.internal]}", dir);
    REQUIRE(issuer.has_value());
    const IssuerDescription& d = (*issuer)->Describe();
    CHECK(d.type == "jwt");
    CHECK(d.revocability == Revocability::kRevocable);
    CHECK(d.max_ttl_seconds == 900);

    testing::FakeClock clock;
    auto minted = (*issuer)->Mint(Request(clock.Now()));
    REQUIRE(minted.has_value());
    CHECK(minted->type == "jwt");
    REQUIRE(minted->secrets.size() == 1);
    const std::string token(minted->secrets[0].second.Reveal());
    CHECK(minted->expires_at == clock.Now() + std::chrono::seconds(120));
    CHECK(minted->fingerprint_sha256.size() == 64);

    auto jwks = (*issuer)->PublicJwks();
    REQUIRE(jwks.size() == 1);
    auto vk = crypto::VerifyKey::FromJwk(jwks[0]);
    REQUIRE(vk.has_value());
    auto payload = crypto::VerifyJws(token, **vk);
    REQUIRE(payload.has_value());
    CHECK((*payload)["jti"] == "grt_abc");
    CHECK((*payload)["sub"] == "agent_1");
    CHECK((*payload)["act"]["sub"] == "user_1");
    CHECK((*payload)["aud"] == "mcp.internal");
    CHECK((*payload)["session_id"] == "ses_1");
    CHECK((*payload)["task_id"] == "task_1");
    CHECK((*payload)["tier"] == "read");
    CHECK((*payload)["scope"] == "read");
    CHECK((*payload)["exp"].get<int64_t>() == ToUnixSeconds(clock.Now()) + 120);
    CHECK((*issuer)->VerifyOwnToken(token).has_value());

    // The generated key persists: a second build signs with the same key.
    auto again = Build("{type: jwt, algorithm: " + alg + ", audiences: [mcp.internal]}", dir);
    REQUIRE(again.has_value());
    CHECK((*again)->PublicJwks()[0] == jwks[0]);
    CHECK((std::filesystem::status(dir + "/keys/issuer-internal.pem").permissions() &
           std::filesystem::perms::group_all) == std::filesystem::perms::none);

    // Another issuer's key does not verify this token.
    auto other = Build("{type: jwt, algorithm: " + alg + ", audiences: [mcp.internal]}", TempDir());
    REQUIRE(other.has_value());
    CHECK_FALSE((*other)->VerifyOwnToken(token).has_value());
    std::filesystem::remove_all(dir);
  }
}

TEST_CASE("JwtIssuer: issuer-specific scope is validated") {
  auto issuer = Build("{type: jwt, audiences: [mcp.internal, api.internal]}", TempDir());
  REQUIRE(issuer.has_value());
  GrantRequest req;
  req.resource = "jwt://mcp.internal";
  CHECK((*issuer)->ImpliedTier(req).value() == Tier::kRead);
  req.scope = {{"audience", "mcp.internal"}, {"scopes", {"search", "fetch"}}};
  CHECK((*issuer)->ImpliedTier(req).has_value());
  struct Case {
    std::string resource;
    nlohmann::json scope;
    const char* reason;
  } cases[] = {
      {"jwt://other.internal", nlohmann::json::object(), "invalid_audience"},
      {"github://acme/x", nlohmann::json::object(), "invalid_resource"},
      {"jwt://mcp.internal", {{"audience", "api.internal"}}, "invalid_scope"},
      {"jwt://mcp.internal", {{"audience", 5}}, "invalid_scope"},
      {"jwt://mcp.internal", {{"scopes", "a b"}}, "invalid_scope"},
      {"jwt://mcp.internal", {{"scopes", {"a b"}}}, "invalid_scope"},
      {"jwt://mcp.internal", {{"admin", true}}, "unknown_field"},
  };
  for (const auto& c : cases) {
    CAPTURE(c.resource);
    CAPTURE(c.scope.dump());
    GrantRequest r;
    r.resource = c.resource;
    r.scope = c.scope;
    auto t = (*issuer)->ImpliedTier(r);
    REQUIRE_FALSE(t.has_value());
    CHECK(t.error().Reason() == c.reason);
  }
}

TEST_CASE("JwtIssuer: config errors name the key") {
  struct Case {
    const char* yaml;
    const char* key;
  } cases[] = {
      {"{type: jwt}", "audiences"},
      {"{type: jwt, audiences: [a], algorithm: HS256}", "algorithm"},
      {"{type: jwt, audiences: [a], algorithm: RS256}", "algorithm"},
      {"{type: jwt, audiences: [a], max_ttl_seconds: 0}", "max_ttl_seconds"},
      {"{type: jwt, audiences: [a], signing_key: inline-pem}", "signing_key"},
      {"{type: jwt, audiences: [a], colour: blue}", "colour"},
  };
  for (const auto& c : cases) {
    CAPTURE(c.yaml);
    auto r = Build(c.yaml, TempDir());
    REQUIRE_FALSE(r.has_value());
    CHECK(r.error().message.find(c.key) != std::string::npos);
  }
}

}  // namespace
}  // namespace jitbroker
