// The LLaMA model on the CPU backend against tests/reference/llama_ref.py, an independent
// float64 PyTorch implementation of the Hugging Face formulas: logits, the loss and every
// parameter gradient must agree to ||ours - ref|| / ||ref|| < 1e-5 (fp32 against float64).
// The reference's config.json is written here with literal values, not by our own Hugging Face
// writer, so a field that writer gets wrong cannot be agreed to. rms_norm_eps is 0.02, large
// against the mean square of the activations (about 1), so that where eps enters the norm moves
// the outputs by about 1%, far above the tolerance (with 1e-5 it would be 5e-6).
#include <catch2/catch.hpp>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "common/relative_error.h"
#include "gum/core/error.h"
#include "gum/io/safetensors.h"
#include "gum/model/llama.h"

using namespace gum;
using gum::testing::relative_error;
namespace fs = std::filesystem;

namespace {

LlamaConfig small_gqa_config() {
  LlamaConfig c;
  c.hidden_size = 32;
  c.intermediate_size = 40;
  c.num_hidden_layers = 2;
  c.num_attention_heads = 4;
  c.num_key_value_heads = 2;
  c.vocab_size = 53;
  c.max_position_embeddings = 64;
  c.rms_norm_eps = 0.02;
  c.rope_theta = 500.0;  // small theta: every frequency turns noticeably over a few positions
  return c;
}

// small_gqa_config() in the Hugging Face keys llama_ref.py reads.
nlohmann::json small_gqa_reference_config() {
  return {{"hidden_size", 32},        {"num_hidden_layers", 2},  {"num_attention_heads", 4},
          {"num_key_value_heads", 2}, {"head_dim", 8},           {"rms_norm_eps", 0.02},
          {"rope_theta", 500.0},      {"rope_scaling", nullptr}, {"tie_word_embeddings", false},
          {"attention_bias", false}};
}

// Random weights of a useful scale: matrices ~ N(0, 1/C), norms around 1, biases nonzero.
void randomize_weights(LlamaModel& model, uint64_t seed) {
  Backend& be = model.backend();
  const auto& specs = model.specs();
  for (size_t i = 0; i < specs.size(); ++i) {
    const Tensor& p = model.params().view(i);
    switch (specs[i].kind) {
      case ParamKind::Norm:
        be.fill_normal(p, seed, i, 1.0f, 0.2f);
        break;
      case ParamKind::Bias:
        be.fill_normal(p, seed, i, 0.0f, 0.3f);
        break;
      case ParamKind::Embedding:
        be.fill_normal(p, seed, i, 0.0f, 1.0f);
        break;
      default:
        be.fill_normal(p, seed, i, 0.0f, float(1.0 / std::sqrt(double(p.cols()))));
        break;
    }
  }
}

HostTensor to_host(Backend& be, const Tensor& t) {
  HostTensor h(t.dtype, t.shape);
  be.copy_to_host(h.bytes.data(), t);
  return h;
}

HostTensor int_tensor(const std::vector<int32_t>& v, int B, int T) {
  HostTensor h(DType::I32, Shape{B, T});
  std::memcpy(h.bytes.data(), v.data(), h.bytes.size());
  return h;
}

std::vector<double> as_double(const HostTensor& h) {
  std::vector<double> out(static_cast<size_t>(h.numel()));
  if (h.dtype == DType::F64) {
    std::memcpy(out.data(), h.bytes.data(), h.bytes.size());
  } else {
    auto f = h.to_f32();
    out.assign(f.begin(), f.end());
  }
  return out;
}

struct Inputs {
  int batch;
  std::vector<int32_t> tokens, targets, positions, doc_start;  // positions/doc_start may be empty
};

Inputs make_inputs(const LlamaConfig& c, int B, int T, bool packed, uint64_t seed) {
  Inputs in{B, {}, {}, {}, {}};
  std::srand(unsigned(seed));
  for (int i = 0; i < B * T; ++i) {
    in.tokens.push_back(std::rand() % c.vocab_size);
    in.targets.push_back(i % 5 == 4 ? -1 : std::rand() % c.vocab_size);  // some ignored targets
  }
  if (packed) {
    for (int b = 0; b < B; ++b) {
      const int split = 3 + 2 * b;  // a second document starts here, its RoPE positions restart
      for (int t = 0; t < T; ++t) {
        in.doc_start.push_back(t < split ? 0 : split);
        in.positions.push_back(t < split ? t : t - split);
      }
    }
  }
  return in;
}

// Runs our forward/backward and the PyTorch reference on the same weights and inputs,
// and compares logits, loss and all gradients. `reference_config` is the same model in Hugging
// Face keys, for llama_ref.py.
void compare_with_reference(const LlamaConfig& config, const nlohmann::json& reference_config, const std::string& tag,
                            int max_batch, int T, const Inputs& in) {
  auto backend = make_backend("cpu");
  LlamaModel model(config, *backend, max_batch, T);
  randomize_weights(model, 1234);
  model.zero_grads();

  TokenBatch batch;
  batch.tokens = in.tokens.data();
  batch.targets = in.targets.data();
  batch.positions = in.positions.empty() ? nullptr : in.positions.data();
  batch.doc_start = in.doc_start.empty() ? nullptr : in.doc_start.data();
  batch.batch = in.batch;
  const double loss = model.forward(batch);
  const HostTensor logits = to_host(*backend, model.logits());
  const float loss_scale = 0.03125f;
  model.backward(loss_scale);

  const fs::path dir = fs::path(GUM_BINARY_DIR) / "test_outputs" / ("llama_reference_" + tag);
  fs::create_directories(dir);
  TensorMap weights;
  for (size_t i = 0; i < model.specs().size(); ++i)
    weights[model.specs()[i].name] = to_host(*backend, model.params().view(i));
  write_safetensors((dir / "weights.safetensors").string(), weights);
  TensorMap inputs;
  inputs["tokens"] = int_tensor(in.tokens, in.batch, T);
  inputs["targets"] = int_tensor(in.targets, in.batch, T);
  if (!in.positions.empty()) inputs["positions"] = int_tensor(in.positions, in.batch, T);
  if (!in.doc_start.empty()) inputs["doc_start"] = int_tensor(in.doc_start, in.batch, T);
  write_safetensors((dir / "inputs.safetensors").string(), inputs);
  std::ofstream(dir / "config.json") << reference_config.dump(2);

  const std::string command = std::string(GUM_SYSTEM_PYTHON) + " " + GUM_SOURCE_DIR +
                              "/tests/reference/llama_ref.py --config " + (dir / "config.json").string() +
                              " --weights " + (dir / "weights.safetensors").string() + " --inputs " +
                              (dir / "inputs.safetensors").string() + " --out " + (dir / "ref.safetensors").string() +
                              " --loss-scale " + std::to_string(loss_scale);
  INFO(command);
  REQUIRE(std::system(command.c_str()) == 0);
  const TensorMap ref = read_safetensors((dir / "ref.safetensors").string());

  {
    INFO(tag << ": logits");
    REQUIRE(relative_error(as_double(ref.at("logits")), as_double(logits)) < 1e-5);
  }
  const double ref_loss = as_double(ref.at("loss"))[0];
  INFO(tag << ": loss " << loss << " vs reference " << ref_loss);
  REQUIRE(std::fabs(loss - ref_loss) / std::fabs(ref_loss) < 1e-5);
  for (size_t i = 0; i < model.specs().size(); ++i) {
    const std::string& name = model.specs()[i].name;
    const std::vector<double> ours = as_double(to_host(*backend, model.grads().view(i)));
    const std::vector<double> theirs = as_double(ref.at("grad." + name));
    const double err = relative_error(theirs, ours);
    INFO(tag << ": gradient of " << name << " relative error " << err);
    REQUIRE(err < 1e-5);
  }
}

}  // namespace

