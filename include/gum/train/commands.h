#pragma once
// The verbs of the gum_train command line (docs/design.md §6). Each returns the exit code and
// throws gum::Error for bad input (usage: exit 2) or failures (runtime: exit 1).
#include <cstdint>
#include <string>
#include <vector>

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

}  // namespace gum
