// git_proxy_bench: clone and push of a large repository through the broker's
// git proxy (docs/proxy.md) against the same operations done directly, in
// one run, on one machine.
//
// Upstream: a smart-HTTP git server (tests/support/git_http_server.h: `git
// http-backend` behind cpp-httplib) that accepts only installation tokens
// the fake GitHub minted for the repository, as github.com does. Direct: git
// with such a token (a grant of the same session, through the credential
// helper's old path). Through the broker: git with its remote at
// /git/HOST/OWNER/REPO.git and `jitctl git-credential` answering with the
// session. The repository holds --size-mb of random (incompressible) data in
// one commit; every push goes to a fresh empty upstream repository, so each
// run does the same work.
//
// Target (issue "Git and the GitHub API through the broker"): through the
// broker >= 0.8 x the direct throughput for clone and for push, and the
// broker's RSS grows by <= 64 MB during a transfer (sampled every 20 ms from
// /proc/PID/status, against its RSS just before).
//
// Output: a table and one line
//   RESULT bench=git_proxy size_mb=… clone_ratio=… push_ratio=… rss_growth_mb=… …
// Exit: 0 ok; 1 setup error or (--strict) a missed target; 2 usage.
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <iterator>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <httplib.h>
#include <nlohmann/json.hpp>

#include "broker/crypto/crypto.h"
#include "broker/crypto/jose.h"
#include "tests/fakes/fake_github.h"
#include "tests/support/git_http_server.h"

using namespace jitbroker;
using jitbroker::testing::FakeGitHub;
using jitbroker::testing::FakeGitHubOptions;
using jitbroker::testing::FakeInstallation;
using jitbroker::testing::GitAuthRequest;
using jitbroker::testing::GitHttpServer;

