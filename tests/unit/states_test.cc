// Grant and session states: their names, the transition table
// (include/jitbroker/states.h; docs/architecture.md, "State machines"), and
// the Journal refusing a write the table does not allow, so a bug cannot
// revive an ended session or re-mint a revoked grant.
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include <doctest/doctest.h>

#include "broker/audit/journal.h"
#include "broker/config/config.h"
#include "broker/store/open.h"
#include "jitbroker/error.h"
#include "jitbroker/states.h"
#include "jitbroker/store.h"
#include "tests/support/states_doctest.h"
#include "tests/support/store_records.h"
#include "tests/support/temp_dir.h"

namespace jitbroker {
namespace {

using G = GrantState;
using S = SessionState;
using testing::At;
using testing::FullGrant;
using testing::FullSession;

const std::vector<G> kAllGrant = {G::kAllowed, G::kPending,  G::kApproved, G::kMinting,
                                  G::kActive,  G::kRevoking, G::kDenied,   G::kFailed,
                                  G::kRevoked, G::kExpired};
const std::vector<S> kAllSession = {S::kActive, S::kCompleted, S::kRevoked, S::kExpired,
                                    S::kStalled};

TEST_CASE("States: every state has one name and parses back from it") {
  for (G g : kAllGrant) {
    CHECK(ParseGrantState(StateName(g)) == g);
  }
  for (S s : kAllSession) {
    CHECK(ParseSessionState(StateName(s)) == s);
  }
  CHECK(StateName(G::kMinting) == "minting");
  CHECK(StateName(S::kStalled) == "stalled");
  for (const char* bad : {"", "Active", "active ", "approve", "unknown"}) {
    CHECK_FALSE(ParseGrantState(bad).has_value());
    CHECK_FALSE(ParseSessionState(bad).has_value());
  }
}

TEST_CASE("States: the grant table allows the lifecycle and nothing that goes back") {
  // The lifecycle of docs/architecture.md, "State machines".
  CHECK(CanMove(std::nullopt, G::kPending));
  CHECK(CanMove(std::nullopt, G::kDenied));
  CHECK(CanMove(std::nullopt, G::kMinting));
  CHECK(CanMove(std::nullopt, G::kActive));
  CHECK(CanMove(G::kPending, G::kApproved));
  CHECK(CanMove(G::kApproved, G::kMinting));
  CHECK(CanMove(G::kApproved, G::kDenied));  // refused at collection
  CHECK(CanMove(G::kMinting, G::kActive));
  CHECK(CanMove(G::kMinting, G::kRevoked));  // reconciled at start
  CHECK(CanMove(G::kActive, G::kRevoking));
  CHECK(CanMove(G::kRevoking, G::kRevoked));
  CHECK(CanMove(G::kRevoking, G::kExpired));

  // A new grant is never born approved, active-by-approval or revoked.
  CHECK_FALSE(CanMove(std::nullopt, G::kApproved));
  CHECK_FALSE(CanMove(std::nullopt, G::kRevoked));
  CHECK_FALSE(CanMove(std::nullopt, G::kRevoking));
  // `allowed` is never stored.
  for (G g : kAllGrant) {
    CHECK_FALSE(CanMove(g, G::kAllowed));
    CHECK_FALSE(CanMove(G::kAllowed, g));
  }
  CHECK_FALSE(CanMove(std::nullopt, G::kAllowed));
  // Final states are final: no way back to a live state.
  for (G from : {G::kDenied, G::kFailed, G::kRevoked, G::kExpired}) {
    CHECK(IsFinal(from));
    CHECK_FALSE(IsLive(from));
    for (G to : kAllGrant) {
      CHECK_MESSAGE(CanMove(from, to) == (from == to), StateName(from), " -> ", StateName(to));
    }
  }
  // Skipping the approval or going back to it.
  CHECK_FALSE(CanMove(G::kPending, G::kActive));
  CHECK_FALSE(CanMove(G::kPending, G::kMinting));
  CHECK_FALSE(CanMove(G::kActive, G::kPending));
  CHECK_FALSE(CanMove(G::kActive, G::kMinting));
  CHECK_FALSE(CanMove(G::kRevoking, G::kActive));
  // A write of other fields is not a transition.
  for (G g : kAllGrant) {
    CHECK(CanMove(g, g) == (g != G::kAllowed));
  }
}

TEST_CASE("States: a session opens active and ends once") {
  CHECK(CanMove(std::nullopt, S::kActive));
  for (S to : {S::kCompleted, S::kRevoked, S::kExpired, S::kStalled}) {
    CHECK_FALSE(CanMove(std::nullopt, to));
    CHECK(CanMove(S::kActive, to));
    CHECK_FALSE(CanMove(to, S::kActive));  // never revived
    for (S other : kAllSession) {
      CHECK(CanMove(to, other) == (to == other));
    }
  }
}

// A journal over SQLite holding session ses_1 (active) and grant grt_1
// (revoked), written straight to the store as an earlier run left them.
struct JournalOnSqlite {
  JournalOnSqlite() {
    config::StoreConfig c;
    c.backend = config::SqliteStoreConfig{dir.File("broker.db")};
    auto s = store::Open(c);
    REQUIRE_MESSAGE(s.has_value(), (s ? "" : s.error().ToString()));
    store = std::move(*s);
    WriteBatch seed;
    seed.sessions.push_back(FullSession("ses_1"));
    GrantRecord g = FullGrant("grt_1", "ses_1", At(1'767'225'600));
    g.state = G::kRevoked;
    g.revoke_outcome = "revoked";
    seed.grants.push_back(g);
    REQUIRE(testing::ApplyOne(*store, seed));
    auto j = audit::Journal::Create(store.get(), dir.File("audit.jsonl"));
    REQUIRE_MESSAGE(j.has_value(), (j ? "" : j.error().ToString()));
    journal = std::move(*j);
  }
  ~JournalOnSqlite() { journal->Stop(); }

  GrantRecord Grant() { return store->GetGrant("grt_1").value().value(); }
  SessionRecord Session() { return store->GetSession("ses_1").value().value(); }

  testing::TempDir dir;
  std::unique_ptr<Store> store;
  std::unique_ptr<audit::Journal> journal;
};

void CheckInvalidTransition(const Status& st) {
  REQUIRE_FALSE(st.has_value());
  CHECK(st.error().code == ErrorCode::kInternal);
  CHECK(st.error().Reason() == "invalid_transition");
}

TEST_CASE("Journal: a revoked grant cannot be made active again, even from its true state") {
  JournalOnSqlite f;
  GrantRecord g = f.Grant();
  g.state = G::kActive;
  g.credential_sha256 = std::string(64, 'a');
  WriteBatch b;
  b.PutGrant(g, G::kRevoked);  // the precondition holds; the move is what is wrong
  b.audit_events.push_back(testing::AuditEvent("ses_1", "alice", "2026-01-01T00:00:00Z"));
  CheckInvalidTransition(f.journal->Commit(std::move(b)));
  CHECK(f.Grant().state == G::kRevoked);
  CHECK_FALSE(f.journal->Head().has_value());  // no audit record was chained
}

TEST_CASE("Journal: a grant or session written without the state it moves from is refused") {
  JournalOnSqlite f;
  {
    GrantRecord g = f.Grant();
    WriteBatch b;
    b.grants.push_back(g);  // no precondition: a write that says no transition
    CheckInvalidTransition(f.journal->Commit(std::move(b)));
  }
  {
    SessionRecord s = f.Session();
    s.state = S::kCompleted;
    WriteBatch b;
    b.sessions.push_back(s);
    b.RequireSessionState("ses_other", S::kActive);  // a precondition on another record
    CheckInvalidTransition(f.journal->Commit(std::move(b)));
  }
  CHECK(f.Session().state == S::kActive);
}

TEST_CASE("Journal: a session ends once and is never revived") {
  JournalOnSqlite f;
  SessionRecord s = f.Session();
  s.state = S::kStalled;
  WriteBatch end;
  end.PutSession(s, S::kActive);
  REQUIRE(f.journal->Commit(std::move(end)));
  CHECK(f.Session().state == S::kStalled);

  s.state = S::kActive;  // a heartbeat that read it stalled
  WriteBatch revive;
  revive.PutSession(s, S::kStalled);
  CheckInvalidTransition(f.journal->Commit(std::move(revive)));
  s.state = S::kCompleted;
  WriteBatch again;
  again.PutSession(s, S::kStalled);
  CheckInvalidTransition(f.journal->Commit(std::move(again)));
  CHECK(f.Session().state == S::kStalled);
}

}  // namespace
}  // namespace jitbroker
