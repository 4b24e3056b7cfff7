// A NaN/Inf loss or gradient stops the run with a message naming the step, exit code 1, and
// the last good checkpoint stays intact.
#include <catch2/catch.hpp>
#include <filesystem>
#include <regex>

#include "gum/backend/backend.h"
#include "gum/io/checkpoint.h"
#include "train_test_util.h"

namespace fs = std::filesystem;
using namespace gum_test;

namespace {

// The micro config whose weights overflow after the first update (lr 1e30, no warmup), with
// `extra` keys on top; written to DIR/config.json.
std::string overflowing_config(const std::string& dir, const nlohmann::json& extra) {
  nlohmann::json overrides = {{"optimizer", {{"lr", 1e30}}}, {"schedule", {{"warmup_steps", 0}, {"type", "constant"}}}};
  overrides.update(extra);
  return write_config(dir, micro_config(dir + "/run", overrides));
}

}  // namespace

TEST_CASE("a NaN or Inf loss stops training and keeps the last good checkpoint") {
  prepared_micro_data();
  const std::string dir = fresh_test_dir("nan_stop");
  const std::string config = overflowing_config(dir, {{"checkpoint", {{"every_steps", 1}}}});
  CommandResult r = run_gum_train(config + " --resume never");
  INFO(r.output);
  CHECK(r.exit_code == 1);
  std::smatch m;
  REQUIRE(std::regex_search(r.output, m,
                            std::regex("step ([0-9]+): (loss is (NaN|Inf)|gradient of (\\S+) is NaN or Inf)")));
  const int failed_step = std::stoi(m[1]);
  CHECK(failed_step >= 2);
  CHECK(failed_step < 20);
  CHECK(r.output.find("last good checkpoint") != std::string::npos);

  const std::string last_good = gum::find_resume_checkpoint(dir + "/run/checkpoints");
  CHECK(fs::path(last_good).filename() == gum::checkpoint_folder_name(failed_step - 1));
  CHECK_NOTHROW(gum::verify_checkpoint(last_good));
  CHECK_FALSE(fs::exists(dir + "/run/checkpoints/" + gum::checkpoint_folder_name(failed_step)));
}

TEST_CASE("a NaN found on the device is reported at the next logged step, naming the step it happened at") {
  prepared_micro_data();
  const std::string dir = fresh_test_dir("nan_stop_deferred");
  // The weights overflow after the first update; nothing is checkpointed and only
  // steps 1, 5, 10, ... are logged, so the host first reads the device's record at step 5.
  const std::string config = overflowing_config(
      dir, {{"logging", {{"every_steps", 5}}}, {"checkpoint", {{"every_steps", 0}, {"at_end", false}}}});
  CommandResult r = run_gum_train(config + " --resume never");
  INFO(r.output);
  CHECK(r.exit_code == 1);
  std::smatch m;
  REQUIRE(std::regex_search(
      r.output, m,
      std::regex("step ([0-9]+): (loss is (NaN|Inf)|gradient of (\\S+) is NaN or Inf) \\(found at step 5: ")));
  CHECK(std::stoi(m[1]) >= 2);
  CHECK(std::stoi(m[1]) < 5);
  CHECK(r.output.find("No checkpoint was written yet.") != std::string::npos);
}

TEST_CASE("the first non-finite gradient is named alike by the cpu and the cuda backend's folded check") {
  if (!gum::cuda_available()) return;
  prepared_micro_data();
  // The fused update checks each layer's gradients inside backward, before the loss is checked:
  // the overflowing step's record names a gradient (cuda: Backend::sum_squares_checked's launches).
  std::string found[2];
  for (const char* backend : {"cpu", "cuda"}) {
    const std::string dir = fresh_test_dir(std::string("nan_gradient_") + backend);
    const std::string config =
        overflowing_config(dir, {{"training", {{"backend", backend}, {"fused_update", true}, {"grad_clip", 0.0}}},
                                 {"logging", {{"every_steps", 5}}},
                                 {"checkpoint", {{"every_steps", 0}, {"at_end", false}}}});
    CommandResult r = run_gum_train(config + " --resume never");
    INFO(backend << ": " << r.output);
    CHECK(r.exit_code == 1);
    std::smatch m;
    REQUIRE(std::regex_search(r.output, m, std::regex("step [0-9]+: gradient of \\S+ is NaN or Inf")));
    found[backend == std::string("cuda")] = m[0];
  }
  CHECK(found[1] == found[0]);
}
