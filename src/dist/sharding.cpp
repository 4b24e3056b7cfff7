#include "gum/dist/sharding.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <numeric>

#include "gum/core/error.h"

namespace gum {

std::vector<size_t> ShardPlan::owned_by(int rank) const {
  std::vector<size_t> items;
  for (size_t i = 0; i < owner.size(); ++i)
    if (owner[i] == rank) items.push_back(i);
  return items;
}

double ShardPlan::imbalance() const {
  double total = std::accumulate(rank_cost.begin(), rank_cost.end(), 0.0);
  if (total <= 0) return 1;
  double largest = *std::max_element(rank_cost.begin(), rank_cost.end());
  return largest / (total / world_size);
}

std::string ShardPlan::summary() const {
  double total = std::accumulate(rank_cost.begin(), rank_cost.end(), 0.0);
  std::string text;
  for (int rank = 0; rank < world_size; ++rank) {
    char line[160];
    double share = total > 0 ? 100.0 * rank_cost[rank] / total : 0.0;
    std::snprintf(line, sizeof(line), "rank %d: %zu items, cost %.3g (%.1f%%)\n", rank, owned_by(rank).size(),
                  rank_cost[rank], share);
    text += line;
  }
  return text;
}

ShardPlan plan_shards(const std::vector<ShardItem>& items, int world_size) {
  if (world_size < 1) usage_error("sharding plan: world size must be at least 1, got ", world_size);
  ShardPlan plan;
  plan.world_size = world_size;
  plan.owner.assign(items.size(), 0);
  plan.rank_cost.assign(static_cast<size_t>(world_size), 0.0);
  for (size_t i = 0; i < items.size(); ++i) {
    if (!std::isfinite(items[i].cost) || items[i].cost < 0)
      usage_error("sharding plan: item ", i, " '", items[i].name, "' has cost ", items[i].cost,
                  " (costs must be finite and >= 0)");
    plan.names.push_back(items[i].name);
  }

  std::vector<size_t> order(items.size());
  std::iota(order.begin(), order.end(), size_t{0});
  // stable_sort keeps equal costs in index order: the tie rule that makes the plan reproducible.
  std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) { return items[a].cost > items[b].cost; });
  for (size_t item : order) {
    // min_element returns the first minimum: ties go to the lower rank.
    auto least = std::min_element(plan.rank_cost.begin(), plan.rank_cost.end());
    int rank = static_cast<int>(least - plan.rank_cost.begin());
    plan.owner[item] = rank;
    *least += items[item].cost;
  }
  return plan;
}

double numel_cost(const Shape& shape) { return static_cast<double>(shape.numel()); }

double matrix_update_cost(const Shape& shape) {
  if (shape.rank < 2) return numel_cost(shape);
  double cols = static_cast<double>(shape[shape.rank - 1]);
  double rows = static_cast<double>(shape.numel()) / std::max(cols, 1.0);
  return rows * cols * std::min(rows, cols);
}

void broadcast_from_owners(Communicator& comm, const ShardPlan& plan, const std::vector<Tensor>& tensors) {
  if (tensors.size() != plan.owner.size())
    runtime_error("broadcast_from_owners: ", tensors.size(), " tensors for a plan of ", plan.owner.size(), " items");
  if (plan.world_size != comm.world_size())
    runtime_error("broadcast_from_owners: the plan is for world size ", plan.world_size, " but the job has ",
                  comm.world_size(), " ranks");
  for (size_t i = 0; i < tensors.size(); ++i) comm.broadcast(tensors[i], plan.owner[i]);
}

void broadcast_from_owners(Communicator& comm, const ShardPlan& plan, const std::vector<Tensor>& tensors,
                           const std::vector<size_t>& items) {
  if (tensors.size() != plan.owner.size())
    runtime_error("broadcast_from_owners: ", tensors.size(), " tensors for a plan of ", plan.owner.size(), " items");
  for (size_t i : items) comm.broadcast(tensors.at(i), plan.owner.at(i));
}

