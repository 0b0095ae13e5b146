#include "issuers/aws_sts/sigv4.h"

#include <algorithm>

#include "broker/common/text.h"
#include "broker/common/time_util.h"
#include "broker/crypto/crypto.h"

namespace jitbroker::issuers::aws_sts {

namespace {

Error Invalid(std::string message) {
  return InvalidArgument("invalid_request", std::move(message));
}

bool IsUnreserved(unsigned char c) {
  return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' ||
         c == '_' || c == '.' || c == '~';
}

// RFC 7230 token characters.
bool IsTokenChar(unsigned char c) {
  return IsUnreserved(c) || c == '!' || c == '#' || c == '$' || c == '%' || c == '&' || c == '\'' ||
         c == '*' || c == '+' || c == '^' || c == '`' || c == '|';
}

// A header value trimmed, with each run of spaces inside it made one.
std::string TrimAll(std::string_view v) {
  std::string out;
  out.reserve(v.size());
  bool space = false;
  for (char c : v) {
    if (c == ' ' || c == '\t') {
      space = !out.empty();
      continue;
    }
    if (space) {
      out.push_back(' ');
      space = false;
    }
    out.push_back(c);
  }
  return out;
}

Result<std::string> PercentDecode(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] != '%') {
      out.push_back(s[i]);
      continue;
    }
    const int hi = i + 2 < s.size() ? text::HexDigitValue(s[i + 1]) : -1;
    const int lo = i + 2 < s.size() ? text::HexDigitValue(s[i + 2]) : -1;
    if (hi < 0 || lo < 0) {
      return std::unexpected(Invalid("the query has an invalid percent-encoding"));
    }
    out.push_back(static_cast<char>(hi * 16 + lo));
    i += 2;
  }
  return out;
}

// The path without empty, "." and ".." segments, each segment encoded; a
// trailing '/' is kept.
std::string CanonicalUri(std::string_view path) {
  std::vector<std::string_view> segments;
  size_t pos = 0;
  while (pos <= path.size()) {
    const size_t slash = path.find('/', pos);
    const std::string_view seg =
        path.substr(pos, slash == std::string_view::npos ? std::string_view::npos : slash - pos);
    if (seg == "..") {
      if (!segments.empty()) {
        segments.pop_back();
      }
    } else if (!seg.empty() && seg != ".") {
      segments.push_back(seg);
    }
    if (slash == std::string_view::npos) {
      break;
    }
    pos = slash + 1;
  }
  std::string out;
  for (std::string_view seg : segments) {
    out += '/';
    out += UriEncode(seg);
  }
  const bool trailing = path.size() > 1 && path.back() == '/';
  if (out.empty() || trailing) {
    out += '/';
  }
  return out;
}

Result<std::string> CanonicalQuery(std::string_view query) {
  std::vector<std::pair<std::string, std::string>> pairs;
  size_t pos = 0;
  while (pos < query.size()) {
    size_t amp = query.find('&', pos);
    if (amp == std::string_view::npos) {
      amp = query.size();
    }
    const std::string_view pair = query.substr(pos, amp - pos);
    pos = amp + 1;
    if (pair.empty()) {
      continue;
    }
    const size_t eq = pair.find('=');
    JITBROKER_ASSIGN_OR_RETURN(std::string key, PercentDecode(pair.substr(0, eq)));
    std::string value;
    if (eq != std::string_view::npos) {
      JITBROKER_ASSIGN_OR_RETURN(value, PercentDecode(pair.substr(eq + 1)));
    }
    pairs.emplace_back(UriEncode(key), UriEncode(value));
  }
  std::sort(pairs.begin(), pairs.end());
  std::string out;
  for (const auto& [k, v] : pairs) {
    if (!out.empty()) {
      out += '&';
    }
    out += k;
    out += '=';
    out += v;
  }
  return out;
}

}  // namespace

std::string AmzDate(TimePoint t) {
  std::string out;
  for (char c : FormatRfc3339(t)) {  // 2015-08-30T12:36:00Z -> 20150830T123600Z
    if (c != '-' && c != ':') {
      out.push_back(c);
    }
  }
  return out;
}

std::string UriEncode(std::string_view text, bool keep_slash) {
  static constexpr char kHex[] = "0123456789ABCDEF";
  std::string out;
  out.reserve(text.size());
  for (char ch : text) {
    const auto c = static_cast<unsigned char>(ch);
    if (IsUnreserved(c) || (keep_slash && c == '/')) {
      out.push_back(ch);
    } else {
      out.push_back('%');
      out.push_back(kHex[c >> 4]);
      out.push_back(kHex[c & 0xf]);
    }
  }
  return out;
}

