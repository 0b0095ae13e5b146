#include "tests/support/git_http_server.h"
#include "tests/support/loopback.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <regex>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include <httplib.h>

extern char** environ;

namespace jitbroker::testing {

namespace {

std::string Base64Decode(const std::string& in) {
  static const std::string kAlphabet =
      "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  std::string out;
  int bits = 0;
  unsigned value = 0;
  for (const char c : in) {
    if (c == '=') {
      break;
    }
    const size_t i = kAlphabet.find(c);
    if (i == std::string::npos) {
      return {};
    }
    value = (value << 6) | static_cast<unsigned>(i);
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      out.push_back(static_cast<char>((value >> bits) & 0xff));
    }
  }
  return out;
}

struct CgiResult {
  int status = 500;
  std::string content_type = "text/plain";
  std::vector<std::pair<std::string, std::string>> headers;
  std::string body;
};

// Runs `git http-backend` with `env` and `input` on stdin; parses its CGI
// response.
CgiResult RunBackend(const std::vector<std::string>& env, const std::string& input) {
  int in_pipe[2];
  int out_pipe[2];
  if (pipe2(in_pipe, O_CLOEXEC) != 0 || pipe2(out_pipe, O_CLOEXEC) != 0) {
    return {500, "text/plain", {}, "pipe failed"};
  }
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_adddup2(&fa, in_pipe[0], 0);
  posix_spawn_file_actions_adddup2(&fa, out_pipe[1], 1);
  std::vector<char*> envp;
  for (const std::string& e : env) {
    envp.push_back(const_cast<char*>(e.c_str()));
  }
  envp.push_back(nullptr);
  const char* argv[] = {"git", "http-backend", nullptr};
  pid_t pid = -1;
  const int rc =
      posix_spawnp(&pid, "git", &fa, nullptr, const_cast<char* const*>(argv), envp.data());
  posix_spawn_file_actions_destroy(&fa);
  ::close(in_pipe[0]);
  ::close(out_pipe[1]);
  if (rc != 0) {
    ::close(in_pipe[1]);
    ::close(out_pipe[0]);
    return {500, "text/plain", {}, "cannot run git http-backend"};
  }
  std::thread writer([fd = in_pipe[1], &input] {
    size_t off = 0;
    while (off < input.size()) {
      const ssize_t n = ::write(fd, input.data() + off, input.size() - off);
      if (n <= 0) {
        break;
      }
      off += static_cast<size_t>(n);
    }
    ::close(fd);
  });
  std::string raw;
  char buf[65536];
  while (true) {
    const ssize_t n = ::read(out_pipe[0], buf, sizeof(buf));
    if (n <= 0) {
      break;
    }
    raw.append(buf, static_cast<size_t>(n));
  }
  ::close(out_pipe[0]);
  writer.join();
  int wstatus = 0;
  ::waitpid(pid, &wstatus, 0);

  CgiResult r;
  r.status = 200;
  size_t header_end = raw.find("\r\n\r\n");
  size_t body_at = header_end + 4;
  if (header_end == std::string::npos) {
    header_end = raw.find("\n\n");
    body_at = header_end + 2;
  }
  if (header_end == std::string::npos) {
    return {500, "text/plain", {}, "git http-backend sent no headers"};
  }
  std::string head = raw.substr(0, header_end);
  r.body = raw.substr(body_at);
  size_t pos = 0;
  while (pos < head.size()) {
    size_t eol = head.find('\n', pos);
    if (eol == std::string::npos) {
      eol = head.size();
    }
    std::string line = head.substr(pos, eol - pos);
    pos = eol + 1;
    if (!line.empty() && line.back() == '\r') {
      line.pop_back();
    }
    const size_t colon = line.find(':');
    if (colon == std::string::npos) {
      continue;
    }
    std::string name = line.substr(0, colon);
    std::string value = line.substr(colon + 1);
    while (!value.empty() && value.front() == ' ') {
      value.erase(0, 1);
    }
    if (name == "Status") {
      r.status = std::atoi(value.c_str());
    } else if (name == "Content-Type") {
      r.content_type = value;
    } else {
      r.headers.emplace_back(name, value);
    }
  }
  return r;
}

}  // namespace

struct GitHttpServer::Impl {
  httplib::Server server;
  std::thread thread;
  Authorize authorize;
  std::atomic<int> rejected{0};
};

GitHttpServer::~GitHttpServer() { Stop(); }

