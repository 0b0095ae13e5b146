#include "broker/oidc/jwks_cache.h"

#include <algorithm>
#include <exception>
#include <string>
#include <utility>

#include <nlohmann/json.hpp>

#include "broker/common/json_util.h"
#include "broker/common/log.h"
#include "broker/oidc/trust_policy.h"

namespace jitbroker::oidc {

namespace {

using Json = nlohmann::json;

// Documents from an IdP go through the one strict parser, bounded like the
// fetch (a duplicate "keys" or "jwks_uri" member is refused, not resolved).
jitbroker::json::ParseOptions JsonBudget(std::string_view what, size_t max_bytes) {
  jitbroker::json::ParseOptions o;
  o.what = what;
  o.max_bytes = max_bytes;
  return o;
}

Error KeysUnavailable(std::string detail) {
  Error e = Unavailable("issuer_unavailable",
                        "the signing keys of the subject token's issuer cannot be fetched",
                        std::move(detail));
  e.retryable = true;
  e.retry_after = Seconds(5);
  return e;
}

}  // namespace

JwksCache::JwksCache(net::HttpClient* http, const Clock* clock)
    : JwksCache(http, clock, Options()) {}

JwksCache::JwksCache(net::HttpClient* http, const Clock* clock, Options options)
    : http_(http), clock_(clock), options_(options) {}

JwksCache::~JwksCache() = default;

JwksCache::Entry& JwksCache::EntryFor(const std::string& issuer) {
  std::lock_guard lock(mu_);
  auto it = entries_.find(issuer);
  if (it == entries_.end()) {
    it = entries_.emplace(issuer, std::make_unique<Entry>()).first;
  }
  return *it->second;
}

JwksCache::Counters JwksCache::CountersFor(std::string_view issuer) const {
  Entry* e = nullptr;
  {
    std::lock_guard lock(mu_);
    auto it = entries_.find(issuer);
    if (it == entries_.end()) {
      return {};
    }
    e = it->second.get();
  }
  std::lock_guard lock(e->mu);
  return e->counters;
}

Result<std::string> JwksCache::Get(const std::string& url, std::string_view what) {
  net::HttpRequest req;
  req.method = "GET";
  req.url = url;
  req.headers.emplace_back("Accept", "application/json");
  req.timeout = options_.timeout;
  req.connect_timeout = options_.timeout;
  const std::string host = net::internal::HostForMessage(url);
  Result<net::HttpResponse> sent = http_->Send(req);
  if (!sent) {
    return std::unexpected(KeysUnavailable(std::string(what) + ": " + sent.error().ToString()));
  }
  net::HttpResponse resp = std::move(*sent);
  if (resp.status != 200) {
    return std::unexpected(KeysUnavailable(std::string(what) + ": HTTP " +
                                           std::to_string(resp.status) + " from " + host));
  }
  if (resp.body.size() > options_.max_document_bytes) {
    return std::unexpected(KeysUnavailable(std::string(what) + " from " + host + " exceeds " +
                                           std::to_string(options_.max_document_bytes) + " bytes"));
  }
  return std::move(resp.body);
}

Result<JwksCache::Fetched> JwksCache::Fetch(const KeyQuery& query, std::string jwks_uri,
                                            Counters& counters) {
  Fetched out;
  if (jwks_uri.empty()) {
    std::string base = query.issuer;
    if (!base.empty() && base.back() == '/') {
      base.pop_back();  // OIDC Discovery §4: remove a terminating '/' before appending
    }
    ++counters.discovery_fetches;
    JITBROKER_ASSIGN_OR_RETURN(std::string body,
                               Get(base + "/.well-known/openid-configuration", "discovery"));
    auto doc = jitbroker::json::ParseStrict(
        body, JsonBudget("discovery document", options_.max_document_bytes));
    if (!doc) {
      return std::unexpected(KeysUnavailable(doc.error().message));
    }
    if (!doc->is_object()) {
      return std::unexpected(KeysUnavailable("discovery document is not a JSON object"));
    }
    auto iss = doc->find("issuer");
    if (iss == doc->end() || !iss->is_string() || *iss != query.issuer) {
      return std::unexpected(
          KeysUnavailable("discovery document names another issuer than " + query.issuer));
    }
    auto uri = doc->find("jwks_uri");
    if (uri == doc->end() || !uri->is_string()) {
      return std::unexpected(KeysUnavailable("discovery document has no jwks_uri"));
    }
    jwks_uri = uri->get<std::string>();
    if (std::string why = CheckFetchUrl(jwks_uri, query.allow_http); !why.empty()) {
      return std::unexpected(KeysUnavailable("discovery jwks_uri is refused: " + why));
    }
  }
  ++counters.jwks_fetches;
  JITBROKER_ASSIGN_OR_RETURN(std::string body, Get(jwks_uri, "JWKS"));
  auto doc = jitbroker::json::ParseStrict(body, JsonBudget("JWKS", options_.max_document_bytes));
  if (!doc) {
    return std::unexpected(KeysUnavailable(doc.error().message));
  }
  if (!doc->is_object()) {
    return std::unexpected(KeysUnavailable("JWKS is not a JSON object"));
  }
  auto keys = doc->find("keys");
  if (keys == doc->end() || !keys->is_array()) {
    return std::unexpected(KeysUnavailable("JWKS has no keys array"));
  }
  if (keys->size() > options_.max_keys) {
    return std::unexpected(
        KeysUnavailable("JWKS holds more than " + std::to_string(options_.max_keys) + " keys"));
  }
  size_t skipped = 0;
  for (const Json& jwk : *keys) {
    std::string kid;
    if (jwk.is_object()) {
      if (auto k = jwk.find("kid"); k != jwk.end()) {
        if (!k->is_string()) {
          ++skipped;
          continue;
        }
        kid = k->get<std::string>();
      }
    }
    auto key = crypto::VerifyKey::FromJwk(jwk);
    if (!key) {
      ++skipped;  // encryption keys, other curves, small RSA: not ours to use
      continue;
    }
    out.keys.push_back(
        Key{std::move(kid), std::shared_ptr<const crypto::VerifyKey>(std::move(*key))});
  }
  if (out.keys.empty()) {
    return std::unexpected(KeysUnavailable("JWKS holds no usable signature key (" +
                                           std::to_string(skipped) + " skipped)"));
  }
  out.jwks_uri = std::move(jwks_uri);
  return out;
}

Result<std::shared_ptr<const crypto::VerifyKey>> JwksCache::Find(const KeyQuery& query) {
  const std::optional<crypto::JwsAlg> family = crypto::ParseJwsAlg(query.alg);
  if (!family) {
    return std::unexpected(
        Unauthenticated("alg_not_allowed", "subject_token alg is not supported"));
  }
  Entry& e = EntryFor(query.issuer);
  std::unique_lock lk(e.mu);

  // The one cached key that fits; `ambiguous` when several do.
  bool ambiguous = false;
  auto select = [&]() -> std::shared_ptr<const crypto::VerifyKey> {
    ambiguous = false;
    std::shared_ptr<const crypto::VerifyKey> found;
    for (const Key& k : e.keys) {
      if (k.key->alg() != *family || (!query.kid.empty() && k.kid != query.kid)) {
        continue;
      }
      if (found) {
        ambiguous = true;
        return nullptr;
      }
      found = k.key;
    }
    return found;
  };

  for (int round = 0; round < 2; ++round) {
    const TimePoint now = clock_->Now();
    const bool usable = e.fetched_at && now - *e.fetched_at < options_.max_stale;
    const bool fresh = e.fetched_at && now - *e.fetched_at < options_.max_age;
    std::shared_ptr<const crypto::VerifyKey> key = usable ? select() : nullptr;
    if (key && fresh) {
      return key;
    }
    if (round == 0 && e.refreshing) {
      if (key || !usable) {
        // Single flight: a stale key, or no usable keys yet (a cold cache),
        // takes the result of the fetch in progress.
        e.cv.wait_for(lk, options_.timeout * 2 + std::chrono::seconds(1),
                      [&e] { return !e.refreshing; });
        continue;
      }
      // A kid the usable key set does not have fails at once: made-up kids
      // must not hold request threads for as long as a slow issuer takes.
      return std::unexpected(
          ambiguous
              ? Unauthenticated("ambiguous_key",
                                "several keys of the issuer fit the subject_token; it must "
                                "name one with kid")
              : Unauthenticated("unknown_key", "no key of the subject_token's issuer has its kid"));
    }
    const bool cooled = !e.attempted_at || now - *e.attempted_at >= options_.cooldown;
    if (round == 1 || !cooled || e.refreshing) {
      if (key) {
        return key;  // stale but the issuer could not be reached: keep going
      }
      if (ambiguous) {
        return std::unexpected(
            Unauthenticated("ambiguous_key",
                            "several keys of the issuer fit the subject_token; it must name one "
                            "with kid"));
      }
      if (!usable && e.last_error) {
        return std::unexpected(*e.last_error);
      }
      return std::unexpected(
          Unauthenticated("unknown_key", "no key of the subject_token's issuer has its kid"));
    }
    e.refreshing = true;
    e.attempted_at = now;
    std::string uri = e.jwks_uri;
    lk.unlock();
    Counters delta;
    Result<Fetched> fetched = std::unexpected(Internal("JWKS fetch did not run"));
    try {
      fetched = Fetch(query, std::move(uri), delta);
    } catch (const std::exception& ex) {
      fetched = std::unexpected(KeysUnavailable(std::string("unexpected error: ") + ex.what()));
    }
    lk.lock();
    e.counters.discovery_fetches += delta.discovery_fetches;
    e.counters.jwks_fetches += delta.jwks_fetches;
    e.refreshing = false;
    if (fetched) {
      e.jwks_uri = std::move(fetched->jwks_uri);
      e.keys = std::move(fetched->keys);
      e.fetched_at = clock_->Now();
      e.last_error.reset();
      log::Get("oidc")->info("event=jwks_refreshed issuer={} keys={}", query.issuer, e.keys.size());
    } else {
      e.jwks_uri.clear();  // rediscover next time
      e.last_error = fetched.error();
      ++e.counters.failed_refreshes;
      log::Get("oidc")->warn("event=jwks_refresh_failed issuer={} error=\"{}\"", query.issuer,
                             fetched.error().ToString());
    }
    e.cv.notify_all();
  }
  return std::unexpected(
      Unauthenticated("unknown_key", "no key of the subject_token's issuer has its kid"));
}

}  // namespace jitbroker::oidc
