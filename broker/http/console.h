// Console: the broker's web console at /ui/ (docs/console.md), for the
// people who approve requests, watch live sessions and read the audit trail.
// Plain server-rendered HTML with one small script and one stylesheet served
// by the broker itself (no build step, no external assets), under a strict
// Content-Security-Policy.
//
// Sign-in is single sign-on only (oidc::HumanLogin, `humans:`): /ui/login
// sends the browser to the identity provider, /ui/callback finishes there and
// opens a console session, kept in memory by this process and named by a
// random value in an HttpOnly, Secure, SameSite=Strict `__Host-` cookie. Each
// console session has a CSRF token that every state-changing form carries
// (compared in constant time); a POST whose Origin or Sec-Fetch-Site shows
// another site is refused too. Every action goes through the same
// BrokerService calls and JSON validation as the REST API (wire::JsonApi),
// as the signed-in principal: an approver sees only what GET /v1/approvals
// would show them, a principal only their own sessions.
//
// Bounds: form bodies of 16 KiB; console sessions at most
// humans.max_console_sessions (the oldest is signed out beyond); sign-ins
// started per address limited (limits.auth_failures_per_address's rate).
//
// Thread-safety: Handle() runs on many worker threads at once.
#pragma once

#include <cstddef>
#include <memory>
#include <string>
#include <string_view>

#include "broker/http/transport.h"
#include "broker/oidc/human_login.h"
#include "broker/service/broker_service.h"
#include "jitbroker/clock.h"

namespace jitbroker::http {

struct ConsoleOptions {
  const Clock* clock = nullptr;
  int64_t session_ttl_seconds = 3600;
  size_t max_sessions = 10000;
  // sessions.stall_after_missed: a session's heartbeat deadline is its last
  // heartbeat (or its opening) plus this many intervals.
  int64_t stall_after_missed = 3;
  // Sign-ins started per client address (GET /ui/login).
  RateLimit logins_per_address{.rate_per_second = 1, .burst = 20};
};

class Console {
 public:
  // `service` and `login` are not owned and must outlive the console.
  static Result<std::unique_ptr<Console>> Create(service::BrokerService* service,
                                                 oidc::HumanLogin* login, ConsoleOptions options);
  ~Console();

  // Whether `path` is the console's ("/ui" or below).
  static bool Owns(std::string_view path);
  // Routing once the head is read: GET, HEAD-less; POST bodies of 16 KiB.
  [[nodiscard]] Result<RoutePlan> Plan(Request& head);
  void Handle(Request& req, Response& res);

  // Signed-in browsers right now (tests and metrics).
  size_t session_count() const;

 private:
  Console() = default;
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace jitbroker::http
