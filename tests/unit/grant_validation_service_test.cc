// BrokerService with the real `jwt` issuer and the README's example policy
// (issue #10):
//   finding 1 — an agent chose its JWT's `scope` claim and got a 201 for
//     "admin delete:all deploy:prod" in a read-only session; the README's CI
//     example scope `deploy` must be mintable by the CI exchange only;
//   finding 5 — bidi controls and invisible characters in what approvers
//     are shown (tool, operation, resource, parameters, task) are refused.
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <sstream>
#include <string>

#include <doctest/doctest.h>
#include <yaml-cpp/yaml.h>
#include <nlohmann/json.hpp>

#include "broker/audit/journal.h"
#include "broker/config/config.h"
#include "broker/crypto/crypto.h"
#include "broker/crypto/jose.h"
#include "broker/http/wire.h"
#include "broker/oidc/token_request.h"
#include "broker/oidc/token_verifier.h"
#include "broker/oidc/trust_policy.h"
#include "broker/service/broker_service.h"
#include "broker/store/sqlite_store.h"
#include "issuers/registry.h"
#include "tests/fakes/fake_clock.h"
#include "tests/fakes/fake_key_source.h"

namespace jitbroker::testing {
namespace {

using nlohmann::json;
namespace fs = std::filesystem;

constexpr char kGitHubIssuer[] = "https://token.actions.githubusercontent.com";
constexpr char kEngineerKey[] = "jbk_engineer_key_for_tests_0123456789";
constexpr char kRootKey[] = "jbk_root_key_for_tests_0123456789";

std::string RepoRoot() {
  fs::path self = fs::absolute(fs::path(__FILE__)).lexically_normal();
  return self.parent_path().parent_path().parent_path().string();
}

// The README's CI example: the ```yaml block that declares the `internal`
// issuer's scope_tiers, the engineer role and the payments-deploy trust
// policy, read from README.md itself so that the example stays true.
YAML::Node ReadmeExample() {
  std::ifstream in(RepoRoot() + "/README.md");
  std::stringstream ss;
  ss << in.rdbuf();
  const std::string readme = ss.str();
  size_t pos = 0;
  while ((pos = readme.find("```yaml\n", pos)) != std::string::npos) {
    const size_t start = pos + 8;
    const size_t end = readme.find("```", start);
    REQUIRE(end != std::string::npos);
    const std::string block = readme.substr(start, end - start);
    if (block.find("scope_tiers") != std::string::npos &&
        block.find("name: payments-deploy") != std::string::npos) {
      return YAML::Load(block);
    }
    pos = end + 3;
  }
  FAIL("README.md has no yaml block with scope_tiers and the payments-deploy trust policy");
  return {};
}

using Keys = StaticKeySource;

class Fixture {
 public:
  Fixture() {
    char tmpl[] = "/tmp/jitbroker-gv-XXXXXX";
    REQUIRE(::mkdtemp(tmpl) != nullptr);
    dir_ = tmpl;
    std::ofstream(dir_ + "/eng.key") << kEngineerKey << "\n";
    std::ofstream(dir_ + "/root.key") << kRootKey << "\n";
    // The README example, completed into a config: principals and an admin.
    YAML::Node example = ReadmeExample();
    YAML::Node doc;
    doc["data_dir"] = "data";
    doc["policy"]["version"] = "readme.1";
    doc["policy"]["roles"] = example["policy"]["roles"];
    doc["policy"]["roles"]["admin"] = YAML::Load("{resources: [\"*\"], max_tier: destructive}");
    doc["policy"]["principals"] = YAML::Load(
        "[{id: dev_engineer, roles: [engineer], api_key_file: eng.key},"
        " {id: root, roles: [admin], api_key_file: root.key}]");
    doc["issuers"] = example["issuers"];
    doc["trust"] = example["trust"];
    YAML::Emitter out;
    out << doc;
    auto cfg = config::LoadConfigText(out.c_str(), dir_ + "/broker.yaml");
    REQUIRE_MESSAGE(cfg.has_value(), (cfg ? "" : cfg.error().ToString()));

    std::map<std::string, std::unique_ptr<Issuer>> built;
    for (config::IssuerConfig& ic : cfg->issuers) {
      IssuerContext ctx{ic.name, &ic.section, cfg->data_dir, &clock_};
      auto issuer = issuers::BuiltinIssuers().Create(ic.type, ctx);
      REQUIRE_MESSAGE(issuer.has_value(), (issuer ? "" : issuer.error().ToString()));
      built.emplace(ic.name, std::move(*issuer));
    }
    signer_ = std::move(*crypto::SigningKey::Generate(crypto::JwsAlg::kRS256));
    keys_ = std::make_unique<Keys>(*signer_);
    store::SqliteOptions so;
    so.path = dir_ + "/state.db";
    auto st = store::OpenSqliteStore(so);
    REQUIRE(st.has_value());
    store_ = std::move(*st);
    auto j = audit::Journal::Create(store_.get(), dir_ + "/audit.jsonl");
    REQUIRE(j.has_value());
    journal_ = std::move(*j);
    service::ServiceOptions opts;
    opts.sessions = cfg->sessions;
    opts.seal_key = SecretValue(crypto::RandomBytes(32));
    opts.oidc_keys = keys_.get();
    service_ =
        std::make_unique<service::BrokerService>(store_.get(), journal_.get(), &clock_, &metrics_,
                                                 std::move(built), cfg->policy, std::move(opts));
    oidc::TrustContext tc;
    tc.issuer_names = {"internal"};
    REQUIRE(cfg->trust.has_value());
    auto trust = oidc::ParseTrustPolicies(&*cfg->trust, tc);
    REQUIRE_MESSAGE(trust.has_value(), (trust ? "" : trust.error().ToString()));
    auto set = service_->SetTrust(*trust);
    REQUIRE_MESSAGE(set.has_value(), (set ? "" : set.error().ToString()));
  }
  ~Fixture() {
    journal_->Stop();
    service_.reset();
    fs::remove_all(dir_);
  }

