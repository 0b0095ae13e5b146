// Signed audit checkpoints (issue #10; docs/configuration.md "audit",
// docs/jitctl.md "audit verify"): anchors that let an offline verifier tell
// an audit file that stops early from a complete one.
//
// The hash chain alone proves that no record was changed, removed or
// inserted *before* the last one; it cannot prove that nothing followed. So
// the journal appends an `audit.checkpoint` record every N records or T
// seconds, at start-up after an unclean stop, and at clean shutdown. Each is
// an ordinary chained record whose `checkpoint.jws` is a compact JWS, signed
// with the broker's audit key (ES256 or Ed25519), over
//   {"typ": "jitbroker.audit.checkpoint", "seq": S, "prev_hash": H,
//    "timestamp": T, "reason": R, "records_since_checkpoint": K}
// where S is the checkpoint record's own seq and H the hash of the record
// before it (so the signature covers the whole chain before it), T its
// timestamp and R one of "records", "interval", "startup", "shutdown".
//
// What a verifier holding the audit public key learns: every checkpoint is
// genuine (a forged or altered one fails), how many records follow the last
// one (more than the configured interval means records were cut or the
// broker is still writing), and whether the file ends with the checkpoint of
// a clean shutdown. What it cannot learn: a file cut right after a genuine
// checkpoint (for the strictest check: after an earlier run's shutdown
// checkpoint) looks complete. Pinning the head (--expect-head / --expect-seq,
// the value GET /v1/audit/verify returns) closes that gap.
//
// Thread-safety: pure functions, and AnchoredChainVerifier (one thread at a
// time); the keys are immutable.
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "broker/crypto/jose.h"
#include "jitbroker/audit.h"
#include "jitbroker/clock.h"
#include "jitbroker/result.h"
#include "jitbroker/store.h"

namespace jitbroker::audit {

inline constexpr std::string_view kCheckpointEvent = "audit.checkpoint";
inline constexpr std::string_view kCheckpointType = "jitbroker.audit.checkpoint";

// The unchained body of a checkpoint record that will follow `head`
// (nullopt: the first record of the chain). `records_since` counts the
// records since the previous checkpoint. `other_chains`: with a store that
// several replicas share, the heads of the other replicas' chains as the
// store showed them just before; written as checkpoint.other_chains
// [{chain, seq, hash}] (absent when empty), so that a verifier of all
// chains can check how they interleave (BrokerService::VerifyAudit).
[[nodiscard]] Result<nlohmann::json> MakeCheckpointEvent(
    const crypto::SigningKey& key, const std::optional<ChainHead>& head, TimePoint now,
    std::string_view reason, int64_t records_since,
    const std::vector<AuditChainHead>& other_chains = {});

// The other chains a checkpoint body names (checkpoint.other_chains); empty
// when it names none or the member is not as MakeCheckpointEvent writes it.
std::vector<AuditChainHead> CheckpointOtherChains(const nlohmann::json& body);

// True for a record body whose event is audit.checkpoint.
bool IsCheckpoint(const nlohmann::json& body);

// Public keys of the audit key, by kid (a JWKS may hold a retired key too).
struct CheckpointKeys {
  std::map<std::string, std::unique_ptr<crypto::VerifyKey>, std::less<>> by_kid;
  // Loads a JWKS document ({"keys": [...]}) or a single public JWK.
  [[nodiscard]] static Result<CheckpointKeys> FromJwks(const nlohmann::json& jwks);
  // A PEM public key (SubjectPublicKeyInfo), EC P-256 or Ed25519; its kid is
  // not known, so it verifies every checkpoint whatever kid it names.
  [[nodiscard]] static Result<CheckpointKeys> FromPem(std::string_view pem);
  std::unique_ptr<crypto::VerifyKey> any;  // set by FromPem
};

// Checks one checkpoint record (chain already verified): its JWS verifies
// with the key its kid names and its payload matches the record. Returns a
// problem ("checkpoint signature invalid", "checkpoint does not match its
// record", "checkpoint key unknown") or "" when genuine.
std::string CheckCheckpoint(const nlohmann::json& body, const CheckpointKeys& keys);

struct AnchorOptions {
  const CheckpointKeys* keys = nullptr;    // null: checkpoints are not checked
  std::optional<std::string> expect_head;  // the chain must end with this hash
  std::optional<int64_t> expect_seq;       // ... and at this seq
  std::optional<int64_t> max_tail;         // at most this many records after the last checkpoint
  bool require_shutdown = false;           // the last record is a shutdown checkpoint
  // A longer line fails the chain ("line longer than N bytes"): what a
  // streaming reader holds at most (ChainVerifier).
  size_t max_line_bytes = kMaxAuditLineBytes;
};

struct AnchorReport {
  bool ok = true;
  ChainVerification chain;          // the hash chain itself
  std::string head_hash;            // hash of the last record ("" when empty)
  int64_t checkpoints = 0;          // genuine checkpoints (0 without keys)
  int64_t last_checkpoint_seq = 0;  // 0: none
  std::string last_checkpoint_reason;
  std::string last_checkpoint_timestamp;
  int64_t tail_records = 0;  // records after the last checkpoint
  int64_t bad_seq = 0;       // the record a problem is about (0: the file)
  std::string problem;       // empty when ok
};

// Verifies a JSONL audit file: the chain (ChainVerifier), with keys every
// checkpoint, then the options. The report is as if the chain were checked
// first: a broken chain is reported with nothing else (head_hash "",
// checkpoints 0, ...), and a bad checkpoint only when the chain holds.
//
// Streaming, in one pass: Feed() the file's bytes in pieces of any size,
// stop early once Broken(), then Finish(). Each checkpoint is checked when
// its line is read; memory is one line and the checkpoint state.
// `options` (and the keys it points to) must outlive the verifier.
//
// Thread-safety: one thread at a time.
class AnchoredChainVerifier {
 public:
  explicit AnchoredChainVerifier(const AnchorOptions& options);
  AnchoredChainVerifier(const AnchoredChainVerifier&) = delete;
  AnchoredChainVerifier& operator=(const AnchoredChainVerifier&) = delete;

  void Feed(std::string_view bytes) { chain_.Feed(bytes); }
  // The chain is broken: the verdict is known, later bytes change nothing.
  bool Broken() const { return chain_.Broken(); }
  AnchorReport Finish();

  // See ChainVerifier::UseReferencePathOnlyForTesting.
  void UseReferencePathOnlyForTesting() { chain_.UseReferencePathOnlyForTesting(); }

 private:
  void OnRecord(const VerifiedRecord& record);

  const AnchorOptions& options_;
  ChainVerifier chain_;
  AnchorReport checkpoints_;                        // the checkpoint fields as they stand
  std::optional<AnchorReport> checkpoint_failure_;  // the report at the first bad checkpoint
};

// AnchoredChainVerifier over `jsonl`. Pure.
AnchorReport VerifyAnchoredChain(std::string_view jsonl, const AnchorOptions& options);

// How much of a file VerifyAnchoredChainFile reads at a time.
inline constexpr size_t kAuditReadChunkBytes = size_t{4} << 20;

// AnchoredChainVerifier over the file at `path`, read `chunk_bytes` at a time
// (memory: one chunk plus one line of at most options.max_line_bytes);
// reading stops at the first broken line. Errors: the file cannot be opened
// or read (kNotFound, kPermissionDenied, kUnavailable; the message is the
// system's reason).
[[nodiscard]] Result<AnchorReport> VerifyAnchoredChainFile(
    const std::string& path, const AnchorOptions& options,
    size_t chunk_bytes = kAuditReadChunkBytes);

}  // namespace jitbroker::audit
