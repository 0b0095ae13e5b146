#include "broker/net/url.h"

#include <charconv>

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

std::string_view AuthorityHost(std::string_view authority) {
  if (authority.starts_with('[')) {
    const size_t close = authority.find(']');
    return close == std::string_view::npos ? authority : authority.substr(0, close + 1);
  }
  return authority.substr(0, authority.find(':'));
}

bool IsLoopbackUrl(std::string_view url) {
  size_t skip = 0;
  if (url.starts_with("http://")) {
    skip = 7;
  } else if (url.starts_with("https://")) {
    skip = 8;
  } else {
    return false;
  }
  std::string_view authority = url.substr(skip);
  authority = authority.substr(0, authority.find_first_of("/?#"));
  if (authority.find('@') != std::string_view::npos) {
    return false;
  }
  return IsLoopbackHost(AuthorityHost(authority));
}

namespace {

Result<std::string> FormDecode(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  for (size_t i = 0; i < s.size(); ++i) {
    const char c = s[i];
    if (c == '+') {
      out += ' ';
    } else if (c == '%') {
      if (i + 2 >= s.size()) {
        return std::unexpected(
            InvalidArgument("invalid_request", "the form data has a truncated %-escape"));
      }
      const int hi = text::HexDigitValue(s[i + 1]);
      const int lo = text::HexDigitValue(s[i + 2]);
      if (hi < 0 || lo < 0) {
        return std::unexpected(
            InvalidArgument("invalid_request", "the form data has an invalid %-escape"));
      }
      out += static_cast<char>(hi * 16 + lo);
      i += 2;
    } else {
      out += c;
    }
  }
  if (out.find('\0') != std::string::npos) {
    return std::unexpected(InvalidArgument("invalid_request", "the form data contains a NUL byte"));
  }
  return out;
}

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

}  // namespace jitbroker::net
