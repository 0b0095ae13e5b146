// broker/http/wire.h: request bodies into the service's typed inputs, its
// typed answers into the JSON of docs/api.md. The routes and the service
// tests go through these; here, the parts whose shape matters on its own:
// strictness, selectors, secrets shown only where documented, RFC 8693's
// access_token for bearer and non-bearer credentials.
#include <doctest/doctest.h>

#include <chrono>
#include <string>

#include <nlohmann/json.hpp>

#include "broker/http/wire.h"
#include "jitbroker/secret.h"

namespace jitbroker::http::wire {
namespace {

using nlohmann::json;

TimePoint At(int64_t unix_seconds) { return TimePoint(std::chrono::seconds(unix_seconds)); }

GrantRecord Grant() {
  GrantRecord g;
  g.id = "grt_1";
  g.session_id = "ses_1";
  g.state = GrantState::kActive;
  g.tool = "mcp.search";
  g.operation = "read";
  g.resource = "jwt://api.internal";
  g.issuer = "internal";
  g.tier = "read";
  g.decision = {{"result", "allow"}};
  g.created_at = At(1'700'000'000);
  g.expires_at = At(1'700'000'900);
  g.ttl_seconds = 900;
  return g;
}

TEST_CASE("Wire: request bodies are parsed strictly into typed inputs") {
  SUBCASE("a session: agent, task, scope; an unknown field is refused") {
    auto in = ParseOpenSession(json::parse(R"({"agent": {"id": "a1"},
        "task": {"id": "t1", "description": "fix", "scope": {"resources": ["jwt://x"],
        "max_tier": "pr"}}, "ttl_seconds": 60})"));
    REQUIRE_MESSAGE(in.has_value(), (in ? "" : in.error().ToString()));
    CHECK(in->agent_id == "a1");
    CHECK(in->task_id == "t1");
    CHECK(in->description == "fix");
    CHECK(in->scope.max_tier == Tier::kPr);
    CHECK(in->ttl_seconds == 60);
    CHECK_FALSE(in->heartbeat_seconds.has_value());

    auto bad = ParseOpenSession(json::parse(R"({"agent": {"id": "a1"},
        "task": {"id": "t1", "scope": {}}, "extra": 1})"));
    REQUIRE_FALSE(bad.has_value());
    CHECK(bad.error().Reason() == "unknown_field");
  }
  SUBCASE("a task scope error names task.scope") {
    auto bad = ParseOpenSession(json::parse(R"({"agent": {"id": "a1"},
        "task": {"id": "t1", "scope": {"max_tier": "ultra"}}})"));
    REQUIRE_FALSE(bad.has_value());
    CHECK(bad.error().message.starts_with("task.scope: "));
  }
  SUBCASE("an identifier with a space or invisible formatting is refused") {
    auto spaced = ParseGrantRequest(
        {{"tool", "mcp search"}, {"operation", "read"}, {"resource", "r"}, {"issuer", "i"}});
    REQUIRE_FALSE(spaced.has_value());
    CHECK(spaced.error().Reason() == "invalid_value");
    auto bidi = ParseHeartbeat({{"progress", "done \u202e"}});
    REQUIRE_FALSE(bidi.has_value());
  }
  SUBCASE("an approval decision is approve or deny") {
    auto ok = ParseApprovalDecision({{"decision", "deny"}, {"request_digest", "d"}});
    REQUIRE(ok.has_value());
    CHECK_FALSE(ok->approve);
    auto bad = ParseApprovalDecision({{"decision", "maybe"}, {"request_digest", "d"}});
    REQUIRE_FALSE(bad.has_value());
    CHECK(bad.error().Reason() == "invalid_value");
  }
  SUBCASE("a bulk revocation names exactly one selector") {
    auto agent = ParseBulkRevoke({{"agent", "a1"}, {"reason", "incident"}});
    REQUIRE(agent.has_value());
    CHECK(agent->selector.kind == service::BulkSelector::Kind::kAgent);
    CHECK(agent->selector.value == "a1");
    auto all = ParseBulkRevoke({{"all", true}, {"reason", "incident"}});
    REQUIRE(all.has_value());
    CHECK(all->selector.kind == service::BulkSelector::Kind::kAll);
    for (const json& body :
         {json{{"reason", "r"}}, json{{"agent", "a"}, {"all", true}, {"reason", "r"}},
          json{{"all", false}, {"reason", "r"}}}) {
      CAPTURE(body.dump());
      auto bad = ParseBulkRevoke(body);
      REQUIRE_FALSE(bad.has_value());
      CHECK(bad.error().Reason() == "invalid_selector");
    }
  }
}

TEST_CASE("Wire: a grant shows its credential only in the answer that minted it") {
  service::GrantView v{Grant(), At(1'700'000'100), std::nullopt};
  json plain = GrantJson(v);
  CHECK(plain["state"] == "active");
  CHECK_FALSE(plain.contains("credential"));

  // Past its expiry, before the sweeper recorded it: shown as expired.
  v.now = At(1'700'000'900);
  CHECK(GrantJson(v)["state"] == "expired");

  service::IssuedCredential c;
  c.type = "jwt";
  c.expires_at = At(1'700'000'900);
  c.fields = {{"kid", "k1"}};
  c.secrets.emplace_back("token", SecretValue(std::string("eyJ.secret")));
  v.credential = std::move(c);
  json minted = GrantJson(v);
  CHECK(minted["credential"]["token"] == "eyJ.secret");
  CHECK(minted["credential"]["kid"] == "k1");
  CHECK(minted["credential"]["type"] == "jwt");
  CHECK(minted["credential"]["expires_at"] == "2023-11-14T22:28:20Z");
}

TEST_CASE("Wire: RFC 8693 access_token is the bearer token, else the session token with N_A") {
  service::ExchangeResult x;
  x.grant = service::GrantView{Grant(), At(1'700'000'000), service::IssuedCredential{}};
  x.trust_policy = "deploy";
  x.issued_token_type = "urn:ietf:params:oauth:token-type:jwt";
  x.grant.credential->type = "jwt";
  x.grant.credential->secrets.emplace_back("token", SecretValue(std::string("eyJ.t")));
  json bearer = ExchangeJson(x);
  CHECK(bearer["access_token"] == "eyJ.t");
  CHECK(bearer["token_type"] == "Bearer");
  CHECK(bearer["expires_in"] == 900);
  CHECK(bearer["session_id"] == "ses_1");
  CHECK_FALSE(bearer.contains("scope"));

  x.grant.credential->type = "aws_sts";
  x.grant.credential->secrets.clear();
  x.grant.credential->secrets.emplace_back("secret_access_key", SecretValue(std::string("sk")));
  x.grant.credential->secrets.emplace_back("session_token", SecretValue(std::string("st")));
  x.scope_text = "s3:GetObject";
  json cloud = ExchangeJson(x);
  CHECK(cloud["access_token"] == "st");
  CHECK(cloud["token_type"] == "N_A");
  CHECK(cloud["credential"]["secret_access_key"] == "sk");
  CHECK(cloud["scope"] == "s3:GetObject");
}

TEST_CASE("Wire: an inactive introspection says nothing else about the token") {
  service::Introspection i;
  i.claims = {{"sub", "x"}};
  CHECK(IntrospectionJson(i) == json{{"active", false}});
  i.active = true;
  i.client_id = "agent_1";
  i.username = "alice";
  json active = IntrospectionJson(i);
  CHECK(active["active"] == true);
  CHECK(active["sub"] == "x");
  CHECK(active["client_id"] == "agent_1");
  CHECK(active["token_type"] == "Bearer");
}

}  // namespace
}  // namespace jitbroker::http::wire
