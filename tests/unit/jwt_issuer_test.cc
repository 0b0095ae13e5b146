#include <doctest/doctest.h>

#include <cstdlib>
#include <filesystem>
#include <string>
#include <vector>

#include "broker/config/config.h"
#include "broker/crypto/jose.h"
#include "issuers/jwt/jwt_issuer.h"
#include "tests/fakes/fake_clock.h"

namespace jitbroker {
namespace {

Result<std::unique_ptr<Issuer>> Build(const std::string& yaml, const std::string& dir) {
  YAML::Node node = YAML::Load(yaml);
  config::Section section(node, std::make_shared<const std::string>("test.yaml"),
                          "issuers.internal");
  section.MarkKnown("type");
  testing::FakeClock clock;
  IssuerContext ctx{"internal", &section, dir, &clock};
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

TEST_CASE("JwtIssuer: key rotation publishes and accepts the retired key while configured") {
  // Issue #16 (docs/operations.md, "Rotating a jwt issuer's key"): the new
  // key signs; previous_key keeps the old one in the JWKS and accepted for
  // introspection until the tokens it signed have expired.
  const std::string old_dir = TempDir();
  auto old_issuer = Build("{type: jwt, audiences: [mcp.internal]}", old_dir);
  REQUIRE(old_issuer.has_value());
  testing::FakeClock clock;
  auto minted = (*old_issuer)->Mint(Request(clock.Now()));
  REQUIRE(minted.has_value());
  const std::string old_token(minted->secrets[0].second.Reveal());
  const nlohmann::json old_jwk = (*old_issuer)->PublicJwks()[0];
  const std::string old_pub = old_dir + "/old.pub.pem";
  REQUIRE(std::system(
              ("openssl pkey -in " + old_dir + "/keys/issuer-internal.pem -pubout -out " + old_pub)
                  .c_str()) == 0);

  const std::string new_dir = TempDir();
  auto rotated =
      Build("{type: jwt, audiences: [mcp.internal], previous_key: file:" + old_pub + "}", new_dir);
  REQUIRE_MESSAGE(rotated.has_value(), (rotated ? "" : rotated.error().ToString()));
  auto jwks = (*rotated)->PublicJwks();
  REQUIRE(jwks.size() == 2);
  CHECK(jwks[1] == old_jwk);  // the same kid, alg and members as when it signed
  CHECK(jwks[0]["kid"] != old_jwk["kid"]);
  CHECK((*rotated)->VerifyOwnToken(old_token).has_value());
  auto fresh = (*rotated)->Mint(Request(clock.Now()));
  REQUIRE(fresh.has_value());
  const std::string new_token(fresh->secrets[0].second.Reveal());
  CHECK(fresh->audit_fields["kid"] == jwks[0]["kid"]);
  CHECK((*rotated)->VerifyOwnToken(new_token).has_value());

  // Once previous_key is removed, the old key is gone from both.
  auto done = Build("{type: jwt, audiences: [mcp.internal]}", new_dir);
  REQUIRE(done.has_value());
  CHECK((*done)->PublicJwks().size() == 1);
  CHECK_FALSE((*done)->VerifyOwnToken(old_token).has_value());
  CHECK((*done)->VerifyOwnToken(new_token).has_value());

  // A private key, a key of another algorithm, or the signing key itself is
  // refused, naming previous_key.
  const std::string ed_pub = new_dir + "/ed.pub.pem";
  REQUIRE(
      std::system(
          ("openssl genpkey -algorithm ED25519 2>/dev/null | openssl pkey -pubout -out " + ed_pub)
              .c_str()) == 0);
  const std::string self_pub = new_dir + "/self.pub.pem";
  REQUIRE(std::system(
              ("openssl pkey -in " + new_dir + "/keys/issuer-internal.pem -pubout -out " + self_pub)
                  .c_str()) == 0);
  for (const std::string& bad : {old_dir + "/keys/issuer-internal.pem", ed_pub, self_pub}) {
    CAPTURE(bad);
    auto r =
        Build("{type: jwt, audiences: [mcp.internal], previous_key: file:" + bad + "}", new_dir);
    REQUIRE_FALSE(r.has_value());
    CHECK(r.error().message.find("previous_key") != std::string::npos);
  }
  std::filesystem::remove_all(old_dir);
  std::filesystem::remove_all(new_dir);
}

TEST_CASE("JwtIssuer: issuer-specific scope is validated") {
  auto issuer = Build("{type: jwt, audiences: [mcp.internal, api.internal]}", TempDir());
  REQUIRE(issuer.has_value());
  GrantRequest req;
  req.resource = "jwt://mcp.internal";
  CHECK((*issuer)->ImpliedTier(req).value() == Tier::kRead);
  req.scope = {{"audience", "mcp.internal"}};
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
      {"jwt://mcp.internal", {{"scopes", {"a\"b"}}}, "invalid_scope"},
      {"jwt://mcp.internal", {{"scopes", {std::string(257, 'a')}}}, "invalid_scope"},
      {"jwt://mcp.internal", {{"scopes", nlohmann::json::array({"\u202eadmin"})}}, "invalid_scope"},
      {"jwt://mcp.internal", {{"scopes", {1}}}, "invalid_scope"},
      {"jwt://mcp.internal", {{"admin", true}}, "unknown_field"},
      // Without scope_tiers the issuer mints no requested scope (fail closed).
      {"jwt://mcp.internal", {{"scopes", {"search", "fetch"}}}, "unknown_scope"},
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
      {"{type: jwt, audiences: [a], scope_tiers: [read]}", "scope_tiers"},
      {"{type: jwt, audiences: [a], scope_tiers: {read: root}}", "scope_tiers.read"},
      {"{type: jwt, audiences: [a], scope_tiers: {read: [read]}}", "scope_tiers.read"},
      {"{type: jwt, audiences: [a], scope_tiers: {\"re:(\": read}}", "scope_tiers.re:("},
      {"{type: jwt, audiences: [a], scope_tiers: {\"a b\": read}}", "scope_tiers.a b"},
  };
  for (const auto& c : cases) {
    CAPTURE(c.yaml);
    auto r = Build(c.yaml, TempDir());
    REQUIRE_FALSE(r.has_value());
    CHECK(r.error().message.find(c.key) != std::string::npos);
  }
}

// Issue #10, finding 1: an agent chose its JWT's `scope` claim
// ("admin delete:all deploy:prod") and it was minted at tier read. The issuer
// now mints only declared scopes, each with its tier.
TEST_CASE("JwtIssuer: scope_tiers declare the scopes a token may carry and their tiers") {
  const std::string dir = TempDir();
  auto issuer = Build(
      "{type: jwt, audiences: [mcp.internal], scope_tiers: {read: read, \"mcp:*\": read, "
      "\"mcp:admin\": destructive, deploy: write, \"deploy:*\": merge_deploy, admin: destructive, "
      "\"re:report-[0-9]+\": pr}}",
      dir);
  REQUIRE_MESSAGE(issuer.has_value(), (issuer ? "" : issuer.error().ToString()));
  struct Case {
    const char* name;
    nlohmann::json scopes;  // null: no scope.scopes
    const char* operation;
    const char* error;  // reason, or nullptr
    Tier tier;
    std::vector<std::string> items;
  } cases[] = {
      {"the finding's request: an undeclared scope is refused",
       nlohmann::json::array({"admin", "delete:all", "deploy:prod"}),
       "read",
       "unknown_scope",
       Tier::kRead,
       {}},
      {"declared admin implies destructive",
       nlohmann::json::array({"admin"}),
       "read",
       nullptr,
       Tier::kDestructive,
       {"admin"}},
      {"the highest tier of the scopes",
       nlohmann::json::array({"deploy:prod", "read"}),
       "read",
       nullptr,
       Tier::kMergeDeploy,
       {"deploy:prod", "read"}},
      {"the highest matching pattern wins",
       nlohmann::json::array({"mcp:admin"}),
       "read",
       nullptr,
       Tier::kDestructive,
       {"mcp:admin"}},
      {"a glob",
       nlohmann::json::array({"mcp:search"}),
       "read",
       nullptr,
       Tier::kRead,
       {"mcp:search"}},
      {"glob star does not span ':'",
       nlohmann::json::array({"deploy:prod:eu"}),
       "read",
       "unknown_scope",
       Tier::kRead,
       {}},
      {"deploy:* does not match deploy",
       nlohmann::json::array({"deploy"}),
       "read",
       nullptr,
       Tier::kWrite,
       {"deploy"}},
      {"an anchored regex",
       nlohmann::json::array({"report-42"}),
       "read",
       nullptr,
       Tier::kPr,
       {"report-42"}},
      {"the regex is anchored",
       nlohmann::json::array({"xreport-42"}),
       "read",
       "unknown_scope",
       Tier::kRead,
       {}},
      {"case-sensitive",
       nlohmann::json::array({"Admin"}),
       "read",
       "unknown_scope",
       Tier::kRead,
       {}},
      {"duplicates collapse",
       nlohmann::json::array({"read", "read"}),
       "read",
       nullptr,
       Tier::kRead,
       {"read"}},
      {"no scopes: a declared operation is the scope",
       nullptr,
       "read",
       nullptr,
       Tier::kRead,
       {"read"}},
      {"no scopes: the operation's declared tier",
       nullptr,
       "admin",
       nullptr,
       Tier::kDestructive,
       {"admin"}},
      {"no scopes: an undeclared operation carries no scope",
       nullptr,
       "frobnicate",
       nullptr,
       Tier::kRead,
       {}},
      {"an empty list is no scopes",
       nlohmann::json::array(),
       "read",
       nullptr,
       Tier::kRead,
       {"read"}},
  };
  testing::FakeClock clock;
  for (const Case& c : cases) {
    CAPTURE(c.name);
    MintRequest mr = Request(clock.Now());
    mr.request.operation = c.operation;
    if (!c.scopes.is_null()) {
      mr.request.scope = {{"scopes", c.scopes}};
    }
    auto tier = (*issuer)->ImpliedTier(mr.request);
    auto items = (*issuer)->ScopeItems(mr.request);
    if (c.error != nullptr) {
      REQUIRE_FALSE(tier.has_value());
      CHECK(tier.error().Reason() == c.error);
      CHECK(tier.error().code == ErrorCode::kInvalidArgument);
      REQUIRE_FALSE(items.has_value());
      CHECK(items.error().Reason() == c.error);
      CHECK_FALSE((*issuer)->Mint(mr).has_value());
      continue;
    }
    REQUIRE(tier.has_value());
    CHECK(TierName(*tier) == TierName(c.tier));
    REQUIRE(items.has_value());
    CHECK(*items == c.items);
    // The token's claim is exactly the scope items.
    mr.tier = *tier;
    auto minted = (*issuer)->Mint(mr);
    REQUIRE(minted.has_value());
    auto claims = (*issuer)->VerifyOwnToken(minted->secrets[0].second.Reveal());
    REQUIRE(claims.has_value());
    if (c.items.empty()) {
      CHECK_FALSE(claims->contains("scope"));
    } else {
      std::string joined;
      for (const std::string& i : c.items) {
        joined += (joined.empty() ? "" : " ") + i;
      }
      CHECK((*claims)["scope"] == joined);
    }
  }
  std::filesystem::remove_all(dir);
}

TEST_CASE("JwtIssuer: without scope_tiers the claim is the operation and no scope is minted") {
  const std::string dir = TempDir();
  auto issuer = Build("{type: jwt, audiences: [mcp.internal]}", dir);
  REQUIRE(issuer.has_value());
  testing::FakeClock clock;
  MintRequest mr = Request(clock.Now());
  mr.request.operation = "write";
  CHECK((*issuer)->ScopeItems(mr.request).value() == std::vector<std::string>{"write"});
  CHECK((*issuer)->ImpliedTier(mr.request).value() == Tier::kRead);
  auto minted = (*issuer)->Mint(mr);
  REQUIRE(minted.has_value());
  CHECK((*(*issuer)->VerifyOwnToken(minted->secrets[0].second.Reveal()))["scope"] == "write");
  mr.request.scope = {{"scopes", {"admin"}}};
  auto refused = (*issuer)->ScopeItems(mr.request);
  REQUIRE_FALSE(refused.has_value());
  CHECK(refused.error().Reason() == "unknown_scope");
  CHECK(refused.error().message.find("scope_tiers") != std::string::npos);
  CHECK_FALSE((*issuer)->Mint(mr).has_value());
  // An empty scope_tiers declares nothing: no scope at all.
  auto strict = Build("{type: jwt, audiences: [mcp.internal], scope_tiers: {}}", dir);
  REQUIRE(strict.has_value());
  mr.request.scope = nlohmann::json::object();
  CHECK((*strict)->ScopeItems(mr.request).value().empty());
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace jitbroker
