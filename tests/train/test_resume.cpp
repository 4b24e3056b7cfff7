// Resume is bitwise exact on the CPU for every optimizer: 20 steps straight equal 13 steps,
// kill -9, resume from the step-10 checkpoint, 10 more steps; and a corrupt newest checkpoint
// falls back to the previous one. Also: the fused per-layer update and activation checkpointing
// equal the plain step, accumulated micro-batches give the full batch's gradient, and clipping
// scales the whole gradient by grad_clip / norm.
#include <signal.h>

#include <catch2/catch.hpp>
#include <chrono>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <random>
#include <regex>
#include <sstream>
#include <thread>

#include "gum/io/checkpoint.h"
#include "gum/io/safetensors.h"
#include "train_test_util.h"

namespace fs = std::filesystem;
using namespace gum_test;

namespace {

struct Run {
  std::string config;
  std::string run_dir;
};

Run make_run(const std::string& name, const nlohmann::json& patch = nlohmann::json::object()) {
  prepared_micro_data();
  const std::string dir = fresh_test_dir(name);
  return {write_config(dir, micro_config(dir + "/run", patch)), dir + "/run"};
}

// The trajectory of a run: (step, tokens, loss, lr, grad_norm) of every training line of metrics.jsonl.
std::vector<std::string> trajectory(const std::string& run_dir) {
  std::vector<std::string> lines;
  for (const nlohmann::json& j : metrics_lines(run_dir, "loss"))
    lines.push_back(nlohmann::json({j["step"], j["tokens"], j["loss"], j["lr"], j["grad_norm"]}).dump());
  return lines;
}

std::string checkpoint_dir(const std::string& run_dir, int64_t step) {
  return run_dir + "/checkpoints/" + gum::checkpoint_folder_name(step);
}

std::string final_weights(const std::string& run_dir, int64_t step) {
  return read_file(checkpoint_dir(run_dir, step) + "/model.safetensors");
}

nlohmann::json trainer_state(const std::string& run_dir, int64_t step) {
  return nlohmann::json::parse(read_file(checkpoint_dir(run_dir, step) + "/trainer.json"));
}

// `resumed` (interrupted and resumed, now finished) against `straight` (never interrupted),
// both ending at step `steps`: the same metrics, weights, optimizer state and trainer state
// (loader position, seeds, counters), bit for bit. Only the measured time (it carries on from
// the checkpoint) and the run folder may differ.
void check_same_as_uninterrupted(const Run& resumed, const Run& straight, int64_t steps) {
  std::vector<std::string> expected = trajectory(straight.run_dir);
  REQUIRE(expected.size() == size_t(steps));
  CHECK(trajectory(resumed.run_dir) == expected);
  CHECK(final_weights(resumed.run_dir, steps) == final_weights(straight.run_dir, steps));
  CHECK(read_file(checkpoint_dir(resumed.run_dir, steps) + "/optimizer.safetensors") ==
        read_file(checkpoint_dir(straight.run_dir, steps) + "/optimizer.safetensors"));
  nlohmann::json got = trainer_state(resumed.run_dir, steps), want = trainer_state(straight.run_dir, steps);
  for (nlohmann::json* state : {&got, &want}) {
    state->erase("elapsed_s");
    state->at("config").at("logging").erase("run_dir");
  }
  CHECK(got.dump(2) == want.dump(2));
}

// 20 steps straight against 13 steps, SIGKILL, resume from the step-10 checkpoint: bitwise the
// same run (check_same_as_uninterrupted). Returns the uninterrupted run.
Run check_resume_after_kill(const std::string& name, const nlohmann::json& patch) {
  Run straight = make_run(name + "_straight", patch);
  CommandResult a = run_gum_train(straight.config + " --resume never");
  INFO(a.output);
  REQUIRE(a.exit_code == 0);

  Run interrupted = make_run(name + "_interrupted", patch);
  // SIGKILL after step 13: the step-10 checkpoint exists, metrics hold steps 11-13 beyond it.
  CommandResult killed = run_gum_train(interrupted.config, "GUM_FAULT_KILL_AFTER_STEP=13");
  REQUIRE(killed.signal == 9);
  REQUIRE(trajectory(interrupted.run_dir).size() == 13);
  CHECK(fs::exists(checkpoint_dir(interrupted.run_dir, 10)));
  CHECK_FALSE(fs::exists(checkpoint_dir(interrupted.run_dir, 20)));

  CommandResult resumed = run_gum_train(interrupted.config + " --resume auto");
  INFO(resumed.output);
  REQUIRE(resumed.exit_code == 0);
  CHECK(resumed.output.find("resumed from") != std::string::npos);
  check_same_as_uninterrupted(interrupted, straight, 20);
  // The clock carries on: step 11's elapsed time includes the 10 steps before the checkpoint.
  CHECK(metrics_lines(interrupted.run_dir, "loss").at(10)["elapsed_s"].get<double>() >
        trainer_state(interrupted.run_dir, 10)["elapsed_s"].get<double>());
  return straight;
}

}  // namespace

