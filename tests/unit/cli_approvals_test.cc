// `jitctl approvals list` with the filters and pages of GET /v1/approvals
// (issue #10), against a canned broker.
#include <doctest/doctest.h>

#include <map>
#include <sstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "cli/args.h"
#include "cli/commands.h"

namespace jitbroker::testing {
namespace {

using nlohmann::json;

json Approval(const std::string& id) {
  return {{"approval_id", id},
          {"tier", "secret"},
          {"human_principal", "bob"},
          {"agent", {{"id", "agent_1"}}},
          {"request", {{"tool", "secrets.read"}, {"resource", "fake://svc/db"}}},
          {"expires_at", "2026-01-01T00:00:00Z"}};
}

// Answers GET /v1/approvals from `pages`, keyed by the cursor asked for.
class PagedBroker final : public net::HttpClient {
 public:
  Result<net::HttpResponse> Send(const net::HttpRequest& r) override {
    urls.push_back(r.url);
    std::string cursor;
    if (auto at = r.url.find("cursor="); at != std::string::npos) {
      cursor = r.url.substr(at + 7, r.url.find('&', at) - (at + 7));
    }
    net::HttpResponse resp;
    resp.status = 200;
    resp.body = pages.at(cursor).dump();
    return resp;
  }
  std::map<std::string, json> pages = {
      {"", {{"approvals", {Approval("apr_1"), Approval("apr_2")}}, {"next_cursor", "c2"}}},
      {"c2", {{"approvals", {Approval("apr_3")}}, {"next_cursor", nullptr}}},
  };
  std::vector<std::string> urls;
};

struct Run {
  int rc = -1;
  std::string out, err;
  std::vector<std::string> urls;
};

Run Jitctl(const std::vector<std::string>& argv) {
  auto inv = cli::ParseCommandLine(argv);
  REQUIRE(inv.has_value());
  PagedBroker http;
  std::ostringstream out, err;
  cli::Context ctx;
  ctx.base_url = "https://broker.example";
  ctx.json = inv->args.Switch("json");
  ctx.getenv = [](const char* name) -> std::optional<std::string> {
    if (std::string(name) == "JITBROKER_API_KEY") {
      return std::string("jbk_test_key");
    }
    return std::nullopt;
  };
  ctx.http = &http;
  ctx.out = &out;
  ctx.err = &err;
  Run run;
  run.rc = cli::RunOnlineCommand(*inv, ctx);
  run.out = out.str();
  run.err = err.str();
  run.urls = http.urls;
  return run;
}

TEST_CASE("jitctl approvals list: passes the filters and shows the first page") {
  Run r = Jitctl({"approvals", "list", "--session", "ses_1", "--principal", "bob", "--tier",
                  "secret", "--order", "newest", "--limit", "2"});
  INFO(r.out << r.err);
  CHECK(r.rc == 0);
  REQUIRE(r.urls.size() == 1);
  CHECK(r.urls[0] ==
        "https://broker.example/v1/approvals?state=pending&session_id=ses_1&principal=bob"
        "&tier=secret&order=newest&limit=2");
  CHECK(r.out.find("apr_1") != std::string::npos);
  CHECK(r.out.find("apr_3") == std::string::npos);
  CHECK(r.err.find("--cursor c2") != std::string::npos);
}

TEST_CASE("jitctl approvals list: --all follows next_cursor") {
  Run r = Jitctl({"approvals", "list", "--all"});
  INFO(r.out << r.err);
  CHECK(r.rc == 0);
  REQUIRE(r.urls.size() == 2);
  CHECK(r.urls[1] == "https://broker.example/v1/approvals?state=pending&cursor=c2");
  for (const char* id : {"apr_1", "apr_2", "apr_3"}) {
    CHECK(r.out.find(id) != std::string::npos);
  }
  CHECK(r.err.empty());

  Run j = Jitctl({"--json", "approvals", "list", "--all"});
  CHECK(j.rc == 0);
  json body = json::parse(j.out);
  CHECK(body["approvals"].size() == 3);
  CHECK(body["next_cursor"].is_null());
}

TEST_CASE("jitctl approvals list: bad flags are usage errors") {
  for (const auto& argv :
       std::vector<std::vector<std::string>>{{"approvals", "list", "--limit", "0"},
                                             {"approvals", "list", "--limit", "201"},
                                             {"approvals", "list", "--order", "random"},
                                             {"approvals", "list", "--all", "--cursor", "c2"}}) {
    Run r = Jitctl(argv);
    CHECK(r.rc != 0);
    CHECK(r.urls.empty());
  }
}

}  // namespace
}  // namespace jitbroker::testing
