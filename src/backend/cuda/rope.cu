// Rotary position embedding on the q and k heads of qkv, forward and inverse (the backward).
#include "cuda_backend.h"
#include "device_utils.cuh"

namespace gum::cuda {

namespace {

// ---------------------------------------------------------------------------------------------
// RoPE (Su et al. 2021, RoFormer eq. 34), Hugging Face rotate_half pairing: element j of a head
// rotates with element j + D/2 by position * inv_freq[j]. One thread per (row, q/k head, j);
// v heads untouched. inverse = rotation by the negative angle (backward: R^T = R^-1).
// The _rn intrinsics forbid FMA contraction so the result has the CPU's bits.

__global__ void rope_kernel(FloatPtr qkv, const int32_t* positions, const float* cos_sin, int64_t max_positions,
                            int64_t N, int H, int KV, int D, bool inverse, int* status) {
  const int half = D / 2, rotated_heads = H + KV;
  const int64_t width = int64_t(H + 2 * KV) * D;
  GUM_GRID_STRIDE_LOOP(i, N * rotated_heads * half) {
    const int j = static_cast<int>(i % half);
    const int64_t rest = i / half;
    const int head = static_cast<int>(rest % rotated_heads);
    const int64_t n = rest / rotated_heads;
    const int32_t position = positions[n];
    const int64_t first = n * width + int64_t(head) * D + j, second = first + half;
    if (position < 0 || position >= max_positions) {
      atomicOr(status, kStatusPositionOutOfRange);
      store(qkv, first, NAN);
      store(qkv, second, NAN);
      continue;
    }
    const float cos_a = cos_sin[(int64_t(position) * half + j) * 2];
    const float sin_raw = cos_sin[(int64_t(position) * half + j) * 2 + 1];
    const float sin_a = inverse ? -sin_raw : sin_raw;
    const float a = load(qkv, first), b = load(qkv, second);
    store(qkv, first, __fsub_rn(__fmul_rn(a, cos_a), __fmul_rn(b, sin_a)));
    store(qkv, second, __fadd_rn(__fmul_rn(b, cos_a), __fmul_rn(a, sin_a)));
  }
}

void launch_rope(FloatPtr qkv, const int32_t* positions, const float* cos_sin, int64_t max_positions, int64_t N, int H,
                 int KV, int D, bool inverse, int* status, cudaStream_t stream) {
  const int64_t work = N * (H + KV) * (D / 2);
  if (work <= 0) return;
  rope_kernel<<<grid_for(work), kThreads, 0, stream>>>(qkv, positions, cos_sin, max_positions, N, H, KV, D, inverse,
                                                       status);
  GUM_CUDA_CHECK_LAUNCH("rope_kernel");
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
