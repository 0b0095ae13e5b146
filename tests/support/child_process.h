// Child: a process started with `sh -c` whose stdout a test reads line by
// line (the export lines of `jitctl aws serve` and `gcp serve`), stopped by
// a signal; killed if the test leaves it running. ExportValue reads one of
// those lines.
#pragma once

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <string>
#include <utility>

#include <doctest/doctest.h>

namespace jitbroker::testing {

class Child {
 public:
  static Child Start(const std::string& command) {
    int fds[2];
    REQUIRE(::pipe(fds) == 0);
    Child c;
    c.pid_ = ::fork();
    REQUIRE(c.pid_ >= 0);
    if (c.pid_ == 0) {
      ::dup2(fds[1], STDOUT_FILENO);
      ::close(fds[0]);
      ::close(fds[1]);
      ::execl("/bin/sh", "sh", "-c", ("exec " + command).c_str(), static_cast<char*>(nullptr));
      ::_exit(127);
    }
    ::close(fds[1]);
    c.out_ = ::fdopen(fds[0], "r");
    return c;
  }
  Child(Child&& other) noexcept
      : pid_(std::exchange(other.pid_, -1)), out_(std::exchange(other.out_, nullptr)) {}
  Child& operator=(Child&&) = delete;
  Child(const Child&) = delete;
  Child& operator=(const Child&) = delete;
  ~Child() {
    if (pid_ > 0) {
      Stop(SIGKILL);
    }
  }

  // The next line of stdout without its newline; empty at the end.
  std::string Line() {
    char buf[1024];
    if (std::fgets(buf, sizeof(buf), out_) == nullptr) {
      return {};
    }
    std::string s(buf);
    if (!s.empty() && s.back() == '\n') {
      s.pop_back();
    }
    return s;
  }

  // Sends `sig` and waits: the exit code, or -1 when a signal ended it.
  int Stop(int sig = SIGTERM) {
    ::kill(pid_, sig);
    int status = 0;
    ::waitpid(pid_, &status, 0);
    std::fclose(out_);
    out_ = nullptr;
    pid_ = -1;
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  }

 private:
  Child() = default;
  pid_t pid_ = -1;
  FILE* out_ = nullptr;
};

// "export NAME=VALUE" -> VALUE
inline std::string ExportValue(const std::string& line, const std::string& name) {
  const std::string prefix = "export " + name + "=";
  REQUIRE_MESSAGE(line.starts_with(prefix), line);
  return line.substr(prefix.size());
}

}  // namespace jitbroker::testing
