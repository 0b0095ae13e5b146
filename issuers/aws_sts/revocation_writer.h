// RevocationWriter: adds revoked grants to the deny policy of their role
// (deny_policy.h) with IAM GetRolePolicy + PutRolePolicy (docs/aws.md,
// "Revocation").
//
// PutRolePolicy replaces the whole document, so writes to one role are
// serialised: read, prune the entries whose credentials have expired, add,
// write. Revocations of one role that arrive while a write is in flight are
// gathered and written together by the next write (a session's bulk
// revocation of fifty grants costs two writes, not fifty), and each caller
// gets the outcome of the write that carried its entry. Nothing is written
// when every entry is already denied (a retried revocation).
//
// A document that would exceed `max_policy_chars` (IAM's limit for all of a
// role's inline policies together) is never truncated: the write fails with
// kResourceExhausted "aws_revocation_policy_full" and the service's durable
// queue retries it, as entries expire and make room.
//
// Thread-safety: Deny may be called concurrently.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "issuers/aws_sts/aws_api.h"
#include "jitbroker/clock.h"
#include "jitbroker/issuer.h"
#include "jitbroker/result.h"

namespace jitbroker::issuers::aws_sts {

class RevocationWriter {
 public:
  // `iam` (an IAM client) must outlive the writer.
  RevocationWriter(AwsQueryApi* iam, size_t max_policy_chars, std::string issuer_name);

  // Denies sessions with SourceIdentity `source_identity` on the role named
  // `role_name` until `credential_end`. Errors: those of the IAM calls
  // (aws_api.h), aws_revocation_policy_full, aws_revocation_policy_invalid.
  [[nodiscard]] Status Deny(const std::string& role_name, const std::string& source_identity,
                            TimePoint credential_end, TimePoint now);

  // jitbroker_aws_revocation_writes_total{issuer,outcome}: written,
  // unchanged, policy_full, failed; and the entries the last write of each
  // role left (jitbroker_aws_revocation_policy_entries{issuer,role}).
  void CollectMetrics(std::vector<MetricFamily>& out) const;

 private:
  struct Batch {
    std::map<std::string, TimePoint> entries;  // source identity -> credential end
    TimePoint now;
    bool done = false;
    Status result;
  };
  struct Role {
    std::shared_ptr<Batch> open;  // gathering while a write is in flight
    bool writing = false;
  };

  Status Write(const std::string& role_name, const Batch& batch);
  void Count(const std::string& outcome);

  AwsQueryApi* iam_;
  const size_t max_policy_chars_;
  const std::string issuer_name_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::map<std::string, Role> roles_;
  mutable std::mutex metrics_mu_;
  std::map<std::string, uint64_t> writes_;
  std::map<std::string, size_t> entries_;  // role -> entries after its last write
};

}  // namespace jitbroker::issuers::aws_sts
