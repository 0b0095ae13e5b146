// Unit tests for the config loader (broker/config/config.h).
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <string>
#include <vector>

#include <doctest/doctest.h>

#include "broker/config/config.h"
#include "broker/crypto/crypto.h"
#include "jitbroker/policy.h"
#include "tests/support/temp_dir.h"

namespace jitbroker::config {
namespace {

namespace fs = std::filesystem;

using testing::TempDir;

std::string RepoRoot() {
  // tests/unit/config_test.cc -> repository root
  // CMake passes absolute source paths; a relative __FILE__ resolves against the working directory.
  fs::path self = fs::absolute(fs::path(__FILE__)).lexically_normal();
  return self.parent_path().parent_path().parent_path().string();
}

std::string Base64Of32Bytes() { return crypto::Base64Encode(std::string(32, '\x5a')); }

TEST_CASE("Config: the shipped conf/dev.yaml loads as is") {
  const std::string path = RepoRoot() + "/conf/dev.yaml";
  Result<Config> c = LoadConfigFile(path);
  REQUIRE_MESSAGE(c.has_value(), (c.has_value() ? "" : c.error().ToString()));
  CHECK(c->file == fs::path(path).lexically_normal().string());
  CHECK(c->data_dir == RepoRoot() + "/data");
  CHECK(c->server.host == "127.0.0.1");
  CHECK(c->server.port == 8443);
  CHECK(c->server.tls_cert.empty());
  CHECK(std::get<SqliteStoreConfig>(c->store.backend).path == RepoRoot() + "/data/state.db");
  CHECK(c->audit.file == RepoRoot() + "/data/audit.jsonl");
  CHECK_FALSE(c->seal_key.has_value());
  CHECK(c->log.level == "info");
  CHECK(c->sessions.max_ttl_seconds == 28800);

  REQUIRE(c->policy != nullptr);
  const Policy& p = *c->policy;
  CHECK(p.version == "dev.1");
  CHECK(p.default_tier == Tier::kWrite);
  CHECK(p.ForTier(Tier::kRead).control == Control::kAutoAllow);
  CHECK(p.ForTier(Tier::kMergeDeploy).control == Control::kApproval);
  CHECK(p.ForTier(Tier::kMergeDeploy).four_eyes);
  CHECK(p.ForTier(Tier::kMergeDeploy).approvers == std::vector<std::string>{"role:maintainer"});
  CHECK(p.ForTier(Tier::kSecret).max_ttl_seconds == 300);
  CHECK(p.ForTier(Tier::kDestructive).control == Control::kDeny);
  REQUIRE(p.tools.size() == 5);
  CHECK(p.tools[0].name == "merge-pull-request");
  CHECK(p.tools[1].name == "recursive-rm");
  CHECK(p.tools[1].ignore_case);
  REQUIRE(p.tools[1].parameters.size() == 1);
  CHECK(p.tools[1].parameters.begin()->second.argv.has_value());
  CHECK(p.roles.at("engineer").scopes ==
        std::optional<std::vector<std::string>>({"read", "write", "mcp:*"}));
  CHECK_FALSE(p.roles.at("admin").scopes.has_value());
  REQUIRE(p.principals.size() == 3);
  const Principal* eng = p.FindPrincipal("dev_engineer");
  REQUIRE(eng != nullptr);
  CHECK(eng->api_key_file == RepoRoot() + "/data/keys/dev_engineer.key");
  REQUIRE(p.FindPrincipal("dev_maintainer") != nullptr);
  CHECK(p.HasRole(*p.FindPrincipal("dev_maintainer"), "approver"));
  REQUIRE(p.FindPrincipal("dev_admin") != nullptr);
  CHECK(p.roles.at("engineer").max_tier == Tier::kPr);
  CHECK(p.roles.at("engineer").issuers == std::vector<std::string>{"internal"});
  CHECK(p.roles.at("admin").resources == std::vector<std::string>{"*"});

  REQUIRE(c->issuers.size() == 1);
  CHECK(c->issuers[0].name == "internal");
  CHECK(c->issuers[0].type == "jwt");
  CHECK(c->issuers[0].section.path() == "issuers.internal");
  CHECK(c->issuers[0].section.Has("audiences"));

  // The seed example against the shipped policy: an engineer's agent cannot merge.
  GrantRequest req;
  req.tool = "github.merge_pull_request";
  req.operation = "merge";
  req.resource = "github://acme/payment-service/pull/842";
  req.issuer = "internal";
  SessionFacts s;
  s.principal_id = "dev_engineer";
  s.scope.resources = {"github://acme/payment-service"};
  s.scope.max_tier = Tier::kPr;
  const TimePoint now = FromUnixSeconds(1'800'000'000);
  s.expires_at = now + std::chrono::hours(1);
  IssuerFacts issuer;
  issuer.name = "internal";
  CHECK(CheckScopeWithinPrincipal(s.scope, *eng, p).has_value());
  Decision d = Evaluate(req, s, issuer, p, now);
  CHECK(d.result == DecisionResult::kDeny);
  CHECK(d.code == "out_of_scope");
  CHECK(d.policy_version == "dev.1");
}

TEST_CASE("Config: tool rules with ignore_case, scopes, argv: and name patterns; role scopes") {
  TempDir dir;
  Result<Config> c = LoadConfigText(R"(
policy:
  version: v1
  tools:
    - name: rm
      ignore_case: true
      match:
        tool: Shell.Exec
        parameters: {"re:cmd|command": "argv:rm -r|-R|--recursive", "*": "re:.*x.*"}
      tier: destructive
    - {match: {scopes: "deploy:*"}, tier: merge_deploy}
  roles:
    a: {scopes: [read, "mcp:*"]}
    b: {scopes: []}
    c: {}
)",
                                    dir.File("t.yaml"));
  REQUIRE_MESSAGE(c.has_value(), (c ? "" : c.error().ToString()));
  const Policy& p = *c->policy;
  REQUIRE(p.tools.size() == 2);
  const ToolRule& rm = p.tools[0];
  CHECK(rm.ignore_case);
  REQUIRE(rm.tool.has_value());
  CHECK(rm.tool->Matches("shell.exec"));
  REQUIRE(rm.parameters.size() == 2);
  const ParameterRule& cmd = rm.parameters.at("re:cmd|command");
  CHECK(cmd.key.Matches("COMMAND"));
  CHECK(cmd.argv.has_value());
  CHECK_FALSE(cmd.value.has_value());
  CHECK(rm.parameters.at("*").value.has_value());
  REQUIRE(p.tools[1].scopes.has_value());
  CHECK(p.tools[1].scopes->Matches("deploy:prod"));
  CHECK_FALSE(p.tools[1].ignore_case);
  CHECK(p.roles.at("a").scopes == std::optional<std::vector<std::string>>({"read", "mcp:*"}));
  REQUIRE(p.roles.at("b").scopes.has_value());
  CHECK(p.roles.at("b").scopes->empty());
  CHECK_FALSE(p.roles.at("c").scopes.has_value());
}

TEST_CASE("Config: defaults of a minimal file") {
  TempDir dir;
  Result<Config> c = LoadConfigText("policy:\n  version: v1\n", dir.File("min.yaml"));
  REQUIRE_MESSAGE(c.has_value(), (c.has_value() ? "" : c.error().ToString()));
  const std::string root = dir.path().lexically_normal().string();
  CHECK(c->file == root + "/min.yaml");
  CHECK(c->data_dir == root + "/data");
  CHECK(std::get<SqliteStoreConfig>(c->store.backend).path == root + "/data/state.db");
  CHECK(c->store.group_commit_max_batch == 256);
  CHECK(c->audit.file == root + "/data/audit.jsonl");
  CHECK_FALSE(c->audit.signing_key.has_value());  // generated at first start
  CHECK(c->audit.checkpoint_every_records == 1000);
  CHECK(c->audit.checkpoint_every_seconds == 60);
  CHECK(c->server.host == "127.0.0.1");
  CHECK(c->server.port == 8443);
  CHECK(c->server.threads == 8);
  CHECK(c->server.max_body_bytes == 64 * 1024);
  CHECK(c->server.metrics_public);
  CHECK(c->sessions.default_ttl_seconds == 3600);
  CHECK(c->sessions.heartbeat_seconds == 60);
  CHECK(c->sessions.stall_after_missed == 3);
  CHECK(c->log.access_log == "stderr");
  CHECK(c->issuers.empty());
  CHECK_FALSE(c->anomaly.has_value());
  CHECK_FALSE(c->trust.has_value());
  const Policy& p = *c->policy;
  CHECK(p.default_tier == Tier::kWrite);
  CHECK(p.ForTier(Tier::kRead).control == Control::kAutoAllow);
  CHECK(p.ForTier(Tier::kWrite).control == Control::kInScope);
  CHECK(p.ForTier(Tier::kPr).control == Control::kInScope);
  CHECK(p.ForTier(Tier::kMergeDeploy).control == Control::kApproval);
  CHECK(p.ForTier(Tier::kMergeDeploy).four_eyes);
  CHECK(p.ForTier(Tier::kSecret).control == Control::kApproval);
  CHECK(p.ForTier(Tier::kSecret).max_ttl_seconds == 300);
  CHECK(p.ForTier(Tier::kDestructive).control == Control::kDeny);
  CHECK(p.ForTier(Tier::kRead).approval_ttl_seconds == 0);
  // Four-eyes on every tier by default, secret included (issue #10).
  for (Tier t : kAllTiers) {
    CAPTURE(TierName(t));
    CHECK(p.ForTier(t).four_eyes);
    CHECK_FALSE(p.ForTier(t).break_glass_self_approval);
  }
  CHECK(c->approvals.max_pending_per_session == 10);
  CHECK(c->approvals.max_pending_per_principal == 50);
  CHECK(c->limits.grants_per_session.rate_per_second == 5);
  CHECK(c->limits.grants_per_session.burst == 50);
  CHECK(c->limits.grants_per_principal.rate_per_second == 20);
  CHECK(c->limits.grants_per_principal.burst == 200);
  CHECK(c->limits.max_tracked_keys == 100000);
}

TEST_CASE("Config: approval bounds, grant rate limits and break-glass self-approval") {
  TempDir dir;
  Result<Config> c = LoadConfigText(
      "policy:\n  version: v1\n"
      "  tiers:\n"
      "    secret: {control: approval, four_eyes: true, self_approval: break_glass}\n"
      "    merge_deploy: {control: approval, self_approval: deny}\n"
      "approvals: {max_pending_per_session: 3, max_pending_per_principal: 7}\n"
      "limits:\n"
      "  grants_per_session: {rate_per_second: 0.5, burst: 4}\n"
      "  grants_per_principal: {rate_per_second: 100}\n"
      "  max_tracked_keys: 500\n",
      dir.File("l.yaml"));
  REQUIRE_MESSAGE(c.has_value(), (c.has_value() ? "" : c.error().ToString()));
  CHECK(c->policy->ForTier(Tier::kSecret).four_eyes);
  CHECK(c->policy->ForTier(Tier::kSecret).break_glass_self_approval);
  CHECK_FALSE(c->policy->ForTier(Tier::kMergeDeploy).break_glass_self_approval);
  CHECK(c->approvals.max_pending_per_session == 3);
  CHECK(c->approvals.max_pending_per_principal == 7);
  CHECK(c->limits.grants_per_session.rate_per_second == 0.5);
  CHECK(c->limits.grants_per_session.burst == 4);
  CHECK(c->limits.grants_per_principal.rate_per_second == 100);
  CHECK(c->limits.grants_per_principal.burst == 200);  // default kept
  CHECK(c->limits.max_tracked_keys == 500);
}

TEST_CASE("Config: a full file with every key, in JSON") {
  TempDir dir;
  dir.Write("tls/cert.pem", "cert");
  dir.Write("tls/key.pem", "key");
  dir.Write("seal.key", Base64Of32Bytes() + "\n");
  dir.Write("keys/alice.key", "  jbk_alice_key\n");
  const std::string digest = crypto::Sha256Hex("bob-key");
  const std::string json = R"({
  "data_dir": "/var/lib/jb",
  "server": {"listen": "[::1]:0", "threads": 4, "max_queued_requests": 10,
             "max_body_bytes": 2048, "metrics_public": false,
             "tls": {"cert": "tls/cert.pem", "key": "file:tls/key.pem"}},
  "store": {"sqlite": {"path": "db/state.db"}, "group_commit_max_batch": 16},
  "audit": {"file": "/var/log/jb/audit.jsonl"},
  "seal_key": "file:seal.key",
  "policy": {
    "version": "2026-11-22.1",
    "default_tier": "pr",
    "tiers": {"secret": {"control": "deny", "approval_ttl_seconds": 60},
              "write": {"control": "approval", "approvers": ["role:lead"], "four_eyes": true,
                        "self_approval": "break_glass", "max_ttl_seconds": 120}},
    "tools": [{"name": "push", "match": {"tool": "git.push", "operation": "push",
               "resource": "github://acme/*", "parameters": {"force": "true", "n": "re:[0-9]+"}},
               "tier": "destructive"}],
    "principals": [
      {"id": "alice", "email": "a@example.com", "roles": ["lead"], "github_login": "alice",
       "api_key_file": "keys/alice.key"},
      {"id": "bob", "roles": ["lead"], "api_keys_sha256": [")" +
                           digest + R"("],
       "api_key_file": "keys/bob.key"}],
    "roles": {"lead": {"resources": ["github://acme/*"], "max_tier": "merge_deploy",
                       "issuers": ["gh"]}}},
  "sessions": {"max_ttl_seconds": 600, "heartbeat_seconds": 30, "stall_after_missed": 2},
  "log": {"level": "debug", "access_log": "logs/access.log"},
  "issuers": {"gh": {"type": "github_app", "client_id": "Iv1.x"}},
  "anomaly": [{"rule": "denied_burst", "count": 5}],
  "trust": []
})";
  Result<Config> c = LoadConfigText(json, dir.File("full.json"));
  REQUIRE_MESSAGE(c.has_value(), (c.has_value() ? "" : c.error().ToString()));
  const std::string root = dir.path().lexically_normal().string();
  CHECK(c->data_dir == "/var/lib/jb");
  CHECK(c->server.host == "::1");
  CHECK(c->server.port == 0);
  CHECK(c->server.threads == 4);
  CHECK(c->server.max_queued_requests == 10);
  CHECK(c->server.max_body_bytes == 2048);
  CHECK_FALSE(c->server.metrics_public);
  CHECK(c->server.tls_cert == root + "/tls/cert.pem");
  CHECK(c->server.tls_key == root + "/tls/key.pem");
  CHECK(std::get<SqliteStoreConfig>(c->store.backend).path == root + "/db/state.db");
  CHECK(c->store.group_commit_max_batch == 16);
  CHECK(c->audit.file == "/var/log/jb/audit.jsonl");
  REQUIRE(c->seal_key.has_value());
  CHECK(c->seal_key->size() == 32);
  CHECK(c->seal_key->Reveal() == std::string(32, '\x5a'));
  CHECK(c->sessions.max_ttl_seconds == 600);
  CHECK(c->sessions.default_ttl_seconds == 600);  // default clamped to the max
  CHECK(c->log.level == "debug");
  CHECK(c->log.access_log == root + "/logs/access.log");
  REQUIRE(c->issuers.size() == 1);
  CHECK(c->issuers[0].type == "github_app");
  REQUIRE(c->anomaly.has_value());
  CHECK(c->anomaly->node().size() == 1);
  REQUIRE(c->trust.has_value());

