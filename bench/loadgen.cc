// loadgen: a small HTTP/1.1 keep-alive load client for the jitbroker benchmark.
//
// Two modes over C persistent connections (no pipelining: one request in
// flight per connection), driven by one epoll loop per worker thread:
//
//   closed loop (default): every connection sends its next request as soon as
//     the previous response arrives. Reports throughput; latency is measured
//     from the moment each request is written.
//   open loop (--rate R): requests are scheduled at a fixed global rate R
//     (request k at t0 + k/R). A due request waits for an idle connection;
//     its latency is measured from its *scheduled* send time, so a stalled
//     server shows up in the percentiles instead of silently slowing the
//     client down (no coordinated omission).
//
// Only 2xx responses count as successes and feed the latency percentiles;
// non-2xx responses are counted separately, per status, as are transport
// errors (refused/reset connections, malformed responses) and, in open
// loop, requests that were scheduled in the window but not completed within
// the drain period.
//
// Output: a human summary on stdout followed by one machine-readable line
//   RESULT mode=closed conns=32 ... rps=… p50_ms=… p90_ms=… p99_ms=… max_ms=…
// Exit status: 0 when at least one request succeeded, 1 on setup errors or
// when nothing succeeded, 2 on usage errors.
//
// Secrets: header values (e.g. Authorization) are best passed with
// --header-file so they do not show up in the process list; loadgen never
// prints header values.
#include <arpa/inet.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/timerfd.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <charconv>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <iostream>
#include <map>
#include <memory>
#include <optional>
#include <sstream>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

namespace jitbroker::bench {
namespace {

using Nanos = int64_t;
constexpr Nanos kNsPerSec = 1'000'000'000;
constexpr size_t kMaxResponseBytes = 4 * 1024 * 1024;

Nanos NowNs() {
  timespec ts{};
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<Nanos>(ts.tv_sec) * kNsPerSec + ts.tv_nsec;
}

Nanos SecondsToNs(double s) { return static_cast<Nanos>(std::llround(s * 1e9)); }

// ---------------------------------------------------------------------------
// Options

struct Options {
  std::string url;
  std::string method = "GET";
  std::vector<std::string> headers;  // "Name: value"
  std::string body;
  bool has_body = false;
  // --body-lines: one body per line, used in turn (a pool of pre-signed
  // token-exchange requests, each usable once); empty = `body` for all.
  std::vector<std::string> bodies;
  int connections = 32;
  int threads = 1;
  double duration_s = 10;
  double warmup_s = 0;
  double rate = 0;        // requests/s; 0 = closed loop
  double drain_s = 5;     // open loop: how long to wait for the backlog after the window
  double timeout_s = 10;  // closed loop: a single request slower than this is an error
  std::string label;
};

void Usage() {
  std::cerr
      << "usage: loadgen --url http://HOST:PORT/PATH [options]\n"
         "  -m, --method M          HTTP method (default GET)\n"
         "  -H, --header 'N: V'     request header (repeatable)\n"
         "      --header-file F     request headers, one 'Name: value' per line\n"
         "                          (keeps secrets such as Authorization off the command line)\n"
         "  -b, --body S            request body (Content-Type defaults to application/json)\n"
         "      --body-file F       request body from a file\n"
         "      --body-lines F      one body per line, each request takes the next\n"
         "                          (wraps around when exhausted; counted as body_wraps)\n"
         "  -c, --connections C     keep-alive connections (default 32)\n"
         "  -t, --threads T         client threads (default 1)\n"
         "  -d, --duration D        measured seconds (default 10)\n"
         "  -w, --warmup W          unmeasured seconds before the window (default 0)\n"
         "  -r, --rate R            open loop at R requests/s (default: closed loop)\n"
         "      --drain S           open loop: seconds to wait for the backlog (default 5)\n"
         "      --timeout S         per-request timeout in seconds (default 10)\n"
         "  -l, --label NAME        label echoed in the RESULT line\n";
}

bool ReadFile(const std::string& path, std::string& out) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    return false;
  }
  std::ostringstream ss;
  ss << in.rdbuf();
  out = ss.str();
  return !in.bad();
}

std::string Trim(std::string_view s) {
  size_t b = 0;
  size_t e = s.size();
  while (b < e && (s[b] == ' ' || s[b] == '\t' || s[b] == '\r' || s[b] == '\n')) ++b;
  while (e > b && (s[e - 1] == ' ' || s[e - 1] == '\t' || s[e - 1] == '\r' || s[e - 1] == '\n')) {
    --e;
  }
  return std::string(s.substr(b, e - b));
}

bool ValidHeader(const std::string& h) {
  size_t colon = h.find(':');
  if (colon == std::string::npos || colon == 0) {
    return false;
  }
  for (char c : h) {
    if (c == '\r' || c == '\n' || c == '\0') {
      return false;
    }
  }
  return true;
}

