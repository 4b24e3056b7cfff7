#include "gum/io/weights.h"

#include <cmath>

#include "gum/core/error.h"

namespace gum {

namespace {

// "" when all n values are finite, else what the first other one is and where: "NaN at element 12".
std::string first_non_finite(const float* values, size_t n) {
  for (size_t i = 0; i < n; ++i)
    if (!std::isfinite(values[i]))
      return std::string(std::isnan(values[i]) ? "NaN" : "Inf") + " at element " + std::to_string(i);
  return "";
}

}  // namespace

std::string non_finite_tensor(const TensorMap& weights) {
  for (const auto& [name, tensor] : weights) {
    if (tensor.dtype != DType::F32 && tensor.dtype != DType::BF16) continue;
    std::vector<float> widened;
    const float* values = reinterpret_cast<const float*>(tensor.bytes.data());
    if (tensor.dtype == DType::BF16) {
      widened = tensor.to_f32();
      values = widened.data();
    }
    const std::string where = first_non_finite(values, static_cast<size_t>(tensor.numel()));
    if (!where.empty()) return "'" + name + "' holds " + where;
  }
  return "";
}

TensorMap weights_to_host(Backend& backend, const Arena& params) {
  TensorMap out;
  for (size_t i = 0; i < params.count(); ++i) {
    HostTensor host(params.view(i).dtype, params.view(i).shape);
    backend.copy_to_host(host.bytes.data(), params.view(i));
    out.emplace(params.name(i), std::move(host));
  }
  return out;
}

void load_weights(Backend& backend, const Arena& params, const TensorMap& weights, const std::string& source) {
  for (size_t i = 0; i < params.count(); ++i) {
    const std::string& name = params.name(i);
    const Tensor& param = params.view(i);
    auto it = weights.find(name);
    if (it == weights.end()) runtime_error(source, ": tensor '", name, "' is missing");
    if (!(it->second.shape == param.shape))
      runtime_error(source, ": tensor '", name, "' has shape ", it->second.shape.str(), ", the model needs ",
                    param.shape.str());
    std::vector<float> converted;
    const float* values = reinterpret_cast<const float*>(it->second.bytes.data());
    if (it->second.dtype != DType::F32) {
      converted = it->second.to_f32();
      values = converted.data();
    }
    const std::string bad = first_non_finite(values, static_cast<size_t>(param.numel()));
    if (!bad.empty()) runtime_error(source, ": tensor '", name, "' holds ", bad, ": these weights are unusable");
    if (param.dtype == DType::BF16) {  // pure bf16 weights: rounded to nearest even (exact from BF16)
      std::vector<uint16_t> bits(static_cast<size_t>(param.numel()));
      for (size_t j = 0; j < bits.size(); ++j) bits[j] = f32_to_bf16(values[j]);
      backend.copy_from_host(param, bits.data());
    } else {
      backend.copy_from_host(param, values);
    }
  }
  if (weights.size() != params.count()) {
    for (const auto& [name, tensor] : weights)
      if (!params.contains(name))
        runtime_error(source, ": tensor '", name, "' is not part of this model (a different config?)");
  }
}

}  // namespace gum
