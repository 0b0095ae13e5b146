#include "broker/http/git_proxy.h"

#include <algorithm>
#include <atomic>
#include <charconv>
#include <map>
#include <mutex>
#include <optional>
#include <vector>

#include "broker/authn/authn.h"
#include "broker/common/log.h"
#include "broker/common/text.h"
#include "broker/crypto/crypto.h"
#include "broker/http/proxy_support.h"
#include "broker/proxy/git_protocol.h"

namespace jitbroker::http {

namespace git = proxy::git;
using proxy_support::kChunk;
using proxy_support::kConnectTimeout;

namespace {

// The command section of one push (inflated), and what may be read of the
// body to find it: far above what max_refs_per_push commands take.
constexpr size_t kMaxCommandBytes = 1 << 20;
// Default branches remembered at most (oldest dropped first), and for how long.
constexpr size_t kMaxCacheEntries = 10000;
constexpr Seconds kDefaultBranchTtl{300};

enum class Action { kAdvertiseUpload, kUploadPack, kAdvertiseReceive, kReceivePack };

struct Target {
  std::string host;
  std::string owner;  // lower case
  std::string repo;   // lower case, without ".git"
  Action action = Action::kAdvertiseUpload;
  std::string issuer;
  std::string base_url;

  std::string resource() const { return "github://" + owner + "/" + repo; }
  std::string repo_url() const { return base_url + "/" + owner + "/" + repo + ".git"; }
  std::string key() const { return issuer + "\n" + owner + "/" + repo; }
};

bool IEquals(std::string_view a, std::string_view b) { return HttpHeaders::EqualsIgnoreCase(a, b); }

}  // namespace

struct GitProxy::Impl {
  service::BrokerService* service;
  HttpClient* http;
  config::ProxyConfig cfg;
  std::shared_ptr<proxy_support::TransferSlots> slots;
  std::shared_ptr<proxy_support::HeldTokens> held;
  RenderErrorFn render_error;
  std::vector<service::BrokerService::ProxyRoute> routes;  // kind "git"
  std::map<std::string, std::string> api_bases;            // issuer -> its REST API root
  std::shared_ptr<spdlog::logger> log = log::Get("proxy");

  struct CachedBranch {
    std::optional<std::string> head_target;
    std::chrono::steady_clock::time_point fetched_at;
  };
  std::mutex mu;
  std::map<std::string, CachedBranch> branches;  // issuer \n owner/repo; guarded by mu

  // ---- requests

  std::optional<Target> ParseTarget(const Request& req) const {
    std::string_view path = req.path();
    if (!path.starts_with("/git/")) {
      return std::nullopt;
    }
    std::vector<std::string_view> segs;
    std::string_view rest = path.substr(5);
    while (!rest.empty()) {
      const size_t slash = rest.find('/');
      segs.push_back(rest.substr(0, slash));
      if (slash == std::string_view::npos) {
        break;
      }
      rest.remove_prefix(slash + 1);
      if (rest.empty()) {
        segs.emplace_back();
      }
    }
    if (segs.size() < 4) {
      return std::nullopt;
    }
    Target t;
    std::string_view repo = segs[2];
    if (!repo.ends_with(".git")) {
      return std::nullopt;
    }
    repo.remove_suffix(4);
    if (!proxy_support::IsRepoNameSegment(segs[1]) || !proxy_support::IsRepoNameSegment(repo)) {
      return std::nullopt;
    }
    if (segs.size() == 5 && segs[3] == "info" && segs[4] == "refs") {
      const std::string_view q = req.query();
      if (q == "service=git-upload-pack") {
        t.action = Action::kAdvertiseUpload;
      } else if (q == "service=git-receive-pack") {
        t.action = Action::kAdvertiseReceive;
      } else {
        return std::nullopt;  // the dumb protocol is not served
      }
    } else if (segs.size() == 4 && segs[3] == "git-upload-pack" && !req.has_query()) {
      t.action = Action::kUploadPack;
    } else if (segs.size() == 4 && segs[3] == "git-receive-pack" && !req.has_query()) {
      t.action = Action::kReceivePack;
    } else {
      return std::nullopt;
    }
    for (const auto& r : routes) {
      if (IEquals(r.upstream.host, segs[0])) {
        t.host = r.upstream.host;
        t.issuer = r.issuer;
        t.base_url = r.upstream.base_url;
        break;
      }
    }
    if (t.issuer.empty()) {
      return std::nullopt;
    }
    t.owner = text::AsciiLower(segs[1]);
    t.repo = text::AsciiLower(repo);
    return t;
  }

