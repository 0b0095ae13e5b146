// ApprovalNotifier and PendingApprovalMessage (notifier.h).
#include "broker/lifecycle/notifier.h"

#include <algorithm>
#include <charconv>
#include <chrono>
#include <exception>
#include <mutex>
#include <string>
#include <string_view>
#include <system_error>
#include <utility>

#include <nlohmann/json.hpp>

#include "broker/audit/events.h"
#include "broker/common/log.h"
#include "broker/common/time_util.h"
#include "broker/crypto/crypto.h"

namespace jitbroker::lifecycle {

namespace {

using std::chrono::milliseconds;

constexpr std::string_view kEvent = "approval.pending";
constexpr size_t kMaxLoggedIdLength = 64;

std::shared_ptr<spdlog::logger> Logger() { return log::Get("lifecycle"); }

// Ids come from our own records, but bound what reaches a log line anyway.
std::string LoggedId(std::string_view id) {
  if (id.empty()) {
    return "-";
  }
  return std::string(id.substr(0, kMaxLoggedIdLength));
}

bool AsciiEqualsIgnoreCase(std::string_view a, std::string_view b) {
  return net::HttpHeaders::EqualsIgnoreCase(a, b);
}

// The token of "Bearer TOKEN" (visible ASCII), or nullopt for any other form.
std::optional<std::string_view> BearerToken(std::string_view value) {
  constexpr std::string_view kScheme = "Bearer ";
  if (value.size() <= kScheme.size() ||
      !AsciiEqualsIgnoreCase(value.substr(0, kScheme.size()), kScheme)) {
    return std::nullopt;
  }
  std::string_view token = value.substr(kScheme.size());
  bool visible = std::all_of(token.begin(), token.end(), [](char c) {
    auto u = static_cast<unsigned char>(c);
    return u > 0x20 && u < 0x7f;
  });
  if (!visible) {
    return std::nullopt;
  }
  return token;
}

// Retry-After as delta-seconds ("120"); the HTTP-date form is not honoured
// (the regular backoff applies instead).
std::optional<milliseconds> ParseRetryAfter(std::string_view v) {
  while (!v.empty() && (v.front() == ' ' || v.front() == '\t')) {
    v.remove_prefix(1);
  }
  while (!v.empty() && (v.back() == ' ' || v.back() == '\t')) {
    v.remove_suffix(1);
  }
  if (v.empty() || v.size() > 9) {
    return std::nullopt;
  }
  int64_t seconds = 0;
  auto [ptr, ec] = std::from_chars(v.data(), v.data() + v.size(), seconds);
  if (ec != std::errc() || ptr != v.data() + v.size() || seconds < 0) {
    return std::nullopt;
  }
  return milliseconds(seconds * 1000);
}

bool IsRetryableStatus(int status) { return status == 408 || status == 429 || status >= 500; }

const nlohmann::json* Field(const nlohmann::json& object, std::string_view key) {
  if (!object.is_object()) {
    return nullptr;
  }
  auto it = object.find(key);
  return it == object.end() ? nullptr : &*it;
}

std::string StringField(const nlohmann::json& object, std::string_view key) {
  const nlohmann::json* v = Field(object, key);
  return v != nullptr && v->is_string() ? v->get<std::string>() : std::string();
}

}  // namespace

// ---------------------------------------------------------------------------
// ApprovalNotifier

ApprovalNotifier::ApprovalNotifier(WebhookOptions options, std::unique_ptr<net::HttpClient> client)
    : options_(std::move(options)),
      client_(std::move(client)),
      host_(net::internal::HostForMessage(options_.url)),
      rng_(std::random_device{}()) {
  if (options_.authorization) {
    std::optional<std::string_view> token = BearerToken(options_.authorization->Reveal());
    if (token) {
      bearer_ = SecretValue(std::string(*token));
    } else {
      authorization_ok_ = false;
      Logger()->error(
          "approval webhook authorization is not of the form \"Bearer TOKEN\"; every delivery "
          "will fail host={}",
          host_);
    }
  }
  if (client_ == nullptr) {
    Logger()->error("approval webhook has no HTTP client; every delivery will fail host={}", host_);
  }
  thread_ = std::jthread([this](std::stop_token stop) { Run(std::move(stop)); });
}

ApprovalNotifier::~ApprovalNotifier() { Stop(); }

void ApprovalNotifier::Enqueue(nlohmann::json message) {
  std::string approval_id = StringField(message, "approval_id");
  EnqueueCall(std::string(), message, std::move(approval_id));
}

void ApprovalNotifier::EnqueueCall(std::string url, const nlohmann::json& body,
                                   std::string approval_id, bool bearer,
                                   std::function<void(const nlohmann::json&)> on_delivered) {
  try {
    Item item;
    item.approval_id = approval_id;
    item.url = std::move(url);
    item.bearer = bearer;
    item.on_delivered = std::move(on_delivered);
    // `replace` never throws on invalid UTF-8 (the records are validated
    // upstream; this is only a last line of defence).
    item.body = body.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
    item.delivery_id = crypto::NewPublicId("dlv_", 16);
    Push(std::move(item));
  } catch (...) {
    // Only allocation can fail here; never let it reach the request path.
    uint64_t dropped_total = 0;
    {
      std::lock_guard<std::mutex> lock(mu_);
      dropped_total = ++stats_.dropped;
    }
    Logger()->error("approval webhook cannot queue a message approval_id={} dropped_total={}",
                    LoggedId(approval_id), dropped_total);
  }
}

void ApprovalNotifier::Push(Item item) {
  const std::string approval_id = item.approval_id;
  {
    std::string dropped_id;
    uint64_t dropped_total = 0;
    bool overflowed = false;
    bool stopped = false;
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (stopped_) {
        dropped_total = ++stats_.dropped;
        stopped = true;
      } else {
        const size_t max_queue = std::max<size_t>(options_.max_queue, 1);
        while (queue_.size() >= max_queue) {
          dropped_id = std::move(queue_.front().approval_id);
          queue_.pop_front();
          dropped_total = ++stats_.dropped;
          overflowed = true;
        }
        queue_.push_back(std::move(item));
      }
    }
    if (stopped) {
      Logger()->warn("approval webhook stopped, dropped approval_id={} dropped_total={}",
                     LoggedId(approval_id), dropped_total);
      return;
    }
    cv_.notify_all();
    if (overflowed) {
      Logger()->warn("approval webhook queue full, dropped oldest approval_id={} dropped_total={}",
                     LoggedId(dropped_id), dropped_total);
    }
  }
}

