#include "broker/crypto/jose.h"

#include <cstddef>
#include <cstdint>
#include <exception>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <openssl/bio.h>
#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/ec.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/param_build.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <nlohmann/json.hpp>

#include "broker/common/json_util.h"
#include "broker/crypto/crypto.h"
#include "jitbroker/error.h"
#include "jitbroker/result.h"
#include "jitbroker/secret.h"

namespace jitbroker::crypto {

namespace {

using json = nlohmann::json;

constexpr size_t kEs256CoordBytes = 32;
constexpr size_t kEs256SigBytes = 64;
constexpr size_t kEd25519KeyBytes = 32;
constexpr size_t kEd25519SigBytes = 64;
constexpr int kRsaMinBits = 2048;
// Upper bound keeps a hostile JWKS from making every verification expensive.
constexpr int kRsaMaxBits = 16384;
// Headers and JWT claim sets are shallow; deep nesting is only an attack.
constexpr int kMaxJsonDepth = 32;

// --- OpenSSL ownership ------------------------------------------------------

// One deleter for every OpenSSL handle: calls its free function.
template <auto Free>
struct FreeWith {
  template <class T>
  void operator()(T* p) const {
    Free(p);
  }
};
using PkeyPtr = std::unique_ptr<EVP_PKEY, FreeWith<EVP_PKEY_free>>;
using PkeyCtxPtr = std::unique_ptr<EVP_PKEY_CTX, FreeWith<EVP_PKEY_CTX_free>>;
using MdCtxPtr = std::unique_ptr<EVP_MD_CTX, FreeWith<EVP_MD_CTX_free>>;
using BioPtr = std::unique_ptr<BIO, FreeWith<BIO_free>>;
using BnPtr = std::unique_ptr<BIGNUM, FreeWith<BN_free>>;
using EcdsaSigPtr = std::unique_ptr<ECDSA_SIG, FreeWith<ECDSA_SIG_free>>;
using ParamBldPtr = std::unique_ptr<OSSL_PARAM_BLD, FreeWith<OSSL_PARAM_BLD_free>>;
using ParamPtr = std::unique_ptr<OSSL_PARAM, FreeWith<OSSL_PARAM_free>>;

const unsigned char* Bytes(std::string_view s) {
  static constexpr unsigned char kEmpty[1] = {0};
  return s.empty() ? kEmpty : reinterpret_cast<const unsigned char*>(s.data());
}

// Failed OpenSSL calls leave entries on the thread's error queue; drop them so
// they never surface in some unrelated later call (e.g. a TLS handshake).
Error KeyError(std::string reason, std::string message) {
  ERR_clear_error();
  return InvalidArgument(std::move(reason), std::move(message));
}

Error CryptoInternal(std::string detail) {
  ERR_clear_error();
  return Internal("cryptographic operation failed", std::move(detail));
}

Error JwsError(std::string reason, std::string message) {
  return Unauthenticated(std::move(reason), std::move(message));
}

// --- Key checks and public parameters --------------------------------------

bool IsP256(EVP_PKEY* pkey) {
  if (EVP_PKEY_is_a(pkey, "EC") != 1) {
    return false;
  }
  char group[80] = {0};
  size_t len = 0;
  // Keys with explicit curve parameters have no group name and are refused.
  if (EVP_PKEY_get_group_name(pkey, group, sizeof(group), &len) != 1) {
    ERR_clear_error();
    return false;
  }
  const std::string_view name(group, len);
  return name == "prime256v1" || name == "P-256";
}

Status CheckKeyFitsAlg(EVP_PKEY* pkey, JwsAlg alg) {
  switch (alg) {
    case JwsAlg::kES256:
      if (!IsP256(pkey)) {
        return std::unexpected(KeyError("key_alg_mismatch", "ES256 requires a P-256 EC key"));
      }
      return OkStatus();
    case JwsAlg::kEd25519:
      if (EVP_PKEY_is_a(pkey, "ED25519") != 1) {
        return std::unexpected(KeyError("key_alg_mismatch", "Ed25519 requires an Ed25519 key"));
      }
      return OkStatus();
    case JwsAlg::kRS256: {
      // "RSA" only: an RSA-PSS-restricted key cannot make PKCS#1 v1.5 signatures.
      if (EVP_PKEY_is_a(pkey, "RSA") != 1) {
        return std::unexpected(KeyError("key_alg_mismatch", "RS256 requires an RSA key"));
      }
      const int bits = EVP_PKEY_get_bits(pkey);
      if (bits < kRsaMinBits) {
        return std::unexpected(KeyError("weak_key", "RSA keys must be at least 2048 bits"));
      }
      if (bits > kRsaMaxBits) {
        return std::unexpected(KeyError("unsupported_key", "RSA key is too large"));
      }
      return OkStatus();
    }
  }
  return std::unexpected(KeyError("unsupported_key", "unsupported algorithm"));
}

Result<std::string> BnParam(EVP_PKEY* pkey, const char* name, size_t pad_to) {
  BIGNUM* raw = nullptr;
  if (EVP_PKEY_get_bn_param(pkey, name, &raw) != 1 || raw == nullptr) {
    return std::unexpected(CryptoInternal(std::string("EVP_PKEY_get_bn_param ") + name));
  }
  BnPtr bn(raw);
  const int num = BN_num_bytes(bn.get());
  const size_t len = pad_to == 0 ? static_cast<size_t>(num) : pad_to;
  if (num < 0 || static_cast<size_t>(num) > len) {
    return std::unexpected(CryptoInternal(std::string("parameter too large ") + name));
  }
  std::string out(len, '\0');
  if (BN_bn2binpad(bn.get(), reinterpret_cast<unsigned char*>(out.data()), static_cast<int>(len)) !=
      static_cast<int>(len)) {
    return std::unexpected(CryptoInternal("BN_bn2binpad"));
  }
  return out;
}

// The public key's RFC 7517 members (kty and key material only).
Result<json> PublicKeyMembers(EVP_PKEY* pkey, JwsAlg alg) {
  switch (alg) {
    case JwsAlg::kES256: {
      JITBROKER_ASSIGN_OR_RETURN(std::string x,
                                 BnParam(pkey, OSSL_PKEY_PARAM_EC_PUB_X, kEs256CoordBytes));
      JITBROKER_ASSIGN_OR_RETURN(std::string y,
                                 BnParam(pkey, OSSL_PKEY_PARAM_EC_PUB_Y, kEs256CoordBytes));
      return json{
          {"kty", "EC"}, {"crv", "P-256"}, {"x", Base64UrlEncode(x)}, {"y", Base64UrlEncode(y)}};
    }
    case JwsAlg::kEd25519: {
      std::string x(kEd25519KeyBytes, '\0');
      size_t len = x.size();
      if (EVP_PKEY_get_raw_public_key(pkey, reinterpret_cast<unsigned char*>(x.data()), &len) !=
              1 ||
          len != kEd25519KeyBytes) {
        return std::unexpected(CryptoInternal("EVP_PKEY_get_raw_public_key"));
      }
      return json{{"kty", "OKP"}, {"crv", "Ed25519"}, {"x", Base64UrlEncode(x)}};
    }
    case JwsAlg::kRS256: {
      // RFC 7518 §6.3.1: minimal big-endian encodings, no leading zero octets.
      JITBROKER_ASSIGN_OR_RETURN(std::string n, BnParam(pkey, OSSL_PKEY_PARAM_RSA_N, 0));
      JITBROKER_ASSIGN_OR_RETURN(std::string e, BnParam(pkey, OSSL_PKEY_PARAM_RSA_E, 0));
      return json{{"kty", "RSA"}, {"n", Base64UrlEncode(n)}, {"e", Base64UrlEncode(e)}};
    }
  }
  return std::unexpected(CryptoInternal("unsupported algorithm"));
}

const json* StringMember(const json& obj, const char* name) {
  auto it = obj.find(name);
  if (it == obj.end() || !it->is_string()) {
    return nullptr;
  }
  return &*it;
}

// RFC 7638: SHA-256 over the required members, lexicographically ordered,
// without whitespace.
Result<std::string> JwkThumbprint(const json& jwk) {
  if (!jwk.is_object()) {
    return std::unexpected(InvalidArgument("invalid_jwk", "JWK must be a JSON object"));
  }
  const json* kty = StringMember(jwk, "kty");
  if (kty == nullptr) {
    return std::unexpected(InvalidArgument("invalid_jwk", "JWK has no kty"));
  }
  std::vector<const char*> members;
  const std::string& kty_value = kty->get_ref<const std::string&>();
  if (kty_value == "EC") {
    members = {"crv", "kty", "x", "y"};
  } else if (kty_value == "OKP") {
    members = {"crv", "kty", "x"};
  } else if (kty_value == "RSA") {
    members = {"e", "kty", "n"};
  } else {
    return std::unexpected(InvalidArgument("unsupported_key", "unsupported JWK kty"));
  }
  std::string canonical = "{";
  try {
    for (const char* name : members) {
      const json* value = StringMember(jwk, name);
      if (value == nullptr) {
        return std::unexpected(InvalidArgument("invalid_jwk", "JWK lacks a required member"));
      }
      if (canonical.size() > 1) {
        canonical += ',';
      }
      canonical += json(name).dump();
      canonical += ':';
      canonical += value->dump();
    }
  } catch (const std::exception&) {
    return std::unexpected(InvalidArgument("invalid_jwk", "JWK member is not valid UTF-8"));
  }
  canonical += '}';
  return Base64UrlEncode(Sha256(canonical));
}

// --- Signatures ---------------------------------------------------------------

const char* DigestName(JwsAlg alg) {
  // Ed25519 hashes internally (PureEdDSA) and must be given no digest.
  return alg == JwsAlg::kEd25519 ? nullptr : "SHA256";
}

Result<std::string> DigestSign(EVP_PKEY* pkey, JwsAlg alg, std::string_view data) {
  MdCtxPtr ctx(EVP_MD_CTX_new());
  if (!ctx) {
    return std::unexpected(CryptoInternal("EVP_MD_CTX_new"));
  }
  if (EVP_DigestSignInit_ex(ctx.get(), nullptr, DigestName(alg), nullptr, nullptr, pkey, nullptr) !=
      1) {
    return std::unexpected(CryptoInternal("EVP_DigestSignInit_ex"));
  }
  size_t len = 0;
  if (EVP_DigestSign(ctx.get(), nullptr, &len, Bytes(data), data.size()) != 1) {
    return std::unexpected(CryptoInternal("EVP_DigestSign(size)"));
  }
  std::string sig(len, '\0');
  if (EVP_DigestSign(ctx.get(), reinterpret_cast<unsigned char*>(sig.data()), &len, Bytes(data),
                     data.size()) != 1) {
    return std::unexpected(CryptoInternal("EVP_DigestSign"));
  }
  sig.resize(len);
  return sig;
}

bool DigestVerify(EVP_PKEY* pkey, JwsAlg alg, std::string_view data, std::string_view sig) {
  MdCtxPtr ctx(EVP_MD_CTX_new());
  if (!ctx) {
    return false;
  }
  bool ok = EVP_DigestVerifyInit_ex(ctx.get(), nullptr, DigestName(alg), nullptr, nullptr, pkey,
                                    nullptr) == 1 &&
            EVP_DigestVerify(ctx.get(), Bytes(sig), sig.size(), Bytes(data), data.size()) == 1;
  ERR_clear_error();
  return ok;
}

// OpenSSL speaks DER (SEQUENCE { r INTEGER, s INTEGER }); JOSE uses fixed-width R||S.
Result<std::string> EcdsaDerToRaw(std::string_view der) {
  const unsigned char* p = Bytes(der);
  EcdsaSigPtr sig(d2i_ECDSA_SIG(nullptr, &p, static_cast<long>(der.size())));
  if (!sig || p != Bytes(der) + der.size()) {
    return std::unexpected(CryptoInternal("d2i_ECDSA_SIG"));
  }
  const BIGNUM* r = ECDSA_SIG_get0_r(sig.get());
  const BIGNUM* s = ECDSA_SIG_get0_s(sig.get());
  std::string raw(kEs256SigBytes, '\0');
  auto* out = reinterpret_cast<unsigned char*>(raw.data());
  if (BN_bn2binpad(r, out, kEs256CoordBytes) != static_cast<int>(kEs256CoordBytes) ||
      BN_bn2binpad(s, out + kEs256CoordBytes, kEs256CoordBytes) !=
          static_cast<int>(kEs256CoordBytes)) {
    return std::unexpected(CryptoInternal("BN_bn2binpad(ecdsa)"));
  }
  return raw;
}

std::optional<std::string> EcdsaRawToDer(std::string_view raw) {
  if (raw.size() != kEs256SigBytes) {
    return std::nullopt;
  }
  EcdsaSigPtr sig(ECDSA_SIG_new());
  BnPtr r(BN_bin2bn(Bytes(raw), kEs256CoordBytes, nullptr));
  BnPtr s(BN_bin2bn(Bytes(raw) + kEs256CoordBytes, kEs256CoordBytes, nullptr));
  if (!sig || !r || !s || ECDSA_SIG_set0(sig.get(), r.get(), s.get()) != 1) {
    ERR_clear_error();
    return std::nullopt;
  }
  // ECDSA_SIG_set0 took ownership.
  static_cast<void>(r.release());
  static_cast<void>(s.release());
  unsigned char* der = nullptr;
  const int len = i2d_ECDSA_SIG(sig.get(), &der);
  if (len <= 0 || der == nullptr) {
    ERR_clear_error();
    return std::nullopt;
  }
  std::string out(reinterpret_cast<const char*>(der), static_cast<size_t>(len));
  OPENSSL_free(der);
  return out;
}

// --- Strict JSON ----------------------------------------------------------------

// Through the one strict JSON parser: a JOSE header with two "alg" members,
// or a claim set with two "sub", is an attack on whichever parser disagrees,
// so duplicates are refused, as are a byte order mark and nesting deeper
// than kMaxJsonDepth. Every refusal is "malformed_jws"; the message does not
// echo the segment.
Result<json> ParseStrictObject(std::string_view text) {
  jitbroker::json::ParseOptions options;
  options.what = "JWS segment";
  options.max_depth = kMaxJsonDepth;
  Result<json> value = jitbroker::json::ParseStrict(text, options);
  if (!value) {
    const std::string_view reason = value.error().Reason();
    std::string message = "JWS segment is not valid JSON";
    if (reason == "duplicate_key") {
      message = "JWS segment has duplicate keys";
    } else if (reason == "too_deep") {
      message = "JWS segment is nested too deeply";
    } else if (text.starts_with("\xEF\xBB\xBF")) {
      message = "JWS segment has a byte order mark";
    }
    return std::unexpected(InvalidArgument("malformed_jws", std::move(message)));
  }
  if (!value->is_object()) {
    return std::unexpected(InvalidArgument("malformed_jws", "JWS segment is not a JSON object"));
  }
  return value;
}

Result<std::string> DumpCompact(const json& value) {
  try {
    return value.dump();
  } catch (const std::exception&) {
    return std::unexpected(InvalidArgument("invalid_json", "JSON contains invalid UTF-8"));
  }
}

Result<PkeyPtr> ReadPublicPem(std::string_view pem) {
  BioPtr bio(BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size())));
  if (!bio) {
    return std::unexpected(CryptoInternal("BIO_new_mem_buf"));
  }
  PkeyPtr pkey(PEM_read_bio_PUBKEY_ex(bio.get(), nullptr, nullptr, nullptr, nullptr, nullptr));
  if (!pkey) {
    return std::unexpected(KeyError("invalid_key", "not a PEM public key"));
  }
  return pkey;
}

