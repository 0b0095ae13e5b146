// Result<T> and Status: the return types of every fallible function.
//
// GCC 12's std::expected has no and_then/transform; propagate errors with
// JITBROKER_RETURN_IF_ERROR and JITBROKER_ASSIGN_OR_RETURN and never call
// .value() unchecked.
#pragma once

#include <expected>

#include "jitbroker/error.h"

namespace jitbroker {

template <class T>
using Result = std::expected<T, Error>;
using Status = std::expected<void, Error>;

inline Status OkStatus() { return {}; }

}  // namespace jitbroker

#define JITBROKER_CONCAT_INNER_(a, b) a##b
#define JITBROKER_CONCAT_(a, b) JITBROKER_CONCAT_INNER_(a, b)

#define JITBROKER_RETURN_IF_ERROR(expr)                             \
  do {                                                              \
    auto jitbroker_status_ = (expr);                                \
    if (!jitbroker_status_) {                                       \
      return std::unexpected(std::move(jitbroker_status_).error()); \
    }                                                               \
  } while (false)

#define JITBROKER_ASSIGN_OR_RETURN_IMPL_(tmp, lhs, expr) \
  auto tmp = (expr);                                     \
  if (!tmp) {                                            \
    return std::unexpected(std::move(tmp).error());      \
  }                                                      \
  lhs = std::move(*tmp)

#define JITBROKER_ASSIGN_OR_RETURN(lhs, expr) \
  JITBROKER_ASSIGN_OR_RETURN_IMPL_(JITBROKER_CONCAT_(jitbroker_result_, __LINE__), lhs, expr)
