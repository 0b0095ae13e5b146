// The gcp issuer (issuers/gcp/) against FakeGoogle on loopback: each identity
// mode (workload identity federation, key file, metadata server) with the
// JWT the broker signs verified independently by python3-cryptography, the
// generateAccessToken and boundary exchange it sends, the credential it
// returns, tiers, refusals before any call, Google's errors mapped to stable
// codes, retries (429/5xx only) and timeouts.
#include <doctest/doctest.h>

#include <cstdio>
#include <fstream>
#include <string>
#include <vector>

#include <yaml-cpp/yaml.h>
#include <nlohmann/json.hpp>

#include "broker/common/time_util.h"
#include "broker/config/config.h"
#include "broker/crypto/crypto.h"
#include "broker/crypto/jose.h"
#include "broker/net/http_client.h"
#include "broker/net/url.h"
#include "issuers/gcp/broker_identity.h"
#include "issuers/gcp/gcp_issuer.h"
#include "issuers/gcp/gcp_scope.h"
#include "issuers/gcp/google_api.h"
#include "tests/fakes/fake_google.h"
#include "tests/support/temp_dir.h"

namespace jitbroker::issuers::gcp {
namespace {

using nlohmann::json;
using testing::FakeGoogle;
using testing::FakeGoogleOptions;
using testing::TempDir;

constexpr const char* kGcpAudience =
    "//iam.googleapis.com/projects/123456/locations/global/workloadIdentityPools/jb/providers/"
    "broker";
constexpr const char* kGcpBrokerSa = "jitbroker@acme-prod.iam.gserviceaccount.com";
constexpr const char* kGcpTarget = "deployer@acme-prod.iam.gserviceaccount.com";
constexpr const char* kGcpReadOnly = "https://www.googleapis.com/auth/devstorage.read_only";
constexpr const char* kGcpCloudPlatform = "https://www.googleapis.com/auth/cloud-platform";

std::string GcpRun(const std::string& cmd) {
  FILE* p = ::popen(cmd.c_str(), "r");
  REQUIRE(p != nullptr);
  std::string out;
  char buf[512];
  while (std::fgets(buf, sizeof(buf), p) != nullptr) {
    out += buf;
  }
  CHECK(::pclose(p) == 0);
  return out;
}

struct GcpEnv {
  TempDir dir{"gcp-issuer-test"};
  SystemClock clock;
  std::unique_ptr<crypto::SigningKey> wif_key;
  std::unique_ptr<crypto::SigningKey> sa_key;
  std::unique_ptr<FakeGoogle> fake;
  std::unique_ptr<HttpClient> http;
  int sleeps = 0;

  GcpEnv() {
    wif_key = std::move(*crypto::SigningKey::Generate(crypto::JwsAlg::kRS256));
    sa_key = std::move(*crypto::SigningKey::Generate(crypto::JwsAlg::kRS256));
    dir.Write("wif.pem", std::string(wif_key->ToPem()->Reveal()));
    dir.Write("sa.json", json{{"type", "service_account"},
                              {"project_id", "acme-prod"},
                              {"private_key_id", "k1"},
                              {"private_key", std::string(sa_key->ToPem()->Reveal())},
                              {"client_email", kGcpBrokerSa},
                              {"token_uri", "https://evil.example/token"}}
                             .dump());
    FakeGoogleOptions o;
    o.wif_audience = kGcpAudience;
    o.wif_issuer = "https://jitbroker.test";
    o.wif_jwk = wif_key->PublicJwk();
    o.key_files = {{"k1", {kGcpBrokerSa, sa_key->PublicJwk()}}};
    o.metadata_account = kGcpBrokerSa;
    fake = FakeGoogle::Start(o);
    REQUIRE(fake != nullptr);
    fake->AddServiceAccount({kGcpBrokerSa, {fake->FederatedPrincipal("jb-subject")}, true});
    fake->AddServiceAccount({kGcpTarget, {kGcpBrokerSa}, true});
    http = net::MakeCurlHttpClient({});
  }

