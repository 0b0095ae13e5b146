// seed_store: fills a stopped broker's store with the state of a busy
// deployment, for bench/live_state.sh (issue #15, "How cost grows with the
// work"): live sessions of one principal and the audit trail they left,
// written as the broker writes them.
//
// It loads the broker's own config (config::LoadConfigFile), opens the
// configured store with store::Open and appends through audit::Journal, the
// broker's only write path, so the records are chained, the JSONL file
// follows the store and checkpoints are signed with the broker's audit key
// (<data_dir>/keys/audit.pem, or audit.signing_key) every
// audit.checkpoint.every_records records, as a running broker signs them:
// GET /v1/audit/verify accepts the result. Start the broker once on the
// data_dir first (it generates its keys and the store), stop it, seed, start
// it again.
//
// What is written, on a simulated timeline that ends now:
//   - --sessions live sessions of --principal, opened evenly over the last
//     45 minutes (at most sessions.max_ttl_seconds - 15 min ago) with the
//     TTL sessions.max_ttl_seconds and a heartbeat within the last
//     heartbeat_seconds: none expires or stalls within 15 minutes, so the
//     sweeper leaves them alone during a benchmark. Each has its
//     session.opened record, as BrokerService::OpenSession writes it.
//   - grants, (--records - --sessions) / 3 of them, spread over the
//     sessions: each one an allowed `read` grant on --resource from
//     --issuer (a jwt issuer) with a 300 s TTL, recorded as the grant path
//     records it (grant.decided and credential.minted in one batch, the
//     grant row active), then expired by the sweeper (credential.expired,
//     the row expired, its sealed handle cleared). All have expired at least
//     60 s before now: nothing is left for the sweeper.
//   - --due-waves waves of --due sessions opened now: wave w falls due
//     --due-in + w x --due-every seconds after the seeding ends, half of it
//     by TTL, half by a missed heartbeat (stalled): the sweeper's due work,
//     a pass per wave, written last. No grants: what a pass costs per
//     session it ends.
//     --no-grant-rows writes their records only, without the grant rows.
// Records are committed in time order in batches of --batch-records (one
// store transaction each); the next batch is built while the journal
// commits the last.
//
// Output: progress on stderr, then one machine-readable line
//   RESULT bench=seed sessions=… grants=… due=… due_waves=… records=… head_seq=… seconds=…
//   records_per_s=… due_at_unix=… (the first second at which the first wave is due)
// Exit status: 0 ok, 1 error, 2 usage error.
#include <algorithm>
#include <charconv>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <cstdio>
#include <deque>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <system_error>
#include <thread>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "broker/audit/events.h"
#include "broker/audit/journal.h"
#include "broker/authn/authn.h"
#include "broker/common/log.h"
#include "broker/config/config.h"
#include "broker/crypto/crypto.h"
#include "broker/crypto/jose.h"
#include "broker/store/open.h"
#include "jitbroker/clock.h"
#include "jitbroker/policy.h"
#include "jitbroker/store.h"

