// Training through the real trainer (the gum_train executable) on the CUDA backend against the
// CPU backend: the same micro llama (2 layers), data and seed, 5 steps of each optimizer family;
// the per-step losses must agree. Runs on a GPU or on the CPU emulator (tools/cuda_emu).
#include <algorithm>
#include <catch2/catch.hpp>
#include <cmath>
#include <filesystem>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

#include "common/skip.h"
#include "gum/backend/backend.h"
#include "train_test_util.h"

using namespace gum_test;

namespace {

// The loss of every step from metrics.jsonl.
std::vector<double> step_losses(const std::string& run_dir) {
  std::vector<double> losses;
  std::istringstream in(read_file(run_dir + "/metrics.jsonl"));
  std::string line;
  while (std::getline(in, line)) {
    const nlohmann::json j = nlohmann::json::parse(line);
    if (j.contains("loss")) losses.push_back(j["loss"].get<double>());
  }
  return losses;
}

// training: keys of the training section; attention gemm and fp32 GEMMs (allow_tf32 false) unless
// it names them, so that the cuda run computes what the cpu backend does.
std::vector<double> train(const std::string& name, const std::string& backend, const nlohmann::json& optimizer,
                          nlohmann::json training = nlohmann::json::object()) {
  const std::string dir = fresh_test_dir("cuda_training_" + name + "_" + backend);
  if (!training.contains("attention")) training["attention"] = "gemm";
  if (!training.contains("allow_tf32")) training["allow_tf32"] = false;
  training["backend"] = backend;
  training["max_steps"] = 5;
  const nlohmann::json patch = {
      {"optimizer", optimizer}, {"training", training}, {"checkpoint", {{"every_steps", 0}, {"at_end", false}}}};
  const CommandResult r = run_gum_train(write_config(dir, micro_config(dir + "/run", patch)) + " --resume never");
  INFO(r.output);
  REQUIRE(r.exit_code == 0);
  return step_losses(dir + "/run");
}

}  // namespace

TEST_CASE("training 5 steps with backend cuda matches the cpu backend's losses (adamw, muon, galore_adamw, gum)") {
  if (!gum::cuda_available()) GUM_SKIP_TEST("no usable GPU");
  prepared_micro_data();
  // The low-rank optimizers refresh their projection every 2 steps, so SVDs run on the device too;
  // GUM samples one of the 2 layers for a full-rank step per period.
  const std::vector<std::pair<std::string, nlohmann::json>> optimizers = {
      {"adamw", {{"name", "adamw"}}},
      {"muon", {{"name", "muon"}}},
      {"galore_adamw", {{"name", "galore_adamw"}, {"rank", 8}, {"update_proj_gap", 2}}},
      {"gum", {{"name", "gum"}, {"rank", 8}, {"update_proj_gap", 2}, {"full_rank_layers", 1}}},
  };
  for (const auto& [name, optimizer] : optimizers) {
    const std::vector<double> cpu = train(name, "cpu", optimizer), cuda = train(name, "cuda", optimizer);
    REQUIRE(cpu.size() == 5);
    REQUIRE(cuda.size() == 5);
    for (size_t step = 0; step < cpu.size(); ++step) {
      INFO(name << ", step " << step + 1 << ": cpu loss " << cpu[step] << ", cuda loss " << cuda[step]);
      // Measured on the emulator: relative differences <= 2e-8 for adamw, muon and galore_adamw
      // (reduction orders of the GEMMs and kernels), up to 3e-6 for gum by step 5 (the CPU backend's
      // SVD is LAPACK's gesdd, cuSOLVER's is gesvd, and Newton-Schulz amplifies the difference). 1e-4 leaves room for a
      // GPU's FMA contraction and libm ulps; a wrong kernel or update moves the loss by far more (the loss changes by
      // ~1e-1 per step here).
      CHECK(std::fabs(cuda[step] - cpu[step]) <= 1e-4 * std::fabs(cpu[step]));
    }
  }
}

