// Small helpers shared by the service's files (broker_service.cc,
// grants.cc, grant_pipeline.cc, revoker.cc, lifecycle_ops.cc,
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

// Whether `e` says a StatePrecondition did not hold (include/jitbroker/
// store.h): another request or broker process changed the row first and
// nothing of the batch was written.
inline bool IsStateConflict(const Error& e) {
  return e.code == ErrorCode::kFailedPrecondition && e.Reason() == "state_conflict";
}

// The answer to a call on a session that has ended.
inline Error SessionEnded(const SessionRecord& s) {
  const std::string state(StateName(s.state));
  return FailedPrecondition("session_" + state,
                            "session " + s.id + " is " + state + "; it accepts no further calls");
}

// A grant the broker's proxy holds (CallContext::via_proxy): its credential
// is the proxy's alone.
inline bool HeldByProxy(const GrantRecord& g) {
  auto it = g.extra.find("held_by");
  return it != g.extra.end() && it->is_string() && it->get_ref<const std::string&>() == "proxy";
}

}  // namespace jitbroker::service::internal
