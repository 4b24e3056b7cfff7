// LlamaDecoder: the blocks of llama.cpp (block_forward) on the new rows only, with attention
// against a per-layer KV cache. Per layer the cache row of position p is (k heads | v heads) of
// that token after RoPE, exactly the columns [H*D, (H + 2 KV) * D) of its qkv row in the training
// forward, so cached decoding and LlamaModel::forward compute the same function.
#include "gum/model/decoder.h"

#include <algorithm>
#include <string>
#include <utility>

#include "block_forward.h"
#include "gum/core/error.h"

namespace gum {

LlamaDecoder::LlamaDecoder(LlamaModel& model, int capacity, int rows_per_step)
    : model_(&model),
      capacity_(capacity),
      rows_per_step_(rows_per_step > 0 ? std::min(rows_per_step, capacity) : capacity) {
  const LlamaConfig& c = model.config();
  if (capacity <= 0 || capacity > c.max_position_embeddings)
    usage_error("decoder: KV cache capacity ", capacity, " must lie in [1, ", c.max_position_embeddings,
                "] (max_position_embeddings)");
  if (rows_per_step < 0) usage_error("decoder: rows_per_step must be >= 0 (0 = capacity), got ", rows_per_step);
  Backend& be = model.backend();
  const int64_t C = c.hidden_size, F = c.intermediate_size, V = c.vocab_size, D = c.attention_head_dim();
  const int64_t HD = int64_t(c.num_attention_heads) * D, KV = c.kv_heads();
  const int64_t W = (c.num_attention_heads + 2 * KV) * D, R = rows_per_step_;

  std::vector<NamedShape> cache_layout;
  for (int l = 0; l < c.num_hidden_layers; ++l)
    cache_layout.push_back({"layers." + std::to_string(l) + ".kv", Shape{1, capacity, 2 * KV * D}});
  cache_ = Arena(be, DType::F32, cache_layout);
  for (int l = 0; l < c.num_hidden_layers; ++l) layer_cache_.push_back(cache_.view(size_t(l)));

  acts_ = Arena(be, DType::F32,
                {{"residual_in", Shape{R, C}},
                 {"residual_out", Shape{R, C}},
                 {"ln1", Shape{R, C}},
                 {"ln1_rstd", Shape{R}},
                 {"qkv", Shape{R, W}},
                 {"att", Shape{R, HD}},
                 {"mid", Shape{R, C}},
                 {"ln2", Shape{R, C}},
                 {"ln2_rstd", Shape{R}},
                 {"gate_up", Shape{R, 2 * F}},
                 {"act", Shape{R, F}},
                 {"scratch", Shape{R, C}},
                 {"lnf", Shape{1, C}},
                 {"lnf_rstd", Shape{1}},
                 {"logits", Shape{1, V}}});
  indices_ = Arena(be, DType::I32, {{"tokens", Shape{R}}, {"positions", Shape{R}}});
}

Tensor LlamaDecoder::prefill(const std::vector<int32_t>& tokens) {
  if (tokens.empty() || tokens.size() > size_t(capacity_))
    usage_error("decoder: prefill takes 1 to ", capacity_, " tokens (the KV cache capacity), got ", tokens.size());
  length_ = 0;
  return append(tokens.data(), static_cast<int>(tokens.size()));
}

Tensor LlamaDecoder::decode(int32_t token) {
  if (length_ == 0) usage_error("decoder: decode needs a prefill first (the cache is empty)");
  if (length_ >= capacity_)
    runtime_error("decoder: the KV cache is full (", capacity_, " tokens): prefill a shorter context to go on");
  return append(&token, 1);
}

Tensor LlamaDecoder::append(const int32_t* tokens, int n) {
  const LlamaConfig& c = model_->config();
  Backend& be = model_->backend();
  for (int i = 0; i < n; ++i)
    if (tokens[i] < 0 || tokens[i] >= c.vocab_size)
      runtime_error("decoder: token ", tokens[i], " at position ", length_ + i, " is outside the vocabulary [0, ",
                    c.vocab_size, ")");
  const float eps = static_cast<float>(c.rms_norm_eps);
  const int L = c.num_hidden_layers;
  std::vector<int32_t> positions(static_cast<size_t>(rows_per_step_));
  Tensor last_residual;
  for (int done = 0; done < n; done += rows_per_step_) {
    const int R = std::min(rows_per_step_, n - done);
    const int past = length_;
    for (int i = 0; i < R; ++i) positions[i] = past + i;
    const Tensor token_ids = first_rows(indices_.view("tokens"), R),
                 position_ids = first_rows(indices_.view("positions"), R);
    be.copy_from_host(token_ids, tokens + done);
    be.copy_from_host(position_ids, positions.data());
    const AttentionShape shape{1, R, c.num_attention_heads, c.kv_heads(), c.attention_head_dim()};

    // The residual stream alternates between two buffers: a block reads one and writes the other.
    Tensor x = first_rows(acts_.view("residual_in"), R), next = first_rows(acts_.view("residual_out"), R);
    BlockBuffers buffers = BlockBuffers::in_arena(acts_, "").first_rows(R);
    be.embedding_forward(x, token_ids, model_->embedding_weight());
    for (int l = 0; l < L; ++l) {
      buffers.input = x;
      buffers.output = next;
      block_forward(be, model_->block_weights(l), buffers, position_ids, model_->rope_cos_sin(), shape, eps,
                    [&](const Tensor& att, const Tensor& qkv) {
                      be.cached_attention_forward(att, layer_cache_[l], qkv, past, shape);
                    });
      std::swap(x, next);
    }
    length_ += R;
    last_residual = x.row_slice(R - 1, R);
  }
  // Only the last token's logits are needed to choose the next one.
  const Tensor lnf = acts_.view("lnf"), logits = acts_.view("logits");
  be.rmsnorm_forward(lnf, acts_.view("lnf_rstd"), last_residual, model_->final_norm_weight(), eps);
  be.linear_forward(logits, lnf, model_->head_weight(), nullptr);
  return logits.reshaped(Shape{c.vocab_size});
}

}  // namespace gum
