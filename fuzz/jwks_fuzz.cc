// libFuzzer target: an OIDC issuer's discovery document and JWKS as the
// broker fetches them (oidc::JwksCache, behind a fake HTTP client that
// answers with the fuzzer's bytes), and single JWKs (crypto::VerifyKey::
// FromJwk) parsed by the strict JSON reader (docs/testing.md, "Fuzzing").
// A hostile issuer's answers may be refused, never crash the broker or grow
// it beyond the cache's limits.
#include <fuzzer/FuzzedDataProvider.h>

#include <cstddef>
#include <cstdint>
#include <string>

#include "broker/common/json_util.h"
#include "broker/crypto/jose.h"
#include "broker/net/http_client.h"
#include "broker/oidc/jwks_cache.h"
#include "jitbroker/clock.h"

namespace {

// Answers discovery with one body and every other URL with the other.
class FuzzIssuer final : public jitbroker::net::HttpClient {
 public:
  FuzzIssuer(std::string discovery, std::string jwks, int status)
      : discovery_(std::move(discovery)), jwks_(std::move(jwks)), status_(status) {}
  jitbroker::Result<jitbroker::HttpResponse> Send(const jitbroker::HttpRequest& req) override {
    jitbroker::HttpResponse r;
    r.status = status_;
    r.body = req.url.ends_with("/.well-known/openid-configuration") ? discovery_ : jwks_;
    return r;
  }

 private:
  std::string discovery_, jwks_;
  int status_;
};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  FuzzedDataProvider in(data, size);
  const bool single = in.ConsumeBool();
  if (single) {
    const std::string text = in.ConsumeRemainingBytesAsString();
    auto doc = jitbroker::json::ParseStrict(text, {.what = "JWK"});
    if (doc && doc->is_object()) {
      (void)jitbroker::crypto::VerifyKey::FromJwk(*doc);
    }
    return 0;
  }
  const int status = in.ConsumeBool() ? 200 : in.ConsumeIntegralInRange(100, 599);
  const std::string kid = in.ConsumeRandomLengthString(64);
  const std::string alg = in.PickValueInArray({"RS256", "ES256", "EdDSA", "none", "HS256"});
  std::string discovery = in.ConsumeRandomLengthString(4096);
  std::string jwks = in.ConsumeRemainingBytesAsString();
  FuzzIssuer http(std::move(discovery), std::move(jwks), status);
  jitbroker::SystemClock clock;
  jitbroker::oidc::JwksCache cache(&http, &clock);
  jitbroker::oidc::KeyQuery q{
      .issuer = "https://issuer.example", .allow_http = false, .kid = kid, .alg = alg};
  (void)cache.Find(q);
  return 0;
}
