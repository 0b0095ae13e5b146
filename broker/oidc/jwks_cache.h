// JwksCache: the verification keys of trusted OIDC issuers (docs/concepts.md,
// "OIDC tokens"), fetched by discovery and cached, as panva/jose's
// createRemoteJWKSet and octo-sts do:
//
//   - discovery: GET {iss}/.well-known/openid-configuration (a trailing '/'
//     of iss removed first); its `issuer` must equal iss exactly and its
//     `jwks_uri` pass the same URL rules as the issuer (https; http only for
//     a loopback issuer with allow_http);
//   - JWKS: GET jwks_uri; keys that are not usable public signature keys
//     (RSA ≥ 2048, P-256, Ed25519) are skipped, the others indexed by kid;
//   - keys are refetched when older than max_age (10 min), and on a kid that
//     is not in the cached set — but at most once per cooldown (30 s) per
//     issuer, so a storm of tokens with made-up kids costs the issuer one
//     request, not one each;
//   - single flight: while one thread fetches an issuer's keys, the others
//     asking for that issuer with a cached-but-stale key, or before any key
//     was fetched, wait for its result instead of fetching too; one asking
//     for a kid the cached (usable) set lacks fails at once with
//     "unknown_key" instead of waiting on a slow issuer;
//   - limits: 5 s per request, 100 KiB per document, 100 keys, no redirects
//     (the HttpClient never follows them);
//   - a failed refresh keeps the previous keys (up to max_stale), so a short
//     outage of the issuer does not stop CI.
// Only issuers a trust policy names ever reach Find(): the caller checks the
// static allow-list first, so no URL from a token is ever fetched.
//
// Thread-safety: Find() may be called from many threads at once.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "broker/crypto/jose.h"
#include "broker/net/http_client.h"
#include "broker/oidc/token_verifier.h"
#include "jitbroker/clock.h"
#include "jitbroker/result.h"

namespace jitbroker::oidc {

class JwksCache final : public KeySource {
 public:
  struct Options {
    Seconds max_age{600};                     // cached keys are refreshed after this
    Seconds cooldown{30};                     // at most one fetch per issuer within this
    Seconds max_stale{86400};                 // never use keys last fetched longer ago than this
    std::chrono::milliseconds timeout{5000};  // per HTTP request
    size_t max_document_bytes = 100 * 1024;
    size_t max_keys = 100;
  };

  // `http` and `clock` are not owned and must outlive the cache.
  JwksCache(net::HttpClient* http, const Clock* clock);
  JwksCache(net::HttpClient* http, const Clock* clock, Options options);
  ~JwksCache() override;
  JwksCache(const JwksCache&) = delete;
  JwksCache& operator=(const JwksCache&) = delete;

  [[nodiscard]] Result<std::shared_ptr<const crypto::VerifyKey>> Find(
      const KeyQuery& query) override;

  // Requests made for `issuer` so far (tests and metrics).
  struct Counters {
    uint64_t discovery_fetches = 0;
    uint64_t jwks_fetches = 0;
    uint64_t failed_refreshes = 0;
  };
  Counters CountersFor(std::string_view issuer) const;

 private:
  struct Key {
    std::string kid;
    std::shared_ptr<const crypto::VerifyKey> key;
  };
  struct Entry {
    std::mutex mu;
    std::condition_variable cv;
    bool refreshing = false;                // guarded by mu
    std::string jwks_uri;                   // guarded by mu; "" = discover first
    std::vector<Key> keys;                  // guarded by mu
    std::optional<TimePoint> fetched_at;    // last successful refresh
    std::optional<TimePoint> attempted_at;  // last refresh attempt, successful or not
    std::optional<Error> last_error;        // of the last attempt, if it failed
    Counters counters;                      // guarded by mu
  };
  struct Fetched {
    std::string jwks_uri;
    std::vector<Key> keys;
  };

  Entry& EntryFor(const std::string& issuer);
  // One refresh (discovery when needed, then JWKS); no lock held.
  Result<Fetched> Fetch(const KeyQuery& query, std::string jwks_uri, Counters& counters);
  Result<std::string> Get(const std::string& url, std::string_view what);

  net::HttpClient* http_;
  const Clock* clock_;
  const Options options_;
  mutable std::mutex mu_;
  std::map<std::string, std::unique_ptr<Entry>, std::less<>> entries_;  // guarded by mu_
};

}  // namespace jitbroker::oidc