bool ParseDouble(const char* text, double min, double max, double& out) {
  std::string_view s(text);
  double v = 0;
  auto [ptr, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (ec != std::errc() || ptr != s.data() + s.size() || !(v >= min && v <= max)) {
    return false;
  }
  out = v;
  return true;
}

bool ParseInt(const char* text, int min, int max, int& out) {
  std::string_view s(text);
  int v = 0;
  auto [ptr, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (ec != std::errc() || ptr != s.data() + s.size() || v < min || v > max) {
    return false;
  }
  out = v;
  return true;
}

// Returns false (after printing why) on a usage error.
bool ParseArgs(int argc, char** argv, Options& o) {
  auto need = [&](int& i, const char* flag) -> const char* {
    if (i + 1 >= argc) {
      std::cerr << "loadgen: " << flag << " needs a value\n";
      return nullptr;
    }
    return argv[++i];
  };
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    const char* v = nullptr;
    if (a == "-h" || a == "--help") {
      Usage();
      std::exit(0);
    } else if (a == "--url" || a == "-u") {
      if (!(v = need(i, "--url"))) return false;
      o.url = v;
    } else if (a == "-m" || a == "--method") {
      if (!(v = need(i, "--method"))) return false;
      o.method = v;
      if (o.method.empty() || !std::all_of(o.method.begin(), o.method.end(),
                                           [](char c) { return c >= 'A' && c <= 'Z'; })) {
        std::cerr << "loadgen: --method must be an upper-case token\n";
        return false;
      }
    } else if (a == "-H" || a == "--header") {
      if (!(v = need(i, "--header"))) return false;
      std::string h = Trim(v);
      if (!ValidHeader(h)) {
        std::cerr << "loadgen: --header must look like 'Name: value'\n";
        return false;
      }
      o.headers.push_back(h);
    } else if (a == "--header-file") {
      if (!(v = need(i, "--header-file"))) return false;
      std::string text;
      if (!ReadFile(v, text)) {
        std::cerr << "loadgen: cannot read header file " << v << "\n";
        return false;
      }
      std::istringstream lines(text);
      std::string line;
      while (std::getline(lines, line)) {
        std::string h = Trim(line);
        if (h.empty() || h[0] == '#') continue;
        if (!ValidHeader(h)) {
          std::cerr << "loadgen: header file " << v << " has a line that is not 'Name: value'\n";
          return false;
        }
        o.headers.push_back(h);
      }
    } else if (a == "-b" || a == "--body") {
      if (!(v = need(i, "--body"))) return false;
      o.body = v;
      o.has_body = true;
    } else if (a == "--body-file") {
      if (!(v = need(i, "--body-file"))) return false;
      if (!ReadFile(v, o.body)) {
        std::cerr << "loadgen: cannot read body file " << v << "\n";
        return false;
      }
      o.has_body = true;
    } else if (a == "--body-lines") {
      if (!(v = need(i, "--body-lines"))) return false;
      std::string text;
      if (!ReadFile(v, text)) {
        std::cerr << "loadgen: cannot read body file " << v << "\n";
        return false;
      }
      std::istringstream lines(text);
      std::string line;
      while (std::getline(lines, line)) {
        if (!line.empty() && line.back() == '\r') line.pop_back();
        if (!line.empty()) o.bodies.push_back(std::move(line));
      }
      if (o.bodies.empty()) {
        std::cerr << "loadgen: body file " << v << " has no lines\n";
        return false;
      }
      o.has_body = true;
    } else if (a == "-c" || a == "--connections") {
      if (!(v = need(i, "--connections"))) return false;
      if (!ParseInt(v, 1, 10000, o.connections)) {
        std::cerr << "loadgen: --connections must be in [1, 10000]\n";
        return false;
      }
    } else if (a == "-t" || a == "--threads") {
      if (!(v = need(i, "--threads"))) return false;
      if (!ParseInt(v, 1, 64, o.threads)) {
        std::cerr << "loadgen: --threads must be in [1, 64]\n";
        return false;
      }
    } else if (a == "-d" || a == "--duration") {
      if (!(v = need(i, "--duration"))) return false;
      if (!ParseDouble(v, 0.1, 3600, o.duration_s)) {
        std::cerr << "loadgen: --duration must be in [0.1, 3600] seconds\n";
        return false;
      }
    } else if (a == "-w" || a == "--warmup") {
      if (!(v = need(i, "--warmup"))) return false;
      if (!ParseDouble(v, 0, 3600, o.warmup_s)) {
        std::cerr << "loadgen: --warmup must be in [0, 3600] seconds\n";
        return false;
      }
    } else if (a == "-r" || a == "--rate") {
      if (!(v = need(i, "--rate"))) return false;
      if (!ParseDouble(v, 0.1, 10'000'000, o.rate)) {
        std::cerr << "loadgen: --rate must be in [0.1, 1e7] requests/s\n";
        return false;
      }
    } else if (a == "--drain") {
      if (!(v = need(i, "--drain"))) return false;
      if (!ParseDouble(v, 0, 600, o.drain_s)) {
        std::cerr << "loadgen: --drain must be in [0, 600] seconds\n";
        return false;
      }
    } else if (a == "--timeout") {
      if (!(v = need(i, "--timeout"))) return false;
      if (!ParseDouble(v, 0.01, 600, o.timeout_s)) {
        std::cerr << "loadgen: --timeout must be in [0.01, 600] seconds\n";
        return false;
      }
    } else if (a == "-l" || a == "--label") {
      if (!(v = need(i, "--label"))) return false;
      o.label = v;
    } else {
      std::cerr << "loadgen: unknown argument " << a << "\n";
      return false;
    }
  }
  if (o.url.empty()) {
    std::cerr << "loadgen: --url is required\n";
    return false;
  }
  if (o.threads > o.connections) {
    o.threads = o.connections;
  }
  return true;
}

// ---------------------------------------------------------------------------
// Target and request

struct Target {
  sockaddr_storage addr{};
  socklen_t addr_len = 0;
  std::string host_header;
  std::string path;
};

bool ResolveTarget(const std::string& url, Target& t) {
  constexpr std::string_view kScheme = "http://";
  if (url.rfind(kScheme, 0) != 0) {
    std::cerr << "loadgen: only http:// URLs are supported\n";
    return false;
  }
  std::string rest = url.substr(kScheme.size());
  size_t slash = rest.find('/');
  std::string authority = slash == std::string::npos ? rest : rest.substr(0, slash);
  t.path = slash == std::string::npos ? "/" : rest.substr(slash);
  std::string host;
  std::string port = "80";
  if (!authority.empty() && authority[0] == '[') {
    size_t close = authority.find(']');
    if (close == std::string::npos) {
      std::cerr << "loadgen: bad IPv6 host in URL\n";
      return false;
    }
    host = authority.substr(1, close - 1);
    if (close + 1 < authority.size() && authority[close + 1] == ':') {
      port = authority.substr(close + 2);
    }
  } else {
    size_t colon = authority.rfind(':');
    host = colon == std::string::npos ? authority : authority.substr(0, colon);
    if (colon != std::string::npos) port = authority.substr(colon + 1);
  }
  if (host.empty() || port.empty()) {
    std::cerr << "loadgen: URL needs a host and port\n";
    return false;
  }
  for (char c : t.path) {
    if (static_cast<unsigned char>(c) <= ' ' || c == 0x7f) {
      std::cerr << "loadgen: the URL path must not contain spaces or control characters\n";
      return false;
    }
  }
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* res = nullptr;
  int rc = getaddrinfo(host.c_str(), port.c_str(), &hints, &res);
  if (rc != 0 || res == nullptr) {
    std::cerr << "loadgen: cannot resolve " << host << ":" << port << ": " << gai_strerror(rc)
              << "\n";
    return false;
  }
  std::memcpy(&t.addr, res->ai_addr, res->ai_addrlen);
  t.addr_len = static_cast<socklen_t>(res->ai_addrlen);
  freeaddrinfo(res);
  t.host_header = authority;
  return true;
}

bool HasHeader(const std::vector<std::string>& headers, std::string_view name) {
  for (const std::string& h : headers) {
    if (h.size() > name.size() && h[name.size()] == ':' &&
        strncasecmp(h.data(), name.data(), name.size()) == 0) {
      return true;
    }
  }
  return false;
}

std::string BuildRequest(const Options& o, const Target& t) {
  std::string r = o.method + " " + t.path + " HTTP/1.1\r\n";
  if (!HasHeader(o.headers, "Host")) r += "Host: " + t.host_header + "\r\n";
  if (!HasHeader(o.headers, "User-Agent")) r += "User-Agent: jitbroker-loadgen/1\r\n";
  if (!HasHeader(o.headers, "Accept")) r += "Accept: */*\r\n";
  for (const std::string& h : o.headers) {
    r += h + "\r\n";
  }
  if (o.has_body) {
    if (!HasHeader(o.headers, "Content-Type")) r += "Content-Type: application/json\r\n";
    r += "Content-Length: " + std::to_string(o.body.size()) + "\r\n";
  } else if (o.method == "POST" || o.method == "PUT" || o.method == "PATCH") {
    r += "Content-Length: 0\r\n";
  }
  r += "\r\n";
  r += o.body;
  return r;
}

// The requests a run sends: one, or one per --body-lines line, in turn.
struct RequestPool {
  std::vector<std::string> requests;
  mutable std::atomic<uint64_t> next{0};
  const std::string& Next() const { return requests[next++ % requests.size()]; }
  uint64_t Wraps() const { return next.load() / requests.size(); }
};

// ---------------------------------------------------------------------------
// Response parsing (HTTP/1.1: Content-Length, chunked, or until close)

enum class Parse { kIncomplete, kComplete, kBad };

struct ParsedResponse {
  int status = 0;
  bool close = false;        // server will close the connection after this response
  bool until_close = false;  // body is delimited by the connection closing
};

bool IEquals(std::string_view a, std::string_view b) {
  return a.size() == b.size() && strncasecmp(a.data(), b.data(), a.size()) == 0;
}

bool IContains(std::string_view hay, std::string_view needle) {
  if (needle.size() > hay.size()) return false;
  for (size_t i = 0; i + needle.size() <= hay.size(); ++i) {
    if (strncasecmp(hay.data() + i, needle.data(), needle.size()) == 0) return true;
  }
  return false;
}

// Parses one response at the start of `buf`. `head_request` responses have no body.
Parse ParseResponse(std::string_view buf, bool head_request, ParsedResponse& out) {
  size_t head_end = buf.find("\r\n\r\n");
  if (head_end == std::string_view::npos) {
    return buf.size() > 64 * 1024 ? Parse::kBad : Parse::kIncomplete;
  }
  std::string_view head = buf.substr(0, head_end);
  size_t line_end = head.find("\r\n");
  std::string_view status_line = head.substr(0, line_end);
  if (status_line.size() < 12 || status_line.substr(0, 5) != "HTTP/" || status_line[8] != ' ') {
    return Parse::kBad;
  }
  int status = 0;
  auto [p, ec] = std::from_chars(status_line.data() + 9, status_line.data() + 12, status);
  if (ec != std::errc() || p != status_line.data() + 12 || status < 100 || status > 599) {
    return Parse::kBad;
  }
  const bool http10 = status_line.substr(0, 8) == "HTTP/1.0";
  bool chunked = false;
  bool keep_alive = false;
  bool close = false;
  std::optional<size_t> content_length;
  size_t pos = line_end == std::string_view::npos ? head.size() : line_end + 2;
  while (pos < head.size()) {
    size_t e = head.find("\r\n", pos);
    if (e == std::string_view::npos) e = head.size();
    std::string_view line = head.substr(pos, e - pos);
    pos = e + 2;
    size_t colon = line.find(':');
    if (colon == std::string_view::npos) return Parse::kBad;
    std::string_view name = line.substr(0, colon);
    std::string_view value = line.substr(colon + 1);
    while (!value.empty() && (value.front() == ' ' || value.front() == '\t'))
      value.remove_prefix(1);
    while (!value.empty() && (value.back() == ' ' || value.back() == '\t')) value.remove_suffix(1);
    if (IEquals(name, "Content-Length")) {
      size_t n = 0;
      auto [q, ec2] = std::from_chars(value.data(), value.data() + value.size(), n);
      if (ec2 != std::errc() || q != value.data() + value.size()) return Parse::kBad;
      content_length = n;
    } else if (IEquals(name, "Transfer-Encoding")) {
      chunked = IContains(value, "chunked");
    } else if (IEquals(name, "Connection")) {
      if (IContains(value, "close")) close = true;
      if (IContains(value, "keep-alive")) keep_alive = true;
    }
  }
  out = {};
  out.status = status;
  out.close = close || (http10 && !keep_alive);
  size_t body_start = head_end + 4;
  std::string_view body = buf.substr(body_start);
  if (head_request || status == 204 || status == 304 || status < 200) {
    return Parse::kComplete;
  }
  if (chunked) {
    size_t at = 0;
    for (;;) {
      size_t le = body.find("\r\n", at);
      if (le == std::string_view::npos) return Parse::kIncomplete;
      std::string_view size_text = body.substr(at, le - at);
      size_t semi = size_text.find(';');
      if (semi != std::string_view::npos) size_text = size_text.substr(0, semi);
      size_t n = 0;
      auto [q, ec3] = std::from_chars(size_text.data(), size_text.data() + size_text.size(), n, 16);
      if (ec3 != std::errc() || size_text.empty() || n > kMaxResponseBytes) return Parse::kBad;
      at = le + 2;
      if (n == 0) {
        // Trailers: zero or more lines, then an empty line.
        for (;;) {
          size_t te = body.find("\r\n", at);
          if (te == std::string_view::npos) return Parse::kIncomplete;
          if (te == at) return Parse::kComplete;
          at = te + 2;
        }
      }
      if (body.size() < at + n + 2) return Parse::kIncomplete;
      if (body.substr(at + n, 2) != "\r\n") return Parse::kBad;
      at += n + 2;
    }
  }
  if (content_length) {
    if (*content_length > kMaxResponseBytes) return Parse::kBad;
    return body.size() >= *content_length ? Parse::kComplete : Parse::kIncomplete;
  }
  out.until_close = true;
  out.close = true;
  return body.size() > kMaxResponseBytes ? Parse::kBad : Parse::kIncomplete;
}

// ---------------------------------------------------------------------------
// Stats

struct Stats {
  std::vector<Nanos> latencies;  // successful (2xx) measured requests
  uint64_t non2xx = 0;
  std::map<int, uint64_t> by_status;  // non-2xx only
  uint64_t transport_errors = 0;      // refused/reset/malformed/timeouts
  uint64_t incomplete = 0;            // open loop: scheduled in the window, never completed
  uint64_t reconnects = 0;
  uint64_t unmeasured = 0;    // completed in warm-up (or outside the window)
  Nanos last_completion = 0;  // of a measured request

  void Merge(const Stats& o) {
    latencies.insert(latencies.end(), o.latencies.begin(), o.latencies.end());
    non2xx += o.non2xx;
    for (const auto& [k, v] : o.by_status) by_status[k] += v;
    transport_errors += o.transport_errors;
    incomplete += o.incomplete;
    reconnects += o.reconnects;
    unmeasured += o.unmeasured;
    last_completion = std::max(last_completion, o.last_completion);
  }
};

// ---------------------------------------------------------------------------
// Worker: one epoll loop over a share of the connections.

enum class ConnState { kClosed, kConnecting, kIdle, kBusy };

struct Conn {
  int fd = -1;
  ConnState state = ConnState::kClosed;
  size_t sent = 0;     // bytes of the request written
  std::string in;      // response bytes read so far
  Nanos origin = 0;    // latency origin: send time (closed) or scheduled time (open)
  Nanos deadline = 0;  // closed loop: per-request timeout
  bool measured = false;
  bool has_request = false;
  const std::string* req = nullptr;  // the request in flight
  Nanos retry_at = 0;                // reconnect not before this (after a failure)
  uint64_t generation = 0;           // bumped per socket; tags epoll events
};

constexpr int kConnIndexBits = 24;  // --connections is at most 10000
constexpr uint64_t kConnIndexMask = (uint64_t{1} << kConnIndexBits) - 1;

struct Plan {
  Nanos t0 = 0;            // load starts
  Nanos window_start = 0;  // t0 + warm-up
  Nanos window_end = 0;    // window_start + duration
  Nanos hard_end = 0;      // window_end + drain (open loop)
  double rate = 0;         // total rate; 0 = closed
  Nanos timeout = 0;
};

class Worker {
 public:
  Worker(const Target& target, const RequestPool& pool, bool head_request, int conns, int index,
         int workers, const Plan& plan)
      : target_(target),
        pool_(pool),
        head_request_(head_request),
        conns_(static_cast<size_t>(conns)),
        index_(index),
        workers_(workers),
        plan_(plan) {}

  ~Worker() {
    for (Conn& c : conns_) {
      if (c.fd >= 0) close(c.fd);
    }
    if (timer_fd_ >= 0) close(timer_fd_);
    if (ep_ >= 0) close(ep_);
  }

  bool Run() {
    ep_ = epoll_create1(EPOLL_CLOEXEC);
    timer_fd_ = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
    if (ep_ < 0 || timer_fd_ < 0) {
      std::perror("loadgen: epoll/timerfd");
      return false;
    }
    epoll_event tev{};
    tev.events = EPOLLIN;
    tev.data.u64 = kTimerTag;
    if (epoll_ctl(ep_, EPOLL_CTL_ADD, timer_fd_, &tev) != 0) {
      std::perror("loadgen: epoll_ctl");
      return false;
    }
    if (plan_.rate > 0) {
      interval_ = static_cast<double>(kNsPerSec) * workers_ / plan_.rate;
    }
    stats_.latencies.reserve(
        plan_.rate > 0
            ? static_cast<size_t>(plan_.rate / workers_ *
                                  static_cast<double>(plan_.window_end - plan_.window_start) /
                                  kNsPerSec) +
                  16
            : 1 << 16);
    for (size_t i = 0; i < conns_.size(); ++i) {
      Connect(i, NowNs());
    }
    epoll_event events[256];
    for (;;) {
      Nanos now = NowNs();
      if (Finished(now)) break;
      Dispatch(now);
      CheckTimeouts(now);
      ArmTimer(now);
      int n = epoll_wait(ep_, events, 256, 1000);
      if (n < 0) {
        if (errno == EINTR) continue;
        std::perror("loadgen: epoll_wait");
        return false;
      }
      for (int i = 0; i < n; ++i) {
        if (events[i].data.u64 == kTimerTag) {
          uint64_t expirations = 0;
          ssize_t r = read(timer_fd_, &expirations, sizeof expirations);
          (void)r;
          armed_at_ = 0;
          continue;
        }
        const uint64_t tag = events[i].data.u64;
        const size_t conn = static_cast<size_t>(tag & kConnIndexMask);
        // Events of a socket already replaced by a reconnect are stale.
        if (conn < conns_.size() && conns_[conn].generation == (tag >> kConnIndexBits)) {
          OnEvent(conn, events[i].events);
        }
      }
    }
    Wrapup();
    return true;
  }

  Stats& stats() { return stats_; }

 private:
  static constexpr uint64_t kTimerTag = ~uint64_t{0};

  bool Open() const { return plan_.rate > 0; }

  // Scheduled send time of this worker's k-th request (open loop). Workers
  // interleave on one global schedule: global index k * workers + index.
  Nanos Scheduled(uint64_t k) const {
    return plan_.t0 +
           static_cast<Nanos>((static_cast<double>(k) + static_cast<double>(index_) / workers_) *
                              interval_);
  }

  bool Finished(Nanos now) const {
    if (!Open()) {
      return now >= plan_.window_end;
    }
    if (now >= plan_.hard_end) return true;
    if (Scheduled(next_) < plan_.window_end) return false;  // still scheduling
    for (const Conn& c : conns_) {
      if (c.has_request) return false;
    }
    return now >= plan_.window_end;
  }

  void Connect(size_t i, Nanos now) {
    Conn& c = conns_[i];
    if (c.fd >= 0) {
      close(c.fd);
      c.fd = -1;
    }
    c.in.clear();
    c.sent = 0;
    c.state = ConnState::kClosed;
    if (now < c.retry_at) return;  // retried by Dispatch/ArmTimer later
    int fd = socket(target_.addr.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
      Fail(i, now);
      return;
    }
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    int rc = connect(fd, reinterpret_cast<const sockaddr*>(&target_.addr), target_.addr_len);
    if (rc != 0 && errno != EINPROGRESS) {
      close(fd);
      Fail(i, now);
      return;
    }
    epoll_event ev{};
    ev.events = EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET;
    ++c.generation;
    ev.data.u64 = (c.generation << kConnIndexBits) | i;
    if (epoll_ctl(ep_, EPOLL_CTL_ADD, fd, &ev) != 0) {
      close(fd);
      Fail(i, now);
      return;
    }
    c.fd = fd;
    c.state = ConnState::kConnecting;
  }

  // A connection failed: the request on it (if any) is an error; reconnect
  // after a short back-off so a dead server does not spin the loop.
  void Fail(size_t i, Nanos now) {
    Conn& c = conns_[i];
    if (c.has_request) {
      if (c.measured) ++stats_.transport_errors;
      c.has_request = false;
    } else {
      ++stats_.transport_errors;  // connect failure
    }
    if (c.fd >= 0) {
      close(c.fd);
      c.fd = -1;
    }
    c.state = ConnState::kClosed;
    c.in.clear();
    c.retry_at = now + 50'000'000;  // 50 ms
  }

  void StartRequest(size_t i, Nanos origin, bool measured, Nanos now) {
    Conn& c = conns_[i];
    c.has_request = true;
    c.origin = origin;
    c.measured = measured;
    c.deadline = now + plan_.timeout;
    c.sent = 0;
    c.in.clear();
    c.state = ConnState::kBusy;
    c.req = &pool_.Next();
    Send(i);
  }

  void Send(size_t i) {
    Conn& c = conns_[i];
    const std::string& request = *c.req;
    while (c.sent < request.size()) {
      ssize_t n = send(c.fd, request.data() + c.sent, request.size() - c.sent, MSG_NOSIGNAL);
      if (n > 0) {
        c.sent += static_cast<size_t>(n);
        continue;
      }
      if (n < 0 && errno == EINTR) continue;
      if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return;  // EPOLLOUT resumes
      Fail(i, NowNs());
      return;
    }
  }

  // Hands due requests to idle connections and (re)connects closed ones.
  void Dispatch(Nanos now) {
    for (size_t i = 0; i < conns_.size(); ++i) {
      Conn& c = conns_[i];
      const bool wanted = now < plan_.window_end ||
                          (Open() && Scheduled(next_) < plan_.window_end);  // backlog left
      if (c.state == ConnState::kClosed && now >= c.retry_at && wanted) {
        Connect(i, now);
      }
    }
    if (!Open()) {
      for (size_t i = 0; i < conns_.size(); ++i) {
        if (conns_[i].state == ConnState::kIdle && now < plan_.window_end) {
          StartRequest(i, now, now >= plan_.window_start, now);
        }
      }
      return;
    }
    for (size_t i = 0; i < conns_.size(); ++i) {
      Conn& c = conns_[i];
      if (c.state != ConnState::kIdle) continue;
      Nanos due = Scheduled(next_);
      if (due > now || due >= plan_.window_end) break;
      ++next_;
      StartRequest(i, due, due >= plan_.window_start, now);
    }
  }

  // Closed loop: a request slower than --timeout is an error (the connection
  // is replaced). Open loop relies on the drain deadline instead.
  void CheckTimeouts(Nanos now) {
    if (Open()) return;
    for (size_t i = 0; i < conns_.size(); ++i) {
      Conn& c = conns_[i];
      if (c.has_request && c.state == ConnState::kBusy && now >= c.deadline) {
        Fail(i, now);
        c.retry_at = 0;  // a slow server is not a dead one: reconnect at once
      }
    }
  }

  // Wakes the loop at the next scheduled send, reconnect or window edge.
  void ArmTimer(Nanos now) {
    Nanos wake = Open() ? plan_.hard_end : plan_.window_end;
    if (Open()) {
      Nanos due = Scheduled(next_);
      bool idle = false;
      for (const Conn& c : conns_) {
        if (c.state == ConnState::kIdle) {
          idle = true;
          break;
        }
      }
      if (due < plan_.window_end && idle) wake = std::min(wake, due);
      if (plan_.window_end > now) wake = std::min(wake, plan_.window_end);
    } else {
      for (const Conn& c : conns_) {
        if (c.has_request) wake = std::min(wake, c.deadline);
      }
    }
    for (const Conn& c : conns_) {
      if (c.state == ConnState::kClosed && c.retry_at > now) wake = std::min(wake, c.retry_at);
    }
    wake = std::max(wake, now + 1);
    if (armed_at_ == wake) return;
    itimerspec its{};
    its.it_value.tv_sec = wake / kNsPerSec;
    its.it_value.tv_nsec = wake % kNsPerSec;
    timerfd_settime(timer_fd_, TFD_TIMER_ABSTIME, &its, nullptr);
    armed_at_ = wake;
  }

  void OnEvent(size_t i, uint32_t ev) {
    Conn& c = conns_[i];
    if (c.fd < 0) return;
    const Nanos now = NowNs();
    if (c.state == ConnState::kConnecting) {
      int err = 0;
      socklen_t len = sizeof err;
      if (getsockopt(c.fd, SOL_SOCKET, SO_ERROR, &err, &len) != 0 || err != 0 ||
          (ev & (EPOLLERR | EPOLLHUP))) {
        Fail(i, now);
        return;
      }
      if (!(ev & EPOLLOUT)) return;
      c.state = ConnState::kIdle;
      c.retry_at = 0;
      OnIdle(i, now);
      return;
    }
    if ((ev & EPOLLOUT) && c.state == ConnState::kBusy && c.req != nullptr &&
        c.sent < c.req->size()) {
      Send(i);
      if (c.fd < 0) return;
    }
    if (ev & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR)) {
      Read(i, now);
    }
  }

  void Read(size_t i, Nanos now) {
    Conn& c = conns_[i];
    bool eof = false;
    char buf[16384];
    for (;;) {
      ssize_t n = recv(c.fd, buf, sizeof buf, 0);
      if (n > 0) {
        c.in.append(buf, static_cast<size_t>(n));
        if (c.in.size() > kMaxResponseBytes + 65536) {
          Fail(i, now);
          return;
        }
        continue;
      }
      if (n == 0) {
        eof = true;
        break;
      }
      if (errno == EINTR) continue;
      if (errno == EAGAIN || errno == EWOULDBLOCK) break;
      Fail(i, now);
      return;
    }
    if (!c.has_request) {
      // Unsolicited bytes or the server closing an idle keep-alive connection.
      if (eof || !c.in.empty()) {
        c.in.clear();
        ++stats_.reconnects;
        Connect(i, now);
      }
      return;
    }
    ParsedResponse resp;
    Parse p = ParseResponse(c.in, head_request_, resp);
    if (p == Parse::kIncomplete && eof && resp.until_close && resp.status != 0) {
      p = Parse::kComplete;
    }
    if (p == Parse::kBad || (p == Parse::kIncomplete && eof)) {
      Fail(i, now);
      return;
    }
    if (p == Parse::kIncomplete) return;
    Complete(i, resp, now);
    if (resp.close || eof) {
      ++stats_.reconnects;
      Connect(i, now);
      return;
    }
    OnIdle(i, now);
  }

  void Complete(size_t i, const ParsedResponse& resp, Nanos now) {
    Conn& c = conns_[i];
    c.has_request = false;
    c.in.clear();
    c.state = ConnState::kIdle;
    // Closed loop: only responses that complete inside the window count.
    bool counted = c.measured && (Open() || now <= plan_.window_end);
    if (!counted) {
      ++stats_.unmeasured;
      return;
    }
    stats_.last_completion = std::max(stats_.last_completion, now);
    if (resp.status >= 200 && resp.status < 300) {
      stats_.latencies.push_back(now - c.origin);
    } else {
      ++stats_.non2xx;
      ++stats_.by_status[resp.status];
    }
  }

  void OnIdle(size_t i, Nanos now) {
    if (!Open()) {
      if (now < plan_.window_end) StartRequest(i, now, now >= plan_.window_start, now);
      return;
    }
    Nanos due = Scheduled(next_);
    if (due <= now && due < plan_.window_end) {
      ++next_;
      StartRequest(i, due, due >= plan_.window_start, now);
    }
  }

  void Wrapup() {
    if (!Open()) return;
    // Everything scheduled inside the window that did not complete in time.
    for (const Conn& c : conns_) {
      if (c.has_request && c.measured) ++stats_.incomplete;
    }
    for (uint64_t k = next_;; ++k) {
      Nanos due = Scheduled(k);
      if (due >= plan_.window_end) break;
      if (due >= plan_.window_start) ++stats_.incomplete;
    }
  }

  const Target& target_;
  const RequestPool& pool_;
  const bool head_request_;
  std::vector<Conn> conns_;
  const int index_;
  const int workers_;
  const Plan plan_;
  double interval_ = 0;  // ns between this worker's scheduled requests
  uint64_t next_ = 0;    // next request index to schedule (open loop)
  int ep_ = -1;
  int timer_fd_ = -1;
  Nanos armed_at_ = 0;
  Stats stats_;
};

