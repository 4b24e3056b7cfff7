#include "gum/train/schedule.h"

#include <algorithm>
#include <cmath>

#include "gum/core/error.h"

namespace gum {

const FieldTable<ScheduleConfig>& schedule_fields() {
  static const FieldTable<ScheduleConfig> fields = {
      {"type", &ScheduleConfig::type, one_of({"constant", "cosine", "linear", "wsd"})},
      {"warmup_steps", &ScheduleConfig::warmup_steps},
      {"warmup_ratio", &ScheduleConfig::warmup_ratio, in_range(0, false, 1, true)},
      {"min_lr_ratio", &ScheduleConfig::min_lr_ratio, in_range(0, false, 1, false)},
      {"decay_ratio", &ScheduleConfig::decay_ratio, in_range(0, true, 1, false)},
  };
  return fields;
}

void validate_schedule(const ScheduleConfig& s, const std::string& context) {
  check_fields(schedule_fields(), s, context, "schedule");
}

int64_t schedule_warmup_steps(const ScheduleConfig& s, int64_t total_steps) {
  if (s.warmup_steps >= 0) return s.warmup_steps;
  return static_cast<int64_t>(std::llround(s.warmup_ratio * static_cast<double>(total_steps)));
}

double lr_multiplier(const ScheduleConfig& s, int64_t step_index, int64_t total_steps) {
  const int64_t warmup = schedule_warmup_steps(s, total_steps);
  if (step_index < warmup) return static_cast<double>(step_index + 1) / static_cast<double>(warmup);
  if (s.type == "constant") return 1.0;

  const double min = s.min_lr_ratio;
  if (s.type == "wsd") {
    const int64_t decay_steps = std::max<int64_t>(1, std::llround(s.decay_ratio * static_cast<double>(total_steps)));
    const int64_t decay_start = std::max(warmup, total_steps - decay_steps);
    if (step_index < decay_start) return 1.0;
    // Reaches min at the last step.
    const double span = std::max<int64_t>(1, total_steps - 1 - decay_start);
    const double p = std::min(1.0, static_cast<double>(step_index - decay_start) / span);
    return 1.0 - (1.0 - min) * p;
  }

  // Progress over the steps after warmup, 0 at the first and 1 at the last.
  const double span = std::max<int64_t>(1, total_steps - 1 - warmup);
  const double p = std::clamp(static_cast<double>(step_index - warmup) / span, 0.0, 1.0);
  if (s.type == "linear") return 1.0 - (1.0 - min) * p;
  return min + (1.0 - min) * 0.5 * (1.0 + std::cos(M_PI * p));
}

}  // namespace gum
