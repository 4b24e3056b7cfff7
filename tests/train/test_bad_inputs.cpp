// The bad-input suite: every row of bad_inputs.h runs the real gum_train executable on one
// malformed input and must end with the row's exit code and message: never a signal (crash),
// never exit 0 where the input is wrong. Rows are grouped by what is malformed, one test case
// per group, so CTest runs the groups in parallel.
#include <catch2/catch.hpp>
#include <filesystem>
#include <fstream>

#include "bad_inputs.h"
#include "gum/data/checksum.h"
#include "gum/io/checkpoint.h"

namespace fs = std::filesystem;
using namespace gum_test;

namespace gum_test {

std::string replace_all(std::string text, const std::string& from, const std::string& to) {
  for (size_t at = 0; (at = text.find(from, at)) != std::string::npos; at += to.size())
    text.replace(at, from.size(), to);
  return text;
}

std::string safetensors_bytes(const std::string& header, size_t data_bytes) {
  std::string out(8, '\0');
  const uint64_t length = header.size();
  for (int i = 0; i < 8; ++i) out[i] = char((length >> (8 * i)) & 0xff);
  return out + header + std::string(data_bytes, '\0');
}

std::string shard_bytes(const ShardFields& f, const std::string& payload) {
  std::string out(64, '\0');
  std::memcpy(out.data(), f.magic, 8);
  const auto put32 = [&](size_t at, uint32_t v) { std::memcpy(out.data() + at, &v, 4); };
  const auto put64 = [&](size_t at, uint64_t v) { std::memcpy(out.data() + at, &v, 8); };
  put32(8, f.version);
  put32(12, f.token_bytes);
  put64(16, f.token_count);
  put64(24, f.vocab_size);
  put64(32, f.fingerprint);
  put64(40, f.checksum_ok ? gum::checksum64(payload.data(), payload.size()) : 12345);
  put64(48, f.document_count);
  return out + payload;
}

}  // namespace gum_test

namespace {

// The inputs every group starts from: the micro data, a 2-step checkpoint and its HF export.
struct Base {
  std::string shards, tokenizer, checkpoint, hf;
  uint64_t fingerprint = 0;
};

const Base& base() {
  static const Base b = [] {
    Base b;
    b.shards = prepared_micro_data();
    b.tokenizer = b.shards + "/tokenizer.model";
    b.fingerprint = gum::checksum64_file(b.tokenizer);
    const std::string root = std::string(GUM_BINARY_DIR) + "/test_tmp/train_bad_inputs_base";
    b.checkpoint = root + "/run/checkpoints/" + gum::checkpoint_folder_name(2);
    b.hf = root + "/hf";
    make_once(root, [&] {
      fs::remove_all(root + "/run");
      fs::remove_all(b.hf);
      const std::string config = write_config(
          root, micro_config(root + "/run", {{"training", {{"max_steps", 2}}}, {"checkpoint", {{"every_steps", 2}}}}));
      for (const std::string& arguments :
           {config + " --resume never", "export --checkpoint " + b.checkpoint + " --out " + b.hf}) {
        const CommandResult r = run_gum_train(arguments);
        if (r.exit_code != 0) throw std::runtime_error("gum_train " + arguments + ":\n" + r.output);
      }
    });
    return b;
  }();
  return b;
}

std::string expand(const std::string& text, const std::string& dir) {
  const Base& b = base();
  std::string out = replace_all(text, "{dir}", dir);
  out = replace_all(out, "{config}", dir + "/config.json");
  out = replace_all(out, "{shards}", b.shards);
  out = replace_all(out, "{tokenizer}", b.tokenizer);
  out = replace_all(out, "{ckpt}", dir + "/ckpt");
  out = replace_all(out, "{hf}", dir + "/hf");
  return out;
}

// Rewrites MANIFEST for the files as they are now (a forged but consistent checkpoint).
void reseal(const std::string& step_dir) {
  const std::string original = read_file(base().checkpoint + "/MANIFEST");
  std::ofstream manifest(step_dir + "/MANIFEST");
  manifest << original.substr(0, original.find('\n') + 1);  // the format line
  for (const char* file : {"model.safetensors", "optimizer.safetensors", "trainer.json"}) {
    uint64_t bytes = 0;
    const uint32_t crc = gum::file_crc32(step_dir + "/" + file, &bytes);
    char hex[16];
    std::snprintf(hex, sizeof(hex), "%08x", crc);
    manifest << hex << " " << bytes << " " << file << "\n";
  }
}

void run_row(const BadInput& row) {
  const Base& b = base();
  const std::string dir = fresh_test_dir("bad_input_" + row.group);  // groups run in parallel
  if (row.setup == Setup::Checkpoint || row.setup == Setup::ResealedCheckpoint)
    fs::copy(b.checkpoint, dir + "/ckpt", fs::copy_options::recursive);
  if (row.setup == Setup::Hf) fs::copy(b.hf, dir + "/hf", fs::copy_options::recursive);
  const nlohmann::json patch = nlohmann::json::parse(expand(row.config_patch, dir));
  write_config(dir, micro_config(dir + "/run", patch));
  for (const BadFile& file : row.files) {
    const std::string path = dir + "/" + file.path;
    if (!file.content) {
      REQUIRE(fs::remove(path));
      continue;
    }
    fs::create_directories(fs::path(path).parent_path());
    const std::string content = expand(file.content({b.fingerprint}, fs::exists(path) ? read_file(path) : ""), dir);
    std::ofstream(path, std::ios::binary | std::ios::trunc) << content;
  }
  if (row.setup == Setup::ResealedCheckpoint) reseal(dir + "/ckpt");

  const CommandResult r = run_gum_train(expand(row.arguments, dir));
  INFO("row: " << row.name << "\ngum_train " << expand(row.arguments, dir) << "\n" << r.output);
  CHECK(r.signal == 0);
  CHECK(r.exit_code == row.exit_code);
  CHECK(r.output.find(expand(row.message, dir)) != std::string::npos);
}

void run_group(const std::string& group, const std::vector<BadInput>& rows) {
  int count = 0;
  for (const BadInput& row : rows)
    if (row.group == group) {
      run_row(row);
      ++count;
    }
  CHECK(count > 0);
}

}  // namespace

TEST_CASE("the bad-input table has at least 100 rows, each expecting a failure or a warning") {
  CHECK(bad_inputs().size() >= 100);
  for (const BadInput& row : bad_inputs()) {
    INFO(row.name);
    CHECK((row.exit_code != 0 || std::string(row.message).find("warning") != std::string::npos));
  }
}

TEST_CASE("bad inputs: config files and --set") { run_group("config", bad_inputs()); }
TEST_CASE("bad inputs: command line") { run_group("cli", bad_inputs()); }
TEST_CASE("bad inputs: corpus files") { run_group("corpus", bad_inputs()); }
TEST_CASE("bad inputs: token shards") { run_group("shard", bad_inputs()); }
TEST_CASE("bad inputs: safetensors files") { run_group("safetensors", bad_inputs()); }
TEST_CASE("bad inputs: checkpoints") { run_group("checkpoint", bad_inputs()); }
TEST_CASE("bad inputs: Hugging Face folders") { run_group("hf", bad_inputs()); }
TEST_CASE("bad inputs: SFT data") { run_group("sft", bad_inputs()); }
