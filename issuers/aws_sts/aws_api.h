// AwsQueryApi: the AWS calls of the aws_sts issuer (docs/aws.md, "STS" and
// "Revocation") over the HttpClient seam: the query protocol (POST /, form
// body, Action and Version), SigV4 with the broker's base credentials (the
// signing key derived once per day), and the XML answer. One client per
// service: STS (AssumeRole) and IAM (GetRolePolicy, PutRolePolicy).
//
// Transient failures are retried with exponential backoff and full jitter:
// throttling (Throttling, ThrottlingException, RequestLimitExceeded, 429),
// 5xx answers and IDPCommunicationError; transport failures too (AssumeRole
// creates nothing that a retry could duplicate harmfully: an unused STS
// credential expires; PutRolePolicy replaces the whole document, so a repeat
// writes the same). An answer that says the request's time is off
// (RequestExpired, or SignatureDoesNotMatch with a Date header more than
// 4 minutes from ours) re-signs with the learnt clock offset and retries
// once. ExpiredToken asks the credential source for fresh base credentials
// and retries once. Every call has an overall deadline (`call_deadline`):
// attempts and waits together.
//
// Errors (client-safe; AWS's <Code> and sanitised <Message> in the detail,
// because they say what to change; never a credential):
//   kInvalidArgument "policy_too_large" (PackedPolicyTooLarge),
//   kInvalidArgument "aws_invalid_request" (MalformedPolicyDocument,
//     ValidationError and other 400s about the request),
//   kPermissionDenied "aws_access_denied" (AccessDenied; the message says
//     which rights the broker needs, QueryOptions::access_denied_hint),
//   kNotFound "aws_no_such_entity" (NoSuchEntity: IAM's missing role or
//     policy),
//   kResourceExhausted "aws_limit_exceeded" (LimitExceeded: IAM's policy
//     size or count limits),
//   kFailedPrecondition "aws_region_disabled" (RegionDisabledException),
//   kUnavailable "aws_auth_failed" (the broker's own credentials: unknown,
//     expired, or a signature AWS does not accept),
//   kResourceExhausted "aws_throttled" (still throttled after the retries),
//   kUnavailable "aws_unavailable" (transport, 5xx after retries),
//   kUnavailable "aws_bad_response" (an answer that does not parse).
//
// Thread-safety: all methods are thread-safe.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "issuers/aws_sts/sigv4.h"
#include "issuers/aws_sts/xml.h"
#include "jitbroker/clock.h"
#include "jitbroker/http_client.h"
#include "jitbroker/issuer.h"
#include "jitbroker/result.h"
#include "jitbroker/secret.h"

namespace jitbroker::issuers::aws_sts {

struct QueryOptions {
  std::string endpoint;  // "https://sts.us-east-1.amazonaws.com", no trailing slash
  std::string region;    // the signing region ("us-east-1" for IAM and the global STS endpoint)
  std::string service = "sts";  // the SigV4 service name
  std::string api_version = "2011-06-15";
  std::string label = "AWS STS";  // names the service in errors
  // Ends the aws_access_denied message: what the broker needs from AWS.
  std::string access_denied_hint;
  std::string user_agent = "jitbroker-aws-sts/0.1";
  std::chrono::milliseconds timeout{10000};  // per attempt
  std::chrono::milliseconds call_deadline{15000};
  std::chrono::milliseconds connect_timeout{5000};
  int max_attempts = 3;  // including the first
  std::chrono::milliseconds backoff_base{200};
  // Waits between attempts (tests replace it).
  std::function<void(std::chrono::milliseconds)> sleep;
};

struct AssumeRoleInput {
  std::string role_arn;
  std::string role_session_name;  // 2-64 of [\w+=,.@-]
  std::string source_identity;    // 2-64 of [\w+=,.@-]
  std::string policy;             // the inline session policy (JSON text)
  int64_t duration_seconds = 900;
  std::vector<std::pair<std::string, std::string>> tags;  // session tags
  std::vector<std::string> transitive_tag_keys;
  std::string external_id;  // empty = none
};

struct AssumedRole {
  std::string access_key_id;
  SecretValue secret_access_key;
  SecretValue session_token;
  TimePoint expiration;
  std::string assumed_role_arn;  // arn:aws:sts::ACCOUNT:assumed-role/NAME/SESSION
  std::string assumed_role_id;
  std::optional<int64_t> packed_policy_size;  // percent of the limit
  std::string source_identity;
};

// Where the broker's own credentials come from. Called for every request
// with "", or, after AWS answered ExpiredToken, with the access key id it
// refused: a source with temporary credentials then fetches new ones unless
// it already has (a static one returns the same).
using CredentialSource = std::function<Result<AwsCredentials>(std::string_view expired_key_id)>;

class AwsQueryApi {
 public:
  AwsQueryApi(QueryOptions options, HttpClient* http, const Clock* clock,
              CredentialSource credentials, std::string issuer_name);

