// The states of grants and sessions, and the one table of the transitions
// between them (docs/architecture.md, "State machines").
//
// Records hold these enums; their names ("active", "revoked", …) are what
// the store, the audit records and the API carry. Every write of a grant or
// session names the state it moves from (WriteBatch::PutGrant/PutSession),
// and the Journal refuses a write that the table does not allow
// (kInternal "invalid_transition"): a bug then fails closed instead of
// reviving an ended session or re-minting a revoked grant.
//
// Thread-safety: pure functions over constant tables.
#pragma once

#include <cstdint>
#include <optional>
#include <string_view>

namespace jitbroker {

enum class GrantState : uint8_t {
  // Decided allowed and about to be minted; never stored (the first write of
  // an allowed grant is `minting` or, for issuers that do not mint upstream,
  // its outcome). Audit records of the decision show it.
  kAllowed,
  kPending,   // waits for a human approval
  kApproved,  // approved; minted when its agent collects it
  kMinting,   // write-ahead: an upstream mint may be in flight
  kActive,    // a credential was handed out and has not ended
  kRevoking,  // revocation failed upstream; queued for retry
  kDenied,
  kFailed,  // the issuer refused the mint
  kRevoked,
  kExpired,
};

enum class SessionState : uint8_t {
  kActive,
  kCompleted,
  kRevoked,
  kExpired,
  kStalled,
};

// Every session state, in the order above (for listings and messages).
inline constexpr SessionState kAllSessionStates[] = {
    SessionState::kActive, SessionState::kCompleted, SessionState::kRevoked, SessionState::kExpired,
    SessionState::kStalled};

// The name of a state as stored and shown ("minting", "stalled", …).
std::string_view StateName(GrantState s);
std::string_view StateName(SessionState s);
// The state of a name; nullopt for any other string (a corrupt row, a bad
// query parameter).
std::optional<GrantState> ParseGrantState(std::string_view name);
std::optional<SessionState> ParseSessionState(std::string_view name);

// A grant that holds, or may still yield, a credential: pending, approved,
// minting or active.
bool IsLive(GrantState s);
// No transition leaves it: denied, failed, revoked, expired.
bool IsFinal(GrantState s);

// The transition table. `from` is the stored state (nullopt: the record does
// not exist yet). Writing a record in its current state is not a transition
// and is always allowed (a heartbeat, an approval comment).
bool CanMove(std::optional<GrantState> from, GrantState to);
bool CanMove(std::optional<SessionState> from, SessionState to);

}  // namespace jitbroker
