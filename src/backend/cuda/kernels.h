#pragma once
// Host launchers of the hand-written CUDA kernels (elementwise.cu, transformer.cu,
// attention.cu). Raw device pointers, row-major, contiguous; shapes follow
// include/gum/backend/backend.h. Every launcher enqueues on `stream` and returns without
// synchronising; launch errors throw gum::Error naming the kernel.
//
// Floating tensors are passed as FloatPtr: the element type (F32 or BF16) is a runtime
// flag that every thread of a warp reads identically, so one kernel serves both dtypes
// (arithmetic is always fp32; bf16 is rounded to nearest even exactly like gum::f32_to_bf16).
#include <cuda_runtime_api.h>

#include <cstdint>

namespace gum::cuda {

struct FloatPtr {
  void* data = nullptr;
  bool bf16 = false;
};

// Bits of the device status word: kernels that index with device-resident ids cannot throw,
// so they set a bit (and write NaN or skip the element) and the backend raises the error at
// its next synchronisation.
enum StatusBits : int {
  kStatusTokenOutOfRange = 1,     // embedding token id outside [0, vocab)
  kStatusTargetOutOfRange = 2,    // cross-entropy target >= vocab
  kStatusPositionOutOfRange = 4,  // RoPE position outside [0, max_positions)
  kStatusDocStartOutOfRange = 8,  // attention doc_start outside [0, t]
};

// ---- elementwise.cu ----
void launch_fill(FloatPtr dst, int64_t n, float value, cudaStream_t stream);
// dst = src converting F32 <-> BF16 (same dtypes are a cudaMemcpy, not this kernel).
void launch_convert(FloatPtr dst, FloatPtr src, int64_t n, cudaStream_t stream);
void launch_add(FloatPtr out, FloatPtr a, FloatPtr b, int64_t n, cudaStream_t stream);
void launch_axpby(FloatPtr y, float a, FloatPtr x, float b, int64_t n, cudaStream_t stream);
void launch_scale(FloatPtr x, float s, int64_t n, cudaStream_t stream);
void launch_fill_normal(FloatPtr dst, int64_t n, uint64_t seed, uint64_t philox_stream, float mean, float std,
                        cudaStream_t stream);
// result[0] = sum of x (or of x^2) accumulated in double, deterministic two-pass reduction;
// partials holds kReducePartials doubles.
constexpr int kReducePartials = 1024;
void launch_sum(double* result, double* partials, FloatPtr x, int64_t n, bool squares, cudaStream_t stream);

// Adam moments (Kingma & Ba 2015, Alg. 1) with AdamW's decoupled decay (Loshchilov & Hutter 2019).
struct AdamParams {
  double beta1, beta2, eps;
  double bias1, bias2;  // 1 - beta^step
  double lr, weight_decay, update_scale;
};
// write_direction: out = mhat / (sqrt(vhat) + eps); else out (the parameter) is updated in place.
void launch_adam(FloatPtr out, FloatPtr grad, float* m, float* v, int64_t n, const AdamParams& p, bool write_direction,
                 cudaStream_t stream);

// out[r, c] += bias[c] for a [rows, cols] matrix.
void launch_add_bias_rows(FloatPtr out, const float* bias, int64_t rows, int64_t cols, cudaStream_t stream);
// dst[c] += sum_r a[r,c] * (b ? b[r,c] : 1) * (row_scale ? row_scale[r] : 1), deterministic:
// row splits reduce into `partials` (column_reduce_partials_size floats), then a fixed-order pass.
int64_t column_reduce_partials_size(int64_t rows, int64_t cols);
void launch_column_reduce(float* dst, FloatPtr a, FloatPtr b, const float* row_scale, int64_t rows, int64_t cols,
                          float* partials, cudaStream_t stream);
// dst [cols, rows] = transpose of src [rows, cols], row r of src multiplied by row_signs[r] when given.
void launch_transpose(float* dst, const float* src, int64_t rows, int64_t cols, const float* row_signs,
                      cudaStream_t stream);
// signs[j] = (a[j * ld + j] < 0 ? -1 : 1) for j < k: the sign of R's diagonal after geqrf.
void launch_diagonal_signs(float* signs, const float* a, int64_t ld, int64_t k, cudaStream_t stream);
// SVD sign convention: flips column j of u [m,k] and row j of vt [k,n] when the entry of
// largest magnitude in u's column j (first on ties) is negative.
void launch_svd_sign_normalise(float* u, float* vt, int64_t m, int64_t k, int64_t n, cudaStream_t stream);

// ---- transformer.cu ----
void launch_embedding_forward(FloatPtr out, const int32_t* tokens, FloatPtr table, int64_t N, int64_t C, int64_t V,
                              int* status, cudaStream_t stream);
void launch_embedding_backward(FloatPtr dtable, FloatPtr dout, const int32_t* tokens, int64_t N, int64_t C, int64_t V,
                               int* status, cudaStream_t stream);
void launch_rmsnorm_forward(FloatPtr out, float* rstd, FloatPtr x, FloatPtr weight, int64_t N, int64_t C, float eps,
                            cudaStream_t stream);
// dx += ... only (dweight goes through launch_column_reduce with b = x and row_scale = rstd).
void launch_rmsnorm_backward_dx(FloatPtr dx, FloatPtr dout, FloatPtr x, FloatPtr weight, const float* rstd, int64_t N,
                                int64_t C, cudaStream_t stream);
void launch_rope(FloatPtr qkv, const int32_t* positions, const float* cos_sin, int64_t max_positions, int64_t N, int H,
                 int KV, int D, bool inverse, int* status, cudaStream_t stream);
void launch_swiglu_forward(FloatPtr out, FloatPtr gate_up, int64_t N, int64_t F, cudaStream_t stream);
void launch_swiglu_backward(FloatPtr dgate_up, FloatPtr dout, FloatPtr gate_up, int64_t N, int64_t F,
                            cudaStream_t stream);
void launch_cross_entropy_forward(FloatPtr losses, FloatPtr logits, const int32_t* targets, int64_t N, int64_t V,
                                  int* status, cudaStream_t stream);
void launch_cross_entropy_backward(FloatPtr dlogits, FloatPtr logits, const int32_t* targets, int64_t N, int64_t V,
                                   float scale, int* status, cudaStream_t stream);

// ---- attention.cu ----
// Pointer arrays for cublasGemmBatchedEx. Item i of a batch of (batch x heads_per_batch)
// matrices is batch b = i / heads_per_batch, local head j = i % heads_per_batch; its matrix
// starts at base + b * stride_batch + head * stride_head elements with head = (j / div) * mul + add.
struct BatchPointerSpec {
  const float* base = nullptr;
  int64_t stride_batch = 0, stride_head = 0;
  int div = 1, mul = 1, add = 0;
};
constexpr int kMaxPointerSpecs = 10;
struct BatchPointerSpecs {
  BatchPointerSpec spec[kMaxPointerSpecs];
  int count = 0;
};
// out[s * items + i] = pointer of item i under spec s.
void launch_fill_batch_pointers(const float** out, const BatchPointerSpecs& specs, int64_t items, int heads_per_batch,
                                cudaStream_t stream);
// In place on scores [B, H, T, T] (already scaled): row (b, h, t) becomes the softmax over
// keys [start, t] and 0 elsewhere, start = doc_start[b*T + t] (or 0).
void launch_causal_softmax(float* probs, const int32_t* doc_start, int B, int H, int T, int* status,
                           cudaStream_t stream);
// Softmax backward for the query heads h = kv * group + g (one group member g at a time):
// dprobs [B, KV, T, T] (the item order of the batched GEMMs) becomes
// dS = P * (dP - sum_s P dP) inside the window and 0 outside; P read from probs [B, H, T, T].
void launch_causal_softmax_backward(float* dprobs, const float* probs, const int32_t* doc_start, int B, int H, int KV,
                                    int T, int g, cudaStream_t stream);

// Flash-style attention (one warp per query row, online softmax): out [N, H*D] and
// lse [B, H, T] = log-sum-exp of each query row's scaled scores.
void launch_flash_attention_forward(float* out, float* lse, const float* qkv, const int32_t* doc_start, int B, int H,
                                    int KV, int T, int D, int* status, cudaStream_t stream);
// Writes every element of dqkv (no memset needed); delta is [B, H, T] scratch (dO . O per row).
void launch_flash_attention_backward(float* dqkv, float* delta, const float* dout, const float* out, const float* lse,
                                     const float* qkv, const int32_t* doc_start, int B, int H, int KV, int T, int D,
                                     cudaStream_t stream);

// Incremental decoding (CudaBackend::cached_attention_forward): copies the k/v heads of the n new
// rows per sequence of qkv [B*n, W] into kv_cache [B, capacity, 2 KV D] rows [past_len, past_len + n),
// then one warp per (new row, head) writes out [B*n, H*D] by the online softmax over cache rows
// [0, past_len + i]. D <= 256.
void launch_cached_attention_forward(float* out, float* kv_cache, const float* qkv, int B, int n, int past_len,
                                     int capacity, int H, int KV, int D, cudaStream_t stream);

}  // namespace gum::cuda
