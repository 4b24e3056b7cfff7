// Muon (Keller Jordan, 2024, "Muon: An optimizer for hidden layers in neural networks";
// Liu et al., "Muon is Scalable for LLM Training", arXiv 2502.16982) on the matrix parameters:
//   M ← μ M + G;  U = G + μ M (Nesterov) or U = M;  O = NS5(U);  W ← W − η s O − η λ W
// with Muon's shape scale s (optimizer.muon_scale). Every other parameter gets AdamW at
// optimizer.adamw_lr (scaled by the schedule), as the reference implementations do.
#include <algorithm>

#include "newton_schulz.h"
#include "optimizer_common.h"

namespace gum {
namespace {

struct MuonOptions : MatrixOptimizerKeys, MuonUpdateKeys {
  bool nesterov = true;
};

class Muon final : public MatrixOptimizer {
 public:
  Muon(const OptimizerContext& ctx, const MuonOptions& options) : MatrixOptimizer(ctx, options), options_(options) {
    size_t workspace = 0;
    for (size_t i : declare_adamw_for_non_matrices()) {
      const OptimParam& p = params_[i];
      declare_state(i, "momentum_buffer", p.param.shape);
      const int64_t m = p.param.dim(0), n = p.param.dim(1);
      // Nesterov direction U and the orthogonalised O, then Newton-Schulz's own buffers, whose
      // space the weights' working copy (pure bf16) takes afterwards.
      workspace = std::max(workspace, static_cast<size_t>(2 * m * n) +
                                          std::max(newton_schulz_workspace_elems(m, n), opened_weights_elems(i)));
    }
    allocate(workspace);
  }

  std::string name() const override { return "muon"; }

 protected:
  void update_matrix(size_t index) override {
    const OptimParam& p = params_[index];
    ScratchPad& pad = scratch();
    const Tensor& momentum = state(index, 0);
    const float mu = options_.momentum;
    backend_.axpby(momentum, 1.0f, p.grad, mu);  // M = μ M + G
    Tensor direction = momentum;
    if (options_.nesterov) {
      direction = pad.take(p.param.shape);
      backend_.copy(direction, p.grad);
      backend_.axpby(direction, mu, momentum, 1.0f);  // U = G + μ M
    }
    Tensor orthogonal = pad.take(p.param.shape);
    const int64_t mark = pad.used();
    newton_schulz(backend_, orthogonal, direction, options_.ns_steps, pad, newton_schulz_dtype(options_));
    pad.release_to(mark);
    const float lr = info_.lr;
    const float s = muon_shape_scale(options_.muon_scale, p.param.dim(0), p.param.dim(1));
    backend_.axpby(open_weights(index, pad), -lr * s, orthogonal, decay_factor(index, lr));  // W = (1 - ηλ) W − η s O
  }

 private:
  MuonOptions options_;
};

}  // namespace

FieldTable<MuonUpdateKeys> muon_update_keys() {
  return {
      {"momentum", &MuonUpdateKeys::momentum, in_range(0, false, 1, true)},
      {"ns_steps", &MuonUpdateKeys::ns_steps, at_least(1)},
      {"ns_dtype", &MuonUpdateKeys::ns_dtype, one_of({"fp32", "bf16"})},
      {"muon_scale", &MuonUpdateKeys::muon_scale, one_of({"original", "match_adamw"})},
  };
}

OptimizerSpec muon_spec() {
  return {[](const OptimizerContext& ctx) {
            return std::make_unique<Muon>(ctx, optimizer_options<MuonOptions>(ctx.config));
          },
          optimizer_keys(join_fields<MuonOptions>(matrix_optimizer_keys(), muon_update_keys(),
                                                  FieldTable<MuonOptions>{{"nesterov", &MuonOptions::nesterov}}))};
}

}  // namespace gum
