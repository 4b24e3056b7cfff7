#pragma once
// A Hugging Face model folder that `transformers` loads with LlamaForCausalLM.from_pretrained
// and `AutoTokenizer.from_pretrained`: config.json, generation_config.json, model.safetensors
// (Hugging Face LLaMA tensor names, [out, in] weights), tokenizer.model and tokenizer_config.json.
// This module writes what it is given; the caller (gum_train export) builds the configs from
// the model (llama_config_to_hf_json) and checks that every tensor, lm_head included when the
// embeddings are untied, is present.
#include <nlohmann/json.hpp>
#include <string>

#include "gum/core/tensor.h"

namespace gum {

struct HfFolder {
  nlohmann::json config;             // config.json
  nlohmann::json generation_config;  // generation_config.json
  nlohmann::json tokenizer_config;   // tokenizer_config.json (null: not written)
  TensorMap weights;                 // model.safetensors
  std::string tokenizer_model_path;  // copied to tokenizer.model ("" : none)
  std::string tokenizer_json_path;   // copied to tokenizer.json ("" : none)
};

// Writes the folder's files into OUT_DIR (created when missing; existing files of the same
// names are replaced). Every file is written under a temporary name and renamed.
void write_hf_folder(const std::string& out_dir, const HfFolder& folder);

}  // namespace gum
