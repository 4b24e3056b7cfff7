#include "gum/io/weights.h"

#include "gum/core/error.h"

namespace gum {

TensorMap weights_to_host(Backend& backend, const Arena& params) {
  TensorMap out;
  for (size_t i = 0; i < params.count(); ++i) {
    HostTensor host(DType::F32, params.view(i).shape);
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
    if (it->second.dtype == DType::F32) {
      backend.copy_from_host(param, it->second.bytes.data());
    } else {
      std::vector<float> values = it->second.to_f32();
      backend.copy_from_host(param, values.data());
    }
  }
  if (weights.size() != params.count()) {
    for (const auto& [name, tensor] : weights)
      if (!params.contains(name))
        runtime_error(source, ": tensor '", name, "' is not part of this model (a different config?)");
  }
}

}  // namespace gum
