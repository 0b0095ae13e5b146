#include "broker/net/url.h"

#include <arpa/inet.h>
#include <netinet/in.h>

#include <algorithm>
#include <charconv>
#include <string>

#include "broker/common/text.h"

namespace jitbroker::net {

namespace {

bool EqualsIgnoreCase(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) {
    return false;
  }
  for (size_t i = 0; i < a.size(); ++i) {
    const char x = (a[i] >= 'A' && a[i] <= 'Z') ? static_cast<char>(a[i] - 'A' + 'a') : a[i];
    if (x != b[i]) {
      return false;
    }
  }
  return true;
}

}  // namespace

bool IsLoopbackHost(std::string_view host) {
  if (host == "::1" || host == "[::1]" || EqualsIgnoreCase(host, "localhost")) {
    return true;
  }
  int parts = 0;
  int first = -1;
  size_t pos = 0;
  while (true) {
    const size_t dot = host.find('.', pos);
    const std::string_view part =
        host.substr(pos, dot == std::string_view::npos ? std::string_view::npos : dot - pos);
    int v = -1;
    auto [ptr, ec] = std::from_chars(part.data(), part.data() + part.size(), v);
    if (part.empty() || part.size() > 3 || ec != std::errc() || ptr != part.data() + part.size() ||
        v < 0 || v > 255) {
      return false;
    }
    if (parts == 0) {
      first = v;
    }
    ++parts;
    if (dot == std::string_view::npos) {
      break;
    }
    pos = dot + 1;
  }
  return parts == 4 && first == 127;
}

// ---------------------------------------------------------------------------
// URLs

UrlPolicy UrlPolicy::OidcEndpoint(bool allow_http) {
  UrlPolicy p;
  p.http = allow_http ? HttpRule::kLoopbackOnly : HttpRule::kRefuse;
  p.allow_dot_segments = false;
  return p;
}

UrlPolicy UrlPolicy::GitHubBaseUrl(bool allow_http) {
  UrlPolicy p;
  p.http = allow_http ? HttpRule::kLoopbackOnly : HttpRule::kRefuse;
  p.allow_at_sign = false;
  return p;
}

UrlPolicy UrlPolicy::WebhookUrl() {
  UrlPolicy p;
  p.http = HttpRule::kLoopbackOnly;
  p.allow_query = true;
  return p;
}

UrlPolicy UrlPolicy::BrokerUrl() {
  UrlPolicy p;
  p.http = HttpRule::kAnyHost;
  p.allow_underscore_in_host = true;  // container service names
  return p;
}

UrlPolicy UrlPolicy::ActionsTokenRequestUrl() {
  UrlPolicy p;
  p.http = HttpRule::kLoopbackOnly;
  p.allow_query = true;
  p.allow_underscore_in_host = true;
  p.max_length = 8192;
  return p;
}

UrlPolicy UrlPolicy::GitRemote() {
  UrlPolicy p;
  p.http = HttpRule::kLoopbackOnly;
  p.allow_path = false;
  p.allow_underscore_in_host = true;
  return p;
}

std::string Url::Authority() const {
  std::string out = ipv6 ? "[" + host + "]" : host;
  if (port) {
    out += ":" + std::to_string(*port);
  }
  return out;
}

