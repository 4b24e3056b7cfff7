#include "gum/optim/optimizer_config_json.h"

#include <spdlog/spdlog.h>

#include <algorithm>

#include "gum/core/json_util.h"

namespace gum {
namespace {

bool has_key(const FieldTable<OptimizerConfig>& table, const std::string& key) {
  return std::any_of(table.begin(), table.end(), [&](const auto& f) { return f.key == key; });
}

// The common keys, then each registered optimizer's in name order, each key once.
FieldTable<OptimizerConfig> every_optimizer_key() {
  FieldTable<OptimizerConfig> all = optimizer_common_keys();
  for (const auto& name : optimizer_names())
    for (const auto& f : optimizer_spec(name).keys)
      if (!has_key(all, f.key)) all.push_back(f);
  return all;
}

// Names of the registered optimizers that read `key`, for the message about an ignored key.
std::string optimizers_reading(const std::string& key) {
  std::string list;
  for (const auto& name : optimizer_names())
    if (has_key(optimizer_spec(name).keys, key)) list += (list.empty() ? "" : ", ") + name;
  return list;
}

}  // namespace

const FieldTable<OptimizerConfig>& optimizer_common_keys() {
  static const FieldTable<OptimizerConfig> keys = {
      {"name", &OptimizerConfig::name},
      {"lr", &OptimizerConfig::lr, positive()},
      {"weight_decay", &OptimizerConfig::weight_decay, at_least(0)},
      {"beta1", &OptimizerConfig::beta1, in_range(0, false, 1, true)},
      {"beta2", &OptimizerConfig::beta2, in_range(0, false, 1, true)},
      {"eps", &OptimizerConfig::eps, positive()},
      {"shard_states", &OptimizerConfig::shard_states},
      {"state_dtype", &OptimizerConfig::state_dtype, one_of({"fp32", "bf16"})},
  };
  return keys;
}

void validate_optimizer_config(const OptimizerSpec& spec, const OptimizerConfig& config, const std::string& context) {
  check_fields(optimizer_common_keys(), config, context, "optimizer");
  check_fields(spec.keys, config, context, "optimizer");
  if (spec.validate) spec.validate(config, context);
}

OptimizerConfig optimizer_config_from_json(const nlohmann::json& section, const std::string& context) {
  if (!section.is_object()) usage_error(context, ": 'optimizer' must be a JSON object, got ", section.dump());
  OptimizerConfig c;
  read_key(section, "name", c.name, context, "optimizer");
  const OptimizerSpec spec = optimizer_spec(c.name, context + ": optimizer.name");
  const FieldTable<OptimizerConfig> all = every_optimizer_key();
  for (const auto& item : section.items()) {
    if (has_key(all, item.key())) continue;
    // The hint prefers the chosen optimizer's keys, then any optimizer's.
    std::vector<std::string> own = field_keys(optimizer_common_keys());
    for (const auto& f : spec.keys) own.push_back(f.key);
    std::string hint = closest_match(item.key(), own);
    if (hint.empty()) hint = closest_match(item.key(), field_keys(all));
    usage_error(context, ": unknown key 'optimizer.", item.key(), "' for optimizer '", c.name, "'",
                hint.empty() ? std::string() : " (did you mean 'optimizer." + hint + "'?)");
  }
  read_fields(section, all, c, context, "optimizer");
  validate_optimizer_config(spec, c, context);

  const OptimizerConfig defaults;
  for (const auto& f : all) {
    if (!section.contains(f.key) || has_key(optimizer_common_keys(), f.key) || has_key(spec.keys, f.key)) continue;
    if (field_value(f, c) == field_value(f, defaults)) continue;
    spdlog::warn("{}: optimizer.{} = {} is ignored: optimizer '{}' does not read it (read by {})", context, f.key,
                 field_value(f, c).dump(), c.name, optimizers_reading(f.key));
  }
  return c;
}

nlohmann::json to_json(const OptimizerConfig& config) {
  nlohmann::json j = nlohmann::json::object();
  write_fields(every_optimizer_key(), config, j);
  return j;
}

}  // namespace gum
