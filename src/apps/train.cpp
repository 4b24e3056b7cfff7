#include <filesystem>

#include "commands.h"
#include "gum/core/error.h"
#include "gum/train/config.h"
#include "gum/train/trainer.h"

namespace gum {

int command_train(const std::string& config_path, const std::vector<std::string>& overrides,
                  const std::string& resume) {
  if (resume != "auto" && resume != "never" && !std::filesystem::is_directory(resume))
    usage_error("--resume ", resume, ": expected auto, never or a checkpoint folder (no such folder)");
  TrainConfig config = load_train_config(config_path, overrides);
  return run_training(config, resume);
}

}  // namespace gum