// Refuse to prompt on a terminal for the passphrase of an encrypted key.
int NoPassphrase(char* /*buf*/, int /*size*/, int /*rwflag*/, void* /*u*/) { return -1; }

Result<std::string> DecodeFixed(const json& jwk, const char* name, size_t size) {
  const json* value = StringMember(jwk, name);
  if (value == nullptr) {
    return std::unexpected(InvalidArgument("invalid_jwk", "JWK lacks a required member"));
  }
  auto bytes = Base64UrlDecode(value->get_ref<const std::string&>());
  if (!bytes || (size != 0 && bytes->size() != size) || bytes->empty()) {
    return std::unexpected(InvalidArgument("invalid_jwk", "JWK member has an invalid encoding"));
  }
  return std::move(*bytes);
}

Status PublicCheck(EVP_PKEY* pkey) {
  PkeyCtxPtr ctx(EVP_PKEY_CTX_new_from_pkey(nullptr, pkey, nullptr));
  if (!ctx || EVP_PKEY_public_check(ctx.get()) != 1) {
    return std::unexpected(KeyError("invalid_jwk", "JWK is not a valid public key"));
  }
  return OkStatus();
}

Result<PkeyPtr> PkeyFromParams(const char* type, OSSL_PARAM_BLD* bld) {
  ParamPtr params(OSSL_PARAM_BLD_to_param(bld));
  PkeyCtxPtr ctx(EVP_PKEY_CTX_new_from_name(nullptr, type, nullptr));
  if (!params || !ctx || EVP_PKEY_fromdata_init(ctx.get()) != 1) {
    return std::unexpected(CryptoInternal("EVP_PKEY_fromdata_init"));
  }
  EVP_PKEY* raw = nullptr;
  if (EVP_PKEY_fromdata(ctx.get(), &raw, EVP_PKEY_PUBLIC_KEY, params.get()) != 1 ||
      raw == nullptr) {
    return std::unexpected(KeyError("invalid_jwk", "JWK is not a valid public key"));
  }
  return PkeyPtr(raw);
}

