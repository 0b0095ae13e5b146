#include "issuers/jwt/jwt_issuer.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <optional>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "broker/common/log.h"
#include "broker/crypto/crypto.h"
#include "broker/crypto/jose.h"

namespace jitbroker::issuers::jwt {

namespace {

constexpr std::string_view kResourcePrefix = "jwt://";
// Requested scopes: RFC 6749 §3.3 scope tokens, bounded like the CI
// exchange's requested scopes (broker/oidc/trust_policy.h).
constexpr size_t kMaxScopes = 64;
constexpr size_t kMaxScopeBytes = 256;
constexpr size_t kMaxScopeTiers = 256;

// %x21 / %x23-5B / %x5D-7E (no space, '"' or '\').
bool IsScopeToken(std::string_view s) {
  if (s.empty() || s.size() > kMaxScopeBytes) {
    return false;
  }
  return std::all_of(s.begin(), s.end(), [](char ch) {
    const auto c = static_cast<unsigned char>(ch);
    return c >= 0x21 && c <= 0x7e && c != '"' && c != '\\';
  });
}

// One `scope_tiers` entry: the scopes a pattern declares and their tier.
struct ScopeTier {
  Matcher pattern;
  Tier tier = Tier::kRead;
};

// What a grant's `scope` claim will hold, and the tier that implies.
struct ClaimScopes {
  std::vector<std::string> scopes;  // in request order, without duplicates
  Tier tier = Tier::kRead;
};

// Reads the key a previous start generated at `path`, if there is one.
// Never writes anything (Validate uses it).
Result<std::unique_ptr<crypto::SigningKey>> ReadGeneratedKey(crypto::JwsAlg alg,
                                                             const std::string& path,
                                                             const std::string& issuer_name) {
  std::error_code ec;
  if (!std::filesystem::exists(path, ec)) {
    return std::unique_ptr<crypto::SigningKey>();
  }
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  if (!in) {
    return std::unexpected(
        Internal("cannot read the signing key of issuer " + issuer_name, "path=" + path));
  }
  SecretValue pem(ss.str());
  auto key = crypto::SigningKey::FromPem(alg, pem);
  if (!key) {
    return std::unexpected(InvalidArgument(
        "invalid_config", "the generated signing key of issuer " + issuer_name + " (" + path +
                              ") is not a " + std::string(crypto::JwsAlgName(alg)) +
                              " private key; restore it, or remove it to generate a new one"));
  }
  return std::move(*key);
}

// Loads the key at `path`, or generates one and writes it there (0600).
Result<std::unique_ptr<crypto::SigningKey>> LoadOrGenerateKey(crypto::JwsAlg alg,
                                                              const std::string& path,
                                                              const std::string& issuer_name) {
  JITBROKER_ASSIGN_OR_RETURN(auto existing, ReadGeneratedKey(alg, path, issuer_name));
  if (existing) {
    return existing;
  }
  std::error_code ec;
  JITBROKER_ASSIGN_OR_RETURN(auto key, crypto::SigningKey::Generate(alg));
  JITBROKER_ASSIGN_OR_RETURN(SecretValue pem, key->ToPem());
  std::filesystem::create_directories(std::filesystem::path(path).parent_path(), ec);
  const std::string tmp = path + ".tmp";
  const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0) {
    return std::unexpected(
        Internal("cannot write the signing key of issuer " + issuer_name, "path=" + tmp));
  }
  const std::string_view bytes = pem.Reveal();
  const bool ok = ::write(fd, bytes.data(), bytes.size()) == static_cast<ssize_t>(bytes.size()) &&
                  ::fsync(fd) == 0;
  ::close(fd);
  if (!ok || ::rename(tmp.c_str(), path.c_str()) != 0) {
    return std::unexpected(
        Internal("cannot write the signing key of issuer " + issuer_name, "path=" + path));
  }
  log::Get("issuer.jwt")
      ->info("event=key_generated issuer={} kid={} path={}", issuer_name, key->kid(), path);
  return key;
}

std::string JoinScopes(const std::vector<std::string>& scopes) {
  std::string out;
  for (const std::string& s : scopes) {
    out += (out.empty() ? "" : " ") + s;
  }
  return out;
}

// What the configuration decides: audiences, scope vocabulary and tiers.
class JwtSpec final : public IssuerSpec {
 public:
  JwtSpec(IssuerDescription desc, std::set<std::string, std::less<>> audiences,
          std::optional<std::vector<ScopeTier>> scope_tiers)
      : desc_(std::move(desc)),
        audiences_(std::move(audiences)),
        scope_tiers_(std::move(scope_tiers)) {}

