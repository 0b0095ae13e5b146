// Trust policies: parse → compile → check (broker/oidc/trust_policy.h).
#include <functional>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include <doctest/doctest.h>
#include <nlohmann/json.hpp>

#include "broker/config/config.h"
#include "broker/crypto/jose.h"
#include "broker/net/url.h"
#include "broker/oidc/trust_policy.h"
#include "issuers/registry.h"
#include "tests/support/temp_dir.h"

namespace jitbroker::oidc {
namespace {

using nlohmann::json;

TrustContext Ctx() {
  TrustContext c;
  c.issuer_names = {"internal", "github"};
  c.max_session_ttl_seconds = 28800;
  return c;
}

Result<std::shared_ptr<const TrustSet>> Parse(const std::string& yaml) {
  return ParseTrustPoliciesText(yaml, "trust.yaml", Ctx());
}

// A secure GitHub Actions policy: owner id + repository id + ref + event.
const char* kGitHubPolicy = R"(
- name: payments-deploy
  issuer: https://token.actions.githubusercontent.com
  audience: jitbroker.acme.example
  claims:
    repository_owner_id: "123"
    repository_id: "456"
    ref: refs/heads/main
    event_name: [push, workflow_dispatch]
  grant:
    issuer: internal
    resource: jwt://mcp.internal
    scopes: [deploy, read]
    ttl_seconds: 300
)";

std::string ErrorOf(const std::string& yaml) {
  auto r = Parse(yaml);
  if (r) {
    return "";
  }
  CHECK(r.error().code == ErrorCode::kInvalidArgument);
  CHECK(r.error().Reason() == "invalid_config");
  return r.error().message;
}

// The issuers the grants name, as their factories validate them: "internal"
// (jwt) and "github" (github_app with a key generated for the run).
struct Issuers {
  testing::TempDir dir{"trust-policy-test"};
  std::map<std::string, std::unique_ptr<IssuerSpec>> specs;

