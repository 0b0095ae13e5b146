#include "broker/crypto/jose.h"

#include <unistd.h>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <memory>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include <doctest/doctest.h>
#include <openssl/bio.h>
#include <openssl/bn.h>
#include <openssl/ec.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <nlohmann/json.hpp>

#include "broker/crypto/crypto.h"
#include "jitbroker/error.h"
#include "jitbroker/secret.h"

namespace jitbroker::crypto {
namespace internal {
// Defined in broker/crypto/jose.cc (the code behind SigningKey::kid()).
Result<std::string> JwkThumbprintForTesting(const nlohmann::json& jwk);
}  // namespace internal

namespace {

using json = nlohmann::json;

// --- Independent OpenSSL helpers (tests may use OpenSSL directly) -----------

struct PkeyFree {
  void operator()(EVP_PKEY* p) const { EVP_PKEY_free(p); }
};
using Pkey = std::unique_ptr<EVP_PKEY, PkeyFree>;

std::string BioToString(BIO* bio) {
  char* data = nullptr;
  const long len = BIO_get_mem_data(bio, &data);
  return std::string(data, static_cast<size_t>(len));
}

Pkey LoadPrivatePem(std::string_view pem) {
  BIO* bio = BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size()));
  REQUIRE(bio != nullptr);
  Pkey pkey(PEM_read_bio_PrivateKey(bio, nullptr, nullptr, nullptr));
  BIO_free(bio);
  REQUIRE(pkey);
  return pkey;
}

std::string PublicPemOf(const SigningKey& key) {
  auto pem = key.ToPem();
  REQUIRE(pem.has_value());
  Pkey pkey = LoadPrivatePem(pem->Reveal());
  BIO* bio = BIO_new(BIO_s_mem());
  REQUIRE(PEM_write_bio_PUBKEY(bio, pkey.get()) == 1);
  std::string out = BioToString(bio);
  BIO_free(bio);
  return out;
}

std::string TraditionalPemOf(EVP_PKEY* pkey) {
  BIO* bio = BIO_new(BIO_s_mem());
  REQUIRE(PEM_write_bio_PrivateKey_traditional(bio, pkey, nullptr, nullptr, 0, nullptr, nullptr) ==
          1);
  std::string out = BioToString(bio);
  BIO_free(bio);
  return out;
}

std::string Pkcs8PemOf(EVP_PKEY* pkey) {
  BIO* bio = BIO_new(BIO_s_mem());
  REQUIRE(PEM_write_bio_PKCS8PrivateKey(bio, pkey, nullptr, nullptr, 0, nullptr, nullptr) == 1);
  std::string out = BioToString(bio);
  BIO_free(bio);
  return out;
}

std::string RawToDer(std::string_view raw) {
  REQUIRE(raw.size() == 64);
  ECDSA_SIG* sig = ECDSA_SIG_new();
  BIGNUM* r = BN_bin2bn(reinterpret_cast<const unsigned char*>(raw.data()), 32, nullptr);
  BIGNUM* s = BN_bin2bn(reinterpret_cast<const unsigned char*>(raw.data()) + 32, 32, nullptr);
  REQUIRE(ECDSA_SIG_set0(sig, r, s) == 1);
  unsigned char* der = nullptr;
  const int len = i2d_ECDSA_SIG(sig, &der);
  REQUIRE(len > 0);
  std::string out(reinterpret_cast<char*>(der), static_cast<size_t>(len));
  OPENSSL_free(der);
  ECDSA_SIG_free(sig);
  return out;
}

std::string DerToRaw(std::string_view der) {
  const auto* p = reinterpret_cast<const unsigned char*>(der.data());
  ECDSA_SIG* sig = d2i_ECDSA_SIG(nullptr, &p, static_cast<long>(der.size()));
  REQUIRE(sig != nullptr);
  std::string out(64, '\0');
  auto* o = reinterpret_cast<unsigned char*>(out.data());
  REQUIRE(BN_bn2binpad(ECDSA_SIG_get0_r(sig), o, 32) == 32);
  REQUIRE(BN_bn2binpad(ECDSA_SIG_get0_s(sig), o + 32, 32) == 32);
  ECDSA_SIG_free(sig);
  return out;
}

// --- Helpers ------------------------------------------------------------------

std::unique_ptr<SigningKey> MustGenerate(JwsAlg alg) {
  auto key = SigningKey::Generate(alg);
  REQUIRE(key.has_value());
  return std::move(*key);
}

std::string B64(std::string_view s) { return Base64UrlEncode(s); }

// Builds a compact JWS from literal header/payload JSON text, signed by `key`,
// so tests can produce headers SignJwt would never emit.
std::string SignRaw(const SigningKey& key, std::string_view header_text,
                    std::string_view payload_text) {
  std::string input = B64(header_text) + "." + B64(payload_text);
  auto sig = key.Sign(input);
  REQUIRE(sig.has_value());
  return input + "." + B64(*sig);
}

std::string ReadFile(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

void WriteFile(const std::filesystem::path& path, std::string_view data) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(data.data(), static_cast<std::streamsize>(data.size()));
  REQUIRE(out.good());
}

struct TempDir {
  TempDir() {
    std::string tmpl = (std::filesystem::temp_directory_path() / "jose_test_XXXXXX").string();
    REQUIRE(mkdtemp(tmpl.data()) != nullptr);
    path = tmpl;
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path, ec);
  }
  std::filesystem::path path;
};

int Run(const std::string& command) { return std::system((command + " >/dev/null 2>&1").c_str()); }

// PKCS#8 DER prefix for an Ed25519 private key (RFC 8410): the 32-byte seed follows.
std::string Ed25519Pkcs8Pem(std::string_view seed) {
  const std::string prefix("\x30\x2e\x02\x01\x00\x30\x05\x06\x03\x2b\x65\x70\x04\x22\x04\x20", 16);
  const std::string b64 = Base64Encode(prefix + std::string(seed));
  return "-----BEGIN PRIVATE KEY-----\n" + b64 + "\n-----END PRIVATE KEY-----\n";
}

constexpr JwsAlg kAllAlgs[] = {JwsAlg::kES256, JwsAlg::kEd25519, JwsAlg::kRS256};

// --- RFC vectors ----------------------------------------------------------------

