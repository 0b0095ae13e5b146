#include "tests/fakes/fake_github.h"

#include <signal.h>
#include <sys/wait.h>
#include <time.h>

#include <algorithm>
#include <cctype>
#include <cstdio>
#include <random>
#include <regex>

#include <httplib.h>

#include "broker/common/time_util.h"
#include "broker/crypto/crypto.h"
#include "broker/crypto/jose.h"
#include "tests/support/loopback.h"

namespace jitbroker::testing {

namespace {

constexpr int64_t kTokenLifetime = 3600;
constexpr int64_t kRateLimit = 5000;
constexpr const char* kDocs = "https://docs.github.com/rest";

// Permission names GitHub's REST schema accepts for installation tokens
// (docs/concepts.md "GitHub App tokens"), kept here independently of the issuer's own table.
const std::set<std::string>& KnownPermissionNames() {
  static const std::set<std::string> names = {"actions",
                                              "administration",
                                              "artifact_metadata",
                                              "attestations",
                                              "checks",
                                              "codespaces",
                                              "contents",
                                              "dependabot_secrets",
                                              "deployments",
                                              "discussions",
                                              "environments",
                                              "issues",
                                              "merge_queues",
                                              "metadata",
                                              "packages",
                                              "pages",
                                              "pull_requests",
                                              "repository_custom_properties",
                                              "repository_hooks",
                                              "secret_scanning_alerts",
                                              "secrets",
                                              "security_events",
                                              "single_file",
                                              "statuses",
                                              "vulnerability_alerts",
                                              "custom_properties_for_organizations",
                                              "members",
                                              "organization_administration",
                                              "organization_custom_roles",
                                              "organization_custom_org_roles",
                                              "organization_copilot_agent_settings",
                                              "organization_announcement_banners",
                                              "organization_hooks",
                                              "organization_personal_access_tokens",
                                              "organization_personal_access_token_requests",
                                              "organization_packages",
                                              "organization_secrets",
                                              "organization_self_hosted_runners",
                                              "organization_user_blocking",
                                              "email_addresses",
                                              "followers",
                                              "git_ssh_keys",
                                              "gpg_keys",
                                              "interaction_limits",
                                              "starring",
                                              "repository_projects",
                                              "organization_projects",
                                              "organization_custom_properties",
                                              "enterprise_custom_properties_for_organizations",
                                              "workflows",
                                              "profile",
                                              "organization_copilot_seat_management",
                                              "organization_events",
                                              "organization_plan"};
  return names;
}

int LevelRank(const std::string& level) {
  if (level == "read") {
    return 1;
  }
  if (level == "write") {
    return 2;
  }
  if (level == "admin") {
    return 3;
  }
  return 0;
}

std::string Lower(std::string s) {
  std::transform(s.begin(), s.end(), s.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return s;
}

std::string HttpDate(int64_t unix_seconds) {
  time_t t = static_cast<time_t>(unix_seconds);
  struct tm tm{};
  gmtime_r(&t, &tm);
  char buf[64];
  std::strftime(buf, sizeof(buf), "%a, %d %b %Y %H:%M:%S GMT", &tm);
  return buf;
}

std::string RandomAlnum(size_t n) {
  static thread_local std::mt19937_64 rng(std::random_device{}());
  static constexpr char kAlphabet[] =
      "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
  std::string out;
  out.reserve(n);
  for (size_t i = 0; i < n; ++i) {
    out += kAlphabet[rng() % 62];
  }
  return out;
}

void PutBe64(std::string& out, uint64_t v) {
  for (int i = 7; i >= 0; --i) {
    out.push_back(static_cast<char>((v >> (8 * i)) & 0xff));
  }
}

uint64_t GetBe64(std::string_view in) {
  uint64_t v = 0;
  for (size_t i = 0; i < 8 && i < in.size(); ++i) {
    v = (v << 8) | static_cast<unsigned char>(in[i]);
  }
  return v;
}

}  // namespace

struct FakeGitHub::Impl {
  FakeGitHubOptions options;
  std::atomic<int> port{0};  // set once serving
  httplib::Server server;
  std::thread thread;
  std::unique_ptr<crypto::VerifyKey> app_key;
  SecretValue mac_key;

  mutable std::mutex mu;
  std::map<int64_t, FakeInstallation> installations;
  std::map<std::string, int64_t> repo_installation;  // lower "owner/repo" -> installation
  std::map<std::string, std::pair<std::string, std::string>> collaborators;  // lower key
  struct Pull {
    std::string title;
    bool merged = false;
    std::vector<std::string> comments;
  };
  std::map<std::string, std::map<int, Pull>> pulls;     // lower "owner/repo" -> number -> pull
  std::map<std::string, TokenInfo> tokens;              // sha256 hex -> info
  std::set<std::string> revoked;                        // sha256 hex
  std::map<std::string, nlohmann::json> verified_jwts;  // sha256 hex -> claims
  struct Injection {
    Route route;
    int status;
    int remaining;  // < 0: until cleared
    int retry_after;
  };
  std::vector<Injection> injections;
  nlohmann::json last_mint_body;
  std::map<std::string, std::string> last_headers;
  std::vector<std::string> violations;

  std::atomic<int64_t> latency_ms{0};
  std::atomic<int64_t> skew_s{0};
  std::atomic<uint64_t> issued{0};
  std::atomic<uint64_t> revoked_count{0};
  std::atomic<uint64_t> rate_used{0};
  std::array<std::atomic<uint64_t>, 7> route_counts{};
  std::atomic<int> mint_response{static_cast<int>(MintResponse::kNormal)};
  std::atomic<int64_t> token_lifetime_s{kTokenLifetime};
  std::atomic<int64_t> token_warmup_s{0};

