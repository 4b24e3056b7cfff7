#pragma once
// The optimizer for pure bf16 weights (private to src/optim; bf16_weights.cpp).
#include <functional>
#include <memory>

#include "gum/optim/optimizer.h"

namespace gum {

// Whether any parameter of `ctx` is stored in BF16 (then all must be).
bool has_bf16_weights(const OptimizerContext& ctx);
// `make_inner`'s optimizer run on an fp32 working copy of each BF16 parameter, stored back with
// ctx.weight_rounding; its state plus the Kahan compensations (when chosen) are the state.
std::unique_ptr<Optimizer> make_bf16_weight_update(
    const OptimizerContext& ctx, const std::function<std::unique_ptr<Optimizer>(const OptimizerContext&)>& make_inner);

}  // namespace gum
