// cached_attention_forward (incremental decoding against a KV cache) on the CPU backend: against a
// naive double-precision reference written out here, and against causal attention_forward of the
// whole sequence when the sequence is fed through the cache in pieces.
#include <catch2/catch.hpp>
#include <cmath>
#include <vector>

#include "common/relative_error.h"
#include "gum/core/error.h"
#include "test_util.h"

using namespace gum;
using gum::testing::DeviceBuffer;
using gum::testing::random_vector;
using gum::testing::relative_error;

namespace {

// Keys and values of every position seen so far, per sequence, in double: [B][position][KV * D].
struct ReferenceCache {
  std::vector<std::vector<std::vector<double>>> k, v;
};

// The new rows' outputs [B*n, H*D] by the textbook formula: softmax over positions 0..past+i of
// q . k / sqrt(D), then the weighted sum of v; query head h reads kv head h / (H / KV).
std::vector<double> naive_cached_attention(ReferenceCache& cache, const std::vector<float>& qkv,
                                           const AttentionShape& s) {
  const int64_t B = s.batch, n = s.seq_len, H = s.n_head, KV = s.n_kv_head, D = s.head_dim, W = s.qkv_width();
  for (int64_t b = 0; b < B; ++b)
    for (int64_t i = 0; i < n; ++i) {
      const float* row = qkv.data() + (b * n + i) * W;
      cache.k[b].emplace_back(row + H * D, row + (H + KV) * D);
      cache.v[b].emplace_back(row + (H + KV) * D, row + (H + 2 * KV) * D);
    }
  std::vector<double> out(static_cast<size_t>(B * n * H * D), 0.0);
  for (int64_t b = 0; b < B; ++b) {
    const int64_t past = int64_t(cache.k[b].size()) - n;
    for (int64_t i = 0; i < n; ++i)
      for (int64_t h = 0; h < H; ++h) {
        const int64_t kv = h / (H / KV), keys = past + i + 1;
        const float* q = qkv.data() + (b * n + i) * W + h * D;
        std::vector<double> score(static_cast<size_t>(keys));
        double max_score = -INFINITY, total = 0;
        for (int64_t u = 0; u < keys; ++u) {
          double dot = 0;
          for (int64_t d = 0; d < D; ++d) dot += double(q[d]) * cache.k[b][u][kv * D + d];
          score[u] = dot / std::sqrt(double(D));
          max_score = std::max(max_score, score[u]);
        }
        for (auto& x : score) total += (x = std::exp(x - max_score));
        double* o = out.data() + (b * n + i) * H * D + h * D;
        for (int64_t u = 0; u < keys; ++u)
          for (int64_t d = 0; d < D; ++d) o[d] += score[u] / total * cache.v[b][u][kv * D + d];
      }
  }
  return out;
}

}  // namespace

TEST_CASE("cached_attention_forward equals a naive double reference (GQA, MHA, MQA, past_len 0 and > 0, n > 1)") {
  auto backend = make_backend("cpu");
  struct Heads {
    int H, KV;
  };
  for (Heads heads : {Heads{6, 2}, Heads{4, 4}, Heads{4, 1}}) {
    const int B = 2, D = 8, capacity = 12;
    INFO("H=" << heads.H << " KV=" << heads.KV);
    DeviceBuffer cache(*backend, DType::F32, Shape{B, capacity, 2 * heads.KV * D});
    ReferenceCache reference{std::vector<std::vector<std::vector<double>>>(B),
                             std::vector<std::vector<std::vector<double>>>(B)};
    int past = 0;
    uint64_t seed = 100;
    for (int n : {5, 1, 3, 3}) {  // prefill, one decode step, two chunks; the last one fills the cache
      INFO("past_len " << past << ", n " << n);
      const AttentionShape s{B, n, heads.H, heads.KV, D};
      const int64_t rows = int64_t(B) * n;
      const std::vector<float> qkv_values = random_vector<float>(rows * s.qkv_width(), ++seed);
      DeviceBuffer qkv(*backend, DType::F32, Shape{rows, s.qkv_width()}),
          out(*backend, DType::F32, Shape{rows, int64_t(heads.H) * D});
      qkv.upload(qkv_values);
      backend->cached_attention_forward(out.tensor, cache.tensor, qkv.tensor, past, s);
      const std::vector<double> expected = naive_cached_attention(reference, qkv_values, s);
      const double error = relative_error(expected, out.download());
      INFO("relative error " << error);
      CHECK(error < 1e-6);
      past += n;
    }
    // The cache holds exactly the k/v columns of every row appended so far, in position order.
    const std::vector<float> cached = cache.download();
    const int64_t kv_width = 2 * heads.KV * D;
    for (int64_t b = 0; b < B; ++b)
      for (int64_t p = 0; p < capacity; ++p)
        for (int64_t e = 0; e < kv_width; ++e) {
          const double want = e < heads.KV * D ? reference.k[b][p][e] : reference.v[b][p][e - heads.KV * D];
          REQUIRE(cached[(b * capacity + p) * kv_width + e] == want);
        }
  }
}

