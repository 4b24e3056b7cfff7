#pragma once
// The CPU reference kernels, templated on the floating type so that tests can run the very
// same code in double precision (finite differences) while CpuBackend runs it in float.
// Raw pointers, row-major, contiguous; shapes follow include/gum/backend/backend.h.
// Parallel loops only split work whose outputs are disjoint, so results never depend on
// the number of threads (no racy or order-dependent accumulation).
#include <algorithm>
#include <bit>
#include <cmath>
#include <cstdint>
#include <vector>

// OpenMP when the including target builds with it (the backend); serial otherwise (tests that
// run the double instantiations).
// GUM_SIMD asks for a vectorised inner loop (reductions in it keep a fixed lane order, so results
// still do not depend on the thread count).
#ifdef _OPENMP
#define GUM_PARALLEL_FOR _Pragma("omp parallel for schedule(static)")
#define GUM_PARALLEL_FOR_2D _Pragma("omp parallel for collapse(2) schedule(static)")
#define GUM_PARALLEL_FOR_SIMD _Pragma("omp parallel for simd schedule(static)")
#define GUM_SIMD _Pragma("omp simd")
#define GUM_SIMD_SUM(var) _Pragma(GUM_STRINGIFY(omp simd reduction(+ : var)))
#define GUM_SIMD_MAX(var) _Pragma(GUM_STRINGIFY(omp simd reduction(max : var)))
#define GUM_STRINGIFY(x) #x
#else
#define GUM_PARALLEL_FOR
#define GUM_PARALLEL_FOR_2D
#define GUM_PARALLEL_FOR_SIMD
#define GUM_SIMD
#define GUM_SIMD_SUM(var)
#define GUM_SIMD_MAX(var)
#endif

namespace gum::cpu {

// Row-major C[M,N] = alpha * op(A) op(B) + beta * C through BLAS (defined in blas.cpp).
// A is [M,K] ([K,M] when trans_a), B is [K,N] ([N,K] when trans_b).
void gemm_rowmajor(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha, const float* a,
                   const float* b, float beta, float* c);
void gemm_rowmajor(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, double alpha, const double* a,
                   const double* b, double beta, double* c);

// Row-major GEMM on strided sub-matrices (leading dimensions lda, ldb, ldc in elements), e.g. one
// head's columns inside the fused qkv rows.
void gemm_strided(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha, const float* a, int64_t lda,
                  const float* b, int64_t ldb, float beta, float* c, int64_t ldc);
void gemm_strided(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, double alpha, const double* a,
                  int64_t lda, const double* b, int64_t ldb, double beta, double* c, int64_t ldc);

// While alive, BLAS calls run on the calling thread only: for GEMMs issued from inside our own
// OpenMP loops, where BLAS's own thread pool would oversubscribe the cores (OpenBLAS's pthread
// build does not notice that it is called from a parallel region).
class BlasSingleThreaded {
 public:
  BlasSingleThreaded();
  ~BlasSingleThreaded();
  BlasSingleThreaded(const BlasSingleThreaded&) = delete;
  BlasSingleThreaded& operator=(const BlasSingleThreaded&) = delete;