  service::CallContext As(const std::string& bearer) {
    auto c = service_->Authenticate("Bearer " + bearer, "");
    REQUIRE_MESSAGE(c.has_value(), (c ? "" : c.error().ToString()));
    service::CallContext ctx;
    ctx.request_id = "req_test";
    ctx.caller = std::move(*c);
    return ctx;
  }

  Result<json> Open(const json& scope, const json& task_extra = json::object()) {
    json task = {{"id", "task_1"}, {"scope", scope}};
    task.update(task_extra);
    return api().OpenSession(As(kEngineerKey), {{"agent", {{"id", "agent_1"}}}, {"task", task}});
  }

  // An engineer's read-only session on jwt://mcp.internal: {id, token}.
  std::pair<std::string, std::string> ReadSession() {
    auto opened = Open(
        {{"resources", {"jwt://mcp.internal"}}, {"max_tier", "read"}, {"issuers", {"internal"}}});
    REQUIRE_MESSAGE(opened.has_value(), (opened ? "" : opened.error().ToString()));
    return {(*opened)["session_id"], (*opened)["session_token"]};
  }

  Result<http::wire::JsonApi::GrantAnswer> Grant(const std::pair<std::string, std::string>& session,
                                                 const json& body) {
    return api().RequestGrant(As(session.second), session.first, body);
  }

  size_t GrantCount(const std::string& session_id) {
    auto grants = store_->ListGrants(session_id);
    REQUIRE(grants.has_value());
    return grants->size();
  }