  int64_t Now() const { return ToUnixSeconds(std::chrono::system_clock::now()) + skew_s.load(); }

  void Violation(std::string what) {
    std::lock_guard lock(mu);
    if (violations.size() < 1000) {
      violations.push_back(std::move(what));
    }
  }

  static Route RouteOf(const httplib::Request& req) {
    const std::string& p = req.path;
    if (req.method == "POST" && p.starts_with("/app/installations/") &&
        p.ends_with("/access_tokens")) {
      return Route::kMint;
    }
    if (req.method == "DELETE" && p == "/installation/token") {
      return Route::kRevoke;
    }
    if (req.method == "GET" && p.starts_with("/app/installations/")) {
      return Route::kInstallation;
    }
    if (p.starts_with("/repos/")) {
      if (p.ends_with("/installation")) {
        return Route::kLookup;
      }
      if (p.ends_with("/permission")) {
        return Route::kCollaborator;
      }
      return Route::kRepo;
    }
    return Route::kAny;
  }

  void Respond(httplib::Response& res, int status, const nlohmann::json& body) {
    const int64_t now = Now();
    const uint64_t used = ++rate_used;
    res.status = status;
    res.set_header("Date", HttpDate(now));
    res.set_header("x-ratelimit-limit", std::to_string(kRateLimit));
    res.set_header("x-ratelimit-remaining",
                   std::to_string(std::max<int64_t>(0, kRateLimit - static_cast<int64_t>(used))));
    res.set_header("x-ratelimit-used", std::to_string(used));
    res.set_header("x-ratelimit-reset", std::to_string(now - now % 3600 + 3600));
    res.set_header("x-ratelimit-resource", "core");
    if (!body.is_null()) {
      res.set_content(body.dump(), "application/json; charset=utf-8");
    }
  }

  void Error(httplib::Response& res, int status, const std::string& message) {
    Respond(res, status, {{"message", message}, {"documentation_url", kDocs}});
  }

  // Headers GitHub requires of every call (docs/concepts.md "GitHub App tokens").
  bool CheckCommonHeaders(const httplib::Request& req, httplib::Response& res) {
    {
      std::lock_guard lock(mu);
      last_headers.clear();
      for (const auto& [k, v] : req.headers) {
        last_headers[Lower(k)] = Lower(k) == "authorization" ? "[redacted]" : v;
      }
    }
    if (!req.has_header("User-Agent") || req.get_header_value("User-Agent").empty()) {
      Violation("missing User-Agent on " + req.method + " " + req.path);
      Error(res, 403,
            "Request forbidden by administrative rules. Please make sure your request has a "
            "User-Agent header");
      return false;
    }
    const std::string version = req.get_header_value("X-GitHub-Api-Version");
    if (version != "2022-11-28" && version != "2026-03-10") {
      Violation("missing or unsupported X-GitHub-Api-Version \"" + version + "\" on " + req.path);
      Error(res, 400, "The requested API version is not supported");
      return false;
    }
    if (req.get_header_value("Accept") != "application/vnd.github+json") {
      Violation("Accept is \"" + req.get_header_value("Accept") + "\" on " + req.path);
      Error(res, 415, "Unsupported 'Accept' header");
      return false;
    }
    if (req.method == "POST" &&
        req.get_header_value("Content-Type").rfind("application/json", 0) != 0) {
      Violation("POST without Content-Type: application/json on " + req.path);
    }
    return true;
  }

  std::string Bearer(const httplib::Request& req) {
    const std::string auth = req.get_header_value("Authorization");
    if (auth.size() > 7 && Lower(auth.substr(0, 7)) == "bearer ") {
      return auth.substr(7);
    }
    if (auth.size() > 6 && Lower(auth.substr(0, 6)) == "token ") {
      return auth.substr(6);
    }
    return "";
  }

