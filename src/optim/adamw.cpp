// AdamW (Loshchilov & Hutter, "Decoupled Weight Decay Regularization", ICLR 2019, Alg. 2):
// m ← β1 m + (1-β1) G, v ← β2 v + (1-β2) G², W ← W − η (m̂ / (√v̂ + ε) + λ W) with the bias
// corrections m̂ = m / (1-β1^k), v̂ = v / (1-β2^k); no decay on norm weights and biases
// (OptimParam::weight_decay). The arithmetic is the backend's fused adamw_update, which reads the
// step's lr and bias corrections from device memory (a recorded update replays them: trainer.cpp).
#include "optimizer_common.h"

namespace gum {
namespace {

class AdamW final : public ArenaOptimizer {
 public:
  explicit AdamW(const OptimizerContext& ctx) : ArenaOptimizer(ctx) {
    for (size_t i = 0; i < params_.size(); ++i)
      if (owns(i)) declare_adamw_state(i);
    allocate(0);
    use_device_step_scalars();
  }
  std::string name() const override { return "adamw"; }
  // The same kernels every step, lr and bias corrections read from the device step scalars.
  bool update_recordable() const override { return true; }
  void update(size_t index) override {
    require_owned(index);
    adamw_step(index, info_.lr);
  }
};

}  // namespace

// The common keys only (optimizer_common_keys): lr, weight_decay, beta1, beta2, eps.
OptimizerSpec adamw_spec() {
  return {[](const OptimizerContext& ctx) { return std::make_unique<AdamW>(ctx); }};
}

}  // namespace gum
