// LlamaDecoder (KV-cache decoding) on the CUDA backend against the CPU backend: same weights
// (copied bit for bit), same tokens; the logits after the prefill and after every decode step, and
// after a chunked prefill, compared by normalised error.
#include <random>
#include <string>

#include "cuda_test_util.h"
#include "gum/model/decoder.h"
#include "gum/model/llama.h"

using namespace gum;
using namespace gum::cuda_test;

namespace {

LlamaConfig decoder_config(bool biases_tied_scaled) {
  LlamaConfig c;
  c.hidden_size = 64;
  c.intermediate_size = 176;
  c.num_hidden_layers = 3;
  c.num_attention_heads = 4;
  c.num_key_value_heads = 2;
  c.vocab_size = 211;
  c.max_position_embeddings = 64;
  c.initializer_range = 0.1;
  c.attention_bias = c.o_proj_bias = c.tie_word_embeddings = biases_tied_scaled;
  if (biases_tied_scaled) {
    c.rope_scaling.type = "llama3";
    c.rope_scaling.factor = 4.0;
    c.rope_scaling.original_max_position_embeddings = 16;
  }
  return c;
}

}  // namespace

TEST_CASE("LlamaDecoder on CUDA matches the CPU decoder after prefill, each decode step and a chunked prefill") {
  GUM_REQUIRE_GPU();
  for (bool variant : {false, true}) {
    INFO((variant ? "attention biases, tied embeddings, llama3 RoPE scaling" : "plain, untied"));
    const LlamaConfig config = decoder_config(variant);
    auto cpu = make_backend("cpu");
    auto gpu = make_backend("cuda");
    LlamaModel cpu_model(config, *cpu, 1, 1), gpu_model(config, *gpu, 1, 1);
    cpu_model.init_weights(17);
    for (size_t i = 0; i < cpu_model.specs().size(); ++i)  // init_weights leaves biases 0
      if (cpu_model.specs()[i].kind == ParamKind::Bias) cpu->fill_normal(cpu_model.params().view(i), 3, i, 0.0f, 0.1f);
    const auto weights = BackendPair::download(*cpu, cpu_model.params().all());
    gpu->copy_from_host(gpu_model.params().all(), weights.data());

    const int capacity = 40;
    std::mt19937_64 rng(5);
    std::vector<int32_t> tokens;
    for (int i = 0; i < capacity; ++i) tokens.push_back(int32_t(rng() % config.vocab_size));
    LlamaDecoder cpu_decoder(cpu_model, capacity), gpu_decoder(gpu_model, capacity);
    const std::vector<int32_t> prompt(tokens.begin(), tokens.begin() + 13);
    expect_close(BackendPair::download(*cpu, cpu_decoder.prefill(prompt)),
                 BackendPair::download(*gpu, gpu_decoder.prefill(prompt)), kF32Tolerance, "logits after prefill");
    for (int p = 13; p < capacity; ++p)
      expect_close(BackendPair::download(*cpu, cpu_decoder.decode(tokens[p])),
                   BackendPair::download(*gpu, gpu_decoder.decode(tokens[p])), kF32Tolerance,
                   "logits after decoding position " + std::to_string(p));

    LlamaDecoder gpu_chunked(gpu_model, capacity, 6);
    expect_close(BackendPair::download(*cpu, cpu_decoder.prefill(tokens)),
                 BackendPair::download(*gpu, gpu_chunked.prefill(tokens)), kF32Tolerance,
                 "logits after a prefill in chunks of 6");
  }
}
