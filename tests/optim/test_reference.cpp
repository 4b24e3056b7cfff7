// Every optimizer against the PyTorch reference (tests/reference/optim_ref.py, float64) on the
// toy table: one step and 50 steps, with identical random choices (Philox on both sides).
#include <catch2/catch.hpp>
#include <cstdio>

#include "common/skip.h"
#include "gum/optim/optimizer_config_json.h"
#include "optim_test_util.h"

using namespace gum;
using namespace gum::test;

namespace {

OptimizerConfig base_config(const std::string& name) {
  OptimizerConfig c;
  c.name = name;
  c.lr = 0.02f;
  c.weight_decay = 0.1f;
  c.beta2 = 0.95f;
  c.adamw_lr = 0.005f;
  c.rank = 4;
  c.update_proj_gap = 10;
  c.scale = 0.25f;
  c.full_rank_layers = 1;
  return c;
}

// Runs `steps` steps here and in the reference; checks each tensor's relative error.
void compare_with_reference(const std::string& case_name, const OptimizerConfig& config, int steps) {
  if (!reference_available()) GUM_SKIP_TEST("no torch in GUM_SYSTEM_PYTHON");
  auto backend = make_backend("cpu");
  const uint64_t seed = 1234;
  auto table = make_param_table(*backend, toy_model(), seed);
  auto optimizer = build(*backend, *table, config, seed);
  const std::vector<float> initial = concat_all(*backend, table->params, false);
  std::vector<float> grads, lr, ratio;
  for (int k = 1; k <= steps; ++k) {
    fill_gradients(*backend, table->params, seed, k);
    auto g = concat_all(*backend, table->params, true);
    grads.insert(grads.end(), g.begin(), g.end());
    const float schedule = 1.0f - 0.5f * (k - 1) / std::max(1, steps);  // a decaying schedule
    lr.push_back(config.lr * schedule);
    ratio.push_back(schedule);
    optimizer->step(StepInfo{k, lr.back(), ratio.back()});
  }
  const std::vector<float> ours = concat_all(*backend, table->params, false);
  const std::vector<float> reference =
      run_reference(case_name, config.name, config, seed, table->params, initial, grads, lr, ratio);
  size_t offset = 0;
  for (const auto& p : table->params) {
    const size_t n = static_cast<size_t>(p.param.numel());
    std::vector<float> a(ours.begin() + offset, ours.begin() + offset + n);
    std::vector<float> b(reference.begin() + offset, reference.begin() + offset + n);
    std::vector<float> w0(initial.begin() + offset, initial.begin() + offset + n);
    const double error = distance(a, b) / norm(b);
    const double moved = distance(b, w0) / norm(b);
    INFO(case_name << ": " << p.name << " relative error " << error << " (the update moved it by " << moved << ")");
    CHECK(error < 1e-5);
    CHECK(moved > 1e-3);  // the comparison is not vacuous: the weights really changed
    offset += n;
  }
}

void one_and_fifty(const std::string& label, const OptimizerConfig& config) {
  SECTION("one step") { compare_with_reference(label + "_1", config, 1); }
  SECTION("fifty steps") { compare_with_reference(label + "_50", config, 50); }
}

}  // namespace

TEST_CASE("adamw matches the reference", "[optim][reference]") { one_and_fifty("adamw", base_config("adamw")); }

TEST_CASE("muon (Nesterov, original scale) matches the reference", "[optim][reference]") {
  one_and_fifty("muon", base_config("muon"));
}

TEST_CASE("muon (plain momentum, match_adamw scale) matches the reference", "[optim][reference]") {
  auto c = base_config("muon");
  c.nesterov = false;
  c.muon_scale = "match_adamw";
  one_and_fifty("muon_plain", c);
}

TEST_CASE("galore_adamw (exact SVD) matches the reference", "[optim][reference]") {
  one_and_fifty("galore", base_config("galore_adamw"));
}

TEST_CASE("galore_adamw (randomized projector) matches the reference", "[optim][reference]") {
  auto c = base_config("galore_adamw");
  c.projector = "randomized";
  c.oversampling = 3;
  c.power_iterations = 2;
  one_and_fifty("galore_randomized", c);
}

TEST_CASE("plumage matches the reference", "[optim][reference]") { one_and_fifty("plumage", base_config("plumage")); }

TEST_CASE("stiefel matches the reference", "[optim][reference]") { one_and_fifty("stiefel", base_config("stiefel")); }

TEST_CASE("gum (layer blocks) matches the reference", "[optim][reference]") {
  one_and_fifty("gum", base_config("gum"));
}

TEST_CASE("gum (matrix blocks, randomized projector) matches the reference", "[optim][reference]") {
  auto c = base_config("gum");
  c.sample_unit = "matrix";
  c.full_rank_layers = 2;
  c.projector = "randomized";
  one_and_fifty("gum_matrix", c);
}

TEST_CASE("galore_muon matches the reference", "[optim][reference]") {
  one_and_fifty("galore_muon", base_config("galore_muon"));
}
