#include "tests/fakes/fake_sts.h"

#include <httplib.h>
#include <signal.h>

#include <algorithm>
#include <atomic>
#include <cctype>
#include <functional>
#include <mutex>
#include <random>
#include <thread>

#include <nlohmann/json.hpp>

#include "broker/common/time_util.h"
#include "broker/crypto/crypto.h"
#include "broker/net/url.h"
#include "issuers/aws_sts/sigv4.h"
#include "tests/support/loopback.h"

namespace jitbroker::testing {

namespace {

namespace aws = issuers::aws_sts;

bool IsNameChar(char c) {
  return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
         std::string_view("_+=,.@-").find(c) != std::string_view::npos;
}

bool ValidName(const std::string& s) {
  return s.size() >= 2 && s.size() <= 64 && std::all_of(s.begin(), s.end(), IsNameChar);
}

std::string Xml(std::string_view s) {
  std::string out;
  for (char c : s) {
    switch (c) {
      case '<':
        out += "&lt;";
        break;
      case '>':
        out += "&gt;";
        break;
      case '&':
        out += "&amp;";
        break;
      case '"':
        out += "&quot;";
        break;
      default:
        out.push_back(c);
    }
  }
  return out;
}

// Random bytes for the fake's ids and credentials: unique, not secret. A
// per-thread PRNG: OpenSSL's generator took 4 % of the mint benchmark's
// CPU in the fake alone.
std::string FakeRandom(size_t n) {
  static thread_local std::mt19937_64 rng(std::random_device{}());
  std::string out(n, '\0');
  for (char& c : out) {
    c = static_cast<char>(rng() & 0xff);
  }
  return out;
}

std::string Alnum(size_t n) {
  static constexpr char kChars[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
  const std::string raw = FakeRandom(n);
  std::string out;
  for (char c : raw) {
    out.push_back(kChars[static_cast<unsigned char>(c) % 36]);
  }
  return out;
}

}  // namespace

struct FakeSts::Impl {
  FakeStsOptions options;
  httplib::Server server;
  std::thread thread;
  mutable std::mutex mu;
  std::map<std::string, FakeRole> roles;
  struct Injection {
    std::string code;
    int status = 500;
    int remaining = 0;
    std::string action;  // empty = every action
  };
  // Base identities obtained with AssumeRoleWithWebIdentity: access key id
  // -> the role they act as and when they expire.
  struct WebSession {
    std::string role_arn;
    int64_t expires_at = 0;
  };
  std::map<std::string, WebSession> web_sessions;
  size_t web_exchanges = 0;
  // IAM: role name -> policy name -> document (the role's inline policies).
  std::map<std::string, std::map<std::string, std::string>> role_policies;
  std::vector<Injection> injections;
  std::vector<Issued> issued;
  std::map<std::string, std::pair<std::string, std::string>> secrets;  // akid -> (secret, token)
  std::vector<std::string> violations;
  std::vector<SignedRequest> signed_requests;
  std::atomic<int64_t> latency_ms{0};
  std::atomic<int64_t> skew_s{0};
  std::atomic<size_t> requests{0};
  aws::SigningKeyCache signing_keys;  // as AWS keeps derived keys
  size_t policy_writes = 0;           // under mu
  size_t calls = 0;                   // calls with issued credentials (under mu)
  size_t denied_calls = 0;

  TimePoint Now() const {
    return std::chrono::time_point_cast<std::chrono::nanoseconds>(
               std::chrono::system_clock::now()) +
           std::chrono::seconds(skew_s.load());
  }

  void Error(httplib::Response& res, int status, const std::string& code,
             const std::string& message) {
    res.status = status;
    res.set_header("Date", HttpDate(Now()));
    res.set_content(
        "<ErrorResponse xmlns=\"https://sts.amazonaws.com/doc/2011-06-15/\">"
        "<Error><Type>Sender</Type><Code>" +
            Xml(code) + "</Code><Message>" + Xml(message) + "</Message></Error><RequestId>" +
            Alnum(8) + "</RequestId></ErrorResponse>",
        "text/xml");
  }

  static std::string HttpDate(TimePoint t) {
    const std::time_t secs = static_cast<std::time_t>(ToUnixSeconds(t));
    std::tm tm{};
    gmtime_r(&secs, &tm);
    char buf[64];
    std::strftime(buf, sizeof(buf), "%a, %d %b %Y %H:%M:%S GMT", &tm);
    return buf;
  }

  void Violation(std::string what) {
    std::lock_guard lock(mu);
    violations.push_back(std::move(what));
  }

