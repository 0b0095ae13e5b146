// FakeSts: a loopback stand-in for AWS STS's AssumeRole as the aws_sts
// issuer uses it (docs/aws.md, "STS"), strict the way STS is:
//
//   - POST / with Content-Type application/x-www-form-urlencoded, Action=
//     AssumeRole and Version=2011-06-15 (else 400 InvalidAction /
//     MissingParameter);
//   - SigV4: an Authorization header AWS4-HMAC-SHA256 Credential=AKID/DATE/
//     REGION/sts/aws4_request for a known access key id (else 403
//     InvalidClientTokenId), SignedHeaders that include host, x-amz-date and,
//     when sent, x-amz-security-token, a signature that recomputes over the
//     signed headers and the body (else 403 SignatureDoesNotMatch), the
//     session token of a temporary key (else 403 InvalidClientTokenId), and
//     an X-Amz-Date within 5 minutes of the fake's clock (else 403
//     SignatureDoesNotMatch "Signature expired", with a Date header);
//   - AssumeRole's parameters as the service model bounds them: RoleArn
//     (20-2048), RoleSessionName and SourceIdentity (2-64 of [\w+=,.@-]),
//     DurationSeconds (900-43200 and at most the role's maximum), Policy (at
//     most 2048 characters of \t \n \r and 0x20-0xFF; a packed size over the
//     configured limit is PackedPolicyTooLarge), Tags.member.N (at most 50),
//     TransitiveTagKeys.member.N naming sent tags, ExternalId when the role
//     requires one. A role that does not trust the key is 403 AccessDenied;
//   - the answer is STS's XML, with credentials that Verify() recognises
//     until they expire.
//
// The signature is recomputed with the broker's own canonicalisation (which
// the AWS test suite checks); SignedRequests() keeps what was verified so
// that Debian's botocore recomputes it independently
// (tests/support/botocore_sigv4.py). Fault injection: the next N requests
// answer an error code and status (Throttling, 500, …); latency; clock skew.
//
// Thread-safety: all methods are thread-safe; the server runs on its own
// threads until Stop() or destruction.
#pragma once

#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace jitbroker::testing {

struct FakeStsOptions {
  std::string region = "us-east-1";
  // The broker's base identity: access key id -> secret (and session token).
  std::map<std::string, std::string> keys;
  std::map<std::string, std::string> session_tokens;
  int threads = 16;
  size_t packed_policy_limit = 2048;  // Policy characters at which PackedPolicyTooLarge
};

struct FakeRole {
  std::string arn;                        // arn:aws:iam::ACCOUNT:role/NAME
  int64_t max_session_seconds = 3600;     // the role's MaxSessionDuration
  std::vector<std::string> trusted_keys;  // access key ids allowed to assume it
  std::string external_id;                // required when not empty
};

class FakeSts {
 public:
  // One AssumeRole the fake answered with credentials.
  struct Issued {
    std::string access_key_id;
    std::string role_arn;
    std::string role_session_name;
    std::string source_identity;
    std::string policy;
    int64_t duration_seconds = 0;
    std::map<std::string, std::string> tags;
    std::vector<std::string> transitive_tag_keys;
    int64_t expires_at = 0;  // unix seconds
  };

  ~FakeSts();
  static std::unique_ptr<FakeSts> Start(FakeStsOptions options);
  void Stop();
  std::string url() const;  // http://127.0.0.1:PORT
  int port() const { return port_; }

  void AddRole(FakeRole role);
  // The next `count` requests (count < 0: all until cleared) answer `code`
  // with `status`.
  void InjectErrors(const std::string& code, int status, int count);
  void ClearErrors();
  void SetLatency(std::chrono::milliseconds latency);
  void SetClockSkew(std::chrono::seconds skew);

  // The credentials an AssumeRole returned, if `access_key_id`,
  // `secret_access_key` and `session_token` are one of them and unexpired.
  std::optional<Issued> Verify(const std::string& access_key_id,
                               const std::string& secret_access_key,
                               const std::string& session_token) const;
  // Whether a credential with this secret access key was issued and is
  // unexpired.
  bool SecretActive(const std::string& secret_access_key) const;
  std::vector<Issued> IssuedCredentials() const;
  size_t Requests() const;
  // A request whose signature the fake verified, as received: for an
  // independent recomputation (botocore).
  struct SignedRequest {
    std::string method;
    std::string path;
    std::map<std::string, std::string> headers;  // the signed ones, lower-case names
    std::string body;
    std::string authorization;
  };
  std::vector<SignedRequest> SignedRequests() const;
  // What requests got wrong beyond a refused signature (for tests to say what).
  std::vector<std::string> Violations() const;

 private:
  FakeSts() = default;
  struct Impl;
  std::unique_ptr<Impl> impl_;
  int port_ = 0;
};

}  // namespace jitbroker::testing
