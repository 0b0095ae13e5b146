// The typed fields of session and grant records that stores keep in their
// JSON `extra` object (include/jitbroker/store.h): one mapping of field to
// key for every store.
#include <optional>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "broker/common/time_util.h"
#include "jitbroker/store.h"

namespace jitbroker {
namespace {

using Json = nlohmann::json;

Error Corrupt(std::string_view record, std::string_view field) {
  return Internal("a stored record could not be read",
                  std::string(record) + " field " + std::string(field) + " is malformed");
}

// Moves `key` out of `stored` into `out` when present; false if it is not
// of the JSON type `out` is kept as (string, boolean or object).
template <typename T>
bool Take(Json& stored, const char* key, T& out) {
  auto it = stored.find(key);
  if (it == stored.end()) {
    return true;
  }
  if constexpr (std::is_same_v<T, std::string>) {
    if (!it->is_string()) {
      return false;
    }
  } else if constexpr (std::is_same_v<T, bool>) {
    if (!it->is_boolean()) {
      return false;
    }
  } else {
    static_assert(std::is_same_v<T, Json>);
    if (!it->is_object()) {
      return false;
    }
  }
  out = it->template get<T>();
  stored.erase(key);
  return true;
}

// An RFC 3339 string (approval_expires_at) or Unix seconds (upstream_expires_at).
bool TakeTime(Json& stored, const char* key, std::optional<TimePoint>& out) {
  auto it = stored.find(key);
  if (it == stored.end()) {
    return true;
  }
  if (it->is_number_integer()) {
    out = FromUnixSeconds(it->get<int64_t>());
  } else if (it->is_string()) {
    Result<TimePoint> t = ParseRfc3339(it->get_ref<const std::string&>());
    if (!t) {
      return false;
    }
    out = *t;
  } else {
    return false;
  }
  stored.erase(it);
  return true;
}

}  // namespace

Json ApprovalDecisionJson(const ApprovalDecision& d) {
  Json a = {{"decision", d.decision},
            {"approver", d.approver},
            {"decided_at", FormatRfc3339(d.decided_at)}};
  if (!d.comment.empty()) {
    a["comment"] = d.comment;
  }
  if (d.break_glass) {
    a["break_glass"] = true;
  }
  if (!d.via.empty()) {
    a["via"] = d.via;
  }
  if (!d.via_user.empty()) {
    a["via_user"] = d.via_user;
  }
  return a;
}

Json SessionExtraForStore(const SessionRecord& s) {
  Json out = s.extra.is_object() ? s.extra : Json::object();
  if (!s.ci.empty()) {
    out["ci"] = s.ci;
  }
  if (!s.budget.empty()) {
    out["budget"] = s.budget;
  }
  return out;
}

Status SessionExtraFromStore(Json stored, SessionRecord& s) {
  if (!stored.is_object()) {
    return std::unexpected(Corrupt("session", "extra"));
  }
  if (!Take(stored, "ci", s.ci)) {
    return std::unexpected(Corrupt("session", "ci"));
  }
  if (!Take(stored, "budget", s.budget)) {
    return std::unexpected(Corrupt("session", "budget"));
  }
  s.extra = std::move(stored);
  return {};
}

Json GrantExtraForStore(const GrantRecord& g) {
  Json out = g.extra.is_object() ? g.extra : Json::object();
  if (!g.justification.empty()) {
    out["justification"] = g.justification;
  }
  if (g.approval_expires_at) {
    out["approval_expires_at"] = FormatRfc3339(*g.approval_expires_at);
    out["four_eyes"] = g.four_eyes;
    out["approvers"] = g.approvers;
  }
  if (g.approval) {
    out["approval"] = ApprovalDecisionJson(*g.approval);
  }
  if (g.approval_expired) {
    out["approval_expired"] = true;
  }
  if (!g.delegation.empty()) {
    out["delegation"] = g.delegation;
  }
  if (!g.credential_audit.empty()) {
    out["credential_audit"] = g.credential_audit;
  }
  if (g.upstream_expires_at) {
    out["upstream_expires_at"] = ToUnixSeconds(*g.upstream_expires_at);
  }
  return out;
}

Status GrantExtraFromStore(Json stored, GrantRecord& g) {
  if (!stored.is_object()) {
    return std::unexpected(Corrupt("grant", "extra"));
  }
  auto bad = [](const char* field) -> Status { return std::unexpected(Corrupt("grant", field)); };
  if (!Take(stored, "justification", g.justification)) {
    return bad("justification");
  }
  if (!TakeTime(stored, "approval_expires_at", g.approval_expires_at)) {
    return bad("approval_expires_at");
  }
  if (!Take(stored, "four_eyes", g.four_eyes)) {
    return bad("four_eyes");
  }
  if (auto it = stored.find("approvers"); it != stored.end()) {
    if (!it->is_array()) {
      return bad("approvers");
    }
    for (const Json& a : *it) {
      if (!a.is_string()) {
        return bad("approvers");
      }
      g.approvers.push_back(a.get<std::string>());
    }
    stored.erase(it);
  }
  if (auto it = stored.find("approval"); it != stored.end()) {
    Json a = std::move(*it);
    stored.erase("approval");
    ApprovalDecision d;
    std::optional<TimePoint> decided_at;
    if (!a.is_object() || !Take(a, "decision", d.decision) || !Take(a, "approver", d.approver) ||
        !TakeTime(a, "decided_at", decided_at) || !decided_at || !Take(a, "comment", d.comment) ||
        !Take(a, "break_glass", d.break_glass) || !Take(a, "via", d.via) ||
        !Take(a, "via_user", d.via_user)) {
      return bad("approval");
    }
    d.decided_at = *decided_at;
    g.approval = std::move(d);
  }
  if (!Take(stored, "approval_expired", g.approval_expired)) {
    return bad("approval_expired");
  }
  if (!Take(stored, "delegation", g.delegation)) {
    return bad("delegation");
  }
  if (!Take(stored, "credential_audit", g.credential_audit)) {
    return bad("credential_audit");
  }
  if (!TakeTime(stored, "upstream_expires_at", g.upstream_expires_at)) {
    return bad("upstream_expires_at");
  }
  g.extra = std::move(stored);
  return {};
}

}  // namespace jitbroker
