// Retrying an upstream call within one deadline: exponential backoff with
// full jitter, as the issuers' API clients (aws_sts, gcp) retry throttling
// and server errors.
//
// Thread-safety: pure, with a per-thread random source.
#pragma once

#include <chrono>
#include <functional>

namespace jitbroker {

// Sleeps before attempt `attempt + 1`: a uniform delay in
// [0, base * 2^min(attempt, 10)] (at least 1 ms of range), through `sleep`
// when set (tests), else this thread. Returns false, without sleeping, when
// the delay would reach `deadline`: the caller stops retrying.
bool BackoffBefore(int attempt, std::chrono::milliseconds base,
                   std::chrono::steady_clock::time_point deadline,
                   const std::function<void(std::chrono::milliseconds)>& sleep);

}  // namespace jitbroker
