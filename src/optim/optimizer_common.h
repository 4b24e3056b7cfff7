#pragma once
// What every built-in optimizer shares (private to src/optim): state tensors declared per
// parameter at construction and allocated as one arena (llm.c's habit: one allocation per
// kind of tensor, named views), a scratch workspace, generic save/load of that arena, and
// the AdamW step that Muon, GaLore and GUM apply to the non-matrix parameters.
#include <functional>
#include <string>
#include <vector>

#include "gum/backend/arena.h"
#include "gum/optim/optimizer.h"
#include "low_rank.h"

namespace gum {

class ArenaOptimizer : public Optimizer {
 public:
  size_t state_bytes(size_t index) const override;
  size_t workspace_bytes() const override { return workspace_.bytes(); }
  void save_state(TensorMap& out) const override;
  void load_state(const TensorMap& in) override;
  void begin_step(const StepInfo& info) override;

  // For the pure-bf16 update (bf16_weights.cpp), which runs this optimizer on fp32 working copies
  // of the weights: whether update(index) takes scratch from the workspace (AdamW's elementwise
  // steps do not, so their working copies may live there), and the workspace grown to at least
  // `elems` F32 elements (before the first update).
  bool update_uses_workspace(size_t index) const { return adamw_slot_.at(index) < 0 && workspace_.bytes() > 0; }
  Tensor reserve_workspace(size_t elems);
  // Under OptimizerContext::weights_in_workspace: fills an F32 tensor with parameter `index`'s
  // weights (its working copy), which open_weights calls.
  void set_weight_opener(std::function<void(size_t index, const Tensor& space)> opener) { opener_ = std::move(opener); }

 protected:
  explicit ArenaOptimizer(const OptimizerContext& ctx);

  // Declares state tensor `<param name>.<suffix>` for parameter `index`, which this rank must
  // own; returns its slot, the argument of state() once allocate() has run. Slots count per
  // parameter from 0. Constructors skip the parameters other ranks own: no state, no workspace.
  int declare_state(size_t index, const std::string& suffix, Shape shape);
  // Allocates the declared state (zeroed) and a workspace of `workspace_elems` floats.
  void allocate(size_t workspace_elems);
  const Tensor& state(size_t index, int slot) const { return state_views_[index][slot]; }
  ScratchPad& scratch() {
    pad_.reset();
    return pad_;
  }
  // Counters and other non-arena state (GUM's sampler), saved next to the arena tensors.
  virtual void save_extra_state(TensorMap& out) const {}
  virtual void load_extra_state(const TensorMap& in) {}

  // AdamW state (exp_avg, exp_avg_sq) and step for a parameter, at `lr`.
  void declare_adamw_state(size_t index);
  void adamw_step(size_t index, float lr);
  // From then on begin_step writes the step's lr, 1-β1^step and 1-β2^step into a device block
  // (AdamWArgs::step_scalars; one host-to-device copy per step, before any update), which
  // adamw_step passes in place of its arguments: its `lr` must then be the step's (StepInfo::lr).
  void use_device_step_scalars();
  // Decoupled weight decay factor for parameter `index`: W <- (1 - lr·λ) W (Loshchilov & Hutter).
  float decay_factor(size_t index, float lr) const;
  // Throws naming the parameter when another rank owns it (sharded state): the start of update().
  void require_owned(size_t index) const;
  // The weights a matrix's update writes, to open at its last step: params()[index].param, or
  // under OptimizerContext::weights_in_workspace its fp32 working copy, taken from `pad` (the
  // elements opened_weights_elems counts in the workspace).
  Tensor open_weights(size_t index, ScratchPad& pad);
  size_t opened_weights_elems(size_t index) const {
    return weights_in_workspace_ ? static_cast<size_t>(params_[index].param.numel()) : 0;
  }
  // The dtype of the state tensors (optimizer.state_dtype).
  DType state_dtype() const { return config_.state_dtype == "bf16" ? DType::BF16 : DType::F32; }

  Backend& backend_;
  OptimizerConfig config_;
  uint64_t seed_;
  StepInfo info_;

 private:
  std::vector<NamedShape> layout_;
  std::vector<std::vector<size_t>> layout_of_param_;
  std::vector<std::vector<Tensor>> state_views_;
  Arena state_;
  Arena workspace_;
  ScratchPad pad_;
  Arena step_scalars_;                // F64 [3] (use_device_step_scalars), else empty
  double step_scalars_host_[3] = {};  // its source, kept until the copy has read it
  std::vector<int> adamw_slot_;
  bool weights_in_workspace_ = false;
  std::function<void(size_t index, const Tensor& space)> opener_;
};

// The key every MatrixOptimizer reads.
struct MatrixOptimizerKeys {
  float adamw_lr = -1;  // lr of the non-matrix parameters; < 0 means = lr
};
FieldTable<MatrixOptimizerKeys> matrix_optimizer_keys();

// Muon, GaLore and GUM give the 2-D block matrices their own rule and every other parameter
// AdamW at other_params_lr() (docs/optimizers.md): this class makes that split once.
class MatrixOptimizer : public ArenaOptimizer {
 public:
  void update(size_t index) final;

 protected:
  MatrixOptimizer(const OptimizerContext& ctx, const MatrixOptimizerKeys& keys)
      : ArenaOptimizer(ctx), adamw_lr_(keys.adamw_lr) {}
  // Declares AdamW state for the owned non-matrix parameters; returns the owned matrices,
  // whose state the constructor declares.
  std::vector<size_t> declare_adamw_for_non_matrices();
  virtual void update_matrix(size_t index) = 0;

 private:
  // optimizer.adamw_lr times the schedule, or the main lr when adamw_lr is negative.
  float other_params_lr() const;
  float adamw_lr_;
};

// Muon's update of a matrix, which GUM's update reads too (defined in muon.cpp).
struct MuonUpdateKeys {
  float momentum = 0.95f;
  int ns_steps = 5;
  std::string ns_dtype = "fp32";  // "fp32" | "bf16": the Newton-Schulz iterations' matrices (newton_schulz.h)
  // "original": sqrt(max(1, m/n)); "match_adamw": 0.2*sqrt(max(m,n))
  std::string muon_scale = "original";
};
FieldTable<MuonUpdateKeys> muon_update_keys();
// optimizer.ns_dtype as a DType.
inline DType newton_schulz_dtype(const MuonUpdateKeys& keys) {
  return keys.ns_dtype == "bf16" ? DType::BF16 : DType::F32;
}

// Muon's shape scale s for a [m, n] update: "original" sqrt(max(1, m/n)) (Keller Jordan 2024),
// "match_adamw" 0.2·sqrt(max(m, n)) (Liu et al., "Muon is scalable for LLM training", 2025, eq. 4).
float muon_shape_scale(const std::string& mode, int64_t m, int64_t n);

// A state tensor as saved (its own dtype), and the saved tensor `name` checked against the state
// tensor it is loaded into (same dtype and shape), else an error naming it.
HostTensor state_to_host(Backend& backend, const Tensor& t);
const HostTensor& saved_state(const TensorMap& in, const std::string& name, const Tensor& like,
                              const std::string& optimizer);

// An 8-byte integer tensor in the saved state, and reading one back with a named error.
void put_i64(TensorMap& out, const std::string& name, const std::vector<int64_t>& values);
std::vector<int64_t> get_i64(const TensorMap& in, const std::string& name, int64_t expected_count);

// A device matrix [k, r] with ones on the diagonal (selects the first r of k columns in a GEMM).
void fill_identity_prefix(Backend& backend, Tensor identity);

}  // namespace gum
