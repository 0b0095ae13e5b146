// The issuer conformance suite (issuer_conformance.h) run against every issuer
// type of this build and the test fake: jwt, github_app against FakeGitHub
// and aws_sts against FakeSts on loopback, and FakeIssuer.
#include <filesystem>
#include <functional>
#include <memory>
#include <string>
#include <utility>

#include <doctest/doctest.h>
#include <yaml-cpp/yaml.h>
#include <nlohmann/json.hpp>

#include "broker/config/config.h"
#include "broker/crypto/crypto.h"
#include "broker/crypto/jose.h"
#include "broker/net/http_client.h"
#include "issuers/registry.h"
#include "tests/conformance/issuer_conformance.h"
#include "tests/fakes/fake_clock.h"
#include "tests/fakes/fake_github.h"
#include "tests/fakes/fake_google.h"
#include "tests/fakes/fake_issuer.h"
#include "tests/fakes/fake_sts.h"
#include "tests/support/temp_dir.h"

namespace jitbroker::testing {
namespace {

using nlohmann::json;

// An issuer section as the loader would hand it to a factory.
config::Section SectionOf(const std::string& yaml, const std::string& name) {
  config::Section section(YAML::Load(yaml), std::make_shared<const std::string>("conformance.yaml"),
                          "issuers." + name);
  section.MarkKnown("type");
  return section;
}

// Validate and Create through the registry, as the daemon does.
void BuildThroughRegistry(IssuerUnderTest& u, const std::string& type, const std::string& yaml,
                          const std::string& name, const std::string& data_dir, HttpClient* http) {
  config::Section for_spec = SectionOf(yaml, name);
  IssuerContext vctx{name, &for_spec, data_dir, nullptr, nullptr};
  auto spec = issuers::BuiltinIssuers().Validate(type, vctx);
  REQUIRE_MESSAGE(spec.has_value(), (spec ? "" : spec.error().ToString()));
  // Validate creates nothing (config check runs it where the daemon runs).
  CHECK_FALSE(std::filesystem::exists(data_dir));
  config::Section for_issuer = SectionOf(yaml, name);
  IssuerContext cctx{name, &for_issuer, data_dir, u.clock, http};
  auto issuer = issuers::BuiltinIssuers().Create(type, cctx);
  REQUIRE_MESSAGE(issuer.has_value(), (issuer ? "" : issuer.error().ToString()));
  u.spec = std::move(*spec);
  u.issuer = std::move(*issuer);
}

// The factory's Validate on one section, as `jitctl config check` runs it.
std::function<Status(const std::string&, const std::string&)> ValidateWith(std::string type,
                                                                           std::string name) {
  return [type, name](const std::string& yaml, const std::string& data_dir) -> Status {
    config::Section section = SectionOf(yaml, name);
    IssuerContext ctx{name, &section, data_dir, nullptr, nullptr};
    JITBROKER_ASSIGN_OR_RETURN(auto spec, issuers::BuiltinIssuers().Validate(type, ctx));
    (void)spec;
    return OkStatus();
  };
}

// A value referenced as a secret that must never be echoed.
constexpr const char* kInlineSecret = "jb-conformance-inline-secret-4f1c9a";
constexpr const char* kFileSecret = "jb-conformance-file-secret-8d2e7b";

GrantRequest Request(std::string resource, json scope, std::string issuer) {
  GrantRequest r;
  r.tool = "conformance.tool";
  r.operation = "read";
  r.resource = std::move(resource);
  r.issuer = std::move(issuer);
  r.scope = std::move(scope);
  return r;
}

IssuerConformanceCase JwtCase() {
  IssuerConformanceCase c;
  c.name = "jwt";
  c.make = [] {
    struct Fixture {
      TempDir dir{"issuer-conformance-jwt"};
      FakeClock clock;
    };
    auto f = std::make_shared<Fixture>();
    IssuerUnderTest u;
    u.fixture = f;
    u.clock = &f->clock;
    BuildThroughRegistry(u, "jwt",
                         "{type: jwt, audiences: [mcp.internal, api.internal], max_ttl_seconds: "
                         "900, scope_tiers: {read: read, deploy: write, \"mcp:*\": read}}",
                         "internal", f->dir.File("data"), nullptr);
    return u;
  };
  c.valid =
      Request("jwt://mcp.internal", {{"scopes", {"read", "deploy", "mcp:search"}}}, "internal");
  c.invalid = {
      {"an audience not configured", Request("jwt://other.internal", json::object(), "internal")},
      {"not a jwt:// resource", Request("github://acme/x", json::object(), "internal")},
      {"an undeclared scope", Request("jwt://mcp.internal", {{"scopes", {"admin"}}}, "internal")},
      {"scope.audience disagreeing with the resource",
       Request("jwt://mcp.internal", {{"audience", "api.internal"}}, "internal")},
      {"a scope token with a space",
       Request("jwt://mcp.internal", {{"scopes", {"read deploy"}}}, "internal")},
      {"a GitHub scope",
       Request("jwt://mcp.internal", {{"permissions", {{"contents", "read"}}}}, "internal")},
  };
  // "mcp:search" holds a ':' and is still a jwt scope name.
  c.narrowing_tokens = {"read", "mcp:search"};
  c.verifies_own_tokens = true;
  c.validate_section = ValidateWith("jwt", "internal");
  {
    // A file that is not a key, to reference as signing_key.
    static TempDir secrets("issuer-conformance-jwt-secrets");
    secrets.Write("not-a-key.pem", kFileSecret);
    const std::string not_a_key = secrets.File("not-a-key.pem");
    c.bad_sections = {
        {"no audiences", "{type: jwt}", "issuers.internal.audiences"},
        {"audiences not a list", "{type: jwt, audiences: mcp.internal}",
         "issuers.internal.audiences"},
        {"an unknown key", "{type: jwt, audiences: [a], ttl: 5}", "issuers.internal.ttl"},
        {"RS256", "{type: jwt, audiences: [a], algorithm: RS256}", "issuers.internal.algorithm"},
        {"alg none", "{type: jwt, audiences: [a], algorithm: none}", "issuers.internal.algorithm"},
        {"max_ttl_seconds 0", "{type: jwt, audiences: [a], max_ttl_seconds: 0}",
         "issuers.internal.max_ttl_seconds"},
        {"an inline signing key",
         std::string("{type: jwt, audiences: [a], signing_key: ") + kInlineSecret + "}",
         "issuers.internal.signing_key"},
        {"a missing signing key file",
         "{type: jwt, audiences: [a], signing_key: 'file:" + secrets.File("absent.pem") + "'}",
         "issuers.internal.signing_key"},
        {"a signing key that is not a key",
         "{type: jwt, audiences: [a], signing_key: 'file:" + not_a_key + "'}",
         "issuers.internal.signing_key"},
        {"an unknown tier in scope_tiers", "{type: jwt, audiences: [a], scope_tiers: {x: huge}}",
         "issuers.internal.scope_tiers"},
    };
  }
  c.secrets = {kInlineSecret, kFileSecret};
  return c;
}

// One RSA key for the whole run: generating 2048-bit keys is slow.
const crypto::SigningKey& AppKey() {
  static std::unique_ptr<crypto::SigningKey> key = [] {
    auto k = crypto::SigningKey::Generate(crypto::JwsAlg::kRS256);
    REQUIRE(k.has_value());
    return std::move(*k);
  }();
  return *key;
}

struct GitHubFixture {
  TempDir dir{"issuer-conformance-github"};
  SystemClock clock;  // FakeGitHub checks App JWTs against the host's time
  std::unique_ptr<FakeGitHub> fake;
  std::unique_ptr<HttpClient> http;
  int builds = 0;

