#include "broker/oidc/replay_cache.h"

#include <string>

namespace jitbroker::oidc {

std::string ReplayKey(std::string_view issuer, std::string_view jti) {
  // Length first: no choice of values makes two different pairs collide.
  std::string key = std::to_string(issuer.size()) + ":";
  key += issuer;
  key += jti;
  return key;
}

void ReplayCache::PurgeLocked(TimePoint now) {
  while (!by_expiry_.empty() && by_expiry_.begin()->first <= now) {
    auto it = entries_.find(by_expiry_.begin()->second);
    if (it != entries_.end() && it->second == by_expiry_.begin()->first) {
      entries_.erase(it);
    }
    by_expiry_.erase(by_expiry_.begin());
  }
}

Status ReplayCache::Reserve(const std::string& key, TimePoint expires_at, TimePoint now) {
  std::lock_guard lock(mu_);
  PurgeLocked(now);
  if (auto it = entries_.find(key); it != entries_.end()) {
    return std::unexpected(
        Unauthenticated("token_replayed", "subject_token was already exchanged (jti replay)"));
  }
  if (entries_.size() >= max_entries_) {
    Error e =
        Unavailable("replay_cache_full", "too many recent token exchanges to track; retry shortly");
    e.retryable = true;
    e.retry_after = Seconds(5);
    return std::unexpected(e);
  }
  // Kept at least a moment past `now`, so an expired-but-within-leeway
  // token still cannot be replayed.
  if (expires_at <= now) {
    expires_at = now + Seconds(1);
  }
  entries_.emplace(key, expires_at);
  by_expiry_.emplace(expires_at, key);
  return OkStatus();
}

void ReplayCache::Release(const std::string& key) {
  std::lock_guard lock(mu_);
  entries_.erase(key);  // its by_expiry_ entry is dropped when it comes due
}

size_t ReplayCache::size() const {
  std::lock_guard lock(mu_);
  return entries_.size();
}

}  // namespace jitbroker::oidc
