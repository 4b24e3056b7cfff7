// Config parsing: sections, defaults, --set overrides with type checks, errors with the key
// path, the closest valid key and exit code 2.
#include <catch2/catch.hpp>

#include "gum/core/error.h"
#include "gum/optim/optimizer_config_json.h"
#include "gum/train/config.h"
#include "gum/train/runtime.h"
#include "train_test_util.h"

using namespace gum;
using namespace gum_test;

namespace {
std::string config_with(const std::string& name, const nlohmann::json& patch) {
  const std::string dir = fresh_test_dir(name);
  return write_config(dir, micro_config(dir + "/run", patch));
}
}  // namespace

TEST_CASE("config reads every section and the resolved form reads back identically") {
  const std::string dir = fresh_test_dir("config_roundtrip");
  TrainConfig c = load_train_config(write_config(dir, micro_config(dir + "/run")));
  CHECK(c.model.hidden_size == 32);
  CHECK(c.model.kv_heads() == 2);
  CHECK(c.training.seq_len == 16);
  CHECK(c.training.batch_size == 4);
  CHECK(c.optimizer.name == "adamw");
  CHECK(c.optimizer.lr == Approx(0.01));
  CHECK(c.schedule.warmup_steps == 3);
  CHECK(c.checkpoint.every_steps == 10);
  CHECK(c.total_steps() == 20);
  CHECK(c.checkpoint_dir() == dir + "/run/checkpoints");

  nlohmann::json resolved = train_config_to_json(c);
  TrainConfig again = train_config_from_json(resolved, "resolved");
  CHECK(train_config_to_json(again) == resolved);
}

TEST_CASE("model.rope_scaling and data.sft read their older spellings and round-trip through the resolved form") {
  const std::string dir = fresh_test_dir("config_tables");
  // "type" (older Hugging Face configs) for rope_type; data.sft with a single glob string.
  TrainConfig c = load_train_config(write_config(
      dir, micro_config(dir + "/run", {{"model", {{"rope_scaling", {{"type", "linear"}, {"factor", 2.5}}}}},
                                       {"data", {{"sft", {{"files", "a.jsonl"}, {"layout", "pad"}, {"seed", 7}}}}}})));
  CHECK(c.model.rope_scaling.type == "linear");
  CHECK(c.model.rope_scaling.factor == 2.5);
  REQUIRE(c.sft);
  CHECK(c.sft->files == std::vector<std::string>{"a.jsonl"});
  CHECK(c.sft->layout == SftLayout::Pad);
  CHECK(c.sft->seed == 7);
  const nlohmann::json resolved = train_config_to_json(c);
  CHECK(resolved["model"]["rope_scaling"] == nlohmann::json{{"rope_type", "linear"},
                                                            {"factor", 2.5},
                                                            {"low_freq_factor", 1.0},
                                                            {"high_freq_factor", 4.0},
                                                            {"original_max_position_embeddings", 8192}});
  CHECK(resolved["data"]["sft"]["layout"] == "pad");
  CHECK(resolved["data"]["sft"]["seed"] == 7);
  CHECK(train_config_to_json(train_config_from_json(resolved, "resolved")) == resolved);
  // rope_type "default" (transformers' name for none) is no scaling, written back as null.
  TrainConfig plain = load_train_config(
      write_config(dir, micro_config(dir + "/run", {{"model", {{"rope_scaling", {{"rope_type", "default"}}}}}})));
  CHECK(plain.model.rope_scaling.type.empty());
  CHECK(train_config_to_json(plain)["model"]["rope_scaling"].is_null());
}

TEST_CASE("max_tokens sets the number of steps") {
  const std::string dir = fresh_test_dir("config_max_tokens");
  TrainConfig c = load_train_config(
      write_config(dir, micro_config(dir + "/run", {{"training", {{"max_steps", 0}, {"max_tokens", 1000}}}})));
  CHECK(c.tokens_per_step() == 64);
  CHECK(c.total_steps() == 16);  // ceil(1000 / 64)
}

TEST_CASE("overrides from --set are type checked") {
  const std::string path = config_with("config_set", {});
  TrainConfig c = load_train_config(
      path, {"optimizer.lr=3e-3", "training.backend=cpu", "model.num_hidden_layers=3", "schedule.type=\"wsd\""});
  CHECK(c.optimizer.lr == Approx(3e-3));
  CHECK(c.model.num_hidden_layers == 3);
  CHECK(c.schedule.type == "wsd");
  // One override switches the optimizer (adamw here), the next sets a key only the new one reads.
  const TrainConfig gum = load_train_config(path, {"optimizer.name=gum", "optimizer.rank=4"});
  CHECK(gum.optimizer.name == "gum");
  CHECK(to_json(gum.optimizer).at("rank") == 4);
  // An integer where a number is expected is fine; a string is not.
  CHECK(load_train_config(path, {"training.grad_clip=2"}).training.grad_clip == 2.0);
  REQUIRE_THROWS_WITH(load_train_config(path, {"training.seq_len=abc"}),
                      Catch::Contains("training.seq_len") && Catch::Contains("must be an integer"));
  REQUIRE_THROWS_WITH(
      load_train_config(path, {"training.max_stpes=5"}),
      Catch::Contains("unknown key 'training.max_stpes'") && Catch::Contains("did you mean 'training.max_steps'"));
  REQUIRE_THROWS_WITH(load_train_config(path, {"trainig.seed=5"}), Catch::Contains("did you mean 'training'"));
  REQUIRE_THROWS_WITH(load_train_config(path, {"training.seed"}), Catch::Contains("expected KEY=VALUE"));
  try {
    load_train_config(path, {"training.seq_len=abc"});
  } catch (const Error& e) {
    CHECK(e.exit_code() == 2);
  }
}

