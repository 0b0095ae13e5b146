#include "issuers/registry.h"

#include <algorithm>
#include <string>
#include <utility>

namespace jitbroker::issuers {

Status IssuerRegistry::Register(std::string type, IssuerFactory factory) {
  if (type.empty()) {
    return std::unexpected(InvalidArgument("invalid_issuer_type", "an issuer type needs a name"));
  }
  if (!factory.validate || !factory.create) {
    return std::unexpected(InvalidArgument(
        "invalid_issuer_type", "issuer type " + type + " needs both validate and create"));
  }
  if (factories_.contains(type)) {
    return std::unexpected(
        AlreadyExists("duplicate_issuer_type", "issuer type " + type + " is already registered"));
  }
  factories_.emplace(std::move(type), std::move(factory));
  return OkStatus();
}

bool IssuerRegistry::Has(std::string_view type) const { return factories_.contains(type); }

std::vector<std::string> IssuerRegistry::Types() const {
  std::vector<std::string> out;
  out.reserve(factories_.size());
  for (const auto& [type, factory] : factories_) {
    out.push_back(type);
  }
  return out;
}

Result<const IssuerFactory*> IssuerRegistry::Find(std::string_view type,
                                                  const IssuerContext& ctx) const {
  if (auto it = factories_.find(type); it != factories_.end()) {
    return &it->second;
  }
  std::string known;
  for (const auto& [name, factory] : factories_) {
    known += (known.empty() ? "" : ", ") + name;
  }
  std::string what = "unknown issuer type \"" + std::string(type) + "\" (this build has " +
                     (known.empty() ? std::string("none") : known) + ")";
  if (ctx.config == nullptr) {
    return std::unexpected(
        InvalidArgument("invalid_config", "issuers." + ctx.name + ".type: " + what));
  }
  return std::unexpected(ctx.config->Err("type", what));
}

Result<std::unique_ptr<IssuerSpec>> IssuerRegistry::Validate(std::string_view type,
                                                             IssuerContext& ctx) const {
  JITBROKER_ASSIGN_OR_RETURN(const IssuerFactory* factory, Find(type, ctx));
  return factory->validate(ctx);
}

Result<std::unique_ptr<Issuer>> IssuerRegistry::Create(std::string_view type,
                                                       IssuerContext& ctx) const {
  JITBROKER_ASSIGN_OR_RETURN(const IssuerFactory* factory, Find(type, ctx));
  return factory->create(ctx);
}

}  // namespace jitbroker::issuers
