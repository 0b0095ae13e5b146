#include "issuers/aws_sts/aws_scope.h"

#include <algorithm>
#include <array>

#include "broker/common/json_util.h"
#include "broker/common/text.h"

namespace jitbroker::issuers::aws_sts {

namespace {

constexpr size_t kMaxListEntries = 100;

bool IsRoleNameChar(char c) {
  return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' ||
         c == '+' || c == '=' || c == ',' || c == '.' || c == '@' || c == '-';
}

bool AllOf(std::string_view s, bool (*pred)(char)) {
  return !s.empty() && std::all_of(s.begin(), s.end(), pred);
}

Error BadScope(std::string message) {
  return InvalidArgument("invalid_scope", "aws_sts scope: " + std::move(message));
}

bool StartsWithAny(std::string_view name, const std::array<std::string_view, 5>& prefixes) {
  return std::any_of(prefixes.begin(), prefixes.end(),
                     [&](std::string_view p) { return name.starts_with(p); });
}

// Lower case: IAM matches action names case-insensitively, so the tier of
// "s3:deleteobject" is that of "s3:DeleteObject".
constexpr std::array<std::string_view, 5> kReadPrefixes = {"get", "list", "describe", "head",
                                                           "batchget"};
constexpr std::array<std::string_view, 5> kDestructivePrefixes = {"delete", "terminate", "remove",
                                                                  "purge", "destroy"};

// Actions that read secrets or act on identities, as "service:Name" globs.
constexpr std::array<std::string_view, 6> kSecretActions = {"iam:*",
                                                            "sts:*",
                                                            "organizations:*",
                                                            "kms:Decrypt",
                                                            "secretsmanager:GetSecretValue",
                                                            "ssm:GetParameter*"};

// Glob match with '*' (any run) and '?' (one character), case-insensitive
// as IAM matches action names.
bool Glob(std::string_view pattern, std::string_view text) {
  auto lower = [](char c) { return c >= 'A' && c <= 'Z' ? static_cast<char>(c + 32) : c; };
  size_t p = 0, t = 0, star = std::string_view::npos, mark = 0;
  while (t < text.size()) {
    if (p < pattern.size() && (pattern[p] == '?' || lower(pattern[p]) == lower(text[t]))) {
      ++p;
      ++t;
    } else if (p < pattern.size() && pattern[p] == '*') {
      star = p++;
      mark = t;
    } else if (star != std::string_view::npos) {
      p = star + 1;
      t = ++mark;
    } else {
      return false;
    }
  }
  while (p < pattern.size() && pattern[p] == '*') {
    ++p;
  }
  return p == pattern.size();
}

// Whether two globs could match one common string: both "service:Name"
// patterns; a conservative test (true when unsure).
bool MayOverlap(std::string_view a, std::string_view b) {
  const bool wild_a = a.find_first_of("*?") != std::string_view::npos;
  const bool wild_b = b.find_first_of("*?") != std::string_view::npos;
  if (!wild_a) {
    return Glob(b, a);
  }
  if (!wild_b) {
    return Glob(a, b);
  }
  // Both wild: compare the literal prefixes before the first wildcard.
  const std::string_view pa = a.substr(0, a.find_first_of("*?"));
  const std::string_view pb = b.substr(0, b.find_first_of("*?"));
  const size_t n = std::min(pa.size(), pb.size());
  for (size_t i = 0; i < n; ++i) {
    auto lower = [](char c) { return c >= 'A' && c <= 'Z' ? static_cast<char>(c + 32) : c; };
    if (lower(pa[i]) != lower(pb[i])) {
      return false;
    }
  }
  return true;
}

}  // namespace

std::string RoleRef::Arn(std::string_view partition) const {
  return "arn:" + std::string(partition) + ":iam::" + account + ":role" + path + name;
}

Result<RoleRef> ParseRoleResource(std::string_view resource) {
  auto bad = [&](const std::string& why) {
    return std::unexpected(InvalidArgument(
        "invalid_resource", "aws_sts resource must be aws://ACCOUNT/role/[PATH/]NAME: " + why));
  };
  constexpr std::string_view kScheme = "aws://";
  if (!resource.starts_with(kScheme)) {
    return bad("it does not start with aws://");
  }
  std::string_view rest = resource.substr(kScheme.size());
  const size_t slash = rest.find('/');
  RoleRef r;
  r.account = std::string(rest.substr(0, slash));
  if (r.account.size() != 12 || !std::all_of(r.account.begin(), r.account.end(),
                                             [](char c) { return c >= '0' && c <= '9'; })) {
    return bad("the account is not 12 digits");
  }
  if (slash == std::string_view::npos || !rest.substr(slash).starts_with("/role/")) {
    return bad("no /role/ after the account");
  }
  rest = rest.substr(slash + 6);  // after "/role/"
  const size_t last = rest.rfind('/');
  const std::string_view name = last == std::string_view::npos ? rest : rest.substr(last + 1);
  const std::string_view path = last == std::string_view::npos ? "" : rest.substr(0, last);
  if (name.size() > 64 || !AllOf(name, IsRoleNameChar)) {
    return bad("the role name must be 1-64 of A-Z a-z 0-9 _+=,.@-");
  }
  r.name = std::string(name);
  r.path = "/";
  if (!path.empty()) {
    size_t pos = 0;
    while (pos <= path.size()) {
      const size_t next = path.find('/', pos);
      const std::string_view seg = path.substr(pos, next - pos);
      if (!AllOf(seg, IsRoleNameChar)) {
        return bad("a path segment is empty or has a character outside A-Z a-z 0-9 _+=,.@-");
      }
      r.path += std::string(seg) + "/";
      if (next == std::string_view::npos) {
        break;
      }
      pos = next + 1;
    }
  }
  if (r.path.size() > 512) {
    return bad("the role path is longer than 512 characters");
  }
  return r;
}

Result<AwsScope> ParseAwsScope(const nlohmann::json& scope) {
  JITBROKER_ASSIGN_OR_RETURN(auto r, json::JsonReader::Open(scope, "scope"));
  AwsScope out;
  auto list = [&](const char* key, std::vector<std::string>& into) -> Status {
    JITBROKER_ASSIGN_OR_RETURN(into, r.StringList(key, kMaxListEntries, 2048));
    if (into.empty()) {
      return std::unexpected(BadScope(
          std::string(key) + " is required: a grant never carries the role's full rights"));
    }
    return OkStatus();
  };
  JITBROKER_RETURN_IF_ERROR(list("actions", out.actions));
  JITBROKER_RETURN_IF_ERROR(list("resources", out.resources));
  JITBROKER_ASSIGN_OR_RETURN(auto conditions, r.OptObject("conditions"));
  JITBROKER_RETURN_IF_ERROR(r.Finish());
  out.conditions = conditions ? *conditions : nlohmann::json();
  for (const std::string& a : out.actions) {
    if (a == "*") {
      continue;
    }
    const size_t colon = a.find(':');
    const std::string_view service = std::string_view(a).substr(0, colon);
    const std::string_view name =
        colon == std::string::npos ? std::string_view() : std::string_view(a).substr(colon + 1);
    const bool service_ok = AllOf(service, [](char c) {
      return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-';
    });
    const bool name_ok = AllOf(name, [](char c) {
      return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
             c == '*' || c == '?';
    });
    if (colon == std::string::npos || !service_ok || !name_ok) {
      return std::unexpected(
          BadScope("action \"" + a + "\" is not service:Action (e.g. s3:GetObject) or *"));
    }
  }
  for (const std::string& res : out.resources) {
    if (res != "*" && !res.starts_with("arn:")) {
      return std::unexpected(BadScope("resource \"" + res + "\" is not an ARN or *"));
    }
    if (std::any_of(res.begin(), res.end(), [](char c) {
          const auto u = static_cast<unsigned char>(c);
          return u < 0x21 || u > 0x7e || c == '"' || c == '\\';
        })) {
      return std::unexpected(BadScope("resource \"" + res + "\" has a character ARNs do not"));
    }
  }
  return out;
}

Tier ActionTier(std::string_view action) {
  if (action == "*") {
    return Tier::kDestructive;
  }
  for (std::string_view secret : kSecretActions) {
    if (MayOverlap(action, secret)) {
      return Tier::kSecret;
    }
  }
  const std::string lower = text::AsciiLower(action.substr(action.find(':') + 1));
  const std::string_view name = lower;
  const size_t wild = name.find_first_of("*?");
  if (wild == std::string_view::npos) {
    if (StartsWithAny(name, kDestructivePrefixes)) {
      return Tier::kDestructive;
    }
    if (StartsWithAny(name, kReadPrefixes) || name == "query" || name == "scan") {
      return Tier::kRead;
    }
    return Tier::kWrite;
  }
  // A pattern: the highest tier of anything it could match. Only "Prefix*"
  // with a read prefix is known to match reads alone.
  const std::string_view literal = name.substr(0, wild);
  const bool only_suffix_star = wild == name.size() - 1 && name.back() == '*';
  for (std::string_view d : kDestructivePrefixes) {
    if (d.starts_with(literal) || literal.starts_with(d)) {
      return Tier::kDestructive;
    }
  }
  if (!only_suffix_star) {
    return Tier::kDestructive;  // "s3:*Object" could be DeleteObject
  }
  if (StartsWithAny(literal, kReadPrefixes)) {
    return Tier::kRead;
  }
  return Tier::kWrite;
}

Tier ScopeTier(const AwsScope& scope) {
  Tier t = Tier::kRead;
  for (const std::string& a : scope.actions) {
    t = std::max(t, ActionTier(a));
  }
  return t;
}

Result<std::string> SessionPolicy(const AwsScope& scope) {
  nlohmann::json statement = {
      {"Effect", "Allow"}, {"Action", scope.actions}, {"Resource", scope.resources}};
  if (scope.conditions.is_object() && !scope.conditions.empty()) {
    statement["Condition"] = scope.conditions;
  }
  const nlohmann::json policy = {{"Version", "2012-10-17"}, {"Statement", {statement}}};
  std::string text = policy.dump();
  if (text.size() > kMaxSessionPolicyChars) {
    return std::unexpected(InvalidArgument(
        "policy_too_large", "the session policy built from the scope is " +
                                std::to_string(text.size()) +
                                " characters; AssumeRole takes at "
                                "most 2048 (fewer actions or resources, or wildcards)"));
  }
  return text;
}

}  // namespace jitbroker::issuers::aws_sts