Result<PkeyPtr> EcPublicFromJwk(const json& jwk) {
  const json* crv = StringMember(jwk, "crv");
  if (crv == nullptr || *crv != "P-256") {
    return std::unexpected(InvalidArgument("unsupported_key", "only P-256 EC keys are supported"));
  }
  JITBROKER_ASSIGN_OR_RETURN(std::string x, DecodeFixed(jwk, "x", kEs256CoordBytes));
  JITBROKER_ASSIGN_OR_RETURN(std::string y, DecodeFixed(jwk, "y", kEs256CoordBytes));
  const std::string point = std::string(1, '\x04') + x + y;
  ParamBldPtr bld(OSSL_PARAM_BLD_new());
  if (!bld ||
      OSSL_PARAM_BLD_push_utf8_string(bld.get(), OSSL_PKEY_PARAM_GROUP_NAME, "prime256v1", 0) !=
          1 ||
      OSSL_PARAM_BLD_push_octet_string(bld.get(), OSSL_PKEY_PARAM_PUB_KEY, point.data(),
                                       point.size()) != 1) {
    return std::unexpected(CryptoInternal("OSSL_PARAM_BLD(EC)"));
  }
  JITBROKER_ASSIGN_OR_RETURN(PkeyPtr pkey, PkeyFromParams("EC", bld.get()));
  JITBROKER_RETURN_IF_ERROR(PublicCheck(pkey.get()));
  return pkey;
}

