// Learning-rate schedules: warmup, then constant / cosine / linear / warmup-stable-decay. The
// expected multipliers are the formulas written out with literal numbers (step indices are
// 0-based: step i of the log is index i - 1), checked at every boundary: the last warmup step,
// the first step after it, the wsd stable -> decay boundary, the last step and min_lr_ratio.
// The multipliers are computed in double: the same operations agree to 1e-12.
#include <catch2/catch.hpp>
#include <cmath>

#include "gum/core/error.h"
#include "gum/train/schedule.h"
#include "train_test_util.h"

using namespace gum;

namespace {

ScheduleConfig make(const std::string& type, int64_t warmup, double min_ratio = 0.1, double decay_ratio = 0.2) {
  ScheduleConfig s;
  s.type = type;
  s.warmup_steps = warmup;
  s.min_lr_ratio = min_ratio;
  s.decay_ratio = decay_ratio;
  return s;
}

Approx exactly(double value) { return Approx(value).epsilon(1e-12).margin(1e-12); }

}  // namespace

TEST_CASE("warmup rises linearly from 1/warmup to the peak at its last step, for every type") {
  for (const char* type : {"constant", "cosine", "linear", "wsd"}) {
    INFO(type);
    ScheduleConfig s = make(type, 10);
    CHECK(lr_multiplier(s, 0, 100) == exactly(0.1));
    CHECK(lr_multiplier(s, 4, 100) == exactly(0.5));
    CHECK(lr_multiplier(s, 8, 100) == exactly(0.9));
    CHECK(lr_multiplier(s, 9, 100) == exactly(1.0));   // the last warmup step reaches the peak
    CHECK(lr_multiplier(s, 10, 100) == exactly(1.0));  // the first step after warmup is the peak
  }
}

TEST_CASE("cosine decays from the peak after warmup to min_lr_ratio at the last step") {
  // 100 steps, warmup 10: progress p = (i - 10) / 89 over indices 10 .. 99.
  ScheduleConfig s = make("cosine", 10, 0.1);
  auto cosine = [](double p) { return 0.1 + 0.9 * 0.5 * (1.0 + std::cos(M_PI * p)); };
  CHECK(lr_multiplier(s, 10, 100) == exactly(1.0));
  CHECK(lr_multiplier(s, 11, 100) == exactly(cosine(1.0 / 89.0)));
  CHECK(lr_multiplier(s, 54, 100) == exactly(cosine(44.0 / 89.0)));
  CHECK(lr_multiplier(s, 98, 100) == exactly(cosine(88.0 / 89.0)));
  CHECK(lr_multiplier(s, 99, 100) == exactly(0.1));
  // Half way through an odd span: exactly the middle value.
  ScheduleConfig no_warmup = make("cosine", 0, 0.25);
  CHECK(lr_multiplier(no_warmup, 0, 11) == exactly(1.0));
  CHECK(lr_multiplier(no_warmup, 5, 11) == exactly(0.625));
  CHECK(lr_multiplier(no_warmup, 10, 11) == exactly(0.25));
}

TEST_CASE("linear decays from the peak after warmup to min_lr_ratio at the last step") {
  ScheduleConfig s = make("linear", 10, 0.2);
  CHECK(lr_multiplier(s, 10, 100) == exactly(1.0));
  CHECK(lr_multiplier(s, 11, 100) == exactly(1.0 - 0.8 * 1.0 / 89.0));
  CHECK(lr_multiplier(s, 40, 100) == exactly(1.0 - 0.8 * 30.0 / 89.0));
  CHECK(lr_multiplier(s, 99, 100) == exactly(0.2));
  ScheduleConfig to_zero = make("linear", 0, 0.0);
  CHECK(lr_multiplier(to_zero, 0, 11) == exactly(1.0));
  CHECK(lr_multiplier(to_zero, 5, 11) == exactly(0.5));
  CHECK(lr_multiplier(to_zero, 10, 11) == exactly(0.0));
}

TEST_CASE("constant holds the peak after warmup to the last step, whatever min_lr_ratio") {
  ScheduleConfig s = make("constant", 10, 0.1);
  CHECK(lr_multiplier(s, 10, 100) == 1.0);
  CHECK(lr_multiplier(s, 99, 100) == 1.0);
}

