// End-to-end: the real daemon with a gcp issuer (workload identity
// federation) pointed at FakeGoogle on loopback: a grant returns a gcp
// credential the fake accepts, a storage boundary reaches STS, a task scope
// bounds the buckets, Google's refusals come back as stable codes, and a
// revocation is honest about being expiry-only (docs/gcp.md).
#include <algorithm>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <string>

#include <doctest/doctest.h>
#include <httplib.h>
#include <nlohmann/json.hpp>

#include "broker/crypto/jose.h"
#include "tests/fakes/fake_google.h"
#include "tests/support/broker_process.h"
#include "tests/support/child_process.h"
#include "tests/support/oidc_issuer.h"
#include "tests/support/temp_dir.h"

namespace jitbroker::testing {
namespace {

constexpr const char* kGcpItAudience =
    "//iam.googleapis.com/projects/42/locations/global/workloadIdentityPools/jb/providers/broker";
constexpr const char* kGcpItBrokerSa = "jitbroker@acme-prod.iam.gserviceaccount.com";
constexpr const char* kGcpItTarget = "reader@acme-prod.iam.gserviceaccount.com";
constexpr const char* kGcpItReadOnly = "https://www.googleapis.com/auth/devstorage.read_only";
constexpr const char* kGcpItCloudPlatform = "https://www.googleapis.com/auth/cloud-platform";

struct GcpWorld {
  std::string dir;
  std::unique_ptr<FakeGoogle> fake;  // declared before the broker: stops after it
  std::unique_ptr<BrokerProcess> broker;

  // `trust`: the YAML sequence of `trust:` (empty: none).
  explicit GcpWorld(const std::string& trust = "") {
    char tmpl[] = "/tmp/jitbroker-gcp-XXXXXX";
    REQUIRE(::mkdtemp(tmpl) != nullptr);
    dir = tmpl;
    auto key = crypto::SigningKey::Generate(crypto::JwsAlg::kES256);
    REQUIRE(key.has_value());
    std::ofstream(dir + "/wif.pem") << (*key)->ToPem()->Reveal();
    std::filesystem::permissions(
        dir + "/wif.pem", std::filesystem::perms::owner_read | std::filesystem::perms::owner_write);
    // The provider holds the JWKS `jitctl jwks --from-pem` prints, as in
    // docs/gcp.md's set-up; the fake checks the kid and the signature by it.
    auto [jwks_rc, jwks] =
        RunCommand("(" JITCTL_BINARY " jwks --from-pem " + dir + "/wif.pem 2>/dev/null)");
    REQUIRE_MESSAGE(jwks_rc == 0, jwks);
    const nlohmann::json provider_keys = nlohmann::json::parse(jwks)["keys"];
    REQUIRE(provider_keys.size() == 1);
    CHECK(provider_keys[0] == (*key)->PublicJwk());
    CHECK_FALSE(provider_keys[0].contains("d"));  // the public half only
    FakeGoogleOptions fo;
    fo.wif_audience = kGcpItAudience;
    fo.wif_issuer = "https://jitbroker.integration";
    fo.wif_jwk = provider_keys[0];
    fake = FakeGoogle::Start(fo);
    REQUIRE(fake != nullptr);
    fake->AddServiceAccount({kGcpItBrokerSa, {fake->FederatedPrincipal("jitbroker-gcp")}, true});
    fake->AddServiceAccount({kGcpItTarget, {kGcpItBrokerSa}, true});

    BrokerOptions o;
    o.extra_issuers = std::string("  gcp: {type: gcp, identity: {workload_identity: {audience: '") +
                      kGcpItAudience + "', service_account: " + kGcpItBrokerSa +
                      ", issuer: 'https://jitbroker.integration', private_key: 'file:" + dir +
                      "/wif.pem'}}, projects: [acme-prod], allowed_scopes: ['" + kGcpItReadOnly +
                      "', '" + kGcpItCloudPlatform +
                      "'], max_attempts: 1, allow_http: true, endpoints: {iamcredentials: '" +
                      fake->url() + "', sts: '" + fake->url() + "'}}\n";
    o.trust = trust;
    broker = BrokerProcess::Start(o);
  }
  ~GcpWorld() {
    broker.reset();
    fake.reset();
    std::error_code ec;
    std::filesystem::remove_all(dir, ec);
  }

