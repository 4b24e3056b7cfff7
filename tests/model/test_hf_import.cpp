// Hugging Face import: config.json translation (Llama, Mistral, Qwen2, GaLore's old names) and
// weight loading (single file, sharded index, F16/BF16 conversion, strict name/shape checks).
#include <catch2/catch.hpp>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "common/run_command.h"
#include "common/skip.h"
#include "gum/backend/backend.h"
#include "gum/core/error.h"
#include "gum/core/json_util.h"
#include "gum/core/philox.h"
#include "gum/io/hf_export.h"
#include "gum/io/safetensors.h"
#include "gum/model/hf_import.h"
#include "gum/model/llama.h"
#include "gum/model/params.h"

using namespace gum;
using Catch::Matchers::Contains;
namespace fs = std::filesystem;
using gum_test::CommandResult;
using gum_test::run_command;

namespace {

nlohmann::json llama3_config() {
  return nlohmann::json::parse(R"({
    "architectures": ["LlamaForCausalLM"], "model_type": "llama",
    "hidden_size": 64, "intermediate_size": 160, "num_hidden_layers": 2,
    "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 300,
    "max_position_embeddings": 131072, "rms_norm_eps": 1e-05, "rope_theta": 500000.0,
    "rope_scaling": {"factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                     "original_max_position_embeddings": 8192, "rope_type": "llama3"},
    "hidden_act": "silu", "attention_bias": false, "mlp_bias": false, "tie_word_embeddings": true,
    "bos_token_id": 128000, "eos_token_id": [128001, 128008, 128009], "torch_dtype": "bfloat16"
  })");
}

fs::path fresh_dir(const std::string& name) {
  fs::path dir = fs::path(GUM_BINARY_DIR) / "test_tmp" / "hf_import" / name;
  fs::remove_all(dir);
  fs::create_directories(dir);
  return dir;
}

LlamaConfig tiny_config(bool tied, bool bias) {
  LlamaConfig c;
  c.hidden_size = 16;
  c.intermediate_size = 24;
  c.num_hidden_layers = 2;
  c.num_attention_heads = 4;
  c.num_key_value_heads = 2;
  c.vocab_size = 40;
  c.max_position_embeddings = 64;
  c.tie_word_embeddings = tied;
  c.attention_bias = bias;
  c.o_proj_bias = bias;
  return c;
}

// Every tensor of the config with distinct random values (F32).
TensorMap random_weights(const LlamaConfig& c, uint64_t seed) {
  TensorMap weights;
  uint64_t stream = 0;
  for (const ParamSpec& spec : llama_param_specs(c)) {
    std::vector<float> values(static_cast<size_t>(spec.shape.numel()));
    for (size_t i = 0; i < values.size(); ++i) values[i] = philox_normal(seed, stream, i);
    weights[spec.name] = HostTensor::from_f32(spec.shape, values);
    ++stream;
  }
  return weights;
}

void write_config(const fs::path& dir, const nlohmann::json& config) {
  std::ofstream(dir / "config.json") << config.dump(2);
}

HostTensor convert(const HostTensor& t, DType dtype) {
  HostTensor out(dtype, t.shape);
  std::vector<float> values = t.to_f32();
  for (size_t i = 0; i < values.size(); ++i) {
    uint16_t h = dtype == DType::BF16 ? f32_to_bf16(values[i]) : f32_to_f16(values[i]);
    std::memcpy(out.bytes.data() + 2 * i, &h, 2);
  }
  return out;
}

// ---- round trip with transformers ----

// The venv's python with transformers (created on first use); skips the test when PyPI is unreachable.
std::string transformers_python() {
  const std::string venv = std::string(GUM_BINARY_DIR) + "/hf_venv";
  CommandResult r = run_command(std::string("GUM_SYSTEM_PYTHON=") + GUM_SYSTEM_PYTHON + " bash " + GUM_SOURCE_DIR +
                                "/tests/reference/setup_hf_venv.sh " + venv);
  if (r.exit_code == 3) GUM_SKIP_TEST("cannot install transformers==4.46.3 from PyPI (offline?)");
  INFO(r.output);
  REQUIRE(r.exit_code == 0);
  return venv + "/bin/python";
}

std::string roundtrip_script() { return std::string(GUM_SOURCE_DIR) + "/tests/reference/hf_roundtrip.py"; }

void copy_weights_into(LlamaModel& model, const TensorMap& weights) {
  for (const ParamSpec& spec : model.specs())
    model.backend().copy_from_host(model.params().view(spec.name), weights.at(spec.name).bytes.data());
}

TensorMap weights_of(LlamaModel& model) {
  TensorMap out;
  for (const ParamSpec& spec : model.specs()) {
    HostTensor host(DType::F32, spec.shape);
    model.backend().copy_to_host(host.bytes.data(), model.params().view(spec.name));
    out[spec.name] = std::move(host);
  }
  return out;
}

// Logits [B * T, V] of our model for B rows of T tokens.
std::vector<float> gum_logits(LlamaModel& model, const std::vector<int32_t>& tokens, int batch) {
  TokenBatch b;
  b.tokens = tokens.data();
  b.batch = batch;
  model.forward(b);
  const int64_t rows = int64_t(batch) * model.seq_len();
  std::vector<float> logits(static_cast<size_t>(rows * model.config().vocab_size));
  model.backend().copy_to_host(logits.data(), model.logits().row_slice(0, rows));
  return logits;
}

// max |ours - reference| / max |reference|.
double relative_error(const std::vector<float>& ours, const std::vector<float>& reference) {
  REQUIRE(ours.size() == reference.size());
  double max_error = 0, max_reference = 0;
  for (size_t i = 0; i < ours.size(); ++i) {
    max_error = std::max(max_error, std::abs(double(ours[i]) - double(reference[i])));
    max_reference = std::max(max_reference, std::abs(double(reference[i])));
  }
  return max_error / max_reference;
}

// Writes what `gum_train export` writes (config.json from llama_config_to_hf_json, model.safetensors)
// plus gum_logits.safetensors for hf_roundtrip.py check.
void export_with_logits(const fs::path& dir, LlamaModel& model, const std::vector<int32_t>& tokens, int batch) {
  HfFolder folder;
  folder.config = llama_config_to_hf_json(model.config());
  folder.generation_config = {{"_from_model_config", true}};
  folder.weights = weights_of(model);
  write_hf_folder(dir.string(), folder);
  std::vector<int64_t> ids(tokens.begin(), tokens.end());
  HostTensor input_ids(DType::I64, Shape{batch, model.seq_len()});
  std::memcpy(input_ids.bytes.data(), ids.data(), ids.size() * 8);
  TensorMap out;
  out["input_ids"] = std::move(input_ids);
  out["logits"] =
      HostTensor::from_f32(Shape{batch, model.seq_len(), model.config().vocab_size}, gum_logits(model, tokens, batch));
  write_safetensors((dir / "gum_logits.safetensors").string(), out);
}

struct Reference {
  std::vector<int32_t> tokens;
  std::vector<float> logits;
  int batch = 0, seq_len = 0;
};

Reference read_reference(const fs::path& dir) {
  TensorMap ref = read_safetensors((dir / "reference.safetensors").string());
  const HostTensor& ids = ref.at("input_ids");
  REQUIRE(ids.dtype == DType::I64);
  Reference r;
  r.batch = static_cast<int>(ids.shape[0]);
  r.seq_len = static_cast<int>(ids.shape[1]);
  for (int64_t i = 0; i < ids.numel(); ++i) {
    int64_t id;
    std::memcpy(&id, ids.bytes.data() + 8 * i, 8);
    r.tokens.push_back(static_cast<int32_t>(id));
  }
  r.logits = ref.at("logits").to_f32();
  return r;
}

const std::vector<std::string> kTransformersVariants = {"llama_gqa", "llama_bias_llama3_rope", "llama_linear_rope",
                                                        "mistral", "qwen2"};

fs::path make_transformers_models(const std::string& python, const std::string& name) {
  fs::path root = fresh_dir(name);
  CommandResult made = run_command(python + " " + roundtrip_script() + " make " + root.string());
  INFO(made.output);
  REQUIRE(made.exit_code == 0);
  return root;
}

}  // namespace