  GitHubFixture() {
    FakeGitHubOptions options;
    options.app_public_jwk = AppKey().PublicJwk();
    options.client_id = "Iv23liConformance01";
    fake = FakeGitHub::Start(std::move(options));
    REQUIRE(fake != nullptr);
    FakeInstallation inst;
    inst.id = 42;
    inst.account = "acme";
    inst.repositories = {{"payment-service", 1001}, {"docs", 1002}};
    inst.permissions = {{"contents", "write"},
                        {"metadata", "read"},
                        {"issues", "write"},
                        {"pull_requests", "write"}};
    fake->AddInstallation(inst);
    auto pem = AppKey().ToPem();
    REQUIRE(pem.has_value());
    dir.Write("app.pem", std::string(pem->Reveal()));
    http = net::MakeCurlHttpClient({});
  }
  ~GitHubFixture() {
    http.reset();  // closes pooled keep-alive connections first
    fake.reset();
  }
};

IssuerConformanceCase GitHubAppCase() {
  IssuerConformanceCase c;
  c.name = "github_app";
  // Outlives every issuer built from it (each keeps the fixture alive).
  auto shared = std::make_shared<std::shared_ptr<GitHubFixture>>();
  c.make = [shared] {
    if (!*shared) {
      *shared = std::make_shared<GitHubFixture>();
    }
    std::shared_ptr<GitHubFixture> f = *shared;
    IssuerUnderTest u;
    u.fixture = f;
    u.clock = &f->clock;
    BuildThroughRegistry(u, "github_app",
                         "{type: github_app, client_id: Iv23liConformance01, private_key: file:" +
                             f->dir.File("app.pem") + ", base_url: '" + f->fake->url() +
                             "', allow_http: true, max_ttl_seconds: 3600}",
                         "github", f->dir.File("data-" + std::to_string(++f->builds)),
                         f->http.get());
    return u;
  };
  c.valid = Request("github://acme/payment-service",
                    {{"permissions", {{"contents", "write"}, {"issues", "read"}}}}, "github");
  c.invalid = {
      {"an unknown permission level",
       Request("github://acme/payment-service", {{"permissions", {{"contents", "superuser"}}}},
               "github")},
      {"an organization permission",
       Request("github://acme/payment-service",
               {{"permissions", {{"organization_administration", "write"}}}}, "github")},
      {"no repository", Request("github://acme", json::object(), "github")},
      {"an upper-case name", Request("github://Acme/payment-service", json::object(), "github")},
      {"not a github:// resource", Request("jwt://mcp.internal", json::object(), "github")},
      {"repositories in the scope",
       Request("github://acme/payment-service", {{"repositories", {"payment-service"}}}, "github")},
      {"an empty permission set",
       Request("github://acme/payment-service", {{"permissions", json::object()}}, "github")},
  };
  c.narrowing_tokens = {"contents:read", "issues:read", "contents:write"};
  c.validate_section = ValidateWith("github_app", "github");
  {
    static TempDir secrets("issuer-conformance-github-secrets");
    secrets.Write("not-a-key.pem", kFileSecret);
    const std::string not_a_key = secrets.File("not-a-key.pem");
    auto pem = AppKey().ToPem();
    REQUIRE(pem.has_value());
    secrets.Write("app.pem", std::string(pem->Reveal()));
    const std::string key = "private_key: 'file:" + secrets.File("app.pem") + "'";
    c.bad_sections = {
        {"no client_id nor app_id", "{type: github_app, " + key + "}", "issuers.github"},
        {"no private key", "{type: github_app, client_id: Iv23liConformance01}", "issuers.github"},
        {"an inline private key",
         std::string("{type: github_app, client_id: Iv23liConformance01, private_key: ") +
             kInlineSecret + "}",
         "issuers.github.private_key"},
        {"a private key that is not a key",
         "{type: github_app, client_id: Iv23liConformance01, private_key: 'file:" + not_a_key +
             "'}",
         "issuers.github.private_key"},
        {"an unknown key",
         "{type: github_app, client_id: Iv23liConformance01, " + key +
             ", permissions: {contents: read}}",
         "issuers.github.permissions"},
        {"http without allow_http",
         "{type: github_app, client_id: Iv23liConformance01, " + key +
             ", base_url: 'http://127.0.0.1:1'}",
         "issuers.github.base_url"},
        {"a TTL beyond GitHub's hour",
         "{type: github_app, client_id: Iv23liConformance01, " + key + ", max_ttl_seconds: 7200}",
         "issuers.github.max_ttl_seconds"},
        {"a bad delegation identity key",
         "{type: github_app, client_id: Iv23liConformance01, " + key +
             ", delegation: {identity: GitHub}}",
         "issuers.github.delegation.identity"},
    };
  }
  c.mint_failures = {
      {"a repository the installation does not have",
       Request("github://acme/not-installed", {{"permissions", {{"contents", "read"}}}}, "github")},
      {"an owner without an installation",
       Request("github://other/payment-service", {{"permissions", {{"contents", "read"}}}},
               "github")},
  };
  {
    // The App's private key (its base64 body) must never show in an error.
    auto pem = AppKey().ToPem();
    REQUIRE(pem.has_value());
    const std::string text(pem->Reveal());
    const size_t body = text.find('\n') + 1;
    c.secrets = {kInlineSecret, kFileSecret, text.substr(body, 64)};
  }
  c.credential_active = [shared](const std::string&, std::string_view secret) {
    return (*shared)->fake->TokenActive(std::string(secret));
  };
  return c;
}

struct AwsFixture {
  static constexpr const char* kAkid = "AKIACONFORMANCE0001";
  static constexpr const char* kSecret = "conformance/aws/secret+0123456789abcdefABCDEF";
  TempDir dir{"issuer-conformance-aws"};
  SystemClock clock;  // FakeSts checks X-Amz-Date against the host's time
  std::unique_ptr<FakeSts> fake;
  std::unique_ptr<HttpClient> http;
  int builds = 0;

