#include "gum/model/params.h"

#include <optional>

#include "gum/core/checked_math.h"
#include "gum/core/error.h"

namespace gum {

const char* param_kind_name(ParamKind k) {
  switch (k) {
    case ParamKind::Matrix:
      return "matrix";
    case ParamKind::Embedding:
      return "embedding";
    case ParamKind::Head:
      return "head";
    case ParamKind::Norm:
      return "norm";
    case ParamKind::Bias:
      return "bias";
  }
  return "?";
}

std::string block_param_name(int layer, const std::string& suffix) {
  return "model.layers." + std::to_string(layer) + "." + suffix;
}

namespace {

// Bytes of `specs` in fp32; nothing when they do not fit in int64_t.
std::optional<int64_t> fp32_bytes(const std::vector<ParamSpec>& specs) {
  std::optional<int64_t> bytes = 0;
  for (const ParamSpec& spec : specs) {
    std::optional<int64_t> elements = 1;
    for (int d = 0; d < spec.shape.rank && elements; ++d) elements = checked_mul(*elements, spec.shape[d]);
    const std::optional<int64_t> spec_bytes = elements ? checked_mul(*elements, 4) : std::nullopt;
    bytes = bytes && spec_bytes ? checked_add(*bytes, *spec_bytes) : std::nullopt;
  }
  return bytes;
}

}  // namespace

std::vector<ParamSpec> llama_param_specs(const LlamaConfig& c) {
  const int64_t C = c.hidden_size, F = c.intermediate_size, D = c.attention_head_dim();
  const int64_t q = int64_t(c.num_attention_heads) * D, kv = int64_t(c.kv_heads()) * D;
  const int L = c.num_hidden_layers;
  auto add_layer = [&](std::vector<ParamSpec>& specs, int l) {
    auto name = [&](const char* suffix) { return block_param_name(l, suffix); };
    specs.push_back({name("input_layernorm.weight"), Shape{C}, ParamKind::Norm, l, false});
    // q, k, v adjacent: together they are the [(H + 2 KV) D, C] weight of one fused GEMM.
    specs.push_back({name("self_attn.q_proj.weight"), Shape{q, C}, ParamKind::Matrix, l, true});
    specs.push_back({name("self_attn.k_proj.weight"), Shape{kv, C}, ParamKind::Matrix, l, true, true});
    specs.push_back({name("self_attn.v_proj.weight"), Shape{kv, C}, ParamKind::Matrix, l, true, true});
    if (c.attention_bias) {
      specs.push_back({name("self_attn.q_proj.bias"), Shape{q}, ParamKind::Bias, l, false});
      specs.push_back({name("self_attn.k_proj.bias"), Shape{kv}, ParamKind::Bias, l, false, true});
      specs.push_back({name("self_attn.v_proj.bias"), Shape{kv}, ParamKind::Bias, l, false, true});
    }
    specs.push_back({name("self_attn.o_proj.weight"), Shape{C, q}, ParamKind::Matrix, l, true});
    if (c.o_proj_bias) specs.push_back({name("self_attn.o_proj.bias"), Shape{C}, ParamKind::Bias, l, false});
    specs.push_back({name("post_attention_layernorm.weight"), Shape{C}, ParamKind::Norm, l, false});
    // gate and up adjacent: one [2F, C] GEMM.
    specs.push_back({name("mlp.gate_proj.weight"), Shape{F, C}, ParamKind::Matrix, l, true});
    specs.push_back({name("mlp.up_proj.weight"), Shape{F, C}, ParamKind::Matrix, l, true, true});
    specs.push_back({name("mlp.down_proj.weight"), Shape{C, F}, ParamKind::Matrix, l, true});
  };
  std::vector<ParamSpec> outside_layers;
  outside_layers.push_back({"model.embed_tokens.weight", Shape{c.vocab_size, C}, ParamKind::Embedding, -1, true});
  outside_layers.push_back({"model.norm.weight", Shape{C}, ParamKind::Norm, L, false});
  if (!c.tie_word_embeddings)
    outside_layers.push_back({"lm_head.weight", Shape{c.vocab_size, C}, ParamKind::Head, L, true});

  // The fp32 bytes of all parameters must be countable before anything is sized from them:
  // model.hidden_size 1e9 would otherwise ask the allocator for a wrapped-around count.
  std::vector<ParamSpec> one_layer;
  add_layer(one_layer, 0);
  const std::optional<int64_t> layer_bytes = fp32_bytes(one_layer), other_bytes = fp32_bytes(outside_layers);
  const std::optional<int64_t> layers_bytes = layer_bytes ? checked_mul(*layer_bytes, L) : std::nullopt;
  if (!other_bytes || !layers_bytes || !checked_add(*other_bytes, *layers_bytes))
    usage_error("model: the parameters' byte count overflows 64 bits (model.hidden_size ", c.hidden_size,
                ", model.intermediate_size ", c.intermediate_size, ", model.num_hidden_layers ", L,
                ", model.num_attention_heads ", c.num_attention_heads, ", model.vocab_size ", c.vocab_size, ")");

  std::vector<ParamSpec> specs = {outside_layers[0]};
  for (int l = 0; l < L; ++l) add_layer(specs, l);
  specs.insert(specs.end(), outside_layers.begin() + 1, outside_layers.end());
  return specs;
}

}  // namespace gum
