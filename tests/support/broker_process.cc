#include "tests/support/broker_process.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <array>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <random>
#include <thread>

#include <doctest/doctest.h>

#ifndef JITBROKER_BINARY
#define JITBROKER_BINARY "jitbroker"
#endif

namespace jitbroker::testing {

namespace {

std::string RandomKey(const char* prefix) {
  static thread_local std::mt19937_64 rng(std::random_device{}());
  std::string out = prefix;
  const char* alphabet = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
  for (int i = 0; i < 40; ++i) {
    out += alphabet[rng() % 62];
  }
  return out;
}

void WriteFile(const std::string& path, const std::string& content) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << content;
}

}  // namespace

std::pair<int, std::string> RunCommand(const std::string& command) {
  std::string out;
  FILE* pipe = ::popen((command + " 2>&1").c_str(), "r");
  if (pipe == nullptr) {
    return {-1, ""};
  }
  std::array<char, 4096> buf{};
  size_t n = 0;
  while ((n = fread(buf.data(), 1, buf.size(), pipe)) > 0) {
    out.append(buf.data(), n);
  }
  const int status = ::pclose(pipe);
  return {WIFEXITED(status) ? WEXITSTATUS(status) : -1, out};
}

BrokerProcess::~BrokerProcess() {
  Stop();
  if (!dir_.empty()) {
    std::error_code ec;
    std::filesystem::remove_all(dir_, ec);
  }
}

void BrokerProcess::WriteConfig(const BrokerOptions& o) {
  std::string tools = R"(
    - {match: {tool: "github.merge_pull_request"}, tier: merge_deploy}
    - {match: {tool: "shell.exec", parameters: {command: "re:^rm -rf.*"}}, tier: destructive}
    - {match: {tool: "secrets.*"}, tier: secret}
)" + o.extra_tools;
  std::string yaml =
      "data_dir: data\n"
      "server: {listen: \"127.0.0.1:" +
      std::to_string(o.port) + "\", threads: " + std::to_string(o.threads) +
      ", max_body_bytes: " + std::to_string(o.max_body_bytes) + o.server_extra +
      "}\n"
      "log: {level: warn, access_log: access.log}\n"
      "policy:\n"
      "  version: \"" +
      o.policy_version + "\"\n" + (o.tiers.empty() ? std::string() : "  tiers: " + o.tiers + "\n") +
      "  tools:" + tools +
      "  principals:\n"
      "    - {id: eng_1, email: eng@example.com, roles: [engineer], api_key_file: keys/eng.key}\n"
      "    - {id: eng_2, roles: [engineer], api_key_file: keys/eng2.key}\n"
      "    - {id: maint_1, roles: [maintainer, approver], api_key_file: keys/maint.key}\n"
      "    - {id: maint_2, email: maint2@example.com, roles: [maintainer, approver], "
      "api_key_file: keys/maint2.key}\n"
      "    - {id: admin_1, roles: [admin, resource_server], api_key_file: keys/admin.key}\n"
      "  roles:\n"
      "    engineer: {resources: [\"github://acme/*\", \"jwt://mcp.internal\", "
      "\"jwt://api.internal\"], max_tier: pr, issuers: [internal]}\n"
      "    maintainer: {resources: [\"github://acme/*\", \"jwt://*\"], max_tier: merge_deploy}\n"
      "    approver: {resources: [], max_tier: read}\n"
      "    resource_server: {resources: [], max_tier: read}\n"
      "    admin: {resources: [\"*\"], max_tier: destructive}\n"
      "sessions: " +
      o.sessions + "\n" + (o.anomaly.empty() ? std::string() : "anomaly: " + o.anomaly + "\n") +
      (o.approvals.empty() ? std::string() : "approvals: " + o.approvals + "\n") +
      (o.trust.empty() ? std::string() : "trust: " + o.trust + "\n") +
      "issuers:\n"
      "  internal: {type: jwt, algorithm: " +
      o.jwt_algorithm + ", audiences: [\"mcp.internal\", \"api.internal\"], max_ttl_seconds: 900," +
      (o.jwt_signing_key.empty() ? std::string() : " signing_key: \"" + o.jwt_signing_key + "\",") +
      " scope_tiers: {read: read, write: write, \"mcp:*\": read, deploy: write}}\n" +
      o.extra_issuers + o.top_extra;
  for (const auto& [id, login] : o.github_logins) {
    const std::string anchor = "{id: " + id + ",";
    if (auto pos = yaml.find(anchor); pos != std::string::npos) {
      yaml.insert(pos + 1, "identities: {github: " + login + "}, ");
    }
  }
  for (const auto& [role, keys] : o.role_extra) {
    const std::string anchor = "    " + role + ": {";
    if (auto pos = yaml.find(anchor); pos != std::string::npos) {
      yaml.insert(pos + anchor.size(), keys + ", ");
    }
  }
  WriteFile(config_path(), yaml);
}

