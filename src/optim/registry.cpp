#include <map>
#include <mutex>

#include "bf16_weights.h"
#include "gum/core/error.h"
#include "gum/core/json_util.h"
#include "gum/optim/optimizer_config_json.h"

// The built-in optimizers, one line each: NAME registers NAME_spec(), defined beside the
// optimizer's class in src/optim/NAME.cpp or its family's file.
#define GUM_BUILTIN_OPTIMIZERS(X) \
  X(adamw)                        \
  X(muon)                         \
  X(galore_adamw)                 \
  X(plumage)                      \
  X(stiefel)                      \
  X(gum)                          \
  X(galore_muon)

namespace gum {

#define GUM_DECLARE_SPEC(name) OptimizerSpec name##_spec();
GUM_BUILTIN_OPTIMIZERS(GUM_DECLARE_SPEC)
#undef GUM_DECLARE_SPEC

namespace {

struct Registry {
  std::mutex mutex;
  std::map<std::string, OptimizerSpec> specs;
};

// Built-ins are added here, on first use, by explicit calls: a self-registering static object
// in a static library is dropped by the linker when nothing references its translation unit.
Registry& registry() {
  static Registry instance;
  static std::once_flag builtins;
  std::call_once(builtins, [] {
#define GUM_REGISTER_SPEC(name) instance.specs[#name] = name##_spec();
    GUM_BUILTIN_OPTIMIZERS(GUM_REGISTER_SPEC)
#undef GUM_REGISTER_SPEC
  });
  return instance;
}

// What needs the parameters beyond each optimizer's own checks (its constructor checks the
// rest: the rank against every projected matrix, GUM's blocks).
void validate_context(const std::string& name, const OptimizerSpec& spec, const OptimizerContext& ctx) {
  if (ctx.backend == nullptr) usage_error("optimizer '", name, "': no backend given");
  validate_optimizer_config(spec, ctx.config, "optimizer '" + name + "'");
  for (const auto& p : ctx.params) {
    if (p.param.shape.rank < 1 || !(p.grad.shape == p.param.shape))
      usage_error("optimizer '", name, "': parameter '", p.name, "' has shape ", p.param.shape.str(),
                  " and gradient shape ", p.grad.shape.str());
    if (p.is_matrix() && p.param.shape.rank != 2)
      usage_error("optimizer '", name, "': matrix parameter '", p.name, "' is not 2-D: ", p.param.shape.str());
  }
}

}  // namespace

void register_optimizer(const std::string& name, OptimizerSpec spec) {
  const OptimizerKeys& k = spec.keys;
  if (name.empty() || !spec.make || !k.defaults || !k.holds || !k.read || !k.check || !k.write)
    usage_error("register_optimizer: empty name, factory or keys (build the keys with optimizer_keys<S>)");
  for (const auto& key : k.names)
    for (const auto& common : optimizer_common_keys())
      if (key == common.key)
        usage_error("register_optimizer: optimizer '", name, "' declares the common key '", key, "'");
  Registry& r = registry();
  std::lock_guard<std::mutex> lock(r.mutex);
  r.specs[name] = std::move(spec);
}

void register_optimizer(const std::string& name, OptimizerFactory factory) {
  register_optimizer(name, OptimizerSpec{std::move(factory)});
}

std::vector<std::string> optimizer_names() {
  Registry& r = registry();
  std::lock_guard<std::mutex> lock(r.mutex);
  std::vector<std::string> names;
  for (const auto& [name, spec] : r.specs) names.push_back(name);
  return names;
}

OptimizerSpec optimizer_spec(const std::string& name, const std::string& context) {
  {
    Registry& r = registry();
    std::lock_guard<std::mutex> lock(r.mutex);
    auto it = r.specs.find(name);
    if (it != r.specs.end()) return it->second;
  }
  const std::vector<std::string> names = optimizer_names();
  std::string list;
  for (const auto& n : names) list += (list.empty() ? "" : ", ") + n;
  const std::string hint = closest_match(name, names);
  usage_error(context, context.empty() ? "" : ": ", "unknown optimizer '", name, "'",
              hint.empty() ? "" : " (did you mean '" + hint + "'?)", "; registered: ", list);
}

std::unique_ptr<Optimizer> make_optimizer(const std::string& name, const OptimizerContext& ctx) {
  const OptimizerSpec spec = optimizer_spec(name);
  validate_context(name, spec, ctx);
  if (has_bf16_weights(ctx)) return make_bf16_weight_update(ctx, spec.make);
  return spec.make(ctx);
}

}  // namespace gum