// RFC 7515 Appendix A.3 (ES256).
constexpr std::string_view kRfc7515A3Jws =
    "eyJhbGciOiJFUzI1NiJ9"
    "."
    "eyJpc3MiOiJqb2UiLA0KICJleHAiOjEzMDA4MTkzODAsDQogImh0dHA6Ly9leGFtcGxlLmNvbS9pc19yb290Ijp0cnVlfQ"
    "."
    "DtEhU3ljbEg8L38VWAfUAqOyKAM6-Xx-F4GawxaepmXFCgfTjDxw5djxLa8ISlSApmWQxfKTUJqPP3-Kg6NU1Q";
const json kRfc7515A3Jwk = {{"kty", "EC"},
                            {"crv", "P-256"},
                            {"x", "f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU"},
                            {"y", "x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"}};
constexpr std::string_view kRfc7515A3D = "jpsQnnGQmL-YBIffH1136cspYG6-0iY7X1fCE9-E9LI";

// RFC 8037 Appendix A (Ed25519).
constexpr std::string_view kRfc8037D = "nWGxne_9WmC6hEr0kuwsxERJxWl7MmkZcDusAxyuf2A";
constexpr std::string_view kRfc8037X = "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo";
constexpr std::string_view kRfc8037Thumbprint = "kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k";
constexpr std::string_view kRfc8037SigningInput =
    "eyJhbGciOiJFZERTQSJ9.RXhhbXBsZSBvZiBFZDI1NTE5IHNpZ25pbmc";
constexpr std::string_view kRfc8037Signature =
    "hgyY0il_MGCjP0JzlnLWG1PPOt7-09PGcvMg3AIbQR6dWbhijcNR4ki4iylGjg5BhVsPt9g7sVvpAr_MuM0KAg";

// RFC 7638 §3.1.
const json kRfc7638Jwk = {
    {"kty", "RSA"},
    {"n",
     "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_"
     "BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-"
     "65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-"
     "bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw"},
    {"e", "AQAB"},
    {"alg", "RS256"},
    {"kid", "2011-04-29"}};

// --- Tests ------------------------------------------------------------------------

TEST_CASE("Jose: algorithm names") {
  CHECK(JwsAlgName(JwsAlg::kES256) == "ES256");
  CHECK(JwsAlgName(JwsAlg::kEd25519) == "Ed25519");
  CHECK(JwsAlgName(JwsAlg::kRS256) == "RS256");
  CHECK(ParseJwsAlg("ES256") == JwsAlg::kES256);
  CHECK(ParseJwsAlg("Ed25519") == JwsAlg::kEd25519);
  CHECK(ParseJwsAlg("EdDSA") == JwsAlg::kEd25519);
  CHECK(ParseJwsAlg("RS256") == JwsAlg::kRS256);
  for (std::string_view bad :
       {"", "none", "None", "HS256", "es256", "RS256 ", "PS256", "ES384", "Ed448", "eddsa"}) {
    CAPTURE(bad);
    CHECK_FALSE(ParseJwsAlg(bad).has_value());
  }
}

TEST_CASE("Jose: RFC 7638 JWK thumbprint") {
  auto thumb = internal::JwkThumbprintForTesting(kRfc7638Jwk);
  REQUIRE(thumb.has_value());
  CHECK(*thumb == "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs");

  // The same key is a valid 2048-bit RS256 verification key.
  auto key = VerifyKey::FromJwk(kRfc7638Jwk);
  REQUIRE(key.has_value());
  CHECK((*key)->alg() == JwsAlg::kRS256);

  CHECK_FALSE(internal::JwkThumbprintForTesting(json{{"kty", "RSA"}, {"n", "AQAB"}}).has_value());
  CHECK_FALSE(internal::JwkThumbprintForTesting(json{{"kty", "oct"}, {"k", "AAAA"}}).has_value());
  CHECK_FALSE(internal::JwkThumbprintForTesting(json::array()).has_value());
}

TEST_CASE("Jose: RFC 7515 A.3 ES256 example verifies") {
  auto key = VerifyKey::FromJwk(kRfc7515A3Jwk);
  REQUIRE(key.has_value());
  CHECK((*key)->alg() == JwsAlg::kES256);

  auto payload = VerifyJws(kRfc7515A3Jws, **key);
  REQUIRE(payload.has_value());
  CHECK((*payload)["iss"] == "joe");
  CHECK((*payload)["exp"] == 1300819380);
  CHECK((*payload)["http://example.com/is_root"] == true);

  SUBCASE("flipping any signature byte fails") {
    auto decoded = DecodeJws(kRfc7515A3Jws);
    REQUIRE(decoded.has_value());
    REQUIRE(decoded->signature.size() == 64);
    for (size_t i = 0; i < decoded->signature.size(); ++i) {
      std::string sig = decoded->signature;
      sig[i] = static_cast<char>(sig[i] ^ 0x01);
      CHECK_FALSE((*key)->Verify(decoded->signing_input, sig));
      const std::string token = decoded->signing_input + "." + B64(sig);
      auto r = VerifyJws(token, **key);
      REQUIRE_FALSE(r.has_value());
      CHECK(r.error().code == ErrorCode::kUnauthenticated);
      CHECK(r.error().Reason() == "invalid_signature");
    }
  }

  SUBCASE("changing the payload fails") {
    const std::string forged = std::string("eyJhbGciOiJFUzI1NiJ9.") +
                               B64(R"({"iss":"joe","exp":1300819380})") + "." +
                               std::string(kRfc7515A3Jws.substr(kRfc7515A3Jws.rfind('.') + 1));
    auto r = VerifyJws(forged, **key);
    REQUIRE_FALSE(r.has_value());
    CHECK(r.error().Reason() == "invalid_signature");
  }

  SUBCASE("the RFC private key signs what the RFC public key verifies") {
    // SEC1 "EC PRIVATE KEY" without the public point: OpenSSL derives it.
    auto d = Base64UrlDecode(kRfc7515A3D);
    REQUIRE(d.has_value());
    const std::string der = std::string("\x30\x31\x02\x01\x01\x04\x20", 7) + *d +
                            std::string("\xa0\x0a\x06\x08\x2a\x86\x48\xce\x3d\x03\x01\x07", 12);
    const std::string pem =
        "-----BEGIN EC PRIVATE KEY-----\n" + Base64Encode(der) + "\n-----END EC PRIVATE KEY-----\n";
    auto signer = SigningKey::FromPem(JwsAlg::kES256, SecretValue(pem));
    REQUIRE(signer.has_value());
    CHECK((*signer)->PublicJwk()["x"] == kRfc7515A3Jwk["x"]);
    CHECK((*signer)->PublicJwk()["y"] == kRfc7515A3Jwk["y"]);
    auto token = (*signer)->SignJwt(json::object(), json{{"iss", "joe"}});
    REQUIRE(token.has_value());
    CHECK(VerifyJws(*token, **key).has_value());
  }
}

