#include "gum/data/sft_loader.h"

#include <algorithm>

#include "gum/core/error.h"
#include "gum/core/json_util.h"
#include "gum/core/logging.h"
#include "gum/data/corpus.h"
#include "gum/data/loader.h"
#include "line_reader.h"

namespace gum {

namespace {

int32_t choose_pad_token(const TextEncoder& encoder) {
  // Padding is never a target and never attended to by real tokens, so any valid id works.
  if (encoder.pad_id >= 0) return encoder.pad_id;
  if (encoder.eos_id >= 0) return encoder.eos_id;
  return 0;
}

}  // namespace

SftDataset::SftDataset(const SftConfig& config, const TextEncoder& encoder, int seq_len, bool validation)
    : config_(config), seq_len_(seq_len), pad_token_(choose_pad_token(encoder)) {
  if (seq_len < 1) usage_error("SFT data: seq_len must be positive, got ", seq_len);
  const std::string key = validation ? "data.sft.valid_files" : "data.sft.files";
  const std::vector<std::string>& patterns = validation ? config.valid_files : config.files;
  if (patterns.empty()) usage_error("SFT data: ", key, " is empty");
  const std::vector<std::string> files = expand_globs(patterns, key);
  stats_.files = files.size();
  for (const std::string& path : files) {
    LineReader reader(path);
    reader.for_each_line([&](std::string_view text, uint64_t line_number) {
      if (text.find_first_not_of(" \t") == std::string_view::npos) return true;  // blank lines separate nothing
      const std::string where = path + ":" + std::to_string(line_number);
      nlohmann::json line;
      try {
        line = nlohmann::json::parse(text);
      } catch (const nlohmann::json::parse_error& e) {
        runtime_error(where, ": invalid JSON (", e.what(), ")");
      }
      keep(sft_example_from_json(line, config_, encoder, where));
      return true;
    });
  }
  if (examples_.empty())
    runtime_error("SFT data: no usable example in ", files.size(), " file(s) (", stats_.lines, " read, ",
                  stats_.dropped_too_long, " too long, ", stats_.dropped_untrained, " with nothing to train on)");
}

SftDataset::SftDataset(std::vector<SftExample> examples, const SftConfig& config, const TextEncoder& encoder,
                       int seq_len)
    : config_(config), seq_len_(seq_len), pad_token_(choose_pad_token(encoder)) {
  if (seq_len < 1) usage_error("SFT data: seq_len must be positive, got ", seq_len);
  for (auto& ex : examples) keep(std::move(ex));
}

void SftDataset::keep(SftExample&& ex) {
  GUM_CHECK(ex.tokens.size() == ex.labels.size());
  ++stats_.lines;
  const size_t max_tokens = static_cast<size_t>(seq_len_) + 1;  // seq_len inputs and their targets
  if (ex.tokens.size() > max_tokens) {
    if (config_.truncation == SftTruncation::Drop) {
      ++stats_.dropped_too_long;
      return;
    }
    ex.tokens.resize(max_tokens);
    ex.labels.resize(max_tokens);
    ++stats_.truncated;
  }
  // labels[0] is never a target: nothing predicts the first token.
  uint64_t trained =
      ex.labels.empty() ? 0 : std::count_if(ex.labels.begin() + 1, ex.labels.end(), [](int32_t l) { return l >= 0; });
  if (trained == 0) {
    ++stats_.dropped_untrained;
    return;
  }
  ++stats_.examples;
  stats_.tokens += ex.tokens.size();
  stats_.trained_tokens += trained;
  examples_.push_back(std::move(ex));
}

nlohmann::json to_json(const SftLoaderState& s) { return {{"epoch", s.epoch}, {"next_example", s.next_example}}; }

SftLoaderState sft_loader_state_from_json(const nlohmann::json& j, const std::string& context) {
  if (!j.is_object() || !j.contains("epoch") || !j.contains("next_example"))
    runtime_error(context, ": SFT loader state must be {\"epoch\", \"next_example\"}, got ", j.dump());
  SftLoaderState s;
  read_key(j, "epoch", s.epoch, context, "sft_loader");
  read_key(j, "next_example", s.next_example, context, "sft_loader");
  return s;
}

SftLoader::SftLoader(const SftDataset& data) : data_(data) {
  if (data.size() == 0) runtime_error("SFT loader: the dataset has no examples");
}

size_t SftLoader::example_at(uint64_t epoch, uint64_t index) const {
  if (!data_.config().shuffle) return index;
  return WindowPermutation(data_.size(), data_.config().seed, epoch)(index);
}

void SftLoader::fill_row(SftBatch* out, int row) {
  const int T = data_.seq_len();
  const size_t base = static_cast<size_t>(row) * T;
  int used = 0;
  while (true) {
    if (state_.next_example == data_.size()) {
      if (used > 0) break;  // a row never spans two epochs
      ++state_.epoch;
      state_.next_example = 0;
    }
    const SftExample& ex = data_.example(example_at(state_.epoch, state_.next_example));
    const int length = static_cast<int>(ex.tokens.size()) - 1;  // inputs tokens[0..n-2], targets labels[1..n-1]
    if (used + length > T) break;
    if (out) {
      for (int i = 0; i < length; ++i) {
        const size_t at = base + used + i;
        out->tokens[at] = ex.tokens[i];
        out->targets[at] = ex.labels[i + 1];
        out->positions[at] = i;  // RoPE restarts with each example
        out->doc_start[at] = used;
        out->trained_tokens += ex.labels[i + 1] >= 0;
      }
      ++out->examples;
    }
    used += length;
    ++state_.next_example;
    if (data_.config().layout == SftLayout::Pad) break;
  }
  if (out) {
    for (int t = used; t < T; ++t) {
      out->tokens[base + t] = data_.pad_token();
      out->targets[base + t] = -1;
      out->positions[base + t] = t - used;
      out->doc_start[base + t] = used;
    }
  }
}

void SftLoader::next_batch(int global_batch, int rank, int world_size, SftBatch& out) {
  if (world_size < 1 || rank < 0 || rank >= world_size || global_batch < world_size)
    usage_error("SFT loader: global batch ", global_batch, " cannot be split over ", world_size, " ranks (rank ", rank,
                ")");
  const int begin = static_cast<int>(int64_t(rank) * global_batch / world_size);
  const int end = static_cast<int>(int64_t(rank + 1) * global_batch / world_size);
  const size_t n = static_cast<size_t>(end - begin) * data_.seq_len();
  out.rows = end - begin;
  out.seq_len = data_.seq_len();
  out.tokens.assign(n, 0);
  out.targets.assign(n, -1);
  out.positions.assign(n, 0);
  out.doc_start.assign(n, 0);
  out.trained_tokens = 0;
  out.examples = 0;
  for (int row = 0; row < global_batch; ++row) fill_row(row >= begin && row < end ? &out : nullptr, row - begin);
}

void SftLoader::restore(const SftLoaderState& s) {
  if (s.next_example > data_.size())
    runtime_error("SFT loader: checkpoint position ", s.next_example, " is past the ", data_.size(),
                  " examples of this dataset (did the SFT files change?)");
  state_ = s;
}

uint64_t SftLoader::rows_in_epoch(uint64_t epoch) const {
  SftLoader walk(data_);
  walk.state_ = {epoch, 0};
  uint64_t rows = 0;
  while (walk.state_.next_example < data_.size()) {
    walk.fill_row(nullptr, 0);
    ++rows;
  }
  return rows;
}

void SftLoader::log_summary() const {
  const SftStats& s = data_.stats();
  const uint64_t rows = rows_in_epoch(state_.epoch);
  const double slots = double(rows) * data_.seq_len();
  uint64_t positions = s.tokens - s.examples;  // each example fills n - 1 positions
  spdlog::info(
      "SFT data: {} examples from {} file(s) ({} read), {} tokens, {:.1f}% trained; {} truncated, {} dropped as "
      "longer than {} tokens, {} dropped with nothing to train on",
      s.examples, s.files, s.lines, s.tokens,
      100.0 * double(s.trained_tokens) / double(std::max<uint64_t>(1, s.tokens)), s.truncated, s.dropped_too_long,
      data_.seq_len() + 1, s.dropped_untrained);
  spdlog::info(
      "SFT rows ({}): {} per epoch of {} positions, {:.1f}% filled with examples, {:.1f}% of positions trained",
      sft_layout_name(data_.config().layout), rows, data_.seq_len(), 100.0 * double(positions) / std::max(1.0, slots),
      100.0 * double(s.trained_tokens) / std::max(1.0, slots));
}

}  // namespace gum
