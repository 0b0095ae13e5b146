#include "tests/conformance/issuer_conformance.h"

#include <algorithm>
#include <atomic>
#include <filesystem>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include <doctest/doctest.h>
#include <nlohmann/json.hpp>

#include "broker/crypto/crypto.h"
#include "tests/support/temp_dir.h"

namespace jitbroker::testing {

namespace {

using nlohmann::json;

bool IsLowerHex64(std::string_view s) {
  return s.size() == 64 && std::all_of(s.begin(), s.end(), [](char c) {
           return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f');
         });
}

// A refusal the client can act on: the right category, a specific reason
// and a message.
void CheckPreciseRefusal(const Error& e, const std::string& what) {
  CAPTURE(what);
  CAPTURE(e.ToString());
  CHECK((e.code == ErrorCode::kInvalidArgument || e.code == ErrorCode::kPermissionDenied));
  CHECK_FALSE(e.reason.empty());
  CHECK_FALSE(e.message.empty());
}

// Same answer (value or error reason) from the issuer and its spec.
template <class T>
void CheckSameAnswer(const Result<T>& a, const Result<T>& b, const std::string& what) {
  CAPTURE(what);
  REQUIRE(a.has_value() == b.has_value());
  if (a.has_value()) {
    CHECK(*a == *b);
  } else {
    CHECK(a.error().code == b.error().code);
    CHECK(a.error().Reason() == b.error().Reason());
  }
}

void CheckSameStatus(const Status& a, const Status& b, const std::string& what) {
  CAPTURE(what);
  REQUIRE(a.has_value() == b.has_value());
  if (!a.has_value()) {
    CHECK(a.error().Reason() == b.error().Reason());
  }
}

MintRequest MintFor(const IssuerConformanceCase& c, const IssuerUnderTest& u,
                    const std::string& grant_id, Tier tier) {
  const IssuerDescription& d = u.issuer->Describe();
  MintRequest mr;
  mr.grant_id = grant_id;
  mr.session_id = "ses_conformance";
  mr.task_id = "task_conformance";
  mr.principal_id = "user_conformance";
  mr.agent_id = "agent_conformance";
  mr.request = c.valid;
  mr.tier = tier;
  mr.ttl_seconds = std::clamp<int64_t>(120, d.min_ttl_seconds, d.max_ttl_seconds);
  mr.now = u.clock->Now();
  return mr;
}

// Requests every issuer must refuse: a scope of the wrong JSON type, or with
// a key no issuer knows.
std::vector<std::pair<std::string, GrantRequest>> MustRefuse(const IssuerConformanceCase& c) {
  std::vector<std::pair<std::string, GrantRequest>> out = c.invalid;
  auto with_scope = [&](std::string name, json scope) {
    GrantRequest r = c.valid;
    r.scope = std::move(scope);
    out.emplace_back(std::move(name), std::move(r));
  };
  with_scope("scope is an array", json::array({1, 2}));
  with_scope("scope is a string", "contents:write");
  with_scope("scope is a number", 42);
  json unknown = c.valid.scope.is_object() ? c.valid.scope : json::object();
  unknown["jb_conformance_unknown_key"] = true;
  with_scope("scope has an unknown key", unknown);
  return out;
}

// Requests an issuer may accept or refuse, but must answer without throwing
// and, if it refuses, precisely.
std::vector<std::pair<std::string, GrantRequest>> MustNotCrash(const IssuerConformanceCase& c) {
  std::vector<std::pair<std::string, GrantRequest>> out;
  auto add = [&](std::string name, auto change) {
    GrantRequest r = c.valid;
    change(r);
    out.emplace_back(std::move(name), std::move(r));
  };
  add("empty resource", [](GrantRequest& r) { r.resource.clear(); });
  add("resource without a scheme", [](GrantRequest& r) { r.resource = "acme/payment-service"; });
  add("resource with controls and UTF-8",
      [](GrantRequest& r) { r.resource += std::string("\n\r\t\x01\xc3\xa9\xff\0", 8); });
  add("huge resource", [](GrantRequest& r) { r.resource += std::string(100000, 'a'); });
  add("resource with a trailing slash", [](GrantRequest& r) { r.resource += "/"; });
  add("null scope", [](GrantRequest& r) { r.scope = nullptr; });
  add("empty scope", [](GrantRequest& r) { r.scope = json::object(); });
  add("empty operation", [](GrantRequest& r) { r.operation.clear(); });
  if (c.valid.scope.is_object()) {
    for (auto it = c.valid.scope.begin(); it != c.valid.scope.end(); ++it) {
      const std::string key = it.key();
      for (const json& odd :
           {json(nullptr), json(12345), json(-1.5), json(true), json::array(), json::object(),
            json(std::string(70000, 'x')), json::array({json::array({json::object({{"a", 1}})})}),
            json::object({{"read", json::array({1})}})}) {
        add("scope." + key + " = " + odd.dump().substr(0, 40),
            [&](GrantRequest& r) { r.scope[key] = odd; });
      }
    }
  }
  return out;
}

// No secret of the case in what an error says.
void CheckNoSecret(const IssuerConformanceCase& c, const Error& e) {
  const std::string all = e.ToString() + "\n" + e.message + "\n" + e.detail;
  for (const std::string& secret : c.secrets) {
    CAPTURE(secret);
    CHECK(all.find(secret) == std::string::npos);
  }
}

std::optional<std::string> TokenSecret(const MintResult& m) {
  for (const auto& [name, value] : m.secrets) {
    if (name == "token") {
      return std::string(value.Reveal());
    }
  }
  return std::nullopt;
}

}  // namespace

void RunIssuerConformance(const IssuerConformanceCase& c) {
  INFO("issuer conformance: " << c.name);
  REQUIRE(c.make);

  SUBCASE("Describe is well-formed and the spec agrees with the issuer") {
    IssuerUnderTest u = c.make();
    REQUIRE(u.issuer != nullptr);
    REQUIRE(u.clock != nullptr);
    const IssuerDescription& d = u.issuer->Describe();
    CHECK_FALSE(d.name.empty());
    CHECK_FALSE(d.type.empty());
    CHECK(d.min_ttl_seconds >= 1);
    CHECK(d.min_ttl_seconds <= d.default_ttl_seconds);
    CHECK(d.default_ttl_seconds <= d.max_ttl_seconds);
    CHECK((d.identity_key.empty() || IsIdentityKey(d.identity_key)));
    // Stable: the same object and values on every call.
    CHECK(&u.issuer->Describe() == &d);
    CHECK(u.issuer->IssuedTokenType().starts_with("urn:"));
    if (u.spec) {
      const IssuerDescription& s = u.spec->Describe();
      CHECK(s.name == d.name);
      CHECK(s.type == d.type);
      CHECK(s.revocability == d.revocability);
      CHECK(s.min_ttl_seconds == d.min_ttl_seconds);
      CHECK(s.default_ttl_seconds == d.default_ttl_seconds);
      CHECK(s.max_ttl_seconds == d.max_ttl_seconds);
      CHECK(s.mints_upstream == d.mints_upstream);
      CHECK(s.identity_key == d.identity_key);
      CHECK(u.spec->IssuedTokenType() == u.issuer->IssuedTokenType());
      std::vector<std::pair<std::string, GrantRequest>> all = MustRefuse(c);
      for (auto& extra : MustNotCrash(c)) {
        all.push_back(std::move(extra));
      }
      all.emplace_back("the valid request", c.valid);
      for (const auto& [what, req] : all) {
        CheckSameAnswer(u.issuer->ImpliedTier(req), u.spec->ImpliedTier(req), what);
        CheckSameAnswer(u.issuer->ScopeItems(req), u.spec->ScopeItems(req), what);
      }
      CheckSameStatus(u.issuer->CheckTrustGrant(c.valid), u.spec->CheckTrustGrant(c.valid),
                      "trust grant");
      for (const std::string& tok : c.narrowing_tokens) {
        auto a = u.issuer->NarrowScope(c.valid, std::vector<std::string>{tok});
        auto b = u.spec->NarrowScope(c.valid, std::vector<std::string>{tok});
        REQUIRE(a.has_value() == b.has_value());
        if (a) {
          CHECK(a->scope == b->scope);
          CHECK(a->scope_text == b->scope_text);
        }
      }
    }
  }

  SUBCASE("the valid request is accepted, repeatably") {
    IssuerUnderTest u = c.make();
    auto tier = u.issuer->ImpliedTier(c.valid);
    REQUIRE_MESSAGE(tier.has_value(), (tier ? "" : tier.error().ToString()));
    auto items = u.issuer->ScopeItems(c.valid);
    REQUIRE_MESSAGE(items.has_value(), (items ? "" : items.error().ToString()));
    auto tier2 = u.issuer->ImpliedTier(c.valid);
    REQUIRE(tier2.has_value());
    CHECK(*tier2 == *tier);
    auto items2 = u.issuer->ScopeItems(c.valid);
    REQUIRE(items2.has_value());
    CHECK(*items2 == *items);
  }

  SUBCASE("bad scopes are refused precisely and nothing crashes") {
    IssuerUnderTest u = c.make();
    for (const auto& [what, req] : MustRefuse(c)) {
      CAPTURE(what);
      Result<Tier> tier = std::unexpected(Internal("not called"));
      CHECK_NOTHROW(tier = u.issuer->ImpliedTier(req));
      REQUIRE_FALSE(tier.has_value());
      CheckPreciseRefusal(tier.error(), what);
      Result<std::vector<std::string>> items = std::vector<std::string>{};
      CHECK_NOTHROW(items = u.issuer->ScopeItems(req));
      REQUIRE_FALSE(items.has_value());
      CheckPreciseRefusal(items.error(), what);
    }
    for (const auto& [what, req] : MustNotCrash(c)) {
      CAPTURE(what);
      Result<Tier> tier = std::unexpected(Internal("not called"));
      CHECK_NOTHROW(tier = u.issuer->ImpliedTier(req));
      Result<std::vector<std::string>> items = std::vector<std::string>{};
      CHECK_NOTHROW(items = u.issuer->ScopeItems(req));
      if (!tier) {
        CheckPreciseRefusal(tier.error(), what);
        // What ImpliedTier refuses, ScopeItems refuses too.
        CHECK_FALSE(items.has_value());
      }
      if (!items) {
        CheckPreciseRefusal(items.error(), what);
      }
      Status trust = OkStatus();
      CHECK_NOTHROW(trust = u.issuer->CheckTrustGrant(req));
    }
  }

  SUBCASE("Mint returns a typed credential within the TTL") {
    IssuerUnderTest u = c.make();
    auto tier = u.issuer->ImpliedTier(c.valid);
    REQUIRE(tier.has_value());
    const MintRequest mr = MintFor(c, u, "grt_conformance_mint", *tier);
    auto minted = u.issuer->Mint(mr);
    REQUIRE_MESSAGE(minted.has_value(), (minted ? "" : minted.error().ToString()));
    CHECK_FALSE(minted->type.empty());
    REQUIRE_FALSE(minted->secrets.empty());
    const std::string primary(minted->secrets.front().second.Reveal());
    CHECK_FALSE(primary.empty());
    CHECK(IsLowerHex64(minted->fingerprint_sha256));
    CHECK(minted->fingerprint_sha256 == crypto::Sha256Hex(primary));
    CHECK(minted->expires_at > mr.now);
    CHECK(minted->expires_at <= mr.now + std::chrono::seconds(mr.ttl_seconds));
    if (minted->upstream_expires_at) {
      CHECK(*minted->upstream_expires_at > minted->expires_at);
    }
    CHECK(minted->fields.is_object());
    CHECK(minted->audit_fields.is_object());
    CHECK_FALSE(minted->revocation_handle.empty());
    // No secret appears in what is shown or audited.
    for (const auto& [name, value] : minted->secrets) {
      CAPTURE(name);
      const std::string secret(value.Reveal());
      REQUIRE(secret.size() >= 8);
      CHECK(minted->fields.dump().find(secret) == std::string::npos);
      CHECK(minted->audit_fields.dump().find(secret) == std::string::npos);
      CHECK_FALSE(minted->fields.contains(name));
    }
    if (c.credential_active) {
      CHECK(c.credential_active(mr.grant_id, primary));
    }
    // Two mints, two credentials.
    auto again = u.issuer->Mint(MintFor(c, u, "grt_conformance_mint2", *tier));
    REQUIRE(again.has_value());
    CHECK(again->fingerprint_sha256 != minted->fingerprint_sha256);
  }

  SUBCASE("Revoke is idempotent, matches the class and survives sealing") {
    IssuerUnderTest u = c.make();
    auto tier = u.issuer->ImpliedTier(c.valid);
    REQUIRE(tier.has_value());
    const MintRequest mr = MintFor(c, u, "grt_conformance_revoke", *tier);
    auto minted = u.issuer->Mint(mr);
    REQUIRE(minted.has_value());
    const std::string primary(minted->secrets.front().second.Reveal());
    // The service seals the handle (AES-256-GCM, the grant id as AAD) and
    // revokes later with what it unseals: nothing else from the mint.
    const SecretValue seal_key(crypto::RandomBytes(32));
    auto sealed = crypto::Seal(seal_key, minted->revocation_handle.Reveal(), mr.grant_id);
    REQUIRE(sealed.has_value());
    const TimePoint expires_at = minted->expires_at;
    minted = std::unexpected(Internal("dropped"));  // the issuer keeps nothing of it
    auto revoke = [&](TimePoint now) {
      auto handle = crypto::Open(seal_key, *sealed, mr.grant_id);
      REQUIRE(handle.has_value());
      return u.issuer->Revoke(RevokeRequest{mr.grant_id, std::move(*handle), expires_at, now});
    };
    const Revocability cls = u.issuer->Describe().revocability;
    auto check_outcome = [&](const Result<RevokeOutcome>& r) {
      REQUIRE_MESSAGE(r.has_value(), (r ? "" : r.error().ToString()));
      switch (cls) {
        case Revocability::kRevocable:
          CHECK(r->kind == RevokeOutcomeKind::kRevoked);
          break;
        case Revocability::kDenyByCondition:
          CHECK((r->kind == RevokeOutcomeKind::kDenyInstalled ||
                 r->kind == RevokeOutcomeKind::kRevoked));
          break;
        case Revocability::kExpiryOnly:
          CHECK(r->kind == RevokeOutcomeKind::kExpiryOnly);
          CHECK(r->residual_seconds >= 0);
          CHECK(r->residual_seconds <= mr.ttl_seconds);
          break;
      }
    };
    check_outcome(revoke(u.clock->Now()));
    // Revoked, or denied upstream: the credential no longer works (a fake
    // upstream applies a deny at once).
    if (c.credential_active && cls != Revocability::kExpiryOnly) {
      CHECK_FALSE(c.credential_active(mr.grant_id, primary));
    }
    check_outcome(revoke(u.clock->Now()));                        // again: already revoked
    check_outcome(revoke(expires_at + std::chrono::seconds(1)));  // and after expiry
  }

  SUBCASE("own tokens verify; tampered ones and garbage do not") {
    IssuerUnderTest u = c.make();
    auto tier = u.issuer->ImpliedTier(c.valid);
    REQUIRE(tier.has_value());
    const MintRequest mr = MintFor(c, u, "grt_conformance_verify", *tier);
    auto minted = u.issuer->Mint(mr);
    REQUIRE(minted.has_value());
    const std::optional<std::string> token = TokenSecret(*minted);
    for (const char* garbage : {"", "garbage", "a.b.c", "..", "eyJhbGciOiJub25lIn0.e30."}) {
      CAPTURE(garbage);
      CHECK_FALSE(u.issuer->VerifyOwnToken(garbage).has_value());
    }
    if (!c.verifies_own_tokens) {
      CHECK(u.issuer->PublicJwks().empty());
      if (token) {
        CHECK_FALSE(u.issuer->VerifyOwnToken(*token).has_value());
      }
      return;
    }
    REQUIRE(token.has_value());
    const std::vector<json> jwks = u.issuer->PublicJwks();
    REQUIRE_FALSE(jwks.empty());
    for (const json& k : jwks) {
      CHECK(k.contains("kty"));
      CHECK_FALSE(k.contains("d"));  // public keys only
    }
    auto claims = u.issuer->VerifyOwnToken(*token);
    REQUIRE(claims.has_value());
    CHECK((*claims)["jti"] == mr.grant_id);
    // Each part altered in turn (the last character of the signature too).
    for (size_t part = 0; part < 3; ++part) {
      CAPTURE(part);
      std::string bad = *token;
      size_t pos = 0;
      for (size_t i = 0; i < part; ++i) {
        pos = bad.find('.', pos) + 1;
      }
      const size_t end = bad.find('.', pos);
      const size_t at = part == 2 ? bad.size() - 1 : pos + (end - pos) / 2;
      bad[at] = bad[at] == 'A' ? 'B' : 'A';
      CHECK_FALSE(u.issuer->VerifyOwnToken(bad).has_value());
    }
  }

  SUBCASE("CI exchanges: the grant is accepted and narrowing only narrows") {
    IssuerUnderTest u = c.make();
    Status trust = u.issuer->CheckTrustGrant(c.valid);
    REQUIRE_MESSAGE(trust.has_value(), (trust ? "" : trust.error().ToString()));
    const Tier full_tier = *u.issuer->ImpliedTier(c.valid);
    const std::vector<std::string> full_items = *u.issuer->ScopeItems(c.valid);
    auto whole = u.issuer->NarrowScope(c.valid, std::nullopt);
    REQUIRE_MESSAGE(whole.has_value(), (whole ? "" : whole.error().ToString()));
    GrantRequest as_whole = c.valid;
    as_whole.scope = whole->scope;
    auto whole_tier = u.issuer->ImpliedTier(as_whole);
    REQUIRE(whole_tier.has_value());
    CHECK(*whole_tier == full_tier);

    std::vector<std::vector<std::string>> requests;
    for (const std::string& tok : c.narrowing_tokens) {
      requests.push_back({tok});
    }
    if (!c.narrowing_tokens.empty()) {
      requests.push_back(c.narrowing_tokens);
    }
    for (const std::vector<std::string>& tokens : requests) {
      CAPTURE(tokens.front());
      auto narrowed = u.issuer->NarrowScope(c.valid, tokens);
      REQUIRE_MESSAGE(narrowed.has_value(), (narrowed ? "" : narrowed.error().ToString()));
      CHECK_FALSE(narrowed->scope_text.empty());
      GrantRequest req = c.valid;
      req.scope = narrowed->scope;
      auto tier = u.issuer->ImpliedTier(req);
      REQUIRE_MESSAGE(tier.has_value(), (tier ? "" : tier.error().ToString()));
      CHECK(static_cast<int>(*tier) <= static_cast<int>(full_tier));
      auto items = u.issuer->ScopeItems(req);
      REQUIRE(items.has_value());
      for (const std::string& item : *items) {
        CAPTURE(item);
        CHECK(std::find(full_items.begin(), full_items.end(), item) != full_items.end());
      }
    }
    for (const char* outside : {"jb-conformance-not-granted", "jb:conformance:admin"}) {
      CAPTURE(outside);
      auto refused = u.issuer->NarrowScope(c.valid, std::vector<std::string>{outside});
      REQUIRE_FALSE(refused.has_value());
      CHECK(refused.error().code == ErrorCode::kPermissionDenied);
      CHECK(refused.error().Reason() == "scope_not_granted");
    }
  }

  SUBCASE("Validate refuses bad sections precisely, creating nothing") {
    if (!c.validate_section) {
      MESSAGE("no factory: " << c.name);
      return;
    }
    for (const auto& bad : c.bad_sections) {
      CAPTURE(bad.name);
      CAPTURE(bad.yaml);
      TempDir dir("issuer-conformance-validate");
      const std::string data_dir = dir.File("data");
      Status st = OkStatus();
      CHECK_NOTHROW(st = c.validate_section(bad.yaml, data_dir));
      REQUIRE_FALSE(st.has_value());
      CAPTURE(st.error().ToString());
      CHECK(st.error().code == ErrorCode::kInvalidArgument);
      CHECK(st.error().Reason() == "invalid_config");
      CHECK(st.error().message.find(bad.expect) != std::string::npos);
      CheckNoSecret(c, st.error());
      // Nothing created: no data directory, no key, nothing beside it.
      CHECK_FALSE(std::filesystem::exists(data_dir));
      CHECK(std::filesystem::is_empty(dir.path()));
    }
  }

  SUBCASE("Mint failures carry stable reasons and no secrets") {
    IssuerUnderTest u = c.make();
    for (const auto& [what, req] : c.mint_failures) {
      CAPTURE(what);
      auto tier = u.issuer->ImpliedTier(req);
      REQUIRE_MESSAGE(tier.has_value(), (tier ? "" : tier.error().ToString()));
      MintRequest mr = MintFor(c, u, "grt_conformance_fail", *tier);
      mr.request = req;
      auto minted = u.issuer->Mint(mr);
      REQUIRE_FALSE(minted.has_value());
      CAPTURE(minted.error().ToString());
      CHECK(minted.error().code != ErrorCode::kInternal);
      CHECK_FALSE(minted.error().Reason().empty());
      CheckNoSecret(c, minted.error());
    }
  }

  SUBCASE("concurrent mints, classifications and revocations") {
    IssuerUnderTest u = c.make();
    auto tier = u.issuer->ImpliedTier(c.valid);
    REQUIRE(tier.has_value());
    std::mutex mu;
    std::vector<std::string> errors;
    std::set<std::string> fingerprints;
    std::atomic<int> revoked{0};
    {
      std::vector<std::jthread> threads;
      for (int i = 0; i < c.concurrent_mints; ++i) {
        threads.emplace_back([&, i] {
          auto note = [&](const std::string& e) {
            std::lock_guard lock(mu);
            errors.push_back(e);
          };
          if (!u.issuer->ImpliedTier(c.valid) || !u.issuer->ScopeItems(c.valid)) {
            note("classification failed");
            return;
          }
          const MintRequest mr = MintFor(c, u, "grt_conformance_" + std::to_string(i), *tier);
          auto minted = u.issuer->Mint(mr);
          if (!minted) {
            note(minted.error().ToString());
            return;
          }
          {
            std::lock_guard lock(mu);
            fingerprints.insert(minted->fingerprint_sha256);
          }
          auto r = u.issuer->Revoke(RevokeRequest{mr.grant_id, minted->revocation_handle.Clone(),
                                                  minted->expires_at, u.clock->Now()});
          if (!r) {
            note(r.error().ToString());
            return;
          }
          revoked.fetch_add(1);
        });
      }
    }
    for (const std::string& e : errors) {
      INFO(e);
    }
    CHECK(errors.empty());
    CHECK(fingerprints.size() == static_cast<size_t>(c.concurrent_mints));
    CHECK(revoked.load() == c.concurrent_mints);
  }
}

}  // namespace jitbroker::testing
