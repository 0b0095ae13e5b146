// The audit trail: one record per decision and credential event, durable in
// the store and the JSONL file, hash-chained, verifiable by jitctl, and
// consistent after kill -9.
#include <signal.h>

#include <algorithm>
#include <atomic>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <thread>

#include <doctest/doctest.h>

#include "tests/support/broker_process.h"

namespace jitbroker::testing::audit_test {
namespace {

std::vector<nlohmann::json> ReadJsonl(const std::string& path) {
  std::ifstream in(path);
  std::vector<nlohmann::json> out;
  std::string line;
  while (std::getline(in, line)) {
    if (!line.empty()) out.push_back(nlohmann::json::parse(line));
  }
  return out;
}

std::string Slurp(const std::string& path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

const nlohmann::json kScope = {{"resources", {"jwt://mcp.internal"}}, {"max_tier", "pr"}};
const nlohmann::json kRead = {{"tool", "mcp.search"},
                              {"operation", "read"},
                              {"resource", "jwt://mcp.internal"},
                              {"issuer", "internal"},
                              {"parameters", {{"query", "x"}, {"api_token", "hunter2"}}}};

TEST_CASE("Audit: every decision and credential event is one chained record") {
  auto b = BrokerProcess::Start();
  auto [sid, token] = b->OpenSession(b->engineer_key, kScope);
  auto g = b->Post("/v1/sessions/" + sid + "/grants", token, kRead);
  REQUIRE(g.status == 201);
  auto denied = b->Post("/v1/sessions/" + sid + "/grants", token,
                        {{"tool", "x"},
                         {"operation", "read"},
                         {"resource", "jwt://api.internal"},
                         {"issuer", "internal"}});
  REQUIRE(denied.status == 403);
  REQUIRE(b->Post("/v1/sessions/" + sid + "/complete", token, nlohmann::json::object()).status ==
          200);

  auto records = ReadJsonl(b->audit_path());
  std::vector<std::string> events;
  for (const auto& r : records) events.push_back(r["event"]);
  CHECK(events == std::vector<std::string>{"session.opened", "grant.decided", "credential.minted",
                                           "grant.decided", "credential.revoked",
                                           "session.completed"});
  const auto& minted = records[2];
  CHECK(minted["human_principal"] == "eng_1");
  CHECK(minted["agent"]["id"] == "agent_test");
  CHECK(minted["agent"]["session_id"] == sid);
  CHECK(minted["agent"]["task_id"] == "task_test");
  CHECK(minted["request"]["tool"] == "mcp.search");
  CHECK(minted["request"]["tier"] == "read");
  CHECK(minted["request"]["parameters"]["api_token"] == "[redacted]");
  CHECK(minted["request"]["parameters"]["query"] == "x");
  CHECK(minted["policy_decision"]["result"] == "allow");
  CHECK(minted["policy_decision"]["policy_version"] == "test.1");
  CHECK(minted["jit_grant"]["grant_id"] == g.json["grant_id"]);
  CHECK(minted["jit_grant"]["credential_sha256"].get<std::string>().size() == 64);
  CHECK(minted["jit_grant"]["issuer"] == "internal");
  CHECK(records[3]["policy_decision"]["result"] == "deny");
  for (size_t i = 1; i < records.size(); ++i) {
    CHECK(records[i]["prev_hash"] == records[i - 1]["hash"]);
  }
  // No secret in the file: not the JWT, not the session token, not the redacted value.
  const std::string text = Slurp(b->audit_path());
  CHECK(text.find(g.json["credential"]["token"].get<std::string>()) == std::string::npos);
  CHECK(text.find(token) == std::string::npos);
  CHECK(text.find("hunter2") == std::string::npos);
  // The store holds the same chain.
  auto api = b->Get("/v1/audit?session_id=" + sid, b->admin_key);
  REQUIRE(api.status == 200);
  CHECK(api.json["records"].size() == records.size());
  CHECK(api.json["records"].back()["hash"] == records.back()["hash"]);
  auto v = b->Get("/v1/audit/verify", b->admin_key);
  CHECK(v.json["ok"] == true);
  CHECK(v.json["records"] == records.size());
}

TEST_CASE(
    "Audit: credentials in values and free text reach neither the trail nor approvers (finding "
    "9)") {
  auto b = BrokerProcess::Start();
  // Made up at run time, in the shapes of real credentials.
  const std::string gh = "ghp_" + std::string("Zq8") + "x7Lm2Pv9Rt4Wc6Yb1Nd3Hf5Jk0Gs2Ue8Ai";
  const std::string pw = "hunter2-" + std::string("s3cr3t");
  nlohmann::json scope = {{"resources", {"jwt://api.internal"}}, {"max_tier", "merge_deploy"}};
  auto opened = b->Post(
      "/v1/sessions", b->maintainer_key,
      {{"agent", {{"id", "agent_test"}}},
       {"task", {{"id", "task_test"}, {"description", "deploy with " + gh}, {"scope", scope}}}});
  REQUIRE(opened.status == 201);
  const std::string sid = opened.json["session_id"];
  const std::string token = opened.json["session_token"];
  CHECK(opened.json["task"]["description"] == "deploy with [redacted:github_token]");

  auto r =
      b->Post("/v1/sessions/" + sid + "/grants", token,
              {{"tool", "github.merge_pull_request"},
               {"operation", "merge"},
               {"resource", "jwt://api.internal"},
               {"issuer", "internal"},
               {"parameters", {{"pull", 842}, {"pw", pw}, {"note", gh}, {"author", "octocat"}}},
               {"justification", "release; token " + gh + ", password: " + pw}});
  INFO(r.body);
  REQUIRE(r.status == 202);
  auto hb = b->Post("/v1/sessions/" + sid + "/heartbeat", token, {{"progress", "using " + gh}});
  REQUIRE(hb.status == 200);
  CHECK(hb.json["last_progress"] == "using [redacted:github_token]");

  auto approvals = b->Get("/v1/approvals?state=pending", b->admin_key);
  INFO(approvals.body);
  REQUIRE(approvals.status == 200);
  REQUIRE(approvals.json["approvals"].size() == 1);
  const nlohmann::json& a = approvals.json["approvals"][0];
  CHECK(a["request"]["parameters"]["pw"] == "[redacted]");
  CHECK(a["request"]["parameters"]["note"] == "[redacted:github_token]");
  CHECK(a["request"]["parameters"]["author"] == "octocat");
  CHECK(a["request"]["parameters"]["pull"] == 842);
  CHECK(a["request"]["justification"] ==
        "release; token [redacted:github_token], password: [redacted:secret_assignment]");
  CHECK(a["task"]["description"] == "deploy with [redacted:github_token]");

  auto session = b->Get("/v1/sessions/" + sid, b->maintainer_key);
  REQUIRE(session.status == 200);
  b->Stop();
  for (const std::string& text : {Slurp(b->audit_path()), approvals.body, session.body}) {
    CHECK(text.find(gh.substr(4)) == std::string::npos);
    CHECK(text.find(pw) == std::string::npos);
  }
  const auto records = ReadJsonl(b->audit_path());
  bool decided = false;
  for (const auto& rec : records) {
    if (rec["event"] == "grant.decided") {
      decided = true;
      CHECK(rec["request"]["parameters"]["note"] == "[redacted:github_token]");
      CHECK(rec["request"]["parameters"]["author"] == "octocat");
    }
  }
  CHECK(decided);
}

TEST_CASE("Audit: jitctl audit verify names the first altered record") {
  auto b = BrokerProcess::Start();
  auto [sid, token] = b->OpenSession(b->engineer_key, kScope);
  for (int i = 0; i < 3; ++i) {
    REQUIRE(b->Post("/v1/sessions/" + sid + "/grants", token, kRead).status == 201);
  }
  b->Stop();
  auto [rc, out] =
      RunCommand(std::string(JITCTL_BINARY) + " audit verify --file " + b->audit_path());
  INFO(out);
  CHECK(rc == 0);
  CHECK(out.find("ok") != std::string::npos);

  auto lines = ReadJsonl(b->audit_path());
  REQUIRE(lines.size() == 8);  // 7 events and the shutdown checkpoint
  CHECK(lines.back()["event"] == "audit.checkpoint");
  lines[3]["request"]["resource"] = "jwt://somewhere.else";
  {
    std::ofstream f(b->audit_path(), std::ios::trunc);
    for (const auto& l : lines) f << l.dump() << "\n";
  }
  auto [rc2, out2] =
      RunCommand(std::string(JITCTL_BINARY) + " audit verify --file " + b->audit_path());
  INFO(out2);
  CHECK(rc2 == 1);
  CHECK(out2.find("seq 4") != std::string::npos);
}

TEST_CASE(
    "Audit: a cut audit file fails jitctl audit verify with a pinned key or head (finding 8)") {
  auto b = BrokerProcess::Start();
  auto [sid, token] = b->OpenSession(b->engineer_key, kScope);
  for (int i = 0; i < 3; ++i) {
    REQUIRE(b->Post("/v1/sessions/" + sid + "/grants", token, kRead).status == 201);
  }
  auto keys = b->Get("/v1/audit/verify", b->admin_key);
  REQUIRE(keys.status == 200);
  const int64_t live_seq = keys.json["head_seq"].get<int64_t>();
  b->Stop();

  const std::string jitctl = std::string(JITCTL_BINARY) + " audit verify --file " + b->audit_path();
  const std::string jwks = b->dir() + "/data/keys/audit.jwks.json";
  const std::string pem = b->dir() + "/audit-public.pem";
  {
    auto [rc, out] =
        RunCommand("openssl pkey -in " + b->dir() + "/data/keys/audit.pem -pubout -out " + pem);
    INFO(out);
    REQUIRE(rc == 0);
  }
  auto lines = ReadJsonl(b->audit_path());
  REQUIRE(static_cast<int64_t>(lines.size()) == live_seq + 1);  // + the shutdown checkpoint
  const nlohmann::json last = lines.back();
  REQUIRE(last["event"] == "audit.checkpoint");
  CHECK(last["checkpoint"]["reason"] == "shutdown");
  const std::string head = last["hash"];
  const std::string seq = std::to_string(last["seq"].get<int64_t>());

  const std::vector<std::string> strict = {
      " --jwks " + jwks + " --require-shutdown-checkpoint --require-checkpoint-within 1000",
      " --public-key " + pem + " --require-shutdown-checkpoint",
      " --expect-head " + head + " --expect-seq " + seq,
  };
  for (const std::string& opts : strict) {
    CAPTURE(opts);
    auto [rc, out] = RunCommand(jitctl + opts);
    INFO(out);
    CHECK(rc == 0);
    CHECK(out.find("ok: " + seq + " records") != std::string::npos);
  }
  {
    auto [rc, out] = RunCommand(jitctl + " --jwks " + jwks + " --json");
    INFO(out);
    REQUIRE(rc == 0);
    auto j = nlohmann::json::parse(out);
    CHECK(j["checkpoints"] == 1);
    CHECK(j["last_checkpoint_reason"] == "shutdown");
    CHECK(j["tail_records"] == 0);
    CHECK(j["head"] == head);
  }

  // Cut the last two records: the chain that is left still verifies...
  {
    std::ofstream f(b->audit_path(), std::ios::trunc);
    for (size_t i = 0; i + 2 < lines.size(); ++i) f << lines[i].dump() << "\n";
  }
  {
    auto [rc, out] = RunCommand(jitctl);
    INFO(out);
    CHECK(rc == 0);
  }
  // ...but not against the key's checkpoints or the pinned head.
  for (const std::string& opts : strict) {
    CAPTURE(opts);
    auto [rc, out] = RunCommand(jitctl + opts);
    INFO(out);
    CHECK(rc == 1);
    CHECK(out.find("INCOMPLETE") != std::string::npos);
  }
  // Options that need a key or a file are usage errors without them.
  {
    auto [rc, out] = RunCommand(jitctl + " --require-shutdown-checkpoint");
    INFO(out);
    CHECK(rc == 2);
    auto [rc2, out2] = RunCommand(std::string(JITCTL_BINARY) + " audit verify --expect-seq 3");
    INFO(out2);
    CHECK(rc2 == 2);
  }
}

TEST_CASE("Audit: kill -9 under load leaves a consistent store and a chain that verifies") {
  auto b = BrokerProcess::Start();
  auto [sid, token] = b->OpenSession(b->engineer_key, kScope);
  const std::string url_path = "/v1/sessions/" + sid + "/grants";
  for (int round = 0; round < 3; ++round) {
    CAPTURE(round);
    std::atomic<bool> stop{false};
    std::atomic<int> ok{0};
    std::vector<std::thread> load;
    for (int t = 0; t < 4; ++t) {
      load.emplace_back([&, port = b->port()] {
        httplib::Client c("127.0.0.1", port);
        c.set_connection_timeout(1);
        c.set_read_timeout(2);
        httplib::Headers h{{"Authorization", "Bearer " + token}};
        while (!stop) {
          auto r = c.Post(url_path, h, kRead.dump(), "application/json");
          if (r && r->status == 201) ++ok;
          if (!r) std::this_thread::sleep_for(std::chrono::milliseconds(5));
        }
      });
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(300));
    b->Kill9();
    stop = true;
    for (auto& t : load) t.join();
    CHECK(ok > 0);
    // kill -9 keeps what the broker wrote; a lost host would also lose the
    // file's unsynced tail (the file is synced in the background; the store
    // is the durable record). Cut it mid-line: the restart restores it.
    const auto size = std::filesystem::file_size(b->audit_path());
    std::filesystem::resize_file(b->audit_path(), size - std::min<uintmax_t>(size / 4, 3000));
    b->Restart();
    auto v = b->Get("/v1/audit/verify", b->admin_key);
    INFO(v.body);
    CHECK(v.json["ok"] == true);
    auto [rc, out] =
        RunCommand(std::string(JITCTL_BINARY) + " audit verify --file " + b->audit_path());
    INFO(out);
    CHECK(rc == 0);
    // The file holds the store's whole chain again, up to the head it reports.
    const auto lines = ReadJsonl(b->audit_path());
    REQUIRE_FALSE(lines.empty());
    CHECK(lines.back()["hash"] == v.json["head"]);
    CHECK(lines.back()["seq"] == v.json["head_seq"]);
    // Every credential the clients received is recorded (store is the truth).
    auto s = b->Get("/v1/sessions/" + sid, token);
    REQUIRE(s.status == 200);
    CHECK(static_cast<int>(s.json["grants"].size()) >= ok.load());
  }
}

TEST_CASE("Policy: SIGHUP reloads atomically; an invalid file keeps the old policy") {
  auto b = BrokerProcess::Start();
  auto [sid, token] = b->OpenSession(b->engineer_key, kScope);
  auto g = b->Post("/v1/sessions/" + sid + "/grants", token, kRead);
  CHECK(g.json["decision"]["policy_version"] == "test.1");

  BrokerOptions o;
  o.policy_version = "test.2";
  b->WriteConfig(o);
  b->Signal(SIGHUP);
  std::string version;
  for (int i = 0; i < 100 && version != "test.2"; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
    version =
        b->Post("/v1/sessions/" + sid + "/grants", token, kRead).json["decision"]["policy_version"];
  }
  CHECK(version == "test.2");

  {
    std::ofstream(b->config_path(), std::ios::app) << "bogus_key: 1\n";
  }
  b->Signal(SIGHUP);
  auto r = b->Post("/v1/admin/reload", b->admin_key, nlohmann::json::object());
  CHECK(r.status == 400);
  CHECK(r.json["detail"].get<std::string>().find("bogus_key") != std::string::npos);
  CHECK(
      b->Post("/v1/sessions/" + sid + "/grants", token, kRead).json["decision"]["policy_version"] ==
      "test.2");
  CHECK(b->Post("/v1/admin/reload", b->engineer_key, nlohmann::json::object()).status == 403);
}

TEST_CASE("Config: a bad config stops the daemon with file, line and key") {
  char tmpl[] = "/tmp/jitbroker-cfg-XXXXXX";
  REQUIRE(::mkdtemp(tmpl) != nullptr);
  const std::string path = std::string(tmpl) + "/bad.yaml";
  std::ofstream(path)
      << "data_dir: data\npolicy:\n  version: \"1\"\n  tiers:\n    read: {control: sometimes}\n";
  auto [rc, out] = RunCommand(std::string(JITBROKER_BINARY) + " --config " + path);
  INFO(out);
  CHECK(rc == 1);
  CHECK(out.find("bad.yaml:5") != std::string::npos);
  CHECK(out.find("control") != std::string::npos);

  // What the daemon would refuse at start, the checkers refuse too.
  auto b = BrokerProcess::Start();
  {
    std::ofstream(b->config_path(), std::ios::app)
        << "anomaly:\n  - {rule: denied_burst, count: 3}\n";
  }
  for (const std::string& cmd :
       {std::string(JITCTL_BINARY) + " config check " + b->config_path(),
        std::string(JITBROKER_BINARY) + " --check-config --config " + b->config_path()}) {
    CAPTURE(cmd);
    auto [rc2, out2] = RunCommand(cmd);
    INFO(out2);
    CHECK(rc2 == 1);
    CHECK(out2.find("anomaly[0]") != std::string::npos);
    CHECK(out2.find("window_seconds") != std::string::npos);
  }
  std::filesystem::remove_all(tmpl);
}

}  // namespace
}  // namespace jitbroker::testing::audit_test