  // Errors for git: text/plain, which git prints as "remote: …" lines
  // (other clients get the problem document).
  void Fail(const Request& req, const Error& e, Response& res) const {
    proxy_support::RenderFailure(render_error, *log, req, e, res,
                                 "Basic realm=\"jitbroker\", charset=\"UTF-8\"");
    if (req.Header("User-Agent").starts_with("git/")) {
      res.content_type = "text/plain; charset=utf-8";
      res.body = "jitbroker: " + e.message + " [" + std::string(e.Reason()) + "]\n";
    }
  }

  // ---- tokens

  // An installation token for reading target's repository, held by the
  // broker: a `git.fetch` grant's (proxy_support::HeldTokens).
  Result<std::shared_ptr<const SecretValue>> ReadToken(const service::CallContext& ctx,
                                                       const Target& t) {
    GrantRequest gr;
    gr.tool = "git.fetch";
    gr.operation = "read";
    gr.resource = t.resource();
    gr.issuer = t.issuer;
    gr.scope = {{"permissions", {{"contents", "read"}}}};
    gr.ttl_seconds = cfg.read_token_ttl_seconds;
    gr.justification = "git fetch through the broker";
    return held->Get(ctx, gr, "reading " + t.owner + "/" + t.repo);
  }

  // "Authorization: Basic base64(x-access-token:TOKEN)", as git hosts take
  // installation tokens.
  static SecretValue GitAuth(const SecretValue& token) {
    std::string pair = "x-access-token:";
    pair.append(token.Reveal());
    SecretValue out(crypto::Base64Encode(pair));
    SecureWipe(pair.data(), pair.size());
    return out;
  }

  // ---- forwarding

  // Forwards req to `url` with `token`, streaming its body (after `prefix`,
  // bytes of it already read) and the upstream's answer.
  // True when the upstream answered (whatever its status).
  bool Forward(const Request& req, const Target& t, const std::string& url,
               const SecretValue& token, std::string_view prefix, BodyStream& body, Response& res) {
    proxy_support::ForwardSpec spec;
    spec.url = url;
    spec.auth_scheme = "Basic";
    spec.auth = GitAuth(token);
    spec.request_headers = {"Content-Type", "Content-Encoding", "Accept", "Accept-Encoding",
                            "Git-Protocol"};
    spec.response_headers = {"Cache-Control", "Expires", "Pragma", "Content-Encoding"};
    spec.body_prefix = prefix;
    spec.timeout = std::chrono::seconds(cfg.max_transfer_seconds);
    spec.idle = std::chrono::seconds(cfg.idle_timeout_seconds);
    spec.what = t.owner + "/" + t.repo;
    if (Status st = proxy_support::Forward(*http, req, std::move(spec), body, *log); !st) {
      Fail(req, st.error(), res);
      return false;
    }
    return true;
  }

