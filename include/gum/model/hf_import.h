#pragma once
// Import of Hugging Face model folders: config.json of LlamaForCausalLM, MistralForCausalLM
// or Qwen2ForCausalLM (and GaLore's LLaMAForCausalLM configs), weights from model.safetensors
// or sharded through model.safetensors.index.json, in F32, F16 or BF16. What we cannot
// represent exactly (another architecture, sliding-window attention, an unknown rope_scaling
// type, MLP biases, another activation) is an error naming the field: never a silent wrong model.
#include <nlohmann/json_fwd.hpp>
#include <string>

#include "gum/core/tensor.h"
#include "gum/model/config.h"

namespace gum {

// `context` names the file in error messages.
LlamaConfig hf_config_from_json(const nlohmann::json& hf, const std::string& context);

struct HfModel {
  LlamaConfig config;
  TensorMap weights;           // F32, named and shaped as llama_param_specs(config)
  std::string tokenizer_path;  // DIR/tokenizer.model when present, else DIR when it has tokenizer.json, else empty
};

// Reads DIR/config.json and the weights; every tensor of llama_param_specs must be present
// with its shape (lm_head may be absent only when embeddings are tied).
HfModel load_hf_model(const std::string& dir);

}  // namespace gum
