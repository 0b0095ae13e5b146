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

#include "broker/common/time_util.h"
#include "broker/config/config.h"
#include "broker/crypto/crypto.h"
#include "broker/crypto/jose.h"
#include "broker/net/http_client.h"
#include "broker/net/url.h"
#include "issuers/github_app/app_jwt.h"
#include "issuers/github_app/github_api.h"
#include "issuers/github_app/github_app_issuer.h"
#include "issuers/github_app/permissions.h"
#include "issuers/github_app/ttl_cache.h"
#include "tests/fakes/fake_clock.h"
#include "tests/fakes/fake_github.h"

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

std::string GitHubTestDir() {
  char tmpl[] = "/tmp/github-app-test-XXXXXX";
  REQUIRE(::mkdtemp(tmpl) != nullptr);
  return tmpl;
}

// A fake GitHub with one installation (42) on acme/{payment-service, docs},
// the App's key in a temp file and a pooled curl client.
struct Env {
  std::string dir = GitHubTestDir();
  std::unique_ptr<FakeGitHub> fake;
  std::unique_ptr<net::HttpClient> http = net::MakeCurlHttpClient({});
  SystemClock clock;
  // Issuers built after use_manual_clock = true run on this clock instead
  // (it starts at the host's time and moves only when told).
  testing::FakeClock manual_clock{std::chrono::system_clock::now()};
  bool use_manual_clock = false;
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
    const Clock* c = use_manual_clock ? static_cast<const Clock*>(&manual_clock) : &clock;
    IssuerContext ctx{"github", &section, dir, c, http.get()};
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
  mr.principal_identities = {{"github", "dev"}};
  return mr;
}

