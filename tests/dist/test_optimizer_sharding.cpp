// Sharded optimizer state in one process: "ranks" are optimizers over copies of the same
// parameters, each owning the matrices plan_shards gives it. After every step the owners'
// new weights are copied to the other copies (what broadcast_from_owners does across
// processes). The weights and the merged state must equal an unsharded optimizer's bit for bit,
// each rank must keep less state, and GUM's sampler must draw the same blocks everywhere.
#include <catch2/catch.hpp>
#include <cstring>
#include <string>
#include <vector>

#include "../optim/optim_test_util.h"
#include "gum/core/error.h"
#include "gum/dist/sharding.h"

using namespace gum;
using namespace gum::test;

namespace {

// update_proj_gap 2: several projector refreshes and GUM periods in a few steps
const nlohmann::json kShardingKeys = {
    {"lr", 0.02}, {"weight_decay", 0.1}, {"rank", 8}, {"update_proj_gap", 2}, {"full_rank_layers", 1}};

OptimizerConfig sharding_config(const std::string& name) { return optimizer_config(name, kShardingKeys); }

std::unique_ptr<Optimizer> build_owning(Backend& backend, ParamTable& table, const OptimizerConfig& config,
                                        std::vector<char> owned) {
  OptimizerContext ctx;
  ctx.backend = &backend;
  ctx.params = table.params;
  ctx.num_layers = table.num_layers;
  ctx.config = config;
  ctx.seed = 99;
  ctx.owned = std::move(owned);
  return make_optimizer(config.name, ctx);
}

ShardPlan plan_for(const std::vector<OptimParam>& params, int world_size) {
  std::vector<ShardItem> items;
  for (const auto& p : params)
    items.push_back({p.name, p.is_matrix() ? matrix_update_cost(p.param.shape) : numel_cost(p.param.shape)});
  return plan_shards(items, world_size);
}

bool same_bytes(const TensorMap& a, const TensorMap& b, std::string& first_difference) {
  for (const auto& [name, t] : a) {
    auto it = b.find(name);
    if (it == b.end() || it->second.bytes != t.bytes) {
      first_difference = name;
      return false;
    }
  }
  for (const auto& [name, t] : b)
    if (!a.count(name)) {
      first_difference = name;
      return false;
    }
  return true;
}

std::vector<int64_t> i64_values(const TensorMap& state, const std::string& name) {
  const HostTensor& t = state.at(name);
  std::vector<int64_t> values(static_cast<size_t>(t.numel()));
  std::memcpy(values.data(), t.bytes.data(), t.bytes.size());
  return values;
}

void check_sharded_equals_unsharded(const std::string& name, int world_size) {
  auto backend = make_backend("cpu");
  const OptimizerConfig config = sharding_config(name);
  auto reference_table = make_param_table(*backend, toy_model(), 3);
  auto reference = build_owning(*backend, *reference_table, config, {});
  const ShardPlan plan = plan_for(reference_table->params, world_size);

  std::vector<std::unique_ptr<ParamTable>> tables;
  std::vector<std::unique_ptr<Optimizer>> ranks;
  for (int r = 0; r < world_size; ++r) {
    tables.push_back(make_param_table(*backend, toy_model(), 3));
    std::vector<char> owned(reference_table->params.size());
    for (size_t i = 0; i < owned.size(); ++i) owned[i] = plan.owns(r, i);
    ranks.push_back(build_owning(*backend, *tables.back(), config, owned));
  }

  // Each rank keeps less state than the whole; the per-parameter states add up to the whole.
  size_t per_param_sum = 0;
  for (int r = 0; r < world_size; ++r) {
    CHECK(ranks[r]->total_state_bytes() < reference->total_state_bytes());
    for (size_t i = 0; i < reference_table->params.size(); ++i) {
      per_param_sum += ranks[r]->state_bytes(i);
      if (!plan.owns(r, i)) CHECK(ranks[r]->state_bytes(i) == 0);
    }
  }
  size_t reference_per_param = 0;
  for (size_t i = 0; i < reference_table->params.size(); ++i) reference_per_param += reference->state_bytes(i);
  CHECK(per_param_sum == reference_per_param);

  for (int64_t step = 1; step <= 5; ++step) {
    StepInfo info;
    info.step = step;
    info.lr = 0.02f;
    fill_gradients(*backend, reference_table->params, 17, step);
    reference->step(info);
    for (int r = 0; r < world_size; ++r) {
      fill_gradients(*backend, tables[r]->params, 17, step);
      ranks[r]->step(info);  // begin_step everywhere, update() of the owned parameters only
    }
    for (size_t i = 0; i < reference_table->params.size(); ++i)
      for (int r = 0; r < world_size; ++r)
        backend->copy(tables[r]->params[i].param, tables[plan.owner[i]]->params[i].param);
    for (int r = 0; r < world_size; ++r)
      REQUIRE(concat_all(*backend, tables[r]->params, false) == concat_all(*backend, reference_table->params, false));
  }

  TensorMap whole;
  reference->save_state(whole);
  std::vector<TensorMap> parts(static_cast<size_t>(world_size));
  for (int r = 0; r < world_size; ++r) ranks[r]->save_state(parts[r]);
  const TensorMap merged = merge_sharded_parts(parts);
  std::string difference;
  CHECK(same_bytes(merged, whole, difference));
  INFO("first differing tensor: " << difference);

  // The whole state loads into any sharding: each rank takes its part and continues identically.
  auto other_table = make_param_table(*backend, toy_model(), 3);
  const ShardPlan plan3 = plan_for(other_table->params, 3);
  std::vector<char> owned(other_table->params.size());
  for (size_t i = 0; i < owned.size(); ++i) owned[i] = plan3.owns(1, i);
  auto reloaded = build_owning(*backend, *other_table, config, owned);
  reloaded->load_state(whole);
  TensorMap reloaded_state;
  reloaded->save_state(reloaded_state);
  for (const auto& [tensor, value] : reloaded_state) {
    INFO(tensor);
    if (value.dtype == DType::F32) CHECK(value.bytes == whole.at(tensor).bytes);
  }
}

}  // namespace

