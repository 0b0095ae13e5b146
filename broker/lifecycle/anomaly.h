// Anomaly detection (docs/configuration.md "anomaly"): configured rules watch each session's
// grant decisions and say when one triggers; the caller (the broker service)
// then revokes the session and audits the trigger with its evidence.
//
// Rules (the `anomaly:` list of the config, docs/configuration.md):
//   denied_burst  `count` denied decisions (pending does not count) within
//                 `window_seconds`;
//   out_of_scope  `count` decisions denied for leaving the task scope (codes
//                 out_of_scope, branch_not_in_scope, environment_not_in_scope,
//                 scope_not_in_task), within
//                 `window_seconds` when set, else over the whole session;
//   tier_chain    the tiers of `sequence` requested in that order (not
//                 necessarily adjacent; any result: asking is the signal), the
//                 first to the last within `window_seconds`;
//   rate          more than `max_per_minute` grant requests (any result) within
//                 any sliding 60 s;
//   budget_exceeded  `count` requests denied for crossing the session's
//                 budget (code budget_exceeded), within `window_seconds` when
//                 set, else over the whole session;
//   force_push    a ref update the git proxy forwarded turned out to rewrite
//                 history (docs/proxy.md, "Force pushes"): reported by the
//                 proxy, not observed in decisions; triggers at once.
// "Within a window of W seconds" means the observations involved span less
// than W: newest.at - oldest.at < W. Times come only from the observations (no
// clock reads), so the detector is deterministic. Observations may arrive
// slightly out of time order (concurrent requests): counted rules keep the
// newest observations by `at`; tier_chain matches the sequence in arrival order
// and measures its span as max(at) - min(at) of the matched observations.
//
// Memory: per session the detector keeps, per rule, only what that rule's
// threshold needs (count, max_per_minute + 1, or the partial matches of a
// sequence), so a session never holds more than EventCapacity() observations
// however many it sends. Sessions are dropped by Forget() or when they have not
// been observed for `idle_ttl`, measured against the newest observation time
// seen by the detector (checked lazily, amortised O(1) per Observe).
//
// Thread-safety: AnomalyDetector is safe to use from any number of threads; the
// rules are immutable after construction.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include <nlohmann/json.hpp>

#include "broker/config/config.h"
#include "jitbroker/clock.h"
#include "jitbroker/policy.h"
#include "jitbroker/result.h"

namespace jitbroker::lifecycle {

struct AnomalyRule {
  enum class Kind { kDeniedBurst, kOutOfScope, kTierChain, kRate, kForcePush, kBudgetExceeded };
  Kind kind = Kind::kDeniedBurst;
  // "anomaly[2]:denied_burst" (index + kind) unless the entry sets `name:`.
  std::string name;
  // denied_burst, out_of_scope, budget_exceeded: trigger when count is reached.
  int64_t count = 0;
  // denied_burst (required), tier_chain (required), out_of_scope and
  // budget_exceeded (optional: absent = whole session).
  std::optional<Seconds> window;
  // tier_chain: tiers requested in this order (not necessarily adjacent) within window.
  std::vector<Tier> sequence;
  // rate: more than this many grant requests (any result) in any sliding 60 s → trigger.
  int64_t max_per_minute = 0;
  std::string action = "revoke_session";  // only value supported
};

// "denied_burst", "out_of_scope", "tier_chain", "rate", "force_push",
// "budget_exceeded".
std::string_view AnomalyKindName(AnomalyRule::Kind kind);

// Bounds enforced by the parser.
inline constexpr int64_t kMaxAnomalyCount = 1000;            // count
inline constexpr int64_t kMaxAnomalyPerMinute = 1000;        // max_per_minute
inline constexpr int64_t kMaxAnomalyWindowSeconds = 604800;  // window_seconds (7 days)
inline constexpr size_t kMaxAnomalySequence = 16;            // sequence length
inline constexpr size_t kMaxAnomalyRules = 64;               // entries in `anomaly:`

// Parses the `anomaly:` sequence (absent → empty). Entries: {rule:
// denied_burst|out_of_scope|tier_chain|rate|budget_exceeded, count, window_seconds, sequence,
// max_per_minute, action, name}; unknown keys, keys the rule does not use,
// missing required fields, wrong types, unknown tiers, sequence shorter than 2,
// count < 1, duplicate rule names → kInvalidArgument "invalid_config" errors
// naming file:line:key via Section::Err.
[[nodiscard]] Result<std::vector<AnomalyRule>> ParseAnomalyRules(
    config::Section* anomaly);  // nullptr = none
// Same from YAML text, for tests and the reload path: parses `text` as the
// value of `anomaly:` (empty or null text = no rules); `file_name` appears in
// error messages.
[[nodiscard]] Result<std::vector<AnomalyRule>> ParseAnomalyRulesText(std::string_view text,
                                                                     const std::string& file_name);

struct DecisionObservation {
  TimePoint at;
  Tier tier = Tier::kRead;
  DecisionResult result = DecisionResult::kDeny;  // from include/jitbroker/policy.h
  std::string code;                               // decision code, e.g. "out_of_scope"
  std::string grant_id;
};

struct AnomalyTrigger {
  std::string rule;  // AnomalyRule::name
  std::string kind;  // "denied_burst", …
  // What triggered it: {rule, kind, session_id, window_seconds (null = whole
  // session), count | max_per_minute | sequence, observations: [{grant_id, at
  // (RFC 3339), tier, result, code}] (the matched observations: by time for
  // counted rules, in sequence order for tier_chain), first_at, last_at}.
  nlohmann::json evidence;
};

class AnomalyDetector {
 public:
  struct Options {
    // Per-session bound on stored observations. Raised to what the rules need
    // (RequiredEvents) when smaller: a store smaller than a threshold would
    // make that rule blind.
    size_t max_events_per_session = 1024;
    // A session not observed for this long (relative to the newest observation
    // time seen) is dropped.
    Seconds idle_ttl = std::chrono::hours(24);
  };

  explicit AnomalyDetector(std::vector<AnomalyRule> rules);
  AnomalyDetector(std::vector<AnomalyRule> rules, Options options);
  ~AnomalyDetector();
  AnomalyDetector(const AnomalyDetector&) = delete;
  AnomalyDetector& operator=(const AnomalyDetector&) = delete;

  // Records the observation and returns the first rule (in config order) that
  // triggers, if any. A rule that triggered for a session does not trigger
  // again for it (the session is being revoked).
  std::optional<AnomalyTrigger> Observe(const std::string& session_id,
                                        const DecisionObservation& obs);
  void Forget(const std::string& session_id);
  size_t TrackedSessions() const;
  const std::vector<AnomalyRule>& rules() const;

  // The most observations one session can hold.
  size_t EventCapacity() const { return capacity_; }
  // Observations the rules need to keep per session (sum over rules).
  static size_t RequiredEvents(const std::vector<AnomalyRule>& rules);

  // Observations currently stored for `session_id` (0 when not tracked).
  size_t StoredEventsForTesting(const std::string& session_id) const;

 private:
  struct SessionState;

  void SweepIdleLocked();

  const std::vector<AnomalyRule> rules_;
  const Options options_;
  const size_t capacity_;

  mutable std::mutex mu_;
  std::unordered_map<std::string, std::unique_ptr<SessionState>> sessions_;  // guarded by mu_
  std::optional<TimePoint> newest_at_;                                       // guarded by mu_
  size_t observes_since_sweep_ = 0;                                          // guarded by mu_
};

}  // namespace jitbroker::lifecycle
