// mint_bench: how many credentials can an upstream issuer mint per second
// when every upstream round trip takes --latency-ms?
//
//   --issuer github_app: GitHub installation tokens against FakeGitHub;
//   --issuer aws_sts:    AWS credentials (AssumeRole) against FakeSts;
//   --issuer gcp:        Google access tokens (generateAccessToken, the
//                        broker's identity by workload identity federation)
//                        against FakeGoogle.
//
// In process, no broker HTTP: it builds the real issuer (config parsed from
// YAML as the daemon does, the pooled libcurl client) against the fake
// upstream (tests/fakes) on loopback with injected latency, and runs
// --concurrency threads, each calling Issuer::Mint() in a closed loop (one
// in flight per thread, as one agent per thread). After --warmup-s (which
// opens the connections and fills the issuer's caches) it measures for
// --duration-s.
//
// Target (issues "GitHub App issuer", "AWS STS issuer" and "GCP issuer"):
// mints/s >= 0.9 x concurrency / latency (200 / 50 ms -> 3,600/s) with
// bounded memory; the report gives the peak and final RSS, the RSS growth
// over the measured window, and the issuer's costly operations per 1,000
// mints: RSA signatures of App JWTs (cached, so a handful per run), SigV4
// signing-key derivations (one per day, region and service) or refreshes of
// the broker's own Google token (a signed JWT traded at STS, then
// impersonation; cached for ~55 of its 60 minutes). The fakes are told not
// to keep issued credentials, so their memory stays bounded too.
//
// Output: a summary and one line
//   RESULT bench=mint issuer=… mints_per_s=… target=… p50_ms=… p99_ms=… …
// Exit: 0 ok; 1 setup error, failed mints, or (--strict) a missed target; 2 usage.
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <charconv>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include <yaml-cpp/yaml.h>

#include "broker/common/log.h"
#include "broker/config/config.h"
#include "broker/crypto/crypto.h"
#include "broker/crypto/jose.h"
#include "broker/net/http_client.h"
#include "issuers/aws_sts/aws_sts_issuer.h"
#include "issuers/gcp/gcp_issuer.h"
#include "issuers/github_app/github_app_issuer.h"
#include "jitbroker/issuer.h"
#include "tests/fakes/fake_github.h"
#include "tests/fakes/fake_google.h"
#include "tests/fakes/fake_sts.h"

namespace jitbroker::bench {
namespace {

using SteadyClock = std::chrono::steady_clock;

struct Flags {
  std::string issuer = "github_app";
  int concurrency = 200;
  int latency_ms = 50;
  double duration_s = 10;
  double warmup_s = 2;
  int server_threads = 0;  // 0: concurrency + 64
  bool strict = false;
};

bool ParseNumber(std::string_view s, double& out) {
  auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), out);
  return ec == std::errc() && p == s.data() + s.size();
}

bool ParseFlags(int argc, char** argv, Flags& f) {
  for (int i = 1; i < argc; ++i) {
    std::string_view a = argv[i];
    auto value = [&](double& out) { return i + 1 < argc && ParseNumber(argv[++i], out); };
    double v = 0;
    if (a == "--strict") {
      f.strict = true;
    } else if (a == "--issuer" && i + 1 < argc &&
               (std::string_view(argv[i + 1]) == "github_app" ||
                std::string_view(argv[i + 1]) == "aws_sts" ||
                std::string_view(argv[i + 1]) == "gcp")) {
      f.issuer = argv[++i];
    } else if (a == "--concurrency" && value(v) && v >= 1 && v <= 2000) {
      f.concurrency = static_cast<int>(v);
    } else if (a == "--latency-ms" && value(v) && v >= 0 && v <= 10000) {
      f.latency_ms = static_cast<int>(v);
    } else if (a == "--duration-s" && value(v) && v > 0 && v <= 600) {
      f.duration_s = v;
    } else if (a == "--warmup-s" && value(v) && v >= 0 && v <= 60) {
      f.warmup_s = v;
    } else if (a == "--server-threads" && value(v) && v >= 1 && v <= 4000) {
      f.server_threads = static_cast<int>(v);
    } else {
      return false;
    }
  }
  return true;
}

// Resident set size in KiB from /proc/self/status ("VmRSS" or "VmHWM").
long ProcStatusKb(const char* field) {
  std::ifstream in("/proc/self/status");
  std::string line;
  const size_t n = std::strlen(field);
  while (std::getline(in, line)) {
    if (line.compare(0, n, field) == 0 && line.size() > n && line[n] == ':') {
      return std::strtol(line.c_str() + n + 1, nullptr, 10);
    }
  }
  return -1;
}

