// The out-of-line parts of the issuer seam (include/jitbroker/issuer.h):
// names of its enums and IssuerSpec's defaults. They live in the lowest
// layer so that every issuer type can use them without depending on the
// registry (docs/architecture.md, "Layering").
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "jitbroker/issuer.h"

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

Result<NarrowedScope> IssuerSpec::NarrowScope(
    const GrantRequest& grant, const std::optional<std::vector<std::string>>& requested) const {
  if (requested && !requested->empty()) {
    return std::unexpected(PermissionDenied(
        "scope_not_granted", "scope \"" + requested->front() +
                                 "\" is not part of what the trust policy grants (issuer " +
                                 Describe().name + " does not narrow its credentials by scope)"));
  }
  NarrowedScope out;
  out.scope = grant.scope;
  return out;
}

Status IssuerSpec::CheckTrustGrant(const GrantRequest& grant) const {
  JITBROKER_ASSIGN_OR_RETURN(Tier tier, ImpliedTier(grant));
  (void)tier;
  JITBROKER_ASSIGN_OR_RETURN(std::vector<std::string> items, ScopeItems(grant));
  (void)items;
  JITBROKER_ASSIGN_OR_RETURN(NarrowedScope narrowed, NarrowScope(grant, std::nullopt));
  (void)narrowed;
  return OkStatus();
}

}  // namespace jitbroker
