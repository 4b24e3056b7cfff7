#pragma once
// Device helpers shared by the kernels: F32/BF16 loads and stores, warp and block reductions,
// launch geometry. Light on purpose (no cuda_bf16.h, no library headers): nvcc is slow here.
#include <cuda_runtime.h>

#include <cmath>
#include <cstdint>
#include <initializer_list>

#include "cuda_check.h"
#include "op_args.h"

namespace gum::cuda {

constexpr int kThreads = 256;
constexpr unsigned kFullMask = 0xffffffffu;

// Grid for a grid-stride loop over n elements (at least one block, capped: the loop covers the rest).
inline unsigned grid_for(int64_t n, int threads = kThreads) {
  int64_t blocks = (n + threads - 1) / threads;
  if (blocks < 1) blocks = 1;
  if (blocks > (int64_t(1) << 20)) blocks = int64_t(1) << 20;
  return static_cast<unsigned>(blocks);
}

// Grid of one block per row (rmsnorm, cross-entropy): the row count must fit the grid limit.
inline unsigned row_grid(int64_t rows, const char* op) {
  if (rows > 0x7fffffff) runtime_error(op, ": ", rows, " rows exceed the grid limit");
  return static_cast<unsigned>(rows);
}

#define GUM_GRID_STRIDE_LOOP(i, n) \
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < (n); i += int64_t(gridDim.x) * blockDim.x)