void ApprovalNotifier::Stop() {
  std::lock_guard<std::mutex> stop_lock(stop_mu_);
  {
    std::lock_guard<std::mutex> lock(mu_);
    stopped_ = true;
  }
  if (thread_.joinable()) {
    thread_.request_stop();  // wakes a wait on cv_ through the stop_token
    thread_.join();
  }
  size_t left = 0;
  uint64_t dropped_total = 0;
  {
    std::lock_guard<std::mutex> lock(mu_);
    left = queue_.size();
    queue_.clear();
    stats_.dropped += left;
    dropped_total = stats_.dropped;
  }
  if (left > 0) {
    Logger()->warn("approval webhook stopped with undelivered messages dropped={} dropped_total={}",
                   left, dropped_total);
  }
}

NotifierStats ApprovalNotifier::Stats() const {
  std::lock_guard<std::mutex> lock(mu_);
  return stats_;
}

void ApprovalNotifier::Run(std::stop_token stop) {
  while (true) {
    Item item;
    {
      std::unique_lock<std::mutex> lock(mu_);
      cv_.wait(lock, stop, [this] { return !queue_.empty(); });
      if (stop.stop_requested()) {
        return;  // Stop() counts what is left in the queue
      }
      item = std::move(queue_.front());
      queue_.pop_front();
    }
    try {
      Deliver(item, stop);
    } catch (const std::exception& e) {
      {
        std::lock_guard<std::mutex> lock(mu_);
        ++stats_.failed;
      }
      Logger()->error("approval webhook delivery aborted approval_id={} delivery={} error={}",
                      LoggedId(item.approval_id), item.delivery_id, e.what());
    } catch (...) {
      {
        std::lock_guard<std::mutex> lock(mu_);
        ++stats_.failed;
      }
      Logger()->error("approval webhook delivery aborted approval_id={} delivery={}",
                      LoggedId(item.approval_id), item.delivery_id);
    }
  }
}