TEST_CASE("Llama 3 config with llama3 rope scaling and an eos list", "[hf_import]") {
  LlamaConfig c = hf_config_from_json(llama3_config(), "llama3/config.json");
  CHECK(c.hidden_size == 64);
  CHECK(c.intermediate_size == 160);
  CHECK(c.num_hidden_layers == 2);
  CHECK(c.num_attention_heads == 4);
  CHECK(c.kv_heads() == 2);
  CHECK(c.attention_head_dim() == 16);
  CHECK(c.vocab_size == 300);
  CHECK(c.max_position_embeddings == 131072);
  CHECK(c.rms_norm_eps == Approx(1e-5));
  CHECK(c.rope_theta == 500000.0);
  CHECK(c.rope_scaling.type == "llama3");
  CHECK(c.rope_scaling.factor == 8.0);
  CHECK(c.rope_scaling.low_freq_factor == 1.0);
  CHECK(c.rope_scaling.high_freq_factor == 4.0);
  CHECK(c.rope_scaling.original_max_position_embeddings == 8192);
  CHECK(c.tie_word_embeddings);
  CHECK_FALSE(c.attention_bias);
  CHECK_FALSE(c.o_proj_bias);
  CHECK(c.bos_token_id == 128000);
  CHECK(c.eos_token_id == 128001);  // the first of the list ends generation
}

