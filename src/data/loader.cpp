#include "gum/data/loader.h"

#include <algorithm>

#include "gum/core/error.h"
#include "gum/core/philox.h"

namespace gum {

TokenStream::TokenStream(const std::vector<std::string>& shard_paths, uint64_t expected_fingerprint) {
  if (shard_paths.empty()) runtime_error("token stream: no shards given");
  shards_.reserve(shard_paths.size());
  for (const auto& path : shard_paths) {
    shards_.emplace_back(path, expected_fingerprint);
    shard_starts_.push_back(total_tokens_);
    total_tokens_ += shards_.back().token_count();
  }
}

void TokenStream::copy(uint64_t begin, uint64_t count, int32_t* out) const {
  GUM_CHECK(begin <= total_tokens_ && count <= total_tokens_ - begin, "tokens [", begin, ", ", begin + count,
            ") of a stream of ", total_tokens_);
  // The shard holding `begin`: the last one starting at or before it (empty shards are skipped).
  size_t shard =
      static_cast<size_t>(std::upper_bound(shard_starts_.begin(), shard_starts_.end(), begin) - shard_starts_.begin()) -
      1;
  while (count > 0) {
    const uint64_t local = begin - shard_starts_[shard];
    const uint64_t available = shards_[shard].token_count() - local;
    const uint64_t take = std::min(available, count);
    if (take > 0) shards_[shard].copy_tokens(local, take, out);
    out += take;
    begin += take;
    count -= take;
    ++shard;
  }
}

WindowPermutation::WindowPermutation(uint64_t n, uint64_t seed, uint64_t epoch) : n_(n), seed_(seed), epoch_(epoch) {
  int bits = 2;
  while (bits < 64 && (1ull << bits) < n) bits += 2;
  half_bits_ = bits / 2;
  half_mask_ = (1ull << half_bits_) - 1;
}

uint64_t WindowPermutation::feistel(uint64_t x) const {
  constexpr int kRounds = 6;
  uint64_t left = x >> half_bits_, right = x & half_mask_;
  for (int round = 0; round < kRounds; ++round) {
    // The round function: Philox keyed by the seed, the epoch as its stream, (round, right) as the counter.
    Philox4 r = philox4x32(seed_, epoch_, (static_cast<uint64_t>(round) << 32) | right);
    const uint64_t f = ((static_cast<uint64_t>(r.v[1]) << 32) | r.v[0]) & half_mask_;
    const uint64_t new_right = left ^ f;
    left = right;
    right = new_right;
  }
  return (left << half_bits_) | right;
}

uint64_t WindowPermutation::operator()(uint64_t index) const {
  GUM_CHECK(index < n_, "permutation index ", index, " of ", n_);
  // The Feistel network permutes [0, 4^k) with 4^k < 4n, so a few walks reach [0, n).
  uint64_t x = feistel(index);
  while (x >= n_) x = feistel(x);
  return x;
}

TokenLoader::TokenLoader(const std::vector<std::string>& shard_paths, int seq_len, uint64_t seed, bool shuffle,
                         uint64_t expected_fingerprint)
    : stream_(shard_paths, expected_fingerprint), seq_len_(seq_len), seed_(seed), shuffle_(shuffle) {
  if (seq_len < 1) usage_error("data loader: seq_len must be positive, got ", seq_len);
  const uint64_t tokens = stream_.size();
  windows_per_epoch_ = tokens > 0 ? (tokens - 1) / static_cast<uint64_t>(seq_len) : 0;
  if (windows_per_epoch_ == 0)
    runtime_error("data loader: the training shards hold ", tokens,
                  " tokens, fewer than one window of seq_len + 1 = ", seq_len + 1, " (first shard ",
                  shard_paths.front(), ")");
  window_buffer_.resize(static_cast<size_t>(seq_len) + 1);
}

uint64_t TokenLoader::window_at(uint64_t epoch, uint64_t index) const {
  if (!shuffle_) return index;
  return WindowPermutation(windows_per_epoch_, seed_, epoch)(index);
}

void TokenLoader::next_batch(int global_batch, int rank, int world_size, int32_t* inputs, int32_t* targets) {
  if (world_size < 1 || rank < 0 || rank >= world_size)
    usage_error("data loader: rank ", rank, " of world size ", world_size);
  if (global_batch < 1 || global_batch % world_size != 0)
    usage_error("data loader: global batch ", global_batch, " is not a positive multiple of the world size ",
                world_size);
  const uint64_t rows_per_rank = static_cast<uint64_t>(global_batch / world_size);
  const uint64_t first_row = static_cast<uint64_t>(rank) * rows_per_rank;
  const size_t seq = static_cast<size_t>(seq_len_);
  for (uint64_t row = 0; row < rows_per_rank; ++row) {
    // Global position of this row in the infinite sequence of epochs.
    const uint64_t position = state_.next_window + first_row + row;
    const uint64_t epoch = state_.epoch + position / windows_per_epoch_;
    const uint64_t index = position % windows_per_epoch_;
    const uint64_t window = window_at(epoch, index);
    stream_.copy(window * seq, seq + 1, window_buffer_.data());
    std::copy(window_buffer_.begin(), window_buffer_.begin() + static_cast<long>(seq), inputs + row * seq);
    std::copy(window_buffer_.begin() + 1, window_buffer_.end(), targets + row * seq);
  }
  const uint64_t next = state_.next_window + static_cast<uint64_t>(global_batch);
  state_.epoch += next / windows_per_epoch_;
  state_.next_window = next % windows_per_epoch_;
}

void TokenLoader::restore(const LoaderState& s) {
  if (s.next_window >= windows_per_epoch_)
    runtime_error("data loader: saved position ", s.next_window, " in epoch ", s.epoch, " is beyond the ",
                  windows_per_epoch_, " windows of this corpus (different shards or seq_len?)");
  state_ = s;
}

EvalWindows::EvalWindows(const std::vector<std::string>& shard_paths, int seq_len, uint64_t expected_fingerprint)
    : stream_(shard_paths, expected_fingerprint), seq_len_(seq_len) {
  if (seq_len < 1) usage_error("evaluation windows: seq_len must be positive, got ", seq_len);
  const uint64_t predicted = predicted_tokens();
  count_ = (predicted + static_cast<uint64_t>(seq_len) - 1) / static_cast<uint64_t>(seq_len);
}

void EvalWindows::get(uint64_t index, int32_t* inputs, int32_t* targets) const {
  GUM_CHECK(index < count_, "evaluation window ", index, " of ", count_);
  const uint64_t seq = static_cast<uint64_t>(seq_len_);
  const uint64_t begin = index * seq;
  // Window tokens [begin, begin + seq]; the stream may end earlier in the last window.
  const uint64_t available = std::min(seq + 1, stream_.size() - begin);
  std::vector<int32_t> tokens(seq + 1, 0);
  stream_.copy(begin, available, tokens.data());
  for (uint64_t i = 0; i < seq; ++i) {
    inputs[i] = i < available ? tokens[i] : 0;
    targets[i] = i + 1 < available ? tokens[i + 1] : -1;
  }
}

}  // namespace gum
