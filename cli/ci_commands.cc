#include "cli/ci_commands.h"

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <fstream>
#include <iterator>
#include <optional>
#include <sstream>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "broker/net/url.h"
#include "cli/format.h"
#include "jitbroker/secret.h"

namespace jitbroker::cli {

namespace {

using nlohmann::json;

constexpr std::string_view kTokenTypeIdToken = "urn:ietf:params:oauth:token-type:id_token";
constexpr std::string_view kTokenTypeJwt = "urn:ietf:params:oauth:token-type:jwt";
constexpr std::string_view kGrantType = "urn:ietf:params:oauth:grant-type:token-exchange";
constexpr size_t kMaxOidcTokenBytes = 64 * 1024;

Error Usage(std::string hint) { return InvalidArgument("usage", std::move(hint)); }

void Trim(std::string* s) {
  while (!s->empty() &&
         (s->back() == '\n' || s->back() == '\r' || s->back() == ' ' || s->back() == '\t')) {
    s->pop_back();
  }
}

// GitHub Actions: GET $ACTIONS_ID_TOKEN_REQUEST_URL&audience=AUD with the
// request token as bearer; the answer is {"value": "<jwt>"}. Retried a few
// times on transport errors and 5xx, as actions/toolkit does.
Result<SecretValue> FetchActionsToken(const Context& ctx, const std::string& audience) {
  std::optional<std::string> url = ctx.getenv("ACTIONS_ID_TOKEN_REQUEST_URL");
  std::optional<std::string> request_token = ctx.getenv("ACTIONS_ID_TOKEN_REQUEST_TOKEN");
  if (!url || !request_token) {
    return std::unexpected(Usage(
        "no OIDC token: pass --token-file or --token-env, set JITBROKER_OIDC_TOKEN, or run in "
        "GitHub Actions with 'permissions: id-token: write'"));
  }
  const std::string full = internal::ActionsTokenUrl(*url, audience);
  SecretValue bearer(std::move(*request_token));
  if (full.empty()) {
    return std::unexpected(
        Usage("ACTIONS_ID_TOKEN_REQUEST_URL must be an https URL (or http to a loopback host)"));
  }
  Error last = Internal("no attempt");
  for (int attempt = 0; attempt < 4; ++attempt) {
    if (attempt > 0) {
      std::this_thread::sleep_for(std::chrono::milliseconds(500 * attempt));
    }
    net::HttpRequest req;
    req.method = "GET";
    req.url = full;
    req.bearer = bearer.Clone();
    req.timeout = std::chrono::seconds(15);
    req.headers.emplace_back("Accept", "application/json; api-version=2.0");
    Result<net::HttpResponse> resp = ctx.http->Send(req);
    if (!resp) {
      last = resp.error();
      continue;
    }
    if (resp->status >= 500) {
      last = Unavailable("actions_token", "GitHub's OIDC token endpoint answered HTTP " +
                                              std::to_string(resp->status));
      continue;
    }
    if (resp->status != 200) {
      return std::unexpected(
          Internal("GitHub's OIDC token endpoint answered HTTP " + std::to_string(resp->status),
                   "does the job have 'permissions: id-token: write'?"));
    }
    auto body = ParseJsonStrict(resp->body);
    SecureWipe(resp->body.data(), resp->body.size());
    if (!body || !body->is_object() || !(*body)["value"].is_string() ||
        (*body)["value"].get_ref<const std::string&>().empty()) {
      return std::unexpected(Internal("GitHub's OIDC token endpoint sent an unexpected response"));
    }
    std::string& value = (*body)["value"].get_ref<std::string&>();
    SecretValue token(value);
    SecureWipe(value.data(), value.size());
    return token;
  }
  return std::unexpected(last);
}

Result<SecretValue> ReadFileToken(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    return std::unexpected(
        Internal("cannot open OIDC token file " + SanitizeForTerminal(path), std::strerror(errno)));
  }
  std::string text;
  text.resize(kMaxOidcTokenBytes + 1);
  in.read(text.data(), static_cast<std::streamsize>(text.size()));
  text.resize(static_cast<size_t>(in.gcount()));
  if (text.size() > kMaxOidcTokenBytes) {
    SecureWipe(text.data(), text.size());
    return std::unexpected(
        Internal("OIDC token file " + SanitizeForTerminal(path) + " is too large"));
  }
  Trim(&text);
  SecretValue token(text);
  SecureWipe(text.data(), text.size());
  return token;
}

Result<SecretValue> SubjectToken(const Context& ctx, const ParsedArgs& args) {
  std::optional<SecretValue> token;
  if (auto file = args.Get("token-file")) {
    JITBROKER_ASSIGN_OR_RETURN(SecretValue t, ReadFileToken(*file));
    token = std::move(t);
  } else {
    const std::string var = args.Get("token-env").value_or("JITBROKER_OIDC_TOKEN");
    if (std::optional<std::string> v = ctx.getenv(var.c_str())) {
      Trim(&*v);
      token = SecretValue(*v);
      SecureWipe(v->data(), v->size());
    } else if (args.Has("token-env")) {
      return std::unexpected(Usage("$" + var + " is not set"));
    }
  }
  if (!token) {
    std::optional<std::string> aud = args.Get("oidc-audience");
    if (!aud) {
      return std::unexpected(
          Usage("no OIDC token: pass --token-file or --token-env, set JITBROKER_OIDC_TOKEN, or "
                "in GitHub Actions pass --oidc-audience (the trust policy's audience)"));
    }
    JITBROKER_ASSIGN_OR_RETURN(SecretValue t, FetchActionsToken(ctx, *aud));
    token = std::move(t);
  }
  if (token->empty()) {
    return std::unexpected(Usage("the OIDC token is empty"));
  }
  return std::move(*token);
}

// Credential members that are metadata (the non-secret fields of the
// issuers' credentials: a JWT's alg and kid, a GitHub token's permissions
// and repositories, …), shown by default and never masked, with everything
// under them; every other string member is treated as secret (masked, and
// printed only on request). Masking metadata would hide ordinary words such
// as "ES256" or "read" everywhere in a CI log.
constexpr std::string_view kCredentialMetadata[] = {"type",
                                                    "expires_at",
                                                    "issued_at",
                                                    "token_type",
                                                    "scope",
                                                    "scopes",
                                                    "audience",
                                                    "region",
                                                    "alg",
                                                    "kid",
                                                    "permissions",
                                                    "repositories",
                                                    "repository_selection",
                                                    "installation_id",
                                                    "expiration"};

bool IsMetadataKey(std::string_view key) {
  for (std::string_view k : kCredentialMetadata) {
    if (k == key) {
      return true;
    }
  }
  return false;
}

// Every secret string of an exchange response: access_token and the
// credential's non-metadata strings (nested ones too).
void CollectSecrets(const json& j, bool top, std::vector<std::string>* out) {
  if (j.is_object()) {
    for (auto it = j.begin(); it != j.end(); ++it) {
      if (top) {
        if (it.key() == "access_token" && it->is_string()) {
          out->push_back(it->get<std::string>());
        } else if (it.key() == "credential") {
          CollectSecrets(*it, false, out);
        }
        continue;
      }
      if (IsMetadataKey(it.key())) {
        continue;
      }
      if (it->is_string()) {
        out->push_back(it->get<std::string>());
      } else {
        CollectSecrets(*it, false, out);
      }
    }
  } else if (j.is_array() && !top) {
    for (const json& v : j) {
      if (v.is_string()) {
        out->push_back(v.get<std::string>());
      } else {
        CollectSecrets(v, false, out);
      }
    }
  }
}

}  // namespace

