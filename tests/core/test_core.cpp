#include <catch2/catch.hpp>
#include <cmath>
#include <nlohmann/json.hpp>

#include "gum/core/dtype.h"
#include "gum/core/error.h"
#include "gum/core/json_util.h"
#include "gum/core/philox.h"
#include "gum/core/tensor.h"

using namespace gum;

TEST_CASE("philox4x32-10 matches the Random123 known-answer vectors", "[core]") {
  Philox4 zero = philox4x32(0, 0, 0);
  CHECK(zero.v[0] == 0x6627e8d5u);
  CHECK(zero.v[1] == 0xe169c58du);
  CHECK(zero.v[2] == 0xbc57ac4cu);
  CHECK(zero.v[3] == 0x9b00dbd8u);
  Philox4 ones = philox4x32(~0ull, ~0ull, ~0ull);
  CHECK(ones.v[0] == 0x408f276du);
  CHECK(ones.v[1] == 0x41c83b0eu);
  CHECK(ones.v[2] == 0xa20bc7c6u);
  CHECK(ones.v[3] == 0x6d5451fdu);
}

TEST_CASE("philox normals have mean 0 and variance 1", "[core]") {
  const int n = 200000;
  double sum = 0, sum_sq = 0;
  for (int i = 0; i < n; ++i) {
    double z = philox_normal(42, 7, static_cast<uint64_t>(i));
    sum += z;
    sum_sq += z * z;
  }
  double mean = sum / n, var = sum_sq / n - mean * mean;
  CHECK(std::abs(mean) < 0.01);
  CHECK(std::abs(var - 1.0) < 0.01);
}

TEST_CASE("philox_normal4 gives philox_normal's four elements of a block, bitwise", "[core]") {
  for (uint64_t block : {0ull, 1ull, 12345ull, ~0ull >> 2}) {
    float z[4];
    philox_normal4(42, 7, block, z);
    for (uint64_t lane = 0; lane < 4; ++lane) CHECK(z[lane] == philox_normal(42, 7, 4 * block + lane));
  }
}

TEST_CASE("philox stream is resumable from its position", "[core]") {
  PhiloxStream a(5, 1);
  for (int i = 0; i < 7; ++i) a.next_u32();
  PhiloxStream b(5, 1);
  b.set_position(a.position());
  for (int i = 0; i < 10; ++i) CHECK(a.next_u32() == b.next_u32());
  for (int i = 0; i < 1000; ++i) CHECK(a.next_below(13) < 13);
}

TEST_CASE("bf16 and f16 conversions round to nearest even", "[core]") {
  CHECK(bf16_to_f32(f32_to_bf16(1.0f)) == 1.0f);
  CHECK(bf16_to_f32(f32_to_bf16(-3.5f)) == -3.5f);
  // 1 + 2^-8 lies exactly between two bf16 values: ties to even (1.0).
  CHECK(bf16_to_f32(f32_to_bf16(1.0f + 1.0f / 256)) == 1.0f);
  CHECK(std::isnan(bf16_to_f32(f32_to_bf16(NAN))));
  for (float f : {0.0f, 1.0f, -2.5f, 65504.0f, 6.1035156e-05f, 5.9604645e-08f, 0.333251953125f})
    CHECK(f16_to_f32(f32_to_f16(f)) == f);
  CHECK(std::isinf(f16_to_f32(f32_to_f16(1e6f))));
}

