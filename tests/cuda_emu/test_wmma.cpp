// The emulator's WMMA (tools/cuda_emu/include/mma.h) against naive loops: bf16 operands, fp32
// accumulation, row- and column-major layouts with padded leading dimensions, the three shapes,
// and the errors of a warp that does not arrive whole or passes bad arguments.
#include <mma.h>

#include <catch2/catch.hpp>
#include <cmath>
#include <random>
#include <string>
#include <vector>

#include "emu_test_util.h"

namespace {

using namespace gum_emu_test;
using namespace nvcuda;

__nv_bfloat16 bf16(float f) { return __float2bfloat16(f); }

// D = A B + C for one warp: A and B in the fragment layouts LA and LB, C and D in memory row-
// or column-major (c_row_major, d_row_major).
template <int M, int N, int K, typename LA, typename LB>
__global__ void mma_kernel(float* d, unsigned ldd, bool d_row_major, const __nv_bfloat16* a, unsigned lda,
                           const __nv_bfloat16* b, unsigned ldb, const float* c, unsigned ldc, bool c_row_major) {
  wmma::fragment<wmma::matrix_a, M, N, K, __nv_bfloat16, LA> fa;
  wmma::fragment<wmma::matrix_b, M, N, K, __nv_bfloat16, LB> fb;
  wmma::fragment<wmma::accumulator, M, N, K, float> fc;
  wmma::load_matrix_sync(fa, a, lda);
  wmma::load_matrix_sync(fb, b, ldb);
  wmma::load_matrix_sync(fc, c, ldc, c_row_major ? wmma::mem_row_major : wmma::mem_col_major);
  wmma::mma_sync(fc, fa, fb, fc);
  wmma::store_matrix_sync(d, fc, ldd, d_row_major ? wmma::mem_row_major : wmma::mem_col_major);
}

// A matrix of r x c stored with leading dimension ld in the given layout; padding is NaN so a
// read outside the matrix shows.
template <typename T>
std::vector<T> store(const std::vector<float>& m, int r, int c, int ld, bool row_major, T pad, T (*convert)(float)) {
  std::vector<T> out(size_t(ld) * (row_major ? r : c), pad);
  for (int i = 0; i < r; ++i)
    for (int j = 0; j < c; ++j) out[row_major ? size_t(i) * ld + j : size_t(j) * ld + i] = convert(m[i * c + j]);
  return out;
}

float identity(float f) { return f; }

template <int M, int N, int K, typename LA, typename LB>
void check_mma(bool c_row_major, bool d_row_major, int pad, uint32_t seed) {
  constexpr bool a_row = std::is_same_v<LA, wmma::row_major>, b_row = std::is_same_v<LB, wmma::row_major>;
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal;
  std::vector<float> a(M * K), b(K * N), c(M * N);
  for (float& x : a) x = normal(rng);
  for (float& x : b) x = normal(rng);
  for (float& x : c) x = normal(rng);
  // ld: the row (row major) or column length plus `pad` elements, kept a multiple of 8.
  const int lda = (a_row ? K : M) + pad, ldb = (b_row ? N : K) + pad;
  const int ldc = (c_row_major ? N : M) + pad, ldd = (d_row_major ? N : M) + pad;
  const __nv_bfloat16 nan_bf16 = bf16(NAN);
  DeviceBuffer<__nv_bfloat16> da(size_t(lda) * (a_row ? M : K)), db(size_t(ldb) * (b_row ? K : N));
  DeviceBuffer<float> dc(size_t(ldc) * (c_row_major ? M : N)), dd(size_t(ldd) * (d_row_major ? M : N));
  da.upload(store(a, M, K, lda, a_row, nan_bf16, bf16));
  db.upload(store(b, K, N, ldb, b_row, nan_bf16, bf16));
  dc.upload(store(c, M, N, ldc, c_row_major, float(NAN), identity));
  LAUNCH((mma_kernel<M, N, K, LA, LB>), 1, 32)
  (dd.data, unsigned(ldd), d_row_major, da.data, unsigned(lda), db.data, unsigned(ldb), dc.data, unsigned(ldc),
   c_row_major);
  REQUIRE(launch_error().first == cudaSuccess);
  const std::vector<float> d = dd.host();
  for (int i = 0; i < M; ++i)
    for (int j = 0; j < N; ++j) {
      // The naive loop over the bf16-rounded operands in double; fp32 accumulation of K exact
      // products adds at most K roundings of 2^-24 relative to the running sums.
      double exact = c[i * N + j], magnitude = std::abs(exact);
      for (int k = 0; k < K; ++k) {
        const double term = double(__bfloat162float(bf16(a[i * K + k]))) * __bfloat162float(bf16(b[k * N + j]));
        exact += term;
        magnitude += std::abs(term);
      }
      const float got = d[d_row_major ? size_t(i) * ldd + j : size_t(j) * ldd + i];
      INFO("element (" << i << ", " << j << ")");
      CHECK(std::abs(got - exact) <= K * 0x1p-24 * magnitude);
    }
  // Outside the matrix D's memory is untouched (fresh device memory reads as NaN).
  for (size_t i = 0; i < d.size(); ++i)
    if (i % ldd >= size_t(d_row_major ? N : M)) CHECK(std::isnan(d[i]));
}

TEST_CASE("wmma: bf16 conversion rounds to nearest even") {
  CHECK(__bfloat162float(bf16(1.0f + 0x1p-8f)) == 1.0f);                       // tie, down to even
  CHECK(__bfloat162float(bf16(1.0f + 3 * 0x1p-8f)) == 1.0f + 0x1p-6f);         // tie, up to even
  CHECK(__bfloat162float(bf16(1.0f + 0x1p-8f + 0x1p-20f)) == 1.0f + 0x1p-7f);  // above the tie
  CHECK(std::isnan(__bfloat162float(bf16(NAN))));
}

TEST_CASE("wmma: mma_sync equals a naive loop over bf16 operands in every layout") {
  uint32_t seed = 1;
  for (bool c_row : {true, false})
    for (bool d_row : {true, false})
      for (int pad : {0, 8}) {
        INFO("C " << (c_row ? "row" : "col") << " major, D " << (d_row ? "row" : "col") << " major, pad " << pad);
        check_mma<16, 16, 16, wmma::row_major, wmma::col_major>(c_row, d_row, pad, seed++);
        check_mma<16, 16, 16, wmma::row_major, wmma::row_major>(c_row, d_row, pad, seed++);
        check_mma<16, 16, 16, wmma::col_major, wmma::row_major>(c_row, d_row, pad, seed++);
        check_mma<16, 16, 16, wmma::col_major, wmma::col_major>(c_row, d_row, pad, seed++);
      }
  check_mma<32, 8, 16, wmma::row_major, wmma::col_major>(true, true, 8, seed++);
  check_mma<8, 32, 16, wmma::col_major, wmma::row_major>(false, true, 0, seed++);
}

TEST_CASE("wmma: operands are rounded to bf16, products accumulate in fp32") {
  // A row of ones times a column of 1 + 2^-9 (bf16: 1) gives 16, not 16 + 2^-5; C = 2^24 then
  // absorbs each +1 in fp32 (the fp32 sum of 2^24 and 1 is 2^24), where double would give 2^24 + 16.
  std::vector<__nv_bfloat16> a(16 * 16, bf16(1.0f)), b(16 * 16, bf16(1.0f + 0x1p-9f));
  std::vector<float> c(16 * 16, 0.0f);
  for (int j = 0; j < 16; ++j) c[j] = 0x1p24f;  // row 0
  DeviceBuffer<__nv_bfloat16> da(a.size()), db(b.size());
  DeviceBuffer<float> dc(c.size()), dd(c.size());
  da.upload(a), db.upload(b), dc.upload(c);
  LAUNCH((mma_kernel<16, 16, 16, wmma::row_major, wmma::row_major>), 1, 32)
  (dd.data, 16u, true, da.data, 16u, db.data, 16u, dc.data, 16u, true);
  REQUIRE(launch_error().first == cudaSuccess);
  const std::vector<float> d = dd.host();
  for (int j = 0; j < 16; ++j) CHECK(d[j] == 0x1p24f);
  for (size_t i = 16; i < d.size(); ++i) CHECK(d[i] == 16.0f);
}

// Loads a 16x16 matrix_a from p + lane_offset with ldm, after `exit_lane` (if >= 0) has returned.
__global__ void load_kernel(const __nv_bfloat16* p, unsigned ldm, int exit_lane, int lane_offset) {
  if (int(threadIdx.x) == exit_lane) return;
  wmma::fragment<wmma::matrix_a, 16, 16, 16, __nv_bfloat16, wmma::row_major> fa;
  wmma::load_matrix_sync(fa, p + (threadIdx.x == 5 ? lane_offset : 0), ldm);
}

__global__ void fill_kernel(int disagreeing_lane) {
  wmma::fragment<wmma::accumulator, 16, 16, 16, float> f;
  wmma::fill_fragment(f, int(threadIdx.x) == disagreeing_lane ? 1.0f : 0.0f);
}

TEST_CASE("wmma: a partial or divergent warp and bad pointers or ldm are errors naming the line") {
  DeviceBuffer<__nv_bfloat16> m(16 * 40);
  auto error_of = [](auto&& launch) {
    launch();
    const auto [error, message] = launch_error();
    CHECK(error != cudaSuccess);
    return message;
  };
  std::string message = error_of([&] { LAUNCH(load_kernel, 1, 32)(m.data, 16u, 7, 0); });
  CHECK(message.find("wmma::load_matrix_sync") != std::string::npos);
  CHECK(message.find("lane 7 has exited") != std::string::npos);
  message = error_of([&] { LAUNCH(load_kernel, 1, 48)(m.data, 16u, -1, 0); });  // the second warp has 16 lanes
  CHECK(message.find("lane 16 does not exist") != std::string::npos);
  message = error_of([&] { LAUNCH(load_kernel, 1, 32)(m.data, 16u, -1, 16); });
  CHECK(message.find("passes other arguments") != std::string::npos);
  CHECK(message.find("test_wmma.cpp") != std::string::npos);
  message = error_of([&] { LAUNCH(fill_kernel, 1, 32)(3); });
  CHECK(message.find("wmma::fill_fragment") != std::string::npos);
  CHECK(message.find("passes other arguments") != std::string::npos);
  message = error_of([&] { LAUNCH(load_kernel, 1, 32)(m.data, 20u, -1, 0); });
  CHECK(message.find("ldm 20 is not a multiple of 8") != std::string::npos);
  message = error_of([&] { LAUNCH(load_kernel, 1, 32)(m.data, 8u, -1, 0); });
  CHECK(message.find("ldm 8 is shorter than the 16 elements") != std::string::npos);
  message = error_of([&] { LAUNCH(load_kernel, 1, 32)(m.data + 8, 16u, -1, 0); });
  CHECK(message.find("is not 256-bit aligned") != std::string::npos);
  // The first lane to reach the call reports (which one depends on the schedule).
  CHECK(message.find("kernel load_kernel (launched at") != std::string::npos);
  CHECK(message.find("block (0,0,0) thread (") != std::string::npos);
  LAUNCH(fill_kernel, 1, 32)(-1);
  CHECK(launch_error().first == cudaSuccess);
}

}  // namespace
