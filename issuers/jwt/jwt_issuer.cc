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

// Loads the key at `path`, or generates one and writes it there (0600).
Result<std::unique_ptr<crypto::SigningKey>> LoadOrGenerateKey(crypto::JwsAlg alg,
                                                              const std::string& path,
                                                              const std::string& issuer_name) {
  std::error_code ec;
  if (std::filesystem::exists(path, ec)) {
    std::ifstream in(path, std::ios::binary);
    std::stringstream ss;
    ss << in.rdbuf();
    if (!in) {
      return std::unexpected(Internal("cannot read the signing key of issuer " + issuer_name,
                                      "path=" + path));
    }
    SecretValue pem(ss.str());
    return crypto::SigningKey::FromPem(alg, pem);
  }
  JITBROKER_ASSIGN_OR_RETURN(auto key, crypto::SigningKey::Generate(alg));
  JITBROKER_ASSIGN_OR_RETURN(SecretValue pem, key->ToPem());
  std::filesystem::create_directories(std::filesystem::path(path).parent_path(), ec);
  const std::string tmp = path + ".tmp";
  const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0) {
    return std::unexpected(Internal("cannot write the signing key of issuer " + issuer_name,
                                    "path=" + tmp));
  }
  const std::string_view bytes = pem.Reveal();
  const bool ok = ::write(fd, bytes.data(), bytes.size()) == static_cast<ssize_t>(bytes.size()) &&
                  ::fsync(fd) == 0;
  ::close(fd);
  if (!ok || ::rename(tmp.c_str(), path.c_str()) != 0) {
    return std::unexpected(Internal("cannot write the signing key of issuer " + issuer_name,
                                    "path=" + path));
  }
  log::Get("issuer.jwt")->info("event=key_generated issuer={} kid={} path={}", issuer_name,
                               key->kid(), path);
  return key;
}

class JwtIssuer final : public Issuer {
 public:
  JwtIssuer(IssuerDescription desc, std::unique_ptr<crypto::SigningKey> key,
            std::set<std::string, std::less<>> audiences, std::string iss,
            std::optional<std::vector<ScopeTier>> scope_tiers)
      : desc_(std::move(desc)),
        key_(std::move(key)),
        verify_key_(key_->Public()),
        audiences_(std::move(audiences)),
        iss_(std::move(iss)),
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

  Result<MintResult> Mint(const MintRequest& mr) override {
    JITBROKER_ASSIGN_OR_RETURN(std::string aud, Audience(mr.request));
    JITBROKER_ASSIGN_OR_RETURN(ClaimScopes claim, Claim(mr.request));
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
      std::string scope;
      for (const std::string& item : claim.scopes) {
        scope += (scope.empty() ? "" : " ") + item;
      }
      claims["scope"] = std::move(scope);
    }
    JITBROKER_ASSIGN_OR_RETURN(std::string token, key_->SignJwt(nlohmann::json::object(), claims));
    MintResult out;
    out.type = "jwt";
    out.expires_at = FromUnixSeconds(exp);
    out.fingerprint_sha256 = crypto::Sha256Hex(token);
    out.fields = {{"audience", aud}, {"kid", key_->kid()}, {"alg", std::string(crypto::JwsAlgName(key_->alg()))}};
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

  std::vector<nlohmann::json> PublicJwks() const override { return {key_->PublicJwk()}; }

  std::optional<nlohmann::json> VerifyOwnToken(std::string_view token) const override {
    auto payload = crypto::VerifyJws(token, *verify_key_);
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
  std::unique_ptr<crypto::SigningKey> key_;
  std::unique_ptr<crypto::VerifyKey> verify_key_;
  std::set<std::string, std::less<>> audiences_;
  std::string iss_;
  std::optional<std::vector<ScopeTier>> scope_tiers_;  // absent: scope_tiers not configured
};

// `scope_tiers`: a mapping scope pattern -> tier (null = absent).
Result<std::optional<std::vector<ScopeTier>>> LoadScopeTiers(config::Section& s) {
  JITBROKER_ASSIGN_OR_RETURN(std::optional<config::Section> st, s.OptSection("scope_tiers"));
  if (!st || !st->node().IsMap()) {
    return std::optional<std::vector<ScopeTier>>();
  }
  std::vector<ScopeTier> out;
  for (auto it = st->node().begin(); it != st->node().end(); ++it) {
    if (!it->first.IsScalar()) {
      return std::unexpected(st->Err("", "keys must be scope patterns"));
    }
    const std::string key = it->first.Scalar();
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

}  // namespace

Result<std::unique_ptr<Issuer>> CreateJwtIssuer(IssuerContext& ctx) {
  config::Section& s = *ctx.section;
  JITBROKER_ASSIGN_OR_RETURN(auto alg_name, s.OptString("algorithm"));
  crypto::JwsAlg alg = crypto::JwsAlg::kES256;
  if (alg_name) {
    auto parsed = crypto::ParseJwsAlg(*alg_name);
    if (!parsed || *parsed == crypto::JwsAlg::kRS256) {
      return std::unexpected(s.Err("algorithm", "must be ES256 or Ed25519"));
    }
    alg = *parsed;
  }
  JITBROKER_ASSIGN_OR_RETURN(auto audiences, s.StringList("audiences"));
  if (audiences.empty()) {
    return std::unexpected(s.Err("audiences", "at least one audience is required"));
  }
  JITBROKER_ASSIGN_OR_RETURN(auto iss, s.OptString("issuer"));
  JITBROKER_ASSIGN_OR_RETURN(auto max_ttl, s.OptInt("max_ttl_seconds", 1, 86400));
  JITBROKER_ASSIGN_OR_RETURN(auto default_ttl, s.OptInt("default_ttl_seconds", 1, 86400));
  JITBROKER_ASSIGN_OR_RETURN(auto key_ref, s.OptSecretRef("signing_key"));
  JITBROKER_ASSIGN_OR_RETURN(auto scope_tiers, LoadScopeTiers(s));
  JITBROKER_RETURN_IF_ERROR(s.CheckNoUnknownKeys());

  IssuerDescription desc;
  desc.name = ctx.name;
  desc.type = "jwt";
  desc.revocability = Revocability::kRevocable;
  desc.mints_upstream = false;  // signed locally; nothing exists until released
  desc.max_ttl_seconds = max_ttl.value_or(900);
  desc.default_ttl_seconds = std::min(default_ttl.value_or(300), desc.max_ttl_seconds);

  std::unique_ptr<crypto::SigningKey> key;
  if (key_ref) {
    auto loaded = crypto::SigningKey::FromPem(alg, *key_ref);
    if (!loaded) {
      return std::unexpected(s.Err("signing_key", "is not a " +
                                                      std::string(crypto::JwsAlgName(alg)) +
                                                      " private key in PEM"));
    }
    key = std::move(*loaded);
  } else {
    const std::string path = ctx.data_dir + "/keys/issuer-" + ctx.name + ".pem";
    JITBROKER_ASSIGN_OR_RETURN(key, LoadOrGenerateKey(alg, path, ctx.name));
  }
  std::set<std::string, std::less<>> auds(audiences.begin(), audiences.end());
  return std::unique_ptr<Issuer>(new JwtIssuer(std::move(desc), std::move(key), std::move(auds),
                                               iss.value_or("jitbroker"), std::move(scope_tiers)));
}

}  // namespace jitbroker::issuers::jwt