  std::pair<std::string, std::string> Session(nlohmann::json extra = nlohmann::json::object()) {
    nlohmann::json scope = {
        {"resources", {"gcp://acme-prod/*"}}, {"max_tier", "write"}, {"issuers", {"gcp"}}};
    scope.update(extra);
    return broker->OpenSession(broker->admin_key, scope);
  }

  HttpResult Grant(const std::string& sid, const std::string& token, nlohmann::json scope,
                   const std::string& sa = kGcpItTarget) {
    return broker->Post("/v1/sessions/" + sid + "/grants", token,
                        {{"tool", "gcloud.storage"},
                         {"operation", "read"},
                         {"resource", "gcp://acme-prod/serviceAccounts/" + sa},
                         {"issuer", "gcp"},
                         {"scope", std::move(scope)},
                         {"ttl_seconds", 600}});
  }
};

TEST_CASE("gcp: the daemon mints a Google token the upstream accepts; revocation is expiry-only") {
  GcpWorld w;
  auto [sid, token] = w.Session();
  auto g = w.Grant(sid, token, {{"scopes", {kGcpItReadOnly}}});
  INFO(g.body);
  REQUIRE(g.status == 201);
  CHECK(g.json["revocability"] == "expiry_only");
  CHECK(g.json["tier"] == "read");
  const nlohmann::json cred = g.json["credential"];
  CHECK(cred["type"] == "gcp");
  CHECK(cred["service_account"] == kGcpItTarget);
  CHECK(cred["scopes"] == nlohmann::json{kGcpItReadOnly});
  CHECK(cred["expires_at"].is_string());
  const std::string access_token = cred["access_token"];
  CHECK(w.fake->TokenActive(access_token));
  auto issued = w.fake->Find(access_token);
  REQUIRE(issued.has_value());
  CHECK(issued->lifetime_seconds == 600);

  auto del =
      w.broker->Request("DELETE", "/v1/grants/" + g.json["grant_id"].get<std::string>(), token);
  INFO(del.body);
  REQUIRE(del.status == 200);
  CHECK(del.json["outcome"] == "expiry_only");
  CHECK(del.json["residual_seconds"].get<int64_t>() > 500);
  CHECK(w.fake->Violations().empty());
}

TEST_CASE("gcp: jitctl exec hands the token to a tool, which Google's API accepts") {
  GcpWorld w;
  auto [sid, token] = w.Session();
  const std::string list_url = w.fake->url() + "/storage/v1/b/acme-artifacts/o";
  // The parent's key file and metadata host must not reach the tool.
  auto [rc, out] = RunCommand(
      "env JITBROKER_URL=" + w.broker->url() + " JITBROKER_SESSION_ID=" + sid +
      " JITBROKER_SESSION_TOKEN=" + token +
      " GOOGLE_APPLICATION_CREDENTIALS=/nonexistent/key.json "
      "GCE_METADATA_HOST=169.254.1.1 " JITCTL_BINARY
      " exec --tool gcloud.storage --operation read --resource "
      "gcp://acme-prod/serviceAccounts/" +
      std::string(kGcpItTarget) + " --issuer gcp --scope-json '{\"scopes\": [\"" + kGcpItReadOnly +
      "\"]}' -- sh -c 'echo adc=${GOOGLE_APPLICATION_CREDENTIALS:-unset} "
      "meta=${GCE_METADATA_HOST:-unset}; curl -sS -f -H \"Authorization: Bearer "
      "$CLOUDSDK_AUTH_ACCESS_TOKEN\" " +
      list_url + "'");
  INFO(out);
  CHECK(rc == 0);
  CHECK(out.find("adc=unset meta=unset") != std::string::npos);
  CHECK(out.find("\"kind\":\"storage#objects\"") != std::string::npos);
  // Without a granted token, the same call is refused: the fake checks.
  auto [bad_rc, bad] =
      RunCommand("curl -sS -f -H 'Authorization: Bearer ya29.made-up' " + list_url + " 2>&1");
  CHECK(bad_rc != 0);
  CHECK(w.fake->Violations().empty());
}

TEST_CASE("gcp: a CI job trades its OIDC token for a Google token (trust policy)") {
  auto ci = FakeOidcIssuer::Start();
  REQUIRE(ci != nullptr);
  const std::string kid = ci->AddKey(crypto::JwsAlg::kRS256);
  const std::string trust =
      "\n  - name: artifacts-read\n    issuer: " + ci->issuer() +
      "\n    allow_http: true\n    provider: github_actions\n"
      "    audience: jitbroker.gcp.test\n"
      "    claims: {repository_owner_id: \"123\", repository_id: \"456\", "
      "ref: refs/heads/main}\n"
      "    grant: {issuer: gcp, resource: \"gcp://acme-prod/serviceAccounts/" +
      std::string(kGcpItTarget) + "\", scope: {scopes: [\"" + kGcpItReadOnly +
      "\"]}, ttl_seconds: 300}\n";
  GcpWorld w(trust);
  const int64_t now = std::chrono::duration_cast<std::chrono::seconds>(
                          std::chrono::system_clock::now().time_since_epoch())
                          .count();
  const std::string job_token = ci->Sign(ci->GitHubClaims("jitbroker.gcp.test", now), kid);
  httplib::Client client(w.broker->url());
  httplib::Params form = {{"grant_type", "urn:ietf:params:oauth:grant-type:token-exchange"},
                          {"subject_token", job_token},
                          {"subject_token_type", "urn:ietf:params:oauth:token-type:id_token"},
                          {"audience", "artifacts-read"}};
  auto r = client.Post("/v1/token", form);
  REQUIRE(r);
  INFO(r->body);
  REQUIRE(r->status == 200);
  const nlohmann::json answer = nlohmann::json::parse(r->body);
  const std::string access_token = answer["access_token"];
  CHECK(answer["token_type"] == "Bearer");
  CHECK(answer["credential"]["access_token"] == access_token);
  CHECK(w.fake->TokenActive(access_token));
  auto issued = w.fake->Find(access_token);
  REQUIRE(issued.has_value());
  CHECK(issued->service_account == kGcpItTarget);
  CHECK(issued->lifetime_seconds == 300);
  CHECK(w.fake->Violations().empty());
}

TEST_CASE("gcp: a storage boundary through the daemon, bounded by the task scope") {
  GcpWorld w;
  auto [sid, token] =
      w.Session({{"scopes", {kGcpItReadOnly, kGcpItCloudPlatform, "gcs:acme-artifacts:*"}}});
  auto g = w.Grant(
      sid, token,
      {{"scopes", {kGcpItCloudPlatform}},
       {"storage",
        {{{"bucket", "acme-artifacts"}, {"prefix", "builds/"}, {"role", "objectViewer"}}}}});
  INFO(g.body);
  REQUIRE(g.status == 201);
  CHECK(g.json["tier"] == "read");
  auto issued = w.fake->Find(g.json["credential"]["access_token"]);
  REQUIRE(issued.has_value());
  CHECK(issued->kind == "downscoped");

  // A bucket the task scope does not cover.
  auto other = w.Grant(sid, token,
                       {{"scopes", {kGcpItCloudPlatform}},
                        {"storage", {{{"bucket", "acme-secrets"}, {"role", "objectViewer"}}}}});
  INFO(other.body);
  CHECK(other.status == 403);
  // cloud-platform without a boundary is the secret tier: beyond this task.
  auto broad = w.Grant(sid, token, {{"scopes", {kGcpItCloudPlatform}}});
  INFO(broad.body);
  CHECK(broad.status == 403);
}

TEST_CASE("gcp: refusals through the daemon keep stable codes") {
  GcpWorld w;
  auto [sid, token] = w.Session();
  auto scope = w.Grant(sid, token, {{"scopes", {"https://www.googleapis.com/auth/compute"}}});
  INFO(scope.body);
  CHECK(scope.status == 403);
  CHECK(scope.body.find("scope_not_allowed") != std::string::npos);

  auto denied = w.Grant(sid, token, {{"scopes", {kGcpItReadOnly}}},
                        "stranger@acme-prod.iam.gserviceaccount.com");
  INFO(denied.body);
  CHECK(denied.status >= 400);
  CHECK(denied.body.find("gcp_not_found") != std::string::npos);

  w.fake->InjectErrors(503, -1, ":generateAccessToken");
  auto down = w.Grant(sid, token, {{"scopes", {kGcpItReadOnly}}});
  INFO(down.body);
  CHECK(down.status == 503);
  CHECK(down.body.find("gcp_unavailable") != std::string::npos);
}

TEST_CASE("gcp: jitctl gcp serve stands in for the metadata server; Debian's google-auth uses it") {
  GcpWorld w;
  auto [sid, token] = w.Session();
  const std::string agent = "env -u JITBROKER_API_KEY JITBROKER_URL=" + w.broker->url() +
                            " JITBROKER_SESSION_ID=" + sid + " JITBROKER_SESSION_TOKEN=" + token +
                            " " JITCTL_BINARY
                            " gcp serve --resource gcp://acme-prod/serviceAccounts/" +
                            std::string(kGcpItTarget);
  const std::string log = w.dir + "/serve.log";
  auto read_log = [&log] {
    std::ifstream in(log);
    return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
  };
  Child serve = Child::Start(agent + " --scope devstorage.read_only --ttl 600 --project-number " +
                             "123456789012 2>" + log);
  const std::string host = ExportValue(serve.Line(), "GCE_METADATA_HOST");
  CHECK(ExportValue(serve.Line(), "GCE_METADATA_ROOT") == host);
  CHECK(ExportValue(serve.Line(), "GCE_METADATA_IP") == host);
  INFO("serve log: " << read_log());
  REQUIRE(host.starts_with("127.0.0.1:"));
  const int port = std::stoi(host.substr(std::string("127.0.0.1:").size()));

  // Debian's python3-google-auth, with nothing else to find (no key file, no
  // gcloud configuration): Application Default Credentials find a "GCE"
  // metadata server, the token refreshes there, and Google's API (the fake,
  // which checks the token) accepts it.
  const std::string list_url = w.fake->url() + "/storage/v1/b/acme-artifacts/o";
  const std::string client =
      "env -i PATH=/usr/bin:/bin HOME=" + w.dir + " GCE_METADATA_HOST=" + host +
      " GCE_METADATA_ROOT=" + host + " GCE_METADATA_IP=" + host + " /usr/bin/python3 " +
      JITBROKER_SOURCE_DIR + "/tests/support/gcp_metadata_client.py " + list_url;
  auto [rc, out] = RunCommand(client);
  REQUIRE_MESSAGE(rc == 0, out);
  CHECK(out.find("project acme-prod\n") != std::string::npos);
  CHECK(out.find("account " + std::string(kGcpItTarget) + "\n") != std::string::npos);
  CHECK(out.find("scopes " + std::string(kGcpItReadOnly) + "\n") != std::string::npos);
  CHECK(out.find("status 200\n") != std::string::npos);
  const size_t at = out.find("token-seconds ");
  REQUIRE(at != std::string::npos);
  const int seconds = std::stoi(out.substr(at + 14));
  CHECK(seconds > 500);
  CHECK(seconds <= 600);
  // A second client is served from the cache: one grant, one Google token.
  auto [rc2, out2] = RunCommand(client);
  CHECK_MESSAGE(rc2 == 0, out2);
  const auto issued = w.fake->IssuedTokens();
  CHECK(std::count_if(issued.begin(), issued.end(), [](const FakeGoogle::Issued& i) {
          return i.service_account == kGcpItTarget;
        }) == 1);

  // gcloud too, where it is installed (Google's own apt repository, not
  // Debian's): it finds the "GCE" account and prints the grant's token.
  if (std::filesystem::exists("/usr/bin/gcloud")) {
    auto [g_rc, g_out] =
        RunCommand("env -i PATH=/usr/bin:/bin HOME=" + w.dir + " CLOUDSDK_CONFIG=" + w.dir +
                   "/gcloud GCE_METADATA_ROOT=" + host + " GCE_METADATA_IP=" + host +
                   " gcloud auth print-access-token --quiet");
    INFO(g_out);
    CHECK(g_rc == 0);
    CHECK(w.fake->TokenActive(g_out.substr(0, g_out.find('\n'))));
  } else {
    MESSAGE("gcloud is not installed: only python3-google-auth checked jitctl gcp serve");
  }

  // What Google's server refuses, this one refuses, and never with the token.
  httplib::Client c("127.0.0.1", port);
  const std::string path = "/computeMetadata/v1/instance/service-accounts/default/token";
  const httplib::Headers flavor = {{"Metadata-Flavor", "Google"}};
  auto good = c.Get(path, flavor);
  REQUIRE(good);
  CHECK(good->status == 200);
  CHECK(good->get_header_value("Metadata-Flavor") == "Google");
  const std::string access_token = nlohmann::json::parse(good->body)["access_token"];
  CHECK(w.fake->TokenActive(access_token));
  struct Refusal {
    httplib::Result result;
    int status;
    const char* code;
  };
  Refusal refusals[] = {
      {c.Get(path), 403, "missing_metadata_flavor"},
      {c.Get(path, {{"Metadata-Flavor", "google"}}), 403, "missing_metadata_flavor"},
      {c.Get(path, {{"Metadata-Flavor", "Google"}, {"X-Forwarded-For", "10.0.0.1"}}), 403,
       "forwarded_request"},
      {c.Get(path, {{"Metadata-Flavor", "Google"}, {"Host", "attacker.example"}}), 403,
       "host_not_allowed"},
      {c.Post(path, flavor, "", "text/plain"), 405, "method_not_allowed"},
      {c.Get(path + "?scopes=" + std::string(kGcpItCloudPlatform), flavor), 400,
       "scope_not_granted"},
      {c.Get(path + "?wait_for_change=true", flavor), 400, "not_supported"},
      {c.Get("/computeMetadata/v1/instance/service-accounts/default/identity?audience=x", flavor),
       404, "not_supported"},
      {c.Get("/computeMetadata/v1/instance/service-accounts/other@acme-prod.iam."
             "gserviceaccount.com/token",
             flavor),
       404, "not_found"},
      {c.Get("/computeMetadata/v1/instance/attributes/", flavor), 404, "not_found"},
  };
  for (const Refusal& r : refusals) {
    REQUIRE(r.result);
    INFO(r.result->body);
    CHECK(r.result->status == r.status);
    CHECK(r.result->body.find(std::string("\"code\":\"") + r.code + "\"") != std::string::npos);
    CHECK(r.result->body.find(access_token) == std::string::npos);
  }
  auto narrower = c.Get(path + "?scopes=" + std::string(kGcpItReadOnly), flavor);
  REQUIRE(narrower);
  CHECK(narrower->status == 200);

  CHECK(serve.Stop(SIGTERM) == 0);
  CHECK(read_log().find(access_token) == std::string::npos);
  CHECK(w.fake->Violations().empty());

  // A first grant the broker denies (cloud-platform unbounded is beyond a
  // task capped at write) exits 4 before listening; a malformed resource is
  // a usage error.
  auto [denied_rc, denied] = RunCommand(agent + " --scope cloud-platform");
  CHECK_MESSAGE(denied_rc == 4, denied);
  CHECK(denied.find("export") == std::string::npos);
  auto [usage_rc, usage] = RunCommand(agent + "x --scope cloud-platform --storage nobucket");
  CHECK_MESSAGE(usage_rc == 2, usage);
}

TEST_CASE("gcp: jitctl jwks --from-pem prints the public JWKS of RSA and P-256 keys only") {
  TempDir dir("jitbroker-jwks");
  auto rsa = crypto::SigningKey::Generate(crypto::JwsAlg::kRS256);
  REQUIRE(rsa.has_value());
  std::ofstream(dir.File("rsa.pem")) << (*rsa)->ToPem()->Reveal();
  auto [rc, out] =
      RunCommand("(" JITCTL_BINARY " jwks --from-pem " + dir.File("rsa.pem") + " 2>/dev/null)");
  REQUIRE_MESSAGE(rc == 0, out);
  const nlohmann::json keys = nlohmann::json::parse(out)["keys"];
  CHECK(keys == nlohmann::json::array({(*rsa)->PublicJwk()}));
  for (const char* secret : {"d", "p", "q", "dp", "dq", "qi"}) {
    CHECK_FALSE(keys[0].contains(secret));
  }

  auto ed = crypto::SigningKey::Generate(crypto::JwsAlg::kEd25519);
  REQUIRE(ed.has_value());
  std::ofstream(dir.File("ed.pem")) << (*ed)->ToPem()->Reveal();
  std::ofstream(dir.File("big.pem")) << std::string(100000, 'A');
  for (const std::string& bad :
       {dir.File("ed.pem"), dir.File("big.pem"), dir.File("none.pem"), std::string("/dev/zero")}) {
    CAPTURE(bad);
    auto [bad_rc, bad_out] = RunCommand(JITCTL_BINARY " jwks --from-pem " + bad);
    CHECK(bad_rc == 1);
    CHECK(bad_out.find("keys") == std::string::npos);
  }
}

}  // namespace
}  // namespace jitbroker::testing