  const Policy& p = *c->policy;
  CHECK(p.version == "2026-11-22.1");
  CHECK(p.default_tier == Tier::kPr);
  CHECK(p.ForTier(Tier::kSecret).control == Control::kDeny);
  CHECK(p.ForTier(Tier::kSecret).max_ttl_seconds == 300);  // untouched field keeps its default
  CHECK(p.ForTier(Tier::kSecret).approval_ttl_seconds == 60);
  CHECK(p.ForTier(Tier::kWrite).control == Control::kApproval);
  CHECK(p.ForTier(Tier::kWrite).approvers == std::vector<std::string>{"role:lead"});
  CHECK(p.ForTier(Tier::kWrite).max_ttl_seconds == 120);
  CHECK(p.ForTier(Tier::kWrite).four_eyes);
  CHECK(p.ForTier(Tier::kWrite).break_glass_self_approval);
  REQUIRE(p.tools.size() == 1);
  CHECK(p.tools[0].name == "push");
  CHECK(p.tools[0].tier == Tier::kDestructive);
  CHECK(p.tools[0].parameters.size() == 2);
  REQUIRE(p.tools[0].parameters.at("n").value.has_value());
  CHECK(p.tools[0].parameters.at("n").value->kind() == Matcher::Kind::kRegex);

