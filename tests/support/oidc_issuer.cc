#include "tests/support/oidc_issuer.h"

#include <chrono>
#include <string>
#include <thread>

#include "broker/crypto/crypto.h"
#include "tests/support/loopback.h"

namespace jitbroker::testing {

FakeOidcIssuer::~FakeOidcIssuer() { StopServing(server_, thread_); }

std::unique_ptr<FakeOidcIssuer> FakeOidcIssuer::Start() {
  std::unique_ptr<FakeOidcIssuer> f(new FakeOidcIssuer());
  FakeOidcIssuer* self = f.get();
  f->server_.set_tcp_nodelay(true);
  f->server_.set_payload_max_length(64 * 1024);
  f->server_.set_exception_handler(
      [](const httplib::Request&, httplib::Response& res, std::exception_ptr) {
        res.status = 500;
        res.set_content("{}", "application/json");
      });
  f->server_.Get("/.well-known/openid-configuration", [self](const httplib::Request&,
                                                             httplib::Response& res) {
    ++self->discovery_hits_;
    std::string iss;
    {
      std::lock_guard lock(self->mu_);
      iss = self->discovery_issuer_.empty() ? self->issuer_ : self->discovery_issuer_;
    }
    nlohmann::json doc = {
        {"issuer", iss},
        {"jwks_uri", self->issuer_ + "/.well-known/jwks"},
        {"subject_types_supported", {"public", "pairwise"}},
        {"response_types_supported", {"id_token"}},
        {"claims_supported",
         {"sub", "aud", "exp", "iat", "iss", "jti", "nbf", "ref", "repository", "repository_id",
          "repository_owner", "repository_owner_id", "run_id", "run_attempt", "event_name"}},
        {"id_token_signing_alg_values_supported", {"RS256"}},
        {"scopes_supported", {"openid"}}};
    if (self->login_enabled()) {
      doc["authorization_endpoint"] = self->issuer_ + "/authorize";
      doc["token_endpoint"] = self->issuer_ + "/token";
      doc["response_types_supported"] = {"code", "id_token"};
      doc["code_challenge_methods_supported"] = {"S256"};
      doc["token_endpoint_auth_methods_supported"] = {"client_secret_basic", "client_secret_post"};
      doc["scopes_supported"] = {"openid", "email", "profile"};
    }
    res.set_content(doc.dump(), "application/json");
  });
  f->server_.Get("/.well-known/jwks", [self](const httplib::Request&, httplib::Response& res) {
    ++self->jwks_hits_;
    std::chrono::milliseconds delay{0};
    {
      std::lock_guard lock(self->mu_);
      delay = self->jwks_delay_;
    }
    if (delay.count() > 0) {
      std::this_thread::sleep_for(delay);
    }
    res.set_content(self->JwksBody(), "application/json");
  });
  f->server_.Get("/_apis/idtoken", [self](const httplib::Request& req, httplib::Response& res) {
    std::string expected, kid;
    {
      std::lock_guard lock(self->mu_);
      expected = self->actions_request_token_;
      kid = self->actions_kid_;
    }
    if (expected.empty() || req.get_header_value("Authorization") != "Bearer " + expected) {
      res.status = 401;
      res.set_content("{\"message\":\"unauthorized\"}", "application/json");
      return;
    }
    const std::string audience = req.get_param_value("audience");
    {
      std::lock_guard lock(self->mu_);
      self->last_actions_audience_ = audience;
    }
    const int64_t now = std::chrono::duration_cast<std::chrono::seconds>(
                            std::chrono::system_clock::now().time_since_epoch())
                            .count();
    const std::string token = self->Sign(self->GitHubClaims(audience, now), kid);
    res.set_content(nlohmann::json{{"count", 1}, {"value", token}}.dump(), "application/json");
  });
  f->InstallLoginRoutes();
  f->port_ = ServeOnLoopback(f->server_, f->thread_);
  if (f->port_ <= 0) {
    return nullptr;
  }
  f->issuer_ = "http://127.0.0.1:" + std::to_string(f->port_);
  return f;
}

std::string FakeOidcIssuer::AddKey(crypto::JwsAlg alg, const std::string& kid) {
  auto key = crypto::SigningKey::Generate(alg);
  if (!key) {
    return "";
  }
  const std::string id = kid.empty() ? (*key)->kid() : kid;
  std::lock_guard lock(mu_);
  keys_[id] = Key{std::move(*key), true};
  return id;
}

void FakeOidcIssuer::Unpublish(const std::string& kid) {
  std::lock_guard lock(mu_);
  if (auto it = keys_.find(kid); it != keys_.end()) {
    it->second.published = false;
  }
}

void FakeOidcIssuer::Publish(const std::string& kid) {
  std::lock_guard lock(mu_);
  if (auto it = keys_.find(kid); it != keys_.end()) {
    it->second.published = true;
  }
}

nlohmann::json FakeOidcIssuer::PublicJwk(const std::string& kid) const {
  std::lock_guard lock(mu_);
  auto it = keys_.find(kid);
  if (it == keys_.end()) {
    return nullptr;
  }
  nlohmann::json jwk = it->second.key->PublicJwk();
  jwk["kid"] = kid;
  return jwk;
}

std::string FakeOidcIssuer::JwksBody() const {
  std::lock_guard lock(mu_);
  if (jwks_override_) {
    return *jwks_override_;
  }
  nlohmann::json keys = nlohmann::json::array();
  for (const auto& [kid, k] : keys_) {
    if (!k.published) {
      continue;
    }
    nlohmann::json jwk = k.key->PublicJwk();
    jwk["kid"] = kid;
    keys.push_back(std::move(jwk));
  }
  return nlohmann::json{{"keys", keys}}.dump();
}

std::string FakeOidcIssuer::Sign(const nlohmann::json& claims, const std::string& kid,
                                 nlohmann::json header) const {
  std::lock_guard lock(mu_);
  auto it = keys_.find(kid);
  if (it == keys_.end()) {
    return "";
  }
  if (!header.contains("kid")) {
    header["kid"] = kid;
  }
  auto token = it->second.key->SignJwt(std::move(header), claims);
  return token ? *token : std::string();
}

nlohmann::json FakeOidcIssuer::GitHubClaims(const std::string& audience, int64_t now) const {
  return {
      {"jti", crypto::NewId("gh-", 16)},
      {"sub", "repo:acme/payment-service:ref:refs/heads/main"},
      {"aud", audience},
      {"ref", "refs/heads/main"},
      {"sha", "e7c1f0a3b5d8e9f0a1b2c3d4e5f60718293a4b5c"},
      {"repository", "acme/payment-service"},
      {"repository_owner", "acme"},
      {"repository_owner_id", "123"},
      {"run_id", "9876543"},
      {"run_number", "42"},
      {"run_attempt", "1"},
      {"repository_visibility", "private"},
      {"repository_id", "456"},
      {"actor_id", "789"},
      {"actor", "octocat"},
      {"workflow", "deploy"},
      {"head_ref", ""},
      {"base_ref", ""},
      {"event_name", "push"},
      {"ref_type", "branch"},
      {"workflow_ref", "acme/payment-service/.github/workflows/deploy.yml@refs/heads/main"},
      {"workflow_sha", "e7c1f0a3b5d8e9f0a1b2c3d4e5f60718293a4b5c"},
      {"job_workflow_ref", "acme/payment-service/.github/workflows/deploy.yml@refs/heads/main"},
      {"job_workflow_sha", "e7c1f0a3b5d8e9f0a1b2c3d4e5f60718293a4b5c"},
      {"runner_environment", "github-hosted"},
      {"iss", issuer_},
      {"nbf", now - 600},
      {"exp", now + 300},
      {"iat", now},
  };
}

nlohmann::json FakeOidcIssuer::GitLabClaims(const std::string& audience, int64_t now) const {
  return {
      {"namespace_id", "77"},
      {"namespace_path", "acme"},
      {"project_id", "4242"},
      {"project_path", "acme/payments"},
      {"user_id", "31"},
      {"user_login", "dev"},
      {"user_email", "dev@example.com"},
      {"user_access_level", "developer"},
      {"pipeline_id", "555"},
      {"pipeline_source", "push"},
      {"job_id", "777"},
      {"ref", "main"},
      {"ref_type", "branch"},
      {"ref_path", "refs/heads/main"},
      {"ref_protected", "true"},
      {"runner_id", 12},
      {"runner_environment", "gitlab-hosted"},
      {"sha", "0123456789abcdef0123456789abcdef01234567"},
      {"project_visibility", "private"},
      {"ci_config_ref_uri", "gitlab.com/acme/payments//.gitlab-ci.yml@refs/heads/main"},
      {"ci_config_sha", "0123456789abcdef0123456789abcdef01234567"},
      {"jti", crypto::NewId("gl-", 16)},
      {"iss", issuer_},
      {"iat", now},
      {"nbf", now - 5},
      {"exp", now + 300},
      {"sub", "project_path:acme/payments:ref_type:branch:ref:main"},
      {"aud", audience},
  };
}

void FakeOidcIssuer::EnableActionsTokenEndpoint(const std::string& request_token,
                                                const std::string& kid) {
  std::lock_guard lock(mu_);
  actions_request_token_ = request_token;
  actions_kid_ = kid;
}

std::string FakeOidcIssuer::last_actions_audience() const {
  std::lock_guard lock(mu_);
  return last_actions_audience_;
}

void FakeOidcIssuer::SetDiscoveryIssuer(const std::string& iss) {
  std::lock_guard lock(mu_);
  discovery_issuer_ = iss;
}

void FakeOidcIssuer::SetJwksOverride(std::optional<std::string> body) {
  std::lock_guard lock(mu_);
  jwks_override_ = std::move(body);
}

void FakeOidcIssuer::SetJwksDelay(std::chrono::milliseconds delay) {
  std::lock_guard lock(mu_);
  jwks_delay_ = delay;
}

std::string FakeOidcIssuer::Compact(const nlohmann::json& header, const nlohmann::json& payload,
                                    const std::string& signature) {
  return crypto::Base64UrlEncode(header.dump()) + "." + crypto::Base64UrlEncode(payload.dump()) +
         "." + crypto::Base64UrlEncode(signature);
}

}  // namespace jitbroker::testing
