// GUM — GaLore Unbiased with Muon (Pan, Luo, Liu, You, Zhang, "Unbiased Gradient Low-Rank
// Projection", arXiv 2510.17802). No official code is public; docs/optimizers.md is the
// specification. Training is cut into periods of K = update_proj_gap steps. At the start of a
// period each matrix ℓ takes the projector P_ℓ (top-r singular vectors of that step's
// gradient, on the smaller side as in GaLore), and exactly γ = full_rank_layers of the N_L
// blocks are drawn without replacement for a full-rank period (marginal probability
// q = γ/N_L); with gum_sampling = "bernoulli" each block is instead full-rank independently
// with probability q (both are unbiased: only the marginal q enters the debiasing). Momentum
// restarts at zero each period; with momentum_restart = false the low-rank momentum of a block
// that stays low-rank is carried into the new basis, R ← (P_newᵀ P_old) R (a full-rank momentum
// holds the old projector's residual and always restarts). For every step of the period:
//   low-rank block:  R ← β R + (1/(1−q)) Pᵀ G,       W ← W − η s P NS5(R)
//   full-rank block: R ← β R + (1/q) (G − P Pᵀ G),   W ← W − η s NS5(R)
// (right-side projections mirrored), s Muon's shape scale of W, decoupled weight decay as in
// Muon. E over the draw of the pre-orthogonalisation input is (1−q)·P Pᵀ G/(1−q) +
// q·(G − P Pᵀ G)/q = G: the debiasing. A block is a transformer layer (sample_unit "layer",
// LISA-style) or a single matrix ("matrix").
// The draw uses one PhiloxStream seeded by OptimizerContext::seed: every rank draws the same
// blocks without communicating, and its state is its position (checkpointed).
// galore_muon is the same machinery with no full-rank block (q = 0): the biased GaLore + Muon
// baseline of the paper's linear-regression counterexample.
#include <algorithm>
#include <numeric>

#include "gum/core/error.h"
#include "gum/core/philox.h"
#include "low_rank_optimizer.h"
#include "newton_schulz.h"