namespace {

bool IsAsciiAlpha(char c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'); }
bool IsAsciiDigit(char c) { return c >= '0' && c <= '9'; }
bool IsAllDigits(std::string_view s) {
  return !s.empty() && std::all_of(s.begin(), s.end(), IsAsciiDigit);
}

// RFC 3986 pchar without pct-encoded: unreserved / sub-delims / ":" / "@".
bool IsPchar(char c) {
  if (IsAsciiAlpha(c) || IsAsciiDigit(c)) {
    return true;
  }
  return std::string_view("-._~!$&'()*+,;=:@").find(c) != std::string_view::npos;
}

// RFC 3986 path (pchar and '/') or, with `query_chars`, query and fragment
// (also '?'); every '%' starts a %XX escape.
bool IsValidComponent(std::string_view s, bool query_chars) {
  for (size_t i = 0; i < s.size(); ++i) {
    const char c = s[i];
    if (c == '%') {
      if (i + 2 >= s.size() || text::HexDigitValue(s[i + 1]) < 0 ||
          text::HexDigitValue(s[i + 2]) < 0) {
        return false;
      }
      i += 2;
    } else if (!(IsPchar(c) || c == '/' || (query_chars && c == '?'))) {
      return false;
    }
  }
  return true;
}

// "." or ".." also when spelled with %2e, which WHATWG URL parsers (and the
// servers behind them) resolve like the plain dots.
bool IsDotSegment(std::string_view seg) {
  std::string lower = text::AsciiLower(seg);
  for (size_t pos = lower.find("%2e"); pos != std::string::npos; pos = lower.find("%2e", pos)) {
    lower.replace(pos, 3, ".");
  }
  return lower == "." || lower == "..";
}

// Empty, "." or ".." segments, except for the empty one a trailing "/"
// leaves.
bool HasDotOrEmptySegment(std::string_view path) {
  if (path.empty()) {
    return false;
  }
  size_t start = 1;  // path starts with '/'
  while (true) {
    const size_t next = path.find('/', start);
    const std::string_view seg =
        path.substr(start, next == std::string_view::npos ? std::string_view::npos : next - start);
    if (IsDotSegment(seg) || (seg.empty() && next != std::string_view::npos)) {
      return true;
    }
    if (next == std::string_view::npos) {
      return false;
    }
    start = next + 1;
  }
}

// Dotted-quad IPv4 in canonical form: four decimal parts 0-255 without
// leading zeros.
bool IsCanonicalIpv4(std::string_view host) {
  int parts = 0;
  size_t start = 0;
  while (true) {
    const size_t dot = host.find('.', start);
    const std::string_view part =
        host.substr(start, dot == std::string_view::npos ? std::string_view::npos : dot - start);
    if (!IsAllDigits(part) || part.size() > 3 || (part.size() > 1 && part[0] == '0')) {
      return false;
    }
    int v = 0;
    std::from_chars(part.data(), part.data() + part.size(), v);
    if (v > 255) {
      return false;
    }
    ++parts;
    if (dot == std::string_view::npos) {
      break;
    }
    start = dot + 1;
  }
  return parts == 4;
}

// A label that resolvers (inet_aton) read as a number: decimal, or 0x hex.
bool IsNumericLabel(std::string_view label) {
  if (IsAllDigits(label)) {
    return true;
  }
  if (label.size() >= 2 && label[0] == '0' && (label[1] == 'x' || label[1] == 'X')) {
    return std::all_of(label.begin() + 2, label.end(),
                       [](char c) { return text::HexDigitValue(c) >= 0; });
  }
  return false;
}

// A DNS name (labels of 1-63 letters, digits, '-', and '_' when allowed; one
// trailing dot) or a canonical IPv4 address. A name whose last label is
// numeric is read as an IPv4 address by resolvers, so it must be one.
bool IsValidRegName(std::string_view host, bool allow_underscore) {
  std::string_view name = host;
  if (name.ends_with('.')) {
    name.remove_suffix(1);
  }
  if (name.empty() || name.size() > 253) {
    return false;
  }
  auto is_label_char = [&](char c) {
    return IsAsciiAlpha(c) || IsAsciiDigit(c) || c == '-' || (allow_underscore && c == '_');
  };
  size_t start = 0;
  std::string_view last;
  while (true) {
    const size_t dot = name.find('.', start);
    const std::string_view label =
        name.substr(start, dot == std::string_view::npos ? std::string_view::npos : dot - start);
    if (label.empty() || label.size() > 63 ||
        !std::all_of(label.begin(), label.end(), is_label_char)) {
      return false;
    }
    last = label;
    if (dot == std::string_view::npos) {
      break;
    }
    start = dot + 1;
  }
  if (IsNumericLabel(last)) {
    return name.size() == host.size() && IsCanonicalIpv4(host);
  }
  return true;
}

bool IsValidIpv6(std::string_view addr) {
  if (addr.empty() || addr.size() >= INET6_ADDRSTRLEN ||
      !std::all_of(addr.begin(), addr.end(),
                   [](char c) { return text::HexDigitValue(c) >= 0 || c == ':' || c == '.'; })) {
    return false;
  }
  const std::string z(addr);
  in6_addr out{};
  return inet_pton(AF_INET6, z.c_str(), &out) == 1;
}

Error UrlError(std::string_view reason, std::string message) {
  return InvalidArgument(std::string(reason), std::move(message));
}

std::string QueryFragmentMessage(const UrlPolicy& policy) {
  if (!policy.allow_query && !policy.allow_fragment) {
    return "must not have a query or fragment";
  }
  return policy.allow_query ? "must not have a fragment" : "must not have a query";
}

}  // namespace

Result<Url> ParseUrl(std::string_view url, const UrlPolicy& policy) {
  const bool https_only = policy.http == HttpRule::kRefuse;
  const std::string absolute = https_only
                                   ? "must be an absolute https:// URL with a host"
                                   : "must be an absolute http:// or https:// URL with a host";
  if (url.empty()) {
    return std::unexpected(UrlError("url_not_absolute", absolute));
  }
  if (url.size() > policy.max_length) {
    return std::unexpected(UrlError(
        "url_too_long",
        "must be an absolute URL of at most " + std::to_string(policy.max_length) + " characters"));
  }
  for (const char c : url) {
    const auto u = static_cast<unsigned char>(c);
    if (u <= 0x20 || u >= 0x7f || c == '\\') {
      return std::unexpected(UrlError(
          "url_invalid_character",
          "must not contain spaces, control characters, backslashes or non-ASCII characters"));
    }
  }
  const size_t scheme_end = url.find("://");
  const std::string_view scheme = url.substr(0, scheme_end);
  if (scheme_end == std::string_view::npos || scheme.empty() || !IsAsciiAlpha(scheme[0]) ||
      !std::all_of(scheme.begin(), scheme.end(), [](char c) {
        return IsAsciiAlpha(c) || IsAsciiDigit(c) || c == '+' || c == '-' || c == '.';
      })) {
    return std::unexpected(UrlError("url_not_absolute", absolute));
  }
  Url out;
  out.scheme = text::AsciiLower(scheme);
  if (out.scheme != "https" && out.scheme != "http") {
    return std::unexpected(
        UrlError("url_scheme", https_only ? "must use https" : "must use http or https"));
  }
  if (out.scheme != scheme) {
    return std::unexpected(UrlError("url_scheme_case", "the scheme must be lower case"));
  }

  // Authority: up to the first '/', '?' or '#' (backslashes are refused above,
  // so no parser can read one as the end of the authority).
  const std::string_view rest = url.substr(scheme_end + 3);
  const size_t authority_end = std::min(rest.find_first_of("/?#"), rest.size());
  const std::string_view authority = rest.substr(0, authority_end);
  if (authority.find('@') != std::string_view::npos) {
    return std::unexpected(UrlError("url_userinfo", "must not carry userinfo (user@host)"));
  }
  std::string_view host;
  std::optional<std::string_view> port;
  if (authority.starts_with('[')) {
    const size_t close = authority.find(']');
    if (close == std::string_view::npos) {
      return std::unexpected(UrlError("url_invalid_host", "has an invalid host"));
    }
    host = authority.substr(1, close - 1);
    const std::string_view after = authority.substr(close + 1);
    if (!after.empty()) {
      if (after.front() != ':') {
        return std::unexpected(UrlError("url_invalid_host", "has an invalid host"));
      }
      port = after.substr(1);
    }
    if (host.find('%') != std::string_view::npos) {
      return std::unexpected(UrlError(
          "url_invalid_host", "has an invalid host (IPv6 zone identifiers are not accepted)"));
    }
    if (!IsValidIpv6(host)) {
      return std::unexpected(UrlError("url_invalid_host", "has an invalid host"));
    }
    out.ipv6 = true;
  } else {
    const size_t colon = authority.find(':');
    host = authority.substr(0, colon);
    if (colon != std::string_view::npos) {
      port = authority.substr(colon + 1);
    }
    if (host.empty()) {
      return std::unexpected(UrlError("url_no_host", absolute));
    }
    if (!IsValidRegName(host, policy.allow_underscore_in_host)) {
      return std::unexpected(UrlError("url_invalid_host", "has an invalid host"));
    }
  }
  out.host = text::AsciiLower(host);
  if (port) {
    int value = 0;
    if (!IsAllDigits(*port) || port->size() > 5 ||
        std::from_chars(port->data(), port->data() + port->size(), value).ec != std::errc() ||
        value < 1 || value > 65535) {
      return std::unexpected(UrlError("url_invalid_port", "has an invalid port"));
    }
    out.port = static_cast<uint16_t>(value);
  }
  if (out.scheme == "http") {
    if (policy.http == HttpRule::kRefuse) {
      return std::unexpected(UrlError("url_http_refused", "must use https"));
    }
    if (policy.http == HttpRule::kLoopbackOnly && !IsLoopbackHost(out.host)) {
      return std::unexpected(
          UrlError("url_http_not_loopback",
                   "plain http is allowed only for a loopback host (127.0.0.0/8, ::1, localhost)"));
    }
  }

  // Path, query and fragment.
  std::string_view tail = rest.substr(authority_end);
  if (const size_t hash = tail.find('#'); hash != std::string_view::npos) {
    if (!policy.allow_fragment) {
      return std::unexpected(UrlError("url_fragment", QueryFragmentMessage(policy)));
    }
    out.fragment = std::string(tail.substr(hash + 1));
    tail = tail.substr(0, hash);
  }
  if (const size_t question = tail.find('?'); question != std::string_view::npos) {
    if (!policy.allow_query) {
      return std::unexpected(UrlError("url_query", QueryFragmentMessage(policy)));
    }
    out.query = std::string(tail.substr(question + 1));
    tail = tail.substr(0, question);
  }
  out.path = std::string(tail);
  if (!IsValidComponent(out.path, false) || (out.query && !IsValidComponent(*out.query, true)) ||
      (out.fragment && !IsValidComponent(*out.fragment, true))) {
    return std::unexpected(
        UrlError("url_invalid_character",
                 "must use only the characters RFC 3986 allows, with %XX escapes for the others"));
  }
  if (!policy.allow_at_sign && rest.substr(authority_end).find('@') != std::string_view::npos) {
    return std::unexpected(UrlError("url_invalid_character", "must not contain '@'"));
  }
  if (!policy.allow_path && !out.path.empty() && out.path != "/") {
    return std::unexpected(UrlError("url_path", "must not have a path"));
  }
  if (!policy.allow_dot_segments && HasDotOrEmptySegment(out.path)) {
    return std::unexpected(
        UrlError("url_dot_segment", "must not have empty, '.' or '..' path segments"));
  }
  return out;
}

std::vector<std::string> LenientHttpHosts(std::string_view text) {
  const std::string lower = text::AsciiLower(text);
  std::string_view rest = lower;
  if (rest.starts_with("https://")) {
    rest.remove_prefix(8);
  } else if (rest.starts_with("http://")) {
    rest.remove_prefix(7);
  } else {
    return {};
  }
  std::vector<std::string> out;
  // The authority ends at the first '/' for an RFC 3986 reader; a WHATWG
  // reader also stops at '?', '#' and '\'.
  for (std::string_view ends : {std::string_view("/"), std::string_view("/?#\\")}) {
    std::string_view authority = rest.substr(0, rest.find_first_of(ends));
    if (const size_t at = authority.rfind('@'); at != std::string_view::npos) {
      authority.remove_prefix(at + 1);  // userinfo is no disguise
    }
    std::string_view host;
    if (authority.starts_with('[')) {
      const size_t close = authority.find(']');
      host =
          authority.substr(1, close == std::string_view::npos ? std::string_view::npos : close - 1);
    } else {
      host = authority.substr(0, authority.find(':'));
    }
    while (host.ends_with('.')) {
      host.remove_suffix(1);
    }
    if (!host.empty() && std::find(out.begin(), out.end(), host) == out.end()) {
      out.emplace_back(host);
    }
  }
  return out;
}

Result<std::string> PercentDecode(std::string_view s, bool plus_is_space) {
  std::string out;
  out.reserve(s.size());
  for (size_t i = 0; i < s.size(); ++i) {
    const char c = s[i];
    if (c == '+' && plus_is_space) {
      out += ' ';
    } else if (c == '%') {
      if (i + 2 >= s.size()) {
        return std::unexpected(
            InvalidArgument("invalid_request", "the %-encoded text has a truncated escape"));
      }
      const int hi = text::HexDigitValue(s[i + 1]);
      const int lo = text::HexDigitValue(s[i + 2]);
      if (hi < 0 || lo < 0) {
        return std::unexpected(
            InvalidArgument("invalid_request", "the %-encoded text has an invalid escape"));
      }
      out += static_cast<char>(hi * 16 + lo);
      i += 2;
    } else {
      out += c;
    }
  }
  if (out.find('\0') != std::string::npos) {
    return std::unexpected(
        InvalidArgument("invalid_request", "the %-encoded text contains a NUL byte"));
  }
  return out;
}

namespace {

Result<std::string> FormDecode(std::string_view s) { return PercentDecode(s, true); }

}  // namespace

Result<std::vector<std::pair<std::string, std::string>>> ParseForm(std::string_view data) {
  std::vector<std::pair<std::string, std::string>> out;
  size_t start = 0;
  while (start <= data.size()) {
    size_t amp = data.find('&', start);
    if (amp == std::string_view::npos) {
      amp = data.size();
    }
    std::string_view pair = data.substr(start, amp - start);
    if (!pair.empty()) {
      const size_t eq = pair.find('=');
      JITBROKER_ASSIGN_OR_RETURN(std::string name, FormDecode(pair.substr(0, eq)));
      JITBROKER_ASSIGN_OR_RETURN(
          std::string value,
          FormDecode(eq == std::string_view::npos ? std::string_view() : pair.substr(eq + 1)));
      out.emplace_back(std::move(name), std::move(value));
    }
    if (amp >= data.size()) {
      break;
    }
    start = amp + 1;
  }
  return out;
}

std::string PercentEncode(std::string_view s, bool form) {
  static constexpr char kHex[] = "0123456789ABCDEF";
  std::string out;
  out.reserve(s.size());
  for (char c : s) {
    const auto u = static_cast<unsigned char>(c);
    if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' ||
        c == '.' || c == '_' || c == '~') {
      out.push_back(c);
    } else if (form && c == ' ') {
      out.push_back('+');
    } else {
      out.push_back('%');
      out.push_back(kHex[u >> 4]);
      out.push_back(kHex[u & 0x0f]);
    }
  }
  return out;
}

}  // namespace jitbroker::net