Result<PkeyPtr> OkpPublicFromJwk(const json& jwk) {
  const json* crv = StringMember(jwk, "crv");
  if (crv == nullptr || *crv != "Ed25519") {
    return std::unexpected(
        InvalidArgument("unsupported_key", "only Ed25519 OKP keys are supported"));
  }
  JITBROKER_ASSIGN_OR_RETURN(std::string x, DecodeFixed(jwk, "x", kEd25519KeyBytes));
  PkeyPtr pkey(EVP_PKEY_new_raw_public_key_ex(nullptr, "ED25519", nullptr, Bytes(x), x.size()));
  if (!pkey) {
    return std::unexpected(KeyError("invalid_jwk", "JWK is not a valid public key"));
  }
  return pkey;
}

Result<PkeyPtr> RsaPublicFromJwk(const json& jwk) {
  JITBROKER_ASSIGN_OR_RETURN(std::string n, DecodeFixed(jwk, "n", 0));
  JITBROKER_ASSIGN_OR_RETURN(std::string e, DecodeFixed(jwk, "e", 0));
  // Reject absurd sizes before doing any big-number work.
  if (n.size() > static_cast<size_t>(kRsaMaxBits / 8) + 1 || e.size() > 8) {
    return std::unexpected(InvalidArgument("unsupported_key", "RSA key is too large"));
  }
  BnPtr bn_n(BN_bin2bn(Bytes(n), static_cast<int>(n.size()), nullptr));
  BnPtr bn_e(BN_bin2bn(Bytes(e), static_cast<int>(e.size()), nullptr));
  ParamBldPtr bld(OSSL_PARAM_BLD_new());
  if (!bn_n || !bn_e || !bld ||
      OSSL_PARAM_BLD_push_BN(bld.get(), OSSL_PKEY_PARAM_RSA_N, bn_n.get()) != 1 ||
      OSSL_PARAM_BLD_push_BN(bld.get(), OSSL_PKEY_PARAM_RSA_E, bn_e.get()) != 1) {
    return std::unexpected(CryptoInternal("OSSL_PARAM_BLD(RSA)"));
  }
  JITBROKER_ASSIGN_OR_RETURN(PkeyPtr pkey, PkeyFromParams("RSA", bld.get()));
  // Size first: the public check should not run on a key we refuse anyway.
  JITBROKER_RETURN_IF_ERROR(CheckKeyFitsAlg(pkey.get(), JwsAlg::kRS256));
  JITBROKER_RETURN_IF_ERROR(PublicCheck(pkey.get()));
  return pkey;
}

}  // namespace

