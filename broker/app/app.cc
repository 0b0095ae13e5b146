#include "broker/app/app.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <mutex>
#include <ostream>
#include <set>
#include <thread>

#include "broker/audit/journal.h"
#include "broker/common/log.h"
#include "broker/common/metrics.h"
#include "broker/config/config.h"
#include "broker/crypto/crypto.h"
#include "broker/crypto/jose.h"
#include "broker/http/console.h"
#include "broker/http/server.h"
#include "broker/lifecycle/anomaly.h"
#include "broker/lifecycle/notifier.h"
#include "broker/lifecycle/slack.h"
#include "broker/lifecycle/sweeper.h"
#include "broker/net/http_client.h"
#include "broker/oidc/human_login.h"
#include "broker/oidc/jwks_cache.h"
#include "broker/oidc/trust_policy.h"
#include "broker/service/broker_service.h"
#include "broker/store/open.h"
#include "issuers/registry.h"

namespace jitbroker::app {

namespace {

// Writes `content` to `path` with mode 0600, atomically (temp + rename).
Status WritePrivateFile(const std::string& path, std::string_view content) {
  std::error_code ec;
  std::filesystem::create_directories(std::filesystem::path(path).parent_path(), ec);
  const std::string tmp = path + ".tmp";
  const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0) {
    return std::unexpected(Internal("cannot create " + path));
  }
  const bool ok =
      ::write(fd, content.data(), content.size()) == static_cast<ssize_t>(content.size()) &&
      ::fsync(fd) == 0;
  ::close(fd);
  if (!ok || ::rename(tmp.c_str(), path.c_str()) != 0) {
    return std::unexpected(Internal("cannot write " + path));
  }
  return OkStatus();
}

// First start in development: principals whose api_key_file does not exist
// get a generated key, saved 0600 and printed once. Returns true if any was made.
Result<bool> GenerateMissingApiKeys(const config::Config& cfg, std::ostream* out) {
  bool any = false;
  for (const auto& p : cfg.policy->principals) {
    if (p.api_key_file.empty() || std::filesystem::exists(p.api_key_file)) {
      continue;
    }
    SecretValue key("jbk_" + crypto::NewId("", 32));
    JITBROKER_RETURN_IF_ERROR(WritePrivateFile(p.api_key_file, std::string(key.Reveal()) + "\n"));
    if (out != nullptr) {
      *out << "generated API key for principal " << p.id << " (saved to " << p.api_key_file
           << "; shown once):\n  " << key.Reveal() << "\n";
      out->flush();
    }
    any = true;
  }
  return any;
}

Result<SecretValue> LoadOrGenerateSealKey(const config::Config& cfg) {
  if (cfg.seal_key) {
    return cfg.seal_key->Clone();
  }
  const std::string path = cfg.data_dir + "/seal.key";
  if (std::filesystem::exists(path)) {
    std::ifstream in(path, std::ios::binary);
    std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    while (!text.empty() && (text.back() == '\n' || text.back() == '\r')) {
      text.pop_back();
    }
    auto raw = crypto::Base64Decode(text);
    SecureWipe(text.data(), text.size());
    if (!raw || raw->size() != 32) {
      return std::unexpected(
          InvalidArgument("invalid_config", path + " does not hold a 32-byte base64 seal key"));
    }
    return SecretValue(std::move(*raw));
  }
  log::Get("app")->warn(
      "event=seal_key_generated path={} note=\"no seal_key configured; generated one for "
      "development. Configure seal_key: env:/file: in production.\"",
      path);
  std::string raw = crypto::RandomBytes(32);
  std::string b64 = crypto::Base64Encode(raw);
  JITBROKER_RETURN_IF_ERROR(WritePrivateFile(path, b64 + "\n"));
  SecureWipe(b64.data(), b64.size());
  return SecretValue(std::move(raw));
}

Result<std::unique_ptr<crypto::SigningKey>> AuditKeyFromPem(const SecretValue& pem) {
  for (crypto::JwsAlg alg : {crypto::JwsAlg::kES256, crypto::JwsAlg::kEd25519}) {
    if (auto key = crypto::SigningKey::FromPem(alg, pem)) {
      return std::move(*key);
    }
  }
  return std::unexpected(InvalidArgument(
      "invalid_config", "audit.signing_key is not an EC P-256 or Ed25519 private key in PEM"));
}

// The key that signs audit checkpoints (broker/audit/checkpoint.h): the
// configured one, else <data_dir>/keys/audit.pem, generated (ES256) at
// first start. Its public JWKS is written beside it, for operators to pin
// (docs/configuration.md "audit").
Result<std::shared_ptr<const crypto::SigningKey>> LoadOrGenerateAuditKey(
    const config::Config& cfg) {
  std::unique_ptr<crypto::SigningKey> key;
  const std::string dir = cfg.data_dir + "/keys";
  if (cfg.audit.signing_key) {
    JITBROKER_ASSIGN_OR_RETURN(key, AuditKeyFromPem(*cfg.audit.signing_key));
  } else {
    const std::string path = dir + "/audit.pem";
    if (std::filesystem::exists(path)) {
      std::ifstream in(path, std::ios::binary);
      SecretValue pem(
          std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>()));
      if (!in && !in.eof()) {
        return std::unexpected(Internal("cannot read the audit signing key", "path=" + path));
      }
      auto loaded = AuditKeyFromPem(pem);
      if (!loaded) {
        return std::unexpected(Internal("the audit signing key is unreadable", "path=" + path));
      }
      key = std::move(*loaded);
    } else {
      JITBROKER_ASSIGN_OR_RETURN(key, crypto::SigningKey::Generate(crypto::JwsAlg::kES256));
      JITBROKER_ASSIGN_OR_RETURN(SecretValue pem, key->ToPem());
      JITBROKER_RETURN_IF_ERROR(WritePrivateFile(path, pem.Reveal()));
      log::Get("audit")->info("event=audit_key_generated kid={} path={}", key->kid(), path);
    }
  }
  const nlohmann::json jwks = {{"keys", {key->PublicJwk()}}};
  JITBROKER_RETURN_IF_ERROR(WritePrivateFile(dir + "/audit.jwks.json", jwks.dump(2) + "\n"));
  log::Get("audit")->info("event=audit_key kid={} alg={}", key->kid(),
                          crypto::JwsAlgName(key->alg()));
  return std::shared_ptr<const crypto::SigningKey>(std::move(key));
}

}  // namespace