TEST_CASE("Llama config with old-style linear rope scaling ('type')", "[hf_import]") {
  nlohmann::json j = llama3_config();
  j["rope_scaling"] = {{"type", "linear"}, {"factor", 2}};
  j["attention_bias"] = true;
  LlamaConfig c = hf_config_from_json(j, "linear/config.json");
  CHECK(c.rope_scaling.type == "linear");
  CHECK(c.rope_scaling.factor == 2.0);
  CHECK(c.attention_bias);
  CHECK(c.o_proj_bias);  // Llama's attention_bias covers o_proj too
}

TEST_CASE("transformers 5 rope_parameters carry rope_theta and the scaling", "[hf_import]") {
  nlohmann::json j = llama3_config();
  j.erase("rope_theta");
  j.erase("rope_scaling");
  j["rope_parameters"] = {{"rope_type", "linear"}, {"factor", 4.0}, {"rope_theta", 1e6}};
  LlamaConfig c = hf_config_from_json(j, "v5/config.json");
  CHECK(c.rope_theta == 1e6);
  CHECK(c.rope_scaling.type == "linear");
  CHECK(c.rope_scaling.factor == 4.0);
  j["rope_parameters"] = {{"rope_type", "default"}, {"rope_theta", 5e5}};
  LlamaConfig d = hf_config_from_json(j, "v5/config.json");
  CHECK(d.rope_theta == 5e5);
  CHECK(d.rope_scaling.type.empty());
}

TEST_CASE("our own export config reads back identically", "[hf_import]") {
  LlamaConfig c = tiny_config(false, true);
  c.rope_theta = 12345.0;
  c.rope_scaling.type = "llama3";
  c.rope_scaling.factor = 8;
  c.rope_scaling.original_max_position_embeddings = 32;
  c.eos_token_id = 3;
  LlamaConfig back = hf_config_from_json(llama_config_to_hf_json(c), "export/config.json");
  CHECK(llama_param_specs(back).size() == llama_param_specs(c).size());
  CHECK(back.rope_theta == c.rope_theta);
  CHECK(back.rope_scaling.type == "llama3");
  CHECK(back.rope_scaling.original_max_position_embeddings == 32);
  CHECK(back.o_proj_bias);
  CHECK(back.eos_token_id == 3);
  CHECK(back.num_parameters() == c.num_parameters());
}