  const IssuerDescription& Describe() const override { return desc_; }

  Result<Tier> ImpliedTier(const GrantRequest& req) const override {
    JITBROKER_ASSIGN_OR_RETURN(std::string aud, Audience(req));
    (void)aud;
    JITBROKER_ASSIGN_OR_RETURN(ClaimScopes claim, Claim(req));
    return claim.tier;
  }

  // The scope items are exactly the `scope` claim's entries.
  Result<std::vector<std::string>> ScopeItems(const GrantRequest& req) const override {
    JITBROKER_ASSIGN_OR_RETURN(std::string aud, Audience(req));
    (void)aud;
    JITBROKER_ASSIGN_OR_RETURN(ClaimScopes claim, Claim(req));
    return std::move(claim.scopes);
  }

  // Each requested token names one of the grant's `scopes`; the narrowed
  // grant carries exactly those (in request order). The text lists the
  // `scopes` the grant names (none named: "").
  Result<NarrowedScope> NarrowScope(
      const GrantRequest& grant,
      const std::optional<std::vector<std::string>>& requested) const override {
    std::vector<std::string> granted;
    if (auto it = grant.scope.find("scopes"); it != grant.scope.end() && it->is_array()) {
      for (const auto& v : *it) {
        if (v.is_string()) {
          granted.push_back(v.get<std::string>());
        }
      }
    }
    NarrowedScope out;
    out.scope = grant.scope;
    if (!requested) {
      out.scope_text = JoinScopes(granted);
      return out;
    }
    std::vector<std::string> narrowed;
    for (const std::string& tok : *requested) {
      if (std::find(granted.begin(), granted.end(), tok) == granted.end()) {
        return std::unexpected(
            PermissionDenied("scope_not_granted",
                             "scope \"" + tok + "\" is not part of what the trust policy grants"));
      }
      if (std::find(narrowed.begin(), narrowed.end(), tok) == narrowed.end()) {
        narrowed.push_back(tok);
      }
    }
    if (!narrowed.empty()) {
      out.scope["scopes"] = narrowed;
    }
    out.scope_text = JoinScopes(narrowed.empty() ? granted : narrowed);
    return out;
  }

  // A trust policy's grant: mintable (audience, declared scopes) and, when it
  // names `scopes`, at least one.
  Status CheckTrustGrant(const GrantRequest& grant) const override {
    if (auto it = grant.scope.find("scopes");
        it != grant.scope.end() && it->is_array() && it->empty()) {
      return std::unexpected(
          InvalidArgument("invalid_scope", "scopes must name at least one scope (or be left out)"));
    }
    return IssuerSpec::CheckTrustGrant(grant);
  }

  std::string IssuedTokenType() const override { return std::string(kTokenTypeJwt); }

