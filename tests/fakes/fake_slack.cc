// FakeSlack (fake_slack.h).
#include "tests/fakes/fake_slack.h"

#include <httplib.h>

#include <atomic>
#include <mutex>
#include <set>
#include <thread>
#include <utility>

#include "broker/crypto/crypto.h"
#include "broker/net/url.h"
#include "tests/support/loopback.h"

namespace jitbroker::testing {

namespace {

using nlohmann::json;

bool IsPlainText(const json& t, size_t max) {
  return t.is_object() && t.value("type", "") == "plain_text" && t.contains("text") &&
         t["text"].is_string() && !t["text"].get<std::string>().empty() &&
         t["text"].get<std::string>().size() <= max;
}

bool IsText(const json& t, size_t max) {
  if (!t.is_object() || !t.contains("text") || !t["text"].is_string()) {
    return false;
  }
  const std::string type = t.value("type", "");
  return (type == "plain_text" || type == "mrkdwn") && !t["text"].get<std::string>().empty() &&
         t["text"].get<std::string>().size() <= max;
}

// Block Kit shapes as Slack checks them (the subset the broker sends);
// empty when valid, else what is wrong.
std::string CheckBlocks(const json& blocks) {
  if (!blocks.is_array() || blocks.size() > 50) {
    return "blocks must be an array of at most 50";
  }
  for (const json& b : blocks) {
    if (!b.is_object() || !b.contains("type") || !b["type"].is_string()) {
      return "every block needs a type";
    }
    const std::string type = b["type"];
    if (type == "header") {
      if (!IsPlainText(b.value("text", json()), 150)) {
        return "header text must be plain_text <= 150";
      }
    } else if (type == "section") {
      const bool has_text = b.contains("text");
      const bool has_fields = b.contains("fields");
      if (!has_text && !has_fields) {
        return "section needs text or fields";
      }
      if (has_text && !IsText(b["text"], 3000)) {
        return "section text must be a text object <= 3000";
      }
      if (has_fields) {
        if (!b["fields"].is_array() || b["fields"].empty() || b["fields"].size() > 10) {
          return "section fields: 1..10";
        }
        for (const json& f : b["fields"]) {
          if (!IsText(f, 2000)) {
            return "section field must be a text object <= 2000";
          }
        }
      }
    } else if (type == "context") {
      if (!b.contains("elements") || !b["elements"].is_array() || b["elements"].empty() ||
          b["elements"].size() > 10) {
        return "context elements: 1..10";
      }
      for (const json& e : b["elements"]) {
        if (!IsText(e, 3000)) {
          return "context element must be a text object";
        }
      }
    } else if (type == "actions") {
      if (!b.contains("elements") || !b["elements"].is_array() || b["elements"].empty() ||
          b["elements"].size() > 25) {
        return "actions elements: 1..25";
      }
      for (const json& e : b["elements"]) {
        if (!e.is_object() || e.value("type", "") != "button") {
          return "actions element must be a button";
        }
        const std::string action_id = e.value("action_id", "");
        if (action_id.empty() || action_id.size() > 255) {
          return "button needs an action_id";
        }
        if (!IsPlainText(e.value("text", json()), 75)) {
          return "button text must be plain_text <= 75";
        }
        if (!e.contains("value") || !e["value"].is_string() ||
            e["value"].get<std::string>().size() > 2000) {
          return "button value must be a string <= 2000";
        }
        if (e.contains("style") && e["style"] != "primary" && e["style"] != "danger") {
          return "button style must be primary or danger";
        }
      }
    } else if (type != "divider") {
      return "unknown block type " + type;
    }
  }
  return {};
}

}  // namespace

struct FakeSlack::Impl {
  FakeSlackOptions options;
  httplib::Server server;
  std::thread thread;
  int port = 0;
  mutable std::mutex mu;
  std::vector<SlackCall> calls;
  std::vector<std::string> violations;
  std::vector<SlackMessage> messages;
  std::string fail_error;
  int fail_count = 0;
  std::atomic<int64_t> post_delay_ms{0};
  int64_t next_ts = 1700000000;

  void Answer(httplib::Response& res, SlackCall call, const std::string& error,
              json ok_body = json::object()) {
    json body = error.empty() ? std::move(ok_body) : json{{"ok", false}, {"error", error}};
    if (error.empty()) {
      body["ok"] = true;
    }
    call.error = error;
    calls.push_back(std::move(call));
    res.status = 200;
    res.set_content(body.dump(), "application/json; charset=utf-8");
  }

  // Authorization and content checks common to the chat.* methods; returns
  // the Slack error, or empty.
  std::string CheckAuth(const httplib::Request& req) {
    const std::string auth = req.get_header_value("Authorization");
    if (auth.empty()) {
      violations.push_back(req.path + ": no Authorization");
      return "not_authed";
    }
    if (auth != "Bearer " + options.bot_token) {
      violations.push_back(req.path + ": wrong bot token");
      return "invalid_auth";
    }
    return {};
  }