  Issuers() {
    static const std::string pem = [] {
      auto key = crypto::SigningKey::Generate(crypto::JwsAlg::kRS256);
      REQUIRE(key.has_value());
      auto text = (*key)->ToPem();
      REQUIRE(text.has_value());
      return std::string(text->Reveal());
    }();
    dir.Write("app.pem", pem);
    Add("internal", "jwt",
        "{type: jwt, audiences: [mcp.internal, api.internal], scope_tiers: {read: read, deploy: "
        "write, \"mcp:*\": read}}");
    Add("github", "github_app",
        "{type: github_app, client_id: Iv23liTrustTest, private_key: file:" + dir.File("app.pem") +
            "}");
  }
  void Add(const std::string& name, const std::string& type, const std::string& yaml) {
    config::Section section(YAML::Load(yaml), std::make_shared<const std::string>("issuers.yaml"),
                            "issuers." + name);
    section.MarkKnown("type");
    IssuerContext ctx{name, &section, "", nullptr, nullptr};
    auto spec = issuers::BuiltinIssuers().Validate(type, ctx);
    REQUIRE_MESSAGE(spec.has_value(), (spec ? "" : spec.error().ToString()));
    specs[name] = std::move(*spec);
  }
  const IssuerSpec& operator[](const std::string& name) const { return *specs.at(name); }
  std::function<const IssuerSpec*(std::string_view)> Lookup() const {
    return [this](std::string_view name) -> const IssuerSpec* {
      auto it = specs.find(std::string(name));
      return it == specs.end() ? nullptr : it->second.get();
    };
  }
};

// Parse, then the issuer and tier checks start-up runs (CheckTrustGrants
// against a policy whose read and write tiers are automatic): "" when both
// accept.
std::string CheckedErrorOf(const std::string& yaml) {
  auto r = Parse(yaml);
  if (!r) {
    return r.error().message;
  }
  Issuers issuers;
  Policy policy;
  policy.tiers[static_cast<int>(Tier::kRead)].control = Control::kAutoAllow;
  policy.tiers[static_cast<int>(Tier::kWrite)].control = Control::kAutoAllow;
  Status st = CheckTrustGrants(**r, policy, issuers.Lookup());
  if (st) {
    return "";
  }
  CHECK(st.error().Reason() == "invalid_config");
  return st.error().message;
}

const TrustPolicy& Only(const std::shared_ptr<const TrustSet>& set) {
  REQUIRE(set->policies.size() == 1);
  return set->policies[0];
}

json GitHubClaims() {
  return {{"iss", "https://token.actions.githubusercontent.com"},
          {"sub", "repo:acme/payment-service:ref:refs/heads/main"},
          {"repository", "acme/payment-service"},
          {"repository_owner", "acme"},
          {"repository_owner_id", "123"},
          {"repository_id", "456"},
          {"ref", "refs/heads/main"},
          {"event_name", "push"},
          {"run_id", "9876543"},
          {"run_attempt", "2"},
          {"jti", "abc"}};
}

TEST_CASE("TrustPolicy: a secure GitHub policy parses with its defaults") {
  auto set = Parse(kGitHubPolicy);
  REQUIRE_MESSAGE(set, (set ? "" : set.error().message));
  const TrustPolicy& p = Only(*set);
  CHECK(p.name == "payments-deploy");
  CHECK(p.PrincipalId() == "trust:payments-deploy");
  CHECK(p.provider == Provider::kGitHubActions);
  CHECK(p.algorithms == std::vector<std::string>{"RS256"});
  CHECK_FALSE(p.allow_http);
  CHECK(p.replay_protection);
  CHECK(p.leeway_seconds == 30);
  CHECK(p.max_token_age_seconds == 900);
  CHECK(p.session_ttl_seconds == 3600);
  CHECK(p.claims.size() == 4);
  CHECK(p.grant.issuer == "internal");
  CHECK(p.grant.resource == "jwt://mcp.internal");
  CHECK(p.grant.tool == "ci.token_exchange");
  CHECK(p.grant.operation == "read");
  CHECK(p.grant.max_tier == Tier::kRead);
  CHECK(p.grant.ttl_seconds == 300);
  CHECK(p.grant.scope == json{{"scopes", {"deploy", "read"}}});
  CHECK((*set)->TrustsIssuer("https://token.actions.githubusercontent.com"));
  // Exact comparison: a trailing slash is another issuer.
  CHECK_FALSE((*set)->TrustsIssuer("https://token.actions.githubusercontent.com/"));
  CHECK((*set)->warnings.empty());
  CHECK(p.location.find("trust.yaml:2: trust[0]") == 0);
}

TEST_CASE("TrustPolicy: the documented shape with permissions and repositories") {
  auto set = Parse(R"(
- name: payments-ci
  issuer: https://token.actions.githubusercontent.com
  audience: jitbroker.acme.example
  claims: {repository_owner_id: "123", repository: "acme/payment-service", ref: "refs/heads/main"}
  grant: {issuer: github, resource: "github://acme/payment-service", permissions: {contents: read}, repositories: [payment-service], ttl_seconds: 900, max_tier: write}
  algorithms: [RS256, ES256]
  max_token_age_seconds: 600
  leeway_seconds: 10
  replay_protection: false
  session_ttl_seconds: 7200
)");
  REQUIRE_MESSAGE(set, (set ? "" : set.error().message));
  const TrustPolicy& p = Only(*set);
  CHECK(p.grant.scope ==
        json{{"permissions", {{"contents", "read"}}}, {"repositories", {"payment-service"}}});
  CHECK(p.grant.max_tier == Tier::kWrite);
  CHECK(p.AllowsAlgorithm("ES256"));
  CHECK_FALSE(p.AllowsAlgorithm("Ed25519"));
  CHECK_FALSE(p.replay_protection);
  CHECK(p.session_ttl_seconds == 7200);
}

TEST_CASE("TrustPolicy: configuration errors name file, line and key") {
  struct Case {
    const char* name;
    std::string yaml;
    const char* expect;
  };
  const std::string head =
      "- name: p\n  issuer: https://issuer.example\n  provider: generic\n  audience: aud\n";
  const std::string claims = "  claims: {sub: \"repo:x\", project: \"7\"}\n";
  const std::string grant = "  grant: {issuer: internal, resource: \"jwt://mcp.internal\"}\n";
  const std::vector<Case> cases = {
      {"not a list", "{a: 1}", "trust: must be a list"},
      {"unknown key", head + claims + grant + "  color: red\n",
       "trust.yaml:7: trust[0].color: unknown key"},
      {"missing name", "- issuer: https://i.example\n", "trust[0].name: is required"},
      {"bad name", "- name: \"a b\"\n", "trust[0].name: must match"},
      {"missing claims", head + grant, "trust[0].claims: is required"},
      {"empty claims", head + "  claims: {}\n" + grant, "must pin at least one claim"},
      {"missing grant", head + claims, "trust[0].grant: is required"},
      {"unknown grant issuer", head + claims + "  grant: {issuer: nope, resource: \"jwt://x\"}\n",
       "unknown issuer \"nope\""},
      {"grant without resource", head + claims + "  grant: {issuer: internal}\n",
       "trust[0].grant.resource: is required"},
      {"wildcard resource", head + claims + "  grant: {issuer: internal, resource: \"jwt://*\"}\n",
       "no wildcards"},
      {"bad max_tier",
       head + claims + "  grant: {issuer: internal, resource: \"jwt://x\", max_tier: god}\n",
       "unknown tier \"god\""},
      {"scope twice",
       head + claims +
           "  grant: {issuer: internal, resource: \"jwt://x\", scopes: [a], scope: {scopes: "
           "[b]}}\n",
       "given both here and in grant.scope"},
      {"http issuer",
       "- name: p\n  issuer: http://issuer.example\n  audience: a\n" + claims + grant,
       "must use https"},
      {"allow_http off loopback",
       "- name: p\n  issuer: http://10.0.0.1:8080\n  audience: a\n  allow_http: true\n" + claims +
           grant,
       "only for a loopback host"},
      {"allow_http on https", head + "  allow_http: true\n" + claims + grant,
       "allow_http: is only for an http:// issuer"},
      {"query", "- name: p\n  issuer: https://i.example/?x=1\n  audience: a\n" + claims + grant,
       "query or fragment"},
      {"fragment", "- name: p\n  issuer: https://i.example/#f\n  audience: a\n" + claims + grant,
       "query or fragment"},
      {"userinfo", "- name: p\n  issuer: https://u@i.example\n  audience: a\n" + claims + grant,
       "userinfo"},
      {"dot segments",
       "- name: p\n  issuer: https://i.example/a/../b\n  audience: a\n" + claims + grant,
       "'..' path segments"},
      {"ftp", "- name: p\n  issuer: ftp://i.example\n  audience: a\n" + claims + grant,
       "must use https"},
      {"alg none", head + claims + grant + "  algorithms: [none]\n", "\"none\" is never accepted"},
      {"alg HS256", head + claims + grant + "  algorithms: [HS256]\n",
       "\"HS256\" is never accepted"},
      {"alg PS256", head + claims + grant + "  algorithms: [PS256]\n",
       "unsupported algorithm \"PS256\""},
      {"alg twice", head + claims + grant + "  algorithms: [RS256, RS256]\n", "twice"},
      {"alg empty", head + claims + grant + "  algorithms: []\n", "at least one algorithm"},
      {"leeway too big", head + claims + grant + "  leeway_seconds: 300\n",
       "leeway_seconds: must be an integer in [0, 60]"},
      {"age zero", head + claims + grant + "  max_token_age_seconds: 0\n", "max_token_age_seconds"},
      {"session ttl above sessions.max", head + claims + grant + "  session_ttl_seconds: 99999\n",
       "session_ttl_seconds: must be an integer in [60, 28800]"},
      {"reserved claim", head + "  claims: {aud: x}\n" + grant, "checked by the verifier"},
      {"bad regex", head + "  claims: {sub: \"re:(\"}\n" + grant, "invalid regular expression"},
      {"empty pattern", head + "  claims: {sub: \"\"}\n" + grant, "pattern must not be empty"},
      {"empty pattern list", head + "  claims: {sub: []}\n" + grant, "at least one pattern"},
      {"map pattern", head + "  claims: {sub: {a: b}}\n" + grant,
       "a pattern or a list of patterns"},
      {"generic without exact sub",
       head + "  claims: {sub: \"re:repo:.*\", project: \"7\"}\n" + grant,
       "must pin sub to exact values and at least one more claim"},
      {"generic with only sub", head + "  claims: {sub: \"repo:x\"}\n" + grant,
       "must pin sub to exact values and at least one more claim"},
      {"generic with a glob second claim",
       head + "  claims: {sub: \"repo:x\", project: \"7*\"}\n" + grant,
       "must pin sub to exact values and at least one more claim"},
      {"unrecognised issuer without provider",
       "- name: p\n  issuer: https://issuer.example\n  audience: aud\n" + claims + grant,
       "trust[0].provider: is required for issuer \"https://issuer.example\""},
      {"github default audience",
       "- name: p\n  issuer: https://token.actions.githubusercontent.com\n  audience: "
       "https://github.com/acme\n" +
           claims + grant,
       "GitHub's default owner-URL audience"},
      {"unknown provider",
       "- name: p\n  issuer: https://issuer.example\n  audience: aud\n  provider: jenkins\n" +
           claims + grant,
       "unknown provider"},
      {"GHES default audience (a URL on the issuer's host)",
       "- name: p\n  issuer: https://ghes.acme.example/_services/token\n  audience: "
       "https://ghes.acme.example/acme\n" +
           claims + grant,
       "not a URL on the issuer's host"},
      {"GHE.com default audience",
       "- name: p\n  issuer: https://token.actions.acme.ghe.com\n  audience: "
       "https://acme.ghe.com/acme\n" +
           claims + grant,
       "not a URL on the issuer's host"},
      {"the issuer's host, in upper case and with userinfo",
       "- name: p\n  issuer: https://gitlab.acme.example\n  provider: gitlab\n  audience: "
       "HTTPS://x@GitLab.Acme.Example.\n" +
           claims + grant,
       "not a URL on the issuer's host"},
      {"generic for github",
       "- name: p\n  issuer: https://token.actions.githubusercontent.com\n  audience: a\n  "
       "provider: generic\n" +
           claims + grant,
       "cannot be generic"},
  };
  for (const Case& c : cases) {
    CAPTURE(c.name);
    const std::string msg = ErrorOf(c.yaml);
    CAPTURE(msg);
    CHECK(msg.find(c.expect) != std::string::npos);
    CHECK(msg.starts_with("trust.yaml:"));
  }
}

TEST_CASE("TrustPolicy: duplicate names and disagreeing allow_http are refused") {
  const std::string one = R"(
- name: same
  issuer: http://127.0.0.1:9999
  allow_http: true
  provider: generic
  audience: a
  claims: {sub: x, project_id: "7"}
  grant: {issuer: internal, resource: "jwt://mcp.internal"}
)";
  CHECK(ErrorOf(one + one.substr(1)).find("duplicate trust policy name \"same\"") !=
        std::string::npos);
  auto ok = Parse(one);
  REQUIRE(ok);
  CHECK(Only(*ok).allow_http);
  CHECK(Only(*ok).provider == Provider::kGeneric);
}

