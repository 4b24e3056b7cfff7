#include <algorithm>
#include <catch2/catch.hpp>
#include <cmath>
#include <limits>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "gum/backend/backend.h"
#include "gum/core/error.h"
#include "gum/dist/sharding.h"

using namespace gum;

namespace {

std::vector<ShardItem> items_with_costs(const std::vector<double>& costs) {
  std::vector<ShardItem> items;
  for (size_t i = 0; i < costs.size(); ++i) items.push_back({"item" + std::to_string(i), costs[i]});
  return items;
}

// The seven block matrices of a LLaMA layer, [out, in] as in Hugging Face.
std::vector<ShardItem> llama_matrices(int layers, int64_t hidden, int64_t intermediate) {
  std::vector<ShardItem> items;
  for (int layer = 0; layer < layers; ++layer) {
    std::string prefix = "model.layers." + std::to_string(layer) + ".";
    for (const char* name : {"self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj"})
      items.push_back({prefix + name + ".weight", matrix_update_cost(Shape{hidden, hidden})});
    items.push_back({prefix + "mlp.gate_proj.weight", matrix_update_cost(Shape{intermediate, hidden})});
    items.push_back({prefix + "mlp.up_proj.weight", matrix_update_cost(Shape{intermediate, hidden})});
    items.push_back({prefix + "mlp.down_proj.weight", matrix_update_cost(Shape{hidden, intermediate})});
  }
  return items;
}

void check_consistent(const ShardPlan& plan, const std::vector<ShardItem>& items) {
  REQUIRE(plan.owner.size() == items.size());
  std::vector<double> cost(static_cast<size_t>(plan.world_size), 0.0);
  for (size_t i = 0; i < items.size(); ++i) {
    REQUIRE(plan.owner[i] >= 0);
    REQUIRE(plan.owner[i] < plan.world_size);
    cost[static_cast<size_t>(plan.owner[i])] += items[i].cost;
  }
  for (int r = 0; r < plan.world_size; ++r) CHECK(plan.rank_cost[static_cast<size_t>(r)] == Approx(cost[r]));
  size_t owned = 0;
  for (int r = 0; r < plan.world_size; ++r) owned += plan.owned_by(r).size();
  CHECK(owned == items.size());
}

}  // namespace

TEST_CASE("sharding follows longest-processing-time-first on a worked example", "[dist]") {
  // 5 -> r0; 4 -> r1; 3 -> r1 (4 < 5); 3 -> r0 (5 < 7); 3 -> r1 (7 < 8).
  auto items = items_with_costs({5, 4, 3, 3, 3});
  ShardPlan plan = plan_shards(items, 2);
  CHECK(plan.owner == std::vector<int>({0, 1, 1, 0, 1}));
  CHECK(plan.rank_cost == std::vector<double>({8, 10}));
  CHECK(plan.owned_by(0) == std::vector<size_t>({0, 3}));
  CHECK(plan.owned_by(1) == std::vector<size_t>({1, 2, 4}));
  CHECK(plan.owns(1, 4));
  CHECK_FALSE(plan.owns(0, 4));
  CHECK(plan.imbalance() == Approx(10.0 / 9.0));
  check_consistent(plan, items);
}

TEST_CASE("sharding breaks ties by item index and then by rank", "[dist]") {
  ShardPlan plan = plan_shards(items_with_costs({1, 1, 1, 1, 1}), 2);
  CHECK(plan.owner == std::vector<int>({0, 1, 0, 1, 0}));
  ShardPlan zero = plan_shards(items_with_costs({0, 0, 0}), 3);
  CHECK(zero.owner == std::vector<int>({0, 0, 0}));  // zero cost never changes the least-loaded rank
  CHECK(zero.imbalance() == 1.0);
}

