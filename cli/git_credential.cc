#include "cli/git_credential.h"

#include <algorithm>
#include <cctype>
#include <string>

#include "broker/net/url.h"

namespace jitbroker::cli {

namespace {

constexpr size_t kMaxInputBytes = 64 * 1024;

bool EqualsIgnoreCase(std::string_view a, std::string_view b) {
  return a.size() == b.size() && std::equal(a.begin(), a.end(), b.begin(), [](char x, char y) {
           return std::tolower(static_cast<unsigned char>(x)) ==
                  std::tolower(static_cast<unsigned char>(y));
         });
}

// GitHub's owner and repository name alphabets (letters, digits, '-', '_',
// '.'); "." and ".." are not names.
bool IsNameSegment(std::string_view s) {
  if (s.empty() || s.size() > 100 || s == "." || s == "..") {
    return false;
  }
  return std::all_of(s.begin(), s.end(), [](char c) {
    return std::isalnum(static_cast<unsigned char>(c)) != 0 || c == '-' || c == '_' || c == '.';
  });
}

}  // namespace

Result<std::map<std::string, std::string>> ParseGitCredentialInput(std::istream& in) {
  std::map<std::string, std::string> attrs;
  std::string line;
  size_t total = 0;
  while (std::getline(in, line)) {
    total += line.size() + 1;
    if (total > kMaxInputBytes) {
      return std::unexpected(InvalidArgument("git_credential_input", "git sent more than 64 KiB"));
    }
    if (!line.empty() && line.back() == '\r') {
      line.pop_back();
    }
    if (line.empty()) {
      break;
    }
    if (line.find('\0') != std::string::npos) {
      return std::unexpected(
          InvalidArgument("git_credential_input", "git sent a line with a NUL byte"));
    }
    const size_t eq = line.find('=');
    if (eq == std::string::npos || eq == 0) {
      return std::unexpected(InvalidArgument(
          "git_credential_input",
          "git sent a line that is not key=value (" + std::to_string(line.size()) + " bytes)"));
    }
    attrs[line.substr(0, eq)] = line.substr(eq + 1);
  }
  return attrs;
}

Result<std::optional<GitRepoTarget>> ResolveGitTarget(
    const std::map<std::string, std::string>& attrs, const std::vector<std::string>& hosts) {
  auto get = [&](const char* key) -> std::string {
    auto it = attrs.find(key);
    return it == attrs.end() ? std::string() : it->second;
  };
  GitRepoTarget t;
  t.protocol = get("protocol");
  t.host = get("host");
  const bool served = std::any_of(hosts.begin(), hosts.end(), [&](const std::string& h) {
    return EqualsIgnoreCase(h, t.host);
  });
  if (!served || (t.protocol != "https" && t.protocol != "http")) {
    return std::optional<GitRepoTarget>();
  }
  // git names the remote PROTOCOL://HOST[:PORT]: parse it as that URL.
  Result<net::Url> remote = net::ParseUrl(t.protocol + "://" + t.host, net::UrlPolicy::GitRemote());
  if (!remote && remote.error().Reason() == "url_http_not_loopback") {
    return std::unexpected(InvalidArgument(
        "insecure_transport", "refusing to send a credential over plain http to " + t.host +
                                  "; use https (plain http is allowed only to loopback hosts)"));
  }
  if (!remote) {
    return std::unexpected(InvalidArgument(
        "invalid_host",
        "git sent a host that is not HOST[:PORT] (" + remote.error().message + ")"));
  }
  std::string_view path = attrs.contains("path") ? std::string_view(attrs.at("path")) : "";
  if (path.empty()) {
    return std::unexpected(
        InvalidArgument("missing_path",
                        "git did not send the repository path; run: git config --global "
                        "credential.https://" +
                            t.host + ".useHttpPath true"));
  }
  while (path.starts_with('/')) {
    path.remove_prefix(1);
  }
  while (path.ends_with('/')) {
    path.remove_suffix(1);
  }
  if (path.ends_with(".git")) {
    path.remove_suffix(4);
  }
  const size_t slash = path.find('/');
  if (slash == std::string_view::npos) {
    return std::unexpected(
        InvalidArgument("invalid_path", "the repository path must be OWNER/REPO"));
  }
  const std::string_view owner = path.substr(0, slash);
  const std::string_view repo = path.substr(slash + 1);
  if (!IsNameSegment(owner) || !IsNameSegment(repo)) {
    return std::unexpected(
        InvalidArgument("invalid_path", "the repository path must be OWNER/REPO"));
  }
  // GitHub names are case-insensitive; the broker's policy compares
  // resources as written, in lower case.
  auto lower = [](std::string_view v) {
    std::string out(v);
    std::transform(out.begin(), out.end(), out.begin(),
                   [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
    return out;
  };
  t.owner = lower(owner);
  t.repo = lower(repo);
  return std::optional<GitRepoTarget>(std::move(t));
}

bool IsBrokerRemote(const std::map<std::string, std::string>& attrs, std::string_view broker_url) {
  auto get = [&](const char* key) -> std::string {
    auto it = attrs.find(key);
    return it == attrs.end() ? std::string() : it->second;
  };
  Result<net::Url> broker = net::ParseUrl(broker_url, net::UrlPolicy::BrokerUrl());
  if (!broker) {
    return false;
  }
  const std::string protocol = get("protocol");
  const std::string host = get("host");
  // git names the remote PROTOCOL://HOST[:PORT], the port as written.
  return protocol == broker->scheme && EqualsIgnoreCase(host, broker->Authority());
}

Result<std::string> FormatSessionCredential(std::string_view session_id,
                                            std::string_view session_token) {
  auto bad = [](std::string_view v) {
    return v.empty() || v.find_first_of(std::string_view("\r\n\0", 3)) != std::string_view::npos;
  };
  if (bad(session_id) || bad(session_token)) {
    return std::unexpected(
        InvalidArgument("invalid_session", "the session id or token cannot be passed to git"));
  }
  std::string out = "username=";
  out += session_id;
  out += "\npassword=";
  out += session_token;
  out += '\n';
  return out;
}

Result<std::string> GitProxyUrl(std::string_view broker_url, std::string_view host,
                                std::string_view owner_repo) {
  std::string_view path = owner_repo;
  if (path.ends_with(".git")) {
    path.remove_suffix(4);
  }
  const size_t slash = path.find('/');
  if (slash == std::string_view::npos || !IsNameSegment(path.substr(0, slash)) ||
      !IsNameSegment(path.substr(slash + 1))) {
    return std::unexpected(
        InvalidArgument("invalid_repository", "the repository must be OWNER/REPO"));
  }
  const bool host_ok =
      !host.empty() && host.size() <= 255 && std::all_of(host.begin(), host.end(), [](char c) {
        return std::isalnum(static_cast<unsigned char>(c)) != 0 || c == '.' || c == '-' ||
               c == ':' || c == '[' || c == ']';
      });
  if (!host_ok) {
    return std::unexpected(InvalidArgument("invalid_host", "the git host must be HOST[:PORT]"));
  }
  std::string url(broker_url);
  while (url.ends_with('/')) {
    url.pop_back();
  }
  return url + "/git/" + std::string(host) + "/" + std::string(path) + ".git";
}

std::string FormatGitCredential(std::string_view token, std::optional<int64_t> expiry_unix) {
  std::string out = "username=x-access-token\npassword=";
  out += token;
  out += '\n';
  if (expiry_unix) {
    out += "password_expiry_utc=" + std::to_string(*expiry_unix) + "\n";
  }
  return out;
}

}  // namespace jitbroker::cli
