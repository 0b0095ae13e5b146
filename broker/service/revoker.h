// Revoker: the revocation fan-out (docs/architecture.md, "Revocation").
// Revokes a set of grants' credentials concurrently upstream, moves each
// record to its new state in a WriteBatch (from the state it was read in),
// with its audit event, and queues a durable retry for each upstream
// failure. The caller commits the batch; nothing is written here.
//
// Thread-safety: const after construction; Revoke may be called
// concurrently (each call runs its own worker threads).
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <string_view>
#include <vector>

#include "broker/common/metrics.h"
#include "broker/service/grant_sealer.h"
#include "jitbroker/clock.h"
#include "jitbroker/issuer.h"
#include "jitbroker/store.h"

namespace jitbroker::service {

// When the credential of `g` stops working upstream: the issuer's upstream
// expiry when it outlives the grant (MintResult::upstream_expires_at, kept in
// g.extra), else the grant's expiry, else `fallback`.
TimePoint CredentialEnd(const GrantRecord& g, TimePoint fallback);

// What became of one grant's credential.
struct RevocationOutcome {
  std::string grant_id;
  // "revoked", "deny_installed", "expiry_only" (RevokeOutcomeName), "queued"
  // (the upstream failed; retried until it succeeds or the credential
  // expires) or "expired" (it had already expired).
  std::string outcome;
  int64_t residual_seconds = 0;  // how long the credential may still work
};

class Revoker {
 public:
  using FindIssuer = std::function<Issuer*(std::string_view name)>;
  // `sealer` and `metrics` must outlive the Revoker; `concurrency` bounds the
  // parallel upstream calls of one Revoke.
  Revoker(const GrantSealer* sealer, Metrics* metrics, int concurrency, FindIssuer find_issuer)
      : sealer_(sealer),
        metrics_(metrics),
        concurrency_(concurrency),
        find_issuer_(std::move(find_issuer)) {}

  // Revokes `grants` (live grants as read; updated in place to their new
  // state) and adds to `batch` each record, its audit event and, for a
  // failed upstream call, its retry task. One outcome per grant, in order.
  std::vector<RevocationOutcome> Revoke(std::vector<GrantRecord>& grants, TimePoint now,
                                        const std::string& request_id, WriteBatch& batch) const;

 private:
  const GrantSealer* sealer_;
  Metrics* metrics_;
  int concurrency_;
  FindIssuer find_issuer_;
};

}  // namespace jitbroker::service
