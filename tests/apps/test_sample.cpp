// Sampling: the token choice rule (greedy, temperature, nucleus) and generation with a tiny model
// through the KV-cache decoder, checked against the old full-recompute loop (every step a whole
// LlamaModel::forward of the visible window) written out here.
#include <catch2/catch.hpp>
#include <cmath>
#include <filesystem>

#include "gum/backend/backend.h"
#include "gum/core/error.h"
#include "gum/data/tokenizer.h"
#include "gum/model/decoder.h"
#include "gum/model/llama.h"
#include "sample.h"

using namespace gum;
using Catch::Matchers::Contains;

namespace {

LlamaConfig tiny_config(int vocab) {
  LlamaConfig c;
  c.hidden_size = 32;
  c.intermediate_size = 48;
  c.num_hidden_layers = 2;
  c.num_attention_heads = 4;
  c.num_key_value_heads = 2;
  c.vocab_size = vocab;
  c.max_position_embeddings = 64;
  c.initializer_range = 0.5;  // large weights: peaked, varied logits
  return c;
}

// Greedy decoding without a cache, step by step from the logits of LlamaModel::forward over the
// visible window: the last min(context, W) tokens at first, one more per step until W, then the most
// recent W/2 (sample.h's sliding policy), always at positions 0.. (W = the model's seq_len).
std::vector<int32_t> full_recompute_greedy(LlamaModel& model, std::vector<int32_t> context, int steps) {
  const size_t T = static_cast<size_t>(model.seq_len());
  const int V = model.config().vocab_size;
  std::vector<int32_t> out;
  size_t visible = std::min(context.size(), T);
  for (int s = 0; s < steps; ++s) {
    if (s > 0) visible = visible < T ? visible + 1 : std::max<size_t>(1, T / 2);
    std::vector<int32_t> window(context.end() - static_cast<std::ptrdiff_t>(visible), context.end());
    window.resize(T, 0);  // causal: the padding after the window is never attended to
    TokenBatch batch;
    batch.tokens = window.data();
    batch.batch = 1;
    model.forward(batch);
    std::vector<float> logits(T * V);
    model.backend().copy_to_host(logits.data(), model.logits().row_slice(0, static_cast<int64_t>(T)));
    const float* row = logits.data() + (visible - 1) * V;
    int32_t best = 0;
    for (int v = 1; v < V; ++v)
      if (row[v] > row[best]) best = v;
    out.push_back(best);
    context.push_back(best);
  }
  return out;
}

}  // namespace

TEST_CASE("choose_next_token: argmax, nucleus and temperature by inverse CDF", "[sample]") {
  const std::vector<float> logits = {std::log(0.2f), std::log(0.5f), std::log(0.3f), std::log(0.5f)};
  // Greedy: the first of the tied maxima.
  CHECK(choose_next_token(logits.data(), 4, 0.0, 1.0, 0.99) == 1);
  // A tiny nucleus is greedy whatever the uniform.
  for (double u : {0.001, 0.5, 0.999}) CHECK(choose_next_token(logits.data(), 4, 1.0, 1e-6, u) == 1);
  // Full distribution (mass 1.5): sorted 1 (0.5), 3 (0.5), 2 (0.3), 0 (0.2).
  CHECK(choose_next_token(logits.data(), 4, 1.0, 1.0, 0.10) == 1);  // 0.15 < 0.5
  CHECK(choose_next_token(logits.data(), 4, 1.0, 1.0, 0.50) == 3);  // 0.75 in [0.5, 1.0)
  CHECK(choose_next_token(logits.data(), 4, 1.0, 1.0, 0.80) == 2);  // 1.2 in [1.0, 1.3)
  CHECK(choose_next_token(logits.data(), 4, 1.0, 1.0, 0.95) == 0);  // 1.425 >= 1.3
  // top_p 0.6: 1 and 3 hold 1.0 / 1.5 = 0.67 >= 0.6, so the nucleus is {1, 3}, renormalised.
  CHECK(choose_next_token(logits.data(), 4, 1.0, 0.6, 0.49) == 1);
  CHECK(choose_next_token(logits.data(), 4, 1.0, 0.6, 0.51) == 3);
  CHECK(choose_next_token(logits.data(), 4, 1.0, 0.6, 0.999) == 3);
  // Temperature 2: weights are square roots, 0.2 -> 0.447 of a total 2.41.
  const double total = 2 * std::sqrt(0.5) + std::sqrt(0.3) + std::sqrt(0.2);
  CHECK(choose_next_token(logits.data(), 4, 2.0, 1.0, 1.0 - 0.99 * std::sqrt(0.2) / total) == 0);
  // Sampled frequencies follow the probabilities (uniform grid).
  std::vector<int> counts(4, 0);
  for (int i = 0; i < 1500; ++i) ++counts[choose_next_token(logits.data(), 4, 1.0, 1.0, (i + 0.5) / 1500)];
  CHECK(counts == std::vector<int>{200, 500, 300, 500});

  std::vector<float> bad = {0.0f, NAN};
  CHECK_THROWS_WITH(choose_next_token(bad.data(), 2, 1.0, 1.0, 0.5), Contains("token 1"));
  SampleOptions o;
  o.top_p = 0;
  CHECK_THROWS_WITH(validate_sample_options(o), Contains("top-p"));
  o.top_p = 1;
  o.temperature = -1;
  CHECK_THROWS_WITH(validate_sample_options(o), Contains("temperature"));
}