  // The audience comes from the resource jwt://AUDIENCE; scope.audience, if
  // given, must agree. Only configured audiences are minted.
  Result<std::string> Audience(const GrantRequest& req) const {
    std::string aud;
    if (req.resource.starts_with(kResourcePrefix)) {
      aud = req.resource.substr(kResourcePrefix.size());
      if (auto slash = aud.find('/'); slash != std::string::npos) {
        aud.resize(slash);
      }
    } else {
      return std::unexpected(InvalidArgument(
          "invalid_resource", "issuer " + desc_.name + " mints only for jwt:// resources"));
    }
    if (!req.scope.is_object() && !req.scope.is_null()) {
      return std::unexpected(InvalidArgument("invalid_scope", "scope must be an object"));
    }
    for (auto it = req.scope.begin(); it != req.scope.end(); ++it) {
      if (it.key() == "audience") {
        if (!it->is_string() || it->get<std::string>() != aud) {
          return std::unexpected(InvalidArgument(
              "invalid_scope", "scope.audience must be a string equal to the resource's audience"));
        }
      } else if (it.key() == "scopes") {
        if (!it->is_array()) {
          return std::unexpected(
              InvalidArgument("invalid_scope", "scope.scopes must be an array of strings"));
        }
        if (it->size() > kMaxScopes) {
          return std::unexpected(
              InvalidArgument("invalid_scope", "scope.scopes names more than 64 scopes"));
        }
        for (const auto& s : *it) {
          if (!s.is_string() || !IsScopeToken(s.get_ref<const std::string&>())) {
            return std::unexpected(InvalidArgument(
                "invalid_scope",
                "scope.scopes must hold OAuth scope tokens: 1 to 256 printable ASCII characters "
                "without spaces, '\"' or '\\'"));
          }
        }
      } else {
        return std::unexpected(InvalidArgument(
            "unknown_field", "scope." + it.key() + " is not known to issuer type jwt"));
      }
    }
    if (!audiences_.contains(aud)) {
      return std::unexpected(InvalidArgument(
          "invalid_audience", "issuer " + desc_.name + " does not mint for audience " + aud));
    }
    return aud;
  }

  // The `scope` claim (docs/configuration.md, "issuers.<name> with type:
  // jwt"). Only scopes `scope_tiers` declares are minted, each implying the
  // highest tier of the patterns it matches. A request without scopes carries
  // its operation as scope when the operation is declared, else no scope.
  // Without scope_tiers no requested scope is minted and the claim is the
  // operation, as before scope_tiers existed. Assumes Audience() accepted
  // the request's scope.
  Result<ClaimScopes> Claim(const GrantRequest& req) const {
    ClaimScopes out;
    std::vector<std::string> requested;
    if (auto it = req.scope.find("scopes"); it != req.scope.end() && it->is_array()) {
      for (const auto& v : *it) {
        const std::string& item = v.get_ref<const std::string&>();
        if (std::find(requested.begin(), requested.end(), item) == requested.end()) {
          requested.push_back(item);
        }
      }
    }
    if (!scope_tiers_) {
      if (!requested.empty()) {
        return std::unexpected(InvalidArgument(
            "unknown_scope",
            "issuer " + desc_.name + " declares no scope_tiers, so it mints no requested scopes"));
      }
      out.scopes.push_back(req.operation);
      return out;
    }
    if (requested.empty()) {
      if (std::optional<Tier> t = TierOf(req.operation)) {
        out.scopes.push_back(req.operation);
        out.tier = *t;
      }
      return out;
    }
    for (std::string& item : requested) {
      std::optional<Tier> t = TierOf(item);
      if (!t) {
        return std::unexpected(InvalidArgument(
            "unknown_scope",
            "scope \"" + item + "\" is not declared in issuers." + desc_.name + ".scope_tiers"));
      }
      out.tier = static_cast<int>(*t) > static_cast<int>(out.tier) ? *t : out.tier;
      out.scopes.push_back(std::move(item));
    }
    return out;
  }

 private:
  // The highest tier among the scope_tiers patterns matching `scope`.
  std::optional<Tier> TierOf(std::string_view scope) const {
    std::optional<Tier> best;
    for (const ScopeTier& st : *scope_tiers_) {
      if (st.pattern.Matches(scope) &&
          (!best || static_cast<int>(st.tier) > static_cast<int>(*best))) {
        best = st.tier;
      }
    }
    return best;
  }

