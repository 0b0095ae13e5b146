// GrantSealer (broker/service/grant_sealer.h): what a grant keeps secret at
// rest opens only for that grant and with that key.
#include <string>

#include <doctest/doctest.h>

#include "broker/crypto/crypto.h"
#include "broker/service/grant_sealer.h"
#include "jitbroker/secret.h"

namespace jitbroker::service {
namespace {

SecretValue Key(char fill) { return SecretValue(std::string(32, fill)); }

TEST_CASE("GrantSealer: a sealed value opens for its grant only") {
  const GrantSealer sealer(Key('k'));
  auto sealed = sealer.Seal("grt_a", std::string_view("ghs_handle-for-a"));
  REQUIRE(sealed.has_value());
  CHECK(sealed->find("ghs_") == std::string::npos);  // not in the clear
  auto opened = sealer.Open("grt_a", *sealed);
  REQUIRE(opened.has_value());
  CHECK(opened->Reveal() == "ghs_handle-for-a");
  // Copied onto another grant (AAD = grant id), it does not open.
  CHECK_FALSE(sealer.Open("grt_b", *sealed).has_value());
  // Nor with another key (the seal key was changed).
  CHECK_FALSE(GrantSealer(Key('x')).Open("grt_a", *sealed).has_value());
  // Nor tampered with, nor when it is not base64url.
  std::string raw = crypto::Base64UrlDecode(*sealed).value();
  raw[raw.size() / 2] ^= 0x01;
  CHECK_FALSE(sealer.Open("grt_a", crypto::Base64UrlEncode(raw)).has_value());
  CHECK_FALSE(sealer.Open("grt_a", "not base64url!").has_value());
}

TEST_CASE("GrantSealer: nothing to seal stays empty, and each seal is fresh") {
  const GrantSealer sealer(Key('k'));
  CHECK(sealer.Seal("grt_a", SecretValue()).value().empty());
  CHECK(sealer.Open("grt_a", "").value().empty());
  // A random nonce per seal: equal handles do not look equal at rest.
  CHECK(sealer.Seal("grt_a", std::string_view("h")).value() !=
        sealer.Seal("grt_a", std::string_view("h")).value());
}

}  // namespace
}  // namespace jitbroker::service