TEST_CASE("the exported config.json holds every field with its literal value", "[hf_import]") {
  // Written out by hand from transformers' LlamaConfig and Qwen2Config: the model reference test
  // gives PyTorch its own literal config, so this is where the writer's fields are checked.
  LlamaConfig c;
  c.hidden_size = 64;
  c.intermediate_size = 160;
  c.num_hidden_layers = 3;
  c.num_attention_heads = 4;
  c.num_key_value_heads = 2;
  c.vocab_size = 300;
  c.max_position_embeddings = 128;
  c.rms_norm_eps = 2e-6;
  c.rope_theta = 12345.0;
  c.initializer_range = 0.05;
  c.bos_token_id = 1;
  c.eos_token_id = 2;
  auto check_written = [](const LlamaConfig& config, const char* expected_text) {
    const nlohmann::json got = llama_config_to_hf_json(config), expected = nlohmann::json::parse(expected_text);
    INFO("difference (JSON patch from expected to written): " << nlohmann::json::diff(expected, got).dump());
    CHECK(got == expected);
  };
  check_written(c, R"({
    "architectures": ["LlamaForCausalLM"], "model_type": "llama",
    "hidden_size": 64, "intermediate_size": 160, "num_hidden_layers": 3, "num_attention_heads": 4,
    "num_key_value_heads": 2, "head_dim": 16, "vocab_size": 300, "max_position_embeddings": 128,
    "rms_norm_eps": 2e-06, "hidden_act": "silu", "attention_bias": false, "mlp_bias": false,
    "attention_dropout": 0.0, "tie_word_embeddings": false, "initializer_range": 0.05,
    "torch_dtype": "float32", "rope_theta": 12345.0, "rope_scaling": null,
    "rope_parameters": {"rope_type": "default", "rope_theta": 12345.0},
    "bos_token_id": 1, "eos_token_id": 2
  })");

  c.tie_word_embeddings = true;
  c.attention_bias = true;
  c.o_proj_bias = true;
  c.head_dim = 32;  // wider than hidden_size / heads
  c.pad_token_id = 0;
  c.rope_scaling.type = "llama3";
  c.rope_scaling.factor = 8.0;
  c.rope_scaling.low_freq_factor = 1.5;
  c.rope_scaling.high_freq_factor = 6.0;
  c.rope_scaling.original_max_position_embeddings = 96;
  check_written(c, R"({
    "architectures": ["LlamaForCausalLM"], "model_type": "llama",
    "hidden_size": 64, "intermediate_size": 160, "num_hidden_layers": 3, "num_attention_heads": 4,
    "num_key_value_heads": 2, "head_dim": 32, "vocab_size": 300, "max_position_embeddings": 128,
    "rms_norm_eps": 2e-06, "hidden_act": "silu", "attention_bias": true, "mlp_bias": false,
    "attention_dropout": 0.0, "tie_word_embeddings": true, "initializer_range": 0.05,
    "torch_dtype": "float32", "rope_theta": 12345.0,
    "rope_scaling": {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.5, "high_freq_factor": 6.0,
                     "original_max_position_embeddings": 96},
    "rope_parameters": {"rope_type": "llama3", "rope_theta": 12345.0, "factor": 8.0, "low_freq_factor": 1.5,
                        "high_freq_factor": 6.0, "original_max_position_embeddings": 96},
    "bos_token_id": 1, "eos_token_id": 2, "pad_token_id": 0
  })");

  // q/k/v biases without one on o_proj: Qwen2's config, which has no attention_bias or mlp_bias.
  c.head_dim = 0;
  c.o_proj_bias = false;
  c.rope_scaling.type.clear();
  c.bos_token_id = c.eos_token_id = c.pad_token_id = -1;
  check_written(c, R"({
    "architectures": ["Qwen2ForCausalLM"], "model_type": "qwen2",
    "hidden_size": 64, "intermediate_size": 160, "num_hidden_layers": 3, "num_attention_heads": 4,
    "num_key_value_heads": 2, "head_dim": 16, "vocab_size": 300, "max_position_embeddings": 128,
    "rms_norm_eps": 2e-06, "hidden_act": "silu",
    "use_sliding_window": false, "sliding_window": null, "max_window_layers": 3,
    "attention_dropout": 0.0, "tie_word_embeddings": true, "initializer_range": 0.05,
    "torch_dtype": "float32", "rope_theta": 12345.0, "rope_scaling": null,
    "rope_parameters": {"rope_type": "default", "rope_theta": 12345.0}
  })");
}

