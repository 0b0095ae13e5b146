// The canonical record recogniser (broker/audit/canonical_record.h).
//
// The grammar is the one nlohmann::json::dump() (indent -1, ensure_ascii
// false) writes, as nlohmann's lexer reads it back:
//   - strings: raw bytes except '"', '\\' and 0x00-0x1f, forming UTF-8 as
//     RFC 3629 defines it (what the lexer accepts); escapes only \" \\ \b
//     \t \n \f \r and \u00XX (lower-case hex) for the other bytes below 0x20;
//   - objects: members sorted by key bytes (std::map<std::string> order,
//     unsigned), so a key equal to or below the one before is not canonical;
//   - integers: 0 or [1-9][0-9]*, with '-' before a non-zero one.
#include "broker/audit/canonical_record.h"

#include <array>
#include <cstdint>
#include <string_view>

namespace jitbroker::audit {

namespace {

// Byte classes inside a string.
enum ByteClass : uint8_t {
  kPlain,      // 0x20-0x7f but '"' and '\\'
  kQuote,      // '"'
  kBackslash,  // '\\'
  kLead2,      // c2-df: one continuation byte 80-bf
  kLeadE0,     // e0: a0-bf, 80-bf
  kLead3,      // e1-ec, ee-ef: 80-bf, 80-bf
  kLeadED,     // ed: 80-9f, 80-bf (no surrogates)
  kLeadF0,     // f0: 90-bf, then two 80-bf
  kLead4,      // f1-f3: 80-bf, then two 80-bf
  kLeadF4,     // f4: 80-8f, then two 80-bf (up to U+10FFFF)
  kRefused,    // control bytes, continuation bytes out of place, c0, c1, f5-ff
};

constexpr std::array<uint8_t, 256> MakeClasses() {
  std::array<uint8_t, 256> c{};
  for (int b = 0; b < 256; ++b) {
    uint8_t k = kRefused;
    if (b == '"') {
      k = kQuote;
    } else if (b == '\\') {
      k = kBackslash;
    } else if (b >= 0x20 && b <= 0x7f) {
      k = kPlain;
    } else if (b >= 0xc2 && b <= 0xdf) {
      k = kLead2;
    } else if (b == 0xe0) {
      k = kLeadE0;
    } else if ((b >= 0xe1 && b <= 0xec) || b == 0xee || b == 0xef) {
      k = kLead3;
    } else if (b == 0xed) {
      k = kLeadED;
    } else if (b == 0xf0) {
      k = kLeadF0;
    } else if (b >= 0xf1 && b <= 0xf3) {
      k = kLead4;
    } else if (b == 0xf4) {
      k = kLeadF4;
    }
    c[static_cast<size_t>(b)] = k;
  }
  return c;
}

constexpr std::array<uint8_t, 256> kClasses = MakeClasses();

class Recogniser {
 public:
  explicit Recogniser(std::string_view text)
      : begin_(text.data()), p_(text.data()), end_(text.data() + text.size()) {}

  bool AtEnd() const { return p_ == end_; }

  // Any value; `depth` counts the containers around it.
  bool Value(int depth) {
    if (p_ == end_) {
      return false;
    }
    switch (*p_) {
      case '{':
        return Object(depth + 1, nullptr);
      case '[':
        return Array(depth + 1);
      case '"': {
        std::string_view contents;
        bool escaped = false;
        return String(contents, escaped);
      }
      case 't':
        return Word("true");
      case 'f':
        return Word("false");
      case 'n':
        return Word("null");
      default: {
        std::string_view token;
        return Integer(token);
      }
    }
  }