TEST_CASE("adamw: resume after kill -9 is bitwise identical to an uninterrupted run") {
  check_resume_after_kill("resume_adamw", nlohmann::json::object());
}

TEST_CASE("muon: resume after kill -9 is bitwise identical to an uninterrupted run") {
  check_resume_after_kill("resume_muon", {{"optimizer", {{"name", "muon"}}}});
}

TEST_CASE("galore_adamw with the randomized projector: resume after kill -9 is bitwise identical") {
  // Refreshes at steps 1, 5, 9, 13, 17: the checkpoint (step 10) falls inside a period, and the
  // refreshes after it draw their sketches from the seeded stream of their step.
  check_resume_after_kill(
      "resume_galore",
      {{"optimizer", {{"name", "galore_adamw"}, {"rank", 4}, {"update_proj_gap", 4}, {"projector", "randomized"}}}});
}

TEST_CASE("gum resumed mid-period after kill -9 is bitwise identical to an uninterrupted run") {
  // Periods start at steps 1, 5, 9, 13, 17: the checkpoint (step 10) holds a period's projectors,
  // full-rank blocks and momenta in use, and the sampler position the draws at 13 and 17 continue
  // from. Matrices as blocks (14 of them, 2 full-rank per period) make a replayed draw visible.
  check_resume_after_kill(
      "resume_gum",
      {{"optimizer",
        {{"name", "gum"}, {"rank", 4}, {"update_proj_gap", 4}, {"full_rank_layers", 2}, {"sample_unit", "matrix"}}}});
}

// optimizer.state_dtype bf16: every optimizer's moments, momenta and projectors are stored in bf16,
// saved as BF16, and resume stays bitwise exact (Muon and GUM with bf16 Newton-Schulz too).
TEST_CASE("bf16 optimizer states: saved as BF16, resume after kill -9 bitwise identical, for every optimizer") {
  const std::vector<nlohmann::json> optimizers = {
      {{"name", "adamw"}},
      {{"name", "muon"}, {"ns_dtype", "bf16"}},
      {{"name", "galore_adamw"}, {"rank", 4}, {"update_proj_gap", 4}, {"projector", "randomized"}},
      {{"name", "plumage"}, {"rank", 4}, {"update_proj_gap", 4}},
      {{"name", "stiefel"}, {"rank", 4}, {"update_proj_gap", 4}},
      {{"name", "gum"},
       {"rank", 4},
       {"update_proj_gap", 4},
       {"full_rank_layers", 2},
       {"sample_unit", "matrix"},
       {"ns_dtype", "bf16"}},
      {{"name", "galore_muon"}, {"rank", 4}, {"update_proj_gap", 4}}};
  for (nlohmann::json optimizer : optimizers) {
    const std::string name = optimizer["name"];
    INFO("optimizer " << name);
    optimizer["state_dtype"] = "bf16";
    const Run straight = check_resume_after_kill("resume_bf16_state_" + name, {{"optimizer", optimizer}});
    size_t floating = 0;
    for (const auto& [tensor_name, tensor] :
         gum::read_safetensors(checkpoint_dir(straight.run_dir, 20) + "/optimizer.safetensors")) {
      INFO(tensor_name);
      if (tensor.dtype == gum::DType::I64) continue;  // counters and sampler positions
      CHECK(tensor.dtype == gum::DType::BF16);
      ++floating;
    }
    CHECK(floating > 0);
  }
}

