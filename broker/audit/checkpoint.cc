// Signed audit checkpoints (broker/audit/checkpoint.h).
#include "broker/audit/checkpoint.h"

#include <string>
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

// The last non-empty line of `text` and its start offset.
std::string_view LastLine(std::string_view text) {
  while (!text.empty() && text.back() == '\n') {
    text.remove_suffix(1);
  }
  const size_t nl = text.rfind('\n');
  return nl == std::string_view::npos ? text : text.substr(nl + 1);
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

AnchorReport VerifyAnchoredChain(std::string_view jsonl, const AnchorOptions& options) {
  AnchorReport r;
  r.chain = VerifyChainText(jsonl);
  auto fail = [&](int64_t seq, std::string problem) {
    r.ok = false;
    r.bad_seq = seq;
    r.problem = std::move(problem);
    return r;
  };
  if (!r.chain.ok) {
    return fail(r.chain.first_bad_seq, r.chain.problem);
  }
  if (options.keys == nullptr && (options.max_tail || options.require_shutdown)) {
    return fail(0, "checking checkpoints needs the audit public key");
  }
  const int64_t records = r.chain.records;
  if (records > 0) {
    const Json last = Json::parse(LastLine(jsonl), nullptr, /*allow_exceptions=*/false);
    r.head_hash = StringAt(last, "hash");
  }

  if (options.keys != nullptr) {
    // Only lines that can be checkpoints are parsed again.
    size_t pos = 0;
    while (pos < jsonl.size()) {
      const size_t nl = jsonl.find('\n', pos);
      const std::string_view line =
          nl == std::string_view::npos ? jsonl.substr(pos) : jsonl.substr(pos, nl - pos);
      pos = nl == std::string_view::npos ? jsonl.size() : nl + 1;
      if (line.find(kCheckpointEvent) == std::string_view::npos) {
        continue;
      }
      const Json body = Json::parse(line, nullptr, /*allow_exceptions=*/false);
      if (!IsCheckpoint(body)) {
        continue;
      }
      const int64_t seq = body["seq"].get<int64_t>();
      if (std::string problem = CheckCheckpoint(body, *options.keys); !problem.empty()) {
        return fail(seq, std::move(problem));
      }
      ++r.checkpoints;
      r.last_checkpoint_seq = seq;
      r.last_checkpoint_reason = StringAt(body["checkpoint"], "reason");
      r.last_checkpoint_timestamp = StringAt(body, "timestamp");
    }
    r.tail_records = records - r.last_checkpoint_seq;
  }

  if (options.expect_seq && *options.expect_seq != records) {
    return fail(0, "the chain ends at seq " + std::to_string(records) + ", expected " +
                       std::to_string(*options.expect_seq) + " (records missing or added)");
  }
  if (options.expect_head && *options.expect_head != r.head_hash) {
    return fail(0, "the chain does not end with the expected head (records missing or added)");
  }
  if (options.max_tail && r.tail_records > *options.max_tail) {
    return fail(r.last_checkpoint_seq + 1,
                std::to_string(r.tail_records) + " records follow the last checkpoint, more than " +
                    std::to_string(*options.max_tail) + " (the file may have been cut)");
  }
  if (options.require_shutdown && (r.tail_records != 0 || r.last_checkpoint_reason != "shutdown")) {
    return fail(0, records == 0 ? std::string("the file holds no records")
                                : "the file does not end with a shutdown checkpoint (the file may "
                                  "have been cut, or the broker did not stop cleanly)");
  }
  return r;
}

}  // namespace jitbroker::audit