  // SigV4, as AWS checks it: signed for `service` in its region with the
  // broker's base identity or (when `temporary_ok`) a credential this fake
  // issued, with its session token. Returns the access key id, or answers
  // the error and returns "".
  std::string CheckSignature(const httplib::Request& req, httplib::Response& res,
                             const std::string& service, const std::string& region,
                             bool temporary_ok) {
    const std::string authz = req.get_header_value("Authorization");
    constexpr std::string_view kAlg = "AWS4-HMAC-SHA256 ";
    if (!authz.starts_with(kAlg)) {
      Error(res, 403, "MissingAuthenticationToken", "Request is missing Authentication Token");
      return "";
    }
    // Credential=AKID/DATE/REGION/sts/aws4_request, SignedHeaders=a;b, Signature=hex
    std::map<std::string, std::string> parts;
    std::string_view rest = std::string_view(authz).substr(kAlg.size());
    while (!rest.empty()) {
      const size_t comma = rest.find(',');
      std::string_view item = rest.substr(0, comma);
      while (item.starts_with(' ')) {
        item.remove_prefix(1);
      }
      const size_t eq = item.find('=');
      if (eq != std::string_view::npos) {
        parts[std::string(item.substr(0, eq))] = std::string(item.substr(eq + 1));
      }
      rest = comma == std::string_view::npos ? std::string_view() : rest.substr(comma + 1);
    }
    const std::string credential = parts["Credential"];
    const std::string signed_headers = parts["SignedHeaders"];
    const std::string signature = parts["Signature"];
    std::vector<std::string> scope;
    for (size_t pos = 0;;) {
      const size_t slash = credential.find('/', pos);
      scope.push_back(credential.substr(pos, slash - pos));
      if (slash == std::string::npos) {
        break;
      }
      pos = slash + 1;
    }
    if (scope.size() != 5 || scope[3] != service || scope[4] != "aws4_request" ||
        scope[2] != region || signed_headers.empty() || signature.size() != 64) {
      Error(res, 400, "IncompleteSignature",
            "Authorization header requires Credential, SignedHeaders and Signature for " + service +
                " in " + region);
      return "";
    }
    const std::string akid = scope[0];
    std::string secret, token;
    {
      std::lock_guard lock(mu);
      auto it = options.keys.find(akid);
      auto temp = secrets.find(akid);
      if (it != options.keys.end()) {
        secret = it->second;
        if (auto t = options.session_tokens.find(akid); t != options.session_tokens.end()) {
          token = t->second;
        }
        if (auto b = web_sessions.find(akid);
            b != web_sessions.end() && b->second.expires_at <= ToUnixSeconds(Now())) {
          Error(res, 403, "ExpiredToken", "The security token included in the request is expired");
          return "";
        }
      } else if (temporary_ok && temp != secrets.end()) {
        secret = temp->second.first;
        token = temp->second.second;
        for (const Issued& i : issued) {
          if (i.access_key_id == akid && i.expires_at <= ToUnixSeconds(Now())) {
            Error(res, 403, "ExpiredToken",
                  "The security token included in the request is expired");
            return "";
          }
        }
      } else {
        Error(res, 403, "InvalidClientTokenId",
              "The security token included in the request is invalid.");
        return "";
      }
    }
    const std::string amz_date = req.get_header_value("X-Amz-Date");
    std::vector<std::string> names;
    for (size_t pos = 0;;) {
      const size_t semi = signed_headers.find(';', pos);
      names.push_back(signed_headers.substr(pos, semi - pos));
      if (semi == std::string::npos) {
        break;
      }
      pos = semi + 1;
    }
    auto signs = [&](const char* h) {
      return std::find(names.begin(), names.end(), h) != names.end();
    };
    if (!signs("host") || !signs("x-amz-date") ||
        (req.has_header("X-Amz-Security-Token") && !signs("x-amz-security-token"))) {
      Violation("SignedHeaders lacks host, x-amz-date or x-amz-security-token: " + signed_headers);
      Error(res, 403, "SignatureDoesNotMatch",
            "The request signature we calculated does not match the signature you provided.");
      return "";
    }
    if (scope[1] != amz_date.substr(0, 8)) {
      Error(res, 403, "SignatureDoesNotMatch", "Credential date does not match X-Amz-Date");
      return "";
    }
    // Recompute over the signed headers as received.
    aws::SigV4Request sreq;
    sreq.method = req.method;
    sreq.path = req.path;
    sreq.body = req.body;
    for (const std::string& n : names) {
      if (!req.has_header(n)) {
        Error(res, 403, "SignatureDoesNotMatch", "a signed header is missing: " + n);
        return "";
      }
      sreq.headers.emplace_back(n, req.get_header_value(n));
    }
    aws::AwsCredentials creds;
    creds.access_key_id = akid;
    creds.secret_access_key = SecretValue(secret);
    auto sig = aws::Sign(sreq, creds, amz_date, region, service, &signing_keys);
    if (!sig || !crypto::ConstantTimeEquals(
                    sig->authorization.substr(sig->authorization.rfind('=') + 1), signature)) {
      Error(res, 403, "SignatureDoesNotMatch",
            "The request signature we calculated does not match the signature you provided.");
      return "";
    }
    {
      SignedRequest rec;
      rec.method = req.method;
      rec.path = req.path;
      rec.body = req.body;
      rec.authorization = authz;
      for (const std::string& n : names) {
        rec.headers[n] = req.get_header_value(n);
      }
      std::lock_guard lock(mu);
      if (options.keep_issued) {
        signed_requests.push_back(std::move(rec));
      }
    }
    if (!token.empty() && req.get_header_value("X-Amz-Security-Token") != token) {
      Error(res, 403, "InvalidClientTokenId",
            "The security token included in the request is invalid.");
      return "";
    }
    auto when = ParseRfc3339(amz_date.substr(0, 4) + "-" + amz_date.substr(4, 2) + "-" +
                             amz_date.substr(6, 2) + "T" + amz_date.substr(9, 2) + ":" +
                             amz_date.substr(11, 2) + ":" + amz_date.substr(13, 2) + "Z");
    if (!when || std::abs(ToUnixSeconds(*when) - ToUnixSeconds(Now())) > 300) {
      Error(res, 403, "SignatureDoesNotMatch",
            "Signature expired: " + amz_date + " is now earlier than the allowed window");
      return "";
    }
    return akid;
  }

