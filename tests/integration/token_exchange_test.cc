// End-to-end CI OIDC token exchange (issue #5, docs/concepts.md "CI token exchange"):
// the real daemon,
// a local OIDC issuer on loopback (discovery + JWKS from keys generated here)
// and realistic GitHub Actions and GitLab claim sets.
#include <atomic>
#include <chrono>
#include <cstdlib>
#include <fstream>
#include <set>
#include <string>
#include <thread>
#include <tuple>
#include <vector>

#include <doctest/doctest.h>
#include <httplib.h>
#include <nlohmann/json.hpp>

#include "broker/crypto/crypto.h"
#include "broker/crypto/jose.h"
#include "tests/integration/jwt_interop.h"
#include "tests/support/broker_process.h"
#include "tests/support/oidc_issuer.h"

namespace jitbroker::testing {
namespace {

using nlohmann::json;

constexpr char kAudience[] = "jitbroker.test.example";
constexpr char kIdToken[] = "urn:ietf:params:oauth:token-type:id_token";
constexpr char kGrantType[] = "urn:ietf:params:oauth:grant-type:token-exchange";

int64_t Now() {
  return std::chrono::duration_cast<std::chrono::seconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

std::string Enc(const std::string& s) {
  std::string out;
  static const char* hex = "0123456789ABCDEF";
  for (unsigned char c : s) {
    if (std::isalnum(c) || c == '-' || c == '.' || c == '_' || c == '~') {
      out += static_cast<char>(c);
    } else {
      out += '%';
      out += hex[c >> 4];
      out += hex[c & 15];
    }
  }
  return out;
}

// The trust policies of these tests: a secure GitHub policy (owner id +
// repository id + ref + event), a GitLab one, and one without replay
// protection; all on the loopback issuer.
std::string TrustYaml(const std::string& issuer) {
  return "\n"
         "  - name: payments-deploy\n"
         "    issuer: " +
         issuer +
         "\n"
         "    allow_http: true\n"
         "    provider: github_actions\n"
         "    audience: " +
         kAudience +
         "\n"
         "    algorithms: [RS256, ES256, Ed25519]\n"
         "    claims:\n"
         "      repository_owner_id: \"123\"\n"
         "      repository_id: \"456\"\n"
         "      ref: refs/heads/main\n"
         "      event_name: [push, workflow_dispatch]\n"
         "    grant: {issuer: internal, resource: \"jwt://api.internal\", scopes: [deploy, read], "
         "ttl_seconds: 300, max_tier: write}\n"
         "  - name: gitlab-deploy\n"
         "    issuer: " +
         issuer +
         "\n"
         "    allow_http: true\n"
         "    provider: gitlab\n"
         "    audience: " +
         kAudience +
         "\n"
         "    claims: {namespace_id: \"77\", project_id: \"4242\", ref_protected: true, ref: "
         "main}\n"
         "    grant: {issuer: internal, resource: \"jwt://mcp.internal\", ttl_seconds: 120}\n"
         "    max_token_age_seconds: 3600\n"
         "  - name: replayable\n"
         "    issuer: " +
         issuer +
         "\n"
         "    allow_http: true\n"
         "    provider: github_actions\n"
         "    audience: " +
         kAudience +
         "\n"
         "    claims: {repository_id: \"456\", ref: refs/heads/main}\n"
         "    grant: {issuer: internal, resource: \"jwt://mcp.internal\", ttl_seconds: 60}\n"
         "    replay_protection: false\n";
}

struct Env {
  std::unique_ptr<FakeOidcIssuer> idp;
  std::string rsa, ec, ed;  // kids
  std::unique_ptr<BrokerProcess> broker;

  Env() {
    idp = FakeOidcIssuer::Start();
    REQUIRE(idp != nullptr);
    rsa = idp->AddKey(crypto::JwsAlg::kRS256, "gh-rsa-1");
    ec = idp->AddKey(crypto::JwsAlg::kES256, "gh-ec-1");
    ed = idp->AddKey(crypto::JwsAlg::kEd25519, "gh-ed-1");
    BrokerOptions o;
    o.trust = TrustYaml(idp->issuer());
    broker = BrokerProcess::Start(o);
  }

  json GitHub() const { return idp->GitHubClaims(kAudience, Now()); }
  json GitLab() const { return idp->GitLabClaims(kAudience, Now()); }
  std::string Sign(const json& claims, const std::string& kid = "") const {
    return idp->Sign(claims, kid.empty() ? rsa : kid);
  }

  struct Reply {
    int status = 0;
    json body;
    std::string raw;  // the body's exact bytes
    std::string content_type, cache_control;
  };
  Reply Raw(const std::string& form,
            const std::string& content_type = "application/x-www-form-urlencoded",
            const std::string& path = "/v1/token") const {
    httplib::Client c("127.0.0.1", broker->port());
    c.set_read_timeout(30);
    auto r = c.Post(path, form, content_type);
    Reply out;
    if (!r) {
      return out;
    }
    out.status = r->status;
    out.raw = r->body;
    out.body = json::parse(r->body, nullptr, false);
    out.content_type = r->get_header_value("Content-Type");
    out.cache_control = r->get_header_value("Cache-Control");
    return out;
  }
  Reply Exchange(const std::string& token, const std::string& audience = "payments-deploy",
                 const std::string& extra = "") const {
    return Raw("grant_type=" + Enc(kGrantType) + "&subject_token_type=" + Enc(kIdToken) +
               "&audience=" + Enc(audience) + "&subject_token=" + Enc(token) + extra);
  }
  json Sessions(const std::string& principal) const {
    auto r =
        broker->Get("/v1/sessions?principal=" + Enc(principal) + "&limit=1000", broker->admin_key);
    REQUIRE(r.status == 200);
    return r.json["sessions"];
  }
  size_t AuditCount() const {
    auto r = broker->Get("/v1/audit?limit=10000", broker->admin_key);
    REQUIRE(r.status == 200);
    return r.json["records"].size();
  }
};

// The issuer as the CI run key writes it (':' is %3A).
std::string EscapedIssuer(const std::string& issuer) {
  std::string out;
  for (char c : issuer) {
    out += c == ':' ? std::string("%3A") : std::string(1, c);
  }
  return out;
}

void ExpectError(const Env::Reply& r, int status, const std::string& error) {
  INFO(r.body.dump());
  CHECK(r.status == status);
  CHECK(r.content_type.find("application/json") == 0);
  CHECK(r.cache_control == "no-store");
  REQUIRE(r.body.is_object());
  CHECK(r.body["error"] == error);
  CHECK(r.body["error_description"].is_string());
  CHECK(r.body.size() == 2);
}

TEST_CASE("TokenExchange: a GitHub Actions token becomes a scoped, audited, revocable broker JWT") {
  Env env;
  const json claims = env.GitHub();
  auto r = env.Exchange(env.Sign(claims));
  INFO(r.body.dump());
  REQUIRE(r.status == 200);
  CHECK(r.cache_control == "no-store");
  const json& b = r.body;
  CHECK(b["issued_token_type"] == "urn:ietf:params:oauth:token-type:jwt");
  CHECK(b["token_type"] == "Bearer");
  CHECK(b["expires_in"].get<int64_t>() > 250);
  CHECK(b["expires_in"].get<int64_t>() <= 300);
  CHECK(b["scope"] == "deploy read");
  CHECK(b["trust_policy"] == "payments-deploy");
  CHECK(b["credential"]["type"] == "jwt");
  CHECK(b["credential"]["token"] == b["access_token"]);
  const std::string sid = b["session_id"];
  const std::string gid = b["grant_id"];
  CHECK(sid.rfind("ses_ci_", 0) == 0);

  // The minted JWT verifies against the broker's JWKS, independently of our code.
  const std::string jwt = b["access_token"];
  auto jwks = env.broker->Get("/.well-known/jwks.json");
  REQUIRE(jwks.status == 200);
  REQUIRE(jwks.json["keys"].size() >= 1);
  CHECK(OpensslVerifiesJwt(jwt, jwks.json["keys"][0], env.broker->dir() + "/interop"));
  JwtParts parts = SplitJwt(jwt);
  CHECK(parts.payload["aud"] == "api.internal");
  CHECK(parts.payload["jti"] == gid);
  CHECK(parts.payload["scope"] == "deploy read");
  CHECK(parts.payload["act"]["sub"] == "trust:payments-deploy");
  CHECK(parts.payload["sub"] ==
        "ci:gh/" + EscapedIssuer(env.idp->issuer()) + ":acme/payment-service:9876543:1");

  // The implicit session is listed like an agent's, with its CI run.
  json sessions = env.Sessions("trust:payments-deploy");
  REQUIRE(sessions.size() == 1);
  CHECK(sessions[0]["session_id"] == sid);
  CHECK(sessions[0]["state"] == "active");
  CHECK(sessions[0]["agent"]["id"] == parts.payload["sub"]);
  CHECK(sessions[0]["ci"]["repository"] == "acme/payment-service");
  CHECK(sessions[0]["ci"]["run_id"] == "9876543");
  CHECK(sessions[0]["ci"]["sub"] == claims["sub"]);
  auto shown = env.broker->Get("/v1/sessions/" + sid, env.broker->admin_key);
  REQUIRE(shown.status == 200);
  REQUIRE(shown.json["grants"].size() == 1);
  CHECK(shown.json["grants"][0]["grant_id"] == gid);
  CHECK(shown.json["grants"][0]["state"] == "active");
  CHECK(shown.json["task"]["scope"]["resources"] == json::array({"jwt://api.internal"}));

  // Another job of the same run: same session. Narrowed scope. ES256 and Ed25519 keys.
  auto r2 = env.Exchange(env.Sign(env.GitHub(), env.ec), "payments-deploy", "&scope=deploy");
  REQUIRE(r2.status == 200);
  CHECK(r2.body["session_id"] == sid);
  CHECK(r2.body["scope"] == "deploy");
  CHECK(SplitJwt(r2.body["access_token"].get<std::string>()).payload["scope"] == "deploy");
  auto r3 = env.Exchange(env.Sign(env.GitHub(), env.ed), "jwt://api.internal");  // by target
  REQUIRE(r3.status == 200);
  CHECK(r3.body["session_id"] == sid);
  // Another run (a re-run is another attempt): another session.
  json rerun = env.GitHub();
  rerun["run_attempt"] = "2";
  auto r4 = env.Exchange(env.Sign(rerun));
  REQUIRE(r4.status == 200);
  CHECK(r4.body["session_id"] != sid);
  CHECK(env.Sessions("trust:payments-deploy").size() == 2);

  // The immutable sub format of newer repositories is accepted the same way
  // (this policy pins ids, not sub).
  json immutable = env.GitHub();
  immutable["sub"] = "repo:acme@123/payment-service@456:ref:refs/heads/main";
  CHECK(env.Exchange(env.Sign(immutable)).status == 200);

  // Audited: the exchange with its CI facts and the subject token's
  // fingerprint, never the token itself.
  auto audit = env.broker->Get("/v1/audit?session_id=" + sid, env.broker->admin_key);
  REQUIRE(audit.status == 200);
  bool exchanged = false;
  for (const json& rec : audit.json["records"]) {
    if (rec["event"] == "token.exchanged" && rec["token_exchange"]["grant_id"] == gid) {
      exchanged = true;
      CHECK(rec["human_principal"] == "trust:payments-deploy");
      CHECK(rec["token_exchange"]["ci"]["repository"] == "acme/payment-service");
      CHECK(rec["token_exchange"]["ci"]["run_id"] == "9876543");
      CHECK(rec["token_exchange"]["ci"]["issuer"] == env.idp->issuer());
      CHECK(rec["token_exchange"]["subject_token_sha256"].get<std::string>().size() == 64);
    }
  }
  CHECK(exchanged);
  {
    std::ifstream in(env.broker->audit_path());
    std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    const std::string subject = env.Sign(claims);
    CHECK(text.find(subject.substr(subject.rfind('.') + 1)) == std::string::npos);
    CHECK(text.find(jwt) == std::string::npos);
  }
  {
    // The access log counts the form body read through the content reader,
    // and holds neither the subject token nor the minted credential.
    std::ifstream in(env.broker->access_log_path());
    std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    // (The file holds JSON lines: the quotes around the path are escaped.)
    const size_t at = text.find(R"(route=/v1/token path=\"/v1/token\" status=200)");
    REQUIRE(at != std::string::npos);
    const size_t bytes = text.find("bytes_in=", at);
    REQUIRE(bytes != std::string::npos);
    CHECK(std::stol(text.substr(bytes + 9)) > 500);  // the form carries a ~1 KiB subject token
    const std::string subject = env.Sign(claims);
    CHECK(text.find(subject.substr(subject.rfind('.') + 1)) == std::string::npos);
    CHECK(text.find(jwt) == std::string::npos);
  }
  auto verify = env.broker->Get("/v1/audit/verify", env.broker->admin_key);
  CHECK(verify.json["ok"] == true);

  // Revocable like an agent's grant: introspection says so at once.
  auto intro = [&](const std::string& token) {
    return env.broker->Request("POST", "/v1/introspect", env.broker->admin_key,
                               "token=" + Enc(token), "application/x-www-form-urlencoded");
  };
  CHECK(intro(jwt).json["active"] == true);
  auto revoked = env.broker->Request("DELETE", "/v1/grants/" + gid, env.broker->admin_key);
  REQUIRE(revoked.status == 200);
  CHECK(intro(jwt).json["active"] == false);
  CHECK(intro(r2.body["access_token"].get<std::string>()).json["active"] == true);

  // Revoking the run's session ends every grant and the run mints no more.
  auto end = env.broker->Post("/v1/sessions/" + sid + "/revoke", env.broker->admin_key,
                              json{{"reason", "leaked CI log"}});
  REQUIRE(end.status == 200);
  CHECK(intro(r2.body["access_token"].get<std::string>()).json["active"] == false);
  auto after = env.Exchange(env.Sign(env.GitHub()));
  ExpectError(after, 400, "unauthorized_client");
  // Other runs are unaffected (a fresh token: each jti is exchanged once).
  rerun["jti"] = "fresh-jti-of-the-rerun";
  CHECK(env.Exchange(env.Sign(rerun)).status == 200);
}

TEST_CASE("TokenExchange: a GitLab id_token is exchanged under its own policy") {
  Env env;
  const json claims = env.GitLab();
  auto r = env.Exchange(env.Sign(claims), "gitlab-deploy");
  INFO(r.body.dump());
  REQUIRE(r.status == 200);
  CHECK(r.body["expires_in"].get<int64_t>() <= 120);
  CHECK(!r.body.contains("scope"));
  JwtParts p = SplitJwt(r.body["access_token"].get<std::string>());
  CHECK(p.payload["aud"] == "mcp.internal");
  CHECK(p.payload["sub"] == "ci:gl/" + EscapedIssuer(env.idp->issuer()) + ":acme/payments:555");
  json sessions = env.Sessions("trust:gitlab-deploy");
  REQUIRE(sessions.size() == 1);
  CHECK(sessions[0]["ci"]["pipeline_id"] == "555");
  CHECK(sessions[0]["task"]["id"] == claims["ci_config_ref_uri"]);
  // ref_protected as a boolean matches the policy's `true` as well.
  json boolean = env.GitLab();
  boolean["ref_protected"] = true;
  CHECK(env.Exchange(env.Sign(boolean), "gitlab-deploy").status == 200);
  json unprotected = env.GitLab();
  unprotected["ref_protected"] = "false";
  ExpectError(env.Exchange(env.Sign(unprotected), "gitlab-deploy"), 400, "unauthorized_client");
  // A GitHub token does not satisfy the GitLab policy.
  ExpectError(env.Exchange(env.Sign(env.GitHub()), "gitlab-deploy"), 400, "unauthorized_client");
}

TEST_CASE("TokenExchange: every rejected exchange gets its RFC 6749 error and changes no state") {
  Env env;
  // Warm the broker's JWKS cache once so that counts below are exact.
  REQUIRE(env.Exchange(env.Sign(env.GitHub()), "replayable").status == 200);
  const size_t sessions_before = env.Sessions("trust:payments-deploy").size();
  const size_t audit_before = env.AuditCount();
  const int jwks_before = env.idp->jwks_hits();
  const int discovery_before = env.idp->discovery_hits();
  REQUIRE(sessions_before == 0);

  auto attacker = crypto::SigningKey::Generate(crypto::JwsAlg::kRS256);
  REQUIRE(attacker);
  const json good = env.GitHub();
  auto with = [&](const char* key, json value) {
    json c = env.GitHub();
    c[key] = std::move(value);
    return c;
  };
  auto without = [&](const char* key) {
    json c = env.GitHub();
    c.erase(key);
    return c;
  };
  auto header = [&](json h, const json& claims, const std::string& sig) {
    return FakeOidcIssuer::Compact(h, claims, sig);
  };
  const int64_t now = Now();

  struct Case {
    std::string name;
    std::string token;
    std::string audience = "payments-deploy";
    std::string extra;
    int status = 400;
    std::string error;
  };
  std::vector<Case> cases = {
      {"alg none, empty signature", header({{"alg", "none"}, {"typ", "JWT"}}, good, ""),
       "payments-deploy", "", 400, "invalid_request"},
      {"alg none with a signature", header({{"alg", "none"}, {"kid", env.rsa}}, good, "sig"),
       "payments-deploy", "", 400, "invalid_grant"},
      {"HS256 with the issuer's public key as secret",
       [&] {
         const std::string input =
             crypto::Base64UrlEncode(json{{"alg", "HS256"}, {"kid", env.rsa}}.dump()) + "." +
             crypto::Base64UrlEncode(good.dump());
         return input + "." +
                crypto::Base64UrlEncode(
                    crypto::HmacSha256(env.idp->PublicJwk(env.rsa).dump(), input));
       }(),
       "payments-deploy", "", 400, "invalid_grant"},
      {"ES256 header on the RSA key's kid", env.idp->Sign(good, env.ec, {{"kid", env.rsa}}),
       "payments-deploy", "", 400, "invalid_grant"},
      {"attacker key embedded as jwk",
       *attacker.value()->SignJwt({{"kid", env.rsa}, {"jwk", attacker.value()->PublicJwk()}}, good),
       "payments-deploy", "", 400, "invalid_grant"},
      {"attacker key referenced by jku",
       *attacker.value()->SignJwt({{"kid", env.rsa}, {"jku", env.idp->issuer() + "/evil"}}, good),
       "payments-deploy", "", 400, "invalid_grant"},
      {"attacker signature under a trusted kid",
       *attacker.value()->SignJwt({{"kid", env.rsa}}, good), "payments-deploy", "", 400,
       "invalid_grant"},
      {"wrong aud", env.Sign(with("aud", "someone-else")), "payments-deploy", "", 400,
       "invalid_grant"},
      {"GitHub's default owner-URL aud", env.Sign(with("aud", "https://github.com/acme")),
       "payments-deploy", "", 400, "invalid_grant"},
      {"expired", env.Sign(with("exp", now - 120)), "payments-deploy", "", 400, "invalid_grant"},
      {"not yet valid", env.Sign(with("nbf", now + 600)), "payments-deploy", "", 400,
       "invalid_grant"},
      {"issued in the future", env.Sign(with("iat", now + 600)), "payments-deploy", "", 400,
       "invalid_grant"},
      {"too old", env.Sign([&] {
         json c = env.GitHub();
         c["iat"] = now - 3600;
         c["exp"] = now + 300;
         return c;
       }()),
       "payments-deploy", "", 400, "invalid_grant"},
      {"no exp", env.Sign(without("exp")), "payments-deploy", "", 400, "invalid_grant"},
      {"no jti with replay protection", env.Sign(without("jti")), "payments-deploy", "", 400,
       "invalid_grant"},
      {"forged issuer", env.Sign(with("iss", "http://127.0.0.1:1")), "payments-deploy", "", 400,
       "invalid_grant"},
      {"issuer with a trailing slash", env.Sign(with("iss", env.idp->issuer() + "/")),
       "payments-deploy", "", 400, "invalid_grant"},
      {"unknown kid", env.idp->Sign(good, env.rsa, {{"kid", "never-published"}}), "payments-deploy",
       "", 400, "invalid_grant"},
      {"another owner", env.Sign(with("repository_owner_id", "999")), "payments-deploy", "", 400,
       "unauthorized_client"},
      {"another branch", env.Sign(with("ref", "refs/heads/evil")), "payments-deploy", "", 400,
       "unauthorized_client"},
      {"sub/ref injection", env.Sign([&] {
         json c = env.GitHub();
         c["ref"] = "refs/heads/main:environment:prod";
         c["sub"] = "repo:acme/payment-service:ref:refs/heads/main%3Aenvironment%3Aprod";
         return c;
       }()),
       "payments-deploy", "", 400, "unauthorized_client"},
      {"pull_request_target event", env.Sign(with("event_name", "pull_request_target")),
       "payments-deploy", "", 400, "unauthorized_client"},
      {"ids as numbers are fine, other ids are not", env.Sign(with("repository_id", 457)),
       "payments-deploy", "", 400, "unauthorized_client"},
      {"oversized token", env.Sign(with("padding", std::string(20000, 'a'))), "payments-deploy", "",
       400, "invalid_request"},
      {"garbage token", "not-a-jwt", "payments-deploy", "", 400, "invalid_request"},
      {"unknown audience", env.Sign(good), "nobody", "", 400, "invalid_target"},
      {"resource disagrees", env.Sign(good), "payments-deploy",
       "&resource=" + Enc("jwt://mcp.internal"), 400, "invalid_target"},
      {"scope beyond the grant", env.Sign(good), "payments-deploy", "&scope=admin", 400,
       "invalid_scope"},
      {"malformed scope", env.Sign(good), "payments-deploy", "&scope=" + Enc("read  deploy"), 400,
       "invalid_scope"},
      {"requested_token_type unavailable", env.Sign(good), "payments-deploy",
       "&requested_token_type=" + Enc("urn:ietf:params:oauth:token-type:access_token"), 400,
       "invalid_request"},
      {"actor_token", env.Sign(good), "payments-deploy", "&actor_token=x&actor_token_type=y", 400,
       "invalid_request"},
      {"audience twice", env.Sign(good), "payments-deploy", "&audience=gitlab-deploy", 400,
       "invalid_request"},
  };
  for (const Case& c : cases) {
    CAPTURE(c.name);
    ExpectError(env.Exchange(c.token, c.audience, c.extra), c.status, c.error);
  }
  SUBCASE("request-level errors") {
    const std::string token = env.Sign(good);
    ExpectError(env.Raw("grant_type=client_credentials&subject_token_type=" + Enc(kIdToken) +
                        "&audience=payments-deploy&subject_token=" + Enc(token)),
                400, "unsupported_grant_type");
    ExpectError(env.Raw("grant_type=" + Enc(kGrantType) + "&subject_token_type=id_token" +
                        "&audience=payments-deploy&subject_token=" + Enc(token)),
                400, "invalid_request");
    ExpectError(env.Raw("grant_type=" + Enc(kGrantType) + "&subject_token_type=" + Enc(kIdToken) +
                        "&subject_token=" + Enc(token)),
                400, "invalid_request");
    ExpectError(env.Raw(json{{"grant_type", kGrantType}, {"subject_token", token}}.dump(),
                        "application/json"),
                400, "invalid_request");
    ExpectError(env.Raw("grant_type=" + Enc(kGrantType), "application/x-www-form-urlencoded",
                        "/v1/token?subject_token=" + Enc(token)),
                400, "invalid_request");
  }
  // Nothing changed: no session, no grant, no audit record; the forged
  // issuer and the made-up kids cost the real issuer at most one refresh.
  CHECK(env.Sessions("trust:payments-deploy").size() == sessions_before);
  CHECK(env.Sessions("trust:gitlab-deploy").empty());
  CHECK(env.AuditCount() == audit_before);
  CHECK(env.idp->discovery_hits() == discovery_before);
  CHECK(env.idp->jwks_hits() <= jwks_before + 1);
  // Counted by outcome.
  auto m = env.broker->Get("/metrics");
  CHECK(m.body.find("jitbroker_token_exchanges_total{result=\"ok\",reason=\"ok\"} 1") !=
        std::string::npos);
  // By reason too, so a forged-token storm and a policy that stopped
  // matching look different on a dashboard.
  // Refusals before the signature is verified are one label, as they are one
  // answer: the metric is public by default and must not be an oracle.
  CHECK(m.body.find(
            "jitbroker_token_exchanges_total{result=\"invalid_grant\",reason=\"unverified\"}") !=
        std::string::npos);
  CHECK(m.body.find("untrusted_issuer") == std::string::npos);
  CHECK(m.body.find("unknown_key") == std::string::npos);
  CHECK(m.body.find(
            "jitbroker_token_exchanges_total{result=\"invalid_grant\",reason=\"token_expired\"}") !=
        std::string::npos);
  CHECK(m.body.find("jitbroker_token_exchanges_total{result=\"unauthorized_client\",reason="
                    "\"claims_mismatch\"}") != std::string::npos);
}

TEST_CASE("TokenExchange: unverified tokens get byte-identical answers, whatever the audience") {
  Env env;
  auto attacker = crypto::SigningKey::Generate(crypto::JwsAlg::kRS256);
  REQUIRE(attacker);
  // Signed by someone else under the trusted issuer's kid and iss.
  const std::string forged = *attacker.value()->SignJwt({{"kid", env.rsa}}, env.GitHub());
  json evil = env.GitHub();
  evil["iss"] = "https://token.actions.githubusercontent.com";
  const std::string untrusted = *attacker.value()->SignJwt({{"kid", "k"}}, evil);
  std::set<std::string> bodies;
  for (const auto& [token, audience, extra] :
       std::vector<std::tuple<std::string, std::string, std::string>>{
           {forged, "nobody", ""},
           {forged, "payments-deploy", ""},
           {forged, "jwt://api.internal", ""},
           {forged, "payments-deploy", "&resource=" + Enc("jwt://nowhere")},
           {untrusted, "nobody", ""},
           {untrusted, "payments-deploy", ""}}) {
    CAPTURE(audience);
    auto r = env.Exchange(token, audience, extra);
    ExpectError(r, 400, "invalid_grant");
    bodies.insert(r.raw);
  }
  CHECK(bodies.size() == 1);
  CHECK(*bodies.begin() ==
        R"({"error":"invalid_grant","error_description":"the subject_token was not accepted"})");
  // A verified token learns whether the audience exists; its descriptions
  // name no claim.
  ExpectError(env.Exchange(env.Sign(env.GitHub()), "nobody"), 400, "invalid_target");
  json branch = env.GitHub();
  branch["ref"] = "refs/heads/evil";
  auto mismatch = env.Exchange(env.Sign(branch));
  ExpectError(mismatch, 400, "unauthorized_client");
  CHECK(mismatch.raw.find("ref") == std::string::npos);
}

TEST_CASE("TokenExchange: replay protection, and a storm of unknown kids") {
  Env env;
  const std::string token = env.Sign(env.GitHub());
  REQUIRE(env.Exchange(token).status == 200);
  ExpectError(env.Exchange(token), 400, "invalid_grant");
  // Replay protection is keyed on (issuer, jti), whichever policy; a policy
  // that turns it off does not consult it.
  CHECK(env.Exchange(token, "replayable").status == 200);
  CHECK(env.Exchange(token, "replayable").status == 200);

  const int jwks_before = env.idp->jwks_hits();
  std::vector<std::thread> threads;
  std::atomic<int> refused{0};
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < 10; ++i) {
        const std::string forged =
            env.idp->Sign(env.GitHub(), env.rsa, {{"kid", "storm-" + std::to_string(t * 100 + i)}});
        auto r = env.Exchange(forged);
        if (r.status == 400 && r.body["error"] == "invalid_grant") {
          ++refused;
        }
      }
    });
  }
  for (auto& th : threads) {
    th.join();
  }
  CHECK(refused == 40);
  // One refresh per 30 s cooldown at most, whatever the storm.
  CHECK(env.idp->jwks_hits() - jwks_before <= 1);
}

