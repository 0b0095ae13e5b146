// git through the broker (docs/proxy.md), end to end with Debian's `git`:
// the agent's remote is the broker's /git/ URL, `jitctl git-credential`
// answers with the session, and the broker decides each pushed ref and
// forwards to a smart-HTTP git server (tests/support/git_http_server.h)
// that accepts only installation tokens the fake GitHub minted for that
// repository, with contents:write for a push — as github.com does.
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <fstream>

#include <doctest/doctest.h>
#include <httplib.h>

#include "broker/crypto/crypto.h"
#include "broker/crypto/jose.h"
#include "tests/fakes/fake_github.h"
#include "tests/support/broker_process.h"
#include "tests/support/git_http_server.h"

namespace jitbroker::testing {
namespace {

constexpr const char* kProxyClientId = "Iv23liGitProxy";

struct ProxyWorld {
  std::string dir;
  std::unique_ptr<FakeGitHub> fake;
  std::unique_ptr<GitHttpServer> git;
  std::unique_ptr<BrokerProcess> broker;
  std::string remote;  // the broker's URL of acme/payment-service
  std::string sid;
  std::string token;

  explicit ProxyWorld(const std::string& anomaly = "") {
    char tmpl[] = "/tmp/jitbroker-gp-XXXXXX";
    REQUIRE(::mkdtemp(tmpl) != nullptr);
    dir = tmpl;
    auto key = crypto::SigningKey::Generate(crypto::JwsAlg::kRS256);
    REQUIRE(key.has_value());
    std::ofstream(dir + "/app.pem") << (*key)->ToPem()->Reveal();
    FakeGitHubOptions fo;
    fo.app_public_jwk = (*key)->PublicJwk();
    fo.client_id = kProxyClientId;
    fo.git_root = dir + "/srv";
    fake = FakeGitHub::Start(fo);
    REQUIRE(fake != nullptr);
    FakeInstallation inst;
    inst.id = 42;
    inst.account = "acme";
    inst.repositories = {{"payment-service", 1001}};
    inst.permissions = {{"contents", "write"},
                        {"metadata", "read"},
                        {"pull_requests", "write"},
                        {"issues", "write"}};
    fake->AddInstallation(inst);
    fake->SetCollaborator("acme/payment-service", "maint-user", "write", "maintain");
    FakeGitHub* f = fake.get();
    git = GitHttpServer::Start(dir + "/srv", [f](const GitAuthRequest& a) {
      if (a.username != "x-access-token" || !f->TokenActive(a.password)) {
        return false;
      }
      auto info = f->Token(a.password);
      const bool reaches = a.owner_repo == "acme/payment-service" &&
                           std::find(info->repositories.begin(), info->repositories.end(),
                                     "payment-service") != info->repositories.end();
      const std::string contents = info->permissions.value("contents", "");
      return reaches && (a.push ? contents == "write" : !contents.empty());
    });
    git->CreateRepo("acme/payment-service");
    // The upstream starts with one commit on main (written directly).
    const std::string seed = dir + "/seed";
    Sh("git init -q -b main '" + seed + "' && echo v1 > '" + seed + "/README' && " + Git() +
       " -C '" + seed + "' add README && " + Git() + " -C '" + seed + "' commit -q -m v1 && " +
       Git() + " -C '" + seed + "' push -q '" + dir + "/srv/acme/payment-service.git' main");

    BrokerOptions o;
    o.anomaly = anomaly;
    o.github_logins = {{"maint_1", "maint-user"}};
    o.extra_issuers = "  github: {type: github_app, client_id: " + std::string(kProxyClientId) +
                      ", private_key: file:" + dir + "/app.pem, base_url: '" + fake->url() +
                      "', git_url: 'http://" + git->host() +
                      "', allow_http: true, max_attempts: 1}\n";
    broker = BrokerProcess::Start(o);
    remote = broker->url() + "/git/" + git->host() + "/acme/payment-service.git";
  }
  ~ProxyWorld() {
    broker.reset();
    git->Stop();
    fake.reset();
    std::error_code ec;
    std::filesystem::remove_all(dir, ec);
  }

  static std::string Git() { return "git -c user.name=agent -c user.email=agent@example.invalid"; }
  static std::string Sh(const std::string& cmd) {
    auto [rc, out] = RunCommand(cmd);
    REQUIRE_MESSAGE(rc == 0, cmd << "\n" << out);
    return out;
  }

