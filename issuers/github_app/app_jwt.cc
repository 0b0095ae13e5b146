#include "issuers/github_app/app_jwt.h"

namespace jitbroker::issuers::github_app {

AppJwt::AppJwt(std::unique_ptr<crypto::SigningKey> key, nlohmann::json iss, const Clock* clock)
    : key_(std::move(key)), iss_(std::move(iss)), clock_(clock) {}

Result<SecretValue> AppJwt::Get() {
  std::lock_guard lock(mu_);
  const int64_t offset = offset_.load();
  const int64_t now = ToUnixSeconds(clock_->Now()) + offset;
  if (!jwt_.empty() && offset == signed_offset_ && now + kMinRemainingSeconds <= exp_) {
    return jwt_.Clone();
  }
  const int64_t iat = now - kBackdateSeconds;
  const int64_t exp = iat + kLifetimeSeconds;
  // GitHub reads only alg; typ is conventional. The kid SignJwt adds is harmless.
  nlohmann::json header = {{"typ", "JWT"}};
  nlohmann::json claims = {{"iat", iat}, {"exp", exp}, {"iss", iss_}};
  JITBROKER_ASSIGN_OR_RETURN(std::string jwt, key_->SignJwt(std::move(header), claims));
  signatures_.fetch_add(1);
  jwt_ = SecretValue(std::move(jwt));
  exp_ = exp;
  signed_offset_ = offset;
  return jwt_.Clone();
}

void AppJwt::Invalidate() {
  std::lock_guard lock(mu_);
  jwt_ = SecretValue();
  exp_ = 0;
}

void AppJwt::SetClockOffset(int64_t seconds) { offset_.store(seconds); }

}  // namespace jitbroker::issuers::github_app
