// BrokerService's CI token exchange in process (broker/service/token_exchange.cc):
// the paths the HTTP tests cannot reach cheaply — session generations after
// expiry, jti release on a failed mint, an audited policy denial, and the
// start-up checks of trust grants against the issuers and the policy.
#include <atomic>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <span>
#include <sstream>
#include <string>
#include <vector>

#include <doctest/doctest.h>
#include <nlohmann/json.hpp>

#include "broker/audit/journal.h"
#include "broker/config/config.h"
#include "broker/crypto/crypto.h"
#include "broker/crypto/jose.h"
#include "broker/http/wire.h"
#include "broker/lifecycle/anomaly.h"
#include "broker/net/http_client.h"
#include "broker/oidc/token_request.h"
#include "broker/oidc/token_verifier.h"
#include "broker/oidc/trust_policy.h"
#include "broker/service/broker_service.h"
#include "broker/store/sqlite_store.h"
#include "cli/args.h"
#include "cli/ci_commands.h"
#include "tests/fakes/failing_store.h"
#include "tests/fakes/fake_clock.h"
#include "tests/fakes/fake_issuer.h"
#include "tests/fakes/fake_key_source.h"

namespace jitbroker::testing::exchange_service_test {
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

using Keys = StaticKeySource;

class Fixture {
 public:
  explicit Fixture(FakeIssuerOptions fo = {}) : fo_(fo) {
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
    Build();
  }

  // What a new process on the same data directory starts with: the store
  // reopened, a new journal and service, nothing kept in memory.
  void Restart() {
    journal_->Stop();
    service_.reset();
    journal_.reset();
    blind_store_.reset();
    store_.reset();
    Build();
  }

