// State: save/load round trips continue bit-identically, per-layer updates in backward order
// equal step(), state_bytes predicts what is saved, and bad state files are refused by name.
#include <catch2/catch.hpp>
#include <cmath>
#include <cstring>

#include "gum/core/error.h"
#include "optim_test_util.h"

using namespace gum;
using namespace gum::test;

namespace {

const std::vector<std::string> kAll = {"adamw", "muon", "galore_adamw", "plumage", "stiefel", "gum", "galore_muon"};

// extra: further keys of optimizer `name`.
OptimizerConfig config_for(const std::string& name, const nlohmann::json& extra = nlohmann::json::object()) {
  // update_proj_gap 5: a refresh / new period inside both halves of the run
  nlohmann::json keys = {
      {"lr", 0.01}, {"weight_decay", 0.05}, {"rank", 4}, {"update_proj_gap", 5}, {"full_rank_layers", 1}};
  keys.update(extra);
  return optimizer_config(name, keys);
}

// Every optimizer, and the options that change what the state holds: GUM's Bernoulli draw (a
// varying number of full-rank blocks), carried momentum, a rank at which a full-rank block's first
// full momentum lives in its idle low-rank momenta, the optimal Stiefel estimator's second-moment
// state.
std::vector<std::pair<std::string, OptimizerConfig>> all_configs() {
  std::vector<std::pair<std::string, OptimizerConfig>> all;
  for (const auto& name : kAll) all.emplace_back(name, config_for(name));
  all.emplace_back("gum bernoulli", config_for("gum", {{"gum_sampling", "bernoulli"}}));
  all.emplace_back("gum carried momentum", config_for("gum", {{"momentum_restart", false}}));
  all.emplace_back("gum rank 8 carried momentum", config_for("gum", {{"rank", 8}, {"momentum_restart", false}}));
  all.emplace_back("stiefel optimal", config_for("stiefel", {{"stiefel_sampling", "optimal"}}));
  return all;
}

StepInfo info_at(int64_t k) { return StepInfo{k, 0.01f / (1.0f + 0.1f * k), 1.0f / (1.0f + 0.1f * k)}; }

void run_steps(Backend& backend, Optimizer& opt, ParamTable& table, int64_t first, int64_t last) {
  for (int64_t k = first; k <= last; ++k) {
    fill_gradients(backend, table.params, 77, k);
    opt.step(info_at(k));
  }
}

}  // namespace

TEST_CASE("save after k steps, load into a fresh optimizer: the continuation is bitwise identical", "[optim][state]") {
  auto backend = make_backend("cpu");
  for (const auto& [label, config] : all_configs()) {
    INFO(label);
    auto table = make_param_table(*backend, toy_model(), 8);
    auto opt = build(*backend, *table, config, 42);
    run_steps(*backend, *opt, *table, 1, 7);
    TensorMap saved;
    opt->save_state(saved);
    const auto weights_at_7 = concat_all(*backend, table->params, false);
    run_steps(*backend, *opt, *table, 8, 16);
    const auto uninterrupted = concat_all(*backend, table->params, false);

    // A new table and optimizer (as after a restart), weights and state restored.
    auto resumed_table = make_param_table(*backend, toy_model(), 999);
    size_t offset = 0;
    for (const auto& p : resumed_table->params) {
      std::vector<float> part(weights_at_7.begin() + offset, weights_at_7.begin() + offset + p.param.numel());
      from_host(*backend, p.param, part);
      offset += part.size();
    }
    auto resumed = build(*backend, *resumed_table, config, 42);
    resumed->load_state(saved);
    run_steps(*backend, *resumed, *resumed_table, 8, 16);
    const auto continued = concat_all(*backend, resumed_table->params, false);
    REQUIRE(continued.size() == uninterrupted.size());
    CHECK(std::memcmp(continued.data(), uninterrupted.data(), continued.size() * 4) == 0);
    CHECK(distance(uninterrupted, weights_at_7) > 0);
  }
}

