#include "issuers/jwt/jwt_issuer.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>

#include "broker/common/log.h"
#include "broker/crypto/crypto.h"
#include "broker/crypto/jose.h"

namespace jitbroker::issuers::jwt {

namespace {

constexpr std::string_view kResourcePrefix = "jwt://";

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
            std::set<std::string, std::less<>> audiences, std::string iss)
      : desc_(std::move(desc)),
        key_(std::move(key)),
        verify_key_(key_->Public()),
        audiences_(std::move(audiences)),
        iss_(std::move(iss)) {}

  const IssuerDescription& Describe() const override { return desc_; }

  Result<Tier> ImpliedTier(const GrantRequest& req) const override {
    JITBROKER_ASSIGN_OR_RETURN(std::string aud, Audience(req));
    (void)aud;
    return Tier::kRead;
  }

  Result<MintResult> Mint(const MintRequest& mr) override {
    JITBROKER_ASSIGN_OR_RETURN(std::string aud, Audience(mr.request));
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
        {"scope", ScopeClaim(mr.request)},
        {"tier", std::string(TierName(mr.tier))},
        {"tool", mr.request.tool},
        {"resource", mr.request.resource},
    };
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
        for (const auto& s : *it) {
          if (!s.is_string() || s.get<std::string>().empty() ||
              s.get<std::string>().find(' ') != std::string::npos) {
            return std::unexpected(InvalidArgument(
                "invalid_scope", "scope.scopes must hold non-empty strings without spaces"));
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

  static std::string ScopeClaim(const GrantRequest& req) {
    auto it = req.scope.find("scopes");
    if (it == req.scope.end() || it->empty()) {
      return req.operation;
    }
    std::string out;
    for (const auto& s : *it) {
      if (!out.empty()) {
        out += ' ';
      }
      out += s.get<std::string>();
    }
    return out;
  }

  IssuerDescription desc_;
  std::unique_ptr<crypto::SigningKey> key_;
  std::unique_ptr<crypto::VerifyKey> verify_key_;
  std::set<std::string, std::less<>> audiences_;
  std::string iss_;
};

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
  return std::unique_ptr<Issuer>(
      new JwtIssuer(std::move(desc), std::move(key), std::move(auds), iss.value_or("jitbroker")));
}

}  // namespace jitbroker::issuers::jwt