  const Principal* alice = p.FindPrincipal("alice");
  REQUIRE(alice != nullptr);
  CHECK(alice->api_key_file == root + "/keys/alice.key");
  CHECK(alice->api_keys_sha256 == std::vector<std::string>{crypto::Sha256Hex("jbk_alice_key")});
  CHECK(p.FindPrincipalByKeySha256(crypto::Sha256Hex("jbk_alice_key")) == alice);
  // The deprecated github_login is identities.github, with one warning.
  CHECK(alice->identities == std::map<std::string, std::string>{{"github", "alice"}});
  REQUIRE(c->policy_notes.warnings.size() == 1);
  CHECK(c->policy_notes.warnings[0].find("policy.principals[0].github_login: github_login is "
                                         "deprecated") != std::string::npos);
  const Principal* bob = p.FindPrincipal("bob");
  REQUIRE(bob != nullptr);
  // The key file does not exist yet: the daemon generates it; the path is kept.
  CHECK(bob->api_key_file == root + "/keys/bob.key");
  CHECK(bob->api_keys_sha256 == std::vector<std::string>{digest});
}

TEST_CASE("Config: env: secret references") {
  TempDir dir;
  ::setenv("JITBROKER_CONFIG_TEST_SEAL", Base64Of32Bytes().c_str(), 1);
  Result<Config> c = LoadConfigText(
      "seal_key: env:JITBROKER_CONFIG_TEST_SEAL\npolicy: {version: v}\n", dir.File("e.yaml"));
  ::unsetenv("JITBROKER_CONFIG_TEST_SEAL");
  REQUIRE_MESSAGE(c.has_value(), (c.has_value() ? "" : c.error().ToString()));
  REQUIRE(c->seal_key.has_value());
  CHECK(c->seal_key->size() == 32);
}

