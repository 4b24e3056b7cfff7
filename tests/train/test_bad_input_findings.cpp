// The findings of a new user's bad-input trial (issue 14), each fed to the gum_train executable:
// the exit code (2 usage or config error, 1 runtime failure) and what the message must name.
#include <signal.h>

#include <catch2/catch.hpp>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <regex>
#include <thread>

#include "gum/core/error.h"
#include "gum/data/prepare.h"
#include "gum/data/shard.h"
#include "gum/data/tokenizer.h"
#include "gum/io/checkpoint.h"
#include "gum/io/safetensors.h"
#include "train_test_util.h"

namespace fs = std::filesystem;
using namespace gum_test;
using Catch::Matchers::Contains;

namespace {

// Rewrites STEP_DIR/MANIFEST for the files as they are now: a forged checkpoint that verifies,
// so that what is checked is its content, not its checksum.
void rewrite_manifest(const std::string& step_dir) {
  std::ofstream out(step_dir + "/MANIFEST");
  out << "# gum_train checkpoint manifest v1: crc32 bytes file\n";
  for (const char* file : {"model.safetensors", "optimizer.safetensors", "trainer.json"}) {
    uint64_t bytes = 0;
    const uint32_t crc = gum::file_crc32(step_dir + "/" + file, &bytes);
    char hex[16];
    std::snprintf(hex, sizeof(hex), "%08x", crc);
    out << hex << " " << bytes << " " << file << "\n";
  }
}

// A micro run of 10 steps with a checkpoint at step 10 (made once per test process).
std::string trained_step_dir(const std::string& dir) {
  const std::string config = write_config(dir, micro_config(dir + "/run", {{"training", {{"max_steps", 10}}}}));
  CommandResult r = run_gum_train(config + " --resume never");
  INFO(r.output);
  REQUIRE(r.exit_code == 0);
  return dir + "/run/checkpoints/" + gum::checkpoint_folder_name(10);
}

void check_fails(const CommandResult& r, int exit_code, const std::string& message) {
  INFO(r.output);
  CHECK(r.exit_code == exit_code);
  CHECK_THAT(r.output, Contains(message));
}

}  // namespace

TEST_CASE("a second trainer on a run folder is refused naming the holder's pid, and a killed holder blocks nothing") {
  prepared_micro_data();
  const std::string dir = fresh_test_dir("findings_lock");
  const std::string run_dir = dir + "/run";
  const std::string long_run = write_config(
      dir + "/long",
      micro_config(run_dir, {{"training", {{"max_steps", 1000000}}}, {"checkpoint", {{"every_steps", 0}}}}));
  // `CMD &` in sh forks and execs CMD: $! is the trainer's own pid.
  CommandResult started =
      run_command(gum_train_binary() + " " + long_run + " --resume never > " + dir + "/long.log 2>&1 & echo $!");
  const std::string pid = started.output.substr(0, started.output.find('\n'));
  REQUIRE(!pid.empty());
  struct KillOnExit {
    int pid;
    ~KillOnExit() { ::kill(pid, SIGKILL); }
  } holder{std::stoi(pid)};
  // The holder writes its pid into the lock file once it holds the lock.
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
  while (read_file(run_dir + "/.lock") != pid + "\n" && std::chrono::steady_clock::now() < deadline)
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  REQUIRE(read_file(run_dir + "/.lock") == pid + "\n");

  const std::string short_run = write_config(dir + "/short", micro_config(run_dir, {{"training", {{"max_steps", 2}}}}));
  check_fails(run_gum_train(short_run), 1, "another gum_train (pid " + pid + ") is training in this run folder");

  ::kill(holder.pid, SIGKILL);
  // Gone, or a zombie (nobody may reap it): either way its files, and so its lock, are closed.
  run_command("for i in $(seq 400); do s=$(awk '/^State/{print $2}' /proc/" + pid +
              "/status 2>/dev/null); if [ -z \"$s\" ] || [ \"$s\" = Z ]; then break; fi; sleep 0.05; done");
  // The kernel dropped the dead holder's lock: the next run starts (its lock file still names the dead pid).
  CommandResult after = run_gum_train(short_run + " --resume never");
  INFO(after.output);
  CHECK(after.exit_code == 0);
}

