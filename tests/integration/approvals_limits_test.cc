// Issue #10 finding 4 against the real daemon: a grant request over the
// pending-approval bound or the grant rate is an RFC 9457 problem, 429 with
// Retry-After and a stable code; the bound's refusal is also audited.
#include <fstream>
#include <string>

#include <doctest/doctest.h>
#include <httplib.h>
#include <nlohmann/json.hpp>

#include "tests/support/broker_process.h"

namespace jitbroker::testing {
namespace {

const nlohmann::json kScope = {{"resources", {"jwt://api.internal"}}, {"max_tier", "merge_deploy"}};
const nlohmann::json kMerge = {{"tool", "github.merge_pull_request"},
                               {"operation", "merge"},
                               {"resource", "jwt://api.internal"},
                               {"issuer", "internal"},
                               {"parameters", {{"pull", 1}}}};
const nlohmann::json kRead = {{"tool", "mcp.search"},
                              {"operation", "read"},
                              {"resource", "jwt://api.internal"},
                              {"issuer", "internal"}};

// POST with the raw response (BrokerProcess::Post does not keep headers).
httplib::Result PostGrant(BrokerProcess& b, const std::string& sid, const std::string& token,
                          const nlohmann::json& body) {
  httplib::Client client("127.0.0.1", std::stoi(b.url().substr(b.url().rfind(':') + 1)));
  client.set_connection_timeout(5);
  client.set_read_timeout(30);
  return client.Post("/v1/sessions/" + sid + "/grants",
                     httplib::Headers{{"Authorization", "Bearer " + token}}, body.dump(),
                     "application/json");
}

TEST_CASE("Limits (#10 F4): 429 with Retry-After over the pending bound and the grant rate") {
  BrokerOptions o;
  o.approvals = "{max_pending_per_session: 1}";
  auto b = BrokerProcess::Start(o);
  {
    std::ofstream(b->config_path(), std::ios::app)
        << "limits:\n  grants_per_session: {rate_per_second: 0.01, burst: 3}\n";
  }
  b->Restart();
  auto [sid, token] = b->OpenSession(b->maintainer_key, kScope);

  auto first = PostGrant(*b, sid, token, kMerge);
  REQUIRE(first);
  CHECK(first->status == 202);

  auto bounded = PostGrant(*b, sid, token, kMerge);
  REQUIRE(bounded);
  INFO(bounded->body);
  CHECK(bounded->status == 429);
  CHECK(bounded->get_header_value("Content-Type").starts_with("application/problem+json"));
  const int pending_wait = std::stoi(bounded->get_header_value("Retry-After"));
  CHECK(pending_wait >= 1);
  CHECK(pending_wait <= 301);  // the approval lapses within the default 300 s
  auto problem = nlohmann::json::parse(bounded->body);
  CHECK(problem["code"] == "too_many_pending_approvals");
  CHECK(problem["status"] == 429);

  auto read = PostGrant(*b, sid, token, kRead);  // the third request of the burst
  REQUIRE(read);
  CHECK(read->status == 201);

  auto limited = PostGrant(*b, sid, token, kRead);
  REQUIRE(limited);
  INFO(limited->body);
  CHECK(limited->status == 429);
  CHECK(nlohmann::json::parse(limited->body)["code"] == "rate_limited");
  const int rate_wait = std::stoi(limited->get_header_value("Retry-After"));
  CHECK(rate_wait >= 90);  // one request per 100 s
  CHECK(rate_wait <= 100);

  // The bound's refusal is an audited denial; the rate limit's is not.
  auto audit = b->Get("/v1/audit?session_id=" + sid, b->admin_key);
  REQUIRE(audit.status == 200);
  int refusals = 0;
  for (const auto& rec : audit.json["records"]) {
    if (rec.contains("policy_decision") &&
        rec["policy_decision"].value("code", "") == "too_many_pending_approvals") {
      ++refusals;
      CHECK(rec["outcome"] == "denied");
    }
  }
  CHECK(refusals == 1);
}

}  // namespace
}  // namespace jitbroker::testing
