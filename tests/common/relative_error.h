#pragma once
// The error measure of the comparison tests: ||actual - expected|| / ||expected|| over whole
// vectors (Frobenius norm, accumulated in double). Infinity when a value is NaN/Inf on one side
// only; positions non-finite on both sides are skipped; the absolute error when expected is zero.
#include <catch2/catch.hpp>
#include <cmath>
#include <vector>

namespace gum::testing {

template <typename Expected, typename Actual>
double relative_error(const std::vector<Expected>& expected, const std::vector<Actual>& actual) {
  REQUIRE(expected.size() == actual.size());
  double diff = 0.0, norm = 0.0;
  for (size_t i = 0; i < expected.size(); ++i) {
    const double e = static_cast<double>(expected[i]), a = static_cast<double>(actual[i]);
    if (std::isfinite(e) != std::isfinite(a)) return INFINITY;
    if (!std::isfinite(e)) continue;
    diff += (a - e) * (a - e);
    norm += e * e;
  }
  if (norm == 0.0) return std::sqrt(diff);
  return std::sqrt(diff / norm);
}

}  // namespace gum::testing
