// Crypto primitives on OpenSSL 3: randomness, hashing, encodings, constant-time
// comparison and AEAD sealing. The only place (with jose.h) that includes
// <openssl/…>.
//
// Thread-safety: all functions are thread-safe.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "jitbroker/result.h"
#include "jitbroker/secret.h"

namespace jitbroker::crypto {

// Cryptographically secure random bytes (RAND_bytes). Aborts the process if
// the CSPRNG fails: continuing without randomness is never safe.
std::string RandomBytes(size_t n);
// Prefix + base62-ish (alphanumeric) id with `random_bytes` bytes of entropy,
// e.g. NewId("ses_", 16) -> "ses_3kTz…".
std::string NewId(std::string_view prefix, size_t random_bytes = 16);
// The same for identifiers that are not secrets (grant, event, request ids):
// drawn from a small per-thread buffer of RAND_bytes output refilled in
// blocks, which spares the hot path one RAND_bytes call (a DRBG lock and a
// getpid() system call) per id. Never use it for tokens or keys: their bytes
// must not sit in a buffer before use. jitbroker never forks, so two
// processes cannot share a buffer.
std::string NewPublicId(std::string_view prefix, size_t random_bytes = 16);

std::string Sha256(std::string_view data);                            // raw 32 bytes
std::string Sha256Hex(std::string_view data);                         // lower-case hex
std::string HmacSha256(std::string_view key, std::string_view data);  // raw

std::string HexEncode(std::string_view bytes);  // lower-case
[[nodiscard]] Result<std::string> HexDecode(std::string_view hex);
std::string Base64UrlEncode(std::string_view bytes);  // no padding
// Strict: rejects padding, '+', '/', whitespace and non-canonical trailing bits.
[[nodiscard]] Result<std::string> Base64UrlDecode(std::string_view text);
std::string Base64Encode(std::string_view bytes);                       // standard, padded
[[nodiscard]] Result<std::string> Base64Decode(std::string_view text);  // standard, padded

// Constant-time equality (CRYPTO_memcmp); false when sizes differ.
bool ConstantTimeEquals(std::string_view a, std::string_view b);

// AES-256-GCM sealing with a 32-byte key. Output: nonce(12) || ciphertext || tag(16).
// `aad` (e.g. the grant id) is bound as associated data.
[[nodiscard]] Result<std::string> Seal(const SecretValue& key, std::string_view plaintext,
                                       std::string_view aad);
[[nodiscard]] Result<SecretValue> Open(const SecretValue& key, std::string_view sealed,
                                       std::string_view aad);

}  // namespace jitbroker::crypto