TEST_CASE("Jose: RFC 8037 Ed25519 example (deterministic signature)") {
  auto seed = Base64UrlDecode(kRfc8037D);
  REQUIRE(seed.has_value());
  auto signer = SigningKey::FromPem(JwsAlg::kEd25519, SecretValue(Ed25519Pkcs8Pem(*seed)));
  REQUIRE(signer.has_value());
  const SigningKey& key = **signer;

  CHECK(key.alg() == JwsAlg::kEd25519);
  CHECK(key.kid() == kRfc8037Thumbprint);
  const json jwk = key.PublicJwk();
  CHECK(jwk["kty"] == "OKP");
  CHECK(jwk["crv"] == "Ed25519");
  CHECK(jwk["x"] == kRfc8037X);
  CHECK(jwk["kid"] == kRfc8037Thumbprint);
  CHECK(jwk["alg"] == "Ed25519");
  CHECK(jwk["use"] == "sig");
  CHECK_FALSE(jwk.contains("d"));

  auto sig = key.Sign(kRfc8037SigningInput);
  REQUIRE(sig.has_value());
  CHECK(B64(*sig) == kRfc8037Signature);

  // RFC 8037 uses alg "EdDSA" and a JWK that says so.
  auto verifier = VerifyKey::FromJwk(
      json{{"kty", "OKP"}, {"crv", "Ed25519"}, {"alg", "EdDSA"}, {"x", kRfc8037X}});
  REQUIRE(verifier.has_value());
  auto expected_sig = Base64UrlDecode(kRfc8037Signature);
  REQUIRE(expected_sig.has_value());
  CHECK((*verifier)->Verify(kRfc8037SigningInput, *expected_sig));
  CHECK(key.Public()->Verify(kRfc8037SigningInput, *expected_sig));

  std::string tampered = *expected_sig;
  tampered[10] = static_cast<char>(tampered[10] ^ 0x80);
  CHECK_FALSE((*verifier)->Verify(kRfc8037SigningInput, tampered));
  CHECK_FALSE((*verifier)->Verify("eyJhbGciOiJFZERTQSJ9.RXhhbXBsZSBvZiBFZDI1NTE5IHNpZ25pbmd",
                                  *expected_sig));

  // The RFC's compact JWS has a non-JSON payload, which JWT verification refuses;
  // a JWT with the legacy "EdDSA" header is accepted for an Ed25519 key.
  const std::string rfc_compact =
      std::string(kRfc8037SigningInput) + "." + std::string(kRfc8037Signature);
  auto rfc_result = VerifyJws(rfc_compact, **verifier);
  REQUIRE_FALSE(rfc_result.has_value());
  CHECK(rfc_result.error().Reason() == "malformed_jws");
  auto legacy = VerifyJws(SignRaw(key, R"({"alg":"EdDSA"})", R"({"sub":"x"})"), **verifier);
  REQUIRE(legacy.has_value());
  CHECK((*legacy)["sub"] == "x");
}

TEST_CASE("Jose: generated keys sign and verify JWTs") {
  for (JwsAlg alg : kAllAlgs) {
    CAPTURE(JwsAlgName(alg));
    auto key = MustGenerate(alg);
    CHECK(key->alg() == alg);
    CHECK(key->kid().size() == 43);

    const json jwk = key->PublicJwk();
    CHECK(jwk["kid"] == key->kid());
    CHECK(jwk["alg"] == JwsAlgName(alg));
    CHECK(jwk["use"] == "sig");
    CHECK_FALSE(jwk.contains("d"));
    auto thumb = internal::JwkThumbprintForTesting(jwk);
    REQUIRE(thumb.has_value());
    CHECK(*thumb == key->kid());
    switch (alg) {
      case JwsAlg::kES256:
        CHECK(jwk["kty"] == "EC");
        CHECK(jwk["crv"] == "P-256");
        CHECK(jwk["x"].get<std::string>().size() == 43);
        CHECK(jwk["y"].get<std::string>().size() == 43);
        break;
      case JwsAlg::kEd25519:
        CHECK(jwk["kty"] == "OKP");
        CHECK(jwk["crv"] == "Ed25519");
        break;
      case JwsAlg::kRS256:
        CHECK(jwk["kty"] == "RSA");
        CHECK(jwk["e"] == "AQAB");
        CHECK(Base64UrlDecode(jwk["n"].get<std::string>())->size() == 256);
        break;
    }

    const json claims = {{"iss", "https://broker.example"}, {"sub", "ci"}, {"exp", 1900000000}};
    auto token = key->SignJwt(json::object(), claims);
    REQUIRE(token.has_value());

    auto decoded = DecodeJws(*token);
    REQUIRE(decoded.has_value());
    CHECK(decoded->header["alg"] == JwsAlgName(alg));
    CHECK(decoded->header["typ"] == "JWT");
    CHECK(decoded->header["kid"] == key->kid());
    CHECK(decoded->payload == claims);

    auto from_jwk = VerifyKey::FromJwk(jwk);
    REQUIRE(from_jwk.has_value());
    auto from_pem = VerifyKey::FromPem(alg, PublicPemOf(*key));
    REQUIRE(from_pem.has_value());
    const std::unique_ptr<VerifyKey> public_key = key->Public();
    for (const VerifyKey* verifier : {public_key.get(), from_jwk->get(), from_pem->get()}) {
      auto payload = VerifyJws(*token, *verifier);
      REQUIRE(payload.has_value());
      CHECK(*payload == claims);
    }

    // Another key of the same type does not verify it.
    auto other = MustGenerate(alg);
    auto r = VerifyJws(*token, *other->Public());
    REQUIRE_FALSE(r.has_value());
    CHECK(r.error().Reason() == "invalid_signature");

    // Caller-provided typ and kid are kept; a conflicting alg is refused.
    auto custom = key->SignJwt(json{{"typ", "at+jwt"}, {"kid", "k1"}}, claims);
    REQUIRE(custom.has_value());
    auto custom_decoded = DecodeJws(*custom);
    REQUIRE(custom_decoded.has_value());
    CHECK(custom_decoded->header["typ"] == "at+jwt");
    CHECK(custom_decoded->header["kid"] == "k1");
    auto bad_alg = key->SignJwt(json{{"alg", "none"}}, claims);
    REQUIRE_FALSE(bad_alg.has_value());
    CHECK(bad_alg.error().Reason() == "jws_alg_mismatch");
    CHECK_FALSE(key->SignJwt(json::array(), claims).has_value());
    CHECK_FALSE(key->SignJwt(json::object(), json("not an object")).has_value());
    CHECK_FALSE(key->SignJwt(json::object(), json{{"bad", "\xff\xfe"}}).has_value());
  }
}

