// CI OIDC subject tokens: the RFC 8693 request, JOSE verification and its
// pitfalls (docs/concepts.md "Protocol notes"), the JWKS cache and the replay
// cache (broker/oidc/).
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <map>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include <doctest/doctest.h>
#include <nlohmann/json.hpp>

#include "broker/crypto/crypto.h"
#include "broker/crypto/jose.h"
#include "broker/net/http_client.h"
#include "broker/net/url.h"
#include "broker/oidc/jwks_cache.h"
#include "broker/oidc/replay_cache.h"
#include "broker/oidc/token_request.h"
#include "broker/oidc/token_verifier.h"
#include "broker/oidc/trust_policy.h"
#include "tests/fakes/fake_clock.h"

namespace jitbroker::oidc {
namespace {

using nlohmann::json;
using testing::FakeClock;

constexpr char kIssuer[] = "https://token.actions.githubusercontent.com";
constexpr char kAudience[] = "jitbroker.acme.example";

// A compact JWS built by hand (forgeries); `signature` is raw bytes.
std::string Compact(const json& header, const json& payload, const std::string& signature) {
  return crypto::Base64UrlEncode(header.dump()) + "." + crypto::Base64UrlEncode(payload.dump()) +
         "." + crypto::Base64UrlEncode(signature);
}

// ---------------------------------------------------------------------------
// The request

TEST_CASE("TokenRequest: form decoding") {
  auto f = net::ParseForm("a=1&b=x+y%20z&c=&d&e=%2B%26%3D");
  REQUIRE(f);
  REQUIRE(f->size() == 5);
  CHECK((*f)[1] == std::pair<std::string, std::string>{"b", "x y z"});
  CHECK((*f)[2].second.empty());
  CHECK((*f)[3] == std::pair<std::string, std::string>{"d", ""});
  CHECK((*f)[4].second == "+&=");
  CHECK(net::ParseForm("")->empty());
  CHECK(net::ParseForm("&&")->empty());
  for (const char* bad : {"a=%", "a=%4", "a=%zz", "a=%00"}) {
    CAPTURE(bad);
    auto r = net::ParseForm(bad);
    REQUIRE_FALSE(r);
    CHECK(r.error().Reason() == "invalid_request");
  }
}

TEST_CASE("TokenRequest: RFC 8693 parameters are checked strictly") {
  const std::string grant = "grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Atoken-exchange";
  const std::string type = "subject_token_type=urn%3Aietf%3Aparams%3Aoauth%3Atoken-type%3Aid_token";
  SUBCASE("a complete request") {
    auto r = ParseTokenExchangeForm(
        grant + "&" + type +
        "&subject_token=eyJ.a.b&audience=payments-ci&scope=read+deploy"
        "&requested_token_type=urn%3Aietf%3Aparams%3Aoauth%3Atoken-type%3Ajwt"
        "&unknown=ignored");
    REQUIRE_MESSAGE(r, (r ? "" : r.error().message));
    CHECK(r->subject_token.Reveal() == "eyJ.a.b");
    CHECK(r->subject_token_type == kTokenTypeIdToken);
    CHECK(r->audience == "payments-ci");
    CHECK(r->scope == "read deploy");
    CHECK(r->requested_token_type == kTokenTypeJwt);
    CHECK_FALSE(r->resource);
  }
  SUBCASE("the jwt token type is accepted too") {
    auto r = ParseTokenExchangeForm(
        grant + "&subject_token_type=urn%3Aietf%3Aparams%3Aoauth%3Atoken-type%3Ajwt" +
        "&subject_token=t&audience=a&resource=jwt%3A%2F%2Fmcp.internal");
    REQUIRE(r);
    CHECK(r->resource == "jwt://mcp.internal");
  }
  struct Case {
    const char* name;
    std::string body;
    const char* reason;
  };
  const std::vector<Case> cases = {
      {"no grant_type", type + "&subject_token=t&audience=a", "invalid_request"},
      {"other grant_type", "grant_type=client_credentials&" + type + "&subject_token=t&audience=a",
       "unsupported_grant_type"},
      {"no subject_token", grant + "&" + type + "&audience=a", "invalid_request"},
      {"empty subject_token", grant + "&" + type + "&subject_token=&audience=a", "invalid_request"},
      {"no subject_token_type", grant + "&subject_token=t&audience=a", "invalid_request"},
      {"short token type", grant + "&subject_token_type=id_token&subject_token=t&audience=a",
       "unsupported_token_type"},
      {"access token type",
       grant + "&subject_token_type=urn%3Aietf%3Aparams%3Aoauth%3Atoken-type%3Aaccess_token" +
           "&subject_token=t&audience=a",
       "unsupported_token_type"},
      {"no audience", grant + "&" + type + "&subject_token=t", "invalid_request"},
      {"duplicate audience", grant + "&" + type + "&subject_token=t&audience=a&audience=b",
       "invalid_request"},
      {"duplicate subject_token",
       grant + "&" + type + "&subject_token=t&subject_token=u&audience=a", "invalid_request"},
      {"actor_token", grant + "&" + type + "&subject_token=t&audience=a&actor_token=x",
       "invalid_request"},
      {"control character", grant + "&" + type + "&subject_token=t&audience=a%0Ab",
       "invalid_request"},
      {"bad escape", grant + "&" + type + "&subject_token=t&audience=%G1", "invalid_request"},
  };
  for (const Case& c : cases) {
    CAPTURE(c.name);
    auto r = ParseTokenExchangeForm(c.body);
    REQUIRE_FALSE(r);
    CHECK(r.error().Reason() == c.reason);
    // Never the token in a message.
    CHECK(r.error().message.find("subject_token=t") == std::string::npos);
  }
}

TEST_CASE("TokenRequest: every error maps to an RFC 6749 §5.2 code") {
  const std::set<std::string> allowed = {
      "invalid_request", "invalid_grant",          "invalid_target",          "unauthorized_client",
      "invalid_scope",   "unsupported_grant_type", "temporarily_unavailable", "server_error"};
  for (ErrorCode code : kAllErrorCodes) {
    CAPTURE(ErrorCodeName(code));
    Error e;
    e.code = code;
    e.message = "m";
    const OAuthError o = ToOAuthError(e);
    CHECK(allowed.contains(o.error));
    if (code == ErrorCode::kResourceExhausted) {
      // A rate limit (issue #16): 429, and the broker's stable code beside
      // RFC 6749's, which has none for it.
      CHECK(o.status == 429);
      CHECK(o.error == "temporarily_unavailable");
      CHECK(OAuthErrorBody(o)["code"] == "rate_limited");
      CHECK(OAuthErrorBody(o).size() == 3);
    } else {
      CHECK((o.status == 400 || o.status == 500 || o.status == 503));
      CHECK(OAuthErrorBody(o).size() == 2);
    }
  }
  struct Row {
    Error error;
    const char* oauth;
    int status;
  };
  const std::vector<Row> rows = {
      {InvalidArgument("malformed_token", "x"), "invalid_request", 400},
      {InvalidArgument("token_too_large", "x"), "invalid_request", 400},
      {InvalidArgument("unsupported_grant_type", "x"), "unsupported_grant_type", 400},
      {Unauthenticated("invalid_signature", "x"), "invalid_grant", 400},
      {Unauthenticated("token_expired", "x"), "invalid_grant", 400},
      {Unauthenticated("untrusted_issuer", "x"), "invalid_grant", 400},
      {Unauthenticated("token_replayed", "x"), "invalid_grant", 400},
      // Refusals before the signature is verified keep their precise reason
      // for the log, but the client always sees invalid_grant.
      {Unauthenticated("unknown_audience", "x"), "invalid_grant", 400},
      {Unauthenticated("no_trust_policies", "x"), "invalid_grant", 400},
      {Unauthenticated("resource_mismatch", "x"), "invalid_grant", 400},
      {NotFound("unknown_audience", "x"), "invalid_target", 400},
      {PermissionDenied("claims_mismatch", "x"), "unauthorized_client", 400},
      {PermissionDenied("exchange_denied", "x"), "unauthorized_client", 400},
      {FailedPrecondition("ci_session_ended", "x"), "unauthorized_client", 400},
      {PermissionDenied("scope_not_granted", "x"), "invalid_scope", 400},
      {InvalidArgument("invalid_scope", "x"), "invalid_scope", 400},
      {Unavailable("issuer_unavailable", "x"), "temporarily_unavailable", 503},
      {Internal("boom", "secret detail"), "server_error", 500},
  };
  for (const Row& r : rows) {
    CAPTURE(r.error.ToString());
    const OAuthError o = ToOAuthError(r.error);
    CHECK(o.error == r.oauth);
    CHECK(o.status == r.status);
  }
  // Internal details stay in the log.
  CHECK(ToOAuthError(Internal("boom", "secret detail")).description == "internal error");
}

// ---------------------------------------------------------------------------
// Verification

class StaticKeys final : public KeySource {
 public:
  void Add(const std::string& kid, const crypto::SigningKey& key) {
    keys_[kid] = std::shared_ptr<const crypto::VerifyKey>(key.Public());
  }
  Result<std::shared_ptr<const crypto::VerifyKey>> Find(const KeyQuery& q) override {
    ++lookups;
    auto it = keys_.find(q.kid);
    if (it == keys_.end()) {
      return std::unexpected(Unauthenticated("unknown_key", "no such kid"));
    }
    return it->second;
  }
  int lookups = 0;

