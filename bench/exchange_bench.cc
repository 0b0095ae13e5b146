// exchange_bench: the OIDC side of the token-exchange benchmark (bench/run.sh,
// phase (d)). It plays GitHub Actions' token issuer on loopback and pre-signs
// the subject tokens loadgen sends, so the measurement is the broker's
// exchange path, not RSA signing in the client:
//
//   exchange_bench --out FILE [--tokens N] [--runs R] [--audience AUD]
//                  [--policy NAME] [--threads T]
//
//   1. generates an RS256 key (2048 bit) in memory;
//   2. serves discovery (/.well-known/openid-configuration) and the JWKS
//      (/.well-known/jwks) on 127.0.0.1 with a kernel-chosen port;
//   3. signs N GitHub Actions id_tokens (realistic claims; distinct jti, so
//      the broker's replay protection stays on; R distinct runs, so R implicit
//      sessions; exp 15 min) on T threads and writes one RFC 8693 form body
//      per line to FILE (mode 0600), plus FILE.probe with one more for a
//      by-hand check;
//   4. prints "issuer http://127.0.0.1:PORT", the signing rate, and
//      "exchange_bench listening on port PORT" once FILE is complete;
//   5. serves until SIGINT/SIGTERM.
// No key is ever written to disk; the tokens are useless after 15 minutes.
#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <charconv>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include <httplib.h>
#include <nlohmann/json.hpp>

#include "bench/write_all.h"
#include "broker/crypto/crypto.h"
#include "broker/crypto/jose.h"

namespace {

using jitbroker::crypto::SigningKey;
using nlohmann::json;

struct Options {
  std::string out;
  int tokens = 40000;
  int runs = 64;
  std::string audience = "jitbroker.bench.example";
  std::string policy = "bench-ci";
  int threads = 0;  // 0 = hardware concurrency
};

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

int Usage() {
  std::fprintf(stderr,
               "usage: exchange_bench --out FILE [--tokens N] [--runs R] [--audience AUD] "
               "[--policy NAME] [--threads T]\n");
  return 2;
}

std::string FormEncode(std::string_view s) {
  static constexpr char kHex[] = "0123456789ABCDEF";
  std::string out;
  for (unsigned char c : s) {
    if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' ||
        c == '.' || c == '_' || c == '~') {
      out += static_cast<char>(c);
    } else {
      out += '%';
      out += kHex[c >> 4];
      out += kHex[c & 15];
    }
  }
  return out;
}

json Claims(const std::string& issuer, const std::string& audience, int64_t now, int index,
            int runs) {
  const std::string run_id = std::to_string(7000000 + index % runs);
  return {{"jti", "bench-" + std::to_string(index) + "-" + jitbroker::crypto::NewId("", 8)},
          {"sub", "repo:acme/payment-service:ref:refs/heads/main"},
          {"aud", audience},
          {"ref", "refs/heads/main"},
          {"sha", "e7c1f0a3b5d8e9f0a1b2c3d4e5f60718293a4b5c"},
          {"repository", "acme/payment-service"},
          {"repository_owner", "acme"},
          {"repository_owner_id", "123"},
          {"run_id", run_id},
          {"run_number", "42"},
          {"run_attempt", "1"},
          {"repository_visibility", "private"},
          {"repository_id", "456"},
          {"actor_id", "789"},
          {"actor", "octocat"},
          {"workflow", "deploy"},
          {"event_name", "push"},
          {"ref_type", "branch"},
          {"workflow_ref", "acme/payment-service/.github/workflows/deploy.yml@refs/heads/main"},
          {"job_workflow_ref", "acme/payment-service/.github/workflows/deploy.yml@refs/heads/main"},
          {"runner_environment", "github-hosted"},
          {"iss", issuer},
          {"nbf", now - 600},
          {"exp", now + 900},
          {"iat", now}};
}

}  // namespace

