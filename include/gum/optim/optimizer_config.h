#pragma once
// The `optimizer` section: the keys every optimizer reads, with the papers' defaults
// (docs/optimizers.md), and the chosen optimizer's own keys, held in the struct it declares
// beside its factory (OptimizerSpec::keys, src/optim/<name>.cpp) with their defaults and rules.
// optimizer_config_json.h reads and writes the section.
#include <any>
#include <string>

#include "gum/core/error.h"

namespace gum {

struct OptimizerConfig {
  std::string name = "adamw";  // registry name: adamw, muon, galore_adamw, plumage, stiefel, gum, galore_muon
  float lr = 1e-3f;
  float weight_decay = 0.0f;
  // AdamW's, which every optimizer runs at least on the non-matrix parameters.
  float beta1 = 0.9f, beta2 = 0.999f, eps = 1e-8f;
  // Sharded optimizer state (ZeRO-1 by whole matrix)
  bool shard_states = false;
  // Storage of every optimizer's state tensors (moments, momenta, projectors): "fp32" | "bf16"
  // (the update computes in fp32 and rounds the state to nearest even on store).
  std::string state_dtype = "fp32";
  // The keys optimizer `name` reads beyond these: an object of the struct its OptimizerSpec
  // declares, or empty for that struct's defaults. Read it with optimizer_options<S>.
  std::any options;
};

// The chosen optimizer's own keys as its struct S (S's defaults when `config.options` is
// empty). Holding another struct is a bug: make_optimizer checks the type against the spec.
template <typename S>
const S& optimizer_options(const OptimizerConfig& config) {
  static const S defaults{};
  if (!config.options.has_value()) return defaults;
  const S* options = std::any_cast<S>(&config.options);
  GUM_CHECK(options != nullptr, "optimizer '", config.name, "': its options hold another optimizer's keys");
  return *options;
}

}  // namespace gum
