// End-to-end: the real daemon with a github_app issuer pointed at FakeGitHub
// on loopback (http://127.0.0.1, allowed for loopback only).
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <thread>

#include <doctest/doctest.h>
#include <httplib.h>

#include "broker/crypto/crypto.h"
#include "broker/crypto/jose.h"
#include "tests/fakes/fake_github.h"
#include "tests/support/broker_process.h"
#include "tests/support/git_http_server.h"

namespace jitbroker::testing {
namespace {

constexpr const char* kClientId = "Iv23liIntegration";

struct GitHubWorld {
  std::string key_dir;
  std::unique_ptr<FakeGitHub> fake;  // declared before the broker: stops after it
  std::unique_ptr<BrokerProcess> broker;

  explicit GitHubWorld(const std::string& sessions = "", const std::string& issuer_extra = "") {
    char tmpl[] = "/tmp/jitbroker-gh-XXXXXX";
    REQUIRE(::mkdtemp(tmpl) != nullptr);
    key_dir = tmpl;
    auto key = crypto::SigningKey::Generate(crypto::JwsAlg::kRS256);
    REQUIRE(key.has_value());
    std::ofstream(key_dir + "/app.pem") << (*key)->ToPem()->Reveal();

    FakeGitHubOptions fo;
    fo.app_public_jwk = (*key)->PublicJwk();
    fo.client_id = kClientId;
    fake = FakeGitHub::Start(fo);
    REQUIRE(fake != nullptr);
    FakeInstallation inst;
    inst.id = 42;
    inst.account = "acme";
    inst.repositories = {{"payment-service", 1001}, {"docs", 1002}};
    inst.permissions = {{"contents", "write"}, {"metadata", "read"}, {"pull_requests", "write"}};
    fake->AddInstallation(inst);
    fake->SetCollaborator("acme/payment-service", "maint-user", "write", "maintain");
    fake->SetCollaborator("acme/docs", "maint-user", "read", "read");

    BrokerOptions o;
    if (!sessions.empty()) {
      o.sessions = sessions;
    }
    o.github_logins = {{"maint_1", "maint-user"}};
    o.extra_issuers = "  github: {type: github_app, client_id: " + std::string(kClientId) +
                      ", private_key: file:" + key_dir + "/app.pem, base_url: '" + fake->url() +
                      "', allow_http: true, max_attempts: 1" + issuer_extra + "}\n";
    broker = BrokerProcess::Start(o);
  }
  ~GitHubWorld() {
    broker.reset();
    fake.reset();
    std::error_code ec;
    std::filesystem::remove_all(key_dir, ec);
  }

  std::pair<std::string, std::string> Session(const std::string& max_tier) {
    return broker->OpenSession(
        broker->maintainer_key,
        {{"resources", {"github://acme/payment-service", "github://acme/docs"}},
         {"max_tier", max_tier},
         {"issuers", {"github"}}});
  }

  HttpResult Grant(const std::string& sid, const std::string& token, const std::string& repo,
                   nlohmann::json permissions, int ttl = 300) {
    return broker->Post("/v1/sessions/" + sid + "/grants", token,
                        {{"tool", "git.fetch"},
                         {"operation", "read"},
                         {"resource", "github://acme/" + repo},
                         {"issuer", "github"},
                         {"scope", {{"permissions", permissions}}},
                         {"ttl_seconds", ttl}});
  }

  // What a git client would do with the token: call GitHub with it.
  int UseToken(const std::string& token, const std::string& repo) {
    httplib::Client c("127.0.0.1", fake->port());
    httplib::Headers h = {{"Authorization", "Bearer " + token},
                          {"Accept", "application/vnd.github+json"},
                          {"X-GitHub-Api-Version", "2022-11-28"},
                          {"User-Agent", "git/2.43"}};
    auto r = c.Get("/repos/acme/" + repo, h);
    return r ? r->status : 0;
  }