namespace jitbroker::bench {
namespace {

using SteadyClock = std::chrono::steady_clock;

struct Flags {
  std::string config;
  int64_t sessions = 100000;
  int64_t records = 1000000;
  int64_t due = 0;
  int64_t due_in_s = 10;
  int64_t due_waves = 1;
  int64_t due_every_s = 2;
  int64_t batch_records = 1000;
  bool grant_rows = true;
  std::string principal = "bench_engineer";
  std::string issuer = "internal";
  std::string resource = "jwt://mcp.internal";
  std::string tool = "mcp.search";
  bool help = false;
};

void Usage() {
  std::fprintf(
      stderr,
      "usage: seed_store --config FILE [--sessions N (100000)] [--records N (1000000)]\n"
      "                  [--due N (0)] [--due-in S (10)] [--due-waves W (1)]\n"
      "                  [--due-every S (2)] [--batch-records N (1000)]\n"
      "                  [--no-grant-rows]\n"
      "                  [--principal ID (bench_engineer)] [--issuer NAME (internal)]\n"
      "                  [--resource URI (jwt://mcp.internal)] [--tool NAME (mcp.search)]\n"
      "Seeds a STOPPED broker's store (the config's data_dir) with live sessions and\n"
      "their audit trail; see the top of bench/seed_store.cc.\n");
}

// Returns nullopt on a usage error (already reported).
std::optional<Flags> ParseFlags(int argc, char** argv) {
  Flags f;
  for (int i = 1; i < argc; ++i) {
    const std::string_view arg = argv[i];
    auto value = [&]() -> std::optional<std::string_view> {
      if (i + 1 >= argc) {
        std::fprintf(stderr, "seed_store: %s needs a value\n", argv[i]);
        return std::nullopt;
      }
      return std::string_view(argv[++i]);
    };
    auto int_flag = [&](int64_t& out, int64_t min, int64_t max) {
      auto v = value();
      if (!v) {
        return false;
      }
      const char* end = v->data() + v->size();
      auto [ptr, ec] = std::from_chars(v->data(), end, out);
      if (ec != std::errc() || ptr != end || out < min || out > max) {
        std::fprintf(stderr, "seed_store: %s must be an integer in [%lld, %lld]\n",
                     std::string(arg).c_str(), static_cast<long long>(min),
                     static_cast<long long>(max));
        return false;
      }
      return true;
    };
    auto string_flag = [&](std::string& out) {
      auto v = value();
      if (v) {
        out = std::string(*v);
      }
      return v.has_value();
    };
    bool ok = true;
    if (arg == "--config") {
      ok = string_flag(f.config);
    } else if (arg == "--sessions") {
      ok = int_flag(f.sessions, 0, 10'000'000);
    } else if (arg == "--records") {
      ok = int_flag(f.records, 0, 100'000'000);
    } else if (arg == "--due") {
      ok = int_flag(f.due, 0, 1'000'000);
    } else if (arg == "--due-in") {
      ok = int_flag(f.due_in_s, 1, 86400);
    } else if (arg == "--due-waves") {
      ok = int_flag(f.due_waves, 1, 1000);
    } else if (arg == "--due-every") {
      ok = int_flag(f.due_every_s, 1, 3600);
    } else if (arg == "--batch-records") {
      ok = int_flag(f.batch_records, 1, 1'000'000);
    } else if (arg == "--no-grant-rows") {
      f.grant_rows = false;
    } else if (arg == "--principal") {
      ok = string_flag(f.principal);
    } else if (arg == "--issuer") {
      ok = string_flag(f.issuer);
    } else if (arg == "--resource") {
      ok = string_flag(f.resource);
    } else if (arg == "--tool") {
      ok = string_flag(f.tool);
    } else if (arg == "-h" || arg == "--help") {
      f.help = true;
      return f;
    } else {
      std::fprintf(stderr, "seed_store: unknown argument %s\n", argv[i]);
      ok = false;
    }
    if (!ok) {
      Usage();
      return std::nullopt;
    }
  }
  if (f.config.empty()) {
    std::fprintf(stderr, "seed_store: --config is required\n");
    Usage();
    return std::nullopt;
  }
  if (f.records < f.sessions) {
    std::fprintf(stderr, "seed_store: --records must be at least --sessions (one record each)\n");
    return std::nullopt;
  }
  return f;
}

Result<std::string> ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    return std::unexpected(Internal("cannot read " + path));
  }
  return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

// The key that signs the broker's audit checkpoints, found as the broker
// finds it (broker/app/app.cc, LoadOrGenerateAuditKey) but never generated:
// the broker must have started once on this data_dir.
Result<std::shared_ptr<const crypto::SigningKey>> AuditKey(const config::Config& cfg) {
  std::optional<SecretValue> pem;
  if (cfg.audit.signing_key) {
    pem = cfg.audit.signing_key->Clone();
  } else {
    const std::string path = cfg.data_dir + "/keys/audit.pem";
    if (!std::filesystem::exists(path)) {
      return std::unexpected(FailedPrecondition(
          "no_audit_key", path + " is missing: start the broker once on this data_dir first"));
    }
    JITBROKER_ASSIGN_OR_RETURN(std::string text, ReadFile(path));
    pem = SecretValue(std::move(text));
  }
  for (crypto::JwsAlg alg : {crypto::JwsAlg::kES256, crypto::JwsAlg::kEd25519}) {
    if (auto key = crypto::SigningKey::FromPem(alg, *pem)) {
      return std::shared_ptr<const crypto::SigningKey>(std::move(*key));
    }
  }
  return std::unexpected(Internal("the audit signing key is not ES256 or Ed25519"));
}

// The kid the jwt issuer's credentials carry (its generated key,
// <data_dir>/keys/issuer-NAME.pem); a random one when it is not there.
std::string IssuerKid(const config::Config& cfg, const std::string& issuer) {
  auto pem = ReadFile(cfg.data_dir + "/keys/issuer-" + issuer + ".pem");
  if (pem) {
    if (auto key = crypto::SigningKey::FromPem(crypto::JwsAlg::kES256, SecretValue(*pem))) {
      return (*key)->kid();
    }
  }
  return crypto::Base64UrlEncode(crypto::RandomBytes(32));
}

TimePoint AtNs(int64_t ns) {
  return TimePoint(std::chrono::duration_cast<TimePoint::duration>(std::chrono::nanoseconds(ns)));
}
int64_t NsOf(TimePoint t) {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(t.time_since_epoch()).count();
}
constexpr int64_t kNsPerSecond = 1'000'000'000;

// Commits batches in order on its own thread, so that the next batch is
// built while the journal chains and applies the last one. At most two wait.
class Committer {
 public:
  explicit Committer(audit::Journal* journal)
      : journal_(journal), thread_([this](std::stop_token stop) { Loop(stop); }) {}
  ~Committer() { (void)Finish(); }