double MetricValue(const Issuer& issuer, const std::string& name,
                   const std::string& label_part = "") {
  std::vector<MetricFamily> families;
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
      // Codespaces start with the repository's Codespaces secrets; writing
      // security alerts can hide known vulnerabilities.
      {{{"codespaces", "write"}}, Tier::kSecret},
      {{{"security_events", "write"}}, Tier::kSecret},
      {{{"vulnerability_alerts", "write"}}, Tier::kSecret},
      {{{"security_events", "read"}}, Tier::kRead},
      {{{"secret_scanning_alerts", "read"}}, Tier::kSecret},
  };
  for (const auto& c : cases) {
    CAPTURE(c.permissions.dump());
    auto set = policy.Parse(c.permissions);
    REQUIRE(set.has_value());
    CHECK(policy.ImpliedTier(*set) == c.tier);
  }

  // The role the delegating human must hold on the repository.
  using issuers::github_app::RepoRole;
  struct RoleCase {
    nlohmann::json permissions;
    RepoRole role;
  } roles[] = {
      {{{"contents", "read"}}, RepoRole::kRead},
      {{{"issues", "write"}}, RepoRole::kTriage},
      {{{"contents", "write"}}, RepoRole::kWrite},
      {{{"secret_scanning_alerts", "read"}}, RepoRole::kAdmin},
      {{{"secret_scanning_alerts", "write"}}, RepoRole::kAdmin},
      {{{"security_events", "read"}}, RepoRole::kWrite},
      {{{"vulnerability_alerts", "read"}}, RepoRole::kWrite},
      {{{"pages", "read"}}, RepoRole::kRead},
      {{{"pages", "write"}}, RepoRole::kMaintain},
      {{{"merge_queues", "write"}}, RepoRole::kMaintain},
      {{{"secrets", "read"}}, RepoRole::kAdmin},
  };
  for (const auto& c : roles) {
    CAPTURE(c.permissions.dump());
    auto set = policy.Parse(c.permissions);
    REQUIRE(set.has_value());
    CHECK(policy.RequiredRole(*set) == c.role);
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
  auto t = ParseHttpDate("Sun, 06 Nov 1994 08:49:37 GMT");
  REQUIRE(t.has_value());
  CHECK(ToUnixSeconds(*t) == 784111777);
  CHECK_FALSE(ParseHttpDate("yesterday").has_value());
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
      // A collaborator's lost rights linger at most five minutes.
      {"delegation: {cache_ttl_seconds: 301}",
       "issuers.github.delegation.cache_ttl_seconds: must be an integer in [1, 300]"},
      {"call_deadline_ms: 50", "issuers.github.call_deadline_ms"},
      {"installation_owner: acme", "issuers.github.installation_owner: is only meaningful"},
      {"installation_id: 42, installation_owner: 'ac/me'", "issuers.github.installation_owner"},
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
  // Accepted before the one URL parser (net::ParseUrl): a port out of range,
  // a backslash that WHATWG readers take for '/', a %-escaped host.
  for (const char* bad : {"https://api.github.com:99999", "https://api.github.com\\.evil.example/",
                          "https://api.git%68ub.com/"}) {
    CAPTURE(bad);
    auto refused = env.BuildRaw("{type: github_app, app_id: 5, private_key: file:" + env.key_path +
                                ", base_url: '" + bad + "'}");
    REQUIRE_FALSE(refused);
    CHECK(refused.error().message.find("issuers.github.base_url") != std::string::npos);
  }
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
      {Request({{"contents", "read"}}, "github://acme/Payment-Service"), "invalid_resource"},
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
  dev.identities = {{"github", "dev"}};

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
  // …scoped to the one repository checked.
  CHECK(env.fake->LastMintBody() == nlohmann::json{{"repositories", {"payment-service"}},
                                                   {"permissions", {{"metadata", "read"}}}});

  Principal lead;
  lead.id = "user_lead";
  lead.identities = {{"github", "lead"}};
  auto admin =
      issuer->CheckDelegatedRights(Request({{"workflows", "write"}, {"secrets", "read"}}), lead);
  REQUIRE(admin.has_value());
  CHECK(admin->allowed);

  Principal stranger;
  stranger.id = "user_x";
  stranger.identities = {{"github", "stranger"}};
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
    CHECK(r->reason.find("has no identities.github") != std::string::npos);
  }
  SUBCASE("disabled") {
    auto issuer = env.Build("delegation: {enabled: false}");
    Principal dev;
    dev.id = "d";
    dev.identities = {{"github", "dev"}};
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
    dev.identities = {{"github", "dev"}};
    auto r = issuer->CheckDelegatedRights(Request({{"contents", "read"}}), dev);
    REQUIRE_FALSE(r.has_value());
    CHECK(r.error().code == ErrorCode::kUnavailable);
  }
  SUBCASE("a revoked check token is replaced") {
    env.fake->SetCollaborator("acme/payment-service", "dev", "write");
    env.use_manual_clock = true;
    auto issuer = env.Build("delegation: {cache_ttl_seconds: 1}");
    Principal dev;
    dev.id = "d";
    dev.identities = {{"github", "dev"}};
    REQUIRE(issuer->CheckDelegatedRights(Request({{"contents", "write"}}), dev)->allowed);
    // The issuer's cached metadata token dies upstream (admin revoked it).
    env.fake->InjectErrors(FakeGitHub::Route::kCollaborator, 401, 1);
    env.manual_clock.Advance(std::chrono::seconds(11));  // no longer a new token
    auto again = issuer->CheckDelegatedRights(Request({{"contents", "write"}}), dev);
    REQUIRE(again.has_value());
    CHECK(again->allowed);
    CHECK(env.fake->TokensIssued() == 2);
    CHECK(env.sleeps.empty());
  }
  SUBCASE("a new check token GitHub does not accept yet is retried, not replaced") {
    env.fake->SetCollaborator("acme/payment-service", "dev", "write");
    auto issuer = env.Build();
    Principal dev;
    dev.id = "d";
    dev.identities = {{"github", "dev"}};
    env.fake->InjectErrors(FakeGitHub::Route::kCollaborator, 401, 2);
    auto r = issuer->CheckDelegatedRights(Request({{"contents", "write"}}), dev);
    INFO((r ? std::string() : r.error().ToString()));
    REQUIRE(r.has_value());
    CHECK(r->allowed);
    CHECK(env.fake->TokensIssued() == 1);
    CHECK(env.sleeps ==
          std::vector<std::chrono::milliseconds>{std::chrono::seconds(1), std::chrono::seconds(2)});
  }
}

// ---------------------------------------------------------------------------
// Security review fixes

