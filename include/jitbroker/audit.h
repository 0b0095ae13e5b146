// Audit records and the hash chain (docs/concepts.md "Audit record").
//
// Every decision and credential event is one record. Records are chained:
// record.prev_hash = previous record's hash ("" for the first), and
// record.hash = lower-case hex SHA-256 of the canonical JSON of the record's
// body with "prev_hash" and "seq" set and "hash" absent. Canonical JSON is
// nlohmann::json::dump() with no indentation: object keys sorted, no
// insignificant whitespace, UTF-8 emitted as is. Bodies never contain floats.
//
// The chain is written in two places: the store (source of truth) and an
// append-only JSONL file (one record per line, with "hash"). Both are written
// by the Journal before the request that caused the event is answered.
//
// Index fields: a record also carries, as typed fields outside its body, the
// chain it belongs to and what the store indexes it by (session, principal,
// time). They are read from the event once, by PrepareAuditEvent, so a Store
// never parses bodies (docs/architecture.md, "The store seam").
//
// Thread-safety: value types and pure functions only, but for ChainVerifier
// (one thread at a time).
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <limits>
#include <optional>
#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

#include "jitbroker/clock.h"
#include "jitbroker/result.h"

namespace jitbroker {

// The id of the one audit chain the broker writes today. A store may hold
// several chains (seq and prev_hash run per chain); see Store::AuditHead.
inline constexpr std::string_view kDefaultAuditChain = "main";

// What a record is indexed by, read from its event (PrepareAuditEvent):
//   session_id   = event.agent.session_id   ("" when absent or not a string)
//   principal_id = event.human_principal    (the delegating human; "" likewise)
//   ts           = event.timestamp, RFC 3339 or integer unix seconds, in whole
//                  seconds (a fraction is dropped); nullopt when absent or
//                  unparsable.
struct AuditIndex {
  std::string session_id;
  std::string principal_id;
  std::optional<TimePoint> ts;
};

struct ChainHead {
  int64_t seq = 0;
  std::string hash;
};

struct AuditRecord {
  std::string chain_id = std::string(kDefaultAuditChain);  // set by the Journal
  int64_t seq = 0;
  std::string prev_hash;
  std::string hash;
  nlohmann::json body;  // full record including seq, prev_hash and hash
  // Canonical JSON of `body` (no newline), filled by ChainRecord so the store
  // and the JSONL file write the exact bytes that were hashed without
  // re-serialising. Empty when not known (e.g. records read back from the
  // store): writers then fall back to the canonical dump of `body`.
  std::string text;
  // Copied from the event by ChainPrepared; stored and returned by the store
  // as typed fields, so filters never look into `body`.
  AuditIndex index;
};

// An audit event serialised ahead of chaining: the expensive part of
// ChainRecord (canonical JSON of the body), done on the caller's thread so
// the single committer only splices in seq/prev_hash, hashes and splices in
// the hash. `members` is the canonical text of every top-level member except
// seq, prev_hash and hash, each preceded by a comma (",\"a\":1,\"b\":2");
// the *_at offsets are where those three members belong (member boundaries,
// non-decreasing as "hash" < "prev_hash" < "seq").
struct PreparedAuditEvent {
  nlohmann::json body;  // without seq, prev_hash and hash
  std::string members;
  size_t hash_at = 0;
  size_t prev_hash_at = 0;
  size_t seq_at = 0;
  AuditIndex index;  // read from `body` (see AuditIndex)
};

// Canonicalises `event` (invalid UTF-8 becomes U+FFFD; a non-object is
// wrapped as {"body": …}) and reads its AuditIndex. Pure; safe on any thread.
PreparedAuditEvent PrepareAuditEvent(nlohmann::json event);

// Chains a prepared event after `head` (nullopt = first record): fills seq,
// prev_hash, hash in both the struct and body, the record's text and index.
AuditRecord ChainPrepared(const std::optional<ChainHead>& head, PreparedAuditEvent event);

// ChainPrepared(head, PrepareAuditEvent(event)).
AuditRecord ChainRecord(const std::optional<ChainHead>& head, nlohmann::json event);

// Recomputes the hash of a full record body (ignoring its "hash" field).
std::string ComputeRecordHash(const nlohmann::json& body);

struct ChainVerification {
  bool ok = true;
  int64_t records = 0;
  int64_t first_bad_seq = 0;   // 0 when ok
  int64_t first_bad_line = 0;  // 1-based line for files, 0 otherwise
  // "unparsable line", "seq gap", "prev_hash mismatch", "hash mismatch",
  // "non-canonical line" (checked in this order), or "line longer than N
  // bytes" (ChainVerifier's max_line_bytes).
  std::string problem;
};

// Verifies JSONL text (one record per line): the first line is seq 1 with
// prev_hash ""; every line is a record whose seq follows the one before,
// whose prev_hash is the hash before it and whose hash is ComputeRecordHash
// of it, and is byte-identical to its canonical JSON (no duplicate or
// re-ordered keys, no added whitespace, no CR). An empty last line (the text
// is "\n" or ends "\n\n") is not a record; an empty line before it fails. The verdict names the
// first line that fails; nothing after it is looked at.
ChainVerification VerifyChainText(std::string_view jsonl);

// The default bound on the length of one line (without its '\n') for
// readers that stream a file through a ChainVerifier: such a reader holds at
// most one line beyond its read buffer. Records the broker writes are about
// 1 KiB; only a request body near a raised server.max_body_bytes makes one
// longer than this, and readers let the operator raise the bound.
inline constexpr size_t kMaxAuditLineBytes = size_t{1} << 20;

// A record a ChainVerifier accepted, as its observer sees it. The views are
// valid during the call only.
struct VerifiedRecord {
  int64_t seq = 0;
  int64_t line = 0;       // 1-based
  std::string_view text;  // the line (canonical JSON of the record)
  std::string_view hash;
  std::string_view event;  // top-level "event" when it is a string, else ""
};

// The chain verifier, for text that arrives in pieces (a file read in
// chunks), in one pass with bounded memory: Feed() the bytes in order, in
// pieces of any size (a line may span pieces), then Finish(). The verdict
// does not depend on how the text was cut: VerifyChainText(t) is
// ChainVerifier() fed t. A line longer than `max_line_bytes` fails "line
// longer than N bytes" (at its seq and line, after the lines before it)
// without being buffered whole.
//
// Lines that are canonical records (all of them, in a sound file) are
// checked without building a JSON document: the line's text is recognised
// as exactly what nlohmann::json::dump() writes, and the record hash is
// taken over the line with its top-level "hash" member cut out, which is
// that dump without "hash". A line the recogniser does not vouch for (any
// failure, and rare shapes such as escaped keys or floats) is judged by the
// reference path: parse, re-dump and compare, as VerifyChainText always
// did. Both give the same verdict (tests/unit/audit_verify_stream_test.cc).
//
// Thread-safety: one thread at a time.
class ChainVerifier {
 public:
  // Called once per accepted record, in order.
  using RecordObserver = std::function<void(const VerifiedRecord&)>;

