#pragma once
// The values of every optimizer hyperparameter, with the papers' defaults (docs/optimizers.md).
// Which keys an optimizer reads, and the values each accepts, is declared with its factory
// (OptimizerSpec in src/optim/<name>.cpp); optimizer_config_json.h reads and writes the section.
#include <string>

namespace gum {

struct OptimizerConfig {
  std::string name = "adamw";  // registry name: adamw, muon, galore_adamw, plumage, stiefel, gum, galore_muon
  float lr = 1e-3f;
  float weight_decay = 0.0f;
  // AdamW (and the AdamW used for non-matrix params by the other optimizers)
  float beta1 = 0.9f, beta2 = 0.999f, eps = 1e-8f;
  float adamw_lr = -1;  // lr of non-matrix params under muon/galore/gum; < 0 means = lr
  // Muon / GUM
  float momentum = 0.95f;
  bool nesterov = true;
  int ns_steps = 5;
  std::string muon_scale = "original";  // "original": sqrt(max(1, m/n)); "match_adamw": 0.2*sqrt(max(m,n))
  // GaLore family
  int rank = 128;
  int update_proj_gap = 200;
  float scale = 0.25f;            // GaLore's alpha
  std::string projector = "svd";  // "svd" | "randomized"
  int power_iterations = 1;       // randomized range finder
  int oversampling = 8;           // randomized range finder
  // GUM
  int full_rank_layers = 2;           // gamma: blocks per period with a full-rank step
  std::string sample_unit = "layer";  // "layer" | "matrix"
  // GUM: "fixed" draws exactly gamma blocks per period; "bernoulli" makes each block full-rank
  // independently with q = gamma/N_L (the count varies, the marginal q is the same).
  std::string gum_sampling = "fixed";
  // GUM / galore_muon: restart the low-rank momentum at zero each period (the paper), or carry it
  // into the new projector's basis when the block stays low-rank (false).
  bool momentum_restart = true;
  // stiefel: "haar" (isotropic, (d/r) P Pᵀ G) or "optimal" (eigenbasis of a gradient second-moment
  // estimate, water-filling inclusion probabilities); the estimate is "period" (the previous
  // period's gradients) or "gradient" (the refresh step's alone).
  std::string stiefel_sampling = "haar";
  std::string stiefel_covariance = "period";
  // Sharded optimizer state (ZeRO-1 by whole matrix)
  bool shard_states = false;
};

}  // namespace gum
