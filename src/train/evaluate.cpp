#include "gum/train/evaluate.h"

#include <chrono>
#include <cmath>
#include <vector>

#include "gum/core/error.h"

namespace gum {

double EvalResult::perplexity() const { return std::exp(loss()); }

uint64_t eval_window_count(const EvalWindows& windows, int64_t max_tokens) {
  if (max_tokens <= 0) return windows.count();
  const uint64_t wanted = (static_cast<uint64_t>(max_tokens) + windows.seq_len() - 1) / windows.seq_len();
  return std::min<uint64_t>(wanted, windows.count());
}

EvalResult evaluate(LlamaModel& model, const EvalWindows& windows, Communicator& comm, int64_t max_tokens) {
  if (windows.seq_len() != model.seq_len())
    runtime_error("evaluate: validation windows have seq_len ", windows.seq_len(), " but the model was built for ",
                  model.seq_len());
  const auto start = std::chrono::steady_clock::now();
  const uint64_t total_windows = eval_window_count(windows, max_tokens);
  const int T = model.seq_len();
  const int max_batch = model.max_batch();
  std::vector<int32_t> inputs(size_t(max_batch) * T), targets(size_t(max_batch) * T);

  double loss_sum = 0;
  int64_t tokens = 0;
  int rows = 0;
  auto run_batch = [&] {
    TokenBatch batch;
    batch.tokens = inputs.data();
    batch.targets = targets.data();
    batch.batch = rows;
    loss_sum += model.forward(batch);
    rows = 0;
  };
  for (uint64_t w = comm.rank(); w < total_windows; w += comm.world_size()) {
    windows.get(w, inputs.data() + size_t(rows) * T, targets.data() + size_t(rows) * T);
    for (int t = 0; t < T; ++t) tokens += targets[size_t(rows) * T + t] >= 0 ? 1 : 0;
    if (++rows == max_batch) run_batch();
  }
  if (rows > 0) run_batch();

  EvalResult result;
  result.loss_sum = comm.all_reduce_host(loss_sum, ReduceOp::Sum);
  result.tokens = static_cast<int64_t>(std::llround(comm.all_reduce_host(static_cast<double>(tokens), ReduceOp::Sum)));
  result.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  return result;
}

}  // namespace gum
