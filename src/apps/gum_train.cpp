// gum_train: the command line. Thin on purpose: parse, dispatch to a verb (one file each in
// src/apps, declared in commands.h), and turn any gum::Error into one line and an exit code
// (0 success, 1 runtime failure, 2 usage or config error).
#define CXXOPTS_VECTOR_DELIMITER '\0'  // --set values may hold commas (JSON lists)
#include <cstdio>
#include <cstring>
#include <cxxopts.hpp>
#include <exception>
#include <filesystem>
#include <string>
#include <vector>

#include "commands.h"
#include "gum/core/error.h"
#include "gum/core/json_util.h"

namespace {

const char* const kUsage = R"(gum_train: pretrain and fine-tune LLaMA-style models (AdamW, Muon, GaLore, GUM).

Usage:
  gum_train CONFIG.json [--set KEY=VALUE ...] [--resume auto|never|DIR]
      Train. Progress goes to the console and RUN_DIR/metrics.jsonl; checkpoints to
      RUN_DIR/checkpoints (RUN_DIR = logging.run_dir, default runs/CONFIG_NAME).
      --resume auto (default) continues from the newest valid checkpoint of the run, never starts
      over, DIR continues from that checkpoint.
  gum_train prepare CONFIG.json
      Tokenize the corpus (data.train_files, data.valid_files) into token shards in data.shard_dir,
      training a SentencePiece tokenizer first when data.tokenizer is not set.
  gum_train eval CONFIG.json [--checkpoint DIR] [--data GLOB] [--max-tokens N]
      Validation loss and perplexity (every token predicted once); last line is JSON:
      {"tokens": N, "loss": x, "perplexity": y}. Without --checkpoint: the untrained model.
  gum_train export --checkpoint DIR --out DIR
      Write a Hugging Face folder (config.json, model.safetensors, tokenizer.model, ...).
  gum_train plan CONFIG.json [--world-size N]
      Memory per rank (weights, gradients, optimizer state, activations) and FLOPs, without
      training, for N ranks (default: mpirun's, else 1; optimizer.shard_states splits the state).
  gum_train sample (--checkpoint DIR | --hf DIR) --prompt TEXT [--max-new-tokens N]
                   [--temperature T] [--top-p P] [--seed S] [--tokenizer FILE] [--backend B]
      Generate text from a checkpoint or a Hugging Face folder (greedy when T is 0).
  gum_train --help | --version

Options:
  --set KEY=VALUE     override a config key, e.g. --set optimizer.lr=3e-3 --set training.max_steps=100
                      (VALUE is read as JSON, else as a string; repeat for several keys)
  --resume MODE       auto | never | CHECKPOINT_DIR (training only)
  --checkpoint DIR    a step folder (RUN_DIR/checkpoints/step_000100) or a checkpoint folder (newest)
  --data GLOB         eval: token shards (*.bin) to evaluate instead of the prepared validation split
  --max-tokens N      eval: stop after about N predicted tokens (0 = all)
  --out DIR           export: the folder to write
  --world-size N      plan: the number of ranks to plan for
  --hf DIR            sample: a Hugging Face model folder (Llama, Mistral, Qwen2; safetensors)
  --prompt TEXT       sample: the text to continue
  --max-new-tokens N  sample: tokens to generate (default 64; stops early at EOS); the KV cache
                      holds prompt + N tokens, at most max_position_embeddings (then it slides)
  --temperature T     sample: 0 = greedy (default), else softmax temperature
  --top-p P           sample: nucleus sampling mass in (0, 1] (default 1)
  --seed S            sample: Philox seed (default 1234)
  --tokenizer FILE    sample: a SentencePiece .model instead of the source's
  --backend B         sample: cpu | cuda | auto (default auto)
  -h, --help          this text
  --version           the version

Multi-GPU / multi-process: mpirun -np 8 gum_train CONFIG.json
Exit codes: 0 success, 1 runtime failure (bad data, NaN loss, I/O), 2 usage or config error.
Config sections: model, data, optimizer, schedule, training, eval, checkpoint, logging (see README.md).
)";

const std::vector<std::string> kVerbs = {"train", "eval", "prepare", "export", "plan", "sample"};

// `gum_train trian x.json`: a first word that is neither a verb nor a file is a mistyped verb,
// which the argument count would otherwise misreport.
void reject_unknown_verb(const std::string& word) {
  if (std::filesystem::exists(word) || std::filesystem::path(word).extension() == ".json") return;
  std::string verbs;
  for (const auto& v : kVerbs) verbs += (verbs.empty() ? "" : ", ") + v;
  const std::string hint = gum::closest_match(word, kVerbs);
  gum::usage_error("'", word, "' is neither a verb nor a config file",
                   hint.empty() ? std::string() : " (did you mean '" + hint + "'?)", "; verbs: ", verbs,
                   ", or gum_train CONFIG.json to train (see gum_train --help)");
}

int run(int argc, char** argv) {
  std::string verb = "train";
  std::vector<char*> args(argv, argv + argc);
  if (argc > 1) {
    for (const auto& v : kVerbs)
      if (v == argv[1]) {
        verb = v;
        args.erase(args.begin() + 1);
        break;
      }
  }

  cxxopts::Options options("gum_train", "");
  options.add_options()("h,help", "")("version", "")("set", "", cxxopts::value<std::vector<std::string>>())(
      "resume", "", cxxopts::value<std::string>()->default_value("auto"))(
      "checkpoint", "", cxxopts::value<std::string>()->default_value(""))(
      "data", "", cxxopts::value<std::string>()->default_value(""))("max-tokens", "",
                                                                    cxxopts::value<int64_t>()->default_value("0"))(
      "out", "", cxxopts::value<std::string>()->default_value(""))(
      "world-size", "", cxxopts::value<int>()->default_value("0"))("hf", "",
                                                                   cxxopts::value<std::string>()->default_value(""))(
      "prompt", "", cxxopts::value<std::string>()->default_value(""))("max-new-tokens", "",
                                                                      cxxopts::value<int>()->default_value("64"))(
      "temperature", "", cxxopts::value<double>()->default_value("0"))("top-p", "",
                                                                       cxxopts::value<double>()->default_value("1"))(
      "seed", "", cxxopts::value<uint64_t>()->default_value("1234"))("tokenizer", "",
                                                                     cxxopts::value<std::string>()->default_value(""))(
      "backend", "", cxxopts::value<std::string>()->default_value("auto"))("positional", "",
                                                                           cxxopts::value<std::vector<std::string>>());
  options.parse_positional({"positional"});
  cxxopts::ParseResult parsed;
  try {
    parsed = options.parse(static_cast<int>(args.size()), args.data());
  } catch (const cxxopts::exceptions::exception& e) {
    gum::usage_error(e.what(), " (see gum_train --help)");
  }
  if (parsed.count("help")) {
    std::fputs(kUsage, stdout);
    return 0;
  }
  if (parsed.count("version")) {
    std::printf("gum_train %s\n", GUM_VERSION);
    return 0;
  }

  std::vector<std::string> positional;
  if (parsed.count("positional")) positional = parsed["positional"].as<std::vector<std::string>>();
  std::vector<std::string> overrides;
  if (parsed.count("set")) overrides = parsed["set"].as<std::vector<std::string>>();
  const std::string checkpoint = parsed["checkpoint"].as<std::string>();

  if (verb == "export") {
    if (!positional.empty()) gum::usage_error("export takes no CONFIG: gum_train export --checkpoint DIR --out DIR");
    return gum::command_export(checkpoint, parsed["out"].as<std::string>());
  }
  if (verb == "sample") {
    if (!positional.empty())
      gum::usage_error("sample takes no CONFIG: gum_train sample --checkpoint DIR --prompt TEXT");
    gum::SampleSource source;
    source.checkpoint = checkpoint;
    source.hf_dir = parsed["hf"].as<std::string>();
    source.tokenizer = parsed["tokenizer"].as<std::string>();
    source.backend = parsed["backend"].as<std::string>();
    if (!parsed.count("prompt")) gum::usage_error("sample needs --prompt TEXT (--prompt '' starts from BOS alone)");
    gum::SampleOptions sample;
    sample.prompt = parsed["prompt"].as<std::string>();
    sample.max_new_tokens = parsed["max-new-tokens"].as<int>();
    sample.temperature = parsed["temperature"].as<double>();
    sample.top_p = parsed["top-p"].as<double>();
    sample.seed = parsed["seed"].as<uint64_t>();
    return gum::command_sample(source, sample);
  }
  if (!positional.empty()) reject_unknown_verb(positional[0]);
  if (positional.size() != 1)
    gum::usage_error(positional.empty()
                         ? "missing CONFIG.json"
                         : "expected one CONFIG.json, got " + std::to_string(positional.size()) + " arguments",
                     " (see gum_train --help)");
  const std::string& config = positional[0];
  if (verb == "train") return gum::command_train(config, overrides, parsed["resume"].as<std::string>());
  if (verb == "eval")
    return gum::command_eval(config, overrides, checkpoint, parsed["data"].as<std::string>(),
                             parsed["max-tokens"].as<int64_t>());
  if (verb == "prepare") return gum::command_prepare(config, overrides);
  const int world_size = parsed["world-size"].as<int>();
  if (parsed.count("world-size") && world_size < 1)
    gum::usage_error("--world-size must be at least 1, got ", world_size);
  return gum::command_plan(config, overrides, world_size);
}

}  // namespace

int main(int argc, char** argv) {
  try {
    return run(argc, argv);
  } catch (const gum::Error& e) {
    std::fflush(stdout);
    std::fprintf(stderr, "gum_train: %s error: %s\n", e.kind() == gum::ErrorKind::Usage ? "usage" : "runtime",
                 e.what());
    return e.exit_code();
  } catch (const std::exception& e) {
    std::fflush(stdout);
    std::fprintf(stderr, "gum_train: error: %s\n", e.what());
    return 1;
  }
}