  AwsFixture() {
    FakeStsOptions o;
    o.keys = {{kAkid, kSecret}};
    o.threads = 32;
    fake = FakeSts::Start(o);
    REQUIRE(fake != nullptr);
    fake->AddRole({"arn:aws:iam::123456789012:role/ci-deploy", 3600, {kAkid}, "", {kAkid}});
    dir.Write("akid", kAkid);
    dir.Write("secret", kSecret);
    http = net::MakeCurlHttpClient({});
  }
  ~AwsFixture() {
    http.reset();
    fake.reset();
  }
};

IssuerConformanceCase AwsStsCase() {
  IssuerConformanceCase c;
  c.name = "aws_sts";
  auto shared = std::make_shared<std::shared_ptr<AwsFixture>>();
  c.make = [shared] {
    if (!*shared) {
      *shared = std::make_shared<AwsFixture>();
    }
    std::shared_ptr<AwsFixture> f = *shared;
    IssuerUnderTest u;
    u.fixture = f;
    u.clock = &f->clock;
    BuildThroughRegistry(u, "aws_sts",
                         "{type: aws_sts, region: us-east-1, endpoint: '" + f->fake->url() +
                             "', iam_endpoint: '" + f->fake->url() +
                             "', allow_http: true, accounts: ['123456789012'], credentials: "
                             "{access_key_id: 'file:" +
                             f->dir.File("akid") +
                             "', secret_access_key: 'file:" + f->dir.File("secret") + "'}}",
                         "aws", f->dir.File("data-" + std::to_string(++f->builds)), f->http.get());
    return u;
  };
  c.valid = Request("aws://123456789012/role/ci-deploy",
                    {{"actions", {"s3:GetObject", "s3:ListBucket"}},
                     {"resources", {"arn:aws:s3:::acme-artifacts/*"}}},
                    "aws");
  c.invalid = {
      {"no actions", Request("aws://123456789012/role/ci-deploy", {{"resources", {"*"}}}, "aws")},
      {"no resources",
       Request("aws://123456789012/role/ci-deploy", {{"actions", {"s3:GetObject"}}}, "aws")},
      {"an action that is not service:Name",
       Request("aws://123456789012/role/ci-deploy",
               {{"actions", {"GetObject"}}, {"resources", {"*"}}}, "aws")},
      {"a role outside accounts",
       Request("aws://999999999999/role/ci-deploy",
               {{"actions", {"s3:GetObject"}}, {"resources", {"*"}}}, "aws")},
      {"a user, not a role", Request("aws://123456789012/user/bob",
                                     {{"actions", {"s3:GetObject"}}, {"resources", {"*"}}}, "aws")},
      {"not an aws:// resource",
       Request("github://acme/x", {{"actions", {"s3:GetObject"}}, {"resources", {"*"}}}, "aws")},
  };
  c.narrowing_tokens = {"s3:GetObject", "s3:ListBucket"};
  c.validate_section = ValidateWith("aws_sts", "aws");
  {
    static TempDir secrets("issuer-conformance-aws-secrets");
    secrets.Write("akid", AwsFixture::kAkid);
    secrets.Write("secret", kFileSecret);
    const std::string creds = "credentials: {access_key_id: 'file:" + secrets.File("akid") +
                              "', secret_access_key: 'file:" + secrets.File("secret") + "'}";
    c.bad_sections = {
        {"no region", "{type: aws_sts, accounts: ['123456789012'], " + creds + "}",
         "issuers.aws.region"},
        {"no accounts", "{type: aws_sts, region: us-east-1, " + creds + "}",
         "issuers.aws.accounts"},
        {"an inline secret key",
         std::string("{type: aws_sts, region: us-east-1, accounts: ['123456789012'], "
                     "credentials: {access_key_id: 'file:") +
             secrets.File("akid") + "', secret_access_key: " + kInlineSecret + "}}",
         "issuers.aws.credentials.secret_access_key"},
        {"an unknown key",
         "{type: aws_sts, region: us-east-1, accounts: ['123456789012'], " + creds + ", role: x}",
         "issuers.aws.role"},
        {"http without allow_http",
         "{type: aws_sts, region: us-east-1, accounts: ['123456789012'], " + creds +
             ", endpoint: 'http://127.0.0.1:1'}",
         "issuers.aws.endpoint"},
    };
  }
  c.mint_failures = {
      {"a role that does not trust the broker",
       Request("aws://123456789012/role/not-trusting",
               {{"actions", {"s3:GetObject"}}, {"resources", {"*"}}}, "aws")},
  };
  c.secrets = {kInlineSecret, kFileSecret, AwsFixture::kSecret};
  c.credential_active = [shared](const std::string&, std::string_view secret) {
    return (*shared)->fake->SecretActive(std::string(secret));
  };
  return c;
}

// The broker federated into Google with a key of its own (workload identity):
// no Google key anywhere.
struct GcpFixture {
  static constexpr const char* kAudience =
      "//iam.googleapis.com/projects/123456/locations/global/workloadIdentityPools/jb/providers/"
      "broker";
  static constexpr const char* kBrokerSa = "jitbroker@acme-prod.iam.gserviceaccount.com";
  static constexpr const char* kTarget = "deployer@acme-prod.iam.gserviceaccount.com";
  TempDir dir{"issuer-conformance-gcp"};
  SystemClock clock;  // FakeGoogle checks the JWT's iat/exp against the host's time
  std::unique_ptr<FakeGoogle> fake;
  std::unique_ptr<HttpClient> http;
  std::string key_pem;
  int builds = 0;