  Result<json> CiExchange() {
    const int64_t now = ToUnixSeconds(clock_.Now());
    const json claims = {{"iss", kGitHubIssuer},
                         {"aud", "jitbroker.acme.example"},
                         {"sub", "repo:acme/payments:ref:refs/heads/main"},
                         {"jti", "jti-" + std::to_string(++jti_)},
                         {"iat", now},
                         {"exp", now + 300},
                         {"repository", "acme/payments"},
                         {"repository_owner", "acme"},
                         {"repository_owner_id", "123"},
                         {"repository_id", "456"},
                         {"ref", "refs/heads/main"},
                         {"event_name", "push"},
                         {"run_id", "77"},
                         {"run_attempt", "1"}};
    oidc::TokenExchangeRequest req;
    req.subject_token = SecretValue(*signer_->SignJwt({{"kid", "k1"}}, claims));
    req.subject_token_type = std::string(oidc::kTokenTypeIdToken);
    req.audience = "payments-deploy";
    service::CallContext ctx;
    ctx.request_id = "req_ci";
    return api().ExchangeToken(ctx, req);
  }

  FakeClock clock_;
  std::unique_ptr<service::BrokerService> service_;
  // The JSON API over the service: what the HTTP routes answer.
  http::wire::JsonApi api() { return http::wire::JsonApi(service_.get()); }
  std::unique_ptr<Store> store_;

