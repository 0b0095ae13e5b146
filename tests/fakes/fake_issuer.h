// FakeIssuer: an in-memory Issuer standing in for an upstream (GitHub, STS,
// …) in tests and benchmarks. It mints opaque random tokens, remembers (by
// SHA-256 only) which tokens it issued, and revokes them by handle the way a
// real upstream would: an unknown handle is rejected, a second revoke of the
// same credential succeeds (idempotent).
//
//   testing::FakeIssuer issuer({.name = "fake", .revoke_latency = 50ms});
//   issuer.FailNextRevokes(2);            // the next two Revoke() calls fail
//   ... drive the service ...
//   CHECK(issuer.MaxConcurrentRevokes() > 1);   // fan-out was concurrent
//
// Credentials: type "fake_token", secret field "token" (a random
// "fake_<base64url>" string), fingerprint_sha256 = crypto::Sha256Hex(token),
// revocation_handle = the token itself (a secret: the service must seal it),
// expires_at = request.now + ttl (ttl = request.ttl_seconds, or the default
// when 0, capped at max_ttl_seconds).
//
// Latency: mint_latency / revoke_latency make each call sleep for that long
// (outside any lock), as an upstream round trip would. Injected failures
// also take the latency: a failing upstream is not faster.
//
// Failures: injected ones are kUnavailable, reason "upstream_unavailable",
// retryable. A revoke with a handle this issuer never minted is
// kInvalidArgument "unknown_handle" (not retryable; never names the handle).
//
// Revoke outcomes follow `revocability`: kRevocable -> kRevoked,
// kDenyByCondition -> kDenyInstalled, kExpiryOnly -> kExpiryOnly with the
// credential's residual lifetime in seconds (never negative).
//
// Thread-safety: every method is thread-safe; counters may be read while
// calls are in flight.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <mutex>
#include <string>
#include <unordered_map>
#include <vector>

#include "jitbroker/issuer.h"

namespace jitbroker::testing {

struct FakeIssuerOptions {
  std::string name = "fake";
  std::string type = "fake";
  Revocability revocability = Revocability::kRevocable;
  int64_t min_ttl_seconds = 1;
  int64_t default_ttl_seconds = 900;
  int64_t max_ttl_seconds = 3600;
  std::chrono::milliseconds mint_latency{0};
  std::chrono::milliseconds revoke_latency{0};
  // The tier a request's issuer-specific scope implies. Default: an empty
  // scope implies read; any non-empty scope is kInvalidArgument
  // "invalid_scope" (this issuer has no scope vocabulary).
  std::function<Result<Tier>(const GrantRequest&)> implied_tier = nullptr;
  // The scope items (Issuer::ScopeItems) of every request. Default: none.
  std::vector<std::string> scope_items{};  // {}: designated initializers may omit it (-Wextra)
};

class FakeIssuer final : public Issuer {
 public:
  explicit FakeIssuer(FakeIssuerOptions options = {});

  const IssuerDescription& Describe() const override { return description_; }
  [[nodiscard]] Result<Tier> ImpliedTier(const GrantRequest& request) const override;
  // scope_items for every request ImpliedTier accepts (and its error for
  // the others, as the Issuer contract says).
  [[nodiscard]] Result<std::vector<std::string>> ScopeItems(
      const GrantRequest& request) const override {
    JITBROKER_ASSIGN_OR_RETURN(Tier tier, ImpliedTier(request));
    (void)tier;
    return scope_items_;
  }
  [[nodiscard]] Result<MintResult> Mint(const MintRequest& request) override;
  [[nodiscard]] Result<RevokeOutcome> Revoke(const RevokeRequest& request) override;

  // Failure injection. Counts add up: FailNextMints(2) twice fails four.
  void FailNextMints(int n);
  void FailNextRevokes(int n);
  // While true every Revoke() fails (after the FailNextRevokes budget).
  void SetFailRevokesAlways(bool fail);
  // Latency may change between phases of a test.
  void SetMintLatency(std::chrono::milliseconds latency);
  void SetRevokeLatency(std::chrono::milliseconds latency);

  // Counters.
  uint64_t MintCalls() const { return mint_calls_.load(); }
  uint64_t Mints() const { return mints_.load(); }               // successful
  uint64_t FailedMints() const { return failed_mints_.load(); }  // injected failures
  uint64_t RevokeCalls() const { return revoke_calls_.load(); }
  uint64_t Revokes() const { return revokes_.load(); }               // successful, repeats included
  uint64_t FailedRevokes() const { return failed_revokes_.load(); }  // injected failures
  uint64_t UnknownHandleRevokes() const { return unknown_handle_revokes_.load(); }
  // Every request Mint() was called with, in call order (what the broker
  // asked the upstream for: e.g. the parameters exactly as minted).
  std::vector<MintRequest> MintRequests() const;
  // Grant ids (as given at mint) of the credentials revoked, each once, in
  // the order their first successful revoke finished.
  std::vector<std::string> RevokedGrantIds() const;
  bool IsRevoked(const std::string& grant_id) const;
  // Credentials minted and not (yet) revoked.
  size_t LiveCredentials() const;
  // Revoke() calls in flight right now, and the most ever seen at once.
  int RevokesInFlight() const { return revokes_in_flight_.load(); }
  int MaxConcurrentRevokes() const { return max_concurrent_revokes_.load(); }
  // Starts a new measurement window for MaxConcurrentRevokes().
  void ResetMaxConcurrentRevokes() { max_concurrent_revokes_.store(revokes_in_flight_.load()); }

 private:
  struct Minted {
    std::string grant_id;
    TimePoint expires_at;
    bool revoked = false;
  };

  // Consumes one unit of an injected-failure budget; true if this call fails.
  static bool TakeFailure(int& budget);

  const IssuerDescription description_;
  const std::function<Result<Tier>(const GrantRequest&)> implied_tier_;
  const std::vector<std::string> scope_items_;

  mutable std::mutex mu_;
  // Keyed by SHA-256 hex of the token: the fake keeps no credential values.
  std::unordered_map<std::string, Minted> minted_;
  std::vector<std::string> revoked_grant_ids_;
  std::vector<MintRequest> mint_requests_;
  int fail_next_mints_ = 0;
  int fail_next_revokes_ = 0;
  bool fail_revokes_always_ = false;

  std::atomic<int64_t> mint_latency_ms_;
  std::atomic<int64_t> revoke_latency_ms_;
  std::atomic<uint64_t> mint_calls_{0};
  std::atomic<uint64_t> mints_{0};
  std::atomic<uint64_t> failed_mints_{0};
  std::atomic<uint64_t> revoke_calls_{0};
  std::atomic<uint64_t> revokes_{0};
  std::atomic<uint64_t> failed_revokes_{0};
  std::atomic<uint64_t> unknown_handle_revokes_{0};
  std::atomic<int> revokes_in_flight_{0};
  std::atomic<int> max_concurrent_revokes_{0};
};

}  // namespace jitbroker::testing