  // Queues `batch`; the first failure is returned here or by Finish().
  [[nodiscard]] Status Submit(WriteBatch batch) {
    std::unique_lock lock(mu_);
    cv_.wait(lock, [this] { return queue_.size() < 2 || failed_.has_value(); });
    if (failed_) {
      return std::unexpected(*failed_);
    }
    queue_.push_back(std::move(batch));
    cv_.notify_all();
    return OkStatus();
  }

  // Waits until every queued batch is committed.
  [[nodiscard]] Status Finish() {
    {
      std::unique_lock lock(mu_);
      cv_.wait(lock, [this] { return (queue_.empty() && !busy_) || failed_.has_value(); });
    }
    {
      std::lock_guard lock(mu_);  // so that Loop cannot miss the wake-up
      thread_.request_stop();
    }
    cv_.notify_all();
    if (thread_.joinable()) {
      thread_.join();
    }
    std::lock_guard lock(mu_);
    if (failed_) {
      return std::unexpected(*failed_);
    }
    return OkStatus();
  }

 private:
  void Loop(const std::stop_token& stop) {
    for (;;) {
      WriteBatch batch;
      {
        std::unique_lock lock(mu_);
        cv_.wait(lock, [&] { return !queue_.empty() || stop.stop_requested(); });
        if (queue_.empty()) {
          return;
        }
        batch = std::move(queue_.front());
        queue_.pop_front();
        busy_ = true;
      }
      Status st = journal_->Commit(std::move(batch));
      std::lock_guard lock(mu_);
      busy_ = false;
      if (!st && !failed_) {
        failed_ = st.error();
      }
      cv_.notify_all();
    }
  }

  audit::Journal* journal_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<WriteBatch> queue_;  // guarded by mu_
  bool busy_ = false;             // guarded by mu_: a batch is being committed
  std::optional<Error> failed_;   // guarded by mu_
  std::jthread thread_;           // last: starts after the members it uses
};

// One step of the timeline: a session opens, a grant is decided and minted
// (one batch, as on the grant path), or the sweeper expires a grant.
struct Step {
  enum class Kind : uint8_t { kOpen, kMint, kExpire };
  int64_t at_ns = 0;
  uint32_t index = 0;  // session (kOpen) or grant (kMint, kExpire)
  Kind kind = Kind::kOpen;
};

class Seeder {
 public:
  Seeder(const Flags& flags, const config::Config& cfg, audit::Journal* journal)
      : flags_(flags), cfg_(cfg), committer_(journal) {}