double Metric(const Issuer& issuer, const std::string& name) {
  std::vector<MetricFamily> families;
  issuer.CollectMetrics(families);
  double total = 0;
  for (const auto& f : families) {
    if (f.name == name) {
      for (const auto& s : f.samples) {
        total += s.second;
      }
    }
  }
  return total;
}

double Percentile(std::vector<double>& v, double p) {
  if (v.empty()) {
    return 0;
  }
  const size_t k = std::min(v.size() - 1, static_cast<size_t>(p * static_cast<double>(v.size())));
  std::nth_element(v.begin(), v.begin() + static_cast<long>(k), v.end());
  return v[k];
}

// The issuer under test and its fake upstream.
struct Upstream {
  std::function<void()> stop;  // stops the fake; holds it alive until then
  std::unique_ptr<Issuer> issuer;
  GrantRequest request;
  std::string fake_name;
  std::string costly_metric;  // the issuer's counter of costly operations
  std::string costly_name;
  std::function<std::string()> note;  // appended to the costly line
};

Result<std::unique_ptr<Issuer>> BuildIssuer(
    const std::string& name, const std::string& yaml, const std::string& dir, const Clock& clock,
    HttpClient* http, Result<std::unique_ptr<Issuer>> (*create)(IssuerContext&)) {
  YAML::Node node = YAML::Load(yaml);
  config::Section section(node, std::make_shared<const std::string>("bench.yaml"),
                          "issuers." + name);
  section.MarkKnown("type");
  IssuerContext ctx{name, &section, dir, &clock, http};
  return create(ctx);
}

Result<Upstream> GitHubApp(const Flags& f, const std::string& dir, int server_threads,
                           const Clock& clock, HttpClient* http) {
  // The App's key, generated for this run (never committed).
  auto key = crypto::SigningKey::Generate(crypto::JwsAlg::kRS256);
  if (!key) {
    return std::unexpected(Internal("key generation failed"));
  }
  {
    auto pem = (*key)->ToPem();
    std::ofstream out(dir + "/app.pem");
    out << pem->Reveal();
  }
  ::chmod((dir + "/app.pem").c_str(), 0600);

  testing::FakeGitHubOptions fo;
  fo.app_public_jwk = (*key)->PublicJwk();
  fo.client_id = "Iv23liBenchmark";
  fo.threads = server_threads;
  fo.keep_issued = false;
  std::shared_ptr<testing::FakeGitHub> fake = testing::FakeGitHub::Start(fo);
  if (!fake) {
    return std::unexpected(Internal("cannot start the fake GitHub"));
  }
  testing::FakeInstallation inst;
  inst.id = 42;
  inst.account = "acme";
  inst.repositories = {{"payment-service", 1001}};
  inst.permissions = {{"contents", "write"}, {"metadata", "read"}};
  fake->AddInstallation(inst);
  fake->SetLatency(std::chrono::milliseconds(f.latency_ms));

  Upstream u;
  JITBROKER_ASSIGN_OR_RETURN(
      u.issuer, BuildIssuer("github",
                            "{type: github_app, client_id: Iv23liBenchmark, private_key: file:" +
                                dir + "/app.pem, base_url: '" + fake->url() +
                                "', allow_http: true, delegation: {enabled: false}}",
                            dir, clock, http, &issuers::github_app::CreateGitHubAppIssuer));
  u.request.tool = "git.fetch";
  u.request.operation = "read";
  u.request.resource = "github://acme/payment-service";
  u.request.issuer = "github";
  u.request.scope = {{"permissions", {{"contents", "read"}}}};
  u.fake_name = "FakeGitHub";
  u.costly_metric = "jitbroker_github_app_jwt_signatures_total";
  u.costly_name = "RSA signatures";
  u.note = [fake] { return "; App JWTs GitHub saw: " + std::to_string(fake->DistinctJwts()); };
  u.stop = [fake] { fake->Stop(); };
  return u;
}

