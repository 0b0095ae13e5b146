// libFuzzer target: URL parsing (net::ParseUrl) under every policy the
// broker uses, and the lenient host reader its lints rely on
// (docs/testing.md, "Fuzzing"). Properties: an accepted URL names a host,
// http is accepted only where the policy allows it (to a loopback host for
// the loopback-only policies), and the host an accepted URL names is one of
// the hosts the lenient reader sees in the same text (so a lint keyed on
// those hosts cannot be sidestepped by a spelling ParseUrl accepts).
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>

#include "broker/net/url.h"

namespace net = jitbroker::net;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  const auto lenient = net::LenientHttpHosts(text);
  const net::UrlPolicy policies[] = {
      net::UrlPolicy{},
      net::UrlPolicy::OidcEndpoint(false),
      net::UrlPolicy::OidcEndpoint(true),
      net::UrlPolicy::GitHubBaseUrl(true),
      net::UrlPolicy::WebhookUrl(),
      net::UrlPolicy::BrokerUrl(),
      net::UrlPolicy::ActionsTokenRequestUrl(),
      net::UrlPolicy::GitRemote(),
  };
  for (const auto& policy : policies) {
    auto url = net::ParseUrl(text, policy);
    if (!url) {
      continue;
    }
    if (url->host.empty()) {
      std::abort();
    }
    if (url->scheme == "http") {
      if (policy.http == net::HttpRule::kRefuse) {
        std::abort();
      }
      if (policy.http == net::HttpRule::kLoopbackOnly && !url->IsLoopback()) {
        std::abort();
      }
    }
    std::string host = url->host;  // the lenient reader drops trailing dots
    while (host.ends_with('.')) {
      host.pop_back();
    }
    if (std::find(lenient.begin(), lenient.end(), host) == lenient.end()) {
      std::abort();
    }
    (void)url->Authority();
  }
  return 0;
}
