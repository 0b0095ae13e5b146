// FakeSlack: a loopback stand-in for the Slack Web API methods approvals.slack
// uses (docs/operations.md "Approvals in Slack"), for integration tests. It
// checks what Slack checks and answers as Slack does (200 with {"ok": false,
// "error": …} on failure):
//
//   - every call needs "Authorization: Bearer <bot token>" (else not_authed /
//     invalid_auth);
//   - POST chat.postMessage and chat.update need a JSON body
//     (Content-Type application/json; else invalid_arguments), `channel`, and
//     `text` or `blocks` (else channel_not_found / no_text); chat.update also
//     an existing `ts` in that channel (else message_not_found);
//   - blocks are Block Kit shapes (else invalid_blocks): an array of at most
//     50 objects each with a known `type`; header text plain_text <= 150;
//     section text <= 3000 or <= 10 fields of <= 2000; context elements; an
//     actions block's elements are buttons with `action_id`, `text`
//     {type: plain_text, text <= 75}, `value` <= 2000 and style primary or
//     danger;
//   - POST to a callback's response_url (/actions/…) takes an ephemeral JSON
//     message without Authorization and answers "ok";
//   - GET users.info?user=U… answers the configured email (users:read.email)
//     or user_not_found.
//
// Every call is recorded, and every broken rule in Violations(). Sign()
// and Click() build interaction callbacks as Slack sends them
// (application/x-www-form-urlencoded `payload=<json>`, X-Slack-Signature v0
// over the timestamp and body) for tests to POST to the broker.
//
// Thread-safety: all methods are thread-safe.
#pragma once

#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace jitbroker::testing {

struct FakeSlackOptions {
  std::string bot_token;
  std::string signing_secret;
  std::map<std::string, std::string> emails;  // Slack user id -> email (users.info)
};

struct SlackCall {
  std::string method;   // "chat.postMessage", "chat.update", "users.info"
  nlohmann::json body;  // JSON body (null for users.info)
  std::string query;    // users.info
  std::string error;    // the {"ok": false} error answered, empty when ok
};

// A message in the fake's channel history, as last posted or updated.
struct SlackMessage {
  std::string channel;
  std::string ts;
  std::string text;
  nlohmann::json blocks;
  int updates = 0;
};

// A signed interaction callback, ready to POST.
struct SlackCallback {
  std::string body;  // payload=<url-encoded json>
  std::string timestamp;
  std::string signature;
};

class FakeSlack {
 public:
  ~FakeSlack();
  static std::unique_ptr<FakeSlack> Start(FakeSlackOptions options);
  void Stop();

  std::string api_url() const;  // http://127.0.0.1:PORT/api

  std::vector<SlackCall> Calls(const std::string& method = "") const;
  std::vector<std::string> Violations() const;
  std::vector<SlackMessage> Messages() const;
  // The message whose blocks carry `approval_id`, waiting up to `timeout`
  // for it to be posted (and, with min_updates, updated that often).
  std::optional<SlackMessage> WaitForMessage(
      const std::string& approval_id, int min_updates = 0,
      std::chrono::milliseconds timeout = std::chrono::milliseconds(5000)) const;
  // The next `count` chat.* calls answer {"ok": false, "error": error}.
  void FailNext(const std::string& error, int count = 1);
  // chat.postMessage records the message at once but answers `delay`
  // later: the broker learns the message's ts after the test can see it.
  void DelayPostAnswers(std::chrono::milliseconds delay);

  // Slack's signature of `body` at `timestamp` with `secret`.
  static std::string Sign(const std::string& secret, const std::string& timestamp,
                          const std::string& body);
  // A block_actions callback: `user_id` clicked `action_id` on `message`
  // (the button's value is taken from its actions block), timestamped now +
  // `skew`, signed with the configured signing secret (or `secret`).
  SlackCallback Click(const SlackMessage& message, const std::string& user_id,
                      const std::string& action_id,
                      std::chrono::seconds skew = std::chrono::seconds(0),
                      const std::optional<std::string>& secret = std::nullopt) const;
  // Wraps any payload JSON as a signed callback body.
  SlackCallback SignPayload(const nlohmann::json& payload,
                            std::chrono::seconds skew = std::chrono::seconds(0)) const;

 private:
  FakeSlack() = default;
  struct Impl;
  std::unique_ptr<Impl> impl_;
  int port_ = 0;
};

}  // namespace jitbroker::testing
