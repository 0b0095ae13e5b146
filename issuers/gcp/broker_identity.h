// BrokerIdentity: the broker's own Google access token, with which it calls
// generateAccessToken (docs/gcp.md, "The broker's identity"). One of:
//
//   - workload identity federation (no standing Google key): the broker
//     signs a short JWT (iss/sub as configured, aud https:<provider>, 10
//     minutes) with its own key, trades it at Google STS for a federated
//     token, and with that calls generateAccessToken as the configured
//     service account (cloud-platform, one hour);
//   - the metadata server (the broker runs on Google Cloud);
//   - a service-account key file (a standing key, last resort): an RS256
//     JWT-bearer assertion at the OAuth token endpoint.
//
// The token is kept until 5 minutes before it expires (this is the broker's
// own token; minted credentials are never cached). Invalidate() forgets it
// after Google refused it.
//
// Thread-safety: all methods are thread-safe; one refresh at a time.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <variant>

#include "broker/crypto/jose.h"
#include "issuers/gcp/google_api.h"
#include "jitbroker/clock.h"
#include "jitbroker/result.h"
#include "jitbroker/secret.h"

namespace jitbroker::issuers::gcp {

struct WorkloadIdentitySource {
  std::string audience;         // //iam.googleapis.com/projects/NUM/…/providers/PROV
  std::string service_account;  // the broker's service account
  std::string issuer;           // the JWT's iss (the provider's issuer URI)
  std::string subject;          // the JWT's sub
  SecretValue private_key_pem;  // RS256 or ES256 (PKCS#8 or traditional PEM)
};
struct MetadataSource {};
struct KeyFileSource {
  std::string client_email;
  std::string private_key_id;
  SecretValue private_key_pem;  // RSA
};
using IdentitySource = std::variant<WorkloadIdentitySource, MetadataSource, KeyFileSource>;

// Loads a PEM key as RS256, else ES256. Errors: kInvalidArgument.
[[nodiscard]] Result<std::unique_ptr<crypto::SigningKey>> LoadIdentityKey(const SecretValue& pem);
// Parses a service-account JSON key ("type": "service_account",
// client_email, private_key, private_key_id). Errors: kInvalidArgument
// naming the field, never echoing the key.
[[nodiscard]] Result<KeyFileSource> ParseKeyFile(const SecretValue& json_text);

class BrokerIdentity {
 public:
  static constexpr int64_t kJwtLifetimeSeconds = 600;
  static constexpr int64_t kRefreshBeforeSeconds = 300;

  // Errors: the key does not load.
  [[nodiscard]] static Result<std::unique_ptr<BrokerIdentity>> Create(IdentitySource source,
                                                                      GoogleApi* api,
                                                                      const Clock* clock);

  [[nodiscard]] Result<SecretValue> Get();
  void Invalidate();
  std::string_view mode() const;  // workload_identity, metadata, key_file
  uint64_t refreshes() const { return refreshes_.load(); }

 private:
  BrokerIdentity(IdentitySource source, std::unique_ptr<crypto::SigningKey> key, GoogleApi* api,
                 const Clock* clock);
  [[nodiscard]] Result<GoogleToken> Fetch();

  const IdentitySource source_;
  const std::unique_ptr<crypto::SigningKey> key_;  // null for metadata
  GoogleApi* api_;
  const Clock* clock_;
  std::atomic<uint64_t> refreshes_{0};
  std::mutex mu_;
  SecretValue token_;     // guarded by mu_
  TimePoint expires_at_;  // guarded by mu_
};

}  // namespace jitbroker::issuers::gcp
