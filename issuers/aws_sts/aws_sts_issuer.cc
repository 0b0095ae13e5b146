#include "issuers/aws_sts/aws_sts_issuer.h"

#include <algorithm>
#include <set>

#include "broker/common/time_util.h"
#include "broker/crypto/crypto.h"
#include "broker/net/url.h"
#include "issuers/aws_sts/aws_api.h"
#include "issuers/aws_sts/aws_scope.h"
#include "issuers/aws_sts/base_identity.h"
#include "issuers/aws_sts/revocation_writer.h"

namespace jitbroker::issuers::aws_sts {

namespace {

constexpr int64_t kMinDurationSeconds = 900;    // AssumeRole's DurationSeconds floor
constexpr int64_t kMaxDurationSeconds = 43200;  // and ceiling (12 h)

struct Options {
  std::string name;
  std::string region;
  std::string partition;
  std::set<std::string> accounts;
  QueryOptions sts;
  QueryOptions iam;
  bool deny_policy = true;  // revoke: deny_policy (else expiry_only)
  int64_t deny_propagation_seconds = 300;
  size_t max_policy_chars = 10240;
  std::string access_key_id;
  SecretValue secret_access_key;
  SecretValue session_token;
  std::optional<WebIdentitySource> web_identity;  // instead of the keys
  int64_t max_ttl_seconds = 3600;
  int64_t default_ttl_seconds = 900;
  int64_t max_session_seconds = 3600;
  std::string external_id;
};

bool IsExternalIdChar(char c) {
  return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
         std::string_view("_+=,.@:/-").find(c) != std::string_view::npos;
}

// A session tag value: AWS takes [\p{L}\p{Z}\p{N}_.:/=+\-@]{0,256}; the
// broker's ids are printable ASCII, so anything else becomes '_'.
std::string TagValue(std::string_view v) {
  std::string out;
  for (char c : v.substr(0, 256)) {
    const bool ok = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
                    std::string_view("_.:/=+-@ ").find(c) != std::string_view::npos;
    out.push_back(ok ? c : '_');
  }
  return out;
}

// arn:PARTITION:iam::ACCOUNT:role/[PATH/]NAME
bool IsRoleArn(std::string_view arn) {
  for (std::string_view p : {"arn:aws:iam::", "arn:aws-cn:iam::", "arn:aws-us-gov:iam::"}) {
    if (arn.starts_with(p)) {
      const std::string_view rest = arn.substr(p.size());
      return rest.size() > 18 && rest.size() <= 2048 &&
             std::all_of(rest.begin(), rest.begin() + 12,
                         [](char c) { return c >= '0' && c <= '9'; }) &&
             rest.substr(12).starts_with(":role/") && !rest.ends_with('/') &&
             std::all_of(rest.begin(), rest.end(), [](char c) { return c > 0x20 && c < 0x7f; });
    }
  }
  return false;
}

std::string PartitionOf(std::string_view region) {
  if (region.starts_with("cn-")) {
    return "aws-cn";
  }
  if (region.starts_with("us-gov-")) {
    return "aws-us-gov";
  }
  return "aws";
}

// What a request asks of this issuer, parsed once.
struct ParsedRequest {
  RoleRef role;
  AwsScope scope;
  std::string policy;  // the session policy text
};

class AwsSpec final : public IssuerSpec {
 public:
  explicit AwsSpec(const Options& o) : partition_(o.partition), accounts_(o.accounts) {
    desc_.name = o.name;
    desc_.type = "aws_sts";
    desc_.revocability = o.deny_policy ? Revocability::kDenyByCondition : Revocability::kExpiryOnly;
    desc_.mints_upstream = true;
    desc_.max_ttl_seconds = o.max_ttl_seconds;
    desc_.default_ttl_seconds = std::min(o.default_ttl_seconds, o.max_ttl_seconds);
  }

  const IssuerDescription& Describe() const override { return desc_; }

  Result<Tier> ImpliedTier(const GrantRequest& req) const override {
    JITBROKER_ASSIGN_OR_RETURN(ParsedRequest p, Parse(req));
    return ScopeTier(p.scope);
  }

