#pragma once
// The config's `optimizer` section <-> OptimizerConfig. The keys are the common ones
// (optimizer_common_keys) plus those the chosen optimizer declares (OptimizerSpec::keys).
#include <nlohmann/json.hpp>
#include <string>

#include "gum/optim/optimizer.h"
#include "gum/optim/optimizer_config.h"

namespace gum {

// Keys every optimizer reads: name, lr, weight_decay, the AdamW betas and eps (every
// optimizer runs AdamW at least on the non-matrix parameters) and shard_states.
const FieldTable<OptimizerConfig>& optimizer_common_keys();

// Reads `section` (a JSON object) over the defaults. `context` names the source in errors
// ("config.json"). A key only other registered optimizers read is checked against its rule
// and, when not at its default, reported as ignored (a config switched to another optimizer
// with --set keeps the old one's keys). A key no optimizer reads is a usage error naming the
// chosen optimizer and the closest key. Then validate_optimizer_config().
OptimizerConfig optimizer_config_from_json(const nlohmann::json& section, const std::string& context);
// The common keys and those of the chosen optimizer.
nlohmann::json to_json(const OptimizerConfig& config);
// Every key of every registered optimizer at its default (the first optimizer's in name
// order, for a key several read): what `--set optimizer.KEY` may name, so that one override
// can switch the optimizer and the next set its keys.
nlohmann::json every_optimizer_key_json();

// What can be checked without the model: the common keys against their rules, that
// config.options holds `spec`'s struct, its keys against their rules and its checks. Usage
// error naming context and key.
void validate_optimizer_config(const OptimizerSpec& spec, const OptimizerConfig& config, const std::string& context);

}  // namespace gum
