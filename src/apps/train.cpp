#include "commands.h"
#include "gum/core/error.h"
#include "gum/train/config.h"
#include "gum/train/trainer.h"

namespace gum {

int command_train(const std::string& config_path, const std::vector<std::string>& overrides,
                  const std::string& resume) {
  if (resume.empty()) usage_error("--resume needs auto, never or a checkpoint folder");
  TrainConfig config = load_train_config(config_path, overrides);
  return run_training(config, resume);
}

}  // namespace gum
