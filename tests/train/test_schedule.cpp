// Learning-rate schedules: warmup, then constant / cosine / linear / warmup-stable-decay.
#include <catch2/catch.hpp>
#include <cmath>

#include "gum/core/error.h"
#include "gum/train/schedule.h"

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
}  // namespace

TEST_CASE("warmup rises linearly to the peak") {
  for (const char* type : {"constant", "cosine", "linear", "wsd"}) {
    ScheduleConfig s = make(type, 10);
    CHECK(lr_multiplier(s, 0, 100) == Approx(0.1));
    CHECK(lr_multiplier(s, 4, 100) == Approx(0.5));
    CHECK(lr_multiplier(s, 9, 100) == Approx(1.0));
  }
}

TEST_CASE("cosine decays from the peak to min_lr_ratio") {
  ScheduleConfig s = make("cosine", 10, 0.1);
  CHECK(lr_multiplier(s, 10, 111) == Approx(1.0));
  CHECK(lr_multiplier(s, 60, 111) == Approx(0.55));  // half way: min + (1 - min) / 2
  CHECK(lr_multiplier(s, 110, 111) == Approx(0.1));
  for (int64_t i = 11; i < 111; ++i) CHECK(lr_multiplier(s, i, 111) <= lr_multiplier(s, i - 1, 111));
}

TEST_CASE("linear and constant schedules") {
  ScheduleConfig lin = make("linear", 0, 0.0);
  CHECK(lr_multiplier(lin, 0, 11) == Approx(1.0));
  CHECK(lr_multiplier(lin, 5, 11) == Approx(0.5));
  CHECK(lr_multiplier(lin, 10, 11) == Approx(0.0).margin(1e-12));
  ScheduleConfig constant = make("constant", 0);
  CHECK(lr_multiplier(constant, 50, 100) == 1.0);
}

TEST_CASE("warmup-stable-decay holds the peak then decays over the last decay_ratio") {
  ScheduleConfig s = make("wsd", 5, 0.0, 0.2);
  CHECK(lr_multiplier(s, 5, 100) == 1.0);
  CHECK(lr_multiplier(s, 79, 100) == 1.0);
  CHECK(lr_multiplier(s, 80, 100) == Approx(1.0));
  CHECK(lr_multiplier(s, 99, 100) == Approx(0.0).margin(1e-12));
  CHECK(lr_multiplier(s, 90, 100) < 1.0);
}

TEST_CASE("warmup_ratio sets the warmup from the run length") {
  ScheduleConfig s = make("cosine", -1);
  s.warmup_ratio = 0.1;
  CHECK(schedule_warmup_steps(s, 10000) == 1000);
  CHECK(lr_multiplier(s, 499, 10000) == Approx(0.5));
}

TEST_CASE("schedule validation names the key") {
  ScheduleConfig s = make("cosinus", 0);
  REQUIRE_THROWS_WITH(validate_schedule(s, "cfg.json"), Catch::Contains("schedule.type"));
  s = make("cosine", 0, 1.5);
  REQUIRE_THROWS_WITH(validate_schedule(s, "cfg.json"), Catch::Contains("schedule.min_lr_ratio"));
}
