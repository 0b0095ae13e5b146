// Redaction (broker/audit/redact.h). RedactText collects the spans to
// replace in one pass over the text (PEM blocks first, then each
// whitespace-separated token and, for "KEY: VALUE" and "Bearer X", the token
// after it), merges overlapping spans and rebuilds the text once.
#include "broker/audit/redact.h"

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <vector>

#include "broker/crypto/crypto.h"

namespace jitbroker::audit {

namespace {

// Matched as substrings of the key's words joined and lower-cased.
constexpr std::array<std::string_view, 14> kSecretWords = {
    "password",   "passwd",     "secret",        "token",       "apikey",
    "privatekey", "credential", "authorization", "cookie",      "passphrase",
    "signature",  "accesskey",  "sessionkey",    "clientsecret"};

// Matched against whole words only: short enough to occur inside harmless
// words ("author", "signal", "passenger", "keyword").
constexpr std::array<std::string_view, 12> kSecretShortWords = {
    "key", "pat", "pw", "pwd", "pass", "auth", "sig", "otp", "jwt", "bearer", "sas", "psk"};

struct Span {
  size_t begin;
  size_t end;  // exclusive
  std::string_view kind;
};

bool IsSpace(char c) {
  return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v';
}
bool IsAlnum(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
}
bool IsUpperAlnum(char c) { return (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9'); }
bool IsBase64Url(char c) { return IsAlnum(c) || c == '-' || c == '_'; }
// The alphabet of base64, base64url and their padding.
bool IsTokenChar(char c) { return IsBase64Url(c) || c == '+' || c == '/' || c == '='; }
bool IsHexish(char c) {
  return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F') || c == '-';
}
char Lower(char c) { return (c >= 'A' && c <= 'Z') ? static_cast<char>(c - 'A' + 'a') : c; }

bool EqualsIgnoreCase(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) {
    return false;
  }
  for (size_t i = 0; i < a.size(); ++i) {
    if (Lower(a[i]) != Lower(b[i])) {
      return false;
    }
  }
  return true;
}

// Character class for the class-change ratio: lower, upper, digit.
int ClassOf(char c) {
  if (c >= 'a' && c <= 'z') {
    return 0;
  }
  if (c >= 'A' && c <= 'Z') {
    return 1;
  }
  return 2;
}

// The share of adjacent alphanumeric pairs (within separator-free segments)
// whose classes differ, an upper-case letter followed by a lower-case one
// (a CamelCase word start) not counting. Random base64 scores about 0.45;
// CamelCase, dashed and dotted names score low: their letters come in
// same-case runs.
double ClassChangeRatio(std::string_view s) {
  size_t pairs = 0;
  size_t changes = 0;
  for (size_t i = 1; i < s.size(); ++i) {
    if (IsAlnum(s[i]) && IsAlnum(s[i - 1])) {
      ++pairs;
      const int a = ClassOf(s[i - 1]);
      const int b = ClassOf(s[i]);
      if (a != b && !(a == 1 && b == 0)) {
        ++changes;
      }
    }
  }
  return pairs == 0 ? 0.0 : static_cast<double>(changes) / static_cast<double>(pairs);
}

bool LooksHighEntropy(std::string_view run) {
  if (run.size() < kHighEntropyMinLength) {
    return false;
  }
  bool digit = false;
  bool letter = false;
  bool hex_only = true;
  for (char c : run) {
    digit = digit || (c >= '0' && c <= '9');
    letter = letter || (IsAlnum(c) && !(c >= '0' && c <= '9'));
    hex_only = hex_only && IsHexish(c);
  }
  // Hex (commit SHAs, digests, UUIDs) is what audit records are made of.
  if (!digit || !letter || hex_only) {
    return false;
  }
  return ShannonEntropyBitsPerChar(run) >= kHighEntropyMinBitsPerChar &&
         ClassChangeRatio(run) >= kHighEntropyMinClassChangeRatio;
}

// At `i` a word starts: the text start or a non-alphanumeric character before.
bool AtBoundary(std::string_view s, size_t i) { return i == 0 || !IsAlnum(s[i - 1]); }

size_t RunEnd(std::string_view s, size_t i, bool (*allowed)(char)) {
  while (i < s.size() && allowed(s[i])) {
    ++i;
  }
  return i;
}

// Prefixed tokens, JWTs and AWS key ids anywhere inside `tok` (offsets
// relative to `tok`).
void FindKnownTokens(std::string_view tok, std::vector<Span>& out) {
  struct Prefix {
    std::string_view prefix;
    std::string_view kind;
    size_t min_body;
    bool (*body)(char);
  };
  static constexpr Prefix kPrefixes[] = {
      {"github_pat_", "github_token", 20, IsBase64Url},
      {"ghp_", "github_token", 20, IsAlnum},
      {"gho_", "github_token", 20, IsAlnum},
      {"ghu_", "github_token", 20, IsAlnum},
      {"ghs_", "github_token", 20, IsAlnum},
      {"ghr_", "github_token", 20, IsAlnum},
      {"glpat-", "gitlab_token", 16, IsBase64Url},
      {"xoxa-", "slack_token", 10, IsBase64Url},
      {"xoxb-", "slack_token", 10, IsBase64Url},
      {"xoxp-", "slack_token", 10, IsBase64Url},
      {"xoxr-", "slack_token", 10, IsBase64Url},
      {"xoxs-", "slack_token", 10, IsBase64Url},
  };
  for (size_t i = 0; i < tok.size(); ++i) {
    if (!AtBoundary(tok, i)) {
      continue;
    }
    const std::string_view rest = tok.substr(i);
    bool matched = false;
    for (const Prefix& p : kPrefixes) {
      if (rest.starts_with(p.prefix)) {
        const size_t end = RunEnd(tok, i + p.prefix.size(), p.body);
        if (end - i - p.prefix.size() >= p.min_body) {
          out.push_back({i, end, p.kind});
          i = end - 1;
          matched = true;
        }
        break;
      }
    }
    if (matched) {
      continue;
    }
    // AWS access key ids: a 4-letter prefix and 16 upper-case alphanumerics.
    for (std::string_view prefix : {"AKIA", "ASIA", "ABIA", "ACCA"}) {
      if (rest.starts_with(prefix)) {
        const size_t end = RunEnd(tok, i, IsUpperAlnum);
        if (end - i == 20) {
          out.push_back({i, end, "aws_access_key_id"});
          i = end - 1;
          matched = true;
        }
        break;
      }
    }
    if (matched) {
      continue;
    }
    // JWS/JWE compact serialisation: base64url segments joined by dots, the
    // first a JSON object ("eyJ" is the base64url of "{\"").
    if (rest.starts_with("eyJ")) {
      size_t end = RunEnd(tok, i, IsBase64Url);
      int dots = 0;
      while (end < tok.size() && tok[end] == '.' && dots < 4) {
        ++dots;
        end = RunEnd(tok, end + 1, IsBase64Url);
      }
      if (dots >= 2 && end - i >= 16) {
        out.push_back({i, end, "jwt"});
        i = end - 1;
      }
    }
  }
}

// user:password@ in scheme://user:password@host.
void FindUrlCredentials(std::string_view tok, std::vector<Span>& out) {
  size_t from = 0;
  while (true) {
    const size_t scheme = tok.find("://", from);
    if (scheme == std::string_view::npos) {
      return;
    }
    const size_t start = scheme + 3;
    const size_t stop = tok.find_first_of("/?#", start);
    const size_t at = tok.rfind('@', stop == std::string_view::npos ? tok.size() : stop);
    if (at != std::string_view::npos && at > start) {
      const std::string_view userinfo = tok.substr(start, at - start);
      if (userinfo.find(':') != std::string_view::npos) {
        out.push_back({start, at, "url_credentials"});
      }
    }
    from = start;
  }
}

// KEY=VALUE pieces of a token (query strings, env assignments, "pw:x"):
// the VALUE of each piece whose KEY is secret-like.
void FindAssignments(std::string_view tok, std::vector<Span>& out) {
  size_t piece = 0;
  while (piece < tok.size()) {
    size_t piece_end = tok.find_first_of("?&;,", piece);
    if (piece_end == std::string_view::npos) {
      piece_end = tok.size();
    }
    const std::string_view p = tok.substr(piece, piece_end - piece);
    const size_t sep = p.find_first_of("=:");
    if (sep != std::string_view::npos && sep + 1 < p.size() && p[sep + 1] != '/') {
      std::string_view key = p.substr(0, sep);
      while (!key.empty() && !IsAlnum(key.front())) {
        key.remove_prefix(1);
      }
      size_t value = piece + sep + 1;
      while (value < piece_end && (tok[value] == '"' || tok[value] == '\'')) {
        ++value;
      }
      size_t value_end = piece_end;
      while (value_end > value && (tok[value_end - 1] == '"' || tok[value_end - 1] == '\'')) {
        --value_end;
      }
      if (!key.empty() && IsSecretLikeKey(key) && value < value_end) {
        out.push_back({value, value_end, "secret_assignment"});
      }
    }
    piece = piece_end + 1;
  }
}

void FindHighEntropy(std::string_view tok, std::vector<Span>& out) {
  size_t i = 0;
  while (i < tok.size()) {
    if (!IsTokenChar(tok[i])) {
      ++i;
      continue;
    }
    const size_t end = RunEnd(tok, i, IsTokenChar);
    if (LooksHighEntropy(tok.substr(i, end - i))) {
      out.push_back({i, end, "high_entropy"});
    }
    i = end;
  }
}

// Every "-----BEGIN X-----" … "-----END X-----" block (to the end of the
// text when its END line is missing).
void FindPemBlocks(std::string_view text, std::vector<Span>& out) {
  size_t from = 0;
  while (true) {
    const size_t begin = text.find("-----BEGIN ", from);
    if (begin == std::string_view::npos) {
      return;
    }
    size_t end = text.size();
    const size_t end_marker = text.find("-----END ", begin);
    if (end_marker != std::string_view::npos) {
      const size_t close = text.find("-----", end_marker + 9);
      end = close == std::string_view::npos ? text.size() : close + 5;
    }
    out.push_back({begin, end, "pem"});
    from = end;
  }
}

// The token's text without wrapping quotes and brackets and without
// trailing sentence punctuation.
std::pair<size_t, size_t> Core(std::string_view text, size_t begin, size_t end) {
  constexpr std::string_view kOpen = "\"'([{<`";
  constexpr std::string_view kClose = "\"')]}>`,;.!?";
  while (begin < end && kOpen.find(text[begin]) != std::string_view::npos) {
    ++begin;
  }
  while (end > begin && kClose.find(text[end - 1]) != std::string_view::npos) {
    --end;
  }
  return {begin, end};
}

bool IsBasicCredential(std::string_view token) {
  auto decoded = crypto::Base64Decode(token);
  return decoded && decoded->find(':') != std::string::npos;
}

std::vector<Span> FindSpans(std::string_view text) {
  std::vector<Span> spans;
  FindPemBlocks(text, spans);
  const std::vector<Span> pem = spans;
  auto in_pem = [&](size_t i) {
    for (const Span& s : pem) {
      if (i >= s.begin && i < s.end) {
        return true;
      }
    }
    return false;
  };

  // Whitespace-separated tokens as [begin, end) offsets.
  std::vector<std::pair<size_t, size_t>> tokens;
  for (size_t i = 0; i < text.size();) {
    if (IsSpace(text[i])) {
      ++i;
      continue;
    }
    size_t end = i;
    while (end < text.size() && !IsSpace(text[end])) {
      ++end;
    }
    if (!in_pem(i)) {
      tokens.emplace_back(i, end);
    }
    i = end;
  }

  for (size_t t = 0; t < tokens.size(); ++t) {
    const auto [cb, ce] = Core(text, tokens[t].first, tokens[t].second);
    if (cb >= ce) {
      continue;
    }
    const std::string_view core = text.substr(cb, ce - cb);
    const bool has_next = t + 1 < tokens.size();
    const auto next_core = has_next ? Core(text, tokens[t + 1].first, tokens[t + 1].second)
                                    : std::pair<size_t, size_t>{0, 0};
    const std::string_view next =
        has_next ? text.substr(next_core.first, next_core.second - next_core.first)
                 : std::string_view();

    // "Bearer X", "Basic X": the scheme and its credential.
    if (has_next && ((EqualsIgnoreCase(core, "bearer") && next.size() >= 16) ||
                     (EqualsIgnoreCase(core, "basic") && IsBasicCredential(next)))) {
      spans.push_back({cb, next_core.second, "authorization"});
      ++t;
      continue;
    }
    // "password: X", "token = X": a secret-like key whose value is the next
    // token (and the one after it if that is an authorization scheme).
    std::string_view stem = core;
    bool assigns = false;
    if (!stem.empty() && (stem.back() == ':' || stem.back() == '=')) {
      stem.remove_suffix(1);
      assigns = true;
    } else if (has_next && (next == ":" || next == "=")) {
      assigns = true;
      ++t;  // the separator token
    }
    if (assigns && !stem.empty() && IsSecretLikeKey(stem) && t + 1 < tokens.size()) {
      const auto value = Core(text, tokens[t + 1].first, tokens[t + 1].second);
      size_t value_end = value.second;
      const std::string_view v = text.substr(value.first, value.second - value.first);
      if ((EqualsIgnoreCase(v, "bearer") || EqualsIgnoreCase(v, "basic") ||
           EqualsIgnoreCase(v, "token")) &&
          t + 2 < tokens.size()) {
        value_end = Core(text, tokens[t + 2].first, tokens[t + 2].second).second;
        ++t;
      }
      if (value.first < value_end) {
        spans.push_back({value.first, value_end, "secret_assignment"});
      }
      ++t;
      continue;
    }

    std::vector<Span> found;
    FindKnownTokens(core, found);
    FindUrlCredentials(core, found);
    FindAssignments(core, found);
    FindHighEntropy(core, found);
    for (const Span& s : found) {
      spans.push_back({cb + s.begin, cb + s.end, s.kind});
    }
  }

  // Stable: of two spans starting together, the more specific kind (found
  // first) names the merged one.
  std::stable_sort(spans.begin(), spans.end(),
                   [](const Span& a, const Span& b) { return a.begin < b.begin; });
  std::vector<Span> merged;
  for (const Span& s : spans) {
    if (!merged.empty() && s.begin < merged.back().end) {
      merged.back().end = std::max(merged.back().end, s.end);
      continue;
    }
    merged.push_back(s);
  }
  return merged;
}

}  // namespace

bool IsSecretLikeKey(std::string_view key) {
  // Split into words at '_', '-', '.', ' ' and camelCase boundaries.
  std::vector<std::string> words(1);
  for (size_t i = 0; i < key.size(); ++i) {
    const char c = key[i];
    if (c == '_' || c == '-' || c == '.' || c == ' ') {
      words.emplace_back();
      continue;
    }
    if (c >= 'A' && c <= 'Z' && i > 0 && key[i - 1] >= 'a' && key[i - 1] <= 'z') {
      words.emplace_back();
    }
    words.back() += Lower(c);
  }
  std::string joined;
  for (const auto& w : words) {
    for (std::string_view s : kSecretShortWords) {
      if (w == s) {
        return true;
      }
    }
    joined += w;
  }
  for (std::string_view w : kSecretWords) {
    if (joined.find(w) != std::string::npos) {
      return true;
    }
  }
  return false;
}

double ShannonEntropyBitsPerChar(std::string_view s) {
  if (s.empty()) {
    return 0.0;
  }
  std::array<size_t, 256> counts{};
  for (char c : s) {
    ++counts[static_cast<unsigned char>(c)];
  }
  double bits = 0.0;
  const double n = static_cast<double>(s.size());
  for (size_t c : counts) {
    if (c != 0) {
      const double p = static_cast<double>(c) / n;
      bits -= p * std::log2(p);
    }
  }
  return bits;
}

std::string_view SecretValueKind(std::string_view value) {
  size_t begin = 0;
  size_t end = value.size();
  while (begin < end && IsSpace(value[begin])) {
    ++begin;
  }
  while (end > begin && IsSpace(value[end - 1])) {
    --end;
  }
  const std::vector<Span> spans = FindSpans(value);
  if (spans.size() == 1 && spans[0].begin <= begin && spans[0].end >= end) {
    return spans[0].kind;
  }
  return {};
}

std::string RedactText(std::string_view text) {
  const std::vector<Span> spans = FindSpans(text);
  if (spans.empty()) {
    return std::string(text);
  }
  std::string out;
  out.reserve(text.size());
  size_t at = 0;
  for (const Span& s : spans) {
    out.append(text.substr(at, s.begin - at));
    out += "[redacted:";
    out += s.kind;
    out += ']';
    at = s.end;
  }
  out.append(text.substr(at));
  return out;
}

nlohmann::json RedactParameters(const nlohmann::json& params) {
  if (params.is_object()) {
    nlohmann::json out = nlohmann::json::object();
    for (auto it = params.begin(); it != params.end(); ++it) {
      out[it.key()] =
          IsSecretLikeKey(it.key()) ? nlohmann::json("[redacted]") : RedactParameters(it.value());
    }
    return out;
  }
  if (params.is_array()) {
    nlohmann::json out = nlohmann::json::array();
    for (const auto& v : params) {
      out.push_back(RedactParameters(v));
    }
    return out;
  }
  if (params.is_string()) {
    return RedactText(params.get_ref<const std::string&>());
  }
  if (params.is_number_float()) {
    // The chain's canonical form holds no floats: keep their text.
    return params.dump();
  }
  return params;
}

}  // namespace jitbroker::audit
