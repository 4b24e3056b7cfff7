#include "gum/train/runtime.h"

#include <dlfcn.h>
#include <omp.h>

#include <algorithm>

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
  r.backend = make_backend(config.training.backend, device, backend_options(config.training));
  r.comm = make_communicator(*r.backend);
  return r;
}

BackendOptions backend_options(const TrainingConfig& training) {
  BackendOptions options;
  options.attention = training.attention;
  options.allow_tf32 = training.allow_tf32;
  return options;
}

ModelUse training_model_use(const TrainingConfig& training) {
  return training.activation_checkpointing ? ModelUse::TrainingRecompute : ModelUse::Training;
}

}  // namespace gum
