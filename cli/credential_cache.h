// The credential a loopback endpoint of jitctl serves (`aws serve`, `gcp
// serve`; docs/jitctl.md): cached, replaced by a new grant only when fewer
// than RefreshMargin() seconds are left (agent_credentials.h), one request
// to the broker at a time. The SDKs poll often; the broker sees one grant
// per credential lifetime. A failed fetch drops the cached credential: the
// endpoint fails closed until the broker grants again.
//
// Also the listener settings every such endpoint shares.
//
// Thread-safety: CredentialCache is safe for concurrent use (one mutex
// around the cache and the fetch).
#pragma once

#include <chrono>
#include <functional>
#include <mutex>
#include <optional>
#include <string>
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

// The listener of a credential endpoint (the broker's own HTTP listener,
// broker/http/transport.h): 127.0.0.1:`port` whatever the caller wants, one
// I/O thread, two workers, a short queue, small heads, no bodies, short
// timeouts.
http::TransportOptions LoopbackEndpointOptions(int port);

}  // namespace jitbroker::cli
