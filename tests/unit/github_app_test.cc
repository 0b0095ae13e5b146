// The github_app issuer against FakeGitHub on loopback (tests/fakes), plus
// its pure parts (permissions, App JWT, cache) and the pooled curl client.
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include <doctest/doctest.h>
#include <httplib.h>

#include "broker/crypto/crypto.h"
#include "broker/crypto/jose.h"
#include "broker/net/http_client.h"
#include "issuers/github_app/app_jwt.h"
#include "issuers/github_app/github_api.h"
#include "issuers/github_app/github_app_issuer.h"
#include "issuers/github_app/permissions.h"
#include "issuers/github_app/ttl_cache.h"
#include "tests/fakes/fake_clock.h"
#include "tests/fakes/fake_github.h"
#include "broker/net/url.h"

namespace jitbroker {
namespace {

using issuers::github_app::AppJwt;
using issuers::github_app::Level;
using issuers::github_app::PermissionPolicy;
using issuers::github_app::TtlCache;
using testing::FakeGitHub;

constexpr const char* kClientId = "Iv23liTestClient01";

// One RSA key for the whole run: generating 2048-bit keys is slow.
const crypto::SigningKey& AppKey() {
  static std::unique_ptr<crypto::SigningKey> key = [] {
    auto k = crypto::SigningKey::Generate(crypto::JwsAlg::kRS256);
    REQUIRE(k.has_value());
    return std::move(*k);
  }();
  return *key;
}

std::string TempDir() {
  char tmpl[] = "/tmp/github-app-test-XXXXXX";
  REQUIRE(::mkdtemp(tmpl) != nullptr);
  return tmpl;
}

// A fake GitHub with one installation (42) on acme/{payment-service, docs},
// the App's key in a temp file and a pooled curl client.
struct Env {
  std::string dir = TempDir();
  std::unique_ptr<FakeGitHub> fake;
  std::unique_ptr<net::HttpClient> http = net::MakeCurlHttpClient({});
  SystemClock clock;
  std::mutex sleeps_mu;
  std::vector<std::chrono::milliseconds> sleeps;
  std::string key_path = dir + "/app.pem";

  explicit Env(testing::FakeGitHubOptions options = {}) {
    options.app_public_jwk = AppKey().PublicJwk();
    if (options.client_id.empty()) {
      options.client_id = kClientId;
    }
    options.app_id = 777;
    fake = FakeGitHub::Start(std::move(options));
    REQUIRE(fake != nullptr);
    testing::FakeInstallation inst;
    inst.id = 42;
    inst.account = "acme";
    inst.repositories = {{"payment-service", 1001}, {"docs", 1002}};
    inst.permissions = {{"contents", "write"}, {"metadata", "read"},   {"pull_requests", "write"},
                        {"issues", "write"},   {"workflows", "write"}, {"secrets", "read"}};
    fake->AddInstallation(inst);
    auto pem = AppKey().ToPem();
    REQUIRE(pem.has_value());
    std::ofstream(key_path) << pem->Reveal();
  }
  ~Env() {
    http.reset();  // closes pooled keep-alive connections, so the fake stops at once
    fake.reset();
    std::error_code ec;
    std::filesystem::remove_all(dir, ec);
  }

  std::string Yaml(const std::string& extra) const {
    return "{type: github_app, client_id: " + std::string(kClientId) +
           ", private_key: file:" + key_path + ", base_url: " + fake->url() + ", allow_http: true" +
           (extra.empty() ? "" : ", " + extra) + "}";
  }

  Result<std::unique_ptr<Issuer>> BuildRaw(const std::string& yaml) {
    YAML::Node node = YAML::Load(yaml);
    config::Section section(node, std::make_shared<const std::string>("test.yaml"),
                            "issuers.github");
    section.MarkKnown("type");
    issuers::IssuerContext ctx{"github", &section, dir, &clock, http.get()};
    issuers::github_app::GitHubAppHooks hooks;
    hooks.sleep = [this](std::chrono::milliseconds d) {
      std::lock_guard lock(sleeps_mu);
      sleeps.push_back(d);
    };
    return issuers::github_app::CreateGitHubAppIssuerForTesting(ctx, std::move(hooks));
  }

