// Signed audit checkpoints (broker/audit/checkpoint.h).
#include "broker/audit/checkpoint.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <string>
#include <system_error>
#include <utility>

#include "broker/common/time_util.h"
#include "broker/crypto/crypto.h"

namespace jitbroker::audit {

namespace {

using Json = nlohmann::json;

constexpr std::string_view kJwsType = "jb-audit-checkpoint+jwt";

const Json* Member(const Json& j, std::string_view key) {
  if (!j.is_object()) {
    return nullptr;
  }
  auto it = j.find(key);
  return it == j.end() ? nullptr : &*it;
}

std::string StringAt(const Json& j, std::string_view key) {
  const Json* m = Member(j, key);
  return m != nullptr && m->is_string() ? m->get<std::string>() : std::string();
}

}  // namespace

Result<Json> MakeCheckpointEvent(const crypto::SigningKey& key,
                                 const std::optional<ChainHead>& head, TimePoint now,
                                 std::string_view reason, int64_t records_since,
                                 const std::vector<AuditChainHead>& other_chains) {
  const int64_t seq = head ? head->seq + 1 : 1;
  const std::string prev_hash = head ? head->hash : std::string();
  const std::string timestamp = FormatRfc3339(now);
  const Json payload = {{"typ", kCheckpointType}, {"seq", seq},
                        {"prev_hash", prev_hash}, {"timestamp", timestamp},
                        {"reason", reason},       {"records_since_checkpoint", records_since}};
  JITBROKER_ASSIGN_OR_RETURN(std::string jws, key.SignJwt({{"typ", kJwsType}}, payload));
  Json event = {{"event_id", crypto::NewPublicId("evt_", 12)},
                {"timestamp", timestamp},
                {"event", kCheckpointEvent},
                {"human_principal", ""},
                {"agent", {{"id", ""}, {"session_id", ""}, {"task_id", ""}}},
                {"checkpoint",
                 {{"reason", reason},
                  {"covers_seq", seq - 1},
                  {"records_since_checkpoint", records_since},
                  {"alg", crypto::JwsAlgName(key.alg())},
                  {"kid", key.kid()},
                  {"jws", std::move(jws)}}},
                {"outcome", "signed"}};
  if (!other_chains.empty()) {
    Json others = Json::array();
    for (const AuditChainHead& c : other_chains) {
      others.push_back({{"chain", c.chain_id}, {"seq", c.head.seq}, {"hash", c.head.hash}});
    }
    event["checkpoint"]["other_chains"] = std::move(others);
  }
  return event;
}

std::vector<AuditChainHead> CheckpointOtherChains(const Json& body) {
  std::vector<AuditChainHead> out;
  const Json* cp = Member(body, "checkpoint");
  const Json* others = cp != nullptr ? Member(*cp, "other_chains") : nullptr;
  if (others == nullptr || !others->is_array()) {
    return out;
  }
  for (const Json& o : *others) {
    const Json* chain = Member(o, "chain");
    const Json* seq = Member(o, "seq");
    const Json* hash = Member(o, "hash");
    if (chain == nullptr || !chain->is_string() || seq == nullptr || !seq->is_number_integer() ||
        hash == nullptr || !hash->is_string()) {
      continue;
    }
    out.push_back(AuditChainHead{chain->get<std::string>(),
                                 ChainHead{seq->get<int64_t>(), hash->get<std::string>()}});
  }
  return out;
}

bool IsCheckpoint(const Json& body) {
  const Json* e = Member(body, "event");
  return e != nullptr && e->is_string() && e->get_ref<const std::string&>() == kCheckpointEvent;
}

Result<CheckpointKeys> CheckpointKeys::FromJwks(const Json& jwks) {
  CheckpointKeys keys;
  Json list = Json::array();
  if (const Json* k = Member(jwks, "keys"); k != nullptr && k->is_array()) {
    list = *k;
  } else if (jwks.is_object()) {
    list.push_back(jwks);
  }
  for (const Json& jwk : list) {
    const std::string kid = StringAt(jwk, "kid");
    if (kid.empty()) {
      return std::unexpected(InvalidArgument("invalid_key", "a JWK without \"kid\""));
    }
    JITBROKER_ASSIGN_OR_RETURN(auto key, crypto::VerifyKey::FromJwk(jwk));
    keys.by_kid[kid] = std::move(key);
  }
  if (keys.by_kid.empty()) {
    return std::unexpected(InvalidArgument("invalid_key", "the JWKS holds no key"));
  }
  return keys;
}

Result<CheckpointKeys> CheckpointKeys::FromPem(std::string_view pem) {
  CheckpointKeys keys;
  for (crypto::JwsAlg alg : {crypto::JwsAlg::kES256, crypto::JwsAlg::kEd25519}) {
    if (auto key = crypto::VerifyKey::FromPem(alg, pem)) {
      keys.any = std::move(*key);
      return keys;
    }
  }
  return std::unexpected(
      InvalidArgument("invalid_key", "not an EC P-256 or Ed25519 public key in PEM"));
}

std::string CheckCheckpoint(const Json& body, const CheckpointKeys& keys) {
  const Json* cp = Member(body, "checkpoint");
  const std::string jws = cp != nullptr ? StringAt(*cp, "jws") : std::string();
  if (jws.empty()) {
    return "checkpoint without a signature";
  }
  const crypto::VerifyKey* key = keys.any.get();
  if (key == nullptr) {
    auto it = keys.by_kid.find(StringAt(*cp, "kid"));
    if (it == keys.by_kid.end()) {
      return "checkpoint key unknown";
    }
    key = it->second.get();
  }
  auto decoded = crypto::DecodeJws(jws);
  if (!decoded || StringAt(decoded->header, "typ") != kJwsType) {
    return "checkpoint signature invalid";
  }
  if (!crypto::VerifyDecodedJws(*decoded, *key)) {
    return "checkpoint signature invalid";
  }
  const Json& p = decoded->payload;
  const Json* seq = Member(p, "seq");
  const Json* since = Member(p, "records_since_checkpoint");
  const Json* body_seq = Member(body, "seq");
  const bool matches = StringAt(p, "typ") == kCheckpointType && seq != nullptr &&
                       seq->is_number_integer() && body_seq != nullptr &&
                       body_seq->is_number_integer() &&
                       seq->get<int64_t>() == body_seq->get<int64_t>() &&
                       StringAt(p, "prev_hash") == StringAt(body, "prev_hash") &&
                       StringAt(p, "timestamp") == StringAt(body, "timestamp") &&
                       StringAt(p, "reason") == StringAt(*cp, "reason") && since != nullptr &&
                       Member(*cp, "records_since_checkpoint") != nullptr &&
                       *since == *Member(*cp, "records_since_checkpoint");
  return matches ? std::string() : "checkpoint does not match its record";
}

AnchoredChainVerifier::AnchoredChainVerifier(const AnchorOptions& options)
    : options_(options),
      chain_(options.max_line_bytes, [this](const VerifiedRecord& r) { OnRecord(r); }) {}

void AnchoredChainVerifier::OnRecord(const VerifiedRecord& record) {
  if (options_.keys == nullptr || checkpoint_failure_ || record.event != kCheckpointEvent) {
    return;
  }
  const Json body = Json::parse(record.text, nullptr, /*allow_exceptions=*/false);
  if (std::string problem = CheckCheckpoint(body, *options_.keys); !problem.empty()) {
    checkpoint_failure_ = checkpoints_;
    checkpoint_failure_->bad_seq = record.seq;
    checkpoint_failure_->problem = std::move(problem);
    return;
  }
  ++checkpoints_.checkpoints;
  checkpoints_.last_checkpoint_seq = record.seq;
  checkpoints_.last_checkpoint_reason = StringAt(body["checkpoint"], "reason");
  checkpoints_.last_checkpoint_timestamp = StringAt(body, "timestamp");
}

AnchorReport AnchoredChainVerifier::Finish() {
  AnchorReport r;
  r.chain = chain_.Finish();
  auto fail = [&](int64_t seq, std::string problem) {
    r.ok = false;
    r.bad_seq = seq;
    r.problem = std::move(problem);
    return r;
  };
  if (!r.chain.ok) {
    return fail(r.chain.first_bad_seq, r.chain.problem);
  }
  if (options_.keys == nullptr && (options_.max_tail || options_.require_shutdown)) {
    return fail(0, "checking checkpoints needs the audit public key");
  }
  const int64_t records = r.chain.records;
  r.head_hash = chain_.LastHash();

  if (options_.keys != nullptr) {
    const AnchorReport& cp = checkpoint_failure_ ? *checkpoint_failure_ : checkpoints_;
    r.checkpoints = cp.checkpoints;
    r.last_checkpoint_seq = cp.last_checkpoint_seq;
    r.last_checkpoint_reason = cp.last_checkpoint_reason;
    r.last_checkpoint_timestamp = cp.last_checkpoint_timestamp;
    if (checkpoint_failure_) {
      return fail(cp.bad_seq, cp.problem);
    }
    r.tail_records = records - r.last_checkpoint_seq;
  }

  if (options_.expect_seq && *options_.expect_seq != records) {
    return fail(0, "the chain ends at seq " + std::to_string(records) + ", expected " +
                       std::to_string(*options_.expect_seq) + " (records missing or added)");
  }
  if (options_.expect_head && *options_.expect_head != r.head_hash) {
    return fail(0, "the chain does not end with the expected head (records missing or added)");
  }
  if (options_.max_tail && r.tail_records > *options_.max_tail) {
    return fail(r.last_checkpoint_seq + 1,
                std::to_string(r.tail_records) + " records follow the last checkpoint, more than " +
                    std::to_string(*options_.max_tail) + " (the file may have been cut)");
  }
  if (options_.require_shutdown &&
      (r.tail_records != 0 || r.last_checkpoint_reason != "shutdown")) {
    return fail(0, records == 0 ? std::string("the file holds no records")
                                : "the file does not end with a shutdown checkpoint (the file may "
                                  "have been cut, or the broker did not stop cleanly)");
  }
  return r;
}

AnchorReport VerifyAnchoredChain(std::string_view jsonl, const AnchorOptions& options) {
  AnchoredChainVerifier verifier(options);
  verifier.Feed(jsonl);
  return verifier.Finish();
}

Result<AnchorReport> VerifyAnchoredChainFile(const std::string& path, const AnchorOptions& options,
                                             size_t chunk_bytes) {
  const auto system_error = [&](int err) {
    std::string reason = std::error_code(err, std::generic_category()).message();
    if (err == ENOENT) {
      return NotFound("not_found", std::move(reason));
    }
    if (err == EACCES || err == EPERM) {
      return PermissionDenied("permission_denied", std::move(reason));
    }
    return Unavailable("read_failed", std::move(reason));
  };
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    return std::unexpected(system_error(errno));
  }
  struct Closer {
    int fd;
    ~Closer() { ::close(fd); }
  } closer{fd};
  AnchoredChainVerifier verifier(options);
  std::string buffer(std::max<size_t>(chunk_bytes, 1), '\0');
  while (!verifier.Broken()) {
    const ssize_t n = ::read(fd, buffer.data(), buffer.size());
    if (n < 0 && errno == EINTR) {
      continue;
    }
    if (n < 0) {
      return std::unexpected(system_error(errno));
    }
    if (n == 0) {
      break;
    }
    verifier.Feed(std::string_view(buffer.data(), static_cast<size_t>(n)));
  }
  return verifier.Finish();
}

}  // namespace jitbroker::audit
