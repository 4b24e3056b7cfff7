#pragma once
// Helpers for the CUDA tests outside the op table (tests/ops): the model on both backends, and
// CUDA-only behaviour. A tensor exists on both backends with the same contents, and results are
// compared by normalised L2 error ||gpu - cpu|| / ||cpu|| (the error measure of ggml's test-backend-ops).
#include <catch2/catch.hpp>
#include <memory>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include "common/relative_error.h"
#include "common/skip.h"
#include "gum/backend/backend.h"
#include "gum/core/dtype.h"

namespace gum::cuda_test {

// First statement of every test: the binary also runs (and must skip) on machines without a GPU.
#define GUM_REQUIRE_GPU()                                         \
  do {                                                            \
    if (!::gum::cuda_available()) GUM_SKIP_TEST("no usable GPU"); \
  } while (0)

constexpr double kF32Tolerance = 1e-5;
// GEMM results in TF32 (operands rounded to 10 mantissa bits, unit roundoff 2^-11 = 4.9e-4): the
// normalised error of a K = 256 product of normal operands measured 3.0e-4 on the emulator; a wrong
// result (a transposed or unrounded operand path aside) is off by O(1).
constexpr double kTF32Tolerance = 1e-3;

// The same logical tensor on the CPU (always F32) and on the GPU (F32 or BF16).
struct Pair {
  Tensor cpu, gpu;
};

inline std::vector<float> random_values(int64_t n, uint64_t seed, double scale = 1.0) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<double> normal(0.0, scale);
  std::vector<float> v(static_cast<size_t>(n));
  for (auto& x : v) {
    x = static_cast<float>(normal(rng));
    if (x == 0.0f) x = 1e-3f;  // never an all-zero (or exactly zero) input
  }
  return v;
}

// Values as the GPU will hold them in `dtype` (bf16-rounded when BF16).
inline std::vector<float> rounded_to(DType dtype, std::vector<float> v) {
  if (dtype == DType::BF16)
    for (auto& x : v) x = bf16_to_f32(f32_to_bf16(x));
  return v;
}

class BackendPair {
 public:
  // cuda_attention: the attention kernel ("gemm" or "flash", BackendOptions::attention) of the GPU
  // backend; allow_tf32: its F32 GEMMs in TF32 (BackendOptions::allow_tf32; compare with kTF32Tolerance).
  explicit BackendPair(const char* cuda_attention = "gemm", bool allow_tf32 = false)
      : cpu_(make_backend("cpu")), gpu_(make_cuda_backend(cuda_attention, allow_tf32)) {}

  static std::unique_ptr<Backend> make_cuda_backend(const char* attention, bool allow_tf32 = false) {
    BackendOptions options;
    options.attention = attention;
    options.allow_tf32 = allow_tf32;
    return make_backend("cuda", 0, options);
  }
  ~BackendPair() {
    for (auto& [backend, ptr] : owned_) backend->release(ptr);
  }
  BackendPair(const BackendPair&) = delete;
  BackendPair& operator=(const BackendPair&) = delete;

  Backend& cpu() { return *cpu_; }
  Backend& gpu() { return *gpu_; }

  Tensor allocate(Backend& backend, Shape shape, DType dtype) {
    void* ptr = backend.allocate(static_cast<size_t>(shape.numel()) * dtype_size(dtype));
    owned_.emplace_back(&backend, ptr);
    return Tensor(ptr, dtype, backend.device(), shape);
  }

  // Zero-initialised on both.
  Pair zeros(Shape shape, DType gpu_dtype = DType::F32) {
    return {allocate(*cpu_, shape, DType::F32), allocate(*gpu_, shape, gpu_dtype)};
  }

  // The CPU side gets the values rounded to the GPU dtype, so both start from identical numbers.
  Pair values(Shape shape, const std::vector<float>& v, DType gpu_dtype = DType::F32) {
    REQUIRE(static_cast<int64_t>(v.size()) == shape.numel());
    Pair p = zeros(shape, gpu_dtype);
    upload(*cpu_, p.cpu, rounded_to(gpu_dtype, v));
    upload(*gpu_, p.gpu, v);
    return p;
  }

  Pair random(Shape shape, uint64_t seed, double scale = 1.0, DType gpu_dtype = DType::F32) {
    return values(shape, random_values(shape.numel(), seed, scale), gpu_dtype);
  }

  Pair ints(Shape shape, const std::vector<int32_t>& v) {
    REQUIRE(static_cast<int64_t>(v.size()) == shape.numel());
    Pair p{allocate(*cpu_, shape, DType::I32), allocate(*gpu_, shape, DType::I32)};
    cpu_->copy_from_host(p.cpu, v.data());
    gpu_->copy_from_host(p.gpu, v.data());
    return p;
  }

  // Host copy as floats (F32 or BF16 tensors).
  static std::vector<float> download(Backend& backend, const Tensor& t) {
    if (t.dtype == DType::F32) {
      std::vector<float> out(static_cast<size_t>(t.numel()));
      backend.copy_to_host(out.data(), t);
      return out;
    }
    REQUIRE(t.dtype == DType::BF16);
    std::vector<uint16_t> bits(static_cast<size_t>(t.numel()));
    backend.copy_to_host(bits.data(), t);
    std::vector<float> out(bits.size());
    for (size_t i = 0; i < bits.size(); ++i) out[i] = bf16_to_f32(bits[i]);
    return out;
  }

  static void upload(Backend& backend, const Tensor& t, const std::vector<float>& v) {
    if (t.dtype == DType::F32) {
      backend.copy_from_host(t, v.data());
      return;
    }
    REQUIRE(t.dtype == DType::BF16);
    std::vector<uint16_t> bits(v.size());
    for (size_t i = 0; i < v.size(); ++i) bits[i] = f32_to_bf16(v[i]);
    backend.copy_from_host(t, bits.data());
  }

  std::vector<float> cpu_values(const Pair& p) { return download(*cpu_, p.cpu); }
  std::vector<float> gpu_values(const Pair& p) { return download(*gpu_, p.gpu); }

 private:
  std::unique_ptr<Backend> cpu_, gpu_;
  std::vector<std::pair<Backend*, void*>> owned_;
};

using gum::testing::relative_error;

inline void expect_close(const std::vector<float>& expected, const std::vector<float>& actual, double tolerance,
                         const std::string& what) {
  const double error = relative_error(expected, actual);
  INFO(what << ": relative L2 error " << error << " (tolerance " << tolerance << ", " << expected.size() << " values)");
  CHECK(error <= tolerance);
}

}  // namespace gum::cuda_test
