#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>

#include "gum/core/error.h"
#include "gum/optim/optimizer_config_json.h"
#include "optim_test_util.h"

using namespace gum;
using namespace gum::test;
using nlohmann::json;

namespace {

// The defaults written out from docs/optimizers.md (the papers' values), so a changed default
// fails here rather than being agreed to by a reference that reads our own to_json.
const json kDocumentedDefaults = {{"name", "adamw"},
                                  {"lr", 1e-3f},
                                  {"weight_decay", 0.0f},
                                  {"beta1", 0.9f},
                                  {"beta2", 0.999f},
                                  {"eps", 1e-8f},
                                  {"adamw_lr", -1.0f},
                                  {"momentum", 0.95f},
                                  {"nesterov", true},
                                  {"ns_steps", 5},
                                  {"muon_scale", "original"},
                                  {"rank", 128},
                                  {"update_proj_gap", 200},
                                  {"scale", 0.25f},
                                  {"projector", "svd"},
                                  {"power_iterations", 1},
                                  {"oversampling", 8},
                                  {"full_rank_layers", 2},
                                  {"sample_unit", "layer"},
                                  {"shard_states", false},
                                  {"ns_dtype", "fp32"},
                                  {"state_dtype", "fp32"},
                                  {"gum_sampling", "fixed"},
                                  {"momentum_restart", true},
                                  {"stiefel_sampling", "haar"},
                                  {"stiefel_covariance", "period"}};

// The keys each built-in reads beyond the common ones (docs/optimizers.md).
const std::map<std::string, std::vector<std::string>> kOwnKeys = {
    {"adamw", {}},
    {"muon", {"adamw_lr", "momentum", "nesterov", "ns_steps", "ns_dtype", "muon_scale"}},
    {"galore_adamw", {"adamw_lr", "rank", "update_proj_gap", "scale", "projector", "power_iterations", "oversampling"}},
    {"plumage", {"adamw_lr", "rank", "update_proj_gap", "scale"}},
    {"stiefel", {"adamw_lr", "rank", "update_proj_gap", "scale", "stiefel_sampling", "stiefel_covariance"}},
    {"galore_muon",
     {"adamw_lr", "rank", "update_proj_gap", "projector", "power_iterations", "oversampling", "momentum", "ns_steps",
      "ns_dtype", "muon_scale", "momentum_restart"}},
    {"gum",
     {"adamw_lr", "rank", "update_proj_gap", "projector", "power_iterations", "oversampling", "momentum", "ns_steps",
      "ns_dtype", "muon_scale", "full_rank_layers", "sample_unit", "gum_sampling", "momentum_restart"}},
};

const std::vector<std::string> kCommonKeys = {"name",  "lr",  "weight_decay", "beta1",
                                              "beta2", "eps", "shard_states", "state_dtype"};

// `all` restricted to the common keys and those optimizer `name` reads, with that name.
json keys_of(const std::string& name, const json& all) {
  json out = {{"name", name}};
  for (const auto& key : kCommonKeys)
    if (key != "name") out[key] = all.at(key);
  for (const auto& key : kOwnKeys.at(name)) out[key] = all.at(key);
  return out;
}

}  // namespace

TEST_CASE("optimizer config round-trips through JSON", "[optim][config]") {
  const json gum = {{"name", "gum"},
                    {"lr", 0.02},
                    {"rank", 64},
                    {"projector", "randomized"},
                    {"sample_unit", "matrix"},
                    {"muon_scale", "match_adamw"}};
  const OptimizerConfig c = optimizer_config_from_json(gum, "test");
  const OptimizerConfig back = optimizer_config_from_json(to_json(c), "test");
  CHECK(to_json(back) == to_json(c));
  CHECK(back.lr == 0.02f);
  CHECK(to_json(back).at("sample_unit") == "matrix");
  // Integers are accepted for numbers; absent keys keep the defaults.
  const OptimizerConfig partial = optimizer_config_from_json(json{{"lr", 1}, {"name", "galore_adamw"}}, "test");
  CHECK(partial.lr == 1.0f);
  CHECK(to_json(partial).at("update_proj_gap") == 200);
}

