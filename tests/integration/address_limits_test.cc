// Issue #16, abuse of the unauthenticated endpoints, against the real
// daemon: per-source-address token buckets for RFC 8693 exchanges,
// introspection and failed authentications (docs/configuration.md,
// "limits"). Refusals are 429 with Retry-After and the stable code
// `rate_limited`; an address out of failed authentications is refused
// before its credential is checked, so a right key and a wrong one get the
// same answer (no oracle for a guesser), while other addresses are served.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <fstream>
#include <string>

#include <doctest/doctest.h>
#include <httplib.h>
#include <nlohmann/json.hpp>

#include "tests/support/broker_process.h"

namespace jitbroker::testing {
namespace {

httplib::Client ClientOf(const BrokerProcess& b) {
  httplib::Client c("127.0.0.1", b.port());
  c.set_connection_timeout(5);
  c.set_read_timeout(30);
  return c;
}

void AppendLimits(BrokerProcess& b, const std::string& limits) {
  std::ofstream(b.config_path(), std::ios::app) << "limits:\n" << limits;
  b.Restart();
}

// GET `path` with `bearer` from the source address `from` (any 127/8
// address reaches the broker's 127.0.0.1); the status code, or -1.
int StatusFrom(const BrokerProcess& b, const char* from, const std::string& path,
               const std::string& bearer) {
  const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) {
    return -1;
  }
  sockaddr_in src{};
  src.sin_family = AF_INET;
  ::inet_pton(AF_INET, from, &src.sin_addr);
  sockaddr_in dst{};
  dst.sin_family = AF_INET;
  dst.sin_port = htons(static_cast<uint16_t>(b.port()));
  ::inet_pton(AF_INET, "127.0.0.1", &dst.sin_addr);
  int status = -1;
  if (::bind(fd, reinterpret_cast<sockaddr*>(&src), sizeof src) == 0 &&
      ::connect(fd, reinterpret_cast<sockaddr*>(&dst), sizeof dst) == 0) {
    const std::string req = "GET " + path + " HTTP/1.1\r\nHost: broker\r\nAuthorization: Bearer " +
                            bearer + "\r\nConnection: close\r\n\r\n";
    if (::send(fd, req.data(), req.size(), MSG_NOSIGNAL) == static_cast<ssize_t>(req.size())) {
      char buf[64] = {};
      const ssize_t n = ::recv(fd, buf, sizeof buf - 1, 0);
      const std::string head(buf, n > 0 ? static_cast<size_t>(n) : 0);
      if (head.starts_with("HTTP/1.1 ") && head.size() >= 12) {
        status = std::stoi(head.substr(9, 3));
      }
    }
  }
  ::close(fd);
  return status;
}

TEST_CASE("Address limits: failed authentications exhaust an address, right key or wrong") {
  auto b = BrokerProcess::Start();
  AppendLimits(*b, "  auth_failures_per_address: {rate_per_second: 0.001, burst: 3}\n");
  auto client = ClientOf(*b);
  const httplib::Headers good{{"Authorization", "Bearer " + b->admin_key}};
  const httplib::Headers bad{
      {"Authorization", "Bearer jbk_0000000000000000000000000000000000000000"}};

  auto ok = client.Get("/v1/sessions", good);
  REQUIRE(ok);
  CHECK(ok->status == 200);
  for (int i = 0; i < 3; ++i) {
    auto r = client.Get("/v1/sessions", bad);
    REQUIRE(r);
    CHECK(r->status == 401);
  }
  // Successes took nothing; three failures took the burst. Now the address
  // is refused whatever it sends, before the key is looked at.
  auto with_good = client.Get("/v1/sessions", good);
  auto with_bad = client.Get("/v1/sessions", bad);
  REQUIRE(with_good);
  REQUIRE(with_bad);
  for (const auto* r : {&with_good.value(), &with_bad.value()}) {
    INFO(r->body);
    CHECK(r->status == 429);
    CHECK(r->get_header_value("Content-Type").starts_with("application/problem+json"));
    CHECK(std::stoi(r->get_header_value("Retry-After")) >= 900);  // one token per 1000 s
    auto p = nlohmann::json::parse(r->body);
    CHECK(p["code"] == "rate_limited");
    CHECK(p["detail"].get<std::string>().find("auth_failures_per_address") != std::string::npos);
  }
  auto body_of = [](const httplib::Result& r) {
    auto j = nlohmann::json::parse(r->body);
    j.erase("request_id");
    return j;
  };
  CHECK(body_of(with_good) == body_of(with_bad));
  // Another address is served as before.
  CHECK(StatusFrom(*b, "127.0.0.2", "/v1/sessions", b->admin_key) == 200);
  CHECK(StatusFrom(*b, "127.0.0.1", "/v1/sessions", b->admin_key) == 429);
}

TEST_CASE("Address limits: RFC 8693 exchanges per address, 429 with the OAuth error shape") {
  auto b = BrokerProcess::Start();
  AppendLimits(*b, "  token_per_address: {rate_per_second: 0.001, burst: 2}\n");
  auto client = ClientOf(*b);
  const std::string form = "grant_type=password";
  for (int i = 0; i < 2; ++i) {
    auto r = client.Post("/v1/token", form, "application/x-www-form-urlencoded");
    REQUIRE(r);
    CHECK(r->status == 400);
  }
  auto r = client.Post("/v1/token", form, "application/x-www-form-urlencoded");
  REQUIRE(r);
  INFO(r->body);
  CHECK(r->status == 429);
  CHECK(std::stoi(r->get_header_value("Retry-After")) >= 900);
  CHECK(r->get_header_value("Cache-Control") == "no-store");
  auto j = nlohmann::json::parse(r->body);
  CHECK(j["error"] == "temporarily_unavailable");
  CHECK(j["code"] == "rate_limited");
}

TEST_CASE("Address limits: introspection per address") {
  auto b = BrokerProcess::Start();
  AppendLimits(*b, "  introspect_per_address: {rate_per_second: 0.001, burst: 1}\n");
  auto client = ClientOf(*b);
  const httplib::Headers admin{{"Authorization", "Bearer " + b->admin_key}};
  auto first = client.Post("/v1/introspect", admin, "token=jbt_unknown",
                           "application/x-www-form-urlencoded");
  REQUIRE(first);
  INFO(first->body);
  CHECK(first->status == 200);
  CHECK(nlohmann::json::parse(first->body)["active"] == false);
  auto second = client.Post("/v1/introspect", admin, "token=jbt_unknown",
                            "application/x-www-form-urlencoded");
  REQUIRE(second);
  CHECK(second->status == 429);
  CHECK(nlohmann::json::parse(second->body)["code"] == "rate_limited");
  CHECK(!second->get_header_value("Retry-After").empty());
}

}  // namespace
}  // namespace jitbroker::testing
