#include "issuers/aws_sts/revocation_writer.h"

#include <utility>

#include "broker/common/log.h"
#include "issuers/aws_sts/deny_policy.h"

namespace jitbroker::issuers::aws_sts {

RevocationWriter::RevocationWriter(AwsQueryApi* iam, size_t max_policy_chars,
                                   std::string issuer_name)
    : iam_(iam), max_policy_chars_(max_policy_chars), issuer_name_(std::move(issuer_name)) {}

Status RevocationWriter::Deny(const std::string& role_name, const std::string& source_identity,
                              TimePoint credential_end, TimePoint now) {
  std::unique_lock lock(mu_);
  Role& role = roles_[role_name];
  if (!role.open) {
    role.open = std::make_shared<Batch>();
  }
  std::shared_ptr<Batch> batch = role.open;
  TimePoint& end = batch->entries[source_identity];
  end = std::max(end, credential_end);
  batch->now = std::max(batch->now, now);
  cv_.wait(lock, [&] { return batch->done || !roles_[role_name].writing; });
  if (batch->done) {
    return batch->result;  // another caller's write carried this entry
  }
  // This caller writes the batch; later arrivals gather in a new one.
  Role& r = roles_[role_name];
  r.writing = true;
  r.open.reset();
  lock.unlock();
  Status result = Write(role_name, *batch);
  lock.lock();
  batch->result = result;
  batch->done = true;
  Role& after = roles_[role_name];
  after.writing = false;
  if (!after.open) {
    roles_.erase(role_name);  // idle: keep no state for it
  }
  cv_.notify_all();
  return result;
}

Status RevocationWriter::Write(const std::string& role_name, const Batch& batch) {
  const std::string policy_name(kDenyPolicyName);
  auto current = GetRolePolicy(*iam_, role_name, policy_name);
  if (!current) {
    Count("failed");
    return std::unexpected(current.error());
  }
  DenyPolicy policy;
  if (*current) {
    auto parsed = DenyPolicy::Parse(**current);
    if (!parsed) {
      Count("failed");
      return std::unexpected(parsed.error());
    }
    policy = std::move(*parsed);
  }
  bool changed = policy.Prune(batch.now) > 0;
  for (const auto& [id, end] : batch.entries) {
    if (end > batch.now && !policy.Contains(id)) {
      policy.Add(id, end);
      changed = true;
    }
  }
  if (!changed) {
    Count("unchanged");
    return {};
  }
  const std::string document = policy.Render();
  if (document.size() > max_policy_chars_) {
    Count("policy_full");
    log::Get("issuer.aws_sts")
        ->error("event=aws_revocation_policy_full issuer={} role={} chars={} limit={} entries={}",
                issuer_name_, role_name, document.size(), max_policy_chars_, policy.Entries());
    return std::unexpected(ResourceExhausted(
        "aws_revocation_policy_full",
        "the deny policy of role " + role_name + " would be " + std::to_string(document.size()) +
            " characters, over the limit of " + std::to_string(max_policy_chars_) +
            "; the revocation is queued until expired entries make room"));
  }
  if (Status put = PutRolePolicy(*iam_, role_name, policy_name, document); !put) {
    const bool full = put.error().Reason() == "aws_limit_exceeded";
    Count(full ? "policy_full" : "failed");
    return put;
  }
  Count("written");
  std::lock_guard lock(metrics_mu_);
  entries_[role_name] = policy.Entries();
  return {};
}

void RevocationWriter::Count(const std::string& outcome) {
  std::lock_guard lock(metrics_mu_);
  ++writes_[outcome];
}

void RevocationWriter::CollectMetrics(std::vector<MetricFamily>& out) const {
  MetricFamily writes{"jitbroker_aws_revocation_writes_total",
                      "counter",
                      "Writes of roles' jitbroker-revocations deny policies, by outcome",
                      {}};
  MetricFamily entries{"jitbroker_aws_revocation_policy_entries",
                       "gauge",
                       "Revoked grants a role's deny policy held after its last write",
                       {}};
  std::lock_guard lock(metrics_mu_);
  for (const auto& [outcome, n] : writes_) {
    writes.samples.emplace_back("issuer=\"" + issuer_name_ + "\",outcome=\"" + outcome + "\"",
                                static_cast<double>(n));
  }
  for (const auto& [role, n] : entries_) {
    entries.samples.emplace_back("issuer=\"" + issuer_name_ + "\",role=\"" + role + "\"",
                                 static_cast<double>(n));
  }
  out.push_back(std::move(writes));
  out.push_back(std::move(entries));
}

}  // namespace jitbroker::issuers::aws_sts
