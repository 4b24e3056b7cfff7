// Pure bf16 weights (Precision::Bf16Pure, docs/precision.md): there is no fp32 copy of the model.
// The optimizer the user chose runs unchanged on an fp32 working copy of one parameter at a time:
// the bf16 weights (plus the Kahan compensation) are widened into it, the optimizer updates it in
// fp32, and the result is stored back into bf16 with the chosen WeightRounding. Updates run one at
// a time, and the working copies live in the wrapped optimizer's workspace: the parameters whose
// update takes no scratch (AdamW's elementwise steps: embedding, head, norms) have theirs filled
// there before the update, the workspace grown to fit them; a matrix's is opened by its update at
// its last write, in scratch the step no longer reads (ArenaOptimizer::open_weights).
#include "bf16_weights.h"

#include <algorithm>

#include "gum/core/error.h"
#include "optimizer_common.h"

namespace gum {

namespace {

// The Philox key of stochastic rounding, apart from the weights' initialisation (which uses the
// seed itself): the rounding bits of step k, parameter i are stream (k << 32) + i of seed ^ this.
constexpr uint64_t kRoundingKey = 0x5352'4f55'4e44'4247ull;  // "SROUNDBG"

class Bf16WeightUpdate final : public Optimizer {
 public:
  Bf16WeightUpdate(const OptimizerContext& ctx,
                   const std::function<std::unique_ptr<Optimizer>(const OptimizerContext&)>& make_inner)
      : Optimizer(ctx.params), backend_(*ctx.backend), rounding_(ctx.weight_rounding), seed_(ctx.seed) {
    owned_ = ctx.owned;
    std::vector<NamedShape> compensation_layout;
    for (size_t i = 0; i < params_.size(); ++i) {
      const OptimParam& p = params_[i];
      if (p.param.dtype != DType::BF16)
        usage_error("optimizer: parameter '", p.name, "' is ", dtype_name(p.param.dtype),
                    "; pure bf16 weights need every parameter in BF16");
      if (owns(i) && rounding_ == WeightRounding::Kahan)
        compensation_layout.push_back({p.name + ".weight_compensation", p.param.shape});
    }
    if (!compensation_layout.empty()) compensation_ = Arena(backend_, DType::BF16, compensation_layout);
    // The wrapped optimizer is built on fp32 stand-ins (construction reads shapes only), then
    // pointed at the working copies. A built-in one opens a matrix's working copy in its workspace
    // at the update's last step (ArenaOptimizer::open_weights); the parameters AdamW updates use no
    // workspace, so theirs lives there from the start. Any other optimizer gets one buffer.
    OptimizerContext inner_ctx = ctx;
    inner_ctx.weights_in_workspace = true;
    for (OptimParam& p : inner_ctx.params) p.param = Tensor(nullptr, DType::F32, p.param.device, p.param.shape);
    inner_ = make_inner(inner_ctx);
    auto* arena_inner = dynamic_cast<ArenaOptimizer*>(inner_.get());
    opened_.assign(params_.size(), 0);
    int64_t largest_own = 0, largest_shared = 0;
    for (size_t i = 0; i < params_.size(); ++i) {
      if (!owns(i)) continue;  // never updated here: it keeps its stand-in
      opened_[i] = arena_inner && arena_inner->update_uses_workspace(i);
      if (opened_[i]) continue;
      int64_t& largest = arena_inner ? largest_shared : largest_own;
      largest = std::max(largest, params_[i].param.numel());
    }
    if (largest_own > 0) working_ = Arena(backend_, DType::F32, {NamedShape{"working_weights", Shape{largest_own}}});
    const Tensor buffer =
        arena_inner ? arena_inner->reserve_workspace(static_cast<size_t>(largest_shared)) : working_.all();
    for (size_t i = 0; i < params_.size(); ++i)
      if (owns(i) && !opened_[i]) inner_->set_param_weights(i, buffer.flat_slice(0, params_[i].param.shape));
    if (arena_inner)
      arena_inner->set_weight_opener([this](size_t index, const Tensor& space) {
        widen(index, space);
        open_ = space;
      });
  }