TEST_CASE("a failed checkpoint save removes its partial folder, and a start removes one left by a crash") {
  prepared_micro_data();
  const std::string dir = fresh_test_dir("findings_partial_save");
  const std::string checkpoints = dir + "/run/checkpoints";
  const std::string config = write_config(dir, micro_config(dir + "/run", {{"training", {{"max_steps", 10}}}}));
  // Files of at most 64 KiB (ulimit -f counts KiB): model.safetensors (about 120 KB) fails to
  // write as on a full disk; SIGXFSZ ignored turns the signal into the write's EFBIG.
  check_fails(run_command("trap '' XFSZ; ulimit -f 64; " + gum_train_binary() + " " + config + " --resume never"), 1,
              "write failed");
  REQUIRE(fs::is_directory(checkpoints));
  for (const auto& entry : fs::directory_iterator(checkpoints)) FAIL("left behind: " << entry.path());

  // What a kill -9 mid-save leaves: a temporary folder, a half-written `latest`.
  fs::create_directories(checkpoints + "/.tmp_step_000010");
  std::ofstream(checkpoints + "/.tmp_step_000010/model.safetensors") << std::string(1000, 'x');
  std::ofstream(checkpoints + "/.latest.tmp") << "step_0";
  CommandResult r = run_gum_train(config);
  INFO(r.output);
  CHECK(r.exit_code == 0);
  CHECK_THAT(r.output, Contains("left by an interrupted checkpoint save"));
  CHECK_FALSE(fs::exists(checkpoints + "/.tmp_step_000010"));
  CHECK_FALSE(fs::exists(checkpoints + "/.latest.tmp"));
  CHECK(fs::exists(checkpoints + "/step_000010/MANIFEST"));

  // A save that replaces a step moves the old folder aside first; killed before the new one took
  // the name, the moved folder is that step's only copy: the next start puts it back.
  fs::rename(checkpoints + "/step_000010", checkpoints + "/.old_step_000010");
  CommandResult resumed = run_gum_train(config);
  INFO(resumed.output);
  CHECK(resumed.exit_code == 0);
  CHECK_THAT(resumed.output, Contains("resumed from " + checkpoints + "/step_000010 at step 10"));
  CHECK_FALSE(fs::exists(checkpoints + "/.old_step_000010"));
}

TEST_CASE("weights made non-finite by the last update are not checkpointed") {
  prepared_micro_data();
  const std::string dir = fresh_test_dir("findings_inf_update");
  // Muon steps by lr x its shape scale (above 1 for the [64, 32] MLP matrices): at lr 3e38, a
  // finite float, that product is Inf, so the first update makes those weights Inf after the
  // step's finite loss.
  const std::string config =
      write_config(dir, micro_config(dir + "/run", {{"optimizer", {{"name", "muon"}, {"lr", 3e38}}},
                                                    {"schedule", {{"warmup_steps", 0}, {"type", "constant"}}},
                                                    {"training", {{"max_steps", 1}, {"grad_clip", 0}}}}));
  CommandResult r = run_gum_train(config + " --resume never");
  check_fails(r, 1, "step 1: after the update, weight '");
  CHECK_THAT(r.output, Contains("(not saved); stopping. No checkpoint was written yet."));
  CHECK(gum::list_checkpoints(dir + "/run/checkpoints").empty());
}

