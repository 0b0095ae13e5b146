// ReplayCache: remembers which subject tokens (by issuer and `jti`) were
// exchanged, until they can no longer be accepted, so each is used once
// (docs/concepts.md "OIDC tokens"). The key names no trust policy: a
// token exchanged under one policy cannot be replayed under another policy
// of the same issuer (a `jti` is unique per issuer, not per audience).
//
// How long: the caller passes the last instant at which the token could pass
// the time checks (token_verifier.h UsableUntilUnix: min(exp, iat + maximum
// age) + leeway, over the issuer's policies), so a token with a far-future
// `exp` is kept as long as it could be replayed, and not longer.
//
// In memory, and only the first check: the store is the authority
// (Store::ReplayReserved, WriteBatch::replay_reservations), so a restart
// forgets nothing (issue #10). This cache answers concurrent exchanges of
// one token in this process without a store round trip. Bounded: when
// `max_entries` unexpired entries are held, new tokens are refused
// (fail closed) rather than old ones forgotten.
//
// Thread-safety: all methods are thread-safe.
#pragma once

#include <cstddef>
#include <map>
#include <mutex>
#include <string>
#include <string_view>
#include <unordered_map>

#include "jitbroker/clock.h"
#include "jitbroker/result.h"

namespace jitbroker::oidc {

class ReplayCache {
 public:
  explicit ReplayCache(size_t max_entries = 200000) : max_entries_(max_entries) {}

  // Records `key` until `expires_at`. Errors: kUnauthenticated "token_replayed"
  // when it is already recorded and not expired; kUnavailable
  // "replay_cache_full" when the cache is full of unexpired entries.
  [[nodiscard]] Status Reserve(const std::string& key, TimePoint expires_at, TimePoint now);
  // Forgets a reservation whose exchange failed, so the token may be retried.
  void Release(const std::string& key);
  size_t size() const;

 private:
  void PurgeLocked(TimePoint now);

  const size_t max_entries_;
  mutable std::mutex mu_;
  std::unordered_map<std::string, TimePoint> entries_;  // guarded by mu_
  std::multimap<TimePoint, std::string> by_expiry_;     // guarded by mu_
};

// The cache key of a token: issuer and jti, unambiguously joined.
std::string ReplayKey(std::string_view issuer, std::string_view jti);

}  // namespace jitbroker::oidc
