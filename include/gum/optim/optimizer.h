#pragma once
// The optimizer plugin interface. An optimizer sees parameters (views of the
// parameter and gradient arenas, with their group and layer), owns its state, and
// updates one parameter at a time, so the trainer can update a layer as soon as its
// gradient is complete in backward (the fused per-layer update), or, under sharded
// state, only the matrices this rank owns.
#include <any>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <type_traits>
#include <typeinfo>
#include <vector>

#include "gum/backend/backend.h"
#include "gum/core/config_fields.h"
#include "gum/core/time_spent.h"
#include "gum/model/params.h"
#include "gum/optim/optimizer_config.h"

namespace gum {

struct OptimParam {
  std::string name;  // Hugging Face tensor name
  Tensor param;      // the weights on the backend's device: F32, or BF16 under Precision::Bf16Pure
  Tensor grad;       // F32 gradient, same shape
  ParamKind kind;
  int layer;
  bool weight_decay;
  bool is_matrix() const { return kind == ParamKind::Matrix; }
};

struct StepInfo {
  int64_t step = 1;    // 1-based optimizer step
  float lr = 0;        // main learning rate after the schedule
  float lr_ratio = 1;  // schedule multiplier (lr / peak lr): applied to adamw_lr for the other params
};

class Optimizer {
 public:
  virtual ~Optimizer() = default;
  virtual std::string name() const = 0;

  // Once per step before any update(): global decisions (GUM's sampling, projector refresh flags).
  virtual void begin_step(const StepInfo& info) = 0;
  // Update parameter `index` (into the vector given at construction) from its gradient.
  virtual void update(size_t index) = 0;
  // Called before the updates of `indices` (their gradients complete): work those updates need
  // that may overlap the main queue is issued here as side work (Backend::begin_side_work): the
  // low-rank optimizers' projector refreshes, each update then waiting for its own. Optional:
  // update() does what prepare() did not.
  virtual void prepare(const std::vector<size_t>& /*indices*/) {}
  // Whether, once begin_step has run, this step's prepare() and update() calls issue the same
  // device work as at any other step where this holds, reading every value that changes between
  // steps (lr, bias corrections) from device memory begin_step wrote: a recording of them
  // (Backend::record) then replays correctly at such a step, where a value passed to a kernel by
  // value would stay the recorded step's. False unless an optimizer says so.
  virtual bool update_recordable() const { return false; }

  // All state (moments, projectors, counters, sampler state) as host tensors with stable
  // names; load_state throws naming a missing or mis-shaped tensor.
  virtual void save_state(TensorMap& out) const = 0;
  virtual void load_state(const TensorMap& in) = 0;
  // Bytes of state this optimizer keeps for parameter `index` (predicted, also before any step).
  virtual size_t state_bytes(size_t index) const = 0;
  // State held for no single parameter (GUM's pool of full-rank momenta for the sampled blocks).
  virtual size_t shared_state_bytes() const { return 0; }
  // Scratch memory (Newton-Schulz, projections, SVD): not state, never checkpointed.
  virtual size_t workspace_bytes() const { return 0; }
  // The backend's op scratch its updates take (the projector refreshes' SVD and QR), reserved when
  // the optimizer was built (Backend::reserve_workspace) so that no update allocates; 0: none.
  virtual size_t op_workspace_bytes() const { return 0; }

  const std::vector<OptimParam>& params() const { return params_; }
  // Points parameter `index` at other weights of its shape (the pure-bf16 update places its fp32
  // working copies once the optimizer it wraps is built): update() reads params()[index].param when
  // it runs, never a view kept from construction.
  void set_param_weights(size_t index, const Tensor& weights);
  // Whether this rank keeps the state of parameter `index` and may update it.
  bool owns(size_t index) const { return owned_.empty() || owned_.at(index) != 0; }
  // Sum of state_bytes over all parameters plus shared_state_bytes(): this rank's state.
  size_t total_state_bytes() const;
  // Convenience: begin_step then update every parameter this rank owns.
  void step(const StepInfo& info);
  // Indices of the parameters with this layer index.
  std::vector<size_t> layer_params(int layer) const;
  // Time spent refreshing low-rank projectors (SVD, range finder, random draws, realignment of
  // the moments) since construction, inside prepare() and update() (on the cuda backend the host's
  // part: issuing the side work and its host reads); zero for optimizers without projectors.
  const TimeSpent& refresh_time() const { return refresh_time_; }

