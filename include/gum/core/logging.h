#pragma once
// Logging goes through spdlog. The rank is part of every line (multi-process runs
// interleave), and colour is used only when stdout is a terminal.
#include <spdlog/spdlog.h>

namespace gum {

// Call once at start-up (and again once the rank is known).
void setup_logging(int rank = 0, int world_size = 1, bool verbose = false);

}  // namespace gum
