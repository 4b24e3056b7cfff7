#pragma once
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>

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
inline float bf16_to_f32(uint16_t h) {
  uint32_t bits = static_cast<uint32_t>(h) << 16;
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}
float f16_to_f32(uint16_t h);
uint16_t f32_to_f16(float f);

}  // namespace gum
