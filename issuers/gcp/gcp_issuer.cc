#include "issuers/gcp/gcp_issuer.h"

#include <algorithm>
#include <set>

#include "broker/common/time_util.h"
#include "broker/crypto/crypto.h"
#include "broker/net/url.h"
#include "issuers/gcp/broker_identity.h"
#include "issuers/gcp/gcp_scope.h"
#include "issuers/gcp/google_api.h"

namespace jitbroker::issuers::gcp {

namespace {

// generateAccessToken's `lifetime` ceiling: 1 h, 12 h for accounts the org
// policy constraints/iam.allowServiceAccountCredentialLifetimeExtension lists.
constexpr int64_t kMaxLifetimeSeconds = 43200;

struct Options {
  std::string name;
  std::set<std::string> projects;
  std::set<std::string> allowed_scopes;
  int64_t max_ttl_seconds = 3600;
  int64_t default_ttl_seconds = 600;
  Tier unbounded_tier = Tier::kSecret;
  GoogleApiOptions api;
  IdentitySource identity = MetadataSource{};
};

struct ParsedRequest {
  GcpResource resource;
  GcpScope scope;
};

class GcpSpec final : public IssuerSpec {
 public:
  explicit GcpSpec(const Options& o)
      : projects_(o.projects),
        allowed_scopes_(o.allowed_scopes),
        unbounded_tier_(o.unbounded_tier) {
    desc_.name = o.name;
    desc_.type = "gcp";
    desc_.revocability = Revocability::kExpiryOnly;
    desc_.mints_upstream = true;
    desc_.max_ttl_seconds = o.max_ttl_seconds;
    desc_.default_ttl_seconds = std::min(o.default_ttl_seconds, o.max_ttl_seconds);
  }

  const IssuerDescription& Describe() const override { return desc_; }

  Result<Tier> ImpliedTier(const GrantRequest& req) const override {
    JITBROKER_ASSIGN_OR_RETURN(ParsedRequest p, Parse(req));
    return GcpScopeTier(p.scope, unbounded_tier_);
  }

  Result<std::vector<std::string>> ScopeItems(const GrantRequest& req) const override {
    JITBROKER_ASSIGN_OR_RETURN(ParsedRequest p, Parse(req));
    return GcpScopeItems(p.scope);
  }

  // Requested tokens are OAuth scopes of the grant; the narrowed grant
  // carries those (and the grant's storage rules, which only narrow).
  Result<NarrowedScope> NarrowScope(
      const GrantRequest& grant,
      const std::optional<std::vector<std::string>>& requested) const override {
    JITBROKER_ASSIGN_OR_RETURN(ParsedRequest p, Parse(grant));
    NarrowedScope out;
    out.scope = grant.scope;
    std::vector<std::string> scopes = p.scope.scopes;
    if (requested) {
      for (const std::string& tok : *requested) {
        if (std::find(scopes.begin(), scopes.end(), tok) == scopes.end()) {
          return std::unexpected(PermissionDenied(
              "scope_not_granted",
              "scope \"" + tok + "\" is not an OAuth scope the trust policy grants"));
        }
      }
      scopes = *requested;
      out.scope["scopes"] = scopes;
      GrantRequest narrowed = grant;
      narrowed.scope = out.scope;
      if (auto again = Parse(narrowed); !again) {
        return std::unexpected(again.error());
      }
    }
    for (const std::string& s : scopes) {
      out.scope_text += (out.scope_text.empty() ? "" : " ") + s;
    }
    return out;
  }

  Result<ParsedRequest> Parse(const GrantRequest& req) const {
    ParsedRequest p;
    JITBROKER_ASSIGN_OR_RETURN(p.resource, ParseGcpResource(req.resource, projects_));
    JITBROKER_ASSIGN_OR_RETURN(p.scope, ParseGcpScope(req.scope, allowed_scopes_));
    return p;
  }

