#include "gum/train/commands.h"

#include <cmath>
#include <cstdio>
#include <filesystem>

#include "gum/core/error.h"
#include "gum/core/logging.h"
#include "gum/data/checksum.h"
#include "gum/data/corpus.h"
#include "gum/data/loader.h"
#include "gum/data/prepare.h"
#include "gum/data/tokenizer.h"
#include "gum/io/checkpoint.h"
#include "gum/io/hf_export.h"
#include "gum/io/safetensors.h"
#include "gum/train/batch_source.h"
#include "gum/train/evaluate.h"
#include "gum/train/init_from.h"
#include "gum/train/metrics.h"
#include "gum/train/plan.h"
#include "gum/train/runtime.h"
#include "gum/train/trainer.h"

namespace fs = std::filesystem;

namespace gum {

int command_train(const std::string& config_path, const std::vector<std::string>& overrides,
                  const std::string& resume) {
  if (resume.empty()) usage_error("--resume needs auto, never or a checkpoint folder");
  TrainConfig config = load_train_config(config_path, overrides);
  return run_training(config, resume);
}

namespace {

int eval_micro_batch(const TrainConfig& config, int world_size) {
  return config.training.micro_batch_size > 0 ? config.training.micro_batch_size
                                              : std::max(1, config.training.batch_size / world_size);
}

// The weights `eval` scores: the checkpoint, else model.init_from, else the seeded initialisation.
// Returns their description.
std::string load_eval_weights(LlamaModel& model, const TrainConfig& config, const std::string& checkpoint) {
  if (!checkpoint.empty()) {
    const std::string step_dir = resolve_checkpoint_path(checkpoint);
    verify_checkpoint(step_dir);
    load_model_weights(model, read_safetensors(step_dir + "/model.safetensors"), step_dir + "/model.safetensors");
    return step_dir;
  }
  if (!config.init_from.empty()) {
    const InitSource init = resolve_init_source(config.init_from, config.source);
    load_model_weights(model, read_init_weights(init), init.dir);
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
  LlamaModel model(config.model, *runtime.backend, eval_micro_batch(config, comm.world_size()),
                   config.training.seq_len, ModelUse::Inference);
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
  LlamaModel model(config.model, *runtime.backend, micro_batch, config.training.seq_len, ModelUse::Inference);
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

int command_prepare(const std::string& config_path, const std::vector<std::string>& overrides) {
  TrainConfig config = load_train_config(config_path, overrides);
  setup_logging(0, 1, config.logging.verbose);
  PrepareSummary s = prepare_data(config.data);
  Tokenizer tokenizer(s.tokenizer_path);
  spdlog::info(
      "prepared {}: tokenizer {} ({} pieces), train {} tokens in {} documents, valid {} tokens in {} "
      "documents ({} shards written, {} reused)",
      config.data.shard_dir, s.tokenizer_path, tokenizer.vocab_size(), format_count(double(s.train_tokens)),
      s.train_documents, format_count(double(s.valid_tokens)), s.valid_documents, s.shards_written, s.shards_reused);
  if (tokenizer.vocab_size() > config.model.vocab_size)
    usage_error(config_path, ": model.vocab_size (", config.model.vocab_size, ") is smaller than the tokenizer's ",
                tokenizer.vocab_size(), " pieces: set model.vocab_size to ", tokenizer.vocab_size());
  if (tokenizer.vocab_size() < config.model.vocab_size)
    spdlog::info("model.vocab_size {} > tokenizer's {} pieces: the extra embedding rows are never used",
                 config.model.vocab_size, tokenizer.vocab_size());
  return 0;
}

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
  // with only a warning (docs/design.md §8).
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
    folder.tokenizer_model_path = tokenizer;
    // Our shards have no BOS: documents are joined with EOS only, so the tokenizer must not add one.
    folder.tokenizer_config = {{"tokenizer_class", "LlamaTokenizer"},
                               {"add_bos_token", false},
                               {"add_eos_token", false},
                               {"legacy", true},
                               {"model_max_length", model.max_position_embeddings}};
    if (tok.bos_id() >= 0) folder.tokenizer_config["bos_token"] = tok.piece(tok.bos_id());
    if (tok.eos_id() >= 0) folder.tokenizer_config["eos_token"] = tok.piece(tok.eos_id());
    if (tok.unk_id() >= 0) folder.tokenizer_config["unk_token"] = tok.piece(tok.unk_id());
    if (tok.pad_id() >= 0) folder.tokenizer_config["pad_token"] = tok.piece(tok.pad_id());
  } else {
    spdlog::warn("tokenizer {} not found: the export has no tokenizer.model", tokenizer);
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

int command_plan(const std::string& config_path, const std::vector<std::string>& overrides, int world_size) {
  TrainConfig config = load_train_config(config_path, overrides);
  setup_logging(0, 1, config.logging.verbose);
  if (world_size < 0) usage_error("--world-size must be at least 1, got ", world_size);
  plan_run(config, world_size > 0 ? world_size : launch_info_from_environment().world_size);
  return 0;
}

}  // namespace gum
