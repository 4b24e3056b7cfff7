#include "gum/core/tensor.h"

#include <sstream>

#include "gum/core/checked_math.h"
#include "gum/core/error.h"

namespace gum {

Shape::Shape(std::initializer_list<int64_t> d) {
  GUM_CHECK(d.size() <= kMaxDims, "at most ", kMaxDims, " dimensions");
  for (int64_t v : d) dims[rank++] = v;
}

Shape::Shape(const std::vector<int64_t>& d) {
  GUM_CHECK(d.size() <= kMaxDims, "at most ", kMaxDims, " dimensions");
  for (int64_t v : d) dims[rank++] = v;
}

int64_t Shape::numel() const {
  int64_t n = 1;
  for (int i = 0; i < rank; ++i) {
    const std::optional<int64_t> product = checked_mul(n, dims[i]);
    if (!product) runtime_error("shape ", str(), ": more elements than a 64-bit count holds");
    n = *product;
  }
  return n;
}

bool Shape::operator==(const Shape& o) const {
  if (rank != o.rank) return false;
  for (int i = 0; i < rank; ++i)
    if (dims[i] != o.dims[i]) return false;
  return true;
}

std::string Shape::str() const {
  std::ostringstream out;
  out << "[";
  for (int i = 0; i < rank; ++i) out << (i ? ", " : "") << dims[i];
  out << "]";
  return out.str();
}

int64_t Tensor::rows() const { return shape.rank == 0 ? 1 : numel() / shape[shape.rank - 1]; }
int64_t Tensor::cols() const { return shape.rank == 0 ? 1 : shape[shape.rank - 1]; }

float* Tensor::f32() const {
  GUM_CHECK(dtype == DType::F32, "expected an F32 tensor, got ", dtype_name(dtype));
  return static_cast<float*>(data);
}

Tensor Tensor::reshaped(Shape s) const {
  GUM_CHECK(s.numel() == numel(), "reshape ", shape.str(), " to ", s.str());
  return Tensor(data, dtype, device, s);
}

Tensor Tensor::row_slice(int64_t begin, int64_t end) const {
  GUM_CHECK(0 <= begin && begin <= end && end <= rows(), "row slice [", begin, ", ", end, ") of ", shape.str());
  auto* base = static_cast<uint8_t*>(data) + static_cast<size_t>(begin * cols()) * dtype_size(dtype);
  return Tensor(base, dtype, device, Shape{end - begin, cols()});
}

Tensor Tensor::flat_slice(int64_t offset, Shape s) const {
  GUM_CHECK(offset >= 0 && offset + s.numel() <= numel(), "flat slice at ", offset, " of ", s.str(), " in ",
            shape.str());
  auto* base = static_cast<uint8_t*>(data) + static_cast<size_t>(offset) * dtype_size(dtype);
  return Tensor(base, dtype, device, s);
}

HostTensor::HostTensor(DType t, Shape s) : dtype(t), shape(s), bytes(static_cast<size_t>(s.numel()) * dtype_size(t)) {}

HostTensor HostTensor::from_f32(Shape s, const std::vector<float>& values) {
  GUM_CHECK(static_cast<int64_t>(values.size()) == s.numel(), "values for ", s.str());
  HostTensor t(DType::F32, s);
  std::memcpy(t.bytes.data(), values.data(), t.bytes.size());
  return t;
}

std::vector<float> HostTensor::to_f32() const {
  std::vector<float> out(static_cast<size_t>(numel()));
  const uint8_t* p = bytes.data();
  for (size_t i = 0; i < out.size(); ++i) {
    switch (dtype) {
      case DType::F32: std::memcpy(&out[i], p + 4 * i, 4); break;
      case DType::F64: { double d; std::memcpy(&d, p + 8 * i, 8); out[i] = static_cast<float>(d); break; }
      case DType::BF16: { uint16_t h; std::memcpy(&h, p + 2 * i, 2); out[i] = bf16_to_f32(h); break; }
      case DType::F16: { uint16_t h; std::memcpy(&h, p + 2 * i, 2); out[i] = f16_to_f32(h); break; }
      default: runtime_error("to_f32: tensor of dtype ", dtype_name(dtype), " is not floating point");
    }
  }
  return out;
}

}  // namespace gum
