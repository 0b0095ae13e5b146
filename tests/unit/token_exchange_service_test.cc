// BrokerService's CI token exchange in process (broker/service/token_exchange.cc):
// the paths the HTTP tests cannot reach cheaply — session generations after
// expiry, jti release on a failed mint, an audited policy denial, and the
// start-up checks of trust grants against the issuers and the policy.
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <string>

#include <doctest/doctest.h>
#include <nlohmann/json.hpp>

#include "broker/audit/journal.h"
#include "broker/config/config.h"
#include "broker/crypto/crypto.h"
#include "broker/crypto/jose.h"
#include "broker/oidc/token_request.h"
#include "broker/oidc/trust_policy.h"
#include "broker/service/broker_service.h"
#include "broker/store/sqlite_store.h"
#include "tests/fakes/fake_clock.h"
#include "tests/fakes/fake_issuer.h"

namespace jitbroker::testing {
namespace {

using nlohmann::json;

constexpr char kIssuer[] = "https://token.actions.githubusercontent.com";
constexpr char kAudience[] = "jitbroker.unit.example";

const char* kConfig = R"(
data_dir: data
policy:
  version: "svc.1"
  principals:
    - {id: root, roles: [admin], api_key_file: root.key}
  roles:
    admin: {resources: ["*"], max_tier: destructive}
)";

std::string TrustYaml(const std::string& extra_grant = "", const std::string& extra = "") {
  return std::string("- name: deploy\n  issuer: ") + kIssuer + "\n  audience: " + kAudience +
         "\n  claims: {repository_owner_id: \"123\", repository_id: \"456\", ref: "
         "refs/heads/main}\n"
         "  grant: {issuer: fake, resource: \"fake://deploy\"" +
         extra_grant +
         "}\n"
         "  session_ttl_seconds: 120\n" +
         extra;
}

class Keys final : public oidc::KeySource {
 public:
  explicit Keys(const crypto::SigningKey& key) : key_(key.Public()) {}
  Result<std::shared_ptr<const crypto::VerifyKey>> Find(const oidc::KeyQuery& q) override {
    if (q.kid != "k1") {
      return std::unexpected(Unauthenticated("unknown_key", "no such kid"));
    }
    return key_;
  }

 private:
  std::shared_ptr<const crypto::VerifyKey> key_;
};

class Fixture {
 public:
  explicit Fixture(FakeIssuerOptions fo = {}) {
    char tmpl[] = "/tmp/jitbroker-tx-XXXXXX";
    REQUIRE(::mkdtemp(tmpl) != nullptr);
    dir_ = tmpl;
    std::ofstream(dir_ + "/root.key") << "jbk_root_key_for_tests_0123456789\n";
    std::ofstream(dir_ + "/broker.yaml") << kConfig;
    auto cfg = config::LoadConfigFile(dir_ + "/broker.yaml");
    REQUIRE_MESSAGE(cfg.has_value(), (cfg ? "" : cfg.error().ToString()));
    policy_ = cfg->policy;
    signer_ = std::move(*crypto::SigningKey::Generate(crypto::JwsAlg::kRS256));
    keys_ = std::make_unique<Keys>(*signer_);
    fo.name = "fake";
    auto fake = std::make_unique<FakeIssuer>(fo);
    fake_ = fake.get();
    store::SqliteOptions so;
    so.path = dir_ + "/state.db";
    auto st = store::OpenSqliteStore(so);
    REQUIRE(st.has_value());
    store_ = std::move(*st);
    auto j = audit::Journal::Create(store_.get(), dir_ + "/audit.jsonl");
    REQUIRE(j.has_value());
    journal_ = std::move(*j);
    std::map<std::string, std::unique_ptr<Issuer>> issuers;
    issuers.emplace("fake", std::move(fake));
    service::ServiceOptions opts;
    opts.sessions = cfg->sessions;
    opts.seal_key = SecretValue(crypto::RandomBytes(32));
    opts.oidc_keys = keys_.get();
    service_ =
        std::make_unique<service::BrokerService>(store_.get(), journal_.get(), &clock_, &metrics_,
                                                 std::move(issuers), policy_, std::move(opts));
  }
  ~Fixture() {
    journal_->Stop();
    service_.reset();
    std::filesystem::remove_all(dir_);
  }