namespace {

pid_t g_broker = -1;  // stopped on the way out

[[noreturn]] void Die(const std::string& why) {
  std::cerr << "git_proxy_bench: " << why << "\n";
  if (g_broker > 0) {
    ::kill(g_broker, SIGTERM);
  }
  std::exit(1);
}

int Sh(const std::string& cmd) {
  const int rc = std::system(cmd.c_str());
  return WIFEXITED(rc) ? WEXITSTATUS(rc) : -1;
}

double Seconds(std::chrono::steady_clock::duration d) {
  return std::chrono::duration<double>(d).count();
}

// VmRSS of `pid` in bytes (0 if unreadable).
size_t Rss(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/status");
  std::string line;
  while (std::getline(in, line)) {
    if (line.starts_with("VmRSS:")) {
      return static_cast<size_t>(std::stoull(line.substr(6))) * 1024;
    }
  }
  return 0;
}

// CPU seconds (user + system) `pid` has used.
double CpuSeconds(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/stat");
  std::string stat((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  const size_t close = stat.rfind(')');
  if (close == std::string::npos) {
    return 0;
  }
  std::istringstream rest(stat.substr(close + 2));
  std::string field;
  double ticks = 0;
  for (int i = 3; i <= 15 && rest >> field; ++i) {
    if (i == 14 || i == 15) {
      ticks += std::stod(field);
    }
  }
  return ticks / static_cast<double>(::sysconf(_SC_CLK_TCK));
}

// Runs `cmd` while sampling the broker's RSS; returns {seconds, growth bytes}.
std::pair<double, size_t> Timed(const std::string& cmd, pid_t broker) {
  const size_t before = Rss(broker);
  std::atomic<bool> done{false};
  std::atomic<size_t> peak{before};
  std::thread sampler([&] {
    while (!done.load()) {
      const size_t r = Rss(broker);
      size_t p = peak.load();
      while (r > p && !peak.compare_exchange_weak(p, r)) {
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
  });
  const auto t0 = std::chrono::steady_clock::now();
  const int rc = Sh(cmd);
  const double secs = Seconds(std::chrono::steady_clock::now() - t0);
  done = true;
  sampler.join();
  if (rc != 0) {
    Die("command failed (" + std::to_string(rc) + "): " + cmd);
  }
  return {secs, peak.load() > before ? peak.load() - before : 0};
}

}  // namespace

int main(int argc, char** argv) {
  std::string jitbroker_bin;
  std::string jitctl_bin;
  int size_mb = 100;
  int runs = 3;
  bool strict = false;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto next = [&]() -> std::string {
      if (i + 1 >= argc) {
        std::cerr << "usage: git_proxy_bench --jitbroker PATH --jitctl PATH [--size-mb N] "
                     "[--runs N] [--strict]\n";
        std::exit(2);
      }
      return argv[++i];
    };
    if (a == "--jitbroker") {
      jitbroker_bin = next();
    } else if (a == "--jitctl") {
      jitctl_bin = next();
    } else if (a == "--size-mb") {
      size_mb = std::stoi(next());
    } else if (a == "--runs") {
      runs = std::stoi(next());
    } else if (a == "--strict") {
      strict = true;
    } else {
      std::cerr << "git_proxy_bench: unknown argument " << a << "\n";
      return 2;
    }
  }
  if (jitbroker_bin.empty() || jitctl_bin.empty() || size_mb < 1 || runs < 1) {
    std::cerr << "usage: git_proxy_bench --jitbroker PATH --jitctl PATH [--size-mb N] [--runs N]\n";
    return 2;
  }
  ::signal(SIGPIPE, SIG_IGN);

  char tmpl[] = "/tmp/jitbroker-gitbench-XXXXXX";
  if (::mkdtemp(tmpl) == nullptr) {
    Die("mkdtemp failed");
  }
  const std::string dir = tmpl;

  // Upstreams: the fake GitHub and the git server behind it.
  auto key = crypto::SigningKey::Generate(crypto::JwsAlg::kRS256);
  if (!key) {
    Die("cannot generate the App key");
  }
  std::ofstream(dir + "/app.pem") << (*key)->ToPem()->Reveal();
  FakeGitHubOptions fo;
  fo.app_public_jwk = (*key)->PublicJwk();
  fo.client_id = "Iv23liBench";
  auto fake = FakeGitHub::Start(fo);
  FakeInstallation inst;
  inst.id = 7;
  inst.account = "bench";
  inst.permissions = {{"contents", "write"}, {"metadata", "read"}};
  std::vector<std::string> repos = {"src"};
  for (int r = 0; r < runs; ++r) {
    repos.push_back("push-direct-" + std::to_string(r));
    repos.push_back("push-proxy-" + std::to_string(r));
  }
  for (size_t i = 0; i < repos.size(); ++i) {
    inst.repositories[repos[i]] = static_cast<int64_t>(100 + i);
  }
  fake->AddInstallation(inst);
  FakeGitHub* f = fake.get();
  auto git = GitHttpServer::Start(dir + "/srv", [f](const GitAuthRequest& a) {
    if (a.username != "x-access-token" || !f->TokenActive(a.password)) {
      return false;
    }
    auto info = f->Token(a.password);
    const std::string repo = a.owner_repo.substr(a.owner_repo.find('/') + 1);
    const bool reaches = std::find(info->repositories.begin(), info->repositories.end(), repo) !=
                         info->repositories.end();
    const std::string contents = info->permissions.value("contents", "");
    return reaches && (a.push ? contents == "write" : !contents.empty());
  });
  for (const std::string& r : repos) {
    git->CreateRepo("bench/" + r);
  }

  // The repository: size_mb files of 1 MiB of random bytes, one commit.
  const std::string work = dir + "/work";
  const std::string g = "git -c user.name=bench -c user.email=bench@example.invalid ";
  if (Sh("git init -q -b main '" + work + "' && mkdir '" + work + "/data' && for i in $(seq 1 " +
         std::to_string(size_mb) + "); do head -c 1048576 /dev/urandom > '" + work +
         "/data/f'$i.bin; done && " + g + "-C '" + work + "' add data && " + g + "-C '" + work +
         "' commit -q -m data && " + g + "-C '" + work + "' push -q '" + dir +
         "/srv/bench/src.git' main") != 0) {
    Die("cannot make the repository");
  }

  // The broker.
  const std::string api_key =
      "jbk_bench_" + crypto::Sha256Hex(crypto::RandomBytes(16)).substr(0, 32);
  std::ofstream(dir + "/broker.yaml")
      << "data_dir: " << dir << "/data\n"
      << "server: {listen: \"127.0.0.1:0\", threads: 16}\n"
      << "log: {level: warn}\n"
      << "policy:\n  version: bench.1\n  principals:\n"
      << "    - {id: dev, roles: [dev], api_keys_sha256: [\"" << crypto::Sha256Hex(api_key)
      << "\"]}\n"
      << "  roles:\n    dev: {resources: [\"github://bench/*\"], max_tier: write, issuers: "
         "[github]}\n"
      << "issuers:\n  github: {type: github_app, client_id: Iv23liBench, private_key: file:" << dir
      << "/app.pem, base_url: '" << fake->url() << "', git_url: 'http://" << git->host()
      << "', allow_http: true}\n"
      << "proxy: {protected_branches: [], default_branch_protected: false}\n";
  int out_pipe[2];
  if (::pipe(out_pipe) != 0) {
    Die("pipe failed");
  }
  const pid_t broker = ::fork();
  if (broker == 0) {
    ::dup2(out_pipe[1], STDOUT_FILENO);
    ::close(out_pipe[0]);
    ::close(out_pipe[1]);
    const std::string config = dir + "/broker.yaml";
    ::execl(jitbroker_bin.c_str(), jitbroker_bin.c_str(), "--config", config.c_str(),
            static_cast<char*>(nullptr));
    ::_exit(127);
  }
  ::close(out_pipe[1]);
  g_broker = broker;
  std::string text;
  int port = 0;
  char buf[512];
  while (port == 0) {
    const ssize_t n = ::read(out_pipe[0], buf, sizeof(buf));
    if (n <= 0) {
      Die("the broker did not start: " + text);
    }
    text.append(buf, static_cast<size_t>(n));
    const auto pos = text.find("listening on port ");
    if (pos != std::string::npos && text.find('\n', pos) != std::string::npos) {
      port = std::stoi(text.substr(pos + 18));
    }
  }
  std::thread([fd = out_pipe[0]] {
    char sink[512];
    while (::read(fd, sink, sizeof(sink)) > 0) {
    }
  }).detach();
  const std::string broker_url = "http://127.0.0.1:" + std::to_string(port);

  httplib::Client api("127.0.0.1", port);
  api.set_read_timeout(60);
  httplib::Headers auth = {{"Authorization", "Bearer " + api_key}};
  nlohmann::json open = {
      {"agent", {{"id", "bench-agent"}}},
      {"task",
       {{"id", "bench"},
        {"description", "git proxy benchmark"},
        {"scope",
         {{"resources", {"github://bench/*"}}, {"max_tier", "write"}, {"issuers", {"github"}}}}}},
      {"ttl_seconds", 3600},
      {"heartbeat_seconds", 3600}};
  auto opened = api.Post("/v1/sessions", auth, open.dump(), "application/json");
  if (!opened || opened->status != 201) {
    Die("cannot open a session: " + (opened ? opened->body : std::string("no answer")));
  }
  const auto session = nlohmann::json::parse(opened->body);
  const std::string sid = session["session_id"];
  const std::string token = session["session_token"];
  // A direct token, as the credential helper's old path hands git.
  auto direct_token = [&](const std::string& repo, const std::string& access) {
    nlohmann::json req = {{"tool", access == "write" ? "git.push" : "git.fetch"},
                          {"operation", access == "write" ? "push" : "read"},
                          {"resource", "github://bench/" + repo},
                          {"issuer", "github"},
                          {"scope", {{"permissions", {{"contents", access}}}}}};
    auto r = api.Post("/v1/sessions/" + sid + "/grants", {{"Authorization", "Bearer " + token}},
                      req.dump(), "application/json");
    if (!r || r->status != 201) {
      Die("cannot get a direct token: " + (r ? r->body : std::string("no answer")));
    }
    return nlohmann::json::parse(r->body)["credential"]["token"].get<std::string>();
  };

  const std::string env = "env JITBROKER_URL='" + broker_url + "' JITBROKER_SESSION_ID='" + sid +
                          "' JITBROKER_SESSION_TOKEN='" + token + "' HOME='" + dir +
                          "' GIT_CONFIG_NOSYSTEM=1 GIT_TERMINAL_PROMPT=0 ";
  auto with_token = [&](const std::string& tok) {
    return env + g +
           "-c credential.helper= -c 'credential.helper=!f() { echo username=x-access-token; echo "
           "password=" +
           tok + "; }; f' ";
  };
  const std::string via_broker =
      env + g + "-c credential.helper= -c 'credential.helper=!" + jitctl_bin + " git-credential' ";
  const std::string upstream = "http://" + git->host() + "/bench/";
  const std::string proxied = broker_url + "/git/" + git->host() + "/bench/";

  std::cout << "broker RSS before the transfers: " << Rss(broker) / (1024 * 1024) << " MB\n";
  double best[4] = {1e9, 1e9, 1e9, 1e9};  // clone direct, clone proxy, push direct, push proxy
  size_t growth = 0;
  double cpu_clone = 1e9;
  double cpu_push = 1e9;
  for (int r = 0; r < runs; ++r) {
    const std::string n = std::to_string(r);
    const std::string read_tok = direct_token("src", "read");
    auto cd = Timed(with_token(read_tok) + "clone -q '" + upstream + "src.git' '" + dir +
                        "/clone-direct-" + n + "'",
                    broker);
    const double cpu0 = CpuSeconds(broker);
    auto cp =
        Timed(via_broker + "clone -q '" + proxied + "src.git' '" + dir + "/clone-proxy-" + n + "'",
              broker);
    const std::string write_tok = direct_token("push-direct-" + n, "write");
    auto pd = Timed(with_token(write_tok) + "-C '" + work + "' push -q '" + upstream +
                        "push-direct-" + n + ".git' main",
                    broker);
    const double cpu1 = CpuSeconds(broker);
    auto pp = Timed(
        via_broker + "-C '" + work + "' push -q '" + proxied + "push-proxy-" + n + ".git' main",
        broker);
    const double cpu2 = CpuSeconds(broker);
    cpu_clone = std::min(cpu_clone, cpu1 - cpu0);  // includes the direct push's token grant
    cpu_push = std::min(cpu_push, cpu2 - cpu1);
    best[0] = std::min(best[0], cd.first);
    best[1] = std::min(best[1], cp.first);
    best[2] = std::min(best[2], pd.first);
    best[3] = std::min(best[3], pp.first);
    growth = std::max({growth, cp.second, pp.second});
    Sh("rm -rf '" + dir + "/clone-direct-" + n + "' '" + dir + "/clone-proxy-" + n + "'");
    std::cout << "run " << r << ": clone direct " << cd.first << " s, via broker " << cp.first
              << " s; push direct " << pd.first << " s, via broker " << pp.first
              << " s; broker RSS growth " << std::max(cp.second, pp.second) / (1024 * 1024)
              << " MB\n";
  }
  // Both pushes landed whole.
  if (Sh("test \"$(git --git-dir '" + dir + "/srv/bench/push-proxy-0.git' rev-parse main)\" = " +
         "\"$(git -C '" + work + "' rev-parse main)\" && git --git-dir '" + dir +
         "/srv/bench/push-proxy-0.git' fsck --no-progress --no-dangling") != 0) {
    Die("the proxied push did not land intact");
  }
  ::kill(broker, SIGTERM);
  int status = 0;
  ::waitpid(broker, &status, 0);
  git->Stop();
  fake->Stop();

  const double mb = size_mb;
  const double clone_ratio = best[0] / best[1];
  const double push_ratio = best[2] / best[3];
  const double growth_mb = static_cast<double>(growth) / (1024.0 * 1024.0);
  const bool ok = clone_ratio >= 0.8 && push_ratio >= 0.8 && growth_mb <= 64;
  char line[512];
  std::snprintf(line, sizeof(line),
                "%-7s %10s %12s %12s %7s\n%-7s %10.1f %12.1f %12.1f %7.2f\n%-7s %10.1f %12.1f "
                "%12.1f %7.2f\n",
                "op", "size_MB", "direct_MB/s", "broker_MB/s", "ratio", "clone", mb, mb / best[0],
                mb / best[1], clone_ratio, "push", mb, mb / best[2], mb / best[3], push_ratio);
  std::cout << line;
  std::cout << "broker RSS growth during a transfer (max): " << growth_mb << " MB (target <= 64)\n";
  std::cout << "broker CPU per transfer (least of the runs): clone " << cpu_clone << " s, push "
            << cpu_push << " s; i.e. " << mb / std::max(cpu_clone, 1e-3) << " and "
            << mb / std::max(cpu_push, 1e-3)
            << " MB per broker CPU-second (what one core could carry)\n";
  std::cout << "RESULT bench=git_proxy size_mb=" << size_mb << " runs=" << runs
            << " clone_ratio=" << clone_ratio << " push_ratio=" << push_ratio
            << " rss_growth_mb=" << growth_mb << " cpu_clone_s=" << cpu_clone
            << " cpu_push_s=" << cpu_push
            << " target_ratio=0.8 target_rss_mb=64 ok=" << (ok ? "yes" : "no") << "\n";
  std::filesystem::remove_all(dir);
  return strict && !ok ? 1 : 0;
}
