#pragma once
// The model's shape, with Hugging Face LlamaConfig field names, and the GaLore paper presets.
#include <nlohmann/json_fwd.hpp>
#include <string>
#include <vector>

namespace gum {

struct RopeScaling {
  std::string type;  // "" (none), "linear" or "llama3"
  double factor = 1.0;
  double low_freq_factor = 1.0;                 // llama3
  double high_freq_factor = 4.0;                // llama3
  int original_max_position_embeddings = 8192;  // llama3
};

// Limits far above released models (Llama 3.1 405B: 126 layers, 131072 positions, head dim
// 128), checked by LlamaConfig::validate.
inline constexpr int kMaxHiddenLayers = 1024;
inline constexpr int kMaxPositionEmbeddings = 1 << 21;
inline constexpr int64_t kMaxRopeTableElements = int64_t(1) << 28;  // max_position_embeddings x head dim (1 GiB)

struct LlamaConfig {
  int hidden_size = 0;
  int intermediate_size = 0;
  int num_hidden_layers = 0;
  int num_attention_heads = 0;
  int num_key_value_heads = 0;  // 0 in JSON input means "= num_attention_heads"
  int head_dim = 0;             // 0 means hidden_size / num_attention_heads
  int vocab_size = 0;
  int max_position_embeddings = 0;
  double rms_norm_eps = 1e-6;
  double rope_theta = 10000.0;
  RopeScaling rope_scaling;
  bool tie_word_embeddings = false;
  bool attention_bias = false;  // Llama: bias on q, k, v and o projections
  bool o_proj_bias = false;     // Qwen2 has q/k/v bias but none on o; derived on import
  double initializer_range = 0.02;
  int bos_token_id = -1, eos_token_id = -1, pad_token_id = -1;

  int attention_head_dim() const { return head_dim > 0 ? head_dim : hidden_size / num_attention_heads; }
  int kv_heads() const { return num_key_value_heads > 0 ? num_key_value_heads : num_attention_heads; }
  int64_t num_parameters() const;
  // Throws a usage error naming `context` and the field when a value is inconsistent.
  void validate(const std::string& context) const;
};

// Names of the built-in presets: llama_tiny, llama_20m, ..., llama_7b.
std::vector<std::string> llama_preset_names();
// Throws a usage error listing the valid names for an unknown preset.
LlamaConfig llama_preset(const std::string& name);

// The `model` section of our config: {"preset": NAME, ...overrides} or the HF fields.
// Unknown keys are errors naming the key and the closest valid one.
LlamaConfig llama_config_from_json(const nlohmann::json& j, const std::string& context);
// The `model` section with every field (num_key_value_heads and head_dim resolved; our keys, not
// Hugging Face's config.json), as the resolved config holds it; it reads back into `c`.
nlohmann::json llama_config_to_json(const LlamaConfig& c);
// A Hugging Face config.json object for LlamaForCausalLM (rope_theta and rope_parameters both).
nlohmann::json llama_config_to_hf_json(const LlamaConfig& c);

}  // namespace gum
