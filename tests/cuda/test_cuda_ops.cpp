// CUDA backend vs CPU backend: memory and conversions, GEMM (F32 and BF16 operands), SVD, QR,
// Philox normals, elementwise ops, reductions and the Adam steps, on random inputs.
#include <algorithm>
#include <cmath>
#include <cstring>

#include "cuda_test_util.h"
#include "gum/core/error.h"

using namespace gum;
using namespace gum::cuda_test;

TEST_CASE("host round trip, fill, F32<->BF16 copies with the CPU's rounding") {
  GUM_REQUIRE_GPU();
  BackendPair pair;
  Backend& gpu = pair.gpu();
  const Shape shape{37, 41};
  const auto values = random_values(shape.numel(), 1, 3.0);

  Pair f32 = pair.values(shape, values);
  REQUIRE(pair.gpu_values(f32) == values);

  // F32 -> BF16 on the device gives exactly gum::f32_to_bf16's bits; BF16 -> F32 is exact.
  Tensor bf16 = pair.allocate(gpu, shape, DType::BF16);
  gpu.copy(bf16, f32.gpu);
  std::vector<uint16_t> bits(values.size());
  gpu.copy_to_host(bits.data(), bf16);
  for (size_t i = 0; i < values.size(); ++i) REQUIRE(bits[i] == f32_to_bf16(values[i]));
  Tensor back = pair.allocate(gpu, shape, DType::F32);
  gpu.copy(back, bf16);
  REQUIRE(BackendPair::download(gpu, back) == rounded_to(DType::BF16, values));

  // Same-dtype device copy, fill in both dtypes, allocation is zeroed, peak memory is counted.
  Tensor copied = pair.allocate(gpu, shape, DType::F32);
  REQUIRE(BackendPair::download(gpu, copied) == std::vector<float>(values.size(), 0.0f));
  gpu.copy(copied, f32.gpu);
  REQUIRE(BackendPair::download(gpu, copied) == values);
  gpu.fill(copied, -2.5f);
  gpu.fill(bf16, 0.1f);
  REQUIRE(BackendPair::download(gpu, copied) == std::vector<float>(values.size(), -2.5f));
  REQUIRE(BackendPair::download(gpu, bf16) == std::vector<float>(values.size(), bf16_to_f32(f32_to_bf16(0.1f))));
  REQUIRE(gpu.peak_memory_bytes() >= 4 * size_t(shape.numel()) * 3);
  REQUIRE_THROWS_AS(gpu.copy(copied, pair.allocate(gpu, Shape{3}, DType::F32)), gum::Error);
}

TEST_CASE("gemm matches the CPU for every transpose combination, alpha and beta") {
  GUM_REQUIRE_GPU();
  BackendPair pair;
  const int64_t M = 37, N = 53, K = 29;
  for (bool trans_a : {false, true}) {
    for (bool trans_b : {false, true}) {
      Pair a = pair.random(trans_a ? Shape{K, M} : Shape{M, K}, 10);
      Pair b = pair.random(trans_b ? Shape{N, K} : Shape{K, N}, 11);
      Pair c = pair.random(Shape{M, N}, 12);
      pair.cpu().gemm(trans_a, trans_b, 0.7f, a.cpu, b.cpu, 0.3f, c.cpu);
      pair.gpu().gemm(trans_a, trans_b, 0.7f, a.gpu, b.gpu, 0.3f, c.gpu);
      expect_close(pair, c, kF32Tolerance,
                   std::string("gemm trans_a=") + (trans_a ? "1" : "0") + " trans_b=" + (trans_b ? "1" : "0"));
    }
  }
  Pair a = pair.random(Shape{4, 5}, 13), b = pair.random(Shape{6, 4}, 14), c = pair.zeros(Shape{4, 4});
  REQUIRE_THROWS_AS(pair.gpu().gemm(false, false, 1.0f, a.gpu, b.gpu, 0.0f, c.gpu), gum::Error);
}

TEST_CASE("gemm with BF16 operands accumulates in fp32 (F32 and BF16 outputs)") {
  GUM_REQUIRE_GPU();
  BackendPair pair;
  const int64_t M = 64, N = 48, K = 96;
  // The CPU multiplies the bf16-rounded values in F32: products of bf16 numbers are exact in fp32,
  // so only the summation order differs.
  Pair a = pair.random(Shape{M, K}, 20, 1.0, DType::BF16);
  Pair b = pair.random(Shape{N, K}, 21, 1.0, DType::BF16);
  Pair c = pair.zeros(Shape{M, N});
  pair.cpu().gemm(false, true, 1.0f, a.cpu, b.cpu, 0.0f, c.cpu);
  pair.gpu().gemm(false, true, 1.0f, a.gpu, b.gpu, 0.0f, c.gpu);
  expect_close(pair, c, kF32Tolerance, "bf16 x bf16 -> f32");

  Tensor c_bf16 = pair.allocate(pair.gpu(), Shape{M, N}, DType::BF16);
  pair.gpu().gemm(false, true, 1.0f, a.gpu, b.gpu, 0.0f, c_bf16);
  expect_close(pair.cpu_values(c), BackendPair::download(pair.gpu(), c_bf16), kBF16Tolerance, "bf16 x bf16 -> bf16");

  Pair f32 = pair.random(Shape{N, K}, 22);
  REQUIRE_THROWS_AS(pair.gpu().gemm(false, true, 1.0f, a.gpu, f32.gpu, 0.0f, c.gpu), gum::Error);
}

