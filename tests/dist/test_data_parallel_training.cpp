// Data-parallel gum_train under mpirun on the CPU backend (micro model, 6 steps of a global
// batch of 6 sequences): N ranks, also with micro-batches, follow one process with the same
// global batch, sharded optimizer state changes nothing, a run resumes on a different number of
// ranks, and a rank that dies or throws ends the job with a non-zero exit in bounded time.
//
// Tolerances: ranks sum their gradients in another order than one process does (and the
// backend accumulates micro-batches element by element), so results agree to fp32 rounding,
// not bit for bit. The loss agrees to 1e-6 relative (GUM: 1e-5 once a projector refresh has
// amplified the differences, see below). The gradient norm before clipping (grad_norm in
// metrics.jsonl) agrees to 1.5e-7 (GUM: 3.2e-5 after the refresh), bounded at 1e-6 (GUM 1e-4);
// it is what shows a gradient of the wrong scale, which clipping (grad_clip 1.0, below the
// norms of 1.0-2.0 measured here on most steps) would hide from the weights. Weights and state are
// compared per tensor as |a - b| / |b| (Frobenius); the optimizers magnify the ~1e-8 gradient
// differences differently (measured on this model, 6 steps): AdamW below 1e-6; Muon 1.5e-6 on
// o_proj (Newton–Schulz maps small singular directions to unit size); GaLore 2.5e-6 on the
// weights, 2e-5 on projected moments; GUM 4e-5 on the weights and 5e-4 on the state after a
// projector refresh (the top-r SVD subspace of a nearly degenerate spectrum moves with the
// rounding). The bounds below are those, rounded up to the next power of ten. Sharded and
// replicated state on the same ranks do the same arithmetic: their files are byte-identical.
#include <catch2/catch.hpp>
#include <chrono>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <iomanip>
#include <regex>
#include <sstream>
#include <string>
#include <vector>

#include "../train/train_test_util.h"
#include "common/skip.h"
#include "gum/io/safetensors.h"

using namespace gum_test;
namespace fs = std::filesystem;

