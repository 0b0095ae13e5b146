// Broker configuration (docs/configuration.md): loaded from one YAML (or JSON) file,
// validated completely at load. Errors name the file, line and key path, e.g.
//   "conf/dev.yaml:12: policy.tiers.secret.max_ttl_seconds: must be an integer in [1, 86400]".
// Unknown keys and duplicate keys are errors. Secrets are only accepted as
// references ("file:PATH" or "env:NAME") and are resolved at load.
//
// Thread-safety: a loaded Config is an immutable value; the policy inside is
// shared as std::shared_ptr<const Policy>.
#pragma once

#include <cstdint>
#include <filesystem>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <variant>
#include <vector>

#include <yaml-cpp/yaml.h>

#include "broker/common/rate_limit.h"
#include "jitbroker/config_view.h"
#include "jitbroker/policy.h"
#include "jitbroker/result.h"
#include "jitbroker/secret.h"

namespace jitbroker::config {

// A YAML mapping being read strictly: the ConfigView (include/jitbroker/
// config_view.h) of the broker's own loader. Every accessor marks its key as
// known; CheckNoUnknownKeys() then reports the first key never asked for.
// Errors are kInvalidArgument with reason "invalid_config" and a message
// "FILE:LINE: PATH.KEY: what is wrong".
class Section final : public ConfigView {
 public:
  Section(YAML::Node node, std::shared_ptr<const std::string> file, std::string path);

  const std::string& path() const override { return path_; }  // "policy.tiers.read"
  int line() const;                                           // 1-based
  const YAML::Node& node() const { return node_; }
  bool Has(std::string_view key) const override;
  ConfigValueKind KindOf(std::string_view key) const override;
  [[nodiscard]] Result<std::vector<std::string>> Keys() const override;

  [[nodiscard]] Result<std::string> String(std::string_view key) override;
  [[nodiscard]] Result<std::optional<std::string>> OptString(std::string_view key) override;
  [[nodiscard]] Result<std::optional<int64_t>> OptInt(std::string_view key, int64_t min,
                                                      int64_t max) override;
  // A decimal number in [min, max]; `range` is how errors show the bounds.
  [[nodiscard]] Result<std::optional<double>> OptNumber(std::string_view key, double min,
                                                        double max,
                                                        std::string_view range) override;
  [[nodiscard]] Result<std::optional<bool>> OptBool(std::string_view key) override;
  // A sequence of strings (absent = empty).
  [[nodiscard]] Result<std::vector<std::string>> StringList(std::string_view key) override;
  [[nodiscard]] Result<std::optional<Section>> OptSection(std::string_view key);
  // Each element of a sequence of mappings.
  [[nodiscard]] Result<std::vector<Section>> SectionList(std::string_view key);
  [[nodiscard]] Result<std::unique_ptr<ConfigView>> OptView(std::string_view key) override;
  [[nodiscard]] Result<std::vector<std::unique_ptr<ConfigView>>> ViewList(
      std::string_view key) override;
  // A "file:PATH" or "env:NAME" reference, resolved; inline values are an error.
  // Relative file paths resolve against the config file's directory.
  [[nodiscard]] Result<std::optional<SecretValue>> OptSecretRef(std::string_view key) override;
  // Marks `key` as known without reading it (for keys read elsewhere).
  void MarkKnown(std::string_view key) override;

  [[nodiscard]] Status CheckNoUnknownKeys() const override;
  Error Err(std::string_view key, std::string_view what) const override;  // key may be empty
  const std::string& file() const { return *file_; }

