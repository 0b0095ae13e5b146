// What the stores in broker/store/ share. Mostly: how every store writes the parts of a session or
// grant that have no column of their own: one JSON text per row (`data`), built and read here so
// that SQLite and PostgreSQL rows hold the same bytes.
//
//   session data: {"extra":…,"scope":…}
//   grant data:   {"decision":…,"extra":…,"parameters":…,"scope":…
//                  [,"sealed_request":"…"]}
// Keys in canonical (sorted) order; `extra` is SessionExtraForStore /
// GrantExtraForStore (include/jitbroker/store.h).
//
// Thread-safety: pure functions.
#pragma once

#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

#include "jitbroker/error.h"
#include "jitbroker/result.h"
#include "jitbroker/states.h"
#include "jitbroker/store.h"

namespace jitbroker::store {

// Canonical JSON text; never throws on invalid UTF-8 (replaced).
std::string DumpJson(const nlohmann::json& j);

// A stored row that cannot be read back: kInternal naming the table.
Error CorruptRow(std::string_view table, std::string_view what);

// May throw nlohmann's exceptions only for values it cannot encode (callers
// turn them into store_unavailable).
std::string SessionDataText(const SessionRecord& s);
std::string GrantDataText(const GrantRecord& g);

// Fill the fields SessionDataText / GrantDataText wrote. Errors: CorruptRow.
[[nodiscard]] Status SessionDataFromText(std::string_view text, SessionRecord& s);
[[nodiscard]] Status GrantDataFromText(std::string_view text, GrantRecord& g);

// The typed columns of a session and of a grant, in the one order every
// store's table and statements use (the `data` text last). `Row` reads the
// next column of a result: Text(), OptText(), Int(), OptInt(), Time(),
// OptTime() (a store keeps a time in one column or two, as it likes).
// `Binder` binds the next parameter with the same names. Errors of the
// readers: CorruptRow (an unknown state, a bad `data`).
template <class Row>
Result<SessionRecord> ReadSessionRow(Row& r) {
  SessionRecord rec;
  rec.id = r.Text();
  rec.token_sha256 = r.Text();
  rec.principal_id = r.Text();
  rec.agent_id = r.Text();
  rec.task_id = r.Text();
  rec.task_description = r.Text();
  const std::string state = r.Text();
  if (auto parsed = ParseSessionState(state)) {
    rec.state = *parsed;
  } else {
    return std::unexpected(CorruptRow("sessions", "unknown state '" + state + "'"));
  }
  rec.created_at = r.Time();
  rec.expires_at = r.Time();
  rec.heartbeat_seconds = r.Int();
  rec.heartbeat_deadline = r.Time();
  rec.ended_at = r.OptTime();
  rec.end_reason = r.Text();
  rec.last_progress = r.Text();
  JITBROKER_RETURN_IF_ERROR(SessionDataFromText(r.Text(), rec));
  return rec;
}

template <class Row>
Result<GrantRecord> ReadGrantRow(Row& r) {
  GrantRecord rec;
  rec.id = r.Text();
  rec.session_id = r.Text();
  rec.principal_id = r.Text();
  rec.agent_id = r.Text();
  rec.task_id = r.Text();
  rec.tool = r.Text();
  rec.operation = r.Text();
  rec.resource = r.Text();
  rec.issuer = r.Text();
  rec.requested_ttl_seconds = r.OptInt();
  rec.ttl_seconds = r.Int();
  rec.tier = r.Text();
  const std::string state = r.Text();
  if (auto parsed = ParseGrantState(state); parsed && *parsed != GrantState::kAllowed) {
    rec.state = *parsed;
  } else {
    return std::unexpected(CorruptRow("grants", "unknown state '" + state + "'"));
  }
  rec.revocability = r.Text();
  rec.credential_type = r.Text();
  rec.credential_sha256 = r.Text();
  rec.request_digest = r.Text();
  rec.approval_id = r.Text();
  rec.sealed_handle = r.Text();
  rec.created_at = r.Time();
  rec.expires_at = r.OptTime();
  rec.revoked_at = r.OptTime();
  rec.revoke_outcome = r.Text();
  JITBROKER_RETURN_IF_ERROR(GrantDataFromText(r.Text(), rec));
  return rec;
}

template <class Binder>
void BindSessionRow(Binder& b, const SessionRecord& rec, const std::string& data) {
  b.Text(rec.id)
      .Text(rec.token_sha256)
      .Text(rec.principal_id)
      .Text(rec.agent_id)
      .Text(rec.task_id)
      .Text(rec.task_description)
      .Text(StateName(rec.state))
      .Time(rec.created_at)
      .Time(rec.expires_at)
      .Int(rec.heartbeat_seconds)
      .Time(rec.heartbeat_deadline)
      .OptTime(rec.ended_at)
      .Text(rec.end_reason)
      .Text(rec.last_progress)
      .Text(data);
}

template <class Binder>
void BindGrantRow(Binder& b, const GrantRecord& rec, const std::string& data) {
  b.Text(rec.id)
      .Text(rec.session_id)
      .Text(rec.principal_id)
      .Text(rec.agent_id)
      .Text(rec.task_id)
      .Text(rec.tool)
      .Text(rec.operation)
      .Text(rec.resource)
      .Text(rec.issuer)
      .OptInt(rec.requested_ttl_seconds)
      .Int(rec.ttl_seconds)
      .Text(rec.tier)
      .Text(StateName(rec.state))
      .Text(rec.revocability)
      .Text(rec.credential_type)
      .Text(rec.credential_sha256)
      .Text(rec.request_digest)
      .Text(rec.approval_id)
      .Text(rec.sealed_handle)
      .Time(rec.created_at)
      .OptTime(rec.expires_at)
      .OptTime(rec.revoked_at)
      .Text(rec.revoke_outcome)
      .Text(data);
}

// A random name for one store handle (16 hex digits): the owner of its
// leases (Store::TryLease), and the sender id of its change notifications.
std::string NewHandleId();

}  // namespace jitbroker::store
