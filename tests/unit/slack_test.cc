// Unit tests for approvals in Slack (broker/lifecycle/slack.h): the request
// signature against Slack's published example (recomputed with Python's
// hmac/hashlib, an independent implementation), the message shapes, the
// notifier's Slack dialect against the fake Slack, and `approvals.slack`
// config validation.
#include <chrono>
#include <memory>
#include <string>
#include <thread>

#include <doctest/doctest.h>
#include <nlohmann/json.hpp>

#include "broker/config/config.h"
#include "broker/lifecycle/notifier.h"
#include "broker/lifecycle/slack.h"
#include "broker/net/http_client.h"
#include "tests/fakes/fake_slack.h"

namespace jitbroker::lifecycle {
namespace {

// Slack's documented example ("Verifying requests from Slack"); the
// signature was recomputed with
//   python3 -c "import hmac,hashlib; print('v0='+hmac.new(SECRET,
//     ('v0:'+TS+':'+BODY).encode(), hashlib.sha256).hexdigest())"
constexpr std::string_view kSlkSecret = "8f742231b10e8888abcd99yyyzzz85a5";
constexpr std::string_view kSlkTimestamp = "1531420618";
constexpr std::string_view kSlkBody =
    "token=xyzz0WbapA4vBCDEFasx0q6G&team_id=T1DC2JH3J&team_domain=testteamnow&channel_id="
    "G8PSS9T3V&channel_name=foobar&user_id=U2CERLKJA&user_name=roadrunner&command=%2Fwebhook-"
    "collect&text=&response_url=https%3A%2F%2Fhooks.slack.com%2Fcommands%2FT1DC2JH3J%"
    "2F397700885554%2F96rGlfmibIGlgcZRskXaIFfN&trigger_id=398738663015.47445629121."
    "803a0bc887a14d10d2c447fce8b6703c";
constexpr std::string_view kSlkSignature =
    "v0=a2114d57b48eac39b9ad189dd8316235a7b4a8d21a10bd27519666489c69b503";

TimePoint SlkAt(int64_t unix_seconds) { return TimePoint(std::chrono::seconds(unix_seconds)); }

std::string SlkReason(const Status& st) {
  return st ? std::string("ok") : std::string(st.error().Reason());
}

TEST_CASE("Slack signature: the known-answer vector verifies") {
  CHECK(SlkReason(VerifySlackSignature(kSlkSecret, kSlkTimestamp, kSlkSignature, kSlkBody,
                                       SlkAt(1531420618))) == "ok");
  // Anywhere within five minutes either way.
  CHECK(SlkReason(VerifySlackSignature(kSlkSecret, kSlkTimestamp, kSlkSignature, kSlkBody,
                                       SlkAt(1531420618 + 300))) == "ok");
  CHECK(SlkReason(VerifySlackSignature(kSlkSecret, kSlkTimestamp, kSlkSignature, kSlkBody,
                                       SlkAt(1531420618 - 300))) == "ok");
}

TEST_CASE("Slack signature: every negative case is refused with a precise code") {
  const TimePoint now = SlkAt(1531420618);
  std::string tampered(kSlkBody);
  tampered.back() = 'd';
  std::string flipped(kSlkSignature);
  flipped.back() = '2';
  std::string upper(kSlkSignature);
  for (char& c : upper) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  struct Row {
    const char* name;
    std::string secret, ts, sig, body;
    TimePoint now;
    const char* want;
  };
  const std::string s(kSlkSecret), t(kSlkTimestamp), g(kSlkSignature), b(kSlkBody);
  const Row rows[] = {
      {"wrong secret", "8f742231b10e8888abcd99yyyzzz85a6", t, g, b, now, "invalid_signature"},
      {"tampered body", s, t, g, tampered, now, "invalid_signature"},
      {"flipped signature", s, t, flipped, b, now, "invalid_signature"},
      {"no v0= prefix", s, t, g.substr(3), b, now, "invalid_signature"},
      {"v1 scheme", s, t, "v1=" + g.substr(3), b, now, "invalid_signature"},
      {"upper-case hex", s, t, upper, b, now, "invalid_signature"},
      {"truncated", s, t, g.substr(0, 40), b, now, "invalid_signature"},
      {"other timestamp signed", s, "1531420619", g, b, SlkAt(1531420619), "invalid_signature"},
      {"301 s old", s, t, g, b, SlkAt(1531420618 + 301), "stale_request"},
      {"301 s ahead", s, t, g, b, SlkAt(1531420618 - 301), "stale_request"},
      {"timestamp not a number", s, "15314x0618", g, b, now, "stale_request"},
      {"negative timestamp", s, "-1", g, b, now, "stale_request"},
      {"huge timestamp", s, "99999999999999999999", g, b, now, "stale_request"},
      {"no timestamp", s, "", g, b, now, "missing_signature"},
      {"no signature", s, t, "", b, now, "missing_signature"},
  };
  for (const Row& r : rows) {
    CAPTURE(r.name);
    Status st = VerifySlackSignature(r.secret, r.ts, r.sig, r.body, r.now);
    REQUIRE_FALSE(st.has_value());
    CHECK(st.error().code == ErrorCode::kUnauthenticated);
    CHECK(st.error().Reason() == r.want);
  }
}

nlohmann::json SlkPending() {
  return {{"event", "approval.pending"},
          {"approval_id", "apr_abc"},
          {"grant_id", "grt_abc"},
          {"request_digest", std::string(64, 'd')},
          {"expires_at", "2026-12-06T06:00:00Z"},
          {"principal", "maint_1"},
          {"agent", {{"id", "agent_x"}, {"session_id", "ses_1"}, {"task_id", "task_9"}}},
          {"task", {{"id", "task_9"}, {"description", "Merge <the> PR & deploy"}}},
          {"request",
           {{"tool", "github.merge_pull_request"},
            {"operation", "merge"},
            {"resource", "github://acme/api"},
            {"tier", "merge_deploy"},
            {"parameters", {{"pull", 842}}},
            {"justification", nullptr}}},
          {"decision", {{"reason", "tier merge_deploy needs approval"}}}};
}

TEST_CASE("Slack message: interactive shape, escaping and button values") {
  const nlohmann::json m = SlackPendingMessage(SlkPending(), "C0APPROVE", true, "");
  CHECK(m["channel"] == "C0APPROVE");
  REQUIRE(m["text"].is_string());
  CHECK(m["text"].get<std::string>().find("github.merge_pull_request") != std::string::npos);
  const std::string dump = m.dump();
  CHECK(dump.find("Merge &lt;the&gt; PR &amp; deploy") != std::string::npos);
  CHECK(dump.find("<the>") == std::string::npos);
  CHECK(dump.find("/ui/approvals/") == std::string::npos);
  const nlohmann::json& actions = m["blocks"].back();
  REQUIRE(actions["type"] == "actions");
  REQUIRE(actions["elements"].size() == 2);
  CHECK(actions["elements"][0]["action_id"] == "jitbroker_approve");
  CHECK(actions["elements"][1]["action_id"] == "jitbroker_deny");
  CHECK(actions["elements"][1]["style"] == "danger");
  CHECK(actions["elements"][0]["value"] == "apr_abc:" + std::string(64, 'd'));
  CHECK(actions["elements"][0]["text"]["type"] == "plain_text");
}

TEST_CASE("Slack message: notify_only has no buttons and links the console") {
  const nlohmann::json m =
      SlackPendingMessage(SlkPending(), "C0APPROVE", false, "https://broker.example.com");
  for (const auto& b : m["blocks"]) {
    CHECK(b["type"] != "actions");
  }
  CHECK(m.dump().find("<https://broker.example.com/ui/approvals/apr_abc|") != std::string::npos);
}

TEST_CASE("Slack message: a decided message keeps its context and loses its buttons") {
  const nlohmann::json m = SlackPendingMessage(SlkPending(), "C0APPROVE", true, "");
  const nlohmann::json blocks = SlackDecidedBlocks(m["blocks"], "*Approved* by maint_2");
  CHECK(blocks.size() == m["blocks"].size());  // one actions block out, one outcome in
  for (const auto& b : blocks) {
    CHECK(b["type"] != "actions");
  }
  CHECK(blocks.back()["text"]["text"] == "*Approved* by maint_2");
  CHECK(SlackDecidedBlocks(nullptr, "x").size() == 1);
}

TEST_CASE("Slack notifier: ok:false is a failure, ratelimited is retried") {
  auto fake =
      testing::FakeSlack::Start({.bot_token = "xoxb-unit", .signing_secret = "s", .emails = {}});
  REQUIRE(fake);
  WebhookOptions o;
  o.dialect = Dialect::kSlackApi;
  o.url = fake->api_url() + "/chat.postMessage";
  o.authorization = SecretValue("Bearer xoxb-unit");
  o.initial_backoff = std::chrono::milliseconds(1);
  o.max_backoff = std::chrono::milliseconds(5);
  o.max_attempts = 3;
  ApprovalNotifier n(std::move(o), net::MakeCurlHttpClient({}));
  const nlohmann::json body = SlackPendingMessage(SlkPending(), "C0APPROVE", true, "");

  fake->FailNext("ratelimited", 1);
  n.EnqueueCall(fake->api_url() + "/chat.postMessage", body, "apr_abc");
  REQUIRE(fake->WaitForMessage("apr_abc"));

  fake->FailNext("channel_not_found", 1);
  n.EnqueueCall(fake->api_url() + "/chat.postMessage", body, "apr_abc");
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(5);
  while (n.Stats().failed == 0 && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  const NotifierStats st = n.Stats();
  CHECK(st.delivered == 1);
  CHECK(st.retried == 1);  // the ratelimited one, once
  CHECK(st.failed == 1);   // channel_not_found: never retried
  CHECK(fake->Calls("chat.postMessage").size() == 3);
  CHECK(fake->Violations().empty());
}

TEST_CASE("Slack notifier: replies go only to a response_url Slack could have given") {
  auto fake =
      testing::FakeSlack::Start({.bot_token = "xoxb-unit", .signing_secret = "s", .emails = {}});
  REQUIRE(fake);
  config::ApprovalSlackConfig c;
  c.api_url = fake->api_url();
  c.bot_token = SecretValue("xoxb-unit");
  c.channel = "C0APPROVE";
  SlackNotifier n(c, net::MakeCurlHttpClient({}), net::MakeCurlHttpClient({}));
  CHECK_FALSE(n.Reply("https://evil.example.com/actions/T1/1/x", "no", "apr_1"));
  CHECK_FALSE(n.Reply("http://hooks.slack.com/actions/T1/1/x", "no", "apr_1"));
  CHECK_FALSE(n.Reply("https://hooks.slack.com.evil.example/actions/x", "no", "apr_1"));
  CHECK_FALSE(n.Reply("not a url", "no", "apr_1"));
  REQUIRE(n.Reply(fake->api_url().substr(0, fake->api_url().size() - 4) + "/actions/T1/1/x",
                  "four_eyes: <b>", "apr_1"));
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(5);
  while (fake->Calls("response_url").empty() && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  const auto calls = fake->Calls("response_url");
  REQUIRE(calls.size() == 1);
  CHECK(calls[0].body["text"] == "four_eyes: &lt;b&gt;");
  CHECK(fake->Violations().empty());  // no bot token sent to it
  n.Stop();
  CHECK(n.Stats().delivered == 1);
}

TEST_CASE("Config approvals.slack: a full section, and errors with file, line and key") {
  ::setenv("JITBROKER_SLACK_TEST_TOKEN", "xoxb-1-secret", 1);
  ::setenv("JITBROKER_SLACK_TEST_SIGNING", "signing-secret-1", 1);
  const std::string policy =
      "policy:\n  version: v\n  principals:\n    - {id: alice, roles: [dev]}\n  roles: {dev: "
      "{resources: [], max_tier: read}}\n";                    // lines 1-5
  const std::string head = policy + "approvals:\n  slack:\n";  // lines 6-7
  const std::string tail =
      "    bot_token: env:JITBROKER_SLACK_TEST_TOKEN\n    channel: C0APPROVE\n"
      "    signing_secret: env:JITBROKER_SLACK_TEST_SIGNING\n";
  const std::string ok = head +
                         "    api_url: http://127.0.0.1:9/api/\n"
                         "    bot_token: env:JITBROKER_SLACK_TEST_TOKEN\n"
                         "    channel: C0APPROVE\n"
                         "    signing_secret: env:JITBROKER_SLACK_TEST_SIGNING\n";
  {
    Result<config::Config> c = config::LoadConfigText(
        ok + "    users: {U0ALICE: alice}\n    match_email: true\n", "t.yaml");
    REQUIRE_MESSAGE(c.has_value(), (c.has_value() ? "" : c.error().ToString()));
    REQUIRE(c->approvals.slack.has_value());
    const config::ApprovalSlackConfig& s = *c->approvals.slack;
    CHECK(s.api_url == "http://127.0.0.1:9/api");
    CHECK(s.bot_token.Reveal() == "xoxb-1-secret");
    CHECK(s.interactive);
    CHECK(s.match_email);
    CHECK(s.users.at("U0ALICE") == "alice");
  }
  struct Row {
    const char* name;
    std::string text;
    const char* want;
  };
  const Row rows[] = {
      {"unknown key", ok + "    colour: blue\n", "t.yaml:12: approvals.slack.colour: unknown key"},
      {"unknown principal", ok + "    users: {U0BOB: bob}\n",
       "t.yaml:12: approvals.slack.users.U0BOB: names principal bob"},
      {"bad user id", ok + "    users: {bob: alice}\n", "t.yaml:12: approvals.slack.users.bob"},
      {"no signing secret",
       head + "    bot_token: env:JITBROKER_SLACK_TEST_TOKEN\n    channel: C0APPROVE\n",
       "t.yaml:8: approvals.slack.signing_secret: is required in interactive mode"},
      {"inline token", head + "    bot_token: xoxb-inline-SECRET\n    channel: C0APPROVE\n",
       "t.yaml:8: approvals.slack.bot_token: secrets must be given as file:PATH or env:NAME"},
      {"plain http off loopback", head + "    api_url: http://slack.example.com/api\n" + tail,
       "t.yaml:8: approvals.slack.api_url: must be an https:// URL"},
      {"bad mode", head + "    mode: loud\n" + tail, "t.yaml:8: approvals.slack.mode: must be"},
      {"bad channel",
       head + "    channel: '#approvals'\n    bot_token: env:JITBROKER_SLACK_TEST_TOKEN\n",
       "t.yaml:8: approvals.slack.channel: must be a channel id"},
  };
  for (const Row& r : rows) {
    CAPTURE(r.name);
    Result<config::Config> c = config::LoadConfigText(r.text, "t.yaml");
    REQUIRE_FALSE(c.has_value());
    const std::string& msg = c.error().message;
    CAPTURE(msg);
    CHECK(msg.starts_with(r.want));
    CHECK(msg.find("SECRET") == std::string::npos);
    CHECK(msg.find("xoxb-1-secret") == std::string::npos);
  }
  {
    // notify_only needs no signing secret.
    Result<config::Config> c = config::LoadConfigText(
        head +
            "    bot_token: env:JITBROKER_SLACK_TEST_TOKEN\n    channel: C0APPROVE\n"
            "    mode: notify_only\n    console_url: https://broker.example.com/\n",
        "t.yaml");
    REQUIRE_MESSAGE(c.has_value(), (c.has_value() ? "" : c.error().ToString()));
    CHECK_FALSE(c->approvals.slack->interactive);
    CHECK(c->approvals.slack->console_url == "https://broker.example.com");
  }
  ::unsetenv("JITBROKER_SLACK_TEST_TOKEN");
  ::unsetenv("JITBROKER_SLACK_TEST_SIGNING");
}

}  // namespace
}  // namespace jitbroker::lifecycle