  GcpFixture() {
    auto key = crypto::SigningKey::Generate(crypto::JwsAlg::kES256);
    REQUIRE(key.has_value());
    key_pem = std::string((*key)->ToPem()->Reveal());
    dir.Write("wif.pem", key_pem);
    FakeGoogleOptions o;
    o.threads = 32;
    o.wif_audience = kAudience;
    o.wif_issuer = "https://jitbroker.conformance";
    o.wif_jwk = (*key)->PublicJwk();
    fake = FakeGoogle::Start(o);
    REQUIRE(fake != nullptr);
    fake->AddServiceAccount({kBrokerSa, {fake->FederatedPrincipal("jitbroker-gcp")}, true});
    fake->AddServiceAccount({kTarget, {kBrokerSa}, true});
    fake->AddServiceAccount({"untrusting@acme-prod.iam.gserviceaccount.com", {}, true});
    http = net::MakeCurlHttpClient({});
  }
  ~GcpFixture() {
    http.reset();
    fake.reset();
  }
  std::string Section() const {
    return std::string("{type: gcp, identity: {workload_identity: {audience: '") + kAudience +
           "', service_account: " + kBrokerSa +
           ", issuer: 'https://jitbroker.conformance', private_key: 'file:" + dir.File("wif.pem") +
           "'}}, projects: [acme-prod], allowed_scopes: "
           "['https://www.googleapis.com/auth/devstorage.read_only', "
           "'https://www.googleapis.com/auth/cloud-platform'], allow_http: true, endpoints: "
           "{iamcredentials: '" +
           fake->url() + "', sts: '" + fake->url() + "'}}";
  }
};

IssuerConformanceCase GcpCase() {
  IssuerConformanceCase c;
  c.name = "gcp";
  auto shared = std::make_shared<std::shared_ptr<GcpFixture>>();
  c.make = [shared] {
    if (!*shared) {
      *shared = std::make_shared<GcpFixture>();
    }
    std::shared_ptr<GcpFixture> f = *shared;
    IssuerUnderTest u;
    u.fixture = f;
    u.clock = &f->clock;
    BuildThroughRegistry(u, "gcp", f->Section(), "gcp",
                         f->dir.File("data-" + std::to_string(++f->builds)), f->http.get());
    return u;
  };
  const std::string sa = std::string("gcp://acme-prod/serviceAccounts/") + GcpFixture::kTarget;
  const json read_only = {"https://www.googleapis.com/auth/devstorage.read_only"};
  c.valid =
      Request(sa,
              {{"scopes",
                {"https://www.googleapis.com/auth/devstorage.read_only",
                 "https://www.googleapis.com/auth/cloud-platform"}},
               {"storage",
                {{{"bucket", "acme-artifacts"}, {"prefix", "builds/"}, {"role", "objectViewer"}}}}},
              "gcp");
  c.invalid = {
      {"no scopes", Request(sa, json::object(), "gcp")},
      {"a scope outside allowed_scopes",
       Request(sa, {{"scopes", {"https://www.googleapis.com/auth/compute"}}}, "gcp")},
      {"a project outside projects",
       Request("gcp://other-proj/serviceAccounts/x@other-proj.iam.gserviceaccount.com",
               {{"scopes", read_only}}, "gcp")},
      {"not a service account",
       Request("gcp://acme-prod/buckets/x", {{"scopes", read_only}}, "gcp")},
      {"a storage role that is not one",
       Request(sa,
               {{"scopes", read_only},
                {"storage", {{{"bucket", "acme-artifacts"}, {"role", "admin"}}}}},
               "gcp")},
      {"a prefix with a quote", Request(sa,
                                        {{"scopes", read_only},
                                         {"storage",
                                          {{{"bucket", "acme-artifacts"},
                                            {"prefix", "a')||true||('"},
                                            {"role", "objectViewer"}}}}},
                                        "gcp")},
      {"not a gcp:// resource",
       Request("aws://123456789012/role/x", {{"scopes", read_only}}, "gcp")},
  };
  c.narrowing_tokens = {"https://www.googleapis.com/auth/devstorage.read_only",
                        "https://www.googleapis.com/auth/cloud-platform"};
  c.validate_section = ValidateWith("gcp", "gcp");
  {
    static TempDir secrets("issuer-conformance-gcp-secrets");
    secrets.Write("not-a-key", kFileSecret);
    const std::string scopes = "allowed_scopes: ['https://www.googleapis.com/auth/cloud-platform']";
    c.bad_sections = {
        {"no identity", "{type: gcp, projects: [p1-x], " + scopes + "}", "issuers.gcp.identity"},
        {"no projects", "{type: gcp, identity: {metadata: {}}, " + scopes + "}",
         "issuers.gcp.projects"},
        {"no allowed_scopes", "{type: gcp, identity: {metadata: {}}, projects: [p1-x]}",
         "issuers.gcp.allowed_scopes"},
        {"an inline key file",
         std::string("{type: gcp, identity: {key_file: ") + kInlineSecret +
             "}, projects: [p1-x], " + scopes + "}",
         "issuers.gcp.identity.key_file"},
        {"a key file that is not one",
         "{type: gcp, identity: {key_file: 'file:" + secrets.File("not-a-key") +
             "'}, projects: [p1-x], " + scopes + "}",
         "issuers.gcp.identity.key_file"},
        {"two identities",
         "{type: gcp, identity: {metadata: {}, key_file: 'file:" + secrets.File("not-a-key") +
             "'}, projects: [p1-x], " + scopes + "}",
         "issuers.gcp.identity"},
        {"an unknown key",
         "{type: gcp, identity: {metadata: {}}, projects: [p1-x], " + scopes + ", region: x}",
         "issuers.gcp.region"},
        {"http without allow_http",
         "{type: gcp, identity: {metadata: {}}, projects: [p1-x], " + scopes +
             ", endpoints: {sts: 'http://127.0.0.1:1'}}",
         "issuers.gcp.endpoints.sts"},
    };
  }
  c.mint_failures = {
      {"a service account that does not trust the broker",
       Request("gcp://acme-prod/serviceAccounts/untrusting@acme-prod.iam.gserviceaccount.com",
               {{"scopes", read_only}}, "gcp")},
      {"an unknown service account",
       Request("gcp://acme-prod/serviceAccounts/nobody@acme-prod.iam.gserviceaccount.com",
               {{"scopes", read_only}}, "gcp")},
  };
  c.secrets = {kInlineSecret, kFileSecret};
  c.credential_active = [shared](const std::string&, std::string_view secret) {
    return (*shared)->fake->TokenActive(std::string(secret));
  };
  return c;
}

IssuerConformanceCase FakeCase() {
  IssuerConformanceCase c;
  c.name = "fake";
  auto issuers = std::make_shared<std::shared_ptr<FakeIssuer>>();
  c.make = [issuers] {
    auto clock = std::make_shared<FakeClock>();
    auto issuer = std::make_unique<FakeIssuer>(
        FakeIssuerOptions{.name = "fake", .type = "fake", .scope_items = {"fake:read"}});
    // A non-owning alias for credential_active; the test owns the issuer.
    *issuers = std::shared_ptr<FakeIssuer>(std::shared_ptr<FakeIssuer>(), issuer.get());
    IssuerUnderTest u;
    u.fixture = clock;
    u.clock = clock.get();
    u.issuer = std::move(issuer);
    return u;
  };
  c.valid = Request("fake://thing", json::object(), "fake");
  c.invalid = {{"any issuer-specific scope", Request("fake://thing", {{"x", 1}}, "fake")}};
  c.credential_active = [issuers](const std::string& grant_id, std::string_view) {
    return !(*issuers)->IsRevoked(grant_id);
  };
  return c;
}

TEST_CASE("IssuerConformance: jwt") { RunIssuerConformance(JwtCase()); }

TEST_CASE("IssuerConformance: github_app against the fake GitHub") {
  RunIssuerConformance(GitHubAppCase());
}

TEST_CASE("IssuerConformance: aws_sts against the fake STS") { RunIssuerConformance(AwsStsCase()); }

TEST_CASE("IssuerConformance: gcp against the fake Google") { RunIssuerConformance(GcpCase()); }

TEST_CASE("IssuerConformance: the test fake issuer") { RunIssuerConformance(FakeCase()); }

}  // namespace
}  // namespace jitbroker::testing
