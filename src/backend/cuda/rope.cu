// Rotary position embedding on the q and k heads of qkv, forward and inverse (the backward).
#include "cuda_backend.h"
#include "device_utils.cuh"

namespace gum::cuda {

namespace {

// ---------------------------------------------------------------------------------------------
// RoPE (Su et al. 2021, RoFormer eq. 34), Hugging Face rotate_half pairing: element j of a head
// rotates with element j + D/2 by position * inv_freq[j]. One pass in place: a thread takes V
// consecutive j of one (row, q/k head) (storage type T, V elements per access), reads both halves
// and their (cos, sin) pairs once and writes both halves once; v heads untouched. inverse =
// rotation by the negative angle (backward: R^T = R^-1). The _rn intrinsics forbid FMA
// contraction so the result has the CPU's bits.

template <typename T, int V>
__global__ void rope_kernel(T* qkv, const int32_t* positions, const float* cos_sin, int64_t max_positions, int64_t N,
                            int H, int KV, int D, bool inverse, int* status) {
  const int half = D / 2, rotated_heads = H + KV, packs = half / V;
  const int64_t width = int64_t(H + 2 * KV) * D;
  GUM_GRID_STRIDE_LOOP(i, N * rotated_heads * packs) {
    const int j = static_cast<int>(i % packs) * V;
    const int64_t rest = i / packs;
    const int head = static_cast<int>(rest % rotated_heads);
    const int64_t n = rest / rotated_heads;
    const int32_t position = positions[n];
    const int64_t first = n * width + int64_t(head) * D + j, second = first + half;
    float a[V], b[V];
    if (position < 0 || position >= max_positions) {
      atomicOr(status, kStatusPositionOutOfRange);
#pragma unroll
      for (int k = 0; k < V; ++k) a[k] = NAN;
      store_vec(qkv, first, a);
      store_vec(qkv, second, a);
      continue;
    }
    float cs[2 * V];  // (cos, sin) of j, j + 1, ...
    load_vec(cs, cos_sin, (int64_t(position) * half + j) * 2);
    load_vec(a, qkv, first);
    load_vec(b, qkv, second);
#pragma unroll
    for (int k = 0; k < V; ++k) {
      const float cos_a = cs[2 * k], sin_a = inverse ? -cs[2 * k + 1] : cs[2 * k + 1];
      const float x = a[k], y = b[k];
      a[k] = __fsub_rn(__fmul_rn(x, cos_a), __fmul_rn(y, sin_a));
      b[k] = __fadd_rn(__fmul_rn(y, cos_a), __fmul_rn(x, sin_a));
    }
    store_vec(qkv, first, a);
    store_vec(qkv, second, b);
  }
}

void launch_rope(FloatPtr qkv, const int32_t* positions, const float* cos_sin, int64_t max_positions, int64_t N, int H,
                 int KV, int D, bool inverse, int* status, cudaStream_t stream) {
  if (N * (H + KV) * (D / 2) <= 0) return;
  with_dtype(qkv, [&](auto t) {
    using T = decltype(t);
    T* data = static_cast<T*>(qkv.data);
    // D / 2 a multiple of V keeps both halves of every head and the (cos, sin) rows pack-aligned.
    const int V = vector_width<T>(D / 2, {data, cos_sin});
    auto launch = [&](auto rope_kernel) {
      rope_kernel<<<grid_for(N * (H + KV) * (D / 2 / V)), kThreads, 0, stream>>>(
          data, positions, cos_sin, max_positions, N, H, KV, D, inverse, status);
      GUM_CUDA_CHECK_LAUNCH("rope_kernel");
    };
    if (V == kPackWidth<T>)
      launch(rope_kernel<T, kPackWidth<T>>);
    else
      launch(rope_kernel<T, 1>);
  });
}

}  // namespace

void CudaBackend::rope(Tensor qkv, const Tensor& positions, const Tensor& cos_sin, const AttentionShape& s,
                       bool inverse, const char* op) {
  const int64_t N = positions.numel();
  require_numel(qkv, N * s.qkv_width(), op, "qkv");
  if (s.head_dim <= 0 || s.head_dim % 2 != 0) runtime_error(op, ": head_dim ", s.head_dim, " must be even");
  require_f32(cos_sin, op, "cos_sin");
  const int64_t max_positions = cos_sin.numel() / s.head_dim;  // [P, D/2, 2]
  require_numel(cos_sin, max_positions * s.head_dim, op, "cos_sin");
  launch_rope(float_ptr(qkv, op, "qkv"), i32_ptr(positions, op, "positions"), cos_sin.f32(), max_positions, N, s.n_head,
              s.n_kv_head, s.head_dim, inverse, status_, stream_);
}

void CudaBackend::rope_forward(Tensor qkv, const Tensor& positions, const Tensor& cos_sin, const AttentionShape& s) {
  rope(qkv, positions, cos_sin, s, false, "rope_forward");
}

void CudaBackend::rope_backward(Tensor dqkv, const Tensor& positions, const Tensor& cos_sin, const AttentionShape& s) {
  rope(dqkv, positions, cos_sin, s, true, "rope_backward");
}

}  // namespace gum::cuda
