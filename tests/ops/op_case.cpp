#include "op_case.h"

#include <catch2/catch.hpp>
#include <cmath>
#include <random>

#include "gum/core/dtype.h"

namespace gum::op_test {

double* HostTensors::operator()(const std::string& name) {
  auto it = tensors.find(name);
  INFO("host tensor " << name);
  REQUIRE(it != tensors.end());
  REQUIRE(it->second.dtype == DType::F32);
  return it->second.data.data();
}

const std::vector<double>& HostTensors::at(const std::string& name) const {
  auto it = tensors.find(name);
  INFO("host tensor " << name);
  REQUIRE(it != tensors.end());
  return it->second.data;
}

const int32_t* HostTensors::ids(const std::string& name) {
  auto it = tensors.find(name);
  INFO("host tensor " << name);
  REQUIRE(it != tensors.end());
  REQUIRE(it->second.dtype == DType::I32);
  auto& ids = ids_[name];
  ids.assign(it->second.data.begin(), it->second.data.end());
  return ids.data();
}

double* HostTensors::make(const std::string& name, Shape shape) {
  auto& v = tensors[name];
  v = Values{DType::F32, shape, std::vector<double>(size_t(shape.numel()), 0.0)};
  return v.data.data();
}

Generator normal(uint64_t seed, double scale) {
  return [=](int64_t n) {
    std::mt19937_64 rng(seed);
    std::normal_distribution<double> dist(0.0, scale);
    std::vector<double> v(static_cast<size_t>(n));
    for (auto& x : v) {
      x = dist(rng);
      if (float(x) == 0.0f) x = 1e-3;
    }
    return v;
  };
}

Generator constant(double value) {
  return [=](int64_t n) { return std::vector<double>(size_t(n), value); };
}

Generator given(std::vector<double> values) {
  return [values = std::move(values)](int64_t n) {
    REQUIRE(int64_t(values.size()) == n);
    return values;
  };
}

Generator given_ids(std::vector<int32_t> ids) { return given(std::vector<double>(ids.begin(), ids.end())); }

Generator rope_table(int64_t max_positions, int64_t head_dim, double theta) {
  return [=](int64_t n) {
    REQUIRE(n == max_positions * head_dim);
    std::vector<double> table(static_cast<size_t>(n));
    const int64_t half = head_dim / 2;
    for (int64_t p = 0; p < max_positions; ++p)
      for (int64_t j = 0; j < half; ++j) {
        const double angle = double(p) * std::pow(theta, -2.0 * double(j) / double(head_dim));
        table[size_t((p * half + j) * 2)] = std::cos(angle);
        table[size_t((p * half + j) * 2 + 1)] = std::sin(angle);
      }
    return table;
  };
}

HostTensors initial_values(const OpCase& row) {
  HostTensors host;
  for (const TensorSpec& spec : row.tensors) {
    INFO(row.name << ": tensor " << spec.name);
    REQUIRE(!host.has(spec.name));
    std::vector<double> v = spec.values ? spec.values(spec.shape.numel()) : std::vector<double>(spec.shape.numel());
    REQUIRE(int64_t(v.size()) == spec.shape.numel());
    const bool bf16 = spec.dtype == DType::BF16;
    if (spec.dtype != DType::I32)
      for (auto& x : v) x = bf16 ? double(bf16_to_f32(f32_to_bf16(float(x)))) : double(float(x));
    // The host computes in double whatever the device dtype: only ids keep their own type.
    host.tensors[spec.name] = Values{spec.dtype == DType::I32 ? DType::I32 : DType::F32, spec.shape, std::move(v)};
  }
  return host;
}

DeviceTensors::DeviceTensors(Backend& backend, const std::vector<TensorSpec>& specs, const HostTensors& initial)
    : backend_(backend) {
  for (const TensorSpec& spec : specs) {
    Tensor& t = make(spec.name, spec.shape, spec.dtype);
    if (!spec.values) continue;
    const std::vector<double>& v = initial.at(spec.name);
    if (t.dtype == DType::I32) {
      const std::vector<int32_t> ids(v.begin(), v.end());
      backend.copy_from_host(t, ids.data());
    } else if (t.dtype == DType::BF16) {
      std::vector<uint16_t> bits(v.size());
      for (size_t i = 0; i < v.size(); ++i) bits[i] = f32_to_bf16(float(v[i]));
      backend.copy_from_host(t, bits.data());
    } else {
      const std::vector<float> f(v.begin(), v.end());
      backend.copy_from_host(t, f.data());
    }
  }
}

DeviceTensors::~DeviceTensors() {
  for (auto& [name, t] : tensors_) backend_.release(t.data);
}

Tensor& DeviceTensors::operator[](const std::string& name) {
  auto it = tensors_.find(name);
  INFO("device tensor " << name);
  REQUIRE(it != tensors_.end());
  return it->second;
}

Tensor& DeviceTensors::make(const std::string& name, Shape shape, DType dtype) {
  INFO("device tensor " << name);
  REQUIRE(tensors_.count(name) == 0);
  void* data = backend_.allocate(size_t(shape.numel()) * dtype_size(dtype));
  return tensors_[name] = Tensor(data, dtype, backend_.device(), shape);
}

void DeviceTensors::result(const std::string& name, std::vector<double> values) { results_[name] = std::move(values); }

HostTensors DeviceTensors::download() {
  backend_.synchronize();
  HostTensors host;
  for (auto& [name, t] : tensors_) {
    Values v{t.dtype == DType::I32 ? DType::I32 : DType::F32, t.shape, std::vector<double>(size_t(t.numel()))};
    if (t.dtype == DType::I32) {
      std::vector<int32_t> ids(v.data.size());
      backend_.copy_to_host(ids.data(), t);
      v.data.assign(ids.begin(), ids.end());
    } else if (t.dtype == DType::F64) {  // device scalars
      backend_.copy_to_host(v.data.data(), t);
    } else if (t.dtype == DType::BF16) {
      std::vector<uint16_t> bits(v.data.size());
      backend_.copy_to_host(bits.data(), t);
      for (size_t i = 0; i < bits.size(); ++i) v.data[i] = bf16_to_f32(bits[i]);
    } else {
      std::vector<float> f(v.data.size());
      backend_.copy_to_host(f.data(), t);
      v.data.assign(f.begin(), f.end());
    }
    host.tensors[name] = std::move(v);
  }
  for (auto& [name, values] : results_) host.tensors[name] = Values{DType::F32, Shape{int64_t(values.size())}, values};
  return host;
}

}  // namespace gum::op_test
