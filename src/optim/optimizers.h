#pragma once
// Factories of the built-in optimizers, registered by name in registry.cpp.
#include <memory>

#include "optimizer_common.h"

namespace gum {

std::unique_ptr<Optimizer> make_adamw(const OptimizerContext& ctx);
std::unique_ptr<Optimizer> make_muon(const OptimizerContext& ctx);
// GaLore-style projected Adam with three estimators: top-r SVD (galore_adamw), PLUMAGE, Haar-Stiefel.
std::unique_ptr<Optimizer> make_galore_adamw(const OptimizerContext& ctx);
std::unique_ptr<Optimizer> make_plumage(const OptimizerContext& ctx);
std::unique_ptr<Optimizer> make_stiefel(const OptimizerContext& ctx);
// GUM, and its biased baseline without full-rank blocks (GaLore + Muon, the paper's counterexample).
std::unique_ptr<Optimizer> make_gum(const OptimizerContext& ctx);
std::unique_ptr<Optimizer> make_galore_muon(const OptimizerContext& ctx);

}  // namespace gum
