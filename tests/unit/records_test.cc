// The typed fields of grant and session records that stores keep in their
// JSON `extra` (include/jitbroker/store.h): rows written before the fields
// were typed read the same, unknown keys are kept, and a malformed field is
// a corrupt row, never a silently wrong record.
#include <string>

#include <doctest/doctest.h>
#include <nlohmann/json.hpp>

#include "broker/common/time_util.h"
#include "jitbroker/store.h"

namespace jitbroker {
namespace {

using Json = nlohmann::json;

// `extra` as the broker wrote it before its keys became fields.
Json OldGrantExtra() {
  return Json::parse(R"({
    "justification": "release 1.2",
    "approval_expires_at": "2027-01-15T08:05:00Z",
    "four_eyes": true,
    "approvers": ["role:release"],
    "approval": {"decision": "approved", "approver": "bob",
                 "decided_at": "2027-01-15T08:01:00Z", "comment": "ok", "break_glass": true},
    "delegation": {"github_login": "octocat"},
    "credential_audit": {"installation_id": 7},
    "upstream_expires_at": 1800000000,
    "mint_error": "upstream_unavailable",
    "newer_field": [1, 2]
  })");
}

TEST_CASE("Records: a grant's stored extra reads into typed fields and back unchanged") {
  GrantRecord g;
  REQUIRE(GrantExtraFromStore(OldGrantExtra(), g));
  CHECK(g.justification == "release 1.2");
  CHECK(g.approval_expires_at == ParseRfc3339("2027-01-15T08:05:00Z").value());
  CHECK(g.four_eyes);
  CHECK(g.approvers == std::vector<std::string>{"role:release"});
  REQUIRE(g.approval.has_value());
  CHECK(g.approval->approver == "bob");
  CHECK(g.approval->break_glass);
  CHECK(g.delegation == Json{{"github_login", "octocat"}});
  CHECK(g.credential_audit == Json{{"installation_id", 7}});
  CHECK(g.upstream_expires_at == FromUnixSeconds(1'800'000'000));
  // What no code reads stays in extra, as it was.
  CHECK(g.extra == Json{{"mint_error", "upstream_unavailable"}, {"newer_field", {1, 2}}});
  CHECK(GrantExtraForStore(g) == OldGrantExtra());
}

TEST_CASE("Records: a malformed typed field is a corrupt row") {
  for (const char* key :
       {"justification", "approval_expires_at", "four_eyes", "approvers", "approval", "delegation",
        "credential_audit", "upstream_expires_at", "approval_expired"}) {
    CAPTURE(key);
    Json extra = OldGrantExtra();
    extra[key] = Json::array({42});
    GrantRecord g;
    const Status st = GrantExtraFromStore(extra, g);
    REQUIRE_FALSE(st.has_value());
    CHECK(st.error().code == ErrorCode::kInternal);
    CHECK(st.error().detail.find(key) != std::string::npos);
  }
  Json approval = OldGrantExtra();
  approval["approval"].erase("decided_at");
  GrantRecord g;
  CHECK_FALSE(GrantExtraFromStore(approval, g).has_value());
  CHECK_FALSE(GrantExtraFromStore(Json::array(), g).has_value());

  SessionRecord s;
  CHECK_FALSE(SessionExtraFromStore(Json{{"ci", "not an object"}}, s).has_value());
  REQUIRE(SessionExtraFromStore(Json{{"ci", {{"run_id", "42"}}}, {"client", "x"}}, s));
  CHECK(s.ci == Json{{"run_id", "42"}});
  CHECK(s.extra == Json{{"client", "x"}});
}

}  // namespace
}  // namespace jitbroker
