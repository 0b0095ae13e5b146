// Small ASCII text helpers shared across the broker (one way to do each).
//
// Thread-safety: pure functions.
#pragma once

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

}  // namespace jitbroker::text
