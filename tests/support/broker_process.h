// BrokerProcess: starts the real jitbroker daemon on a loopback port with a
// temporary data directory and config, for integration tests, and stops it.
// API keys for three principals (engineer, maintainer, admin) are written to
// key files before start, so tests know them.
#pragma once

#include <sys/types.h>

#include <map>
#include <memory>
#include <string>

#include <httplib.h>
#include <nlohmann/json.hpp>

namespace jitbroker::testing {

struct BrokerOptions {
  std::string policy_version = "test.1";
  std::string extra_tools;  // YAML list items appended under policy.tools
  std::string sessions =
      "{max_ttl_seconds: 28800, default_ttl_seconds: 3600, heartbeat_seconds: 60, "
      "stall_after_missed: 3}";
  std::string jwt_algorithm = "ES256";
  std::string tiers;          // YAML mapping for policy.tiers (empty = defaults)
  std::string anomaly;        // YAML sequence for `anomaly:` (empty = none)
  std::string approvals;      // YAML mapping for `approvals:` (empty = none)
  std::string trust;          // YAML sequence for `trust:` (empty = none)
  std::string extra_issuers;  // YAML lines appended under `issuers:` (indent 2)
  std::map<std::string, std::string> github_logins;  // principal id -> github_login
  int max_body_bytes = 65536;
  int threads = 16;
  int port = 0;                 // 0: the kernel picks (tests read it from the daemon's output)
  std::string server_extra;     // YAML appended inside `server: {…}`, e.g. ", io_threads: 1"
  std::string top_extra;        // YAML lines appended at the top level (store:, seal_key:, audit:)
  std::string jwt_signing_key;  // `signing_key` of the `internal` jwt issuer (a file: reference)
  // Another replica of the same deployment: this one gets its API keys (so
  // the same principals authenticate on both). Not owned; may be null.
  const class BrokerProcess* same_keys_as = nullptr;
  // Keys added to a role's mapping, by role name, e.g. {"engineer",
  // "session_budget: {max_grants: 1}"}.
  std::map<std::string, std::string> role_extra;
};

struct HttpResult {
  int status = 0;
  std::string body;
  std::string content_type;
  std::string request_id;
  nlohmann::json json;  // parsed body (null if not JSON)
};

class BrokerProcess {
 public:
  ~BrokerProcess();
  // Creates a temp dir, writes config + keys, starts the daemon and waits for
  // it to listen. Fails the test (REQUIRE) if it does not start.
  static std::unique_ptr<BrokerProcess> Start(BrokerOptions options = {});
  // Starts again on the same directory (after Kill/Stop) — restart tests.
  void Restart();
  void Stop();   // SIGTERM + wait
  void Kill9();  // SIGKILL + wait
  void Signal(int sig);

  HttpResult Request(const std::string& method, const std::string& path, const std::string& bearer,
                     const std::string& body = "",
                     const std::string& content_type = "application/json");
  HttpResult Get(const std::string& path, const std::string& bearer = "") {
    return Request("GET", path, bearer);
  }
  HttpResult Post(const std::string& path, const std::string& bearer, const nlohmann::json& body) {
    return Request("POST", path, bearer, body.dump());
  }

  // Opens a session as `key`; returns {session_id, token}.
  std::pair<std::string, std::string> OpenSession(const std::string& key,
                                                  const nlohmann::json& scope,
                                                  int ttl_seconds = 3600,
                                                  int heartbeat_seconds = 60);

  const std::string& dir() const { return dir_; }
  std::string config_path() const { return dir_ + "/broker.yaml"; }
  std::string audit_path() const { return dir_ + "/data/audit.jsonl"; }
  std::string access_log_path() const { return dir_ + "/access.log"; }
  int port() const { return port_; }
  pid_t pid() const { return pid_; }
  std::string url() const { return "http://127.0.0.1:" + std::to_string(port_); }
  const std::string& stdout_text() const { return stdout_; }

  std::string engineer_key, maintainer_key, admin_key, other_engineer_key, maintainer2_key;
  void WriteConfig(const BrokerOptions& options);

 private:
  BrokerProcess() = default;
  void Launch();
  std::string dir_;
  pid_t pid_ = -1;
  int port_ = 0;
  std::string stdout_;
  std::unique_ptr<httplib::Client> client_;
};

// Runs a command, returns {exit status, stdout+stderr}.
std::pair<int, std::string> RunCommand(const std::string& command);

}  // namespace jitbroker::testing
