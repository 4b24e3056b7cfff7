#include "gum/core/logging.h"

#include <spdlog/sinks/stdout_color_sinks.h>
#include <unistd.h>

#include <cstdlib>

namespace gum {

void setup_logging(int rank, int world_size, bool verbose) {
  // mpirun hands ranks a pseudo-terminal, so isatty() is true there even when the output
  // goes to a file: no colour under mpirun.
  bool under_mpirun = std::getenv("OMPI_COMM_WORLD_SIZE") != nullptr;
  bool terminal = isatty(STDOUT_FILENO) != 0 && !under_mpirun;
  auto sink = std::make_shared<spdlog::sinks::stdout_color_sink_mt>(terminal ? spdlog::color_mode::automatic
                                                                               : spdlog::color_mode::never);
  auto logger = std::make_shared<spdlog::logger>("gum", sink);
  std::string rank_part = world_size > 1 ? "[rank " + std::to_string(rank) + "] " : "";
  logger->set_pattern("%H:%M:%S %^%l%$ " + rank_part + "%v");
  logger->set_level(verbose ? spdlog::level::debug : spdlog::level::info);
  spdlog::set_default_logger(logger);
}

}  // namespace gum