  // The actions ("s3:GetObject"): task scopes' and roles' `scopes` bound
  // them, tool rules match them.
  Result<std::vector<std::string>> ScopeItems(const GrantRequest& req) const override {
    JITBROKER_ASSIGN_OR_RETURN(ParsedRequest p, Parse(req));
    return p.scope.actions;
  }

  // Requested tokens are actions of the grant, each exactly as the trust
  // policy wrote it; the narrowed grant carries those with the grant's
  // resources and conditions.
  Result<NarrowedScope> NarrowScope(
      const GrantRequest& grant,
      const std::optional<std::vector<std::string>>& requested) const override {
    JITBROKER_ASSIGN_OR_RETURN(ParsedRequest p, Parse(grant));
    NarrowedScope out;
    out.scope = grant.scope;
    std::vector<std::string> actions = p.scope.actions;
    if (requested) {
      for (const std::string& tok : *requested) {
        if (std::find(p.scope.actions.begin(), p.scope.actions.end(), tok) ==
            p.scope.actions.end()) {
          return std::unexpected(
              PermissionDenied("scope_not_granted",
                               "scope \"" + tok + "\" is not an action the trust policy grants"));
        }
      }
      actions = *requested;
      out.scope["actions"] = actions;
    }
    for (const std::string& a : actions) {
      out.scope_text += (out.scope_text.empty() ? "" : " ") + a;
    }
    return out;
  }

  Result<ParsedRequest> Parse(const GrantRequest& req) const {
    ParsedRequest p;
    JITBROKER_ASSIGN_OR_RETURN(p.role, ParseRoleResource(req.resource));
    if (!accounts_.contains(p.role.account)) {
      return std::unexpected(PermissionDenied(
          "account_not_allowed",
          "account " + p.role.account + " is not among issuer " + desc_.name + "'s accounts"));
    }
    JITBROKER_ASSIGN_OR_RETURN(p.scope, ParseAwsScope(req.scope));
    JITBROKER_ASSIGN_OR_RETURN(p.policy, SessionPolicy(p.scope));
    return p;
  }

  const std::string& partition() const { return partition_; }

 private:
  IssuerDescription desc_;
  std::string partition_;
  std::set<std::string> accounts_;
};

class AwsStsIssuer final : public IssuerWithSpec<AwsSpec> {
 public:
  AwsStsIssuer(Options o, HttpClient* http, const Clock* clock)
      : IssuerWithSpec<AwsSpec>(AwsSpec(o)),
        region_(o.region),
        max_session_seconds_(o.max_session_seconds),
        external_id_(o.external_id),
        deny_policy_(o.deny_policy),
        deny_propagation_seconds_(o.deny_propagation_seconds),
        sts_(
            o.sts, http, clock, [this](std::string_view expired) { return base_->Get(expired); },
            o.name),
        iam_(
            o.iam, http, clock, [this](std::string_view expired) { return base_->Get(expired); },
            o.name),
        base_(o.web_identity
                  ? std::make_unique<BaseIdentity>(std::move(*o.web_identity), &sts_, clock)
                  : std::make_unique<BaseIdentity>(std::move(o.access_key_id),
                                                   std::move(o.secret_access_key),
                                                   std::move(o.session_token))),
        writer_(&iam_, o.max_policy_chars, o.name) {}