  std::string Identity(const std::string& mode) const {
    if (mode == "workload_identity") {
      return std::string("{workload_identity: {audience: '") + kGcpAudience +
             "', service_account: " + kGcpBrokerSa +
             ", issuer: 'https://jitbroker.test', subject: jb-subject, private_key: 'file:" +
             dir.File("wif.pem") + "'}}";
    }
    if (mode == "key_file") {
      return "{key_file: 'file:" + dir.File("sa.json") + "'}";
    }
    return "{metadata: {}}";
  }

  Result<std::unique_ptr<Issuer>> TryBuild(const std::string& mode = "workload_identity",
                                           const std::string& extra = "") {
    const std::string yaml = "{type: gcp, identity: " + Identity(mode) +
                             ", projects: [acme-prod], allowed_scopes: ['" + kGcpReadOnly + "', '" +
                             kGcpCloudPlatform +
                             "'], allow_http: true, endpoints: {iamcredentials: '" + fake->url() +
                             "', sts: '" + fake->url() + "', oauth2: '" + fake->url() +
                             "', metadata: '" + fake->url() + "'}" + extra + "}";
    config::Section section(YAML::Load(yaml), std::make_shared<const std::string>("t.yaml"),
                            "issuers.gcp");
    section.MarkKnown("type");
    IssuerContext ctx{"gcp", &section, dir.File("data"), &clock, http.get()};
    return CreateGcpIssuerForTesting(ctx,
                                     GcpHooks{[this](std::chrono::milliseconds) { ++sleeps; }});
  }
  std::unique_ptr<Issuer> Build(const std::string& mode = "workload_identity",
                                const std::string& extra = "") {
    auto issuer = TryBuild(mode, extra);
    REQUIRE_MESSAGE(issuer.has_value(), (issuer ? "" : issuer.error().ToString()));
    return std::move(*issuer);
  }

  MintRequest Mint(json scope, int64_t ttl = 600, std::string sa = kGcpTarget) const {
    MintRequest m;
    m.grant_id = "grt_gcp1";
    m.request.tool = "gcloud";
    m.request.operation = "read";
    m.request.issuer = "gcp";
    m.request.resource = "gcp://acme-prod/serviceAccounts/" + sa;
    m.request.scope = std::move(scope);
    m.ttl_seconds = ttl;
    m.now = clock.Now();
    return m;
  }