TEST_CASE("TokenExchange: a token exchanged once stays spent across a restart (finding 11)") {
  Env env;
  const std::string token = env.Sign(env.GitHub());
  auto first = env.Exchange(token);
  REQUIRE(first.status == 200);
  const size_t records = env.AuditCount();

  env.broker->Stop();
  env.broker->Restart();  // same data directory, empty memory
  ExpectError(env.Exchange(token), 400, "invalid_grant");
  // Refused before anything was minted or recorded, as before the restart
  // (the restart itself adds its shutdown checkpoint).
  auto grants = env.broker->Get("/v1/audit?limit=10000", env.broker->admin_key);
  REQUIRE(grants.status == 200);
  size_t minted = 0;
  for (const auto& r : grants.json["records"]) {
    minted += r["event"] == "credential.minted" ? 1 : 0;
  }
  CHECK(minted == 1);
  CHECK(env.AuditCount() <= records + 2);
  // A fresh token of the same job is still welcome.
  CHECK(env.Exchange(env.Sign(env.GitHub())).status == 200);
}

TEST_CASE("TokenExchange: concurrent jobs of one run share one session") {
  Env env;
  std::vector<std::thread> threads;
  std::mutex mu;
  std::set<std::string> sessions;
  std::atomic<int> ok{0};
  for (int i = 0; i < 8; ++i) {
    threads.emplace_back([&] {
      auto r = env.Exchange(env.Sign(env.GitHub()));
      if (r.status == 200) {
        ++ok;
        std::lock_guard lock(mu);
        sessions.insert(r.body["session_id"].get<std::string>());
      }
    });
  }
  for (auto& t : threads) {
    t.join();
  }
  CHECK(ok == 8);
  CHECK(sessions.size() == 1);
  json listed = env.Sessions("trust:payments-deploy");
  REQUIRE(listed.size() == 1);
  auto shown = env.broker->Get("/v1/sessions/" + *sessions.begin(), env.broker->admin_key);
  CHECK(shown.json["grants"].size() == 8);
}