TEST_CASE("Config: audit signing key and checkpoint intervals") {
  TempDir dir;
  dir.Write("audit.pem", "-----BEGIN PRIVATE KEY-----\n");
  Result<Config> c = LoadConfigText(
      "audit:\n  signing_key: file:audit.pem\n  checkpoint: {every_records: 10, every_seconds: 5}\n"
      "policy: {version: v}\n",
      dir.File("a.yaml"));
  REQUIRE_MESSAGE(c.has_value(), (c.has_value() ? "" : c.error().ToString()));
  REQUIRE(c->audit.signing_key.has_value());
  CHECK(c->audit.signing_key->Reveal().starts_with("-----BEGIN PRIVATE KEY-----"));
  CHECK(c->audit.checkpoint_every_records == 10);
  CHECK(c->audit.checkpoint_every_seconds == 5);
  CHECK_FALSE(c->audit.file_sync_per_commit);  // the default: synced in the background
  CHECK(c->audit.file_sync_interval_ms == 200);
}

TEST_CASE("Config: audit.file_sync is interval or commit") {
  TempDir dir;
  Result<Config> c = LoadConfigText(
      "audit: {file_sync: commit, file_sync_interval_ms: 50}\npolicy: {version: v}\n",
      dir.File("a.yaml"));
  REQUIRE_MESSAGE(c.has_value(), (c.has_value() ? "" : c.error().ToString()));
  CHECK(c->audit.file_sync_per_commit);
  CHECK(c->audit.file_sync_interval_ms == 50);
  for (const char* bad : {"audit: {file_sync: always}\n", "audit: {file_sync_interval_ms: 5}\n",
                          "audit: {file_sync_interval_ms: 60001}\n"}) {
    CAPTURE(bad);
    Result<Config> r =
        LoadConfigText(std::string(bad) + "policy: {version: v}\n", dir.File("b.yaml"));
    REQUIRE_FALSE(r.has_value());
    CHECK(r.error().message.find("audit.file_sync") != std::string::npos);
  }
}

TEST_CASE("Config: issuer sections are handed over with only `type` known") {
  TempDir dir;
  Result<Config> c = LoadConfigText(
      "policy: {version: v}\n"
      "issuers:\n"
      "  internal:\n"
      "    type: jwt\n"
      "    algorithm: ES256\n",
      dir.File("i.yaml"));
  REQUIRE(c.has_value());
  REQUIRE(c->issuers.size() == 1);
  Section s = c->issuers[0].section;
  Status unknown = s.CheckNoUnknownKeys();
  REQUIRE_FALSE(unknown.has_value());
  CHECK(unknown.error().message ==
        dir.File("i.yaml") + ":5: issuers.internal.algorithm: unknown key");
  Result<std::string> alg = s.String("algorithm");
  REQUIRE(alg.has_value());
  CHECK(*alg == "ES256");
  CHECK(s.CheckNoUnknownKeys().has_value());
  Result<std::optional<int64_t>> ttl = s.OptInt("max_ttl_seconds", 1, 10);
  REQUIRE(ttl.has_value());
  CHECK_FALSE(ttl->has_value());
}

TEST_CASE("Config: principals' upstream identities, and the deprecated github_login") {
  TempDir dir;
  const std::string head = "policy:\n  version: v\n  roles: {r: {}}\n  principals:\n";
  SUBCASE("identities is a map; github_login is identities.github, warned once per load") {
    Result<Config> c =
        LoadConfigText(head +
                           "    - {id: a, roles: [r], identities: {github: octo-cat, aws: "
                           "\"arn:aws:iam::123456789012:user/a\"}}\n"
                           "    - {id: b, roles: [r], github_login: bee}\n"
                           "    - {id: c, roles: [r], github_login: sea}\n"
                           "    - {id: d, roles: [r]}\n",
                       dir.File("t.yaml"));
    REQUIRE_MESSAGE(c.has_value(), (c ? "" : c.error().ToString()));
    const Policy& p = *c->policy;
    CHECK(p.FindPrincipal("a")->identities ==
          std::map<std::string, std::string>{{"aws", "arn:aws:iam::123456789012:user/a"},
                                             {"github", "octo-cat"}});
    CHECK(p.FindPrincipal("b")->identities ==
          std::map<std::string, std::string>{{"github", "bee"}});
    CHECK(p.FindPrincipal("d")->identities.empty());
    REQUIRE(c->policy_notes.warnings.size() == 1);
    const std::string& w = c->policy_notes.warnings[0];
    CHECK(w.find(dir.File("t.yaml") + ":6: policy.principals[1].github_login") == 0);
    CHECK(w.find("deprecated") != std::string::npos);
    CHECK(w.find("identities: {github: LOGIN}") != std::string::npos);
    CHECK(w.find("2 principals") != std::string::npos);
    // Where each identity was written, for the check against the issuers.
    CHECK(c->policy_notes.identity_locations.at({"a", "aws"}) ==
          dir.File("t.yaml") + ":5: policy.principals[0].identities.aws");
    CHECK(c->policy_notes.identity_locations.at({"c", "github"}) ==
          dir.File("t.yaml") + ":7: policy.principals[2].github_login");
  }
  SUBCASE("no warning without github_login") {
    Result<Config> c =
        LoadConfigText(head + "    - {id: a, roles: [r], identities: {github: x}}\n", "t.yaml");
    REQUIRE(c.has_value());
    CHECK(c->policy_notes.warnings.empty());
  }
  SUBCASE("bad identities") {
    struct Case {
      const char* name;
      std::string principal;
      const char* expect;
    };
    const std::vector<Case> cases = {
        {"both spellings", "{id: a, roles: [r], github_login: x, identities: {github: y}}",
         "t.yaml:5: policy.principals[0].github_login: is given both here and as "
         "identities.github"},
        {"upper-case key", "{id: a, roles: [r], identities: {GitHub: x}}",
         "t.yaml:5: policy.principals[0].identities.GitHub: identity keys must match"},
        {"a space in the value", "{id: a, roles: [r], identities: {github: \"a b\"}}",
         "policy.principals[0].identities.github: must be 1 to 256 printable"},
        {"an empty value", "{id: a, roles: [r], identities: {github: \"\"}}",
         "policy.principals[0].identities.github: must not be empty"},
        {"a list value", "{id: a, roles: [r], identities: {github: [x]}}",
         "policy.principals[0].identities.github: must be a string"},
        {"not a mapping", "{id: a, roles: [r], identities: [github]}",
         "policy.principals[0].identities: must be a mapping"},
        {"an empty github_login", "{id: a, roles: [r], github_login: \"\"}",
         "policy.principals[0].github_login: must not be empty"},
        {"a duplicate key", "{id: a, roles: [r], identities: {github: x, github: y}}",
         "duplicate key"},
    };
    for (const Case& c : cases) {
      CAPTURE(c.name);
      Result<Config> r = LoadConfigText(head + "    - " + c.principal + "\n", "t.yaml");
      REQUIRE_FALSE(r.has_value());
      CAPTURE(r.error().message);
      CHECK(r.error().message.find(c.expect) != std::string::npos);
    }
  }
}