TEST_CASE("per-layer updates in backward order equal one step()", "[optim][fused]") {
  auto backend = make_backend("cpu");
  for (const auto& name : kAll) {
    INFO(name);
    auto whole = make_param_table(*backend, toy_model(), 8);
    auto fused = make_param_table(*backend, toy_model(), 8);
    auto opt_whole = build(*backend, *whole, config_for(name), 5);
    auto opt_fused = build(*backend, *fused, config_for(name), 5);
    for (int64_t k = 1; k <= 12; ++k) {
      fill_gradients(*backend, whole->params, 3, k);
      fill_gradients(*backend, fused->params, 3, k);
      opt_whole->step(info_at(k));
      // The trainer's order: blocks complete from the head (layer L) down to the embeddings (-1).
      opt_fused->begin_step(info_at(k));
      for (int layer = fused->num_layers; layer >= -1; --layer)
        for (size_t i : opt_fused->layer_params(layer)) opt_fused->update(i);
    }
    const auto a = concat_all(*backend, whole->params, false), b = concat_all(*backend, fused->params, false);
    CHECK(std::memcmp(a.data(), b.data(), a.size() * 4) == 0);
  }
}

TEST_CASE("state_bytes predicts the saved state, before any step", "[optim][memory]") {
  auto backend = make_backend("cpu");
  for (const auto& [label, config] : all_configs()) {
    INFO(label);
    const std::string& name = label;
    auto table = make_param_table(*backend, toy_model(), 8);
    auto opt = build(*backend, *table, config, 5);
    std::vector<size_t> predicted;
    for (size_t i = 0; i < table->params.size(); ++i) predicted.push_back(opt->state_bytes(i));
    const size_t predicted_total = opt->total_state_bytes();
    run_steps(*backend, *opt, *table, 1, 3);
    TensorMap saved;
    opt->save_state(saved);
    size_t full_rank_saved = 0;
    for (size_t i = 0; i < table->params.size(); ++i) {
      const auto& p = table->params[i];
      size_t bytes = 0;
      for (const auto& [key, tensor] : saved) {
        if (key.rfind(p.name + ".", 0) != 0 || tensor.dtype != DType::F32) continue;
        if (key == p.name + ".momentum_full") {
          full_rank_saved += tensor.bytes.size();
          continue;  // lives in GUM's shared pool
        }
        // The memory each saved tensor takes in the state's arena (alignment gap included).
        bytes += arena_entry_bytes(Shape{int64_t(tensor.bytes.size() / sizeof(float))}, DType::F32);
      }
      CHECK(bytes == predicted[i]);
      CHECK(opt->state_bytes(i) == predicted[i]);
    }
    if (name != "gum rank 8 carried momentum") CHECK(full_rank_saved <= opt->shared_state_bytes());
    CHECK(predicted_total == opt->total_state_bytes());
    if (name == "adamw") CHECK(predicted[2] == 2 * 16 * 24 * 4);
    // State tensors take aligned arena entries: 4 x 24 floats (384 bytes) take 512.
    auto entry = [](int64_t rows, int64_t cols) { return arena_entry_bytes(Shape{rows, cols}, DType::F32); };
    if (name == "galore_adamw") CHECK(predicted[2] == 2 * entry(4, 24) + entry(16, 4));  // moments r×n, projector m×r
    if (name == "gum") {
      CHECK(opt->shared_state_bytes() == (16 * 24 + 24 * 16) * 4);  // one slot, the largest block
      CHECK(full_rank_saved > 0);
    }
    if (name == "gum bernoulli") CHECK(opt->shared_state_bytes() == 3 * (16 * 24 + 24 * 16) * 4);  // a slot per block
    // Rank 8: block 0's low-rank momenta (q_proj 8 x 24, down_proj 24 x 8) hold q_proj's full one
    // (16 x 24), so its slot needs down_proj's alone; block 2's (q_proj 8 x 24, o_proj 16 x 8) are
    // too small for q_proj's: its slot holds both, the largest.
    if (name == "gum rank 8 carried momentum") CHECK(opt->shared_state_bytes() == (16 * 24 + 16 * 16) * 4);
    if (name == "stiefel optimal")  // moments r×n, projector and its scaled copy m×r, second moment m×m
      CHECK(predicted[2] == 2 * entry(4, 24) + 2 * entry(16, 4) + entry(16, 16));
    const std::string table_text = optimizer_memory_table(*opt);
    CHECK(table_text.find("total") != std::string::npos);
    CHECK(table_text.find("matrix") != std::string::npos);
  }
}

