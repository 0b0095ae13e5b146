// TtlCache: a bounded, time-limited cache with single-flight fills, for
// upstream lookups that many requests need at once (installation ids,
// collaborator permissions, the broker's own check tokens). At most
// `max_entries` values are kept (least recently used evicted first), each for
// `ttl`; concurrent misses of one key make one upstream call and share its
// result. Errors are never cached.
//
// Bounded waits: a caller that joins another caller's fill waits at most
// `wait_timeout`, then gets a retryable kUnavailable "upstream_wait_timeout"
// (the fill itself goes on and may still populate the cache). A fill that
// throws completes its flight with kInternal (an RAII guard), so waiting
// callers are released and the next Get of the key fills afresh; the
// exception then propagates to the filling caller.
//
// Eviction: `on_evict`, when set, receives every value the cache drops by
// itself (LRU bound, TTL expiry noticed on lookup, replacement of a key), so
// that values owning upstream resources (tokens) can release them. It runs
// without the lock, after the operation that evicted. Erase() and Drain()
// hand no value to it: Drain() returns what was held instead.
//
// Thread-safety: all methods are thread-safe. `fetch` and `on_evict` run
// without the lock.
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
#include <vector>

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

  TtlCache(size_t max_entries, std::chrono::seconds ttl, const Clock* clock,
           std::chrono::milliseconds wait_timeout = std::chrono::seconds(30),
           std::function<void(V)> on_evict = {})
      : max_entries_(max_entries),
        ttl_(ttl),
        clock_(clock),
        wait_timeout_(wait_timeout),
        on_evict_(std::move(on_evict)) {}

  TtlCache(const TtlCache&) = delete;
  TtlCache& operator=(const TtlCache&) = delete;

  [[nodiscard]] Result<Lookup> Get(const std::string& key,
                                   const std::function<Result<V>()>& fetch) {
    std::shared_ptr<Flight> flight;
    bool leader = false;
    std::vector<V> evicted;
    {
      std::unique_lock lock(mu_);
      if (auto it = entries_.find(key); it != entries_.end()) {
        if (clock_->Now() < it->second.expires_at) {
          lru_.splice(lru_.begin(), lru_, it->second.lru_pos);
          ++hits_;
          return Lookup{it->second.value, true};
        }
        evicted.push_back(std::move(it->second.value));
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
    Evicted(std::move(evicted));
    if (!leader) {
      std::unique_lock lock(mu_);
      if (!flight_cv_.wait_for(lock, wait_timeout_, [&] { return flight->done; })) {
        ++wait_timeouts_;
        Error e = Unavailable("upstream_wait_timeout",
                              "timed out after " + std::to_string(wait_timeout_.count()) +
                                  " ms waiting for a concurrent upstream lookup");
        e.retryable = true;
        return std::unexpected(std::move(e));
      }
      if (!flight->result) {
        return std::unexpected(flight->result.error());
      }
      return Lookup{*flight->result, true};
    }

    // Completes the flight even when `fetch` throws, so that the key never
    // stays wedged and followers are released.
    struct FillGuard {
      TtlCache* cache;
      const std::string& key;
      const std::shared_ptr<Flight>& flight;
      bool completed = false;
      ~FillGuard() {
        if (!completed) {
          cache->Complete(key, flight,
                          std::unexpected(Internal("the upstream lookup failed unexpectedly")),
                          nullptr);
        }
      }
    } guard{this, key, flight};
    Result<V> fetched = fetch();
    Complete(key, flight, fetched, &evicted);
    guard.completed = true;
    Evicted(std::move(evicted));
    if (!fetched) {
      return std::unexpected(fetched.error());
    }
    return Lookup{std::move(*fetched), false};
  }

  // Drops `key` without handing its value to on_evict.
  void Erase(const std::string& key) {
    std::lock_guard lock(mu_);
    if (auto it = entries_.find(key); it != entries_.end()) {
      lru_.erase(it->second.lru_pos);
      entries_.erase(it);
    }
  }

  // Removes and returns every cached value (e.g. to release them at shutdown).
  std::vector<V> Drain() {
    std::lock_guard lock(mu_);
    std::vector<V> out;
    out.reserve(entries_.size());
    for (auto& [key, entry] : entries_) {
      out.push_back(std::move(entry.value));
    }
    entries_.clear();
    lru_.clear();
    return out;
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
  uint64_t wait_timeouts() const {
    std::lock_guard lock(mu_);
    return wait_timeouts_;
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

  // Publishes the flight's result (caching a success when `evicted` is set,
  // i.e. not on the exceptional path) and wakes its followers.
  void Complete(const std::string& key, const std::shared_ptr<Flight>& flight,
                const Result<V>& result, std::vector<V>* evicted) {
    {
      std::lock_guard lock(mu_);
      if (result && evicted != nullptr && max_entries_ > 0) {
        Insert(key, *result, *evicted);
      }
      flight->result = result;
      flight->done = true;
      if (auto it = flights_.find(key); it != flights_.end() && it->second == flight) {
        flights_.erase(it);
      }
    }
    flight_cv_.notify_all();
  }

  void Insert(const std::string& key, const V& value, std::vector<V>& evicted) {
    if (auto it = entries_.find(key); it != entries_.end()) {
      evicted.push_back(std::move(it->second.value));
      lru_.erase(it->second.lru_pos);
      entries_.erase(it);
    }
    while (entries_.size() >= max_entries_ && !lru_.empty()) {
      auto victim = entries_.find(lru_.back());
      if (victim != entries_.end()) {
        evicted.push_back(std::move(victim->second.value));
        entries_.erase(victim);
      }
      lru_.pop_back();
    }
    lru_.push_front(key);
    entries_.emplace(key, Entry{value, clock_->Now() + ttl_, lru_.begin()});
  }

  void Evicted(std::vector<V> values) {
    if (!on_evict_) {
      return;
    }
    for (V& v : values) {
      on_evict_(std::move(v));
    }
  }

  const size_t max_entries_;
  const std::chrono::seconds ttl_;
  const Clock* clock_;
  const std::chrono::milliseconds wait_timeout_;
  const std::function<void(V)> on_evict_;
  mutable std::mutex mu_;
  std::condition_variable flight_cv_;
  std::map<std::string, Entry> entries_;
  std::list<std::string> lru_;  // most recently used first
  std::map<std::string, std::shared_ptr<Flight>> flights_;
  uint64_t hits_ = 0;
  uint64_t misses_ = 0;
  uint64_t wait_timeouts_ = 0;
};

}  // namespace jitbroker::issuers::github_app
