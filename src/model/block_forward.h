#pragma once
// One transformer block's forward pass (private to src/model), shared by LlamaModel::forward
// (training: one set of buffers per layer, kept for backward) and LlamaDecoder (incremental
// decoding: one set reused by every layer, attention against the KV cache).
#include <functional>

#include "gum/backend/backend.h"
#include "gum/model/llama.h"

namespace gum {

// Rows [0, n) of an activation buffer sized for more rows (1-D buffers: the first n elements).
inline Tensor first_rows(const Tensor& t, int64_t n) {
  return t.shape.rank == 1 ? t.flat_slice(0, Shape{n}) : t.row_slice(0, n);
}

// The N token rows one block reads and writes.
struct BlockBuffers {
  Tensor input;  // x_l [N, C]: the residual stream entering the block
  Tensor ln1, ln1_rstd;
  Tensor qkv;  // after RoPE
  Tensor att;
  Tensor mid;  // residual after attention
  Tensor ln2, ln2_rstd;
  Tensor gate_up, act;
  Tensor scratch;  // [N, C] projection output before the residual add
  Tensor output;   // x_{l+1} [N, C]
};

// Writes the attention output att [N, H*D] from the rotated qkv [N, (H + 2 KV) * D].
using AttendFn = std::function<void(const Tensor& att, const Tensor& qkv)>;

// x_l -> x_{l+1} as in llama.cpp's header comment, RoPE at `positions` (I32 [N]); `attend` is the
// only step that differs between training (causal attention over the batch) and decoding.
void block_forward(Backend& be, const BlockTensors& w, const BlockBuffers& a, const Tensor& positions,
                   const Tensor& cos_sin, const AttentionShape& shape, float eps, const AttendFn& attend);

}  // namespace gum
