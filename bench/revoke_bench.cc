// revoke_bench: how long does revoking a session with many live grants take
// when every upstream revoke costs a round trip? (issue #3: a session holding
// 100 live grants, an upstream taking 50 ms per revoke, target p99 <= 1 s,
// which a sequential fan-out (100 x 50 ms = 5 s) cannot meet.)
//
// In process, no HTTP: it builds the real service stack (SQLite store in a
// private temp dir, the group-commit audit Journal, Metrics, SystemClock, a
// policy loaded from YAML text) around a FakeIssuer (tests/fakes) whose
// Revoke() sleeps --latency-ms. Each round opens a session with the owner's
// API key, requests --grants allowed grants with the session token, then
// times BrokerService::EndSession(revoke=true) called by an admin: from the
// call until it returns, i.e. until every revocation is done and the session
// end and its audit records are durable.
//
// Checks: every grant must come back with outcome "revoked" and the fake
// upstream must have revoked exactly that credential; otherwise exit 1.
// With --strict, a p99 above --target-ms also exits 1.
//
// Runtime: rounds stop early when the next one would overrun --budget-s
// (default 50 s), so a sequential fan-out still finishes in time; the
// report says how many rounds ran.
//
// Output: a per-round table, a summary, and one machine-readable line
//   RESULT bench=revoke rounds=… grants=… latency_ms=… p50_ms=… p99_ms=… max_ms=… …
// Exit status: 0 ok, 1 failed check / setup error / (--strict) missed target,
// 2 usage error.
#include <stdlib.h>

#include <algorithm>
#include <charconv>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <system_error>
#include <vector>

#include <nlohmann/json.hpp>

#include "broker/audit/journal.h"
#include "broker/common/log.h"
#include "broker/common/metrics.h"
#include "broker/config/config.h"
#include "broker/crypto/crypto.h"
#include "broker/http/wire.h"
#include "broker/service/broker_service.h"
#include "broker/store/sqlite_store.h"
#include "jitbroker/clock.h"
#include "jitbroker/issuer.h"
#include "tests/fakes/fake_issuer.h"

