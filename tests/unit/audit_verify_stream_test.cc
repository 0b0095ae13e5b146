// The streaming audit verifier (ChainVerifier, AnchoredChainVerifier,
// VerifyAnchoredChainFile; issue #15) against the verifier it replaced:
// same verdict (ok, records, first_bad_seq, first_bad_line, problem) on
// sound chains and on every tampering, whatever the pieces the text arrives
// in, and a canonical-record recogniser that never vouches for a line
// nlohmann would not write.
#include <algorithm>
#include <cctype>
#include <cstdint>
#include <functional>
#include <limits>
#include <memory>
#include <optional>
#include <random>
#include <sstream>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <doctest/doctest.h>
#include <nlohmann/json.hpp>

#include "broker/audit/canonical_record.h"
#include "broker/audit/checkpoint.h"
#include "broker/common/time_util.h"
#include "broker/crypto/crypto.h"
#include "broker/crypto/jose.h"
#include "cli/args.h"
#include "cli/offline_commands.h"
#include "jitbroker/audit.h"
#include "tests/support/temp_dir.h"

namespace jitbroker::audit {
namespace {

using Json = nlohmann::json;

// ---------------------------------------------------------------------------
// The verifiers as they were before streaming, kept verbatim as the oracle.

std::string LegacySafeDumpForStreamTest(const Json& j) {
  return j.dump(-1, ' ', false, Json::error_handler_t::replace);
}

ChainVerification LegacyBadForStreamTest(int64_t records, int64_t seq, int64_t line,
                                         std::string problem) {
  ChainVerification v;
  v.ok = false;
  v.records = records;
  v.first_bad_seq = seq;
  v.first_bad_line = line;
  v.problem = std::move(problem);
  return v;
}

ChainVerification LegacyVerifyChainTextForStreamTest(std::string_view jsonl) {
  int64_t records = 0;
  int64_t line_no = 0;
  int64_t expected_seq = 1;
  std::string prev_hash;
  size_t pos = 0;
  while (pos < jsonl.size()) {
    ++line_no;
    const size_t nl = jsonl.find('\n', pos);
    const std::string_view line =
        nl == std::string_view::npos ? jsonl.substr(pos) : jsonl.substr(pos, nl - pos);
    pos = nl == std::string_view::npos ? jsonl.size() : nl + 1;
    if (line.empty() && pos >= jsonl.size()) {
      break;
    }
    Json body = Json::parse(line, nullptr, /*allow_exceptions=*/false);
    const bool shaped = body.is_object() && body.contains("seq") &&
                        body["seq"].is_number_integer() && body.contains("prev_hash") &&
                        body["prev_hash"].is_string() && body.contains("hash") &&
                        body["hash"].is_string();
    if (!shaped) {
      return LegacyBadForStreamTest(records, expected_seq, line_no, "unparsable line");
    }
    const int64_t seq = body["seq"].get<int64_t>();
    if (seq != expected_seq) {
      return LegacyBadForStreamTest(records, seq, line_no, "seq gap");
    }
    if (body["prev_hash"].get_ref<const std::string&>() != prev_hash) {
      return LegacyBadForStreamTest(records, seq, line_no, "prev_hash mismatch");
    }
    const std::string& hash = body["hash"].get_ref<const std::string&>();
    if (ComputeRecordHash(body) != hash) {
      return LegacyBadForStreamTest(records, seq, line_no, "hash mismatch");
    }
    if (LegacySafeDumpForStreamTest(body) != line) {
      return LegacyBadForStreamTest(records, seq, line_no, "non-canonical line");
    }
    ++records;
    ++expected_seq;
    prev_hash = hash;
  }
  ChainVerification ok;
  ok.records = records;
  return ok;
}

std::string LegacyStringAtForStreamTest(const Json& j, std::string_view key) {
  if (!j.is_object()) {
    return "";
  }
  const auto it = j.find(key);
  return it != j.end() && it->is_string() ? it->get<std::string>() : std::string();
}

std::string_view LegacyLastLineForStreamTest(std::string_view text) {
  while (!text.empty() && text.back() == '\n') {
    text.remove_suffix(1);
  }
  const size_t nl = text.rfind('\n');
  return nl == std::string_view::npos ? text : text.substr(nl + 1);
}

AnchorReport LegacyVerifyAnchoredChainForStreamTest(std::string_view jsonl,
                                                    const AnchorOptions& options) {
  AnchorReport r;
  r.chain = LegacyVerifyChainTextForStreamTest(jsonl);
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
    const Json last =
        Json::parse(LegacyLastLineForStreamTest(jsonl), nullptr, /*allow_exceptions=*/false);
    r.head_hash = LegacyStringAtForStreamTest(last, "hash");
  }
  if (options.keys != nullptr) {
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
      r.last_checkpoint_reason = LegacyStringAtForStreamTest(body["checkpoint"], "reason");
      r.last_checkpoint_timestamp = LegacyStringAtForStreamTest(body, "timestamp");
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

// ---------------------------------------------------------------------------
// Helpers.

void CheckSameVerification(const ChainVerification& got, const ChainVerification& want) {
  CHECK(got.ok == want.ok);
  CHECK(got.records == want.records);
  CHECK(got.first_bad_seq == want.first_bad_seq);
  CHECK(got.first_bad_line == want.first_bad_line);
  CHECK(got.problem == want.problem);
}

void CheckSameReport(const AnchorReport& got, const AnchorReport& want) {
  CheckSameVerification(got.chain, want.chain);
  CHECK(got.ok == want.ok);
  CHECK(got.head_hash == want.head_hash);
  CHECK(got.checkpoints == want.checkpoints);
  CHECK(got.last_checkpoint_seq == want.last_checkpoint_seq);
  CHECK(got.last_checkpoint_reason == want.last_checkpoint_reason);
  CHECK(got.last_checkpoint_timestamp == want.last_checkpoint_timestamp);
  CHECK(got.tail_records == want.tail_records);
  CHECK(got.bad_seq == want.bad_seq);
  CHECK(got.problem == want.problem);
}

// `text` fed to a ChainVerifier `piece` bytes at a time.
ChainVerification StreamInPieces(std::string_view text, size_t piece, bool reference_only = false,
                                 size_t max_line = std::numeric_limits<size_t>::max()) {
  ChainVerifier v(max_line);
  if (reference_only) {
    v.UseReferencePathOnlyForTesting();
  }
  for (size_t at = 0; at < text.size(); at += piece) {
    v.Feed(text.substr(at, piece));
  }
  return v.Finish();
}

// Every way of verifying `text` gives the old verdict.
void CheckStreamMatchesLegacy(const std::string& text) {
  const ChainVerification want = LegacyVerifyChainTextForStreamTest(text);
  {
    INFO("VerifyChainText");
    CheckSameVerification(VerifyChainText(text), want);
  }
  {
    INFO("reference path only");
    CheckSameVerification(StreamInPieces(text, text.size() + 1, true), want);
  }
  for (const size_t piece : {size_t{1}, size_t{2}, size_t{3}, size_t{7}, size_t{64}, size_t{701}}) {
    INFO("pieces of " << piece);
    CheckSameVerification(StreamInPieces(text, piece), want);
  }
}

std::string JoinStreamLines(const std::vector<std::string>& lines, std::string_view sep = "\n") {
  std::string out;
  for (const std::string& l : lines) {
    out += l;
    out += sep;
  }
  return out;
}

// Replaces the first `from` in `s` (which must hold it) with `to`.
std::string ReplaceOnceForStreamTest(std::string s, std::string_view from, std::string_view to) {
  const size_t at = s.find(from);
  REQUIRE(at != std::string::npos);
  s.replace(at, from.size(), to);
  return s;
}

// Events of every shape the recogniser treats differently.
std::vector<Json> StreamTestEvents() {
  std::vector<Json> events;
  events.push_back({{"event_id", "evt_1"},
                    {"timestamp", "2026-01-02T03:04:05Z"},
                    {"event", "grant.decided"},
                    {"human_principal", "alice@example.com"},
                    {"agent", {{"id", "agent-1"}, {"session_id", "ses_1"}, {"task_id", "T-1"}}},
                    {"request",
                     {{"tool", "github.contents"},
                      {"parameters",
                       {{"path", "src/caf\xc3\xa9.cc"},
                        {"n", -5},
                        {"zero", 0},
                        {"big", 123456789012345678},
                        {"flag", true},
                        {"off", false},
                        {"none", nullptr},
                        {"list", Json::array({1, "two", Json::array(), Json::object()})}}}}},
                    {"policy_decision",
                     {{"reason", "tier \"read\" on \\repo\n\t\x01 \x7f/ok"}, {"result", "allow"}}},
                    {"outcome", "allowed"}});
  // Nested "hash" keys, as checkpoint.other_chains has.
  events.push_back({{"event", "x"},
                    {"other", Json::array({{{"chain", "b"}, {"hash", "abc"}, {"seq", 3}}})},
                    {"agent", {{"hash", "h"}, {"seq", 9}}},
                    {"outcome", "ok"}});
  // Keys after "hash" only: "hash" is the first key of the record.
  events.push_back({{"outcome", "first"}, {"z", 1}});
  // Keys with escapes and floats: the reference path.
  events.push_back({{"we\"ird", 1}, {"outcome", "escaped key"}});
  events.push_back({{"ratio", 1.5}, {"outcome", "float"}});
  // Raw multi-byte UTF-8, 4-byte sequences, a 20-digit integer.
  events.push_back({{"name", "\xe5\x90\x8d\xe5\x89\x8d \xf0\x9f\x98\x80"},
                    {"huge", UINT64_MAX},
                    {"min", INT64_MIN},
                    {"outcome", "unicode"}});
  events.push_back({{"a", Json::object()}, {"b", Json::array()}, {"outcome", "empty"}});
  // An event whose "event" is not a string.
  events.push_back({{"event", 7}, {"outcome", "odd event"}});
  events.push_back({{"event", "grant.decided"}, {"outcome", "plain"}});
  return events;
}

std::vector<std::string> StreamTestChain() {
  std::vector<std::string> lines;
  std::optional<ChainHead> head;
  for (const Json& e : StreamTestEvents()) {
    AuditRecord rec = ChainRecord(head, e);
    head = ChainHead{rec.seq, rec.hash};
    lines.push_back(rec.text);
  }
  return lines;
}

// ---------------------------------------------------------------------------

TEST_CASE("AuditVerifyStream: sound chains verify as before, in pieces of any size") {
  const std::vector<std::string> lines = StreamTestChain();
  const std::string text = JoinStreamLines(lines);
  REQUIRE(LegacyVerifyChainTextForStreamTest(text).ok);
  REQUIRE(LegacyVerifyChainTextForStreamTest(text).records == static_cast<int64_t>(lines.size()));
  CheckStreamMatchesLegacy(text);
  CheckStreamMatchesLegacy(text.substr(0, text.size() - 1));  // no final '\n'
  CheckStreamMatchesLegacy(text + "\n");                      // a blank final line
  CheckStreamMatchesLegacy("");
  CheckStreamMatchesLegacy("\n");
  // Every split point of a two-record text (a line across the boundary).
  const std::string two = JoinStreamLines({lines[0], lines[1]});
  const ChainVerification want = LegacyVerifyChainTextForStreamTest(two);
  for (size_t cut = 0; cut <= two.size(); ++cut) {
    ChainVerifier v;
    v.Feed(std::string_view(two).substr(0, cut));
    v.Feed(std::string_view(two).substr(cut));
    CheckSameVerification(v.Finish(), want);
  }
}

TEST_CASE("AuditVerifyStream: every tampering gets the old verdict") {
  const std::vector<std::string> good = StreamTestChain();
  const std::string first = good[0];
  const Json first_body = Json::parse(first);
  const std::string first_hash = first_body["hash"].get<std::string>();

  // A forgery aimed at a verifier that finds "hash" by searching the text:
  // a nested "hash" member, before the top-level one, holds the hash of the
  // line without that nested member.
  std::string naive_forgery;
  {
    std::string tampered = ReplaceOnceForStreamTest(first, "\"allowed\"", "\"denied\"");
    const std::string nested = "\"agent\":{";
    const size_t at = tampered.find(nested);
    REQUIRE(at != std::string::npos);
    const std::string forged_hash = crypto::Sha256Hex(tampered);
    naive_forgery = tampered;
    naive_forgery.insert(at + nested.size(), "\"hash\":\"" + forged_hash + "\",");
  }

  struct Case {
    const char* name;
    std::function<std::string()> text;
  };
  const auto with = [&](size_t i, std::string line) {
    std::vector<std::string> l = good;
    l[i] = std::move(line);
    return JoinStreamLines(l);
  };
  const std::vector<Case> cases = {
      {"changed value",
       [&] { return with(0, ReplaceOnceForStreamTest(first, "alice", "mallory")); }},
      {"changed value, re-hashed",
       [&] {
         Json body = Json::parse(good[1]);
         body["outcome"] = "tampered";
         body["hash"] = ComputeRecordHash(body);
         return with(1, body.dump());
       }},
      {"removed line",
       [&] {
         std::vector<std::string> l = good;
         l.erase(l.begin() + 2);
         return JoinStreamLines(l);
       }},
      {"swapped lines",
       [&] {
         std::vector<std::string> l = good;
         std::swap(l[3], l[4]);
         return JoinStreamLines(l);
       }},
      {"duplicate key first",
       [&] { return with(0, "{\"outcome\":\"denied\"," + first.substr(1)); }},
      {"duplicate key last",
       [&] { return with(0, first.substr(0, first.size() - 1) + ",\"outcome\":\"denied\"}"); }},
      {"duplicate nested key",
       [&] { return with(0, ReplaceOnceForStreamTest(first, "\"id\":", "\"id\":\"x\",\"id\":")); }},
      {"reordered keys",
       [&] {
         nlohmann::ordered_json body = nlohmann::ordered_json::parse(first);
         const nlohmann::ordered_json agent = body["agent"];
         body.erase("agent");
         body["agent"] = agent;
         return with(0, body.dump());
       }},
      {"reordered nested keys",
       [&] {
         return with(0,
                     ReplaceOnceForStreamTest(first, "\"id\":\"agent-1\",\"session_id\":\"ses_1\"",
                                              "\"session_id\":\"ses_1\",\"id\":\"agent-1\""));
       }},
      {"added whitespace after a colon",
       [&] { return with(2, ReplaceOnceForStreamTest(good[2], "\":", "\": ")); }},
      {"leading whitespace", [&] { return with(0, " " + first); }},
      {"trailing whitespace", [&] { return with(1, good[1] + " "); }},
      {"nested hash holding the record's own hash",
       [&] {
         return with(0, ReplaceOnceForStreamTest(first, "\"agent\":{",
                                                 "\"agent\":{\"hash\":\"" + first_hash + "\","));
       }},
      {"nested hash forging a naive splice", [&] { return with(0, naive_forgery); }},
      {"hash first, tampered",
       [&] { return with(2, ReplaceOnceForStreamTest(good[2], "first", "frist")); }},
      {"hash first, removed",
       [&] {
         const size_t end = good[2].find(',');
         return with(2, "{" + good[2].substr(end + 1));
       }},
      {"invalid UTF-8",
       [&] { return with(0, ReplaceOnceForStreamTest(first, "alice", "al\xffice")); }},
      {"overlong UTF-8",
       [&] { return with(0, ReplaceOnceForStreamTest(first, "alice", "\xc0\xaf")); }},
      {"UTF-8 surrogate",
       [&] { return with(0, ReplaceOnceForStreamTest(first, "alice", "\xed\xa0\x80")); }},
      {"truncated UTF-8",
       [&] { return with(0, ReplaceOnceForStreamTest(first, "alice", "\xe2\x82")); }},
      {"raw control byte",
       [&] { return with(0, ReplaceOnceForStreamTest(first, "alice", "a\x01")); }},
      {"NUL byte",
       [&] { return with(0, ReplaceOnceForStreamTest(first, "alice", std::string("a\0b", 3))); }},
      {"escaped solidus", [&] { return with(0, ReplaceOnceForStreamTest(first, "/ok", "\\/ok")); }},
      {"unicode escape for a raw character",
       [&] { return with(0, ReplaceOnceForStreamTest(first, "caf\xc3\xa9", "caf\\u00e9")); }},
      {"upper-case unicode escape",
       [&] { return with(0, ReplaceOnceForStreamTest(first, "\\u0001", "\\u0001\\u001F")); }},
      {"long escape for a short one",
       [&] { return with(0, ReplaceOnceForStreamTest(first, "\\n", "\\u000a")); }},
      {"negative zero",
       [&] { return with(0, ReplaceOnceForStreamTest(first, "\"zero\":0", "\"zero\":-0")); }},
      {"float spelling",
       [&] { return with(0, ReplaceOnceForStreamTest(first, "\"zero\":0", "\"zero\":0.0")); }},
      {"exponent",
       [&] { return with(0, ReplaceOnceForStreamTest(first, "\"n\":-5", "\"n\":-5e0")); }},
      {"leading zero",
       [&] { return with(0, ReplaceOnceForStreamTest(first, "\"n\":-5", "\"n\":-05")); }},
      {"float seq",
       [&] { return with(0, ReplaceOnceForStreamTest(first, "\"seq\":1", "\"seq\":1.0")); }},
      {"string seq",
       [&] { return with(0, ReplaceOnceForStreamTest(first, "\"seq\":1", "\"seq\":\"1\"")); }},
      {"negative seq",
       [&] { return with(0, ReplaceOnceForStreamTest(first, "\"seq\":1", "\"seq\":-1")); }},
      {"huge seq",
       [&] {
         return with(0,
                     ReplaceOnceForStreamTest(first, "\"seq\":1", "\"seq\":18446744073709551615"));
       }},
      {"escaped prev_hash",
       [&] {
         return with(1,
                     ReplaceOnceForStreamTest(good[1], "\"prev_hash\":\"", "\"prev_hash\":\"\\n"));
       }},
      {"upper-case hash",
       [&] {
         std::string upper = first_hash;
         for (char& c : upper) {
           c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
         }
         return with(0, ReplaceOnceForStreamTest(first, first_hash, upper));
       }},
      {"byte order mark", [&] { return with(0, "\xef\xbb\xbf" + first); }},
      {"garbage after the object", [&] { return with(1, good[1] + "x"); }},
      {"an array line", [&] { return with(0, "[" + first + "]"); }},
      {"an empty object line", [&] { return with(0, "{}"); }},
      {"null line", [&] { return with(3, "null"); }},
      {"torn last line",
       [&] {
         std::string text = JoinStreamLines(good);
         text.resize(text.size() - 20);
         return text;
       }},
      {"torn inside an escape",
       [&] {
         const size_t at = first.find("\\u0001");
         return first.substr(0, at + 3);
       }},
      {"CRLF line endings", [&] { return JoinStreamLines(good, "\r\n"); }},
      {"CR on the last line only", [&] { return JoinStreamLines(good) + "\r"; }},
      {"blank line in the middle",
       [&] {
         std::vector<std::string> l = good;
         l.insert(l.begin() + 1, "");
         return JoinStreamLines(l);
       }},
      {"blank first line", [&] { return "\n" + JoinStreamLines(good); }},
      {"two blank final lines", [&] { return JoinStreamLines(good) + "\n\n"; }},
      {"a blank line then a torn one", [&] { return JoinStreamLines(good) + "\n{"; }},
      {"a file not starting at seq 1",
       [&] {
         std::vector<std::string> l = good;
         l.erase(l.begin());
         return JoinStreamLines(l);
       }},
      {"a duplicated line",
       [&] {
         std::vector<std::string> l = good;
         l.insert(l.begin() + 4, l[3]);
         return JoinStreamLines(l);
       }},
  };
  for (const Case& c : cases) {
    CAPTURE(c.name);
    const std::string text = c.text();
    CHECK_FALSE(LegacyVerifyChainTextForStreamTest(text).ok);
    CheckStreamMatchesLegacy(text);
  }
  // The forgery is refused where the hash is: in the record's own member.
  const ChainVerification forged = VerifyChainText(with(0, naive_forgery));
  CHECK(forged.problem == "hash mismatch");
  CHECK(forged.first_bad_line == 1);
}

TEST_CASE("AuditVerifyStream: a line over the limit is named, however it arrives") {
  const std::vector<std::string> good = StreamTestChain();
  const std::string text = JoinStreamLines(good);
  size_t longest = 0;
  for (const std::string& l : good) {
    longest = std::max(longest, l.size());
  }
  SUBCASE("at the limit: fine") {
    for (const size_t piece : {size_t{1}, size_t{5}, size_t{4096}}) {
      const ChainVerification v = StreamInPieces(text, piece, false, longest);
      CHECK(v.ok);
      CHECK(v.records == static_cast<int64_t>(good.size()));
    }
  }
  SUBCASE("one byte over the limit: the longest line fails, after the ones before") {
    size_t index = 0;
    while (good[index].size() != longest) {
      ++index;
    }
    const int64_t line = static_cast<int64_t>(index) + 1;
    for (const size_t piece : {size_t{1}, size_t{5}, size_t{100}, text.size()}) {
      CAPTURE(piece);
      const ChainVerification v = StreamInPieces(text, piece, false, longest - 1);
      CHECK_FALSE(v.ok);
      CHECK(v.records == line - 1);
      CHECK(v.first_bad_line == line);
      CHECK(v.first_bad_seq == line);
      CHECK(v.problem == "line longer than " + std::to_string(longest - 1) + " bytes");
    }
    // Without a final '\n' too.
    const ChainVerification v =
        StreamInPieces(text.substr(0, text.size() - 1), 3, false, longest - 1);
    CHECK(v.first_bad_line == line);
  }
  SUBCASE("an earlier failure wins") {
    std::vector<std::string> l = good;
    l[0] = ReplaceOnceForStreamTest(l[0], "alice", "mallory");
    const ChainVerification v = StreamInPieces(JoinStreamLines(l), 2, false, 10);
    CHECK(v.first_bad_line == 1);
    CHECK(v.problem == "line longer than 10 bytes");
  }
  SUBCASE("a blank line before a long one fails first") {
    const std::string blank_then_long = "\n" + std::string(100, 'x');
    for (const size_t piece : {size_t{1}, size_t{2}, size_t{200}}) {
      const ChainVerification v = StreamInPieces(blank_then_long, piece, false, 10);
      CHECK(v.first_bad_line == 1);
      CHECK(v.problem == "unparsable line");
    }
  }
  SUBCASE("bytes after the verdict are ignored") {
    ChainVerifier v(10);
    v.Feed(std::string(11, '{'));
    CHECK(v.Broken());
    v.Feed("\n" + text);
    const ChainVerification r = v.Finish();
    CHECK(r.first_bad_line == 1);
    CHECK(r.records == 0);
  }
}

TEST_CASE("AuditVerifyStream: the observer sees each accepted record once, in order") {
  const std::vector<std::string> good = StreamTestChain();
  for (const bool reference : {false, true}) {
    CAPTURE(reference);
    std::vector<VerifiedRecord> seen;
    std::vector<std::string> texts;
    std::vector<std::string> events;
    ChainVerifier v(kMaxAuditLineBytes, [&](const VerifiedRecord& r) {
      seen.push_back(r);
      texts.emplace_back(r.text);
      events.emplace_back(r.event);
    });
    if (reference) {
      v.UseReferencePathOnlyForTesting();
    }
    const std::string text = JoinStreamLines(good);
    for (size_t at = 0; at < text.size(); at += 3) {
      v.Feed(std::string_view(text).substr(at, 3));
    }
    REQUIRE(v.Finish().ok);
    REQUIRE(seen.size() == good.size());
    for (size_t i = 0; i < good.size(); ++i) {
      CHECK(seen[i].seq == static_cast<int64_t>(i) + 1);
      CHECK(seen[i].line == static_cast<int64_t>(i) + 1);
      CHECK(texts[i] == good[i]);
      const Json body = Json::parse(good[i]);
      CHECK(events[i] == (body.contains("event") && body["event"].is_string()
                              ? body["event"].get<std::string>()
                              : std::string()));
    }
    CHECK(v.LastHash() == Json::parse(good.back())["hash"].get<std::string>());
  }
}

TEST_CASE("AuditVerifyStream: the recogniser cuts the top-level hash member exactly") {
  for (const std::string& line : StreamTestChain()) {
    CAPTURE(line);
    const Json body = Json::parse(line);
    CanonicalRecord rec;
    const bool plain =
        !body.contains("we\"ird") && !body.contains("ratio") && !body.contains("huge");
    REQUIRE(RecogniseCanonicalRecord(line, rec) == plain);
    if (!plain) {
      continue;
    }
    CHECK(rec.seq == body["seq"].get<int64_t>());
    CHECK(rec.hash == body["hash"].get<std::string>());
    CHECK(rec.prev_hash == body["prev_hash"].get<std::string>());
    Json unhashed = body;
    unhashed.erase("hash");
    const std::string cut = line.substr(0, rec.cut_begin) + line.substr(rec.cut_end);
    CHECK(cut == unhashed.dump());
  }
}

TEST_CASE("AuditVerifyStream: the recogniser vouches only for nlohmann's own dump") {
  struct Case {
    std::string text;
    bool accepted;  // what the recogniser says (false may still be canonical)
  };
  std::string deep_ok;
  std::string deep_too;
  for (int i = 0; i < kMaxCanonicalDepth; ++i) {
    deep_ok = "[" + deep_ok + "]";
  }
  deep_too = "[" + deep_ok + "]";
  const std::vector<Case> cases = {
      {"0", true},
      {"-1", true},
      {"-0", false},
      {"01", false},
      {"1.5", false},  // canonical, but refused: floats take the reference path
      {"1e5", false},
      {"123456789012345678", true},
      {"1234567890123456789", false},  // canonical, but refused: 19 digits
      {"18446744073709551616", false},
      {"true", true},
      {"tru", false},
      {"null", true},
      {"nul", false},
      {"\"\"", true},
      {"\"a\\\"b\\\\c\\b\\f\\n\\r\\t\"", true},
      {"\"\\u0000\\u001f\\u000b\"", true},
      {"\"\\u0008\"", false},
      {"\"\\u001F\"", false},
      {"\"\\u0041\"", false},
      {"\"\\/\"", false},
      {"\"\\x\"", false},
      {"\"\\u00", false},
      {"\"\x7f\"", true},
      {"\"\xc3\xa9\"", true},
      {"\"\xc3\"", false},
      {"\"\xc0\xaf\"", false},
      {"\"\xe0\x80\xaf\"", false},
      {"\"\xed\xa0\x80\"", false},
      {"\"\xed\x9f\xbf\"", true},
      {"\"\xf0\x9f\x98\x80\"", true},
      {"\"\xf0\x8f\xbf\xbf\"", false},
      {"\"\xf4\x8f\xbf\xbf\"", true},
      {"\"\xf4\x90\x80\x80\"", false},
      {"\"\xf5\x80\x80\x80\"", false},
      {"\"\x80\"", false},
      {"\"\x1f\"", false},
      {"\"abc", false},
      {"{}", true},
      {"[]", true},
      {"[1,2]", true},
      {"[1, 2]", false},
      {"[1,]", false},
      {"[,1]", false},
      {"{\"a\":1,\"b\":2}", true},
      {"{\"b\":1,\"a\":2}", false},
      {"{\"a\":1,\"a\":2}", false},
      {"{\"a\":1,}", false},
      {"{\"a\" :1}", false},
      {"{\"\":1,\"a\":{}}", true},
      {"{\"B\":1,\"a\":2,\"\xc3\xa9\":3}", true},
      {"{\"\xc3\xa9\":1,\"z\":2}", false},
      {"{\"a\\n\":1}", false},  // canonical, but refused: keys with escapes
      {"{\"a\":1}x", false},
      {"{\"a\":1} ", false},
      {" {\"a\":1}", false},
      {"\xef\xbb\xbf{}", false},
      {deep_ok, true},
      {deep_too, false},
  };
  for (const Case& c : cases) {
    CAPTURE(c.text);
    const bool accepted = IsCanonicalJsonForTesting(c.text);
    CHECK(accepted == c.accepted);
    if (accepted) {
      const Json parsed = Json::parse(c.text, nullptr, /*allow_exceptions=*/false);
      REQUIRE_FALSE(parsed.is_discarded());
      CHECK(parsed.dump() == c.text);
    }
  }
}

// Random damage to a sound chain: the streaming verifier agrees with the old
// one on every result, and the recogniser never vouches for a line that
// nlohmann does not read back to the same bytes.
TEST_CASE("AuditVerifyStream: random mutations get the old verdict") {
  const std::vector<std::string> good = StreamTestChain();
  const std::string base = JoinStreamLines({good[0], good[1], good[2], good[5]});
  std::mt19937 rng(20260115);
  const std::string alphabet = "{}[]\":,\\ \n\r0123456789-.eEtfnu\x01\x7f\x80\xc3\xa9\xed\xf0\xff";
  const auto pick = [&](size_t n) { return std::uniform_int_distribution<size_t>(0, n - 1)(rng); };
  int vouched = 0;
  for (int round = 0; round < 1500; ++round) {
    std::string text = base;
    const size_t ops = 1 + pick(3);
    for (size_t k = 0; k < ops && !text.empty(); ++k) {
      const size_t at = pick(text.size());
      switch (pick(4)) {
        case 0:
          text[at] = alphabet[pick(alphabet.size())];
          break;
        case 1:
          text.erase(at, 1);
          break;
        case 2:
          text.insert(at, 1, alphabet[pick(alphabet.size())]);
          break;
        default: {
          const size_t len = 1 + pick(12);
          text.insert(pick(text.size()), text.substr(at, len));
          break;
        }
      }
    }
    CAPTURE(text);
    const ChainVerification want = LegacyVerifyChainTextForStreamTest(text);
    CheckSameVerification(VerifyChainText(text), want);
    CheckSameVerification(StreamInPieces(text, 1 + pick(97)), want);
    size_t pos = 0;
    while (pos < text.size()) {
      const size_t nl = std::min(text.find('\n', pos), text.size());
      const std::string line = text.substr(pos, nl - pos);
      pos = nl + 1;
      CanonicalRecord rec;
      if (IsCanonicalJsonForTesting(line) || RecogniseCanonicalRecord(line, rec)) {
        ++vouched;
        const Json parsed = Json::parse(line, nullptr, /*allow_exceptions=*/false);
        REQUIRE_FALSE(parsed.is_discarded());
        CHECK(parsed.dump() == line);
      }
    }
  }
  CHECK(vouched > 1000);  // the lines left intact, at least
}

// ---------------------------------------------------------------------------
// Checkpoints, in the same pass.

struct StreamCheckpointChain {
  std::shared_ptr<const crypto::SigningKey> key;
  std::vector<std::string> lines;
};

// 1-2, cp 3, 4-5, cp 6 (naming another chain), 7, shutdown cp 8; with
// `forged_at` a checkpoint at that position is signed by another key.
StreamCheckpointChain MakeStreamCheckpointChain(int forged_at = 0) {
  auto key = crypto::SigningKey::Generate(crypto::JwsAlg::kES256);
  REQUIRE(key.has_value());
  auto other = crypto::SigningKey::Generate(crypto::JwsAlg::kES256);
  REQUIRE(other.has_value());
  StreamCheckpointChain c;
  c.key = std::shared_ptr<const crypto::SigningKey>(std::move(*key));
  std::optional<ChainHead> head;
  int64_t since = 0;
  const TimePoint now = FromUnixSeconds(1'800'000'000);
  const auto add = [&](Json event) {
    AuditRecord rec = ChainRecord(head, std::move(event));
    head = ChainHead{rec.seq, rec.hash};
    c.lines.push_back(rec.text);
  };
  const auto checkpoint = [&](std::string_view reason, std::vector<AuditChainHead> others = {}) {
    const bool forged = head && head->seq + 1 == forged_at;
    auto cp = MakeCheckpointEvent(forged ? **other : *c.key, head, now, reason, since, others);
    REQUIRE(cp.has_value());
    if (forged) {
      (*cp)["checkpoint"]["kid"] = c.key->kid();
    }
    add(std::move(*cp));
    since = 0;
  };
  for (int i = 1; i <= 7; ++i) {
    if (i == 3) {
      checkpoint("records");
    } else if (i == 6) {
      checkpoint("records", {AuditChainHead{"replica-b", ChainHead{4, std::string(64, 'b')}}});
    } else {
      add({{"event", "test.event"}, {"n", i}, {"timestamp", "2027-01-15T08:00:00Z"}});
      ++since;
    }
  }
  checkpoint("shutdown");
  return c;
}

TEST_CASE("AuditVerifyStream: checkpoints are judged in the same pass, as before") {
  const StreamCheckpointChain sound = MakeStreamCheckpointChain();
  const StreamCheckpointChain forged = MakeStreamCheckpointChain(/*forged_at=*/6);
  auto keys_or = CheckpointKeys::FromJwks({{"keys", {sound.key->PublicJwk()}}});
  REQUIRE(keys_or.has_value());
  const CheckpointKeys keys = std::move(*keys_or);
  auto forged_keys_or = CheckpointKeys::FromJwks({{"keys", {forged.key->PublicJwk()}}});
  REQUIRE(forged_keys_or.has_value());
  const CheckpointKeys forged_keys = std::move(*forged_keys_or);
  const std::string head = Json::parse(sound.lines.back())["hash"].get<std::string>();

  struct Text {
    const char* name;
    std::string text;
    const CheckpointKeys* keys;
  };
  std::vector<std::string> broken_after_forgery = forged.lines;
  broken_after_forgery[6] = ReplaceOnceForStreamTest(broken_after_forgery[6], "\"n\":7", "\"n\":8");
  const std::vector<Text> texts = {
      {"sound", JoinStreamLines(sound.lines), &keys},
      {"cut after a checkpoint", JoinStreamLines({sound.lines.begin(), sound.lines.begin() + 6}),
       &keys},
      {"cut in the tail", JoinStreamLines({sound.lines.begin(), sound.lines.begin() + 5}), &keys},
      {"empty", "", &keys},
      {"forged checkpoint", JoinStreamLines(forged.lines), &forged_keys},
      {"forged checkpoint, then a broken chain", JoinStreamLines(broken_after_forgery),
       &forged_keys},
      {"wrong key", JoinStreamLines(sound.lines), &forged_keys},
      {"broken chain", JoinStreamLines(broken_after_forgery), &keys},
  };
  std::vector<AnchorOptions> variants;
  {
    AnchorOptions o;
    variants.push_back(o);  // no key
    o.require_shutdown = true;
    variants.push_back(o);  // needs a key
    o = AnchorOptions();
    o.expect_head = head;
    o.expect_seq = 8;
    variants.push_back(o);
    o = AnchorOptions();
    o.keys = &keys;  // replaced by the text's keys below
    variants.push_back(o);
    o.max_tail = 1;
    variants.push_back(o);
    o.require_shutdown = true;
    o.expect_head = head;
    o.expect_seq = 8;
    variants.push_back(o);
  }
  for (const Text& t : texts) {
    for (size_t vi = 0; vi < variants.size(); ++vi) {
      CAPTURE(t.name);
      CAPTURE(vi);
      AnchorOptions o = variants[vi];
      if (o.keys != nullptr) {
        o.keys = t.keys;
      }
      const AnchorReport want = LegacyVerifyAnchoredChainForStreamTest(t.text, o);
      CheckSameReport(VerifyAnchoredChain(t.text, o), want);
      for (const size_t piece : {size_t{1}, size_t{9}, size_t{500}}) {
        CAPTURE(piece);
        AnchoredChainVerifier v(o);
        for (size_t at = 0; at < t.text.size() && !v.Broken(); at += piece) {
          v.Feed(std::string_view(t.text).substr(at, piece));
        }
        CheckSameReport(v.Finish(), want);
      }
      AnchoredChainVerifier reference(o);
      reference.UseReferencePathOnlyForTesting();
      reference.Feed(t.text);
      CheckSameReport(reference.Finish(), want);
    }
  }
  // What the cases above pin down, spelled out.
  AnchorOptions o;
  o.keys = &forged_keys;
  const AnchorReport r = VerifyAnchoredChain(JoinStreamLines(forged.lines), o);
  CHECK(r.problem == "checkpoint signature invalid");
  CHECK(r.bad_seq == 6);
  CHECK(r.checkpoints == 1);
  CHECK(r.last_checkpoint_seq == 3);
  const AnchorReport b = VerifyAnchoredChain(JoinStreamLines(broken_after_forgery), o);
  CHECK(b.problem == "hash mismatch");
  CHECK(b.bad_seq == 7);
  CHECK(b.checkpoints == 0);
  CHECK(b.head_hash.empty());
}

TEST_CASE("AuditVerifyStream: a file is read in chunks, with the same report") {
  testing::TempDir dir("audit-verify-stream");
  const StreamCheckpointChain sound = MakeStreamCheckpointChain();
  auto keys = CheckpointKeys::FromJwks({{"keys", {sound.key->PublicJwk()}}});
  REQUIRE(keys.has_value());
  AnchorOptions o;
  o.keys = &*keys;
  o.require_shutdown = true;
  std::vector<std::string> tampered = sound.lines;
  tampered[4] = ReplaceOnceForStreamTest(tampered[4], "\"n\":", "\"n\": ");
  for (const std::string& text : {JoinStreamLines(sound.lines), JoinStreamLines(tampered),
                                  JoinStreamLines(sound.lines, "\r\n"), std::string(),
                                  std::string("\n"), JoinStreamLines(sound.lines) + "\n"}) {
    dir.Write("audit.jsonl", text);
    const AnchorReport want = LegacyVerifyAnchoredChainForStreamTest(text, o);
    for (const size_t chunk : {size_t{1}, size_t{7}, size_t{256}, kAuditReadChunkBytes}) {
      CAPTURE(chunk);
      Result<AnchorReport> got = VerifyAnchoredChainFile(dir.File("audit.jsonl"), o, chunk);
      REQUIRE(got.has_value());
      CheckSameReport(*got, want);
    }
  }
  SUBCASE("a line over the limit") {
    dir.Write("audit.jsonl", JoinStreamLines(sound.lines));
    AnchorOptions small = o;
    small.max_line_bytes = 64;
    Result<AnchorReport> got = VerifyAnchoredChainFile(dir.File("audit.jsonl"), small, 16);
    REQUIRE(got.has_value());
    CHECK_FALSE(got->ok);
    CHECK(got->chain.first_bad_line == 1);
    CHECK(got->bad_seq == 1);
    CHECK(got->problem == "line longer than 64 bytes");
  }
  SUBCASE("a file that cannot be read") {
    Result<AnchorReport> missing = VerifyAnchoredChainFile(dir.File("missing.jsonl"), o);
    REQUIRE_FALSE(missing.has_value());
    CHECK(missing.error().code == ErrorCode::kNotFound);
    Result<AnchorReport> directory = VerifyAnchoredChainFile(dir.path().string(), o);
    REQUIRE_FALSE(directory.has_value());
  }
}

TEST_CASE("AuditVerifyStream: jitctl audit verify --file streams, with --max-line-bytes") {
  testing::TempDir dir("audit-verify-stream-cli");
  const std::vector<std::string> good = StreamTestChain();
  dir.Write("audit.jsonl", JoinStreamLines(good));

  cli::AuditVerifyFileOptions options;
  options.path = dir.File("audit.jsonl");
  std::ostringstream out;
  std::ostringstream err;
  CHECK(cli::RunAuditVerifyFile(options, false, out, err) == 0);
  CHECK(out.str().starts_with("ok: " + std::to_string(good.size()) + " records"));

  options.max_line_bytes = 100;
  out.str("");
  CHECK(cli::RunAuditVerifyFile(options, false, out, err) == 1);
  CHECK(out.str() == "BROKEN at seq 1 (line 1): line longer than 100 bytes\n");

  out.str("");
  options.path = dir.File("missing.jsonl");
  CHECK(cli::RunAuditVerifyFile(options, false, out, err) == 1);
  CHECK(err.str().find("error: cannot read ") != std::string::npos);

  const auto parse = [](std::vector<std::string> argv, cli::AuditVerifyFileOptions* o) {
    cli::ParseResult r = cli::ParseCommandLine(argv);
    REQUIRE(r.has_value());
    return cli::ParseAuditVerifyFileOptions(r->args, o);
  };
  cli::AuditVerifyFileOptions parsed;
  CHECK(parse({"audit", "verify", "--file", "f"}, &parsed).empty());
  CHECK(parsed.max_line_bytes == kMaxAuditLineBytes);
  CHECK(parse({"audit", "verify", "--file", "f", "--max-line-bytes", "4096"}, &parsed).empty());
  CHECK(parsed.max_line_bytes == 4096);
  CHECK_FALSE(parse({"audit", "verify", "--file", "f", "--max-line-bytes", "0"}, &parsed).empty());
  CHECK_FALSE(parse({"audit", "verify", "--max-line-bytes", "4096"}, &parsed).empty());
}

}  // namespace
}  // namespace jitbroker::audit
