#include "cli/agent_credentials.h"

#include <algorithm>
#include <array>
#include <cctype>
#include <initializer_list>
#include <optional>
#include <string>

#include "broker/common/time_util.h"
#include "issuers/aws_sts/aws_scope.h"
#include "issuers/gcp/gcp_scope.h"

namespace jitbroker::cli {

namespace {

Error Unexpected(std::string message) {
  Error e = Internal(std::move(message));
  e.reason = "unexpected_credential";
  return e;
}

// A non-empty string member of `obj`, moved into a SecretValue.
std::optional<SecretValue> SecretMember(const nlohmann::json& obj, const char* key) {
  auto it = obj.find(key);
  if (it == obj.end() || !it->is_string() || it->get_ref<const std::string&>().empty()) {
    return std::nullopt;
  }
  return SecretValue(it->get<std::string>());
}

// Appends `s` as a JSON string. `out` has room reserved by the caller, so
// appending never reallocates and leaves no copy of a secret behind.
void AppendJsonString(std::string* out, std::string_view s) {
  static constexpr char kHex[] = "0123456789abcdef";
  out->push_back('"');
  for (char c : s) {
    const auto u = static_cast<unsigned char>(c);
    if (c == '"' || c == '\\') {
      out->push_back('\\');
      out->push_back(c);
    } else if (u < 0x20) {
      out->append("\\u00");
      out->push_back(kHex[u >> 4]);
      out->push_back(kHex[u & 0x0f]);
    } else {
      out->push_back(c);
    }
  }
  out->push_back('"');
}

// {"K1":V1,...} from string members; `version` adds "Version":1 first.
SecretValue JsonObject(bool version,
                       const std::vector<std::pair<std::string_view, std::string_view>>& members) {
  size_t room = 16;
  for (const auto& [k, v] : members) {
    room += k.size() + 6 * v.size() + 8;  // worst case: every byte \u00XX
  }
  std::string out;
  out.reserve(room);
  out.push_back('{');
  if (version) {
    out.append("\"Version\":1");
  }
  for (const auto& [k, v] : members) {
    if (out.size() > 1) {
      out.push_back(',');
    }
    AppendJsonString(&out, k);
    out.push_back(':');
    AppendJsonString(&out, v);
  }
  out.push_back('}');
  return SecretValue(std::move(out));
}

bool HasNul(std::string_view s) { return s.find('\0') != std::string_view::npos; }

// Set by `exec` for AWS, or read by the SDKs before or beside them: a child
// must see only the grant's credential (docs/jitctl.md, "exec").
constexpr std::array<std::string_view, 16> kAwsUnset = {
    "AWS_PROFILE",
    "AWS_DEFAULT_PROFILE",
    "AWS_CONTAINER_CREDENTIALS_FULL_URI",
    "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
    "AWS_CONTAINER_AUTHORIZATION_TOKEN",
    "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE",
    "AWS_SHARED_CREDENTIALS_FILE",
    "AWS_WEB_IDENTITY_TOKEN_FILE",
    "AWS_ROLE_ARN",
    "AWS_ROLE_SESSION_NAME",
    "AWS_CREDENTIAL_EXPIRATION",
    "AWS_SECURITY_TOKEN",  // the legacy name of AWS_SESSION_TOKEN
    "AWS_ACCESS_KEY",      // legacy names of the key pair
    "AWS_SECRET_KEY",
    "AWS_ACCOUNT_ID",  // would name another account than the grant's
    "AWS_EC2_METADATA_SERVICE_ENDPOINT",
};

// Read by gcloud and Google's client libraries before or beside an access
// token in the environment (docs/gcp.md, "How agents use it"): a child must
// use only the grant's token, not a key file, another account or the
// metadata server.
constexpr std::array<std::string_view, 8> kGcpUnset = {
    "GOOGLE_APPLICATION_CREDENTIALS",
    "CLOUDSDK_AUTH_ACCESS_TOKEN_FILE",
    "CLOUDSDK_AUTH_CREDENTIAL_FILE_OVERRIDE",
    "CLOUDSDK_AUTH_IMPERSONATE_SERVICE_ACCOUNT",
    "CLOUDSDK_CORE_ACCOUNT",
    "GCE_METADATA_HOST",
    "GCE_METADATA_ROOT",
    "GCE_METADATA_IP",
};

constexpr std::array<std::string_view, 2> kAlwaysUnset = {"JITBROKER_SESSION_TOKEN",
                                                          "JITBROKER_API_KEY"};

// An error unless `c` is a credential of `type` (`what`: which issuers
// mint it, for the hint). The type shown is only ever a plain identifier.
Status CheckType(const nlohmann::json& c, std::string_view type, std::string_view what) {
  auto it = c.find("type");
  if (it != c.end() && it->is_string() && *it == type) {
    return {};
  }
  std::string shown = it != c.end() && it->is_string() ? it->get<std::string>() : "none";
  if (shown.size() > 64 || !std::all_of(shown.begin(), shown.end(), [](char ch) {
        return (ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9') || ch == '_';
      })) {
    shown = "?";
  }
  return std::unexpected(Unexpected("the credential is of type " + shown + ", not " +
                                    std::string(type) + ": is --issuer " + std::string(what) +
                                    "?"));
}

// When a credential ends: the earliest of `grant_expires_at` (the grant's
// own expires_at, when known) and the credential's members `fields`, each
// an RFC 3339 time when present.
Result<TimePoint> EarliestExpiry(const nlohmann::json& c, const nlohmann::json* grant_expires_at,
                                 std::initializer_list<const char*> fields) {
  std::vector<std::pair<const nlohmann::json*, std::string>> values = {
      {grant_expires_at, "grant's expires_at"}};
  for (const char* key : fields) {
    auto it = c.find(key);
    values.emplace_back(it == c.end() ? nullptr : &*it, std::string("credential's ") + key);
  }
  std::optional<TimePoint> expiry;
  for (const auto& [value, name] : values) {
    if (value == nullptr || value->is_null()) {
      continue;
    }
    Result<TimePoint> t = value->is_string()
                              ? ParseRfc3339(value->get_ref<const std::string&>())
                              : Result<TimePoint>(std::unexpected(Internal("not a string")));
    if (!t) {
      return std::unexpected(Unexpected("the " + name + " is not an RFC 3339 time"));
    }
    expiry = expiry ? std::min(*expiry, *t) : *t;
  }
  if (!expiry) {
    return std::unexpected(Unexpected("the credential has no expiry"));
  }
  return *expiry;
}

// The credential `c` (an aws_credentials object); `grant_expires_at`, the
// grant's own expires_at, when known.
Result<AwsCredential> AwsFromCredential(const nlohmann::json& c,
                                        const nlohmann::json* grant_expires_at) {
  JITBROKER_RETURN_IF_ERROR(CheckType(c, "aws_credentials", "an aws_sts issuer"));
  AwsCredential out;
  std::optional<SecretValue> akid = SecretMember(c, "access_key_id");
  std::optional<SecretValue> secret = SecretMember(c, "secret_access_key");
  std::optional<SecretValue> token = SecretMember(c, "session_token");
  if (!akid || !secret || !token) {
    return std::unexpected(
        Unexpected("the aws_credentials credential lacks access_key_id, secret_access_key or "
                   "session_token"));
  }
  out.access_key_id = std::string(akid->Reveal());
  out.secret_access_key = std::move(*secret);
  out.session_token = std::move(*token);
  JITBROKER_ASSIGN_OR_RETURN(out.expires_at,
                             EarliestExpiry(c, grant_expires_at, {"expires_at", "expiration"}));
  if (auto r = c.find("region"); r != c.end() && r->is_string()) {
    out.region = r->get<std::string>();
  }
  return out;
}

// The credential member of a grant answer, and the grant's expires_at.
Result<std::pair<const nlohmann::json*, const nlohmann::json*>> CredentialOf(
    const nlohmann::json& grant) {
  if (!grant.is_object()) {
    return std::unexpected(Unexpected("the broker's answer is not a grant"));
  }
  auto cit = grant.find("credential");
  if (cit == grant.end() || !cit->is_object()) {
    return std::unexpected(Unexpected("the broker's answer carries no credential"));
  }
  auto exp = grant.find("expires_at");
  return std::pair{&*cit, exp == grant.end() ? nullptr : &*exp};
}

// The --ttl flag into body["ttl_seconds"], else `default_ttl` when set.
std::optional<std::string> TtlInto(const ParsedArgs& args, std::optional<int64_t> default_ttl,
                                   nlohmann::json& body) {
  if (args.Has("ttl")) {
    const std::optional<int64_t> ttl = ParseInt64(args.Get("ttl").value_or(""), 1, 43200);
    if (!ttl) {
      return "flag --ttl needs a number of seconds in [1, 43200]";
    }
    body["ttl_seconds"] = *ttl;
  } else if (default_ttl) {
    body["ttl_seconds"] = *default_ttl;
  }
  return std::nullopt;
}

}  // namespace

Result<std::string> AwsAccountOf(std::string_view resource) {
  JITBROKER_ASSIGN_OR_RETURN(issuers::aws_sts::RoleRef role,
                             issuers::aws_sts::ParseRoleResource(resource));
  return role.account;
}

Result<AwsCredential> AwsCredentialFromGrant(const nlohmann::json& grant) {
  JITBROKER_ASSIGN_OR_RETURN(auto parts, CredentialOf(grant));
  return AwsFromCredential(*parts.first, parts.second);
}

Result<GcpCredential> GcpCredentialFromGrant(const nlohmann::json& grant) {
  JITBROKER_ASSIGN_OR_RETURN(auto parts, CredentialOf(grant));
  const nlohmann::json& c = *parts.first;
  JITBROKER_RETURN_IF_ERROR(CheckType(c, "gcp", "a gcp issuer"));
  std::optional<SecretValue> token = SecretMember(c, "access_token");
  if (!token) {
    return std::unexpected(Unexpected("the gcp credential has no access_token"));
  }
  GcpCredential out;
  out.access_token = std::move(*token);
  JITBROKER_ASSIGN_OR_RETURN(out.expires_at, EarliestExpiry(c, parts.second, {"expires_at"}));
  out.service_account = c.value("service_account", std::string());
  if (auto it = c.find("scopes"); it != c.end() && it->is_array()) {
    for (const auto& v : *it) {
      if (v.is_string()) {
        out.scopes.push_back(v.get<std::string>());
      }
    }
  }
  if (out.service_account.empty() || out.scopes.empty()) {
    return std::unexpected(Unexpected("the gcp credential names no service account or scopes"));
  }
  return out;
}

std::expected<nlohmann::json, std::string> BuildAwsGrantBody(const ParsedArgs& args,
                                                             std::string_view command,
                                                             std::string_view default_issuer,
                                                             std::optional<int64_t> default_ttl) {
  const std::string resource = args.Get("resource").value_or("");
  if (Result<std::string> account = AwsAccountOf(resource); !account) {
    return std::unexpected("flag --resource: " + account.error().message);
  }
  const std::vector<std::string> actions = args.All("action");
  nlohmann::json scope = {{"actions", actions}, {"resources", args.All("arn-resource")}};
  if (Result<issuers::aws_sts::AwsScope> parsed = issuers::aws_sts::ParseAwsScope(scope); !parsed) {
    return std::unexpected("flags --action/--arn-resource: " + parsed.error().message);
  }
  nlohmann::json body = nlohmann::json::object();
  body["tool"] = args.Get("tool").value_or(DefaultAwsTool(actions));
  body["operation"] = args.Get("operation").value_or(DefaultAwsOperation(actions));
  body["resource"] = resource;
  body["issuer"] = args.Get("issuer").value_or(std::string(default_issuer));
  body["scope"] = std::move(scope);
  if (auto bad = TtlInto(args, default_ttl, body)) {
    return std::unexpected(*bad);
  }
  body["justification"] =
      args.Get("justification").value_or("jitctl " + std::string(command) + " for " + resource);
  return body;
}

std::expected<nlohmann::json, std::string> BuildGcpGrantBody(const ParsedArgs& args,
                                                             std::string_view command,
                                                             std::string_view default_issuer) {
  const std::string resource = args.Get("resource").value_or("");
  if (Result<issuers::gcp::GcpResource> r = issuers::gcp::ParseGcpResource(resource); !r) {
    return std::unexpected("flag --resource: " + r.error().message);
  }
  nlohmann::json scopes = nlohmann::json::array();
  for (const std::string& s : args.All("scope")) {
    if (s.empty()) {
      return std::unexpected("flag --scope needs an OAuth scope, e.g. cloud-platform");
    }
    scopes.push_back(s.find("://") == std::string::npos ? std::string(kGoogleScopePrefix) + s : s);
  }
  nlohmann::json storage = nlohmann::json::array();
  for (const std::string& rule : args.All("storage")) {
    // BUCKET[/PREFIX]=ROLE
    const size_t eq = rule.rfind('=');
    if (eq == std::string::npos) {
      return std::unexpected(
          "flag --storage needs BUCKET[/PREFIX]=ROLE, e.g. "
          "acme-artifacts/builds/=objectViewer");
    }
    const std::string where = rule.substr(0, eq);
    const size_t slash = where.find('/');
    nlohmann::json r = {{"bucket", where.substr(0, slash)}, {"role", rule.substr(eq + 1)}};
    if (slash != std::string::npos) {
      r["prefix"] = where.substr(slash + 1);
    }
    storage.push_back(std::move(r));
  }
  nlohmann::json scope = {{"scopes", std::move(scopes)}};
  if (!storage.empty()) {
    scope["storage"] = std::move(storage);
  }
  Result<issuers::gcp::GcpScope> parsed = issuers::gcp::ParseGcpScope(scope);
  if (!parsed) {
    return std::unexpected("flags --scope/--storage: " + parsed.error().message);
  }
  nlohmann::json body = nlohmann::json::object();
  body["tool"] = args.Get("tool").value_or("gcp");
  body["operation"] =
      args.Get("operation")
          .value_or(issuers::gcp::GcpScopeTier(*parsed, Tier::kWrite) == Tier::kRead ? "read"
                                                                                     : "write");
  body["resource"] = resource;
  body["issuer"] = args.Get("issuer").value_or(std::string(default_issuer));
  body["scope"] = std::move(scope);
  if (auto bad = TtlInto(args, std::nullopt, body)) {
    return std::unexpected(*bad);
  }
  body["justification"] =
      args.Get("justification").value_or("jitctl " + std::string(command) + " for " + resource);
  return body;
}

std::string DefaultAwsTool(const std::vector<std::string>& actions) {
  std::optional<std::string> service;
  for (const std::string& action : actions) {
    const size_t colon = action.find(':');
    if (colon == std::string::npos || colon == 0) {
      return "aws";  // "*"
    }
    std::string s = action.substr(0, colon);
    std::transform(s.begin(), s.end(), s.begin(),
                   [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
    if (service && *service != s) {
      return "aws";
    }
    service = std::move(s);
  }
  return service ? "aws." + *service : "aws";
}

std::string DefaultAwsOperation(const std::vector<std::string>& actions) {
  const bool reads =
      !actions.empty() && std::all_of(actions.begin(), actions.end(), [](const std::string& a) {
        return issuers::aws_sts::ActionTier(a) == Tier::kRead;
      });
  return reads ? "read" : "write";
}

namespace {

// The SDKs' credential object: credential_process's (Version 1, the session
// token as SessionToken) or the container endpoint's (Token).
SecretValue SdkCredentialJson(const AwsCredential& c, std::string_view account_id,
                              bool credential_process) {
  const std::string expiration = FormatRfc3339(c.expires_at);
  std::vector<std::pair<std::string_view, std::string_view>> members = {
      {"AccessKeyId", c.access_key_id},
      {"SecretAccessKey", c.secret_access_key.Reveal()},
      {credential_process ? "SessionToken" : "Token", c.session_token.Reveal()},
      {"Expiration", expiration}};
  if (!account_id.empty()) {
    members.emplace_back("AccountId", account_id);
  }
  return JsonObject(/*version=*/credential_process, members);
}

}  // namespace

SecretValue CredentialProcessJson(const AwsCredential& c, std::string_view account_id) {
  return SdkCredentialJson(c, account_id, /*credential_process=*/true);
}

SecretValue ContainerCredentialsJson(const AwsCredential& c, std::string_view account_id) {
  return SdkCredentialJson(c, account_id, /*credential_process=*/false);
}

SecretValue MetadataTokenJson(const GcpCredential& c, TimePoint now) {
  const int64_t left = std::max<int64_t>(
      0, std::chrono::duration_cast<std::chrono::seconds>(c.expires_at - now).count());
  const std::string expires_in = std::to_string(left);
  // {"access_token":"…","expires_in":N,"token_type":"Bearer"}: expires_in
  // is a number, so the members are written here rather than by JsonObject.
  std::string out;
  out.reserve(c.access_token.size() * 6 + 96);
  out.append("{\"access_token\":");
  AppendJsonString(&out, c.access_token.Reveal());
  out.append(",\"expires_in\":").append(expires_in).append(",\"token_type\":\"Bearer\"}");
  return SecretValue(std::move(out));
}

std::string ContainerErrorJson(std::string_view code, std::string_view message) {
  SecretValue body = JsonObject(false, {{"code", code}, {"message", message}});
  return std::string(body.Reveal());
}

std::chrono::seconds RefreshMargin(TimePoint obtained, TimePoint expires) {
  const auto lifetime = std::chrono::duration_cast<std::chrono::seconds>(expires - obtained);
  if (lifetime <= std::chrono::seconds(0)) {
    return std::chrono::seconds(0);
  }
  return std::min(kRefreshMargin, lifetime / 2);
}

bool NeedsRefresh(TimePoint obtained, TimePoint expires, TimePoint now) {
  return now >= expires - RefreshMargin(obtained, expires);
}

Result<ExecEnvironment> ExecEnvironmentFor(const nlohmann::json& credential) {
  if (!credential.is_object()) {
    return std::unexpected(Unexpected("the broker's answer carries no credential"));
  }
  ExecEnvironment env;
  for (std::string_view name : kAlwaysUnset) {
    env.unset.emplace_back(name);
  }
  const std::string type = credential.value("type", std::string());
  if (type == "aws_credentials") {
    Result<AwsCredential> aws = AwsFromCredential(credential, nullptr);
    if (!aws) {
      return std::unexpected(aws.error());
    }
    for (std::string_view name : kAwsUnset) {
      env.unset.emplace_back(name);
    }
    env.set.emplace_back("AWS_ACCESS_KEY_ID", SecretValue(aws->access_key_id));
    env.set.emplace_back("AWS_SECRET_ACCESS_KEY", std::move(aws->secret_access_key));
    env.set.emplace_back("AWS_SESSION_TOKEN", std::move(aws->session_token));
    if (!aws->region.empty()) {
      env.set.emplace_back("AWS_REGION", SecretValue(aws->region));
      env.set.emplace_back("AWS_DEFAULT_REGION", SecretValue(aws->region));
    }
  } else if (type == "gcp") {
    std::optional<SecretValue> token = SecretMember(credential, "access_token");
    if (!token) {
      return std::unexpected(Unexpected("the gcp credential has no access_token"));
    }
    for (std::string_view name : kGcpUnset) {
      env.unset.emplace_back(name);
    }
    env.set.emplace_back("CLOUDSDK_AUTH_ACCESS_TOKEN", token->Clone());
    env.set.emplace_back("GOOGLE_OAUTH_ACCESS_TOKEN", std::move(*token));
  } else {
    std::optional<SecretValue> token = SecretMember(credential, "token");
    if (!token) {
      return std::unexpected(
          Unexpected("the credential has no single token to put in the environment"));
    }
    if (type == "github_installation_token") {
      env.set.emplace_back("GH_TOKEN", token->Clone());
      env.set.emplace_back("GITHUB_TOKEN", std::move(*token));
    } else {
      env.set.emplace_back("JITBROKER_TOKEN", std::move(*token));
    }
  }
  for (const auto& [name, value] : env.set) {
    if (HasNul(value.Reveal())) {
      return std::unexpected(Unexpected(name + " would hold a NUL byte"));
    }
  }
  return env;
}

std::vector<std::string> MergeEnvironment(const std::vector<std::string>& parent,
                                          const ExecEnvironment& env) {
  auto dropped = [&env](std::string_view name) {
    return std::find(env.unset.begin(), env.unset.end(), name) != env.unset.end() ||
           std::any_of(env.set.begin(), env.set.end(),
                       [name](const auto& kv) { return kv.first == name; });
  };
  std::vector<std::string> out;
  out.reserve(parent.size() + env.set.size());
  for (const std::string& entry : parent) {
    const size_t eq = entry.find('=');
    if (eq == std::string::npos || eq == 0 || dropped(std::string_view(entry).substr(0, eq))) {
      continue;
    }
    out.push_back(entry);
  }
  for (const auto& [name, value] : env.set) {
    std::string entry;
    entry.reserve(name.size() + 1 + value.size());
    entry.append(name).append("=").append(value.Reveal());
    out.push_back(std::move(entry));
  }
  return out;
}

void WipeJsonStrings(nlohmann::json& j) {
  if (j.is_string()) {
    std::string& s = j.get_ref<std::string&>();
    SecureWipe(s.data(), s.size());
  } else if (j.is_structured()) {
    for (auto& item : j) {
      WipeJsonStrings(item);
    }
  }
}

}  // namespace jitbroker::cli
