// IssuerRegistry: the issuer types of this build, by type name. Factories
// (jitbroker/issuer.h IssuerFactory) are registered explicitly
// (issuers/builtin.cc), never by static initialisers; registering a type
// twice is an error, so a second factory can never silently replace the
// first.
//
// Thread-safety: register everything before use; Validate and Create are
// then safe from one thread at a time (start-up, reload, config check).
#pragma once

#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "jitbroker/issuer.h"

namespace jitbroker::issuers {

// Kept for issuers and tests written against the registry's names.
using ::jitbroker::IssuerContext;
using ::jitbroker::IssuerFactory;

class IssuerRegistry {
 public:
  // Errors: kAlreadyExists "duplicate_issuer_type" when `type` is already
  // registered; kInvalidArgument for an empty type or a factory without
  // validate or create.
  [[nodiscard]] Status Register(std::string type, IssuerFactory factory);

  bool Has(std::string_view type) const;
  std::vector<std::string> Types() const;  // sorted

  // The factory of `type` applied to `ctx`. Errors: an unknown type is an
  // "invalid_config" error at ctx.config's `type` key, naming the types
  // this build has; otherwise what the factory says.
  [[nodiscard]] Result<std::unique_ptr<IssuerSpec>> Validate(std::string_view type,
                                                             IssuerContext& ctx) const;
  [[nodiscard]] Result<std::unique_ptr<Issuer>> Create(std::string_view type,
                                                       IssuerContext& ctx) const;

 private:
  Result<const IssuerFactory*> Find(std::string_view type, const IssuerContext& ctx) const;

  std::map<std::string, IssuerFactory, std::less<>> factories_;
};

// Registers the built-in types: jwt and github_app.
[[nodiscard]] Status RegisterBuiltinIssuers(IssuerRegistry& registry);

// A registry holding the built-in types (what the daemon and jitctl use).
const IssuerRegistry& BuiltinIssuers();

}  // namespace jitbroker::issuers
