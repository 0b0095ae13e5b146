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
// Thread-safety: value types and pure functions only.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

#include "jitbroker/result.h"

namespace jitbroker {

struct ChainHead {
  int64_t seq = 0;
  std::string hash;
};

struct AuditRecord {
  int64_t seq = 0;
  std::string prev_hash;
  std::string hash;
  nlohmann::json body;  // full record including seq, prev_hash and hash
  // Canonical JSON of `body` (no newline), filled by ChainRecord so the store
  // and the JSONL file write the exact bytes that were hashed without
  // re-serialising. Empty when not known (e.g. records read back from the
  // store): writers then fall back to the canonical dump of `body`.
  std::string text;
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
};

// Canonicalises `event` (invalid UTF-8 becomes U+FFFD; a non-object is
// wrapped as {"body": …}). Pure; safe on any thread.
PreparedAuditEvent PrepareAuditEvent(nlohmann::json event);

// Chains a prepared event after `head` (nullopt = first record): fills seq,
// prev_hash, hash in both the struct and body, and the record's text.
AuditRecord ChainPrepared(const std::optional<ChainHead>& head, PreparedAuditEvent event);

// ChainPrepared(head, PrepareAuditEvent(event)).
AuditRecord ChainRecord(const std::optional<ChainHead>& head, nlohmann::json event);

// Recomputes the hash of a full record body (ignoring its "hash" field).
std::string ComputeRecordHash(const nlohmann::json& body);

struct ChainVerification {
  bool ok = true;
  int64_t records = 0;
  int64_t first_bad_seq = 0;      // 0 when ok
  int64_t first_bad_line = 0;     // 1-based line for files, 0 otherwise
  std::string problem;            // "hash mismatch", "prev_hash mismatch", "seq gap", "unparsable line"
};

// Verifies JSONL text (one record per line).
ChainVerification VerifyChainText(std::string_view jsonl);

}  // namespace jitbroker
