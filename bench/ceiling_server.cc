// ceiling_server: the benchmark's ceiling, a trivial cpp-httplib server.
//
//   ceiling_server PORT [THREADS [FLOOR_JOURNAL]]
//
// Serves GET/POST /ping with a small JSON body on 127.0.0.1:PORT (0 picks a
// free port) with the same HTTP settings as the broker's listener
// (broker/http/server.cc): TCP_NODELAY, a worker pool of THREADS (default 64,
// as in bench/bench.yaml; cpp-httplib holds one keep-alive connection per
// worker), up to 1000 requests per keep-alive connection, 10 s read/write
// timeouts. Whatever the broker adds on top of this (auth, policy, minting,
// durable audit) is what bench/run.sh measures as the ratio b/a.
//
// With FLOOR_JOURNAL (a file path) it also serves the *floor*: the work every
// request of the broker must do by its specification, and nothing else, on
// the same HTTP stack:
//   POST /floor/grant     one ES256 signature over a JWT-sized input, then one
//                         ~1 KiB line appended to FLOOR_JOURNAL and made
//                         durable before the answer (group commit: a single
//                         writer thread write()s and fdatasync()s whatever
//                         requests queued meanwhile, as the broker's journal
//                         does, but with no store, no chain and no JSON);
//   POST /floor/exchange  one RS256 (RSA-2048) verification first, as for a
//                         CI subject token, then the same as /floor/grant.
// No broker can beat its floor; bench/run.sh prints floor/ceiling next to the
// broker's ratio so a target can be judged against what is attainable here.
//
// Prints "ceiling listening on port N" once ready; stops on SIGINT/SIGTERM.
#include <signal.h>

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <charconv>
#include <condition_variable>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <thread>

#include <httplib.h>
#include <openssl/evp.h>
#include <openssl/rsa.h>

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

// Group commit to one append-only file: Append() returns once its line is
// written and fdatasync()ed.
class FloorJournal {
 public:
  explicit FloorJournal(int fd) : fd_(fd), writer_([this] { Run(); }) {}
  ~FloorJournal() {
    {
      std::lock_guard lock(mu_);
      stopping_ = true;
    }
    queued_cv_.notify_one();
    writer_.join();
    ::close(fd_);
  }
  bool Append(std::string_view line) {
    std::unique_lock lock(mu_);
    buffer_.append(line);
    const uint64_t mine = ++appended_;
    queued_cv_.notify_one();
    durable_cv_.wait(lock, [&] { return durable_ >= mine || failed_; });
    return !failed_;
  }

 private:
  void Run() {
    std::string out;
    while (true) {
      uint64_t upto = 0;
      {
        std::unique_lock lock(mu_);
        queued_cv_.wait(lock, [&] { return !buffer_.empty() || stopping_; });
        if (buffer_.empty()) {
          return;
        }
        out.clear();
        out.swap(buffer_);
        upto = appended_;
      }
      bool ok = true;
      for (size_t off = 0; ok && off < out.size();) {
        const ssize_t n = ::write(fd_, out.data() + off, out.size() - off);
        ok = n > 0 || (n < 0 && errno == EINTR);
        off += n > 0 ? static_cast<size_t>(n) : 0;
      }
      ok = ok && ::fdatasync(fd_) == 0;
      {
        std::lock_guard lock(mu_);
        durable_ = upto;
        failed_ = failed_ || !ok;
      }
      durable_cv_.notify_all();
    }
  }

  int fd_;
  std::mutex mu_;
  std::condition_variable queued_cv_, durable_cv_;
  std::string buffer_;
  uint64_t appended_ = 0, durable_ = 0;
  bool failed_ = false, stopping_ = false;
  std::thread writer_;  // last: started once the rest is initialised
};

struct PkeyFree {
  void operator()(EVP_PKEY* k) const { EVP_PKEY_free(k); }
};
using Pkey = std::unique_ptr<EVP_PKEY, PkeyFree>;

bool Sign(EVP_PKEY* key, std::string_view data, std::string& sig) {
  EVP_MD_CTX* ctx = EVP_MD_CTX_new();
  size_t n = 0;
  bool ok = ctx != nullptr && EVP_DigestSignInit(ctx, nullptr, EVP_sha256(), nullptr, key) == 1 &&
            EVP_DigestSign(ctx, nullptr, &n, nullptr, 0) == 1;
  if (ok) {
    sig.resize(n);
    ok = EVP_DigestSign(ctx, reinterpret_cast<unsigned char*>(sig.data()), &n,
                        reinterpret_cast<const unsigned char*>(data.data()), data.size()) == 1;
    sig.resize(n);
  }
  EVP_MD_CTX_free(ctx);
  return ok;
}

