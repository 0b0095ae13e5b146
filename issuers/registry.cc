#include "issuers/registry.h"

namespace jitbroker::issuers {

void IssuerRegistry::Register(std::string type, IssuerFactory factory) {
  factories_[std::move(type)] = std::move(factory);
}

Result<std::unique_ptr<Issuer>> IssuerRegistry::Build(config::IssuerConfig& cfg,
                                                      const std::string& data_dir,
                                                      const Clock* clock,
                                                      net::HttpClient* http) const {
  auto it = factories_.find(cfg.type);
  if (it == factories_.end()) {
    return std::unexpected(cfg.section.Err(
        "type", "issuer type \"" + cfg.type + "\" is not available in this build"));
  }
  IssuerContext ctx{cfg.name, &cfg.section, data_dir, clock, http};
  return it->second(ctx);
}

}  // namespace jitbroker::issuers

namespace jitbroker {

std::string_view RevocabilityName(Revocability r) {
  switch (r) {
    case Revocability::kRevocable:
      return "revocable";
    case Revocability::kDenyByCondition:
      return "deny_by_condition";
    case Revocability::kExpiryOnly:
      return "expiry_only";
  }
  return "expiry_only";
}

std::string_view RevokeOutcomeName(RevokeOutcomeKind k) {
  switch (k) {
    case RevokeOutcomeKind::kRevoked:
      return "revoked";
    case RevokeOutcomeKind::kDenyInstalled:
      return "deny_installed";
    case RevokeOutcomeKind::kExpiryOnly:
      return "expiry_only";
  }
  return "expiry_only";
}

}  // namespace jitbroker
