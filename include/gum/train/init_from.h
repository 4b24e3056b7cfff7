#pragma once
// `model.init_from: DIR`: fine-tuning starts from a Hugging Face model folder (config.json +
// safetensors, see hf_import.h) or a gum_train checkpoint (a step folder, or a checkpoint folder
// whose newest valid step is taken). The model's shape comes from DIR; other keys of the
// `model` section may repeat it but must agree (so the resolved config, which lists every
// field next to init_from, reads back unchanged).
#include <string>

#include "gum/core/tensor.h"
#include "gum/model/config.h"

namespace gum {

struct InitSource {
  std::string dir;             // absolute
  bool is_checkpoint = false;  // a gum_train step folder (else a Hugging Face folder)
  std::string step_dir;        // the resolved step folder when is_checkpoint
  LlamaConfig config;
  std::string tokenizer;  // DIR/tokenizer.model, or the checkpoint run's tokenizer; "" when none exists
};

// Reads the folder's model config (not the weights). Errors name `context` (the config file),
// model.init_from and the folder.
InitSource resolve_init_source(const std::string& dir, const std::string& context);

// The weights of the folder, named and shaped as llama_param_specs(source.config).
TensorMap read_init_weights(const InitSource& source);

}  // namespace gum
