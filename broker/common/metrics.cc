#include "broker/common/metrics.h"

#include <memory>

#include <fmt/format.h>

namespace jitbroker {

namespace {
std::vector<double> LatencyBounds() {
  return {0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5};
}
// A pass with nothing due costs a few index probes (~0.1 ms); one that ends
// sessions costs a durable commit per session.
std::vector<double> SweepBounds() {
  return {0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
          0.1,    0.25,    0.5,    1,     2.5,    5,     10,   30};
}
}  // namespace

Histogram::Histogram(std::vector<double> bounds)
    : bounds_(std::move(bounds)), counts_(bounds_.size() + 1, 0) {}

void Histogram::Observe(double v) {
  std::lock_guard lock(mu_);
  size_t i = 0;
  while (i < bounds_.size() && v > bounds_[i]) {
    ++i;
  }
  ++counts_[i];
  sum_ += v;
  ++count_;
}

void Histogram::Render(std::string& out, const std::string& name, const std::string& labels) const {
  std::lock_guard lock(mu_);
  const std::string sep = labels.empty() ? "" : ",";
  uint64_t cumulative = 0;
  for (size_t i = 0; i < bounds_.size(); ++i) {
    cumulative += counts_[i];
    out +=
        fmt::format("{}_bucket{{{}{}le=\"{}\"}} {}\n", name, labels, sep, bounds_[i], cumulative);
  }
  cumulative += counts_.back();
  out += fmt::format("{}_bucket{{{}{}le=\"+Inf\"}} {}\n", name, labels, sep, cumulative);
  const std::string braces = labels.empty() ? "" : "{" + labels + "}";
  out += fmt::format("{}_sum{} {}\n", name, braces, sum_);
  out += fmt::format("{}_count{} {}\n", name, braces, count_);
}

Metrics::Metrics()
    : audit_latency_(LatencyBounds()),
      audit_batches_({1, 2, 4, 8, 16, 32, 64, 128, 256}),
      sweep_latency_(SweepBounds()) {}

void Metrics::ObserveRequest(const std::string& route, const std::string& method, int status,
                             double seconds) {
  Histogram* h = nullptr;
  {
    std::lock_guard lock(mu_);
    ++requests_[{route, method, status}];
    auto& slot = latency_[route];
    if (!slot) {
      slot = std::make_unique<Histogram>(LatencyBounds());
    }
    h = slot.get();
  }
  h->Observe(seconds);
}

void Metrics::CountGrant(const std::string& tier, const std::string& result) {
  std::lock_guard lock(mu_);
  ++grants_[{tier, result}];
}

void Metrics::ObserveAuditCommit(size_t batches, double seconds) {
  audit_latency_.Observe(seconds);
  audit_batches_.Observe(static_cast<double>(batches));
}

void Metrics::CountSessionOpened() { ++sessions_opened_; }
void Metrics::CountShed() { ++shed_; }
void Metrics::CountRateLimited(std::string_view limit) {
  std::lock_guard lock(mu_);
  ++rate_limited_[std::string(limit)];
}
void Metrics::CountTokenExchange(const std::string& result, std::string_view reason) {
  const bool code =
      !reason.empty() && reason.size() <= 64 &&
      reason.find_first_not_of("abcdefghijklmnopqrstuvwxyz0123456789_") == std::string_view::npos;
  std::lock_guard lock(mu_);
  ++token_exchanges_[{result, code ? std::string(reason) : std::string("other")}];
}
void Metrics::ObserveSweep(double seconds,
                           std::initializer_list<std::pair<std::string_view, uint64_t>> handled) {
  std::lock_guard lock(mu_);  // Render holds it too: a scrape sees the pass whole
  sweep_latency_.Observe(seconds);
  for (const auto& [kind, n] : handled) {
    auto it = sweep_handled_.find(kind);
    if (it == sweep_handled_.end()) {
      it = sweep_handled_.emplace(std::string(kind), 0).first;
    }
    it->second += n;
  }
}
void Metrics::CountRevocation(const std::string& outcome) {
  std::lock_guard lock(mu_);
  ++revocations_[outcome];
}

std::string Metrics::Render() const {
  std::string out;
  std::lock_guard lock(mu_);
  out += "# HELP jitbroker_http_requests_total HTTP requests by route, method and status.\n";
  out += "# TYPE jitbroker_http_requests_total counter\n";
  for (const auto& [key, n] : requests_) {
    out += fmt::format(
        "jitbroker_http_requests_total{{route=\"{}\",method=\"{}\",status=\"{}\"}} {}\n",
        std::get<0>(key), std::get<1>(key), std::get<2>(key), n);
  }
  out += "# HELP jitbroker_http_request_duration_seconds HTTP request latency by route.\n";
  out += "# TYPE jitbroker_http_request_duration_seconds histogram\n";
  for (const auto& [route, h] : latency_) {
    h->Render(out, "jitbroker_http_request_duration_seconds", fmt::format("route=\"{}\"", route));
  }
  out += "# HELP jitbroker_grants_total Grant decisions by tier and result.\n";
  out += "# TYPE jitbroker_grants_total counter\n";
  for (const auto& [key, n] : grants_) {
    out += fmt::format("jitbroker_grants_total{{tier=\"{}\",result=\"{}\"}} {}\n", key.first,
                       key.second, n);
  }
  out += "# HELP jitbroker_credentials_revoked_total Credential revocations by outcome.\n";
  out += "# TYPE jitbroker_credentials_revoked_total counter\n";
  for (const auto& [outcome, n] : revocations_) {
    out += fmt::format("jitbroker_credentials_revoked_total{{outcome=\"{}\"}} {}\n", outcome, n);
  }
  out +=
      "# HELP jitbroker_audit_commit_duration_seconds Durable group commit latency (store + audit "
      "file).\n";
  out += "# TYPE jitbroker_audit_commit_duration_seconds histogram\n";
  audit_latency_.Render(out, "jitbroker_audit_commit_duration_seconds", "");
  out += "# HELP jitbroker_audit_commit_batches Requests per group commit.\n";
  out += "# TYPE jitbroker_audit_commit_batches histogram\n";
  audit_batches_.Render(out, "jitbroker_audit_commit_batches", "");
  out += "# HELP jitbroker_sessions_opened_total Sessions opened.\n";
  out += "# TYPE jitbroker_sessions_opened_total counter\n";
  out += fmt::format("jitbroker_sessions_opened_total {}\n", sessions_opened_.load());
  out +=
      "# HELP jitbroker_http_requests_shed_total Requests answered 503 because the server was "
      "saturated.\n";
  out += "# TYPE jitbroker_http_requests_shed_total counter\n";
  out += fmt::format("jitbroker_http_requests_shed_total {}\n", shed_.load());
  out +=
      "# HELP jitbroker_rate_limited_total Requests refused by a rate limit or a bound, by "
      "limit.\n";
  out += "# TYPE jitbroker_rate_limited_total counter\n";
  for (const auto& [limit, n] : rate_limited_) {
    out += fmt::format("jitbroker_rate_limited_total{{limit=\"{}\"}} {}\n", limit, n);
  }
  out +=
      "# HELP jitbroker_token_exchanges_total CI OIDC token exchanges by outcome (ok or RFC 6749 "
      "error) and reason code.\n";
  out += "# TYPE jitbroker_token_exchanges_total counter\n";
  for (const auto& [key, n] : token_exchanges_) {
    out += fmt::format("jitbroker_token_exchanges_total{{result=\"{}\",reason=\"{}\"}} {}\n",
                       key.first, key.second, n);
  }
  out +=
      "# HELP jitbroker_sweep_duration_seconds Duration of one sweeper pass (session deadlines, "
      "grant and approval expiry, revocation retries).\n";
  out += "# TYPE jitbroker_sweep_duration_seconds histogram\n";
  sweep_latency_.Render(out, "jitbroker_sweep_duration_seconds", "");
  out += "# HELP jitbroker_sweep_handled_total Items the sweeper passes handled, by kind.\n";
  out += "# TYPE jitbroker_sweep_handled_total counter\n";
  for (const auto& [kind, n] : sweep_handled_) {
    out += fmt::format("jitbroker_sweep_handled_total{{kind=\"{}\"}} {}\n", kind, n);
  }
  return out;
}

}  // namespace jitbroker
