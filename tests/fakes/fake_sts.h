// FakeSts: a loopback stand-in for the AWS the aws_sts issuer talks to
// (docs/aws.md, "STS" and "Revocation"), at one URL, told apart by the
// service a request is signed for:
//
//   - sts: AssumeRole, below; AssumeRoleWithWebIdentity, unsigned, for a
//     token configured in `web_identity_tokens` (else 400
//     InvalidIdentityToken): its credentials sign later calls as a base
//     identity until they expire (ExpireBaseSessions: 403 ExpiredToken);
//   - iam: GetRolePolicy and PutRolePolicy on the roles' inline policies,
//     signed for us-east-1 by a key the role lists in `iam_keys` (else 403
//     AccessDenied; an unknown role or policy is 404 NoSuchEntity), the
//     document answered URL-encoded as IAM does, a PutRolePolicy whose
//     documents together exceed `role_policy_limit` characters (whitespace
//     excluded) refused with LimitExceeded;
//   - any other service: a call made with credentials this fake issued
//     (the AWS CLI's `sns list-topics`, say), signed with them and their
//     session token, refused with ExpiredToken after expiry, with
//     AuthorizationError when a Deny statement of the role's inline
//     policies matches the session (conditions on aws:SourceIdentity and
//     aws:PrincipalTag/KEY) or when the session policy allows no matching
//     action. A deny applies at once (AWS takes up to minutes).
//
// AssumeRole is strict the way STS is:
//
//   - POST / with Content-Type application/x-www-form-urlencoded (else 400
//     InvalidParameterValue), Version=2011-06-15;
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
  // IAM's limit on all of a role's inline policies together (characters
  // without whitespace); over it PutRolePolicy answers LimitExceeded.
  size_t role_policy_limit = 10240;
  // AssumeRoleWithWebIdentity: token -> the role ARN it may assume. The
  // credentials it returns are base identities; roles trust them by listing
  // that role ARN in trusted_keys / iam_keys.
  std::map<std::string, std::string> web_identity_tokens;
  // Keep what was issued and signed (Verify, SecretActive, SignedRequests,
  // calls with issued credentials). Benchmarks turn it off: memory stays flat.
  bool keep_issued = true;
};

struct FakeRole {
  std::string arn;                     // arn:aws:iam::ACCOUNT:role/NAME
  int64_t max_session_seconds = 3600;  // the role's MaxSessionDuration
  // Access key ids (or, for web-identity base sessions, role ARNs) allowed
  // to assume it.
  std::vector<std::string> trusted_keys;
  std::string external_id;  // required when not empty
  // Access key ids IAM lets read and write the role's inline policies.
  std::vector<std::string> iam_keys;
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
  // `action` (e.g. "PutRolePolicy") limits them to that action.
  void InjectErrors(const std::string& code, int status, int count, const std::string& action = "");
  void ClearErrors();
  void SetLatency(std::chrono::milliseconds latency);
  void SetClockSkew(std::chrono::seconds skew);

  // The credentials an AssumeRole returned, if `access_key_id`,
  // `secret_access_key` and `session_token` are one of them and unexpired.
  std::optional<Issued> Verify(const std::string& access_key_id,
                               const std::string& secret_access_key,
                               const std::string& session_token) const;
  // Whether a credential with this secret access key was issued, is
  // unexpired, and is not denied by its role's inline policies.
  bool SecretActive(const std::string& secret_access_key) const;
  // IAM: a role's inline policy document (role name, not ARN).
  std::optional<std::string> RolePolicy(const std::string& role_name,
                                        const std::string& policy_name) const;
  void SetRolePolicy(const std::string& role_name, const std::string& policy_name,
                     const std::string& document);
  size_t PolicyWrites() const;  // successful PutRolePolicy calls
  // Web identity: expire every base session it handed out (their next use
  // answers ExpiredToken), and count the exchanges.
  void ExpireBaseSessions();
  void AllowWebIdentity(const std::string& token, const std::string& role_arn);
  size_t WebIdentityExchanges() const;
  size_t DeniedCalls() const;  // calls with issued credentials refused by a deny
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