 private:
  std::map<std::string, std::shared_ptr<const crypto::VerifyKey>> keys_;
};

struct Signer {
  std::unique_ptr<crypto::SigningKey> rsa = *crypto::SigningKey::Generate(crypto::JwsAlg::kRS256);
  std::unique_ptr<crypto::SigningKey> ec = *crypto::SigningKey::Generate(crypto::JwsAlg::kES256);
  std::unique_ptr<crypto::SigningKey> ed = *crypto::SigningKey::Generate(crypto::JwsAlg::kEd25519);
  StaticKeys keys;
  Signer() {
    keys.Add("rsa", *rsa);
    keys.Add("ec", *ec);
    keys.Add("ed", *ed);
  }
  std::string Sign(const crypto::SigningKey& key, const std::string& kid, const json& claims,
                   json header = json::object()) {
    header["kid"] = kid;
    auto t = key.SignJwt(std::move(header), claims);
    REQUIRE(t);
    return *t;
  }
};

TrustPolicy Policy(std::vector<std::string> algs = {"RS256"}) {
  TrustPolicy p;
  p.name = "payments-ci";
  p.issuer = kIssuer;
  p.audience = kAudience;
  p.algorithms = std::move(algs);
  return p;
}

json Claims(int64_t now) {
  return {{"iss", kIssuer},
          {"aud", kAudience},
          {"sub", "repo:acme/svc:ref:refs/heads/main"},
          {"jti", "j-1"},
          {"iat", now},
          {"nbf", now - 600},
          {"exp", now + 300},
          {"repository", "acme/svc"}};
}

Result<json> Verify(const std::string& token, const TrustPolicy& p, KeySource& keys,
                    TimePoint now) {
  JITBROKER_ASSIGN_OR_RETURN(UnverifiedToken t, DecodeSubjectToken(token));
  return VerifySubjectToken(t, p, keys, now);
}

TEST_CASE("Oidc: RS256, ES256, Ed25519 and EdDSA subject tokens verify") {
  Signer s;
  const TimePoint now = FromUnixSeconds(1795000000);
  const json claims = Claims(1795000000);
  const TrustPolicy all = Policy({"RS256", "ES256", "Ed25519", "EdDSA"});
  auto rs = Verify(s.Sign(*s.rsa, "rsa", claims), all, s.keys, now);
  REQUIRE_MESSAGE(rs, (rs ? "" : rs.error().ToString()));
  CHECK((*rs)["sub"] == claims["sub"]);
  CHECK(Verify(s.Sign(*s.ec, "ec", claims), all, s.keys, now));
  CHECK(Verify(s.Sign(*s.ed, "ed", claims), all, s.keys, now));
  // RFC 9864: "EdDSA" on input is the same key type.
  {
    auto t = s.Sign(*s.ed, "ed", claims);
    auto parts = crypto::DecodeJws(t);
    REQUIRE(parts);
    json h = parts->header;
    h["alg"] = "EdDSA";
    const std::string input =
        crypto::Base64UrlEncode(h.dump()) + "." + crypto::Base64UrlEncode(parts->payload.dump());
    auto sig = s.ed->Sign(input);
    REQUIRE(sig);
    const std::string eddsa = input + "." + crypto::Base64UrlEncode(*sig);
    CHECK(Verify(eddsa, all, s.keys, now));
    // Per-issuer allow-list: Ed25519 allowed, EdDSA not.
    auto only_new = Verify(eddsa, Policy({"Ed25519"}), s.keys, now);
    REQUIRE_FALSE(only_new);
    CHECK(only_new.error().Reason() == "alg_not_allowed");
  }
}

TEST_CASE(
    "Oidc: JOSE pitfalls are refused before or at verification (docs/concepts.md, JOSE and JWS)") {
  Signer s;
  const int64_t t0 = 1795000000;
  const TimePoint now = FromUnixSeconds(t0);
  const json claims = Claims(t0);
  const TrustPolicy rs_only = Policy({"RS256"});

  auto refused = [&](const std::string& token, const TrustPolicy& p, const char* reason,
                     ErrorCode code = ErrorCode::kUnauthenticated) {
    auto r = Verify(token, p, s.keys, now);
    REQUIRE_FALSE(r);
    CHECK(r.error().Reason() == reason);
    CHECK(r.error().code == code);
  };

  SUBCASE("alg none") {
    const int before = s.keys.lookups;
    // The classic form has an empty signature: not even a JWS.
    refused(Compact(json{{"alg", "none"}, {"typ", "JWT"}}, claims, ""), rs_only, "malformed_token",
            ErrorCode::kInvalidArgument);
    for (const char* none : {"none", "None", "NONE"}) {
      refused(Compact(json{{"alg", none}}, claims, "x"), rs_only, "alg_not_allowed");
    }
    CHECK(s.keys.lookups == before);  // no key was looked up
  }
  SUBCASE("HMAC with the issuer's public key as the secret (key confusion)") {
    const std::string input =
        crypto::Base64UrlEncode(json{{"alg", "HS256"}, {"kid", "rsa"}}.dump()) + "." +
        crypto::Base64UrlEncode(claims.dump());
    const std::string secret = s.rsa->PublicJwk().dump();
    const std::string token =
        input + "." + crypto::Base64UrlEncode(crypto::HmacSha256(secret, input));
    refused(token, Policy({"RS256", "ES256"}), "alg_not_allowed");
    refused(Compact(json{{"alg", "hs512"}, {"kid", "rsa"}}, claims, "x"), rs_only,
            "alg_not_allowed");
  }
  SUBCASE("an alg outside the issuer's allow-list") {
    refused(s.Sign(*s.ec, "ec", claims), rs_only, "alg_not_allowed");
    refused(Compact(json{{"alg", "PS256"}, {"kid", "rsa"}}, claims, "x"), rs_only,
            "alg_not_allowed");
  }
  SUBCASE("ES256 header on the RSA key's kid (alg/key type confusion)") {
    refused(s.Sign(*s.ec, "rsa", claims), Policy({"RS256", "ES256"}), "jws_alg_mismatch");
    refused(s.Sign(*s.rsa, "ec", claims), Policy({"RS256", "ES256"}), "jws_alg_mismatch");
  }
  SUBCASE("keys carried or referenced by the token") {
    const json attacker = s.ec->PublicJwk();
    refused(s.Sign(*s.rsa, "rsa", claims, {{"jwk", attacker}}), rs_only, "embedded_key");
    refused(s.Sign(*s.rsa, "rsa", claims, {{"jku", "https://evil.example/jwks"}}), rs_only,
            "embedded_key");
    refused(s.Sign(*s.rsa, "rsa", claims, {{"x5u", "https://evil.example/cert"}}), rs_only,
            "embedded_key");
    refused(s.Sign(*s.rsa, "rsa", claims, {{"x5c", json::array({"MIIB"})}}), rs_only,
            "embedded_key");
    // x5t (a thumbprint, as GitHub sends) is harmless and accepted.
    CHECK(Verify(s.Sign(*s.rsa, "rsa", claims, {{"x5t", "abc"}}), rs_only, s.keys, now));
  }
  SUBCASE("crit and explicit typing") {
    refused(s.Sign(*s.rsa, "rsa", claims, {{"crit", {"exp"}}, {"exp", 1}}), rs_only,
            "crit_unsupported");
    refused(s.Sign(*s.rsa, "rsa", claims, {{"typ", "dpop+jwt"}}), rs_only, "unexpected_typ");
    refused(s.Sign(*s.rsa, "rsa", claims, {{"typ", 1}}), rs_only, "unexpected_typ");
    CHECK(Verify(s.Sign(*s.rsa, "rsa", claims, {{"typ", "jwt"}}), rs_only, s.keys, now));
  }
  SUBCASE("a tampered payload or signature") {
    const std::string good = s.Sign(*s.rsa, "rsa", claims);
    json evil = claims;
    evil["repository"] = "evil/svc";
    const size_t d1 = good.find('.');
    const size_t d2 = good.rfind('.');
    const std::string swapped =
        good.substr(0, d1 + 1) + crypto::Base64UrlEncode(evil.dump()) + good.substr(d2);
    refused(swapped, rs_only, "invalid_signature");
    std::string flipped = good;
    flipped[d2 + 5] = flipped[d2 + 5] == 'A' ? 'B' : 'A';
    refused(flipped, rs_only, "invalid_signature");
  }
  SUBCASE("an ES256 signature in DER form") {
    const std::string good = s.Sign(*s.ec, "ec", claims);
    auto parts = crypto::DecodeJws(good);
    REQUIRE(parts);
    std::string der = "\x30\x44\x02\x20" + parts->signature.substr(0, 32) + "\x02\x20" +
                      parts->signature.substr(32);
    refused(good.substr(0, good.rfind('.') + 1) + crypto::Base64UrlEncode(der), Policy({"ES256"}),
            "invalid_signature");
  }
  SUBCASE("an unknown kid") { refused(s.Sign(*s.rsa, "nope", claims), rs_only, "unknown_key"); }
  SUBCASE("a forged or missing issuer") {
    json other = claims;
    other["iss"] = "https://token.actions.githubusercontent.com.evil.example";
    auto t = DecodeSubjectToken(s.Sign(*s.rsa, "rsa", other));
    REQUIRE(t);
    auto r = VerifySubjectToken(*t, rs_only, s.keys, now);
    REQUIRE_FALSE(r);
    CHECK(r.error().Reason() == "untrusted_issuer");
    json none = claims;
    none.erase("iss");
    auto d = DecodeSubjectToken(s.Sign(*s.rsa, "rsa", none));
    REQUIRE_FALSE(d);
    CHECK(d.error().Reason() == "missing_issuer");
    none["iss"] = 7;
    CHECK_FALSE(DecodeSubjectToken(s.Sign(*s.rsa, "rsa", none)));
  }
  SUBCASE("oversized and malformed tokens are refused before parsing") {
    json big = claims;
    big["padding"] = std::string(kMaxSubjectTokenBytes, 'a');
    refused(s.Sign(*s.rsa, "rsa", big), rs_only, "token_too_large", ErrorCode::kInvalidArgument);
    for (const char* bad : {"", "a", "a.b", "a.b.c.d", "e30.e30.", "!!.e30.e30", "e30.W10.e30"}) {
      CAPTURE(bad);
      refused(bad, rs_only, "malformed_token", ErrorCode::kInvalidArgument);
    }
    refused(s.Sign(*s.rsa, std::string(300, 'k'), claims), rs_only, "invalid_header");
  }
}

TEST_CASE("Oidc: exp, nbf and iat with bounded leeway and a maximum age") {
  Signer s;
  const int64_t t0 = 1795000000;
  TrustPolicy p = Policy();
  p.leeway_seconds = 30;
  p.max_token_age_seconds = 900;
  auto check = [&](const json& claims, int64_t now) {
    return CheckTimeClaims(claims, p, FromUnixSeconds(now));
  };
  auto reason = [&](const json& claims, int64_t now) {
    Status st = check(claims, now);
    return st ? std::string("ok") : std::string(st.error().Reason());
  };
  const json c = Claims(t0);  // iat t0, nbf t0-600, exp t0+300
  CHECK(reason(c, t0) == "ok");
  // expired: now >= exp + leeway.
  CHECK(reason(c, t0 + 300 + 29) == "ok");
  CHECK(reason(c, t0 + 300 + 30) == "token_expired");
  // not yet valid: now < nbf - leeway.
  json future = c;
  future["nbf"] = t0 + 100;
  CHECK(reason(future, t0 + 70) == "ok");
  CHECK(reason(future, t0 + 69) == "token_not_yet_valid");
  // issued in the future.
  json ahead = c;
  ahead["iat"] = t0 + 31;
  ahead["nbf"] = t0;
  CHECK(reason(ahead, t0) == "token_not_yet_valid");
  // too old, even if exp says otherwise.
  json old = c;
  old["exp"] = t0 + 86400;
  CHECK(reason(old, t0 + 930) == "ok");
  CHECK(reason(old, t0 + 931) == "token_too_old");
  // The configured maximum age is in the log's detail, not the client's message.
  {
    Status st = check(old, t0 + 931);
    REQUIRE_FALSE(st);
    CHECK(st.error().message.find("900") == std::string::npos);
    CHECK(st.error().detail.find("900") != std::string::npos);
  }
  // required and well-typed.
  json no_exp = c;
  no_exp.erase("exp");
  CHECK(reason(no_exp, t0) == "missing_claim");
  json no_iat = c;
  no_iat.erase("iat");
  CHECK(reason(no_iat, t0) == "missing_claim");
  json str_exp = c;
  str_exp["exp"] = std::to_string(t0 + 300);
  CHECK(reason(str_exp, t0) == "invalid_claim");
  json frac = c;
  frac["exp"] = static_cast<double>(t0) + 300.75;
  CHECK(reason(frac, t0) == "ok");
  json huge = c;
  huge["exp"] = 1e300;
  CHECK(reason(huge, t0) == "invalid_claim");
  json negative = c;
  negative["iat"] = -5;
  CHECK(reason(negative, t0) == "invalid_claim");
  // Zero leeway is exact.
  p.leeway_seconds = 0;
  CHECK(reason(c, t0 + 299) == "ok");
  CHECK(reason(c, t0 + 300) == "token_expired");
  // Through the verifier as well.
  auto expired =
      Verify(s.Sign(*s.rsa, "rsa", Claims(t0 - 3600)), Policy(), s.keys, FromUnixSeconds(t0));
  REQUIRE_FALSE(expired);
  CHECK(expired.error().Reason() == "token_expired");
}

TEST_CASE("Oidc: aud must contain the configured audience") {
  auto reason = [](const json& aud) {
    json c = {{"aud", aud}};
    Status st = CheckAudience(c, kAudience);
    return st ? std::string("ok") : std::string(st.error().Reason());
  };
  CHECK(reason(kAudience) == "ok");
  CHECK(reason(json::array({"other", kAudience})) == "ok");
  CHECK(reason("https://github.com/acme") == "wrong_audience");  // GitHub's default audience
  CHECK(reason(json::array({"other"})) == "wrong_audience");
  CHECK(reason(json::array()) == "wrong_audience");
  CHECK(reason(json::array({kAudience, 5})) == "wrong_audience");
  CHECK(reason(std::string(kAudience) + " ") == "wrong_audience");
  CHECK(reason(5) == "wrong_audience");
  CHECK(CheckAudience(json::object(), kAudience).error().Reason() == "wrong_audience");
  json many = json::array();
  for (int i = 0; i < 40; ++i) {
    many.push_back(kAudience);
  }
  CHECK(reason(many) == "wrong_audience");
}

TEST_CASE("Oidc: sub is required, and jti when replay protection is on") {
  Signer s;
  const int64_t t0 = 1795000000;
  json c = Claims(t0);
  c.erase("jti");
  TrustPolicy p = Policy();
  auto r = Verify(s.Sign(*s.rsa, "rsa", c), p, s.keys, FromUnixSeconds(t0));
  REQUIRE_FALSE(r);
  CHECK(r.error().Reason() == "missing_claim");
  // Which claim is missing (and so that replay protection is on) is for the log.
  CHECK(r.error().detail.find("jti") != std::string::npos);
  CHECK(r.error().message.find("jti") == std::string::npos);
  p.replay_protection = false;
  CHECK(Verify(s.Sign(*s.rsa, "rsa", c), p, s.keys, FromUnixSeconds(t0)));
  c.erase("sub");
  CHECK_FALSE(Verify(s.Sign(*s.rsa, "rsa", c), p, s.keys, FromUnixSeconds(t0)));
}

TEST_CASE("Oidc: NumericDates above 2^33 are refused (no TimePoint overflow)") {
  const int64_t t0 = 1795000000;
  TrustPolicy p = Policy();
  auto reason = [&](json exp) {
    json c = Claims(t0);
    c["exp"] = std::move(exp);
    Status st = CheckTimeClaims(c, p, FromUnixSeconds(t0));
    return st ? std::string("ok") : std::string(st.error().Reason());
  };
  CHECK(kMaxNumericDate == int64_t{8589934592});
  // TimePoint counts nanoseconds in int64: the bound and a day on top fit.
  CHECK(kMaxNumericDate + 86400 < INT64_MAX / 1000000000);
  CHECK(reason(kMaxNumericDate) == "ok");
  CHECK(reason(kMaxNumericDate + 1) == "invalid_claim");
  CHECK(reason(9999999999LL) == "invalid_claim");
  CHECK(reason(static_cast<double>(kMaxNumericDate) + 0.5) == "invalid_claim");
  CHECK(reason(static_cast<double>(kMaxNumericDate) - 0.5) == "ok");
  CHECK(reason(json(uint64_t{18446744073709551615ULL})) == "invalid_claim");
  json c = Claims(t0);
  c["iat"] = kMaxNumericDate + 1;
  CHECK(CheckTimeClaims(c, p, FromUnixSeconds(t0)).error().Reason() == "invalid_claim");
}

TEST_CASE("Oidc: a token is kept for replay until min(exp, iat + max age) + leeway") {
  const int64_t t0 = 1795000000;
  TrustPolicy p = Policy();
  p.leeway_seconds = 30;
  p.max_token_age_seconds = 900;
  auto until = [&](const json& c) {
    auto u = UsableUntilUnix(c, p.max_token_age_seconds, p.leeway_seconds);
    REQUIRE(u);
    return *u;
  };
  auto accepted = [&](const json& c, int64_t now) {
    return CheckTimeClaims(c, p, FromUnixSeconds(now)).has_value();
  };
  // exp first (iat t0, exp t0 + 300).
  json c = Claims(t0);
  CHECK(until(c) == t0 + 300 + 30);
  // The age first: a far-future exp does not keep an entry for ever.
  json far = Claims(t0);
  far["exp"] = kMaxNumericDate;
  CHECK(until(far) == t0 + 900 + 1 + 30);
  // The bound is exact: accepted one second before, refused from then on.
  for (const json& claims : {c, far}) {
    CHECK(accepted(claims, until(claims) - 1));
    CHECK_FALSE(accepted(claims, until(claims)));
  }
  json none = Claims(t0);
  none.erase("iat");
  CHECK_FALSE(UsableUntilUnix(none, 900, 30));
  none = Claims(t0);
  none["exp"] = 9999999999LL;
  CHECK_FALSE(UsableUntilUnix(none, 900, 30));
}

TEST_CASE("Oidc: the signature is verified with the issuer's algorithms before any policy") {
  Signer s;
  const int64_t t0 = 1795000000;
  TrustSet set;
  TrustPolicy rs = Policy({"RS256"});
  TrustPolicy ec = Policy({"ES256"});
  ec.name = "ec-policy";
  TrustPolicy other = Policy({"Ed25519"});
  other.issuer = "https://other.example";
  set.policies = {rs, ec, other};
  const IssuerKeys keys = KeysOfIssuer(set, kIssuer);
  CHECK(keys.issuer == kIssuer);
  CHECK(keys.algorithms == std::vector<std::string>{"RS256", "ES256"});
  CHECK(KeysOfIssuer(set, "https://nobody.example").algorithms.empty());
  auto decode = [](const std::string& t) {
    auto d = DecodeSubjectToken(t);
    REQUIRE(d);
    return *d;
  };
  // Either algorithm of the issuer verifies; Ed25519 is another issuer's.
  CHECK(VerifyTokenSignature(decode(s.Sign(*s.rsa, "rsa", Claims(t0))), keys, s.keys));
  CHECK(VerifyTokenSignature(decode(s.Sign(*s.ec, "ec", Claims(t0))), keys, s.keys));
  auto ed = VerifyTokenSignature(decode(s.Sign(*s.ed, "ed", Claims(t0))), keys, s.keys);
  REQUIRE_FALSE(ed);
  CHECK(ed.error().Reason() == "alg_not_allowed");
  // The signature is checked with no policy (and so no audience) at all.
  const std::string good = s.Sign(*s.rsa, "rsa", Claims(t0));
  std::string forged = good;
  forged[forged.rfind('.') + 5] = forged[forged.rfind('.') + 5] == 'A' ? 'B' : 'A';
  CHECK(VerifyTokenSignature(decode(forged), keys, s.keys).error().Reason() == "invalid_signature");
  // Then per policy: the ES256 token is not acceptable to the RS256-only policy.
  const UnverifiedToken ec_token = decode(s.Sign(*s.ec, "ec", Claims(t0)));
  CHECK(CheckVerifiedToken(ec_token, ec, FromUnixSeconds(t0)));
  auto narrower = CheckVerifiedToken(ec_token, rs, FromUnixSeconds(t0));
  REQUIRE_FALSE(narrower);
  CHECK(narrower.error().Reason() == "alg_not_allowed");
}

// ---------------------------------------------------------------------------
// JWKS cache

class FakeHttp final : public net::HttpClient {
 public:
  Result<net::HttpResponse> Send(const net::HttpRequest& r) override {
    std::unique_lock lock(mu_);
    ++calls_[r.url];
    requests_.push_back(r.url);
    if (gate_closed_) {
      ++waiting_;
      cv_.notify_all();
      cv_.wait(lock, [this] { return !gate_closed_; });
    }
    auto it = routes_.find(r.url);
    if (it == routes_.end()) {
      return std::unexpected(Unavailable("unreachable", "cannot reach " + r.url));
    }
    return it->second;
  }
  void Set(const std::string& url, int status, std::string body) {
    std::lock_guard lock(mu_);
    net::HttpResponse resp;
    resp.status = status;
    resp.body = std::move(body);
    routes_[url] = std::move(resp);
  }
  void Remove(const std::string& url) {
    std::lock_guard lock(mu_);
    routes_.erase(url);
  }
  int Calls(const std::string& url) {
    std::lock_guard lock(mu_);
    return calls_[url];
  }
  std::vector<std::string> Requests() {
    std::lock_guard lock(mu_);
    return requests_;
  }
  void CloseGate() {
    std::lock_guard lock(mu_);
    gate_closed_ = true;
  }
  void OpenGate() {
    {
      std::lock_guard lock(mu_);
      gate_closed_ = false;
    }
    cv_.notify_all();
  }
  void WaitForWaiters(int n) {
    std::unique_lock lock(mu_);
    cv_.wait_for(lock, std::chrono::seconds(10), [&] { return waiting_ >= n; });
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  bool gate_closed_ = false;
  int waiting_ = 0;
  std::map<std::string, net::HttpResponse> routes_;
  std::map<std::string, int> calls_;
  std::vector<std::string> requests_;
};

struct JwksFixture {
  const std::string discovery = std::string(kIssuer) + "/.well-known/openid-configuration";
  const std::string jwks_uri = std::string(kIssuer) + "/.well-known/jwks";
  FakeHttp http;
  FakeClock clock;
  std::unique_ptr<crypto::SigningKey> k1 = *crypto::SigningKey::Generate(crypto::JwsAlg::kRS256);
  std::unique_ptr<crypto::SigningKey> k2 = *crypto::SigningKey::Generate(crypto::JwsAlg::kRS256);
  std::unique_ptr<crypto::SigningKey> ec = *crypto::SigningKey::Generate(crypto::JwsAlg::kES256);
  JwksCache cache{&http, &clock};

