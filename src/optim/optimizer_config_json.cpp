#include "gum/optim/optimizer_config_json.h"

#include <algorithm>
#include <cmath>

#include "gum/core/json_util.h"

namespace gum {

std::vector<std::string> optimizer_config_keys() {
  return {"name",
          "lr",
          "weight_decay",
          "beta1",
          "beta2",
          "eps",
          "adamw_lr",
          "momentum",
          "nesterov",
          "ns_steps",
          "muon_scale",
          "rank",
          "update_proj_gap",
          "scale",
          "projector",
          "power_iterations",
          "oversampling",
          "full_rank_layers",
          "sample_unit",
          "shard_states"};
}

static void require_one_of(const std::string& value, const std::vector<std::string>& valid, const std::string& context,
                           const std::string& key) {
  if (std::find(valid.begin(), valid.end(), value) != valid.end()) return;
  std::string list;
  for (const auto& v : valid) list += (list.empty() ? "\"" : ", \"") + v + "\"";
  const std::string hint = closest_match(value, valid);
  usage_error(context, ": optimizer.", key, " = \"", value, "\" is not one of ", list,
              hint.empty() ? "" : " (did you mean \"" + hint + "\"?)");
}

void validate_optimizer_config(const OptimizerConfig& c, const std::string& context) {
  auto fail = [&](const std::string& key, const auto& value, const char* rule) {
    usage_error(context, ": optimizer.", key, " = ", value, " ", rule);
  };
  if (!(c.lr > 0) || !std::isfinite(c.lr)) fail("lr", c.lr, "must be a positive number");
  if (!(c.weight_decay >= 0) || !std::isfinite(c.weight_decay)) fail("weight_decay", c.weight_decay, "must be >= 0");
  if (!(c.beta1 >= 0 && c.beta1 < 1)) fail("beta1", c.beta1, "must be in [0, 1)");
  if (!(c.beta2 >= 0 && c.beta2 < 1)) fail("beta2", c.beta2, "must be in [0, 1)");
  if (!(c.eps > 0)) fail("eps", c.eps, "must be > 0");
  if (!std::isfinite(c.adamw_lr) || c.adamw_lr == 0)
    fail("adamw_lr", c.adamw_lr, "must be positive (or negative for 'same as lr')");
  if (!(c.momentum >= 0 && c.momentum < 1)) fail("momentum", c.momentum, "must be in [0, 1)");
  if (c.ns_steps < 1) fail("ns_steps", c.ns_steps, "must be >= 1");
  if (c.rank < 1) fail("rank", c.rank, "must be >= 1");
  if (c.update_proj_gap < 1) fail("update_proj_gap", c.update_proj_gap, "must be >= 1");
  if (!(c.scale > 0) || !std::isfinite(c.scale)) fail("scale", c.scale, "must be a positive number");
  if (c.power_iterations < 0) fail("power_iterations", c.power_iterations, "must be >= 0");
  if (c.oversampling < 0) fail("oversampling", c.oversampling, "must be >= 0");
  if (c.full_rank_layers < 1) fail("full_rank_layers", c.full_rank_layers, "must be >= 1 (q = gamma/N_L in (0, 1))");
  require_one_of(c.muon_scale, {"original", "match_adamw"}, context, "muon_scale");
  require_one_of(c.projector, {"svd", "randomized"}, context, "projector");
  require_one_of(c.sample_unit, {"layer", "matrix"}, context, "sample_unit");
}

OptimizerConfig optimizer_config_from_json(const nlohmann::json& section, const std::string& context) {
  reject_unknown_keys(section, optimizer_config_keys(), context, "optimizer");
  OptimizerConfig c;
  const std::string path = "optimizer";
  read_key(section, "name", c.name, context, path);
  read_key(section, "lr", c.lr, context, path);
  read_key(section, "weight_decay", c.weight_decay, context, path);
  read_key(section, "beta1", c.beta1, context, path);
  read_key(section, "beta2", c.beta2, context, path);
  read_key(section, "eps", c.eps, context, path);
  read_key(section, "adamw_lr", c.adamw_lr, context, path);
  read_key(section, "momentum", c.momentum, context, path);
  read_key(section, "nesterov", c.nesterov, context, path);
  read_key(section, "ns_steps", c.ns_steps, context, path);
  read_key(section, "muon_scale", c.muon_scale, context, path);
  read_key(section, "rank", c.rank, context, path);
  read_key(section, "update_proj_gap", c.update_proj_gap, context, path);
  read_key(section, "scale", c.scale, context, path);
  read_key(section, "projector", c.projector, context, path);
  read_key(section, "power_iterations", c.power_iterations, context, path);
  read_key(section, "oversampling", c.oversampling, context, path);
  read_key(section, "full_rank_layers", c.full_rank_layers, context, path);
  read_key(section, "sample_unit", c.sample_unit, context, path);
  read_key(section, "shard_states", c.shard_states, context, path);
  validate_optimizer_config(c, context);
  return c;
}

nlohmann::json to_json(const OptimizerConfig& c) {
  return nlohmann::json{{"name", c.name},
                        {"lr", c.lr},
                        {"weight_decay", c.weight_decay},
                        {"beta1", c.beta1},
                        {"beta2", c.beta2},
                        {"eps", c.eps},
                        {"adamw_lr", c.adamw_lr},
                        {"momentum", c.momentum},
                        {"nesterov", c.nesterov},
                        {"ns_steps", c.ns_steps},
                        {"muon_scale", c.muon_scale},
                        {"rank", c.rank},
                        {"update_proj_gap", c.update_proj_gap},
                        {"scale", c.scale},
                        {"projector", c.projector},
                        {"power_iterations", c.power_iterations},
                        {"oversampling", c.oversampling},
                        {"full_rank_layers", c.full_rank_layers},
                        {"sample_unit", c.sample_unit},
                        {"shard_states", c.shard_states}};
}

}  // namespace gum
