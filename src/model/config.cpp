#include "gum/model/config.h"

#include <map>
#include <nlohmann/json.hpp>

#include "gum/core/config_fields.h"
#include "gum/core/error.h"
#include "gum/core/json_util.h"

namespace gum {

namespace {

LlamaConfig make_preset(int hidden, int intermediate, int heads, int layers, int vocab, int max_positions,
                        int kv_heads = 0) {
  LlamaConfig c;
  c.hidden_size = hidden;
  c.intermediate_size = intermediate;
  c.num_attention_heads = heads;
  c.num_key_value_heads = kv_heads > 0 ? kv_heads : heads;
  c.num_hidden_layers = layers;
  c.vocab_size = vocab;
  c.max_position_embeddings = max_positions;
  c.rms_norm_eps = 1e-6;  // GaLore's C4 configs
  return c;
}

// GaLore's C4 LLaMA configs (arXiv 2403.03507, configs/llama_*.json): vocab 32000 (T5 tokenizer),
// untied embeddings, no biases, max_sequence_length 1024. llama_tiny is ours: a CPU demo and test size
// with grouped-query attention so that path is always exercised.
const std::map<std::string, LlamaConfig>& presets() {
  static const std::map<std::string, LlamaConfig> table = {
      {"llama_tiny", make_preset(128, 352, 4, 4, 4096, 512, 2)},
      {"llama_20m", make_preset(256, 688, 4, 4, 32000, 1024)},
      {"llama_60m", make_preset(512, 1376, 8, 8, 32000, 1024)},
      {"llama_130m", make_preset(768, 2048, 12, 12, 32000, 1024)},
      {"llama_350m", make_preset(1024, 2736, 16, 24, 32000, 1024)},
      {"llama_1b", make_preset(2048, 5461, 32, 24, 32000, 1024)},
      {"llama_7b", make_preset(4096, 11008, 32, 32, 32000, 2048)},
  };
  return table;
}

// model.rope_scaling. "type" (older Hugging Face configs) is read as "rope_type", which wins
// when both are given; "default" means no scaling.
const FieldTable<RopeScaling>& rope_scaling_fields() {
  static const FieldTable<RopeScaling> fields = {
      {"rope_type", &RopeScaling::type, one_of({"", "linear", "llama3"})},
      {"factor", &RopeScaling::factor, positive()},
      {"low_freq_factor", &RopeScaling::low_freq_factor, positive()},
      {"high_freq_factor", &RopeScaling::high_freq_factor, positive()},
      {"original_max_position_embeddings", &RopeScaling::original_max_position_embeddings, positive()},
  };
  return fields;
}

}  // namespace

int64_t LlamaConfig::num_parameters() const {
  int64_t C = hidden_size, F = intermediate_size, D = attention_head_dim();
  int64_t q = int64_t(num_attention_heads) * D, kv = int64_t(kv_heads()) * D;
  int64_t per_layer = 2 * C + C * (q + 2 * kv) + q * C + 3 * C * F;
  if (attention_bias) per_layer += q + 2 * kv;
  if (o_proj_bias) per_layer += C;
  int64_t total = per_layer * num_hidden_layers + C + int64_t(vocab_size) * C;
  if (!tie_word_embeddings) total += int64_t(vocab_size) * C;
  return total;
}

void LlamaConfig::validate(const std::string& context) const {
  auto positive = [&](const char* field, int64_t v) {
    if (v <= 0) usage_error(context, ": model.", field, " must be positive, got ", v);
  };
  positive("hidden_size", hidden_size);
  positive("intermediate_size", intermediate_size);
  positive("num_hidden_layers", num_hidden_layers);
  positive("num_attention_heads", num_attention_heads);
  positive("vocab_size", vocab_size);
  positive("max_position_embeddings", max_position_embeddings);
  if (head_dim == 0 && hidden_size % num_attention_heads != 0)
    usage_error(context, ": model.hidden_size (", hidden_size, ") must be divisible by num_attention_heads (",
                num_attention_heads, ") unless head_dim is given");
  if (attention_head_dim() % 2 != 0)
    usage_error(context, ": model head dimension ", attention_head_dim(), " must be even for rotary embeddings");
  if (kv_heads() <= 0 || num_attention_heads % kv_heads() != 0)
    usage_error(context, ": model.num_key_value_heads (", kv_heads(), ") must divide num_attention_heads (",
                num_attention_heads, ")");
  if (!(rms_norm_eps > 0)) usage_error(context, ": model.rms_norm_eps must be positive");
  if (!(rope_theta > 0)) usage_error(context, ": model.rope_theta must be positive");
  check_fields(rope_scaling_fields(), rope_scaling, context, "model.rope_scaling");
  if (rope_scaling.type == "llama3" && !(rope_scaling.high_freq_factor > rope_scaling.low_freq_factor))
    usage_error(context, ": model.rope_scaling.high_freq_factor (", rope_scaling.high_freq_factor,
                ") must exceed low_freq_factor (", rope_scaling.low_freq_factor, ") for llama3 scaling");
  // Far above any released model; beyond them a run (and plan, which builds the model without
  // computing) would only hang on one entry per layer or exhaust memory on the RoPE table.
  if (num_hidden_layers > kMaxHiddenLayers)
    usage_error(context, ": model.num_hidden_layers ", num_hidden_layers, " is above the limit of ", kMaxHiddenLayers);
  if (max_position_embeddings > kMaxPositionEmbeddings)
    usage_error(context, ": model.max_position_embeddings ", max_position_embeddings, " is above the limit of ",
                kMaxPositionEmbeddings);
  if (int64_t(max_position_embeddings) * attention_head_dim() > kMaxRopeTableElements)
    usage_error(context, ": the RoPE table of model.max_position_embeddings (", max_position_embeddings,
                ") x head dimension (", attention_head_dim(),
                head_dim > 0 ? ", model.head_dim" : ", model.hidden_size / model.num_attention_heads",
                ") floats is above the limit of ", kMaxRopeTableElements, " floats");
}

std::vector<std::string> llama_preset_names() {
  std::vector<std::string> names;
  for (const auto& [name, config] : presets()) names.push_back(name);
  return names;
}

LlamaConfig llama_preset(const std::string& name) {
  auto it = presets().find(name);
  if (it == presets().end()) {
    std::string valid;
    for (const auto& n : llama_preset_names()) valid += (valid.empty() ? "" : ", ") + n;
    std::string hint = closest_match(name, llama_preset_names());
    usage_error("unknown model preset '", name, "'", hint.empty() ? "" : " (did you mean '" + hint + "'?)",
                "; valid presets: ", valid);
  }
  return it->second;
}

namespace {

RopeScaling rope_scaling_from_json(const nlohmann::json& j, const std::string& context) {
  if (j.is_null()) return RopeScaling();
  nlohmann::json section = j;
  if (section.is_object() && section.contains("type")) {
    if (!section.contains("rope_type")) section["rope_type"] = section["type"];
    section.erase("type");
  }
  if (section.is_object() && section.value("rope_type", nlohmann::json()) == "default") section["rope_type"] = "";
  return section_from_json(section, rope_scaling_fields(), context, "model.rope_scaling");
}

// The plain fields of the `model` section (besides `preset` and `rope_scaling`).
const FieldTable<LlamaConfig>& llama_config_fields() {
  // No rules here: LlamaConfig::validate checks the values, which relate to each other.
  static const FieldTable<LlamaConfig> fields = {
      {"hidden_size", &LlamaConfig::hidden_size},
      {"intermediate_size", &LlamaConfig::intermediate_size},
      {"num_hidden_layers", &LlamaConfig::num_hidden_layers},
      {"num_attention_heads", &LlamaConfig::num_attention_heads},
      {"num_key_value_heads", &LlamaConfig::num_key_value_heads},
      {"head_dim", &LlamaConfig::head_dim},
      {"vocab_size", &LlamaConfig::vocab_size},
      {"max_position_embeddings", &LlamaConfig::max_position_embeddings},
      {"rms_norm_eps", &LlamaConfig::rms_norm_eps},
      {"rope_theta", &LlamaConfig::rope_theta},
      {"tie_word_embeddings", &LlamaConfig::tie_word_embeddings},
      {"attention_bias", &LlamaConfig::attention_bias},
      {"o_proj_bias", &LlamaConfig::o_proj_bias},  // false with attention_bias: Qwen2's layout
      {"initializer_range", &LlamaConfig::initializer_range},
      {"bos_token_id", &LlamaConfig::bos_token_id},
      {"eos_token_id", &LlamaConfig::eos_token_id},
      {"pad_token_id", &LlamaConfig::pad_token_id},
  };
  return fields;
}

}  // namespace

LlamaConfig llama_config_from_json(const nlohmann::json& j, const std::string& context) {
  std::vector<std::string> keys = field_keys(llama_config_fields());
  keys.insert(keys.end(), {"preset", "rope_scaling"});
  reject_unknown_keys(j, keys, context, "model");
  LlamaConfig c;
  if (j.contains("preset")) {
    std::string name;
    read_key(j, "preset", name, context, "model");
    c = llama_preset(name);
  }
  read_fields(j, llama_config_fields(), c, context, "model");
  if (j.contains("rope_scaling")) c.rope_scaling = rope_scaling_from_json(j["rope_scaling"], context);
  // Llama's attention_bias covers q, k, v and o unless o_proj_bias says otherwise.
  if (!j.contains("o_proj_bias") || j["o_proj_bias"].is_null()) c.o_proj_bias = c.attention_bias;
  if (c.o_proj_bias && !c.attention_bias)
    usage_error(context, ": model.o_proj_bias needs model.attention_bias (a bias on o_proj alone is not supported)");
  if (c.num_key_value_heads == 0) c.num_key_value_heads = c.num_attention_heads;
  c.validate(context);
  return c;
}

nlohmann::json llama_config_to_json(const LlamaConfig& m) {
  nlohmann::json j;
  write_fields(llama_config_fields(), m, j);
  j["num_key_value_heads"] = m.kv_heads();
  j["head_dim"] = m.attention_head_dim();
  j["rope_scaling"] = nullptr;
  if (!m.rope_scaling.type.empty()) write_fields(rope_scaling_fields(), m.rope_scaling, j["rope_scaling"]);
  return j;
}

nlohmann::json llama_config_to_hf_json(const LlamaConfig& c) {
  nlohmann::json j;
  // q/k/v biases without an o_proj bias cannot be said in LlamaConfig (attention_bias covers all
  // four): that is Qwen2's layout, whose config transformers reads as exactly this model.
  const bool qwen2 = c.attention_bias && !c.o_proj_bias;
  if (qwen2 && c.attention_head_dim() * c.num_attention_heads != c.hidden_size)
    usage_error("export: a model with q/k/v biases but none on o_proj is written as Qwen2, whose config has no ",
                "head_dim: head_dim (", c.attention_head_dim(), ") x num_attention_heads (", c.num_attention_heads,
                ") must equal hidden_size (", c.hidden_size, ")");
  if (qwen2 && !c.rope_scaling.type.empty())
    usage_error("export: a Qwen2-layout model (q/k/v biases, no o_proj bias) with rope_scaling '", c.rope_scaling.type,
                "' has no faithful transformers config");
  j["architectures"] = {qwen2 ? "Qwen2ForCausalLM" : "LlamaForCausalLM"};
  j["model_type"] = qwen2 ? "qwen2" : "llama";
  j["hidden_size"] = c.hidden_size;
  j["intermediate_size"] = c.intermediate_size;
  j["num_hidden_layers"] = c.num_hidden_layers;
  j["num_attention_heads"] = c.num_attention_heads;
  j["num_key_value_heads"] = c.kv_heads();
  j["head_dim"] = c.attention_head_dim();
  j["vocab_size"] = c.vocab_size;
  j["max_position_embeddings"] = c.max_position_embeddings;
  j["rms_norm_eps"] = c.rms_norm_eps;
  j["hidden_act"] = "silu";
  if (qwen2) {
    j["use_sliding_window"] = false;
    j["sliding_window"] = nullptr;
    j["max_window_layers"] = c.num_hidden_layers;
  } else {
    j["attention_bias"] = c.attention_bias;
    j["mlp_bias"] = false;
  }
  j["attention_dropout"] = 0.0;
  j["tie_word_embeddings"] = c.tie_word_embeddings;
  j["initializer_range"] = c.initializer_range;
  j["torch_dtype"] = "float32";
  j["rope_theta"] = c.rope_theta;
  // transformers 5 reads rope_parameters; older versions read rope_theta/rope_scaling.
  nlohmann::json rope = {{"rope_type", c.rope_scaling.type.empty() ? "default" : c.rope_scaling.type},
                         {"rope_theta", c.rope_theta}};
  if (!c.rope_scaling.type.empty()) {
    nlohmann::json scaling = {{"rope_type", c.rope_scaling.type}, {"factor", c.rope_scaling.factor}};
    if (c.rope_scaling.type == "llama3") {
      scaling["low_freq_factor"] = c.rope_scaling.low_freq_factor;
      scaling["high_freq_factor"] = c.rope_scaling.high_freq_factor;
      scaling["original_max_position_embeddings"] = c.rope_scaling.original_max_position_embeddings;
    }
    j["rope_scaling"] = scaling;
    for (const auto& item : scaling.items()) rope[item.key()] = item.value();
  } else {
    j["rope_scaling"] = nullptr;
  }
  j["rope_parameters"] = rope;
  if (c.bos_token_id >= 0) j["bos_token_id"] = c.bos_token_id;
  if (c.eos_token_id >= 0) j["eos_token_id"] = c.eos_token_id;
  if (c.pad_token_id >= 0) j["pad_token_id"] = c.pad_token_id;
  return j;
}

}  // namespace gum