  Result<MintResult> Mint(const MintRequest& m) override {
    JITBROKER_ASSIGN_OR_RETURN(ParsedRequest p, spec().Parse(m.request));
    AssumeRoleInput in;
    in.role_arn = p.role.Arn(spec().partition());
    in.role_session_name = "jb-" + m.grant_id;
    in.source_identity = m.grant_id;
    in.policy = p.policy;
    in.duration_seconds = std::clamp<int64_t>(m.ttl_seconds, kMinDurationSeconds,
                                              std::max(kMinDurationSeconds, max_session_seconds_));
    in.tags = {{"jb-session", TagValue(m.session_id)},
               {"jb-principal", TagValue(m.principal_id)},
               {"jb-agent", TagValue(m.agent_id)},
               {"jb-task", TagValue(m.task_id)}};
    in.transitive_tag_keys = {"jb-session"};
    in.external_id = external_id_;
    JITBROKER_ASSIGN_OR_RETURN(AssumedRole role, AssumeRole(sts_, in));

    MintResult out;
    out.type = "aws_credentials";
    out.expires_at = std::min(role.expiration, m.now + std::chrono::seconds(m.ttl_seconds));
    if (in.duration_seconds > m.ttl_seconds) {
      // STS's floor is 15 minutes: the credential outlives a shorter grant.
      // (Compared by duration: STS's clock and the call's latency put its
      // expiration a moment after now + TTL even when they are equal.)
      out.upstream_expires_at = role.expiration;
    }
    out.fields = {{"access_key_id", role.access_key_id},
                  {"expiration", FormatRfc3339(role.expiration)},
                  {"region", region_},
                  {"assumed_role_arn", role.assumed_role_arn}};
    out.fingerprint_sha256 = crypto::Sha256Hex(role.secret_access_key.Reveal());
    out.audit_fields = {{"access_key_id", role.access_key_id},
                        {"assumed_role_arn", role.assumed_role_arn},
                        {"role_arn", in.role_arn},
                        {"role_session_name", in.role_session_name},
                        {"source_identity", in.source_identity},
                        {"duration_seconds", in.duration_seconds}};
    if (role.packed_policy_size) {
      out.audit_fields["packed_policy_size_percent"] = *role.packed_policy_size;
    }
    // What a revocation needs (nothing secret): the role and the grant id
    // the credential carries as its source identity.
    out.revocation_handle = SecretValue(
        nlohmann::json{{"role_arn", in.role_arn}, {"source_identity", in.source_identity}}.dump());
    out.secrets.emplace_back("secret_access_key", std::move(role.secret_access_key));
    out.secrets.emplace_back("session_token", std::move(role.session_token));
    return out;
  }

  Result<RevokeOutcome> Revoke(const RevokeRequest& r) override {
    const int64_t left = std::max<int64_t>(0, ToUnixSeconds(r.expires_at) - ToUnixSeconds(r.now));
    RevokeOutcome out;
    if (!deny_policy_) {
      // revoke: expiry_only (docs/aws.md, "Revocation"): STS credentials
      // live until they expire; the outcome says for how long.
      out.kind = RevokeOutcomeKind::kExpiryOnly;
      out.residual_seconds = left;
      return out;
    }
    // revoke: deny_policy: deny the grant's source identity on its role
    // until the credential expires; AWS applies it after propagation.
    nlohmann::json handle =
        nlohmann::json::parse(r.revocation_handle.Reveal(), nullptr, /*allow_exceptions=*/false);
    if (!handle.is_object() || !handle.value("role_arn", nlohmann::json()).is_string() ||
        !handle.value("source_identity", nlohmann::json()).is_string()) {
      return std::unexpected(Internal("the aws_sts revocation handle of grant " + r.grant_id +
                                      " is not {role_arn, source_identity}"));
    }
    const std::string role_arn = handle["role_arn"];
    const std::string source_identity = handle["source_identity"];
    out.kind = RevokeOutcomeKind::kDenyInstalled;
    if (left == 0) {
      return out;  // expired: nothing left to deny
    }
    JITBROKER_RETURN_IF_ERROR(writer_.Deny(role_arn.substr(role_arn.rfind('/') + 1),
                                           source_identity, r.expires_at, r.now));
    out.residual_seconds = std::min(left, deny_propagation_seconds_);
    return out;
  }

  void CollectMetrics(std::vector<MetricFamily>& out) const override {
    MetricFamily calls{
        "jitbroker_aws_api_calls_total", "counter", "AWS calls by service, action and outcome", {}};
    MetricFamily derivations{"jitbroker_aws_sigv4_key_derivations_total",
                             "counter",
                             "SigV4 signing keys derived (once per day, region, service)",
                             {}};
    sts_.CollectMetrics(calls, derivations);
    iam_.CollectMetrics(calls, derivations);
    out.push_back(std::move(calls));
    out.push_back(std::move(derivations));
    out.push_back(MetricFamily{
        "jitbroker_aws_web_identity_exchanges_total",
        "counter",
        "AssumeRoleWithWebIdentity exchanges for the broker's own identity",
        {{"issuer=\"" + spec().Describe().name + "\"", static_cast<double>(base_->exchanges())}}});
    writer_.CollectMetrics(out);
  }