  IssuerDescription desc_;
  std::set<std::string, std::less<>> audiences_;
  std::optional<std::vector<ScopeTier>> scope_tiers_;  // absent: scope_tiers not configured
};

class JwtIssuer final : public IssuerWithSpec<JwtSpec> {
 public:
  JwtIssuer(JwtSpec spec, std::unique_ptr<crypto::SigningKey> key,
            std::unique_ptr<crypto::VerifyKey> previous, nlohmann::json previous_jwk,
            std::string iss)
      : IssuerWithSpec(std::move(spec)),
        key_(std::move(key)),
        verify_key_(key_->Public()),
        previous_(std::move(previous)),
        previous_jwk_(std::move(previous_jwk)),
        iss_(std::move(iss)) {}

  Result<MintResult> Mint(const MintRequest& mr) override {
    JITBROKER_ASSIGN_OR_RETURN(std::string aud, spec().Audience(mr.request));
    JITBROKER_ASSIGN_OR_RETURN(ClaimScopes claim, spec().Claim(mr.request));
    const int64_t now = ToUnixSeconds(mr.now);
    const int64_t exp = now + mr.ttl_seconds;
    nlohmann::json claims = {
        {"iss", iss_},
        {"sub", mr.agent_id},
        {"aud", aud},
        {"iat", now},
        {"nbf", now},
        {"exp", exp},
        {"jti", mr.grant_id},
        {"act", {{"sub", mr.principal_id}}},
        {"session_id", mr.session_id},
        {"task_id", mr.task_id},
        {"tier", std::string(TierName(mr.tier))},
        {"tool", mr.request.tool},
        {"resource", mr.request.resource},
    };
    if (!claim.scopes.empty()) {
      claims["scope"] = JoinScopes(claim.scopes);
    }
    JITBROKER_ASSIGN_OR_RETURN(std::string token, key_->SignJwt(nlohmann::json::object(), claims));
    MintResult out;
    out.type = "jwt";
    out.expires_at = FromUnixSeconds(exp);
    out.fingerprint_sha256 = crypto::Sha256Hex(token);
    out.fields = {{"audience", aud},
                  {"kid", key_->kid()},
                  {"alg", std::string(crypto::JwsAlgName(key_->alg()))}};
    out.secrets.emplace_back("token", SecretValue(std::move(token)));
    // The jti is not secret: revocation is broker-side state keyed by it.
    out.revocation_handle = SecretValue(mr.grant_id);
    out.audit_fields = {{"kid", key_->kid()}, {"audience", aud}};
    return out;
  }

  Result<RevokeOutcome> Revoke(const RevokeRequest&) override {
    // The broker's introspection endpoint and revocation list consult the
    // grant's state, which the caller marks revoked in the same commit.
    return RevokeOutcome{RevokeOutcomeKind::kRevoked, 0};
  }

  // The signing key's JWK, then the retired key's (previous_key) while it
  // is configured: resource servers that cached the JWKS before a rotation
  // still find the key of every token signed before it.
  std::vector<nlohmann::json> PublicJwks() const override {
    std::vector<nlohmann::json> out{key_->PublicJwk()};
    if (previous_) {
      out.push_back(previous_jwk_);
    }
    return out;
  }

  std::optional<nlohmann::json> VerifyOwnToken(std::string_view token) const override {
    auto payload = crypto::VerifyJws(token, *verify_key_);
    if (!payload && previous_) {
      payload = crypto::VerifyJws(token, *previous_);
    }
    if (!payload) {
      return std::nullopt;
    }
    auto iss = payload->find("iss");
    if (iss == payload->end() || !iss->is_string() || *iss != iss_) {
      return std::nullopt;
    }
    return *payload;
  }

