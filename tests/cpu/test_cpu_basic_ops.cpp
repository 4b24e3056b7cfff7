// CPU backend: memory, elementwise ops, reductions, GEMM, SVD/QR properties, Philox normals, AdamW.
#include <omp.h>

#include <catch2/catch.hpp>
#include <cmath>
#include <random>
#include <vector>

#include "gum/backend/backend.h"
#include "gum/core/error.h"
#include "gum/core/philox.h"
#include "test_util.h"

using namespace gum;
using gum::testing::DeviceBuffer;
using gum::testing::random_vector;

TEST_CASE("allocate returns zeroed aligned memory and tracks the peak") {
  auto backend = make_backend("cpu");
  REQUIRE(backend->name() == "cpu");
  const size_t before = backend->peak_memory_bytes();
  void* a = backend->allocate(1000);
  void* b = backend->allocate(3);
  REQUIRE(reinterpret_cast<uintptr_t>(a) % 64 == 0);
  REQUIRE(reinterpret_cast<uintptr_t>(b) % 64 == 0);
  for (int i = 0; i < 1000; ++i) REQUIRE(static_cast<uint8_t*>(a)[i] == 0);
  REQUIRE(backend->peak_memory_bytes() >= before + 1000 + 3);
  backend->release(a);
  backend->release(b);
  const size_t peak = backend->peak_memory_bytes();
  void* c = backend->allocate(64);
  REQUIRE(backend->peak_memory_bytes() == peak);  // freed memory is reused in the count
  backend->release(c);
}

TEST_CASE("copy converts between F32 and BF16, fill and elementwise ops") {
  auto backend = make_backend("cpu");
  std::vector<float> values = {1.0f, -2.5f, 3.140625f, 1e-3f};
  DeviceBuffer f32(*backend, DType::F32, Shape{4}), bf16(*backend, DType::BF16, Shape{4}),
      back(*backend, DType::F32, Shape{4});
  f32.upload(values);
  backend->copy(bf16.tensor, f32.tensor);
  backend->copy(back.tensor, bf16.tensor);
  auto round_trip = back.download();
  for (int i = 0; i < 4; ++i) REQUIRE(round_trip[i] == bf16_to_f32(f32_to_bf16(values[i])));
  REQUIRE(round_trip[0] == 1.0f);
  REQUIRE(round_trip[3] == Approx(1e-3).epsilon(1e-2));

  backend->fill(back.tensor, 2.0f);
  backend->add(back.tensor, back.tensor, f32.tensor);  // out aliases a
  auto sum_values = back.download();
  for (int i = 0; i < 4; ++i) REQUIRE(sum_values[i] == 2.0f + values[i]);
  backend->axpby(back.tensor, 2.0f, f32.tensor, -1.0f);  // y = 2 x - y = x - 2
  auto axpby_values = back.download();
  for (int i = 0; i < 4; ++i) REQUIRE(axpby_values[i] == Approx(values[i] - 2.0f));
  backend->scale(back.tensor, 0.5f);
  REQUIRE(back.download()[0] == Approx((values[0] - 2.0f) * 0.5f));
  REQUIRE_THROWS_AS(backend->add(back.tensor, f32.tensor, DeviceBuffer(*backend, DType::F32, Shape{3}).tensor), Error);
}

TEST_CASE("sum and sum_squares are exact-order deterministic and propagate NaN") {
  auto backend = make_backend("cpu");
  const int64_t n = 100003;
  auto values = random_vector(n, 7);
  DeviceBuffer x(*backend, DType::F32, Shape{n});
  x.upload(values);
  double expected_sum = 0, expected_squares = 0;
  for (float v : values) {
    expected_sum += v;
    expected_squares += double(v) * v;
  }
  REQUIRE(backend->sum(x.tensor) == Approx(expected_sum).margin(1e-9));
  REQUIRE(backend->sum_squares(x.tensor) == Approx(expected_squares).epsilon(1e-12));
  REQUIRE(backend->sum(x.tensor) == backend->sum(x.tensor));
  values[500] = NAN;
  x.upload(values);
  REQUIRE(std::isnan(backend->sum_squares(x.tensor)));
}

