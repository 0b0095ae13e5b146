// What jitctl's loopback credential endpoints share (`aws serve`, `gcp
// serve`; docs/jitctl.md): the credential they serve, cached and replaced by
// a new grant only when fewer than RefreshMargin() seconds are left
// (agent_credentials.h), one request to the broker at a time — the SDKs
// poll often, the broker sees one grant per credential lifetime; a failed
// fetch drops the cached credential, so the endpoint fails closed until the
// broker grants again. Also: GET-only routing, {"code","message"} answers,
// the log, and the listener settings.
//
// Thread-safety: CredentialCache and LoopbackEndpoint are safe for
// concurrent use (one mutex around the cache and the fetch, one around the
// log lines, taken inside the first, never around it).
#pragma once

#include <chrono>
#include <functional>
#include <mutex>
#include <optional>
#include <ostream>
#include <string>
#include <string_view>
#include <utility>

#include "broker/common/time_util.h"
#include "broker/http/transport.h"
#include "cli/agent_credentials.h"
#include "jitbroker/clock.h"

namespace jitbroker::cli {

// What a fetch of a new credential gave.
template <class C>
struct FetchedCredential {
  std::optional<C> credential;  // set on success
  std::string grant_id;         // for the log line
  int status = 0;               // on failure: the endpoint's answer
  std::string code;             // on failure: {"code"}
  std::string message;          // on failure: {"message"}, no secret
};

template <class C>
class CredentialCache {
 public:
  struct Options {
    std::string name;  // "jitctl aws serve", first word of each log line
    const Clock* clock = nullptr;
    std::function<FetchedCredential<C>()> fetch;  // asks the broker for a new grant
    std::function<void(const std::string&)> log;  // one line per grant or refusal
  };

  explicit CredentialCache(Options options) : options_(std::move(options)) {}

  // Seeds the cache with a credential already fetched (the one a serve
  // command asks for before it starts listening).
  void Prime(C credential, TimePoint obtained) {
    std::lock_guard lock(mu_);
    cached_ = std::move(credential);
    obtained_ = obtained;
  }

  // Calls use(credential, now) with a credential that is not due for
  // replacement, fetching one first when needed; nullopt then. Else the
  // failed fetch, and `use` is not called.
  template <class Use>
  std::optional<FetchedCredential<C>> With(Use&& use) {
    std::lock_guard lock(mu_);
    const TimePoint now = options_.clock->Now();
    if (!cached_ || NeedsRefresh(obtained_, cached_->expires_at, now)) {
      cached_.reset();
      FetchedCredential<C> fetched = options_.fetch();
      if (!fetched.credential) {
        Log("no credential: " + fetched.code + ": " + fetched.message);
        return fetched;
      }
      cached_ = std::move(fetched.credential);
      obtained_ = now;
      Log("new credential from grant " + fetched.grant_id + ", expires at " +
          FormatRfc3339(cached_->expires_at));
    }
    std::forward<Use>(use)(*cached_, now);
    return std::nullopt;
  }

 private:
  void Log(const std::string& line) {
    if (options_.log) {
      options_.log(options_.name + ": " + line);
    }
  }

  Options options_;
  std::mutex mu_;
  std::optional<C> cached_;  // guarded by mu_
  TimePoint obtained_{};     // guarded by mu_
};

// The endpoint's non-200 answer: {"code","message"} as JSON.
void AnswerError(http::Response& response, int status, std::string_view code,
                 std::string_view message);

// The base of an endpoint serving credentials of type C: routing, errors,
// the log and the cache. A subclass implements Handle and calls
// AnswerCredential once a request is accepted.
template <class C>
class LoopbackEndpoint : public http::RequestHandler {
 public:
  // Seeds the cache with a credential already fetched (the one a serve
  // command asks for before it starts listening).
  void Prime(C credential, TimePoint obtained) { cache_.Prime(std::move(credential), obtained); }

  void RenderError(const http::Request& /*request*/, const Error& error,
                   http::Response& response) override {
    int status = InfoFor(error.code).http_status;
    if (error.Reason() == "method_not_allowed") {
      status = 405;
      response.SetHeader("Allow", "GET");
    }
    AnswerError(response, status, error.Reason(), error.message);
  }
  void Finished(const http::Request&, const http::Response&,
                std::chrono::steady_clock::duration) override {}

 protected:
  // `name`: "jitctl aws serve", the first words of each log line.
  LoopbackEndpoint(std::string name, const Clock* clock,
                   std::function<FetchedCredential<C>()> fetch, std::ostream* log)
      : log_(log),
        cache_({.name = std::move(name),
                .clock = clock,
                .fetch = std::move(fetch),
                .log = [this](const std::string& line) { Log(line); }}) {}

  // Plan of a GET-only endpoint: 404 unless `path_ok` (`where` says what
  // is served), 405 for another method, no body.
  static Result<http::RoutePlan> PlanGet(http::Request& head, bool path_ok, std::string_view where,
                                         std::string route) {
    if (!path_ok) {
      return std::unexpected(NotFound("not_found", std::string(where)));
    }
    if (head.method != "GET") {
      Error e = InvalidArgument("method_not_allowed", "only GET is served");
      e.code = ErrorCode::kFailedPrecondition;
      return std::unexpected(std::move(e));
    }
    head.route = std::move(route);
    http::RoutePlan plan;
    plan.max_body_bytes = 0;
    return plan;
  }

  // 200 with render(credential, now) as the JSON body, or the refusal of
  // a failed fetch (the broker's decision 403, else 502).
  template <class Render>
  void AnswerCredential(http::Response& response, Render&& render) {
    auto failed = cache_.With([&](const C& credential, TimePoint now) {
      SecretValue body = std::forward<Render>(render)(credential, now);
      response.status = 200;
      response.content_type = "application/json";
      response.body = std::string(body.Reveal());
    });
    if (failed) {
      AnswerError(response, failed->status == 0 ? 502 : failed->status,
                  failed->code.empty() ? "broker_error" : failed->code, failed->message);
    }
  }

  // One line on the log, without secrets.
  void Log(const std::string& line) {
    if (log_ == nullptr) {
      return;
    }
    std::lock_guard lock(log_mu_);
    *log_ << line << "\n" << std::flush;
  }

 private:
  std::ostream* const log_;
  std::mutex log_mu_;
  CredentialCache<C> cache_;
};

// The listener of a credential endpoint (the broker's own HTTP listener,
// broker/http/transport.h): 127.0.0.1:`port` whatever the caller wants, one
// I/O thread, two workers, a short queue, small heads, no bodies, short
// timeouts.
http::TransportOptions LoopbackEndpointOptions(int port);

}  // namespace jitbroker::cli