TEST_CASE("Jose: ES256 signatures are 64-byte R||S") {
  auto key = MustGenerate(JwsAlg::kES256);
  auto verifier = key->Public();
  for (int i = 0; i < 20; ++i) {
    const std::string input = "input-" + std::to_string(i);
    auto sig = key->Sign(input);
    REQUIRE(sig.has_value());
    REQUIRE(sig->size() == 64);
    CHECK(verifier->Verify(input, *sig));
    // The DER form of the very same valid signature is refused.
    CHECK_FALSE(verifier->Verify(input, RawToDer(*sig)));
    // Wrong lengths are refused.
    CHECK_FALSE(verifier->Verify(input, sig->substr(0, 63)));
    CHECK_FALSE(verifier->Verify(input, *sig + '\0'));
    CHECK_FALSE(verifier->Verify(input, std::string(1, '\0') + *sig));
  }
  CHECK_FALSE(verifier->Verify("x", ""));
  CHECK_FALSE(verifier->Verify("x", std::string(64, '\0')));
}

TEST_CASE("Jose: PEM import and export") {
  SUBCASE("ToPem writes PKCS#8 and FromPem reads it back") {
    for (JwsAlg alg : kAllAlgs) {
      CAPTURE(JwsAlgName(alg));
      auto key = MustGenerate(alg);
      auto pem = key->ToPem();
      REQUIRE(pem.has_value());
      CHECK(pem->Reveal().rfind("-----BEGIN PRIVATE KEY-----\n", 0) == 0);
      auto loaded = SigningKey::FromPem(alg, *pem);
      REQUIRE(loaded.has_value());
      CHECK((*loaded)->kid() == key->kid());
      auto token = (*loaded)->SignJwt(json::object(), json{{"a", 1}});
      REQUIRE(token.has_value());
      CHECK(VerifyJws(*token, *key->Public()).has_value());
    }
  }

  SUBCASE("key type must fit the algorithm") {
    for (JwsAlg key_alg : kAllAlgs) {
      auto key = MustGenerate(key_alg);
      auto pem = key->ToPem();
      REQUIRE(pem.has_value());
      const std::string pub = PublicPemOf(*key);
      for (JwsAlg want : kAllAlgs) {
        if (want == key_alg) {
          continue;
        }
        CAPTURE(JwsAlgName(key_alg));
        CAPTURE(JwsAlgName(want));
        auto s = SigningKey::FromPem(want, *pem);
        REQUIRE_FALSE(s.has_value());
        CHECK(s.error().Reason() == "key_alg_mismatch");
        auto v = VerifyKey::FromPem(want, pub);
        REQUIRE_FALSE(v.has_value());
        CHECK(v.error().Reason() == "key_alg_mismatch");
      }
    }
  }

  SUBCASE("traditional PKCS#1 RSA and SEC1 EC PEM are accepted") {
    for (JwsAlg alg : {JwsAlg::kRS256, JwsAlg::kES256}) {
      auto key = MustGenerate(alg);
      auto pem = key->ToPem();
      REQUIRE(pem.has_value());
      Pkey pkey = LoadPrivatePem(pem->Reveal());
      const std::string traditional = TraditionalPemOf(pkey.get());
      CHECK(traditional.find(alg == JwsAlg::kRS256 ? "BEGIN RSA PRIVATE KEY"
                                                   : "BEGIN EC PRIVATE KEY") != std::string::npos);
      auto loaded = SigningKey::FromPem(alg, SecretValue(traditional));
      REQUIRE(loaded.has_value());
      CHECK((*loaded)->kid() == key->kid());
    }
  }

  SUBCASE("RSA keys below 2048 bits are refused") {
    Pkey small(EVP_PKEY_Q_keygen(nullptr, nullptr, "RSA", size_t{1024}));
    REQUIRE(small);
    auto s = SigningKey::FromPem(JwsAlg::kRS256, SecretValue(Pkcs8PemOf(small.get())));
    REQUIRE_FALSE(s.has_value());
    CHECK(s.error().Reason() == "weak_key");

    BIO* bio = BIO_new(BIO_s_mem());
    REQUIRE(PEM_write_bio_PUBKEY(bio, small.get()) == 1);
    const std::string pub = BioToString(bio);
    BIO_free(bio);
    auto v = VerifyKey::FromPem(JwsAlg::kRS256, pub);
    REQUIRE_FALSE(v.has_value());
    CHECK(v.error().Reason() == "weak_key");

    BIGNUM* n = nullptr;
    REQUIRE(EVP_PKEY_get_bn_param(small.get(), "n", &n) == 1);
    std::string n_bytes(static_cast<size_t>(BN_num_bytes(n)), '\0');
    BN_bn2bin(n, reinterpret_cast<unsigned char*>(n_bytes.data()));
    BN_free(n);
    auto j = VerifyKey::FromJwk(json{{"kty", "RSA"}, {"n", B64(n_bytes)}, {"e", "AQAB"}});
    REQUIRE_FALSE(j.has_value());
    CHECK(j.error().Reason() == "weak_key");
  }

  SUBCASE("garbage, public and encrypted PEM are refused without prompting") {
    CHECK_FALSE(SigningKey::FromPem(JwsAlg::kES256, SecretValue("")).has_value());
    CHECK_FALSE(SigningKey::FromPem(JwsAlg::kES256, SecretValue("not a pem")).has_value());
    auto key = MustGenerate(JwsAlg::kES256);
    auto pub = SigningKey::FromPem(JwsAlg::kES256, SecretValue(PublicPemOf(*key)));
    CHECK_FALSE(pub.has_value());
    CHECK_FALSE(VerifyKey::FromPem(JwsAlg::kES256, "").has_value());
    CHECK_FALSE(VerifyKey::FromPem(JwsAlg::kES256,
                                   "-----BEGIN PUBLIC KEY-----\nAAAA\n"
                                   "-----END PUBLIC KEY-----\n")
                    .has_value());

    auto pem = key->ToPem();
    REQUIRE(pem.has_value());
    Pkey pkey = LoadPrivatePem(pem->Reveal());
    BIO* bio = BIO_new(BIO_s_mem());
    static const char kPass[] = "passphrase";
    REQUIRE(PEM_write_bio_PKCS8PrivateKey(bio, pkey.get(), EVP_aes_256_cbc(), kPass,
                                          sizeof(kPass) - 1, nullptr, nullptr) == 1);
    const std::string encrypted = BioToString(bio);
    BIO_free(bio);
    REQUIRE(encrypted.find("ENCRYPTED PRIVATE KEY") != std::string::npos);
    auto r = SigningKey::FromPem(JwsAlg::kES256, SecretValue(encrypted));
    REQUIRE_FALSE(r.has_value());
    CHECK(r.error().Reason() == "invalid_key");
  }
}