 private:
  YAML::Node node_;
  std::shared_ptr<const std::string> file_;
  std::string path_;
  std::shared_ptr<std::vector<std::string>> known_;
};

// The HTTP listener and its per-request and per-connection bounds
// (docs/configuration.md `server`, docs/architecture.md "The HTTP listener").
struct ServerConfig {
  std::string host = "127.0.0.1";
  int port = 8443;                      // 0 = pick a free port (tests)
  int threads = 8;                      // handler (worker) threads
  int io_threads = 2;                   // socket, TLS and parsing threads
  int max_queued_requests = 256;        // complete requests waiting for a worker; beyond: 503
  size_t max_body_bytes = 64 * 1024;    // JSON bodies, decoded
  size_t max_header_bytes = 16 * 1024;  // request line + header fields
  size_t max_header_count = 100;
  size_t max_connections = 1024;
  size_t max_connections_per_address = 64;
  int64_t request_timeout_ms = 10000;  // whole request head + body
  int64_t idle_timeout_ms = 30000;     // between keep-alive requests
  int64_t write_timeout_ms = 10000;    // whole answer
  int max_long_polls = -1;             // concurrent ?wait=N polls (< threads); -1 = threads / 2
  bool metrics_public = true;          // false: /metrics needs an admin key
  std::string tls_cert;                // resolved PEM paths; empty = plain HTTP
  std::string tls_key;
  // server.tls.client_ca: PEM CA bundle; set = clients may present a
  // certificate it issued (principals' client_certs_sha256). Empty: none asked.
  std::string tls_client_ca;
};

// `store:` (docs/configuration.md): which Store the broker keeps its state
// in, built by store::Open (broker/store/open.h). Exactly one backend.
// Nothing here reloads.
struct SqliteStoreConfig {
  std::string path;  // absolute; default: <data_dir>/state.db
};

// The PostgreSQL store that several broker replicas share
// (broker/store/postgres_store.h).
struct PostgresStoreConfig {
  std::optional<SecretValue> dsn;  // libpq connection string, from env:/file:
  int pool_size = 16;              // connections per broker process, 1..1000
  // This replica's stable name, unique among the replicas that run at once:
  // the id of the audit chain it writes. Default: the host name.
  std::string replica_id;
};

struct StoreConfig {
  std::variant<SqliteStoreConfig, PostgresStoreConfig> backend;  // default: sqlite
  int group_commit_max_batch = 256;                              // batches per transaction at most