namespace {

constexpr int kSteps = 6;

void skip_without_mpirun() {
  if (run_command("command -v mpirun").exit_code != 0) GUM_SKIP_TEST("mpirun not installed");
}

// Runs gum_train on `ranks` processes (1: without mpirun), bounded by `timeout 120`.
CommandResult launch(int ranks, const std::string& config, const std::string& resume,
                     const std::string& environment = "") {
  const std::string args = config + " --resume " + resume;
  if (ranks == 1) return run_gum_train(args, environment);
  const std::string command = environment + " OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 timeout 120 " +
                              "mpirun --allow-run-as-root --oversubscribe -np " + std::to_string(ranks) + " " +
                              gum_train_binary() + " " + args;
  CommandResult r = run_command(command);
  if (r.output.find("built without MPI") != std::string::npos) GUM_SKIP_TEST("gum_train built without MPI");
  return r;
}

// Launches a job that must fail: it ends with a non-zero exit by itself (not killed by `timeout`)
// within a minute, however its ranks fail.
CommandResult launch_failing(int ranks, const std::string& config, const std::string& environment = "") {
  const auto start = std::chrono::steady_clock::now();
  CommandResult r = launch(ranks, config, "never", environment);
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  INFO(r.output);
  CHECK(r.exit_code != 0);
  CHECK(r.exit_code != 124);
  CHECK(seconds < 60);
  return r;
}

// A micro config for one run: global batch 6 (divisible by 1, 2 and 3 ranks), checkpoint at
// the end so that the final weights and optimizer state can be compared.
std::string write_run_config(const std::string& name, const nlohmann::json& patch) {
  const std::string dir = fresh_test_dir("dist_" + name);
  nlohmann::json base_patch = {{"training", {{"batch_size", 6}, {"max_steps", kSteps}}},
                               {"checkpoint", {{"every_steps", 0}, {"at_end", true}, {"keep_last", 0}}}};
  base_patch.merge_patch(patch);
  return write_config(dir, micro_config(dir + "/run", base_patch));
}

std::string run_dir_of(const std::string& config) { return fs::path(config).parent_path().string() + "/run"; }

std::vector<nlohmann::json> training_lines(const std::string& config) {
  return metrics_lines(run_dir_of(config), "loss");
}

std::string final_checkpoint(const std::string& config) {
  char name[32];
  std::snprintf(name, sizeof(name), "/checkpoints/step_%06d", kSteps);
  return run_dir_of(config) + name;
}

// Loss and gradient norm step by step. The norm is taken before clipping: a gradient of the
// wrong scale (a loss scale of 1 / this rank's targets, an average instead of a sum over ranks)
// shows in it, while clipping gives the weights nearly the same update.
void check_steps_close(const std::vector<nlohmann::json>& got, const std::vector<nlohmann::json>& expected,
                       double loss_tolerance, double grad_norm_tolerance) {
  REQUIRE(got.size() == expected.size());
  for (size_t i = 0; i < got.size(); ++i) {
    for (const auto& [key, tolerance] : {std::pair<const char*, double>{"loss", loss_tolerance},
                                         std::pair<const char*, double>{"grad_norm", grad_norm_tolerance}}) {
      const double g = got[i][key].get<double>(), e = expected[i][key].get<double>();
      INFO("step " << i + 1 << " " << key << ": " << std::setprecision(10) << g << " vs " << e);
      CHECK(std::abs(g - e) <= tolerance * std::abs(e));
    }
  }
}

// "optimizer state per rank: rank 0 ..., rank 1 ..." as `gum_train plan` predicts it.
std::string planned_state_per_rank(const std::string& config, int ranks) {
  CommandResult plan = run_gum_train("plan " + config + " --world-size " + std::to_string(ranks));
  INFO(plan.output);
  REQUIRE(plan.exit_code == 0);
  const std::string key = "optimizer state per rank: ";
  const size_t begin = plan.output.find("optimizer.shard_states: " + key);
  REQUIRE(begin != std::string::npos);
  const size_t list = begin + std::string("optimizer.shard_states: ").size();
  return plan.output.substr(list, plan.output.find('\n', list) - list);
}

struct Tolerances {
  double loss = 1e-6;
  double grad_norm = 1e-6;
  double weights = 1e-6;
  double state = 1e-6;
};

void check_optimizer_data_parallel(const std::string& name, const nlohmann::json& optimizer, const Tolerances& tol,
                                   const nlohmann::json& training = nlohmann::json::object()) {
  skip_without_mpirun();
  prepared_micro_data();
  auto config = [&](const std::string& run, bool shard, int micro_batch) {
    nlohmann::json section = optimizer;
    section["shard_states"] = shard;
    nlohmann::json training_section = training;
    training_section["micro_batch_size"] = micro_batch;
    return write_run_config(name + "_" + run, {{"optimizer", section}, {"training", training_section}});
  };
  const std::string single = config("single", false, 0);
  CommandResult r = launch(1, single, "never");
  INFO(r.output);
  REQUIRE(r.exit_code == 0);
  const std::vector<nlohmann::json> reference = training_lines(single);
  REQUIRE(reference.size() == kSteps);

  // 3 ranks take 2 rows each as 2 micro-batches of 1 row: rank and micro-batch splits together.
  struct Variant {
    int ranks;
    bool shard;
    int micro_batch;  // 0: all of the rank's rows at once
    std::string run;
  };
  const std::vector<Variant> variants = {
      {2, false, 0, "np2"}, {2, true, 0, "np2_sharded"}, {3, true, 1, "np3_sharded_micro1"}};
  std::vector<std::string> configs;
  for (const Variant& v : variants) {
    configs.push_back(config(v.run, v.shard, v.micro_batch));
    CommandResult run = launch(v.ranks, configs.back(), "never");
    INFO(v.run << "\n" << run.output);
    REQUIRE(run.exit_code == 0);
    CHECK(run.output.find("on " + std::to_string(v.ranks) + " x cpu") != std::string::npos);
    if (v.shard) {
      CHECK(run.output.find("optimizer state per rank: rank 0 ") != std::string::npos);
      // `gum_train plan --world-size N` predicts what each rank's trainer holds.
      CHECK(run.output.find(planned_state_per_rank(configs.back(), v.ranks)) != std::string::npos);
    }
    CHECK(run.output.find("info [rank 1]") == std::string::npos);  // only rank 0 logs progress
    check_steps_close(training_lines(configs.back()), reference, tol.loss, tol.grad_norm);
    check_tensors_close(final_checkpoint(configs.back()) + "/model.safetensors",
                        final_checkpoint(single) + "/model.safetensors", tol.weights);
    check_tensors_close(final_checkpoint(configs.back()) + "/optimizer.safetensors",
                        final_checkpoint(single) + "/optimizer.safetensors", tol.state);
  }
  // Sharded and replicated state on 2 ranks: the same arithmetic, the same files.
  for (const char* file : {"/model.safetensors", "/optimizer.safetensors"}) {
    INFO(file);
    CHECK(read_file(final_checkpoint(configs[0]) + file) == read_file(final_checkpoint(configs[1]) + file));
  }
}

}  // namespace

TEST_CASE("data parallel adamw on 2 and 3 ranks replicated and sharded equals one process", "[dist][train]") {
  check_optimizer_data_parallel("adamw", {{"name", "adamw"}}, {1e-6, 1e-6, 1e-6, 1e-6});
}

TEST_CASE("data parallel muon on 2 and 3 ranks replicated and sharded equals one process", "[dist][train]") {
  check_optimizer_data_parallel("muon", {{"name", "muon"}}, {1e-6, 1e-6, 1e-5, 1e-5});
}

TEST_CASE("data parallel galore_adamw on 2 and 3 ranks replicated and sharded equals one process", "[dist][train]") {
  check_optimizer_data_parallel("galore", {{"name", "galore_adamw"}, {"rank", 4}, {"update_proj_gap", 2}},
                                {1e-6, 1e-6, 1e-5, 1e-4});
}

