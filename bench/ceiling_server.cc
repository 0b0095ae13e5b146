// ceiling_server: the benchmark's ceiling, a trivial cpp-httplib server.
//
//   ceiling_server PORT [THREADS]
//
// Serves GET/POST /ping with a small JSON body on 127.0.0.1:PORT (0 picks a
// free port) with the same HTTP settings as the broker's listener
// (broker/http/server.cc): TCP_NODELAY, a worker pool of THREADS (default 64,
// as in bench/bench.yaml; cpp-httplib holds one keep-alive connection per
// worker), up to 1000 requests per keep-alive connection, 10 s read/write
// timeouts. Whatever the broker adds on top of this (auth, policy, minting,
// durable audit) is what bench/run.sh measures as the ratio b/a.
//
// Prints "ceiling listening on port N" once ready; stops on SIGINT/SIGTERM.
#include <signal.h>

#include <cerrno>
#include <charconv>
#include <cstdio>
#include <cstring>
#include <string_view>
#include <thread>

#include <httplib.h>

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

}  // namespace

int main(int argc, char** argv) {
  int port = 0;
  int threads = 64;
  if (argc < 2 || argc > 3 || !ParseInt(argv[1], 0, 65535, port) ||
      (argc == 3 && !ParseInt(argv[2], 1, 1024, threads))) {
    std::fprintf(stderr, "usage: ceiling_server PORT [THREADS]\n");
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
