// libFuzzer target: CI trust policies (docs/configuration.md, "trust") and
// the verified claims of CI tokens matched against them (docs/testing.md,
// "Fuzzing"). The first byte picks: the `trust:` YAML itself, or claims
// (strict JSON) against a fixed GitHub Actions policy, through the claim
// matching, the `sub` forms, the run key and the facts recorded in audit.
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string_view>

#include "broker/common/json_util.h"
#include "broker/oidc/trust_policy.h"

namespace oidc = jitbroker::oidc;

namespace {

const char kPolicy[] = R"(
- name: payments-deploy
  issuer: https://token.actions.githubusercontent.com
  audience: jitbroker.acme.example
  claims:
    repository_owner_id: "123"
    repository_id: "456"
    ref: refs/heads/main
    event_name: [push, workflow_dispatch]
    job_workflow_ref: "acme/workflows/.github/workflows/deploy.yml@refs/heads/*"
  grant:
    issuer: internal
    resource: jwt://mcp.internal
    scopes: [deploy, read]
    ttl_seconds: 300
- name: gitlab-build
  issuer: https://gitlab.example
  provider: gitlab
  audience: jitbroker
  claims:
    project_id: "77"
    sub: "project_path:acme/*:ref_type:branch:ref:main"
  grant:
    issuer: internal
    resource: jwt://mcp.internal
    scopes: [read]
)";

oidc::TrustContext Ctx() {
  oidc::TrustContext ctx;
  ctx.issuer_names = {"internal"};
  return ctx;
}

const oidc::TrustSet& Fixed() {
  static const auto* set = [] {
    auto s = oidc::ParseTrustPoliciesText(kPolicy, "trust.yaml", Ctx());
    if (!s) {
      std::fprintf(stderr, "fixed policy: %s\n", s.error().message.c_str());
      std::abort();
    }
    return new std::shared_ptr<const oidc::TrustSet>(*s);
  }();
  return **set;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) {
    return 0;
  }
  const std::string_view text(reinterpret_cast<const char*>(data + 1), size - 1);
  if (data[0] % 2 == 0) {
    (void)oidc::ParseTrustPoliciesText(text, "trust.yaml", Ctx());
    return 0;
  }
  auto claims = jitbroker::json::ParseStrict(text, {.what = "claims", .max_bytes = 16384});
  if (!claims || !claims->is_object()) {
    return 0;
  }
  for (const auto& policy : Fixed().policies) {
    (void)oidc::CheckClaims(policy, *claims);
    (void)oidc::CiRunKey(policy, *claims);
    (void)oidc::CiFacts(policy, *claims);
  }
  (void)oidc::SubjectForms(*claims);
  (void)oidc::ClaimText(*claims, "sub");
  return 0;
}
