// The one URL parser of jitbroker and jitctl, and the one loopback test.
//
// Every URL the broker or jitctl will fetch, post to or send a credential to
// (an OIDC issuer and its jwks_uri, the GitHub API root, the approval webhook,
// jitctl's broker URL, the runner's OIDC token endpoint, a git remote) is
// parsed by ParseUrl against a UrlPolicy that states what that use accepts.
// The grammar is RFC 3986's, restricted to what those uses need:
//
//   scheme "://" host [":" port] [path] ["?" query] ["#" fragment]
//
//   - scheme: "https" or "http", written in lower case;
//   - host: a DNS name (letters, digits, '-', '.'; '_' only when the policy
//     says so), a dotted-quad IPv4 address in canonical form, or an IPv6
//     address in brackets (no zone identifier); a host whose last label is
//     numeric must be a canonical IPv4 address, so that "127.1",
//     "2130706433" or "0x7f.1" (which resolvers read as 127.0.0.1) never
//     pass as names;
//   - port: 1 to 65535, at most five digits;
//   - path, query, fragment: RFC 3986 characters with valid %XX escapes;
//   - never userinfo ("user:password@host"), backslashes, spaces, control or
//     non-ASCII characters (whatever the policy).
//
// Plain http is allowed only as the policy says, and "loopback only" means
// IsLoopbackHost() of the parsed host, nothing looser. Error messages never
// quote the URL (a webhook URL's path or query may hold a token).
//
// Thread-safety: pure functions and value types.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "jitbroker/result.h"

namespace jitbroker::net {

// True for "localhost" (any case), "::1" or "[::1]", and dotted-quad IPv4 in
// 127.0.0.0/8. `host` carries no port. Names that merely start with
// "127." or "localhost." are not loopback. The only loopback test: every
// "http only to loopback" rule asks it about a host ParseUrl returned.
bool IsLoopbackHost(std::string_view host);

// Whether, and to which hosts, plain http is acceptable.
enum class HttpRule {
  kRefuse,        // https only
  kLoopbackOnly,  // http only when IsLoopbackHost(host)
  kAnyHost,       // http anywhere (the caller warns or refuses by itself)
};

// What one use of a URL accepts beyond the fixed grammar above. Defaults are
// the strictest; the named presets below are the uses in the code.
struct UrlPolicy {
  HttpRule http = HttpRule::kRefuse;
  // A path other than "" or "/".
  bool allow_path = true;
  // Empty, "." or ".." path segments (also as %2e); a trailing "/" is fine.
  bool allow_dot_segments = true;
  bool allow_query = false;
  bool allow_fragment = false;
  // '@' in the path, query or fragment (in the authority it is userinfo,
  // which is never accepted).
  bool allow_at_sign = true;
  // '_' in a DNS name (RFC 3986 allows it, DNS host names do not).
  bool allow_underscore_in_host = false;
  size_t max_length = 2048;

  // An OIDC issuer of a trust policy, and the jwks_uri its discovery
  // document names: https (http to a loopback host with allow_http), a path
  // without empty/"."/".." segments, no query or fragment. The issuer is
  // compared as written, so no two spellings may name one place.
  static UrlPolicy OidcEndpoint(bool allow_http);
  // The GitHub App issuer's base_url: https (http to a loopback host with
  // allow_http), a path prefix, no query, fragment or '@'.
  static UrlPolicy GitHubBaseUrl(bool allow_http);
  // approvals.webhook.url: https (http to a loopback host), a path and a
  // query (chat webhooks carry tokens there), no fragment.
  static UrlPolicy WebhookUrl();
  // jitctl's --url / JITBROKER_URL: http or https to any host (jitctl warns
  // about plain http off loopback; ci exchange refuses it), a path prefix,
  // no query or fragment.
  static UrlPolicy BrokerUrl();
  // The runner's ACTIONS_ID_TOKEN_REQUEST_URL: https (http to a loopback
  // host), a path and a query (jitctl appends &audience=), no fragment.
  static UrlPolicy ActionsTokenRequestUrl();
  // A git remote as git describes it to a credential helper
  // (PROTOCOL://HOST[:PORT]): https, or http to a loopback host; no path.
  static UrlPolicy GitRemote();
};

struct Url {
  std::string scheme;                   // "https" or "http"
  std::string host;                     // lower case; an IPv6 address without brackets
  bool ipv6 = false;                    // host was a bracketed IPv6 literal
  std::optional<uint16_t> port;         // as written; nullopt when absent
  std::string path;                     // "" or starting with '/', as written
  std::optional<std::string> query;     // after '?', as written
  std::optional<std::string> fragment;  // after '#', as written

  // "host", "[v6]", followed by ":port" when the URL names one.
  std::string Authority() const;
  bool IsLoopback() const { return IsLoopbackHost(host); }
};

// Parses `url` and checks it against `policy`. Errors: kInvalidArgument with
// one of these reasons and a message that completes "<what> ...", e.g.
// "must not carry userinfo (user@host)":
//   url_too_long, url_invalid_character, url_not_absolute (no "scheme://"),
//   url_no_host, url_scheme (neither http nor https), url_scheme_case,
//   url_userinfo, url_invalid_host, url_invalid_port, url_http_refused
//   (http when the policy is https only), url_http_not_loopback,
//   url_path, url_dot_segment, url_query, url_fragment.
[[nodiscard]] Result<Url> ParseUrl(std::string_view url, const UrlPolicy& policy);

// The lower-case hosts (IPv6 without brackets, trailing dots removed) that
// an HTTP client could read in anything resembling an http(s) URL, however
// it is spelled: any scheme case, userinfo, odd characters after the host.
// Two readings: the authority ends at the first '/' (RFC 3986) or at the
// first of "/?#\" (WHATWG). For lints that must not be sidestepped by a
// spelling ParseUrl refuses (e.g. "an audience must not be a URL on the
// issuer's host"); never for deciding where to connect. Empty when `text`
// does not start with http:// or https:// (any case) or names no host.
std::vector<std::string> LenientHttpHosts(std::string_view text);

// Decodes %XX escapes (and '+' as a space when `plus_is_space`: form data;
// RFC 3986 text keeps '+'). Errors: kInvalidArgument "invalid_request" for a
// bad %-escape or a NUL byte.
[[nodiscard]] Result<std::string> PercentDecode(std::string_view s, bool plus_is_space);

// Percent-encodes everything but RFC 3986 unreserved characters. In form
// mode (application/x-www-form-urlencoded) a space becomes '+'.
std::string PercentEncode(std::string_view s, bool form = false);

// Splits application/x-www-form-urlencoded data (a form body or a URL query)
// into name/value pairs in order ('+' is a space, %XX decoded; empty pairs
// skipped). Errors: kInvalidArgument "invalid_request" for a bad %-escape or
// a NUL byte.
[[nodiscard]] Result<std::vector<std::pair<std::string, std::string>>> ParseForm(
    std::string_view data);

}  // namespace jitbroker::net
