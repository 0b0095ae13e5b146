// GitHubApiProxy: the GitHub REST API through the broker (docs/proxy.md,
// "The GitHub REST API"). The agent's GitHub client points at
// https://BROKER/github/HOST (HOST: api.github.com, or the Enterprise
// Server host as an issuer names it) and sends its session token as the
// GitHub token. Each /repos/{owner}/{repo}/… call is classified by method
// and path (config routes first, then the built-in table) into a tool, an
// operation and the installation permissions it needs; reads are decided as
// one cached read grant per repository and permission, every other call as
// a grant of its own whose parameters hold the method, path, query and the
// body's SHA-256 — so an approval covers exactly one call. The call is then
// forwarded with an installation token narrowed to those permissions (a
// write's token revoked right after), and the answer streamed back with its
// pagination Link and Location headers pointing at the broker.
//
// Thread-safety: Plan and Handle are called concurrently.
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

class GitHubApiProxy {
 public:
  using RenderErrorFn = proxy_support::RenderErrorFn;

  GitHubApiProxy(service::BrokerService* service, HttpClient* http, config::ProxyConfig config,
                 std::shared_ptr<proxy_support::TransferSlots> slots,
                 std::shared_ptr<proxy_support::HeldTokens> held, RenderErrorFn render_error,
                 bool tls);
  ~GitHubApiProxy();

  // Whether `path` is under /github/.
  static bool Owns(std::string_view path);
  [[nodiscard]] Result<RoutePlan> Plan(Request& head) const;
  void Handle(Request& req, BodyStream& body, Response& res);

  // What a call is (exposed for tests): the classification of METHOD on
  // `sub` (the path under /repos/{owner}/{repo}, without a leading '/'), and
  // the JSON body when it has one. nullopt: not classified by any route.
  struct Call {
    std::string tool;
    std::string operation;
    nlohmann::json permissions = nlohmann::json::object();  // empty: the issuer's defaults
    std::string sub_resource;                               // "pull/842", "issues/7", or ""
    nlohmann::json parameters = nlohmann::json::object();   // beyond method/path/body
    bool read = false;
  };
  static Call Classify(const config::ProxyConfig& config, std::string_view method,
                       std::string_view sub, const nlohmann::json& body);

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace jitbroker::http
