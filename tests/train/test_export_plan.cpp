// `gum_train export` writes a Hugging Face folder; `gum_train plan` predicts memory without
// allocating it (even for the 7B preset).
#include <algorithm>
#include <catch2/catch.hpp>
#include <cmath>
#include <filesystem>

#include "gum/data/prepare.h"
#include "gum/io/checkpoint.h"
#include "gum/io/safetensors.h"
#include "gum/train/config.h"
#include "gum/train/plan.h"
#include "gum/train/runtime.h"
#include "train_test_util.h"
#include "training_setup.h"
#if __has_include(<gum_cuda_emu/control.h>)
#include <gum_cuda_emu/control.h>  // the emulated cuda backend: device allocations are counted
#define GUM_TEST_COUNTS_ALLOCATIONS 1
#endif

namespace fs = std::filesystem;
using namespace gum;
using namespace gum_test;

TEST_CASE("export writes config, weights with lm_head, generation config and tokenizer") {
  prepared_micro_data();
  const std::string dir = fresh_test_dir("export");
  const std::string config_path = write_config(
      dir, micro_config(dir + "/run", {{"training", {{"max_steps", 2}}}, {"checkpoint", {{"every_steps", 0}}}}));
  REQUIRE(run_gum_train(config_path + " --resume never").exit_code == 0);
  const std::string out = dir + "/hf";
  CommandResult r = run_gum_train("export --checkpoint " + dir + "/run/checkpoints --out " + out);
  INFO(r.output);
  REQUIRE(r.exit_code == 0);
  for (const char* f :
       {"config.json", "model.safetensors", "generation_config.json", "tokenizer.model", "tokenizer_config.json"})
    CHECK(fs::exists(out + "/" + f));

  nlohmann::json hf = nlohmann::json::parse(read_file(out + "/config.json"));
  CHECK(hf["architectures"][0] == "LlamaForCausalLM");
  CHECK(hf["hidden_size"] == 32);
  CHECK(hf["num_key_value_heads"] == 2);
  CHECK(hf.contains("rope_theta"));
  TensorMap exported = read_safetensors(out + "/model.safetensors");
  TensorMap saved = read_safetensors(dir + "/run/checkpoints/step_000002/model.safetensors");
  REQUIRE(exported.count("lm_head.weight") == 1);
  CHECK(exported.size() == saved.size());
  CHECK(exported.at("model.layers.1.mlp.down_proj.weight").bytes ==
        saved.at("model.layers.1.mlp.down_proj.weight").bytes);
  CHECK(read_file(out + "/tokenizer.model") == read_file(tokenizer_path(load_train_config(config_path).data)));

  r = run_gum_train("export --checkpoint " + dir + "/run/checkpoints");
  CHECK(r.exit_code == 2);
}

TEST_CASE("plan prints the memory budget of the 7B preset without allocating it") {
  CommandResult r = run_gum_train(std::string("plan ") + GUM_SOURCE_DIR + "/configs/llama_7b.json");
  INFO(r.output);
  REQUIRE(r.exit_code == 0);
  for (const char* row : {"weights", "gradients", "optimizer state", "activations", "FLOPs per token"})
    CHECK(r.output.find(row) != std::string::npos);
  CHECK(r.output.find("6.74G parameters") != std::string::npos);
}