  std::string GrantState(const std::string& id, const std::string& token) {
    return broker->Get("/v1/grants/" + id, token).json.value("state", "");
  }
};

TEST_CASE("GitHub: an allowed read grant returns an installation token that works upstream") {
  GitHubWorld w;
  auto [sid, token] = w.Session("write");
  auto g = w.Grant(sid, token, "payment-service", {{"contents", "read"}});
  INFO(g.body);
  REQUIRE(g.status == 201);
  CHECK(g.json["decision"]["result"] == "allow");
  CHECK(g.json["decision"]["tier"] == "read");
  CHECK(g.json["revocability"] == "revocable");
  const nlohmann::json& cred = g.json["credential"];
  CHECK(cred["type"] == "github_installation_token");
  CHECK(cred["repositories"] == nlohmann::json::array({"payment-service"}));
  CHECK(cred["permissions"]["contents"] == "read");
  CHECK(cred["installation_id"] == 42);
  const std::string gh_token = cred["token"];
  CHECK(gh_token.rfind("ghs_", 0) == 0);
  CHECK(gh_token.size() > 500);
  CHECK(g.json["delegation"]["checked"] == true);
  CHECK(g.json["delegation"]["held_role"] == "maintain");

  CHECK(w.UseToken(gh_token, "payment-service") == 200);
  CHECK(w.UseToken(gh_token, "docs") == 404);  // narrowed to one repository
  CHECK(w.fake->Violations().empty());

  // The audit record matches GitHub's: token SHA-256 and installation id;
  // never the token itself.
  auto audit = w.broker->Get("/v1/audit?session_id=" + sid, w.broker->admin_key);
  REQUIRE(audit.status == 200);
  bool minted = false;
  for (const auto& rec : audit.json["records"]) {
    if (rec["event"] == "credential.minted") {
      minted = true;
      CHECK(rec["jit_grant"]["credential_sha256"] == crypto::Sha256Hex(gh_token));
      CHECK(rec["jit_grant"]["credential"]["installation_id"] == 42);
      CHECK(rec["jit_grant"]["credential"]["hashed_token"] ==
            crypto::Base64Encode(crypto::Sha256(gh_token)));
      CHECK(rec["jit_grant"]["delegation"]["github_login"] == "maint-user");
    }
  }
  CHECK(minted);
  std::ifstream in(w.broker->audit_path());
  std::string journal((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  CHECK(journal.find(gh_token) == std::string::npos);
  CHECK(journal.find("hashed_token") != std::string::npos);

  auto m = w.broker->Get("/metrics");
  CHECK(m.body.find("jitbroker_github_ratelimit_remaining{issuer=\"github\",resource=\"core\"}") !=
        std::string::npos);
  CHECK(m.body.find("jitbroker_github_app_jwt_signatures_total{issuer=\"github\"} 1") !=
        std::string::npos);
}

TEST_CASE("GitHub: permissions beyond the task scope are denied without calling GitHub") {
  GitHubWorld w;
  auto [sid, token] = w.Session("read");
  const size_t before = w.fake->Requests(FakeGitHub::Route::kAny);
  auto g = w.Grant(sid, token, "payment-service", {{"contents", "write"}});
  INFO(g.body);
  CHECK(g.status == 403);
  CHECK(g.json["decision"]["result"] == "deny");
  CHECK(g.json["decision"]["tier"] == "write");
  CHECK(g.json["decision"]["code"] == "out_of_scope");
  CHECK_FALSE(g.json.contains("credential"));
  CHECK(w.fake->Requests(FakeGitHub::Route::kAny) == before);
  CHECK(w.fake->TokensIssued() == 0);

  // A malformed permission never leaves the broker either.
  auto bad = w.Grant(sid, token, "payment-service", {{"contents", "root"}});
  CHECK(bad.status == 400);
  CHECK(bad.json["code"] == "invalid_permission_level");
  CHECK(w.fake->Requests(FakeGitHub::Route::kAny) == before);
}

TEST_CASE("GitHub: a grant beyond the human's own rights is denied (delegated_rights_exceeded)") {
  GitHubWorld w;
  auto [sid, token] = w.Session("write");
  // Reading docs is within maint-user's read role (and warms the check token).
  auto read = w.Grant(sid, token, "docs", {{"contents", "read"}});
  REQUIRE(read.status == 201);
  const size_t issued = w.fake->TokensIssued();
  auto g = w.Grant(sid, token, "docs", {{"contents", "write"}});
  INFO(g.body);
  CHECK(g.status == 403);
  CHECK(g.json["decision"]["result"] == "deny");
  CHECK(g.json["decision"]["code"] == "delegated_rights_exceeded");
  CHECK(g.json["decision"]["matched_rule"] == "issuers.github.delegated_rights");
  CHECK(g.json["decision"]["reason"].get<std::string>().find(
            "maint-user holds read on acme/docs") != std::string::npos);
  CHECK(g.json["grant"]["delegation"]["held_role"] == "read");
  CHECK(g.json["grant"]["delegation"]["required_role"] == "write");
  CHECK(w.fake->TokensIssued() == issued);  // nothing minted

  // The denial is audited with the check.
  auto audit = w.broker->Get("/v1/audit?session_id=" + sid, w.broker->admin_key);
  bool found = false;
  for (const auto& rec : audit.json["records"]) {
    if (rec["event"] == "grant.decided" &&
        rec["policy_decision"]["code"] == "delegated_rights_exceeded") {
      found = true;
      CHECK(rec["jit_grant"]["delegation"]["allowed"] == false);
    }
  }
  CHECK(found);

  // An upstream failure of the check is an error, never an allow.
  w.fake->InjectErrors(FakeGitHub::Route::kCollaborator, 503, -1);
  auto other = w.Grant(sid, token, "payment-service", {{"contents", "write"}});
  INFO(other.body);
  CHECK(other.status == 503);
  // Only the check's own token for acme/payment-service (metadata: read on
  // that repository) was minted; nothing for the grant.
  CHECK(w.fake->TokensIssued() == issued + 1);
  CHECK(w.fake->LastMintBody() == nlohmann::json{{"repositories", {"payment-service"}},
                                                 {"permissions", {{"metadata", "read"}}}});
}

TEST_CASE("GitHub: revoking a grant and completing a session revoke the tokens upstream") {
  GitHubWorld w;
  auto [sid, token] = w.Session("write");
  auto a = w.Grant(sid, token, "payment-service", {{"contents", "read"}});
  auto b = w.Grant(sid, token, "payment-service", {{"contents", "write"}});
  auto c = w.Grant(sid, token, "docs", {{"contents", "read"}});
  REQUIRE(a.status == 201);
  REQUIRE(b.status == 201);
  REQUIRE(c.status == 201);
  const std::string ta = a.json["credential"]["token"];
  const std::string tb = b.json["credential"]["token"];
  const std::string tc = c.json["credential"]["token"];
  CHECK(b.json["decision"]["tier"] == "write");

  auto del =
      w.broker->Request("DELETE", "/v1/grants/" + a.json["grant_id"].get<std::string>(), token);
  INFO(del.body);
  REQUIRE(del.status == 200);
  CHECK(del.json["outcome"] == "revoked");
  CHECK_FALSE(w.fake->TokenActive(ta));
  CHECK(w.UseToken(ta, "payment-service") == 401);
  CHECK(w.fake->TokenActive(tb));

  auto done = w.broker->Post("/v1/sessions/" + sid + "/complete", token, nlohmann::json::object());
  INFO(done.body);
  REQUIRE(done.status == 200);
  for (const auto& r : done.json["revocations"]) {
    CHECK(r["outcome"] == "revoked");
  }
  CHECK_FALSE(w.fake->TokenActive(tb));
  CHECK_FALSE(w.fake->TokenActive(tc));
  CHECK(w.fake->TokensRevoked() == 3);
}

TEST_CASE("GitHub: a failed upstream revocation is queued and retried until it succeeds") {
  GitHubWorld w("{heartbeat_seconds: 60, stall_after_missed: 3, sweep_interval_ms: 200}");
  auto [sid, token] = w.Session("write");
  auto g = w.Grant(sid, token, "payment-service", {{"contents", "read"}});
  REQUIRE(g.status == 201);
  const std::string gh = g.json["credential"]["token"];
  const std::string id = g.json["grant_id"];

  w.fake->InjectErrors(FakeGitHub::Route::kRevoke, 500, -1);
  auto del = w.broker->Request("DELETE", "/v1/grants/" + id, token);
  INFO(del.body);
  REQUIRE(del.status == 200);
  CHECK(del.json["outcome"] == "queued");
  CHECK(del.json["state"] == "revoking");
  CHECK(w.fake->TokenActive(gh));

  w.fake->ClearErrors();
  std::string state;
  for (int i = 0; i < 100 && state != "revoked"; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    state = w.GrantState(id, token);
  }
  CHECK(state == "revoked");
  CHECK_FALSE(w.fake->TokenActive(gh));
}

TEST_CASE("GitHub: a revocation GitHub answers 401 just after minting is queued, then done") {
  GitHubWorld w("{heartbeat_seconds: 60, stall_after_missed: 3, sweep_interval_ms: 200}");
  // New tokens are unknown to GitHub for their first seconds
  // (docs/concepts.md "GitHub App tokens").
  w.fake->SetTokenWarmup(std::chrono::seconds(3));
  auto [sid, token] = w.Session("write");
  auto g = w.Grant(sid, token, "payment-service", {{"contents", "read"}});
  INFO(g.body);
  REQUIRE(g.status == 201);  // the delegation check waited its own new token out
  const std::string gh = g.json["credential"]["token"];
  const std::string id = g.json["grant_id"];

  auto del = w.broker->Request("DELETE", "/v1/grants/" + id, token);
  INFO(del.body);
  REQUIRE(del.status == 200);
  CHECK(del.json["outcome"] == "queued");  // not taken for "already revoked"
  CHECK(w.fake->TokenActive(gh));

  std::string state;
  for (int i = 0; i < 200 && state != "revoked"; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    state = w.GrantState(id, token);
  }
  CHECK(state == "revoked");
  CHECK_FALSE(w.fake->TokenActive(gh));
}

TEST_CASE("GitHub: owner or repository names in upper case are refused") {
  GitHubWorld w;
  auto [sid, token] = w.Session("write");
  auto g = w.Grant(sid, token, "Payment-Service", {{"contents", "read"}});
  INFO(g.body);
  CHECK(g.status == 400);
  CHECK(g.json["code"] == "invalid_resource");
  CHECK_FALSE(g.json.contains("credential"));
  CHECK(w.fake->TokensIssued() == 0);
}

TEST_CASE("GitHub: a grant TTL shorter than GitHub's hour is enforced by revocation") {
  GitHubWorld w("{heartbeat_seconds: 60, stall_after_missed: 3, sweep_interval_ms: 200}");
  auto [sid, token] = w.Session("write");
  auto g = w.Grant(sid, token, "payment-service", {{"contents", "read"}}, 1);
  REQUIRE(g.status == 201);
  const std::string gh = g.json["credential"]["token"];
  const std::string id = g.json["grant_id"];
  CHECK(w.fake->TokenActive(gh));
  bool dead = false;
  for (int i = 0; i < 60 && !dead; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    dead = !w.fake->TokenActive(gh);
  }
  CHECK(dead);
  std::string state;
  for (int i = 0; i < 20 && state != "revoked"; ++i) {
    state = w.GrantState(id, token);
    if (state != "revoked") {
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
  }
  CHECK(state == "revoked");
}

// git itself, through `jitctl git-credential`, pushing to a git server that
// accepts exactly what GitHub would accept for the token it is given.
TEST_CASE("GitHub: git push through jitctl git-credential with a just-in-time token") {
  GitHubWorld w;
  auto [sid, token] = w.Session("write");
  const std::string dir = w.key_dir;
  FakeGitHub* fake = w.fake.get();
  auto server = GitHttpServer::Start(dir + "/srv", [fake](const GitAuthRequest& a) {
    if (a.username != "x-access-token" || !fake->TokenActive(a.password)) {
      return false;
    }
    auto info = fake->Token(a.password);
    const std::string repo = a.owner_repo.substr(a.owner_repo.find('/') + 1);
    const bool reaches = a.owner_repo.starts_with("acme/") &&
                         std::find(info->repositories.begin(), info->repositories.end(), repo) !=
                             info->repositories.end();
    const std::string contents = info->permissions.value("contents", "");
    return reaches && (a.push ? contents == "write" : !contents.empty());
  });
  server->CreateRepo("acme/payment-service");
  server->CreateRepo("acme/docs");

  const std::string env = "JITBROKER_URL='" + w.broker->url() + "' JITBROKER_SESSION_ID='" + sid +
                          "' JITBROKER_SESSION_TOKEN='" + token + "' HOME='" + dir +
                          "' GIT_CONFIG_NOSYSTEM=1 GIT_TERMINAL_PROMPT=0 GIT_ASKPASS=/bin/false ";
  auto git = [&](const std::string& helper_flags, const std::string& args) {
    return RunCommand(env +
                      "git -c user.name=agent -c user.email=agent@example.invalid "
                      "-c init.defaultBranch=main -c credential.helper= "
                      "-c 'credential.helper=!" +
                      std::string(JITCTL_BINARY) + " git-credential --host " + server->host() +
                      " " + helper_flags + "' " + "-c credential.useHttpPath=true " + args);
  };
  const std::string work = dir + "/work";
  auto [rc0, out0] = RunCommand(env + "git init -q -b main '" + work + "' && echo hi > '" + work +
                                "/README' && git -C '" + work + "' add README && git -C '" + work +
                                "' -c user.name=a -c user.email=a@b commit -q -m first");
  REQUIRE_MESSAGE(rc0 == 0, out0);

  // Read access cannot push (GitHub answers 403/401 for contents:read).
  auto [rc1, out1] = git("--access read", "-C '" + work + "' push -q '" +
                                              server->url("acme/payment-service") + "' main");
  CHECK_MESSAGE(rc1 != 0, out1);

  // Write access pushes; the token was minted for this push only.
  auto [rc2, out2] =
      git("", "-C '" + work + "' push -q '" + server->url("acme/payment-service") + "' main");
  CHECK_MESSAGE(rc2 == 0, out2);
  auto [rc3, out3] =
      RunCommand("git --git-dir '" + dir + "/srv/acme/payment-service.git' log --oneline main");
  CHECK_MESSAGE(out3.find("first") != std::string::npos, out3);

  // The session shows the helper's grants, each narrowed to the repository.
  auto s = w.broker->Get("/v1/sessions/" + sid, token);
  REQUIRE(s.status == 200);
  int pushes = 0;
  for (const auto& g : s.json["grants"]) {
    if (g["tool"] == "git.push" && g["state"] == "active") {
      ++pushes;
      CHECK(g["resource"] == "github://acme/payment-service");
    }
  }
  CHECK(pushes >= 1);
  CHECK(fake->Violations().empty());

  // The delegating human holds only read on acme/docs: a write token is
  // denied (delegated rights), git gets no credential and fails.
  auto [rc4, out4] = git("", "ls-remote '" + server->url("acme/docs") + "'");
  CHECK_MESSAGE(rc4 != 0, out4);
  CHECK_MESSAGE(out4.find("delegated_rights_exceeded") != std::string::npos, out4);
  // Read is within the human's rights.
  auto [rc4b, out4b] = git("--access read", "ls-remote '" + server->url("acme/docs") + "'");
  CHECK_MESSAGE(rc4b == 0, out4b);
  auto [rc5, out5] = git("", "ls-remote '" + server->url("acme/payment-service") + "'");
  CHECK_MESSAGE(rc5 == 0, out5);

  // Completing the session revokes every token the helper obtained, and the
  // helper gets nothing more.
  auto done = w.broker->Post("/v1/sessions/" + sid + "/complete", token, nlohmann::json::object());
  REQUIRE(done.status == 200);
  auto [rc6, out6] = git("", "ls-remote '" + server->url("acme/payment-service") + "'");
  CHECK_MESSAGE(rc6 != 0, out6);
  CHECK(fake->TokensRevoked() >= 1);
  server->Stop();
}

TEST_CASE("GitHub: an approved grant is re-checked against the human's rights when collected") {
  GitHubWorld w("", ", delegation: {cache_ttl_seconds: 1}");
  auto [sid, token] = w.Session("merge_deploy");
  auto pending = w.broker->Post("/v1/sessions/" + sid + "/grants", token,
                                {{"tool", "github.merge_pull_request"},
                                 {"operation", "merge"},
                                 {"resource", "github://acme/payment-service"},
                                 {"issuer", "github"},
                                 {"scope", {{"permissions", {{"contents", "write"}}}}},
                                 {"parameters", {{"pull", 842}}}});
  INFO(pending.body);
  REQUIRE(pending.status == 202);
  const std::string grant_id = pending.json["grant_id"];
  const std::string approval_id = pending.json["approval"]["id"];
  const std::string digest = pending.json["approval"]["request_digest"];
  const size_t issued = w.fake->TokensIssued();

  // While the request waits, the human loses write access upstream.
  w.fake->SetCollaborator("acme/payment-service", "maint-user", "read", "read");
  auto ok = w.broker->Post("/v1/approvals/" + approval_id, w.broker->maintainer2_key,
                           {{"decision", "approve"}, {"request_digest", digest}});
  INFO(ok.body);
  REQUIRE(ok.status == 200);
  std::this_thread::sleep_for(std::chrono::milliseconds(1100));  // past the delegation cache

  auto got = w.broker->Get("/v1/grants/" + grant_id, token);
  INFO(got.body);
  REQUIRE(got.status == 200);
  CHECK(got.json["state"] == "denied");
  CHECK(got.json["decision"]["code"] == "delegated_rights_exceeded");
  CHECK_FALSE(got.json.contains("credential"));
  // The only token minted meanwhile is the check's own metadata token.
  CHECK(w.fake->LastMintBody()["permissions"] == nlohmann::json{{"metadata", "read"}});
  CHECK(w.fake->TokensIssued() <= issued + 1);
}

}  // namespace
}  // namespace jitbroker::testing