TEST_CASE("sharded adamw - owners' updates and the merged state equal one unsharded optimizer", "[dist][shard]") {
  check_sharded_equals_unsharded("adamw", 2);
  check_sharded_equals_unsharded("adamw", 3);
}

TEST_CASE("sharded muon - owners' updates and the merged state equal one unsharded optimizer", "[dist][shard]") {
  check_sharded_equals_unsharded("muon", 2);
  check_sharded_equals_unsharded("muon", 3);
}

TEST_CASE("sharded galore_adamw - owners' updates and the merged state equal one unsharded optimizer",
          "[dist][shard]") {
  check_sharded_equals_unsharded("galore_adamw", 2);
  check_sharded_equals_unsharded("galore_adamw", 3);
}

TEST_CASE("sharded gum - owners' updates and the merged state equal one unsharded optimizer", "[dist][shard]") {
  check_sharded_equals_unsharded("gum", 2);
  check_sharded_equals_unsharded("gum", 3);
}

TEST_CASE("GUM on two ranks with different owned matrices draws the same full-rank blocks", "[dist][shard][gum]") {
  auto backend = make_backend("cpu");
  nlohmann::json keys = kShardingKeys;
  keys["update_proj_gap"] = 1;  // a new draw every step
  const OptimizerConfig config = optimizer_config("gum", keys);
  const ShardPlan plan = plan_for(make_param_table(*backend, toy_model(), 3)->params, 2);
  std::vector<std::unique_ptr<ParamTable>> tables;
  std::vector<std::unique_ptr<Optimizer>> ranks;
  for (int r = 0; r < 2; ++r) {
    tables.push_back(make_param_table(*backend, toy_model(), 3));
    std::vector<char> owned(tables.back()->params.size());
    for (size_t i = 0; i < owned.size(); ++i) owned[i] = plan.owns(r, i);
    ranks.push_back(build_owning(*backend, *tables.back(), config, owned));
  }
  std::vector<int64_t> seen(3, 0);
  for (int64_t step = 1; step <= 12; ++step) {
    StepInfo info;
    info.step = step;
    info.lr = 0.01f;
    TensorMap states[2];
    for (int r = 0; r < 2; ++r) {
      ranks[r]->begin_step(info);
      ranks[r]->save_state(states[r]);
    }
    const std::vector<int64_t> blocks = i64_values(states[0], "gum.full_rank_blocks");
    REQUIRE(blocks.size() == 1);
    CHECK(blocks == i64_values(states[1], "gum.full_rank_blocks"));
    CHECK(i64_values(states[0], "gum.sampler_position") == i64_values(states[1], "gum.sampler_position"));
    seen.at(static_cast<size_t>(blocks[0])) += 1;
  }
  // Twelve draws over three blocks: the draw really varies (every block chosen at least once).
  for (int64_t count : seen) CHECK(count > 0);
}

