#include "broker/crypto/crypto.h"

#include <array>
#include <cctype>
#include <set>
#include <string>
#include <string_view>
#include <thread>

#include <doctest/doctest.h>

#include "jitbroker/error.h"
#include "jitbroker/secret.h"

namespace jitbroker::crypto {
namespace {

std::string Unhex(std::string_view hex) {
  auto r = HexDecode(hex);
  REQUIRE(r.has_value());
  return *r;
}

TEST_CASE("Crypto: SHA-256 known answers") {
  CHECK(Sha256Hex("abc") == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  CHECK(Sha256Hex("") == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  CHECK(Sha256Hex("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq") ==
        "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
  CHECK(Sha256("abc").size() == 32);
  CHECK(HexEncode(Sha256("abc")) == Sha256Hex("abc"));
}

TEST_CASE("Crypto: HMAC-SHA256 known answers (RFC 4231)") {
  SUBCASE("test case 1") {
    CHECK(HexEncode(HmacSha256(std::string(20, '\x0b'), "Hi There")) ==
          "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7");
  }
  SUBCASE("test case 2") {
    CHECK(HexEncode(HmacSha256("Jefe", "what do ya want for nothing?")) ==
          "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843");
  }
  SUBCASE("test case 6: key longer than the block size") {
    CHECK(HexEncode(HmacSha256(std::string(131, '\xaa'),
                               "Test Using Larger Than Block-Size Key - Hash Key First")) ==
          "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54");
  }
  SUBCASE("empty key and message") {
    CHECK(HexEncode(HmacSha256("", "")) ==
          "b613679a0814d9ec772f95d778c35fc5ff1697c493715653c6c712144292c5ad");
  }
}

TEST_CASE("Crypto: hex encode and decode") {
  CHECK(HexEncode("") == "");
  CHECK(HexEncode(std::string("\x00\x01\xab\xff", 4)) == "0001abff");
  CHECK(Unhex("0001ABff") == std::string("\x00\x01\xab\xff", 4));
  CHECK(Unhex("") == "");
  for (std::string_view bad : {"0", "abc", "zz", "0g", " 00", "00 "}) {
    CAPTURE(bad);
    auto r = HexDecode(bad);
    REQUIRE_FALSE(r.has_value());
    CHECK(r.error().code == ErrorCode::kInvalidArgument);
    CHECK(r.error().Reason() == "invalid_hex");
  }
}

TEST_CASE("Crypto: base64url encode and decode") {
  struct Case {
    std::string bytes;
    std::string_view text;
  };
  const Case cases[] = {
      {"", ""},
      {"f", "Zg"},
      {"fo", "Zm8"},
      {"foo", "Zm9v"},
      {"foob", "Zm9vYg"},
      {std::string("\xfb\xff", 2), "-_8"},
      {std::string("\xff\xff\xff", 3), "____"},
      {std::string("\x00", 1), "AA"},
  };
  for (const Case& c : cases) {
    CAPTURE(c.text);
    CHECK(Base64UrlEncode(c.bytes) == c.text);
    auto decoded = Base64UrlDecode(c.text);
    REQUIRE(decoded.has_value());
    CHECK(*decoded == c.bytes);
  }

  SUBCASE("rejects non-canonical or malformed input") {
    for (std::string_view bad : {
             "Zg==",    // padding
             "Zm8=",    // padding
             "Z",       // impossible length
             "Zm9vY",   // impossible length
             "Zh",      // non-zero trailing bits
             "Zm9",     // non-zero trailing bits
             "+/8",     // standard alphabet
             "Zm 9v",   // whitespace
             "Zm9v\n",  // trailing newline
             "Zm9v.",   // separator
             "Zm9\xc3\xa9",
         }) {
      CAPTURE(bad);
      auto r = Base64UrlDecode(bad);
      REQUIRE_FALSE(r.has_value());
      CHECK(r.error().code == ErrorCode::kInvalidArgument);
      CHECK(r.error().Reason() == "invalid_base64url");
    }
  }

  SUBCASE("roundtrip over every length up to 64") {
    for (size_t n = 0; n <= 64; ++n) {
      const std::string bytes = RandomBytes(n);
      const std::string text = Base64UrlEncode(bytes);
      CHECK(text.find('=') == std::string::npos);
      auto back = Base64UrlDecode(text);
      REQUIRE(back.has_value());
      CHECK(*back == bytes);
    }
  }
}

TEST_CASE("Crypto: standard base64 encode and decode") {
  CHECK(Base64Encode("") == "");
  CHECK(Base64Encode("f") == "Zg==");
  CHECK(Base64Encode("fo") == "Zm8=");
  CHECK(Base64Encode("foo") == "Zm9v");
  CHECK(Base64Encode(std::string("\xfb\xff", 2)) == "+/8=");
  for (auto [text, bytes] : {std::pair<std::string_view, std::string_view>{"", ""},
                             {"Zg==", "f"},
                             {"Zm8=", "fo"},
                             {"Zm9v", "foo"},
                             {"Zm9vYmFy", "foobar"},
                             {"+/8=", "\xfb\xff"}}) {
    CAPTURE(text);
    auto r = Base64Decode(text);
    REQUIRE(r.has_value());
    CHECK(*r == bytes);
  }
  for (std::string_view bad :
       {"Zg", "Zg=", "Z===", "====", "Zm9=", "Zh==", "-_8=", "Zm9v\n", "Zg==Zg==", "=Zm9"}) {
    CAPTURE(bad);
    auto r = Base64Decode(bad);
    REQUIRE_FALSE(r.has_value());
    CHECK(r.error().Reason() == "invalid_base64");
  }
}

TEST_CASE("Crypto: constant-time equality") {
  CHECK(ConstantTimeEquals("", ""));
  CHECK(ConstantTimeEquals("abc", "abc"));
  CHECK_FALSE(ConstantTimeEquals("abc", "abd"));
  CHECK_FALSE(ConstantTimeEquals("abc", "abcd"));
  CHECK_FALSE(ConstantTimeEquals("", "a"));
}

TEST_CASE("Crypto: random bytes and ids") {
  CHECK(RandomBytes(0).empty());
  CHECK(RandomBytes(33).size() == 33);
  CHECK(RandomBytes(32) != RandomBytes(32));

  std::set<std::string> seen;
  for (int i = 0; i < 200; ++i) {
    const std::string id = NewId("ses_");
    REQUIRE(id.rfind("ses_", 0) == 0);
    // 16 bytes = 128 bits needs at least 22 base62 characters.
    CHECK(id.size() == 4 + 22);
    for (char c : id.substr(4)) {
      CHECK(std::isalnum(static_cast<unsigned char>(c)));
    }
    seen.insert(id);
  }
  CHECK(seen.size() == 200);
  CHECK(NewId("x", 32).size() == 1 + 43);
  CHECK(NewId("", 0).empty());
}

TEST_CASE("Crypto: public ids from the per-thread buffer") {
  // Same shape and entropy as NewId; the buffer refills every 512 bytes, so
  // 2,000 ids cross many refills, on two threads at once.
  auto draw = [](std::set<std::string>& out) {
    for (int i = 0; i < 1000; ++i) {
      out.insert(NewPublicId("grt_"));
    }
  };
  std::set<std::string> a, b;
  std::thread other([&] { draw(b); });
  draw(a);
  other.join();
  CHECK(a.size() == 1000);
  CHECK(b.size() == 1000);
  std::array<int, 62> counts{};
  for (const std::set<std::string>* ids : {&a, &b}) {
    for (const std::string& id : *ids) {
      REQUIRE(id.rfind("grt_", 0) == 0);
      REQUIRE(id.size() == 4 + 22);
      CHECK(b.count(id) + a.count(id) == 1);  // no id on both threads
      for (char c : id.substr(4)) {
        REQUIRE(std::isalnum(static_cast<unsigned char>(c)));
        const int k = c <= '9' ? c - '0' : (c <= 'Z' ? 10 + c - 'A' : 36 + c - 'a');
        ++counts[static_cast<size_t>(k)];
      }
    }
  }
  // 44,000 characters over 62 symbols: ~710 each; a stuck or biased
  // generator (say, a buffer never refilled) lands far outside this band.
  for (int c : counts) {
    CHECK(c > 500);
    CHECK(c < 950);
  }
  CHECK(NewPublicId("evt_", 12).size() == 4 + 17);
  CHECK(NewPublicId("", 0).empty());
}

TEST_CASE("Crypto: SecureWipe zeroes memory") {
  std::string buf = "super secret";
  SecureWipe(buf.data(), buf.size());
  CHECK(buf == std::string(12, '\0'));
  SecureWipe(nullptr, 0);  // no-op
}

TEST_CASE("Crypto: AES-256-GCM seal and open") {
  const SecretValue key(RandomBytes(32));

  SUBCASE("roundtrip") {
    for (std::string_view plaintext :
         {std::string_view(""), std::string_view("ghs_token"), std::string_view("x\0y", 3)}) {
      auto sealed = Seal(key, plaintext, "grant-1");
      REQUIRE(sealed.has_value());
      CHECK(sealed->size() == 12 + plaintext.size() + 16);
      auto opened = Open(key, *sealed, "grant-1");
      REQUIRE(opened.has_value());
      CHECK(opened->Reveal() == plaintext);
    }
  }

  SUBCASE("fresh nonce per seal") {
    auto a = Seal(key, "same", "aad");
    auto b = Seal(key, "same", "aad");
    REQUIRE(a.has_value());
    REQUIRE(b.has_value());
    CHECK(*a != *b);
    CHECK(a->substr(0, 12) != b->substr(0, 12));
  }

  SUBCASE("large plaintext") {
    const std::string big = RandomBytes(3 * 1024 * 1024 + 5);
    auto sealed = Seal(key, big, "");
    REQUIRE(sealed.has_value());
    auto opened = Open(key, *sealed, "");
    REQUIRE(opened.has_value());
    CHECK(opened->Reveal() == big);
  }

  SUBCASE("tampering is detected at every byte") {
    auto sealed = Seal(key, "revocation-handle", "grant-1");
    REQUIRE(sealed.has_value());
    for (size_t i = 0; i < sealed->size(); ++i) {
      std::string tampered = *sealed;
      tampered[i] = static_cast<char>(tampered[i] ^ 0x01);
      auto opened = Open(key, tampered, "grant-1");
      REQUIRE_FALSE(opened.has_value());
      CHECK(opened.error().Reason() == "unseal_failed");
    }
  }

  SUBCASE("truncated or empty input") {
    auto sealed = Seal(key, "revocation-handle", "grant-1");
    REQUIRE(sealed.has_value());
    for (size_t n : {size_t{0}, size_t{1}, size_t{12}, size_t{27}, sealed->size() - 1}) {
      CAPTURE(n);
      auto opened = Open(key, sealed->substr(0, n), "grant-1");
      REQUIRE_FALSE(opened.has_value());
      CHECK(opened.error().Reason() == "unseal_failed");
    }
  }

  SUBCASE("wrong associated data") {
    auto sealed = Seal(key, "revocation-handle", "grant-1");
    REQUIRE(sealed.has_value());
    for (std::string_view aad : {"grant-2", "", "grant-1 "}) {
      auto opened = Open(key, *sealed, aad);
      REQUIRE_FALSE(opened.has_value());
      CHECK(opened.error().Reason() == "unseal_failed");
    }
  }

  SUBCASE("wrong key") {
    auto sealed = Seal(key, "revocation-handle", "grant-1");
    REQUIRE(sealed.has_value());
    const SecretValue other(RandomBytes(32));
    auto opened = Open(other, *sealed, "grant-1");
    REQUIRE_FALSE(opened.has_value());
    CHECK(opened.error().Reason() == "unseal_failed");
  }

  SUBCASE("wrong key length") {
    for (size_t n : {size_t{0}, size_t{16}, size_t{31}, size_t{33}, size_t{64}}) {
      CAPTURE(n);
      const SecretValue bad_key(RandomBytes(n));
      auto sealed = Seal(bad_key, "x", "aad");
      REQUIRE_FALSE(sealed.has_value());
      CHECK(sealed.error().code == ErrorCode::kInvalidArgument);
      auto opened = Open(bad_key, std::string(40, 'a'), "aad");
      REQUIRE_FALSE(opened.has_value());
      CHECK(opened.error().code == ErrorCode::kInvalidArgument);
    }
  }

  SUBCASE("known answer (NIST GCM test case 14: zero key, zero nonce, zero block)") {
    // Seal picks a random nonce, so check Open against a fixed vector instead.
    const SecretValue zero_key(std::string(32, '\0'));
    const std::string sealed = std::string(12, '\0') + Unhex("cea7403d4d606b6e074ec5d3baf39d18") +
                               Unhex("d0d1c8a799996bf0265b98b5d48ab919");
    auto opened = Open(zero_key, sealed, "");
    REQUIRE(opened.has_value());
    CHECK(opened->Reveal() == std::string(16, '\0'));
  }
}

}  // namespace
}  // namespace jitbroker::crypto