  [[nodiscard]] Status Run() {
    const TimePoint now = clock_.Now();
    const int64_t now_ns = NsOf(now);
    Plan(now_ns);
    JITBROKER_RETURN_IF_ERROR(WriteTimeline());
    JITBROKER_RETURN_IF_ERROR(WriteDue());
    return committer_.Finish();
  }

  int64_t grants() const { return static_cast<int64_t>(grant_session_.size()); }
  int64_t records() const { return records_; }
  int64_t due_at_unix() const { return due_at_unix_; }

 private:
  // Lays out the timeline: session i opens at open_ns_[i]; its grants follow
  // evenly until 360 s before now (TTL 300 s, then up to 60 s until the
  // sweeper's pass), each expiring 300 s after its mint.
  void Plan(int64_t now_ns) {
    const int64_t n = flags_.sessions;
    const int64_t ttl_s = cfg_.sessions.max_ttl_seconds;
    // Opened at most 45 min ago and at least 15 min before the TTL ends.
    const int64_t span_s = std::clamp<int64_t>(ttl_s - 900, 600, 2700);
    const int64_t first_ns = now_ns - span_s * kNsPerSecond;
    const int64_t last_ns = now_ns - 600 * kNsPerSecond;  // leaves room for grants
    const int64_t grants_total = (flags_.records - n) / 3;
    open_ns_.resize(static_cast<size_t>(n));
    ids_.resize(static_cast<size_t>(n));
    token_sha256_.resize(static_cast<size_t>(n));
    steps_.reserve(static_cast<size_t>(n + 2 * grants_total));
    for (int64_t i = 0; i < n; ++i) {
      const auto u = static_cast<size_t>(i);
      open_ns_[u] = first_ns + (n > 1 ? (last_ns - first_ns) / (n - 1) * i : 0);
      authn::NewSessionToken tok = authn::MintSessionToken();  // the token itself is dropped
      ids_[u] = std::move(tok.session_id);
      token_sha256_[u] = std::move(tok.token_sha256);
      steps_.push_back({open_ns_[u], static_cast<uint32_t>(i), Step::Kind::kOpen});
    }
    grant_session_.reserve(static_cast<size_t>(grants_total));
    grant_ns_.reserve(static_cast<size_t>(grants_total));
    const int64_t window_end = now_ns - (kGrantTtlS + 60) * kNsPerSecond;
    for (int64_t i = 0; i < n && grants_total > 0; ++i) {
      const int64_t count = grants_total / n + (i < grants_total % n ? 1 : 0);
      const int64_t start = open_ns_[static_cast<size_t>(i)];
      const int64_t step = (window_end - start) / (count + 1);
      for (int64_t j = 1; j <= count; ++j) {
        const auto g = static_cast<uint32_t>(grant_session_.size());
        const int64_t at = start + step * j;
        grant_session_.push_back(static_cast<uint32_t>(i));
        grant_ns_.push_back(at);
        steps_.push_back({at, g, Step::Kind::kMint});
        // The sweeper notices within its interval.
        steps_.push_back(
            {at + kGrantTtlS * kNsPerSecond + kNsPerSecond / 2, g, Step::Kind::kExpire});
      }
    }
    grant_ids_.resize(grant_session_.size());
    grant_batch_.assign(grant_session_.size(), -1);
    std::sort(steps_.begin(), steps_.end(),
              [](const Step& a, const Step& b) { return a.at_ns < b.at_ns; });
  }

  SessionRecord Session(size_t i) const {
    SessionRecord s;
    s.id = ids_[i];
    s.token_sha256 = token_sha256_[i];
    s.principal_id = flags_.principal;
    s.agent_id = "agent-" + std::to_string(i % 500);
    s.task_id = "task-" + std::to_string(i);
    s.task_description = "live-state benchmark task " + std::to_string(i);
    s.scope = Scope();
    s.state = SessionState::kActive;
    s.created_at = AtNs(open_ns_[i]);
    s.expires_at = s.created_at + Seconds(cfg_.sessions.max_ttl_seconds);
    s.heartbeat_seconds = cfg_.sessions.heartbeat_seconds;
    return s;
  }

