#pragma once
// One transformer block's forward pass (private to src/model), shared by LlamaModel::forward
// (training: one set of buffers per layer, kept for backward) and LlamaDecoder (incremental
// decoding: one set reused by every layer, attention against the KV cache).
#include <functional>
#include <string>

#include "gum/backend/arena.h"
#include "gum/backend/backend.h"
#include "gum/model/llama.h"

namespace gum {

// Rows [0, n) of an activation buffer sized for more rows (1-D buffers: the first n elements).
inline Tensor first_rows(const Tensor& t, int64_t n) {
  return t.shape.rank == 1 ? t.flat_slice(0, Shape{n}) : t.row_slice(0, n);
}

// A tensor the op interface takes as optional (a bias): null when absent.
inline const Tensor* optional(const Tensor& t) { return t.empty() ? nullptr : &t; }
inline Tensor* optional(Tensor& t) { return t.empty() ? nullptr : &t; }

// The activations of one block over N token rows: what its forward writes and its backward reads.
struct BlockBuffers {
  Tensor input;  // x_l [N, C]: the residual stream entering the block
  Tensor ln1, ln1_rstd;
  Tensor qkv;      // after RoPE
  Tensor att;      // attention output [N, H*D]
  Tensor att_aux;  // the backend's attention statistics for backward (empty when decoding)
  Tensor mid;      // residual after attention
  Tensor ln2, ln2_rstd;
  Tensor gate_up, act;
  Tensor scratch;  // [N, C] projection output before the residual add
  Tensor output;   // x_{l+1} [N, C]

  // Views of `acts`' tensors prefix + "ln1", ..., prefix + "act" (and prefix + "att_aux" when the
  // arena has it) and of its "scratch"; input and output are the caller's. With `f32` (bf16
  // activations), the norm statistics and attention's aux are that arena's.
  static BlockBuffers in_arena(const Arena& acts, const std::string& prefix, const Arena* f32 = nullptr);
  // The same buffers for their first n rows; att_aux stays whole (its layout is the backend's),
  // and an empty buffer stays empty.
  BlockBuffers first_rows(int64_t n) const;
};

// Writes the attention output att [N, H*D] from the rotated qkv [N, (H + 2 KV) * D].
using AttendFn = std::function<void(const Tensor& att, const Tensor& qkv)>;

// x_l -> x_{l+1} as in llama.cpp's header comment, RoPE at `positions` (I32 [N]); `attend` is the
// only step that differs between training (causal attention over the batch) and decoding.
void block_forward(Backend& be, const BlockTensors& w, const BlockBuffers& a, const Tensor& positions,
                   const Tensor& cos_sin, const AttentionShape& shape, float eps, const AttendFn& attend);

}  // namespace gum
