#pragma once
// Philox4x32-10 (Salmon et al., "Parallel random numbers: as easy as 1, 2, 3", SC'11).
// Counter-based: the numbers for element i depend only on (seed, stream, i), so the
// CPU and CUDA backends draw identical bits, in any order, on any number of threads,
// and a generator's whole state is two integers that checkpoints store.
#include <cmath>
#include <cstdint>

#include "gum/core/host_device.h"

namespace gum {

struct Philox4 {
  uint32_t v[4];
};

GUM_HOST_DEVICE inline Philox4 philox4x32(uint64_t seed, uint64_t stream, uint64_t block) {
  uint32_t c0 = static_cast<uint32_t>(block), c1 = static_cast<uint32_t>(block >> 32);
  uint32_t c2 = static_cast<uint32_t>(stream), c3 = static_cast<uint32_t>(stream >> 32);
  uint32_t k0 = static_cast<uint32_t>(seed), k1 = static_cast<uint32_t>(seed >> 32);
  for (int round = 0; round < 10; ++round) {
    uint64_t p0 = static_cast<uint64_t>(0xD2511F53u) * c0;
    uint64_t p1 = static_cast<uint64_t>(0xCD9E8D57u) * c2;
    uint32_t hi0 = static_cast<uint32_t>(p0 >> 32), lo0 = static_cast<uint32_t>(p0);
    uint32_t hi1 = static_cast<uint32_t>(p1 >> 32), lo1 = static_cast<uint32_t>(p1);
    c0 = hi1 ^ c1 ^ k0;
    c1 = lo1;
    c2 = hi0 ^ c3 ^ k1;
    c3 = lo0;
    k0 += 0x9E3779B9u;
    k1 += 0xBB67AE85u;
  }
  return Philox4{{c0, c1, c2, c3}};
}

// Element i of a stream of 32 random bits: block i/4, lane i%4.
GUM_HOST_DEVICE inline uint32_t philox_bits(uint64_t seed, uint64_t stream, uint64_t i) {
  return philox4x32(seed, stream, i >> 2).v[i & 3];
}

// Uniform in the open interval (0, 1) from 24 random bits.
GUM_HOST_DEVICE inline float philox_bits_to_uniform(uint32_t bits) {
  return (static_cast<float>(bits >> 8) + 0.5f) * (1.0f / 16777216.0f);
}

// Element i of a uniform (0,1) stream: block i/4, lane i%4.
GUM_HOST_DEVICE inline float philox_uniform(uint64_t seed, uint64_t stream, uint64_t i) {
  Philox4 r = philox4x32(seed, stream, i >> 2);
  return philox_bits_to_uniform(r.v[i & 3]);
}

// Box-Muller on one lane pair: the normals are radius * cos(angle) and radius * sin(angle).
struct BoxMuller {
  float radius;
  float angle;
};
GUM_HOST_DEVICE inline BoxMuller box_muller(uint32_t bits1, uint32_t bits2) {
  float u1 = philox_bits_to_uniform(bits1);
  float u2 = philox_bits_to_uniform(bits2);
  return BoxMuller{sqrtf(-2.0f * logf(u1)), 6.2831853071795864769f * u2};
}

// Element i of a standard normal stream (Box-Muller on lane pairs (0,1) and (2,3)).
GUM_HOST_DEVICE inline float philox_normal(uint64_t seed, uint64_t stream, uint64_t i) {
  Philox4 r = philox4x32(seed, stream, i >> 2);
  int pair = static_cast<int>(i & 2);
  BoxMuller b = box_muller(r.v[pair], r.v[pair + 1]);
  return (i & 1) ? b.radius * sinf(b.angle) : b.radius * cosf(b.angle);
}

// Elements 4 block .. 4 block + 3 of the same stream, bitwise philox_normal's, from one Philox
// block and two logarithms instead of four of each (a sequential loop's way to draw).
GUM_HOST_DEVICE inline void philox_normal4(uint64_t seed, uint64_t stream, uint64_t block, float out[4]) {
  Philox4 r = philox4x32(seed, stream, block);
  for (int pair = 0; pair < 4; pair += 2) {
    BoxMuller b = box_muller(r.v[pair], r.v[pair + 1]);
    out[pair] = b.radius * cosf(b.angle);
    out[pair + 1] = b.radius * sinf(b.angle);
  }
}

// A sequential generator over one stream; its state (seed, stream, position) is
// what checkpoints save.
class PhiloxStream {
 public:
  PhiloxStream() = default;
  PhiloxStream(uint64_t seed, uint64_t stream) : seed_(seed), stream_(stream) {}

  uint32_t next_u32() {
    Philox4 r = philox4x32(seed_, stream_, position_ >> 2);
    return r.v[position_++ & 3];
  }
  uint64_t next_u64() {
    uint64_t hi = next_u32();
    return (hi << 32) | next_u32();
  }
  // Uniform integer in [0, n) without modulo bias (rejection).
  uint64_t next_below(uint64_t n) {
    uint64_t limit = UINT64_MAX - UINT64_MAX % n;
    uint64_t x;
    do x = next_u64();
    while (x >= limit);
    return x % n;
  }
  double next_uniform() { return (static_cast<double>(next_u64() >> 11) + 0.5) * (1.0 / 9007199254740992.0); }

  uint64_t seed() const { return seed_; }
  uint64_t stream() const { return stream_; }
  uint64_t position() const { return position_; }
  void set_position(uint64_t p) { position_ = p; }

 private:
  uint64_t seed_ = 0;
  uint64_t stream_ = 0;
  uint64_t position_ = 0;
};

}  // namespace gum