// Mixed bf16 and pure bf16 (with each weight rounding): resume after kill -9 is bitwise exact, the
// checkpoint keeps the weights' dtype (F32 masters, or BF16) and the Kahan compensations.
TEST_CASE("every precision mode: resume after kill -9 bitwise identical, weights saved in their dtype") {
  struct Mode {
    const char* precision;
    const char* rounding;
    gum::DType weights;
  };
  for (const Mode& mode :
       {Mode{"bf16", "stochastic", gum::DType::F32}, Mode{"bf16_pure", "stochastic", gum::DType::BF16},
        Mode{"bf16_pure", "kahan", gum::DType::BF16}, Mode{"bf16_pure", "nearest", gum::DType::BF16}}) {
    INFO(mode.precision << " " << mode.rounding);
    for (const char* optimizer : {"adamw", "gum"}) {
      INFO(optimizer);
      const Run straight = check_resume_after_kill(
          std::string("resume_") + mode.precision + "_" + mode.rounding + "_" + optimizer,
          {{"training", {{"precision", mode.precision}, {"weight_rounding", mode.rounding}}},
           {"optimizer", {{"name", optimizer}, {"rank", 4}, {"update_proj_gap", 4}, {"sample_unit", "matrix"}}}});
      const std::string step_dir = checkpoint_dir(straight.run_dir, 20);
      for (const auto& [name, tensor] : gum::read_safetensors(step_dir + "/model.safetensors")) {
        INFO(name);
        CHECK(tensor.dtype == mode.weights);
      }
      size_t compensations = 0;
      for (const auto& [name, tensor] : gum::read_safetensors(step_dir + "/optimizer.safetensors"))
        if (name.find(".weight_compensation") != std::string::npos) ++compensations;
      CHECK((compensations > 0) == (std::string(mode.rounding) == "kahan" && mode.weights == gum::DType::BF16));
    }
  }
}

// The step of the last complete line of RUN_DIR/metrics.jsonl, 0 when there is none.
int64_t last_logged_step(const std::string& run_dir) {
  const std::string text = read_file(run_dir + "/metrics.jsonl");
  const size_t end = text.rfind('\n');
  if (end == std::string::npos) return 0;
  const size_t begin = end == 0 ? std::string::npos : text.rfind('\n', end - 1);
  const size_t start = begin == std::string::npos ? 0 : begin + 1;
  // Only the complete line: a line being written after the last '\n' is left out.
  const nlohmann::json line = nlohmann::json::parse(text.substr(start, end - start));
  return line.value("step", int64_t(0));
}

// The step of a save in progress (a hidden .tmp_step_NNNNNN folder in CKPT_DIR), 0 when none.
int64_t step_being_saved(const std::string& ckpt_dir) {
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator(ckpt_dir, ec)) {
    const std::string name = entry.path().filename().string();
    if (name.rfind(".tmp_step_", 0) == 0) return std::stoll(name.substr(10));
  }
  return 0;
}

// The soak: 12 SIGKILLs of one 60-step run, each resumed with --resume auto. Each attempt picks
// a target 2-6 steps past the newest valid checkpoint; even-numbered attempts kill as soon as
// the save of a step at or past the target is in progress (its temporary folder exists),
// odd-numbered ones once the target step is logged plus a random delay of up to two steps'
// time (inside a step, a metrics line or a save). The finished run must still be bitwise the
// uninterrupted one.
TEST_CASE("kill -9 soak: 12 kills at random points, some inside a checkpoint save, then bitwise the same run") {
  const int64_t steps = 60;
  const nlohmann::json patch = {{"training", {{"max_steps", steps}}},
                                {"checkpoint", {{"every_steps", 2}, {"keep_last", 3}}}};
  Run straight = make_run("soak_straight", patch);
  const auto started = std::chrono::steady_clock::now();
  REQUIRE(run_gum_train(straight.config + " --resume never").exit_code == 0);
  const double step_ms =
      std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - started).count() / steps;

  Run soak = make_run("soak_interrupted", patch);
  const std::string checkpoints = soak.run_dir + "/checkpoints";
  std::mt19937 random(20261203);
  int kills = 0, kills_in_save = 0;
  int64_t newest_step = 0;
  for (int attempt = 0; attempt < 12; ++attempt) {
    // Short of the end, so that every attempt is still running when it is killed.
    const int64_t target = std::min(newest_step + std::uniform_int_distribution<int64_t>(2, 6)(random), steps - 4);
    const pid_t pid = start_gum_train(soak.config + " --resume auto", soak.run_dir + "_attempt.log");
    bool in_save = false;
    if (attempt % 2 == 0) {
      while (!in_save && !process_finished(pid)) in_save = step_being_saved(checkpoints) >= target;
    } else {
      while (last_logged_step(soak.run_dir) < target && !process_finished(pid)) std::this_thread::yield();
      std::this_thread::sleep_for(
          std::chrono::duration<double, std::milli>(std::uniform_real_distribution<double>(0, 2 * step_ms)(random)));
    }
    const int signal = kill_and_reap(pid);
    INFO("attempt " << attempt << ": " << read_file(soak.run_dir + "_attempt.log"));
    REQUIRE(signal == SIGKILL);  // still running: the run must not finish before the last kill
    ++kills;
    kills_in_save += in_save;
    const std::string resumable = gum::find_resume_checkpoint(checkpoints);
    if (!resumable.empty()) newest_step = std::stoll(fs::path(resumable).filename().string().substr(5));
    std::printf("kill -9 soak: kill %d %s (target step %lld), newest valid checkpoint: step %lld\n", kills,
                in_save ? "inside a save" : "at a random time", static_cast<long long>(target),
                static_cast<long long>(newest_step));
  }
  std::printf("kill -9 soak: %d kills, %d of them inside a checkpoint save\n", kills, kills_in_save);
  CHECK(kills_in_save >= 4);
  // The kills are spread over the run, not all at start-up.
  CHECK(newest_step >= 16);

  CommandResult finished = run_gum_train(soak.config + " --resume auto");
  INFO(finished.output);
  REQUIRE(finished.exit_code == 0);
  check_same_as_uninterrupted(soak, straight, steps);
}

