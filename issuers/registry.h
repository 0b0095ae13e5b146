// IssuerRegistry: builds Issuers from config by type. Factories are
// registered explicitly (issuers/builtin.cc), never by static initialisers.
//
// Thread-safety: register everything before Build(); Build() is then safe
// from one thread at a time (startup and reload).
#pragma once

#include <functional>
#include <map>
#include <memory>
#include <string>

#include "broker/config/config.h"
#include "broker/net/http_client.h"
#include "jitbroker/clock.h"
#include "jitbroker/issuer.h"

namespace jitbroker::issuers {

struct IssuerContext {
  std::string name;
  config::Section* section = nullptr;   // the issuer's mapping; factory must CheckNoUnknownKeys
  std::string data_dir;                 // for generated keys
  const Clock* clock = nullptr;
  // Shared client for upstream calls (owned by the app, outlives the issuer;
  // thread-safe). Null where no upstream is reachable: issuers that need one
  // then fail to build.
  net::HttpClient* http = nullptr;
};

using IssuerFactory = std::function<Result<std::unique_ptr<Issuer>>(IssuerContext&)>;

class IssuerRegistry {
 public:
  void Register(std::string type, IssuerFactory factory);
  [[nodiscard]] Result<std::unique_ptr<Issuer>> Build(config::IssuerConfig& cfg,
                                                      const std::string& data_dir,
                                                      const Clock* clock,
                                                      net::HttpClient* http = nullptr) const;

 private:
  std::map<std::string, IssuerFactory> factories_;
};

// Registers jwt and github_app (and, as they land, aws_sts, gcp).
void RegisterBuiltinIssuers(IssuerRegistry& registry);

}  // namespace jitbroker::issuers