TEST_CASE("greedy generation with the KV cache equals the full-recompute loop, through a sliding window", "[sample]") {
  auto backend = make_backend("cpu");
  LlamaModel model(tiny_config(50), *backend, 1, 8);
  model.init_weights(11);
  LlamaDecoder decoder(model, 8);  // window 8: the model's seq_len
  const std::vector<int32_t> prompt = {3, 17, 42};
  SampleOptions greedy;
  greedy.max_new_tokens = 20;  // 3 + 20 > 8: the window slides (to 4 tokens) three times
  std::vector<int32_t> streamed;
  std::vector<int32_t> out = sample_tokens(decoder, prompt, greedy, -1, [&](int32_t t) { streamed.push_back(t); });
  REQUIRE(out.size() == 20);
  CHECK(out == full_recompute_greedy(model, prompt, 20));
  CHECK(streamed == out);
  CHECK(sample_tokens(decoder, prompt, greedy, -1) == out);  // deterministic, the cache starts over

  // A prompt longer than the window keeps its last 8 tokens, then slides.
  const std::vector<int32_t> long_prompt = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11};
  CHECK(sample_tokens(decoder, long_prompt, greedy, -1) == full_recompute_greedy(model, long_prompt, 20));
  // A one-token window slides every step (to one token) and still works.
  LlamaDecoder one(model, 1);
  greedy.max_new_tokens = 5;
  std::vector<int32_t> by_one = sample_tokens(one, prompt, greedy, -1);
  std::vector<int32_t> expected_by_one;
  for (int32_t last = prompt.back(); expected_by_one.size() < 5;) {  // each token seen alone at position 0
    last = full_recompute_greedy(model, {last}, 1)[0];
    expected_by_one.push_back(last);
  }
  CHECK(by_one == expected_by_one);
  greedy.max_new_tokens = 20;

  // A vanishing nucleus is greedy even at temperature 1.
  SampleOptions narrow = greedy;
  narrow.temperature = 1.0;
  narrow.top_p = 1e-6;
  CHECK(sample_tokens(decoder, prompt, narrow, -1) == out);

  // EOS stops generation: make the first greedy token the EOS.
  std::vector<int32_t> stopped = sample_tokens(decoder, prompt, greedy, out[0]);
  CHECK(stopped == std::vector<int32_t>{out[0]});
  SampleOptions no_stop = greedy;
  no_stop.stop_at_eos = false;
  CHECK(sample_tokens(decoder, prompt, no_stop, out[0]) == out);
  CHECK_THROWS_WITH(sample_tokens(decoder, {}, greedy, -1), Contains("no tokens"));
  SampleOptions none = greedy;
  none.max_new_tokens = 0;
  CHECK(sample_tokens(decoder, prompt, none, -1).empty());

  // A tokenizer smaller than the model's vocabulary: ids it cannot decode are never chosen.
  SampleOptions limited = narrow;
  limited.top_p = 1.0;
  limited.vocab_limit = 5;
  for (int32_t t : sample_tokens(decoder, prompt, limited, -1)) CHECK(t < 5);
}

TEST_CASE("temperature sampling is reproducible per seed", "[sample]") {
  auto backend = make_backend("cpu");
  LlamaModel model(tiny_config(50), *backend, 1, 16);
  model.init_weights(5);
  LlamaDecoder decoder(model, 16);
  SampleOptions o;
  o.max_new_tokens = 10;
  o.temperature = 1.5;
  o.top_p = 0.95;
  o.seed = 1;
  std::vector<int32_t> a = sample_tokens(decoder, {1, 2}, o, -1);
  CHECK(sample_tokens(decoder, {1, 2}, o, -1) == a);
  std::vector<std::vector<int32_t>> others;
  for (uint64_t seed = 2; seed < 6; ++seed) {
    o.seed = seed;
    others.push_back(sample_tokens(decoder, {1, 2}, o, -1));
  }
  // Four other seeds all reproducing the same ten tokens would mean the seed is ignored.
  CHECK(std::count(others.begin(), others.end(), a) < 4);
}

TEST_CASE("sample_text: prompt with BOS, continuation decoded without the prompt", "[sample]") {
  namespace fs = std::filesystem;
  fs::path dir = fs::path(GUM_BINARY_DIR) / "test_tmp" / "sample";
  fs::create_directories(dir);
  std::vector<std::string> sentences;
  const char* words[] = {"red", "green", "blue", "cat", "dog", "runs", "sleeps", "the", "a", "big"};
  for (int i = 0; i < 300; ++i)
    sentences.push_back(std::string(words[i % 10]) + " " + words[(i * 3) % 10] + " " + words[(i * 7) % 10]);
  TokenizerTrainOptions options;
  options.vocab_size = 40;
  options.num_threads = 1;
  train_tokenizer(sentences, options, (dir / "tok.model").string());
  Tokenizer tokenizer((dir / "tok.model").string());

  auto backend = make_backend("cpu");
  LlamaModel model(tiny_config(tokenizer.vocab_size()), *backend, 1, 16);
  model.init_weights(3);
  LlamaDecoder decoder(model, 16);
  SampleOptions o;
  o.prompt = "the big dog";
  o.max_new_tokens = 6;
  o.stop_at_eos = false;
  std::string text = sample_text(decoder, tokenizer, o);

  std::vector<int32_t> prompt = {tokenizer.bos_id()};
  for (int32_t id : tokenizer.encode(o.prompt)) prompt.push_back(id);
  std::vector<int32_t> expected = full_recompute_greedy(model, prompt, 6);
  std::vector<int32_t> joined = tokenizer.encode(o.prompt);
  joined.insert(joined.end(), expected.begin(), expected.end());
  CHECK(o.prompt + text == tokenizer.decode(joined));
}
