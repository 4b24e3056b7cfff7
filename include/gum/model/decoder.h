#pragma once
// Incremental decoding with a KV cache: the LLaMA forward pass of LlamaModel's weights for a few new
// tokens at a time, each block's attention reading the keys and values of all earlier tokens from a
// per-layer cache instead of recomputing them (Backend::cached_attention_forward). Generating a
// token costs one token's work; only the last row goes through the final norm and the head.
//
// One sequence (batch 1). The cache holds up to `capacity` tokens at RoPE positions
// 0..capacity-1; a caller that wants to go on past it starts again with prefill() of a shorter
// context (sample_tokens slides by half the window).
#include <cstdint>
#include <vector>

#include "gum/backend/arena.h"
#include "gum/model/llama.h"

namespace gum {

class LlamaDecoder {
 public:
  // Reads `model`'s parameters (which must outlive the decoder; later changes to them are seen).
  // capacity <= max_position_embeddings; rows_per_step bounds the activation buffers: a longer
  // prefill runs in chunks of that many rows (0 = capacity).
  LlamaDecoder(LlamaModel& model, int capacity, int rows_per_step = 0);
  LlamaDecoder(const LlamaDecoder&) = delete;
  LlamaDecoder& operator=(const LlamaDecoder&) = delete;

  LlamaModel& model() { return *model_; }
  int capacity() const { return capacity_; }
  int rows_per_step() const { return rows_per_step_; }
  int length() const { return length_; }  // tokens in the cache
  size_t cache_bytes() const { return cache_.bytes(); }
  size_t activation_bytes() const { return acts_.bytes(); }

  // Empties the cache, then runs `tokens` (1..capacity of them) at positions 0..n-1. Returns the
  // logits of the last token, F32 [V] on the model's backend (valid until the next call).
  Tensor prefill(const std::vector<int32_t>& tokens);
  // Appends one token at position length() (< capacity) and returns its logits like prefill.
  Tensor decode(int32_t token);

 private:
  // Runs tokens [0, n) at positions length_.. in chunks of rows_per_step, then the head on the last row.
  Tensor append(const int32_t* tokens, int n);

  LlamaModel* model_;
  int capacity_, rows_per_step_;
  int length_ = 0;
  Arena cache_;    // F32: per layer [1, capacity, 2 * KV * D]
  Arena acts_;     // F32: one block's buffers for rows_per_step rows, the last row's head
  Arena indices_;  // I32: tokens, positions
  std::vector<Tensor> layer_cache_;
};

}  // namespace gum