 private:
  int saved_threads_;
};

// exp that vectorises: Cephes' expf scheme (Moshier 1992), exp(x) = 2^n exp(r) with n = round(x / ln 2),
// r = x - n ln 2 split in two constants for accuracy, and a degree-6 polynomial for exp(r) on
// [-ln2/2, ln2/2]. Plain arithmetic only, so `omp simd` loops vectorise it
// (libm's expf would stay scalar without -ffast-math; the backend builds with -fno-trapping-math so
// the clamps vectorise). Relative error below 1e-7 on [-87, 88]. NaN propagates; the argument is
// clamped to [-87.3, 88.3] (2^n stays a normal float): callers pass x - max <= 0, where 1e-38 in
// place of a denormal is added to at least 1.
inline float vector_exp(float x) {
  // Ternaries on values (not std::min/max on references) become vector min/max; NaN passes both.
  float clamped = x < -87.3f ? -87.3f : x;
  clamped = clamped > 88.3f ? 88.3f : clamped;
  const float shifter = 12582912.0f;  // 1.5 * 2^23: adding it rounds to an integer held in the low bits
  const float shifted = clamped * 1.44269504088896341f + shifter;
  const float n = shifted - shifter;
  const float r = (clamped - n * 0.693359375f) - n * -2.12194440e-4f;
  const float r2 = r * r;
  float poly = 1.9875691500e-4f;  // Horner form of Cephes' coefficients
  poly = poly * r + 1.3981999507e-3f;
  poly = poly * r + 8.3334519073e-3f;
  poly = poly * r + 4.1665795894e-2f;
  poly = poly * r + 1.6666665459e-1f;
  poly = poly * r + 5.0000001201e-1f;
  const float exp_r = (poly * r2 + r) + 1.0f;
  // 2^n built in the exponent field from n's integer bits (no float-to-int conversion of NaN).
  const uint32_t two_n_bits = (std::bit_cast<uint32_t>(shifted) - std::bit_cast<uint32_t>(shifter) + 127u) << 23;
  return exp_r * std::bit_cast<float>(two_n_bits);
}
// The double instantiations (finite-difference tests) keep libm's exp.
inline double vector_exp(double x) { return std::exp(x); }

// Work split in fixed-size blocks whose partial results are combined in block order: the same
// bits on 1 or 64 threads.
constexpr int64_t kReduceBlock = 4096;

// ---------------------------------------------------------------------------------------------
// Reductions (accumulated in double).

template <typename T, typename Term>
double blocked_sum(const T* x, int64_t n, Term term) {
  const int64_t blocks = (n + kReduceBlock - 1) / kReduceBlock;
  std::vector<double> partial(static_cast<size_t>(blocks), 0.0);
  GUM_PARALLEL_FOR
  for (int64_t b = 0; b < blocks; ++b) {
    double acc = 0.0;
    const int64_t end = std::min(n, (b + 1) * kReduceBlock);
    for (int64_t i = b * kReduceBlock; i < end; ++i) acc += term(static_cast<double>(x[i]));
    partial[b] = acc;
  }
  double total = 0.0;
  for (double p : partial) total += p;
  return total;
}

template <typename T>
double sum(const T* x, int64_t n) {
  return blocked_sum(x, n, [](double v) { return v; });
}

template <typename T>
double sum_squares(const T* x, int64_t n) {
  return blocked_sum(x, n, [](double v) { return v * v; });
}

// ---------------------------------------------------------------------------------------------
// Embedding.

template <typename T>
void embedding_forward(T* out, const int32_t* tokens, const T* table, int64_t N, int64_t C) {
  GUM_PARALLEL_FOR
  for (int64_t n = 0; n < N; ++n)
    std::copy(table + int64_t(tokens[n]) * C, table + int64_t(tokens[n] + 1) * C, out + n * C);
}

// Parallel over blocks of channels, tokens in order inside: a row hit by several tokens is
// summed in token order whatever the thread count.
template <typename T>
void embedding_backward(T* dtable, const T* dout, const int32_t* tokens, int64_t N, int64_t C) {
  constexpr int64_t kChannelBlock = 64;
  const int64_t blocks = (C + kChannelBlock - 1) / kChannelBlock;
  GUM_PARALLEL_FOR
  for (int64_t b = 0; b < blocks; ++b) {
    const int64_t c0 = b * kChannelBlock, c1 = std::min(C, c0 + kChannelBlock);
    for (int64_t n = 0; n < N; ++n) {
      T* row = dtable + int64_t(tokens[n]) * C;
      const T* grad = dout + n * C;
      for (int64_t c = c0; c < c1; ++c) row[c] += grad[c];
    }
  }
}

// ---------------------------------------------------------------------------------------------
// RMSNorm (Zhang & Sennrich 2019): y = x / sqrt(mean(x^2) + eps) * w.

template <typename T, typename R>
void rmsnorm_forward(T* out, R* rstd, const T* x, const T* weight, int64_t N, int64_t C, double eps) {
  GUM_PARALLEL_FOR
  for (int64_t n = 0; n < N; ++n) {
    const T* xr = x + n * C;
    double ms = 0.0;
    GUM_SIMD_SUM(ms)
    for (int64_t c = 0; c < C; ++c) ms += double(xr[c]) * double(xr[c]);
    const T r = static_cast<T>(1.0 / std::sqrt(ms / double(C) + eps));
    rstd[n] = static_cast<R>(r);
    T* yr = out + n * C;
    GUM_SIMD
    for (int64_t c = 0; c < C; ++c) yr[c] = xr[c] * r * weight[c];
  }
}

// With g = dout * w: dx = r g - r^3 / C * x * sum_c(g x), accumulated into dx;
// dweight += sum_n dout * x * r (parallel over channel blocks, rows in order).
template <typename T, typename R>
void rmsnorm_backward(T* dx, T* dweight, const T* dout, const T* x, const T* weight, const R* rstd, int64_t N,
                      int64_t C) {
  GUM_PARALLEL_FOR
  for (int64_t n = 0; n < N; ++n) {
    const T* xr = x + n * C;
    const T* gr = dout + n * C;
    const double r = double(rstd[n]);
    double dot = 0.0;
    GUM_SIMD_SUM(dot)
    for (int64_t c = 0; c < C; ++c) dot += double(gr[c]) * double(weight[c]) * double(xr[c]);
    const double coef = r * r * r * dot / double(C);
    T* dxr = dx + n * C;
    GUM_SIMD
    for (int64_t c = 0; c < C; ++c)
      dxr[c] += static_cast<T>(r * double(gr[c]) * double(weight[c]) - coef * double(xr[c]));
  }
  constexpr int64_t kChannelBlock = 64;
  const int64_t blocks = (C + kChannelBlock - 1) / kChannelBlock;
  GUM_PARALLEL_FOR
  for (int64_t b = 0; b < blocks; ++b) {
    const int64_t c0 = b * kChannelBlock, c1 = std::min(C, c0 + kChannelBlock);
    for (int64_t n = 0; n < N; ++n) {
      const T r = static_cast<T>(rstd[n]);
      GUM_SIMD
      for (int64_t c = c0; c < c1; ++c) dweight[c] += dout[n * C + c] * x[n * C + c] * r;
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Linear: out[N,O] = x[N,I] W[O,I]^T + bias.

template <typename T>
void linear_forward(T* out, const T* x, const T* weight, const T* bias, int64_t N, int64_t I, int64_t O) {
  gemm_rowmajor(false, true, N, O, I, T(1), x, weight, T(0), out);
  if (!bias) return;
  GUM_PARALLEL_FOR
  for (int64_t n = 0; n < N; ++n)
    for (int64_t o = 0; o < O; ++o) out[n * O + o] += bias[o];
}

// Column sums of a [N, C] matrix added into acc[C] (channel blocks in parallel, rows in order).
template <typename T>
void add_column_sums(T* acc, const T* m, int64_t N, int64_t C) {
  constexpr int64_t kChannelBlock = 64;
  const int64_t blocks = (C + kChannelBlock - 1) / kChannelBlock;
  GUM_PARALLEL_FOR
  for (int64_t b = 0; b < blocks; ++b) {
    const int64_t c0 = b * kChannelBlock, c1 = std::min(C, c0 + kChannelBlock);
    for (int64_t n = 0; n < N; ++n)
      for (int64_t c = c0; c < c1; ++c) acc[c] += m[n * C + c];
  }
}

template <typename T>
void linear_backward(T* dx, T* dweight, T* dbias, const T* dout, const T* x, const T* weight, int64_t N, int64_t I,
                     int64_t O, bool accumulate_dx) {
  gemm_rowmajor(false, false, N, I, O, T(1), dout, weight, accumulate_dx ? T(1) : T(0), dx);  // dx = dout W
  gemm_rowmajor(true, false, O, I, N, T(1), dout, x, T(1), dweight);                          // dW += dout^T x
  if (dbias) add_column_sums(dbias, dout, N, O);
}

// ---------------------------------------------------------------------------------------------
// Rotary position embedding (Su et al. 2021, RoFormer eq. 34) with Hugging Face's rotate_half
// pairing: in each head, element j rotates with element j + D/2 by angle position * inv_freq[j].
// cos_sin [max_positions, D/2, 2]. `inverse` rotates by the negative angle (the backward pass,
// since a rotation's transpose is its inverse).

template <typename T>
void rope_apply(T* qkv, const int32_t* positions, const T* cos_sin, int64_t N, int64_t H, int64_t KV, int64_t D,
                bool inverse) {
  const int64_t width = (H + 2 * KV) * D, half = D / 2, rotated_heads = H + KV;
  GUM_PARALLEL_FOR
  for (int64_t n = 0; n < N; ++n) {
    const T* table = cos_sin + int64_t(positions[n]) * half * 2;
    for (int64_t h = 0; h < rotated_heads; ++h) {
      T* head = qkv + n * width + h * D;
      for (int64_t j = 0; j < half; ++j) {
        const T cos_a = table[2 * j], sin_a = inverse ? -table[2 * j + 1] : table[2 * j + 1];
        const T a = head[j], b = head[j + half];
        head[j] = a * cos_a - b * sin_a;
        head[j + half] = b * cos_a + a * sin_a;
      }
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Causal grouped-query attention (Vaswani et al. 2017; GQA: Ainslie et al. 2023). qkv rows are
// [q heads | k heads | v heads], each D wide. probs [B, H, T, T] keeps softmax(QK^T/sqrt(D)) for
// backward (zeros outside the allowed window). Query t attends to [start(t), t] with start(t) =
// doc_start[b*T + t] when doc_start is given (packed documents), else 0.

struct AttentionDims {
  int64_t B, T, H, KV, D;
  int64_t width() const { return (H + 2 * KV) * D; }
};

inline int64_t attention_window_start(const int32_t* doc_start, int64_t row) {
  return doc_start ? int64_t(doc_start[row]) : 0;
}

// Attention runs per (batch, head) on [T, T] score matrices with BLAS GEMMs, in blocks of query
// rows: block [t0, t1) only needs keys [u0, t1), u0 = the earliest window start in the block, so
// the causal upper triangle is mostly skipped. Each task calls single-threaded BLAS (tasks are the
// parallelism), so the result is the same on any number of threads.
constexpr int64_t kAttentionRowBlock = 64;

// The first key any query row in [t0, t1) may see.
inline int64_t attention_block_start(const int32_t* doc_start, int64_t row0, int64_t rows) {
  if (!doc_start) return 0;
  int64_t start = doc_start[row0];
  for (int64_t i = 1; i < rows; ++i) start = std::min<int64_t>(start, doc_start[row0 + i]);
  return start;
}

// Row t of the score matrix becomes softmax over its window [start, t]; every other entry of the
// row is set to 0 (backward multiplies whole rows by it).
template <typename T>
void masked_softmax_row(T* p, int64_t T_len, int64_t start, int64_t t) {
  std::fill(p, p + start, T(0));
  std::fill(p + t + 1, p + T_len, T(0));
  T max_score = p[start];
  GUM_SIMD_MAX(max_score)
  for (int64_t u = start; u <= t; ++u) max_score = p[u] > max_score ? p[u] : max_score;
  T denom = 0;
  GUM_SIMD_SUM(denom)
  for (int64_t u = start; u <= t; ++u) {
    p[u] = vector_exp(p[u] - max_score);
    denom += p[u];
  }
  const T inv = T(1) / denom;
  GUM_SIMD
  for (int64_t u = start; u <= t; ++u) p[u] *= inv;
}

template <typename T>
void attention_forward(T* out, T* probs, const T* qkv, const int32_t* doc_start, const AttentionDims& s) {
  const int64_t W = s.width(), HD = s.H * s.D, group = s.H / s.KV;
  const T scale = static_cast<T>(1.0 / std::sqrt(double(s.D)));
  BlasSingleThreaded single_threaded_blas;
  GUM_PARALLEL_FOR_2D
  for (int64_t b = 0; b < s.B; ++b) {
    for (int64_t h = 0; h < s.H; ++h) {
      const int64_t kv = h / group;
      const T* q = qkv + b * s.T * W + h * s.D;
      const T* k = qkv + b * s.T * W + (s.H + kv) * s.D;
      const T* v = qkv + b * s.T * W + (s.H + s.KV + kv) * s.D;
      const int32_t* starts = doc_start ? doc_start + b * s.T : nullptr;
      T* p = probs + (b * s.H + h) * s.T * s.T;
      for (int64_t t0 = 0; t0 < s.T; t0 += kAttentionRowBlock) {
        const int64_t rows = std::min(kAttentionRowBlock, s.T - t0), t1 = t0 + rows;
        const int64_t u0 = attention_block_start(starts, t0, rows);
        // S = Q K^T / sqrt(D) for rows [t0, t1), keys [u0, t1).
        gemm_strided(false, true, rows, t1 - u0, s.D, scale, q + t0 * W, W, k + u0 * W, W, T(0), p + t0 * s.T + u0,
                     s.T);
        for (int64_t t = t0; t < t1; ++t) masked_softmax_row(p + t * s.T, s.T, attention_window_start(starts, t), t);
        // O = P V.
        gemm_strided(false, false, rows, s.D, t1 - u0, T(1), p + t0 * s.T + u0, s.T, v + u0 * W, W, T(0),
                     out + (b * s.T + t0) * HD + h * s.D, HD);
      }
    }
  }
}

// dqkv is overwritten. Parallel over (batch, kv head): each task owns the dk/dv of its kv head
// and the dq of the query heads that read it, so no two threads write the same element. With
// dP = dO V^T, the softmax backward dS = P * (dP - rowsum(P * dP)) / sqrt(D); then dQ = dS K,
// dK += dS^T Q and dV += P^T dO, summed over the query heads of the group in head order.
template <typename T>
void attention_backward(T* dqkv, const T* dout, const T* probs, const T* qkv, const int32_t* doc_start,
                        const AttentionDims& s) {
  const int64_t W = s.width(), HD = s.H * s.D, group = s.H / s.KV;
  const T scale = static_cast<T>(1.0 / std::sqrt(double(s.D)));
  BlasSingleThreaded single_threaded_blas;
  GUM_PARALLEL_FOR_2D
  for (int64_t b = 0; b < s.B; ++b) {
    for (int64_t kv = 0; kv < s.KV; ++kv) {
      std::vector<T> dscore(static_cast<size_t>(s.T * s.T));  // dP, then dS, of one head
      T* ds = dscore.data();
      const int32_t* starts = doc_start ? doc_start + b * s.T : nullptr;
      const T* k = qkv + b * s.T * W + (s.H + kv) * s.D;
      const T* v = qkv + b * s.T * W + (s.H + s.KV + kv) * s.D;
      T* dk = dqkv + b * s.T * W + (s.H + kv) * s.D;
      T* dv = dqkv + b * s.T * W + (s.H + s.KV + kv) * s.D;
      for (int64_t h = kv * group; h < (kv + 1) * group; ++h) {
        const T* p = probs + (b * s.H + h) * s.T * s.T;
        const T* q = qkv + b * s.T * W + h * s.D;
        const T* go = dout + b * s.T * HD + h * s.D;
        T* dq = dqkv + b * s.T * W + h * s.D;
        const T beta = h == kv * group ? T(0) : T(1);  // the group's first head overwrites dk/dv
        for (int64_t t0 = 0; t0 < s.T; t0 += kAttentionRowBlock) {
          const int64_t rows = std::min(kAttentionRowBlock, s.T - t0), t1 = t0 + rows;
          const int64_t u0 = attention_block_start(starts, t0, rows);
          gemm_strided(false, true, rows, t1 - u0, s.D, T(1), go + t0 * HD, HD, v + u0 * W, W, T(0), ds + t0 * s.T + u0,
                       s.T);  // dP
          for (int64_t t = t0; t < t1; ++t) {
            const int64_t start = attention_window_start(starts, t);
            const T* prow = p + t * s.T;
            T* row = ds + t * s.T;
            T weighted = 0;
            GUM_SIMD_SUM(weighted)
            for (int64_t u = start; u <= t; ++u) weighted += prow[u] * row[u];
            std::fill(row, row + start, T(0));
            std::fill(row + t + 1, row + s.T, T(0));
            GUM_SIMD
            for (int64_t u = start; u <= t; ++u) row[u] = prow[u] * (row[u] - weighted) * scale;
          }
          gemm_strided(false, false, rows, s.D, t1 - u0, T(1), ds + t0 * s.T + u0, s.T, k + u0 * W, W, T(0),
                       dq + t0 * W, W);  // dQ
        }
        // dK and dV by blocks of key rows [u0, u1): only queries t >= u0 can see them.
        for (int64_t u0 = 0; u0 < s.T; u0 += kAttentionRowBlock) {
          const int64_t keys = std::min(kAttentionRowBlock, s.T - u0), queries = s.T - u0;
          gemm_strided(true, false, keys, s.D, queries, T(1), ds + u0 * s.T + u0, s.T, q + u0 * W, W, beta, dk + u0 * W,
                       W);
          gemm_strided(true, false, keys, s.D, queries, T(1), p + u0 * s.T + u0, s.T, go + u0 * HD, HD, beta,
                       dv + u0 * W, W);
        }
      }
    }
  }
}

// Incremental decoding against a KV cache [B, capacity, 2 KV D] (row = k heads | v heads of one
// position); s.T is the number n of new rows per sequence in qkv [B*n, width]. Their k/v go to
// cache rows [past_len, past_len + n), then new row i attends to cache rows [0, past_len + i].
// Decoding has one query row per head, so this is dot products and axpys rather than GEMMs; each
// (sequence, row, head) task is independent, so the result does not depend on the thread count.
template <typename T>
void cached_attention_forward(T* out, T* kv_cache, const T* qkv, int64_t past_len, int64_t capacity,
                              const AttentionDims& s) {
  const int64_t W = s.width(), HD = s.H * s.D, kv_width = 2 * s.KV * s.D, group = s.H / s.KV;
  const T scale = static_cast<T>(1.0 / std::sqrt(double(s.D)));
  GUM_PARALLEL_FOR_2D
  for (int64_t b = 0; b < s.B; ++b)
    for (int64_t i = 0; i < s.T; ++i) {
      const T* kv_new = qkv + (b * s.T + i) * W + HD;  // k heads then v heads: already the cache row layout
      std::copy(kv_new, kv_new + kv_width, kv_cache + (b * capacity + past_len + i) * kv_width);
    }
  GUM_PARALLEL_FOR_2D
  for (int64_t row = 0; row < s.B * s.T; ++row) {
    for (int64_t h = 0; h < s.H; ++h) {
      const int64_t b = row / s.T, i = row % s.T, keys = past_len + i + 1, kv = h / group;
      const T* q = qkv + row * W + h * s.D;
      const T* cache = kv_cache + b * capacity * kv_width;
      std::vector<T> p(static_cast<size_t>(keys));
      for (int64_t u = 0; u < keys; ++u) {
        const T* k = cache + u * kv_width + kv * s.D;
        T dot = 0;
        GUM_SIMD_SUM(dot)
        for (int64_t d = 0; d < s.D; ++d) dot += q[d] * k[d];
        p[u] = dot * scale;
      }
      masked_softmax_row(p.data(), keys, 0, keys - 1);
      T* o = out + row * HD + h * s.D;
      std::fill(o, o + s.D, T(0));
      for (int64_t u = 0; u < keys; ++u) {
        const T* v = cache + u * kv_width + (s.KV + kv) * s.D;
        const T weight = p[u];
        GUM_SIMD
        for (int64_t d = 0; d < s.D; ++d) o[d] += weight * v[d];
      }
    }
  }
}

// ---------------------------------------------------------------------------------------------
// SwiGLU (Shazeer 2020): out = silu(gate) * up, silu(g) = g * sigmoid(g).

template <typename T>
inline T sigmoid(T x) {
  return T(1) / (T(1) + vector_exp(-x));
}

template <typename T>
void swiglu_forward(T* out, const T* gate_up, int64_t N, int64_t F) {
  GUM_PARALLEL_FOR
  for (int64_t n = 0; n < N; ++n) {
    const T* gate = gate_up + n * 2 * F;
    const T* up = gate + F;
    T* o = out + n * F;
    GUM_SIMD
    for (int64_t f = 0; f < F; ++f) o[f] = gate[f] * sigmoid(gate[f]) * up[f];
  }
}

// d silu(g)/dg = sig * (1 + g * (1 - sig)).
template <typename T>
void swiglu_backward(T* dgate_up, const T* dout, const T* gate_up, int64_t N, int64_t F) {
  GUM_PARALLEL_FOR
  for (int64_t n = 0; n < N; ++n) {
    const T* gate = gate_up + n * 2 * F;
    const T* up = gate + F;
    const T* go = dout + n * F;
    T* dgate = dgate_up + n * 2 * F;
    T* dup = dgate + F;
    GUM_SIMD
    for (int64_t f = 0; f < F; ++f) {
      const T g = gate[f], sig = sigmoid(g);
      dgate[f] = go[f] * up[f] * sig * (T(1) + g * (T(1) - sig));
      dup[f] = go[f] * g * sig;
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Cross-entropy over the vocabulary, ignoring rows with target < 0. One row's log-sum-exp takes
// two vectorised passes (max, then the sum of exp(x - max) accumulated in double per lane).

template <typename T>
T row_max(const T* row, int64_t V) {
  T max_logit = row[0];
  GUM_SIMD_MAX(max_logit)
  for (int64_t i = 0; i < V; ++i) max_logit = row[i] > max_logit ? row[i] : max_logit;
  return max_logit;
}

template <typename T>
void cross_entropy_forward(T* losses, const T* logits, const int32_t* targets, int64_t N, int64_t V) {
  GUM_PARALLEL_FOR
  for (int64_t n = 0; n < N; ++n) {
    if (targets[n] < 0) {
      losses[n] = 0;
      continue;
    }
    const T* row = logits + n * V;
    const T max_logit = row_max(row, V);
    double denom = 0.0;
    GUM_SIMD_SUM(denom)
    for (int64_t i = 0; i < V; ++i) denom += double(vector_exp(row[i] - max_logit));
    losses[n] = static_cast<T>(std::log(denom) + double(max_logit) - double(row[targets[n]]));
  }
}

// dlogits may alias logits: the max pass reads the row before anything is written, and the exp
// pass reads each element just before it writes it.
template <typename T>
void cross_entropy_backward(T* dlogits, const T* logits, const int32_t* targets, int64_t N, int64_t V, double scale) {
  GUM_PARALLEL_FOR
  for (int64_t n = 0; n < N; ++n) {
    const T* row = logits + n * V;
    T* drow = dlogits + n * V;
    if (targets[n] < 0) {
      std::fill(drow, drow + V, T(0));
      continue;
    }
    const T max_logit = row_max(row, V);
    double denom = 0.0;
    GUM_SIMD_SUM(denom)
    for (int64_t i = 0; i < V; ++i) {
      drow[i] = vector_exp(row[i] - max_logit);
      denom += double(drow[i]);
    }
    const T factor = static_cast<T>(scale / denom);
    GUM_SIMD
    for (int64_t i = 0; i < V; ++i) drow[i] *= factor;
    drow[targets[n]] -= static_cast<T>(scale);
  }
}

// ---------------------------------------------------------------------------------------------
// Adam (Kingma & Ba 2015, Algorithm 1) moments with bias correction; AdamW's decoupled weight
// decay (Loshchilov & Hutter 2019, Algorithm 2 line 12) is applied by adamw_update.

struct AdamCoefficients {
  double beta1, beta2, eps, bias1, bias2;  // bias_k = 1 - beta_k^step
};

// Updates m and v in place and returns mhat / (sqrt(vhat) + eps) for one element.
template <typename T>
inline T adam_moments_step(T g, T& m, T& v, const AdamCoefficients& k) {
  m = static_cast<T>(k.beta1 * m + (1.0 - k.beta1) * g);
  v = static_cast<T>(k.beta2 * v + (1.0 - k.beta2) * double(g) * double(g));
  const double mhat = m / k.bias1, vhat = v / k.bias2;
  return static_cast<T>(mhat / (std::sqrt(vhat) + k.eps));
}

template <typename T>
void adam_direction(T* direction, const T* grad, T* m, T* v, int64_t n, const AdamCoefficients& k) {
  GUM_PARALLEL_FOR_SIMD
  for (int64_t i = 0; i < n; ++i) direction[i] = adam_moments_step(grad[i], m[i], v[i], k);
}

template <typename T>
void adamw_update(T* param, const T* grad, T* m, T* v, int64_t n, const AdamCoefficients& k, double lr,
                  double weight_decay, double update_scale) {
  GUM_PARALLEL_FOR_SIMD
  for (int64_t i = 0; i < n; ++i) {
    const T direction = adam_moments_step(grad[i], m[i], v[i], k);
    param[i] = static_cast<T>(param[i] - lr * (update_scale * direction + weight_decay * param[i]));
  }
}

}  // namespace gum::cpu

namespace gum::cpu {
// LAPACK-based factorisations (blas.cpp), float only, with the sign conventions of backend.h.
// Thin SVD of a [m,n]: u [m,k], s [k] descending, vt [k,n], k = min(m,n).
void svd_thin(float* u, float* s, float* vt, const float* a, int64_t m, int64_t n);
// Orthonormal q [m,k] from the thin QR of a [m,k] (m >= k), R with a non-negative diagonal.
void qr_orthonormal(float* q, const float* a, int64_t m, int64_t k);
}  // namespace gum::cpu
