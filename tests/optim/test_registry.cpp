// The registry from outside src/optim: an optimizer added through the public API alone (its
// class, its own keys in a struct of its own, one register_optimizer call), as
// docs/optimizers.md ("Adding an optimizer") describes.
#include <catch2/catch.hpp>
#include <cmath>
#include <nlohmann/json.hpp>

#include "gum/optim/optimizer.h"
#include "gum/optim/optimizer_config_json.h"
#include "optim_test_util.h"

using namespace gum;
using namespace gum::test;
using nlohmann::json;

namespace {

// SGD with a gradient scale: W ← W − η·s·G.
struct ScaledSgdOptions {
  float gradient_scale = 1.0f;  // s
};

class ScaledSgd final : public Optimizer {
 public:
  explicit ScaledSgd(const OptimizerContext& ctx)
      : Optimizer(ctx.params), backend_(*ctx.backend), options_(optimizer_options<ScaledSgdOptions>(ctx.config)) {}
  std::string name() const override { return "scaled_sgd"; }
  void begin_step(const StepInfo& info) override { lr_ = info.lr; }
  void update(size_t index) override {
    backend_.axpby(params_[index].param, -lr_ * options_.gradient_scale, params_[index].grad, 1.0f);
  }
  void save_state(TensorMap&) const override {}
  void load_state(const TensorMap&) override {}
  size_t state_bytes(size_t) const override { return 0; }

 private:
  Backend& backend_;
  ScaledSgdOptions options_;
  float lr_ = 0;
};

OptimizerSpec scaled_sgd_spec() {
  return {[](const OptimizerContext& ctx) { return std::make_unique<ScaledSgd>(ctx); },
          optimizer_keys<ScaledSgdOptions>({{"gradient_scale", &ScaledSgdOptions::gradient_scale, positive()}},
                                           // A check beyond the key's rule: a power of two keeps η·s·G exact in float,
                                           // which the test below compares bit for bit.
                                           [](const ScaledSgdOptions& o, const std::string& context) {
                                             int exponent = 0;
                                             if (std::frexp(o.gradient_scale, &exponent) != 0.5f)
                                               usage_error(context, ": optimizer.gradient_scale = ", o.gradient_scale,
                                                           " is not a power of two");
                                           })};
}

}  // namespace

TEST_CASE("an optimizer registered through the public API reads its own keys", "[optim][config]") {
  register_optimizer("scaled_sgd", scaled_sgd_spec());
  const OptimizerConfig c =
      optimizer_config_from_json(json{{"name", "scaled_sgd"}, {"lr", 0.25}, {"gradient_scale", 0.5}}, "toy.json");
  CHECK(optimizer_options<ScaledSgdOptions>(c).gradient_scale == 0.5f);
  const json written = to_json(c);
  CHECK(written.at("gradient_scale") == 0.5);
  CHECK_FALSE(written.contains("rank"));  // only the common keys and its own
  CHECK(to_json(optimizer_config_from_json(written, "toy.json")) == written);
  CHECK(every_optimizer_key_json().at("gradient_scale") == 1.0);  // --set can name it

  // An unknown key names this optimizer and hints its own key; its rule and its check apply.
  CHECK_THROWS_WITH(optimizer_config_from_json(json{{"name", "scaled_sgd"}, {"gradient_scal", 0.5}}, "toy.json"),
                    Catch::Contains("toy.json: unknown key 'optimizer.gradient_scal' for optimizer 'scaled_sgd'") &&
                        Catch::Contains("did you mean 'optimizer.gradient_scale'"));
  CHECK_THROWS_WITH(optimizer_config_from_json(json{{"name", "scaled_sgd"}, {"gradient_scale", 0}}, "toy.json"),
                    Catch::Contains("optimizer.gradient_scale = 0 must be positive"));
  CHECK_THROWS_WITH(optimizer_config_from_json(json{{"name", "scaled_sgd"}, {"gradient_scale", 0.3}}, "toy.json"),
                    Catch::Contains("not a power of two"));
  // For another optimizer it is another optimizer's key: ignored, not an error.
  CHECK_FALSE(to_json(optimizer_config_from_json(json{{"name", "adamw"}, {"gradient_scale", 2}}, "toy.json"))
                  .contains("gradient_scale"));

  // Built by make_optimizer, one step moves each weight by exactly -η·s·G (powers of two).
  auto backend = make_backend("cpu");
  auto table = make_param_table(*backend, toy_model(), 4);
  auto opt = build(*backend, *table, c, 0);
  CHECK(opt->name() == "scaled_sgd");
  fill_gradients(*backend, table->params, 5, 1);
  const auto before = concat_all(*backend, table->params, false);
  const auto grads = concat_all(*backend, table->params, true);
  opt->step(StepInfo{1, 0.25f, 1.0f});
  const auto after = concat_all(*backend, table->params, false);
  REQUIRE(after.size() == before.size());
  size_t exact = 0;
  for (size_t i = 0; i < after.size(); ++i) exact += after[i] == before[i] - 0.125f * grads[i];
  CHECK(exact == after.size());
}

TEST_CASE("the registry lists the built-ins and accepts an optimizer with only the common keys", "[optim][config]") {
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
  CHECK_THROWS_WITH(optimizer_config_from_json(json{{"name", "adamw_alias"}, {"momentun", 0.9}}, "c"),
                    Catch::Contains("unknown key 'optimizer.momentun' for optimizer 'adamw_alias'"));
  // Its own keys cannot shadow a common one: `optimizer.lr` has one meaning.
  struct ShadowOptions {
    float lr = 1;
  };
  OptimizerSpec shadow{scaled_sgd_spec().make, optimizer_keys<ShadowOptions>({{"lr", &ShadowOptions::lr}})};
  CHECK_THROWS_WITH(register_optimizer("shadow", shadow), Catch::Contains("declares the common key 'lr'"));
}