TEST_CASE("resume after kill -9 in the second epoch takes up that epoch's data order") {
  // 16 documents give 34 windows of 16 tokens, an epoch of 8.5 steps of 4 windows: the step-10
  // checkpoint lies in the second epoch, whose order (a permutation keyed by the data seed and the
  // epoch) the resumed run must continue, and a third epoch starts before step 20.
  const std::string tokenizer = prepared_micro_data() + "/tokenizer.model";
  const std::string dir = fresh_test_dir("resume_epochs_data");
  write_micro_corpus(dir + "/train.jsonl", 16, 4242);
  const nlohmann::json data = {
      {"data", {{"train_files", dir + "/train.jsonl"}, {"tokenizer", tokenizer}, {"shard_dir", dir + "/shards"}}}};
  CommandResult prepared = run_gum_train("prepare " + write_config(dir, micro_config(dir + "/unused", data)));
  INFO(prepared.output);
  REQUIRE(prepared.exit_code == 0);
  Run straight = check_resume_after_kill("resume_epochs", data);
  CHECK(trainer_state(straight.run_dir, 10)["loader"]["epoch"] == 1);
  CHECK(trainer_state(straight.run_dir, 20)["loader"]["epoch"] == 2);
}

TEST_CASE("a corrupt newest checkpoint is skipped and training redoes the steps after the previous one") {
  Run run = make_run("resume_corrupt", {{"training", {{"max_steps", 10}}}, {"checkpoint", {{"every_steps", 5}}}});
  REQUIRE(run_gum_train(run.config + " --resume never").exit_code == 0);
  const std::string newest = run.run_dir + "/checkpoints/step_000010/model.safetensors";
  const std::string clean = read_file(newest);
  {
    std::string corrupt = clean;
    corrupt[corrupt.size() - 5] ^= 0x40;
    std::ofstream(newest, std::ios::binary | std::ios::trunc) << corrupt;
  }
  // --resume auto: warns about step 10, resumes from step 5, trains 6..10 again.
  CommandResult r = run_gum_train(run.config + " --resume auto");
  INFO(r.output);
  REQUIRE(r.exit_code == 0);
  CHECK(r.output.find("skipping checkpoint") != std::string::npos);
  CHECK(r.output.find("step_000005") != std::string::npos);
  CHECK(read_file(newest) == clean);
  CHECK(trajectory(run.run_dir).size() == 10);
}