TEST_CASE("bf16 storage round trips: every bf16 value exactly, rounding to nearest even, NaN and Inf kept", "[core]") {
  // All 65536 bit patterns: widening is exact, so rounding back gives the same bits (NaNs stay
  // NaN, quieted).
  for (uint32_t bits = 0; bits <= 0xffffu; ++bits) {
    const float f = bf16_to_f32(uint16_t(bits));
    if (std::isnan(f))
      CHECK(std::isnan(bf16_to_f32(f32_to_bf16(f))));
    else
      CHECK(f32_to_bf16(f) == bits);
  }
  // Between two neighbours: nearest wins; a tie goes to the even mantissa (1 + 3 * 2^-8 lies
  // between 1 + 2^-7 (odd) and 1 + 2^-6 (even)).
  CHECK(bf16_to_f32(f32_to_bf16(1.0f + 1.1f / 256)) == 1.0f + 1.0f / 128);
  CHECK(bf16_to_f32(f32_to_bf16(1.0f + 3.0f / 256)) == 1.0f + 1.0f / 64);
  CHECK(bf16_to_f32(f32_to_bf16(INFINITY)) == INFINITY);
  CHECK(bf16_to_f32(f32_to_bf16(-INFINITY)) == -INFINITY);
  CHECK(std::isinf(bf16_to_f32(f32_to_bf16(3.4e38f))));  // above the largest finite bf16's midpoint
  CHECK(bf16_to_f32(f32_to_bf16(-0.0f)) == 0.0f);
  CHECK(std::signbit(bf16_to_f32(f32_to_bf16(-0.0f))));
}

TEST_CASE("stochastic rounding to bf16: the two neighbours, unbiased, exact values and NaN/Inf kept", "[core]") {
  // Random bits 0 truncate, all ones round up whenever anything is cut off.
  const float x = 1.0f + 0.25f / 128;  // a quarter of an ulp above 1
  CHECK(bf16_to_f32(f32_to_bf16_stochastic(x, 0)) == 1.0f);
  CHECK(bf16_to_f32(f32_to_bf16_stochastic(x, 0xffffu)) == 1.0f + 1.0f / 128);
  CHECK(bf16_to_f32(f32_to_bf16_stochastic(-x, 0xffffu)) == -(1.0f + 1.0f / 128));  // magnitude rounds up
  for (uint32_t r : {0u, 0x8000u, 0xffffu}) {
    CHECK(bf16_to_f32(f32_to_bf16_stochastic(1.5f, r)) == 1.5f);  // a bf16 value never moves
    CHECK(bf16_to_f32(f32_to_bf16_stochastic(INFINITY, r)) == INFINITY);
    CHECK(bf16_to_f32(f32_to_bf16_stochastic(-INFINITY, r)) == -INFINITY);
    CHECK(std::isnan(bf16_to_f32(f32_to_bf16_stochastic(NAN, r))));
  }
  // Over all 2^16 random values the mean is exactly x: the rounding is unbiased (x - 1 is a
  // quarter of an ulp, so exactly a quarter of the values round up).
  int up = 0;
  for (uint32_t r = 0; r <= 0xffffu; ++r) up += bf16_to_f32(f32_to_bf16_stochastic(x, r)) > 1.0f;
  CHECK(up == 0x4000);
}

TEST_CASE("tensor views slice and reshape", "[core]") {
  HostTensor h = HostTensor::from_f32(Shape{3, 4}, {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11});
  Tensor t = h.view();
  CHECK(t.rows() == 3);
  CHECK(t.cols() == 4);
  Tensor rows = t.row_slice(1, 3);
  CHECK(rows.shape == Shape{2, 4});
  CHECK(rows.f32()[0] == 4.0f);
  CHECK(t.flat_slice(5, Shape{2}).f32()[1] == 6.0f);
  CHECK_THROWS_AS(t.reshaped(Shape{5}), Error);
  CHECK(t.reshaped(Shape{2, 6}).shape.str() == "[2, 6]");
}

TEST_CASE("unknown keys name the closest valid key", "[core]") {
  nlohmann::json j = {{"rnak", 4}};
  try {
    reject_unknown_keys(j, {"rank", "scale"}, "cfg.json", "optimizer");
    FAIL("expected an error");
  } catch (const Error& e) {
    CHECK(std::string(e.what()) == "cfg.json: unknown key 'optimizer.rnak' (did you mean 'optimizer.rank'?)");
    CHECK(e.exit_code() == 2);
  }
  int rank = 0;
  nlohmann::json bad = {{"rank", "big"}};
  CHECK_THROWS_WITH(read_key(bad, "rank", rank, "cfg.json", "optimizer"),
                    Catch::Contains("optimizer.rank") && Catch::Contains("an integer"));
}
