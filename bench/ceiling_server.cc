// ceiling_server: the benchmark's ceiling, a trivial endpoint on the broker's
// own HTTP listener (broker/http/transport.h), and its floor.
//
//   ceiling_server PORT [THREADS [FLOOR_JOURNAL]] [--stack broker|httplib] [--io-threads N]
//                  [--file-sync interval|commit] [--file-sync-interval-ms N]
//
// Serves GET/POST /ping with a small JSON body on 127.0.0.1:PORT (0 picks a
// free port) on the same listener code and settings as the daemon
// (--stack broker, the default: TCP_NODELAY, THREADS handler threads, the
// same limits) or, for reference, on cpp-httplib 0.11.4 as the broker used
// before issue #10 (--stack httplib: a pool of THREADS threads, which must
// exceed the connection count since it holds one keep-alive connection per
// thread). Whatever the broker adds on top of this (auth, policy, minting,
// durable audit) is what bench/run.sh measures as the ratio b/a.
//
// With FLOOR_JOURNAL (a file path) it also serves the *floor*: the work every
// request of the broker must do by its specification, and nothing else, on
// the same HTTP stack, under the broker's durability rule (issue #15): an
// answer that releases a credential follows its audit record made durable in
// ONE place, the store; the JSONL file is a derived copy, written in order
// after each store commit and made durable in the background:
//   POST /floor/grant     one ES256 signature over a JWT-sized input, then one
//                         ~1 KiB audit line committed durably to a SQLite
//                         store (FLOOR_JOURNAL.db, WAL, synchronous=FULL) and
//                         then written to the JSONL file FLOOR_JOURNAL,
//                         group-committed by one writer thread as the broker's
//                         journal does, but with no index, no grant row, no
//                         chain and no JSON;
//   POST /floor/exchange  one RS256 (RSA-2048) verification first, as for a
//                         CI subject token, then the same as /floor/grant.
// --file-sync follows the broker's `audit.file_sync`:
//   interval (default)    the file is fdatasync'd by a background thread every
//                         --file-sync-interval-ms (200, the broker's
//                         `audit.file_sync_interval_ms` default) when something
//                         was written, and at shutdown: never on a request's
//                         critical path;
//   commit                the file is also fdatasync'd after each group's
//                         write, before its answers (the rule before issue #15).
// No broker can beat its floor; bench/run.sh prints floor/ceiling next to the
// broker's ratio and judges the broker's targets against the floor measured
// in the same run, in the same file-sync mode.
//
// Prints "ceiling listening on port N" once ready; stops on SIGINT/SIGTERM
// (the floor then syncs the file one last time and reports its commit and
// sync counts on stderr).
#include <signal.h>

#include <fcntl.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <charconv>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include <httplib.h>
#include <sqlite3.h>

#include "bench/write_all.h"
#include "broker/crypto/jose.h"
#include "broker/http/transport.h"

namespace {

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

// How the floor's JSONL file is made durable (bench/run.sh passes the
// broker's own `audit.file_sync`).
enum class FileSync { kInterval, kCommit };

// The durable part of the floor, under the rule of docs/concepts.md and issue
// #15: before its answer, every grant's audit record is durable in the SQLite
// store (WAL, synchronous=FULL); it is then written, in commit order, to the
// JSONL file, a derived copy. One writer thread group-commits whatever queued
// meanwhile (one transaction, then one write of the group's lines), as the
// broker's journal does, and wakes the group's callers after the write.
//   FileSync::kInterval  a syncer thread fdatasync()s the file every
//                        `interval` when something was written since the last
//                        sync, and once more at shutdown; a failed file write
//                        is counted, not fatal (the store has the record).
//   FileSync::kCommit    the writer also fdatasync()s the file before waking
//                        the group; a failed write or sync fails the group.
// Minimal on purpose: one table with no secondary index, no grant row, no hash
// chain.
class FloorJournal {
 public:
  // Takes ownership of both; `db` must be open in WAL mode.
  FloorJournal(int fd, sqlite3* db, FileSync mode, std::chrono::milliseconds interval)
      : fd_(fd), db_(db), mode_(mode), interval_(interval) {
    if (mode_ == FileSync::kInterval) {
      syncer_ = std::thread([this] { SyncLoop(); });
    }
    writer_ = std::thread([this] { Run(); });
  }
  ~FloorJournal() {
    {
      std::lock_guard lock(mu_);
      stopping_ = true;
    }
    queued_cv_.notify_one();
    writer_.join();  // drains the queue first
    if (syncer_.joinable()) {
      {
        std::lock_guard lock(sync_mu_);
        sync_stopping_ = true;
      }
      sync_cv_.notify_one();
      syncer_.join();  // syncs whatever was written since its last pass
    }
    std::fprintf(stderr,
                 "floor: file sync %s: %llu store commits, %llu file syncs, %llu file errors\n",
                 mode_ == FileSync::kCommit ? "commit" : "interval",
                 static_cast<unsigned long long>(commits_),
                 static_cast<unsigned long long>(file_syncs_.load()),
                 static_cast<unsigned long long>(file_errors_.load()));
    sqlite3_finalize(insert_);
    sqlite3_close(db_);
    ::close(fd_);
  }
  FloorJournal(const FloorJournal&) = delete;
  FloorJournal& operator=(const FloorJournal&) = delete;

