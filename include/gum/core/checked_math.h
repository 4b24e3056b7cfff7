#pragma once
// Size arithmetic that says when it does not fit: element and byte counts come from config keys
// and file headers, and a product of a few large values silently wraps in int64_t.
#include <cstdint>
#include <optional>

namespace gum {

// a * b, or nothing when it does not fit in int64_t.
inline std::optional<int64_t> checked_mul(int64_t a, int64_t b) {
  int64_t result;
  if (__builtin_mul_overflow(a, b, &result)) return std::nullopt;
  return result;
}

// a + b, or nothing when it does not fit in int64_t.
inline std::optional<int64_t> checked_add(int64_t a, int64_t b) {
  int64_t result;
  if (__builtin_add_overflow(a, b, &result)) return std::nullopt;
  return result;
}

}  // namespace gum
