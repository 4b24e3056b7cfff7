#pragma once
// Shared by the optimizer tests: a small parameter table on a backend, gradients from Philox,
// host copies, and the PyTorch reference runner (tests/reference/optim_ref.py).
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "gum/backend/arena.h"
#include "gum/optim/optimizer.h"

namespace gum::test {

struct ParamDesc {
  std::string name;
  Shape shape;
  ParamKind kind;
  int layer;
  bool weight_decay;
};

// A 3-block toy model: wide (m < n), tall (m > n) and square matrices, vectors, embedding, head.
std::vector<ParamDesc> toy_model();

struct ParamTable {
  Arena values, grads;
  std::vector<OptimParam> params;
  int num_layers = 0;
};
std::unique_ptr<ParamTable> make_param_table(Backend& backend, const std::vector<ParamDesc>& descs, uint64_t seed);

std::vector<float> to_host(Backend& backend, const Tensor& t);
void from_host(Backend& backend, const Tensor& t, const std::vector<float>& values);
// Every parameter (or gradient) concatenated in table order.
std::vector<float> concat_all(Backend& backend, const std::vector<OptimParam>& params, bool grads);
// Gradients of step `step`: standard normals from Philox (seed, stream = step).
void fill_gradients(Backend& backend, const std::vector<OptimParam>& params, uint64_t seed, int64_t step);

// The config of optimizer `name`: `keys` read as the `optimizer` section, less those `name`
// does not read, so one set of settings serves every optimizer of a loop.
OptimizerConfig optimizer_config(const std::string& name, const nlohmann::json& keys);
std::unique_ptr<Optimizer> build(Backend& backend, ParamTable& table, const OptimizerConfig& config, uint64_t seed);

// True when GUM_SYSTEM_PYTHON can import torch.
bool reference_available();
// What the reference ends with: every parameter (concatenated in table order) and its
// optimizer state under the C++ state names.
struct ReferenceResult {
  std::vector<float> params;
  TensorMap state;
};
// Writes the case (the hyperparameter overrides as literals, with "name"; the table, initial
// values, `grads_per_step`, lr schedule) into a fresh directory and runs the reference, which
// applies the overrides to its own table of defaults.
ReferenceResult run_reference(const std::string& case_name, const nlohmann::json& overrides, uint64_t seed,
                              const std::vector<OptimParam>& params, const std::vector<float>& initial,
                              const std::vector<float>& grads_per_step, const std::vector<float>& lr,
                              const std::vector<float>& lr_ratio);

double norm(const std::vector<float>& a);
double distance(const std::vector<float>& a, const std::vector<float>& b);

}  // namespace gum::test