TEST_CASE("Mistral: sliding_window null is full attention, a small window is an error", "[hf_import]") {
  nlohmann::json j = nlohmann::json::parse(R"({
    "architectures": ["MistralForCausalLM"], "model_type": "mistral",
    "hidden_size": 64, "intermediate_size": 160, "num_hidden_layers": 2, "num_attention_heads": 4,
    "num_key_value_heads": 1, "head_dim": null, "vocab_size": 300, "max_position_embeddings": 32768,
    "rms_norm_eps": 1e-05, "rope_theta": 1000000.0, "sliding_window": null, "hidden_act": "silu",
    "tie_word_embeddings": false
  })");
  LlamaConfig c = hf_config_from_json(j, "mistral/config.json");
  CHECK(c.kv_heads() == 1);
  CHECK(c.attention_head_dim() == 16);
  CHECK(c.rope_theta == 1e6);
  CHECK_FALSE(c.attention_bias);

  j["sliding_window"] = 32768;  // as long as the context: no effect, accepted
  CHECK_NOTHROW(hf_config_from_json(j, "mistral/config.json"));
  j["sliding_window"] = 4096;
  CHECK_THROWS_WITH(hf_config_from_json(j, "mistral/config.json"),
                    Contains("mistral/config.json") && Contains("sliding_window") && Contains("4096"));
}

TEST_CASE("Qwen2: q/k/v biases and no o_proj bias", "[hf_import]") {
  nlohmann::json j = nlohmann::json::parse(R"({
    "architectures": ["Qwen2ForCausalLM"], "model_type": "qwen2",
    "hidden_size": 64, "intermediate_size": 160, "num_hidden_layers": 2, "num_attention_heads": 4,
    "num_key_value_heads": 2, "vocab_size": 300, "max_position_embeddings": 32768, "rms_norm_eps": 1e-06,
    "rope_theta": 1000000.0, "sliding_window": 4096, "use_sliding_window": false, "max_window_layers": 21,
    "hidden_act": "silu", "tie_word_embeddings": true
  })");
  LlamaConfig c = hf_config_from_json(j, "qwen2/config.json");
  CHECK(c.attention_bias);
  CHECK_FALSE(c.o_proj_bias);
  bool has_q_bias = false, has_o_bias = false;
  for (const ParamSpec& s : llama_param_specs(c)) {
    has_q_bias |= s.name == "model.layers.0.self_attn.q_proj.bias";
    has_o_bias |= s.name == "model.layers.0.self_attn.o_proj.bias";
  }
  CHECK(has_q_bias);
  CHECK_FALSE(has_o_bias);
  // Exported as Qwen2 (LlamaConfig's attention_bias would add an o_proj bias), and it reads back.
  const nlohmann::json exported = llama_config_to_hf_json(c);
  CHECK(exported["architectures"][0] == "Qwen2ForCausalLM");
  CHECK(exported["model_type"] == "qwen2");
  CHECK_FALSE(exported.contains("attention_bias"));
  LlamaConfig back = hf_config_from_json(exported, "export/config.json");
  CHECK(back.attention_bias);
  CHECK_FALSE(back.o_proj_bias);
  // Our own `model` section keeps o_proj_bias (checkpoints and resume rebuild the same tensors).
  nlohmann::json section = {{"hidden_size", 64},        {"intermediate_size", 160}, {"num_hidden_layers", 2},
                            {"num_attention_heads", 4}, {"vocab_size", 300},        {"max_position_embeddings", 64},
                            {"attention_bias", true},   {"o_proj_bias", false}};
  CHECK_FALSE(llama_config_from_json(section, "cfg.json").o_proj_bias);
  section.erase("o_proj_bias");
  CHECK(llama_config_from_json(section, "cfg.json").o_proj_bias);  // Llama's default: o too
  section["attention_bias"] = false;
  section["o_proj_bias"] = true;
  CHECK_THROWS_WITH(llama_config_from_json(section, "cfg.json"), Contains("model.o_proj_bias"));
  j["use_sliding_window"] = true;
  CHECK_THROWS_WITH(hf_config_from_json(j, "qwen2/config.json"), Contains("use_sliding_window"));
}

TEST_CASE("GaLore's LLaMAForCausalLM config with max_sequence_length", "[hf_import]") {
  // The shape of GaLore's configs/llama_60m.json (transformers 4.28 era names).
  nlohmann::json j = nlohmann::json::parse(R"({
    "architectures": ["LLaMAForCausalLM"], "bos_token_id": 0, "eos_token_id": 1, "hidden_act": "silu",
    "hidden_size": 512, "intermediate_size": 1376, "initializer_range": 0.02, "max_sequence_length": 1024,
    "model_type": "llama", "num_attention_heads": 8, "num_hidden_layers": 8, "pad_token_id": -1,
    "rms_norm_eps": 1e-06, "transformers_version": "4.28.1", "use_cache": true, "vocab_size": 32000
  })");
  LlamaConfig c = hf_config_from_json(j, "llama_60m.json");
  CHECK(c.max_position_embeddings == 1024);
  CHECK(c.rope_theta == 10000.0);
  CHECK(c.kv_heads() == 8);
  CHECK_FALSE(c.tie_word_embeddings);
  CHECK(c.eos_token_id == 1);
  CHECK(c.pad_token_id == -1);
  CHECK(c.num_parameters() == 58073600);  // GaLore's "60M": 25.2M non-embedding + 2 x 16.4M embeddings
}

