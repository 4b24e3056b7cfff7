// LlamaDecoder (incremental decoding with a KV cache) on the CPU backend: after a prefill and after
// every decode step its logits equal those of the full LlamaModel::forward over the same prefix,
// for grouped-query attention, attention biases, tied embeddings and both RoPE scalings; chunked
// prefills equal one-piece prefills; bad use gives errors that say what is wrong.
#include <catch2/catch.hpp>
#include <cmath>
#include <random>
#include <string>
#include <vector>

#include "common/relative_error.h"
#include "gum/core/error.h"
#include "gum/model/decoder.h"
#include "gum/model/llama.h"

using namespace gum;
using Catch::Matchers::Contains;
using gum::testing::relative_error;

namespace {

struct Variant {
  std::string name;
  LlamaConfig config;
};

LlamaConfig base_config() {
  LlamaConfig c;
  c.hidden_size = 32;
  c.intermediate_size = 40;
  c.num_hidden_layers = 3;
  c.num_attention_heads = 4;
  c.num_key_value_heads = 2;
  c.vocab_size = 37;
  c.max_position_embeddings = 24;
  c.initializer_range = 0.3;  // large weights: logits that differ clearly between positions
  return c;
}

std::vector<Variant> variants() {
  std::vector<Variant> v;
  v.push_back({"grouped-query attention (4 heads, 2 kv heads), untied", base_config()});
  LlamaConfig biased = base_config();
  biased.attention_bias = biased.o_proj_bias = true;
  biased.tie_word_embeddings = true;
  biased.num_key_value_heads = 4;
  v.push_back({"attention biases, tied embeddings, multi-head", biased});
  LlamaConfig qwen_like = base_config();
  qwen_like.attention_bias = true;  // q/k/v bias only
  qwen_like.num_key_value_heads = 1;
  qwen_like.rope_scaling.type = "linear";
  qwen_like.rope_scaling.factor = 2.5;
  v.push_back({"q/k/v biases, one kv head, linear RoPE scaling", qwen_like});
  LlamaConfig llama3 = base_config();
  llama3.rope_scaling.type = "llama3";
  llama3.rope_scaling.factor = 4.0;
  llama3.rope_scaling.original_max_position_embeddings = 8;  // short: every frequency band is exercised
  llama3.rope_theta = 500000.0;
  v.push_back({"llama3 RoPE scaling", llama3});
  return v;
}

// Weights from init_weights, plus random biases (init_weights leaves them 0).
void init_model(LlamaModel& model, uint64_t seed) {
  model.init_weights(seed);
  for (size_t i = 0; i < model.specs().size(); ++i)
    if (model.specs()[i].kind == ParamKind::Bias)
      model.backend().fill_normal(model.params().view(i), seed + 1, i, 0.0f, 0.2f);
}

std::vector<float> host_copy(Backend& be, const Tensor& t) {
  std::vector<float> v(static_cast<size_t>(t.numel()));
  be.copy_to_host(v.data(), t);
  return v;
}

// The full forward's logits of the last token of `prefix` (run at positions 0.., padded to seq_len).
std::vector<float> full_forward_last_logits(LlamaModel& model, std::vector<int32_t> prefix) {
  const size_t length = prefix.size();
  prefix.resize(static_cast<size_t>(model.seq_len()), 0);  // causal: the padding is never attended to
  TokenBatch batch;
  batch.tokens = prefix.data();
  batch.batch = 1;
  model.forward(batch);
  const int64_t row = static_cast<int64_t>(length) - 1;
  return host_copy(model.backend(), model.logits().row_slice(row, row + 1));
}

std::vector<int32_t> random_tokens(int count, int vocab, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::vector<int32_t> t;
  for (int i = 0; i < count; ++i) t.push_back(int32_t(rng() % uint64_t(vocab)));
  return t;
}

}  // namespace