  nlohmann::json Scope() const {
    TaskScope scope;
    scope.resources = {flags_.resource};
    scope.max_tier = Tier::kRead;
    scope.issuers = {flags_.issuer};
    return scope.ToJson();
  }

  // The grant row and record body as the grant path writes them for an
  // allowed jwt grant (broker/service/grants.cc, grant_pipeline.cc).
  GrantRecord Grant(uint32_t g) const {
    const size_t si = grant_session_[g];
    GrantRecord r;
    r.id = grant_ids_[g];
    r.session_id = ids_[si];
    r.principal_id = flags_.principal;
    r.agent_id = "agent-" + std::to_string(si % 500);
    r.task_id = "task-" + std::to_string(si);
    r.tool = flags_.tool;
    r.operation = "read";
    r.resource = flags_.resource;
    r.issuer = flags_.issuer;
    r.requested_ttl_seconds = kGrantTtlS;
    r.ttl_seconds = kGrantTtlS;
    r.tier = "read";
    r.decision = decision_;
    r.revocability = "revocable";
    r.created_at = AtNs(grant_ns_[g]);
    r.state = GrantState::kAllowed;
    return r;
  }

  void Minted(GrantRecord& r) const {
    r.state = GrantState::kActive;
    r.expires_at = std::chrono::floor<std::chrono::seconds>(r.created_at) + Seconds(kGrantTtlS);
    r.credential_type = "jwt";
    r.credential_sha256 = crypto::Sha256Hex(r.id + salt_);  // stands for the token's digest
    r.credential_audit = {{"kid", kid_}, {"audience", audience_}};
    // The handle (sealed grant id) is cleared at expiry; a value of its size.
    r.sealed_handle = sealed_placeholder_;
  }

  [[nodiscard]] Status Flush() {
    if (batch_.audit_events.empty() && batch_.sessions.empty() && batch_.grants.empty()) {
      return OkStatus();
    }
    records_ += static_cast<int64_t>(batch_.audit_events.size());
    JITBROKER_RETURN_IF_ERROR(committer_.Submit(std::move(batch_)));
    batch_ = WriteBatch();
    ++batch_no_;
    if (records_ >= next_report_) {
      const double s = std::chrono::duration<double>(SteadyClock::now() - start_).count();
      std::fprintf(stderr, "seed_store: %lld records in %.1f s\n", static_cast<long long>(records_),
                   s);
      next_report_ += 100000;
    }
    return OkStatus();
  }

  [[nodiscard]] Status WriteTimeline() {
    start_ = SteadyClock::now();
    decision_ = {{"code", "allowed"},
                 {"matched_rule", "operation:read"},
                 {"policy_version", cfg_.policy->version},
                 {"reason", "tier \"read\" (auto_allow) on \"" + flags_.resource +
                                "\" is inside the task scope and principal \"" + flags_.principal +
                                "\"'s roles"},
                 {"result", "allow"},
                 {"tier", "read"},
                 {"ttl_seconds", kGrantTtlS}};
    for (const Step& step : steps_) {
      const TimePoint at = AtNs(step.at_ns);
      switch (step.kind) {
        case Step::Kind::kOpen: {
          SessionRecord s = Session(step.index);
          // The last heartbeat was within heartbeat_seconds of the end of
          // the timeline (clock_ now), so the stall deadline is far.
          const int64_t hb = s.heartbeat_seconds;
          s.heartbeat_deadline = clock_.Now() - Seconds(step.index % std::max<int64_t>(hb, 1)) +
                                 Seconds(hb * cfg_.sessions.stall_after_missed);
          batch_.audit_events.push_back(
              audit::SessionEvent("session.opened", s, at, "opened", RequestId()));
          batch_.PutSession(std::move(s), std::nullopt);
          break;
        }
        case Step::Kind::kMint: {
          grant_ids_[step.index] = crypto::NewPublicId("grt_", 16);
          grant_batch_[step.index] = batch_no_;
          GrantRecord r = Grant(step.index);
          const std::string rid = RequestId();
          batch_.audit_events.push_back(audit::GrantEvent("grant.decided", r, at, "allowed", rid));
          Minted(r);
          batch_.audit_events.push_back(
              audit::GrantEvent("credential.minted", r, at, "minted", rid));
          if (flags_.grant_rows) {
            batch_.PutGrant(std::move(r), std::nullopt);
          }
          break;
        }
        case Step::Kind::kExpire: {
          if (flags_.grant_rows && grant_batch_[step.index] == batch_no_) {
            // Created in this very batch: a batch's preconditions are checked
            // before its writes, so the expiry goes into the next one.
            JITBROKER_RETURN_IF_ERROR(Flush());
          }
          GrantRecord r = Grant(step.index);
          Minted(r);
          r.state = GrantState::kExpired;
          r.sealed_handle.clear();
          batch_.audit_events.push_back(
              audit::GrantEvent("credential.expired", r, at, "expired", "sweeper"));
          if (flags_.grant_rows) {
            batch_.PutGrant(std::move(r), GrantState::kActive);
          }
          break;
        }
      }
      if (static_cast<int64_t>(batch_.audit_events.size()) >= flags_.batch_records) {
        JITBROKER_RETURN_IF_ERROR(Flush());
      }
    }
    return Flush();
  }