  std::unique_ptr<Issuer> Build(const std::string& extra = "") {
    auto issuer = BuildRaw(Yaml(extra));
    INFO((issuer ? std::string() : issuer.error().ToString()));
    REQUIRE(issuer.has_value());
    return std::move(*issuer);
  }
};

GrantRequest Request(nlohmann::json permissions,
                     std::string resource = "github://acme/payment-service") {
  GrantRequest r;
  r.tool = "git.fetch";
  r.operation = "read";
  r.resource = std::move(resource);
  r.issuer = "github";
  if (!permissions.is_null()) {
    r.scope = {{"permissions", std::move(permissions)}};
  }
  return r;
}

MintRequest Mint(GrantRequest req, int64_t ttl = 300) {
  MintRequest mr;
  mr.grant_id = "grt_test";
  mr.session_id = "ses_1";
  mr.task_id = "task_1";
  mr.principal_id = "user_1";
  mr.agent_id = "agent_1";
  mr.request = std::move(req);
  mr.ttl_seconds = ttl;
  mr.now = std::chrono::system_clock::now();
  mr.principal_github_login = "dev";
  return mr;
}

double MetricValue(const Issuer& issuer, const std::string& name,
                   const std::string& label_part = "") {
  std::vector<IssuerMetricFamily> families;
  issuer.CollectMetrics(families);
  double total = 0;
  bool found = false;
  for (const auto& f : families) {
    if (f.name != name) {
      continue;
    }
    for (const auto& [labels, value] : f.samples) {
      if (label_part.empty() || labels.find(label_part) != std::string::npos) {
        total += value;
        found = true;
      }
    }
  }
  return found ? total : -1;
}

std::string TokenOf(const MintResult& m) {
  REQUIRE(m.secrets.size() == 1);
  CHECK(m.secrets[0].first == "token");
  return std::string(m.secrets[0].second.Reveal());
}

// ---------------------------------------------------------------------------
// Pure parts

TEST_CASE("GitHubApp permissions: tiers implied by permissions, with overrides") {
  PermissionPolicy policy;
  struct Case {
    nlohmann::json permissions;
    Tier tier;
  } cases[] = {
      {{{"metadata", "read"}}, Tier::kRead},
      {{{"contents", "read"}, {"metadata", "read"}}, Tier::kRead},
      {{{"contents", "write"}}, Tier::kWrite},
      {{{"contents", "write"}, {"pull_requests", "write"}}, Tier::kPr},
      {{{"pull_requests", "read"}}, Tier::kRead},
      {{{"deployments", "write"}}, Tier::kMergeDeploy},
      {{{"environments", "write"}}, Tier::kMergeDeploy},
      {{{"workflows", "write"}}, Tier::kSecret},
      {{{"secrets", "read"}}, Tier::kSecret},
      {{{"administration", "write"}}, Tier::kDestructive},
      {{{"administration", "read"}, {"contents", "read"}}, Tier::kRead},
  };
  for (const auto& c : cases) {
    CAPTURE(c.permissions.dump());
    auto set = policy.Parse(c.permissions);
    REQUIRE(set.has_value());
    CHECK(policy.ImpliedTier(*set) == c.tier);
  }

  std::map<std::string, std::array<std::optional<Tier>, issuers::github_app::kLevelCount>>
      overrides;
  overrides["contents"][static_cast<int>(Level::kWrite)] = Tier::kMergeDeploy;
  PermissionPolicy strict(overrides, std::nullopt);
  auto set = strict.Parse({{"contents", "write"}});
  REQUIRE(set.has_value());
  CHECK(strict.ImpliedTier(*set) == Tier::kMergeDeploy);
  CHECK(strict.RequiredRole(*set) == issuers::github_app::RepoRole::kWrite);
}

TEST_CASE("GitHubApp permissions: unknown names, bad levels and the ceiling are refused") {
  issuers::github_app::PermissionSet ceiling{{"contents", Level::kRead},
                                             {"metadata", Level::kRead}};
  PermissionPolicy policy({}, ceiling);
  struct Case {
    nlohmann::json permissions;
    const char* reason;
  } cases[] = {
      {nlohmann::json::array(), "invalid_scope"},
      {nlohmann::json::object(), "invalid_scope"},
      {{{"contnets", "read"}}, "unknown_permission"},
      {{{"members", "read"}}, "unknown_permission"},  // organization permission
      {{{"contents", "admin"}}, "invalid_permission_level"},
      {{{"workflows", "read"}}, "invalid_permission_level"},  // write only
      {{{"contents", 1}}, "invalid_permission_level"},
      {{{"contents", "write"}}, "permission_not_allowed"},
      {{{"issues", "read"}}, "permission_not_allowed"},
  };
  for (const auto& c : cases) {
    CAPTURE(c.permissions.dump());
    auto set = policy.Parse(c.permissions);
    REQUIRE_FALSE(set.has_value());
    CHECK(set.error().Reason() == c.reason);
  }
  CHECK(policy.Parse({{"contents", "read"}}).has_value());
}

TEST_CASE("GitHubApp AppJwt: claims, reuse, and re-signing near expiry") {
  testing::FakeClock clock;
  auto key = crypto::SigningKey::FromPem(crypto::JwsAlg::kRS256, *AppKey().ToPem());
  REQUIRE(key.has_value());
  AppJwt jwt(std::move(*key), kClientId, &clock);
  auto first = jwt.Get();
  REQUIRE(first.has_value());
  auto verify = AppKey().Public();
  auto claims = crypto::VerifyJws(first->Reveal(), *verify);
  REQUIRE(claims.has_value());
  const int64_t now = ToUnixSeconds(clock.Now());
  CHECK((*claims)["iss"] == kClientId);
  CHECK((*claims)["iat"] == now - 60);
  CHECK((*claims)["exp"] == now - 60 + 600);
  CHECK(jwt.signatures() == 1);

  clock.Advance(std::chrono::seconds(300));
  auto second = jwt.Get();
  REQUIRE(second.has_value());
  CHECK(second->Reveal() == first->Reveal());
  CHECK(jwt.signatures() == 1);

  clock.Advance(std::chrono::seconds(130));  // 430 s in: 110 s left < 120 s
  auto third = jwt.Get();
  REQUIRE(third.has_value());
  CHECK(third->Reveal() != first->Reveal());
  CHECK(jwt.signatures() == 2);

  // An App id makes an integer iss.
  auto key2 = crypto::SigningKey::FromPem(crypto::JwsAlg::kRS256, *AppKey().ToPem());
  AppJwt by_id(std::move(*key2), 12345, &clock);
  auto t = by_id.Get();
  REQUIRE(t.has_value());
  CHECK(crypto::VerifyJws(t->Reveal(), *verify)->at("iss") == 12345);
}

TEST_CASE("GitHubApp TtlCache: single flight, TTL and LRU bound") {
  testing::FakeClock clock;
  TtlCache<int> cache(2, std::chrono::seconds(10), &clock);
  std::atomic<int> fetches{0};
  auto slow = [&]() -> Result<int> {
    ++fetches;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
    return 7;
  };
  std::vector<std::thread> threads;
  std::atomic<int> ok{0};
  for (int i = 0; i < 8; ++i) {
    threads.emplace_back([&] {
      auto r = cache.Get("a", slow);
      if (r && r->value == 7) {
        ++ok;
      }
    });
  }
  for (auto& t : threads) {
    t.join();
  }
  CHECK(ok == 8);
  CHECK(fetches == 1);
  CHECK(cache.Get("a", slow)->cached);
  CHECK(fetches == 1);
  clock.Advance(std::chrono::seconds(11));
  CHECK_FALSE(cache.Get("a", slow)->cached);
  CHECK(fetches == 2);
  // Errors are not cached.
  auto failing = []() -> Result<int> { return std::unexpected(Unavailable("x", "down")); };
  CHECK_FALSE(cache.Get("b", failing).has_value());
  CHECK_FALSE(cache.Get("b", failing).has_value());
  // Bounded: at most two entries.
  CHECK(cache.Get("c", slow).has_value());
  CHECK(cache.Get("d", slow).has_value());
  CHECK(cache.size() == 2);
}

TEST_CASE("GitHubApp: loopback hosts and HTTP dates") {
  using net::IsLoopbackHost;
  CHECK(IsLoopbackHost("127.0.0.1"));
  CHECK(IsLoopbackHost("127.1.2.3"));
  CHECK(IsLoopbackHost("localhost"));
  CHECK(IsLoopbackHost("::1"));
  CHECK_FALSE(IsLoopbackHost("128.0.0.1"));
  CHECK_FALSE(IsLoopbackHost("127.0.0.1.evil.com"));
  CHECK_FALSE(IsLoopbackHost("api.github.com"));
  auto t = issuers::github_app::ParseHttpDate("Sun, 06 Nov 1994 08:49:37 GMT");
  REQUIRE(t.has_value());
  CHECK(ToUnixSeconds(*t) == 784111777);
  CHECK_FALSE(issuers::github_app::ParseHttpDate("yesterday").has_value());
}

// ---------------------------------------------------------------------------
// Config

TEST_CASE("GitHubApp config: errors name file, line and key") {
  Env env;
  struct Case {
    std::string extra;
    const char* expect;
  } cases[] = {
      {"colour: blue", "test.yaml:1: issuers.github.colour: unknown key"},
      {"max_ttl_seconds: 7200", "issuers.github.max_ttl_seconds: must be an integer in [1, 3600]"},
      {"api_version: latest", "issuers.github.api_version"},
      {"token_format: shiny", "issuers.github.token_format"},
      {"default_permissions: {contents: admin}", "issuers.github.default_permissions.contents"},
      {"default_permissions: {nope: read}", "issuers.github.default_permissions.nope"},
      {"max_permissions: {metadata: read}", "issuers.github.default_permissions: exceeds"},
      {"permission_tiers: {contents: huge}", "issuers.github.permission_tiers.contents"},
      {"permission_tiers: {contents: {write: pr, delete: read}}",
       "issuers.github.permission_tiers.contents.delete: unknown key"},
      {"repository_ids: {payment-service: 1}", "issuers.github.repository_ids.payment-service"},
      {"installation_cache: {max_entries: 0}", "issuers.github.installation_cache.max_entries"},
      {"delegation: {enabled: true, ttl: 3}", "issuers.github.delegation.ttl: unknown key"},
  };
  for (const auto& c : cases) {
    CAPTURE(c.extra);
    auto r = env.BuildRaw(env.Yaml(c.extra));
    REQUIRE_FALSE(r.has_value());
    CHECK(r.error().Reason() == "invalid_config");
    CHECK(r.error().message.find(c.expect) != std::string::npos);
  }
  // Required keys and the transport rules.
  auto missing = env.BuildRaw("{type: github_app, private_key: file:" + env.key_path + "}");
  REQUIRE_FALSE(missing);
  CHECK(missing.error().message.find("client_id (recommended) or app_id is required") !=
        std::string::npos);
  auto no_key = env.BuildRaw("{type: github_app, app_id: 5}");
  REQUIRE_FALSE(no_key);
  CHECK(no_key.error().message.find("issuers.github.private_key: is required") !=
        std::string::npos);
  auto inline_key = env.BuildRaw("{type: github_app, app_id: 5, private_key: 'MIIE...'}");
  REQUIRE_FALSE(inline_key);
  CHECK(inline_key.error().message.find("file:PATH or env:NAME") != std::string::npos);
  CHECK(inline_key.error().message.find("MIIE") == std::string::npos);
  auto http_remote =
      env.BuildRaw("{type: github_app, app_id: 5, private_key: file:" + env.key_path +
                   ", base_url: 'http://github.example.com/api/v3', allow_http: true}");
  REQUIRE_FALSE(http_remote);
  CHECK(http_remote.error().message.find("issuers.github.base_url") != std::string::npos);
  auto http_no_flag =
      env.BuildRaw("{type: github_app, app_id: 5, private_key: file:" + env.key_path +
                   ", base_url: '" + env.fake->url() + "'}");
  REQUIRE_FALSE(http_no_flag);
  CHECK(http_no_flag.error().message.find("allow_http") != std::string::npos);
  // A GHES base URL over https is fine (nothing is called at build time).
  auto ghes = env.BuildRaw("{type: github_app, app_id: 5, private_key: file:" + env.key_path +
                           ", base_url: 'https://ghes.example.com/api/v3/'}");
  CHECK(ghes.has_value());
  // An EC key is not an App key.
  auto ec = crypto::SigningKey::Generate(crypto::JwsAlg::kES256);
  std::ofstream(env.dir + "/ec.pem") << (*ec)->ToPem()->Reveal();
  auto wrong =
      env.BuildRaw("{type: github_app, app_id: 5, private_key: file:" + env.dir + "/ec.pem}");
  REQUIRE_FALSE(wrong);
  CHECK(wrong.error().message.find("RSA private key") != std::string::npos);
}

TEST_CASE("GitHubApp: describe and request validation") {
  Env env;
  auto issuer = env.Build("default_ttl_seconds: 600");
  const IssuerDescription& d = issuer->Describe();
  CHECK(d.type == "github_app");
  CHECK(d.revocability == Revocability::kRevocable);
  CHECK(d.mints_upstream);
  CHECK(d.max_ttl_seconds == 3600);
  CHECK(d.default_ttl_seconds == 600);

  CHECK(*issuer->ImpliedTier(Request(nullptr)) == Tier::kRead);  // default contents: read
  CHECK(*issuer->ImpliedTier(Request({{"contents", "write"}})) == Tier::kWrite);
  CHECK(*issuer->ImpliedTier(Request({{"pull_requests", "write"}},
                                     "github://acme/payment-service/pull/842")) == Tier::kPr);
  struct Case {
    GrantRequest req;
    const char* reason;
  } cases[] = {
      {Request({{"contents", "read"}}, "jwt://mcp.internal"), "invalid_resource"},
      {Request({{"contents", "read"}}, "github://acme"), "invalid_resource"},
      {Request({{"contents", "read"}}, "github://acme/../x"), "invalid_resource"},
      {Request({{"contents", "read"}}, "github://acme/repo%2f"), "invalid_resource"},
      {Request({{"contnets", "read"}}), "unknown_permission"},
  };
  for (auto& c : cases) {
    CAPTURE(c.req.resource);
    auto t = issuer->ImpliedTier(c.req);
    REQUIRE_FALSE(t.has_value());
    CHECK(t.error().Reason() == c.reason);
  }
  GrantRequest extra = Request({{"contents", "read"}});
  extra.scope["repositories"] = {"other"};
  auto t = issuer->ImpliedTier(extra);
  REQUIRE_FALSE(t);
  CHECK(t.error().Reason() == "unknown_field");
  // Nothing above reached GitHub.
  CHECK(env.fake->Requests(FakeGitHub::Route::kAny) == 0);
}

// ---------------------------------------------------------------------------
// Minting

TEST_CASE("GitHubApp: mints a narrowed token the way GitHub expects") {
  Env env;
  auto issuer = env.Build();
  auto mr = Mint(Request({{"contents", "read"}}), 300);
  auto minted = issuer->Mint(mr);
  INFO((minted ? std::string() : minted.error().ToString()));
  REQUIRE(minted.has_value());
  CHECK(env.fake->Violations().empty());

  const std::string token = TokenOf(*minted);
  CHECK(token.rfind("ghs_", 0) == 0);
  CHECK(token.size() >= 500);  // the ~520-char stateless format
  CHECK(std::count(token.begin(), token.end(), '.') == 2);
  CHECK(env.fake->TokenActive(token));
  CHECK(minted->type == "github_installation_token");
  CHECK(minted->fingerprint_sha256 == crypto::Sha256Hex(token));
  CHECK(minted->revocation_handle.Reveal() == token);
  CHECK(minted->fields["permissions"]["contents"] == "read");
  CHECK(minted->fields["repositories"] == nlohmann::json::array({"payment-service"}));
  CHECK(minted->fields["installation_id"] == 42);
  CHECK(minted->fields["repository_selection"] == "selected");
  CHECK(minted->fields.dump().find(token) == std::string::npos);
  CHECK(minted->audit_fields.dump().find(token) == std::string::npos);
  CHECK(minted->audit_fields["installation_id"] == 42);
  CHECK(minted->audit_fields["token_sha256"] == crypto::Sha256Hex(token));
  CHECK(minted->audit_fields["hashed_token"] == crypto::Base64Encode(crypto::Sha256(token)));
  CHECK(minted->audit_fields["on_behalf_of_github_login"] == "dev");
  // The grant's TTL is the credential's; GitHub's hour is when it dies upstream.
  CHECK(ToUnixSeconds(minted->expires_at) == ToUnixSeconds(mr.now) + 300);
  REQUIRE(minted->upstream_expires_at.has_value());
  CHECK(ToUnixSeconds(*minted->upstream_expires_at) - ToUnixSeconds(mr.now) >= 3590);

  // Exactly what GitHub gets: repository names without owner, explicit permissions.
  nlohmann::json body = env.fake->LastMintBody();
  CHECK(body == nlohmann::json{{"repositories", {"payment-service"}},
                               {"permissions", {{"contents", "read"}}}});
  auto headers = env.fake->LastHeaders();
  CHECK(headers["accept"] == "application/vnd.github+json");
  CHECK(headers["x-github-api-version"] == "2022-11-28");
  CHECK(headers["user-agent"].find("jitbroker") != std::string::npos);
  CHECK(headers["content-type"] == "application/json");

  auto info = env.fake->Token(token);
  REQUIRE(info.has_value());
  CHECK(info->repositories == std::vector<std::string>{"payment-service"});
  CHECK(info->permissions["contents"] == "read");
}

TEST_CASE("GitHubApp: one App JWT and one installation lookup serve many mints") {
  Env env;
  auto issuer = env.Build();
  std::vector<std::thread> threads;
  std::atomic<int> ok{0};
  for (int t = 0; t < 8; ++t) {
    threads.emplace_back([&] {
      for (int i = 0; i < 10; ++i) {
        if (issuer->Mint(Mint(Request({{"contents", "read"}}))).has_value()) {
          ++ok;
        }
      }
    });
  }
  for (auto& t : threads) {
    t.join();
  }
  CHECK(ok == 80);
  CHECK(env.fake->TokensIssued() == 80);
  CHECK(env.fake->DistinctJwts() == 1);
  CHECK(MetricValue(*issuer, "jitbroker_github_app_jwt_signatures_total") == 1);
  CHECK(env.fake->Requests(FakeGitHub::Route::kLookup) == 1);  // single flight + cache
  CHECK(MetricValue(*issuer, "jitbroker_github_installation_cache_total", "result=\"miss\"") == 1);
  CHECK(MetricValue(*issuer, "jitbroker_github_tokens_minted_total") == 80);
  CHECK(env.fake->Violations().empty());
}

TEST_CASE("GitHubApp: configured installation_id and repository_ids skip the lookup") {
  Env env;
  auto issuer = env.Build(
      "installation_id: 42, repository_ids: {acme/payment-service: 1001}, "
      "user_agent: 'acme-broker/1.0', api_version: '2026-03-10'");
  auto minted = issuer->Mint(Mint(Request({{"contents", "write"}, {"pull_requests", "write"}})));
  REQUIRE(minted.has_value());
  CHECK(env.fake->Requests(FakeGitHub::Route::kLookup) == 0);
  nlohmann::json body = env.fake->LastMintBody();
  CHECK(body["repository_ids"] == nlohmann::json::array({1001}));
  CHECK_FALSE(body.contains("repositories"));
  CHECK(body["permissions"] == nlohmann::json{{"contents", "write"}, {"pull_requests", "write"}});
  auto headers = env.fake->LastHeaders();
  CHECK(headers["user-agent"] == "acme-broker/1.0");
  CHECK(headers["x-github-api-version"] == "2026-03-10");
  CHECK(env.fake->Violations().empty());
}

TEST_CASE("GitHubApp: legacy token format on request") {
  Env env;
  auto issuer = env.Build("token_format: legacy");
  auto minted = issuer->Mint(Mint(Request({{"contents", "read"}})));
  REQUIRE(minted.has_value());
  const std::string token = TokenOf(*minted);
  CHECK(token.size() == 40);
  CHECK(env.fake->TokenActive(token));
  CHECK(env.fake->LastHeaders()["x-github-stateless-s2s-token"] == "disabled");
}

TEST_CASE("GitHubApp: GitHub's errors map to precise problems") {
  Env env;
  auto issuer = env.Build("max_attempts: 3");
  SUBCASE("422: permissions the installation lacks") {
    auto r = issuer->Mint(Mint(Request({{"administration", "write"}})));
    REQUIRE_FALSE(r.has_value());
    CHECK(r.error().code == ErrorCode::kPermissionDenied);
    CHECK(r.error().Reason() == "github_validation_failed");
    CHECK(r.error().message.find("not granted to this installation") != std::string::npos);
    CHECK_FALSE(r.error().retryable);
  }
  SUBCASE("the App is not installed on the repository") {
    auto r = issuer->Mint(Mint(Request({{"contents", "read"}}, "github://acme/unknown-repo")));
    REQUIRE_FALSE(r.has_value());
    CHECK(r.error().code == ErrorCode::kFailedPrecondition);
    CHECK(r.error().Reason() == "github_app_not_installed");
    CHECK(r.error().message.find("acme/unknown-repo") != std::string::npos);
  }
  SUBCASE("422: a repository the configured installation cannot reach") {
    auto fixed = env.Build("installation_id: 42");
    auto r = fixed->Mint(Mint(Request({{"contents", "read"}}, "github://acme/unknown-repo")));
    REQUIRE_FALSE(r.has_value());
    CHECK(r.error().Reason() == "github_validation_failed");
    CHECK(r.error().message.find("not accessible to the parent installation") != std::string::npos);
  }
  SUBCASE("404: an unknown installation") {
    auto fixed = env.Build("installation_id: 4242");
    auto r = fixed->Mint(Mint(Request({{"contents", "read"}})));
    REQUIRE_FALSE(r.has_value());
    CHECK(r.error().Reason() == "github_installation_not_found");
  }
  SUBCASE("5xx is retried with backoff") {
    env.fake->InjectErrors(FakeGitHub::Route::kMint, 502, 2);
    auto r = issuer->Mint(Mint(Request({{"contents", "read"}})));
    REQUIRE(r.has_value());
    CHECK(env.sleeps.size() == 2);
    CHECK(MetricValue(*issuer, "jitbroker_github_retries_total", "reason=\"server_error\"") == 2);
  }
  SUBCASE("persistent 5xx gives up after max_attempts") {
    env.fake->InjectErrors(FakeGitHub::Route::kMint, 500, -1);
    const size_t before = env.fake->Requests(FakeGitHub::Route::kMint);
    auto r = issuer->Mint(Mint(Request({{"contents", "read"}})));
    REQUIRE_FALSE(r.has_value());
    CHECK(r.error().code == ErrorCode::kUnavailable);
    CHECK(r.error().Reason() == "github_unavailable");
    CHECK(r.error().retryable);
    CHECK(env.fake->Requests(FakeGitHub::Route::kMint) - before == 3);
  }
  SUBCASE("secondary rate limit: 403 with Retry-After is waited out") {
    env.fake->InjectErrors(FakeGitHub::Route::kMint, 403, 1, 2);
    auto r = issuer->Mint(Mint(Request({{"contents", "read"}})));
    REQUIRE(r.has_value());
    REQUIRE(env.sleeps.size() == 1);
    CHECK(env.sleeps[0] >= std::chrono::milliseconds(2000));
  }
  SUBCASE("429 with a Retry-After beyond the limit fails fast with retry_after") {
    env.fake->InjectErrors(FakeGitHub::Route::kMint, 429, 1, 120);
    auto r = issuer->Mint(Mint(Request({{"contents", "read"}})));
    REQUIRE_FALSE(r.has_value());
    CHECK(r.error().code == ErrorCode::kResourceExhausted);
    CHECK(r.error().Reason() == "github_rate_limited");
    CHECK(r.error().retry_after == std::chrono::seconds(120));
    CHECK(env.sleeps.empty());
  }
  SUBCASE("a 403 that is not a rate limit is a refusal") {
    env.fake->InjectErrors(FakeGitHub::Route::kMint, 403, 1, -1);
    auto r = issuer->Mint(Mint(Request({{"contents", "read"}})));
    REQUIRE_FALSE(r.has_value());
    CHECK(r.error().code == ErrorCode::kPermissionDenied);
    CHECK(r.error().Reason() == "github_forbidden");
    CHECK(r.error().message.find("Resource not accessible by integration") != std::string::npos);
    CHECK(env.sleeps.empty());
  }
  SUBCASE("transport failure") {
    env.fake->Stop();
    auto r = issuer->Mint(Mint(Request({{"contents", "read"}})));
    REQUIRE_FALSE(r.has_value());
    CHECK(r.error().code == ErrorCode::kUnavailable);
    CHECK(r.error().Reason() == "github_unavailable");
  }
}

TEST_CASE("GitHubApp: wrong App credentials are an operator problem, not a client one") {
  Env env;
  // The fake trusts a different client id.
  auto issuer = env.Build();
  auto other = env.BuildRaw("{type: github_app, app_id: 999, private_key: file:" + env.key_path +
                            ", base_url: " + env.fake->url() + ", allow_http: true}");
  REQUIRE(other.has_value());
  auto r = (*other)->Mint(Mint(Request({{"contents", "read"}})));
  REQUIRE_FALSE(r.has_value());
  CHECK(r.error().Reason() == "github_auth_failed");
  CHECK(r.error().code == ErrorCode::kUnavailable);
  // The app id GitHub knows works as iss too.
  auto by_id = env.BuildRaw("{type: github_app, app_id: 777, private_key: file:" + env.key_path +
                            ", base_url: " + env.fake->url() + ", allow_http: true}");
  REQUIRE(by_id.has_value());
  CHECK((*by_id)->Mint(Mint(Request({{"contents", "read"}}))).has_value());
}

TEST_CASE("GitHubApp: clock skew is learnt from GitHub's Date header") {
  Env env;
  auto issuer = env.Build();
  env.fake->SetClockSkew(std::chrono::seconds(900));  // GitHub's clock is 15 min ahead
  auto r = issuer->Mint(Mint(Request({{"contents", "read"}})));
  INFO((r ? std::string() : r.error().ToString()));
  REQUIRE(r.has_value());
  CHECK(MetricValue(*issuer, "jitbroker_github_retries_total", "reason=\"clock_skew\"") == 1);
  CHECK(issuer->Mint(Mint(Request({{"contents", "read"}}))).has_value());
  CHECK(MetricValue(*issuer, "jitbroker_github_retries_total", "reason=\"clock_skew\"") == 1);
}

TEST_CASE("GitHubApp: rate-limit headers are exported as metrics") {
  Env env;
  auto issuer = env.Build();
  REQUIRE(issuer->Mint(Mint(Request({{"contents", "read"}}))).has_value());
  CHECK(MetricValue(*issuer, "jitbroker_github_ratelimit_limit", "resource=\"core\"") == 5000);
  const double remaining =
      MetricValue(*issuer, "jitbroker_github_ratelimit_remaining", "resource=\"core\"");
  CHECK(remaining > 0);
  CHECK(remaining < 5000);
  CHECK(MetricValue(*issuer, "jitbroker_github_ratelimit_reset_timestamp_seconds") > 0);
  CHECK(MetricValue(*issuer, "jitbroker_github_requests_total",
                    "endpoint=\"create_installation_token\",status=\"201\"") == 1);
}

// ---------------------------------------------------------------------------
// Revocation

TEST_CASE("GitHubApp: revoke deletes the token upstream; repeated revokes succeed") {
  Env env;
  auto issuer = env.Build();
  auto mr = Mint(Request({{"contents", "read"}}));
  auto minted = issuer->Mint(mr);
  REQUIRE(minted.has_value());
  const std::string token = TokenOf(*minted);
  REQUIRE(env.fake->TokenActive(token));

  RevokeRequest rr{"grt_test", minted->revocation_handle.Clone(),
                   minted->upstream_expires_at.value_or(minted->expires_at), mr.now};
  auto out = issuer->Revoke(rr);
  REQUIRE(out.has_value());
  CHECK(out->kind == RevokeOutcomeKind::kRevoked);
  CHECK_FALSE(env.fake->TokenActive(token));
  CHECK(env.fake->TokensRevoked() == 1);
  CHECK(env.fake->Violations().empty());

  // Already revoked: GitHub answers 401, which counts as revoked.
  RevokeRequest again{"grt_test", minted->revocation_handle.Clone(), rr.expires_at, mr.now};
  auto second = issuer->Revoke(again);
  REQUIRE(second.has_value());
  CHECK(second->kind == RevokeOutcomeKind::kRevoked);

  // Past its upstream expiry nothing is called.
  const size_t calls = env.fake->Requests(FakeGitHub::Route::kRevoke);
  RevokeRequest late{"grt_test", minted->revocation_handle.Clone(), mr.now,
                     mr.now + std::chrono::seconds(1)};
  CHECK(issuer->Revoke(late).has_value());
  CHECK(env.fake->Requests(FakeGitHub::Route::kRevoke) == calls);
}

TEST_CASE("GitHubApp: a failing revoke is an error the service can queue") {
  Env env;
  auto issuer = env.Build("max_attempts: 2");
  auto mr = Mint(Request({{"contents", "read"}}));
  auto minted = issuer->Mint(mr);
  REQUIRE(minted.has_value());
  env.fake->InjectErrors(FakeGitHub::Route::kRevoke, 500, -1);
  RevokeRequest rr{"grt_test", minted->revocation_handle.Clone(), *minted->upstream_expires_at,
                   mr.now};
  auto out = issuer->Revoke(rr);
  REQUIRE_FALSE(out.has_value());
  CHECK(out.error().code == ErrorCode::kUnavailable);
  CHECK(out.error().retryable);
  CHECK(env.fake->TokenActive(TokenOf(*minted)));
  env.fake->ClearErrors();
  RevokeRequest retry{"grt_test", minted->revocation_handle.Clone(), *minted->upstream_expires_at,
                      mr.now};
  CHECK(issuer->Revoke(retry).has_value());
  CHECK_FALSE(env.fake->TokenActive(TokenOf(*minted)));
}

// ---------------------------------------------------------------------------
// Delegated rights

TEST_CASE("GitHubApp: delegated rights follow the human's collaborator permission") {
  Env env;
  env.fake->SetCollaborator("acme/payment-service", "dev", "read", "triage");
  env.fake->SetCollaborator("acme/payment-service", "lead", "admin", "admin");
  auto issuer = env.Build();
  Principal dev;
  dev.id = "user_dev";
  dev.github_login = "dev";

  auto read = issuer->CheckDelegatedRights(Request({{"contents", "read"}}), dev);
  REQUIRE(read.has_value());
  CHECK(read->allowed);
  CHECK(read->audit["checked"] == true);
  CHECK(read->audit["held_role"] == "triage");
  CHECK(read->audit["required_role"] == "read");
  CHECK(read->audit["cached"] == false);

  // Triage may write issues but not contents.
  auto issues = issuer->CheckDelegatedRights(Request({{"issues", "write"}}), dev);
  REQUIRE(issues.has_value());
  CHECK(issues->allowed);
  CHECK(issues->audit["cached"] == true);
  auto write = issuer->CheckDelegatedRights(Request({{"contents", "write"}}), dev);
  REQUIRE(write.has_value());
  CHECK_FALSE(write->allowed);
  CHECK(write->reason.find("dev holds triage on acme/payment-service") != std::string::npos);
  CHECK(write->reason.find("need write") != std::string::npos);
  CHECK(write->matched_rule == "issuers.github.delegated_rights");
  // One upstream check for the three (cached), made with a metadata-only token.
  CHECK(env.fake->Requests(FakeGitHub::Route::kCollaborator) == 1);
  CHECK(env.fake->LastMintBody() == nlohmann::json{{"permissions", {{"metadata", "read"}}}});

  Principal lead;
  lead.id = "user_lead";
  lead.github_login = "lead";
  auto admin =
      issuer->CheckDelegatedRights(Request({{"workflows", "write"}, {"secrets", "read"}}), lead);
  REQUIRE(admin.has_value());
  CHECK(admin->allowed);

  Principal stranger;
  stranger.id = "user_x";
  stranger.github_login = "stranger";
  auto none = issuer->CheckDelegatedRights(Request({{"contents", "read"}}), stranger);
  REQUIRE(none.has_value());
  CHECK_FALSE(none->allowed);
  CHECK(none->audit["held_role"] == "none");

  Principal anonymous;
  anonymous.id = "user_nologin";
  auto skipped = issuer->CheckDelegatedRights(Request({{"contents", "write"}}), anonymous);
  REQUIRE(skipped.has_value());
  CHECK(skipped->allowed);
  CHECK(skipped->audit["checked"] == false);
  CHECK(env.fake->Violations().empty());
}

TEST_CASE("GitHubApp: delegated-rights options and upstream failures") {
  Env env;
  Principal anonymous;
  anonymous.id = "user_nologin";
  SUBCASE("require_github_login") {
    auto issuer = env.Build("delegation: {require_github_login: true}");
    auto r = issuer->CheckDelegatedRights(Request({{"contents", "read"}}), anonymous);
    REQUIRE(r.has_value());
    CHECK_FALSE(r->allowed);
    CHECK(r->reason.find("no github_login") != std::string::npos);
  }
  SUBCASE("disabled") {
    auto issuer = env.Build("delegation: {enabled: false}");
    Principal dev;
    dev.id = "d";
    dev.github_login = "dev";
    auto r = issuer->CheckDelegatedRights(Request({{"contents", "write"}}), dev);
    REQUIRE(r.has_value());
    CHECK(r->allowed);
    CHECK(env.fake->Requests(FakeGitHub::Route::kAny) == 0);
  }
  SUBCASE("an upstream error is an error, never an allow") {
    auto issuer = env.Build("max_attempts: 1");
    env.fake->InjectErrors(FakeGitHub::Route::kCollaborator, 503, -1);
    Principal dev;
    dev.id = "d";
    dev.github_login = "dev";
    auto r = issuer->CheckDelegatedRights(Request({{"contents", "read"}}), dev);
    REQUIRE_FALSE(r.has_value());
    CHECK(r.error().code == ErrorCode::kUnavailable);
  }
  SUBCASE("a revoked check token is replaced") {
    env.fake->SetCollaborator("acme/payment-service", "dev", "write");
    auto issuer = env.Build("delegation: {cache_ttl_seconds: 1}");
    Principal dev;
    dev.id = "d";
    dev.github_login = "dev";
    REQUIRE(issuer->CheckDelegatedRights(Request({{"contents", "write"}}), dev)->allowed);
    // The issuer's cached metadata token dies upstream (admin revoked it).
    env.fake->InjectErrors(FakeGitHub::Route::kCollaborator, 401, 1);
    std::this_thread::sleep_for(std::chrono::milliseconds(1100));
    auto again = issuer->CheckDelegatedRights(Request({{"contents", "write"}}), dev);
    REQUIRE(again.has_value());
    CHECK(again->allowed);
    CHECK(env.fake->TokensIssued() == 2);
  }
}

// ---------------------------------------------------------------------------
// The pooled curl client

TEST_CASE("CurlHttpClient: requests reuse pooled connections") {
  httplib::Server svr;
  std::mutex mu;
  std::set<int> ports;
  svr.set_keep_alive_max_count(1000);
  svr.Get("/ping", [&](const httplib::Request& req, httplib::Response& res) {
    {
      std::lock_guard lock(mu);
      ports.insert(req.remote_port);
    }
    res.set_content("ok", "text/plain");
  });
  const int port = svr.bind_to_any_port("127.0.0.1");
  REQUIRE(port > 0);
  std::thread th([&] { svr.listen_after_bind(); });
  while (!svr.is_running()) {
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  auto client = net::MakeCurlHttpClient({});
  for (int i = 0; i < 20; ++i) {
    net::HttpRequest req;
    req.url = "http://127.0.0.1:" + std::to_string(port) + "/ping";
    req.bearer = SecretValue("secret-" + std::to_string(i));
    auto r = client->Send(req);
    REQUIRE(r.has_value());
    CHECK(r->status == 200);
    CHECK(r->body == "ok");
  }
  {
    std::lock_guard lock(mu);
    CHECK(ports.size() == 1);  // one connection for twenty sequential requests
  }
  // Concurrent callers each get a handle; connections stay bounded by them.
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&] {
      for (int i = 0; i < 10; ++i) {
        net::HttpRequest req;
        req.url = "http://127.0.0.1:" + std::to_string(port) + "/ping";
        auto r = client->Send(req);
        CHECK(r.has_value());
      }
    });
  }
  for (auto& t : threads) {
    t.join();
  }
  {
    std::lock_guard lock(mu);
    CHECK(ports.size() <= 5);
  }
  // A pool of zero still works (no reuse).
  net::CurlHttpClientOptions none;
  none.max_idle_handles = 0;
  auto fresh = net::MakeCurlHttpClient(none);
  net::HttpRequest req;
  req.url = "http://127.0.0.1:" + std::to_string(port) + "/ping";
  CHECK(fresh->Send(req).has_value());
  client.reset();  // closes the pooled connections, so stop() need not wait them out
  fresh.reset();
  svr.stop();
  th.join();
}

}  // namespace
}  // namespace jitbroker
