#include "cli/ci_commands.h"

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

#include "cli/format.h"
#include "jitbroker/secret.h"
#include "broker/net/url.h"

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

}  // namespace

namespace internal {

std::string ActionsTokenUrl(std::string_view request_url, std::string_view audience) {
  if (!request_url.starts_with("https://") &&
      !(request_url.starts_with("http://") && net::IsLoopbackUrl(request_url))) {
    return "";
  }
  for (char c : request_url) {
    if (static_cast<unsigned char>(c) <= 0x20 || c == 0x7f || c == '#') {
      return "";
    }
  }
  std::string url(request_url);
  url += url.find('?') == std::string::npos ? "?" : "&";
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
  if (ctx.json) {
    *ctx.out << resp.body << "\n";
  } else if (args.Has("token-only")) {
    *ctx.out << RawString(j, "access_token").value_or("") << "\n";
  } else if (export_var) {
    *ctx.out << "export " << *export_var << "="
             << ShellQuote(RawString(j, "access_token").value_or("")) << "\n";
  } else {
    *ctx.out << "trust policy: " << Field(j, "trust_policy") << "\n"
             << "session: " << Field(j, "session_id") << "\n"
             << "grant: " << Field(j, "grant_id") << "\n"
             << "expires in: " << JsonText(Member(j, "expires_in")) << " s\n";
    if (!Field(j, "scope").empty()) {
      *ctx.out << "scope: " << Field(j, "scope") << "\n";
    }
    *ctx.out << "credential:\n";
    const json& cred = Member(j, "credential");
    if (cred.is_object()) {
      for (auto it = cred.begin(); it != cred.end(); ++it) {
        *ctx.out << "  " << SanitizeForTerminal(it.key()) << ": " << JsonText(it.value()) << "\n";
      }
    }
  }
  SecureWipe(resp.body.data(), resp.body.size());
  if (auto it = j.find("access_token"); it != j.end() && it->is_string()) {
    std::string& s = it->get_ref<std::string&>();
    SecureWipe(s.data(), s.size());
  }
  return ToInt(ExitCode::kOk);
}

}  // namespace jitbroker::cli
