// audit_verify_bench: how fast `jitctl audit verify --file` checks a large
// audit file, and with how much memory (issue #15).
//
// Writes --records N hash-chained records (default 1,000,000) to a temporary
// JSONL file, as the journal writes them: alternately grant.decided and
// credential.minted bodies built by broker/audit/events.h (about 1 KiB each,
// like a real file), with a signed audit.checkpoint record after every
// --checkpoint-every records (default 1000; 0: none). Then it times
//
//   in-process  the streaming verifier over the file (VerifyAnchoredChainFile,
//               with the audit key, as jitctl runs it);
//   jitctl      `jitctl audit verify --file F --jwks K` as a subprocess (the
//               binary named by --jitctl), its wall time and peak RSS
//               (getrusage(RUSAGE_CHILDREN).ru_maxrss).
//
// The file is read from the page cache (it was just written): this measures
// the verifier, not the disk.
//
//   audit_verify_bench [--records N] [--checkpoint-every K] [--jitctl PATH]
//                      [--repeat R] [--reference-path] [--strict]
//
// --reference-path: the in-process run judges every line by the verifier's
// reference path (nlohmann parse, re-dump, hash of the re-dump), i.e. the
// verifier before its fast path, for comparison.
//
// Output: progress on stderr, then one RESULT line per mode with records/s
// (the best of --repeat runs) and a PASS/FAIL line against the target of
// 100,000 records/s. Exit: 0 ok; 1 setup or verification error, or (with
// --strict) a missed target; 2 usage. The temporary files are deleted at exit.
#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "bench/write_all.h"
#include "broker/audit/checkpoint.h"
#include "broker/audit/events.h"
#include "broker/crypto/crypto.h"
#include "broker/crypto/jose.h"
#include "jitbroker/audit.h"
#include "jitbroker/states.h"
#include "jitbroker/store.h"

extern char** environ;

