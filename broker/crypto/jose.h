// JOSE on OpenSSL 3: signing keys, compact JWS sign/verify and JWK export for
// the algorithms the broker uses: ES256 (P-256, raw R||S signatures), Ed25519
// (alg "Ed25519", RFC 9864; "EdDSA" accepted on input), RS256 (verify; sign
// for the GitHub App JWT).
//
// Thread-safety: SigningKey and VerifyKey are immutable after creation and may
// be used from many threads at once.
#pragma once

#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "jitbroker/result.h"
#include "jitbroker/secret.h"

namespace jitbroker::crypto {

enum class JwsAlg { kES256, kEd25519, kRS256 };
std::string_view JwsAlgName(JwsAlg alg);  // "ES256", "Ed25519", "RS256"
// Accepts "ES256", "Ed25519", "EdDSA" (-> kEd25519), "RS256"; nullopt otherwise.
std::optional<JwsAlg> ParseJwsAlg(std::string_view name);

class VerifyKey;

class SigningKey {
 public:
  ~SigningKey();
  SigningKey(const SigningKey&) = delete;
  SigningKey& operator=(const SigningKey&) = delete;

  // Generates a new key (ES256: P-256; Ed25519; RS256: 2048-bit RSA).
  [[nodiscard]] static Result<std::unique_ptr<SigningKey>> Generate(JwsAlg alg);
  // Loads a PKCS#8 (or traditional) PEM private key; its type must fit `alg`.
  [[nodiscard]] static Result<std::unique_ptr<SigningKey>> FromPem(JwsAlg alg,
                                                                   const SecretValue& pem);
  // PKCS#8 PEM of the private key (for persisting a generated key, 0600).
  [[nodiscard]] Result<SecretValue> ToPem() const;

  JwsAlg alg() const { return alg_; }
  // RFC 7638 JWK thumbprint (base64url SHA-256), used as `kid`.
  const std::string& kid() const { return kid_; }
  // Public JWK with kty/crv/x/y (or n/e), kid, alg, use="sig".
  nlohmann::json PublicJwk() const;
  std::unique_ptr<VerifyKey> Public() const;

  // Raw JWS signature over `signing_input` (ES256: 64-byte R||S).
  [[nodiscard]] Result<std::string> Sign(std::string_view signing_input) const;

  // Compact JWS: header gets alg, typ="JWT" (unless set) and kid; payload as given.
  [[nodiscard]] Result<std::string> SignJwt(nlohmann::json header,
                                            const nlohmann::json& payload) const;

 private:
  struct Impl;
  SigningKey(JwsAlg alg, std::unique_ptr<Impl> impl);
  JwsAlg alg_;
  std::unique_ptr<Impl> impl_;
  std::string kid_;
};

class VerifyKey {
 public:
  ~VerifyKey();
  VerifyKey(const VerifyKey&) = delete;
  VerifyKey& operator=(const VerifyKey&) = delete;

  // From a public JWK (RSA >= 2048 bits, EC P-256, OKP Ed25519). Rejects
  // private members ("d") and mismatched kty/crv/alg.
  [[nodiscard]] static Result<std::unique_ptr<VerifyKey>> FromJwk(const nlohmann::json& jwk);
  [[nodiscard]] static Result<std::unique_ptr<VerifyKey>> FromPem(JwsAlg alg, std::string_view pem);

  JwsAlg alg() const { return alg_; }
  // The public JWK with its RFC 7638 thumbprint as `kid`, `alg` and `use`,
  // as SigningKey::PublicJwk gives for the private half.
  [[nodiscard]] Result<nlohmann::json> PublicJwk() const;
  // Verifies a raw JWS signature (ES256: 64-byte R||S; anything else fails).
  bool Verify(std::string_view signing_input, std::string_view signature) const;

 private:
  friend class SigningKey;
  struct Impl;
  VerifyKey(JwsAlg alg, std::unique_ptr<Impl> impl);
  JwsAlg alg_;
  std::unique_ptr<Impl> impl_;
};

struct DecodedJws {
  nlohmann::json header;
  nlohmann::json payload;
  std::string signing_input;  // "b64header.b64payload"
  std::string signature;      // raw bytes
};

// Splits and decodes a compact JWS without verifying it. Strict: exactly three
// base64url parts, JSON objects with no duplicate keys, size <= max_bytes.
[[nodiscard]] Result<DecodedJws> DecodeJws(std::string_view compact, size_t max_bytes = 16384);

// Decodes and verifies with `key`: header alg must equal key.alg() (so "none",
// HMAC and alg confusion fail), no "crit", no jku/x5u/jwk/x5c. Returns the payload.
[[nodiscard]] Result<nlohmann::json> VerifyJws(std::string_view compact, const VerifyKey& key);

// The checks of VerifyJws on a JWS already split by DecodeJws, for callers that
// must read the unverified header and payload first (OIDC: `iss` picks the
// issuer, `kid` the key) and should not decode twice. Errors are
// kUnauthenticated with the same reasons as VerifyJws.
[[nodiscard]] Status VerifyDecodedJws(const DecodedJws& jws, const VerifyKey& key);

}  // namespace jitbroker::crypto