int main(int argc, char** argv) {
  Options o;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (i + 1 >= argc) {
      return Usage();
    }
    const char* v = argv[++i];
    if (a == "--out") {
      o.out = v;
    } else if (a == "--tokens") {
      if (!ParseInt(v, 1, 10'000'000, o.tokens)) return Usage();
    } else if (a == "--runs") {
      if (!ParseInt(v, 1, 1'000'000, o.runs)) return Usage();
    } else if (a == "--audience") {
      o.audience = v;
    } else if (a == "--policy") {
      o.policy = v;
    } else if (a == "--threads") {
      if (!ParseInt(v, 1, 256, o.threads)) return Usage();
    } else {
      return Usage();
    }
  }
  if (o.out.empty()) {
    return Usage();
  }
  if (o.threads == 0) {
    o.threads = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  }

  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);
  signal(SIGPIPE, SIG_IGN);

  auto key = SigningKey::Generate(jitbroker::crypto::JwsAlg::kRS256);
  if (!key) {
    std::fprintf(stderr, "exchange_bench: %s\n", key.error().ToString().c_str());
    return 1;
  }
  const std::string kid = "bench-rsa-1";
  json jwk = (*key)->PublicJwk();
  jwk["kid"] = kid;
  const std::string jwks = json{{"keys", json::array({jwk})}}.dump();

  httplib::Server svr;
  svr.set_tcp_nodelay(true);
  const int port = svr.bind_to_any_port("127.0.0.1");
  if (port <= 0) {
    std::fprintf(stderr, "exchange_bench: cannot listen on 127.0.0.1\n");
    return 1;
  }
  const std::string issuer = "http://127.0.0.1:" + std::to_string(port);
  std::atomic<int> jwks_hits{0};
  svr.Get("/.well-known/openid-configuration",
          [&](const httplib::Request&, httplib::Response& res) {
            res.set_content(json{{"issuer", issuer},
                                 {"jwks_uri", issuer + "/.well-known/jwks"},
                                 {"id_token_signing_alg_values_supported", {"RS256"}}}
                                .dump(),
                            "application/json");
          });
  svr.Get("/.well-known/jwks", [&](const httplib::Request&, httplib::Response& res) {
    ++jwks_hits;
    res.set_content(jwks, "application/json");
  });
  std::thread serve([&svr] { svr.listen_after_bind(); });
  std::printf("issuer %s\n", issuer.c_str());
  std::fflush(stdout);

  // Pre-sign the pool on every core: this is the CI side's cost, not the broker's.
  const auto start = std::chrono::steady_clock::now();
  const int64_t now = std::chrono::duration_cast<std::chrono::seconds>(
                          std::chrono::system_clock::now().time_since_epoch())
                          .count();
  const int total = o.tokens + 1;  // + the probe
  std::vector<std::string> bodies(static_cast<size_t>(total));
  std::atomic<int> next{0};
  std::atomic<bool> failed{false};
  const std::string prefix =
      "grant_type=" + FormEncode("urn:ietf:params:oauth:grant-type:token-exchange") +
      "&subject_token_type=" + FormEncode("urn:ietf:params:oauth:token-type:id_token") +
      "&audience=" + FormEncode(o.policy) + "&subject_token=";
  std::vector<std::thread> signers;
  for (int t = 0; t < o.threads; ++t) {
    signers.emplace_back([&] {
      for (int i = next++; i < total; i = next++) {
        auto token = (*key)->SignJwt(json{{"kid", kid}, {"x5t", "bench"}},
                                     Claims(issuer, o.audience, now, i, o.runs));
        if (!token) {
          failed = true;
          return;
        }
        bodies[static_cast<size_t>(i)] = prefix + FormEncode(*token);
      }
    });
  }
  for (auto& t : signers) {
    t.join();
  }
  if (failed) {
    std::fprintf(stderr, "exchange_bench: signing failed\n");
    svr.stop();
    serve.join();
    return 1;
  }
  const double secs =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();

  auto write_file = [](const std::string& path, const std::string& data) {
    const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0) {
      return false;
    }
    const bool ok = bench::WriteAll(fd, data);
    return ::close(fd) == 0 && ok;
  };
  std::string pool;
  pool.reserve(bodies.size() * (bodies[0].size() + 1));
  for (int i = 1; i < total; ++i) {
    pool += bodies[static_cast<size_t>(i)];
    pool += '\n';
  }
  if (!write_file(o.out, pool) || !write_file(o.out + ".probe", bodies[0])) {
    std::fprintf(stderr, "exchange_bench: cannot write %s: %s\n", o.out.c_str(),
                 std::strerror(errno));
    svr.stop();
    serve.join();
    return 1;
  }
  std::printf(
      "signed %d RS256 tokens over %d runs in %.1f s (%.0f/s on %d threads), %.0f bytes each\n",
      o.tokens, o.runs, secs, total / secs, o.threads, static_cast<double>(pool.size()) / o.tokens);
  std::printf("exchange_bench listening on port %d\n", port);
  std::fflush(stdout);

  int sig = 0;
  while (sigwait(&signals, &sig) != 0) {
  }
  std::printf("jwks requests served: %d\n", jwks_hits.load());
  svr.stop();
  serve.join();
  return 0;
}