TEST_CASE("Jose: VerifyKey::FromJwk validation") {
  auto es = MustGenerate(JwsAlg::kES256);
  const json ec = es->PublicJwk();

  SUBCASE("accepts minimal and decorated public JWKs") {
    CHECK(VerifyKey::FromJwk(kRfc7515A3Jwk).has_value());
    json with_ops = ec;
    with_ops["key_ops"] = {"verify"};
    CHECK(VerifyKey::FromJwk(with_ops).has_value());
  }

  struct Case {
    const char* name;
    json jwk;
  };
  json with_d = kRfc7515A3Jwk;
  with_d["d"] = kRfc7515A3D;
  json off_curve = kRfc7515A3Jwk;
  off_curve["y"] = "x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a1";
  json short_x = kRfc7515A3Jwk;
  short_x["x"] = B64(std::string(31, 'a'));
  json padded_x = kRfc7515A3Jwk;
  padded_x["x"] = kRfc7515A3Jwk["x"].get<std::string>() + "=";
  json wrong_alg = ec;
  wrong_alg["alg"] = "RS256";
  json none_alg = ec;
  none_alg["alg"] = "none";
  json hs_alg = ec;
  hs_alg["alg"] = "HS256";
  json numeric_alg = ec;
  numeric_alg["alg"] = 1;
  json enc_use = ec;
  enc_use["use"] = "enc";
  json sign_ops = ec;
  sign_ops["key_ops"] = {"sign"};
  json p384 = ec;
  p384["crv"] = "P-384";
  json okp_wrong_crv = {{"kty", "OKP"}, {"crv", "X25519"}, {"x", kRfc8037X}};
  json okp_ec_alg = {{"kty", "OKP"}, {"crv", "Ed25519"}, {"x", kRfc8037X}, {"alg", "ES256"}};
  json rsa_with_d = kRfc7638Jwk;
  rsa_with_d["d"] = "AQAB";
  json rsa_es_alg = kRfc7638Jwk;
  rsa_es_alg["alg"] = "ES256";
  json rsa_no_e = kRfc7638Jwk;
  rsa_no_e.erase("e");
  json rsa_even_e = kRfc7638Jwk;
  rsa_even_e["e"] = "AQAA";
  const Case cases[] = {
      {"private d (EC)", with_d},
      {"private d (RSA)", rsa_with_d},
      {"symmetric oct", json{{"kty", "oct"}, {"k", "c2VjcmV0"}}},
      {"point not on curve", off_curve},
      {"short coordinate", short_x},
      {"padded coordinate", padded_x},
      {"alg mismatch", wrong_alg},
      {"alg none", none_alg},
      {"alg HS256", hs_alg},
      {"alg not a string", numeric_alg},
      {"use enc", enc_use},
      {"key_ops without verify", sign_ops},
      {"unsupported curve", p384},
      {"OKP X25519", okp_wrong_crv},
      {"OKP with ES256 alg", okp_ec_alg},
      {"RSA with ES256 alg", rsa_es_alg},
      {"RSA without e", rsa_no_e},
      {"RSA with even e", rsa_even_e},
      {"no kty", json{{"crv", "P-256"}}},
      {"kty not a string", json{{"kty", 1}}},
      {"not an object", json::array({ec})},
      {"null", json(nullptr)},
  };
  for (const Case& c : cases) {
    CAPTURE(c.name);
    auto r = VerifyKey::FromJwk(c.jwk);
    REQUIRE_FALSE(r.has_value());
    CHECK(r.error().code == ErrorCode::kInvalidArgument);
  }
}