  // Waves of sessions opened now; wave w falls due due_in + w x due_every
  // seconds from now: the first half of it by TTL (expired), the rest by a
  // missed heartbeat (stalled).
  [[nodiscard]] Status WriteDue() {
    const TimePoint now = clock_.Now();
    due_at_unix_ = ToUnixSeconds(now + Seconds(flags_.due_in_s)) + 1;  // the first wave is all due
    for (int64_t w = 0; w < flags_.due_waves && flags_.due > 0; ++w) {
      JITBROKER_RETURN_IF_ERROR(
          WriteDueWave(now, now + Seconds(flags_.due_in_s + w * flags_.due_every_s), w));
    }
    return OkStatus();
  }

  [[nodiscard]] Status WriteDueWave(TimePoint now, TimePoint due_at, int64_t wave) {
    for (int64_t i = 0; i < flags_.due; ++i) {
      authn::NewSessionToken tok = authn::MintSessionToken();
      SessionRecord s;
      s.id = std::move(tok.session_id);
      s.token_sha256 = std::move(tok.token_sha256);
      s.principal_id = flags_.principal;
      s.agent_id = "agent-due-" + std::to_string(i);
      s.task_id = "task-due-" + std::to_string(wave) + "-" + std::to_string(i);
      s.task_description = "live-state benchmark task falling due";
      s.scope = Scope();
      s.state = SessionState::kActive;
      s.created_at = now;
      if (i < (flags_.due + 1) / 2) {
        s.expires_at = due_at;  // a short TTL
        s.heartbeat_seconds = cfg_.sessions.heartbeat_seconds;
        s.heartbeat_deadline =
            now + Seconds(s.heartbeat_seconds * cfg_.sessions.stall_after_missed);
      } else {
        s.expires_at = now + Seconds(cfg_.sessions.max_ttl_seconds);
        s.heartbeat_seconds = std::max<int64_t>(1, flags_.due_in_s);
        s.heartbeat_deadline = due_at;  // no heartbeat ever came
      }
      batch_.audit_events.push_back(
          audit::SessionEvent("session.opened", s, now, "opened", RequestId()));
      batch_.PutSession(std::move(s), std::nullopt);
    }
    return Flush();
  }

  static std::string RequestId() { return crypto::NewPublicId("req_", 12); }

  static constexpr int64_t kGrantTtlS = 300;

