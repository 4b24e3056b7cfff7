// Metrics: the JSONL log keeps a consistent trajectory across a resume, the FLOP count follows
// 6N + attention, the peak TFLOPS behind MFU come from the config or the device, and the
// optimizer's and the projector refreshes' time is logged at the steps where it is spent.
#include <catch2/catch.hpp>
#include <fstream>
#include <sstream>

#include "gum/model/config.h"
#include "gum/train/metrics.h"
#include "train_test_util.h"

using namespace gum;
using namespace gum_test;

TEST_CASE("metrics log keeps the lines up to the resumed step and drops a torn last line") {
  const std::string dir = fresh_test_dir("metrics_log");
  const std::string path = dir + "/metrics.jsonl";
  {
    MetricsLog log(path, -1);
    for (int step = 1; step <= 6; ++step) log.append({{"step", step}, {"loss", 1.0 / step}});
  }
  std::ofstream(path, std::ios::app) << "{\"step\": 7, \"lo";  // cut short by a crash
  {
    MetricsLog resumed(path, 4);
    resumed.append({{"step", 5}, {"loss", 0.5}});
  }
  std::istringstream in(read_file(path));
  std::vector<int> steps;
  std::string line;
  while (std::getline(in, line)) steps.push_back(nlohmann::json::parse(line)["step"].get<int>());
  CHECK(steps == std::vector<int>{1, 2, 3, 4, 5});
  // A fresh run starts an empty file.
  { MetricsLog fresh(path, -1); }
  CHECK(read_file(path).empty());
}

TEST_CASE("training FLOPs per token are 6N plus attention") {
  LlamaConfig c = llama_preset("llama_60m");
  const double embedding = double(c.vocab_size) * c.hidden_size;
  const double expected = 6.0 * (double(c.num_parameters()) - embedding) + 12.0 * 8 * 256 * 512;
  CHECK(training_flops_per_token(c, 256) == Approx(expected));
  CHECK(forward_flops_per_token(c, 256) == Approx(expected / 3));
  c.tie_word_embeddings = true;  // the shared table is still the LM head's matmul
  CHECK(training_flops_per_token(c, 256) == Approx(6.0 * double(c.num_parameters()) + 12.0 * 8 * 256 * 512));
}

TEST_CASE("device peak TFLOPS: configured, else the device's") {
  CHECK(device_peak_tflops("cpu", 0) == 0);
  CHECK(device_peak_tflops("cuda", 0) == 989.0);
  CHECK(device_peak_tflops("cpu", 1.5) == 1.5);
}

TEST_CASE("optimizer and refresh time: refresh only at refresh steps, nested in the optimizer's, in the step's") {
  prepared_micro_data();
  const std::string dir = fresh_test_dir("metrics_optimizer_time");
  const std::string run_dir = dir + "/run";
  // Refreshes at steps 1, 5 and 9 of 10; one metrics line per step.
  const std::string config = write_config(
      dir, micro_config(run_dir, {{"training", {{"max_steps", 10}}},
                                  {"optimizer", {{"name", "galore_adamw"}, {"rank", 4}, {"update_proj_gap", 4}}}}));
  const CommandResult run = run_gum_train(config + " --resume never");
  INFO(run.output);
  REQUIRE(run.exit_code == 0);
  const std::vector<nlohmann::json> lines = metrics_lines(run_dir, "loss");
  REQUIRE(lines.size() == 10);
  for (const nlohmann::json& line : lines) {
    INFO(line.dump());
    const int64_t step = line["step"].get<int64_t>();
    const double step_ms = 1e3 * double(line["tokens"].get<int64_t>()) / double(step) / line["tok_per_s"].get<double>();
    if ((step - 1) % 4 == 0) {
      CHECK(line["refresh_ms"].get<double>() > 0);
      CHECK(line["refresh_cpu_ms"].get<double>() > 0);
    } else {  // nothing added to the refresh clock: exactly zero
      CHECK(line["refresh_ms"].get<double>() == 0);
      CHECK(line["refresh_cpu_ms"].get<double>() == 0);
    }
    // Each timed section lies inside the next (refresh in update in step) on monotonic clocks.
    CHECK(line["refresh_ms"].get<double>() <= line["optimizer_ms"].get<double>());
    CHECK(line["optimizer_ms"].get<double>() > 0);
    CHECK(line["optimizer_ms"].get<double>() <= step_ms);
    CHECK(line["refresh_cpu_ms"].get<double>() <= line["optimizer_cpu_ms"].get<double>());
    CHECK(line["optimizer_cpu_ms"].get<double>() <= line["step_cpu_ms"].get<double>());
  }
}