  // App JWT authentication (docs/concepts.md "GitHub App tokens").
  bool CheckAppJwt(const httplib::Request& req, httplib::Response& res) {
    const std::string auth = req.get_header_value("Authorization");
    if (auth.rfind("Bearer ", 0) != 0) {
      Violation("App endpoint without Authorization: Bearer <JWT> on " + req.path);
      Error(res, 401, "A JSON web token could not be decoded");
      return false;
    }
    const std::string jwt = auth.substr(7);
    const std::string digest = crypto::Sha256Hex(jwt);
    nlohmann::json claims;
    {
      std::lock_guard lock(mu);
      if (auto it = verified_jwts.find(digest); it != verified_jwts.end()) {
        claims = it->second;
      }
    }
    if (claims.is_null()) {
      auto decoded = crypto::DecodeJws(jwt);
      if (!decoded) {
        Violation("App JWT does not decode");
        Error(res, 401, "A JSON web token could not be decoded");
        return false;
      }
      if (decoded->header.value("alg", "") != "RS256") {
        Violation("App JWT alg is not RS256");
        Error(res, 401, "A JSON web token could not be decoded");
        return false;
      }
      auto verified = crypto::VerifyJws(jwt, *app_key);
      if (!verified) {
        Violation("App JWT signature does not verify with the App's public key");
        Error(res, 401,
              "'Issuer' claim ('iss') must be an Integer or String representing the "
              "application's identifier");
        return false;
      }
      claims = *verified;
      std::lock_guard lock(mu);
      verified_jwts.emplace(digest, claims);
    }
    const nlohmann::json& iss = claims.contains("iss") ? claims["iss"] : nlohmann::json();
    const bool iss_ok =
        (iss.is_string() && !options.client_id.empty() &&
         iss.get<std::string>() == options.client_id) ||
        (iss.is_number_integer() && iss.get<int64_t>() == options.app_id) ||
        (iss.is_string() && iss.get<std::string>() == std::to_string(options.app_id));
    if (!iss_ok) {
      Violation("App JWT iss is " + iss.dump());
      Error(res, 401,
            "'Issuer' claim ('iss') must be an Integer or String representing the application's "
            "identifier");
      return false;
    }
    if (!claims.contains("iat") || !claims["iat"].is_number_integer()) {
      Violation("App JWT iat is not an integer");
      Error(res, 401,
            "'Issued at' claim ('iat') must be an Integer representing the time that "
            "the assertion was issued");
      return false;
    }
    if (!claims.contains("exp") || !claims["exp"].is_number_integer()) {
      Violation("App JWT exp is not an integer");
      Error(res, 401,
            "'Expiration time' claim ('exp') must be a numeric value representing the "
            "future time at which the assertion expires");
      return false;
    }
    const int64_t now = Now();
    const int64_t iat = claims["iat"].get<int64_t>();
    const int64_t exp = claims["exp"].get<int64_t>();
    if (iat > now + 60) {
      Violation("App JWT iat is in the future");
      Error(res, 401,
            "'Issued at' claim ('iat') must be an Integer representing a time in the past");
      return false;
    }
    if (exp <= now) {
      Error(res, 401,
            "'Expiration time' claim ('exp') must be a numeric value representing the "
            "future time at which the assertion expires");
      return false;
    }
    if (exp - iat > 600 || exp > now + 600) {
      Violation("App JWT exp is too far in the future (exp-iat=" + std::to_string(exp - iat) +
                ", exp-now=" + std::to_string(exp - now) + ")");
      Error(res, 401, "'Expiration time' claim ('exp') is too far in the future");
      return false;
    }
    return true;
  }

  std::string NewToken(int64_t installation, int64_t exp, bool legacy) {
    if (legacy) {
      return "ghs_" + RandomAlnum(36);
    }
    // Stateless-format shape: ghs_<app>_<a>.<b>.<mac>, two dots, ~520 chars.
    std::string payload;
    PutBe64(payload, static_cast<uint64_t>(installation));
    PutBe64(payload, static_cast<uint64_t>(exp));
    payload += crypto::RandomBytes(144);
    const std::string head = "ghs_" + std::to_string(options.app_id) + "_" +
                             crypto::HexEncode(crypto::RandomBytes(64)) + "." +
                             crypto::HexEncode(payload);
    return head + "." + crypto::HexEncode(crypto::HmacSha256(mac_key.Reveal(), head));
  }

  // The token's info if it is genuine, unexpired and not revoked.
  std::optional<TokenInfo> ActiveToken(const std::string& token) {
    const std::string digest = crypto::Sha256Hex(token);
    std::optional<TokenInfo> record;
    {
      std::lock_guard lock(mu);
      if (revoked.contains(digest)) {
        return std::nullopt;
      }
      if (auto it = tokens.find(digest); it != tokens.end()) {
        record = it->second;
      }
    }
    const size_t last_dot = token.rfind('.');
    if (last_dot != std::string::npos) {
      const std::string head = token.substr(0, last_dot);
      const std::string mac = crypto::HexEncode(crypto::HmacSha256(mac_key.Reveal(), head));
      if (!crypto::ConstantTimeEquals(mac, token.substr(last_dot + 1))) {
        return std::nullopt;
      }
      if (!record) {
        const size_t dot = head.find('.');
        auto payload = crypto::HexDecode(head.substr(dot + 1));
        if (!payload || payload->size() < 16) {
          return std::nullopt;
        }
        record = TokenInfo{};
        record->installation_id = static_cast<int64_t>(GetBe64(*payload));
        record->expires_at = static_cast<int64_t>(GetBe64(payload->substr(8)));
      }
    }
    if (!record || record->expires_at <= Now()) {
      return std::nullopt;
    }
    return record;
  }

  bool TokenReaches(const TokenInfo& t, const std::string& owner_repo) {
    std::lock_guard lock(mu);
    auto it = repo_installation.find(Lower(owner_repo));
    if (it == repo_installation.end() || it->second != t.installation_id) {
      return false;
    }
    if (!options.keep_issued || t.repositories.empty()) {
      return true;  // repository_selection "all" (or not recorded)
    }
    const std::string name = owner_repo.substr(owner_repo.find('/') + 1);
    return std::any_of(t.repositories.begin(), t.repositories.end(),
                       [&](const std::string& r) { return Lower(r) == Lower(name); });
  }

