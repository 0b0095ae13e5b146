// Small text helpers shared across the broker (one way to do each): ASCII
// case and control checks, and a UTF-8 scan for characters that make text
// shown to people differ from what it says.
//
// Thread-safety: pure functions.
#pragma once

#include <cstddef>
#include <optional>
#include <string>
#include <string_view>

namespace jitbroker::text {

// ASCII lower-case; other bytes (UTF-8 included) are left as they are,
// whatever the locale.
std::string AsciiLower(std::string_view s);

// True when `s` holds a C0 control character or DEL (0x00–0x1f, 0x7f).
bool HasControlChar(std::string_view s);

// The value of one hexadecimal digit (either case), or -1.
int HexDigitValue(char c);

// An upstream's text for a message: printable ASCII only (anything else
// becomes a space), at most `max` characters and "..." when cut.
std::string Printable(std::string_view s, size_t max);

// `s` as HTML text or attribute value: & < > " ' as character references.
std::string HtmlEscape(std::string_view s);

// A character FindInvisibleChar refuses, and where it is.
struct InvisibleChar {
  size_t offset = 0;          // byte offset of its first byte in the input
  char32_t code_point = 0;    // U+FFFD for a byte sequence that is not UTF-8
  bool invalid_utf8 = false;  // the bytes at `offset` are not well-formed UTF-8
};

// The first character of `s` that renders as nothing, or reorders or hides
// the text around it, so that what a person reads (an approver, a log
// reader) differs from what a program receives (docs/api.md, "Text shown to
// approvers"):
//   - Unicode format characters (general category Cf): the bidirectional
//     embeddings, overrides and isolates (U+202A–U+202E, U+2066–U+2069),
//     marks (U+200E, U+200F, U+061C), zero-width characters (U+200B–U+200D,
//     U+2060–U+2064, U+FEFF), U+00AD, U+180E, the Arabic, Syriac, Egyptian,
//     Brahmi, shorthand and musical format controls, and the tag characters
//     (U+E0001, U+E0020–U+E007F);
//   - the line and paragraph separators U+2028, U+2029;
//   - the C1 controls U+0080–U+009F;
//   - the Hangul fillers U+115F, U+1160, U+3164, U+FFA0 (blank letters) and
//     the variation selectors supplement U+E0100–U+E01EF (used to smuggle
//     data in invisible text);
//   - bytes that are not well-formed UTF-8 (overlong forms, surrogates,
//     values above U+10FFFF, truncated sequences).
// ASCII is never refused here (C0 controls are the caller's concern:
// parameters may legitimately hold newlines and tabs). Linear in |s|.
std::optional<InvisibleChar> FindInvisibleChar(std::string_view s);

// "U+202E" (at least four upper-case hex digits).
std::string CodePointName(char32_t code_point);

}  // namespace jitbroker::text