 private:
  IssuerDescription desc_;
  std::set<std::string> projects_;
  std::set<std::string> allowed_scopes_;
  Tier unbounded_tier_;
};

class GcpIssuer final : public IssuerWithSpec<GcpSpec> {
 public:
  GcpIssuer(const Options& o, std::unique_ptr<GoogleApi> api,
            std::unique_ptr<BrokerIdentity> identity)
      : IssuerWithSpec<GcpSpec>(GcpSpec(o)),
        max_ttl_seconds_(o.max_ttl_seconds),
        api_(std::move(api)),
        identity_(std::move(identity)) {}

  Result<MintResult> Mint(const MintRequest& m) override {
    JITBROKER_ASSIGN_OR_RETURN(ParsedRequest p, spec().Parse(m.request));
    const int64_t lifetime = std::clamp<int64_t>(m.ttl_seconds, 1, max_ttl_seconds_);
    JITBROKER_ASSIGN_OR_RETURN(GoogleToken sa, Generate(p, lifetime));
    GoogleToken token = std::move(sa);
    if (!p.scope.storage.empty()) {
      // Downscope: the token reaches only the boundary's objects. The
      // unbounded token is dropped here, never handed out.
      JITBROKER_ASSIGN_OR_RETURN(
          token, api_->DownscopeToken(token.token, AccessBoundaryOptions(p.scope.storage),
                                      token.expires_at));
    }
    MintResult out;
    out.type = "gcp";
    out.expires_at = std::min(token.expires_at, m.now + std::chrono::seconds(lifetime));
    out.fields = {{"expires_at", FormatRfc3339(out.expires_at)},
                  {"service_account", p.resource.service_account},
                  {"scopes", p.scope.scopes}};
    out.fingerprint_sha256 = crypto::Sha256Hex(token.token.Reveal());
    out.audit_fields = {{"service_account", p.resource.service_account},
                        {"project", p.resource.project},
                        {"scopes", p.scope.scopes},
                        {"lifetime_seconds", lifetime},
                        {"identity", identity_->mode()}};
    if (!p.scope.storage.empty()) {
      nlohmann::json rules = nlohmann::json::array();
      for (const StorageRule& r : p.scope.storage) {
        rules.push_back({{"bucket", r.bucket}, {"prefix", r.prefix}, {"role", r.role}});
      }
      out.audit_fields["access_boundary"] = rules;
    }
    // Nothing to revoke with; the handle says what the token was for.
    out.revocation_handle =
        SecretValue(nlohmann::json{{"service_account", p.resource.service_account}}.dump());
    out.secrets.emplace_back("access_token", std::move(token.token));
    return out;
  }

  Result<RevokeOutcome> Revoke(const RevokeRequest& r) override {
    // expiry_only (docs/gcp.md, "Revocation"): a service-account token
    // lives until it expires; the outcome says for how long.
    RevokeOutcome out;
    out.kind = RevokeOutcomeKind::kExpiryOnly;
    out.residual_seconds = std::max<int64_t>(0, ToUnixSeconds(r.expires_at) - ToUnixSeconds(r.now));
    return out;
  }

  void CollectMetrics(std::vector<MetricFamily>& out) const override {
    MetricFamily calls{
        "jitbroker_gcp_api_calls_total", "counter", "Google calls by API and outcome", {}};
    api_->CollectMetrics(calls);
    out.push_back(std::move(calls));
    out.push_back(MetricFamily{"jitbroker_gcp_identity_refreshes_total",
                               "counter",
                               "Tokens fetched for the broker's own Google identity",
                               {{"issuer=\"" + spec().Describe().name + "\",mode=\"" +
                                     std::string(identity_->mode()) + "\"",
                                 static_cast<double>(identity_->refreshes())}}});
  }

