#pragma once
// Argument checks every backend runs at the top of its ops (private to src/backend): each
// throws a runtime error naming the op and the argument. One copy serves the CPU and CUDA
// backends, so both reject the same inputs with the same words.
#include "gum/backend/backend.h"
#include "gum/core/error.h"

namespace gum::op_checks {

inline void require_device(const Tensor& t, Device device, const char* op, const char* what) {
  if (t.device != device)
    runtime_error(op, ": ", what, " ", t.shape.str(), " is a ", device_name(t.device), " tensor, expected ",
                  device_name(device));
  if (t.numel() > 0 && !t.data) runtime_error(op, ": ", what, " ", t.shape.str(), " has no data");
}

inline void require_dtype(const Tensor& t, DType dtype, Device device, const char* op, const char* what) {
  require_device(t, device, op, what);
  if (t.dtype != dtype) runtime_error(op, ": ", what, " must be ", dtype_name(dtype), ", got ", dtype_name(t.dtype));
}

// F32 or BF16 (the dtypes a floating tensor may be stored in).
inline void require_float(const Tensor& t, Device device, const char* op, const char* what) {
  require_device(t, device, op, what);
  if (t.dtype != DType::F32 && t.dtype != DType::BF16)
    runtime_error(op, ": ", what, " must be F32 or BF16, got ", dtype_name(t.dtype));
}

inline void require_numel(const Tensor& t, int64_t expected, const char* op, const char* what) {
  if (t.numel() != expected)
    runtime_error(op, ": ", what, " ", t.shape.str(), " has ", t.numel(), " elements, expected ", expected);
}

// The attention shape is consistent and qkv (F32, or BF16 where the backend allows it) and
// doc_start (I32, optional) have its sizes.
inline void require_attention_args(const AttentionShape& s, const Tensor& qkv, const Tensor* doc_start, Device device,
                                   const char* op, bool bf16_allowed = false) {
  if (s.batch <= 0 || s.seq_len <= 0 || s.n_head <= 0 || s.n_kv_head <= 0 || s.head_dim <= 0 ||
      s.n_head % s.n_kv_head != 0)
    runtime_error(op, ": invalid attention shape B=", s.batch, " T=", s.seq_len, " H=", s.n_head, " KV=", s.n_kv_head,
                  " D=", s.head_dim);
  if (bf16_allowed)
    require_float(qkv, device, op, "qkv");
  else
    require_dtype(qkv, DType::F32, device, op, "qkv");
  require_numel(qkv, int64_t(s.batch) * s.seq_len * s.qkv_width(), op, "qkv");
  if (doc_start) {
    require_dtype(*doc_start, DType::I32, device, op, "doc_start");
    require_numel(*doc_start, int64_t(s.batch) * s.seq_len, op, "doc_start");
  }
}

// cached_attention_forward: qkv holds the n = s.seq_len new rows of each sequence, kv_cache is
// [B, capacity, 2 * KV * D] F32 with room for them after past_len, out is [B * n, H * D] F32.
// Returns the capacity.
inline int64_t require_cached_attention_args(const AttentionShape& s, const Tensor& out, const Tensor& kv_cache,
                                             const Tensor& qkv, int past_len, Device device, const char* op) {
  require_attention_args(s, qkv, nullptr, device, op);
  require_dtype(out, DType::F32, device, op, "out");
  require_numel(out, int64_t(s.batch) * s.seq_len * s.n_head * s.head_dim, op, "out");
  require_dtype(kv_cache, DType::F32, device, op, "kv_cache");
  const int64_t kv_width = 2 * int64_t(s.n_kv_head) * s.head_dim;
  if (kv_cache.shape.rank != 3 || kv_cache.dim(0) != s.batch || kv_cache.dim(2) != kv_width)
    runtime_error(op, ": kv_cache ", kv_cache.shape.str(), " must be [", s.batch, ", capacity, ", kv_width,
                  "] (batch, positions, k and v heads)");
  const int64_t capacity = kv_cache.dim(1);
  if (past_len < 0 || past_len + int64_t(s.seq_len) > capacity)
    runtime_error(op, ": ", s.seq_len, " new rows after past_len ", past_len, " do not fit the kv_cache's ", capacity,
                  " positions");
  return capacity;
}

}  // namespace gum::op_checks