  void Build() {
    config::Config cfg = *config::LoadConfigFile(dir_ + "/broker.yaml");
    FakeIssuerOptions fo = fo_;
    fo.name = "fake";
    auto fake = std::make_unique<FakeIssuer>(fo);
    fake_ = fake.get();
    store::SqliteOptions so;
    so.path = dir_ + "/state.db";
    auto st = store::OpenSqliteStore(so);
    REQUIRE(st.has_value());
    store_ = std::move(*st);
    blind_store_ = std::make_unique<FailingStore>(store_.get());
    auto j = audit::Journal::Create(blind_store_.get(), dir_ + "/audit.jsonl");
    REQUIRE(j.has_value());
    journal_ = std::move(*j);
    std::map<std::string, std::unique_ptr<Issuer>> issuers;
    issuers.emplace("fake", std::move(fake));
    service::ServiceOptions opts;
    opts.sessions = cfg.sessions;
    opts.seal_key = SecretValue(seal_key_);
    opts.oidc_keys = keys_.get();
    opts.anomaly_rules = anomaly_rules_;
    service_ = std::make_unique<service::BrokerService>(blind_store_.get(), journal_.get(), &clock_,
                                                        &metrics_, std::move(issuers), policy_,
                                                        std::move(opts));
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
  // Rebuilds the service with these anomaly rules (the `anomaly:` YAML).
  void UseAnomalyRules(const std::string& yaml) {
    auto rules = lifecycle::ParseAnomalyRulesText(yaml, "anomaly.yaml");
    REQUIRE_MESSAGE(rules.has_value(), (rules ? "" : rules.error().ToString()));
    anomaly_rules_ = std::move(*rules);
    Restart();
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

  Result<json> Exchange(const std::string& token, const std::string& audience = "deploy",
                        std::optional<std::string> resource = std::nullopt) {
    oidc::TokenExchangeRequest req;
    req.subject_token = SecretValue(token);
    req.subject_token_type = std::string(oidc::kTokenTypeIdToken);
    req.audience = audience;
    req.resource = std::move(resource);
    service::CallContext ctx;
    ctx.request_id = "req_unit";
    return api().ExchangeToken(ctx, req);
  }
  service::CallContext Root() {
    auto c = service_->Authenticate("Bearer jbk_root_key_for_tests_0123456789", "");
    REQUIRE(c.has_value());
    service::CallContext ctx;
    ctx.request_id = "req_root";
    ctx.caller = std::move(*c);
    return ctx;
  }
  json Sessions() {
    SessionFilter f;
    f.principal_id = "trust:deploy";
    auto r = api().ListSessions(Root(), f);
    REQUIRE(r.has_value());
    return (*r)["sessions"];
  }
  json AuditEvents(const std::string& event) {
    AuditFilter f;
    auto r = api().ListAudit(Root(), f);
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
  // The JSON API over the service: what the HTTP routes answer.
  http::wire::JsonApi api() { return http::wire::JsonApi(service_.get()); }
  std::shared_ptr<const Policy> policy_;
  std::unique_ptr<FailingStore> blind_store_;
  Store* store() { return store_.get(); }

 private:
  FakeIssuerOptions fo_;
  std::vector<lifecycle::AnomalyRule> anomaly_rules_;
  std::string seal_key_ = crypto::RandomBytes(32);
  std::string dir_;
  std::unique_ptr<crypto::SigningKey> signer_;
  std::unique_ptr<Keys> keys_;
  std::unique_ptr<Store> store_;
  std::unique_ptr<audit::Journal> journal_;
  Metrics metrics_;
};

// The exact bytes a client receives for an error.
std::string Body(const Error& e) { return oidc::OAuthErrorBody(oidc::ToOAuthError(e)).dump(); }

TEST_CASE("TokenExchange service: without trust policies every exchange is invalid_grant") {
  Fixture f;
  auto r = f.Exchange(f.Sign(f.Claims("j")));
  REQUIRE_FALSE(r.has_value());
  CHECK(r.error().Reason() == "no_trust_policies");  // for the log
  CHECK(oidc::ToOAuthError(r.error()).error == "invalid_grant");
  CHECK(Body(r.error()) ==
        R"({"error":"invalid_grant","error_description":"the subject_token was not accepted"})");
}

TEST_CASE("TokenExchange service: before its signature verifies, a token learns nothing") {
  Fixture f;
  f.UseTrust(TrustYaml());
  // Signed by a key that is not the issuer's, under the issuer's kid.
  auto attacker = crypto::SigningKey::Generate(crypto::JwsAlg::kRS256);
  REQUIRE(attacker.has_value());
  const std::string forged = *(*attacker)->SignJwt({{"kid", "k1"}}, f.Claims("forged"));
  json untrusted_claims = f.Claims("untrusted");
  untrusted_claims["iss"] = "https://evil.example";
  const std::string untrusted = f.Sign(untrusted_claims);
  const std::string unknown_kid = *(*attacker)->SignJwt({{"kid", "k9"}}, f.Claims("kid"));
  auto ec = crypto::SigningKey::Generate(crypto::JwsAlg::kES256);
  REQUIRE(ec.has_value());
  const std::string other_alg = *(*ec)->SignJwt({{"kid", "k1"}}, f.Claims("alg"));

  struct Case {
    const char* name;
    std::string token;
    std::string audience;
    std::optional<std::string> resource;
    const char* reason;  // precise, for the log only
  };
  const std::vector<Case> cases = {
      {"forged, audience of no policy", forged, "nobody", std::nullopt, "invalid_signature"},
      {"forged, a real policy", forged, "deploy", std::nullopt, "invalid_signature"},
      {"forged, a real target", forged, "fake://deploy", std::nullopt, "invalid_signature"},
      {"forged, resource mismatch", forged, "deploy", "fake://other", "invalid_signature"},
      {"untrusted issuer, a real policy", untrusted, "deploy", std::nullopt, "untrusted_issuer"},
      {"untrusted issuer, no policy", untrusted, "nobody", std::nullopt, "untrusted_issuer"},
      {"unknown kid", unknown_kid, "deploy", std::nullopt, "unknown_key"},
      {"alg the issuer does not use", other_alg, "nobody", std::nullopt, "alg_not_allowed"},
  };
  std::set<std::string> bodies;
  for (const Case& c : cases) {
    CAPTURE(c.name);
    auto r = f.Exchange(c.token, c.audience, c.resource);
    REQUIRE_FALSE(r.has_value());
    CHECK(r.error().Reason() == c.reason);
    bodies.insert(Body(r.error()));
  }
  // Byte-identical answers: no policy name, target or trusted issuer can be
  // told apart by an unauthenticated caller.
  CHECK(bodies.size() == 1);
  CHECK(*bodies.begin() ==
        R"({"error":"invalid_grant","error_description":"the subject_token was not accepted"})");
  CHECK(f.Sessions().empty());

  // Once the signature verifies, the audience is looked at.
  auto unknown = f.Exchange(f.Sign(f.Claims("real")), "nobody");
  REQUIRE_FALSE(unknown.has_value());
  CHECK(oidc::ToOAuthError(unknown.error()).error == "invalid_target");
}

TEST_CASE("TokenExchange service: after verification, errors name no claim and no limit") {
  Fixture f;
  f.UseTrust(TrustYaml());
  json evil = f.Claims("evil-ref");
  evil["ref"] = "refs/heads/evil";
  auto r = f.Exchange(f.Sign(evil));
  REQUIRE_FALSE(r.has_value());
  CHECK(r.error().Reason() == "claims_mismatch");
  CHECK(oidc::ToOAuthError(r.error()).error == "unauthorized_client");
  CHECK(oidc::ToOAuthError(r.error()).description ==
        "the subject_token's claims do not match the trust policy");
  CHECK(r.error().detail.find("\"ref\"") != std::string::npos);  // the log has it

  json old = f.Claims("old");
  old["iat"] = ToUnixSeconds(f.clock_.Now()) - 3600;
  auto too_old = f.Exchange(f.Sign(old));
  REQUIRE_FALSE(too_old.has_value());
  CHECK(too_old.error().Reason() == "token_too_old");
  const std::string description = oidc::ToOAuthError(too_old.error()).description;
  CHECK(description.find("900") == std::string::npos);
  CHECK(description.find("maximum") == std::string::npos);
  CHECK(too_old.error().detail.find("900") != std::string::npos);
}

TEST_CASE("TokenExchange service: a far-future exp cannot shorten the replay window") {
  Fixture f;
  f.UseTrust(TrustYaml());
  // exp = 9999999999 used to overflow the replay entry's TimePoint, which
  // then expired after a second: a replay 2 s later went through.
  json far = f.Claims("far-future");
  far["exp"] = int64_t{9999999999};
  const std::string far_token = f.Sign(far);
  auto first = f.Exchange(far_token);
  f.clock_.Advance(std::chrono::seconds(2));
  auto replay = f.Exchange(far_token);
  REQUIRE_FALSE(replay.has_value());
  REQUIRE_FALSE(first.has_value());  // out of range: refused outright
  CHECK(first.error().Reason() == "invalid_claim");

  // At the bound itself: accepted once, then refused until the token is too
  // old anyway (iat + max age 900 + leeway 30), whatever exp says.
  json bound = f.Claims("at-the-bound");
  bound["exp"] = oidc::kMaxNumericDate;
  const int64_t iat = bound["iat"];
  const std::string token = f.Sign(bound);
  auto ok = f.Exchange(token);
  REQUIRE_MESSAGE(ok.has_value(), (ok ? "" : ok.error().ToString()));
  f.clock_.Advance(std::chrono::seconds(2));
  auto again = f.Exchange(token);
  REQUIRE_FALSE(again.has_value());
  CHECK(again.error().Reason() == "token_replayed");
  f.clock_.Set(FromUnixSeconds(iat + 930));  // the last second the token is acceptable
  auto late = f.Exchange(token);
  REQUIRE_FALSE(late.has_value());
  CHECK(late.error().Reason() == "token_replayed");
  f.clock_.Set(FromUnixSeconds(iat + 931));
  auto expired = f.Exchange(token);
  REQUIRE_FALSE(expired.has_value());
  CHECK(expired.error().Reason() == "token_too_old");
}

TEST_CASE("TokenExchange service: a token is exchanged once per issuer, not once per policy") {
  Fixture f;
  // Two policies of one issuer that both accept the token; the second keeps
  // tokens longer (max age), which the replay entry must honour too.
  const std::string second = std::string("- name: deploy-too\n  issuer: ") + kIssuer +
                             "\n  audience: " + kAudience +
                             "\n  claims: {repository_owner_id: \"123\", ref: refs/heads/main}\n"
                             "  grant: {issuer: fake, resource: \"fake://deploy\"}\n"
                             "  max_token_age_seconds: 3600\n";
  f.UseTrust(TrustYaml("", "  max_token_age_seconds: 60\n") + second);
  const std::string token = f.Sign(f.Claims("once"));
  auto first = f.Exchange(token, "deploy");
  REQUIRE_MESSAGE(first.has_value(), (first ? "" : first.error().ToString()));
  auto other_policy = f.Exchange(token, "deploy-too");
  REQUIRE_FALSE(other_policy.has_value());
  CHECK(other_policy.error().Reason() == "token_replayed");
  // Past the first policy's maximum age, still within the second's.
  f.clock_.Advance(std::chrono::seconds(200));
  auto later = f.Exchange(token, "deploy-too");
  REQUIRE_FALSE(later.has_value());
  CHECK(later.error().Reason() == "token_replayed");
  // A token with another jti is another token.
  CHECK(f.Exchange(f.Sign(f.Claims("twice")), "deploy-too").has_value());
}

TEST_CASE("TokenExchange service: the anomaly rules see CI exchanges and stop a runaway run") {
  Fixture f;
  f.UseAnomalyRules("- {rule: rate, max_per_minute: 2}");
  f.UseTrust(TrustYaml());
  auto first = f.Exchange(f.Sign(f.Claims("r1")));
  REQUIRE_MESSAGE(first.has_value(), (first ? "" : first.error().ToString()));
  const std::string sid = (*first)["session_id"];
  REQUIRE(f.Exchange(f.Sign(f.Claims("r2"))).has_value());
  // The third exchange within the minute trips the rule: refused, and the
  // run's session is revoked with every credential it holds.
  auto third = f.Exchange(f.Sign(f.Claims("r3")));
  REQUIRE_FALSE(third.has_value());
  CHECK(third.error().Reason() == "exchange_denied");
  CHECK(third.error().message.find("anomaly rule") != std::string::npos);
  json sessions = f.Sessions();
  REQUIRE(sessions.size() == 1);
  CHECK(sessions[0]["session_id"] == sid);
  CHECK(sessions[0]["state"] == "revoked");
  // Later exchanges of the run find its session ended.
  auto fourth = f.Exchange(f.Sign(f.Claims("r4")));
  REQUIRE_FALSE(fourth.has_value());
  CHECK(fourth.error().Reason() == "ci_session_ended");
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

TEST_CASE("TokenExchange service: a restart does not forget an exchanged token (finding 11)") {
  Fixture f;
  f.UseTrust(TrustYaml());
  const std::string token = f.Sign(f.Claims("once-only"));
  auto first = f.Exchange(token);
  REQUIRE_MESSAGE(first.has_value(), (first ? "" : first.error().ToString()));

  f.Restart();  // the in-memory cache is gone
  f.UseTrust(TrustYaml());
  auto replay = f.Exchange(token);
  REQUIRE_FALSE(replay.has_value());
  CHECK(replay.error().Reason() == "token_replayed");
  CHECK(oidc::ToOAuthError(replay.error()).error == "invalid_grant");
  CHECK(f.fake_->MintCalls() == 0);  // refused before anything was minted

  // Another token of the same run is fine.
  auto other = f.Exchange(f.Sign(f.Claims("another")));
  CHECK_MESSAGE(other.has_value(), (other ? "" : other.error().ToString()));

  // Once the token could no longer be accepted, the sweeper prunes its row.
  f.clock_.Advance(std::chrono::hours(2));
  auto swept = f.service_->Sweep();
  REQUIRE(swept.has_value());
  CHECK(swept->replay_keys_pruned == 2);
}

TEST_CASE(
    "TokenExchange service: the store refuses a replay the lookup missed; the credential is "
    "revoked") {
  Fixture f;
  f.UseTrust(TrustYaml());
  const std::string token = f.Sign(f.Claims("raced"));
  auto first = f.Exchange(token);
  REQUIRE(first.has_value());

  // A second process whose lookup has not seen the first commit yet (fresh
  // memory, blind store read): it mints, then its commit is refused.
  f.Restart();
  f.UseTrust(TrustYaml());
  f.blind_store_->BlindReplayLookups(1);
  auto second = f.Exchange(token);
  REQUIRE_FALSE(second.has_value());
  CHECK(second.error().Reason() == "token_replayed");
  CHECK(f.fake_->Mints() == 1);
  CHECK(f.fake_->Revokes() == 1);  // abandoned, never released
  CHECK(f.fake_->LiveCredentials() == 0);
  CHECK(f.AuditEvents("credential.minted").size() == 1);  // only the first exchange's
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

// ---------------------------------------------------------------------------
// jitctl ci exchange (cli/ci_commands.cc) against a canned broker answer.

class CannedBroker final : public net::HttpClient {
 public:
  Result<net::HttpResponse> Send(const net::HttpRequest& r) override {
    urls.push_back(r.url);
    net::HttpResponse resp;
    resp.status = 200;
    resp.body = answer.dump();
    return resp;
  }
  json answer = {{"access_token", "eyJsecret.access.token"},
                 {"issued_token_type", "urn:ietf:params:oauth:token-type:jwt"},
                 {"token_type", "Bearer"},
                 {"expires_in", 300},
                 {"credential",
                  {{"type", "jwt"},
                   {"token", "eyJsecret.access.token"},
                   {"expires_at", "2026-01-01T00:00:00Z"},
                   {"alg", "ES256"},
                   {"kid", "kid-0123"},
                   {"permissions", {{"contents", "read"}}},
                   {"extra", {{"session_token", "nested-secret%value"}}}}},
                 {"grant_id", "grt_1"},
                 {"session_id", "ses_ci_1"},
                 {"trust_policy", "deploy"},
                 {"scope", "read"}};
  std::vector<std::string> urls;
};

struct CliRun {
  int rc = -1;
  std::string out, err;
  std::vector<std::string> urls;
};

CliRun RunCi(const std::vector<std::string>& argv, std::map<std::string, std::string> env,
             const std::string& base_url = "https://broker.acme.example") {
  auto inv = cli::ParseCommandLine(argv);
  REQUIRE(inv.has_value());
  CannedBroker http;
  std::ostringstream out, err;
  cli::Context ctx;
  ctx.base_url = base_url;
  ctx.json = inv->args.Switch("json");
  ctx.getenv = [&env](const char* name) -> std::optional<std::string> {
    auto it = env.find(name);
    return it == env.end() ? std::nullopt : std::optional<std::string>(it->second);
  };
  ctx.http = &http;
  ctx.out = &out;
  ctx.err = &err;
  CliRun run;
  run.rc = cli::RunOnlineCommand(*inv, ctx);
  run.out = out.str();
  run.err = err.str();
  run.urls = http.urls;
  return run;
}

TEST_CASE("TokenExchange CLI: ci exchange prints metadata only by default") {
  auto r = RunCi({"ci", "exchange", "--audience", "deploy"},
                 {{"JITBROKER_OIDC_TOKEN", "eyJoidc.token.x"}});
  INFO(r.out << r.err);
  CHECK(r.rc == 0);
  CHECK(r.out.find("grant: grt_1") != std::string::npos);
  CHECK(r.out.find("session: ses_ci_1") != std::string::npos);
  CHECK(r.out.find("type: jwt") != std::string::npos);
  CHECK(r.out.find("not shown") != std::string::npos);
  CHECK(r.out.find("secret") == std::string::npos);
  CHECK(r.err.find("secret") == std::string::npos);
  CHECK(r.out.find("eyJoidc") == std::string::npos);
}

TEST_CASE("TokenExchange CLI: under GitHub Actions every printed secret is masked first") {
  const std::map<std::string, std::string> gha = {{"JITBROKER_OIDC_TOKEN", "eyJoidc.token.x"},
                                                  {"GITHUB_ACTIONS", "true"}};
  auto only = RunCi({"ci", "exchange", "--audience", "deploy", "--token-only"}, gha);
  INFO(only.out << only.err);
  CHECK(only.rc == 0);
  // stdout holds the token alone (for $(...)); the masks go to stderr, which
  // the runner parses for workflow commands as well.
  CHECK(only.out == "eyJsecret.access.token\n");
  CHECK(only.err.find("::add-mask::eyJsecret.access.token\n") != std::string::npos);
  CHECK(only.err.find("::add-mask::nested-secret%25value\n") != std::string::npos);
  // Metadata is not masked (masking "ES256" or "read" would hide those words
  // everywhere in the CI log).
  CHECK(only.err.find("::add-mask::jwt") == std::string::npos);
  CHECK(only.err.find("::add-mask::ES256") == std::string::npos);
  CHECK(only.err.find("::add-mask::kid-0123") == std::string::npos);
  CHECK(only.err.find("::add-mask::read") == std::string::npos);
  CHECK(only.err.find("eyJoidc") == std::string::npos);

  auto as_json = RunCi({"ci", "exchange", "--audience", "deploy", "--json"}, gha);
  CHECK(as_json.rc == 0);
  CHECK(as_json.err.find("::add-mask::eyJsecret.access.token") != std::string::npos);
  CHECK(as_json.out.find("eyJsecret.access.token") != std::string::npos);
  auto exported = RunCi({"ci", "exchange", "--audience", "deploy", "--export", "T"}, gha);
  CHECK(exported.rc == 0);
  CHECK(exported.err.find("::add-mask::eyJsecret.access.token") != std::string::npos);
  // Outside GitHub Actions nothing is emitted.
  auto plain = RunCi({"ci", "exchange", "--audience", "deploy", "--token-only"},
                     {{"JITBROKER_OIDC_TOKEN", "eyJoidc.token.x"}});
  CHECK(plain.err.find("add-mask") == std::string::npos);
  // Escaping and multi-line secrets.
  CHECK(cli::internal::AddMaskCommands({"a%b\nc"}) ==
        "::add-mask::a%25b%0Ac\n::add-mask::a%25b\n::add-mask::c\n");
}

TEST_CASE("TokenExchange CLI: ci exchange refuses plain http to a non-loopback broker") {
  for (const char* url : {"http://broker.acme.example:8443", "http://localhost.evil.example",
                          "http://127.0.0.1.evil.example", "http://10.0.0.1"}) {
    CAPTURE(url);
    auto r = RunCi({"ci", "exchange", "--audience", "deploy", "--token-only"},
                   {{"JITBROKER_OIDC_TOKEN", "eyJoidc.token.x"}}, url);
    CHECK(r.rc == 2);
    CHECK(r.err.find("refuses plain http") != std::string::npos);
    CHECK(r.urls.empty());  // nothing was sent
  }
  for (const char* url : {"https://broker.acme.example", "http://127.0.0.1:8443",
                          "http://localhost:8443", "http://[::1]:8443"}) {
    CAPTURE(url);
    CHECK(cli::internal::BrokerUrlIsSafeForCi(url));
  }
}

}  // namespace
}  // namespace jitbroker::testing::exchange_service_test