TEST_CASE("a checkpoint with NaN weights or a forged step is refused by eval and resume, and sample needs a prompt") {
  prepared_micro_data();
  const std::string dir = fresh_test_dir("findings_checkpoint");
  const std::string step_dir = trained_step_dir(dir);
  const std::string config = dir + "/config.json";

  SECTION("sample: --prompt is required, and a prompt longer than the cache is said to be cut") {
    check_fails(run_gum_train("sample --checkpoint " + step_dir), 2, "sample needs --prompt TEXT");
    std::string prompt;
    for (int i = 0; i < 100; ++i) prompt += "the cat sat ";
    CommandResult r =
        run_gum_train("sample --checkpoint " + step_dir + " --max-new-tokens 2 --prompt '" + prompt + "'");
    INFO(r.output);
    CHECK(r.exit_code == 0);
    CHECK(std::regex_search(r.output, std::regex("the prompt is [0-9]+ tokens \\(with BOS\\), more than the KV cache "
                                                 "holds \\(max_position_embeddings 64\\): only its last 64")));
  }
  SECTION("NaN weights") {
    gum::TensorMap weights = gum::read_safetensors(step_dir + "/model.safetensors");
    gum::HostTensor& norm = weights.at("model.norm.weight");
    reinterpret_cast<float*>(norm.bytes.data())[3] = std::nanf("");
    gum::write_safetensors(step_dir + "/model.safetensors", weights, {{"step", "10"}});
    rewrite_manifest(step_dir);
    check_fails(run_gum_train("eval " + config + " --checkpoint " + step_dir), 1,
                "tensor 'model.norm.weight' holds NaN at element 3");
    check_fails(run_gum_train(config + " --set training.max_steps=20 --resume " + step_dir), 1,
                "tensor 'model.norm.weight' holds NaN at element 3");
  }
  SECTION("a step beyond the run's end") {
    nlohmann::json state = nlohmann::json::parse(read_file(step_dir + "/trainer.json"));
    state["step"] = int64_t{1000000000000};
    std::ofstream(step_dir + "/trainer.json") << state.dump(2) << "\n";
    rewrite_manifest(step_dir);
    check_fails(run_gum_train(config + " --resume " + step_dir), 1,
                "/trainer.json: step 1000000000000 with 640 tokens is not a state of this run (10 steps");
  }
}

TEST_CASE("a config nested 200,000 deep is refused naming the file, not a stack overflow") {
  const std::string dir = fresh_test_dir("findings_deep_json");
  const std::string path = dir + "/deep.json";
  std::ofstream(path) << "{\"model\": " << std::string(200000, '[') << std::string(200000, ']') << "}\n";
  // The 100th '[' (byte 109, after `{"model": `) is the 101st level.
  check_fails(run_gum_train("plan " + path), 2, path + ":1:109: JSON nested deeper than 100 levels");
}

TEST_CASE("a number out of range in a config file is a config error naming the key") {
  const std::string dir = fresh_test_dir("findings_number_range");
  const std::string path = dir + "/config.json";
  std::ofstream(path) << R"({"optimizer": {"name": "adamw", "lr": 1e999}})";
  check_fails(run_gum_train("plan " + path), 2, "key 'optimizer.lr': [json.exception.out_of_range.406]");
  const std::string valid = dir + "/valid.json";
  std::ofstream(valid) << R"({"model": {"preset": "llama_tiny"}, "training": {"max_steps": 10}})";
  check_fails(run_gum_train("plan " + valid + " --set optimizer.lr=1e999"), 2,
              "--set optimizer.lr=1e999: key 'optimizer.lr': the number is out of range");
}

TEST_CASE("a safetensors header naming a tensor twice is refused naming it") {
  const std::string dir = fresh_test_dir("findings_safetensors_duplicate");
  const std::string header =
      R"({"w":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"w":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}})";
  std::string file(8, '\0');
  for (int i = 0; i < 8; ++i) file[i] = static_cast<char>((header.size() >> (8 * i)) & 0xff);
  file += header + std::string(4, '\0');
  std::ofstream(dir + "/twice.safetensors", std::ios::binary) << file;
  try {
    gum::read_safetensors(dir + "/twice.safetensors");
    FAIL("a duplicate tensor name was accepted");
  } catch (const gum::Error& e) {
    CHECK(e.exit_code() == 1);
    CHECK_THAT(e.what(), Contains("header names 'w' twice"));
  }
}