TEST_CASE("a config without architectures falls back to model_type", "[hf_import]") {
  nlohmann::json j = llama3_config();
  j.erase("architectures");
  CHECK(hf_config_from_json(j, "c.json").rope_scaling.type == "llama3");
  j["model_type"] = "gpt2";
  CHECK_THROWS_WITH(hf_config_from_json(j, "c.json"), Contains("architectures"));
}

TEST_CASE("what cannot be represented exactly is an error naming the field", "[hf_import]") {
  nlohmann::json j = llama3_config();
  j["architectures"] = {"GPT2LMHeadModel"};
  CHECK_THROWS_WITH(hf_config_from_json(j, "x/config.json"),
                    Contains("x/config.json") && Contains("architectures") && Contains("GPT2LMHeadModel"));
  j = llama3_config();
  j["hidden_act"] = "gelu";
  CHECK_THROWS_WITH(hf_config_from_json(j, "x/config.json"), Contains("hidden_act") && Contains("gelu"));
  j = llama3_config();
  j["rope_scaling"] = {{"rope_type", "yarn"}, {"factor", 4.0}};
  CHECK_THROWS_WITH(hf_config_from_json(j, "x/config.json"), Contains("rope_scaling") && Contains("yarn"));
  j = llama3_config();
  j["rope_scaling"] = {{"type", "dynamic"}, {"factor", 2.0}};
  CHECK_THROWS_WITH(hf_config_from_json(j, "x/config.json"), Contains("dynamic"));
  j = llama3_config();
  j["mlp_bias"] = true;
  CHECK_THROWS_WITH(hf_config_from_json(j, "x/config.json"), Contains("mlp_bias"));
  j = llama3_config();
  j["hidden_size"] = "64";
  CHECK_THROWS_WITH(hf_config_from_json(j, "x/config.json"), Contains("hidden_size") && Contains("integer"));
  j = llama3_config();
  j["num_key_value_heads"] = 3;
  CHECK_THROWS_WITH(hf_config_from_json(j, "x/config.json"), Contains("num_key_value_heads"));
}

TEST_CASE("load_hf_model reads a single F32 file exactly", "[hf_import]") {
  LlamaConfig c = tiny_config(false, true);
  fs::path dir = fresh_dir("single");
  write_config(dir, llama_config_to_hf_json(c));
  TensorMap weights = random_weights(c, 1);
  write_safetensors((dir / "model.safetensors").string(), weights);
  std::ofstream(dir / "tokenizer.model") << "not read here";

  HfModel m = load_hf_model(dir.string());
  CHECK(m.config.hidden_size == 16);
  CHECK(m.tokenizer_path == (dir / "tokenizer.model").string());
  REQUIRE(m.weights.size() == weights.size());
  for (const auto& [name, t] : weights) {
    const HostTensor& got = m.weights.at(name);
    CHECK(got.dtype == DType::F32);
    CHECK(got.shape == t.shape);
    CHECK(got.bytes == t.bytes);
  }
}

TEST_CASE("load_hf_model converts BF16 and F16 weights to F32", "[hf_import]") {
  LlamaConfig c = tiny_config(true, false);
  for (DType dtype : {DType::BF16, DType::F16}) {
    fs::path dir = fresh_dir(std::string("half_") + dtype_name(dtype));
    write_config(dir, llama_config_to_hf_json(c));
    TensorMap stored;
    for (const auto& [name, t] : random_weights(c, 2)) stored[name] = convert(t, dtype);
    write_safetensors((dir / "model.safetensors").string(), stored);
    HfModel m = load_hf_model(dir.string());
    CHECK(m.tokenizer_path.empty());
    for (const auto& [name, t] : stored) {
      const HostTensor& got = m.weights.at(name);
      REQUIRE(got.dtype == DType::F32);
      std::vector<float> expected = t.to_f32(), values = got.to_f32();
      CHECK(values == expected);
    }
  }
}

