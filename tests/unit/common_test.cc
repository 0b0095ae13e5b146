#include <doctest/doctest.h>

#include <set>
#include <sstream>

#include "broker/audit/events.h"
#include "broker/authn/authn.h"
#include "broker/common/json_util.h"
#include "broker/common/time_util.h"
#include "broker/service/request_digest.h"
#include "jitbroker/error.h"

namespace jitbroker {
namespace {

TEST_CASE("Error: every code maps to an HTTP status, a reason and a title") {
  std::set<std::string_view> names;
  for (ErrorCode c : kAllErrorCodes) {
    const ErrorCodeInfo& info = InfoFor(c);
    CHECK(info.http_status >= 400);
    CHECK(info.http_status < 600);
    CHECK_FALSE(info.default_reason.empty());
    CHECK_FALSE(info.title.empty());
    CHECK(names.insert(ErrorCodeName(c)).second);
  }
  CHECK(InfoFor(ErrorCode::kInvalidArgument).http_status == 400);
  CHECK(InfoFor(ErrorCode::kUnauthenticated).http_status == 401);
  CHECK(InfoFor(ErrorCode::kPermissionDenied).http_status == 403);
  CHECK(InfoFor(ErrorCode::kNotFound).http_status == 404);
  CHECK(InfoFor(ErrorCode::kPayloadTooLarge).http_status == 413);
  CHECK(InfoFor(ErrorCode::kUnsupportedMediaType).http_status == 415);
  CHECK(InfoFor(ErrorCode::kUnavailable).http_status == 503);
  Error e = InvalidArgument("", "m");
  CHECK(e.Reason() == "invalid_request");
}

TEST_CASE("Json: ParseStrict rejects what nlohmann would let through") {
  struct Case {
    std::string text;
    const char* reason;  // nullptr = ok
  } cases[] = {
      {R"({"a":1})", nullptr},
      {R"({"a":{"b":1,"c":[1,2,{"d":null}]}})", nullptr},
      {R"({"a":1,"a":2})", "duplicate_key"},
      {R"({"x":{"a":1,"a":2}})", "duplicate_key"},
      {R"({"x":{"a":1},"y":{"a":1}})", nullptr},
      {R"({"a":)", "invalid_json"},
      {"", "invalid_json"},
      {"{\"a\":\"\xc3\x28\"}", "invalid_utf8"},
      {"{\"a\":\"\xed\xa0\x80\"}", "invalid_utf8"},  // surrogate
      {"{\"a\":\"\xc0\xaf\"}", "invalid_utf8"},      // overlong
      {"{\"a\":\"\xe2\x82\xac\"}", nullptr},         // euro sign
      {std::string(40, '[') + std::string(40, ']'), "too_deep"},
  };
  for (const auto& c : cases) {
    CAPTURE(c.text);
    auto r = json::ParseStrict(c.text);
    if (c.reason == nullptr) {
      CHECK(r.has_value());
    } else {
      REQUIRE_FALSE(r.has_value());
      CHECK(r.error().Reason() == c.reason);
      CHECK(r.error().code == ErrorCode::kInvalidArgument);
    }
  }
}

TEST_CASE("Json: JsonReader enforces types, ranges and known fields") {
  auto j = nlohmann::json::parse(R"({"s":"x","n":5,"o":{},"extra":1})");
  auto r = json::JsonReader::Open(j, "body");
  REQUIRE(r.has_value());
  CHECK(*r->String("s") == "x");
  CHECK(r->OptInt("n", 1, 10)->value() == 5);
  CHECK(r->OptInt("n", 6, 10).error().Reason() == "invalid_value");
  CHECK(r->String("n").error().Reason() == "invalid_type");
  CHECK(r->String("missing").error().Reason() == "missing_field");
  CHECK(r->Object("o").has_value());
  auto fin = r->Finish();
  REQUIRE_FALSE(fin.has_value());
  CHECK(fin.error().Reason() == "unknown_field");
  CHECK(fin.error().message.find("body.extra") != std::string::npos);
}

TEST_CASE("Time: an HTTP date beyond the years a TimePoint holds is refused, not overflowed") {
  // Found by fuzz/time_fuzz.cc: an upstream's Date header of year 9591 made
  // FromUnixSeconds overflow (undefined behaviour) in the clock-skew check.
  CHECK_FALSE(ParseHttpDate("Sun, 06 Nov 9591 08:49:37 GMT").has_value());
  CHECK_FALSE(ParseHttpDate("Mon, 01 Jan 1600 00:00:00 GMT").has_value());
  auto late = ParseHttpDate("Fri, 31 Dec 2260 23:59:59 GMT");
  REQUIRE(late.has_value());
  CHECK(ToUnixSeconds(*late) == 9183110399);
}

TEST_CASE("Time: RFC 3339 round trip") {
  const TimePoint t = FromUnixSeconds(1795000000);
  const std::string s = FormatRfc3339(t);
  CHECK(s == "2026-11-18T11:06:40Z");
  CHECK(ParseRfc3339(s) == t);
  CHECK(ParseRfc3339("2026-11-18T12:06:40+01:00") == t);
  CHECK(ParseRfc3339("2026-11-18T11:06:40.123Z") == t);
  CHECK_FALSE(ParseRfc3339("2026-11-18 11:06:40Z").has_value());
  CHECK_FALSE(ParseRfc3339("2026-13-18T11:06:40Z").has_value());
}

TEST_CASE("Authn: bearer parsing and session tokens") {
  CHECK(authn::ParseBearer("").error().Reason() == "missing_credentials");
  CHECK(authn::ParseBearer("Basic abc").error().Reason() == "malformed_authorization");
  CHECK(authn::ParseBearer("Bearer ").error().Reason() == "malformed_authorization");
  CHECK(authn::ParseBearer("Bearer abc")->Reveal() == "abc");

  auto t = authn::MintSessionToken();
  CHECK(t.session_id.rfind("ses_", 0) == 0);
  CHECK(t.token.Reveal().rfind("jbs_" + t.session_id.substr(4) + "_", 0) == 0);
  CHECK(authn::VerifySessionToken(t.token, t.token_sha256));
  auto other = authn::MintSessionToken();
  CHECK_FALSE(authn::VerifySessionToken(other.token, t.token_sha256));

  auto policy = std::make_shared<Policy>();
  auto caller = authn::Identify(t.token.Clone(), policy);
  REQUIRE(caller.has_value());
  CHECK(caller->IsSession());
  CHECK(caller->session_id == t.session_id);
  CHECK(authn::Identify(SecretValue("jbs_bad"), policy).error().Reason() == "invalid_credentials");
  CHECK(authn::Identify(SecretValue("jbs__x"), policy).error().Reason() == "invalid_credentials");
  CHECK(authn::Identify(SecretValue("jbk_unknown"), policy).error().Reason() ==
        "invalid_credentials");
}

TEST_CASE("SecretValue: formats as [redacted] and wipes on move") {
  SecretValue s("hunter2");
  std::ostringstream os;
  os << s;
  CHECK(os.str() == "[redacted]");
  SecretValue t = std::move(s);
  CHECK(t.Reveal() == "hunter2");
  CHECK(s.empty());  // NOLINT(bugprone-use-after-move): checking the wipe
}

TEST_CASE("Audit events: secret-like parameters are redacted at any depth") {
  struct Case {
    const char* key;
    bool secret;
  } keys[] = {{"password", true},   {"api_token", true},     {"accessKey", true},
              {"ssh_key", true},    {"Authorization", true}, {"client_secret", true},
              {"privateKey", true}, {"session_token", true}, {"query", false},
              {"keyword", false},   {"monkey", false},       {"branch", false},
              {"pull", false},      {"command", false}};
  for (const auto& k : keys) {
    CAPTURE(k.key);
    CHECK(audit::IsSecretLikeKey(k.key) == k.secret);
  }
  auto p = nlohmann::json::parse(
      R"({"query":"q","nested":{"password":"p","list":[{"token":"t","ok":1}]},"ratio":0.5})");
  auto r = audit::RedactParameters(p);
  CHECK(r["query"] == "q");
  CHECK(r["nested"]["password"] == "[redacted]");
  CHECK(r["nested"]["list"][0]["token"] == "[redacted]");
  CHECK(r["nested"]["list"][0]["ok"] == 1);
  CHECK(r["ratio"].is_string());  // no floats in the chain
}

TEST_CASE("Request digest: canonical form is sorted, compact and documented") {
  GrantRequest req;
  req.tool = "github.merge_pull_request";
  req.operation = "merge";
  req.resource = "github://acme/payment-service/pull/842";
  req.issuer = "github";
  req.parameters = nlohmann::json::parse(R"({"pull":842,"base":"main"})");
  req.scope = nlohmann::json::parse(R"({"permissions":{"contents":"write"}})");
  CHECK(
      service::CanonicalRequestJson("ses_1", req) ==
      R"({"issuer":"github","operation":"merge","parameters":{"base":"main","pull":842},)"
      R"("resource":"github://acme/payment-service/pull/842","scope":{"permissions":{"contents":"write"}},)"
      R"("session_id":"ses_1","tool":"github.merge_pull_request","ttl_seconds":null})");
  const std::string d1 = service::RequestDigest("ses_1", req);
  CHECK(d1.size() == 64);
  req.ttl_seconds = 300;
  CHECK(service::RequestDigest("ses_1", req) != d1);
  CHECK(service::RequestDigest("ses_2", req) != service::RequestDigest("ses_1", req));
}

}  // namespace
}  // namespace jitbroker