TEST_CASE("update of a parameter another rank owns is an error naming it", "[dist][shard]") {
  auto backend = make_backend("cpu");
  auto table = make_param_table(*backend, toy_model(), 3);
  const ShardPlan plan = plan_for(table->params, 2);
  std::vector<char> owned(table->params.size());
  for (size_t i = 0; i < owned.size(); ++i) owned[i] = plan.owns(0, i);
  for (const char* name : {"adamw", "muon", "galore_adamw", "gum"}) {
    auto optimizer = build_owning(*backend, *table, sharding_config(name), owned);
    StepInfo info;
    optimizer->begin_step(info);
    const size_t foreign = plan.owned_by(1).front();
    CHECK_THROWS_WITH(optimizer->update(foreign),
                      Catch::Contains(table->params[foreign].name) && Catch::Contains("another rank owns"));
    CHECK_THROWS_AS(build_owning(*backend, *table, sharding_config(name), std::vector<char>(3, 1)), Error);
  }
}

TEST_CASE("merge_sharded_parts takes single-owner tensors and maxes I64 flags and rejects disagreement",
          "[dist][shard]") {
  TensorMap a, b;
  a["w.exp_avg"] = HostTensor::from_f32(Shape{2}, {1, 2});
  b["v.exp_avg"] = HostTensor::from_f32(Shape{1}, {3});
  HostTensor flags_a(DType::I64, Shape{3}), flags_b(DType::I64, Shape{3});
  const int64_t fa[3] = {1, 0, 0}, fb[3] = {0, 0, 1};
  std::memcpy(flags_a.bytes.data(), fa, sizeof(fa));
  std::memcpy(flags_b.bytes.data(), fb, sizeof(fb));
  a["x.has_projector"] = flags_a;
  b["x.has_projector"] = flags_b;
  a["counter"] = HostTensor::from_f32(Shape{1}, {5});
  b["counter"] = HostTensor::from_f32(Shape{1}, {5});
  const TensorMap merged = merge_sharded_parts({a, b});
  CHECK(merged.size() == 4);
  CHECK(merged.at("v.exp_avg").to_f32() == std::vector<float>{3});
  CHECK(i64_values(merged, "x.has_projector") == std::vector<int64_t>{1, 0, 1});
  b["counter"] = HostTensor::from_f32(Shape{1}, {6});
  CHECK_THROWS_WITH(merge_sharded_parts({a, b}), Catch::Contains("'counter'") && Catch::Contains("rank 1"));
}

TEST_CASE("gather_tensor_maps on one rank returns its own map", "[dist][shard]") {
  auto backend = make_backend("cpu");
  auto comm = make_single_communicator(*backend);
  TensorMap mine;
  mine["a"] = HostTensor::from_f32(Shape{2}, {1, 2});
  std::vector<TensorMap> parts = gather_tensor_maps(*comm, mine, 0);
  REQUIRE(parts.size() == 1);
  CHECK(parts[0].at("a").bytes == mine.at("a").bytes);
}
