#include "broker/http/github_api_proxy.h"

#include <algorithm>
#include <vector>

#include "broker/common/text.h"
#include "broker/crypto/crypto.h"

namespace jitbroker::http {

namespace {

using proxy_support::kChunk;

constexpr int64_t kWriteTtlSeconds = 300;

// The built-in table (docs/proxy.md, "The GitHub REST API"): paths under
// /repos/{owner}/{repo}; {number} is a decimal segment, {any} any one
// segment, "**" the rest (possibly nothing). Config routes come first.
struct BuiltinRoute {
  const char* method;
  const char* path;
  const char* tool;
  const char* operation;
  const char* permissions;  // JSON
};
constexpr BuiltinRoute kBuiltin[] = {
    {"PUT", "pulls/{number}/merge", "github.merge_pull_request", "merge",
     R"({"contents":"write","pull_requests":"write"})"},
    {"POST", "issues/{number}/comments", "github.create_comment", "write",
     R"({"issues":"write","pull_requests":"write"})"},
    {"POST", "pulls/{number}/reviews", "github.review_pull_request", "write",
     R"({"pull_requests":"write"})"},
    {"POST", "pulls/{number}/comments", "github.create_review_comment", "write",
     R"({"pull_requests":"write"})"},
    {"POST", "pulls", "github.create_pull_request", "write", R"({"pull_requests":"write"})"},
    {"PATCH", "pulls/{number}", "github.update_pull_request", "write",
     R"({"pull_requests":"write"})"},
    {"POST", "issues", "github.create_issue", "write", R"({"issues":"write"})"},
    {"PATCH", "issues/{number}", "github.update_issue", "write", R"({"issues":"write"})"},
    {"POST", "actions/workflows/{any}/dispatches", "github.dispatch_workflow", "deploy",
     R"({"actions":"write"})"},
    {"POST", "deployments", "github.create_deployment", "deploy", R"({"deployments":"write"})"},
    {"PUT", "contents/**", "github.update_contents", "push", R"({"contents":"write"})"},
    {"DELETE", "contents/**", "github.update_contents", "push", R"({"contents":"write"})"},
    {"POST", "git/refs", "github.update_ref", "push", R"({"contents":"write"})"},
    {"PATCH", "git/refs/**", "github.update_ref", "push", R"({"contents":"write"})"},
    {"DELETE", "git/refs/**", "github.delete_ref", "delete_ref", R"({"contents":"write"})"},
    {"DELETE", "", "github.delete_repository", "delete_repository",
     R"({"administration":"write"})"},
    {"PATCH", "", "github.update_repository", "administration", R"({"administration":"write"})"},
};

std::vector<std::string_view> Segments(std::string_view path) {
  std::vector<std::string_view> out;
  while (!path.empty()) {
    const size_t slash = path.find('/');
    out.push_back(path.substr(0, slash));
    if (slash == std::string_view::npos) {
      break;
    }
    path.remove_prefix(slash + 1);
  }
  return out;
}

bool IsNumber(std::string_view s) {
  return !s.empty() && s.size() <= 12 &&
         std::all_of(s.begin(), s.end(), [](char c) { return c >= '0' && c <= '9'; });
}

// Matches `sub` against a pattern; on a match, sets *number to the
// {number} segment, if the pattern has one.
bool PatternMatches(std::string_view pattern, std::string_view sub, std::string* number) {
  const std::vector<std::string_view> p = Segments(pattern);
  const std::vector<std::string_view> s = Segments(sub);
  size_t i = 0;
  for (; i < p.size(); ++i) {
    if (p[i] == "**") {
      return true;
    }
    if (i >= s.size()) {
      return false;
    }
    if (p[i] == "{number}") {
      if (!IsNumber(s[i])) {
        return false;
      }
      *number = std::string(s[i]);
    } else if (p[i] != "{any}" && p[i] != s[i]) {
      return false;
    }
  }
  return i == s.size();
}

// The permission a read of `sub` needs, by its first segment.
nlohmann::json ReadPermissions(std::string_view sub) {
  const std::string_view first = sub.substr(0, sub.find('/'));
  static const std::pair<std::string_view, std::string_view> kByArea[] = {
      {"pulls", "pull_requests"},     {"issues", "issues"},      {"actions", "actions"},
      {"deployments", "deployments"}, {"contents", "contents"},  {"git", "contents"},
      {"commits", "contents"},        {"branches", "contents"},  {"compare", "contents"},
      {"tags", "contents"},           {"releases", "contents"},  {"readme", "contents"},
      {"tarball", "contents"},        {"zipball", "contents"},   {"statuses", "statuses"},
      {"check-runs", "checks"},       {"check-suites", "checks"}};
  for (const auto& [area, permission] : kByArea) {
    if (first == area) {
      return {{std::string(permission), "read"}};
    }
  }
  return {{"metadata", "read"}};
}

// A Host header worth building URLs from: host[:port] characters only.
bool IsHostHeader(std::string_view h) {
  return !h.empty() && h.size() <= 255 && std::all_of(h.begin(), h.end(), [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' ||
           c == '-' || c == ':' || c == '[' || c == ']';
  });
}

}  // namespace

GitHubApiProxy::Call GitHubApiProxy::Classify(const config::ProxyConfig& config,
                                              std::string_view method, std::string_view sub,
                                              const nlohmann::json& body) {
  Call call;
  std::string number;
  auto finish = [&](std::string_view pattern) {
    if (!number.empty()) {
      call.sub_resource = (pattern.starts_with("pulls") ? "pull/" : "issues/") + number;
      call.parameters["number"] = std::stoll(number);
    }
  };
  for (const auto& r : config.api_routes) {
    if ((r.method == "*" || r.method == method) && PatternMatches(r.path, sub, &number)) {
      call.tool = r.tool;
      call.operation = r.operation;
      for (const auto& [k, v] : r.permissions) {
        call.permissions[k] = v;
      }
      call.read = r.operation == "read";
      finish(r.path);
      return call;
    }
    number.clear();
  }
  for (const BuiltinRoute& r : kBuiltin) {
    if (method != r.method || !PatternMatches(r.path, sub, &number)) {
      number.clear();
      continue;
    }
    call.tool = r.tool;
    call.operation = r.operation;
    call.permissions = nlohmann::json::parse(r.permissions);
    finish(r.path);
    // A branch written through the API is decided like a pushed one: the
    // task scope's branches, and protected branches need an approval.
    std::optional<std::string> branch;
    if (std::string_view(r.path) == "contents/**") {
      if (body.is_object() && body.contains("branch") && body["branch"].is_string()) {
        branch = body["branch"].get<std::string>();
      } else {
        call.parameters["default_branch"] = true;  // no branch: the default one
        call.operation = "push_protected";
      }
    } else if (std::string_view(r.path) == "git/refs") {
      if (body.is_object() && body.contains("ref") && body["ref"].is_string()) {
        const std::string ref = body["ref"];
        call.parameters["ref"] = ref;
        if (ref.starts_with("refs/heads/")) {
          branch = ref.substr(11);
        }
      }
    } else if (std::string_view(r.path).starts_with("git/refs/")) {
      const std::string ref = "refs/" + std::string(sub.substr(9));
      call.parameters["ref"] = ref;
      if (ref.starts_with("refs/heads/")) {
        branch = ref.substr(11);
      }
      if (method == "PATCH" && body.is_object() && body.value("force", false)) {
        call.operation = "force_push";
      }
    }
    if (branch) {
      call.parameters["branch"] = *branch;
      if (call.operation == "push" && proxy_support::IsProtectedBranch(config, *branch)) {
        call.operation = "push_protected";
      }
    }
    return call;
  }
  if (method == "GET") {
    call.tool = "github.read";
    call.operation = "read";
    call.permissions = ReadPermissions(sub);
    call.read = true;
    return call;
  }
  // Not in any table: the default tier, with the issuer's default
  // permissions.
  call.tool = "github.api";
  call.operation = text::AsciiLower(method);
  return call;
}

struct GitHubApiProxy::Impl {
  service::BrokerService* service = nullptr;
  HttpClient* http = nullptr;
  config::ProxyConfig cfg;
  std::shared_ptr<proxy_support::TransferSlots> slots;
  std::shared_ptr<proxy_support::HeldTokens> held;
  RenderErrorFn render_error;
  bool tls = false;
  std::vector<service::BrokerService::ProxyRoute> routes;  // kind "github_api"
  std::shared_ptr<spdlog::logger> log = log::Get("proxy");

