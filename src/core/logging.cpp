#include "gum/core/logging.h"

#include <spdlog/sinks/stdout_color_sinks.h>
#include <unistd.h>

namespace gum {

void setup_logging(int rank, int world_size, bool verbose) {
  bool terminal = isatty(STDOUT_FILENO) != 0;
  auto sink = std::make_shared<spdlog::sinks::stdout_color_sink_mt>(terminal ? spdlog::color_mode::automatic
                                                                               : spdlog::color_mode::never);
  auto logger = std::make_shared<spdlog::logger>("gum", sink);
  std::string rank_part = world_size > 1 ? "[rank " + std::to_string(rank) + "] " : "";
  logger->set_pattern("%H:%M:%S %^%l%$ " + rank_part + "%v");
  logger->set_level(verbose ? spdlog::level::debug : spdlog::level::info);
  spdlog::set_default_logger(logger);
}

}  // namespace gum
