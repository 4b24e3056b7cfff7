#include "gum/optim/optimizer_config_json.h"

#include <spdlog/spdlog.h>

#include <algorithm>

#include "gum/core/json_util.h"

namespace gum {
namespace {

bool contains(const std::vector<std::string>& keys, const std::string& key) {
  return std::find(keys.begin(), keys.end(), key) != keys.end();
}

// `config.options`, or the spec's defaults when it is empty.
std::any options_or_defaults(const OptimizerSpec& spec, const OptimizerConfig& config) {
  return config.options.has_value() ? config.options : spec.keys.defaults();
}

// Names of the registered optimizers that read `key`, for the message about an ignored key.
std::string optimizers_reading(const std::string& key) {
  std::string list;
  for (const auto& name : optimizer_names())
    if (contains(optimizer_spec(name).keys.names, key)) list += (list.empty() ? "" : ", ") + name;
  return list;
}

// `key` of the section, which optimizer `chosen` does not read. Another optimizer's key is
// checked by that optimizer's rule and reported when it is not at its default; any other key
// is an error naming `chosen` and the closest key, its own keys preferred.
void check_foreign_key(const std::string& key, const nlohmann::json& value, const OptimizerSpec& chosen,
                       const std::string& chosen_name, const std::string& context) {
  for (const auto& name : optimizer_names()) {
    const OptimizerSpec other = optimizer_spec(name);
    if (!contains(other.keys.names, key)) continue;
    const std::any defaults = other.keys.defaults();
    std::any read = defaults;
    other.keys.read(nlohmann::json{{key, value}}, read, context);
    if (other.keys.write(read).at(key) != other.keys.write(defaults).at(key))
      spdlog::warn("{}: optimizer.{} = {} is ignored: optimizer '{}' does not read it (read by {})", context, key,
                   value.dump(), chosen_name, optimizers_reading(key));
    return;
  }
  std::vector<std::string> own = field_keys(optimizer_common_keys());
  own.insert(own.end(), chosen.keys.names.begin(), chosen.keys.names.end());
  std::string hint = closest_match(key, own);
  if (hint.empty()) {
    std::vector<std::string> all;
    const nlohmann::json every = every_optimizer_key_json();
    for (const auto& item : every.items()) all.push_back(item.key());
    hint = closest_match(key, all);
  }
  usage_error(context, ": unknown key 'optimizer.", key, "' for optimizer '", chosen_name, "'",
              hint.empty() ? std::string() : " (did you mean 'optimizer." + hint + "'?)");
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
  if (config.options.has_value() && !spec.keys.holds(config.options))
    usage_error(context, ": optimizer.name = '", config.name, "' but its options hold another optimizer's keys");
  spec.keys.check(options_or_defaults(spec, config), context);
}

OptimizerConfig optimizer_config_from_json(const nlohmann::json& section, const std::string& context) {
  if (!section.is_object()) usage_error(context, ": 'optimizer' must be a JSON object, got ", section.dump());
  OptimizerConfig c;
  read_key(section, "name", c.name, context, "optimizer");
  const OptimizerSpec spec = optimizer_spec(c.name, context + ": optimizer.name");
  const std::vector<std::string> common = field_keys(optimizer_common_keys());
  for (const auto& item : section.items())
    if (!contains(common, item.key()) && !contains(spec.keys.names, item.key()))
      check_foreign_key(item.key(), item.value(), spec, c.name, context);
  read_fields(section, optimizer_common_keys(), c, context, "optimizer");
  c.options = spec.keys.defaults();
  spec.keys.read(section, c.options, context);
  validate_optimizer_config(spec, c, context);
  return c;
}

nlohmann::json to_json(const OptimizerConfig& config) {
  const OptimizerSpec spec = optimizer_spec(config.name);
  nlohmann::json j = spec.keys.write(options_or_defaults(spec, config));
  write_fields(optimizer_common_keys(), config, j);
  return j;
}

nlohmann::json every_optimizer_key_json() {
  nlohmann::json j = nlohmann::json::object();
  write_fields(optimizer_common_keys(), OptimizerConfig{}, j);
  for (const auto& name : optimizer_names()) {
    const OptimizerSpec spec = optimizer_spec(name);
    const nlohmann::json defaults = spec.keys.write(spec.keys.defaults());
    for (const auto& [key, value] : defaults.items())
      if (!j.contains(key)) j[key] = value;
  }
  return j;
}

}  // namespace gum