  std::string name() const override { return inner_->name(); }

  void begin_step(const StepInfo& info) override {
    step_ = info.step;
    inner_->begin_step(info);
  }

  void prepare(const std::vector<size_t>& indices) override { inner_->prepare(indices); }

  void update(size_t index) override {
    const OptimParam& p = params_.at(index);
    open_ = Tensor();
    if (!opened_.at(index)) widen(index, inner_->params()[index].param);
    inner_->update(index);
    const Tensor work = opened_[index] ? open_ : inner_->params()[index].param;
    GUM_CHECK(work.data != nullptr, "the update of ", p.name, " never opened its weights");
    switch (rounding_) {
      case WeightRounding::Nearest:
        backend_.copy(p.param, work);
        break;
      case WeightRounding::Stochastic:
        backend_.round_stochastic(p.param, work, seed_ ^ kRoundingKey, (uint64_t(step_) << 32) + index);
        break;
      case WeightRounding::Kahan: {
        const Tensor& c = compensation(index);
        backend_.copy(p.param, work);                // w = bf16(x)
        backend_.axpby(work, -1.0f, p.param, 1.0f);  // x - w, exact in fp32
        backend_.copy(c, work);                      // c = bf16(x - w)
        break;
      }
    }
  }

  void save_state(TensorMap& out) const override {
    inner_->save_state(out);
    for (size_t i = 0; i < compensation_.count(); ++i)
      out[compensation_.name(i)] = state_to_host(backend_, compensation_.view(i));
  }

  void load_state(const TensorMap& in) override {
    for (size_t i = 0; i < compensation_.count(); ++i)
      saved_state(in, compensation_.name(i), compensation_.view(i), name());
    inner_->load_state(in);
    for (size_t i = 0; i < compensation_.count(); ++i)
      backend_.copy_from_host(compensation_.view(i), in.at(compensation_.name(i)).bytes.data());
  }

  size_t state_bytes(size_t index) const override {
    const std::string name = params_.at(index).name + ".weight_compensation";
    return inner_->state_bytes(index) +
           (compensation_.contains(name) ? arena_entry_bytes(compensation_.view(name).shape, DType::BF16) : 0);
  }
  size_t shared_state_bytes() const override { return inner_->shared_state_bytes(); }
  size_t workspace_bytes() const override { return inner_->workspace_bytes() + working_.bytes(); }
  size_t op_workspace_bytes() const override { return inner_->op_workspace_bytes(); }

 private:
  // The working copy of parameter `index`: its bf16 weights, exact in fp32, plus the compensation.
  void widen(size_t index, const Tensor& work) {
    backend_.copy(work, params_[index].param);
    if (rounding_ == WeightRounding::Kahan) backend_.add(work, work, compensation(index));
  }

  const Tensor& compensation(size_t index) const {
    return compensation_.view(params_[index].name + ".weight_compensation");
  }

  Backend& backend_;
  WeightRounding rounding_;
  uint64_t seed_;
  int64_t step_ = 1;
  Arena working_, compensation_;
  std::vector<char> opened_;  // per parameter: its working copy is opened inside the wrapped update
  Tensor open_;               // the copy the current update opened
  std::unique_ptr<Optimizer> inner_;
};

}  // namespace

WeightRounding weight_rounding_from_name(const std::string& name, const std::string& context) {
  if (name == "stochastic") return WeightRounding::Stochastic;
  if (name == "kahan") return WeightRounding::Kahan;
  if (name == "nearest") return WeightRounding::Nearest;
  usage_error(context, ": unknown weight rounding '", name, "' (supported: stochastic, kahan, nearest)");
}

bool has_bf16_weights(const OptimizerContext& ctx) {
  return std::any_of(ctx.params.begin(), ctx.params.end(),
                     [](const OptimParam& p) { return p.param.dtype == DType::BF16; });
}

std::unique_ptr<Optimizer> make_bf16_weight_update(
    const OptimizerContext& ctx, const std::function<std::unique_ptr<Optimizer>(const OptimizerContext&)>& make_inner) {
  return std::make_unique<Bf16WeightUpdate>(ctx, make_inner);
}

}  // namespace gum