namespace gum {
namespace {

constexpr uint64_t kGumSamplerStream = 0x47554d5341ull;  // "GUMSA"

// galore_muon reads the low-rank projection and Muon's update; gum also the full-rank sampling.
struct GumOptions : LowRankKeys, MuonUpdateKeys {
  int full_rank_layers = 2;           // gamma: blocks per period with a full-rank step
  std::string sample_unit = "layer";  // "layer" | "matrix"
  // "fixed" draws exactly gamma blocks per period; "bernoulli" makes each block full-rank
  // independently with q = gamma/N_L (the count varies, the marginal q is the same).
  std::string gum_sampling = "fixed";
  // Restart the low-rank momentum at zero each period (the paper), or carry it into the new
  // projector's basis when the block stays low-rank (false). GUM and galore_muon.
  bool momentum_restart = true;
};

class Gum final : public LowRankOptimizer {
 public:
  Gum(const OptimizerContext& ctx, const GumOptions& options, bool unbiased)
      : LowRankOptimizer(ctx, options), options_(options), unbiased_(unbiased), sampler_(ctx.seed, kGumSamplerStream) {
    // Blocks: the distinct layers of the matrix parameters, or each matrix on its own.
    block_of_param_.assign(params_.size(), -1);
    std::vector<int> layers;
    for (const auto& p : params_)
      if (p.is_matrix()) layers.push_back(p.layer);
    std::sort(layers.begin(), layers.end());
    layers.erase(std::unique(layers.begin(), layers.end()), layers.end());
    int matrices = 0;
    for (size_t i = 0; i < params_.size(); ++i) {
      if (!params_[i].is_matrix()) continue;
      if (options_.sample_unit == "matrix")
        block_of_param_[i] = matrices;
      else
        block_of_param_[i] =
            static_cast<int>(std::lower_bound(layers.begin(), layers.end(), params_[i].layer) - layers.begin());
      ++matrices;
    }
    num_blocks_ = options_.sample_unit == "matrix" ? matrices : static_cast<int>(layers.size());
    full_rank_count_ = unbiased_ ? options_.full_rank_layers : 0;
    if (unbiased_ && (full_rank_count_ <= 0 || full_rank_count_ >= num_blocks_))
      usage_error("optimizer.full_rank_layers = ", full_rank_count_,
                  " gives q = gamma/N_L outside (0, 1) with N_L = ", num_blocks_, " blocks (sample_unit '",
                  options_.sample_unit, "'): need 0 < full_rank_layers < ", num_blocks_);
    q_ = unbiased_ ? static_cast<double>(full_rank_count_) / num_blocks_ : 0.0;
    bernoulli_ = unbiased_ && options_.gum_sampling == "bernoulli";

    // State of the matrices this rank owns (all but under sharded state): the momenta first, in
    // parameter order, so that each block's are adjacent (see place_full_rank_momenta).
    std::vector<size_t> owned_matrices;
    for (size_t i = 0; i < params_.size(); ++i) {
      if (!owns(i)) continue;  // sharded: another rank keeps this matrix's state
      if (params_[i].is_matrix())
        owned_matrices.push_back(i);
      else
        declare_adamw_state(i);
    }
    for (size_t i : owned_matrices) declare_state(i, "momentum", shape(i).projected());
    size_t workspace = 0, refresh_workspace = 0;
    std::vector<FactorizationShape> factorizations;
    for (size_t i : owned_matrices) {
      const OptimParam& p = params_[i];
      const LowRankShape& s = shape(i);
      declare_state(i, "projector", s.projector());
      const size_t mn = static_cast<size_t>(p.param.numel());
      const size_t projected = static_cast<size_t>(s.projected().numel());
      const size_t rr = static_cast<size_t>(s.r * s.r);
      const size_t refresh = static_cast<size_t>(s.projector().numel()) + top_r_workspace_elems(i) +
                             (options_.momentum_restart ? 0 : rr + projected);
      const size_t gradient = projection_gradient_elems(i);
      // Newton-Schulz's scratch is dead at the step's last write: the weights' working copy (pure
      // bf16) takes its space.
      const size_t weights = opened_weights_elems(i);
      const size_t low_rank_step =
          gradient + projected + std::max(newton_schulz_workspace_elems(s.projected()[0], s.projected()[1]), weights);
      // The full-rank step's gradient copy and projection are dead once projected back:
      // Newton-Schulz reuses their space.
      const size_t full_rank_step =
          std::max(gradient + projected, mn + std::max(newton_schulz_workspace_elems(s.m, s.n), weights));
      refresh_workspace = std::max(refresh_workspace, refresh);
      workspace = std::max(workspace, std::max(low_rank_step, full_rank_step));
      for (const FactorizationShape& f : top_r_factorizations(i)) factorizations.push_back(f);
    }
    allocate_low_rank(workspace, refresh_workspace, factorizations);
    place_full_rank_momenta(owned_matrices);
    // Bernoulli may draw every block in one period (with probability q^N_L): a slot for each.
    const int slot_count = bernoulli_ ? num_blocks_ : full_rank_count_;
    if (slot_count > 0 && slot_elems_ > 0) {
      std::vector<NamedShape> slots;
      for (int j = 0; j < slot_count; ++j)
        slots.push_back(NamedShape{"gum.full_rank_slot." + std::to_string(j), Shape{slot_elems_}});
      pool_ = Arena(backend_, state_dtype(), slots);
    }
    slot_of_block_.assign(static_cast<size_t>(num_blocks_), -1);
    was_full_rank_.assign(static_cast<size_t>(num_blocks_), 0);
    refresh_pending_.assign(params_.size(), 0);
  }

  std::string name() const override { return unbiased_ ? "gum" : "galore_muon"; }
  size_t shared_state_bytes() const override { return pool_.bytes(); }

  void begin_step(const StepInfo& info) override {
    ArenaOptimizer::begin_step(info);
    if (period_start_ == 0 || (info.step - 1) % options_.update_proj_gap == 0) start_period(info.step);
  }

