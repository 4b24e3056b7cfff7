// Checkpoint folders: every tensor and the trainer state read back exactly, atomic layout,
// MANIFEST verification, keep_last, and the fallback to the previous checkpoint when the newest
// one is corrupt or incomplete.
#include <catch2/catch.hpp>
#include <cstring>
#include <filesystem>
#include <fstream>

#include "gum/core/error.h"
#include "gum/io/checkpoint.h"

namespace fs = std::filesystem;
using namespace gum;

namespace {

std::string fresh_dir(const std::string& name) {
  std::string dir = std::string(GUM_BINARY_DIR) + "/test_tmp/checkpoint_" + name;
  fs::remove_all(dir);
  fs::create_directories(dir);
  return dir;
}

// Contents shaped like a trainer's: two weights, an F32 moment and an I64 flag tensor (as the
// low-rank optimizers save), and a nested trainer state; every value differs from its neighbours
// so a swapped, shifted or dropped element shows.
CheckpointContents sample_contents(float value, int64_t step) {
  CheckpointContents c;
  c.model["model.embed_tokens.weight"] = HostTensor::from_f32(Shape{3, 2}, {value, 1, 2, 3, 4, 5});
  c.model["model.norm.weight"] = HostTensor::from_f32(Shape{4}, {0.5f, -1.25f, 3e-8f, value * 2});
  c.optimizer["model.embed_tokens.weight.exp_avg"] = HostTensor::from_f32(Shape{3, 2}, {-6, 7e-5f, 8, 9, -1e9f, value});
  HostTensor flags(DType::I64, Shape{3});
  const int64_t flag_values[3] = {1, 0, int64_t(1) << 40};
  std::memcpy(flags.bytes.data(), flag_values, sizeof(flag_values));
  c.optimizer["galore_adamw.has_projector"] = flags;
  c.trainer = {{"step", step},
               {"tokens", step * 100},
               {"elapsed_s", 12.5},
               {"loader", {{"epoch", 2}, {"next_window", 17}}},
               {"rng", {{"training_seed", 1234}, {"data_seed", 5678}}},
               {"config", {{"optimizer", {{"name", "gum"}, {"lr", 0.01}}}}}};
  return c;
}

// Same names, and per name the same dtype, shape and bytes.
void check_same(const TensorMap& loaded, const TensorMap& saved) {
  REQUIRE(loaded.size() == saved.size());
  for (const auto& [name, tensor] : saved) {
    INFO(name);
    REQUIRE(loaded.count(name) == 1);
    const HostTensor& got = loaded.at(name);
    CHECK(got.dtype == tensor.dtype);
    CHECK(got.shape == tensor.shape);
    CHECK(got.bytes == tensor.bytes);
  }
}

void flip_byte(const std::string& path, size_t offset) {
  std::fstream f(path, std::ios::in | std::ios::out | std::ios::binary);
  f.seekg(static_cast<std::streamoff>(offset));
  char c;
  f.read(&c, 1);
  c ^= 0x5a;
  f.seekp(static_cast<std::streamoff>(offset));
  f.write(&c, 1);
}

}  // namespace

TEST_CASE("checkpoint round trip writes every file and latest") {
  std::string dir = fresh_dir("roundtrip");
  std::string step_dir = save_checkpoint(dir, 100, sample_contents(7.5f, 100), 0);
  CHECK(fs::path(step_dir).filename() == "step_000100");
  for (const char* f : {"model.safetensors", "optimizer.safetensors", "trainer.json", "MANIFEST"})
    CHECK(fs::exists(step_dir + "/" + f));
  std::ifstream latest(dir + "/latest");
  std::string name;
  latest >> name;
  CHECK(name == "step_000100");

  const CheckpointContents saved = sample_contents(7.5f, 100);
  CheckpointContents loaded = load_checkpoint(step_dir);
  check_same(loaded.model, saved.model);
  check_same(loaded.optimizer, saved.optimizer);
  CHECK(loaded.trainer == saved.trainer);
  // No temporary folder is left behind.
  for (const auto& e : fs::directory_iterator(dir)) CHECK(e.path().filename().string().rfind(".tmp", 0) != 0);
}

TEST_CASE("keep_last removes the oldest checkpoints") {
  std::string dir = fresh_dir("keep_last");
  for (int64_t step : {10, 20, 30, 40}) save_checkpoint(dir, step, sample_contents(1.0f, step), 2);
  auto all = list_checkpoints(dir);
  REQUIRE(all.size() == 2);
  CHECK(all[0].first == 40);
  CHECK(all[1].first == 30);
}

TEST_CASE("a corrupt newest checkpoint is skipped for the previous one") {
  std::string dir = fresh_dir("corrupt");
  save_checkpoint(dir, 10, sample_contents(1.0f, 10), 0);
  std::string newest = save_checkpoint(dir, 20, sample_contents(2.0f, 20), 0);
  CHECK(find_resume_checkpoint(dir) == newest);

  flip_byte(newest + "/model.safetensors", fs::file_size(newest + "/model.safetensors") - 3);
  try {
    verify_checkpoint(newest);
    FAIL("a flipped byte must fail verification");
  } catch (const Error& e) {
    CHECK(std::string(e.what()).find("model.safetensors") != std::string::npos);
    CHECK(std::string(e.what()).find("corrupt") != std::string::npos);
  }
  std::string chosen = find_resume_checkpoint(dir);
  CHECK(fs::path(chosen).filename() == "step_000010");
  CHECK(load_checkpoint(chosen).trainer["step"] == 10);
}

TEST_CASE("a truncated file or a missing manifest fails verification with the file name") {
  std::string dir = fresh_dir("truncated");
  std::string step_dir = save_checkpoint(dir, 5, sample_contents(1.0f, 5), 0);
  fs::resize_file(step_dir + "/optimizer.safetensors", 16);
  REQUIRE_THROWS_WITH(verify_checkpoint(step_dir),
                      Catch::Contains("optimizer.safetensors") && Catch::Contains("truncated"));
  fs::remove(step_dir + "/MANIFEST");
  REQUIRE_THROWS_WITH(verify_checkpoint(step_dir), Catch::Contains("MANIFEST"));
  CHECK(find_resume_checkpoint(dir).empty());
  REQUIRE_THROWS_AS(resolve_checkpoint_path(dir), Error);
}

TEST_CASE("file_crc32 matches the standard check value") {
  std::string dir = fresh_dir("crc");
  std::ofstream(dir + "/check.txt", std::ios::binary) << "123456789";
  uint64_t size = 0;
  CHECK(file_crc32(dir + "/check.txt", &size) == 0xCBF43926u);  // the CRC-32 catalogue's check value
  CHECK(size == 9);
}

TEST_CASE("a save interrupted before its rename leaves only a temporary folder that resume ignores") {
  std::string dir = fresh_dir("interrupted_save");
  std::string good = save_checkpoint(dir, 10, sample_contents(1.0f, 10), 0);
  // What a crash in the middle of save_checkpoint(20) leaves: the hidden temporary folder.
  fs::create_directories(dir + "/.tmp_step_000020");
  std::ofstream(dir + "/.tmp_step_000020/model.safetensors") << "partial";
  CHECK(list_checkpoints(dir).size() == 1);
  CHECK(find_resume_checkpoint(dir) == good);
  // The next save of that step replaces the leftover.
  std::string redone = save_checkpoint(dir, 20, sample_contents(2.0f, 20), 0);
  CHECK_FALSE(fs::exists(dir + "/.tmp_step_000020"));
  CHECK(find_resume_checkpoint(dir) == redone);
}
