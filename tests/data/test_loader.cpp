#include <catch2/catch.hpp>
#include <set>

#include "data_test_util.h"
#include "gum/core/error.h"
#include "gum/data/loader.h"

using namespace gum;
using gum_test::fresh_dir;

namespace {

constexpr uint64_t kFingerprint = 42;
constexpr uint64_t kVocab = 50000;

// Shards whose token at stream position p is p % kVocab, so windows can be checked exactly.
std::vector<std::string> make_shards(const std::string& name, const std::vector<uint64_t>& sizes) {
  auto dir = fresh_dir(name);
  std::vector<std::string> paths;
  uint64_t position = 0;
  for (size_t s = 0; s < sizes.size(); ++s) {
    const std::string path = (dir / ("train_" + std::to_string(s) + ".bin")).string();
    ShardWriter writer(path, kVocab, kFingerprint);
    std::vector<int32_t> tokens;
    for (uint64_t i = 0; i < sizes[s]; ++i) tokens.push_back(static_cast<int32_t>(position++ % kVocab));
    writer.append_document(tokens.data(), tokens.size());
    writer.finish();
    paths.push_back(path);
  }
  return paths;
}

// The window (stream index) each row of a batch came from, checking inputs/targets agree.
std::vector<uint64_t> windows_of(const std::vector<int32_t>& inputs, const std::vector<int32_t>& targets, int seq_len) {
  std::vector<uint64_t> windows;
  for (size_t row = 0; row * seq_len < inputs.size(); ++row) {
    const uint64_t start = static_cast<uint64_t>(inputs[row * seq_len]);
    REQUIRE(start % seq_len == 0);
    for (int i = 0; i < seq_len; ++i) {
      REQUIRE(inputs[row * seq_len + i] == static_cast<int32_t>((start + i) % kVocab));
      REQUIRE(targets[row * seq_len + i] == static_cast<int32_t>((start + i + 1) % kVocab));
    }
    windows.push_back(start / seq_len);
  }
  return windows;
}

std::vector<uint64_t> take(TokenLoader& loader, int global_batch, int rank = 0, int world_size = 1) {
  const size_t n = static_cast<size_t>(global_batch / world_size) * loader.seq_len();
  std::vector<int32_t> inputs(n), targets(n);
  loader.next_batch(global_batch, rank, world_size, inputs.data(), targets.data());
  return windows_of(inputs, targets, loader.seq_len());
}

}  // namespace

TEST_CASE("window permutation is a bijection that depends on seed and epoch") {
  for (uint64_t n : {1ull, 2ull, 3ull, 17ull, 1000ull, 4097ull}) {
    WindowPermutation perm(n, 7, 0);
    std::set<uint64_t> seen;
    for (uint64_t i = 0; i < n; ++i) seen.insert(perm(i));
    CHECK(seen.size() == n);
    CHECK(*seen.rbegin() == n - 1);
  }
  WindowPermutation a(1000, 7, 0), b(1000, 7, 1), c(1000, 8, 0);
  int same_epoch = 0, same_seed = 0, fixed_points = 0;
  for (uint64_t i = 0; i < 1000; ++i) {
    same_epoch += a(i) == b(i);
    same_seed += a(i) == c(i);
    fixed_points += a(i) == i;
  }
  CHECK(same_epoch < 20);
  CHECK(same_seed < 20);
  CHECK(fixed_points < 20);
}

TEST_CASE("loader windows span shards and cover an epoch exactly once") {
  // 3 shards, one of them empty; 1201 tokens -> (1201 - 1) / 16 = 75 windows.
  auto shards = make_shards("loader_epoch", {500, 0, 701});
  const int seq_len = 16;
  TokenLoader loader(shards, seq_len, /*seed=*/3, /*shuffle=*/true, kFingerprint);
  CHECK(loader.total_tokens() == 1201);
  REQUIRE(loader.windows_per_epoch() == 75);
  std::vector<uint64_t> epoch0;
  for (int b = 0; b < 15; ++b) {
    auto w = take(loader, 5);
    epoch0.insert(epoch0.end(), w.begin(), w.end());
  }
  CHECK(loader.state().epoch == 1);
  CHECK(loader.state().next_window == 0);
  std::set<uint64_t> unique(epoch0.begin(), epoch0.end());
  CHECK(unique.size() == 75);
  std::vector<uint64_t> sorted(epoch0);
  std::sort(sorted.begin(), sorted.end());
  CHECK(sorted != epoch0);  // shuffled

  // The next epoch is another order of the same windows.
  std::vector<uint64_t> epoch1;
  for (int b = 0; b < 15; ++b) {
    auto w = take(loader, 5);
    epoch1.insert(epoch1.end(), w.begin(), w.end());
  }
  CHECK(std::set<uint64_t>(epoch1.begin(), epoch1.end()) == unique);
  CHECK(epoch1 != epoch0);

  TokenLoader ordered(shards, seq_len, 3, /*shuffle=*/false, kFingerprint);
  CHECK(take(ordered, 4) == std::vector<uint64_t>{0, 1, 2, 3});
}