TEST_CASE("gemm matches a naive product for every transpose combination") {
  auto backend = make_backend("cpu");
  const int M = 5, N = 7, K = 3;
  for (bool ta : {false, true}) {
    for (bool tb : {false, true}) {
      auto a = random_vector(M * K, 1), b = random_vector(K * N, 2), c = random_vector(M * N, 3);
      DeviceBuffer A(*backend, DType::F32, ta ? Shape{K, M} : Shape{M, K});
      DeviceBuffer B(*backend, DType::F32, tb ? Shape{N, K} : Shape{K, N});
      DeviceBuffer Cm(*backend, DType::F32, Shape{M, N});
      A.upload(a);
      B.upload(b);
      Cm.upload(c);
      backend->gemm(ta, tb, 1.5f, A.tensor, B.tensor, 0.5f, Cm.tensor);
      auto out = Cm.download();
      for (int i = 0; i < M; ++i) {
        for (int j = 0; j < N; ++j) {
          double acc = 0;
          for (int k = 0; k < K; ++k)
            acc += double(ta ? a[k * M + i] : a[i * K + k]) * (tb ? b[j * K + k] : b[k * N + j]);
          REQUIRE(out[i * N + j] == Approx(1.5 * acc + 0.5 * c[i * N + j]).margin(1e-5));
        }
      }
    }
  }
  DeviceBuffer wrong(*backend, DType::F32, Shape{4, 4});
  DeviceBuffer A(*backend, DType::F32, Shape{M, K}), Cm(*backend, DType::F32, Shape{M, N});
  REQUIRE_THROWS_AS(backend->gemm(false, false, 1, A.tensor, wrong.tensor, 0, Cm.tensor), Error);
}

// U^T U = I, U diag(S) Vt = A, S descending, largest |U| entry of each column positive.
static void check_svd(Backend& backend, int m, int n) {
  const int k = std::min(m, n);
  auto a = random_vector(m * n, 11 + m);
  DeviceBuffer A(backend, DType::F32, Shape{m, n}), U(backend, DType::F32, Shape{m, k}),
      S(backend, DType::F32, Shape{k}), Vt(backend, DType::F32, Shape{k, n});
  A.upload(a);
  backend.svd(U.tensor, S.tensor, Vt.tensor, A.tensor);
  auto u = U.download(), s = S.download(), vt = Vt.download();
  REQUIRE(A.download() == a);  // input untouched
  for (int i = 0; i + 1 < k; ++i) REQUIRE(s[i] >= s[i + 1]);
  for (int i = 0; i < k; ++i)
    for (int j = 0; j < k; ++j) {
      double dot = 0, dot_v = 0;
      for (int r = 0; r < m; ++r) dot += double(u[r * k + i]) * u[r * k + j];
      for (int c = 0; c < n; ++c) dot_v += double(vt[i * n + c]) * vt[j * n + c];
      REQUIRE(dot == Approx(i == j ? 1.0 : 0.0).margin(1e-5));
      REQUIRE(dot_v == Approx(i == j ? 1.0 : 0.0).margin(1e-5));
    }
  for (int r = 0; r < m; ++r)
    for (int c = 0; c < n; ++c) {
      double acc = 0;
      for (int i = 0; i < k; ++i) acc += double(u[r * k + i]) * s[i] * vt[i * n + c];
      REQUIRE(acc == Approx(a[r * n + c]).margin(1e-5));
    }
  for (int i = 0; i < k; ++i) {
    int arg = 0;
    for (int r = 1; r < m; ++r)
      if (std::fabs(u[r * k + i]) > std::fabs(u[arg * k + i])) arg = r;
    REQUIRE(u[arg * k + i] > 0);
  }
}

TEST_CASE("svd: orthonormal factors, reconstruction, sign convention") {
  auto backend = make_backend("cpu");
  check_svd(*backend, 9, 5);
  check_svd(*backend, 4, 10);
  check_svd(*backend, 6, 6);
  DeviceBuffer A(*backend, DType::F32, Shape{3, 2}), U(*backend, DType::F32, Shape{3, 3}),
      S(*backend, DType::F32, Shape{2}), Vt(*backend, DType::F32, Shape{2, 2});
  REQUIRE_THROWS_AS(backend->svd(U.tensor, S.tensor, Vt.tensor, A.tensor), Error);
}

