// End-to-end: sessions and grants against the real daemon.
#include <doctest/doctest.h>

#include "tests/integration/jwt_interop.h"
#include "tests/support/broker_process.h"

namespace jitbroker::testing {
namespace {

nlohmann::json EngineerScope() {
  return {{"resources", {"github://acme/payment-service", "jwt://mcp.internal"}},
          {"branches", {"fix/*"}},
          {"max_tier", "pr"},
          {"issuers", {"internal"}}};
}

nlohmann::json ReadGrant() {
  return {{"tool", "mcp.search"},
          {"operation", "read"},
          {"resource", "jwt://mcp.internal"},
          {"issuer", "internal"},
          {"scope", {{"audience", "mcp.internal"}}},
          {"ttl_seconds", 300}};
}

std::string GrantsPath(const std::string& sid) { return "/v1/sessions/" + sid + "/grants"; }

TEST_CASE("Broker: health, readiness, metrics and JWKS are served") {
  auto b = BrokerProcess::Start();
  auto h = b->Get("/healthz");
  CHECK(h.status == 200);
  CHECK(h.json["status"] == "ok");
  CHECK(!h.request_id.empty());
  auto r = b->Get("/readyz");
  CHECK(r.status == 200);
  CHECK(r.json["checks"]["store"] == "ok");
  auto j = b->Get("/.well-known/jwks.json");
  REQUIRE(j.status == 200);
  REQUIRE(j.json["keys"].size() == 1);
  CHECK(j.json["keys"][0]["kty"] == "EC");
  CHECK(j.json["keys"][0]["crv"] == "P-256");
  CHECK_FALSE(j.json["keys"][0].contains("d"));
  auto m = b->Get("/metrics");
  CHECK(m.status == 200);
  CHECK(m.body.find("jitbroker_http_requests_total") != std::string::npos);
  CHECK(m.body.find("jitbroker_http_request_duration_seconds_bucket") != std::string::npos);
}

TEST_CASE("Broker: an allowed read grant returns a JWT that verifies independently") {
  for (std::string alg : {"ES256", "Ed25519"}) {
    CAPTURE(alg);
    BrokerOptions o;
    o.jwt_algorithm = alg;
    auto b = BrokerProcess::Start(o);
    auto [sid, token] = b->OpenSession(b->engineer_key, EngineerScope());
    CHECK(sid.rfind("ses_", 0) == 0);
    CHECK(token.rfind("jbs_", 0) == 0);

    auto g = b->Post(GrantsPath(sid), token, ReadGrant());
    INFO(g.body);
    REQUIRE(g.status == 201);
    CHECK(g.json["state"] == "active");
    CHECK(g.json["decision"]["result"] == "allow");
    CHECK(g.json["decision"]["tier"] == "read");
    CHECK(g.json["decision"]["policy_version"] == "test.1");
    CHECK(g.json["revocability"] == "revocable");
    const std::string jwt = g.json["credential"]["token"];
    const std::string grant_id = g.json["grant_id"];

    JwtParts p = SplitJwt(jwt);
    CHECK(p.header["alg"] == alg);
    CHECK(p.payload["jti"] == grant_id);
    CHECK(p.payload["sub"] == "agent_test");
    CHECK(p.payload["act"]["sub"] == "eng_1");
    CHECK(p.payload["session_id"] == sid);
    CHECK(p.payload["task_id"] == "task_test");
    CHECK(p.payload["tier"] == "read");
    CHECK(p.payload["scope"] == "read");
    CHECK(p.payload["aud"] == "mcp.internal");
    CHECK(p.payload["exp"].get<int64_t>() - p.payload["iat"].get<int64_t>() == 300);

    auto jwks = b->Get("/.well-known/jwks.json");
    nlohmann::json key;
    for (const auto& k : jwks.json["keys"]) {
      if (k["kid"] == p.header["kid"]) key = k;
    }
    REQUIRE(key.is_object());
    CHECK(OpensslVerifiesJwt(jwt, key, b->dir() + "/verify"));
    // A tampered token must not verify.
    std::string tampered = jwt;
    tampered[tampered.find('.') + 5] ^= 1;
    CHECK_FALSE(OpensslVerifiesJwt(tampered, key, b->dir() + "/verify2"));

    // The session view lists the grant without its secret.
    auto s = b->Get("/v1/sessions/" + sid, token);
    REQUIRE(s.status == 200);
    CHECK(s.body.find(jwt) == std::string::npos);
    REQUIRE(s.json["grants"].size() == 1);
    CHECK(s.json["grants"][0]["grant_id"] == grant_id);
    CHECK(s.json["grants"][0]["credential_sha256"].get<std::string>().size() == 64);
    CHECK(s.json["scope_usage"]["used"]["resources"][0] == "jwt://mcp.internal");
    CHECK(s.json["scope_usage"]["granted"]["max_tier"] == "pr");
  }
}

TEST_CASE("Broker: requests outside the intersection are denied with the full decision") {
  auto b = BrokerProcess::Start();
  auto [sid, token] = b->OpenSession(b->engineer_key, EngineerScope());
  struct Case {
    const char* name;
    nlohmann::json body;
    const char* code;
    const char* tier;
    const char* rule;
  } cases[] = {
      {"resource outside task scope",
       {{"tool", "mcp.search"},
        {"operation", "read"},
        {"resource", "jwt://api.internal"},
        {"issuer", "internal"}},
       "out_of_scope",
       "read",
       "task.scope.resources"},
      {"blocked merge (tier above task max_tier)",
       {{"tool", "github.merge_pull_request"},
        {"operation", "merge"},
        {"resource", "jwt://mcp.internal"},
        {"issuer", "internal"}},
       "out_of_scope",
       "merge_deploy",
       "task.scope.max_tier"},
      {"destructive tier is denied",
       {{"tool", "shell.exec"},
        {"operation", "exec"},
        {"resource", "jwt://mcp.internal"},
        {"issuer", "internal"},
        {"parameters", {{"command", "rm -rf /"}}}},
       "tier_denied",
       "destructive",
       "tiers.destructive"},
      {"branch outside scope",
       {{"tool", "mcp.write"},
        {"operation", "write"},
        {"resource", "jwt://mcp.internal"},
        {"issuer", "internal"},
        {"parameters", {{"branch", "main"}}}},
       "branch_not_in_scope",
       "write",
       "task.scope.branches"},
  };
  for (const auto& c : cases) {
    CAPTURE(c.name);
    auto r = b->Post(GrantsPath(sid), token, c.body);
    INFO(r.body);
    CHECK(r.status == 403);
    CHECK(r.content_type.rfind("application/problem+json", 0) == 0);
    CHECK(r.json["code"] == "grant_denied");
    CHECK(r.json["decision"]["result"] == "deny");
    CHECK(r.json["decision"]["code"] == c.code);
    CHECK(r.json["decision"]["tier"] == c.tier);
    CHECK(r.json["decision"]["matched_rule"] == c.rule);
    CHECK(r.json["decision"]["policy_version"] == "test.1");
    CHECK_FALSE(r.json["decision"]["reason"].get<std::string>().empty());
    CHECK(r.body.find("credential\"") == std::string::npos);
  }
  // The principal's ceiling: an engineer cannot even open a merge_deploy task.
  nlohmann::json scope = EngineerScope();
  scope["max_tier"] = "merge_deploy";
  auto r = b->Post("/v1/sessions", b->engineer_key,
                   {{"agent", {{"id", "a"}}}, {"task", {{"id", "t"}, {"scope", scope}}}});
  CHECK(r.status == 403);
  CHECK(r.json["code"] == "scope_exceeds_principal");
}

TEST_CASE("Broker: approval tiers return 202 with a stored request digest") {
  auto b = BrokerProcess::Start();
  nlohmann::json scope = {{"resources", {"jwt://api.internal", "github://acme/payment-service"}},
                          {"max_tier", "merge_deploy"}};
  auto [sid, token] = b->OpenSession(b->maintainer_key, scope);
  auto r = b->Post(GrantsPath(sid), token,
                   {{"tool", "github.merge_pull_request"},
                    {"operation", "merge"},
                    {"resource", "jwt://api.internal"},
                    {"issuer", "internal"},
                    {"parameters", {{"pull", 842}}}});
  INFO(r.body);
  REQUIRE(r.status == 202);
  CHECK(r.json["state"] == "pending");
  CHECK(r.json["decision"]["result"] == "pending");
  CHECK(r.json["decision"]["tier"] == "merge_deploy");
  CHECK(r.json["approval"]["request_digest"].get<std::string>().size() == 64);
  CHECK(r.json["approval"]["id"].get<std::string>().rfind("apr_", 0) == 0);
  CHECK_FALSE(r.json.contains("credential"));
  auto g = b->Get("/v1/grants/" + r.json["grant_id"].get<std::string>(), token);
  CHECK(g.status == 200);
  CHECK(g.json["state"] == "pending");
  CHECK(g.json["approval"]["request_digest"] == r.json["approval"]["request_digest"]);
}

TEST_CASE("Broker: complete revokes grants and introspection turns inactive") {
  auto b = BrokerProcess::Start();
  auto [sid, token] = b->OpenSession(b->engineer_key, EngineerScope());
  auto g = b->Post(GrantsPath(sid), token, ReadGrant());
  REQUIRE(g.status == 201);
  const std::string jwt = g.json["credential"]["token"];
  auto intro = b->Request("POST", "/v1/introspect", b->admin_key, "token=" + jwt,
                          "application/x-www-form-urlencoded");
  REQUIRE(intro.status == 200);
  CHECK(intro.json["active"] == true);
  CHECK(intro.json["jti"] == g.json["grant_id"]);
  // Engineers may not introspect.
  CHECK(b->Request("POST", "/v1/introspect", b->engineer_key, "token=" + jwt,
                   "application/x-www-form-urlencoded")
            .status == 403);

  auto hb = b->Post("/v1/sessions/" + sid + "/heartbeat", token, {{"progress", "tests pass"}});
  CHECK(hb.status == 200);
  CHECK(hb.json["last_progress"] == "tests pass");

  auto done = b->Post("/v1/sessions/" + sid + "/complete", token, nlohmann::json::object());
  INFO(done.body);
  REQUIRE(done.status == 200);
  CHECK(done.json["state"] == "completed");
  REQUIRE(done.json["revocations"].size() == 1);
  CHECK(done.json["revocations"][0]["outcome"] == "revoked");

  intro = b->Request("POST", "/v1/introspect", b->admin_key, "token=" + jwt,
                     "application/x-www-form-urlencoded");
  CHECK(intro.json == nlohmann::json{{"active", false}});
  // A completed session rejects every further call.
  auto again = b->Post(GrantsPath(sid), token, ReadGrant());
  CHECK(again.status == 409);
  CHECK(again.json["code"] == "session_completed");
  CHECK(b->Post("/v1/sessions/" + sid + "/heartbeat", token, nlohmann::json::object()).status ==
        409);
}

TEST_CASE("Broker: admin and owner revoke sessions; others cannot") {
  auto b = BrokerProcess::Start();
  auto [sid, token] = b->OpenSession(b->engineer_key, EngineerScope());
  REQUIRE(b->Post(GrantsPath(sid), token, ReadGrant()).status == 201);
  // Another engineer does not even see it.
  auto other = b->Post("/v1/sessions/" + sid + "/revoke", b->other_engineer_key, {{"reason", "x"}});
  CHECK(other.status == 404);
  // The agent cannot revoke (only complete).
  CHECK(b->Post("/v1/sessions/" + sid + "/revoke", token, {{"reason", "x"}}).status == 403);
  // A reason is required.
  auto no_reason =
      b->Post("/v1/sessions/" + sid + "/revoke", b->admin_key, nlohmann::json::object());
  CHECK(no_reason.status == 400);
  CHECK(no_reason.json["code"] == "missing_field");
  auto r = b->Post("/v1/sessions/" + sid + "/revoke", b->admin_key, {{"reason", "suspicious"}});
  INFO(r.body);
  REQUIRE(r.status == 200);
  CHECK(r.json["state"] == "revoked");
  CHECK(r.json["revocations"][0]["outcome"] == "revoked");
  auto s = b->Get("/v1/sessions/" + sid, b->engineer_key);
  CHECK(s.json["state"] == "revoked");
  CHECK(s.json["grants"][0]["state"] == "revoked");
  CHECK(s.json["end_reason"].get<std::string>().find("suspicious") != std::string::npos);
}

TEST_CASE("Broker: revoking one grant with DELETE") {
  auto b = BrokerProcess::Start();
  auto [sid, token] = b->OpenSession(b->engineer_key, EngineerScope());
  auto g = b->Post(GrantsPath(sid), token, ReadGrant());
  REQUIRE(g.status == 201);
  const std::string gid = g.json["grant_id"];
  auto d = b->Request("DELETE", "/v1/grants/" + gid, token);
  INFO(d.body);
  CHECK(d.status == 200);
  CHECK(d.json["outcome"] == "revoked");
  auto again = b->Request("DELETE", "/v1/grants/" + gid, token);
  CHECK(again.status == 409);
  CHECK(again.json["code"] == "grant_not_live");
  auto intro = b->Request("POST", "/v1/introspect", b->admin_key,
                          "token=" + g.json["credential"]["token"].get<std::string>(),
                          "application/x-www-form-urlencoded");
  CHECK(intro.json["active"] == false);
}

TEST_CASE("Broker: sessions list is scoped to the principal") {
  auto b = BrokerProcess::Start();
  b->OpenSession(b->engineer_key, EngineerScope());
  b->OpenSession(b->other_engineer_key, EngineerScope());
  auto mine = b->Get("/v1/sessions", b->engineer_key);
  REQUIRE(mine.status == 200);
  CHECK(mine.json["sessions"].size() == 1);
  auto all = b->Get("/v1/sessions", b->admin_key);
  CHECK(all.json["sessions"].size() == 2);
  CHECK(b->Get("/v1/sessions?principal=eng_2", b->engineer_key).status == 403);
}

TEST_CASE("Broker: an expired session rejects grants and revokes what it had") {
  auto b = BrokerProcess::Start();
  auto [sid, token] = b->OpenSession(b->engineer_key, EngineerScope(), /*ttl_seconds=*/2);
  auto g = b->Post(GrantsPath(sid), token, ReadGrant());
  REQUIRE(g.status == 201);
  CHECK(g.json["ttl_seconds"].get<int64_t>() <= 2);  // clamped to the session end
  std::this_thread::sleep_for(std::chrono::milliseconds(2100));
  auto r = b->Post(GrantsPath(sid), token, ReadGrant());
  CHECK(r.status == 409);
  CHECK(r.json["code"] == "session_expired");
  auto s = b->Get("/v1/sessions/" + sid, b->engineer_key);
  CHECK(s.json["state"] == "expired");
}

TEST_CASE("Broker: state survives a restart") {
  auto b = BrokerProcess::Start();
  auto [sid, token] = b->OpenSession(b->engineer_key, EngineerScope());
  auto g = b->Post(GrantsPath(sid), token, ReadGrant());
  REQUIRE(g.status == 201);
  auto jwks_before = b->Get("/.well-known/jwks.json").json;
  b->Restart();
  CHECK(b->Get("/.well-known/jwks.json").json == jwks_before);  // the key persisted
  auto s = b->Get("/v1/sessions/" + sid, token);
  REQUIRE(s.status == 200);
  CHECK(s.json["grants"].size() == 1);
  CHECK(b->Post(GrantsPath(sid), token, ReadGrant()).status == 201);
}

}  // namespace
}  // namespace jitbroker::testing