TEST_CASE("load_state names a missing or mis-shaped tensor and changes nothing", "[optim][state]") {
  auto backend = make_backend("cpu");
  auto table = make_param_table(*backend, toy_model(), 8);
  auto opt = build(*backend, *table, config_for("galore_adamw"), 5);
  run_steps(*backend, *opt, *table, 1, 2);
  TensorMap good;
  opt->save_state(good);

  TensorMap missing = good;
  missing.erase("model.layers.1.mlp.down_proj.weight.projector");
  CHECK_THROWS_WITH(opt->load_state(missing),
                    Catch::Contains("model.layers.1.mlp.down_proj.weight.projector") && Catch::Contains("missing"));
  TensorMap wrong = good;
  wrong["model.layers.0.self_attn.q_proj.weight.exp_avg"] = HostTensor(DType::F32, Shape{3, 3});
  CHECK_THROWS_WITH(opt->load_state(wrong),
                    Catch::Contains("model.layers.0.self_attn.q_proj.weight.exp_avg") && Catch::Contains("[4, 24]"));
  TensorMap after;
  opt->save_state(after);
  for (const auto& [key, tensor] : good) CHECK(after.at(key).bytes == tensor.bytes);

  auto gum = build(*backend, *table, config_for("gum"), 5);
  TensorMap gum_state;
  gum->step(info_at(1));
  gum->save_state(gum_state);
  gum_state.erase("gum.sampler_position");
  CHECK_THROWS_WITH(gum->load_state(gum_state), Catch::Contains("gum.sampler_position"));
}

TEST_CASE("an all-zero or NaN gradient at a refresh keeps the projector instead of failing", "[optim][galore]") {
  auto backend = make_backend("cpu");
  for (const std::string name : {"galore_adamw", "gum"}) {
    INFO(name);
    auto table = make_param_table(*backend, toy_model(), 8);
    auto opt = build(*backend, *table, config_for(name), 5);
    const auto& matrix = table->params[2];
    const std::string key = matrix.name + ".projector";
    // Step 1: the first gradient of this matrix is zero: the coordinate projector is used.
    fill_gradients(*backend, table->params, 1, 1);
    backend->fill(matrix.grad, 0.0f);
    REQUIRE_NOTHROW(opt->step(info_at(1)));
    TensorMap s1;
    opt->save_state(s1);
    auto p1 = s1.at(key).to_f32();
    CHECK(p1[0] == 1.0f);  // e_1 in column 0
    CHECK(p1[1] == 0.0f);
    CHECK(p1[4 + 1] == 1.0f);  // e_2 in column 1 (P is [16, 4])
    // Steps 2..5 with real gradients, then the refresh at step 6 sees NaN: keep the projector.
    run_steps(*backend, *opt, *table, 2, 5);
    TensorMap s5;
    opt->save_state(s5);
    fill_gradients(*backend, table->params, 1, 6);
    backend->fill(matrix.grad, std::nanf(""));  // the SVD of this would fail
    REQUIRE_NOTHROW(opt->step(info_at(6)));
    TensorMap s6;
    opt->save_state(s6);
    CHECK(s6.at(key).bytes == s5.at(key).bytes);
    CHECK(s6.at(table->params[3].name + ".projector").bytes != s5.at(table->params[3].name + ".projector").bytes);
  }
}
