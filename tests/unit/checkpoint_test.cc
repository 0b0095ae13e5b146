// Signed audit checkpoints: the journal writes them, the offline verifier
// tells a cut or forged file from a complete one (issue #10, finding 8).
#include "broker/audit/checkpoint.h"

#include <doctest/doctest.h>
#include <stdlib.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <memory>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <vector>

#include "broker/audit/journal.h"
#include "broker/crypto/jose.h"
#include "broker/store/sqlite_store.h"
#include "jitbroker/audit.h"
#include "jitbroker/store.h"
#include "tests/fakes/fake_clock.h"
#include "tests/support/temp_dir.h"

namespace jitbroker::audit {
namespace {

using Json = nlohmann::json;

using testing::TempDir;

std::string ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream out;
  out << in.rdbuf();
  return out.str();
}

std::vector<std::string> Lines(const std::string& text) {
  std::vector<std::string> out;
  std::istringstream in(text);
  std::string line;
  while (std::getline(in, line)) {
    if (!line.empty()) {
      out.push_back(line);
    }
  }
  return out;
}

std::string Join(const std::vector<std::string>& lines, size_t n) {
  std::string out;
  for (size_t i = 0; i < n && i < lines.size(); ++i) {
    out += lines[i] + "\n";
  }
  return out;
}

WriteBatch Event(int i) {
  WriteBatch b;
  b.audit_events.push_back(
      {{"event", "test.event"}, {"n", i}, {"timestamp", "2026-11-22T10:00:00Z"}});
  return b;
}

std::shared_ptr<const crypto::SigningKey> NewKey(crypto::JwsAlg alg = crypto::JwsAlg::kES256) {
  auto key = crypto::SigningKey::Generate(alg);
  REQUIRE(key.has_value());
  return std::shared_ptr<const crypto::SigningKey>(std::move(*key));
}

CheckpointKeys KeysOf(const crypto::SigningKey& key) {
  auto keys = CheckpointKeys::FromJwks({{"keys", {key.PublicJwk()}}});
  REQUIRE(keys.has_value());
  return std::move(*keys);
}

struct Fixture {
  TempDir dir;
  testing::FakeClock clock;
  std::unique_ptr<Store> store;
  std::shared_ptr<const crypto::SigningKey> key = NewKey();
  std::string path = dir.File("audit.jsonl");

  Fixture() {
    store::SqliteOptions so;
    so.path = dir.File("broker.db");
    auto s = store::OpenSqliteStore(so);
    REQUIRE(s.has_value());
    store = std::move(*s);
  }

  std::unique_ptr<Journal> Open(int64_t every_records = 5, int64_t every_seconds = 60) {
    JournalOptions o;
    o.checkpoint.key = key;
    o.checkpoint.clock = &clock;
    o.checkpoint.every_records = every_records;
    o.checkpoint.every_seconds = every_seconds;
    o.checkpoint.poll = std::chrono::hours(1);  // the tests drive the clock
    auto j = Journal::Create(store.get(), path, std::move(o));
    REQUIRE_MESSAGE(j.has_value(), (j ? "" : j.error().ToString()));
    return std::move(*j);
  }

