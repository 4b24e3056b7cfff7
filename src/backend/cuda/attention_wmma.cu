// Tensor-core flash attention (training.attention=flash_wmma): FlashAttention-2's tiling
// (Dao 2023) with the WMMA API. A block of two warps takes a tile of 32 query rows (forward, dQ)
// or 32 key rows (dK/dV) of one head; each warp owns 16 of them. Tiles of the other side stream
// through shared memory as bf16, the products run on tensor cores (bf16 operands, fp32
// accumulation), the softmax in fp32 with the online rescaling of the forward pass. The head is
// zero-padded to Dp = 16, 32, 64 or 128 (kChunks of 16); larger heads run the scalar kernels.
//
// Precision: q, k, v, dO, the probabilities P and dS are rounded to bf16 (8 significant bits)
// as operands; every sum is fp32. The log-sum-exp and delta = dO . O stay fp32, so aux has the
// layout and meaning of the scalar flash kernel's.
#include <cuda_bf16.h>
#include <mma.h>

#include <climits>
#include <type_traits>

#include "attention_common.cuh"

namespace gum::cuda {

namespace {

using namespace nvcuda;
using bf16 = __nv_bfloat16;

constexpr int kTile = 32;  // rows of a query or key tile
constexpr int kWarps = kTile / 16;
constexpr int kBlockThreads = 32 * kWarps;
// Leading dimensions in shared memory: bf16 rows padded by 8 elements (16 bytes, spreading rows
// over the banks) and fp32 score rows by 4 keep every 16-row fragment 256-bit aligned, as WMMA needs.
constexpr int kScoreLd = kTile + 4, kProbLd = kTile + 8;

using FragA = wmma::fragment<wmma::matrix_a, 16, 16, 16, bf16, wmma::row_major>;
using FragBRow = wmma::fragment<wmma::matrix_b, 16, 16, 16, bf16, wmma::row_major>;
using FragBCol = wmma::fragment<wmma::matrix_b, 16, 16, 16, bf16, wmma::col_major>;
using FragAcc = wmma::fragment<wmma::accumulator, 16, 16, 16, float>;

template <int kChunks>
struct Head {
  static constexpr int kDp = 16 * kChunks, kLd = kDp + 8;
};

// dst [kTile, kLd] (bf16) = the first `rows` rows of a head, element d of row r at
// src[r * stride + d]; padding rows and columns are 0 so they add nothing to any product.
template <int kChunks>
__device__ void load_tile(bf16* dst, const float* src, int64_t stride, int rows, int D) {
  constexpr int kDp = Head<kChunks>::kDp, kLd = Head<kChunks>::kLd;
  for (int i = threadIdx.x; i < kTile * kDp; i += kBlockThreads) {
    const int r = i / kDp, d = i % kDp;
    dst[r * kLd + d] = __float2bfloat16(r < rows && d < D ? src[r * stride + d] : 0.0f);
  }
}

// The warp's 16 rows of a staged tile as A operands, one fragment per 16 head elements.
template <int kChunks>
__device__ void load_rows(FragA (&frag)[kChunks], const bf16* tile, int warp) {
#pragma unroll
  for (int c = 0; c < kChunks; ++c)
    wmma::load_matrix_sync(frag[c], tile + warp * 16 * Head<kChunks>::kLd + c * 16, Head<kChunks>::kLd);
}

// scores [16, kTile] (fp32, ld kScoreLd) = rows (16 x Dp, A fragments) times the transpose of
// the kTile rows of `tile`.
template <int kChunks>
__device__ void rows_times_tile_t(float* scores, const FragA (&rows)[kChunks], const bf16* tile) {
#pragma unroll
  for (int j = 0; j < kTile / 16; ++j) {
    FragAcc acc;
    wmma::fill_fragment(acc, 0.0f);
#pragma unroll
    for (int c = 0; c < kChunks; ++c) {
      FragBCol b;
      wmma::load_matrix_sync(b, tile + j * 16 * Head<kChunks>::kLd + c * 16, Head<kChunks>::kLd);
      wmma::mma_sync(acc, rows[c], b, acc);
    }
    wmma::store_matrix_sync(scores + j * 16, acc, kScoreLd, wmma::mem_row_major);
  }
}

// acc[c] += weights [16, kTile] (bf16, ld kProbLd) times the tile's kTile rows (chunk c).
template <int kChunks>
__device__ void accumulate_weighted(FragAcc (&acc)[kChunks], const bf16* weights, const bf16* tile) {
#pragma unroll
  for (int j = 0; j < kTile / 16; ++j) {
    FragA w;
    wmma::load_matrix_sync(w, weights + j * 16, kProbLd);
#pragma unroll
    for (int c = 0; c < kChunks; ++c) {
      FragBRow b;
      wmma::load_matrix_sync(b, tile + j * 16 * Head<kChunks>::kLd + c * 16, Head<kChunks>::kLd);
      wmma::mma_sync(acc[c], w, b, acc[c]);
    }
  }
}

// Writes a warp's 16 x Dp accumulators times `scale` to rows [0, rows) of dst (row r at
// dst + r * stride, D elements), staged through `staging` [16, Dp]: global rows have no
// alignment WMMA could store to.
template <int kChunks>
__device__ void write_rows(float* dst, int64_t stride, int rows, int D, const FragAcc (&acc)[kChunks], float* staging,
                           float scale) {
  constexpr int kDp = Head<kChunks>::kDp;
#pragma unroll
  for (int c = 0; c < kChunks; ++c) wmma::store_matrix_sync(staging + c * 16, acc[c], kDp, wmma::mem_row_major);
  __syncwarp();
  const int lane = threadIdx.x & 31;
  for (int i = lane; i < 16 * kDp; i += 32) {
    const int r = i / kDp, d = i % kDp;
    if (r < rows && d < D) dst[r * stride + d] = staging[i] * scale;
  }
  __syncwarp();
}

// The lane pair (2r, 2r + 1) of a warp works on the warp's row r; lane 2r + half on the 16
// columns [16 half, 16 half + 16) of a [16, kTile] score tile.
struct PairLane {
  int row, half;
};
__device__ __forceinline__ PairLane pair_lane() {
  const int lane = threadIdx.x & 31;
  return {lane / 2, lane % 2};
}
__device__ __forceinline__ float pair_max(float v) { return fmaxf(v, __shfl_xor_sync(0xffffffffu, v, 1)); }
__device__ __forceinline__ float pair_sum(float v) { return v + __shfl_xor_sync(0xffffffffu, v, 1); }

// Window starts of a tile's query rows [q0, q0 + kTile); rows past T get INT_MAX (no key).
__device__ __forceinline__ int tile_row_start(const int32_t* doc_start, int64_t b, int T, int t, int* status) {
  if (t >= T) return INT_MAX;
  return status ? window_start(doc_start, b, T, t, status) : clamped_window_start(doc_start, b, T, t);
}

// The smallest window start of a tile's rows: the first key any of them attends to.
__device__ __forceinline__ int tile_first_key(const int* starts, int rows) {
  int first = INT_MAX;
  for (int r = 0; r < rows; ++r) first = min(first, starts[r]);
  return first;
}

// 256-bit aligned: every fragment pointer into it must be.
template <int kChunks>
struct alignas(32) ForwardShared {
  bf16 k[kTile * Head<kChunks>::kLd];  // first the query tile, then each key tile
  bf16 v[kTile * Head<kChunks>::kLd];
  float o[kTile * Head<kChunks>::kDp];  // the unnormalised output rows
  float s[kTile * kScoreLd];
  bf16 p[kTile * kProbLd];
  int start[kTile];
};

// Block (b * H + h, query tile): out rows and lse [B, H, T] as flash_forward_kernel's.
template <int kChunks>
__global__ void __launch_bounds__(kBlockThreads)
    wmma_flash_forward_kernel(float* out, float* lse, const float* qkv, const int32_t* doc_start, FlashDims s,
                              int* status) {
  constexpr int kDp = Head<kChunks>::kDp;
  __shared__ ForwardShared<kChunks> sh;
  const int h = static_cast<int>(blockIdx.x % s.H), kv = h / (s.H / s.KV), warp = threadIdx.x >> 5;
  const int64_t b = blockIdx.x / s.H, W = s.width();
  const int q0 = static_cast<int>(blockIdx.y) * kTile, rows = min(kTile, s.T - q0);
  const float* sequence = qkv + b * s.T * W;
  if (threadIdx.x < kTile) sh.start[threadIdx.x] = tile_row_start(doc_start, b, s.T, q0 + threadIdx.x, status);
  load_tile<kChunks>(sh.k, sequence + int64_t(q0) * W + int64_t(h) * s.D, W, rows, s.D);
  for (int i = threadIdx.x; i < kTile * kDp; i += kBlockThreads) sh.o[i] = 0.0f;
  __syncthreads();
  FragA q[kChunks];
  load_rows<kChunks>(q, sh.k, warp);
  const PairLane me = pair_lane();
  const int row = warp * 16 + me.row, t = q0 + row, start = sh.start[row];
  float* scores = sh.s + warp * 16 * kScoreLd;
  bf16* probs = sh.p + warp * 16 * kProbLd;
  float row_max = -INFINITY, row_sum = 0.0f;  // over the keys seen so far (scaled scores)
  for (int k0 = tile_first_key(sh.start, rows) / kTile * kTile; k0 < q0 + rows; k0 += kTile) {
    const int keys = min(kTile, s.T - k0);
    __syncthreads();  // the previous tile (at first the query tile) is no longer read
    load_tile<kChunks>(sh.k, sequence + int64_t(k0) * W + int64_t(s.H + kv) * s.D, W, keys, s.D);
    load_tile<kChunks>(sh.v, sequence + int64_t(k0) * W + int64_t(s.H + s.KV + kv) * s.D, W, keys, s.D);
    __syncthreads();
    rows_times_tile_t<kChunks>(scores, q, sh.k);
    __syncwarp();
    // Online softmax over this tile's keys u in [start, t]: masked scores are -inf.
    float* my_scores = scores + me.row * kScoreLd + 16 * me.half;
    float tile_max = -INFINITY;
    for (int i = 0; i < 16; ++i) {
      const int u = k0 + 16 * me.half + i;
      my_scores[i] = (u >= start && u <= t) ? my_scores[i] * s.scale : -INFINITY;
      tile_max = fmaxf(tile_max, my_scores[i]);
    }
    const float new_max = fmaxf(row_max, pair_max(tile_max));
    // A row that has seen no key yet keeps max -inf; exp against 0 then gives 0, never inf - inf.
    const float base = new_max == -INFINITY ? 0.0f : new_max;
    const float correction = expf(row_max - base);
    float tile_sum = 0.0f;
    for (int i = 0; i < 16; ++i) {
      const float p = expf(my_scores[i] - base);
      probs[me.row * kProbLd + 16 * me.half + i] = __float2bfloat16(p);
      tile_sum += p;
    }
    row_sum = row_sum * correction + pair_sum(tile_sum);
    row_max = new_max;
    for (int d = me.half * kDp / 2; d < (me.half + 1) * kDp / 2; ++d) sh.o[row * kDp + d] *= correction;
    __syncwarp();
    FragAcc acc[kChunks];
#pragma unroll
    for (int c = 0; c < kChunks; ++c)
      wmma::load_matrix_sync(acc[c], sh.o + warp * 16 * kDp + c * 16, kDp, wmma::mem_row_major);
    accumulate_weighted<kChunks>(acc, probs, sh.v);
#pragma unroll
    for (int c = 0; c < kChunks; ++c)
      wmma::store_matrix_sync(sh.o + warp * 16 * kDp + c * 16, acc[c], kDp, wmma::mem_row_major);
  }
  __syncwarp();
  if (t >= s.T) return;
  const float inv_sum = 1.0f / row_sum;
  float* out_row = out + (b * s.T + t) * int64_t(s.H) * s.D + int64_t(h) * s.D;
  for (int d = me.half; d < s.D; d += 2) out_row[d] = sh.o[row * kDp + d] * inv_sum;
  if (me.half == 0) lse[(b * s.H + h) * s.T + t] = row_max + logf(row_sum);
}

template <int kChunks>
struct alignas(32) BackwardShared {
  union {
    struct {
      bf16 a[kTile * Head<kChunks>::kLd];  // dQ: the key tile (first Q); dK/dV: the query tile (first K)
      bf16 b[kTile * Head<kChunks>::kLd];  // dQ: the value tile (first dO); dK/dV: the dO tile (first V)
    } tiles;
    float staging[kTile * Head<kChunks>::kDp];  // the results on their way out
  };
  float s[kTile * kScoreLd];
  float dp[kTile * kScoreLd];
  bf16 p[kTile * kProbLd];
  bf16 ds[kTile * kProbLd];
  int start[kTile];
  float lse[kTile];
  float delta[kTile];
};

// Block (b * H + h, query tile): dQ = scale dS K with P = exp(scale q.k - lse), dS = P (dP - delta),
// dP = dO V^T; delta = dO . O (fp32) is written for the dK/dV kernel.
template <int kChunks>
__global__ void __launch_bounds__(kBlockThreads)
    wmma_flash_backward_dq_kernel(float* dqkv, float* delta_out, const float* dout, const float* out, const float* lse,
                                  const float* qkv, const int32_t* doc_start, FlashDims s) {
  __shared__ BackwardShared<kChunks> sh;
  const int h = static_cast<int>(blockIdx.x % s.H), kv = h / (s.H / s.KV), warp = threadIdx.x >> 5;
  const int64_t b = blockIdx.x / s.H, W = s.width(), HD = int64_t(s.H) * s.D;
  const int q0 = static_cast<int>(blockIdx.y) * kTile, rows = min(kTile, s.T - q0);
  const float* sequence = qkv + b * s.T * W;
  if (threadIdx.x < kTile) {
    const int t = q0 + threadIdx.x;
    sh.start[threadIdx.x] = tile_row_start(doc_start, b, s.T, t, nullptr);
    float delta = 0.0f;
    if (t < s.T) {
      const float* go = dout + (b * s.T + t) * HD + int64_t(h) * s.D;
      const float* o = out + (b * s.T + t) * HD + int64_t(h) * s.D;
      for (int d = 0; d < s.D; ++d) delta += go[d] * o[d];
      const int64_t stat = (b * s.H + h) * s.T + t;
      delta_out[stat] = delta;
      sh.lse[threadIdx.x] = lse[stat];
    }
    sh.delta[threadIdx.x] = delta;
  }
  load_tile<kChunks>(sh.tiles.a, sequence + int64_t(q0) * W + int64_t(h) * s.D, W, rows, s.D);
  load_tile<kChunks>(sh.tiles.b, dout + (b * s.T + q0) * HD + int64_t(h) * s.D, HD, rows, s.D);
  __syncthreads();
  FragA q[kChunks], go[kChunks];
  load_rows<kChunks>(q, sh.tiles.a, warp);
  load_rows<kChunks>(go, sh.tiles.b, warp);
  FragAcc dq[kChunks];
#pragma unroll
  for (int c = 0; c < kChunks; ++c) wmma::fill_fragment(dq[c], 0.0f);
  const PairLane me = pair_lane();
  const int row = warp * 16 + me.row, t = q0 + row, start = sh.start[row];
  float* scores = sh.s + warp * 16 * kScoreLd;
  float* dprobs = sh.dp + warp * 16 * kScoreLd;
  bf16* dscores = sh.ds + warp * 16 * kProbLd;
  for (int k0 = tile_first_key(sh.start, rows) / kTile * kTile; k0 < q0 + rows; k0 += kTile) {
    const int keys = min(kTile, s.T - k0);
    __syncthreads();
    load_tile<kChunks>(sh.tiles.a, sequence + int64_t(k0) * W + int64_t(s.H + kv) * s.D, W, keys, s.D);
    load_tile<kChunks>(sh.tiles.b, sequence + int64_t(k0) * W + int64_t(s.H + s.KV + kv) * s.D, W, keys, s.D);
    __syncthreads();
    rows_times_tile_t<kChunks>(scores, q, sh.tiles.a);
    rows_times_tile_t<kChunks>(dprobs, go, sh.tiles.b);
    __syncwarp();
    for (int i = 0; i < 16; ++i) {
      const int col = 16 * me.half + i, u = k0 + col;
      const float p = (u >= start && u <= t) ? expf(scores[me.row * kScoreLd + col] * s.scale - sh.lse[row]) : 0.0f;
      dscores[me.row * kProbLd + col] = __float2bfloat16(p * (dprobs[me.row * kScoreLd + col] - sh.delta[row]));
    }
    __syncwarp();
    accumulate_weighted<kChunks>(dq, dscores, sh.tiles.a);
  }
  __syncthreads();  // the tiles are no longer read: staging reuses them
  write_rows<kChunks>(dqkv + (b * s.T + q0 + warp * 16) * W + int64_t(h) * s.D, W, rows - warp * 16, s.D, dq,
                      sh.staging + warp * 16 * Head<kChunks>::kDp, s.scale);
}

// Block (b * KV + kv, key tile): dV = sum P^T dO and dK = scale sum dS^T Q over the query rows
// of every head of the group whose window holds the key, in a fixed order (no atomics).
template <int kChunks>
__global__ void __launch_bounds__(kBlockThreads)
    wmma_flash_backward_dkv_kernel(float* dqkv, const float* dout, const float* lse, const float* delta,
                                   const float* qkv, const int32_t* doc_start, FlashDims s) {
  __shared__ BackwardShared<kChunks> sh;
  const int kv = static_cast<int>(blockIdx.x % s.KV), group = s.H / s.KV, warp = threadIdx.x >> 5;
  const int64_t b = blockIdx.x / s.KV, W = s.width(), HD = int64_t(s.H) * s.D;
  const int k0 = static_cast<int>(blockIdx.y) * kTile, keys = min(kTile, s.T - k0);
  const float* sequence = qkv + b * s.T * W;
  load_tile<kChunks>(sh.tiles.a, sequence + int64_t(k0) * W + int64_t(s.H + kv) * s.D, W, keys, s.D);
  load_tile<kChunks>(sh.tiles.b, sequence + int64_t(k0) * W + int64_t(s.H + s.KV + kv) * s.D, W, keys, s.D);
  __syncthreads();
  FragA k[kChunks], v[kChunks];
  load_rows<kChunks>(k, sh.tiles.a, warp);
  load_rows<kChunks>(v, sh.tiles.b, warp);
  FragAcc dk[kChunks], dv[kChunks];
#pragma unroll
  for (int c = 0; c < kChunks; ++c) {
    wmma::fill_fragment(dk[c], 0.0f);
    wmma::fill_fragment(dv[c], 0.0f);
  }
  const PairLane me = pair_lane();
  const int u = k0 + warp * 16 + me.row;  // this lane pair's key
  float* scores = sh.s + warp * 16 * kScoreLd;
  float* dprobs = sh.dp + warp * 16 * kScoreLd;
  bf16* probs = sh.p + warp * 16 * kProbLd;
  bf16* dscores = sh.ds + warp * 16 * kProbLd;
  for (int g = 0; g < group; ++g) {
    const int h = kv * group + g;
    for (int q0 = k0; q0 < s.T; q0 += kTile) {  // queries before the key never attend to it
      const int rows = min(kTile, s.T - q0);
      __syncthreads();
      if (threadIdx.x < kTile) {
        const int t = q0 + threadIdx.x;
        sh.start[threadIdx.x] = tile_row_start(doc_start, b, s.T, t, nullptr);
        const int64_t stat = (b * s.H + h) * s.T + t;
        sh.lse[threadIdx.x] = t < s.T ? lse[stat] : 0.0f;
        sh.delta[threadIdx.x] = t < s.T ? delta[stat] : 0.0f;
      }
      load_tile<kChunks>(sh.tiles.a, sequence + int64_t(q0) * W + int64_t(h) * s.D, W, rows, s.D);
      load_tile<kChunks>(sh.tiles.b, dout + (b * s.T + q0) * HD + int64_t(h) * s.D, HD, rows, s.D);
      __syncthreads();
      // Packed documents: a query tile whose windows all start after the key tile sees none of it.
      if (tile_first_key(sh.start, rows) >= k0 + keys) continue;
      rows_times_tile_t<kChunks>(scores, k, sh.tiles.a);  // S^T: keys x queries
      rows_times_tile_t<kChunks>(dprobs, v, sh.tiles.b);  // dP^T
      __syncwarp();
      for (int i = 0; i < 16; ++i) {
        const int col = 16 * me.half + i, t = q0 + col;
        const bool attends = u < s.T && t < s.T && sh.start[col] <= u && u <= t;
        const float p = attends ? expf(scores[me.row * kScoreLd + col] * s.scale - sh.lse[col]) : 0.0f;
        probs[me.row * kProbLd + col] = __float2bfloat16(p);
        dscores[me.row * kProbLd + col] = __float2bfloat16(p * (dprobs[me.row * kScoreLd + col] - sh.delta[col]));
      }
      __syncwarp();
      accumulate_weighted<kChunks>(dv, probs, sh.tiles.b);
      accumulate_weighted<kChunks>(dk, dscores, sh.tiles.a);
    }
  }
  __syncthreads();
  float* staging = sh.staging + warp * 16 * Head<kChunks>::kDp;
  float* key_rows = dqkv + (b * s.T + k0 + warp * 16) * W;
  write_rows<kChunks>(key_rows + int64_t(s.H + kv) * s.D, W, keys - warp * 16, s.D, dk, staging, s.scale);
  write_rows<kChunks>(key_rows + int64_t(s.H + s.KV + kv) * s.D, W, keys - warp * 16, s.D, dv, staging, 1.0f);
}

// Calls f(std::integral_constant<int, kChunks>) for the smallest padded head that holds D.
template <typename F>
void with_head_chunks(int D, F&& f) {
  if (D <= 16)
    f(std::integral_constant<int, 1>{});
  else if (D <= 32)
    f(std::integral_constant<int, 2>{});
  else if (D <= 64)
    f(std::integral_constant<int, 4>{});
  else
    f(std::integral_constant<int, 8>{});
}

dim3 tile_grid(int64_t heads, int T) {
  const int64_t tiles = (int64_t(T) + kTile - 1) / kTile;
  if (heads > 0x7fffffff || tiles > 65535)
    runtime_error("flash_wmma attention: ", heads, " heads x ", tiles, " tiles exceed the grid limits");
  return dim3(static_cast<unsigned>(heads), static_cast<unsigned>(tiles));
}

}  // namespace

void launch_wmma_flash_forward(float* out, float* lse, const float* qkv, const int32_t* doc_start, const FlashDims& s,
                               int* status, cudaStream_t stream) {
  const dim3 grid = tile_grid(int64_t(s.B) * s.H, s.T);
  with_head_chunks(s.D, [&](auto chunks) {
    auto* wmma_forward_kernel = wmma_flash_forward_kernel<decltype(chunks)::value>;
    wmma_forward_kernel<<<grid, kBlockThreads, 0, stream>>>(out, lse, qkv, doc_start, s, status);
  });
  GUM_CUDA_CHECK_LAUNCH("wmma_flash_forward_kernel");
}

void launch_wmma_flash_backward(float* dqkv, float* delta, const float* dout, const float* out, const float* lse,
                                const float* qkv, const int32_t* doc_start, const FlashDims& s, cudaStream_t stream) {
  with_head_chunks(s.D, [&](auto chunks) {
    auto* wmma_dq_kernel = wmma_flash_backward_dq_kernel<decltype(chunks)::value>;
    wmma_dq_kernel<<<tile_grid(int64_t(s.B) * s.H, s.T), kBlockThreads, 0, stream>>>(dqkv, delta, dout, out, lse, qkv,
                                                                                     doc_start, s);
    GUM_CUDA_CHECK_LAUNCH("wmma_flash_backward_dq_kernel");
    auto* wmma_dkv_kernel = wmma_flash_backward_dkv_kernel<decltype(chunks)::value>;
    wmma_dkv_kernel<<<tile_grid(int64_t(s.B) * s.KV, s.T), kBlockThreads, 0, stream>>>(dqkv, dout, lse, delta, qkv,
                                                                                       doc_start, s);
    GUM_CUDA_CHECK_LAUNCH("wmma_flash_backward_dkv_kernel");
  });
}

}  // namespace gum::cuda
