// FakeGitHub: a loopback stand-in for the GitHub REST API as the github_app
// issuer uses it (docs/concepts.md "GitHub App tokens"), for unit and integration tests
// and benchmarks. It is strict the way GitHub is:
//
//   - every request needs Accept: application/vnd.github+json, a supported
//     X-GitHub-Api-Version (2022-11-28 or 2026-03-10; else 400) and a
//     User-Agent (else 403);
//   - App endpoints need "Authorization: Bearer <App JWT>": RS256 verified
//     with the App's public key, iss = the client id or the app id, integer
//     iat and exp, iat not in the future (60 s leeway), exp in the future,
//     exp - iat <= 600 s and exp <= now + 600 s (else 401 with GitHub's
//     messages and a Date header);
//   - POST /app/installations/{id}/access_tokens checks the body shape
//     (object; `repositories` array of names without owner, or
//     `repository_ids` array of integers, at most 500; `permissions` object
//     of known names to read|write|admin): 400 for malformed JSON, 404 for an
//     unknown installation, 422 for permissions the installation lacks or
//     repositories it cannot reach. Tokens are ~520 characters
//     ("ghs_<app>_<hex>.<hex>.<hex>", two dots, the stateless format) or 40
//     with X-GitHub-Stateless-S2S-Token: disabled; they expire after an hour;
//   - DELETE /installation/token (the token itself) answers 204; the token
//     then gets 401 everywhere;
//   - the token response carries `repository_selection`, `permissions` and,
//     when repositories were selected, `repositories`: repository objects
//     with id, name, full_name (the installation's account / name) and owner;
//   - GET /repos/{o}/{r}/installation, GET /app/installations/{id} (JWT; the
//     account login), GET /repos/{o}/{r}/collaborators/{u}/permission
//     (an installation token that reaches the repository), GET /repos/{o}/{r}
//     (to show that a token works).
//
// Every response carries x-ratelimit-* headers and Date. Fault injection:
// latency on every request, and per-route status codes (5xx, 403 secondary
// rate limit with Retry-After, 429) for the next N requests or until cleared;
// misbehaving mints (SetMintResponse: broader than asked, fields left out,
// another repository), token lifetimes other than an hour, and new tokens
// that answer 401 for their first seconds (as GitHub's do, docs/concepts.md
// "GitHub App tokens").
// Anything a request got wrong is also recorded in Violations() so tests can
// say what.
//
// Thread-safety: all methods are thread-safe; the server runs on its own
// threads until Stop() or destruction.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include <nlohmann/json.hpp>

namespace httplib {
class Server;
}

namespace jitbroker::testing {

struct FakeGitHubOptions {
  nlohmann::json app_public_jwk;  // the App's RSA public key (JWK)
  std::string client_id;          // accepted as iss
  int64_t app_id = 1;             // accepted as iss (number or string)
  int threads = 32;               // server worker threads (one per keep-alive connection)
  // Keep a record of every issued token (installation, repositories,
  // permissions). Off, tokens are still verified (they are MACed), but
  // repository checks on them are skipped: for benchmarks, bounded memory.
  bool keep_issued = true;
  // Bare repositories OWNER/REPO.git (tests/support/git_http_server.h):
  // when set, GET /repos/{o}/{r}/git/ref/{ref} and GET
  // /repos/{o}/{r}/compare/{base}...{head} answer from them (contents read).
  std::string git_root;
};

struct FakeInstallation {
  int64_t id = 0;
  std::string account;                             // owner login
  std::map<std::string, int64_t> repositories;     // name -> id
  std::map<std::string, std::string> permissions;  // what the App was granted
};

class FakeGitHub {
 public:
  enum class Route { kAny, kLookup, kMint, kRevoke, kCollaborator, kRepo, kInstallation };

  // How POST …/access_tokens answers (and what the token really covers).
  enum class MintResponse {
    kNormal,
    // repository_selection "all", every repository of the installation and
    // all its permissions, whatever was asked.
    kBroader,
    // A narrowed token, but the answer leaves out repository_selection,
    // repositories and permissions (the schema requires only token and
    // expires_at).
    kOmitScope,
    // A token for another repository of the installation than the one asked.
    kOtherRepository,
  };

  struct TokenInfo {
    int64_t installation_id = 0;
    std::vector<std::string> repositories;  // names
    nlohmann::json permissions;
    int64_t expires_at = 0;
    int64_t issued_at = 0;
    bool revoked = false;
  };

  ~FakeGitHub();
  // Starts on 127.0.0.1 and a free port; returns once it accepts.
  static std::unique_ptr<FakeGitHub> Start(FakeGitHubOptions options);
  void Stop();

  std::string url() const;  // http://127.0.0.1:PORT
  int port() const { return port_; }

  void AddInstallation(FakeInstallation installation);
  // The collaborator permission of `login` on OWNER/REPO ("admin", "write",
  // "read", "none"; role_name e.g. "maintain", "triage").
  void SetCollaborator(const std::string& owner_repo, const std::string& login,
                       const std::string& permission, const std::string& role_name = "");

  // Fault injection.
  void SetLatency(std::chrono::milliseconds latency);
  // The next `count` requests to `route` (count < 0: all until cleared) get
  // `status`. 429, and 403 with retry_after_s >= 0, are secondary rate limits
  // (Retry-After when retry_after_s >= 0); a 403 without is "Resource not
  // accessible by integration".
  void InjectErrors(Route route, int status, int count, int retry_after_s = -1);
  void ClearErrors();
  // The fake's clock runs this far ahead of the host's (negative: behind).
  void SetClockSkew(std::chrono::seconds skew);
  void SetMintResponse(MintResponse mode);
  // Tokens minted from now on expire this long after minting (default an
  // hour; may be negative).
  void SetTokenLifetime(std::chrono::seconds lifetime);
  // Tokens answer 401 (revoke, repository and collaborator calls) for this
  // long after minting. Zero (default): at once usable.
  void SetTokenWarmup(std::chrono::seconds warmup);

  // Pull requests, for the REST calls the broker's proxy forwards
  // (docs/proxy.md): GET /repos/{o}/{r}/pulls (paginated: per_page, page,
  // and a Link header of /repositories/{id}/pulls URLs as GitHub sends),
  // POST /repos/{o}/{r}/issues/{n}/comments (JSON {"body": string}; an
  // installation token with issues or pull_requests write), PUT
  // /repos/{o}/{r}/pulls/{n}/merge (contents and pull_requests write; 405
  // once merged). Tokens must reach the repository.
  void AddPullRequest(const std::string& owner_repo, int number, const std::string& title);
  std::vector<int> Merged(const std::string& owner_repo) const;
  std::vector<std::string> Comments(const std::string& owner_repo, int number) const;

  // Inspection.
  std::optional<TokenInfo> Token(const std::string& token) const;
  // Valid (MAC), unexpired and not revoked.
  bool TokenActive(const std::string& token) const;
  size_t Requests(Route route) const;  // answered requests per route
  size_t TokensIssued() const;
  size_t TokensRevoked() const;
  size_t DistinctJwts() const;  // App JWTs seen (each one signature)
  nlohmann::json LastMintBody() const;
  std::map<std::string, std::string> LastHeaders() const;  // lower-case names
  std::vector<std::string> Violations() const;
  void ClearViolations();

 private:
  FakeGitHub() = default;
  struct Impl;
  std::unique_ptr<Impl> impl_;
  int port_ = 0;
};

}  // namespace jitbroker::testing
