// libFuzzer target: the RFC 8693 token-exchange form (POST /v1/token, the
// one route anonymous clients reach with a body), its percent-decoding and
// the RFC 6749 scope string (docs/testing.md, "Fuzzing").
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "broker/net/url.h"
#include "broker/oidc/token_request.h"
#include "broker/oidc/trust_policy.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  auto req = jitbroker::oidc::ParseTokenExchangeForm(text);
  if (req && req->scope) {
    (void)jitbroker::oidc::ParseScopeTokens(*req->scope);
  }
  (void)jitbroker::net::ParseForm(text);
  (void)jitbroker::net::PercentDecode(text, true);
  (void)jitbroker::net::PercentDecode(text, false);
  (void)jitbroker::oidc::ParseScopeTokens(text);
  return 0;
}
