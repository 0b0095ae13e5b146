// Anomaly rules: parsing of `anomaly:` and the per-session detector (anomaly.h).
#include "broker/lifecycle/anomaly.h"

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <exception>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <yaml-cpp/yaml.h>
#include <nlohmann/json.hpp>

#include "broker/common/time_util.h"
#include "broker/config/config.h"
#include "jitbroker/policy.h"
#include "jitbroker/result.h"

namespace jitbroker::lifecycle {

namespace {

using Kind = AnomalyRule::Kind;

constexpr std::string_view kKindList =
    "denied_burst, out_of_scope, tier_chain, rate, budget_exceeded";
constexpr std::string_view kRevokeSession = "revoke_session";
constexpr size_t kMaxNameLength = 128;
// The rate rule's sliding window.
constexpr Seconds kRateWindow{60};
// Idle sessions are looked for at most once per this many observations (or
// once per tracked session, whichever is larger), so sweeping is amortised O(1).
constexpr size_t kMinSweepInterval = 64;

struct KindRow {
  Kind kind;
  std::string_view name;
};
constexpr KindRow kKinds[] = {
    {Kind::kDeniedBurst, "denied_burst"}, {Kind::kOutOfScope, "out_of_scope"},
    {Kind::kTierChain, "tier_chain"},     {Kind::kRate, "rate"},
    {Kind::kForcePush, "force_push"},     {Kind::kBudgetExceeded, "budget_exceeded"}};

std::optional<Kind> ParseKind(std::string_view name) {
  for (const KindRow& row : kKinds) {
    if (row.name == name) {
      return row.kind;
    }
  }
  return std::nullopt;
}

// The keys besides rule/action/name that each kind reads; any other of them is
// an error, so a misplaced threshold never silently does nothing.
constexpr std::string_view kThresholdKeys[] = {"count", "window_seconds", "sequence",
                                               "max_per_minute"};

bool KindUsesKey(Kind kind, std::string_view key) {
  switch (kind) {
    case Kind::kDeniedBurst:
    case Kind::kOutOfScope:
    case Kind::kBudgetExceeded:
      return key == "count" || key == "window_seconds";
    case Kind::kTierChain:
      return key == "sequence" || key == "window_seconds";
    case Kind::kRate:
      return key == "max_per_minute";
    case Kind::kForcePush:
      return false;
  }
  return false;
}

// Present with a non-null value (null means absent, as everywhere in the config).
bool HasValue(const config::Section& s, std::string_view key) {
  try {
    const YAML::Node& map = s.node();
    if (!map.IsMap()) {
      return false;
    }
    for (auto it = map.begin(); it != map.end(); ++it) {
      if (it->first.IsScalar() && it->first.Scalar() == key) {
        return it->second.IsDefined() && !it->second.IsNull();
      }
    }
  } catch (...) {
  }
  return false;
}

bool IsPrintable(std::string_view s) {
  return std::all_of(s.begin(), s.end(), [](char c) {
    auto u = static_cast<unsigned char>(c);
    return u >= 0x20 && u != 0x7f;
  });
}

std::string Quoted(std::string_view s) {
  constexpr size_t kMaxEcho = 64;
  std::string out = "\"";
  out += s.size() > kMaxEcho ? std::string(s.substr(0, kMaxEcho)) + "..." : std::string(s);
  out += "\"";
  return out;
}

Result<int64_t> RequiredInt(config::Section& s, std::string_view key, int64_t min, int64_t max) {
  JITBROKER_ASSIGN_OR_RETURN(std::optional<int64_t> v, s.OptInt(key, min, max));
  if (!v) {
    return std::unexpected(s.Err(key, "is required"));
  }
  return *v;
}

Result<AnomalyRule> ParseEntry(config::Section& s, size_t index) {
  for (std::string_view key : {"rule", "action", "name"}) {
    s.MarkKnown(key);
  }
  for (std::string_view key : kThresholdKeys) {
    s.MarkKnown(key);
  }
  JITBROKER_RETURN_IF_ERROR(s.CheckNoUnknownKeys());

  AnomalyRule rule;
  JITBROKER_ASSIGN_OR_RETURN(std::string kind_text, s.String("rule"));
  std::optional<Kind> kind = ParseKind(kind_text);
  if (!kind) {
    return std::unexpected(s.Err(
        "rule", "unknown rule " + Quoted(kind_text) + " (one of " + std::string(kKindList) + ")"));
  }
  rule.kind = *kind;
  for (std::string_view key : kThresholdKeys) {
    if (HasValue(s, key) && !KindUsesKey(rule.kind, key)) {
      return std::unexpected(s.Err(key, "is not used by rule " + kind_text));
    }
  }

  JITBROKER_ASSIGN_OR_RETURN(std::optional<std::string> name, s.OptString("name"));
  if (name) {
    if (name->empty()) {
      return std::unexpected(s.Err("name", "must not be empty"));
    }
    if (name->size() > kMaxNameLength || !IsPrintable(*name)) {
      return std::unexpected(s.Err("name", "must be at most 128 printable characters"));
    }
    rule.name = std::move(*name);
  } else {
    rule.name = "anomaly[" + std::to_string(index) + "]:" + kind_text;
  }

  JITBROKER_ASSIGN_OR_RETURN(std::optional<std::string> action, s.OptString("action"));
  if (action && *action != kRevokeSession) {
    return std::unexpected(
        s.Err("action", "unknown action " + Quoted(*action) + " (only revoke_session)"));
  }

  JITBROKER_ASSIGN_OR_RETURN(std::optional<int64_t> window,
                             s.OptInt("window_seconds", 1, kMaxAnomalyWindowSeconds));
  if (window) {
    rule.window = Seconds(*window);
  }

  switch (rule.kind) {
    case Kind::kDeniedBurst:
    case Kind::kOutOfScope:
    case Kind::kBudgetExceeded: {
      JITBROKER_ASSIGN_OR_RETURN(rule.count, RequiredInt(s, "count", 1, kMaxAnomalyCount));
      if (rule.kind == Kind::kDeniedBurst && !rule.window) {
        return std::unexpected(s.Err("window_seconds", "is required"));
      }
      break;
    }
    case Kind::kTierChain: {
      JITBROKER_ASSIGN_OR_RETURN(std::vector<std::string> names, s.StringList("sequence"));
      if (!HasValue(s, "sequence")) {
        return std::unexpected(s.Err("sequence", "is required"));
      }
      if (names.size() < 2) {
        return std::unexpected(s.Err("sequence", "must list at least 2 tiers"));
      }
      if (names.size() > kMaxAnomalySequence) {
        return std::unexpected(s.Err(
            "sequence", "must list at most " + std::to_string(kMaxAnomalySequence) + " tiers"));
      }
      for (const std::string& n : names) {
        std::optional<Tier> tier = ParseTier(n);
        if (!tier) {
          return std::unexpected(s.Err(
              "sequence", "unknown tier " + Quoted(n) +
                              " (one of read, write, pr, merge_deploy, secret, destructive)"));
        }
        rule.sequence.push_back(*tier);
      }
      if (!rule.window) {
        return std::unexpected(s.Err("window_seconds", "is required"));
      }
      break;
    }
    case Kind::kRate: {
      JITBROKER_ASSIGN_OR_RETURN(rule.max_per_minute,
                                 RequiredInt(s, "max_per_minute", 1, kMaxAnomalyPerMinute));
      break;
    }
    case Kind::kForcePush:
      break;  // no threshold: the proxy's report triggers it
  }
  return rule;
}

// ---------------------------------------------------------------------------
// Detection helpers

int64_t EffectiveCount(const AnomalyRule& r) { return std::max<int64_t>(r.count, 1); }

// How many observations a counted rule (every kind but tier_chain) keeps.
size_t RingLimit(const AnomalyRule& r) {
  if (r.kind == Kind::kRate) {
    return static_cast<size_t>(std::max<int64_t>(r.max_per_minute, 0)) + 1;
  }
  return static_cast<size_t>(EffectiveCount(r));
}

std::optional<Seconds> RuleWindow(const AnomalyRule& r) {
  if (r.kind == Kind::kRate) {
    return kRateWindow;
  }
  return r.window;
}

bool Relevant(const AnomalyRule& r, const DecisionObservation& o) {
  switch (r.kind) {
    case Kind::kDeniedBurst:
      return o.result == DecisionResult::kDeny;
    case Kind::kOutOfScope:
      // Every denial for asking outside the task scope: its resources and
      // max_tier, its branches and environments, its scope items.
      return o.code == "out_of_scope" || o.code == "branch_not_in_scope" ||
             o.code == "environment_not_in_scope" || o.code == "scope_not_in_task";
    case Kind::kBudgetExceeded:
      // A request that would cross the session's budget (docs/concepts.md,
      // "Session budgets").
      return o.code == "budget_exceeded";
    case Kind::kTierChain:
      return std::find(r.sequence.begin(), r.sequence.end(), o.tier) != r.sequence.end();
    case Kind::kRate:
      return true;
    case Kind::kForcePush:
      return false;  // reported by the proxy (BrokerService::ReportForcePush)
  }
  return false;
}

// Non-negative span between two times (observations may arrive out of order).
TimePoint::duration Span(TimePoint a, TimePoint b) { return a >= b ? a - b : b - a; }

bool WithinWindow(TimePoint::duration span, const std::optional<Seconds>& window) {
  return !window || span < *window;
}

nlohmann::json ObservationJson(const DecisionObservation& o) {
  return nlohmann::json{{"grant_id", o.grant_id},
                        {"at", FormatRfc3339(o.at)},
                        {"tier", std::string(TierName(o.tier))},
                        {"result", std::string(DecisionResultName(o.result))},
                        {"code", o.code}};
}

}  // namespace

std::string_view AnomalyKindName(AnomalyRule::Kind kind) {
  for (const KindRow& row : kKinds) {
    if (row.kind == kind) {
      return row.name;
    }
  }
  return "unknown";
}

Result<std::vector<AnomalyRule>> ParseAnomalyRules(config::Section* anomaly) {
  std::vector<AnomalyRule> rules;
  if (anomaly == nullptr) {
    return rules;
  }
  auto file = std::make_shared<const std::string>(anomaly->file());
  std::vector<config::Section> entries;
  try {
    const YAML::Node& node = anomaly->node();
    if (!node.IsDefined() || node.IsNull()) {
      return rules;
    }
    if (!node.IsSequence()) {
      return std::unexpected(anomaly->Err("", "must be a list"));
    }
    if (node.size() > kMaxAnomalyRules) {
      return std::unexpected(
          anomaly->Err("", "must hold at most " + std::to_string(kMaxAnomalyRules) + " rules"));
    }
    size_t i = 0;
    for (auto it = node.begin(); it != node.end(); ++it, ++i) {
      entries.emplace_back(*it, file, anomaly->path() + "[" + std::to_string(i) + "]");
      if (!it->IsMap()) {
        return std::unexpected(entries.back().Err("", "must be a mapping"));
      }
    }
  } catch (const std::exception&) {
    return std::unexpected(anomaly->Err("", "malformed list"));
  }

  std::set<std::string> names;
  for (size_t i = 0; i < entries.size(); ++i) {
    JITBROKER_ASSIGN_OR_RETURN(AnomalyRule rule, ParseEntry(entries[i], i));
    if (!names.insert(rule.name).second) {
      return std::unexpected(entries[i].Err(entries[i].Has("name") ? "name" : "",
                                            "duplicate rule name " + Quoted(rule.name)));
    }
    rules.push_back(std::move(rule));
  }
  return rules;
}

Result<std::vector<AnomalyRule>> ParseAnomalyRulesText(std::string_view text,
                                                       const std::string& file_name) {
  YAML::Node node;
  try {
    node = YAML::Load(std::string(text));
  } catch (const YAML::Exception& e) {
    int line = e.mark.line >= 0 ? e.mark.line + 1 : 1;
    return std::unexpected(InvalidArgument(
        "invalid_config",
        file_name + ":" + std::to_string(line) + ": anomaly: invalid YAML: " + e.msg));
  } catch (const std::exception&) {
    return std::unexpected(
        InvalidArgument("invalid_config", file_name + ":1: anomaly: invalid YAML"));
  }
  config::Section section(node, std::make_shared<const std::string>(file_name), "anomaly");
  return ParseAnomalyRules(&section);
}

// ---------------------------------------------------------------------------
// Detector

namespace {

// A partial tier_chain match: the observations matched so far, in arrival order.
struct Partial {
  std::vector<DecisionObservation> chain;
  TimePoint min_at;
  TimePoint max_at;

