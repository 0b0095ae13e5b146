// POST /v1/slack/interactions (docs/api.md "Slack interactions"): the
// callback of the Approve and Deny buttons of approvals.slack messages
// (broker/lifecycle/slack.h). No bearer credential: Slack's request
// signature authenticates the request, and is checked before anything in the
// body is parsed; an address whose failures exhausted
// limits.auth_failures_per_address is refused first. The Slack user is then
// mapped to a principal and the click decided by
// BrokerService::DecideApproval with that principal as the caller, so every
// rule of the API applies unchanged (approver roles, four-eyes, digest,
// expiry); the decision is recorded with via "slack" and the Slack user id.
//
// Answers: 401 problem+json missing_signature / stale_request /
// invalid_signature, 429 rate_limited, 415 unsupported_media_type, 400
// invalid_request for a signed body that is not an interaction; otherwise 200
// (Slack wants an answer within 3 s), with an ephemeral text for the clicker
// when nothing was decided. A decided (or expired) approval's message is
// updated through the Slack queue.
//
// Thread-safety: Handle() runs on any worker thread; the service and the
// notifier are thread-safe and outlive this object.
#pragma once

#include "broker/http/proxy_support.h"
#include "broker/http/transport.h"
#include "broker/lifecycle/slack.h"
#include "broker/service/broker_service.h"

namespace jitbroker::http {

class SlackInteractions {
 public:
  // Callbacks are form bodies `payload=<json>`; Slack's are a few KiB.
  static constexpr size_t kMaxBodyBytes = 64 * 1024;

  // `render` writes an error as the server does (problem+json).
  SlackInteractions(service::BrokerService* service, lifecycle::SlackNotifier* slack,
                    proxy_support::RenderErrorFn render)
      : service_(service), slack_(slack), render_(std::move(render)) {}

  void Handle(Request& req, Response& res);

 private:
  service::BrokerService* service_;
  lifecycle::SlackNotifier* slack_;
  proxy_support::RenderErrorFn render_;
};

}  // namespace jitbroker::http
