// app::ValidateConfig (broker/app/app.h): the whole-file check that `jitctl
// config check`, `jitbroker --check-config` and start-up share, and the
// issuer registry it validates issuer sections with (issuers/registry.h).
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include <doctest/doctest.h>

#include "broker/app/app.h"
#include "broker/config/config.h"
#include "broker/crypto/jose.h"
#include "issuers/github_app/github_app_issuer.h"
#include "issuers/jwt/jwt_issuer.h"
#include "issuers/registry.h"
#include "tests/fakes/fake_issuer.h"
#include "tests/support/temp_dir.h"

namespace jitbroker {
namespace {

using testing::TempDir;

// A valid file: one jwt and one github_app issuer, a principal with a GitHub
// identity, one CI trust policy. `issuers`, `principal` and `trust` replace
// the parts a case breaks.
struct Files {
  TempDir dir{"config-validation"};

  Files() {
    static const std::string pem = [] {
      auto key = crypto::SigningKey::Generate(crypto::JwsAlg::kRS256);
      REQUIRE(key.has_value());
      auto text = (*key)->ToPem();
      REQUIRE(text.has_value());
      return std::string(text->Reveal());
    }();
    dir.Write("app.pem", pem);
  }

  static std::string Issuers() {
    return "  internal: {type: jwt, audiences: [mcp.internal], scope_tiers: {read: read, deploy: "
           "write}}\n"
           "  github: {type: github_app, client_id: Iv23liCheck, private_key: file:app.pem}\n";
  }
  static std::string Principal() {
    return "{id: dev, roles: [eng], identities: {github: octocat}, api_key_file: keys/dev.key}";
  }
  static std::string Trust() {
    return "  - {name: ci, issuer: \"https://token.actions.githubusercontent.com\", audience: "
           "broker.example, claims: {repository_id: \"1\", ref: refs/heads/main}, grant: {issuer: "
           "internal, resource: \"jwt://mcp.internal\", scopes: [read]}}\n";
  }