  Result<std::shared_ptr<const oidc::TrustSet>> Trust(const std::string& yaml) {
    oidc::TrustContext tc;
    tc.issuer_names = {"fake"};
    return oidc::ParseTrustPoliciesText(yaml, "t.yaml", tc);
  }
  void UseTrust(const std::string& yaml) {
    auto t = Trust(yaml);
    REQUIRE_MESSAGE(t.has_value(), (t ? "" : t.error().ToString()));
    auto st = service_->SetTrust(*t);
    REQUIRE_MESSAGE(st.has_value(), (st ? "" : st.error().ToString()));
  }

  json Claims(const std::string& jti) {
    const int64_t now = ToUnixSeconds(clock_.Now());
    return {{"iss", kIssuer},
            {"aud", kAudience},
            {"sub", "repo:acme/svc:ref:refs/heads/main"},
            {"jti", jti},
            {"iat", now},
            {"exp", now + 300},
            {"repository", "acme/svc"},
            {"repository_owner", "acme"},
            {"repository_owner_id", "123"},
            {"repository_id", "456"},
            {"ref", "refs/heads/main"},
            {"run_id", "77"},
            {"run_attempt", "1"}};
  }
  std::string Sign(const json& claims) { return *signer_->SignJwt({{"kid", "k1"}}, claims); }

  Result<json> Exchange(const std::string& token) {
    oidc::TokenExchangeRequest req;
    req.subject_token = SecretValue(token);
    req.subject_token_type = std::string(oidc::kTokenTypeIdToken);
    req.audience = "deploy";
    service::CallContext ctx;
    ctx.request_id = "req_unit";
    return service_->ExchangeToken(ctx, req);
  }
  service::CallContext Root() {
    auto c = service_->Authenticate("Bearer jbk_root_key_for_tests_0123456789");
    REQUIRE(c.has_value());
    service::CallContext ctx;
    ctx.request_id = "req_root";
    ctx.caller = std::move(*c);
    return ctx;
  }
  json Sessions() {
    SessionFilter f;
    f.principal_id = "trust:deploy";
    auto r = service_->ListSessions(Root(), f);
    REQUIRE(r.has_value());
    return (*r)["sessions"];
  }
  json AuditEvents(const std::string& event) {
    AuditFilter f;
    auto r = service_->ListAudit(Root(), f);
    REQUIRE(r.has_value());
    json out = json::array();
    for (const json& rec : (*r)["records"]) {
      if (rec["event"] == event) {
        out.push_back(rec);
      }
    }
    return out;
  }

  FakeClock clock_;
  FakeIssuer* fake_ = nullptr;
  std::unique_ptr<service::BrokerService> service_;
  std::shared_ptr<const Policy> policy_;