namespace jitbroker::testing {
namespace {

// Issue #10, finding 1, over HTTP: on main this request got 201 auto_allow and
// a JWT with "scope": "admin delete:all deploy:prod" in a read-only session.
// Finding 5: a bidi override in a parameter shown to approvers.
TEST_CASE("Broker: an agent cannot choose its JWT's scope; invisible characters are refused") {
  auto b = BrokerProcess::Start();
  auto [sid, token] = b->OpenSession(
      b->engineer_key,
      {{"resources", {"jwt://mcp.internal"}}, {"max_tier", "read"}, {"issuers", {"internal"}}});
  nlohmann::json attack = {{"tool", "mcp.search"},
                           {"operation", "read"},
                           {"resource", "jwt://mcp.internal"},
                           {"issuer", "internal"},
                           {"scope", {{"scopes", {"admin", "delete:all", "deploy:prod"}}}}};
  auto r = b->Post(GrantsPath(sid), token, attack);
  INFO(r.body);
  CHECK(r.status == 400);
  CHECK(r.content_type.find("application/problem+json") != std::string::npos);
  CHECK(r.json["code"] == "unknown_scope");
  CHECK(r.body.find("eyJ") == std::string::npos);
  // A declared scope above the session's tier is a policy denial.
  attack["scope"] = {{"scopes", {"deploy"}}};
  r = b->Post(GrantsPath(sid), token, attack);
  CHECK(r.status == 403);
  CHECK(r.json["decision"]["code"] == "out_of_scope");

  nlohmann::json bidi = {{"tool", "shell.exec"},
                         {"operation", "exec"},
                         {"resource", "jwt://mcp.internal"},
                         {"issuer", "internal"},
                         {"parameters", {{"command", "ls \u202e/ fr- mr"}}}};
  r = b->Post(GrantsPath(sid), token, bidi);
  CHECK(r.status == 400);
  CHECK(r.json["code"] == "invalid_value");
  CHECK(r.json["detail"].get<std::string>().find("U+202E") != std::string::npos);
  auto s = b->Get("/v1/sessions/" + sid, token);
  REQUIRE(s.status == 200);
  CHECK(s.json["grants"].size() == 1);  // only the audited denial
}

}  // namespace
}  // namespace jitbroker::testing