// Every JOSE attack from docs/concepts.md "JOSE and JWS" that applies to a verify primitive.
TEST_CASE("Jose: VerifyJws rejects JOSE attacks") {
  auto es = MustGenerate(JwsAlg::kES256);
  auto ed = MustGenerate(JwsAlg::kEd25519);
  auto rs = MustGenerate(JwsAlg::kRS256);
  auto es_pub = es->Public();
  auto ed_pub = ed->Public();
  auto rs_pub = rs->Public();
  const std::string claims = R"({"sub":"ci","exp":1900000000})";
  const std::string good = SignRaw(*es, R"({"alg":"ES256"})", claims);
  REQUIRE(VerifyJws(good, *es_pub).has_value());

  auto expect_reject = [](const Result<json>& r, std::string_view reason) {
    REQUIRE_FALSE(r.has_value());
    CHECK(r.error().code == ErrorCode::kUnauthenticated);
    CHECK(r.error().Reason() == reason);
  };

  SUBCASE("alg none") {
    const std::string unsigned_token = B64(R"({"alg":"none"})") + "." + B64(claims) + ".";
    for (const VerifyKey* key : {es_pub.get(), ed_pub.get(), rs_pub.get()}) {
      expect_reject(VerifyJws(unsigned_token, *key), "malformed_jws");
      // Even with some signature bytes attached.
      expect_reject(VerifyJws(unsigned_token + "AAAA", *key), "jws_alg_mismatch");
      for (std::string_view variant : {"None", "NONE", "nOnE"}) {
        const std::string t = B64(std::string(R"({"alg":")") + std::string(variant) + "\"}") + "." +
                              B64(claims) + ".AAAA";
        expect_reject(VerifyJws(t, *key), "jws_alg_mismatch");
      }
    }
  }

  SUBCASE("HS256 with the public key as the HMAC secret") {
    for (const SigningKey* key : {es.get(), ed.get(), rs.get()}) {
      auto verifier = key->Public();
      for (const std::string& secret : {PublicPemOf(*key), key->PublicJwk().dump()}) {
        const std::string input = B64(R"({"alg":"HS256"})") + "." + B64(claims);
        const std::string token = input + "." + B64(HmacSha256(secret, input));
        expect_reject(VerifyJws(token, *verifier), "jws_alg_mismatch");
      }
    }
  }

  SUBCASE("algorithm confusion between key types") {
    struct Case {
      const SigningKey* signer;
      const VerifyKey* verifier;
    };
    const Case cases[] = {
        {es.get(), rs_pub.get()}, {es.get(), ed_pub.get()}, {rs.get(), es_pub.get()},
        {rs.get(), ed_pub.get()}, {ed.get(), es_pub.get()}, {ed.get(), rs_pub.get()},
    };
    for (const Case& c : cases) {
      CAPTURE(JwsAlgName(c.signer->alg()));
      CAPTURE(JwsAlgName(c.verifier->alg()));
      auto token = c.signer->SignJwt(json::object(), json{{"sub", "ci"}});
      REQUIRE(token.has_value());
      expect_reject(VerifyJws(*token, *c.verifier), "jws_alg_mismatch");
      // Relabelled to the verifier's alg, the foreign signature still fails.
      const std::string relabelled = SignRaw(
          *c.signer,
          std::string(R"({"alg":")") + std::string(JwsAlgName(c.verifier->alg())) + "\"}", claims);
      expect_reject(VerifyJws(relabelled, *c.verifier), "invalid_signature");
    }
    // Other algorithm names, and alg that is not a string.
    for (std::string_view header :
         {R"({"alg":"ES384"})", R"({"alg":"PS256"})", R"({"alg":"es256"})", R"({"alg":"RS256"})"}) {
      expect_reject(VerifyJws(SignRaw(*es, header, claims), *es_pub), "jws_alg_mismatch");
    }
    expect_reject(VerifyJws(SignRaw(*es, R"({"alg":["ES256"]})", claims), *es_pub),
                  "malformed_jws");
    expect_reject(VerifyJws(SignRaw(*es, R"({"typ":"JWT"})", claims), *es_pub), "malformed_jws");
  }

  SUBCASE("header-embedded or referenced keys") {
    const std::string attacker_jwk = es->PublicJwk().dump();
    for (std::string header :
         {R"({"alg":"ES256","jwk":)" + attacker_jwk + "}",
          std::string(R"({"alg":"ES256","jku":"https://attacker.example/jwks.json"})"),
          std::string(R"({"alg":"ES256","x5u":"https://attacker.example/cert.pem"})"),
          std::string(R"({"alg":"ES256","x5c":["MIIB"]})")}) {
      CAPTURE(header);
      // Validly signed by the verifying key: only the header check can refuse it.
      expect_reject(VerifyJws(SignRaw(*es, header, claims), *es_pub), "jws_embedded_key");
    }
  }

  SUBCASE("crit") {
    for (std::string_view header :
         {R"({"alg":"ES256","crit":["exp"],"exp":1})", R"({"alg":"ES256","crit":[]})",
          R"({"alg":"ES256","crit":null})"}) {
      expect_reject(VerifyJws(SignRaw(*es, header, claims), *es_pub), "jws_crit_unsupported");
    }
    expect_reject(VerifyJws(SignRaw(*es, R"({"alg":"ES256","b64":false})", claims), *es_pub),
                  "jws_unsupported_header");
  }

  SUBCASE("wrong signature length") {
    auto decoded = DecodeJws(good);
    REQUIRE(decoded.has_value());
    const std::string& sig = decoded->signature;
    for (const std::string& bad :
         {sig.substr(0, 63), sig + "x", sig + sig, RawToDer(sig), std::string(1, '\0')}) {
      expect_reject(VerifyJws(decoded->signing_input + "." + B64(bad), *es_pub),
                    "invalid_signature");
    }
    auto ed_token = ed->SignJwt(json::object(), json{{"a", 1}});
    REQUIRE(ed_token.has_value());
    auto ed_decoded = DecodeJws(*ed_token);
    REQUIRE(ed_decoded.has_value());
    expect_reject(
        VerifyJws(ed_decoded->signing_input + "." + B64(ed_decoded->signature + "x"), *ed_pub),
        "invalid_signature");
    auto rs_token = rs->SignJwt(json::object(), json{{"a", 1}});
    REQUIRE(rs_token.has_value());
    auto rs_decoded = DecodeJws(*rs_token);
    REQUIRE(rs_decoded.has_value());
    REQUIRE(rs_decoded->signature.size() == 256);
    // A leading zero keeps the integer value but not the length.
    expect_reject(VerifyJws(rs_decoded->signing_input + "." +
                                B64(std::string(1, '\0') + rs_decoded->signature),
                            *rs_pub),
                  "invalid_signature");
    expect_reject(
        VerifyJws(rs_decoded->signing_input + "." + B64(rs_decoded->signature.substr(0, 255)),
                  *rs_pub),
        "invalid_signature");
  }

  SUBCASE("truncated token") {
    for (size_t n : {size_t{0}, size_t{1}, good.find('.'), good.find('.') + 1, good.rfind('.'),
                     good.rfind('.') + 1, good.size() - 1, good.size() - 2, good.size() - 4}) {
      CAPTURE(n);
      auto r = VerifyJws(std::string_view(good).substr(0, n), *es_pub);
      REQUIRE_FALSE(r.has_value());
      CHECK(r.error().code == ErrorCode::kUnauthenticated);
    }
  }

  SUBCASE("extra or missing segments") {
    for (const std::string& bad : {good + ".", good + ".AAAA", "." + good, good + "." + good,
                                   good.substr(0, good.rfind('.')), std::string("a.b.c.d.e"),
                                   std::string(".."), std::string("...")}) {
      CAPTURE(bad);
      expect_reject(VerifyJws(bad, *es_pub), "malformed_jws");
    }
  }

  SUBCASE("non-canonical base64url") {
    const size_t dot = good.rfind('.');
    const std::string sig_text = good.substr(dot + 1);
    REQUIRE(sig_text.size() == 86);  // 64 bytes: the last character carries 4 unused bits
    // Same decoded bytes, different (non-canonical) text.
    std::string non_canonical = good;
    const char last = non_canonical.back();
    const std::string alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    non_canonical.back() = alphabet[alphabet.find(last) ^ 0x01];
    expect_reject(VerifyJws(non_canonical, *es_pub), "malformed_jws");
    expect_reject(VerifyJws(good + "==", *es_pub), "malformed_jws");
    std::string plus = good;
    for (char& c : plus) {
      if (c == '-') {
        c = '+';
      } else if (c == '_') {
        c = '/';
      }
    }
    if (plus != good) {
      expect_reject(VerifyJws(plus, *es_pub), "malformed_jws");
    }
    expect_reject(VerifyJws(good.substr(0, 5) + " " + good.substr(5), *es_pub), "malformed_jws");
    expect_reject(VerifyJws(good + "\n", *es_pub), "malformed_jws");
    // Padded header segment.
    const std::string padded_header = B64(R"({"alg":"ES256"} )");  // 16 bytes -> needs "=="
    expect_reject(VerifyJws(padded_header + "==" + good.substr(good.find('.')), *es_pub),
                  "malformed_jws");
  }

  SUBCASE("duplicate keys") {
    for (std::string_view header :
         {R"({"alg":"ES256","alg":"ES256"})", R"({"alg":"none","alg":"ES256"})",
          R"({"alg":"ES256","kid":"a","kid":"b"})", R"({"alg":"ES256","\u0061lg":"ES256"})",
          R"({"alg":"ES256","x":{"y":1,"y":2}})"}) {
      CAPTURE(header);
      expect_reject(VerifyJws(SignRaw(*es, header, claims), *es_pub), "malformed_jws");
    }
    for (std::string_view payload : {R"({"sub":"a","sub":"b"})", R"({"aud":[{"x":1,"x":1}]})"}) {
      CAPTURE(payload);
      expect_reject(VerifyJws(SignRaw(*es, R"({"alg":"ES256"})", payload), *es_pub),
                    "malformed_jws");
    }
    // The same key in sibling objects is fine.
    CHECK(VerifyJws(SignRaw(*es, R"({"alg":"ES256"})", R"({"a":{"k":1},"b":{"k":2}})"), *es_pub)
              .has_value());
  }

  SUBCASE("malformed JSON segments") {
    for (std::string_view header :
         {"[]", R"("ES256")", "null", R"({"alg":"ES256"} x)", R"({"alg":"ES256",})",
          "{\"alg\":\"ES256\"/*c*/}", "\xEF\xBB\xBF{\"alg\":\"ES256\"}", "{\"alg\":\"ES\xff\"}"}) {
      CAPTURE(header);
      expect_reject(VerifyJws(SignRaw(*es, header, claims), *es_pub), "malformed_jws");
    }
    for (std::string_view payload : {"[]", "1", "plain text", ""}) {
      CAPTURE(payload);
      expect_reject(VerifyJws(SignRaw(*es, R"({"alg":"ES256"})", payload), *es_pub),
                    "malformed_jws");
    }
    std::string deep = std::string(100, '[') + std::string(100, ']');
    expect_reject(VerifyJws(SignRaw(*es, R"({"alg":"ES256"})", "{\"a\":" + deep + "}"), *es_pub),
                  "malformed_jws");
  }

  SUBCASE("oversized token") {
    const std::string big_claims = R"({"sub":")" + std::string(13000, 'a') + "\"}";
    const std::string big = SignRaw(*es, R"({"alg":"ES256"})", big_claims);
    REQUIRE(big.size() > 16384);
    expect_reject(VerifyJws(big, *es_pub), "jws_too_large");
    auto decoded = DecodeJws(big);
    REQUIRE_FALSE(decoded.has_value());
    CHECK(decoded.error().Reason() == "jws_too_large");
    CHECK(DecodeJws(big, big.size()).has_value());
    CHECK_FALSE(DecodeJws(good, good.size() - 1).has_value());
    CHECK(DecodeJws(good, good.size()).has_value());
    // A multi-megabyte input is refused quickly and without throwing.
    expect_reject(VerifyJws(std::string(8 << 20, 'A'), *es_pub), "jws_too_large");
  }

  SUBCASE("arbitrary bytes never throw") {
    const std::string seeds[] = {good, SignRaw(*rs, R"({"alg":"RS256"})", claims)};
    for (const std::string& seed : seeds) {
      for (size_t i = 0; i < seed.size(); i += 7) {
        std::string mutated = seed;
        mutated[i] = static_cast<char>(mutated[i] ^ 0x5a);
        CHECK_FALSE(VerifyJws(mutated, *es_pub).has_value());
        CHECK_FALSE(VerifyJws(mutated, *rs_pub).has_value());
      }
    }
    CHECK_FALSE(VerifyJws(std::string("\0.\0.\0", 5), *es_pub).has_value());
  }
}

TEST_CASE("Jose: DecodeJws returns parts without verifying") {
  auto key = MustGenerate(JwsAlg::kEd25519);
  auto token = key->SignJwt(json{{"typ", "JWT"}}, json{{"iss", "https://issuer"}});
  REQUIRE(token.has_value());
  auto decoded = DecodeJws(*token);
  REQUIRE(decoded.has_value());
  CHECK(decoded->payload["iss"] == "https://issuer");
  CHECK(decoded->signing_input == token->substr(0, token->rfind('.')));
  CHECK(decoded->signature.size() == 64);
  auto bad = DecodeJws("a.b");
  REQUIRE_FALSE(bad.has_value());
  CHECK(bad.error().code == ErrorCode::kInvalidArgument);
  CHECK(bad.error().Reason() == "malformed_jws");
}

TEST_CASE("Jose: keys are usable from many threads") {
  std::vector<std::unique_ptr<SigningKey>> keys;
  for (JwsAlg alg : kAllAlgs) {
    keys.push_back(MustGenerate(alg));
  }
  std::vector<std::unique_ptr<VerifyKey>> verifiers;
  for (const auto& key : keys) {
    verifiers.push_back(key->Public());
  }
  std::atomic<int> failures{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < 10; ++i) {
        for (size_t k = 0; k < keys.size(); ++k) {
          auto token = keys[k]->SignJwt(json::object(), json{{"t", t}, {"i", i}});
          if (!token || !VerifyJws(*token, *verifiers[k])) {
            ++failures;
          }
        }
      }
    });
  }
  for (auto& thread : threads) {
    thread.join();
  }
  CHECK(failures.load() == 0);
}