namespace jitbroker::bench {
namespace {

using Ms = std::chrono::duration<double, std::milli>;
using SteadyClock = std::chrono::steady_clock;

struct Flags {
  int rounds = 20;
  int grants = 100;
  int latency_ms = 50;
  double target_ms = 1000;
  double budget_s = 50;
  int revoke_concurrency = 0;  // 0: the service's default (ServiceOptions)
  bool strict = false;
  bool help = false;
  std::string log_level = "error";
};

void Usage() {
  std::fprintf(stderr,
               "usage: revoke_bench [--rounds N (20)] [--grants N (100)] [--latency-ms N (50)]\n"
               "                    [--revoke-concurrency N (service default)]\n"
               "                    [--target-ms X (1000)] [--budget-s X (50)] [--strict]\n"
               "                    [--log-level trace|debug|info|warn|error|off (error)]\n");
}

template <class T>
bool ParseNumber(std::string_view text, T& out) {
  const char* end = text.data() + text.size();
  auto [ptr, ec] = std::from_chars(text.data(), end, out);
  return ec == std::errc() && ptr == end;
}

// Returns nullopt on a usage error (already reported).
std::optional<Flags> ParseFlags(int argc, char** argv) {
  Flags f;
  for (int i = 1; i < argc; ++i) {
    const std::string_view arg = argv[i];
    auto value = [&]() -> std::optional<std::string_view> {
      if (i + 1 >= argc) {
        std::fprintf(stderr, "revoke_bench: %s needs a value\n", argv[i]);
        return std::nullopt;
      }
      return std::string_view(argv[++i]);
    };
    auto int_flag = [&](int& out, int min, int max) {
      auto v = value();
      if (!v || !ParseNumber(*v, out) || out < min || out > max) {
        std::fprintf(stderr, "revoke_bench: %s must be an integer in [%d, %d]\n",
                     std::string(arg).c_str(), min, max);
        return false;
      }
      return true;
    };
    auto double_flag = [&](double& out, double min) {
      auto v = value();
      if (!v || !ParseNumber(*v, out) || !std::isfinite(out) || out < min) {
        std::fprintf(stderr, "revoke_bench: %s must be a number >= %g\n", std::string(arg).c_str(),
                     min);
        return false;
      }
      return true;
    };
    bool ok = true;
    if (arg == "--rounds") {
      ok = int_flag(f.rounds, 1, 100000);
    } else if (arg == "--grants") {
      ok = int_flag(f.grants, 1, 100000);
    } else if (arg == "--latency-ms") {
      ok = int_flag(f.latency_ms, 0, 60000);
    } else if (arg == "--revoke-concurrency") {
      ok = int_flag(f.revoke_concurrency, 1, 10000);
    } else if (arg == "--target-ms") {
      ok = double_flag(f.target_ms, 0);
    } else if (arg == "--budget-s") {
      ok = double_flag(f.budget_s, 0);
    } else if (arg == "--strict") {
      f.strict = true;
    } else if (arg == "--log-level") {
      auto v = value();
      ok = v.has_value();
      if (ok) {
        f.log_level = std::string(*v);
      }
    } else if (arg == "-h" || arg == "--help") {
      f.help = true;
      return f;
    } else {
      std::fprintf(stderr, "revoke_bench: unknown argument %s\n", argv[i]);
      ok = false;
    }
    if (!ok) {
      Usage();
      return std::nullopt;
    }
  }
  return f;
}

// Nearest-rank percentile of sorted samples.
double Percentile(const std::vector<double>& sorted, double p) {
  if (sorted.empty()) {
    return 0;
  }
  size_t rank = static_cast<size_t>(std::ceil(p / 100.0 * static_cast<double>(sorted.size())));
  rank = std::clamp<size_t>(rank, 1, sorted.size());
  return sorted[rank - 1];
}

// A private temp dir (mode 0700 from mkdtemp), removed on scope exit.
class TempDir {
 public:
  static Result<TempDir> Create() {
    // Read once, before any thread starts.
    const char* base = std::getenv("TMPDIR");  // NOLINT(concurrency-mt-unsafe)
    std::string templ =
        std::string(base != nullptr && *base != '\0' ? base : "/tmp") + "/revoke_bench.XXXXXX";
    if (::mkdtemp(templ.data()) == nullptr) {
      return std::unexpected(Internal("cannot create a temp dir under " + templ));
    }
    return TempDir(std::move(templ));
  }
  TempDir(TempDir&& other) noexcept : path_(std::move(other.path_)) { other.path_.clear(); }
  TempDir& operator=(TempDir&&) = delete;
  TempDir(const TempDir&) = delete;
  ~TempDir() {
    if (!path_.empty()) {
      std::error_code ec;
      std::filesystem::remove_all(path_, ec);
    }
  }
  const std::string& path() const { return path_; }

 private:
  explicit TempDir(std::string path) : path_(std::move(path)) {}
  std::string path_;
};

// Policy: an owner whose role covers fake://bench/* up to `read` (read is
// auto-allowed), and an admin who revokes. Keys are random per run; the
// config holds only their digests.
std::string ConfigYaml(const std::string& data_dir, const std::string& owner_key_sha256,
                       const std::string& admin_key_sha256) {
  std::string yaml = "data_dir: " + nlohmann::json(data_dir).dump() + "\n" +
                     R"(policy:
  version: "revoke-bench.1"
  default_tier: write
  tiers:
    read: {control: auto_allow}
  principals:
    - id: bench_owner
      roles: [bencher]
      api_keys_sha256: ["@OWNER_KEY_SHA256@"]
    - id: bench_admin
      roles: [admin]
      api_keys_sha256: ["@ADMIN_KEY_SHA256@"]
  roles:
    bencher:
      resources: ["fake://bench/*"]
      max_tier: read
    admin:
      resources: ["*"]
      max_tier: destructive
# One session takes --grants grants back to back: lift the grant rate limits.
limits:
  grants_per_session: {rate_per_second: 1000000, burst: 1000000}
  grants_per_principal: {rate_per_second: 1000000, burst: 1000000}
sessions:
  max_ttl_seconds: 7200
  default_ttl_seconds: 3600
  heartbeat_seconds: 3600
  stall_after_missed: 3
log:
  level: error
  access_log: "off"
)";
  auto substitute = [&yaml](std::string_view placeholder, const std::string& value) {
    yaml.replace(yaml.find(placeholder), placeholder.size(), value);
  };
  substitute("@OWNER_KEY_SHA256@", owner_key_sha256);
  substitute("@ADMIN_KEY_SHA256@", admin_key_sha256);
  return yaml;
}

struct RoundResult {
  double end_ms = 0;       // EndSession wall time
  double setup_ms = 0;     // open session + mint all grants
  int revoked = 0;         // outcome "revoked" and revoked upstream
  int max_concurrent = 0;  // FakeIssuer high-water mark during EndSession
  std::map<std::string, int> outcomes;
  std::vector<std::string> problems;  // first few, for the report
};

class Bench {
 public:
  Bench(service::BrokerService* service, testing::FakeIssuer* issuer, const Flags& flags)
      : service_(service), issuer_(issuer), flags_(flags) {}