  void OpenSession(const nlohmann::json& branches) {
    nlohmann::json scope = {{"resources", {"github://acme/payment-service"}},
                            {"max_tier", "merge_deploy"},
                            {"issuers", {"github"}}};
    if (!branches.is_null()) {
      scope["branches"] = branches;
    }
    std::tie(sid, token) = broker->OpenSession(broker->maintainer_key, scope);
  }

  // The agent's environment: the session and the broker, no GitHub token.
  std::string AgentEnv() const {
    return "env -i PATH=\"$PATH\" HOME='" + dir + "/home' JITBROKER_URL='" + broker->url() +
           "' JITBROKER_SESSION_ID='" + sid + "' JITBROKER_SESSION_TOKEN='" + token +
           "' GIT_CONFIG_NOSYSTEM=1 GIT_TERMINAL_PROMPT=0 GIT_ASKPASS=/bin/false ";
  }
  // git as the agent runs it, with jitctl as its credential helper.
  std::pair<int, std::string> AgentGit(const std::string& args) const {
    return RunCommand(AgentEnv() + Git() + " -c credential.helper= -c 'credential.helper=!" +
                      std::string(JITCTL_BINARY) + " git-credential' " + args + " 2>&1");
  }
  std::string Upstream(const std::string& args) const {
    return Sh("git --git-dir '" + dir + "/srv/acme/payment-service.git' " + args + " 2>&1");
  }
  std::string Work() const { return dir + "/work"; }
  void Commit(const std::string& message) const {
    Sh(Git() + " -C '" + Work() + "' commit -q --allow-empty -m '" + message + "'");
  }
  nlohmann::json Grants() const {
    auto s = broker->Get("/v1/sessions/" + sid, token);
    REQUIRE(s.status == 200);
    return s.json["grants"];
  }
};

TEST_CASE("git proxy: a branch-scoped session clones, pushes fix/… and is refused main") {
  ProxyWorld w;
  w.OpenSession({"fix/*"});
  std::filesystem::create_directories(w.dir + "/home");

  auto [rc, out] = w.AgentGit("clone -q '" + w.remote + "' '" + w.Work() + "'");
  REQUIRE_MESSAGE(rc == 0, out);
  CHECK(std::filesystem::exists(w.Work() + "/README"));

  // The README tour's push: allowed, and it reaches the upstream.
  ProxyWorld::Sh(ProxyWorld::Git() + " -C '" + w.Work() + "' checkout -q -b fix/checkout-timeout");
  w.Commit("fix the timeout");
  auto [rc2, out2] = w.AgentGit("-C '" + w.Work() + "' push -q origin fix/checkout-timeout");
  CHECK_MESSAGE(rc2 == 0, out2);
  CHECK(w.Upstream("log --oneline fix/checkout-timeout").find("fix the timeout") !=
        std::string::npos);

  // A push larger than git's post buffer: git probes first (a bare
  // flush-pkt), then streams the pack chunked.
  ProxyWorld::Sh("head -c 3000000 /dev/urandom > '" + w.Work() + "/blob.bin' && " +
                 ProxyWorld::Git() + " -C '" + w.Work() + "' add blob.bin && " + ProxyWorld::Git() +
                 " -C '" + w.Work() + "' commit -q -m blob");
  auto [rc2b, out2b] = w.AgentGit("-C '" + w.Work() + "' push -q origin fix/checkout-timeout");
  CHECK_MESSAGE(rc2b == 0, out2b);
  CHECK(w.Upstream("rev-parse fix/checkout-timeout") ==
        ProxyWorld::Sh(ProxyWorld::Git() + " -C '" + w.Work() + "' rev-parse HEAD"));

  // main is outside the task's branches: git's own rejection line, and
  // nothing reaches the upstream.
  const std::string main_before = w.Upstream("rev-parse main");
  ProxyWorld::Sh(ProxyWorld::Git() + " -C '" + w.Work() + "' checkout -q main");
  w.Commit("straight to main");
  auto [rc3, out3] = w.AgentGit("-C '" + w.Work() + "' push origin main");
  CHECK(rc3 != 0);
  CHECK_MESSAGE(
      out3.find("! [remote rejected] main -> main (jitbroker: denied:") != std::string::npos, out3);
  CHECK_MESSAGE(out3.find("not in the task scope's branches") != std::string::npos, out3);
  CHECK(w.Upstream("rev-parse main") == main_before);

  // Deleting a branch is destructive: denied by default.
  auto [rc4, out4] = w.AgentGit("-C '" + w.Work() + "' push origin :fix/checkout-timeout");
  CHECK(rc4 != 0);
  CHECK_MESSAGE(
      out4.find("[remote rejected] fix/checkout-timeout (jitbroker: denied:") != std::string::npos,
      out4);
  CHECK(w.Upstream("branch --list fix/checkout-timeout").find("fix/checkout-timeout") !=
        std::string::npos);

  // Every ref update is a grant of its own, with its ids; the push's write
  // tokens are revoked once the push is over.
  int pushes = 0;
  for (const auto& g : w.Grants()) {
    if (g["tool"] != "git.push") {
      continue;
    }
    ++pushes;
    CHECK(g["parameters"].contains("old"));
    CHECK(g["parameters"].contains("new"));
    CHECK(g["state"] != "active");
  }
  CHECK(pushes == 4);

  // No GitHub token anywhere on the agent's side: not in what the helper
  // answers, not in git's config, not in the environment.
  auto [rc5, cred] =
      RunCommand("printf 'protocol=http\\nhost=127.0.0.1:" + std::to_string(w.broker->port()) +
                 "\\npath=git/x/acme/payment-service.git\\n\\n' | " + w.AgentEnv() + JITCTL_BINARY +
                 " git-credential get");
  CHECK(rc5 == 0);
  CHECK(cred.find("username=" + w.sid) != std::string::npos);
  CHECK(cred.find("ghs_") == std::string::npos);
  CHECK(ProxyWorld::Sh("cat '" + w.Work() + "/.git/config'").find("ghs_") == std::string::npos);
  CHECK(ProxyWorld::Sh(w.AgentEnv() + "env").find("ghs_") == std::string::npos);
  CHECK(w.fake->Violations().empty());
}

TEST_CASE("git proxy: a push to the default branch waits for an approval bound to that update") {
  ProxyWorld w;
  w.OpenSession(nullptr);
  std::filesystem::create_directories(w.dir + "/home");
  auto [rc, out] = w.AgentGit("clone -q '" + w.remote + "' '" + w.Work() + "'");
  REQUIRE_MESSAGE(rc == 0, out);
  w.Commit("release");
  const std::string main_before = w.Upstream("rev-parse main");

  auto [rc1, out1] = w.AgentGit("-C '" + w.Work() + "' push origin main");
  CHECK(rc1 != 0);
  CHECK_MESSAGE(out1.find("[remote rejected] main -> main (jitbroker: needs approval apr_") !=
                    std::string::npos,
                out1);
  CHECK(w.Upstream("rev-parse main") == main_before);

  // The grant waits; the agent itself cannot collect it, approved or not.
  std::string grant_id;
  std::string approval_id;
  std::string digest;
  for (const auto& g : w.Grants()) {
    if (g["tool"] == "git.push" && g["state"] == "pending") {
      grant_id = g["grant_id"];
      CHECK(g["operation"] == "push_protected");
      CHECK(g["tier"] == "merge_deploy");
    }
  }
  REQUIRE(!grant_id.empty());
  auto pending = w.broker->Get("/v1/approvals?state=pending", w.broker->maintainer2_key);
  REQUIRE(pending.status == 200);
  for (const auto& a : pending.json["approvals"]) {
    if (a["grant_id"] == grant_id) {
      approval_id = a["approval_id"];
      digest = a["request_digest"];
    }
  }
  REQUIRE(!approval_id.empty());
  auto decided = w.broker->Post("/v1/approvals/" + approval_id, w.broker->maintainer2_key,
                                {{"decision", "approve"}, {"request_digest", digest}});
  REQUIRE_MESSAGE(decided.status == 200, decided.body);
  auto mine = w.broker->Get("/v1/grants/" + grant_id, w.token);
  CHECK(mine.json["state"] == "approved");
  CHECK(!mine.json.contains("credential"));

  // The same update again: the approval's grant carries it.
  auto [rc2, out2] = w.AgentGit("-C '" + w.Work() + "' push origin main");
  CHECK_MESSAGE(rc2 == 0, out2);
  CHECK(w.Upstream("log --oneline -1 main").find("release") != std::string::npos);
  CHECK(w.broker->Get("/v1/grants/" + grant_id, w.token).json["state"] == "revoked");

  // Another update of main needs its own approval.
  w.Commit("release 2");
  auto [rc3, out3] = w.AgentGit("-C '" + w.Work() + "' push origin main");
  CHECK(rc3 != 0);
  CHECK_MESSAGE(out3.find("needs approval apr_") != std::string::npos, out3);
  CHECK_MESSAGE(out3.find(approval_id) == std::string::npos, out3);
}

TEST_CASE("git proxy: a forced update is found right after the push and revokes the session") {
  ProxyWorld w("[{rule: force_push, action: revoke_session}]");
  w.OpenSession({"fix/*"});
  std::filesystem::create_directories(w.dir + "/home");
  auto [rc, out] = w.AgentGit("clone -q '" + w.remote + "' '" + w.Work() + "'");
  REQUIRE_MESSAGE(rc == 0, out);
  ProxyWorld::Sh(ProxyWorld::Git() + " -C '" + w.Work() + "' checkout -q -b fix/a");
  w.Commit("one");
  auto [rc1, out1] = w.AgentGit("-C '" + w.Work() + "' push -q origin fix/a");
  REQUIRE_MESSAGE(rc1 == 0, out1);
  w.Commit("two");  // a fast-forward: nothing to report
  auto [rc2, out2] = w.AgentGit("-C '" + w.Work() + "' push -q origin fix/a");
  REQUIRE_MESSAGE(rc2 == 0, out2);
  CHECK(w.broker->Get("/v1/sessions/" + w.sid, w.token).json["state"] == "active");

  // Rewrite the branch and force it: it lands (the broker cannot tell from
  // the commands), is found by comparing upstream, and ends the session.
  ProxyWorld::Sh(ProxyWorld::Git() + " -C '" + w.Work() +
                 "' commit -q --amend --allow-empty -m rewritten");
  auto [rc3, out3] = w.AgentGit("-C '" + w.Work() + "' push -q --force origin fix/a");
  CHECK_MESSAGE(rc3 == 0, out3);
  auto s = w.broker->Get("/v1/sessions/" + w.sid, w.broker->maintainer_key);
  CHECK(s.json["state"] == "revoked");
  std::ifstream audit(w.broker->audit_path());
  std::string line;
  bool detected = false;
  while (std::getline(audit, line)) {
    auto j = nlohmann::json::parse(line, nullptr, false);
    if (j.is_object() && j.value("event", "") == "git.force_push_detected") {
      detected = true;
      CHECK(j["evidence"]["ref"] == "refs/heads/fix/a");
      CHECK(j["evidence"]["comparison"] == "diverged");
    }
  }
  CHECK(detected);
}

TEST_CASE("git proxy: requests without the session, or for hosts not configured, are refused") {
  ProxyWorld w;
  w.OpenSession(nullptr);
  auto anon = w.broker->Get("/git/" + w.git->host() +
                            "/acme/payment-service.git/info/refs?service=git-upload-pack");
  CHECK(anon.status == 401);
  auto unknown = w.broker->Get(
      "/git/evil.example/acme/payment-service.git/info/refs?service=git-upload-pack", w.token);
  CHECK(unknown.status == 404);
  auto dumb = w.broker->Get("/git/" + w.git->host() + "/acme/payment-service.git/HEAD", w.token);
  CHECK(dumb.status == 404);
  // A push body that is not git's is refused before anything is decided.
  auto bad = w.broker->Request(
      "POST", "/git/" + w.git->host() + "/acme/payment-service.git/git-receive-pack", w.token,
      "00ffnot a command", "application/x-git-receive-pack-request");
  CHECK(bad.status == 400);
  CHECK(bad.json.value("code", "") == "invalid_git_request");

  // Basic credentials must pair the session id with its own token.
  httplib::Client c("127.0.0.1", w.broker->port());
  const std::string refs =
      "/git/" + w.git->host() + "/acme/payment-service.git/info/refs?service=git-upload-pack";
  auto wrong_user =
      c.Get(refs, {{"Authorization", "Basic " + crypto::Base64Encode("ses_other:" + w.token)}});
  REQUIRE(wrong_user);
  CHECK(wrong_user->status == 401);
  CHECK(wrong_user->get_header_value("WWW-Authenticate").starts_with("Basic"));

  // A gzip body that inflates past the command limit is cut off (413), and
  // so is a push naming more refs than allowed (400), before any decision.
  const std::string push_path =
      "/git/" + w.git->host() + "/acme/payment-service.git/git-receive-pack";
  {
    httplib::Headers h = {{"Authorization", "Bearer " + w.token}, {"Content-Encoding", "gzip"}};
    auto gz = RunCommand("head -c 4194304 /dev/zero | tr '\\0' 0 | gzip -c | base64 -w0");
    REQUIRE(gz.first == 0);
    auto raw = crypto::Base64Decode(gz.second);
    REQUIRE(raw.has_value());
    auto r = c.Post(push_path, h, *raw, "application/x-git-receive-pack-request");
    REQUIRE(r);
    CHECK(r->status == 413);
  }
  std::string many;
  for (int i = 0; i < 101; ++i) {
    const std::string line = std::string(40, 'a') + " " + std::string(40, 'b') + " refs/heads/r" +
                             std::to_string(i) + "\n";
    char len[5];
    std::snprintf(len, sizeof(len), "%04x", static_cast<unsigned>(line.size() + 4));
    many += len + line;
  }
  many += "0000";
  auto too_many =
      w.broker->Request("POST", push_path, w.token, many, "application/x-git-receive-pack-request");
  CHECK(too_many.status == 400);
  CHECK(w.Grants().empty());
}

// A GitHub client of the agent's: the broker's /github/ URL as its API
// root, the session token as its token.
struct ApiClient {
  httplib::Client c;
  std::string base;
  std::string token;
  ApiClient(const ProxyWorld& w)
      : c("127.0.0.1", w.broker->port()),
        base("/github/" + w.fake->url().substr(7)),
        token(w.token) {
    c.set_read_timeout(30);
  }
  httplib::Headers Headers() const {
    return {{"Authorization", "Bearer " + token},
            {"Accept", "application/vnd.github+json"},
            {"X-GitHub-Api-Version", "2022-11-28"},
            {"User-Agent", "agent-octokit/1.0"}};
  }
  httplib::Result Call(const std::string& method, const std::string& path,
                       const std::string& body = "") {
    const std::string url = base + path;
    if (method == "GET") {
      return c.Get(url, Headers());
    }
    if (method == "PUT") {
      return c.Put(url, Headers(), body, "application/json");
    }
    return c.Post(url, Headers(), body, "application/json");
  }
};

TEST_CASE("GitHub API proxy: a comment goes through, a merge waits for an approval of that call") {
  ProxyWorld w;
  w.OpenSession(nullptr);
  for (int n : {1, 2, 3, 842, 843}) {
    w.fake->AddPullRequest("acme/payment-service", n, "PR " + std::to_string(n));
  }
  ApiClient api(w);
  const std::string repo = "/repos/acme/payment-service";

  auto comment = api.Call("POST", repo + "/issues/842/comments", R"({"body":"LGTM"})");
  REQUIRE(comment);
  CHECK_MESSAGE(comment->status == 201, comment->body);
  CHECK(w.fake->Comments("acme/payment-service", 842) == std::vector<std::string>{"LGTM"});

  // The merge of PR 842 waits; nothing reaches GitHub.
  auto merge = api.Call("PUT", repo + "/pulls/842/merge", "{}");
  REQUIRE(merge);
  CHECK(merge->status == 403);
  auto problem = nlohmann::json::parse(merge->body);
  CHECK(problem["code"] == "approval_required");
  const std::string approval_id = problem["approval"]["id"];
  const std::string digest = problem["approval"]["request_digest"];
  CHECK(w.fake->Merged("acme/payment-service").empty());
  auto decided = w.broker->Post("/v1/approvals/" + approval_id, w.broker->maintainer2_key,
                                {{"decision", "approve"}, {"request_digest", digest}});
  REQUIRE_MESSAGE(decided.status == 200, decided.body);

  // The approval covers that call: PR 843 needs its own, …
  auto other = api.Call("PUT", repo + "/pulls/843/merge", "{}");
  REQUIRE(other);
  CHECK(other->status == 403);
  CHECK(nlohmann::json::parse(other->body)["approval"]["id"] != approval_id);
  // … and so does the same call with another body.
  auto other_body = api.Call("PUT", repo + "/pulls/842/merge", R"({"merge_method":"squash"})");
  REQUIRE(other_body);
  CHECK(other_body->status == 403);
  CHECK(nlohmann::json::parse(other_body->body)["approval"]["id"] != approval_id);
  CHECK(w.fake->Merged("acme/payment-service").empty());

  // The approved call, repeated, is forwarded once.
  auto merged = api.Call("PUT", repo + "/pulls/842/merge", "{}");
  REQUIRE(merged);
  CHECK_MESSAGE(merged->status == 200, merged->body);
  CHECK(w.fake->Merged("acme/payment-service") == std::vector<int>{842});
  auto again = api.Call("PUT", repo + "/pulls/842/merge", "{}");
  REQUIRE(again);
  CHECK(again->status == 403);
  CHECK(nlohmann::json::parse(again->body)["code"] == "approval_required");

  // Every write was a grant of its own, its token revoked after the call.
  int writes = 0;
  for (const auto& g : w.Grants()) {
    if (g["tool"] == "github.create_comment" || g["tool"] == "github.merge_pull_request") {
      ++writes;
      CHECK(g["held_by"] == "proxy");
      CHECK(g["parameters"].contains("body_sha256"));
      CHECK(g["state"] != "active");
    }
  }
  CHECK(writes == 5);
  CHECK(w.fake->Violations().empty());
}

TEST_CASE("GitHub API proxy: reads page through the broker, upstream errors pass through") {
  ProxyWorld w;
  w.OpenSession(nullptr);
  for (int n = 1; n <= 5; ++n) {
    w.fake->AddPullRequest("acme/payment-service", n, "PR " + std::to_string(n));
  }
  ApiClient api(w);
  auto page1 = api.Call("GET", "/repos/acme/payment-service/pulls?per_page=2");
  REQUIRE(page1);
  REQUIRE(page1->status == 200);
  CHECK(nlohmann::json::parse(page1->body).size() == 2);
  const std::string link = page1->get_header_value("Link");
  const std::string next_prefix = "<http://127.0.0.1:" + std::to_string(w.broker->port()) +
                                  api.base + "/repos/acme/payment-service/pulls?";
  CHECK_MESSAGE(link.starts_with(next_prefix), link);
  CHECK(link.find(w.fake->url()) == std::string::npos);
  // Following "next" as a client does reaches page 2 through the broker.
  const std::string next_url = link.substr(1, link.find('>') - 1);
  const std::string origin = "http://127.0.0.1:" + std::to_string(w.broker->port());
  auto page2 = api.c.Get(next_url.substr(origin.size()), api.Headers());
  REQUIRE(page2);
  CHECK(page2->status == 200);
  CHECK(nlohmann::json::parse(page2->body).size() == 2);
  auto page3 =
      api.c.Get(api.base + "/repos/acme/payment-service/pulls?per_page=2&page=3", api.Headers());
  REQUIRE(page3);
  CHECK(page3->status == 200);
  CHECK(nlohmann::json::parse(page3->body).size() == 1);
  CHECK(page3->get_header_value("X-RateLimit-Limit") != "");

  // GitHub's own refusal reaches the client as GitHub sent it.
  auto bad = api.Call("GET", "/repos/acme/payment-service/pulls?per_page=x");
  REQUIRE(bad);
  CHECK(bad->status == 422);
  CHECK(nlohmann::json::parse(bad->body)["message"] == "Validation Failed");

  // Calls that cannot be narrowed to a repository, or without the session.
  auto user = api.Call("GET", "/user");
  REQUIRE(user);
  CHECK(user->status == 403);
  CHECK(nlohmann::json::parse(user->body)["code"] == "unsupported_api_path");
  api.token = "jbs_forged";
  auto anon = api.Call("GET", "/repos/acme/payment-service/pulls");
  REQUIRE(anon);
  CHECK(anon->status == 401);
  // Reads share one read grant per repository and permission.
  int reads = 0;
  for (const auto& g : w.Grants()) {
    reads += g["tool"] == "github.read" ? 1 : 0;
  }
  CHECK(reads == 1);
}

}  // namespace
}  // namespace jitbroker::testing
