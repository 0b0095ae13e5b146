// The canonical request digest that binds an approval to one exact request
// (issue #3): lower-case hex SHA-256 over the canonical JSON of
//   {"issuer","operation","parameters","resource","scope","session_id","tool","ttl_seconds"}
// where canonical means: object keys sorted by code point at every level, no
// insignificant whitespace, strings as UTF-8 with JSON's mandatory escapes
// only, integers in plain decimal, ttl_seconds null when the request gave
// none. Parameters are the request's own (before redaction).
#pragma once

#include <string>

#include "jitbroker/policy.h"

namespace jitbroker::service {

std::string CanonicalRequestJson(const std::string& session_id, const GrantRequest& req);
std::string RequestDigest(const std::string& session_id, const GrantRequest& req);

}  // namespace jitbroker::service