  // The service a request is signed for (its credential scope), or "".
  static std::string ServiceOf(const httplib::Request& req) {
    const std::string authz = req.get_header_value("Authorization");
    const size_t at = authz.find("Credential=");
    if (at == std::string::npos) {
      return "";
    }
    std::string cred = authz.substr(at + 11, authz.find(',', at) - at - 11);
    size_t end = cred.rfind('/');
    if (end == std::string::npos) {
      return "";
    }
    cred.resize(end);
    return cred.substr(cred.rfind('/') + 1);
  }

  // POST /: STS (AssumeRole), IAM (GetRolePolicy, PutRolePolicy) or a call
  // made with issued credentials (AuthorizeCall), told apart by the service
  // the request is signed for.
  void Handle(const httplib::Request& req, httplib::Response& res) {
    ++requests;
    if (const int64_t ms = latency_ms.load(); ms > 0) {
      std::this_thread::sleep_for(std::chrono::milliseconds(ms));
    }
    if (!req.get_header_value("Content-Type").starts_with("application/x-www-form-urlencoded")) {
      return Error(res, 400, "InvalidParameterValue", "Content-Type must be a form");
    }
    auto form = net::ParseForm(req.body);
    if (!form) {
      return Error(res, 400, "MalformedQueryString", "the body is not a form");
    }
    std::map<std::string, std::string> p;
    for (auto& [k, v] : *form) {
      if (!p.emplace(k, v).second) {
        return Error(res, 400, "InvalidParameterValue", "parameter given twice: " + k);
      }
    }
    std::optional<Injection> hit;
    {
      std::lock_guard lock(mu);
      for (auto& inj : injections) {
        if (inj.remaining != 0 && (inj.action.empty() || inj.action == p["Action"])) {
          if (inj.remaining > 0) {
            --inj.remaining;
          }
          hit = inj;
          break;
        }
      }
    }
    if (hit) {
      return Error(res, hit->status, hit->code, "injected " + hit->code);
    }
    if (p["Action"] == "AssumeRoleWithWebIdentity") {
      return HandleWebIdentity(res, p);
    }
    const std::string service = ServiceOf(req);
    if (service == "iam") {
      return HandleIam(req, res, p);
    }
    if (service != "sts" || p["Action"] != "AssumeRole") {
      return HandleCall(req, res, service, p);
    }
    HandleAssumeRole(req, res, p);
  }

