#pragma once
// The verbs of the gum_train command line (docs/design.md §6). Each returns the exit code and
// throws gum::Error for bad input (usage: exit 2) or failures (runtime: exit 1).
#include <cstdint>
#include <string>
#include <vector>

#include "sample.h"

namespace gum {

// gum_train CONFIG [--set K=V ...] [--resume auto|never|DIR]
int command_train(const std::string& config_path, const std::vector<std::string>& overrides, const std::string& resume);

// gum_train eval CONFIG [--checkpoint DIR] [--data GLOB] [--max-tokens N]: validation loss and
// perplexity of a checkpoint (or, without one, of the initial model), a human line, then one
// JSON line {"tokens": N, "loss": x, "perplexity": y}. --data takes token shards (*.bin) made
// with the config's tokenizer; default: the config's prepared validation shards.
int command_eval(const std::string& config_path, const std::vector<std::string>& overrides,
                 const std::string& checkpoint, const std::string& data_glob, int64_t max_tokens);

// gum_train prepare CONFIG: tokenizer (trained when none is given) and token shards.
int command_prepare(const std::string& config_path, const std::vector<std::string>& overrides);

// gum_train export --checkpoint DIR --out DIR: a Hugging Face folder.
int command_export(const std::string& checkpoint, const std::string& out_dir);

// gum_train plan CONFIG [--world-size N]: memory and FLOP budget per rank without training.
// world_size 0: the launch's (mpirun's), else 1.
int command_plan(const std::string& config_path, const std::vector<std::string>& overrides, int world_size = 0);

// Where `gum_train sample` takes the model from: exactly one of a checkpoint (a step folder or a
// checkpoint folder; its config and tokenizer come from trainer.json) or a Hugging Face folder
// (config.json, safetensors weights, tokenizer.model).
struct SampleSource {
  std::string checkpoint;
  std::string hf_dir;
  std::string tokenizer;         // overrides the source's tokenizer.model
  std::string backend = "auto";  // cpu | cuda | auto
};

// gum_train sample (--checkpoint DIR | --hf DIR) --prompt TEXT [...]: prints the prompt and its
// continuation. The KV cache holds the prompt plus max_new_tokens, at most max_position_embeddings.
int command_sample(const SampleSource& source, const SampleOptions& options);

}  // namespace gum