TEST_CASE("qr_orthonormal: Q^T Q = I, Q^T A upper triangular with non-negative diagonal") {
  auto backend = make_backend("cpu");
  const int m = 12, k = 5;
  auto a = random_vector(m * k, 21);
  DeviceBuffer A(*backend, DType::F32, Shape{m, k}), Q(*backend, DType::F32, Shape{m, k});
  A.upload(a);
  backend->qr_orthonormal(Q.tensor, A.tensor);
  auto q = Q.download();
  for (int i = 0; i < k; ++i)
    for (int j = 0; j < k; ++j) {
      double qtq = 0, r = 0;  // R = Q^T A
      for (int row = 0; row < m; ++row) {
        qtq += double(q[row * k + i]) * q[row * k + j];
        r += double(q[row * k + i]) * a[row * k + j];
      }
      REQUIRE(qtq == Approx(i == j ? 1.0 : 0.0).margin(1e-5));
      if (i > j) REQUIRE(r == Approx(0.0).margin(1e-5));
      if (i == j) REQUIRE(r > 0);
    }
  DeviceBuffer wide(*backend, DType::F32, Shape{3, 5}), Qw(*backend, DType::F32, Shape{3, 5});
  REQUIRE_THROWS_AS(backend->qr_orthonormal(Qw.tensor, wide.tensor), Error);
}

TEST_CASE("fill_normal is the Philox stream, reproducible, with the right moments") {
  auto backend = make_backend("cpu");
  const int64_t n = 20000;
  DeviceBuffer x(*backend, DType::F32, Shape{n}), y(*backend, DType::F32, Shape{n});
  backend->fill_normal(x.tensor, 1234, 5, 0.5f, 2.0f);
  backend->fill_normal(y.tensor, 1234, 5, 0.5f, 2.0f);
  auto a = x.download(), b = y.download();
  REQUIRE(a == b);
  for (int64_t i : {0, 1, 2, 3, 4, 777, 19999}) REQUIRE(a[i] == 0.5f + 2.0f * philox_normal(1234, 5, i));
  double mean = 0, var = 0;
  for (float v : a) mean += v;
  mean /= n;
  for (float v : a) var += (v - mean) * (v - mean);
  var /= n;
  REQUIRE(mean == Approx(0.5).margin(0.05));
  REQUIRE(std::sqrt(var) == Approx(2.0).margin(0.05));
  backend->fill_normal(y.tensor, 1234, 6, 0.5f, 2.0f);
  REQUIRE(y.download() != a);  // another stream, other numbers
}

TEST_CASE("adamw_update and adam_direction match a hand-computed step") {
  auto backend = make_backend("cpu");
  AdamWArgs args;
  args.lr = 0.1f;
  args.beta1 = 0.9f;
  args.beta2 = 0.99f;
  args.eps = 1e-8f;
  args.weight_decay = 0.01f;
  args.step = 3;
  args.update_scale = 0.5f;
  std::vector<float> p0 = {1.0f, -2.0f}, g = {0.5f, -0.25f}, m0 = {0.1f, 0.2f}, v0 = {0.01f, 0.04f};
  DeviceBuffer P(*backend, DType::F32, Shape{2}), G(*backend, DType::F32, Shape{2}), M(*backend, DType::F32, Shape{2}),
      V(*backend, DType::F32, Shape{2}), Dir(*backend, DType::F32, Shape{2});
  P.upload(p0);
  G.upload(g);
  M.upload(m0);
  V.upload(v0);
  backend->adamw_update(P.tensor, G.tensor, M.tensor, V.tensor, args);
  auto p = P.download(), m = M.download(), v = V.download();
  for (int i = 0; i < 2; ++i) {
    const double m1 = 0.9 * m0[i] + 0.1 * g[i], v1 = 0.99 * v0[i] + 0.01 * g[i] * g[i];
    const double mhat = m1 / (1 - std::pow(0.9, 3)), vhat = v1 / (1 - std::pow(0.99, 3));
    const double expected = p0[i] - 0.1 * (0.5 * mhat / (std::sqrt(vhat) + 1e-8) + 0.01 * p0[i]);
    REQUIRE(m[i] == Approx(m1).epsilon(1e-6));
    REQUIRE(v[i] == Approx(v1).epsilon(1e-6));
    REQUIRE(p[i] == Approx(expected).epsilon(1e-6));
  }
  M.upload(m0);
  V.upload(v0);
  backend->adam_direction(Dir.tensor, G.tensor, M.tensor, V.tensor, args);
  auto d = Dir.download();
  for (int i = 0; i < 2; ++i) {
    const double m1 = 0.9 * m0[i] + 0.1 * g[i], v1 = 0.99 * v0[i] + 0.01 * g[i] * g[i];
    const double mhat = m1 / (1 - std::pow(0.9, 3)), vhat = v1 / (1 - std::pow(0.99, 3));
    REQUIRE(d[i] == Approx(mhat / (std::sqrt(vhat) + 1e-8)).epsilon(1e-6));
  }
  args.step = 0;
  REQUIRE_THROWS_AS(backend->adamw_update(P.tensor, G.tensor, M.tensor, V.tensor, args), Error);
}