TEST_CASE(
    "TrustPolicy: a GitHub policy must pin the tenant exactly (docs/configuration.md, trust)") {
  auto yaml = [](const std::string& claims) {
    return "- name: p\n  issuer: https://token.actions.githubusercontent.com\n  audience: a\n"
           "  claims: " +
           claims + "\n  grant: {issuer: internal, resource: \"jwt://mcp.internal\"}\n";
  };
  // Trusts every repository in the world.
  CHECK(ErrorOf(yaml("{ref: refs/heads/main}")).find("must pin one of repository_owner_id") !=
        std::string::npos);
  CHECK(ErrorOf(yaml("{sub: \"repo:acme/payment-service:ref:refs/heads/main\"}"))
            .find("trusts all of them") != std::string::npos);
  // A glob or regex on the owner is no pin.
  CHECK(!ErrorOf(yaml("{repository_owner: \"acme*\", ref: x}")).empty());
  CHECK(!ErrorOf(yaml("{repository: \"re:acme/.*\", ref: x}")).empty());
  // Exact owner id: accepted; with no ref/environment pin a warning remains.
  auto weak = Parse(yaml("{repository_owner_id: \"123\"}"));
  REQUIRE(weak);
  REQUIRE((*weak)->warnings.size() == 1);
  CHECK((*weak)->warnings[0].find("any branch") != std::string::npos);
  auto strong = Parse(yaml("{repository_owner_id: \"123\", ref: refs/heads/main}"));
  REQUIRE(strong);
  CHECK((*strong)->warnings.empty());
  // A loopback test issuer can opt into the GitHub lint.
  auto local = ParseTrustPoliciesText(
      "- name: p\n  issuer: http://127.0.0.1:8080\n  allow_http: true\n  provider: github_actions\n"
      "  audience: a\n  claims: {ref: x}\n  grant: {issuer: internal, resource: \"jwt://x\"}\n",
      "t.yaml", Ctx());
  REQUIRE_FALSE(local);
  CHECK(local.error().message.find("repository_owner_id") != std::string::npos);
}

TEST_CASE("TrustPolicy: GitLab policies pin the namespace or project") {
  auto yaml = [](const std::string& claims) {
    return "- name: p\n  issuer: https://gitlab.com\n  audience: a\n  claims: " + claims +
           "\n  grant: {issuer: internal, resource: \"jwt://mcp.internal\"}\n";
  };
  CHECK(ErrorOf(yaml("{ref: main}")).find("namespace_id") != std::string::npos);
  auto ok =
      Parse(yaml("{namespace_id: \"77\", project_id: \"4242\", ref_protected: true, ref: main}"));
  REQUIRE_MESSAGE(ok, (ok ? "" : ok.error().message));
  CHECK(Only(*ok).provider == Provider::kGitLab);
}

