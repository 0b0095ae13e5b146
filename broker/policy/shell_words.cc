#include "broker/policy/shell_words.h"

#include <algorithm>
#include <array>
#include <cctype>

namespace jitbroker::shell {

namespace {

bool IsBlank(char c) { return c == ' ' || c == '\t' || c == '\r' || c == '\v' || c == '\f'; }

bool EndsCommand(char c) {
  return c == '\n' || c == ';' || c == '&' || c == '|' || c == '(' || c == ')' || c == '`';
}

bool IsRedirect(char c) { return c == '<' || c == '>'; }

// Whether the character at `i` ends a word that starts right before it
// (so that `{` or `}` there stands alone).
bool StandsAlone(std::string_view in, size_t i) {
  return i + 1 >= in.size() || IsBlank(in[i + 1]) || EndsCommand(in[i + 1]) ||
         IsRedirect(in[i + 1]);
}

class Splitter {
 public:
  explicit Splitter(std::string_view in) : in_(in) {}

  Script Run() {
    const size_t n = in_.size();
    size_t i = 0;
    while (i < n) {
      const char c = in_[i];
      if (IsBlank(c)) {
        EndWord();
        ++i;
      } else if (IsRedirect(c) || (c == '&' && i + 1 < n && in_[i + 1] == '>')) {
        i = Redirect(i);  // <, >, …, and &> / &>>
      } else if (EndsCommand(c) || ((c == '{' || c == '}') && !in_word_ && StandsAlone(in_, i))) {
        EndCommand();  // a stand-alone brace is a group: `{ rm -rf /; }`
        ++i;
      } else if (c == '\\') {
        i = Backslash(i);
      } else if (c == '\'') {
        i = SingleQuoted(i + 1);
      } else if (c == '"') {
        i = DoubleQuoted(i + 1);
      } else if (c == '$') {
        i = Dollar(i);
      } else {
        // Globs and brace lists ({a,b}, {1..3}) expand at run time.
        const bool expands =
            c == '*' || c == '?' || c == '[' ||
            (brace_open_ && (c == ',' || (c == '.' && i + 1 < n && in_[i + 1] == '.')));
        brace_open_ = brace_open_ || c == '{';
        word_.opaque = word_.opaque || expands;
        Append(c);
        ++i;
      }
    }
    EndCommand();
    return std::move(out_);
  }

 private:
  void Append(char c) {
    word_.text += c;
    in_word_ = true;
    // A NUL ends the string execve() sees ("rm\0x" runs "rm"): unknown.
    word_.opaque = word_.opaque || c == '\0';
  }

  void EndWord() {
    if (in_word_) {
      word_.redirect_target = pending_redirect_;
      pending_redirect_ = false;
      command_.push_back(std::move(word_));
    }
    word_ = Word{};
    in_word_ = false;
    quoted_ = false;
    brace_open_ = false;
  }

  void EndCommand() {
    EndWord();
    pending_redirect_ = false;
    if (!command_.empty()) {
      out_.commands.push_back(std::move(command_));
    }
    command_.clear();
  }

  size_t Redirect(size_t i) {
    // A digit-only unquoted word right before the operator is its fd.
    if (in_word_ && !quoted_ && !word_.opaque && !word_.text.empty() &&
        std::all_of(word_.text.begin(), word_.text.end(),
                    [](char d) { return d >= '0' && d <= '9'; })) {
      word_ = Word{};
      in_word_ = false;
      quoted_ = false;
      brace_open_ = false;
    } else {
      EndWord();
    }
    const size_t n = in_.size();
    // The operator: <, >, >>, <<, <<-, <<<, <&, >&, &>, &>>, >|, <>.
    if (in_[i] == '&') {
      ++i;
    }
    while (i < n && (IsRedirect(in_[i]) || in_[i] == '&' || in_[i] == '|' || in_[i] == '-')) {
      ++i;
    }
    pending_redirect_ = true;
    return i;
  }

  size_t Backslash(size_t i) {
    if (i + 1 >= in_.size()) {
      return i + 1;  // a trailing backslash escapes nothing
    }
    if (in_[i + 1] != '\n') {  // backslash-newline joins lines
      Append(in_[i + 1]);
    }
    return i + 2;
  }

  size_t SingleQuoted(size_t i) {
    in_word_ = true;
    quoted_ = true;
    const size_t n = in_.size();
    while (i < n && in_[i] != '\'') {
      Append(in_[i++]);
    }
    return i < n ? i + 1 : i;
  }

  size_t DoubleQuoted(size_t i) {
    in_word_ = true;
    quoted_ = true;
    const size_t n = in_.size();
    while (i < n && in_[i] != '"') {
      const char c = in_[i];
      if (c == '\\' && i + 1 < n &&
          (in_[i + 1] == '$' || in_[i + 1] == '`' || in_[i + 1] == '"' || in_[i + 1] == '\\' ||
           in_[i + 1] == '\n')) {
        if (in_[i + 1] != '\n') {
          word_.text += in_[i + 1];
        }
        i += 2;
        continue;
      }
      if (c == '$' && i + 1 < n && in_[i + 1] == '(') {
        const size_t close = FindClose(in_, i + 2, 0);
        Report(i + 2, close);
        const size_t next = close < n ? close + 1 : n;
        word_.text.append(in_.substr(i, next - i));
        word_.opaque = true;
        i = next;
        continue;
      }
      if (c == '`') {
        const size_t close = FindBackquote(in_, i + 1);
        Report(i + 1, close);
        const size_t next = close < n ? close + 1 : n;
        word_.text.append(in_.substr(i, next - i));
        word_.opaque = true;
        i = next;
        continue;
      }
      if (c == '$') {
        word_.opaque = true;
      }
      Append(c);
      ++i;
    }
    return i < n ? i + 1 : i;
  }

