#include "gum/train/plan.h"

#include "commands.h"
#include "gum/core/error.h"
#include "gum/core/logging.h"
#include "gum/dist/communicator.h"
#include "gum/train/config.h"

namespace gum {

int command_plan(const std::string& config_path, const std::vector<std::string>& overrides, int world_size) {
  TrainConfig config = load_train_config(config_path, overrides);
  setup_logging(0, 1, config.logging.verbose);
  plan_run(config, world_size > 0 ? world_size : launch_info_from_environment().world_size);
  return 0;
}

}  // namespace gum
