// The audit hash chain (include/jitbroker/audit.h, docs/concepts.md "Audit record").
//
// Canonical text is nlohmann::json::dump() with no indentation. Bodies come
// from request data and may hold invalid UTF-8, on which dump() throws; such
// bodies are canonicalised once, in PrepareAuditEvent, by dumping with U+FFFD
// replacement and re-parsing, so every later dump() of a chained body is
// exception-free and byte-identical to the text that was hashed.
//
// A record is serialised once, in two steps. PrepareAuditEvent (any thread)
// writes the top-level members itself (in the object's key order, each value
// by dump()), which yields exactly dump()'s bytes, leaving out seq, prev_hash
// and hash but remembering where they belong. ChainPrepared (the journal's
// committer) splices in prev_hash and seq, hashes that text, and splices in
// "hash":"<hex>" for the full record text (AuditRecord::text).
#include "jitbroker/audit.h"

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <utility>

#include <nlohmann/json.hpp>

#include "broker/audit/canonical_record.h"
#include "broker/common/time_util.h"
#include "broker/crypto/crypto.h"

namespace jitbroker {

namespace {

using Json = nlohmann::json;

// dump() that never throws on invalid UTF-8 (replaces it with U+FFFD); for
// valid UTF-8 the output equals plain dump().
std::string SafeDump(const Json& j) {
  return j.dump(-1, ' ', false, Json::error_handler_t::replace);
}

// Appends the JSON string literal of an object key, as dump() writes it.
void AppendKey(std::string& out, const std::string& key) {
  bool plain = true;
  for (const char c : key) {
    const auto u = static_cast<unsigned char>(c);
    if (u < 0x20 || u > 0x7e || c == '"' || c == '\\') {
      plain = false;
      break;
    }
  }
  if (plain) {
    out += '"';
    out += key;
    out += '"';
  } else {
    out += Json(key).dump();  // throws on invalid UTF-8, like dump() of the object
  }
}

// The comma-led member list of `obj` without seq, prev_hash and hash (see
// PreparedAuditEvent), byte-identical to the members obj.dump() writes;
// throws where obj.dump() throws.
std::string DumpMembers(const Json& obj, size_t& hash_at, size_t& prev_hash_at, size_t& seq_at) {
  const Json::object_t& members = obj.get_ref<const Json::object_t&>();
  std::string out;
  out.reserve(1024);
  hash_at = prev_hash_at = seq_at = std::string::npos;
  for (const auto& [key, value] : members) {
    if (hash_at == std::string::npos && key > "hash") {
      hash_at = out.size();
    }
    if (prev_hash_at == std::string::npos && key > "prev_hash") {
      prev_hash_at = out.size();
    }
    if (seq_at == std::string::npos && key > "seq") {
      seq_at = out.size();
    }
    if (key == "hash" || key == "prev_hash" || key == "seq") {
      continue;
    }
    out += ',';
    AppendKey(out, key);
    out += ':';
    out += value.dump();
  }
  for (size_t* at : {&hash_at, &prev_hash_at, &seq_at}) {
    if (*at == std::string::npos) {
      *at = out.size();
    }
  }
  return out;
}

// "{" + the comma-led member list `list` without its leading comma + "}".
std::string Braced(std::string_view list) {
  std::string out;
  out.reserve(list.size() + 2);
  out += '{';
  if (!list.empty()) {
    out.append(list.substr(1));
  }
  out += '}';
  return out;
}

// The string member `key` of `obj`, or "".
std::string StringMember(const Json& obj, const char* key) {
  const auto it = obj.find(key);
  return it != obj.end() && it->is_string() ? it->get<std::string>() : std::string();
}

// AuditIndex (include/jitbroker/audit.h) of an event object.
AuditIndex ReadIndex(const Json& event) {
  AuditIndex index;
  if (const auto agent = event.find("agent"); agent != event.end() && agent->is_object()) {
    index.session_id = StringMember(*agent, "session_id");
  }
  index.principal_id = StringMember(event, "human_principal");
  if (const auto ts = event.find("timestamp"); ts != event.end()) {
    // Integer seconds only within TimePoint's range (about ±292 years).
    constexpr int64_t kMaxSeconds = 8'000'000'000;
    if (ts->is_number_integer() && !ts->is_number_unsigned()) {
      const int64_t s = ts->get<int64_t>();
      if (s >= -kMaxSeconds && s <= kMaxSeconds) {
        index.ts = FromUnixSeconds(s);
      }
    } else if (ts->is_number_unsigned()) {
      const uint64_t s = ts->get<uint64_t>();
      if (s <= static_cast<uint64_t>(kMaxSeconds)) {
        index.ts = FromUnixSeconds(static_cast<int64_t>(s));
      }
    } else if (ts->is_string()) {
      if (auto t = ParseRfc3339(ts->get_ref<const std::string&>())) {
        index.ts = *t;  // an unreadable time leaves the record unfiled by time
      }
    }
  }
  return index;
}

}  // namespace

std::string ComputeRecordHash(const Json& body) {
  if (!body.is_object()) {
    return crypto::Sha256Hex(SafeDump(body));
  }
  Json copy = body;
  copy.erase("hash");
  return crypto::Sha256Hex(SafeDump(copy));
}

PreparedAuditEvent PrepareAuditEvent(Json event) {
  if (!event.is_object()) {
    // Bodies are objects by contract; keep a stray value rather than drop it.
    Json wrapped = Json::object();
    wrapped["body"] = std::move(event);
    event = std::move(wrapped);
  }
  event.erase("hash");
  event.erase("prev_hash");
  event.erase("seq");
  PreparedAuditEvent p;
  try {
    p.members = DumpMembers(event, p.hash_at, p.prev_hash_at, p.seq_at);
  } catch (const Json::exception&) {
    // Invalid UTF-8 somewhere in the body: canonicalise it once. The
    // re-parsed body dumps without throwing, to the same text.
    event = Json::parse(SafeDump(event), nullptr, /*allow_exceptions=*/false);
    p.members = DumpMembers(event, p.hash_at, p.prev_hash_at, p.seq_at);
  }
  p.index = ReadIndex(event);
  p.body = std::move(event);
  return p;
}

AuditRecord ChainPrepared(const std::optional<ChainHead>& head, PreparedAuditEvent event) {
  AuditRecord rec;
  rec.seq = head ? head->seq + 1 : 1;
  rec.prev_hash = head ? head->hash : std::string();
  const std::string_view members = event.members;
  std::string list;  // comma-led, with prev_hash and seq in place
  list.reserve(members.size() + rec.prev_hash.size() + 64);
  list.append(members.substr(0, event.prev_hash_at));
  list += ",\"prev_hash\":\"";
  list += rec.prev_hash;  // lower-case hex or empty: nothing to escape
  list += '"';
  list.append(members.substr(event.prev_hash_at, event.seq_at - event.prev_hash_at));
  list += ",\"seq\":";
  list += std::to_string(rec.seq);
  list.append(members.substr(event.seq_at));
  rec.hash = crypto::Sha256Hex(Braced(list));
  // "hash" sorts before "prev_hash", so its offset is unchanged in `list`.
  const std::string hash_member = ",\"hash\":\"" + rec.hash + "\"";
  list.insert(event.hash_at, hash_member);
  rec.text = Braced(list);
  Json& body = event.body;
  body["seq"] = rec.seq;
  body["prev_hash"] = rec.prev_hash;
  body["hash"] = rec.hash;
  rec.body = std::move(body);
  rec.index = std::move(event.index);
  return rec;
}

AuditRecord ChainRecord(const std::optional<ChainHead>& head, Json event) {
  return ChainPrepared(head, PrepareAuditEvent(std::move(event)));
}

ChainVerifier::ChainVerifier(size_t max_line_bytes, RecordObserver on_record)
    : max_line_bytes_(max_line_bytes), on_record_(std::move(on_record)) {}

void ChainVerifier::Feed(std::string_view bytes) {
  while (!bytes.empty() && !Broken()) {
    const size_t nl = bytes.find('\n');
    if (nl == std::string_view::npos) {
      // The start of a line that ends in a later piece.
      if (bytes.size() > max_line_bytes_ - partial_.size()) {
        LineTooLong();
        return;
      }
      partial_.append(bytes);
      return;
    }
    if (partial_.empty()) {
      Line(bytes.substr(0, nl));
    } else if (nl > max_line_bytes_ - partial_.size()) {
      LineTooLong();
      return;
    } else {
      partial_.append(bytes.substr(0, nl));
      Line(partial_);
      partial_.clear();
    }
    bytes.remove_prefix(nl + 1);
  }
}

ChainVerification ChainVerifier::Finish() {
  if (!partial_.empty() && !Broken()) {
    Line(partial_);  // the last line, without '\n'
  }
  partial_.clear();
  return result_;  // an empty last line (blank_line_) is not a record
}

void ChainVerifier::Fail(int64_t seq, std::string problem) {
  result_.ok = false;
  result_.first_bad_seq = seq;
  result_.first_bad_line = line_no_;
  result_.problem = std::move(problem);
}

void ChainVerifier::LineTooLong() {
  if (blank_line_ != 0) {
    line_no_ = blank_line_;
    Fail(result_.records + 1, "unparsable line");
    return;
  }
  ++line_no_;
  Fail(result_.records + 1, "line longer than " + std::to_string(max_line_bytes_) + " bytes");
}

void ChainVerifier::Line(std::string_view line) {
  if (blank_line_ != 0) {
    // An empty line with more after it.
    line_no_ = blank_line_;
    Fail(result_.records + 1, "unparsable line");
    return;
  }
  ++line_no_;
  if (line.size() > max_line_bytes_) {
    Fail(result_.records + 1, "line longer than " + std::to_string(max_line_bytes_) + " bytes");
    return;
  }
  if (line.empty()) {
    blank_line_ = line_no_;  // fine if it is the last line
    return;
  }
  if (reference_only_ || !FastLine(line)) {
    ReferenceLine(line);
  }
}

bool ChainVerifier::FastLine(std::string_view line) {
  audit::CanonicalRecord rec;
  if (!audit::RecogniseCanonicalRecord(line, rec) || rec.seq != result_.records + 1 ||
      rec.prev_hash != prev_hash_) {
    return false;
  }
  // The line is the canonical dump of the record, so without its "hash"
  // member it is the canonical dump of the record without "hash": the text
  // ComputeRecordHash hashes.
  scratch_.assign(line.substr(0, rec.cut_begin));
  scratch_.append(line.substr(rec.cut_end));
  if (crypto::Sha256Hex(scratch_) != rec.hash) {
    return false;
  }
  ++result_.records;
  if (on_record_) {
    on_record_(VerifiedRecord{rec.seq, line_no_, line, rec.hash, rec.event});
  }
  prev_hash_.assign(rec.hash);
  return true;
}

void ChainVerifier::ReferenceLine(std::string_view line) {
  const int64_t expected_seq = result_.records + 1;
  Json body = Json::parse(line, nullptr, /*allow_exceptions=*/false);
  const bool shaped = body.is_object() && body.contains("seq") && body["seq"].is_number_integer() &&
                      body.contains("prev_hash") && body["prev_hash"].is_string() &&
                      body.contains("hash") && body["hash"].is_string();
  if (!shaped) {
    Fail(expected_seq, "unparsable line");
    return;
  }
  const int64_t seq = body["seq"].get<int64_t>();
  if (seq != expected_seq) {
    Fail(seq, "seq gap");
    return;
  }
  if (body["prev_hash"].get_ref<const std::string&>() != prev_hash_) {
    Fail(seq, "prev_hash mismatch");
    return;
  }
  const std::string& hash = body["hash"].get_ref<const std::string&>();
  if (ComputeRecordHash(body) != hash) {
    Fail(seq, "hash mismatch");
    return;
  }
  // The line must be exactly what the journal wrote: duplicate keys,
  // re-ordered keys or added whitespace would let a reader see something
  // other than what was hashed.
  if (SafeDump(body) != line) {
    Fail(seq, "non-canonical line");
    return;
  }
  ++result_.records;
  if (on_record_) {
    const auto event = body.find("event");
    const std::string_view event_name = event != body.end() && event->is_string()
                                            ? std::string_view(event->get_ref<const std::string&>())
                                            : std::string_view();
    on_record_(VerifiedRecord{seq, line_no_, line, hash, event_name});
  }
  prev_hash_ = hash;
}

ChainVerification VerifyChainText(std::string_view jsonl) {
  ChainVerifier verifier;
  verifier.Feed(jsonl);
  return verifier.Finish();
}

}  // namespace jitbroker