void ApprovalNotifier::Deliver(const Item& item, std::stop_token stop) {
  const int max_attempts = std::max(options_.max_attempts, 1);
  for (int attempt = 1;; ++attempt) {
    if (attempt > 1) {
      std::lock_guard<std::mutex> lock(mu_);
      ++stats_.retried;
    }
    std::optional<milliseconds> retry_after;
    const Outcome outcome = Attempt(item, attempt, &retry_after);
    if (outcome == Outcome::kDelivered) {
      std::lock_guard<std::mutex> lock(mu_);
      ++stats_.delivered;
      return;
    }
    if (outcome == Outcome::kPermanent) {
      std::lock_guard<std::mutex> lock(mu_);
      ++stats_.failed;
      return;
    }
    if (attempt >= max_attempts) {
      {
        std::lock_guard<std::mutex> lock(mu_);
        ++stats_.failed;
      }
      Logger()->error("approval webhook gave up approval_id={} delivery={} host={} attempts={}",
                      LoggedId(item.approval_id), item.delivery_id, host_, attempt);
      return;
    }
    const milliseconds delay =
        retry_after ? std::min(*retry_after, options_.max_backoff) : Backoff(attempt);
    Logger()->debug("approval webhook retrying approval_id={} delivery={} attempt={} delay_ms={}",
                    LoggedId(item.approval_id), item.delivery_id, attempt + 1, delay.count());
    const auto deadline = std::chrono::steady_clock::now() + delay;
    std::unique_lock<std::mutex> lock(mu_);
    // Wakes early only when a stop is requested (the predicate never holds).
    cv_.wait_until(lock, stop, deadline, [] { return false; });
    if (stop.stop_requested()) {
      ++stats_.dropped;
      return;
    }
  }
}

ApprovalNotifier::Outcome ApprovalNotifier::Attempt(const Item& item, int attempt,
                                                    std::optional<milliseconds>* retry_after) {
  if (client_ == nullptr || !authorization_ok_) {
    Logger()->error("approval webhook misconfigured, dropped approval_id={} delivery={} host={}",
                    LoggedId(item.approval_id), item.delivery_id, host_);
    return Outcome::kPermanent;
  }
  const bool slack = options_.dialect == Dialect::kSlackApi;
  net::HttpRequest req;
  req.method = "POST";
  req.url = item.url.empty() ? options_.url : item.url;
  if (slack) {
    // Slack wants the charset with JSON bodies (else a warning in every answer).
    req.headers = {{"Content-Type", "application/json; charset=utf-8"},
                   {"User-Agent", "jitbroker/0.1"}};
  } else {
    req.headers = {{"Content-Type", "application/json"},
                   {"User-Agent", "jitbroker/0.1"},
                   {"X-Jitbroker-Event", std::string(kEvent)},
                   {"X-Jitbroker-Delivery", item.delivery_id}};
  }
  if (!bearer_.empty() && item.bearer) {
    req.bearer = bearer_.Clone();
  }
  req.body = item.body;
  const milliseconds timeout =
      options_.timeout.count() > 0 ? milliseconds(options_.timeout) : milliseconds(5000);
  req.timeout = timeout;
  req.connect_timeout = std::min(timeout, milliseconds(10000));

  Result<net::HttpResponse> resp = client_->Send(req);
  if (!resp) {
    const Error& e = resp.error();
    if (e.code == ErrorCode::kUnavailable || e.code == ErrorCode::kDeadlineExceeded) {
      Logger()->warn(
          "approval webhook unreachable approval_id={} delivery={} host={} attempt={} reason={}",
          LoggedId(item.approval_id), item.delivery_id, host_, attempt, e.Reason());
      return Outcome::kRetry;
    }
    Logger()->error(
        "approval webhook request rejected by the client approval_id={} delivery={} host={} "
        "reason={}",
        LoggedId(item.approval_id), item.delivery_id, host_, e.Reason());
    return Outcome::kPermanent;
  }
  const int status = resp->status;
  if (slack && item.bearer && status >= 200 && status < 300) {
    return SlackOutcome(item, attempt, *resp);
  }
  if (status >= 200 && status < 300) {
    Logger()->info(
        "approval webhook delivered approval_id={} delivery={} host={} attempt={} "
        "status={}",
        LoggedId(item.approval_id), item.delivery_id, host_, attempt, status);
    return Outcome::kDelivered;
  }
  if (IsRetryableStatus(status)) {
    if (std::optional<std::string_view> ra = resp->headers.Get("Retry-After")) {
      *retry_after = ParseRetryAfter(*ra);
    }
    Logger()->warn(
        "approval webhook answered with a retryable status approval_id={} delivery={} host={} "
        "attempt={} status={}",
        LoggedId(item.approval_id), item.delivery_id, host_, attempt, status);
    return Outcome::kRetry;
  }
  Logger()->error(
      "approval webhook refused the message, dropped approval_id={} delivery={} host={} "
      "status={}",
      LoggedId(item.approval_id), item.delivery_id, host_, status);
  return Outcome::kPermanent;
}