  const Flags& flags_;
  const config::Config& cfg_;
  Committer committer_;
  SystemClock clock_;
  const std::string salt_ = crypto::RandomBytes(16);
  std::string kid_ = IssuerKid(cfg_, flags_.issuer);
  std::string audience_ =
      flags_.resource.starts_with("jwt://") ? flags_.resource.substr(6) : flags_.resource;
  // base64url of a 12-byte nonce, a 22-byte grant id and a 16-byte tag.
  std::string sealed_placeholder_ = crypto::Base64UrlEncode(crypto::RandomBytes(50));
  nlohmann::json decision_;
  std::vector<int64_t> open_ns_;
  std::vector<std::string> ids_;
  std::vector<std::string> token_sha256_;
  std::vector<uint32_t> grant_session_;
  std::vector<int64_t> grant_ns_;
  std::vector<std::string> grant_ids_;
  std::vector<int64_t> grant_batch_;  // the batch that minted it
  std::vector<Step> steps_;
  WriteBatch batch_;
  int64_t batch_no_ = 0;
  int64_t records_ = 0;
  int64_t next_report_ = 100000;
  int64_t due_at_unix_ = 0;
  SteadyClock::time_point start_;
};

int Run(const Flags& flags) {
  log::InitLogging("warn");
  auto fail = [](const char* what, const Error& e) {
    std::fprintf(stderr, "seed_store: %s: %s\n", what, e.ToString().c_str());
    return 1;
  };
  auto cfg = config::LoadConfigFile(flags.config);
  if (!cfg) {
    return fail("config", cfg.error());
  }
  if (cfg->policy->FindPrincipal(flags.principal) == nullptr) {
    std::fprintf(stderr, "seed_store: principal %s is not in %s\n", flags.principal.c_str(),
                 flags.config.c_str());
    return 1;
  }
  // Seeded sessions must stay live for a benchmark's 15 minutes (see Plan).
  const config::SessionsConfig& sc = cfg->sessions;
  if (sc.max_ttl_seconds < 1500 || sc.heartbeat_seconds * (sc.stall_after_missed - 1) < 900) {
    std::fprintf(stderr,
                 "seed_store: sessions.max_ttl_seconds must be >= 1500 and heartbeat_seconds x "
                 "(stall_after_missed - 1) >= 900: seeded sessions must not fall due during a "
                 "benchmark\n");
    return 1;
  }
  if (cfg->store.sqlite() == nullptr) {
    std::fprintf(stderr, "seed_store: only the embedded SQLite store is seeded\n");
    return 1;
  }
  auto key = AuditKey(*cfg);
  if (!key) {
    return fail("audit key", key.error());
  }
  auto store = store::Open(cfg->store);
  if (!store) {
    return fail("store", store.error());
  }
  SystemClock clock;
  audit::JournalOptions jo;
  jo.checkpoint.key = *key;
  jo.checkpoint.every_records = cfg->audit.checkpoint_every_records;
  jo.checkpoint.every_seconds = cfg->audit.checkpoint_every_seconds;
  jo.checkpoint.clock = &clock;
  jo.file_sync = audit::FileSync::kInterval;
  auto journal = audit::Journal::Create(store->get(), cfg->audit.file, std::move(jo));
  if (!journal) {
    return fail("journal", journal.error());
  }

  const auto start = SteadyClock::now();
  Seeder seeder(flags, *cfg, journal->get());
  Status st = seeder.Run();
  (*journal)->Stop();  // the shutdown checkpoint, and the file synced
  const double seconds = std::chrono::duration<double>(SteadyClock::now() - start).count();
  const std::optional<ChainHead> head = (*journal)->Head();
  journal->reset();
  store->reset();
  if (!st) {
    return fail("seeding", st.error());
  }
  std::printf(
      "RESULT bench=seed sessions=%lld grants=%lld due=%lld due_waves=%lld records=%lld "
      "head_seq=%lld seconds=%.1f records_per_s=%.0f due_at_unix=%lld\n",
      static_cast<long long>(flags.sessions), static_cast<long long>(seeder.grants()),
      static_cast<long long>(flags.due), static_cast<long long>(flags.due_waves),
      static_cast<long long>(seeder.records()), static_cast<long long>(head ? head->seq : 0),
      seconds, seconds > 0 ? static_cast<double>(seeder.records()) / seconds : 0.0,
      static_cast<long long>(seeder.due_at_unix()));
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
    std::fprintf(stderr, "seed_store: unexpected exception: %s\n", e.what());
  } catch (...) {
    std::fprintf(stderr, "seed_store: unexpected exception\n");
  }
  return 1;
}