TEST_CASE("GitHubApp: upper-case owner or repository names are refused") {
  Env env;
  auto issuer = env.Build();
  for (const char* resource : {"github://acme/Payment-Service", "github://ACME/payment-service",
                               "github://Acme/Payment-Service/pull/842"}) {
    CAPTURE(resource);
    auto t = issuer->ImpliedTier(Request({{"contents", "read"}}, resource));
    REQUIRE_FALSE(t.has_value());
    CHECK(t.error().code == ErrorCode::kInvalidArgument);
    CHECK(t.error().Reason() == "invalid_resource");
    CHECK(t.error().message.find("lower case") != std::string::npos);
    CHECK(t.error().message.find("github://acme/payment-service") != std::string::npos);
    auto m = issuer->Mint(Mint(Request({{"contents", "read"}}, resource)));
    REQUIRE_FALSE(m.has_value());
    CHECK(m.error().Reason() == "invalid_resource");
    Principal dev;
    dev.id = "d";
    dev.identities = {{"github", "dev"}};
    auto d = issuer->CheckDelegatedRights(Request({{"contents", "read"}}, resource), dev);
    REQUIRE_FALSE(d.has_value());
    CHECK(d.error().Reason() == "invalid_resource");
  }
  // Upper case after the repository (a path) is not a name.
  CHECK(issuer
            ->ImpliedTier(Request({{"contents", "read"}},
                                  "github://acme/payment-service/blob/main/README.md"))
            .has_value());
  CHECK(env.fake->Requests(FakeGitHub::Route::kAny) == 0);
}

TEST_CASE("GitHubApp: with installation_id the grant's owner must be the installation's account") {
  Env env;
  SUBCASE("the account is asked of GitHub once") {
    auto issuer = env.Build("installation_id: 42");
    auto other = issuer->Mint(
        Mint(Request({{"contents", "read"}}, "github://someone-else/payment-service")));
    REQUIRE_FALSE(other.has_value());
    CHECK(other.error().Reason() == "invalid_resource");
    CHECK(other.error().message.find("only for repositories of acme") != std::string::npos);
    CHECK(env.fake->TokensIssued() == 0);
    CHECK(env.fake->Requests(FakeGitHub::Route::kInstallation) == 1);
    // The delegation check refuses it too, before any token is minted.
    Principal dev;
    dev.id = "d";
    dev.identities = {{"github", "dev"}};
    auto d = issuer->CheckDelegatedRights(
        Request({{"contents", "read"}}, "github://someone-else/payment-service"), dev);
    REQUIRE_FALSE(d.has_value());
    CHECK(d.error().Reason() == "invalid_resource");
    // The installation's own repositories mint as before; the account is cached.
    auto own = issuer->Mint(Mint(Request({{"contents", "read"}})));
    REQUIRE(own.has_value());
    CHECK(own->fields["owner"] == "acme");
    CHECK(env.fake->Requests(FakeGitHub::Route::kInstallation) == 1);
    CHECK(env.fake->TokensIssued() == 1);
    CHECK(env.fake->Violations().empty());
  }
  SUBCASE("installation_owner refuses other owners without calling GitHub") {
    auto issuer = env.Build("installation_id: 42, installation_owner: Acme");
    auto t = issuer->ImpliedTier(
        Request({{"contents", "read"}}, "github://someone-else/payment-service"));
    REQUIRE_FALSE(t.has_value());
    CHECK(t.error().Reason() == "invalid_resource");
    CHECK(env.fake->Requests(FakeGitHub::Route::kAny) == 0);
    REQUIRE(issuer->Mint(Mint(Request({{"contents", "read"}}))).has_value());
    CHECK(env.fake->Requests(FakeGitHub::Route::kInstallation) == 0);
  }
  SUBCASE("the account cannot be read: fail closed") {
    auto issuer = env.Build("installation_id: 42, max_attempts: 1");
    env.fake->InjectErrors(FakeGitHub::Route::kInstallation, 503, -1);
    auto r = issuer->Mint(Mint(Request({{"contents", "read"}})));
    REQUIRE_FALSE(r.has_value());
    CHECK(r.error().code == ErrorCode::kUnavailable);
    CHECK(env.fake->TokensIssued() == 0);
  }
}