 private:
  const std::string region_;
  const int64_t max_session_seconds_;
  const std::string external_id_;
  const bool deny_policy_;
  const int64_t deny_propagation_seconds_;
  AwsQueryApi sts_;
  AwsQueryApi iam_;
  std::unique_ptr<BaseIdentity> base_;  // signs sts_ and iam_; uses sts_ for web identity
  RevocationWriter writer_;
};

Result<Options> ParseOptions(IssuerContext& ctx) {
  if (ctx.config == nullptr) {
    return std::unexpected(Internal("issuer " + ctx.name + " (aws_sts) has no config section"));
  }
  ConfigView& s = *ctx.config;
  Options o;
  o.name = ctx.name;

  JITBROKER_ASSIGN_OR_RETURN(o.region, s.String("region"));
  if (o.region.size() > 32 || !std::all_of(o.region.begin(), o.region.end(), [](char c) {
        return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-';
      })) {
    return std::unexpected(s.Err("region", "must be an AWS region name such as us-east-1"));
  }
  JITBROKER_ASSIGN_OR_RETURN(auto partition, s.OptString("partition"));
  o.partition = partition.value_or(PartitionOf(o.region));
  if (o.partition != "aws" && o.partition != "aws-cn" && o.partition != "aws-us-gov") {
    return std::unexpected(s.Err("partition", "must be aws, aws-cn or aws-us-gov"));
  }

  JITBROKER_ASSIGN_OR_RETURN(auto creds, s.OptView("credentials"));
  if (!creds) {
    return std::unexpected(s.Err("credentials",
                                 "is required: the broker's own access_key_id and "
                                 "secret_access_key (and session_token), each env:NAME or "
                                 "file:PATH, or web_identity_token_file and role_arn"));
  }
  JITBROKER_ASSIGN_OR_RETURN(auto token_file, creds->OptString("web_identity_token_file"));
  JITBROKER_ASSIGN_OR_RETURN(auto role_arn, creds->OptString("role_arn"));
  if (token_file || role_arn) {
    // The broker's identity from a web identity token (docs/aws.md).
    for (const char* key : {"access_key_id", "secret_access_key", "session_token"}) {
      JITBROKER_ASSIGN_OR_RETURN(auto present, creds->OptString(key));
      if (present) {
        return std::unexpected(creds->Err(
            key, "cannot be combined with web_identity_token_file and role_arn: one identity"));
      }
    }
    JITBROKER_RETURN_IF_ERROR(creds->CheckNoUnknownKeys());
    if (!token_file || !role_arn) {
      return std::unexpected(creds->Err(!token_file ? "web_identity_token_file" : "role_arn",
                                        "is required with a web identity (both keys)"));
    }
    if (!IsRoleArn(*role_arn)) {
      return std::unexpected(
          creds->Err("role_arn", "must be arn:PARTITION:iam::ACCOUNT:role/NAME"));
    }
    if (auto t = BaseIdentity::ReadTokenFile(*token_file); !t) {
      return std::unexpected(creds->Err("web_identity_token_file", t.error().message));
    }
    o.web_identity = WebIdentitySource{*token_file, *role_arn, "jitbroker-" + o.name, 3600};
  } else {
    JITBROKER_ASSIGN_OR_RETURN(auto akid, creds->OptSecretRef("access_key_id"));
    JITBROKER_ASSIGN_OR_RETURN(auto secret, creds->OptSecretRef("secret_access_key"));
    JITBROKER_ASSIGN_OR_RETURN(auto token, creds->OptSecretRef("session_token"));
    JITBROKER_RETURN_IF_ERROR(creds->CheckNoUnknownKeys());
    if (!akid || !secret) {
      return std::unexpected(
          creds->Err(!akid ? "access_key_id" : "secret_access_key", "is required (env: or file:)"));
    }
    o.access_key_id = std::string(akid->Reveal());
    const bool akid_ok = o.access_key_id.size() >= 16 && o.access_key_id.size() <= 128 &&
                         std::all_of(o.access_key_id.begin(), o.access_key_id.end(), [](char c) {
                           return (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
                         });
    if (!akid_ok) {
      return std::unexpected(creds->Err("access_key_id", "is not an AWS access key id (AKIA…)"));
    }
    if (secret->empty() || secret->size() > 256) {
      return std::unexpected(creds->Err("secret_access_key", "is empty or too long"));
    }
    o.secret_access_key = std::move(*secret);
    if (token) {
      o.session_token = std::move(*token);
    }
  }

  JITBROKER_ASSIGN_OR_RETURN(auto accounts, s.StringList("accounts"));
  if (accounts.empty()) {
    return std::unexpected(s.Err("accounts",
                                 "is required: the AWS account ids whose roles this issuer may "
                                 "assume (roles elsewhere are refused before any call)"));
  }
  for (const std::string& a : accounts) {
    if (a.size() != 12 ||
        !std::all_of(a.begin(), a.end(), [](char c) { return c >= '0' && c <= '9'; })) {
      return std::unexpected(s.Err("accounts", "\"" + a + "\" is not a 12-digit account id"));
    }
    o.accounts.insert(a);
  }

  JITBROKER_ASSIGN_OR_RETURN(auto allow_http, s.OptBool("allow_http"));
  net::UrlPolicy url_policy;
  url_policy.http =
      allow_http.value_or(false) ? net::HttpRule::kLoopbackOnly : net::HttpRule::kRefuse;
  url_policy.allow_path = false;
  auto endpoint_of = [&](const std::string& key,
                         const std::string& fallback) -> Result<std::string> {
    JITBROKER_ASSIGN_OR_RETURN(auto given, s.OptString(key));
    std::string url = given.value_or(fallback);
    while (url.ends_with('/')) {
      url.pop_back();
    }
    if (auto u = net::ParseUrl(url, url_policy); !u) {
      return std::unexpected(
          s.Err(key,
                "must be https://HOST[:PORT] (http:// only with allow_http: true and a "
                "loopback host), without a path: " +
                    u.error().message));
    }
    return url;
  };
  const std::string suffix = o.partition == "aws-cn" ? "amazonaws.com.cn" : "amazonaws.com";
  JITBROKER_ASSIGN_OR_RETURN(o.sts.endpoint,
                             endpoint_of("endpoint", "https://sts." + o.region + "." + suffix));
  o.sts.region = o.region;
  o.sts.access_denied_hint =
      "the role's trust policy must allow sts:AssumeRole, sts:TagSession and "
      "sts:SetSourceIdentity for the broker";
  // IAM is global: one endpoint and signing region per partition.
  const std::string iam_default = o.partition == "aws-cn"
                                      ? "https://iam.cn-north-1.amazonaws.com.cn"
                                  : o.partition == "aws-us-gov" ? "https://iam.us-gov.amazonaws.com"
                                                                : "https://iam.amazonaws.com";
  JITBROKER_ASSIGN_OR_RETURN(o.iam.endpoint, endpoint_of("iam_endpoint", iam_default));
  o.iam.region = o.partition == "aws-cn"       ? "cn-north-1"
                 : o.partition == "aws-us-gov" ? "us-gov-west-1"
                                               : "us-east-1";
  o.iam.service = "iam";
  o.iam.api_version = "2010-05-08";
  o.iam.label = "AWS IAM";
  o.iam.access_denied_hint =
      "revoke: deny_policy needs iam:GetRolePolicy and iam:PutRolePolicy on the role's "
      "jitbroker-revocations policy";

  JITBROKER_ASSIGN_OR_RETURN(auto max_ttl, s.OptInt("max_ttl_seconds", 1, kMaxDurationSeconds));
  JITBROKER_ASSIGN_OR_RETURN(auto default_ttl,
                             s.OptInt("default_ttl_seconds", 1, kMaxDurationSeconds));
  JITBROKER_ASSIGN_OR_RETURN(
      auto max_session, s.OptInt("max_session_seconds", kMinDurationSeconds, kMaxDurationSeconds));
  o.max_ttl_seconds = max_ttl.value_or(3600);
  o.default_ttl_seconds = std::min(default_ttl.value_or(900), o.max_ttl_seconds);
  o.max_session_seconds = max_session.value_or(3600);

  JITBROKER_ASSIGN_OR_RETURN(auto external_id, s.OptString("external_id"));
  if (external_id) {
    if (external_id->size() < 2 || external_id->size() > 1224 ||
        !std::all_of(external_id->begin(), external_id->end(), IsExternalIdChar)) {
      return std::unexpected(
          s.Err("external_id", "must be 2-1224 characters of A-Z a-z 0-9 _+=,.@:/-"));
    }
    o.external_id = *external_id;
  }
  JITBROKER_ASSIGN_OR_RETURN(auto revoke, s.OptString("revoke"));
  if (revoke && *revoke != "deny_policy" && *revoke != "expiry_only") {
    return std::unexpected(s.Err("revoke",
                                 "must be deny_policy or expiry_only (docs/aws.md, "
                                 "\"Revocation\")"));
  }
  o.deny_policy = revoke.value_or("deny_policy") == "deny_policy";
  JITBROKER_ASSIGN_OR_RETURN(auto propagation,
                             s.OptInt("deny_propagation_seconds", 0, kMaxDurationSeconds));
  o.deny_propagation_seconds = propagation.value_or(300);
  JITBROKER_ASSIGN_OR_RETURN(auto max_chars, s.OptInt("max_policy_chars", 1024, 131072));
  o.max_policy_chars = static_cast<size_t>(max_chars.value_or(10240));
  if (!o.deny_policy && (propagation || max_chars)) {
    return std::unexpected(s.Err(propagation ? "deny_propagation_seconds" : "max_policy_chars",
                                 "applies only with revoke: deny_policy"));
  }

  JITBROKER_ASSIGN_OR_RETURN(auto timeout_ms, s.OptInt("timeout_ms", 100, 120000));
  JITBROKER_ASSIGN_OR_RETURN(auto connect_ms, s.OptInt("connect_timeout_ms", 100, 60000));
  JITBROKER_ASSIGN_OR_RETURN(auto attempts, s.OptInt("max_attempts", 1, 10));
  JITBROKER_ASSIGN_OR_RETURN(auto call_deadline_ms, s.OptInt("call_deadline_ms", 100, 300000));
  o.sts.timeout = std::chrono::milliseconds(timeout_ms.value_or(10000));
  o.sts.connect_timeout = std::chrono::milliseconds(connect_ms.value_or(5000));
  o.sts.max_attempts = static_cast<int>(attempts.value_or(3));
  o.sts.call_deadline = std::chrono::milliseconds(call_deadline_ms.value_or(15000));
  o.iam.timeout = o.sts.timeout;
  o.iam.connect_timeout = o.sts.connect_timeout;
  o.iam.max_attempts = o.sts.max_attempts;
  o.iam.call_deadline = o.sts.call_deadline;
  JITBROKER_RETURN_IF_ERROR(s.CheckNoUnknownKeys());
  return o;
}

Result<std::unique_ptr<Issuer>> Create(IssuerContext& ctx, AwsStsHooks hooks) {
  JITBROKER_ASSIGN_OR_RETURN(Options o, ParseOptions(ctx));
  if (ctx.http == nullptr || ctx.clock == nullptr) {
    return std::unexpected(Internal("issuer " + ctx.name + " (aws_sts) needs an HTTP client"));
  }
  o.sts.sleep = hooks.sleep;
  o.iam.sleep = std::move(hooks.sleep);
  return std::unique_ptr<Issuer>(std::make_unique<AwsStsIssuer>(std::move(o), ctx.http, ctx.clock));
}

}  // namespace

Result<std::unique_ptr<IssuerSpec>> ValidateAwsStsIssuer(IssuerContext& ctx) {
  JITBROKER_ASSIGN_OR_RETURN(Options o, ParseOptions(ctx));
  return std::unique_ptr<IssuerSpec>(std::make_unique<AwsSpec>(o));
}

Result<std::unique_ptr<Issuer>> CreateAwsStsIssuer(IssuerContext& ctx) {
  return Create(ctx, AwsStsHooks{});
}

Result<std::unique_ptr<Issuer>> CreateAwsStsIssuerForTesting(IssuerContext& ctx,
                                                             AwsStsHooks hooks) {
  return Create(ctx, std::move(hooks));
}

IssuerFactory Factory() {
  return IssuerFactory{.validate = &ValidateAwsStsIssuer, .create = &CreateAwsStsIssuer};
}

}  // namespace jitbroker::issuers::aws_sts
