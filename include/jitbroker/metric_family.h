// MetricFamily: one Prometheus metric family that a component outside the
// core metrics (an issuer, a store) exports, gauges and counters only. The
// service renders them after the broker's own (BrokerService::
// AppendComponentMetrics, GET /metrics).
//
// Thread-safety: a value type.
#pragma once

#include <string>
#include <utility>
#include <vector>

namespace jitbroker {

struct MetricFamily {
  std::string name;  // e.g. "jitbroker_github_ratelimit_remaining"
  std::string type;  // "gauge" | "counter"
  std::string help;
  // Label text without braces ("issuer=\"github\",resource=\"core\"") and value.
  std::vector<std::pair<std::string, double>> samples;
};

}  // namespace jitbroker