TEST_CASE("prepare: an empty corpus is an error, an empty validation file a warning naming it") {
  const std::string shards = prepared_micro_data();
  const std::string dir = fresh_test_dir("findings_empty_corpus");
  std::ofstream(dir + "/empty.jsonl").flush();
  write_micro_corpus(dir + "/train.jsonl", 20, 5);
  auto config_for = [&](const std::string& train, const std::string& valid) {
    return write_config(dir, micro_config(dir + "/run", {{"data",
                                                          {{"train_files", train},
                                                           {"valid_files", valid},
                                                           {"tokenizer", shards + "/tokenizer.model"},
                                                           {"shard_dir", dir + "/shards"}}}}));
  };
  check_fails(run_gum_train("prepare " + config_for(dir + "/empty.jsonl", dir + "/empty.jsonl")), 1,
              "data.train_files: the 1 file(s) hold no documents: nothing to train on");
  CommandResult r = run_gum_train("prepare " + config_for(dir + "/train.jsonl", dir + "/empty.jsonl"));
  INFO(r.output);
  CHECK(r.exit_code == 0);
  CHECK_THAT(r.output, Contains("prepare: " + dir + "/empty.jsonl holds no documents: its shard"));
}

TEST_CASE("prepare: a tokenizer trained on one line says how little the text supports") {
  const std::string dir = fresh_test_dir("findings_tokenizer_text");
  std::ofstream(dir + "/one.jsonl") << R"({"text": "hi there"})"
                                    << "\n";
  const std::string config = write_config(
      dir,
      micro_config(
          dir + "/run",
          {{"data", {{"train_files", dir + "/one.jsonl"}, {"valid_files", nullptr}, {"shard_dir", dir + "/shards"}}}}));
  CommandResult r = run_gum_train("prepare " + config);
  INFO(r.output);
  // SentencePiece used to stop at an internal check (more than 100 sentences); now it trains the
  // few pieces the text holds, and the warning says why there are so few.
  CHECK(r.exit_code == 0);
  CHECK(std::regex_search(r.output, std::regex("the training text \\(1 lines\\) supports only [0-9]+ pieces of the 128 "
                                               "requested: a vocabulary of 128 pieces needs text in which")));
}