TEST_CASE("Config: the loader leaves issuer types to the registry") {
  // `type` is required, but which types exist is app::ValidateConfig's
  // question (config_validation_test.cc): a new issuer type needs no change
  // here.
  Result<Config> c =
      LoadConfigText("policy: {version: v}\nissuers:\n  x: {type: vault}\n", "t.yaml");
  REQUIRE(c.has_value());
  CHECK(c->issuers[0].type == "vault");
}

TEST_CASE("Config: LoadConfigFile reports an unreadable file") {
  Result<Config> c = LoadConfigFile("/nonexistent/jitbroker.yaml");
  REQUIRE_FALSE(c.has_value());
  CHECK(c.error().Reason() == "invalid_config");
  CHECK(c.error().message.find("/nonexistent/jitbroker.yaml") != std::string::npos);
}

TEST_CASE("Config: LoadConfigFile refuses an endless file after a bounded read") {
  Result<Config> c = LoadConfigFile("/dev/zero");
  REQUIRE_FALSE(c.has_value());
  CHECK(c.error().Reason() == "invalid_config");
  CHECK(c.error().message ==
        "cannot read the configuration file /dev/zero: larger than 4194304 bytes");
}

struct BadConfig {
  const char* name;
  const char* yaml;
  const char* expected;  // a substring of the message, starting "t.yaml:LINE: KEY"
};

