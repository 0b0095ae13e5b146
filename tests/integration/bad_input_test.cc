// Bad input: every case gets its documented status and problem code, changes
// no state (no audit record, no grant), and leaves the daemon serving.
#include <doctest/doctest.h>

#include "tests/support/broker_process.h"

namespace jitbroker::testing {
namespace {

size_t AuditCount(BrokerProcess& b) {
  auto r = b.Get("/v1/audit?limit=10000", b.admin_key);
  REQUIRE(r.status == 200);
  return r.json["records"].size();
}

TEST_CASE("Broker: bad input is refused precisely and changes nothing") {
  BrokerOptions o;
  o.max_body_bytes = 4096;
  auto b = BrokerProcess::Start(o);
  nlohmann::json scope = {{"resources", {"jwt://mcp.internal"}}, {"max_tier", "pr"}};
  auto [sid, token] = b->OpenSession(b->engineer_key, scope);
  auto [sid2, token2] = b->OpenSession(b->other_engineer_key, scope);
  const std::string grants = "/v1/sessions/" + sid + "/grants";
  const std::string good =
      R"({"tool":"mcp.search","operation":"read","resource":"jwt://mcp.internal","issuer":"internal"})";

  struct Case {
    const char* name;
    std::string method, path, bearer, body, content_type;
    int status;
    const char* code;
  };
  const std::vector<Case> cases = {
      {"malformed JSON", "POST", grants, token, R"({"tool": )", "application/json", 400,
       "invalid_json"},
      {"not an object", "POST", grants, token, R"([1,2])", "application/json", 400, "invalid_type"},
      {"wrong type", "POST", grants, token,
       R"({"tool":1,"operation":"read","resource":"jwt://mcp.internal","issuer":"internal"})",
       "application/json", 400, "invalid_type"},
      {"unknown field", "POST", grants, token,
       R"({"tool":"t","operation":"read","resource":"jwt://mcp.internal","issuer":"internal","admin":true})",
       "application/json", 400, "unknown_field"},
      {"missing field", "POST", grants, token,
       R"({"tool":"t","operation":"read","issuer":"internal"})", "application/json", 400,
       "missing_field"},
      {"duplicate key", "POST", grants, token,
       R"({"tool":"t","tool":"u","operation":"read","resource":"jwt://mcp.internal","issuer":"internal"})",
       "application/json", 400, "duplicate_key"},
      {"invalid UTF-8", "POST", grants, token,
       "{\"tool\":\"t\xff\",\"operation\":\"read\",\"resource\":\"jwt://"
       "mcp.internal\",\"issuer\":\"internal\"}",
       "application/json", 400, "invalid_utf8"},
      {"ttl out of range", "POST", grants, token,
       R"({"tool":"t","operation":"read","resource":"jwt://mcp.internal","issuer":"internal","ttl_seconds":0})",
       "application/json", 400, "invalid_value"},
      {"unknown issuer", "POST", grants, token,
       R"({"tool":"t","operation":"read","resource":"jwt://mcp.internal","issuer":"nope"})",
       "application/json", 400, "unknown_issuer"},
      {"issuer-specific scope rejected", "POST", grants, token,
       R"({"tool":"t","operation":"read","resource":"jwt://mcp.internal","issuer":"internal","scope":{"audience":"other"}})",
       "application/json", 400, "invalid_scope"},
      {"wrong content type", "POST", grants, token, good, "text/plain", 415,
       "unsupported_media_type"},
      {"oversized body", "POST", grants, token, std::string(8192, ' ') + good, "application/json",
       413, "payload_too_large"},
      {"missing auth", "POST", grants, "", good, "application/json", 401, "missing_credentials"},
      {"wrong API key", "POST", "/v1/sessions", "jbk_not_a_key", "{}", "application/json", 401,
       "invalid_credentials"},
      {"forged session token", "POST", grants, "jbs_" + sid.substr(4) + "_forged", good,
       "application/json", 401, "invalid_credentials"},
      {"another session's token", "POST", grants, token2, good, "application/json", 403,
       "session_mismatch"},
      {"principal key on the agent path", "POST", grants, b->engineer_key, good, "application/json",
       403, "session_token_required"},
      {"session token opening sessions", "POST", "/v1/sessions", token, "{}", "application/json",
       403, "principal_required"},
      {"unknown session", "POST", "/v1/sessions/ses_nope/grants", token, good, "application/json",
       403, "session_mismatch"},
      {"unknown grant", "GET", "/v1/grants/grt_nope", token, "", "", 404, "grant_not_found"},
      {"no such route", "GET", "/v1/nothing", token, "", "", 404, "no_route"},
      {"bad query", "GET", "/v1/sessions?limit=abc", b->engineer_key, "", "", 400, "invalid_query"},
      {"unknown session state", "GET", "/v1/sessions?state=revived", b->engineer_key, "", "", 400,
       "invalid_query"},
      {"audit needs admin", "GET", "/v1/audit", b->engineer_key, "", "", 403, "forbidden"},
      {"session with bad scope", "POST", "/v1/sessions", b->engineer_key,
       R"({"agent":{"id":"a"},"task":{"id":"t","scope":{"resources":["jwt://mcp.internal"],"max_tier":"god"}}})",
       "application/json", 400, nullptr},
      {"session scope beyond principal", "POST", "/v1/sessions", b->engineer_key,
       R"({"agent":{"id":"a"},"task":{"id":"t","scope":{"resources":["github://evil/x"],"max_tier":"read"}}})",
       "application/json", 403, "scope_exceeds_principal"},
      {"agent id with spaces", "POST", "/v1/sessions", b->engineer_key,
       R"({"agent":{"id":"a b"},"task":{"id":"t","scope":{"resources":["jwt://mcp.internal"],"max_tier":"read"}}})",
       "application/json", 400, "invalid_value"},
  };
  const size_t before = AuditCount(*b);
  for (const auto& c : cases) {
    CAPTURE(c.name);
    auto r = b->Request(c.method, c.path, c.bearer, c.body, c.content_type);
    INFO(r.body);
    CHECK(r.status == c.status);
    CHECK(r.content_type.rfind("application/problem+json", 0) == 0);
    CHECK(r.json["status"] == c.status);
    if (c.code != nullptr) {
      CHECK(r.json["code"] == c.code);
    }
    CHECK(r.json["title"].is_string());
    CHECK(r.json["request_id"] == r.request_id);
    // No secret leaks into errors.
    CHECK(r.body.find(token) == std::string::npos);
    CHECK(r.body.find(b->engineer_key) == std::string::npos);
  }
  CHECK(AuditCount(*b) == before);
  auto s = b->Get("/v1/sessions/" + sid, token);
  CHECK(s.json["grants"].empty());
  CHECK(b->Get("/healthz").status == 200);
  // The good request still works afterwards.
  CHECK(b->Request("POST", grants, token, good).status == 201);
}

}  // namespace
}  // namespace jitbroker::testing
