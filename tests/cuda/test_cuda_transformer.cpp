// CUDA backend vs CPU backend for the transformer ops, forward and backward, on random inputs
// with awkward sizes (not multiples of the block sizes), repeated tokens, ignored targets,
// grouped-query heads and packed documents.
#include <algorithm>
#include <cstring>
#include <numeric>

#include "cuda_test_util.h"
#include "gum/core/error.h"

using namespace gum;
using namespace gum::cuda_test;

namespace {

std::vector<int32_t> random_ids(int64_t n, int32_t below, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::uniform_int_distribution<int32_t> pick(0, below - 1);
  std::vector<int32_t> ids(static_cast<size_t>(n));
  for (auto& id : ids) id = pick(rng);
  return ids;
}

}  // namespace

TEST_CASE("embedding forward and backward match the CPU bitwise, backward is deterministic") {
  GUM_REQUIRE_GPU();
  BackendPair pair;
  const int64_t V = 150, C = 70;
  // 300 tokens over 150 rows (many repeats), then 5000 tokens over 8 rows (overflows the
  // kernel's shared list of positions, exercising its flush path).
  for (auto [N, distinct] : {std::pair<int64_t, int32_t>{300, 150}, {5000, 8}}) {
    auto ids = random_ids(N, distinct, 100 + N);
    ids[0] = 0;
    ids[N - 1] = distinct - 1;
    Pair tokens = pair.ints(Shape{N}, ids);
    Pair table = pair.random(Shape{V, C}, 101);
    Pair out = pair.zeros(Shape{N, C});
    pair.cpu().embedding_forward(out.cpu, tokens.cpu, table.cpu);
    pair.gpu().embedding_forward(out.gpu, tokens.gpu, table.gpu);
    expect_close(pair, out, 0.0, "embedding_forward");

    Pair dout = pair.random(Shape{N, C}, 102);
    const auto initial = random_values(V * C, 103);  // dtable accumulates
    Pair dtable = pair.values(Shape{V, C}, initial);
    pair.cpu().embedding_backward(dtable.cpu, dout.cpu, tokens.cpu);
    pair.gpu().embedding_backward(dtable.gpu, dout.gpu, tokens.gpu);
    // Each row is summed in token order on both backends: identical bits.
    REQUIRE(pair.cpu_values(dtable) == pair.gpu_values(dtable));

    Pair again = pair.values(Shape{V, C}, initial);
    pair.gpu().embedding_backward(again.gpu, dout.gpu, tokens.gpu);
    REQUIRE(pair.gpu_values(again) == pair.gpu_values(dtable));
  }
}

TEST_CASE("rmsnorm forward and backward match the CPU") {
  GUM_REQUIRE_GPU();
  BackendPair pair;
  const int64_t N = 33, C = 300;
  Pair x = pair.random(Shape{N, C}, 110, 2.0), weight = pair.random(Shape{C}, 111);
  Pair out = pair.zeros(Shape{N, C}), rstd = pair.zeros(Shape{N});
  pair.cpu().rmsnorm_forward(out.cpu, rstd.cpu, x.cpu, weight.cpu, 1e-5f);
  pair.gpu().rmsnorm_forward(out.gpu, rstd.gpu, x.gpu, weight.gpu, 1e-5f);
  expect_close(pair, rstd, kF32Tolerance, "rstd");
  expect_close(pair, out, kF32Tolerance, "out");

  Pair dout = pair.random(Shape{N, C}, 112);
  Pair dx = pair.random(Shape{N, C}, 113);    // accumulates into an existing residual gradient
  Pair dweight = pair.random(Shape{C}, 114);  // accumulates
  pair.cpu().rmsnorm_backward(dx.cpu, dweight.cpu, dout.cpu, x.cpu, weight.cpu, rstd.cpu);
  pair.gpu().rmsnorm_backward(dx.gpu, dweight.gpu, dout.gpu, x.gpu, weight.gpu, rstd.gpu);
  expect_close(pair, dx, kF32Tolerance, "dx");
  expect_close(pair, dweight, kF32Tolerance, "dweight");

  // BF16 activations: x and out in bf16, statistics and weights in fp32.
  Pair x16 = pair.random(Shape{N, C}, 115, 2.0, DType::BF16), out16 = pair.zeros(Shape{N, C}, DType::BF16);
  pair.cpu().rmsnorm_forward(out16.cpu, rstd.cpu, x16.cpu, weight.cpu, 1e-5f);
  pair.gpu().rmsnorm_forward(out16.gpu, rstd.gpu, x16.gpu, weight.gpu, 1e-5f);
  expect_close(pair, out16, kBF16Tolerance, "bf16 out");
}