  void HandleMint(const httplib::Request& req, httplib::Response& res) {
    if (!CheckAppJwt(req, res)) {
      return;
    }
    int64_t id = 0;
    try {
      id = std::stoll(req.matches[1]);
    } catch (...) {
      return Error(res, 404, "Not Found");
    }
    FakeInstallation inst;
    {
      std::lock_guard lock(mu);
      auto it = installations.find(id);
      if (it == installations.end()) {
        return Error(res, 404, "Not Found");
      }
      inst = it->second;
    }
    nlohmann::json body = req.body.empty() ? nlohmann::json::object()
                                           : nlohmann::json::parse(req.body, nullptr, false);
    if (body.is_discarded() || !body.is_object()) {
      Violation("mint body is not a JSON object");
      return Error(res, 400, "Problems parsing JSON");
    }
    {
      std::lock_guard lock(mu);
      last_mint_body = body;
    }
    for (auto it = body.begin(); it != body.end(); ++it) {
      if (it.key() != "repositories" && it.key() != "repository_ids" && it.key() != "permissions" &&
          it.key() != "repository") {
        Violation("mint body has unknown key " + it.key());
        return Error(res, 422, "Invalid request.\n\n\"" + it.key() + "\" is not a permitted key.");
      }
    }
    std::vector<std::string> names;
    std::vector<std::pair<std::string, int64_t>> repos;  // selected (name, id)
    if (body.contains("repositories")) {
      if (!body["repositories"].is_array() || body["repositories"].size() > 500) {
        Violation("repositories is not an array of at most 500 names");
        return Error(res, 422,
                     "Invalid request.\n\nFor 'properties/repositories', is not an array.");
      }
      for (const auto& r : body["repositories"]) {
        if (!r.is_string() || r.get<std::string>().find('/') != std::string::npos) {
          Violation("repositories must hold names without the owner: " + r.dump());
          return Error(res, 422,
                       "There is at least one repository that does not exist or is not "
                       "accessible to the parent installation.");
        }
        auto found = std::find_if(
            inst.repositories.begin(), inst.repositories.end(),
            [&](const auto& kv) { return Lower(kv.first) == Lower(r.get<std::string>()); });
        if (found == inst.repositories.end()) {
          return Error(res, 422,
                       "There is at least one repository that does not exist or is not "
                       "accessible to the parent installation.");
        }
        repos.emplace_back(found->first, found->second);
      }
    }
    if (body.contains("repository_ids")) {
      if (!body["repository_ids"].is_array() || body["repository_ids"].size() > 500) {
        Violation("repository_ids is not an array");
        return Error(res, 422,
                     "Invalid request.\n\nFor 'properties/repository_ids', is not an array.");
      }
      for (const auto& r : body["repository_ids"]) {
        if (!r.is_number_integer()) {
          Violation("repository_ids must hold integers: " + r.dump());
          return Error(res, 422, "Invalid request.");
        }
        auto found = std::find_if(inst.repositories.begin(), inst.repositories.end(),
                                  [&](const auto& kv) { return kv.second == r.get<int64_t>(); });
        if (found == inst.repositories.end()) {
          return Error(res, 422,
                       "There is at least one repository that does not exist or is not "
                       "accessible to the parent installation.");
        }
        repos.emplace_back(found->first, found->second);
      }
    }
    nlohmann::json granted = nlohmann::json::object();
    if (body.contains("permissions")) {
      const nlohmann::json& p = body["permissions"];
      if (!p.is_object()) {
        Violation("permissions is not an object");
        return Error(res, 422,
                     "Invalid request.\n\nFor 'properties/permissions', is not an object.");
      }
      for (auto it = p.begin(); it != p.end(); ++it) {
        if (!KnownPermissionNames().contains(it.key())) {
          Violation("unknown permission " + it.key());
          return Error(res, 422,
                       "Invalid request.\n\n\"" + it.key() + "\" is not a permitted key.");
        }
        if (!it->is_string() || LevelRank(it->get<std::string>()) == 0) {
          Violation("permission " + it.key() + " has level " + it->dump());
          return Error(res, 422,
                       "Invalid request.\n\nFor 'properties/" + it.key() +
                           "', is not one of read, write, admin.");
        }
        auto have = inst.permissions.find(it.key());
        if (have == inst.permissions.end() ||
            LevelRank(it->get<std::string>()) > LevelRank(have->second)) {
          return Error(res, 422, "The permissions requested are not granted to this installation.");
        }
        granted[it.key()] = *it;
      }
      if (!granted.contains("metadata")) {
        granted["metadata"] = "read";  // every token can read metadata
      }
    } else {
      for (const auto& [k, v] : inst.permissions) {
        granted[k] = v;
      }
    }
    const auto mode = static_cast<MintResponse>(mint_response.load());
    if (mode == MintResponse::kBroader) {
      repos.clear();  // all of them
      granted = nlohmann::json::object();
      for (const auto& [k, v] : inst.permissions) {
        granted[k] = v;
      }
    } else if (mode == MintResponse::kOtherRepository && !repos.empty()) {
      for (const auto& [name, rid] : inst.repositories) {
        if (rid != repos.front().second) {
          repos = {{name, rid}};
          break;
        }
      }
    }
    const int64_t now = Now();
    const int64_t exp = now + token_lifetime_s.load();
    const bool legacy = req.get_header_value("X-GitHub-Stateless-S2S-Token") == "disabled";
    const std::string token = NewToken(id, exp, legacy);
    TokenInfo info;
    info.installation_id = id;
    info.permissions = granted;
    info.expires_at = exp;
    info.issued_at = now;
    nlohmann::json repo_objects = nlohmann::json::array();
    for (const auto& [name, rid] : repos) {
      info.repositories.push_back(name);
      repo_objects.push_back({{"id", rid},
                              {"node_id", "R_kgDO" + std::to_string(rid)},
                              {"name", name},
                              {"full_name", inst.account + "/" + name},
                              {"owner", {{"login", inst.account}, {"type", "Organization"}}},
                              {"private", true},
                              {"html_url", "https://github.com/" + inst.account + "/" + name}});
    }
    if (options.keep_issued || legacy || token_warmup_s.load() > 0) {
      std::lock_guard lock(mu);
      tokens.emplace(crypto::Sha256Hex(token), info);
    }
    ++issued;
    nlohmann::json out = {{"token", token}, {"expires_at", FormatRfc3339(FromUnixSeconds(exp))}};
    if (mode != MintResponse::kOmitScope) {
      out["permissions"] = granted;
      out["repository_selection"] = repos.empty() ? "all" : "selected";
      if (!repos.empty()) {
        out["repositories"] = repo_objects;
      }
    }
    Respond(res, 201, out);
  }

