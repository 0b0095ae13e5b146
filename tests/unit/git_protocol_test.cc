// The proxy's reading and writing of git's smart HTTP protocol
// (broker/proxy/git_protocol.h), against byte strings as git itself writes
// them (gitprotocol-pack.txt, gitprotocol-http.txt).
#include "broker/proxy/git_protocol.h"

#include <zlib.h>

#include <string>

#include <doctest/doctest.h>

namespace jitbroker::proxy::git {
namespace {

const std::string kA(40, 'a');
const std::string kB(40, 'b');
const std::string kZero(40, '0');

std::string Nul() { return std::string(1, '\0'); }

std::string Gzip(const std::string& in) {
  z_stream z{};
  REQUIRE(deflateInit2(&z, Z_DEFAULT_COMPRESSION, Z_DEFLATED, 16 + MAX_WBITS, 8,
                       Z_DEFAULT_STRATEGY) == Z_OK);
  std::string out(compressBound(static_cast<uLong>(in.size())) + 64, '\0');
  z.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(in.data()));
  z.avail_in = static_cast<uInt>(in.size());
  z.next_out = reinterpret_cast<Bytef*>(out.data());
  z.avail_out = static_cast<uInt>(out.size());
  REQUIRE(deflate(&z, Z_FINISH) == Z_STREAM_END);
  out.resize(z.total_out);
  deflateEnd(&z);
  return out;
}

TEST_CASE("git protocol: pkt-lines carry their own length in four hex digits") {
  CHECK(PktLine("a\n") == "0006a\n");
  CHECK(PktLine("") == "0004");
  CHECK(PktLine(std::string(0x100 - 4, 'x')).substr(0, 4) == "0100");
}

TEST_CASE("git protocol: ref names as git accepts them for a push") {
  CHECK(IsValidRefName("refs/heads/main"));
  CHECK(IsValidRefName("refs/heads/fix/checkout-timeout"));
  CHECK(IsValidRefName("refs/tags/v1.2.3"));
  for (const char* bad : {"main", "refs/heads/", "refs/heads/a..b", "refs/heads/a b",
                          "refs/heads/.hidden", "refs/heads/x.lock", "refs/heads/a@{1}",
                          "refs/heads//x", "refs/heads/a:b", "refs/heads/a\x01"}) {
    CHECK_MESSAGE(!IsValidRefName(bad), bad);
  }
}

TEST_CASE("git protocol: push commands are read before the pack, capabilities from the first") {
  const std::string body = PktLine(kA + " " + kB + " refs/heads/main" + Nul() +
                                   " report-status side-band-64k agent=git/2.39.5\n") +
                           PktLine(kZero + " " + kB + " refs/heads/fix/x\n") +
                           PktLine(kA + " " + kZero + " refs/tags/v1\n") + "0000" + "PACK....";
  auto parsed = ParsePushCommands(body, 10);
  REQUIRE(parsed.has_value());
  REQUIRE(parsed->has_value());
  const PushCommands& c = **parsed;
  REQUIRE(c.updates.size() == 3);
  CHECK(c.updates[0].ref == "refs/heads/main");
  CHECK(!c.updates[0].create());
  CHECK(c.updates[1].create());
  CHECK(c.updates[2].remove());
  CHECK(c.HasCapability("report-status"));
  CHECK(c.HasCapability("side-band-64k"));
  CHECK(c.HasCapability("agent"));
  CHECK(!c.HasCapability("atomic"));
  CHECK(body.substr(c.length) == "PACK....");

  // Any prefix short of the flush asks for more bytes.
  for (size_t n = 0; n < c.length; n += 7) {
    auto partial = ParsePushCommands(body.substr(0, n), 10);
    REQUIRE(partial.has_value());
    CHECK(!partial->has_value());
  }
}

TEST_CASE("git protocol: malformed or unsupported pushes are refused") {
  auto refused = [](const std::string& body, size_t max = 10) {
    auto r = ParsePushCommands(body, max);
    return !r.has_value() && r.error().Reason() == "invalid_git_request";
  };
  CHECK(refused("zzzz"));                                             // not a length
  CHECK(refused(PktLine("push-cert" + Nul() + "report-status\n")));   // signed push
  CHECK(refused(PktLine(kA + " " + kB + "\n") + "0000"));             // no ref
  CHECK(refused(PktLine(kA + " " + kB + " main\n") + "0000"));        // not refs/…
  CHECK(refused(PktLine("xyz " + kB + " refs/heads/a\n") + "0000"));  // bad id
  CHECK(refused(PktLine(kZero + " " + kZero + " refs/heads/a\n") + "0000"));
  CHECK(refused(PktLine(kA + " " + kB + " refs/heads/a\n") +
                PktLine(kA + " " + kB + " refs/heads/a\n") + "0000"));  // twice
  CHECK(refused(PktLine(kA + " " + kB + " refs/heads/a\n") +
                    PktLine(kA + " " + kB + " refs/heads/b\n") + "0000",
                1));  // more than allowed
  // git's probe before a large push: no commands, nothing to decide.
  auto probe = ParsePushCommands("0000", 10);
  REQUIRE(probe.has_value());
  REQUIRE(probe->has_value());
  CHECK((*probe)->updates.empty());
  CHECK((*probe)->length == 4);
  // A shallow line may come first.
  auto ok = ParsePushCommands(
      PktLine("shallow " + kA + "\n") +
          PktLine(kA + " " + kB + " refs/heads/a" + Nul() + "report-status\n") + "0000",
      10);
  REQUIRE(ok.has_value());
  CHECK(ok->has_value());
}

TEST_CASE("git protocol: the upload-pack advertisement gives refs, HEAD and the format") {
  const std::string adv = PktLine("# service=git-upload-pack\n") + "0000" +
                          PktLine(kA + " HEAD" + Nul() +
                                  "multi_ack symref=HEAD:refs/heads/main object-format=sha1 "
                                  "agent=git/2.39\n") +
                          PktLine(kA + " refs/heads/main\n") + PktLine(kB + " refs/tags/v1\n") +
                          PktLine(kA + " refs/tags/v1^{}\n") + "0000";
  auto parsed = ParseUploadPackAdvertisement(adv);
  REQUIRE(parsed.has_value());
  CHECK(parsed->head_target == std::optional<std::string>("refs/heads/main"));
  REQUIRE(parsed->refs.size() == 2);
  CHECK(parsed->refs[0].first == "refs/heads/main");
  CHECK(parsed->refs[1].first == "refs/tags/v1");

  const std::string receive = ReceivePackAdvertisement(*parsed);
  CHECK(receive.starts_with(PktLine("# service=git-receive-pack\n") + "0000"));
  CHECK(receive.find(kA + " refs/heads/main" + Nul() + "report-status") != std::string::npos);
  CHECK(receive.find("object-format=sha1") != std::string::npos);
  CHECK(receive.find("^{}") == std::string::npos);
  CHECK(receive.find("HEAD") == std::string::npos);
  CHECK(receive.ends_with("0000"));

  // An empty repository advertises only capabilities.
  auto empty = ParseUploadPackAdvertisement(
      PktLine("# service=git-upload-pack\n") + "0000" +
      PktLine(kZero + " capabilities^{}" + Nul() + "agent=git/2.39\n") + "0000");
  REQUIRE(empty.has_value());
  CHECK(empty->refs.empty());
  CHECK(ReceivePackAdvertisement(*empty).find(kZero + " capabilities^{}") != std::string::npos);

  for (const std::string& bad :
       {std::string("garbage"), PktLine("# service=git-receive-pack\n") + "0000" + "0000",
        PktLine("# service=git-upload-pack\n") + "0000" + PktLine("version 2\n") + "0000",
        PktLine("# service=git-upload-pack\n") + "0000" + PktLine(kA + " refs/heads/main\n")}) {
    auto r = ParseUploadPackAdvertisement(bad);
    CHECK(!r.has_value());
    if (!r) {
      CHECK(r.error().Reason() == "invalid_git_answer");
    }
  }
}

TEST_CASE("git protocol: a refusal is git's report-status, in side-band when asked for") {
  auto cmds =
      ParsePushCommands(PktLine(kA + " " + kB + " refs/heads/main" + Nul() + "report-status\n") +
                            PktLine(kA + " " + kB + " refs/heads/dev\n") + "0000",
                        10);
  REQUIRE(cmds.has_value());
  REQUIRE(cmds->has_value());
  const std::string plain =
      RefusalReport(**cmds, {{"refs/heads/main", "jitbroker: denied:\nno"}}, "other", {"hi"});
  CHECK(plain == PktLine("unpack ok\n") + PktLine("ng refs/heads/main jitbroker: denied: no\n") +
                     PktLine("ng refs/heads/dev other\n") + "0000");

  (*cmds)->capabilities.push_back("side-band-64k");
  const std::string banded = RefusalReport(**cmds, {}, "nope", {"look here"});
  CHECK(banded.starts_with(PktLine("\2look here\n")));
  CHECK(banded.find(PktLine("\1" + PktLine("unpack ok\n") + PktLine("ng refs/heads/main nope\n") +
                            PktLine("ng refs/heads/dev nope\n") + "0000")) != std::string::npos);
  CHECK(banded.ends_with("0000"));
}

TEST_CASE("git protocol: gzip bodies inflate piecewise, within the limit") {
  const std::string text = PktLine(kA + " " + kB + " refs/heads/main\n") + "0000";
  const std::string packed = Gzip(text);
  GzipInflater in(1024);
  std::string out;
  for (char c : packed) {
    REQUIRE(in.Inflate(std::string_view(&c, 1), out).has_value());
  }
  CHECK(out == text);
  CHECK(in.finished());

  GzipInflater small(16);
  std::string out2;
  auto st = small.Inflate(Gzip(std::string(1000, 'x')), out2);
  REQUIRE(!st.has_value());
  CHECK(st.error().code == ErrorCode::kPayloadTooLarge);

  GzipInflater corrupt(1024);
  std::string out3;
  auto bad = corrupt.Inflate("definitely not gzip", out3);
  REQUIRE(!bad.has_value());
  CHECK(bad.error().Reason() == "invalid_git_request");
}

}  // namespace
}  // namespace jitbroker::proxy::git
