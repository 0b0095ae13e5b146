// Invocation-bound approvals (issue #3): approvers see the full context of a
// pending grant and decide on the exact request, identified by its digest.
#include <algorithm>
#include <charconv>
#include <map>
#include <set>
#include <string_view>
#include <vector>

#include "broker/audit/events.h"
#include "broker/audit/redact.h"
#include "broker/common/log.h"
#include "broker/common/time_util.h"
#include "broker/crypto/crypto.h"
#include "broker/service/broker_service.h"

namespace jitbroker::service {

namespace {

constexpr std::string_view kApprovalPrefix = "apr_";

std::string GrantIdOf(const std::string& approval_id) {
  if (!approval_id.starts_with(kApprovalPrefix)) {
    return {};
  }
  return "grt_" + approval_id.substr(kApprovalPrefix.size());
}

// Who may decide approvals of `tier`: admins, and the roles the tier names
// ("role:NAME"); if it names none, principals with the approver role.
bool CanApproveTier(const authn::Caller& c, const Policy& policy, Tier tier) {
  if (c.IsSession() || c.principal == nullptr) {
    return false;
  }
  const TierPolicy& tp = policy.ForTier(tier);
  if (c.is_admin) {
    return true;
  }
  if (tp.approvers.empty()) {
    return c.is_approver;
  }
  for (const auto& a : tp.approvers) {
    if (a.starts_with("role:") && policy.HasRole(*c.principal, a.substr(5))) {
      return true;
    }
  }
  return false;
}

bool CanApprove(const authn::Caller& c, const Policy& policy, const GrantRecord& g) {
  auto tier = ParseTier(g.tier);
  return tier && CanApproveTier(c, policy, *tier);
}

// Four-eyes (docs/configuration.md, policy.tiers): the delegating principal
// never decides their own agent's request, admins included, unless the tier
// sets `self_approval: break_glass` and the caller is an admin.
bool MaySelfApprove(const authn::Caller& c, const Policy& policy, Tier tier) {
  return c.is_admin && policy.ForTier(tier).break_glass_self_approval;
}

// Opaque page cursor: base64url of "v1|<order>|<created_at s>|<ns>|<grant id>".
std::string EncodeCursor(bool newest_first, const GrantRecord& g) {
  const auto ns =
      std::chrono::duration_cast<std::chrono::nanoseconds>(g.created_at.time_since_epoch()).count();
  const int64_t sec = ns >= 0 ? ns / 1'000'000'000 : (ns - 999'999'999) / 1'000'000'000;
  const int64_t rem = ns - sec * 1'000'000'000;
  return crypto::Base64UrlEncode(std::string("v1|") + (newest_first ? "n" : "o") + "|" +
                                 std::to_string(sec) + "|" + std::to_string(rem) + "|" + g.id);
}

Result<ApprovalPosition> DecodeCursor(std::string_view cursor, bool newest_first) {
  const Error bad =
      InvalidArgument("invalid_cursor",
                      "cursor is not a next_cursor of this listing (order and filters unchanged)");
  if (cursor.size() > 256) {
    return std::unexpected(bad);
  }
  auto text = crypto::Base64UrlDecode(cursor);
  if (!text) {
    return std::unexpected(bad);
  }
  std::vector<std::string_view> parts;
  std::string_view rest = *text;
  for (size_t bar; (bar = rest.find('|')) != std::string_view::npos;) {
    parts.push_back(rest.substr(0, bar));
    rest.remove_prefix(bar + 1);
  }
  parts.push_back(rest);
  auto integer = [](std::string_view v, int64_t min, int64_t max) -> std::optional<int64_t> {
    int64_t out = 0;
    auto [ptr, ec] = std::from_chars(v.data(), v.data() + v.size(), out);
    if (v.empty() || ec != std::errc() || ptr != v.data() + v.size() || out < min || out > max) {
      return std::nullopt;
    }
    return out;
  };
  if (parts.size() != 5 || parts[0] != "v1" || parts[1] != (newest_first ? "n" : "o") ||
      !parts[4].starts_with("grt_") || parts[4].size() > 64) {
    return std::unexpected(bad);
  }
  const auto sec = integer(parts[2], 0, int64_t{1} << 40);
  const auto ns = integer(parts[3], 0, 999'999'999);
  if (!sec || !ns) {
    return std::unexpected(bad);
  }
  ApprovalPosition pos;
  pos.created_at = TimePoint(std::chrono::duration_cast<TimePoint::duration>(
      std::chrono::seconds(*sec) + std::chrono::nanoseconds(*ns)));
  pos.grant_id = std::string(parts[4]);
  return pos;
}

// Ids given as filters: printable, bounded (they only ever select).
Status CheckFilterId(const std::string& value, const char* name) {
  if (value.size() > 256 || std::any_of(value.begin(), value.end(), [](char ch) {
        const auto u = static_cast<unsigned char>(ch);
        return u < 0x21 || u == 0x7f;
      })) {
    return std::unexpected(InvalidArgument(
        "invalid_query", std::string(name) + " must be at most 256 visible characters"));
  }
  return OkStatus();
}

}  // namespace

std::string ApprovalState(const GrantRecord& g) {
  if (g.state == GrantState::kPending) {
    return "pending";
  }
  if (g.approval) {
    return g.approval->decision;
  }
  if (g.state == GrantState::kExpired && g.approval_expired) {
    return "expired";
  }
  return std::string(StateName(g.state));  // e.g. revoked with its session before anyone decided
}

namespace {

// The view of `g`: its session (if it still exists) and its tier's approval
// rules under `policy`.
ApprovalView ViewOf(GrantRecord g, std::optional<SessionRecord> s, const Policy& policy) {
  ApprovalView v{std::move(g), std::move(s), std::nullopt};
  if (auto tier = ParseTier(v.grant.tier)) {
    const TierPolicy& tp = policy.ForTier(*tier);
    v.rules = ApprovalRules{.four_eyes = tp.four_eyes,
                            .break_glass_self_approval = tp.break_glass_self_approval,
                            .approvers = tp.approvers};
  }
  return v;
}

}  // namespace

Result<ApprovalPage> BrokerService::ListApprovals(const CallContext& ctx,
                                                  const ApprovalListFilter& f) {
  const authn::Caller& c = ctx.caller;
  if (c.IsSession()) {
    return std::unexpected(
        PermissionDenied("principal_required", "approvals are listed with a principal's API key"));
  }
  if (!f.state.empty() && f.state != "pending") {
    return std::unexpected(InvalidArgument("invalid_query", "state must be \"pending\""));
  }
  if (!f.order.empty() && f.order != "oldest" && f.order != "newest") {
    return std::unexpected(
        InvalidArgument("invalid_query", "order must be \"oldest\" or \"newest\""));
  }
  const int64_t limit = f.limit.value_or(kDefaultApprovalPage);
  if (limit < 1 || limit > kMaxApprovalPage) {
    return std::unexpected(InvalidArgument(
        "invalid_query",
        "limit must be an integer in [1, " + std::to_string(kMaxApprovalPage) + "]"));
  }
  JITBROKER_RETURN_IF_ERROR(CheckFilterId(f.session_id, "session_id"));
  JITBROKER_RETURN_IF_ERROR(CheckFilterId(f.principal, "principal"));
  std::optional<Tier> only_tier;
  if (!f.tier.empty()) {
    only_tier = ParseTier(f.tier);
    if (!only_tier) {
      return std::unexpected(InvalidArgument("invalid_query", "tier must be a tier name"));
    }
  }
  PendingApprovalQuery q;
  q.newest_first = f.order == "newest";
  if (!f.cursor.empty()) {
    JITBROKER_ASSIGN_OR_RETURN(q.after, DecodeCursor(f.cursor, q.newest_first));
  }
  // Visibility is part of the query: only tiers the caller may approve, and
  // never the caller's own agents' requests (four-eyes) unless break-glass
  // lets this caller approve them. So every page is full of approvals the
  // caller can act on, and no flood of others can push one off the pages.
  const Policy& policy = *c.policy;
  for (Tier t : kAllTiers) {
    if ((only_tier && t != *only_tier) || !CanApproveTier(c, policy, t)) {
      continue;
    }
    q.tiers.emplace_back(TierName(t));
    if (!MaySelfApprove(c, policy, t)) {
      q.exclude_principal_tiers.emplace_back(TierName(t));
    }
  }
  q.exclude_principal_id = c.principal_id;
  q.now = clock_->Now();
  q.session_id = f.session_id;
  q.principal_id = f.principal;
  q.limit = static_cast<size_t>(limit) + 1;  // one more tells whether a next page exists
  JITBROKER_ASSIGN_OR_RETURN(auto pending, store_->ListPendingApprovals(q));
  ApprovalPage page;
  if (pending.size() > static_cast<size_t>(limit)) {
    pending.resize(static_cast<size_t>(limit));
    page.next_cursor = EncodeCursor(q.newest_first, pending.back());
  }
  std::map<std::string, std::optional<SessionRecord>> sessions;  // one read per session
  for (auto& g : pending) {
    auto it = sessions.find(g.session_id);
    if (it == sessions.end()) {
      JITBROKER_ASSIGN_OR_RETURN(auto s, store_->GetSession(g.session_id));
      it = sessions.emplace(g.session_id, std::move(s)).first;
    }
    page.approvals.push_back(ViewOf(std::move(g), it->second, policy));
  }
  return page;
}

Result<ApprovalView> BrokerService::GetApproval(const CallContext& ctx, const std::string& id) {
  const authn::Caller& c = ctx.caller;
  const std::string gid = GrantIdOf(id);
  if (c.IsSession()) {
    return std::unexpected(
        PermissionDenied("principal_required", "approvals are read with a principal's API key"));
  }
  JITBROKER_ASSIGN_OR_RETURN(auto g, gid.empty() ? Result<std::optional<GrantRecord>>(std::nullopt)
                                                 : store_->GetGrant(gid));
  if (!g || g->approval_id != id ||
      !(CanApprove(c, *c.policy, *g) || c.is_admin || g->principal_id == c.principal_id)) {
    return std::unexpected(NotFound("approval_not_found", "no approval " + id));
  }
  JITBROKER_ASSIGN_OR_RETURN(auto s, store_->GetSession(g->session_id));
  return ViewOf(std::move(*g), std::move(s), *c.policy);
}

Result<ApprovalView> BrokerService::DecideApproval(const CallContext& ctx, const std::string& id,
                                                   ApprovalDecisionInput in) {
  JITBROKER_RETURN_IF_ERROR(CheckCaller(ctx, BodyCall::kDecideApproval));
  const authn::Caller& c = ctx.caller;
  const std::string decision = in.approve ? "approve" : "deny";
  const std::string& digest = in.request_digest;
  std::optional<std::string> comment = std::move(in.comment);
  if (comment) {
    // The comment reaches the agent, the audit trail and other approvers: a
    // credential pasted into it is redacted like any other free text
    // (docs/api.md, "Redaction").
    *comment = audit::RedactText(*comment);
  }

  const std::string gid = GrantIdOf(id);
  JITBROKER_ASSIGN_OR_RETURN(auto found, gid.empty()
                                             ? Result<std::optional<GrantRecord>>(std::nullopt)
                                             : store_->GetGrant(gid));
  if (!found || found->approval_id != id) {
    return std::unexpected(NotFound("approval_not_found", "no approval " + id));
  }
  std::shared_ptr<const Policy> policy = c.policy;
  if (!CanApprove(c, *policy, *found)) {
    return std::unexpected(PermissionDenied(
        "not_an_approver", "approving tier " + found->tier + " needs a role the tier names"));
  }

  std::unique_lock lock(LockFor(found->session_id));
  JITBROKER_ASSIGN_OR_RETURN(auto fresh, store_->GetGrant(gid));
  JITBROKER_ASSIGN_OR_RETURN(auto session, store_->GetSession(found->session_id));
  if (!fresh || !session) {
    return std::unexpected(NotFound("approval_not_found", "no approval " + id));
  }
  GrantRecord g = std::move(*fresh);
  const TimePoint now = clock_->Now();
  if (session->state != SessionState::kActive) {
    const std::string state(StateName(session->state));
    return std::unexpected(
        FailedPrecondition("session_" + state,
                           "session " + session->id + " is " + state + "; its approvals are void"));
  }
  if (g.state != GrantState::kPending) {
    return std::unexpected(FailedPrecondition(
        "approval_not_pending",
        "approval " + id + " is " + ApprovalState(g) + "; an approval is decided once"));
  }
  if (g.expires_at && *g.expires_at <= now) {
    lock.unlock();
    // Record the expiry (a denial) in the audit trail before answering.
    JITBROKER_RETURN_IF_ERROR(ExpireApproval(g.id, ctx.request_id));
    return std::unexpected(
        FailedPrecondition("approval_expired", "approval " + id + " expired; request it again"));
  }
  const std::optional<Tier> tier = ParseTier(g.tier);
  const bool self = c.principal_id == g.principal_id;
  const bool break_glass = self && tier && MaySelfApprove(c, *policy, *tier);
  if (self && !break_glass) {
    return std::unexpected(PermissionDenied(
        "four_eyes",
        "four-eyes: the delegating principal cannot decide their own agent's request"));
  }
  if (!crypto::ConstantTimeEquals(digest, g.request_digest)) {
    return std::unexpected(FailedPrecondition(
        "digest_mismatch",
        "request_digest does not match the pending request; re-read the approval"));
  }

  ApprovalDecision decided{.decision = decision == "approve" ? "approved" : "denied",
                           .approver = c.principal_id,
                           .decided_at = std::chrono::floor<std::chrono::seconds>(now),
                           .comment = comment.value_or(""),
                           // in the approval.decided and credential.minted records
                           .break_glass = break_glass && decision == "approve",
                           .via = ctx.via,
                           .via_user = ctx.via_user};
  g.approval = decided;
  if (decision == "approve") {
    g.state = GrantState::kApproved;
    g.decision["result"] = "allow";
    g.decision["code"] = "approved";
    g.decision["reason"] = "approved by " + c.principal_id +
                           (comment && !comment->empty() ? ": " + *comment : std::string());
  } else {
    g.state = GrantState::kDenied;
    g.sealed_request.clear();  // kept only while the grant may still be minted
    g.decision["result"] = "deny";
    g.decision["code"] = "approval_denied";
    g.decision["reason"] = "denied by " + c.principal_id +
                           (comment && !comment->empty() ? ": " + *comment : std::string());
  }
  WriteBatch batch;
  batch.audit_events.push_back(
      audit::GrantEvent("approval.decided", g, now, decided.decision, ctx.request_id));
  batch.PutGrant(g, GrantState::kPending);  // decided once, by one approver
  JITBROKER_RETURN_IF_ERROR(Commit(ctx, std::move(batch)));
  NotifyGrantChanged();
  log::Get("lifecycle")
      ->info("event=approval_decided approval_id={} decision={} approver={} request_id={}", id,
             decided.decision, c.principal_id, ctx.request_id);
  if (break_glass && decision == "approve") {
    log::Get("lifecycle")
        ->warn("event=break_glass_self_approval approval_id={} approver={} tier={} request_id={}",
               id, c.principal_id, g.tier, ctx.request_id);
  }
  return ViewOf(std::move(g), std::move(session), *policy);
}

}  // namespace jitbroker::service
