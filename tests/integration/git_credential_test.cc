// The git credential helper end to end: the real `git` binary pushes to a
// loopback smart-HTTP server (tests/support/git_http_server.h) whose
// authentication is checked the way GitHub checks it.
#include <cstdlib>
#include <filesystem>
#include <string>

#include <doctest/doctest.h>

#include "tests/support/broker_process.h"
#include "tests/support/git_http_server.h"

namespace jitbroker::testing {
namespace {

std::string NewScratchDir() {
  char tmpl[] = "/tmp/jitbroker-git.XXXXXX";
  const char* dir = ::mkdtemp(tmpl);
  REQUIRE(dir != nullptr);
  return dir;
}

// A git command line with no user or system config and no prompts.
std::string Git(const std::string& home, const std::string& args) {
  return "env -u GIT_DIR HOME='" + home + "' GIT_CONFIG_NOSYSTEM=1 GIT_TERMINAL_PROMPT=0 " +
         "GIT_ASKPASS=/bin/false git -c user.name=agent -c user.email=agent@example.invalid "
         "-c init.defaultBranch=main " +
         args + " 2>&1";
}

// Makes a work tree with one commit whose remote is `url`.
void MakeWorkTree(const std::string& home, const std::string& dir, const std::string& url) {
  auto [rc, out] = RunCommand(Git(home, "init -q '" + dir + "'"));
  REQUIRE_MESSAGE(rc == 0, out);
  std::string cmd = "echo hello > '" + dir + "/README' && " +
                    Git(home, "-C '" + dir + "' add README") + " && " +
                    Git(home, "-C '" + dir + "' commit -q -m first") + " && " +
                    Git(home, "-C '" + dir + "' remote add origin '" + url + "'");
  auto [rc2, out2] = RunCommand(cmd);
  REQUIRE_MESSAGE(rc2 == 0, out2);
}

TEST_CASE("git: the test git server pushes only with credentials it accepts") {
  const std::string dir = NewScratchDir();
  auto server = GitHttpServer::Start(dir + "/srv", [](const GitAuthRequest& a) {
    return a.username == "x-access-token" && a.password == "right" && a.owner_repo == "acme/app";
  });
  server->CreateRepo("acme/app");
  MakeWorkTree(dir, dir + "/work", server->url("acme/app"));
  auto helper = [](const std::string& password) {
    return "-c credential.helper= -c \"credential.helper=!f() { echo username=x-access-token; "
           "echo password=" +
           password + "; }; f\"";
  };
  auto [rc, out] =
      RunCommand(Git(dir, helper("wrong") + " -C '" + dir + "/work' push -q origin main"));
  CHECK(rc != 0);
  CHECK(server->rejected() > 0);
  auto [rc2, out2] =
      RunCommand(Git(dir, helper("right") + " -C '" + dir + "/work' push -q origin main"));
  CHECK_MESSAGE(rc2 == 0, out2);
  auto [rc3, out3] = RunCommand(Git(dir, "--git-dir '" + dir + "/srv/acme/app.git' log --oneline"));
  CHECK_MESSAGE(out3.find("first") != std::string::npos, out3);
  server->Stop();
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace jitbroker::testing
