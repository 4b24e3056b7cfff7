#include "gum/train/init_from.h"

#include <filesystem>

#include "gum/core/error.h"
#include "gum/core/json_util.h"
#include "gum/data/data_config.h"
#include "gum/data/prepare.h"
#include "gum/data/tokenizer.h"
#include "gum/io/checkpoint.h"
#include "gum/io/safetensors.h"
#include "gum/model/hf_import.h"

namespace fs = std::filesystem;

namespace gum {

InitSource resolve_init_source(const std::string& dir, const std::string& context) {
  InitSource s;
  if (dir.empty()) usage_error(context, ": model.init_from is empty (a Hugging Face folder or a checkpoint)");
  s.dir = fs::absolute(dir).lexically_normal().string();
  if (!fs::is_directory(s.dir)) usage_error(context, ": model.init_from: folder ", s.dir, " not found");

  if (fs::exists(s.dir + "/config.json")) {
    const std::string config_path = s.dir + "/config.json";
    s.config = hf_config_from_json(read_json_file(config_path), config_path);
    s.tokenizer = tokenizer_in_folder(s.dir);
    return s;
  }
  if (!fs::exists(s.dir + "/trainer.json") && !fs::exists(s.dir + "/latest") && list_checkpoints(s.dir).empty())
    usage_error(context, ": model.init_from: ", s.dir,
                " holds neither config.json (a Hugging Face model) nor trainer.json (a gum_train checkpoint step "
                "folder) nor step folders");
  s.is_checkpoint = true;
  s.step_dir = resolve_checkpoint_path(s.dir, "model.init_from");
  const std::string state_path = s.step_dir + "/trainer.json";
  const nlohmann::json state = read_checkpoint_trainer_state(s.step_dir);
  if (!state.contains("config") || !state["config"].contains("model"))
    usage_error(context, ": model.init_from: ", state_path, " has no config.model (not a gum_train checkpoint?)");
  nlohmann::json model = state["config"]["model"];
  model.erase("init_from");  // the checkpoint's own base model: its fields are listed beside it
  s.config = llama_config_from_json(model, state_path);
  s.tokenizer = tokenizer_in_folder(s.step_dir);
  if (s.tokenizer.empty() && state["config"].contains("data")) {
    nlohmann::json data = state["config"]["data"];
    data.erase("sft");
    const std::string saved = tokenizer_path(data_config_from_json(data, state_path));
    if (fs::exists(saved)) s.tokenizer = saved;
  }
  return s;
}

TensorMap read_init_weights(const InitSource& source) {
  if (!source.is_checkpoint) return load_hf_model(source.dir).weights;
  verify_checkpoint(source.step_dir);
  return read_safetensors(source.step_dir + "/model.safetensors");
}

}  // namespace gum