TEST_CASE("GitHubApp: a token not narrowed as asked is revoked and refused") {
  Env env;
  struct Case {
    FakeGitHub::MintResponse mode;
    const char* extra;
    const char* problem;
  } cases[] = {
      {FakeGitHub::MintResponse::kBroader, "", "repository_selection \"all\""},
      {FakeGitHub::MintResponse::kOmitScope, "", "no repository_selection"},
      {FakeGitHub::MintResponse::kOtherRepository, "", "covers acme/docs"},
      {FakeGitHub::MintResponse::kOtherRepository,
       "installation_id: 42, repository_ids: {acme/payment-service: 1001}", "(id 1002)"},
  };
  for (const auto& c : cases) {
    CAPTURE(static_cast<int>(c.mode));
    CAPTURE(c.extra);
    auto issuer = env.Build(c.extra);
    env.fake->SetMintResponse(c.mode);
    const size_t issued = env.fake->TokensIssued();
    const size_t revoked = env.fake->TokensRevoked();
    auto r = issuer->Mint(Mint(Request({{"contents", "read"}})));
    REQUIRE_FALSE(r.has_value());
    CHECK(r.error().code == ErrorCode::kInternal);
    CHECK(r.error().Reason() == "github_token_not_narrowed");
    CHECK(r.error().message.find(c.problem) != std::string::npos);
    CHECK(r.error().message.find("revoked it") != std::string::npos);
    CHECK(env.fake->TokensIssued() == issued + 1);
    CHECK(env.fake->TokensRevoked() == revoked + 1);  // the refused token is dead upstream
    CHECK(MetricValue(*issuer, "jitbroker_github_tokens_refused_total") == 1);
    env.fake->SetMintResponse(FakeGitHub::MintResponse::kNormal);
  }
  // The same holds for the delegation check's own tokens.
  env.fake->SetCollaborator("acme/payment-service", "dev", "write");
  auto issuer = env.Build();
  env.fake->SetMintResponse(FakeGitHub::MintResponse::kBroader);
  Principal dev;
  dev.id = "d";
  dev.identities = {{"github", "dev"}};
  const size_t revoked = env.fake->TokensRevoked();
  auto d = issuer->CheckDelegatedRights(Request({{"contents", "read"}}), dev);
  REQUIRE_FALSE(d.has_value());
  CHECK(d.error().Reason() == "github_token_not_narrowed");
  CHECK(env.fake->TokensRevoked() == revoked + 1);
}

TEST_CASE("GitHubApp: an implausible expires_at is a malformed answer") {
  Env env;
  auto issuer = env.Build();
  SUBCASE("more than an hour ahead") {
    env.fake->SetTokenLifetime(std::chrono::hours(48));
    auto r = issuer->Mint(Mint(Request({{"contents", "read"}})));
    REQUIRE_FALSE(r.has_value());
    CHECK(r.error().Reason() == "github_bad_response");
    CHECK(r.error().message.find("expires_at") != std::string::npos);
    CHECK(env.fake->TokensRevoked() == 1);
  }
  SUBCASE("already past") {
    env.fake->SetTokenLifetime(std::chrono::seconds(-60));
    auto r = issuer->Mint(Mint(Request({{"contents", "read"}})));
    REQUIRE_FALSE(r.has_value());
    CHECK(r.error().Reason() == "github_bad_response");
  }
  SUBCASE("an hour and a minute (clock skew) is fine") {
    env.fake->SetTokenLifetime(std::chrono::seconds(3660));
    CHECK(issuer->Mint(Mint(Request({{"contents", "read"}}))).has_value());
  }
}

TEST_CASE("GitHubApp: a revoke GitHub answers 401 just after minting is retried later") {
  Env env;
  env.use_manual_clock = true;
  auto issuer = env.Build();
  env.fake->SetTokenWarmup(std::chrono::seconds(2));
  auto mr = Mint(Request({{"contents", "read"}}));
  mr.now = env.manual_clock.Now();
  auto minted = issuer->Mint(mr);
  REQUIRE(minted.has_value());
  const std::string token = TokenOf(*minted);
  RevokeRequest rr{"grt_test", minted->revocation_handle.Clone(), *minted->upstream_expires_at,
                   mr.now};
  auto early = issuer->Revoke(rr);
  REQUIRE_FALSE(early.has_value());  // not "already revoked": the service queues a retry
  CHECK(early.error().code == ErrorCode::kUnavailable);
  CHECK(early.error().Reason() == "github_token_not_yet_active");
  CHECK(early.error().retryable);
  CHECK(env.fake->TokenActive(token));
  CHECK(MetricValue(*issuer, "jitbroker_github_revocations_deferred_total") == 1);

  // Once GitHub knows the token, the retry really revokes it.
  std::this_thread::sleep_for(std::chrono::milliseconds(2100));
  env.manual_clock.Advance(std::chrono::milliseconds(2100));
  RevokeRequest later{"grt_test", minted->revocation_handle.Clone(), *minted->upstream_expires_at,
                      env.manual_clock.Now()};
  auto done = issuer->Revoke(later);
  INFO((done ? std::string() : done.error().ToString()));
  REQUIRE(done.has_value());
  CHECK(done->kind == RevokeOutcomeKind::kRevoked);
  CHECK_FALSE(env.fake->TokenActive(token));
  CHECK(env.fake->TokensRevoked() == 1);

  // A 401 for a token minted more than ~10 s ago means revoked or expired.
  env.fake->SetTokenWarmup(std::chrono::seconds(600));
  auto second = issuer->Mint(mr);
  REQUIRE(second.has_value());
  RevokeRequest fresh{"grt_2", second->revocation_handle.Clone(), *second->upstream_expires_at,
                      env.manual_clock.Now()};
  CHECK_FALSE(issuer->Revoke(fresh).has_value());
  env.manual_clock.Advance(std::chrono::seconds(11));
  RevokeRequest old{"grt_2", second->revocation_handle.Clone(), *second->upstream_expires_at,
                    env.manual_clock.Now()};
  CHECK(issuer->Revoke(old).has_value());
}

