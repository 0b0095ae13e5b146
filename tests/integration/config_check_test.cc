// `jitctl config check`, `jitbroker --check-config` and the daemon's start
// judge a config file alike: the same bad files (issuer sections, identities,
// trust policies) are refused by all three with the same message, and the
// refused daemon creates nothing (docs/configuration.md, "Checking a file").
#include <filesystem>
#include <fstream>
#include <set>
#include <string>
#include <vector>

#include <doctest/doctest.h>

#include "broker/crypto/jose.h"
#include "tests/support/broker_process.h"
#include "tests/support/temp_dir.h"

namespace jitbroker::testing {
namespace {

namespace fs = std::filesystem;

std::string Config(const std::string& issuers, const std::string& principal,
                   const std::string& trust) {
  return "data_dir: data\n"
         "server: {listen: \"127.0.0.1:0\"}\n"
         "log: {level: warn, access_log: access.log}\n"
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
}

const char* kIssuers =
    "  internal: {type: jwt, audiences: [mcp.internal], scope_tiers: {read: read, deploy: "
    "write}}\n"
    "  github: {type: github_app, client_id: Iv23liCheck, private_key: file:app.pem}\n";
const char* kPrincipal =
    "{id: dev, roles: [eng], identities: {github: octocat}, api_key_file: "
    "keys/dev.key}";

std::string TrustWith(const std::string& grant,
                      const std::string& claims = "{repository_id: \"1\", ref: refs/heads/main}") {
  return "  - {name: ci, issuer: \"https://token.actions.githubusercontent.com\", audience: "
         "broker.example, claims: " +
         claims + ", grant: " + grant + "}\n";
}

std::set<std::string> Entries(const fs::path& dir) {
  std::set<std::string> out;
  for (const auto& e : fs::recursive_directory_iterator(dir)) {
    out.insert(fs::relative(e.path(), dir).string());
  }
  return out;
}

TEST_CASE("Config check: the checkers refuse what start refuses, and start creates nothing") {
  TempDir dir("config-check");
  {
    auto key = crypto::SigningKey::Generate(crypto::JwsAlg::kRS256);
    REQUIRE(key.has_value());
    auto pem = (*key)->ToPem();
    REQUIRE(pem.has_value());
    dir.Write("app.pem", std::string(pem->Reveal()));
  }
  const std::string good_trust =
      TrustWith("{issuer: internal, resource: \"jwt://mcp.internal\", scopes: [read]}");
  struct Case {
    const char* name;
    std::string yaml;
    const char* expect;
  };
  const std::vector<Case> cases = {
      {"an issuer type this build does not have",
       Config(std::string(kIssuers) + "  vault: {type: vault, project: acme}\n", kPrincipal,
              good_trust),
       "issuers.vault.type: unknown issuer type \"vault\""},
      {"an aws_sts issuer without credentials",
       Config(std::string(kIssuers) + "  aws: {type: aws_sts, region: us-east-1}\n", kPrincipal,
              good_trust),
       "issuers.aws.credentials: is required"},
      {"a jwt issuer without audiences",
       Config("  internal: {type: jwt}\n", "{id: dev, roles: [eng]}", ""),
       "issuers.internal.audiences: at least one audience is required"},
      {"an unknown key in a jwt issuer",
       Config("  internal: {type: jwt, audiences: [mcp.internal], ttl: 5}\n",
              "{id: dev, roles: [eng]}", ""),
       "issuers.internal.ttl: unknown key"},
      {"a github_app key that is not an RSA key",
       Config("  github: {type: github_app, client_id: Iv23liCheck, private_key: "
              "file:broker.yaml}\n",
              kPrincipal, ""),
       "issuers.github.private_key: is not an unencrypted RSA private key"},
      {"an identity no issuer acts for",
       Config(kIssuers, "{id: dev, roles: [eng], identities: {gihtub: octocat}}", good_trust),
       "policy.principals[0].identities.gihtub: no configured issuer acts for identity"},
      {"a trust grant the jwt issuer cannot mint",
       Config(kIssuers, kPrincipal, TrustWith("{issuer: internal, resource: \"jwt://unknown\"}")),
       "trust[0].grant: not a valid grant for issuer \"internal\""},
      {"a GitHub trust grant with repositories",
       Config(kIssuers, kPrincipal,
              TrustWith("{issuer: github, resource: \"github://acme/app\", permissions: "
                        "{contents: read}, repositories: [app]}")),
       "scope.repositories is not known to issuer type github_app"},
      {"a trust grant above its max_tier",
       Config(kIssuers, kPrincipal,
              TrustWith("{issuer: internal, resource: \"jwt://mcp.internal\", scopes: [deploy]}")),
       "exceeds max_tier \"read\""},
      {"a trust policy that trusts every repository",
       Config(kIssuers, kPrincipal,
              TrustWith("{issuer: internal, resource: \"jwt://mcp.internal\"}",
                        "{ref: refs/heads/main}")),
       "must pin one of repository_owner_id"},
  };
  const std::string path = dir.File("broker.yaml");
  const std::set<std::string> before = {"app.pem", "broker.yaml"};
  for (const Case& c : cases) {
    CAPTURE(c.name);
    dir.Write("broker.yaml", c.yaml);
    REQUIRE(Entries(dir.path()) == before);
    for (const std::string& cmd :
         {std::string(JITCTL_BINARY) + " config check " + path,
          std::string(JITBROKER_BINARY) + " --config " + path + " --check-config",
          std::string(JITBROKER_BINARY) + " --config " + path}) {
      CAPTURE(cmd);
      auto [rc, out] = RunCommand(cmd);
      CAPTURE(out);
      CHECK(rc == 1);
      CHECK(out.find(c.expect) != std::string::npos);
      CHECK(out.find("broker.yaml:") != std::string::npos);
      // Nothing created: no API key, seal key, store, audit file or key,
      // generated issuer key, access log.
      CHECK(Entries(dir.path()) == before);
    }
  }

  SUBCASE("a good file passes all three; github_login is deprecated, with a warning") {
    dir.Write("broker.yaml", Config(kIssuers,
                                    "{id: dev, roles: [eng], github_login: octocat, api_key_file: "
                                    "keys/dev.key}",
                                    good_trust));
    for (const std::string& cmd :
         {std::string(JITCTL_BINARY) + " config check " + path,
          std::string(JITBROKER_BINARY) + " --config " + path + " --check-config"}) {
      CAPTURE(cmd);
      auto [rc, out] = RunCommand(cmd);
      CAPTURE(out);
      CHECK(rc == 0);
      CHECK(out.find("ok: policy version v1") != std::string::npos);
      if (cmd.find(" config check ") != std::string::npos) {
        CHECK(out.find(", 1 principal, ") != std::string::npos);  // not "1 principals"
      }
      CHECK(out.find("github_login is deprecated") != std::string::npos);
      CHECK(Entries(dir.path()) == before);
    }
  }
}

TEST_CASE("Config check: the shipped conf/aws.yaml passes once its credentials are set") {
  // tests/integration/config_check_test.cc -> the repository root.
  const fs::path root =
      fs::absolute(fs::path(__FILE__)).lexically_normal().parent_path().parent_path().parent_path();
  const std::string file = (root / "conf" / "aws.yaml").string();
  const std::string check = std::string(JITCTL_BINARY) + " config check " + file;
  auto [rc, out] = RunCommand(
      "env JITBROKER_AWS_ACCESS_KEY_ID=AKIAEXAMPLE000000001 "
      "JITBROKER_AWS_SECRET_ACCESS_KEY=example/secret/key " +
      check);
  CAPTURE(out);
  CHECK(rc == 0);
  CHECK(out.find("ok: policy version aws.1") != std::string::npos);
  // Without them: refused, naming what is missing.
  auto [rc2, out2] = RunCommand(
      "env -u JITBROKER_AWS_ACCESS_KEY_ID -u "
      "JITBROKER_AWS_SECRET_ACCESS_KEY " +
      check);
  CAPTURE(out2);
  CHECK(rc2 == 1);
  CHECK(out2.find("JITBROKER_AWS_ACCESS_KEY_ID") != std::string::npos);
}

TEST_CASE("Config check: the shipped conf/gcp.yaml passes once its federation key is set") {
  const fs::path root =
      fs::absolute(fs::path(__FILE__)).lexically_normal().parent_path().parent_path().parent_path();
  const std::string check =
      std::string(JITCTL_BINARY) + " config check " + (root / "conf" / "gcp.yaml").string();
  auto key = crypto::SigningKey::Generate(crypto::JwsAlg::kES256);
  REQUIRE(key.has_value());
  TempDir dir("jitbroker-gcp-conf");
  std::ofstream(dir.File("federation.pem")) << (*key)->ToPem()->Reveal();
  auto [rc, out] = RunCommand("env JITBROKER_GCP_FEDERATION_KEY=\"$(cat " +
                              dir.File("federation.pem") + ")\" " + check);
  CAPTURE(out);
  CHECK(rc == 0);
  CHECK(out.find("ok: policy version gcp.1") != std::string::npos);
  auto [rc2, out2] = RunCommand("env -u JITBROKER_GCP_FEDERATION_KEY " + check);
  CAPTURE(out2);
  CHECK(rc2 == 1);
  CHECK(out2.find("JITBROKER_GCP_FEDERATION_KEY") != std::string::npos);
}

}  // namespace
}  // namespace jitbroker::testing
