// Pure bf16 weights (Precision::Bf16Pure, docs/precision.md): there is no fp32 copy of the model.
// The optimizer the user chose runs unchanged on an fp32 working copy of one parameter at a time:
// the bf16 weights (plus the Kahan compensation) are widened into it, the optimizer updates it in
// fp32, and the result is stored back into bf16 with the chosen WeightRounding. The working copy
// is one buffer as large as the largest parameter, shared by all (updates run one at a time).
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
    int64_t largest = 0;
    std::vector<NamedShape> compensation_layout;
    for (size_t i = 0; i < params_.size(); ++i) {
      const OptimParam& p = params_[i];
      if (p.param.dtype != DType::BF16)
        usage_error("optimizer: parameter '", p.name, "' is ", dtype_name(p.param.dtype),
                    "; pure bf16 weights need every parameter in BF16");
      if (!owns(i)) continue;
      largest = std::max(largest, p.param.numel());
      if (rounding_ == WeightRounding::Kahan)
        compensation_layout.push_back({p.name + ".weight_compensation", p.param.shape});
    }
    working_ = Arena(backend_, DType::F32, {NamedShape{"working_weights", Shape{std::max<int64_t>(largest, 1)}}});
    if (!compensation_layout.empty()) compensation_ = Arena(backend_, DType::BF16, compensation_layout);
    OptimizerContext inner_ctx = ctx;
    for (OptimParam& p : inner_ctx.params) p.param = working_.all().flat_slice(0, p.param.shape);
    inner_ = make_inner(inner_ctx);
  }

  std::string name() const override { return inner_->name(); }

  void begin_step(const StepInfo& info) override {
    step_ = info.step;
    inner_->begin_step(info);
  }

  void update(size_t index) override {
    const OptimParam& p = params_.at(index);
    const Tensor& work = inner_->params()[index].param;
    backend_.copy(work, p.param);  // exact: every bf16 value is an fp32 value
    if (rounding_ == WeightRounding::Kahan) backend_.add(work, work, compensation(index));
    inner_->update(index);
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

 private:
  const Tensor& compensation(size_t index) const {
    return compensation_.view(params_[index].name + ".weight_compensation");
  }

  Backend& backend_;
  WeightRounding rounding_;
  uint64_t seed_;
  int64_t step_ = 1;
  Arena working_, compensation_;
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
