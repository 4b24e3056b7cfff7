// Evaluation predicts every validation token exactly once, whatever the batch size, and
// `gum_train eval` reports the same count in its JSON line.
#include <catch2/catch.hpp>
#include <sstream>

#include "gum/data/checksum.h"
#include "gum/data/loader.h"
#include "gum/data/prepare.h"
#include "gum/dist/communicator.h"
#include "gum/train/config.h"
#include "gum/train/evaluate.h"
#include "train_test_util.h"

using namespace gum;
using namespace gum_test;

TEST_CASE("evaluation counts every validation token once for any batch size") {
  prepared_micro_data();
  const std::string dir = fresh_test_dir("eval_counts");
  TrainConfig config = load_train_config(write_config(dir, micro_config(dir + "/run")));
  const std::vector<std::string> shards = list_shards(config.data, "valid");
  REQUIRE_FALSE(shards.empty());
  EvalWindows windows(shards, config.training.seq_len, checksum64_file(tokenizer_path(config.data)));
  REQUIRE(windows.count() > 3);

  auto backend = make_backend("cpu");
  auto comm = make_single_communicator(*backend);
  EvalResult reference;
  for (int batch : {1, 3, 8}) {
    LlamaModel model(config.model, *backend, batch, config.training.seq_len);
    model.init_weights(config.training.seed);
    EvalResult r = evaluate(model, windows, *comm, 0);
    CHECK(r.tokens == static_cast<int64_t>(windows.predicted_tokens()));
    if (batch == 1) reference = r;
    CHECK(r.loss() == Approx(reference.loss()).epsilon(1e-6));
    CHECK(r.perplexity() == Approx(std::exp(r.loss())));
  }
  // A token budget takes whole windows from the start, the same for every world size.
  LlamaModel model(config.model, *backend, 4, config.training.seq_len);
  model.init_weights(config.training.seed);
  EvalResult partial = evaluate(model, windows, *comm, 40);
  CHECK(eval_window_count(windows, 40) == 3);  // ceil(40 / 16)
  CHECK(partial.tokens == 48);
}

TEST_CASE("gum_train eval prints a JSON line with tokens, loss and perplexity") {
  prepared_micro_data();
  const std::string dir = fresh_test_dir("eval_cli");
  const std::string config_path = write_config(
      dir, micro_config(dir + "/run", {{"training", {{"max_steps", 4}}}, {"checkpoint", {{"every_steps", 0}}}}));
  REQUIRE(run_gum_train(config_path + " --resume never").exit_code == 0);

  CommandResult r = run_gum_train("eval " + config_path + " --checkpoint " + dir + "/run/checkpoints");
  INFO(r.output);
  REQUIRE(r.exit_code == 0);
  std::string last_line, line;
  std::istringstream in(r.output);
  while (std::getline(in, line))
    if (!line.empty()) last_line = line;
  nlohmann::json result = nlohmann::json::parse(last_line);
  TrainConfig config = load_train_config(config_path);
  EvalWindows windows(list_shards(config.data, "valid"), 16, checksum64_file(tokenizer_path(config.data)));
  CHECK(result["tokens"].get<int64_t>() == static_cast<int64_t>(windows.predicted_tokens()));
  CHECK(result["perplexity"].get<double>() == Approx(std::exp(result["loss"].get<double>())));
  // Trained for 4 steps: better than the uniform guess over 128 pieces.
  CHECK(result["loss"].get<double>() < std::log(128.0));

  // The loss over chunks of 7 token rows (the logits of a whole batch never exist) is the same up
  // to float rounding: a row's logits from a GEMM of another row count may differ by an ulp
  // (measured: 4.3387849042 vs 4.3387849006, 8e-10 relative).
  r = run_gum_train("eval " + config_path + " --checkpoint " + dir +
                    "/run/checkpoints --set training.logits_chunk_rows=7");
  INFO(r.output);
  REQUIRE(r.exit_code == 0);
  const nlohmann::json chunked = nlohmann::json::parse(r.output.substr(r.output.rfind('{')));
  CHECK(chunked["tokens"] == result["tokens"]);
  CHECK(chunked["loss"].get<double>() == Approx(result["loss"].get<double>()).epsilon(1e-6));

  r = run_gum_train("eval " + config_path + " --checkpoint " + dir + "/nowhere");
  CHECK(r.exit_code == 2);
}