TEST_CASE("GitHubApp: every GitHub call has an overall deadline") {
  Env env;
  SUBCASE("retries of 5xx stop when the budget is spent") {
    auto issuer = env.Build("max_attempts: 10, call_deadline_ms: 1000");
    env.fake->InjectErrors(FakeGitHub::Route::kMint, 502, -1);
    auto r = issuer->Mint(Mint(Request({{"contents", "read"}})));
    REQUIRE_FALSE(r.has_value());
    CHECK(r.error().code == ErrorCode::kUnavailable);
    CHECK(r.error().Reason() == "github_unavailable");
    CHECK(r.error().retryable);
    CHECK(r.error().message.find("call_deadline_ms") != std::string::npos);
    CHECK(env.fake->Requests(FakeGitHub::Route::kMint) < 10);
    std::chrono::milliseconds waited{0};
    for (auto d : env.sleeps) {
      waited += d;
    }
    CHECK(waited < std::chrono::milliseconds(1000));
    CHECK(MetricValue(*issuer, "jitbroker_github_retries_total", "reason=\"deadline\"") == 1);
  }
  SUBCASE("a Retry-After beyond the budget fails fast") {
    auto issuer = env.Build("max_retry_after_seconds: 10, call_deadline_ms: 2000");
    env.fake->InjectErrors(FakeGitHub::Route::kMint, 429, 1, 5);
    auto r = issuer->Mint(Mint(Request({{"contents", "read"}})));
    REQUIRE_FALSE(r.has_value());
    CHECK(r.error().code == ErrorCode::kResourceExhausted);
    CHECK(r.error().Reason() == "github_rate_limited");
    CHECK(r.error().retryable);
    CHECK(r.error().retry_after == std::chrono::seconds(5));
    CHECK(env.sleeps.empty());
  }
  SUBCASE("a slow GitHub is cut off at the deadline, not at timeout_ms") {
    auto issuer = env.Build("timeout_ms: 10000, call_deadline_ms: 300, max_attempts: 3");
    env.fake->SetLatency(std::chrono::milliseconds(1500));
    const auto started = std::chrono::steady_clock::now();
    auto r = issuer->Mint(Mint(Request({{"contents", "read"}})));
    const auto took = std::chrono::steady_clock::now() - started;
    REQUIRE_FALSE(r.has_value());
    CHECK(r.error().code == ErrorCode::kUnavailable);
    CHECK(r.error().retryable);
    CHECK(took < std::chrono::milliseconds(1200));
    env.fake->SetLatency(std::chrono::milliseconds(0));
  }
}

