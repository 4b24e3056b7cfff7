#include "gum/train/evaluate.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <functional>
#include <vector>

#include "gum/core/error.h"

namespace gum {

namespace {

// Host rows of one evaluation batch.
struct EvalRows {
  std::vector<int32_t> tokens, targets, positions, doc_start;
};

// The evaluation loop both data kinds share: rows [0, total_rows), row i on rank i % world_size,
// forwarded in batches of up to model.max_batch(). fill_row(i, tokens, targets, positions,
// doc_start) writes one row of seq_len values (positions/doc_start null when not packed).
using FillRow = std::function<void(uint64_t, int32_t*, int32_t*, int32_t*, int32_t*)>;

EvalResult evaluate_rows(LlamaModel& model, Communicator& comm, uint64_t total_rows, bool packed,
                         const FillRow& fill_row) {
  const auto start = std::chrono::steady_clock::now();
  const int T = model.seq_len();
  const int max_batch = model.max_batch();
  const size_t n = size_t(max_batch) * T;
  EvalRows host;
  host.tokens.resize(n);
  host.targets.resize(n);
  if (packed) {
    host.positions.resize(n);
    host.doc_start.resize(n);
  }

  double loss_sum = 0;
  int64_t tokens = 0;
  int rows = 0;
  auto run_batch = [&] {
    TokenBatch batch;
    batch.tokens = host.tokens.data();
    batch.targets = host.targets.data();
    batch.positions = packed ? host.positions.data() : nullptr;
    batch.doc_start = packed ? host.doc_start.data() : nullptr;
    batch.batch = rows;
    loss_sum += model.forward(batch);
    rows = 0;
  };
  for (uint64_t i = 0; i < total_rows; ++i) {
    const bool mine = i % uint64_t(comm.world_size()) == uint64_t(comm.rank());
    const size_t offset = size_t(rows) * T;
    if (!mine) {
      // Sequential sources must still walk past other ranks' rows.
      fill_row(i, nullptr, nullptr, nullptr, nullptr);
      continue;
    }
    fill_row(i, host.tokens.data() + offset, host.targets.data() + offset,
             packed ? host.positions.data() + offset : nullptr, packed ? host.doc_start.data() + offset : nullptr);
    for (int t = 0; t < T; ++t) tokens += host.targets[offset + t] >= 0 ? 1 : 0;
    if (++rows == max_batch) run_batch();
  }
  if (rows > 0) run_batch();

  EvalResult result;
  result.loss_sum = comm.all_reduce_host(loss_sum, ReduceOp::Sum);
  result.tokens = static_cast<int64_t>(std::llround(comm.all_reduce_host(static_cast<double>(tokens), ReduceOp::Sum)));
  result.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  return result;
}

uint64_t rows_for_budget(uint64_t available, int64_t max_tokens, int seq_len) {
  if (max_tokens <= 0) return available;
  const uint64_t wanted = (static_cast<uint64_t>(max_tokens) + seq_len - 1) / seq_len;
  return std::min<uint64_t>(wanted, available);
}

}  // namespace

double EvalResult::perplexity() const { return std::exp(loss()); }

uint64_t eval_window_count(const EvalWindows& windows, int64_t max_tokens) {
  return rows_for_budget(windows.count(), max_tokens, windows.seq_len());
}

EvalResult evaluate(LlamaModel& model, const EvalWindows& windows, Communicator& comm, int64_t max_tokens) {
  if (windows.seq_len() != model.seq_len())
    runtime_error("evaluate: validation windows have seq_len ", windows.seq_len(), " but the model was built for ",
                  model.seq_len());
  return evaluate_rows(model, comm, eval_window_count(windows, max_tokens), false,
                       [&](uint64_t w, int32_t* tokens, int32_t* targets, int32_t*, int32_t*) {
                         if (tokens) windows.get(w, tokens, targets);
                       });
}

EvalResult evaluate(LlamaModel& model, const SftDataset& valid, Communicator& comm, int64_t max_tokens) {
  if (valid.seq_len() != model.seq_len())
    runtime_error("evaluate: SFT validation rows have seq_len ", valid.seq_len(), " but the model was built for ",
                  model.seq_len());
  const int T = model.seq_len();
  SftLoader loader(valid);
  const uint64_t total_rows = rows_for_budget(loader.rows_in_epoch(0), max_tokens, T);
  SftBatch row;
  return evaluate_rows(model, comm, total_rows, true,
                       [&](uint64_t, int32_t* tokens, int32_t* targets, int32_t* positions, int32_t* doc_start) {
                         loader.next_batch(1, 0, 1, row);
                         if (!tokens) return;
                         std::copy(row.tokens.begin(), row.tokens.end(), tokens);
                         std::copy(row.targets.begin(), row.targets.end(), targets);
                         std::copy(row.positions.begin(), row.positions.end(), positions);
                         std::copy(row.doc_start.begin(), row.doc_start.end(), doc_start);
                       });
}

}  // namespace gum