 private:
  // generateAccessToken with the broker's token; once more with a fresh one
  // when Google no longer accepts it.
  Result<GoogleToken> Generate(const ParsedRequest& p, int64_t lifetime) {
    for (int attempt = 0;; ++attempt) {
      JITBROKER_ASSIGN_OR_RETURN(SecretValue bearer, identity_->Get());
      auto t =
          api_->GenerateAccessToken(bearer, p.resource.service_account, p.scope.scopes, lifetime);
      if (!t && t.error().reason == "gcp_auth_failed" && attempt == 0) {
        identity_->Invalidate();
        continue;
      }
      return t;
    }
  }

  const int64_t max_ttl_seconds_;
  std::unique_ptr<GoogleApi> api_;
  std::unique_ptr<BrokerIdentity> identity_;
};

bool IsEmail(std::string_view e) {
  const size_t at = e.find('@');
  return at != std::string_view::npos && at > 0 && at + 1 < e.size() && e.size() <= 254 &&
         std::all_of(e.begin(), e.end(), [](char c) { return c > 0x20 && c < 0x7f; });
}

Status ParseIdentity(ConfigView& s, Options& o) {
  JITBROKER_ASSIGN_OR_RETURN(auto id, s.OptView("identity"));
  if (!id) {
    return std::unexpected(s.Err("identity",
                                 "is required: one of workload_identity {audience, "
                                 "service_account, private_key, issuer, subject}, metadata {} "
                                 "or key_file: file:PATH"));
  }
  JITBROKER_ASSIGN_OR_RETURN(std::vector<std::string> keys, id->Keys());
  if (keys.size() != 1) {
    return std::unexpected(
        s.Err("identity", "must name exactly one of workload_identity, metadata, key_file"));
  }
  if (keys[0] == "workload_identity") {
    JITBROKER_ASSIGN_OR_RETURN(auto w, id->OptView("workload_identity"));
    if (!w) {
      return std::unexpected(id->Err("workload_identity", "must be a mapping"));
    }
    WorkloadIdentitySource src;
    JITBROKER_ASSIGN_OR_RETURN(src.audience, w->String("audience"));
    if (!src.audience.starts_with("//iam.googleapis.com/projects/") ||
        src.audience.find("/workloadIdentityPools/") == std::string::npos ||
        src.audience.find("/providers/") == std::string::npos ||
        !std::all_of(src.audience.begin(), src.audience.end(),
                     [](char c) { return c > 0x20 && c < 0x7f; })) {
      return std::unexpected(
          w->Err("audience",
                 "must be //iam.googleapis.com/projects/NUM/locations/global/workloadIdentityPools/"
                 "POOL/providers/PROV"));
    }
    JITBROKER_ASSIGN_OR_RETURN(src.service_account, w->String("service_account"));
    if (!IsEmail(src.service_account)) {
      return std::unexpected(w->Err("service_account", "must be a service account's email"));
    }
    JITBROKER_ASSIGN_OR_RETURN(src.issuer, w->String("issuer"));
    JITBROKER_ASSIGN_OR_RETURN(auto subject, w->OptString("subject"));
    src.subject = subject.value_or("jitbroker-" + o.name);
    JITBROKER_ASSIGN_OR_RETURN(auto key, w->OptSecretRef("private_key"));
    if (!key) {
      return std::unexpected(
          w->Err("private_key",
                 "is required (file:PATH or env:NAME): the key the broker signs with, "
                 "whose public JWK the pool's provider holds"));
    }
    if (auto k = LoadIdentityKey(*key); !k) {
      return std::unexpected(w->Err("private_key", k.error().message));
    }
    src.private_key_pem = std::move(*key);
    JITBROKER_RETURN_IF_ERROR(w->CheckNoUnknownKeys());
    o.identity = std::move(src);
  } else if (keys[0] == "metadata") {
    JITBROKER_ASSIGN_OR_RETURN(auto m, id->OptView("metadata"));
    if (m) {
      JITBROKER_RETURN_IF_ERROR(m->CheckNoUnknownKeys());
    }
    o.identity = MetadataSource{};
  } else if (keys[0] == "key_file") {
    JITBROKER_ASSIGN_OR_RETURN(auto text, id->OptSecretRef("key_file"));
    if (!text) {
      return std::unexpected(id->Err("key_file", "must be file:PATH or env:NAME"));
    }
    auto parsed = ParseKeyFile(*text);
    if (!parsed) {
      return std::unexpected(id->Err("key_file", parsed.error().message));
    }
    o.identity = std::move(*parsed);
  } else {
    JITBROKER_RETURN_IF_ERROR(id->CheckNoUnknownKeys());
    return std::unexpected(
        s.Err("identity", "must name exactly one of workload_identity, metadata, key_file"));
  }
  return id->CheckNoUnknownKeys();
}

Result<Options> ParseOptions(IssuerContext& ctx) {
  if (ctx.config == nullptr) {
    return std::unexpected(Internal("issuer " + ctx.name + " (gcp) has no config section"));
  }
  ConfigView& s = *ctx.config;
  Options o;
  o.name = ctx.name;
  JITBROKER_RETURN_IF_ERROR(ParseIdentity(s, o));

  JITBROKER_ASSIGN_OR_RETURN(auto projects, s.StringList("projects"));
  if (projects.empty()) {
    return std::unexpected(s.Err("projects",
                                 "is required: the Google Cloud project ids whose service "
                                 "accounts this issuer may mint for"));
  }
  for (const std::string& p : projects) {
    if (p.empty() || p.size() > 63 || !std::all_of(p.begin(), p.end(), [](char c) {
          return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' || c == '.' ||
                 c == ':';
        })) {
      return std::unexpected(s.Err("projects", "\"" + p + "\" is not a project id"));
    }
    o.projects.insert(p);
  }
  JITBROKER_ASSIGN_OR_RETURN(auto scopes, s.StringList("allowed_scopes"));
  if (scopes.empty()) {
    return std::unexpected(s.Err("allowed_scopes",
                                 "is required: the OAuth scopes grants may ask for, e.g. "
                                 "https://www.googleapis.com/auth/devstorage.read_only"));
  }
  for (const std::string& sc : scopes) {
    if (sc.size() > 256 || !std::all_of(sc.begin(), sc.end(), [](char c) {
          return c > 0x20 && c < 0x7f && c != '"' && c != '\\';
        })) {
      return std::unexpected(s.Err("allowed_scopes", "contains a malformed OAuth scope"));
    }
    o.allowed_scopes.insert(sc);
  }

  JITBROKER_ASSIGN_OR_RETURN(auto max_ttl, s.OptInt("max_ttl_seconds", 1, kMaxLifetimeSeconds));
  JITBROKER_ASSIGN_OR_RETURN(auto default_ttl,
                             s.OptInt("default_ttl_seconds", 1, kMaxLifetimeSeconds));
  o.max_ttl_seconds = max_ttl.value_or(3600);
  o.default_ttl_seconds = std::min(default_ttl.value_or(600), o.max_ttl_seconds);
  JITBROKER_ASSIGN_OR_RETURN(auto tier, s.OptString("unbounded_tier"));
  if (tier) {
    auto t = ParseTier(*tier);
    if (!t) {
      return std::unexpected(s.Err("unbounded_tier", "is not a tier name"));
    }
    o.unbounded_tier = *t;
  }

  JITBROKER_ASSIGN_OR_RETURN(auto allow_http, s.OptBool("allow_http"));
  net::UrlPolicy url_policy;
  url_policy.http =
      allow_http.value_or(false) ? net::HttpRule::kLoopbackOnly : net::HttpRule::kRefuse;
  url_policy.allow_path = false;
  JITBROKER_ASSIGN_OR_RETURN(auto endpoints, s.OptView("endpoints"));
  if (endpoints) {
    auto endpoint_of = [&](const char* key, std::string& url) -> Status {
      JITBROKER_ASSIGN_OR_RETURN(auto given, endpoints->OptString(key));
      if (!given) {
        return OkStatus();
      }
      std::string u = *given;
      while (u.ends_with('/')) {
        u.pop_back();
      }
      if (auto parsed = net::ParseUrl(u, url_policy); !parsed) {
        return std::unexpected(
            endpoints->Err(key,
                           "must be https://HOST[:PORT] (http:// only with allow_http: true and a "
                           "loopback host), without a path: " +
                               parsed.error().message));
      }
      url = u;
      return OkStatus();
    };
    JITBROKER_RETURN_IF_ERROR(endpoint_of("iamcredentials", o.api.iamcredentials));
    JITBROKER_RETURN_IF_ERROR(endpoint_of("sts", o.api.sts));
    JITBROKER_RETURN_IF_ERROR(endpoint_of("oauth2", o.api.oauth2));
    JITBROKER_RETURN_IF_ERROR(endpoint_of("metadata", o.api.metadata));
    JITBROKER_RETURN_IF_ERROR(endpoints->CheckNoUnknownKeys());
  }

  JITBROKER_ASSIGN_OR_RETURN(auto timeout_ms, s.OptInt("timeout_ms", 100, 120000));
  JITBROKER_ASSIGN_OR_RETURN(auto connect_ms, s.OptInt("connect_timeout_ms", 100, 60000));
  JITBROKER_ASSIGN_OR_RETURN(auto attempts, s.OptInt("max_attempts", 1, 10));
  JITBROKER_ASSIGN_OR_RETURN(auto call_deadline_ms, s.OptInt("call_deadline_ms", 100, 300000));
  o.api.timeout = std::chrono::milliseconds(timeout_ms.value_or(10000));
  o.api.connect_timeout = std::chrono::milliseconds(connect_ms.value_or(5000));
  o.api.max_attempts = static_cast<int>(attempts.value_or(3));
  o.api.call_deadline = std::chrono::milliseconds(call_deadline_ms.value_or(15000));
  JITBROKER_RETURN_IF_ERROR(s.CheckNoUnknownKeys());
  return o;
}

Result<std::unique_ptr<Issuer>> Create(IssuerContext& ctx, GcpHooks hooks) {
  JITBROKER_ASSIGN_OR_RETURN(Options o, ParseOptions(ctx));
  if (ctx.http == nullptr || ctx.clock == nullptr) {
    return std::unexpected(Internal("issuer " + ctx.name + " (gcp) needs an HTTP client"));
  }
  o.api.sleep = std::move(hooks.sleep);
  auto api = std::make_unique<GoogleApi>(o.api, ctx.http, ctx.clock, o.name);
  JITBROKER_ASSIGN_OR_RETURN(auto identity,
                             BrokerIdentity::Create(std::move(o.identity), api.get(), ctx.clock));
  return std::unique_ptr<Issuer>(
      std::make_unique<GcpIssuer>(o, std::move(api), std::move(identity)));
}

}  // namespace

Result<std::unique_ptr<IssuerSpec>> ValidateGcpIssuer(IssuerContext& ctx) {
  JITBROKER_ASSIGN_OR_RETURN(Options o, ParseOptions(ctx));
  return std::unique_ptr<IssuerSpec>(std::make_unique<GcpSpec>(o));
}

Result<std::unique_ptr<Issuer>> CreateGcpIssuer(IssuerContext& ctx) {
  return Create(ctx, GcpHooks{});
}

Result<std::unique_ptr<Issuer>> CreateGcpIssuerForTesting(IssuerContext& ctx, GcpHooks hooks) {
  return Create(ctx, std::move(hooks));
}

IssuerFactory Factory() {
  return IssuerFactory{.validate = &ValidateGcpIssuer, .create = &CreateGcpIssuer};
}

}  // namespace jitbroker::issuers::gcp