TEST_CASE("2-layer GQA model: logits, loss and gradients match PyTorch") {
  const auto config = small_gqa_config();
  compare_with_reference(config, small_gqa_reference_config(), "gqa", 2, 12, make_inputs(config, 2, 12, false, 1));
}

TEST_CASE("tied embeddings: the head gradient accumulates into the embedding") {
  auto config = small_gqa_config();
  config.tie_word_embeddings = true;
  nlohmann::json reference = small_gqa_reference_config();
  reference["tie_word_embeddings"] = true;
  compare_with_reference(config, reference, "tied", 2, 12, make_inputs(config, 2, 12, false, 2));
}

TEST_CASE("attention_bias: q/k/v/o biases match PyTorch") {
  auto config = small_gqa_config();
  config.attention_bias = true;
  config.o_proj_bias = true;
  nlohmann::json reference = small_gqa_reference_config();
  reference["attention_bias"] = true;
  compare_with_reference(config, reference, "bias", 2, 12, make_inputs(config, 2, 12, false, 3));
}

TEST_CASE("packed documents with restarted positions and a batch below max_batch match PyTorch") {
  const auto config = small_gqa_config();
  compare_with_reference(config, small_gqa_reference_config(), "packed", 3, 10, make_inputs(config, 2, 10, true, 4));
}

TEST_CASE("llama3 and linear RoPE scaling match PyTorch") {
  auto config = small_gqa_config();
  config.rope_theta = 10000.0;
  config.rope_scaling.type = "llama3";
  config.rope_scaling.factor = 8.0;
  config.rope_scaling.low_freq_factor = 1.0;
  config.rope_scaling.high_freq_factor = 4.0;
  config.rope_scaling.original_max_position_embeddings = 64;  // wavelengths 6.3, 63, 628, 6283: all three bands
  nlohmann::json reference = small_gqa_reference_config();
  reference["rope_theta"] = 10000.0;
  reference["rope_scaling"] = {{"rope_type", "llama3"},
                               {"factor", 8.0},
                               {"low_freq_factor", 1.0},
                               {"high_freq_factor", 4.0},
                               {"original_max_position_embeddings", 64}};
  Inputs in = make_inputs(config, 2, 12, false, 5);
  in.positions.resize(24);
  for (int i = 0; i < 24; ++i) in.positions[i] = 3 * (i % 12) + 7;  // reach far positions
  compare_with_reference(config, reference, "llama3", 2, 12, in);
  config.rope_scaling.type = "linear";
  config.rope_scaling.factor = 4.0;
  reference["rope_scaling"] = {{"rope_type", "linear"}, {"factor", 4.0}};
  compare_with_reference(config, reference, "linear", 2, 12, in);
}