  const service::BrokerService::ProxyRoute* RouteFor(std::string_view host) const {
    for (const auto& r : routes) {
      if (HttpHeaders::EqualsIgnoreCase(r.upstream.host, host)) {
        return &r;
      }
    }
    return nullptr;
  }

  void Fail(const Request& req, const Error& e, Response& res) const {
    proxy_support::RenderFailure(render_error, *log, req, e, res, "Bearer realm=\"jitbroker\"");
  }

  void Serve(Request& req, BodyStream& body, Response& res) {
    // /github/HOST/repos/OWNER/REPO[/SUB]
    std::string_view path = req.path().substr(8);
    const size_t slash = path.find('/');
    const std::string_view host = path.substr(0, slash);
    const auto* route = RouteFor(host);
    if (route == nullptr || slash == std::string_view::npos) {
      return Fail(req, NotFound("no_route", "no such endpoint"), res);
    }
    const std::string_view api_path = path.substr(slash);  // "/repos/…"
    const std::vector<std::string_view> segs = Segments(api_path.substr(1));
    if (segs.size() < 3 || segs[0] != "repos" || !proxy_support::IsRepoNameSegment(segs[1]) ||
        !proxy_support::IsRepoNameSegment(segs[2])) {
      return Fail(
          req,
          PermissionDenied("unsupported_api_path",
                           "only /repos/{owner}/{repo}/… calls go through the broker: they are "
                           "the ones a token can be narrowed to"),
          res);
    }
    for (std::string_view s : segs) {
      if (s.empty() || s == "." || s == ".." || s.find('%') != std::string_view::npos) {
        return Fail(req,
                    InvalidArgument("invalid_api_path",
                                    "the path has an empty, dot or percent-encoded segment"),
                    res);
      }
    }
    const std::string owner = text::AsciiLower(segs[1]);
    const std::string repo = text::AsciiLower(segs[2]);
    const size_t prefix = 7 + segs[1].size() + 1 + segs[2].size();  // "/repos/o/r"
    std::string_view sub = api_path.substr(prefix);
    if (sub.starts_with('/')) {
      sub.remove_prefix(1);
    }

    auto admitted = proxy_support::Admit(
        *service, req, "send the session token as the GitHub token (Authorization: Bearer jbs_…)",
        *slots);
    if (!admitted) {
      return Fail(req, admitted.error(), res);
    }
    const service::CallContext& ctx = admitted->ctx;

    // The body, whole (bounded by the route's limit): its hash is part of
    // what is decided.
    std::string content;
    std::vector<char> buf(kChunk);
    for (;;) {
      auto n = body.Read(buf.data(), buf.size());
      if (!n) {
        return Fail(req, n.error(), res);
      }
      if (*n == 0) {
        break;
      }
      content.append(buf.data(), *n);
    }
    nlohmann::json json_body = nlohmann::json::parse(content, nullptr, false);
    const Call call = Classify(cfg, req.method, sub, json_body);

    GrantRequest gr;
    gr.tool = call.tool;
    gr.operation = call.operation;
    gr.resource = "github://" + owner + "/" + repo +
                  (call.sub_resource.empty() ? "" : "/" + call.sub_resource);
    gr.issuer = route->issuer;
    if (!call.permissions.empty()) {
      gr.scope = {{"permissions", call.permissions}};
    }
    const std::string what =
        req.method + " /repos/" + owner + "/" + repo + (sub.empty() ? "" : "/" + std::string(sub));
    std::shared_ptr<const SecretValue> token;
    std::string write_grant;
    if (call.read) {
      gr.ttl_seconds = cfg.read_token_ttl_seconds;
      gr.justification = "GitHub API reads through the broker";
      auto t = held->Get(ctx, gr, "reading " + owner + "/" + repo);
      if (!t) {
        return Fail(req, t.error(), res);
      }
      token = std::move(*t);
    } else {
      gr.parameters = call.parameters;
      gr.parameters["method"] = req.method;
      gr.parameters["path"] = "/repos/" + std::string(segs[1]) + "/" + std::string(segs[2]) +
                              (sub.empty() ? "" : "/" + std::string(sub));
      if (req.has_query()) {
        gr.parameters["query"] = std::string(req.query());
      }
      gr.parameters["body_sha256"] = crypto::Sha256Hex(content);
      gr.ttl_seconds = kWriteTtlSeconds;
      gr.justification = "GitHub API call through the broker";
      auto out = service->RequestProxyGrant(ctx, ctx.caller.session_id, gr);
      if (!out) {
        return Fail(req, out.error(), res);
      }
      if (out->outcome != service::GrantOutcome::kIssued || !out->grant.credential) {
        Error e = proxy_support::NotIssued(*out, what);
        Fail(req, e, res);
        // The problem carries the grant and, pending, its approval.
        nlohmann::json p = nlohmann::json::parse(res.body, nullptr, false);
        if (p.is_object()) {
          p["grant_id"] = out->grant.grant.id;
          p["decision"] = out->grant.grant.decision;
          if (!out->grant.grant.approval_id.empty()) {
            p["approval"] = {{"id", out->grant.grant.approval_id},
                             {"request_digest", out->grant.grant.request_digest}};
          }
          res.body = p.dump();
        }
        return;
      }
      token = std::make_shared<const SecretValue>(proxy_support::TokenOf(*out->grant.credential));
      write_grant = out->grant.grant.id;
    }

    // Forward; the answer's URLs point back at the broker.
    const std::string upstream_base = route->upstream.base_url;
    const std::string host_header(req.Header("Host"));
    const std::string broker_base = IsHostHeader(host_header)
                                        ? std::string(tls ? "https://" : "http://") + host_header +
                                              "/github/" + route->upstream.host
                                        : std::string();
    const std::string repos_path = "/repos/" + owner + "/" + repo + "/";
    proxy_support::ForwardSpec spec;
    spec.url = upstream_base + std::string(api_path) +
               (req.has_query() ? "?" + std::string(req.query()) : "");
    spec.auth_scheme = "Bearer";
    spec.auth = token->Clone();
    spec.request_headers = {"Accept", "Content-Type", "X-GitHub-Api-Version", "If-None-Match",
                            "If-Modified-Since"};
    spec.response_headers = {"ETag",
                             "Link",
                             "Location",
                             "Last-Modified",
                             "Cache-Control",
                             "Retry-After",
                             "X-GitHub-Request-Id",
                             "X-GitHub-Media-Type",
                             "X-RateLimit-Limit",
                             "X-RateLimit-Remaining",
                             "X-RateLimit-Used",
                             "X-RateLimit-Reset",
                             "X-RateLimit-Resource",
                             "X-Accepted-GitHub-Permissions"};
    spec.rewrite = [&](std::string_view name, std::string_view value) -> std::string {
      if (broker_base.empty() || (!HttpHeaders::EqualsIgnoreCase(name, "Link") &&
                                  !HttpHeaders::EqualsIgnoreCase(name, "Location"))) {
        return std::string(value);
      }
      // Every upstream URL becomes the broker's; GitHub's
      // /repositories/{id}/… pagination URLs become this repository's
      // /repos/{owner}/{repo}/… (the only ones the broker forwards).
      std::string out;
      size_t pos = 0;
      while (pos < value.size()) {
        const size_t at = value.find(upstream_base, pos);
        if (at == std::string_view::npos) {
          out.append(value.substr(pos));
          break;
        }
        out.append(value.substr(pos, at - pos));
        out += broker_base;
        pos = at + upstream_base.size();
        if (value.substr(pos).starts_with("/repositories/")) {
          size_t end = pos + 14;
          while (end < value.size() && value[end] >= '0' && value[end] <= '9') {
            ++end;
          }
          if (end < value.size() && value[end] == '/') {
            out += repos_path;
            pos = end + 1;
          }
        }
      }
      return out;
    };
    spec.whole_body = content;
    spec.timeout = std::chrono::seconds(std::min<int64_t>(cfg.max_transfer_seconds, 600));
    spec.idle = std::chrono::seconds(cfg.idle_timeout_seconds);
    spec.what = owner + "/" + repo;
    if (Status st = proxy_support::Forward(*http, req, std::move(spec), body, *log); !st) {
      Fail(req, st.error(), res);
    }
    // A write's token is the call's alone.
    if (!write_grant.empty()) {
      proxy_support::EndUse(*service, ctx, write_grant, *log);
    }
  }
};

GitHubApiProxy::GitHubApiProxy(service::BrokerService* service, HttpClient* http,
                               config::ProxyConfig config,
                               std::shared_ptr<proxy_support::TransferSlots> slots,
                               std::shared_ptr<proxy_support::HeldTokens> held,
                               RenderErrorFn render_error, bool tls)
    : impl_(std::make_unique<Impl>()) {
  impl_->service = service;
  impl_->http = http;
  impl_->cfg = std::move(config);
  impl_->slots = std::move(slots);
  impl_->held = std::move(held);
  impl_->render_error = std::move(render_error);
  impl_->tls = tls;
  for (auto& r : service->ProxyRoutes()) {
    if (r.upstream.kind == "github_api" && !r.upstream.host.empty()) {
      impl_->routes.push_back(std::move(r));
    }
  }
}

GitHubApiProxy::~GitHubApiProxy() = default;

bool GitHubApiProxy::Owns(std::string_view path) { return path.starts_with("/github/"); }

Result<RoutePlan> GitHubApiProxy::Plan(Request& head) const {
  std::string_view path = head.path().substr(8);
  const std::string_view host = path.substr(0, path.find('/'));
  if (!impl_->cfg.enabled || impl_->http == nullptr || impl_->RouteFor(host) == nullptr) {
    return std::unexpected(NotFound("no_route", "no such endpoint"));
  }
  static const char* kMethods[] = {"GET", "POST", "PUT", "PATCH", "DELETE"};
  if (std::none_of(std::begin(kMethods), std::end(kMethods),
                   [&](const char* m) { return head.method == m; })) {
    Error e;
    e.code = ErrorCode::kMethodNotAllowed;
    e.reason = "method_not_allowed";
    e.message = "the GitHub API is served for GET, POST, PUT, PATCH and DELETE";
    return std::unexpected(e);
  }
  head.route = "/github/{host}/…";
  RoutePlan plan;
  plan.streaming = true;
  plan.allow_chunked = true;
  plan.max_body_bytes = static_cast<size_t>(impl_->cfg.max_api_body_bytes);
  plan.stream_idle = std::chrono::seconds(impl_->cfg.idle_timeout_seconds);
  plan.stream_total = std::chrono::seconds(std::min<int64_t>(impl_->cfg.max_transfer_seconds, 600));
  return plan;
}

void GitHubApiProxy::Handle(Request& req, BodyStream& body, Response& res) {
  impl_->Serve(req, body, res);
}

}  // namespace jitbroker::http
