#pragma once
// Time spent in sections of a run, summed as wall clock and as CPU time of the process: the
// optimizer's and the projector refreshes' share of a training step (metrics.jsonl fields
// optimizer_ms, refresh_ms and their _cpu_ms twins). CPU time does not count the time other
// processes hold the cores, so on a loaded machine it is the steadier of the two; with several
// threads it sums them all. On the cuda backend both measure only the host's side of
// asynchronous work.
#include <time.h>

#include <chrono>

namespace gum {

inline double process_cpu_seconds() {
  timespec t{};
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t);
  return static_cast<double>(t.tv_sec) + 1e-9 * static_cast<double>(t.tv_nsec);
}

struct TimeSpent {
  double wall_s = 0;
  double cpu_s = 0;
};

// Adds the wall and CPU time from its construction to its destruction to `into`.
class ScopedTimeSpent {
 public:
  explicit ScopedTimeSpent(TimeSpent& into)
      : into_(into), wall_(std::chrono::steady_clock::now()), cpu_s_(process_cpu_seconds()) {}
  ~ScopedTimeSpent() {
    into_.wall_s += std::chrono::duration<double>(std::chrono::steady_clock::now() - wall_).count();
    into_.cpu_s += process_cpu_seconds() - cpu_s_;
  }
  ScopedTimeSpent(const ScopedTimeSpent&) = delete;
  ScopedTimeSpent& operator=(const ScopedTimeSpent&) = delete;

 private:
  TimeSpent& into_;
  std::chrono::steady_clock::time_point wall_;
  double cpu_s_;
};

}  // namespace gum
