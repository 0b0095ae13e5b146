// The one strict JSON parser (json::ParseStrict) and the callers that now
// share it: JOSE segments and jitctl.
#include <string>
#include <string_view>
#include <vector>

#include <doctest/doctest.h>
#include <nlohmann/json.hpp>

#include "broker/common/json_util.h"
#include "broker/crypto/crypto.h"
#include "broker/crypto/jose.h"
#include "cli/format.h"

namespace jitbroker {
namespace {

std::string Nested(int levels) {
  return std::string(static_cast<size_t>(levels), '[') +
         std::string(static_cast<size_t>(levels), ']');
}

TEST_CASE("Json: ParseStrict, table of hostile and ordinary documents") {
  struct Case {
    std::string text;
    const char* reason;  // nullptr = accepted
  };
  const std::vector<Case> cases = {
      {"{}", nullptr},
      {"[]", nullptr},
      {"1", nullptr},
      {"\"s\"", nullptr},
      {"null", nullptr},
      {" \t\r\n{\"a\":[1,2.5,-3e2,true,false,null]} ", nullptr},
      {R"({"a":{"k":1},"b":{"k":2}})", nullptr},
      {R"([{"k":1},{"k":2}])", nullptr},
      {R"({"a":"\u00e9\ud83d\ude00"})", nullptr},
      // Duplicate keys at any depth, also when spelled differently.
      {R"({"a":1,"a":2})", "duplicate_key"},
      {R"({"alg":"none","alg":"ES256"})", "duplicate_key"},
      {R"({"a":1,"\u0061":2})", "duplicate_key"},
      {R"({"x":{"k":1,"k":1}})", "duplicate_key"},
      {R"([{"k":1},{"k":2,"k":3}])", "duplicate_key"},
      {R"({"":1,"":2})", "duplicate_key"},
      // Not JSON.
      {"", "invalid_json"},
      {"{", "invalid_json"},
      {R"({"a":})", "invalid_json"},
      {R"({"a":1,})", "invalid_json"},
      {R"({"a":1} x)", "invalid_json"},
      {"{\"a\":1/*c*/}", "invalid_json"},
      {"// c\n{}", "invalid_json"},
      {"{'a':1}", "invalid_json"},
      {"NaN", "invalid_json"},
      {"1e400", "invalid_json"},
      {"\xEF\xBB\xBF{}", "invalid_json"},  // a byte order mark
      {"{\"a\":\"\x01\"}", "invalid_json"},
      // Not UTF-8.
      {"{\"a\":\"\xff\"}", "invalid_utf8"},
      {"{\"\xc0\xaf\":1}", "invalid_utf8"},
      {"{\"a\":\"\xed\xa0\x80\"}", "invalid_utf8"},
      // Lone surrogates written as \u escapes: no UTF-8 can carry them.
      {R"({"a":"\ud800"})", "invalid_json"},
      {R"({"a":"\udc00"})", "invalid_json"},
      {R"({"a":"\ud800x"})", "invalid_json"},
      {R"({"a":"\ud800\u0041"})", "invalid_json"},
      {R"({"a":"\ude00\ud83d"})", "invalid_json"},
      {R"({"\udfff":1})", "invalid_json"},
      // Nesting.
      {Nested(30), nullptr},
      {Nested(40), "too_deep"},
      {"{\"a\":" + Nested(100) + "}", "too_deep"},
  };
  for (const Case& c : cases) {
    CAPTURE(c.text);
    auto r = json::ParseStrict(c.text);
    if (c.reason == nullptr) {
      CHECK_MESSAGE(r.has_value(), (r ? "" : r.error().message));
    } else {
      REQUIRE_FALSE(r.has_value());
      CHECK(r.error().Reason() == c.reason);
      CHECK(r.error().code == ErrorCode::kInvalidArgument);
    }
  }
}

TEST_CASE("Json: ParseStrict budgets and wording") {
  json::ParseOptions o;
  o.what = "JWKS";
  o.max_bytes = 10;
  auto big = json::ParseStrict(R"({"a":"12345"})", o);
  REQUIRE_FALSE(big.has_value());
  CHECK(big.error().Reason() == "too_large");
  CHECK(big.error().message == "JWKS exceeds 10 bytes");
  CHECK(json::ParseStrict(R"({"a":"1"})", o).has_value());

  auto dup = json::ParseStrict(R"({"keys":[],"keys":[]})", json::ParseOptions{.what = "JWKS"});
  REQUIRE_FALSE(dup.has_value());
  CHECK(dup.error().message == "JWKS has a duplicate key \"keys\"");

  // The depth budget is the one every caller had: nlohmann's depth of the
  // deepest value.
  json::ParseOptions shallow;
  shallow.max_depth = 2;
  CHECK(json::ParseStrict("[[1]]", shallow).has_value());
  CHECK(json::ParseStrict(R"({"a":{"b":1}})", shallow).has_value());
  CHECK(json::ParseStrict("[[[1]]]", shallow).error().Reason() == "too_deep");
  CHECK(json::ParseStrict(R"({"a":{"b":{"c":1}}})", shallow).error().Reason() == "too_deep");
  // An empty innermost container is a level too (found by fuzz/json_fuzz.cc:
  // "[[[[[[[[[]]]]]]]]]" passed a bound of 8).
  CHECK(json::ParseStrict("[[]]", shallow).has_value());
  CHECK(json::ParseStrict("[[[]]]", shallow).error().Reason() == "too_deep");
  CHECK(json::ParseStrict(R"({"a":{"b":{}}})", shallow).error().Reason() == "too_deep");
  CHECK(json::ParseStrict(std::string(9, '[') + std::string(9, ']'),
                          json::ParseOptions{.max_depth = 8})
            .error()
            .Reason() == "too_deep");

  // Request bodies keep their wording.
  auto body = json::ParseStrict("{");
  REQUIRE_FALSE(body.has_value());
  CHECK(body.error().message.starts_with("request body is not valid JSON"));
}

// The JOSE path parses its header and payload with ParseStrict: duplicate
// members (two "alg", two "sub" or "exp") are refused before any signature
// or claim check, as are a byte order mark and deep nesting.
TEST_CASE("Json: JOSE segments go through the strict parser") {
  auto compact = [](std::string_view header, std::string_view payload) {
    return crypto::Base64UrlEncode(header) + "." + crypto::Base64UrlEncode(payload) + "." +
           crypto::Base64UrlEncode("signature");
  };
  const std::string ok_payload = R"({"sub":"a","exp":2000000000})";
  REQUIRE(crypto::DecodeJws(compact(R"({"alg":"ES256"})", ok_payload)).has_value());
  struct Case {
    std::string header;
    std::string payload;
    const char* message;
  };
  const std::vector<Case> cases = {
      {R"({"alg":"ES256","alg":"none"})", ok_payload, "JWS segment has duplicate keys"},
      {R"({"alg":"ES256"})", R"({"sub":"a","sub":"admin"})", "JWS segment has duplicate keys"},
      {R"({"alg":"ES256"})", R"({"exp":1,"exp":2000000000})", "JWS segment has duplicate keys"},
      {R"({"alg":"ES256"})", R"({"aud":[{"x":1,"\u0078":2}]})", "JWS segment has duplicate keys"},
      {"\xEF\xBB\xBF{\"alg\":\"ES256\"}", ok_payload, "JWS segment has a byte order mark"},
      {R"({"alg":"ES256"})", "\xEF\xBB\xBF" + ok_payload, "JWS segment has a byte order mark"},
      {R"({"alg":"ES256"})", "{\"a\":" + Nested(40) + "}", "JWS segment is nested too deeply"},
      {R"({"alg":"ES256"})", "{\"a\":\"\xff\"}", "JWS segment is not valid JSON"},
      {R"({"alg":"ES256"} x)", ok_payload, "JWS segment is not valid JSON"},
      {"[]", ok_payload, "JWS segment is not a JSON object"},
  };
  for (const Case& c : cases) {
    CAPTURE(c.header);
    CAPTURE(c.payload);
    auto r = crypto::DecodeJws(compact(c.header, c.payload));
    REQUIRE_FALSE(r.has_value());
    CHECK(r.error().Reason() == "malformed_jws");
    CHECK(r.error().message == c.message);
  }
}

TEST_CASE("Json: jitctl's ParseJsonStrict is ParseStrict with the client's budget") {
  using cli::ParseJsonStrict;
  CHECK(ParseJsonStrict(R"({"a":1,"b":{"c":[1,2]}})").has_value());
  // Answers may nest a stored request body (32 levels) a few levels deep.
  CHECK(ParseJsonStrict(Nested(100)).has_value());
  auto deep = ParseJsonStrict(Nested(200));
  REQUIRE_FALSE(deep.has_value());
  CHECK(deep.error().find("deeper than 128") != std::string::npos);
  auto dup = ParseJsonStrict(R"({"k":1,"k":2})");
  REQUIRE_FALSE(dup.has_value());
  CHECK(dup.error().find("duplicate key \"k\"") != std::string::npos);
  // The key is shown on a terminal: control characters are neutralised.
  auto esc = ParseJsonStrict(R"({"\u001b[2J":1,"\u001b[2J":2})");
  REQUIRE_FALSE(esc.has_value());
  CHECK(esc.error().find('\x1b') == std::string::npos);
  CHECK(ParseJsonStrict("{").error() == "invalid JSON");
  CHECK(ParseJsonStrict("\xEF\xBB\xBF{}").error() == "invalid JSON");
  CHECK(ParseJsonStrict("{\"a\":\"\xff\"}").error().find("UTF-8") != std::string::npos);
  // Many distinct keys are fine (and no longer compared pairwise).
  nlohmann::json wide = nlohmann::json::object();
  for (int i = 0; i < 20000; ++i) {
    wide["k" + std::to_string(i)] = i;
  }
  CHECK(ParseJsonStrict(wide.dump()).has_value());
}

}  // namespace
}  // namespace jitbroker
