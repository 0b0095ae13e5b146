// FakeGoogle: a loopback stand-in for the Google endpoints the gcp issuer
// talks to (docs/gcp.md), all at one URL, checking what Google checks and
// answering with Google's JSON, errors included:
//
//   - IAM Credentials: POST /v1/projects/-/serviceAccounts/EMAIL:
//     generateAccessToken with `Authorization: Bearer` a token this fake
//     issued to a principal (else 401 UNAUTHENTICATED), for a known service
//     account (else 404 NOT_FOUND) that is enabled and grants the principal
//     Token Creator (else 403 PERMISSION_DENIED); a JSON body with a
//     non-empty `scope` list and `lifetime` "Ns" in 1..3600 (else 400
//     INVALID_ARGUMENT). The `-` project is required.
//   - Google STS: POST /v1/token, form-encoded, no Authorization header:
//     token exchange of an access token this fake issued with `options`
//     holding a Credential Access Boundary (1-10 rules, each
//     availableResource //storage.googleapis.com/projects/_/buckets/B and
//     availablePermissions inRole:roles/storage.*; `options` accepted once
//     or twice form-encoded, as client libraries differ), or of a JWT
//     (subject_token_type …:jwt) at the configured workload identity
//     provider `audience`: signature by the provider's JWK, iss, aud
//     https:<audience>, iat/exp (at most an hour apart, exp in the future).
//     Errors are OAuth's {"error": "invalid_grant" | "invalid_request", …}.
//   - the OAuth token endpoint: POST /token, JWT-bearer grant of a
//     service-account key: header kid a known key id, RS256 signature by
//     that key, iss the key's client_email, aud <url>/token, a scope.
//   - the metadata server: GET /computeMetadata/v1/instance/service-accounts/
//     default/token with `Metadata-Flavor: Google` (else 403).
//
// Fault injection: the next N requests whose path contains a string answer a
// status with Google's error JSON; latency. Every issued token is kept
// (unless keep_issued is off): TokenActive says whether a token would still
// be accepted (unexpired, its service account enabled: re-enabling revives
// it, as at Google).
//
// Thread-safety: all methods are thread-safe; the server runs on its own
// threads until Stop() or destruction.
#pragma once

#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace jitbroker::testing {

struct FakeGoogleServiceAccount {
  std::string email;
  // Principals with Token Creator on it: a service account's email, or a
  // federated principal://iam.googleapis.com/…/subject/SUB.
  std::set<std::string> token_creators;
  bool enabled = true;
};

struct FakeGoogleOptions {
  int threads = 16;
  // Workload identity: the provider (//iam.googleapis.com/…/providers/P), its
  // accepted issuer and public JWK.
  std::string wif_audience;
  std::string wif_issuer;
  nlohmann::json wif_jwk;
  // Service-account keys: private_key_id -> {client_email, public JWK}.
  std::map<std::string, std::pair<std::string, nlohmann::json>> key_files;
  // The metadata server's service account (empty = no metadata server).
  std::string metadata_account;
  // Keep every issued token (Find, IssuedTokens, TokenActive, the storage
  // API, downscoping). Off, only tokens that can mint more are kept: the
  // identity tokens (federated, key file, metadata) and generateAccessToken
  // tokens of an account with Token Creator on another; the rest are neither
  // kept nor accepted afterwards. Benchmarks turn it off: memory stays flat.
  bool keep_issued = true;
};

class FakeGoogle {
 public:
  struct Issued {
    std::string token;
    std::string principal;        // who holds it (service account or federated)
    std::string service_account;  // for generateAccessToken tokens
    std::vector<std::string> scopes;
    int64_t lifetime_seconds = 0;
    int64_t expires_at = 0;   // unix seconds
    nlohmann::json boundary;  // the accessBoundary of a downscoped token
    std::string kind;         // generated, downscoped, federated, key_file, metadata
  };

  ~FakeGoogle();
  static std::unique_ptr<FakeGoogle> Start(FakeGoogleOptions options);
  void Stop();
  std::string url() const;  // http://127.0.0.1:PORT
  // The federated principal for a JWT subject.
  std::string FederatedPrincipal(const std::string& subject) const;

  void AddServiceAccount(FakeGoogleServiceAccount sa);
  void SetEnabled(const std::string& email, bool enabled);
  // The next `count` requests whose path contains `path_part` answer
  // `status` (429, 500, 403, …) with Google's error JSON.
  void InjectErrors(int status, int count, const std::string& path_part = "");
  void SetLatency(std::chrono::milliseconds latency);

  bool TokenActive(const std::string& token) const;
  std::optional<Issued> Find(const std::string& token) const;
  std::vector<Issued> IssuedTokens() const;
  size_t Requests() const;
  // What requests got wrong (for tests to say what).
  std::vector<std::string> Violations() const;
  // The last JWT the fake verified (workload identity or key file).
  std::string LastVerifiedJwt() const;

 private:
  FakeGoogle() = default;
  struct Impl;
  std::unique_ptr<Impl> impl_;
  int port_ = 0;
};

}  // namespace jitbroker::testing
