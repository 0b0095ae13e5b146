#include "broker/service/request_digest.h"

#include "broker/crypto/crypto.h"

namespace jitbroker::service {

std::string CanonicalRequestJson(const std::string& session_id, const GrantRequest& req) {
  // nlohmann::json objects are std::map-backed: dump() emits sorted keys and
  // no whitespace, which is the canonical form documented above.
  nlohmann::json j = {{"session_id", session_id},
                      {"tool", req.tool},
                      {"operation", req.operation},
                      {"resource", req.resource},
                      {"parameters", req.parameters},
                      {"issuer", req.issuer},
                      {"scope", req.scope}};
  j["ttl_seconds"] = req.ttl_seconds ? nlohmann::json(*req.ttl_seconds) : nlohmann::json(nullptr);
  return j.dump(-1, ' ', false, nlohmann::json::error_handler_t::strict);
}

std::string RequestDigest(const std::string& session_id, const GrantRequest& req) {
  return crypto::Sha256Hex(CanonicalRequestJson(session_id, req));
}

}  // namespace jitbroker::service
