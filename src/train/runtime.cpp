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

BatchLayout make_batch_layout(const TrainingConfig& t, int world_size, const std::string& context) {
  if (t.batch_size % world_size != 0)
    usage_error(context, ": training.batch_size (", t.batch_size, ") must be divisible by the number of ranks (",
                world_size, ")");
  BatchLayout b;
  b.rows_per_rank = t.batch_size / world_size;
  b.micro_batch = t.micro_batch_size > 0 ? t.micro_batch_size : b.rows_per_rank;
  if (b.micro_batch > b.rows_per_rank || b.rows_per_rank % b.micro_batch != 0)
    usage_error(context, ": training.micro_batch_size (", b.micro_batch, ") must divide the rows per rank (batch_size ",
                t.batch_size, " / ", world_size, " ranks = ", b.rows_per_rank, ")");
  b.accumulation_steps = b.rows_per_rank / b.micro_batch;
  b.ranks = world_size;
  return b;
}

int64_t planned_logits_chunk_rows(const TrainConfig& config, int64_t rows) {
  if (config.training.logits_chunk_rows > 0) return std::min<int64_t>(config.training.logits_chunk_rows, rows);
  // Below this the logits are too small to matter, and one chunk saves the head GEMM that
  // backward runs again for each chunk.
  constexpr int64_t kSmallLogitsBytes = int64_t(32) << 20;
  const int64_t row_bytes = config.model.vocab_size * int64_t(sizeof(float));
  const int64_t budget = std::max(kSmallLogitsBytes, rows * config.model.hidden_size * int64_t(sizeof(float)));
  return std::clamp<int64_t>(budget / row_bytes, 1, rows);
}

ModelMemory training_model_memory(const TrainConfig& config, const BatchLayout& layout) {
  ModelMemory memory;
  memory.logits_chunk_rows = planned_logits_chunk_rows(config, int64_t(layout.micro_batch) * config.training.seq_len);
  memory.per_layer_grads = config.training.fused_update && layout.accumulation_steps == 1;
  memory.gradient_sets = layout.ranks > 1 ? 2 : 1;
  return memory;
}

}  // namespace gum
