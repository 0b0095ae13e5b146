#include "broker/proxy/git_protocol.h"

#include <zlib.h>

#include <algorithm>
#include <set>

namespace jitbroker::proxy::git {

namespace {

constexpr size_t kMaxPktLength = 65520;  // gitprotocol-common: LARGE_PACKET_MAX

Error BadRequest(std::string message) {
  return InvalidArgument("invalid_git_request", std::move(message));
}
Error BadAnswer(std::string message) {
  return InvalidArgument("invalid_git_answer", std::move(message));
}

bool IsHex(char c) { return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'); }

// The length of the pkt-line at `data` (4 = flush/delimiter), nullopt when
// fewer than 4 bytes are there; -1 when the prefix is not a length.
std::optional<long> PktLength(std::string_view data) {
  if (data.size() < 4) {
    return std::nullopt;
  }
  long n = 0;
  for (size_t i = 0; i < 4; ++i) {
    const char c = data[i];
    int v = 0;
    if (c >= '0' && c <= '9') {
      v = c - '0';
    } else if (c >= 'a' && c <= 'f') {
      v = c - 'a' + 10;
    } else if (c >= 'A' && c <= 'F') {
      v = c - 'A' + 10;
    } else {
      return -1;
    }
    n = n * 16 + v;
  }
  return n;
}

std::vector<std::string> SplitSpaces(std::string_view s) {
  std::vector<std::string> out;
  while (!s.empty()) {
    const size_t sp = s.find(' ');
    std::string_view word = s.substr(0, sp);
    if (!word.empty()) {
      out.emplace_back(word);
    }
    if (sp == std::string_view::npos) {
      break;
    }
    s.remove_prefix(sp + 1);
  }
  return out;
}

// Reason text inside one report-status line: printable, no line breaks.
std::string ReportText(std::string_view s) {
  std::string out;
  for (char c : s.substr(0, 400)) {
    const auto u = static_cast<unsigned char>(c);
    out.push_back(u < 0x20 || u == 0x7f ? ' ' : c);
  }
  return out;
}

}  // namespace

std::string PktLine(std::string_view payload) {
  static const char kHex[] = "0123456789abcdef";
  const size_t n = payload.size() + 4;
  std::string out;
  out.reserve(n);
  out.push_back(kHex[(n >> 12) & 0xf]);
  out.push_back(kHex[(n >> 8) & 0xf]);
  out.push_back(kHex[(n >> 4) & 0xf]);
  out.push_back(kHex[n & 0xf]);
  out.append(payload);
  return out;
}

bool IsObjectId(std::string_view s) {
  return (s.size() == 40 || s.size() == 64) && std::all_of(s.begin(), s.end(), IsHex);
}

bool IsZeroId(std::string_view s) {
  return !s.empty() && std::all_of(s.begin(), s.end(), [](char c) { return c == '0'; });
}

bool IsValidRefName(std::string_view ref) {
  if (ref.size() < 6 || ref.size() > 1024 || !ref.starts_with("refs/") || ref.ends_with('/') ||
      ref.ends_with('.') || ref.find("..") != std::string_view::npos ||
      ref.find("@{") != std::string_view::npos || ref.find("//") != std::string_view::npos) {
    return false;
  }
  for (char c : ref) {
    const auto u = static_cast<unsigned char>(c);
    if (u <= 0x20 || u >= 0x7f || c == '~' || c == '^' || c == ':' || c == '?' || c == '*' ||
        c == '[' || c == '\\') {
      return false;
    }
  }
  size_t start = 0;
  while (start < ref.size()) {
    size_t end = ref.find('/', start);
    if (end == std::string_view::npos) {
      end = ref.size();
    }
    std::string_view comp = ref.substr(start, end - start);
    if (comp.empty() || comp.front() == '.' || comp.ends_with(".lock")) {
      return false;
    }
    start = end + 1;
  }
  return true;
}

bool PushCommands::HasCapability(std::string_view name) const {
  return std::any_of(capabilities.begin(), capabilities.end(), [&](const std::string& c) {
    return c == name || (c.size() > name.size() && c.starts_with(name) && c[name.size()] == '=');
  });
}

Result<std::optional<PushCommands>> ParsePushCommands(std::string_view data, size_t max_updates) {
  PushCommands cmds;
  std::set<std::string, std::less<>> seen;
  size_t pos = 0;
  for (;;) {
    const std::optional<long> len = PktLength(data.substr(pos));
    if (!len) {
      return std::optional<PushCommands>();
    }
    if (*len == 0) {
      pos += 4;
      cmds.length = pos;
      return std::optional<PushCommands>(std::move(cmds));
    }
    if (*len < 5 || static_cast<size_t>(*len) > kMaxPktLength) {
      return std::unexpected(BadRequest("the push commands are not pkt-lines"));
    }
    if (data.size() - pos < static_cast<size_t>(*len)) {
      return std::optional<PushCommands>();
    }
    std::string_view line = data.substr(pos + 4, static_cast<size_t>(*len) - 4);
    pos += static_cast<size_t>(*len);
    if (line.ends_with('\n')) {
      line.remove_suffix(1);
    }
    if (line.starts_with("shallow ")) {
      if (!cmds.updates.empty() || !IsObjectId(line.substr(8))) {
        return std::unexpected(BadRequest("a malformed shallow line"));
      }
      continue;
    }
    if (line.starts_with("push-cert")) {
      return std::unexpected(
          BadRequest("signed pushes (git push --signed) cannot pass through the broker"));
    }
    std::string_view command = line;
    if (cmds.updates.empty()) {
      const size_t nul = line.find('\0');
      if (nul != std::string_view::npos) {
        command = line.substr(0, nul);
        cmds.capabilities = SplitSpaces(line.substr(nul + 1));
      }
    } else if (line.find('\0') != std::string_view::npos) {
      return std::unexpected(BadRequest("only the first push command may carry capabilities"));
    }
    const size_t sp1 = command.find(' ');
    const size_t sp2 = sp1 == std::string_view::npos ? sp1 : command.find(' ', sp1 + 1);
    if (sp2 == std::string_view::npos) {
      return std::unexpected(BadRequest("a push command is not \"OLD NEW REF\""));
    }
    RefUpdate u;
    u.old_id = std::string(command.substr(0, sp1));
    u.new_id = std::string(command.substr(sp1 + 1, sp2 - sp1 - 1));
    u.ref = std::string(command.substr(sp2 + 1));
    if (!IsObjectId(u.old_id) || !IsObjectId(u.new_id) || u.old_id.size() != u.new_id.size()) {
      return std::unexpected(BadRequest("a push command has malformed object ids"));
    }
    if (!IsValidRefName(u.ref)) {
      return std::unexpected(BadRequest("a push command names an invalid ref"));
    }
    if (u.create() && u.remove()) {
      return std::unexpected(BadRequest("a push command neither creates nor updates anything"));
    }
    if (!seen.insert(u.ref).second) {
      return std::unexpected(BadRequest("the push names ref " + u.ref + " twice"));
    }
    if (cmds.updates.size() >= max_updates) {
      return std::unexpected(BadRequest("the push updates more than " +
                                        std::to_string(max_updates) + " refs at once"));
    }
    cmds.updates.push_back(std::move(u));
  }
}

Result<Advertisement> ParseUploadPackAdvertisement(std::string_view body) {
  Advertisement adv;
  size_t pos = 0;
  bool service_line = false;
  bool first = true;
  for (;;) {
    const std::optional<long> len = PktLength(body.substr(pos));
    if (!len || *len < 0 || (*len > 0 && *len < 4) || static_cast<size_t>(*len) > kMaxPktLength) {
      return std::unexpected(BadAnswer("the ref advertisement is not pkt-lines"));
    }
    if (*len == 0) {
      pos += 4;
      if (!service_line) {
        return std::unexpected(BadAnswer("the ref advertisement has no service line"));
      }
      if (first) {
        first = false;  // the flush after "# service=…"
        if (pos == body.size()) {
          return std::unexpected(BadAnswer("the ref advertisement ends early"));
        }
        continue;
      }
      return adv;
    }
    if (body.size() - pos < static_cast<size_t>(*len)) {
      return std::unexpected(BadAnswer("the ref advertisement ends early"));
    }
    std::string_view line = body.substr(pos + 4, static_cast<size_t>(*len) - 4);
    pos += static_cast<size_t>(*len);
    if (line.ends_with('\n')) {
      line.remove_suffix(1);
    }
    if (!service_line) {
      if (line != "# service=git-upload-pack") {
        return std::unexpected(BadAnswer("the ref advertisement is not git-upload-pack's"));
      }
      service_line = true;
      continue;
    }
    if (first) {
      return std::unexpected(BadAnswer("the ref advertisement has no flush after its service"));
    }
    if (line.starts_with("version ")) {
      return std::unexpected(BadAnswer("the upstream answered in protocol " + std::string(line)));
    }
    const size_t nul = line.find('\0');
    std::string_view ref_part = line.substr(0, nul);
    if (nul != std::string_view::npos) {
      adv.capabilities = SplitSpaces(line.substr(nul + 1));
      for (const std::string& c : adv.capabilities) {
        if (c.starts_with("symref=HEAD:")) {
          adv.head_target = c.substr(12);
        } else if (c.starts_with("object-format=")) {
          adv.object_format = c.substr(14);
        }
      }
    }
    const size_t sp = ref_part.find(' ');
    if (sp == std::string_view::npos || !IsObjectId(ref_part.substr(0, sp))) {
      return std::unexpected(BadAnswer("a ref advertisement line is not \"ID REF\""));
    }
    std::string_view id = ref_part.substr(0, sp);
    std::string_view name = ref_part.substr(sp + 1);
    if (name == "HEAD" || name.ends_with("^{}") || name == "capabilities^{}") {
      continue;
    }
    if (!IsValidRefName(name)) {
      continue;  // nothing git could push to
    }
    adv.refs.emplace_back(std::string(name), std::string(id));
  }
}

std::string ReceivePackAdvertisement(const Advertisement& adv) {
  std::string caps = "report-status delete-refs side-band-64k quiet atomic ofs-delta";
  const bool formats =
      std::any_of(adv.capabilities.begin(), adv.capabilities.end(),
                  [](const std::string& c) { return c.starts_with("object-format="); });
  if (formats) {
    caps += " object-format=" + adv.object_format;
  }
  caps += " agent=jitbroker";
  std::string out = PktLine("# service=git-receive-pack\n");
  out += kFlushPkt;
  if (adv.refs.empty()) {
    const std::string zero(adv.object_format == "sha256" ? 64 : 40, '0');
    out += PktLine(zero + " capabilities^{}" + std::string(1, '\0') + caps + "\n");
  }
  bool first = true;
  for (const auto& [ref, id] : adv.refs) {
    std::string line = id + " " + ref;
    if (first) {
      line += std::string(1, '\0') + caps;
      first = false;
    }
    out += PktLine(line + "\n");
  }
  out += kFlushPkt;
  return out;
}

std::string RefusalReport(const PushCommands& cmds,
                          const std::map<std::string, std::string>& reasons,
                          std::string_view fallback, const std::vector<std::string>& message) {
  std::string report = PktLine("unpack ok\n");
  for (const RefUpdate& u : cmds.updates) {
    auto it = reasons.find(u.ref);
    report += PktLine("ng " + u.ref + " " +
                      ReportText(it != reasons.end() ? it->second : fallback) + "\n");
  }
  report += kFlushPkt;
  size_t band_max = 0;
  if (cmds.HasCapability("side-band-64k")) {
    band_max = 65515;
  } else if (cmds.HasCapability("side-band")) {
    band_max = 995;
  }
  if (band_max == 0) {
    return report;
  }
  std::string out;
  for (const std::string& m : message) {
    out += PktLine("\2" + ReportText(m) + "\n");
  }
  for (size_t i = 0; i < report.size(); i += band_max) {
    out += PktLine("\1" + report.substr(i, band_max));
  }
  out += kFlushPkt;
  return out;
}

struct GzipInflater::State {
  z_stream z{};
  bool ok = false;
};

GzipInflater::GzipInflater(size_t max_output) : state_(new State), max_output_(max_output) {
  state_->ok = inflateInit2(&state_->z, 16 + MAX_WBITS) == Z_OK;
}

GzipInflater::~GzipInflater() {
  if (state_->ok) {
    inflateEnd(&state_->z);
  }
  delete state_;
}

Status GzipInflater::Inflate(std::string_view in, std::string& out) {
  if (!state_->ok) {
    return std::unexpected(Internal("cannot start a gzip stream"));
  }
  z_stream& z = state_->z;
  z.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(in.data()));
  z.avail_in = static_cast<uInt>(in.size());
  char buf[16384];
  do {
    z.next_out = reinterpret_cast<Bytef*>(buf);
    z.avail_out = sizeof(buf);
    const int rc = inflate(&z, Z_NO_FLUSH);
    if (rc != Z_OK && rc != Z_STREAM_END && rc != Z_BUF_ERROR) {
      return std::unexpected(BadRequest("the gzip-encoded body is corrupt"));
    }
    const size_t n = sizeof(buf) - z.avail_out;
    if (produced_ + n > max_output_) {
      return std::unexpected(
          PayloadTooLarge("payload_too_large", "the inflated body is larger than allowed"));
    }
    produced_ += n;
    out.append(buf, n);
    if (rc == Z_STREAM_END) {
      finished_ = true;
    } else if (rc == Z_BUF_ERROR) {
      break;  // no progress possible until more input comes
    }
  } while (!finished_ && (z.avail_in > 0 || z.avail_out == 0));
  return OkStatus();
}

}  // namespace jitbroker::proxy::git