// Same rounding as gum::f32_to_bf16 (round to nearest even, NaN stays NaN): the CPU and the GPU
// produce identical bf16 bits from identical floats.
__device__ __forceinline__ uint16_t float_to_bf16_bits(float f) {
  const uint32_t bits = __float_as_uint(f);
  if ((bits & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((bits >> 16) | 0x40);
  const uint32_t rounding = 0x7fffu + ((bits >> 16) & 1u);
  return static_cast<uint16_t>((bits + rounding) >> 16);
}

__device__ __forceinline__ float load(const FloatPtr& p, int64_t i) {
  if (p.bf16) return __uint_as_float(static_cast<uint32_t>(static_cast<const uint16_t*>(p.data)[i]) << 16);
  return static_cast<const float*>(p.data)[i];
}

__device__ __forceinline__ void store(const FloatPtr& p, int64_t i, float v) {
  if (p.bf16)
    static_cast<uint16_t*>(p.data)[i] = float_to_bf16_bits(v);
  else
    static_cast<float*>(p.data)[i] = v;
}

// ---- dtype as a template parameter, 128-bit accesses ----
// The memory-bound kernels take their storage type T (float, or Bf16: the bits of a bfloat16) as a
// template parameter, so no thread branches on the dtype, and move V consecutive elements per
// access: Vec<T, V> is 16 bytes for V = kPackWidth<T> (float4, bf16x8), one 128-bit load or store.
// The host picks V = kPackWidth<T> when every pointer is 16-byte aligned and the vectorised extent
// (a row, a head half) divides into packs, else V = 1 (vector_width below); a flat loop (add)
// needs only the alignment and finishes the n % V elements of its tail one per thread.
struct Bf16 {
  uint16_t bits;
};

__device__ __forceinline__ float to_float(float v) { return v; }
__device__ __forceinline__ float to_float(Bf16 v) { return __uint_as_float(static_cast<uint32_t>(v.bits) << 16); }
template <typename T>
__device__ __forceinline__ T from_float(float v);
template <>
__device__ __forceinline__ float from_float<float>(float v) {
  return v;
}
template <>
__device__ __forceinline__ Bf16 from_float<Bf16>(float v) {
  return Bf16{float_to_bf16_bits(v)};
}

template <typename T>
constexpr int kPackWidth = 16 / static_cast<int>(sizeof(T));

template <typename T, int V>
struct alignas(sizeof(T) * V < 16 ? sizeof(T) * V : 16) Vec {
  T v[V];
};

// Elements [i, i + V) of p as floats (one access; i a multiple of V and p aligned, see above).
template <int V, typename T>
__device__ __forceinline__ void load_vec(float (&out)[V], const T* p, int64_t i) {
  const Vec<T, V> packed = *reinterpret_cast<const Vec<T, V>*>(p + i);
#pragma unroll
  for (int k = 0; k < V; ++k) out[k] = to_float(packed.v[k]);
}

template <int V, typename T>
__device__ __forceinline__ void store_vec(T* p, int64_t i, const float (&in)[V]) {
  Vec<T, V> packed;
#pragma unroll
  for (int k = 0; k < V; ++k) packed.v[k] = from_float<T>(in[k]);
  *reinterpret_cast<Vec<T, V>*>(p + i) = packed;
}

// Host: whether every pointer is 16-byte aligned (a view at an odd offset is not).
inline bool aligned16(std::initializer_list<const void*> pointers) {
  for (const void* p : pointers)
    if (reinterpret_cast<uintptr_t>(p) % 16 != 0) return false;
  return true;
}

// Host: V for a kernel that packs within rows of `extent` elements: kPackWidth<T> when the
// extent is a multiple of it and the pointers are aligned, else 1 (scalar accesses).
template <typename T>
inline int vector_width(int64_t extent, std::initializer_list<const void*> pointers) {
  return extent % kPackWidth<T> == 0 && aligned16(pointers) ? kPackWidth<T> : 1;
}

// Host: calls f(T{}) with T the storage type of p (float or Bf16): the one runtime dtype branch.
template <typename F>
inline void with_dtype(const FloatPtr& p, F&& f) {
  if (p.bf16)
    f(Bf16{});
  else
    f(float{});
}

template <typename T>
__device__ __forceinline__ T warp_sum(T v) {
  for (int offset = 16; offset > 0; offset >>= 1) v += __shfl_xor_sync(kFullMask, v, offset);
  return v;
}

template <typename T>
__device__ __forceinline__ T warp_max(T v) {
  for (int offset = 16; offset > 0; offset >>= 1) v = max(v, __shfl_xor_sync(kFullMask, v, offset));
  return v;
}

// Sum over the block (blockDim.x a multiple of 32, at most 1024), returned to every thread.
// The combination order is fixed by the block shape, so results are bitwise reproducible.
// `scratch` holds 32 values in shared memory; the leading barrier makes back-to-back calls safe.
template <typename T>
__device__ T block_sum(T v, T* scratch) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
  v = warp_sum(v);
  __syncthreads();
  if (lane == 0) scratch[warp] = v;
  __syncthreads();
  if (warp == 0) {
    T total = lane < warps ? scratch[lane] : T(0);
    total = warp_sum(total);
    if (lane == 0) scratch[0] = total;
  }
  __syncthreads();
  return scratch[0];
}

// Online softmax statistics (Milakov & Gimelshein 2018, "Online normalizer calculation for
// softmax"): running max m and sum s of exp(x - m). NaN inputs make s NaN, which propagates.
// Plain aggregate (no member initialisers) so it may live in __shared__ memory; sum == 0 means empty.
struct MaxSum {
  float max;
  float sum;
};

__device__ __forceinline__ MaxSum max_sum_empty() { return MaxSum{-INFINITY, 0.0f}; }

__device__ __forceinline__ void max_sum_add(MaxSum& a, float x) {
  if (x == -INFINITY) return;  // contributes exp(-inf) = 0; skipping avoids inf - inf
  if (x > a.max) {
    a.sum = a.sum * expf(a.max - x) + 1.0f;
    a.max = x;
  } else {
    a.sum += expf(x - a.max);
  }
}

__device__ __forceinline__ MaxSum max_sum_merge(MaxSum a, MaxSum b) {
  if (b.sum == 0.0f) return a;
  if (a.sum == 0.0f) return b;
  const float m = fmaxf(a.max, b.max);
  return MaxSum{m, a.sum * expf(a.max - m) + b.sum * expf(b.max - m)};
}

__device__ __forceinline__ MaxSum warp_max_sum(MaxSum v) {
  for (int offset = 16; offset > 0; offset >>= 1) {
    MaxSum other{__shfl_xor_sync(kFullMask, v.max, offset), __shfl_xor_sync(kFullMask, v.sum, offset)};
    v = max_sum_merge(v, other);
  }
  return v;
}

// Block-wide MaxSum (same shape rules as block_sum); scratch holds 32 entries.
__device__ inline MaxSum block_max_sum(MaxSum v, MaxSum* scratch) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
  v = warp_max_sum(v);
  __syncthreads();
  if (lane == 0) scratch[warp] = v;
  __syncthreads();
  if (warp == 0) {
    MaxSum total = lane < warps ? scratch[lane] : max_sum_empty();
    total = warp_max_sum(total);
    if (lane == 0) scratch[0] = total;
  }
  __syncthreads();
  return scratch[0];
}

}  // namespace gum::cuda