 private:
  std::string dir_;
  std::unique_ptr<crypto::SigningKey> signer_;
  std::unique_ptr<Keys> keys_;
  std::unique_ptr<Store> store_;
  std::unique_ptr<audit::Journal> journal_;
  Metrics metrics_;
};

TEST_CASE("TokenExchange service: without trust policies every exchange is invalid_target") {
  Fixture f;
  auto r = f.Exchange(f.Sign(f.Claims("j")));
  REQUIRE_FALSE(r.has_value());
  CHECK(oidc::ToOAuthError(r.error()).error == "invalid_target");
}

TEST_CASE("TokenExchange service: a run outliving its session gets the next one") {
  Fixture f;
  f.UseTrust(TrustYaml());
  auto first = f.Exchange(f.Sign(f.Claims("j1")));
  REQUIRE_MESSAGE(first.has_value(), (first ? "" : first.error().ToString()));
  const std::string sid = (*first)["session_id"];
  auto again = f.Exchange(f.Sign(f.Claims("j2")));
  REQUIRE(again.has_value());
  CHECK((*again)["session_id"] == sid);
  // The credential's TTL is clamped to the session's end.
  CHECK((*again)["expires_in"].get<int64_t>() <= 120);

  f.clock_.Advance(std::chrono::seconds(121));
  auto later = f.Exchange(f.Sign(f.Claims("j3")));
  REQUIRE_MESSAGE(later.has_value(), (later ? "" : later.error().ToString()));
  CHECK((*later)["session_id"] != sid);
  json sessions = f.Sessions();
  REQUIRE(sessions.size() == 2);
  std::map<std::string, std::string> states;
  for (const json& s : sessions) {
    states[s["session_id"]] = s["state"];
  }
  CHECK(states[sid] == "expired");
  CHECK(states[(*later)["session_id"]] == "active");
}

TEST_CASE("TokenExchange service: a failed mint releases the token for a retry") {
  Fixture f;
  f.UseTrust(TrustYaml());
  const std::string token = f.Sign(f.Claims("retry-me"));
  f.fake_->FailNextMints(1);
  auto failed = f.Exchange(token);
  REQUIRE_FALSE(failed.has_value());
  auto retried = f.Exchange(token);
  REQUIRE_MESSAGE(retried.has_value(), (retried ? "" : retried.error().ToString()));
  // ...but only once it succeeded.
  auto replay = f.Exchange(token);
  REQUIRE_FALSE(replay.has_value());
  CHECK(replay.error().Reason() == "token_replayed");
  CHECK(oidc::ToOAuthError(replay.error()).error == "invalid_grant");
}

TEST_CASE("TokenExchange service: a policy denial is audited and opens no session") {
  Fixture f;
  f.UseTrust(TrustYaml());
  // The policy changes under the trust policy (a reload would refuse this
  // pair; a denial must still be safe): reads are now denied.
  auto denied = std::make_shared<Policy>(*f.policy_);
  denied->tiers[static_cast<int>(Tier::kRead)].control = Control::kDeny;
  denied->version = "svc.2";
  f.service_->SwapPolicy(denied);
  const std::string token = f.Sign(f.Claims("denied-1"));
  auto r = f.Exchange(token);
  REQUIRE_FALSE(r.has_value());
  CHECK(r.error().Reason() == "exchange_denied");
  CHECK(oidc::ToOAuthError(r.error()).error == "unauthorized_client");
  CHECK(f.Sessions().empty());
  CHECK(f.fake_->MintCalls() == 0);
  json events = f.AuditEvents("token.exchange_denied");
  REQUIRE(events.size() == 1);
  CHECK(events[0]["human_principal"] == "trust:deploy");
  CHECK(events[0]["policy_decision"]["code"] == "tier_denied");
  CHECK(events[0]["token_exchange"]["ci"]["repository"] == "acme/svc");
  CHECK(events[0]["token_exchange"]["subject_token_sha256"] == crypto::Sha256Hex(token));
  CHECK(events[0].dump().find(token) == std::string::npos);
  // A denial does not burn the token.
  f.service_->SwapPolicy(f.policy_);
  CHECK(f.Exchange(token).has_value());
}

TEST_CASE("TokenExchange service: SetTrust checks each grant against its issuer and the policy") {
  SUBCASE("a scope the issuer cannot mint") {
    Fixture f;
    auto t = f.Trust(TrustYaml(", scopes: [deploy]"));
    REQUIRE(t.has_value());
    auto st = f.service_->SetTrust(*t);
    REQUIRE_FALSE(st.has_value());
    CHECK(st.error().message.find(
              "t.yaml:1: trust[0].grant: not a valid grant for issuer \"fake\"") !=
          std::string::npos);
  }
  SUBCASE("a tier above max_tier") {
    FakeIssuerOptions fo;
    fo.implied_tier = [](const GrantRequest&) -> Result<Tier> { return Tier::kWrite; };
    Fixture f(fo);
    auto t = f.Trust(TrustYaml());
    REQUIRE(t.has_value());
    auto st = f.service_->SetTrust(*t);
    REQUIRE_FALSE(st.has_value());
    CHECK(st.error().message.find("exceeds max_tier \"read\"") != std::string::npos);
    CHECK(f.service_->SetTrust(*f.Trust(TrustYaml(", max_tier: write"))).has_value());
  }
  SUBCASE("an approval tier") {
    FakeIssuerOptions fo;
    fo.implied_tier = [](const GrantRequest&) -> Result<Tier> { return Tier::kSecret; };
    Fixture f(fo);
    auto st = f.service_->SetTrust(*f.Trust(TrustYaml(", max_tier: destructive")));
    REQUIRE_FALSE(st.has_value());
    CHECK(st.error().message.find("cannot wait for a human") != std::string::npos);
  }
  SUBCASE("no trust policies at all is fine") {
    Fixture f;
    CHECK(f.service_->SetTrust(nullptr).has_value());
  }
}

}  // namespace
}  // namespace jitbroker::testing