TEST_CASE("decoder logits after prefill and after each decode step equal the full forward of the prefix") {
  auto backend = make_backend("cpu");
  for (const Variant& variant : variants()) {
    INFO(variant.name);
    const int length = 16;
    LlamaModel model(variant.config, *backend, 1, length);
    init_model(model, 21);
    const std::vector<int32_t> tokens = random_tokens(length, variant.config.vocab_size, 5);
    LlamaDecoder decoder(model, length);
    const int prompt = 5;
    std::vector<int32_t> prefix(tokens.begin(), tokens.begin() + prompt);
    std::vector<float> got = host_copy(*backend, decoder.prefill(prefix));
    CHECK(decoder.length() == prompt);
    double worst = relative_error(full_forward_last_logits(model, prefix), got);
    for (int p = prompt; p < length; ++p) {
      prefix.push_back(tokens[p]);
      got = host_copy(*backend, decoder.decode(tokens[p]));
      worst = std::max(worst, relative_error(full_forward_last_logits(model, prefix), got));
    }
    CHECK(decoder.length() == length);
    INFO("largest relative error of the logits over " << length - prompt + 1 << " steps: " << worst);
    CHECK(worst < 1e-5);

    // A second prefill starts over: the cache is emptied, not appended to.
    const std::vector<int32_t> other = random_tokens(7, variant.config.vocab_size, 9);
    CHECK(relative_error(full_forward_last_logits(model, other), host_copy(*backend, decoder.prefill(other))) < 1e-5);
    CHECK(decoder.length() == 7);
  }
}

TEST_CASE("a prefill longer than rows_per_step runs in chunks with the same logits") {
  auto backend = make_backend("cpu");
  const LlamaConfig config = variants()[0].config;
  LlamaModel model(config, *backend, 1, 13);
  init_model(model, 4);
  const std::vector<int32_t> tokens = random_tokens(13, config.vocab_size, 6);
  LlamaDecoder whole(model, 13), chunked(model, 13, 3);  // chunks of 3, 3, 3, 3, 1 rows
  CHECK(chunked.rows_per_step() == 3);
  CHECK(chunked.activation_bytes() < whole.activation_bytes());
  const std::vector<float> expected = full_forward_last_logits(model, tokens);
  CHECK(relative_error(expected, host_copy(*backend, whole.prefill(tokens))) < 1e-5);
  CHECK(relative_error(expected, host_copy(*backend, chunked.prefill(tokens))) < 1e-5);
  CHECK(chunked.length() == 13);
}

TEST_CASE("decoder: capacity, empty and overfull inputs, unknown tokens are errors") {
  auto backend = make_backend("cpu");
  const LlamaConfig config = base_config();  // max_position_embeddings 24
  LlamaModel model(config, *backend, 1, 4);
  init_model(model, 1);
  CHECK_THROWS_WITH(LlamaDecoder(model, 25), Contains("capacity 25 must lie in [1, 24]"));
  CHECK_THROWS_WITH(LlamaDecoder(model, 0), Contains("capacity 0"));
  LlamaDecoder decoder(model, 3);
  // Per layer one aligned arena entry of 3 positions x (k, v) x 2 heads x 8 dimensions.
  CHECK(decoder.cache_bytes() ==
        size_t(config.num_hidden_layers) * arena_entry_bytes(Shape{1, 3, 2 * 2 * 8}, DType::F32));
  CHECK_THROWS_WITH(decoder.decode(1), Contains("needs a prefill first"));
  CHECK_THROWS_WITH(decoder.prefill({}), Contains("prefill takes 1 to 3 tokens"));
  CHECK_THROWS_WITH(decoder.prefill({1, 2, 3, 4}), Contains("got 4"));
  CHECK_THROWS_WITH(decoder.prefill({1, 37}), Contains("token 37 at position 1 is outside the vocabulary [0, 37)"));
  decoder.prefill({1, 2});
  decoder.decode(3);
  CHECK_THROWS_WITH(decoder.decode(4), Contains("the KV cache is full (3 tokens)"));
}