  [[nodiscard]] Status Authenticate(const SecretValue& owner_key, const SecretValue& admin_key) {
    JITBROKER_ASSIGN_OR_RETURN(owner_.caller, service_->Authenticate(Bearer(owner_key), ""));
    JITBROKER_ASSIGN_OR_RETURN(admin_.caller, service_->Authenticate(Bearer(admin_key), ""));
    owner_.request_id = "req_bench_owner";
    admin_.request_id = "req_bench_admin";
    if (!admin_.caller.is_admin) {
      return std::unexpected(Internal("the bench admin principal is not an admin"));
    }
    return OkStatus();
  }

  [[nodiscard]] Result<RoundResult> Round(int round) {
    RoundResult rr;
    const auto setup_start = SteadyClock::now();
    nlohmann::json open = {
        {"agent", {{"id", "revoke-bench"}}},
        {"task",
         {{"id", "round-" + std::to_string(round)},
          {"description", "revocation fan-out benchmark"},
          {"scope",
           {{"resources", {"fake://bench/*"}}, {"max_tier", "read"}, {"issuers", {"fake"}}}}}},
    };
    JITBROKER_ASSIGN_OR_RETURN(nlohmann::json session, api_.OpenSession(owner_, open));
    const std::string session_id = session.value("session_id", "");
    SecretValue session_token(session.value("session_token", ""));
    session.clear();
    if (session_id.empty() || session_token.empty()) {
      return std::unexpected(Internal("OpenSession returned no session id or token"));
    }
    service::CallContext agent;
    agent.request_id = "req_bench_agent";
    JITBROKER_ASSIGN_OR_RETURN(agent.caller, service_->Authenticate(Bearer(session_token), ""));

    std::set<std::string> grant_ids;
    for (int i = 0; i < flags_.grants; ++i) {
      nlohmann::json req = {{"tool", "bench.read"},
                            {"operation", "read"},
                            {"resource", "fake://bench/r" + std::to_string(i)},
                            {"issuer", "fake"},
                            {"ttl_seconds", 900}};
      JITBROKER_ASSIGN_OR_RETURN(http::wire::JsonApi::GrantAnswer resp,
                                 api_.RequestGrant(agent, session_id, req));
      if (resp.outcome != service::GrantOutcome::kIssued || !resp.body.contains("grant_id")) {
        return std::unexpected(Internal("grant " + std::to_string(i) + " was not issued: outcome " +
                                        std::to_string(static_cast<int>(resp.outcome))));
      }
      grant_ids.insert(resp.body["grant_id"].get<std::string>());
    }
    rr.setup_ms = Ms(SteadyClock::now() - setup_start).count();

    issuer_->ResetMaxConcurrentRevokes();
    const auto start = SteadyClock::now();
    auto ended = api_.EndSession(admin_, session_id, {{"reason", "bench"}}, /*revoke=*/true);
    rr.end_ms = Ms(SteadyClock::now() - start).count();
    rr.max_concurrent = issuer_->MaxConcurrentRevokes();
    if (!ended) {
      return std::unexpected(ended.error());
    }
    Check(*ended, session_id, grant_ids, rr);
    return rr;
  }

 private:
  static std::string Bearer(const SecretValue& key) {
    return "Bearer " + std::string(key.Reveal());
  }