TEST_CASE("data parallel gum on 2 and 3 ranks replicated and sharded equals one process", "[dist][train]") {
  // update_proj_gap 3: two periods, so the shared sampler draws twice in 6 steps.
  check_optimizer_data_parallel("gum", {{"name", "gum"}, {"rank", 4}, {"update_proj_gap", 3}, {"full_rank_layers", 1}},
                                {1e-5, 1e-4, 1e-4, 1e-3});
}

TEST_CASE("data parallel fused per-layer update (no clipping) on 2 and 3 ranks equals one process", "[dist][train]") {
  check_optimizer_data_parallel("fused", {{"name", "muon"}}, {1e-6, 1e-6, 1e-5, 1e-5},
                                {{"grad_clip", 0.0}, {"fused_update", true}});
}

TEST_CASE("a run resumes on a different number of ranks and continues the same loss curve", "[dist][train]") {
  skip_without_mpirun();
  prepared_micro_data();
  const nlohmann::json patch = {{"optimizer", {{"name", "muon"}, {"shard_states", true}}},
                                {"checkpoint", {{"every_steps", 2}}}};
  const std::string reference_config = write_run_config("resume_reference", patch);
  REQUIRE(launch(1, reference_config, "never").exit_code == 0);
  const std::vector<nlohmann::json> reference = training_lines(reference_config);

  // 2 ranks die after step 2 (checkpointed), 3 ranks take over and die after step 4,
  // one process finishes: each leg takes its own part of the same whole optimizer state.
  const std::string config = write_run_config("resume_world", patch);
  CommandResult first = launch(2, config, "never", "GUM_FAULT_KILL_AFTER_STEP=2");
  INFO(first.output);
  REQUIRE(first.exit_code != 0);
  REQUIRE(fs::exists(run_dir_of(config) + "/checkpoints/step_000002"));
  CommandResult second = launch(3, config, "auto", "GUM_FAULT_KILL_AFTER_STEP=4");
  INFO(second.output);
  REQUIRE(second.exit_code != 0);
  CHECK(second.output.find("checkpoint written by 2 rank(s), continuing on 3") != std::string::npos);
  REQUIRE(fs::exists(run_dir_of(config) + "/checkpoints/step_000004"));
  CommandResult third = launch(1, config, "auto");
  INFO(third.output);
  REQUIRE(third.exit_code == 0);
  CHECK(third.output.find("checkpoint written by 3 rank(s), continuing on 1") != std::string::npos);
  check_steps_close(training_lines(config), reference, 1e-6, 1e-6);
  check_tensors_close(final_checkpoint(config) + "/model.safetensors",
                      final_checkpoint(reference_config) + "/model.safetensors", 1e-5);
}

TEST_CASE("a rank killed with SIGKILL ends the job with a non-zero exit and no hang", "[dist][train]") {
  skip_without_mpirun();
  prepared_micro_data();
  const std::string config = write_run_config("rank_killed", {{"optimizer", {{"shard_states", true}}}});
  CommandResult r = launch_failing(3, config, "GUM_FAULT_KILL_AFTER_STEP=2 GUM_FAULT_RANK=1");
  INFO(r.output);
  CHECK(r.output.find("rank 1") != std::string::npos);
  CHECK(r.output.find("signal 9") != std::string::npos);
}

TEST_CASE("a rank that throws ends the job with a non-zero exit and its message", "[dist][train]") {
  skip_without_mpirun();
  prepared_micro_data();
  const std::string config = write_run_config("rank_throws", {});
  // A file where the checkpoint folder should be: rank 0's save fails while rank 1 waits.
  fs::create_directories(run_dir_of(config));
  std::ofstream(run_dir_of(config) + "/checkpoints") << "not a folder\n";
  CommandResult r = launch_failing(2, config);
  INFO(r.output);
  CHECK(r.output.find("rank 0 of 2:") != std::string::npos);
  CHECK(r.output.find("cannot create checkpoint folder") != std::string::npos);
}

TEST_CASE("a non-finite gradient under sharded state stops every rank, named by its owner", "[dist][train]") {
  skip_without_mpirun();
  prepared_micro_data();
  // lr 1e30 makes the weights overflow after the first update. The fused update checks each
  // layer's gradients inside backward, before the loss is reduced, and under sharded state only
  // the owner of a matrix holds its reduced gradient: that rank must stop the job.
  const std::string config =
      write_run_config("nan_sharded", {{"optimizer", {{"name", "muon"}, {"lr", 1e30}, {"shard_states", true}}},
                                       {"schedule", {{"warmup_steps", 0}, {"type", "constant"}}},
                                       {"training", {{"grad_clip", 0.0}, {"fused_update", true}}}});
  CommandResult r = launch_failing(2, config);
  INFO(r.output);
  CHECK(std::regex_search(r.output, std::regex("rank [01] of 2: step [0-9]+: gradient of \\S+ is NaN or Inf")));
}
