// Unit tests for the approval webhook notifier (broker/lifecycle/notifier.h)
// against a loopback cpp-httplib receiver, and for the `approvals:` config
// section (broker/config/config.h).
#include <chrono>
#include <condition_variable>
#include <cstdlib>
#include <deque>
#include <filesystem>
#include <fstream>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include <doctest/doctest.h>
#include <httplib.h>
#include <nlohmann/json.hpp>

#include "broker/common/time_util.h"
#include "broker/config/config.h"
#include "broker/lifecycle/notifier.h"
#include "broker/net/http_client.h"
#include "jitbroker/clock.h"
#include "jitbroker/store.h"
#include "tests/support/states_doctest.h"

namespace jitbroker::lifecycle {
namespace {

using std::chrono::milliseconds;
using SteadyClock = std::chrono::steady_clock;

constexpr auto kDeadline = std::chrono::seconds(5);  // only reached when a test fails

struct Received {
  std::string body;
  std::string content_type;
  std::string user_agent;
  std::string event;
  std::string delivery;
  std::string authorization;
  bool has_authorization = false;
  SteadyClock::time_point at;
};

struct Reply {
  int status = 200;
  std::string retry_after;  // empty = no header
};

// A webhook receiver on 127.0.0.1:<ephemeral>. Replies are scripted: each
// request takes the next one from the script (200 when it is empty). With
// HoldRequests() every request waits until Release().
class WebhookReceiver {
 public:
  WebhookReceiver() {
    server_.set_tcp_nodelay(true);
    server_.set_payload_max_length(1 << 20);
    server_.set_exception_handler([](const httplib::Request&, httplib::Response& res,
                                     std::exception_ptr) { res.status = 500; });
    server_.Post("/hook", [this](const httplib::Request& req, httplib::Response& res) {
      Received r;
      r.body = req.body;
      r.content_type = req.get_header_value("Content-Type");
      r.user_agent = req.get_header_value("User-Agent");
      r.event = req.get_header_value("X-Jitbroker-Event");
      r.delivery = req.get_header_value("X-Jitbroker-Delivery");
      r.has_authorization = req.has_header("Authorization");
      r.authorization = req.get_header_value("Authorization");
      r.at = SteadyClock::now();
      Reply reply;
      {
        std::unique_lock<std::mutex> lock(mu_);
        received_.push_back(r);
        cv_.notify_all();
        cv_.wait_for(lock, kDeadline, [this] { return !hold_; });
        if (!script_.empty()) {
          reply = script_.front();
          script_.pop_front();
        }
      }
      res.status = reply.status;
      if (!reply.retry_after.empty()) {
        res.set_header("Retry-After", reply.retry_after);
      }
      res.set_content("{}", "application/json");
    });
    port_ = server_.bind_to_any_port("127.0.0.1");
    REQUIRE(port_ > 0);
    thread_ = std::thread([this] { server_.listen_after_bind(); });
    const auto deadline = SteadyClock::now() + kDeadline;
    while (!server_.is_running() && SteadyClock::now() < deadline) {
      std::this_thread::yield();
    }
    REQUIRE(server_.is_running());
  }
  ~WebhookReceiver() {
    Release();
    server_.stop();
    thread_.join();
  }

  std::string Url() const { return "http://127.0.0.1:" + std::to_string(port_) + "/hook"; }

  void Script(std::vector<Reply> replies) {
    std::lock_guard<std::mutex> lock(mu_);
    script_.assign(replies.begin(), replies.end());
  }
  void HoldRequests() {
    std::lock_guard<std::mutex> lock(mu_);
    hold_ = true;
  }
  void Release() {
    std::lock_guard<std::mutex> lock(mu_);
    hold_ = false;
    cv_.notify_all();
  }
  // Waits until at least `n` requests arrived (false at the deadline).
  bool WaitForRequests(size_t n) {
    std::unique_lock<std::mutex> lock(mu_);
    return cv_.wait_for(lock, kDeadline, [&] { return received_.size() >= n; });
  }
  std::vector<Received> Requests() {
    std::lock_guard<std::mutex> lock(mu_);
    return received_;
  }

