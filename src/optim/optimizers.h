#pragma once
// The built-in optimizers, each defined next to its class and registered by name in
// registry.cpp, and the key groups several of them share.
#include "optimizer_common.h"

namespace gum {

OptimizerSpec adamw_spec();
OptimizerSpec muon_spec();
// GaLore-style projected Adam with three estimators: top-r SVD (galore_adamw), PLUMAGE, Haar-Stiefel.
OptimizerSpec galore_adamw_spec();
OptimizerSpec plumage_spec();
OptimizerSpec stiefel_spec();
// GUM, and its biased baseline without full-rank blocks (GaLore + Muon, the paper's counterexample).
OptimizerSpec gum_spec();
OptimizerSpec galore_muon_spec();

// Muon's momentum, Newton-Schulz steps and dtype, and shape scale, which GUM's update reads too.
FieldTable<OptimizerConfig> muon_momentum_keys();
// optimizer.ns_dtype as a DType.
inline DType ns_dtype(const OptimizerConfig& config) { return config.ns_dtype == "bf16" ? DType::BF16 : DType::F32; }

}  // namespace gum