TEST_CASE("linear forward and backward match the CPU, with and without bias") {
  GUM_REQUIRE_GPU();
  BackendPair pair;
  const int64_t N = 45, I = 70, O = 90;
  for (bool with_bias : {false, true}) {
    for (bool accumulate_dx : {false, true}) {
      Pair x = pair.random(Shape{N, I}, 120), weight = pair.random(Shape{O, I}, 121, 0.1);
      Pair bias = pair.random(Shape{O}, 122), out = pair.zeros(Shape{N, O});
      pair.cpu().linear_forward(out.cpu, x.cpu, weight.cpu, with_bias ? &bias.cpu : nullptr);
      pair.gpu().linear_forward(out.gpu, x.gpu, weight.gpu, with_bias ? &bias.gpu : nullptr);
      expect_close(pair, out, kF32Tolerance, "out");

      Pair dout = pair.random(Shape{N, O}, 123), dx = pair.random(Shape{N, I}, 124);
      Pair dweight = pair.random(Shape{O, I}, 125), dbias = pair.random(Shape{O}, 126);
      pair.cpu().linear_backward(dx.cpu, dweight.cpu, with_bias ? &dbias.cpu : nullptr, dout.cpu, x.cpu, weight.cpu,
                                 accumulate_dx);
      pair.gpu().linear_backward(dx.gpu, dweight.gpu, with_bias ? &dbias.gpu : nullptr, dout.gpu, x.gpu, weight.gpu,
                                 accumulate_dx);
      expect_close(pair, dx, kF32Tolerance, accumulate_dx ? "dx accumulated" : "dx");
      expect_close(pair, dweight, kF32Tolerance, "dweight");
      if (with_bias) expect_close(pair, dbias, kF32Tolerance, "dbias");
    }
  }
}

TEST_CASE("linear with BF16 activations and weights, fp32 weight gradient") {
  GUM_REQUIRE_GPU();
  BackendPair pair;
  const int64_t N = 64, I = 96, O = 80;
  Pair x = pair.random(Shape{N, I}, 130, 1.0, DType::BF16), weight = pair.random(Shape{O, I}, 131, 0.1, DType::BF16);
  Pair out = pair.zeros(Shape{N, O}, DType::BF16);
  pair.cpu().linear_forward(out.cpu, x.cpu, weight.cpu, nullptr);
  pair.gpu().linear_forward(out.gpu, x.gpu, weight.gpu, nullptr);
  expect_close(pair, out, kBF16Tolerance, "bf16 out");
  Pair dout = pair.random(Shape{N, O}, 132, 1.0, DType::BF16), dx = pair.zeros(Shape{N, I}, DType::BF16);
  Pair dweight = pair.zeros(Shape{O, I});  // F32 master gradient
  pair.cpu().linear_backward(dx.cpu, dweight.cpu, nullptr, dout.cpu, x.cpu, weight.cpu, false);
  pair.gpu().linear_backward(dx.gpu, dweight.gpu, nullptr, dout.gpu, x.gpu, weight.gpu, false);
  expect_close(pair, dx, kBF16Tolerance, "bf16 dx");
  expect_close(pair, dweight, kF32Tolerance, "f32 dweight from bf16 operands");
}

TEST_CASE("rope forward and backward match the CPU, backward inverts forward") {
  GUM_REQUIRE_GPU();
  BackendPair pair;
  AttentionShape s;
  s.batch = 2;
  s.seq_len = 9;
  s.n_head = 4;
  s.n_kv_head = 2;
  s.head_dim = 16;
  const int64_t N = s.batch * s.seq_len, max_positions = 32;
  Pair positions = pair.ints(Shape{N}, random_ids(N, int32_t(max_positions), 140));
  Pair cos_sin = pair.values(Shape{max_positions, s.head_dim / 2, 2}, rope_table(max_positions, s.head_dim));
  const auto original = random_values(N * s.qkv_width(), 141);
  Pair qkv = pair.values(Shape{N, s.qkv_width()}, original);
  pair.cpu().rope_forward(qkv.cpu, positions.cpu, cos_sin.cpu, s);
  pair.gpu().rope_forward(qkv.gpu, positions.gpu, cos_sin.gpu, s);
  expect_close(pair, qkv, 0.0, "rope_forward");  // same float operations, no FMA: same bits
  pair.cpu().rope_backward(qkv.cpu, positions.cpu, cos_sin.cpu, s);
  pair.gpu().rope_backward(qkv.gpu, positions.gpu, cos_sin.gpu, s);
  expect_close(pair, qkv, 0.0, "rope_backward");
  expect_close(original, pair.gpu_values(qkv), 1e-6, "rope_backward(rope_forward(x)) = x");
}

