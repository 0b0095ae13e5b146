// jitctl commands that work without a broker: they link the audit chain
// verifier and the config loader of the daemon itself, so `jitctl audit verify
// --file` and `jitctl config check` judge exactly as the broker does.
//
// Thread-safety: single-threaded (one command per process).
#pragma once

#include <ostream>
#include <string>

namespace jitbroker::cli {

// Verifies a local audit JSONL file. Prints "ok: N records" (exit 0) or
// "BROKEN at seq S (line L): problem" (exit 1); --json prints
// {"ok","records","first_bad_seq","first_bad_line","problem"}.
int RunAuditVerifyFile(const std::string& path, bool json, std::ostream& out, std::ostream& err);

// Loads and validates a broker config file. Prints "ok: policy version V, N
// principals, M issuers" (exit 0) or the loader's error message (exit 1).
int RunConfigCheck(const std::string& path, bool json, std::ostream& out, std::ostream& err);

}  // namespace jitbroker::cli
