// Shell words: a bounded, linear reading of a POSIX shell command line into
// simple commands and words, for the `argv:` patterns of tool rules
// (docs/configuration.md, "argv: patterns"). It is not a shell: it answers
// "which words could a shell run here?" and errs towards more words and more
// commands, never fewer, because tool rules raise tiers and must fail closed.
//
//   - Simple commands are split at newlines, `;`, `&`, `|` (so `&&`, `||`,
//     `|&` too), `(`, `)`, backquotes, and a stand-alone `{` or `}`.
//   - Quotes and backslashes are removed as a shell would ('…' literal,
//     "…" with \$ \` \" \\ escapes, \x outside quotes, backslash-newline
//     joins lines). An unterminated quote runs to the end of the input.
//   - A word whose value is only known at run time is `opaque`: it holds a
//     `$` expansion (variables, $(…), $'…', $"…", arithmetic) or a backquote,
//     an unquoted glob character (* ? [) or an unquoted brace list ({a,b},
//     {1..3}). Its text is kept as written.
//   - Redirections (<, >, >>, <<, <<<, <&, >&, &>, >|, <>) are dropped and the
//     word after them is marked `redirect_target`; a digit-only word right
//     before one is its file descriptor and is dropped.
//   - Inside double quotes, each `$(…)` and backquoted command substitution
//     is part of the (opaque) word, and its body is reported in
//     `substitutions` for the caller to read as a script too. Its end is the
//     first `)` outside quotes and nested parentheses (the closing backquote);
//     when that cannot be trusted (no end, or a `case` whose patterns end in
//     `)`), the body is reported as running to the end of the input.
//   - Comments are not recognised (a `#` is an ordinary character): more
//     words, never fewer.
//
// Thread-safety: pure functions.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>
#include <vector>

namespace jitbroker::shell {

struct Word {
  std::string text;              // after quote removal (opaque parts as written)
  bool opaque = false;           // the run-time value is unknown (see above)
  bool redirect_target = false;  // the file (or here-document word) of a redirection
};

using SimpleCommand = std::vector<Word>;

// A quoted command substitution's body: [start, end) of the input, or
// [start, end of input) when end is npos.
struct Substitution {
  size_t start = 0;
  size_t end = std::string_view::npos;
};

struct Script {
  std::vector<SimpleCommand> commands;      // non-empty commands only, in order
  std::vector<Substitution> substitutions;  // bodies of quoted $(…) and `…`
};

// Reads `text` once, left to right (time and memory linear in its size).
Script Split(std::string_view text);

// The last '/'-separated component of `word` ("/bin/rm" -> "rm").
std::string_view Basename(std::string_view word);

// NAME=value, NAME+=value or NAME[index]=value: a variable assignment when it
// comes before the command name.
bool IsAssignment(std::string_view word);

// Words that may open a command without being its program: `!`, `if`,
// `then`, `else`, `elif`, `fi`, `do`, `done`, `while`, `until`, `case`,
// `esac`, `for`, `select`, `function`, `time`, `coproc`.
bool IsReservedWord(std::string_view word);

}  // namespace jitbroker::shell