  // Opens (creating) PATH for the JSONL lines and PATH.db for the store.
  static std::unique_ptr<FloorJournal> Open(const std::string& path, FileSync mode,
                                            std::chrono::milliseconds interval) {
    const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_APPEND | O_CLOEXEC, 0600);
    if (fd < 0) {
      return nullptr;
    }
    const std::string db_path = path + ".db";
    ::unlink(db_path.c_str());
    sqlite3* db = nullptr;
    if (sqlite3_open(db_path.c_str(), &db) != SQLITE_OK ||
        sqlite3_exec(db,
                     "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL;"
                     "CREATE TABLE audit (seq INTEGER PRIMARY KEY, body TEXT NOT NULL);",
                     nullptr, nullptr, nullptr) != SQLITE_OK) {
      sqlite3_close(db);
      ::close(fd);
      return nullptr;
    }
    return std::make_unique<FloorJournal>(fd, db, mode, interval);
  }
  // Returns once the line is durable in the store and written to the file
  // (and synced there too with FileSync::kCommit); false if that failed.
  bool Append(std::string_view line) {
    std::unique_lock lock(mu_);
    queue_.emplace_back(line);
    const uint64_t mine = ++appended_;
    queued_cv_.notify_one();
    done_cv_.wait(lock, [&] { return done_ >= mine || failed_; });
    return !failed_;
  }

 private:
  bool Store(const std::vector<std::string>& lines) {
    if (insert_ == nullptr && sqlite3_prepare_v2(db_, "INSERT INTO audit (body) VALUES (?)", -1,
                                                 &insert_, nullptr) != SQLITE_OK) {
      return false;
    }
    if (sqlite3_exec(db_, "BEGIN IMMEDIATE", nullptr, nullptr, nullptr) != SQLITE_OK) {
      return false;
    }
    bool ok = true;
    for (const std::string& line : lines) {
      sqlite3_bind_text(insert_, 1, line.data(), static_cast<int>(line.size()), SQLITE_STATIC);
      ok = ok && sqlite3_step(insert_) == SQLITE_DONE;
      sqlite3_reset(insert_);
    }
    return sqlite3_exec(db_, ok ? "COMMIT" : "ROLLBACK", nullptr, nullptr, nullptr) == SQLITE_OK &&
           ok;
  }

  // Writes the group's lines in order (page cache only, unless kCommit).
  bool WriteFile(const std::vector<std::string>& lines) {
    out_.clear();
    for (const std::string& line : lines) {
      out_ += line;
    }
    if (!bench::WriteAll(fd_, out_)) {
      ++file_errors_;
      return false;
    }
    if (mode_ == FileSync::kCommit) {
      if (::fdatasync(fd_) != 0) {
        ++file_errors_;
        return false;
      }
      ++file_syncs_;
    } else {
      std::lock_guard lock(sync_mu_);
      ++written_;
    }
    return true;
  }

  void Run() {
    std::vector<std::string> lines;
    while (true) {
      uint64_t upto = 0;
      {
        std::unique_lock lock(mu_);
        queued_cv_.wait(lock, [&] { return !queue_.empty() || stopping_; });
        if (queue_.empty()) {
          return;
        }
        lines.clear();
        lines.swap(queue_);
        upto = appended_;
      }
      // The store is the durable record: nothing is answered before it commits.
      bool ok = Store(lines);
      if (ok) {
        ++commits_;
        const bool written = WriteFile(lines);
        // With per-commit sync the file is a second durable place; otherwise a
        // lost line is the derived copy's problem, not the answer's.
        ok = written || mode_ == FileSync::kInterval;
      }
      {
        std::lock_guard lock(mu_);
        done_ = upto;
        failed_ = failed_ || !ok;
      }
      done_cv_.notify_all();
    }
  }

  // FileSync::kInterval: every interval_, fdatasync() when the file was
  // written since the last sync; once more when stopping.
  void SyncLoop() {
    std::unique_lock lock(sync_mu_);
    uint64_t synced = 0;
    while (true) {
      const bool stop = sync_cv_.wait_for(lock, interval_, [&] { return sync_stopping_; });
      if (written_ != synced) {
        const uint64_t upto = written_;
        lock.unlock();
        const bool ok = ::fdatasync(fd_) == 0;
        lock.lock();
        if (ok) {
          synced = upto;
          ++file_syncs_;
        } else {
          ++file_errors_;
        }
      }
      if (stop) {
        return;
      }
    }
  }