TEST_CASE("TrustPolicy: provider detection") {
  CHECK(DetectProvider("https://token.actions.githubusercontent.com") == Provider::kGitHubActions);
  CHECK(DetectProvider("https://token.actions.githubusercontent.com/acme-enterprise") ==
        Provider::kGitHubActions);
  CHECK(DetectProvider("https://token.actions.acme.ghe.com") == Provider::kGitHubActions);
  CHECK(DetectProvider("https://ghes.acme.example/_services/token") == Provider::kGitHubActions);
  CHECK(DetectProvider("https://gitlab.com") == Provider::kGitLab);
  CHECK(DetectProvider("https://token.actions.githubusercontent.com.evil.example") ==
        Provider::kGeneric);
  CHECK(DetectProvider("https://accounts.google.com") == Provider::kGeneric);
}

TEST_CASE("TrustPolicy: claims match exactly, by glob or by anchored regex") {
  // Every policy pins ref and the owner id exactly too (the GitHub lint).
  auto policy_with = [](const std::string& claims) {
    std::string pins = "ref: refs/heads/main, ";
    if (claims.find("repository_owner_id") == std::string::npos) {
      pins += "repository_owner_id: \"123\", ";
    }
    auto set = ParseTrustPoliciesText(
        "- name: p\n  issuer: https://token.actions.githubusercontent.com\n  audience: a\n"
        "  claims: {" +
            pins + claims.substr(1) + "\n  grant: {issuer: internal, resource: \"jwt://x\"}\n",
        "t.yaml", Ctx());
    REQUIRE_MESSAGE(set, (set ? "" : set.error().message));
    return (*set)->policies[0];
  };
  json claims = GitHubClaims();
  SUBCASE("exact") {
    CHECK(CheckClaims(policy_with("{sub: \"repo:acme/payment-service:ref:refs/heads/main\"}"),
                      claims));
    auto st =
        CheckClaims(policy_with("{sub: \"repo:acme/payment-service:ref:refs/heads/dev\"}"), claims);
    REQUIRE_FALSE(st);
    CHECK(st.error().code == ErrorCode::kPermissionDenied);
    CHECK(st.error().Reason() == "claims_mismatch");
    // Which claim failed is for the log (detail), not the client (message).
    CHECK(st.error().message == "the subject_token's claims do not match the trust policy");
    CHECK(st.error().message.find("\"sub\"") == std::string::npos);
    CHECK(st.error().detail.find("\"sub\"") != std::string::npos);
    // The expected value (configuration) is never echoed, not even in the log.
    CHECK(st.error().message.find("refs/heads/dev") == std::string::npos);
    CHECK(st.error().detail.find("refs/heads/dev") == std::string::npos);
  }
  SUBCASE("glob stars never span '/' or ':'") {
    // repo:org/* does not match a repository plus its context.
    CHECK_FALSE(CheckClaims(policy_with("{sub: \"repo:acme/*\"}"), claims));
    // repo:acme/payment-service:* covers one segment, not ref:refs/heads/main.
    CHECK_FALSE(CheckClaims(policy_with("{sub: \"repo:acme/payment-service:*\"}"), claims));
    CHECK(
        CheckClaims(policy_with("{sub: \"repo:acme/payment-service:ref:refs/heads/*\"}"), claims));
    CHECK(CheckClaims(policy_with("{repository: \"acme/*\"}"), claims));
    json evil = claims;
    evil["repository"] = "acme/x/y";
    CHECK_FALSE(CheckClaims(policy_with("{repository: \"acme/*\"}"), evil));
  }
  SUBCASE("regular expressions are anchored") {
    CHECK(CheckClaims(policy_with("{repository: \"re:acme/payment-(service|api)\"}"), claims));
    json evil = claims;
    evil["repository"] = "acme/payment-service-evil";
    CHECK_FALSE(CheckClaims(policy_with("{repository: \"re:acme/payment-service\"}"), evil));
    evil["repository"] = "evil/acme/payment-service";
    CHECK_FALSE(CheckClaims(policy_with("{repository: \"re:acme/payment-service\"}"), evil));
  }
  SUBCASE("a list is any of") {
    const TrustPolicy p = policy_with("{event_name: [push, workflow_dispatch]}");
    CHECK(CheckClaims(p, claims));
    json pr = claims;
    pr["event_name"] = "pull_request_target";
    CHECK_FALSE(CheckClaims(p, pr));
  }
  SUBCASE("every rule must match") {
    CHECK_FALSE(
        CheckClaims(policy_with("{repository_owner_id: \"123\", repository_id: \"999\"}"), claims));
  }
  SUBCASE("a missing claim never matches") {
    auto st = CheckClaims(policy_with("{environment: production}"), claims);
    REQUIRE_FALSE(st);
    CHECK(st.error().detail.find("no usable claim \"environment\"") != std::string::npos);
    CHECK(st.error().message.find("environment") == std::string::npos);
    // Not even a pattern that would match the empty string.
    CHECK_FALSE(CheckClaims(policy_with("{environment: \"re:.*\"}"), claims));
  }
}

TEST_CASE("TrustPolicy: booleans and numbers are normalised") {
  auto p = ParseTrustPoliciesText(
      "- name: p\n  issuer: https://gitlab.com\n  audience: a\n"
      "  claims: {ref_protected: true, runner_id: 12, project_id: \"4242\"}\n"
      "  grant: {issuer: internal, resource: \"jwt://x\"}\n",
      "t.yaml", Ctx());
  REQUIRE(p);
  const TrustPolicy& policy = (*p)->policies[0];
  // GitLab sends ref_protected as the string "true", some issuers a boolean;
  // runner_id is a number; ids are strings.
  CHECK(CheckClaims(policy,
                    json{{"ref_protected", "true"}, {"runner_id", 12}, {"project_id", "4242"}}));
  CHECK(CheckClaims(policy,
                    json{{"ref_protected", true}, {"runner_id", "12"}, {"project_id", 4242}}));
  CHECK_FALSE(CheckClaims(
      policy, json{{"ref_protected", false}, {"runner_id", 12}, {"project_id", "4242"}}));
  CHECK_FALSE(CheckClaims(
      policy, json{{"ref_protected", "true"}, {"runner_id", 12.0}, {"project_id", "4242"}}));
  CHECK_FALSE(CheckClaims(
      policy,
      json{{"ref_protected", json::array({"true"})}, {"runner_id", 12}, {"project_id", "4242"}}));
  CHECK(ClaimText(json{{"a", true}}, "a") == "true");
  CHECK(ClaimText(json{{"a", -7}}, "a") == "-7");
  CHECK(ClaimText(json{{"a", 18446744073709551615ULL}}, "a") == "18446744073709551615");
  CHECK_FALSE(ClaimText(json{{"a", nullptr}}, "a"));
  CHECK_FALSE(ClaimText(json{{"a", json::object()}}, "a"));
  CHECK_FALSE(ClaimText(json::array(), "a"));
}

