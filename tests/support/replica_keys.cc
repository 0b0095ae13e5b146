// ReplicaKeys (tests/support/replica_keys.h).
#include "tests/support/replica_keys.h"

#include <string>

#include <doctest/doctest.h>

#include "broker/crypto/crypto.h"

namespace jitbroker::testing {

ReplicaKeys::ReplicaKeys(const std::string& dsn) {
  dir_.Write("dsn", dsn);
  dir_.Write("seal.b64", crypto::Base64Encode(crypto::RandomBytes(32)) + "\n");
  for (const char* k : {"audit.pem", "jwt.pem"}) {
    REQUIRE(RunCommand("openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out " +
                       dir_.File(k) + " 2>&1")
                .first == 0);
  }
}

BrokerOptions ReplicaKeys::Replica(const std::string& id, const BrokerProcess* first,
                                   const ReplicaOptions& options) const {
  BrokerOptions o;
  o.top_extra = "store: {postgres: {dsn: \"file:" + dir_.File("dsn") +
                "\", pool_size: " + std::to_string(options.pool_size) + ", replica_id: " + id +
                "}}\nseal_key: \"file:" + dir_.File("seal.b64") +
                "\"\naudit: {signing_key: \"file:" + dir_.File("audit.pem") + "\"" +
                options.audit_extra + "}\n" + options.top_extra;
  o.jwt_signing_key = "file:" + dir_.File("jwt.pem");
  o.same_keys_as = first;
  return o;
}

}  // namespace jitbroker::testing