TEST_CASE("load_hf_model follows a sharded index, tied lm_head copies and rotary caches are dropped", "[hf_import]") {
  LlamaConfig c = tiny_config(true, false);
  fs::path dir = fresh_dir("sharded");
  write_config(dir, llama_config_to_hf_json(c));
  TensorMap weights = random_weights(c, 3);
  TensorMap shard1, shard2;
  nlohmann::json index = {{"metadata", {{"total_size", 0}}}, {"weight_map", nlohmann::json::object()}};
  for (const auto& [name, t] : weights) {
    bool first = name.find("layers.1.") == std::string::npos;
    (first ? shard1 : shard2)[name] = t;
    index["weight_map"][name] = first ? "model-00001-of-00002.safetensors" : "model-00002-of-00002.safetensors";
  }
  // A tied checkpoint may still carry lm_head and old checkpoints carry rotary inv_freq buffers.
  shard2["lm_head.weight"] = weights.at("model.embed_tokens.weight");
  index["weight_map"]["lm_head.weight"] = "model-00002-of-00002.safetensors";
  shard2["model.layers.1.self_attn.rotary_emb.inv_freq"] = HostTensor::from_f32(Shape{2}, {1.0f, 0.1f});
  index["weight_map"]["model.layers.1.self_attn.rotary_emb.inv_freq"] = "model-00002-of-00002.safetensors";
  write_safetensors((dir / "model-00001-of-00002.safetensors").string(), shard1);
  write_safetensors((dir / "model-00002-of-00002.safetensors").string(), shard2);
  std::ofstream(dir / "model.safetensors.index.json") << index.dump(2);

  HfModel m = load_hf_model(dir.string());
  REQUIRE(m.weights.size() == weights.size());
  for (const auto& [name, t] : weights) CHECK(m.weights.at(name).bytes == t.bytes);

  // An index that names a tensor its shard lacks.
  index["weight_map"]["model.layers.9.mlp.up_proj.weight"] = "model-00001-of-00002.safetensors";
  std::ofstream(dir / "model.safetensors.index.json") << index.dump(2);
  CHECK_THROWS_WITH(load_hf_model(dir.string()),
                    Contains("model.layers.9.mlp.up_proj.weight") && Contains("model-00001-of-00002"));
  // An index that names a shard that does not exist.
  index["weight_map"]["model.layers.9.mlp.up_proj.weight"] = "model-00003-of-00002.safetensors";
  std::ofstream(dir / "model.safetensors.index.json") << index.dump(2);
  CHECK_THROWS_WITH(load_hf_model(dir.string()), Contains("model-00003-of-00002.safetensors"));
}

TEST_CASE("load_hf_model: missing tensor, wrong shape, unexpected tensor, missing files", "[hf_import]") {
  LlamaConfig c = tiny_config(false, false);
  fs::path dir = fresh_dir("bad");
  CHECK_THROWS_WITH(load_hf_model(dir.string()), Contains("config.json"));
  write_config(dir, llama_config_to_hf_json(c));
  CHECK_THROWS_WITH(load_hf_model(dir.string()), Contains("model.safetensors"));

  TensorMap weights = random_weights(c, 4);
  TensorMap missing = weights;
  missing.erase("lm_head.weight");  // untied: the head must be present
  write_safetensors((dir / "model.safetensors").string(), missing);
  CHECK_THROWS_WITH(load_hf_model(dir.string()), Contains("lm_head.weight") && Contains("[40, 16]"));

  TensorMap wrong = weights;
  wrong["model.layers.1.mlp.down_proj.weight"] = HostTensor::from_f32(Shape{24, 16}, std::vector<float>(384, 0.f));
  write_safetensors((dir / "model.safetensors").string(), wrong);
  CHECK_THROWS_WITH(load_hf_model(dir.string()),
                    Contains("model.layers.1.mlp.down_proj.weight") && Contains("[24, 16]") && Contains("[16, 24]"));

  TensorMap extra = weights;
  extra["model.layers.0.mlp.gate_proj.bias"] = HostTensor::from_f32(Shape{24}, std::vector<float>(24, 0.f));
  write_safetensors((dir / "model.safetensors").string(), extra);
  CHECK_THROWS_WITH(load_hf_model(dir.string()), Contains("unexpected tensor 'model.layers.0.mlp.gate_proj.bias'"));

  TensorMap integer = weights;
  integer["model.norm.weight"] = HostTensor(DType::I32, Shape{16});
  write_safetensors((dir / "model.safetensors").string(), integer);
  CHECK_THROWS_WITH(load_hf_model(dir.string()), Contains("model.norm.weight") && Contains("I32"));
}