  void Check(const nlohmann::json& ended, const std::string& session_id,
             const std::set<std::string>& grant_ids, RoundResult& rr) const {
    auto problem = [&rr](const std::string& text) {
      if (rr.problems.size() < 5) {
        rr.problems.push_back(text);
      }
    };
    if (ended.value("session_id", "") != session_id || ended.value("state", "") != "revoked") {
      problem("session did not end in state revoked");
    }
    const auto revocations = ended.find("revocations");
    if (revocations == ended.end() || !revocations->is_array()) {
      problem("EndSession returned no revocations list");
      return;
    }
    std::set<std::string> seen;
    for (const auto& r : *revocations) {
      const std::string id = r.value("grant_id", "");
      const std::string outcome = r.value("outcome", "(none)");
      ++rr.outcomes[outcome];
      if (!grant_ids.contains(id) || !seen.insert(id).second) {
        problem("unexpected or repeated grant " + id);
        continue;
      }
      if (outcome != "revoked") {
        problem("grant " + id + ": outcome " + outcome);
        continue;
      }
      if (!issuer_->IsRevoked(id)) {
        problem("grant " + id + ": outcome revoked but the upstream never revoked it");
        continue;
      }
      ++rr.revoked;
    }
    if (seen.size() != grant_ids.size()) {
      problem(std::to_string(grant_ids.size() - seen.size()) + " grants missing from revocations");
    }
  }