  // The broker's last JWT, verified by python3-cryptography with `key`.
  json VerifyIndependently(const crypto::SigningKey& key) const {
    const std::string jwt = fake->LastVerifiedJwt();
    REQUIRE_FALSE(jwt.empty());
    dir.Write("jwt.txt", jwt);
    dir.Write("key.pem", std::string(key.ToPem()->Reveal()));
    const std::string out = GcpRun("/usr/bin/python3 " + std::string(JITBROKER_SOURCE_DIR) +
                                   "/tests/support/verify_google_jwt.py " + dir.File("jwt.txt") +
                                   " " + dir.File("key.pem") + " 2>&1");
    CAPTURE(out);
    return json::parse(out);
  }
};

std::string GcpSecretOf(const MintResult& r) {
  return std::string(r.secrets.at(0).second.Reveal());
}

TEST_CASE("gcp: workload identity federation, then generateAccessToken with the grant's TTL") {
  GcpEnv env;
  auto issuer = env.Build();
  auto minted = issuer->Mint(env.Mint({{"scopes", {kGcpReadOnly}}}, 600));
  REQUIRE_MESSAGE(minted.has_value(), (minted ? "" : minted.error().ToString()));
  CHECK(minted->type == "gcp");
  REQUIRE(minted->secrets.size() == 1);
  CHECK(minted->secrets[0].first == "access_token");
  const std::string token = GcpSecretOf(*minted);
  auto issued = env.fake->Find(token);
  REQUIRE(issued.has_value());
  CHECK(issued->kind == "generated");
  CHECK(issued->service_account == kGcpTarget);
  CHECK(issued->scopes == std::vector<std::string>{kGcpReadOnly});
  CHECK(issued->lifetime_seconds == 600);
  CHECK(minted->fields == json{{"expires_at", FormatRfc3339(minted->expires_at)},
                               {"service_account", kGcpTarget},
                               {"scopes", {kGcpReadOnly}}});
  CHECK(minted->fingerprint_sha256 == crypto::Sha256Hex(token));
  CHECK(minted->fields.dump().find(token) == std::string::npos);
  CHECK(minted->audit_fields.dump().find(token) == std::string::npos);
  CHECK(env.fake->Violations().empty());

  // The JWT the broker signed, checked by an independent implementation.
  const json v = env.VerifyIndependently(*env.wif_key);
  CHECK(v["header"]["alg"] == "RS256");
  CHECK(v["claims"]["iss"] == "https://jitbroker.test");
  CHECK(v["claims"]["sub"] == "jb-subject");
  CHECK(v["claims"]["aud"] == std::string("https:") + kGcpAudience);
  CHECK(v["claims"]["exp"].get<int64_t>() - v["claims"]["iat"].get<int64_t>() == 600);

  // The broker's own token is reused; minted tokens are never cached.
  auto again = issuer->Mint(env.Mint({{"scopes", {kGcpReadOnly}}}, 600));
  REQUIRE(again.has_value());
  CHECK(GcpSecretOf(*again) != token);
  size_t federated = 0;
  for (const auto& i : env.fake->IssuedTokens()) {
    federated += i.kind == "federated" ? 1 : 0;
  }
  CHECK(federated == 1);

  // Revocation is expiry-only: the outcome says how long the token lives.
  RevokeRequest r{"grt_gcp1", minted->revocation_handle.Clone(), minted->expires_at,
                  env.clock.Now()};
  auto out = issuer->Revoke(r);
  REQUIRE(out.has_value());
  CHECK(out->kind == RevokeOutcomeKind::kExpiryOnly);
  CHECK(out->residual_seconds > 590);
  CHECK(out->residual_seconds <= 600);
  CHECK(env.fake->TokenActive(token));  // nothing Google can do but expire it
}

TEST_CASE("gcp: a key file's RS256 JWT-bearer grant at the OAuth endpoint") {
  GcpEnv env;
  auto issuer = env.Build("key_file");
  auto minted = issuer->Mint(env.Mint({{"scopes", {kGcpReadOnly}}}));
  REQUIRE_MESSAGE(minted.has_value(), (minted ? "" : minted.error().ToString()));
  const json v = env.VerifyIndependently(*env.sa_key);
  CHECK(v["header"]["alg"] == "RS256");
  CHECK(v["header"]["kid"] == "k1");
  CHECK(v["claims"]["iss"] == kGcpBrokerSa);
  // The key file's token_uri is not followed: the configured endpoint is.
  CHECK(v["claims"]["aud"] == env.fake->url() + "/token");
  CHECK(v["claims"]["scope"] == kGcpCloudPlatform);
  CHECK(minted->audit_fields["identity"] == "key_file");
}

TEST_CASE("gcp: the metadata server's token") {
  GcpEnv env;
  auto issuer = env.Build("metadata");
  auto minted = issuer->Mint(env.Mint({{"scopes", {kGcpReadOnly}}}));
  REQUIRE_MESSAGE(minted.has_value(), (minted ? "" : minted.error().ToString()));
  CHECK(minted->audit_fields["identity"] == "metadata");
}

TEST_CASE("gcp: a storage boundary is exchanged at STS and the unbounded token never leaves") {
  GcpEnv env;
  auto issuer = env.Build();
  auto minted = issuer->Mint(
      env.Mint({{"scopes", {kGcpCloudPlatform}},
                {"storage",
                 {{{"bucket", "acme-artifacts"}, {"prefix", "builds/"}, {"role", "objectViewer"}},
                  {{"bucket", "acme-drop"}, {"role", "objectCreator"}}}}}));
  REQUIRE_MESSAGE(minted.has_value(), (minted ? "" : minted.error().ToString()));
  auto issued = env.fake->Find(GcpSecretOf(*minted));
  REQUIRE(issued.has_value());
  CHECK(issued->kind == "downscoped");
  const json rules = issued->boundary["accessBoundaryRules"];
  REQUIRE(rules.size() == 2);
  CHECK(rules[0]["availableResource"] ==
        "//storage.googleapis.com/projects/_/buckets/acme-artifacts");
  CHECK(rules[0]["availablePermissions"] == json{"inRole:roles/storage.objectViewer"});
  CHECK(rules[0]["availabilityCondition"]["expression"] ==
        "resource.name.startsWith('projects/_/buckets/acme-artifacts/objects/builds/')");
  CHECK(rules[1]["availablePermissions"] == json{"inRole:roles/storage.objectCreator"});
  CHECK_FALSE(rules[1].contains("availabilityCondition"));
  CHECK(minted->audit_fields["access_boundary"].size() == 2);
  CHECK(env.fake->Violations().empty());
}

TEST_CASE("gcp: tiers from what the token can do") {
  const Tier secret = Tier::kSecret;
  auto tier = [&](json scope) {
    auto s = ParseGcpScope(scope, {kGcpReadOnly, kGcpCloudPlatform,
                                   "https://www.googleapis.com/auth/devstorage.read_write"});
    REQUIRE_MESSAGE(s.has_value(), (s ? "" : s.error().ToString()));
    return GcpScopeTier(*s, secret);
  };
  CHECK(tier({{"scopes", {kGcpReadOnly}}}) == Tier::kRead);
  CHECK(tier({{"scopes", {kGcpCloudPlatform}}}) == Tier::kSecret);
  CHECK(tier({{"scopes", {"https://www.googleapis.com/auth/devstorage.read_write"}}}) ==
        Tier::kSecret);
  CHECK(tier({{"scopes", {kGcpCloudPlatform}},
              {"storage", {{{"bucket", "b-1"}, {"role", "objectViewer"}}}}}) == Tier::kRead);
  CHECK(tier({{"scopes", {kGcpCloudPlatform}},
              {"storage", {{{"bucket", "b-1"}, {"role", "objectAdmin"}}}}}) == Tier::kWrite);
  CHECK(tier({{"scopes", {kGcpCloudPlatform}},
              {"storage", {{{"bucket", "b-1"}, {"role", "objectCreator"}}}}}) == Tier::kWrite);
  // A read-only scope cannot write whatever the boundary's role.
  CHECK(tier({{"scopes", {kGcpReadOnly}},
              {"storage", {{{"bucket", "b-1"}, {"role", "objectCreator"}}}}}) == Tier::kRead);

  GcpEnv env;
  auto issuer = env.Build("metadata", ", unbounded_tier: merge_deploy");
  auto t = issuer->ImpliedTier(env.Mint({{"scopes", {kGcpCloudPlatform}}}).request);
  REQUIRE(t.has_value());
  CHECK(*t == Tier::kMergeDeploy);
  auto items = issuer->ScopeItems(
      env.Mint({{"scopes", {kGcpCloudPlatform}},
                {"storage", {{{"bucket", "acme-artifacts"}, {"role", "objectViewer"}}}}})
          .request);
  REQUIRE(items.has_value());
  CHECK(*items == std::vector<std::string>{kGcpCloudPlatform, "gcs:acme-artifacts:objectViewer"});
}

TEST_CASE(
    "gcp: scopes, projects and boundaries outside the configuration are refused before any call") {
  GcpEnv env;
  auto issuer = env.Build();
  const size_t before = env.fake->Requests();
  auto refused = [&](MintRequest m, std::string_view reason) {
    auto r = issuer->Mint(m);
    REQUIRE_FALSE(r.has_value());
    CHECK(r.error().reason == reason);
    auto t = issuer->ImpliedTier(m.request);
    REQUIRE_FALSE(t.has_value());
    CHECK(t.error().reason == reason);
  };
  refused(env.Mint({{"scopes", {"https://www.googleapis.com/auth/compute"}}}), "scope_not_allowed");
  MintRequest other = env.Mint({{"scopes", {kGcpReadOnly}}});
  other.request.resource = "gcp://other-prod/serviceAccounts/x@other-prod.iam.gserviceaccount.com";
  refused(other, "project_not_allowed");
  refused(env.Mint({{"scopes", {kGcpReadOnly}}, {"storage", json::array()}}), "invalid_scope");
  refused(env.Mint({{"scopes", {"openid"}},
                    {"storage", {{{"bucket", "b-1"}, {"role", "objectViewer"}}}}}),
          "scope_not_allowed");
  json eleven = json::array();
  for (int i = 0; i < 11; ++i) {
    eleven.push_back({{"bucket", "b-" + std::to_string(i)}, {"role", "objectViewer"}});
  }
  refused(env.Mint({{"scopes", {kGcpReadOnly}}, {"storage", eleven}}), "invalid_scope");
  refused(
      env.Mint({{"scopes", {kGcpReadOnly}},
                {"storage", {{{"bucket", "b-1"}, {"prefix", "../x"}, {"role", "objectViewer"}}}}}),
      "invalid_scope");
  CHECK(env.fake->Requests() == before);
}

TEST_CASE("gcp: Google's errors map to stable codes; only 429 and 5xx are retried") {
  GcpEnv env;
  auto issuer = env.Build();
  const json scope = {{"scopes", {kGcpReadOnly}}};
  REQUIRE(issuer->Mint(env.Mint(scope)).has_value());  // the broker's identity is fetched

  SUBCASE("429 then success") {
    env.fake->InjectErrors(429, 1, ":generateAccessToken");
    auto r = issuer->Mint(env.Mint(scope));
    REQUIRE_MESSAGE(r.has_value(), (r ? "" : r.error().ToString()));
    CHECK(env.sleeps == 1);
  }
  SUBCASE("429 throughout") {
    env.fake->InjectErrors(429, -1, ":generateAccessToken");
    auto r = issuer->Mint(env.Mint(scope));
    REQUIRE_FALSE(r.has_value());
    CHECK(r.error().reason == "gcp_throttled");
    CHECK(r.error().message.find("RESOURCE_EXHAUSTED") != std::string::npos);
    CHECK(env.sleeps == 2);
  }
  SUBCASE("503 throughout") {
    env.fake->InjectErrors(503, -1, ":generateAccessToken");
    auto r = issuer->Mint(env.Mint(scope));
    REQUIRE_FALSE(r.has_value());
    CHECK(r.error().reason == "gcp_unavailable");
    CHECK(r.error().message.find("UNAVAILABLE") != std::string::npos);
  }
  SUBCASE("403 is not retried") {
    env.fake->InjectErrors(403, 1, ":generateAccessToken");
    auto r = issuer->Mint(env.Mint(scope));
    REQUIRE_FALSE(r.has_value());
    CHECK(r.error().reason == "gcp_permission_denied");
    CHECK(r.error().message.find("PERMISSION_DENIED") != std::string::npos);
    CHECK(env.sleeps == 0);
  }
  SUBCASE("a disabled service account") {
    env.fake->SetEnabled(kGcpTarget, false);
    auto r = issuer->Mint(env.Mint(scope));
    REQUIRE_FALSE(r.has_value());
    CHECK(r.error().reason == "gcp_permission_denied");
  }
  SUBCASE("an unknown service account") {
    auto r = issuer->Mint(env.Mint(scope, 600, "nobody@acme-prod.iam.gserviceaccount.com"));
    REQUIRE_FALSE(r.has_value());
    CHECK(r.error().reason == "gcp_not_found");
  }
  SUBCASE("a boundary exchange refused") {
    env.fake->InjectErrors(400, 1, "/v1/token");
    auto r = issuer->Mint(env.Mint({{"scopes", {kGcpReadOnly}},
                                    {"storage", {{{"bucket", "b-1"}, {"role", "objectViewer"}}}}}));
    REQUIRE_FALSE(r.has_value());
    CHECK(r.error().reason == "gcp_invalid_request");
  }
}

TEST_CASE("gcp: the broker's identity refused, and timeouts") {
  GcpEnv env;
  SUBCASE("a JWT the provider does not accept") {
    env.fake->InjectErrors(400, -1, "/v1/token");
    auto issuer = env.Build();
    auto r = issuer->Mint(env.Mint({{"scopes", {kGcpReadOnly}}}));
    REQUIRE_FALSE(r.has_value());
    CHECK(r.error().reason == "gcp_auth_failed");
  }
  SUBCASE("an upstream slower than timeout_ms") {
    auto issuer = env.Build("workload_identity", ", timeout_ms: 200, call_deadline_ms: 1000");
    env.fake->SetLatency(std::chrono::milliseconds(600));
    auto r = issuer->Mint(env.Mint({{"scopes", {kGcpReadOnly}}}));
    REQUIRE_FALSE(r.has_value());
    CHECK(r.error().reason == "gcp_unavailable");
    env.fake->SetLatency(std::chrono::milliseconds(0));
  }
}

TEST_CASE("gcp: Google's error bodies and key files are read without trusting their types") {
  CHECK(GoogleErrorText(R"({"error":{"code":403,"message":"no","status":"PERMISSION_DENIED"}})") ==
        "PERMISSION_DENIED: no");
  CHECK(GoogleErrorText(R"({"error":"invalid_grant","error_description":"bad JWT"})") ==
        "invalid_grant: bad JWT");
  CHECK(GoogleErrorText(R"({"error":{"status":5,"message":["x"]}})") == "(no status)");
  CHECK(GoogleErrorText(R"({"error":"invalid_grant","error_description":{"a":1}})") ==
        "invalid_grant");
  CHECK(GoogleErrorText("<html>502</html>").empty());
  CHECK(GoogleErrorText(std::string(R"({"error":{"status":"X","message":")") +
                        std::string(1000, 'a') + "\n\"}}")
            .size() < 400);

  for (const char* text :
       {"", "[]", R"({"type": 5})", R"({"type": "authorized_user"})",
        R"({"type": "service_account", "client_email": "a@b", "private_key_id": "k"})",
        R"({"type": "service_account", "client_email": "a@b", "private_key_id": "k",
            "private_key": "-----BEGIN PRIVATE KEY-----\nnot a key\n-----END PRIVATE KEY-----\n"})"}) {
    CAPTURE(text);
    auto parsed = ParseKeyFile(SecretValue(std::string(text)));
    REQUIRE_FALSE(parsed.has_value());
    CHECK(parsed.error().message.find("not a key") == std::string::npos);
  }
}

TEST_CASE("gcp: a broker token Google no longer accepts is fetched again, once") {
  GcpEnv env;
  auto issuer = env.Build();
  REQUIRE(issuer->Mint(env.Mint({{"scopes", {kGcpReadOnly}}})).has_value());
  env.fake->InjectErrors(401, 1, ":generateAccessToken");
  auto r = issuer->Mint(env.Mint({{"scopes", {kGcpReadOnly}}}));
  REQUIRE_MESSAGE(r.has_value(), (r ? "" : r.error().ToString()));
  size_t federated = 0;
  for (const auto& i : env.fake->IssuedTokens()) {
    federated += i.kind == "federated" ? 1 : 0;
  }
  CHECK(federated == 2);
  env.fake->InjectErrors(401, -1, ":generateAccessToken");
  auto refused = issuer->Mint(env.Mint({{"scopes", {kGcpReadOnly}}}));
  REQUIRE_FALSE(refused.has_value());
  CHECK(refused.error().reason == "gcp_auth_failed");
}

TEST_CASE(
    "gcp: FakeGoogle models Google: a disabled account's tokens revive when re-enabled, "
    "options may be encoded twice") {
  GcpEnv env;
  auto issuer = env.Build();
  auto minted = issuer->Mint(env.Mint({{"scopes", {kGcpReadOnly}}}));
  REQUIRE(minted.has_value());
  const std::string token = GcpSecretOf(*minted);
  env.fake->SetEnabled(kGcpTarget, false);
  CHECK_FALSE(env.fake->TokenActive(token));
  env.fake->SetEnabled(kGcpTarget, true);
  CHECK(env.fake->TokenActive(token));

  const std::string options =
      AccessBoundaryOptions({StorageRule{"acme-artifacts", "", "objectViewer"}});
  for (const std::string& encoded : {options, net::PercentEncode(options, true)}) {
    HttpRequest req;
    req.method = "POST";
    req.url = env.fake->url() + "/v1/token";
    req.headers = {{"Content-Type", "application/x-www-form-urlencoded"}};
    req.body =
        FormEncode({{"grant_type", "urn:ietf:params:oauth:grant-type:token-exchange"},
                    {"subject_token_type", "urn:ietf:params:oauth:token-type:access_token"},
                    {"requested_token_type", "urn:ietf:params:oauth:token-type:access_token"},
                    {"subject_token", token},
                    {"options", encoded}});
    auto res = env.http->Send(req);
    REQUIRE(res.has_value());
    CAPTURE(res->body);
    CHECK(res->status == 200);
  }
}

}  // namespace
}  // namespace jitbroker::issuers::gcp