TEST_CASE("attention forward and backward match the CPU (GQA, MHA, packed documents, gemm and flash kernels)") {
  GUM_REQUIRE_GPU();
  for (const char* mode : {"gemm", "flash"}) {
    BackendPair pair(mode);
    const bool flash = std::string(mode) == "flash";
    struct Case {
      int B, T, H, KV, D;
      bool packed;
    };
    for (const Case& c : {Case{2, 37, 4, 2, 16, false}, Case{2, 37, 4, 2, 16, true}, Case{1, 70, 3, 3, 8, false},
                          Case{3, 20, 8, 1, 32, true}}) {
      AttentionShape s;
      s.batch = c.B;
      s.seq_len = c.T;
      s.n_head = c.H;
      s.n_kv_head = c.KV;
      s.head_dim = c.D;
      const int64_t N = int64_t(c.B) * c.T;
      INFO("mode=" << mode << " B=" << c.B << " T=" << c.T << " H=" << c.H << " KV=" << c.KV << " D=" << c.D
                   << " packed=" << c.packed);
      Pair qkv = pair.random(Shape{N, s.qkv_width()}, 150 + c.T, 1.0);
      // Packed documents: boundaries at t = 0, 7, 19 (and every 11th position for the third case).
      std::vector<int32_t> starts(static_cast<size_t>(N));
      for (int b = 0; b < c.B; ++b) {
        int start = 0;
        for (int t = 0; t < c.T; ++t) {
          if (t == 7 || t == 19 || (c.T == 20 && t % 11 == 0)) start = t;
          starts[size_t(b) * c.T + t] = c.packed ? start : 0;
        }
      }
      Pair doc_start = pair.ints(Shape{N}, starts);
      Pair out = pair.zeros(Shape{N, int64_t(c.H) * c.D});
      Pair aux = pair.zeros(Shape{int64_t(pair.gpu().attention_aux_elems(s))});
      // gemm keeps the probabilities like the CPU; flash only a log-sum-exp per query row.
      const size_t cpu_aux = pair.cpu().attention_aux_elems(s);
      REQUIRE(pair.gpu().attention_aux_elems(s) == (flash ? size_t(N) * c.H : cpu_aux));
      Tensor cpu_aux_tensor = pair.allocate(pair.cpu(), Shape{int64_t(cpu_aux)}, DType::F32);
      pair.cpu().attention_forward(out.cpu, cpu_aux_tensor, qkv.cpu, c.packed ? &doc_start.cpu : nullptr, s);
      pair.gpu().attention_forward(out.gpu, aux.gpu, qkv.gpu, c.packed ? &doc_start.gpu : nullptr, s);
      expect_close(pair, out, kF32Tolerance, "out");
      if (!flash)
        expect_close(BackendPair::download(pair.cpu(), cpu_aux_tensor), pair.gpu_values(aux), kF32Tolerance,
                     "probabilities");

      Pair dout = pair.random(Shape{N, int64_t(c.H) * c.D}, 160 + c.T);
      Pair dqkv = pair.random(Shape{N, s.qkv_width()}, 161);  // overwritten, not accumulated
      pair.cpu().attention_backward(dqkv.cpu, dout.cpu, out.cpu, cpu_aux_tensor, qkv.cpu,
                                    c.packed ? &doc_start.cpu : nullptr, s);
      pair.gpu().attention_backward(dqkv.gpu, dout.gpu, out.gpu, aux.gpu, qkv.gpu, c.packed ? &doc_start.gpu : nullptr,
                                    s);
      expect_close(pair, dqkv, kF32Tolerance, "dqkv");
    }
  }
}