 protected:
  explicit Optimizer(std::vector<OptimParam> params) : params_(std::move(params)) {}
  std::vector<OptimParam> params_;
  std::vector<char> owned_;  // empty: every parameter is owned (see OptimizerContext::owned)
  TimeSpent refresh_time_;
};

// How an fp32 update is stored into bf16 weights (Precision::Bf16Pure; training.weight_rounding).
// Stochastic: rounded up or down with the probabilities that make the stored value's expectation
// the fp32 result (Philox bits, a function of the seed, step, parameter and element, so a resumed
// run draws the same). Kahan: a bf16 compensation per weight keeps what rounding cut off and adds
// it back before the next update (weight and compensation together hold about 16 significant
// bits). Nearest: rounding to nearest even, which loses every update smaller than half a bf16 ulp
// of its weight (the comparison curve of docs/precision.md).
enum class WeightRounding { Stochastic, Kahan, Nearest };
// "stochastic", "kahan", "nearest"; a usage error naming `context` otherwise.
WeightRounding weight_rounding_from_name(const std::string& name, const std::string& context);

struct OptimizerContext {
  Backend* backend = nullptr;
  std::vector<OptimParam> params;
  int num_layers = 0;  // transformer blocks
  OptimizerConfig config;
  uint64_t seed = 0;  // shared by all ranks: GUM's sampling draws identical decisions everywhere
  // Sharded state (optimizer.shard_states): owned[i] != 0 when this rank keeps the state of
  // params[i] and runs its update. Empty means every parameter is owned (one process, or
  // replicated state). State is allocated, saved and loaded only for owned parameters, and
  // update() of a parameter owned by another rank is an error; begin_step still runs on every
  // rank (GUM's sampler draws over all blocks).
  std::vector<char> owned;
  // Used when the parameters are BF16: the optimizer then updates an fp32 working copy of one
  // parameter at a time and stores it back with this rounding.
  WeightRounding weight_rounding = WeightRounding::Stochastic;
  // Set by the pure-bf16 update for the built-in optimizer it wraps: a matrix's fp32 working copy
  // is taken from the optimizer's workspace when its update first needs the weights, so it may
  // reuse scratch the step no longer reads (bf16_weights.cpp).
  bool weights_in_workspace = false;
};

class LlamaModel;
// The optimizer's parameters: views of the model's parameter and gradient arenas with kind and layer.
std::vector<OptimParam> make_optim_params(LlamaModel& model);

using OptimizerFactory = std::function<std::unique_ptr<Optimizer>(const OptimizerContext&)>;

// The keys an optimizer reads besides the common ones, held in a struct of its own
// (OptimizerConfig::options): the struct's table, one line per key (JSON name, member, accepted
// values; config_fields.h), and its checks that involve several keys but no model. Built by
// optimizer_keys<S>; the registry holds every optimizer's alike.
struct OptimizerKeys {
  std::vector<std::string> names;
  std::function<std::any()> defaults;                  // an S with its defaults
  std::function<bool(const std::any& options)> holds;  // whether `options` is an S
  // Reads the keys of `section` named here into `options` (an S), each against its rule.
  std::function<void(const nlohmann::json& section, std::any& options, const std::string& context)> read;
  // Every key against its rule, then the checks of several keys; usage error naming the key.
  std::function<void(const std::any& options, const std::string& context)> check;
  std::function<nlohmann::json(const std::any& options)> write;
};

template <typename S>
OptimizerKeys optimizer_keys(
    FieldTable<S> table,
    std::type_identity_t<std::function<void(const S& options, const std::string& context)>> validate = nullptr) {
  auto fields = std::make_shared<const FieldTable<S>>(std::move(table));
  OptimizerKeys keys;
  keys.names = field_keys(*fields);
  keys.defaults = [] { return std::any(S{}); };
  keys.holds = [](const std::any& options) { return options.type() == typeid(S); };
  keys.read = [fields](const nlohmann::json& section, std::any& options, const std::string& context) {
    read_fields(section, *fields, std::any_cast<S&>(options), context, "optimizer");
  };
  keys.check = [fields, validate](const std::any& options, const std::string& context) {
    const S& value = std::any_cast<const S&>(options);
    check_fields(*fields, value, context, "optimizer");
    if (validate) validate(value, context);
  };
  keys.write = [fields](const std::any& options) {
    nlohmann::json out = nlohmann::json::object();
    write_fields(*fields, std::any_cast<const S&>(options), out);
    return out;
  };
  return keys;
}

// The options of an optimizer that reads only the common keys.
struct NoOptimizerKeys {};

// A registered optimizer: its factory, which reads its keys with optimizer_options<S>, and
// those keys. Built-ins define theirs next to their class (docs/optimizers.md, "Adding an
// optimizer").
struct OptimizerSpec {
  OptimizerFactory make;
  OptimizerKeys keys = optimizer_keys<NoOptimizerKeys>({});
};

// The registry: name -> spec. The built-ins are listed in src/optim/registry.cpp.
void register_optimizer(const std::string& name, OptimizerSpec spec);
// An optimizer that reads only the common keys.
void register_optimizer(const std::string& name, OptimizerFactory factory);
// The spec registered as `name`; for an unknown name a usage error, prefixed by `context`
// when given, with the closest and all registered names.
OptimizerSpec optimizer_spec(const std::string& name, const std::string& context = "");
// Checks the config (optimizer_spec(name) and its keys), then the parameters, then builds.
std::unique_ptr<Optimizer> make_optimizer(const std::string& name, const OptimizerContext& ctx);
std::vector<std::string> optimizer_names();

// A per-group memory table (parameter kind: tensors, parameter bytes, state bytes) plus the
// shared state and workspace lines, for start-up logs and `gum_train plan`.
std::string optimizer_memory_table(const Optimizer& optimizer);

}  // namespace gum