namespace internal {

std::string AddMaskCommands(const std::vector<std::string>& secrets) {
  std::string out;
  auto add = [&out](std::string_view value) {
    if (value.empty()) {
      return;
    }
    out += "::add-mask::";
    out += EscapeWorkflowCommandData(value);
    out += '\n';
  };
  for (const std::string& secret : secrets) {
    add(secret);
    // A multi-line secret is also masked line by line, as the log shows it.
    if (secret.find_first_of("\r\n") != std::string::npos) {
      size_t start = 0;
      while (start < secret.size()) {
        size_t end = secret.find_first_of("\r\n", start);
        if (end == std::string::npos) {
          end = secret.size();
        }
        add(std::string_view(secret).substr(start, end - start));
        start = end + 1;
      }
    }
  }
  return out;
}

std::string EscapeWorkflowCommandData(std::string_view value) {
  // actions/toolkit escapeData: the runner unescapes these in command data.
  std::string out;
  out.reserve(value.size());
  for (char c : value) {
    if (c == '%') {
      out += "%25";
    } else if (c == '\r') {
      out += "%0D";
    } else if (c == '\n') {
      out += "%0A";
    } else {
      out += c;
    }
  }
  return out;
}

bool BrokerUrlIsSafeForCi(std::string_view base_url) {
  return BrokerUrlIsEncryptedOrLoopback(base_url);
}

std::vector<std::string> ExchangeSecrets(const nlohmann::json& response) {
  std::vector<std::string> out;
  CollectSecrets(response, true, &out);
  std::sort(out.begin(), out.end());
  out.erase(std::unique(out.begin(), out.end()), out.end());
  return out;
}

std::string ActionsTokenUrl(std::string_view request_url, std::string_view audience) {
  Result<net::Url> parsed = net::ParseUrl(request_url, net::UrlPolicy::ActionsTokenRequestUrl());
  if (!parsed) {
    return "";
  }
  std::string url(request_url);
  url += parsed->query ? "&" : "?";
  url += "audience=" + PercentEncode(audience);
  return url;
}

}  // namespace internal

