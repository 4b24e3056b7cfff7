#include <filesystem>
#include <fstream>

#include "commands.h"
#include "gum/core/error.h"
#include "gum/core/logging.h"
#include "gum/data/prepare.h"
#include "gum/data/tokenizer.h"
#include "gum/io/checkpoint.h"
#include "gum/io/hf_export.h"
#include "gum/io/safetensors.h"
#include "gum/model/params.h"
#include "gum/train/config.h"

namespace fs = std::filesystem;

namespace gum {

int command_export(const std::string& checkpoint, const std::string& out_dir) {
  if (checkpoint.empty() || out_dir.empty()) usage_error("export needs --checkpoint DIR and --out DIR");
  setup_logging();
  const std::string step_dir = resolve_checkpoint_path(checkpoint);
  verify_checkpoint(step_dir);
  const nlohmann::json state = read_checkpoint_trainer_state(step_dir);
  if (!state.contains("config")) runtime_error(step_dir, "/trainer.json: no 'config' (not a gum_train checkpoint?)");
  TrainConfig config = train_config_from_json(state["config"], step_dir + "/trainer.json");

  HfFolder folder;
  folder.weights = read_safetensors(step_dir + "/model.safetensors");
  // Every tensor of the model must be there: transformers fills a missing lm_head randomly
  // with only a warning (docs/design.md §9).
  for (const auto& spec : llama_param_specs(config.model)) {
    auto it = folder.weights.find(spec.name);
    if (it == folder.weights.end()) runtime_error(step_dir, "/model.safetensors: tensor '", spec.name, "' is missing");
    if (!(it->second.shape == spec.shape))
      runtime_error(step_dir, "/model.safetensors: tensor '", spec.name, "' has shape ", it->second.shape.str(),
                    ", the config says ", spec.shape.str());
  }

  LlamaConfig model = config.model;
  const std::string tokenizer = tokenizer_path(config.data);
  if (fs::exists(tokenizer)) {
    Tokenizer tok(tokenizer);
    if (model.bos_token_id < 0) model.bos_token_id = tok.bos_id();
    if (model.eos_token_id < 0) model.eos_token_id = tok.eos_id();
    if (model.pad_token_id < 0) model.pad_token_id = tok.pad_id();
    if (tok.is_hf()) {
      // The source folder's tokenizer_config.json (chat template, added tokens) is kept; the
      // special tokens are set to the ones training used.
      folder.tokenizer_json_path = tok.files()[0];
      folder.tokenizer_config = {{"tokenizer_class", "PreTrainedTokenizerFast"}};
      if (tok.files().size() > 1) folder.tokenizer_config = nlohmann::json::parse(std::ifstream(tok.files()[1]));
      folder.tokenizer_config["model_max_length"] = model.max_position_embeddings;
    } else {
      folder.tokenizer_model_path = tokenizer;
      // Our shards have no BOS: documents are joined with EOS only, so the tokenizer must not add one.
      folder.tokenizer_config = {{"tokenizer_class", "LlamaTokenizer"},
                                 {"add_bos_token", false},
                                 {"add_eos_token", false},
                                 {"legacy", true},
                                 {"model_max_length", model.max_position_embeddings}};
    }
    if (tok.bos_id() >= 0) folder.tokenizer_config["bos_token"] = tok.piece(tok.bos_id());
    if (tok.eos_id() >= 0) folder.tokenizer_config["eos_token"] = tok.piece(tok.eos_id());
    if (tok.unk_id() >= 0) folder.tokenizer_config["unk_token"] = tok.piece(tok.unk_id());
    if (tok.pad_id() >= 0) folder.tokenizer_config["pad_token"] = tok.piece(tok.pad_id());
  } else {
    spdlog::warn("tokenizer {} not found: the export has no tokenizer", tokenizer);
  }
  folder.config = llama_config_to_hf_json(model);
  folder.generation_config = {{"_from_model_config", true}};
  if (model.bos_token_id >= 0) folder.generation_config["bos_token_id"] = model.bos_token_id;
  if (model.eos_token_id >= 0) folder.generation_config["eos_token_id"] = model.eos_token_id;
  if (model.pad_token_id >= 0) folder.generation_config["pad_token_id"] = model.pad_token_id;
  write_hf_folder(out_dir, folder);
  spdlog::info("exported {} ({} tensors, step {}) to {}", step_dir, folder.weights.size(), state.value("step", 0),
               out_dir);
  return 0;
}

}  // namespace gum