bool Verify(EVP_PKEY* key, std::string_view data, std::string_view sig) {
  EVP_MD_CTX* ctx = EVP_MD_CTX_new();
  const bool ok =
      ctx != nullptr && EVP_DigestVerifyInit(ctx, nullptr, EVP_sha256(), nullptr, key) == 1 &&
      EVP_DigestVerify(ctx, reinterpret_cast<const unsigned char*>(sig.data()), sig.size(),
                       reinterpret_cast<const unsigned char*>(data.data()), data.size()) == 1;
  EVP_MD_CTX_free(ctx);
  return ok;
}

}  // namespace

int main(int argc, char** argv) {
  int port = 0;
  int threads = 64;
  if (argc < 2 || argc > 4 || !ParseInt(argv[1], 0, 65535, port) ||
      (argc >= 3 && !ParseInt(argv[2], 1, 1024, threads))) {
    std::fprintf(stderr, "usage: ceiling_server PORT [THREADS [FLOOR_JOURNAL]]\n");
    return 2;
  }

  // Signals are taken by this thread only; the server threads inherit the mask.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);
  signal(SIGPIPE, SIG_IGN);

  httplib::Server svr;
  svr.set_tcp_nodelay(true);
  svr.set_keep_alive_max_count(1000);
  svr.set_read_timeout(10, 0);
  svr.set_write_timeout(10, 0);
  svr.set_payload_max_length(64 * 1024);
  const size_t pool = static_cast<size_t>(threads);
  svr.new_task_queue = [pool] { return new httplib::ThreadPool(pool); };

  auto ping = [](const httplib::Request&, httplib::Response& res) {
    res.set_content(R"({"status":"ok"})", "application/json");
  };
  svr.Get("/ping", ping);
  svr.Post("/ping", ping);

  // The floor (see the top of this file). The inputs are fixed: the cost of
  // a signature or a verification does not depend on what is signed.
  std::unique_ptr<FloorJournal> journal;
  Pkey es256(EVP_EC_gen("P-256"));
  Pkey rs256(EVP_RSA_gen(2048));
  const std::string claims(420, 'c');  // a broker grant JWT's header.payload is ~420 bytes
  const std::string subject(900, 's');  // a GitHub Actions id_token's signing input is ~900
  std::string subject_sig;
  const std::string line = std::string(1100, 'r') + "\n";  // one chained audit record
  const std::string answer(700, 'a');                      // a grant response body
  if (argc == 4) {
    const int fd = ::open(argv[3], O_WRONLY | O_CREAT | O_TRUNC | O_APPEND | O_CLOEXEC, 0600);
    if (fd < 0 || !es256 || !rs256 || !Sign(rs256.get(), subject, subject_sig)) {
      std::fprintf(stderr, "ceiling_server: cannot set up the floor (%s): %s\n", argv[3],
                   std::strerror(errno));
      return 1;
    }
    journal = std::make_unique<FloorJournal>(fd);
    auto floor = [&](bool verify_subject) {
      return [&, verify_subject](const httplib::Request&, httplib::Response& res) {
        std::string sig;
        if ((verify_subject && !Verify(rs256.get(), subject, subject_sig)) ||
            !Sign(es256.get(), claims, sig) || !journal->Append(line)) {
          res.status = 500;
          return;
        }
        res.status = 201;
        res.set_content(answer, "application/json");
      };
    };
    svr.Post("/floor/grant", floor(false));
    svr.Post("/floor/exchange", floor(true));
  }

  int bound = port == 0 ? svr.bind_to_any_port("127.0.0.1")
                        : (svr.bind_to_port("127.0.0.1", port) ? port : -1);
  if (bound <= 0) {
    std::fprintf(stderr, "ceiling_server: cannot listen on 127.0.0.1:%d: %s\n", port,
                 std::strerror(errno));
    return 1;
  }
  // The socket is already listening: connections queue in the backlog until
  // the accept loop starts.
  std::thread serve([&svr] { svr.listen_after_bind(); });
  std::printf("ceiling listening on port %d\n", bound);
  std::fflush(stdout);

  int sig = 0;
  while (sigwait(&signals, &sig) != 0) {
  }
  svr.stop();
  serve.join();
  return 0;
}
