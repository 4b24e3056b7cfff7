// CPU backend properties that are not an op against its reference (those are rows of the op table,
// tests/ops): aligned zeroed allocations, results independent of the OpenMP thread count, and
// fill_normal's draws equal to the Philox stream's element by element.
#include <omp.h>

#include <catch2/catch.hpp>
#include <vector>

#include "gum/backend/backend.h"
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

// fill_normal draws four elements per Philox block: element i must still be philox_normal's i-th
// (the CUDA backend's draw, and resumed runs'), also in a last, partial block.
TEST_CASE("fill_normal draws element i as mean + std * philox_normal(i), bitwise, on any thread count") {
  auto backend = make_backend("cpu");
  const int64_t n = 4 * 257 + 3;
  const float mean = 0.25f, std = 0.02f;
  for (int threads : {1, 2, 3}) {
    omp_set_num_threads(threads);
    DeviceBuffer out(*backend, DType::F32, Shape{n});
    backend->fill_normal(out.tensor, 9, 5, mean, std);
    const std::vector<float> got = out.download();
    for (int64_t i = 0; i < n; ++i) {
      INFO("element " << i << ", " << threads << " threads");
      REQUIRE(got[size_t(i)] == mean + std * philox_normal(9, 5, static_cast<uint64_t>(i)));
    }
  }
}
