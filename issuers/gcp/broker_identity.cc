#include "issuers/gcp/broker_identity.h"

#include <nlohmann/json.hpp>

namespace jitbroker::issuers::gcp {

Result<std::unique_ptr<crypto::SigningKey>> LoadIdentityKey(const SecretValue& pem) {
  if (auto rsa = crypto::SigningKey::FromPem(crypto::JwsAlg::kRS256, pem)) {
    return std::move(*rsa);
  }
  if (auto ec = crypto::SigningKey::FromPem(crypto::JwsAlg::kES256, pem)) {
    return std::move(*ec);
  }
  return std::unexpected(InvalidArgument(
      "invalid_config", "is not a PEM RSA or P-256 private key (Google accepts RS256 and ES256)"));
}

Result<KeyFileSource> ParseKeyFile(const SecretValue& json_text) {
  const auto doc = nlohmann::json::parse(json_text.Reveal(), nullptr, /*allow_exceptions=*/false);
  auto bad = [](const std::string& what) {
    return std::unexpected(
        InvalidArgument("invalid_config", "is not a service-account JSON key: " + what));
  };
  if (!doc.is_object()) {
    return bad("not a JSON object");
  }
  if (const auto type = doc.find("type");
      type == doc.end() || !type->is_string() || *type != "service_account") {
    return bad("\"type\" is not \"service_account\"");
  }
  KeyFileSource out;
  for (const char* key : {"client_email", "private_key", "private_key_id"}) {
    const auto it = doc.find(key);
    if (it == doc.end() || !it->is_string() || it->get_ref<const std::string&>().empty()) {
      return bad(std::string("no \"") + key + "\"");
    }
  }
  out.client_email = doc["client_email"].get<std::string>();
  out.private_key_id = doc["private_key_id"].get<std::string>();
  out.private_key_pem = SecretValue(doc["private_key"].get<std::string>());
  if (!crypto::SigningKey::FromPem(crypto::JwsAlg::kRS256, out.private_key_pem)) {
    return bad("\"private_key\" is not an RSA private key");
  }
  return out;
}

Result<std::unique_ptr<BrokerIdentity>> BrokerIdentity::Create(IdentitySource source,
                                                               GoogleApi* api, const Clock* clock) {
  std::unique_ptr<crypto::SigningKey> key;
  if (const auto* w = std::get_if<WorkloadIdentitySource>(&source)) {
    JITBROKER_ASSIGN_OR_RETURN(key, LoadIdentityKey(w->private_key_pem));
  } else if (const auto* k = std::get_if<KeyFileSource>(&source)) {
    JITBROKER_ASSIGN_OR_RETURN(
        key, crypto::SigningKey::FromPem(crypto::JwsAlg::kRS256, k->private_key_pem));
  }
  return std::unique_ptr<BrokerIdentity>(
      new BrokerIdentity(std::move(source), std::move(key), api, clock));
}

BrokerIdentity::BrokerIdentity(IdentitySource source, std::unique_ptr<crypto::SigningKey> key,
                               GoogleApi* api, const Clock* clock)
    : source_(std::move(source)), key_(std::move(key)), api_(api), clock_(clock) {}

std::string_view BrokerIdentity::mode() const {
  switch (source_.index()) {
    case 0:
      return "workload_identity";
    case 1:
      return "metadata";
    default:
      return "key_file";
  }
}

Result<SecretValue> BrokerIdentity::Get() {
  std::lock_guard lock(mu_);
  if (!token_.empty() &&
      clock_->Now() + std::chrono::seconds(kRefreshBeforeSeconds) < expires_at_) {
    return token_.Clone();
  }
  JITBROKER_ASSIGN_OR_RETURN(GoogleToken t, Fetch());
  refreshes_.fetch_add(1);
  token_ = std::move(t.token);
  expires_at_ = t.expires_at;
  return token_.Clone();
}

void BrokerIdentity::Invalidate() {
  std::lock_guard lock(mu_);
  token_ = SecretValue();
}

Result<GoogleToken> BrokerIdentity::Fetch() {
  const int64_t now = ToUnixSeconds(clock_->Now());
  if (const auto* w = std::get_if<WorkloadIdentitySource>(&source_)) {
    // The provider's default allowed audience is its resource name as an
    // https URL (docs/gcp.md, "Workload identity federation").
    const nlohmann::json claims = {{"iss", w->issuer},
                                   {"sub", w->subject},
                                   {"aud", "https:" + w->audience},
                                   {"iat", now},
                                   {"exp", now + kJwtLifetimeSeconds}};
    JITBROKER_ASSIGN_OR_RETURN(std::string jwt,
                               key_->SignJwt(nlohmann::json{{"typ", "JWT"}}, claims));
    JITBROKER_ASSIGN_OR_RETURN(GoogleToken federated,
                               api_->ExchangeJwt(w->audience, SecretValue(std::move(jwt))));
    // The federated principal impersonates the broker's service account.
    auto sa = api_->GenerateAccessToken(federated.token, w->service_account,
                                        {"https://www.googleapis.com/auth/cloud-platform"}, 3600);
    if (!sa) {
      return std::unexpected(
          Unavailable("gcp_auth_failed",
                      "the federated identity cannot impersonate the broker's service account " +
                          w->service_account + ": " + sa.error().message));
    }
    return sa;
  }
  if (std::holds_alternative<MetadataSource>(source_)) {
    return api_->MetadataToken();
  }
  const auto& k = std::get<KeyFileSource>(source_);
  const nlohmann::json claims = {{"iss", k.client_email},
                                 {"scope", "https://www.googleapis.com/auth/cloud-platform"},
                                 {"aud", api_->OAuthTokenUrl()},
                                 {"iat", now},
                                 {"exp", now + 3600}};
  JITBROKER_ASSIGN_OR_RETURN(
      std::string jwt,
      key_->SignJwt(nlohmann::json{{"typ", "JWT"}, {"kid", k.private_key_id}}, claims));
  return api_->JwtBearer(SecretValue(std::move(jwt)));
}

}  // namespace jitbroker::issuers::gcp
