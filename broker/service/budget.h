// Session budgets (docs/concepts.md "Session budgets"): what one session has
// consumed of its budget, and whether one more grant would cross a limit.
// Pure functions of the session's grant records; the grant pipeline
// (grant_pipeline.cc) calls them under the session's budget lock, so
// concurrent requests of one process never overshoot.
//
// What counts: a grant that was allowed or went pending (a denied request
// consumes nothing; an approval denied or left to expire still counted when
// it was asked). A live credential is one minted (or being minted) and not
// yet expired or revoked.
//
// Thread-safety: plain values and pure functions.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <set>
#include <span>
#include <string>

#include <nlohmann/json.hpp>

#include "jitbroker/clock.h"
#include "jitbroker/policy.h"
#include "jitbroker/store.h"

namespace jitbroker::service {

struct BudgetUse {
  int64_t grants = 0;
  std::set<std::string> resources;
  std::map<Tier, int64_t> grants_per_tier;
  int64_t live_credentials = 0;
  int64_t credential_seconds = 0;  // sum of the counted grants' ttl_seconds

  // {grants, resources, grants_per_tier: {tier: N}, live_credentials,
  // credential_seconds} (resources as a count).
  nlohmann::json ToJson() const;
};

// Whether grant `g` consumes budget (it was allowed or went pending).
bool CountsAgainstBudget(const GrantRecord& g);
// Whether `g` is a live credential at `now`.
bool IsLiveCredential(const GrantRecord& g, TimePoint now);
BudgetUse CountBudgetUse(std::span<const GrantRecord> grants, TimePoint now);

// One more grant, as decided: its resource, tier and granted TTL.
struct BudgetRequest {
  std::string resource;
  Tier tier = Tier::kRead;
  int64_t ttl_seconds = 0;
  // It mints now (an allowed grant, or an approved one collected), so it
  // adds a live credential; a request that goes pending does not yet.
  bool mints = true;
  // Collecting an approved grant: it was counted when it was asked, so only
  // the live-credential limit is checked.
  bool collecting = false;
};

struct BudgetRefusal {
  std::string limit;   // "max_grants", "max_grants_per_tier.write", …
  std::string reason;  // "session budget: max_grants 10 reached"
};

// The first limit of `budget` that `req` would cross given `use`, if any.
std::optional<BudgetRefusal> CheckBudget(const SessionBudget& budget, const BudgetUse& use,
                                         const BudgetRequest& req);

}  // namespace jitbroker::service
