// Small URL helpers shared by everything that must decide whether plain http
// is acceptable: only to a loopback host (trust allow_http in docs/configuration.md, webhook URLs,
// GitHub base URLs in tests, jitctl's broker URL and git hosts).
//
// Thread-safety: pure functions.
#pragma once

#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "jitbroker/result.h"

namespace jitbroker::net {

// True for "localhost" (any case), "::1" or "[::1]", and dotted-quad IPv4 in
// 127.0.0.0/8. `host` carries no port. Names that merely start with
// "127." or "localhost." are not loopback.
bool IsLoopbackHost(std::string_view host);

// The host of an authority "host[:port]" or "[v6][:port]" (brackets kept for
// IPv6, as in "[::1]").
std::string_view AuthorityHost(std::string_view authority);

// True when `url` is http:// or https:// with a loopback host.
bool IsLoopbackUrl(std::string_view url);

// Splits application/x-www-form-urlencoded data (a form body or a URL query)
// into name/value pairs in order ('+' is a space, %XX decoded; empty pairs
// skipped). Errors: kInvalidArgument "invalid_request" for a bad %-escape or
// a NUL byte.
[[nodiscard]] Result<std::vector<std::pair<std::string, std::string>>> ParseForm(
    std::string_view data);

}  // namespace jitbroker::net
