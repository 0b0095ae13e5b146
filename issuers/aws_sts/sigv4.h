// AWS Signature Version 4 (docs/aws.md, "Signing"): the
// canonical request, the string to sign, the signing key and the
// Authorization header, on OpenSSL's HMAC-SHA256 (broker/crypto).
//
//   canonical request = METHOD \n canonical URI \n canonical query \n
//                       canonical headers \n signed headers \n hex(SHA-256(body))
//   string to sign    = "AWS4-HMAC-SHA256" \n amz-date \n scope \n hex(SHA-256(creq))
//   scope             = yyyymmdd/region/service/aws4_request
//   signing key       = HMAC(HMAC(HMAC(HMAC("AWS4" + secret, yyyymmdd), region),
//                            service), "aws4_request")
//
// Every header of the request is signed (callers add only the ones to sign:
// for STS content-type, host, x-amz-date and x-amz-security-token). The
// canonical URI is the path with empty, "." and ".." segments removed and
// each segment URI-encoded (services other than S3). The query is decoded,
// re-encoded (RFC 3986 unreserved characters kept) and sorted by key, then
// value.
//
// The signing key depends only on the secret, the day, the region and the
// service: SigningKeyCache derives it once per day and keeps it.
//
// Thread-safety: the functions are pure; SigningKeyCache is thread-safe.
#pragma once

#include <cstdint>
#include <map>
#include <mutex>
#include <string>
#include <string_view>
#include <tuple>
#include <utility>
#include <vector>

#include "jitbroker/clock.h"
#include "jitbroker/result.h"
#include "jitbroker/secret.h"

namespace jitbroker::issuers::aws_sts {

// AWS access keys: the broker's own identity (never a grant's).
struct AwsCredentials {
  std::string access_key_id;
  SecretValue secret_access_key;
  SecretValue session_token;  // empty for long-term keys
};

// One HTTP request as it will be sent.
struct SigV4Request {
  std::string method;  // "POST"
  std::string path;    // as sent, e.g. "/"
  std::string query;   // as sent, without '?'; "" for none
  // As sent, in order; names in any case. Must include Host and X-Amz-Date.
  std::vector<std::pair<std::string, std::string>> headers;
  std::string body;
};

// "20150830T123600Z" for `t` (UTC, whole seconds).
std::string AmzDate(TimePoint t);

// RFC 3986 percent-encoding as SigV4 wants it: A-Z a-z 0-9 - _ . ~ kept,
// every other byte %XX in upper-case hex; '/' kept when `keep_slash`.
std::string UriEncode(std::string_view text, bool keep_slash = false);

struct CanonicalRequest {
  std::string text;            // the canonical request
  std::string signed_headers;  // "host;x-amz-date"
};
// Errors: kInvalidArgument "invalid_request" when a header name is not a
// token, a value holds a control character, Host or X-Amz-Date is missing,
// or the query has invalid percent-encoding.
[[nodiscard]] Result<CanonicalRequest> Canonicalize(const SigV4Request& req);

// "yyyymmdd/region/service/aws4_request".
std::string CredentialScope(std::string_view amz_date, std::string_view region,
                            std::string_view service);
std::string StringToSign(std::string_view amz_date, std::string_view scope,
                         std::string_view canonical_request);
// The raw 32-byte signing key.
SecretValue DeriveSigningKey(const SecretValue& secret, std::string_view yyyymmdd,
                             std::string_view region, std::string_view service);

// Signing keys by (access key id, day, region, service). The secret of one
// access key id never changes (a new secret comes with a new id), so the id
// names the secret. A key for a new day drops those of earlier days.
class SigningKeyCache {
 public:
  // The key for `creds` on `yyyymmdd`, derived at most once per day.
  SecretValue Get(const AwsCredentials& creds, std::string_view yyyymmdd, std::string_view region,
                  std::string_view service);
  uint64_t derivations() const;

 private:
  mutable std::mutex mu_;
  std::map<std::tuple<std::string, std::string, std::string, std::string>, SecretValue> keys_;
  uint64_t derivations_ = 0;
};

struct Signature {
  std::string authorization;  // the Authorization header value
  std::string canonical_request;
  std::string string_to_sign;
};

// Signs `req`, whose X-Amz-Date header is `amz_date`, for `region` and
// `service` with `creds` (the key from `cache`, or derived when null).
[[nodiscard]] Result<Signature> Sign(const SigV4Request& req, const AwsCredentials& creds,
                                     std::string_view amz_date, std::string_view region,
                                     std::string_view service, SigningKeyCache* cache = nullptr);

}  // namespace jitbroker::issuers::aws_sts
