// Revoker (broker/service/revoker.h): the revocation fan-out.
#include "broker/service/revoker.h"

#include <algorithm>
#include <atomic>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "broker/audit/events.h"
#include "broker/common/log.h"
#include "broker/common/time_util.h"

namespace jitbroker::service {

TimePoint CredentialEnd(const GrantRecord& g, TimePoint fallback) {
  TimePoint end = g.expires_at.value_or(fallback);
  if (g.upstream_expires_at) {
    end = std::max(end, *g.upstream_expires_at);
  }
  return end;
}

std::vector<RevocationOutcome> Revoker::Revoke(std::vector<GrantRecord>& grants, TimePoint now,
                                               const std::string& request_id,
                                               WriteBatch& batch) const {
  struct Job {
    GrantRecord* grant;
    Issuer* issuer;
    SecretValue handle;
    std::optional<Result<RevokeOutcome>> result;
  };
  std::vector<Job> jobs;
  std::vector<RevocationOutcome> outcomes(grants.size());
  std::vector<std::optional<size_t>> job_of(grants.size());
  // The state each grant was read in: written only if nobody moved it since
  // (docs/architecture.md, "Conditional state changes"); another process may
  // revoke it too.
  std::vector<GrantState> read_as(grants.size());
  for (size_t i = 0; i < grants.size(); ++i) {
    GrantRecord& g = grants[i];
    outcomes[i].grant_id = g.id;
    read_as[i] = g.state;
    if (g.state != GrantState::kActive) {
      // Nothing was released: pending, approved or caught mid-mint.
      g.sealed_request.clear();
      g.state = GrantState::kRevoked;
      g.revoked_at = now;
      g.revoke_outcome = "revoked";
      continue;
    }
    if (g.expires_at && CredentialEnd(g, now) <= now) {
      g.state = GrantState::kExpired;
      g.sealed_handle.clear();
      continue;
    }
    Issuer* issuer = find_issuer_(g.issuer);
    auto handle = sealer_->Open(g.id, g.sealed_handle);
    if (issuer == nullptr || !handle) {
      // Cannot reach the issuer (removed from config) or the handle does not
      // open (seal key changed): the credential lives until it expires.
      log::Get("lifecycle")
          ->error("event=revoke_impossible grant_id={} issuer={} why=\"{}\"", g.id, g.issuer,
                  issuer == nullptr ? "issuer not configured" : handle.error().ToString());
      g.state = GrantState::kRevoked;
      g.revoked_at = now;
      g.revoke_outcome = "expiry_only";
      g.sealed_handle.clear();  // useless now; keep no copy of the credential
      continue;
    }
    job_of[i] = jobs.size();
    jobs.push_back(Job{&g, issuer, std::move(*handle), std::nullopt});
  }

  // Fan out: upstream revocations are slow (tens of ms each), so run them
  // concurrently on a bounded set of threads.
  const size_t workers = std::min<size_t>(jobs.size(), std::max(1, concurrency_));
  std::atomic<size_t> next{0};
  auto work = [&] {
    for (size_t k = next++; k < jobs.size(); k = next++) {
      Job& j = jobs[k];
      RevokeRequest rr{j.grant->id, std::move(j.handle), CredentialEnd(*j.grant, now), now};
      j.result = j.issuer->Revoke(rr);
    }
  };
  if (workers <= 1) {
    work();
  } else {
    std::vector<std::thread> threads;
    threads.reserve(workers - 1);
    for (size_t w = 1; w < workers; ++w) {
      threads.emplace_back(work);
    }
    work();
    for (auto& t : threads) {
      t.join();
    }
  }

  for (size_t i = 0; i < grants.size(); ++i) {
    GrantRecord& g = grants[i];
    RevocationOutcome& out = outcomes[i];
    const int64_t residual =
        g.expires_at
            ? std::max<int64_t>(0, ToUnixSeconds(CredentialEnd(g, now)) - ToUnixSeconds(now))
            : 0;
    std::string event = "credential.revoked";
    if (job_of[i]) {
      const Result<RevokeOutcome>& r = *jobs[*job_of[i]].result;
      if (r) {
        g.state = GrantState::kRevoked;
        g.revoked_at = now;
        g.revoke_outcome = std::string(RevokeOutcomeName(r->kind));
        g.sealed_handle.clear();
        out.outcome = g.revoke_outcome;
        // Revoked: nothing left. A deny installed: what the issuer says is
        // left (propagation), at most the credential's life. Expiry only:
        // the credential's life.
        out.residual_seconds = r->kind == RevokeOutcomeKind::kRevoked ? 0
                               : r->kind == RevokeOutcomeKind::kDenyInstalled
                                   ? std::min(r->residual_seconds, residual)
                                   : residual;
      } else {
        // Upstream failed: queue a durable retry until success or expiry.
        log::Get("lifecycle")
            ->warn("event=revoke_failed grant_id={} issuer={} error=\"{}\"", g.id, g.issuer,
                   r.error().ToString());
        g.state = GrantState::kRevoking;
        g.revoke_outcome = "queued";
        RevocationTask t;
        t.grant_id = g.id;
        t.issuer = g.issuer;
        t.sealed_handle = g.sealed_handle;
        t.expires_at = CredentialEnd(g, now);
        t.attempts = 1;
        t.next_attempt_at = now + std::chrono::seconds(1);
        t.last_error = std::string(r.error().Reason());
        batch.revocations.push_back(std::move(t));
        out.outcome = "queued";
        out.residual_seconds = residual;
        event = "credential.revoke_failed";
      }
    } else if (g.state == GrantState::kExpired) {
      out.outcome = "expired";
      out.residual_seconds = 0;
      event = "credential.expired";
    } else {
      out.outcome = g.revoke_outcome;
      out.residual_seconds = g.revoke_outcome == "expiry_only" ? residual : 0;
    }
    metrics_->CountRevocation(out.outcome);
    batch.audit_events.push_back(audit::GrantEvent(event, g, now, out.outcome, request_id));
    batch.PutGrant(g, read_as[i]);
  }
  return outcomes;
}

}  // namespace jitbroker::service
