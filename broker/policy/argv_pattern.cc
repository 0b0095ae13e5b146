// `argv:` patterns of tool rules (include/jitbroker/policy.h ArgvPattern,
// docs/configuration.md "argv: patterns"): which programs a parameter value
// could run, with which options. Tool rules raise tiers, so every doubt is
// a match: run-time expansions, nesting beyond the budget, over-long input.
//
// Cost: the input is at most kMaxInput bytes; every nested reading (a
// `sh -c` script, a quoted $(…), a word handed to an interpreter) draws on
// one budget of kMaxWork bytes and kMaxDepth levels, so the work per value is
// linear in kMaxWork, whatever the input.
#include <algorithm>
#include <cctype>
#include <cstddef>
#include <iterator>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "broker/common/text.h"
#include "broker/policy/shell_words.h"
#include "jitbroker/policy.h"

namespace jitbroker {

namespace {

constexpr size_t kMaxInput = 8192;               // longer values count as a match
constexpr size_t kMaxWork = size_t{128} * 1024;  // bytes read across nested scripts
constexpr int kMaxDepth = 6;                     // nested scripts
constexpr size_t kMaxCandidates = 64;            // program positions per simple command
constexpr size_t kMaxArrayWords = 1024;          // elements of an argv array
constexpr size_t kMaxTerms = 16;
constexpr size_t kMaxAlternatives = 16;
constexpr size_t kMaxNameLength = 64;

// Programs that run other programs given as their later words: a run-time
// word after one of them may be the program it runs.
constexpr std::string_view kWrappers[] = {
    "sudo",     "doas",        "env",     "command", "builtin", "exec",      "nohup",   "nice",
    "ionice",   "chrt",        "taskset", "time",    "timeout", "stdbuf",    "setsid",  "unbuffer",
    "xargs",    "parallel",    "find",    "watch",   "chroot",  "su",        "runuser", "ssh",
    "docker",   "podman",      "kubectl", "nsenter", "busybox", "strace",    "ltrace",  "flock",
    "fakeroot", "systemd-run", "script",  "sg",      "eval",    "caffeinate"};

// Programs that run text as code: when one appears in a command line, each
// of its words is also read as a shell script (`sh -c '…'`, `echo '…' | sh`,
// `bash <<< '…'`, `ssh host '…'`, `python -c "os.system('…')"`).
constexpr std::string_view kInterpreters[] = {
    "sh",   "bash",     "dash",   "zsh",     "ksh",     "mksh", "ash",   "yash",   "fish",  "csh",
    "tcsh", "busybox",  "eval",   "su",      "runuser", "ssh",  "watch", "script", "flock", "sg",
    "env",  "parallel", "python", "python2", "python3", "perl", "ruby",  "node",   "php",   "awk"};

template <size_t N>
bool In(std::string_view word, const std::string_view (&list)[N]) {
  return std::find(std::begin(list), std::end(list), word) != std::end(list);
}

bool In(std::string_view word, const std::vector<std::string>& list) {
  return std::find(list.begin(), list.end(), word) != list.end();
}

std::string LowerBasename(std::string_view word) { return text::AsciiLower(shell::Basename(word)); }

// Words worth reading as a script: something a shell would split.
bool LooksLikeScript(std::string_view w) {
  return w.find_first_of(" \t\n;&|`()<>") != std::string_view::npos ||
         w.find("$(") != std::string_view::npos;
}

struct Budget {
  size_t work_left = kMaxWork;
};

bool WordHasFlag(std::string_view w, const ArgvPattern::FlagTerm& term) {
  if (w.size() >= 2 && w[0] == '-' && w[1] != '-') {
    for (char c : term.short_flags) {
      if (w.find(c, 1) != std::string_view::npos) {
        return true;
      }
    }
    return false;
  }
  if (w.size() > 2 && w.starts_with("--")) {
    std::string_view name = w.substr(2);
    name = name.substr(0, name.find('='));
    if (name.empty()) {
      return false;
    }
    // getopt_long accepts any unambiguous abbreviation: every prefix counts.
    for (const std::string& full : term.long_flags) {
      if (std::string_view(full).starts_with(name)) {
        return true;
      }
    }
  }
  return false;
}

class Reader {
 public:
  Reader(const std::vector<std::string>& programs, const std::vector<ArgvPattern::FlagTerm>& terms)
      : programs_(programs), terms_(terms) {}