  std::vector<Json> Records() {
    std::vector<Json> out;
    for (const std::string& line : Lines(ReadFile(path))) {
      out.push_back(Json::parse(line));
    }
    return out;
  }
};

std::vector<int64_t> CheckpointSeqs(const std::vector<Json>& records) {
  std::vector<int64_t> out;
  for (const Json& r : records) {
    if (IsCheckpoint(r)) {
      out.push_back(r["seq"].get<int64_t>());
    }
  }
  return out;
}

TEST_CASE("Checkpoints: every N records, signed, chained, in the store and the file") {
  Fixture f;
  auto journal = f.Open(/*every_records=*/5);
  for (int i = 0; i < 12; ++i) {
    REQUIRE(journal->Commit(Event(i)));
  }
  // 5 records, then a checkpoint (seq 6); 5 more, checkpoint (seq 12); 2 left.
  std::vector<Json> records = f.Records();
  REQUIRE(records.size() == 14);
  CHECK(CheckpointSeqs(records) == std::vector<int64_t>{6, 12});
  const Json& cp = records[5];
  CHECK(cp["event"] == "audit.checkpoint");
  CHECK(cp["checkpoint"]["reason"] == "records");
  CHECK(cp["checkpoint"]["covers_seq"] == 5);
  CHECK(cp["checkpoint"]["records_since_checkpoint"] == 5);
  CHECK(cp["checkpoint"]["kid"] == f.key->kid());
  CHECK(cp["checkpoint"]["alg"] == "ES256");
  // The signature covers the checkpoint's seq and the hash before it.
  auto payload = crypto::VerifyJws(cp["checkpoint"]["jws"].get<std::string>(), *f.key->Public());
  REQUIRE(payload.has_value());
  CHECK((*payload)["seq"] == 6);
  CHECK((*payload)["prev_hash"] == records[4]["hash"]);
  CHECK((*payload)["timestamp"] == cp["timestamp"]);
  CHECK((*payload)["typ"] == "jitbroker.audit.checkpoint");

  auto head = f.store->AuditHead(kDefaultAuditChain);
  REQUIRE(head.has_value());
  REQUIRE(head->has_value());
  CHECK((*head)->seq == 14);

  const CheckpointKeys keys = KeysOf(*f.key);
  AnchorOptions ao;
  ao.keys = &keys;
  AnchorReport r = VerifyAnchoredChain(ReadFile(f.path), ao);
  CHECK(r.ok);
  CHECK(r.checkpoints == 2);
  CHECK(r.last_checkpoint_seq == 12);
  CHECK(r.tail_records == 2);
  CHECK(r.head_hash == (*head)->hash);

  // Not stopped yet: no shutdown checkpoint.
  ao.require_shutdown = true;
  CHECK_FALSE(VerifyAnchoredChain(ReadFile(f.path), ao).ok);

  journal->Stop();
  records = f.Records();
  REQUIRE(records.size() == 15);
  CHECK(records.back()["checkpoint"]["reason"] == "shutdown");
  CHECK(records.back()["checkpoint"]["records_since_checkpoint"] == 2);
  r = VerifyAnchoredChain(ReadFile(f.path), ao);
  CHECK_MESSAGE(r.ok, r.problem);
  CHECK(r.tail_records == 0);
  CHECK(r.last_checkpoint_reason == "shutdown");
}

TEST_CASE("Checkpoints: within every_seconds of a record, by the clock") {
  Fixture f;
  auto journal = f.Open(/*every_records=*/1000, /*every_seconds=*/60);
  REQUIRE(journal->Commit(Event(1)));
  REQUIRE(journal->CheckpointIfDue());
  CHECK(CheckpointSeqs(f.Records()).empty());  // not due yet

  f.clock.Advance(std::chrono::seconds(59));
  REQUIRE(journal->CheckpointIfDue());
  CHECK(CheckpointSeqs(f.Records()).empty());

  f.clock.Advance(std::chrono::seconds(1));
  REQUIRE(journal->CheckpointIfDue());  // what the idle committer does by itself
  std::vector<Json> records = f.Records();
  REQUIRE(records.size() == 2);
  CHECK(records[1]["checkpoint"]["reason"] == "interval");

  // Nothing new to cover: no further checkpoint, however long it is quiet.
  f.clock.Advance(std::chrono::hours(1));
  REQUIRE(journal->CheckpointIfDue());
  CHECK(f.Records().size() == 2);

  // A busy journal checkpoints in the commit that finds the interval over.
  REQUIRE(journal->Commit(Event(2)));
  f.clock.Advance(std::chrono::seconds(61));
  REQUIRE(journal->Commit(Event(3)));
  records = f.Records();
  REQUIRE(records.size() == 5);
  CHECK(records[4]["checkpoint"]["reason"] == "interval");
  CHECK(records[4]["checkpoint"]["records_since_checkpoint"] == 2);
}

TEST_CASE(
    "Checkpoints: an unclean stop is anchored at the next start, a clean one is not doubled") {
  Fixture f;
  {
    // An earlier run without checkpoints (or one killed before its shutdown).
    auto plain = Journal::Create(f.store.get(), f.path);
    REQUIRE(plain.has_value());
    REQUIRE((*plain)->Commit(Event(1)));
    REQUIRE((*plain)->Commit(Event(2)));
  }
  {
    auto journal = f.Open();
    std::vector<Json> records = f.Records();
    REQUIRE(records.size() == 3);
    CHECK(records[2]["checkpoint"]["reason"] == "startup");
    CHECK(records[2]["checkpoint"]["records_since_checkpoint"] == 2);
  }  // destroyed: Stop() writes the shutdown checkpoint
  REQUIRE(f.Records().size() == 4);
  CHECK(f.Records().back()["checkpoint"]["reason"] == "shutdown");
  {
    auto journal = f.Open();  // clean stop before: no startup checkpoint
    CHECK(f.Records().size() == 4);
  }  // and nothing new since the last shutdown checkpoint: none added
  CHECK(f.Records().size() == 4);

  const CheckpointKeys keys = KeysOf(*f.key);
  AnchorOptions ao;
  ao.keys = &keys;
  ao.require_shutdown = true;
  CHECK(VerifyAnchoredChain(ReadFile(f.path), ao).ok);
}

TEST_CASE("Checkpoints: a cut file is detected, a complete one passes") {
  Fixture f;
  {
    auto journal = f.Open(/*every_records=*/4);
    for (int i = 0; i < 10; ++i) {
      REQUIRE(journal->Commit(Event(i)));
    }
  }
  // 1-4, cp 5, 6-9, cp 10, 11-12, shutdown cp 13.
  const std::string full = ReadFile(f.path);
  const std::vector<std::string> lines = Lines(full);
  REQUIRE(lines.size() == 13);
  const Json head = Json::parse(lines.back());
  const CheckpointKeys keys = KeysOf(*f.key);

  AnchorOptions strict;
  strict.keys = &keys;
  strict.max_tail = 4;
  strict.require_shutdown = true;
  strict.expect_head = head["hash"].get<std::string>();
  strict.expect_seq = 13;
  AnchorReport complete = VerifyAnchoredChain(full, strict);
  CHECK_MESSAGE(complete.ok, complete.problem);
  CHECK(complete.checkpoints == 3);

  // Every cut fails the strict check, though its chain verifies.
  for (size_t n = 1; n < lines.size(); ++n) {
    CAPTURE(n);
    const std::string cut = Join(lines, n);
    CHECK(VerifyChainText(cut).ok);
    CHECK_FALSE(VerifyAnchoredChain(cut, strict).ok);
  }

  SUBCASE("a cut just after a checkpoint passes the tail bound: the residual limit") {
    AnchorOptions tail_only;
    tail_only.keys = &keys;
    tail_only.max_tail = 4;
    CHECK(VerifyAnchoredChain(Join(lines, 10), tail_only).ok);  // ends at cp 10
    AnchorOptions shutdown = tail_only;
    shutdown.require_shutdown = true;
    AnchorReport r = VerifyAnchoredChain(Join(lines, 10), shutdown);
    CHECK_FALSE(r.ok);
    CHECK(r.problem.find("shutdown checkpoint") != std::string::npos);
    AnchorOptions pinned;
    pinned.expect_head = head["hash"].get<std::string>();
    r = VerifyAnchoredChain(Join(lines, 10), pinned);  // no key needed to pin
    CHECK_FALSE(r.ok);
    CHECK(r.problem.find("expected head") != std::string::npos);
  }
  SUBCASE("a tail longer than the interval") {
    AnchorOptions tail_only;
    tail_only.keys = &keys;
    tail_only.max_tail = 1;
    AnchorReport r = VerifyAnchoredChain(Join(lines, 12), tail_only);  // 11, 12 after cp 10
    CHECK_FALSE(r.ok);
    CHECK(r.tail_records == 2);
    CHECK(r.bad_seq == 11);
  }
  SUBCASE("expect-seq") {
    AnchorOptions seq_only;
    seq_only.expect_seq = 13;
    CHECK(VerifyAnchoredChain(full, seq_only).ok);
    CHECK_FALSE(VerifyAnchoredChain(Join(lines, 12), seq_only).ok);
  }
  SUBCASE("checkpoint requirements without a key are refused") {
    AnchorOptions no_key;
    no_key.require_shutdown = true;
    CHECK_FALSE(VerifyAnchoredChain(full, no_key).ok);
  }
}

TEST_CASE("Checkpoints: forged, replayed and altered checkpoints are detected") {
  Fixture f;
  {
    auto journal = f.Open(/*every_records=*/3);
    for (int i = 0; i < 7; ++i) {
      REQUIRE(journal->Commit(Event(i)));
    }
  }
  // 1-3, cp 4, 5-7, cp 8, 9, shutdown cp 10.
  const std::vector<std::string> lines = Lines(ReadFile(f.path));
  REQUIRE(lines.size() == 10);
  const CheckpointKeys keys = KeysOf(*f.key);
  AnchorOptions ao;
  ao.keys = &keys;
  ao.require_shutdown = true;

  // The attacker cuts after record 6 and appends a well-chained "shutdown"
  // checkpoint after it.
  const Json last_kept = Json::parse(lines[5]);
  const std::optional<ChainHead> at{ChainHead{6, last_kept["hash"].get<std::string>()}};
  auto append = [&](Json event) {
    AuditRecord rec = ChainRecord(at, std::move(event));
    const std::string text = Join(lines, 6) + rec.text + "\n";
    REQUIRE(VerifyChainText(text).ok);  // the chain alone cannot tell
    return VerifyAnchoredChain(text, ao);
  };

  SUBCASE("signed with another key under the real kid") {
    auto other = NewKey();
    auto forged = MakeCheckpointEvent(*other, at, f.clock.Now(), "shutdown", 2);
    REQUIRE(forged.has_value());
    (*forged)["checkpoint"]["kid"] = f.key->kid();
    AnchorReport r = append(*forged);
    CHECK_FALSE(r.ok);
    CHECK(r.problem == "checkpoint signature invalid");
    CHECK(r.bad_seq == 7);
  }
  SUBCASE("signed with an unknown key") {
    auto other = NewKey(crypto::JwsAlg::kEd25519);
    auto forged = MakeCheckpointEvent(*other, at, f.clock.Now(), "shutdown", 2);
    REQUIRE(forged.has_value());
    AnchorReport r = append(*forged);
    CHECK_FALSE(r.ok);
    CHECK(r.problem == "checkpoint key unknown");
  }
  SUBCASE("a genuine signature copied from the real shutdown checkpoint") {
    Json copied = Json::parse(lines[9]);
    copied.erase("seq");
    copied.erase("prev_hash");
    copied.erase("hash");
    AnchorReport r = append(copied);
    CHECK_FALSE(r.ok);
    CHECK(r.problem == "checkpoint does not match its record");
  }
  SUBCASE("a genuine interval checkpoint relabelled as shutdown") {
    auto real = MakeCheckpointEvent(*f.key, at, f.clock.Now(), "records", 2);
    REQUIRE(real.has_value());
    (*real)["checkpoint"]["reason"] = "shutdown";
    AnchorReport r = append(*real);
    CHECK_FALSE(r.ok);
    CHECK(r.problem == "checkpoint does not match its record");
  }
  SUBCASE("without its signature") {
    auto real = MakeCheckpointEvent(*f.key, at, f.clock.Now(), "shutdown", 2);
    REQUIRE(real.has_value());
    (*real)["checkpoint"].erase("jws");
    CHECK_FALSE(append(*real).ok);
  }
  SUBCASE("control: the broker's own key passes") {
    auto real = MakeCheckpointEvent(*f.key, at, f.clock.Now(), "shutdown", 2);
    REQUIRE(real.has_value());
    CHECK(append(*real).ok);
  }
}

TEST_CASE("Checkpoints: keys load from a JWKS or a PEM public key") {
  auto es = NewKey();
  auto ed = NewKey(crypto::JwsAlg::kEd25519);
  auto jwks = CheckpointKeys::FromJwks({{"keys", {es->PublicJwk(), ed->PublicJwk()}}});
  REQUIRE(jwks.has_value());
  CHECK(jwks->by_kid.size() == 2);
  CHECK_FALSE(CheckpointKeys::FromJwks(Json::object()).has_value());
  CHECK_FALSE(CheckpointKeys::FromJwks({{"keys", Json::array()}}).has_value());
  CHECK_FALSE(CheckpointKeys::FromPem("not a key").has_value());

  const std::optional<ChainHead> head{ChainHead{3, std::string(64, 'a')}};
  for (const auto* key : {es.get(), ed.get()}) {
    auto event = MakeCheckpointEvent(*key, head, FromUnixSeconds(1795000000), "interval", 3);
    REQUIRE(event.has_value());
    const AuditRecord rec = ChainRecord(head, *event);
    CHECK(CheckCheckpoint(rec.body, *jwks).empty());
  }
}

}  // namespace
}  // namespace jitbroker::audit
