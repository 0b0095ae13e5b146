// Error vocabulary of jitbroker.
//
// An Error means a request could not be evaluated or an operation failed; a
// policy denial or a pending approval is a normal Decision (policy.h), never an
// Error. Each Error carries:
//   - code:      the canonical category (chosen as abseil's guidance says);
//   - reason:    a stable, machine-readable problem `code` for clients
//                (e.g. "unknown_field"); defaults to the category's own;
//   - message:   client-safe text, never containing secrets;
//   - detail:    operator-only text for logs, never sent to clients;
//   - retryable / retry_after.
// One table (ErrorCodeInfo) maps categories to HTTP status and default reason.
//
// Thread-safety: value type; no shared state.
#pragma once

#include <chrono>
#include <string>
#include <string_view>

namespace jitbroker {

enum class ErrorCode {
  kInvalidArgument,
  kUnauthenticated,
  kPermissionDenied,
  kNotFound,
  kAlreadyExists,
  kFailedPrecondition,
  kResourceExhausted,
  kPayloadTooLarge,
  kUnsupportedMediaType,
  kMethodNotAllowed,
  kUnavailable,
  kDeadlineExceeded,
  kInternal,
};

// Every enumerator, for tests that walk the table.
inline constexpr ErrorCode kAllErrorCodes[] = {
    ErrorCode::kInvalidArgument,   ErrorCode::kUnauthenticated, ErrorCode::kPermissionDenied,
    ErrorCode::kNotFound,          ErrorCode::kAlreadyExists,   ErrorCode::kFailedPrecondition,
    ErrorCode::kResourceExhausted, ErrorCode::kPayloadTooLarge, ErrorCode::kUnsupportedMediaType,
    ErrorCode::kMethodNotAllowed,  ErrorCode::kUnavailable,     ErrorCode::kDeadlineExceeded,
    ErrorCode::kInternal,
};

struct ErrorCodeInfo {
  int http_status;
  std::string_view default_reason;  // problem `code` when the Error sets none
  std::string_view title;           // problem `title`
};

// The one table mapping categories to HTTP and problem codes.
const ErrorCodeInfo& InfoFor(ErrorCode code);
std::string_view ErrorCodeName(ErrorCode code);

struct Error {
  ErrorCode code = ErrorCode::kInternal;
  std::string reason;   // stable problem code; empty = InfoFor(code).default_reason
  std::string message;  // client-safe
  std::string detail;   // operator-only
  bool retryable = false;
  std::chrono::seconds retry_after{0};

  std::string_view Reason() const {
    return reason.empty() ? InfoFor(code).default_reason : std::string_view(reason);
  }
  // For logs: code, reason, message and detail. Never put secrets in any of them.
  std::string ToString() const;
};

Error InvalidArgument(std::string reason, std::string message);
Error Unauthenticated(std::string reason, std::string message);
Error PermissionDenied(std::string reason, std::string message);
Error NotFound(std::string reason, std::string message);
Error AlreadyExists(std::string reason, std::string message);
Error FailedPrecondition(std::string reason, std::string message);
Error ResourceExhausted(std::string reason, std::string message);
Error PayloadTooLarge(std::string reason, std::string message);
Error UnsupportedMediaType(std::string reason, std::string message);
Error Unavailable(std::string reason, std::string message, std::string detail = {});
Error Internal(std::string message, std::string detail = {});

}  // namespace jitbroker