namespace jitbroker::testing {
namespace {

TEST_CASE("Broker: a session TTL above the maximum is lowered, and the answer says so") {
  auto b = BrokerProcess::Start();
  nlohmann::json body = {{"agent", {{"id", "agent_ttl"}}},
                         {"task", {{"id", "task_ttl"}, {"scope", EngineerScope()}}},
                         {"ttl_seconds", 999999}};
  auto r = b->Post("/v1/sessions", b->engineer_key, body);
  REQUIRE(r.status == 201);
  CHECK(r.json["ttl_seconds"] == 28800);  // sessions.max_ttl_seconds of the test config
  CHECK(r.json["requested_ttl_seconds"] == 999999);
  body["ttl_seconds"] = 600;
  r = b->Post("/v1/sessions", b->engineer_key, body);
  REQUIRE(r.status == 201);
  CHECK(r.json["ttl_seconds"] == 600);
  CHECK_FALSE(r.json.contains("requested_ttl_seconds"));
}

}  // namespace
}  // namespace jitbroker::testing

namespace jitbroker::testing {
namespace {

TEST_CASE("Broker: POSTs whose body is optional work with plain curl -X POST (no body)") {
  auto b = BrokerProcess::Start();
  auto [sid, token] = b->OpenSession(b->engineer_key, EngineerScope());
  const std::string base = b->url();
  auto run = [&](const std::string& auth, const std::string& path) {
    return RunCommand("curl -s -o /dev/null -w '%{http_code}' -X POST -H 'Authorization: Bearer " +
                      auth + "' " + base + path);
  };
  // Without a credential: 401 first, whatever the body.
  CHECK(run("nope", "/v1/sessions/" + sid + "/heartbeat").second == "401");
  CHECK(run(token, "/v1/sessions/" + sid + "/heartbeat").second == "200");
  CHECK(run(b->admin_key, "/v1/admin/reload").second == "200");
  CHECK(run(token, "/v1/sessions/" + sid + "/complete").second == "200");
}

}  // namespace
}  // namespace jitbroker::testing
