// The CPU kernels' vectorisable exp (src/backend/cpu/kernels.h) against libm's exp in double.
#include <catch2/catch.hpp>
#include <cmath>

#include "../../src/backend/cpu/kernels.h"

namespace k = gum::cpu;

TEST_CASE("vector_exp is within 1.5e-7 of exp over the float range and propagates NaN") {
  double worst = 0;
  for (float x = -87.0f; x < 88.0f; x += 0.0137f) {
    const double exact = std::exp(double(x));
    worst = std::max(worst, std::fabs(double(k::vector_exp(x)) - exact) / exact);
  }
  INFO("worst relative error " << worst);
  REQUIRE(worst < 1.5e-7);
  REQUIRE(k::vector_exp(0.0f) == 1.0f);
  REQUIRE(std::isnan(k::vector_exp(NAN)));
  // Far below the range the result is a tiny normal number, never negative or NaN.
  REQUIRE(k::vector_exp(-1000.0f) >= 0.0f);
  REQUIRE(k::vector_exp(-1000.0f) < 1e-37f);
  REQUIRE(k::vector_exp(-INFINITY) < 1e-37f);
}
