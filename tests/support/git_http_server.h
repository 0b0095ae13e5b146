// GitHttpServer: a loopback smart-HTTP git server for tests: cpp-httplib in
// front of the real `git http-backend` (CGI), with HTTP Basic authentication
// decided by a callback — so a test can push with the real `git` binary
// through `jitctl git-credential` and have each request checked against the
// fake GitHub's token store, as github.com checks installation tokens.
//
// Repositories live under root()/OWNER/REPO.git (bare); CreateRepo makes one.
// Unauthenticated or rejected requests get 401 with a Basic challenge, which
// is what makes git ask its credential helper.
//
// Thread-safety: the callback is called from server threads.
#pragma once

#include <functional>
#include <memory>
#include <string>

namespace httplib {
class Server;
}

namespace jitbroker::testing {

struct GitAuthRequest {
  std::string username;
  std::string password;
  std::string owner_repo;  // "owner/repo"
  bool push = false;       // git-receive-pack
};

class GitHttpServer {
 public:
  using Authorize = std::function<bool(const GitAuthRequest&)>;

  ~GitHttpServer();
  // Starts on 127.0.0.1 and a free port, serving repositories under `root`.
  static std::unique_ptr<GitHttpServer> Start(std::string root, Authorize authorize);
  void Stop();

  // Creates an empty bare repository OWNER/REPO.git under root().
  void CreateRepo(const std::string& owner_repo);
  const std::string& root() const { return root_; }
  int port() const { return port_; }
  std::string host() const;                              // "127.0.0.1:PORT", as git reports it
  std::string url(const std::string& owner_repo) const;  // http://host/OWNER/REPO.git
  int rejected() const;  // requests answered 401 after credentials were sent

 private:
  GitHttpServer() = default;
  struct Impl;
  std::unique_ptr<Impl> impl_;
  std::string root_;
  int port_ = 0;
};

}  // namespace jitbroker::testing
