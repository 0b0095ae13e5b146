// The tool rules shipped in conf/dev.yaml (the example every deployment
// starts from) held to the evasions of issue #10, finding 5: the old
// `re:^rm -rf.*` rule missed all of these. The real file is loaded.
#include <filesystem>
#include <string>

#include <doctest/doctest.h>
#include <nlohmann/json.hpp>

#include "broker/config/config.h"
#include "jitbroker/policy.h"

namespace jitbroker {
namespace {

namespace fs = std::filesystem;

std::string RepoRoot() {
  // tests/unit/shipped_rules_test.cc -> repository root (a relative __FILE__
  // resolves against the working directory, as in config_test.cc).
  fs::path self = fs::absolute(fs::path(__FILE__)).lexically_normal();
  return self.parent_path().parent_path().parent_path().string();
}

std::shared_ptr<const Policy> ShippedPolicy() {
  Result<config::Config> c = config::LoadConfigFile(RepoRoot() + "/conf/dev.yaml");
  REQUIRE_MESSAGE(c.has_value(), (c ? "" : c.error().ToString()));
  return c->policy;
}

struct Case {
  const char* tool;
  const char* parameters;  // JSON
  Tier tier;
};

Tier Classify(const Policy& policy, const Case& c, std::string* rule) {
  GrantRequest req;
  req.tool = c.tool;
  req.operation = "exec";
  req.resource = "host://dev";
  req.parameters = nlohmann::json::parse(c.parameters);
  return ClassifyTier(req, {}, policy, rule);
}

TEST_CASE("Shipped rules: every listed evasion of the rm rule is still destructive") {
  const std::shared_ptr<const Policy> policy = ShippedPolicy();
  const Case cases[] = {
      // The finding's list.
      {"shell.exec", R"({"command":"rm -rf /"})", Tier::kDestructive},
      {"shell.exec", R"({"command":"rm  -rf /"})", Tier::kDestructive},
      {"shell.exec", R"({"command":"rm -fr /"})", Tier::kDestructive},
      {"shell.exec", R"({"command":"/bin/rm -rf /"})", Tier::kDestructive},
      {"shell.exec", R"({"command":"rm -r -f /"})", Tier::kDestructive},
      {"shell.exec", R"({"command":" rm -rf /"})", Tier::kDestructive},
      {"shell.exec", R"({"command":"rm -rf /\n"})", Tier::kDestructive},
      {"shell.exec", R"({"command":"echo hi\nrm -rf /"})", Tier::kDestructive},
      {"shell.exec", R"({"command":["rm","-rf","/"]})", Tier::kDestructive},
      {"shell.exec", R"({"cmd":"rm -rf /"})", Tier::kDestructive},
      {"shell.exec", R"({"Command":"rm -rf /"})", Tier::kDestructive},
      {"Shell.exec", R"({"command":"rm -rf /"})", Tier::kDestructive},
      {"bash", R"({"command":"rm -rf /"})", Tier::kDestructive},
      // Beyond the list: other spellings, wrappers, interpreters, run-time words.
      {"Bash", R"({"input":"rm -R /"})", Tier::kDestructive},
      {"run_terminal_cmd", R"({"text":"rm --recursive --force /"})", Tier::kDestructive},
      {"computer.execute", R"({"x":"cd / && sudo rm -rf *"})", Tier::kDestructive},
      {"mcp.call", R"({"script":"bash -c 'rm -rf /'"})", Tier::kDestructive},
      {"mcp.call", R"({"ARGS":["sh","-c","rm -rf ~"]})", Tier::kDestructive},
      {"mcp.call", R"({"command_line":"X=$(echo rm); $X -rf /"})", Tier::kDestructive},
      {"mcp.call", R"({"command":{"argv":["rm","-rf","/"]}})", Tier::kDestructive},
      {"mcp.call", R"({"command":null})", Tier::kDestructive},
      {"mcp.call", R"({"cmd":"find / -exec rm -rf {} +"})", Tier::kDestructive},
      {"shell.exec", R"({"command":"ls; r\"m\" -r /"})", Tier::kDestructive},
      // Case-insensitive tool names for the other shipped rules.
      {"GitHub.Merge_Pull_Request", "{}", Tier::kMergeDeploy},
      {"GitHub.Delete_Repo", "{}", Tier::kDestructive},
      {"Secrets.Read", "{}", Tier::kSecret},
  };
  for (const Case& c : cases) {
    CAPTURE(c.tool);
    CAPTURE(c.parameters);
    std::string rule;
    CHECK(TierName(Classify(*policy, c, &rule)) == TierName(c.tier));
  }
}

TEST_CASE("Shipped rules: ordinary commands and text are not destructive") {
  const std::shared_ptr<const Policy> policy = ShippedPolicy();
  const Case cases[] = {
      {"shell.exec", R"({"command":"ls -la"})", Tier::kWrite},
      {"shell.exec", R"({"command":"rm build/app.o"})", Tier::kWrite},
      {"shell.exec", R"({"command":"rm -f build/app.o"})", Tier::kWrite},
      {"shell.exec", R"({"command":"grep -r TODO src"})", Tier::kWrite},
      {"shell.exec", R"({"command":["ls","-R","/"]})", Tier::kWrite},
      {"shell.exec", R"({"cwd":"/tmp","command":"make -j4"})", Tier::kWrite},
      {"github.create_issue", R"({"body":"rm -rf / is dangerous"})", Tier::kWrite},
      {"github.push", R"({"message":"rm -r the old fixtures"})", Tier::kWrite},
      {"mcp.search", R"({"query":"how does rm -r work"})", Tier::kWrite},
  };
  for (const Case& c : cases) {
    CAPTURE(c.tool);
    CAPTURE(c.parameters);
    std::string rule;
    CHECK(TierName(Classify(*policy, c, &rule)) == TierName(c.tier));
  }
}

}  // namespace
}  // namespace jitbroker