TEST_CASE("svd matches the CPU (tall, wide, square) and reconstructs A") {
  GUM_REQUIRE_GPU();
  BackendPair pair;
  for (auto [m, n] : {std::pair<int64_t, int64_t>{40, 24}, {24, 40}, {32, 32}}) {
    const int64_t k = std::min(m, n);
    Pair a = pair.random(Shape{m, n}, 30 + m);
    Pair u = pair.zeros(Shape{m, k}), s = pair.zeros(Shape{k}), vt = pair.zeros(Shape{k, n});
    pair.cpu().svd(u.cpu, s.cpu, vt.cpu, a.cpu);
    pair.gpu().svd(u.gpu, s.gpu, vt.gpu, a.gpu);
    const std::string shape = "[" + std::to_string(m) + ", " + std::to_string(n) + "]";
    expect_close(pair, s, kF32Tolerance, "S of " + shape);
    // Singular vectors are determined up to the sign convention; their error scales with
    // 1 / (gap between singular values), hence the looser bound.
    expect_close(pair, u, 1e-4, "U of " + shape);
    expect_close(pair, vt, 1e-4, "Vt of " + shape);

    // U diag(S) Vt == A on the GPU alone.
    const auto hu = pair.gpu_values(u), hs = pair.gpu_values(s), hvt = pair.gpu_values(vt), ha = pair.gpu_values(a);
    std::vector<float> rebuilt(size_t(m * n), 0.0f);
    for (int64_t i = 0; i < m; ++i)
      for (int64_t j = 0; j < n; ++j) {
        double acc = 0;
        for (int64_t r = 0; r < k; ++r) acc += double(hu[i * k + r]) * hs[r] * hvt[r * n + j];
        rebuilt[i * n + j] = float(acc);
      }
    expect_close(ha, rebuilt, kF32Tolerance, "U S Vt of " + shape);
    for (int64_t r = 1; r < k; ++r) REQUIRE(hs[r - 1] >= hs[r]);
  }
}

TEST_CASE("qr_orthonormal matches the CPU: orthonormal Q with R's diagonal non-negative") {
  GUM_REQUIRE_GPU();
  BackendPair pair;
  for (auto [m, k] : {std::pair<int64_t, int64_t>{50, 12}, {16, 16}}) {
    Pair a = pair.random(Shape{m, k}, 40 + m);
    Pair q = pair.zeros(Shape{m, k});
    pair.cpu().qr_orthonormal(q.cpu, a.cpu);
    pair.gpu().qr_orthonormal(q.gpu, a.gpu);
    expect_close(pair, q, 1e-5, "Q of [" + std::to_string(m) + ", " + std::to_string(k) + "]");
    const auto hq = pair.gpu_values(q);
    for (int64_t i = 0; i < k; ++i)
      for (int64_t j = 0; j < k; ++j) {
        double dot = 0;
        for (int64_t r = 0; r < m; ++r) dot += double(hq[r * k + i]) * hq[r * k + j];
        REQUIRE(std::fabs(dot - (i == j ? 1.0 : 0.0)) < 1e-5);
      }
  }
  Pair wide = pair.random(Shape{3, 5}, 45), q = pair.zeros(Shape{3, 5});
  REQUIRE_THROWS_AS(pair.gpu().qr_orthonormal(q.gpu, wide.gpu), gum::Error);
}

TEST_CASE("fill_normal draws the CPU's Philox normals") {
  GUM_REQUIRE_GPU();
  BackendPair pair;
  Pair x = pair.zeros(Shape{10001});
  pair.cpu().fill_normal(x.cpu, 1234, 7, 0.5f, 0.02f);
  pair.gpu().fill_normal(x.gpu, 1234, 7, 0.5f, 0.02f);
  // Identical uniforms; logf/sinf/cosf may differ by an ulp between glibc and the device.
  expect_close(pair, x, 1e-6, "fill_normal");
  const auto h = pair.gpu_values(x);
  double mean = 0;
  for (float v : h) mean += v;
  mean /= double(h.size());
  REQUIRE(std::fabs(mean - 0.5) < 0.002);
}