namespace {

// A plain length-prefixed encoding of a TensorMap for broadcast_bytes: for each tensor its
// name, dtype, rank, dims and bytes (host byte order: both ends run the same binary).
template <typename T>
void put(std::vector<uint8_t>& out, const T& value) {
  const auto* p = reinterpret_cast<const uint8_t*>(&value);
  out.insert(out.end(), p, p + sizeof(T));
}

std::vector<uint8_t> encode_tensor_map(const TensorMap& map) {
  std::vector<uint8_t> out;
  put(out, static_cast<uint64_t>(map.size()));
  for (const auto& [name, t] : map) {
    put(out, static_cast<uint64_t>(name.size()));
    out.insert(out.end(), name.begin(), name.end());
    put(out, static_cast<int32_t>(t.dtype));
    put(out, static_cast<int32_t>(t.shape.rank));
    for (int d = 0; d < t.shape.rank; ++d) put(out, t.shape[d]);
    put(out, static_cast<uint64_t>(t.bytes.size()));
    out.insert(out.end(), t.bytes.begin(), t.bytes.end());
  }
  return out;
}

class ByteReader {
 public:
  explicit ByteReader(const std::vector<uint8_t>& bytes) : bytes_(bytes) {}
  template <typename T>
  T get() {
    T value;
    std::memcpy(&value, take(sizeof(T)), sizeof(T));
    return value;
  }
  const uint8_t* take(size_t n) {
    if (n > bytes_.size() - at_) runtime_error("gather_tensor_maps: truncated message (", bytes_.size(), " bytes)");
    const uint8_t* p = bytes_.data() + at_;
    at_ += n;
    return p;
  }

 private:
  const std::vector<uint8_t>& bytes_;
  size_t at_ = 0;
};

TensorMap decode_tensor_map(const std::vector<uint8_t>& bytes) {
  ByteReader in(bytes);
  TensorMap map;
  const uint64_t count = in.get<uint64_t>();
  for (uint64_t k = 0; k < count; ++k) {
    const uint64_t name_size = in.get<uint64_t>();
    const auto* name = reinterpret_cast<const char*>(in.take(name_size));
    HostTensor t;
    t.dtype = static_cast<DType>(in.get<int32_t>());
    t.shape.rank = in.get<int32_t>();
    if (t.shape.rank < 0 || t.shape.rank > kMaxDims) runtime_error("gather_tensor_maps: bad rank ", t.shape.rank);
    for (int d = 0; d < t.shape.rank; ++d) t.shape.dims[d] = in.get<int64_t>();
    const uint64_t size = in.get<uint64_t>();
    const uint8_t* data = in.take(size);
    t.bytes.assign(data, data + size);
    map[std::string(name, name_size)] = std::move(t);
  }
  return map;
}

}  // namespace

std::vector<TensorMap> gather_tensor_maps(Communicator& comm, const TensorMap& mine, int root) {
  std::vector<TensorMap> parts;
  if (comm.rank() == root) parts.resize(static_cast<size_t>(comm.world_size()));
  for (int sender = 0; sender < comm.world_size(); ++sender) {
    if (sender == root) {
      if (comm.rank() == root) parts[root] = mine;
      continue;
    }
    std::vector<uint8_t> bytes;
    if (comm.rank() == sender) bytes = encode_tensor_map(mine);
    comm.broadcast_bytes(bytes, sender);
    if (comm.rank() == root) parts[sender] = decode_tensor_map(bytes);
  }
  return parts;
}

TensorMap merge_sharded_parts(const std::vector<TensorMap>& parts) {
  TensorMap merged;
  for (size_t rank = 0; rank < parts.size(); ++rank) {
    for (const auto& [name, t] : parts[rank]) {
      auto it = merged.find(name);
      if (it == merged.end()) {
        merged[name] = t;
        continue;
      }
      HostTensor& have = it->second;
      if (have.dtype == t.dtype && have.shape == t.shape && have.bytes == t.bytes) continue;
      if (have.dtype != DType::I64 || t.dtype != DType::I64 || !(have.shape == t.shape))
        runtime_error("merging sharded optimizer state: tensor '", name, "' of rank ", rank,
                      " differs from an earlier rank's (", dtype_name(t.dtype), " ", t.shape.str(), " vs ",
                      dtype_name(have.dtype), " ", have.shape.str(), ")");
      auto* into = reinterpret_cast<int64_t*>(have.bytes.data());
      const auto* from = reinterpret_cast<const int64_t*>(t.bytes.data());
      for (int64_t i = 0; i < t.shape.numel(); ++i) into[i] = std::max(into[i], from[i]);
    }
  }
  return merged;
}

}  // namespace gum
