// A whole training step of LlamaModel on the CUDA backend against the CPU backend: same weights
// (copied bit for bit), same batch; loss, logits, every gradient, the parameters after an AdamW
// update and the next loss compared. Then LlamaDecoder (KV-cache decoding) on both backends: the
// logits after a prefill, after every decode step and after a chunked prefill. And the model in
// bf16 and bf16_pure on both backends.
#include <string>

#include "cuda_test_util.h"
#include "gum/backend/arena.h"
#include "gum/model/decoder.h"
#include "gum/model/llama.h"

using namespace gum;
using namespace gum::cuda_test;

namespace {

LlamaConfig small_config(bool biases_and_tied) {
  LlamaConfig c;
  c.hidden_size = 64;
  c.intermediate_size = 176;
  c.num_hidden_layers = 3;
  c.num_attention_heads = 4;
  c.num_key_value_heads = 2;
  c.vocab_size = 211;
  c.max_position_embeddings = 64;
  c.initializer_range = 0.1;
  c.attention_bias = biases_and_tied;
  c.o_proj_bias = biases_and_tied;
  c.tie_word_embeddings = biases_and_tied;
  return c;
}

std::vector<float> host_values(Backend& backend, const Tensor& t) { return BackendPair::download(backend, t); }

}  // namespace

// How closely a CUDA training step follows the CPU's: relative, of the loss and of the relative L2
// errors of logits, gradients and parameters after one AdamW step.
struct StepTolerances {
  double loss, logits, gradients, parameters;
};

TEST_CASE("LlamaModel forward and backward on CUDA match the CPU backend per gradient (every attention kernel)") {
  GUM_REQUIRE_GPU();
  // The fp32 kernels (gemm, flash): reduction orders only. Gradients pass through every layer's
  // GEMMs and reductions in another order: allow 1e-4.
  const StepTolerances fp32{1e-5, kF32Tolerance, 1e-4, 1e-5};
  // flash_wmma: bf16 attention operands (2^-9 relative); measured on the emulator: loss 6.2e-5,
  // logits 4.6e-3, gradients 2.1e-2 (the worst parameter), parameters 8.0e-4 (the fp32 kernels:
  // 1.8e-8, 5.9e-7, 1.6e-6, 1.7e-6). A wrong attention kernel moves gradients by O(1).
  const StepTolerances bf16_attention{5e-4, 2e-2, 5e-2, 4e-3};
  for (const char* attention : {"gemm", "flash", "flash_wmma"})
    for (bool variant : {false, true}) {
      const StepTolerances& tol = std::string(attention) == "flash_wmma" ? bf16_attention : fp32;
      INFO((variant ? "attention biases, tied embeddings, packed documents" : "plain, untied, no doc_start")
           << "; training.attention=" << attention);
      const LlamaConfig config = small_config(variant);
      const int batch = 3, seq_len = 24;
      auto cpu = make_backend("cpu");
      auto gpu = BackendPair::make_cuda_backend(attention);
      LlamaModel cpu_model(config, *cpu, batch, seq_len);
      LlamaModel gpu_model(config, *gpu, batch, seq_len);
      cpu_model.init_weights(7);
      // Bit-identical weights (device logf/sinf may differ from glibc's by an ulp in init_weights).
      const auto weights = host_values(*cpu, cpu_model.params().all());
      gpu->copy_from_host(gpu_model.params().all(), weights.data());
      cpu_model.zero_grads();
      gpu_model.zero_grads();

      std::vector<int32_t> tokens, targets, doc_start;
      std::mt19937_64 rng(11);
      for (int i = 0; i < batch * seq_len; ++i) {
        const int t = i % seq_len;
        tokens.push_back(int32_t(rng() % config.vocab_size));
        targets.push_back(i % 13 == 5 ? -1 : int32_t(rng() % config.vocab_size));  // some ignored
        doc_start.push_back(t >= 10 ? 10 : 0);
      }
      TokenBatch tb;
      tb.tokens = tokens.data();
      tb.targets = targets.data();
      tb.doc_start = variant ? doc_start.data() : nullptr;
      tb.batch = batch;

      // The model reserved the op workspace of its largest step when it was built: the passes below
      // allocate nothing (a growth would be a cudaFree + cudaMalloc, a device wait, in step 1).
      const size_t reserved = gpu->workspace_bytes(), peak = gpu->peak_memory_bytes();
      CHECK(reserved == gpu_model.op_workspace_bytes());
      CHECK(reserved > 0);

      // Two micro-batches: gradients accumulate on both backends.
      for (int micro = 0; micro < 2; ++micro) {
        const double cpu_loss = cpu_model.forward(tb);
        const double gpu_loss = gpu_model.forward(tb);
        INFO("loss " << cpu_loss << " (cpu), " << gpu_loss << " (cuda)");
        REQUIRE(std::fabs(cpu_loss - gpu_loss) <= tol.loss * std::fabs(cpu_loss));
        expect_close(host_values(*cpu, cpu_model.logits()), host_values(*gpu, gpu_model.logits()), tol.logits,
                     "logits");
        std::vector<int> cpu_order, gpu_order;
        cpu_model.backward(1.0f / 60.0f, [&](int layer) { cpu_order.push_back(layer); });
        gpu_model.backward(1.0f / 60.0f, [&](int layer) { gpu_order.push_back(layer); });
        REQUIRE(cpu_order == gpu_order);
      }
      CHECK(gpu->workspace_bytes() == reserved);
      CHECK(gpu->peak_memory_bytes() == peak);
      for (size_t i = 0; i < cpu_model.specs().size(); ++i) {
        const std::string& name = cpu_model.specs()[i].name;
        const auto expected = host_values(*cpu, cpu_model.grads().view(i));
        const auto actual = host_values(*gpu, gpu_model.grads().view(i));
        expect_close(expected, actual, tol.gradients, "gradient of " + name);
      }

      // Complete the training step: one AdamW update of every parameter on each backend, from
      // the backend's own gradients, in moment arenas laid out like the parameters.
      std::vector<NamedShape> layout;
      for (const auto& spec : cpu_model.specs()) layout.push_back({spec.name, spec.shape});
      Arena cpu_m(*cpu, DType::F32, layout), cpu_v(*cpu, DType::F32, layout);
      Arena gpu_m(*gpu, DType::F32, layout), gpu_v(*gpu, DType::F32, layout);
      AdamWArgs args;
      args.lr = 1e-3f;
      args.weight_decay = 0.1f;
      for (size_t i = 0; i < cpu_model.specs().size(); ++i) {
        cpu->adamw_update(cpu_model.params().view(i), cpu_model.grads().view(i), cpu_m.view(i), cpu_v.view(i), args);
        gpu->adamw_update(gpu_model.params().view(i), gpu_model.grads().view(i), gpu_m.view(i), gpu_v.view(i), args);
      }
      expect_close(host_values(*cpu, cpu_model.params().all()), host_values(*gpu, gpu_model.params().all()),
                   tol.parameters, "parameters after one AdamW step");
      const double cpu_loss = cpu_model.forward(tb), gpu_loss = gpu_model.forward(tb);
      INFO("loss after the step " << cpu_loss << " (cpu), " << gpu_loss << " (cuda)");
      REQUIRE(std::fabs(cpu_loss - gpu_loss) <= tol.loss * std::fabs(cpu_loss));
    }
}

