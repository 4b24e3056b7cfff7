#include "optimizer_common.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "gum/core/error.h"

namespace gum {

ArenaOptimizer::ArenaOptimizer(const OptimizerContext& ctx)
    : Optimizer(ctx.params),
      backend_(*ctx.backend),
      config_(ctx.config),
      seed_(ctx.seed),
      weights_in_workspace_(ctx.weights_in_workspace) {
  GUM_CHECK(ctx.backend != nullptr, "optimizer without a backend");
  if (!ctx.owned.empty() && ctx.owned.size() != params_.size())
    usage_error("optimizer: ownership mask of ", ctx.owned.size(), " entries for ", params_.size(), " parameters");
  owned_ = ctx.owned;
  layout_of_param_.resize(params_.size());
  adamw_slot_.assign(params_.size(), -1);
}

int ArenaOptimizer::declare_state(size_t index, const std::string& suffix, Shape shape) {
  GUM_CHECK(state_.count() == 0, "state declared after allocation");
  GUM_CHECK(owns(index), "state declared for ", params_[index].name, ", which another rank owns");
  layout_of_param_[index].push_back(layout_.size());
  layout_.push_back(NamedShape{params_[index].name + "." + suffix, shape});
  return static_cast<int>(layout_of_param_[index].size()) - 1;
}

void ArenaOptimizer::allocate(size_t workspace_elems) {
  state_ = Arena(backend_, state_dtype(), layout_);
  state_views_.resize(params_.size());
  for (size_t i = 0; i < params_.size(); ++i)
    for (size_t entry : layout_of_param_[i]) state_views_[i].push_back(state_.view(entry));
  workspace_ = Arena(backend_, DType::F32, {NamedShape{"workspace", Shape{static_cast<int64_t>(workspace_elems)}}});
  pad_ = ScratchPad(workspace_.all());
}

Tensor ArenaOptimizer::reserve_workspace(size_t elems) {
  if (elems > static_cast<size_t>(workspace_.all().numel())) {
    workspace_ = Arena(backend_, DType::F32, {NamedShape{"workspace", Shape{static_cast<int64_t>(elems)}}});
    pad_ = ScratchPad(workspace_.all());
  }
  return workspace_.all();
}

size_t ArenaOptimizer::state_bytes(size_t index) const {
  size_t bytes = 0;
  for (size_t entry : layout_of_param_.at(index)) bytes += arena_entry_bytes(layout_[entry].shape, state_dtype());
  return bytes;
}

void ArenaOptimizer::save_state(TensorMap& out) const {
  for (size_t entry = 0; entry < state_.count(); ++entry) {
    out[state_.name(entry)] = state_to_host(backend_, state_.view(entry));
  }
  save_extra_state(out);
}

void ArenaOptimizer::load_state(const TensorMap& in) {
  // Check everything before overwriting anything: a bad file leaves the state untouched.
  for (size_t entry = 0; entry < state_.count(); ++entry) {
    const std::string& name = state_.name(entry);
    saved_state(in, name, state_.view(entry), this->name());
  }
  for (size_t entry = 0; entry < state_.count(); ++entry)
    backend_.copy_from_host(state_.view(entry), in.at(state_.name(entry)).bytes.data());
  load_extra_state(in);
}

void ArenaOptimizer::declare_adamw_state(size_t index) {
  adamw_slot_[index] = declare_state(index, "exp_avg", params_[index].param.shape);
  declare_state(index, "exp_avg_sq", params_[index].param.shape);
}

void ArenaOptimizer::use_device_step_scalars() {
  step_scalars_ = Arena(backend_, DType::F64, {NamedShape{"step_scalars", Shape{3}}});
}

void ArenaOptimizer::begin_step(const StepInfo& info) {
  info_ = info;
  if (step_scalars_.count() == 0) return;
  step_scalars_host_[0] = info.lr;
  step_scalars_host_[1] = adam_bias_correction(config_.beta1, info.step);
  step_scalars_host_[2] = adam_bias_correction(config_.beta2, info.step);
  backend_.copy_from_host(step_scalars_.view(0), step_scalars_host_);
}

void ArenaOptimizer::adamw_step(size_t index, float lr) {
  const OptimParam& p = params_[index];
  const int slot = adamw_slot_[index];
  GUM_CHECK(slot >= 0, "no AdamW state for ", p.name);
  AdamWArgs args;
  args.lr = lr;
  args.beta1 = config_.beta1;
  args.beta2 = config_.beta2;
  args.eps = config_.eps;
  args.weight_decay = p.weight_decay ? config_.weight_decay : 0.0f;
  args.step = info_.step;
  if (step_scalars_.count() != 0) {
    GUM_CHECK(lr == info_.lr, "adamw_step of ", p.name, " at lr ", lr, ", not the step's ", info_.lr,
              " in the device step scalars");
    args.step_scalars = step_scalars_.view(0);
  }
  backend_.adamw_update(p.param, p.grad, state(index, slot), state(index, slot + 1), args);
}

float ArenaOptimizer::decay_factor(size_t index, float lr) const {
  return params_[index].weight_decay ? 1.0f - lr * config_.weight_decay : 1.0f;
}

Tensor ArenaOptimizer::open_weights(size_t index, ScratchPad& pad) {
  if (!weights_in_workspace_) return params_[index].param;
  GUM_CHECK(opener_ != nullptr, "no working copy for the weights of ", params_[index].name);
  Tensor space = pad.take(params_[index].param.shape);
  opener_(index, space);
  return space;
}

void ArenaOptimizer::require_owned(size_t index) const {
  if (!owns(index))
    runtime_error("optimizer '", name(), "': update of '", params_.at(index).name,
                  "', whose state another rank owns (optimizer.shard_states)");
}

float muon_shape_scale(const std::string& mode, int64_t m, int64_t n) {
  if (mode == "match_adamw") return 0.2f * std::sqrt(static_cast<float>(std::max(m, n)));
  GUM_CHECK(mode == "original", "muon_scale '", mode, "'");
  return std::sqrt(std::max(1.0f, static_cast<float>(m) / static_cast<float>(n)));
}

HostTensor state_to_host(Backend& backend, const Tensor& t) {
  HostTensor host(t.dtype, t.shape);
  backend.copy_to_host(host.bytes.data(), t);
  return host;
}

const HostTensor& saved_state(const TensorMap& in, const std::string& name, const Tensor& like,
                              const std::string& optimizer) {
  auto it = in.find(name);
  if (it == in.end()) runtime_error("optimizer '", optimizer, "' state: missing tensor '", name, "'");
  if (it->second.dtype != like.dtype || !(it->second.shape == like.shape))
    runtime_error("optimizer '", optimizer, "' state: tensor '", name, "' is ", dtype_name(it->second.dtype), " ",
                  it->second.shape.str(), ", expected ", dtype_name(like.dtype), " ", like.shape.str(),
                  " (optimizer.state_dtype must match the checkpoint's)");
  return it->second;
}

void put_i64(TensorMap& out, const std::string& name, const std::vector<int64_t>& values) {
  HostTensor t(DType::I64, Shape{static_cast<int64_t>(values.size())});
  if (!values.empty()) std::memcpy(t.bytes.data(), values.data(), values.size() * 8);
  out[name] = std::move(t);
}

std::vector<int64_t> get_i64(const TensorMap& in, const std::string& name, int64_t expected_count) {
  auto it = in.find(name);
  if (it == in.end()) runtime_error("optimizer state: missing tensor '", name, "'");
  if (it->second.dtype != DType::I64 || it->second.shape.rank != 1 ||
      (expected_count >= 0 && it->second.shape[0] != expected_count))
    runtime_error("optimizer state: tensor '", name, "' is ", dtype_name(it->second.dtype), " ", it->second.shape.str(),
                  ", expected I64 [", expected_count < 0 ? "n" : std::to_string(expected_count), "]");
  std::vector<int64_t> values(static_cast<size_t>(it->second.shape[0]));
  if (!values.empty()) std::memcpy(values.data(), it->second.bytes.data(), values.size() * 8);
  return values;
}

void fill_identity_prefix(Backend& backend, Tensor identity) {
  const int64_t k = identity.dim(0), r = identity.dim(1);
  std::vector<float> host(static_cast<size_t>(k * r), 0.0f);
  for (int64_t j = 0; j < std::min(k, r); ++j) host[static_cast<size_t>(j * r + j)] = 1.0f;
  backend.copy_from_host(identity, host.data());
}

FieldTable<MatrixOptimizerKeys> matrix_optimizer_keys() {
  const FieldRule nonzero{[](double x) { return x != 0; }, "must be positive (or negative for 'same as lr')", {}};
  return {{"adamw_lr", &MatrixOptimizerKeys::adamw_lr, nonzero}};
}

float MatrixOptimizer::other_params_lr() const { return adamw_lr_ < 0 ? info_.lr : adamw_lr_ * info_.lr_ratio; }

void MatrixOptimizer::update(size_t index) {
  require_owned(index);
  if (params_[index].is_matrix())
    update_matrix(index);
  else
    adamw_step(index, other_params_lr());
}

std::vector<size_t> MatrixOptimizer::declare_adamw_for_non_matrices() {
  std::vector<size_t> matrices;
  for (size_t i = 0; i < params_.size(); ++i) {
    if (!owns(i)) continue;
    if (params_[i].is_matrix())
      matrices.push_back(i);
    else
      declare_adamw_state(i);
  }
  return matrices;
}

}  // namespace gum
