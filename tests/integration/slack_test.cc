// Approvals in Slack end to end (docs/operations.md "Approvals in Slack"):
// the real daemon posts to the fake Slack (tests/fakes/fake_slack.h), which
// checks the message shapes and signs button callbacks as Slack does.
#include <chrono>
#include <string>
#include <thread>

#include <doctest/doctest.h>
#include <httplib.h>

#include "tests/fakes/fake_slack.h"
#include "tests/support/broker_process.h"
#include "tests/support/temp_dir.h"

namespace jitbroker::testing {
namespace {

const nlohmann::json kSlkScope = {{"resources", {"jwt://api.internal"}},
                                  {"max_tier", "merge_deploy"}};
const nlohmann::json kSlkMerge = {{"tool", "github.merge_pull_request"}, {"operation", "merge"},
                                  {"resource", "jwt://api.internal"},    {"issuer", "internal"},
                                  {"parameters", {{"pull", 842}}},       {"ttl_seconds", 120}};
constexpr const char* kSlkChannel = "C0APPROVALS";

struct SlkEnv {
  TempDir dir{"jitbroker-slack"};
  std::string bot_token = "xoxb-1-" + std::to_string(std::random_device{}()) + "botSECRET";
  std::string signing_secret = "sig" + std::to_string(std::random_device{}()) + "SIGNSECRET";
  std::unique_ptr<FakeSlack> slack;
  std::unique_ptr<BrokerProcess> b;
};

std::unique_ptr<SlkEnv> SlkStart(bool interactive = true, bool match_email = false) {
  auto env = std::make_unique<SlkEnv>();
  env->dir.Write("bot_token", env->bot_token + "\n");
  env->dir.Write("signing_secret", env->signing_secret + "\n");
  env->slack = FakeSlack::Start(
      {.bot_token = env->bot_token,
       .signing_secret = env->signing_secret,
       .emails = {{"U0MATCH", "Maint2@Example.com"}, {"U0NOBODY", "nobody@example.com"}}});
  REQUIRE(env->slack);
  BrokerOptions o;
  o.approvals = "{slack: {api_url: \"" + env->slack->api_url() +
                "\", bot_token: \"file:" + env->dir.File("bot_token") +
                "\", channel: " + kSlkChannel +
                (interactive ? ", signing_secret: \"file:" + env->dir.File("signing_secret") + "\""
                             : std::string(", mode: notify_only")) +
                ", console_url: \"https://broker.example.com\"" +
                ", match_email: " + (match_email ? "true" : "false") +
                ", users: {U0MAINT1: maint_1, U0MAINT2: maint_2, U0ENG1: eng_1}}}";
  env->b = BrokerProcess::Start(o);
  return env;
}

struct SlkPending {
  std::string sid, token, grant_id, approval_id, digest;
};

SlkPending SlkRequestMerge(BrokerProcess& b, const nlohmann::json& request = kSlkMerge) {
  auto [sid, token] = b.OpenSession(b.maintainer_key, kSlkScope);
  auto r = b.Post("/v1/sessions/" + sid + "/grants", token, request);
  INFO(r.body);
  REQUIRE(r.status == 202);
  return {sid, token, r.json["grant_id"], r.json["approval"]["id"],
          r.json["approval"]["request_digest"]};
}

HttpResult SlkPost(BrokerProcess& b, const SlackCallback& cb, bool timestamp = true,
                   bool signature = true) {
  httplib::Client client("127.0.0.1", b.port());
  client.set_read_timeout(10);
  httplib::Headers headers;
  if (timestamp) headers.emplace("X-Slack-Request-Timestamp", cb.timestamp);
  if (signature) headers.emplace("X-Slack-Signature", cb.signature);
  auto r =
      client.Post("/v1/slack/interactions", headers, cb.body, "application/x-www-form-urlencoded");
  HttpResult out;
  if (!r) return out;
  out.status = r->status;
  out.body = r->body;
  out.content_type = r->get_header_value("Content-Type");
  out.json = nlohmann::json::parse(out.body, nullptr, false);
  if (out.json.is_discarded()) out.json = nullptr;
  return out;
}

std::string SlkState(BrokerProcess& b, const SlkPending& p) {
  auto r = b.Get("/v1/approvals/" + p.approval_id, b.admin_key);
  REQUIRE(r.status == 200);
  return r.json["state"];
}

bool SlkHasActions(const SlackMessage& m) {
  for (const auto& blk : m.blocks) {
    if (blk["type"] == "actions") return true;
  }
  return false;
}

TEST_CASE("Slack: a pending approval posts a message of the right shape, without secrets") {
  auto env = SlkStart();
  nlohmann::json request = kSlkMerge;
  request["parameters"]["deploy_token"] = "ghp_SLACKLEAKxxxxxxxxxxxxxxxxxxxxxxxxxxxx";
  SlkPending p = SlkRequestMerge(*env->b, request);
  auto m = env->slack->WaitForMessage(p.approval_id);
  REQUIRE(m);
  CHECK(m->channel == kSlkChannel);
  const std::string dump = m->blocks.dump() + m->text;
  for (const char* want : {"agent_test", "task_test", "maint_1", "github.merge_pull_request",
                           "merge", "jwt://api.internal", "merge_deploy", "842"}) {
    CAPTURE(want);
    CHECK(dump.find(want) != std::string::npos);
  }
  CHECK(dump.find(p.digest) != std::string::npos);
  CHECK(dump.find("https://broker.example.com/ui/approvals/" + p.approval_id) != std::string::npos);
  REQUIRE(SlkHasActions(*m));
  const auto& buttons = m->blocks.back()["elements"];
  CHECK(buttons[0]["action_id"] == "jitbroker_approve");
  CHECK(buttons[1]["action_id"] == "jitbroker_deny");
  CHECK(buttons[1]["style"] == "danger");
  CHECK(buttons[0]["value"] == p.approval_id + ":" + p.digest);
  // No secret: the session token, the bot token, the signing secret.
  const auto calls = env->slack->Calls("chat.postMessage");
  REQUIRE(calls.size() == 1);
  const std::string sent = calls[0].body.dump();
  CHECK(sent.find(p.token) == std::string::npos);
  CHECK(sent.find(env->bot_token) == std::string::npos);
  CHECK(sent.find(env->signing_secret) == std::string::npos);
  CHECK(sent.find("SLACKLEAK") == std::string::npos);  // parameters are redacted
  CHECK(sent.find("deploy_token") != std::string::npos);
  CHECK(env->slack->Violations().empty());
  // Nor does the broker's output hold the Slack secrets.
  env->b->Stop();
  CHECK(env->b->stdout_text().find("botSECRET") == std::string::npos);
  CHECK(env->b->stdout_text().find("SIGNSECRET") == std::string::npos);
}

TEST_CASE("Slack: approve and deny via signed callbacks; the message shows the outcome") {
  auto env = SlkStart();
  BrokerProcess& b = *env->b;

  SUBCASE("approve") {
    SlkPending p = SlkRequestMerge(b);
    auto m = env->slack->WaitForMessage(p.approval_id);
    REQUIRE(m);
    const SlackCallback click = env->slack->Click(*m, "U0MAINT2", "jitbroker_approve");
    auto r = SlkPost(b, click);
    INFO(r.body);
    REQUIRE(r.status == 200);
    CHECK(SlkState(b, p) == "approved");
    auto g = b.Request("GET", "/v1/grants/" + p.grant_id, p.token);
    CHECK(g.json["state"] == "active");
    CHECK(g.json.contains("credential"));
    CHECK(g.json["approval"]["approver"] == "maint_2");
    auto updated = env->slack->WaitForMessage(p.approval_id, 1);
    REQUIRE(updated);
    CHECK_FALSE(SlkHasActions(*updated));
    CHECK(updated->blocks.dump().find("Approved* by maint_2") != std::string::npos);
    CHECK(updated->ts == m->ts);
    // The audit record says the decision came through Slack, by whom.
    auto recs = b.Get("/v1/audit?session_id=" + p.sid, b.admin_key).json["records"];
    bool found = false;
    for (const auto& rec : recs) {
      if (rec["event"] == "approval.decided") {
        found = true;
        CHECK(rec["jit_grant"]["approval"]["via"] == "slack");
        CHECK(rec["jit_grant"]["approval"]["via_user"] == "U0MAINT2");
        CHECK(rec["jit_grant"]["approval"]["approver"] == "maint_2");
        CHECK(rec.dump().find("SIGNSECRET") == std::string::npos);
      }
    }
    CHECK(found);

    // A replay of the same (validly signed, in-window) callback changes nothing.
    auto again = SlkPost(b, click);
    CHECK(again.status == 200);
    CHECK(again.json["response_type"] == "ephemeral");
    CHECK(again.json["text"].get<std::string>().find("approval_not_pending") != std::string::npos);
    CHECK(SlkState(b, p) == "approved");
    std::this_thread::sleep_for(std::chrono::milliseconds(300));
    CHECK(env->slack->Calls("chat.update").size() == 1);
  }
  SUBCASE("deny") {
    SlkPending p = SlkRequestMerge(b);
    auto m = env->slack->WaitForMessage(p.approval_id);
    REQUIRE(m);
    auto r = SlkPost(b, env->slack->Click(*m, "U0MAINT2", "jitbroker_deny"));
    REQUIRE(r.status == 200);
    CHECK(SlkState(b, p) == "denied");
    auto g = b.Request("GET", "/v1/grants/" + p.grant_id, p.token);
    CHECK(g.json["state"] == "denied");
    auto updated = env->slack->WaitForMessage(p.approval_id, 1);
    REQUIRE(updated);
    CHECK_FALSE(SlkHasActions(*updated));
    CHECK(updated->blocks.dump().find("Denied* by maint_2") != std::string::npos);
  }
  CHECK(env->slack->Violations().empty());
}

TEST_CASE("Slack: the message follows a decision made elsewhere (API, console, expiry, end)") {
  SUBCASE("decided through the API") {
    auto env = SlkStart();
    BrokerProcess& b = *env->b;
    SlkPending p = SlkRequestMerge(b);
    auto m = env->slack->WaitForMessage(p.approval_id);
    REQUIRE(m);
    auto r = b.Post("/v1/approvals/" + p.approval_id, b.maintainer2_key,
                    {{"decision", "deny"}, {"request_digest", p.digest}, {"comment", "not now"}});
    REQUIRE(r.status == 200);
    auto updated = env->slack->WaitForMessage(p.approval_id, 1);
    REQUIRE(updated);
    CHECK(updated->ts == m->ts);
    CHECK_FALSE(SlkHasActions(*updated));
    CHECK(updated->blocks.dump().find("*Denied* by maint_2: not now") != std::string::npos);
    CHECK(env->slack->Violations().empty());
  }
  SUBCASE("decided before Slack answered the post: the answer applies the decision") {
    auto env = SlkStart();
    BrokerProcess& b = *env->b;
    env->slack->DelayPostAnswers(std::chrono::milliseconds(1500));
    SlkPending p = SlkRequestMerge(b);
    auto m = env->slack->WaitForMessage(p.approval_id);  // posted, its ts not yet known
    REQUIRE(m);
    auto r = b.Post("/v1/approvals/" + p.approval_id, b.maintainer2_key,
                    {{"decision", "approve"}, {"request_digest", p.digest}});
    REQUIRE(r.status == 200);
    auto updated = env->slack->WaitForMessage(p.approval_id, 1);
    REQUIRE(updated);
    CHECK(updated->ts == m->ts);
    CHECK_FALSE(SlkHasActions(*updated));
    CHECK(updated->blocks.dump().find("*Approved* by maint_2") != std::string::npos);
    CHECK(env->slack->Violations().empty());
  }
  SUBCASE("its session revoked") {
    auto env = SlkStart();
    BrokerProcess& b = *env->b;
    SlkPending p = SlkRequestMerge(b);
    REQUIRE(env->slack->WaitForMessage(p.approval_id));
    auto r = b.Post("/v1/sessions/" + p.sid + "/revoke", b.admin_key, {{"reason", "stop"}});
    REQUIRE(r.status == 200);
    auto updated = env->slack->WaitForMessage(p.approval_id, 1);
    REQUIRE(updated);
    CHECK_FALSE(SlkHasActions(*updated));
    CHECK(updated->blocks.dump().find("No longer pending") != std::string::npos);
  }
  SUBCASE("decided in Slack: updated once, by the callback") {
    auto env = SlkStart();
    BrokerProcess& b = *env->b;
    SlkPending p = SlkRequestMerge(b);
    auto m = env->slack->WaitForMessage(p.approval_id);
    REQUIRE(m);
    REQUIRE(SlkPost(b, env->slack->Click(*m, "U0MAINT2", "jitbroker_approve")).status == 200);
    REQUIRE(env->slack->WaitForMessage(p.approval_id, 1));
    std::this_thread::sleep_for(std::chrono::milliseconds(300));
    CHECK(env->slack->Calls("chat.update").size() == 1);
  }
}

TEST_CASE("Slack: unsigned, forged, stale and oversized callbacks are refused; nothing changes") {
  auto env = SlkStart();
  BrokerProcess& b = *env->b;
  SlkPending p = SlkRequestMerge(b);
  auto m = env->slack->WaitForMessage(p.approval_id);
  REQUIRE(m);
  const SlackCallback good = env->slack->Click(*m, "U0MAINT2", "jitbroker_approve");

  auto expect = [&](const HttpResult& r, int status, const char* code) {
    INFO(r.body);
    CHECK(r.status == status);
    CHECK(r.content_type == "application/problem+json");
    CHECK(r.json["code"] == code);
  };
  expect(SlkPost(b, env->slack->Click(*m, "U0MAINT2", "jitbroker_approve", std::chrono::seconds(0),
                                      std::string("wrong-secret"))),
         401, "invalid_signature");
  SlackCallback tampered = good;
  tampered.body += "&x=1";
  expect(SlkPost(b, tampered), 401, "invalid_signature");
  expect(SlkPost(
             b, env->slack->Click(*m, "U0MAINT2", "jitbroker_approve", std::chrono::seconds(-400))),
         401, "stale_request");
  expect(
      SlkPost(b, env->slack->Click(*m, "U0MAINT2", "jitbroker_approve", std::chrono::seconds(400))),
      401, "stale_request");
  expect(SlkPost(b, good, false, true), 401, "missing_signature");
  expect(SlkPost(b, good, true, false), 401, "missing_signature");
  SlackCallback big =
      env->slack->SignPayload({{"type", "block_actions"}, {"pad", std::string(70 * 1024, 'x')}});
  auto r = SlkPost(b, big);
  CHECK(r.status == 413);
  // A signed body that is no interaction.
  expect(SlkPost(b, env->slack->SignPayload(nlohmann::json::array())), 400, "invalid_request");

  CHECK(SlkState(b, p) == "pending");
  std::this_thread::sleep_for(std::chrono::milliseconds(200));
  CHECK(env->slack->Calls("chat.update").empty());
  // The good one still works afterwards.
  CHECK(SlkPost(b, good).status == 200);
  CHECK(SlkState(b, p) == "approved");
}

TEST_CASE("Slack: bad signatures count against the per-address authentication limit") {
  auto env = SlkStart();
  BrokerProcess& b = *env->b;
  SlkPending p = SlkRequestMerge(b);
  auto m = env->slack->WaitForMessage(p.approval_id);
  REQUIRE(m);
  int limited = 0;
  for (int i = 0; i < 40 && limited == 0; ++i) {
    auto r = SlkPost(b, env->slack->Click(*m, "U0MAINT2", "jitbroker_approve",
                                          std::chrono::seconds(0), std::string("forged")));
    if (r.status == 429) {
      ++limited;
      CHECK(r.json["code"] == "rate_limited");
    } else {
      CHECK(r.status == 401);
    }
  }
  CHECK(limited == 1);
  // The address is now refused everywhere it authenticates, a good signature
  // included, until its bucket refills.
  auto good = SlkPost(b, env->slack->Click(*m, "U0MAINT2", "jitbroker_approve"));
  CHECK(good.status == 429);
  CHECK(b.Get("/v1/sessions", b.admin_key).status == 429);
  std::this_thread::sleep_for(std::chrono::milliseconds(200));
  CHECK(env->slack->Calls("chat.update").empty());
}

TEST_CASE("Slack: the API's rules apply to clicks (unmapped user, four-eyes, approver role)") {
  auto env = SlkStart();
  BrokerProcess& b = *env->b;
  SlkPending p = SlkRequestMerge(b);
  auto m = env->slack->WaitForMessage(p.approval_id);
  REQUIRE(m);
  auto refused = [&](const char* user, const char* why) {
    auto r = SlkPost(b, env->slack->Click(*m, user, "jitbroker_approve"));
    INFO(r.body);
    CHECK(r.status == 200);
    CHECK(r.json["response_type"] == "ephemeral");
    CHECK(r.json["text"].get<std::string>().find(why) != std::string::npos);
    CHECK(SlkState(b, p) == "pending");
  };
  refused("U0STRANGER", "not mapped");   // no mapping, match_email off
  refused("U0MATCH", "not mapped");      // would match by email, but match_email is off
  refused("U0MAINT1", "four_eyes");      // maint_1 delegated this session
  refused("U0ENG1", "not_an_approver");  // engineers do not approve this tier
  {
    // A signed click on a different request than the one shown.
    SlackMessage forged = *m;
    for (auto& blk : forged.blocks) {
      if (blk["type"] == "actions") {
        for (auto& e : blk["elements"]) e["value"] = p.approval_id + ":" + std::string(64, '0');
      }
    }
    auto r = SlkPost(b, env->slack->Click(forged, "U0MAINT2", "jitbroker_approve"));
    CHECK(r.status == 200);
    CHECK(r.json["text"].get<std::string>().find("digest_mismatch") != std::string::npos);
    CHECK(SlkState(b, p) == "pending");
  }
  std::this_thread::sleep_for(std::chrono::milliseconds(200));
  CHECK(env->slack->Calls("chat.update").empty());
  CHECK(env->slack->Calls("users.info").empty());
  // Slack ignores a callback's answer body: the clicker is told through the
  // interaction's response_url.
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(5);
  while (env->slack->Calls("response_url").size() < 5 &&
         std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  const auto replies = env->slack->Calls("response_url");
  REQUIRE(replies.size() == 5);
  CHECK(replies[2].body["response_type"] == "ephemeral");
  CHECK(replies[2].body["text"].get<std::string>().find("four_eyes") != std::string::npos);
  CHECK(env->slack->Violations().empty());
  auto msg = env->slack->WaitForMessage(p.approval_id);
  REQUIRE(msg);
  CHECK(SlkHasActions(*msg));
}

TEST_CASE("Slack: match_email maps a Slack user by their email (users.info)") {
  auto env = SlkStart(true, true);
  BrokerProcess& b = *env->b;
  SlkPending p = SlkRequestMerge(b);
  auto m = env->slack->WaitForMessage(p.approval_id);
  REQUIRE(m);
  auto no = SlkPost(b, env->slack->Click(*m, "U0NOBODY", "jitbroker_approve"));
  CHECK(no.json["text"].get<std::string>().find("not mapped") != std::string::npos);
  auto r = SlkPost(b, env->slack->Click(*m, "U0MATCH", "jitbroker_approve"));
  INFO(r.body);
  REQUIRE(r.status == 200);
  CHECK(SlkState(b, p) == "approved");
  auto a = b.Get("/v1/approvals/" + p.approval_id, b.admin_key);
  CHECK(a.body.find("maint_2") != std::string::npos);
  const auto lookups = env->slack->Calls("users.info");
  REQUIRE(lookups.size() == 2);
  CHECK(lookups[1].query == "user=U0MATCH");
  CHECK(env->slack->Violations().empty());
}

TEST_CASE("Slack: notify_only posts without buttons and serves no callback route") {
  auto env = SlkStart(false);
  BrokerProcess& b = *env->b;
  SlkPending p = SlkRequestMerge(b);
  auto m = env->slack->WaitForMessage(p.approval_id);
  REQUIRE(m);
  CHECK_FALSE(SlkHasActions(*m));
  CHECK(m->blocks.dump().find("https://broker.example.com/ui/approvals/" + p.approval_id) !=
        std::string::npos);
  SlackCallback cb = env->slack->SignPayload({{"type", "block_actions"}});
  CHECK(SlkPost(b, cb).status == 404);
  CHECK(env->slack->Violations().empty());
}

TEST_CASE("Slack: a rate-limited post is retried, a refused one is not") {
  auto env = SlkStart();
  BrokerProcess& b = *env->b;
  env->slack->FailNext("ratelimited", 1);
  SlkPending p = SlkRequestMerge(b);
  REQUIRE(env->slack->WaitForMessage(p.approval_id, 0, std::chrono::milliseconds(10000)));
  CHECK(env->slack->Calls("chat.postMessage").size() == 2);
  env->slack->FailNext("not_in_channel", 1);
  SlkPending q = SlkRequestMerge(b);
  CHECK_FALSE(env->slack->WaitForMessage(q.approval_id, 0, std::chrono::milliseconds(1500)));
  CHECK(env->slack->Calls("chat.postMessage").size() == 3);
}

}  // namespace
}  // namespace jitbroker::testing