struct App::Impl {
  std::string config_path;
  config::Config cfg;
  // The system clock; with a shared store, moved onto the database server's
  // (SyncClockToStore).
  OffsetClock clock;
  std::chrono::steady_clock::time_point clock_synced_at;
  Metrics metrics;
  SecretValue seal_key;
  std::shared_ptr<const crypto::SigningKey> audit_key;  // signs audit checkpoints
  // Tells the service that another replica changed sessions or grants
  // (Store::WatchChanges). Declared before the store, whose watch thread
  // calls it until the store is destroyed; Stop() detaches the service.
  struct ChangeRelay {
    std::mutex mu;
    service::BrokerService* target = nullptr;  // guarded by mu
    void Fire() {
      std::lock_guard lock(mu);
      if (target != nullptr) {
        target->OnStoreChanged();
      }
    }
  } change_relay;
  std::unique_ptr<Store> store;
  // Upstream calls of the issuers (GitHub, …): one client, pooled connections.
  // Declared before the service so that it outlives the issuers.
  std::unique_ptr<net::HttpClient> upstream_http;
  std::unique_ptr<audit::Journal> journal;
  // CI OIDC exchange: the trust issuers' discovery/JWKS client and key cache
  // (declared before the service, which uses them).
  std::unique_ptr<net::HttpClient> oidc_http;
  std::unique_ptr<net::HttpClient> proxy_http;  // git and GitHub traffic in proxy mode
  std::unique_ptr<oidc::JwksCache> jwks;
  std::unique_ptr<oidc::HumanLogin> human_login;  // humans: (single sign-on); null when absent
  std::unique_ptr<lifecycle::ApprovalNotifier> notifier;
  std::unique_ptr<lifecycle::SlackNotifier> slack;  // approvals.slack
  std::unique_ptr<service::BrokerService> service;
  std::unique_ptr<lifecycle::Sweeper> sweeper;
  std::unique_ptr<http::Console> console;  // /ui/, with human_login
  std::unique_ptr<http::HttpServer> server;
  std::thread serve_thread;
  std::atomic<bool> serve_done{false};
  // The identity keys the configured issuers act for (a reloaded policy's
  // principals may use only these; issuer changes need a restart).
  std::set<std::string> identity_keys;
  std::mutex reload_mu;
  bool started = false;
  bool stopped = false;
};

