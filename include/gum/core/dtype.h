#pragma once
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>

#include "gum/core/host_device.h"

namespace gum {

enum class DType : uint8_t { F32, BF16, F16, F64, I32, I64, U16, U8 };
enum class Device : uint8_t { CPU, CUDA };

size_t dtype_size(DType t);
// Names as in safetensors: "F32", "BF16", "F16", "F64", "I32", "I64", "U16", "U8".
const char* dtype_name(DType t);
// Throws a usage error naming `context` for an unknown name.
DType dtype_from_name(const std::string& name, const std::string& context);
const char* device_name(Device d);

// bf16 is the top half of an f32; conversion rounds to nearest even, NaN stays NaN.
inline uint16_t f32_to_bf16(float f) {
  uint32_t bits;
  std::memcpy(&bits, &f, 4);
  if ((bits & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((bits >> 16) | 0x40);
  uint32_t rounding = 0x7fffu + ((bits >> 16) & 1u);
  return static_cast<uint16_t>((bits + rounding) >> 16);
}
// Stochastic rounding to bf16 (Gupta et al. 2015, "Deep learning with limited numerical
// precision"): with r uniform in [0, 2^16), f rounds up with probability equal to its distance
// from the bf16 value below (in units of the last place), so the expected value of the result is
// f. Adding r to the 16 bits that are cut off, then truncating, does exactly that. NaN stays NaN;
// infinities stay infinite; a finite value may round up to infinity only from above the largest
// finite bf16.
GUM_HOST_DEVICE inline uint16_t f32_to_bf16_stochastic(float f, uint32_t random_bits) {
  uint32_t bits;
  std::memcpy(&bits, &f, 4);
  if ((bits & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((bits >> 16) | 0x40);
  if ((bits & 0x7fffffffu) == 0x7f800000u) return static_cast<uint16_t>(bits >> 16);
  return static_cast<uint16_t>((bits + (random_bits & 0xffffu)) >> 16);
}
inline float bf16_to_f32(uint16_t h) {
  uint32_t bits = static_cast<uint32_t>(h) << 16;
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}
float f16_to_f32(uint16_t h);
uint16_t f32_to_f16(float f);

}  // namespace gum