  int fd_;
  sqlite3* db_;
  const FileSync mode_;
  const std::chrono::milliseconds interval_;
  sqlite3_stmt* insert_ = nullptr;  // writer thread only
  std::string out_;                 // writer thread only
  uint64_t commits_ = 0;            // writer thread only (read after it joined)
  std::atomic<uint64_t> file_syncs_{0}, file_errors_{0};

  std::mutex mu_;  // the queue and the callers' wake-ups
  std::condition_variable queued_cv_, done_cv_;
  std::vector<std::string> queue_;
  uint64_t appended_ = 0, done_ = 0;
  bool failed_ = false, stopping_ = false;

  std::mutex sync_mu_;  // the writer's progress, seen by the syncer
  std::condition_variable sync_cv_;
  uint64_t written_ = 0;  // groups written to the file
  bool sync_stopping_ = false;

  std::thread syncer_, writer_;  // started in the constructor body, once the rest is initialised
};

// One endpoint's answer, whatever the stack that serves it.
struct Answer {
  int status = 200;
  std::string_view body;
};
using Endpoint = std::function<Answer()>;

// Serves the endpoints on the broker's own listener.
class BrokerStack final : public jitbroker::http::RequestHandler {
 public:
  explicit BrokerStack(std::map<std::string, Endpoint> post, std::map<std::string, Endpoint> get)
      : post_(std::move(post)), get_(std::move(get)) {}
  jitbroker::Result<jitbroker::http::RoutePlan> Plan(jitbroker::http::Request& head) override {
    const auto& table = head.method == "POST" ? post_ : get_;
    auto it = table.find(std::string(head.path()));
    if (it == table.end()) {
      return std::unexpected(jitbroker::NotFound("no_route", "no such endpoint"));
    }
    head.route_id = 0;
    jitbroker::http::RoutePlan plan;
    plan.max_body_bytes = 64 * 1024;
    return plan;
  }
  void Handle(jitbroker::http::Request& req, jitbroker::http::Response& res) override {
    const auto& table = req.method == "POST" ? post_ : get_;
    const Answer a = table.at(std::string(req.path()))();
    res.status = a.status;
    res.content_type = "application/json";
    res.body = std::string(a.body);
  }
  void RenderError(const jitbroker::http::Request&, const jitbroker::Error& e,
                   jitbroker::http::Response& res) override {
    res.status = jitbroker::InfoFor(e.code).http_status;
  }
  void Finished(const jitbroker::http::Request&, const jitbroker::http::Response&,
                std::chrono::steady_clock::duration) override {}

 private:
  std::map<std::string, Endpoint> post_, get_;
};

}  // namespace