  explicit ChainVerifier(size_t max_line_bytes = std::numeric_limits<size_t>::max(),
                         RecordObserver on_record = nullptr);
  ChainVerifier(const ChainVerifier&) = delete;
  ChainVerifier& operator=(const ChainVerifier&) = delete;

  // The next bytes of the text. Ignored once Broken().
  void Feed(std::string_view bytes);
  // True once a line failed: no later byte changes the verdict, so a reader
  // may stop.
  bool Broken() const { return !result_.ok; }
  // Ends the text (a last line without '\n' is a line) and returns the
  // verdict. Feed() must not be called after it.
  ChainVerification Finish();
  // The hash of the last accepted record ("" before the first).
  const std::string& LastHash() const { return prev_hash_; }

  // Judges every line by the reference path only (differential tests).
  void UseReferencePathOnlyForTesting() { reference_only_ = true; }

 private:
  void Line(std::string_view line);
  void LineTooLong();
  bool FastLine(std::string_view line);
  void ReferenceLine(std::string_view line);
  void Fail(int64_t seq, std::string problem);

  size_t max_line_bytes_;
  RecordObserver on_record_;
  bool reference_only_ = false;
  ChainVerification result_;
  int64_t line_no_ = 0;
  int64_t blank_line_ = 0;  // an empty line not yet known to be the last one
  std::string prev_hash_;   // "" before the first record
  std::string partial_;     // the start of a line that spans Feed() calls
  std::string scratch_;     // the line without its "hash" member
};

}  // namespace jitbroker