 private:
  std::unique_ptr<crypto::SigningKey> key_;
  std::unique_ptr<crypto::VerifyKey> verify_key_;
  std::unique_ptr<crypto::VerifyKey> previous_;  // null: no retired key
  nlohmann::json previous_jwk_;
  std::string iss_;
};

// `scope_tiers`: a mapping scope pattern -> tier (null = absent).
Result<std::optional<std::vector<ScopeTier>>> LoadScopeTiers(ConfigView& s) {
  JITBROKER_ASSIGN_OR_RETURN(std::unique_ptr<ConfigView> st, s.OptView("scope_tiers"));
  if (!st) {
    return std::optional<std::vector<ScopeTier>>();
  }
  JITBROKER_ASSIGN_OR_RETURN(std::vector<std::string> keys, st->Keys());
  std::vector<ScopeTier> out;
  for (const std::string& key : keys) {
    JITBROKER_ASSIGN_OR_RETURN(std::optional<std::string> tier_name, st->OptString(key));
    if (out.size() >= kMaxScopeTiers) {
      return std::unexpected(st->Err(key, "at most 256 scope patterns"));
    }
    if (!key.starts_with("re:") && !IsScopeToken(key)) {
      return std::unexpected(
          st->Err(key,
                  "scope patterns are OAuth scope tokens (1 to 256 printable ASCII characters "
                  "without spaces, '\"' or '\\'), globs of them, or \"re:\" regular expressions"));
    }
    auto pattern = Matcher::Compile(key);
    if (!pattern) {
      return std::unexpected(st->Err(key, pattern.error().message));
    }
    std::optional<Tier> tier = tier_name ? ParseTier(*tier_name) : std::nullopt;
    if (!tier) {
      return std::unexpected(
          st->Err(key, "must be a tier: read, write, pr, merge_deploy, secret or destructive"));
    }
    out.push_back(ScopeTier{std::move(*pattern), *tier});
  }
  JITBROKER_RETURN_IF_ERROR(st->CheckNoUnknownKeys());
  return std::optional<std::vector<ScopeTier>>(std::move(out));
}

// Everything the section says, checked. `key` is the configured signing key
// (parsed, so a bad PEM is a config error), or null when it is generated.
struct JwtOptions {
  std::optional<JwtSpec> spec;
  crypto::JwsAlg alg = crypto::JwsAlg::kES256;
  std::unique_ptr<crypto::SigningKey> key;
  // previous_key: the public half of the key this one replaced, published
  // and accepted for introspection until the operator removes it.
  std::unique_ptr<crypto::VerifyKey> previous;
  nlohmann::json previous_jwk;
  std::string iss;
  std::string generated_key_path;  // where the key lives when none is configured
};

Result<JwtOptions> ParseOptions(IssuerContext& ctx) {
  if (ctx.config == nullptr) {
    return std::unexpected(Internal("issuer " + ctx.name + " (jwt) has no config section"));
  }
  ConfigView& s = *ctx.config;
  JwtOptions o;
  JITBROKER_ASSIGN_OR_RETURN(auto alg_name, s.OptString("algorithm"));
  if (alg_name) {
    auto parsed = crypto::ParseJwsAlg(*alg_name);
    if (!parsed || *parsed == crypto::JwsAlg::kRS256) {
      return std::unexpected(s.Err("algorithm", "must be ES256 or Ed25519"));
    }
    o.alg = *parsed;
  }
  JITBROKER_ASSIGN_OR_RETURN(auto audiences, s.StringList("audiences"));
  if (audiences.empty()) {
    return std::unexpected(s.Err("audiences", "at least one audience is required"));
  }
  JITBROKER_ASSIGN_OR_RETURN(auto iss, s.OptString("issuer"));
  JITBROKER_ASSIGN_OR_RETURN(auto max_ttl, s.OptInt("max_ttl_seconds", 1, 86400));
  JITBROKER_ASSIGN_OR_RETURN(auto default_ttl, s.OptInt("default_ttl_seconds", 1, 86400));
  JITBROKER_ASSIGN_OR_RETURN(auto key_ref, s.OptSecretRef("signing_key"));
  JITBROKER_ASSIGN_OR_RETURN(auto previous_ref, s.OptSecretRef("previous_key"));
  JITBROKER_ASSIGN_OR_RETURN(auto scope_tiers, LoadScopeTiers(s));
  JITBROKER_RETURN_IF_ERROR(s.CheckNoUnknownKeys());

  IssuerDescription desc;
  desc.name = ctx.name;
  desc.type = "jwt";
  desc.revocability = Revocability::kRevocable;
  desc.mints_upstream = false;  // signed locally; nothing exists until released
  desc.max_ttl_seconds = max_ttl.value_or(900);
  desc.default_ttl_seconds = std::min(default_ttl.value_or(300), desc.max_ttl_seconds);

  if (key_ref) {
    auto loaded = crypto::SigningKey::FromPem(o.alg, *key_ref);
    if (!loaded) {
      return std::unexpected(
          s.Err("signing_key",
                "is not a " + std::string(crypto::JwsAlgName(o.alg)) + " private key in PEM"));
    }
    o.key = std::move(*loaded);
  }
  if (previous_ref) {
    auto previous = crypto::VerifyKey::FromPem(o.alg, previous_ref->Reveal());
    auto jwk = previous ? (*previous)->PublicJwk() : Result<nlohmann::json>(nlohmann::json());
    if (!previous || !jwk) {
      return std::unexpected(
          s.Err("previous_key",
                "is not a " + std::string(crypto::JwsAlgName(o.alg)) + " public key in PEM"));
    }
    o.previous = std::move(*previous);
    o.previous_jwk = std::move(*jwk);
  }
  o.generated_key_path = ctx.data_dir + "/keys/issuer-" + ctx.name + ".pem";
  o.iss = iss.value_or("jitbroker");
  o.spec.emplace(std::move(desc),
                 std::set<std::string, std::less<>>(audiences.begin(), audiences.end()),
                 std::move(scope_tiers));
  return o;
}

}  // namespace