namespace internal {

// Exposed for the RFC 7638 known-answer test; kid() uses the same code.
Result<std::string> JwkThumbprintForTesting(const nlohmann::json& jwk) {
  return JwkThumbprint(jwk);
}

}  // namespace internal

// --- Algorithms -------------------------------------------------------------------

std::string_view JwsAlgName(JwsAlg alg) {
  switch (alg) {
    case JwsAlg::kES256:
      return "ES256";
    case JwsAlg::kEd25519:
      return "Ed25519";
    case JwsAlg::kRS256:
      return "RS256";
  }
  return "";
}

std::optional<JwsAlg> ParseJwsAlg(std::string_view name) {
  if (name == "ES256") {
    return JwsAlg::kES256;
  }
  if (name == "Ed25519" || name == "EdDSA") {
    return JwsAlg::kEd25519;
  }
  if (name == "RS256") {
    return JwsAlg::kRS256;
  }
  return std::nullopt;
}

// --- SigningKey -------------------------------------------------------------------

struct SigningKey::Impl {
  PkeyPtr pkey;
  json public_jwk;
};

struct VerifyKey::Impl {
  PkeyPtr pkey;
};

SigningKey::SigningKey(JwsAlg alg, std::unique_ptr<Impl> impl)
    : alg_(alg), impl_(std::move(impl)) {}

SigningKey::~SigningKey() = default;

namespace {

struct SigningMaterial {
  json public_jwk;
  std::string kid;
};

Result<SigningMaterial> DeriveSigningMaterial(EVP_PKEY* pkey, JwsAlg alg) {
  JITBROKER_ASSIGN_OR_RETURN(json jwk, PublicKeyMembers(pkey, alg));
  JITBROKER_ASSIGN_OR_RETURN(std::string kid, JwkThumbprint(jwk));
  jwk["kid"] = kid;
  jwk["alg"] = std::string(JwsAlgName(alg));
  jwk["use"] = "sig";
  return SigningMaterial{std::move(jwk), std::move(kid)};
}

}  // namespace

Result<std::unique_ptr<SigningKey>> SigningKey::Generate(JwsAlg alg) {
  EVP_PKEY* raw = nullptr;
  switch (alg) {
    case JwsAlg::kES256:
      raw = EVP_PKEY_Q_keygen(nullptr, nullptr, "EC", "P-256");
      break;
    case JwsAlg::kEd25519:
      raw = EVP_PKEY_Q_keygen(nullptr, nullptr, "ED25519");
      break;
    case JwsAlg::kRS256:
      raw = EVP_PKEY_Q_keygen(nullptr, nullptr, "RSA", static_cast<size_t>(kRsaMinBits));
      break;
  }
  if (raw == nullptr) {
    return std::unexpected(CryptoInternal("EVP_PKEY_Q_keygen"));
  }
  PkeyPtr pkey(raw);
  JITBROKER_RETURN_IF_ERROR(CheckKeyFitsAlg(pkey.get(), alg));
  JITBROKER_ASSIGN_OR_RETURN(SigningMaterial material, DeriveSigningMaterial(pkey.get(), alg));
  auto impl = std::make_unique<Impl>();
  impl->pkey = std::move(pkey);
  impl->public_jwk = std::move(material.public_jwk);
  std::unique_ptr<SigningKey> key(new SigningKey(alg, std::move(impl)));
  key->kid_ = std::move(material.kid);
  return key;
}

