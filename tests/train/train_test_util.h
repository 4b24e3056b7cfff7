#pragma once
// Helpers for the trainer tests: a micro corpus and tokenizer prepared once (under a file lock,
// since CTest runs test cases as parallel processes), micro-model configs, and running the
// gum_train executable as a subprocess.
#include <sys/types.h>

#include <functional>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "common/run_command.h"

namespace gum_test {

// The gum_train executable of this build (fails the test when it is missing).
std::string gum_train_binary();

// Runs gum_train with `arguments` (already shell-quoted where needed).
CommandResult run_gum_train(const std::string& arguments, const std::string& environment = "");

// Starts gum_train with `arguments` in the background, stdout and stderr to `log_path`; returns its pid.
pid_t start_gum_train(const std::string& arguments, const std::string& log_path);
// Whether a process started by start_gum_train has exited (it is then reaped).
bool process_finished(pid_t pid);
// SIGKILLs and reaps the process: the signal that ended it, 0 when it had already exited.
int kill_and_reap(pid_t pid);

// A folder under the build tree for one test, emptied.
std::string fresh_test_dir(const std::string& name);

// Runs `make` once for ROOT across the test processes (CTest runs test cases as parallel
// processes): the first takes a lock on ROOT/.lock and makes it, the others wait and find it
// done. `make` throws std::exception to fail.
void make_once(const std::string& root, const std::function<void()>& make);

// The shared micro corpus, tokenizer and shards (made on first use). Returns the shard folder.
std::string prepared_micro_data();

// Writes `documents` JSONL documents of English-like sentences from a 32-word vocabulary
// (deterministic for a seed; about 30 tokens each with the micro tokenizer).
void write_micro_corpus(const std::string& path, int documents, uint32_t seed);

// A micro-model config (about 30k parameters, seq_len 16, batch 4, 20 steps, cpu, checkpoint
// every 10 steps, metrics every step) using the shared data, with run_dir = `run_dir`;
// `patch` is merged over it (JSON merge patch).
nlohmann::json micro_config(const std::string& run_dir, const nlohmann::json& patch = nlohmann::json::object());

// Writes `config` to DIR/config.json and returns the path.
std::string write_config(const std::string& dir, const nlohmann::json& config);

std::string read_file(const std::string& path);

// The lines of RUN_DIR/metrics.jsonl that hold `key` ("loss": training steps, "val_loss": evaluations).
std::vector<nlohmann::json> metrics_lines(const std::string& run_dir, const std::string& key);

// Compares two safetensors files with the same tensors: each F32 tensor's relative Frobenius
// distance ||got - expected|| / ||expected|| must be at most `tolerance`; other dtypes (flags,
// counters, sampler positions) must be byte-equal. Returns the largest F32 distance seen.
double check_tensors_close(const std::string& got_path, const std::string& expected_path, double tolerance);

}  // namespace gum_test