 protected:
  bool refresh_due(size_t index) const override { return refresh_pending_[index] != 0; }

  // The period's new projector, and the momenta it starts from.
  void refresh(size_t index, ScratchPad& pad) override {
    const LowRankShape& s = shape(index);
    const Tensor& momentum = state(index, 0);
    const Tensor& projector = state(index, 1);
    const bool full_rank = slot_of_block_[block_of_param_[index]] >= 0;
    const bool carry =
        !options_.momentum_restart && has_projector_[index] && !full_rank && !was_full_rank_[block_of_param_[index]];
    if (gradient_usable_for_projector(index)) {
      Tensor fresh = pad.take(s.projector());
      top_r_projector(index, fresh, pad);
      if (carry) {
        Tensor basis_change = pad.take(Shape{s.r, s.r});
        backend_.gemm(true, false, 1.0f, fresh, projector, 0.0f, basis_change);  // B = P_newᵀ P_old
        change_basis(backend_, s, basis_change, momentum, pad.take(s.projected()));
      }
      backend_.copy(projector, fresh);
    } else if (!has_projector_[index]) {
      coordinate_projector(index, projector);
    }
    has_projector_[index] = 1;
    // A full-rank block's low-rank momentum is idle and may hold full-rank momenta: left alone.
    if (!carry && !full_rank) backend_.fill(momentum, 0.0f);
    if (full_rank) backend_.fill(full_rank_momentum(index), 0.0f);
    refresh_pending_[index] = 0;
  }

  void update_matrix(size_t index) override {
    const OptimParam& p = params_[index];
    const LowRankShape& s = shape(index);
    await_refresh(index);
    ScratchPad& pad = scratch();
    const Tensor& momentum = state(index, 0);
    const Tensor& projector = state(index, 1);
    const bool full_rank = slot_of_block_[block_of_param_[index]] >= 0;
    const float beta = options_.momentum;
    const float lr = info_.lr;
    const float s_scale = muon_shape_scale(options_.muon_scale, s.m, s.n);
    if (full_rank) {
      // R ← β R + (1/q) (G − P Pᵀ G)
      const float inv_q = static_cast<float>(1.0 / q_);
      Tensor full = full_rank_momentum(index);
      const Tensor g = projection_gradient(index, pad);
      Tensor low = pad.take(s.projected());
      project(backend_, s, low, projector, g);
      backend_.axpby(full, inv_q, g, beta);
      project_back(backend_, s, full, projector, low, -inv_q, 1.0f);
      pad.reset();
      Tensor orthogonal = pad.take(p.param.shape);
      const int64_t mark = pad.used();
      newton_schulz(backend_, orthogonal, full, options_.ns_steps, pad, newton_schulz_dtype(options_));
      pad.release_to(mark);
      backend_.axpby(open_weights(index, pad), -lr * s_scale, orthogonal, decay_factor(index, lr));
    } else {
      // R ← β R + (1/(1−q)) Pᵀ G;  W ← (1 − ηλ) W − η s P NS5(R)
      project(backend_, s, momentum, projector, projection_gradient(index, pad), static_cast<float>(1.0 / (1.0 - q_)),
              beta);
      Tensor orthogonal = pad.take(s.projected());
      const int64_t mark = pad.used();
      newton_schulz(backend_, orthogonal, momentum, options_.ns_steps, pad, newton_schulz_dtype(options_));
      pad.release_to(mark);
      project_back(backend_, s, open_weights(index, pad), projector, orthogonal, -lr * s_scale,
                   decay_factor(index, lr));
    }
  }

  // Blocks taking a full-rank step in the current period (ascending).
  const std::vector<int64_t>& full_rank_blocks() const { return full_rank_blocks_; }

