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
#include "jitbroker/clock.h"
#include "jitbroker/issuer.h"

namespace jitbroker::issuers {

struct IssuerContext {
  std::string name;
  config::Section* section = nullptr;   // the issuer's mapping; factory must CheckNoUnknownKeys
  std::string data_dir;                 // for generated keys
  const Clock* clock = nullptr;
};

using IssuerFactory = std::function<Result<std::unique_ptr<Issuer>>(IssuerContext&)>;

class IssuerRegistry {
 public:
  void Register(std::string type, IssuerFactory factory);
  [[nodiscard]] Result<std::unique_ptr<Issuer>> Build(config::IssuerConfig& cfg,
                                                      const std::string& data_dir,
                                                      const Clock* clock) const;

 private:
  std::map<std::string, IssuerFactory> factories_;
};

// Registers jwt (and, as they land, github_app, aws_sts, gcp).
void RegisterBuiltinIssuers(IssuerRegistry& registry);

}  // namespace jitbroker::issuers
