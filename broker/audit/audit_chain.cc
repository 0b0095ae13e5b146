// The audit hash chain (include/jitbroker/audit.h, DESIGN §9).
//
// Canonical text is nlohmann::json::dump() with no indentation. Bodies come
// from request data and may hold invalid UTF-8, on which dump() throws; such
// bodies are canonicalised once, in ChainRecord, by dumping with U+FFFD
// replacement and re-parsing, so every later dump() of a chained body is
// exception-free and byte-identical to the text that was hashed.
//
// ChainRecord serialises a record once: it writes the top-level members
// itself (in the object's key order, each value by dump()), which yields
// exactly dump()'s bytes, and remembers where a top-level "hash" member
// belongs; the full record text (AuditRecord::text) is the hashed text with
// "hash":"<hex>" spliced in there.
#include "jitbroker/audit.h"

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <utility>

#include <nlohmann/json.hpp>

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

// Canonical text of `obj` (an object without a top-level "hash" member),
// byte-identical to obj.dump(); throws where obj.dump() throws. Sets
// `hash_at` to the offset at which a top-level "hash" member's text goes.
std::string DumpWithHashSlot(const Json& obj, size_t& hash_at) {
  const Json::object_t& members = obj.get_ref<const Json::object_t&>();
  const auto after_hash = members.upper_bound("hash");
  std::string out;
  out.reserve(1024);
  out += '{';
  hash_at = std::string::npos;
  bool first = true;
  for (auto it = members.begin(); it != members.end(); ++it) {
    if (!first) {
      out += ',';
    }
    first = false;
    if (it == after_hash) {
      hash_at = out.size();
    }
    AppendKey(out, it->first);
    out += ':';
    out += it->second.dump();
  }
  if (hash_at == std::string::npos) {
    hash_at = out.size();  // "hash" sorts last: before the closing brace
  }
  out += '}';
  return out;
}

// `canonical` with the member "hash":"<hash>" inserted at `hash_at`.
std::string SpliceHash(const std::string& canonical, size_t hash_at, const std::string& hash) {
  const bool last = canonical[hash_at] == '}';
  const bool only = last && hash_at == 1;
  std::string out;
  out.reserve(canonical.size() + hash.size() + 12);
  out.append(canonical, 0, hash_at);
  if (last && !only) {
    out += ',';
  }
  out += "\"hash\":\"";
  out += hash;  // lower-case hex: nothing to escape
  out += '"';
  if (!last) {
    out += ',';
  }
  out.append(canonical, hash_at, std::string::npos);
  return out;
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

AuditRecord ChainRecord(const std::optional<ChainHead>& head, Json event) {
  if (!event.is_object()) {
    // Bodies are objects by contract; keep a stray value rather than drop it.
    Json wrapped = Json::object();
    wrapped["body"] = std::move(event);
    event = std::move(wrapped);
  }
  AuditRecord rec;
  rec.seq = head ? head->seq + 1 : 1;
  rec.prev_hash = head ? head->hash : std::string();
  event.erase("hash");
  event["seq"] = rec.seq;
  event["prev_hash"] = rec.prev_hash;

  std::string canonical;
  size_t hash_at = 0;
  try {
    canonical = DumpWithHashSlot(event, hash_at);
  } catch (const Json::exception&) {
    // Invalid UTF-8 somewhere in the body: canonicalise it once. The
    // re-parsed body dumps without throwing, to the same text.
    event = Json::parse(SafeDump(event), nullptr, /*allow_exceptions=*/false);
    canonical = DumpWithHashSlot(event, hash_at);
  }
  rec.hash = crypto::Sha256Hex(canonical);
  rec.text = SpliceHash(canonical, hash_at, rec.hash);
  event["hash"] = rec.hash;
  rec.body = std::move(event);
  return rec;
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
