// What the two proxies (broker/http/git_proxy.h for git smart HTTP,
// broker/http/github_api_proxy.h for the GitHub REST API; docs/proxy.md)
// share: who the agent is, the installation tokens the broker holds for it,
// how many transfers may run, and how a request is forwarded with the
// upstream's answer streamed back.
//
// Thread-safety: HeldTokens and TransferSlots are thread-safe; the functions
// are pure apart from the calls they make.
#pragma once

#include <atomic>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <vector>

#include "broker/authn/authn.h"
#include "broker/common/log.h"
#include "broker/config/config.h"
#include "broker/http/transport.h"
#include "broker/service/broker_service.h"
#include "jitbroker/http_client.h"

namespace jitbroker::http::proxy_support {

// The piece a proxy reads or writes at once, and how long an upstream
// connection may take to open.
inline constexpr size_t kChunk = 64 * 1024;
inline constexpr std::chrono::seconds kConnectTimeout{10};

// How the server renders an error (problem+json), for the proxies.
using RenderErrorFn = std::function<void(const Request&, const Error&, Response&)>;

// A proxy's failure answer: the problem document of `e`, `challenge` as
// WWW-Authenticate when it is 401, and a log line when the broker or an
// upstream failed (kInternal, kUnavailable).
void RenderFailure(const RenderErrorFn& render, spdlog::logger& log, const Request& req,
                   const Error& e, Response& res, std::string_view challenge);

// Revokes a proxy grant whose one use is over (a push's, a REST write's);
// one the session's end already revoked is fine, any other failure logged.
void EndUse(service::BrokerService& service, const service::CallContext& ctx,
            const std::string& grant_id, spdlog::logger& log);

// The agent's session: HTTP Basic (user = session id, password = session
// token; git's way), or "Bearer jbs_…" / "token jbs_…" (GitHub clients').
// The token itself is verified against the store by the service calls that
// follow. Errors: kUnauthenticated ("missing_credentials" naming `how`,
// "malformed_authorization", "invalid_credentials"), kPermissionDenied
// "session_token_required" for an API key.
[[nodiscard]] Result<authn::Caller> AuthenticateSession(const service::BrokerService& service,
                                                        const Request& req, std::string_view how);

// GitHub's owner and repository alphabet (letters, digits, '-', '_', '.';
// at most 100; "." and ".." are not names).
bool IsRepoNameSegment(std::string_view s);

// Whether `branch` (a short name, "main") matches proxy.protected_branches
// ('*' matching any run of characters but '/').
bool IsProtectedBranch(const config::ProxyConfig& config, std::string_view branch);

// The "token" secret of an issued credential (empty if none).
SecretValue TokenOf(const service::IssuedCredential& c);

// The answer to a proxy grant that did not issue a credential: 403
// "grant_denied" (or "budget_exceeded" when the session's budget refused
// it) with the decision's reason, or "approval_required" naming
// the approval to ask for. `what` says what was asked ("reading acme/app").
Error NotIssued(const service::GrantResponse& out, const std::string& what);

// Installation tokens the proxy holds for sessions (proxy grants,
// held_by "proxy"), reused while their grant is active and has over a
// minute to live: one per (session, exact grant request). A revoked
// session or grant, or a session token that no longer verifies, ends the
// reuse at the next request. Bounded: the oldest entries go first.
class HeldTokens {
 public:
  explicit HeldTokens(service::BrokerService* service) : service_(service) {}
  [[nodiscard]] Result<std::shared_ptr<const SecretValue>> Get(const service::CallContext& ctx,
                                                               const GrantRequest& req,
                                                               const std::string& what);

 private:
  struct Entry {
    std::string grant_id;
    std::shared_ptr<const SecretValue> token;
    TimePoint expires_at;
  };
  service::BrokerService* service_;
  std::mutex mu_;
  std::map<std::string, Entry> entries_;  // session \n request digest; guarded by mu_
};

// Transfers in flight through the proxies (proxy.max_concurrent_transfers):
// each holds a worker thread.
class TransferSlots {
 public:
  explicit TransferSlots(int max) : max_(max) {}
  bool TryTake() {
    if (n_.fetch_add(1) >= max_) {
      n_.fetch_sub(1);
      return false;
    }
    return true;
  }
  void Release() { n_.fetch_sub(1); }
  // The answer when none is free (503 "proxy_busy", Retry-After 2).
  static Error Busy();

 private:
  const int max_;
  std::atomic<int> n_{0};
};

// A slot of TransferSlots, given back when destroyed.
class SlotHold {
 public:
  explicit SlotHold(TransferSlots* slots) : slots_(slots) {}
  SlotHold(SlotHold&& other) noexcept : slots_(other.slots_) { other.slots_ = nullptr; }
  SlotHold(const SlotHold&) = delete;
  SlotHold& operator=(const SlotHold&) = delete;
  SlotHold& operator=(SlotHold&&) = delete;
  ~SlotHold() {
    if (slots_ != nullptr) {
      slots_->Release();
    }
  }

 private:
  TransferSlots* slots_;
};

// A proxy request let in: the session's call context (via_proxy) and the
// transfer slot it holds while it runs.
struct Admitted {
  service::CallContext ctx;
  SlotHold slot;
};
// AuthenticateSession, then a transfer slot (TransferSlots::Busy when none).
[[nodiscard]] Result<Admitted> Admit(const service::BrokerService& service, const Request& req,
                                     std::string_view how, TransferSlots& slots);

struct ForwardSpec {
  std::string url;
  std::string auth_scheme;                    // "Basic" (git) or "Bearer" (REST)
  SecretValue auth;                           // the credential after the scheme
  std::vector<std::string> request_headers;   // passed on when the client sent them
  std::vector<std::string> response_headers;  // passed back when the upstream sent them
  // Rewrites a passed-back response header's value (e.g. Link to the
  // broker's own URLs); absent: as sent.
  std::function<std::string(std::string_view name, std::string_view value)> rewrite;
  std::string_view body_prefix;                // request body bytes already read, sent first
  std::optional<std::string_view> whole_body;  // the request body, already read whole
  std::chrono::seconds timeout{3600};
  std::chrono::seconds idle{60};
  std::string what;  // the upstream object, for messages ("acme/app")
};

// Forwards `req` (its method) to spec.url and streams the upstream's
// answer back through `body`. An Error means nothing was sent to the client
// yet (the caller answers it); once the answer has begun, a failure cuts it
// off (BodyStream::Abort) and is only logged. An upstream 401/407 is never
// passed on (a client would ask its user for GitHub credentials): it is
// kUnavailable "upstream_refused".
[[nodiscard]] Status Forward(HttpClient& http, const Request& req, ForwardSpec spec,
                             BodyStream& body, spdlog::logger& log);

}  // namespace jitbroker::http::proxy_support