std::unique_ptr<BrokerProcess> BrokerProcess::Start(BrokerOptions options) {
  std::unique_ptr<BrokerProcess> p(new BrokerProcess());
  char tmpl[] = "/tmp/jitbroker-it-XXXXXX";
  REQUIRE(::mkdtemp(tmpl) != nullptr);
  p->dir_ = tmpl;
  std::filesystem::create_directories(p->dir_ + "/keys");
  if (const BrokerProcess* first = options.same_keys_as) {
    p->engineer_key = first->engineer_key;
    p->other_engineer_key = first->other_engineer_key;
    p->maintainer_key = first->maintainer_key;
    p->admin_key = first->admin_key;
    p->maintainer2_key = first->maintainer2_key;
  } else {
    p->engineer_key = RandomKey("jbk_");
    p->other_engineer_key = RandomKey("jbk_");
    p->maintainer_key = RandomKey("jbk_");
    p->admin_key = RandomKey("jbk_");
    p->maintainer2_key = RandomKey("jbk_");
  }
  WriteFile(p->dir_ + "/keys/maint2.key", p->maintainer2_key + "\n");
  WriteFile(p->dir_ + "/keys/eng.key", p->engineer_key + "\n");
  WriteFile(p->dir_ + "/keys/eng2.key", p->other_engineer_key + "\n");
  WriteFile(p->dir_ + "/keys/maint.key", p->maintainer_key + "\n");
  WriteFile(p->dir_ + "/keys/admin.key", p->admin_key + "\n");
  p->WriteConfig(options);
  p->Launch();
  return p;
}

void BrokerProcess::Launch() {
  int out_pipe[2];
  REQUIRE(::pipe(out_pipe) == 0);
  const std::string config = config_path();
  pid_ = ::fork();
  REQUIRE(pid_ >= 0);
  if (pid_ == 0) {
    ::dup2(out_pipe[1], STDOUT_FILENO);
    ::close(out_pipe[0]);
    ::close(out_pipe[1]);
    ::execl(JITBROKER_BINARY, JITBROKER_BINARY, "--config", config.c_str(), (char*)nullptr);
    ::_exit(127);
  }
  ::close(out_pipe[1]);
  // Read stdout until the "listening on port N" line (or the child exits).
  std::string text;
  char buf[512];
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(20);
  port_ = 0;
  while (std::chrono::steady_clock::now() < deadline) {
    const ssize_t n = ::read(out_pipe[0], buf, sizeof(buf));
    if (n <= 0) {
      break;
    }
    text.append(buf, static_cast<size_t>(n));
    const auto pos = text.find("listening on port ");
    if (pos != std::string::npos && text.find('\n', pos) != std::string::npos) {
      port_ = std::stoi(text.substr(pos + 18));
      break;
    }
  }
  // Keep draining stdout in the background so the child never blocks on it.
  const int fd = out_pipe[0];
  std::thread([fd] {
    char sink[512];
    while (::read(fd, sink, sizeof(sink)) > 0) {
    }
    ::close(fd);
  }).detach();
  stdout_ = text;
  INFO("broker stdout: " << text);
  REQUIRE(port_ > 0);
  client_ = std::make_unique<httplib::Client>("127.0.0.1", port_);
  client_->set_connection_timeout(5);
  client_->set_read_timeout(30);
}

void BrokerProcess::Restart() {
  Stop();
  Launch();
}

void BrokerProcess::Signal(int sig) {
  if (pid_ > 0) {
    ::kill(pid_, sig);
  }
}

void BrokerProcess::Stop() {
  if (pid_ > 0) {
    ::kill(pid_, SIGTERM);
    int status = 0;
    ::waitpid(pid_, &status, 0);
    pid_ = -1;
  }
  client_.reset();
}

void BrokerProcess::Kill9() {
  if (pid_ > 0) {
    ::kill(pid_, SIGKILL);
    int status = 0;
    ::waitpid(pid_, &status, 0);
    pid_ = -1;
  }
  client_.reset();
}

HttpResult BrokerProcess::Request(const std::string& method, const std::string& path,
                                  const std::string& bearer, const std::string& body,
                                  const std::string& content_type) {
  httplib::Headers headers;
  if (!bearer.empty()) {
    headers.emplace("Authorization", "Bearer " + bearer);
  }
  HttpResult out;
  // A client per call: httplib::Client serialises requests, and tests make
  // concurrent ones (long-polls beside approvals).
  httplib::Client client("127.0.0.1", port_);
  client.set_connection_timeout(5);
  client.set_read_timeout(30);
  auto r = method == "GET"    ? client.Get(path, headers)
           : method == "POST" ? client.Post(path, headers, body, content_type)
                              : client.Delete(path, headers);
  if (!r) {
    return out;
  }
  out.status = r->status;
  out.body = r->body;
  out.content_type = r->get_header_value("Content-Type");
  out.request_id = r->get_header_value("X-Request-Id");
  out.json = nlohmann::json::parse(out.body, nullptr, false);
  if (out.json.is_discarded()) {
    out.json = nullptr;
  }
  return out;
}

std::pair<std::string, std::string> BrokerProcess::OpenSession(const std::string& key,
                                                               const nlohmann::json& scope,
                                                               int ttl_seconds,
                                                               int heartbeat_seconds) {
  nlohmann::json body = {{"agent", {{"id", "agent_test"}}},
                         {"task", {{"id", "task_test"}, {"description", "test"}, {"scope", scope}}},
                         {"ttl_seconds", ttl_seconds},
                         {"heartbeat_seconds", heartbeat_seconds}};
  auto r = Post("/v1/sessions", key, body);
  INFO(r.body);
  REQUIRE(r.status == 201);
  return {r.json["session_id"].get<std::string>(), r.json["session_token"].get<std::string>()};
}

}  // namespace jitbroker::testing
