// The parts of git's smart HTTP protocol the proxy reads and writes
// (docs/proxy.md, "How a push is decided"): pkt-lines, the ref-update
// commands at the head of a receive-pack request, the ref advertisement of
// upload-pack (v0), and the report-status answer git prints as
// "! [remote rejected] REF (REASON)". References: git's
// Documentation/gitprotocol-common.txt, gitprotocol-pack.txt and
// gitprotocol-http.txt.
//
// Everything here is a pure function of its input, bounded by the sizes its
// callers pass; malformed input is kInvalidArgument "invalid_git_request" (or
// "invalid_git_answer" for what an upstream sent) naming what is wrong.
//
// Thread-safety: pure functions; GzipInflater is one stream's state.
#pragma once

#include <cstddef>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "jitbroker/result.h"

namespace jitbroker::proxy::git {

// "%04x" length prefix + payload (payload at most 65516 bytes).
std::string PktLine(std::string_view payload);
inline constexpr std::string_view kFlushPkt = "0000";

// An object id: 40 (SHA-1) or 64 (SHA-256) lower-case hex digits.
bool IsObjectId(std::string_view s);
// All zeros: the ref does not exist (old) or is to be deleted (new).
bool IsZeroId(std::string_view s);
// A ref name git itself would accept for a push: "refs/…", printable ASCII
// without space, '~', '^', ':', '?', '*', '[', '\\', "..", "@{", "//", a
// component starting with '.' or ending in ".lock", at most 1024 bytes.
bool IsValidRefName(std::string_view ref);

struct RefUpdate {
  std::string old_id;
  std::string new_id;
  std::string ref;
  bool create() const { return IsZeroId(old_id); }
  bool remove() const { return IsZeroId(new_id); }
};

struct PushCommands {
  std::vector<RefUpdate> updates;
  std::vector<std::string> capabilities;  // those the client asked for
  size_t length = 0;                      // bytes of the command section, flush included
  bool HasCapability(std::string_view name) const;
};

// Parses the command section at the start of a receive-pack request body
// (already inflated): optional "shallow <id>" lines, then "old new ref"
// lines, the first with "\0capabilities", then a flush-pkt. nullopt: more
// bytes are needed. No commands at all (a lone flush-pkt) is git's probe
// before a large push (remote-curl's probe_rpc): it updates nothing. Refused:
// a push certificate (signed pushes), more than `max_updates` commands, a
// malformed line, an invalid ref name, or a ref named twice.
[[nodiscard]] Result<std::optional<PushCommands>> ParsePushCommands(std::string_view data,
                                                                    size_t max_updates);

// The ref advertisement of GET info/refs?service=git-upload-pack (protocol
// v0, smart HTTP): refs with their ids, the server's capabilities, and where
// HEAD points ("refs/heads/main"), if the server says.
struct Advertisement {
  std::vector<std::pair<std::string, std::string>>
      refs;  // (ref, id), HEAD and peeled tags left out
  std::vector<std::string> capabilities;
  std::optional<std::string> head_target;
  std::string object_format = "sha1";
};
[[nodiscard]] Result<Advertisement> ParseUploadPackAdvertisement(std::string_view body);

// The advertisement git expects from GET info/refs?service=git-receive-pack,
// made from `adv` with the capabilities the proxy supports.
std::string ReceivePackAdvertisement(const Advertisement& adv);

// The receive-pack answer that refuses every ref of `cmds`: "unpack ok",
// then "ng REF REASON" per ref (reasons[ref], or `fallback`), a flush-pkt;
// inside side-band channel 1 when the client asked for side-band(-64k),
// preceded by `message` lines on channel 2 (git prints them as "remote: …").
std::string RefusalReport(const PushCommands& cmds,
                          const std::map<std::string, std::string>& reasons,
                          std::string_view fallback, const std::vector<std::string>& message);

// Inflates a gzip stream a piece at a time, never producing more than the
// limit it was made with. Errors: kInvalidArgument "invalid_git_request"
// (not gzip, corrupt) or kPayloadTooLarge "payload_too_large".
class GzipInflater {
 public:
  explicit GzipInflater(size_t max_output);
  ~GzipInflater();
  GzipInflater(const GzipInflater&) = delete;
  GzipInflater& operator=(const GzipInflater&) = delete;
  // Appends the inflation of `in` to `out`.
  [[nodiscard]] Status Inflate(std::string_view in, std::string& out);
  bool finished() const { return finished_; }

 private:
  struct State;
  State* state_;
  size_t max_output_;
  size_t produced_ = 0;
  bool finished_ = false;
};

}  // namespace jitbroker::proxy::git