TEST_CASE("the chunked LM head on CUDA gives the unchunked loss and gradients (untied and tied)") {
  GUM_REQUIRE_GPU();
  for (bool tied : {false, true}) {
    INFO((tied ? "tied embeddings" : "untied"));
    const LlamaConfig config = small_config(tied);
    const int batch = 3, seq_len = 24;
    auto gpu = BackendPair::make_cuda_backend("gemm");
    LlamaModel whole(config, *gpu, batch, seq_len),
        chunked(config, *gpu, batch, seq_len, ModelUse::Training, Precision::Fp32, {17});
    whole.init_weights(3);
    chunked.init_weights(3);
    whole.zero_grads();
    chunked.zero_grads();
    std::vector<int32_t> tokens, targets;
    std::mt19937_64 rng(5);
    for (int i = 0; i < batch * seq_len; ++i) {
      tokens.push_back(int32_t(rng() % config.vocab_size));
      targets.push_back(i % 11 == 4 ? -1 : int32_t(rng() % config.vocab_size));
    }
    TokenBatch tb;
    tb.tokens = tokens.data();
    tb.targets = targets.data();
    tb.batch = batch;
    // 72 rows in chunks of 17: four full chunks and one of 4 rows.
    const double whole_loss = whole.forward(tb), chunked_loss = chunked.forward(tb);
    // A row's logits come from a GEMM of another row count, which may round differently
    // (measured: equal untied, 7.6e-9 relative tied).
    CHECK(std::fabs(whole_loss - chunked_loss) <= 1e-6 * std::fabs(whole_loss));
    whole.backward(1.0f / 72.0f);
    chunked.backward(1.0f / 72.0f);
    // The head (and with tied embeddings the embedding) gradient sums the rows chunk by chunk, and
    // those ulps reach the rest through d_lnf. Measured: relative L2 error 3.5e-7 untied, 3.8e-7
    // tied; 1e-5 leaves room for other GEMM kernels on a GPU.
    expect_close(host_values(*gpu, whole.grads().all()), host_values(*gpu, chunked.grads().all()), 1e-5, "gradients");
  }
}