namespace {

constexpr auto kClockSyncInterval = std::chrono::seconds(30);

// With a store several replicas share, every replica's clock follows the
// database server's (Store::ServerTime): deadlines are then measured on one
// clock whatever each host's drift. A sample that took long says little
// about the offset and is dropped; a large offset is logged (the hosts'
// time service needs fixing, though the replicas agree meanwhile).
void SyncClockToStore(Store& store, OffsetClock& clock) {
  const auto t0 = std::chrono::system_clock::now();
  Result<std::optional<TimePoint>> server = store.ServerTime();
  const auto t1 = std::chrono::system_clock::now();
  if (!server || !*server || t1 - t0 > std::chrono::milliseconds(50)) {
    return;
  }
  const auto offset =
      std::chrono::duration_cast<std::chrono::nanoseconds>(**server - (t0 + (t1 - t0) / 2));
  const auto before = clock.Offset();
  clock.SetOffset(offset);
  const auto off_ms = std::chrono::duration_cast<std::chrono::milliseconds>(offset).count();
  const auto before_ms = std::chrono::duration_cast<std::chrono::milliseconds>(before).count();
  if (std::abs(off_ms) >= 1000 && std::abs(off_ms - before_ms) >= 500) {
    log::Get("app")->warn(
        "event=clock_offset offset_ms={} note=\"this host's clock differs from the database "
        "server's; the broker follows the database's\"",
        off_ms);
  }
}

// The `trust:` section, parsed and compiled (docs/configuration.md "trust").
Result<std::shared_ptr<const oidc::TrustSet>> LoadTrust(config::Config& cfg) {
  oidc::TrustContext tc;
  for (const auto& ic : cfg.issuers) {
    tc.issuer_names.push_back(ic.name);
  }
  tc.max_session_ttl_seconds = cfg.sessions.max_ttl_seconds;
  return oidc::ParseTrustPolicies(cfg.trust ? &*cfg.trust : nullptr, tc);
}

// Every identity key a principal uses is one some configured issuer acts for
// (IssuerDescription::identity_key): a misspelt key would silently turn a
// delegated-rights check off.
Status CheckIdentities(const config::Config& cfg, const std::set<std::string>& keys) {
  for (const Principal& p : cfg.policy->principals) {
    for (const auto& [key, value] : p.identities) {
      if (keys.contains(key)) {
        continue;
      }
      std::string known;
      for (const std::string& k : keys) {
        known += (known.empty() ? "" : ", ") + k;
      }
      auto loc = cfg.policy_notes.identity_locations.find({p.id, key});
      const std::string where =
          loc != cfg.policy_notes.identity_locations.end()
              ? loc->second
              : cfg.file + ": policy.principals (" + p.id + ").identities." + key;
      return std::unexpected(InvalidArgument(
          "invalid_config",
          where + ": no configured issuer acts for identity \"" + key + "\" (" +
              (known.empty() ? std::string("none does") : "they act for: " + known) + ")"));
    }
  }
  return OkStatus();
}

// What validation produced, for App::Create to reuse.
struct Validated {
  std::map<std::string, std::unique_ptr<IssuerSpec>> issuers;
  std::set<std::string> identity_keys;
  std::shared_ptr<const oidc::TrustSet> trust;
};

// See ValidateConfig (app.h). Creates nothing.
Result<Validated> Validate(config::Config& cfg, const issuers::IssuerRegistry& registry) {
  Validated out;
  JITBROKER_ASSIGN_OR_RETURN(auto rules,
                             lifecycle::ParseAnomalyRules(cfg.anomaly ? &*cfg.anomaly : nullptr));
  (void)rules;
  if (cfg.audit.signing_key) {
    JITBROKER_ASSIGN_OR_RETURN(auto key, AuditKeyFromPem(*cfg.audit.signing_key));
    (void)key;
  }
  for (auto& ic : cfg.issuers) {
    IssuerContext ctx{ic.name, &ic.section, cfg.data_dir, nullptr, nullptr};
    JITBROKER_ASSIGN_OR_RETURN(std::unique_ptr<IssuerSpec> spec, registry.Validate(ic.type, ctx));
    if (const std::string& key = spec->Describe().identity_key; !key.empty()) {
      out.identity_keys.insert(key);
    }
    out.issuers.emplace(ic.name, std::move(spec));
  }
  JITBROKER_RETURN_IF_ERROR(CheckIdentities(cfg, out.identity_keys));
  JITBROKER_ASSIGN_OR_RETURN(out.trust, LoadTrust(cfg));
  JITBROKER_RETURN_IF_ERROR(oidc::CheckTrustGrants(
      *out.trust, *cfg.policy, [&out](std::string_view name) -> const IssuerSpec* {
        auto it = out.issuers.find(std::string(name));
        return it == out.issuers.end() ? nullptr : it->second.get();
      }));
  return out;
}

}  // namespace