  // After a forwarded push: each branch or tag update that moved an existing
  // ref is checked upstream (docs/proxy.md, "Force pushes"): if the ref now
  // holds the pushed id and that id does not descend from the old one, the
  // push rewrote history, which is reported (audit, and the force_push
  // anomaly rule). Checked with the GitHub API of the same issuer and the
  // broker's read token; a check that cannot be made is logged.
  void CheckFastForward(const Request& req, const service::CallContext& ctx, const Target& t,
                        const std::vector<std::pair<const git::RefUpdate*, std::string>>& updates) {
    auto api = api_bases.find(t.issuer);
    if (api == api_bases.end()) {
      return;
    }
    auto call = [&](const std::string& path) -> Result<nlohmann::json> {
      JITBROKER_ASSIGN_OR_RETURN(auto token, ReadToken(ctx, t));
      HttpRequest up;
      up.method = "GET";
      up.url = api->second + "/repos/" + t.owner + "/" + t.repo + path;
      up.bearer = token->Clone();
      up.headers = {{"Accept", "application/vnd.github+json"},
                    {"X-GitHub-Api-Version", "2022-11-28"},
                    {"User-Agent", "jitbroker-proxy"}};
      up.timeout = std::chrono::seconds(30);
      up.connect_timeout = kConnectTimeout;
      JITBROKER_ASSIGN_OR_RETURN(HttpResponse r, http->Send(up));
      if (r.status != 200) {
        return std::unexpected(
            Unavailable("upstream_error", "HTTP " + std::to_string(r.status) + " for " + path));
      }
      nlohmann::json j = nlohmann::json::parse(r.body, nullptr, false);
      if (!j.is_object()) {
        return std::unexpected(Unavailable("upstream_error", "not a JSON object: " + path));
      }
      return j;
    };
    for (const auto& [u, grant_id] : updates) {
      if (u->create() || u->remove()) {
        continue;
      }
      auto ref = call("/git/ref/" + u->ref.substr(5));
      if (!ref) {
        log->warn("event=ff_check_failed request_id={} ref={} error={}", req.request_id,
                  log::Quoted(u->ref), log::Quoted(ref.error().ToString()));
        continue;
      }
      const nlohmann::json& object = (*ref)["object"];
      if (!object.is_object() || object.value("sha", std::string()) != u->new_id) {
        continue;  // not updated (refused upstream, or moved again since)
      }
      auto cmp = call("/compare/" + u->old_id + "..." + u->new_id);
      if (!cmp) {
        log->warn("event=ff_check_failed request_id={} ref={} error={}", req.request_id,
                  log::Quoted(u->ref), log::Quoted(cmp.error().ToString()));
        continue;
      }
      const std::string status = cmp->value("status", std::string());
      if (status == "ahead" || status == "identical") {
        continue;
      }
      nlohmann::json evidence = {{"grant_id", grant_id}, {"repository", t.owner + "/" + t.repo},
                                 {"ref", u->ref},        {"old", u->old_id},
                                 {"new", u->new_id},     {"comparison", status}};
      if (Status st = service->ReportForcePush(ctx, ctx.caller.session_id, std::move(evidence));
          !st) {
        log->error("event=force_push_report_failed request_id={} error={}", req.request_id,
                   log::Quoted(st.error().ToString()));
      }
    }
  }

  // The upstream's upload-pack ref advertisement (protocol v0), read with
  // the broker's read token.
  Result<git::Advertisement> UpstreamAdvertisement(const service::CallContext& ctx,
                                                   const Target& t) {
    JITBROKER_ASSIGN_OR_RETURN(auto token, ReadToken(ctx, t));
    HttpRequest up;
    up.method = "GET";
    up.url = t.repo_url() + "/info/refs?service=git-upload-pack";
    up.authorization_scheme = "Basic";
    up.bearer = GitAuth(*token);
    up.headers.emplace_back("Accept", "*/*");
    up.timeout = std::chrono::seconds(std::min<int64_t>(cfg.max_transfer_seconds, 120));
    up.connect_timeout = kConnectTimeout;
    JITBROKER_ASSIGN_OR_RETURN(HttpResponse r, http->Send(up));
    if (r.status == 404) {
      return std::unexpected(NotFound("repository_not_found",
                                      "the upstream has no repository " + t.owner + "/" + t.repo));
    }
    if (r.status != 200) {
      return std::unexpected(
          Unavailable("upstream_error", "the upstream answered HTTP " + std::to_string(r.status) +
                                            " for the refs of " + t.owner + "/" + t.repo));
    }
    JITBROKER_ASSIGN_OR_RETURN(git::Advertisement adv, git::ParseUploadPackAdvertisement(r.body));
    std::lock_guard lock(mu);
    if (branches.size() >= kMaxCacheEntries) {
      branches.erase(branches.begin());
    }
    branches[t.key()] = CachedBranch{adv.head_target, std::chrono::steady_clock::now()};
    return adv;
  }

  // Where the upstream's HEAD points ("refs/heads/main"), if it says.
  Result<std::optional<std::string>> DefaultBranch(const service::CallContext& ctx,
                                                   const Target& t) {
    {
      std::lock_guard lock(mu);
      auto it = branches.find(t.key());
      if (it != branches.end() &&
          std::chrono::steady_clock::now() - it->second.fetched_at < kDefaultBranchTtl) {
        return it->second.head_target;
      }
    }
    JITBROKER_ASSIGN_OR_RETURN(git::Advertisement adv, UpstreamAdvertisement(ctx, t));
    return adv.head_target;
  }