  void HandleAssumeRole(const httplib::Request& req, httplib::Response& res,
                        std::map<std::string, std::string>& p) {
    const std::string akid = CheckSignature(req, res, "sts", options.region, false);
    if (akid.empty()) {
      return;
    }
    if (p["Version"] != "2011-06-15") {
      return Error(res, 400, "InvalidParameterValue", "Version must be 2011-06-15");
    }
    Issued out;
    out.role_arn = p["RoleArn"];
    out.role_session_name = p["RoleSessionName"];
    out.source_identity = p["SourceIdentity"];
    out.policy = p["Policy"];
    if (out.role_arn.size() < 20 || out.role_arn.size() > 2048) {
      return Error(res, 400, "ValidationError", "RoleArn must be 20-2048 characters");
    }
    if (!ValidName(out.role_session_name)) {
      return Error(res, 400, "ValidationError", "RoleSessionName must satisfy [\\w+=,.@-]{2,64}");
    }
    if (p.contains("SourceIdentity") &&
        (!ValidName(out.source_identity) || out.source_identity.starts_with("aws:"))) {
      return Error(res, 400, "ValidationError", "SourceIdentity must satisfy [\\w+=,.@-]{2,64}");
    }
    out.duration_seconds = 3600;
    if (p.contains("DurationSeconds")) {
      char* end = nullptr;
      out.duration_seconds = std::strtoll(p["DurationSeconds"].c_str(), &end, 10);
      if (*end != '\0' || out.duration_seconds < 900 || out.duration_seconds > 43200) {
        return Error(res, 400, "ValidationError", "DurationSeconds must be between 900 and 43200");
      }
    }
    for (char c : out.policy) {
      const auto u = static_cast<unsigned char>(c);
      if (!(u == '\t' || u == '\n' || u == '\r' || u >= 0x20)) {
        return Error(res, 400, "ValidationError", "Policy has a character outside its pattern");
      }
    }
    if (out.policy.size() > 2048) {
      return Error(res, 400, "ValidationError", "Policy must be at most 2048 characters");
    }
    if (out.policy.size() > options.packed_policy_limit) {
      return Error(res, 400, "PackedPolicyTooLarge",
                   "Packed policy consumes 103% of allotted space, please use smaller policy "
                   "for the session.");
    }
    for (int i = 1; p.contains("Tags.member." + std::to_string(i) + ".Key"); ++i) {
      if (i > 50) {
        return Error(res, 400, "ValidationError", "at most 50 session tags");
      }
      const std::string n = "Tags.member." + std::to_string(i);
      const std::string& key = p[n + ".Key"];
      if (key.empty() || key.size() > 128 || p[n + ".Value"].size() > 256) {
        return Error(res, 400, "ValidationError", "a tag key is 1-128, a value 0-256 characters");
      }
      out.tags[key] = p[n + ".Value"];
    }
    for (int i = 1; p.contains("TransitiveTagKeys.member." + std::to_string(i)); ++i) {
      const std::string& k = p["TransitiveTagKeys.member." + std::to_string(i)];
      if (!out.tags.contains(k)) {
        return Error(res, 400, "InvalidParameterValue",
                     "transitive tag key " + k + " is not a session tag");
      }
      out.transitive_tag_keys.push_back(k);
    }
    std::optional<FakeRole> role;
    {
      std::lock_guard lock(mu);
      auto it = roles.find(out.role_arn);
      if (it != roles.end() && TrustsLocked(it->second.trusted_keys, akid)) {
        role = it->second;
      }
    }
    if (!role) {
      return Error(res, 403, "AccessDenied",
                   "User: arn:aws:iam::000000000000:user/broker is not authorized to perform: "
                   "sts:AssumeRole on resource: " +
                       out.role_arn);
    }
    if (!role->external_id.empty() && p["ExternalId"] != role->external_id) {
      return Error(res, 403, "AccessDenied", "not authorized to perform: sts:AssumeRole");
    }
    if (out.duration_seconds > role->max_session_seconds) {
      return Error(res, 400, "ValidationError",
                   "The requested DurationSeconds exceeds the MaxSessionDuration set for this "
                   "role.");
    }
    out.access_key_id = "ASIA" + Alnum(16);
    const std::string secret = crypto::Base64Encode(FakeRandom(30));
    const std::string token = "FwoGZXIvYXdzE" + crypto::Base64Encode(FakeRandom(300));
    const TimePoint now = Now();
    out.expires_at = ToUnixSeconds(now) + out.duration_seconds;
    const std::string role_name = out.role_arn.substr(out.role_arn.rfind('/') + 1);
    const std::string account = out.role_arn.substr(13, 12);  // arn:aws:iam::ACCOUNT
    {
      std::lock_guard lock(mu);
      if (options.keep_issued) {
        secrets[out.access_key_id] = {secret, token};
        issued.push_back(out);
      }
    }
    res.status = 200;
    res.set_header("Date", HttpDate(now));
    res.set_content(
        "<AssumeRoleResponse xmlns=\"https://sts.amazonaws.com/doc/2011-06-15/\">\n"
        "  <AssumeRoleResult>\n"
        "    <SourceIdentity>" +
            Xml(out.source_identity) +
            "</SourceIdentity>\n"
            "    <AssumedRoleUser>\n"
            "      <AssumedRoleId>AROA" +
            Alnum(17) + ":" + Xml(out.role_session_name) +
            "</AssumedRoleId>\n"
            "      <Arn>arn:aws:sts::" +
            account + ":assumed-role/" + Xml(role_name) + "/" + Xml(out.role_session_name) +
            "</Arn>\n"
            "    </AssumedRoleUser>\n"
            "    <Credentials>\n"
            "      <AccessKeyId>" +
            out.access_key_id +
            "</AccessKeyId>\n"
            "      <SecretAccessKey>" +
            Xml(secret) +
            "</SecretAccessKey>\n"
            "      <SessionToken>" +
            Xml(token) +
            "</SessionToken>\n"
            "      <Expiration>" +
            FormatRfc3339(FromUnixSeconds(out.expires_at)) +
            "</Expiration>\n"
            "    </Credentials>\n"
            "    <PackedPolicySize>" +
            std::to_string(out.policy.size() * 100 / 2048) +
            "</PackedPolicySize>\n"
            "  </AssumeRoleResult>\n"
            "  <ResponseMetadata><RequestId>" +
            Alnum(8) +
            "</RequestId></ResponseMetadata>\n"
            "</AssumeRoleResponse>\n",
        "text/xml");
  }