TEST_CASE("each optimizer writes the common keys and its own, at the documented defaults", "[optim][config]") {
  for (const auto& [name, own] : kOwnKeys) {
    INFO(name);
    const json expected = keys_of(name, kDocumentedDefaults);
    CHECK(to_json(optimizer_config_from_json(json{{"name", name}}, "test")) == expected);
    OptimizerConfig in_code;  // empty options: the optimizer's defaults
    in_code.name = name;
    CHECK(to_json(in_code) == expected);
  }
  // --set may name any optimizer's key: the schema lists them all, at their defaults.
  const json every = every_optimizer_key_json();
  for (const auto& [key, value] : kDocumentedDefaults.items()) {
    INFO(key);
    REQUIRE(every.contains(key));
    CHECK(every.at(key) == value);
  }
}

// Each key set to a value no other key and no default has: a key read into or written from the
// wrong member (of the optimizer's struct or of a shared key group) shows as a changed value.
TEST_CASE("every optimizer key reads into its own field and writes back unchanged", "[optim][config]") {
  const json distinct = {{"name", "gum"},
                         {"lr", 0.0125f},
                         {"weight_decay", 0.03125f},
                         {"beta1", 0.75f},
                         {"beta2", 0.875f},
                         {"eps", 3e-7f},
                         {"adamw_lr", 0.0078125f},
                         {"momentum", 0.625f},
                         {"nesterov", false},
                         {"ns_steps", 7},
                         {"muon_scale", "match_adamw"},
                         {"rank", 11},
                         {"update_proj_gap", 13},
                         {"scale", 0.375f},
                         {"projector", "randomized"},
                         {"power_iterations", 3},
                         {"oversampling", 17},
                         {"full_rank_layers", 19},
                         {"sample_unit", "matrix"},
                         {"shard_states", true},
                         {"ns_dtype", "bf16"},
                         {"state_dtype", "bf16"},
                         {"gum_sampling", "bernoulli"},
                         {"momentum_restart", false},
                         {"stiefel_sampling", "optimal"},
                         {"stiefel_covariance", "gradient"}};
  for (const auto& [name, own] : kOwnKeys) {
    INFO(name);
    const json keys = keys_of(name, distinct);
    const OptimizerConfig c = optimizer_config_from_json(keys, "test");
    CHECK(to_json(c) == keys);
    CHECK(c.beta1 == 0.75f);
    CHECK(c.beta2 == 0.875f);
    CHECK(c.shard_states);
  }
}

TEST_CASE("optimizer config errors name the key and suggest the closest", "[optim][config]") {
  CHECK_THROWS_WITH(optimizer_config_from_json(json{{"rnak", 4}}, "run.json"),
                    Catch::Contains("run.json") && Catch::Contains("optimizer.rnak") &&
                        Catch::Contains("did you mean 'optimizer.rank'"));
  CHECK_THROWS_WITH(optimizer_config_from_json(json{{"projector", "svdd"}}, "c"),
                    Catch::Contains("optimizer.projector") && Catch::Contains("did you mean \"svd\""));
  CHECK_THROWS_WITH(optimizer_config_from_json(json{{"sample_unit", "block"}}, "c"),
                    Catch::Contains("optimizer.sample_unit") && Catch::Contains("\"layer\", \"matrix\""));
  CHECK_THROWS_WITH(optimizer_config_from_json(json{{"muon_scale", "adamw"}}, "c"),
                    Catch::Contains("optimizer.muon_scale"));
  CHECK_THROWS_WITH(optimizer_config_from_json(json{{"rank", "big"}}, "c"),
                    Catch::Contains("optimizer.rank") && Catch::Contains("integer"));
  CHECK_THROWS_WITH(optimizer_config_from_json(json{{"beta2", 1.5}}, "c"), Catch::Contains("optimizer.beta2"));
  CHECK_THROWS_WITH(optimizer_config_from_json(json{{"name", "gum"}, {"full_rank_layers", 0}}, "c"),
                    Catch::Contains("optimizer.full_rank_layers"));
  try {
    optimizer_config_from_json(json{{"name", "galore_adamw"}, {"update_proj_gap", 0}}, "c");
    FAIL("no error");
  } catch (const Error& e) {
    CHECK(e.kind() == ErrorKind::Usage);
  }
}