// The reductions, parameter-gradient ops and attention split work so that results never depend on the
// number of OpenMP threads (bitwise-identical resume on another machine's core count).
TEST_CASE("reductions and gradient accumulations are bitwise independent of the thread count") {
  auto backend = make_backend("cpu");
  const int64_t N = 257, C = 200, V = 11;
  std::vector<int32_t> ids(N);
  for (int64_t n = 0; n < N; ++n) ids[n] = int32_t((n * 5) % V);
  DeviceBuffer tokens(*backend, DType::I32, Shape{N}), dout(*backend, DType::F32, Shape{N, C}),
      x(*backend, DType::F32, Shape{N, C}), w(*backend, DType::F32, Shape{C}), rstd(*backend, DType::F32, Shape{N}),
      y(*backend, DType::F32, Shape{N, C});
  tokens.upload(ids);
  dout.upload(random_vector(N * C, 61));
  x.upload(random_vector(N * C, 62));
  w.upload(random_vector(C, 63));
  backend->rmsnorm_forward(y.tensor, rstd.tensor, x.tensor, w.tensor, 1e-6f);
  auto run = [&](int threads) {
    omp_set_num_threads(threads);
    DeviceBuffer dtable(*backend, DType::F32, Shape{V, C}), dx(*backend, DType::F32, Shape{N, C}),
        dw(*backend, DType::F32, Shape{C});
    backend->embedding_backward(dtable.tensor, dout.tensor, tokens.tensor);
    backend->rmsnorm_backward(dx.tensor, dw.tensor, dout.tensor, x.tensor, w.tensor, rstd.tensor);
    std::vector<float> out = dtable.download();
    for (float v : dx.download()) out.push_back(v);
    for (float v : dw.download()) out.push_back(v);
    out.push_back(float(backend->sum(dout.tensor)));
    out.push_back(float(backend->sum_squares(dout.tensor)));
    return out;
  };
  // Attention (per-head GEMM tasks, packed documents) and cross-entropy, forward and backward.
  const AttentionShape shape{3, 70, 4, 2, 8};
  const int64_t rows = int64_t(shape.batch) * shape.seq_len, width = shape.qkv_width();
  std::vector<int32_t> starts(rows), labels(rows);
  for (int64_t r = 0; r < rows; ++r) {
    const int64_t t = r % shape.seq_len;
    starts[r] = int32_t(t >= 50 ? 50 : t >= 7 ? 7 : 0);
    labels[r] = r % 9 == 0 ? -1 : int32_t((r * 13) % 37);
  }
  DeviceBuffer qkv(*backend, DType::F32, Shape{rows, width}), att_dout(*backend, DType::F32, Shape{rows, 32}),
      doc_start(*backend, DType::I32, Shape{rows}), logits(*backend, DType::F32, Shape{rows, 37}),
      targets(*backend, DType::I32, Shape{rows});
  qkv.upload(random_vector(rows * width, 64));
  att_dout.upload(random_vector(rows * 32, 65));
  doc_start.upload(starts);
  logits.upload(random_vector(rows * 37, 66, 3.0));
  targets.upload(labels);
  auto run_attention_and_loss = [&](int threads) {
    omp_set_num_threads(threads);
    DeviceBuffer out(*backend, DType::F32, Shape{rows, 32}), dqkv(*backend, DType::F32, Shape{rows, width}),
        aux(*backend, DType::F32, Shape{int64_t(backend->attention_aux_elems(shape))}),
        losses(*backend, DType::F32, Shape{rows}), dlogits(*backend, DType::F32, Shape{rows, 37});
    backend->attention_forward(out.tensor, aux.tensor, qkv.tensor, &doc_start.tensor, shape);
    backend->attention_backward(dqkv.tensor, att_dout.tensor, out.tensor, aux.tensor, qkv.tensor, &doc_start.tensor,
                                shape);
    backend->cross_entropy_forward(losses.tensor, logits.tensor, targets.tensor);
    backend->cross_entropy_backward(dlogits.tensor, logits.tensor, targets.tensor, 0.5f);
    std::vector<float> result = out.download();
    for (const DeviceBuffer* b : {&dqkv, &losses, &dlogits})
      for (float v : b->download()) result.push_back(v);
    return result;
  };
  const int default_threads = omp_get_max_threads();
  const auto one = run(1), three = run(3);
  const auto attention_one = run_attention_and_loss(1), attention_three = run_attention_and_loss(3);
  omp_set_num_threads(default_threads);
  REQUIRE(one == three);
  REQUIRE(attention_one == attention_three);
}
