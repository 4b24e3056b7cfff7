#include "train_test_util.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/file.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <catch2/catch.hpp>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "gum/io/safetensors.h"

namespace fs = std::filesystem;

namespace gum_test {

std::string gum_train_binary() {
  const std::string path = std::string(GUM_BINARY_DIR) + "/bin/gum_train";
  if (!fs::exists(path)) FAIL("gum_train executable not built: " << path);
  return path;
}

CommandResult run_gum_train(const std::string& arguments, const std::string& environment) {
  return run_command(environment + (environment.empty() ? "" : " ") + gum_train_binary() + " " + arguments);
}

pid_t start_gum_train(const std::string& arguments, const std::string& log_path) {
  const std::string command = "exec " + gum_train_binary() + " " + arguments + " > '" + log_path + "' 2>&1";
  const pid_t pid = fork();
  REQUIRE(pid >= 0);
  if (pid == 0) {
    execl("/bin/sh", "sh", "-c", command.c_str(), static_cast<char*>(nullptr));
    _exit(127);
  }
  return pid;
}

bool process_finished(pid_t pid) {
  int status = 0;
  return waitpid(pid, &status, WNOHANG) == pid;
}

int kill_and_reap(pid_t pid) {
  ::kill(pid, SIGKILL);
  int status = 0;
  if (waitpid(pid, &status, 0) != pid) return 0;  // reaped by process_finished: it had exited
  return WIFSIGNALED(status) ? WTERMSIG(status) : 0;
}

std::string fresh_test_dir(const std::string& name) {
  const std::string dir = std::string(GUM_BINARY_DIR) + "/test_tmp/train_" + name;
  fs::remove_all(dir);
  fs::create_directories(dir);
  return dir;
}

std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream buffer;
  buffer << in.rdbuf();
  return buffer.str();
}

std::vector<nlohmann::json> metrics_lines(const std::string& run_dir, const std::string& key) {
  std::vector<nlohmann::json> lines;
  std::istringstream in(read_file(run_dir + "/metrics.jsonl"));
  std::string line;
  while (std::getline(in, line)) {
    if (line.empty()) continue;
    nlohmann::json j = nlohmann::json::parse(line);
    if (j.contains(key)) lines.push_back(std::move(j));
  }
  return lines;
}

double check_tensors_close(const std::string& got_path, const std::string& expected_path, double tolerance) {
  const gum::TensorMap got = gum::read_safetensors(got_path);
  const gum::TensorMap expected = gum::read_safetensors(expected_path);
  REQUIRE(got.size() == expected.size());
  double largest = 0;
  for (const auto& [name, e] : expected) {
    INFO(got_path << ": " << name);
    REQUIRE(got.count(name) == 1);
    const gum::HostTensor& g = got.at(name);
    REQUIRE(g.dtype == e.dtype);
    REQUIRE(g.shape == e.shape);
    if (e.dtype != gum::DType::F32) {
      CHECK(g.bytes == e.bytes);
      continue;
    }
    const std::vector<float> a = g.to_f32(), b = e.to_f32();
    double diff = 0, base = 0;
    for (size_t i = 0; i < a.size(); ++i) {
      diff += (double(a[i]) - b[i]) * (double(a[i]) - b[i]);
      base += double(b[i]) * b[i];
    }
    const double relative = base > 0 ? std::sqrt(diff / base) : std::sqrt(diff);
    INFO("relative distance " << relative);
    CHECK(relative <= tolerance);
    largest = std::max(largest, relative);
  }
  return largest;
}

namespace {

std::string data_root() { return std::string(GUM_BINARY_DIR) + "/test_tmp/train_micro_data"; }

nlohmann::json base_data_section() {
  return {{"train_files", data_root() + "/corpus/train.jsonl"},
          {"valid_files", data_root() + "/corpus/valid.jsonl"},
          {"tokenizer_vocab_size", 128},
          {"tokenizer_model_type", "bpe"},
          {"shard_dir", data_root() + "/shards"}};
}

}  // namespace

