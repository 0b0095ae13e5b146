// Approvals in Slack (`approvals.slack`, docs/configuration.md and
// docs/operations.md "Approvals in Slack"): a message per pending approval
// in one channel, with the approval's context and, in interactive mode,
// Approve and Deny buttons; the callbacks of those buttons
// (POST /v1/slack/interactions, broker/http/slack_interactions.h) are
// verified with VerifySlackSignature and decided through
// BrokerService::DecideApproval, and the message is then updated.
//
// The Web API calls that change messages (chat.postMessage, chat.update) go
// through an ApprovalNotifier in its Slack dialect (notifier.h): the same
// bounded queue, retries and backoff as the approval webhook, never on the
// request path. Only users.info (match_email) is called synchronously, from
// the callback, with a short timeout.
//
// Secrets: the bot token and the signing secret are SecretValues, revealed
// only to the HTTP client and to the HMAC; messages carry only the fields
// PendingApprovalMessage whitelists (parameters redacted).
//
// Thread-safety: every method of SlackNotifier may be called from any
// thread; the pure functions are thread-safe.
#pragma once

#include <chrono>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

#include "broker/config/config.h"
#include "broker/lifecycle/notifier.h"
#include "broker/net/http_client.h"
#include "jitbroker/clock.h"
#include "jitbroker/policy.h"
#include "jitbroker/result.h"
#include "jitbroker/secret.h"
#include "jitbroker/store.h"

namespace jitbroker::lifecycle {

// How far a callback's X-Slack-Request-Timestamp may be from the broker's
// clock, either way (Slack's own recommendation): a replayed callback is
// refused after it.
inline constexpr std::chrono::seconds kSlackReplayWindow{300};

// The buttons' action ids.
inline constexpr std::string_view kSlackApproveAction = "jitbroker_approve";
inline constexpr std::string_view kSlackDenyAction = "jitbroker_deny";

// Slack's request signature: `signature` must be "v0=" + lower-case hex of
// HMAC-SHA256(signing_secret, "v0:" + timestamp + ":" + body), compared in
// constant time, and `timestamp` (decimal Unix seconds) within
// kSlackReplayWindow of `now`. Errors, all kUnauthenticated:
// "missing_signature" (either header empty), "stale_request" (timestamp
// malformed or outside the window), "invalid_signature".
[[nodiscard]] Status VerifySlackSignature(std::string_view signing_secret,
                                          std::string_view timestamp, std::string_view signature,
                                          std::string_view body, TimePoint now);

// The chat.postMessage body for a pending approval: `pending` is what
// PendingApprovalMessage built (so only its whitelisted fields), rendered as
// a header, the context (agent, task, principal, tool, operation, resource,
// tier and why, expiry, parameters, digest), an optional console link and,
// when `interactive`, an actions block with the two buttons, whose value is
// "<approval id>:<request digest>".
nlohmann::json SlackPendingMessage(const nlohmann::json& pending, const std::string& channel,
                                   bool interactive, const std::string& console_url);

// The blocks of a decided message: `original` (the message's blocks, as
// Slack sent them in the callback) without its actions blocks, followed by a
// section saying `outcome` (mrkdwn, already escaped).
nlohmann::json SlackDecidedBlocks(const nlohmann::json& original, const std::string& outcome);

// Escapes &, < and > as Slack's mrkdwn and plain text require.
std::string SlackEscape(std::string_view text);

// Slack ids (users, channels): upper-case letters and digits, 1..32.
bool IsSlackId(std::string_view id);

class SlackNotifier {
 public:
  // `queue_client` carries the queued Web API calls, `lookup_client`
  // users.info; neither may be null.
  SlackNotifier(const config::ApprovalSlackConfig& config,
                std::unique_ptr<net::HttpClient> queue_client,
                std::unique_ptr<net::HttpClient> lookup_client);
  SlackNotifier(const SlackNotifier&) = delete;
  SlackNotifier& operator=(const SlackNotifier&) = delete;

  // Queues the chat.postMessage for a new pending approval. Never blocks.
  void ApprovalPending(const GrantRecord& grant, const SessionRecord& session);
  // The approval of `grant` is no longer pending (`grant` as committed:
  // decided through the API or the console, expired, or its session
  // ended): queues the chat.update of its message that says so, when this
  // process posted it. Decisions made in Slack are not announced here: the
  // callback updates its message itself. Never blocks.
  void ApprovalClosed(const GrantRecord& grant);
  // Queues a chat.update of message `ts` in `channel`. Never blocks.
  void UpdateMessage(const std::string& channel, const std::string& ts, nlohmann::json blocks,
                     const std::string& text, const std::string& approval_id);
  // Queues `text` for the clicker alone (an ephemeral message) through the
  // interaction's `response_url`, when that URL is one Slack gives out:
  // https://hooks.slack.com/…, or on the host of api_url (a test double or
  // a relay). Returns false (nothing queued) for any other URL. Slack ignores
  // the body of a callback's answer, so this is how a clicker learns why
  // nothing was decided.
  bool Reply(const std::string& response_url, const std::string& text,
             const std::string& approval_id);
  // The principal the Slack user `user_id` stands for under `policy`: the
  // configured mapping, else (match_email) the principal whose email is the
  // Slack user's (users.info; case-insensitive). nullopt: unmapped. Errors:
  // kUnavailable when users.info could not be asked or answered badly.
  [[nodiscard]] Result<std::optional<std::string>> PrincipalFor(std::string_view user_id,
                                                                const Policy& policy);

  const SecretValue& signing_secret() const { return signing_secret_; }
  bool interactive() const { return config_.interactive; }
  // The channel the messages go to: callbacks from any other are ignored.
  const std::string& channel() const { return config_.channel; }

  void Stop() { queue_.Stop(); }
  NotifierStats Stats() const { return queue_.Stats(); }

 private:
  const config::ApprovalSlackConfig config_;
  SecretValue signing_secret_;
  std::string api_host_;  // lower case, from api_url
  std::unique_ptr<net::HttpClient> lookup_;
  // Messages this process posts, by approval id (the blocks sent; channel
  // and ts from Slack's answer), so a decision made elsewhere can update
  // them. A decision made before Slack answered the post waits in
  // `closed_outcome` and is applied by the answer. In memory and bounded
  // (kMaxPosted; the oldest is forgotten): after a restart, older messages
  // keep their buttons, and a click on them is answered with the
  // approval's state.
  struct Posted {
    std::string channel;  // empty until Slack answers the post
    std::string ts;       // empty until Slack answers the post
    nlohmann::json blocks;
    std::optional<std::string> closed_outcome;
  };
  static constexpr size_t kMaxPosted = 10000;
  std::mutex posted_mu_;
  std::map<std::string, Posted> posted_;  // guarded by posted_mu_
  std::deque<std::string> posted_order_;  // approval ids, oldest first; guarded by posted_mu_
  ApprovalNotifier queue_;
};

}  // namespace jitbroker::lifecycle