namespace {

// Trains `steps` steps with `base` and with `base` plus training.<switch_key> = true: the two runs
// must end with bit-identical weights. Returns both runs (plain first) and the switched run's output.
struct SwitchedRuns {
  Run plain, switched;
  CommandResult switched_result;
};
SwitchedRuns train_with_and_without(const std::string& switch_key, const nlohmann::json& base, int steps) {
  Run plain = make_run(switch_key + "_off", base);
  nlohmann::json patch = base;
  patch["training"][switch_key] = true;
  Run switched = make_run(switch_key + "_on", patch);
  REQUIRE(run_gum_train(plain.config + " --resume never").exit_code == 0);
  CommandResult r = run_gum_train(switched.config + " --resume never");
  INFO(r.output);
  REQUIRE(r.exit_code == 0);
  CHECK(final_weights(switched.run_dir, steps) == final_weights(plain.run_dir, steps));
  return {plain, switched, r};
}

}  // namespace

TEST_CASE("the fused per-layer update equals the update after backward") {
  // 4 blocks. One micro-batch per step: the blocks share one gradient set (one rank); two
  // micro-batches: the whole gradient accumulates and the last backward updates layer by layer.
  for (const auto& [micro_batch, update] :
       {std::pair{0, "(one block's gradients at a time"}, std::pair{2, "(whole gradient over the micro-batches"}}) {
    INFO("micro_batch_size " << micro_batch);
    const nlohmann::json no_clip = {
        {"model", {{"num_hidden_layers", 4}}},
        {"training", {{"grad_clip", 0.0}, {"max_steps", 6}, {"micro_batch_size", micro_batch}}},
        {"checkpoint", {{"every_steps", 0}}}};
    SwitchedRuns runs = train_with_and_without("fused_update", no_clip, 6);
    CHECK(runs.switched_result.output.find(std::string("fused per layer in backward ") + update) != std::string::npos);
  }
}

TEST_CASE("activation checkpointing trains bit for bit like stored activations, with less activation memory") {
  const nlohmann::json base = {{"training", {{"max_steps", 4}, {"micro_batch_size", 1}}},
                               {"checkpoint", {{"every_steps", 0}}}};
  SwitchedRuns runs = train_with_and_without("activation_checkpointing", base, 4);
  CHECK(runs.switched_result.output.find("activations recomputed per block") != std::string::npos);

  // `plan` reads the same key: the activation line shrinks.
  auto activation_bytes = [](const std::string& config) {
    CommandResult r = run_gum_train("plan " + config);
    REQUIRE(r.exit_code == 0);
    std::smatch m;
    REQUIRE(std::regex_search(r.output, m, std::regex("activations +([0-9.]+) (KiB|MiB|GiB)")));
    const double scale = m[2] == "KiB" ? 1024.0 : m[2] == "MiB" ? 1048576.0 : 1073741824.0;
    return std::stod(m[1]) * scale;
  };
  CHECK(activation_bytes(runs.switched.config) < activation_bytes(runs.plain.config));
}

TEST_CASE("gradient accumulation over micro-batches gives the full batch's gradient, weights and moments") {
  // Clipping off: a clipped gradient loses its scale, and AdamW's update hardly depends on it
  // (m / sqrt(v)), so a k-times too large accumulated gradient leaves the loss curve as it was.
  // Its norm and AdamW's moments show it.
  const nlohmann::json base = {{"training", {{"max_steps", 4}, {"grad_clip", 0.0}}},
                               {"checkpoint", {{"every_steps", 0}, {"at_end", true}}}};
  Run full = make_run("accum_full", base);
  REQUIRE(run_gum_train(full.config + " --resume never").exit_code == 0);
  const std::vector<nlohmann::json> expected = metrics_lines(full.run_dir, "loss");
  REQUIRE(expected.size() == 4);
  for (int micro_batch : {1, 2}) {
    nlohmann::json patch = base;
    patch["training"]["micro_batch_size"] = micro_batch;
    Run micro = make_run("accum_micro" + std::to_string(micro_batch), patch);
    CommandResult r = run_gum_train(micro.config + " --resume never");
    INFO("micro_batch_size " << micro_batch << "\n" << r.output);
    REQUIRE(r.exit_code == 0);
    CHECK(r.output.find("1 ranks x " + std::to_string(4 / micro_batch) + " micro-batches") != std::string::npos);
    // The micro-batches add their gradients in another order than one batch does: measured
    // 1.5e-8 relative on the loss and 3.1e-7 on the gradient norm (step 4), bounded at 2e-6;
    // a gradient scaled by the number of micro-batches is off by 100-300%.
    const std::vector<nlohmann::json> got = metrics_lines(micro.run_dir, "loss");
    REQUIRE(got.size() == expected.size());
    for (size_t i = 0; i < got.size(); ++i) {
      INFO("step " << i + 1);
      CHECK(got[i]["loss"].get<double>() == Approx(expected[i]["loss"].get<double>()).epsilon(2e-6));
      CHECK(got[i]["grad_norm"].get<double>() == Approx(expected[i]["grad_norm"].get<double>()).epsilon(2e-6));
    }
    // Weights and moments per tensor after 4 steps: measured up to 1.5e-5 and 1.6e-5 (AdamW
    // turns the rounding of near-zero gradient entries into whole steps of lr), bounded at 1e-4.
    // The moments hold the gradient's scale (m ~ g, v ~ g^2) where the weights hardly do.
    check_tensors_close(checkpoint_dir(micro.run_dir, 4) + "/model.safetensors",
                        checkpoint_dir(full.run_dir, 4) + "/model.safetensors", 1e-4);
    check_tensors_close(checkpoint_dir(micro.run_dir, 4) + "/optimizer.safetensors",
                        checkpoint_dir(full.run_dir, 4) + "/optimizer.safetensors", 1e-4);
  }
}