Status ValidateConfig(config::Config& cfg, const issuers::IssuerRegistry& registry) {
  JITBROKER_ASSIGN_OR_RETURN(Validated v, Validate(cfg, registry));
  (void)v;
  return OkStatus();
}

Status ValidateConfig(config::Config& cfg) {
  return ValidateConfig(cfg, issuers::BuiltinIssuers());
}

App::~App() { Stop(); }

Result<std::unique_ptr<App>> App::Create(const std::string& config_path, AppOptions options) {
  std::unique_ptr<App> app(new App());
  app->impl_ = std::make_unique<Impl>();
  Impl& impl = *app->impl_;
  impl.config_path = config_path;

  JITBROKER_ASSIGN_OR_RETURN(impl.cfg, config::LoadConfigFile(config_path));
  log::InitLogging(impl.cfg.log.level);
  // The whole file is checked before anything is created (API keys, seal
  // key, store, audit file and key, access log, generated issuer keys): a
  // refused config leaves no trace on disk.
  const issuers::IssuerRegistry& registry = issuers::BuiltinIssuers();
  JITBROKER_ASSIGN_OR_RETURN(Validated validated, Validate(impl.cfg, registry));
  for (const std::string& w : impl.cfg.policy_notes.warnings) {
    log::Get("config")->warn("event=config_deprecated note={}", log::Quoted(w));
  }
  impl.identity_keys = validated.identity_keys;
  if (std::string err = log::ConfigureAccessLog(impl.cfg.log.access_log); !err.empty()) {
    return std::unexpected(InvalidArgument("invalid_config", err));
  }
  std::error_code ec;
  std::filesystem::create_directories(impl.cfg.data_dir, ec);
  if (ec) {
    return std::unexpected(Internal("cannot create data_dir " + impl.cfg.data_dir, ec.message()));
  }
  ::chmod(impl.cfg.data_dir.c_str(), 0700);
  JITBROKER_ASSIGN_OR_RETURN(bool generated, GenerateMissingApiKeys(impl.cfg, options.out));
  if (generated) {
    JITBROKER_ASSIGN_OR_RETURN(impl.cfg, config::LoadConfigFile(config_path));
  }
  JITBROKER_ASSIGN_OR_RETURN(impl.seal_key, LoadOrGenerateSealKey(impl.cfg));

  JITBROKER_ASSIGN_OR_RETURN(impl.store, store::Open(impl.cfg.store));
  SyncClockToStore(*impl.store, impl.clock);  // before anything is timestamped
  impl.clock_synced_at = std::chrono::steady_clock::now();
  std::filesystem::create_directories(std::filesystem::path(impl.cfg.audit.file).parent_path(), ec);
  JITBROKER_ASSIGN_OR_RETURN(impl.audit_key, LoadOrGenerateAuditKey(impl.cfg));
  {
    audit::JournalOptions jo;
    jo.max_group = static_cast<size_t>(impl.cfg.store.group_commit_max_batch);
    jo.checkpoint.key = impl.audit_key;
    jo.checkpoint.every_records = impl.cfg.audit.checkpoint_every_records;
    jo.checkpoint.every_seconds = impl.cfg.audit.checkpoint_every_seconds;
    jo.checkpoint.clock = &impl.clock;
    jo.file_sync =
        impl.cfg.audit.file_sync_per_commit ? audit::FileSync::kCommit : audit::FileSync::kInterval;
    jo.file_sync_interval = std::chrono::milliseconds(impl.cfg.audit.file_sync_interval_ms);
    if (const config::PostgresStoreConfig* pg = impl.cfg.store.postgres()) {
      jo.chain_id = pg->replica_id;  // one chain per replica (docs/architecture.md)
    }
    JITBROKER_ASSIGN_OR_RETURN(
        impl.journal, audit::Journal::Create(impl.store.get(), impl.cfg.audit.file, std::move(jo)));
  }
  Metrics* metrics = &impl.metrics;
  impl.journal->SetObserver([metrics](size_t batches, int64_t micros) {
    metrics->ObserveAuditCommit(batches, static_cast<double>(micros) / 1e6);
  });

  std::map<std::string, std::unique_ptr<Issuer>> built;
  {
    net::CurlHttpClientOptions ho;
    ho.user_agent = "jitbroker/0.1";
    // Grant handlers and the revocation fan-out call upstream concurrently.
    ho.max_idle_handles = static_cast<size_t>(std::max(64, impl.cfg.server.threads + 32));
    impl.upstream_http = net::MakeCurlHttpClient(std::move(ho));
  }
  for (auto& ic : impl.cfg.issuers) {
    IssuerContext ctx{ic.name, &ic.section, impl.cfg.data_dir, &impl.clock,
                      impl.upstream_http.get()};
    JITBROKER_ASSIGN_OR_RETURN(auto issuer, registry.Create(ic.type, ctx));
    built.emplace(ic.name, std::move(issuer));
  }
  service::ServiceOptions so_opts;
  so_opts.sessions = impl.cfg.sessions;
  so_opts.seal_key = impl.seal_key.Clone();
  so_opts.audit_jwks = {{"keys", {impl.audit_key->PublicJwk()}}};
  if (const config::PostgresStoreConfig* pg = impl.cfg.store.postgres()) {
    so_opts.audit_chain = pg->replica_id;
    so_opts.shared_store = true;
  }
  JITBROKER_ASSIGN_OR_RETURN(
      so_opts.anomaly_rules,
      lifecycle::ParseAnomalyRules(impl.cfg.anomaly ? &*impl.cfg.anomaly : nullptr));
  so_opts.default_approval_ttl_seconds = impl.cfg.approvals.default_ttl_seconds;
  so_opts.max_pending_per_session = impl.cfg.approvals.max_pending_per_session;
  so_opts.max_pending_per_principal = impl.cfg.approvals.max_pending_per_principal;
  so_opts.limits = impl.cfg.limits;
  if (so_opts.limits.max_calls_per_issuer <= 0) {
    so_opts.limits.max_calls_per_issuer = std::max(1, impl.cfg.server.threads / 2);
  }
  std::shared_ptr<const oidc::TrustSet> trust = std::move(validated.trust);
  {
    // Discovery and JWKS documents are small; the cap keeps a hostile or
    // broken issuer from making the broker download much.
    net::CurlHttpClientOptions ho;
    ho.max_response_bytes = oidc::JwksCache::Options().max_document_bytes;
    impl.oidc_http = net::MakeCurlHttpClient(std::move(ho));
    impl.jwks = std::make_unique<oidc::JwksCache>(impl.oidc_http.get(), &impl.clock);
    so_opts.oidc_keys = impl.jwks.get();
    if (impl.cfg.humans) {
      oidc::HumanLogin::Options lo;
      lo.config = std::move(*impl.cfg.humans);  // the one copy of the client secret
      impl.human_login = std::make_unique<oidc::HumanLogin>(std::move(lo), impl.oidc_http.get(),
                                                            impl.jwks.get(), &impl.clock);
      so_opts.human_login = impl.human_login.get();
    }
  }
  if (const auto& hook = impl.cfg.approvals.webhook) {
    lifecycle::WebhookOptions wo;
    wo.url = hook->url;
    wo.timeout = Seconds(hook->timeout_seconds);
    wo.max_attempts = static_cast<int>(hook->max_attempts);
    if (hook->authorization) {
      wo.authorization = hook->authorization->Clone();
    }
    wo.max_queue = static_cast<size_t>(hook->max_queue);
    impl.notifier =
        std::make_unique<lifecycle::ApprovalNotifier>(std::move(wo), net::MakeCurlHttpClient({}));
    so_opts.notifier = impl.notifier.get();
  }
  if (const auto& slack = impl.cfg.approvals.slack) {
    impl.slack = std::make_unique<lifecycle::SlackNotifier>(*slack, net::MakeCurlHttpClient({}),
                                                            net::MakeCurlHttpClient({}));
    so_opts.slack = impl.slack.get();
  }
  impl.service = std::make_unique<service::BrokerService>(
      impl.store.get(), impl.journal.get(), &impl.clock, &impl.metrics, std::move(built),
      impl.cfg.policy, std::move(so_opts));
  JITBROKER_RETURN_IF_ERROR(impl.service->SetTrust(std::move(trust)));
  {
    std::lock_guard lock(impl.change_relay.mu);
    impl.change_relay.target = impl.service.get();
  }
  Impl::ChangeRelay* relay = &impl.change_relay;
  impl.store->WatchChanges([relay] { relay->Fire(); });
  JITBROKER_RETURN_IF_ERROR(impl.service->Reconcile());
  service::BrokerService* svc = impl.service.get();
  Impl* state = &impl;
  impl.sweeper = std::make_unique<lifecycle::Sweeper>(
      std::chrono::milliseconds(impl.cfg.sessions.sweep_interval_ms), [svc, state] {
        if (std::chrono::steady_clock::now() - state->clock_synced_at >= kClockSyncInterval) {
          SyncClockToStore(*state->store, state->clock);
          state->clock_synced_at = std::chrono::steady_clock::now();
        }
        auto stats = svc->Sweep();
        if (!stats) {
          log::Get("lifecycle")->error("event=sweep_failed error=\"{}\"", stats.error().ToString());
        }
      });
  App* self = app.get();
  http::ProxyOptions proxy;
  proxy.config = impl.cfg.proxy;
  if (impl.cfg.proxy.enabled) {
    net::CurlHttpClientOptions ho;
    ho.user_agent = "jitbroker/0.1";
    ho.max_idle_handles = static_cast<size_t>(std::max(8, impl.cfg.server.threads));
    impl.proxy_http = net::MakeCurlHttpClient(std::move(ho));
    proxy.http = impl.proxy_http.get();
  }
  if (impl.human_login) {
    http::ConsoleOptions co;
    co.clock = &impl.clock;
    co.session_ttl_seconds = impl.human_login->config().session_ttl_seconds;
    co.max_sessions = static_cast<size_t>(impl.human_login->config().max_console_sessions);
    co.stall_after_missed = impl.cfg.sessions.stall_after_missed;
    JITBROKER_ASSIGN_OR_RETURN(
        impl.console, http::Console::Create(impl.service.get(), impl.human_login.get(), co));
  }
  JITBROKER_ASSIGN_OR_RETURN(
      impl.server,
      http::HttpServer::Create(
          impl.cfg.server, impl.service.get(), &impl.metrics,
          [self] { return self->ReloadPolicy(); }, std::move(proxy),
          http::PeopleOptions{.console = impl.console.get(), .slack = impl.slack.get()}));
  return app;
}