TEST_CASE("optimizer keys: common ones, the chosen optimizer's, and other optimizers' ignored", "[optim][config]") {
  // A key no optimizer reads names the chosen optimizer and the closest key.
  CHECK_THROWS_WITH(optimizer_config_from_json(json{{"name", "muon"}, {"momentun", 0.9}}, "c"),
                    Catch::Contains("unknown key 'optimizer.momentun' for optimizer 'muon'") &&
                        Catch::Contains("did you mean 'optimizer.momentum'"));
  CHECK_THROWS_WITH(optimizer_config_from_json(json{{"name", "adamx"}}, "run.json"),
                    Catch::Contains("run.json") && Catch::Contains("unknown optimizer 'adamx'") &&
                        Catch::Contains("did you mean 'adamw'"));
  // Another optimizer's key is accepted (a config switched with --set keeps the old one's keys)
  // but is not this one's; its value is still checked against its rule.
  const OptimizerConfig adamw = optimizer_config_from_json(json{{"name", "adamw"}, {"rank", 64}}, "c");
  CHECK_FALSE(to_json(adamw).contains("rank"));
  const OptimizerConfig plumage =
      optimizer_config_from_json(json{{"name", "plumage"}, {"projector", "randomized"}}, "c");
  CHECK_FALSE(to_json(plumage).contains("projector"));  // PLUMAGE needs the full spectrum: always the exact SVD
  // The resolved form of earlier versions listed every optimizer's keys: it reads the same.
  json every_key = kDocumentedDefaults;
  every_key["name"] = "gum";
  CHECK(to_json(optimizer_config_from_json(every_key, "c")) == keys_of("gum", kDocumentedDefaults));
  CHECK_THROWS_WITH(optimizer_config_from_json(json{{"name", "adamw"}, {"rank", 0}}, "c"),
                    Catch::Contains("optimizer.rank = 0 must be >= 1"));
  // An integer beyond int is an error, not a wrapped rank.
  CHECK_THROWS_WITH(optimizer_config_from_json(json{{"name", "gum"}, {"rank", 4294967298LL}}, "c"),
                    Catch::Contains("optimizer.rank") && Catch::Contains("out of range"));
}

TEST_CASE("make_optimizer validates against the parameters", "[optim][config]") {
  auto backend = make_backend("cpu");
  auto table = make_param_table(*backend, toy_model(), 1);
  const auto build_from = [&](const json& keys) {
    return build(*backend, *table, optimizer_config_from_json(keys, "test"), 0);
  };
  // The smallest matrix is 16 x 16.
  CHECK_THROWS_WITH(build_from({{"name", "galore_adamw"}, {"rank", 17}}),
                    Catch::Contains("optimizer.rank = 17") && Catch::Contains("min(m, n) = 16"));
  // N_L = 3 layers: gamma = 3 gives q = 1, gamma = 5 exceeds N_L; 6 matrices take gamma = 5.
  CHECK_THROWS_WITH(build_from({{"name", "gum"}, {"rank", 4}, {"full_rank_layers", 3}}),
                    Catch::Contains("full_rank_layers") && Catch::Contains("(0, 1)") && Catch::Contains("3 blocks"));
  CHECK_THROWS_WITH(build_from({{"name", "gum"}, {"rank", 4}, {"full_rank_layers", 5}}),
                    Catch::Contains("full_rank_layers = 5"));
  CHECK_NOTHROW(build_from({{"name", "gum"}, {"rank", 4}, {"full_rank_layers", 5}, {"sample_unit", "matrix"}}));
  // Options made for one optimizer given to another.
  OptimizerConfig swapped = optimizer_config_from_json({{"name", "gum"}, {"rank", 4}}, "test");
  swapped.name = "galore_adamw";
  CHECK_THROWS_WITH(build(*backend, *table, swapped, 0),
                    Catch::Contains("optimizer 'galore_adamw'") && Catch::Contains("another optimizer's"));
  OptimizerConfig unknown;
  unknown.name = "adamx";
  CHECK_THROWS_WITH(build(*backend, *table, unknown, 0),
                    Catch::Contains("unknown optimizer 'adamx'") && Catch::Contains("did you mean 'adamw'"));
}
