// CUDA-only behaviour the op table (tests/ops, which compares every op with the CPU backend) cannot
// express: TF32 GEMMs, a bad id found by a kernel reported at the next synchronisation, and the
// attention kernel chosen by BackendOptions.
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