Result<int> App::Start() {
  Impl& impl = *impl_;
  JITBROKER_ASSIGN_OR_RETURN(int port, impl.server->Bind());
  impl.serve_thread = std::thread([&impl] {
    impl.server->Serve();
    impl.serve_done = true;
  });
  impl.sweeper->Start();
  impl.started = true;
  log::Get("app")->info("event=started listen={}:{} policy_version={} data_dir={}",
                        impl.cfg.server.host, port, impl.cfg.policy->version, impl.cfg.data_dir);
  return port;
}

Result<std::string> App::ReloadPolicy() {
  Impl& impl = *impl_;
  std::lock_guard lock(impl.reload_mu);
  auto cfg = config::LoadConfigFile(impl.config_path);
  if (!cfg) {
    log::Get("app")->error("event=reload_failed error=\"{}\"", cfg.error().ToString());
    return std::unexpected(cfg.error());
  }
  std::set<std::string> before, after;
  for (const auto& ic : impl.cfg.issuers) {
    before.insert(ic.name);
  }
  for (const auto& ic : cfg->issuers) {
    after.insert(ic.name);
  }
  if (before != after) {
    Error e = FailedPrecondition("restart_required",
                                 "the set of issuers changed; issuer changes need a restart");
    log::Get("app")->error("event=reload_failed error=\"{}\"", e.ToString());
    return std::unexpected(e);
  }
  for (const std::string& w : cfg->policy_notes.warnings) {
    log::Get("config")->warn("event=config_deprecated note={}", log::Quoted(w));
  }
  if (Status st = CheckIdentities(*cfg, impl.identity_keys); !st) {
    log::Get("app")->error("event=reload_failed error=\"{}\"", st.error().ToString());
    return std::unexpected(st.error());
  }
  auto trust = LoadTrust(*cfg);
  if (trust) {
    if (Status st = impl.service->CheckTrust(**trust, *cfg->policy); !st) {
      trust = std::unexpected(st.error());
    }
  }
  if (!trust) {
    log::Get("app")->error("event=reload_failed error=\"{}\"", trust.error().ToString());
    return std::unexpected(trust.error());
  }
  // The TLS pair is re-read from the paths the listener started with (an
  // operator's certificate renewal); a pair that does not load fails the
  // reload before anything is swapped.
  if (!impl.cfg.server.tls_cert.empty() && impl.server) {
    if (Status st = impl.server->ReloadTls(); !st) {
      log::Get("app")->error("event=reload_failed error=\"{}\"", st.error().ToString());
      return std::unexpected(st.error());
    }
    log::Get("app")->info("event=tls_reloaded cert={}", log::Quoted(impl.cfg.server.tls_cert));
  }
  impl.service->SwapPolicy(cfg->policy);
  if (Status st = impl.service->SetTrust(std::move(*trust)); !st) {
    log::Get("app")->error("event=reload_failed error=\"{}\"", st.error().ToString());
    return std::unexpected(st.error());
  }
  log::Get("app")->info("event=policy_reloaded policy_version={}", cfg->policy->version);
  return cfg->policy->version;
}