int main(int argc, char** argv) {
  int port = 0;
  int threads = 64;
  int io_threads = 2;
  int file_sync_interval_ms = 200;
  std::string stack = "broker";
  std::string file_sync = "interval";
  std::vector<const char*> positional;
  bool bad = false;
  for (int i = 1; i < argc; ++i) {
    std::string_view a = argv[i];
    if (a == "--stack" && i + 1 < argc) {
      stack = argv[++i];
    } else if (a == "--file-sync" && i + 1 < argc) {
      file_sync = argv[++i];
    } else if (a == "--io-threads" && i + 1 < argc) {
      bad = bad || !ParseInt(argv[++i], 1, 64, io_threads);
    } else if (a == "--file-sync-interval-ms" && i + 1 < argc) {
      bad = bad || !ParseInt(argv[++i], 1, 3600 * 1000, file_sync_interval_ms);
    } else if (a.starts_with("--")) {
      bad = true;  // an unknown flag, or one without its value
    } else {
      positional.push_back(argv[i]);
    }
  }
  if (bad || positional.empty() || positional.size() > 3 ||
      !ParseInt(positional[0], 0, 65535, port) ||
      (positional.size() >= 2 && !ParseInt(positional[1], 1, 1024, threads)) ||
      (stack != "broker" && stack != "httplib") ||
      (file_sync != "interval" && file_sync != "commit")) {
    std::fprintf(stderr,
                 "usage: ceiling_server PORT [THREADS [FLOOR_JOURNAL]] [--stack broker|httplib] "
                 "[--io-threads N] [--file-sync interval|commit] [--file-sync-interval-ms N]\n");
    return 2;
  }

  // Signals are taken by this thread only; the server threads inherit the mask.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);
  signal(SIGPIPE, SIG_IGN);

  static constexpr std::string_view kPong = R"({"status":"ok"})";
  std::map<std::string, Endpoint> post, get;
  post["/ping"] = get["/ping"] = [] { return Answer{200, kPong}; };

  // The floor (see the top of this file), signed and verified with the
  // broker's own JOSE code. The inputs are fixed: the cost of a signature or
  // a verification does not depend on what is signed.
  std::unique_ptr<FloorJournal> journal;
  std::unique_ptr<jitbroker::crypto::SigningKey> es256;
  std::unique_ptr<jitbroker::crypto::VerifyKey> rs256;
  const std::string claims(420, 'c');   // a broker grant JWT's header.payload is ~420 bytes
  const std::string subject(900, 's');  // a GitHub Actions id_token's signing input is ~900
  std::string subject_sig;
  const std::string line = std::string(1100, 'r') + "\n";  // one chained audit record
  const std::string answer(700, 'a');                      // a grant response body
  if (positional.size() == 3) {
    using jitbroker::crypto::JwsAlg;
    using jitbroker::crypto::SigningKey;
    auto fail = [&] {
      std::fprintf(stderr, "ceiling_server: cannot set up the floor (%s): %s\n", positional[2],
                   std::strerror(errno));
      return 1;
    };
    journal = FloorJournal::Open(positional[2],
                                 file_sync == "commit" ? FileSync::kCommit : FileSync::kInterval,
                                 std::chrono::milliseconds(file_sync_interval_ms));
    auto es = SigningKey::Generate(JwsAlg::kES256);
    auto rs = SigningKey::Generate(JwsAlg::kRS256);
    if (!journal || !es || !rs) {
      return fail();
    }
    auto rs_sig = (*rs)->Sign(subject);
    auto rs_pub = jitbroker::crypto::VerifyKey::FromJwk((*rs)->PublicJwk());
    if (!rs_sig || !rs_pub) {
      return fail();
    }
    es256 = std::move(*es);
    rs256 = std::move(*rs_pub);
    subject_sig = std::move(*rs_sig);
    auto floor = [&](bool verify_subject) -> Endpoint {
      return [&, verify_subject]() -> Answer {
        if ((verify_subject && !rs256->Verify(subject, subject_sig)) || !es256->Sign(claims) ||
            !journal->Append(line)) {
          return Answer{500, {}};
        }
        return Answer{201, answer};
      };
    };
    post["/floor/grant"] = floor(false);
    post["/floor/exchange"] = floor(true);
  }

  int bound = -1;
  std::function<void()> serve_fn, stop_fn;
  httplib::Server svr;
  BrokerStack handler(post, get);
  std::unique_ptr<jitbroker::http::Transport> transport;
  if (stack == "httplib") {
    svr.set_tcp_nodelay(true);
    svr.set_keep_alive_max_count(1000);
    svr.set_read_timeout(10, 0);
    svr.set_write_timeout(10, 0);
    svr.set_payload_max_length(64 * 1024);
    const size_t pool = static_cast<size_t>(threads);
    svr.new_task_queue = [pool] { return new httplib::ThreadPool(pool); };
    for (auto& [path, fn] : post) {
      svr.Post(path, [fn](const httplib::Request&, httplib::Response& res) {
        const Answer a = fn();
        res.status = a.status;
        res.set_content(std::string(a.body), "application/json");
      });
    }
    for (auto& [path, fn] : get) {
      svr.Get(path, [fn](const httplib::Request&, httplib::Response& res) {
        const Answer a = fn();
        res.status = a.status;
        res.set_content(std::string(a.body), "application/json");
      });
    }
    bound = port == 0 ? svr.bind_to_any_port("127.0.0.1")
                      : (svr.bind_to_port("127.0.0.1", port) ? port : -1);
    serve_fn = [&svr] { svr.listen_after_bind(); };
    stop_fn = [&svr] { svr.stop(); };
  } else {
    // The daemon's defaults (broker/config/config.h ServerConfig), but for
    // the thread counts given here and no connection cap below the load.
    jitbroker::http::TransportOptions opts;
    opts.port = port;
    opts.worker_threads = threads;
    opts.io_threads = io_threads;
    opts.max_queued_requests = 4096;
    auto t = jitbroker::http::Transport::Create(opts, &handler);
    if (t) {
      transport = std::move(*t);
      auto p = transport->Bind();
      bound = p ? *p : -1;
    }
    serve_fn = [&transport] { transport->Serve(); };
    stop_fn = [&transport] { transport->Stop(); };
  }
  if (bound <= 0) {
    std::fprintf(stderr, "ceiling_server: cannot listen on 127.0.0.1:%d: %s\n", port,
                 std::strerror(errno));
    return 1;
  }
  // The socket is already listening: connections queue in the backlog until
  // the accept loop starts.
  std::thread serve(serve_fn);
  std::printf("ceiling listening on port %d\n", bound);
  std::fflush(stdout);

  int sig = 0;
  while (sigwait(&signals, &sig) != 0) {
  }
  stop_fn();
  serve.join();
  return 0;
}