std::unique_ptr<GitHttpServer> GitHttpServer::Start(std::string root, Authorize authorize) {
  std::unique_ptr<GitHttpServer> s(new GitHttpServer());
  s->root_ = std::move(root);
  s->impl_ = std::make_unique<Impl>();
  s->impl_->authorize = std::move(authorize);
  Impl* impl = s->impl_.get();
  const std::string project_root = s->root_;
  auto handler = [impl, project_root](const httplib::Request& req, httplib::Response& res) {
    static const std::regex kPath(R"(^/([A-Za-z0-9_.-]+)/([A-Za-z0-9_.-]+)\.git(/.*)$)");
    std::smatch m;
    if (!std::regex_match(req.path, m, kPath)) {
      res.status = 404;
      res.set_content("not a repository path", "text/plain");
      return;
    }
    const std::string owner_repo = m[1].str() + "/" + m[2].str();
    const bool push =
        req.get_param_value("service") == "git-receive-pack" || m[3].str() == "/git-receive-pack";
    GitAuthRequest auth;
    auth.owner_repo = owner_repo;
    auth.push = push;
    const std::string header = req.get_header_value("Authorization");
    const bool sent = header.rfind("Basic ", 0) == 0;
    if (sent) {
      const std::string userpass = Base64Decode(header.substr(6));
      const size_t colon = userpass.find(':');
      if (colon != std::string::npos) {
        auth.username = userpass.substr(0, colon);
        auth.password = userpass.substr(colon + 1);
      }
    }
    if (!sent || !impl->authorize(auth)) {
      if (sent) {
        impl->rejected.fetch_add(1);
      }
      res.status = 401;
      res.set_header("WWW-Authenticate", "Basic realm=\"jitbroker-test-git\"");
      res.set_content("authentication required", "text/plain");
      return;
    }
    std::vector<std::string> env = {
        "GIT_PROJECT_ROOT=" + project_root,
        "GIT_HTTP_EXPORT_ALL=1",
        "REQUEST_METHOD=" + req.method,
        "PATH_INFO=" + req.path,
        "QUERY_STRING=" + (req.target.find('?') != std::string::npos
                               ? req.target.substr(req.target.find('?') + 1)
                               : std::string()),
        "CONTENT_TYPE=" + req.get_header_value("Content-Type"),
        "CONTENT_LENGTH=" + std::to_string(req.body.size()),
        "REMOTE_USER=" + auth.username,
        "REMOTE_ADDR=127.0.0.1",
        "PATH=" +
            std::string(std::getenv("PATH") != nullptr ? std::getenv("PATH") : "/usr/bin:/bin"),
        "HOME=" + project_root,
    };
    if (req.has_header("Git-Protocol")) {
      env.push_back("GIT_PROTOCOL=" + req.get_header_value("Git-Protocol"));
    }
    // cpp-httplib hands over the body as received; tell the backend when
    // git gzip'ed it.
    if (req.body.size() >= 2 && static_cast<unsigned char>(req.body[0]) == 0x1f &&
        static_cast<unsigned char>(req.body[1]) == 0x8b) {
      env.push_back("HTTP_CONTENT_ENCODING=gzip");
    }
    CgiResult r = RunBackend(env, req.body);
    res.status = r.status;
    for (const auto& [name, value] : r.headers) {
      res.set_header(name, value);
    }
    res.set_content(r.body, r.content_type);
  };
  s->impl_->server.Get(R"(/.*)", handler);
  s->impl_->server.Post(R"(/.*)", handler);
  s->port_ = ServeOnLoopback(s->impl_->server, s->impl_->thread);
  if (s->port_ <= 0) {
    throw std::runtime_error("GitHttpServer: cannot bind");
  }
  return s;
}

void GitHttpServer::Stop() {
  if (impl_) {
    StopServing(impl_->server, impl_->thread);
  }
}

void GitHttpServer::CreateRepo(const std::string& owner_repo) {
  const std::string path = root_ + "/" + owner_repo + ".git";
  const std::string cmd = "git init -q --bare --initial-branch=main '" + path + "' && git -C '" +
                          path + "' config http.receivepack true";
  if (std::system(cmd.c_str()) != 0) {
    throw std::runtime_error("GitHttpServer: git init failed for " + path);
  }
}

std::string GitHttpServer::host() const { return "127.0.0.1:" + std::to_string(port_); }

std::string GitHttpServer::url(const std::string& owner_repo) const {
  return "http://" + host() + "/" + owner_repo + ".git";
}

int GitHttpServer::rejected() const { return impl_ ? impl_->rejected.load() : 0; }

}  // namespace jitbroker::testing