  void HandleLookup(const httplib::Request& req, httplib::Response& res) {
    if (!CheckAppJwt(req, res)) {
      return;
    }
    const std::string key = Lower(std::string(req.matches[1]) + "/" + std::string(req.matches[2]));
    nlohmann::json body;
    {
      std::lock_guard lock(mu);
      auto it = repo_installation.find(key);
      if (it != repo_installation.end()) {
        const FakeInstallation& inst = installations.at(it->second);
        body = {{"id", inst.id},
                {"app_id", options.app_id},
                {"account", {{"login", inst.account}}},
                {"repository_selection", "selected"},
                {"permissions", inst.permissions}};
      }
    }
    if (body.is_null()) {
      return Error(res, 404, "Not Found");
    }
    Respond(res, 200, body);
  }

  // A token minted less than token_warmup_s ago is not known yet.
  bool Warming(const TokenInfo& info) const {
    const int64_t warmup = token_warmup_s.load();
    return warmup > 0 && info.issued_at > 0 && Now() < info.issued_at + warmup;
  }

  void HandleInstallation(const httplib::Request& req, httplib::Response& res) {
    if (!CheckAppJwt(req, res)) {
      return;
    }
    int64_t id = 0;
    try {
      id = std::stoll(req.matches[1]);
    } catch (...) {
      return Error(res, 404, "Not Found");
    }
    nlohmann::json body;
    {
      std::lock_guard lock(mu);
      auto it = installations.find(id);
      if (it != installations.end()) {
        const FakeInstallation& inst = it->second;
        body = {{"id", inst.id},
                {"app_id", options.app_id},
                {"account", {{"login", inst.account}, {"type", "Organization"}}},
                {"target_type", "Organization"},
                {"repository_selection", "selected"},
                {"permissions", inst.permissions}};
      }
    }
    if (body.is_null()) {
      return Error(res, 404, "Not Found");
    }
    Respond(res, 200, body);
  }

  void HandleRevoke(const httplib::Request& req, httplib::Response& res) {
    const std::string token = Bearer(req);
    auto info = token.empty() ? std::nullopt : ActiveToken(token);
    if (!info || Warming(*info)) {
      return Error(res, 401, "Bad credentials");
    }
    {
      std::lock_guard lock(mu);
      revoked.insert(crypto::Sha256Hex(token));
      if (auto it = tokens.find(crypto::Sha256Hex(token)); it != tokens.end()) {
        it->second.revoked = true;
      }
    }
    ++revoked_count;
    Respond(res, 204, nullptr);
  }

  void HandleCollaborator(const httplib::Request& req, httplib::Response& res) {
    const std::string token = Bearer(req);
    auto info = token.empty() ? std::nullopt : ActiveToken(token);
    if (!info || Warming(*info)) {
      return Error(res, 401, "Bad credentials");
    }
    const std::string repo = std::string(req.matches[1]) + "/" + std::string(req.matches[2]);
    if (!TokenReaches(*info, repo)) {
      return Error(res, 404, "Not Found");
    }
    if (options.keep_issued && !info->permissions.contains("metadata")) {
      return Error(res, 403, "Resource not accessible by integration");
    }
    const std::string login = req.matches[3];
    std::pair<std::string, std::string> perm;
    {
      std::lock_guard lock(mu);
      auto it = collaborators.find(Lower(repo) + "#" + Lower(login));
      if (it == collaborators.end()) {
        perm = {"", ""};
      } else {
        perm = it->second;
      }
    }
    if (perm.first.empty()) {
      return Error(res, 404, "Not Found");
    }
    std::string role = perm.second.empty() ? perm.first : perm.second;
    Respond(res, 200,
            {{"permission", perm.first}, {"role_name", role}, {"user", {{"login", login}}}});
  }

  // The token of a REST call on matches[1]/matches[2], if it is active,
  // reaches the repository and holds every permission of `need` at `level`
  // or above (any one of `any_of` when given); else answers and nullopt.
  std::optional<TokenInfo> RepoToken(const httplib::Request& req, httplib::Response& res,
                                     const std::vector<std::string>& need, const std::string& level,
                                     bool any_of = false) {
    const std::string token = Bearer(req);
    auto info = token.empty() ? std::nullopt : ActiveToken(token);
    if (!info || Warming(*info)) {
      Error(res, 401, "Bad credentials");
      return std::nullopt;
    }
    const std::string repo = std::string(req.matches[1]) + "/" + std::string(req.matches[2]);
    if (!TokenReaches(*info, repo)) {
      Error(res, 404, "Not Found");
      return std::nullopt;
    }
    auto has = [&](const std::string& p) {
      const std::string v = info->permissions.value(p, "");
      return level == "read" ? (v == "read" || v == "write" || v == "admin")
                             : (v == "write" || v == "admin");
    };
    const bool ok = any_of ? std::any_of(need.begin(), need.end(), has)
                           : std::all_of(need.begin(), need.end(), has);
    if (!ok) {
      Error(res, 403, "Resource not accessible by integration");
      return std::nullopt;
    }
    return info;
  }