TEST_CASE("prepare: a long document is tokenized in pieces with the whole document's tokens and bounded memory") {
  const std::string shards = prepared_micro_data();
  const std::string tokenizer_file = shards + "/tokenizer.model";
  const std::string dir = fresh_test_dir("findings_long_document");
  // One document of `bytes` bytes of the micro corpus's words on one line.
  auto prepare_one_line = [&](const std::string& name, size_t bytes) {
    write_micro_corpus(dir + "/" + name + "_docs.jsonl", 1, 1);
    std::string sentence = nlohmann::json::parse(read_file(dir + "/" + name + "_docs.jsonl"))["text"];
    std::string text;
    while (text.size() < bytes) text += sentence;
    std::ofstream(dir + "/" + name + ".jsonl") << nlohmann::json({{"text", text}}).dump() << "\n";
    const std::string config =
        write_config(dir + "/" + name, micro_config(dir + "/run", {{"data",
                                                                    {{"train_files", dir + "/" + name + ".jsonl"},
                                                                     {"valid_files", nullptr},
                                                                     {"tokenizer", tokenizer_file},
                                                                     {"shard_dir", dir + "/" + name + "_shards"}}}}));
    CommandResult r = run_gum_train("prepare " + config);
    INFO(r.output);
    REQUIRE(r.exit_code == 0);
    std::smatch m;
    REQUIRE(std::regex_search(r.output, m, std::regex("peak memory [^(]*\\(([0-9]+) bytes\\)")));
    return std::make_pair(text, std::stod(m[1]));
  };

  const auto [text, small_peak] = prepare_one_line("small", 1 << 20);
  gum::Tokenizer tokenizer(tokenizer_file);
  const std::vector<std::string_view> pieces = gum::split_document(text, gum::kMaxPieceBytes);
  REQUIRE(pieces.size() >= 16);
  std::vector<int32_t> expected;
  for (const auto piece : pieces) {
    CHECK(piece.size() <= gum::kMaxPieceBytes);
    const std::vector<int32_t> ids = tokenizer.encode(piece);
    expected.insert(expected.end(), ids.begin(), ids.end());
  }
  // With the tokenizers prepare trains (whitespace split and normalised), the cuts change nothing.
  CHECK(expected == tokenizer.encode(text));
  expected.push_back(tokenizer.eos_id());
  gum::TokenShard shard(dir + "/small_shards/train_00000.bin", tokenizer.fingerprint());
  std::vector<int32_t> got(shard.token_count());
  shard.copy_tokens(0, got.size(), got.data());
  CHECK(got == expected);

  // The tokenizer needed about 137 bytes per byte of a whole line and holding the line about 5;
  // now prepare holds pieces: up to 8 MiB of them per parallel batch, with their tokens. Its
  // peak settles after two batches (the allocator's reuse of freed batches) and then no longer
  // grows with the line: from 17 to 25 MiB it grew by 0.0005 bytes per added byte; 0.25 leaves
  // room for noise, not for a reader holding the line.
  const size_t mid_bytes = 17 << 20, large_bytes = 25 << 20;
  const double mid_peak = prepare_one_line("mid", mid_bytes).second;
  const double large_peak = prepare_one_line("large", large_bytes).second;
  const double growth_per_byte = (large_peak - mid_peak) / double(large_bytes - mid_bytes);
  INFO("peak RSS " << small_peak << " (1 MiB), " << mid_peak << " (17 MiB) -> " << large_peak
                   << " bytes (25 MiB): " << growth_per_byte << " per added byte");
  CHECK(growth_per_byte < 0.25);
}

TEST_CASE("misleading messages: each names what is wrong") {
  const std::string shards = prepared_micro_data();
  const std::string dir = fresh_test_dir("findings_messages");
  const std::string config = write_config(dir, micro_config(dir + "/run"));

  check_fails(run_gum_train("trian " + config), 2,
              "'trian' is neither a verb nor a config file (did you mean 'train'?); "
              "verbs: train, eval, prepare, export, plan, sample");
  check_fails(run_gum_train(config + " --resume sometimes"), 2,
              "--resume sometimes: expected auto, never or a checkpoint folder");
  check_fails(run_gum_train("eval " + config + " --data '" + dir + "/nowhere/*.bin'"), 2,
              "--data: '" + dir + "/nowhere/*.bin' matches no file");
  check_fails(run_gum_train("plan " + config + " --world-size 0"), 2, "--world-size must be at least 1, got 0");
  // 4 bytes x 1e9 x 1e9 per matrix, 14 of them: past 2^63 bytes. (Heads of dimension 2 keep the
  // RoPE table small: with the preset's 4 heads its limit would refuse the head dimension first.)
  check_fails(run_gum_train("plan " + config +
                            " --set model.hidden_size=1000000000 --set model.num_attention_heads=500000000"
                            " --set model.head_dim=2"),
              2, "model: the parameters' byte count overflows 64 bits (model.hidden_size 1000000000");

  // A run folder that cannot be created: the reason is part of the message. (Root writes into
  // read-only folders, so the folder's parent is a regular file instead.)
  std::ofstream(dir + "/a_file") << "x";
  const std::string blocked = write_config(dir + "/blocked", micro_config(dir + "/a_file/run"));
  check_fails(run_gum_train(blocked), 1, "cannot create the run folder (Not a directory)");
}
