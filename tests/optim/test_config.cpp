#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>

#include "gum/core/error.h"
#include "gum/optim/optimizer_config_json.h"
#include "optim_test_util.h"

using namespace gum;
using namespace gum::test;
using nlohmann::json;

TEST_CASE("optimizer config round-trips through JSON", "[optim][config]") {
  OptimizerConfig c;
  c.name = "gum";
  c.lr = 0.02f;
  c.rank = 64;
  c.projector = "randomized";
  c.sample_unit = "matrix";
  c.muon_scale = "match_adamw";
  c.nesterov = false;
  const OptimizerConfig back = optimizer_config_from_json(to_json(c), "test");
  CHECK(to_json(back) == to_json(c));
  CHECK(back.lr == 0.02f);
  CHECK(back.sample_unit == "matrix");
  // Integers are accepted for numbers; absent keys keep the defaults.
  const OptimizerConfig partial = optimizer_config_from_json(json{{"lr", 1}, {"name", "muon"}}, "test");
  CHECK(partial.lr == 1.0f);
  CHECK(partial.update_proj_gap == 200);
}

// The defaults written out from docs/optimizers.md (the papers' values), so a changed default
// fails here rather than being agreed to by a reference that reads our own to_json.
TEST_CASE("to_json of the default OptimizerConfig is the documented table of defaults", "[optim][config]") {
  const json expected = {{"name", "adamw"},
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
                         {"gum_sampling", "fixed"},
                         {"momentum_restart", true},
                         {"stiefel_sampling", "haar"},
                         {"stiefel_covariance", "period"}};
  const json defaults = to_json(OptimizerConfig{});
  for (const auto& [key, value] : expected.items()) {
    INFO(key);
    REQUIRE(defaults.contains(key));
    CHECK(defaults.at(key) == value);
  }
  CHECK(defaults.size() == expected.size());
  CHECK(optimizer_config_from_json(json::object(), "test").rank == 128);  // reading {} keeps them
  CHECK(to_json(optimizer_config_from_json(json::object(), "test")) == defaults);
}

// Each key set to a value no other key and no default has: a key read into or written from the
// wrong field shows as a changed value.
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
                         {"gum_sampling", "bernoulli"},
                         {"momentum_restart", false},
                         {"stiefel_sampling", "optimal"},
                         {"stiefel_covariance", "gradient"}};
  CHECK(distinct.size() == to_json(OptimizerConfig{}).size());  // every key of every optimizer
  const OptimizerConfig c = optimizer_config_from_json(distinct, "test");
  CHECK(to_json(c) == distinct);
  CHECK(c.beta1 == 0.75f);
  CHECK(c.beta2 == 0.875f);
  CHECK(c.momentum == 0.625f);
  CHECK(c.update_proj_gap == 13);
  CHECK(c.full_rank_layers == 19);
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
  CHECK_THROWS_WITH(optimizer_config_from_json(json{{"full_rank_layers", 0}}, "c"),
                    Catch::Contains("optimizer.full_rank_layers"));
  try {
    optimizer_config_from_json(json{{"update_proj_gap", 0}}, "c");
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
  // Another optimizer's key is read (a resolved config lists them all) but changes nothing for
  // this one; its value is still checked against its rule.
  const OptimizerConfig adamw = optimizer_config_from_json(json{{"name", "adamw"}, {"rank", 64}}, "c");
  CHECK(adamw.rank == 64);
  CHECK_THROWS_WITH(optimizer_config_from_json(json{{"name", "adamw"}, {"rank", 0}}, "c"),
                    Catch::Contains("optimizer.rank = 0 must be >= 1"));
  // An integer beyond int is an error, not a wrapped rank.
  CHECK_THROWS_WITH(optimizer_config_from_json(json{{"name", "gum"}, {"rank", 4294967298LL}}, "c"),
                    Catch::Contains("optimizer.rank") && Catch::Contains("out of range"));
  // A registered optimizer's declared keys and its own check take part in parsing.
  OptimizerSpec spec;
  spec.make = [](const OptimizerContext& ctx) { return make_optimizer("adamw", ctx); };
  spec.keys = {{"momentum", &OptimizerConfig::momentum}};
  spec.validate = [](const OptimizerConfig& c, const std::string& context) {
    if (c.momentum == 0) usage_error(context, ": optimizer.momentum must be non-zero for adamw_momentum");
  };
  register_optimizer("adamw_momentum", spec);
  CHECK(optimizer_config_from_json(json{{"name", "adamw_momentum"}, {"momentum", 0.5}}, "c").momentum == 0.5f);
  CHECK_THROWS_WITH(optimizer_config_from_json(json{{"name", "adamw_momentum"}, {"momentum", 0}}, "c"),
                    Catch::Contains("adamw_momentum"));
}

TEST_CASE("make_optimizer validates against the parameters", "[optim][config]") {
  auto backend = make_backend("cpu");
  auto table = make_param_table(*backend, toy_model(), 1);
  OptimizerConfig c;
  c.name = "galore_adamw";
  c.rank = 17;  // the smallest matrix is 16 x 16
  CHECK_THROWS_WITH(build(*backend, *table, c, 0),
                    Catch::Contains("optimizer.rank = 17") && Catch::Contains("min(m, n) = 16"));
  c.name = "gum";
  c.rank = 4;
  c.full_rank_layers = 3;  // N_L = 3 layers: q = 1
  CHECK_THROWS_WITH(build(*backend, *table, c, 0),
                    Catch::Contains("full_rank_layers") && Catch::Contains("(0, 1)") && Catch::Contains("3 blocks"));
  c.full_rank_layers = 5;  // gamma > N_L
  CHECK_THROWS_WITH(build(*backend, *table, c, 0), Catch::Contains("full_rank_layers = 5"));
  c.sample_unit = "matrix";  // 6 matrices: gamma = 5 is fine
  CHECK_NOTHROW(build(*backend, *table, c, 0));
  c.name = "plumage";
  c.projector = "randomized";
  CHECK_THROWS_WITH(build(*backend, *table, c, 0), Catch::Contains("plumage"));
  c.name = "adamx";
  CHECK_THROWS_WITH(build(*backend, *table, c, 0),
                    Catch::Contains("unknown optimizer 'adamx'") && Catch::Contains("did you mean 'adamw'"));
}

TEST_CASE("the registry lists the built-ins and accepts new optimizers", "[optim][config]") {
  auto names = optimizer_names();
  for (const char* expected : {"adamw", "muon", "galore_adamw", "gum", "plumage", "stiefel", "galore_muon"})
    CHECK(std::find(names.begin(), names.end(), expected) != names.end());
  register_optimizer("adamw_alias", [](const OptimizerContext& ctx) {
    OptimizerContext copy = ctx;
    copy.config.name = "adamw";
    return make_optimizer("adamw", copy);
  });
  auto backend = make_backend("cpu");
  auto table = make_param_table(*backend, toy_model(), 1);
  OptimizerConfig c;
  c.name = "adamw_alias";
  auto opt = build(*backend, *table, c, 0);
  CHECK(opt->name() == "adamw");
}