  JwksFixture() {
    http.Set(
        discovery, 200,
        json{{"issuer", kIssuer}, {"jwks_uri", jwks_uri}, {"claims_supported", {"sub"}}}.dump());
    Publish({{"k1", k1.get()}});
  }
  void Publish(const std::vector<std::pair<std::string, crypto::SigningKey*>>& keys,
               json extra = json::array()) {
    json list = extra;
    for (const auto& [kid, key] : keys) {
      json jwk = key->PublicJwk();
      jwk["kid"] = kid;
      list.push_back(jwk);
    }
    http.Set(jwks_uri, 200, json{{"keys", list}}.dump());
  }
  Result<std::shared_ptr<const crypto::VerifyKey>> Find(const std::string& kid,
                                                        const std::string& alg = "RS256") {
    return cache.Find(KeyQuery{kIssuer, false, kid, alg});
  }
};

TEST_CASE("JwksCache: discovery, then JWKS, then served from the cache") {
  JwksFixture f;
  auto k = f.Find("k1");
  REQUIRE_MESSAGE(k, (k ? "" : k.error().ToString()));
  CHECK(f.http.Requests() == std::vector<std::string>{f.discovery, f.jwks_uri});
  for (int i = 0; i < 5; ++i) {
    REQUIRE(f.Find("k1"));
  }
  CHECK(f.http.Calls(f.jwks_uri) == 1);
  CHECK(f.cache.CountersFor(kIssuer).discovery_fetches == 1);
  CHECK(f.cache.CountersFor(kIssuer).jwks_fetches == 1);
  // The key verifies what k1 signs.
  auto token = f.k1->SignJwt({{"kid", "k1"}}, {{"a", 1}});
  REQUIRE(token);
  CHECK(crypto::VerifyJws(*token, **k));
  // A trailing slash on the issuer is removed before appending (OIDC Discovery §4).
  f.http.Set("https://i.example/.well-known/openid-configuration", 200,
             json{{"issuer", "https://i.example/"}, {"jwks_uri", f.jwks_uri}}.dump());
  CHECK(f.cache.Find(KeyQuery{"https://i.example/", false, "k1", "RS256"}));
}

TEST_CASE("JwksCache: an unknown kid refreshes at most once per cooldown") {
  JwksFixture f;
  REQUIRE(f.Find("k1"));
  // A storm of made-up kids: one refresh, then refused without fetching.
  for (int i = 0; i < 50; ++i) {
    auto r = f.Find("random-" + std::to_string(i));
    REQUIRE_FALSE(r);
    CHECK(r.error().Reason() == "unknown_key");
  }
  CHECK(f.http.Calls(f.jwks_uri) == 1);  // the first fetch was less than 30 s ago
  f.clock.Advance(std::chrono::seconds(31));
  CHECK_FALSE(f.Find("random-x"));
  CHECK(f.http.Calls(f.jwks_uri) == 2);
  for (int i = 0; i < 20; ++i) {
    CHECK_FALSE(f.Find("random-y"));
  }
  CHECK(f.http.Calls(f.jwks_uri) == 2);

  SUBCASE("key rotation: the new kid is picked up after the cooldown") {
    f.Publish({{"k1", f.k1.get()}, {"k2", f.k2.get()}});
    CHECK_FALSE(f.Find("k2"));  // within the cooldown of the last refresh
    f.clock.Advance(std::chrono::seconds(30));
    auto k2 = f.Find("k2");
    REQUIRE(k2);
    CHECK(f.http.Calls(f.jwks_uri) == 3);
    CHECK(f.Find("k1"));  // the old key stays while published
    // Rotated out, and the cache is refreshed: k1 is gone.
    f.Publish({{"k2", f.k2.get()}});
    f.clock.Advance(std::chrono::minutes(11));
    CHECK_FALSE(f.Find("k1"));
    CHECK(f.Find("k2"));
  }
}

TEST_CASE("JwksCache: keys older than max_age are refreshed; failures keep the old keys") {
  JwksFixture f;
  REQUIRE(f.Find("k1"));
  f.clock.Advance(std::chrono::minutes(9));
  REQUIRE(f.Find("k1"));
  CHECK(f.http.Calls(f.jwks_uri) == 1);
  f.clock.Advance(std::chrono::minutes(2));
  REQUIRE(f.Find("k1"));
  CHECK(f.http.Calls(f.jwks_uri) == 2);
  // The issuer goes down: the cached key keeps working (stale) and the
  // issuer is not hammered.
  f.http.Set(f.jwks_uri, 503, "down");
  f.clock.Advance(std::chrono::minutes(11));
  CHECK(f.Find("k1"));
  CHECK(f.cache.CountersFor(kIssuer).failed_refreshes == 1);
  const int calls = f.http.Calls(f.jwks_uri) + f.http.Calls(f.discovery);
  for (int i = 0; i < 10; ++i) {
    CHECK(f.Find("k1"));
  }
  CHECK(f.http.Calls(f.jwks_uri) + f.http.Calls(f.discovery) == calls);
  // But not forever.
  f.clock.Advance(std::chrono::hours(25));
  auto gone = f.Find("k1");
  REQUIRE_FALSE(gone);
  CHECK(gone.error().code == ErrorCode::kUnavailable);
  CHECK(gone.error().Reason() == "issuer_unavailable");
}

TEST_CASE("JwksCache: hostile or broken issuers") {
  JwksFixture f;
  auto fails = [&](const char* what) {
    CAPTURE(what);
    JwksCache fresh(&f.http, &f.clock);
    auto r = fresh.Find(KeyQuery{kIssuer, false, "k1", "RS256"});
    REQUIRE_FALSE(r);
    CHECK(r.error().code == ErrorCode::kUnavailable);
    CHECK(r.error().message.find("cannot be fetched") != std::string::npos);
    return r.error().detail;
  };
  SUBCASE("discovery names another issuer") {
    f.http.Set(f.discovery, 200,
               json{{"issuer", "https://evil.example"}, {"jwks_uri", f.jwks_uri}}.dump());
    CHECK(fails("issuer").find("another issuer") != std::string::npos);
  }
  SUBCASE("jwks_uri over plain http, or with userinfo") {
    f.http.Set(f.discovery, 200,
               json{{"issuer", kIssuer}, {"jwks_uri", "http://169.254.169.254/keys"}}.dump());
    CHECK(fails("http").find("jwks_uri is refused") != std::string::npos);
    f.http.Set(f.discovery, 200,
               json{{"issuer", kIssuer}, {"jwks_uri", "https://u@evil.example/keys"}}.dump());
    CHECK(fails("userinfo").find("jwks_uri is refused") != std::string::npos);
  }
  SUBCASE("a redirect is not followed") {
    f.http.Set(f.discovery, 302, "");
    CHECK(fails("redirect").find("HTTP 302") != std::string::npos);
  }
  SUBCASE("oversized documents") {
    f.http.Set(f.jwks_uri, 200, std::string(200 * 1024, ' ') + "{}");
    CHECK(fails("size").find("exceeds") != std::string::npos);
  }
  SUBCASE("malformed JWKS, duplicate keys, too many keys, no usable key") {
    f.http.Set(f.jwks_uri, 200, "{\"keys\": 5}");
    fails("not an array");
    f.http.Set(f.jwks_uri, 200, "{\"keys\": [], \"keys\": []}");
    fails("duplicate");
    json many = json::array();
    for (int i = 0; i < 101; ++i) {
      many.push_back(json{{"kty", "oct"}, {"k", "AAAA"}});
    }
    f.http.Set(f.jwks_uri, 200, json{{"keys", many}}.dump());
    CHECK(fails("too many").find("more than 100") != std::string::npos);
    f.http.Set(
        f.jwks_uri, 200,
        json{{"keys",
              {{{"kty", "oct"}, {"k", "AAAA"}}, {{"kty", "RSA"}, {"n", "AQAB"}, {"e", "AQAB"}}}}}
            .dump());
    CHECK(fails("unusable").find("no usable signature key") != std::string::npos);
  }
  SUBCASE("the issuer cannot be reached") {
    f.http.Remove(f.discovery);
    fails("unreachable");
  }
  SUBCASE("documents go through the strict parser: no byte order mark, no duplicates") {
    f.http.Set(f.discovery, 200,
               "\xEF\xBB\xBF" + json{{"issuer", kIssuer}, {"jwks_uri", f.jwks_uri}}.dump());
    CHECK(fails("bom").find("byte order mark") != std::string::npos);
    f.http.Set(f.discovery, 200,
               R"({"issuer":")" + std::string(kIssuer) + R"(","jwks_uri":")" + f.jwks_uri +
                   R"(","jwks_uri":"https://evil.example/jwks"})");
    CHECK(fails("two jwks_uri").find("duplicate key \"jwks_uri\"") != std::string::npos);
  }
}

TEST_CASE("JwksCache: key selection by kid and algorithm") {
  JwksFixture f;
  json enc = f.k2->PublicJwk();
  enc["kid"] = "enc";
  enc["use"] = "enc";
  f.Publish({{"k1", f.k1.get()}, {"ec", f.ec.get()}}, json::array({enc}));
  CHECK(f.Find("k1"));
  CHECK(f.Find("ec", "ES256"));
  // The kid exists but is of another key type: not a match.
  CHECK(f.Find("k1", "ES256").error().Reason() == "unknown_key");
  // Encryption keys are skipped.
  CHECK(f.Find("enc").error().Reason() == "unknown_key");
  // Without kid: fine when exactly one key fits the algorithm.
  CHECK(f.Find("", "ES256"));
  f.Publish({{"a", f.k1.get()}, {"b", f.k2.get()}});
  f.clock.Advance(std::chrono::minutes(11));
  CHECK(f.Find("", "RS256").error().Reason() == "ambiguous_key");
}

TEST_CASE("JwksCache: concurrent lookups share one fetch (single flight)") {
  JwksFixture f;
  f.http.CloseGate();
  std::vector<std::thread> threads;
  std::atomic<int> ok{0};
  for (int i = 0; i < 8; ++i) {
    threads.emplace_back([&] {
      if (f.Find("k1")) {
        ++ok;
      }
    });
  }
  f.http.WaitForWaiters(1);
  std::this_thread::sleep_for(std::chrono::milliseconds(50));
  f.http.OpenGate();
  for (auto& t : threads) {
    t.join();
  }
  CHECK(ok == 8);
  CHECK(f.http.Calls(f.discovery) == 1);
  CHECK(f.http.Calls(f.jwks_uri) == 1);
}

TEST_CASE("JwksCache: an unknown kid fails fast while a slow refresh runs; a stale key waits") {
  JwksFixture f;
  REQUIRE(f.Find("k1"));
  // The keys go stale: the next lookup of k1 refreshes, and the issuer is slow.
  f.clock.Advance(std::chrono::minutes(11));
  f.Publish({{"k1", f.k1.get()}, {"k2", f.k2.get()}});
  f.http.CloseGate();
  std::atomic<bool> refreshed{false};
  std::thread refresher([&] { refreshed = f.Find("k1").has_value(); });
  f.http.WaitForWaiters(1);  // the refresh is in flight, held by the issuer
  // A made-up kid does not wait for it (that would hold a request thread for
  // as long as the issuer takes, up to 11 s here).
  const auto start = std::chrono::steady_clock::now();
  auto r = f.Find("made-up-kid");
  const auto waited = std::chrono::steady_clock::now() - start;
  REQUIRE_FALSE(r);
  CHECK(r.error().Reason() == "unknown_key");
  CHECK(waited < std::chrono::seconds(2));
  // A stale key does wait, and gets the refreshed set without a second fetch.
  std::atomic<bool> stale_ok{false};
  std::thread stale([&] { stale_ok = f.Find("k1").has_value(); });
  std::this_thread::sleep_for(std::chrono::milliseconds(100));
  f.http.OpenGate();
  refresher.join();
  stale.join();
  CHECK(refreshed);
  CHECK(stale_ok);
  CHECK(f.http.Calls(f.jwks_uri) == 2);
  // k2 came with the refresh.
  CHECK(f.Find("k2"));
}

TEST_CASE("JwksCache + verifier: a storm of unknown kids costs the issuer one request") {
  JwksFixture f;
  TrustPolicy p = Policy();
  const int64_t t0 = ToUnixSeconds(f.clock.Now());
  auto token = f.k1->SignJwt({{"kid", "k1"}}, Claims(t0));
  REQUIRE(token);
  REQUIRE(Verify(*token, p, f.cache, f.clock.Now()));
  for (int i = 0; i < 100; ++i) {
    auto forged = f.k2->SignJwt({{"kid", "kid-" + std::to_string(i)}}, Claims(t0));
    REQUIRE(forged);
    auto r = Verify(*forged, p, f.cache, f.clock.Now());
    REQUIRE_FALSE(r);
    CHECK(r.error().Reason() == "unknown_key");
  }
  CHECK(f.http.Calls(f.jwks_uri) == 1);
}

// ---------------------------------------------------------------------------
// Replay cache

TEST_CASE("ReplayCache: each (issuer, jti) once until it expires") {
  ReplayCache cache(3);
  const TimePoint t0 = FromUnixSeconds(1795000000);
  const std::string a = ReplayKey("iss", "a");
  CHECK(cache.Reserve(a, t0 + Seconds(60), t0));
  auto again = cache.Reserve(a, t0 + Seconds(60), t0 + Seconds(1));
  REQUIRE_FALSE(again);
  CHECK(again.error().Reason() == "token_replayed");
  // The key names no policy: the same token is the same key whichever
  // policy it is exchanged under. Another issuer is another key; the length
  // prefix keeps keys unambiguous.
  CHECK(ReplayKey("issa", "") != ReplayKey("iss", "aa"));
  CHECK(ReplayKey("iss", "a") == a);
  CHECK(cache.Reserve(ReplayKey("iss2", "a"), t0 + Seconds(60), t0));
  // Release (failed exchange): the token may be retried.
  cache.Release(a);
  CHECK(cache.Reserve(a, t0 + Seconds(60), t0 + Seconds(2)));
  // Full of unexpired entries: fail closed.
  CHECK(cache.Reserve(ReplayKey("iss3", "a"), t0 + Seconds(60), t0));
  auto full = cache.Reserve(ReplayKey("iss4", "a"), t0 + Seconds(60), t0);
  REQUIRE_FALSE(full);
  CHECK(full.error().Reason() == "replay_cache_full");
  // Expired entries make room and may be used again.
  CHECK(cache.Reserve(ReplayKey("iss4", "a"), t0 + Seconds(200), t0 + Seconds(61)));
  CHECK(cache.size() == 1);
  CHECK(cache.Reserve(a, t0 + Seconds(200), t0 + Seconds(61)));
}

}  // namespace
}  // namespace jitbroker::oidc
