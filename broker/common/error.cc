#include "jitbroker/error.h"

#include <string>

namespace jitbroker {

namespace {

struct Row {
  ErrorCode code;
  std::string_view name;
  ErrorCodeInfo info;
};

// The one table mapping error categories to HTTP status and problem codes.
constexpr Row kTable[] = {
    {ErrorCode::kInvalidArgument, "INVALID_ARGUMENT", {400, "invalid_request", "Invalid request"}},
    {ErrorCode::kUnauthenticated, "UNAUTHENTICATED", {401, "unauthenticated", "Unauthenticated"}},
    {ErrorCode::kPermissionDenied, "PERMISSION_DENIED", {403, "forbidden", "Forbidden"}},
    {ErrorCode::kNotFound, "NOT_FOUND", {404, "not_found", "Not found"}},
    {ErrorCode::kAlreadyExists, "ALREADY_EXISTS", {409, "conflict", "Conflict"}},
    {ErrorCode::kFailedPrecondition,
     "FAILED_PRECONDITION",
     {409, "failed_precondition", "Conflict"}},
    {ErrorCode::kResourceExhausted,
     "RESOURCE_EXHAUSTED",
     {429, "rate_limited", "Too many requests"}},
    {ErrorCode::kPayloadTooLarge,
     "PAYLOAD_TOO_LARGE",
     {413, "payload_too_large", "Payload too large"}},
    {ErrorCode::kUnsupportedMediaType,
     "UNSUPPORTED_MEDIA_TYPE",
     {415, "unsupported_media_type", "Unsupported media type"}},
    {ErrorCode::kMethodNotAllowed,
     "METHOD_NOT_ALLOWED",
     {405, "method_not_allowed", "Method not allowed"}},
    {ErrorCode::kUnavailable, "UNAVAILABLE", {503, "unavailable", "Service unavailable"}},
    {ErrorCode::kDeadlineExceeded,
     "DEADLINE_EXCEEDED",
     {504, "deadline_exceeded", "Deadline exceeded"}},
    {ErrorCode::kInternal, "INTERNAL", {500, "internal", "Internal error"}},
};

const Row& RowFor(ErrorCode code) {
  for (const Row& row : kTable) {
    if (row.code == code) {
      return row;
    }
  }
  return kTable[std::size(kTable) - 1];
}

Error Make(ErrorCode code, std::string reason, std::string message, std::string detail = {}) {
  Error e;
  e.code = code;
  e.reason = std::move(reason);
  e.message = std::move(message);
  e.detail = std::move(detail);
  e.retryable = code == ErrorCode::kUnavailable || code == ErrorCode::kDeadlineExceeded ||
                code == ErrorCode::kResourceExhausted;
  return e;
}

}  // namespace

const ErrorCodeInfo& InfoFor(ErrorCode code) { return RowFor(code).info; }
std::string_view ErrorCodeName(ErrorCode code) { return RowFor(code).name; }

std::string Error::ToString() const {
  std::string out(ErrorCodeName(code));
  out += " ";
  out += Reason();
  out += ": ";
  out += message;
  if (!detail.empty()) {
    out += " (";
    out += detail;
    out += ")";
  }
  return out;
}

Error InvalidArgument(std::string r, std::string m) {
  return Make(ErrorCode::kInvalidArgument, std::move(r), std::move(m));
}
Error Unauthenticated(std::string r, std::string m) {
  return Make(ErrorCode::kUnauthenticated, std::move(r), std::move(m));
}
Error PermissionDenied(std::string r, std::string m) {
  return Make(ErrorCode::kPermissionDenied, std::move(r), std::move(m));
}
Error NotFound(std::string r, std::string m) {
  return Make(ErrorCode::kNotFound, std::move(r), std::move(m));
}
Error AlreadyExists(std::string r, std::string m) {
  return Make(ErrorCode::kAlreadyExists, std::move(r), std::move(m));
}
Error FailedPrecondition(std::string r, std::string m) {
  return Make(ErrorCode::kFailedPrecondition, std::move(r), std::move(m));
}
Error ResourceExhausted(std::string r, std::string m) {
  return Make(ErrorCode::kResourceExhausted, std::move(r), std::move(m));
}
Error PayloadTooLarge(std::string r, std::string m) {
  return Make(ErrorCode::kPayloadTooLarge, std::move(r), std::move(m));
}
Error UnsupportedMediaType(std::string r, std::string m) {
  return Make(ErrorCode::kUnsupportedMediaType, std::move(r), std::move(m));
}
Error Unavailable(std::string r, std::string m, std::string d) {
  return Make(ErrorCode::kUnavailable, std::move(r), std::move(m), std::move(d));
}
Error Internal(std::string m, std::string d) {
  return Make(ErrorCode::kInternal, "internal", std::move(m), std::move(d));
}

}  // namespace jitbroker
