// git's credential helper protocol (git-credential(1), "INPUT/OUTPUT
// FORMAT"), the pure half of `jitctl git-credential get|store|erase`: parse
// what git writes on stdin, decide whether a request is for a repository this
// helper serves, and format the answer. The broker call lives in commands.cc.
//
// Security rules enforced here:
//   - only hosts the helper was configured for (--host, default github.com)
//     are served; anything else gets no answer, so git asks its next helper;
//   - https only, except plain http to a loopback host (local tests), so a
//     token never crosses a network in clear;
//   - the repository comes from `path` (git sends it when
//     credential.useHttpPath is true) and must be exactly OWNER/REPO[.git].
//
// Thread-safety: pure functions.
#pragma once

#include <cstdint>
#include <istream>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "jitbroker/result.h"

namespace jitbroker::cli {

// Attributes from git, "key=value" per line up to a blank line or EOF. Array
// attributes ("capability[]", "wwwauth[]") keep their last value; unknown
// attributes are kept and ignored, as the protocol requires. Errors: a line
// without '=', a NUL byte, or more than 64 KiB of input.
[[nodiscard]] Result<std::map<std::string, std::string>> ParseGitCredentialInput(std::istream& in);

struct GitRepoTarget {
  std::string protocol;  // "https", or "http" for a loopback host
  std::string host;      // as git sent it, including any port
  std::string owner;     // lower case (GitHub names are case-insensitive)
  std::string repo;      // lower case, without ".git"
};

// nullopt: not for this helper (another host or protocol) — print nothing.
// An error: the request is for a served host but cannot be answered (no
// path, a path that is not OWNER/REPO, plain http to a remote host).
[[nodiscard]] Result<std::optional<GitRepoTarget>> ResolveGitTarget(
    const std::map<std::string, std::string>& attrs, const std::vector<std::string>& hosts);

// Whether git asks for the broker itself: its protocol and host are those of
// `broker_url` (JITBROKER_URL), i.e. a remote through the proxy
// (docs/proxy.md), which takes the session as its credentials.
bool IsBrokerRemote(const std::map<std::string, std::string>& attrs, std::string_view broker_url);

// The answer to `get` for the broker: username = the session id, password =
// the session token. Errors: either holds a line break or NUL.
[[nodiscard]] Result<std::string> FormatSessionCredential(std::string_view session_id,
                                                          std::string_view session_token);

// The proxy URL of OWNER/REPO on git host `host`: BROKER/git/HOST/OWNER/REPO.git.
// Errors: kInvalidArgument "invalid_repository" unless OWNER/REPO (GitHub's
// alphabet), "invalid_host" unless HOST[:PORT].
[[nodiscard]] Result<std::string> GitProxyUrl(std::string_view broker_url, std::string_view host,
                                              std::string_view owner_repo);

// The answer to `get`: username=x-access-token, password, and
// password_expiry_utc (unix seconds) when known.
std::string FormatGitCredential(std::string_view token, std::optional<int64_t> expiry_unix);

}  // namespace jitbroker::cli