  // ---- actions

  void AdvertiseReceive(const Request& req, const service::CallContext& ctx, const Target& t,
                        Response& res) {
    auto adv = UpstreamAdvertisement(ctx, t);
    if (!adv) {
      return Fail(req, adv.error(), res);
    }
    res.status = 200;
    res.content_type = "application/x-git-receive-pack-advertisement";
    res.SetHeader("Cache-Control", "no-cache, max-age=0, must-revalidate");
    res.body = git::ReceivePackAdvertisement(*adv);
  }

  struct RefDecision {
    const git::RefUpdate* update = nullptr;
    std::string grant_id;
    std::optional<SecretValue> token;  // allowed and minted
    std::string reason;                // why not, for git's "ng" line
    std::string approval_id;
  };

  // The grant request of one ref update (docs/proxy.md, "How a push is
  // decided"). Deterministic: repeating the same update after an approval
  // gives the same request digest.
  GrantRequest PushRequest(const Target& t, const git::RefUpdate& u,
                           const std::optional<std::string>& head_target) const {
    GrantRequest gr;
    gr.tool = "git.push";
    gr.resource = t.resource();
    gr.issuer = t.issuer;
    gr.scope = {{"permissions", {{"contents", "write"}}}};
    gr.ttl_seconds = std::min<int64_t>(cfg.max_transfer_seconds, 3600);
    gr.justification = "git push through the broker";
    nlohmann::json p = {{"ref", u.ref},
                        {"old", u.old_id},
                        {"new", u.new_id},
                        {"create", u.create()},
                        {"delete", u.remove()}};
    bool is_protected = false;
    bool tag = false;
    if (u.ref.starts_with("refs/heads/")) {
      const std::string branch = u.ref.substr(11);
      p["branch"] = branch;
      is_protected = proxy_support::IsProtectedBranch(cfg, branch);
      if (cfg.default_branch_protected && head_target && *head_target == u.ref) {
        is_protected = true;
        p["default_branch"] = true;
      }
    } else if (u.ref.starts_with("refs/tags/")) {
      p["tag"] = u.ref.substr(10);
      tag = true;
    }
    if (u.remove()) {
      gr.operation = "delete_ref";
    } else if (tag && !u.create()) {
      gr.operation = "rewrite_tag";
    } else if (is_protected) {
      gr.operation = "push_protected";
    } else {
      gr.operation = "push";
    }
    gr.parameters = std::move(p);
    return gr;
  }