// A linear congruential generator picks the words; 600 documents train the 128-piece
// tokenizer and give about 1100 windows of 16 tokens.
void write_micro_corpus(const std::string& path, int documents, uint32_t seed) {
  static const char* words[] = {"the",  "cat",    "sat",   "on",    "a",     "mat",   "and",   "dog",
                                "ran",  "to",     "house", "with",  "red",   "door",  "while", "birds",
                                "sang", "in",     "green", "trees", "under", "blue",  "sky",   "every",
                                "day",  "people", "walk",  "along", "river", "quiet", "town",  "morning"};
  std::ofstream out(path);
  uint32_t state = seed;
  auto next = [&] {
    state = state * 1664525u + 1013904223u;
    return state >> 8;
  };
  for (int d = 0; d < documents; ++d) {
    std::string text;
    int sentences = 2 + next() % 4;
    for (int s = 0; s < sentences; ++s) {
      int length = 4 + next() % 8;
      for (int w = 0; w < length; ++w) {
        text += words[next() % (sizeof(words) / sizeof(words[0]))];
        text += w + 1 < length ? " " : ". ";
      }
    }
    out << nlohmann::json({{"text", text}}).dump() << "\n";
  }
}

void make_once(const std::string& root, const std::function<void()>& make) {
  fs::create_directories(root);
  // One process makes it; the others wait on the lock and then find it done.
  int lock = ::open((root + "/.lock").c_str(), O_CREAT | O_RDWR, 0644);
  REQUIRE(lock >= 0);
  ::flock(lock, LOCK_EX);
  const std::string done = root + "/.done";
  std::string failure;
  if (!fs::exists(done)) {
    try {
      make();
      std::ofstream(done) << "ok\n";
    } catch (const std::exception& e) {
      failure = e.what();
    }
  }
  ::flock(lock, LOCK_UN);
  ::close(lock);
  if (!failure.empty()) FAIL("making " << root << " failed: " << failure);
}

std::string prepared_micro_data() {
  const std::string root = data_root();
  make_once(root, [&] {
    fs::create_directories(root + "/corpus");
    write_micro_corpus(root + "/corpus/train.jsonl", 600, 12345);
    write_micro_corpus(root + "/corpus/valid.jsonl", 40, 777);
    nlohmann::json config = micro_config(root + "/prepare_run");
    const std::string path = write_config(root, config);
    CommandResult r = run_gum_train("prepare " + path);
    if (r.exit_code != 0) throw std::runtime_error("gum_train prepare failed:\n" + r.output);
  });
  return root + "/shards";
}

nlohmann::json micro_config(const std::string& run_dir, const nlohmann::json& patch) {
  nlohmann::json config = {{"model",
                            {{"hidden_size", 32},
                             {"intermediate_size", 64},
                             {"num_hidden_layers", 2},
                             {"num_attention_heads", 4},
                             {"num_key_value_heads", 2},
                             {"vocab_size", 128},
                             {"max_position_embeddings", 64}}},
                           {"data", base_data_section()},
                           {"optimizer", {{"name", "adamw"}, {"lr", 0.01}, {"beta2", 0.95}}},
                           {"schedule", {{"type", "cosine"}, {"warmup_steps", 3}, {"min_lr_ratio", 0.1}}},
                           {"training",
                            {{"backend", "cpu"},
                             {"seed", 7},
                             {"seq_len", 16},
                             {"batch_size", 4},
                             {"max_steps", 20},
                             {"grad_clip", 1.0},
                             {"threads", 1}}},
                           {"eval", {{"every_steps", 0}, {"at_end", false}, {"max_tokens", 0}}},
                           {"checkpoint", {{"every_steps", 10}, {"keep_last", 0}}},
                           {"logging", {{"every_steps", 1}, {"run_dir", run_dir}}}};
  if (patch.is_object()) config.merge_patch(patch);
  return config;
}

std::string write_config(const std::string& dir, const nlohmann::json& config) {
  fs::create_directories(dir);
  const std::string path = dir + "/config.json";
  std::ofstream(path) << config.dump(2) << "\n";
  return path;
}

}  // namespace gum_test
