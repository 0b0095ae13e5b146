// libFuzzer target: compact JWS as the token endpoint and the OIDC verifier
// read it (docs/testing.md, "Fuzzing"). Splitting and decoding
// (crypto::DecodeJws), the subject-token checks before any key is looked up
// (oidc::DecodeSubjectToken) and verification with fixed ES256 and RS256
// keys (crypto::VerifyJws): none may crash, and none may ever accept, since
// the fuzzer cannot sign with the keys' private halves.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <memory>
#include <string_view>

#include "broker/crypto/jose.h"
#include "broker/oidc/token_verifier.h"

namespace {

using jitbroker::crypto::JwsAlg;
using jitbroker::crypto::SigningKey;
using jitbroker::crypto::VerifyKey;

struct Keys {
  std::unique_ptr<VerifyKey> es256;
  std::unique_ptr<VerifyKey> rs256;
};

std::unique_ptr<VerifyKey> PublicOf(JwsAlg alg) {
  auto key = SigningKey::Generate(alg);
  if (!key) {
    std::abort();
  }
  auto pub = VerifyKey::FromJwk((*key)->PublicJwk());
  if (!pub) {
    std::abort();
  }
  return std::move(*pub);
}

const Keys& TheKeys() {
  static const Keys* keys = new Keys{PublicOf(JwsAlg::kES256), PublicOf(JwsAlg::kRS256)};
  return *keys;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  const Keys& keys = TheKeys();
  (void)jitbroker::crypto::DecodeJws(text);
  (void)jitbroker::oidc::DecodeSubjectToken(text);
  if (jitbroker::crypto::VerifyJws(text, *keys.es256) ||
      jitbroker::crypto::VerifyJws(text, *keys.rs256)) {
    std::abort();  // a forgery: nothing here holds the private keys
  }
  return 0;
}
