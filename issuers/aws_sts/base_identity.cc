#include "issuers/aws_sts/base_identity.h"

#include <fstream>
#include <iterator>
#include <utility>

#include "broker/common/log.h"

namespace jitbroker::issuers::aws_sts {

namespace {

constexpr auto kRenewBefore = std::chrono::minutes(5);
constexpr size_t kMaxTokenBytes = 64 * 1024;

AwsCredentials Copy(const AwsCredentials& c) {
  AwsCredentials out;
  out.access_key_id = c.access_key_id;
  out.secret_access_key = c.secret_access_key.Clone();
  out.session_token = c.session_token.Clone();
  return out;
}

}  // namespace

BaseIdentity::BaseIdentity(std::string access_key_id, SecretValue secret_access_key,
                           SecretValue session_token) {
  current_.access_key_id = std::move(access_key_id);
  current_.secret_access_key = std::move(secret_access_key);
  current_.session_token = std::move(session_token);
}

BaseIdentity::BaseIdentity(WebIdentitySource source, AwsQueryApi* sts, const Clock* clock)
    : web_(std::move(source)), sts_(sts), clock_(clock) {}

Result<SecretValue> BaseIdentity::ReadTokenFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::string text;
  if (in) {
    text.resize(kMaxTokenBytes + 1);
    in.read(text.data(), static_cast<std::streamsize>(text.size()));
    text.resize(static_cast<size_t>(in.gcount()));
  }
  while (!text.empty() && (text.back() == '\n' || text.back() == '\r' || text.back() == ' ')) {
    text.pop_back();
  }
  if (!in.eof() || text.empty() || text.size() > kMaxTokenBytes) {
    SecureWipe(text.data(), text.size());
    return std::unexpected(
        Unavailable("aws_auth_failed", "the web identity token file " + path +
                                           " cannot be read, is empty or is larger than 64 KiB"));
  }
  SecretValue out(text);
  SecureWipe(text.data(), text.size());
  return out;
}

Result<AwsCredentials> BaseIdentity::Get(std::string_view expired_key_id) {
  std::lock_guard lock(mu_);
  if (!web_) {
    return Copy(current_);
  }
  const TimePoint now = clock_->Now();
  const bool fresh = !current_.access_key_id.empty() && now + kRenewBefore < expires_ &&
                     current_.access_key_id != expired_key_id;
  if (fresh) {
    return Copy(current_);
  }
  JITBROKER_ASSIGN_OR_RETURN(SecretValue token, ReadTokenFile(web_->token_file));
  auto role = AssumeRoleWithWebIdentity(*sts_, web_->role_arn, web_->session_name, token,
                                        web_->duration_seconds);
  if (!role) {
    log::Get("issuer.aws_sts")
        ->error("event=aws_web_identity_failed role_arn={} error=\"{}\"", web_->role_arn,
                role.error().ToString());
    return std::unexpected(role.error());
  }
  current_.access_key_id = role->access_key_id;
  current_.secret_access_key = std::move(role->secret_access_key);
  current_.session_token = std::move(role->session_token);
  expires_ = role->expiration;
  ++exchanges_;
  return Copy(current_);
}

uint64_t BaseIdentity::exchanges() const {
  std::lock_guard lock(mu_);
  return exchanges_;
}

}  // namespace jitbroker::issuers::aws_sts
