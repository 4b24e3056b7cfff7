#pragma once
// What a run reports: one console line per logging interval (loss, lr, grad norm, tokens/s,
// MFU, memory, ETA), a progress bar on a terminal, and every logged step appended to
// RUN_DIR/metrics.jsonl for plots (scripts/plot_metrics.py).
#include <cstdint>
#include <cstdio>
#include <nlohmann/json.hpp>
#include <string>

#include "gum/model/config.h"

namespace gum {

// Training FLOPs per token, forward + backward (PaLM, Chowdhery et al. 2022, appendix B):
// 6 * N for the weight matmuls (N = parameters that multiply activations: everything but the
// embedding table, which is a lookup; the LM head counts) plus 12 * L * T * (H * D) for the
// attention scores and values at context length T (full, non-causal count, as PaLM).
double training_flops_per_token(const LlamaConfig& c, int seq_len);
// Forward-only FLOPs per token (a third of the above): evaluation.
double forward_flops_per_token(const LlamaConfig& c, int seq_len);

// Dense peak of the device in TFLOP/s for MFU, from logging.peak_tflops or a known figure:
// H100 SXM dense bf16 989 TFLOP/s (docs/design.md §9). 0 = unknown (MFU printed as n/a).
double device_peak_tflops(const std::string& backend_name, double configured_peak_tflops);

// Peak resident memory of this process (Linux getrusage), bytes.
size_t peak_rss_bytes();

// Appends one JSON object per line to RUN_DIR/metrics.jsonl, flushed per line.
class MetricsLog {
 public:
  MetricsLog() = default;
  // keep_through_step < 0: start a fresh file. Otherwise keep the existing lines whose "step" is
  // <= keep_through_step and drop the rest: a resumed run rewrites what the interrupted run
  // logged after its last checkpoint, so the file is one consistent trajectory.
  MetricsLog(const std::string& path, int64_t keep_through_step);
  ~MetricsLog();
  MetricsLog(const MetricsLog&) = delete;
  MetricsLog& operator=(const MetricsLog&) = delete;
  MetricsLog(MetricsLog&& other) noexcept;
  MetricsLog& operator=(MetricsLog&& other) noexcept;

  bool is_open() const { return file_ != nullptr; }
  void append(const nlohmann::json& record);
  const std::string& path() const { return path_; }

 private:
  std::string path_;
  std::FILE* file_ = nullptr;
};

// A one-line progress bar redrawn in place; silent when stdout is not a terminal.
class ProgressBar {
 public:
  explicit ProgressBar(bool enabled);
  void draw(int64_t step, int64_t total, const std::string& suffix);
  void clear();  // before a normal log line

 private:
  bool enabled_;
  bool drawn_ = false;
};

// True when stdout is a terminal.
bool stdout_is_terminal();

}  // namespace gum