Result<std::unique_ptr<SigningKey>> SigningKey::FromPem(JwsAlg alg, const SecretValue& pem) {
  const std::string_view text = pem.Reveal();
  if (text.empty() || text.size() > static_cast<size_t>(INT32_MAX)) {
    return std::unexpected(KeyError("invalid_key", "not a PEM private key"));
  }
  BioPtr bio(BIO_new_mem_buf(text.data(), static_cast<int>(text.size())));
  if (!bio) {
    return std::unexpected(CryptoInternal("BIO_new_mem_buf"));
  }
  // Reads PKCS#8 and the traditional forms (PKCS#1 "RSA PRIVATE KEY", SEC1
  // "EC PRIVATE KEY"); encrypted keys fail instead of prompting.
  PkeyPtr pkey(
      PEM_read_bio_PrivateKey_ex(bio.get(), nullptr, NoPassphrase, nullptr, nullptr, nullptr));
  if (!pkey) {
    return std::unexpected(KeyError("invalid_key", "not an unencrypted PEM private key"));
  }
  JITBROKER_RETURN_IF_ERROR(CheckKeyFitsAlg(pkey.get(), alg));
  JITBROKER_ASSIGN_OR_RETURN(SigningMaterial material, DeriveSigningMaterial(pkey.get(), alg));
  auto impl = std::make_unique<Impl>();
  impl->pkey = std::move(pkey);
  impl->public_jwk = std::move(material.public_jwk);
  std::unique_ptr<SigningKey> key(new SigningKey(alg, std::move(impl)));
  key->kid_ = std::move(material.kid);
  return key;
}

Result<SecretValue> SigningKey::ToPem() const {
  // Secure-heap memory BIO: its buffer is cleansed when freed.
  BioPtr bio(BIO_new(BIO_s_secmem()));
  if (!bio) {
    return std::unexpected(CryptoInternal("BIO_new"));
  }
  // PEM_write_bio_PrivateKey writes PKCS#8 ("BEGIN PRIVATE KEY") in OpenSSL 3.
  if (PEM_write_bio_PrivateKey(bio.get(), impl_->pkey.get(), nullptr, nullptr, 0, nullptr,
                               nullptr) != 1) {
    return std::unexpected(CryptoInternal("PEM_write_bio_PrivateKey"));
  }
  char* data = nullptr;
  const long len = BIO_get_mem_data(bio.get(), &data);
  if (len <= 0 || data == nullptr) {
    return std::unexpected(CryptoInternal("BIO_get_mem_data"));
  }
  return SecretValue(std::string(data, static_cast<size_t>(len)));
}

nlohmann::json SigningKey::PublicJwk() const { return impl_->public_jwk; }

std::unique_ptr<VerifyKey> SigningKey::Public() const {
  // Round-trip through SubjectPublicKeyInfo so the VerifyKey holds no private
  // material.
  PkeyPtr pub;
  unsigned char* der = nullptr;
  const int len = i2d_PUBKEY(impl_->pkey.get(), &der);
  if (len > 0 && der != nullptr) {
    const unsigned char* p = der;
    pub.reset(d2i_PUBKEY_ex(nullptr, &p, len, nullptr, nullptr));
  }
  OPENSSL_free(der);
  if (!pub) {
    // Not expected; sharing the (immutable, refcounted) key is still correct.
    ERR_clear_error();
    EVP_PKEY_up_ref(impl_->pkey.get());
    pub.reset(impl_->pkey.get());
  }
  auto impl = std::make_unique<VerifyKey::Impl>();
  impl->pkey = std::move(pub);
  return std::unique_ptr<VerifyKey>(new VerifyKey(alg_, std::move(impl)));
}

Result<std::string> SigningKey::Sign(std::string_view signing_input) const {
  JITBROKER_ASSIGN_OR_RETURN(std::string sig, DigestSign(impl_->pkey.get(), alg_, signing_input));
  if (alg_ == JwsAlg::kES256) {
    return EcdsaDerToRaw(sig);
  }
  return sig;
}

Result<std::string> SigningKey::SignJwt(nlohmann::json header,
                                        const nlohmann::json& payload) const {
  if (!header.is_object() || !payload.is_object()) {
    return std::unexpected(
        InvalidArgument("invalid_argument", "JWT header and payload must be JSON objects"));
  }
  const std::string alg_name(JwsAlgName(alg_));
  if (auto it = header.find("alg"); it != header.end() && *it != alg_name) {
    return std::unexpected(
        InvalidArgument("jws_alg_mismatch", "JWT header alg does not match the signing key"));
  }
  header["alg"] = alg_name;
  if (!header.contains("typ")) {
    header["typ"] = "JWT";
  }
  if (!header.contains("kid")) {
    header["kid"] = kid_;
  }
  JITBROKER_ASSIGN_OR_RETURN(std::string header_text, DumpCompact(header));
  JITBROKER_ASSIGN_OR_RETURN(std::string payload_text, DumpCompact(payload));
  std::string out = Base64UrlEncode(header_text);
  out += '.';
  out += Base64UrlEncode(payload_text);
  JITBROKER_ASSIGN_OR_RETURN(std::string sig, Sign(out));
  out += '.';
  out += Base64UrlEncode(sig);
  return out;
}

