// Independent verification of broker-minted JWTs for integration tests: the
// JWK is turned into a DER SubjectPublicKeyInfo by hand and the signature is
// checked by the `openssl` command-line tool, so neither the broker's JOSE
// code nor its OpenSSL wrappers are on the verifying path.
#pragma once

#include <cstdint>
#include <filesystem>
#include <fstream>
#include <string>

#include <nlohmann/json.hpp>

#include "tests/support/broker_process.h"

namespace jitbroker::testing {

inline std::string B64UrlDecode(const std::string& in) {
  std::string s = in;
  for (char& c : s) {
    if (c == '-') c = '+';
    if (c == '_') c = '/';
  }
  while (s.size() % 4 != 0) s += '=';
  static const std::string kAlphabet =
      "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  std::string out;
  uint32_t buf = 0;
  int bits = 0;
  for (char c : s) {
    if (c == '=') break;
    const auto v = kAlphabet.find(c);
    if (v == std::string::npos) return {};
    buf = (buf << 6) | static_cast<uint32_t>(v);
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      out += static_cast<char>((buf >> bits) & 0xFF);
    }
  }
  return out;
}

inline std::string DerInteger(std::string v) {
  while (v.size() > 1 && v[0] == 0 && !(static_cast<unsigned char>(v[1]) & 0x80)) v.erase(0, 1);
  if (static_cast<unsigned char>(v[0]) & 0x80) v.insert(v.begin(), '\0');
  return std::string("\x02", 1) + static_cast<char>(v.size()) + v;
}

struct JwtParts {
  nlohmann::json header, payload;
  std::string signing_input, signature;
};

inline JwtParts SplitJwt(const std::string& token) {
  JwtParts p;
  const auto d1 = token.find('.');
  const auto d2 = token.find('.', d1 + 1);
  p.header = nlohmann::json::parse(B64UrlDecode(token.substr(0, d1)));
  p.payload = nlohmann::json::parse(B64UrlDecode(token.substr(d1 + 1, d2 - d1 - 1)));
  p.signing_input = token.substr(0, d2);
  p.signature = B64UrlDecode(token.substr(d2 + 1));
  return p;
}

// Verifies `token` against `jwk` with the openssl CLI; returns true if valid.
inline bool OpensslVerifiesJwt(const std::string& token, const nlohmann::json& jwk,
                               const std::string& dir) {
  JwtParts p = SplitJwt(token);
  std::filesystem::create_directories(dir);
  const std::string in = dir + "/input", sig = dir + "/sig", key = dir + "/key.der";
  std::ofstream(in, std::ios::binary) << p.signing_input;
  std::string spki;
  if (jwk["kty"] == "EC") {
    // SEQUENCE { SEQUENCE { id-ecPublicKey, prime256v1 }, BIT STRING 04||x||y }
    spki = std::string(
        "\x30\x59\x30\x13\x06\x07\x2a\x86\x48\xce\x3d\x02\x01\x06\x08\x2a\x86\x48\xce\x3d\x03\x01"
        "\x07\x03\x42\x00\x04",
        27);
    spki += B64UrlDecode(jwk["x"]) + B64UrlDecode(jwk["y"]);
    if (p.signature.size() != 64) return false;
    std::string body = DerInteger(p.signature.substr(0, 32)) + DerInteger(p.signature.substr(32));
    std::string der = std::string("\x30", 1) + static_cast<char>(body.size()) + body;
    std::ofstream(sig, std::ios::binary) << der;
    std::ofstream(key, std::ios::binary) << spki;
    auto [rc, out] = RunCommand("openssl dgst -sha256 -verify " + key +
                                " -keyform DER -signature " + sig + " " + in);
    return rc == 0 && out.find("Verified OK") != std::string::npos;
  }
  if (jwk["kty"] == "OKP") {
    // SEQUENCE { SEQUENCE { id-Ed25519 }, BIT STRING x }
    spki = std::string("\x30\x2a\x30\x05\x06\x03\x2b\x65\x70\x03\x21\x00", 12) +
           B64UrlDecode(jwk["x"]);
    std::ofstream(sig, std::ios::binary) << p.signature;
    std::ofstream(key, std::ios::binary) << spki;
    auto [rc, out] = RunCommand("openssl pkeyutl -verify -pubin -inkey " + key +
                                " -keyform DER -rawin -in " + in + " -sigfile " + sig);
    return rc == 0 && out.find("Signature Verified Successfully") != std::string::npos;
  }
  return false;
}

}  // namespace jitbroker::testing