TEST_CASE("training 5 steps with the default tensor-core attention (flash_wmma) follows the cpu backend's losses") {
  if (!gum::cuda_available()) GUM_SKIP_TEST("no usable GPU");
  prepared_micro_data();
  const nlohmann::json adamw = {{"name", "adamw"}};
  const std::vector<double> cpu = train("wmma_adamw", "cpu", adamw),
                            cuda = train("wmma_adamw", "cuda", adamw, {{"attention", "flash_wmma"}});
  REQUIRE(cpu.size() == 5);
  REQUIRE(cuda.size() == 5);
  for (size_t step = 0; step < cpu.size(); ++step) {
    INFO("step " << step + 1 << ": cpu loss " << cpu[step] << ", cuda loss " << cuda[step]);
    // bf16 attention operands: measured up to 5e-5 relative (step 5) on the emulator; 5e-4 leaves
    // room for the device's accumulation order, a wrong kernel moves the loss by ~1e-1 per step.
    CHECK(std::fabs(cuda[step] - cpu[step]) <= 5e-4 * std::fabs(cpu[step]));
  }
}

TEST_CASE(
    "training with TF32 GEMMs (training.allow_tf32, the cuda default) follows the cpu losses within TF32's error") {
  if (!gum::cuda_available()) GUM_SKIP_TEST("no usable GPU");
  prepared_micro_data();
  const nlohmann::json adamw = {{"name", "adamw"}};
  // Own run folders ("tf32_adamw"), so that ctest -j can run this beside the test above.
  const std::vector<double> cpu = train("tf32_adamw", "cpu", adamw),
                            tf32 = train("tf32_adamw", "cuda", adamw, {{"allow_tf32", true}});
  REQUIRE(tf32.size() == 5);
  double worst = 0.0;
  for (size_t step = 0; step < cpu.size(); ++step)
    worst = std::max(worst, std::fabs(tf32[step] - cpu[step]) / std::fabs(cpu[step]));
  INFO("worst relative loss difference " << worst);
  // Measured on the emulator: 7.3e-6 over 5 steps (TF32 rounds every GEMM operand to 2^-11 relative;
  // the loss averages those errors over many tokens). 1e-3 is loose for that and still far below
  // the ~1e-1 a wrong GEMM or update moves the loss by; above 1e-7 shows TF32 was used at all (fp32
  // runs agree to 2e-8).
  CHECK(worst <= 1e-3);
  CHECK(worst > 1e-7);
}

TEST_CASE("training 5 steps in bf16 and bf16_pure with backend cuda matches the cpu backend's losses") {
  if (!gum::cuda_available()) GUM_SKIP_TEST("no usable GPU");
  prepared_micro_data();
  struct Row {
    std::string name;
    nlohmann::json optimizer, training;
    // Measured on the emulator: equal to the 6 digits printed for most steps, up to 2.3e-5
    // relative by step 5 (a bf16 value whose fp32 results differ in the last bit rounds to the
    // neighbouring bf16 value, and the update follows it); 2e-4 leaves room for a GPU's FMA.
    double tolerance = 2e-4;
  };
  // GaLore and GUM with bf16 state: bf16 projectors meet fp32 gradients in the GEMMs (widened
  // there, as on the cpu). GaLore measured 1.5e-5. GUM measured 2.7e-4 by step 5 (1.6e-4 at step
  // 4, after the step-3 refresh), against 2.9e-5 with fp32 state; likely the bf16 projectors round the
  // SVDs' differences (LAPACK gesdd vs cuSOLVER gesvd) to neighbouring bf16 values, and GUM's
  // Newton-Schulz amplifies them as in the fp32 runs above (3e-6 vs 2e-8). 1e-3 is 4x that and
  // still 100x below the ~1e-1 a wrong GEMM moves the loss by.
  const nlohmann::json low_rank = {{"rank", 8}, {"update_proj_gap", 2}, {"state_dtype", "bf16"}};
  nlohmann::json galore = low_rank, gum = low_rank;
  galore["name"] = "galore_adamw";
  gum["name"] = "gum";
  gum["full_rank_layers"] = 1;
  const std::vector<Row> rows = {
      {"adamw_bf16", {{"name", "adamw"}}, {{"precision", "bf16"}}},
      {"muon_bf16_pure",
       {{"name", "muon"}, {"state_dtype", "bf16"}, {"ns_dtype", "bf16"}},
       {{"precision", "bf16_pure"}, {"weight_rounding", "stochastic"}}},
      {"adamw_bf16_pure_kahan",
       {{"name", "adamw"}, {"state_dtype", "bf16"}},
       {{"precision", "bf16_pure"}, {"weight_rounding", "kahan"}}},
      {"galore_bf16_state", galore, {{"precision", "bf16"}}},
      {"gum_bf16_state", gum, {{"precision", "bf16"}}, 1e-3},
  };
  for (const Row& row : rows) {
    const std::vector<double> cpu = train(row.name, "cpu", row.optimizer, row.training),
                              cuda = train(row.name, "cuda", row.optimizer, row.training);
    REQUIRE(cpu.size() == 5);
    REQUIRE(cuda.size() == 5);
    for (size_t step = 0; step < cpu.size(); ++step) {
      INFO(row.name << ", step " << step + 1 << ": cpu loss " << cpu[step] << ", cuda loss " << cuda[step]);
      CHECK(std::fabs(cuda[step] - cpu[step]) <= row.tolerance * std::fabs(cpu[step]));
    }
  }
}