Result<std::unique_ptr<IssuerSpec>> ValidateJwtIssuer(IssuerContext& ctx) {
  JITBROKER_ASSIGN_OR_RETURN(JwtOptions o, ParseOptions(ctx));
  if (!o.key && !ctx.data_dir.empty()) {
    // A key an earlier start generated must still be readable: start would
    // refuse it.
    JITBROKER_ASSIGN_OR_RETURN(auto existing,
                               ReadGeneratedKey(o.alg, o.generated_key_path, ctx.name));
    (void)existing;
  }
  return std::unique_ptr<IssuerSpec>(std::make_unique<JwtSpec>(std::move(*o.spec)));
}

Result<std::unique_ptr<Issuer>> CreateJwtIssuer(IssuerContext& ctx) {
  JITBROKER_ASSIGN_OR_RETURN(JwtOptions o, ParseOptions(ctx));
  if (!o.key) {
    JITBROKER_ASSIGN_OR_RETURN(o.key, LoadOrGenerateKey(o.alg, o.generated_key_path, ctx.name));
  }
  if (o.previous && o.previous_jwk.value("kid", "") == o.key->kid()) {
    return std::unexpected(ctx.config->Err(
        "previous_key", "is the signing key itself; name the key that signing_key replaced"));
  }
  return std::unique_ptr<Issuer>(
      std::make_unique<JwtIssuer>(std::move(*o.spec), std::move(o.key), std::move(o.previous),
                                  std::move(o.previous_jwk), std::move(o.iss)));
}

IssuerFactory Factory() { return IssuerFactory{&ValidateJwtIssuer, &CreateJwtIssuer}; }

}  // namespace jitbroker::issuers::jwt
