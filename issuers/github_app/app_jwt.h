// AppJwt: the GitHub App's own JWT (docs/concepts.md "GitHub App tokens"), signed with
// the App's RSA key (RS256) and reused until shortly before it expires, so
// that minting many installation tokens costs a handful of RSA signatures.
//
// Claims: iss = the Client ID (recommended) or the numeric App ID;
// iat = now - 60 s (clock drift); exp = iat + 600 s, i.e. now + 540 s, under
// GitHub's 10-minute limit. "now" includes an offset learnt from GitHub's
// Date header after a 401 (clock skew), as octokit does. A JWT is reused
// while at least `kMinRemaining` of its life is left.
//
// Thread-safety: all methods are thread-safe; one signature at a time.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>

#include <nlohmann/json.hpp>

#include "broker/crypto/jose.h"
#include "jitbroker/clock.h"
#include "jitbroker/result.h"
#include "jitbroker/secret.h"

namespace jitbroker::issuers::github_app {

class AppJwt {
 public:
  static constexpr int64_t kBackdateSeconds = 60;
  static constexpr int64_t kLifetimeSeconds = 600;      // exp - iat
  static constexpr int64_t kMinRemainingSeconds = 120;  // re-sign when less is left

  // `iss` is a JSON string (client id) or integer (app id).
  AppJwt(std::unique_ptr<crypto::SigningKey> key, nlohmann::json iss, const Clock* clock);

  // A JWT with at least kMinRemainingSeconds left; signs only when needed.
  [[nodiscard]] Result<SecretValue> Get();
  // Forgets the cached JWT (after GitHub rejected it).
  void Invalidate();
  // Server time minus local time, in seconds (from GitHub's Date header).
  void SetClockOffset(int64_t seconds);
  int64_t clock_offset() const { return offset_.load(); }
  uint64_t signatures() const { return signatures_.load(); }

 private:
  std::unique_ptr<crypto::SigningKey> key_;
  const nlohmann::json iss_;
  const Clock* clock_;
  std::atomic<int64_t> offset_{0};
  std::atomic<uint64_t> signatures_{0};
  std::mutex mu_;
  SecretValue jwt_;  // guarded by mu_
  int64_t exp_ = 0;  // guarded by mu_; server-clock seconds
  int64_t signed_offset_ = 0;
};

}  // namespace jitbroker::issuers::github_app
