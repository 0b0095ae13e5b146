// Grant and session states and their transition table
// (include/jitbroker/states.h; docs/architecture.md, "State machines").
#include "jitbroker/states.h"

#include <algorithm>
#include <string>

#include "jitbroker/store.h"

#include <array>
#include <optional>
#include <string_view>
#include <utility>

namespace jitbroker {
namespace {

constexpr std::array<std::pair<GrantState, std::string_view>, 10> kGrantNames{{
    {GrantState::kAllowed, "allowed"},
    {GrantState::kPending, "pending"},
    {GrantState::kApproved, "approved"},
    {GrantState::kMinting, "minting"},
    {GrantState::kActive, "active"},
    {GrantState::kRevoking, "revoking"},
    {GrantState::kDenied, "denied"},
    {GrantState::kFailed, "failed"},
    {GrantState::kRevoked, "revoked"},
    {GrantState::kExpired, "expired"},
}};

constexpr std::array<std::pair<SessionState, std::string_view>, 5> kSessionNames{{
    {SessionState::kActive, "active"},
    {SessionState::kCompleted, "completed"},
    {SessionState::kRevoked, "revoked"},
    {SessionState::kExpired, "expired"},
    {SessionState::kStalled, "stalled"},
}};

// The grant transitions. A new grant is stored pending (it needs an
// approval), denied, or — once allowed — minting (write-ahead before an
// upstream mint) or directly active or failed (issuers that do not mint
// upstream). `allowed` is never stored, so nothing moves to or from it.
struct GrantMove {
  std::optional<GrantState> from;
  GrantState to;
};
using G = GrantState;
constexpr std::array<GrantMove, 23> kGrantMoves{{
    {std::nullopt, G::kPending},
    {std::nullopt, G::kDenied},
    {std::nullopt, G::kMinting},
    {std::nullopt, G::kActive},
    {std::nullopt, G::kFailed},
    // An approver decides; the window passes; the session ends first.
    {G::kPending, G::kApproved},
    {G::kPending, G::kDenied},
    {G::kPending, G::kExpired},
    {G::kPending, G::kRevoked},
    // Collected by its agent (minted, or denied when the policy, the
    // delegating human's rights or the sealed request no longer allow it);
    // not collected in time; its session ends first.
    {G::kApproved, G::kMinting},
    {G::kApproved, G::kActive},
    {G::kApproved, G::kFailed},
    {G::kApproved, G::kDenied},
    {G::kApproved, G::kExpired},
    {G::kApproved, G::kRevoked},
    // After the write-ahead: minted, refused, or found at start-up
    // (reconcile) or revoked with its session before the outcome.
    {G::kMinting, G::kActive},
    {G::kMinting, G::kFailed},
    {G::kMinting, G::kRevoked},
    // A live credential is revoked (or queued when the upstream fails) or
    // expires; a queued revocation succeeds or outlives the credential.
    {G::kActive, G::kRevoking},
    {G::kActive, G::kRevoked},
    {G::kActive, G::kExpired},
    {G::kRevoking, G::kRevoked},
    {G::kRevoking, G::kExpired},
}};

}  // namespace

std::string_view StateName(GrantState s) {
  for (const auto& [state, name] : kGrantNames) {
    if (state == s) {
      return name;
    }
  }
  return "unknown";
}

std::string_view StateName(SessionState s) {
  for (const auto& [state, name] : kSessionNames) {
    if (state == s) {
      return name;
    }
  }
  return "unknown";
}

std::optional<GrantState> ParseGrantState(std::string_view name) {
  for (const auto& [state, n] : kGrantNames) {
    if (n == name) {
      return state;
    }
  }
  return std::nullopt;
}

std::optional<SessionState> ParseSessionState(std::string_view name) {
  for (const auto& [state, n] : kSessionNames) {
    if (n == name) {
      return state;
    }
  }
  return std::nullopt;
}

bool IsLive(GrantState s) {
  return s == G::kPending || s == G::kApproved || s == G::kMinting || s == G::kActive;
}

bool IsFinal(GrantState s) {
  return s == G::kDenied || s == G::kFailed || s == G::kRevoked || s == G::kExpired;
}

bool CanMove(std::optional<GrantState> from, GrantState to) {
  if (to == G::kAllowed || from == G::kAllowed) {
    return false;  // never stored
  }
  if (from == to) {
    return true;  // a write of other fields, not a transition
  }
  for (const GrantMove& m : kGrantMoves) {
    if (m.from == from && m.to == to) {
      return true;
    }
  }
  return false;
}

bool CanMove(std::optional<SessionState> from, SessionState to) {
  if (from == to) {
    return true;
  }
  // A session opens active and ends once, in one of the final states.
  if (!from) {
    return to == SessionState::kActive;
  }
  return *from == SessionState::kActive;
}

namespace {

// Finds the precondition on (record, id); nullptr when there is none.
const StatePrecondition* PreconditionOf(const WriteBatch& b, StatePrecondition::Record record,
                                        const std::string& id) {
  auto it =
      std::find_if(b.preconditions.begin(), b.preconditions.end(),
                   [&](const StatePrecondition& p) { return p.record == record && p.id == id; });
  return it == b.preconditions.end() ? nullptr : &*it;
}

Error InvalidTransition(std::string_view record, const std::string& id, std::string_view from,
                        std::string_view to) {
  Error e = Internal("a state change was refused",
                     std::string(record) + " " + id + ": " +
                         (from.empty() ? std::string("(new)") : std::string(from)) + " -> " +
                         std::string(to) + " is not in the transition table");
  e.reason = "invalid_transition";
  return e;
}

template <typename State, typename Parse>
Status CheckOne(const WriteBatch& b, StatePrecondition::Record record, std::string_view what,
                const std::string& id, State to, Parse parse) {
  const StatePrecondition* p = PreconditionOf(b, record, id);
  if (p == nullptr) {
    Error e = InvalidTransition(what, id, "(unknown)", StateName(to));
    e.detail = std::string(what) + " " + id + " is written without the state it moves from";
    return std::unexpected(std::move(e));
  }
  std::optional<State> from;
  if (!p->state.empty()) {
    from = parse(p->state);
    if (!from) {
      return std::unexpected(InvalidTransition(what, id, p->state, StateName(to)));
    }
  }
  if (!CanMove(from, to)) {
    return std::unexpected(InvalidTransition(what, id, p->state, StateName(to)));
  }
  return {};
}

}  // namespace

Status WriteBatch::CheckTransitions() const {
  for (const SessionRecord& s : sessions) {
    JITBROKER_RETURN_IF_ERROR(CheckOne(*this, StatePrecondition::Record::kSession, "session", s.id,
                                       s.state, ParseSessionState));
  }
  for (const GrantRecord& g : grants) {
    JITBROKER_RETURN_IF_ERROR(CheckOne(*this, StatePrecondition::Record::kGrant, "grant", g.id,
                                       g.state, ParseGrantState));
  }
  return {};
}

}  // namespace jitbroker