TEST_CASE("Config: invalid files name file, line and key") {
  TempDir dir;
  dir.Write("short.key", crypto::Base64Encode(std::string(16, 'x')) + "\n");
  dir.Write("empty.key", "\n");
  dir.Write("cert.pem", "cert");
  const std::string d1 = crypto::Sha256Hex("k1");
  const std::string dup_digest_yaml =
      "policy:\n  version: v\n  roles: {r: {}}\n  principals:\n"
      "    - {id: a, roles: [r], api_keys_sha256: [" +
      d1 +
      "]}\n"
      "    - {id: b, roles: [r], api_keys_sha256: [" +
      d1 + "]}\n";
  ::unsetenv("JITBROKER_CONFIG_TEST_UNSET");
  const std::vector<BadConfig> cases = {
      {"unknown top-level key", "polcy: {}\npolicy: {version: v}\n",
       "t.yaml:1: polcy: unknown key"},
      {"unknown nested key", "server:\n  listn: 127.0.0.1:1\npolicy: {version: v}\n",
       "t.yaml:2: server.listn: unknown key"},
      {"unknown deeply nested key", "policy:\n  version: v\n  tiers:\n    read: {contrl: deny}\n",
       "t.yaml:4: policy.tiers.read.contrl: unknown key"},
      {"duplicate key", "policy:\n  version: a\n  version: b\n",
       "t.yaml:3: policy.version: duplicate key"},
      {"duplicate key inside an issuer",
       "policy: {version: v}\nissuers:\n  x:\n    type: jwt\n"
       "    type: jwt\n",
       "t.yaml:5: issuers.x.type: duplicate key"},
      {"duplicate top-level key", "policy: {version: v}\nlog: {}\nlog: {}\n",
       "t.yaml:3: log: duplicate key"},
      {"wrong type: integer", "server:\n  threads: many\npolicy: {version: v}\n",
       "t.yaml:2: server.threads: must be an integer in [1, 256]"},
      {"integer out of range", "server:\n  threads: 0\npolicy: {version: v}\n",
       "t.yaml:2: server.threads: must be an integer in [1, 256]"},
      {"audit checkpoint out of range",
       "audit:\n  checkpoint: {every_records: 0}\npolicy: {version: v}\n",
       "t.yaml:2: audit.checkpoint.every_records: must be an integer in [1, 1000000]"},
      {"audit checkpoint unknown key",
       "audit:\n  checkpoint: {every_minutes: 1}\npolicy: {version: v}\n",
       "t.yaml:2: audit.checkpoint.every_minutes: unknown key"},
      {"audit signing key inline", "audit: {signing_key: \"-----BEGIN\"}\npolicy: {version: v}\n",
       "t.yaml:1: audit.signing_key"},
      {"wrong type: mapping", "server: 8443\npolicy: {version: v}\n",
       "t.yaml:1: server: must be a mapping"},
      {"wrong type: bool", "server:\n  metrics_public: perhaps\npolicy: {version: v}\n",
       "t.yaml:2: server.metrics_public: must be true or false"},
      {"wrong type: list of strings", "policy:\n  version: v\n  roles:\n    r: {resources: x}\n",
       "t.yaml:4: policy.roles.r.resources: must be a list of strings"},
      {"max_body_bytes too small", "server: {max_body_bytes: 10}\npolicy: {version: v}\n",
       "t.yaml:1: server.max_body_bytes: must be an integer in [1024, 16777216]"},
      {"bad tier name", "policy:\n  version: v\n  tiers:\n    admin: {control: deny}\n",
       "t.yaml:4: policy.tiers.admin: unknown tier \"admin\""},
      {"bad default tier", "policy:\n  version: v\n  default_tier: high\n",
       "t.yaml:3: policy.default_tier: unknown tier \"high\""},
      {"bad control", "policy:\n  version: v\n  tiers:\n    read: {control: maybe}\n",
       "t.yaml:4: policy.tiers.read.control: unknown control \"maybe\""},
      {"approver role unknown",
       "policy:\n  version: v\n  tiers:\n    secret: {approvers: [\"role:ghost\"]}\n",
       "t.yaml:4: policy.tiers.secret.approvers: unknown role \"ghost\""},
      {"approver not role:",
       "policy:\n  version: v\n  roles: {m: {}}\n  tiers:\n"
       "    secret: {approvers: [m]}\n",
       "t.yaml:5: policy.tiers.secret.approvers: approvers must"},
      {"unknown role", "policy:\n  version: v\n  principals:\n    - id: a\n      roles: [ghost]\n",
       "t.yaml:5: policy.principals[0].roles: unknown role \"ghost\""},
      {"principal without roles", "policy:\n  version: v\n  principals:\n    - id: a\n",
       "t.yaml:4: policy.principals[0].roles: must list at least one role"},
      {"inline secret for seal_key", "seal_key: c2VjcmV0LXNlYWwta2V5\npolicy: {version: v}\n",
       "t.yaml:1: seal_key: secrets must be given as file:PATH or env:NAME references"},
      {"env: reference unset", "seal_key: env:JITBROKER_CONFIG_TEST_UNSET\npolicy: {version: v}\n",
       "t.yaml:1: seal_key: environment variable JITBROKER_CONFIG_TEST_UNSET is not set"},
      {"file: reference missing", "policy: {version: v}\nseal_key: file:missing.key\n",
       "t.yaml:2: seal_key: cannot read secret file"},
      {"file: reference empty", "policy: {version: v}\nseal_key: file:empty.key\n",
       "t.yaml:2: seal_key: secret file"},
      // An endless file is refused after a bounded read, not read until
      // memory runs out (found by fuzz/config_fuzz.cc's review).
      {"file: reference endless", "policy: {version: v}\nseal_key: file:/dev/zero\n",
       "t.yaml:2: seal_key: cannot read secret file /dev/zero: larger than 1048576 bytes"},
      {"api_key_file endless",
       "policy:\n  version: v\n  roles: {r: {}}\n  principals:\n"
       "    - {id: a, roles: [r], api_key_file: /dev/zero}\n",
       "t.yaml:5: policy.principals[0].api_key_file: cannot read /dev/zero: larger than 1048576 "
       "bytes"},
      {"seal_key of the wrong length", "seal_key: file:short.key\npolicy: {version: v}\n",
       "t.yaml:1: seal_key: must be standard base64 of exactly 32 random bytes"},
      {"bad api key digest",
       "policy:\n  version: v\n  roles: {r: {}}\n  principals:\n"
       "    - id: a\n      roles: [r]\n      api_keys_sha256: [abc]\n",
       "t.yaml:7: policy.principals[0].api_keys_sha256: entry 0 must be a SHA-256 digest"},
      {"upper-case api key digest",
       "policy:\n  version: v\n  roles: {r: {}}\n  principals:\n"
       "    - id: a\n      roles: [r]\n      api_keys_sha256: "
       "[9F86D081884C7D659A2FEAA0C55AD015A3BF4F1B2B0B822CD15D6C15B0F00A08]\n",
       "t.yaml:7: policy.principals[0].api_keys_sha256: entry 0"},
      {"duplicate api key digest", dup_digest_yaml.c_str(),
       "t.yaml:6: policy.principals[1].api_keys_sha256: API key digest already used by principal "
       "\"a\""},
      {"duplicate principal id",
       "policy:\n  version: v\n  roles: {r: {}}\n  principals:\n"
       "    - {id: a, roles: [r]}\n    - {id: a, roles: [r]}\n",
       "t.yaml:6: policy.principals[1].id: duplicate principal id \"a\""},
      {"bad principal id",
       "policy:\n  version: v\n  roles: {r: {}}\n  principals:\n"
       "    - {id: \"a b\", roles: [r]}\n",
       "t.yaml:5: policy.principals[0].id: principal ids"},
      {"principals not a list", "policy:\n  version: v\n  principals: {id: a}\n",
       "t.yaml:3: policy.principals: must be a list of mappings"},
      {"bad listen address", "server:\n  listen: localhost\npolicy: {version: v}\n",
       "t.yaml:2: server.listen: must be HOST:PORT"},
      {"listen port out of range", "server:\n  listen: 127.0.0.1:70000\npolicy: {version: v}\n",
       "t.yaml:2: server.listen: must be HOST:PORT"},
      {"listen port not a number", "server:\n  listen: \"127.0.0.1:http\"\npolicy: {version: v}\n",
       "t.yaml:2: server.listen: must be HOST:PORT"},
      {"tls cert without key", "server:\n  tls:\n    cert: cert.pem\npolicy: {version: v}\n",
       "t.yaml:3: server.tls: cert and key must be given together"},
      {"tls file missing",
       "server:\n  tls: {cert: cert.pem, key: nokey.pem}\npolicy: {version: v}\n",
       "t.yaml:2: server.tls.key: file "},
      {"bad regex in tools",
       "policy:\n  version: v\n  tools:\n    - match: {tool: \"re:(\"}\n"
       "      tier: write\n",
       "t.yaml:4: policy.tools[0].match.tool: invalid regular expression"},
      {"bad regex in tool parameters",
       "policy:\n  version: v\n  tools:\n    - tier: write\n"
       "      match:\n        parameters:\n          command: \"re:[a-\"\n",
       "t.yaml:7: policy.tools[0].match.parameters.command: invalid regular expression"},
      {"tool rule with an unknown tier",
       "policy:\n  version: v\n  tools:\n"
       "    - {match: {tool: x}, tier: root}\n",
       "t.yaml:4: policy.tools[0].tier: unknown tier"},
      {"tool rule without tier", "policy:\n  version: v\n  tools:\n    - match: {tool: x}\n",
       "t.yaml:4: policy.tools[0].tier: is required"},
      {"tool rule matching nothing",
       "policy:\n  version: v\n  tools:\n"
       "    - {match: {}, tier: read}\n",
       "t.yaml:4: policy.tools[0].match: must name at least one"},
      {"tool rule unknown match key",
       "policy:\n  version: v\n  tools:\n"
       "    - {match: {tol: x}, tier: read}\n",
       "t.yaml:4: policy.tools[0].match.tol: unknown key"},
      {"missing policy.version", "policy:\n  default_tier: write\n",
       "t.yaml:2: policy.version: is required"},
      {"empty policy.version", "policy:\n  version: \"\"\n", "t.yaml:2: policy.version: must not"},
      {"missing policy", "server: {}\n", "t.yaml:1: policy: is required"},
      {"postgres replica id",
       "store:\n  postgres: {dsn: \"env:PG\", replica_id: \"a b\"}\npolicy: {version: v}\n",
       "t.yaml:2: store.postgres.replica_id: must be 1-64 of a-z A-Z 0-9 . _ -"},
      {"postgres store without dsn", "store:\n  postgres: {pool_size: 4}\npolicy: {version: v}\n",
       "t.yaml:2: store.postgres.dsn: is required"},
      {"postgres pool size",
       "store:\n  postgres: {dsn: \"env:PG\", pool_size: 0}\npolicy: {version: v}\n",
       "t.yaml:2: store.postgres.pool_size: must be an integer in [1, 1000]"},
      {"postgres unknown key",
       "store:\n  postgres: {dsn: \"env:PG\", pool: 4}\npolicy: {version: v}\n",
       "t.yaml:2: store.postgres.pool: unknown key"},
      {"two stores",
       "store:\n  sqlite: {path: a.db}\n  postgres: {dsn: \"env:PG\"}\npolicy: {version: v}\n",
       "t.yaml:2: store: give one of sqlite or postgres, not both"},
      {"role unknown key", "policy:\n  version: v\n  roles:\n    r: {max_teir: pr}\n",
       "t.yaml:4: policy.roles.r.max_teir: unknown key"},
      {"role bad tier", "policy:\n  version: v\n  roles:\n    r: {max_tier: everything}\n",
       "t.yaml:4: policy.roles.r.max_tier: unknown tier"},
      {"role names an unconfigured issuer",
       "policy:\n  version: v\n  roles:\n    r:\n      issuers: [github]\n",
       "t.yaml:5: policy.roles.r.issuers: unknown issuer \"github\""},
      {"role resource regex", "policy:\n  version: v\n  roles:\n    r: {resources: [\"re:.*\"]}\n",
       "t.yaml:4: policy.roles.r.resources: resource patterns are globs"},
      {"issuer without type", "policy: {version: v}\nissuers:\n  x: {algorithm: ES256}\n",
       "t.yaml:3: issuers.x.type: is required"},
      {"bad issuer name", "policy: {version: v}\nissuers:\n  Bad.Name: {type: jwt}\n",
       "t.yaml:3: issuers.Bad.Name: issuer names must match"},
      {"session default above max",
       "sessions:\n  max_ttl_seconds: 600\n  default_ttl_seconds: 900\npolicy: {version: v}\n",
       "t.yaml:3: sessions.default_ttl_seconds: must not exceed max_ttl_seconds"},
      {"bad log level", "log: {level: loud}\npolicy: {version: v}\n",
       "t.yaml:1: log.level: must be one of"},
      {"anomaly must be a list", "anomaly: {rule: x}\npolicy: {version: v}\n",
       "t.yaml:1: anomaly: must be a list"},
      {"invalid YAML", "policy:\n  version: [v\n", "t.yaml:3: invalid YAML"},
      {"not a mapping", "- a\n- b\n", "t.yaml:1: the configuration must be a mapping"},
      {"four_eyes cannot be turned off",
       "policy:\n  version: v\n  tiers:\n    secret: {four_eyes: false}\n",
       "t.yaml:4: policy.tiers.secret.four_eyes: four-eyes cannot be turned off"},
      {"unknown self_approval",
       "policy:\n  version: v\n  tiers:\n    secret: {self_approval: always}\n",
       "t.yaml:4: policy.tiers.secret.self_approval: unknown value \"always\""},
      {"pending bound out of range",
       "approvals:\n  max_pending_per_session: 0\npolicy: {version: v}\n",
       "t.yaml:2: approvals.max_pending_per_session: must be an integer in [1, 10000]"},
      {"unknown limits key", "limits:\n  grants_per_agent: {}\npolicy: {version: v}\n",
       "t.yaml:2: limits.grants_per_agent: unknown key"},
      {"rate not a number",
       "limits:\n  grants_per_session:\n    rate_per_second: fast\npolicy: {version: v}\n",
       "t.yaml:3: limits.grants_per_session.rate_per_second: must be a number in [0.001, 1000000]"},
      {"rate zero", "limits:\n  grants_per_session: {rate_per_second: 0}\npolicy: {version: v}\n",
       "t.yaml:2: limits.grants_per_session.rate_per_second: must be a number"},
      {"rate infinite",
       "limits:\n  grants_per_principal: {rate_per_second: inf}\npolicy: {version: v}\n",
       "t.yaml:2: limits.grants_per_principal.rate_per_second: must be a number"},
      {"burst zero", "limits:\n  grants_per_session: {burst: 0}\npolicy: {version: v}\n",
       "t.yaml:2: limits.grants_per_session.burst: must be an integer in [1, 1000000]"},
      {"tier max_ttl out of range",
       "policy:\n  version: v\n  tiers:\n"
       "    secret: {max_ttl_seconds: 0}\n",
       "t.yaml:4: policy.tiers.secret.max_ttl_seconds: must be an integer in [1, 86400]"},
      {"role scopes not a list", "policy:\n  version: v\n  roles:\n    r: {scopes: read}\n",
       "t.yaml:4: policy.roles.r.scopes: must be a list of strings"},
      {"role scope with a space", "policy:\n  version: v\n  roles:\n    r: {scopes: [\"a b\"]}\n",
       "t.yaml:4: policy.roles.r.scopes: scope patterns are OAuth scope tokens"},
      {"role scope regex", "policy:\n  version: v\n  roles:\n    r: {scopes: [\"re:.*\"]}\n",
       "t.yaml:4: policy.roles.r.scopes: scope patterns are globs"},
      {"bad argv pattern",
       "policy:\n  version: v\n  tools:\n    - tier: write\n"
       "      match:\n        parameters:\n          command: \"argv:rm r\"\n",
       "t.yaml:7: policy.tools[0].match.parameters.command: argv: pattern: options are written"},
      {"argv pattern outside parameters",
       "policy:\n  version: v\n  tools:\n    - {match: {tool: \"argv:rm\"}, tier: write}\n",
       "t.yaml:4: policy.tools[0].match.tool: argv: patterns are for parameters only"},
      {"bad parameter-name regex",
       "policy:\n  version: v\n  tools:\n    - tier: write\n"
       "      match:\n        parameters:\n          \"re:(\": x\n",
       "t.yaml:7: policy.tools[0].match.parameters.re:(: invalid regular expression"},
      {"ignore_case not a bool",
       "policy:\n  version: v\n  tools:\n    - {match: {tool: x}, tier: write, ignore_case: yes "
       "please}\n",
       "t.yaml:4: policy.tools[0].ignore_case: must be true or false"},
      {"bad scopes regex in tools",
       "policy:\n  version: v\n  tools:\n    - {match: {scopes: \"re:(\"}, tier: write}\n",
       "t.yaml:4: policy.tools[0].match.scopes: invalid regular expression"},
  };
  CHECK(cases.size() >= 20);
  for (const BadConfig& c : cases) {
    CAPTURE(c.name);
    Result<Config> r = LoadConfigText(c.yaml, dir.File("t.yaml"));
    REQUIRE_FALSE(r.has_value());
    CHECK(r.error().code == ErrorCode::kInvalidArgument);
    CHECK(r.error().Reason() == "invalid_config");
    const std::string& msg = r.error().message;
    CAPTURE(msg);
    // Messages name the file as given, then the line and the key path.
    CHECK(msg.find(dir.path().string() + "/" + c.expected) == 0);
    CHECK(msg.find("c2VjcmV0LXNlYWwta2V5") == std::string::npos);  // never echo a secret
  }
}

