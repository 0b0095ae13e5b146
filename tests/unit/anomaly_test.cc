// Unit tests for anomaly rules and the detector (broker/lifecycle/anomaly.h).
#include <atomic>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include <doctest/doctest.h>
#include <yaml-cpp/yaml.h>
#include <nlohmann/json.hpp>

#include "broker/config/config.h"
#include "broker/lifecycle/anomaly.h"
#include "jitbroker/clock.h"
#include "jitbroker/policy.h"

namespace jitbroker::lifecycle {
namespace {

using Kind = AnomalyRule::Kind;

const TimePoint kT0 = FromUnixSeconds(1795000000);  // 2026-11-18T11:06:40Z

std::vector<AnomalyRule> Rules(const std::string& yaml) {
  Result<std::vector<AnomalyRule>> r = ParseAnomalyRulesText(yaml, "test.yaml");
  REQUIRE_MESSAGE(r.has_value(), (r.has_value() ? "" : r.error().ToString()));
  return *r;
}

DecisionObservation Obs(int64_t sec, Tier tier, DecisionResult result, std::string code,
                        std::string grant_id = "") {
  DecisionObservation o;
  o.at = kT0 + Seconds(sec);
  o.tier = tier;
  o.result = result;
  o.code = std::move(code);
  o.grant_id = grant_id.empty() ? "grt_" + std::to_string(sec) : std::move(grant_id);
  return o;
}
DecisionObservation Deny(int64_t sec, std::string code = "tier_denied") {
  return Obs(sec, Tier::kWrite, DecisionResult::kDeny, std::move(code));
}
DecisionObservation Allow(int64_t sec, Tier tier = Tier::kRead) {
  return Obs(sec, tier, DecisionResult::kAllow, "allowed");
}
DecisionObservation Pending(int64_t sec, Tier tier = Tier::kSecret) {
  return Obs(sec, tier, DecisionResult::kPending, "approval_required");
}

// Feeds `obs` in order and returns the index of each observation that
// triggered, with the rule name.
struct Fired {
  size_t index;
  std::string rule;
};
std::vector<Fired> Feed(AnomalyDetector& d, const std::string& session,
                        const std::vector<DecisionObservation>& obs) {
  std::vector<Fired> fired;
  for (size_t i = 0; i < obs.size(); ++i) {
    std::optional<AnomalyTrigger> t = d.Observe(session, obs[i]);
    if (t) {
      fired.push_back({i, t->rule});
    }
  }
  return fired;
}

// ---------------------------------------------------------------------------
// Parsing

TEST_CASE("Anomaly: the example of docs/configuration.md parses with default names") {
  std::vector<AnomalyRule> rules = Rules(R"(
- {rule: denied_burst, count: 5, window_seconds: 60, action: revoke_session}
- {rule: tier_chain, sequence: [merge_deploy, secret], window_seconds: 300, action: revoke_session}
- {rule: out_of_scope, count: 3, action: revoke_session}
- {rule: rate, max_per_minute: 30, name: too-fast}
)");
  REQUIRE(rules.size() == 4);
  CHECK(rules[0].kind == Kind::kDeniedBurst);
  CHECK(rules[0].name == "anomaly[0]:denied_burst");
  CHECK(rules[0].count == 5);
  CHECK(rules[0].window == Seconds(60));
  CHECK(rules[0].action == "revoke_session");
  CHECK(rules[1].kind == Kind::kTierChain);
  CHECK(rules[1].name == "anomaly[1]:tier_chain");
  CHECK(rules[1].sequence == std::vector<Tier>{Tier::kMergeDeploy, Tier::kSecret});
  CHECK(rules[1].window == Seconds(300));
  CHECK(rules[2].kind == Kind::kOutOfScope);
  CHECK(rules[2].count == 3);
  CHECK_FALSE(rules[2].window.has_value());
  CHECK(rules[3].kind == Kind::kRate);
  CHECK(rules[3].name == "too-fast");
  CHECK(rules[3].max_per_minute == 30);
  CHECK(AnomalyKindName(Kind::kOutOfScope) == "out_of_scope");
}

TEST_CASE("Anomaly: absent, null and empty anomaly sections mean no rules") {
  Result<std::vector<AnomalyRule>> none = ParseAnomalyRules(nullptr);
  REQUIRE(none.has_value());
  CHECK(none->empty());
  for (const char* text : {"", "~", "[]", "# only a comment\n"}) {
    CAPTURE(text);
    Result<std::vector<AnomalyRule>> r = ParseAnomalyRulesText(text, "test.yaml");
    REQUIRE(r.has_value());
    CHECK(r->empty());
  }
  // Null threshold keys count as absent.
  std::vector<AnomalyRule> rules = Rules("- {rule: out_of_scope, count: 2, window_seconds: ~}");
  REQUIRE(rules.size() == 1);
  CHECK_FALSE(rules[0].window.has_value());
}

TEST_CASE("Anomaly: a Section over the sequence node (as Config::anomaly holds it) parses") {
  const std::string text = R"(anomaly:
  - rule: denied_burst
    count: 2
    window_seconds: 10
  - rule: rate
    max_per_minute: 0
)";
  YAML::Node doc = YAML::Load(text);
  config::Section section(doc["anomaly"], std::make_shared<const std::string>("conf.yaml"),
                          "anomaly");
  Result<std::vector<AnomalyRule>> r = ParseAnomalyRules(&section);
  REQUIRE_FALSE(r.has_value());
  CHECK(r.error().code == ErrorCode::kInvalidArgument);
  CHECK(r.error().Reason() == "invalid_config");
  CHECK(r.error().message ==
        "conf.yaml:6: anomaly[1].max_per_minute: must be an integer in [1, 1000]");
}

TEST_CASE("Anomaly: bad rules are rejected naming file:line:key") {
  struct Case {
    const char* name;
    const char* yaml;
    const char* message;
  };
  const Case cases[] = {
      {"not a list", "{rule: rate, max_per_minute: 5}", "test.yaml:1: anomaly: must be a list"},
      {"entry not a mapping", "- rate", "test.yaml:1: anomaly[0]: must be a mapping"},
      {"unknown key", "- {rule: rate, max_per_minute: 5, colour: red}",
       "test.yaml:1: anomaly[0].colour: unknown key"},
      {"duplicate key", "- {rule: rate, max_per_minute: 5, max_per_minute: 6}",
       "test.yaml:1: anomaly[0].max_per_minute: duplicate key"},
      {"missing rule", "- {count: 5, window_seconds: 10}",
       "test.yaml:1: anomaly[0].rule: is required"},
      {"unknown rule", "- {rule: bursty, count: 5}",
       "test.yaml:1: anomaly[0].rule: unknown rule \"bursty\" (one of denied_burst, out_of_scope, "
       "tier_chain, rate, budget_exceeded)"},
      {"rule not a string", "- {rule: [rate], max_per_minute: 5}",
       "test.yaml:1: anomaly[0].rule: must be a string"},
      {"denied_burst without count", "- {rule: denied_burst, window_seconds: 60}",
       "test.yaml:1: anomaly[0].count: is required"},
      {"denied_burst without window", "- {rule: denied_burst, count: 5}",
       "test.yaml:1: anomaly[0].window_seconds: is required"},
      {"count zero", "- {rule: out_of_scope, count: 0}",
       "test.yaml:1: anomaly[0].count: must be an integer in [1, 1000]"},
      {"count negative", "- {rule: out_of_scope, count: -3}",
       "test.yaml:1: anomaly[0].count: must be an integer in [1, 1000]"},
      {"count not an integer", "- {rule: out_of_scope, count: five}",
       "test.yaml:1: anomaly[0].count: must be an integer in [1, 1000]"},
      {"count too large", "- {rule: out_of_scope, count: 1001}",
       "test.yaml:1: anomaly[0].count: must be an integer in [1, 1000]"},
      {"window zero", "- {rule: denied_burst, count: 5, window_seconds: 0}",
       "test.yaml:1: anomaly[0].window_seconds: must be an integer in [1, 604800]"},
      {"window fractional", "- {rule: denied_burst, count: 5, window_seconds: 1.5}",
       "test.yaml:1: anomaly[0].window_seconds: must be an integer in [1, 604800]"},
      {"tier_chain without sequence", "- {rule: tier_chain, window_seconds: 60}",
       "test.yaml:1: anomaly[0].sequence: is required"},
      {"tier_chain sequence too short",
       "- {rule: tier_chain, sequence: [secret], window_seconds: 60}",
       "test.yaml:1: anomaly[0].sequence: must list at least 2 tiers"},
      {"tier_chain sequence empty", "- {rule: tier_chain, sequence: [], window_seconds: 60}",
       "test.yaml:1: anomaly[0].sequence: must list at least 2 tiers"},
      {"tier_chain sequence not a list",
       "- {rule: tier_chain, sequence: secret, window_seconds: 60}",
       "test.yaml:1: anomaly[0].sequence: must be a list of strings"},
      {"tier_chain unknown tier",
       "- {rule: tier_chain, sequence: [merge_deploy, admin], window_seconds: 60}",
       "test.yaml:1: anomaly[0].sequence: unknown tier \"admin\" (one of read, write, pr, "
       "merge_deploy, secret, destructive)"},
      {"tier_chain without window", "- {rule: tier_chain, sequence: [pr, secret]}",
       "test.yaml:1: anomaly[0].window_seconds: is required"},
      {"rate without max", "- {rule: rate}", "test.yaml:1: anomaly[0].max_per_minute: is required"},
      {"rate max zero", "- {rule: rate, max_per_minute: 0}",
       "test.yaml:1: anomaly[0].max_per_minute: must be an integer in [1, 1000]"},
      {"key the rule does not use", "- {rule: rate, max_per_minute: 5, window_seconds: 10}",
       "test.yaml:1: anomaly[0].window_seconds: is not used by rule rate"},
      {"count on tier_chain",
       "- {rule: tier_chain, sequence: [pr, secret], window_seconds: 9, count: 2}",
       "test.yaml:1: anomaly[0].count: is not used by rule tier_chain"},
      {"sequence on denied_burst",
       "- {rule: denied_burst, count: 2, window_seconds: 9, sequence: [pr, secret]}",
       "test.yaml:1: anomaly[0].sequence: is not used by rule denied_burst"},
      {"unknown action", "- {rule: rate, max_per_minute: 5, action: notify}",
       "test.yaml:1: anomaly[0].action: unknown action \"notify\" (only revoke_session)"},
      {"empty name", "- {rule: rate, max_per_minute: 5, name: \"\"}",
       "test.yaml:1: anomaly[0].name: must not be empty"},
      {"duplicate name",
       "- {rule: rate, max_per_minute: 5, name: r}\n- {rule: rate, max_per_minute: 9, name: r}",
       "test.yaml:2: anomaly[1].name: duplicate rule name \"r\""},
      {"name colliding with a default",
       "- {rule: rate, max_per_minute: 5}\n- {rule: rate, max_per_minute: 9, name: "
       "\"anomaly[0]:rate\"}",
       "test.yaml:2: anomaly[1].name: duplicate rule name \"anomaly[0]:rate\""},
      {"error on a later line of a block entry",
       "- rule: denied_burst\n  count: 5\n  window_seconds: 60\n- rule: tier_chain\n"
       "  window_seconds: 60\n  sequence: [read, nope]\n",
       "test.yaml:6: anomaly[1].sequence: unknown tier \"nope\" (one of read, write, pr, "
       "merge_deploy, secret, destructive)"},
  };
  for (const Case& c : cases) {
    SUBCASE(c.name) {
      Result<std::vector<AnomalyRule>> r = ParseAnomalyRulesText(c.yaml, "test.yaml");
      REQUIRE_FALSE(r.has_value());
      CHECK(r.error().code == ErrorCode::kInvalidArgument);
      CHECK(r.error().Reason() == "invalid_config");
      CHECK(r.error().message == c.message);
    }
  }
}

TEST_CASE("Anomaly: invalid YAML and too many rules are errors") {
  Result<std::vector<AnomalyRule>> bad = ParseAnomalyRulesText("- {rule: [rate\n", "test.yaml");
  REQUIRE_FALSE(bad.has_value());
  CHECK(bad.error().message.starts_with("test.yaml:"));
  CHECK(bad.error().message.find("anomaly: invalid YAML") != std::string::npos);

  std::string many;
  for (size_t i = 0; i <= kMaxAnomalyRules; ++i) {
    many += "- {rule: rate, max_per_minute: 5}\n";
  }
  Result<std::vector<AnomalyRule>> r = ParseAnomalyRulesText(many, "test.yaml");
  REQUIRE_FALSE(r.has_value());
  CHECK(r.error().message == "test.yaml:1: anomaly: must hold at most 64 rules");
}

// ---------------------------------------------------------------------------
// Detection, table-driven per rule

TEST_CASE("Anomaly: each rule triggers exactly at its threshold, not one before") {
  struct Case {
    const char* name;
    const char* rules;
    std::vector<DecisionObservation> obs;
    std::optional<size_t> fires_at;  // index of the triggering observation
  };
  const std::vector<Case> cases = {
      {"denied_burst: third denial within the window",
       "- {rule: denied_burst, count: 3, window_seconds: 60}",
       {Deny(0), Deny(10), Deny(20)},
       2},
      {"denied_burst: two denials are not enough",
       "- {rule: denied_burst, count: 3, window_seconds: 60}",
       {Deny(0), Deny(10)},
       std::nullopt},
      {"denied_burst: allows and pendings do not count",
       "- {rule: denied_burst, count: 3, window_seconds: 60}",
       {Deny(0), Allow(1), Pending(2), Pending(3), Allow(4), Deny(5), Pending(6), Deny(7)},
       7},
      {"denied_burst: count 1 triggers on the first denial",
       "- {rule: denied_burst, count: 1, window_seconds: 1}",
       {Allow(0), Pending(1), Deny(2)},
       2},
      {"denied_burst: span just under the window",
       "- {rule: denied_burst, count: 3, window_seconds: 60}",
       {Deny(0), Deny(30), Deny(59)},
       2},
      {"denied_burst: span equal to the window is outside",
       "- {rule: denied_burst, count: 3, window_seconds: 60}",
       {Deny(0), Deny(30), Deny(60)},
       std::nullopt},
      {"denied_burst: old denials age out of the sliding window",
       "- {rule: denied_burst, count: 3, window_seconds: 60}",
       {Deny(0), Deny(10), Deny(70), Deny(71), Deny(75)},
       4},
      {"out_of_scope: whole session without a window",
       "- {rule: out_of_scope, count: 3}",
       {Deny(0, "out_of_scope"), Deny(1000, "exceeds_principal"), Deny(5000, "out_of_scope"),
        Allow(6000), Deny(90000, "out_of_scope")},
       4},
      {"out_of_scope: two are not enough",
       "- {rule: out_of_scope, count: 3}",
       {Deny(0, "out_of_scope"), Deny(1, "tier_denied"), Deny(2, "out_of_scope")},
       std::nullopt},
      {"out_of_scope: branch, environment and scope-item denials count too",
       "- {rule: out_of_scope, count: 3}",
       {Deny(0, "branch_not_in_scope"), Deny(1, "environment_not_in_scope"),
        Deny(2, "scope_not_in_task")},
       2},
      {"out_of_scope: with a window, old ones age out",
       "- {rule: out_of_scope, count: 2, window_seconds: 100}",
       {Deny(0, "out_of_scope"), Deny(100, "out_of_scope"), Deny(150, "out_of_scope")},
       2},
      {"tier_chain: in order, not adjacent, any result",
       "- {rule: tier_chain, sequence: [merge_deploy, secret], window_seconds: 300}",
       {Obs(0, Tier::kMergeDeploy, DecisionResult::kPending, "approval_required"), Allow(10),
        Obs(20, Tier::kWrite, DecisionResult::kAllow, "allowed"),
        Obs(100, Tier::kSecret, DecisionResult::kDeny, "tier_denied")},
       3},
      {"tier_chain: reverse order does not match",
       "- {rule: tier_chain, sequence: [merge_deploy, secret], window_seconds: 300}",
       {Pending(0, Tier::kSecret), Pending(10, Tier::kMergeDeploy)},
       std::nullopt},
      {"tier_chain: the window bounds first to last",
       "- {rule: tier_chain, sequence: [merge_deploy, secret], window_seconds: 300}",
       {Pending(0, Tier::kMergeDeploy), Pending(300, Tier::kSecret),
        Pending(301, Tier::kMergeDeploy), Allow(400), Pending(600, Tier::kSecret)},
       4},
      {"tier_chain: a later start restarts the window",
       "- {rule: tier_chain, sequence: [merge_deploy, secret], window_seconds: 300}",
       {Pending(0, Tier::kMergeDeploy), Pending(400, Tier::kMergeDeploy),
        Pending(500, Tier::kSecret)},
       2},
      {"tier_chain: three steps need all three in order",
       "- {rule: tier_chain, sequence: [read, write, secret], window_seconds: 60}",
       {Allow(0, Tier::kRead), Pending(1, Tier::kSecret), Allow(2, Tier::kWrite),
        Pending(3, Tier::kSecret)},
       3},
      {"tier_chain: a repeated tier needs two observations",
       "- {rule: tier_chain, sequence: [secret, secret], window_seconds: 60}",
       {Pending(0, Tier::kSecret), Allow(1), Pending(2, Tier::kSecret)},
       2},
      {"rate: the fourth request in a minute with max 3",
       "- {rule: rate, max_per_minute: 3}",
       {Allow(0), Deny(1), Pending(2), Allow(3)},
       3},
      {"rate: exactly max in a minute is fine",
       "- {rule: rate, max_per_minute: 3}",
       {Allow(0), Allow(1), Allow(2), Allow(60), Allow(61), Allow(62), Allow(120)},
       std::nullopt},
      {"rate: the window slides",
       "- {rule: rate, max_per_minute: 3}",
       {Allow(0), Allow(20), Allow(40), Allow(60), Allow(80), Allow(100), Allow(101)},
       6},
  };
  for (const Case& c : cases) {
    SUBCASE(c.name) {
      AnomalyDetector d(Rules(c.rules));
      std::vector<Fired> fired = Feed(d, "ses_1", c.obs);
      if (c.fires_at) {
        REQUIRE(fired.size() == 1);
        CHECK(fired[0].index == *c.fires_at);
        CHECK(fired[0].rule == d.rules()[0].name);
      } else {
        CHECK(fired.empty());
      }
    }
  }
}

TEST_CASE("Anomaly: evidence names the rule, threshold, window and observations") {
  SUBCASE("denied_burst") {
    AnomalyDetector d(Rules("- {rule: denied_burst, count: 2, window_seconds: 60, name: burst}"));
    CHECK_FALSE(
        d.Observe("ses_1", Obs(0, Tier::kWrite, DecisionResult::kDeny, "tier_denied", "grt_a")));
    CHECK_FALSE(d.Observe("ses_1", Allow(1)));
    std::optional<AnomalyTrigger> t =
        d.Observe("ses_1", Obs(5, Tier::kPr, DecisionResult::kDeny, "out_of_scope", "grt_b"));
    REQUIRE(t.has_value());
    CHECK(t->rule == "burst");
    CHECK(t->kind == "denied_burst");
    const nlohmann::json& ev = t->evidence;
    CHECK(ev["rule"] == "burst");
    CHECK(ev["kind"] == "denied_burst");
    CHECK(ev["session_id"] == "ses_1");
    CHECK(ev["count"] == 2);
    CHECK(ev["window_seconds"] == 60);
    REQUIRE(ev["observations"].size() == 2);
    CHECK(ev["observations"][0] == nlohmann::json{{"grant_id", "grt_a"},
                                                  {"at", "2026-11-18T11:06:40Z"},
                                                  {"tier", "write"},
                                                  {"result", "deny"},
                                                  {"code", "tier_denied"}});
    CHECK(ev["observations"][1]["grant_id"] == "grt_b");
    CHECK(ev["observations"][1]["tier"] == "pr");
    CHECK(ev["observations"][1]["code"] == "out_of_scope");
    CHECK(ev["first_at"] == "2026-11-18T11:06:40Z");
    CHECK(ev["last_at"] == "2026-11-18T11:06:45Z");
  }
  SUBCASE("out_of_scope without a window") {
    AnomalyDetector d(Rules("- {rule: out_of_scope, count: 1}"));
    std::optional<AnomalyTrigger> t = d.Observe("ses_1", Deny(0, "out_of_scope"));
    REQUIRE(t.has_value());
    CHECK(t->evidence["window_seconds"].is_null());
    CHECK(t->evidence["count"] == 1);
  }
  SUBCASE("tier_chain") {
    AnomalyDetector d(
        Rules("- {rule: tier_chain, sequence: [merge_deploy, secret], window_seconds: 300}"));
    CHECK_FALSE(d.Observe("ses_1", Obs(0, Tier::kMergeDeploy, DecisionResult::kPending,
                                       "approval_required", "grt_m")));
    CHECK_FALSE(d.Observe("ses_1", Allow(1)));
    std::optional<AnomalyTrigger> t = d.Observe(
        "ses_1", Obs(9, Tier::kSecret, DecisionResult::kPending, "approval_required", "grt_s"));
    REQUIRE(t.has_value());
    CHECK(t->kind == "tier_chain");
    CHECK(t->evidence["sequence"] == nlohmann::json::array({"merge_deploy", "secret"}));
    CHECK(t->evidence["window_seconds"] == 300);
    REQUIRE(t->evidence["observations"].size() == 2);
    CHECK(t->evidence["observations"][0]["grant_id"] == "grt_m");
    CHECK(t->evidence["observations"][1]["grant_id"] == "grt_s");
  }
  SUBCASE("rate") {
    AnomalyDetector d(Rules("- {rule: rate, max_per_minute: 2}"));
    CHECK_FALSE(d.Observe("ses_1", Allow(0)));
    CHECK_FALSE(d.Observe("ses_1", Allow(1)));
    std::optional<AnomalyTrigger> t = d.Observe("ses_1", Allow(2));
    REQUIRE(t.has_value());
    CHECK(t->kind == "rate");
    CHECK(t->evidence["max_per_minute"] == 2);
    CHECK(t->evidence["window_seconds"] == 60);
    CHECK(t->evidence["observations"].size() == 3);
  }
}

TEST_CASE("Anomaly: several rules report in config order, each once") {
  const std::vector<DecisionObservation> denials = {Deny(0), Deny(1), Deny(2), Deny(3), Deny(4)};
  SUBCASE("rate first") {
    AnomalyDetector d(Rules(R"(
- {rule: rate, max_per_minute: 2, name: rate}
- {rule: denied_burst, count: 3, window_seconds: 60, name: burst}
)"));
    std::vector<Fired> fired = Feed(d, "ses_1", denials);
    // Both are met by the third denial: the first in config order is reported,
    // the other on the next observation.
    REQUIRE(fired.size() == 2);
    CHECK(fired[0].index == 2);
    CHECK(fired[0].rule == "rate");
    CHECK(fired[1].index == 3);
    CHECK(fired[1].rule == "burst");
  }
  SUBCASE("burst first") {
    AnomalyDetector d(Rules(R"(
- {rule: denied_burst, count: 3, window_seconds: 60, name: burst}
- {rule: rate, max_per_minute: 2, name: rate}
)"));
    std::vector<Fired> fired = Feed(d, "ses_1", denials);
    REQUIRE(fired.size() == 2);
    CHECK(fired[0].index == 2);
    CHECK(fired[0].rule == "burst");
    CHECK(fired[1].index == 3);
    CHECK(fired[1].rule == "rate");
  }
  SUBCASE("an earlier rule that is not met does not hide a later one") {
    AnomalyDetector d(Rules(R"(
- {rule: out_of_scope, count: 10}
- {rule: tier_chain, sequence: [pr, secret], window_seconds: 60}
)"));
    std::vector<Fired> fired = Feed(
        d, "ses_1", {Deny(0, "out_of_scope"), Pending(1, Tier::kPr), Pending(2, Tier::kSecret)});
    REQUIRE(fired.size() == 1);
    CHECK(fired[0].index == 2);
    CHECK(fired[0].rule == "anomaly[1]:tier_chain");
  }
}

TEST_CASE("Anomaly: a triggered rule does not trigger again for that session") {
  AnomalyDetector d(Rules("- {rule: denied_burst, count: 2, window_seconds: 60}"));
  std::vector<DecisionObservation> obs;
  for (int i = 0; i < 50; ++i) {
    obs.push_back(Deny(i));
  }
  std::vector<Fired> fired = Feed(d, "ses_1", obs);
  REQUIRE(fired.size() == 1);
  CHECK(fired[0].index == 1);
  // The retired rule keeps nothing for the session.
  CHECK(d.StoredEventsForTesting("ses_1") == 0);
  // Another session is independent.
  CHECK(Feed(d, "ses_2", {Deny(0), Deny(1)}).size() == 1);
}

TEST_CASE("Anomaly: sessions are counted separately") {
  AnomalyDetector d(Rules("- {rule: denied_burst, count: 3, window_seconds: 60}"));
  CHECK_FALSE(d.Observe("ses_a", Deny(0)));
  CHECK_FALSE(d.Observe("ses_b", Deny(1)));
  CHECK_FALSE(d.Observe("ses_a", Deny(2)));
  CHECK_FALSE(d.Observe("ses_b", Deny(3)));
  CHECK(d.TrackedSessions() == 2);
  std::optional<AnomalyTrigger> t = d.Observe("ses_b", Deny(4));
  REQUIRE(t.has_value());
  CHECK(t->evidence["session_id"] == "ses_b");
}

TEST_CASE("Anomaly: Forget drops a session's state") {
  AnomalyDetector d(Rules("- {rule: denied_burst, count: 3, window_seconds: 60}"));
  CHECK_FALSE(d.Observe("ses_1", Deny(0)));
  CHECK_FALSE(d.Observe("ses_1", Deny(1)));
  CHECK_FALSE(d.Observe("ses_2", Deny(1)));
  CHECK(d.TrackedSessions() == 2);
  d.Forget("ses_1");
  d.Forget("ses_unknown");  // no-op
  CHECK(d.TrackedSessions() == 1);
  CHECK(d.StoredEventsForTesting("ses_1") == 0);
  // Counting starts afresh.
  CHECK_FALSE(d.Observe("ses_1", Deny(2)));
  CHECK_FALSE(d.Observe("ses_1", Deny(3)));
  CHECK(d.Observe("ses_1", Deny(4)).has_value());
  // After a trigger, Forget lets the rule trigger for a new session of the same id.
  d.Forget("ses_1");
  CHECK(Feed(d, "ses_1", {Deny(5), Deny(6), Deny(7)}).size() == 1);
}

TEST_CASE("Anomaly: observations out of time order are handled") {
  SUBCASE("counted rules use the times given") {
    AnomalyDetector d(Rules("- {rule: denied_burst, count: 3, window_seconds: 60}"));
    CHECK_FALSE(d.Observe("ses_1", Deny(100)));
    CHECK_FALSE(d.Observe("ses_1", Deny(50)));
    std::optional<AnomalyTrigger> t = d.Observe("ses_1", Deny(99));
    REQUIRE(t.has_value());
    // Evidence is ordered by time.
    CHECK(t->evidence["observations"][0]["grant_id"] == "grt_50");
    CHECK(t->evidence["observations"][2]["grant_id"] == "grt_100");
    CHECK(t->evidence["first_at"] == "2026-11-18T11:07:30Z");
  }
  SUBCASE("a late old observation does not complete a stale burst") {
    AnomalyDetector d(Rules("- {rule: denied_burst, count: 3, window_seconds: 60}"));
    CHECK_FALSE(d.Observe("ses_1", Deny(1000)));
    CHECK_FALSE(d.Observe("ses_1", Deny(10)));
    CHECK_FALSE(d.Observe("ses_1", Deny(11)));
  }
  SUBCASE("tier_chain follows arrival order and measures the span either way") {
    AnomalyDetector d(
        Rules("- {rule: tier_chain, sequence: [merge_deploy, secret], window_seconds: 30}"));
    CHECK_FALSE(d.Observe("ses_1", Pending(100, Tier::kMergeDeploy)));
    CHECK(d.Observe("ses_1", Pending(90, Tier::kSecret)).has_value());
  }
  SUBCASE("rate with times going backwards") {
    AnomalyDetector d(Rules("- {rule: rate, max_per_minute: 2}"));
    CHECK_FALSE(d.Observe("ses_1", Allow(200)));
    CHECK_FALSE(d.Observe("ses_1", Allow(0)));
    CHECK_FALSE(d.Observe("ses_1", Allow(100)));
    CHECK(d.Observe("ses_1", Allow(199)).has_value() == false);
    CHECK(d.Observe("ses_1", Allow(198)).has_value());
  }
}

TEST_CASE("Anomaly: without rules nothing is tracked") {
  AnomalyDetector d({});
  CHECK_FALSE(d.Observe("ses_1", Deny(0)));
  CHECK(d.TrackedSessions() == 0);
}

TEST_CASE("Anomaly: memory per session stays within the cap") {
  // Thresholds that a steady one-request-per-second stream never reaches, so
  // every rule keeps as much as it may: 300 + 300 + 301 + 120 ≤ 1024.
  std::vector<AnomalyRule> rules = Rules(R"(
- {rule: denied_burst, count: 300, window_seconds: 1}
- {rule: out_of_scope, count: 300, window_seconds: 10}
- {rule: rate, max_per_minute: 300}
- {rule: tier_chain, sequence: [read, write, pr, merge_deploy, secret, destructive, read, write,
                                pr, merge_deploy, secret, destructive, read, write, pr, secret],
   window_seconds: 5}
)");
  REQUIRE(AnomalyDetector::RequiredEvents(rules) == 1021);
  AnomalyDetector d(std::move(rules));
  CHECK(d.EventCapacity() == 1024);
  size_t max_stored = 0;
  size_t triggers = 0;
  for (int64_t i = 0; i < 100000; ++i) {
    Tier tier = kAllTiers[i % kTierCount];
    DecisionObservation o =
        Obs(i, tier, i % 2 == 0 ? DecisionResult::kDeny : DecisionResult::kAllow,
            i % 3 == 0 ? "out_of_scope" : "allowed", "grt_x");
    if (d.Observe("ses_flood", o)) {
      ++triggers;
    }
    if (i % 97 == 0 || i > 99000) {
      size_t stored = d.StoredEventsForTesting("ses_flood");
      max_stored = std::max(max_stored, stored);
      REQUIRE(stored <= d.EventCapacity());
    }
  }
  CHECK(triggers == 0);
  CHECK(max_stored <= 1024);
  CHECK(max_stored >= 900);  // the rings did fill up
  CHECK(d.TrackedSessions() == 1);
}

TEST_CASE("Anomaly: the cap is raised to what the rules need") {
  AnomalyDetector::Options options;
  options.max_events_per_session = 8;
  AnomalyDetector d(Rules("- {rule: rate, max_per_minute: 20}"), options);
  CHECK(d.EventCapacity() == 21);
  std::vector<DecisionObservation> obs;
  for (int i = 0; i < 21; ++i) {
    obs.push_back(Allow(i));
  }
  std::vector<Fired> fired = Feed(d, "ses_1", obs);
  REQUIRE(fired.size() == 1);
  CHECK(fired[0].index == 20);
}

TEST_CASE("Anomaly: idle sessions are dropped lazily") {
  AnomalyDetector::Options options;
  options.idle_ttl = std::chrono::hours(1);
  AnomalyDetector d(Rules("- {rule: denied_burst, count: 5, window_seconds: 60}"), options);
  CHECK_FALSE(d.Observe("ses_old", Deny(0)));
  SUBCASE("kept before the TTL") {
    for (int i = 0; i < 200; ++i) {
      CHECK_FALSE(d.Observe("ses_busy", Allow(3599)));
    }
    CHECK(d.TrackedSessions() == 2);
    CHECK(d.StoredEventsForTesting("ses_old") == 1);
  }
  SUBCASE("dropped after the TTL") {
    for (int i = 0; i < 200; ++i) {
      CHECK_FALSE(d.Observe("ses_busy", Allow(3600)));
    }
    CHECK(d.TrackedSessions() == 1);
    CHECK(d.StoredEventsForTesting("ses_old") == 0);
  }
  SUBCASE("many idle sessions go in one sweep") {
    for (int s = 0; s < 500; ++s) {
      CHECK_FALSE(d.Observe("ses_" + std::to_string(s), Deny(1)));
    }
    CHECK(d.TrackedSessions() >= 400);
    for (int i = 0; i < 1000; ++i) {
      CHECK_FALSE(d.Observe("ses_busy", Allow(7200 + i)));
    }
    CHECK(d.TrackedSessions() == 1);
  }
}

TEST_CASE("Anomaly: concurrent Observe from 8 threads") {
  constexpr int kThreads = 8;
  SUBCASE("different sessions: each triggers exactly once") {
    AnomalyDetector d(Rules("- {rule: denied_burst, count: 50, window_seconds: 100000}"));
    std::vector<int> fired(kThreads, 0);
    std::vector<int> fired_at(kThreads, -1);
    {
      std::vector<std::jthread> threads;
      for (int t = 0; t < kThreads; ++t) {
        threads.emplace_back([&, t] {
          const std::string session = "ses_" + std::to_string(t);
          for (int i = 0; i < 1000; ++i) {
            if (d.Observe(session, Deny(i))) {
              ++fired[t];
              fired_at[t] = i;
            }
          }
        });
      }
    }
    for (int t = 0; t < kThreads; ++t) {
      CHECK(fired[t] == 1);
      CHECK(fired_at[t] == 49);
    }
    CHECK(d.TrackedSessions() == kThreads);
  }
  SUBCASE("one session: exactly one trigger at the threshold") {
    AnomalyDetector d(
        Rules("- {rule: out_of_scope, count: 500}\n- {rule: rate, max_per_minute: 1000}"));
    std::atomic<int> out_of_scope_triggers{0};
    std::atomic<int> rate_triggers{0};
    std::atomic<int> observed{0};
    std::atomic<int> observed_at_trigger{-1};
    {
      std::vector<std::jthread> threads;
      for (int t = 0; t < kThreads; ++t) {
        threads.emplace_back([&, t] {
          for (int i = 0; i < 100; ++i) {
            // Times jitter between threads, as concurrent requests do.
            DecisionObservation o = Deny(i * 100 + t, "out_of_scope");
            std::optional<AnomalyTrigger> trig = d.Observe("ses_shared", o);
            ++observed;
            if (trig && trig->kind == "out_of_scope") {
              ++out_of_scope_triggers;
              observed_at_trigger = static_cast<int>(trig->evidence["observations"].size());
            } else if (trig) {
              ++rate_triggers;
            }
          }
        });
      }
    }
    CHECK(observed == kThreads * 100);
    CHECK(out_of_scope_triggers == 1);
    CHECK(observed_at_trigger == 500);
    CHECK(rate_triggers == 0);
    CHECK(d.TrackedSessions() == 1);
  }
}

}  // namespace
}  // namespace jitbroker::lifecycle