// Interop with an independent implementation: the openssl command line tool.
TEST_CASE("Jose: interop with the openssl CLI") {
  if (Run("openssl version") != 0) {
    MESSAGE("openssl CLI not available; skipping interop");
    return;
  }
  TempDir dir;
  const auto path = [&](const char* name) { return (dir.path / name).string(); };

  SUBCASE("ES256: our signature verifies with openssl dgst") {
    auto key = MustGenerate(JwsAlg::kES256);
    auto token = key->SignJwt(json::object(), json{{"sub", "interop"}});
    REQUIRE(token.has_value());
    auto decoded = DecodeJws(*token);
    REQUIRE(decoded.has_value());
    WriteFile(path("pub.pem"), PublicPemOf(*key));
    WriteFile(path("input"), decoded->signing_input);
    WriteFile(path("sig.der"), RawToDer(decoded->signature));
    const std::string verify = "openssl dgst -sha256 -verify " + path("pub.pem") + " -signature " +
                               path("sig.der") + " " + path("input");
    CHECK(Run(verify) == 0);
    WriteFile(path("input"), decoded->signing_input + "x");
    CHECK(Run(verify) != 0);  // the check above is meaningful
  }

  SUBCASE("ES256: openssl's signature verifies with us") {
    auto key = MustGenerate(JwsAlg::kES256);
    auto pem = key->ToPem();
    REQUIRE(pem.has_value());
    WriteFile(path("key.pem"), pem->Reveal());
    const std::string input = B64(R"({"alg":"ES256"})") + "." + B64(R"({"sub":"cli"})");
    WriteFile(path("input"), input);
    REQUIRE(Run("openssl dgst -sha256 -sign " + path("key.pem") + " -out " + path("sig.der") + " " +
                path("input")) == 0);
    const std::string raw = DerToRaw(ReadFile(path("sig.der")));
    CHECK(key->Public()->Verify(input, raw));
    auto payload = VerifyJws(input + "." + B64(raw), *key->Public());
    REQUIRE(payload.has_value());
    CHECK((*payload)["sub"] == "cli");
  }

  SUBCASE("RS256: both directions with openssl dgst") {
    auto key = MustGenerate(JwsAlg::kRS256);
    auto token = key->SignJwt(json::object(), json{{"iss", "Iv23example"}});
    REQUIRE(token.has_value());
    auto decoded = DecodeJws(*token);
    REQUIRE(decoded.has_value());
    WriteFile(path("pub.pem"), PublicPemOf(*key));
    WriteFile(path("input"), decoded->signing_input);
    WriteFile(path("sig"), decoded->signature);
    CHECK(Run("openssl dgst -sha256 -verify " + path("pub.pem") + " -signature " + path("sig") +
              " " + path("input")) == 0);

    auto pem = key->ToPem();
    REQUIRE(pem.has_value());
    WriteFile(path("key.pem"), pem->Reveal());
    REQUIRE(Run("openssl dgst -sha256 -sign " + path("key.pem") + " -out " + path("sig2") + " " +
                path("input")) == 0);
    // PKCS#1 v1.5 is deterministic: openssl's signature equals ours.
    CHECK(ReadFile(path("sig2")) == decoded->signature);
  }

  SUBCASE("Ed25519: both directions with openssl pkeyutl -rawin") {
    if (Run("openssl pkeyutl -help 2>&1 | grep -q -- -rawin") != 0) {
      MESSAGE("openssl pkeyutl has no -rawin; skipping the Ed25519 CLI check");
      return;
    }
    auto key = MustGenerate(JwsAlg::kEd25519);
    auto token = key->SignJwt(json::object(), json{{"sub", "interop"}});
    REQUIRE(token.has_value());
    auto decoded = DecodeJws(*token);
    REQUIRE(decoded.has_value());
    WriteFile(path("pub.pem"), PublicPemOf(*key));
    WriteFile(path("input"), decoded->signing_input);
    WriteFile(path("sig"), decoded->signature);
    const std::string verify = "openssl pkeyutl -verify -pubin -inkey " + path("pub.pem") +
                               " -rawin -in " + path("input") + " -sigfile " + path("sig");
    CHECK(Run(verify) == 0);
    WriteFile(path("input"), decoded->signing_input + "x");
    CHECK(Run(verify) != 0);

    auto pem = key->ToPem();
    REQUIRE(pem.has_value());
    WriteFile(path("key.pem"), pem->Reveal());
    WriteFile(path("input"), decoded->signing_input);
    REQUIRE(Run("openssl pkeyutl -sign -inkey " + path("key.pem") + " -rawin -in " + path("input") +
                " -out " + path("sig2")) == 0);
    // Ed25519 is deterministic.
    CHECK(ReadFile(path("sig2")) == decoded->signature);
  }
}

