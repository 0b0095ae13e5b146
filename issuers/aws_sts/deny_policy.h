// DenyPolicy: the inline IAM policy `jitbroker-revocations` that the aws_sts
// issuer keeps on each role it mints for (docs/aws.md, "Revocation").
//
// The document denies everything to sessions whose aws:SourceIdentity is a
// revoked grant's id (the issuer sets SourceIdentity to the grant id, and
// AWS keeps it through role chaining). Entries are grouped by when their
// credentials expire, one statement per 15-minute bucket, its end in the Sid
// ("JbUntil202612051530", UTC): the document alone says when an entry may
// go, so pruning needs no other state and survives restarts and several
// brokers writing the same role:
//
//   {"Version":"2012-10-17","Statement":[{"Sid":"JbUntil202612051530",
//    "Effect":"Deny","Action":"*","Resource":"*","Condition":{"StringEquals":
//    {"aws:SourceIdentity":["grt_…","grt_…"]}}}]}
//
// Statements that are not the broker's (an operator's own deny) are kept
// verbatim. Rendering is compact and deterministic (buckets in time order,
// ids sorted), so Chars() is what IAM counts against its size limit
// (whitespace excluded).
//
// Thread-safety: a value type; no shared state.
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "jitbroker/clock.h"
#include "jitbroker/result.h"

namespace jitbroker::issuers::aws_sts {

inline constexpr std::string_view kDenyPolicyName = "jitbroker-revocations";
inline constexpr int64_t kDenyBucketSeconds = 900;

class DenyPolicy {
 public:
  // A document as GetRolePolicy returned it (decoded). Errors:
  // kFailedPrecondition "aws_revocation_policy_invalid" when it is not a JSON
  // policy document (at most 128 KiB; Statement an object or an array).
  [[nodiscard]] static Result<DenyPolicy> Parse(std::string_view document);

  // Whether `source_identity` is denied by a statement of the broker's.
  bool Contains(std::string_view source_identity) const;
  // Denies `source_identity` until `credential_end` (rounded up to its
  // bucket's end).
  void Add(std::string_view source_identity, TimePoint credential_end);
  // Removes the broker's statements whose bucket ended at or before `now`;
  // returns how many entries went.
  size_t Prune(TimePoint now);
  // Entries of the broker's statements.
  size_t Entries() const;
  bool Empty() const { return buckets_.empty() && foreign_.empty(); }

  // The compact JSON document.
  std::string Render() const;

 private:
  std::map<int64_t, std::set<std::string>> buckets_;  // bucket end (unix s) -> source identities
  std::vector<nlohmann::json> foreign_;               // statements kept verbatim
};

}  // namespace jitbroker::issuers::aws_sts
