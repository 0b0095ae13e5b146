// TtlCache: a bounded, time-limited cache with single-flight fills, for
// upstream lookups that many requests need at once (installation ids,
// collaborator permissions). At most `max_entries` values are kept (least
// recently used evicted first), each for `ttl`; concurrent misses of one key
// make one upstream call and share its result. Errors are never cached.
//
// Thread-safety: all methods are thread-safe. `fetch` runs without the lock.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <functional>
#include <list>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <utility>

#include "jitbroker/clock.h"
#include "jitbroker/result.h"

namespace jitbroker::issuers::github_app {

template <class V>
class TtlCache {
 public:
  struct Lookup {
    V value;
    bool cached = false;  // served from the cache (or from a fill another caller made)
  };

  TtlCache(size_t max_entries, std::chrono::seconds ttl, const Clock* clock)
      : max_entries_(max_entries), ttl_(ttl), clock_(clock) {}

  [[nodiscard]] Result<Lookup> Get(const std::string& key,
                                   const std::function<Result<V>()>& fetch) {
    std::shared_ptr<Flight> flight;
    bool leader = false;
    {
      std::unique_lock lock(mu_);
      if (auto it = entries_.find(key); it != entries_.end()) {
        if (clock_->Now() < it->second.expires_at) {
          lru_.splice(lru_.begin(), lru_, it->second.lru_pos);
          ++hits_;
          return Lookup{it->second.value, true};
        }
        lru_.erase(it->second.lru_pos);
        entries_.erase(it);
      }
      auto [fit, inserted] = flights_.try_emplace(key);
      if (inserted) {
        fit->second = std::make_shared<Flight>();
        leader = true;
        ++misses_;
      } else {
        ++hits_;
      }
      flight = fit->second;
    }
    if (!leader) {
      std::unique_lock lock(mu_);
      flight_cv_.wait(lock, [&] { return flight->done; });
      if (!flight->result) {
        return std::unexpected(flight->result.error());
      }
      return Lookup{*flight->result, true};
    }
    Result<V> fetched = fetch();
    {
      std::lock_guard lock(mu_);
      if (fetched && max_entries_ > 0) {
        Insert(key, *fetched);
      }
      flight->result = fetched;
      flight->done = true;
      flights_.erase(key);
    }
    flight_cv_.notify_all();
    if (!fetched) {
      return std::unexpected(fetched.error());
    }
    return Lookup{std::move(*fetched), false};
  }

  void Erase(const std::string& key) {
    std::lock_guard lock(mu_);
    if (auto it = entries_.find(key); it != entries_.end()) {
      lru_.erase(it->second.lru_pos);
      entries_.erase(it);
    }
  }

  size_t size() const {
    std::lock_guard lock(mu_);
    return entries_.size();
  }
  uint64_t hits() const {
    std::lock_guard lock(mu_);
    return hits_;
  }
  uint64_t misses() const {
    std::lock_guard lock(mu_);
    return misses_;
  }

 private:
  struct Entry {
    V value;
    TimePoint expires_at;
    std::list<std::string>::iterator lru_pos;
  };
  struct Flight {
    bool done = false;
    Result<V> result = std::unexpected(Error{});
  };

  void Insert(const std::string& key, const V& value) {
    if (auto it = entries_.find(key); it != entries_.end()) {
      lru_.erase(it->second.lru_pos);
      entries_.erase(it);
    }
    while (entries_.size() >= max_entries_ && !lru_.empty()) {
      entries_.erase(lru_.back());
      lru_.pop_back();
    }
    lru_.push_front(key);
    entries_.emplace(key, Entry{value, clock_->Now() + ttl_, lru_.begin()});
  }

  const size_t max_entries_;
  const std::chrono::seconds ttl_;
  const Clock* clock_;
  mutable std::mutex mu_;
  std::condition_variable flight_cv_;
  std::map<std::string, Entry> entries_;
  std::list<std::string> lru_;  // most recently used first
  std::map<std::string, std::shared_ptr<Flight>> flights_;
  uint64_t hits_ = 0;
  uint64_t misses_ = 0;
};

}  // namespace jitbroker::issuers::github_app