namespace {

// The emulator's whole-run counters (tools/cuda_emu, GUM_CUDA_EMU_STATS) of a micro adamw run
// (grad_clip 1.0) on the cuda backend; empty on a GPU, where nothing writes them.
struct RunCounts {
  long long host_syncs = 0, allocations = 0, frees = 0;
};
std::optional<RunCounts> emulated_counts(const std::string& name, int steps, int log_every) {
  const std::string dir = fresh_test_dir("cuda_syncs_" + name);
  const nlohmann::json patch = {{"training", {{"backend", "cuda"}, {"max_steps", steps}, {"attention", "gemm"}}},
                                {"logging", {{"every_steps", log_every}}},
                                {"checkpoint", {{"every_steps", 0}, {"at_end", false}}}};
  const CommandResult r = run_gum_train(write_config(dir, micro_config(dir + "/run", patch)) + " --resume never",
                                        "GUM_CUDA_EMU_STATS=" + dir + "/stats.json");
  INFO(r.output);
  REQUIRE(r.exit_code == 0);
  if (!std::filesystem::exists(dir + "/stats.json")) return std::nullopt;
  const nlohmann::json stats = nlohmann::json::parse(read_file(dir + "/stats.json"));
  return RunCounts{stats["host_syncs"], stats["allocations"], stats["frees"]};
}

}  // namespace

TEST_CASE("a cuda training step waits for the device once when logged, never otherwise, and allocates nothing") {
  if (!gum::cuda_available()) GUM_SKIP_TEST("no usable GPU");
  prepared_micro_data();
  // Step 1 and the last step are always logged: of 4 steps with logging every 1000, steps 2 and 3
  // are not, so 4 steps minus 3 steps is one unlogged step; with logging every step, 3 minus 2 is
  // one logged step.
  const std::optional<RunCounts> three = emulated_counts("unlogged_3", 3, 1000);
  if (!three) GUM_SKIP_TEST("not the emulator (no GUM_CUDA_EMU_STATS counters)");
  const RunCounts four = *emulated_counts("unlogged_4", 4, 1000);
  CHECK(four.host_syncs - three->host_syncs == 0);
  CHECK(four.allocations - three->allocations == 0);
  CHECK(four.frees - three->frees == 0);
  const RunCounts logged_2 = *emulated_counts("logged_2", 2, 1), logged_3 = *emulated_counts("logged_3", 3, 1);
  CHECK(logged_3.host_syncs - logged_2.host_syncs == 1);
  CHECK(logged_3.allocations - logged_2.allocations == 0);
}

namespace {

// A micro run on the cuda backend with training.cuda_graphs `graphs` (and the emulator's counters
// when emulated): its losses, final weights and optimizer state files, its graph and host launches
// and its AdamW kernels (-1 on a GPU, where nothing counts them).
struct GraphRun {
  std::vector<double> losses;
  std::string weights, optimizer_state;
  long long graph_launches = -1, host_launches = -1, adam_kernels = -1;
};
GraphRun graph_run(const std::string& name, const std::string& graphs, const nlohmann::json& optimizer,
                   const nlohmann::json& training) {
  const std::string dir = fresh_test_dir("cuda_graphs_" + name + "_" + graphs);
  nlohmann::json t = training;
  t["backend"] = "cuda";
  t["max_steps"] = 4;
  t["attention"] = "gemm";
  t["cuda_graphs"] = graphs;
  // The lr grows at every step of the warmup: an update replayed with the recorded step's lr or
  // bias corrections leaves other weights than the eager run's.
  const nlohmann::json patch = {{"optimizer", optimizer},
                                {"training", t},
                                {"schedule", {{"type", "cosine"}, {"warmup_steps", 4}}},
                                {"checkpoint", {{"every_steps", 0}, {"at_end", true}}}};
  const CommandResult r = run_gum_train(write_config(dir, micro_config(dir + "/run", patch)) + " --resume never",
                                        "GUM_CUDA_EMU_STATS=" + dir + "/stats.json");
  INFO(r.output);
  REQUIRE(r.exit_code == 0);
  GraphRun run{step_losses(dir + "/run")};
  const std::string step_dir = dir + "/run/checkpoints/step_000004";
  run.weights = read_file(step_dir + "/model.safetensors");
  run.optimizer_state = read_file(step_dir + "/optimizer.safetensors");
  if (std::filesystem::exists(dir + "/stats.json")) {
    const nlohmann::json stats = nlohmann::json::parse(read_file(dir + "/stats.json"));
    run.graph_launches = stats["graph_launches"];
    run.host_launches = stats["host_launches"];
    run.adam_kernels = stats["kernels"].value("adam_kernel", nlohmann::json{{"launches", 0}})["launches"];
  }
  return run;
}

}  // namespace

