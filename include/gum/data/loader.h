#pragma once
// Training and evaluation windows over the token stream of a split's shards.
//
// The shards, in the given order, form one stream of T tokens. A window of seq_len + 1 tokens
// gives seq_len inputs and their next-token targets; window w starts at token w * seq_len, so
// there are (T - 1) / seq_len full windows and consecutive windows share one token.
#include <cstdint>
#include <string>
#include <vector>

#include "gum/data/shard.h"

namespace gum {

// The concatenated tokens of several shards (mmapped, checked when opened).
class TokenStream {
 public:
  TokenStream(const std::vector<std::string>& shard_paths, uint64_t expected_fingerprint);
  uint64_t size() const { return total_tokens_; }
  // Copies tokens [begin, begin + count), across shard boundaries.
  void copy(uint64_t begin, uint64_t count, int32_t* out) const;
  const std::vector<TokenShard>& shards() const { return shards_; }

 private:
  std::vector<TokenShard> shards_;
  std::vector<uint64_t> shard_starts_;  // stream offset of each shard's first token
  uint64_t total_tokens_ = 0;
};

// Position of the loader in its infinite sequence of windows: what checkpoints save.
struct LoaderState {
  uint64_t epoch = 0;
  uint64_t next_window = 0;  // index into this epoch's permuted order
};

// A bijection of [0, n) that depends on (seed, epoch): a balanced Feistel network keyed by
// Philox on the smallest even bit width covering n, cycle-walking back into range
// (Black & Rogaway, "Ciphers with arbitrary finite domains", 2002). Any element of the
// permutation is computed in O(1) memory, so resuming or sharding needs no stored order.
class WindowPermutation {
 public:
  WindowPermutation(uint64_t n, uint64_t seed, uint64_t epoch);
  uint64_t operator()(uint64_t index) const;

 private:
  uint64_t feistel(uint64_t x) const;
  uint64_t n_;
  uint64_t seed_;
  uint64_t epoch_;
  int half_bits_;
  uint64_t half_mask_;
};

class TokenLoader {
 public:
  TokenLoader(const std::vector<std::string>& shard_paths, int seq_len, uint64_t seed, bool shuffle,
              uint64_t expected_fingerprint);

  // Non-overlapping windows of seq_len + 1 tokens (stride seq_len) over the concatenated stream.
  uint64_t windows_per_epoch() const { return windows_per_epoch_; }

  // Rank `rank` of `world_size` receives its contiguous part of the next global batch of
  // `global_batch` windows: rows [rank * g / w, (rank + 1) * g / w). inputs and targets each
  // hold (g / w) * seq_len int32. The global order is a Philox-seeded permutation per epoch
  // (seed, epoch), independent of world size; crossing the end of an epoch continues in the
  // next epoch's order. Every rank advances the state by the whole global batch.
  void next_batch(int global_batch, int rank, int world_size, int32_t* inputs, int32_t* targets);

  LoaderState state() const { return state_; }
  // A state from a checkpoint; one outside this corpus's epoch is a runtime error.
  void restore(const LoaderState& s);
  uint64_t total_tokens() const { return stream_.size(); }
  int seq_len() const { return seq_len_; }

  // The stream index of the window at global position `index` of epoch `epoch`.
  uint64_t window_at(uint64_t epoch, uint64_t index) const;

 private:
  TokenStream stream_;
  int seq_len_;
  uint64_t seed_;
  bool shuffle_;
  uint64_t windows_per_epoch_;
  LoaderState state_;
  std::vector<int32_t> window_buffer_;
};

// Validation windows: stride seq_len over the stream, every token after the first predicted
// exactly once. The last window may be partial: its missing targets are -1 (ignored by the
// loss) and its missing inputs are 0.
class EvalWindows {
 public:
  EvalWindows(const std::vector<std::string>& shard_paths, int seq_len, uint64_t expected_fingerprint);
  uint64_t count() const { return count_; }
  void get(uint64_t index, int32_t* inputs, int32_t* targets) const;
  uint64_t predicted_tokens() const { return stream_.size() > 0 ? stream_.size() - 1 : 0; }
  int seq_len() const { return seq_len_; }

 private:
  TokenStream stream_;
  int seq_len_;
  uint64_t count_;
};

}  // namespace gum