// Slack answers 200 whatever happened; {"ok": true} is the only success.
ApprovalNotifier::Outcome ApprovalNotifier::SlackOutcome(const Item& item, int attempt,
                                                         const net::HttpResponse& resp) {
  nlohmann::json answer = nlohmann::json::parse(resp.body, nullptr, /*allow_exceptions=*/false);
  const nlohmann::json* ok = Field(answer, "ok");
  if (ok != nullptr && ok->is_boolean() && ok->get<bool>()) {
    Logger()->info("slack call delivered approval_id={} delivery={} host={} attempt={}",
                   LoggedId(item.approval_id), item.delivery_id, host_, attempt);
    if (item.on_delivered) {
      item.on_delivered(answer);
    }
    return Outcome::kDelivered;
  }
  // Slack's error names are short identifiers; bound them anyway.
  const std::string error = LoggedId(StringField(answer, "error"));
  if (error == "ratelimited") {
    Logger()->warn("slack call rate limited approval_id={} delivery={} host={} attempt={}",
                   LoggedId(item.approval_id), item.delivery_id, host_, attempt);
    return Outcome::kRetry;
  }
  Logger()->error("slack call refused, dropped approval_id={} delivery={} host={} error={}",
                  LoggedId(item.approval_id), item.delivery_id, host_, log::Quoted(error, 64));
  return Outcome::kPermanent;
}

milliseconds ApprovalNotifier::Backoff(int attempt) {
  const int64_t max_ms = std::max<int64_t>(options_.max_backoff.count(), 0);
  int64_t cap = std::max<int64_t>(options_.initial_backoff.count(), 0);
  for (int i = 1; i < attempt && cap < max_ms; ++i) {
    cap *= 2;
  }
  cap = std::min(cap, max_ms);
  if (cap <= 0) {
    return milliseconds(0);
  }
  // Full jitter: uniform in [0, cap].
  std::uniform_int_distribution<int64_t> dist(0, cap);
  return milliseconds(dist(rng_));
}

// ---------------------------------------------------------------------------
// PendingApprovalMessage

nlohmann::json PendingApprovalMessage(const GrantRecord& grant, const SessionRecord& session) {
  nlohmann::json expires_at = nullptr;
  if (grant.approval_expires_at) {
    expires_at = FormatRfc3339(*grant.approval_expires_at);
  } else if (grant.expires_at) {
    expires_at = FormatRfc3339(*grant.expires_at);
  }
  nlohmann::json justification = nullptr;
  if (!grant.justification.empty()) {
    justification = grant.justification;
  }

  // Only the fields Decision::ToJson() defines, and only with their types.
  nlohmann::json decision = nlohmann::json::object();
  for (std::string_view key :
       {"result", "tier", "code", "reason", "matched_rule", "policy_version"}) {
    if (const nlohmann::json* v = Field(grant.decision, key); v && v->is_string()) {
      decision[std::string(key)] = *v;
    }
  }
  if (const nlohmann::json* v = Field(grant.decision, "ttl_seconds"); v && v->is_number_integer()) {
    decision["ttl_seconds"] = *v;
  }

  nlohmann::json msg = nlohmann::json::object();
  msg["event"] = kEvent;
  msg["approval_id"] = grant.approval_id;
  msg["grant_id"] = grant.id;
  msg["request_digest"] = grant.request_digest;
  msg["expires_at"] = std::move(expires_at);
  msg["created_at"] = FormatRfc3339(grant.created_at);
  msg["principal"] = grant.principal_id.empty() ? session.principal_id : grant.principal_id;
  msg["agent"] = {
      {"id", session.agent_id}, {"session_id", session.id}, {"task_id", session.task_id}};
  msg["task"] = {{"id", session.task_id}, {"description", session.task_description}};
  msg["request"] = {
      {"tool", grant.tool},
      {"operation", grant.operation},
      {"resource", grant.resource},
      {"issuer", grant.issuer},
      {"tier", grant.tier},
      {"ttl_seconds", grant.ttl_seconds},
      // Already redacted when stored; redacting again costs little and keeps
      // this message safe even if a caller passes an unredacted record.
      {"parameters", audit::RedactParameters(grant.parameters)},
      {"scope", audit::RedactParameters(grant.scope)},
      {"justification", std::move(justification)},
  };
  msg["decision"] = std::move(decision);
  msg["links"] = {{"approve", "/v1/approvals/" + grant.approval_id}};
  return msg;
}

}  // namespace jitbroker::lifecycle