Result<int> CiExchange(const Context& ctx, const Invocation& inv) {
  const ParsedArgs& args = inv.args;
  if (args.Has("token-only") && args.Has("export")) {
    return std::unexpected(Usage("--token-only and --export exclude each other"));
  }
  std::string_view token_type = kTokenTypeIdToken;
  if (auto t = args.Get("subject-token-type")) {
    if (*t == "jwt") {
      token_type = kTokenTypeJwt;
    } else if (*t != "id_token") {
      return std::unexpected(Usage("--subject-token-type must be id_token or jwt"));
    }
  }
  // The OIDC token and the credential must not cross the network in clear:
  // unlike other commands (a warning), ci exchange refuses before it even
  // asks GitHub for a token.
  if (!internal::BrokerUrlIsSafeForCi(ctx.base_url)) {
    return std::unexpected(
        Usage("ci exchange refuses plain http to a non-loopback broker (" +
              SanitizeForTerminal(ctx.base_url) +
              "): the OIDC token and the credential would travel unencrypted; use https://"));
  }
  std::optional<std::string> export_var = args.Get("export");
  if (export_var) {
    for (char c : *export_var) {
      if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
            c == '_')) {
        return std::unexpected(Usage("--export takes an environment variable name"));
      }
    }
  }
  JITBROKER_ASSIGN_OR_RETURN(SecretValue subject, SubjectToken(ctx, args));

  std::string body = "grant_type=" + PercentEncode(kGrantType, true) +
                     "&subject_token_type=" + PercentEncode(token_type, true) +
                     "&audience=" + PercentEncode(*args.Get("audience"), true);
  if (auto scope = args.Get("scope")) {
    body += "&scope=" + PercentEncode(*scope, true);
  }
  body += "&subject_token=" + PercentEncode(subject.Reveal(), true);
  net::HttpRequest req;
  req.method = "POST";
  req.url = ctx.base_url + "/v1/token";
  req.headers.emplace_back("Content-Type", "application/x-www-form-urlencoded");
  req.headers.emplace_back("Accept", "application/json");
  req.timeout = std::chrono::seconds(60);
  req.body = std::move(body);
  Result<net::HttpResponse> sent = ctx.http->Send(req);
  SecureWipe(req.body.data(), req.body.size());
  if (!sent) {
    return std::unexpected(sent.error());
  }
  net::HttpResponse& resp = *sent;
  auto parsed = ParseJsonStrict(resp.body);
  if (resp.status != 200) {
    if (ctx.json && !resp.body.empty()) {
      *ctx.out << resp.body << "\n";
    }
    std::string error = "unexpected_response";
    std::string description = "HTTP " + std::to_string(resp.status);
    if (parsed && parsed->is_object()) {
      error = Field(*parsed, "error");
      description = Field(*parsed, "error_description");
    }
    *ctx.err << "error: token exchange refused: " << SanitizeForTerminal(error);
    if (!description.empty()) {
      *ctx.err << ": " << SanitizeForTerminal(description);
    }
    *ctx.err << "\n";
    if (auto rid = resp.headers.Get("X-Request-Id")) {
      *ctx.err << "request id: " << SanitizeForTerminal(*rid) << "\n";
    }
    const bool denied =
        error == "unauthorized_client" || error == "invalid_scope" || error == "invalid_target";
    return ToInt(denied ? ExitCode::kDenied : ExitCode::kError);
  }
  if (!parsed || !parsed->is_object()) {
    SecureWipe(resp.body.data(), resp.body.size());
    return std::unexpected(Internal("the broker sent an unexpected response"));
  }
  json& j = *parsed;
  const bool prints_secret = ctx.json || args.Has("token-only") || export_var.has_value();
  if (prints_secret && ctx.getenv("GITHUB_ACTIONS").value_or("") == "true") {
    // GitHub Actions: register every secret with the runner's log masker
    // before it can appear in the log. On stderr, which the runner parses for
    // workflow commands too, so that `$(jitctl ci exchange --token-only)`
    // captures the token alone.
    std::vector<std::string> secrets = internal::ExchangeSecrets(j);
    std::string masks = internal::AddMaskCommands(secrets);
    *ctx.err << masks << std::flush;
    SecureWipe(masks.data(), masks.size());
    for (std::string& secret : secrets) {
      SecureWipe(secret.data(), secret.size());
    }
  }
  if (ctx.json) {
    *ctx.out << resp.body << "\n";
  } else if (args.Has("token-only")) {
    *ctx.out << RawString(j, "access_token").value_or("") << "\n";
  } else if (export_var) {
    *ctx.out << "export " << *export_var << "="
             << ShellQuote(RawString(j, "access_token").value_or("")) << "\n";
  } else {
    // Metadata only: CI logs are widely readable, so the credential is
    // printed only when asked for (--token-only, --export, --json).
    *ctx.out << "trust policy: " << Field(j, "trust_policy") << "\n"
             << "session: " << Field(j, "session_id") << "\n"
             << "grant: " << Field(j, "grant_id") << "\n"
             << "expires in: " << JsonText(Member(j, "expires_in")) << " s\n";
    if (!Field(j, "scope").empty()) {
      *ctx.out << "scope: " << Field(j, "scope") << "\n";
    }
    if (!Field(j, "issued_token_type").empty()) {
      *ctx.out << "issued token type: " << Field(j, "issued_token_type") << "\n";
    }
    *ctx.out << "credential: not shown (use --token-only, --export VAR or --json)\n";
    const json& cred = Member(j, "credential");
    if (cred.is_object()) {
      for (auto it = cred.begin(); it != cred.end(); ++it) {
        if (IsMetadataKey(it.key()) && it->is_string()) {
          *ctx.out << "  " << SanitizeForTerminal(it.key()) << ": " << JsonText(it.value()) << "\n";
        }
      }
    }
  }
  std::flush(*ctx.out);
  SecureWipe(resp.body.data(), resp.body.size());
  if (auto it = j.find("access_token"); it != j.end() && it->is_string()) {
    std::string& s = it->get_ref<std::string&>();
    SecureWipe(s.data(), s.size());
  }
  return ToInt(ExitCode::kOk);
}

}  // namespace jitbroker::cli