TEST_CASE("a sequence fed through the cache in pieces gets the outputs of causal attention_forward") {
  auto backend = make_backend("cpu");
  const AttentionShape full{2, 10, 4, 2, 16};
  const int64_t W = full.qkv_width(), HD = int64_t(full.n_head) * full.head_dim, T = full.seq_len;
  const std::vector<float> qkv_values = random_vector<float>(full.batch * T * W, 7);
  DeviceBuffer qkv(*backend, DType::F32, Shape{full.batch * T, W}),
      out(*backend, DType::F32, Shape{full.batch * T, HD}),
      aux(*backend, DType::F32, Shape{int64_t(backend->attention_aux_elems(full))});
  qkv.upload(qkv_values);
  backend->attention_forward(out.tensor, aux.tensor, qkv.tensor, nullptr, full);
  const std::vector<float> expected = out.download();

  DeviceBuffer cache(*backend, DType::F32, Shape{full.batch, T, 2 * full.n_kv_head * full.head_dim});
  int past = 0;
  for (int n : {4, 1, 5}) {
    AttentionShape piece = full;
    piece.seq_len = n;
    std::vector<float> piece_qkv;
    for (int64_t b = 0; b < full.batch; ++b)
      piece_qkv.insert(piece_qkv.end(), qkv_values.begin() + (b * T + past) * W,
                       qkv_values.begin() + (b * T + past + n) * W);
    DeviceBuffer piece_in(*backend, DType::F32, Shape{full.batch * n, W}),
        piece_out(*backend, DType::F32, Shape{full.batch * n, HD});
    piece_in.upload(piece_qkv);
    backend->cached_attention_forward(piece_out.tensor, cache.tensor, piece_in.tensor, past, piece);
    const std::vector<float> got = piece_out.download();
    std::vector<double> want;
    for (int64_t b = 0; b < full.batch; ++b)
      want.insert(want.end(), expected.begin() + (b * T + past) * HD, expected.begin() + (b * T + past + n) * HD);
    INFO("rows [" << past << ", " << past + n << ")");
    CHECK(relative_error(want, got) < 1e-6);
    past += n;
  }
}

TEST_CASE("cached_attention_forward rejects a full cache and mismatched shapes, naming the argument") {
  auto backend = make_backend("cpu");
  const AttentionShape s{1, 2, 4, 2, 8};
  DeviceBuffer qkv(*backend, DType::F32, Shape{2, s.qkv_width()}), out(*backend, DType::F32, Shape{2, 32}),
      cache(*backend, DType::F32, Shape{1, 5, 32}), narrow_cache(*backend, DType::F32, Shape{1, 5, 16}),
      flat_cache(*backend, DType::F32, Shape{5, 32}), small_out(*backend, DType::F32, Shape{1, 32});
  using Catch::Matchers::Contains;
  CHECK_NOTHROW(backend->cached_attention_forward(out.tensor, cache.tensor, qkv.tensor, 3, s));
  CHECK_THROWS_WITH(backend->cached_attention_forward(out.tensor, cache.tensor, qkv.tensor, 4, s),
                    Contains("do not fit the kv_cache's 5 positions"));
  CHECK_THROWS_WITH(backend->cached_attention_forward(out.tensor, cache.tensor, qkv.tensor, -1, s),
                    Contains("past_len -1"));
  CHECK_THROWS_WITH(backend->cached_attention_forward(out.tensor, narrow_cache.tensor, qkv.tensor, 0, s),
                    Contains("kv_cache [1, 5, 16] must be [1, capacity, 32]"));
  CHECK_THROWS_WITH(backend->cached_attention_forward(out.tensor, flat_cache.tensor, qkv.tensor, 0, s),
                    Contains("kv_cache"));
  CHECK_THROWS_WITH(backend->cached_attention_forward(small_out.tensor, cache.tensor, qkv.tensor, 0, s),
                    Contains("out [1, 32]"));
}
