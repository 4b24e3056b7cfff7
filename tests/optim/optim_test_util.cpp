#include "optim_test_util.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "gum/core/error.h"
#include "gum/core/philox.h"
#include "gum/optim/optimizer_config_json.h"

namespace gum::test {

std::vector<ParamDesc> toy_model() {
  std::vector<ParamDesc> d;
  d.push_back({"model.embed_tokens.weight", Shape{20, 16}, ParamKind::Embedding, -1, true});
  for (int layer = 0; layer < 3; ++layer) {
    const std::string prefix = "model.layers." + std::to_string(layer) + ".";
    d.push_back({prefix + "input_layernorm.weight", Shape{16}, ParamKind::Norm, layer, false});
    d.push_back({prefix + "self_attn.q_proj.weight", Shape{16, 24}, ParamKind::Matrix, layer, true});
    if (layer == 2)
      d.push_back({prefix + "self_attn.o_proj.weight", Shape{16, 16}, ParamKind::Matrix, layer, true});
    else
      d.push_back({prefix + "mlp.down_proj.weight", Shape{24, 16}, ParamKind::Matrix, layer, true});
  }
  d.push_back({"model.norm.weight", Shape{16}, ParamKind::Norm, 3, false});
  d.push_back({"lm_head.weight", Shape{20, 16}, ParamKind::Head, 3, true});
  return d;
}

std::unique_ptr<ParamTable> make_param_table(Backend& backend, const std::vector<ParamDesc>& descs, uint64_t seed) {
  std::vector<NamedShape> layout;
  for (const auto& d : descs) layout.push_back({d.name, d.shape});
  auto table = std::make_unique<ParamTable>();
  table->values = Arena(backend, DType::F32, layout);
  table->grads = Arena(backend, DType::F32, layout);
  int max_layer = -1;
  for (size_t i = 0; i < descs.size(); ++i) {
    const auto& d = descs[i];
    table->params.push_back(
        OptimParam{d.name, table->values.view(i), table->grads.view(i), d.kind, d.layer, d.weight_decay});
    if (d.kind == ParamKind::Matrix) max_layer = std::max(max_layer, d.layer);
    backend.fill_normal(table->values.view(i), seed, 1000 + i, d.kind == ParamKind::Norm ? 1.0f : 0.0f, 0.5f);
  }
  table->num_layers = max_layer + 1;
  return table;
}

std::vector<float> to_host(Backend& backend, const Tensor& t) {
  std::vector<float> out(static_cast<size_t>(t.numel()));
  backend.copy_to_host(out.data(), t);
  return out;
}

void from_host(Backend& backend, const Tensor& t, const std::vector<float>& values) {
  GUM_CHECK(static_cast<int64_t>(values.size()) == t.numel(), "host values for ", t.shape.str());
  backend.copy_from_host(t, values.data());
}

std::vector<float> concat_all(Backend& backend, const std::vector<OptimParam>& params, bool grads) {
  std::vector<float> all;
  for (const auto& p : params) {
    auto part = to_host(backend, grads ? p.grad : p.param);
    all.insert(all.end(), part.begin(), part.end());
  }
  return all;
}

void fill_gradients(Backend& backend, const std::vector<OptimParam>& params, uint64_t seed, int64_t step) {
  for (size_t i = 0; i < params.size(); ++i)
    backend.fill_normal(params[i].grad, seed, (static_cast<uint64_t>(step) << 16) + i, 0.0f, 1.0f);
}

OptimizerConfig optimizer_config(const std::string& name, const nlohmann::json& keys) {
  const std::vector<std::string> common = field_keys(optimizer_common_keys());
  const std::vector<std::string>& own = optimizer_spec(name).keys.names;
  nlohmann::json section = {{"name", name}};
  for (const auto& [key, value] : keys.items())
    if (std::find(common.begin(), common.end(), key) != common.end() ||
        std::find(own.begin(), own.end(), key) != own.end())
      section[key] = value;
  return optimizer_config_from_json(section, "test config");
}

std::unique_ptr<Optimizer> build(Backend& backend, ParamTable& table, const OptimizerConfig& config, uint64_t seed) {
  OptimizerContext ctx;
  ctx.backend = &backend;
  ctx.params = table.params;
  ctx.num_layers = table.num_layers;
  ctx.config = config;
  ctx.seed = seed;
  return make_optimizer(config.name, ctx);
}

bool reference_available() {
  static int available = -1;
  if (available < 0) {
    const std::string command = std::string(GUM_SYSTEM_PYTHON) + " -c 'import torch, numpy' > /dev/null 2>&1";
    available = std::system(command.c_str()) == 0 ? 1 : 0;
  }
  return available == 1;
}

static void write_f32(const std::filesystem::path& path, const std::vector<float>& values) {
  std::ofstream out(path, std::ios::binary);
  out.write(reinterpret_cast<const char*>(values.data()), static_cast<std::streamsize>(values.size() * 4));
  GUM_CHECK(out.good(), "cannot write ", path.string());
}

static std::vector<float> read_f32(const std::filesystem::path& path, size_t count) {
  std::ifstream in(path, std::ios::binary);
  std::vector<float> values(count);
  in.read(reinterpret_cast<char*>(values.data()), static_cast<std::streamsize>(count * 4));
  GUM_CHECK(in.gcount() == static_cast<std::streamsize>(count * 4), "short reference output ", path.string());
  return values;
}

ReferenceResult run_reference(const std::string& case_name, const nlohmann::json& overrides, uint64_t seed,
                              const std::vector<OptimParam>& params, const std::vector<float>& initial,
                              const std::vector<float>& grads_per_step, const std::vector<float>& lr,
                              const std::vector<float>& lr_ratio) {
  namespace fs = std::filesystem;
  const fs::path dir = fs::path(GUM_BINARY_DIR) / "optim_reference_cases" / case_name;
  fs::remove_all(dir);
  fs::create_directories(dir);
  nlohmann::json spec;
  spec["overrides"] = overrides;
  spec["seed"] = seed;
  spec["first_step"] = 1;
  spec["lr"] = lr;
  spec["lr_ratio"] = lr_ratio;
  for (const auto& p : params)
    spec["params"].push_back({{"name", p.name},
                              {"shape", p.param.shape.to_vector()},
                              {"kind", p.is_matrix() ? "matrix" : "other"},
                              {"layer", p.layer},
                              {"weight_decay", p.weight_decay}});
  std::ofstream(dir / "case.json") << spec.dump(1);
  write_f32(dir / "init.bin", initial);
  write_f32(dir / "grads.bin", grads_per_step);
  const std::string command = std::string(GUM_SYSTEM_PYTHON) + " " + GUM_SOURCE_DIR +
                              "/tests/reference/optim_ref.py run " + dir.string() + " 2>&1";
  const int rc = std::system(command.c_str());
  GUM_CHECK(rc == 0, "reference failed: ", command);
  ReferenceResult result;
  result.params = read_f32(dir / "result.bin", initial.size());
  nlohmann::json index;
  std::ifstream(dir / "state.json") >> index;
  size_t total = 0;
  for (const auto& entry : index) total += static_cast<size_t>(Shape(entry[1].get<std::vector<int64_t>>()).numel());
  const std::vector<float> values = read_f32(dir / "state.bin", total);
  size_t offset = 0;
  for (const auto& entry : index) {
    const Shape shape = Shape(entry[1].get<std::vector<int64_t>>());
    const auto begin = values.begin() + static_cast<std::ptrdiff_t>(offset);
    result.state[entry[0].get<std::string>()] =
        HostTensor::from_f32(shape, std::vector<float>(begin, begin + shape.numel()));
    offset += static_cast<size_t>(shape.numel());
  }
  return result;
}

double norm(const std::vector<float>& a) {
  double s = 0;
  for (float x : a) s += double(x) * x;
  return std::sqrt(s);
}

double distance(const std::vector<float>& a, const std::vector<float>& b) {
  GUM_CHECK(a.size() == b.size(), "distance of vectors of different sizes");
  double s = 0;
  for (size_t i = 0; i < a.size(); ++i) s += (double(a[i]) - b[i]) * (double(a[i]) - b[i]);
  return std::sqrt(s);
}

}  // namespace gum::test
