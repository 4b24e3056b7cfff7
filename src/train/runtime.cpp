#include "gum/train/runtime.h"

#include <dlfcn.h>
#include <omp.h>

#include <algorithm>

#include "gum/core/error.h"
#include "gum/core/logging.h"

namespace gum {

void set_cpu_threads(int threads) {
  if (threads <= 0) return;
  omp_set_num_threads(threads);
  // OpenBLAS keeps its own pool; its setter exists only when the BLAS in use is OpenBLAS.
  using SetThreads = void (*)(int);
  if (auto set = reinterpret_cast<SetThreads>(dlsym(RTLD_DEFAULT, "openblas_set_num_threads"))) set(threads);
}

Runtime make_runtime(const TrainConfig& config) {
  Runtime r;
  r.launch = launch_info_from_environment();
  setup_logging(r.launch.rank, r.launch.world_size, config.logging.verbose);
  int threads = config.training.threads;
  // Several ranks on one host would each start a thread per core: share the cores instead.
  if (threads == 0 && r.launch.local_size > 1) threads = std::max(1, omp_get_num_procs() / r.launch.local_size);
  set_cpu_threads(threads);
  int device = 0;
  if (config.training.backend != "cpu" && cuda_available())
    device = device_index_for_local_rank(r.launch.local_rank, cuda_device_count());
  r.backend = make_backend(config.training.backend, device);
  r.comm = make_communicator(*r.backend);
  return r;
}

ModelUse training_model_use(const TrainingConfig& training) {
  return training.activation_checkpointing ? ModelUse::TrainingRecompute : ModelUse::Training;
}

std::vector<OptimParam> make_optim_params(LlamaModel& model) {
  std::vector<OptimParam> params;
  for (const auto& spec : model.specs()) {
    OptimParam p;
    p.name = spec.name;
    p.param = model.params().view(spec.name);
    p.grad = model.grads().view(spec.name);
    p.kind = spec.kind;
    p.layer = spec.layer;
    p.weight_decay = spec.weight_decay;
    params.push_back(p);
  }
  return params;
}

TensorMap model_weights_to_host(LlamaModel& model) {
  TensorMap out;
  for (const auto& spec : model.specs()) {
    HostTensor host(DType::F32, spec.shape);
    model.backend().copy_to_host(host.bytes.data(), model.params().view(spec.name));
    out.emplace(spec.name, std::move(host));
  }
  return out;
}

void load_model_weights(LlamaModel& model, const TensorMap& weights, const std::string& source) {
  for (const auto& spec : model.specs()) {
    auto it = weights.find(spec.name);
    if (it == weights.end()) runtime_error(source, ": tensor '", spec.name, "' is missing");
    if (!(it->second.shape == spec.shape))
      runtime_error(source, ": tensor '", spec.name, "' has shape ", it->second.shape.str(), ", the model needs ",
                    spec.shape.str());
    if (it->second.dtype == DType::F32) {
      model.backend().copy_from_host(model.params().view(spec.name), it->second.bytes.data());
    } else {
      std::vector<float> values = it->second.to_f32();
      model.backend().copy_from_host(model.params().view(spec.name), values.data());
    }
  }
  if (weights.size() != model.specs().size()) {
    for (const auto& [name, tensor] : weights) {
      bool known =
          std::any_of(model.specs().begin(), model.specs().end(), [&](const ParamSpec& s) { return s.name == name; });
      if (!known) runtime_error(source, ": tensor '", name, "' is not part of this model (a different config?)");
    }
  }
}

}  // namespace gum
