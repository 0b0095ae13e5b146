// StaticKeySource: an OIDC key source (broker/oidc/token_verifier.h) holding
// one public key under one kid, for service tests that verify subject
// tokens without a JWKS endpoint. Thread-safety: immutable.
#pragma once

#include <memory>
#include <string>

#include "broker/crypto/jose.h"
#include "broker/oidc/token_verifier.h"

namespace jitbroker::testing {

class StaticKeySource final : public oidc::KeySource {
 public:
  explicit StaticKeySource(const crypto::SigningKey& key, std::string kid = "k1")
      : key_(key.Public()), kid_(std::move(kid)) {}
  Result<std::shared_ptr<const crypto::VerifyKey>> Find(const oidc::KeyQuery& q) override {
    if (q.kid != kid_) {
      return std::unexpected(Unauthenticated("unknown_key", "no such kid"));
    }
    return key_;
  }

 private:
  std::shared_ptr<const crypto::VerifyKey> key_;
  std::string kid_;
};

}  // namespace jitbroker::testing