  // Reads `buffer` as a shell script: its commands, the bodies of the
  // command substitutions quoted inside it (each read once; see
  // shell::Substitution), and, when an interpreter appears (or the buffer is
  // itself an interpreter's word), each of its words as a script of its own,
  // one level deeper.
  bool Script(std::string_view buffer, int depth, bool interpreted) {
    if (depth > kMaxDepth) {
      return true;  // nested deeper than is read: fail closed
    }
    struct Span {
      size_t start;
      size_t end;
    };
    std::vector<Span> pending = {{0, buffer.size()}};
    std::vector<size_t> seen = {0};
    while (!pending.empty()) {
      const Span span = pending.back();
      pending.pop_back();
      const std::string_view text = buffer.substr(span.start, span.end - span.start);
      if (text.size() > budget_.work_left) {
        return true;  // more than the budget: fail closed
      }
      budget_.work_left -= text.size();
      const shell::Script script = shell::Split(text);
      bool interpreter = interpreted;
      for (const shell::SimpleCommand& cmd : script.commands) {
        if (Command(cmd)) {
          return true;
        }
        interpreter = interpreter || std::any_of(cmd.begin(), cmd.end(), IsInterpreter);
      }
      if (interpreter && Words(script.commands, depth)) {
        return true;
      }
      for (const shell::Substitution& sub : script.substitutions) {
        const size_t start = span.start + sub.start;
        const size_t end = sub.end == std::string_view::npos ? span.end : span.start + sub.end;
        if (std::find(seen.begin(), seen.end(), start) == seen.end()) {
          seen.push_back(start);
          pending.push_back({start, end});
        }
      }
    }
    return false;
  }

  // An argv given as a list: its words run as they are; interpreters' words
  // are read as scripts.
  bool Argv(const shell::SimpleCommand& words) {
    if (Command(words)) {
      return true;
    }
    return std::any_of(words.begin(), words.end(), IsInterpreter) && Words({words}, 0);
  }

 private:
  static bool IsInterpreter(const shell::Word& w) {
    return !w.opaque && In(LowerBasename(w.text), kInterpreters);
  }

  // Each word that a shell would split, read as a script one level deeper.
  bool Words(const std::vector<shell::SimpleCommand>& commands, int depth) {
    for (const shell::SimpleCommand& cmd : commands) {
      for (const shell::Word& w : cmd) {
        if (LooksLikeScript(w.text) && Script(w.text, depth + 1, /*interpreted=*/true)) {
          return true;
        }
      }
    }
    return false;
  }

  bool IsProgram(const shell::Word& w) const {
    return !w.opaque && In(LowerBasename(w.text), programs_);
  }

  // One simple command: the program is the first word that is not an
  // assignment, a reserved word or a redirection's file; the pattern's
  // program also counts anywhere later (sudo rm, xargs rm, find -exec rm,
  // kubectl exec -- rm, git rm), and after a wrapper or a run-time program
  // any run-time word may be the program.
  bool Command(const shell::SimpleCommand& words) const {
    size_t first = 0;
    while (first < words.size() &&
           (words[first].redirect_target ||
            (!words[first].opaque && (shell::IsAssignment(words[first].text) ||
                                      shell::IsReservedWord(words[first].text))) ||
            (words[first].opaque && shell::IsAssignment(words[first].text)))) {
      ++first;
    }
    if (first >= words.size()) {
      return false;
    }
    const bool wrapped = words[first].opaque || In(LowerBasename(words[first].text), kWrappers);
    size_t candidates = 0;
    for (size_t i = first; i < words.size(); ++i) {
      const bool start = i == first ? (words[i].opaque || IsProgram(words[i]))
                                    : (IsProgram(words[i]) ||
                                       (wrapped && words[i].opaque && !words[i].redirect_target));
      if (!start) {
        continue;
      }
      if (++candidates > kMaxCandidates) {
        return true;
      }
      if (FlagsFrom(words, i)) {
        return true;
      }
    }
    return false;
  }

  // Every flag term is present among the words after `program` (up to a
  // literal "--"), or a run-time word there (or the program word itself)
  // could supply it.
  bool FlagsFrom(const shell::SimpleCommand& words, size_t program) const {
    if (terms_.empty()) {
      return true;
    }
    size_t end = program + 1;
    bool unknown = words[program].opaque;
    while (end < words.size() && !(words[end].text == "--" && !words[end].opaque)) {
      unknown = unknown || words[end].opaque;
      ++end;
    }
    if (unknown) {
      return true;
    }
    for (const ArgvPattern::FlagTerm& term : terms_) {
      bool found = false;
      for (size_t j = program + 1; j < end && !found; ++j) {
        found = WordHasFlag(words[j].text, term);
      }
      if (!found) {
        return false;
      }
    }
    return true;
  }