 private:
  std::string dir_;
  int jti_ = 0;
  std::unique_ptr<crypto::SigningKey> signer_;
  std::unique_ptr<Keys> keys_;
  std::unique_ptr<audit::Journal> journal_;
  Metrics metrics_;
};

json Payload(const std::string& jwt) {
  const size_t a = jwt.find('.');
  const size_t b = jwt.find('.', a + 1);
  auto decoded = crypto::Base64UrlDecode(jwt.substr(a + 1, b - a - 1));
  REQUIRE(decoded.has_value());
  return json::parse(*decoded);
}

json ReadRequest() {
  return {{"tool", "mcp.search"},
          {"operation", "read"},
          {"resource", "jwt://mcp.internal"},
          {"issuer", "internal"}};
}

TEST_CASE("Grant scopes: the finding's request no longer mints admin in a read session") {
  Fixture f;
  auto session = f.ReadSession();
  // The exact request of issue #10, finding 1 (on main: 201 auto_allow, a JWT
  // with "scope": "admin delete:all deploy:prod").
  json attack = ReadRequest();
  attack["scope"] = {{"scopes", {"admin", "delete:all", "deploy:prod"}}};
  auto r = f.Grant(session, attack);
  REQUIRE_FALSE(r.has_value());
  CHECK(r.error().code == ErrorCode::kInvalidArgument);
  CHECK(r.error().Reason() == "unknown_scope");
  CHECK(r.error().message.find("scope_tiers") != std::string::npos);
  CHECK(f.GrantCount(session.first) == 0);

  // A plain read still works; its claim is the declared operation scope.
  auto ok = f.Grant(session, ReadRequest());
  REQUIRE_MESSAGE(ok.has_value(), (ok ? "" : ok.error().ToString()));
  REQUIRE(ok->outcome == service::GrantOutcome::kIssued);
  CHECK(Payload(ok->body["credential"]["token"])["scope"] == "read");
  json mcp = ReadRequest();
  mcp["scope"] = {{"scopes", {"mcp:search"}}};
  auto ok2 = f.Grant(session, mcp);
  REQUIRE(ok2.has_value());
  REQUIRE(ok2->outcome == service::GrantOutcome::kIssued);
  CHECK(Payload(ok2->body["credential"]["token"])["scope"] == "mcp:search");
}

TEST_CASE("Grant scopes: an agent cannot mint the README's CI scope; the CI exchange can") {
  Fixture f;
  auto session = f.ReadSession();
  // `deploy` is declared (tier write), but the engineer role does not list it:
  // a policy denial, audited and recorded like any other.
  json deploy = ReadRequest();
  deploy["scope"] = {{"scopes", {"deploy"}}};
  auto r = f.Grant(session, deploy);
  REQUIRE_MESSAGE(r.has_value(), (r ? "" : r.error().ToString()));
  CHECK(r->outcome == service::GrantOutcome::kDenied);
  CHECK(r->body["decision"]["result"] == "deny");
  // The read session stops it first (deploy implies write); a pr session at
  // the role's ceiling reaches the role's scope bound.
  CHECK(r->body["decision"]["code"] == "out_of_scope");
  auto opened = f.Open({{"resources", {"jwt://mcp.internal"}}, {"max_tier", "pr"}});
  REQUIRE(opened.has_value());
  std::pair<std::string, std::string> pr_session = {(*opened)["session_id"],
                                                    (*opened)["session_token"]};
  r = f.Grant(pr_session, deploy);
  REQUIRE(r.has_value());
  CHECK(r->outcome == service::GrantOutcome::kDenied);
  CHECK(r->body["decision"]["code"] == "exceeds_principal");
  CHECK(r->body["decision"]["matched_rule"] == "principal.roles");
  CHECK(r->body["decision"]["reason"].get<std::string>().find("\"deploy\"") != std::string::npos);
  CHECK_FALSE(r->body.contains("credential"));
  // Nor the deploy audience, nor a task scope that names deploy.
  json target = deploy;
  target["resource"] = "jwt://deploy.internal";
  r = f.Grant(pr_session, target);
  REQUIRE(r.has_value());
  CHECK(r->outcome == service::GrantOutcome::kDenied);
  auto wide =
      f.Open({{"resources", {"jwt://mcp.internal"}}, {"max_tier", "pr"}, {"scopes", {"deploy"}}});
  REQUIRE_FALSE(wide.has_value());
  CHECK(wide.error().Reason() == "scope_exceeds_principal");

  // The CI job, through the trust policy, gets exactly `deploy`.
  auto ci = f.CiExchange();
  REQUIRE_MESSAGE(ci.has_value(), (ci ? "" : ci.error().ToString()));
  CHECK((*ci)["scope"] == "deploy");
  const json claims = Payload((*ci)["access_token"]);
  CHECK(claims["scope"] == "deploy");
  CHECK(claims["aud"] == "deploy.internal");
  CHECK(claims["tier"] == "write");
}

TEST_CASE("Grant scopes: the task scope's scopes bound what its agent may ask for") {
  Fixture f;
  auto opened =
      f.Open({{"resources", {"jwt://mcp.internal"}}, {"max_tier", "read"}, {"scopes", {"mcp:*"}}});
  REQUIRE_MESSAGE(opened.has_value(), (opened ? "" : opened.error().ToString()));
  CHECK((*opened)["task"]["scope"]["scopes"] == json::array({"mcp:*"}));
  std::pair<std::string, std::string> session = {(*opened)["session_id"],
                                                 (*opened)["session_token"]};
  auto r = f.Grant(session, ReadRequest());  // carries "read"
  REQUIRE(r.has_value());
  CHECK(r->outcome == service::GrantOutcome::kDenied);
  CHECK(r->body["decision"]["code"] == "scope_not_in_task");
  json mcp = ReadRequest();
  mcp["scope"] = {{"scopes", {"mcp:fetch"}}};
  r = f.Grant(session, mcp);
  REQUIRE(r.has_value());
  CHECK(r->outcome == service::GrantOutcome::kIssued);
}

TEST_CASE("Grant requests: invisible and bidi characters are refused before anything happens") {
  Fixture f;
  auto session = f.ReadSession();
  struct Case {
    const char* name;
    json body;
    const char* mentions;
  };
  auto with = [](const char* key, json value) {
    json b = ReadRequest();
    b[key] = std::move(value);
    return b;
  };
  const std::string rlo = "\u202e";   // RIGHT-TO-LEFT OVERRIDE
  const std::string zwsp = "\u200b";  // ZERO WIDTH SPACE
  const Case cases[] = {
      {"tool", with("tool", "mcp.search" + rlo + "hcraes"), "tool contains U+202E"},
      {"operation", with("operation", "re" + zwsp + "ad"), "operation contains U+200B"},
      {"resource", with("resource", "jwt://mcp.internal/" + std::string("\u2066") + "x"),
       "resource contains U+2066"},
      {"parameter value", with("parameters", {{"command", "ls " + std::string("\u2067") + "-la"}}),
       "parameters.command contains U+2067"},
      {"parameter key", with("parameters", {{"com" + zwsp + "mand", "rm -rf /"}}),
       "a key of parameters contains U+200B"},
      {"nested parameter",
       with("parameters", {{"argv", {"ls", {{"x", "a" + std::string("\ufeff")}}}}}),
       "parameters.argv[1].x contains U+FEFF"},
      {"tag characters", with("parameters", {{"q", "hi" + std::string("\U000E0041")}}), "U+E0041"},
      {"line separator", with("justification", "ok" + std::string("\u2028") + "fine"),
       "justification contains U+2028"},
      {"Arabic letter mark", with("parameters", {{"q", "a" + std::string("\u061c")}}), "U+061C"},
      {"C1 control", with("parameters", {{"q", "a" + std::string("\u0085")}}), "U+0085"},
      {"scope", with("scope", {{"scopes", {"read" + rlo}}}), "scope.scopes[0] contains U+202E"},
  };
  for (const Case& c : cases) {
    CAPTURE(c.name);
    auto r = f.Grant(session, c.body);
    REQUIRE_FALSE(r.has_value());
    CHECK(r.error().code == ErrorCode::kInvalidArgument);
    CHECK(r.error().Reason() == "invalid_value");
    CHECK(r.error().message.find(c.mentions) != std::string::npos);
  }
  CHECK(f.GrantCount(session.first) == 0);
  // Ordinary non-ASCII text and newlines are fine.
  json fine = with("parameters", {{"q", "caf\u00e9 \u65e5\u672c\nnext line\t\u2714\ufe0f"}});
  fine["justification"] = "r\u00e9sum\u00e9";
  auto ok = f.Grant(session, fine);
  REQUIRE_MESSAGE(ok.has_value(), (ok ? "" : ok.error().ToString()));
  CHECK(ok->outcome == service::GrantOutcome::kIssued);
}

TEST_CASE("Sessions: invisible and bidi characters in the task are refused") {
  Fixture f;
  const json scope = {{"resources", {"jwt://mcp.internal"}}, {"max_tier", "read"}};
  struct Case {
    const char* name;
    json body;
    const char* mentions;
  };
  auto body = [&](json agent, json task) { return json{{"agent", agent}, {"task", task}}; };
  const Case cases[] = {
      {"description",
       body({{"id", "a"}}, {{"id", "t"}, {"description", "fix \u202eevil"}, {"scope", scope}}),
       "task.description contains U+202E"},
      {"task id", body({{"id", "a"}}, {{"id", "t\u200d"}, {"scope", scope}}), "task.id"},
      {"agent id", body({{"id", "a\u2069"}}, {{"id", "t"}, {"scope", scope}}), "agent.id"},
      {"scope resource",
       body({{"id", "a"}},
            {{"id", "t"},
             {"scope", {{"resources", {"jwt://mcp.internal\u200b"}}, {"max_tier", "read"}}}}),
       "task.scope.resources[0] contains U+200B"},
  };
  for (const Case& c : cases) {
    CAPTURE(c.name);
    auto r = f.api().OpenSession(f.As(kEngineerKey), c.body);
    REQUIRE_FALSE(r.has_value());
    CHECK(r.error().Reason() == "invalid_value");
    CHECK(r.error().message.find(c.mentions) != std::string::npos);
  }
  SessionFilter all;
  auto listed = f.store_->ListSessions(all);
  REQUIRE(listed.has_value());
  CHECK(listed->empty());
}

}  // namespace
}  // namespace jitbroker::testing
