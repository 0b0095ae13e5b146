// Issue #16, faults survived: the disk fills under the daemon. A file-size
// limit set on the running broker (prlimit(1), util-linux) makes its writes
// fail as a full disk does. Grants must fail closed (503 with a stable
// code, no credential without its audit record), reads keep working, and
// service resumes by itself once the writes succeed again; the audit chain
// verifies at the end and records every credential a client received.
#include <chrono>
#include <filesystem>
#include <set>
#include <string>
#include <thread>

#include <doctest/doctest.h>
#include <nlohmann/json.hpp>

#include "tests/support/broker_process.h"

namespace jitbroker::testing {
namespace {

const nlohmann::json kScope = {
    {"resources", {"jwt://mcp.internal"}}, {"max_tier", "read"}, {"issuers", {"internal"}}};
const nlohmann::json kRead = {{"tool", "mcp.search"},
                              {"operation", "read"},
                              {"resource", "jwt://mcp.internal"},
                              {"issuer", "internal"}};

uintmax_t LargestFile(const std::string& dir) {
  uintmax_t largest = 0;
  for (const auto& e : std::filesystem::directory_iterator(dir)) {
    if (e.is_regular_file()) {
      largest = std::max(largest, e.file_size());
    }
  }
  return largest;
}

TEST_CASE("Faults: a full disk fails grants closed, reads go on, and service resumes") {
  auto b = BrokerProcess::Start();
  auto [sid, token] = b->OpenSession(b->engineer_key, kScope);
  std::set<std::string> issued;  // grant ids of every credential a client got
  auto grant = [&]() {
    HttpResult r = b->Post("/v1/sessions/" + sid + "/grants", token, kRead);
    if (r.status == 201) {
      issued.insert(r.json["grant_id"].get<std::string>());
    }
    return r;
  };
  REQUIRE(grant().status == 201);

  // The disk "fills": no file of the daemon may grow past its size now.
  const std::string data = b->dir() + "/data";
  const std::string limit = std::to_string(LargestFile(data) + 4096);
  auto [rc, out] =
      RunCommand("prlimit --pid " + std::to_string(b->pid()) + " --fsize=" + limit + ":unlimited");
  REQUIRE_MESSAGE(rc == 0, out);
  HttpResult refused;
  for (int i = 0; i < 200 && refused.status != 503; ++i) {
    HttpResult r = grant();
    if (r.status != 201) {
      refused = r;
    }
  }
  INFO(refused.body);
  REQUIRE(refused.status == 503);
  CHECK(refused.content_type.starts_with("application/problem+json"));
  CHECK(refused.json["code"] == "store_unavailable");
  CHECK(refused.json.value("credential", nlohmann::json()).is_null());
  // Every further grant is refused the same way; reads keep working.
  for (int i = 0; i < 5; ++i) {
    HttpResult r = grant();
    CHECK(r.status == 503);
  }
  CHECK(b->Get("/v1/sessions/" + sid, b->engineer_key).status == 200);
  CHECK(b->Get("/healthz").status == 200);

  // Space returns: grants succeed again without a restart.
  auto [rc2, out2] =
      RunCommand("prlimit --pid " + std::to_string(b->pid()) + " --fsize=unlimited:unlimited");
  REQUIRE_MESSAGE(rc2 == 0, out2);
  int status = 0;
  for (int i = 0; i < 50 && status != 201; ++i) {
    status = grant().status;
    if (status != 201) {
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
  }
  CHECK(status == 201);
  b->Stop();

  // The chain verifies, and every credential handed out has its record.
  auto [vrc, verified] =
      RunCommand(std::string(JITCTL_BINARY) + " audit verify --file " + b->audit_path() + " 2>&1");
  CHECK_MESSAGE(vrc == 0, verified);
  std::set<std::string> recorded;
  auto [grc, lines] = RunCommand("grep '\"event\":\"credential.minted\"' " + b->audit_path());
  REQUIRE(grc == 0);
  for (size_t start = 0; start < lines.size();) {
    size_t end = lines.find('\n', start);
    if (end == std::string::npos) {
      end = lines.size();
    }
    auto rec = nlohmann::json::parse(lines.substr(start, end - start), nullptr, false);
    if (rec.is_object() && rec.contains("jit_grant")) {
      recorded.insert(rec["jit_grant"].value("grant_id", ""));
    }
    start = end + 1;
  }
  for (const std::string& id : issued) {
    CHECK_MESSAGE(recorded.contains(id), "credential of " << id << " has no audit record");
  }
  CHECK(issued.size() >= 2);
}

}  // namespace
}  // namespace jitbroker::testing
