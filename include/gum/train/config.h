#pragma once
// The run configuration: one JSON file with sections model, data, optimizer, schedule,
// training, eval, checkpoint and logging (docs/design.md §5). Each section is a typed struct
// parsed once; unknown keys and wrong types are usage errors naming the key path and the
// closest valid key. `--set a.b=value` overrides any key before parsing.
#include <cstdint>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "gum/data/data_config.h"
#include "gum/data/sft.h"
#include "gum/model/config.h"
#include "gum/optim/optimizer_config.h"
#include "gum/train/schedule.h"

namespace gum {

struct TrainingConfig {
  std::string backend = "auto";  // cpu | cuda | auto
  uint64_t seed = 1234;          // weights init, data order, optimizer sampling
  int seq_len = 256;
  int batch_size = 32;             // global sequences per optimizer step (all ranks, all micro-batches)
  int micro_batch_size = 0;        // sequences per rank per forward/backward; 0 = batch_size / world_size
  int64_t max_steps = 0;           // optimizer steps; 0 = derive from max_tokens
  int64_t max_tokens = 0;          // used when max_steps is 0
  double grad_clip = 1.0;          // global-norm clipping; 0 = off
  std::string precision = "fp32";  // fp32 | bf16 (mixed) | bf16_pure (model/llama.h, Precision)
  // How an fp32 update is stored into bf16 weights under bf16_pure (optimizer.h, WeightRounding):
  // stochastic | kahan | nearest (neither: small updates are lost, docs/precision.md).
  std::string weight_rounding = "stochastic";
  // Causal attention kernel of the cuda backend (BackendOptions::attention): flash_wmma | gemm |
  // flash. flash_wmma by default: tensor-core tiles (bf16 operands, fp32 sums and softmax) that
  // keep only the [B, H, T] log-sum-exp; gemm (cuBLAS fp32 products, keeps the [B, H, T, T]
  // probabilities) and flash (fp32 SIMT, one warp per query row, the reference of flash_wmma)
  // compute in fp32 throughout.
  std::string attention = "flash_wmma";
  // F32 GEMMs of the cuda backend in TF32 on the tensor cores (BackendOptions::allow_tf32); the
  // CPU backend ignores it.
  bool allow_tf32 = true;
  bool fused_update = false;  // per-layer update inside backward (a usage error next to grad_clip > 0)
  // auto: a micro-batch's forward and backward are recorded once as a CUDA graph and replayed
  // where the backend can record (cuda), on one rank without fused_update; off: always eager.
  std::string cuda_graphs = "auto";
  // Keep only each block's input and recompute the block in backward (ModelUse::TrainingRecompute).
  bool activation_checkpointing = false;
  int threads = 0;                // CPU threads for OpenMP/OpenBLAS; 0 = all cores
  int64_t logits_chunk_rows = 0;  // token rows per LM-head/loss chunk; 0 = planned (planned_logits_chunk_rows)
};

struct EvalConfig {
  int64_t every_steps = 0;  // 0 = only at the end (when validation data is configured)
  int64_t max_tokens = 0;   // predicted tokens per evaluation; 0 = all validation windows
  bool at_start = false;    // evaluate the initial model before the first step
  bool at_end = true;
};

struct CheckpointConfig {
  std::string dir;          // "" = RUN_DIR/checkpoints
  int64_t every_steps = 0;  // 0 = only at the end
  int keep_last = 3;        // 0 = keep all
  bool at_end = true;
};

struct LoggingConfig {
  int64_t every_steps = 10;
  std::string run_dir;                         // "" = runs/CONFIG_NAME
  std::string metrics_file = "metrics.jsonl";  // relative to run_dir
  double peak_tflops = 0;                      // device peak for MFU; 0 = the backend's known figure (n/a on cpu)
  bool verbose = false;
};

struct TrainConfig {
  LlamaConfig model;
  // model.init_from: the Hugging Face folder or gum_train checkpoint whose config and weights the
  // run starts from (init_from.h); "" = random initialisation.
  std::string init_from;
  DataConfig data;
  // data.sft: supervised fine-tuning examples (sft.h) instead of the token shards.
  std::optional<SftConfig> sft;
  OptimizerConfig optimizer;
  ScheduleConfig schedule;
  TrainingConfig training;
  EvalConfig eval;
  CheckpointConfig checkpoint;
  LoggingConfig logging;

  std::string source;  // the config file (for messages)
  nlohmann::json raw;  // the file's JSON after --set overrides

  // Steps of the run: max_steps, or max_tokens / tokens per step rounded up.
  int64_t total_steps() const;
  int64_t tokens_per_step() const { return int64_t(training.batch_size) * training.seq_len; }
  std::string checkpoint_dir() const;  // checkpoint.dir or RUN_DIR/checkpoints
  std::string metrics_path() const;    // RUN_DIR/metrics_file
};

// Reads the file, applies `overrides` ("a.b=value"), parses and validates every section.
TrainConfig load_train_config(const std::string& path, const std::vector<std::string>& overrides = {});
// Parses a config object; `context` names its source in errors.
TrainConfig train_config_from_json(const nlohmann::json& j, const std::string& context);
// Every key of every section with its value: saved as RUN_DIR/config.json and in trainer.json,
// and reads back into the same TrainConfig.
nlohmann::json train_config_to_json(const TrainConfig& c);

// Applies one "a.b.c=value" to `j`: the value is parsed as JSON, else taken as a string. The
// key must exist in the schema (the resolved config `schema`); a value whose JSON type
// differs from the schema's is a usage error. Errors name the --set argument.
void apply_config_override(nlohmann::json& j, const nlohmann::json& schema, const std::string& assignment);

}  // namespace gum