  size_t Dollar(size_t i) {
    const size_t n = in_.size();
    in_word_ = true;
    word_.opaque = true;
    if (i + 1 < n && in_[i + 1] == '\'') {  // $'…': ANSI-C quoting, escapes kept as written
      quoted_ = true;
      word_.text += "$'";
      i += 2;
      while (i < n && in_[i] != '\'') {
        if (in_[i] == '\\' && i + 1 < n) {
          word_.text += in_[i];
          word_.text += in_[i + 1];
          i += 2;
          continue;
        }
        word_.text += in_[i++];
      }
      return i < n ? i + 1 : i;
    }
    if (i + 1 < n && in_[i + 1] == '"') {  // $"…": a translated double-quoted string
      word_.text += '$';
      return DoubleQuoted(i + 2);
    }
    if (i + 1 < n && in_[i + 1] == '{') {  // ${…}: up to the first '}'
      size_t j = i;
      while (j < n && in_[j] != '}') {
        word_.text += in_[j++];
      }
      if (j < n) {
        word_.text += '}';
        ++j;
      }
      return j;
    }
    word_.text += '$';  // $NAME, $1, $( and $(( (the parentheses split commands)
    return i + 1;
  }

  // A substitution body [start, close); to the end of the input when the
  // close was not found or a `case` may have ended it early.
  void Report(size_t start, size_t close) {
    Substitution sub{start, std::string_view::npos};
    if (close < in_.size() &&
        in_.substr(start, close - start).find("case") == std::string_view::npos) {
      sub.end = close;
    }
    out_.substitutions.push_back(sub);
  }

  // The index of the `)` closing a $( whose body starts at `i`, or the input
  // size. Quotes, backslashes, backquotes and nested parentheses are skipped
  // over; nested "$(" inside double quotes recurse (bounded: beyond
  // kMaxNesting the rest of the input is the body).
  static size_t FindClose(std::string_view in, size_t i, int nesting) {
    constexpr int kMaxNesting = 64;
    const size_t n = in.size();
    if (nesting > kMaxNesting) {
      return n;
    }
    int depth = 0;
    while (i < n) {
      const char c = in[i];
      if (c == '\\') {
        i += 2;
      } else if (c == '\'') {
        const size_t q = in.find('\'', i + 1);
        i = q == std::string_view::npos ? n : q + 1;
      } else if (c == '`') {
        const size_t q = FindBackquote(in, i + 1);
        i = q < n ? q + 1 : n;
      } else if (c == '"') {
        ++i;
        while (i < n && in[i] != '"') {
          if (in[i] == '\\') {
            i += 2;
          } else if (in[i] == '$' && i + 1 < n && in[i + 1] == '(') {
            const size_t q = FindClose(in, i + 2, nesting + 1);
            i = q < n ? q + 1 : n;
          } else {
            ++i;
          }
        }
        i = i < n ? i + 1 : n;
      } else if (c == '(') {
        ++depth;
        ++i;
      } else if (c == ')') {
        if (depth == 0) {
          return i;
        }
        --depth;
        ++i;
      } else {
        ++i;
      }
    }
    return n;
  }

  // The index of the backquote closing one whose body starts at `i`, or the
  // input size.
  static size_t FindBackquote(std::string_view in, size_t i) {
    const size_t n = in.size();
    while (i < n && in[i] != '`') {
      i += in[i] == '\\' ? 2 : 1;
    }
    return i < n ? i : n;
  }

  std::string_view in_;
  Script out_;
  SimpleCommand command_;
  Word word_;
  bool in_word_ = false;
  bool quoted_ = false;
  bool brace_open_ = false;
  bool pending_redirect_ = false;
};

}  // namespace

Script Split(std::string_view text) { return Splitter(text).Run(); }

std::string_view Basename(std::string_view word) {
  const size_t slash = word.rfind('/');
  return slash == std::string_view::npos ? word : word.substr(slash + 1);
}

bool IsAssignment(std::string_view word) {
  if (word.empty() || !(std::isalpha(static_cast<unsigned char>(word[0])) || word[0] == '_')) {
    return false;
  }
  size_t i = 1;
  while (i < word.size() && (std::isalnum(static_cast<unsigned char>(word[i])) || word[i] == '_')) {
    ++i;
  }
  if (i < word.size() && word[i] == '[') {
    const size_t close = word.find(']', i);
    if (close == std::string_view::npos) {
      return false;
    }
    i = close + 1;
  }
  if (i < word.size() && word[i] == '+') {
    ++i;
  }
  return i < word.size() && word[i] == '=';
}

bool IsReservedWord(std::string_view word) {
  static constexpr std::array<std::string_view, 17> kReserved = {
      "!",     "if",   "then", "else", "elif",   "fi",       "do",   "done",  "while",
      "until", "case", "esac", "for",  "select", "function", "time", "coproc"};
  return std::find(kReserved.begin(), kReserved.end(), word) != kReserved.end();
}

}  // namespace jitbroker::shell