  void ReceivePack(const Request& req, const service::CallContext& ctx, const Target& t,
                   BodyStream& body, Response& res) {
    if (req.MediaType() != "application/x-git-receive-pack-request") {
      return Fail(req,
                  UnsupportedMediaType("unsupported_media_type",
                                       "a push must be application/x-git-receive-pack-request"),
                  res);
    }
    const std::string_view encoding = req.Header("Content-Encoding");
    const bool gzip = IEquals(encoding, "gzip") || IEquals(encoding, "x-gzip");
    if (!gzip && !encoding.empty() && !IEquals(encoding, "identity")) {
      return Fail(req,
                  UnsupportedMediaType("unsupported_content_encoding",
                                       "a push body may be gzip-encoded or not encoded"),
                  res);
    }
    // 1. The commands, before the pack.
    std::string raw;
    std::string plain;
    std::optional<git::GzipInflater> inflater;
    if (gzip) {
      inflater.emplace(kMaxCommandBytes);
    }
    std::optional<git::PushCommands> cmds;
    std::vector<char> buf(kChunk);
    while (!cmds) {
      auto n = body.Read(buf.data(), buf.size());
      if (!n) {
        return Fail(req, n.error(), res);
      }
      if (*n == 0) {
        return Fail(
            req, InvalidArgument("invalid_git_request", "the push ended before its commands did"),
            res);
      }
      std::string_view got(buf.data(), *n);
      raw.append(got);
      if (inflater) {
        if (Status st = inflater->Inflate(got, plain); !st) {
          return Fail(req, st.error(), res);
        }
      } else {
        plain.append(got);
      }
      auto parsed = git::ParsePushCommands(plain, static_cast<size_t>(cfg.max_refs_per_push));
      if (!parsed) {
        return Fail(req, parsed.error(), res);
      }
      cmds = std::move(*parsed);
      if (!cmds && (raw.size() > kMaxCommandBytes || plain.size() > kMaxCommandBytes)) {
        return Fail(
            req,
            PayloadTooLarge("payload_too_large", "the push commands are longer than " +
                                                     std::to_string(kMaxCommandBytes) + " bytes"),
            res);
      }
    }
    if (cmds->updates.empty()) {
      // git's probe before a large push (it checks that it may post): like
      // receive-pack given no commands, nothing happens and nothing is said.
      char extra = 0;
      auto more = body.Read(&extra, 1);
      if (plain.size() != cmds->length || !more || *more != 0) {
        return Fail(req,
                    InvalidArgument("invalid_git_request",
                                    "a push without commands must carry nothing else"),
                    res);
      }
      res.status = 200;
      res.content_type = "application/x-git-receive-pack-result";
      res.SetHeader("Cache-Control", "no-cache, max-age=0, must-revalidate");
      return;
    }
    if (!cmds->HasCapability("report-status")) {
      return Fail(
          req, InvalidArgument("invalid_git_request", "the push must ask for report-status"), res);
    }
    // 2. Each ref, decided.
    std::optional<std::string> head_target;
    if (cfg.default_branch_protected) {
      auto head = DefaultBranch(ctx, t);
      if (!head) {
        return Fail(req, head.error(), res);
      }
      head_target = std::move(*head);
    }
    std::vector<RefDecision> decisions;
    bool all_allowed = true;
    for (const git::RefUpdate& u : cmds->updates) {
      RefDecision d;
      d.update = &u;
      auto out =
          service->RequestProxyGrant(ctx, ctx.caller.session_id, PushRequest(t, u, head_target));
      if (!out) {
        d.reason = "jitbroker: " + out.error().message;
      } else {
        d.grant_id = out->grant.grant.id;
        if (out->outcome == service::GrantOutcome::kIssued && out->grant.credential) {
          d.token = proxy_support::TokenOf(*out->grant.credential);
        } else if (out->outcome == service::GrantOutcome::kPending) {
          d.approval_id = out->grant.grant.approval_id;
          d.reason = "jitbroker: needs approval " + d.approval_id + "; push again once approved";
        } else {
          d.reason = "jitbroker: denied: " +
                     out->grant.grant.decision.value("reason", std::string("denied by policy"));
        }
      }
      all_allowed = all_allowed && d.token.has_value();
      decisions.push_back(std::move(d));
    }
    // 3. Forward all or nothing.
    if (all_allowed) {
      if (Forward(req, t, t.repo_url() + "/git-receive-pack", *decisions.front().token, raw, body,
                  res)) {
        std::vector<std::pair<const git::RefUpdate*, std::string>> updates;
        for (const RefDecision& d : decisions) {
          updates.emplace_back(d.update, d.grant_id);
        }
        CheckFastForward(req, ctx, t, updates);
      }
    } else {
      std::map<std::string, std::string> reasons;
      std::vector<std::string> message;
      for (const RefDecision& d : decisions) {
        if (!d.reason.empty()) {
          reasons[d.update->ref] = d.reason;
        }
        if (!d.approval_id.empty()) {
          message.push_back("jitbroker: " + d.update->ref + " needs approval " + d.approval_id +
                            " (grant " + d.grant_id + "); an approver runs: jitctl approvals " +
                            "approve " + d.approval_id + " ; then push again");
        }
      }
      // The rest of the body (the pack) is read and dropped: git reads the
      // answer only once it has sent everything.
      for (;;) {
        auto n = body.Read(buf.data(), buf.size());
        if (!n || *n == 0) {
          break;
        }
      }
      res.status = 200;
      res.content_type = "application/x-git-receive-pack-result";
      res.SetHeader("Cache-Control", "no-cache, max-age=0, must-revalidate");
      res.body = git::RefusalReport(
          *cmds, reasons, "jitbroker: not pushed: another ref of this push was refused", message);
    }
    // 4. The push's write tokens end with it.
    for (const RefDecision& d : decisions) {
      if (d.token) {
        proxy_support::EndUse(*service, ctx, d.grant_id, *log);
      }
    }
  }