  void Add(const DecisionObservation& o) {
    if (chain.empty()) {
      min_at = o.at;
      max_at = o.at;
    } else {
      min_at = std::min(min_at, o.at);
      max_at = std::max(max_at, o.at);
    }
    chain.push_back(o);
  }
  // The better of two partials of the same length: the later start leaves the
  // most room for the rest of the sequence; then the tighter span.
  bool BetterThan(const Partial& other) const {
    if (min_at != other.min_at) {
      return min_at > other.min_at;
    }
    return max_at <= other.max_at;
  }
};

struct RuleState {
  bool triggered = false;
  // Counted rules: the newest observations by `at`, ascending, at most RingLimit.
  std::deque<DecisionObservation> ring;
  // tier_chain: partials[j] is the best match of the first j tiers (1 ≤ j < k).
  std::vector<std::optional<Partial>> partials;

  size_t Stored() const {
    size_t n = ring.size();
    for (const std::optional<Partial>& p : partials) {
      if (p) {
        n += p->chain.size();
      }
    }
    return n;
  }
  void Clear() {
    ring.clear();
    ring.shrink_to_fit();
    partials.clear();
    partials.shrink_to_fit();
  }
};

// Adds `o` to a counted rule's ring; returns the matched observations when the
// rule's threshold is met.
std::optional<std::vector<DecisionObservation>> StepCounted(const AnomalyRule& r, RuleState& st,
                                                            const DecisionObservation& o) {
  const size_t limit = RingLimit(r);
  auto pos = st.ring.end();
  while (pos != st.ring.begin() && std::prev(pos)->at > o.at) {
    --pos;
  }
  st.ring.insert(pos, o);
  while (st.ring.size() > limit) {
    st.ring.pop_front();
  }
  if (st.ring.size() < limit) {
    return std::nullopt;
  }
  if (!WithinWindow(Span(st.ring.back().at, st.ring.front().at), RuleWindow(r))) {
    return std::nullopt;
  }
  return std::vector<DecisionObservation>(st.ring.begin(), st.ring.end());
}

// Advances tier_chain matching by one observation (arrival order); returns the
// matched chain when the whole sequence is matched within the window.
std::optional<std::vector<DecisionObservation>> StepChain(const AnomalyRule& r, RuleState& st,
                                                          const DecisionObservation& o) {
  const size_t k = r.sequence.size();
  if (k == 0) {
    return std::nullopt;
  }
  if (k == 1) {
    return std::vector<DecisionObservation>{o};
  }
  st.partials.resize(k);  // index 0 unused
  std::optional<std::vector<DecisionObservation>> complete;
  // Longest prefixes first, so one observation extends each partial at most
  // once and is never used twice in one chain.
  for (size_t j = k - 1; j >= 1; --j) {
    if (r.sequence[j] != o.tier || !st.partials[j]) {
      continue;
    }
    Partial cand = *st.partials[j];
    cand.Add(o);
    if (!WithinWindow(cand.max_at - cand.min_at, r.window)) {
      continue;
    }
    if (j + 1 == k) {
      complete = std::move(cand.chain);
    } else if (!st.partials[j + 1] || cand.BetterThan(*st.partials[j + 1])) {
      st.partials[j + 1] = std::move(cand);
    }
  }
  if (r.sequence[0] == o.tier) {
    Partial p;
    p.Add(o);
    if (!st.partials[1] || p.BetterThan(*st.partials[1])) {
      st.partials[1] = std::move(p);
    }
  }
  return complete;
}

nlohmann::json Evidence(const AnomalyRule& r, const std::string& session_id,
                        const std::vector<DecisionObservation>& matched) {
  nlohmann::json ev = nlohmann::json::object();
  ev["rule"] = r.name;
  ev["kind"] = std::string(AnomalyKindName(r.kind));
  ev["session_id"] = session_id;
  std::optional<Seconds> window = RuleWindow(r);
  ev["window_seconds"] = window ? nlohmann::json(window->count()) : nlohmann::json(nullptr);
  switch (r.kind) {
    case Kind::kDeniedBurst:
    case Kind::kOutOfScope:
    case Kind::kBudgetExceeded:
      ev["count"] = EffectiveCount(r);
      break;
    case Kind::kTierChain: {
      nlohmann::json seq = nlohmann::json::array();
      for (Tier t : r.sequence) {
        seq.push_back(std::string(TierName(t)));
      }
      ev["sequence"] = std::move(seq);
      break;
    }
    case Kind::kRate:
      ev["max_per_minute"] = r.max_per_minute;
      break;
    case Kind::kForcePush:
      break;
  }
  nlohmann::json list = nlohmann::json::array();
  std::optional<TimePoint> first;
  std::optional<TimePoint> last;
  for (const DecisionObservation& o : matched) {
    list.push_back(ObservationJson(o));
    first = first ? std::min(*first, o.at) : o.at;
    last = last ? std::max(*last, o.at) : o.at;
  }
  ev["observations"] = std::move(list);
  ev["first_at"] = first ? nlohmann::json(FormatRfc3339(*first)) : nlohmann::json(nullptr);
  ev["last_at"] = last ? nlohmann::json(FormatRfc3339(*last)) : nlohmann::json(nullptr);
  return ev;
}

}  // namespace

struct AnomalyDetector::SessionState {
  TimePoint last_at;
  std::vector<RuleState> rules;
};

AnomalyDetector::AnomalyDetector(std::vector<AnomalyRule> rules)
    : AnomalyDetector(std::move(rules), Options{}) {}

AnomalyDetector::AnomalyDetector(std::vector<AnomalyRule> rules, Options options)
    : rules_(std::move(rules)),
      options_(options),
      capacity_(std::max(options.max_events_per_session, RequiredEvents(rules_))) {}

AnomalyDetector::~AnomalyDetector() = default;

size_t AnomalyDetector::RequiredEvents(const std::vector<AnomalyRule>& rules) {
  size_t total = 0;
  for (const AnomalyRule& r : rules) {
    if (r.kind == Kind::kTierChain) {
      // partials[j] holds j observations, 1 ≤ j < k.
      size_t k = r.sequence.size();
      total += k >= 2 ? k * (k - 1) / 2 : 0;
    } else {
      total += RingLimit(r);
    }
  }
  return total;
}

const std::vector<AnomalyRule>& AnomalyDetector::rules() const { return rules_; }

std::optional<AnomalyTrigger> AnomalyDetector::Observe(const std::string& session_id,
                                                       const DecisionObservation& obs) {
  if (rules_.empty()) {
    return std::nullopt;
  }
  std::lock_guard<std::mutex> lock(mu_);
  if (!newest_at_ || obs.at > *newest_at_) {
    newest_at_ = obs.at;
  }
  if (++observes_since_sweep_ >= std::max(kMinSweepInterval, sessions_.size())) {
    SweepIdleLocked();
  }

  std::unique_ptr<SessionState>& slot = sessions_[session_id];
  if (slot == nullptr) {
    slot = std::make_unique<SessionState>();
    slot->last_at = obs.at;
    slot->rules.resize(rules_.size());
  }
  SessionState& session = *slot;
  session.last_at = std::max(session.last_at, obs.at);

  std::optional<AnomalyTrigger> trigger;
  for (size_t i = 0; i < rules_.size(); ++i) {
    const AnomalyRule& rule = rules_[i];
    RuleState& st = session.rules[i];
    if (st.triggered || !Relevant(rule, obs)) {
      continue;
    }
    std::optional<std::vector<DecisionObservation>> matched =
        rule.kind == Kind::kTierChain ? StepChain(rule, st, obs) : StepCounted(rule, st, obs);
    // Only the first triggering rule is reported (and retired); a later rule
    // that is also met keeps its state and reports on its next observation.
    if (matched && !trigger) {
      trigger = AnomalyTrigger{rule.name, std::string(AnomalyKindName(rule.kind)),
                               Evidence(rule, session_id, *matched)};
      st.triggered = true;
      st.Clear();
    }
  }
  return trigger;
}

void AnomalyDetector::SweepIdleLocked() {
  observes_since_sweep_ = 0;
  if (!newest_at_) {
    return;
  }
  const TimePoint newest = *newest_at_;
  for (auto it = sessions_.begin(); it != sessions_.end();) {
    if (newest - it->second->last_at >= options_.idle_ttl) {
      it = sessions_.erase(it);
    } else {
      ++it;
    }
  }
}

void AnomalyDetector::Forget(const std::string& session_id) {
  std::lock_guard<std::mutex> lock(mu_);
  sessions_.erase(session_id);
}

size_t AnomalyDetector::TrackedSessions() const {
  std::lock_guard<std::mutex> lock(mu_);
  return sessions_.size();
}

size_t AnomalyDetector::StoredEventsForTesting(const std::string& session_id) const {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = sessions_.find(session_id);
  if (it == sessions_.end()) {
    return 0;
  }
  size_t n = 0;
  for (const RuleState& st : it->second->rules) {
    n += st.Stored();
  }
  return n;
}

}  // namespace jitbroker::lifecycle