 private:
  httplib::Server server_;
  int port_ = 0;
  std::thread thread_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::vector<Received> received_;
  std::deque<Reply> script_;
  bool hold_ = false;
};

std::unique_ptr<net::HttpClient> Client() {
  REQUIRE(net::CurlGlobalInit().has_value());  // reference-counted by libcurl
  return net::MakeCurlHttpClient();
}

WebhookOptions FastOptions(const std::string& url) {
  WebhookOptions o;
  o.url = url;
  o.timeout = Seconds(5);
  o.max_attempts = 5;
  o.initial_backoff = milliseconds(1);
  o.max_backoff = milliseconds(5);
  return o;
}

// Polls `pred` until it holds or the deadline passes.
bool Eventually(const std::function<bool()>& pred) {
  const auto deadline = SteadyClock::now() + kDeadline;
  while (!pred()) {
    if (SteadyClock::now() >= deadline) {
      return false;
    }
    std::this_thread::sleep_for(milliseconds(1));
  }
  return true;
}

nlohmann::json Message(const std::string& approval_id) {
  return {{"event", "approval.pending"}, {"approval_id", approval_id}};
}

std::string ApprovalIdOf(const Received& r) {
  return nlohmann::json::parse(r.body).value("approval_id", "");
}

GrantRecord PendingGrant() {
  GrantRecord g;
  g.id = "grt_1";
  g.session_id = "ses_1";
  g.principal_id = "alice";
  g.agent_id = "agent-7";
  g.task_id = "task-42";
  g.tool = "github.merge_pull_request";
  g.operation = "merge";
  g.resource = "github://acme/payment-service/pull/842";
  g.issuer = "github";
  g.parameters = {{"branch", "main"}, {"api_token", "[redacted]"}};
  g.scope = {{"resources", {"github://acme/payment-service"}}};
  g.ttl_seconds = 600;
  g.tier = "merge_deploy";
  g.decision = {{"result", "pending"},         {"tier", "merge_deploy"},
                {"code", "approval_required"}, {"reason", "merge needs a maintainer"},
                {"matched_rule", "tools[0]"},  {"policy_version", "dev.1"},
                {"ttl_seconds", 600}};
  g.state = GrantState::kPending;
  g.request_digest = std::string(64, 'a');
  g.approval_id = "apr_1";
  g.created_at = FromUnixSeconds(1'800'000'000);
  g.justification = "release 1.2";
  g.approval_expires_at = ParseRfc3339("2027-01-15T08:05:00Z").value();
  return g;
}

SessionRecord Session() {
  SessionRecord s;
  s.id = "ses_1";
  s.token_sha256 = std::string(64, 'f');
  s.principal_id = "alice";
  s.agent_id = "agent-7";
  s.task_id = "task-42";
  s.task_description = "ship release 1.2";
  s.state = SessionState::kActive;
  return s;
}

TEST_CASE("ApprovalNotifier: delivers with the documented headers and body") {
  WebhookReceiver receiver;
  WebhookOptions options = FastOptions(receiver.Url());
  options.authorization = SecretValue("Bearer test-webhook-token");
  ApprovalNotifier notifier(std::move(options), Client());

  const nlohmann::json message = PendingApprovalMessage(PendingGrant(), Session());
  notifier.Enqueue(message);
  notifier.Enqueue(Message("apr_2"));
  REQUIRE(Eventually([&] { return notifier.Stats().delivered == 2; }));

  std::vector<Received> got = receiver.Requests();
  REQUIRE(got.size() == 2);
  const Received& r = got[0];
  CHECK(r.content_type == "application/json");
  CHECK(r.user_agent == "jitbroker/0.1");
  CHECK(r.event == "approval.pending");
  CHECK(r.delivery.starts_with("dlv_"));
  CHECK(r.delivery.size() > 16);
  CHECK(r.authorization == "Bearer test-webhook-token");
  CHECK(nlohmann::json::parse(r.body) == message);
  CHECK(got[1].delivery != r.delivery);  // one id per message
  CHECK(ApprovalIdOf(got[1]) == "apr_2");

  const NotifierStats stats = notifier.Stats();
  CHECK(stats.retried == 0);
  CHECK(stats.failed == 0);
  CHECK(stats.dropped == 0);
}

TEST_CASE("ApprovalNotifier: no Authorization header unless configured") {
  WebhookReceiver receiver;
  ApprovalNotifier notifier(FastOptions(receiver.Url()), Client());
  notifier.Enqueue(Message("apr_1"));
  REQUIRE(Eventually([&] { return notifier.Stats().delivered == 1; }));
  REQUIRE(receiver.Requests().size() == 1);
  CHECK_FALSE(receiver.Requests()[0].has_authorization);
}

TEST_CASE("ApprovalNotifier: retries after two 503s, then succeeds") {
  WebhookReceiver receiver;
  receiver.Script({{503, ""}, {503, ""}});
  ApprovalNotifier notifier(FastOptions(receiver.Url()), Client());
  notifier.Enqueue(Message("apr_1"));
  REQUIRE(Eventually([&] { return notifier.Stats().delivered == 1; }));

  std::vector<Received> got = receiver.Requests();
  REQUIRE(got.size() == 3);
  // Every attempt of one message carries the same delivery id and body.
  CHECK(got[1].delivery == got[0].delivery);
  CHECK(got[2].delivery == got[0].delivery);
  CHECK(got[2].body == got[0].body);
  const NotifierStats stats = notifier.Stats();
  CHECK(stats.retried == 2);
  CHECK(stats.failed == 0);
}

TEST_CASE("ApprovalNotifier: retryable and permanent statuses") {
  struct Row {
    int status;
    bool retried;
  };
  const Row rows[] = {{500, true},  {502, true},  {503, true},  {504, true},
                      {408, true},  {429, true},  {400, false}, {401, false},
                      {403, false}, {404, false}, {410, false}, {301, false}};
  for (const Row& row : rows) {
    CAPTURE(row.status);
    WebhookReceiver receiver;
    receiver.Script({{row.status, ""}});
    ApprovalNotifier notifier(FastOptions(receiver.Url()), Client());
    notifier.Enqueue(Message("apr_1"));
    // A second message proves the first is finished with (delivery is in order).
    notifier.Enqueue(Message("apr_2"));
    REQUIRE(Eventually([&] {
      NotifierStats s = notifier.Stats();
      return s.delivered + s.failed == 2;
    }));
    const NotifierStats stats = notifier.Stats();
    std::vector<Received> got = receiver.Requests();
    if (row.retried) {
      CHECK(stats.delivered == 2);
      CHECK(stats.failed == 0);
      CHECK(stats.retried == 1);
      REQUIRE(got.size() == 3);
      CHECK(ApprovalIdOf(got[1]) == "apr_1");
    } else {
      CHECK(stats.delivered == 1);
      CHECK(stats.failed == 1);
      CHECK(stats.retried == 0);
      REQUIRE(got.size() == 2);  // not retried
      CHECK(ApprovalIdOf(got[1]) == "apr_2");
    }
  }
}

TEST_CASE("ApprovalNotifier: honours Retry-After, capped by max_backoff") {
  WebhookReceiver receiver;
  // Retry-After: 1 s, capped to 250 ms; without it the wait would be <= 1 ms.
  receiver.Script({{503, "1"}});
  WebhookOptions options = FastOptions(receiver.Url());
  options.initial_backoff = milliseconds(1);
  options.max_backoff = milliseconds(250);
  ApprovalNotifier notifier(std::move(options), Client());
  notifier.Enqueue(Message("apr_1"));
  REQUIRE(Eventually([&] { return notifier.Stats().delivered == 1; }));
  std::vector<Received> got = receiver.Requests();
  REQUIRE(got.size() == 2);
  const auto waited = std::chrono::duration_cast<milliseconds>(got[1].at - got[0].at);
  CHECK(waited >= milliseconds(240));
  CHECK(waited < milliseconds(900));
}

TEST_CASE("ApprovalNotifier: fails after max_attempts") {
  SUBCASE("the receiver keeps answering 503") {
    WebhookReceiver receiver;
    receiver.Script({{503, ""}, {503, ""}, {503, ""}});
    WebhookOptions options = FastOptions(receiver.Url());
    options.max_attempts = 3;
    ApprovalNotifier notifier(std::move(options), Client());
    notifier.Enqueue(Message("apr_1"));
    notifier.Enqueue(Message("apr_2"));
    REQUIRE(Eventually([&] { return notifier.Stats().delivered == 1; }));
    const NotifierStats stats = notifier.Stats();
    CHECK(stats.failed == 1);
    CHECK(stats.retried == 2);
    std::vector<Received> got = receiver.Requests();
    REQUIRE(got.size() == 4);  // three attempts, then the next message
    CHECK(ApprovalIdOf(got[2]) == "apr_1");
    CHECK(ApprovalIdOf(got[3]) == "apr_2");
  }
  SUBCASE("nothing listens (transport error)") {
    std::string url;
    {
      WebhookReceiver gone;
      url = gone.Url();
    }
    WebhookOptions options = FastOptions(url);
    options.max_attempts = 2;
    ApprovalNotifier notifier(std::move(options), Client());
    notifier.Enqueue(Message("apr_1"));
    REQUIRE(Eventually([&] { return notifier.Stats().failed == 1; }));
    CHECK(notifier.Stats().retried == 1);
    CHECK(notifier.Stats().delivered == 0);
  }
}

TEST_CASE("ApprovalNotifier: a full queue drops the oldest message") {
  WebhookReceiver receiver;
  receiver.HoldRequests();
  WebhookOptions options = FastOptions(receiver.Url());
  options.max_queue = 2;
  ApprovalNotifier notifier(std::move(options), Client());

  notifier.Enqueue(Message("apr_1"));
  REQUIRE(receiver.WaitForRequests(1));  // apr_1 is in flight, the queue is empty
  notifier.Enqueue(Message("apr_2"));
  notifier.Enqueue(Message("apr_3"));
  notifier.Enqueue(Message("apr_4"));  // drops apr_2
  notifier.Enqueue(Message("apr_5"));  // drops apr_3
  CHECK(notifier.Stats().dropped == 2);
  receiver.Release();

  REQUIRE(Eventually([&] { return notifier.Stats().delivered == 3; }));
  std::vector<Received> got = receiver.Requests();
  REQUIRE(got.size() == 3);
  CHECK(ApprovalIdOf(got[0]) == "apr_1");
  CHECK(ApprovalIdOf(got[1]) == "apr_4");
  CHECK(ApprovalIdOf(got[2]) == "apr_5");
  CHECK(notifier.Stats().dropped == 2);
}

TEST_CASE("ApprovalNotifier: Stop() interrupts a long backoff") {
  WebhookReceiver receiver;
  receiver.Script({{503, "30"}});
  WebhookOptions options = FastOptions(receiver.Url());
  options.max_backoff = std::chrono::minutes(1);
  ApprovalNotifier notifier(std::move(options), Client());
  notifier.Enqueue(Message("apr_1"));
  REQUIRE(receiver.WaitForRequests(1));
  notifier.Enqueue(Message("apr_2"));  // queued behind the backoff

  const auto start = SteadyClock::now();
  notifier.Stop();
  CHECK(SteadyClock::now() - start < milliseconds(500));

  NotifierStats stats = notifier.Stats();
  CHECK(stats.delivered == 0);
  CHECK(stats.retried == 0);
  CHECK(stats.dropped == 2);  // the one waiting to retry and the queued one
  CHECK(receiver.Requests().size() == 1);

  notifier.Enqueue(Message("apr_3"));  // after Stop(): counted, not sent
  CHECK(notifier.Stats().dropped == 3);
  notifier.Stop();  // idempotent
}

TEST_CASE("ApprovalNotifier: an authorization not of the form Bearer is never sent") {
  WebhookReceiver receiver;
  WebhookOptions options = FastOptions(receiver.Url());
  options.authorization = SecretValue("Basic dXNlcjpwYXNz");
  ApprovalNotifier notifier(std::move(options), Client());
  notifier.Enqueue(Message("apr_1"));
  REQUIRE(Eventually([&] { return notifier.Stats().failed == 1; }));
  CHECK(receiver.Requests().empty());
}

TEST_CASE("PendingApprovalMessage: shape") {
  const nlohmann::json m = PendingApprovalMessage(PendingGrant(), Session());
  CHECK(m["event"] == "approval.pending");
  CHECK(m["approval_id"] == "apr_1");
  CHECK(m["grant_id"] == "grt_1");
  CHECK(m["request_digest"] == std::string(64, 'a'));
  CHECK(m["expires_at"] == "2027-01-15T08:05:00Z");
  CHECK(m["created_at"] == "2027-01-15T08:00:00Z");
  CHECK(m["principal"] == "alice");
  CHECK(m["agent"] ==
        nlohmann::json{{"id", "agent-7"}, {"session_id", "ses_1"}, {"task_id", "task-42"}});
  CHECK(m["task"] == nlohmann::json{{"id", "task-42"}, {"description", "ship release 1.2"}});
  const nlohmann::json& r = m["request"];
  CHECK(r["tool"] == "github.merge_pull_request");
  CHECK(r["operation"] == "merge");
  CHECK(r["resource"] == "github://acme/payment-service/pull/842");
  CHECK(r["issuer"] == "github");
  CHECK(r["tier"] == "merge_deploy");
  CHECK(r["ttl_seconds"] == 600);
  CHECK(r["parameters"] == nlohmann::json{{"branch", "main"}, {"api_token", "[redacted]"}});
  CHECK(r["scope"] == PendingGrant().scope);
  CHECK(r["justification"] == "release 1.2");
  CHECK(m["decision"] == PendingGrant().decision);
  CHECK(m["links"] == nlohmann::json{{"approve", "/v1/approvals/apr_1"}});

  SUBCASE("no justification and no expiry recorded") {
    GrantRecord g = PendingGrant();
    g.justification.clear();
    g.approval_expires_at.reset();
    const nlohmann::json n = PendingApprovalMessage(g, Session());
    CHECK(n["expires_at"].is_null());
    CHECK(n["request"]["justification"].is_null());
  }
}

TEST_CASE("PendingApprovalMessage: copies only whitelisted, non-secret fields") {
  GrantRecord g = PendingGrant();
  g.extra["upstream_token"] = "ghs_FAKE_TOKEN_IN_EXTRA";
  g.extra["mint_error"] = "FAKE_MINT_ERROR_TEXT";
  g.sealed_handle = "SEALED_HANDLE_FAKE";
  g.credential_sha256 = "CREDENTIAL_FINGERPRINT_FAKE";
  g.credential_type = "CREDENTIAL_TYPE_FAKE";
  g.decision["internal_note"] = "DECISION_EXTRA_FAKE";
  // An unredacted record (a caller's mistake) is redacted again.
  g.parameters["password"] = "hunter2-FAKE";
  g.parameters["nested"] = {{"client_secret", "NESTED_SECRET_FAKE"}};
  SessionRecord s = Session();
  s.token_sha256 = "SESSION_TOKEN_DIGEST_FAKE";
  s.extra["session_token"] = "jbs_SESSION_TOKEN_FAKE";
  s.last_progress = "LAST_PROGRESS_FAKE";

  const std::string text = PendingApprovalMessage(g, s).dump();
  for (const char* leaked :
       {"ghs_FAKE_TOKEN_IN_EXTRA", "upstream_token", "FAKE_MINT_ERROR_TEXT", "SEALED_HANDLE_FAKE",
        "CREDENTIAL_FINGERPRINT_FAKE", "CREDENTIAL_TYPE_FAKE", "DECISION_EXTRA_FAKE",
        "hunter2-FAKE", "NESTED_SECRET_FAKE", "SESSION_TOKEN_DIGEST_FAKE", "jbs_SESSION_TOKEN_FAKE",
        "LAST_PROGRESS_FAKE"}) {
    const std::string secret = leaked;
    CAPTURE(secret);
    CHECK(text.find(secret) == std::string::npos);
  }
  const nlohmann::json m = nlohmann::json::parse(text);
  CHECK(m["request"]["parameters"]["password"] == "[redacted]");
  CHECK(m["request"]["parameters"]["nested"]["client_secret"] == "[redacted]");
  // The top-level keys are exactly the documented ones.
  std::vector<std::string> keys;
  for (auto it = m.begin(); it != m.end(); ++it) {
    keys.push_back(it.key());
  }
  CHECK(keys == std::vector<std::string>{"agent", "approval_id", "created_at", "decision", "event",
                                         "expires_at", "grant_id", "links", "principal", "request",
                                         "request_digest", "task"});
}

}  // namespace
}  // namespace jitbroker::lifecycle

// ---------------------------------------------------------------------------
// the `approvals:` config section

namespace jitbroker::config {
namespace {

namespace fs = std::filesystem;

class NotifierTempDir {
 public:
  NotifierTempDir() {
    std::string tmpl = (fs::temp_directory_path() / "jitbroker_notifier_test_XXXXXX").string();
    char* made = ::mkdtemp(tmpl.data());
    REQUIRE(made != nullptr);
    path_ = made;
  }
  ~NotifierTempDir() {
    std::error_code ec;
    fs::remove_all(path_, ec);
  }
  std::string File(const std::string& name) const { return (path_ / name).string(); }
  void Write(const std::string& name, const std::string& content) const {
    std::ofstream out(path_ / name, std::ios::binary);
    out << content;
    REQUIRE(out.good());
  }

