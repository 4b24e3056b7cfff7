#include <algorithm>
#include <cstdio>
#include <filesystem>

#include "commands.h"
#include "gum/core/error.h"
#include "gum/core/logging.h"
#include "gum/data/checksum.h"
#include "gum/data/loader.h"
#include "gum/data/prepare.h"
#include "gum/io/checkpoint.h"
#include "gum/io/safetensors.h"
#include "gum/io/weights.h"
#include "gum/train/batch_source.h"
#include "gum/train/evaluate.h"
#include "gum/train/init_from.h"
#include "gum/train/runtime.h"

namespace fs = std::filesystem;

namespace gum {

namespace {

int eval_micro_batch(const TrainConfig& config, int world_size) {
  return config.training.micro_batch_size > 0 ? config.training.micro_batch_size
                                              : std::max(1, config.training.batch_size / world_size);
}

// The loss over chunks of rows, as training: the [tokens, vocab] logits never exist at once.
ModelMemory eval_model_memory(const TrainConfig& config, int micro_batch) {
  ModelMemory memory;
  memory.logits_chunk_rows = planned_logits_chunk_rows(config, int64_t(micro_batch) * config.training.seq_len);
  return memory;
}

// The weights `eval` scores: the checkpoint, else model.init_from, else the seeded initialisation.
// Returns their description.
std::string load_eval_weights(LlamaModel& model, const TrainConfig& config, const std::string& checkpoint) {
  if (!checkpoint.empty()) {
    const std::string step_dir = resolve_checkpoint_path(checkpoint);
    verify_checkpoint(step_dir);
    load_weights(model.backend(), model.params(), read_safetensors(step_dir + "/model.safetensors"),
                 step_dir + "/model.safetensors");
    return step_dir;
  }
  if (!config.init_from.empty()) {
    const InitSource init = resolve_init_source(config.init_from, config.source);
    load_weights(model.backend(), model.params(), read_init_weights(init), init.dir);
    return init.is_checkpoint ? init.step_dir : init.dir;
  }
  model.init_weights(config.training.seed);
  return "initial weights (seed " + std::to_string(config.training.seed) + ")";
}

void print_eval_line(const EvalResult& r) {
  nlohmann::json line = {{"tokens", r.tokens}, {"loss", r.loss()}, {"perplexity", r.perplexity()}};
  std::printf("%s\n", line.dump().c_str());
  std::fflush(stdout);
}

// data.sft: the masked loss over data.sft.valid_files, as the trainer's periodic evaluation.
int eval_sft(const TrainConfig& config, Runtime& runtime, const std::string& checkpoint, int64_t max_tokens) {
  if (config.sft->valid_files.empty())
    usage_error(config.source, ": data.sft.valid_files is empty: nothing to evaluate");
  std::unique_ptr<BatchSource> data = open_batch_source(config);
  Communicator& comm = *runtime.comm;
  const int micro_batch = eval_micro_batch(config, comm.world_size());
  LlamaModel model(config.model, *runtime.backend, micro_batch, config.training.seq_len, ModelUse::Inference,
                   Precision::Fp32, eval_model_memory(config, micro_batch));
  const std::string source = load_eval_weights(model, config, checkpoint);
  EvalResult r = data->evaluate(model, comm, max_tokens);
  if (comm.is_root()) {
    spdlog::info("eval {}: SFT validation examples, {} trained tokens, masked loss {:.4f}, perplexity {:.3f} ({:.1f}s)",
                 source, r.tokens, r.loss(), r.perplexity(), r.seconds);
    print_eval_line(r);
  }
  return 0;
}

}  // namespace

int command_eval(const std::string& config_path, const std::vector<std::string>& overrides,
                 const std::string& checkpoint, const std::string& data_glob, int64_t max_tokens) {
  TrainConfig config = load_train_config(config_path, overrides);
  if (max_tokens < 0) usage_error("--max-tokens must be >= 0 (0 = every validation token)");
  Runtime runtime = make_runtime(config);
  Communicator& comm = *runtime.comm;
  if (config.sft && data_glob.empty()) return eval_sft(config, runtime, checkpoint, max_tokens);

  const std::string tokenizer = tokenizer_path(config.data);
  if (!fs::exists(tokenizer))
    usage_error(config_path, ": tokenizer ", tokenizer, " not found: run `gum_train prepare ", config_path, "` first");
  std::vector<std::string> shards;
  if (!data_glob.empty()) {
    shards = expand_globs({data_glob}, "--data");
    for (const auto& s : shards)
      if (fs::path(s).extension() != ".bin")
        usage_error("--data ", data_glob, ": ", s, " is not a token shard (*.bin); tokenize a corpus with ",
                    "`gum_train prepare` (data.valid_files) and pass its valid_*.bin shards");
  } else {
    shards = list_shards(config.data, "valid");
    if (shards.empty())
      usage_error(config_path, ": no validation shards in ", config.data.shard_dir,
                  ": set data.valid_files and run `gum_train prepare`, or pass --data GLOB");
  }
  EvalWindows windows(shards, config.training.seq_len, checksum64_file(tokenizer));

  const int micro_batch = eval_micro_batch(config, comm.world_size());
  LlamaModel model(config.model, *runtime.backend, micro_batch, config.training.seq_len, ModelUse::Inference,
                   Precision::Fp32, eval_model_memory(config, micro_batch));
  const std::string source = load_eval_weights(model, config, checkpoint);
  EvalResult r = evaluate(model, windows, comm, max_tokens);
  if (comm.is_root()) {
    spdlog::info("eval {}: {} windows of {} tokens, {} predicted tokens, loss {:.4f}, perplexity {:.3f} ({:.1f}s)",
                 source, eval_window_count(windows, max_tokens), config.training.seq_len, r.tokens, r.loss(),
                 r.perplexity(), r.seconds);
    print_eval_line(r);
  }
  return 0;
}

}  // namespace gum