TEST_CASE("plan with shard_states and several ranks reports the largest rank's optimizer state") {
  prepared_micro_data();
  const std::string dir = fresh_test_dir("plan_sharded");
  // micro_batch_size 2 for every world size below: only the optimizer state may differ.
  const std::string config_path =
      write_config(dir, micro_config(dir + "/run", {{"optimizer", {{"name", "muon"}, {"shard_states", true}}},
                                                    {"training", {{"batch_size", 6}, {"micro_batch_size", 2}}}}));
  const TrainConfig config = load_train_config(config_path);

  const MemoryPlan one = plan_run(config, 1);  // a world of one holds the whole state
  CHECK(one.rank_state_bytes.empty());
  const MemoryPlan three = plan_run(config, 3);
  REQUIRE(three.rank_state_bytes.size() == 3);
  size_t sum = 0, largest = 0;
  for (size_t bytes : three.rank_state_bytes) {
    CHECK(bytes > 0);
    sum += bytes;
    largest = std::max(largest, bytes);
  }
  // Whole matrices are split, never copied: the ranks' parts add up to the unsharded state.
  CHECK(sum == one.optimizer_state_bytes);
  CHECK(three.unsharded_optimizer_state_bytes == one.optimizer_state_bytes);
  CHECK(three.optimizer_state_bytes == largest);
  CHECK(three.rank_state_bytes[size_t(three.largest_state_rank)] == largest);
  CHECK(largest < one.optimizer_state_bytes);
  CHECK(three.total_bytes() == one.total_bytes() - one.optimizer_state_bytes + largest - one.optimizer_workspace_bytes +
                                   three.optimizer_workspace_bytes);

  // Replicated state: every rank holds it all, whatever the world size.
  TrainConfig replicated = config;
  replicated.optimizer.shard_states = false;
  const MemoryPlan three_replicated = plan_run(replicated, 3);
  CHECK(three_replicated.rank_state_bytes.empty());
  CHECK(three_replicated.optimizer_state_bytes == one.optimizer_state_bytes);

  CommandResult r = run_gum_train("plan " + config_path + " --world-size 3");
  INFO(r.output);
  REQUIRE(r.exit_code == 0);
  CHECK(r.output.find("3 rank(s)") != std::string::npos);
  CHECK(r.output.find("optimizer.shard_states: optimizer state per rank: rank 0 ") != std::string::npos);
  CHECK(r.output.find("holds the most (unsharded ") != std::string::npos);
  CHECK(run_gum_train("plan " + config_path + " --world-size 4").exit_code == 2);  // 6 rows do not split in 4
  CHECK(run_gum_train("plan " + config_path + " --world-size -1").exit_code == 2);
}

namespace {

// What one training step of one of `ranks` ranks allocates on a real backend, built as the
// trainer builds it (same layout, model memory and optimizer), with the fused update's per-layer
// hook when configured (without the other ranks: the hook updates each layer at once).
struct MeasuredStep {
  size_t weights, gradients, state, workspace, activations, peak;
  size_t op_workspace_reserved;  // the backend's op scratch before the step
  size_t op_workspace_after;     // and after it
  int64_t step_allocations;      // device allocations during the step (-1: not counted by this build)
};

int64_t device_allocations() {
#ifdef GUM_TEST_COUNTS_ALLOCATIONS
  return int64_t(gum_emu::stats().allocations);
#else
  return -1;
#endif
}
MeasuredStep measure_training_step(const TrainConfig& config, const std::string& backend_name, int ranks) {
  // The trainer's backend options: the attention kernel decides the size of attention's aux.
  std::unique_ptr<Backend> backend = make_backend(backend_name, 0, backend_options(config.training));
  TrainingSetup setup = build_training_setup(config, *backend, ranks);
  const BatchLayout& layout = setup.layout;
  LlamaModel& model = *setup.model;
  Optimizer* optimizer = setup.optimizer.get();
  const size_t op_workspace_reserved = backend->workspace_bytes();

  const int64_t rows = int64_t(layout.micro_batch) * config.training.seq_len;
  const SyntheticBatch tokens(config, layout.micro_batch, 1);
  StepInfo info;
  info.step = 1;
  info.lr = 1e-3f;
  info.lr_ratio = 1.0f;
  const int64_t allocations_before = device_allocations();
  model.zero_grads();
  optimizer->begin_step(info);
  for (int m = 0; m < layout.accumulation_steps; ++m) {
    model.forward(tokens.batch);
    const bool last = m + 1 == layout.accumulation_steps;
    model.backward(1.0f / float(rows * layout.accumulation_steps), [&](int layer) {
      if (last && config.training.fused_update)
        for (size_t i : optimizer->layer_params(layer)) optimizer->update(i);
    });
  }
  if (!config.training.fused_update) optimizer->step(info);
  backend->synchronize();
  const int64_t allocations =
      backend_name == "cuda" && allocations_before >= 0 ? device_allocations() - allocations_before : -1;
  return {model.params().bytes() + model.compute_weight_bytes(),
          model.gradient_bytes(),
          optimizer->total_state_bytes(),
          optimizer->workspace_bytes(),
          model.activation_bytes(),
          backend->peak_memory_bytes(),
          op_workspace_reserved,
          backend->workspace_bytes(),
          allocations};
}

}  // namespace

