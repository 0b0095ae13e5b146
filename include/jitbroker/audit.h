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
// Thread-safety: value types and pure functions only.
#pragma once

#include <cstdint>
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
  std::string problem;  // "hash mismatch", "prev_hash mismatch", "seq gap", "unparsable line"
};

// Verifies JSONL text (one record per line).
ChainVerification VerifyChainText(std::string_view jsonl);

}  // namespace jitbroker