Result<Upstream> AwsSts(const Flags& f, const std::string& dir, int server_threads,
                        const Clock& clock, HttpClient* http) {
  constexpr const char* kAkid = "AKIABENCHMARK000001";
  const std::string secret = crypto::Base64UrlEncode(crypto::RandomBytes(30));
  std::ofstream(dir + "/akid") << kAkid;
  std::ofstream(dir + "/secret") << secret;
  testing::FakeStsOptions fo;
  fo.keys = {{kAkid, secret}};
  fo.threads = server_threads;
  fo.keep_issued = false;
  std::shared_ptr<testing::FakeSts> fake = testing::FakeSts::Start(fo);
  if (!fake) {
    return std::unexpected(Internal("cannot start the fake STS"));
  }
  fake->AddRole({"arn:aws:iam::123456789012:role/ci-deploy", 3600, {kAkid}, "", {kAkid}});
  fake->SetLatency(std::chrono::milliseconds(f.latency_ms));

  Upstream u;
  JITBROKER_ASSIGN_OR_RETURN(
      u.issuer, BuildIssuer("aws",
                            "{type: aws_sts, region: us-east-1, endpoint: '" + fake->url() +
                                "', iam_endpoint: '" + fake->url() +
                                "', allow_http: true, accounts: ['123456789012'], credentials: "
                                "{access_key_id: 'file:" +
                                dir + "/akid', secret_access_key: 'file:" + dir + "/secret'}}",
                            dir, clock, http, &issuers::aws_sts::CreateAwsStsIssuer));
  u.request.tool = "aws.s3";
  u.request.operation = "read";
  u.request.resource = "aws://123456789012/role/ci-deploy";
  u.request.issuer = "aws";
  u.request.scope = {
      {"actions", {"s3:GetObject", "s3:ListBucket"}},
      {"resources", {"arn:aws:s3:::acme-artifacts", "arn:aws:s3:::acme-artifacts/*"}}};
  u.fake_name = "FakeSts";
  u.costly_metric = "jitbroker_aws_sigv4_key_derivations_total";
  u.costly_name = "SigV4 keys";
  u.stop = [fake] { fake->Stop(); };
  return u;
}

Result<Upstream> Gcp(const Flags& f, const std::string& dir, int server_threads, const Clock& clock,
                     HttpClient* http) {
  constexpr const char* kAudience =
      "//iam.googleapis.com/projects/42/locations/global/workloadIdentityPools/bench/providers/"
      "broker";
  constexpr const char* kWifIssuer = "https://jitbroker.bench";
  constexpr const char* kBrokerSa = "jitbroker@acme-prod.iam.gserviceaccount.com";
  constexpr const char* kTargetSa = "reader@acme-prod.iam.gserviceaccount.com";
  constexpr const char* kReadOnly = "https://www.googleapis.com/auth/devstorage.read_only";
  // The broker's workload identity key, generated for this run (never
  // committed); the pool's provider holds its public JWK.
  auto key = crypto::SigningKey::Generate(crypto::JwsAlg::kES256);
  if (!key) {
    return std::unexpected(Internal("key generation failed"));
  }
  {
    auto pem = (*key)->ToPem();
    std::ofstream out(dir + "/wif.pem");
    out << pem->Reveal();
  }
  ::chmod((dir + "/wif.pem").c_str(), 0600);

  testing::FakeGoogleOptions fo;
  fo.wif_audience = kAudience;
  fo.wif_issuer = kWifIssuer;
  fo.wif_jwk = (*key)->PublicJwk();
  fo.threads = server_threads;
  fo.keep_issued = false;
  std::shared_ptr<testing::FakeGoogle> fake = testing::FakeGoogle::Start(fo);
  if (!fake) {
    return std::unexpected(Internal("cannot start the fake Google"));
  }
  // The federated broker impersonates its service account, which holds
  // Token Creator on the one it mints for (docs/gcp.md, "The broker's
  // identity"); the subject is the issuer's default, jitbroker-NAME.
  fake->AddServiceAccount({kBrokerSa, {fake->FederatedPrincipal("jitbroker-gcp")}, true});
  fake->AddServiceAccount({kTargetSa, {kBrokerSa}, true});
  fake->SetLatency(std::chrono::milliseconds(f.latency_ms));

  Upstream u;
  JITBROKER_ASSIGN_OR_RETURN(
      u.issuer, BuildIssuer("gcp",
                            std::string("{type: gcp, identity: {workload_identity: {audience: '") +
                                kAudience + "', service_account: " + kBrokerSa + ", issuer: '" +
                                kWifIssuer + "', private_key: 'file:" + dir +
                                "/wif.pem'}}, projects: [acme-prod], allowed_scopes: ['" +
                                kReadOnly + "'], allow_http: true, endpoints: {iamcredentials: '" +
                                fake->url() + "', sts: '" + fake->url() + "'}}",
                            dir, clock, http, &issuers::gcp::CreateGcpIssuer));
  // OAuth scopes only, no storage boundary: one generateAccessToken per
  // mint (a boundary adds an STS exchange, a second round trip).
  u.request.tool = "gcloud.storage";
  u.request.operation = "read";
  u.request.resource = std::string("gcp://acme-prod/serviceAccounts/") + kTargetSa;
  u.request.issuer = "gcp";
  u.request.scope = {{"scopes", {kReadOnly}}};
  u.fake_name = "FakeGoogle";
  u.costly_metric = "jitbroker_gcp_identity_refreshes_total";
  u.costly_name = "identity tokens";
  u.note = [fake] { return "; requests Google saw: " + std::to_string(fake->Requests()); };
  u.stop = [fake] { fake->Stop(); };
  return u;
}

