// SlackInteractions (slack_interactions.h).
#include "broker/http/slack_interactions.h"

#include <optional>
#include <string>
#include <string_view>
#include <utility>

#include <nlohmann/json.hpp>

#include "broker/authn/authn.h"
#include "broker/common/json_util.h"
#include "broker/common/log.h"
#include "broker/net/url.h"
#include "jitbroker/secret.h"

namespace jitbroker::http {

namespace {

using nlohmann::json;

std::shared_ptr<spdlog::logger> Logger() { return log::Get("http"); }

void WriteJsonBody(Response& res, int status, const json& body, const char* content_type) {
  res.status = status;
  res.content_type = content_type;
  res.body = body.dump(-1, ' ', false, json::error_handler_t::replace);
}

// What the clicker alone sees: the answer (documented in docs/api.md; Slack
// itself ignores the body of a block_actions answer) and, when the payload
// named one, through its response_url.
void WriteEphemeral(Response& res, const std::string& text) {
  WriteJsonBody(res, 200,
                json{{"response_type", "ephemeral"},
                     {"replace_original", false},
                     {"text", lifecycle::SlackEscape(text)}},
                "application/json");
}

std::string Str(const json& j, std::string_view key) {
  if (!j.is_object()) {
    return {};
  }
  auto it = j.find(key);
  return it != j.end() && it->is_string() ? it->get<std::string>() : std::string();
}

const json& Obj(const json& j, std::string_view key) {
  static const json kNull;
  if (!j.is_object()) {
    return kNull;
  }
  auto it = j.find(key);
  return it == j.end() ? kNull : *it;
}

// The click, from a verified block_actions payload.
struct Click {
  bool approve = false;
  std::string approval_id;
  std::string digest;
  std::string user_id;
  std::string channel;
  std::string ts;
  json blocks;  // the message's blocks as Slack holds them
  std::string response_url;
};

Result<std::optional<Click>> ParseClick(const json& payload) {
  const Error bad = InvalidArgument("invalid_request", "payload is not a Slack interaction");
  if (!payload.is_object()) {
    return std::unexpected(bad);
  }
  if (Str(payload, "type") != "block_actions") {
    return std::optional<Click>();  // other interactions are not ours
  }
  const json& actions = Obj(payload, "actions");
  if (!actions.is_array() || actions.empty()) {
    return std::unexpected(bad);
  }
  const json& action = actions[0];
  Click c;
  const std::string action_id = Str(action, "action_id");
  if (action_id == lifecycle::kSlackApproveAction) {
    c.approve = true;
  } else if (action_id != lifecycle::kSlackDenyAction) {
    return std::optional<Click>();  // not our button
  }
  const std::string value = Str(action, "value");
  const size_t colon = value.find(':');
  if (colon == std::string::npos || value.size() > 256) {
    return std::unexpected(bad);
  }
  c.approval_id = value.substr(0, colon);
  c.digest = value.substr(colon + 1);
  c.user_id = Str(Obj(payload, "user"), "id");
  const json& container = Obj(payload, "container");
  c.channel = Str(container, "channel_id");
  if (c.channel.empty()) {
    c.channel = Str(Obj(payload, "channel"), "id");
  }
  c.ts = Str(container, "message_ts");
  if (c.ts.empty()) {
    c.ts = Str(Obj(payload, "message"), "ts");
  }
  c.blocks = Obj(Obj(payload, "message"), "blocks");
  c.response_url = Str(payload, "response_url");
  if (!lifecycle::IsSlackId(c.user_id) || c.approval_id.empty() || c.digest.empty()) {
    return std::unexpected(bad);
  }
  return std::optional<Click>(std::move(c));
}

// Refusals after which the approval can never be decided: its message says
// so and loses its buttons. Any other refusal (four-eyes, not an approver, a
// stale digest) leaves the approval to someone else.
bool IsFinal(const Error& e) {
  return e.reason == "approval_expired" || e.reason.starts_with("session_");
}

}  // namespace

void SlackInteractions::Handle(Request& req, Response& res) {
  service::CallContext ctx;
  ctx.request_id = req.request_id;
  ctx.client_request_id = req.client_request_id;
  ctx.source_address = req.remote_addr;
  ctx.via = "slack";
  if (Status admitted = service_->AdmitAuthAttempt(req.remote_addr); !admitted) {
    return render_(req, admitted.error(), res);
  }
  // The signature covers the raw body: nothing in it is read before.
  Status verified = lifecycle::VerifySlackSignature(
      slack_->signing_secret().Reveal(), req.Header("X-Slack-Request-Timestamp"),
      req.Header("X-Slack-Signature"), req.body, service_->clock()->Now());
  if (!verified) {
    service_->CountAuthFailure(req.remote_addr);
    Logger()->info("event=slack_callback_rejected request_id={} reason={} remote={}",
                   req.request_id, verified.error().Reason(), log::Quoted(req.remote_addr, 64));
    return render_(req, verified.error(), res);
  }
  if (req.MediaType() != "application/x-www-form-urlencoded") {
    return render_(req,
                   UnsupportedMediaType("unsupported_media_type",
                                        "Slack interactions are application/x-www-form-urlencoded"),
                   res);
  }
  auto form = net::ParseForm(req.body);
  if (!form) {
    return render_(req, InvalidArgument("invalid_request", form.error().message), res);
  }
  std::optional<std::string> payload_text;
  for (auto& [k, v] : *form) {
    if (k == "payload") {
      if (payload_text) {
        return render_(req, InvalidArgument("invalid_request", "payload is given twice"), res);
      }
      payload_text = std::move(v);
    }
  }
  if (!payload_text) {
    return render_(req, InvalidArgument("invalid_request", "payload is required"), res);
  }
  auto payload = jitbroker::json::ParseStrict(*payload_text);
  if (!payload) {
    return render_(req, InvalidArgument("invalid_request", payload.error().message), res);
  }
  auto click = ParseClick(*payload);
  if (!click) {
    return render_(req, click.error(), res);
  }
  if (!*click) {
    return WriteJsonBody(res, 200, json::object(), "application/json");  // nothing to do
  }
  Click& c = **click;
  ctx.via_user = c.user_id;
  auto tell = [&](const std::string& text) {
    if (!c.response_url.empty()) {
      (void)slack_->Reply(c.response_url, text, c.approval_id);
    }
    WriteEphemeral(res, text);
  };
  if (c.channel != slack_->channel()) {
    return tell("This message is not from the approvals channel; nothing was decided.");
  }

  std::shared_ptr<const Policy> policy = service_->policy();
  Result<std::optional<std::string>> principal = slack_->PrincipalFor(c.user_id, *policy);
  if (!principal) {
    return tell(
        "Slack could not be asked who you are; nothing was decided. Try "
        "again, or decide in the API.");
  }
  if (!*principal) {
    Logger()->info("event=slack_user_unmapped request_id={} user={} approval_id={}", req.request_id,
                   c.user_id, log::Quoted(c.approval_id, 64));
    return tell(
        "Your Slack account is not mapped to a jitbroker principal; "
        "nothing was decided.");
  }
  auto caller = authn::PrincipalCaller(policy->FindPrincipal(**principal), policy);
  if (!caller) {
    return tell("Your principal is not in the policy; nothing was decided.");
  }
  ctx.caller = std::move(*caller);

  service::ApprovalDecisionInput in;
  in.approve = c.approve;
  in.request_digest = c.digest;
  Result<service::ApprovalView> decided =
      service_->DecideApproval(ctx, c.approval_id, std::move(in));
  const std::string who = lifecycle::SlackEscape(**principal) + " (<@" + c.user_id + ">)";
  if (decided) {
    const std::string outcome =
        c.approve ? ":white_check_mark: *Approved* by " + who : ":no_entry: *Denied* by " + who;
    slack_->UpdateMessage(c.channel, c.ts, lifecycle::SlackDecidedBlocks(c.blocks, outcome),
                          (c.approve ? "Approved by " : "Denied by ") + **principal, c.approval_id);
    return WriteEphemeral(
        res, std::string(c.approve ? "Approved" : "Denied") + " as " + **principal + ".");
  }
  const Error& e = decided.error();
  if (e.code == ErrorCode::kInternal) {
    Logger()->error("event=internal_error request_id={} route=/v1/slack/interactions error={}",
                    ctx.request_id, log::Quoted(e.ToString()));
  }
  Logger()->info("event=slack_decision_refused request_id={} user={} principal={} reason={}",
                 req.request_id, c.user_id, **principal, e.Reason());
  if (IsFinal(e)) {
    slack_->UpdateMessage(
        c.channel, c.ts,
        lifecycle::SlackDecidedBlocks(
            c.blocks, ":hourglass: *No longer pending*: " + lifecycle::SlackEscape(e.message)),
        "No longer pending", c.approval_id);
  }
  tell("Not decided (" + std::string(e.Reason()) + "): " + e.message);
}

}  // namespace jitbroker::http