TEST_CASE("warmup-stable-decay holds the peak, then decays linearly over the last decay_ratio to min_lr_ratio") {
  // 100 steps, decay_ratio 0.2: 20 decay steps, indices 80 .. 99; the decay starts from the peak
  // at index 80 and reaches min_lr_ratio at 99, 19 steps later.
  ScheduleConfig s = make("wsd", 10, 0.1, 0.2);
  CHECK(lr_multiplier(s, 10, 100) == 1.0);
  CHECK(lr_multiplier(s, 79, 100) == 1.0);  // the last stable step
  CHECK(lr_multiplier(s, 80, 100) == exactly(1.0));
  CHECK(lr_multiplier(s, 81, 100) == exactly(1.0 - 0.9 * 1.0 / 19.0));
  CHECK(lr_multiplier(s, 90, 100) == exactly(1.0 - 0.9 * 10.0 / 19.0));
  CHECK(lr_multiplier(s, 98, 100) == exactly(1.0 - 0.9 * 18.0 / 19.0));
  CHECK(lr_multiplier(s, 99, 100) == exactly(0.1));

  // decay_ratio 0.25 of 10 steps is 2.5 decay steps, rounded to 3: indices 7, 8, 9.
  ScheduleConfig rounded = make("wsd", 0, 0.4, 0.25);
  CHECK(lr_multiplier(rounded, 6, 10) == 1.0);
  CHECK(lr_multiplier(rounded, 7, 10) == exactly(1.0));
  CHECK(lr_multiplier(rounded, 8, 10) == exactly(0.7));
  CHECK(lr_multiplier(rounded, 9, 10) == exactly(0.4));

  // A warmup longer than the stable phase: the decay starts when warmup ends (index 90).
  ScheduleConfig late = make("wsd", 90, 0.1, 0.2);
  CHECK(lr_multiplier(late, 89, 100) == exactly(1.0));
  CHECK(lr_multiplier(late, 90, 100) == exactly(1.0));
  CHECK(lr_multiplier(late, 95, 100) == exactly(1.0 - 0.9 * 5.0 / 9.0));
  CHECK(lr_multiplier(late, 99, 100) == exactly(0.1));
}

TEST_CASE("warmup_ratio sets the warmup from the run length, rounded to the nearest step") {
  ScheduleConfig s = make("cosine", -1);
  s.warmup_ratio = 0.1;
  CHECK(schedule_warmup_steps(s, 10000) == 1000);
  CHECK(lr_multiplier(s, 499, 10000) == exactly(0.5));
  CHECK(lr_multiplier(s, 999, 10000) == exactly(1.0));
  s.warmup_ratio = 0.15;  // 3.75 of 25 steps: 4
  CHECK(schedule_warmup_steps(s, 25) == 4);
  CHECK(lr_multiplier(s, 0, 25) == exactly(0.25));
  CHECK(lr_multiplier(s, 3, 25) == exactly(1.0));
  s.warmup_steps = 2;  // an explicit warmup_steps wins over the ratio
  CHECK(schedule_warmup_steps(s, 25) == 2);
}

TEST_CASE("schedule validation names the key") {
  ScheduleConfig s = make("cosinus", 0);
  REQUIRE_THROWS_WITH(validate_schedule(s, "cfg.json"), Catch::Contains("schedule.type"));
  s = make("cosine", 0, 1.5);
  REQUIRE_THROWS_WITH(validate_schedule(s, "cfg.json"), Catch::Contains("schedule.min_lr_ratio"));
}

TEST_CASE("gum_train logs and applies lr = optimizer.lr x the schedule at every step of a wsd run") {
  using namespace gum_test;
  prepared_micro_data();
  auto run = [](const std::string& name, const nlohmann::json& patch) {
    const std::string dir = fresh_test_dir(name);
    nlohmann::json all = {{"training", {{"max_steps", 10}}}, {"checkpoint", {{"every_steps", 1}, {"keep_last", 0}}}};
    all.merge_patch(patch);
    CommandResult r = run_gum_train(write_config(dir, micro_config(dir + "/run", all)) + " --resume never");
    INFO(r.output);
    REQUIRE(r.exit_code == 0);
    return dir + "/run";
  };
  // 10 steps, warmup 2, decay_ratio 0.3 (3 steps: indices 7, 8, 9), min_lr_ratio 0.25.
  const std::string wsd =
      run("schedule_wsd",
          {{"optimizer", {{"lr", 0.02}}},
           {"schedule", {{"type", "wsd"}, {"warmup_steps", 2}, {"decay_ratio", 0.3}, {"min_lr_ratio", 0.25}}}});
  const std::vector<double> expected = {0.5, 1, 1, 1, 1, 1, 1, 1, 1 - 0.75 * 0.5, 0.25};
  const std::vector<nlohmann::json> lines = metrics_lines(wsd, "lr");
  REQUIRE(lines.size() == expected.size());
  for (size_t i = 0; i < lines.size(); ++i) {
    INFO("step " << i + 1);
    CHECK(lines[i]["step"] == i + 1);
    // optimizer.lr is a float: 0.02 is 0.0199999995529651641845703125, 2.2e-8 relative.
    CHECK(lines[i]["lr"].get<double>() == Approx(0.02 * expected[i]).epsilon(1e-7));
  }
  // The first AdamW step (no weight decay) depends on the lr only: a constant lr of 0.01, the
  // wsd run's first value, gives the same weights after step 1, bit for bit.
  const std::string constant = run(
      "schedule_constant", {{"optimizer", {{"lr", 0.01}}}, {"schedule", {{"type", "constant"}, {"warmup_steps", 0}}}});
  const std::string step1 = "/checkpoints/step_000001/model.safetensors";
  CHECK(read_file(wsd + step1) == read_file(constant + step1));
}