  const SqliteStoreConfig* sqlite() const { return std::get_if<SqliteStoreConfig>(&backend); }
  const PostgresStoreConfig* postgres() const { return std::get_if<PostgresStoreConfig>(&backend); }
};

struct AuditConfig {
  std::string file;  // default: <data_dir>/audit.jsonl
  // Signs the audit checkpoints (broker/audit/checkpoint.h): a PEM private
  // key, EC P-256 (ES256) or Ed25519, by file:/env: reference. Absent: an
  // ES256 key generated into <data_dir>/keys/audit.pem at first start.
  std::optional<SecretValue> signing_key;
  // audit.checkpoint: a signed checkpoint at least every `every_records`
  // records (1..1000000, default 1000) and within `every_seconds` of a
  // record (1..86400, default 60). Restart to change.
  int64_t checkpoint_every_records = 1000;
  int64_t checkpoint_every_seconds = 60;
  // When the JSONL file (a copy of the store's chain) is fdatasync'd:
  // "interval" (in the background every file_sync_interval_ms, 10..60000,
  // default 200) or "commit" (before each answer, like the store). Restart
  // to change.
  bool file_sync_per_commit = false;
  int64_t file_sync_interval_ms = 200;
};

struct SessionsConfig {
  int64_t max_ttl_seconds = 28800;
  int64_t default_ttl_seconds = 3600;
  int64_t heartbeat_seconds = 60;
  int64_t stall_after_missed = 3;
  int64_t sweep_interval_ms = 1000;  // how often the sweeper looks for due deadlines
};

struct LogConfig {
  std::string level = "info";         // trace|debug|info|warn|error
  std::string access_log = "stderr";  // stderr | off | FILE
};

// `approvals:` (docs/configuration.md "approvals"). Nothing here reloads: a change needs a restart.
struct ApprovalWebhookConfig {
  // Where each pending approval is POSTed: https://, or http:// only for a
  // loopback host (127.0.0.0/8, [::1], localhost). Required.
  std::string url;
  int64_t timeout_seconds = 5;  // per attempt, whole exchange; 1..60
  int64_t max_attempts = 8;     // including the first; 1..100
  // Sent as the Authorization header value as is. The HTTP client carries
  // only bearer credentials, so the value must read "Bearer TOKEN".
  std::optional<SecretValue> authorization;
  int64_t max_queue = 1000;  // undelivered messages kept; 1..100000
};

// `approvals.slack:` (docs/configuration.md "approvals.slack"): a message per
// pending approval in a Slack channel, and, in interactive mode, Approve and
// Deny buttons whose callbacks (POST /v1/slack/interactions) are verified
// with Slack's request signature. Nothing here reloads.
struct ApprovalSlackConfig {
  // The Web API base URL: https://, or http:// only for a loopback host.
  // Default https://slack.com/api (no trailing slash).
  std::string api_url = "https://slack.com/api";
  SecretValue bot_token;  // xoxb-…; sent as "Authorization: Bearer …". Required.
  std::string channel;    // channel id (C…). Required.
  // Verifies the interaction callbacks; required unless notify_only.
  std::optional<SecretValue> signing_secret;
  bool interactive = true;  // mode: interactive (default) | notify_only
  // Slack user id -> principal id (each must exist in policy.principals).
  std::map<std::string, std::string> users;
  // When a clicker is not in `users`: look up their email (users.info) and
  // match it to a principal's `email`. Default false.
  bool match_email = false;
  // Base URL of the web console; when set the message links to
  // <console_url>/ui/approvals/<approval id>. Empty = no link.
  std::string console_url;
  int64_t timeout_seconds = 5;  // per Web API call; 1..60
  int64_t max_attempts = 8;     // per message, including the first; 1..100
  int64_t max_queue = 1000;     // undelivered messages kept; 1..100000
};

struct ApprovalsConfig {
  // How long a pending approval lives unless its tier sets
  // approval_ttl_seconds; 10..86400.
  int64_t default_ttl_seconds = 300;
  // Pending (undecided, unexpired) approvals one session, and all sessions of
  // one delegating principal, may hold at once; a request past either bound
  // is refused (429 too_many_pending_approvals). 1..10000 and 1..100000.
  int64_t max_pending_per_session = 10;
  int64_t max_pending_per_principal = 50;
  std::optional<ApprovalWebhookConfig> webhook;  // absent = no notification
  std::optional<ApprovalSlackConfig> slack;      // absent = no Slack messages
};

// `limits:` (docs/configuration.md "limits"): token-bucket rate limits on grant requests, per
// session and per delegating principal (broker/common/rate_limit.h). A
// request over either is refused with 429 rate_limited and Retry-After.
// Nothing here reloads: a change needs a restart.
struct LimitsConfig {
  RateLimit grants_per_session{.rate_per_second = 5, .burst = 50};
  RateLimit grants_per_principal{.rate_per_second = 20, .burst = 200};
  // Per source address (the TCP peer; behind a proxy or NAT every client it
  // fronts shares one bucket): RFC 8693 exchanges, introspections, and
  // failed authentications on any route (an address out of these is refused
  // before its credentials are checked, whether they are right or not).
  RateLimit token_per_address{.rate_per_second = 20, .burst = 200};
  RateLimit introspect_per_address{.rate_per_second = 200, .burst = 2000};
  RateLimit auth_failures_per_address{.rate_per_second = 0.2, .burst = 20};
  // Calls in flight to one issuer's upstream at most (mints), so that an
  // upstream that hangs holds at most this many handler threads and the
  // other issuers keep the rest (a bulkhead per issuer). 0 = half of
  // server.threads, at least 1.
  int64_t max_calls_per_issuer = 0;
  // Buckets tracked per limiter at most (sessions / principals seen
  // recently); full buckets are dropped to make room, else the request is
  // refused. 100..10000000.
  int64_t max_tracked_keys = 100000;
};

// `proxy:` (docs/proxy.md): git smart HTTP and the GitHub REST API through
// the broker, for every issuer that declares proxy upstreams. Nothing here
// reloads.
struct ProxyConfig {
  bool enabled = true;
  int64_t max_push_bytes = int64_t{2} << 30;  // one push request's body, decoded
  int64_t max_transfer_seconds = 3600;        // one request and its answer, whole
  int64_t idle_timeout_seconds = 60;          // no byte either way for this long: abort
  int max_concurrent_transfers = -1;          // -1 = server.threads / 2 (at least 1)
  int64_t max_refs_per_push = 100;
  // Branches whose updates are `push_protected` (tier merge_deploy by
  // default), besides the upstream's default branch: globs over the short
  // name ("main", "release/*").
  std::vector<std::string> protected_branches = {"main", "master"};
  bool default_branch_protected = true;
  int64_t read_token_ttl_seconds = 600;  // the broker's cached read tokens (git.fetch)
  // The GitHub REST API through the broker (/github/HOST/…).
  int64_t max_api_body_bytes = 1 << 20;  // a REST request body (hashed into its decision)
  // Routes a config adds before the built-in table (docs/proxy.md, "The
  // GitHub REST API"): method ("*" = any), a path pattern under
  // /repos/{owner}/{repo} ("pulls/{number}/merge", "**" = the rest), and
  // what the call is (tool, operation) and needs (installation permissions).
  struct ApiRoute {
    std::string method;
    std::string path;
    std::string tool;
    std::string operation;
    std::map<std::string, std::string> permissions;
  };
  std::vector<ApiRoute> api_routes;
};

// `humans:` (docs/configuration.md "humans"): single sign-on of principals
// with the company identity provider, by the OpenID Connect authorization
// code flow with PKCE, for the web console (/ui/) and `jitctl login`; the ID
// tokens it issues also authenticate principals on the API. Absent: no
// single sign-on. Nothing here reloads: a change needs a restart (the
// principals it maps to come from the policy, which does reload).
struct HumansConfig {
  std::string issuer;       // exact `iss`; discovery at {issuer}/.well-known/openid-configuration
  bool allow_http = false;  // an http:// issuer on a loopback host (tests, dev)
  std::string client_id;    // the broker's client at the provider; the ID token's audience
  SecretValue client_secret;
  // How the broker authenticates to the token endpoint: "client_secret_basic"
  // (HTTP Basic, the OIDC default) or "client_secret_post" (in the form).
  std::string token_endpoint_auth = "client_secret_basic";
  // Where the provider sends the browser back: the broker's own /ui/callback
  // as the browser reaches it (https, or http for a loopback host).
  std::string redirect_url;
  // Which ID token claim names the principal: "email" (policy.principals[].email,
  // never an address the provider marks unverified) or "sub" (principals[].id).
  std::string claim = "email";
  std::vector<std::string> scopes = {"openid", "email"};
  std::vector<std::string> algorithms = {"RS256", "ES256"};
  int64_t session_ttl_seconds = 3600;    // a console sign-in lasts this long; 60..43200
  int64_t max_token_age_seconds = 3600;  // an ID token as an API bearer; 60..86400
  int64_t leeway_seconds = 30;           // clock skew on exp/iat; 0..300
  int64_t max_console_sessions = 10000;  // signed-in browsers kept; 1..1000000
};

struct IssuerConfig {
  std::string name;
  std::string type;
  Section section;  // the issuer's own mapping ("type" marked known)
};

// What loading the policy noticed besides the policy itself.
struct PolicyNotes {
  // Accepted but deprecated (principals[].github_login): logged once per
  // load by the daemon and printed by the config checkers.
  std::vector<std::string> warnings;
  // "FILE:LINE: policy.principals[i].identities.KEY" by (principal id, KEY),
  // for checks that need the issuers (app::ValidateConfig: every identity
  // key must be one some configured issuer acts for).
  std::map<std::pair<std::string, std::string>, std::string> identity_locations;
};

struct Config {
  std::string file;      // absolute path of the loaded file
  std::string data_dir;  // absolute
  ServerConfig server;
  StoreConfig store;
  AuditConfig audit;
  std::optional<SecretValue> seal_key;  // 32 bytes decoded; absent = generated (dev)
  std::shared_ptr<const Policy> policy;
  PolicyNotes policy_notes;
  SessionsConfig sessions;
  LogConfig log;
  std::vector<IssuerConfig> issuers;
  ApprovalsConfig approvals;           // defaults when `approvals:` is absent
  LimitsConfig limits;                 // defaults when `limits:` is absent
  ProxyConfig proxy;                   // defaults when `proxy:` is absent
  std::optional<HumansConfig> humans;  // absent = no single sign-on
  // Accepted now and validated by later features: anomaly rules, trust policies.
  std::optional<Section> anomaly;
  std::optional<Section> trust;
};

// The largest configuration file, and the largest file a `file:` reference
// or `api_key_file` may name (keys and tokens are a few KiB).
inline constexpr size_t kMaxConfigFileBytes = 4 * 1024 * 1024;
inline constexpr size_t kMaxSecretFileBytes = 1024 * 1024;

// The contents of `path`, at most `max_bytes`, read with one bounded loop: a
// path naming something endless or huge (/dev/zero, a log file) is an error,
// not an unbounded read. Errors: kInvalidArgument "unreadable" (cannot open
// or read; "<path>: <OS reason>") or "too_large" ("<path>: larger than N
// bytes"); what was read is wiped before an error returns, since the file may
// be a secret. The caller wipes a secret result.
[[nodiscard]] Result<std::string> ReadFileBounded(const std::filesystem::path& path,
                                                  size_t max_bytes);

// Loads and validates the whole file. Relative paths (data_dir, store, audit,
// file: refs) resolve against the config file's directory.
[[nodiscard]] Result<Config> LoadConfigFile(const std::string& path);
// Same, from text (file name used in messages and for relative paths).
[[nodiscard]] Result<Config> LoadConfigText(std::string_view text, const std::string& file_name);

// The policy part alone (used by reload): section is the `policy:` mapping.
[[nodiscard]] Result<std::shared_ptr<const Policy>> LoadPolicy(Section& section,
                                                               PolicyNotes* notes = nullptr);

}  // namespace jitbroker::config