TEST_CASE("plan is exact: each component equals the arenas of a real training step, the total its peak") {
  struct Row {
    const char* precision;
    bool fused, checkpointed;
    int micro_batch;  // 0: the rank's rows in one pass (fused: per-layer gradients); 2: accumulated
    int ranks = 1;    // 2: per-layer gradients in two sets (one layer's reduction in flight)
  };
  // One line per configuration; a precision mode is a row.
  const std::vector<Row> rows = {
      {"fp32", false, false, 0},       {"fp32", false, true, 0},       {"fp32", true, false, 0},
      {"fp32", true, true, 0},         {"fp32", true, false, 2},       {"fp32", false, true, 2},
      {"fp32", true, false, 0, 2},     {"bf16", false, false, 0},      {"bf16", true, true, 0},
      {"bf16", false, true, 2},        {"bf16_pure", false, false, 0}, {"bf16_pure", true, false, 0},
      {"bf16_pure", true, true, 0, 2}, {"bf16_pure", true, true, 2},
  };
  const std::string dir = fresh_test_dir("plan_exact");
  std::vector<std::string> backends = {"cpu"};
  if (cuda_available()) backends.push_back("cuda");  // a GPU, or the emulator in CI
  for (const std::string& backend : backends)
    for (const Row& row : rows) {
      INFO(backend << " backend, " << row.precision << (row.fused ? ", fused" : "")
                   << (row.checkpointed ? ", checkpointed" : "") << ", micro-batch " << row.micro_batch << ", "
                   << row.ranks << " rank(s)");
      // 4 blocks (gradient sets reused by four), GUM with a full-rank block (state and
      // workspace), logits in chunks of 24 of the 64 rows (of 32 per rank with two ranks).
      const nlohmann::json patch = {{"model", {{"num_hidden_layers", 4}}},
                                    {"optimizer", {{"name", "gum"}, {"rank", 4}, {"full_rank_layers", 1}}},
                                    {"training",
                                     {{"backend", backend},
                                      {"precision", row.precision},
                                      {"fused_update", row.fused},
                                      {"grad_clip", row.fused ? 0.0 : 1.0},
                                      {"activation_checkpointing", row.checkpointed},
                                      {"micro_batch_size", row.micro_batch},
                                      {"logits_chunk_rows", 24}}}};
      const TrainConfig config = load_train_config(write_config(dir, micro_config(dir + "/run", patch)));
      const MemoryPlan plan = plan_run(config, row.ranks);
      const MeasuredStep measured = measure_training_step(config, backend, row.ranks);
      CHECK(plan.weight_bytes == measured.weights);
      CHECK(plan.gradient_bytes == measured.gradients);
      CHECK(plan.optimizer_state_bytes == measured.state);
      CHECK(plan.optimizer_workspace_bytes == measured.workspace);
      CHECK(plan.activation_bytes == measured.activations);
      // The op scratch the model and the optimizer reserved at start-up is all the step takes
      // (GUM's SVDs at the projector refresh of step 1 and bf16 attention's fp32 copies included).
      CHECK(plan.op_workspace_bytes == measured.op_workspace_reserved);
      CHECK((plan.op_workspace_bytes > 0) == (backend == "cuda"));
      CHECK(measured.op_workspace_after == measured.op_workspace_reserved);
      if (measured.step_allocations >= 0) CHECK(measured.step_allocations == 0);
      // Logits are activations: bf16 under both bf16 modes.
      const size_t logit_bytes = std::string(row.precision) == "fp32" ? sizeof(float) : 2;
      CHECK(plan.logits_bytes == 24 * 128 * logit_bytes);
      // The rest of the peak: token ids, the RoPE table, allocations rounded up (measured 3.5 KiB of
      // 0.39 to 1.1 MiB, under 1%: 5% leaves room for rounding on other shapes), and on cuda two
      // 8 KiB reduction buffers (the main and the side stream's) and the status word (measured 20.5
      // KiB in all of 0.47 to 1.2 MiB). The op workspace is planned whole: SVDs, QRs and bf16
      // attention's fp32 copies included.
      const double unplanned = backend == "cuda" ? 2 * 8.0 * 1024 : 0.0;
      INFO("planned " << plan.total_bytes() << " bytes, peak " << measured.peak);
      CHECK(double(plan.total_bytes()) <= double(measured.peak));
      CHECK(double(measured.peak) - double(plan.total_bytes()) <= 0.05 * double(measured.peak) + unplanned);
      // Whole gradients take 4 bytes a parameter; per-layer ones hold one block set (one rank) or two,
      // and are bf16 under bf16_pure except for the norm weights and biases.
      const bool per_layer = row.fused && row.micro_batch == 0;
      CHECK(plan.per_layer_grads == per_layer);
      CHECK((plan.gradient_bytes < size_t(plan.parameters) * sizeof(float)) == per_layer);
      if (per_layer) CHECK(plan.gradient_sets == row.ranks);
      CHECK((plan.matrix_gradient_dtype == DType::BF16) == (per_layer && std::string(row.precision) == "bf16_pure"));
    }
}