TEST_CASE("an integer outside its key's type is an error naming the key, not a wrapped value") {
  const std::string path = config_with("config_range", {});
  // 2^32 + 2 narrowed to a 32-bit int would be 2: a batch of 2 the user never asked for.
  REQUIRE_THROWS_WITH(
      load_train_config(path, {"training.batch_size=4294967298"}),
      Catch::Contains("training.batch_size") && Catch::Contains("4294967298") && Catch::Contains("out of range"));
  REQUIRE_THROWS_WITH(load_train_config(path, {"checkpoint.keep_last=-4294967295"}),
                      Catch::Contains("checkpoint.keep_last") && Catch::Contains("out of range"));
  // Inside the type, the key's own rule applies.
  REQUIRE_THROWS_WITH(load_train_config(path, {"training.batch_size=0"}),
                      Catch::Contains("training.batch_size = 0 must be positive"));
  // 64-bit keys take the whole int64 range.
  CHECK(load_train_config(path, {"eval.every_steps=4294967298"}).eval.every_steps == 4294967298LL);
}

TEST_CASE("training.attention is flash_wmma by default and reaches the backend factory's options") {
  CHECK(backend_options(load_train_config(config_with("config_attention_default", {})).training).attention ==
        "flash_wmma");
  const TrainConfig c = load_train_config(config_with("config_attention", {{"training", {{"attention", "flash"}}}}));
  CHECK(backend_options(c.training).attention == "flash");
}

TEST_CASE("config errors name the key and the closest valid key") {
  std::string path = config_with("config_unknown", {{"training", {{"max_stpes", 5}}}});
  REQUIRE_THROWS_WITH(load_train_config(path), Catch::Contains("unknown key 'training.max_stpes'") &&
                                                   Catch::Contains("did you mean 'training.max_steps'"));
  path = config_with("config_unknown_section", {{"optimiser", {{"lr", 1}}}});
  REQUIRE_THROWS_WITH(load_train_config(path), Catch::Contains("'optimiser'") && Catch::Contains("'optimizer'"));
  path = config_with("config_wrong_type", {{"training", {{"seq_len", "long"}}}});
  REQUIRE_THROWS_WITH(load_train_config(path), Catch::Contains("training.seq_len") && Catch::Contains("integer"));
  path = config_with("config_bad_value", {{"training", {{"backend", "tpu"}}}});
  REQUIRE_THROWS_WITH(load_train_config(path), Catch::Contains("training.backend"));
  path = config_with("config_bad_attention", {{"training", {{"attention", "tiled"}}}});
  REQUIRE_THROWS_WITH(load_train_config(path), Catch::Contains("training.attention"));
  path = config_with("config_bad_batch", {{"training", {{"seq_len", 128}}}});
  REQUIRE_THROWS_WITH(load_train_config(path), Catch::Contains("max_position_embeddings"));
}

TEST_CASE("gum_train exits with code 2 and one line for config errors") {
  std::string path = config_with("cli_unknown_key", {{"training", {{"max_stpes", 5}}}});
  CommandResult r = run_gum_train(path);
  CHECK(r.exit_code == 2);
  CHECK(r.output.find("did you mean 'training.max_steps'") != std::string::npos);

  path = config_with("cli_wrong_type", {{"training", {{"batch_size", 2.5}}}});
  r = run_gum_train(path);
  CHECK(r.exit_code == 2);
  CHECK(r.output.find("training.batch_size") != std::string::npos);

  path = config_with("cli_bad_set", {});
  r = run_gum_train(path + " --set training.seq_len=abc");
  CHECK(r.exit_code == 2);
  CHECK(r.output.find("training.seq_len") != std::string::npos);
  r = run_gum_train(path + " --set optimizer.lrr=1");
  CHECK(r.exit_code == 2);
  CHECK(r.output.find("did you mean 'optimizer.lr'") != std::string::npos);

  r = run_gum_train("/nonexistent/config.json");
  CHECK(r.exit_code == 2);
  r = run_gum_train(path + " --no-such-flag");
  CHECK(r.exit_code == 2);
  r = run_gum_train("--help");
  CHECK(r.exit_code == 0);
  CHECK(r.output.find("gum_train CONFIG.json") != std::string::npos);
  r = run_gum_train("--version");
  CHECK(r.exit_code == 0);
}
