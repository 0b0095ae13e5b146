// Recognises an audit record line that is exactly the canonical JSON the
// journal writes (include/jitbroker/audit.h), without building a JSON
// document: the fast path of ChainVerifier.
//
// This is not a second JSON parser. It answers one question, conservatively:
// "is `line` certainly byte-identical to nlohmann::json::parse(line).dump()?"
// and, if so, where the top-level members the chain needs are. It accepts
// only the narrow grammar dump() writes (no whitespace; object keys in
// strictly increasing byte order, hence no duplicates; strings with raw
// valid UTF-8 and only the escapes dump() uses; integers without a sign
// before 0 or leading zeros) and refuses, not guesses, everything else:
// floats, keys with escapes, integers of more than 18 digits, nesting deeper
// than kMaxCanonicalDepth, a record whose seq is not a non-negative integer
// or whose prev_hash, hash or event string holds an escape. A refused line
// goes to the reference path (nlohmann parse and dump), which gives the
// verdict, so a refusal costs time, never a wrong answer; an acceptance must
// never be wrong, which tests/unit/audit_verify_stream_test.cc checks
// against nlohmann on every case and on random mutations.
//
// Why: nlohmann's parser runs at about 60 MB/s here (about 20 us for a
// 1 KiB record, and 10 us even with a no-op SAX handler), which alone misses
// jitctl's target of 100,000 records/s; this recogniser reads about 1 GB/s.
//
// Thread-safety: pure functions.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string_view>

namespace jitbroker::audit {

inline constexpr int kMaxCanonicalDepth = 64;

// Where the chain's members are in an accepted line. The views point into it.
struct CanonicalRecord {
  int64_t seq = 0;
  std::string_view prev_hash;  // the string's bytes (no escapes in it)
  std::string_view hash;
  std::string_view event;  // "" when absent or not a string
  // [cut_begin, cut_end): the top-level "hash" member with the comma that
  // joins it to a neighbour. The line without these bytes is the canonical
  // JSON of the record without "hash": the text its hash covers.
  size_t cut_begin = 0;
  size_t cut_end = 0;
};

// True when `line` is an object, byte-identical to its own canonical dump,
// with a top-level non-negative integer "seq" and escape-free strings
// "prev_hash" and "hash" (and "event", when it is a string); fills `out`.
// False: not known to be so (see above).
bool RecogniseCanonicalRecord(std::string_view line, CanonicalRecord& out);

// True when `text` is certainly byte-identical to the canonical dump of the
// JSON value it holds (any value, no record shape needed); for tests.
bool IsCanonicalJsonForTesting(std::string_view text);

}  // namespace jitbroker::audit
