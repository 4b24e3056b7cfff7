#pragma once
// A model's weights between its parameter arena on the device and host tensor maps (checkpoints,
// safetensors files, Hugging Face folders), matched by tensor name.
#include <string>

#include "gum/backend/arena.h"
#include "gum/backend/backend.h"
#include "gum/core/tensor.h"

namespace gum {

// Every tensor of `params` as an F32 host tensor under its name.
TensorMap weights_to_host(Backend& backend, const Arena& params);
// Copies `weights` into `params` (any float dtype, converted to F32); a missing or mis-shaped
// tensor is a runtime error naming it and `source`, and so is a NaN or Inf value. Extra tensors are
// an error too (a different model).
void load_weights(Backend& backend, const Arena& params, const TensorMap& weights, const std::string& source);

// The first F32 tensor of `weights` holding a NaN or Inf, described ("'NAME' holds NaN at element
// 12"); "" when every value is finite.
std::string non_finite_tensor(const TensorMap& weights);

}  // namespace gum