TEST_CASE("sharding is deterministic for a given item list and world size", "[dist]") {
  std::mt19937_64 rng(7);
  std::uniform_int_distribution<int> dims(1, 64);
  std::vector<ShardItem> items;
  for (int i = 0; i < 200; ++i) {
    Shape shape{dims(rng) * 64, dims(rng) * 64};
    items.push_back({"w" + std::to_string(i), matrix_update_cost(shape)});
  }
  for (int world : {1, 2, 3, 8, 13}) {
    ShardPlan a = plan_shards(items, world);
    ShardPlan b = plan_shards(items, world);
    CHECK(a.owner == b.owner);
    CHECK(a.rank_cost == b.rank_cost);
    check_consistent(a, items);
    // Graham's bound for list scheduling: no rank exceeds the mean by more than the largest item.
    double total = std::accumulate(a.rank_cost.begin(), a.rank_cost.end(), 0.0);
    double largest_item = 0;
    for (const auto& item : items) largest_item = std::max(largest_item, item.cost);
    double largest_rank = *std::max_element(a.rank_cost.begin(), a.rank_cost.end());
    CHECK(largest_rank <= total / world + largest_item);
  }
}

TEST_CASE("sharding balances a LLaMA-7B's matrices over 8 ranks", "[dist]") {
  auto items = llama_matrices(32, 4096, 11008);
  ShardPlan plan = plan_shards(items, 8);
  check_consistent(plan, items);
  CHECK(plan.imbalance() < 1.02);
  for (int r = 0; r < 8; ++r) CHECK_FALSE(plan.owned_by(r).empty());
  CHECK(plan.summary().find("rank 7: ") != std::string::npos);
}

TEST_CASE("sharding with more ranks than items leaves ranks idle", "[dist]") {
  ShardPlan plan = plan_shards(items_with_costs({3, 9, 1}), 5);
  CHECK(plan.owner == std::vector<int>({1, 0, 2}));
  CHECK(plan.owned_by(3).empty());
  CHECK(plan.owned_by(4).empty());
  ShardPlan one = plan_shards(items_with_costs({3, 9, 1}), 1);
  CHECK(one.owner == std::vector<int>({0, 0, 0}));
  CHECK(plan_shards({}, 4).owner.empty());
}

TEST_CASE("sharding rejects bad world sizes and costs, naming the item", "[dist]") {
  CHECK_THROWS_WITH(plan_shards(items_with_costs({1}), 0), Catch::Contains("world size"));
  CHECK_THROWS_WITH(plan_shards(items_with_costs({1, -2}), 2), Catch::Contains("item 1 'item1'"));
  CHECK_THROWS_WITH(plan_shards(items_with_costs({std::numeric_limits<double>::quiet_NaN()}), 2),
                    Catch::Contains("item 0 'item0'"));
}

TEST_CASE("cost models: elements and the m*n*min(m,n) of Newton-Schulz or an SVD", "[dist]") {
  CHECK(numel_cost(Shape{4, 6}) == 24);
  CHECK(matrix_update_cost(Shape{4, 6}) == 4 * 6 * 4);
  CHECK(matrix_update_cost(Shape{6, 4}) == 6 * 4 * 4);
  CHECK(matrix_update_cost(Shape{2, 3, 5}) == 6 * 5 * 5);  // leading dims are rows
  CHECK(matrix_update_cost(Shape{7}) == 7);
}

TEST_CASE("broadcast_from_owners checks the plan against the tensors and the job", "[dist]") {
  auto backend = make_backend("cpu");
  auto comm = make_single_communicator(*backend);
  std::vector<float> a = {1, 2}, b = {3};
  std::vector<Tensor> tensors = {Tensor(a.data(), DType::F32, Device::CPU, Shape{2}),
                                 Tensor(b.data(), DType::F32, Device::CPU, Shape{1})};
  ShardPlan plan = plan_shards(items_with_costs({2, 1}), 1);
  broadcast_from_owners(*comm, plan, tensors);
  CHECK(a == std::vector<float>({1, 2}));
  CHECK(b == std::vector<float>({3}));
  CHECK_THROWS_WITH(broadcast_from_owners(*comm, plan_shards(items_with_costs({2, 1}), 2), tensors),
                    Catch::Contains("world size 2"));
  CHECK_THROWS_WITH(broadcast_from_owners(*comm, plan_shards(items_with_costs({2}), 1), tensors),
                    Catch::Contains("2 tensors for a plan of 1 items"));
}