TEST_CASE("GitHubApp TtlCache: followers wait with a timeout") {
  testing::FakeClock clock;
  TtlCache<int> cache(4, std::chrono::seconds(10), &clock, std::chrono::milliseconds(100));
  std::atomic<bool> entered{false};
  std::thread leader([&] {
    auto r = cache.Get("k", [&]() -> Result<int> {
      entered = true;
      std::this_thread::sleep_for(std::chrono::milliseconds(600));
      return 1;
    });
    CHECK(r.has_value());
  });
  while (!entered) {
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  const auto started = std::chrono::steady_clock::now();
  auto follower = cache.Get("k", []() -> Result<int> { return 2; });
  const auto took = std::chrono::steady_clock::now() - started;
  REQUIRE_FALSE(follower.has_value());
  CHECK(follower.error().code == ErrorCode::kUnavailable);
  CHECK(follower.error().Reason() == "upstream_wait_timeout");
  CHECK(follower.error().retryable);
  CHECK(took < std::chrono::milliseconds(500));
  CHECK(cache.wait_timeouts() == 1);
  leader.join();
  CHECK(cache.Get("k", []() -> Result<int> { return 3; })->value == 1);  // the fill landed
}

TEST_CASE("GitHubApp TtlCache: a throwing fill never wedges its key") {
  testing::FakeClock clock;
  TtlCache<int> cache(4, std::chrono::seconds(10), &clock, std::chrono::seconds(5));
  std::atomic<bool> entered{false};
  std::atomic<bool> release{false};
  std::atomic<bool> threw{false};
  std::thread leader([&] {
    try {
      (void)cache.Get("k", [&]() -> Result<int> {
        entered = true;
        while (!release) {
          std::this_thread::sleep_for(std::chrono::milliseconds(1));
        }
        throw std::runtime_error("boom");
      });
    } catch (const std::runtime_error&) {
      threw = true;
    }
  });
  while (!entered) {
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  std::thread follower([&] {
    auto r = cache.Get("k", []() -> Result<int> { return 2; });
    CHECK_FALSE(r.has_value());
    if (!r) {
      CHECK(r.error().code == ErrorCode::kInternal);
    }
  });
  std::this_thread::sleep_for(std::chrono::milliseconds(50));  // let the follower join
  release = true;
  leader.join();
  follower.join();
  CHECK(threw);
  // The key fills afresh.
  auto again = cache.Get("k", []() -> Result<int> { return 9; });
  REQUIRE(again.has_value());
  CHECK(again->value == 9);
  CHECK_FALSE(again->cached);
}

TEST_CASE("GitHubApp TtlCache: evicted values are handed to on_evict") {
  testing::FakeClock clock;
  std::vector<int> evicted;
  TtlCache<int> cache(2, std::chrono::seconds(10), &clock, std::chrono::seconds(1),
                      [&](int v) { evicted.push_back(v); });
  auto value = [](int v) { return [v]() -> Result<int> { return v; }; };
  REQUIRE(cache.Get("a", value(1)).has_value());
  REQUIRE(cache.Get("b", value(2)).has_value());
  REQUIRE(cache.Get("c", value(3)).has_value());  // LRU: "a" goes
  CHECK(evicted == std::vector<int>{1});
  clock.Advance(std::chrono::seconds(11));
  REQUIRE(cache.Get("b", value(4)).has_value());  // expired: "b" goes, refilled
  CHECK(evicted == std::vector<int>{1, 2});
  cache.Erase("b");  // explicit erase hands nothing over
  CHECK(evicted == std::vector<int>{1, 2});
  auto drained = cache.Drain();
  CHECK(drained == std::vector<int>{3});
  CHECK(cache.size() == 0);
}

TEST_CASE("GitHubApp: the delegation check's own tokens are narrow and revoked") {
  Env env;
  env.fake->SetCollaborator("acme/payment-service", "dev", "write");
  env.fake->SetCollaborator("acme/docs", "dev", "read");
  env.use_manual_clock = true;
  auto issuer = env.Build();
  Principal dev;
  dev.id = "d";
  dev.identities = {{"github", "dev"}};
  REQUIRE(issuer->CheckDelegatedRights(Request({{"contents", "read"}}), dev).has_value());
  CHECK(env.fake->LastMintBody() == nlohmann::json{{"repositories", {"payment-service"}},
                                                   {"permissions", {{"metadata", "read"}}}});
  REQUIRE(issuer->CheckDelegatedRights(Request({{"contents", "read"}}, "github://acme/docs"), dev)
              .has_value());
  CHECK(env.fake->LastMintBody() ==
        nlohmann::json{{"repositories", {"docs"}}, {"permissions", {{"metadata", "read"}}}});
  CHECK(env.fake->TokensIssued() == 2);  // one per repository
  CHECK(env.fake->TokensRevoked() == 0);

  // An expired check token is revoked when it leaves the cache (GitHub's
  // hour outlives the broker's 50 minutes).
  env.manual_clock.Advance(std::chrono::minutes(51));
  auto again = issuer->CheckDelegatedRights(Request({{"contents", "read"}}), dev);
  INFO((again ? std::string() : again.error().ToString()));
  REQUIRE(again.has_value());
  CHECK(env.fake->TokensIssued() == 3);
  CHECK(env.fake->TokensRevoked() == 1);

  // The rest go with the issuer.
  issuer.reset();
  CHECK(env.fake->TokensRevoked() == 3);
  for (const auto& v : env.fake->Violations()) {
    CAPTURE(v);
    CHECK(v.find("iat") != std::string::npos);  // the 51 minutes jump, learnt as clock skew
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
