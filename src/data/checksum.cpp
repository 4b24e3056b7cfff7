#include "gum/data/checksum.h"

#include <cstring>
#include <fstream>
#include <vector>

#include "gum/core/error.h"

namespace gum {

static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__, "shard and checksum formats assume little-endian");

namespace {
constexpr uint64_t kFnvOffset = 0xcbf29ce484222325ull;
constexpr uint64_t kFnvPrime = 0x100000001b3ull;

uint64_t avalanche(uint64_t x) {
  x ^= x >> 30;
  x *= 0xbf58476d1ce4e5b9ull;
  x ^= x >> 27;
  x *= 0x94d049bb133111ebull;
  x ^= x >> 31;
  return x;
}

void mix_block(uint64_t lane[4], const uint8_t* block) {
  uint64_t w[4];
  std::memcpy(w, block, 32);
  for (int k = 0; k < 4; ++k) lane[k] = (lane[k] ^ w[k]) * kFnvPrime;
}
}  // namespace

Checksum64Stream::Checksum64Stream()
    // Distinct lane seeds so that swapping whole words between lanes changes the result.
    : lane_{kFnvOffset, kFnvOffset ^ 0x9e3779b97f4a7c15ull, kFnvOffset ^ 0x3c6ef372fe94f82aull,
            kFnvOffset ^ 0xdaa66d2c7ddf743full} {}

void Checksum64Stream::update(const void* data, size_t bytes) {
  const auto* p = static_cast<const uint8_t*>(data);
  total_bytes_ += bytes;
  if (partial_bytes_ > 0) {
    size_t take = std::min(bytes, 32 - partial_bytes_);
    std::memcpy(partial_ + partial_bytes_, p, take);
    partial_bytes_ += take;
    p += take;
    bytes -= take;
    if (partial_bytes_ < 32) return;
    mix_block(lane_, partial_);
    partial_bytes_ = 0;
  }
  for (; bytes >= 32; p += 32, bytes -= 32) mix_block(lane_, p);
  std::memcpy(partial_, p, bytes);
  partial_bytes_ = bytes;
}

uint64_t Checksum64Stream::finish() const {
  uint64_t h = kFnvOffset;
  for (int k = 0; k < 4; ++k) h = (h ^ avalanche(lane_[k])) * kFnvPrime;
  for (size_t i = 0; i < partial_bytes_; ++i) h = (h ^ partial_[i]) * kFnvPrime;
  // The length goes in too, so trailing zero bytes are not invisible.
  return avalanche(h ^ total_bytes_);
}

uint64_t checksum64(const void* data, size_t bytes) {
  Checksum64Stream stream;
  stream.update(data, bytes);
  return stream.finish();
}

uint64_t checksum64_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) runtime_error(path, ": cannot open file");
  Checksum64Stream stream;
  std::vector<char> chunk(1 << 20);
  while (in) {
    in.read(chunk.data(), static_cast<std::streamsize>(chunk.size()));
    stream.update(chunk.data(), static_cast<size_t>(in.gcount()));
  }
  if (in.bad()) runtime_error(path, ": read failed");
  return stream.finish();
}

}  // namespace gum