  std::string Write(const std::string& issuers = Issuers(),
                    const std::string& principal = Principal(),
                    const std::string& trust = Trust()) {
    const std::string yaml =
        "data_dir: data\n"
        "log: {level: error, access_log: access.log}\n"
        "policy:\n"
        "  version: v1\n"
        "  tiers: {read: {control: auto_allow}, write: {control: in_scope}}\n"
        "  principals:\n"
        "    - " +
        principal +
        "\n"
        "  roles: {eng: {resources: [\"*\"], max_tier: write}}\n"
        "issuers:\n" +
        issuers + (trust.empty() ? std::string() : "trust:\n" + trust);
    dir.Write("broker.yaml", yaml);
    return dir.File("broker.yaml");
  }
};

// "" when both the loader and ValidateConfig accept the file.
std::string ErrorOf(const std::string& path) {
  auto cfg = config::LoadConfigFile(path);
  if (!cfg) {
    return cfg.error().message;
  }
  Status st = app::ValidateConfig(*cfg);
  if (st) {
    return "";
  }
  CHECK(st.error().code == ErrorCode::kInvalidArgument);
  CHECK(st.error().Reason() == "invalid_config");
  return st.error().message;
}

TEST_CASE("IssuerRegistry: built-in types, and a type registered twice is an error") {
  const issuers::IssuerRegistry& builtin = issuers::BuiltinIssuers();
  CHECK(builtin.Types() == std::vector<std::string>{"aws_sts", "gcp", "github_app", "jwt"});

  issuers::IssuerRegistry r;
  REQUIRE(issuers::RegisterBuiltinIssuers(r).has_value());
  Status again = r.Register("jwt", issuers::github_app::Factory());
  REQUIRE_FALSE(again.has_value());
  CHECK(again.error().code == ErrorCode::kAlreadyExists);
  CHECK(again.error().Reason() == "duplicate_issuer_type");
  // The first factory stays.
  config::Section s(YAML::Load("{type: jwt, audiences: [a]}"),
                    std::make_shared<const std::string>("t.yaml"), "issuers.x");
  s.MarkKnown("type");
  IssuerContext ctx{"x", &s, "", nullptr, nullptr};
  auto spec = r.Validate("jwt", ctx);
  REQUIRE_MESSAGE(spec.has_value(), (spec ? "" : spec.error().ToString()));
  CHECK((*spec)->Describe().type == "jwt");
  // Registering all built-ins twice fails too.
  CHECK_FALSE(issuers::RegisterBuiltinIssuers(r).has_value());

  CHECK_FALSE(r.Register("", issuers::jwt::Factory()).has_value());
  CHECK_FALSE(r.Register("half", IssuerFactory{issuers::jwt::Factory().validate, nullptr}));
  CHECK_FALSE(r.Has("half"));
}

TEST_CASE("ValidateConfig: a valid file passes and creates nothing") {
  Files f;
  const std::string path = f.Write();
  CHECK(ErrorOf(path).empty());
  // Nothing was created: no data_dir (keys, store, audit, seal key), no API
  // key file, no access log.
  CHECK_FALSE(std::filesystem::exists(f.dir.File("data")));
  CHECK_FALSE(std::filesystem::exists(f.dir.File("keys")));
  CHECK_FALSE(std::filesystem::exists(f.dir.File("access.log")));
}

TEST_CASE("ValidateConfig: refuses bad issuer sections, identities and trust policies") {
  Files f;
  struct Case {
    const char* name;
    std::string issuers = Files::Issuers();
    std::string principal = Files::Principal();
    std::string trust = Files::Trust();
    const char* expect;
  };
  const std::string gh =
      "  github: {type: github_app, client_id: Iv23liCheck, private_key: "
      "file:app.pem";
  const std::string jwt =
      "  internal: {type: jwt, audiences: [mcp.internal], scope_tiers: "
      "{read: read, deploy: write}";
  const std::vector<Case> cases = {
      {.name = "an issuer type this build does not have",
       .issuers = Files::Issuers() + "  vault: {type: vault}\n",
       .expect = "broker.yaml:12: issuers.vault.type: unknown issuer type \"vault\" (this build "
                 "has aws_sts, gcp, github_app, jwt)"},
      {.name = "a gcp issuer without its broker identity",
       .issuers = Files::Issuers() + "  gcp: {type: gcp}\n",
       .expect = "issuers.gcp.identity: is required"},
      {.name = "an aws_sts issuer without its region",
       .issuers = Files::Issuers() + "  aws: {type: aws_sts}\n",
       .expect = "broker.yaml:12: issuers.aws.region: is required"},
      {.name = "a jwt issuer without audiences",
       .issuers = "  internal: {type: jwt}\n" + gh + "}\n",
       .expect = "broker.yaml:10: issuers.internal.audiences: at least one audience is required"},
      {.name = "an unknown jwt key",
       .issuers = jwt + ", audience: [x]}\n" + gh + "}\n",
       .expect = "issuers.internal.audience: unknown key"},
      {.name = "a bad jwt algorithm",
       .issuers = jwt + ", algorithm: HS256}\n" + gh + "}\n",
       .expect = "issuers.internal.algorithm: must be ES256 or Ed25519"},
      {.name = "a jwt signing key that is not a key",
       .issuers = jwt + ", signing_key: file:broker.yaml}\n" + gh + "}\n",
       .expect = "issuers.internal.signing_key: is not a ES256 private key in PEM"},
      {.name = "a github_app issuer without a private key",
       .issuers = jwt + "}\n  github: {type: github_app, client_id: Iv23liCheck}\n",
       .expect = "issuers.github.private_key: is required"},
      {.name = "a github_app private key that is not an RSA key",
       .issuers = jwt + "}\n  github: {type: github_app, client_id: Iv23liCheck, private_key: "
                        "file:broker.yaml}\n",
       .expect = "issuers.github.private_key: is not an unencrypted RSA private key"},
      {.name = "a github_app base_url over plain http",
       .issuers = jwt + "}\n" + gh + ", base_url: \"http://github.example\"}\n",
       .expect = "issuers.github.base_url: must be an https:// URL"},
      {.name = "a bad permission in github_app defaults",
       .issuers = jwt + "}\n" + gh + ", default_permissions: {contents: all}}\n",
       .expect = "issuers.github.default_permissions.contents: must be a level"},
      {.name = "a bad delegation identity key",
       .issuers = jwt + "}\n" + gh + ", delegation: {identity: GitHub}}\n",
       .expect = "issuers.github.delegation.identity: must be an identity key"},
      {.name = "an identity no issuer acts for",
       .principal = "{id: dev, roles: [eng], identities: {gihtub: octocat}}",
       .expect = "broker.yaml:7: policy.principals[0].identities.gihtub: no configured issuer "
                 "acts for identity \"gihtub\" (they act for: github)"},
      {.name = "a trust grant for an audience the jwt issuer does not mint",
       .trust = "  - {name: ci, issuer: \"https://token.actions.githubusercontent.com\", "
                "audience: broker.example, claims: {repository_id: \"1\", ref: refs/heads/main}, "
                "grant: {issuer: internal, resource: \"jwt://unknown.internal\"}}\n",
       .expect = "trust[0].grant: not a valid grant for issuer \"internal\": issuer internal does "
                 "not mint for audience unknown.internal"},
      {.name = "a trust grant with a misspelt key",
       .trust = "  - {name: ci, issuer: \"https://token.actions.githubusercontent.com\", "
                "audience: broker.example, claims: {repository_id: \"1\", ref: refs/heads/main}, "
                "grant: {issuer: internal, resource: \"jwt://mcp.internal\", scope: {scopes: "
                "[read]}, max_teir: read}}\n",
       .expect = "scope.max_teir is not known to issuer type jwt"},
      {.name = "a GitHub trust grant with repositories",
       .trust = "  - {name: ci, issuer: \"https://token.actions.githubusercontent.com\", "
                "audience: broker.example, claims: {repository_id: \"1\", ref: refs/heads/main}, "
                "grant: {issuer: github, resource: \"github://acme/app\", permissions: "
                "{contents: read}, repositories: [app]}}\n",
       .expect = "scope.repositories is not known to issuer type github_app"},
      {.name = "a trust grant above its max_tier",
       .trust = "  - {name: ci, issuer: \"https://token.actions.githubusercontent.com\", "
                "audience: broker.example, claims: {repository_id: \"1\", ref: refs/heads/main}, "
                "grant: {issuer: internal, resource: \"jwt://mcp.internal\", scopes: [deploy]}}\n",
       .expect = "exceeds max_tier \"read\""},
      {.name = "a trust policy that trusts every repository",
       .trust = "  - {name: ci, issuer: \"https://token.actions.githubusercontent.com\", "
                "audience: broker.example, claims: {ref: refs/heads/main}, grant: {issuer: "
                "internal, resource: \"jwt://mcp.internal\"}}\n",
       .expect = "must pin one of repository_owner_id"},
  };
  for (const Case& c : cases) {
    CAPTURE(c.name);
    const std::string path = f.Write(c.issuers, c.principal, c.trust);
    const std::string msg = ErrorOf(path);
    CAPTURE(msg);
    CHECK(msg.find(c.expect) != std::string::npos);
    CHECK(msg.find("broker.yaml:") != std::string::npos);
    CHECK_FALSE(std::filesystem::exists(f.dir.File("data")));
  }
}

TEST_CASE("ValidateConfig: a new issuer type is purely additive") {
  // A build with a third type: registered, nothing else changed. Its config
  // section, its identity key and the trust policies naming it validate
  // through the same path as the built-in types.
  issuers::IssuerRegistry r;
  REQUIRE(issuers::RegisterBuiltinIssuers(r).has_value());
  struct FakeSpec final : IssuerSpec {
    IssuerDescription desc;
    const IssuerDescription& Describe() const override { return desc; }
    Result<Tier> ImpliedTier(const GrantRequest& req) const override {
      if (!req.scope.empty()) {
        return std::unexpected(InvalidArgument("invalid_scope", "the fake takes no scope"));
      }
      return Tier::kRead;
    }
  };
  auto parse = [](IssuerContext& ctx) -> Result<IssuerDescription> {
    JITBROKER_ASSIGN_OR_RETURN(auto identity, ctx.config->OptString("identity"));
    JITBROKER_RETURN_IF_ERROR(ctx.config->CheckNoUnknownKeys());
    IssuerDescription d;
    d.name = ctx.name;
    d.type = "fake";
    d.identity_key = identity.value_or("");
    return d;
  };
  REQUIRE(r.Register(
               "fake",
               IssuerFactory{[parse](IssuerContext& ctx) -> Result<std::unique_ptr<IssuerSpec>> {
                               JITBROKER_ASSIGN_OR_RETURN(IssuerDescription d, parse(ctx));
                               auto spec = std::make_unique<FakeSpec>();
                               spec->desc = std::move(d);
                               return std::unique_ptr<IssuerSpec>(std::move(spec));
                             },
                             [parse](IssuerContext& ctx) -> Result<std::unique_ptr<Issuer>> {
                               JITBROKER_ASSIGN_OR_RETURN(IssuerDescription d, parse(ctx));
                               return std::unique_ptr<Issuer>(std::make_unique<testing::FakeIssuer>(
                                   testing::FakeIssuerOptions{.name = d.name, .type = d.type}));
                             }})
              .has_value());
  Files f;
  const std::string issuers = Files::Issuers() + "  cloud: {type: fake, identity: cloud}\n";
  const std::string principal =
      "{id: dev, roles: [eng], identities: {github: octocat, cloud: dev@example.com}}";
  const std::string trust =
      Files::Trust() +
      "  - {name: ci2, issuer: \"https://token.actions.githubusercontent.com\","
      " audience: broker.example, claims: {repository_id: \"2\", ref: "
      "refs/heads/main}, grant: {issuer: cloud, resource: \"fake://x\"}}\n";
  auto cfg = config::LoadConfigFile(f.Write(issuers, principal, trust));
  REQUIRE_MESSAGE(cfg.has_value(), (cfg ? "" : cfg.error().ToString()));
  Status with_fake = app::ValidateConfig(*cfg, r);
  CHECK_MESSAGE(with_fake.has_value(), (with_fake ? "" : with_fake.error().ToString()));
  // The daemon's build has no such type.
  auto again = config::LoadConfigFile(f.dir.File("broker.yaml"));
  REQUIRE(again.has_value());
  Status builtin = app::ValidateConfig(*again);
  REQUIRE_FALSE(builtin.has_value());
  CHECK(builtin.error().message.find("unknown issuer type \"fake\"") != std::string::npos);
  // Its trust grants are checked by it: a scope it does not take is refused.
  auto bad = config::LoadConfigFile(f.Write(
      issuers, principal,
      Files::Trust() + "  - {name: ci2, issuer: \"https://token.actions.githubusercontent.com\","
                       " audience: broker.example, claims: {repository_id: \"2\", ref: "
                       "refs/heads/main}, grant: {issuer: cloud, resource: \"fake://x\", "
                       "buckets: [b]}}\n"));
  REQUIRE(bad.has_value());
  Status refused = app::ValidateConfig(*bad, r);
  REQUIRE_FALSE(refused.has_value());
  CHECK(refused.error().message.find("trust[1].grant: not a valid grant for issuer \"cloud\": "
                                     "the fake takes no scope") != std::string::npos);
}

}  // namespace
}  // namespace jitbroker