  void HandleChat(const httplib::Request& req, httplib::Response& res, bool update) {
    std::lock_guard lock(mu);
    SlackCall call;
    call.method = update ? "chat.update" : "chat.postMessage";
    if (std::string e = CheckAuth(req); !e.empty()) {
      return Answer(res, std::move(call), e);
    }
    if (req.get_header_value("Content-Type").rfind("application/json", 0) != 0) {
      violations.push_back(call.method + ": not application/json");
      return Answer(res, std::move(call), "invalid_arguments");
    }
    call.body = json::parse(req.body, nullptr, false);
    const json& b = call.body;
    if (!b.is_object()) {
      violations.push_back(call.method + ": body is not a JSON object");
      return Answer(res, std::move(call), "invalid_json");
    }
    if (fail_count > 0) {
      --fail_count;
      return Answer(res, std::move(call), fail_error);
    }
    const std::string channel = b.value("channel", "");
    if (channel.empty()) {
      violations.push_back(call.method + ": no channel");
      return Answer(res, std::move(call), "channel_not_found");
    }
    const bool has_text =
        b.contains("text") && b["text"].is_string() && !b["text"].get<std::string>().empty();
    if (!has_text && !b.contains("blocks")) {
      violations.push_back(call.method + ": neither text nor blocks");
      return Answer(res, std::move(call), "no_text");
    }
    if (b.contains("blocks")) {
      if (std::string why = CheckBlocks(b["blocks"]); !why.empty()) {
        violations.push_back(call.method + ": " + why);
        return Answer(res, std::move(call), "invalid_blocks");
      }
    }
    if (update) {
      const std::string ts = b.value("ts", "");
      for (SlackMessage& m : messages) {
        if (m.ts == ts && m.channel == channel) {
          m.text = b.value("text", "");
          m.blocks = b.value("blocks", json::array());
          ++m.updates;
          return Answer(res, std::move(call), "", {{"channel", channel}, {"ts", ts}});
        }
      }
      violations.push_back("chat.update: no message " + ts + " in " + channel);
      return Answer(res, std::move(call), "message_not_found");
    }
    SlackMessage m;
    m.channel = channel;
    m.ts = std::to_string(next_ts++) + ".000100";
    m.text = b.value("text", "");
    m.blocks = b.value("blocks", json::array());
    messages.push_back(m);
    Answer(res, std::move(call), "", {{"channel", channel}, {"ts", m.ts}});
  }