  // An object at p_ ('{'), the `depth`th container; with `top`, the
  // record's members are noted there.
  bool Object(int depth, CanonicalRecord* top) {
    if (depth > kMaxCanonicalDepth) {
      return false;
    }
    ++p_;
    if (p_ == end_) {
      return false;
    }
    if (*p_ == '}') {
      ++p_;
      return top == nullptr;
    }
    bool seen_seq = false;
    bool seen_prev_hash = false;
    bool seen_hash = false;
    bool first = true;
    std::string_view previous_key;
    for (;;) {
      const char* member = p_;
      std::string_view key;
      bool escaped = false;
      if (*p_ != '"' || !String(key, escaped) || escaped || (!first && !(previous_key < key))) {
        return false;
      }
      if (p_ == end_ || *p_ != ':') {
        return false;
      }
      ++p_;
      if (p_ == end_) {
        return false;
      }
      if (top == nullptr) {
        if (!Value(depth)) {
          return false;
        }
      } else if (key == "seq") {
        std::string_view token;
        if (!Integer(token) || token[0] == '-') {
          return false;
        }
        int64_t seq = 0;
        for (const char c : token) {
          seq = seq * 10 + (c - '0');  // at most 18 digits: no overflow
        }
        top->seq = seq;
        seen_seq = true;
      } else if (key == "prev_hash" || key == "hash" || (key == "event" && *p_ == '"')) {
        std::string_view contents;
        if (*p_ != '"' || !String(contents, escaped) || escaped) {
          return false;
        }
        if (key == "prev_hash") {
          top->prev_hash = contents;
          seen_prev_hash = true;
        } else if (key == "hash") {
          top->hash = contents;
          seen_hash = true;
          // With its comma: the one before it, or after it when it is first.
          const bool last = p_ != end_ && *p_ == '}';
          top->cut_begin = static_cast<size_t>(member - begin_) - (first ? 0 : 1);
          top->cut_end = static_cast<size_t>(p_ - begin_) + (first && !last ? 1 : 0);
        } else {
          top->event = contents;
        }
      } else if (!Value(depth)) {
        return false;
      }
      if (p_ == end_) {
        return false;
      }
      if (*p_ == '}') {
        ++p_;
        return top == nullptr || (seen_seq && seen_prev_hash && seen_hash);
      }
      if (*p_ != ',') {
        return false;
      }
      ++p_;
      if (p_ == end_) {
        return false;
      }
      first = false;
      previous_key = key;
    }
  }

 private:
  bool Array(int depth) {
    if (depth > kMaxCanonicalDepth) {
      return false;
    }
    ++p_;
    if (p_ == end_) {
      return false;
    }
    if (*p_ == ']') {
      ++p_;
      return true;
    }
    for (;;) {
      if (!Value(depth) || p_ == end_) {
        return false;
      }
      if (*p_ == ']') {
        ++p_;
        return true;
      }
      if (*p_ != ',') {
        return false;
      }
      ++p_;
    }
  }

  // A string at p_ ('"'); `contents` is between the quotes, `escaped` says
  // whether it holds an escape (then it is not the string's value).
  bool String(std::string_view& contents, bool& escaped) {
    const char* start = ++p_;
    escaped = false;
    for (;;) {
      while (p_ != end_ && kClasses[static_cast<unsigned char>(*p_)] == kPlain) {
        ++p_;
      }
      if (p_ == end_) {
        return false;
      }
      switch (kClasses[static_cast<unsigned char>(*p_)]) {
        case kQuote:
          contents = std::string_view(start, static_cast<size_t>(p_ - start));
          ++p_;
          return true;
        case kBackslash:
          if (!Escape()) {
            return false;
          }
          escaped = true;
          break;
        case kLead2:
          if (!Continue(1, 0x80, 0xbf, 0)) {
            return false;
          }
          break;
        case kLeadE0:
          if (!Continue(2, 0xa0, 0xbf, 1)) {
            return false;
          }
          break;
        case kLead3:
          if (!Continue(2, 0x80, 0xbf, 1)) {
            return false;
          }
          break;
        case kLeadED:
          if (!Continue(2, 0x80, 0x9f, 1)) {
            return false;
          }
          break;
        case kLeadF0:
          if (!Continue(3, 0x90, 0xbf, 2)) {
            return false;
          }
          break;
        case kLead4:
          if (!Continue(3, 0x80, 0xbf, 2)) {
            return false;
          }
          break;
        case kLeadF4:
          if (!Continue(3, 0x80, 0x8f, 2)) {
            return false;
          }
          break;
        default:
          return false;
      }
    }
  }