  void HandleListPulls(const httplib::Request& req, httplib::Response& res) {
    if (!RepoToken(req, res, {"pull_requests"}, "read")) {
      return;
    }
    const std::string repo = Lower(std::string(req.matches[1]) + "/" + std::string(req.matches[2]));
    int per_page = 30;
    int page = 1;
    try {
      if (req.has_param("per_page")) {
        per_page = std::clamp(std::stoi(req.get_param_value("per_page")), 1, 100);
      }
      if (req.has_param("page")) {
        page = std::max(1, std::stoi(req.get_param_value("page")));
      }
    } catch (...) {
      return Error(res, 422, "Validation Failed");
    }
    nlohmann::json out = nlohmann::json::array();
    int64_t repo_id = 0;
    size_t total = 0;
    {
      std::lock_guard lock(mu);
      auto inst = repo_installation.find(repo);
      if (inst != repo_installation.end()) {
        const FakeInstallation& fi = installations[inst->second];
        auto id = fi.repositories.find(repo.substr(repo.find('/') + 1));
        repo_id = id == fi.repositories.end() ? 0 : id->second;
      }
      const auto& list = pulls[repo];
      total = list.size();
      size_t i = 0;
      for (const auto& [n, pr] : list) {
        if (i >= static_cast<size_t>((page - 1) * per_page) &&
            i < static_cast<size_t>(page * per_page)) {
          out.push_back(
              {{"number", n}, {"title", pr.title}, {"state", pr.merged ? "closed" : "open"}});
        }
        ++i;
      }
    }
    const int last = std::max(1, static_cast<int>((total + static_cast<size_t>(per_page) - 1) /
                                                  static_cast<size_t>(per_page)));
    const std::string base = "http://127.0.0.1:" + std::to_string(port) + "/repositories/" +
                             std::to_string(repo_id) +
                             "/pulls?per_page=" + std::to_string(per_page) + "&page=";
    std::string link;
    if (page < last) {
      link = "<" + base + std::to_string(page + 1) + ">; rel=\"next\", <" + base +
             std::to_string(last) + ">; rel=\"last\"";
    }
    Respond(res, 200, out);
    if (!link.empty()) {
      res.set_header("Link", link);
    }
  }

  void HandleComment(const httplib::Request& req, httplib::Response& res) {
    if (!RepoToken(req, res, {"issues", "pull_requests"}, "write", true)) {
      return;
    }
    nlohmann::json body = nlohmann::json::parse(req.body, nullptr, false);
    if (!body.is_object() || !body.contains("body") || !body["body"].is_string()) {
      return Error(res, 422, "Validation Failed");
    }
    const std::string repo = Lower(std::string(req.matches[1]) + "/" + std::string(req.matches[2]));
    const int n = std::stoi(req.matches[3]);
    std::lock_guard lock(mu);
    auto it = pulls[repo].find(n);
    if (it == pulls[repo].end()) {
      return Error(res, 404, "Not Found");
    }
    it->second.comments.push_back(body["body"]);
    Respond(res, 201,
            {{"id", static_cast<int64_t>(it->second.comments.size())}, {"body", body["body"]}});
  }

  void HandleMerge(const httplib::Request& req, httplib::Response& res) {
    if (!RepoToken(req, res, {"contents", "pull_requests"}, "write")) {
      return;
    }
    const std::string repo = Lower(std::string(req.matches[1]) + "/" + std::string(req.matches[2]));
    const int n = std::stoi(req.matches[3]);
    std::lock_guard lock(mu);
    auto it = pulls[repo].find(n);
    if (it == pulls[repo].end()) {
      return Error(res, 404, "Not Found");
    }
    if (it->second.merged) {
      return Error(res, 405, "Pull Request is not mergeable");
    }
    it->second.merged = true;
    Respond(res, 200,
            {{"merged", true},
             {"sha", std::string(40, 'c')},
             {"message", "Pull Request successfully merged"}});
  }

  // `git --git-dir ROOT/o/r.git ARGS`: exit status and stdout.
  std::pair<int, std::string> RunGit(const httplib::Request& req, const std::string& args) {
    static const std::regex kName(R"([A-Za-z0-9._-]+)");
    if (!std::regex_match(std::string(req.matches[1]), kName) ||
        !std::regex_match(std::string(req.matches[2]), kName)) {
      return {-1, ""};
    }
    const std::string dir = options.git_root + "/" + Lower(std::string(req.matches[1])) + "/" +
                            Lower(std::string(req.matches[2])) + ".git";
    const std::string cmd = "git --git-dir '" + dir + "' " + args + " 2>/dev/null";
    std::string out;
    FILE* p = ::popen(cmd.c_str(), "r");
    if (p == nullptr) {
      return {-1, out};
    }
    char buf[256];
    size_t n = 0;
    while ((n = std::fread(buf, 1, sizeof(buf), p)) > 0) {
      out.append(buf, n);
    }
    const int rc = ::pclose(p);
    return {WIFEXITED(rc) ? WEXITSTATUS(rc) : -1, out};
  }

  void HandleGitRef(const httplib::Request& req, httplib::Response& res) {
    if (!RepoToken(req, res, {"contents"}, "read")) {
      return;
    }
    const std::string ref = "refs/" + std::string(req.matches[3]);
    static const std::regex kRef(R"([A-Za-z0-9/_.\-]+)");
    if (options.git_root.empty() || !std::regex_match(ref, kRef)) {
      return Error(res, 404, "Not Found");
    }
    auto [rc, out] = RunGit(req, "rev-parse --verify -q '" + ref + "'");
    if (rc != 0 || out.size() < 40) {
      return Error(res, 404, "Not Found");
    }
    Respond(res, 200, {{"ref", ref}, {"object", {{"sha", out.substr(0, 40)}, {"type", "commit"}}}});
  }

