#include "gum/model/hf_import.h"

#include <filesystem>
#include <nlohmann/json.hpp>
#include <map>
#include <set>
#include <vector>

#include "gum/core/error.h"
#include "gum/core/json_util.h"
#include "gum/io/safetensors.h"
#include "gum/model/params.h"

namespace gum {

namespace fs = std::filesystem;

namespace {

template <typename T>
T field_or(const nlohmann::json& hf, const char* key, T fallback, const std::string& context) {
  T value = fallback;
  read_key(hf, key, value, context, "");
  return value;
}

void require(bool ok, const std::string& context, const std::string& field, const std::string& why) {
  if (!ok) usage_error(context, ": field '", field, "' ", why);
}

}  // namespace

LlamaConfig hf_config_from_json(const nlohmann::json& hf, const std::string& context) {
  if (!hf.is_object()) usage_error(context, ": a Hugging Face config must be a JSON object");
  std::string architecture;
  if (hf.contains("architectures") && hf["architectures"].is_array() && !hf["architectures"].empty() &&
      hf["architectures"][0].is_string()) {
    architecture = hf["architectures"][0].get<std::string>();
  } else {
    // Some hand-written configs name only the model_type.
    const std::string model_type = field_or<std::string>(hf, "model_type", "", context);
    if (model_type == "llama") architecture = "LlamaForCausalLM";
    else if (model_type == "mistral") architecture = "MistralForCausalLM";
    else if (model_type == "qwen2") architecture = "Qwen2ForCausalLM";
  }
  const std::set<std::string> supported = {"LlamaForCausalLM", "LLaMAForCausalLM", "MistralForCausalLM",
                                           "Qwen2ForCausalLM"};
  require(supported.count(architecture) != 0, context, "architectures",
          "is '" + architecture +
              "'; supported: LlamaForCausalLM, MistralForCausalLM, Qwen2ForCausalLM (and GaLore's LLaMAForCausalLM)");
  const bool is_qwen2 = architecture == "Qwen2ForCausalLM";

  LlamaConfig c;
  c.hidden_size = field_or(hf, "hidden_size", 0, context);
  c.intermediate_size = field_or(hf, "intermediate_size", 0, context);
  c.num_hidden_layers = field_or(hf, "num_hidden_layers", 0, context);
  c.num_attention_heads = field_or(hf, "num_attention_heads", 0, context);
  c.num_key_value_heads = field_or(hf, "num_key_value_heads", c.num_attention_heads, context);
  c.head_dim = field_or(hf, "head_dim", 0, context);
  c.vocab_size = field_or(hf, "vocab_size", 0, context);
  // GaLore's configs say max_sequence_length where transformers says max_position_embeddings.
  c.max_position_embeddings = field_or(hf, "max_sequence_length", 0, context);
  c.max_position_embeddings = field_or(hf, "max_position_embeddings", c.max_position_embeddings, context);
  c.rms_norm_eps = field_or(hf, "rms_norm_eps", 1e-6, context);
  c.initializer_range = field_or(hf, "initializer_range", 0.02, context);
  c.tie_word_embeddings = field_or(hf, "tie_word_embeddings", false, context);
  c.bos_token_id = field_or(hf, "bos_token_id", -1, context);
  c.pad_token_id = field_or(hf, "pad_token_id", -1, context);
  if (hf.contains("eos_token_id") && hf["eos_token_id"].is_array())
    c.eos_token_id = hf["eos_token_id"].empty() ? -1 : hf["eos_token_id"][0].get<int>();
  else
    c.eos_token_id = field_or(hf, "eos_token_id", -1, context);

  std::string activation = field_or<std::string>(hf, "hidden_act", "silu", context);
  require(activation == "silu", context, "hidden_act", "is '" + activation + "'; only silu (SwiGLU) is supported");
  require(!field_or(hf, "mlp_bias", false, context), context, "mlp_bias", "is true; MLP biases are not supported");

  if (is_qwen2) {
    // Qwen2 always has q/k/v biases and none on o_proj.
    require(!field_or(hf, "use_sliding_window", false, context), context, "use_sliding_window",
            "is true; sliding-window attention is not supported");
    c.attention_bias = true;
    c.o_proj_bias = false;
  } else {
    c.attention_bias = field_or(hf, "attention_bias", false, context);
    c.o_proj_bias = c.attention_bias;
  }
  if (hf.contains("sliding_window") && !hf["sliding_window"].is_null()) {
    int window = hf["sliding_window"].get<int>();
    require(is_qwen2 || window >= c.max_position_embeddings, context, "sliding_window",
            "is " + std::to_string(window) + " (< max_position_embeddings " +
                std::to_string(c.max_position_embeddings) +
                "); sliding-window attention is not supported: set it to null if your sequences never exceed it");
  }

  // rope_theta (transformers <= 4) or rope_parameters.rope_theta (transformers 5); GaLore's configs have
  // neither and mean 10000.
  c.rope_theta = field_or(hf, "rope_theta", 10000.0, context);
  const nlohmann::json* scaling = nullptr;
  if (hf.contains("rope_scaling") && !hf["rope_scaling"].is_null()) scaling = &hf["rope_scaling"];
  if (hf.contains("rope_parameters") && hf["rope_parameters"].is_object()) {
    const auto& rp = hf["rope_parameters"];
    if (rp.contains("rope_theta")) c.rope_theta = rp["rope_theta"].get<double>();
    if (!scaling) scaling = &rp;
  }
  if (scaling) {
    std::string type = scaling->value("rope_type", scaling->value("type", std::string("default")));
    if (type != "default") {
      require(type == "linear" || type == "llama3", context, "rope_scaling.rope_type",
              "is '" + type + "'; supported: linear, llama3");
      c.rope_scaling.type = type;
      c.rope_scaling.factor = scaling->value("factor", 1.0);
      c.rope_scaling.low_freq_factor = scaling->value("low_freq_factor", 1.0);
      c.rope_scaling.high_freq_factor = scaling->value("high_freq_factor", 4.0);
      c.rope_scaling.original_max_position_embeddings = scaling->value("original_max_position_embeddings", 8192);
    }
  }
  c.validate(context);
  return c;
}

// Weights are converted to F32 file by file, so the peak is the F32 model plus one raw shard.
static void add_f32_tensors(TensorMap&& part, const std::string& file, TensorMap& all) {
  for (auto& [name, tensor] : part) {
    if (all.count(name)) runtime_error(file, ": tensor '", name, "' appears in more than one weight file");
    if (tensor.dtype == DType::F32) {
      all[name] = std::move(tensor);
      continue;
    }
    if (tensor.dtype != DType::BF16 && tensor.dtype != DType::F16 && tensor.dtype != DType::F64)
      runtime_error(file, ": tensor '", name, "' has dtype ", dtype_name(tensor.dtype),
                    "; weights must be F32, F16, BF16 or F64");
    all[name] = HostTensor::from_f32(tensor.shape, tensor.to_f32());
    tensor = HostTensor();  // release the raw bytes now
  }
}

static TensorMap read_all_weights(const fs::path& dir) {
  const fs::path single = dir / "model.safetensors";
  const fs::path index = dir / "model.safetensors.index.json";
  TensorMap all;
  if (fs::exists(single)) {
    add_f32_tensors(read_safetensors(single.string()), single.string(), all);
    return all;
  }
  if (!fs::exists(index))
    runtime_error(dir.string(), ": no model.safetensors or model.safetensors.index.json (only safetensors weights "
                                "are supported; convert pytorch_model.bin with transformers' save_pretrained)");
  nlohmann::json j = read_json_file(index.string());
  if (!j.is_object() || !j.contains("weight_map") || !j["weight_map"].is_object())
    runtime_error(index.string(), ": missing object 'weight_map'");
  std::map<std::string, std::vector<std::string>> names_by_file;
  for (const auto& item : j["weight_map"].items()) {
    if (!item.value().is_string())
      runtime_error(index.string(), ": weight_map['", item.key(), "'] must be a file name");
    names_by_file[item.value().get<std::string>()].push_back(item.key());
  }
  for (const auto& [file, names] : names_by_file) {
    const std::string path = (dir / file).string();
    if (!fs::exists(path))
      runtime_error(index.string(), ": shard '", file, "' (holding '", names.front(), "') does not exist");
    TensorMap part = read_safetensors(path);
    // The index and the shards must agree, or a tensor could silently come from the wrong place.
    for (const auto& name : names)
      if (!part.count(name))
        runtime_error(index.string(), ": weight_map puts tensor '", name, "' in '", file, "', which lacks it");
    add_f32_tensors(std::move(part), path, all);
  }
  return all;
}

HfModel load_hf_model(const std::string& dir_name) {
  const fs::path dir(dir_name);
  const fs::path config_path = dir / "config.json";
  if (!fs::exists(config_path)) runtime_error(dir_name, ": not a Hugging Face model folder (no config.json)");
  HfModel model;
  model.config = hf_config_from_json(read_json_file(config_path.string()), config_path.string());
  TensorMap raw = read_all_weights(dir);

  for (const ParamSpec& spec : llama_param_specs(model.config)) {
    auto it = raw.find(spec.name);
    if (it == raw.end())
      runtime_error(dir_name, ": weights have no tensor '", spec.name, "' (expected shape ", spec.shape.str(), ")");
    if (!(it->second.shape == spec.shape))
      runtime_error(dir_name, ": tensor '", spec.name, "' has shape ", it->second.shape.str(), ", config implies ",
                    spec.shape.str());
    model.weights[spec.name] = std::move(it->second);
    raw.erase(it);
  }
  // What is left must be something we knowingly drop: a tied head's copy or rotary caches.
  for (const auto& [name, tensor] : raw) {
    bool tied_head = name == "lm_head.weight" && model.config.tie_word_embeddings;
    bool rotary_cache = name.find("rotary_emb.inv_freq") != std::string::npos;
    if (!tied_head && !rotary_cache)
      runtime_error(dir_name, ": unexpected tensor '", name, "' (not part of a ", "LLaMA model with this config)");
  }
  const fs::path tokenizer = dir / "tokenizer.model";
  if (fs::exists(tokenizer))
    model.tokenizer_path = tokenizer.string();
  else if (fs::exists(dir / "tokenizer.json"))  // the folder: Tokenizer also reads tokenizer_config.json
    model.tokenizer_path = dir.string();
  return model;
}

}  // namespace gum
