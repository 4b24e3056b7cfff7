#pragma once
// Learning-rate schedules: a multiplier of the peak lr (optimizer.lr) per step.
#include <cstdint>
#include <string>

#include "gum/core/config_fields.h"

namespace gum {

struct ScheduleConfig {
  std::string type = "cosine";  // constant | cosine | linear | wsd
  int64_t warmup_steps = -1;    // < 0: use warmup_ratio
  double warmup_ratio = 0.0;    // fraction of the total steps
  double min_lr_ratio = 0.1;    // final lr / peak lr (cosine, linear, wsd)
  double decay_ratio = 0.2;     // wsd: fraction of the total steps spent decaying at the end
};

// The `schedule` section's keys, with the values each accepts.
const FieldTable<ScheduleConfig>& schedule_fields();
// Throws a usage error naming `context` and the key for an unknown type or a value out of range.
void validate_schedule(const ScheduleConfig& s, const std::string& context);

// Warmup steps actually used for a run of total_steps.
int64_t schedule_warmup_steps(const ScheduleConfig& s, int64_t total_steps);

// Multiplier for the 0-based step index (0 .. total_steps-1):
// - warmup: linear from 1/warmup to 1 over the first `warmup` steps;
// - constant: 1 afterwards;
// - cosine: min + (1 - min) * (1 + cos(pi * p)) / 2, p the progress after warmup in [0, 1]
//   (Loshchilov & Hutter, SGDR, eq. 5, one cycle without restarts);
// - linear: 1 - (1 - min) * p;
// - wsd (warmup-stable-decay, Hu et al., MiniCPM, arXiv 2404.06395): 1 until the last
//   decay_ratio of the steps, then linear down to min.
double lr_multiplier(const ScheduleConfig& s, int64_t step_index, int64_t total_steps);

}  // namespace gum
