#include "gum/model/params.h"

namespace gum {

const char* param_kind_name(ParamKind k) {
  switch (k) {
    case ParamKind::Matrix: return "matrix";
    case ParamKind::Embedding: return "embedding";
    case ParamKind::Head: return "head";
    case ParamKind::Norm: return "norm";
    case ParamKind::Bias: return "bias";
  }
  return "?";
}

std::string block_param_name(int layer, const std::string& suffix) {
  return "model.layers." + std::to_string(layer) + "." + suffix;
}

std::vector<ParamSpec> llama_param_specs(const LlamaConfig& c) {
  const int64_t C = c.hidden_size, F = c.intermediate_size, D = c.attention_head_dim();
  const int64_t q = int64_t(c.num_attention_heads) * D, kv = int64_t(c.kv_heads()) * D;
  const int L = c.num_hidden_layers;
  std::vector<ParamSpec> specs;
  specs.push_back({"model.embed_tokens.weight", Shape{c.vocab_size, C}, ParamKind::Embedding, -1, true});
  for (int l = 0; l < L; ++l) {
    auto name = [&](const char* suffix) { return block_param_name(l, suffix); };
    specs.push_back({name("input_layernorm.weight"), Shape{C}, ParamKind::Norm, l, false});
    // q, k, v adjacent: together they are the [(H + 2 KV) D, C] weight of one fused GEMM.
    specs.push_back({name("self_attn.q_proj.weight"), Shape{q, C}, ParamKind::Matrix, l, true});
    specs.push_back({name("self_attn.k_proj.weight"), Shape{kv, C}, ParamKind::Matrix, l, true});
    specs.push_back({name("self_attn.v_proj.weight"), Shape{kv, C}, ParamKind::Matrix, l, true});
    if (c.attention_bias) {
      specs.push_back({name("self_attn.q_proj.bias"), Shape{q}, ParamKind::Bias, l, false});
      specs.push_back({name("self_attn.k_proj.bias"), Shape{kv}, ParamKind::Bias, l, false});
      specs.push_back({name("self_attn.v_proj.bias"), Shape{kv}, ParamKind::Bias, l, false});
    }
    specs.push_back({name("self_attn.o_proj.weight"), Shape{C, q}, ParamKind::Matrix, l, true});
    if (c.o_proj_bias) specs.push_back({name("self_attn.o_proj.bias"), Shape{C}, ParamKind::Bias, l, false});
    specs.push_back({name("post_attention_layernorm.weight"), Shape{C}, ParamKind::Norm, l, false});
    // gate and up adjacent: one [2F, C] GEMM.
    specs.push_back({name("mlp.gate_proj.weight"), Shape{F, C}, ParamKind::Matrix, l, true});
    specs.push_back({name("mlp.up_proj.weight"), Shape{F, C}, ParamKind::Matrix, l, true});
    specs.push_back({name("mlp.down_proj.weight"), Shape{C, F}, ParamKind::Matrix, l, true});
  }
  specs.push_back({"model.norm.weight", Shape{C}, ParamKind::Norm, L, false});
  if (!c.tie_word_embeddings)
    specs.push_back({"lm_head.weight", Shape{c.vocab_size, C}, ParamKind::Head, L, true});
  return specs;
}

}  // namespace gum
