// How the GitHub REST proxy names a call before deciding it
// (broker/http/github_api_proxy.h, docs/proxy.md "The GitHub REST API").
#include <doctest/doctest.h>

#include "broker/http/github_api_proxy.h"

namespace jitbroker::http {
namespace {

using Call = GitHubApiProxy::Call;

Call Of(std::string_view method, std::string_view sub, const nlohmann::json& body = nullptr,
        const config::ProxyConfig& cfg = {}) {
  return GitHubApiProxy::Classify(cfg, method, sub, body);
}

TEST_CASE("GitHub API classification: the built-in table") {
  Call merge = Of("PUT", "pulls/842/merge");
  CHECK(merge.tool == "github.merge_pull_request");
  CHECK(merge.operation == "merge");
  CHECK(merge.sub_resource == "pull/842");
  CHECK(merge.parameters["number"] == 842);
  CHECK(merge.permissions == nlohmann::json{{"contents", "write"}, {"pull_requests", "write"}});

  Call comment = Of("POST", "issues/7/comments");
  CHECK(comment.tool == "github.create_comment");
  CHECK(comment.sub_resource == "issues/7");

  CHECK(Of("POST", "actions/workflows/ci.yml/dispatches").operation == "deploy");
  CHECK(Of("DELETE", "").operation == "delete_repository");
  CHECK(Of("DELETE", "git/refs/heads/fix/x").operation == "delete_ref");
  CHECK(Of("POST", "pulls/x/merge").tool == "github.api");  // not a number: not the merge route

  Call read = Of("GET", "pulls");
  CHECK(read.read);
  CHECK(read.permissions == nlohmann::json{{"pull_requests", "read"}});
  CHECK(Of("GET", "").permissions == nlohmann::json{{"metadata", "read"}});
  CHECK(Of("GET", "git/trees/abc").permissions == nlohmann::json{{"contents", "read"}});

  Call unknown = Of("POST", "hooks");
  CHECK(unknown.tool == "github.api");
  CHECK(unknown.operation == "post");
  CHECK(unknown.permissions.empty());
  CHECK(!unknown.read);
}

TEST_CASE("GitHub API classification: branches written through the API") {
  // A file written without a branch lands on the default branch.
  CHECK(Of("PUT", "contents/src/a.c", {{"message", "m"}}).operation == "push_protected");
  Call fix = Of("PUT", "contents/src/a.c", {{"branch", "fix/x"}});
  CHECK(fix.operation == "push");
  CHECK(fix.parameters["branch"] == "fix/x");
  CHECK(Of("PUT", "contents/a", {{"branch", "main"}}).operation == "push_protected");
  CHECK(Of("POST", "git/refs", {{"ref", "refs/heads/fix/y"}, {"sha", "a"}}).parameters["branch"] ==
        "fix/y");
  CHECK(Of("PATCH", "git/refs/heads/main", {{"sha", "a"}}).operation == "push_protected");
  CHECK(Of("PATCH", "git/refs/heads/dev", {{"sha", "a"}, {"force", true}}).operation ==
        "force_push");
}

TEST_CASE("GitHub API classification: config routes come first") {
  config::ProxyConfig cfg;
  cfg.api_routes.push_back(
      {"*", "hooks/**", "github.manage_hooks", "administration", {{"administration", "write"}}});
  Call c = Of("POST", "hooks/1/pings", nullptr, cfg);
  CHECK(c.tool == "github.manage_hooks");
  CHECK(c.permissions == nlohmann::json{{"administration", "write"}});
  CHECK(Of("GET", "hooks", nullptr, cfg).tool == "github.manage_hooks");
}

}  // namespace
}  // namespace jitbroker::http
