// The pure half of the commands that hand a credential to another program
// (docs/jitctl.md, "Credentials for other programs"): `jitctl aws
// credential-process`, `jitctl aws serve` and `jitctl exec`. Read a grant
// answer, write what the AWS SDKs expect (credential_process output, the
// container credentials endpoint's body), decide when a cached credential
// must be replaced, and build the environment of a child process. The
// broker calls live in commands.cc, the endpoint in aws_serve.h.
//
// Secrets: credential values travel as SecretValues; the formatted answers
// are SecretValues too. Errors never quote a credential.
//
// Thread-safety: pure functions.
#pragma once

#include <chrono>
#include <cstdint>
#include <expected>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "cli/args.h"
#include "jitbroker/clock.h"
#include "jitbroker/result.h"
#include "jitbroker/secret.h"

namespace jitbroker::cli {

// The AWS credential of an allowed grant on an aws_sts issuer.
struct AwsCredential {
  std::string access_key_id;
  SecretValue secret_access_key;
  SecretValue session_token;
  // When the grant ends: the earliest of the grant's `expires_at`, the
  // credential's `expires_at` and STS's `expiration`. The SDKs refresh by it,
  // so they come back for a new grant when this one ends, not when STS's
  // (possibly later, 15-minute floor) expiration passes.
  TimePoint expires_at{};
  std::string region;  // the issuer's region; may be empty
};

// The Google access token of an allowed grant on a gcp issuer.
struct GcpCredential {
  SecretValue access_token;
  // The earliest of the grant's and the credential's `expires_at`.
  TimePoint expires_at{};
  std::string service_account;
  std::vector<std::string> scopes;
};

// The 12-digit account of aws://ACCOUNT/role/[PATH/]NAME (the aws_sts
// issuer's own parser). Errors: kInvalidArgument "invalid_resource".
[[nodiscard]] Result<std::string> AwsAccountOf(std::string_view resource);

// The grant request of `aws credential-process` and `aws serve`: tool,
// operation, resource, issuer, scope {"actions","resources"} (checked with
// the aws_sts issuer's own parser, so mistakes are reported before any call),
// ttl_seconds and justification. Defaults: --issuer `default_issuer`,
// --ttl `default_ttl` (nullopt: the broker's), --tool DefaultAwsTool,
// --operation DefaultAwsOperation, --justification "jitctl COMMAND for
// RESOURCE". Usage problems are returned as the hint text.
std::expected<nlohmann::json, std::string> BuildAwsGrantBody(const ParsedArgs& args,
                                                             std::string_view command,
                                                             std::string_view default_issuer,
                                                             std::optional<int64_t> default_ttl);

// "aws.SERVICE" when every action names the same service ("s3:GetObject",
// "s3:List*" -> "aws.s3"), else "aws" (several services, or "*").
std::string DefaultAwsTool(const std::vector<std::string>& actions);

// "read" when every action only reads (the aws_sts issuer's ActionTier is
// read: Get*, List*, Describe*, Head*, …), else "write". The broker's tier is
// the highest of this and the actions' own tiers, so the label never lowers
// what the actions imply; "read" keeps a read-only request out of the
// policy's default tier.
std::string DefaultAwsOperation(const std::vector<std::string>& actions);

// The credential of a grant answer (a 201 body or a collected grant).
// Errors (kInternal "unexpected_credential"): no credential, a type other
// than aws_credentials, a missing or empty key, or no parseable expiry.
[[nodiscard]] Result<AwsCredential> AwsCredentialFromGrant(const nlohmann::json& grant);

// What `--scope NAME` stands for when NAME has no "://": Google's OAuth
// scope https://www.googleapis.com/auth/NAME ("cloud-platform",
// "devstorage.read_only").
inline constexpr std::string_view kGoogleScopePrefix = "https://www.googleapis.com/auth/";

// The grant request of `gcp serve`: tool (--tool, default "gcp"), operation
// (--operation, default read when the scope implies read, else write),
// resource gcp://PROJECT/serviceAccounts/EMAIL, issuer (--issuer, default
// `default_issuer`), scope {"scopes": --scope..., "storage": --storage
// BUCKET[/PREFIX]=ROLE...} checked with the gcp issuer's own parser (shape
// only: the broker knows allowed_scopes and projects), ttl_seconds and
// justification. Usage problems are returned as the hint text.
std::expected<nlohmann::json, std::string> BuildGcpGrantBody(const ParsedArgs& args,
                                                             std::string_view command,
                                                             std::string_view default_issuer);

// The credential of a grant answer on a gcp issuer. Errors (kInternal
// "unexpected_credential"): another type, no access_token, no service
// account or scopes, no parseable expiry.
[[nodiscard]] Result<GcpCredential> GcpCredentialFromGrant(const nlohmann::json& grant);

// The metadata server's token answer: {"access_token","expires_in",
// "token_type":"Bearer"}, expires_in the whole seconds left at `now`.
SecretValue MetadataTokenJson(const GcpCredential& c, TimePoint now);

// credential_process output (one line, no newline): {"Version":1,
// "AccessKeyId","SecretAccessKey","SessionToken","Expiration","AccountId"};
// Expiration is RFC 3339 UTC ("2026-05-26T12:34:56Z"); AccountId is left out
// when `account_id` is empty.
SecretValue CredentialProcessJson(const AwsCredential& c, std::string_view account_id);

// The container credentials endpoint's 200 body: {"AccessKeyId",
// "SecretAccessKey","Token","Expiration","AccountId"} (the session token is
// `Token` here).
SecretValue ContainerCredentialsJson(const AwsCredential& c, std::string_view account_id);

// The endpoint's non-200 body: {"code","message"}.
std::string ContainerErrorJson(std::string_view code, std::string_view message);

// `aws serve` replaces its cached credential when fewer than
// RefreshMargin(obtained, expires) are left: 60 s, or half the lifetime for
// a credential that lives less than two minutes.
inline constexpr std::chrono::seconds kRefreshMargin{60};
std::chrono::seconds RefreshMargin(TimePoint obtained, TimePoint expires);
bool NeedsRefresh(TimePoint obtained, TimePoint expires, TimePoint now);

// What `exec` changes in the child's environment.
struct ExecEnvironment {
  std::vector<std::pair<std::string, SecretValue>> set;  // NAME, value
  std::vector<std::string> unset;                        // exact names
};

// The variables for a credential:
//   aws_credentials           AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY,
//                             AWS_SESSION_TOKEN, AWS_REGION and
//                             AWS_DEFAULT_REGION (when the credential has a
//                             region); every other variable an SDK would
//                             prefer or mix in (profiles, the container
//                             endpoint, web identity, shared credential
//                             files, legacy key names) is unset;
//   github_installation_token GH_TOKEN and GITHUB_TOKEN;
//   gcp                       CLOUDSDK_AUTH_ACCESS_TOKEN (gcloud) and
//                             GOOGLE_OAUTH_ACCESS_TOKEN (client libraries
//                             and tools that read it); key files, another
//                             account and the metadata server's variables
//                             are unset;
//   jwt, or any type with a string `token`: JITBROKER_TOKEN.
// Always unset: JITBROKER_SESSION_TOKEN and JITBROKER_API_KEY, so the child
// cannot ask the broker for more than it was given.
// Errors (kInternal "unexpected_credential"): no usable secret, or a value
// that cannot be an environment value (NUL byte).
[[nodiscard]] Result<ExecEnvironment> ExecEnvironmentFor(const nlohmann::json& credential);

// The child's environment ("NAME=value" entries): `parent` without the
// unset names and the names being set, then the set ones. The caller wipes
// the result: it holds the credential.
std::vector<std::string> MergeEnvironment(const std::vector<std::string>& parent,
                                          const ExecEnvironment& env);

// Overwrites every string in `j` (recursively) with zeros before it is
// freed: for parsed answers that held a credential.
void WipeJsonStrings(nlohmann::json& j);

}  // namespace jitbroker::cli
