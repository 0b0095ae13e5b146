// Session budgets: counting and checking (broker/service/budget.h).
#include "broker/service/budget.h"

#include <algorithm>
#include <string>

namespace jitbroker::service {

nlohmann::json BudgetUse::ToJson() const {
  nlohmann::json tiers = nlohmann::json::object();
  for (const auto& [tier, n] : grants_per_tier) {
    tiers[std::string(TierName(tier))] = n;
  }
  return {{"grants", grants},
          {"resources", static_cast<int64_t>(resources.size())},
          {"grants_per_tier", std::move(tiers)},
          {"live_credentials", live_credentials},
          {"credential_seconds", credential_seconds}};
}

bool CountsAgainstBudget(const GrantRecord& g) {
  // Denied at request time is the only outcome that consumed nothing; a
  // grant that went pending keeps its approval id whatever became of it.
  return g.state != GrantState::kDenied || !g.approval_id.empty();
}

bool IsLiveCredential(const GrantRecord& g, TimePoint now) {
  if (g.state == GrantState::kMinting) {
    return true;
  }
  return g.state == GrantState::kActive && (!g.expires_at || *g.expires_at > now);
}

BudgetUse CountBudgetUse(std::span<const GrantRecord> grants, TimePoint now) {
  BudgetUse use;
  for (const GrantRecord& g : grants) {
    if (!CountsAgainstBudget(g)) {
      continue;
    }
    ++use.grants;
    use.resources.insert(g.resource);
    if (std::optional<Tier> t = ParseTier(g.tier)) {
      ++use.grants_per_tier[*t];
    }
    use.credential_seconds += g.ttl_seconds;
    if (IsLiveCredential(g, now)) {
      ++use.live_credentials;
    }
  }
  return use;
}

namespace {

BudgetRefusal Reached(std::string limit, int64_t n) {
  std::string reason = "session budget: " + limit + " " + std::to_string(n) + " reached";
  return BudgetRefusal{std::move(limit), std::move(reason)};
}

}  // namespace

std::optional<BudgetRefusal> CheckBudget(const SessionBudget& budget, const BudgetUse& use,
                                         const BudgetRequest& req) {
  if (req.mints && budget.max_live_credentials &&
      use.live_credentials >= *budget.max_live_credentials) {
    return Reached("max_live_credentials", *budget.max_live_credentials);
  }
  if (req.collecting) {
    return std::nullopt;
  }
  if (budget.max_grants && use.grants >= *budget.max_grants) {
    return Reached("max_grants", *budget.max_grants);
  }
  if (budget.max_resources && !use.resources.contains(req.resource) &&
      static_cast<int64_t>(use.resources.size()) >= *budget.max_resources) {
    return Reached("max_resources", *budget.max_resources);
  }
  if (auto it = budget.max_grants_per_tier.find(req.tier); it != budget.max_grants_per_tier.end()) {
    auto used = use.grants_per_tier.find(req.tier);
    if (used != use.grants_per_tier.end() && used->second >= it->second) {
      return Reached("max_grants_per_tier." + std::string(TierName(req.tier)), it->second);
    }
  }
  if (budget.max_credential_seconds &&
      use.credential_seconds + req.ttl_seconds > *budget.max_credential_seconds) {
    // Never shortened to fit: the agent asks again with a TTL that does.
    const int64_t max = *budget.max_credential_seconds;
    return BudgetRefusal{"max_credential_seconds",
                         "session budget: max_credential_seconds " + std::to_string(max) +
                             " would be exceeded (" + std::to_string(use.credential_seconds) +
                             " used, " + std::to_string(req.ttl_seconds) + " requested, " +
                             std::to_string(std::max<int64_t>(0, max - use.credential_seconds)) +
                             " left)"};
  }
  return std::nullopt;
}

}  // namespace jitbroker::service
