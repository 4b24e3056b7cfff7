#include "gum/train/metrics.h"

#include <sys/resource.h>
#include <unistd.h>

#include <cerrno>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <vector>

#include "gum/core/error.h"

namespace gum {

double training_flops_per_token(const LlamaConfig& c, int seq_len) {
  const double embedding = double(c.vocab_size) * c.hidden_size;
  // With tied embeddings the table is also the LM head, so its matmul stays counted.
  const double matmul_params = double(c.num_parameters()) - (c.tie_word_embeddings ? 0.0 : embedding);
  const double attention =
      12.0 * c.num_hidden_layers * double(seq_len) * c.num_attention_heads * c.attention_head_dim();
  return 6.0 * matmul_params + attention;
}

double forward_flops_per_token(const LlamaConfig& c, int seq_len) { return training_flops_per_token(c, seq_len) / 3.0; }

double device_peak_tflops(const std::string& backend_name, double configured_peak_tflops) {
  if (configured_peak_tflops > 0) return configured_peak_tflops;
  if (backend_name.find("cuda") != std::string::npos) return 989.0;  // H100 SXM dense bf16
  return 0.0;
}

size_t peak_rss_bytes() {
  struct rusage usage {};
  getrusage(RUSAGE_SELF, &usage);
  return static_cast<size_t>(usage.ru_maxrss) * 1024;  // Linux reports KiB
}

bool stdout_is_terminal() { return isatty(STDOUT_FILENO) != 0; }

MetricsLog::MetricsLog(const std::string& path, int64_t keep_through_step) : path_(path) {
  std::vector<std::string> kept;
  if (keep_through_step >= 0) {
    std::ifstream in(path);
    std::string line;
    while (std::getline(in, line)) {
      if (line.empty()) continue;
      nlohmann::json record = nlohmann::json::parse(line, nullptr, /*allow_exceptions=*/false);
      // A line cut short by the crash that interrupted the run does not parse: drop it.
      if (record.is_discarded() || !record.contains("step")) continue;
      if (record["step"].get<int64_t>() <= keep_through_step) kept.push_back(line);
    }
  }
  std::error_code ec;
  const std::filesystem::path parent = std::filesystem::path(path).parent_path();
  if (!parent.empty()) std::filesystem::create_directories(parent, ec);
  file_ = std::fopen(path.c_str(), "w");
  if (!file_) runtime_error(path, ": cannot create metrics file (", std::strerror(errno), ")");
  for (const auto& line : kept) std::fprintf(file_, "%s\n", line.c_str());
  std::fflush(file_);
}

MetricsLog::~MetricsLog() {
  if (file_) std::fclose(file_);
}

MetricsLog::MetricsLog(MetricsLog&& other) noexcept : path_(std::move(other.path_)), file_(other.file_) {
  other.file_ = nullptr;
}

MetricsLog& MetricsLog::operator=(MetricsLog&& other) noexcept {
  if (this != &other) {
    if (file_) std::fclose(file_);
    path_ = std::move(other.path_);
    file_ = other.file_;
    other.file_ = nullptr;
  }
  return *this;
}

void MetricsLog::append(const nlohmann::json& record) {
  if (!file_) return;
  std::string line = record.dump();
  std::fprintf(file_, "%s\n", line.c_str());
  if (std::fflush(file_) != 0) runtime_error(path_, ": write failed (disk full?)");
}

ProgressBar::ProgressBar(bool enabled) : enabled_(enabled) {}

void ProgressBar::draw(int64_t step, int64_t total, const std::string& suffix) {
  if (!enabled_ || total <= 0) return;
  const int width = 30;
  int filled = static_cast<int>(width * step / total);
  std::string bar(filled, '#');
  bar.resize(width, '.');
  std::printf("\r\033[K[%s] %3d%% %s", bar.c_str(), static_cast<int>(100 * step / total), suffix.c_str());
  std::fflush(stdout);
  drawn_ = true;
}

void ProgressBar::clear() {
  if (!drawn_) return;
  std::printf("\r\033[K");
  std::fflush(stdout);
  drawn_ = false;
}

}  // namespace gum
