// What an aws_sts grant asks for, and what it implies (docs/aws.md,
// "Grants"): the role of its resource, the actions and ARNs of its scope,
// the tier those actions imply, and the inline session policy sent with
// every AssumeRole, so that a credential never carries the role's full
// rights.
//
// Thread-safety: pure functions.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "jitbroker/policy.h"
#include "jitbroker/result.h"

namespace jitbroker::issuers::aws_sts {

// The role a resource names: aws://ACCOUNT/role/[PATH/]NAME.
struct RoleRef {
  std::string account;  // 12 digits
  std::string path;     // "/" or "/team/…/"
  std::string name;     // the role name
  // arn:PARTITION:iam::ACCOUNT:role/PATH/NAME
  std::string Arn(std::string_view partition) const;
};

// Errors: kInvalidArgument "invalid_resource" saying what is wrong.
[[nodiscard]] Result<RoleRef> ParseRoleResource(std::string_view resource);

// The grant's scope: {"actions": [...], "resources": [...], "conditions": {...}?}.
struct AwsScope {
  std::vector<std::string> actions;    // "s3:GetObject", "s3:Get*", "*"
  std::vector<std::string> resources;  // ARNs or "*"
  nlohmann::json conditions;           // an IAM Condition block, or null
};

// Strict: both lists required and non-empty (at most 100 entries each),
// unknown keys refused, each action "service:Name" (wildcards * and ? in
// the name) or "*", each resource "*" or an ARN. Errors: kInvalidArgument
// "invalid_scope".
[[nodiscard]] Result<AwsScope> ParseAwsScope(const nlohmann::json& scope);

// The tier one action implies, the highest for wildcards (any action a
// pattern could match): read (Get*, List*, Describe*, Head*, BatchGet*,
// Query, Scan), write (others), destructive (Delete*, Terminate*, Remove*,
// Purge*, Destroy*; "*", "service:*" and other wildcards that could match
// those), secret (any iam:, sts: or organizations: action, kms:Decrypt,
// secretsmanager:GetSecretValue, ssm:GetParameter*): an action of that list
// is secret whatever its verb.
Tier ActionTier(std::string_view action);
// The highest tier of `scope`'s actions.
Tier ScopeTier(const AwsScope& scope);

// AssumeRole's inline session policy limit (plaintext characters).
inline constexpr size_t kMaxSessionPolicyChars = 2048;

// {"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":[…],
// "Resource":[…],"Condition":{…}}]}, compact. Errors: kInvalidArgument
// "policy_too_large" when over kMaxSessionPolicyChars.
[[nodiscard]] Result<std::string> SessionPolicy(const AwsScope& scope);

}  // namespace jitbroker::issuers::aws_sts
