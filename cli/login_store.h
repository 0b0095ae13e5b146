// Where `jitctl login` keeps the ID tokens it collected (docs/jitctl.md,
// "login"): one file, $XDG_CONFIG_HOME/jitbroker/logins.json (else
// ~/.config/jitbroker/logins.json), mode 0600 in a 0700 directory, mapping
// each broker URL to {token, principal, expires_at}. The file is replaced
// atomically (a temporary file renamed over it) and read with a bound
// (256 KiB). Tokens are short-lived (the identity provider's ID token
// lifetime, usually an hour): an expired one is never returned.
//
// Thread-safety: none needed (one jitctl process, one command).
#pragma once

#include <functional>
#include <optional>
#include <string>

#include "jitbroker/clock.h"
#include "jitbroker/result.h"
#include "jitbroker/secret.h"

namespace jitbroker::cli {

using GetEnv = std::function<std::optional<std::string>(const char* name)>;

struct StoredLogin {
  SecretValue token;
  std::string principal;
  TimePoint expires_at;
};

// The file's path from the environment. Errors: neither XDG_CONFIG_HOME nor
// HOME is set (or they are relative).
[[nodiscard]] Result<std::string> LoginStorePath(const GetEnv& getenv);

// The login for `broker_url` still valid at `now` (with a 30 s margin);
// nullopt when there is none, it expired, or the file does not exist.
// Errors: the file cannot be read or is not what jitctl writes.
[[nodiscard]] Result<std::optional<StoredLogin>> ReadLogin(const GetEnv& getenv,
                                                           const std::string& broker_url,
                                                           TimePoint now);
// Records (or, with `login` null, forgets) the login for `broker_url`;
// expired entries of other brokers are dropped on the way.
[[nodiscard]] Status WriteLogin(const GetEnv& getenv, const std::string& broker_url,
                                const StoredLogin* login, TimePoint now);

}  // namespace jitbroker::cli