TEST_CASE("TrustPolicy: a name-form GitHub sub also matches its immutable form, not the reverse") {
  json names = GitHubClaims();
  json ids = GitHubClaims();
  ids["sub"] = "repo:acme@123/payment-service@456:ref:refs/heads/main";
  const std::vector<std::string> expected = {
      "repo:acme/payment-service:ref:refs/heads/main",
      "repo:acme@123/payment-service@456:ref:refs/heads/main"};
  // name -> id: the ids come from the same token's signed claims.
  CHECK(SubjectForms(names) == expected);
  // id -> name is never derived: the id form is matched as it is.
  CHECK(SubjectForms(ids) == std::vector<std::string>{expected[1]});

  auto policy_with = [](const std::string& sub) {
    auto set = ParseTrustPoliciesText(
        "- name: p\n  issuer: https://token.actions.githubusercontent.com\n  audience: a\n  "
        "claims: {repository_id: \"456\", sub: \"" +
            sub + "\"}\n  grant: {issuer: internal, resource: \"jwt://x\"}\n",
        "t.yaml", Ctx());
    REQUIRE(set);
    return (*set)->policies[0];
  };
  const TrustPolicy by_name = policy_with(expected[0]);
  const TrustPolicy by_id = policy_with(expected[1]);
  CHECK(CheckClaims(by_name, names));
  // A policy written with names does not match an immutable-form subject:
  // the owner opted into ids precisely so that names stop identifying them.
  CHECK_FALSE(CheckClaims(by_name, ids));
  CHECK(CheckClaims(by_id, names));
  CHECK(CheckClaims(by_id, ids));

  SUBCASE("a sub that disagrees with the repository claims gets no other form") {
    json forged = ids;
    forged["sub"] = "repo:acme@999/payment-service@456:ref:refs/heads/main";
    CHECK(SubjectForms(forged) == std::vector<std::string>{forged["sub"].get<std::string>()});
    CHECK_FALSE(CheckClaims(by_name, forged));
    CHECK_FALSE(CheckClaims(by_id, forged));
    json renamed = names;
    renamed["repository"] = "acme/other";
    CHECK_FALSE(CheckClaims(by_id, renamed));
    // A name-form sub for another repository than the claims name gets no
    // id form either.
    json other = names;
    other["sub"] = "repo:acme/other:ref:refs/heads/main";
    CHECK(SubjectForms(other) == std::vector<std::string>{other["sub"].get<std::string>()});
  }
  SUBCASE("a ':' inside a value is %3A and cannot fake a segment (sub injection)") {
    // A branch named "main:environment:production" yields
    // repo:acme/payment-service:ref:refs/heads/main%3Aenvironment%3Aproduction.
    json injected = names;
    injected["sub"] = "repo:acme/payment-service:ref:refs/heads/main%3Aenvironment%3Aproduction";
    injected["ref"] = "refs/heads/main:environment:production";
    CHECK_FALSE(
        CheckClaims(policy_with("repo:acme/payment-service:environment:production"), injected));
    CHECK_FALSE(
        CheckClaims(policy_with("repo:acme/payment-service:ref:refs/heads/main"), injected));
    // A star covers one segment's characters but never the escaped colon's
    // neighbours beyond '/' or ':'.
    CHECK(CheckClaims(policy_with("repo:acme/payment-service:ref:refs/heads/*"), injected));
    CHECK_FALSE(CheckClaims(policy_with("repo:acme/*:environment:production"), injected));
  }
  SUBCASE("tokens without the repository claims match their sub as it is") {
    json gitlab = {{"sub", "project_path:acme/payments:ref_type:branch:ref:main"}};
    CHECK(SubjectForms(gitlab) == std::vector<std::string>{gitlab["sub"].get<std::string>()});
    CHECK(SubjectForms(json::object()).empty());
  }
}

TEST_CASE("TrustPolicy: grants are checked by their issuer, as start-up does") {
  const std::string head =
      "- name: p\n  issuer: https://issuer.example\n  provider: generic\n  audience: aud\n"
      "  claims: {sub: \"repo:x\", project: \"7\"}\n";
  struct Case {
    const char* name;
    std::string grant;
    const char* expect;  // "" = accepted
  };
  const std::vector<Case> cases = {
      {"a jwt grant", "{issuer: internal, resource: \"jwt://mcp.internal\", scopes: [read]}", ""},
      {"a GitHub grant",
       "{issuer: github, resource: \"github://acme/payment-service\", permissions: {contents: "
       "read}}",
       ""},
      {"an unknown grant key (taken as the issuer's scope)",
       "{issuer: internal, resource: \"jwt://mcp.internal\", owner: me}",
       "trust[0].grant: not a valid grant for issuer \"internal\": scope.owner is not known to "
       "issuer type jwt (grant keys other than"},
      {"a bad permission level",
       "{issuer: github, resource: \"github://acme/payment-service\", permissions: {contents: "
       "all}}",
       "scope.permissions.contents must be"},
      {"GitHub permissions for a jwt issuer",
       "{issuer: internal, resource: \"jwt://mcp.internal\", permissions: {contents: read}}",
       "scope.permissions is not known to issuer type jwt"},
      {"repositories beside the resource (the resource names the repository)",
       "{issuer: github, resource: \"github://acme/payment-service\", permissions: {contents: "
       "read}, repositories: [payment-service]}",
       "scope.repositories is not known to issuer type github_app"},
      {"an empty scope list", "{issuer: internal, resource: \"jwt://mcp.internal\", scopes: []}",
       "scopes must name at least one scope"},
      {"an audience the jwt issuer does not mint",
       "{issuer: internal, resource: \"jwt://unknown.internal\"}", "does not mint for audience"},
      {"a tier above max_tier",
       "{issuer: internal, resource: \"jwt://mcp.internal\", scopes: [deploy]}",
       "exceeds max_tier \"read\""},
  };
  for (const Case& c : cases) {
    CAPTURE(c.name);
    const std::string msg = CheckedErrorOf(head + "  grant: " + c.grant + "\n");
    CAPTURE(msg);
    if (std::string(c.expect).empty()) {
      CHECK(msg.empty());
    } else {
      CHECK(msg.find(c.expect) != std::string::npos);
      CHECK(msg.starts_with("trust.yaml:1: trust[0].grant: "));
    }
  }
}