TEST_CASE("cached_attention_forward matches the CPU: prefill, decode steps and chunks (GQA, MHA, MQA)") {
  GUM_REQUIRE_GPU();
  BackendPair pair;
  struct Case {
    int B, H, KV, D, capacity;
  };
  // D = 80: a head that does not fill the last register column of the warp; D = 256: the largest.
  for (const Case& c : {Case{2, 4, 2, 16, 40}, Case{1, 3, 3, 80, 33}, Case{3, 8, 1, 32, 21}, Case{1, 2, 1, 256, 9}}) {
    INFO("B=" << c.B << " H=" << c.H << " KV=" << c.KV << " D=" << c.D << " capacity=" << c.capacity);
    Pair cache = pair.zeros(Shape{c.B, c.capacity, 2 * int64_t(c.KV) * c.D});
    int past = 0;
    uint64_t seed = 300;
    // A prefill, single-token decode steps, a chunk, then decode steps up to the full cache.
    std::vector<int> pieces = {c.capacity / 3, 1, 1, c.capacity / 4};
    for (int used = c.capacity / 3 + 2 + c.capacity / 4; used < c.capacity; ++used) pieces.push_back(1);
    for (int n : pieces) {
      INFO("past_len " << past << ", n " << n);
      const AttentionShape s{c.B, n, c.H, c.KV, c.D};
      const int64_t rows = int64_t(c.B) * n;
      Pair qkv = pair.random(Shape{rows, s.qkv_width()}, ++seed);
      Pair out = pair.random(Shape{rows, int64_t(c.H) * c.D}, ++seed);  // overwritten
      pair.cpu().cached_attention_forward(out.cpu, cache.cpu, qkv.cpu, past, s);
      pair.gpu().cached_attention_forward(out.gpu, cache.gpu, qkv.gpu, past, s);
      expect_close(pair, out, kF32Tolerance, "out");
      past += n;
    }
    REQUIRE(past == c.capacity);
    // The appended keys and values are copies: bitwise equal.
    CHECK(pair.cpu_values(cache) == pair.gpu_values(cache));
  }
  // The shared argument checks reject an overfull cache on the GPU too.
  const AttentionShape s{1, 2, 4, 2, 8};
  Pair qkv = pair.random(Shape{2, s.qkv_width()}, 1), out = pair.zeros(Shape{2, 32});
  Pair cache = pair.zeros(Shape{1, 3, 32});
  CHECK_THROWS_AS(pair.gpu().cached_attention_forward(out.gpu, cache.gpu, qkv.gpu, 2, s), Error);
}

TEST_CASE("swiglu forward and backward match the CPU") {
  GUM_REQUIRE_GPU();
  BackendPair pair;
  const int64_t N = 17, F = 300;
  Pair gate_up = pair.random(Shape{N, 2 * F}, 170, 2.0), out = pair.zeros(Shape{N, F});
  pair.cpu().swiglu_forward(out.cpu, gate_up.cpu);
  pair.gpu().swiglu_forward(out.gpu, gate_up.gpu);
  expect_close(pair, out, kF32Tolerance, "out");
  Pair dout = pair.random(Shape{N, F}, 171), dgate_up = pair.random(Shape{N, 2 * F}, 172);
  pair.cpu().swiglu_backward(dgate_up.cpu, dout.cpu, gate_up.cpu);
  pair.gpu().swiglu_backward(dgate_up.gpu, dout.gpu, gate_up.gpu);
  expect_close(pair, dgate_up, kF32Tolerance, "dgate_up");
}

TEST_CASE("cross-entropy forward and backward match the CPU, with ignored targets and in place") {
  GUM_REQUIRE_GPU();
  BackendPair pair;
  const int64_t N = 20, V = 1000;
  auto targets = random_ids(N, int32_t(V), 180);
  targets[3] = -1;
  targets[11] = -100;
  targets[19] = int32_t(V - 1);
  Pair target = pair.ints(Shape{N}, targets);
  Pair logits = pair.random(Shape{N, V}, 181, 3.0), losses = pair.zeros(Shape{N});
  pair.cpu().cross_entropy_forward(losses.cpu, logits.cpu, target.cpu);
  pair.gpu().cross_entropy_forward(losses.gpu, logits.gpu, target.gpu);
  expect_close(pair, losses, kF32Tolerance, "losses");
  REQUIRE(pair.gpu_values(losses)[3] == 0.0f);

  Pair dlogits = pair.random(Shape{N, V}, 182);
  pair.cpu().cross_entropy_backward(dlogits.cpu, logits.cpu, target.cpu, 0.05f);
  pair.gpu().cross_entropy_backward(dlogits.gpu, logits.gpu, target.gpu, 0.05f);
  expect_close(pair, dlogits, kF32Tolerance, "dlogits");
  const auto ignored = pair.gpu_values(dlogits);
  REQUIRE(std::all_of(ignored.begin() + 11 * V, ignored.begin() + 12 * V, [](float v) { return v == 0.0f; }));

  // dlogits aliasing logits (what the model does to save an [N, V] buffer).
  pair.cpu().cross_entropy_backward(logits.cpu, logits.cpu, target.cpu, 0.05f);
  pair.gpu().cross_entropy_backward(logits.gpu, logits.gpu, target.gpu, 0.05f);
  expect_close(pair, logits, kF32Tolerance, "dlogits in place");
  expect_close(pair.gpu_values(dlogits), pair.gpu_values(logits), 0.0, "in place equals out of place");
}