  service::BrokerService* service_;
  http::wire::JsonApi api_{service_};  // the JSON the HTTP routes answer
  testing::FakeIssuer* issuer_;
  const Flags& flags_;
  service::CallContext owner_;
  service::CallContext admin_;
};

int Run(const Flags& flags) {
  log::InitLogging(flags.log_level);
  auto tmp = TempDir::Create();
  if (!tmp) {
    std::fprintf(stderr, "revoke_bench: %s\n", tmp.error().ToString().c_str());
    return 1;
  }
  const std::string dir = tmp->path();
  auto fail = [](const char* what, const Error& e) {
    std::fprintf(stderr, "revoke_bench: %s: %s\n", what, e.ToString().c_str());
    return 1;
  };

  const SecretValue owner_key("jbk_" + crypto::NewId("", 32));
  const SecretValue admin_key("jbk_" + crypto::NewId("", 32));
  auto cfg = config::LoadConfigText(
      ConfigYaml(dir, crypto::Sha256Hex(owner_key.Reveal()), crypto::Sha256Hex(admin_key.Reveal())),
      dir + "/bench.yaml");
  if (!cfg) {
    return fail("config", cfg.error());
  }

  auto store = store::OpenSqliteStore({.path = dir + "/state.db"});
  if (!store) {
    return fail("store", store.error());
  }
  auto journal = audit::Journal::Create(store->get(), dir + "/audit.jsonl");
  if (!journal) {
    return fail("journal", journal.error());
  }
  SystemClock clock;
  Metrics metrics;

  auto fake = std::make_unique<testing::FakeIssuer>(testing::FakeIssuerOptions{
      .name = "fake",
      .revocability = Revocability::kRevocable,
      .revoke_latency = std::chrono::milliseconds(flags.latency_ms),
  });
  testing::FakeIssuer* issuer = fake.get();
  std::map<std::string, std::unique_ptr<Issuer>> issuers;
  issuers.emplace("fake", std::move(fake));
  service::ServiceOptions options;
  options.sessions = cfg->sessions;
  options.seal_key = SecretValue(crypto::RandomBytes(32));
  options.limits = cfg->limits;
  if (flags.revoke_concurrency > 0) {
    options.revoke_concurrency = flags.revoke_concurrency;
  }
  const int revoke_concurrency = options.revoke_concurrency;
  auto service =
      std::make_unique<service::BrokerService>(store->get(), journal->get(), &clock, &metrics,
                                               std::move(issuers), cfg->policy, std::move(options));

  Bench bench(service.get(), issuer, flags);
  if (auto st = bench.Authenticate(owner_key, admin_key); !st) {
    return fail("authenticate", st.error());
  }

  std::printf(
      "revoke_bench: %d grants per session, upstream revoke latency %d ms, "
      "service revoke_concurrency %d, up to %d rounds (budget %.0f s)\n",
      flags.grants, flags.latency_ms, revoke_concurrency, flags.rounds, flags.budget_s);
  std::printf("  lower bounds: concurrent fan-out >= %d ms, sequential >= %lld ms\n\n",
              flags.latency_ms,
              static_cast<long long>(flags.latency_ms) * static_cast<long long>(flags.grants));
  std::printf("%5s  %14s  %12s  %8s  %14s\n", "round", "end_session_ms", "setup_ms", "revoked",
              "max_concurrent");

  const auto bench_start = SteadyClock::now();
  std::vector<double> samples;
  int max_concurrent = 0;
  int64_t not_revoked = 0;
  double worst_round_s = 0;
  std::map<std::string, int64_t> outcomes;
  std::vector<std::string> problems;
  int rounds_run = 0;
  for (int round = 1; round <= flags.rounds; ++round) {
    const double elapsed_s =
        std::chrono::duration<double>(SteadyClock::now() - bench_start).count();
    if (round > 1 && elapsed_s + worst_round_s > flags.budget_s) {
      std::printf("  (stopping after %d rounds: the next would overrun the %.0f s budget)\n",
                  rounds_run, flags.budget_s);
      break;
    }
    const auto round_start = SteadyClock::now();
    auto rr = bench.Round(round);
    if (!rr) {
      return fail(("round " + std::to_string(round)).c_str(), rr.error());
    }
    worst_round_s = std::max(
        worst_round_s, std::chrono::duration<double>(SteadyClock::now() - round_start).count());
    ++rounds_run;
    samples.push_back(rr->end_ms);
    max_concurrent = std::max(max_concurrent, rr->max_concurrent);
    not_revoked += flags.grants - rr->revoked;
    for (const auto& [k, v] : rr->outcomes) {
      outcomes[k] += v;
    }
    for (auto& p : rr->problems) {
      if (problems.size() < 10) {
        problems.push_back("round " + std::to_string(round) + ": " + p);
      }
    }
    std::printf("%5d  %14.1f  %12.1f  %4d/%-3d  %14d\n", round, rr->end_ms, rr->setup_ms,
                rr->revoked, flags.grants, rr->max_concurrent);
    std::fflush(stdout);
  }

  std::vector<double> sorted = samples;
  std::sort(sorted.begin(), sorted.end());
  const double p50 = Percentile(sorted, 50);
  const double p99 = Percentile(sorted, 99);
  const double max = sorted.empty() ? 0 : sorted.back();
  const bool target_met = p99 <= flags.target_ms;

  std::string outcome_text;
  for (const auto& [k, v] : outcomes) {
    outcome_text += (outcome_text.empty() ? "" : ",") + k + ":" + std::to_string(v);
  }
  std::printf("\nend_session (all %d revocations done, session end durable), %d rounds:\n",
              flags.grants, rounds_run);
  std::printf("  p50 %.1f ms   p99 %.1f ms   max %.1f ms   (target p99 <= %.0f ms: %s)\n", p50, p99,
              max, flags.target_ms, target_met ? "met" : "MISSED");
  std::printf(
      "  upstream: max concurrent revokes %d, revoke calls %llu, unknown handles %llu, "
      "credentials still live %zu\n",
      max_concurrent, static_cast<unsigned long long>(issuer->RevokeCalls()),
      static_cast<unsigned long long>(issuer->UnknownHandleRevokes()), issuer->LiveCredentials());
  std::printf("  outcomes: %s; not revoked: %lld\n", outcome_text.c_str(),
              static_cast<long long>(not_revoked));
  for (const auto& p : problems) {
    std::printf("  problem: %s\n", p.c_str());
  }
  std::printf(
      "RESULT bench=revoke rounds=%d grants=%d latency_ms=%d revoke_concurrency=%d p50_ms=%.1f "
      "p99_ms=%.1f max_ms=%.1f max_concurrent=%d not_revoked=%lld target_p99_ms=%.0f "
      "target_met=%d\n",
      rounds_run, flags.grants, flags.latency_ms, revoke_concurrency, p50, p99, max, max_concurrent,
      static_cast<long long>(not_revoked), flags.target_ms, target_met ? 1 : 0);

  // Tear down in dependency order before the temp dir goes.
  service.reset();
  (*journal)->Stop();
  journal->reset();
  store->reset();

  if (not_revoked > 0) {
    std::fprintf(stderr, "revoke_bench: FAIL: %lld grants were not revoked\n",
                 static_cast<long long>(not_revoked));
    return 1;
  }
  if (flags.strict && !target_met) {
    std::fprintf(stderr, "revoke_bench: FAIL: p99 %.1f ms > target %.0f ms\n", p99,
                 flags.target_ms);
    return 1;
  }
  return 0;
}

}  // namespace
}  // namespace jitbroker::bench

int main(int argc, char** argv) {
  auto flags = jitbroker::bench::ParseFlags(argc, argv);
  if (!flags) {
    return 2;
  }
  if (flags->help) {
    jitbroker::bench::Usage();
    return 0;
  }
  try {
    return jitbroker::bench::Run(*flags);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "revoke_bench: unexpected exception: %s\n", e.what());
  } catch (...) {
    std::fprintf(stderr, "revoke_bench: unexpected exception\n");
  }
  return 1;
}
