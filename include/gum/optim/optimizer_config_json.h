#pragma once
// The config's `optimizer` section <-> OptimizerConfig. Keys are the field names of
// OptimizerConfig; an unknown key is a usage error naming it and the closest valid key.
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "gum/optim/optimizer_config.h"

namespace gum {

// Reads `section` (a JSON object) over the defaults, then validate_optimizer_config().
// `context` names the source in errors ("config.json").
OptimizerConfig optimizer_config_from_json(const nlohmann::json& section, const std::string& context);
// Every field, so a resolved config written next to a checkpoint reads back identically.
nlohmann::json to_json(const OptimizerConfig& config);
// The key names accepted in the `optimizer` section.
std::vector<std::string> optimizer_config_keys();

// Checks what can be checked without the model: positive lr/rank/gap, betas in [0, 1),
// known projector / sample_unit / muon_scale names. Usage error naming context and key.
void validate_optimizer_config(const OptimizerConfig& config, const std::string& context);

}  // namespace gum