TEST_CASE("TrustPolicy: the requested scope is tokenised strictly") {
  auto ok = ParseScopeTokens("read deploy read");
  REQUIRE(ok);
  CHECK(*ok == std::vector<std::string>{"read", "deploy"});
  for (const char* s : {"", " read", "read ", "read  deploy", "re\"ad", "r\xc3\xa9", "a\\b"}) {
    CAPTURE(s);
    auto n = ParseScopeTokens(s);
    REQUIRE_FALSE(n);
    CHECK(n.error().Reason() == "invalid_scope");
  }
  std::string many;
  for (int i = 0; i < 65; ++i) {
    many += (many.empty() ? "s" : " s") + std::to_string(i);
  }
  CHECK_FALSE(ParseScopeTokens(many));
  CHECK_FALSE(ParseScopeTokens(std::string(257, 'a')));
}

TEST_CASE("TrustPolicy: the grant is intersected with the requested scope by its issuer") {
  Issuers issuers;
  TrustGrant g;
  g.issuer = "internal";
  g.resource = "jwt://mcp.internal";
  g.scope = {{"scopes", {"deploy", "read", "mcp:search"}}};
  const IssuerSpec& jwt = issuers["internal"];
  SUBCASE("no scope: the whole grant") {
    auto n = NarrowScope(g, std::nullopt, jwt);
    REQUIRE(n);
    CHECK(n->scope == g.scope);
    CHECK(n->scope_text == "deploy read mcp:search");
  }
  SUBCASE("the named scopes, once each") {
    auto n = NarrowScope(g, "read read", jwt);
    REQUIRE(n);
    CHECK(n->scope["scopes"] == json{"read"});
    CHECK(n->scope_text == "read");
  }
  SUBCASE("a jwt scope name with ':' is a scope name (not PERMISSION:LEVEL)") {
    auto n = NarrowScope(g, "mcp:search", jwt);
    REQUIRE_MESSAGE(n, (n ? "" : n.error().ToString()));
    CHECK(n->scope["scopes"] == json{"mcp:search"});
  }
  SUBCASE("nothing beyond the grant") {
    for (const char* s : {"admin", "contents:read", "repo:payment-service", "read admin"}) {
      CAPTURE(s);
      auto n = NarrowScope(g, s, jwt);
      REQUIRE_FALSE(n);
      CHECK(n.error().Reason() == "scope_not_granted");
    }
  }
  SUBCASE("malformed scopes") {
    for (const char* s : {"", " read", "read ", "read  deploy", "re\"ad", "r\xc3\xa9"}) {
      CAPTURE(s);
      auto n = NarrowScope(g, s, jwt);
      REQUIRE_FALSE(n);
      CHECK(n.error().Reason() == "invalid_scope");
    }
  }
  SUBCASE("a grant without scopes cannot be asked for any") {
    TrustGrant empty = g;
    empty.scope = json::object();
    CHECK(NarrowScope(empty, std::nullopt, jwt)->scope_text.empty());
    CHECK_FALSE(NarrowScope(empty, "read", jwt));
  }
  SUBCASE("GitHub permissions narrow to at most the granted level") {
    TrustGrant gh;
    gh.issuer = "github";
    gh.resource = "github://acme/payment-service";
    gh.scope = {{"permissions", {{"contents", "write"}, {"issues", "read"}}}};
    const IssuerSpec& github = issuers["github"];
    auto whole = NarrowScope(gh, std::nullopt, github);
    REQUIRE(whole);
    CHECK(whole->scope == gh.scope);
    CHECK(whole->scope_text == "contents:write issues:read");
    auto n = NarrowScope(gh, "contents:read", github);
    REQUIRE(n);
    CHECK(n->scope["permissions"] == json{{"contents", "read"}});
    CHECK(n->scope_text == "contents:read");
    for (const char* s :
         {"contents:admin", "pull_requests:read", "repo:other", "issues:write", "read"}) {
      CAPTURE(s);
      auto refused = NarrowScope(gh, s, github);
      REQUIRE_FALSE(refused);
      CHECK(refused.error().Reason() == "scope_not_granted");
    }
  }
}

TEST_CASE("TrustPolicy: the CI run key") {
  TrustPolicy gh;
  gh.issuer = "https://token.actions.githubusercontent.com";
  gh.provider = Provider::kGitHubActions;
  CHECK(CiRunKey(gh, GitHubClaims()) ==
        "ci:gh/https%3A//token.actions.githubusercontent.com:acme/payment-service:9876543:2");
  json no_attempt = GitHubClaims();
  no_attempt.erase("run_attempt");
  CHECK(CiRunKey(gh, no_attempt).ends_with(":9876543:1"));
  json odd = GitHubClaims();
  odd["run_id"] = "1:2 3%";
  CHECK(CiRunKey(gh, odd).ends_with(":1%3A2%203%25:2"));

  TrustPolicy gl;
  gl.issuer = "https://gitlab.com";
  gl.provider = Provider::kGitLab;
  CHECK(CiRunKey(gl, json{{"project_path", "acme/payments"},
                          {"pipeline_id", "555"},
                          {"job_id", "777"}}) == "ci:gl/https%3A//gitlab.com:acme/payments:555");

  TrustPolicy other;
  other.issuer = "https://i.example";
  CHECK(CiRunKey(other, json{{"sub", "svc:a"}, {"jti", "j1"}}) ==
        "ci:jti/https%3A//i.example:svc%3Aa:j1");
  CHECK(CiRunKey(other, json{{"sub", "s"}, {"iat", 5}}) == "ci:iat/https%3A//i.example:s:5");
  // A generic issuer's tokens are never grouped by GitHub- or GitLab-looking
  // claims (anyone the policy trusts could send them).
  CHECK(CiRunKey(other, json{{"sub", "s"}, {"jti", "j"}, {"repository", "a/b"}, {"run_id", "1"}})
            .starts_with("ci:jti/"));

  json facts = CiFacts(gh, GitHubClaims());
  CHECK(facts["trust_policy"] == "");
  CHECK(facts["issuer"] == gh.issuer);
  CHECK(facts["repository"] == "acme/payment-service");
  CHECK(facts["run_attempt"] == "2");
  CHECK_FALSE(facts.contains("iss"));
}