// --- VerifyKey ---------------------------------------------------------------------

VerifyKey::VerifyKey(JwsAlg alg, std::unique_ptr<Impl> impl) : alg_(alg), impl_(std::move(impl)) {}

VerifyKey::~VerifyKey() = default;

Result<std::unique_ptr<VerifyKey>> VerifyKey::FromJwk(const nlohmann::json& jwk) {
  try {
    if (!jwk.is_object()) {
      return std::unexpected(InvalidArgument("invalid_jwk", "JWK must be a JSON object"));
    }
    for (const char* private_member : {"d", "p", "q", "dp", "dq", "qi", "oth", "k"}) {
      if (jwk.contains(private_member)) {
        return std::unexpected(
            InvalidArgument("invalid_jwk", "JWK contains private or symmetric key material"));
      }
    }
    const json* kty = StringMember(jwk, "kty");
    if (kty == nullptr) {
      return std::unexpected(InvalidArgument("invalid_jwk", "JWK has no kty"));
    }
    JwsAlg alg = JwsAlg::kES256;
    Result<PkeyPtr> pkey = std::unexpected(Error{});
    if (*kty == "EC") {
      alg = JwsAlg::kES256;
      pkey = EcPublicFromJwk(jwk);
    } else if (*kty == "OKP") {
      alg = JwsAlg::kEd25519;
      pkey = OkpPublicFromJwk(jwk);
    } else if (*kty == "RSA") {
      alg = JwsAlg::kRS256;
      pkey = RsaPublicFromJwk(jwk);
    } else {
      return std::unexpected(InvalidArgument("unsupported_key", "unsupported JWK kty"));
    }
    if (!pkey) {
      return std::unexpected(std::move(pkey).error());
    }
    if (auto it = jwk.find("alg"); it != jwk.end()) {
      std::optional<JwsAlg> declared;
      if (it->is_string()) {
        declared = ParseJwsAlg(it->get_ref<const std::string&>());
      }
      if (!declared || *declared != alg) {
        return std::unexpected(
            InvalidArgument("key_alg_mismatch", "JWK alg does not match its key type"));
      }
    }
    if (auto it = jwk.find("use"); it != jwk.end() && *it != "sig") {
      return std::unexpected(InvalidArgument("invalid_jwk", "JWK is not a signature key"));
    }
    if (auto it = jwk.find("key_ops"); it != jwk.end()) {
      bool can_verify = false;
      if (it->is_array()) {
        for (const json& op : *it) {
          can_verify = can_verify || op == "verify";
        }
      }
      if (!can_verify) {
        return std::unexpected(InvalidArgument("invalid_jwk", "JWK key_ops does not allow verify"));
      }
    }
    JITBROKER_RETURN_IF_ERROR(CheckKeyFitsAlg(pkey->get(), alg));
    auto impl = std::make_unique<Impl>();
    impl->pkey = std::move(*pkey);
    return std::unique_ptr<VerifyKey>(new VerifyKey(alg, std::move(impl)));
  } catch (const std::exception&) {
    ERR_clear_error();
    return std::unexpected(InvalidArgument("invalid_jwk", "JWK could not be read"));
  }
}

Result<std::unique_ptr<VerifyKey>> VerifyKey::FromPem(JwsAlg alg, std::string_view pem) {
  if (pem.empty() || pem.size() > static_cast<size_t>(INT32_MAX)) {
    return std::unexpected(KeyError("invalid_key", "not a PEM public key"));
  }
  JITBROKER_ASSIGN_OR_RETURN(PkeyPtr pkey, ReadPublicPem(pem));
  JITBROKER_RETURN_IF_ERROR(CheckKeyFitsAlg(pkey.get(), alg));
  auto impl = std::make_unique<Impl>();
  impl->pkey = std::move(pkey);
  return std::unique_ptr<VerifyKey>(new VerifyKey(alg, std::move(impl)));
}

Result<nlohmann::json> VerifyKey::PublicJwk() const {
  JITBROKER_ASSIGN_OR_RETURN(SigningMaterial material,
                             DeriveSigningMaterial(impl_->pkey.get(), alg_));
  return std::move(material.public_jwk);
}

