#include "broker/http/device_login.h"

#include <utility>

#include "broker/crypto/crypto.h"
#include "jitbroker/error.h"

namespace jitbroker::http {

namespace {

// RFC 8628 §6.1: no vowels (no words), no easily confused letters.
constexpr std::string_view kUserCodeAlphabet = "BCDFGHJKLMNPQRSTVWXZ";

Error UnknownCode() {
  return NotFound("unknown_user_code",
                  "no jitctl sign-in waits for this code (it may have expired, or been answered)");
}

}  // namespace

DeviceLogins::DeviceLogins(const Clock* clock, Options options)
    : clock_(clock), options_(options) {}

std::string DeviceLogins::NormalizeUserCode(std::string_view code) {
  std::string out;
  for (char c : code) {
    if (c == '-' || c == ' ') {
      continue;
    }
    out.push_back((c >= 'a' && c <= 'z') ? static_cast<char>(c - 'a' + 'A') : c);
    if (out.size() > 16) {
      break;
    }
  }
  return out;
}

void DeviceLogins::PruneLocked(TimePoint now) {
  while (!order_.empty()) {
    auto it = by_device_.find(order_.front());
    if (it != by_device_.end() && it->second.expires_at > now &&
        by_device_.size() <= options_.max_pending) {
      break;
    }
    if (it != by_device_.end()) {
      by_user_code_.erase(NormalizeUserCode(it->second.user_code));
      by_device_.erase(it);
    }
    order_.pop_front();
  }
}

DeviceLogins::Started DeviceLogins::Start(std::string requested_from) {
  const TimePoint now = clock_->Now();
  Started out;
  out.device_code = SecretValue(crypto::Base64UrlEncode(crypto::RandomBytes(32)));
  out.expires_in = options_.lifetime;
  out.interval = options_.interval;
  const std::string key = crypto::Sha256Hex(out.device_code.Reveal());
  std::lock_guard lock(mu_);
  PruneLocked(now);
  std::string code;
  do {
    const std::string random = crypto::RandomBytes(8);
    code.clear();
    for (size_t i = 0; i < 8; ++i) {
      code.push_back(
          kUserCodeAlphabet[static_cast<unsigned char>(random[i]) % kUserCodeAlphabet.size()]);
    }
  } while (by_user_code_.contains(code));
  out.user_code = code.substr(0, 4) + "-" + code.substr(4);
  Entry e;
  e.user_code = out.user_code;
  e.requested_from = std::move(requested_from);
  e.requested_at = now;
  e.expires_at = now + options_.lifetime;
  e.interval = options_.interval;
  by_user_code_[code] = key;
  by_device_[key] = std::move(e);
  order_.push_back(key);
  PruneLocked(now);  // beyond max_pending the oldest goes
  return out;
}

Result<DeviceLogins::Request> DeviceLogins::Find(std::string_view user_code) {
  std::lock_guard lock(mu_);
  PruneLocked(clock_->Now());
  auto code = by_user_code_.find(NormalizeUserCode(user_code));
  if (code == by_user_code_.end()) {
    return std::unexpected(UnknownCode());
  }
  const Entry& e = by_device_.at(code->second);
  if (e.state != State::kPending) {
    return std::unexpected(UnknownCode());
  }
  return Request{e.user_code, e.requested_from, e.requested_at, e.expires_at};
}

Status DeviceLogins::Approve(std::string_view user_code, std::string principal_id,
                             const SecretValue& id_token, TimePoint token_expires_at) {
  std::lock_guard lock(mu_);
  PruneLocked(clock_->Now());
  auto code = by_user_code_.find(NormalizeUserCode(user_code));
  if (code == by_user_code_.end() || by_device_.at(code->second).state != State::kPending) {
    return std::unexpected(UnknownCode());
  }
  Entry& e = by_device_.at(code->second);
  e.state = State::kApproved;
  e.principal_id = std::move(principal_id);
  e.token = std::make_shared<SecretValue>(std::string(id_token.Reveal()));
  e.token_expires_at = token_expires_at;
  return OkStatus();
}

Status DeviceLogins::Deny(std::string_view user_code) {
  std::lock_guard lock(mu_);
  PruneLocked(clock_->Now());
  auto code = by_user_code_.find(NormalizeUserCode(user_code));
  if (code == by_user_code_.end() || by_device_.at(code->second).state != State::kPending) {
    return std::unexpected(UnknownCode());
  }
  by_device_.at(code->second).state = State::kDenied;
  return OkStatus();
}

Result<DeviceLogins::Collected> DeviceLogins::Poll(std::string_view device_code) {
  const TimePoint now = clock_->Now();
  const std::string key = crypto::Sha256Hex(device_code);
  std::lock_guard lock(mu_);
  PruneLocked(now);
  auto it = by_device_.find(key);
  if (it == by_device_.end()) {
    return std::unexpected(
        NotFound("expired_token", "this device code is unknown, expired or already used"));
  }
  Entry& e = it->second;
  if (e.state == State::kDenied) {
    by_user_code_.erase(NormalizeUserCode(e.user_code));
    by_device_.erase(it);
    return std::unexpected(PermissionDenied("access_denied", "the sign-in was refused"));
  }
  if (e.state == State::kPending) {
    // RFC 8628 §3.5: polling faster than the interval adds 5 s to it.
    if (e.last_poll && now - *e.last_poll < e.interval) {
      e.interval += Seconds(5);
      e.last_poll = now;
      return std::unexpected(FailedPrecondition(
          "slow_down", "polling too fast; wait " + std::to_string(e.interval.count()) + " s"));
    }
    e.last_poll = now;
    return std::unexpected(FailedPrecondition("authorization_pending",
                                              "waiting for the person to approve in the browser"));
  }
  Collected out{SecretValue(std::string(e.token->Reveal())), e.principal_id, e.token_expires_at};
  by_user_code_.erase(NormalizeUserCode(e.user_code));
  by_device_.erase(it);  // collected once
  return out;
}

size_t DeviceLogins::pending() const {
  std::lock_guard lock(mu_);
  return by_device_.size();
}

}  // namespace jitbroker::http
