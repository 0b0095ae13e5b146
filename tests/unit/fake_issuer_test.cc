#include <chrono>
#include <latch>
#include <string>
#include <thread>
#include <vector>

#include <doctest/doctest.h>

#include "broker/crypto/crypto.h"
#include "tests/fakes/fake_issuer.h"

namespace jitbroker::testing {
namespace {

using std::chrono_literals::operator""ms;

const TimePoint kNow = FromUnixSeconds(1795000000);

MintRequest MintFor(const std::string& grant_id, int64_t ttl_seconds = 300) {
  MintRequest r;
  r.grant_id = grant_id;
  r.session_id = "ses_test";
  r.request.tool = "fake.read";
  r.request.operation = "read";
  r.request.resource = "fake://test/r";
  r.request.issuer = "fake";
  r.ttl_seconds = ttl_seconds;
  r.now = kNow;
  return r;
}

RevokeRequest RevokeFor(const std::string& grant_id, const MintResult& m, TimePoint now = kNow) {
  return RevokeRequest{grant_id, m.revocation_handle.Clone(), m.expires_at, now};
}

std::string SecretField(const MintResult& m, const std::string& name) {
  for (const auto& [k, v] : m.secrets) {
    if (k == name) {
      return std::string(v.Reveal());
    }
  }
  return {};
}

TEST_CASE("FakeIssuer: describes itself from its options") {
  FakeIssuer issuer({.name = "up",
                     .revocability = Revocability::kDenyByCondition,
                     .default_ttl_seconds = 60,
                     .max_ttl_seconds = 120});
  const IssuerDescription& d = issuer.Describe();
  CHECK(d.name == "up");
  CHECK(d.type == "fake");
  CHECK(d.revocability == Revocability::kDenyByCondition);
  CHECK(d.default_ttl_seconds == 60);
  CHECK(d.max_ttl_seconds == 120);
}

TEST_CASE("FakeIssuer: mint then revoke round trip") {
  FakeIssuer issuer;
  auto m = issuer.Mint(MintFor("grt_1", 300));
  REQUIRE(m.has_value());
  const std::string token = SecretField(*m, "token");
  REQUIRE(!token.empty());
  CHECK(m->type == "fake_token");
  CHECK(m->fingerprint_sha256 == crypto::Sha256Hex(token));
  CHECK(m->revocation_handle.Reveal() == token);
  CHECK(m->expires_at == kNow + std::chrono::seconds(300));
  CHECK(issuer.Mints() == 1);
  CHECK(issuer.LiveCredentials() == 1);

  auto second = issuer.Mint(MintFor("grt_2"));
  REQUIRE(second.has_value());
  CHECK(SecretField(*second, "token") != token);

  auto r = issuer.Revoke(RevokeFor("grt_1", *m));
  REQUIRE(r.has_value());
  CHECK(r->kind == RevokeOutcomeKind::kRevoked);
  CHECK(r->residual_seconds == 0);
  CHECK(issuer.Revokes() == 1);
  CHECK(issuer.IsRevoked("grt_1"));
  CHECK_FALSE(issuer.IsRevoked("grt_2"));
  CHECK(issuer.RevokedGrantIds() == std::vector<std::string>{"grt_1"});
  CHECK(issuer.LiveCredentials() == 1);

  SUBCASE("revoke is idempotent") {
    auto again = issuer.Revoke(RevokeFor("grt_1", *m));
    REQUIRE(again.has_value());
    CHECK(again->kind == RevokeOutcomeKind::kRevoked);
    CHECK(issuer.Revokes() == 2);
    CHECK(issuer.RevokedGrantIds().size() == 1);
  }
  SUBCASE("revoking an expired credential succeeds") {
    auto late = issuer.Revoke(RevokeFor("grt_2", *second, kNow + std::chrono::hours(2)));
    REQUIRE(late.has_value());
    CHECK(issuer.IsRevoked("grt_2"));
    CHECK(issuer.LiveCredentials() == 0);
  }
}

TEST_CASE("FakeIssuer: TTL defaults and caps") {
  FakeIssuer issuer({.default_ttl_seconds = 100, .max_ttl_seconds = 200});
  struct Row {
    int64_t requested;
    int64_t expected;
  };
  for (Row row : {Row{0, 100}, Row{50, 50}, Row{200, 200}, Row{5000, 200}}) {
    CAPTURE(row.requested);
    auto m = issuer.Mint(MintFor("grt_ttl", row.requested));
    REQUIRE(m.has_value());
    CHECK(m->expires_at == kNow + std::chrono::seconds(row.expected));
  }
}

TEST_CASE("FakeIssuer: revoke outcome follows revocability") {
  SUBCASE("deny_by_condition") {
    FakeIssuer issuer({.revocability = Revocability::kDenyByCondition});
    auto m = issuer.Mint(MintFor("grt_d"));
    REQUIRE(m.has_value());
    auto r = issuer.Revoke(RevokeFor("grt_d", *m));
    REQUIRE(r.has_value());
    CHECK(r->kind == RevokeOutcomeKind::kDenyInstalled);
  }
  SUBCASE("expiry_only reports the residual lifetime") {
    FakeIssuer issuer({.revocability = Revocability::kExpiryOnly});
    auto m = issuer.Mint(MintFor("grt_e", 600));
    REQUIRE(m.has_value());
    auto r = issuer.Revoke(RevokeFor("grt_e", *m, kNow + std::chrono::seconds(100)));
    REQUIRE(r.has_value());
    CHECK(r->kind == RevokeOutcomeKind::kExpiryOnly);
    CHECK(r->residual_seconds == 500);
    auto after = issuer.Revoke(RevokeFor("grt_e", *m, kNow + std::chrono::seconds(900)));
    REQUIRE(after.has_value());
    CHECK(after->residual_seconds == 0);
  }
}

TEST_CASE("FakeIssuer: rejects handles it never minted") {
  FakeIssuer issuer;
  auto m = issuer.Mint(MintFor("grt_1"));
  REQUIRE(m.has_value());
  for (std::string handle :
       {std::string("grt_1"), std::string(), std::string("fake_bogus"), m->fingerprint_sha256}) {
    CAPTURE(handle.size());
    auto r = issuer.Revoke(RevokeRequest{"grt_1", SecretValue(handle), m->expires_at, kNow});
    REQUIRE_FALSE(r.has_value());
    CHECK(r.error().code == ErrorCode::kInvalidArgument);
    CHECK(r.error().Reason() == "unknown_handle");
    CHECK_FALSE(r.error().retryable);
    if (!handle.empty()) {
      CHECK(r.error().message.find(handle) == std::string::npos);
    }
  }
  CHECK(issuer.UnknownHandleRevokes() == 4);
  CHECK(issuer.Revokes() == 0);
  CHECK_FALSE(issuer.IsRevoked("grt_1"));

  SUBCASE("another issuer's token is unknown too") {
    FakeIssuer other;
    auto r = other.Revoke(RevokeFor("grt_1", *m));
    REQUIRE_FALSE(r.has_value());
    CHECK(r.error().Reason() == "unknown_handle");
  }
}

TEST_CASE("FakeIssuer: failure injection") {
  FakeIssuer issuer;
  auto check_unavailable = [](const Error& e) {
    CHECK(e.code == ErrorCode::kUnavailable);
    CHECK(e.Reason() == "upstream_unavailable");
    CHECK(e.retryable);
  };

  SUBCASE("fail_next_mints") {
    issuer.FailNextMints(2);
    for (int i = 0; i < 2; ++i) {
      auto m = issuer.Mint(MintFor("grt_x"));
      REQUIRE_FALSE(m.has_value());
      check_unavailable(m.error());
    }
    CHECK(issuer.Mint(MintFor("grt_ok")).has_value());
    CHECK(issuer.MintCalls() == 3);
    CHECK(issuer.FailedMints() == 2);
    CHECK(issuer.Mints() == 1);
    CHECK(issuer.LiveCredentials() == 1);
  }
  SUBCASE("fail_next_revokes then success") {
    auto m = issuer.Mint(MintFor("grt_1"));
    REQUIRE(m.has_value());
    issuer.FailNextRevokes(1);
    issuer.FailNextRevokes(1);  // budgets add up
    for (int i = 0; i < 2; ++i) {
      auto r = issuer.Revoke(RevokeFor("grt_1", *m));
      REQUIRE_FALSE(r.has_value());
      check_unavailable(r.error());
    }
    CHECK_FALSE(issuer.IsRevoked("grt_1"));
    CHECK(issuer.Revoke(RevokeFor("grt_1", *m)).has_value());
    CHECK(issuer.RevokeCalls() == 3);
    CHECK(issuer.FailedRevokes() == 2);
    CHECK(issuer.Revokes() == 1);
    CHECK(issuer.IsRevoked("grt_1"));
  }
  SUBCASE("fail_revokes_always until cleared") {
    auto m = issuer.Mint(MintFor("grt_1"));
    REQUIRE(m.has_value());
    issuer.SetFailRevokesAlways(true);
    for (int i = 0; i < 3; ++i) {
      auto r = issuer.Revoke(RevokeFor("grt_1", *m));
      REQUIRE_FALSE(r.has_value());
      check_unavailable(r.error());
    }
    CHECK(issuer.FailedRevokes() == 3);
    issuer.SetFailRevokesAlways(false);
    CHECK(issuer.Revoke(RevokeFor("grt_1", *m)).has_value());
    CHECK(issuer.IsRevoked("grt_1"));
  }
}

TEST_CASE("FakeIssuer: implied tier hook") {
  GrantRequest req;
  req.scope = {{"permissions", {{"contents", "write"}}}};
  SUBCASE("default rejects any scope") {
    FakeIssuer issuer;
    auto t = issuer.ImpliedTier(req);
    REQUIRE_FALSE(t.has_value());
    CHECK(t.error().Reason() == "invalid_scope");
    CHECK(issuer.ImpliedTier(GrantRequest{}) == Tier::kRead);
  }
  SUBCASE("custom hook") {
    FakeIssuer issuer({.implied_tier = [](const GrantRequest& r) -> Result<Tier> {
      return r.scope.contains("permissions") ? Tier::kWrite : Tier::kRead;
    }});
    CHECK(issuer.ImpliedTier(req) == Tier::kWrite);
    CHECK(issuer.ImpliedTier(GrantRequest{}) == Tier::kRead);
  }
}

TEST_CASE("FakeIssuer: counts concurrent revokes") {
  // Each revoke takes 30 ms; started together behind a latch, the calls
  // overlap, and the high-water mark shows it.
  constexpr int kThreads = 8;
  FakeIssuer issuer({.revoke_latency = 30ms});
  std::vector<MintResult> minted;
  for (int i = 0; i < kThreads; ++i) {
    auto m = issuer.Mint(MintFor("grt_" + std::to_string(i)));
    REQUIRE(m.has_value());
    minted.push_back(std::move(*m));
  }

  SUBCASE("sequential calls never overlap") {
    issuer.SetRevokeLatency(0ms);
    for (int i = 0; i < kThreads; ++i) {
      CHECK(issuer.Revoke(RevokeFor("grt_" + std::to_string(i), minted[i])).has_value());
    }
    CHECK(issuer.MaxConcurrentRevokes() == 1);
  }
  SUBCASE("parallel calls overlap") {
    std::latch start(kThreads);
    std::vector<int> ok(kThreads, 0);
    {
      std::vector<std::jthread> threads;
      for (int i = 0; i < kThreads; ++i) {
        threads.emplace_back([&, i] {
          start.arrive_and_wait();
          ok[i] = issuer.Revoke(RevokeFor("grt_" + std::to_string(i), minted[i])).has_value();
        });
      }
    }
    for (int i = 0; i < kThreads; ++i) {
      CHECK(ok[i] == 1);
    }
    CHECK(issuer.MaxConcurrentRevokes() > 1);
    CHECK(issuer.MaxConcurrentRevokes() <= kThreads);
    CHECK(issuer.RevokesInFlight() == 0);
    CHECK(issuer.RevokedGrantIds().size() == kThreads);
    CHECK(issuer.LiveCredentials() == 0);

    issuer.ResetMaxConcurrentRevokes();
    CHECK(issuer.MaxConcurrentRevokes() == 0);
  }
}

}  // namespace
}  // namespace jitbroker::testing
