// `jitctl gcp serve` (docs/jitctl.md, "gcp serve"; docs/gcp.md, "How agents
// use it"): a stand-in for the GCE metadata server's service-account
// endpoints on loopback, answering with the token of a grant the agent's
// session asks for. Google's client libraries and gcloud reach it through
// GCE_METADATA_HOST / GCE_METADATA_ROOT / GCE_METADATA_IP and refresh
// tokens through the broker for as long as the agent runs.
//
// Served, under /computeMetadata/v1/ (ACCOUNT is "default" or the grant's
// service account):
//   instance/service-accounts/                 "default/\nEMAIL/\n"
//   instance/service-accounts/ACCOUNT/         ?recursive=true: {"aliases",
//                                              "email","scopes"}; else the
//                                              listing
//   instance/service-accounts/ACCOUNT/email    the service account
//   instance/service-accounts/ACCOUNT/aliases  "default"
//   instance/service-accounts/ACCOUNT/scopes   one scope a line
//   instance/service-accounts/ACCOUNT/token    {"access_token","expires_in",
//                                              "token_type":"Bearer"};
//                                              ?scopes=A,B must name scopes
//                                              the grant has
//   project/project-id                         the resource's project
//   project/numeric-project-id                 --project-number (gcloud
//                                              reads it to detect the
//                                              server); 404 without
// and "/" (the libraries' ping). Every answer carries `Metadata-Flavor:
// Google`.
//
// Refused before a credential is touched, as Google's server refuses (so
// that a page in a browser or a request forwarded by a proxy on this host
// cannot read the token): a request without exactly one `Metadata-Flavor:
// Google` 403, one with `X-Forwarded-For` 403, a Host other than loopback or
// metadata.google.internal 403, another method 405 (so no CORS preflight
// passes), a body 413, `wait_for_change` 400, identity tokens and unknown
// paths 404. A grant the broker denies or holds for approval answers 403, a
// broker that cannot give one 502, each with {"code","message"}, and the
// cached token is dropped (fail closed).
//
// Unlike `aws serve` there is no per-run token: the libraries send none.
// Any process that can reach 127.0.0.1 on this host can ask, as any process
// on a VM can ask its metadata server; docs/gcp.md says where to run it.
//
// Thread-safety: MetadataEndpoint's methods are called from the listener's
// threads; the cache serialises the fetches, a mutex the log lines.
#pragma once

#include <functional>
#include <ostream>
#include <string>
#include <vector>

#include "broker/http/transport.h"
#include "cli/agent_credentials.h"
#include "cli/loopback_endpoint.h"
#include "jitbroker/clock.h"

namespace jitbroker::cli {

inline constexpr std::string_view kMetadataRoot = "/computeMetadata/v1/";

struct MetadataEndpointOptions {
  std::string project;          // project/project-id
  std::string project_number;   // project/numeric-project-id; empty: not served
  std::string service_account;  // the grant's (its token's) service account
  std::vector<std::string> scopes;
  const Clock* clock = nullptr;
  std::function<FetchedCredential<GcpCredential>()> fetch;  // asks the broker for a new grant
  std::ostream* log = nullptr;                              // one line per grant or refusal
};

class MetadataEndpoint final : public LoopbackEndpoint<GcpCredential> {
 public:
  explicit MetadataEndpoint(MetadataEndpointOptions options);

  Result<http::RoutePlan> Plan(http::Request& head) override;
  void Handle(http::Request& request, http::Response& response) override;
  void RenderError(const http::Request& request, const Error& error,
                   http::Response& response) override;

 private:
  void Token(const std::vector<std::pair<std::string, std::string>>& query,
             http::Response& response);

  const std::string project_;
  const std::string project_number_;
  const std::string service_account_;
  const std::vector<std::string> scopes_;
};

}  // namespace jitbroker::cli