 protected:
  void save_extra_state(TensorMap& out) const override {
    LowRankOptimizer::save_extra_state(out);
    put_i64(out, "gum.sampler_position", {static_cast<int64_t>(sampler_.position())});
    put_i64(out, "gum.period_start", {period_start_});
    put_i64(out, "gum.full_rank_blocks", full_rank_blocks_);
    for (size_t i = 0; i < params_.size(); ++i) {
      if (!params_[i].is_matrix() || !owns(i) || slot_of_block_[block_of_param_[i]] < 0) continue;
      out[params_[i].name + ".momentum_full"] = state_to_host(backend_, full_rank_momentum(i));
      // The low-rank momentum sits idle and may hold full-rank momenta: saved as the zeros it
      // restarts from, so the file does not depend on where the full momenta live (which differs
      // with the matrices a rank owns).
      const Tensor& idle = state(i, 0);
      out[params_[i].name + ".momentum"] = HostTensor(idle.dtype, idle.shape);
    }
  }

  void load_extra_state(const TensorMap& in) override {
    LowRankOptimizer::load_extra_state(in);
    sampler_.set_position(static_cast<uint64_t>(get_i64(in, "gum.sampler_position", 1)[0]));
    period_start_ = get_i64(in, "gum.period_start", 1)[0];
    auto blocks = get_i64(in, "gum.full_rank_blocks", period_start_ > 0 && !bernoulli_ ? full_rank_count_ : -1);
    for (int64_t b : blocks)
      if (b < 0 || b >= num_blocks_)
        runtime_error("optimizer state: gum.full_rank_blocks has block ", b, " of ", num_blocks_);
    assign_slots(blocks);
    for (size_t i = 0; i < params_.size(); ++i) {
      if (!params_[i].is_matrix() || !owns(i) || slot_of_block_[block_of_param_[i]] < 0) continue;
      Tensor full = full_rank_momentum(i);
      backend_.copy_from_host(full, saved_state(in, params_[i].name + ".momentum_full", full, name()).bytes.data());
    }
    std::fill(refresh_pending_.begin(), refresh_pending_.end(), 0);
  }

 private:
  void start_period(int64_t step) {
    period_start_ = step;
    for (int b = 0; b < num_blocks_; ++b) was_full_rank_[b] = slot_of_block_[b] >= 0;
    std::vector<int64_t> chosen;
    if (bernoulli_) {
      // One uniform per block, in block order: full-rank when u < q.
      for (int b = 0; b < num_blocks_; ++b)
        if (sampler_.next_uniform() < q_) chosen.push_back(b);
    } else {
      // Partial Fisher-Yates: the first γ entries are a uniform draw without replacement.
      std::vector<int64_t> order(static_cast<size_t>(num_blocks_));
      std::iota(order.begin(), order.end(), 0);
      for (int j = 0; j < full_rank_count_; ++j) {
        const uint64_t pick = j + sampler_.next_below(static_cast<uint64_t>(num_blocks_ - j));
        std::swap(order[j], order[pick]);
      }
      chosen.assign(order.begin(), order.begin() + full_rank_count_);
      std::sort(chosen.begin(), chosen.end());
    }
    assign_slots(chosen);
    for (size_t i = 0; i < params_.size(); ++i) refresh_pending_[i] = params_[i].is_matrix();
  }

  void assign_slots(const std::vector<int64_t>& blocks) {
    full_rank_blocks_ = blocks;
    std::fill(slot_of_block_.begin(), slot_of_block_.end(), -1);
    for (size_t j = 0; j < blocks.size(); ++j) slot_of_block_[blocks[j]] = static_cast<int>(j);
  }

