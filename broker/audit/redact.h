// Redaction of client-provided data before it is stored, audited or shown to
// approvers (docs/concepts.md "Audit record": secret values never appear in the audit trail;
// docs/api.md "Redaction"). Two rules, applied together:
//
//   - by key: a value under a secret-like key ("password", "api_token",
//     "pw", "auth", "sig", …) becomes "[redacted]" whatever it holds;
//   - by value: a string that looks like a credential becomes
//     "[redacted:KIND]" wherever it appears (as a whole value, or as a span
//     of free text such as a justification), KIND naming what was found:
//       github_token       ghp_/gho_/ghu_/ghs_/ghr_ tokens, github_pat_…
//       gitlab_token       glpat-…
//       slack_token        xoxa-/xoxb-/xoxp-/xoxr-/xoxs-…
//       aws_access_key_id  AKIA/ASIA/ABIA/ACCA + 16 upper-case letters or digits
//       jwt                three base64url segments, the first a JSON header ("eyJ…")
//       pem                a "-----BEGIN …-----" block up to its END line
//       authorization      "Bearer X" / "Basic X" (the scheme and its credential)
//       url_credentials    the user:password@ of a URL
//       secret_assignment  the value of "KEY=VALUE"/"KEY: VALUE" in free text
//                          when KEY is secret-like
//       high_entropy       a run of at least kHighEntropyMinLength
//                          characters from the base64/base64url alphabet,
//                          with letters and digits, not hex, carrying at
//                          least kHighEntropyMinBitsPerChar bits of Shannon
//                          entropy per character and changing character
//                          class often (kHighEntropyMinClassChangeRatio)
//
// The replacement never keeps a prefix or suffix of the secret. Redaction is
// for what is stored and shown; request digests and minting use the request
// as the client sent it.
//
// Thread-safety: pure functions.
#pragma once

#include <cstddef>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>

namespace jitbroker::audit {

inline constexpr size_t kHighEntropyMinLength = 20;
inline constexpr double kHighEntropyMinBitsPerChar = 3.5;
// Share of adjacent alphanumeric pairs whose character classes (lower,
// upper, digit) differ, not counting upper-then-lower (a CamelCase word
// start): about 0.45 for random text, under 0.2 for identifiers.
inline constexpr double kHighEntropyMinClassChangeRatio = 0.25;

// True for keys that name a secret: split into lower-case words at '_', '-',
// '.', ' ' and camelCase boundaries; a word equal to a short secret word
// (key, pat, pw, pwd, pass, auth, sig, otp, jwt, bearer, …) or the joined
// words containing a long one (password, secret, token, credential,
// authorization, cookie, signature, …). "author", "keyword", "signal" and
// "passenger" are not secret-like.
bool IsSecretLikeKey(std::string_view key);

// The KIND of credential `value` is as a whole (see above), or "" if none.
std::string_view SecretValueKind(std::string_view value);

// `text` with every credential-looking span replaced by "[redacted:KIND]".
// Text without such spans is returned unchanged.
std::string RedactText(std::string_view text);

// Deep copy of `params`: values under secret-like keys become "[redacted]",
// every other string goes through RedactText, and floats become their text
// (the audit chain's canonical form holds no floats).
nlohmann::json RedactParameters(const nlohmann::json& params);

// Shannon entropy of the bytes of `s` in bits per character (0 for "").
double ShannonEntropyBitsPerChar(std::string_view s);

}  // namespace jitbroker::audit
