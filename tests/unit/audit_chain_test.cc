#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include <doctest/doctest.h>
#include <nlohmann/json.hpp>

#include "broker/crypto/crypto.h"
#include "jitbroker/audit.h"

namespace jitbroker {
namespace {

using Json = nlohmann::json;

Json Event(int i) {
  return Json{{"event_id", "evt_" + std::to_string(i)},
              {"timestamp", "2026-01-02T03:04:05Z"},
              {"event", "grant.decided"},
              {"human_principal", "alice"},
              {"agent", {{"id", "agent-1"}, {"session_id", "ses_1"}, {"task_id", "T-1"}}},
              {"outcome", "allowed"}};
}

std::vector<AuditRecord> Chain(int n) {
  std::vector<AuditRecord> out;
  std::optional<ChainHead> head;
  for (int i = 1; i <= n; ++i) {
    AuditRecord rec = ChainRecord(head, Event(i));
    head = ChainHead{rec.seq, rec.hash};
    out.push_back(std::move(rec));
  }
  return out;
}

std::vector<std::string> Lines(const std::vector<AuditRecord>& recs) {
  std::vector<std::string> out;
  for (const AuditRecord& r : recs) {
    out.push_back(r.body.dump());
  }
  return out;
}

std::string Join(const std::vector<std::string>& lines) {
  std::string out;
  for (const std::string& l : lines) {
    out += l;
    out += '\n';
  }
  return out;
}

TEST_CASE("AuditChain: ChainRecord fills seq, prev_hash and hash as documented") {
  const AuditRecord first = ChainRecord(std::nullopt, Event(1));
  CHECK(first.seq == 1);
  CHECK(first.prev_hash.empty());
  CHECK(first.body["seq"] == 1);
  CHECK(first.body["prev_hash"] == "");
  CHECK(first.body["hash"] == first.hash);

  // hash = SHA-256 hex of dump() of the body with seq/prev_hash and no hash.
  Json expected = Event(1);
  expected["seq"] = 1;
  expected["prev_hash"] = "";
  CHECK(first.hash == crypto::Sha256Hex(expected.dump()));
  CHECK(first.hash.size() == 64);
  CHECK(ComputeRecordHash(first.body) == first.hash);

  const AuditRecord second = ChainRecord(ChainHead{first.seq, first.hash}, Event(2));
  CHECK(second.seq == 2);
  CHECK(second.prev_hash == first.hash);
  CHECK(second.body["prev_hash"] == first.hash);
  CHECK(ComputeRecordHash(second.body) == second.hash);
}

TEST_CASE("AuditChain: a stale hash field in the event is replaced") {
  Json event = Event(1);
  event["hash"] = "forged";
  event["seq"] = 99;
  const AuditRecord rec = ChainRecord(std::nullopt, event);
  CHECK(rec.seq == 1);
  CHECK(rec.body["seq"] == 1);
  CHECK(rec.body["hash"] == rec.hash);
  CHECK(rec.hash != "forged");
}

TEST_CASE("AuditChain: invalid UTF-8 in a body is canonicalised, not thrown") {
  Json event = Event(1);
  event["request"] = {{"resource", std::string("repo\xff\xfe")}};
  const AuditRecord rec = ChainRecord(std::nullopt, event);
  std::string line;
  CHECK_NOTHROW(line = rec.body.dump());
  CHECK(ComputeRecordHash(rec.body) == rec.hash);
  const ChainVerification v = VerifyChainText(line + "\n");
  CHECK(v.ok);
}

TEST_CASE("AuditChain: ChainRecord's text is the canonical dump of the full record") {
  struct Case {
    const char* name;
    Json event;
  };
  Json with_bad_utf8 = Event(1);
  with_bad_utf8["request"] = {{"resource", std::string("repo\xff\xfe")}};
  Json bad_key = Event(1);
  bad_key[std::string("k\xc3")] = 1;
  const std::vector<Case> cases = {
      {"typical event", Event(7)},
      {"keys only after hash", Json{{"z", 1}, {"seq", 5}}},
      {"keys only before hash", Json{{"a", 1}, {"B", "x"}, {"_", nullptr}}},
      {"keys around hash", Json{{"has", 1}, {"hash0", 2}, {"hasi", 3}, {"hasg", 4}}},
      {"empty object", Json::object()},
      {"not an object", Json::array({1, "two"})},
      {"escaped and unicode keys", Json{{"q\"uote", 1},
                                        {"back\\slash", 2},
                                        {"nl\n", 3},
                                        {"\x7f", 4},
                                        {"caf\xc3\xa9", "\xe2\x82\xac"},
                                        {"\x01", {{"x", true}}}}},
      {"nested hash key stays", Json{{"inner", {{"hash", "h"}, {"seq", 1}}}}},
      {"stale hash replaced", Json{{"hash", "forged"}, {"a", 1}}},
      {"invalid UTF-8 value", with_bad_utf8},
      {"invalid UTF-8 key", bad_key},
      {"large integers", Json{{"big", INT64_MAX}, {"neg", INT64_MIN}, {"u", UINT64_MAX}}},
  };
  for (const std::optional<ChainHead>& head :
       {std::optional<ChainHead>(),
        std::optional<ChainHead>(ChainHead{41, std::string(64, 'a')})}) {
    for (const Case& c : cases) {
      CAPTURE(c.name);
      const AuditRecord rec = ChainRecord(head, c.event);
      std::string full;
      REQUIRE_NOTHROW(full = rec.body.dump());
      CHECK(rec.text == full);
      Json unhashed = rec.body;
      unhashed.erase("hash");
      CHECK(rec.hash == crypto::Sha256Hex(unhashed.dump()));
      CHECK(ComputeRecordHash(rec.body) == rec.hash);
      CHECK(Json::parse(rec.text) == rec.body);
      CHECK(VerifyChainText(rec.text + "\n").ok == !head.has_value());
    }
  }
}

TEST_CASE("AuditChain: VerifyChainText accepts a valid chain") {
  const std::vector<std::string> lines = Lines(Chain(5));
  SUBCASE("with trailing newline") {
    const ChainVerification v = VerifyChainText(Join(lines));
    CHECK(v.ok);
    CHECK(v.records == 5);
    CHECK(v.first_bad_seq == 0);
    CHECK(v.first_bad_line == 0);
  }
  SUBCASE("without trailing newline") {
    std::string text = Join(lines);
    text.pop_back();
    CHECK(VerifyChainText(text).ok);
  }
  SUBCASE("with a blank final line") {
    const ChainVerification v = VerifyChainText(Join(lines) + "\n");
    CHECK(v.ok);
    CHECK(v.records == 5);
  }
  SUBCASE("empty text") {
    const ChainVerification v = VerifyChainText("");
    CHECK(v.ok);
    CHECK(v.records == 0);
  }
}

TEST_CASE("AuditChain: VerifyChainText names the first bad record") {
  const std::vector<std::string> good = Lines(Chain(6));

  struct Case {
    const char* name;
    std::function<std::string()> text;
    int64_t seq;
    int64_t line;
    const char* problem;
  };
  const std::vector<Case> cases = {
      {"tampered field in the middle",
       [&] {
         std::vector<std::string> l = good;
         Json body = Json::parse(l[2]);
         body["outcome"] = "denied";
         l[2] = body.dump();
         return Join(l);
       },
       3, 3, "hash mismatch"},
      {"tampered and re-hashed record breaks the next link",
       [&] {
         std::vector<std::string> l = good;
         Json body = Json::parse(l[2]);
         body["outcome"] = "denied";
         body["hash"] = ComputeRecordHash(body);
         l[2] = body.dump();
         return Join(l);
       },
       4, 4, "prev_hash mismatch"},
      {"deleted line",
       [&] {
         std::vector<std::string> l = good;
         l.erase(l.begin() + 3);
         return Join(l);
       },
       5, 4, "seq gap"},
      {"deleted line with renumbered seqs",
       [&] {
         std::vector<std::string> l = good;
         l.erase(l.begin() + 3);
         for (size_t i = 3; i < l.size(); ++i) {
           Json body = Json::parse(l[i]);
           body["seq"] = static_cast<int64_t>(i + 1);
           l[i] = body.dump();
         }
         return Join(l);
       },
       4, 4, "prev_hash mismatch"},
      {"reordered lines",
       [&] {
         std::vector<std::string> l = good;
         std::swap(l[1], l[2]);
         return Join(l);
       },
       3, 2, "seq gap"},
      {"torn last line",
       [&] {
         std::vector<std::string> l = good;
         l.back() = l.back().substr(0, l.back().size() / 2);
         std::string text = Join(l);
         text.pop_back();
         return text;
       },
       6, 6, "unparsable line"},
      {"blank line in the middle",
       [&] {
         std::vector<std::string> l = good;
         l.insert(l.begin() + 2, "");
         return Join(l);
       },
       3, 3, "unparsable line"},
      {"file not starting at seq 1",
       [&] {
         std::vector<std::string> l = good;
         l.erase(l.begin());
         return Join(l);
       },
       2, 1, "seq gap"},
      {"record without hash",
       [&] {
         std::vector<std::string> l = good;
         Json body = Json::parse(l[1]);
         body.erase("hash");
         l[1] = body.dump();
         return Join(l);
       },
       2, 2, "unparsable line"},
      {"non-canonical whitespace",
       [&] {
         std::vector<std::string> l = good;
         l[4] = Json::parse(l[4]).dump(1);
         // dump(1) spans lines; keep it on one line but with spaces.
         for (char& c : l[4]) {
           if (c == '\n') {
             c = ' ';
           }
         }
         return Join(l);
       },
       5, 5, "non-canonical line"},
      {"duplicate key smuggled in",
       [&] {
         std::vector<std::string> l = good;
         l[1].insert(1, "\"outcome\":\"denied\",");
         return Join(l);
       },
       2, 2, "non-canonical line"},
  };
  for (const Case& c : cases) {
    CAPTURE(c.name);
    const ChainVerification v = VerifyChainText(c.text());
    CHECK_FALSE(v.ok);
    CHECK(v.first_bad_seq == c.seq);
    CHECK(v.first_bad_line == c.line);
    CHECK(v.problem == c.problem);
  }
}

}  // namespace
}  // namespace jitbroker
