// Small helpers shared by the service's files (broker_service.cc,
// grants.cc, grant_pipeline.cc, revocation.cc, lifecycle_ops.cc,
// approvals.cc). Not part of the service's interface.
//
// Thread-safety: pure functions.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "jitbroker/error.h"
#include "jitbroker/store.h"

namespace jitbroker::service::internal {

// The longest TTL a client may ask for (sessions, grants): 30 days.
inline constexpr int64_t kMaxTtlSeconds = 30 * 24 * 3600;

// States in which a grant holds, or may still yield, a credential.
inline bool IsLiveGrantState(std::string_view state) {
  return state == "active" || state == "pending" || state == "approved" || state == "minting";
}

// Whether `e` says a StatePrecondition did not hold (include/jitbroker/
// store.h): another request or broker process changed the row first and
// nothing of the batch was written.
inline bool IsStateConflict(const Error& e) {
  return e.code == ErrorCode::kFailedPrecondition && e.Reason() == "state_conflict";
}

// The answer to a call on a session that has ended.
inline Error SessionEnded(const SessionRecord& s) {
  return FailedPrecondition("session_" + s.state,
                            "session " + s.id + " is " + s.state + "; it accepts no further calls");
}

}  // namespace jitbroker::service::internal