TEST_CASE("TokenExchange: an issuer whose discovery names another issuer is not used") {
  auto idp = FakeOidcIssuer::Start();
  REQUIRE(idp);
  const std::string kid = idp->AddKey(crypto::JwsAlg::kRS256);
  idp->SetDiscoveryIssuer("http://127.0.0.1:1");
  BrokerOptions o;
  o.trust = TrustYaml(idp->issuer());
  auto broker = BrokerProcess::Start(o);
  httplib::Client c("127.0.0.1", broker->port());
  const std::string token = idp->Sign(idp->GitHubClaims(kAudience, Now()), kid);
  auto r = c.Post("/v1/token",
                  "grant_type=" + Enc(kGrantType) + "&subject_token_type=" + Enc(kIdToken) +
                      "&audience=payments-deploy&subject_token=" + Enc(token),
                  "application/x-www-form-urlencoded");
  REQUIRE(r);
  CHECK(r->status == 503);
  CHECK(json::parse(r->body)["error"] == "temporarily_unavailable");
  CHECK(idp->jwks_hits() == 0);
}

TEST_CASE("TokenExchange: jitctl ci exchange, from a token or from GitHub Actions") {
  Env env;
  const std::string token = env.Sign(env.GitHub());
  const std::string url = "JITBROKER_URL=" + env.broker->url() + " ";
  {
    auto [rc, out] =
        RunCommand("JITBROKER_OIDC_TOKEN='" + token + "' " + url + JITCTL_BINARY +
                   " ci exchange --audience payments-deploy --scope read --token-only");
    INFO(out);
    CHECK(rc == 0);
    CHECK(SplitJwt(out.substr(0, out.find('\n'))).payload["scope"] == "read");
  }
  {
    // GitHub Actions: jitctl asks the runner's endpoint for a token with the audience.
    env.idp->EnableActionsTokenEndpoint("runner-request-token", env.rsa);
    auto [rc, out] = RunCommand(
        "ACTIONS_ID_TOKEN_REQUEST_URL='" + env.idp->ActionsTokenRequestUrl() +
        "' ACTIONS_ID_TOKEN_REQUEST_TOKEN=runner-request-token " + url + JITCTL_BINARY +
        " ci exchange --audience payments-deploy --oidc-audience " + kAudience + " --export TOKEN");
    INFO(out);
    CHECK(rc == 0);
    CHECK(out.rfind("export TOKEN='eyJ", 0) == 0);
    CHECK(env.idp->last_actions_audience() == kAudience);
    CHECK(out.find("runner-request-token") == std::string::npos);
  }
  {
    // Refused: exit 4 with the OAuth error, and never the token on screen.
    json other = env.GitHub();
    other["ref"] = "refs/heads/evil";
    const std::string bad = env.Sign(other);
    auto [rc, out] = RunCommand("JITBROKER_OIDC_TOKEN='" + bad + "' " + url + JITCTL_BINARY +
                                " ci exchange --audience payments-deploy");
    INFO(out);
    CHECK(rc == 4);
    CHECK(out.find("unauthorized_client") != std::string::npos);
    CHECK(out.find(bad) == std::string::npos);
  }
  {
    auto [rc, out] = RunCommand(url + JITCTL_BINARY + " ci exchange --audience payments-deploy");
    CHECK(rc == 2);
    CHECK(out.find("no OIDC token") != std::string::npos);
  }
  {
    // By default: metadata, never the credential (CI logs are widely read).
    auto [rc, out] = RunCommand("JITBROKER_OIDC_TOKEN='" + env.Sign(env.GitHub()) + "' " + url +
                                JITCTL_BINARY + " ci exchange --audience payments-deploy");
    INFO(out);
    CHECK(rc == 0);
    CHECK(out.find("grant: grt_") != std::string::npos);
    CHECK(out.find("not shown") != std::string::npos);
    CHECK(out.find("eyJ") == std::string::npos);
  }
  {
    // GitHub Actions: the token is masked (on stderr) before it is printed,
    // and stdout stays the token alone for $(...).
    const std::string err = env.broker->dir() + "/ci_exchange.err";
    auto [rc, out] = RunCommand(
        "( GITHUB_ACTIONS=true JITBROKER_OIDC_TOKEN='" + env.Sign(env.GitHub()) + "' " + url +
        JITCTL_BINARY + " ci exchange --audience payments-deploy --token-only 2>" + err + " )");
    INFO(out);
    CHECK(rc == 0);
    REQUIRE(out.size() > 1);
    const std::string printed = out.substr(0, out.size() - 1);
    CHECK(out == printed + "\n");
    CHECK(printed.find('\n') == std::string::npos);
    std::ifstream in(err);
    std::string masks((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    CHECK(masks.find("::add-mask::" + printed + "\n") != std::string::npos);
  }
  {
    // Plain http to a non-loopback broker: refused before any token is fetched.
    env.idp->EnableActionsTokenEndpoint("runner-request-token", env.rsa);
    const int before = env.idp->jwks_hits();
    auto [rc, out] = RunCommand(
        "ACTIONS_ID_TOKEN_REQUEST_URL='" + env.idp->ActionsTokenRequestUrl() +
        "' ACTIONS_ID_TOKEN_REQUEST_TOKEN=runner-request-token JITBROKER_URL=http://"
        "localhost.invalid:8443 " +
        JITCTL_BINARY + " ci exchange --audience payments-deploy --oidc-audience nobody-asked");
    INFO(out);
    CHECK(rc == 2);
    CHECK(out.find("refuses plain http") != std::string::npos);
    CHECK(env.idp->last_actions_audience() != "nobody-asked");
    CHECK(env.idp->jwks_hits() == before);
  }
}

TEST_CASE("TokenExchange: the GitHub composite action's script (contrib/github-action)") {
  Env env;
  env.idp->EnableActionsTokenEndpoint("runner-request-token", env.rsa);
  const std::string out = env.broker->dir() + "/github_output";
  const std::string genv = env.broker->dir() + "/github_env";
  const std::string vars =
      "ACTIONS_ID_TOKEN_REQUEST_URL='" + env.idp->ActionsTokenRequestUrl() +
      "' ACTIONS_ID_TOKEN_REQUEST_TOKEN=runner-request-token JITBROKER_URL=" + env.broker->url() +
      " JITBROKER_TRUST_POLICY=payments-deploy JITBROKER_OIDC_AUDIENCE=" + kAudience +
      " JITBROKER_SCOPE=deploy JITBROKER_EXPORT_ENV=DEPLOY_TOKEN GITHUB_OUTPUT=" + out +
      " GITHUB_ENV=" + genv + " ";
  const std::string script =
      std::string(JITBROKER_SOURCE_DIR) + "/contrib/github-action/exchange.sh";
  auto [rc, text] = RunCommand(vars + "bash " + script);
  INFO(text);
  REQUIRE(rc == 0);
  std::ifstream in(out);
  std::string line, token, grant;
  while (std::getline(in, line)) {
    if (line.rfind("token=", 0) == 0) token = line.substr(6);
    if (line.rfind("grant-id=", 0) == 0) grant = line.substr(9);
  }
  REQUIRE(!token.empty());
  CHECK(grant.rfind("grt_", 0) == 0);
  CHECK(SplitJwt(token).payload["scope"] == "deploy");
  // Masked in the log, exported for later steps.
  CHECK(text.find("::add-mask::" + token) != std::string::npos);
  std::ifstream env_in(genv);
  std::string exported((std::istreambuf_iterator<char>(env_in)), std::istreambuf_iterator<char>());
  CHECK(exported == "DEPLOY_TOKEN=" + token + "\n");
  // A refusal is an ::error:: annotation and a failing step.
  auto [rc2, text2] = RunCommand(vars + "JITBROKER_TRUST_POLICY=nobody bash " + script);
  CHECK(rc2 != 0);
  CHECK(text2.find("::error") != std::string::npos);
  CHECK(text2.find("invalid_target") != std::string::npos);
  // Plain http is for a loopback host only, matched on the whole host: a
  // name that merely starts like one, or userinfo before another host, is
  // refused before the runner is asked for a token.
  for (const char* bad :
       {"http://broker.example", "http://localhost.evil.example/", "http://localhost@evil.example/",
        "http://127.0.0.1@evil.example/", "http://127.0.0.1.evil.example",
        "http://127.0.0.1:80@evil.example/", "http://[::1].evil.example/"}) {
    CAPTURE(bad);
    auto [rc3, text3] = RunCommand(vars + "JITBROKER_URL='" + bad + "' bash " + script);
    CHECK(rc3 != 0);
    CHECK(text3.find("broker-url must be https") != std::string::npos);
  }
}

TEST_CASE("TokenExchange: unsafe trust policies stop the broker and fail config check") {
  auto idp = FakeOidcIssuer::Start();
  REQUIRE(idp);
  auto broker = BrokerProcess::Start();
  broker->Stop();  // only its directory and config are used below
  const std::string base = broker->config_path();
  std::ifstream in(base);
  std::string config((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  struct Case {
    const char* name;
    std::string trust;
    const char* expect;
  };
  const std::vector<Case> cases = {
      {"plain http to a non-loopback issuer",
       "\n  - {name: p, issuer: \"http://issuer.example\", audience: a, claims: {sub: x}, grant: "
       "{issuer: internal, resource: \"jwt://mcp.internal\"}}\n",
       "must use https"},
      {"a GitHub policy that trusts the world",
       "\n  - {name: p, issuer: \"https://token.actions.githubusercontent.com\", audience: a, "
       "claims: {ref: refs/heads/main}, grant: {issuer: internal, resource: "
       "\"jwt://mcp.internal\"}}\n",
       "must pin one of repository_owner_id"},
      {"alg none",
       "\n  - {name: p, issuer: \"" + idp->issuer() +
           "\", allow_http: true, audience: a, algorithms: [none], claims: {sub: x}, grant: "
           "{issuer: internal, resource: \"jwt://mcp.internal\"}}\n",
       "is never accepted"},
      {"a self-managed GitLab without provider",
       "\n  - {name: p, issuer: \"https://gitlab.acme.example\", audience: a, claims: {ref: main, "
       "ref_protected: true}, grant: {issuer: internal, resource: \"jwt://mcp.internal\"}}\n",
       "trust[0].provider: is required for issuer"},
      {"a self-managed GitLab that trusts every project",
       "\n  - {name: p, issuer: \"https://gitlab.acme.example\", provider: gitlab, audience: a, "
       "claims: {ref: main, ref_protected: true}, grant: {issuer: internal, resource: "
       "\"jwt://mcp.internal\"}}\n",
       "must pin one of namespace_id"},
  };
  for (const Case& c : cases) {
    CAPTURE(c.name);
    const std::string path = broker->dir() + "/bad.yaml";
    std::ofstream(path) << config << "trust: " << c.trust;
    auto [rc, out] = RunCommand(std::string(JITCTL_BINARY) + " config check " + path);
    INFO(out);
    CHECK(rc != 0);
    CHECK(out.find(c.expect) != std::string::npos);
    CHECK(out.find("bad.yaml:") != std::string::npos);
    auto [rc2, out2] =
        RunCommand(std::string(JITBROKER_BINARY) + " --config " + path + " --check-config");
    CHECK(rc2 != 0);
    CHECK(out2.find(c.expect) != std::string::npos);
  }
  // A grant the jwt issuer cannot mint is caught at start (not offline).
  const std::string path = broker->dir() + "/grant.yaml";
  std::ofstream(path) << config << "trust:\n  - {name: p, issuer: \"" << idp->issuer()
                      << "\", allow_http: true, provider: generic, audience: a, claims: {sub: x, "
                         "project_id: \"1\"}, grant: {issuer: internal, resource: "
                         "\"jwt://unknown.internal\"}}\n";
  auto [rc, out] = RunCommand(std::string(JITBROKER_BINARY) + " --config " + path);
  CHECK(rc != 0);
  CHECK(out.find("trust[0].grant") != std::string::npos);
}

}  // namespace
}  // namespace jitbroker::testing