Result<CanonicalRequest> Canonicalize(const SigV4Request& req) {
  // Lower-case name -> values in order (duplicates are comma-joined).
  std::map<std::string, std::vector<std::string>> headers;
  for (const auto& [name, value] : req.headers) {
    if (name.empty() || !std::all_of(name.begin(), name.end(), [](char c) {
          return IsTokenChar(static_cast<unsigned char>(c));
        })) {
      return std::unexpected(Invalid("a header name is not an HTTP token"));
    }
    if (std::any_of(value.begin(), value.end(), [](char c) {
          const auto u = static_cast<unsigned char>(c);
          return (u < 0x20 && c != '\t') || u == 0x7f;
        })) {
      return std::unexpected(
          Invalid("header " + text::AsciiLower(name) + " has a control character"));
    }
    headers[text::AsciiLower(name)].push_back(TrimAll(value));
  }
  if (!headers.contains("host") || !headers.contains("x-amz-date")) {
    return std::unexpected(Invalid("a signed request needs Host and X-Amz-Date"));
  }
  JITBROKER_ASSIGN_OR_RETURN(std::string query, CanonicalQuery(req.query));
  CanonicalRequest out;
  std::string canonical_headers;
  for (const auto& [name, values] : headers) {
    canonical_headers += name;
    canonical_headers += ':';
    for (size_t i = 0; i < values.size(); ++i) {
      canonical_headers += (i == 0 ? "" : ",") + values[i];
    }
    canonical_headers += '\n';
    out.signed_headers += (out.signed_headers.empty() ? "" : ";") + name;
  }
  out.text = req.method + "\n" + CanonicalUri(req.path) + "\n" + query + "\n" + canonical_headers +
             "\n" + out.signed_headers + "\n" + crypto::Sha256Hex(req.body);
  return out;
}

std::string CredentialScope(std::string_view amz_date, std::string_view region,
                            std::string_view service) {
  return std::string(amz_date.substr(0, 8)) + "/" + std::string(region) + "/" +
         std::string(service) + "/aws4_request";
}

std::string StringToSign(std::string_view amz_date, std::string_view scope,
                         std::string_view canonical_request) {
  return "AWS4-HMAC-SHA256\n" + std::string(amz_date) + "\n" + std::string(scope) + "\n" +
         crypto::Sha256Hex(canonical_request);
}

SecretValue DeriveSigningKey(const SecretValue& secret, std::string_view yyyymmdd,
                             std::string_view region, std::string_view service) {
  SecretValue k_secret("AWS4" + std::string(secret.Reveal()));
  SecretValue k_date(crypto::HmacSha256(k_secret.Reveal(), yyyymmdd));
  SecretValue k_region(crypto::HmacSha256(k_date.Reveal(), region));
  SecretValue k_service(crypto::HmacSha256(k_region.Reveal(), service));
  return SecretValue(crypto::HmacSha256(k_service.Reveal(), "aws4_request"));
}

SecretValue SigningKeyCache::Get(const AwsCredentials& creds, std::string_view yyyymmdd,
                                 std::string_view region, std::string_view service) {
  auto key = std::make_tuple(creds.access_key_id, std::string(yyyymmdd), std::string(region),
                             std::string(service));
  std::lock_guard lock(mu_);
  if (auto it = keys_.find(key); it != keys_.end()) {
    return it->second.Clone();
  }
  // A new day: the keys of earlier days are of no more use (requests are
  // signed with the current time; one still signing with yesterday's date
  // around midnight derives it again).
  std::erase_if(keys_,
                [&](const auto& entry) { return std::get<1>(entry.first) < std::get<1>(key); });
  SecretValue derived = DeriveSigningKey(creds.secret_access_key, yyyymmdd, region, service);
  ++derivations_;
  keys_.emplace(std::move(key), derived.Clone());
  return derived;
}

uint64_t SigningKeyCache::derivations() const {
  std::lock_guard lock(mu_);
  return derivations_;
}

Result<Signature> Sign(const SigV4Request& req, const AwsCredentials& creds,
                       std::string_view amz_date, std::string_view region, std::string_view service,
                       SigningKeyCache* cache) {
  if (amz_date.size() != 16 || amz_date[8] != 'T' || amz_date.back() != 'Z') {
    return std::unexpected(Invalid("amz_date must be YYYYMMDDTHHMMSSZ"));
  }
  JITBROKER_ASSIGN_OR_RETURN(CanonicalRequest creq, Canonicalize(req));
  const std::string scope = CredentialScope(amz_date, region, service);
  Signature out;
  out.string_to_sign = StringToSign(amz_date, scope, creq.text);
  const std::string_view day = amz_date.substr(0, 8);
  const SecretValue key = cache != nullptr
                              ? cache->Get(creds, day, region, service)
                              : DeriveSigningKey(creds.secret_access_key, day, region, service);
  const std::string signature =
      crypto::HexEncode(crypto::HmacSha256(key.Reveal(), out.string_to_sign));
  out.authorization = "AWS4-HMAC-SHA256 Credential=" + creds.access_key_id + "/" + scope +
                      ", SignedHeaders=" + creq.signed_headers + ", Signature=" + signature;
  out.canonical_request = std::move(creq.text);
  return out;
}

}  // namespace jitbroker::issuers::aws_sts