bool VerifyKey::Verify(std::string_view signing_input, std::string_view signature) const {
  switch (alg_) {
    case JwsAlg::kES256: {
      // Only the fixed 64-byte JOSE form; DER or any other length is refused.
      std::optional<std::string> der = EcdsaRawToDer(signature);
      if (!der) {
        return false;
      }
      return DigestVerify(impl_->pkey.get(), alg_, signing_input, *der);
    }
    case JwsAlg::kEd25519:
      if (signature.size() != kEd25519SigBytes) {
        return false;
      }
      return DigestVerify(impl_->pkey.get(), alg_, signing_input, signature);
    case JwsAlg::kRS256: {
      const int size = EVP_PKEY_get_size(impl_->pkey.get());
      if (size <= 0 || signature.size() != static_cast<size_t>(size)) {
        return false;
      }
      return DigestVerify(impl_->pkey.get(), alg_, signing_input, signature);
    }
  }
  return false;
}

// --- Compact JWS ---------------------------------------------------------------------

Result<DecodedJws> DecodeJws(std::string_view compact, size_t max_bytes) {
  try {
    if (compact.size() > max_bytes) {
      return std::unexpected(InvalidArgument("jws_too_large", "JWS exceeds the size limit"));
    }
    const size_t first = compact.find('.');
    const size_t second =
        first == std::string_view::npos ? std::string_view::npos : compact.find('.', first + 1);
    if (first == std::string_view::npos || second == std::string_view::npos ||
        compact.find('.', second + 1) != std::string_view::npos) {
      return std::unexpected(
          InvalidArgument("malformed_jws", "JWS must have exactly three segments"));
    }
    const std::string_view header_b64 = compact.substr(0, first);
    const std::string_view payload_b64 = compact.substr(first + 1, second - first - 1);
    const std::string_view signature_b64 = compact.substr(second + 1);
    if (header_b64.empty() || payload_b64.empty() || signature_b64.empty()) {
      return std::unexpected(InvalidArgument("malformed_jws", "JWS has an empty segment"));
    }
    auto header_text = Base64UrlDecode(header_b64);
    auto payload_text = Base64UrlDecode(payload_b64);
    auto signature = Base64UrlDecode(signature_b64);
    if (!header_text || !payload_text || !signature) {
      return std::unexpected(
          InvalidArgument("malformed_jws", "JWS segment is not canonical base64url"));
    }
    JITBROKER_ASSIGN_OR_RETURN(json header, ParseStrictObject(*header_text));
    JITBROKER_ASSIGN_OR_RETURN(json payload, ParseStrictObject(*payload_text));
    if (const json* alg = StringMember(header, "alg"); alg == nullptr) {
      return std::unexpected(InvalidArgument("malformed_jws", "JWS header has no alg"));
    }
    DecodedJws out;
    out.header = std::move(header);
    out.payload = std::move(payload);
    out.signing_input = std::string(compact.substr(0, second));
    out.signature = std::move(*signature);
    return out;
  } catch (const std::exception&) {
    return std::unexpected(InvalidArgument("malformed_jws", "JWS could not be decoded"));
  }
}

Status VerifyDecodedJws(const DecodedJws& jws, const VerifyKey& key) {
  try {
    const json& header = jws.header;
    const json* alg_member = StringMember(header, "alg");
    if (alg_member == nullptr) {
      return std::unexpected(JwsError("malformed_jws", "JWS header has no alg"));
    }
    // Allow-list: the header may only name the key's own algorithm, which rules
    // out "none", HMAC (a public key used as a MAC secret) and RS/ES/EdDSA swaps.
    const std::optional<JwsAlg> alg = ParseJwsAlg(alg_member->get_ref<const std::string&>());
    if (!alg || *alg != key.alg()) {
      return std::unexpected(
          JwsError("jws_alg_mismatch", "JWS alg is not allowed for the verification key"));
    }
    if (header.contains("crit")) {
      return std::unexpected(
          JwsError("jws_crit_unsupported", "JWS critical header extensions are not supported"));
    }
    // Keys named or carried by the token itself are never trusted.
    for (const char* name : {"jku", "x5u", "jwk", "x5c"}) {
      if (header.contains(name)) {
        return std::unexpected(
            JwsError("jws_embedded_key", "JWS headers that carry or reference keys are refused"));
      }
    }
    // RFC 7797 unencoded payloads change what is signed; not supported.
    if (header.contains("b64")) {
      return std::unexpected(JwsError("jws_unsupported_header", "JWS b64 header is not supported"));
    }
    if (!key.Verify(jws.signing_input, jws.signature)) {
      return std::unexpected(JwsError("invalid_signature", "JWS signature is invalid"));
    }
    return OkStatus();
  } catch (const std::exception&) {
    ERR_clear_error();
    return std::unexpected(JwsError("malformed_jws", "JWS could not be verified"));
  }
}

Result<nlohmann::json> VerifyJws(std::string_view compact, const VerifyKey& key) {
  try {
    auto decoded = DecodeJws(compact);
    if (!decoded) {
      Error e = std::move(decoded).error();
      return std::unexpected(JwsError(std::string(e.Reason()), std::move(e.message)));
    }
    JITBROKER_RETURN_IF_ERROR(VerifyDecodedJws(*decoded, key));
    return std::move(decoded->payload);
  } catch (const std::exception&) {
    ERR_clear_error();
    return std::unexpected(JwsError("malformed_jws", "JWS could not be verified"));
  }
}

}  // namespace jitbroker::crypto