TEST_CASE("the first step allocates nothing on cuda: every optimizer's refresh and precision reserved at start-up") {
  if (!cuda_available()) return;  // the op workspace is the cuda backend's (the cpu has none)
  struct Row {
    nlohmann::json optimizer;
    const char* attention;
  };
  // Each low-rank family refreshes its projectors at step 1 with its own SVDs and QRs.
  const std::vector<Row> rows = {
      {{{"name", "adamw"}}, "flash_wmma"},
      {{{"name", "muon"}}, "flash_wmma"},
      {{{"name", "galore_adamw"}, {"rank", 4}}, "flash_wmma"},
      {{{"name", "galore_adamw"}, {"rank", 4}, {"projector", "randomized"}}, "gemm"},
      {{{"name", "plumage"}, {"rank", 4}}, "flash"},
      {{{"name", "stiefel"}, {"rank", 4}}, "flash_wmma"},
      {{{"name", "stiefel"}, {"rank", 4}, {"stiefel_sampling", "optimal"}}, "flash_wmma"},
      {{{"name", "gum"}, {"rank", 4}, {"full_rank_layers", 1}, {"projector", "randomized"}}, "gemm"},
      {{{"name", "galore_adamw"}, {"rank", 4}, {"state_dtype", "bf16"}}, "flash_wmma"},
      {{{"name", "gum"}, {"rank", 4}, {"full_rank_layers", 1}, {"state_dtype", "bf16"}}, "flash_wmma"},
  };
  const std::string dir = fresh_test_dir("first_step_allocations");
  for (const Row& row : rows)
    for (const char* precision : {"fp32", "bf16", "bf16_pure"}) {
      INFO(row.optimizer.dump() << ", " << precision << ", attention " << row.attention);
      const nlohmann::json patch = {
          {"optimizer", row.optimizer},
          {"training", {{"backend", "cuda"}, {"precision", precision}, {"attention", row.attention}}}};
      const TrainConfig config = load_train_config(write_config(dir, micro_config(dir + "/run", patch)));
      const MemoryPlan plan = plan_run(config, 1);
      const MeasuredStep measured = measure_training_step(config, "cuda", 1);
      CHECK(plan.op_workspace_bytes == measured.op_workspace_reserved);
      CHECK(measured.op_workspace_after == measured.op_workspace_reserved);
      if (measured.step_allocations >= 0) CHECK(measured.step_allocations == 0);
    }
}