TEST_CASE("Jose: VerifyDecodedJws applies VerifyJws's checks to a decoded JWS") {
  // The OIDC verifier reads iss and kid first, then verifies the same
  // decoded parts; the checks must be the same as VerifyJws's.
  auto rsa = MustGenerate(JwsAlg::kRS256);
  auto ec = MustGenerate(JwsAlg::kES256);
  auto token = rsa->SignJwt(json{{"kid", "k"}}, json{{"sub", "x"}});
  REQUIRE(token.has_value());
  auto decoded = DecodeJws(*token);
  REQUIRE(decoded.has_value());
  CHECK(VerifyDecodedJws(*decoded, *rsa->Public()).has_value());
  auto wrong_key = VerifyDecodedJws(*decoded, *ec->Public());
  REQUIRE_FALSE(wrong_key.has_value());
  CHECK(wrong_key.error().Reason() == "jws_alg_mismatch");
  CHECK(wrong_key.error().code == ErrorCode::kUnauthenticated);
  DecodedJws tampered = *decoded;
  tampered.signing_input += "x";
  CHECK(VerifyDecodedJws(tampered, *rsa->Public()).error().Reason() == "invalid_signature");
  DecodedJws embedded = *decoded;
  embedded.header["jwk"] = ec->PublicJwk();
  CHECK(VerifyDecodedJws(embedded, *rsa->Public()).error().Reason() == "jws_embedded_key");
  DecodedJws no_alg = *decoded;
  no_alg.header.erase("alg");
  CHECK(VerifyDecodedJws(no_alg, *rsa->Public()).error().Reason() == "malformed_jws");
}

}  // namespace
}  // namespace jitbroker::crypto