  void Serve(Request& req, BodyStream& body, Response& res) {
    std::optional<Target> t = ParseTarget(req);
    if (!t) {
      return Fail(req, NotFound("no_route", "no such endpoint"), res);
    }
    auto admitted = proxy_support::Admit(
        *service, req, "set credential.helper to \"jitctl git-credential\"", *slots);
    if (!admitted) {
      return Fail(req, admitted.error(), res);
    }
    const service::CallContext& ctx = admitted->ctx;
    switch (t->action) {
      case Action::kAdvertiseUpload:
      case Action::kUploadPack: {
        auto token = ReadToken(ctx, *t);
        if (!token) {
          return Fail(req, token.error(), res);
        }
        const std::string url = t->repo_url() + (t->action == Action::kUploadPack
                                                     ? "/git-upload-pack"
                                                     : "/info/refs?service=git-upload-pack");
        Forward(req, *t, url, **token, {}, body, res);
        return;
      }
      case Action::kAdvertiseReceive:
        return AdvertiseReceive(req, ctx, *t, res);
      case Action::kReceivePack:
        return ReceivePack(req, ctx, *t, body, res);
    }
  }
};

GitProxy::GitProxy(service::BrokerService* service, HttpClient* http, config::ProxyConfig config,
                   std::shared_ptr<proxy_support::TransferSlots> slots,
                   std::shared_ptr<proxy_support::HeldTokens> held, RenderErrorFn render_error)
    : impl_(std::make_unique<Impl>()) {
  impl_->service = service;
  impl_->http = http;
  impl_->slots = std::move(slots);
  impl_->held = std::move(held);
  impl_->cfg = std::move(config);
  impl_->render_error = std::move(render_error);
  for (auto& r : service->ProxyRoutes()) {
    if (r.upstream.kind == "github_api") {
      impl_->api_bases[r.issuer] = r.upstream.base_url;
    }
    if (r.upstream.kind == "git" && !r.upstream.host.empty()) {
      impl_->routes.push_back(std::move(r));
    }
  }
}

GitProxy::~GitProxy() = default;

bool GitProxy::Owns(std::string_view path) { return path.starts_with("/git/"); }

Result<RoutePlan> GitProxy::Plan(Request& head) const {
  std::optional<Target> t = impl_->ParseTarget(head);
  if (!t || !impl_->cfg.enabled || impl_->http == nullptr) {
    return std::unexpected(NotFound("no_route", "no such endpoint"));
  }
  const bool get = t->action == Action::kAdvertiseUpload || t->action == Action::kAdvertiseReceive;
  if (head.method != (get ? "GET" : "POST")) {
    Error e;
    e.code = ErrorCode::kMethodNotAllowed;
    e.reason = "method_not_allowed";
    e.message = std::string("this endpoint serves only ") + (get ? "GET" : "POST");
    return std::unexpected(e);
  }
  switch (t->action) {
    case Action::kAdvertiseUpload:
    case Action::kAdvertiseReceive:
      head.route = "/git/{host}/{owner}/{repo}.git/info/refs";
      break;
    case Action::kUploadPack:
      head.route = "/git/{host}/{owner}/{repo}.git/git-upload-pack";
      break;
    case Action::kReceivePack:
      head.route = "/git/{host}/{owner}/{repo}.git/git-receive-pack";
      break;
  }
  RoutePlan plan;
  plan.streaming = true;
  plan.allow_chunked = true;
  plan.allow_content_encoding = true;
  plan.max_body_bytes = get ? 0 : static_cast<size_t>(impl_->cfg.max_push_bytes);
  plan.stream_idle = std::chrono::seconds(impl_->cfg.idle_timeout_seconds);
  plan.stream_total = std::chrono::seconds(impl_->cfg.max_transfer_seconds);
  return plan;
}

void GitProxy::Handle(Request& req, BodyStream& body, Response& res) {
  impl_->Serve(req, body, res);
}

}  // namespace jitbroker::http