TEST_CASE("add, axpby and scale match the CPU (F32), and accept BF16 tensors") {
  GUM_REQUIRE_GPU();
  BackendPair pair;
  const Shape shape{1000, 3};
  Pair a = pair.random(shape, 50), b = pair.random(shape, 51), out = pair.zeros(shape);
  pair.cpu().add(out.cpu, a.cpu, b.cpu);
  pair.gpu().add(out.gpu, a.gpu, b.gpu);
  expect_close(pair, out, 0.0, "add");
  pair.cpu().add(a.cpu, a.cpu, b.cpu);  // aliasing out == a
  pair.gpu().add(a.gpu, a.gpu, b.gpu);
  expect_close(pair, a, 0.0, "add in place");
  pair.cpu().axpby(b.cpu, 0.25f, out.cpu, -1.5f);
  pair.gpu().axpby(b.gpu, 0.25f, out.gpu, -1.5f);
  expect_close(pair, b, kF32Tolerance, "axpby");
  pair.cpu().scale(b.cpu, 3.0f);
  pair.gpu().scale(b.gpu, 3.0f);
  expect_close(pair, b, 0.0, "scale");

  // BF16 y with an F32 x: arithmetic in fp32, result rounded once.
  Pair y16 = pair.random(shape, 52, 1.0, DType::BF16), x32 = pair.random(shape, 53);
  pair.cpu().axpby(y16.cpu, 0.5f, x32.cpu, 2.0f);
  pair.gpu().axpby(y16.gpu, 0.5f, x32.gpu, 2.0f);
  expect_close(pair, y16, kBF16Tolerance, "axpby bf16");
}

TEST_CASE("sum and sum_squares match the CPU's double accumulation, NaN propagates") {
  GUM_REQUIRE_GPU();
  BackendPair pair;
  for (int64_t n : {int64_t(1), int64_t(255), int64_t(100003), int64_t(3000000)}) {
    const auto values = random_values(n, 60 + n);
    Pair x = pair.values(Shape{n}, values);
    double sum_abs = 0;
    for (float v : values) sum_abs += std::fabs(v);
    const double cpu_sum = pair.cpu().sum(x.cpu), gpu_sum = pair.gpu().sum(x.gpu);
    const double cpu_sq = pair.cpu().sum_squares(x.cpu), gpu_sq = pair.gpu().sum_squares(x.gpu);
    INFO("n = " << n);
    // Both accumulate in double, in different orders: rounding differences of order n * 1e-16.
    REQUIRE(std::fabs(cpu_sum - gpu_sum) <= 1e-10 * sum_abs);
    REQUIRE(std::fabs(cpu_sq - gpu_sq) <= 1e-10 * cpu_sq);
  }
  auto values = random_values(1000, 61);
  values[777] = NAN;
  Pair x = pair.values(Shape{1000}, values);
  REQUIRE(std::isnan(pair.gpu().sum_squares(x.gpu)));
  REQUIRE(std::isnan(pair.gpu().sum(x.gpu)));
}

TEST_CASE("adamw_update and adam_direction match the CPU over several steps") {
  GUM_REQUIRE_GPU();
  BackendPair pair;
  const Shape shape{257, 33};
  Pair param = pair.random(shape, 70), m = pair.zeros(shape), v = pair.zeros(shape);
  Pair direction = pair.zeros(shape), m2 = pair.zeros(shape), v2 = pair.zeros(shape);
  AdamWArgs args;
  args.lr = 1e-2f;
  args.beta1 = 0.9f;
  args.beta2 = 0.95f;
  args.eps = 1e-8f;
  args.weight_decay = 0.1f;
  args.update_scale = 0.25f;
  for (int step = 1; step <= 3; ++step) {
    Pair grad = pair.random(shape, 80 + step, 0.1);
    args.step = step;
    pair.cpu().adamw_update(param.cpu, grad.cpu, m.cpu, v.cpu, args);
    pair.gpu().adamw_update(param.gpu, grad.gpu, m.gpu, v.gpu, args);
    pair.cpu().adam_direction(direction.cpu, grad.cpu, m2.cpu, v2.cpu, args);
    pair.gpu().adam_direction(direction.gpu, grad.gpu, m2.gpu, v2.gpu, args);
  }
  expect_close(pair, param, 1e-6, "param");
  expect_close(pair, m, 1e-6, "m");
  expect_close(pair, v, 1e-6, "v");
  expect_close(pair, direction, 1e-6, "direction");
  args.step = 0;
  REQUIRE_THROWS_AS(pair.gpu().adamw_update(param.gpu, param.gpu, m.gpu, v.gpu, args), gum::Error);
}

TEST_CASE("a kernel that meets a bad id reports it at the next synchronisation") {
  GUM_REQUIRE_GPU();
  BackendPair pair;
  Pair table = pair.random(Shape{10, 8}, 90);
  Pair tokens = pair.ints(Shape{3}, {1, 10, 2});  // 10 is outside [0, 10)
  Pair out = pair.zeros(Shape{3, 8});
  pair.gpu().embedding_forward(out.gpu, tokens.gpu, table.gpu);
  REQUIRE_THROWS_WITH(pair.gpu().synchronize(), Catch::Contains("token id"));
  pair.gpu().synchronize();  // the status word was cleared by the report
  const auto h = pair.gpu_values(out);
  REQUIRE(std::isnan(h[8]));
  REQUIRE(h[0] == pair.cpu_values(table)[8]);
}