 private:
  fs::path path_;
};

TEST_CASE("Config approvals: defaults when absent") {
  NotifierTempDir dir;
  Result<Config> c = LoadConfigText("policy: {version: v}\n", dir.File("t.yaml"));
  REQUIRE_MESSAGE(c.has_value(), (c.has_value() ? "" : c.error().ToString()));
  CHECK(c->approvals.default_ttl_seconds == 300);
  CHECK_FALSE(c->approvals.webhook.has_value());
}

TEST_CASE("Config approvals: a full section") {
  NotifierTempDir dir;
  ::setenv("JITBROKER_NOTIFIER_TEST_AUTH", "Bearer webhook-token-1", 1);
  Result<Config> c = LoadConfigText(
      "policy: {version: v}\n"
      "approvals:\n"
      "  default_ttl_seconds: 600\n"
      "  webhook:\n"
      "    url: https://hooks.example.com/jitbroker?team=infra\n"
      "    timeout_seconds: 3\n"
      "    max_attempts: 4\n"
      "    authorization: env:JITBROKER_NOTIFIER_TEST_AUTH\n"
      "    max_queue: 10\n",
      dir.File("t.yaml"));
  ::unsetenv("JITBROKER_NOTIFIER_TEST_AUTH");
  REQUIRE_MESSAGE(c.has_value(), (c.has_value() ? "" : c.error().ToString()));
  CHECK(c->approvals.default_ttl_seconds == 600);
  REQUIRE(c->approvals.webhook.has_value());
  const ApprovalWebhookConfig& w = *c->approvals.webhook;
  CHECK(w.url == "https://hooks.example.com/jitbroker?team=infra");
  CHECK(w.timeout_seconds == 3);
  CHECK(w.max_attempts == 4);
  CHECK(w.max_queue == 10);
  REQUIRE(w.authorization.has_value());
  CHECK(w.authorization->Reveal() == "Bearer webhook-token-1");
}

TEST_CASE("Config approvals: webhook defaults and accepted URLs") {
  NotifierTempDir dir;
  dir.Write("auth", "Bearer from-a-file\n");
  const char* urls[] = {
      "https://hooks.example.com/x", "https://hooks.example.com:8443/x",
      "https://10.0.0.1/x",          "https://[2001:db8::1]/x",
      "http://127.0.0.1:9/x",        "http://127.5.6.7/hook",
      "http://localhost:8080/",      "http://LOCALHOST/x",
      "http://[::1]:8080/hook",      "https://hooks.example.com",
  };
  for (const std::string url : urls) {
    CAPTURE(url);
    Result<Config> c = LoadConfigText(std::string("policy: {version: v}\n"
                                                  "approvals:\n"
                                                  "  webhook:\n"
                                                  "    url: \"") +
                                          url + "\"\n    authorization: file:auth\n",
                                      dir.File("t.yaml"));
    REQUIRE_MESSAGE(c.has_value(), (c.has_value() ? "" : c.error().ToString()));
    REQUIRE(c->approvals.webhook.has_value());
    const ApprovalWebhookConfig& w = *c->approvals.webhook;
    CHECK(w.url == url);
    CHECK(w.timeout_seconds == 5);
    CHECK(w.max_attempts == 8);
    CHECK(w.max_queue == 1000);
    REQUIRE(w.authorization.has_value());
    CHECK(w.authorization->Reveal() == "Bearer from-a-file");
    CHECK(c->approvals.default_ttl_seconds == 300);
  }
}

TEST_CASE("Config approvals: errors name file, line and key") {
  NotifierTempDir dir;
  ::setenv("JITBROKER_NOTIFIER_TEST_BASIC", "Basic dXNlcjpwYXNzd29yZA==", 1);
  const std::string head = "policy: {version: v}\napprovals:\n";  // lines 1-2
  const std::string hook = head + "  webhook:\n";                 // line 3
  const std::string url_error =
      "t.yaml:4: approvals.webhook.url: must be an https:// URL (http:// only for a loopback "
      "host";
  struct Row {
    const char* name;
    std::string text;
    std::string want;  // a prefix of the message
  };
  const std::vector<Row> rows = {
      {"approvals not a mapping", "policy: {version: v}\napprovals: [1]\n",
       "t.yaml:2: approvals: must be a mapping"},
      {"unknown key in approvals", head + "  default_ttl: 300\n",
       "t.yaml:3: approvals.default_ttl: unknown key"},
      {"ttl too small", head + "  default_ttl_seconds: 5\n",
       "t.yaml:3: approvals.default_ttl_seconds: must be an integer in [10, 86400]"},
      {"ttl too large", head + "  default_ttl_seconds: 86401\n",
       "t.yaml:3: approvals.default_ttl_seconds: must be an integer in [10, 86400]"},
      {"ttl not an integer", head + "  default_ttl_seconds: 5m\n",
       "t.yaml:3: approvals.default_ttl_seconds: must be an integer in [10, 86400]"},
      {"webhook not a mapping", head + "  webhook: https://x.example.com/\n",
       "t.yaml:3: approvals.webhook: must be a mapping"},
      {"unknown key in webhook", hook + "    url: https://x.example.com/\n    retries: 3\n",
       "t.yaml:5: approvals.webhook.retries: unknown key"},
      {"duplicate key in webhook",
       hook + "    url: https://x.example.com/\n    url: https://y.example.com/\n",
       "t.yaml:5: approvals.webhook.url: duplicate key"},
      {"url missing", hook + "    max_attempts: 3\n",
       "t.yaml:4: approvals.webhook.url: is required"},
      {"url empty", hook + "    url: \"\"\n", "t.yaml:4: approvals.webhook.url: must not be empty"},
      {"http to a remote host", hook + "    url: http://hooks.example.com/SECRETPATH\n", url_error},
      {"http to 128.0.0.1", hook + "    url: http://128.0.0.1/SECRETPATH\n", url_error},
      {"http to a name under 127", hook + "    url: http://127.0.0.1.example.com/SECRETPATH\n",
       url_error},
      {"http to a name under localhost",
       hook + "    url: http://localhost.example.com/SECRETPATH\n", url_error},
      {"http to an IPv6 non-loopback", hook + "    url: http://[::2]/SECRETPATH\n", url_error},
      {"other scheme", hook + "    url: ftp://hooks.example.com/SECRETPATH\n", url_error},
      {"no scheme", hook + "    url: hooks.example.com/SECRETPATH\n", url_error},
      {"userinfo", hook + "    url: https://user:SECRETPATH@hooks.example.com/\n", url_error},
      {"no host", hook + "    url: https:///SECRETPATH\n", url_error},
      {"port 0", hook + "    url: https://hooks.example.com:0/SECRETPATH\n", url_error},
      {"port too large", hook + "    url: https://hooks.example.com:70000/SECRETPATH\n", url_error},
      {"empty port", hook + "    url: https://hooks.example.com:/SECRETPATH\n", url_error},
      {"fragment", hook + "    url: https://hooks.example.com/x#SECRETPATH\n", url_error},
      // Accepted before the one URL parser (net::ParseUrl):
      {"backslash", hook + "    url: https://hooks.example.com/a\\SECRETPATH\n", url_error},
      {"bad escape", hook + "    url: https://hooks.example.com/%zzSECRETPATH\n", url_error},
      {"timeout 0", hook + "    url: https://x.example.com/\n    timeout_seconds: 0\n",
       "t.yaml:5: approvals.webhook.timeout_seconds: must be an integer in [1, 60]"},
      {"max_attempts 0", hook + "    url: https://x.example.com/\n    max_attempts: 0\n",
       "t.yaml:5: approvals.webhook.max_attempts: must be an integer in [1, 100]"},
      {"max_attempts not a number",
       hook + "    url: https://x.example.com/\n    max_attempts: many\n",
       "t.yaml:5: approvals.webhook.max_attempts: must be an integer in [1, 100]"},
      {"max_queue 0", hook + "    url: https://x.example.com/\n    max_queue: 0\n",
       "t.yaml:5: approvals.webhook.max_queue: must be an integer in [1, 100000]"},
      {"inline authorization",
       hook + "    url: https://x.example.com/\n    authorization: Bearer SECRETPATH\n",
       "t.yaml:5: approvals.webhook.authorization: secrets must be given as file:PATH or env:NAME"},
      {"unset authorization env",
       hook + "    url: https://x.example.com/\n    authorization: env:JITBROKER_NOTIFIER_UNSET\n",
       "t.yaml:5: approvals.webhook.authorization: environment variable "
       "JITBROKER_NOTIFIER_UNSET is not set"},
      {"authorization not Bearer",
       hook + "    url: https://x.example.com/\n"
              "    authorization: env:JITBROKER_NOTIFIER_TEST_BASIC\n",
       "t.yaml:5: approvals.webhook.authorization: the referenced value must read \"Bearer "
       "TOKEN\""},
  };
  ::unsetenv("JITBROKER_NOTIFIER_UNSET");
  for (const Row& row : rows) {
    const std::string name = row.name;
    CAPTURE(name);
    Result<Config> c = LoadConfigText(row.text, "t.yaml");
    REQUIRE_FALSE(c.has_value());
    CHECK(c.error().code == ErrorCode::kInvalidArgument);
    CHECK(c.error().Reason() == "invalid_config");
    const std::string& msg = c.error().message;
    CAPTURE(msg);
    CHECK(msg.starts_with(row.want));
    // Neither the URL (its path may hold a token) nor a secret is echoed.
    CHECK(msg.find("SECRETPATH") == std::string::npos);
    CHECK(msg.find("dXNlcjpwYXNzd29yZA") == std::string::npos);
  }
  ::unsetenv("JITBROKER_NOTIFIER_TEST_BASIC");
}

}  // namespace
}  // namespace jitbroker::config
