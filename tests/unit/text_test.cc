// Unit tests for broker/common/text.h, chiefly FindInvisibleChar: the scan
// behind refusing bidi controls and invisible characters in what approvers
// are shown (issue #10, finding 5).
#include "broker/common/text.h"

#include <string>

#include <doctest/doctest.h>

namespace jitbroker::text {
namespace {

// UTF-8 of one code point.
std::string Utf8(char32_t cp) {
  std::string out;
  if (cp < 0x80) {
    out += static_cast<char>(cp);
  } else if (cp < 0x800) {
    out += static_cast<char>(0xC0 | (cp >> 6));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  } else if (cp < 0x10000) {
    out += static_cast<char>(0xE0 | (cp >> 12));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  } else {
    out += static_cast<char>(0xF0 | (cp >> 18));
    out += static_cast<char>(0x80 | ((cp >> 12) & 0x3F));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  }
  return out;
}

TEST_CASE("FindInvisibleChar: bidi controls, format characters and separators are found") {
  const char32_t refused[] = {
      0x202A,  0x202B,  0x202C,  0x202D,  0x202E,  // embeddings and overrides
      0x2066,  0x2067,  0x2068,  0x2069,           // isolates
      0x200B,  0x200C,  0x200D,  0x200E,  0x200F,  // zero width, LRM, RLM
      0x061C,  0xFEFF,  0x2028,  0x2029,  0x00AD,  0x180E,  0x2060,
      0x2064,  0x206F,  0x0600,  0x0605,  0x06DD,  0x070F,  0x0890,
      0x08E2,  0xFFF9,  0xFFFB,  0x0080,  0x0085,  0x009F,  // C1 controls
      0x115F,  0x1160,  0x3164,  0xFFA0,                    // Hangul fillers
      0x110BD, 0x110CD, 0x13430, 0x1343F, 0x1BCA0, 0x1BCA3, 0x1D173,
      0x1D17A, 0xE0001, 0xE0020, 0xE0041, 0xE007F,  // tags
      0xE0100, 0xE01EF,                             // variation selectors supplement
  };
  for (char32_t cp : refused) {
    CAPTURE(CodePointName(cp));
    const std::string s = "ab" + Utf8(cp) + "cd";
    auto found = FindInvisibleChar(s);
    REQUIRE(found.has_value());
    CHECK(found->code_point == cp);
    CHECK(found->offset == 2);
    CHECK_FALSE(found->invalid_utf8);
  }
}

TEST_CASE("FindInvisibleChar: ordinary text passes, ASCII controls are the caller's") {
  const char32_t allowed[] = {'a',     '\n',    '\t',    0x00,   0x7F,    0x00A0,   0x00E9,
                              0x0627,  0x05D0,  0x2013,  0x2027, 0x202F,  0x2065,   0x2070,
                              0x3000,  0x65E5,  0xFE0F,  0xFFFD, 0x1F600, 0x10FFFF, 0x0601 - 2,
                              0x110BC, 0xE0000, 0xE0080, 0xE01F0};
  for (char32_t cp : allowed) {
    CAPTURE(CodePointName(cp));
    CHECK_FALSE(FindInvisibleChar("x" + Utf8(cp) + "y").has_value());
  }
  CHECK_FALSE(FindInvisibleChar("").has_value());
  CHECK_FALSE(FindInvisibleChar("rm -rf /\n").has_value());
}

TEST_CASE("FindInvisibleChar: malformed UTF-8 is reported as such") {
  const std::string bad[] = {
      "\x80",              // lone continuation byte
      "\xC0\xAF",          // overlong '/'
      "\xC1\xBF",          // overlong
      "\xE0\x80\xAF",      // overlong
      "\xED\xA0\x80",      // surrogate U+D800
      "\xF4\x90\x80\x80",  // above U+10FFFF
      "\xF5\x80\x80\x80",
      "\xE2\x80",      // truncated
      "\xE2\x28\xA1",  // bad continuation
      "\xFF",
  };
  for (const std::string& b : bad) {
    auto found = FindInvisibleChar("ok" + b);
    REQUIRE(found.has_value());
    CHECK(found->invalid_utf8);
    CHECK(found->offset == 2);
    CHECK(found->code_point == 0xFFFD);
  }
}

TEST_CASE("FindInvisibleChar: the first offending character is reported") {
  const std::string s = "a" + Utf8(0x00E9) + Utf8(0x2066) + "b" + Utf8(0x202E);
  auto found = FindInvisibleChar(s);
  REQUIRE(found.has_value());
  CHECK(found->offset == 3);
  CHECK(found->code_point == 0x2066);
}

TEST_CASE("CodePointName: U+ and at least four hex digits") {
  CHECK(CodePointName(0x202E) == "U+202E");
  CHECK(CodePointName(0x85) == "U+0085");
  CHECK(CodePointName(0xE0041) == "U+E0041");
  CHECK(CodePointName(0x10FFFF) == "U+10FFFF");
}

TEST_CASE("AsciiLower and HasControlChar") {
  CHECK(AsciiLower("Shell.EXEC") == "shell.exec");
  CHECK(AsciiLower("\xC3\x89") == "\xC3\x89");  // UTF-8 untouched
  CHECK(HasControlChar("a\nb"));
  CHECK_FALSE(HasControlChar("a b"));
}

}  // namespace
}  // namespace jitbroker::text