  const std::vector<std::string>& programs_;
  const std::vector<ArgvPattern::FlagTerm>& terms_;
  Budget budget_;
};

Error BadPattern(const std::string& what) {
  return InvalidArgument("invalid_pattern", "argv: pattern: " + what);
}

bool IsNameChar(char c) {
  return std::isalnum(static_cast<unsigned char>(c)) || c == '_' || c == '-' || c == '.' ||
         c == '+';
}

std::vector<std::string_view> SplitOn(std::string_view s, char sep) {
  std::vector<std::string_view> out;
  size_t start = 0;
  while (true) {
    const size_t pos = s.find(sep, start);
    out.push_back(
        s.substr(start, pos == std::string_view::npos ? std::string_view::npos : pos - start));
    if (pos == std::string_view::npos) {
      return out;
    }
    start = pos + 1;
  }
}

}  // namespace

Result<ArgvPattern> ArgvPattern::Parse(std::string_view pattern) {
  ArgvPattern out;
  out.pattern_ = std::string(pattern);
  std::string_view spec = pattern;
  if (spec.starts_with("argv:")) {
    spec.remove_prefix(5);
  }
  std::vector<std::string_view> terms;
  for (std::string_view t : SplitOn(spec, ' ')) {
    if (!t.empty()) {
      terms.push_back(t);
    }
  }
  if (terms.empty()) {
    return std::unexpected(BadPattern("a program name is required, e.g. \"argv:rm -r\""));
  }
  for (std::string_view program : SplitOn(terms[0], '|')) {
    if (program.empty() || program.size() > kMaxNameLength ||
        !std::all_of(program.begin(), program.end(), IsNameChar) || program.starts_with("-")) {
      return std::unexpected(
          BadPattern("program names are basenames of letters, digits and "
                     "_ - . + (alternatives separated by '|')"));
    }
    out.programs_.push_back(text::AsciiLower(program));
  }
  for (size_t i = 1; i < terms.size(); ++i) {
    std::string_view t = terms[i];
    const bool grouped =
        t.size() > 2 && t[0] == '-' && t[1] != '-' && t.find('|') == std::string_view::npos;
    if (grouped) {  // "-rf" = "-r -f"
      for (char c : t.substr(1)) {
        if (!std::isalnum(static_cast<unsigned char>(c))) {
          return std::unexpected(
              BadPattern("short options are letters or digits: " + std::string(t)));
        }
        out.terms_.push_back(FlagTerm{{c}, {}});
      }
      continue;
    }
    FlagTerm term;
    const std::vector<std::string_view> alternatives = SplitOn(t, '|');
    if (alternatives.size() > kMaxAlternatives) {
      return std::unexpected(BadPattern("at most 16 alternatives per option"));
    }
    for (std::string_view alt : alternatives) {
      if (alt.size() == 2 && alt[0] == '-' && std::isalnum(static_cast<unsigned char>(alt[1]))) {
        term.short_flags.push_back(alt[1]);
      } else if (alt.size() > 2 && alt.size() <= kMaxNameLength && alt.starts_with("--") &&
                 std::all_of(alt.begin() + 2, alt.end(), IsNameChar)) {
        term.long_flags.emplace_back(alt.substr(2));
      } else {
        return std::unexpected(BadPattern(
            "options are written -x (one letter) or --name, alternatives separated by '|': " +
            std::string(alt.substr(0, kMaxNameLength))));
      }
    }
    out.terms_.push_back(std::move(term));
  }
  if (out.terms_.size() > kMaxTerms) {
    return std::unexpected(BadPattern("at most 16 option terms"));
  }
  return out;
}

bool ArgvPattern::MatchesCommandLine(std::string_view command) const {
  if (command.size() > kMaxInput) {
    return true;
  }
  Reader reader(programs_, terms_);
  return reader.Script(command, 0, /*interpreted=*/false);
}

bool ArgvPattern::Matches(const nlohmann::json& value) const {
  if (value.is_string()) {
    return MatchesCommandLine(value.get_ref<const std::string&>());
  }
  if (value.is_number() || value.is_boolean()) {
    return MatchesCommandLine(value.dump());
  }
  if (!value.is_array()) {
    return true;  // an object or null: nothing to read, fail closed
  }
  if (value.size() > kMaxArrayWords) {
    return true;
  }
  shell::SimpleCommand words;
  size_t bytes = 0;
  for (const nlohmann::json& e : value) {
    shell::Word w;
    if (e.is_string()) {
      w.text = e.get<std::string>();
      w.opaque = w.text.find('\0') != std::string::npos;  // execve() stops at a NUL
    } else if (e.is_number() || e.is_boolean()) {
      w.text = e.dump();
    } else {
      w.opaque = true;  // a nested array or object: its value is unknown
    }
    bytes += w.text.size() + 1;
    if (bytes > kMaxInput) {
      return true;
    }
    words.push_back(std::move(w));
  }
  Reader reader(programs_, terms_);
  return reader.Argv(words);
}

}  // namespace jitbroker
