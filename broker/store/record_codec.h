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

// A random name for one store handle (16 hex digits): the owner of its
// leases (Store::TryLease), and the sender id of its change notifications.
std::string NewHandleId();

}  // namespace jitbroker::store
