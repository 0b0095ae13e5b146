// Unit tests for `argv:` patterns (include/jitbroker/policy.h ArgvPattern)
// and the shell reader under them (broker/policy/shell_words.h): issue #10,
// finding 5 (the shipped rm rule was easy to evade).
#include <chrono>
#include <string>
#include <vector>

#include <doctest/doctest.h>
#include <nlohmann/json.hpp>

#include "broker/policy/shell_words.h"
#include "jitbroker/policy.h"

namespace jitbroker {
namespace {

ArgvPattern P(const std::string& pattern) {
  Result<ArgvPattern> p = ArgvPattern::Parse(pattern);
  REQUIRE_MESSAGE(p.has_value(), (p ? "" : p.error().ToString()));
  return *p;
}

std::vector<std::string> Texts(const shell::SimpleCommand& cmd) {
  std::vector<std::string> out;
  for (const shell::Word& w : cmd) {
    out.push_back(w.text);
  }
  return out;
}

TEST_CASE("shell::Split: words, quotes, separators and opaque words") {
  struct Case {
    const char* input;
    std::vector<std::vector<std::string>> commands;
  };
  const Case cases[] = {
      {"rm  -rf /", {{"rm", "-rf", "/"}}},
      {" \trm -rf /\n", {{"rm", "-rf", "/"}}},
      {"ls; rm -rf /", {{"ls"}, {"rm", "-rf", "/"}}},
      {"a && b || c | d & e", {{"a"}, {"b"}, {"c"}, {"d"}, {"e"}}},
      {"(cd x; rm -r y)", {{"cd", "x"}, {"rm", "-r", "y"}}},
      {"{ rm -r y; }", {{"rm", "-r", "y"}}},
      {"'r'\"m\" -r", {{"rm", "-r"}}},
      {"\\rm -r", {{"rm", "-r"}}},
      {"r\\\nm -r", {{"rm", "-r"}}},
      {"echo 'a;b' \"c|d\"", {{"echo", "a;b", "c|d"}}},
      {"echo \"a\\\"b\"", {{"echo", "a\"b"}}},
      {"echo 'unterminated", {{"echo", "unterminated"}}},
      {"rm -rf / 2>/dev/null", {{"rm", "-rf", "/", "/dev/null"}}},
      {">out rm -r x", {{"out", "rm", "-r", "x"}}},
      {"x=`rm -r /`", {{"x="}, {"rm", "-r", "/"}}},
      {"find . -exec rm {} \\;", {{"find", ".", "-exec", "rm", "{}", ";"}}},
  };
  for (const Case& c : cases) {
    CAPTURE(c.input);
    shell::Script s = shell::Split(c.input);
    REQUIRE(s.commands.size() == c.commands.size());
    for (size_t i = 0; i < c.commands.size(); ++i) {
      CHECK(Texts(s.commands[i]) == c.commands[i]);
    }
  }
  // Redirection targets are marked; fds are dropped.
  shell::Script r = shell::Split(">out rm 2>&1");
  REQUIRE(r.commands.size() == 1);
  REQUIRE(r.commands[0].size() == 3);
  CHECK(r.commands[0][0].redirect_target);
  CHECK_FALSE(r.commands[0][1].redirect_target);
  CHECK(r.commands[0][2].text == "1");
  // Opaque: expansions, globs, brace lists; not "{}" or quoted globs.
  struct Opaque {
    const char* input;
    bool opaque;
  };
  const Opaque opaque[] = {{"$RM", true},    {"${RM}", true}, {"\"$x\"", true}, {"$'\\x72m'", true},
                           {"r?", true},     {"[r]m", true},  {"*", true},      {"{rm,-rf}", true},
                           {"{1..3}", true}, {"{}", false},   {"'*'", false},   {"\"$\"x", true},
                           {"rm", false},    {"'$x'", false}};
  for (const Opaque& c : opaque) {
    CAPTURE(c.input);
    shell::Script s = shell::Split(c.input);
    REQUIRE(s.commands.size() == 1);
    REQUIRE(s.commands[0].size() == 1);
    CHECK(s.commands[0][0].opaque == c.opaque);
  }
  // Quoted command substitutions: part of the word, their bodies reported.
  struct Sub {
    const char* input;
    std::vector<std::string> bodies;  // "…$" = to the end of the input
    std::vector<std::string> words;
  };
  const Sub subs[] = {
      {"echo \"$(rm -r /)\" `x`", {"rm -r /"}, {"echo", "$(rm -r /)"}},
      {"echo \"a $(ls \")\") b\" c", {"ls \")\""}, {"echo", "a $(ls \")\") b", "c"}},
      {"echo \"$(a (b) c)\"", {"a (b) c"}, {"echo", "$(a (b) c)"}},
      {"echo \"`rm -r /`\"", {"rm -r /"}, {"echo", "`rm -r /`"}},
      {"echo \"$(echo \"$(rm -r /)\")\"",
       {"echo \"$(rm -r /)\""},
       {"echo", "$(echo \"$(rm -r /)\")"}},
      {"echo \"$(case x in a) rm -r /;; esac)\"", {"case x in a) rm -r /;; esac)\"$"}, {}},
      {"echo \"$(unterminated", {"unterminated$"}, {}},
  };
  for (const Sub& c : subs) {
    const std::string input = c.input;
    CAPTURE(input);
    shell::Script s = shell::Split(input);
    REQUIRE(s.substitutions.size() == c.bodies.size());
    for (size_t i = 0; i < c.bodies.size(); ++i) {
      const shell::Substitution& sub = s.substitutions[i];
      const std::string body = sub.end == std::string_view::npos
                                   ? input.substr(sub.start) + "$"
                                   : input.substr(sub.start, sub.end - sub.start);
      CHECK(body == c.bodies[i]);
    }
    if (!c.words.empty()) {
      REQUIRE_FALSE(s.commands.empty());
      CHECK(Texts(s.commands[0]) == c.words);
      CHECK(s.commands[0][1].opaque);
    }
  }
}

TEST_CASE("shell helpers: Basename, IsAssignment, IsReservedWord") {
  CHECK(shell::Basename("/bin/rm") == "rm");
  CHECK(shell::Basename("rm") == "rm");
  CHECK(shell::Basename("dir/") == "");
  CHECK(shell::IsAssignment("X=1"));
  CHECK(shell::IsAssignment("_a9+=1"));
  CHECK(shell::IsAssignment("a[3]=x"));
  CHECK_FALSE(shell::IsAssignment("=x"));
  CHECK_FALSE(shell::IsAssignment("9a=x"));
  CHECK_FALSE(shell::IsAssignment("rm"));
  CHECK(shell::IsReservedWord("then"));
  CHECK(shell::IsReservedWord("!"));
  CHECK_FALSE(shell::IsReservedWord("rm"));
}

TEST_CASE("ArgvPattern: what argv:rm -r|-R|--recursive catches and what it leaves") {
  const ArgvPattern rm = P("argv:rm -r|-R|--recursive");
  struct Case {
    const char* command;
    bool matches;
  };
  const Case cases[] = {
      // The evasions of the old "re:^rm -rf.*" rule.
      {"rm -rf /", true},
      {"rm  -rf /", true},
      {"rm -fr /", true},
      {"/bin/rm -rf /", true},
      {"rm -r -f /", true},
      {" rm -rf /", true},
      {"rm -rf /\n", true},
      {"true\nrm -rf /", true},
      // Spellings.
      {"rm -R /", true},
      {"rm --recursive /", true},
      {"rm --rec /", true},  // getopt_long abbreviation
      {"rm --recursive=always /", true},
      {"rm / -r", true},  // GNU permutes options
      {"RM -r /", true},  // case-insensitive file systems
      {"\\rm -r /", true},
      {"'rm' -r /", true},
      {"r\"m\" -r /", true},
      {"rm -v -rf /", true},
      {"rm -rf -- /", true},
      // Command lists and groupings.
      {"ls; rm -r /", true},
      {"ls && rm -r /", true},
      {"false || rm -r /", true},
      {"ls | rm -r /", true},
      {"(rm -r /)", true},
      {"{ rm -r /; }", true},
      {"if true; then rm -r /; fi", true},
      {"for f in a; do rm -r $f; done", true},
      {"! rm -r /", true},
      {"X=1 Y=2 rm -r /", true},
      {">log rm -r /", true},
      // Wrappers and substitutions.
      {"sudo rm -rf /", true},
      {"sudo -u root rm -rf /", true},
      {"env -i rm -r /", true},
      {"nice -n 5 timeout 10 rm -r /", true},
      {"xargs rm -r < list", true},
      {"find / -exec rm -rf {} +", true},
      {"kubectl exec pod -- rm -rf /", true},
      {"echo $(rm -r /)", true},
      {"echo `rm -r /`", true},
      {"echo \"$(rm -r /)\"", true},
      {"echo \"`rm -r /`\"", true},
      {"x=$(rm -r /)", true},
      // Interpreters: their words are read as scripts.
      {"sh -c 'rm -rf /'", true},
      {"bash -lc \"rm -rf /\"", true},
      {"echo 'rm -rf /' | sh", true},
      {"bash <<< 'rm -rf /'", true},
      {"ssh host 'rm -rf /'", true},
      {"eval 'rm -rf /'", true},
      {"python3 -c \"import os; os.system('rm -rf /')\"", true},
      {"sh -c \"sh -c 'rm -rf /'\"", true},
      // Run-time words fail closed.
      {"$RM -rf /", true},
      {"RM=rm; $RM -r /", true},
      {"${RM} -r /", true},
      {"rm $FLAGS /", true},
      {"rm \"$opts\" /", true},
      {"$CMD", true},
      {"sudo $CMD", true},
      {"/bin/r? -r /", true},
      {"{rm,-rf,/}", true},
      {"rm${IFS}-rf${IFS}/", true},
      {"$'\\x72\\x6d' -rf /", true},
      // Not a recursive rm.
      {"rm file.txt", false},
      {"rm -f file.txt", false},
      {"rm -- -r", false},  // after "--" it is a file name
      {"ls -R /", false},
      {"grep -r rm .", false},
      {"echo rm", false},
      {"git status", false},
      {"echo 'rm -rf /'", false},  // a string nobody runs
      {"git commit -m 'rm -rf build'", false},
      {"cd $HOME && ls", false},
      {"rmdir -p a/b", false},
      {"", false},
      // Over-approximations, by design.
      {"# rm -rf /", true},    // comments are not recognised
      {"echo rm -r x", true},  // rm anywhere in a command counts (sudo rm, xargs rm, ...)
      {"git rm -r dir", true},
      {"python3 -c \"print('rm -rf /')\"", true},  // an interpreter's strings are read
  };
  for (const Case& c : cases) {
    CAPTURE(c.command);
    CHECK(rm.MatchesCommandLine(c.command) == c.matches);
    CHECK(rm.Matches(nlohmann::json(c.command)) == c.matches);
  }
}

TEST_CASE("ArgvPattern: arrays are argv; objects and null fail closed") {
  const ArgvPattern rm = P("argv:rm -r -f");
  using nlohmann::json;
  struct Case {
    json value;
    bool matches;
  };
  const Case cases[] = {
      {json::array({"rm", "-rf", "/"}), true},
      {json::array({"/bin/rm", "-r", "-f", "/"}), true},
      {json::array({"rm", "-r", "/"}), false},  // -f missing
      {json::array({"sudo", "rm", "-fr", "/"}), true},
      {json::array({"sh", "-c", "rm -rf /"}), true},
      {json::array({"bash", "-lc", "cd /; rm -fr ."}), true},
      {json::array({"rm", json::object(), "/"}), true},  // unreadable element
      {json::array({"rm", json::array({"-rf"}), "/"}), true},
      {json::array({"rm", "-rf -- /"}), true},  // no shell: one word holding -r and -f
      {json::array({"ls", "-rf"}), false},
      {json::array({std::string("rm\0x", 4), "-rf", "/"}), true},  // execve() sees "rm"
      {json(std::string("r\0m -rf /", 9)), true},
      {json::array(), false},
      {json::object(), true},
      {json(nullptr), true},
      {json(3), false},
      {json(true), false},
  };
  for (const Case& c : cases) {
    CAPTURE(c.value.dump());
    CHECK(rm.Matches(c.value) == c.matches);
  }
}

TEST_CASE("ArgvPattern: bounded work; what cannot be read counts as a match") {
  const ArgvPattern rm = P("argv:rm -r");
  CHECK(rm.MatchesCommandLine(std::string(8192, 'a')) == false);
  CHECK(rm.MatchesCommandLine(std::string(8193, 'a')) == true);  // over the input bound
  // Nested sh -c scripts: read down to six levels, deeper fails closed.
  auto nest = [](std::string script, int levels) {
    for (int i = 0; i < levels; ++i) {
      std::string quoted;
      for (char c : script) {
        if (c == '"' || c == '\\') {
          quoted += '\\';
        }
        quoted += c;
      }
      script = "sh -c \"" + quoted + "\"";
    }
    return script;
  };
  CHECK(rm.MatchesCommandLine(nest("rm -r /", 5)));
  CHECK_FALSE(rm.MatchesCommandLine(nest("ls -l /", 5)));
  CHECK(rm.MatchesCommandLine(nest("ls -l /", 10)));
  // Quoted substitutions in a row are each read once, not nested.
  std::string row = "echo";
  for (int i = 0; i < 20; ++i) {
    row += " \"$(date)\"";
  }
  CHECK_FALSE(rm.MatchesCommandLine(row));
  CHECK(rm.MatchesCommandLine(row + " \"$(rm -r /)\""));
  // Quoted substitutions are read once each: many small ones are cheap...
  std::string many;
  for (int i = 0; i < 400; ++i) {
    many += "echo \"$(ls)\" ";
  }
  const auto start = std::chrono::steady_clock::now();
  CHECK_FALSE(rm.MatchesCommandLine(many));
  // ...but bodies read to the end of the input (a `case` inside) exhaust the
  // work budget: fail closed, and fast.
  std::string cases;
  for (int i = 0; i < 300; ++i) {
    cases += "echo \"$(case x)\" ";
  }
  CHECK(rm.MatchesCommandLine(cases));
  std::string pathological(8000, '(');
  CHECK_FALSE(rm.MatchesCommandLine(pathological));
  std::string quotes(8000, '"');
  CHECK_FALSE(rm.MatchesCommandLine(quotes));
  std::string words;
  for (int i = 0; i < 2000; ++i) {
    words += "rm ";
  }
  CHECK(rm.MatchesCommandLine(words + "-r"));  // more program positions than examined
  CHECK(std::chrono::steady_clock::now() - start < std::chrono::seconds(2));
  CHECK(rm.Matches(nlohmann::json::array()) == false);
  nlohmann::json big = nlohmann::json::array();
  for (int i = 0; i < 1025; ++i) {
    big.push_back("x");
  }
  CHECK(rm.Matches(big));
}

TEST_CASE("ArgvPattern: parsing") {
  CHECK(P("argv:rm").MatchesCommandLine("rm x"));
  CHECK(P("argv:rm|unlink").MatchesCommandLine("unlink x"));
  CHECK(P("argv:rm -rf").MatchesCommandLine("rm -r -f x"));
  CHECK_FALSE(P("argv:rm -rf").MatchesCommandLine("rm -r x"));
  // A long option matches its abbreviations, not longer names.
  CHECK_FALSE(P("argv:git --force|-f").MatchesCommandLine("git push --force-with-lease"));
  CHECK(P("argv:git --force|-f").MatchesCommandLine("git push --fo"));
  for (const char* bad :
       {"argv:", "argv:  ", "argv:-r", "argv:/bin/rm", "argv:rm r", "argv:rm -", "argv:rm --",
        "argv:rm -r|x", "argv:rm -r|-", "argv:rm -r!|-f", "argv:r m|"}) {
    CAPTURE(bad);
    Result<ArgvPattern> p = ArgvPattern::Parse(bad);
    REQUIRE_FALSE(p.has_value());
    CHECK(p.error().Reason() == "invalid_pattern");
  }
}

}  // namespace
}  // namespace jitbroker