TEST_CASE("transformers-made Llama, Mistral and Qwen2 models give the same logits here", "[hf_import][transformers]") {
  const std::string python = transformers_python();
  const fs::path root = make_transformers_models(python, "roundtrip_import");
  auto backend = make_backend("cpu");
  for (const std::string& variant : kTransformersVariants) {
    INFO(variant);
    HfModel hf = load_hf_model((root / variant).string());
    Reference ref = read_reference(root / variant);
    LlamaModel model(hf.config, *backend, ref.batch, ref.seq_len);
    copy_weights_into(model, hf.weights);
    double error = relative_error(gum_logits(model, ref.tokens, ref.batch), ref.logits);
    std::printf("%s: relative logits error %.3g\n", variant.c_str(), error);
    CHECK(error <= 1e-4);
  }
}

TEST_CASE("gum_train exports load in transformers with the same logits, and re-export is bit-exact",
          "[hf_import][transformers]") {
  const std::string python = transformers_python();
  const fs::path root = make_transformers_models(python, "roundtrip_export");
  auto backend = make_backend("cpu");
  std::vector<std::string> folders;

  // (b) Models initialised by gum_train: untied with biases and llama3 rope; tied without biases.
  for (bool tied : {false, true}) {
    LlamaConfig c = tiny_config(tied, !tied);
    c.hidden_size = 32;
    c.intermediate_size = 40;
    c.initializer_range = 0.2;
    if (!tied) {
      c.rope_scaling.type = "llama3";
      c.rope_scaling.factor = 4;
      c.rope_scaling.original_max_position_embeddings = 16;
    }
    LlamaModel model(c, *backend, 2, 12);
    model.init_weights(tied ? 21 : 22);
    std::vector<int32_t> tokens;
    for (int i = 0; i < 24; ++i) tokens.push_back((i * 7 + 3) % c.vocab_size);
    fs::path dir = root / (tied ? "gum_tied" : "gum_untied_bias_llama3");
    export_with_logits(dir, model, tokens, 2);
    folders.push_back(dir.string());
  }

  // (c) import -> export reproduces every tensor bit for bit (fp32). Qwen2's q/k/v-only biases
  // have no LlamaForCausalLM config (attention_bias covers o_proj too): it is written as Qwen2.
  for (const std::string& variant : kTransformersVariants) {
    INFO(variant);
    HfModel hf = load_hf_model((root / variant).string());
    Reference ref = read_reference(root / variant);
    LlamaModel model(hf.config, *backend, ref.batch, ref.seq_len);
    copy_weights_into(model, hf.weights);
    fs::path dir = root / ("reexport_" + variant);
    export_with_logits(dir, model, ref.tokens, ref.batch);
    folders.push_back(dir.string());
    const nlohmann::json exported_config = read_json_file((dir / "config.json").string());
    CHECK(exported_config["model_type"] == (variant == "qwen2" ? "qwen2" : "llama"));
    TensorMap original = read_safetensors((root / variant / "model.safetensors").string());
    TensorMap exported = read_safetensors((dir / "model.safetensors").string());
    REQUIRE(exported.size() == original.size());
    for (const auto& [name, tensor] : original) {
      INFO(name);
      REQUIRE(exported.count(name) == 1);
      CHECK(exported.at(name).dtype == DType::F32);
      CHECK(exported.at(name).shape == tensor.shape);
      CHECK(exported.at(name).bytes == tensor.bytes);
    }
  }

  std::string command = python + " " + roundtrip_script() + " check";
  for (const auto& f : folders) command += " " + f;
  CommandResult checked = run_command(command);
  std::printf("%s", checked.output.c_str());
  INFO(checked.output);
  CHECK(checked.exit_code == 0);
}
