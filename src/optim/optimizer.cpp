#include "gum/optim/optimizer.h"

#include <cstdio>
#include <map>
#include <sstream>

#include "gum/core/format.h"
#include "gum/model/llama.h"

namespace gum {

size_t Optimizer::total_state_bytes() const {
  size_t bytes = shared_state_bytes();
  for (size_t i = 0; i < params_.size(); ++i) bytes += state_bytes(i);
  return bytes;
}

void Optimizer::step(const StepInfo& info) {
  begin_step(info);
  std::vector<size_t> all(params_.size());
  for (size_t i = 0; i < all.size(); ++i) all[i] = i;
  prepare(all);
  for (size_t i : all)
    if (owns(i)) update(i);
}

void Optimizer::set_param_weights(size_t index, const Tensor& weights) {
  OptimParam& p = params_.at(index);
  GUM_CHECK(weights.shape == p.param.shape, "weights ", weights.shape.str(), " for ", p.name, " ", p.param.shape.str());
  p.param = weights;
}

std::vector<size_t> Optimizer::layer_params(int layer) const {
  std::vector<size_t> indices;
  for (size_t i = 0; i < params_.size(); ++i)
    if (params_[i].layer == layer) indices.push_back(i);
  return indices;
}

std::vector<OptimParam> make_optim_params(LlamaModel& model) {
  std::vector<OptimParam> params;
  for (const auto& spec : model.specs()) {
    OptimParam p;
    p.name = spec.name;
    p.param = model.params().view(spec.name);
    p.grad = model.grad(spec.name);
    p.kind = spec.kind;
    p.layer = spec.layer;
    p.weight_decay = spec.weight_decay;
    params.push_back(p);
  }
  return params;
}

std::string optimizer_memory_table(const Optimizer& optimizer) {
  struct Row {
    size_t tensors = 0, param_bytes = 0, state_bytes = 0;
  };
  std::map<std::string, Row> rows;
  Row total;
  const auto& params = optimizer.params();
  for (size_t i = 0; i < params.size(); ++i) {
    Row& row = rows[param_kind_name(params[i].kind)];
    const size_t state = optimizer.state_bytes(i);
    row.tensors += 1;
    row.param_bytes += params[i].param.nbytes();
    row.state_bytes += state;
    total.tensors += 1;
    total.param_bytes += params[i].param.nbytes();
    total.state_bytes += state;
  }
  std::ostringstream out;
  char line[160];
  std::snprintf(line, sizeof(line), "optimizer %s: state memory by parameter group\n", optimizer.name().c_str());
  out << line;
  std::snprintf(line, sizeof(line), "  %-12s %8s %14s %14s %8s\n", "group", "tensors", "params", "state", "state/p");
  out << line;
  auto print_row = [&](const std::string& name, const Row& row) {
    const double ratio = row.param_bytes ? double(row.state_bytes) / double(row.param_bytes) : 0.0;
    std::snprintf(line, sizeof(line), "  %-12s %8zu %14s %14s %8.3f\n", name.c_str(), row.tensors,
                  format_bytes(double(row.param_bytes)).c_str(), format_bytes(double(row.state_bytes)).c_str(), ratio);
    out << line;
  };
  for (const auto& [name, row] : rows) print_row(name, row);
  if (optimizer.shared_state_bytes() > 0) {
    std::snprintf(line, sizeof(line), "  %-12s %8s %14s %14s\n", "shared", "", "",
                  format_bytes(double(optimizer.shared_state_bytes())).c_str());
    out << line;
  }
  total.state_bytes = optimizer.total_state_bytes();
  print_row("total", total);
  std::snprintf(line, sizeof(line), "  workspace (scratch, not checkpointed): %s\n",
                format_bytes(double(optimizer.workspace_bytes())).c_str());
  out << line;
  return out.str();
}

}  // namespace gum