TEST_CASE("Config: LoadPolicy alone (reload path) checks duplicates and strictness") {
  TempDir dir;
  YAML::Node root = YAML::Load("version: v2\nroles: {r: {}}\nroles: {s: {}}\n");
  Section s(root, std::make_shared<const std::string>("p.yaml"), "policy");
  Result<std::shared_ptr<const Policy>> p = LoadPolicy(s);
  REQUIRE_FALSE(p.has_value());
  CHECK(p.error().message == "p.yaml:3: policy.roles: duplicate key");

  YAML::Node ok = YAML::Load(
      "version: v2\nroles: {r: {max_tier: write}}\n"
      "principals: [{id: x, roles: [r]}]\n");
  Section s2(ok, std::make_shared<const std::string>(dir.File("p.yaml")), "policy");
  Result<std::shared_ptr<const Policy>> p2 = LoadPolicy(s2);
  REQUIRE(p2.has_value());
  CHECK((*p2)->version == "v2");
  CHECK((*p2)->roles.at("r").max_tier == Tier::kWrite);
}

TEST_CASE("Section: strict accessors") {
  YAML::Node n = YAML::Load(
      "a: 5\nb: text\nc: [x, y]\nd: {e: 1}\nf: true\ng: -3\nh: [1, [2]]\n"
      "i: 0x10\nj: ~\n");
  Section s(n, std::make_shared<const std::string>("s.yaml"), "root");
  CHECK(s.line() == 1);
  CHECK(s.Has("a"));
  CHECK_FALSE(s.Has("z"));
  CHECK(**s.OptInt("a", 0, 10) == 5);
  CHECK_FALSE(s.OptInt("a", 6, 10).has_value());
  CHECK(**s.OptInt("g", -5, 0) == -3);
  CHECK_FALSE(s.OptInt("i", 0, 100).has_value());  // no hex, no YAML 1.1 magic
  CHECK(*s.String("b") == "text");
  CHECK_FALSE(s.String("c").has_value());
  CHECK_FALSE(s.String("j").has_value());  // null is absent
  CHECK_FALSE(s.OptString("j")->has_value());
  CHECK((*s.StringList("c") == std::vector<std::string>{"x", "y"}));
  Result<std::vector<std::string>> nested = s.StringList("h");
  REQUIRE_FALSE(nested.has_value());
  CHECK(nested.error().message == "s.yaml:7: root.h[1]: must be a string");
  CHECK(**s.OptBool("f"));
  Result<std::optional<Section>> d = s.OptSection("d");
  REQUIRE(d.has_value());
  REQUIRE(d->has_value());
  CHECK((*d)->path() == "root.d");
  CHECK((*d)->line() == 4);
  CHECK((*d)->Err("e", "bad").message == "s.yaml:4: root.d.e: bad");
  CHECK(s.Err("", "whole").message == "s.yaml:1: root: whole");
  CHECK(s.CheckNoUnknownKeys().has_value());  // every key above was asked for
  Section fresh(n, std::make_shared<const std::string>("s.yaml"), "");
  fresh.MarkKnown("a");
  Status unknown = fresh.CheckNoUnknownKeys();
  REQUIRE_FALSE(unknown.has_value());
  CHECK(unknown.error().message == "s.yaml:2: b: unknown key");
}

}  // namespace
}  // namespace jitbroker::config