TEST_CASE("LlamaDecoder on CUDA matches the CPU decoder after prefill, each decode step and a chunked prefill") {
  GUM_REQUIRE_GPU();
  for (bool variant : {false, true}) {
    INFO((variant ? "attention biases, tied embeddings, llama3 RoPE scaling" : "plain, untied"));
    LlamaConfig config = small_config(variant);
    if (variant) {
      config.rope_scaling.type = "llama3";
      config.rope_scaling.factor = 4.0;
      config.rope_scaling.original_max_position_embeddings = 16;
    }
    auto cpu = make_backend("cpu");
    auto gpu = make_backend("cuda");
    LlamaModel cpu_model(config, *cpu, 1, 1), gpu_model(config, *gpu, 1, 1);
    cpu_model.init_weights(17);
    for (size_t i = 0; i < cpu_model.specs().size(); ++i)  // init_weights leaves biases 0
      if (cpu_model.specs()[i].kind == ParamKind::Bias) cpu->fill_normal(cpu_model.params().view(i), 3, i, 0.0f, 0.1f);
    const auto weights = host_values(*cpu, cpu_model.params().all());
    gpu->copy_from_host(gpu_model.params().all(), weights.data());

    const int capacity = 40;
    std::mt19937_64 rng(5);
    std::vector<int32_t> tokens;
    for (int i = 0; i < capacity; ++i) tokens.push_back(int32_t(rng() % config.vocab_size));
    LlamaDecoder cpu_decoder(cpu_model, capacity), gpu_decoder(gpu_model, capacity);
    const std::vector<int32_t> prompt(tokens.begin(), tokens.begin() + 13);
    expect_close(host_values(*cpu, cpu_decoder.prefill(prompt)), host_values(*gpu, gpu_decoder.prefill(prompt)),
                 kF32Tolerance, "logits after prefill");
    for (int p = 13; p < capacity; ++p)
      expect_close(host_values(*cpu, cpu_decoder.decode(tokens[p])), host_values(*gpu, gpu_decoder.decode(tokens[p])),
                   kF32Tolerance, "logits after decoding position " + std::to_string(p));

    LlamaDecoder gpu_chunked(gpu_model, capacity, 6);
    expect_close(host_values(*cpu, cpu_decoder.prefill(tokens)), host_values(*gpu, gpu_chunked.prefill(tokens)),
                 kF32Tolerance, "logits after a prefill in chunks of 6");
  }
}

TEST_CASE("LlamaModel in bf16 and bf16_pure on CUDA matches the CPU backend in the same precision") {
  GUM_REQUIRE_GPU();
  for (Precision precision : {Precision::Bf16, Precision::Bf16Pure})
    for (const char* attention : {"gemm", "flash"}) {
      INFO(precision_name(precision) << "; training.attention=" << attention);
      const LlamaConfig config = small_config(true);
      const int batch = 2, seq_len = 16;
      auto cpu = make_backend("cpu");
      auto gpu = BackendPair::make_cuda_backend(attention);
      LlamaModel cpu_model(config, *cpu, batch, seq_len, ModelUse::Training, precision);
      LlamaModel gpu_model(config, *gpu, batch, seq_len, ModelUse::Training, precision);
      cpu_model.init_weights(7);
      std::vector<uint8_t> weights(cpu_model.params().bytes());
      cpu->copy_to_host(weights.data(), cpu_model.params().all());
      gpu->copy_from_host(gpu_model.params().all(), weights.data());
      cpu_model.zero_grads();
      gpu_model.zero_grads();
      std::vector<int32_t> tokens, targets;
      std::mt19937_64 rng(12);
      for (int i = 0; i < batch * seq_len; ++i) {
        tokens.push_back(int32_t(rng() % config.vocab_size));
        targets.push_back(int32_t(rng() % config.vocab_size));
      }
      TokenBatch tb;
      tb.tokens = tokens.data();
      tb.targets = targets.data();
      tb.batch = batch;
      const double cpu_loss = cpu_model.forward(tb), gpu_loss = gpu_model.forward(tb);
      cpu_model.backward(1.0f / 32.0f);
      gpu_model.backward(1.0f / 32.0f);
      // Both compute in fp32 and round the same activations to bf16, so a last-bit difference in
      // an fp32 result flips a bf16 value by an ulp (2^-8) and the flip propagates. How often
      // depends on the code generated: with the gemm attention, measured gradients 2.2e-6 apart in
      // the Release build and up to 8.2e-3 in the -O2 sanitizer build (a GPU's FMAs will differ
      // too); the flash kernel's online softmax differs in the last fp32 bits anyway: loss 5.4e-4
      // relative, gradients up to 1.9e-2. A wrong kernel moves them by O(1).
      const bool flash = std::string(attention) == "flash";
      CHECK(std::fabs(cpu_loss - gpu_loss) <= 3e-3 * std::fabs(cpu_loss));
      for (size_t i = 0; i < cpu_model.specs().size(); ++i)
        expect_close(host_values(*cpu, cpu_model.grads().view(i)), host_values(*gpu, gpu_model.grads().view(i)),
                     flash ? 6e-2 : 3e-2, "gradient of " + cpu_model.specs()[i].name);
    }
}
