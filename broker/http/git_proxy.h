// GitProxy: git smart HTTP through the broker (docs/proxy.md). The agent's
// remote is https://BROKER/git/HOST/OWNER/REPO.git and git authenticates
// with its session (HTTP Basic: session id and session token). The proxy
//   - decides every fetch as a `git.fetch` read grant and forwards it with an
//     installation token narrowed to contents:read on that repository, which
//     the broker keeps (cached while its grant is active);
//   - answers a push's ref advertisement itself, from the upstream's
//     upload-pack advertisement (read token), so nothing can be written
//     before the push's refs are decided;
//   - reads a push's ref-update commands before its pack and decides each
//     ref as a `git.push` grant {ref, old, new, create, delete, branch|tag}
//     (operation push, push_protected, delete_ref or rewrite_tag); forwards
//     the push, pack streamed, with one of those grants' write tokens only if
//     every ref is allowed, and revokes the push's grants once it is over;
//     otherwise answers with git's own report-status, one "ng" per ref.
// Bodies stream both ways in bounded memory (broker/http/transport.h,
// BodyStream); the agent never sees a GitHub token.
//
// Thread-safety: Plan and Handle are called concurrently from the
// listener's threads; the token cache is locked.
#pragma once

#include <functional>
#include <memory>
#include <string>

#include "broker/config/config.h"
#include "broker/http/proxy_support.h"
#include "broker/http/transport.h"
#include "broker/service/broker_service.h"
#include "jitbroker/http_client.h"

namespace jitbroker::http {

class GitProxy {
 public:
  using RenderErrorFn = proxy_support::RenderErrorFn;

  GitProxy(service::BrokerService* service, HttpClient* http, config::ProxyConfig config,
           std::shared_ptr<proxy_support::TransferSlots> slots,
           std::shared_ptr<proxy_support::HeldTokens> held, RenderErrorFn render_error);
  ~GitProxy();

  // Whether `path` is under /git/.
  static bool Owns(std::string_view path);
  // The route of a /git/ request head (label, streaming limits). Errors:
  // kNotFound "no_route", kMethodNotAllowed.
  [[nodiscard]] Result<RoutePlan> Plan(Request& head) const;
  void Handle(Request& req, BodyStream& body, Response& res);

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace jitbroker::http
