#include "cli/gcp_serve.h"

#include <algorithm>
#include <cctype>
#include <optional>
#include <string>
#include <utility>

#include <nlohmann/json.hpp>

#include "broker/net/url.h"

namespace jitbroker::cli {

namespace {

constexpr std::string_view kAccounts = "instance/service-accounts/";

void Answer(http::Response& response, int status, std::string_view code, std::string_view message) {
  response.status = status;
  response.content_type = "application/json";
  response.body = ContainerErrorJson(code, message);
}

// Google answers plain values as application/text.
void Text(http::Response& response, std::string body) {
  response.status = 200;
  response.content_type = "application/text";
  response.body = std::move(body);
}

// The host part of a Host header ("127.0.0.1:8080" -> "127.0.0.1"), lower case.
std::string HostName(std::string_view host) {
  std::string_view name = host;
  if (name.starts_with('[')) {
    name = name.substr(0, name.find(']') + 1);
  } else if (const size_t colon = name.rfind(':'); colon != std::string_view::npos) {
    name = name.substr(0, colon);
  }
  std::string out(name);
  std::transform(out.begin(), out.end(), out.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return out;
}

bool HostAllowed(std::string_view host) {
  const std::string name = HostName(host);
  return name == "127.0.0.1" || name == "localhost" || name == "metadata.google.internal" ||
         name == "metadata";
}

std::vector<std::string> SplitScopes(std::string_view list) {
  std::vector<std::string> out;
  while (!list.empty()) {
    const size_t comma = list.find(',');
    std::string_view item = list.substr(0, comma);
    if (!item.empty()) {
      out.emplace_back(item);
    }
    list = comma == std::string_view::npos ? std::string_view() : list.substr(comma + 1);
  }
  return out;
}

}  // namespace

MetadataEndpoint::MetadataEndpoint(MetadataEndpointOptions options)
    : options_(std::move(options)),
      cache_({.name = "jitctl gcp serve",
              .clock = options_.clock,
              .fetch = options_.fetch,
              .log = [this](const std::string& line) { Log(line); }}) {}

void MetadataEndpoint::Prime(GcpCredential credential, TimePoint obtained) {
  cache_.Prime(std::move(credential), obtained);
}

Result<http::RoutePlan> MetadataEndpoint::Plan(http::Request& head) {
  const std::string_view path = head.path();
  if (path != "/" && path != "/computeMetadata/" && !path.starts_with(kMetadataRoot)) {
    return std::unexpected(
        NotFound("not_found", "the metadata server is under " + std::string(kMetadataRoot)));
  }
  if (head.method != "GET") {
    Error e = InvalidArgument("method_not_allowed", "only GET is served");
    e.code = ErrorCode::kFailedPrecondition;
    return std::unexpected(std::move(e));
  }
  head.route = "metadata";
  http::RoutePlan plan;
  plan.max_body_bytes = 0;
  return plan;
}

void MetadataEndpoint::Handle(http::Request& request, http::Response& response) {
  response.SetHeader("Metadata-Flavor", "Google");
  response.SetHeader("Cache-Control", "no-store");
  // Google's own guards against server-side request forgery: a client of
  // the metadata server sends the header, a forwarded request is refused.
  if (request.HeaderCount("Metadata-Flavor") != 1 ||
      request.Header("Metadata-Flavor") != "Google") {
    Log("jitctl gcp serve: refused a request without Metadata-Flavor: Google");
    Answer(response, 403, "missing_metadata_flavor",
           "the metadata server needs the header Metadata-Flavor: Google");
    return;
  }
  if (request.HasHeader("X-Forwarded-For")) {
    Log("jitctl gcp serve: refused a forwarded request");
    Answer(response, 403, "forwarded_request", "forwarded requests are refused");
    return;
  }
  if (request.HeaderCount("Host") != 1 || !HostAllowed(request.Header("Host"))) {
    Log("jitctl gcp serve: refused a request for another host");
    Answer(response, 403, "host_not_allowed",
           "the Host must be 127.0.0.1, localhost or metadata.google.internal");
    return;
  }
  Result<std::vector<std::pair<std::string, std::string>>> query = net::ParseForm(request.query());
  if (!query) {
    Answer(response, 400, "invalid_request", query.error().message);
    return;
  }
  auto param = [&query](std::string_view name) -> std::optional<std::string> {
    for (const auto& [k, v] : *query) {
      if (k == name) {
        return v;
      }
    }
    return std::nullopt;
  };
  if (auto wait = param("wait_for_change"); wait && *wait != "false") {
    Answer(response, 400, "not_supported", "wait_for_change is not served");
    return;
  }

  const std::string_view path = request.path();
  if (path == "/" || path == "/computeMetadata/") {
    Text(response, "computeMetadata/\n");
    return;
  }
  const std::string_view rest = path.substr(kMetadataRoot.size());
  if (rest.empty()) {
    Text(response, "instance/\nproject/\n");
    return;
  }
  if (rest == "project/project-id") {
    Text(response, options_.project);
    return;
  }
  if (rest == "project/numeric-project-id") {
    if (options_.project_number.empty()) {
      Answer(response, 404, "not_found", "start jitctl gcp serve with --project-number");
    } else {
      Text(response, options_.project_number);
    }
    return;
  }
  if (rest == kAccounts) {
    Text(response, "default/\n" + options_.service_account + "/\n");
    return;
  }
  if (!rest.starts_with(kAccounts)) {
    Answer(response, 404, "not_found",
           "only instance/service-accounts/ and project/project-id are served");
    return;
  }
  const std::string_view account_path = rest.substr(kAccounts.size());
  const size_t slash = account_path.find('/');
  const std::string_view account = account_path.substr(0, slash);
  if (slash == std::string_view::npos ||
      (account != "default" && account != options_.service_account)) {
    Answer(response, 404, "not_found",
           "the service accounts here are default and " + options_.service_account);
    return;
  }
  const std::string_view leaf = account_path.substr(slash + 1);
  if (leaf.empty()) {
    if (param("recursive") == "true") {
      const nlohmann::json info = {{"aliases", {"default"}},
                                   {"email", options_.service_account},
                                   {"scopes", options_.scopes}};
      response.status = 200;
      response.content_type = "application/json";
      response.body = info.dump();
    } else {
      Text(response, "aliases\nemail\nscopes\ntoken\n");
    }
  } else if (leaf == "email") {
    Text(response, options_.service_account);
  } else if (leaf == "aliases") {
    Text(response, "default\n");
  } else if (leaf == "scopes") {
    std::string lines;
    for (const std::string& s : options_.scopes) {
      lines.append(s).append("\n");
    }
    Text(response, std::move(lines));
  } else if (leaf == "token") {
    Token(*query, response);
  } else if (leaf == "identity") {
    Answer(response, 404, "not_supported",
           "identity tokens are not served here; ask the broker's jwt issuer");
  } else {
    Answer(response, 404, "not_found", "no such service account entry");
  }
}

void MetadataEndpoint::Token(const std::vector<std::pair<std::string, std::string>>& query,
                             http::Response& response) {
  for (const auto& [k, v] : query) {
    if (k != "scopes") {
      continue;
    }
    // A library that asks for scopes gets the grant's token only when it
    // asks for no more than the grant has.
    for (const std::string& s : SplitScopes(v)) {
      if (std::find(options_.scopes.begin(), options_.scopes.end(), s) == options_.scopes.end()) {
        Answer(response, 400, "scope_not_granted",
               "the grant served here does not have the scope " + s.substr(0, 256));
        return;
      }
    }
  }
  auto failed = cache_.With([&](const GcpCredential& credential, TimePoint now) {
    SecretValue body = MetadataTokenJson(credential, now);
    response.status = 200;
    response.content_type = "application/json";
    response.body = std::string(body.Reveal());
  });
  if (failed) {
    Answer(response, failed->status == 0 ? 502 : failed->status,
           failed->code.empty() ? "broker_error" : failed->code, failed->message);
  }
}

void MetadataEndpoint::RenderError(const http::Request& /*request*/, const Error& error,
                                   http::Response& response) {
  response.SetHeader("Metadata-Flavor", "Google");
  int status = InfoFor(error.code).http_status;
  if (error.Reason() == "method_not_allowed") {
    status = 405;
    response.SetHeader("Allow", "GET");
  }
  Answer(response, status, error.Reason(), error.message);
}

void MetadataEndpoint::Log(const std::string& line) {
  if (options_.log == nullptr) {
    return;
  }
  std::lock_guard lock(log_mu_);
  *options_.log << line << "\n" << std::flush;
}

}  // namespace jitbroker::cli
