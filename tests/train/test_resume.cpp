// Resume is bitwise exact on the CPU: 20 steps straight equal 13 steps, kill -9, resume from
// the step-10 checkpoint, 10 more steps; and a corrupt newest checkpoint falls back to the
// previous one. Also: the fused per-layer update and activation checkpointing equal the plain step.
#include <catch2/catch.hpp>
#include <filesystem>
#include <fstream>
#include <regex>
#include <sstream>

#include "gum/io/checkpoint.h"
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

// The trajectory of a run: (step, loss, lr, grad_norm) of every training line of metrics.jsonl.
std::vector<std::string> trajectory(const std::string& run_dir) {
  std::vector<std::string> lines;
  std::istringstream in(read_file(run_dir + "/metrics.jsonl"));
  std::string line;
  while (std::getline(in, line)) {
    nlohmann::json j = nlohmann::json::parse(line);
    if (!j.contains("loss")) continue;
    lines.push_back(nlohmann::json({j["step"], j["loss"], j["lr"], j["grad_norm"]}).dump());
  }
  return lines;
}

std::string final_weights(const std::string& run_dir, int64_t step) {
  return read_file(run_dir + "/checkpoints/" + gum::checkpoint_folder_name(step) + "/model.safetensors");
}

}  // namespace

TEST_CASE("resume after kill -9 is bitwise identical to an uninterrupted run") {
  Run straight = make_run("resume_straight");
  CommandResult a = run_gum_train(straight.config + " --resume never");
  REQUIRE(a.exit_code == 0);

  Run interrupted = make_run("resume_interrupted");
  // SIGKILL after step 13: the step-10 checkpoint exists, metrics hold steps 11-13 beyond it.
  CommandResult killed = run_gum_train(interrupted.config, "GUM_FAULT_KILL_AFTER_STEP=13");
  REQUIRE(killed.signal == 9);
  REQUIRE(trajectory(interrupted.run_dir).size() == 13);
  CHECK(fs::exists(interrupted.run_dir + "/checkpoints/step_000010"));
  CHECK_FALSE(fs::exists(interrupted.run_dir + "/checkpoints/step_000020"));

  CommandResult resumed = run_gum_train(interrupted.config + " --resume auto");
  INFO(resumed.output);
  REQUIRE(resumed.exit_code == 0);
  CHECK(resumed.output.find("resumed from") != std::string::npos);

  std::vector<std::string> expected = trajectory(straight.run_dir);
  REQUIRE(expected.size() == 20);
  CHECK(trajectory(interrupted.run_dir) == expected);
  CHECK(final_weights(interrupted.run_dir, 20) == final_weights(straight.run_dir, 20));
  CHECK(read_file(interrupted.run_dir + "/checkpoints/step_000020/optimizer.safetensors") ==
        read_file(straight.run_dir + "/checkpoints/step_000020/optimizer.safetensors"));
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
  const nlohmann::json no_clip = {{"training", {{"grad_clip", 0.0}, {"max_steps", 6}}},
                                  {"checkpoint", {{"every_steps", 0}}}};
  SwitchedRuns runs = train_with_and_without("fused_update", no_clip, 6);
  CHECK(runs.switched_result.output.find("fused per layer") != std::string::npos);
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

TEST_CASE("gradient accumulation over micro-batches matches one full batch") {
  Run full = make_run("accum_full", {{"training", {{"max_steps", 4}}}, {"checkpoint", {{"every_steps", 0}}}});
  Run micro = make_run(
      "accum_micro", {{"training", {{"max_steps", 4}, {"micro_batch_size", 1}}}, {"checkpoint", {{"every_steps", 0}}}});
  REQUIRE(run_gum_train(full.config + " --resume never").exit_code == 0);
  REQUIRE(run_gum_train(micro.config + " --resume never").exit_code == 0);
  std::istringstream a(read_file(full.run_dir + "/metrics.jsonl")), b(read_file(micro.run_dir + "/metrics.jsonl"));
  std::string la, lb;
  int compared = 0;
  while (std::getline(a, la) && std::getline(b, lb)) {
    nlohmann::json ja = nlohmann::json::parse(la), jb = nlohmann::json::parse(lb);
    CHECK(ja["step"] == jb["step"]);
    CHECK(jb["loss"].get<double>() == Approx(ja["loss"].get<double>()).epsilon(1e-5));
    ++compared;
  }
  CHECK(compared == 4);
}
