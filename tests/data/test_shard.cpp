#include <catch2/catch.hpp>
#include <cstring>
#include <fstream>

#include "data_test_util.h"
#include "gum/core/error.h"
#include "gum/data/checksum.h"
#include "gum/data/shard.h"

using namespace gum;
using gum_test::fresh_dir;

namespace {

constexpr uint64_t kFingerprint = 0x1234abcd5678ef01ull;

std::string open_error(const std::string& path, uint64_t fingerprint = kFingerprint) {
  try {
    TokenShard shard(path, fingerprint);
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

void flip_byte(const std::string& path, uint64_t offset) {
  std::fstream f(path, std::ios::in | std::ios::out | std::ios::binary);
  f.seekg(static_cast<std::streamoff>(offset));
  char c = 0;
  f.read(&c, 1);
  c = static_cast<char>(c ^ 0x01);
  f.seekp(static_cast<std::streamoff>(offset));
  f.write(&c, 1);
}

}  // namespace

TEST_CASE("checksum64 streams and detects changes") {
  std::vector<uint8_t> bytes(1000);
  for (size_t i = 0; i < bytes.size(); ++i) bytes[i] = static_cast<uint8_t>(i * 7 + 3);
  const uint64_t whole = checksum64(bytes.data(), bytes.size());
  for (size_t split : {0, 1, 31, 32, 33, 500, 999, 1000}) {
    Checksum64Stream stream;
    stream.update(bytes.data(), split);
    stream.update(bytes.data() + split, bytes.size() - split);
    CHECK(stream.finish() == whole);
  }
  bytes[517] ^= 0x10;
  CHECK(checksum64(bytes.data(), bytes.size()) != whole);
  std::vector<uint8_t> zeros(64, 0);
  CHECK(checksum64(zeros.data(), 63) != checksum64(zeros.data(), 64));
}

TEST_CASE("shard round trip with 16- and 32-bit tokens") {
  auto dir = fresh_dir("shard_round_trip");
  for (uint64_t vocab : {uint64_t{1000}, uint64_t{65536}, uint64_t{70000}}) {
    INFO("vocab " << vocab);
    const std::string path = (dir / ("v" + std::to_string(vocab) + ".bin")).string();
    std::vector<int32_t> all;
    {
      ShardWriter writer(path, vocab, kFingerprint);
      for (int doc = 0; doc < 50; ++doc) {
        std::vector<int32_t> tokens;
        for (int i = 0; i < doc * 37 + 1; ++i)
          tokens.push_back(static_cast<int32_t>((doc * 7919 + i * 104729) % vocab));
        writer.append_document(tokens.data(), tokens.size());
        all.insert(all.end(), tokens.begin(), tokens.end());
      }
      ShardInfo info = writer.finish();
      CHECK(info.token_count == all.size());
      CHECK(info.document_count == 50);
    }
    CHECK_FALSE(std::filesystem::exists(path + ".tmp"));
    TokenShard shard(path, kFingerprint);
    CHECK(shard.info().token_bytes == (vocab <= 65536 ? 2u : 4u));
    CHECK(shard.info().vocab_size == vocab);
    CHECK(shard.token_count() == all.size());
    std::vector<int32_t> back(all.size());
    shard.copy_tokens(0, all.size(), back.data());
    CHECK(back == all);
    std::vector<int32_t> middle(10);
    shard.copy_tokens(123, 10, middle.data());
    CHECK(std::equal(middle.begin(), middle.end(), all.begin() + 123));
    CHECK(read_shard_info(path).payload_checksum == shard.info().payload_checksum);
  }
}

TEST_CASE("shard writer refuses out-of-vocabulary ids and cleans up when abandoned") {
  auto dir = fresh_dir("shard_writer");
  const std::string path = (dir / "s.bin").string();
  {
    ShardWriter writer(path, 100, kFingerprint);
    int32_t bad[] = {5, 100};
    CHECK_THROWS_WITH(writer.append_document(bad, 2), Catch::Contains("token id 100"));
    int32_t negative[] = {-1};
    CHECK_THROWS_WITH(writer.append_document(negative, 1), Catch::Contains("token id -1"));
  }
  CHECK_FALSE(std::filesystem::exists(path));
  CHECK_FALSE(std::filesystem::exists(path + ".tmp"));
}

TEST_CASE("shard reader refuses bad shards") {
  auto dir = fresh_dir("shard_refusals");
  const std::string good = (dir / "good.bin").string();
  {
    ShardWriter writer(good, 500, kFingerprint);
    std::vector<int32_t> tokens(1000);
    for (size_t i = 0; i < tokens.size(); ++i) tokens[i] = static_cast<int32_t>(i % 500);
    writer.append_document(tokens.data(), tokens.size());
    writer.finish();
  }
  REQUIRE(open_error(good).empty());
  auto copy_of_good = [&](const std::string& name) {
    const std::string path = (dir / name).string();
    std::filesystem::copy_file(good, path, std::filesystem::copy_options::overwrite_existing);
    return path;
  };

  SECTION("other tokenizer") {
    CHECK_THAT(open_error(good, kFingerprint + 1), Catch::Contains("good.bin") && Catch::Contains("another tokenizer"));
  }
  SECTION("corrupt payload") {
    const std::string path = copy_of_good("corrupt.bin");
    flip_byte(path, kShardHeaderBytes + 777);
    CHECK_THAT(open_error(path), Catch::Contains("corrupt.bin") && Catch::Contains("checksum mismatch"));
    // Without verification it opens (the fast path for trusted shards).
    CHECK_NOTHROW(TokenShard(path, kFingerprint, /*verify_checksum=*/false));
  }
  SECTION("truncated") {
    const std::string path = copy_of_good("truncated.bin");
    std::filesystem::resize_file(path, kShardHeaderBytes + 1000);
    CHECK_THAT(open_error(path), Catch::Contains("truncated.bin") && Catch::Contains("payload holds 1000 bytes"));
    std::filesystem::resize_file(path, 10);
    CHECK_THAT(open_error(path), Catch::Contains("shorter than"));
  }
  SECTION("bad magic") {
    const std::string path = copy_of_good("magic.bin");
    flip_byte(path, 0);
    CHECK_THAT(open_error(path), Catch::Contains("magic.bin") && Catch::Contains("bad magic"));
  }
  SECTION("unknown version") {
    const std::string path = copy_of_good("version.bin");
    flip_byte(path, 9);
    CHECK_THAT(open_error(path), Catch::Contains("version.bin") && Catch::Contains("version"));
  }
  SECTION("inconsistent token width") {
    const std::string path = copy_of_good("width.bin");
    flip_byte(path, 12);  // width 2 -> 3
    CHECK_THAT(open_error(path), Catch::Contains("width.bin") && Catch::Contains("token width"));
  }
  SECTION("missing file") {
    CHECK_THAT(open_error((dir / "nope.bin").string()), Catch::Contains("nope.bin") && Catch::Contains("cannot open"));
  }
}