namespace jitbroker::bench {
namespace {

using Json = nlohmann::json;
using SteadyClock = std::chrono::steady_clock;

constexpr double kTargetRecordsPerSecond = 100000;

struct Flags {
  int64_t records = 1'000'000;
  int64_t checkpoint_every = 1000;
  std::string jitctl;
  int repeat = 1;
  bool strict = false;
  bool reference_path = false;
};

[[noreturn]] void Usage() {
  std::fprintf(stderr,
               "usage: audit_verify_bench [--records N] [--checkpoint-every K] [--jitctl PATH] "
               "[--repeat R] [--reference-path] [--strict]\n");
  std::exit(2);
}

Flags ParseFlags(int argc, char** argv) {
  Flags f;
  for (int i = 1; i < argc; ++i) {
    const std::string_view a = argv[i];
    const auto next = [&]() -> std::string {
      if (i + 1 >= argc) {
        Usage();
      }
      return argv[++i];
    };
    if (a == "--records") {
      f.records = std::atoll(next().c_str());
    } else if (a == "--checkpoint-every") {
      f.checkpoint_every = std::atoll(next().c_str());
    } else if (a == "--jitctl") {
      f.jitctl = next();
    } else if (a == "--repeat") {
      f.repeat = std::atoi(next().c_str());
    } else if (a == "--strict") {
      f.strict = true;
    } else if (a == "--reference-path") {
      f.reference_path = true;
    } else {
      Usage();
    }
  }
  if (f.records < 1 || f.checkpoint_every < 0 || f.repeat < 1) {
    Usage();
  }
  return f;
}

// The temporary files, removed at exit and on SIGINT/SIGTERM (fixed-size
// buffers: the signal handler may only call unlink).
struct TempPaths {
  char audit[64] = "";
  char jwks[64] = "";
};
TempPaths g_temp;  // NOLINT: read by the signal handler

void RemoveTempFiles() {
  for (const char* p : {g_temp.audit, g_temp.jwks}) {
    if (p[0] != '\0') {
      ::unlink(p);
    }
  }
}

extern "C" void OnSignal(int sig) {
  RemoveTempFiles();
  ::_exit(128 + sig);
}

// A temporary file from `tmpl` (ending in XXXXXX), its path kept in `out`.
int MakeTemp(const char* tmpl, char (&out)[64]) {
  std::snprintf(out, sizeof out, "%s", tmpl);
  return ::mkstemp(out);
}

GrantRecord BenchGrant(int64_t i, TimePoint now) {
  GrantRecord g;
  g.id = crypto::NewPublicId("grt_", 16);
  g.session_id = "ses_" + std::to_string(1000000 + i / 20) + "gba69GVM8gtCnKF9lJkaD";
  g.principal_id = "engineer" + std::to_string(i % 97) + "@example.com";
  g.agent_id = "agent-" + std::to_string(i % 13);
  g.task_id = "TASK-" + std::to_string(i / 50);
  g.tool = i % 3 == 0 ? "github.contents" : "mcp.search";
  g.operation = "read";
  g.resource = "github://acme-corp/service-" + std::to_string(i % 211);
  g.issuer = i % 3 == 0 ? "github_app" : "internal";
  g.parameters = {{"path", "src/module_" + std::to_string(i % 1009) + ".cc"}, {"ref", "main"}};
  g.scope = {{"repositories", {"acme-corp/service-" + std::to_string(i % 211)}}};
  g.ttl_seconds = 300;
  g.tier = "read";
  g.decision = {{"result", "allow"},
                {"code", "allowed"},
                {"reason", "tier \"read\" (auto_allow) on \"" + g.resource +
                               "\" is inside the task scope and principal \"" + g.principal_id +
                               "\"'s roles"},
                {"matched_rule", "operation:read"},
                {"policy_version", "2026-11-01.3"}};
  g.expires_at = now + std::chrono::seconds(300);
  return g;
}

// Writes the audit file and the JWKS of its checkpoint key.
bool Generate(const Flags& f, int audit_fd, int jwks_fd) {
  auto key = crypto::SigningKey::Generate(crypto::JwsAlg::kES256);
  if (!key) {
    std::fprintf(stderr, "audit_verify_bench: key: %s\n", key.error().ToString().c_str());
    return false;
  }
  const std::string jwks = Json{{"keys", {(*key)->PublicJwk()}}}.dump() + "\n";
  if (!::bench::WriteAll(jwks_fd, jwks)) {
    return false;
  }
  const TimePoint start = FromUnixSeconds(1'796'000'000);
  std::optional<ChainHead> head;
  std::string buffer;
  buffer.reserve(size_t{8} << 20);
  int64_t since_checkpoint = 0;
  int64_t written = 0;
  const auto append = [&](Json event) {
    AuditRecord rec = ChainPrepared(head, PrepareAuditEvent(std::move(event)));
    head = ChainHead{rec.seq, rec.hash};
    buffer += rec.text;
    buffer += '\n';
    ++written;
    if (buffer.size() >= (size_t{8} << 20)) {
      if (!::bench::WriteAll(audit_fd, buffer)) {
        return false;
      }
      buffer.clear();
    }
    return true;
  };
  const auto t0 = SteadyClock::now();
  for (int64_t i = 0; written < f.records; ++i) {
    const TimePoint now = start + std::chrono::milliseconds(i * 7);
    GrantRecord g = BenchGrant(i / 2, now);
    const bool minted = i % 2 == 1;
    if (minted) {
      g.state = GrantState::kActive;
      g.credential_sha256 = crypto::Sha256Hex(g.id);
      g.credential_audit = {{"audience", "mcp.internal"},
                            {"kid", "mqXUuVunfI7O0rfYlP-phK3HoE2aPQt60ChIzgP8ggY"}};
    } else {
      g.state = GrantState::kAllowed;
    }
    const std::string request_id = crypto::NewPublicId("req_", 16);
    if (!append(audit::GrantEvent(minted ? "credential.minted" : "grant.decided", g, now,
                                  minted ? "minted" : "allowed", request_id))) {
      return false;
    }
    ++since_checkpoint;
    if (f.checkpoint_every > 0 && since_checkpoint == f.checkpoint_every && written < f.records) {
      auto cp = audit::MakeCheckpointEvent(**key, head, now, "records", since_checkpoint);
      if (!cp) {
        std::fprintf(stderr, "audit_verify_bench: checkpoint: %s\n", cp.error().ToString().c_str());
        return false;
      }
      if (!append(std::move(*cp))) {
        return false;
      }
      since_checkpoint = 0;
    }
    if (written % 100000 == 0 || written == f.records) {
      const double s = std::chrono::duration<double>(SteadyClock::now() - t0).count();
      std::fprintf(stderr, "audit_verify_bench: generated %lld/%lld records (%.1f s)\n",
                   static_cast<long long>(written), static_cast<long long>(f.records), s);
    }
  }
  return ::bench::WriteAll(audit_fd, buffer);
}

struct Measured {
  bool ok = false;
  int64_t records = 0;
  double seconds = 0;
  long max_rss_kib = 0;  // jitctl only
  std::string detail;
};

Measured InProcess(const std::string& audit_path, const audit::CheckpointKeys& keys,
                   bool reference_path) {
  Measured m;
  audit::AnchorOptions ao;
  ao.keys = &keys;
  const auto t0 = SteadyClock::now();
  Result<audit::AnchorReport> r = std::unexpected(Error{});
  if (!reference_path) {
    r = audit::VerifyAnchoredChainFile(audit_path, ao);
  } else {
    // VerifyAnchoredChainFile's loop, with every line on the reference path.
    audit::AnchoredChainVerifier verifier(ao);
    verifier.UseReferencePathOnlyForTesting();
    const int fd = ::open(audit_path.c_str(), O_RDONLY | O_CLOEXEC);
    std::string buffer(audit::kAuditReadChunkBytes, '\0');
    ssize_t n = 0;
    while (fd >= 0 && !verifier.Broken() && (n = ::read(fd, buffer.data(), buffer.size())) > 0) {
      verifier.Feed(std::string_view(buffer.data(), static_cast<size_t>(n)));
    }
    if (fd >= 0) {
      ::close(fd);
    }
    r = verifier.Finish();
  }
  m.seconds = std::chrono::duration<double>(SteadyClock::now() - t0).count();
  if (!r) {
    m.detail = r.error().ToString();
    return m;
  }
  m.ok = r->ok;
  m.records = r->chain.records;
  m.detail = r->ok ? std::to_string(r->checkpoints) + " checkpoints" : r->problem;
  return m;
}

Measured Jitctl(const std::string& jitctl, const std::string& audit_path,
                const std::string& jwks_path) {
  Measured m;
  int out[2];
  if (::pipe(out) != 0) {
    m.detail = "pipe failed";
    return m;
  }
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_adddup2(&actions, out[1], STDOUT_FILENO);
  posix_spawn_file_actions_addclose(&actions, out[0]);
  posix_spawn_file_actions_addclose(&actions, out[1]);
  std::vector<std::string> args = {jitctl,   "audit",    "verify", "--json",
                                   "--file", audit_path, "--jwks", jwks_path};
  std::vector<char*> argv;
  for (std::string& a : args) {
    argv.push_back(a.data());
  }
  argv.push_back(nullptr);
  pid_t pid = 0;
  const auto t0 = SteadyClock::now();
  const int rc = ::posix_spawn(&pid, jitctl.c_str(), &actions, nullptr, argv.data(), environ);
  posix_spawn_file_actions_destroy(&actions);
  ::close(out[1]);
  if (rc != 0) {
    ::close(out[0]);
    m.detail = std::string("cannot run ") + jitctl + ": " + std::strerror(rc);
    return m;
  }
  std::string output;
  char buf[4096];
  for (;;) {
    const ssize_t n = ::read(out[0], buf, sizeof buf);
    if (n < 0 && errno == EINTR) {
      continue;
    }
    if (n <= 0) {
      break;
    }
    output.append(buf, static_cast<size_t>(n));
  }
  ::close(out[0]);
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  m.seconds = std::chrono::duration<double>(SteadyClock::now() - t0).count();
  rusage usage{};
  ::getrusage(RUSAGE_CHILDREN, &usage);
  m.max_rss_kib = usage.ru_maxrss;
  const Json j = Json::parse(output, nullptr, /*allow_exceptions=*/false);
  if (!WIFEXITED(status) || !j.is_object()) {
    m.detail = "jitctl failed: " + output;
    return m;
  }
  m.ok = WEXITSTATUS(status) == 0 && j.value("ok", false);
  m.records = j.value("records", int64_t{0});
  m.detail = m.ok ? std::to_string(j.value("checkpoints", int64_t{0})) + " checkpoints"
                  : j.value("problem", std::string("exit ") + std::to_string(WEXITSTATUS(status)));
  return m;
}

int Run(const Flags& f) {
  const char* tmpdir = std::getenv("TMPDIR");
  const std::string dir = tmpdir != nullptr && std::strlen(tmpdir) < 32 ? tmpdir : "/tmp";
  ::signal(SIGINT, OnSignal);
  ::signal(SIGTERM, OnSignal);
  std::atexit(RemoveTempFiles);
  const int audit_fd = MakeTemp((dir + "/audit-verify-bench-XXXXXX").c_str(), g_temp.audit);
  const int jwks_fd = MakeTemp((dir + "/audit-verify-bench-jwks-XXXXXX").c_str(), g_temp.jwks);
  if (audit_fd < 0 || jwks_fd < 0) {
    std::fprintf(stderr, "audit_verify_bench: mkstemp in %s: %s\n", dir.c_str(),
                 std::strerror(errno));
    return 1;
  }
  const bool generated = Generate(f, audit_fd, jwks_fd);
  ::close(audit_fd);
  ::close(jwks_fd);
  if (!generated) {
    std::fprintf(stderr, "audit_verify_bench: writing %s failed\n", g_temp.audit);
    return 1;
  }
  struct stat st{};
  ::stat(g_temp.audit, &st);
  const double mib = static_cast<double>(st.st_size) / (1024.0 * 1024.0);
  std::fprintf(stderr, "audit_verify_bench: %s: %.0f MiB, %.0f bytes per record\n", g_temp.audit,
               mib, static_cast<double>(st.st_size) / static_cast<double>(f.records));

  // The key as jitctl loads it: from the JWKS file.
  std::string jwks_text;
  {
    const int fd = ::open(g_temp.jwks, O_RDONLY | O_CLOEXEC);
    char buf[4096];
    ssize_t n = 0;
    while (fd >= 0 && (n = ::read(fd, buf, sizeof buf)) > 0) {
      jwks_text.append(buf, static_cast<size_t>(n));
    }
    if (fd >= 0) {
      ::close(fd);
    }
  }
  auto keys = audit::CheckpointKeys::FromJwks(Json::parse(jwks_text, nullptr, false));
  if (!keys) {
    std::fprintf(stderr, "audit_verify_bench: keys: %s\n", keys.error().ToString().c_str());
    return 1;
  }

  bool all_ok = true;
  bool met = true;
  const auto report = [&](const char* mode, const Measured& m) {
    const double rate = m.seconds > 0 ? static_cast<double>(m.records) / m.seconds : 0;
    if (!m.ok || m.records != f.records) {
      std::fprintf(stderr, "audit_verify_bench: %s: verification failed: %s (%lld records)\n", mode,
                   m.detail.c_str(), static_cast<long long>(m.records));
      all_ok = false;
    }
    met = met && rate >= kTargetRecordsPerSecond;
    std::printf(
        "RESULT bench=audit_verify mode=%s records=%lld file_mib=%.0f seconds=%.2f "
        "records_per_s=%.0f mib_per_s=%.0f",
        mode, static_cast<long long>(m.records), mib, m.seconds, rate,
        m.seconds > 0 ? mib / m.seconds : 0);
    if (m.max_rss_kib > 0) {
      std::printf(" peak_rss_mib=%.1f", static_cast<double>(m.max_rss_kib) / 1024.0);
    }
    std::printf(" (%s)\n", m.detail.c_str());
    std::fflush(stdout);
  };

  Measured best;
  for (int r = 0; r < f.repeat; ++r) {
    std::fprintf(stderr, "audit_verify_bench: in-process run %d/%d\n", r + 1, f.repeat);
    Measured m = InProcess(g_temp.audit, *keys, f.reference_path);
    if (r == 0 || !m.ok || m.seconds < best.seconds) {
      best = m;
    }
  }
  report(f.reference_path ? "in-process-reference" : "in-process", best);
  if (!f.jitctl.empty()) {
    for (int r = 0; r < f.repeat; ++r) {
      std::fprintf(stderr, "audit_verify_bench: jitctl run %d/%d\n", r + 1, f.repeat);
      Measured m = Jitctl(f.jitctl, g_temp.audit, g_temp.jwks);
      if (r == 0 || !m.ok || m.seconds < best.seconds) {
        best = m;
      }
    }
    report("jitctl", best);
  } else {
    std::fprintf(stderr, "audit_verify_bench: no --jitctl PATH: the jitctl run is skipped\n");
  }
  std::printf("%s: target %.0f records/s\n",
              !all_ok ? "ERROR"
              : met   ? "PASS"
                      : "FAIL",
              kTargetRecordsPerSecond);
  if (!all_ok) {
    return 1;
  }
  return met || !f.strict ? 0 : 1;
}

}  // namespace
}  // namespace jitbroker::bench

int main(int argc, char** argv) {
  return jitbroker::bench::Run(jitbroker::bench::ParseFlags(argc, argv));
}
