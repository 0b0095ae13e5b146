#include "issuers/aws_sts/deny_policy.h"

#include <algorithm>
#include <ctime>

namespace jitbroker::issuers::aws_sts {

namespace {

constexpr std::string_view kSidPrefix = "JbUntil";
constexpr size_t kMaxDocumentBytes = 128 * 1024;
constexpr std::string_view kConditionKey = "aws:SourceIdentity";

std::string SidOf(int64_t bucket_end) {
  const auto t = static_cast<std::time_t>(bucket_end);
  std::tm tm{};
  gmtime_r(&t, &tm);
  char buf[16];
  std::strftime(buf, sizeof buf, "%Y%m%d%H%M", &tm);
  return std::string(kSidPrefix) + buf;
}

// The bucket end a Sid of ours names, or -1.
int64_t BucketOfSid(std::string_view sid) {
  if (!sid.starts_with(kSidPrefix) || sid.size() != kSidPrefix.size() + 12) {
    return -1;
  }
  const std::string_view digits = sid.substr(kSidPrefix.size());
  if (!std::all_of(digits.begin(), digits.end(), [](char c) { return c >= '0' && c <= '9'; })) {
    return -1;
  }
  auto num = [&](size_t at, size_t n) { return std::stoi(std::string(digits.substr(at, n))); };
  std::tm tm{};
  tm.tm_year = num(0, 4) - 1900;
  tm.tm_mon = num(4, 2) - 1;
  tm.tm_mday = num(6, 2);
  tm.tm_hour = num(8, 2);
  tm.tm_min = num(10, 2);
  const int64_t t = timegm(&tm);
  // Only the canonical form is ours: it must render back to itself.
  return t >= 0 && SidOf(t) == sid ? t : -1;
}

// The source identities of a statement the broker wrote, or false when the
// statement is not exactly of the broker's shape.
bool OursAndIds(const nlohmann::json& st, int64_t* bucket, std::set<std::string>* ids) {
  if (!st.is_object() || st.size() != 5 || !st.contains("Sid") || !st["Sid"].is_string()) {
    return false;
  }
  *bucket = BucketOfSid(st["Sid"].get_ref<const std::string&>());
  if (*bucket < 0 || st.value("Effect", "") != "Deny" || st.value("Action", "") != "*" ||
      st.value("Resource", "") != "*") {
    return false;
  }
  const auto cond = st.find("Condition");
  if (cond == st.end() || !cond->is_object() || cond->size() != 1 ||
      !cond->contains("StringEquals")) {
    return false;
  }
  const nlohmann::json& eq = (*cond)["StringEquals"];
  if (!eq.is_object() || eq.size() != 1 || !eq.contains(kConditionKey)) {
    return false;
  }
  const nlohmann::json& v = eq[std::string(kConditionKey)];
  if (v.is_string()) {
    ids->insert(v.get<std::string>());
    return true;
  }
  if (!v.is_array()) {
    return false;
  }
  for (const nlohmann::json& id : v) {
    if (!id.is_string()) {
      return false;
    }
  }
  for (const nlohmann::json& id : v) {
    ids->insert(id.get<std::string>());
  }
  return true;
}

}  // namespace

Result<DenyPolicy> DenyPolicy::Parse(std::string_view document) {
  auto invalid = [](const std::string& why) {
    return std::unexpected(
        FailedPrecondition("aws_revocation_policy_invalid",
                           "the role's " + std::string(kDenyPolicyName) +
                               " policy is not one the broker can extend: " + why +
                               " (delete it, or fix it by hand; docs/aws.md \"Revocation\")"));
  };
  if (document.size() > kMaxDocumentBytes) {
    return invalid("it is larger than 128 KiB");
  }
  nlohmann::json doc = nlohmann::json::parse(document, nullptr, /*allow_exceptions=*/false);
  if (!doc.is_object()) {
    return invalid("it is not a JSON object");
  }
  DenyPolicy out;
  const auto st = doc.find("Statement");
  if (st == doc.end()) {
    return out;
  }
  std::vector<nlohmann::json> statements;
  if (st->is_object()) {
    statements.push_back(*st);
  } else if (st->is_array()) {
    statements = st->get<std::vector<nlohmann::json>>();
  } else {
    return invalid("its Statement is neither an object nor an array");
  }
  for (nlohmann::json& s : statements) {
    int64_t bucket = 0;
    std::set<std::string> ids;
    if (OursAndIds(s, &bucket, &ids)) {
      out.buckets_[bucket].merge(ids);
    } else {
      out.foreign_.push_back(std::move(s));
    }
  }
  return out;
}

bool DenyPolicy::Contains(std::string_view source_identity) const {
  return std::any_of(buckets_.begin(), buckets_.end(), [&](const auto& b) {
    return b.second.find(std::string(source_identity)) != b.second.end();
  });
}

void DenyPolicy::Add(std::string_view source_identity, TimePoint credential_end) {
  const int64_t end = ToUnixSeconds(credential_end);
  const int64_t bucket =
      (end / kDenyBucketSeconds + (end % kDenyBucketSeconds != 0 ? 1 : 0)) * kDenyBucketSeconds;
  buckets_[bucket].insert(std::string(source_identity));
}

size_t DenyPolicy::Prune(TimePoint now) {
  const int64_t t = ToUnixSeconds(now);
  size_t removed = 0;
  for (auto it = buckets_.begin(); it != buckets_.end() && it->first <= t;) {
    removed += it->second.size();
    it = buckets_.erase(it);
  }
  return removed;
}

size_t DenyPolicy::Entries() const {
  size_t n = 0;
  for (const auto& [bucket, ids] : buckets_) {
    n += ids.size();
  }
  return n;
}

std::string DenyPolicy::Render() const {
  nlohmann::json statements = nlohmann::json::array();
  for (const nlohmann::json& s : foreign_) {
    statements.push_back(s);
  }
  for (const auto& [bucket, ids] : buckets_) {
    // nlohmann::json objects keep keys sorted: the output is deterministic.
    statements.push_back({{"Sid", SidOf(bucket)},
                          {"Effect", "Deny"},
                          {"Action", "*"},
                          {"Resource", "*"},
                          {"Condition", {{"StringEquals", {{kConditionKey, ids}}}}}});
  }
  return nlohmann::json{{"Version", "2012-10-17"}, {"Statement", std::move(statements)}}.dump();
}

}  // namespace jitbroker::issuers::aws_sts