TEST_CASE("TrustPolicy: CI run keys of different forms never collide") {
  // Values chosen so that the untagged keys of the old format were equal.
  TrustPolicy gh;
  gh.issuer = "https://ci.example";
  gh.provider = Provider::kGitHubActions;
  TrustPolicy gl = gh;
  gl.provider = Provider::kGitLab;
  TrustPolicy other = gh;
  other.provider = Provider::kGeneric;
  const std::string a =
      CiRunKey(gh, json{{"repository", "x"}, {"run_id", "jti"}, {"run_attempt", "y"}});
  const std::string b = CiRunKey(other, json{{"sub", "x"}, {"jti", "y"}});
  const std::string c = CiRunKey(gl, json{{"project_path", "x"}, {"pipeline_id", "jti:y"}});
  const std::string d = CiRunKey(other, json{{"sub", "x"}, {"iat", 5}});
  const std::string e = CiRunKey(other, json{{"sub", "x"}, {"jti", "iat-5"}});
  CHECK(a == "ci:gh/https%3A//ci.example:x:jti:y");
  CHECK(b == "ci:jti/https%3A//ci.example:x:y");
  CHECK(c == "ci:gl/https%3A//ci.example:x:jti%3Ay");
  const std::set<std::string> keys = {a, b, c, d, e};
  CHECK(keys.size() == 5);
  // Issuers are escaped: one issuer's prefix plus a value is not another issuer.
  TrustPolicy port = gh;
  port.issuer = "https://ci.example:8443";
  CHECK(CiRunKey(port, json{{"repository", "r"}, {"run_id", "1"}}) !=
        CiRunKey(gh, json{{"repository", "8443:r"}, {"run_id", "1"}}));
  // A GitHub policy's token without run claims is keyed per token, not as GitLab.
  CHECK(CiRunKey(gh, json{{"sub", "s"}, {"jti", "j"}, {"project_path", "p"}, {"pipeline_id", "1"}})
            .starts_with("ci:jti/"));
}

TEST_CASE("TrustPolicy: an unrecognised issuer needs an explicit provider") {
  // A self-managed GitLab: not detected, so it must say what it is.
  const std::string base =
      "- name: p\n  issuer: https://gitlab.acme.example\n  audience: jitbroker.acme.example\n"
      "  claims: {ref: main, ref_protected: true}\n"
      "  grant: {issuer: internal, resource: \"jwt://mcp.internal\"}\n";
  // Without provider: refused, however weak or strong the claims.
  CHECK(ErrorOf(base) ==
        "trust.yaml:1: trust[0].provider: is required for issuer \"https://gitlab.acme.example\", "
        "which is not a recognised CI issuer: set provider: github (GitHub Enterprise Server), "
        "gitlab (self-managed GitLab) or generic");
  // As GitLab: this policy trusts every project of the instance.
  const std::string gitlab = ErrorOf(base + "  provider: gitlab\n");
  CHECK(gitlab.find("trust[0].claims: must pin one of namespace_id, namespace_path, project_id, "
                    "project_path to an exact value") != std::string::npos);
  // As generic: sub and one more claim must be exact.
  CHECK(ErrorOf(base + "  provider: generic\n")
            .find("provider: generic policy must pin sub to exact values") != std::string::npos);
  // Fixed: pinned by project id.
  auto ok = Parse(
      "- name: p\n  issuer: https://gitlab.acme.example\n  provider: gitlab\n  audience: a\n"
      "  claims: {project_id: \"42\", ref: main, ref_protected: true}\n"
      "  grant: {issuer: internal, resource: \"jwt://mcp.internal\"}\n");
  REQUIRE_MESSAGE(ok, (ok ? "" : ok.error().message));
  CHECK(Only(*ok).provider == Provider::kGitLab);
  CHECK((*ok)->warnings.empty());
  // GitHub Enterprise Server under another path: provider: github (or
  // github_actions) turns the GitHub lint on.
  CHECK(ErrorOf("- name: p\n  issuer: https://ghes.acme.example/custom\n  provider: github\n"
                "  audience: a\n  claims: {ref: refs/heads/main}\n"
                "  grant: {issuer: internal, resource: \"jwt://x\"}\n")
            .find("must pin one of repository_owner_id") != std::string::npos);
  // A generic policy with an exact sub and one more exact claim.
  auto generic = Parse(
      "- name: p\n  issuer: https://ci.acme.example\n  provider: generic\n  audience: a\n"
      "  claims: {sub: \"project:7:main\", project_id: \"7\"}\n"
      "  grant: {issuer: internal, resource: \"jwt://x\"}\n");
  REQUIRE_MESSAGE(generic, (generic ? "" : generic.error().message));
  CHECK(Only(*generic).provider == Provider::kGeneric);
  // Recognised issuers need no provider.
  CHECK(Parse(kGitHubPolicy));
}

TEST_CASE("TrustPolicy: a tenant pinned only by names is accepted with a warning") {
  auto warnings = [](const std::string& issuer, const std::string& claims) {
    auto set = ParseTrustPoliciesText("- name: p\n  issuer: " + issuer +
                                          "\n  audience: a\n  claims: " + claims +
                                          "\n  grant: {issuer: internal, resource: \"jwt://x\"}\n",
                                      "t.yaml", Ctx());
    REQUIRE_MESSAGE(set, (set ? "" : set.error().message));
    return (*set)->warnings;
  };
  const std::string gh = "https://token.actions.githubusercontent.com";
  auto by_name = warnings(gh, "{repository: acme/payment-service, ref: refs/heads/main}");
  REQUIRE(by_name.size() == 1);
  CHECK(by_name[0].find("only by name") != std::string::npos);
  CHECK(by_name[0].find("repository_owner_id, repository_id") != std::string::npos);
  CHECK(warnings(gh, "{repository_owner: acme, repository_id: \"456\", ref: refs/heads/main}")
            .empty());
  auto gl = warnings("https://gitlab.com", "{project_path: acme/payments, ref: main}");
  REQUIRE(gl.size() == 1);
  CHECK(gl[0].find("namespace_id, project_id") != std::string::npos);
  CHECK(warnings("https://gitlab.com", "{namespace_id: \"77\", ref: main}").empty());
}

