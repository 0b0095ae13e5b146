// jitctl commands that work without a broker: they link the audit chain
// verifier and the config loader of the daemon itself, so `jitctl audit verify
// --file` and `jitctl config check` judge exactly as the broker does.
//
// Thread-safety: single-threaded (one command per process).
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <ostream>
#include <string>

#include "cli/args.h"
#include "jitbroker/audit.h"

namespace jitbroker::cli {

// `jitctl audit verify --file F` and its anchoring options
// (broker/audit/checkpoint.h, docs/jitctl.md).
struct AuditVerifyFileOptions {
  std::string path;
  std::optional<std::string> public_key_file;  // PEM
  std::optional<std::string> jwks_file;        // JWKS JSON
  std::optional<std::string> expect_head;      // 64 lower-case hex
  std::optional<int64_t> expect_seq;
  std::optional<int64_t> max_tail;  // --require-checkpoint-within
  bool require_shutdown = false;    // --require-shutdown-checkpoint
  // --max-line-bytes: a longer line fails verification (the memory bound of
  // the streaming reader).
  size_t max_line_bytes = kMaxAuditLineBytes;
};

// The largest --max-line-bytes (1 GiB).
inline constexpr int64_t kMaxLineBytesLimit = int64_t{1} << 30;

// Reads the options of `audit verify` from parsed flags. Returns a usage
// error message ("" when fine): anchoring flags without --file, checkpoint
// requirements without a key, both --public-key and --jwks, bad numbers or
// hashes.
std::string ParseAuditVerifyFileOptions(const ParsedArgs& args, AuditVerifyFileOptions* out);

// Verifies a local audit JSONL file, streamed (memory: a read chunk and one
// line, whatever the file's size). Prints "ok: N records" (plus the head
// and, with a key, the checkpoints seen) (exit 0) or "BROKEN at seq S (line
// L): problem" / "INCOMPLETE: problem" (exit 1); --json prints
// {"ok","records","head","checkpoints","last_checkpoint_seq",
//  "last_checkpoint_reason","tail_records","first_bad_seq","first_bad_line",
//  "problem"}.
int RunAuditVerifyFile(const AuditVerifyFileOptions& options, bool json, std::ostream& out,
                       std::ostream& err);
int RunAuditVerifyFile(const std::string& path, bool json, std::ostream& out, std::ostream& err);

// Loads and validates a broker config file exactly as the daemon does before
// it starts (app::ValidateConfig: issuer sections and trust policies
// included). Prints "ok: policy version V, N principals, M issuers" (exit 0),
// after "warning: …" lines on `err` for deprecated keys, or the error
// message (exit 1); --json adds "warnings".
int RunConfigCheck(const std::string& path, bool json, std::ostream& out, std::ostream& err);

// `jitctl jwks --from-pem FILE`: the public JWKS {"keys":[JWK]} of a PEM
// private key (RSA or P-256, loaded as the gcp issuer's workload identity
// loads it), with the `kid` the broker puts in the JWTs it signs with it —
// the file Google's workload identity provider holds (docs/gcp.md). Only the
// public half is printed. Exit 1 for an unreadable file or another key.
int RunJwksFromPem(const std::string& path, std::ostream& out, std::ostream& err);

// `jitctl completion bash|zsh`: a completion script made from the command
// table (cli/args.h), so it names exactly the commands and flags jitctl
// accepts. zsh gets the bash function through zsh's bashcompinit. Exit 2 for
// another shell.
int RunCompletion(const std::string& shell, std::ostream& out, std::ostream& err);

}  // namespace jitbroker::cli