  void HandleCompare(const httplib::Request& req, httplib::Response& res) {
    if (!RepoToken(req, res, {"contents"}, "read")) {
      return;
    }
    const std::string base = req.matches[3];
    const std::string head = req.matches[4];
    if (options.git_root.empty() || RunGit(req, "cat-file -e " + base + "^{commit}").first != 0 ||
        RunGit(req, "cat-file -e " + head + "^{commit}").first != 0) {
      return Error(res, 404, "Not Found");
    }
    std::string status = "diverged";
    if (base == head) {
      status = "identical";
    } else if (RunGit(req, "merge-base --is-ancestor " + base + " " + head).first == 0) {
      status = "ahead";
    } else if (RunGit(req, "merge-base --is-ancestor " + head + " " + base).first == 0) {
      status = "behind";
    }
    Respond(res, 200, {{"status", status}});
  }

  void HandleRepo(const httplib::Request& req, httplib::Response& res) {
    const std::string token = Bearer(req);
    auto info = token.empty() ? std::nullopt : ActiveToken(token);
    if (!info || Warming(*info)) {
      return Error(res, 401, "Bad credentials");
    }
    const std::string repo = std::string(req.matches[1]) + "/" + std::string(req.matches[2]);
    if (!TokenReaches(*info, repo)) {
      return Error(res, 404, "Not Found");
    }
    Respond(res, 200,
            {{"full_name", repo}, {"name", std::string(req.matches[2])}, {"private", true}});
  }
};

FakeGitHub::~FakeGitHub() { Stop(); }

std::unique_ptr<FakeGitHub> FakeGitHub::Start(FakeGitHubOptions options) {
  std::unique_ptr<FakeGitHub> f(new FakeGitHub());
  f->impl_ = std::make_unique<Impl>();
  Impl& impl = *f->impl_;
  impl.options = std::move(options);
  auto key = crypto::VerifyKey::FromJwk(impl.options.app_public_jwk);
  if (!key || (*key)->alg() != crypto::JwsAlg::kRS256) {
    return nullptr;
  }
  impl.app_key = std::move(*key);
  impl.mac_key = SecretValue(crypto::RandomBytes(32));
  ::signal(SIGPIPE, SIG_IGN);

  httplib::Server& svr = impl.server;
  const int threads = std::max(1, impl.options.threads);
  svr.new_task_queue = [threads] { return new httplib::ThreadPool(static_cast<size_t>(threads)); };
  svr.set_tcp_nodelay(true);
  svr.set_keep_alive_max_count(1000000);
  // An idle keep-alive connection holds Stop() this long (cpp-httplib polls).
  svr.set_keep_alive_timeout(2);
  svr.set_read_timeout(30, 0);
  svr.set_write_timeout(30, 0);
  svr.set_payload_max_length(1 << 20);
  svr.set_exception_handler([&impl](const httplib::Request&, httplib::Response& res,
                                    std::exception_ptr) { impl.Error(res, 500, "Server Error"); });
  svr.set_pre_routing_handler([&impl](const httplib::Request& req, httplib::Response& res) {
    const Route route = Impl::RouteOf(req);
    ++impl.route_counts[static_cast<size_t>(route)];
    ++impl.route_counts[static_cast<size_t>(Route::kAny)];
    if (const int64_t ms = impl.latency_ms.load(); ms > 0) {
      std::this_thread::sleep_for(std::chrono::milliseconds(ms));
    }
    if (!impl.CheckCommonHeaders(req, res)) {
      return httplib::Server::HandlerResponse::Handled;
    }
    std::optional<Impl::Injection> hit;
    {
      std::lock_guard lock(impl.mu);
      for (auto& inj : impl.injections) {
        if ((inj.route == Route::kAny || inj.route == route) && inj.remaining != 0) {
          if (inj.remaining > 0) {
            --inj.remaining;
          }
          hit = inj;
          break;
        }
      }
    }
    if (!hit) {
      return httplib::Server::HandlerResponse::Unhandled;
    }
    if (hit->status == 429 || (hit->status == 403 && hit->retry_after >= 0)) {
      if (hit->retry_after >= 0) {
        res.set_header("Retry-After", std::to_string(hit->retry_after));
      }
      impl.Error(res, hit->status,
                 "You have exceeded a secondary rate limit. Please wait a few minutes before you "
                 "try again.");
    } else if (hit->status == 403) {
      impl.Error(res, 403, "Resource not accessible by integration");
    } else {
      impl.Error(res, hit->status, hit->status >= 500 ? "Server Error" : "Injected error");
    }
    return httplib::Server::HandlerResponse::Handled;
  });
  svr.Post(
      R"(/app/installations/([0-9]+)/access_tokens)",
      [&impl](const httplib::Request& req, httplib::Response& res) { impl.HandleMint(req, res); });
  svr.Get(R"(/repos/([^/]+)/([^/]+)/installation)",
          [&impl](const httplib::Request& req, httplib::Response& res) {
            impl.HandleLookup(req, res);
          });
  svr.Get(R"(/app/installations/([0-9]+))",
          [&impl](const httplib::Request& req, httplib::Response& res) {
            impl.HandleInstallation(req, res);
          });
  svr.Delete("/installation/token", [&impl](const httplib::Request& req, httplib::Response& res) {
    impl.HandleRevoke(req, res);
  });
  svr.Get(R"(/repos/([^/]+)/([^/]+)/collaborators/([^/]+)/permission)",
          [&impl](const httplib::Request& req, httplib::Response& res) {
            impl.HandleCollaborator(req, res);
          });
  svr.Get(
      R"(/repos/([^/]+)/([^/]+))",
      [&impl](const httplib::Request& req, httplib::Response& res) { impl.HandleRepo(req, res); });
  svr.Get(R"(/repos/([^/]+)/([^/]+)/git/ref/(.+))",
          [&impl](const httplib::Request& req, httplib::Response& res) {
            impl.HandleGitRef(req, res);
          });
  svr.Get(R"(/repos/([^/]+)/([^/]+)/compare/([0-9a-f]{40})\.\.\.([0-9a-f]{40}))",
          [&impl](const httplib::Request& req, httplib::Response& res) {
            impl.HandleCompare(req, res);
          });
  svr.Get(R"(/repos/([^/]+)/([^/]+)/pulls)",
          [&impl](const httplib::Request& req, httplib::Response& res) {
            impl.HandleListPulls(req, res);
          });
  svr.Post(R"(/repos/([^/]+)/([^/]+)/issues/([0-9]+)/comments)",
           [&impl](const httplib::Request& req, httplib::Response& res) {
             impl.HandleComment(req, res);
           });
  svr.Put(
      R"(/repos/([^/]+)/([^/]+)/pulls/([0-9]+)/merge)",
      [&impl](const httplib::Request& req, httplib::Response& res) { impl.HandleMerge(req, res); });

  f->port_ = ServeOnLoopback(svr, impl.thread);
  impl.port = f->port_;
  return f->port_ > 0 ? std::move(f) : nullptr;
}

void FakeGitHub::Stop() {
  if (!impl_) {
    return;
  }
  StopServing(impl_->server, impl_->thread);
}

std::string FakeGitHub::url() const { return "http://127.0.0.1:" + std::to_string(port_); }

void FakeGitHub::AddPullRequest(const std::string& owner_repo, int number,
                                const std::string& title) {
  std::lock_guard lock(impl_->mu);
  impl_->pulls[Lower(owner_repo)][number].title = title;
}

std::vector<int> FakeGitHub::Merged(const std::string& owner_repo) const {
  std::lock_guard lock(impl_->mu);
  std::vector<int> out;
  auto it = impl_->pulls.find(Lower(owner_repo));
  if (it != impl_->pulls.end()) {
    for (const auto& [n, pr] : it->second) {
      if (pr.merged) {
        out.push_back(n);
      }
    }
  }
  return out;
}

std::vector<std::string> FakeGitHub::Comments(const std::string& owner_repo, int number) const {
  std::lock_guard lock(impl_->mu);
  auto it = impl_->pulls.find(Lower(owner_repo));
  if (it == impl_->pulls.end() || !it->second.contains(number)) {
    return {};
  }
  return it->second.at(number).comments;
}

void FakeGitHub::AddInstallation(FakeInstallation installation) {
  std::lock_guard lock(impl_->mu);
  for (const auto& [name, id] : installation.repositories) {
    impl_->repo_installation[Lower(installation.account + "/" + name)] = installation.id;
  }
  impl_->installations[installation.id] = std::move(installation);
}

void FakeGitHub::SetCollaborator(const std::string& owner_repo, const std::string& login,
                                 const std::string& permission, const std::string& role_name) {
  std::lock_guard lock(impl_->mu);
  impl_->collaborators[Lower(owner_repo) + "#" + Lower(login)] = {permission, role_name};
}

void FakeGitHub::SetLatency(std::chrono::milliseconds latency) {
  impl_->latency_ms.store(latency.count());
}

void FakeGitHub::InjectErrors(Route route, int status, int count, int retry_after_s) {
  std::lock_guard lock(impl_->mu);
  impl_->injections.push_back({route, status, count, retry_after_s});
}

void FakeGitHub::ClearErrors() {
  std::lock_guard lock(impl_->mu);
  impl_->injections.clear();
}

void FakeGitHub::SetClockSkew(std::chrono::seconds skew) { impl_->skew_s.store(skew.count()); }

void FakeGitHub::SetMintResponse(MintResponse mode) {
  impl_->mint_response.store(static_cast<int>(mode));
}

void FakeGitHub::SetTokenLifetime(std::chrono::seconds lifetime) {
  impl_->token_lifetime_s.store(lifetime.count());
}

void FakeGitHub::SetTokenWarmup(std::chrono::seconds warmup) {
  impl_->token_warmup_s.store(warmup.count());
}

std::optional<FakeGitHub::TokenInfo> FakeGitHub::Token(const std::string& token) const {
  std::lock_guard lock(impl_->mu);
  auto it = impl_->tokens.find(crypto::Sha256Hex(token));
  if (it == impl_->tokens.end()) {
    return std::nullopt;
  }
  return it->second;
}

bool FakeGitHub::TokenActive(const std::string& token) const {
  return impl_->ActiveToken(token).has_value();
}

size_t FakeGitHub::Requests(Route route) const {
  return impl_->route_counts[static_cast<size_t>(route)].load();
}
size_t FakeGitHub::TokensIssued() const { return impl_->issued.load(); }
size_t FakeGitHub::TokensRevoked() const { return impl_->revoked_count.load(); }

size_t FakeGitHub::DistinctJwts() const {
  std::lock_guard lock(impl_->mu);
  return impl_->verified_jwts.size();
}

nlohmann::json FakeGitHub::LastMintBody() const {
  std::lock_guard lock(impl_->mu);
  return impl_->last_mint_body;
}

std::map<std::string, std::string> FakeGitHub::LastHeaders() const {
  std::lock_guard lock(impl_->mu);
  return impl_->last_headers;
}

std::vector<std::string> FakeGitHub::Violations() const {
  std::lock_guard lock(impl_->mu);
  return impl_->violations;
}

void FakeGitHub::ClearViolations() {
  std::lock_guard lock(impl_->mu);
  impl_->violations.clear();
}

}  // namespace jitbroker::testing
