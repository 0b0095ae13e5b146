// Metrics: the broker's Prometheus metrics (text exposition format 0.0.4).
//   jitbroker_http_requests_total{route,method,status}
//   jitbroker_http_request_duration_seconds{route}      (histogram)
//   jitbroker_grants_total{tier,result}
//   jitbroker_audit_commit_duration_seconds             (histogram, per group commit)
//   jitbroker_audit_commit_batches                      (histogram, batches per group commit)
//   jitbroker_sessions_opened_total, jitbroker_credentials_revoked_total{outcome}
//   jitbroker_http_requests_shed_total
//   jitbroker_rate_limited_total{limit}                 (grants_per_session, grants_per_principal,
//                                                        max_pending_per_session, …; fixed names)
//   jitbroker_token_exchanges_total{result,reason}      ("ok" or the RFC 6749 error, and the
//                                                        broker's stable reason code)
//   jitbroker_sweep_duration_seconds                    (histogram, per sweeper pass
//                                                        (BrokerService::Sweep), failed ones too;
//                                                        _count is the number of passes)
//   jitbroker_sweep_handled_total{kind}                 (what the passes handled: sessions_ended,
//                                                        grants_expired, approvals_expired,
//                                                        revocations_retried, replay_keys_pruned)
//
// Thread-safety: all methods are thread-safe.
#pragma once

#include <array>
#include <atomic>
#include <cstdint>
#include <initializer_list>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <tuple>
#include <utility>
#include <vector>

namespace jitbroker {

class Histogram {
 public:
  explicit Histogram(std::vector<double> bounds);
  void Observe(double value);
  // Appends the _bucket/_sum/_count lines for `name{labels}`.
  void Render(std::string& out, const std::string& name, const std::string& labels) const;

 private:
  std::vector<double> bounds_;
  mutable std::mutex mu_;
  std::vector<uint64_t> counts_;  // one per bound, plus +Inf
  double sum_ = 0;
  uint64_t count_ = 0;
};

class Metrics {
 public:
  Metrics();
  void ObserveRequest(const std::string& route, const std::string& method, int status,
                      double seconds);
  void CountGrant(const std::string& tier, const std::string& result);
  void ObserveAuditCommit(size_t batches, double seconds);
  void CountSessionOpened();
  void CountRevocation(const std::string& outcome);
  void CountShed();
  // A request refused by the limit or bound named `limit` (a fixed name from
  // the code, never client input: the label set stays bounded).
  void CountRateLimited(std::string_view limit);
  // POST /v1/token outcomes: "ok" or the RFC 6749 error code.
  // `reason` is the refusal's stable code (Error::reason); anything that is
  // not a short [a-z0-9_] code is counted as "other" (bounded cardinality).
  void CountTokenExchange(const std::string& result, std::string_view reason);
  // One sweeper pass: how long it took and how many items of each kind it
  // handled (fixed names from the code: the label set stays bounded).
  // Recorded together, so a scrape sees a pass whole: its duration and
  // what it did, or neither.
  void ObserveSweep(double seconds,
                    std::initializer_list<std::pair<std::string_view, uint64_t>> handled);
  std::string Render() const;

 private:
  mutable std::mutex mu_;
  std::map<std::tuple<std::string, std::string, int>, uint64_t> requests_;
  std::map<std::string, std::unique_ptr<Histogram>> latency_;
  std::map<std::pair<std::string, std::string>, uint64_t> grants_;
  std::map<std::string, uint64_t> revocations_;
  std::map<std::string, uint64_t, std::less<>> rate_limited_;
  std::map<std::pair<std::string, std::string>, uint64_t> token_exchanges_;  // (result, reason)
  std::map<std::string, uint64_t, std::less<>> sweep_handled_;               // guarded by mu_
  Histogram audit_latency_;
  Histogram audit_batches_;
  Histogram sweep_latency_;  // observed under mu_ (ObserveSweep)
  std::atomic<uint64_t> sessions_opened_{0};
  std::atomic<uint64_t> shed_{0};
};

}  // namespace jitbroker
