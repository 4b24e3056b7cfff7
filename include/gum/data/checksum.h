#pragma once
// A fast 64-bit, non-cryptographic checksum for token shards and tokenizer fingerprints.
// It catches corruption and mix-ups (a shard tokenized with another tokenizer), not attacks.
#include <cstddef>
#include <cstdint>
#include <string>

namespace gum {

// Four independent FNV-1a-style lanes over 64-bit little-endian words (so the multiply
// latency overlaps), the tail bytewise, then a final avalanche (the splitmix64 finaliser).
// Deterministic across machines of the same endianness; gum_train only targets little-endian.
uint64_t checksum64(const void* data, size_t bytes);

// The same checksum computed over data that arrives in pieces: update() any number of times,
// then finish(); the result equals checksum64 of the concatenated bytes.
class Checksum64Stream {
 public:
  Checksum64Stream();
  void update(const void* data, size_t bytes);
  uint64_t finish() const;

 private:
  uint64_t lane_[4];
  uint8_t partial_[32];  // bytes of an incomplete 32-byte block
  size_t partial_bytes_ = 0;
  uint64_t total_bytes_ = 0;
};

// checksum64 of a whole file's bytes; a missing/unreadable file is a runtime error naming it.
uint64_t checksum64_file(const std::string& path);

}  // namespace gum