TEST_CASE("a batch that crosses the end of an epoch takes its later rows from the next epoch's order") {
  auto shards = make_shards("loader_cross_epoch", {1201});  // (1201 - 1) / 16 = 75 windows
  const int seq_len = 16, batch = 7;                        // 7 does not divide 75: batches straddle epochs
  TokenLoader loader(shards, seq_len, /*seed=*/3, /*shuffle=*/true, kFingerprint);
  REQUIRE(loader.windows_per_epoch() == 75);
  std::vector<uint64_t> order;
  while (order.size() < 3 * 75) {
    auto w = take(loader, batch);
    order.insert(order.end(), w.begin(), w.end());
  }
  // The global order is the epochs' permutations end to end: position p is window
  // perm_{p / 75}(p % 75), so each epoch's 75 positions hold every window once.
  for (size_t p = 0; p < order.size(); ++p) {
    INFO("position " << p);
    REQUIRE(order[p] == WindowPermutation(75, 3, p / 75)(p % 75));
  }
  CHECK(loader.state().epoch == order.size() / 75);
  CHECK(loader.state().next_window == order.size() % 75);
}

TEST_CASE("loader is deterministic and resumes exactly from its state") {
  auto shards = make_shards("loader_resume", {3000, 2000});
  const int seq_len = 32, batch = 8;
  TokenLoader reference(shards, seq_len, 11, true, kFingerprint);
  std::vector<std::vector<uint64_t>> expected;
  for (int step = 0; step < 40; ++step) expected.push_back(take(reference, batch));  // crosses epochs (156 windows)

  TokenLoader again(shards, seq_len, 11, true, kFingerprint);
  for (int step = 0; step < 40; ++step) CHECK(take(again, batch) == expected[step]);

  for (int stop : {1, 19, 20, 33}) {
    TokenLoader first(shards, seq_len, 11, true, kFingerprint);
    for (int step = 0; step < stop; ++step) take(first, batch);
    LoaderState saved = first.state();
    TokenLoader resumed(shards, seq_len, 11, true, kFingerprint);
    resumed.restore(saved);
    for (int step = stop; step < 40; ++step) REQUIRE(take(resumed, batch) == expected[step]);
  }

  TokenLoader other_seed(shards, seq_len, 12, true, kFingerprint);
  CHECK(take(other_seed, batch) != expected[0]);
  CHECK_THROWS_WITH(reference.restore(LoaderState{0, 1000}), Catch::Contains("beyond"));
}

TEST_CASE("rank partitions equal the single-process global order") {
  auto shards = make_shards("loader_ranks", {4099});
  const int seq_len = 8, global_batch = 12;
  TokenLoader single(shards, seq_len, 5, true, kFingerprint);
  std::vector<std::vector<uint64_t>> global;
  for (int step = 0; step < 60; ++step) global.push_back(take(single, global_batch));  // 512 windows: crosses an epoch

  for (int world_size : {1, 2, 4}) {
    INFO("world size " << world_size);
    std::vector<TokenLoader> ranks;
    for (int r = 0; r < world_size; ++r) ranks.emplace_back(shards, seq_len, 5, true, kFingerprint);
    for (int step = 0; step < 60; ++step) {
      std::vector<uint64_t> combined;
      for (int r = 0; r < world_size; ++r) {
        auto part = take(ranks[r], global_batch, r, world_size);
        CHECK(part.size() == static_cast<size_t>(global_batch / world_size));
        combined.insert(combined.end(), part.begin(), part.end());
      }
      REQUIRE(combined == global[step]);
    }
    for (int r = 1; r < world_size; ++r) CHECK(ranks[r].state().next_window == ranks[0].state().next_window);
  }
  std::vector<int32_t> buffer(100);
  CHECK_THROWS_WITH(single.next_batch(10, 0, 4, buffer.data(), buffer.data()), Catch::Contains("multiple"));
}

TEST_CASE("loader refuses a corpus shorter than one window") {
  auto shards = make_shards("loader_short", {16});
  CHECK_THROWS_WITH(TokenLoader(shards, 16, 1, true, kFingerprint), Catch::Contains("fewer than one window"));
  CHECK_NOTHROW(TokenLoader(shards, 15, 1, true, kFingerprint));
  CHECK_THROWS_WITH(TokenLoader(shards, 15, 1, true, kFingerprint + 1), Catch::Contains("another tokenizer"));
}

TEST_CASE("eval windows predict every token exactly once") {
  for (uint64_t tokens : {17ull, 33ull, 1000ull, 1001ull}) {
    INFO("tokens " << tokens);
    auto shards = make_shards("eval_windows", {tokens / 3, tokens - tokens / 3});
    const int seq_len = 16;
    EvalWindows windows(shards, seq_len, kFingerprint);
    CHECK(windows.predicted_tokens() == tokens - 1);
    CHECK(windows.count() == (tokens - 1 + seq_len - 1) / seq_len);
    std::vector<int> predicted(tokens, 0);
    std::vector<int32_t> inputs(seq_len), targets(seq_len);
    for (uint64_t w = 0; w < windows.count(); ++w) {
      windows.get(w, inputs.data(), targets.data());
      for (int i = 0; i < seq_len; ++i) {
        const uint64_t position = w * seq_len + i;  // input position; its target is position + 1
        if (targets[i] < 0) {
          CHECK(position + 1 >= tokens);
          continue;
        }
        REQUIRE(inputs[i] == static_cast<int32_t>(position % kVocab));
        REQUIRE(targets[i] == static_cast<int32_t>((position + 1) % kVocab));
        ++predicted[position + 1];
      }
    }
    CHECK(predicted[0] == 0);
    CHECK(std::all_of(predicted.begin() + 1, predicted.end(), [](int n) { return n == 1; }));
  }
}
