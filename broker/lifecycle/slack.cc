// SlackNotifier, the Slack message shapes and the request signature (slack.h).
#include "broker/lifecycle/slack.h"

#include <algorithm>
#include <charconv>
#include <cstdint>
#include <string>
#include <utility>

#include <nlohmann/json.hpp>

#include "broker/common/log.h"
#include "broker/common/text.h"
#include "broker/crypto/crypto.h"
#include "broker/net/url.h"

namespace jitbroker::lifecycle {

namespace {

using nlohmann::json;

// Slack's limits (Block Kit reference): section text 3000 characters, a
// field 2000, a header 150, a button value 2000; at most 50 blocks.
constexpr size_t kMaxSectionText = 2900;
constexpr size_t kMaxFieldText = 1900;
constexpr size_t kMaxHeaderText = 150;
constexpr size_t kMaxBlocks = 50;
constexpr std::chrono::milliseconds kLookupTimeout{2000};

std::shared_ptr<spdlog::logger> Logger() { return log::Get("lifecycle"); }

// Cuts at `max` bytes without splitting a UTF-8 sequence.
std::string Truncated(std::string text, size_t max) {
  if (text.size() <= max) {
    return text;
  }
  size_t cut = max - 1;  // room for the ellipsis byte budget below
  while (cut > 0 && (static_cast<unsigned char>(text[cut]) & 0xC0) == 0x80) {
    --cut;
  }
  text.resize(cut);
  text += "\u2026";
  return text;
}

std::string Str(const json& object, std::string_view key) {
  if (!object.is_object()) {
    return {};
  }
  auto it = object.find(key);
  if (it == object.end()) {
    return {};
  }
  if (it->is_string()) {
    return it->get<std::string>();
  }
  if (it->is_null()) {
    return {};
  }
  return it->dump(-1, ' ', false, json::error_handler_t::replace);
}

const json& Obj(const json& object, std::string_view key) {
  static const json kEmpty = json::object();
  if (!object.is_object()) {
    return kEmpty;
  }
  auto it = object.find(key);
  return it == object.end() ? kEmpty : *it;
}

json Mrkdwn(std::string text) { return {{"type", "mrkdwn"}, {"text", std::move(text)}}; }

json Field(std::string_view label, const std::string& value) {
  return Mrkdwn(Truncated(
      "*" + std::string(label) + "*\n" + (value.empty() ? std::string("-") : SlackEscape(value)),
      kMaxFieldText));
}

json Button(std::string_view action_id, std::string_view label, const std::string& value,
            std::string_view style) {
  return {{"type", "button"},
          {"action_id", action_id},
          {"text", {{"type", "plain_text"}, {"text", label}}},
          {"value", value},
          {"style", style}};
}

}  // namespace

std::string SlackEscape(std::string_view text) {
  std::string out;
  out.reserve(text.size());
  for (char c : text) {
    switch (c) {
      case '&':
        out += "&amp;";
        break;
      case '<':
        out += "&lt;";
        break;
      case '>':
        out += "&gt;";
        break;
      default:
        out += c;
    }
  }
  return out;
}

bool IsSlackId(std::string_view id) {
  return !id.empty() && id.size() <= 32 && std::all_of(id.begin(), id.end(), [](char c) {
    return (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
  });
}

Status VerifySlackSignature(std::string_view signing_secret, std::string_view timestamp,
                            std::string_view signature, std::string_view body, TimePoint now) {
  if (timestamp.empty() || signature.empty()) {
    return std::unexpected(Unauthenticated(
        "missing_signature", "X-Slack-Request-Timestamp and X-Slack-Signature are required"));
  }
  int64_t ts = 0;
  auto [ptr, ec] = std::from_chars(timestamp.data(), timestamp.data() + timestamp.size(), ts);
  const int64_t now_s =
      std::chrono::duration_cast<std::chrono::seconds>(now.time_since_epoch()).count();
  if (timestamp.size() > 12 || ec != std::errc() || ptr != timestamp.data() + timestamp.size() ||
      ts < 0 || ts > now_s + kSlackReplayWindow.count() ||
      ts < now_s - kSlackReplayWindow.count()) {
    return std::unexpected(
        Unauthenticated("stale_request",
                        "X-Slack-Request-Timestamp is not within 5 minutes of the broker's clock"));
  }
  std::string base;
  base.reserve(4 + timestamp.size() + body.size());
  base.append("v0:").append(timestamp).append(":").append(body);
  const std::string expected = "v0=" + crypto::HexEncode(crypto::HmacSha256(signing_secret, base));
  if (!crypto::ConstantTimeEquals(expected, signature)) {
    return std::unexpected(
        Unauthenticated("invalid_signature", "X-Slack-Signature does not verify"));
  }
  return OkStatus();
}

json SlackPendingMessage(const json& pending, const std::string& channel, bool interactive,
                         const std::string& console_url) {
  const json& agent = Obj(pending, "agent");
  const json& task = Obj(pending, "task");
  const json& request = Obj(pending, "request");
  const json& decision = Obj(pending, "decision");
  const std::string approval_id = Str(pending, "approval_id");
  const std::string digest = Str(pending, "request_digest");
  const std::string tool = Str(request, "tool");
  const std::string operation = Str(request, "operation");
  const std::string resource = Str(request, "resource");
  const std::string tier = Str(request, "tier");

  json blocks = json::array();
  blocks.push_back(
      {{"type", "header"},
       {"text",
        {{"type", "plain_text"},
         {"text", Truncated("Approval requested: " + tool + " " + operation, kMaxHeaderText)}}}});
  blocks.push_back({{"type", "section"},
                    {"fields", json::array({
                                   Field("Agent", Str(agent, "id")),
                                   Field("Delegating principal", Str(pending, "principal")),
                                   Field("Task", Str(task, "id")),
                                   Field("Tool", tool),
                                   Field("Operation", operation),
                                   Field("Resource", resource),
                                   Field("Tier", tier),
                                   Field("Expires", Str(pending, "expires_at")),
                               })}});
  std::string about;
  if (!Str(task, "description").empty()) {
    about += "*Task description*\n" + SlackEscape(Str(task, "description")) + "\n";
  }
  if (!Str(decision, "reason").empty()) {
    about += "*Why approval*\n" + SlackEscape(Str(decision, "reason")) + "\n";
  }
  if (!Str(request, "justification").empty()) {
    about += "*Justification*\n" + SlackEscape(Str(request, "justification")) + "\n";
  }
  const json& params = Obj(request, "parameters");
  if (params.is_object() && !params.empty()) {
    about += "*Parameters*\n```" +
             SlackEscape(Truncated(params.dump(-1, ' ', false, json::error_handler_t::replace),
                                   kMaxSectionText / 2)) +
             "```\n";
  }
  if (!about.empty()) {
    blocks.push_back(
        {{"type", "section"}, {"text", Mrkdwn(Truncated(std::move(about), kMaxSectionText))}});
  }
  std::string ids = "Approval `" + SlackEscape(approval_id) + "` \xC2\xB7 request digest `" +
                    SlackEscape(digest) + "`";
  if (!console_url.empty()) {
    ids += " \xC2\xB7 <" + console_url + "/ui/approvals/" + approval_id + "|Open in the console>";
  }
  blocks.push_back({{"type", "context"}, {"elements", json::array({Mrkdwn(std::move(ids))})}});
  if (interactive) {
    const std::string value = approval_id + ":" + digest;
    blocks.push_back(
        {{"type", "actions"},
         {"block_id", "jitbroker_decision"},
         {"elements", json::array({Button(kSlackApproveAction, "Approve", value, "primary"),
                                   Button(kSlackDenyAction, "Deny", value, "danger")})}});
  }
  const std::string text = "Approval requested: " + tool + " " + operation + " on " + resource +
                           " (tier " + tier + ") for agent " + Str(agent, "id") + " of " +
                           Str(pending, "principal");
  return {{"channel", channel},
          {"text", Truncated(SlackEscape(text), kMaxSectionText)},
          {"blocks", std::move(blocks)},
          {"unfurl_links", false}};
}

json SlackDecidedBlocks(const json& original, const std::string& outcome) {
  json out = json::array();
  if (original.is_array()) {
    for (const json& b : original) {
      if (out.size() + 1 >= kMaxBlocks) {
        break;
      }
      if (b.is_object() && Str(b, "type") != "actions") {
        out.push_back(b);
      }
    }
  }
  out.push_back({{"type", "section"}, {"text", Mrkdwn(Truncated(outcome, kMaxSectionText))}});
  return out;
}

// ---------------------------------------------------------------------------
// SlackNotifier

namespace {

WebhookOptions QueueOptions(const config::ApprovalSlackConfig& c) {
  WebhookOptions o;
  o.dialect = Dialect::kSlackApi;
  o.url = c.api_url + "/chat.postMessage";
  o.timeout = Seconds(c.timeout_seconds);
  o.max_attempts = static_cast<int>(c.max_attempts);
  std::string header = "Bearer ";
  header.append(c.bot_token.Reveal());
  o.authorization = SecretValue(std::move(header));
  o.max_queue = static_cast<size_t>(c.max_queue);
  return o;
}

std::string HostOf(const std::string& url) {
  Result<net::Url> parsed = net::ParseUrl(url, net::UrlPolicy::WebhookUrl());
  return parsed ? parsed->host : std::string();
}

config::ApprovalSlackConfig Clone(const config::ApprovalSlackConfig& c) {
  config::ApprovalSlackConfig out;
  out.api_url = c.api_url;
  out.bot_token = c.bot_token.Clone();
  out.channel = c.channel;
  if (c.signing_secret) {
    out.signing_secret = c.signing_secret->Clone();
  }
  out.interactive = c.interactive;
  out.users = c.users;
  out.match_email = c.match_email;
  out.console_url = c.console_url;
  out.timeout_seconds = c.timeout_seconds;
  out.max_attempts = c.max_attempts;
  out.max_queue = c.max_queue;
  return out;
}

}  // namespace

SlackNotifier::SlackNotifier(const config::ApprovalSlackConfig& config,
                             std::unique_ptr<net::HttpClient> queue_client,
                             std::unique_ptr<net::HttpClient> lookup_client)
    : config_(Clone(config)),
      signing_secret_(config_.signing_secret ? config_.signing_secret->Clone() : SecretValue()),
      api_host_(HostOf(config_.api_url)),
      lookup_(std::move(lookup_client)),
      queue_(QueueOptions(config_), std::move(queue_client)) {}

void SlackNotifier::ApprovalPending(const GrantRecord& grant, const SessionRecord& session) {
  json body = SlackPendingMessage(PendingApprovalMessage(grant, session), config_.channel,
                                  config_.interactive, config_.console_url);
  {
    // Known from now on, so a decision that comes before Slack's answer
    // is kept for it (the message is then updated as soon as it exists).
    std::lock_guard lock(posted_mu_);
    if (posted_.size() >= kMaxPosted && !posted_order_.empty()) {
      posted_.erase(posted_order_.front());
      posted_order_.pop_front();
    }
    if (posted_.emplace(grant.approval_id, Posted{{}, {}, body.value("blocks", json::array()), {}})
            .second) {
      posted_order_.push_back(grant.approval_id);
    }
  }
  queue_.EnqueueCall(
      config_.api_url + "/chat.postMessage", body, grant.approval_id, /*bearer=*/true,
      [this, id = grant.approval_id](const json& answer) {
        const json* channel = answer.is_object() ? &answer["channel"] : nullptr;
        const json* ts = answer.is_object() ? &answer["ts"] : nullptr;
        if (channel == nullptr || ts == nullptr || !channel->is_string() || !ts->is_string()) {
          return;
        }
        Posted closed;
        {
          std::lock_guard lock(posted_mu_);
          auto it = posted_.find(id);
          if (it == posted_.end()) {
            return;  // forgotten (kMaxPosted)
          }
          it->second.channel = channel->get<std::string>();
          it->second.ts = ts->get<std::string>();
          if (!it->second.closed_outcome) {
            return;
          }
          closed = std::move(it->second);
          posted_.erase(it);  // its slot in posted_order_ ages out
        }
        UpdateMessage(closed.channel, closed.ts,
                      SlackDecidedBlocks(closed.blocks, *closed.closed_outcome),
                      *closed.closed_outcome, id);
      });
}

void SlackNotifier::ApprovalClosed(const GrantRecord& grant) {
  const bool via_slack = grant.approval && grant.approval->via == "slack";
  std::string outcome;
  if (grant.approval) {
    const bool approved = grant.approval->decision == "approved";
    outcome = std::string(approved ? ":white_check_mark: *Approved*" : ":no_entry: *Denied*") +
              " by " + SlackEscape(grant.approval->approver) +
              (grant.approval->via.empty() ? std::string()
                                           : " in the " + SlackEscape(grant.approval->via)) +
              (grant.approval->comment.empty() ? std::string()
                                               : ": " + SlackEscape(grant.approval->comment));
  } else if (grant.approval_expired) {
    outcome = ":hourglass: *Expired*: no approver decided in time";
  } else {
    outcome = ":hourglass: *No longer pending*: the request was revoked or its session ended";
  }
  Posted posted;
  {
    std::lock_guard lock(posted_mu_);
    auto it = posted_.find(grant.approval_id);
    if (it == posted_.end()) {
      return;
    }
    if (!via_slack && it->second.ts.empty()) {
      // Slack has not answered the post yet: its answer applies this.
      it->second.closed_outcome = std::move(outcome);
      return;
    }
    posted = std::move(it->second);
    posted_.erase(it);  // its slot in posted_order_ ages out
  }
  if (via_slack) {
    return;  // the callback updated the message with the clicker's outcome
  }
  UpdateMessage(posted.channel, posted.ts, SlackDecidedBlocks(posted.blocks, outcome), outcome,
                grant.approval_id);
}

void SlackNotifier::UpdateMessage(const std::string& channel, const std::string& ts, json blocks,
                                  const std::string& text, const std::string& approval_id) {
  json body = {{"channel", channel}, {"ts", ts}, {"text", text}, {"blocks", std::move(blocks)}};
  queue_.EnqueueCall(config_.api_url + "/chat.update", body, approval_id);
}

bool SlackNotifier::Reply(const std::string& response_url, const std::string& text,
                          const std::string& approval_id) {
  Result<net::Url> url = net::ParseUrl(response_url, net::UrlPolicy::WebhookUrl());
  if (!url || url->host.empty() || (url->host != "hooks.slack.com" && url->host != api_host_) ||
      (url->host == "hooks.slack.com" && url->scheme != "https")) {
    return false;
  }
  json body = {{"response_type", "ephemeral"},
               {"replace_original", false},
               {"text", Truncated(SlackEscape(text), kMaxSectionText)}};
  // The response_url is its own credential: the bot token is not sent to it.
  queue_.EnqueueCall(response_url, body, approval_id, /*bearer=*/false);
  return true;
}

Result<std::optional<std::string>> SlackNotifier::PrincipalFor(std::string_view user_id,
                                                               const Policy& policy) {
  if (auto it = config_.users.find(std::string(user_id)); it != config_.users.end()) {
    if (policy.FindPrincipal(it->second) == nullptr) {
      return std::optional<std::string>();  // removed from the policy since
    }
    return std::optional<std::string>(it->second);
  }
  if (!config_.match_email || !IsSlackId(user_id) || lookup_ == nullptr) {
    return std::optional<std::string>();
  }
  net::HttpRequest req;
  req.method = "GET";
  req.url = config_.api_url + "/users.info?user=" + std::string(user_id);
  req.bearer = config_.bot_token.Clone();
  req.timeout = kLookupTimeout;
  req.connect_timeout = kLookupTimeout;
  Result<net::HttpResponse> resp = lookup_->Send(req);
  if (!resp || resp->status != 200) {
    Logger()->warn("event=slack_users_info_failed user={} status={}", user_id,
                   resp ? resp->status : 0);
    return std::unexpected(Unavailable("slack_unavailable", "Slack users.info did not answer"));
  }
  json answer = json::parse(resp->body, nullptr, /*allow_exceptions=*/false);
  const json* ok = answer.is_object() && answer.contains("ok") ? &answer["ok"] : nullptr;
  if (ok == nullptr || !ok->is_boolean() || !ok->get<bool>()) {
    Logger()->warn("event=slack_users_info_refused user={} error={}", user_id,
                   log::Quoted(Str(answer, "error"), 64));
    return std::unexpected(Unavailable("slack_unavailable", "Slack users.info refused"));
  }
  const std::string email = text::AsciiLower(Str(Obj(Obj(answer, "user"), "profile"), "email"));
  if (email.empty()) {
    return std::optional<std::string>();
  }
  for (const Principal& p : policy.principals) {
    if (!p.email.empty() && text::AsciiLower(p.email) == email) {
      return std::optional<std::string>(p.id);
    }
  }
  return std::optional<std::string>();
}

}  // namespace jitbroker::lifecycle