// ---------------------------------------------------------------------------
// Reporting

double Percentile(const std::vector<Nanos>& sorted, double p) {
  if (sorted.empty()) return 0;
  size_t rank = static_cast<size_t>(std::ceil(p * static_cast<double>(sorted.size())));
  rank = std::clamp<size_t>(rank, 1, sorted.size());
  return static_cast<double>(sorted[rank - 1]) / 1e6;
}

bool Preflight(const Target& t) {
  int fd = socket(t.addr.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return false;
  bool ok = connect(fd, reinterpret_cast<const sockaddr*>(&t.addr), t.addr_len) == 0;
  int saved = errno;
  close(fd);
  errno = saved;
  return ok;
}

int Main(int argc, char** argv) {
  Options o;
  if (!ParseArgs(argc, argv, o)) {
    Usage();
    return 2;
  }
  signal(SIGPIPE, SIG_IGN);
  Target target;
  if (!ResolveTarget(o.url, target)) return 1;
  if (!Preflight(target)) {
    std::cerr << "loadgen: cannot connect to " << target.host_header << ": " << std::strerror(errno)
              << "\n";
    return 1;
  }
  RequestPool pool;
  if (o.bodies.empty()) {
    pool.requests.push_back(BuildRequest(o, target));
  } else {
    Options one = o;
    one.bodies.clear();
    for (std::string& b : o.bodies) {
      one.body = std::move(b);
      pool.requests.push_back(BuildRequest(one, target));
    }
    o.bodies.clear();
  }
  const bool head = o.method == "HEAD";

  Plan plan;
  plan.t0 = NowNs() + 20'000'000;  // let the threads start
  plan.window_start = plan.t0 + SecondsToNs(o.warmup_s);
  plan.window_end = plan.window_start + SecondsToNs(o.duration_s);
  plan.hard_end = plan.window_end + SecondsToNs(o.drain_s);
  plan.rate = o.rate;
  plan.timeout = SecondsToNs(o.timeout_s);

  std::vector<std::unique_ptr<Worker>> workers;
  for (int w = 0; w < o.threads; ++w) {
    int share = o.connections / o.threads + (w < o.connections % o.threads ? 1 : 0);
    workers.push_back(std::make_unique<Worker>(target, pool, head, share, w, o.threads, plan));
  }
  std::atomic<bool> ok{true};
  std::vector<std::thread> threads;
  for (auto& w : workers) {
    threads.emplace_back([&ok, &w] {
      if (!w->Run()) ok = false;
    });
  }
  for (std::thread& t : threads) t.join();
  if (!ok) return 1;

  Stats total;
  for (auto& w : workers) total.Merge(w->stats());
  std::sort(total.latencies.begin(), total.latencies.end());
  // Open loop: a backlog served during the drain period took longer than the
  // window, so throughput is over the time it really took.
  double window_s = o.duration_s;
  if (o.rate > 0 && total.last_completion > plan.window_end) {
    window_s = static_cast<double>(total.last_completion - plan.window_start) / 1e9;
  }
  const uint64_t oks = total.latencies.size();
  const double rps = static_cast<double>(oks) / window_s;
  const double p50 = Percentile(total.latencies, 0.50);
  const double p90 = Percentile(total.latencies, 0.90);
  const double p99 = Percentile(total.latencies, 0.99);
  const double max =
      total.latencies.empty() ? 0 : static_cast<double>(total.latencies.back()) / 1e6;
  const char* mode = o.rate > 0 ? "open" : "closed";

  std::printf("loadgen %s %s %s: %s loop, %d connections, %d thread(s), %.1f s (+%.1f s warm-up)",
              o.label.empty() ? "-" : o.label.c_str(), o.method.c_str(), target.path.c_str(), mode,
              o.connections, o.threads, o.duration_s, o.warmup_s);
  if (o.rate > 0) std::printf(", target %.1f req/s", o.rate);
  std::printf("\n");
  std::printf("  2xx responses   %llu (%.1f req/s)\n", static_cast<unsigned long long>(oks), rps);
  std::printf("  latency ms      p50 %.3f  p90 %.3f  p99 %.3f  max %.3f%s\n", p50, p90, p99, max,
              o.rate > 0 ? "  (from scheduled send time)" : "");
  std::printf("  non-2xx         %llu", static_cast<unsigned long long>(total.non2xx));
  for (const auto& [status, n] : total.by_status) {
    std::printf("  [%d: %llu]", status, static_cast<unsigned long long>(n));
  }
  std::printf("\n");
  std::printf("  transport errors %llu  incomplete %llu  reconnects %llu\n",
              static_cast<unsigned long long>(total.transport_errors),
              static_cast<unsigned long long>(total.incomplete),
              static_cast<unsigned long long>(total.reconnects));
  std::printf(
      "RESULT label=%s mode=%s conns=%d threads=%d duration_s=%.3f warmup_s=%.3f target_rps=%.1f "
      "ok=%llu rps=%.1f p50_ms=%.3f p90_ms=%.3f p99_ms=%.3f max_ms=%.3f non2xx=%llu errors=%llu "
      "incomplete=%llu reconnects=%llu bodies=%zu body_wraps=%llu\n",
      o.label.empty() ? "-" : o.label.c_str(), mode, o.connections, o.threads, o.duration_s,
      o.warmup_s, o.rate, static_cast<unsigned long long>(oks), rps, p50, p90, p99, max,
      static_cast<unsigned long long>(total.non2xx),
      static_cast<unsigned long long>(total.transport_errors),
      static_cast<unsigned long long>(total.incomplete),
      static_cast<unsigned long long>(total.reconnects), pool.requests.size(),
      static_cast<unsigned long long>(pool.Wraps()));
  std::fflush(stdout);
  return oks > 0 ? 0 : 1;
}

}  // namespace
}  // namespace jitbroker::bench

int main(int argc, char** argv) { return jitbroker::bench::Main(argc, argv); }