  enum class Signing { kSigned, kUnsigned };
  // One query-protocol call: `params` after Action and Version; the answer's
  // root element. Signed with the credential source's credentials, or not
  // signed at all (AssumeRoleWithWebIdentity: the token is the proof).
  [[nodiscard]] Result<XmlElement> Call(
      std::string_view action, const std::vector<std::pair<std::string, std::string>>& params,
      Signing signing = Signing::kSigned);

  uint64_t signing_key_derivations() const { return keys_.derivations(); }
  int64_t clock_offset_seconds() const { return offset_.load(); }
  // Adds this client's samples (labels issuer, service, action, outcome) to
  // `calls` and (issuer, service) to `derivations`.
  void CollectMetrics(MetricFamily& calls, MetricFamily& derivations) const;

 private:
  void Count(std::string_view action, std::string_view outcome);

  const QueryOptions options_;
  HttpClient* http_;
  const Clock* clock_;
  CredentialSource credentials_;
  const std::string issuer_name_;
  std::string host_;  // the Host header of endpoint (as signed)
  SigningKeyCache keys_;
  std::atomic<int64_t> offset_{0};  // AWS's clock minus ours, seconds
  mutable std::mutex metrics_mu_;
  std::map<std::pair<std::string, std::string>, uint64_t> calls_;  // (action, outcome)
};

// STS AssumeRole (api: an STS client).
[[nodiscard]] Result<AssumedRole> AssumeRole(AwsQueryApi& api, const AssumeRoleInput& in);

// STS AssumeRoleWithWebIdentity, unsigned (api: an STS client): the
// broker's own temporary identity from an OIDC token (a Kubernetes projected
// service-account token, say).
[[nodiscard]] Result<AssumedRole> AssumeRoleWithWebIdentity(AwsQueryApi& api,
                                                            const std::string& role_arn,
                                                            const std::string& role_session_name,
                                                            const SecretValue& web_identity_token,
                                                            int64_t duration_seconds);

// IAM GetRolePolicy (api: an IAM client): the document of the role's inline
// policy `policy_name` (URL-decoded JSON text), or nullopt when the role has
// no such policy (NoSuchEntity for the policy; a missing role is an error).
[[nodiscard]] Result<std::optional<std::string>> GetRolePolicy(AwsQueryApi& api,
                                                               const std::string& role_name,
                                                               const std::string& policy_name);
// IAM PutRolePolicy: replaces the role's inline policy `policy_name`.
[[nodiscard]] Status PutRolePolicy(AwsQueryApi& api, const std::string& role_name,
                                   const std::string& policy_name, const std::string& document);

// The query protocol's form encoding: k=v pairs joined by '&', each side
// encoded as SigV4's UriEncode.
std::string FormEncode(const std::vector<std::pair<std::string, std::string>>& params);

// AWS's error answer, <ErrorResponse><Error><Code>, <Message>: printable
// ASCII, at most 300 characters each; empty when the body is not one.
struct AwsErrorInfo {
  std::string code;
  std::string message;
};
AwsErrorInfo ParseAwsError(std::string_view body);

}  // namespace jitbroker::issuers::aws_sts
