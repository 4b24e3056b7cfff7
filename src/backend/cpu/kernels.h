#pragma once
// The CPU reference kernels, templated on the floating type so that tests can run the very
// same code in double precision (finite differences) while CpuBackend runs it in float.
// Raw pointers, row-major, contiguous; shapes follow include/gum/backend/backend.h.
// Parallel loops only split work whose outputs are disjoint, so results never depend on
// the number of threads (no racy or order-dependent accumulation).
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

// OpenMP when the including target builds with it (the backend); serial otherwise (tests that
// run the double instantiations).
#ifdef _OPENMP
#define GUM_PARALLEL_FOR _Pragma("omp parallel for schedule(static)")
#define GUM_PARALLEL_FOR_2D _Pragma("omp parallel for collapse(2) schedule(static)")
#else
#define GUM_PARALLEL_FOR
#define GUM_PARALLEL_FOR_2D
#endif

namespace gum::cpu {

// Row-major C[M,N] = alpha * op(A) op(B) + beta * C through BLAS (defined in blas.cpp).
// A is [M,K] ([K,M] when trans_a), B is [K,N] ([N,K] when trans_b).
void gemm_rowmajor(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha, const float* a,
                   const float* b, float beta, float* c);
void gemm_rowmajor(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, double alpha, const double* a,
                   const double* b, double beta, double* c);

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
    for (int64_t c = 0; c < C; ++c) ms += double(xr[c]) * double(xr[c]);
    const T r = static_cast<T>(1.0 / std::sqrt(ms / double(C) + eps));
    rstd[n] = static_cast<R>(r);
    T* yr = out + n * C;
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
    for (int64_t c = 0; c < C; ++c) dot += double(gr[c]) * double(weight[c]) * double(xr[c]);
    const double coef = r * r * r * dot / double(C);
    T* dxr = dx + n * C;
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

template <typename T>
void attention_forward(T* out, T* probs, const T* qkv, const int32_t* doc_start, const AttentionDims& s) {
  const int64_t W = s.width(), group = s.H / s.KV;
  const T scale = static_cast<T>(1.0 / std::sqrt(double(s.D)));
  GUM_PARALLEL_FOR_2D
  for (int64_t b = 0; b < s.B; ++b) {
    for (int64_t h = 0; h < s.H; ++h) {
      const int64_t kv = h / group;
      for (int64_t t = 0; t < s.T; ++t) {
        const int64_t row = b * s.T + t;
        const T* q = qkv + row * W + h * s.D;
        T* p = probs + ((b * s.H + h) * s.T + t) * s.T;
        std::fill(p, p + s.T, T(0));
        const int64_t start = attention_window_start(doc_start, row);
        T max_score = -INFINITY;
        for (int64_t u = start; u <= t; ++u) {
          const T* k = qkv + (b * s.T + u) * W + (s.H + kv) * s.D;
          T dot = 0;
          for (int64_t d = 0; d < s.D; ++d) dot += q[d] * k[d];
          p[u] = dot * scale;
          max_score = std::max(max_score, p[u]);
        }
        T denom = 0;
        for (int64_t u = start; u <= t; ++u) {
          p[u] = std::exp(p[u] - max_score);
          denom += p[u];
        }
        const T inv = T(1) / denom;
        T* o = out + row * (s.H * s.D) + h * s.D;
        std::fill(o, o + s.D, T(0));
        for (int64_t u = start; u <= t; ++u) {
          p[u] *= inv;
          const T* v = qkv + (b * s.T + u) * W + (s.H + s.KV + kv) * s.D;
          for (int64_t d = 0; d < s.D; ++d) o[d] += p[u] * v[d];
        }
      }
    }
  }
}

// dqkv is overwritten. Parallel over (batch, kv head): each task owns the dk/dv of its kv head
// and the dq of the query heads that read it, so no two threads write the same element.
template <typename T>
void attention_backward(T* dqkv, const T* dout, const T* probs, const T* qkv, const int32_t* doc_start,
                        const AttentionDims& s) {
  const int64_t W = s.width(), group = s.H / s.KV;
  const T scale = static_cast<T>(1.0 / std::sqrt(double(s.D)));
  GUM_PARALLEL_FOR_2D
  for (int64_t b = 0; b < s.B; ++b) {
    for (int64_t kv = 0; kv < s.KV; ++kv) {
      std::vector<T> dscore(static_cast<size_t>(s.T));
      for (int64_t t = 0; t < s.T; ++t) {
        T* row = dqkv + (b * s.T + t) * W;
        std::fill(row + (s.H + kv) * s.D, row + (s.H + kv + 1) * s.D, T(0));
        std::fill(row + (s.H + s.KV + kv) * s.D, row + (s.H + s.KV + kv + 1) * s.D, T(0));
        for (int64_t h = kv * group; h < (kv + 1) * group; ++h) std::fill(row + h * s.D, row + (h + 1) * s.D, T(0));
      }
      for (int64_t h = kv * group; h < (kv + 1) * group; ++h) {
        for (int64_t t = 0; t < s.T; ++t) {
          const int64_t row = b * s.T + t;
          const int64_t start = attention_window_start(doc_start, row);
          const T* p = probs + ((b * s.H + h) * s.T + t) * s.T;
          const T* go = dout + row * (s.H * s.D) + h * s.D;
          const T* q = qkv + row * W + h * s.D;
          T* dq = dqkv + row * W + h * s.D;
          // dP[u] = dout_t . v_u; dV_u += P[u] dout_t; dS = P (dP - sum_u P dP) (softmax backward).
          T weighted = 0;
          for (int64_t u = start; u <= t; ++u) {
            const int64_t urow = b * s.T + u;
            const T* v = qkv + urow * W + (s.H + s.KV + kv) * s.D;
            T* dv = dqkv + urow * W + (s.H + s.KV + kv) * s.D;
            T dp = 0;
            for (int64_t d = 0; d < s.D; ++d) {
              dp += go[d] * v[d];
              dv[d] += p[u] * go[d];
            }
            dscore[u] = dp;
            weighted += p[u] * dp;
          }
          for (int64_t u = start; u <= t; ++u) {
            const int64_t urow = b * s.T + u;
            const T ds = p[u] * (dscore[u] - weighted) * scale;
            const T* k = qkv + urow * W + (s.H + kv) * s.D;
            T* dk = dqkv + urow * W + (s.H + kv) * s.D;
            for (int64_t d = 0; d < s.D; ++d) {
              dq[d] += ds * k[d];
              dk[d] += ds * q[d];
            }
          }
        }
      }
    }
  }
}

// ---------------------------------------------------------------------------------------------
// SwiGLU (Shazeer 2020): out = silu(gate) * up, silu(g) = g * sigmoid(g).

template <typename T>
void swiglu_forward(T* out, const T* gate_up, int64_t N, int64_t F) {
  GUM_PARALLEL_FOR
  for (int64_t n = 0; n < N; ++n) {
    const T* gate = gate_up + n * 2 * F;
    const T* up = gate + F;
    for (int64_t f = 0; f < F; ++f) {
      const T sig = T(1) / (T(1) + std::exp(-gate[f]));
      out[n * F + f] = gate[f] * sig * up[f];
    }
  }
}

// d silu(g)/dg = sig * (1 + g * (1 - sig)).
template <typename T>
void swiglu_backward(T* dgate_up, const T* dout, const T* gate_up, int64_t N, int64_t F) {
  GUM_PARALLEL_FOR
  for (int64_t n = 0; n < N; ++n) {
    const T* gate = gate_up + n * 2 * F;
    const T* up = gate + F;
    T* dgate = dgate_up + n * 2 * F;
    T* dup = dgate + F;
    for (int64_t f = 0; f < F; ++f) {
      const T g = gate[f], u = up[f], go = dout[n * F + f];
      const T sig = T(1) / (T(1) + std::exp(-g));
      dgate[f] = go * u * sig * (T(1) + g * (T(1) - sig));
      dup[f] = go * g * sig;
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Cross-entropy over the vocabulary, ignoring rows with target < 0.

template <typename T>
void cross_entropy_forward(T* losses, const T* logits, const int32_t* targets, int64_t N, int64_t V) {
  GUM_PARALLEL_FOR
  for (int64_t n = 0; n < N; ++n) {
    if (targets[n] < 0) {
      losses[n] = 0;
      continue;
    }
    const T* row = logits + n * V;
    const double max_logit = double(*std::max_element(row, row + V));
    double denom = 0.0;
    for (int64_t i = 0; i < V; ++i) denom += std::exp(double(row[i]) - max_logit);
    losses[n] = static_cast<T>(std::log(denom) + max_logit - double(row[targets[n]]));
  }
}

// dlogits may alias logits: each element is read before it is written.
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
    const double max_logit = double(*std::max_element(row, row + V));
    double denom = 0.0;
    for (int64_t i = 0; i < V; ++i) denom += std::exp(double(row[i]) - max_logit);
    const double inv = 1.0 / denom;
    for (int64_t i = 0; i < V; ++i) {
      const double prob = std::exp(double(row[i]) - max_logit) * inv;
      drow[i] = static_cast<T>(scale * (prob - (i == targets[n] ? 1.0 : 0.0)));
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Adam (Kingma & Ba 2015, Algorithm 1) moments with bias correction; AdamW's decoupled weight
// decay (Loshchilov & Hutter 2019, Algorithm 2 line 12) is applied by adamw_update.

struct AdamCoefficients {
  double beta1, beta2, eps, bias1, bias2;  // bias_k = 1 - beta_k^step
};

inline AdamCoefficients adam_coefficients(double beta1, double beta2, double eps, int64_t step) {
  return {beta1, beta2, eps, 1.0 - std::pow(beta1, double(step)), 1.0 - std::pow(beta2, double(step))};
}

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
  GUM_PARALLEL_FOR
  for (int64_t i = 0; i < n; ++i) direction[i] = adam_moments_step(grad[i], m[i], v[i], k);
}

template <typename T>
void adamw_update(T* param, const T* grad, T* m, T* v, int64_t n, const AdamCoefficients& k, double lr,
                  double weight_decay, double update_scale) {
  GUM_PARALLEL_FOR
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
