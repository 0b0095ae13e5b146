// BaseIdentity: the broker's own AWS identity, which signs its STS and IAM
// calls (docs/aws.md, "The broker's identity"): either static keys from the
// config, or temporary credentials obtained with STS
// AssumeRoleWithWebIdentity from an OIDC token file (a Kubernetes projected
// service-account token, say), re-read at every exchange because it rotates.
//
// Temporary credentials are kept until 5 minutes before they expire, and
// exchanged again then or when AWS answers ExpiredToken for them
// (Get(their key id)); one exchange at a time, and calls that failed with
// the same expired key together exchange once.
//
// Thread-safety: Get may be called concurrently.
#pragma once

#include <chrono>
#include <cstdint>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>

#include "issuers/aws_sts/aws_api.h"
#include "issuers/aws_sts/sigv4.h"
#include "jitbroker/clock.h"
#include "jitbroker/result.h"
#include "jitbroker/secret.h"

namespace jitbroker::issuers::aws_sts {

struct WebIdentitySource {
  std::string token_file;
  std::string role_arn;
  std::string session_name;  // RoleSessionName of the broker's own session
  int64_t duration_seconds = 3600;
};

class BaseIdentity {
 public:
  // Static keys.
  BaseIdentity(std::string access_key_id, SecretValue secret_access_key, SecretValue session_token);
  // Web identity: `sts` (used unsigned) and `clock` must outlive this.
  BaseIdentity(WebIdentitySource source, AwsQueryApi* sts, const Clock* clock);

  // The credentials to sign with; `expired_key_id` (else "") after AWS
  // answered ExpiredToken for that key. Errors (web identity): the token
  // file cannot be read (kUnavailable "aws_auth_failed"), or those of
  // AssumeRoleWithWebIdentity.
  [[nodiscard]] Result<AwsCredentials> Get(std::string_view expired_key_id);

  uint64_t exchanges() const;  // AssumeRoleWithWebIdentity calls that succeeded

  // The token file's contents, trimmed (at most 64 KiB). Errors as Get.
  [[nodiscard]] static Result<SecretValue> ReadTokenFile(const std::string& path);

 private:
  const std::optional<WebIdentitySource> web_;
  AwsQueryApi* sts_ = nullptr;
  const Clock* clock_ = nullptr;
  mutable std::mutex mu_;
  AwsCredentials current_;
  TimePoint expires_{};
  uint64_t exchanges_ = 0;
};

}  // namespace jitbroker::issuers::aws_sts
