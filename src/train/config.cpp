#include "gum/train/config.h"

#include <filesystem>

#include "gum/core/config_fields.h"
#include "gum/core/error.h"
#include "gum/core/json_util.h"
#include "gum/optim/optimizer_config_json.h"
#include "gum/train/init_from.h"

namespace gum {

namespace {

const std::vector<std::string> kSections = {"model",    "data", "optimizer",  "schedule",
                                            "training", "eval", "checkpoint", "logging"};

const nlohmann::json& section_or_empty(const nlohmann::json& j, const char* name) {
  static const nlohmann::json empty = nlohmann::json::object();
  auto it = j.find(name);
  return it == j.end() || it->is_null() ? empty : *it;
}

const FieldTable<TrainingConfig> kTrainingFields = {
    {"backend", &TrainingConfig::backend, one_of({"cpu", "cuda", "auto"})},
    {"seed", &TrainingConfig::seed},
    {"seq_len", &TrainingConfig::seq_len, positive()},
    {"batch_size", &TrainingConfig::batch_size, positive()},
    {"micro_batch_size", &TrainingConfig::micro_batch_size, at_least(0)},
    {"max_steps", &TrainingConfig::max_steps, at_least(0)},
    {"max_tokens", &TrainingConfig::max_tokens, at_least(0)},
    {"grad_clip", &TrainingConfig::grad_clip, at_least(0)},
    {"precision", &TrainingConfig::precision, one_of({"fp32", "bf16", "bf16_pure"})},
    {"weight_rounding", &TrainingConfig::weight_rounding, one_of({"stochastic", "kahan", "nearest"})},
    {"attention", &TrainingConfig::attention, one_of({"gemm", "flash", "flash_wmma"})},
    {"allow_tf32", &TrainingConfig::allow_tf32},
    {"fused_update", &TrainingConfig::fused_update},
    {"cuda_graphs", &TrainingConfig::cuda_graphs, one_of({"auto", "off"})},
    {"activation_checkpointing", &TrainingConfig::activation_checkpointing},
    {"threads", &TrainingConfig::threads, at_least(0)},
    {"logits_chunk_rows", &TrainingConfig::logits_chunk_rows, at_least(0)},
};

const FieldTable<EvalConfig> kEvalFields = {
    {"every_steps", &EvalConfig::every_steps, at_least(0)},
    {"max_tokens", &EvalConfig::max_tokens, at_least(0)},
    {"at_start", &EvalConfig::at_start},
    {"at_end", &EvalConfig::at_end},
};

const FieldTable<CheckpointConfig> kCheckpointFields = {
    {"dir", &CheckpointConfig::dir},
    {"every_steps", &CheckpointConfig::every_steps, at_least(0)},
    {"keep_last", &CheckpointConfig::keep_last, at_least(0)},
    {"at_end", &CheckpointConfig::at_end},
};

const FieldTable<LoggingConfig> kLoggingFields = {
    {"every_steps", &LoggingConfig::every_steps, positive()},
    {"run_dir", &LoggingConfig::run_dir},
    {"metrics_file", &LoggingConfig::metrics_file},
    {"peak_tflops", &LoggingConfig::peak_tflops, at_least(0)},
    {"verbose", &LoggingConfig::verbose},
};

// What involves several keys of the training section.
void validate_training(const TrainingConfig& t, const std::string& context) {
  // Global-norm clipping needs the norm of the whole gradient before the first update; the fused
  // update has updated most layers by then.
  if (t.fused_update && t.grad_clip > 0)
    usage_error(context, ": training.fused_update cannot be combined with training.grad_clip ", t.grad_clip,
                " (global-norm clipping needs the whole gradient before any layer is updated): set "
                "training.grad_clip to 0 or training.fused_update to false");
  if (t.max_steps == 0 && t.max_tokens == 0)
    usage_error(context, ": set training.max_steps or training.max_tokens (the length of the run)");
}

// Splits "a.b.c" into its parts; empty parts are a usage error.
std::vector<std::string> split_key_path(const std::string& key, const std::string& assignment) {
  std::vector<std::string> parts;
  size_t start = 0;
  while (true) {
    size_t dot = key.find('.', start);
    std::string part = key.substr(start, dot == std::string::npos ? std::string::npos : dot - start);
    if (part.empty()) usage_error("--set ", assignment, ": malformed key '", key, "' (expected SECTION.KEY=VALUE)");
    parts.push_back(part);
    if (dot == std::string::npos) break;
    start = dot + 1;
  }
  return parts;
}

const char* json_type_description(const nlohmann::json& v) {
  if (v.is_boolean()) return "a boolean";
  if (v.is_number_integer()) return "an integer";
  if (v.is_number()) return "a number";
  if (v.is_string()) return "a string";
  if (v.is_array()) return "a list";
  if (v.is_object()) return "an object";
  return "null";
}

bool override_type_matches(const nlohmann::json& schema_value, const nlohmann::json& value) {
  if (schema_value.is_null()) return true;  // optional field without a default value
  if (schema_value.is_number_float()) return value.is_number();
  if (schema_value.is_number_integer()) return value.is_number_integer();
  if (schema_value.is_array()) return value.is_array() || value.is_string();  // a glob list or one glob
  return schema_value.type() == value.type();
}

// The `model` section: a preset or fields, or init_from (init_from.h) whose folder gives the
// config. Keys next to init_from must agree with the folder: they are there in resolved
// configs, and a mismatch means the user expects a model the folder does not hold. When the
// folder is gone (a finished run's resolved config, read by `export`), complete fields are
// taken as written; the weights are only read when a fresh run starts.
void model_from_json(const nlohmann::json& section, const std::string& context, TrainConfig& c) {
  if (!section.is_object() || !section.contains("init_from")) {
    c.model = llama_config_from_json(section, context);
    return;
  }
  if (!section["init_from"].is_string())
    usage_error(context, ": model.init_from must be a string (a Hugging Face folder or a checkpoint)");
  c.init_from = std::filesystem::absolute(section["init_from"].get<std::string>()).lexically_normal().string();
  nlohmann::json fields = section;
  fields.erase("init_from");
  if (fields.contains("preset"))
    usage_error(context, ": model.preset and model.init_from exclude each other (init_from ", c.init_from,
                " gives the model)");
  if (!std::filesystem::exists(c.init_from) && fields.contains("hidden_size") && fields.contains("vocab_size")) {
    c.model = llama_config_from_json(fields, context);
    return;
  }
  const InitSource source = resolve_init_source(c.init_from, context);
  c.model = source.config;
  c.model.validate(source.dir);
  const nlohmann::json from_folder = llama_config_to_json(c.model);
  for (const auto& item : fields.items()) {
    auto it = from_folder.find(item.key());
    if (it == from_folder.end())
      usage_error(context, ": model.", item.key(), " is not a model field (with model.init_from only fields that ",
                  "agree with ", source.dir, " may be given)");
    if (*it != item.value())
      usage_error(context, ": model.", item.key(), " is ", item.value().dump(), " but model.init_from ", source.dir,
                  " has ", it->dump(), " (drop the key: the model's config comes from the folder)");
  }
}

// The `data` section: DataConfig, plus data.sft (sft.h) which selects the SFT loader. A run
// from model.init_from without data.tokenizer uses the folder's tokenizer.model.
void data_from_json(const nlohmann::json& section, const std::string& context, TrainConfig& c) {
  nlohmann::json shards_section = section;
  if (section.is_object() && section.contains("sft")) {
    shards_section.erase("sft");
    c.sft = sft_config_from_json(section["sft"], context, "data.sft");
  }
  c.data = data_config_from_json(shards_section, context);
  if (!c.init_from.empty() && c.data.tokenizer.empty() && std::filesystem::exists(c.init_from)) {
    const InitSource source = resolve_init_source(c.init_from, context);
    c.data.tokenizer = source.tokenizer;
  }
}

}  // namespace

int64_t TrainConfig::total_steps() const {
  if (training.max_steps > 0) return training.max_steps;
  return (training.max_tokens + tokens_per_step() - 1) / tokens_per_step();
}

std::string TrainConfig::checkpoint_dir() const {
  return checkpoint.dir.empty() ? logging.run_dir + "/checkpoints" : checkpoint.dir;
}

std::string TrainConfig::metrics_path() const { return logging.run_dir + "/" + logging.metrics_file; }

TrainConfig train_config_from_json(const nlohmann::json& j, const std::string& context) {
  if (!j.is_object()) usage_error(context, ": the config must be a JSON object with sections ", "model, data, ...");
  reject_unknown_keys(j, kSections, context, "");
  if (!j.contains("model")) usage_error(context, ": missing section 'model' (a preset name or the model's fields)");
  TrainConfig c;
  c.source = context;
  c.raw = j;
  model_from_json(j["model"], context, c);
  data_from_json(section_or_empty(j, "data"), context, c);
  c.optimizer = optimizer_config_from_json(section_or_empty(j, "optimizer"), context);
  c.schedule = section_from_json(section_or_empty(j, "schedule"), schedule_fields(), context, "schedule");
  c.training = section_from_json(section_or_empty(j, "training"), kTrainingFields, context, "training");
  validate_training(c.training, context);
  c.eval = section_from_json(section_or_empty(j, "eval"), kEvalFields, context, "eval");
  c.checkpoint = section_from_json(section_or_empty(j, "checkpoint"), kCheckpointFields, context, "checkpoint");
  c.logging = section_from_json(section_or_empty(j, "logging"), kLoggingFields, context, "logging");
  if (c.logging.run_dir.empty()) c.logging.run_dir = "runs/run";
  if (c.training.seq_len > c.model.max_position_embeddings)
    usage_error(context, ": training.seq_len (", c.training.seq_len, ") exceeds model.max_position_embeddings (",
                c.model.max_position_embeddings, ")");
  return c;
}

nlohmann::json train_config_to_json(const TrainConfig& c) {
  nlohmann::json j;
  j["model"] = llama_config_to_json(c.model);
  if (!c.init_from.empty()) j["model"]["init_from"] = c.init_from;
  j["data"] = to_json(c.data);
  if (c.sft) j["data"]["sft"] = to_json(*c.sft);
  j["optimizer"] = to_json(c.optimizer);
  write_fields(schedule_fields(), c.schedule, j["schedule"]);
  write_fields(kTrainingFields, c.training, j["training"]);
  write_fields(kEvalFields, c.eval, j["eval"]);
  write_fields(kCheckpointFields, c.checkpoint, j["checkpoint"]);
  write_fields(kLoggingFields, c.logging, j["logging"]);
  return j;
}

void apply_config_override(nlohmann::json& j, const nlohmann::json& schema, const std::string& assignment) {
  size_t eq = assignment.find('=');
  if (eq == std::string::npos || eq == 0)
    usage_error("--set ", assignment, ": expected KEY=VALUE, e.g. --set optimizer.lr=3e-3");
  const std::string key = assignment.substr(0, eq);
  const std::string text = assignment.substr(eq + 1);
  std::vector<std::string> parts = split_key_path(key, assignment);

  // The key must exist in the schema; name the closest sibling otherwise.
  const nlohmann::json* node = &schema;
  std::string walked;
  for (const auto& part : parts) {
    if (!node->is_object()) usage_error("--set ", assignment, ": '", walked, "' has no sub-keys");
    auto it = node->find(part);
    if (it == node->end()) {
      std::vector<std::string> siblings;
      for (const auto& item : node->items()) siblings.push_back(item.key());
      std::string hint = closest_match(part, siblings);
      const std::string prefix = walked.empty() ? "" : walked + ".";
      usage_error("--set ", assignment, ": unknown key '", prefix, part, "'",
                  hint.empty() ? std::string() : " (did you mean '" + prefix + hint + "'?)");
    }
    walked += (walked.empty() ? "" : ".") + part;
    node = &*it;
  }

  nlohmann::json value;
  try {
    value = nlohmann::json::parse(text);
  } catch (const nlohmann::json::parse_error&) {
    value = text;  // not JSON: a bare string such as --set training.backend=cpu
  } catch (const nlohmann::json::out_of_range&) {
    usage_error("--set ", assignment, ": key '", key, "': the number is out of range");  // 1e999
  }
  if (!override_type_matches(*node, value))
    usage_error("--set ", assignment, ": key '", key, "' must be ", json_type_description(*node), ", got ",
                value.dump());

  nlohmann::json* target = &j;
  for (size_t i = 0; i + 1 < parts.size(); ++i) {
    nlohmann::json& child = (*target)[parts[i]];
    if (child.is_null()) child = nlohmann::json::object();
    target = &child;
  }
  (*target)[parts.back()] = value;
}

TrainConfig load_train_config(const std::string& path, const std::vector<std::string>& overrides) {
  if (!std::filesystem::is_regular_file(path)) usage_error(path, ": config file not found");
  nlohmann::json j = read_json_file(path);
  // The default run folder is named after the config file: runs/llama_tiny for llama_tiny.json.
  if (j.is_object() && !(j.contains("logging") && j["logging"].contains("run_dir"))) {
    if (!j.contains("logging") || j["logging"].is_null()) j["logging"] = nlohmann::json::object();
    if (j["logging"].is_object()) j["logging"]["run_dir"] = "runs/" + std::filesystem::path(path).stem().string();
  }
  TrainConfig base = train_config_from_json(j, path);
  if (overrides.empty()) return base;
  nlohmann::json schema = train_config_to_json(base);
  schema["model"]["preset"] = "";  // accepted by the model section though not part of the resolved form
  schema["optimizer"] = every_optimizer_key_json();  // --set may switch the optimizer, then set its keys
  if (!schema["model"].contains("init_from")) schema["model"]["init_from"] = "";
  for (const auto& assignment : overrides) apply_config_override(j, schema, assignment);
  return train_config_from_json(j, path + " (with --set)");
}

}  // namespace gum