  // RFC 3986 percent-encoding of everything but unreserved characters, as
  // IAM encodes the PolicyDocument it answers.
  static std::string UrlEncode(std::string_view s) {
    static constexpr char kHex[] = "0123456789ABCDEF";
    std::string out;
    for (char c : s) {
      const auto u = static_cast<unsigned char>(c);
      if ((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' ||
          c == '_' || c == '.' || c == '~') {
        out.push_back(c);
      } else {
        out += '%';
        out.push_back(kHex[u >> 4]);
        out.push_back(kHex[u & 15]);
      }
    }
    return out;
  }

  // IAM counts a policy's characters without whitespace.
  static size_t PolicyChars(std::string_view doc) {
    return static_cast<size_t>(std::count_if(doc.begin(), doc.end(), [](char c) {
      return c != ' ' && c != '\n' && c != '\r' && c != '\t';
    }));
  }

  void HandleIam(const httplib::Request& req, httplib::Response& res,
                 std::map<std::string, std::string>& p) {
    // IAM is global: signed for us-east-1 whatever STS's region.
    const std::string akid = CheckSignature(req, res, "iam", "us-east-1", false);
    if (akid.empty()) {
      return;
    }
    if (p["Version"] != "2010-05-08") {
      return Error(res, 400, "InvalidParameterValue", "Version must be 2010-05-08");
    }
    const std::string& role_name = p["RoleName"];
    const std::string& policy_name = p["PolicyName"];
    if (role_name.empty() || role_name.size() > 64 || policy_name.empty() ||
        policy_name.size() > 128 ||
        !std::all_of(policy_name.begin(), policy_name.end(), IsNameChar)) {
      return Error(res, 400, "ValidationError", "RoleName and PolicyName are required");
    }
    std::lock_guard lock(mu);
    bool trusted = false;
    bool known = false;
    for (const auto& [arn, role] : roles) {
      if (arn.substr(arn.rfind('/') + 1) == role_name) {
        known = true;
        trusted = TrustsLocked(role.iam_keys, akid);
      }
    }
    if (!known) {
      return Error(res, 404, "NoSuchEntity",
                   "The role with name " + role_name + " cannot be found.");
    }
    if (!trusted) {
      return Error(
          res, 403, "AccessDenied",
          "User is not authorized to perform: iam:" + p["Action"] + " on role " + role_name);
    }
    auto& policies = role_policies[role_name];
    if (p["Action"] == "GetRolePolicy") {
      auto it = policies.find(policy_name);
      if (it == policies.end()) {
        return Error(res, 404, "NoSuchEntity",
                     "The role policy with name " + policy_name + " cannot be found.");
      }
      res.status = 200;
      res.set_content(
          "<GetRolePolicyResponse xmlns=\"https://iam.amazonaws.com/doc/2010-05-08/\">"
          "<GetRolePolicyResult><PolicyName>" +
              Xml(policy_name) + "</PolicyName><RoleName>" + Xml(role_name) +
              "</RoleName><PolicyDocument>" + UrlEncode(it->second) +
              "</PolicyDocument></GetRolePolicyResult><ResponseMetadata><RequestId>" + Alnum(8) +
              "</RequestId></ResponseMetadata></GetRolePolicyResponse>",
          "text/xml");
      return;
    }
    if (p["Action"] != "PutRolePolicy") {
      return Error(res, 400, "InvalidAction", "Could not find operation " + p["Action"]);
    }
    const std::string& doc = p["PolicyDocument"];
    const nlohmann::json parsed = nlohmann::json::parse(doc, nullptr, false);
    if (doc.empty() || doc.size() > 131072 || !parsed.is_object() ||
        !parsed.contains("Statement") || parsed.value("Version", "") != "2012-10-17") {
      return Error(res, 400, "MalformedPolicyDocument", "Syntax errors in policy.");
    }
    size_t total = PolicyChars(doc);
    for (const auto& [name, other] : policies) {
      if (name != policy_name) {
        total += PolicyChars(other);
      }
    }
    if (total > options.role_policy_limit) {
      return Error(res, 409, "LimitExceeded",
                   "Maximum policy size of " + std::to_string(options.role_policy_limit) +
                       " bytes exceeded for role " + role_name);
    }
    policies[policy_name] = doc;
    ++policy_writes;
    res.status = 200;
    res.set_content(
        "<PutRolePolicyResponse xmlns=\"https://iam.amazonaws.com/doc/2010-05-08/\">"
        "<ResponseMetadata><RequestId>" +
            Alnum(8) + "</RequestId></ResponseMetadata></PutRolePolicyResponse>",
        "text/xml");
  }

  static bool ActionMatches(const std::string& pattern, const std::string& action) {
    // IAM's wildcards: '*' any run, '?' one character; case-insensitive.
    std::function<bool(size_t, size_t)> m = [&](size_t i, size_t j) -> bool {
      if (i == pattern.size()) {
        return j == action.size();
      }
      if (pattern[i] == '*') {
        return m(i + 1, j) || (j < action.size() && m(i, j + 1));
      }
      return j < action.size() &&
             (pattern[i] == '?' || std::tolower(static_cast<unsigned char>(pattern[i])) ==
                                       std::tolower(static_cast<unsigned char>(action[j]))) &&
             m(i + 1, j + 1);
    };
    return m(0, 0);
  }

  static std::vector<nlohmann::json> Statements(const nlohmann::json& doc) {
    const auto st = doc.find("Statement");
    if (st == doc.end()) {
      return {};
    }
    return st->is_array() ? st->get<std::vector<nlohmann::json>>()
                          : std::vector<nlohmann::json>{*st};
  }

  static std::vector<std::string> Strings(const nlohmann::json& v) {
    if (v.is_string()) {
      return {v.get<std::string>()};
    }
    std::vector<std::string> out;
    if (v.is_array()) {
      for (const auto& x : v) {
        if (x.is_string()) {
          out.push_back(x.get<std::string>());
        }
      }
    }
    return out;
  }

  // Whether the role's inline policies deny `action` to the session of
  // `cred` (explicit Deny statements, with StringEquals conditions on
  // aws:SourceIdentity or aws:PrincipalTag/KEY). Caller holds mu.
  bool DeniedLocked(const Issued& cred, const std::string& action) const {
    const std::string role_name = cred.role_arn.substr(cred.role_arn.rfind('/') + 1);
    auto policies = role_policies.find(role_name);
    if (policies == role_policies.end()) {
      return false;
    }
    for (const auto& [name, text] : policies->second) {
      const nlohmann::json doc = nlohmann::json::parse(text, nullptr, false);
      for (const nlohmann::json& st : Statements(doc)) {
        if (st.value("Effect", "") != "Deny") {
          continue;
        }
        const auto actions = Strings(st.value("Action", nlohmann::json()));
        if (std::none_of(actions.begin(), actions.end(),
                         [&](const std::string& a) { return ActionMatches(a, action); })) {
          continue;
        }
        bool all = true;
        const nlohmann::json cond = st.value("Condition", nlohmann::json::object());
        for (const auto& [op, keys] : cond.items()) {
          for (const auto& [key, values] : keys.items()) {
            std::string have;
            if (key == "aws:SourceIdentity") {
              have = cred.source_identity;
            } else if (key.starts_with("aws:PrincipalTag/") && cred.tags.contains(key.substr(17))) {
              have = cred.tags.at(key.substr(17));
            }
            const auto want = Strings(values);
            all = all && op == "StringEquals" &&
                  std::find(want.begin(), want.end(), have) != want.end();
          }
        }
        if (all) {
          return true;
        }
      }
    }
    return false;
  }

  // Whether the session policy allows `action` (an Allow statement whose
  // Action matches; resources are not modelled).
  static bool SessionPolicyAllows(const Issued& cred, const std::string& action) {
    const nlohmann::json doc = nlohmann::json::parse(cred.policy, nullptr, false);
    for (const nlohmann::json& st : Statements(doc)) {
      const auto actions = Strings(st.value("Action", nlohmann::json()));
      if (st.value("Effect", "") == "Allow" &&
          std::any_of(actions.begin(), actions.end(),
                      [&](const std::string& a) { return ActionMatches(a, action); })) {
        return true;
      }
    }
    return false;
  }

  // A call to another service made with credentials this fake issued (the
  // AWS CLI's `sns list-topics`, say): signature, session token and expiry
  // checked, then the role's deny policies and the session policy decide.
  // Answers SNS's ListTopics shape for ListTopics, else an empty
  // <ACTIONResponse>.
  void HandleCall(const httplib::Request& req, httplib::Response& res, const std::string& service,
                  std::map<std::string, std::string>& p) {
    const std::string akid = CheckSignature(req, res, service, options.region, true);
    if (akid.empty()) {
      return;
    }
    const std::string action = service + ":" + p["Action"];
    std::optional<Issued> cred;
    {
      std::lock_guard lock(mu);
      for (const Issued& i : issued) {
        if (i.access_key_id == akid) {
          cred = i;
        }
      }
      if (!cred) {
        return Error(res, 403, "AccessDenied", "the base identity may only call STS and IAM here");
      }
      ++calls;
      if (DeniedLocked(*cred, action)) {
        ++denied_calls;
        return Error(res, 403, "AuthorizationError",
                     "User: " + cred->role_arn + " is not authorized to perform: " + action +
                         " with an explicit deny in an identity-based policy");
      }
    }
    if (!SessionPolicyAllows(*cred, action)) {
      return Error(res, 403, "AuthorizationError",
                   "User is not authorized to perform: " + action +
                       " because no session policy allows the " + action + " action");
    }
    const std::string name = Xml(p["Action"]);
    res.status = 200;
    res.set_content("<" + name + "Response><" + name + "Result>" +
                        (p["Action"] == "ListTopics" ? "<Topics/>" : "") + "</" + name +
                        "Result><ResponseMetadata><RequestId>" + Alnum(8) +
                        "</RequestId></ResponseMetadata></" + name + "Response>",
                    "text/xml");
  }

  // Whether `trusted` (access key ids or role ARNs) names `akid` or the role
  // a web-identity base session acts as. Caller holds mu.
  bool TrustsLocked(const std::vector<std::string>& trusted, const std::string& akid) const {
    auto has = [&](const std::string& x) {
      return std::find(trusted.begin(), trusted.end(), x) != trusted.end();
    };
    auto web = web_sessions.find(akid);
    return has(akid) || (web != web_sessions.end() && has(web->second.role_arn));
  }

  // AssumeRoleWithWebIdentity, unsigned as STS takes it: the token must be
  // one configured for the role. The credentials become a base identity.
  void HandleWebIdentity(httplib::Response& res, std::map<std::string, std::string>& p) {
    if (p["Version"] != "2011-06-15") {
      return Error(res, 400, "InvalidParameterValue", "Version must be 2011-06-15");
    }
    const std::string& role_arn = p["RoleArn"];
    const std::string& token = p["WebIdentityToken"];
    if (!ValidName(p["RoleSessionName"]) || token.size() < 4 || token.size() > 20000) {
      return Error(res, 400, "ValidationError", "RoleSessionName or WebIdentityToken is invalid");
    }
    int64_t duration = 3600;
    if (p.contains("DurationSeconds")) {
      duration = std::strtoll(p["DurationSeconds"].c_str(), nullptr, 10);
    }
    std::lock_guard lock(mu);
    auto it = options.web_identity_tokens.find(token);
    if (it == options.web_identity_tokens.end()) {
      return Error(res, 400, "InvalidIdentityToken", "Couldn't retrieve verification key");
    }
    if (it->second != role_arn) {
      return Error(res, 403, "AccessDenied",
                   "Not authorized to perform sts:AssumeRoleWithWebIdentity");
    }
    const std::string akid = "ASIA" + Alnum(16);
    const std::string secret = crypto::Base64Encode(FakeRandom(30));
    const std::string session = "IQoJb3JpZ2lu" + crypto::Base64Encode(FakeRandom(200));
    const TimePoint now = Now();
    options.keys[akid] = secret;
    options.session_tokens[akid] = session;
    web_sessions[akid] = WebSession{role_arn, ToUnixSeconds(now) + duration};
    ++web_exchanges;
    res.status = 200;
    res.set_content(
        "<AssumeRoleWithWebIdentityResponse xmlns=\"https://sts.amazonaws.com/doc/2011-06-15/\">"
        "<AssumeRoleWithWebIdentityResult><Credentials><AccessKeyId>" +
            akid + "</AccessKeyId><SecretAccessKey>" + Xml(secret) +
            "</SecretAccessKey><SessionToken>" + Xml(session) + "</SessionToken><Expiration>" +
            FormatRfc3339(FromUnixSeconds(ToUnixSeconds(now) + duration)) +
            "</Expiration></Credentials><AssumedRoleUser><Arn>" + Xml(role_arn) +
            "</Arn><AssumedRoleId>AROA" + Alnum(17) +
            "</AssumedRoleId></AssumedRoleUser></AssumeRoleWithWebIdentityResult>"
            "</AssumeRoleWithWebIdentityResponse>",
        "text/xml");
  }
};

FakeSts::~FakeSts() { Stop(); }

std::unique_ptr<FakeSts> FakeSts::Start(FakeStsOptions options) {
  std::unique_ptr<FakeSts> f(new FakeSts());
  f->impl_ = std::make_unique<Impl>();
  Impl& impl = *f->impl_;
  impl.options = std::move(options);
  ::signal(SIGPIPE, SIG_IGN);
  httplib::Server& svr = impl.server;
  const int threads = std::max(1, impl.options.threads);
  svr.new_task_queue = [threads] { return new httplib::ThreadPool(static_cast<size_t>(threads)); };
  // As AWS's front ends do: without it, Nagle holds the body behind the
  // headers until the client's delayed ACK (~40 ms per call).
  svr.set_tcp_nodelay(true);
  svr.set_keep_alive_max_count(1000000);  // cpp-httplib closes after 5 by default
  svr.set_keep_alive_timeout(2);
  svr.set_payload_max_length(1 << 20);
  svr.Post("/",
           [&impl](const httplib::Request& req, httplib::Response& res) { impl.Handle(req, res); });
  f->port_ = ServeOnLoopback(svr, impl.thread);
  return f->port_ > 0 ? std::move(f) : nullptr;
}

void FakeSts::Stop() {
  if (!impl_) {
    return;
  }
  StopServing(impl_->server, impl_->thread);
}

std::string FakeSts::url() const { return "http://127.0.0.1:" + std::to_string(port_); }

void FakeSts::AddRole(FakeRole role) {
  std::lock_guard lock(impl_->mu);
  impl_->roles[role.arn] = std::move(role);
}

void FakeSts::InjectErrors(const std::string& code, int status, int count,
                           const std::string& action) {
  std::lock_guard lock(impl_->mu);
  impl_->injections.push_back({code, status, count, action});
}

void FakeSts::ClearErrors() {
  std::lock_guard lock(impl_->mu);
  impl_->injections.clear();
}

void FakeSts::SetLatency(std::chrono::milliseconds latency) {
  impl_->latency_ms.store(latency.count());
}

void FakeSts::SetClockSkew(std::chrono::seconds skew) { impl_->skew_s.store(skew.count()); }

std::optional<FakeSts::Issued> FakeSts::Verify(const std::string& access_key_id,
                                               const std::string& secret_access_key,
                                               const std::string& session_token) const {
  std::lock_guard lock(impl_->mu);
  auto it = impl_->secrets.find(access_key_id);
  if (it == impl_->secrets.end() || it->second.first != secret_access_key ||
      it->second.second != session_token) {
    return std::nullopt;
  }
  for (const Issued& i : impl_->issued) {
    if (i.access_key_id == access_key_id && i.expires_at > ToUnixSeconds(impl_->Now())) {
      return i;
    }
  }
  return std::nullopt;
}

bool FakeSts::SecretActive(const std::string& secret_access_key) const {
  std::lock_guard lock(impl_->mu);
  for (const auto& [akid, secret] : impl_->secrets) {
    if (secret.first == secret_access_key) {
      for (const Issued& i : impl_->issued) {
        if (i.access_key_id == akid) {
          return i.expires_at > ToUnixSeconds(impl_->Now()) && !impl_->DeniedLocked(i, "sts:X");
        }
      }
    }
  }
  return false;
}

std::optional<std::string> FakeSts::RolePolicy(const std::string& role_name,
                                               const std::string& policy_name) const {
  std::lock_guard lock(impl_->mu);
  auto role = impl_->role_policies.find(role_name);
  if (role == impl_->role_policies.end() || !role->second.contains(policy_name)) {
    return std::nullopt;
  }
  return role->second.at(policy_name);
}

void FakeSts::SetRolePolicy(const std::string& role_name, const std::string& policy_name,
                            const std::string& document) {
  std::lock_guard lock(impl_->mu);
  impl_->role_policies[role_name][policy_name] = document;
}

void FakeSts::ExpireBaseSessions() {
  std::lock_guard lock(impl_->mu);
  for (auto& [akid, session] : impl_->web_sessions) {
    session.expires_at = 0;
  }
}

void FakeSts::AllowWebIdentity(const std::string& token, const std::string& role_arn) {
  std::lock_guard lock(impl_->mu);
  impl_->options.web_identity_tokens[token] = role_arn;
}

size_t FakeSts::WebIdentityExchanges() const {
  std::lock_guard lock(impl_->mu);
  return impl_->web_exchanges;
}

size_t FakeSts::PolicyWrites() const {
  std::lock_guard lock(impl_->mu);
  return impl_->policy_writes;
}

size_t FakeSts::DeniedCalls() const {
  std::lock_guard lock(impl_->mu);
  return impl_->denied_calls;
}

std::vector<FakeSts::Issued> FakeSts::IssuedCredentials() const {
  std::lock_guard lock(impl_->mu);
  return impl_->issued;
}

size_t FakeSts::Requests() const { return impl_->requests.load(); }

std::vector<FakeSts::SignedRequest> FakeSts::SignedRequests() const {
  std::lock_guard lock(impl_->mu);
  return impl_->signed_requests;
}

std::vector<std::string> FakeSts::Violations() const {
  std::lock_guard lock(impl_->mu);
  return impl_->violations;
}

}  // namespace jitbroker::testing