TEST_CASE("TrustPolicy: only exact or literal-prefixed context pins count") {
  auto warned = [](const std::string& issuer, const std::string& claims) {
    auto set = ParseTrustPoliciesText("- name: p\n  issuer: " + issuer +
                                          "\n  audience: a\n  claims: " + claims +
                                          "\n  grant: {issuer: internal, resource: \"jwt://x\"}\n",
                                      "t.yaml", Ctx());
    REQUIRE_MESSAGE(set, (set ? "" : set.error().message));
    for (const std::string& w : (*set)->warnings) {
      if (w.find("any branch") != std::string::npos) {
        return true;
      }
    }
    return false;
  };
  const std::string gh = "https://token.actions.githubusercontent.com";
  const std::string owner = "repository_owner_id: \"123\", ";
  for (const char* weak :
       {"ref: \"*\"", "ref: \"refs/heads/*\"", "ref: \"re:.*\"", "ref: [refs/heads/main, \"*\"]",
        "environment: \"*\"", "sub: \"repo:acme/app:*\"", "job_workflow_ref: \"*/*/*\"",
        "event_name: push", "base_ref: main"}) {
    CAPTURE(weak);
    CHECK(warned(gh, "{" + owner + weak + "}"));
  }
  for (const char* strong :
       {"ref: refs/heads/main", "ref: \"refs/heads/release-*\"", "environment: production",
        "ref: [refs/heads/main, refs/tags/v1]", "sub: \"repo:acme/app:environment:production\""}) {
    CAPTURE(strong);
    CHECK_FALSE(warned(gh, "{" + owner + strong + "}"));
  }
  CHECK(warned("https://gitlab.com", "{project_id: \"1\", ref_protected: \"*\"}"));
  CHECK(warned("https://gitlab.com", "{project_id: \"1\", ref: \"*\"}"));
  CHECK_FALSE(warned("https://gitlab.com", "{project_id: \"1\", ref_protected: true}"));
}

TEST_CASE("TrustPolicy: a broker-specific audience is fine on any issuer") {
  for (const char* issuer :
       {"https://ghes.acme.example/_services/token", "https://token.actions.acme.ghe.com",
        "https://token.actions.githubusercontent.com"}) {
    for (const char* audience :
         {"jitbroker.acme.example", "https://jitbroker.acme.example", "https://acme.example/x"}) {
      CAPTURE(issuer);
      CAPTURE(audience);
      auto set = ParseTrustPoliciesText(
          std::string("- name: p\n  issuer: ") + issuer + "\n  audience: " + audience +
              "\n  claims: {repository_owner_id: \"1\", ref: refs/heads/main}\n"
              "  grant: {issuer: internal, resource: \"jwt://x\"}\n",
          "t.yaml", Ctx());
      CHECK_MESSAGE(set, (set ? "" : set.error().message));
    }
  }
}

TEST_CASE("TrustPolicy: URL rules for issuers and jwks_uri") {
  struct Case {
    const char* url;
    bool allow_http;
    bool ok;
  };
  const std::vector<Case> cases = {
      {"https://token.actions.githubusercontent.com", false, true},
      {"https://gitlab.com", false, true},
      {"https://ghes.example/_services/token", false, true},
      {"https://i.example:8443/path/", false, true},
      {"https://[2001:db8::1]/x", false, true},
      {"http://127.0.0.1:8080", true, true},
      {"http://127.9.8.7", true, true},
      {"http://localhost:1", true, true},
      {"http://[::1]:80", true, true},
      {"http://127.0.0.1:8080", false, false},
      {"http://10.0.0.1", true, false},
      {"http://127.0.0.1.evil.example", true, false},
      {"http://169.254.169.254/latest", true, false},
      {"HTTPS://i.example", false, false},
      {"https://", false, false},
      {"https://u:p@i.example", false, false},
      {"https://i.example/a?b", false, false},
      {"https://i.example/#x", false, false},
      {"https://i.example/./a", false, false},
      {"https://i.example//a", false, false},
      {"https://i.example\\@evil", false, false},
      {"https://i.exa mple", false, false},
      {"https://i.example:99999", false, false},
      {"https://i_x.example", false, false},
      {"file:///etc/passwd", false, false},
      {"gopher://i.example", false, false},
      // Accepted before the one URL parser (net::ParseUrl):
      {"https://i.example/%2e%2e/x", false, false},  // ".." to any server that decodes
      {"https://i.example:/x", false, false},        // an empty port
      {"https://a..b/x", false, false},              // an empty label
      {"https://i.example/a|b", false, false},       // not an RFC 3986 character
  };
  for (const Case& c : cases) {
    CAPTURE(c.url);
    CHECK(CheckFetchUrl(c.url, c.allow_http).empty() == c.ok);
  }
  using net::IsLoopbackHost;
  CHECK(IsLoopbackHost("127.0.0.1"));
  CHECK(IsLoopbackHost("LOCALHOST"));
  CHECK(IsLoopbackHost("::1"));
  CHECK_FALSE(IsLoopbackHost("127.0.0"));
  CHECK_FALSE(IsLoopbackHost("127.0.0.256"));
  CHECK_FALSE(IsLoopbackHost("128.0.0.1"));
  CHECK_FALSE(IsLoopbackHost("localhost.evil"));
  const net::UrlPolicy any_http = net::UrlPolicy::BrokerUrl();
  CHECK(net::ParseUrl("https://i.example:8443/x", any_http)->host == "i.example");
  CHECK(net::ParseUrl("https://[::1]:8/x", any_http)->host == "::1");
}

}  // namespace
}  // namespace jitbroker::oidc
