// Redaction by key and by value (broker/audit/redact.h): what reaches the
// audit trail, approvers and session views (issue #10, finding 9).
#include "broker/audit/redact.h"

#include <doctest/doctest.h>

#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>

namespace jitbroker {
namespace {

constexpr std::string_view kAlnum =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
constexpr std::string_view kBase64 =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

// Deterministic random-looking text (tests hold no real credentials: every
// token below is made up at run time).
std::string Random(std::string_view alphabet, size_t n, uint64_t seed) {
  std::string out;
  uint64_t x = seed * 6364136223846793005ULL + 1442695040888963407ULL;
  for (size_t i = 0; i < n; ++i) {
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    out += alphabet[x % alphabet.size()];
  }
  return out;
}

std::string GithubToken(std::string_view prefix, uint64_t seed) {
  return std::string(prefix) + Random(kAlnum, 36, seed);
}

std::string Jwt(uint64_t seed) {
  return "eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJ4In0." + Random(kAlnum, 86, seed);
}

std::string Pem(uint64_t seed) {
  return "-----BEGIN PRIVATE KEY-----\n" + Random(kBase64, 64, seed) + "\n" +
         Random(kBase64, 40, seed + 1) + "\n-----END PRIVATE KEY-----";
}

TEST_CASE("Redaction: secret-like keys, and harmless look-alikes") {
  struct Case {
    const char* key;
    bool secret;
  } keys[] = {
      // Long words match inside the key, short ones only as whole words.
      {"password", true},
      {"api_token", true},
      {"accessKey", true},
      {"ssh_key", true},
      {"Authorization", true},
      {"client_secret", true},
      {"privateKey", true},
      {"session_token", true},
      {"pw", true},
      {"db_pw", true},
      {"pwd", true},
      {"pass", true},
      {"smtp-pass", true},
      {"auth", true},
      {"x-auth", true},
      {"authToken", true},
      {"auth_header", true},
      {"sig", true},
      {"X-Amz-Sig", true},
      {"signature", true},
      {"otp", true},
      {"jwt", true},
      {"bearer", true},
      {"passphrase", true},
      {"cookie", true},
      {"sas", true},
      {"github_pat", true},
      {"query", false},
      {"keyword", false},
      {"monkey", false},
      {"branch", false},
      {"pull", false},
      {"command", false},
      {"author", false},
      {"authors", false},
      {"author_email", false},
      {"signal", false},
      {"signed_off_by", false},
      {"design", false},
      {"passenger", false},
      {"bypass", false},
      {"compass", false},
      {"path", false},
      {"spw", false},
      {"message", false},
  };
  for (const auto& k : keys) {
    CAPTURE(k.key);
    CHECK(audit::IsSecretLikeKey(k.key) == k.secret);
  }
}

TEST_CASE("Redaction: credential-shaped values are named, never kept in part") {
  struct Case {
    std::string value;
    std::string_view kind;
  };
  const Case cases[] = {
      {GithubToken("ghp_", 1), "github_token"},
      {GithubToken("gho_", 2), "github_token"},
      {GithubToken("ghu_", 3), "github_token"},
      {GithubToken("ghs_", 4), "github_token"},
      {GithubToken("ghr_", 5), "github_token"},
      {"github_pat_" + Random(kAlnum, 22, 6) + "_" + Random(kAlnum, 59, 7), "github_token"},
      {"glpat-" + Random(kAlnum, 20, 8), "gitlab_token"},
      {"xoxb-" + Random(kAlnum, 24, 9), "slack_token"},
      {"AKIA" + Random("ABCDEFGHIJKLMNOPQRSTUVWXYZ234567", 16, 10), "aws_access_key_id"},
      {"ASIA" + Random("ABCDEFGHIJKLMNOPQRSTUVWXYZ234567", 16, 11), "aws_access_key_id"},
      {Jwt(12), "jwt"},
      {Pem(13), "pem"},
      {"Bearer " + Random(kAlnum, 40, 14), "authorization"},
      {"bearer " + Random(kAlnum, 40, 15), "authorization"},
      {"Basic dXNlcjpodW50ZXIy", "authorization"},  // user:hunter2
      {Random(kBase64, 40, 16), "high_entropy"},    // e.g. an AWS secret access key
      {Random(kAlnum, 32, 17), "high_entropy"},
  };
  for (const Case& c : cases) {
    CAPTURE(c.value);
    CHECK(audit::SecretValueKind(c.value) == c.kind);
    const std::string redacted = audit::RedactText(c.value);
    CHECK(redacted == "[redacted:" + std::string(c.kind) + "]");
    // Not even a prefix survives.
    const nlohmann::json params = {{"value", c.value}, {"list", {c.value}}};
    const nlohmann::json r = audit::RedactParameters(params);
    CHECK(r["value"] == redacted);
    CHECK(r["list"][0] == redacted);
    CHECK(r.dump().find(c.value.substr(c.value.size() - 12)) == std::string::npos);
  }
}

TEST_CASE("Redaction: everyday values stay readable") {
  const char* keep[] = {
      "main",
      "fix/checkout-timeout",
      "refs/heads/fix/Checkout-Timeout-v2",
      "my-Very-Long-Branch-Name-For-Issue-1234",
      "github://acme/payment-service/pull/842",
      "https://github.com/acme/payment-service/pull/842",
      "arn:aws:iam::123456789012:role/DeployRole2",
      "CheckoutTimeoutHandlerFactory2",
      "TestCheckoutTimeoutRetriesOnce2",
      "src/components/CheckoutTimeout2.tsx",
      "9fceb02d0ae598e95dc970b74767f19372d61af8",                          // a commit SHA
      "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",  // SHA-256
      "550e8400-e29b-41d4-a716-446655440000",                              // a UUID
      "2026-11-22T10:30:00Z",
      "rm -rf build/ && make test",
      "Basic configuration of the bearer tokens",
      "The author signed off; pass the PR to review",
      "ghp_",      // a prefix alone is no token
      "AKIA1234",  // too short for a key id
  };
  for (const char* v : keep) {
    CAPTURE(v);
    CHECK(audit::SecretValueKind(v).empty());
    CHECK(audit::RedactText(v) == v);
  }
}

TEST_CASE("Redaction: secrets inside free text are cut out, the prose stays") {
  const std::string gh = GithubToken("ghp_", 21);
  CHECK(audit::RedactText("push with " + gh + " please") ==
        "push with [redacted:github_token] please");
  CHECK(audit::RedactText("token=\"" + gh + "\".") == "token=\"[redacted:github_token]\".");
  CHECK(audit::RedactText("token='hunter2'.") == "token='[redacted:secret_assignment]'.");
  CHECK(audit::RedactText("use pw=hunter2 for the db") ==
        "use pw=[redacted:secret_assignment] for the db");
  CHECK(audit::RedactText("password: hunter2") == "password: [redacted:secret_assignment]");
  CHECK(audit::RedactText("Authorization: Bearer abc") ==
        "Authorization: [redacted:secret_assignment]");
  CHECK(audit::RedactText("clone https://deploy:hunter2@git.example/r.git now") ==
        "clone https://[redacted:url_credentials]@git.example/r.git now");
  CHECK(audit::RedactText("see https://x.example/f?sig=abc123&id=7") ==
        "see https://x.example/f?sig=[redacted:secret_assignment]&id=7");
  CHECK(audit::RedactText("key follows\n" + Pem(22) + "\nthanks") ==
        "key follows\n[redacted:pem]\nthanks");
  CHECK(audit::RedactText("cut: -----BEGIN PRIVATE KEY-----\nabc") == "cut: [redacted:pem]");
  CHECK(audit::RedactText("jwt " + Jwt(23) + ", and more") == "jwt [redacted:jwt], and more");
}

TEST_CASE("Redaction: parameters by key, by value, at any depth") {
  const std::string gh = GithubToken("ghs_", 31);
  nlohmann::json p = {{"query", "q"},
                      {"nested", {{"password", "p"}, {"list", {{{"token", "t"}, {"ok", 1}}}}}},
                      {"ratio", 0.5},
                      {"pw", "hunter2"},
                      {"auth", "x"},
                      {"sig", "y"},
                      {"author", "octocat"},
                      {"note", gh},
                      {"count", 3},
                      {"flag", true}};
  const nlohmann::json r = audit::RedactParameters(p);
  CHECK(r["query"] == "q");
  CHECK(r["nested"]["password"] == "[redacted]");
  CHECK(r["nested"]["list"][0]["token"] == "[redacted]");
  CHECK(r["nested"]["list"][0]["ok"] == 1);
  CHECK(r["ratio"].is_string());  // no floats in the chain
  CHECK(r["pw"] == "[redacted]");
  CHECK(r["auth"] == "[redacted]");
  CHECK(r["sig"] == "[redacted]");
  CHECK(r["author"] == "octocat");
  CHECK(r["note"] == "[redacted:github_token]");
  CHECK(r["count"] == 3);
  CHECK(r["flag"] == true);
  CHECK(r.dump().find("hunter2") == std::string::npos);
}

TEST_CASE("Redaction: the entropy threshold") {
  CHECK(audit::ShannonEntropyBitsPerChar("") == 0.0);
  CHECK(audit::ShannonEntropyBitsPerChar("aaaa") == 0.0);
  CHECK(audit::ShannonEntropyBitsPerChar("abcd") == doctest::Approx(2.0));
  CHECK(audit::ShannonEntropyBitsPerChar("0123456789abcdef") == doctest::Approx(4.0));

  // Exactly at the threshold: 8 characters twice and 4 four times in 32
  // is 8/16*4 + 4/8*3 = 3.5 bits per character.
  const std::string at = "aB3dE5gH7jK97jK9aB3dE5gH7jK97jK9";
  REQUIRE(audit::ShannonEntropyBitsPerChar(at) == audit::kHighEntropyMinBitsPerChar);
  CHECK(audit::SecretValueKind(at) == "high_entropy");
  // One character moved from B to a: 3.48 bits, below.
  const std::string below = "aa3dE5gH7jK97jK9aB3dE5gH7jK97jK9";
  REQUIRE(audit::ShannonEntropyBitsPerChar(below) < audit::kHighEntropyMinBitsPerChar);
  CHECK(audit::SecretValueKind(below).empty());
  // Long, mixed and alternating, but repetitive: far below.
  const std::string low = "aB1aB1aB1aB1aB1aB1aB1aB1aB1aB1";  // log2(3) bits per char
  CHECK(audit::SecretValueKind(low).empty());
  // The length threshold: the same text one character short is kept.
  const std::string at_min = at.substr(0, audit::kHighEntropyMinLength);
  REQUIRE(audit::ShannonEntropyBitsPerChar(at_min) >= audit::kHighEntropyMinBitsPerChar);
  CHECK(audit::SecretValueKind(at_min) == "high_entropy");
  CHECK(audit::SecretValueKind(at_min.substr(1)).empty());

  // Random keys are caught at the rate the thresholds promise (docs/api.md).
  int caught = 0;
  for (uint64_t seed = 1000; seed < 1200; ++seed) {
    caught += audit::SecretValueKind(Random(kBase64, 32, seed)) == "high_entropy" ? 1 : 0;
  }
  CHECK(caught >= 190);
}

}  // namespace
}  // namespace jitbroker
