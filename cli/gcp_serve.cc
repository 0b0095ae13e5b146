#include "cli/gcp_serve.h"

#include <algorithm>
#include <optional>
#include <string>
#include <utility>

#include <nlohmann/json.hpp>

#include "broker/common/text.h"
#include "broker/net/url.h"

namespace jitbroker::cli {

namespace {

constexpr std::string_view kAccounts = "instance/service-accounts/";

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
  return text::AsciiLower(name);
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
    : LoopbackEndpoint("jitctl gcp serve", options.clock, std::move(options.fetch), options.log),
      project_(std::move(options.project)),
      project_number_(std::move(options.project_number)),
      service_account_(std::move(options.service_account)),
      scopes_(std::move(options.scopes)) {}

Result<http::RoutePlan> MetadataEndpoint::Plan(http::Request& head) {
  const std::string_view path = head.path();
  return PlanGet(head,
                 path == "/" || path == "/computeMetadata/" || path.starts_with(kMetadataRoot),
                 "the metadata server is under " + std::string(kMetadataRoot), "metadata");
}

void MetadataEndpoint::Handle(http::Request& request, http::Response& response) {
  response.SetHeader("Metadata-Flavor", "Google");
  response.SetHeader("Cache-Control", "no-store");
  // Google's own guards against server-side request forgery: a client of
  // the metadata server sends the header, a forwarded request is refused.
  if (request.HeaderCount("Metadata-Flavor") != 1 ||
      request.Header("Metadata-Flavor") != "Google") {
    Log("jitctl gcp serve: refused a request without Metadata-Flavor: Google");
    AnswerError(response, 403, "missing_metadata_flavor",
                "the metadata server needs the header Metadata-Flavor: Google");
    return;
  }
  if (request.HasHeader("X-Forwarded-For")) {
    Log("jitctl gcp serve: refused a forwarded request");
    AnswerError(response, 403, "forwarded_request", "forwarded requests are refused");
    return;
  }
  if (request.HeaderCount("Host") != 1 || !HostAllowed(request.Header("Host"))) {
    Log("jitctl gcp serve: refused a request for another host");
    AnswerError(response, 403, "host_not_allowed",
                "the Host must be 127.0.0.1, localhost or metadata.google.internal");
    return;
  }
  Result<std::vector<std::pair<std::string, std::string>>> query = net::ParseForm(request.query());
  if (!query) {
    AnswerError(response, 400, "invalid_request", query.error().message);
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
    AnswerError(response, 400, "not_supported", "wait_for_change is not served");
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
    Text(response, project_);
    return;
  }
  if (rest == "project/numeric-project-id") {
    if (project_number_.empty()) {
      AnswerError(response, 404, "not_found", "start jitctl gcp serve with --project-number");
    } else {
      Text(response, project_number_);
    }
    return;
  }
  if (rest == kAccounts) {
    Text(response, "default/\n" + service_account_ + "/\n");
    return;
  }
  if (!rest.starts_with(kAccounts)) {
    AnswerError(response, 404, "not_found",
                "only instance/service-accounts/ and project/project-id are served");
    return;
  }
  const std::string_view account_path = rest.substr(kAccounts.size());
  const size_t slash = account_path.find('/');
  const std::string_view account = account_path.substr(0, slash);
  if (slash == std::string_view::npos || (account != "default" && account != service_account_)) {
    AnswerError(response, 404, "not_found",
                "the service accounts here are default and " + service_account_);
    return;
  }
  const std::string_view leaf = account_path.substr(slash + 1);
  if (leaf.empty()) {
    if (param("recursive") == "true") {
      const nlohmann::json info = {
          {"aliases", {"default"}}, {"email", service_account_}, {"scopes", scopes_}};
      response.status = 200;
      response.content_type = "application/json";
      response.body = info.dump();
    } else {
      Text(response, "aliases\nemail\nscopes\ntoken\n");
    }
  } else if (leaf == "email") {
    Text(response, service_account_);
  } else if (leaf == "aliases") {
    Text(response, "default\n");
  } else if (leaf == "scopes") {
    std::string lines;
    for (const std::string& s : scopes_) {
      lines.append(s).append("\n");
    }
    Text(response, std::move(lines));
  } else if (leaf == "token") {
    Token(*query, response);
  } else if (leaf == "identity") {
    AnswerError(response, 404, "not_supported",
                "identity tokens are not served here; ask the broker's jwt issuer");
  } else {
    AnswerError(response, 404, "not_found", "no such service account entry");
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
      if (std::find(scopes_.begin(), scopes_.end(), s) == scopes_.end()) {
        AnswerError(response, 400, "scope_not_granted",
                    "the grant served here does not have the scope " + s.substr(0, 256));
        return;
      }
    }
  }
  AnswerCredential(response, [](const GcpCredential& credential, TimePoint now) {
    return MetadataTokenJson(credential, now);
  });
}

void MetadataEndpoint::RenderError(const http::Request& request, const Error& error,
                                   http::Response& response) {
  response.SetHeader("Metadata-Flavor", "Google");
  LoopbackEndpoint::RenderError(request, error, response);
}

}  // namespace jitbroker::cli
