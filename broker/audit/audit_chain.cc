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

ChainVerification Bad(int64_t records, int64_t seq, int64_t line, std::string problem) {
  ChainVerification v;
  v.ok = false;
  v.records = records;
  v.first_bad_seq = seq;
  v.first_bad_line = line;
  v.problem = std::move(problem);
  return v;
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

ChainVerification VerifyChainText(std::string_view jsonl) {
  int64_t records = 0;
  int64_t line_no = 0;
  int64_t expected_seq = 1;
  std::string prev_hash;  // "" before the first record
  size_t pos = 0;
  while (pos < jsonl.size()) {
    ++line_no;
    const size_t nl = jsonl.find('\n', pos);
    const std::string_view line =
        nl == std::string_view::npos ? jsonl.substr(pos) : jsonl.substr(pos, nl - pos);
    pos = nl == std::string_view::npos ? jsonl.size() : nl + 1;
    if (line.empty() && pos >= jsonl.size()) {
      break;  // a blank final line is not a record
    }

    Json body = Json::parse(line, nullptr, /*allow_exceptions=*/false);
    const bool shaped = body.is_object() && body.contains("seq") &&
                        body["seq"].is_number_integer() && body.contains("prev_hash") &&
                        body["prev_hash"].is_string() && body.contains("hash") &&
                        body["hash"].is_string();
    if (!shaped) {
      return Bad(records, expected_seq, line_no, "unparsable line");
    }
    const int64_t seq = body["seq"].get<int64_t>();
    if (seq != expected_seq) {
      return Bad(records, seq, line_no, "seq gap");
    }
    if (body["prev_hash"].get_ref<const std::string&>() != prev_hash) {
      return Bad(records, seq, line_no, "prev_hash mismatch");
    }
    const std::string& hash = body["hash"].get_ref<const std::string&>();
    if (ComputeRecordHash(body) != hash) {
      return Bad(records, seq, line_no, "hash mismatch");
    }
    // The line must be exactly what the journal wrote: duplicate keys,
    // re-ordered keys or added whitespace would let a reader see something
    // other than what was hashed.
    if (SafeDump(body) != line) {
      return Bad(records, seq, line_no, "non-canonical line");
    }
    ++records;
    ++expected_seq;
    prev_hash = hash;
  }
  ChainVerification ok;
  ok.records = records;
  return ok;
}

}  // namespace jitbroker
