#include "tests/fakes/fake_issuer.h"

#include <algorithm>
#include <thread>
#include <utility>

#include "broker/crypto/crypto.h"

namespace jitbroker::testing {

namespace {

IssuerDescription DescriptionFrom(const FakeIssuerOptions& o) {
  IssuerDescription d;
  d.name = o.name;
  d.type = o.type;
  d.revocability = o.revocability;
  d.min_ttl_seconds = o.min_ttl_seconds;
  d.default_ttl_seconds = o.default_ttl_seconds;
  d.max_ttl_seconds = o.max_ttl_seconds;
  return d;
}

Result<Tier> DefaultImpliedTier(const GrantRequest& request) {
  if (!request.scope.is_null() && !(request.scope.is_object() && request.scope.empty())) {
    return std::unexpected(
        InvalidArgument("invalid_scope", "the fake issuer takes no issuer-specific scope"));
  }
  return Tier::kRead;
}

Error UpstreamUnavailable(std::string_view what) {
  Error e = Unavailable("upstream_unavailable", "the upstream is unavailable",
                        "fake issuer: injected " + std::string(what) + " failure");
  e.retryable = true;
  return e;
}

void SimulateLatency(int64_t ms) {
  if (ms > 0) {
    std::this_thread::sleep_for(std::chrono::milliseconds(ms));
  }
}

// Tracks in-flight Revoke() calls and the high-water mark.
class InFlight {
 public:
  InFlight(std::atomic<int>& in_flight, std::atomic<int>& max_seen) : in_flight_(in_flight) {
    const int now = in_flight_.fetch_add(1) + 1;
    int seen = max_seen.load();
    while (now > seen && !max_seen.compare_exchange_weak(seen, now)) {
    }
  }
  ~InFlight() { in_flight_.fetch_sub(1); }
  InFlight(const InFlight&) = delete;
  InFlight& operator=(const InFlight&) = delete;

 private:
  std::atomic<int>& in_flight_;
};

}  // namespace

FakeIssuer::FakeIssuer(FakeIssuerOptions options)
    : description_(DescriptionFrom(options)),
      implied_tier_(options.implied_tier
                        ? std::move(options.implied_tier)
                        : std::function<Result<Tier>(const GrantRequest&)>(DefaultImpliedTier)),
      scope_items_(options.scope_items),
      mint_latency_ms_(options.mint_latency.count()),
      revoke_latency_ms_(options.revoke_latency.count()) {}

Result<Tier> FakeIssuer::ImpliedTier(const GrantRequest& request) const {
  return implied_tier_(request);
}

bool FakeIssuer::TakeFailure(int& budget) {
  if (budget > 0) {
    --budget;
    return true;
  }
  return false;
}

Result<MintResult> FakeIssuer::Mint(const MintRequest& request) {
  mint_calls_.fetch_add(1);
  SimulateLatency(mint_latency_ms_.load());
  {
    std::lock_guard lock(mu_);
    mint_requests_.push_back(request);
    if (TakeFailure(fail_next_mints_)) {
      failed_mints_.fetch_add(1);
      return std::unexpected(UpstreamUnavailable("mint"));
    }
  }
  int64_t ttl = request.ttl_seconds > 0 ? request.ttl_seconds : description_.default_ttl_seconds;
  ttl = std::max(description_.min_ttl_seconds, std::min(ttl, description_.max_ttl_seconds));

  MintResult out;
  out.type = "fake_token";
  out.expires_at = request.now + std::chrono::seconds(ttl);
  SecretValue token("fake_" + crypto::Base64UrlEncode(crypto::RandomBytes(32)));
  const std::string token_sha256 = crypto::Sha256Hex(token.Reveal());
  out.fingerprint_sha256 = token_sha256;
  out.fields = {{"issuer", description_.name}, {"ttl_seconds", ttl}};
  out.audit_fields = {{"fake_issuer", description_.name}};
  out.revocation_handle = token.Clone();
  out.secrets.emplace_back("token", std::move(token));
  {
    std::lock_guard lock(mu_);
    minted_[token_sha256] = Minted{request.grant_id, out.expires_at, false};
  }
  mints_.fetch_add(1);
  return out;
}

Result<RevokeOutcome> FakeIssuer::Revoke(const RevokeRequest& request) {
  InFlight in_flight(revokes_in_flight_, max_concurrent_revokes_);
  revoke_calls_.fetch_add(1);
  SimulateLatency(revoke_latency_ms_.load());

  // Hash first: the map holds digests only, and hashing outside the lock
  // keeps the critical section short.
  const std::string handle_sha256 = crypto::Sha256Hex(request.revocation_handle.Reveal());
  TimePoint expires_at;
  {
    std::lock_guard lock(mu_);
    if (TakeFailure(fail_next_revokes_) || fail_revokes_always_) {
      failed_revokes_.fetch_add(1);
      return std::unexpected(UpstreamUnavailable("revoke"));
    }
    auto it = minted_.find(handle_sha256);
    if (request.revocation_handle.empty() || it == minted_.end()) {
      unknown_handle_revokes_.fetch_add(1);
      return std::unexpected(InvalidArgument(
          "unknown_handle", "the revocation handle does not name a credential of this issuer"));
    }
    if (!it->second.revoked) {
      it->second.revoked = true;
      revoked_grant_ids_.push_back(it->second.grant_id);
    }
    expires_at = it->second.expires_at;
  }
  revokes_.fetch_add(1);

  RevokeOutcome outcome;
  switch (description_.revocability) {
    case Revocability::kRevocable:
      outcome.kind = RevokeOutcomeKind::kRevoked;
      break;
    case Revocability::kDenyByCondition:
      outcome.kind = RevokeOutcomeKind::kDenyInstalled;
      break;
    case Revocability::kExpiryOnly:
      outcome.kind = RevokeOutcomeKind::kExpiryOnly;
      outcome.residual_seconds =
          std::max<int64_t>(0, ToUnixSeconds(expires_at) - ToUnixSeconds(request.now));
      break;
  }
  return outcome;
}

void FakeIssuer::FailNextMints(int n) {
  std::lock_guard lock(mu_);
  fail_next_mints_ += std::max(0, n);
}

void FakeIssuer::FailNextRevokes(int n) {
  std::lock_guard lock(mu_);
  fail_next_revokes_ += std::max(0, n);
}

void FakeIssuer::SetFailRevokesAlways(bool fail) {
  std::lock_guard lock(mu_);
  fail_revokes_always_ = fail;
}

void FakeIssuer::SetMintLatency(std::chrono::milliseconds latency) {
  mint_latency_ms_.store(latency.count());
}

void FakeIssuer::SetRevokeLatency(std::chrono::milliseconds latency) {
  revoke_latency_ms_.store(latency.count());
}

std::vector<MintRequest> FakeIssuer::MintRequests() const {
  std::lock_guard lock(mu_);
  return mint_requests_;
}

std::vector<std::string> FakeIssuer::RevokedGrantIds() const {
  std::lock_guard lock(mu_);
  return revoked_grant_ids_;
}

bool FakeIssuer::IsRevoked(const std::string& grant_id) const {
  std::lock_guard lock(mu_);
  return std::find(revoked_grant_ids_.begin(), revoked_grant_ids_.end(), grant_id) !=
         revoked_grant_ids_.end();
}

size_t FakeIssuer::LiveCredentials() const {
  std::lock_guard lock(mu_);
  return static_cast<size_t>(std::count_if(minted_.begin(), minted_.end(),
                                           [](const auto& kv) { return !kv.second.revoked; }));
}

}  // namespace jitbroker::testing
