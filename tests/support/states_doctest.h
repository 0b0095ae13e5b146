// doctest prints grant and session states by name in a failed CHECK
// ("active", not 4). Include it in tests that compare states.
#pragma once

#include <doctest/doctest.h>

#include "jitbroker/states.h"

namespace jitbroker {

inline doctest::String toString(GrantState s) {
  return doctest::String(StateName(s).data(), static_cast<unsigned>(StateName(s).size()));
}
inline doctest::String toString(SessionState s) {
  return doctest::String(StateName(s).data(), static_cast<unsigned>(StateName(s).size()));
}

}  // namespace jitbroker