  // A multi-byte UTF-8 sequence at p_ with `n` continuation bytes, the first
  // in [lo, hi], the `rest` after it in [0x80, 0xbf]; p_ moves past it.
  bool Continue(size_t n, unsigned lo, unsigned hi, size_t rest) {
    if (static_cast<size_t>(end_ - p_) <= n) {
      return false;
    }
    const auto* u = reinterpret_cast<const unsigned char*>(p_);
    if (u[1] < lo || u[1] > hi) {
      return false;
    }
    for (size_t i = 2; i < 2 + rest; ++i) {
      if (u[i] < 0x80 || u[i] > 0xbf) {
        return false;
      }
    }
    p_ += n + 1;
    return true;
  }

  // An escape at p_ ('\\') as dump() writes it.
  bool Escape() {
    if (end_ - p_ < 2) {
      return false;
    }
    switch (p_[1]) {
      case '"':
      case '\\':
      case 'b':
      case 't':
      case 'n':
      case 'f':
      case 'r':
        p_ += 2;
        return true;
      case 'u': {
        // \u00XX for a control byte without a short escape.
        if (end_ - p_ < 6 || p_[2] != '0' || p_[3] != '0' || (p_[4] != '0' && p_[4] != '1')) {
          return false;
        }
        const char x = p_[5];
        int low = 0;
        if (x >= '0' && x <= '9') {
          low = x - '0';
        } else if (x >= 'a' && x <= 'f') {
          low = x - 'a' + 10;
        } else {
          return false;
        }
        const int code = (p_[4] - '0') * 16 + low;
        if (code == 0x08 || code == 0x09 || code == 0x0a || code == 0x0c || code == 0x0d) {
          return false;
        }
        p_ += 6;
        return true;
      }
      default:
        return false;
    }
  }

  // An integer at p_ as dump() writes it, of at most 18 digits (any int64
  // or uint64 of that size reads back as itself).
  bool Integer(std::string_view& token) {
    const char* start = p_;
    const bool negative = *p_ == '-';
    if (negative) {
      ++p_;
    }
    if (p_ == end_ || *p_ < '0' || *p_ > '9' || (*p_ == '0' && negative)) {
      return false;
    }
    if (*p_ == '0') {
      ++p_;
    } else {
      while (p_ != end_ && *p_ >= '0' && *p_ <= '9') {
        ++p_;
      }
    }
    const auto digits = p_ - start - (negative ? 1 : 0);
    if (digits > 18) {
      return false;
    }
    // A fraction or exponent makes a float, which dump() may write otherwise.
    if (p_ != end_ && (*p_ == '.' || *p_ == 'e' || *p_ == 'E')) {
      return false;
    }
    token = std::string_view(start, static_cast<size_t>(p_ - start));
    return true;
  }

  bool Word(std::string_view word) {
    if (static_cast<size_t>(end_ - p_) < word.size() || std::string_view(p_, word.size()) != word) {
      return false;
    }
    p_ += word.size();
    return true;
  }

  const char* begin_;
  const char* p_;
  const char* end_;
};

}  // namespace

bool RecogniseCanonicalRecord(std::string_view line, CanonicalRecord& out) {
  if (line.empty() || line.front() != '{') {
    return false;
  }
  out = CanonicalRecord();
  Recogniser r(line);
  return r.Object(1, &out) && r.AtEnd();
}

bool IsCanonicalJsonForTesting(std::string_view text) {
  Recogniser r(text);
  return r.Value(0) && r.AtEnd();
}

}  // namespace jitbroker::audit