void App::Stop() {
  if (!impl_ || impl_->stopped) {
    return;
  }
  impl_->stopped = true;
  {
    std::lock_guard lock(impl_->change_relay.mu);
    impl_->change_relay.target = nullptr;
  }
  if (impl_->service) {
    impl_->service->EndLongPolls();  // the drain below need not wait for them
  }
  if (impl_->serve_thread.joinable()) {
    // A stop that races a fresh start could find the listener not yet
    // running and leave it accepting forever: repeat it until the serving
    // thread has returned.
    while (!impl_->serve_done) {
      impl_->server->Stop();
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    impl_->serve_thread.join();
  } else if (impl_->server) {
    impl_->server->Stop();
  }
  if (impl_->sweeper) {
    impl_->sweeper->Stop();
  }
  if (impl_->notifier) {
    impl_->notifier->Stop();
  }
  if (impl_->slack) {
    impl_->slack->Stop();
  }
  if (impl_->journal) {
    impl_->journal->Stop();  // writes the shutdown checkpoint
  }
  if (impl_->started) {
    // The head an operator can pin (jitctl audit verify --expect-head).
    const std::optional<ChainHead> head = impl_->journal ? impl_->journal->Head() : std::nullopt;
    log::Get("app")->info("event=stopped audit_head_seq={} audit_head={}", head ? head->seq : 0,
                          head ? head->hash : std::string());
  }
}

}  // namespace jitbroker::app