  // A full-rank block steps with full-rank momenta, and its low-rank momenta sit idle for the
  // period (restarted at the next refresh): the full momenta of the block's first matrices live
  // there, as many as fit (at 7B: q, k and v in the space of the seven low-rank momenta), the
  // rest in a pool slot, each as large as the largest block's rest.
  void place_full_rank_momenta(const std::vector<size_t>& owned_matrices) {
    const size_t blocks = static_cast<size_t>(num_blocks_);
    idle_momenta_.assign(blocks, Tensor());
    offset_in_block_.assign(params_.size(), 0);
    in_idle_momenta_.assign(params_.size(), 0);
    std::vector<int64_t> idle_elems(blocks, 0), idle_used(blocks, 0), slot_used(blocks, 0);
    std::vector<char> spilled(blocks, 0);
    for (size_t i : owned_matrices) {  // each block's adjacent momenta, from its first matrix's on
      const size_t b = static_cast<size_t>(block_of_param_[i]);
      const Tensor& momentum = state(i, 0);
      if (idle_momenta_[b].empty()) idle_momenta_[b] = Tensor(momentum.data, momentum.dtype, momentum.device, Shape{0});
      const auto* end = static_cast<const uint8_t*>(idle_momenta_[b].data) + idle_elems[b] * dtype_size(momentum.dtype);
      if (momentum.data == end) idle_elems[b] += momentum.numel();
    }
    for (size_t b = 0; b < blocks; ++b) idle_momenta_[b].shape = Shape{idle_elems[b]};
    for (size_t i : owned_matrices) {
      const size_t b = static_cast<size_t>(block_of_param_[i]);
      const int64_t mn = params_[i].param.numel();
      spilled[b] = spilled[b] || idle_used[b] + mn > idle_elems[b];
      int64_t& used = spilled[b] ? slot_used[b] : idle_used[b];
      in_idle_momenta_[i] = !spilled[b];
      offset_in_block_[i] = used;
      used += mn;
    }
    slot_elems_ = slot_used.empty() ? 0 : *std::max_element(slot_used.begin(), slot_used.end());
  }

  Tensor full_rank_momentum(size_t index) const {
    const int slot = slot_of_block_[block_of_param_[index]];
    GUM_CHECK(slot >= 0, params_[index].name, " is not full-rank this period");
    const Tensor& memory = in_idle_momenta_[index] ? idle_momenta_[block_of_param_[index]] : pool_.view(size_t(slot));
    return memory.flat_slice(offset_in_block_[index], params_[index].param.shape);
  }

  GumOptions options_;
  bool unbiased_;
  PhiloxStream sampler_;
  int num_blocks_ = 0;
  int full_rank_count_ = 0;
  double q_ = 0;
  bool bernoulli_ = false;
  std::vector<int> block_of_param_;
  std::vector<int64_t> offset_in_block_;  // of a matrix's full-rank momentum, in its block's slot or idle momenta
  std::vector<char> in_idle_momenta_;
  std::vector<Tensor> idle_momenta_;  // per block: its adjacent low-rank momenta as one flat tensor
  int64_t slot_elems_ = 0;
  Arena pool_;
  std::vector<int> slot_of_block_;
  std::vector<char> was_full_rank_;  // per block: full-rank in the period before the current one
  std::vector<int64_t> full_rank_blocks_;
  std::vector<char> refresh_pending_;
  int64_t period_start_ = 0;
};

// galore_muon's keys: the low-rank projection (with the range finder) and Muon's update.
FieldTable<GumOptions> galore_muon_keys() {
  return join_fields<GumOptions>(matrix_optimizer_keys(), projection_keys(), range_finder_keys(), muon_update_keys(),
                                 FieldTable<GumOptions>{{"momentum_restart", &GumOptions::momentum_restart}});
}

OptimizerFactory gum_factory(bool unbiased) {
  return [unbiased](const OptimizerContext& ctx) {
    return std::make_unique<Gum>(ctx, optimizer_options<GumOptions>(ctx.config), unbiased);
  };
}

}  // namespace

OptimizerSpec gum_spec() {
  return {gum_factory(true),
          optimizer_keys(join_fields<GumOptions>(
              galore_muon_keys(), FieldTable<GumOptions>{
                                      // γ; the constructor checks it against the number of blocks.
                                      {"full_rank_layers", &GumOptions::full_rank_layers, at_least(1)},
                                      {"sample_unit", &GumOptions::sample_unit, one_of({"layer", "matrix"})},
                                      {"gum_sampling", &GumOptions::gum_sampling, one_of({"fixed", "bernoulli"})},
                                  }))};
}

OptimizerSpec galore_muon_spec() { return {gum_factory(false), optimizer_keys(galore_muon_keys())}; }

}  // namespace gum