TEST_CASE("clipping scales every gradient by grad_clip / global norm, and only above grad_clip") {
  // After one AdamW step the moments hold the gradient the optimizer got: exp_avg = (1 - beta1) g
  // and exp_avg_sq = (1 - beta2) g^2. Clipped at 0.25, every tensor's moments are the unclipped
  // run's times s = 0.25 / (norm + 1e-6) and s^2, with the norm that metrics.jsonl logs (1.158).
  // The fp32 products round to 1e-7 relative per tensor (measured 9.8e-8); bounded at 1e-6.
  const nlohmann::json base = {{"training", {{"max_steps", 1}, {"grad_clip", 0.0}}},
                               {"checkpoint", {{"every_steps", 0}, {"at_end", true}}}};
  Run unclipped = make_run("clip_off", base);
  Run clipped = make_run("clip_on", {{"training", {{"max_steps", 1}, {"grad_clip", 0.25}}},
                                     {"checkpoint", {{"every_steps", 0}, {"at_end", true}}}});
  // A threshold above the norm leaves the gradient alone: byte-identical optimizer state.
  Run above = make_run("clip_above", {{"training", {{"max_steps", 1}, {"grad_clip", 100.0}}},
                                      {"checkpoint", {{"every_steps", 0}, {"at_end", true}}}});
  for (const Run* run : {&unclipped, &clipped, &above})
    REQUIRE(run_gum_train(run->config + " --resume never").exit_code == 0);
  CHECK(read_file(checkpoint_dir(above.run_dir, 1) + "/optimizer.safetensors") ==
        read_file(checkpoint_dir(unclipped.run_dir, 1) + "/optimizer.safetensors"));
  const double norm = metrics_lines(clipped.run_dir, "loss").at(0)["grad_norm"].get<double>();
  CHECK(norm == metrics_lines(unclipped.run_dir, "loss").at(0)["grad_norm"].get<double>());  // logged before clipping
  REQUIRE(norm > 0.5);
  const double scale = 0.25 / (norm + 1e-6);
  const gum::TensorMap off = gum::read_safetensors(checkpoint_dir(unclipped.run_dir, 1) + "/optimizer.safetensors");
  const gum::TensorMap on = gum::read_safetensors(checkpoint_dir(clipped.run_dir, 1) + "/optimizer.safetensors");
  int moments = 0;
  for (const auto& [name, tensor] : off) {
    const bool first = name.size() > 8 && name.compare(name.size() - 8, 8, ".exp_avg") == 0;
    const bool second = name.size() > 11 && name.compare(name.size() - 11, 11, ".exp_avg_sq") == 0;
    if (!first && !second) continue;
    ++moments;
    const double factor = first ? scale : scale * scale;
    const std::vector<float> a = tensor.to_f32(), b = on.at(name).to_f32();
    double diff = 0, base_norm = 0;
    for (size_t i = 0; i < a.size(); ++i) {
      diff += (b[i] - factor * a[i]) * (b[i] - factor * a[i]);
      base_norm += factor * a[i] * factor * a[i];
    }
    INFO(name << ": relative distance from " << factor << " x unclipped " << std::sqrt(diff / base_norm));
    CHECK(std::sqrt(diff) <= 1e-6 * std::sqrt(base_norm));
  }
  CHECK(moments == 2 * 21);  // both moments of all 21 parameters
}
