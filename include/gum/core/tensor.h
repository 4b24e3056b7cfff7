#pragma once
// A Tensor is a non-owning view: pointer, dtype, device and a contiguous
// row-major shape of up to 4 dimensions. Memory is owned by arenas (Arena) or
// by HostTensor; views are cheap to copy and are made once, outside the step loop.
#include <array>
#include <cstdint>
#include <initializer_list>
#include <map>
#include <string>
#include <vector>

#include "gum/core/dtype.h"

namespace gum {

constexpr int kMaxDims = 4;

struct Shape {
  std::array<int64_t, kMaxDims> dims{};
  int rank = 0;

  Shape() = default;
  Shape(std::initializer_list<int64_t> d);
  explicit Shape(const std::vector<int64_t>& d);
  int64_t operator[](int i) const { return dims[i]; }
  int64_t numel() const;
  std::vector<int64_t> to_vector() const { return {dims.begin(), dims.begin() + rank}; }
  bool operator==(const Shape& o) const;
  std::string str() const;  // "[4, 16]"
};

struct Tensor {
  void* data = nullptr;
  DType dtype = DType::F32;
  Device device = Device::CPU;
  Shape shape;

  Tensor() = default;
  Tensor(void* d, DType t, Device dev, Shape s) : data(d), dtype(t), device(dev), shape(s) {}

  int64_t numel() const { return shape.numel(); }
  size_t nbytes() const { return static_cast<size_t>(numel()) * dtype_size(dtype); }
  int64_t dim(int i) const { return shape[i]; }
  int64_t rows() const;  // product of all dims but the last
  int64_t cols() const;  // last dim
  bool empty() const { return data == nullptr; }

  template <typename T>
  T* ptr() const { return static_cast<T*>(data); }
  float* f32() const;  // checked: dtype F32

  // Same memory, new shape with the same numel.
  Tensor reshaped(Shape s) const;
  // Rows [begin, end) of the tensor viewed as 2-D (rows() x cols()).
  Tensor row_slice(int64_t begin, int64_t end) const;
  // Elements [offset, offset + s.numel()) of the flat tensor, viewed with shape s.
  Tensor flat_slice(int64_t offset, Shape s) const;
};

// A tensor that owns host memory: safetensors I/O, checkpoints, tests.
struct HostTensor {
  DType dtype = DType::F32;
  Shape shape;
  std::vector<uint8_t> bytes;

  HostTensor() = default;
  HostTensor(DType t, Shape s);
  static HostTensor from_f32(Shape s, const std::vector<float>& values);
  Tensor view() { return Tensor(bytes.data(), dtype, Device::CPU, shape); }
  Tensor view() const { return Tensor(const_cast<uint8_t*>(bytes.data()), dtype, Device::CPU, shape); }
  int64_t numel() const { return shape.numel(); }
  // Values as f32 whatever the stored float dtype (F32, BF16, F16, F64).
  std::vector<float> to_f32() const;
};

// Named host tensors: what safetensors files hold and optimizers save.
using TensorMap = std::map<std::string, HostTensor>;

}  // namespace gum
