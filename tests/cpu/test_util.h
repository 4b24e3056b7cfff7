#pragma once
// Small helpers for the CPU backend tests: a backend buffer that frees itself and random data.
#include <random>
#include <vector>

#include "gum/backend/backend.h"

namespace gum::testing {

struct DeviceBuffer {
  Backend* backend;
  Tensor tensor;
  DeviceBuffer(Backend& b, DType dtype, Shape shape)
      : backend(&b), tensor(b.allocate(size_t(shape.numel()) * dtype_size(dtype)), dtype, b.device(), shape) {}
  ~DeviceBuffer() { backend->release(tensor.data); }
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;

  template <typename T>
  void upload(const std::vector<T>& values) {
    backend->copy_from_host(tensor, values.data());
  }
  std::vector<float> download() const {
    std::vector<float> out(size_t(tensor.numel()));
    backend->copy_to_host(out.data(), tensor);
    return out;
  }
};

template <typename T = float>
std::vector<T> random_vector(int64_t n, uint64_t seed, double scale = 1.0) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<double> normal(0.0, scale);
  std::vector<T> v(static_cast<size_t>(n));
  for (auto& x : v) x = static_cast<T>(normal(rng));
  return v;
}

}  // namespace gum::testing
