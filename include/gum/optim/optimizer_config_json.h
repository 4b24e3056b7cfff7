#pragma once
// The config's `optimizer` section <-> OptimizerConfig. The keys are the common ones
// (optimizer_common_keys) plus those the chosen optimizer declares in its OptimizerSpec.
#include <nlohmann/json.hpp>
#include <string>

#include "gum/optim/optimizer.h"
#include "gum/optim/optimizer_config.h"

namespace gum {

// Keys every optimizer reads: name, lr, weight_decay, the AdamW betas and eps (every
// optimizer runs AdamW at least on the non-matrix parameters) and shard_states.
const FieldTable<OptimizerConfig>& optimizer_common_keys();

// Reads `section` (a JSON object) over the defaults. `context` names the source in errors
// ("config.json"). Every registered optimizer's keys are accepted, so a resolved config can
// switch optimizer; one the chosen optimizer does not read is reported as ignored when it is
// not at its default. A key no optimizer reads is a usage error naming the chosen optimizer
// and the closest key. Then validate_optimizer_config().
OptimizerConfig optimizer_config_from_json(const nlohmann::json& section, const std::string& context);
// Every key of every registered optimizer, so a resolved config written next to a checkpoint
// reads back identically whichever optimizer it names.
nlohmann::json to_json(const OptimizerConfig& config);

// What can be checked without the model: the common keys and `spec`'s keys against their
// rules, then spec.validate. Usage error naming context and key.
void validate_optimizer_config(const OptimizerSpec& spec, const OptimizerConfig& config, const std::string& context);

}  // namespace gum
