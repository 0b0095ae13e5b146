// ApprovalNotifier: optional delivery of "approval.pending" messages to a
// configured webhook (`approvals.webhook`, docs/configuration.md), so that
// approvers learn about a pending approval without polling.
//
// Delivery is best effort and never on the request path: Enqueue() only
// appends to a bounded in-memory queue (a full queue drops the OLDEST message,
// counts it and logs a warning with its approval id) and a background
// std::jthread POSTs the messages one at a time, oldest first. Each message is
// POSTed as application/json with
//   User-Agent: jitbroker/0.1
//   X-Jitbroker-Event: approval.pending
//   X-Jitbroker-Delivery: <unique id, the same for every attempt of a message>
//   Authorization: <configured value> (only when configured)
// Outcomes: 2xx = delivered; 408, 429, 5xx and transport errors are retried
// with exponential backoff and full jitter (initial_backoff * 2^(n-1), capped by
// max_backoff), honouring a Retry-After of delta-seconds (capped by
// max_backoff), until max_attempts attempts were made (then: failed); any other
// status (3xx, other 4xx) and a request the client rejects are permanent
// failures: logged and dropped. Messages still queued when Stop() runs are
// dropped and counted. Nothing is persisted: the approval itself is durable in
// the store, the notification is only a hint (GET /v1/approvals is the source
// of truth).
//
// Secrets: the Authorization value is a SecretValue revealed only when handed
// to the HTTP client; logs carry ids, host and status only (never the URL path,
// which may hold a token, nor message bodies). PendingApprovalMessage() copies
// only whitelisted, non-secret fields.
//
// Dialects: the same queue and retry machinery also carries Slack Web API
// calls (broker/lifecycle/slack.h). With Dialect::kSlackApi each message names
// its own method URL (EnqueueCall), carries only Content-Type, User-Agent and
// the bot token as bearer, and a 2xx answer counts as delivered only when its
// JSON says {"ok": true}: Slack reports failures as 200 {"ok": false, "error":
// …}; "ratelimited" is retried like a 429, any other error is permanent.
// A call queued with `bearer` false (a Slack response_url, which is its own
// credential) carries no Authorization header, and any 2xx is delivered.
//
// Thread-safety: Enqueue(), EnqueueCall(), Stats() and Stop() may be called from any thread.
// Stop() returns promptly from a backoff wait; an HTTP exchange in flight is
// bounded by `timeout`. The destructor calls Stop().
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <random>
#include <stop_token>
#include <string>
#include <thread>

#include <nlohmann/json.hpp>

#include "broker/net/http_client.h"
#include "jitbroker/clock.h"
#include "jitbroker/secret.h"
#include "jitbroker/store.h"

namespace jitbroker::lifecycle {

// What the receiving end speaks (see the file comment).
enum class Dialect { kWebhook, kSlackApi };

struct WebhookOptions {
  Dialect dialect = Dialect::kWebhook;
  // Absolute http(s) URL. Validated at config load (https, or http for a
  // loopback host); not re-validated here.
  std::string url;
  Seconds timeout{5};    // per attempt, whole exchange
  int max_attempts = 8;  // including the first (>= 1)
  // The Authorization header value as is; it must read "Bearer TOKEN" because
  // the HTTP client carries only bearer credentials (the config loader checks
  // it). Any other form makes every delivery a permanent failure.
  std::optional<SecretValue> authorization;
  size_t max_queue = 1000;                         // messages waiting (>= 1)
  std::chrono::milliseconds initial_backoff{500};  // first retry delay bound
  std::chrono::milliseconds max_backoff{30000};    // cap of any retry delay
};

// Counters since construction; they only grow.
struct NotifierStats {
  uint64_t delivered = 0;  // messages answered with 2xx
  uint64_t retried = 0;    // attempts after the first (all messages)
  uint64_t failed = 0;     // permanent failures and messages out of attempts
  uint64_t dropped = 0;    // overflowed the queue, or undelivered at Stop() / after it
};

class ApprovalNotifier {
 public:
  // Starts the delivery thread. `client` must not be null.
  ApprovalNotifier(WebhookOptions options, std::unique_ptr<net::HttpClient> client);
  ~ApprovalNotifier();
  ApprovalNotifier(const ApprovalNotifier&) = delete;
  ApprovalNotifier& operator=(const ApprovalNotifier&) = delete;

  // Queues `message` (as built by PendingApprovalMessage) for delivery.
  // Never blocks on the network and never throws. After Stop() the message is
  // dropped and counted.
  void Enqueue(nlohmann::json message);
  // Queues `body` for a POST to `url` (an absolute URL, e.g. a Slack Web API
  // method) instead of the configured one; `approval_id` is for logs only.
  // Otherwise as Enqueue.
  // `on_delivered` (optional) runs on the delivery thread with Slack's
  // answer once the call succeeded (Dialect::kSlackApi only).
  void EnqueueCall(std::string url, const nlohmann::json& body, std::string approval_id,
                   bool bearer = true,
                   std::function<void(const nlohmann::json& answer)> on_delivered = nullptr);
  // Stops the delivery thread and drops what is still queued. Idempotent.
  void Stop();
  NotifierStats Stats() const;

 private:
  struct Item {
    std::string body;         // serialised JSON
    std::string approval_id;  // for logs
    std::string delivery_id;  // X-Jitbroker-Delivery
    std::string url;          // empty: options_.url
    bool bearer = true;       // send the configured credential; false: any 2xx is delivered
    std::function<void(const nlohmann::json& answer)> on_delivered;  // Slack calls only
  };
  void Push(Item item);
  enum class Outcome { kDelivered, kRetry, kPermanent };

  void Run(std::stop_token stop);
  void Deliver(const Item& item, std::stop_token stop);
  // One attempt; on kRetry sets *retry_after when the server asked for a delay.
  Outcome Attempt(const Item& item, int attempt,
                  std::optional<std::chrono::milliseconds>* retry_after);
  std::chrono::milliseconds Backoff(int attempt);  // before attempt `attempt + 1`
  Outcome SlackOutcome(const Item& item, int attempt, const net::HttpResponse& resp);

  const WebhookOptions options_;
  const std::unique_ptr<net::HttpClient> client_;
  const std::string host_;  // "host[:port]" for logs
  // The token of a "Bearer TOKEN" authorization (empty when none), and
  // whether the configured authorization had that form.
  SecretValue bearer_;
  bool authorization_ok_ = true;

  mutable std::mutex mu_;
  std::condition_variable_any cv_;
  std::deque<Item> queue_;  // guarded by mu_
  bool stopped_ = false;    // guarded by mu_
  NotifierStats stats_;     // guarded by mu_

  std::mutex stop_mu_;   // serialises Stop()
  std::mt19937_64 rng_;  // delivery thread only (jitter)
  std::jthread thread_;  // last: starts after everything above is initialised
};

// The body for a pending approval: {"event":"approval.pending", approval_id,
// grant_id, request_digest, expires_at (the approval's), created_at,
// principal, agent {id, session_id, task_id}, task {id, description},
// request {tool, operation, resource, issuer, tier, ttl_seconds, parameters,
// scope, justification}, decision {result, tier, code, reason, matched_rule,
// policy_version, ttl_seconds}, links {approve: "/v1/approvals/<id>"}}.
// Only these fields are copied (never the token digest, sealed handle,
// credential fingerprint or other `extra` keys), and parameters and scope are
// redacted again as audit records are.
nlohmann::json PendingApprovalMessage(const GrantRecord& grant, const SessionRecord& session);

}  // namespace jitbroker::lifecycle