  void HandleUsersInfo(const httplib::Request& req, httplib::Response& res) {
    std::lock_guard lock(mu);
    SlackCall call;
    call.method = "users.info";
    const std::string user = req.get_param_value("user");
    call.query = "user=" + user;
    if (std::string e = CheckAuth(req); !e.empty()) {
      return Answer(res, std::move(call), e);
    }
    auto it = options.emails.find(user);
    if (it == options.emails.end()) {
      return Answer(res, std::move(call), "user_not_found");
    }
    Answer(res, std::move(call), "",
           {{"user",
             {{"id", user},
              {"name", "user"},
              {"profile", {{"email", it->second}, {"real_name", "A Person"}}}}}});
  }
};

FakeSlack::~FakeSlack() { Stop(); }

std::unique_ptr<FakeSlack> FakeSlack::Start(FakeSlackOptions options) {
  std::unique_ptr<FakeSlack> f(new FakeSlack());
  f->impl_ = std::make_unique<Impl>();
  Impl& impl = *f->impl_;
  impl.options = std::move(options);
  httplib::Server& svr = impl.server;
  svr.set_tcp_nodelay(true);
  svr.set_payload_max_length(1 << 20);
  svr.set_exception_handler([](const httplib::Request&, httplib::Response& res,
                               std::exception_ptr) { res.status = 500; });
  svr.Post("/api/chat.postMessage", [&impl](const httplib::Request& req, httplib::Response& res) {
    impl.HandleChat(req, res, false);
    if (const int64_t ms = impl.post_delay_ms.load(); ms > 0) {  // recorded, not yet answered
      std::this_thread::sleep_for(std::chrono::milliseconds(ms));
    }
  });
  svr.Post("/api/chat.update", [&impl](const httplib::Request& req, httplib::Response& res) {
    impl.HandleChat(req, res, true);
  });
  // The callbacks' response_url: no bot token (the URL is the credential),
  // a JSON message; Slack answers "ok".
  svr.Post(R"(/actions/.*)", [&impl](const httplib::Request& req, httplib::Response& res) {
    std::lock_guard lock(impl.mu);
    SlackCall call;
    call.method = "response_url";
    if (req.has_header("Authorization")) {
      impl.violations.push_back("response_url: an Authorization header was sent");
    }
    if (req.get_header_value("Content-Type").rfind("application/json", 0) != 0) {
      impl.violations.push_back("response_url: not application/json");
    }
    call.body = json::parse(req.body, nullptr, false);
    if (!call.body.is_object() || !call.body.contains("text")) {
      impl.violations.push_back("response_url: no text");
    }
    impl.calls.push_back(std::move(call));
    res.set_content("ok", "text/plain");
  });
  svr.Get("/api/users.info", [&impl](const httplib::Request& req, httplib::Response& res) {
    impl.HandleUsersInfo(req, res);
  });
  f->port_ = ServeOnLoopback(svr, impl.thread);
  impl.port = f->port_;
  return f->port_ > 0 ? std::move(f) : nullptr;
}

void FakeSlack::Stop() {
  if (impl_) {
    StopServing(impl_->server, impl_->thread);
  }
}

std::string FakeSlack::api_url() const {
  return "http://127.0.0.1:" + std::to_string(port_) + "/api";
}

std::vector<SlackCall> FakeSlack::Calls(const std::string& method) const {
  std::lock_guard lock(impl_->mu);
  std::vector<SlackCall> out;
  for (const SlackCall& c : impl_->calls) {
    if (method.empty() || c.method == method) {
      out.push_back(c);
    }
  }
  return out;
}

std::vector<std::string> FakeSlack::Violations() const {
  std::lock_guard lock(impl_->mu);
  return impl_->violations;
}

std::vector<SlackMessage> FakeSlack::Messages() const {
  std::lock_guard lock(impl_->mu);
  return impl_->messages;
}

std::optional<SlackMessage> FakeSlack::WaitForMessage(const std::string& approval_id,
                                                      int min_updates,
                                                      std::chrono::milliseconds timeout) const {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (true) {
    {
      std::lock_guard lock(impl_->mu);
      for (const SlackMessage& m : impl_->messages) {
        if (m.blocks.dump().find(approval_id) != std::string::npos && m.updates >= min_updates) {
          return m;
        }
      }
    }
    if (std::chrono::steady_clock::now() >= deadline) {
      return std::nullopt;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
}

void FakeSlack::DelayPostAnswers(std::chrono::milliseconds delay) {
  impl_->post_delay_ms = delay.count();
}

void FakeSlack::FailNext(const std::string& error, int count) {
  std::lock_guard lock(impl_->mu);
  impl_->fail_error = error;
  impl_->fail_count = count;
}

std::string FakeSlack::Sign(const std::string& secret, const std::string& timestamp,
                            const std::string& body) {
  return "v0=" + crypto::HexEncode(crypto::HmacSha256(secret, "v0:" + timestamp + ":" + body));
}

SlackCallback FakeSlack::SignPayload(const json& payload, std::chrono::seconds skew) const {
  SlackCallback cb;
  cb.body = "payload=" + net::PercentEncode(payload.dump(), /*form=*/true);
  const auto now = std::chrono::duration_cast<std::chrono::seconds>(
                       std::chrono::system_clock::now().time_since_epoch()) +
                   skew;
  cb.timestamp = std::to_string(now.count());
  cb.signature = Sign(impl_->options.signing_secret, cb.timestamp, cb.body);
  return cb;
}

SlackCallback FakeSlack::Click(const SlackMessage& message, const std::string& user_id,
                               const std::string& action_id, std::chrono::seconds skew,
                               const std::optional<std::string>& secret) const {
  json action;
  for (const json& b : message.blocks) {
    if (b.value("type", "") == "actions") {
      for (const json& e : b["elements"]) {
        if (e.value("action_id", "") == action_id) {
          action = {{"type", "button"},
                    {"action_id", action_id},
                    {"block_id", b.value("block_id", "b1")},
                    {"text", e["text"]},
                    {"value", e["value"]},
                    {"action_ts", "1700000000.123456"}};
        }
      }
    }
  }
  json payload = {
      {"type", "block_actions"},
      {"user", {{"id", user_id}, {"username", "someone"}, {"team_id", "T0001"}}},
      {"api_app_id", "A0001"},
      {"token", "deprecated-verification-token"},
      {"team", {{"id", "T0001"}, {"domain", "example"}}},
      {"container",
       {{"type", "message"},
        {"message_ts", message.ts},
        {"channel_id", message.channel},
        {"is_ephemeral", false}}},
      {"trigger_id", "1.2.3"},
      {"channel", {{"id", message.channel}, {"name", "approvals"}}},
      {"message",
       {{"type", "message"},
        {"ts", message.ts},
        {"text", message.text},
        {"blocks", message.blocks}}},
      {"response_url", "http://127.0.0.1:" + std::to_string(port_) + "/actions/T0001/1/abc"},
      {"actions", action.is_null() ? json::array() : json::array({action})}};
  SlackCallback cb = SignPayload(payload, skew);
  if (secret) {
    cb.signature = Sign(*secret, cb.timestamp, cb.body);
  }
  return cb;
}

}  // namespace jitbroker::testing
