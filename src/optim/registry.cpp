#include <algorithm>
#include <map>
#include <mutex>

#include "gum/core/error.h"
#include "gum/core/json_util.h"
#include "gum/optim/optimizer_config_json.h"
#include "optimizers.h"

namespace gum {
namespace {

struct Registry {
  std::mutex mutex;
  std::map<std::string, OptimizerFactory> factories;
};

// Built-ins are added here, on first use, by explicit calls: a self-registering static object
// in a static library is dropped by the linker when nothing references its translation unit.
Registry& registry() {
  static Registry instance;
  static std::once_flag builtins;
  std::call_once(builtins, [] {
    instance.factories["adamw"] = make_adamw;
    instance.factories["muon"] = make_muon;
    instance.factories["galore_adamw"] = make_galore_adamw;
    instance.factories["plumage"] = make_plumage;
    instance.factories["stiefel"] = make_stiefel;
    instance.factories["gum"] = make_gum;
    instance.factories["galore_muon"] = make_galore_muon;
  });
  return instance;
}

bool uses_low_rank(const std::string& name) {
  return name == "galore_adamw" || name == "plumage" || name == "stiefel" || name == "gum" || name == "galore_muon";
}

// What needs the parameters: the rank against every projected matrix.
void validate_context(const std::string& name, const OptimizerContext& ctx) {
  if (ctx.backend == nullptr) usage_error("optimizer '", name, "': no backend given");
  validate_optimizer_config(ctx.config, "optimizer '" + name + "'");
  for (const auto& p : ctx.params) {
    if (p.param.shape.rank < 1 || !(p.grad.shape == p.param.shape))
      usage_error("optimizer '", name, "': parameter '", p.name, "' has shape ", p.param.shape.str(),
                  " and gradient shape ", p.grad.shape.str());
    if (p.is_matrix() && p.param.shape.rank != 2)
      usage_error("optimizer '", name, "': matrix parameter '", p.name, "' is not 2-D: ", p.param.shape.str());
    if (uses_low_rank(name) && p.is_matrix()) {
      const int64_t smaller = std::min(p.param.dim(0), p.param.dim(1));
      if (ctx.config.rank > smaller)
        usage_error("optimizer.rank = ", ctx.config.rank, " exceeds min(m, n) = ", smaller, " of '", p.name, "' ",
                    p.param.shape.str());
    }
  }
  if (name == "plumage" && ctx.config.projector != "svd")
    usage_error("optimizer.projector = '", ctx.config.projector,
                "' is not available for plumage: its sampling needs the full singular spectrum (use \"svd\")");
  if (name == "stiefel" && ctx.config.projector != "svd")
    usage_error("optimizer.projector = '", ctx.config.projector,
                "' does not apply to stiefel, whose projector is a random Haar-Stiefel draw (leave it \"svd\")");
}

}  // namespace

void register_optimizer(const std::string& name, OptimizerFactory factory) {
  if (name.empty() || !factory) usage_error("register_optimizer: empty name or factory");
  Registry& r = registry();
  std::lock_guard<std::mutex> lock(r.mutex);
  r.factories[name] = std::move(factory);
}

std::vector<std::string> optimizer_names() {
  Registry& r = registry();
  std::lock_guard<std::mutex> lock(r.mutex);
  std::vector<std::string> names;
  for (const auto& [name, factory] : r.factories) names.push_back(name);
  return names;
}

std::unique_ptr<Optimizer> make_optimizer(const std::string& name, const OptimizerContext& ctx) {
  OptimizerFactory factory;
  {
    Registry& r = registry();
    std::lock_guard<std::mutex> lock(r.mutex);
    auto it = r.factories.find(name);
    if (it != r.factories.end()) factory = it->second;
  }
  if (!factory) {
    const std::vector<std::string> names = optimizer_names();
    std::string list;
    for (const auto& n : names) list += (list.empty() ? "" : ", ") + n;
    const std::string hint = closest_match(name, names);
    usage_error("unknown optimizer '", name, "'", hint.empty() ? "" : " (did you mean '" + hint + "'?)",
                "; registered: ", list);
  }
  validate_context(name, ctx);
  return factory(ctx);
}

}  // namespace gum
