#include "broker/crypto/crypto.h"

#include <algorithm>
#include <array>
#include <climits>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <string>
#include <string_view>
#include <utility>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/rand.h>

#include "broker/common/text.h"
#include "jitbroker/error.h"
#include "jitbroker/result.h"
#include "jitbroker/secret.h"

namespace jitbroker::crypto {

namespace {

constexpr size_t kSealKeyBytes = 32;
constexpr size_t kGcmNonceBytes = 12;
constexpr size_t kGcmTagBytes = 16;
// EVP update calls take int lengths; feed large inputs in bounded chunks.
constexpr size_t kChunkBytes = size_t{1} << 20;

// Failures of primitives that have no error channel (a digest over memory
// cannot fail short of a broken library or out-of-memory) end the process
// rather than returning a wrong value.
[[noreturn]] void FatalCrypto(const char* what) {
  std::fprintf(stderr, "jitbroker: fatal crypto failure: %s\n", what);
  std::abort();
}

// Non-null pointer for possibly-empty views: several OpenSSL functions reject
// a null pointer even with a zero length.
const unsigned char* Bytes(std::string_view s) {
  static constexpr unsigned char kEmpty[1] = {0};
  return s.empty() ? kEmpty : reinterpret_cast<const unsigned char*>(s.data());
}

struct CipherCtxDeleter {
  void operator()(EVP_CIPHER_CTX* ctx) const { EVP_CIPHER_CTX_free(ctx); }
};
using CipherCtxPtr = std::unique_ptr<EVP_CIPHER_CTX, CipherCtxDeleter>;

constexpr char kHexDigits[] = "0123456789abcdef";

constexpr char kB64Std[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
constexpr char kB64Url[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

std::string EncodeBase64(std::string_view bytes, const char* alphabet, bool pad) {
  std::string out;
  out.reserve((bytes.size() + 2) / 3 * 4);
  size_t i = 0;
  const auto* p = reinterpret_cast<const unsigned char*>(bytes.data());
  for (; i + 3 <= bytes.size(); i += 3) {
    const uint32_t v = (uint32_t{p[i]} << 16) | (uint32_t{p[i + 1]} << 8) | p[i + 2];
    out.push_back(alphabet[(v >> 18) & 0x3f]);
    out.push_back(alphabet[(v >> 12) & 0x3f]);
    out.push_back(alphabet[(v >> 6) & 0x3f]);
    out.push_back(alphabet[v & 0x3f]);
  }
  const size_t rest = bytes.size() - i;
  if (rest == 1) {
    const uint32_t v = uint32_t{p[i]} << 16;
    out.push_back(alphabet[(v >> 18) & 0x3f]);
    out.push_back(alphabet[(v >> 12) & 0x3f]);
    if (pad) {
      out += "==";
    }
  } else if (rest == 2) {
    const uint32_t v = (uint32_t{p[i]} << 16) | (uint32_t{p[i + 1]} << 8);
    out.push_back(alphabet[(v >> 18) & 0x3f]);
    out.push_back(alphabet[(v >> 12) & 0x3f]);
    out.push_back(alphabet[(v >> 6) & 0x3f]);
    if (pad) {
      out.push_back('=');
    }
  }
  return out;
}

int Base64Value(char c, bool url) {
  if (c >= 'A' && c <= 'Z') {
    return c - 'A';
  }
  if (c >= 'a' && c <= 'z') {
    return c - 'a' + 26;
  }
  if (c >= '0' && c <= '9') {
    return c - '0' + 52;
  }
  if (url) {
    if (c == '-') {
      return 62;
    }
    if (c == '_') {
      return 63;
    }
  } else {
    if (c == '+') {
      return 62;
    }
    if (c == '/') {
      return 63;
    }
  }
  return -1;
}

// Decodes unpadded base64 data (padding already stripped by the caller) and
// insists on the canonical form: no stray characters, no impossible length,
// and zero bits in the unused low bits of the last character.
Result<std::string> DecodeBase64Body(std::string_view text, bool url) {
  const char* reason = url ? "invalid_base64url" : "invalid_base64";
  if (text.size() % 4 == 1) {
    return std::unexpected(InvalidArgument(reason, "invalid base64 length"));
  }
  std::string out;
  out.reserve(text.size() / 4 * 3 + 2);
  uint32_t acc = 0;
  int bits = 0;
  for (char c : text) {
    const int v = Base64Value(c, url);
    if (v < 0) {
      return std::unexpected(InvalidArgument(reason, "invalid base64 character"));
    }
    acc = (acc << 6) | static_cast<uint32_t>(v);
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      out.push_back(static_cast<char>((acc >> bits) & 0xff));
    }
  }
  // 2 or 4 leftover bits must be zero for the encoding to be canonical.
  if (bits > 0 && (acc & ((1u << bits) - 1)) != 0) {
    return std::unexpected(InvalidArgument(reason, "non-canonical base64 encoding"));
  }
  return out;
}

Error UnsealFailed() {
  Error e;
  e.code = ErrorCode::kInternal;
  e.reason = "unseal_failed";
  e.message = "sealed value could not be opened";
  return e;
}

Error SealInternal(const char* detail) { return Internal("sealing failed", detail); }

}  // namespace

std::string RandomBytes(size_t n) {
  std::string out(n, '\0');
  size_t done = 0;
  while (done < n) {
    const size_t chunk = std::min(n - done, kChunkBytes);
    if (RAND_bytes(reinterpret_cast<unsigned char*>(out.data() + done), static_cast<int>(chunk)) !=
        1) {
      FatalCrypto("RAND_bytes");
    }
    done += chunk;
  }
  return out;
}

namespace {

constexpr char kIdAlphabet[] = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

// Base62 characters that carry at least `random_bytes` bytes of entropy.
size_t IdChars(size_t random_bytes) {
  // Each base62 character carries log2(62) ~= 5.9542 bits; use a slightly
  // smaller divisor so the id never holds less entropy than asked for.
  return (random_bytes * 8 * 10000 + 59539) / 59540;
}

// Appends `chars` uniform base62 characters, taking random bytes from
// `next_byte` (rejection sampling: bytes >= 248 are discarded, so every
// character is uniform over the alphabet).
template <typename NextByte>
void AppendIdChars(std::string& out, size_t chars, NextByte&& next_byte) {
  for (size_t produced = 0; produced < chars;) {
    const unsigned char b = next_byte();
    if (b >= 248) {
      continue;
    }
    out.push_back(kIdAlphabet[b % 62]);
    ++produced;
  }
}

}  // namespace

std::string NewId(std::string_view prefix, size_t random_bytes) {
  const size_t chars = IdChars(random_bytes);
  std::string out(prefix);
  out.reserve(prefix.size() + chars);
  std::string pool;
  size_t at = 0;
  AppendIdChars(out, chars, [&] {
    if (at == pool.size()) {
      SecureWipe(pool.data(), pool.size());
      pool = RandomBytes(chars + 8);
      at = 0;
    }
    return static_cast<unsigned char>(pool[at++]);
  });
  SecureWipe(pool.data(), pool.size());
  return out;
}

std::string NewPublicId(std::string_view prefix, size_t random_bytes) {
  struct Buffer {
    unsigned char bytes[512];
    size_t at = sizeof(bytes);  // empty until first use
  };
  thread_local Buffer buf;
  const size_t chars = IdChars(random_bytes);
  std::string out(prefix);
  out.reserve(prefix.size() + chars);
  AppendIdChars(out, chars, [&] {
    if (buf.at == sizeof(buf.bytes)) {
      if (RAND_bytes(buf.bytes, static_cast<int>(sizeof(buf.bytes))) != 1) {
        FatalCrypto("RAND_bytes");
      }
      buf.at = 0;
    }
    return buf.bytes[buf.at++];
  });
  return out;
}

namespace {

// OpenSSL 3 looks an algorithm up in the provider store (with locks) on
// every use of an implicit EVP_sha256() or EVP_aes_256_gcm(); fetch each
// once instead. Fetched objects are immutable and shared across threads.
const EVP_MD* FetchedSha256() {
  static EVP_MD* const md = [] {
    EVP_MD* m = EVP_MD_fetch(nullptr, "SHA256", nullptr);
    if (m == nullptr) {
      FatalCrypto("EVP_MD_fetch(SHA256)");
    }
    return m;
  }();
  return md;
}

const EVP_CIPHER* FetchedAes256Gcm() {
  static EVP_CIPHER* const cipher = [] {
    EVP_CIPHER* c = EVP_CIPHER_fetch(nullptr, "AES-256-GCM", nullptr);
    if (c == nullptr) {
      FatalCrypto("EVP_CIPHER_fetch(AES-256-GCM)");
    }
    return c;
  }();
  return cipher;
}

}  // namespace

std::string Sha256(std::string_view data) {
  std::string out(32, '\0');
  unsigned int len = 0;
  if (EVP_Digest(Bytes(data), data.size(), reinterpret_cast<unsigned char*>(out.data()), &len,
                 FetchedSha256(), nullptr) != 1 ||
      len != 32) {
    FatalCrypto("EVP_Digest(sha256)");
  }
  return out;
}

std::string Sha256Hex(std::string_view data) { return HexEncode(Sha256(data)); }

std::string HmacSha256(std::string_view key, std::string_view data) {
  std::string out(32, '\0');
  size_t len = 0;
  if (EVP_Q_mac(nullptr, "HMAC", nullptr, "SHA256", nullptr, Bytes(key), key.size(), Bytes(data),
                data.size(), reinterpret_cast<unsigned char*>(out.data()), out.size(),
                &len) == nullptr ||
      len != 32) {
    FatalCrypto("EVP_Q_mac(HMAC-SHA256)");
  }
  return out;
}

std::string HexEncode(std::string_view bytes) {
  std::string out;
  out.reserve(bytes.size() * 2);
  for (unsigned char b : bytes) {
    out.push_back(kHexDigits[b >> 4]);
    out.push_back(kHexDigits[b & 0x0f]);
  }
  return out;
}

Result<std::string> HexDecode(std::string_view hex) {
  if (hex.size() % 2 != 0) {
    return std::unexpected(InvalidArgument("invalid_hex", "hex string has odd length"));
  }
  std::string out;
  out.reserve(hex.size() / 2);
  for (size_t i = 0; i < hex.size(); i += 2) {
    const int hi = text::HexDigitValue(hex[i]);
    const int lo = text::HexDigitValue(hex[i + 1]);
    if (hi < 0 || lo < 0) {
      return std::unexpected(InvalidArgument("invalid_hex", "invalid hex character"));
    }
    out.push_back(static_cast<char>((hi << 4) | lo));
  }
  return out;
}

std::string Base64UrlEncode(std::string_view bytes) {
  return EncodeBase64(bytes, kB64Url, /*pad=*/false);
}

Result<std::string> Base64UrlDecode(std::string_view text) {
  return DecodeBase64Body(text, /*url=*/true);
}

std::string Base64Encode(std::string_view bytes) {
  return EncodeBase64(bytes, kB64Std, /*pad=*/true);
}

Result<std::string> Base64Decode(std::string_view text) {
  if (text.size() % 4 != 0) {
    return std::unexpected(InvalidArgument("invalid_base64", "invalid base64 length"));
  }
  std::string_view body = text;
  size_t pad = 0;
  while (pad < 2 && !body.empty() && body.back() == '=') {
    body.remove_suffix(1);
    ++pad;
  }
  // After stripping, the body length must match the padding exactly
  // ("xx==" for one byte, "xxx=" for two); anything else is malformed.
  if ((pad == 1 && body.size() % 4 != 3) || (pad == 2 && body.size() % 4 != 2)) {
    return std::unexpected(InvalidArgument("invalid_base64", "invalid base64 padding"));
  }
  return DecodeBase64Body(body, /*url=*/false);
}

bool ConstantTimeEquals(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) {
    return false;
  }
  if (a.empty()) {
    return true;
  }
  return CRYPTO_memcmp(a.data(), b.data(), a.size()) == 0;
}

Result<std::string> Seal(const SecretValue& key, std::string_view plaintext, std::string_view aad) {
  if (key.size() != kSealKeyBytes) {
    return std::unexpected(InvalidArgument("invalid_seal_key", "seal key must be 32 bytes"));
  }
  if (aad.size() > static_cast<size_t>(INT_MAX)) {
    return std::unexpected(InvalidArgument("invalid_argument", "associated data too large"));
  }
  CipherCtxPtr ctx(EVP_CIPHER_CTX_new());
  if (!ctx) {
    return std::unexpected(SealInternal("EVP_CIPHER_CTX_new"));
  }
  const std::string nonce = RandomBytes(kGcmNonceBytes);
  std::string out;
  out.resize(kGcmNonceBytes + plaintext.size() + kGcmTagBytes);
  std::copy(nonce.begin(), nonce.end(), out.begin());

  if (EVP_EncryptInit_ex(ctx.get(), FetchedAes256Gcm(), nullptr, nullptr, nullptr) != 1 ||
      EVP_CIPHER_CTX_ctrl(ctx.get(), EVP_CTRL_GCM_SET_IVLEN, static_cast<int>(kGcmNonceBytes),
                          nullptr) != 1 ||
      EVP_EncryptInit_ex(ctx.get(), nullptr, nullptr, Bytes(key.Reveal()), Bytes(nonce)) != 1) {
    return std::unexpected(SealInternal("EVP_EncryptInit_ex"));
  }
  int len = 0;
  if (!aad.empty() &&
      EVP_EncryptUpdate(ctx.get(), nullptr, &len, Bytes(aad), static_cast<int>(aad.size())) != 1) {
    return std::unexpected(SealInternal("EVP_EncryptUpdate(aad)"));
  }
  auto* dst = reinterpret_cast<unsigned char*>(out.data()) + kGcmNonceBytes;
  size_t written = 0;
  for (size_t off = 0; off < plaintext.size(); off += kChunkBytes) {
    const size_t chunk = std::min(plaintext.size() - off, kChunkBytes);
    if (EVP_EncryptUpdate(ctx.get(), dst + written, &len, Bytes(plaintext.substr(off, chunk)),
                          static_cast<int>(chunk)) != 1) {
      return std::unexpected(SealInternal("EVP_EncryptUpdate"));
    }
    written += static_cast<size_t>(len);
  }
  if (EVP_EncryptFinal_ex(ctx.get(), dst + written, &len) != 1) {
    return std::unexpected(SealInternal("EVP_EncryptFinal_ex"));
  }
  written += static_cast<size_t>(len);
  if (written != plaintext.size()) {
    return std::unexpected(SealInternal("unexpected ciphertext length"));
  }
  if (EVP_CIPHER_CTX_ctrl(ctx.get(), EVP_CTRL_GCM_GET_TAG, static_cast<int>(kGcmTagBytes),
                          dst + written) != 1) {
    return std::unexpected(SealInternal("EVP_CTRL_GCM_GET_TAG"));
  }
  return out;
}

Result<SecretValue> Open(const SecretValue& key, std::string_view sealed, std::string_view aad) {
  if (key.size() != kSealKeyBytes) {
    return std::unexpected(InvalidArgument("invalid_seal_key", "seal key must be 32 bytes"));
  }
  if (sealed.size() < kGcmNonceBytes + kGcmTagBytes || aad.size() > static_cast<size_t>(INT_MAX)) {
    return std::unexpected(UnsealFailed());
  }
  const std::string_view nonce = sealed.substr(0, kGcmNonceBytes);
  const std::string_view ciphertext =
      sealed.substr(kGcmNonceBytes, sealed.size() - kGcmNonceBytes - kGcmTagBytes);
  // EVP_CTRL_GCM_SET_TAG takes a non-const pointer; copy the tag.
  std::array<unsigned char, kGcmTagBytes> tag{};
  std::copy(sealed.end() - kGcmTagBytes, sealed.end(), tag.begin());

  CipherCtxPtr ctx(EVP_CIPHER_CTX_new());
  if (!ctx) {
    return std::unexpected(Internal("unsealing failed", "EVP_CIPHER_CTX_new"));
  }
  if (EVP_DecryptInit_ex(ctx.get(), FetchedAes256Gcm(), nullptr, nullptr, nullptr) != 1 ||
      EVP_CIPHER_CTX_ctrl(ctx.get(), EVP_CTRL_GCM_SET_IVLEN, static_cast<int>(kGcmNonceBytes),
                          nullptr) != 1 ||
      EVP_DecryptInit_ex(ctx.get(), nullptr, nullptr, Bytes(key.Reveal()), Bytes(nonce)) != 1) {
    return std::unexpected(Internal("unsealing failed", "EVP_DecryptInit_ex"));
  }
  int len = 0;
  if (!aad.empty() &&
      EVP_DecryptUpdate(ctx.get(), nullptr, &len, Bytes(aad), static_cast<int>(aad.size())) != 1) {
    return std::unexpected(UnsealFailed());
  }
  // Decrypt straight into the buffer the SecretValue will own (sized once so
  // no reallocation leaves plaintext copies behind); wiped on any failure.
  // Writing through Reveal() is well-defined: `plain` is not a const object.
  SecretValue plain(std::string(ciphertext.size(), '\0'));
  auto* dst = reinterpret_cast<unsigned char*>(const_cast<char*>(plain.Reveal().data()));
  size_t written = 0;
  for (size_t off = 0; off < ciphertext.size(); off += kChunkBytes) {
    const size_t chunk = std::min(ciphertext.size() - off, kChunkBytes);
    if (EVP_DecryptUpdate(ctx.get(), dst + written, &len, Bytes(ciphertext.substr(off, chunk)),
                          static_cast<int>(chunk)) != 1) {
      return std::unexpected(UnsealFailed());
    }
    written += static_cast<size_t>(len);
  }
  if (EVP_CIPHER_CTX_ctrl(ctx.get(), EVP_CTRL_GCM_SET_TAG, static_cast<int>(kGcmTagBytes),
                          tag.data()) != 1) {
    return std::unexpected(UnsealFailed());
  }
  if (EVP_DecryptFinal_ex(ctx.get(), dst + written, &len) != 1) {
    return std::unexpected(UnsealFailed());
  }
  written += static_cast<size_t>(len);
  if (written != ciphertext.size()) {
    return std::unexpected(UnsealFailed());
  }
  return plain;
}

}  // namespace jitbroker::crypto
