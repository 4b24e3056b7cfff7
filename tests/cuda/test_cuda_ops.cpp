// CUDA-only behaviour the op table (tests/ops, which compares every op with the CPU backend) cannot
// express: TF32 GEMMs, a bad id found by a kernel reported at the next synchronisation, the
// attention kernel chosen by BackendOptions, and AdamW's per-step values read from device memory.
#include <cmath>

#include "cuda_test_util.h"
#include "gum/core/error.h"

using namespace gum;
using namespace gum::cuda_test;

TEST_CASE("BackendOptions::allow_tf32: F32 GEMMs in TF32, within TF32's error of the CPU and outside fp32's") {
  GUM_REQUIRE_GPU();
  for (bool tf32 : {false, true}) {
    INFO("allow_tf32 " << tf32);
    BackendPair pair("gemm", tf32);
    Pair a = pair.random(Shape{64, 256}, 30), b = pair.random(Shape{48, 256}, 31);
    Pair c = pair.zeros(Shape{64, 48});
    pair.cpu().gemm(false, true, 1.0f, a.cpu, b.cpu, 0.0f, c.cpu);
    pair.gpu().gemm(false, true, 1.0f, a.gpu, b.gpu, 0.0f, c.gpu);
    const double error = relative_error(pair.cpu_values(c), pair.gpu_values(c));
    UNSCOPED_INFO("normalised error " << error);
    if (tf32) {
      REQUIRE(error <= kTF32Tolerance);
      REQUIRE(error > kF32Tolerance);  // TF32 really ran: fp32 would be 100x closer
    } else {
      REQUIRE(error <= kF32Tolerance);
    }
  }
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

TEST_CASE("BackendOptions::attention picks the cuda backend's attention kernel, whose aux size shows it") {
  GUM_REQUIRE_GPU();
  AttentionShape s;
  s.batch = 2;
  s.seq_len = 5;
  s.n_head = 4;
  s.n_kv_head = 2;
  s.head_dim = 8;
  const size_t rows = 2 * 4 * 5;  // one log-sum-exp per query row (flash), a row of T probabilities (gemm)
  REQUIRE(BackendPair::make_cuda_backend("flash")->attention_aux_elems(s) == rows);
  REQUIRE(BackendPair::make_cuda_backend("gemm")->attention_aux_elems(s) == rows * 5);
  REQUIRE(make_backend("cuda")->attention_aux_elems(s) == rows * 5);  // gemm by default
  REQUIRE_THROWS_WITH(BackendPair::make_cuda_backend("tiled"), Catch::Contains("attention 'tiled'"));
}

// A recorded update replays with the values in AdamWArgs::step_scalars (trainer.cpp): on each
// backend they must give the bits the by-value lr and step give, at every step.
TEST_CASE("AdamWArgs::step_scalars: adamw_update and adam_direction give the by-value arguments' bits") {
  GUM_REQUIRE_GPU();
  BackendPair pair;
  const Shape shape{37, 19};
  AdamWArgs args;
  args.beta1 = 0.9f;
  args.beta2 = 0.95f;
  args.weight_decay = 0.1f;
  args.update_scale = 0.25f;
  for (Backend* backend : {&pair.cpu(), &pair.gpu()}) {
    INFO(backend->name());
    const auto on = [&](uint64_t seed, double scale = 1.0) {
      const Tensor t = pair.allocate(*backend, shape, DType::F32);
      BackendPair::upload(*backend, t, random_values(shape.numel(), seed, scale));
      return t;
    };
    // Two identical sets (param, m, v, direction, m2, v2): [0] by value, [1] from step_scalars.
    std::vector<Tensor> sets[2];
    for (auto& set : sets)
      for (uint64_t seed : {70, 71, 72, 73, 74, 75}) set.push_back(on(seed, seed == 70 ? 1.0 : 0.01));
    for (auto& set : sets)
      for (size_t v : {2, 5}) backend->fill(set[v], 1e-3f);  // second moments: non-negative
    const Tensor scalars = pair.allocate(*backend, Shape{3}, DType::F64);
    for (int64_t step = 1; step <= 3; ++step) {
      const Tensor grad = on(80 + step, 0.1);
      args.lr = 1e-2f / float(step);  // a schedule: another lr each step
      args.step = step;
      const double host[3] = {args.lr, adam_bias_correction(args.beta1, step), adam_bias_correction(args.beta2, step)};
      backend->copy_from_host(scalars, host);
      AdamWArgs from_device = args;
      from_device.lr = 0;
      from_device.step = 1;  // only checked to be >= 1: the kernels read the block
      from_device.step_scalars = scalars;
      backend->adamw_update(sets[0][0], grad, sets[0][1], sets[0][2], args);
      backend->adam_direction(sets[0][3], grad, sets[0][4], sets[0][5], args);
      backend->adamw_update(sets[1][0], grad, sets[1][1], sets[1][2], from_device);
      backend->adam_direction(sets[1][3], grad, sets[1][4], sets[1][5], from_device);
    }
    for (size_t i = 0; i < sets[0].size(); ++i) {
      INFO("tensor " << i);
      CHECK(BackendPair::download(*backend, sets[0][i]) == BackendPair::download(*backend, sets[1][i]));
    }
  }
}
