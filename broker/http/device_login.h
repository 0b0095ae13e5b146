// DeviceLogins: `jitctl login` by the device authorization grant (RFC 8628)
// on top of single sign-on (docs/console.md, "jitctl login"). jitctl asks
// for a device code and shows the person a short user code; they open
// /ui/device in a browser where they are signed in to the console, type the
// code and approve; jitctl, polling, receives the ID token of that person's
// sign-in, which the API accepts as their bearer credential. No long-lived
// secret reaches the terminal.
//
// Kept in memory, bounded (max_pending; the oldest is dropped), each for
// ten minutes. Device codes are 256-bit random values known only by their
// SHA-256 here; user codes are 8 letters from a 20-letter alphabet without
// vowels (20^8 ≈ 2.6e10), and a signed-in person may try at most
// max_code_attempts wrong ones per minute (the console enforces it), so
// guessing another terminal's code is hopeless. A code is approved once and
// collected once.
//
// Thread-safety: all methods may be called from many threads at once.
#pragma once

#include <chrono>
#include <cstddef>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>

#include "jitbroker/clock.h"
#include "jitbroker/result.h"
#include "jitbroker/secret.h"

namespace jitbroker::http {

class DeviceLogins {
 public:
  struct Options {
    Seconds lifetime{600};
    Seconds interval{5};  // the polling interval jitctl is told
    size_t max_pending = 1000;
  };
  struct Started {
    SecretValue device_code;
    std::string user_code;  // "BCDF-GHJK"
    Seconds expires_in{0};
    Seconds interval{0};
  };
  // What the browser shows before the person approves.
  struct Request {
    std::string user_code;
    std::string requested_from;  // the address jitctl asked from
    TimePoint requested_at;
    TimePoint expires_at;
  };
  struct Collected {
    SecretValue token;  // the ID token
    std::string principal_id;
    TimePoint expires_at;
  };

  DeviceLogins(const Clock* clock, Options options);

  Started Start(std::string requested_from);
  // The pending request of `user_code` (any case, with or without the dash).
  // Errors: kNotFound "unknown_user_code".
  [[nodiscard]] Result<Request> Find(std::string_view user_code);
  // The person's answer. Approving hands over their ID token. Errors:
  // kNotFound "unknown_user_code" (also when already answered).
  [[nodiscard]] Status Approve(std::string_view user_code, std::string principal_id,
                               const SecretValue& id_token, TimePoint token_expires_at);
  [[nodiscard]] Status Deny(std::string_view user_code);
  // jitctl's poll. Errors, as RFC 8628 §3.5 names them (kFailedPrecondition
  // with reason "authorization_pending" or "slow_down"; kPermissionDenied
  // "access_denied"; kNotFound "expired_token" for an unknown, expired or
  // already collected device code).
  [[nodiscard]] Result<Collected> Poll(std::string_view device_code);

  size_t pending() const;

 private:
  enum class State { kPending, kApproved, kDenied };
  struct Entry {
    std::string user_code;
    std::string requested_from;
    TimePoint requested_at;
    TimePoint expires_at;
    State state = State::kPending;
    std::optional<TimePoint> last_poll;
    Seconds interval{5};
    std::shared_ptr<SecretValue> token;
    std::string principal_id;
    TimePoint token_expires_at;
  };
  void PruneLocked(TimePoint now);
  static std::string NormalizeUserCode(std::string_view code);

  const Clock* clock_;
  const Options options_;
  mutable std::mutex mu_;
  std::map<std::string, Entry> by_device_;           // SHA-256 hex of the device code
  std::map<std::string, std::string> by_user_code_;  // normalized user code -> device key
  std::deque<std::string> order_;                    // device keys, oldest first
};

}  // namespace jitbroker::http