TEST_CASE(
    "training with backend cuda and cuda_graphs replays the recorded passes and updates bit for bit (muon, gum, "
    "galore_adamw, adamw, with accumulation, bf16 or fused)") {
  if (!gum::cuda_available()) GUM_SKIP_TEST("no usable GPU");
  prepared_micro_data();
  struct Optim {
    std::string name;
    nlohmann::json optimizer;
    bool update_recorded;  // Optimizer::update_recordable
  };
  // update_proj_gap 2: GUM and GaLore refresh their projectors at steps 1 and 3. AdamW last: the
  // others, whose updates run eagerly, measure what the recorded passes save alone.
  const std::vector<Optim> optimizers = {
      {"muon", {{"name", "muon"}}, false},
      {"gum", {{"name", "gum"}, {"rank", 8}, {"update_proj_gap", 2}, {"full_rank_layers", 1}}, false},
      {"galore_adamw", {{"name", "galore_adamw"}, {"rank", 8}, {"update_proj_gap", 2}}, false},
      {"adamw", {{"name", "adamw"}}, true},
  };
  struct Variant {
    std::string name;
    nlohmann::json training;
    bool records;  // fused_update keeps the update inside backward: never recorded
  };
  const std::vector<Variant> variants = {
      {"accumulate", {{"micro_batch_size", 2}}, true},  // batch 4: two micro-batches per step
      {"bf16_recompute", {{"micro_batch_size", 2}, {"precision", "bf16"}, {"activation_checkpointing", true}}, true},
      {"fused", {{"fused_update", true}, {"grad_clip", 0}}, false},
  };
  for (const Variant& v : variants) {
    long long passes_saved = -1;  // host launches the recorded passes save over 4 steps
    for (const Optim& o : optimizers) {
      INFO(o.name << ", " << v.name);
      const GraphRun on = graph_run(o.name + "_" + v.name, "auto", o.optimizer, v.training),
                     off = graph_run(o.name + "_" + v.name, "off", o.optimizer, v.training);
      REQUIRE(on.losses.size() == 4);
      CHECK(on.losses == off.losses);  // a replay runs the same kernels on the same data: exact
      CHECK(on.weights == off.weights);
      CHECK(on.optimizer_state == off.optimizer_state);
      if (on.graph_launches < 0) continue;  // a GPU: no counters
      CHECK(off.graph_launches == 0);
      // The first pass runs eagerly, every later micro-batch replays: 4 steps x 2 - 1; a recorded
      // update replays at steps 2 to 4 (the first runs eagerly).
      const bool update_recorded = v.records && o.update_recorded;
      CHECK(on.graph_launches == (v.records ? 7 : 0) + (update_recorded ? 3 : 0));
      CHECK(on.adam_kernels == off.adam_kernels);
      const long long saved = off.host_launches - on.host_launches;
      if (!update_recorded) {
        if (passes_saved < 0) passes_saved = saved;
        CHECK(saved == passes_saved);
        continue;
      }
      // Each recorded update (steps 2 to 4) launches from the host one graph instead of an AdamW
      // kernel and a clip scale_by per parameter and the clip factor's norm_scale.
      const long long update_launches = 2 * (off.adam_kernels / 4) + 1;
      CHECK(saved - passes_saved == 3 * (update_launches - 1));
    }
  }
}