int Run(const Flags& f) {
  ::signal(SIGPIPE, SIG_IGN);
  log::InitLogging("error");
  if (!net::CurlGlobalInit()) {
    std::fprintf(stderr, "mint_bench: curl_global_init failed\n");
    return 1;
  }
  char tmpl[] = "/tmp/mint-bench-XXXXXX";
  if (::mkdtemp(tmpl) == nullptr) {
    std::fprintf(stderr, "mint_bench: mkdtemp failed\n");
    return 1;
  }
  const std::string dir = tmpl;
  struct Cleanup {
    std::string dir;
    ~Cleanup() {
      std::error_code ec;
      std::filesystem::remove_all(dir, ec);
    }
  } cleanup{dir};

  net::CurlHttpClientOptions ho;
  ho.max_idle_handles = static_cast<size_t>(f.concurrency) + 16;
  auto http = net::MakeCurlHttpClient(ho);
  SystemClock clock;
  const int server_threads = f.server_threads > 0 ? f.server_threads : f.concurrency + 64;
  auto upstream = f.issuer == "aws_sts" ? AwsSts(f, dir, server_threads, clock, http.get())
                  : f.issuer == "gcp"   ? Gcp(f, dir, server_threads, clock, http.get())
                                        : GitHubApp(f, dir, server_threads, clock, http.get());
  if (!upstream) {
    std::fprintf(stderr, "mint_bench: %s\n", upstream.error().ToString().c_str());
    return 1;
  }
  Issuer& issuer = *upstream->issuer;
  const GrantRequest req = upstream->request;

  enum class Phase { kWarmup, kMeasure, kDone };
  std::atomic<Phase> phase{Phase::kWarmup};
  std::atomic<uint64_t> ok{0}, failed{0}, warmup_failed{0}, minted_total{0};
  std::vector<std::vector<double>> latencies(static_cast<size_t>(f.concurrency));
  std::atomic<int> first_error_set{0};
  std::string first_error;

  auto worker = [&](size_t index) {
    std::vector<double>& lat = latencies[index];
    lat.reserve(static_cast<size_t>(f.duration_s * 1000.0 / std::max(1, f.latency_ms)) + 16);
    MintRequest mr;
    mr.grant_id = "grt_bench";
    mr.session_id = "ses_bench";
    mr.task_id = "task_bench";
    mr.principal_id = "bench";
    mr.agent_id = "agent_" + std::to_string(index);
    mr.request = req;
    mr.tier = Tier::kRead;
    mr.ttl_seconds = 300;
    // Stagger the first connections (200 simultaneous connects overflow the
    // fake's listen backlog; a dropped handshake then takes seconds to retry).
    std::this_thread::sleep_for(std::chrono::milliseconds(2 * static_cast<int64_t>(index)));
    for (;;) {
      const Phase p = phase.load(std::memory_order_relaxed);
      if (p == Phase::kDone) {
        return;
      }
      mr.now = std::chrono::system_clock::now();
      // A grant id per mint, as the service gives (AWS's source identity).
      mr.grant_id = "grt_bench" + std::to_string(index) + "x" + std::to_string(minted_total.load());
      const auto t0 = SteadyClock::now();
      auto minted = issuer.Mint(mr);
      if (minted) {
        ++minted_total;
      }
      const double ms = std::chrono::duration<double, std::milli>(SteadyClock::now() - t0).count();
      if (phase.load(std::memory_order_relaxed) != Phase::kMeasure || p != Phase::kMeasure) {
        if (!minted) {
          ++warmup_failed;
        }
        continue;  // warm-up, or straddling a phase boundary
      }
      if (minted) {
        ++ok;
        lat.push_back(ms);
      } else {
        ++failed;
        if (first_error_set.exchange(1) == 0) {
          first_error = minted.error().ToString();
        }
      }
    }
  };

  std::vector<std::thread> threads;
  threads.reserve(static_cast<size_t>(f.concurrency));
  for (int i = 0; i < f.concurrency; ++i) {
    threads.emplace_back(worker, static_cast<size_t>(i));
  }
  std::this_thread::sleep_for(std::chrono::duration<double>(f.warmup_s));
  const double sigs_before = Metric(issuer, upstream->costly_metric);
  const long rss_start = ProcStatusKb("VmRSS");
  const auto t_start = SteadyClock::now();
  phase.store(Phase::kMeasure);
  std::this_thread::sleep_for(std::chrono::duration<double>(f.duration_s));
  phase.store(Phase::kDone);
  const double elapsed = std::chrono::duration<double>(SteadyClock::now() - t_start).count();
  for (auto& t : threads) {
    t.join();
  }
  const long rss_end = ProcStatusKb("VmRSS");
  const long rss_peak = ProcStatusKb("VmHWM");
  const double sigs_total = Metric(issuer, upstream->costly_metric);
  const double sigs_measured = sigs_total - sigs_before;
  const auto issued_total = static_cast<double>(minted_total.load());

  std::vector<double> all;
  for (auto& v : latencies) {
    all.insert(all.end(), v.begin(), v.end());
  }
  const double rate = static_cast<double>(ok.load()) / elapsed;
  const double target = f.latency_ms > 0 ? 0.9 * f.concurrency / (f.latency_ms / 1000.0) : 0;
  const double p50 = Percentile(all, 0.50);
  const double p99 = Percentile(all, 0.99);
  const double max = all.empty() ? 0 : *std::max_element(all.begin(), all.end());
  const double sigs_per_1000 = issued_total > 0 ? 1000.0 * sigs_total / issued_total : 0;
  const bool met = rate >= target;

  std::printf("%s mint benchmark (in process; %s on loopback)\n", f.issuer.c_str(),
              upstream->fake_name.c_str());
  std::printf("  concurrency %d threads, injected latency %d ms, warm-up %.1f s, measured %.2f s\n",
              f.concurrency, f.latency_ms, f.warmup_s, elapsed);
  std::printf("  mints/s          %.0f   (target >= 0.9 x %d / %.3f s = %.0f: %s)\n", rate,
              f.concurrency, f.latency_ms / 1000.0, target, met ? "met" : "MISSED");
  std::printf("  mint latency     p50 %.1f ms, p99 %.1f ms, max %.1f ms\n", p50, p99, max);
  std::printf("  mints            %llu ok, %llu failed (measured window); %llu failed in warm-up\n",
              static_cast<unsigned long long>(ok.load()),
              static_cast<unsigned long long>(failed.load()),
              static_cast<unsigned long long>(warmup_failed.load()));
  std::printf(
      "  %-16s %.0f for %.0f mints in the run (%.3f per 1,000 mints; %.0f in "
      "the measured window)%s\n",
      upstream->costly_name.c_str(), sigs_total, issued_total, sigs_per_1000, sigs_measured,
      upstream->note ? upstream->note().c_str() : "");
  std::printf(
      "  memory           RSS %ld KiB at start of window, %ld KiB at end (%+ld KiB), "
      "peak %ld KiB\n",
      rss_start, rss_end, rss_end - rss_start, rss_peak);
  if (!first_error.empty()) {
    std::printf("  first error      %s\n", first_error.c_str());  // measured window
  }
  std::printf(
      "RESULT bench=mint issuer=%s concurrency=%d latency_ms=%d mints_per_s=%.0f target=%.0f "
      "met=%d p50_ms=%.1f p99_ms=%.1f ok=%llu failed=%llu costly_ops=%.0f mints=%.0f "
      "costly_per_1000_mints=%.3f rss_start_kb=%ld rss_end_kb=%ld rss_peak_kb=%ld\n",
      f.issuer.c_str(), f.concurrency, f.latency_ms, rate, target, met ? 1 : 0, p50, p99,
      static_cast<unsigned long long>(ok.load()), static_cast<unsigned long long>(failed.load()),
      sigs_total, issued_total, sigs_per_1000, rss_start, rss_end, rss_peak);
  std::fflush(stdout);

  upstream->issuer.reset();
  http.reset();
  upstream->stop();
  net::CurlGlobalCleanup();
  if (failed.load() > 0) {
    return 1;
  }
  return f.strict && !met ? 1 : 0;
}

}  // namespace
}  // namespace jitbroker::bench

int main(int argc, char** argv) {
  jitbroker::bench::Flags flags;
  if (!jitbroker::bench::ParseFlags(argc, argv, flags)) {
    std::fprintf(stderr,
                 "usage: mint_bench [--issuer github_app|aws_sts|gcp (github_app)]\n"
                 "                  [--concurrency N (200)] [--latency-ms N (50)]\n"
                 "                  [--duration-s X (10)] [--warmup-s X (2)]\n"
                 "                  [--server-threads N (concurrency+64)] [--strict]\n");
    return 2;
  }
  return jitbroker::bench::Run(flags);
}
