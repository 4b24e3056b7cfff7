// `gum_train export` writes a Hugging Face folder; `gum_train plan` predicts memory without
// allocating it (even for the 7B preset).
#include <algorithm>
#include <catch2/catch.hpp>
#include <filesystem>

#include "gum/data/prepare.h"
#include "gum/io/checkpoint.h"
#include "gum/io/safetensors.h"
#include "gum/train/config.h"
#include "gum/train/plan.h"
#include "train_test_util.h"

namespace fs = std::filesystem;
using namespace gum;
using namespace gum_test;

TEST_CASE("export writes config, weights with lm_head, generation config and tokenizer") {
  prepared_micro_data();
  const std::string dir = fresh_test_dir("export");
  const std::string config_path = write_config(
      dir, micro_config(dir + "/run", {{"training", {{"max_steps", 2}}}, {"checkpoint", {{"every_steps", 0}}}}));
  REQUIRE(run_gum_train(config_path + " --resume never").exit_code == 0);
  const std::string out = dir + "/hf";
  CommandResult r = run_gum_train("export --checkpoint " + dir + "/run/checkpoints --out " + out);
  INFO(r.output);
  REQUIRE(r.exit_code == 0);
  for (const char* f :
       {"config.json", "model.safetensors", "generation_config.json", "tokenizer.model", "tokenizer_config.json"})
    CHECK(fs::exists(out + "/" + f));

  nlohmann::json hf = nlohmann::json::parse(read_file(out + "/config.json"));
  CHECK(hf["architectures"][0] == "LlamaForCausalLM");
  CHECK(hf["hidden_size"] == 32);
  CHECK(hf["num_key_value_heads"] == 2);
  CHECK(hf.contains("rope_theta"));
  TensorMap exported = read_safetensors(out + "/model.safetensors");
  TensorMap saved = read_safetensors(dir + "/run/checkpoints/step_000002/model.safetensors");
  REQUIRE(exported.count("lm_head.weight") == 1);
  CHECK(exported.size() == saved.size());
  CHECK(exported.at("model.layers.1.mlp.down_proj.weight").bytes ==
        saved.at("model.layers.1.mlp.down_proj.weight").bytes);
  CHECK(read_file(out + "/tokenizer.model") == read_file(tokenizer_path(load_train_config(config_path).data)));

  r = run_gum_train("export --checkpoint " + dir + "/run/checkpoints");
  CHECK(r.exit_code == 2);
}

TEST_CASE("plan prints the memory budget of the 7B preset without allocating it") {
  CommandResult r = run_gum_train(std::string("plan ") + GUM_SOURCE_DIR + "/configs/llama_7b.json");
  INFO(r.output);
  REQUIRE(r.exit_code == 0);
  for (const char* row : {"weights", "gradients", "optimizer state", "activations", "FLOPs per token"})
    CHECK(r.output.find(row) != std::string::npos);
  CHECK(r.output.find("6.74G parameters") != std::string::npos);
}

TEST_CASE("plan with shard_states and several ranks reports the largest rank's optimizer state") {
  prepared_micro_data();
  const std::string dir = fresh_test_dir("plan_sharded");
  // micro_batch_size 2 for every world size below: only the optimizer state may differ.
  const std::string config_path =
      write_config(dir, micro_config(dir + "/run", {{"optimizer", {{"name", "muon"}, {"shard_states", true}}},
                                                    {"training", {{"batch_size", 6}, {"micro_batch_size", 2}}}}));
  const TrainConfig config = load_train_config(config_path);

  const MemoryPlan one = plan_run(config, 1);  // a world of one holds the whole state
  CHECK(one.rank_state_bytes.empty());
  const MemoryPlan three = plan_run(config, 3);
  REQUIRE(three.rank_state_bytes.size() == 3);
  size_t sum = 0, largest = 0;
  for (size_t bytes : three.rank_state_bytes) {
    CHECK(bytes > 0);
    sum += bytes;
    largest = std::max(largest, bytes);
  }
  // Whole matrices are split, never copied: the ranks' parts add up to the unsharded state.
  CHECK(sum == one.optimizer_state_bytes);
  CHECK(three.unsharded_optimizer_state_bytes == one.optimizer_state_bytes);
  CHECK(three.optimizer_state_bytes == largest);
  CHECK(three.rank_state_bytes[size_t(three.largest_state_rank)] == largest);
  CHECK(largest < one.optimizer_state_bytes);
  CHECK(three.total_bytes() == one.total_bytes() - one.optimizer_state_bytes + largest - one.optimizer_workspace_bytes +
                                   three.optimizer_workspace_bytes);

  // Replicated state: every rank holds it all, whatever the world size.
  TrainConfig replicated = config;
  replicated.optimizer.shard_states = false;
  const MemoryPlan three_replicated = plan_run(replicated, 3);
  CHECK(three_replicated.rank_state_bytes.empty());
  CHECK(three_replicated.optimizer_state_bytes == one.optimizer_state_bytes);

  CommandResult r = run_gum_train("plan " + config_path + " --world-size 3");
  INFO(r.output);
  REQUIRE(r.exit_code == 0);
  CHECK(r.output.find("3 rank(s)") != std::string::npos);
  CHECK(r.output.find("optimizer.shard_states: optimizer state per rank: rank 0 ") != std::string::npos);
  CHECK(r.output.find("holds the most (unsharded ") != std::string::npos);
  CHECK(run_gum_train("plan " + config_path + " --world-size 4").exit_code == 2);  // 6 rows do not split in 4
  CHECK(run_gum_train("plan " + config_path + " --world-size -1").exit_code == 2);
}
