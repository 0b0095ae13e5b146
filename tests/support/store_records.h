// Builders of store records for tests: sessions and grants with every field
// set to a distinctive value, audit events as the broker writes them, and
// Apply as the Journal calls it. Used by the store conformance suite
// (tests/conformance/store_conformance.h) and the store-specific tests.
//
// Thread-safety: pure functions, except ApplyWithAudit/ApplyOne, which call
// the store (and REQUIRE, so only on a doctest thread).
#pragma once

#include <cstdint>
#include <string>

#include <nlohmann/json.hpp>

#include "jitbroker/clock.h"
#include "jitbroker/result.h"
#include "jitbroker/store.h"

namespace jitbroker::testing {

TimePoint At(int64_t seconds, int64_t nanos = 0);

// A session / grant with every field set to a distinctive value.
SessionRecord FullSession(const std::string& id);
GrantRecord FullGrant(const std::string& id, const std::string& session_id, TimePoint created);

void CheckSessionEq(const SessionRecord& a, const SessionRecord& b);
void CheckGrantEq(const GrantRecord& a, const GrantRecord& b);

// An audit event as the broker writes them: event, human_principal,
// timestamp, and agent.session_id when `session` is not empty.
nlohmann::json AuditEvent(const std::string& session, const std::string& principal,
                          const std::string& timestamp);

// Chains batch.audit_events after the store's head of the default chain and
// applies them with `batch`, as the Journal would.
[[nodiscard]] Status ApplyWithAudit(Store& store, WriteBatch batch);

// Applies one batch without audit records.
[[nodiscard]] Status ApplyOne(Store& store, const WriteBatch& batch);

}  // namespace jitbroker::testing
