// The security review's attacks on the listener (issue #10 findings 2, 3, 6
// and 7), reproduced against the real daemon. Each of these passed on the
// cpp-httplib listener the broker had before (see docs/architecture.md,
// "The HTTP listener", for the figures before and after).
#include <signal.h>
#include <unistd.h>

#include <chrono>
#include <fstream>
#include <future>
#include <iterator>
#include <regex>
#include <string>
#include <thread>
#include <vector>

#include <doctest/doctest.h>

#include "tests/support/broker_process.h"
#include "tests/support/raw_http.h"

namespace jitbroker::testing::http_hardening_test {
namespace {

using namespace std::chrono_literals;

nlohmann::json ReadScope() {
  return {{"resources", {"jwt://mcp.internal"}}, {"max_tier", "read"}, {"issuers", {"internal"}}};
}

nlohmann::json ReadGrant() {
  return {{"tool", "mcp.search"},
          {"operation", "read"},
          {"resource", "jwt://mcp.internal"},
          {"issuer", "internal"},
          {"ttl_seconds", 300}};
}

std::string ReadFile(const std::string& path) {
  std::ifstream in(path);
  return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

// The access-log line of one request, found by the server's request id.
std::string AccessLine(const BrokerProcess& b, const std::string& request_id) {
  for (int i = 0; i < 50; ++i) {
    const std::string text = ReadFile(b.access_log_path());
    if (size_t at = text.find("request_id=" + request_id + " "); at != std::string::npos) {
      const size_t start = text.rfind('\n', at);
      const size_t end = text.find('\n', at);
      return text.substr(start == std::string::npos ? 0 : start + 1,
                         end == std::string::npos ? std::string::npos : end - start - 1);
    }
    std::this_thread::sleep_for(50ms);
  }
  return {};
}

TEST_CASE("Broker: a 200 MiB chunked body is refused before authentication reads it") {
  auto b = BrokerProcess::Start();
  const long rss_before = RssKiB(b->pid());
  RawHttpConnection c(b->port());
  REQUIRE(
      c.Send("POST /v1/sessions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
             "Transfer-Encoding: chunked\r\n\r\n"));
  const std::string chunk = "100000\r\n" + std::string(1024 * 1024, 'a') + "\r\n";  // 1 MiB
  size_t sent = 0;
  for (int i = 0; i < 200 && c.Send(chunk); ++i) {
    sent += chunk.size();
  }
  const long rss_after = RssKiB(b->pid());
  // Refused at once: the connection closes long before 200 MiB went in,
  // and the daemon holds no more than before.
  CHECK(sent < 32u * 1024 * 1024);
  CHECK(rss_after - rss_before < 16 * 1024);
  const std::string r = c.ReadResponse(2000ms);
  if (!r.empty()) {  // the answer may be lost to the reset of an unread upload
    CHECK(RawStatus(r) == 411);
  }
  CHECK(b->Get("/healthz").status == 200);
}

TEST_CASE("Broker: a gzip body is refused, never inflated") {
  auto b = BrokerProcess::Start();
  // 61 KB that would inflate to ~100 MB if anything decoded it.
  const std::string body(61 * 1024, '\0');
  RawHttpConnection c(b->port());
  REQUIRE(
      c.Send("POST /v1/sessions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
             "Content-Encoding: gzip\r\nContent-Length: " +
             std::to_string(body.size()) + "\r\n\r\n"));
  c.Send(body);
  const std::string r = c.ReadResponse(2000ms);
  CHECK(RawStatus(r) == 415);
  CHECK(r.find("unsupported_content_encoding") != std::string::npos);
}

TEST_CASE("Broker: 50 MB of request headers are cut at the head limit") {
  auto b = BrokerProcess::Start();
  const long rss_before = RssKiB(b->pid());
  RawHttpConnection c(b->port());
  REQUIRE(c.Send("GET /healthz HTTP/1.1\r\nHost: x\r\n"));
  const std::string line = "X-Filler: " + std::string(1000, 'a') + "\r\n";
  std::string block;
  for (int i = 0; i < 64; ++i) {
    block += line;
  }
  size_t sent = 0;
  while (sent < 50u * 1000 * 1000 && c.Send(block)) {
    sent += block.size();
  }
  CHECK(sent < 8u * 1024 * 1024);
  CHECK(RssKiB(b->pid()) - rss_before < 16 * 1024);
  SUBCASE("and many small headers are refused by count") {
    RawHttpConnection d(b->port());
    std::string head = "GET /healthz HTTP/1.1\r\nHost: x\r\n";
    for (int i = 0; i < 150; ++i) {
      head += "X-" + std::to_string(i) + ": 1\r\n";
    }
    REQUIRE(d.Send(head + "\r\n"));
    const std::string r = d.ReadResponse(2000ms);
    CHECK(RawStatus(r) == 431);
    CHECK(r.find("too_many_headers") != std::string::npos);
  }
}

TEST_CASE("Broker: ambiguous framing closes the connection (no request smuggling)") {
  auto b = BrokerProcess::Start();
  // A second request hidden in the body of the first must never be served.
  const std::string smuggled = "GET /v1/audit HTTP/1.1\r\nHost: x\r\n\r\n";
  const std::string attacks[] = {
      "POST /v1/sessions HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n"
      "Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n" +
          smuggled,
      "POST /v1/sessions HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nContent-Length: 40\r\n\r\n" +
          smuggled,
      "POST /v1/sessions HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: identity\r\n\r\n" + smuggled,
  };
  for (const std::string& attack : attacks) {
    CAPTURE(attack);
    RawHttpConnection c(b->port());
    REQUIRE(c.Send(attack));
    const std::string r = c.ReadResponse(2000ms);
    CHECK(RawStatus(r) == 400);
    CHECK(c.ClosedWithin(2000ms));
  }
}

TEST_CASE("Broker: slow clients do not take the broker down") {
  BrokerOptions o;
  o.threads = 8;
  o.server_extra = ", request_timeout_ms: 3000";
  auto b = BrokerProcess::Start(o);
  auto [sid, token] = b->OpenSession(b->engineer_key, ReadScope());
  // Twice as many slow clients as workers, each sending a header line every
  // 0.5 s (the review's attack sent one every 4 s with 8 connections).
  std::vector<std::unique_ptr<RawHttpConnection>> slow;
  for (int i = 0; i < 16; ++i) {
    slow.push_back(std::make_unique<RawHttpConnection>(b->port()));
    REQUIRE(slow.back()->Send("POST /v1/sessions HTTP/1.1\r\nHost: x\r\n"));
  }
  for (int round = 0; round < 3; ++round) {
    std::this_thread::sleep_for(500ms);
    for (auto& c : slow) {
      c->Send("X-Slow-" + std::to_string(round) + ": 1\r\n");
    }
    // Meanwhile health, grants and an admin's revocation answer at once.
    const auto t0 = std::chrono::steady_clock::now();
    CHECK(b->Get("/healthz").status == 200);
    CHECK(b->Post("/v1/sessions/" + sid + "/grants", token, ReadGrant()).status == 201);
    CHECK(std::chrono::steady_clock::now() - t0 < 1s);
  }
  auto revoked = b->Post("/v1/sessions/" + sid + "/revoke", b->admin_key, {{"reason", "test"}});
  CHECK(revoked.status == 200);
  // One deadline covers the whole head: dribbling does not keep them open.
  for (auto& c : slow) {
    CHECK(c->ClosedWithin(4000ms));
  }
}

TEST_CASE("Broker: connections from one address are capped") {
  BrokerOptions o;
  o.server_extra = ", max_connections_per_address: 6";
  auto b = BrokerProcess::Start(o);
  std::vector<std::unique_ptr<RawHttpConnection>> held;
  for (int i = 0; i < 6; ++i) {
    held.push_back(std::make_unique<RawHttpConnection>(b->port()));
  }
  std::this_thread::sleep_for(200ms);
  RawHttpConnection extra(b->port());
  const std::string r = extra.ReadResponse(2000ms);
  CHECK(RawStatus(r) == 503);
  CHECK(r.find("too_many_connections") != std::string::npos);
  CHECK(r.find("Retry-After: 1") != std::string::npos);
  held.clear();
  std::this_thread::sleep_for(200ms);
  CHECK(b->Get("/healthz").status == 200);
}

TEST_CASE("Broker: introspection refuses a token in the URL") {
  auto b = BrokerProcess::Start();
  auto [sid, token] = b->OpenSession(b->engineer_key, ReadScope());
  auto g = b->Post("/v1/sessions/" + sid + "/grants", token, ReadGrant());
  REQUIRE(g.status == 201);
  const std::string jwt = g.json["credential"]["token"];
  // RFC 7662 §2.1: body only. The query alone, and the query beside a body.
  auto in_query = b->Request("POST", "/v1/introspect?token=" + jwt, b->admin_key, "",
                             "application/x-www-form-urlencoded");
  CHECK(in_query.status == 400);
  CHECK(in_query.json["code"] == "token_in_query");
  auto both = b->Request("POST", "/v1/introspect?token=" + jwt, b->admin_key, "token=" + jwt,
                         "application/x-www-form-urlencoded");
  CHECK(both.status == 400);
  auto in_body = b->Request("POST", "/v1/introspect", b->admin_key, "token=" + jwt,
                            "application/x-www-form-urlencoded");
  CHECK(in_body.status == 200);
  CHECK(in_body.json["active"] == true);
  // The token never reaches the access log, even when sent in the URL.
  std::this_thread::sleep_for(200ms);
  CHECK(ReadFile(b->access_log_path()).find(jwt.substr(jwt.rfind('.') + 1)) == std::string::npos);
}

TEST_CASE("Broker: access-log fields cannot be forged through the path") {
  auto b = BrokerProcess::Start();
  RawHttpConnection c(b->port());
  REQUIRE(c.Send("GET /v1/x%20status=200%20remote=10.0.0.1%22%0a HTTP/1.1\r\nHost: x\r\n\r\n"));
  const std::string r = c.ReadResponse();
  REQUIRE(RawStatus(r) == 404);
  const size_t at = r.find("X-Request-Id: ");
  REQUIRE(at != std::string::npos);
  const std::string rid = r.substr(at + 14, r.find("\r\n", at) - at - 14);
  const std::string line = AccessLine(*b, rid);
  REQUIRE(!line.empty());
  // The log file holds JSON lines: the message's own quotes appear as \".
  CHECK(line.find(R"(path=\"/v1/x%20status=200%20remote=10.0.0.1%22%0a\" status=404)") !=
        std::string::npos);
  // Exactly one status= and one remote= field outside the quoted path.
  const std::regex status_field(R"( status=[0-9]+ )");
  CHECK(std::distance(std::sregex_iterator(line.begin(), line.end(), status_field),
                      std::sregex_iterator()) == 1);
  CHECK(line.find(R"(remote=\"127.0.0.1\")") != std::string::npos);
}

TEST_CASE("Broker: a client's X-Request-Id never becomes the request id") {
  auto b = BrokerProcess::Start();
  auto [sid, token] = b->OpenSession(b->engineer_key, ReadScope());
  httplib::Client client("127.0.0.1", b->port());
  httplib::Headers headers = {{"Authorization", "Bearer " + token}, {"X-Request-Id", "sweeper"}};
  auto res = client.Post("/v1/sessions/" + sid + "/grants", headers, ReadGrant().dump(),
                         "application/json");
  REQUIRE(res);
  CHECK(res->status == 201);
  const std::string rid = res->get_header_value("X-Request-Id");
  CHECK(rid.rfind("req_", 0) == 0);
  // The audit trail records the server's id, and the client's apart.
  auto audit = b->Get("/v1/audit?session_id=" + sid, b->admin_key);
  REQUIRE(audit.status == 200);
  bool seen = false;
  for (const auto& rec : audit.json["records"]) {
    if (rec["event"] == "credential.minted") {
      seen = true;
      CHECK(rec["request_id"] == rid);
      CHECK(rec["client_request_id"] == "sweeper");
    }
    CHECK(rec.value("request_id", "") != "sweeper");
  }
  CHECK(seen);
  // An unusable client id is not recorded at all.
  headers = {{"Authorization", "Bearer " + token}, {"X-Request-Id", "a b\tc"}};
  res = client.Post("/v1/sessions/" + sid + "/grants", headers, ReadGrant().dump(),
                    "application/json");
  REQUIRE(res);
  CHECK(res->status == 201);
}

}  // namespace
}  // namespace jitbroker::testing::http_hardening_test

namespace jitbroker::testing::http_hardening_test {
namespace {

TEST_CASE("Broker: serves TLS (checked by curl), and refuses plain HTTP on the TLS port") {
  char tmpl[] = "/tmp/jitbroker-tls-XXXXXX";
  REQUIRE(::mkdtemp(tmpl) != nullptr);
  const std::string dir = tmpl;
  auto [rc, out] = RunCommand(
      "openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 1 "
      "-subj /CN=localhost -addext subjectAltName=IP:127.0.0.1 -keyout " +
      dir + "/key.pem -out " + dir + "/cert.pem 2>&1");
  REQUIRE_MESSAGE(rc == 0, out);
  BrokerOptions o;
  o.server_extra = ", tls: {cert: " + dir + "/cert.pem, key: " + dir + "/key.pem}";
  auto b = BrokerProcess::Start(o);
  const std::string url = "https://127.0.0.1:" + std::to_string(b->port());
  auto [hrc, health] =
      RunCommand("curl -sS --max-time 5 --cacert " + dir + "/cert.pem " + url + "/healthz 2>&1");
  CHECK(hrc == 0);
  CHECK(health.find("\"status\":\"ok\"") != std::string::npos);
  // Two requests on one kept-alive TLS connection.
  auto [krc, both] = RunCommand("curl -sS --max-time 5 --cacert " + dir + "/cert.pem " + url +
                                "/healthz " + url + "/readyz 2>&1");
  CHECK(krc == 0);
  CHECK(both.find("\"status\":\"ready\"") != std::string::npos);
  // TLS 1.0 and 1.1 are refused.
  auto [oldrc, old] = RunCommand("curl -sS --max-time 5 --cacert " + dir +
                                 "/cert.pem --tls-max 1.1 " + url + "/healthz 2>&1");
  CHECK(oldrc != 0);
  // Plain HTTP to the TLS port gets no answer, and the daemon serves on.
  RawHttpConnection plain(b->port());
  plain.Send("GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n");
  CHECK(RawStatus(plain.ReadResponse(2000ms)) == 0);
  auto [arc, again] =
      RunCommand("curl -sS --max-time 5 --cacert " + dir + "/cert.pem " + url + "/healthz 2>&1");
  CHECK(arc == 0);
  b->Stop();
  RunCommand("rm -rf " + dir);
}

}  // namespace
}  // namespace jitbroker::testing::http_hardening_test

namespace jitbroker::testing::http_hardening_test {
namespace {

// Issue #16: a renewed certificate is picked up by SIGHUP (or POST
// /v1/admin/reload) without a restart and without dropping the connections
// already open; a broken pair is refused and the current one kept; the
// listener offers only TLS 1.2+ with forward-secret AEAD suites.
TEST_CASE("Broker: TLS certificate reloaded on SIGHUP, open connections kept") {
  char tmpl[] = "/tmp/jitbroker-tls-reload-XXXXXX";
  REQUIRE(::mkdtemp(tmpl) != nullptr);
  const std::string dir = tmpl;
  for (const char* name : {"a", "b"}) {
    auto [rc, out] = RunCommand(
        "openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 1 "
        "-subj /CN=" +
        std::string(name) + " -addext subjectAltName=IP:127.0.0.1 -keyout " + dir + "/" + name +
        "-key.pem -out " + dir + "/" + name + "-cert.pem 2>&1");
    REQUIRE_MESSAGE(rc == 0, out);
  }
  REQUIRE(RunCommand("cp " + dir + "/a-cert.pem " + dir + "/cert.pem && cp " + dir + "/a-key.pem " +
                     dir + "/key.pem")
              .first == 0);
  BrokerOptions o;
  o.server_extra = ", tls: {cert: " + dir + "/cert.pem, key: " + dir + "/key.pem}";
  auto b = BrokerProcess::Start(o);
  const std::string url = "https://127.0.0.1:" + std::to_string(b->port());
  auto trusts = [&](const char* which) {
    return RunCommand("curl -sS --max-time 5 --cacert " + dir + "/" + which + "-cert.pem " + url +
                      "/healthz 2>&1")
               .first == 0;
  };
  CHECK(trusts("a"));
  CHECK_FALSE(trusts("b"));

  // A connection opened before the renewal.
  httplib::SSLClient kept("127.0.0.1", b->port());
  kept.enable_server_certificate_verification(false);
  kept.set_keep_alive(true);
  auto first = kept.Get("/healthz");
  REQUIRE(first);
  CHECK(first->status == 200);
  REQUIRE(kept.is_socket_open());

  // A broken pair (B's certificate with A's key) is refused; A stays.
  REQUIRE(RunCommand("cp " + dir + "/b-cert.pem " + dir + "/cert.pem").first == 0);
  httplib::SSLClient admin("127.0.0.1", b->port());
  admin.enable_server_certificate_verification(false);
  auto refused = admin.Post("/v1/admin/reload", {{"Authorization", "Bearer " + b->admin_key}}, "{}",
                            "application/json");
  REQUIRE(refused);
  CHECK(refused->status == 400);
  CHECK(refused->body.find("invalid_config") != std::string::npos);
  CHECK(trusts("a"));

  // The renewed pair, by SIGHUP as systemd's ExecReload sends it.
  REQUIRE(RunCommand("cp " + dir + "/b-key.pem " + dir + "/key.pem").first == 0);
  b->Signal(SIGHUP);
  bool switched = false;
  for (int i = 0; i < 100 && !switched; ++i) {
    switched = trusts("b");
    if (!switched) {
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
  }
  CHECK(switched);
  CHECK_FALSE(trusts("a"));
  // The connection from before is still open and still served.
  CHECK(kept.is_socket_open());
  auto again = kept.Get("/healthz");
  REQUIRE(again);
  CHECK(again->status == 200);

  // Protocol floor and suites: TLS 1.1 refused, a TLS 1.2 CBC suite refused,
  // a TLS 1.2 AEAD suite accepted.
  const std::string cacert = " --cacert " + dir + "/b-cert.pem ";
  CHECK(RunCommand("curl -sS --max-time 5" + cacert + "--tls-max 1.1 " + url + "/healthz 2>&1")
            .first != 0);
  CHECK(RunCommand("curl -sS --max-time 5" + cacert +
                   "--tls-max 1.2 --ciphers ECDHE-ECDSA-AES128-SHA " + url + "/healthz 2>&1")
            .first != 0);
  CHECK(RunCommand("curl -sS --max-time 5" + cacert +
                   "--tls-max 1.2 --ciphers ECDHE-ECDSA-AES128-GCM-SHA256 " + url + "/healthz 2>&1")
            .first == 0);
  b->Stop();
  RunCommand("rm -rf " + dir);
}

}  // namespace
}  // namespace jitbroker::testing::http_hardening_test

namespace jitbroker::testing::http_hardening_test {
namespace {

// Issue #16: optional client certificates for resource servers and admins
// (server.tls.client_ca, a principal's client_certs_sha256). Checked with
// curl as the client.
TEST_CASE("Broker: a TLS client certificate authenticates the principal that lists it") {
  char tmpl[] = "/tmp/jitbroker-mtls-XXXXXX";
  REQUIRE(::mkdtemp(tmpl) != nullptr);
  const std::string dir = tmpl;
  const std::string ec = "openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes ";
  for (const std::string& cmd : {
           ec + "-x509 -days 1 -subj /CN=test-ca -keyout " + dir + "/ca.key -out " + dir +
               "/ca.pem",
           ec + "-x509 -days 1 -subj /CN=localhost -addext subjectAltName=IP:127.0.0.1 -keyout " +
               dir + "/server.key -out " + dir + "/server.pem",
           ec + "-subj /CN=resource-server -keyout " + dir + "/client.key -out " + dir +
               "/client.csr",
           "openssl x509 -req -days 1 -in " + dir + "/client.csr -CA " + dir + "/ca.pem -CAkey " +
               dir + "/ca.key -CAcreateserial -out " + dir + "/client.pem",
           ec + "-subj /CN=unlisted -keyout " + dir + "/other.key -out " + dir + "/other.csr",
           "openssl x509 -req -days 1 -in " + dir + "/other.csr -CA " + dir + "/ca.pem -CAkey " +
               dir + "/ca.key -CAcreateserial -out " + dir + "/other.pem",
           ec + "-x509 -days 1 -subj /CN=rogue -keyout " + dir + "/rogue.key -out " + dir +
               "/rogue.pem",
       }) {
    auto [rc, out] = RunCommand(cmd + " 2>&1");
    REQUIRE_MESSAGE(rc == 0, out);
  }
  auto [frc, fingerprint] = RunCommand("openssl x509 -in " + dir +
                                       "/client.pem -outform der | sha256sum | cut -d' ' -f1");
  REQUIRE(frc == 0);
  fingerprint = fingerprint.substr(0, 64);

  BrokerOptions o;
  o.server_extra = ", tls: {cert: " + dir + "/server.pem, key: " + dir +
                   "/server.key, client_ca: " + dir + "/ca.pem}";
  auto b = BrokerProcess::Start(o);
  {  // The admin (also a resource server) lists the certificate.
    std::ifstream in(b->config_path());
    std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    const std::string from = "api_key_file: keys/admin.key}";
    const size_t at = text.find(from);
    REQUIRE(at != std::string::npos);
    text.replace(at, from.size(),
                 "api_key_file: keys/admin.key, client_certs_sha256: [" + fingerprint + "]}");
    std::ofstream(b->config_path(), std::ios::trunc) << text;
  }
  b->Restart();
  const std::string url = "https://127.0.0.1:" + std::to_string(b->port());
  auto status = [&](const std::string& cert, const std::string& extra, const std::string& path) {
    std::string cmd = "curl -sS -o /dev/null -w '%{http_code}' --max-time 5 --cacert " + dir +
                      "/server.pem " + extra;
    if (!cert.empty()) {
      cmd += " --cert " + dir + "/" + cert + ".pem --key " + dir + "/" + cert + ".key";
    }
    auto [rc, out] = RunCommand(cmd + " " + url + path + " 2>/dev/null");
    return rc == 0 ? out : "failed";
  };
  // The listed certificate stands for its principal, without an API key.
  CHECK(status("client", "", "/v1/sessions") == "200");
  CHECK(status("client", "-X POST -H 'Content-Type: application/x-www-form-urlencoded' -d token=x",
               "/v1/introspect") == "200");
  // No certificate and no key; a certificate of the CA nobody lists.
  CHECK(status("", "", "/v1/sessions") == "401");
  CHECK(status("other", "", "/v1/sessions") == "401");
  // A certificate of another CA fails the handshake.
  CHECK(status("rogue", "", "/v1/sessions") == "failed");
  // A header, when sent, decides alone: a wrong key is refused even with
  // the listed certificate; clients without certificates use keys as before.
  CHECK(status("client", "-H 'Authorization: Bearer jbk_0000000000000000000000000000000000000000'",
               "/v1/sessions") == "401");
  CHECK(status("", "-H 'Authorization: Bearer " + b->admin_key + "'", "/v1/sessions") == "200");
  b->Stop();
  RunCommand("rm -rf " + dir);
}

}  // namespace
}  // namespace jitbroker::testing::http_hardening_test
