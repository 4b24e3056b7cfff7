// Fuzz target: a token shard (64-byte header, payload) opened as the loader does: the header
// alone, then the memory-mapped shard with its payload checksum, reading its first and last tokens.
#include <algorithm>
#include <vector>

#include "fuzz_util.h"
#include "gum/data/shard.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string path = gum_fuzz::input_file("input.bin", data, size);
  gum_fuzz::expect_accept_or_gum_error([&] {
    const gum::ShardInfo info = gum::read_shard_info(path);
    gum::TokenShard shard(path, info.tokenizer_fingerprint, true);
    const uint64_t count = std::min<uint64_t>(shard.token_count(), 64);
    std::vector<int32_t> tokens(count);
    shard.copy_tokens(0, count, tokens.data());
    shard.copy_tokens(shard.token_count() - count, count, tokens.data());
  });
  return 0;
}
